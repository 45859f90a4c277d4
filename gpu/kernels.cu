/*
 * kernels.cu — the CUDA kernels of the backend (kernels.h): element-wise scale and add, the
 * hyper-connection branch mean / sum / add, bias add and gradient, RMSNorm, RoPE, the causal
 * softmax of attention, SwiGLU, cross-entropy, the embedding, the MoE layer's routing softmax,
 * gather, combine, routing backward and scatter-add, the expansion and reduction of Engram rows,
 * Σg², Adam(W), and the Engram tables' gather, owner sums and lazy Adam.
 * Each mirrors its CPU twin in ops.c / optim.c line by line, so the tests can hold them to ~1e-5.
 *
 * Plain: one block of 256 threads per row for the row-wise ops (block reductions in shared memory),
 * one thread per element elsewhere; sums over tokens by one thread per column in token order
 * (deterministic, as the CPU), except where a profile on a GPU showed they cost (the Engram rows'
 * sums: segments of a stable sort, still in the CPU's order).
 */
#include <cub/device/device_radix_sort.cuh>
#include <cuda_bf16.h>
#include <math.h>

#include "kernels.h"

#define THREADS 256

static unsigned grid_(size_t n) { return (unsigned)((n + THREADS - 1) / THREADS); }

/* ---- block reductions (every thread gets the result) -------------------------------------------- */

template <typename T, typename Op>
__device__ T block_reduce_(T v, Op op) {
    __shared__ T buf[THREADS];
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) buf[threadIdx.x] = op(buf[threadIdx.x], buf[threadIdx.x + s]);
        __syncthreads();
    }
    T r = buf[0];
    __syncthreads();   // buf is reused by the next reduction
    return r;
}
struct Sum { template <typename T> __device__ T operator()(T a, T b) const { return a + b; } };
struct Max { __device__ float operator()(float a, float b) const { return a > b ? a : b; } };

/* ---- bf16 ------------------------------------------------------------------------------------------ */

__global__ void to_bf16_(__nv_bfloat16* dst, const float* src, size_t n) {
    size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;
    if (i < n) dst[i] = __float2bfloat16_rn(src[i]);
}
extern "C" void kernels_to_bf16(void* dst, const float* src, size_t n, cudaStream_t st) {
    if (n) to_bf16_<<<grid_(n), THREADS, 0, st>>>((__nv_bfloat16*)dst, src, n);
}

/* ---- element-wise, hyper-connection branches, bias ---------------------------------------------- */

__global__ void scale_(float* y, const float* x, float alpha, size_t n) {
    size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;
    if (i < n) y[i] = x[i] * alpha;
}
extern "C" void kernels_scale(float* y, const float* x, float alpha, size_t n, cudaStream_t st) {
    if (n) scale_<<<grid_(n), THREADS, 0, st>>>(y, x, alpha, n);
}
__global__ void add_(float* y, const float* x, size_t n) {
    size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;
    if (i < n) y[i] += x[i];
}
extern "C" void kernels_add(float* y, const float* x, size_t n, cudaStream_t st) {
    if (n) add_<<<grid_(n), THREADS, 0, st>>>(y, x, n);
}

// one thread per output element [N,D], branches added in order, then times k (1/G or 1)
__global__ void branches_reduce_(float* out, const float* h, long n, int G, int D, float k) {
    long i = (long)blockIdx.x * THREADS + threadIdx.x;
    if (i >= n) return;
    const size_t t = (size_t)(i / D), d = (size_t)(i % D);
    float s = 0.0f;
    for (int g = 0; g < G; g++) s += h[(t * G + g) * D + d];
    out[i] = s * k;
}
extern "C" void kernels_branches_reduce(float* out, const float* h, int N, int G, int D, float k, cudaStream_t st) {
    const long n = (long)N * D;
    if (n) branches_reduce_<<<grid_(n), THREADS, 0, st>>>(out, h, n, G, D, k);
}
__global__ void branches_add_(float* h, const float* x, long n, int G, int D) {
    long i = (long)blockIdx.x * THREADS + threadIdx.x;   // over [N,G,D]
    if (i < n) h[i] += x[(size_t)(i / D / G) * D + i % D];
}
extern "C" void kernels_branches_add(float* h, const float* x, int N, int G, int D, cudaStream_t st) {
    const long n = (long)N * G * D;
    if (n) branches_add_<<<grid_(n), THREADS, 0, st>>>(h, x, n, G, D);
}

__global__ void bias_add_(float* out, const float* bias, long n, int Dout) {
    long i = (long)blockIdx.x * THREADS + threadIdx.x;
    if (i < n) out[i] += bias[i % Dout];
}
extern "C" void kernels_bias_add(float* out, const float* bias, int N, int Dout, cudaStream_t st) {
    const long n = (long)N * Dout;
    if (n) bias_add_<<<grid_(n), THREADS, 0, st>>>(out, bias, n, Dout);
}
/* dst[d] += Σ_n term(n, d), n < N: COL_CHUNKS runs of tokens, each summed in order by one thread
 * per (run, column), then the runs added in order. The same result every run (not the CPU's
 * order: one thread per column over 16k tokens took milliseconds). */
