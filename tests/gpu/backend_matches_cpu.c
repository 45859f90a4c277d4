/*
 * backend_matches_cpu.c — every op of the CUDA backend against the CPU backend (ops.c / optim.c,
 * which the unit and reference tests hold to PyTorch) on the same random inputs, with shapes that
 * divide nothing evenly: GEMMs in fp32 (≤ 1e-5 relative) and bf16 (≤ 2e-2), each kernel and each
 * composed op (linear layers with bias, the fused output head, the Engram layer, the MoE layer
 * with capacity drops, the Engram rows' expansion and reduction) (≤ 1e-5; 1e-4 for the Engram and
 * MoE backward), the Engram tables' gather, owner sums and lazy Adam,
 * and the NCCL collectives at whatever P it runs with (1 on a one-GPU machine). Errors are
 * normwise: max |gpu − cpu| / max |cpu|.
 *
 * Without a usable GPU it prints one line saying why (naming the CUDA error) and exits 77: ctest
 * counts it as skipped. Built in every build (ctest label gpu); --cpu-vs-cpu runs the harness with
 * the CPU backend on both sides (tests/mpi/cpu_backend_collectives.sh), --cpu-vs-guarded with the
 * guarded CPU backend (be->host = 0: the MoE plan and the rows cross as on a GPU) as the second
 * (tests/mpi/guarded_backend_equals_cpu.sh).
 */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "config.h"
#include "device.h"
#include "engram_layer.h"
#include "moe.h"
#include "rng.h"

#define SKIP 77
#define TOL32 1e-5
#define TOL16 2e-2

static int failures_ = 0;
static uint64_t seed_ = 1234, draw_ = 0;   // counter-based draws (rng.h)

/* ---- host ↔ device, one arena of buffers per backend ------------------------------------------- */

typedef struct { Backend* be; void* p[64]; int n; } Arena;

static void* up_(Arena* a, const void* host, size_t bytes) {
    void* d = a->be->alloc(a->be, bytes);
    if (host) a->be->to_device(a->be, d, host, bytes);
    a->p[a->n++] = d;
    return d;
}
static float* upf_(Arena* a, const float* host, size_t n) { return up_(a, host, n * sizeof(float)); }
static void down_(Arena* a, void* host, const void* dev, size_t bytes) { a->be->to_host(a->be, host, dev, bytes); }
static void arena_free_(Arena* a) {
    for (int i = 0; i < a->n; i++) a->be->free(a->be, a->p[i]);
    a->n = 0;
}

static float* randn_(size_t n, float std) {
    float* x = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(rng_normal(seed_, 0, draw_++) * std);
    return x;
}
static float* buf_(size_t n) { return mallocCheck((n ? n : 1) * sizeof(float)); }   // an output

/* Normwise relative error of got against ref; one line per comparison. */
static void check_(const char* what, const float* ref, const float* got, size_t n, double tol) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        num = d > num || isnan(d) ? d : num;
        den = fabs((double)ref[i]) > den ? fabs((double)ref[i]) : den;
    }
    double rel = den > 0 ? num / den : num;
    int ok = rel <= tol;   // false for NaN
    printf("%-34s max rel err %.2e (tol %.0e) %s\n", what, rel, tol, ok ? "ok" : "FAIL");
    failures_ += !ok;
}
static void check_scalar_(const char* what, double ref, double got, double tol) {
    double rel = fabs(got - ref) / (fabs(ref) > 0 ? fabs(ref) : 1.0);
    int ok = rel <= tol;
    printf("%-34s rel err %.2e (tol %.0e) %s\n", what, rel, tol, ok ? "ok" : "FAIL");
    failures_ += !ok;
}

/* The outputs of one case: fetched from each backend in the same order (side k = 0 cpu, 1 gpu),
 * then compared pairwise by compare_. */
typedef struct {
    const char* name[16];
    float* h[16][2];
    size_t n[16];
    double tol[16];
    int count[2];
} Outs;

static void fetch_(Outs* o, int k, Arena* a, const char* name, const float* dev, size_t n, double tol) {
    const int i = o->count[k]++;
    o->name[i] = name, o->n[i] = n, o->tol[i] = tol;
    o->h[i][k] = buf_(n);
    down_(a, o->h[i][k], dev, n * sizeof(float));
}
static void compare_(Outs* o) {
    for (int i = 0; i < o->count[0]; i++) {
        check_(o->name[i], o->h[i][0], o->h[i][1], o->n[i], o->tol[i]);
        free(o->h[i][0]), free(o->h[i][1]);
    }
}

/* ---- GEMM ----------------------------------------------------------------------------------------- */

