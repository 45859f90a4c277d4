/*
 * test_moe.c — src/moe against its specification (docs/model.md "MoE FFN"): the forward equals a
 * plain per-token implementation (loops in double, no GEMM) with and without capacity; the
 * hand-written backward equals central finite differences of loss = Σ out⊙R + aux_coef·aux for
 * every input and weight tensor; the load-balance statistics add up, aux is exactly 1 when the
 * routing is perfectly balanced, capacity drops the assignments a hand count says; results are
 * bit-identical across calls and across OpenMP thread counts.
 *
 * Letters as in src/moe.c: N tokens, D width, E routed experts, S shared, k per token, Fe hidden.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "moe.h"

/* ---- a model of one MoE layer: weights in one flat buffer, inputs, saved activations ---------- */

enum { N_TENSORS_ = 7 };
static const char* tensor_names_[N_TENSORS_] = {"router", "w1", "w3", "w2", "shared_w1", "shared_w3", "shared_w2"};

typedef struct {
    MoeDims d;
    float* flat;                  // all weights, in the order of tensor_names_
    float* gflat;                 // their gradients, same layout
    MoeWeights w, g;
    float* t[N_TENSORS_];         // tensor i of w, for walking all of them
    float* gt[N_TENSORS_];        // ... and of g
    size_t len[N_TENSORS_];       // floats in tensor i
    float *f, *out, *acts, *df;   // f, out, df [N,D]; acts [moe_acts_floats]
    double *counts, *psum;        // [E]
    MoeStats st;
} Case;

static uint64_t rng_ = 0x9E3779B97F4A7C15ull;
static float urand_(void) {   // uniform in [-1, 1), xorshift64*
    rng_ ^= rng_ >> 12, rng_ ^= rng_ << 25, rng_ ^= rng_ >> 27;
    return (float)((rng_ * 2685821657736338717ull) >> 40) / (float)(1 << 23) - 1.0f;
}

static void fill_(float* x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * urand_();
}

/* Point the 7 tensors of a MoeWeights into base, in the order of tensor_names_. */
static void weights_view_(Case* c, float* base, MoeWeights* w, float** t) {
    size_t off = 0;
    for (int i = 0; i < N_TENSORS_; i++) t[i] = c->len[i] ? base + off : NULL, off += c->len[i];
    *w = (MoeWeights){t[0], t[1], t[2], t[3], t[4], t[5], t[6]};
}

static Case case_new_(int N, int D, int E, int S, int k, int Fe, double cf) {
    Case c = {.d = {N, D, E, S, k, Fe, cf}};
    size_t ex = (size_t)Fe * D, total = 0;
    size_t lens[N_TENSORS_] = {(size_t)E * D, E * ex, E * ex, E * ex, S * ex, S * ex, S * ex};
    for (int i = 0; i < N_TENSORS_; i++) total += (c.len[i] = lens[i]);
    c.flat = calloc(total, sizeof(float));
    c.gflat = calloc(total, sizeof(float));
    weights_view_(&c, c.flat, &c.w, c.t);
    weights_view_(&c, c.gflat, &c.g, c.gt);
    c.f = calloc((size_t)N * D, sizeof(float));
    c.out = calloc((size_t)N * D, sizeof(float));
    c.df = calloc((size_t)N * D, sizeof(float));
    c.acts = calloc(moe_acts_floats(&c.d), sizeof(float));
    c.counts = calloc((size_t)E, sizeof(double));
    c.psum = calloc((size_t)E, sizeof(double));
    c.st = (MoeStats){c.counts, c.psum, 0, 0};
    return c;
}

/* Random weights and inputs: scales that spread the router and keep SwiGLU away from saturation. */
static Case case_random_(int N, int D, int E, int S, int k, int Fe, double cf) {
    Case c = case_new_(N, D, E, S, k, Fe, cf);
    fill_(c.f, (size_t)N * D, 1.0f);
    fill_(c.w.router, c.len[0], 0.5f);
    for (int i = 1; i < N_TENSORS_; i++) fill_(c.t[i], c.len[i], 0.3f);
    return c;
}

