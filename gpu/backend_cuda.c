/*
 * backend_cuda.c — the CUDA backend (backend_cuda.h): memory, cuBLAS GEMMs, the linear layers,
 * attention and the fused output head composed from GEMMs and kernels, the launchers of
 * kernels.cu, and NCCL
 * collectives (all-reduce; all-to-allv as grouped send/recv). Everything runs in order on one
 * stream; to_host and the ops that return a number to the host wait for it.
 *
 * Run on one H200 (docs/gpu.md: every op against the CPU, training against the CPU, the figures);
 * it also compiles and links on a machine without a GPU, where it says why it cannot run. Not
 * here: the kernels' bodies (kernels.cu), picking the device for a config (parallel/device.c).
 */
#include "backend_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "common.h"
#include "kernels.h"

/* ---- checks: what failed, where, and the library's name for it --------------------------------- */

#define cudaCheck(call) cuda_check_((call), #call, __FILE__, __LINE__)
#define cublasCheck(call) cublas_check_((call), #call, __FILE__, __LINE__)
#define ncclCheck(call) nccl_check_((call), #call, __FILE__, __LINE__)
#define launchCheck() cuda_check_(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

static void cuda_check_(cudaError_t e, const char* what, const char* file, int line) {
    if (e != cudaSuccess)
        engram_die_at(file, line, "check the GPU and driver (nvidia-smi); docs/gpu.md", "%s: %s (%s)", what,
                      cudaGetErrorName(e), cudaGetErrorString(e));
}
static void cublas_check_(cublasStatus_t s, const char* what, const char* file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS)
        engram_die_at(file, line, "docs/gpu.md", "%s: %s", what, cublasGetStatusName(s));
}
static void nccl_check_(ncclResult_t r, const char* what, const char* file, int line) {
    if (r != ncclSuccess)
        engram_die_at(file, line, "run with NCCL_DEBUG=WARN for NCCL's own account; docs/gpu.md", "%s: %s", what,
                      ncclGetErrorString(r));
}

typedef struct {
    int device;              // the GPU this rank drives
    cudaStream_t stream;     // every op runs on it, in order
    cublasHandle_t blas;
    ncclComm_t nccl;
    MPI_Comm comm;           // control only: NCCL's id travels over it
    void* bf16;              // scratch for bf16 copies of GEMM inputs
    size_t bf16_bytes;
    double* dbl;             // device scratch for per-token losses and Σg² partials
    size_t dbl_n;
    struct GemmShape* shapes;   // ENGRAM_PROFILE=gemm: time per GEMM shape (else NULL)
    int n_shapes;
} CudaImpl;

/* ENGRAM_PROFILE=gemm: every GEMM waited for and timed, by shape (transposes, M, N, K, batch), the
 * internal ones of the linear layers, attention and the output head too; printed at close. */
#define MAX_SHAPES 256
typedef struct GemmShape { int ta, tb, M, N, K, batch; long calls; double sec; } GemmShape;

static GemmShape* gemm_shape_(CudaImpl* im, int ta, int tb, int M, int N, int K, int batch) {
    for (int i = 0; i < im->n_shapes; i++) {
        GemmShape* g = &im->shapes[i];
        if (g->ta == ta && g->tb == tb && g->M == M && g->N == N && g->K == K && g->batch == batch) return g;
    }
    if (im->n_shapes == MAX_SHAPES) return NULL;
    im->shapes[im->n_shapes] = (GemmShape){ta, tb, M, N, K, batch, 0, 0.0};
    return &im->shapes[im->n_shapes++];
}

static int by_time_(const void* a, const void* b) {
    double x = ((const GemmShape*)a)->sec, y = ((const GemmShape*)b)->sec;
    return (x < y) - (x > y);
}

