/*
 * engram_layer.c — forward and hand-written backward of the parametric Engram layer
 * (docs/model.md "Engram", spec/ENGRAM.md §4), fp32: the GEMMs through a Backend, the token-wise
 * loops here (the CPU backend's Engram ops; gpu/kernels.cu has their CUDA twins).
 *
 *   x_g = e·wk[g]ᵀ + bk[g];  k_g = RMSNorm_{norm_k[g]}(x_g);  q_g = RMSNorm_{norm_q[g]}(h[:,:,g,:])
 *   s = k_g·q_g/√D;  s' = sign(s)·sqrt(max(|s|, 1e-6));  α_g = sigmoid(s')
 *   v = e·wvᵀ + bv;  u_g = α_g·v;  z_g = RMSNorm_{norm_c[g]}(u_g)
 *   y[t,c] = Σ_j conv[c][j]·z[t − (K−1−j)·dilation, c]   (c = g·D + d, per sequence, 0 before t = 0)
 *   out_g = u_g + SiLU(y_g)
 *
 * Letters: N = B·T tokens (row n = b·T + t), GD = G·D channels (c = g·D + d, branch-major), Ein the
 * width of the gathered rows. The two projections are GEMMs (be->gemm: cblas on the CPU; all G keys
 * at once, wk viewed as [GD, Ein]); everything else loops over tokens under OpenMP.
 *
 * Precision: tensors and element-wise functions (sigmoid, sqrt, SiLU) are float. Every sum this file
 * writes itself is accumulated in double and rounded once: the RMSNorm sums of squares, the k·q dot,
 * the mean(dx̂·x̂) of an RMSNorm backward, the K conv taps, the sum over branches of dv, and the sums
 * over tokens of the small weight gradients (norms, biases, conv). Double matters most for the
 * token sums (tens of thousands of terms) and for s, whose square root amplifies relative error
 * near 0; using it for the short sums too keeps one rule. The GEMM sums are cblas sgemm's (float).
 *
 * Determinism: every parallel loop gives each output to exactly one iteration, and the operations
 * that produce an output do not depend on the thread count. Weight gradients summed over tokens are
 * first summed per chunk of tokens — the chunking depends on N only — and the chunk partials are
 * then added in chunk order. The GEMMs are the exception: OpenBLAS (0.3.21, measured) gives different
 * bits for different BLAS thread counts. With the pthreads OpenBLAS runs are bit-identical for any
 * OpenMP thread count at a fixed OPENBLAS_NUM_THREADS (it also reads OMP_NUM_THREADS at start-up when
 * OPENBLAS_NUM_THREADS is unset — set it explicitly); with the OpenMP OpenBLAS (the one CMake links
 * when installed) the BLAS uses the OpenMP thread count, so runs are bit-identical at a fixed thread
 * count.
 *
 * Not here: hashing and gathering e (ngram_hash.h), the block residual h += out (the caller).
 */
#include "engram_layer.h"

#include <math.h>
#include <string.h>

#include "backend.h"
#include "common.h"

#define S_FLOOR_ 1e-6f   // the signed square root's floor on |s|
#define MAX_CHUNKS_ 64   // token chunks of the weight-gradient sums (fixed: results never depend on threads)

/* acts layout, in this order (N = B·T):
 *   khat [N,G,D] | z [N,G,D] | y [N,G,D] | v [N,D] | rk [N,G] | rq [N,G] | rc [N,G] | s [N,G] | alpha [N,G]
 * total N·(3·G·D + D + 5·G) floats. The query q̂ = h·rq, the gated value u = α·v and the normalised
 * ẑ = u·rc are recomputed by the backward from h and these (bit-identical to the forward's values). */
size_t engram_acts_floats(const EngramDims* d) {
    size_t N = (size_t)d->B * d->T;   // size_t: N·G·D passes 2^31 for long sequences and wide models
    return N * (3 * (size_t)d->G * d->D + (size_t)d->D + 5 * (size_t)d->G);
}

