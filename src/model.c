/*
 * model.c — forward and backward of the whole model (model.h, docs/model.md). Long but linear:
 * the per-op math is in ops.c, moe.c and engram_layer.c; this file decides the order, keeps the
 * residual stream [B,T,G,D] and hands each op its slice of the planned activation memory.
 */
#include "model.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "engram_layer.h"
#include "moe.h"
#include "ops.h"
#include "rng.h"

static float* fbuf_(size_t n) { return callocCheck(n ? n : 1, sizeof(float)); }

/* Tokens per block of the fused output head (ops.h head_xent). A block's logits ([256,V], 51 MB for
 * the GPT-2 vocabulary) are made, turned into p − onehot and consumed by the two gradient GEMMs one
 * block at a time, instead of a [BT,V] buffer going through memory in eight passes. Much smaller
 * blocks cost more than they save: the dW GEMM reads and writes all of [V,D] once per block
 * (measured on tiny.yaml: 2048, 256 and 128 rows about equal, 64 and 32 rows 20–50% slower). */
#define HEAD_ROWS_ 256

/* ---- set-up ---------------------------------------------------------------------------------- */

static void hash_init_(Model* m, const Config* c) {
    int n = c->engram.layers.n;
    if (n == 0) {
        memset(&m->hash, 0, sizeof m->hash);
        return;
    }
    /* without a tokenizer the compression is the identity: V' = V, pad as configured (or 0) */
    int64_t vc = c->engram.compressed_vocab_size > 0 ? c->engram.compressed_vocab_size : c->model.vocab_size;
    int64_t pad = c->engram.pad_id_compressed >= 0 ? c->engram.pad_id_compressed : 0;
    ngram_hash_init(&m->hash, c->engram.layers.v, n, c->engram.max_ngram, c->engram.heads_per_ngram,
                    c->engram.vocab_bases.v, vc, pad, (uint64_t)c->engram.seed, (EngramFlavour)c->engram.flavour);
}

static void acts_alloc_(Model* m, const Config* c) {
    const size_t BT = (size_t)m->B * m->T, D = m->D, G = m->G;
    m->acts = callocCheck(m->L, sizeof(BlockActs));
    for (int l = 0, slot = 0; l < m->L; l++) {
        BlockActs* a = &m->acts[l];
        const BlockPtrs* p = &m->P.blocks[l];
        if (p->is_moe) a->ep.slot = slot++;
        if (p->engram >= 0) {
            a->h_in = fbuf_(BT * G * D);
            a->eng_acts = fbuf_(engram_acts_floats(&m->edims));
            a->eng_out = fbuf_(BT * G * D);
        }
        a->xa = fbuf_(BT * D), a->ra = fbuf_(BT), a->a = fbuf_(BT * D);
        a->qkv = fbuf_(BT * 3 * D);
        a->att = fbuf_((size_t)m->B * m->nh * m->T * m->T);
        a->o = fbuf_(BT * D);
        a->xf = fbuf_(BT * D), a->rf = fbuf_(BT), a->f = fbuf_(BT * D);
        if (p->is_moe) {
            a->moe_acts = fbuf_(moe_acts_floats(&m->mdims));
            a->moe_counts = callocCheck(c->moe.experts, sizeof(double));
            a->moe_psum = callocCheck(c->moe.experts, sizeof(double));
        } else {
            a->h1 = fbuf_(BT * m->F), a->h3 = fbuf_(BT * m->F), a->g = fbuf_(BT * m->F);
        }
    }
    m->h = fbuf_(BT * G * D);
    m->xn = fbuf_(BT * D), m->rn = fbuf_(BT), m->xfin = fbuf_(BT * D);
    m->head_rows = HEAD_ROWS_ < (int)BT ? HEAD_ROWS_ : (int)BT;
    // one head lane per thread (ops.h head_xent), no more than there are blocks
    const int blocks = (int)((BT + (size_t)m->head_rows - 1) / (size_t)m->head_rows);
    m->head_lanes = ops_gemm_in_parallel() ? ops_threads() : 1;
    m->head_lanes = m->head_lanes < blocks ? m->head_lanes : blocks;
    m->head_s = fbuf_((size_t)m->head_lanes * m->head_rows * m->V);
    m->dx_head = fbuf_(BT * D);
    m->dw_head = fbuf_((size_t)m->V * D);
    m->dw_lanes = fbuf_((size_t)(m->head_lanes - 1) * m->V * D);
    m->dh = fbuf_(BT * G * D);
    m->s_d1 = fbuf_(BT * D), m->s_d2 = fbuf_(BT * D), m->s_d3 = fbuf_(BT * D);
    m->s_f1 = fbuf_(BT * m->F), m->s_f2 = fbuf_(BT * m->F), m->s_f3 = fbuf_(BT * m->F);
    m->dqkv = fbuf_(BT * 3 * D);
    m->s_att = fbuf_((size_t)m->B * m->nh * m->T * m->T);
    m->s_eng = fbuf_(BT * G * D);
}