static void gemm_shapes_print_(CudaImpl* im, int rank) {
    if (!im->shapes || rank != 0) return;
    qsort(im->shapes, (size_t)im->n_shapes, sizeof(GemmShape), by_time_);
    double total = 0;
    for (int i = 0; i < im->n_shapes; i++) total += im->shapes[i].sec;
    fprintf(stderr, "engram GEMM profile (rank 0): %.3f s in %d shapes; the slowest:\n", total, im->n_shapes);
    fprintf(stderr, "  %2s %2s %7s %7s %7s %5s %7s %10s %9s %9s\n", "ta", "tb", "M", "N", "K", "batch", "calls", "total ms",
            "us/call", "TFLOP/s");
    for (int i = 0; i < im->n_shapes && i < 20; i++) {
        const GemmShape* g = &im->shapes[i];
        double flop = 2.0 * g->M * g->N * (double)g->K * g->batch * (double)g->calls;
        fprintf(stderr, "  %2d %2d %7d %7d %7d %5d %7ld %10.2f %9.1f %9.1f\n", g->ta, g->tb, g->M, g->N, g->K, g->batch,
                g->calls, 1e3 * g->sec, 1e6 * g->sec / (double)g->calls, flop / g->sec / 1e12);
    }
}

static CudaImpl* impl_(Backend* be) { return (CudaImpl*)be->impl; }

/* Device scratch of at least n doubles (grown, never shrunk). */
static double* dbl_scratch_(CudaImpl* im, size_t n) {
    if (im->dbl_n < n) {
        cudaCheck(cudaStreamSynchronize(im->stream));
        cudaCheck(cudaFree(im->dbl));
        cudaCheck(cudaMalloc((void**)&im->dbl, n * sizeof(double)));
        im->dbl_n = n;
    }
    return im->dbl;
}

/* ---- memory ------------------------------------------------------------------------------------ */

/* Stream-ordered (the device's memory pool, kept by the process: see backend_cuda_open): a free
 * waits for nothing and the memory is reused by a later alloc on the same stream, after the ops
 * that used it. cudaMalloc/cudaFree would wait for the whole device at every free. */
static void* cuda_alloc_(Backend* be, size_t bytes) {
    void* p = NULL;
    cudaCheck(cudaMallocAsync(&p, bytes ? bytes : 1, impl_(be)->stream));
    cudaCheck(cudaMemsetAsync(p, 0, bytes, impl_(be)->stream));
    return p;
}
static void cuda_free_(Backend* be, void* p) {
    if (p) cudaCheck(cudaFreeAsync(p, impl_(be)->stream));
}
/* Host buffers are pageable: copy, then wait, so the caller may reuse its buffer at once. */
static void cuda_to_device_(Backend* be, void* dst, const void* src, size_t bytes) {
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, impl_(be)->stream));
    cudaCheck(cudaStreamSynchronize(impl_(be)->stream));
}
static void cuda_sync_(Backend* be) { cudaCheck(cudaStreamSynchronize(impl_(be)->stream)); }

static void cuda_to_host_(Backend* be, void* dst, const void* src, size_t bytes) {
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, impl_(be)->stream));
    cudaCheck(cudaStreamSynchronize(impl_(be)->stream));
}
static void cuda_copy_(Backend* be, void* dst, const void* src, size_t bytes) {
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, impl_(be)->stream));
}
static void cuda_zero_(Backend* be, void* p, size_t bytes) {
    cudaCheck(cudaMemsetAsync(p, 0, bytes, impl_(be)->stream));
}

/* ---- GEMM -------------------------------------------------------------------------------------- */

/* Floats a strided batch of row-major matrices spans: rows × ld, the last row only up to cols. */
static size_t span_(int rows, int cols, int ld, long long stride, int batch) {
    if (!rows || !cols || !batch) return 0;
    return (size_t)(batch - 1) * (size_t)stride + (size_t)(rows - 1) * ld + cols;
}

/* Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS gets B first, N and M
 * swapped, and the same leading dimensions. */