/* C_i = alpha·op(A_i)·op(B_i) + beta·C_i over a strided batch, every transpose pair. */
static void gemm_case_(Backend* cpu, Backend* gpu, int precision) {
    const int M = 37, N = 53, K = 71, batch = 3, pad = 5;
    static char what[4][64];
    Outs o = {0};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            // leading dimensions with padding, batch strides past the padded matrices
            const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
            const long long sA = (long long)(ta ? K : M) * lda, sB = (long long)(tb ? N : K) * ldb, sC = (long long)M * ldc;
            float *A = randn_(sA * batch, 1.0f), *B = randn_(sB * batch, 1.0f), *C0 = randn_(sC * batch, 1.0f);
            Backend* be[2] = {cpu, gpu};
            snprintf(what[2 * ta + tb], 64, "gemm %s ta=%d tb=%d batch=%d", precision == BACKEND_BF16 ? "bf16" : "fp32",
                     ta, tb, batch);
            for (int k = 0; k < 2; k++) {
                Arena a = {.be = be[k]};
                float *dA = upf_(&a, A, sA * batch), *dB = upf_(&a, B, sB * batch), *dC = upf_(&a, C0, sC * batch);
                be[k]->gemm(be[k], ta, tb, M, N, K, 0.7f, dA, lda, sA, dB, ldb, sB, 0.3f, dC, ldc, sC, batch);
                fetch_(&o, k, &a, what[2 * ta + tb], dC, sC * batch, precision == BACKEND_BF16 ? TOL16 : TOL32);
                arena_free_(&a);
            }
            free(A), free(B), free(C0);
        }
    compare_(&o);
}

/* ---- kernels: each runs on both backends from the same host inputs --------------------------------- */

static void rmsnorm_case_(Backend* be[2]) {
    const int N = 37, D = 300;   // D > one block of threads
    float *x = randn_((size_t)N * D, 1.0f), *w = randn_(D, 1.0f), *dy = randn_((size_t)N * D, 1.0f);
    float *dx0 = randn_((size_t)N * D, 1.0f), *dw0 = randn_(D, 1.0f);   // backward accumulates into these
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dX = upf_(&a, x, (size_t)N * D), *dW = upf_(&a, w, D), *dDy = upf_(&a, dy, (size_t)N * D);
        float *dOut = upf_(&a, NULL, (size_t)N * D), *dR = upf_(&a, NULL, N);
        float *dDx = upf_(&a, dx0, (size_t)N * D), *dDw = upf_(&a, dw0, D);
        be[k]->rmsnorm_forward(be[k], dOut, dR, dX, dW, N, D, 1e-5f);
        be[k]->rmsnorm_backward(be[k], dDx, dDw, dDy, dX, dW, dR, N, D);
        fetch_(&o, k, &a, "rmsnorm_forward out", dOut, (size_t)N * D, TOL32);
        fetch_(&o, k, &a, "rmsnorm_forward rstd", dR, N, TOL32);
        fetch_(&o, k, &a, "rmsnorm_backward dx (+=)", dDx, (size_t)N * D, TOL32);
        fetch_(&o, k, &a, "rmsnorm_backward dw (+=)", dDw, D, TOL32);
        arena_free_(&a);
    }
    compare_(&o);
    free(x), free(w), free(dy), free(dx0), free(dw0);
}

/* A linear layer with bias, forward and backward (din, dW, dbias accumulate into random values). */
static void linear_case_(Backend* be[2]) {
    const int N = 37, Din = 71, Dout = 53;
    float *x = randn_((size_t)N * Din, 1.0f), *w = randn_((size_t)Dout * Din, 1.0f), *b = randn_(Dout, 1.0f);
    float *dy = randn_((size_t)N * Dout, 1.0f), *dx0 = randn_((size_t)N * Din, 1.0f);
    float *dw0 = randn_((size_t)Dout * Din, 1.0f), *db0 = randn_(Dout, 1.0f);
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dX = upf_(&a, x, (size_t)N * Din), *dW = upf_(&a, w, (size_t)Dout * Din), *dB = upf_(&a, b, Dout);
        float *dDy = upf_(&a, dy, (size_t)N * Dout), *dOut = upf_(&a, NULL, (size_t)N * Dout);
        float *dDx = upf_(&a, dx0, (size_t)N * Din), *dDw = upf_(&a, dw0, (size_t)Dout * Din), *dDb = upf_(&a, db0, Dout);
        be[k]->linear_forward(be[k], dOut, dX, dW, dB, N, Din, Dout);
        be[k]->linear_backward(be[k], dDx, dDw, dDb, dDy, dX, dW, N, Din, Dout);
        fetch_(&o, k, &a, "linear_forward (+ bias)", dOut, (size_t)N * Dout, TOL32);
        fetch_(&o, k, &a, "linear_backward din (+=)", dDx, (size_t)N * Din, TOL32);
        fetch_(&o, k, &a, "linear_backward dW (+=)", dDw, (size_t)Dout * Din, TOL32);
        fetch_(&o, k, &a, "linear_backward dbias (+=)", dDb, Dout, TOL32);
        arena_free_(&a);
    }
    compare_(&o);
    free(x), free(w), free(b), free(dy), free(dx0), free(dw0), free(db0);
}

