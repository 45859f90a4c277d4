/*
 * test_engram_layer.c — src/engram_layer against an independent reference: the float64 vector
 * tests/data/forward_tiny.json (both eps sets, within the tolerance the file states), and a plain
 * double-precision re-implementation of docs/model.md "Engram" written here, whose central
 * differences check every gradient of the hand-written backward (de, dh and all eight weights).
 * Also: G = 1 and sequences shorter than the conv's reach, batch rows that never mix, the score-0
 * corner (α = 1/2, no gradient through the gate), and bit-identical results across calls and
 * thread counts.
 *
 * Why a double reference for the finite differences: central differences of the fp32 layer are
 * noisy at any step; differences of a double forward with step 1e-5 are exact to ~1e-9, so the
 * comparison measures only the fp32 backward's own rounding.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "common.h"
#include "engram_layer.h"
#include "ops.h"

/* ---- one case: dims, float tensors, and the same values in double ---------------------------- */

// The tensors of a case in one order: the inputs, then the weights as in EngramWeights.
enum { E_, H_, WK_, BK_, WV_, BV_, NK_, NQ_, NC_, CONV_, NT_ };
static const char* const NAMES_[NT_] = {"e", "h", "wk", "bk", "wv", "bv", "norm_k", "norm_q", "norm_c", "conv"};

typedef struct {
    EngramDims d;
    size_t len[NT_];
    float* f[NT_];    // [len[i]]
    double* x[NT_];   // the same values, for the reference
    float* R;         // [B,T,G,D] loss weights: loss = Σ out ⊙ R
} Case;

static void case_lengths_(Case* c) {
    const EngramDims* d = &c->d;
    size_t N = (size_t)d->B * d->T, GD = (size_t)d->G * d->D;
    size_t len[NT_] = {N * d->Ein, N * GD, GD * d->Ein, GD, (size_t)d->D * d->Ein, (size_t)d->D,
                       GD, GD, GD, GD * d->K};
    memcpy(c->len, len, sizeof len);
}

static uint64_t rng_state_;
static float urand_(float lo, float hi) {   // xorshift64*, 24 random bits
    rng_state_ ^= rng_state_ >> 12, rng_state_ ^= rng_state_ << 25, rng_state_ ^= rng_state_ >> 27;
    uint32_t r = (uint32_t)((rng_state_ * 0x2545F4914F6CDD1DULL) >> 40);
    return lo + (hi - lo) * ((float)r / 16777216.0f);
}

static void case_alloc_(Case* c, const EngramDims* d) {
    c->d = *d;
    case_lengths_(c);
    for (int i = 0; i < NT_; i++) {
        c->f[i] = calloc(c->len[i], sizeof(float));
        c->x[i] = calloc(c->len[i], sizeof(double));
        assert_true(c->f[i] && c->x[i]);
    }
    c->R = calloc(c->len[H_] ? c->len[H_] : 1, sizeof(float));
    assert_non_null(c->R);
}

static void case_sync_double_(Case* c) {
    for (int i = 0; i < NT_; i++)
        for (size_t k = 0; k < c->len[i]; k++) c->x[i][k] = c->f[i][k];
}

/* Random values of the sizes a trained layer sees: norm weights 1 ± 0.1, a non-zero conv. */
static void case_random_(Case* c, const EngramDims* d, uint64_t seed) {
    static const float range[NT_][2] = {{-1, 1}, {-1, 1}, {-0.5f, 0.5f}, {-0.2f, 0.2f}, {-0.5f, 0.5f},
                                        {-0.2f, 0.2f}, {0.9f, 1.1f}, {0.9f, 1.1f}, {0.9f, 1.1f}, {-0.5f, 0.5f}};
    case_alloc_(c, d);
    rng_state_ = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (int i = 0; i < NT_; i++)
        for (size_t k = 0; k < c->len[i]; k++) c->f[i][k] = urand_(range[i][0], range[i][1]);
    for (size_t k = 0; k < c->len[H_]; k++) c->R[k] = urand_(-1, 1);
    case_sync_double_(c);
}

