/*
 * backend.h — the compute backend behind one interface (docs/gpu.md): device memory, GEMMs, the
 * model's non-GEMM kernels and the collectives over ranks. The model code calls these through a
 * Backend and never knows which one it holds, so there is one training loop and one orchestration
 * of the layers for every device.
 *
 * Implementations: "cpu" (src/backend_cpu.c: host memory, the ops of ops.c / optim.c; its
 * collectives are MPI, set by parallel/device.c) and "cuda" (gpu/: cudaMalloc, cuBLAS, the kernels
 * of gpu/kernels.cu, NCCL). parallel/device.h opens one for a rank. For tests, "cpu-guarded"
 * (src/backend_guard.c) wraps the CPU one so that any host access to its memory faults.
 *
 * Every pointer an op takes is a DEVICE pointer of that backend (host memory on the CPU backend),
 * except the scalars and the AdamStep. Ops run in order on one stream; results reach the host only
 * through to_host, which waits. The kernels keep the contracts of ops.h (what accumulates with +=,
 * what is overwritten), so the CPU backend is ops.c itself.
 *
 * Not here: the order of ops (the model), hashing (stays on the host), files.
 */
#ifndef ENGRAM_BACKEND_H
#define ENGRAM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "engram_layer.h"
#include "engram_rows.h"
#include "moe.h"

/* Precision of the GEMMs. fp32: exact fp32 products (the mode tests compare across devices);
 * bf16: inputs rounded to bfloat16, products accumulated in fp32, fp32 results (the fp32 master
 * weights and everything outside the GEMMs stay fp32). The CPU backend always computes in fp32. */
typedef enum { BACKEND_FP32 = 0, BACKEND_BF16 = 1 } BackendPrecision;

/* One Adam(W) update (optim.c's math): decoupled decay wd, bias corrections for step t (1-based),
 * gradients multiplied by grad_scale first. */
typedef struct {
    double lr, wd, beta1, beta2, eps, grad_scale;
    int64_t t;
} AdamStep;

typedef struct Backend Backend;
struct Backend {
    const char* name;   // "cpu" | "cuda"
    int precision;      // BackendPrecision of gemm
    int host;           // 1: buffers are host memory and ops run on the calling threads (cpu)
    int head_rows;      // tokens per block of the fused output head; 0: the model's (sized for CPU caches)
    int rank, size;     // this rank and P, in the world the collectives run over
    void* impl;         // the implementation's state (handles, stream, scratch)

    /* ---- memory ---------------------------------------------------------------------------- */
    void* (*alloc)(Backend* be, size_t bytes);   // zero-filled; dies on failure
    void (*free)(Backend* be, void* p);
    void (*to_device)(Backend* be, void* dst, const void* src, size_t bytes);   // host → device
    void (*to_host)(Backend* be, void* dst, const void* src, size_t bytes);     // device → host, waits
    void (*copy)(Backend* be, void* dst, const void* src, size_t bytes);        // device → device
    void (*zero)(Backend* be, void* p, size_t bytes);                           // memset 0

    /* ---- GEMM: C_i[M,N] = alpha·op(A_i)·op(B_i) + beta·C_i for i < batch, row-major, op =
     * transpose when ta / tb is 1, X_i = X + i·sX (strides in floats). In `precision`. */
    void (*gemm)(Backend* be, int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda,
                 long long sA, const float* B, int ldb, long long sB, float beta, float* C, int ldc, long long sC,
                 int batch);