static void case_free_(Case* c) {
    free(c->flat), free(c->gflat), free(c->f), free(c->out), free(c->df), free(c->acts);
    free(c->counts), free(c->psum);
}

static void forward_(Case* c) { moe_forward(&c->d, &c->w, c->f, c->out, c->acts, &c->st, NULL); }

/* ---- the plain reference: one token at a time, in double --------------------------------------- */

/* y [D] += scale · Expert(f_n) for the expert with weights w1, w3 [Fe,D] and w2 [D,Fe]. */
static void naive_expert_(const float* fn, const float* w1, const float* w3, const float* w2, int D,
                          int Fe, double scale, double* y) {
    for (int r = 0; r < Fe; r++) {
        double h1 = 0, h3 = 0;
        for (int c = 0; c < D; c++) h1 += (double)w1[r * D + c] * fn[c], h3 += (double)w3[r * D + c] * fn[c];
        double g = h1 / (1.0 + exp(-h1)) * h3;
        for (int c = 0; c < D; c++) y[c] += scale * w2[c * Fe + r] * g;
    }
}

/* out [N,D] as docs/model.md says it, plus the dropped count. */
static long naive_forward_(const Case* c, double* out) {
    const MoeDims* d = &c->d;
    int D = d->D, E = d->E, k = d->k, Fe = d->Fe;
    long C = d->capacity_factor > 0 ? (long)ceil(d->capacity_factor * d->N * k / E) : (long)d->N * k;
    long* fill = calloc((size_t)E, sizeof(long)), dropped = 0;
    double* p = malloc((size_t)E * sizeof(double));
    memset(out, 0, (size_t)d->N * D * sizeof(double));
    for (int n = 0; n < d->N; n++) {
        const float* fn = c->f + (size_t)n * D;
        double* on = out + (size_t)n * D, mx = -INFINITY, s = 0, mass = 0;
        for (int i = 0; i < E; i++) {   // p = softmax(f·routerᵀ)
            p[i] = 0;
            for (int q = 0; q < D; q++) p[i] += (double)fn[q] * c->w.router[i * D + q];
            mx = fmax(mx, p[i]);
        }
        for (int i = 0; i < E; i++) s += (p[i] = exp(p[i] - mx));
        for (int i = 0; i < E; i++) p[i] /= s;
        int top[64];
        for (int j = 0; j < k; j++) {   // top-k, descending, ties to the lower index
            int b = -1;
            for (int i = 0; i < E; i++) {
                int used = 0;
                for (int m = 0; m < j; m++) used |= top[m] == i;
                if (!used && (b < 0 || p[i] > p[b])) b = i;
            }
            top[j] = b, mass += p[b];
        }
        for (int j = 0; j < k; j++) {   // admission, token-major; drops keep the others' weights
            int e = top[j];
            if (fill[e] >= C) { dropped++; continue; }
            fill[e]++;
            size_t o = (size_t)e * Fe * D;
            naive_expert_(fn, c->w.w1 + o, c->w.w3 + o, c->w.w2 + o, D, Fe, p[e] / mass, on);
        }
        for (int s2 = 0; s2 < d->S; s2++) {
            size_t o = (size_t)s2 * Fe * D;
            naive_expert_(fn, c->w.shared_w1 + o, c->w.shared_w3 + o, c->w.shared_w2 + o, D, Fe, 1.0, on);
        }
    }
    free(fill), free(p);
    return dropped;
}

/* max |out − ref| / max |ref|. */
static double rel_max_err_(const float* out, const double* ref, size_t n) {
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs(out[i] - ref[i])), m = fmax(m, fabs(ref[i]));
    return e / m;
}