EngramActs engram_acts_split(const EngramDims* d, float* acts) {
    size_t N = (size_t)d->B * d->T, NGD = N * d->G * d->D, NG = N * d->G;
    EngramActs a;
    a.khat = acts;
    a.z = a.khat + NGD;
    a.y = a.z + NGD;
    a.v = a.y + NGD;
    a.rk = a.v + N * d->D;
    a.rq = a.rk + NG;
    a.rc = a.rq + NG;
    a.s = a.rc + NG;
    a.alpha = a.s + NG;
    return a;
}

/* ---- element-wise pieces ------------------------------------------------------------------- */

static float sigmoid_(float x) { return 1.0f / (1.0f + expf(-x)); }

static float silu_(float y) { return y * sigmoid_(y); }

// d SiLU(y)/dy = σ(y)·(1 + y·(1 − σ(y)))
static float silu_grad_(float y) {
    float sg = sigmoid_(y);
    return sg * (1.0f + y * (1.0f - sg));
}

// s' = sign(s)·sqrt(max(|s|, 1e-6)), sign(0) = 0
static float signed_sqrt_(float s) {
    float r = sqrtf(fmaxf(fabsf(s), S_FLOOR_));
    return s > 0 ? r : (s < 0 ? -r : 0.0f);
}

// ds'/ds: 0 on the floor (|s| < 1e-6), else 1/(2·sqrt|s|) on both sides
static float signed_sqrt_grad_(float s) {
    float a = fabsf(s);
    return a < S_FLOOR_ ? 0.0f : 0.5f / sqrtf(a);
}

// x [n] → 1/sqrt(mean(x²) + eps), the sum in double
static float rms_inv_(const float* x, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    return (float)(1.0 / sqrt(ss / n + eps));
}

/* ---- forward ------------------------------------------------------------------------------- */

/* One token n: for every branch the gate α_g, the gated value u_g (written to out_n, which the
 * conv step completes) and the ShortConv input z_g. On entry khat holds e·wkᵀ and v holds e·wvᵀ,
 * both without bias; on exit they hold k̂ and v as acts documents. */
static void gate_token_(const EngramDims* d, const EngramWeights* w, size_t n, const float* h_n,
                        EngramActs* a, float* out_n) {
    const int G = d->G, D = d->D;
    float* v = a->v + n * D;   // [D]
    for (int i = 0; i < D; i++) v[i] += w->bv[i];
    for (int g = 0; g < G; g++) {
        const size_t ng = n * G + g;
        const float *nk = w->norm_k + g * D, *nq = w->norm_q + g * D, *nc = w->norm_c + g * D;  // [D]
        const float* hg = h_n + (size_t)g * D;   // [D] query input
        float* kh = a->khat + ng * D;            // [D] x, then x̂
        float* u = out_n + (size_t)g * D;        // [D]
        float* z = a->z + ng * D;                // [D]
        for (int i = 0; i < D; i++) kh[i] += w->bk[g * D + i];
        float rk = rms_inv_(kh, D, d->qk_eps), rq = rms_inv_(hg, D, d->qk_eps);
        double dot = 0;   // k·q, k = x̂·nk, q = q̂·nq
        for (int i = 0; i < D; i++) {
            kh[i] *= rk;
            dot += (double)(kh[i] * nk[i]) * ((hg[i] * rq) * nq[i]);
        }
        float s = (float)(dot / sqrt((double)D));
        float al = sigmoid_(signed_sqrt_(s));
        for (int i = 0; i < D; i++) u[i] = al * v[i];
        float rc = rms_inv_(u, D, d->conv_eps);
        for (int i = 0; i < D; i++) z[i] = (u[i] * rc) * nc[i];
        a->rk[ng] = rk, a->rq[ng] = rq, a->rc[ng] = rc, a->s[ng] = s, a->alpha[ng] = al;
    }
}

