/*
 * ops.c — dense ops of the model, forward and backward (ops.h). GEMMs go to cblas; the rest are
 * plain loops parallelised over rows with OpenMP, each thread writing only its own rows.
 */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "common.h"

/* ---- GEMM ------------------------------------------------------------------------------------ */

double ops_gemm_seconds = 0.0;

void ops_gemm(int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
              float beta, float* C, int ldc) {
    double t0 = engram_now();
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
                B, ldb, beta, C, ldc);
    double dt = engram_now() - t0;
#ifdef _OPENMP
    if (omp_in_parallel()) {   // one of a team's GEMMs running side by side: its share of the wall time
#pragma omp atomic
        ops_gemm_seconds += dt / omp_get_num_threads();
        return;
    }
#endif
    ops_gemm_seconds += dt;
}

int ops_gemm_in_parallel(void) {
#ifdef _OPENMP
    static int openmp = -1;   // OpenBLAS's threading: 0 none, 1 pthreads, 2 OpenMP
    if (openmp < 0) openmp = openblas_get_parallel() == 2;
    return openmp;
#else
    return 0;   // our loops run on one thread: let the BLAS thread each GEMM
#endif
}

int ops_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- linear ---------------------------------------------------------------------------------- */

/* ---- embedding ------------------------------------------------------------------------------- */

void embedding_forward(float* h, const float* wte, const int32_t* x, int N, int G, int D) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++) memcpy(h + ((size_t)n * G + g) * D, wte + (size_t)x[n] * D, D * sizeof(float));
}

void embedding_backward(float* dwte, const float* dh, const int32_t* x, int N, int G, int D) {
    for (int n = 0; n < N; n++) {   // serial: rows repeat
        float* row = dwte + (size_t)x[n] * D;
        for (int d = 0; d < D; d++) {
            float s = 0.0f;
            for (int g = 0; g < G; g++) s += dh[((size_t)n * G + g) * D + d];
            row[d] += s;
        }
    }
}

void linear_forward(float* out, const float* in, const float* W, const float* bias, int N, int Din, int Dout) {
    // out[N,Dout] = in[N,Din] · W[Dout,Din]ᵀ
    ops_gemm(0, 1, N, Dout, Din, 1.0f, in, Din, W, Din, 0.0f, out, Dout);
    if (!bias) return;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < Dout; o++) out[(size_t)n * Dout + o] += bias[o];
}

void linear_backward(float* din, float* dW, float* dbias, const float* dout, const float* in, const float* W,
                     int N, int Din, int Dout) {
    // in the forward out = in·Wᵀ, so din += dout·W [N,Dout]×[Dout,Din] and dW += doutᵀ·in [Dout,N]×[N,Din]
    if (din) ops_gemm(0, 0, N, Din, Dout, 1.0f, dout, Dout, W, Din, 1.0f, din, Din);
    ops_gemm(1, 0, Dout, Din, N, 1.0f, dout, Dout, in, Din, 1.0f, dW, Din);
    if (!dbias) return;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < Dout; o++) dbias[o] += dout[(size_t)n * Dout + o];
}

/* ---- hyper-connection branches and element-wise helpers ------------------------------------ */

/* out[n,d] = (Σ_g h[n,g,d])·k: k = 1/G gives the mean, 1 the sum (·1 is exact) */
static void branches_reduce_(float* out, const float* h, int N, int G, int D, float k) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int d = 0; d < D; d++) {
            float s = 0.0f;
            for (int g = 0; g < G; g++) s += h[((size_t)n * G + g) * D + d];
            out[(size_t)n * D + d] = s * k;
        }
}

void branches_mean(float* out, const float* h, int N, int G, int D) { branches_reduce_(out, h, N, G, D, 1.0f / (float)G); }
void branches_sum(float* out, const float* h, int N, int G, int D) { branches_reduce_(out, h, N, G, D, 1.0f); }

void branches_add(float* h, const float* x, int N, int G, int D) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++)
            for (int d = 0; d < D; d++) h[((size_t)n * G + g) * D + d] += x[(size_t)n * D + d];
}

void ops_scale(float* y, const float* x, float alpha, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = x[i] * alpha;
}