static void cuda_gemm_(Backend* be, int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda,
                       long long sA, const float* B, int ldb, long long sB, float beta, float* C, int ldc,
                       long long sC, int batch) {
    CudaImpl* im = impl_(be);
    if (!M || !N || !batch) return;
    GemmShape* shape = im->shapes ? gemm_shape_(im, ta, tb, M, N, K, batch) : NULL;
    double t0 = 0;
    if (shape) cudaCheck(cudaStreamSynchronize(im->stream)), t0 = engram_now();
    const cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const void *a = A, *b = B;
    cudaDataType type = CUDA_R_32F;
    if (be->precision == BACKEND_BF16) {
        // bf16 copies of the spans A and B cover (views of one buffer simply get copied twice)
        const size_t na = span_(ta ? K : M, ta ? M : K, lda, sA, batch), nb = span_(tb ? N : K, tb ? K : N, ldb, sB, batch);
        const size_t boff = (na * 2 + 255) / 256 * 256;   // B's copy starts 256-byte aligned
        const size_t need = boff + nb * 2;
        if (im->bf16_bytes < need) {
            cudaCheck(cudaStreamSynchronize(im->stream));
            cudaCheck(cudaFree(im->bf16));
            cudaCheck(cudaMalloc(&im->bf16, need));
            im->bf16_bytes = need;
        }
        kernels_to_bf16(im->bf16, A, na, im->stream);
        kernels_to_bf16((char*)im->bf16 + boff, B, nb, im->stream);
        launchCheck();
        a = im->bf16, b = (char*)im->bf16 + boff;
        type = CUDA_R_16BF;
    }
    cublasCheck(cublasGemmStridedBatchedEx(im->blas, opB, opA, N, M, K, &alpha, b, type, ldb, sB, a, type, lda, sA,
                                           &beta, C, CUDA_R_32F, ldc, sC, batch, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT));
    if (shape) {
        cudaCheck(cudaStreamSynchronize(im->stream));
        shape->sec += engram_now() - t0, shape->calls++;
    }
}

/* ---- kernels ------------------------------------------------------------------------------------- */

/* ops.c's linear layers: the same GEMMs (one-entry batches), then the bias kernels. */
static void cuda_linear_forward_(Backend* be, float* out, const float* in, const float* W, const float* bias, int N,
                                 int Din, int Dout) {
    cuda_gemm_(be, 0, 1, N, Dout, Din, 1.0f, in, Din, 0, W, Din, 0, 0.0f, out, Dout, 0, 1);
    if (!bias) return;
    kernels_bias_add(out, bias, N, Dout, impl_(be)->stream);
    launchCheck();
}
static void cuda_linear_backward_(Backend* be, float* din, float* dW, float* dbias, const float* dout,
                                  const float* in, const float* W, int N, int Din, int Dout) {
    if (din) cuda_gemm_(be, 0, 0, N, Din, Dout, 1.0f, dout, Dout, 0, W, Din, 0, 1.0f, din, Din, 0, 1);
    cuda_gemm_(be, 1, 0, Dout, Din, N, 1.0f, dout, Dout, 0, in, Din, 0, 1.0f, dW, Din, 0, 1);
    if (!dbias) return;
    kernels_bias_grad(dbias, dout, N, Dout, impl_(be)->stream);
    launchCheck();
}

static void cuda_branches_mean_(Backend* be, float* out, const float* h, int N, int G, int D) {
    kernels_branches_reduce(out, h, N, G, D, 1.0f / (float)G, impl_(be)->stream);
    launchCheck();
}
static void cuda_branches_sum_(Backend* be, float* out, const float* h, int N, int G, int D) {
    kernels_branches_reduce(out, h, N, G, D, 1.0f, impl_(be)->stream);
    launchCheck();
}
static void cuda_branches_add_(Backend* be, float* h, const float* x, int N, int G, int D) {
    kernels_branches_add(h, x, N, G, D, impl_(be)->stream);
    launchCheck();
}
static void cuda_scale_(Backend* be, float* y, const float* x, float alpha, size_t n) {
    kernels_scale(y, x, alpha, n, impl_(be)->stream);
    launchCheck();
}
static void cuda_add_(Backend* be, float* y, const float* x, size_t n) {
    kernels_add(y, x, n, impl_(be)->stream);
    launchCheck();
}

static void cuda_rmsnorm_forward_(Backend* be, float* out, float* rstd, const float* x, const float* w, int N, int D,
                                  float eps) {
    kernels_rmsnorm_forward(out, rstd, x, w, N, D, eps, impl_(be)->stream);
    launchCheck();
}
static void cuda_rmsnorm_backward_(Backend* be, float* dx, float* dw, const float* dout, const float* x,
                                   const float* w, const float* rstd, int N, int D) {
    kernels_rmsnorm_backward(dx, dw, dout, x, w, rstd, N, D, impl_(be)->stream);
    launchCheck();
}
static void cuda_rope_apply_(Backend* be, float* qkv, int B, int T, int D, int nh, float base, int inverse) {
    kernels_rope_apply(qkv, B, T, D, nh, base, inverse, impl_(be)->stream);
    launchCheck();
}