/* One token n (time t = n mod T): y[n,c] = Σ_j conv[c][j]·z[n − (K−1−j)·dilation, c] over the taps
 * that stay inside this sequence, then out[n,c] += SiLU(y). z [N,GD], y_n/out_n [GD]. */
static void conv_token_(const EngramDims* d, const float* conv, const float* z, size_t n, float* y_n,
                        float* out_n) {
    const int GD = d->G * d->D, K = d->K, t = (int)(n % (size_t)d->T);
    for (int c = 0; c < GD; c++) {
        double acc = 0;
        for (int j = 0; j < K; j++) {
            int back = (K - 1 - j) * d->dilation;
            if (t >= back) acc += (double)conv[(size_t)c * K + j] * z[(n - back) * GD + c];
        }
        y_n[c] = (float)acc;
        out_n[c] += silu_(y_n[c]);
    }
}

void engram_gate_forward(const EngramDims* d, const EngramWeights* w, const float* h, float* out, float* acts) {
    const int N = d->B * d->T, GD = d->G * d->D;
    EngramActs a = engram_acts_split(d, acts);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) gate_token_(d, w, (size_t)n, h + (size_t)n * GD, &a, out + (size_t)n * GD);
}

void engram_conv_forward(const EngramDims* d, const float* conv, float* acts, float* out) {
    const int N = d->B * d->T, GD = d->G * d->D;
    EngramActs a = engram_acts_split(d, acts);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) conv_token_(d, conv, a.z, (size_t)n, a.y + (size_t)n * GD, out + (size_t)n * GD);
}

void engram_layer_forward(const EngramDims* d, const EngramWeights* w, const float* e, const float* h,
                          float* out, float* acts) {
    engram_layer_forward_on(backend_cpu(), d, w, e, h, out, acts);
}

void engram_layer_forward_on(Backend* be, const EngramDims* d, const EngramWeights* w, const float* e,
                             const float* h, float* out, float* acts) {
    const int N = d->B * d->T, GD = d->G * d->D;
    EngramActs a = engram_acts_split(d, acts);
    // 1. keys of all branches and the shared value, one GEMM each (biases added per token in 2):
    //    [N, Ein]·[Ein, GD] → [N, GD] and [N, Ein]·[Ein, D] → [N, D]
    be->gemm(be, 0, 1, N, GD, d->Ein, 1.0f, e, d->Ein, 0, w->wk, d->Ein, 0, 0.0f, a.khat, GD, 0, 1);
    be->gemm(be, 0, 1, N, d->D, d->Ein, 1.0f, e, d->Ein, 0, w->wv, d->Ein, 0, 0.0f, a.v, d->D, 0, 1);
    // 2. gates, u = α·v → out, z = RMSNorm(u): [N, GD]
    be->engram_gate_forward(be, d, w, h, out, acts);
    // 3. causal dilated depthwise conv of z (reads earlier tokens' z, so after 2), out += SiLU(y)
    be->engram_conv_forward(be, d, w->conv, acts, out);
}

/* ---- backward ------------------------------------------------------------------------------ */

/* Per-chunk partial sums over tokens of the small weight gradients (double), at these offsets of a
 * row of P doubles. */
typedef struct {
    size_t nk, nq, nc, bk;   // [G,D] each
    size_t bv;               // [D]
    size_t conv;             // [GD,K]
    size_t P;                // row length
} PartLayout;

static PartLayout part_layout_(const EngramDims* d) {
    size_t GD = (size_t)d->G * d->D;
    PartLayout p = {.nk = 0, .nq = GD, .nc = 2 * GD, .bk = 3 * GD, .bv = 4 * GD};
    p.conv = p.bv + d->D;
    p.P = p.conv + GD * d->K;
    return p;
}

/* The gradients one backward call reads and writes, to keep helper signatures short. */
typedef struct {
    const float* dout;   // [N,G,D]
    const float* dy;     // [N,G,D] dL/dy, y before SiLU
    float* dx;           // [N,G,D] dL/dx, x = e·wkᵀ + bk (first holds dL/dz of the token being done)
    float* dv;           // [N,D]   dL/dv
    float* dh;           // [N,G,D] accumulated
} Grads;