static void case_free_(Case* c) {
    for (int i = 0; i < NT_; i++) free(c->f[i]), free(c->x[i]);
    free(c->R);
}

static EngramWeights weights_of_(float* const* t) {
    return (EngramWeights){.wk = t[WK_], .bk = t[BK_], .wv = t[WV_], .bv = t[BV_], .norm_k = t[NK_],
                           .norm_q = t[NQ_], .norm_c = t[NC_], .conv = t[CONV_]};
}

/* ---- the double reference, straight from docs/model.md ------------------------------------- */

static double rms_inv_ref_(const double* x, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    return 1.0 / sqrt(ss / n + eps);
}

/* Gates of token (b,t) into u [G,D] and z [G,D]; returns the smallest |s| seen. */
static double ref_token_(const EngramDims* d, double* const* x, size_t n, double* u, double* z) {
    const int G = d->G, D = d->D, Ein = d->Ein;
    const double* e = x[E_] + n * Ein;
    double v[D], k[D], q[D], smin = INFINITY;
    for (int o = 0; o < D; o++) {
        v[o] = x[BV_][o];
        for (int i = 0; i < Ein; i++) v[o] += e[i] * x[WV_][o * Ein + i];
    }
    for (int g = 0; g < G; g++) {
        for (int o = 0; o < D; o++) {
            k[o] = x[BK_][g * D + o];
            for (int i = 0; i < Ein; i++) k[o] += e[i] * x[WK_][(g * D + o) * Ein + i];
            q[o] = x[H_][(n * G + g) * D + o];
        }
        double rk = rms_inv_ref_(k, D, d->qk_eps), rq = rms_inv_ref_(q, D, d->qk_eps), s = 0;
        for (int o = 0; o < D; o++) s += k[o] * rk * x[NK_][g * D + o] * q[o] * rq * x[NQ_][g * D + o];
        s /= sqrt((double)D);
        smin = fmin(smin, fabs(s));
        double sp = s > 0 ? sqrt(fmax(s, 1e-6)) : (s < 0 ? -sqrt(fmax(-s, 1e-6)) : 0.0);   // sign(0) = 0
        double al = 1.0 / (1.0 + exp(-sp));
        for (int o = 0; o < D; o++) u[g * D + o] = al * v[o];
        double rc = rms_inv_ref_(u + g * D, D, d->conv_eps);
        for (int o = 0; o < D; o++) z[g * D + o] = u[g * D + o] * rc * x[NC_][g * D + o];
    }
    return smin;
}

/* out [B,T,G,D] in double; returns the smallest |s| (to stay away from the 1e-6 kink). */
static double ref_forward_(const EngramDims* d, double* const* x, double* out) {
    const size_t N = (size_t)d->B * d->T, GD = (size_t)d->G * d->D;
    double *u = malloc(N * GD * sizeof(double)), *z = malloc(N * GD * sizeof(double)), smin = INFINITY;
    assert_true(u && z);
    for (size_t n = 0; n < N; n++) smin = fmin(smin, ref_token_(d, x, n, u + n * GD, z + n * GD));
    for (int b = 0; b < d->B; b++)
        for (int t = 0; t < d->T; t++)
            for (size_t c = 0; c < GD; c++) {
                double y = 0;
                for (int j = 0; j < d->K; j++) {
                    int tt = t - (d->K - 1 - j) * d->dilation;
                    if (tt >= 0) y += x[CONV_][c * d->K + j] * z[((size_t)b * d->T + tt) * GD + c];
                }
                size_t i = ((size_t)b * d->T + t) * GD + c;
                out[i] = u[i] + y / (1.0 + exp(-y));
            }
    free(u);
    free(z);
    return smin;
}

static double ref_loss_(const Case* c, double* out) {
    ref_forward_(&c->d, c->x, out);
    double L = 0;
    for (size_t i = 0; i < c->len[H_]; i++) L += out[i] * c->R[i];
    return L;
}

/* ---- running the layer ------------------------------------------------------------------------ */

