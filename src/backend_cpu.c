/*
 * backend_cpu.c — the CPU backend (backend.h): "device" memory is host memory and every op is the
 * existing CPU code (ops.c, optim.c, moe.c, engram_rows.c), so the CPU results through the
 * interface are the results the CPU trainer gets.
 *
 * Not here: the collectives (MPI, parallel/device.c), anything CUDA (gpu/).
 */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "engram_rows.h"
#include "moe.h"
#include "ops.h"
#include "optim.h"

/* ---- memory ---------------------------------------------------------------------------------- */

/* Page-aligned, as the model's buffers always were: checkpoints are read straight into them. */
static void* cpu_alloc_(Backend* be, size_t bytes) {
    (void)be;
    return callocPagesCheck(bytes ? bytes : 1, 1);
}
static void cpu_free_(Backend* be, void* p) { (void)be, free(p); }
static void cpu_copy_(Backend* be, void* dst, const void* src, size_t bytes) { (void)be, memcpy(dst, src, bytes); }
static void cpu_zero_(Backend* be, void* p, size_t bytes) { (void)be, memset(p, 0, bytes); }

/* ---- GEMM ------------------------------------------------------------------------------------ */

static void cpu_gemm_(Backend* be, int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda,
                      long long sA, const float* B, int ldb, long long sB, float beta, float* C, int ldc, long long sC,
                      int batch) {
    (void)be;   // always fp32 here
    for (int i = 0; i < batch; i++)
        ops_gemm(ta, tb, M, N, K, alpha, A + i * sA, lda, B + i * sB, ldb, beta, C + i * sC, ldc);
}

/* ---- kernels: ops.c ---------------------------------------------------------------------------- */

static void cpu_linear_forward_(Backend* be, float* out, const float* in, const float* W, const float* bias, int N,
                                int Din, int Dout) {
    (void)be, linear_forward(out, in, W, bias, N, Din, Dout);
}
static void cpu_linear_backward_(Backend* be, float* din, float* dW, float* dbias, const float* dout, const float* in,
                                 const float* W, int N, int Din, int Dout) {
    (void)be, linear_backward(din, dW, dbias, dout, in, W, N, Din, Dout);
}
static void cpu_branches_mean_(Backend* be, float* out, const float* h, int N, int G, int D) {
    (void)be, branches_mean(out, h, N, G, D);
}
static void cpu_branches_sum_(Backend* be, float* out, const float* h, int N, int G, int D) {
    (void)be, branches_sum(out, h, N, G, D);
}
static void cpu_branches_add_(Backend* be, float* h, const float* x, int N, int G, int D) {
    (void)be, branches_add(h, x, N, G, D);
}
static void cpu_scale_(Backend* be, float* y, const float* x, float alpha, size_t n) {
    (void)be, ops_scale(y, x, alpha, n);
}
static void cpu_add_(Backend* be, float* y, const float* x, size_t n) { (void)be, ops_add(y, x, n); }

static void cpu_rmsnorm_forward_(Backend* be, float* out, float* rstd, const float* x, const float* w, int N, int D,
                                 float eps) {
    (void)be, rmsnorm_forward(out, rstd, x, w, N, D, eps);
}
static void cpu_rmsnorm_backward_(Backend* be, float* dx, float* dw, const float* dout, const float* x,
                                  const float* w, const float* rstd, int N, int D) {
    (void)be, rmsnorm_backward(dx, dw, dout, x, w, rstd, N, D);
}
static void cpu_rope_apply_(Backend* be, float* qkv, int B, int T, int D, int nh, float base, int inverse) {
    (void)be, rope_apply(qkv, B, T, D, nh, base, inverse);
}
static void cpu_attention_forward_(Backend* be, float* out, float* att, const float* qkv, int B, int T, int D,
                                   int nh) {
    (void)be, attention_forward(out, att, qkv, B, T, D, nh);
}
static void cpu_attention_backward_(Backend* be, float* dqkv, const float* dout, const float* qkv, const float* att,
                                    float* scratch, int B, int T, int D, int nh) {
    (void)be, attention_backward(dqkv, dout, qkv, att, scratch, B, T, D, nh);
}
static void cpu_swiglu_forward_(Backend* be, float* g, const float* h1, const float* h3, long n) {
    (void)be, swiglu_forward(g, h1, h3, n);
}
static void cpu_swiglu_backward_(Backend* be, float* dh1, float* dh3, const float* dg, const float* h1,
                                 const float* h3, long n) {
    (void)be, swiglu_backward(dh1, dh3, dg, h1, h3, n);
}
static double cpu_crossentropy_forward_(Backend* be, float* probs, const int32_t* y, int N, int V) {
    (void)be;
    return crossentropy_forward(probs, y, N, V);
}
static void cpu_crossentropy_backward_(Backend* be, float* probs, const int32_t* y, int N, int V, float scale) {
    (void)be, crossentropy_backward(probs, y, N, V, scale);
}

