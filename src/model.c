/*
 * model.c — forward and backward of the whole model (model.h, docs/model.md). Long but linear:
 * the per-op math is behind the model's Backend (backend.h: ops.c on the CPU), in engram_layer.c
 * and moe.c (both on the backend); this file decides the order, keeps the residual stream
 * [B,T,G,D] and hands each op its slice of the planned activation memory, which it allocates
 * through the backend. Every buffer it reads is the backend's (the gathered Engram rows e / de
 * too); only the tokens come from the host (to_device) and the MoE statistics go back to it.
 */
#include "model.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "engram_layer.h"
#include "moe.h"
#include "ops.h"
#include "rng.h"

static float* fbuf_(Model* m, size_t n) { return m->be->alloc(m->be, (n ? n : 1) * sizeof(float)); }

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
            a->h_in = fbuf_(m, BT * G * D);
            a->eng_acts = fbuf_(m, engram_acts_floats(&m->edims));
            a->eng_out = fbuf_(m, BT * G * D);
        }
        a->xa = fbuf_(m, BT * D), a->ra = fbuf_(m, BT), a->a = fbuf_(m, BT * D);
        a->qkv = fbuf_(m, BT * 3 * D);
        a->att = fbuf_(m, (size_t)m->B * m->nh * m->T * m->T);
        a->o = fbuf_(m, BT * D);
        a->xf = fbuf_(m, BT * D), a->rf = fbuf_(m, BT), a->f = fbuf_(m, BT * D);
        if (p->is_moe) {
            a->moe_acts = fbuf_(m, moe_acts_floats(&m->mdims));
            a->moe_counts = callocCheck(c->moe.experts, sizeof(double));
            a->moe_psum = callocCheck(c->moe.experts, sizeof(double));
        } else {
            a->h1 = fbuf_(m, BT * m->F), a->h3 = fbuf_(m, BT * m->F), a->g = fbuf_(m, BT * m->F);
        }
    }
    m->h = fbuf_(m, BT * G * D);
    m->xn = fbuf_(m, BT * D), m->rn = fbuf_(m, BT), m->xfin = fbuf_(m, BT * D);
    m->head_rows = m->be->head_rows > 0 ? m->be->head_rows : HEAD_ROWS_;   // a GPU wants big GEMMs
    m->head_rows = m->head_rows < (int)BT ? m->head_rows : (int)BT;
    // one head lane per thread (ops.h head_xent), no more than there are blocks
    const int blocks = (int)((BT + (size_t)m->head_rows - 1) / (size_t)m->head_rows);
    m->head_lanes = m->be->host && ops_gemm_in_parallel() ? ops_threads() : 1;
    m->head_lanes = m->head_lanes < blocks ? m->head_lanes : blocks;
    m->head_s = fbuf_(m, (size_t)m->head_lanes * m->head_rows * m->V);
    m->dx_head = fbuf_(m, BT * D);
    m->dw_head = fbuf_(m, (size_t)m->V * D);
    m->dw_lanes = fbuf_(m, (size_t)(m->head_lanes - 1) * m->V * D);
    m->dh = fbuf_(m, BT * G * D);
    m->s_d1 = fbuf_(m, BT * D), m->s_d2 = fbuf_(m, BT * D), m->s_d3 = fbuf_(m, BT * D);
    m->s_f1 = fbuf_(m, BT * m->F), m->s_f2 = fbuf_(m, BT * m->F), m->s_f3 = fbuf_(m, BT * m->F);
    m->dqkv = fbuf_(m, BT * 3 * D);
    m->s_att = fbuf_(m, (size_t)m->B * m->nh * m->T * m->T);
    m->s_eng = fbuf_(m, BT * G * D);
    m->xd = m->be->alloc(m->be, BT * sizeof(int32_t));
    m->yd = m->be->alloc(m->be, BT * sizeof(int32_t));
}