void ops_add(float* y, const float* x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

/* ---- RMSNorm ------------------------------------------------------------------------------- */

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int D, float eps) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float* xn = x + (size_t)n * D;
        float ss = 0.0f;
        for (int d = 0; d < D; d++) ss += xn[d] * xn[d];
        float r = 1.0f / sqrtf(ss / (float)D + eps);
        rstd[n] = r;
        for (int d = 0; d < D; d++) out[(size_t)n * D + d] = xn[d] * r * w[d];
    }
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int N, int D) {
    // forward: y = x·r·w with r = (mean(x²)+eps)^(-1/2); dr/dx = −r³·x/D, so
    // dx = r·(w⊙dy) − (r³/D)·x·Σ_d(w⊙dy⊙x), and dw = Σ_n dy⊙x·r
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * D, *dy = dout + (size_t)n * D;
        float r = rstd[n], dot = 0.0f;
        for (int d = 0; d < D; d++) dot += w[d] * dy[d] * xn[d];
        float c = r * r * r * dot / (float)D;
        for (int d = 0; d < D; d++) dx[(size_t)n * D + d] += r * w[d] * dy[d] - c * xn[d];
    }
    for (int n = 0; n < N; n++)   // fixed order over tokens: deterministic
        for (int d = 0; d < D; d++) dw[d] += dout[(size_t)n * D + d] * x[(size_t)n * D + d] * rstd[n];
}

/* ---- RoPE ---------------------------------------------------------------------------------- */

/* cos/sin of t·θ_i for t < T, i < hd/2, computed once in double and kept for the last shape asked
 * (every call of a run asks for the same one). Called outside parallel regions. */
static struct { int T, hd; float base; float *cos, *sin; } rope_tab_ = {0, 0, 0.0f, NULL, NULL};

static void rope_table_(int T, int hd, float base) {
    if (rope_tab_.T == T && rope_tab_.hd == hd && rope_tab_.base == base) return;
    const int half = hd / 2;
    rope_tab_.cos = reallocCheck(rope_tab_.cos, ((size_t)T * half + 1) * sizeof(float));
    rope_tab_.sin = reallocCheck(rope_tab_.sin, ((size_t)T * half + 1) * sizeof(float));
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double theta = pow((double)base, -2.0 * i / hd) * t;
            rope_tab_.cos[t * half + i] = (float)cos(theta);
            rope_tab_.sin[t * half + i] = (float)sin(theta);
        }
    rope_tab_.T = T, rope_tab_.hd = hd, rope_tab_.base = base;
}

void rope_apply(float* qkv, int B, int T, int D, int nh, float base, int inverse) {
    const int hd = D / nh, half = hd / 2;
    const float sgn = inverse ? -1.0f : 1.0f;
    rope_table_(T, hd, base);
    const float *ct = rope_tab_.cos, *st = rope_tab_.sin;
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        const float *c = ct + (size_t)(bt % T) * half, *sn = st + (size_t)(bt % T) * half;
        for (int part = 0; part < 2; part++)          // q, then k
            for (int h = 0; h < nh; h++) {
                float* x = qkv + (size_t)bt * 3 * D + (size_t)part * D + (size_t)h * hd;
                for (int i = 0; i < half; i++) {
                    float a = x[i], b = x[i + half], s = sgn * sn[i];
                    x[i] = a * c[i] - b * s;
                    x[i + half] = b * c[i] + a * s;
                }
            }
    }
}

/* ---- attention ----------------------------------------------------------------------------- */

/* Per sequence b and head h the four products are GEMMs over strided views of qkv [B,T,3D]:
 * q, k, v of head h are the [T,hd] columns h·hd (+ 0, D, 2D) with row stride 3D. One OpenMP loop
 * over the B·nh (b, h) pairs does each pair's GEMMs and the row-wise softmax work between them, so
 * its [T,T] scores stay in cache. The GEMMs of a pair run single-threaded on the thread that owns
 * the pair (ops_gemm_in_parallel: with the OpenMP OpenBLAS; otherwise the pairs run one after
 * another and each GEMM is threaded by the BLAS). The causal products use the full [T,T] score
 * matrix with exact zeros above the diagonal: twice the multiplies of a triangle, at GEMM speed. */