/* The hyper-connection branch ops and the element-wise ones, chained as the model uses them. */
static void branches_case_(Backend* be[2]) {
    const int N = 41, G = 3, D = 300;
    const size_t nh = (size_t)N * G * D, nx = (size_t)N * D;
    float *h = randn_(nh, 1.0f), *x = randn_(nx, 1.0f);
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dH = upf_(&a, h, nh), *dX = upf_(&a, x, nx), *dM = upf_(&a, NULL, nx), *dS = upf_(&a, NULL, nx);
        float* dZ = upf_(&a, x, nx);
        be[k]->branches_mean(be[k], dM, dH, N, G, D);
        be[k]->branches_sum(be[k], dS, dH, N, G, D);
        be[k]->scale(be[k], dS, dS, 0.375f, nx);   // in place
        be[k]->add(be[k], dS, dX, nx);
        be[k]->branches_add(be[k], dH, dS, N, G, D);
        be[k]->zero(be[k], dZ, nx * sizeof(float));
        fetch_(&o, k, &a, "branches_mean", dM, nx, TOL32);
        fetch_(&o, k, &a, "branches_sum, scale, add", dS, nx, TOL32);
        fetch_(&o, k, &a, "branches_add", dH, nh, TOL32);
        fetch_(&o, k, &a, "zero", dZ, nx, 0.0);
        arena_free_(&a);
    }
    compare_(&o);
    free(h), free(x);
}

/* The fused output head: blocks of rows tokens (the last one short), loss only and with gradients. */
static void head_case_(Backend* be[2]) {
    const int N = 45, D = 40, V = 1003, rows = 16;
    float *x = randn_((size_t)N * D, 1.0f), *w = randn_((size_t)V * D, 0.5f);
    int32_t y[45];
    for (int n = 0; n < N; n++) y[n] = (int32_t)(rng_u64(seed_, 0, draw_++) % V);
    double loss[2][2];
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dX = upf_(&a, x, (size_t)N * D), *dW = upf_(&a, w, (size_t)V * D), *dS = upf_(&a, NULL, (size_t)rows * V);
        float *dDx = upf_(&a, NULL, (size_t)N * D), *dDw = upf_(&a, NULL, (size_t)V * D);
        int32_t* dY = up_(&a, y, sizeof y);
        loss[k][0] = be[k]->head_xent(be[k], dX, dW, dY, N, D, V, NULL, NULL, dS, rows, 1, NULL);
        loss[k][1] = be[k]->head_xent(be[k], dX, dW, dY, N, D, V, dDx, dDw, dS, rows, 1, NULL);
        fetch_(&o, k, &a, "head_xent dx", dDx, (size_t)N * D, TOL32);
        fetch_(&o, k, &a, "head_xent dW", dDw, (size_t)V * D, TOL32);
        arena_free_(&a);
    }
    check_scalar_("head_xent loss", loss[0][0], loss[1][0], TOL32);
    check_scalar_("head_xent loss (with gradients)", loss[0][1], loss[1][1], TOL32);
    compare_(&o);
    free(x), free(w);
}

/* RoPE forward then attention forward and backward, then the inverse RoPE of dqkv: the chain the
 * model runs, each stage compared. */
static void attention_case_(Backend* be[2]) {
    const int B = 2, T = 19, D = 96, nh = 3;
    const size_t nq = (size_t)B * T * 3 * D, no = (size_t)B * T * D, na = (size_t)B * nh * T * T;
    float *qkv = randn_(nq, 1.0f), *dy = randn_(no, 1.0f);
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dQ = upf_(&a, qkv, nq), *dDy = upf_(&a, dy, no), *dOut = upf_(&a, NULL, no);
        float *dAtt = upf_(&a, NULL, na), *dS = upf_(&a, NULL, na), *dDq = upf_(&a, NULL, nq);
        be[k]->rope_apply(be[k], dQ, B, T, D, nh, 10000.0f, 0);
        fetch_(&o, k, &a, "rope_apply", dQ, nq, TOL32);
        be[k]->attention_forward(be[k], dOut, dAtt, dQ, B, T, D, nh);
        be[k]->attention_backward(be[k], dDq, dDy, dQ, dAtt, dS, B, T, D, nh);
        be[k]->rope_apply(be[k], dDq, B, T, D, nh, 10000.0f, 1);
        fetch_(&o, k, &a, "attention_forward out", dOut, no, TOL32);
        fetch_(&o, k, &a, "attention_forward att", dAtt, na, TOL32);
        fetch_(&o, k, &a, "attention_backward + rope inverse", dDq, nq, TOL32);
        arena_free_(&a);
    }
    compare_(&o);
    free(qkv), free(dy);
}