#define COL_CHUNKS 64
template <typename Term>
__global__ void col_partial_(float* part, int N, int D, Term f) {
    const int d = blockIdx.x * THREADS + threadIdx.x, per = (N + gridDim.y - 1) / gridDim.y;
    if (d >= D) return;
    const int lo = (int)blockIdx.y * per, hi = min(N, lo + per);
    float acc = 0.0f;
    for (int n = lo; n < hi; n++) acc += f(n, d);
    part[(size_t)blockIdx.y * D + d] = acc;
}
__global__ void col_finish_(float* dst, const float* part, int chunks, int D) {
    const int d = blockIdx.x * THREADS + threadIdx.x;
    if (d >= D) return;
    float acc = dst[d];
    for (int c = 0; c < chunks; c++) acc += part[(size_t)c * D + d];
    dst[d] = acc;
}
template <typename Term>
static void col_sums_(float* dst, int N, int D, Term f, cudaStream_t st) {
    if (!N || !D) return;
    const int chunks = N < COL_CHUNKS ? N : COL_CHUNKS;
    float* part;
    cudaMallocAsync((void**)&part, (size_t)chunks * D * sizeof(float), st);
    col_partial_<<<dim3(grid_((size_t)D), chunks), THREADS, 0, st>>>(part, N, D, f);
    col_finish_<<<grid_((size_t)D), THREADS, 0, st>>>(dst, part, chunks, D);
    cudaFreeAsync(part, st);
}
struct BiasTerm {   // dbias[o] += Σ_n dout[n,o]
    const float* dout;
    int D;
    __device__ float operator()(int n, int d) const { return dout[(size_t)n * D + d]; }
};
extern "C" void kernels_bias_grad(float* dbias, const float* dout, int N, int Dout, cudaStream_t st) {
    col_sums_(dbias, N, Dout, BiasTerm{dout, Dout}, st);
}

/* ---- RMSNorm ------------------------------------------------------------------------------------- */

__global__ void rmsnorm_forward_(float* out, float* rstd, const float* x, const float* w, int D, float eps) {
    const float* xn = x + (size_t)blockIdx.x * D;
    float ss = 0.0f;
    for (int d = threadIdx.x; d < D; d += THREADS) ss += xn[d] * xn[d];
    ss = block_reduce_(ss, Sum());
    float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int d = threadIdx.x; d < D; d += THREADS) out[(size_t)blockIdx.x * D + d] = xn[d] * r * w[d];
}
extern "C" void kernels_rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int D,
                                        float eps, cudaStream_t st) {
    if (N) rmsnorm_forward_<<<N, THREADS, 0, st>>>(out, rstd, x, w, D, eps);
}

// forward y = x·r·w, r = (mean(x²)+eps)^(-1/2): dx += r·(w⊙dy) − (r³/D)·x·Σ_d(w⊙dy⊙x)
__global__ void rmsnorm_backward_dx_(float* dx, const float* dout, const float* x, const float* w,
                                     const float* rstd, int D) {
    const size_t o = (size_t)blockIdx.x * D;
    float r = rstd[blockIdx.x], dot = 0.0f;
    for (int d = threadIdx.x; d < D; d += THREADS) dot += w[d] * dout[o + d] * x[o + d];
    dot = block_reduce_(dot, Sum());
    float c = r * r * r * dot / (float)D;
    for (int d = threadIdx.x; d < D; d += THREADS) dx[o + d] += r * w[d] * dout[o + d] - c * x[o + d];
}
struct RmsDwTerm {   // dw[d] += Σ_n dy⊙x·r
    const float *dout, *x, *rstd;
    int D;
    __device__ float operator()(int n, int d) const { return dout[(size_t)n * D + d] * x[(size_t)n * D + d] * rstd[n]; }
};
extern "C" void kernels_rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                                         const float* rstd, int N, int D, cudaStream_t st) {
    if (!N) return;
    rmsnorm_backward_dx_<<<N, THREADS, 0, st>>>(dx, dout, x, w, rstd, D);
    col_sums_(dw, N, D, RmsDwTerm{dout, x, rstd, D}, st);
}

/* ---- RoPE: one thread per rotated pair (bt, part, head, i) --------------------------------------- */

__global__ void rope_apply_(float* qkv, long pairs, int T, int D, int nh, float base, float sgn) {
    long k = (long)blockIdx.x * THREADS + threadIdx.x;
    if (k >= pairs) return;
    const int hd = D / nh, half = hd / 2;
    const int i = (int)(k % half), h = (int)(k / half % nh), part = (int)(k / half / nh % 2);
    const long bt = k / half / nh / 2;
    // the CPU's table: θ in double, cos/sin rounded to float
    double theta = pow((double)base, -2.0 * i / hd) * (double)(bt % T);
    float c = (float)cos(theta), s = sgn * (float)sin(theta);
    float* x = qkv + (size_t)bt * 3 * D + (size_t)part * D + (size_t)h * hd;
    float a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
}
extern "C" void kernels_rope_apply(float* qkv, int B, int T, int D, int nh, float base, int inverse,
                                   cudaStream_t st) {
    const long pairs = (long)B * T * 2 * (D / 2);
    if (pairs) rope_apply_<<<grid_(pairs), THREADS, 0, st>>>(qkv, pairs, T, D, nh, base, inverse ? -1.0f : 1.0f);
}

/* ---- causal softmax (attention) -------------------------------------------------------------------- */

