/*
 * tensors.c — builds the tensor table from a config (order and names of docs/model.md) and points
 * named pointers into a flat buffer laid out by it.
 */
#include "tensors.h"

#include <stdarg.h>
#include <string.h>

#include "common.h"
#include "shard.h"

static int in_list_(const IntList* l, int v) {
    for (int i = 0; i < l->n; i++)
        if (l->v[i] == v) return i;
    return -1;
}

/* Append one tensor; shape given as ndim values. */
static void add_(TensorTable* tt, int* cap, int block, int engram, ShardKind shard, OptGroup group,
                 InitKind init, int ndim, const int64_t* shape, const char* fmt, ...)
    __attribute__((format(printf, 10, 11)));
static void add_(TensorTable* tt, int* cap, int block, int engram, ShardKind shard, OptGroup group,
                 InitKind init, int ndim, const int64_t* shape, const char* fmt, ...) {
    if (tt->n == *cap) tt->t = reallocCheck(tt->t, (size_t)(*cap *= 2) * sizeof(TensorInfo));
    TensorInfo* t = &tt->t[tt->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    t->local_numel = t->numel;
    t->rows_local = ndim ? shape[0] : 1;
    t->shard = shard;
    t->group = group;
    t->init = init;
    t->block = block;
    t->engram = engram;
    if (group != OPT_TABLE) {
        t->offset = tt->dense_numel;
        tt->dense_numel += (size_t)t->numel;
    }
}

/* T_(block, engram, shard, group, init, SHAPE(...), ndim, name format, args...) */
#define SHAPE(...) (int64_t[]){__VA_ARGS__}
#define T_(blk, eng, sh, gr, in, shape_arr, nd, ...) add_(tt, &cap, blk, eng, sh, gr, in, nd, shape_arr, __VA_ARGS__)

void tensors_build(TensorTable* tt, const Config* c, const int64_t* table_rows) {
    memset(tt, 0, sizeof *tt);
    tt->ep = 1;
    int cap = 64;
    tt->t = mallocCheck((size_t)cap * sizeof(TensorInfo));
    const int64_t V = c->model.vocab_size, D = c->model.d_model, F = c->model.d_ff, G = c->model.hc_mult;
    const int64_t E = c->moe.experts, S = c->moe.shared_experts, Fe = c->moe.d_expert;
    const int64_t Ein = (int64_t)(c->engram.max_ngram - 1) * c->engram.heads_per_ngram * c->engram.head_dim;
    const int64_t K = c->engram.kernel_size, Dh = c->engram.head_dim;
    const ShardKind R = SHARD_REPLICATED;

    T_(-1, -1, R, OPT_DECAY, INIT_NORMAL, SHAPE(V, D), 2, "wte");
    if (!c->model.tie_embeddings) T_(-1, -1, R, OPT_DECAY, INIT_NORMAL, SHAPE(V, D), 2, "wout");
    T_(-1, -1, R, OPT_NO_DECAY, INIT_ONES, SHAPE(D), 1, "norm_f");
    for (int l = 0; l < c->model.n_layers; l++) {
        T_(l, -1, R, OPT_NO_DECAY, INIT_ONES, SHAPE(D), 1, "blocks.%d.attn_norm", l);
        T_(l, -1, R, OPT_DECAY, INIT_NORMAL, SHAPE(3 * D, D), 2, "blocks.%d.attn.wqkv", l);
        T_(l, -1, R, OPT_DECAY, INIT_NORMAL_RESID, SHAPE(D, D), 2, "blocks.%d.attn.wo", l);
        T_(l, -1, R, OPT_NO_DECAY, INIT_ONES, SHAPE(D), 1, "blocks.%d.ffn_norm", l);
        if (in_list_(&c->moe.layers, l) < 0) {
            T_(l, -1, R, OPT_DECAY, INIT_NORMAL, SHAPE(F, D), 2, "blocks.%d.mlp.w1", l);
            T_(l, -1, R, OPT_DECAY, INIT_NORMAL, SHAPE(F, D), 2, "blocks.%d.mlp.w3", l);
            T_(l, -1, R, OPT_DECAY, INIT_NORMAL_RESID, SHAPE(D, F), 2, "blocks.%d.mlp.w2", l);
        } else {
            T_(l, -1, R, OPT_DECAY, INIT_NORMAL, SHAPE(E, D), 2, "blocks.%d.moe.router", l);
            T_(l, -1, SHARD_EXPERTS, OPT_DECAY, INIT_NORMAL, SHAPE(E, Fe, D), 3, "blocks.%d.moe.w1", l);
            T_(l, -1, SHARD_EXPERTS, OPT_DECAY, INIT_NORMAL, SHAPE(E, Fe, D), 3, "blocks.%d.moe.w3", l);
            T_(l, -1, SHARD_EXPERTS, OPT_DECAY, INIT_NORMAL_RESID, SHAPE(E, D, Fe), 3, "blocks.%d.moe.w2", l);
            if (S > 0) {
                T_(l, -1, R, OPT_DECAY, INIT_NORMAL, SHAPE(S, Fe, D), 3, "blocks.%d.moe.shared_w1", l);
                T_(l, -1, R, OPT_DECAY, INIT_NORMAL, SHAPE(S, Fe, D), 3, "blocks.%d.moe.shared_w3", l);
                T_(l, -1, R, OPT_DECAY, INIT_NORMAL_RESID, SHAPE(S, D, Fe), 3, "blocks.%d.moe.shared_w2", l);
            }
        }
        int e = in_list_(&c->engram.layers, l);
        if (e >= 0) {
            T_(l, e, R, OPT_DECAY, INIT_NORMAL, SHAPE(G, D, Ein), 3, "blocks.%d.engram.wk", l);
            T_(l, e, R, OPT_NO_DECAY, INIT_ZEROS, SHAPE(G, D), 2, "blocks.%d.engram.bk", l);
            T_(l, e, R, OPT_DECAY, INIT_NORMAL, SHAPE(D, Ein), 2, "blocks.%d.engram.wv", l);
            T_(l, e, R, OPT_NO_DECAY, INIT_ZEROS, SHAPE(D), 1, "blocks.%d.engram.bv", l);
            T_(l, e, R, OPT_NO_DECAY, INIT_ONES, SHAPE(G, D), 2, "blocks.%d.engram.norm_k", l);
            T_(l, e, R, OPT_NO_DECAY, INIT_ONES, SHAPE(G, D), 2, "blocks.%d.engram.norm_q", l);
            T_(l, e, R, OPT_NO_DECAY, INIT_ONES, SHAPE(G, D), 2, "blocks.%d.engram.norm_c", l);
            T_(l, e, R, OPT_DECAY, INIT_ZEROS, SHAPE(G * D, K), 2, "blocks.%d.engram.conv", l);
            T_(l, e, SHARD_ROWS, OPT_TABLE, INIT_TABLE, SHAPE(table_rows[e], Dh), 2, "blocks.%d.engram.table", l);
        }
    }
}

void tensors_shard_experts(TensorTable* tt, int ep, int ep_rank) {
    tt->ep = ep, tt->ep_rank = ep_rank;
    tt->dense_numel = 0;
    for (int i = 0; i < tt->n; i++) {
        TensorInfo* t = &tt->t[i];
        if (t->group == OPT_TABLE) continue;
        if (t->shard == SHARD_EXPERTS) {
            int64_t per = t->numel / t->shape[0];   // one expert's elements
            shard_row_range(t->shape[0], ep, ep_rank, &t->rows_first, &t->rows_local);
            t->local_first = t->rows_first * per;
            t->local_numel = t->rows_local * per;
        }
        t->offset = tt->dense_numel;
        tt->dense_numel += (size_t)t->local_numel;
    }
}

void tensors_free(TensorTable* tt) {
    free(tt->t);
    memset(tt, 0, sizeof *tt);
}

const TensorInfo* tensors_find(const TensorTable* tt, const char* name) {
    for (int i = 0; i < tt->n; i++)
        if (!strcmp(tt->t[i].name, name)) return &tt->t[i];
    return NULL;
}

/* The pointer field a tensor name's suffix (after "blocks.<l>.") maps to in BlockPtrs. */
static float** block_field_(BlockPtrs* b, const char* suffix) {
    static const struct { const char* name; size_t off; } F[] = {
        {"attn_norm", offsetof(BlockPtrs, attn_norm)}, {"attn.wqkv", offsetof(BlockPtrs, wqkv)},
        {"attn.wo", offsetof(BlockPtrs, wo)}, {"ffn_norm", offsetof(BlockPtrs, ffn_norm)},
        {"mlp.w1", offsetof(BlockPtrs, w1)}, {"mlp.w3", offsetof(BlockPtrs, w3)}, {"mlp.w2", offsetof(BlockPtrs, w2)},
        {"moe.router", offsetof(BlockPtrs, moe.router)}, {"moe.w1", offsetof(BlockPtrs, moe.w1)},
        {"moe.w3", offsetof(BlockPtrs, moe.w3)}, {"moe.w2", offsetof(BlockPtrs, moe.w2)},
        {"moe.shared_w1", offsetof(BlockPtrs, moe.shared_w1)}, {"moe.shared_w3", offsetof(BlockPtrs, moe.shared_w3)},
        {"moe.shared_w2", offsetof(BlockPtrs, moe.shared_w2)}, {"engram.wk", offsetof(BlockPtrs, eng.wk)},
        {"engram.bk", offsetof(BlockPtrs, eng.bk)}, {"engram.wv", offsetof(BlockPtrs, eng.wv)},
        {"engram.bv", offsetof(BlockPtrs, eng.bv)}, {"engram.norm_k", offsetof(BlockPtrs, eng.norm_k)},
        {"engram.norm_q", offsetof(BlockPtrs, eng.norm_q)}, {"engram.norm_c", offsetof(BlockPtrs, eng.norm_c)},
        {"engram.conv", offsetof(BlockPtrs, eng.conv)},
    };
    for (size_t i = 0; i < sizeof F / sizeof *F; i++)
        if (!strcmp(F[i].name, suffix)) return (float**)((char*)b + F[i].off);
    return NULL;
}

void tensors_point(ModelPtrs* p, const TensorTable* tt, float* base) {
    int L = 0;
    for (int i = 0; i < tt->n; i++)
        if (tt->t[i].block + 1 > L) L = tt->t[i].block + 1;
    memset(p, 0, sizeof *p);
    p->L = L;
    p->blocks = callocCheck(L ? L : 1, sizeof(BlockPtrs));
    for (int l = 0; l < L; l++) p->blocks[l].engram = -1;
    for (int i = 0; i < tt->n; i++) {
        const TensorInfo* t = &tt->t[i];
        if (t->group == OPT_TABLE) {
            p->blocks[t->block].engram = t->engram;
            continue;
        }
        float* ptr = base + t->offset;
        if (t->block < 0) {
            if (!strcmp(t->name, "wte")) p->wte = ptr;
            else if (!strcmp(t->name, "wout")) p->wout = ptr;
            else if (!strcmp(t->name, "norm_f")) p->norm_f = ptr;
            continue;
        }
        const char* suffix = strchr(strchr(t->name, '.') + 1, '.') + 1;   // past "blocks.<l>."
        float** f = block_field_(&p->blocks[t->block], suffix);
        if (!f) engram_die("this is a bug: the tensor table and BlockPtrs disagree", "no field for %s", t->name);
        *f = ptr;
        if (!strcmp(suffix, "moe.router")) p->blocks[t->block].is_moe = 1;
    }
    if (!p->wout) p->wout = p->wte;
}

void tensors_ptrs_free(ModelPtrs* p) {
    free(p->blocks);
    p->blocks = NULL;
}