void model_init(Model* m, const Config* c, int B) { model_init_ep(m, c, B, 1, 0); }

void model_init_ep(Model* m, const Config* c, int B, int ep, int ep_rank) {
    memset(m, 0, sizeof *m);
    m->cfg = c;
    m->B = B, m->T = c->model.seq_len, m->D = c->model.d_model, m->G = c->model.hc_mult;
    m->V = c->model.vocab_size, m->L = c->model.n_layers, m->nh = c->model.n_heads, m->F = c->model.d_ff;
    m->Ein = (c->engram.max_ngram - 1) * c->engram.heads_per_ngram * c->engram.head_dim;
    hash_init_(m, c);
    tensors_build(&m->tt, c, m->hash.rows);
    if (ep > 1) tensors_shard_experts(&m->tt, ep, ep_rank);
    // page-aligned: checkpoints are read straight into them (common.h, callocPagesCheck)
    m->params = callocPagesCheck(m->tt.dense_numel, sizeof(float));
    m->grads = callocPagesCheck(m->tt.dense_numel, sizeof(float));
    m->m = callocPagesCheck(m->tt.dense_numel, sizeof(float));
    m->v = callocPagesCheck(m->tt.dense_numel, sizeof(float));
    tensors_point(&m->P, &m->tt, m->params);
    tensors_point(&m->dP, &m->tt, m->grads);
    m->edims = (EngramDims){.B = B, .T = m->T, .G = m->G, .D = m->D, .Ein = m->Ein, .K = c->engram.kernel_size,
                            .dilation = c->engram.max_ngram, .qk_eps = (float)c->engram.qk_norm_eps,
                            .conv_eps = (float)c->engram.conv_norm_eps};
    m->mdims = (MoeDims){.N = B * m->T, .D = m->D, .E = c->moe.experts, .S = c->moe.shared_experts,
                         .k = c->moe.top_k, .Fe = c->moe.d_expert, .capacity_factor = c->moe.capacity_factor};
    acts_alloc_(m, c);
}

void model_init_params(Model* m, uint64_t seed) {
    const Config* c = m->cfg;
    const double std = c->model.init_std, resid = std / sqrt(2.0 * c->model.n_layers);
    for (int i = 0; i < m->tt.n; i++) {
        const TensorInfo* t = &m->tt.t[i];
        if (t->group == OPT_TABLE) continue;
        float* p = m->params + t->offset;
        uint64_t stream = rng_stream(t->name);
        for (int64_t i = 0; i < t->local_numel; i++) {   // j: the element's logical index
            int64_t j = t->local_first + i;
            switch (t->init) {
            case INIT_NORMAL: p[i] = (float)(std * rng_normal(seed, stream, (uint64_t)j)); break;
            case INIT_NORMAL_RESID: p[i] = (float)(resid * rng_normal(seed, stream, (uint64_t)j)); break;
            case INIT_ONES: p[i] = 1.0f; break;
            default: p[i] = 0.0f; break;
            }
        }
    }
}

static void block_acts_free_(BlockActs* a) {
    float* bufs[] = {a->h_in, a->eng_acts, a->eng_out, a->xa, a->ra, a->a, a->qkv, a->att, a->o,
                     a->xf, a->rf, a->f, a->h1, a->h3, a->g, a->moe_acts};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
    free(a->moe_counts);
    free(a->moe_psum);
    moe_ep_free(&a->ep);
}