__global__ void causal_softmax_forward_(float* att, int T) {
    float* p = att + (size_t)blockIdx.x * T;
    const int t = (int)(blockIdx.x % T);
    float mx = -INFINITY;
    for (int s = threadIdx.x; s <= t; s += THREADS) mx = fmaxf(mx, p[s]);
    mx = block_reduce_(mx, Max());
    float sum = 0.0f;
    for (int s = threadIdx.x; s <= t; s += THREADS) {
        p[s] = expf(p[s] - mx);
        sum += p[s];
    }
    sum = block_reduce_(sum, Sum());
    const float inv = 1.0f / sum;
    for (int s = threadIdx.x; s < T; s += THREADS) p[s] = s <= t ? p[s] * inv : 0.0f;
}
extern "C" void kernels_causal_softmax_forward(float* att, long rows, int T, cudaStream_t st) {
    if (rows) causal_softmax_forward_<<<(unsigned)rows, THREADS, 0, st>>>(att, T);
}

// softmax backward: dS = P ⊙ (dP − rowsum(P ⊙ dP)), times the score scale
__global__ void causal_softmax_backward_(float* dp, const float* p, int T, float scale) {
    const size_t o = (size_t)blockIdx.x * T;
    const int t = (int)(blockIdx.x % T);
    float pdp = 0.0f;
    for (int s = threadIdx.x; s <= t; s += THREADS) pdp += p[o + s] * dp[o + s];
    pdp = block_reduce_(pdp, Sum());
    for (int s = threadIdx.x; s < T; s += THREADS) dp[o + s] = s <= t ? p[o + s] * (dp[o + s] - pdp) * scale : 0.0f;
}
extern "C" void kernels_causal_softmax_backward(float* dp, const float* p, long rows, int T, float scale,
                                                cudaStream_t st) {
    if (rows) causal_softmax_backward_<<<(unsigned)rows, THREADS, 0, st>>>(dp, p, T, scale);
}

/* ---- SwiGLU ---------------------------------------------------------------------------------------- */

__device__ float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void swiglu_forward_(float* g, const float* h1, const float* h3, long n) {
    long i = (long)blockIdx.x * THREADS + threadIdx.x;
    if (i < n) g[i] = h1[i] * sigmoid_(h1[i]) * h3[i];
}
// g = silu(a)·b with silu'(a) = σ(a)·(1 + a·(1 − σ(a)))
__global__ void swiglu_backward_(float* dh1, float* dh3, const float* dg, const float* h1, const float* h3, long n) {
    long i = (long)blockIdx.x * THREADS + threadIdx.x;
    if (i >= n) return;
    float s = sigmoid_(h1[i]);
    dh3[i] = dg[i] * h1[i] * s;
    dh1[i] = dg[i] * h3[i] * s * (1.0f + h1[i] * (1.0f - s));
}
extern "C" void kernels_swiglu_forward(float* g, const float* h1, const float* h3, long n, cudaStream_t st) {
    if (n) swiglu_forward_<<<grid_(n), THREADS, 0, st>>>(g, h1, h3, n);
}
extern "C" void kernels_swiglu_backward(float* dh1, float* dh3, const float* dg, const float* h1, const float* h3,
                                        long n, cudaStream_t st) {
    if (n) swiglu_backward_<<<grid_(n), THREADS, 0, st>>>(dh1, dh3, dg, h1, h3, n);
}

/* ---- cross-entropy: one block per token ------------------------------------------------------------ */

__global__ void crossentropy_forward_(float* probs, double* loss, const int32_t* y, int V) {
    float* z = probs + (size_t)blockIdx.x * V;
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += THREADS) mx = fmaxf(mx, z[v]);
    mx = block_reduce_(mx, Max());
    const float zy = z[y[blockIdx.x]] - mx;   // read by every thread before any is overwritten below
    double sum = 0.0;                         // in double: V = 50k terms keep full accuracy
    for (int v = threadIdx.x; v < V; v += THREADS) sum += (double)expf(z[v] - mx);
    sum = block_reduce_(sum, Sum());
    const float inv = (float)(1.0 / sum);
    for (int v = threadIdx.x; v < V; v += THREADS) z[v] = expf(z[v] - mx) * inv;
    if (threadIdx.x == 0) loss[blockIdx.x] = log(sum) - (double)zy;
}
extern "C" void kernels_crossentropy_forward(float* probs, double* loss, const int32_t* y, int N, int V,
                                             cudaStream_t st) {
    if (N) crossentropy_forward_<<<N, THREADS, 0, st>>>(probs, loss, y, V);
}

__global__ void crossentropy_backward_(float* probs, const int32_t* y, long NV, int V, float scale) {
    long i = (long)blockIdx.x * THREADS + threadIdx.x;
    if (i >= NV) return;
    float p = probs[i] * scale;
    probs[i] = (i % V == y[i / V]) ? p - scale : p;
}
extern "C" void kernels_crossentropy_backward(float* probs, const int32_t* y, int N, int V, float scale,
                                              cudaStream_t st) {
    const long NV = (long)N * V;
    if (NV) crossentropy_backward_<<<grid_(NV), THREADS, 0, st>>>(probs, y, NV, V, scale);
}

/* ---- embedding ------------------------------------------------------------------------------------- */

__global__ void embedding_forward_(float* h, const float* wte, const int32_t* x, long n, int G, int D) {
    long i = (long)blockIdx.x * THREADS + threadIdx.x;   // over [N,G,D]
    if (i < n) h[i] = wte[(size_t)x[i / D / G] * D + i % D];
}
extern "C" void kernels_embedding_forward(float* h, const float* wte, const int32_t* x, int N, int G, int D,
                                          cudaStream_t st) {
    const long n = (long)N * G * D;
    if (n) embedding_forward_<<<grid_(n), THREADS, 0, st>>>(h, wte, x, n, G, D);
}

/* ---- the Engram layer's token-wise parts (engram_layer.c) ---------------------------------------- */
// Every sum the CPU does in double is in double here too, as a block reduction instead of in order.