typedef struct {
    float *out, *acts, *de, *dh;
    float* g[NT_];   // gradients of the weights, [WK_..CONV_]; g[E_], g[H_] alias de, dh
} Run;

static void run_alloc_(Run* r, const Case* c) {
    r->out = calloc(c->len[H_], sizeof(float));
    r->acts = calloc(engram_acts_floats(&c->d), sizeof(float));
    for (int i = 0; i < NT_; i++) r->g[i] = calloc(c->len[i], sizeof(float));
    r->de = r->g[E_], r->dh = r->g[H_];
    assert_true(r->out && r->acts);
    for (int i = 0; i < NT_; i++) assert_non_null(r->g[i]);
}

static void run_free_(Run* r) {
    free(r->out);
    free(r->acts);
    for (int i = 0; i < NT_; i++) free(r->g[i]);
}

/* Forward, then backward with dout = R into zeroed gradients. */
static void run_layer_(const Case* c, Run* r) {
    EngramWeights w = weights_of_((float* const*)c->f), g = weights_of_(r->g);
    engram_layer_forward(&c->d, &w, c->f[E_], c->f[H_], r->out, r->acts);
    for (int i = 0; i < NT_; i++) memset(r->g[i], 0, c->len[i] * sizeof(float));
    engram_layer_backward(&c->d, &w, c->f[E_], c->f[H_], r->acts, c->R, r->de, r->dh, &g);
}

/* ---- forward_tiny.json ----------------------------------------------------------------------- */

static cJSON* json_load_(const char* name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", ENGRAM_TEST_DATA, name);
    size_t n;
    char* s = engram_read_file(path, &n);
    if (!s) fail_msg("cannot open %s", path);
    cJSON* root = cJSON_Parse(s);
    free(s);
    if (!root) fail_msg("%s: JSON parse error near: %.40s", name, cJSON_GetErrorPtr());
    return root;
}

// Nested number arrays, flattened row-major into out; returns the count.
static size_t json_flatten_(const cJSON* a, double* out, size_t at) {
    if (cJSON_IsNumber(a)) {
        out[at] = a->valuedouble;
        return at + 1;
    }
    assert_true(cJSON_IsArray(a));
    const cJSON* it;
    cJSON_ArrayForEach(it, a) at = json_flatten_(it, out, at);
    return at;
}

static const cJSON* json_at_(const cJSON* root, const char* sect, const char* key) {
    const cJSON* s = cJSON_GetObjectItemCaseSensitive(root, sect);
    const cJSON* v = s ? cJSON_GetObjectItemCaseSensitive(s, key) : NULL;
    if (!v) fail_msg("forward_tiny.json: no %s.%s", sect, key);
    return v;
}

static int json_int_(const cJSON* root, const char* key) { return json_at_(root, "shapes", key)->valueint; }

static void json_tensor_(const cJSON* root, const char* sect, const char* key, double* out, size_t n) {
    assert_int_equal(json_flatten_(json_at_(root, sect, key), out, 0), n);
}

/* The file's dims, params and inputs into a Case (eps left for the caller). */
static void tiny_case_(const cJSON* root, Case* c) {
    EngramDims d = {.B = json_int_(root, "B"), .T = json_int_(root, "S"), .G = json_int_(root, "G_hc_mult"),
                    .D = json_int_(root, "D_hidden"), .Ein = json_int_(root, "engram_hidden_size"),
                    .K = json_int_(root, "kernel_size"), .dilation = json_int_(root, "dilation")};
    assert_int_equal(d.Ein, json_int_(root, "H_total") * json_int_(root, "D_head"));
    case_alloc_(c, &d);
    static const char* const key[NT_] = {"emb", "hidden", "Wk", "bk", "Wv", "bv",
                                         "wk_norm", "wq_norm", "wc_norm", "conv"};
    for (int i = 0; i < NT_; i++) {
        json_tensor_(root, i <= H_ ? "inputs" : "params", key[i], c->x[i], c->len[i]);
        for (size_t k = 0; k < c->len[i]; k++) c->f[i][k] = (float)c->x[i][k];
    }
}