static void check_forward_against_naive_(double cf, int expect_drops) {
    Case c = case_random_(37, 12, 8, 1, 2, 10, cf);
    size_t n = (size_t)c.d.N * c.d.D;
    double* ref = malloc(n * sizeof(double));
    forward_(&c);
    long dropped = naive_forward_(&c, ref);
    double err = rel_max_err_(c.out, ref, n);
    printf("forward vs naive, cf=%.2f: max rel err %.3g, dropped %ld (naive %ld)\n", cf, err, c.st.dropped, dropped);
    assert_true(err < 1e-5);
    assert_int_equal(c.st.dropped, dropped);
    if (expect_drops) assert_true(c.st.dropped > 0);
    else assert_int_equal(c.st.dropped, 0);
    free(ref);
    case_free_(&c);
}

static void forward_equals_naive_per_token_dropless(void** state) {
    (void)state;
    check_forward_against_naive_(0.0, 0);
}

static void forward_equals_naive_per_token_with_capacity(void** state) {
    (void)state;
    check_forward_against_naive_(0.5, 1);
}

/* ---- finite differences ------------------------------------------------------------------------ */

/* loss = Σ out⊙R + aux_coef·aux (this call's counts and psum taken as the global ones), in double. */
static double loss_(Case* c, const float* R, double aux_coef) {
    forward_(c);
    double s = 0;
    for (size_t i = 0; i < (size_t)c->d.N * c->d.D; i++) s += (double)c->out[i] * R[i];
    return s + aux_coef * moe_aux_loss(&c->d, c->counts, c->psum, c->d.N);
}

/* The top-k of every token from the saved probabilities (acts starts with p [N,E]); admission is a
 * function of these, so equal signatures mean equal routing. */
static void routing_sig_(const Case* c, int* top) {
    int E = c->d.E, k = c->d.k;
    for (int n = 0; n < c->d.N; n++) {
        const float* p = c->acts + (size_t)n * E;
        for (int j = 0; j < k; j++) {
            int b = -1;
            for (int i = 0; i < E; i++) {
                int used = 0;
                for (int m = 0; m < j; m++) used |= top[n * k + m] == i;
                if (!used && (b < 0 || p[i] > p[b])) b = i;
            }
            top[n * k + j] = b;
        }
    }
}

typedef struct {
    double rel;    // ‖analytic − numeric‖ / ‖numeric‖
    int skipped;   // elements whose ±eps perturbation changed the routing
} FdResult;

/* Central differences of loss_ over the n floats of x against the analytic gradient ga. */
static FdResult fd_tensor_(Case* c, float* x, const float* ga, size_t n, const float* R, double aux_coef,
                           float eps, const int* sig0) {
    size_t ns = (size_t)c->d.N * c->d.k;
    int* sig = malloc(ns * sizeof(int));
    double num2 = 0, diff2 = 0;
    FdResult r = {0, 0};
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = v + eps;
        double lp = loss_(c, R, aux_coef);
        routing_sig_(c, sig);
        int same = !memcmp(sig, sig0, ns * sizeof(int));
        x[i] = v - eps;
        double lm = loss_(c, R, aux_coef);
        routing_sig_(c, sig);
        same &= !memcmp(sig, sig0, ns * sizeof(int));
        x[i] = v;
        if (!same) { r.skipped++; continue; }
        double num = (lp - lm) / (2.0 * eps);
        num2 += num * num, diff2 += (ga[i] - num) * (ga[i] - num);
    }
    r.rel = num2 > 0 ? sqrt(diff2 / num2) : sqrt(diff2);   // no dependence: the analytic must be 0 too
    free(sig);
    return r;
}