__device__ float signed_sqrt_(float s) {   // sign(s)·sqrt(max(|s|, 1e-6)), sign(0) = 0
    float r = sqrtf(fmaxf(fabsf(s), 1e-6f));
    return s > 0 ? r : (s < 0 ? -r : 0.0f);
}
__device__ float signed_sqrt_grad_(float s) {   // 0 on the floor, else 1/(2·sqrt|s|)
    float a = fabsf(s);
    return a < 1e-6f ? 0.0f : 0.5f / sqrtf(a);
}
__device__ float silu_grad_(float y) {
    float sg = sigmoid_(y);
    return sg * (1.0f + y * (1.0f - sg));
}

// one block per (token n, branch g): key and query norms, score, gate, u = α·v into out, z
__global__ void engram_gate_(EngramDims d, EngramWeights w, const float* h, float* out, EngramActs a) {
    const int G = d.G, D = d.D, g = (int)(blockIdx.x % G);
    const size_t ng = blockIdx.x, n = ng / G;
    const float *nk = w.norm_k + g * D, *nq = w.norm_q + g * D, *nc = w.norm_c + g * D;
    const float *hg = h + ng * D, *v = a.v + n * D;
    float *kh = a.khat + ng * D, *u = out + ng * D, *z = a.z + ng * D;
    double sk = 0, sq = 0;
    for (int i = threadIdx.x; i < D; i += THREADS) sk += (double)kh[i] * kh[i], sq += (double)hg[i] * hg[i];
    sk = block_reduce_(sk, Sum());
    sq = block_reduce_(sq, Sum());
    const float rk = (float)(1.0 / sqrt(sk / D + d.qk_eps)), rq = (float)(1.0 / sqrt(sq / D + d.qk_eps));
    double dot = 0;   // k·q, k = x̂·nk, q = q̂·nq
    for (int i = threadIdx.x; i < D; i += THREADS) {
        kh[i] *= rk;
        dot += (double)(kh[i] * nk[i]) * ((hg[i] * rq) * nq[i]);
    }
    dot = block_reduce_(dot, Sum());
    const float sc = (float)(dot / sqrt((double)D)), al = sigmoid_(signed_sqrt_(sc));
    double su = 0;
    for (int i = threadIdx.x; i < D; i += THREADS) u[i] = al * v[i], su += (double)u[i] * u[i];
    su = block_reduce_(su, Sum());
    const float rc = (float)(1.0 / sqrt(su / D + d.conv_eps));
    for (int i = threadIdx.x; i < D; i += THREADS) z[i] = (u[i] * rc) * nc[i];
    if (threadIdx.x == 0) a.rk[ng] = rk, a.rq[ng] = rq, a.rc[ng] = rc, a.s[ng] = sc, a.alpha[ng] = al;
}
extern "C" void kernels_engram_gate_forward(EngramDims d, EngramWeights w, const float* h, float* out, EngramActs a,
                                            cudaStream_t st) {
    const int N = d.B * d.T;
    kernels_bias_add(a.v, w.bv, N, d.D, st);   // the CPU adds both biases per token first
    kernels_bias_add(a.khat, w.bk, N, d.G * d.D, st);
    if (N && d.G) engram_gate_<<<N * d.G, THREADS, 0, st>>>(d, w, h, out, a);
}

// one thread per (token n, channel c): y = Σ_j conv[c][j]·z[n − back_j, c] inside the sequence
__global__ void engram_conv_(EngramDims d, const float* conv, const float* z, float* y, float* out, long total) {
    long i = (long)blockIdx.x * THREADS + threadIdx.x;
    if (i >= total) return;
    const int GD = d.G * d.D, c = (int)(i % GD);
    const long n = i / GD;
    const int t = (int)(n % d.T);
    double acc = 0;
    for (int j = 0; j < d.K; j++) {
        int back = (d.K - 1 - j) * d.dilation;
        if (t >= back) acc += (double)conv[(size_t)c * d.K + j] * z[(n - back) * GD + c];
    }
    y[i] = (float)acc;
    out[i] += y[i] * sigmoid_(y[i]);
}
extern "C" void kernels_engram_conv_forward(EngramDims d, const float* conv, EngramActs a, float* out,
                                            cudaStream_t st) {
    const long total = (long)d.B * d.T * d.G * d.D;
    if (total) engram_conv_<<<grid_(total), THREADS, 0, st>>>(d, conv, a.z, a.y, out, total);
}

__global__ void engram_dy_(float* dy, const float* dout, const float* y, long n) {
    long i = (long)blockIdx.x * THREADS + threadIdx.x;
    if (i < n) dy[i] = dout[i] * silu_grad_(y[i]);
}