/* Attention as ops.c computes it: per sequence b, the nh heads are one strided batch — head h of
 * q, k, v is the [T,hd] view at column h·hd (+ 0, D, 2D) of qkv [B,T,3D] with row stride 3D, so
 * the batch stride is hd; att [B,nh,T,T] has batch stride T·T. */
static void cuda_attention_forward_(Backend* be, float* out, float* att, const float* qkv, int B, int T, int D,
                                    int nh) {
    const int hd = D / nh, C3 = 3 * D;
    const long long TT = (long long)T * T;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++) {   // scores = scale·q·kᵀ [T,T] per head
        const float* q = qkv + (size_t)b * T * C3;
        be->gemm(be, 0, 1, T, T, hd, scale, q, C3, hd, q + D, C3, hd, 0.0f, att + (size_t)b * nh * TT, T, TT, nh);
    }
    kernels_causal_softmax_forward(att, (long)B * nh * T, T, impl_(be)->stream);
    launchCheck();
    for (int b = 0; b < B; b++)   // out_h = P·v [T,hd]
        be->gemm(be, 0, 0, T, hd, T, 1.0f, att + (size_t)b * nh * TT, T, TT, qkv + (size_t)b * T * C3 + 2 * D, C3, hd,
                 0.0f, out + (size_t)b * T * D, D, hd, nh);
}

static void cuda_attention_backward_(Backend* be, float* dqkv, const float* dout, const float* qkv, const float* att,
                                     float* scratch, int B, int T, int D, int nh) {
    const int hd = D / nh, C3 = 3 * D;
    const long long TT = (long long)T * T;
    const float scale = 1.0f / sqrtf((float)hd);
    // forward: o = P·v, so dv = Pᵀ·do and dP = do·vᵀ (into scratch)
    for (int b = 0; b < B; b++) {
        const size_t bh = (size_t)b * nh * TT, qo = (size_t)b * T * C3;
        const float* dy = dout + (size_t)b * T * D;
        be->gemm(be, 1, 0, T, hd, T, 1.0f, att + bh, T, TT, dy, D, hd, 0.0f, dqkv + qo + 2 * D, C3, hd, nh);
        be->gemm(be, 0, 1, T, T, hd, 1.0f, dy, D, hd, qkv + qo + 2 * D, C3, hd, 0.0f, scratch + bh, T, TT, nh);
    }
    kernels_causal_softmax_backward(scratch, att, (long)B * nh * T, T, scale, impl_(be)->stream);
    launchCheck();
    // scores were q·kᵀ: dq = dS·k, dk = dSᵀ·q
    for (int b = 0; b < B; b++) {
        const size_t bh = (size_t)b * nh * TT, qo = (size_t)b * T * C3;
        be->gemm(be, 0, 0, T, hd, T, 1.0f, scratch + bh, T, TT, qkv + qo + D, C3, hd, 0.0f, dqkv + qo, C3, hd, nh);
        be->gemm(be, 1, 0, T, hd, T, 1.0f, scratch + bh, T, TT, qkv + qo, C3, hd, 0.0f, dqkv + qo + D, C3, hd, nh);
    }
}

static void cuda_swiglu_forward_(Backend* be, float* g, const float* h1, const float* h3, long n) {
    kernels_swiglu_forward(g, h1, h3, n, impl_(be)->stream);
    launchCheck();
}
static void cuda_swiglu_backward_(Backend* be, float* dh1, float* dh3, const float* dg, const float* h1,
                                  const float* h3, long n) {
    kernels_swiglu_backward(dh1, dh3, dg, h1, h3, n, impl_(be)->stream);
    launchCheck();
}

/* Per-token losses loss [N] (device) come back to the host and are added in token order, as
 * crossentropy_forward. */
static double losses_sum_(Backend* be, const double* loss, int N) {
    double* h = mallocCheck((size_t)(N ? N : 1) * sizeof(double));
    cuda_to_host_(be, h, loss, (size_t)N * sizeof(double));
    double total = 0.0;
    for (int n = 0; n < N; n++) total += h[n];
    free(h);
    return total;
}

