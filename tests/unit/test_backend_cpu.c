/*
 * test_backend_cpu.c — the CPU backend's own code (src/backend_cpu.c), against values worked out
 * here: the strided-batched GEMM against a triple loop in double, the embedding against copies and
 * sums of rows, and one Adam(W) step and one lazy row step against their closed form at t = 1
 * (m̂ = g, v̂ = g², so the step is lr·g/(|g| + eps)); the guarded backend (backend_guard.c) moves
 * and computes through to_device / ops / to_host, and a direct read of its memory by host code
 * kills the process with SIGSEGV (in a child). The other ops are ops.c itself, tested in
 * test_ops.c; the CUDA backend is held to this one by tests/gpu/backend_matches_cpu.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "rng.h"

static float* randn_(size_t n, uint64_t stream) {
    float* x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(7, stream, i);
    return x;
}

/* C_i = 0.7·op(A_i)·op(B_i) + 0.3·C_i over a batch of 3 with padded leading dimensions. */
static void gemm_batched_matches_triple_loop(void** state) {
    (void)state;
    Backend be;
    backend_cpu_init(&be);
    const int M = 5, N = 7, K = 9, batch = 3, pad = 2;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
            const long long sA = (long long)(ta ? K : M) * lda, sB = (long long)(tb ? N : K) * ldb, sC = (long long)M * ldc;
            float *A = randn_(sA * batch, 1), *B = randn_(sB * batch, 2), *C = randn_(sC * batch, 3);
            float* C0 = randn_(sC * batch, 3);
            be.gemm(&be, ta, tb, M, N, K, 0.7f, A, lda, sA, B, ldb, sB, 0.3f, C, ldc, sC, batch);
            for (int i = 0; i < batch; i++)
                for (int r = 0; r < M; r++)
                    for (int c = 0; c < N; c++) {
                        double s = 0;
                        for (int k = 0; k < K; k++) {
                            double a = ta ? A[i * sA + k * lda + r] : A[i * sA + r * lda + k];
                            double b = tb ? B[i * sB + c * ldb + k] : B[i * sB + k * ldb + c];
                            s += a * b;
                        }
                        double want = 0.7 * s + 0.3 * C0[i * sC + r * ldc + c];
                        assert_true(fabs(C[i * sC + r * ldc + c] - want) <= 1e-5 * (1 + fabs(want)));
                    }
            free(A), free(B), free(C), free(C0);
        }
    be.close(&be);
}

/* Forward: every branch of token n is row x[n]. Backward: row v gains Σ over tokens with x = v and
 * over branches of dh; rows no token uses keep their value. */
static void embedding_copies_rows_and_sums_gradients(void** state) {
    (void)state;
    Backend be;
    backend_cpu_init(&be);
    const int N = 9, G = 3, D = 4, V = 5;
    const int32_t x[9] = {4, 1, 4, 0, 1, 4, 2, 2, 0};   // row 3 unused, 4 three times
    float *wte = randn_((size_t)V * D, 4), *dh = randn_((size_t)N * G * D, 5), *dw = randn_((size_t)V * D, 6);
    float *dw0 = randn_((size_t)V * D, 6), *h = malloc((size_t)N * G * D * sizeof(float));
    be.embedding_forward(&be, h, wte, x, N, G, D);
    for (int n = 0; n < N; n++)
        for (int g = 0; g < G; g++)
            for (int d = 0; d < D; d++) assert_true(h[(n * G + g) * D + d] == wte[x[n] * D + d]);
    be.embedding_backward(&be, dw, dh, x, N, G, D);
    for (int v = 0; v < V; v++)
        for (int d = 0; d < D; d++) {
            double want = dw0[v * D + d];
            for (int n = 0; n < N; n++)
                for (int g = 0; g < G; g++) want += x[n] == v ? dh[(n * G + g) * D + d] : 0.0;
            assert_true(fabs(dw[v * D + d] - want) <= 1e-5);
        }
    free(wte), free(dh), free(dw), free(dw0), free(h);
    be.close(&be);
}

/* t = 1 from zero moments: m = (1−β1)·g', v = (1−β2)·g'², g' = scale·g, and
 * p ← p·(1 − lr·wd) − lr·g'/(|g'| + eps). */
static double adam_first_step_(double p, double g, double lr, double wd, double eps) {
    return p * (1.0 - lr * wd) - lr * g / (fabs(g) + eps);
}