static void swiglu_case_(Backend* be[2]) {
    const long n = 3001;
    float *h1 = randn_(n, 2.0f), *h3 = randn_(n, 1.0f), *dg = randn_(n, 1.0f);
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dH1 = upf_(&a, h1, n), *dH3 = upf_(&a, h3, n), *dDg = upf_(&a, dg, n);
        float *dG = upf_(&a, NULL, n), *dD1 = upf_(&a, NULL, n), *dD3 = upf_(&a, NULL, n);
        be[k]->swiglu_forward(be[k], dG, dH1, dH3, n);
        be[k]->swiglu_backward(be[k], dD1, dD3, dDg, dH1, dH3, n);
        fetch_(&o, k, &a, "swiglu_forward", dG, n, TOL32);
        fetch_(&o, k, &a, "swiglu_backward dh1", dD1, n, TOL32);
        fetch_(&o, k, &a, "swiglu_backward dh3", dD3, n, TOL32);
        arena_free_(&a);
    }
    compare_(&o);
    free(h1), free(h3), free(dg);
}

static void crossentropy_case_(Backend* be[2]) {
    const int N = 37, V = 1003;
    float* z = randn_((size_t)N * V, 3.0f);
    int32_t y[37];
    for (int n = 0; n < N; n++) y[n] = (int32_t)(rng_u64(seed_, 0, draw_++) % V);
    double loss[2];
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float* dZ = upf_(&a, z, (size_t)N * V);
        int32_t* dY = up_(&a, y, sizeof y);
        loss[k] = be[k]->crossentropy_forward(be[k], dZ, dY, N, V);
        be[k]->crossentropy_backward(be[k], dZ, dY, N, V, 0.25f);
        fetch_(&o, k, &a, "crossentropy_backward dlogits", dZ, (size_t)N * V, TOL32);
        arena_free_(&a);
    }
    check_scalar_("crossentropy_forward loss", loss[0], loss[1], TOL32);
    compare_(&o);
    free(z);
}

/* Ids from a small vocabulary so they repeat: the backward must add repeated rows up. */
static void embedding_case_(Backend* be[2]) {
    const int N = 41, G = 2, D = 300, V = 11;
    float *wte = randn_((size_t)V * D, 1.0f), *dh = randn_((size_t)N * G * D, 1.0f), *dw0 = randn_((size_t)V * D, 1.0f);
    int32_t x[41];
    for (int n = 0; n < N; n++) x[n] = (int32_t)(rng_u64(seed_, 0, draw_++) % V);
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dWte = upf_(&a, wte, (size_t)V * D), *dDh = upf_(&a, dh, (size_t)N * G * D);
        float *dH = upf_(&a, NULL, (size_t)N * G * D), *dDw = upf_(&a, dw0, (size_t)V * D);
        int32_t* dX = up_(&a, x, sizeof x);
        be[k]->embedding_forward(be[k], dH, dWte, dX, N, G, D);
        be[k]->embedding_backward(be[k], dDw, dDh, dX, N, G, D);
        fetch_(&o, k, &a, "embedding_forward", dH, (size_t)N * G * D, 0.0);   // a copy: exact
        fetch_(&o, k, &a, "embedding_backward (+=, repeats)", dDw, (size_t)V * D, TOL32);
        arena_free_(&a);
    }
    compare_(&o);
    free(wte), free(dh), free(dw0);
}

/* The Engram layer's forward and backward through each backend: its GEMMs and the token-wise ops
 * (gate, ShortConv, their backward with the chunked weight-gradient sums). N = 87 tokens (chunks of
 * 2), D = 300 > one block of threads. The backward's tolerance is 1e-4: the signed square root's
 * derivative 1/(2·sqrt|s|) magnifies the rounding differences of s near 0. */