/* Token n: in the forward z[n,c] reached y[n + back_j, c] through tap j (back_j = (K−1−j)·dilation)
 * when that is still in the sequence, so now dz[n,c] = Σ_j conv[c][j]·dy[n + back_j, c]; and y[n,c]
 * took conv[c][j]·z[n − back_j, c], so dconv[c][j] += dy[n,c]·z[n − back_j, c]. dz_n [GD]. */
static void conv_backward_token_(const EngramDims* d, const float* conv, const float* z, const float* dy,
                                 size_t n, float* dz_n, double* pconv) {
    const int GD = d->G * d->D, K = d->K, T = d->T, t = (int)(n % (size_t)T);
    for (int c = 0; c < GD; c++) {
        double acc = 0;
        for (int j = 0; j < K; j++) {
            int back = (K - 1 - j) * d->dilation;
            if (t + back < T) acc += (double)conv[(size_t)c * K + j] * dy[(n + back) * GD + c];
            if (t >= back) pconv[(size_t)c * K + j] += (double)dy[n * GD + c] * z[(n - back) * GD + c];
        }
        dz_n[c] = (float)acc;
    }
}

/* Token n, branch g, from dz (in gr->dx) back to the gate: in the forward u = α·v fed both the
 * residual out = u + … and z = ẑ·nc with ẑ = u·rc. So now dnc += dz·ẑ, du = dout + rc·(dẑ − ẑ·mean(dẑ·ẑ))
 * with dẑ = dz·nc, and from u = α·v: dα = du·v, dv += α·du (into dv_n, double). Returns dα. */
static float gate_value_backward_(const EngramDims* d, const EngramWeights* w, const EngramActs* a,
                                  const Grads* gr, size_t n, int g, double* dv_n, double* pnc) {
    const int D = d->D;
    const size_t ng = n * d->G + g;
    const float *nc = w->norm_c + g * D, *v = a->v + n * D;                     // [D]
    const float *dz = gr->dx + ng * D, *dout = gr->dout + ng * D;              // [D]
    const float al = a->alpha[ng], rc = a->rc[ng];
    double m = 0;
    for (int i = 0; i < D; i++) {
        float zh = (al * v[i]) * rc;
        pnc[i] += (double)dz[i] * zh;
        m += (double)(dz[i] * nc[i]) * zh;
    }
    float mf = (float)(m / D);
    double da = 0;
    for (int i = 0; i < D; i++) {
        float zh = (al * v[i]) * rc;
        float du = dout[i] + rc * (dz[i] * nc[i] - zh * mf);
        da += (double)du * v[i];
        dv_n[i] += (double)al * du;
    }
    return (float)da;
}

/* Token n, branch g, from ds to the key and the query: in the forward s = k·q/√D with k = x̂·nk,
 * x̂ = x·rk and q = q̂·nq, q̂ = h·rq. So now dk = ds/√D·q, dq = ds/√D·k; dnk += dk·x̂, dnq += dq·q̂;
 * and through each RMSNorm dx = rk·(dx̂ − x̂·mean(dx̂·x̂)) with dx̂ = dk·nk (into gr->dx, also summed
 * into dbk since x = … + bk), dh += rq·(dq̂ − q̂·mean(dq̂·q̂)) with dq̂ = dq·nq. */