void model_free(Model* m) {
    for (int l = 0; l < m->L; l++) block_acts_free_(&m->acts[l]);
    free(m->acts);
    float* bufs[] = {m->params, m->grads, m->m, m->v, m->h, m->xn, m->rn, m->xfin, m->probs, m->head_s,
                     m->dx_head, m->dw_head, m->dw_lanes, m->dh,
                     m->s_d1, m->s_d2, m->s_d3, m->s_f1, m->s_f2, m->s_f3, m->dqkv, m->s_att, m->s_eng};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
    tensors_ptrs_free(&m->P);
    tensors_ptrs_free(&m->dP);
    tensors_free(&m->tt);
    if (m->hash.n_layers) ngram_hash_free(&m->hash);
    memset(m, 0, sizeof *m);
}

/* ---- forward --------------------------------------------------------------------------------- */

/* out[BT,D] = mean over the G branches of h [BT,G,D] */
static void mean_branches_(float* out, const float* h, int BT, int G, int D) {
    const float inv = 1.0f / (float)G;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < BT; n++)
        for (int d = 0; d < D; d++) {
            float s = 0.0f;
            for (int g = 0; g < G; g++) s += h[((size_t)n * G + g) * D + d];
            out[(size_t)n * D + d] = s * inv;
        }
}

/* h[BT,G,D] += x[BT,D] on every branch */
static void add_to_branches_(float* h, const float* x, int BT, int G, int D) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < BT; n++)
        for (int g = 0; g < G; g++)
            for (int d = 0; d < D; d++) h[((size_t)n * G + g) * D + d] += x[(size_t)n * D + d];
}

static void attention_block_forward_(Model* m, const BlockPtrs* p, BlockActs* a) {
    const int BT = m->B * m->T, D = m->D;
    const Config* c = m->cfg;
    mean_branches_(a->xa, m->h, BT, m->G, D);
    rmsnorm_forward(a->a, a->ra, a->xa, p->attn_norm, BT, D, (float)c->model.norm_eps);
    linear_forward(a->qkv, a->a, p->wqkv, NULL, BT, D, 3 * D);          // [BT,D] -> [BT,3D]
    rope_apply(a->qkv, m->B, m->T, D, m->nh, (float)c->model.rope_base, 0);
    attention_forward(a->o, a->att, a->qkv, m->B, m->T, D, m->nh);      // -> [BT,D]
    linear_forward(m->s_d1, a->o, p->wo, NULL, BT, D, D);                // scratch [BT,D]
    add_to_branches_(m->h, m->s_d1, BT, m->G, D);
}

static void ffn_block_forward_(Model* m, const BlockPtrs* p, BlockActs* a) {
    const int BT = m->B * m->T, D = m->D, F = m->F;
    mean_branches_(a->xf, m->h, BT, m->G, D);
    rmsnorm_forward(a->f, a->rf, a->xf, p->ffn_norm, BT, D, (float)m->cfg->model.norm_eps);
    if (p->is_moe) {
        MoeStats st = {a->moe_counts, a->moe_psum, 0, 0};
        a->ep.route = m->route;
        moe_forward(&m->mdims, &p->moe, a->f, m->s_d1, a->moe_acts, &st, m->route ? &a->ep : NULL);
        a->moe_dropped = st.dropped;
        a->moe_kept = st.kept;
    } else {
        linear_forward(a->h1, a->f, p->w1, NULL, BT, D, F);             // [BT,D] -> [BT,F]
        linear_forward(a->h3, a->f, p->w3, NULL, BT, D, F);
        swiglu_forward(a->g, a->h1, a->h3, (long)BT * F);
        linear_forward(m->s_d1, a->g, p->w2, NULL, BT, F, D);            // [BT,F] -> [BT,D]
    }
    add_to_branches_(m->h, m->s_d1, BT, m->G, D);
}

/* The output head and its cross-entropy over the final normed stream; with grad also the unscaled
 * gradients of Σ CE into dx_head and dw_head, for model_backward to scale. */
static double head_(Model* m, int grad) {
    const int BT = m->B * m->T;
    double ce = head_xent(m->xfin, m->P.wout, m->y, BT, m->D, m->V, grad ? m->dx_head : NULL,
                          grad ? m->dw_head : NULL, m->head_s, m->head_rows, m->head_lanes,
                          m->dw_lanes);
    m->head_ready = grad;
    return ce;
}

