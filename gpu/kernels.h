/*
 * kernels.h — the CUDA kernels of the backend (gpu/kernels.cu), as C-callable launchers on a
 * stream. Each keeps the contract of its ops.h / optim.c twin (what accumulates with +=, what is
 * overwritten, the summation order where it decides determinism); gpu/backend_cuda.c wires them
 * into the Backend interface and composes attention from cuBLAS and the softmax kernels below.
 *
 * All pointers are device pointers. Simple and correct rather than fast: one thread block per row
 * for the row-wise ops, one thread per element for the rest.
 */
#ifndef ENGRAM_GPU_KERNELS_H
#define ENGRAM_GPU_KERNELS_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "engram_layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dst [n] bfloat16 (round to nearest even) of src [n]. */
void kernels_to_bf16(void* dst, const float* src, size_t n, cudaStream_t st);

/* y = x·alpha (x may be y); y += x. */
void kernels_scale(float* y, const float* x, float alpha, size_t n, cudaStream_t st);
void kernels_add(float* y, const float* x, size_t n, cudaStream_t st);
/* out[N,D] = (Σ_g h[N,G,D])·k (k = 1/G: the mean); h[n,g] += x[n] on every branch. */
void kernels_branches_reduce(float* out, const float* h, int N, int G, int D, float k, cudaStream_t st);
void kernels_branches_add(float* h, const float* x, int N, int G, int D, cudaStream_t st);
/* out[N,Dout] += bias[Dout]; dbias[Dout] += Σ_n dout[n] (64 runs of tokens, each in order, then the runs). */
void kernels_bias_add(float* out, const float* bias, int N, int Dout, cudaStream_t st);
void kernels_bias_grad(float* dbias, const float* dout, int N, int Dout, cudaStream_t st);

void kernels_rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int D, float eps,
                             cudaStream_t st);
void kernels_rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                              const float* rstd, int N, int D, cudaStream_t st);
void kernels_rope_apply(float* qkv, int B, int T, int D, int nh, float base, int inverse, cudaStream_t st);

/* att [rows,T], row r is query t = r mod T: softmax over s ≤ t in place, zeros above. */
void kernels_causal_softmax_forward(float* att, long rows, int T, cudaStream_t st);
/* dp [rows,T] in place: p·(dp − Σ_s p·dp)·scale over s ≤ t, zeros above. */
void kernels_causal_softmax_backward(float* dp, const float* p, long rows, int T, float scale, cudaStream_t st);

void kernels_swiglu_forward(float* g, const float* h1, const float* h3, long n, cudaStream_t st);
void kernels_swiglu_backward(float* dh1, float* dh3, const float* dg, const float* h1, const float* h3, long n,
                             cudaStream_t st);

/* probs [N,V] logits → probabilities in place; loss [N] (double) −log p[n, y[n]]. */
void kernels_crossentropy_forward(float* probs, double* loss, const int32_t* y, int N, int V, cudaStream_t st);
void kernels_crossentropy_backward(float* probs, const int32_t* y, int N, int V, float scale, cudaStream_t st);

void kernels_embedding_forward(float* h, const float* wte, const int32_t* x, int N, int G, int D, cudaStream_t st);
void kernels_embedding_backward(float* dwte, const float* dh, const int32_t* x, int N, int G, int D,
                                cudaStream_t st);

/* The Engram layer's token-wise parts (engram_layer.h, engram_layer.c's loops); a [acts] views,
 * w and g device pointers. gate: adds the biases bk, bv first, then per (token, branch) the gate.
 * tokens_backward: part [chunks, G·D·(4+K)+D] doubles of scratch, chunks of csize tokens as
 * engram_backward_chunks gives; zeroed here. */
void kernels_engram_gate_forward(EngramDims d, EngramWeights w, const float* h, float* out, EngramActs a,
                                 cudaStream_t st);