static double cuda_crossentropy_forward_(Backend* be, float* probs, const int32_t* y, int N, int V) {
    CudaImpl* im = impl_(be);
    double* loss = dbl_scratch_(im, (size_t)N);
    kernels_crossentropy_forward(probs, loss, y, N, V, im->stream);
    launchCheck();
    return losses_sum_(be, loss, N);
}
static void cuda_crossentropy_backward_(Backend* be, float* probs, const int32_t* y, int N, int V, float scale) {
    kernels_crossentropy_backward(probs, y, N, V, scale, impl_(be)->stream);
    launchCheck();
}

/* ops.c's head_xent with one lane: blocks of `rows` tokens in order on the stream, each block's
 * logits → probabilities → p − onehot in scratch [rows,V], then dx of the block and dW += (the
 * first block overwrites). lanes and dW_lanes are the CPU's threads: not used here. */
static double cuda_head_xent_(Backend* be, const float* x, const float* W, const int32_t* y, int N, int D, int V,
                              float* dx, float* dW, float* scratch, int rows, int lanes, float* dW_lanes) {
    (void)lanes, (void)dW_lanes;
    CudaImpl* im = impl_(be);
    double* loss = dbl_scratch_(im, (size_t)N);
    for (int n0 = 0; n0 < N; n0 += rows) {
        const int nb = N - n0 < rows ? N - n0 : rows;
        const float* xb = x + (size_t)n0 * D;
        cuda_gemm_(be, 0, 1, nb, V, D, 1.0f, xb, D, 0, W, D, 0, 0.0f, scratch, V, 0, 1);   // logits [nb,V]
        kernels_crossentropy_forward(scratch, loss + n0, y + n0, nb, V, im->stream);
        launchCheck();
        if (!dx) continue;
        kernels_crossentropy_backward(scratch, y + n0, nb, V, 1.0f, im->stream);   // p − onehot
        launchCheck();
        cuda_gemm_(be, 0, 0, nb, D, V, 1.0f, scratch, V, 0, W, D, 0, 0.0f, dx + (size_t)n0 * D, D, 0, 1);
        cuda_gemm_(be, 1, 0, V, D, nb, 1.0f, scratch, V, 0, xb, D, 0, n0 ? 1.0f : 0.0f, dW, D, 0, 1);
    }
    if (dx && N == 0) cuda_zero_(be, dW, (size_t)V * D * sizeof(float));
    return losses_sum_(be, loss, N);
}

static void cuda_embedding_forward_(Backend* be, float* h, const float* wte, const int32_t* x, int N, int G, int D) {
    kernels_embedding_forward(h, wte, x, N, G, D, impl_(be)->stream);
    launchCheck();
}
static void cuda_embedding_backward_(Backend* be, float* dwte, const float* dh, const int32_t* x, int N, int G,
                                     int D) {
    kernels_embedding_backward(dwte, dh, x, N, G, D, impl_(be)->stream);
    launchCheck();
}

/* ---- the Engram layer's token-wise parts ---------------------------------------------------------- */

static void cuda_engram_gate_forward_(Backend* be, const EngramDims* d, const EngramWeights* w, const float* h,
                                      float* out, float* acts) {
    kernels_engram_gate_forward(*d, *w, h, out, engram_acts_split(d, acts), impl_(be)->stream);
    launchCheck();
}
static void cuda_engram_conv_forward_(Backend* be, const EngramDims* d, const float* conv, float* acts, float* out) {
    kernels_engram_conv_forward(*d, conv, engram_acts_split(d, acts), out, impl_(be)->stream);
    launchCheck();
}
static void cuda_engram_tokens_backward_(Backend* be, const EngramDims* d, const EngramWeights* w, const float* h,
                                         const float* acts, const float* dout, float* dy, float* dx, float* dv,
                                         float* dh, double* part, EngramWeights* g) {
    int csize, chunks;
    engram_backward_chunks(d->B * d->T, &csize, &chunks);   // the CPU's chunks: the same partial sums
    kernels_engram_tokens_backward(*d, *w, h, engram_acts_split(d, (float*)acts), dout, dy, dx, dv, dh, part, csize,
                                   chunks, *g, impl_(be)->stream);
    launchCheck();
}

