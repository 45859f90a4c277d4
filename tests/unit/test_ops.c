/*
 * test_ops.c — every dense op's backward against central finite differences of its forward:
 * linear, RMSNorm, RoPE (and that its inverse undoes it), causal attention, SwiGLU and
 * cross-entropy; and the fused output head against those pieces. The loss is L = Σ out ⊙ R for a fixed random R (for cross-entropy, the loss
 * itself), evaluated in double; tolerances are per tensor, ‖analytic − numeric‖ / ‖numeric‖.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "rng.h"

static void fill_(float* x, size_t n, uint64_t stream, double scale) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * rng_normal(99, stream, i));
}

static double dot_(const float* a, const float* b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Compare analytic gradient ga of parameter x (n elements) with central differences of f. */
typedef double (*LossFn)(void* ctx);
static double fd_rel_err_(LossFn f, void* ctx, float* x, const float* ga, size_t n, float eps) {
    double num2 = 0, diff2 = 0;
    size_t stride = n > 64 ? n / 64 : 1;   // a spread of elements keeps the test fast
    for (size_t i = 0; i < n; i += stride) {
        float keep = x[i];
        x[i] = keep + eps;
        double lp = f(ctx);
        x[i] = keep - eps;
        double lm = f(ctx);
        x[i] = keep;
        double g = (lp - lm) / (2.0 * eps);
        num2 += g * g;
        diff2 += (g - ga[i]) * (g - ga[i]);
    }
    return sqrt(diff2 / (num2 > 1e-30 ? num2 : 1e-30));
}

/* ---- linear ---- */
typedef struct { int N, Din, Dout; float *in, *W, *b, *out, *R; } LinCtx;
static double lin_loss_(void* p) {
    LinCtx* c = p;
    linear_forward(c->out, c->in, c->W, c->b, c->N, c->Din, c->Dout);
    return dot_(c->out, c->R, (size_t)c->N * c->Dout);
}
static void linear_backward_matches_finite_differences(void** s) {
    (void)s;
    LinCtx c = {.N = 7, .Din = 5, .Dout = 6};
    c.in = malloc(35 * 4), c.W = malloc(30 * 4), c.b = malloc(6 * 4), c.out = malloc(42 * 4), c.R = malloc(42 * 4);
    fill_(c.in, 35, 1, 1), fill_(c.W, 30, 2, 1), fill_(c.b, 6, 3, 1), fill_(c.R, 42, 4, 1);
    float din[35] = {0}, dW[30] = {0}, db[6] = {0};
    linear_backward(din, dW, db, c.R, c.in, c.W, 7, 5, 6);
    assert_true(fd_rel_err_(lin_loss_, &c, c.in, din, 35, 1e-2f) < 1e-3);
    assert_true(fd_rel_err_(lin_loss_, &c, c.W, dW, 30, 1e-2f) < 1e-3);
    assert_true(fd_rel_err_(lin_loss_, &c, c.b, db, 6, 1e-2f) < 1e-3);
    free(c.in), free(c.W), free(c.b), free(c.out), free(c.R);
}

/* ---- RMSNorm ---- */
typedef struct { int N, D; float *x, *w, *out, *rstd, *R; } NormCtx;
static double norm_loss_(void* p) {
    NormCtx* c = p;
    rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->N, c->D, 1e-5f);
    return dot_(c->out, c->R, (size_t)c->N * c->D);
}
static void rmsnorm_backward_matches_finite_differences(void** s) {
    (void)s;
    enum { N = 5, D = 12 };
    float x[N * D], w[D], out[N * D], rstd[N], R[N * D], dx[N * D] = {0}, dw[D] = {0};
    fill_(x, N * D, 5, 1), fill_(R, N * D, 6, 1);
    for (int d = 0; d < D; d++) w[d] = 1.0f + 0.1f * (float)rng_normal(1, 7, d);
    NormCtx c = {N, D, x, w, out, rstd, R};
    norm_loss_(&c);
    rmsnorm_backward(dx, dw, R, x, w, rstd, N, D);
    double ex = fd_rel_err_(norm_loss_, &c, x, dx, N * D, 1e-2f), ew = fd_rel_err_(norm_loss_, &c, w, dw, D, 1e-2f);
    if (ex > 2e-3 || ew > 2e-3) fail_msg("rmsnorm: dx err %g, dw err %g", ex, ew);
}