/* p [T] of query t: softmax over s ≤ t of the scaled scores in p, zeros for s > t. */
ENGRAM_SIMD_CLONES static void causal_softmax_row_(float* p, int t, int T) {
    float mx = -INFINITY;
    for (int s = 0; s <= t; s++) mx = p[s] > mx ? p[s] : mx;
    float sum = 0.0f;
    for (int s = 0; s <= t; s++) {
        p[s] = expf(p[s] - mx);
        sum += p[s];
    }
    const float inv = 1.0f / sum;
    for (int s = 0; s <= t; s++) p[s] *= inv;
    for (int s = t + 1; s < T; s++) p[s] = 0.0f;
}

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int D, int nh) {
    const int hd = D / nh, C3 = 3 * D;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(static) if (ops_gemm_in_parallel())
    for (int bh = 0; bh < B * nh; bh++) {
        const int b = bh / nh, h = bh % nh;
        const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hd, *v = q + 2 * D;
        float* p = att + (size_t)bh * T * T;   // [T,T]
        ops_gemm(0, 1, T, T, hd, scale, q, C3, q + D, C3, 0.0f, p, T);   // scale·q·kᵀ
        for (int t = 0; t < T; t++) causal_softmax_row_(p + (size_t)t * T, t, T);
        ops_gemm(0, 0, T, hd, T, 1.0f, p, T, v, C3, 0.0f, out + (size_t)b * T * D + (size_t)h * hd, D);   // P·v
    }
}

/* dp [T] of query t, in place: ds = p·(dp − Σ_s p·dp)·scale over s ≤ t, zeros above. */
ENGRAM_SIMD_CLONES static void causal_softmax_row_backward_(float* dp, const float* p, int t, int T, float scale) {
    float pdp = 0.0f;
    for (int s = 0; s <= t; s++) pdp += p[s] * dp[s];
    for (int s = 0; s <= t; s++) dp[s] = p[s] * (dp[s] - pdp) * scale;
    for (int s = t + 1; s < T; s++) dp[s] = 0.0f;
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, float* scratch, int B,
                        int T, int D, int nh) {
    const int hd = D / nh, C3 = 3 * D;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(static) if (ops_gemm_in_parallel())
    for (int bh = 0; bh < B * nh; bh++) {
        const int b = bh / nh, h = bh % nh;
        const size_t qo = (size_t)b * T * C3 + (size_t)h * hd;
        const float *p = att + (size_t)bh * T * T, *dy = dout + (size_t)b * T * D + (size_t)h * hd;
        float* ds = scratch + (size_t)bh * T * T;   // [T,T]: dP, then dS in place
        // forward: o = P·v, so dv = Pᵀ·do and dP = do·vᵀ
        ops_gemm(1, 0, T, hd, T, 1.0f, p, T, dy, D, 0.0f, dqkv + qo + 2 * D, C3);
        ops_gemm(0, 1, T, T, hd, 1.0f, dy, D, qkv + qo + 2 * D, C3, 0.0f, ds, T);
        // softmax: dS = P ⊙ (dP − rowsum(P ⊙ dP)), times the score scale
        for (int t = 0; t < T; t++) causal_softmax_row_backward_(ds + (size_t)t * T, p + (size_t)t * T, t, T, scale);
        // scores were q·kᵀ: dq = dS·k, dk = dSᵀ·q
        ops_gemm(0, 0, T, hd, T, 1.0f, ds, T, qkv + qo + D, C3, 0.0f, dqkv + qo, C3);
        ops_gemm(1, 0, T, hd, T, 1.0f, ds, T, qkv + qo, C3, 0.0f, dqkv + qo + D, C3);
    }
}

/* ---- SwiGLU -------------------------------------------------------------------------------- */

static inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

void swiglu_forward(float* g, const float* h1, const float* h3, long n) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) g[i] = h1[i] * sigmoidf_(h1[i]) * h3[i];
}

void swiglu_backward(float* dh1, float* dh3, const float* dg, const float* h1, const float* h3, long n) {
    // g = silu(a)·b with silu'(a) = σ(a)·(1 + a·(1 − σ(a)))
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float s = sigmoidf_(h1[i]);
        dh3[i] = dg[i] * h1[i] * s;
        dh1[i] = dg[i] * h3[i] * s * (1.0f + h1[i] * (1.0f - s));
    }
}

/* ---- cross-entropy ------------------------------------------------------------------------- */

/* e^x for x ≤ 0 with ~1e-7 relative error (Cephes' expf: x = n·ln2 + r, a degree-5 polynomial for
 * e^r, 2^n through the exponent bits). Plain arithmetic, so the loop below vectorises, unlike libm. */
static inline __attribute__((always_inline)) float exp_neg_(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   // round to nearest, no libm call
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;   // ln2 split in two for an exact product
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } two_n = {.i = ((int32_t)n + 127) << 23};
    return p * two_n.f;
}

/* One token's softmax cross-entropy: z [V] logits (overwritten); returns −log p[y]. With grad, z
 * ends as p − onehot(y) (the gradient of the token's CE w.r.t. its logits), else as p. Compiled
 * twice on x86-64 (AVX2+FMA and the baseline), picked at load time: the binary runs anywhere. */