static void engram_case_(Backend* be[2]) {
    const EngramDims d = {.B = 3, .T = 29, .G = 2, .D = 300, .Ein = 24, .K = 3, .dilation = 2, .qk_eps = 1e-6f,
                          .conv_eps = 1e-5f};
    const size_t N = (size_t)d.B * d.T, GD = (size_t)d.G * d.D, Ein = d.Ein, nacts = engram_acts_floats(&d);
    // flat weights in EngramWeights' order: wk, bk, wv, bv, norm_k, norm_q, norm_c, conv
    const size_t sz[8] = {GD * Ein, GD, (size_t)d.D * Ein, (size_t)d.D, GD, GD, GD, GD * d.K};
    size_t nw = 0;
    for (int i = 0; i < 8; i++) nw += sz[i];
    float *wts = randn_(nw, 0.2f), *g0 = randn_(nw, 0.1f);
    for (size_t i = sz[0] + sz[1] + sz[2] + sz[3], j = 0; j < 3 * GD; i++, j++) wts[i] += 1.0f;   // norms near 1
    float *e = randn_(N * Ein, 1.0f), *h = randn_(N * GD, 1.0f), *dout = randn_(N * GD, 1.0f);
    float* dh0 = randn_(N * GD, 1.0f);
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dWt = upf_(&a, wts, nw), *dG = upf_(&a, g0, nw), *dE = upf_(&a, e, N * Ein), *dH = upf_(&a, h, N * GD);
        float *dDo = upf_(&a, dout, N * GD), *dDh = upf_(&a, dh0, N * GD), *dOut = upf_(&a, NULL, N * GD);
        float *dActs = upf_(&a, NULL, nacts), *dDe = upf_(&a, NULL, N * Ein);
        float* pw[8], * pg[8];
        for (int i = 0, off = 0; i < 8; off += (int)sz[i], i++) pw[i] = dWt + off, pg[i] = dG + off;
        EngramWeights w = {pw[0], pw[1], pw[2], pw[3], pw[4], pw[5], pw[6], pw[7]};
        EngramWeights g = {pg[0], pg[1], pg[2], pg[3], pg[4], pg[5], pg[6], pg[7]};
        engram_layer_forward_on(be[k], &d, &w, dE, dH, dOut, dActs);
        engram_layer_backward_on(be[k], &d, &w, dE, dH, dActs, dDo, dDe, dDh, &g);
        fetch_(&o, k, &a, "engram forward out", dOut, N * GD, TOL32);
        fetch_(&o, k, &a, "engram forward acts", dActs, nacts, TOL32);
        fetch_(&o, k, &a, "engram backward de", dDe, N * Ein, 1e-4);
        fetch_(&o, k, &a, "engram backward dh (+=)", dDh, N * GD, 1e-4);
        fetch_(&o, k, &a, "engram backward weights (+=)", dG, nw, 1e-4);
        arena_free_(&a);
    }
    compare_(&o);
    free(wts), free(g0), free(e), free(h), free(dout), free(dh0);
}

/* The MoE layer's forward and backward through each backend (moe_forward_on / moe_backward_on): its
 * GEMMs (the shared experts' strided batches), the routing softmax, the plan from the probabilities
 * fetched to the host, gather, combine, routing backward, scatter-add. Capacity 1.0 drops some
 * assignments; D = 300 > one block of threads. Both sides take the CPU's statistics for the aux
 * gradient, and the plan is compared through the statistics (the same top-k on both). */
static void moe_case_(Backend* be[2]) {
    const MoeDims d = {.N = 87, .D = 300, .E = 6, .S = 2, .k = 2, .Fe = 40, .capacity_factor = 1.0};
    const size_t N = (size_t)d.N, D = (size_t)d.D, E = (size_t)d.E, S = (size_t)d.S, Fe = (size_t)d.Fe;
    const size_t nacts = moe_acts_floats(&d);
    // flat weights in MoeWeights' order: router, w1, w3, w2, shared_w1, shared_w3, shared_w2
    const size_t sz[7] = {E * D, E * Fe * D, E * Fe * D, E * D * Fe, S * Fe * D, S * Fe * D, S * D * Fe};
    size_t nw = 0;
    for (int i = 0; i < 7; i++) nw += sz[i];
    float *wts = randn_(nw, 0.1f), *g0 = randn_(nw, 0.1f), *f = randn_(N * D, 1.0f), *dout = randn_(N * D, 1.0f);
    float* df0 = randn_(N * D, 1.0f);
    double counts[2][6], psum[2][6];
    long kept[2];
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dW = upf_(&a, wts, nw), *dG = upf_(&a, g0, nw), *dF = upf_(&a, f, N * D), *dDo = upf_(&a, dout, N * D);
        float *dDf = upf_(&a, df0, N * D), *dOut = upf_(&a, NULL, N * D), *dActs = upf_(&a, NULL, nacts);
        float *pw[7], *pg[7];
        for (size_t i = 0, off = 0; i < 7; off += sz[i], i++) pw[i] = dW + off, pg[i] = dG + off;
        MoeWeights w = {pw[0], pw[1], pw[2], pw[3], pw[4], pw[5], pw[6]};
        MoeWeights g = {pg[0], pg[1], pg[2], pg[3], pg[4], pg[5], pg[6]};
        MoeStats st = {counts[k], psum[k], 0, 0};
        moe_forward_on(be[k], &d, &w, dF, dOut, dActs, &st, NULL);
        kept[k] = st.kept;
        moe_backward_on(be[k], &d, &w, dF, dActs, dDo, 0.1, counts[0], (double)d.N, dDf, &g, NULL);
        fetch_(&o, k, &a, "moe forward out", dOut, N * D, TOL32);
        fetch_(&o, k, &a, "moe forward acts", dActs, nacts, TOL32);
        fetch_(&o, k, &a, "moe backward df (+=)", dDf, N * D, 1e-4);
        fetch_(&o, k, &a, "moe backward weights (+=)", dG, nw, 1e-4);
        arena_free_(&a);
    }
    compare_(&o);
    int same = !memcmp(counts[0], counts[1], sizeof counts[0]) && kept[0] == kept[1] && kept[0] < d.N * d.k;
    printf("%-34s %s\n", "moe plan (counts, kept, drops)", same ? "equal ok" : "differ FAIL");
    failures_ += !same;
    float p0[6], p1[6];
    for (int i = 0; i < 6; i++) p0[i] = (float)psum[0][i], p1[i] = (float)psum[1][i];
    check_("moe psum", p0, p1, E, TOL32);
    free(wts), free(g0), free(f), free(dout), free(df0);
}