/* ---- RoPE ---- */
static void rope_inverse_undoes_rope_and_keeps_v(void** s) {
    (void)s;
    enum { B = 2, T = 9, D = 16, NH = 2 };
    float q[B * T * 3 * D], q0[B * T * 3 * D];
    fill_(q, B * T * 3 * D, 8, 1);
    memcpy(q0, q, sizeof q);
    rope_apply(q, B, T, D, NH, 10000.0f, 0);
    assert_true(memcmp(q, q0, sizeof q) != 0);
    for (int bt = 0; bt < B * T; bt++)   // v is never rotated, position 0 is the identity
        assert_memory_equal(q + bt * 3 * D + 2 * D, q0 + bt * 3 * D + 2 * D, D * sizeof(float));
    assert_memory_equal(q, q0, 2 * D * sizeof(float));
    rope_apply(q, B, T, D, NH, 10000.0f, 1);
    for (int i = 0; i < B * T * 3 * D; i++) assert_true(fabsf(q[i] - q0[i]) < 1e-5f);
}

/* ---- attention (with RoPE in front, as the model runs it) ---- */
typedef struct { int B, T, D, nh; float *qkv, *rot, *att, *out, *R; } AttCtx;
static double att_loss_(void* p) {
    AttCtx* c = p;
    size_t n = (size_t)c->B * c->T * 3 * c->D;
    memcpy(c->rot, c->qkv, n * sizeof(float));
    rope_apply(c->rot, c->B, c->T, c->D, c->nh, 10000.0f, 0);
    attention_forward(c->out, c->att, c->rot, c->B, c->T, c->D, c->nh);
    return dot_(c->out, c->R, (size_t)c->B * c->T * c->D);
}
static void attention_and_rope_backward_match_finite_differences(void** s) {
    (void)s;
    enum { B = 2, T = 7, D = 16, NH = 4 };
    static float qkv[B * T * 3 * D], rot[B * T * 3 * D], att[B * NH * T * T], out[B * T * D], R[B * T * D],
        dqkv[B * T * 3 * D], scratch[B * NH * T * T];
    fill_(qkv, B * T * 3 * D, 9, 1), fill_(R, B * T * D, 10, 1);
    AttCtx c = {B, T, D, NH, qkv, rot, att, out, R};
    att_loss_(&c);
    attention_backward(dqkv, R, rot, att, scratch, B, T, D, NH);
    rope_apply(dqkv, B, T, D, NH, 10000.0f, 1);
    double e = fd_rel_err_(att_loss_, &c, qkv, dqkv, B * T * 3 * D, 1e-2f);
    if (e > 2e-3) fail_msg("attention: err %g", e);
    /* causality: the output at t = 0 depends on position 0 only */
    float o0[D];
    memcpy(o0, out, sizeof o0);
    qkv[(T - 1) * 3 * D + 5] += 1.0f;
    att_loss_(&c);
    assert_memory_equal(o0, out, sizeof o0);
}

/* ---- SwiGLU ---- */
typedef struct { long n; float *a, *b, *g, *R; } SwiCtx;
static double swi_loss_(void* p) {
    SwiCtx* c = p;
    swiglu_forward(c->g, c->a, c->b, c->n);
    return dot_(c->g, c->R, c->n);
}
static void swiglu_backward_matches_finite_differences(void** s) {
    (void)s;
    enum { N = 40 };
    float a[N], b[N], g[N], R[N], da[N], db[N];
    fill_(a, N, 11, 2), fill_(b, N, 12, 1), fill_(R, N, 13, 1);
    SwiCtx c = {N, a, b, g, R};
    swiglu_backward(da, db, R, a, b, N);
    assert_true(fd_rel_err_(swi_loss_, &c, a, da, N, 1e-2f) < 1e-3);
    assert_true(fd_rel_err_(swi_loss_, &c, b, db, N, 1e-2f) < 1e-3);
}