// one block per chunk of tokens, the tokens in order (as backward_chunk_ in engram_layer.c); each
// thread owns the same columns of the chunk's partials part [P] for every token; dv_n [D] shared
__global__ void engram_tokens_backward_(EngramDims d, EngramWeights w, const float* h, EngramActs a,
                                        const float* dout, const float* dy, float* dx, float* dv, float* dh,
                                        double* part, int csize) {
    extern __shared__ double dv_n[];
    const int G = d.G, D = d.D, GD = G * D, K = d.K, T = d.T, N = d.B * d.T;
    const size_t o_nq = GD, o_nc = 2 * (size_t)GD, o_bk = 3 * (size_t)GD, o_bv = 4 * (size_t)GD, o_conv = o_bv + D;
    double* pt = part + blockIdx.x * (o_conv + (size_t)GD * K);
    const int n0 = blockIdx.x * csize, n1 = n0 + csize < N ? n0 + csize : N;
    for (int nn = n0; nn < n1; nn++) {
        const size_t n = nn;
        const int t = nn % T;
        // the conv: dz[n,c] = Σ_j conv[c][j]·dy[n + back_j, c] (into dx), dconv[c][j] += dy[n,c]·z[n − back_j, c]
        for (int c = threadIdx.x; c < GD; c += THREADS) {
            double acc = 0;
            for (int j = 0; j < K; j++) {
                int back = (K - 1 - j) * d.dilation;
                if (t + back < T) acc += (double)w.conv[(size_t)c * K + j] * dy[(n + back) * GD + c];
                if (t >= back) pt[o_conv + (size_t)c * K + j] += (double)dy[n * GD + c] * a.z[(n - back) * GD + c];
            }
            dx[n * GD + c] = (float)acc;
        }
        for (int i = threadIdx.x; i < D; i += THREADS) dv_n[i] = 0;
        __syncthreads();
        for (int g = 0; g < G; g++) {
            const size_t ng = n * G + g;
            // ShortConv norm and u = α·v (gate_value_backward_)
            const float *nc = w.norm_c + g * D, *v = a.v + n * D, *dz = dx + ng * D, *dog = dout + ng * D;
            const float al = a.alpha[ng], rc = a.rc[ng];
            double m = 0;
            for (int i = threadIdx.x; i < D; i += THREADS) {
                float zh = (al * v[i]) * rc;
                pt[o_nc + g * D + i] += (double)dz[i] * zh;
                m += (double)(dz[i] * nc[i]) * zh;
            }
            const float mf = (float)(block_reduce_(m, Sum()) / D);
            double da = 0;
            for (int i = threadIdx.x; i < D; i += THREADS) {
                float zh = (al * v[i]) * rc, du = dog[i] + rc * (dz[i] * nc[i] - zh * mf);
                da += (double)du * v[i];
                dv_n[i] += (double)al * du;
            }
            const float daf = (float)block_reduce_(da, Sum());
            const float ds = daf * al * (1.0f - al) * signed_sqrt_grad_(a.s[ng]);
            // key and query norms (key_query_backward_)
            const float *nk = w.norm_k + g * D, *nq = w.norm_q + g * D, *kh = a.khat + ng * D, *hg = h + ng * D;
            float *dxg = dx + ng * D, *dhg = dh + ng * D;
            const float rk = a.rk[ng], rq = a.rq[ng], cc = ds / sqrtf((float)D);
            double mk = 0, mq = 0;
            for (int i = threadIdx.x; i < D; i += THREADS) {
                float qh = hg[i] * rq, dk = cc * (qh * nq[i]), dq = cc * (kh[i] * nk[i]);
                pt[g * D + i] += (double)dk * kh[i];
                pt[o_nq + g * D + i] += (double)dq * qh;
                mk += (double)(dk * nk[i]) * kh[i];
                mq += (double)(dq * nq[i]) * qh;
            }
            const float mkf = (float)(block_reduce_(mk, Sum()) / D), mqf = (float)(block_reduce_(mq, Sum()) / D);
            for (int i = threadIdx.x; i < D; i += THREADS) {
                float qh = hg[i] * rq, dk = cc * (qh * nq[i]), dq = cc * (kh[i] * nk[i]);
                dxg[i] = rk * (dk * nk[i] - kh[i] * mkf);
                pt[o_bk + g * D + i] += dxg[i];
                dhg[i] += rq * (dq * nq[i] - qh * mqf);
            }
            __syncthreads();   // dz of the next branch is this branch's neighbour in dx: written above
        }
        for (int i = threadIdx.x; i < D; i += THREADS) {
            dv[n * D + i] = (float)dv_n[i];
            pt[o_bv + i] += dv[n * D + i];
        }
        __syncthreads();
    }
}

// one thread per partial column p: chunks added in order into row 0, then into its gradient
__global__ void engram_partials_reduce_(EngramDims d, EngramWeights g, double* part, int chunks, size_t P) {
    size_t p = (size_t)blockIdx.x * THREADS + threadIdx.x;
    if (p >= P) return;
    for (int k = 1; k < chunks; k++) part[p] += part[(size_t)k * P + p];
    const size_t GD = (size_t)d.G * d.D;
    const float x = (float)part[p];
    if (p < GD) g.norm_k[p] += x;
    else if (p < 2 * GD) g.norm_q[p - GD] += x;
    else if (p < 3 * GD) g.norm_c[p - 2 * GD] += x;
    else if (p < 4 * GD) g.bk[p - 3 * GD] += x;
    else if (p < 4 * GD + d.D) g.bv[p - 4 * GD] += x;
    else g.conv[p - 4 * GD - d.D] += x;
}

extern "C" void kernels_engram_tokens_backward(EngramDims d, EngramWeights w, const float* h, EngramActs a,
                                               const float* dout, float* dy, float* dx, float* dv, float* dh,
                                               double* part, int csize, int chunks, EngramWeights g,
                                               cudaStream_t st) {
    const long n = (long)d.B * d.T * d.G * d.D;
    const size_t P = (size_t)d.G * d.D * (4 + d.K) + d.D;
    if (!n || !chunks) return;
    engram_dy_<<<grid_(n), THREADS, 0, st>>>(dy, dout, a.y, n);
    cudaMemsetAsync(part, 0, (size_t)chunks * P * sizeof(double), st);
    engram_tokens_backward_<<<chunks, THREADS, (size_t)d.D * sizeof(double), st>>>(d, w, h, a, dout, dy, dx, dv, dh,
                                                                                   part, csize);
    engram_partials_reduce_<<<grid_(P), THREADS, 0, st>>>(d, g, part, chunks, P);
}