static double cpu_head_xent_(Backend* be, const float* x, const float* W, const int32_t* y, int N, int D, int V,
                             float* dx, float* dW, float* scratch, int rows, int lanes, float* dW_lanes) {
    (void)be;
    return head_xent(x, W, y, N, D, V, dx, dW, scratch, rows, lanes, dW_lanes);
}

/* ---- embedding ------------------------------------------------------------------------------- */

static void cpu_embedding_forward_(Backend* be, float* h, const float* wte, const int32_t* x, int N, int G, int D) {
    (void)be;
    embedding_forward(h, wte, x, N, G, D);
}

static void cpu_embedding_backward_(Backend* be, float* dwte, const float* dh, const int32_t* x, int N, int G,
                                    int D) {
    (void)be;
    embedding_backward(dwte, dh, x, N, G, D);
}

/* ---- the Engram layer's token-wise parts: engram_layer.c -------------------------------------- */

static void cpu_engram_gate_forward_(Backend* be, const EngramDims* d, const EngramWeights* w, const float* h,
                                     float* out, float* acts) {
    (void)be, engram_gate_forward(d, w, h, out, acts);
}
static void cpu_engram_conv_forward_(Backend* be, const EngramDims* d, const float* conv, float* acts, float* out) {
    (void)be, engram_conv_forward(d, conv, acts, out);
}
static void cpu_engram_tokens_backward_(Backend* be, const EngramDims* d, const EngramWeights* w, const float* h,
                                        const float* acts, const float* dout, float* dy, float* dx, float* dv,
                                        float* dh, double* part, EngramWeights* g) {
    (void)be, engram_tokens_backward(d, w, h, acts, dout, dy, dx, dv, dh, part, g);
}

/* ---- the MoE layer's token-wise parts: moe.c -------------------------------------------------- */

static void cpu_moe_softmax_(Backend* be, float* probs, int N, int E) { (void)be, moe_softmax(probs, N, E); }
static void cpu_moe_gather_(Backend* be, float* X, const float* f, const int* row_tok, long R, int D) {
    (void)be, moe_gather(X, f, row_tok, R, D);
}
static void cpu_moe_combine_(Backend* be, const MoeDims* d, const float* probs, const int* top, const long* row,
                             const float* y, float* out) {
    (void)be, moe_combine(d, probs, top, row, y, out);
}
static void cpu_moe_routing_backward_(Backend* be, const MoeDims* d, const float* probs, const int* top,
                                      const long* row, const float* y, const float* dout, const double* c_aux,
                                      float* dy, float* dl) {
    (void)be, moe_routing_backward(d, probs, top, row, y, dout, c_aux, dy, dl);
}
static void cpu_moe_scatter_add_(Backend* be, const MoeDims* d, const long* row, const float* dX, float* df) {
    (void)be, moe_scatter_add(d, row, dX, df);
}

/* ---- the Engram rows: engram_rows.c ------------------------------------------------------------ */

static void cpu_rows_expand_(Backend* be, float* out, const float* rows, const int64_t* inv, const int64_t* pos,
                             size_t total, int Dh) {
    (void)be, rows_expand(out, rows, inv, pos, total, Dh);
}
static void cpu_rows_reduce_(Backend* be, float* grads, const float* de, const int64_t* inv, const int64_t* pos,
                             size_t total, int64_t n_unique, int Dh) {
    (void)be, rows_reduce(grads, de, inv, pos, total, n_unique, Dh);
}