static void key_query_backward_(const EngramDims* d, const EngramWeights* w, const EngramActs* a,
                                const float* h, const Grads* gr, size_t n, int g, float ds,
                                double* pnk, double* pnq, double* pbk) {
    const int D = d->D;
    const size_t ng = n * d->G + g;
    const float *nk = w->norm_k + g * D, *nq = w->norm_q + g * D;         // [D]
    const float *kh = a->khat + ng * D, *hg = h + ng * D;                 // [D]
    float *dx = gr->dx + ng * D, *dh = gr->dh + ng * D;                   // [D]
    const float rk = a->rk[ng], rq = a->rq[ng], c = ds / sqrtf((float)D);
    double mk = 0, mq = 0;
    for (int i = 0; i < D; i++) {
        float qh = hg[i] * rq, dk = c * (qh * nq[i]), dq = c * (kh[i] * nk[i]);
        pnk[i] += (double)dk * kh[i];
        pnq[i] += (double)dq * qh;
        mk += (double)(dk * nk[i]) * kh[i];
        mq += (double)(dq * nq[i]) * qh;
    }
    float mkf = (float)(mk / D), mqf = (float)(mq / D);
    for (int i = 0; i < D; i++) {
        float qh = hg[i] * rq, dk = c * (qh * nq[i]), dq = c * (kh[i] * nk[i]);
        dx[i] = rk * (dk * nk[i] - kh[i] * mkf);
        pbk[i] += dx[i];
        dh[i] += rq * (dq * nq[i] - qh * mqf);
    }
}

/* Tokens [n0, n1): everything after dy that stays inside a token, with this chunk's weight-gradient
 * partials summed into part [P]. */
static void backward_chunk_(const EngramDims* d, const EngramWeights* w, const EngramActs* a, const float* h,
                            const Grads* gr, size_t n0, size_t n1, double* part) {
    const int G = d->G, D = d->D, GD = G * D;
    const PartLayout pl = part_layout_(d);
    double* dv_n = mallocCheck((size_t)D * sizeof(double));   // [D] Σ_g α_g·du_g of one token
    for (size_t n = n0; n < n1; n++) {
        conv_backward_token_(d, w->conv, a->z, gr->dy, n, gr->dx + n * GD, part + pl.conv);
        memset(dv_n, 0, (size_t)D * sizeof(double));
        for (int g = 0; g < G; g++) {
            const size_t ng = n * G + g;
            float da = gate_value_backward_(d, w, a, gr, n, g, dv_n, part + pl.nc + g * D);
            // α = sigmoid(s'), s' = signed sqrt of s: ds = dα·α(1 − α)·ds'/ds
            const float al = a->alpha[ng];
            float ds = da * al * (1.0f - al) * signed_sqrt_grad_(a->s[ng]);
            key_query_backward_(d, w, a, h, gr, n, g, ds, part + pl.nk + g * D, part + pl.nq + g * D,
                                part + pl.bk + g * D);
        }
        for (int i = 0; i < D; i++) {
            gr->dv[n * D + i] = (float)dv_n[i];
            part[pl.bv + i] += gr->dv[n * D + i];   // v = … + bv
        }
    }
    free(dv_n);
}

/* Sum the chunk partials [chunks, P] in chunk order into row 0, then add them to the gradients. */
static void partials_reduce_(const EngramDims* d, double* part, int chunks, EngramWeights* g) {
    const PartLayout pl = part_layout_(d);
    const long P = (long)pl.P;
#pragma omp parallel for schedule(static)
    for (long p = 0; p < P; p++)
        for (int k = 1; k < chunks; k++) part[p] += part[(size_t)k * pl.P + p];
    const int GD = d->G * d->D;
    for (int i = 0; i < GD; i++) {
        g->norm_k[i] += (float)part[pl.nk + i];
        g->norm_q[i] += (float)part[pl.nq + i];
        g->norm_c[i] += (float)part[pl.nc + i];
        g->bk[i] += (float)part[pl.bk + i];
    }
    for (int i = 0; i < d->D; i++) g->bv[i] += (float)part[pl.bv + i];
    for (int i = 0; i < GD * d->K; i++) g->conv[i] += (float)part[pl.conv + i];
}

void engram_backward_chunks(int N, int* csize, int* chunks) {
    *csize = (N + MAX_CHUNKS_ - 1) / MAX_CHUNKS_;
    *chunks = N ? (N + *csize - 1) / *csize : 0;
}