double model_forward(Model* m, const int32_t* x, const int32_t* y, float* const* e) {
    const int BT = m->B * m->T, D = m->D, G = m->G;
    m->x = x;
    m->y = y;
    m->e = e;
    // token embedding, copied to the G branches: [B,T] -> [B,T,G,D]
    for (int n = 0; n < BT; n++)
        if (x[n] < 0 || x[n] >= m->V) engram_die("check the data: token ids must be < model.vocab_size",
                                                  "token id %d out of range [0, %d)", x[n], m->V);
    embedding_forward(m->h, m->P.wte, x, BT, G, D);
    for (int l = 0; l < m->L; l++) {
        const BlockPtrs* p = &m->P.blocks[l];
        BlockActs* a = &m->acts[l];
        if (p->engram >= 0) {
            memcpy(a->h_in, m->h, (size_t)BT * G * D * sizeof(float));
            engram_layer_forward(&m->edims, &p->eng, e[p->engram], a->h_in, a->eng_out, a->eng_acts);
            for (size_t i = 0; i < (size_t)BT * G * D; i++) m->h[i] += a->eng_out[i];
        }
        attention_block_forward_(m, p, a);
        ffn_block_forward_(m, p, a);
    }
    mean_branches_(m->xn, m->h, BT, G, D);
    rmsnorm_forward(m->xfin, m->rn, m->xn, m->P.norm_f, BT, D, (float)m->cfg->model.norm_eps);
    m->head_ready = 0;
    if (!y) {   // logits [BT,V] for the caller to read; allocated on first use (training never needs it)
        if (!m->probs) m->probs = fbuf_((size_t)BT * m->V);
        linear_forward(m->probs, m->xfin, m->P.wout, NULL, BT, D, m->V);
        return 0.0;
    }
    return head_(m, m->head_grad);
}

double model_aux_loss(const Model* m, double n_tok_glob) {
    double aux = 0.0;
    for (int l = 0; l < m->L; l++)
        if (m->P.blocks[l].is_moe)
            aux += moe_aux_loss(&m->mdims, m->acts[l].moe_counts, m->acts[l].moe_psum, n_tok_glob);
    return m->cfg->moe.aux_loss_coef * aux;
}

/* ---- backward -------------------------------------------------------------------------------- */

/* dsum[BT,D] = Σ_g dh[BT,G,D]: a value added to every branch gets the sum of their gradients */
static void sum_branches_(float* dsum, const float* dh, int BT, int G, int D) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < BT; n++)
        for (int d = 0; d < D; d++) {
            float s = 0.0f;
            for (int g = 0; g < G; g++) s += dh[((size_t)n * G + g) * D + d];
            dsum[(size_t)n * D + d] = s;
        }
}

/* In the forward x = RMSNorm_w(mean_G h); dx [BT,D] is its gradient: push it back into dh. */
static void norm_of_mean_backward_(Model* m, const float* dx, const float* xin, const float* w,
                                   const float* rstd, float* dw) {
    const int BT = m->B * m->T, D = m->D;
    float* dmean = m->s_d3;
    memset(dmean, 0, (size_t)BT * D * sizeof(float));
    rmsnorm_backward(dmean, dw, dx, xin, w, rstd, BT, D);
    const float inv = 1.0f / (float)m->G;   // d mean_G / d h_g = 1/G
    for (size_t i = 0; i < (size_t)BT * D; i++) dmean[i] *= inv;
    add_to_branches_(m->dh, dmean, BT, m->G, D);
}

static void ffn_block_backward_(Model* m, int l, double n_tok_glob) {
    const int BT = m->B * m->T, D = m->D, F = m->F;
    const BlockPtrs *p = &m->P.blocks[l], *dp = &m->dP.blocks[l];
    BlockActs* a = &m->acts[l];
    float *dout = m->s_d1, *df = m->s_d2;
    sum_branches_(dout, m->dh, BT, m->G, D);
    memset(df, 0, (size_t)BT * D * sizeof(float));
    if (p->is_moe) {
        MoeWeights g = dp->moe;
        moe_backward(&m->mdims, &p->moe, a->f, a->moe_acts, dout, m->cfg->moe.aux_loss_coef, a->moe_counts,
                     n_tok_glob, df, &g, m->route ? &a->ep : NULL);
    } else {
        // out = g·w2ᵀ with g = SiLU(h1)⊙h3, h1 = f·w1ᵀ, h3 = f·w3ᵀ
        float *dg = m->s_f1, *dh1 = m->s_f2, *dh3 = m->s_f3;
        memset(dg, 0, (size_t)BT * F * sizeof(float));
        linear_backward(dg, dp->w2, NULL, dout, a->g, p->w2, BT, F, D);
        swiglu_backward(dh1, dh3, dg, a->h1, a->h3, (long)BT * F);
        linear_backward(df, dp->w1, NULL, dh1, a->f, p->w1, BT, D, F);
        linear_backward(df, dp->w3, NULL, dh3, a->f, p->w3, BT, D, F);
    }
    norm_of_mean_backward_(m, df, a->xf, p->ffn_norm, a->rf, dp->ffn_norm);
}