    /* ---- kernels: the contracts of ops.h ---------------------------------------------------- */
    /* out[N,Dout] = in·Wᵀ (+ bias); backward: din += dout·W (if din), dW += doutᵀ·in, dbias += Σ_n
     * dout (if dbias): ops.h linear_forward / linear_backward, GEMMs in `precision`. */
    void (*linear_forward)(Backend* be, float* out, const float* in, const float* W, const float* bias, int N,
                           int Din, int Dout);
    void (*linear_backward)(Backend* be, float* din, float* dW, float* dbias, const float* dout, const float* in,
                            const float* W, int N, int Din, int Dout);
    /* Hyper-connection branches, h [N,G,D]: out = mean_g h or Σ_g h [N,D]; add: h[n,g] += x[n]. */
    void (*branches_mean)(Backend* be, float* out, const float* h, int N, int G, int D);
    void (*branches_sum)(Backend* be, float* out, const float* h, int N, int G, int D);
    void (*branches_add)(Backend* be, float* h, const float* x, int N, int G, int D);
    /* y = x·alpha (x may be y); y += x. n elements. */
    void (*scale)(Backend* be, float* y, const float* x, float alpha, size_t n);
    void (*add)(Backend* be, float* y, const float* x, size_t n);
    void (*rmsnorm_forward)(Backend* be, float* out, float* rstd, const float* x, const float* w, int N, int D,
                            float eps);
    void (*rmsnorm_backward)(Backend* be, float* dx, float* dw, const float* dout, const float* x, const float* w,
                             const float* rstd, int N, int D);
    void (*rope_apply)(Backend* be, float* qkv, int B, int T, int D, int nh, float base, int inverse);
    void (*attention_forward)(Backend* be, float* out, float* att, const float* qkv, int B, int T, int D, int nh);
    void (*attention_backward)(Backend* be, float* dqkv, const float* dout, const float* qkv, const float* att,
                               float* scratch, int B, int T, int D, int nh);
    void (*swiglu_forward)(Backend* be, float* g, const float* h1, const float* h3, long n);
    void (*swiglu_backward)(Backend* be, float* dh1, float* dh3, const float* dg, const float* h1, const float* h3,
                            long n);
    /* y [N] int32 on the device; the loss comes back to the host (summed in token order). */
    double (*crossentropy_forward)(Backend* be, float* probs, const int32_t* y, int N, int V);
    void (*crossentropy_backward)(Backend* be, float* probs, const int32_t* y, int N, int V, float scale);

    /* The output head fused with its loss (ops.h head_xent): logits of blocks of `rows` tokens in
     * scratch, Σ_n −log p[n, y[n]] back to the host in token order; with dx, also dx [N,D] and dW
     * [V,D] of that sum (overwritten). lanes / dW_lanes: the CPU's threads taking blocks in turn
     * (scratch [lanes,rows,V], dW_lanes [lanes−1,V,D]); a device backend takes lanes = 1. */
    double (*head_xent)(Backend* be, const float* x, const float* W, const int32_t* y, int N, int D, int V,
                        float* dx, float* dW, float* scratch, int rows, int lanes, float* dW_lanes);

    /* h [N,G,D] = wte[x[n]] on every branch (token ids checked by the caller: 0 ≤ x < V);
     * backward: dwte[x[n]] += Σ_g dh[n,g], in token order (deterministic when ids repeat). */
    void (*embedding_forward)(Backend* be, float* h, const float* wte, const int32_t* x, int N, int G, int D);
    void (*embedding_backward)(Backend* be, float* dwte, const float* dh, const int32_t* x, int N, int G, int D);

    /* The Engram layer's token-wise parts (engram_layer.h: engram_gate_forward, engram_conv_forward,
     * engram_tokens_backward); its projections go through gemm. w, g hold be's pointers. */
    void (*engram_gate_forward)(Backend* be, const EngramDims* d, const EngramWeights* w, const float* h,
                                float* out, float* acts);
    void (*engram_conv_forward)(Backend* be, const EngramDims* d, const float* conv, float* acts, float* out);
    void (*engram_tokens_backward)(Backend* be, const EngramDims* d, const EngramWeights* w, const float* h,
                                   const float* acts, const float* dout, float* dy, float* dx, float* dv,
                                   float* dh, double* part, EngramWeights* g);

    /* The MoE layer's token-wise parts (moe.h: moe_softmax, moe_gather, moe_combine,
     * moe_routing_backward, moe_scatter_add); the routing plan (top, row, row_tok) and c_aux on the
     * device (the plan is built on the host: moe.c). Its GEMMs go through gemm, its SwiGLU through
     * swiglu_forward / swiglu_backward. */
    void (*moe_softmax)(Backend* be, float* probs, int N, int E);
    void (*moe_gather)(Backend* be, float* X, const float* f, const int* row_tok, long R, int D);
    void (*moe_combine)(Backend* be, const MoeDims* d, const float* probs, const int* top, const long* row,
                        const float* y, float* out);
    void (*moe_routing_backward)(Backend* be, const MoeDims* d, const float* probs, const int* top, const long* row,
                                 const float* y, const float* dout, const double* c_aux, float* dy, float* dl);
    void (*moe_scatter_add)(Backend* be, const MoeDims* d, const long* row, const float* dX, float* df);

    /* The Engram rows of one step (engram_rows.h: rows_expand, rows_reduce): unique rows [., Dh]
     * → out [total, Dh], out[i] = rows[pos ? pos[inv[i]] : inv[i]]; and back, grads [n_unique, Dh]
     * overwritten with the sums of de [total, Dh] in position order. inv [total], pos [n_unique]
     * int64 on the device (pos may be NULL). */
    void (*rows_expand)(Backend* be, float* out, const float* rows, const int64_t* inv, const int64_t* pos,
                        size_t total, int Dh);
    void (*rows_reduce)(Backend* be, float* grads, const float* de, const int64_t* inv, const int64_t* pos,
                        size_t total, int64_t n_unique, int Dh);