/* Largest |got − want| and whether every element is within atol + rtol·|want|. */
static double max_err_(const float* got, const double* want, size_t n, double rtol, double atol, int* ok) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs(got[i] - want[i]);
        m = fmax(m, err);
        if (err > atol + rtol * fabs(want[i])) *ok = 0;
    }
    return m;
}

static void tiny_check_set_(const cJSON* root, const char* set, float qk_eps, float conv_eps) {
    Case c;
    tiny_case_(root, &c);
    c.d.qk_eps = qk_eps, c.d.conv_eps = conv_eps;
    const double rtol = json_at_(root, "suggested_tolerance_fp32", "rtol")->valuedouble;
    const double atol = json_at_(root, "suggested_tolerance_fp32", "atol")->valuedouble;
    const size_t N = (size_t)c.d.B * c.d.T, NG = N * c.d.G;
    double* want = malloc(c.len[H_] * sizeof(double));
    float* out = malloc(c.len[H_] * sizeof(float));
    float* acts = malloc(engram_acts_floats(&c.d) * sizeof(float));
    assert_true(want && out && acts);
    EngramWeights w = weights_of_(c.f);
    engram_layer_forward(&c.d, &w, c.f[E_], c.f[H_], out, acts);
    int ok = 1;
    json_tensor_(root, set, "engram_out", want, c.len[H_]);
    double eo = max_err_(out, want, c.len[H_], rtol, atol, &ok);
    // the gates, read at their documented place in acts: alpha is the last [N,G] block
    json_tensor_(root, set, "gates", want, NG);
    double ea = max_err_(acts + engram_acts_floats(&c.d) - NG, want, NG, rtol, atol, &ok);
    print_message("forward_tiny %s: engram_out max abs err %.3g, gates %.3g (rtol %g, atol %g)\n", set, eo,
                  ea, rtol, atol);
    assert_true(ok);
    free(want), free(out), free(acts);
    case_free_(&c);
}

static void forward_equals_forward_tiny_in_both_eps_sets(void** state) {
    (void)state;
    cJSON* root = json_load_("forward_tiny.json");
    float ref_qk = (float)json_at_(root, "eps", "reference_q_k_norm")->valuedouble;
    float ref_conv = (float)json_at_(root, "eps", "reference_shortconv_norm")->valuedouble;
    float mt = (float)json_at_(root, "eps", "maxtext_all_norms")->valuedouble;
    tiny_check_set_(root, "outputs_reference_eps", ref_qk, ref_conv);
    tiny_check_set_(root, "outputs_maxtext_eps", mt, mt);
    cJSON_Delete(root);
}

/* ---- gradients against central differences of the double reference --------------------------- */

#define FD_STEP_ 1e-5
#define FD_TOL_ 1e-4   // ‖analytic − numeric‖ / ‖numeric‖ per tensor

/* Central differences of the double loss for every element of every tensor, compared tensor by
 * tensor with the layer's gradients. */