void model_init(Model* m, const Config* c, int B) { model_init_ep(m, c, B, 1, 0); }

void model_init_ep(Model* m, const Config* c, int B, int ep, int ep_rank) {
    model_init_on(m, c, B, ep, ep_rank, backend_cpu());
}

void model_init_on(Model* m, const Config* c, int B, int ep, int ep_rank, Backend* be) {
    memset(m, 0, sizeof *m);
    m->cfg = c;
    m->be = be;
    m->B = B, m->T = c->model.seq_len, m->D = c->model.d_model, m->G = c->model.hc_mult;
    m->V = c->model.vocab_size, m->L = c->model.n_layers, m->nh = c->model.n_heads, m->F = c->model.d_ff;
    m->Ein = (c->engram.max_ngram - 1) * c->engram.heads_per_ngram * c->engram.head_dim;
    hash_init_(m, c);
    tensors_build(&m->tt, c, m->hash.rows);
    if (ep > 1) tensors_shard_experts(&m->tt, ep, ep_rank);
    // on the CPU backend page-aligned host memory: checkpoints are read straight into them
    m->params = fbuf_(m, m->tt.dense_numel);
    m->grads = fbuf_(m, m->tt.dense_numel);
    m->m = fbuf_(m, m->tt.dense_numel);
    m->v = fbuf_(m, m->tt.dense_numel);
    tensors_point(&m->P, &m->tt, m->params);
    tensors_point(&m->dP, &m->tt, m->grads);
    m->edims = (EngramDims){.B = B, .T = m->T, .G = m->G, .D = m->D, .Ein = m->Ein, .K = c->engram.kernel_size,
                            .dilation = c->engram.max_ngram, .qk_eps = (float)c->engram.qk_norm_eps,
                            .conv_eps = (float)c->engram.conv_norm_eps};
    m->mdims = (MoeDims){.N = B * m->T, .D = m->D, .E = c->moe.experts, .S = c->moe.shared_experts,
                         .k = c->moe.top_k, .Fe = c->moe.d_expert, .capacity_factor = c->moe.capacity_factor,
                         .ep = ep};
    acts_alloc_(m, c);
}

void model_init_params(Model* m, uint64_t seed) {
    const Config* c = m->cfg;
    const double std = c->model.init_std, resid = std / sqrt(2.0 * c->model.n_layers);
    const size_t bytes = m->tt.dense_numel * sizeof(float);
    float* host = m->be->host ? m->params : callocCheck(bytes + 1, 1);   // drawn on the host
    for (int i = 0; i < m->tt.n; i++) {
        const TensorInfo* t = &m->tt.t[i];
        if (t->group == OPT_TABLE) continue;
        float* p = host + t->offset;
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
    if (host != m->params) m->be->to_device(m->be, m->params, host, bytes), free(host);
}

static void block_acts_free_(Backend* be, BlockActs* a) {
    float* bufs[] = {a->h_in, a->eng_acts, a->eng_out, a->xa, a->ra, a->a, a->qkv, a->att, a->o,
                     a->xf, a->rf, a->f, a->h1, a->h3, a->g, a->moe_acts};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]) be->free(be, bufs[i]);
    free(a->moe_counts);
    free(a->moe_psum);
    moe_ep_free(be, &a->ep);
}

void model_free(Model* m) {
    Backend* be = m->be;
    for (int l = 0; l < m->L; l++) block_acts_free_(be, &m->acts[l]);
    free(m->acts);
    float* bufs[] = {m->params, m->grads, m->m, m->v, m->h, m->xn, m->rn, m->xfin, m->probs, m->head_s,
                     m->dx_head, m->dw_head, m->dw_lanes, m->dh,
                     m->s_d1, m->s_d2, m->s_d3, m->s_f1, m->s_f2, m->s_f3, m->dqkv, m->s_att, m->s_eng};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]) be->free(be, bufs[i]);
    be->free(be, m->xd), be->free(be, m->yd);
    tensors_ptrs_free(&m->P);
    tensors_ptrs_free(&m->dP);
    tensors_free(&m->tt);
    if (m->hash.n_layers) ngram_hash_free(&m->hash);
    memset(m, 0, sizeof *m);
}