/* The Engram rows of one step: 40 unique rows at shuffled positions expanded to 211 lookups, and the
 * lookups' gradients summed back per unique row (ids repeat: the sums are the point). */
static void rows_case_(Backend* be[2]) {
    const int Dh = 24, nu = 40;
    const size_t total = 211;
    int64_t inv[211], pos[40];
    for (size_t i = 0; i < total; i++) inv[i] = (int64_t)((i * 13 + i / 7) % nu);
    for (int u = 0; u < nu; u++) pos[u] = (u * 17 + 5) % nu;   // a permutation: 17 is prime to 40
    float *rows = randn_((size_t)nu * Dh, 1.0f), *de = randn_(total * Dh, 1.0f);
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dRows = upf_(&a, rows, (size_t)nu * Dh), *dDe = upf_(&a, de, total * Dh);
        float *dOut = upf_(&a, NULL, total * Dh), *dG = upf_(&a, NULL, (size_t)nu * Dh);
        float* dG2 = upf_(&a, NULL, (size_t)nu * Dh);
        int64_t *dInv = up_(&a, inv, sizeof inv), *dPos = up_(&a, pos, sizeof pos);
        be[k]->rows_expand(be[k], dOut, dRows, dInv, dPos, total, Dh);
        be[k]->rows_reduce(be[k], dG, dDe, dInv, dPos, total, nu, Dh);
        be[k]->rows_reduce(be[k], dG2, dDe, dInv, NULL, total, nu, Dh);
        fetch_(&o, k, &a, "rows_expand", dOut, total * Dh, 0.0);   // a copy: exact
        fetch_(&o, k, &a, "rows_reduce (positions)", dG, (size_t)nu * Dh, TOL32);
        fetch_(&o, k, &a, "rows_reduce (no positions)", dG2, (size_t)nu * Dh, TOL32);
        arena_free_(&a);
    }
    compare_(&o);
    free(rows), free(de);
}

/* Three AdamW steps with decay and a clip scale, then Σg². */
static void optim_case_(Backend* be[2]) {
    const size_t n = 100003;
    float *p = randn_(n, 1.0f), *g = randn_(n, 1.0f), *m = randn_(n, 0.1f), *v = buf_(n);
    for (size_t i = 0; i < n; i++) v[i] = m[i] * m[i];   // second moments are ≥ 0
    double ss[2];
    Outs o = {0};
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dP = upf_(&a, p, n), *dG = upf_(&a, g, n), *dM = upf_(&a, m, n), *dV = upf_(&a, v, n);
        for (int t = 1; t <= 3; t++) {
            AdamStep s = {.lr = 1e-2, .wd = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .grad_scale = 0.5, .t = t};
            be[k]->adam(be[k], dP, dG, dM, dV, n, &s);
        }
        ss[k] = be[k]->sumsq(be[k], dP, n);
        fetch_(&o, k, &a, "adam p (3 steps)", dP, n, TOL32);
        fetch_(&o, k, &a, "adam m", dM, n, TOL32);
        fetch_(&o, k, &a, "adam v", dV, n, TOL32);
        arena_free_(&a);
    }
    compare_(&o);
    check_scalar_("sumsq", ss[0], ss[1], TOL32);
    free(p), free(g), free(m), free(v);
}

/* The Engram tables on a backend, two layers held as a rank holds them (layer 0 from row 7 on):
 * the owners' gather of scattered keys, the sums of gradient contributions (a self range in the
 * middle, rows numbered by first contribution), and two steps of the lazy Adam over both layers. */