/* FD against the backward for loss = Σ out⊙(r_scale·R) + aux_coef·aux, R uniform in [-1,1). */
static void check_backward_fd_(double cf, int S, float r_scale, double aux_coef) {
    const float eps = 1e-3f, tol = 3e-3f;   // measured errors are ~1e-4 (fp32 forward, eps 1e-3)
    Case c = case_random_(37, 12, 8, S, 2, 10, cf);
    size_t nd = (size_t)c.d.N * c.d.D, ns = (size_t)c.d.N * c.d.k;
    float* R = malloc(nd * sizeof(float));
    int* sig0 = malloc(ns * sizeof(int));
    fill_(R, nd, r_scale);
    // analytic: forward, then backward with dout = R and this call's statistics as the global ones
    double l0 = loss_(&c, R, aux_coef);
    routing_sig_(&c, sig0);
    moe_backward(&c.d, &c.w, c.f, c.acts, R, aux_coef, c.counts, c.d.N, c.df, &c.g, NULL);
    printf("backward vs FD, cf=%.2f S=%d R·%g aux_coef %g: loss %.6f, aux %.6f, dropped %ld\n", cf, S, r_scale, aux_coef, l0,
           moe_aux_loss(&c.d, c.counts, c.psum, c.d.N), c.st.dropped);
    float* dfa = malloc(nd * sizeof(float));
    memcpy(dfa, c.df, nd * sizeof(float));
    FdResult r = fd_tensor_(&c, c.f, dfa, nd, R, aux_coef, eps, sig0);
    printf("  %-10s rel err %.3g  (skipped %d of %zu)\n", "f", r.rel, r.skipped, nd);
    assert_true(r.rel < tol);
    assert_true(r.skipped * 2 < (int)nd);
    for (int i = 0; i < N_TENSORS_; i++) {
        if (!c.len[i]) continue;
        r = fd_tensor_(&c, c.t[i], c.gt[i], c.len[i], R, aux_coef, eps, sig0);
        printf("  %-10s rel err %.3g  (skipped %d of %zu)\n", tensor_names_[i], r.rel, r.skipped, c.len[i]);
        assert_true(r.rel < tol);
        assert_true(r.skipped * 2 < (int)c.len[i]);   // the comparison covers most of the tensor
    }
    free(R), free(sig0), free(dfa);
    case_free_(&c);
}

static void backward_equals_finite_differences_dropless(void** state) {
    (void)state;
    check_backward_fd_(0.0, 1, 1.0f, 0.1);
}

static void backward_equals_finite_differences_with_capacity(void** state) {
    (void)state;
    check_backward_fd_(0.5, 1, 1.0f, 0.1);
}

static void backward_equals_finite_differences_without_shared(void** state) {
    (void)state;
    check_backward_fd_(0.75, 0, 1.0f, 0.1);
}

/* R = 0: the loss is the aux term alone; it reaches f and the router only (the rest must be 0). */
static void aux_gradient_equals_finite_differences(void** state) {
    (void)state;
    check_backward_fd_(0.5, 1, 0.0f, 1.0);
}

/* ---- statistics -------------------------------------------------------------------------------- */

static void counts_sum_to_assignments_and_psum_to_tokens(void** state) {
    (void)state;
    Case c = case_random_(37, 12, 8, 1, 2, 10, 0.5);
    forward_(&c);
    double cs = 0, ps = 0;
    for (int i = 0; i < c.d.E; i++) cs += c.counts[i], ps += c.psum[i];
    assert_true(cs == (double)c.d.N * c.d.k);   // counted before drops
    assert_true(fabs(ps - c.d.N) < 1e-5);
    case_free_(&c);
}

/* Router = identity and f_n = ±100 per expert: p is exactly ½ on the two experts f marks +100 and
 * exactly 0 elsewhere (exp(−200) underflows), so the top-2 of each token are those two. */
static Case case_pairs_(int N, const int (*pairs)[2], double cf) {
    Case c = case_new_(N, 4, 4, 0, 2, 3, cf);
    for (int i = 0; i < 4; i++) c.w.router[i * 4 + i] = 1.0f;
    for (int i = 1; i < N_TENSORS_; i++) fill_(c.t[i], c.len[i], 0.3f);
    for (int n = 0; n < N; n++)
        for (int q = 0; q < 4; q++)
            c.f[n * 4 + q] = (q == pairs[n][0] || q == pairs[n][1]) ? 100.0f : -100.0f;
    return c;
}

static void aux_is_exactly_one_when_perfectly_balanced(void** state) {
    (void)state;
    const int pairs[4][2] = {{0, 1}, {2, 3}, {0, 2}, {1, 3}};   // each expert twice, p_i sums to 1
    Case c = case_pairs_(4, pairs, 0.0);
    forward_(&c);
    for (int i = 0; i < 4; i++) assert_true(c.counts[i] == 2.0 && c.psum[i] == 1.0);
    assert_true(moe_aux_loss(&c.d, c.counts, c.psum, c.d.N) == 1.0);
    case_free_(&c);
}