    /* Σ g² in double (for clipping by the global norm); comes back to the host. */
    double (*sumsq)(Backend* be, const float* g, size_t n);
    /* One Adam(W) step over n elements: p, m, v updated in place. */
    void (*adam)(Backend* be, float* p, const float* g, float* m, float* v, size_t n, const AdamStep* s);
    /* The Engram tables t (engram_rows.h: its table, m, v and updates are this backend's memory; the
     * row ranges host memory). tables_gather: out [n,Dh] = the rows of keys [n] (ROWKEYs on the
     * device, held here: checked by the caller). rows_sum_owned: an owner's sums of gradient
     * contributions, engram_rows.h rows_sum_owned (own, recv, self, own_inv on the device).
     * rows_adam: the lazy Adam of the n DISTINCT keys (on the device) with grads [n,Dh]: each row
     * takes one step and its count in updates grows by one; no decay (s->wd is not used: tables never
     * decay), rows not listed keep their values and moments. */
    void (*tables_gather)(Backend* be, const EngramTables* t, const int64_t* keys, int64_t n, float* out);
    void (*rows_sum_owned)(Backend* be, float* own, const float* recv, const float* self, int64_t self_lo,
                           int64_t self_hi, const int64_t* own_inv, int64_t n_recv, int Dh);
    void (*rows_adam)(Backend* be, const EngramTables* t, const int64_t* keys, int64_t n, const float* grads,
                      const AdamStep* s);

    /* ---- collectives over the backend's world (device buffers) ------------------------------ */
    void (*allreduce_sum)(Backend* be, float* buf, size_t n);   // in place, every rank gets the sum
    /* Bytes: send[sdispls[r] .. + scounts[r]) goes to rank r, recv[rdispls[r] .. + rcounts[r])
     * comes from rank r (counts [size], known on both sides beforehand). */
    void (*alltoallv)(Backend* be, const void* send, const size_t* scounts, const size_t* sdispls, void* recv,
                      const size_t* rcounts, const size_t* rdispls);

    /* A backend for the same device and memory whose collectives run over a sub-group of the world
     * (MPI_Comm_split's color and key; collective over the world). Free it with g->close(g) and
     * free(g). NULL where a world-wide alltoallv with zero bytes outside the group costs nothing
     * (NCCL's grouped send/recv skips empty pairs); MPI_Alltoallv would meet every rank. */
    Backend* (*group)(Backend* be, int color, int key);

    void (*close)(Backend* be);   // frees the implementation's state (not the buffers it handed out)
    void (*sync)(Backend* be);    // waits for every op issued so far; NULL where ops return done (cpu)
};

/* Host views of device memory, for the host code between ops (the MoE plan, the Engram rows, the
 * MPI hooks, checkpoints); src/backend_view.c. On a host backend (be->host) a view is the pointer
 * itself and nothing is copied; otherwise a malloc'd copy (view) or a be->alloc'd one (device).
 * backend_host_view: n bytes of p, filled from p when fetch; backend_host_done ends it, storing its
 * n bytes back into p first when store. The same the other way: backend_device_view, n bytes of
 * host h on the device (sent when send); backend_device_done, fetched back into h when fetch. */
void* backend_host_view(Backend* be, const void* p, size_t n, int fetch);
void backend_host_done(Backend* be, void* view, void* p, size_t n, int store);
void* backend_device_view(Backend* be, const void* h, size_t n, int send);
void backend_device_done(Backend* be, void* d, void* h, size_t n, int fetch);

/* Turns the open backend be (the CPU one) into a guarded one (src/backend_guard.c, for tests): the
 * same ops and results, be->host = 0, and its buffers unreadable outside its own ops, so host code
 * that touches device memory directly dies there. */
void backend_guard_wrap(Backend* be);

/* ENGRAM_PROFILE=1 (src/backend_profile.c): wraps any open backend so that every op is timed, waited
 * for (be->sync) as it returns; at close rank 0 prints each op's calls and time on stderr. */
void backend_profile_wrap(Backend* be);

/* The CPU backend without collectives (those are parallel/device.c's: MPI). */
void backend_cpu_init(Backend* be);
/* The process's CPU backend without collectives, set up on first use: what a model or trainer
 * uses when its caller names no backend. */
Backend* backend_cpu(void);

#endif