/* ---- cross-entropy ---- */
typedef struct { int N, V; float *logits, *probs; int32_t* y; } CeCtx;
static double ce_loss_(void* p) {
    CeCtx* c = p;
    memcpy(c->probs, c->logits, (size_t)c->N * c->V * sizeof(float));
    return crossentropy_forward(c->probs, c->y, c->N, c->V) / c->N;
}
static void crossentropy_matches_log_softmax_and_its_gradient(void** s) {
    (void)s;
    enum { N = 6, V = 11 };
    float logits[N * V], probs[N * V];
    int32_t y[N] = {0, 3, 10, 5, 5, 1};
    fill_(logits, N * V, 14, 3);
    CeCtx c = {N, V, logits, probs, y};
    double loss = ce_loss_(&c);
    double want = 0;
    for (int n = 0; n < N; n++) {   // log-sum-exp written out
        double z = 0;
        for (int v = 0; v < V; v++) z += exp(logits[n * V + v]);
        want += (log(z) - logits[n * V + y[n]]) / N;
    }
    assert_true(fabs(loss - want) < 1e-6 * fabs(want));
    crossentropy_backward(probs, y, N, V, 1.0f / N);
    float grad[N * V];
    memcpy(grad, probs, sizeof grad);
    assert_true(fd_rel_err_(ce_loss_, &c, logits, grad, N * V, 1e-2f) < 1e-3);
}

/* ---- fused head: the same numbers as its pieces (linear, cross-entropy, linear backward), with
 * 1 to 4 lanes (4: one lane has no block and must contribute a zero dW part) ---- */
static void fused_head_matches_linear_and_crossentropy(void** s) {
    (void)s;
    enum { N = 7, D = 5, V = 13, ROWS = 3, LANES = 4 };   // 3 blocks, the last one short
    float x[N * D], W[V * D], logits[N * V], dx[N * D], dW[V * D], want_dx[N * D] = {0}, want_dW[V * D] = {0};
    float scratch[LANES * ROWS * V], dW_lanes[(LANES - 1) * V * D];
    int32_t y[N] = {0, 12, 5, 5, 1, 7, 3};
    fill_(x, N * D, 21, 1), fill_(W, V * D, 22, 1);
    linear_forward(logits, x, W, NULL, N, D, V);
    double want = crossentropy_forward(logits, y, N, V);
    crossentropy_backward(logits, y, N, V, 1.0f);
    linear_backward(want_dx, want_dW, NULL, logits, x, W, N, D, V);
    for (int lanes = 1; lanes <= LANES; lanes++) {
        fill_(dW, V * D, 23, 1), fill_(dW_lanes, (LANES - 1) * V * D, 24, 1);   // garbage: overwritten
        double loss = head_xent(x, W, y, N, D, V, dx, dW, scratch, ROWS, lanes, dW_lanes);
        assert_true(fabs(loss - want) < 1e-6 * fabs(want));
        for (int i = 0; i < N * D; i++) assert_true(fabsf(dx[i] - want_dx[i]) < 1e-5f);
        for (int i = 0; i < V * D; i++) assert_true(fabsf(dW[i] - want_dW[i]) < 1e-5f);
        assert_true(head_xent(x, W, y, N, D, V, NULL, NULL, scratch, ROWS, lanes, NULL) == loss);   // loss only: same sum
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(linear_backward_matches_finite_differences),
        cmocka_unit_test(rmsnorm_backward_matches_finite_differences),
        cmocka_unit_test(rope_inverse_undoes_rope_and_keeps_v),
        cmocka_unit_test(attention_and_rope_backward_match_finite_differences),
        cmocka_unit_test(swiglu_backward_matches_finite_differences),
        cmocka_unit_test(crossentropy_matches_log_softmax_and_its_gradient),
        cmocka_unit_test(fused_head_matches_linear_and_crossentropy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