/* ---- the MoE layer's token-wise parts (moe.c's loops) --------------------------------------------- */

// one thread per token: E is a handful of experts
__global__ void moe_softmax_(float* probs, int N, int E) {
    int n = blockIdx.x * THREADS + threadIdx.x;
    if (n >= N) return;
    float* p = probs + (size_t)n * E;
    float mx = p[0], s = 0.0f;
    for (int i = 1; i < E; i++) mx = fmaxf(mx, p[i]);
    for (int i = 0; i < E; i++) s += (p[i] = expf(p[i] - mx));
    for (int i = 0; i < E; i++) p[i] /= s;
}
extern "C" void kernels_moe_softmax(float* probs, int N, int E, cudaStream_t st) {
    if (N) moe_softmax_<<<grid_((size_t)N), THREADS, 0, st>>>(probs, N, E);
}

__global__ void moe_gather_(float* X, const float* f, const int* row_tok, size_t n, int D) {
    size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;   // over [R, D]
    if (i < n) X[i] = f[(size_t)row_tok[i / D] * D + i % D];
}
extern "C" void kernels_moe_gather(float* X, const float* f, const int* row_tok, long R, int D, cudaStream_t st) {
    const size_t n = (size_t)R * D;
    if (n) moe_gather_<<<grid_(n), THREADS, 0, st>>>(X, f, row_tok, n, D);
}

// Σ_{j<k} p[top_j] in j order, as moe.c's topk_mass_
__device__ float topk_mass_(const float* p, const int* top, int k) {
    float s = 0.0f;
    for (int j = 0; j < k; j++) s += p[top[j]];
    return s;
}

// one thread per (token, column): the k choices added in order
__global__ void moe_combine_(const float* probs, const int* top_all, const long* row_all, const float* y, float* out,
                             int N, int E, int k, int D) {
    size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;   // over [N, D]
    if (i >= (size_t)N * D) return;
    const int n = (int)(i / D), c = (int)(i % D);
    const float* p = probs + (size_t)n * E;
    const int* top = top_all + (size_t)n * k;
    const float mass = topk_mass_(p, top, k);
    float o = out[i];
    for (int j = 0; j < k; j++) {
        long r = row_all[(size_t)n * k + j];
        if (r < 0) continue;
        o += p[top[j]] / mass * y[(size_t)r * D + c];
    }
    out[i] = o;
}
extern "C" void kernels_moe_combine(const float* probs, const int* top, const long* row, const float* y, float* out,
                                    int N, int E, int k, int D, cudaStream_t st) {
    const size_t n = (size_t)N * D;
    if (n) moe_combine_<<<grid_(n), THREADS, 0, st>>>(probs, top, row, y, out, N, E, k, D);
}

// one thread per token, moe.c's loop as it stands (a_j in double over the columns in order); dp_i is
// formed where it is used instead of in an [E] array: c_aux_i, then the chosen j's terms in order
__global__ void moe_routing_backward_(const float* probs, const int* top_all, const long* row_all, const float* y,
                                      const float* dout, const double* c_aux, float* dy, float* dl, int N, int E,
                                      int k, int D) {
    int n = blockIdx.x * THREADS + threadIdx.x;
    if (n >= N) return;
    const float* p = probs + (size_t)n * E;
    const float* go = dout + (size_t)n * D;
    const int* top = top_all + (size_t)n * k;
    const long* row = row_all + (size_t)n * k;
    double m = topk_mass_(p, top, k), a[KERNELS_MOE_MAX_K], abar = 0.0, pdp = 0.0;
    for (int j = 0; j < k; j++) {
        a[j] = 0.0;
        if (row[j] < 0) continue;
        float wj = (float)(p[top[j]] / m);
        const float* yr = y + (size_t)row[j] * D;
        float* dyr = dy + (size_t)row[j] * D;
        for (int c = 0; c < D; c++) {
            a[j] += (double)go[c] * yr[c];
            dyr[c] = wj * go[c];
        }
        abar += a[j] * (p[top[j]] / m);
    }
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < E; i++) {
            double dp = c_aux[i];
            for (int j = 0; j < k; j++)
                if (top[j] == i) dp += (a[j] - abar) / m;
            if (pass == 0) pdp += p[i] * dp;
            else dl[(size_t)n * E + i] = (float)(p[i] * (dp - pdp));
        }
}
extern "C" void kernels_moe_routing_backward(const float* probs, const int* top, const long* row, const float* y,
                                             const float* dout, const double* c_aux, float* dy, float* dl, int N,
                                             int E, int k, int D, cudaStream_t st) {
    if (N) moe_routing_backward_<<<grid_((size_t)N), THREADS, 0, st>>>(probs, top, row, y, dout, c_aux, dy, dl, N, E, k, D);
}

__global__ void moe_scatter_add_(const long* row_all, const float* dX, float* df, int N, int k, int D) {
    size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;   // over [N, D]
    if (i >= (size_t)N * D) return;
    const int n = (int)(i / D), c = (int)(i % D);
    float o = df[i];
    for (int j = 0; j < k; j++) {
        long r = row_all[(size_t)n * k + j];
        if (r >= 0) o += dX[(size_t)r * D + c];
    }
    df[i] = o;
}
extern "C" void kernels_moe_scatter_add(const long* row, const float* dX, float* df, int N, int k, int D,
                                        cudaStream_t st) {
    const size_t n = (size_t)N * D;
    if (n) moe_scatter_add_<<<grid_(n), THREADS, 0, st>>>(row, dX, df, N, k, D);
}