static void adam_first_step_matches_closed_form(void** state) {
    (void)state;
    Backend be;
    backend_cpu_init(&be);
    const size_t n = 40000;   // more than one span of optim.c's threads
    float *p = randn_(n, 7), *g = randn_(n, 8), *p0 = randn_(n, 7);
    float *m = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));
    AdamStep s = {.lr = 1e-2, .wd = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .grad_scale = 0.5, .t = 1};
    be.adam(&be, p, g, m, v, n, &s);
    for (size_t i = 0; i < n; i++) {
        double gs = 0.5 * g[i];
        assert_true(fabs(p[i] - adam_first_step_(p0[i], gs, 1e-2, 0.1, 1e-8)) <= 1e-6);
        assert_true(fabs(m[i] - 0.1 * gs) <= 1e-7 && fabs(v[i] - 0.05 * gs * gs) <= 1e-7);
    }
    free(p), free(g), free(p0), free(m), free(v);
    be.close(&be);
}

/* Rows 5, 0, 3 of a 7-row table take one step (no decay) and count it; the others stay as they were. */
static void rows_adam_updates_only_the_listed_rows(void** state) {
    (void)state;
    Backend be;
    backend_cpu_init(&be);
    const int local = 7, Dh = 3, n = 3;
    const int64_t keys[3] = {ROWKEY(0, 5), ROWKEY(0, 0), ROWKEY(0, 3)};
    float *tab = randn_((size_t)local * Dh, 9), *tab0 = randn_((size_t)local * Dh, 9), *gr = randn_((size_t)n * Dh, 10);
    float *m = calloc((size_t)local * Dh, sizeof(float)), *v = calloc((size_t)local * Dh, sizeof(float));
    int64_t upd[7] = {0, 0, 0, 2, 0, 0, 0};
    AdamStep s = {.lr = 5e-2, .wd = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .grad_scale = 1.0, .t = 1};
    int64_t n_rows = local, first = 0;
    int64_t* updp = upd;
    EngramTables t = {.be = &be, .n_layers = 1, .Dh = Dh, .rows = &n_rows, .first = &first, .local = &n_rows,
                      .table = &tab, .m = &m, .v = &v, .updates = &updp};
    be.rows_adam(&be, &t, keys, n, gr, &s);
    for (int r = 0; r < local; r++) {
        int i = r == 5 ? 0 : r == 0 ? 1 : r == 3 ? 2 : -1;
        assert_int_equal(upd[r], (i >= 0) + (r == 3 ? 2 : 0));
        for (int j = 0; j < Dh; j++) {
            double want = i < 0 ? tab0[r * Dh + j] : adam_first_step_(tab0[r * Dh + j], gr[i * Dh + j], 5e-2, 0.0, 1e-8);
            assert_true(fabs(tab[r * Dh + j] - want) <= 1e-6);
        }
    }
    free(tab), free(tab0), free(gr), free(m), free(v);
    be.close(&be);
}

/* Through the guarded backend: values go in and out and ops compute on them; read directly, the
 * same memory faults. */
static void guarded_backend_faults_on_direct_access(void** state) {
    (void)state;
    Backend be;
    backend_cpu_init(&be);
    backend_guard_wrap(&be);
    assert_int_equal(be.host, 0);
    float in[3] = {1.0f, -2.0f, 4.0f}, out[3] = {0};
    float* d = be.alloc(&be, sizeof in);
    be.to_device(&be, d, in, sizeof in);
    be.scale(&be, d, d, 0.5f, 3);
    be.to_host(&be, out, d, sizeof out);
    assert_true(out[0] == 0.5f && out[1] == -1.0f && out[2] == 2.0f);
    for (int write = 0; write < 2; write++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {   // the child touches device memory as host code would by mistake
            signal(SIGSEGV, SIG_DFL);   // cmocka's handler would catch it and go on testing in the child
            volatile float* v = d;
            if (write) v[1] = 3.0f;
            else out[0] = v[1];
            _exit(0);
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGSEGV);
    }
    be.free(&be, d);
    be.close(&be);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gemm_batched_matches_triple_loop),
        cmocka_unit_test(embedding_copies_rows_and_sums_gradients),
        cmocka_unit_test(adam_first_step_matches_closed_form),
        cmocka_unit_test(rows_adam_updates_only_the_listed_rows),
        cmocka_unit_test(guarded_backend_faults_on_direct_access),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