/* ---- the MoE layer's token-wise parts and the Engram rows: kernels.cu ------------------------------- */

static void cuda_moe_softmax_(Backend* be, float* probs, int N, int E) {
    kernels_moe_softmax(probs, N, E, impl_(be)->stream);
    launchCheck();
}
static void cuda_moe_gather_(Backend* be, float* X, const float* f, const int* row_tok, long R, int D) {
    kernels_moe_gather(X, f, row_tok, R, D, impl_(be)->stream);
    launchCheck();
}
static void cuda_moe_combine_(Backend* be, const MoeDims* d, const float* probs, const int* top, const long* row,
                              const float* y, float* out) {
    kernels_moe_combine(probs, top, row, y, out, d->N, d->E, d->k, d->D, impl_(be)->stream);
    launchCheck();
}
static void cuda_moe_routing_backward_(Backend* be, const MoeDims* d, const float* probs, const int* top,
                                       const long* row, const float* y, const float* dout, const double* c_aux,
                                       float* dy, float* dl) {
    if (d->k > KERNELS_MOE_MAX_K)
        engram_die("use a smaller moe.top_k", "the CUDA routing backward takes top_k <= %d, not %d", KERNELS_MOE_MAX_K,
                   d->k);
    kernels_moe_routing_backward(probs, top, row, y, dout, c_aux, dy, dl, d->N, d->E, d->k, d->D, impl_(be)->stream);
    launchCheck();
}
static void cuda_moe_scatter_add_(Backend* be, const MoeDims* d, const long* row, const float* dX, float* df) {
    kernels_moe_scatter_add(row, dX, df, d->N, d->k, d->D, impl_(be)->stream);
    launchCheck();
}
static void cuda_rows_expand_(Backend* be, float* out, const float* rows, const int64_t* inv, const int64_t* pos,
                              size_t total, int Dh) {
    kernels_rows_expand(out, rows, inv, pos, total, Dh, impl_(be)->stream);
    launchCheck();
}
static void cuda_rows_reduce_(Backend* be, float* grads, const float* de, const int64_t* inv, const int64_t* pos,
                              size_t total, int64_t n_unique, int Dh) {
    kernels_rows_reduce(grads, de, inv, pos, total, n_unique, Dh, impl_(be)->stream);
    launchCheck();
}

/* ---- optimizer ------------------------------------------------------------------------------------ */

static double cuda_sumsq_(Backend* be, const float* g, size_t n) {
    CudaImpl* im = impl_(be);
    const int nb = kernels_sumsq_blocks(n);
    double* part = dbl_scratch_(im, (size_t)nb);
    kernels_sumsq(part, g, n, im->stream);
    launchCheck();
    double h[1024], total = 0.0;   // kernels_sumsq_blocks ≤ 1024
    cuda_to_host_(be, h, part, (size_t)nb * sizeof(double));
    for (int i = 0; i < nb; i++) total += h[i];
    return total;
}

static void cuda_adam_(Backend* be, float* p, const float* g, float* m, float* v, size_t n, const AdamStep* s) {
    const double bc1 = 1.0 - pow(s->beta1, (double)s->t), bc2 = 1.0 - pow(s->beta2, (double)s->t);
    kernels_adam(p, g, m, v, n, s->lr, s->wd, s->beta1, s->beta2, s->eps, bc1, bc2, s->grad_scale,
                 impl_(be)->stream);
    launchCheck();
}

/* ---- the Engram tables ------------------------------------------------------------------------------ */

/* The tables' buffers and row ranges by value, for the kernels. */
static KernelTables ktables_(const EngramTables* t) {
    if (t->n_layers > KERNELS_MAX_TABLES)
        engram_die("use fewer Engram layers", "the CUDA backend takes at most %d Engram tables, not %d",
                   KERNELS_MAX_TABLES, t->n_layers);
    KernelTables k;
    memset(&k, 0, sizeof k);
    k.n_layers = t->n_layers, k.Dh = t->Dh;
    for (int l = 0; l < t->n_layers; l++) {
        k.table[l] = t->table[l], k.m[l] = t->m[l], k.v[l] = t->v[l], k.updates[l] = t->updates[l];
        k.first[l] = t->first[l], k.local[l] = t->local[l];
    }
    return k;
}