static void tables_case_(Backend* be[2]) {
    enum { L = 2, Dh = 24, NG = 61, NR = 40, NOWN = 13, NA = 17 };
    const int64_t rows[L] = {60, 23}, first[L] = {7, 0}, local[L] = {50, 23};
    const int64_t self_lo = 10, self_hi = 22;
    float *tab[L], *tm[L], *tv[L];
    int64_t upd0[L][50] = {{0}}, upd[2][L][50], gkeys[NG], akeys[NA], own_inv[NR];
    for (int l = 0; l < L; l++) {
        size_t n = (size_t)local[l] * Dh;
        tab[l] = randn_(n, 1.0f), tm[l] = randn_(n, 0.1f), tv[l] = buf_(n);
        for (size_t i = 0; i < n; i++) tv[l][i] = tm[l][i] * tm[l][i];
        for (int r = 0; r < local[l]; r++) upd0[l][r] = r % 3;
    }
    for (int i = 0; i < NG; i++) {   // scattered, repeated, both layers
        int l = i % 3 == 0;
        gkeys[i] = ROWKEY(l, first[l] + (i * 37 + 11) % local[l]);
    }
    for (int i = 0; i < NA; i++)   // distinct: 7 is prime to 50, 5 to 23
        akeys[i] = i < 10 ? ROWKEY(0, first[0] + (i * 7 + 3) % local[0]) : ROWKEY(1, ((i - 10) * 5 + 1) % local[1]);
    for (int64_t i = 0, fresh = 0; i < NR; i++)   // a new row every third contribution, else an earlier one
        own_inv[i] = fresh < NOWN && (i % 3 == 0 || fresh == 0) ? fresh++ : (i * 5) % fresh;
    float *recv = randn_((size_t)NR * Dh, 1.0f), *self = randn_((size_t)(self_hi - self_lo) * Dh, 1.0f);
    float* ag = randn_((size_t)NA * Dh, 1.0f);
    Outs o = {0};
    static char what[L][3][40];
    for (int k = 0; k < 2; k++) {
        Arena a = {.be = be[k]};
        float *dT[L], *dM[L], *dV[L];
        int64_t* dU[L];
        int64_t n_rows[L];
        memcpy(n_rows, rows, sizeof n_rows);
        for (int l = 0; l < L; l++) {
            size_t n = (size_t)local[l] * Dh;
            dT[l] = upf_(&a, tab[l], n), dM[l] = upf_(&a, tm[l], n), dV[l] = upf_(&a, tv[l], n);
            dU[l] = up_(&a, upd0[l], (size_t)local[l] * sizeof(int64_t));
        }
        EngramTables t = {.be = be[k], .n_layers = L, .Dh = Dh, .rows = n_rows, .first = (int64_t*)first,
                          .local = (int64_t*)local, .table = dT, .m = dM, .v = dV, .updates = dU};
        float* dOut = upf_(&a, NULL, (size_t)NG * Dh);
        be[k]->tables_gather(be[k], &t, up_(&a, gkeys, sizeof gkeys), NG, dOut);
        fetch_(&o, k, &a, "tables_gather", dOut, (size_t)NG * Dh, 0.0);
        float* dOwn = upf_(&a, NULL, (size_t)NOWN * Dh);
        be[k]->rows_sum_owned(be[k], dOwn, upf_(&a, recv, (size_t)NR * Dh),
                              upf_(&a, self, (size_t)(self_hi - self_lo) * Dh), self_lo, self_hi,
                              up_(&a, own_inv, sizeof own_inv), NR, Dh);
        fetch_(&o, k, &a, "rows_sum_owned", dOwn, (size_t)NOWN * Dh, TOL32);
        const int64_t* dK = up_(&a, akeys, sizeof akeys);
        const float* dG = upf_(&a, ag, (size_t)NA * Dh);
        for (int step = 1; step <= 2; step++) {
            AdamStep s = {.lr = 5e-2, .wd = 0.0, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .grad_scale = 0.7, .t = step};
            be[k]->rows_adam(be[k], &t, dK, NA, dG, &s);
        }
        for (int l = 0; l < L; l++) {
            size_t n = (size_t)local[l] * Dh;
            snprintf(what[l][0], 40, "rows_adam table %d (2 steps)", l);
            snprintf(what[l][1], 40, "rows_adam m %d", l);
            snprintf(what[l][2], 40, "rows_adam v %d", l);
            fetch_(&o, k, &a, what[l][0], dT[l], n, TOL32);
            fetch_(&o, k, &a, what[l][1], dM[l], n, TOL32);
            fetch_(&o, k, &a, what[l][2], dV[l], n, TOL32);
            down_(&a, upd[k][l], dU[l], (size_t)local[l] * sizeof(int64_t));
        }
        arena_free_(&a);
    }
    compare_(&o);
    int same = 1;
    for (int l = 0; l < L; l++) same &= !memcmp(upd[0][l], upd[1][l], (size_t)local[l] * sizeof(int64_t));
    printf("%-34s %s\n", "rows_adam update counts", same ? "equal ok" : "differ FAIL");
    failures_ += !same;
    for (int l = 0; l < L; l++) free(tab[l]), free(tm[l]), free(tv[l]);
    free(recv), free(self), free(ag);
}

/* ---- collectives: expected values from a formula, at any P --------------------------------------- */