/* ---- forward --------------------------------------------------------------------------------- */

static void attention_block_forward_(Model* m, const BlockPtrs* p, BlockActs* a) {
    Backend* be = m->be;
    const int BT = m->B * m->T, D = m->D;
    const Config* c = m->cfg;
    be->branches_mean(be, a->xa, m->h, BT, m->G, D);
    be->rmsnorm_forward(be, a->a, a->ra, a->xa, p->attn_norm, BT, D, (float)c->model.norm_eps);
    be->linear_forward(be, a->qkv, a->a, p->wqkv, NULL, BT, D, 3 * D);          // [BT,D] -> [BT,3D]
    be->rope_apply(be, a->qkv, m->B, m->T, D, m->nh, (float)c->model.rope_base, 0);
    be->attention_forward(be, a->o, a->att, a->qkv, m->B, m->T, D, m->nh);      // -> [BT,D]
    be->linear_forward(be, m->s_d1, a->o, p->wo, NULL, BT, D, D);                // scratch [BT,D]
    be->branches_add(be, m->h, m->s_d1, BT, m->G, D);
}

static void ffn_block_forward_(Model* m, const BlockPtrs* p, BlockActs* a) {
    Backend* be = m->be;
    const int BT = m->B * m->T, D = m->D, F = m->F;
    be->branches_mean(be, a->xf, m->h, BT, m->G, D);
    be->rmsnorm_forward(be, a->f, a->rf, a->xf, p->ffn_norm, BT, D, (float)m->cfg->model.norm_eps);
    if (p->is_moe) {
        MoeStats st = {a->moe_counts, a->moe_psum, 0, 0};
        a->ep.route = m->route;
        moe_forward_on(be, &m->mdims, &p->moe, a->f, m->s_d1, a->moe_acts, &st, m->route ? &a->ep : NULL);
        a->moe_dropped = st.dropped;
        a->moe_kept = st.kept;
    } else {
        be->linear_forward(be, a->h1, a->f, p->w1, NULL, BT, D, F);             // [BT,D] -> [BT,F]
        be->linear_forward(be, a->h3, a->f, p->w3, NULL, BT, D, F);
        be->swiglu_forward(be, a->g, a->h1, a->h3, (long)BT * F);
        be->linear_forward(be, m->s_d1, a->g, p->w2, NULL, BT, F, D);            // [BT,F] -> [BT,D]
    }
    be->branches_add(be, m->h, m->s_d1, BT, m->G, D);
}

/* The output head and its cross-entropy over the final normed stream; with grad also the unscaled
 * gradients of Σ CE into dx_head and dw_head, for model_backward to scale. */
static double head_(Model* m, int grad) {
    const int BT = m->B * m->T;
    double ce = m->be->head_xent(m->be, m->xfin, m->P.wout, m->yd, BT, m->D, m->V, grad ? m->dx_head : NULL,
                                 grad ? m->dw_head : NULL, m->head_s, m->head_rows, m->head_lanes, m->dw_lanes);
    m->head_ready = grad;
    return ce;
}