/* ---- the Engram rows: expansion, and their gradients' sums in position order ---------------------- */

__global__ void rows_expand_(float* out, const float* rows, const int64_t* inv, const int64_t* pos, size_t n, int Dh) {
    size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;   // over [total, Dh]
    if (i >= n) return;
    const int64_t u = pos ? pos[inv[i / Dh]] : inv[i / Dh];
    out[i] = rows[(size_t)u * Dh + i % Dh];
}
extern "C" void kernels_rows_expand(float* out, const float* rows, const int64_t* inv, const int64_t* pos,
                                    size_t total, int Dh, cudaStream_t st) {
    const size_t n = total * Dh;
    if (n) rows_expand_<<<grid_(n), THREADS, 0, st>>>(out, rows, inv, pos, n, Dh);
}

/* Sums of contributions by row, each row's in increasing contribution order (the CPU's order, so
 * the sums are the CPU's bit for bit): a stable radix sort of (row, i) by row lists each row's
 * contributions in order, and for each column the thread at the head of a row's list adds the list.
 * SEG_SET writes each row that has contributions (the first copied, the rest added); SEG_ADD adds
 * them, in order, to what is there. Rows without contributions are not touched. */
enum { SEG_SET, SEG_ADD };
struct PosKey {   // the Engram rows: row pos[row[i]] (pos NULL: row[i])
    const int64_t *row, *pos;
    __device__ int operator()(size_t i) const { return (int)(pos ? pos[row[i]] : row[i]); }
};
struct TokenKey {   // the embedding: token x[i]'s row
    const int32_t* x;
    __device__ int operator()(size_t i) const { return x[i]; }
};
template <typename Key>
__global__ void seg_keys_(int* key, int* idx, Key k, size_t n) {
    size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;
    if (i >= n) return;
    key[i] = k(i);
    idx[i] = (int)i;
}
struct DeRows {   // rows_reduce: contribution i is row i of de
    const float* de;
    int Dh;
    __device__ float operator()(int i, int j) const { return de[(size_t)i * Dh + j]; }
};
struct OwnedRows {   // rows_sum_owned: row i of recv, or of self where this rank asked itself
    const float *recv, *self;
    int64_t lo, hi;
    int Dh;
    __device__ float operator()(int i, int j) const {
        return i >= lo && i < hi ? self[(size_t)(i - lo) * Dh + j] : recv[(size_t)i * Dh + j];
    }
};
struct BranchSum {   // embedding_backward: token i's gradient summed over its G branches, in order
    const float* dh;
    int G, D;
    __device__ float operator()(int i, int j) const {
        float s = 0.0f;
        for (int g = 0; g < G; g++) s += dh[((size_t)i * G + g) * D + j];
        return s;
    }
};
template <typename Src>
__global__ void seg_sum_(float* out, const int* key, const int* idx, size_t n, int Dh, Src src, int mode) {
    size_t e = (size_t)blockIdx.x * THREADS + threadIdx.x;   // over [n, Dh]: sorted position t, column j
    if (e >= n * Dh) return;
    const size_t t = e / Dh;
    const int j = (int)(e % Dh), u = key[t];
    if (t > 0 && key[t - 1] == u) return;   // not the head of row u's list
    float* o = out + (size_t)u * Dh + j;
    float acc = mode == SEG_ADD ? *o + src(idx[t], j) : src(idx[t], j);
    for (size_t s = t + 1; s < n && key[s] == u; s++) acc += src(idx[s], j);
    *o = acc;
}
template <typename Key, typename Src>
static void seg_sums_(float* out, int64_t rows, Key key_of, size_t n, int Dh, Src src, int mode, cudaStream_t st) {
    if (!n || !Dh) return;
    int bits = 1;   // keys < rows
    while (bits < 31 && ((int64_t)1 << bits) < rows) bits++;
    int *key, *idx, *key_s, *idx_s;
    void* tmp;
    size_t tmp_bytes = 0;
    cub::DeviceRadixSort::SortPairs(NULL, tmp_bytes, (int*)NULL, (int*)NULL, (int*)NULL, (int*)NULL, (int)n, 0, bits, st);
    cudaMallocAsync((void**)&key, 4 * n, st), cudaMallocAsync((void**)&idx, 4 * n, st);
    cudaMallocAsync((void**)&key_s, 4 * n, st), cudaMallocAsync((void**)&idx_s, 4 * n, st);
    cudaMallocAsync(&tmp, tmp_bytes + 16, st);
    seg_keys_<<<grid_(n), THREADS, 0, st>>>(key, idx, key_of, n);
    cub::DeviceRadixSort::SortPairs(tmp, tmp_bytes, key, key_s, idx, idx_s, (int)n, 0, bits, st);   // stable
    seg_sum_<<<grid_(n * Dh), THREADS, 0, st>>>(out, key_s, idx_s, n, Dh, src, mode);
    cudaFreeAsync(key, st), cudaFreeAsync(idx, st), cudaFreeAsync(key_s, st), cudaFreeAsync(idx_s, st);
    cudaFreeAsync(tmp, st);
}
extern "C" void kernels_embedding_backward(float* dwte, const float* dh, const int32_t* x, int N, int G, int D,
                                           cudaStream_t st) {
    if (N && D) seg_sums_(dwte, (int64_t)1 << 31, TokenKey{x}, (size_t)N, D, BranchSum{dh, G, D}, SEG_ADD, st);
}
extern "C" void kernels_rows_reduce(float* grads, const float* de, const int64_t* inv, const int64_t* pos,
                                    size_t total, int64_t n_unique, int Dh, cudaStream_t st) {
    cudaMemsetAsync(grads, 0, (size_t)n_unique * Dh * sizeof(float), st);   // rows without lookups
    seg_sums_(grads, n_unique, PosKey{inv, pos}, total, Dh, DeRows{de, Dh}, SEG_SET, st);
}