static void fd_check_(const EngramDims* d, uint64_t seed) {
    Case c;
    case_random_(&c, d, seed);
    double* out = malloc(c.len[H_] * sizeof(double));
    assert_non_null(out);
    double smin = ref_forward_(&c.d, c.x, out);
    assert_true(smin > 1e-3);   // every score far from the 1e-6 kink of the signed square root
    Run r;
    run_alloc_(&r, &c);
    run_layer_(&c, &r);
    double fwd_err = 0;
    for (size_t i = 0; i < c.len[H_]; i++) fwd_err = fmax(fwd_err, fabs(r.out[i] - out[i]));
    print_message("B=%d T=%d G=%d D=%d Ein=%d K=%d dil=%d: forward max abs err %.3g, min |s| %.3g\n", d->B,
                  d->T, d->G, d->D, d->Ein, d->K, d->dilation, fwd_err, smin);
    assert_true(fwd_err < 1e-5);
    int ok = 1;
    for (int i = 0; i < NT_; i++) {
        double num2 = 0, diff2 = 0, emax = 0;
        for (size_t k = 0; k < c.len[i]; k++) {
            double x0 = c.x[i][k];
            c.x[i][k] = x0 + FD_STEP_;
            double lp = ref_loss_(&c, out);
            c.x[i][k] = x0 - FD_STEP_;
            double lm = ref_loss_(&c, out);
            c.x[i][k] = x0;
            double n = (lp - lm) / (2 * FD_STEP_), a = r.g[i][k];
            num2 += n * n, diff2 += (a - n) * (a - n);
            emax = fmax(emax, fabs(a - n) / fmax(1.0, fabs(n)));
        }
        double rel = sqrt(diff2) / fmax(sqrt(num2), 1e-30);
        print_message("  d%-7s |g| %.3e  rel err %.3e  max elem err %.3e\n", NAMES_[i], sqrt(num2), rel, emax);
        if (!(rel < FD_TOL_)) ok = 0;
    }
    assert_true(ok);
    free(out);
    run_free_(&r);
    case_free_(&c);
}

static void backward_equals_central_differences(void** state) {
    (void)state;
    EngramDims d = {.B = 2, .T = 11, .G = 2, .D = 6, .Ein = 8, .K = 4, .dilation = 3, .qk_eps = 1e-5f,
                    .conv_eps = 1e-5f};
    fd_check_(&d, 1);
    d.qk_eps = 1.1920928955078125e-07f;   // the reference's tiny qk eps
    fd_check_(&d, 2);
}

static void one_branch_and_sequences_shorter_than_the_conv_reach_work(void** state) {
    (void)state;
    EngramDims d = {.B = 2, .T = 11, .G = 1, .D = 6, .Ein = 8, .K = 4, .dilation = 3, .qk_eps = 1e-5f,
                    .conv_eps = 1e-5f};
    fd_check_(&d, 3);
    d.T = 5;   // < (K−1)·dilation = 9: the earliest taps never reach inside the sequence
    d.G = 2;
    fd_check_(&d, 4);
    d.G = 1, d.T = 1, d.B = 3;
    fd_check_(&d, 5);
}

/* ---- properties ------------------------------------------------------------------------------ */

/* Row b of a batch gives the same out as that row alone: the conv never reaches across rows. */
static void batch_rows_never_mix(void** state) {
    (void)state;
    EngramDims d = {.B = 3, .T = 13, .G = 2, .D = 5, .Ein = 7, .K = 4, .dilation = 2, .qk_eps = 1e-5f,
                    .conv_eps = 1e-5f};
    Case c;
    case_random_(&c, &d, 6);
    EngramWeights w = weights_of_(c.f);
    const size_t rowH = (size_t)d.T * d.G * d.D, rowE = (size_t)d.T * d.Ein;
    float* out = malloc(c.len[H_] * sizeof(float));
    float* acts = malloc(engram_acts_floats(&d) * sizeof(float));
    assert_true(out && acts);
    engram_layer_forward(&d, &w, c.f[E_], c.f[H_], out, acts);
    EngramDims d1 = d;
    d1.B = 1;
    float* out1 = malloc(rowH * sizeof(float));
    float* acts1 = malloc(engram_acts_floats(&d1) * sizeof(float));
    assert_true(out1 && acts1);
    for (int b = 0; b < d.B; b++) {
        engram_layer_forward(&d1, &w, c.f[E_] + b * rowE, c.f[H_] + b * rowH, out1, acts1);
        for (size_t i = 0; i < rowH; i++) assert_float_equal(out1[i], out[b * rowH + i], 1e-6);
    }
    free(out), free(acts), free(out1), free(acts1);
    case_free_(&c);
}

/* h = 0 makes every q and every score 0: α = sigmoid(0) = 1/2, and sign(0) = 0 with the floor's zero
 * derivative stops every gradient that would pass through the score. */
