/*
 * ops.h — the dense building blocks of the model, forward and hand-written backward, fp32 on the
 * CPU: linear layers (cblas), RMSNorm, rotate-half RoPE, causal multi-head attention, SwiGLU and
 * softmax cross-entropy. Backward functions ACCUMULATE (+=) into input and weight gradients unless
 * they say otherwise, so branches that share an input simply add up.
 *
 * The loops here do not depend on the number of OpenMP threads: threads own disjoint outputs, and
 * reductions over tokens run in a fixed order. GEMMs do (OpenBLAS's bits change with its thread
 * count, which is the OpenMP one with the OpenMP build): a run is reproducible at a fixed count.
 *
 * Not here: MoE (moe.h), the Engram layer (engram_layer.h), the order of ops (model.c).
 */
#ifndef ENGRAM_OPS_H
#define ENGRAM_OPS_H

#include <stddef.h>
#include <stdint.h>

/* C[M,N] = alpha·op(A)·op(B) + beta·C, row-major, op = transpose when ta / tb is 1: cblas_sgemm,
 * with the wall time spent added to ops_gemm_seconds (the benchmarks report the GEMM share). */
void ops_gemm(int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
              float beta, float* C, int ldc);
extern double ops_gemm_seconds;
/* 1 when ops_gemm may be called from inside an OpenMP parallel region and then runs single-threaded
 * on the calling thread (the OpenMP build of OpenBLAS); 0 with a BLAS that has its own thread pool,
 * where loops of GEMMs should stay serial and let each GEMM be threaded. A GEMM inside a parallel
 * region counts its wall time divided by the team's size in ops_gemm_seconds. */
int ops_gemm_in_parallel(void);
/* Threads our OpenMP loops use (1 in a build without OpenMP). */
int ops_threads(void);

/* Token embedding on G branches: h [N,G,D] gets row x[n] of wte [V,D] on every branch. */
void embedding_forward(float* h, const float* wte, const int32_t* x, int N, int G, int D);
/* Its gradient: dwte [V,D] += Σ_g dh[n,g,:] for each token n, in token order (deterministic when
 * ids repeat). */
void embedding_backward(float* dwte, const float* dh, const int32_t* x, int N, int G, int D);

/* out[N,Dout] = in[N,Din]·W[Dout,Din]ᵀ (+ bias[Dout] if bias). */
void linear_forward(float* out, const float* in, const float* W, const float* bias, int N, int Din, int Dout);
/* din[N,Din] += dout·W (if din); dW[Dout,Din] += doutᵀ·in; dbias[Dout] += Σ_n dout (if dbias). */
void linear_backward(float* din, float* dW, float* dbias, const float* dout, const float* in, const float* W,
                     int N, int Din, int Dout);

/* Hyper-connection branches, h [N,G,D]: out[N,D] = mean_g h (the input of a block) or Σ_g h (the
 * gradient of a value added to every branch); branches_add: h[n,g] += x[n] on every branch. */
void branches_mean(float* out, const float* h, int N, int G, int D);
void branches_sum(float* out, const float* h, int N, int G, int D);
void branches_add(float* h, const float* x, int N, int G, int D);
/* y[n] = x[n]·alpha (x may be y); y[n] += x[n]. */
void ops_scale(float* y, const float* x, float alpha, size_t n);
void ops_add(float* y, const float* x, size_t n);

/* out[N,D] = x / sqrt(mean(x²) + eps) · w; rstd[N] saved. */
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int D, float eps);
/* dx[N,D] += ..., dw[D] += ... */
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int N, int D);

/* Rotate-half RoPE on the q and k thirds of qkv [B,T,3D] in place (nh heads of width hd = D/nh);
 * position t is the index within the sequence. inverse = 1 applies the transpose (for backward). */
void rope_apply(float* qkv, int B, int T, int D, int nh, float base, int inverse);

/* Causal attention. qkv [B,T,3D] (q, k already rotated) → out [B,T,D]; att [B,nh,T,T] keeps the
 * softmax probabilities (zeros above the diagonal). */
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int D, int nh);
/* dqkv [B,T,3D] is OVERWRITTEN with the gradient w.r.t. the rotated q, k and v; scratch [B,nh,T,T]. */
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, float* scratch, int B,
                        int T, int D, int nh);

/* g[n] = SiLU(h1[n])·h3[n] */
void swiglu_forward(float* g, const float* h1, const float* h3, long n);
/* dh1, dh3 OVERWRITTEN. */
void swiglu_backward(float* dh1, float* dh3, const float* dg, const float* h1, const float* h3, long n);

/* logits [N,V] turned into probabilities in place; returns Σ_n −log p[n, y[n]] (in double). */
double crossentropy_forward(float* probs, const int32_t* y, int N, int V);
/* probs [N,V] turned in place into dloss/dlogits for loss = scale·Σ_n CE_n. */
void crossentropy_backward(float* probs, const int32_t* y, int N, int V, float scale);

/* The output head and its loss in one pass over blocks of `rows` tokens, the [rows,V] logits never
 * leaving scratch [rows·V]: logits = x[N,D]·W[V,D]ᵀ, softmax cross-entropy against y; returns
 * Σ_n −log p[n, y[n]] (in double, token order: the value of crossentropy_forward on the logits).
 * With dx (else both NULL), also the gradient of that sum: dx [N,D] = (p − onehot)·W and
 * dW [V,D] = (p − onehot)ᵀ·x, both OVERWRITTEN (unscaled: the caller scales).
 * lanes > 1 (with the OpenMP OpenBLAS only): that many threads take blocks in turn, each with
 * single-threaded GEMMs, its own scratch (scratch is [lanes,rows,V]) and, but for lane 0, its own
 * dW part in dW_lanes [lanes−1,V,D]; the parts are added in lane order. The big head GEMMs run
 * faster so than with the threads meeting inside every GEMM; the bits depend on lanes, as a
 * threaded GEMM's depend on its thread count. */
double head_xent(const float* x, const float* W, const int32_t* y, int N, int D, int V, float* dx, float* dW,
                 float* scratch, int rows, int lanes, float* dW_lanes);

#endif