/* ---- Σ g²: a fixed grid, so the summation order (and the result) is the same every call ------------ */

extern "C" int kernels_sumsq_blocks(size_t n) {
    size_t b = (n + THREADS - 1) / THREADS;
    return b < 1 ? 1 : b > 1024 ? 1024 : (int)b;
}
__global__ void sumsq_(double* partial, const float* g, size_t n) {
    double acc = 0.0;
    for (size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x; i < n; i += (size_t)gridDim.x * THREADS)
        acc += (double)g[i] * g[i];
    acc = block_reduce_(acc, Sum());
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
extern "C" void kernels_sumsq(double* partial, const float* g, size_t n, cudaStream_t st) {
    sumsq_<<<kernels_sumsq_blocks(n), THREADS, 0, st>>>(partial, g, n);
}

/* ---- Adam(W), in double as optim.c ------------------------------------------------------------------- */

struct AdamK { double lr, decay, b1, b2, eps, bc1, bc2, scale; };

__device__ void adam_one_(float* p, const float* g, float* m, float* v, const AdamK& k) {
    double gi = (double)*g * k.scale;
    double mi = k.b1 * *m + (1.0 - k.b1) * gi;
    double vi = k.b2 * *v + (1.0 - k.b2) * gi * gi;
    *m = (float)mi;
    *v = (float)vi;
    double pi = (double)*p * k.decay;   // decoupled decay (wd = 0 where none)
    *p = (float)(pi - k.lr * (mi / k.bc1) / (sqrt(vi / k.bc2) + k.eps));
}

__global__ void adam_(float* p, const float* g, float* m, float* v, size_t n, AdamK k) {
    size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;
    if (i < n) adam_one_(p + i, g + i, m + i, v + i, k);
}
extern "C" void kernels_adam(float* p, const float* g, float* m, float* v, size_t n, double lr, double wd, double b1,
                             double b2, double eps, double bc1, double bc2, double scale, cudaStream_t st) {
    AdamK k = {lr, 1.0 - lr * wd, b1, b2, eps, bc1, bc2, scale};
    if (n) adam_<<<grid_(n), THREADS, 0, st>>>(p, g, m, v, n, k);
}

/* ---- the Engram tables ------------------------------------------------------------------------------ */

#define KEY_LAYER_(k) ((int)((k) >> 48))
#define KEY_ROW_(k) ((k) & ((INT64_C(1) << 48) - 1))

__global__ void tables_gather_(KernelTables t, const int64_t* keys, size_t total, float* out) {
    size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;   // over [n, Dh]
    if (i >= total) return;
    const int64_t k = keys[i / t.Dh];
    const int l = KEY_LAYER_(k);
    out[i] = t.table[l][(size_t)(KEY_ROW_(k) - t.first[l]) * t.Dh + i % t.Dh];
}
extern "C" void kernels_tables_gather(KernelTables t, const int64_t* keys, int64_t n, float* out, cudaStream_t st) {
    const size_t total = (size_t)n * t.Dh;
    if (total) tables_gather_<<<grid_(total), THREADS, 0, st>>>(t, keys, total, out);
}

// own's rows are numbered in order of first appearance, so every row up to the last has contributions:
// at most n_recv rows, and the rows past the last are left alone
extern "C" void kernels_rows_sum_owned(float* own, const float* recv, const float* self, int64_t self_lo,
                                       int64_t self_hi, const int64_t* own_inv, int64_t n_recv, int Dh,
                                       cudaStream_t st) {
    if (n_recv)
        seg_sums_(own, n_recv, PosKey{own_inv, NULL}, (size_t)n_recv, Dh, OwnedRows{recv, self, self_lo, self_hi, Dh},
                  SEG_SET, st);
}

// rows are distinct, so no two threads touch one element; the first column's thread counts the row
__global__ void tables_adam_(KernelTables t, const int64_t* keys, size_t total, const float* grads, AdamK k) {
    size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;   // over [n, Dh]
    if (i >= total) return;
    const int64_t key = keys[i / t.Dh];
    const int l = KEY_LAYER_(key);
    const int64_t r = KEY_ROW_(key) - t.first[l];
    const size_t o = (size_t)r * t.Dh + i % t.Dh;
    adam_one_(t.table[l] + o, grads + i, t.m[l] + o, t.v[l] + o, k);
    if (i % t.Dh == 0) t.updates[l][r]++;
}
extern "C" void kernels_tables_adam(KernelTables t, const int64_t* keys, int64_t n, const float* grads, double lr,
                                    double b1, double b2, double eps, double bc1, double bc2, double scale,
                                    cudaStream_t st) {
    AdamK k = {lr, 1.0, b1, b2, eps, bc1, bc2, scale};
    const size_t total = (size_t)n * t.Dh;
    if (total) tables_adam_<<<grid_(total), THREADS, 0, st>>>(t, keys, total, grads, k);
}