static void zero_score_gates_one_half_and_stops_gate_gradients(void** state) {
    (void)state;
    EngramDims d = {.B = 1, .T = 7, .G = 2, .D = 4, .Ein = 6, .K = 3, .dilation = 2, .qk_eps = 1e-5f,
                    .conv_eps = 1e-5f};
    Case c;
    case_random_(&c, &d, 7);
    memset(c.f[H_], 0, c.len[H_] * sizeof(float));
    Run r;
    run_alloc_(&r, &c);
    run_layer_(&c, &r);
    const size_t N = (size_t)d.B * d.T, NG = N * d.G;
    const float* alpha = r.acts + engram_acts_floats(&d) - NG;
    for (size_t i = 0; i < NG; i++) assert_true(alpha[i] == 0.5f);
    const int stopped[] = {H_, WK_, BK_, NK_, NQ_};
    for (size_t t = 0; t < sizeof stopped / sizeof *stopped; t++)
        for (size_t k = 0; k < c.len[stopped[t]]; k++) assert_true(r.g[stopped[t]][k] == 0.0f);
    for (size_t k = 0; k < c.len[WV_]; k++)
        if (r.g[WV_][k] != 0.0f) goto value_flows;
    fail_msg("dwv is all zero: the value path should still carry gradient");
value_flows:
    run_free_(&r);
    case_free_(&c);
}

static int runs_identical_(const Case* c, const Run* a, const Run* b) {
    int same = 1;
    if (memcmp(a->out, b->out, c->len[H_] * sizeof(float))) same = 0, print_message("out differs\n");
    if (memcmp(a->acts, b->acts, engram_acts_floats(&c->d) * sizeof(float))) same = 0, print_message("acts differ\n");
    for (int i = 0; i < NT_; i++)
        if (memcmp(a->g[i], b->g[i], c->len[i] * sizeof(float))) same = 0, print_message("d%s differs\n", NAMES_[i]);
    return same;
}

/* Two calls give the same bits, and so do 1 vs 2 OpenMP threads at a fixed BLAS thread count: the
 * OpenBLAS sgemm (0.3.21, measured) gives different bits with 1, 2 or 3 BLAS threads, so a run is
 * reproducible for a fixed BLAS thread count only (the MPI runs use 1). With the pthreads OpenBLAS
 * that count is held at 2 while OpenMP goes from 1 to 2 threads. The OpenMP OpenBLAS (linked when
 * installed) has no count of its own (openblas_set_num_threads sets OpenMP's): there each thread
 * count is checked on its own, two calls each. */
static void results_are_bit_identical_across_calls_and_openmp_thread_counts(void** state) {
    (void)state;
    EngramDims d = {.B = 3, .T = 97, .G = 2, .D = 32, .Ein = 48, .K = 4, .dilation = 3, .qk_eps = 1e-5f,
                    .conv_eps = 1e-5f};
    Case c;
    case_random_(&c, &d, 8);
    Run r[4];
    for (int i = 0; i < 4; i++) run_alloc_(&r[i], &c);
    const int blas_follows_openmp = ops_gemm_in_parallel();
    if (!blas_follows_openmp) openblas_set_num_threads(2);
    for (int i = 0; i < 4; i++) {
#ifdef _OPENMP
        omp_set_num_threads(i < 2 ? 1 : 2);
#endif
        run_layer_(&c, &r[i]);
    }
    assert_true(runs_identical_(&c, &r[0], &r[1]));
    assert_true(runs_identical_(&c, &r[2], &r[3]));
    if (!blas_follows_openmp) assert_true(runs_identical_(&c, &r[0], &r[2]));
    for (int i = 0; i < 4; i++) run_free_(&r[i]);
    case_free_(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(forward_equals_forward_tiny_in_both_eps_sets),
        cmocka_unit_test(backward_equals_central_differences),
        cmocka_unit_test(one_branch_and_sequences_shorter_than_the_conv_reach_work),
        cmocka_unit_test(batch_rows_never_mix),
        cmocka_unit_test(zero_score_gates_one_half_and_stops_gate_gradients),
        cmocka_unit_test(results_are_bit_identical_across_calls_and_openmp_thread_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