/* ---- optimizer: optim.c ------------------------------------------------------------------------ */

static double cpu_sumsq_(Backend* be, const float* g, size_t n) {
    (void)be;
    return optim_sumsq(g, n);
}

static void cpu_adam_(Backend* be, float* p, const float* g, float* m, float* v, size_t n, const AdamStep* s) {
    (void)be, optim_adam(p, g, m, v, n, s);
}

/* ---- the Engram tables: engram_rows.c, optim.c ------------------------------------------------- */

static void cpu_tables_gather_(Backend* be, const EngramTables* t, const int64_t* keys, int64_t n, float* out) {
    (void)be, tables_gather_local(t, keys, n, out);
}
static void cpu_rows_sum_owned_(Backend* be, float* own, const float* recv, const float* self, int64_t self_lo,
                                int64_t self_hi, const int64_t* own_inv, int64_t n_recv, int Dh) {
    (void)be, rows_sum_owned(own, recv, self, self_lo, self_hi, own_inv, n_recv, Dh);
}
static void cpu_rows_adam_(Backend* be, const EngramTables* t, const int64_t* keys, int64_t n, const float* grads,
                           const AdamStep* s) {
    (void)be, optim_rows_adam(t, keys, n, grads, s);
}

static void cpu_close_(Backend* be) { (void)be; }

void backend_cpu_init(Backend* be) {
    memset(be, 0, sizeof *be);
    be->name = "cpu";
    be->precision = BACKEND_FP32;
    be->host = 1;
    be->size = 1;
    be->alloc = cpu_alloc_;
    be->free = cpu_free_;
    be->to_device = cpu_copy_;
    be->to_host = cpu_copy_;
    be->copy = cpu_copy_;
    be->zero = cpu_zero_;
    be->gemm = cpu_gemm_;
    be->linear_forward = cpu_linear_forward_;
    be->linear_backward = cpu_linear_backward_;
    be->branches_mean = cpu_branches_mean_;
    be->branches_sum = cpu_branches_sum_;
    be->branches_add = cpu_branches_add_;
    be->scale = cpu_scale_;
    be->add = cpu_add_;
    be->rmsnorm_forward = cpu_rmsnorm_forward_;
    be->rmsnorm_backward = cpu_rmsnorm_backward_;
    be->rope_apply = cpu_rope_apply_;
    be->attention_forward = cpu_attention_forward_;
    be->attention_backward = cpu_attention_backward_;
    be->swiglu_forward = cpu_swiglu_forward_;
    be->swiglu_backward = cpu_swiglu_backward_;
    be->crossentropy_forward = cpu_crossentropy_forward_;
    be->crossentropy_backward = cpu_crossentropy_backward_;
    be->head_xent = cpu_head_xent_;
    be->embedding_forward = cpu_embedding_forward_;
    be->embedding_backward = cpu_embedding_backward_;
    be->engram_gate_forward = cpu_engram_gate_forward_;
    be->engram_conv_forward = cpu_engram_conv_forward_;
    be->engram_tokens_backward = cpu_engram_tokens_backward_;
    be->moe_softmax = cpu_moe_softmax_;
    be->moe_gather = cpu_moe_gather_;
    be->moe_combine = cpu_moe_combine_;
    be->moe_routing_backward = cpu_moe_routing_backward_;
    be->moe_scatter_add = cpu_moe_scatter_add_;
    be->rows_expand = cpu_rows_expand_;
    be->rows_reduce = cpu_rows_reduce_;
    be->sumsq = cpu_sumsq_;
    be->adam = cpu_adam_;
    be->tables_gather = cpu_tables_gather_;
    be->rows_sum_owned = cpu_rows_sum_owned_;
    be->rows_adam = cpu_rows_adam_;
    be->close = cpu_close_;
}

Backend* backend_cpu(void) {
    static Backend be;
    if (!be.name) backend_cpu_init(&be);
    return &be;
}