ENGRAM_SIMD_CLONES static double xent_row_(float* z, int y, int V, int grad) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    const float zy = z[y] - mx;
    // e^(z − max) and their sum in one pass: float sums over blocks of 512 (vectorised), the blocks
    // added in double, so V = 50k terms keep ~1e-7 relative accuracy
    double sum = 0.0;
    for (int v0 = 0; v0 < V; v0 += 512) {
        const int v1 = v0 + 512 < V ? v0 + 512 : V;
        float bs = 0.0f;
#pragma omp simd reduction(+ : bs)
        for (int v = v0; v < v1; v++) {
            z[v] = exp_neg_(z[v] - mx);
            bs += z[v];
        }
        sum += bs;
    }
    const float inv = (float)(1.0 / sum);
#pragma omp simd
    for (int v = 0; v < V; v++) z[v] *= inv;
    if (grad) z[y] -= 1.0f;
    return log(sum) - (double)zy;
}

double crossentropy_forward(float* probs, const int32_t* y, int N, int V) {
    double* loss = mallocCheck((size_t)N * sizeof(double));   // per token, summed in order below
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) loss[n] = xent_row_(probs + (size_t)n * V, y[n], V, 0);
    double total = 0.0;
    for (int n = 0; n < N; n++) total += loss[n];
    free(loss);
    return total;
}

void crossentropy_backward(float* probs, const int32_t* y, int N, int V, float scale) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float* p = probs + (size_t)n * V;
#pragma omp simd
        for (int v = 0; v < V; v++) p[v] *= scale;
        p[y[n]] -= scale;
    }
}

/* ---- the output head with its loss, fused ---------------------------------------------------- */

/* One lane's blocks of the head: blocks lane, lane + lanes, ... of `rows` tokens, its logits in
 * scratch [rows,V], its dW part in dW (overwritten by its first block; zeroed if it has none). */
static void head_lane_(const float* x, const float* W, const int32_t* y, int N, int D, int V, float* dx, float* dW,
                       float* scratch, int rows, int lane, int lanes, double* loss) {
    int first = 1;
    for (int n0 = lane * rows; n0 < N; n0 += lanes * rows) {
        const int nb = N - n0 < rows ? N - n0 : rows;
        const float* xb = x + (size_t)n0 * D;
        ops_gemm(0, 1, nb, V, D, 1.0f, xb, D, W, D, 0.0f, scratch, V);   // logits [nb,V]
#pragma omp parallel for schedule(static) if (lanes == 1)
        for (int i = 0; i < nb; i++) loss[n0 + i] = xent_row_(scratch + (size_t)i * V, y[n0 + i], V, dx != NULL);
        if (!dx) continue;
        // scratch is now dΣCE/dlogits = p − onehot: dx = that·W, dW += thatᵀ·x
        ops_gemm(0, 0, nb, D, V, 1.0f, scratch, V, W, D, 0.0f, dx + (size_t)n0 * D, D);
        ops_gemm(1, 0, V, D, nb, 1.0f, scratch, V, xb, D, first ? 0.0f : 1.0f, dW, D);
        first = 0;
    }
    if (dx && first) memset(dW, 0, (size_t)V * D * sizeof(float));
}

double head_xent(const float* x, const float* W, const int32_t* y, int N, int D, int V, float* dx, float* dW,
                 float* scratch, int rows, int lanes, float* dW_lanes) {
    double* loss = mallocCheck((size_t)N * sizeof(double));
    if (!ops_gemm_in_parallel()) lanes = 1;   // lanes need single-threaded GEMMs inside a parallel loop
    if (lanes > 1) {
#pragma omp parallel for schedule(static, 1) num_threads(lanes)
        for (int l = 0; l < lanes; l++)
            head_lane_(x, W, y, N, D, V, dx, l ? dW_lanes + (size_t)(l - 1) * V * D : dW, scratch + (size_t)l * rows * V,
                       rows, l, lanes, loss);
        if (dx) {   // dW = lane 0's part + lane 1's + ... in lane order
            const size_t n = (size_t)V * D;
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n; i++)
                for (int l = 1; l < lanes; l++) dW[i] += dW_lanes[(size_t)(l - 1) * n + i];
        }
    } else {
        head_lane_(x, W, y, N, D, V, dx, dW, scratch, rows, 0, 1, loss);
    }
    double total = 0.0;
    for (int i = 0; i < N; i++) total += loss[i];   // token order, as crossentropy_forward
    free(loss);
    return total;
}