static void capacity_drops_what_a_hand_count_says(void** state) {
    (void)state;
    // five tokens choose experts {0,1}, three choose {2,3}; N·k/E = 4
    const int pairs[8][2] = {{0, 1}, {2, 3}, {0, 1}, {0, 1}, {2, 3}, {0, 1}, {2, 3}, {0, 1}};
    Case c = case_pairs_(8, pairs, 1.0);   // C = 4: token 7 loses both choices → 2 drops
    forward_(&c);
    assert_int_equal(c.st.dropped, 2);
    for (int q = 0; q < 4; q++) assert_true(c.out[7 * 4 + q] == 0.0f);   // S = 0: nothing reaches it
    assert_true(c.counts[0] == 5.0 && c.counts[2] == 3.0);                // counted before drops
    case_free_(&c);
    c = case_pairs_(8, pairs, 0.5);   // C = 2: {0,1} keep tokens 0, 2; {2,3} keep 1, 4 → 3+3+1+1
    forward_(&c);
    assert_int_equal(c.st.dropped, 8);
    case_free_(&c);
}

/* ---- determinism ------------------------------------------------------------------------------- */

/* out, df and every gradient after one forward and backward into fresh buffers, concatenated. */
static float* run_all_(double cf) {
    rng_ = 12345;
    Case c = case_random_(37, 12, 8, 1, 2, 10, cf);
    size_t nd = (size_t)c.d.N * c.d.D, nw = 0;
    for (int i = 0; i < N_TENSORS_; i++) nw += c.len[i];
    float* R = malloc(nd * sizeof(float));
    fill_(R, nd, 1.0f);
    forward_(&c);
    moe_backward(&c.d, &c.w, c.f, c.acts, R, 0.1, c.counts, c.d.N, c.df, &c.g, NULL);
    float* all = malloc((2 * nd + nw) * sizeof(float));
    memcpy(all, c.out, nd * sizeof(float));
    memcpy(all + nd, c.df, nd * sizeof(float));
    memcpy(all + 2 * nd, c.gflat, nw * sizeof(float));
    free(R);
    case_free_(&c);
    return all;
}

static size_t all_len_(void) { return 2 * 37 * 12 + 8 * 12 + 3 * 8 * 10 * 12 + 3 * 10 * 12; }

static void results_are_bit_identical_across_calls_and_threads(void** state) {
    (void)state;
    for (double cf = 0.0; cf <= 0.5; cf += 0.5) {
        float* a = run_all_(cf);
        float* b = run_all_(cf);
        assert_memory_equal(a, b, all_len_() * sizeof(float));
#ifdef _OPENMP
        int t0 = omp_get_max_threads();
        omp_set_num_threads(1);
        float* one = run_all_(cf);
        omp_set_num_threads(2);
        float* two = run_all_(cf);
        omp_set_num_threads(t0);
        assert_memory_equal(one, two, all_len_() * sizeof(float));
        assert_memory_equal(one, a, all_len_() * sizeof(float));
        free(one), free(two);
#endif
        free(a), free(b);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(forward_equals_naive_per_token_dropless),
        cmocka_unit_test(forward_equals_naive_per_token_with_capacity),
        cmocka_unit_test(backward_equals_finite_differences_dropless),
        cmocka_unit_test(backward_equals_finite_differences_with_capacity),
        cmocka_unit_test(backward_equals_finite_differences_without_shared),
        cmocka_unit_test(aux_gradient_equals_finite_differences),
        cmocka_unit_test(counts_sum_to_assignments_and_psum_to_tokens),
        cmocka_unit_test(aux_is_exactly_one_when_perfectly_balanced),
        cmocka_unit_test(capacity_drops_what_a_hand_count_says),
        cmocka_unit_test(results_are_bit_identical_across_calls_and_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