double model_forward(Model* m, const int32_t* x, const int32_t* y, float* const* e) {
    Backend* be = m->be;
    const int BT = m->B * m->T, D = m->D, G = m->G;
    m->x = x;
    m->y = y;
    m->e = e;
    // token embedding, copied to the G branches: [B,T] -> [B,T,G,D]
    for (int n = 0; n < BT; n++)
        if (x[n] < 0 || x[n] >= m->V) engram_die("check the data: token ids must be < model.vocab_size",
                                                  "token id %d out of range [0, %d)", x[n], m->V);
    be->to_device(be, m->xd, x, (size_t)BT * sizeof(int32_t));
    if (y) be->to_device(be, m->yd, y, (size_t)BT * sizeof(int32_t));
    be->embedding_forward(be, m->h, m->P.wte, m->xd, BT, G, D);
    for (int l = 0; l < m->L; l++) {
        const BlockPtrs* p = &m->P.blocks[l];
        BlockActs* a = &m->acts[l];
        if (p->engram >= 0) {
            be->copy(be, a->h_in, m->h, (size_t)BT * G * D * sizeof(float));
            engram_layer_forward_on(be, &m->edims, &p->eng, e[p->engram], a->h_in, a->eng_out, a->eng_acts);
            be->add(be, m->h, a->eng_out, (size_t)BT * G * D);
        }
        attention_block_forward_(m, p, a);
        ffn_block_forward_(m, p, a);
    }
    be->branches_mean(be, m->xn, m->h, BT, G, D);
    be->rmsnorm_forward(be, m->xfin, m->rn, m->xn, m->P.norm_f, BT, D, (float)m->cfg->model.norm_eps);
    m->head_ready = 0;
    if (!y) {   // logits [BT,V] for the caller to read; allocated on first use (training never needs it)
        if (!m->probs) m->probs = fbuf_(m, (size_t)BT * m->V);
        be->linear_forward(be, m->probs, m->xfin, m->P.wout, NULL, BT, D, m->V);
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

/* In the forward x = RMSNorm_w(mean_G h); dx [BT,D] is its gradient: push it back into dh. */
static void norm_of_mean_backward_(Model* m, const float* dx, const float* xin, const float* w,
                                   const float* rstd, float* dw) {
    Backend* be = m->be;
    const int BT = m->B * m->T, D = m->D;
    float* dmean = m->s_d3;
    be->zero(be, dmean, (size_t)BT * D * sizeof(float));
    be->rmsnorm_backward(be, dmean, dw, dx, xin, w, rstd, BT, D);
    const float inv = 1.0f / (float)m->G;   // d mean_G / d h_g = 1/G
    be->scale(be, dmean, dmean, inv, (size_t)BT * D);
    be->branches_add(be, m->dh, dmean, BT, m->G, D);
}

static void ffn_block_backward_(Model* m, int l, double n_tok_glob) {
    Backend* be = m->be;
    const int BT = m->B * m->T, D = m->D, F = m->F;
    const BlockPtrs *p = &m->P.blocks[l], *dp = &m->dP.blocks[l];
    BlockActs* a = &m->acts[l];
    float *dout = m->s_d1, *df = m->s_d2;
    be->branches_sum(be, dout, m->dh, BT, m->G, D);
    be->zero(be, df, (size_t)BT * D * sizeof(float));
    if (p->is_moe) {
        MoeWeights g = dp->moe;
        moe_backward_on(be, &m->mdims, &p->moe, a->f, a->moe_acts, dout, m->cfg->moe.aux_loss_coef,
                        a->moe_counts, n_tok_glob, df, &g, m->route ? &a->ep : NULL);
    } else {
        // out = g·w2ᵀ with g = SiLU(h1)⊙h3, h1 = f·w1ᵀ, h3 = f·w3ᵀ
        float *dg = m->s_f1, *dh1 = m->s_f2, *dh3 = m->s_f3;
        be->zero(be, dg, (size_t)BT * F * sizeof(float));
        be->linear_backward(be, dg, dp->w2, NULL, dout, a->g, p->w2, BT, F, D);
        be->swiglu_backward(be, dh1, dh3, dg, a->h1, a->h3, (long)BT * F);
        be->linear_backward(be, df, dp->w1, NULL, dh1, a->f, p->w1, BT, D, F);
        be->linear_backward(be, df, dp->w3, NULL, dh3, a->f, p->w3, BT, D, F);
    }
    norm_of_mean_backward_(m, df, a->xf, p->ffn_norm, a->rf, dp->ffn_norm);
}

static void attention_block_backward_(Model* m, int l) {
    Backend* be = m->be;
    const int BT = m->B * m->T, D = m->D;
    const BlockPtrs *p = &m->P.blocks[l], *dp = &m->dP.blocks[l];
    BlockActs* a = &m->acts[l];
    float *dout = m->s_d1, *dob = m->s_d2;
    be->branches_sum(be, dout, m->dh, BT, m->G, D);
    // out = o·woᵀ
    be->zero(be, dob, (size_t)BT * D * sizeof(float));
    be->linear_backward(be, dob, dp->wo, NULL, dout, a->o, p->wo, BT, D, D);
    // o = attention(rotated q, k; v), then undo the rotation on the q and k gradients
    be->attention_backward(be, m->dqkv, dob, a->qkv, a->att, m->s_att, m->B, m->T, D, m->nh);
    be->rope_apply(be, m->dqkv, m->B, m->T, D, m->nh, (float)m->cfg->model.rope_base, 1);
    // qkv = a·wqkvᵀ
    float* da = m->s_d1;   // dout is no longer needed
    be->zero(be, da, (size_t)BT * D * sizeof(float));
    be->linear_backward(be, da, dp->wqkv, NULL, m->dqkv, a->a, p->wqkv, BT, D, 3 * D);
    norm_of_mean_backward_(m, da, a->xa, p->attn_norm, a->ra, dp->attn_norm);
}

static void engram_block_backward_(Model* m, int l, float* de) {
    const size_t n = (size_t)m->B * m->T * m->G * m->D;
    const BlockPtrs *p = &m->P.blocks[l], *dp = &m->dP.blocks[l];
    BlockActs* a = &m->acts[l];
    // h_out = h_in + engram_out(h_in, e): dh_in = dh_out + (the query path, accumulated below)
    m->be->copy(m->be, m->s_eng, m->dh, n * sizeof(float));
    EngramWeights g = dp->eng;
    engram_layer_backward_on(m->be, &m->edims, &p->eng, m->e[p->engram], a->h_in, a->eng_acts, m->s_eng, de, m->dh, &g);
}

void model_backward(Model* m, double n_tok_glob, float* const* de) {
    Backend* be = m->be;
    const int BT = m->B * m->T, D = m->D;
    be->zero(be, m->grads, m->tt.dense_numel * sizeof(float));
    be->zero(be, m->dh, (size_t)BT * m->G * D * sizeof(float));
    // loss = Σ CE / n_tok_glob: the head's gradients of Σ CE (from the forward, or computed now when
    // the forward was not asked for them) times 1/n_tok_glob
    if (!m->y) engram_die("this is a bug: model_backward needs a forward with targets", "no targets");
    if (!m->head_ready) head_(m, 1);
    m->head_ready = 0;
    const float scale = (float)(1.0 / n_tok_glob);
    float* dx = m->s_d2;
    be->scale(be, dx, m->dx_head, scale, (size_t)BT * D);
    // dP.wout is zero here (grads were just cleared); wte's embedding rows come last
    be->scale(be, m->dP.wout, m->dw_head, scale, (size_t)m->V * D);
    norm_of_mean_backward_(m, dx, m->xn, m->P.norm_f, m->rn, m->dP.norm_f);
    for (int l = m->L - 1; l >= 0; l--) {
        ffn_block_backward_(m, l, n_tok_glob);
        attention_block_backward_(m, l);
        if (m->P.blocks[l].engram >= 0) engram_block_backward_(m, l, de[m->P.blocks[l].engram]);
    }
    // h0[b,t,g] = wte[x[b,t]] on every branch: the embedding row gets the sum over branches
    be->embedding_backward(be, m->dP.wte, m->dh, m->xd, BT, m->G, D);
}