size_t engram_partials_doubles(const EngramDims* d) {
    int csize, chunks;
    engram_backward_chunks(d->B * d->T, &csize, &chunks);
    return (size_t)chunks * part_layout_(d).P;
}

void engram_tokens_backward(const EngramDims* d, const EngramWeights* w, const float* h, const float* acts,
                            const float* dout, float* dy, float* dx, float* dv, float* dh, double* part,
                            EngramWeights* g) {
    const int N = d->B * d->T, GD = d->G * d->D;
    const EngramActs a = engram_acts_split(d, (float*)acts);   // read only here
    Grads gr = {.dout = dout, .dy = dy, .dx = dx, .dv = dv, .dh = dh};

    // 1. out = u + SiLU(y): dy = dout·SiLU'(y) (du = dout is added in 2)
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)N * GD; i++) dy[i] = dout[i] * silu_grad_(a.y[i]);

    // 2. conv, ShortConv norm, gate, key/query norms, token by token; weight gradients per chunk
    int csize, chunks;
    engram_backward_chunks(N, &csize, &chunks);
    const size_t P = part_layout_(d).P;
    memset(part, 0, (size_t)chunks * P * sizeof(double));   // [chunks, P]
#pragma omp parallel for schedule(static)
    for (int k = 0; k < chunks; k++) {
        size_t n0 = (size_t)k * csize, n1 = n0 + csize < (size_t)N ? n0 + csize : (size_t)N;
        backward_chunk_(d, w, &a, h, &gr, n0, n1, part + (size_t)k * P);
    }
    partials_reduce_(d, part, chunks, g);
}

void engram_layer_backward(const EngramDims* d, const EngramWeights* w, const float* e, const float* h,
                           const float* acts, const float* dout, float* de, float* dh, EngramWeights* g) {
    engram_layer_backward_on(backend_cpu(), d, w, e, h, acts, dout, de, dh, g);
}

void engram_layer_backward_on(Backend* be, const EngramDims* d, const EngramWeights* w, const float* e,
                              const float* h, const float* acts, const float* dout, float* de, float* dh,
                              EngramWeights* g) {
    const int N = d->B * d->T, GD = d->G * d->D, D = d->D, Ein = d->Ein;
    float* dy = be->alloc(be, (size_t)N * GD * sizeof(float));
    float* dx = be->alloc(be, (size_t)N * GD * sizeof(float));
    float* dv = be->alloc(be, (size_t)N * D * sizeof(float));
    double* part = be->alloc(be, engram_partials_doubles(d) * sizeof(double));

    // 1–2. everything between dout and the two projections, token by token (engram_tokens_backward)
    be->engram_tokens_backward(be, d, w, h, acts, dout, dy, dx, dv, dh, part, g);

    // 3. in the forward x = e·wkᵀ + bk (all G at once, wk as [GD, Ein]) and v = e·wvᵀ + bv, so now
    //    de = dx·wk + dv·wv: [N,GD]·[GD,Ein] + [N,D]·[D,Ein]; dwk += dxᵀ·e, dwv += dvᵀ·e
    be->gemm(be, 0, 0, N, Ein, GD, 1.0f, dx, GD, 0, w->wk, Ein, 0, 0.0f, de, Ein, 0, 1);
    be->gemm(be, 0, 0, N, Ein, D, 1.0f, dv, D, 0, w->wv, Ein, 0, 1.0f, de, Ein, 0, 1);
    be->gemm(be, 1, 0, GD, Ein, N, 1.0f, dx, GD, 0, e, Ein, 0, 1.0f, g->wk, Ein, 0, 1);
    be->gemm(be, 1, 0, D, Ein, N, 1.0f, dv, D, 0, e, Ein, 0, 1.0f, g->wv, Ein, 0, 1);

    be->free(be, part);
    be->free(be, dv);
    be->free(be, dx);
    be->free(be, dy);
}