static void attention_block_backward_(Model* m, int l) {
    const int BT = m->B * m->T, D = m->D;
    const BlockPtrs *p = &m->P.blocks[l], *dp = &m->dP.blocks[l];
    BlockActs* a = &m->acts[l];
    float *dout = m->s_d1, *dob = m->s_d2;
    sum_branches_(dout, m->dh, BT, m->G, D);
    // out = o·woᵀ
    memset(dob, 0, (size_t)BT * D * sizeof(float));
    linear_backward(dob, dp->wo, NULL, dout, a->o, p->wo, BT, D, D);
    // o = attention(rotated q, k; v), then undo the rotation on the q and k gradients
    attention_backward(m->dqkv, dob, a->qkv, a->att, m->s_att, m->B, m->T, D, m->nh);
    rope_apply(m->dqkv, m->B, m->T, D, m->nh, (float)m->cfg->model.rope_base, 1);
    // qkv = a·wqkvᵀ
    float* da = m->s_d1;   // dout is no longer needed
    memset(da, 0, (size_t)BT * D * sizeof(float));
    linear_backward(da, dp->wqkv, NULL, m->dqkv, a->a, p->wqkv, BT, D, 3 * D);
    norm_of_mean_backward_(m, da, a->xa, p->attn_norm, a->ra, dp->attn_norm);
}

static void engram_block_backward_(Model* m, int l, float* de) {
    const size_t n = (size_t)m->B * m->T * m->G * m->D;
    const BlockPtrs *p = &m->P.blocks[l], *dp = &m->dP.blocks[l];
    BlockActs* a = &m->acts[l];
    // h_out = h_in + engram_out(h_in, e): dh_in = dh_out + (the query path, accumulated below)
    memcpy(m->s_eng, m->dh, n * sizeof(float));
    EngramWeights g = dp->eng;
    engram_layer_backward(&m->edims, &p->eng, m->e[p->engram], a->h_in, a->eng_acts, m->s_eng, de, m->dh, &g);
}

void model_backward(Model* m, double n_tok_glob, float* const* de) {
    const int BT = m->B * m->T, D = m->D;
    memset(m->grads, 0, m->tt.dense_numel * sizeof(float));
    memset(m->dh, 0, (size_t)BT * m->G * D * sizeof(float));
    // loss = Σ CE / n_tok_glob: the head's gradients of Σ CE (from the forward, or computed now when
    // the forward was not asked for them) times 1/n_tok_glob
    if (!m->y) engram_die("this is a bug: model_backward needs a forward with targets", "no targets");
    if (!m->head_ready) head_(m, 1);
    m->head_ready = 0;
    const float scale = (float)(1.0 / n_tok_glob);
    float* dx = m->s_d2;
    for (size_t i = 0; i < (size_t)BT * D; i++) dx[i] = m->dx_head[i] * scale;
    float* dwout = m->dP.wout;   // zero here (grads were just cleared); wte's embedding rows come last
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < (size_t)m->V * D; i++) dwout[i] = m->dw_head[i] * scale;
    norm_of_mean_backward_(m, dx, m->xn, m->P.norm_f, m->rn, m->dP.norm_f);
    for (int l = m->L - 1; l >= 0; l--) {
        ffn_block_backward_(m, l, n_tok_glob);
        attention_block_backward_(m, l);
        if (m->P.blocks[l].engram >= 0) engram_block_backward_(m, l, de[m->P.blocks[l].engram]);
    }
    // h0[b,t,g] = wte[x[b,t]] on every branch: the embedding row gets the sum over branches
    embedding_backward(m->dP.wte, m->dh, m->x, BT, m->G, D);
}