static void collectives_case_(Backend* gpu) {
    const int P = gpu->size, r = gpu->rank;
    const size_t n = 1001;
    float* buf = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) buf[i] = (float)(r + 1) * (float)(i % 7);
    Arena a = {.be = gpu};
    float* d = upf_(&a, buf, n);
    gpu->allreduce_sum(gpu, d, n);
    down_(&a, buf, d, n * 4);
    float* want = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) want[i] = (float)(P * (P + 1) / 2) * (float)(i % 7);   // Σ_r (r+1)·(i mod 7)
    char what[64];
    snprintf(what, sizeof what, "%s allreduce_sum (P=%d)", gpu->name, P);
    check_(what, want, buf, n, 0.0);
    // rank s sends (s + q) % 3 + 1 floats of value 1000·s + q + j/8 to rank q (zero-count pairs too)
    size_t *sc = calloc(P, sizeof(size_t)), *sd = calloc(P, sizeof(size_t));
    size_t *rc = calloc(P, sizeof(size_t)), *rd = calloc(P, sizeof(size_t));
    size_t st = 0, rt = 0;
    for (int q = 0; q < P; q++) {
        sc[q] = (size_t)((r + q) % 3) * sizeof(float), sd[q] = st, st += sc[q];
        rc[q] = (size_t)((q + r) % 3) * sizeof(float), rd[q] = rt, rt += rc[q];
    }
    float *snd = mallocCheck(st + 4), *exp = mallocCheck(rt + 4), *got = mallocCheck(rt + 4);
    for (int q = 0; q < P; q++) {
        for (size_t j = 0; j < sc[q] / 4; j++) snd[sd[q] / 4 + j] = 1000.0f * r + q + j / 8.0f;
        for (size_t j = 0; j < rc[q] / 4; j++) exp[rd[q] / 4 + j] = 1000.0f * q + r + j / 8.0f;
    }
    void *dS = up_(&a, snd, st + 4), *dR = up_(&a, NULL, rt + 4);
    gpu->alltoallv(gpu, dS, sc, sd, dR, rc, rd);
    down_(&a, got, dR, rt);
    snprintf(what, sizeof what, "%s alltoallv (P=%d)", gpu->name, P);
    check_(what, exp, got, rt / 4, 0.0);
    arena_free_(&a);
    free(buf), free(want), free(sc), free(sd), free(rc), free(rd), free(snd), free(exp), free(got);
    if (gpu->group && strcmp(gpu->name, "group") != 0) {   // the same over groups of two consecutive ranks
        Backend* g = gpu->group(gpu, r / 2, r);
        g->name = "group";
        collectives_case_(g);
        g->close(g);
        free(g);
    }
}

/* --cpu-vs-cpu runs the whole harness with the CPU backend on both sides: every op comparison is then
 * exact by construction (it shows the harness runs), while the collectives still meet values from
 * their formula — tests/mpi/cpu_backend_collectives.sh runs it so at P = 1..4 for the MPI ones. */
int main(int argc, char** argv) {
    char err[512];
    const int guarded = argc > 1 && !strcmp(argv[1], "--cpu-vs-guarded");
    const int self = guarded || (argc > 1 && !strcmp(argv[1], "--cpu-vs-cpu"));
    if (!self && device_probe(DEVICE_CUDA, err, sizeof err) != 0) {
        printf("gpu.backend_matches_cpu skipped: %s\n", err);
        return SKIP;
    }
    MPI_Init(&argc, &argv);
    Backend cpu, gpu, gpu16;
    if (device_open(&cpu, DEVICE_CPU, BACKEND_FP32, MPI_COMM_WORLD, err, sizeof err) != 0 ||
        device_open(&gpu, self ? DEVICE_CPU : DEVICE_CUDA, BACKEND_FP32, MPI_COMM_WORLD, err, sizeof err) != 0) {
        printf("gpu.backend_matches_cpu skipped: %s\n", err);
        MPI_Finalize();
        return SKIP;
    }
    if (guarded) backend_guard_wrap(&gpu);
    gpu16 = gpu;
    gpu16.precision = BACKEND_BF16;   // same handles, bf16 GEMMs
    seed_ += (uint64_t)gpu.rank;
    Backend* be[2] = {&cpu, &gpu};
    gemm_case_(&cpu, &gpu, BACKEND_FP32);
    gemm_case_(&cpu, &gpu16, BACKEND_BF16);
    linear_case_(be);
    branches_case_(be);
    rmsnorm_case_(be);
    attention_case_(be);
    swiglu_case_(be);
    crossentropy_case_(be);
    head_case_(be);
    embedding_case_(be);
    engram_case_(be);
    moe_case_(be);
    rows_case_(be);
    optim_case_(be);
    tables_case_(be);
    collectives_case_(&gpu);
    printf("rank %d of %d: %s\n", gpu.rank, gpu.size, failures_ ? "FAILED" : "all ops match the CPU backend");
    gpu.close(&gpu);
    cpu.close(&cpu);
    MPI_Finalize();
    return failures_ ? 1 : 0;
}