void kernels_engram_conv_forward(EngramDims d, const float* conv, EngramActs a, float* out, cudaStream_t st);
void kernels_engram_tokens_backward(EngramDims d, EngramWeights w, const float* h, EngramActs a, const float* dout,
                                    float* dy, float* dx, float* dv, float* dh, double* part, int csize, int chunks,
                                    EngramWeights g, cudaStream_t st);

/* The MoE layer's token-wise parts (moe.h's moe_softmax ... moe_scatter_add, moe.c's loops); the
 * routing plan's top, row [N,k] and row_tok [R] and c_aux [E] on the device. k ≤ KERNELS_MOE_MAX_K
 * (checked by backend_cuda.c). */
#define KERNELS_MOE_MAX_K 32
void kernels_moe_softmax(float* probs, int N, int E, cudaStream_t st);
void kernels_moe_gather(float* X, const float* f, const int* row_tok, long R, int D, cudaStream_t st);
void kernels_moe_combine(const float* probs, const int* top, const long* row, const float* y, float* out, int N,
                         int E, int k, int D, cudaStream_t st);
void kernels_moe_routing_backward(const float* probs, const int* top, const long* row, const float* y,
                                  const float* dout, const double* c_aux, float* dy, float* dl, int N, int E, int k,
                                  int D, cudaStream_t st);
void kernels_moe_scatter_add(const long* row, const float* dX, float* df, int N, int k, int D, cudaStream_t st);

/* The Engram rows (engram_rows.h rows_expand / rows_reduce): out [total,Dh] = rows[pos[inv[i]]]
 * (pos NULL: inv[i]); grads [n_unique,Dh] = the sums of de's rows by row, in position order (a
 * stable sort groups them; one thread per row and column adds a row's list). */
void kernels_rows_expand(float* out, const float* rows, const int64_t* inv, const int64_t* pos, size_t total, int Dh,
                         cudaStream_t st);
void kernels_rows_reduce(float* grads, const float* de, const int64_t* inv, const int64_t* pos, size_t total,
                         int64_t n_unique, int Dh, cudaStream_t st);

/* partial [blocks] sums of g², blocks = kernels_sumsq_blocks(n); the caller adds them in order. */
int kernels_sumsq_blocks(size_t n);
void kernels_sumsq(double* partial, const float* g, size_t n, cudaStream_t st);

/* One Adam(W) step; bc1 = 1 − β1^t, bc2 = 1 − β2^t computed by the caller. */
void kernels_adam(float* p, const float* g, float* m, float* v, size_t n, double lr, double wd, double b1,
                  double b2, double eps, double bc1, double bc2, double scale, cudaStream_t st);

/* The Engram tables as the kernels see them (engram_rows.h EngramTables, passed by value): per
 * layer its device buffers and the global rows [first, first+local) it holds. */
#define KERNELS_MAX_TABLES 16
typedef struct {
    int n_layers, Dh;
    float* table[KERNELS_MAX_TABLES];
    float* m[KERNELS_MAX_TABLES];
    float* v[KERNELS_MAX_TABLES];
    int64_t* updates[KERNELS_MAX_TABLES];
    int64_t first[KERNELS_MAX_TABLES], local[KERNELS_MAX_TABLES];
} KernelTables;

/* out [n,Dh] = the rows of ROWKEYs keys [n] (held here), one thread per element. */
void kernels_tables_gather(KernelTables t, const int64_t* keys, int64_t n, float* out, cudaStream_t st);
/* engram_rows.h rows_sum_owned: each own row the sum of its contributions in order (first copied,
 * later ones added: the CPU's sums), grouped as kernels_rows_reduce does. */
void kernels_rows_sum_owned(float* own, const float* recv, const float* self, int64_t self_lo, int64_t self_hi,
                            const int64_t* own_inv, int64_t n_recv, int Dh, cudaStream_t st);
/* The lazy Adam (no decay) of the n distinct ROWKEYs keys with grads [n,Dh], one thread per element;
 * each row's count grows by one. */
void kernels_tables_adam(KernelTables t, const int64_t* keys, int64_t n, const float* grads, double lr, double b1,
                         double b2, double eps, double bc1, double bc2, double scale, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