static void cuda_tables_gather_(Backend* be, const EngramTables* t, const int64_t* keys, int64_t n, float* out) {
    kernels_tables_gather(ktables_(t), keys, n, out, impl_(be)->stream);   // keys checked by the caller
    launchCheck();
}
static void cuda_rows_sum_owned_(Backend* be, float* own, const float* recv, const float* self, int64_t self_lo,
                                 int64_t self_hi, const int64_t* own_inv, int64_t n_recv, int Dh) {
    kernels_rows_sum_owned(own, recv, self, self_lo, self_hi, own_inv, n_recv, Dh, impl_(be)->stream);
    launchCheck();
}
static void cuda_rows_adam_(Backend* be, const EngramTables* t, const int64_t* keys, int64_t n, const float* grads,
                            const AdamStep* s) {
    const double bc1 = 1.0 - pow(s->beta1, (double)s->t), bc2 = 1.0 - pow(s->beta2, (double)s->t);
    kernels_tables_adam(ktables_(t), keys, n, grads, s->lr, s->beta1, s->beta2, s->eps, bc1, bc2, s->grad_scale,
                        impl_(be)->stream);
    launchCheck();
}

/* ---- collectives: NCCL on the backend's stream ------------------------------------------------------ */

static void cuda_allreduce_sum_(Backend* be, float* buf, size_t n) {
    CudaImpl* im = impl_(be);
    ncclCheck(ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, im->nccl, im->stream));
}

/* All-to-allv as one group of point-to-point calls (NCCL has no alltoallv); empty pairs skipped. */
static void cuda_alltoallv_(Backend* be, const void* send, const size_t* scounts, const size_t* sdispls, void* recv,
                            const size_t* rcounts, const size_t* rdispls) {
    CudaImpl* im = impl_(be);
    ncclCheck(ncclGroupStart());
    for (int r = 0; r < be->size; r++) {
        if (scounts[r])
            ncclCheck(ncclSend((const char*)send + sdispls[r], scounts[r], ncclChar, r, im->nccl, im->stream));
        if (rcounts[r]) ncclCheck(ncclRecv((char*)recv + rdispls[r], rcounts[r], ncclChar, r, im->nccl, im->stream));
    }
    ncclCheck(ncclGroupEnd());
}

static void cuda_close_(Backend* be) {
    CudaImpl* im = impl_(be);
    if (!im) return;
    cudaCheck(cudaStreamSynchronize(im->stream));
    gemm_shapes_print_(im, be->rank);
    free(im->shapes);
    ncclCheck(ncclCommDestroy(im->nccl));
    cublasCheck(cublasDestroy(im->blas));
    cudaCheck(cudaFree(im->bf16));
    cudaCheck(cudaFree(im->dbl));
    cudaCheck(cudaStreamDestroy(im->stream));
    mpiCheck(MPI_Comm_free(&im->comm));
    free(im);
    be->impl = NULL;
}

/* ---- probe and open ----------------------------------------------------------------------------- */

int backend_cuda_probe(char* err, size_t n) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
        return engram_errf(err, n, "parallel.device=cuda: no usable GPU: cudaGetDeviceCount failed with %s (%s); "
                                   "use parallel.device=cpu on this machine", cudaGetErrorName(e),
                           cudaGetErrorString(e));
    if (count == 0)
        return engram_errf(err, n, "parallel.device=cuda: no usable GPU: cudaGetDeviceCount found 0 devices; "
                                   "use parallel.device=cpu on this machine");
    return 0;
}

int backend_cuda_open(Backend* be, MPI_Comm comm, int precision, char* err, size_t n) {
    if (backend_cuda_probe(err, n) != 0) return -1;
    // one rank per GPU: the rank's place on its node picks the device
    MPI_Comm node;
    int local, local_size, count;
    mpiCheck(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    mpiCheck(MPI_Comm_rank(node, &local));
    mpiCheck(MPI_Comm_size(node, &local_size));
    mpiCheck(MPI_Comm_free(&node));
    cudaCheck(cudaGetDeviceCount(&count));
    if (local_size > count)
        return engram_errf(err, n, "parallel.device=cuda: %d ranks on this node but %d GPU%s: start one rank per GPU",
                           local_size, count, count == 1 ? "" : "s");
    memset(be, 0, sizeof *be);
    CudaImpl* im = callocCheck(1, sizeof(CudaImpl));
    be->impl = im;
    be->name = "cuda";
    be->host = 0;
    be->head_rows = 4096;   // logits of 4096 tokens x V at a time: 0.8 GB at V = 50k, GEMMs big enough
    be->precision = precision;
    mpiCheck(MPI_Comm_dup(comm, &im->comm));
    mpiCheck(MPI_Comm_rank(im->comm, &be->rank));
    mpiCheck(MPI_Comm_size(im->comm, &be->size));
    im->device = local;
    const char* prof = getenv("ENGRAM_PROFILE");
    if (prof && !strcmp(prof, "gemm")) im->shapes = callocCheck(MAX_SHAPES, sizeof(GemmShape));
    cudaCheck(cudaSetDevice(local));
    cudaCheck(cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking));
    cudaMemPool_t pool;   // keep freed memory in the pool across synchronisations (default: give it back)
    uint64_t keep = UINT64_MAX;
    cudaCheck(cudaDeviceGetDefaultMemPool(&pool, local));
    cudaCheck(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    cublasCheck(cublasCreate(&im->blas));
    cublasCheck(cublasSetStream(im->blas, im->stream));
    cublasCheck(cublasSetMathMode(im->blas, CUBLAS_DEFAULT_MATH));   // no TF32: fp32 mode means fp32
    ncclUniqueId id;
    if (be->rank == 0) ncclCheck(ncclGetUniqueId(&id));
    mpiCheck(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, im->comm));
    ncclCheck(ncclCommInitRank(&im->nccl, be->size, id, be->rank));

    be->alloc = cuda_alloc_;
    be->free = cuda_free_;
    be->to_device = cuda_to_device_;
    be->to_host = cuda_to_host_;
    be->sync = cuda_sync_;
    be->copy = cuda_copy_;
    be->zero = cuda_zero_;
    be->gemm = cuda_gemm_;
    be->linear_forward = cuda_linear_forward_;
    be->linear_backward = cuda_linear_backward_;
    be->branches_mean = cuda_branches_mean_;
    be->branches_sum = cuda_branches_sum_;
    be->branches_add = cuda_branches_add_;
    be->scale = cuda_scale_;
    be->add = cuda_add_;
    be->rmsnorm_forward = cuda_rmsnorm_forward_;
    be->rmsnorm_backward = cuda_rmsnorm_backward_;
    be->rope_apply = cuda_rope_apply_;
    be->attention_forward = cuda_attention_forward_;
    be->attention_backward = cuda_attention_backward_;
    be->swiglu_forward = cuda_swiglu_forward_;
    be->swiglu_backward = cuda_swiglu_backward_;
    be->crossentropy_forward = cuda_crossentropy_forward_;
    be->crossentropy_backward = cuda_crossentropy_backward_;
    be->head_xent = cuda_head_xent_;
    be->embedding_forward = cuda_embedding_forward_;
    be->embedding_backward = cuda_embedding_backward_;
    be->engram_gate_forward = cuda_engram_gate_forward_;
    be->engram_conv_forward = cuda_engram_conv_forward_;
    be->engram_tokens_backward = cuda_engram_tokens_backward_;
    be->moe_softmax = cuda_moe_softmax_;
    be->moe_gather = cuda_moe_gather_;
    be->moe_combine = cuda_moe_combine_;
    be->moe_routing_backward = cuda_moe_routing_backward_;
    be->moe_scatter_add = cuda_moe_scatter_add_;
    be->rows_expand = cuda_rows_expand_;
    be->rows_reduce = cuda_rows_reduce_;
    be->sumsq = cuda_sumsq_;
    be->adam = cuda_adam_;
    be->tables_gather = cuda_tables_gather_;
    be->rows_sum_owned = cuda_rows_sum_owned_;
    be->rows_adam = cuda_rows_adam_;
    be->allreduce_sum = cuda_allreduce_sum_;
    be->alltoallv = cuda_alltoallv_;
    be->close = cuda_close_;
    return 0;
}
