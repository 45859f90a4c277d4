/*
 * test_sweep.c — ρ-allocation plans (ARCHITECTURE.md §7): P_tot within 1% of the budget at every
 * ρ < 1 and P_act within 1% across them; ρ = 0 keeps only the k active routed experts; ρ = 1 has no
 * Engram rows; more ρ, more experts and fewer rows; the actual ρ lands near the request; every
 * point's accounting is recomputed here from its own config's tensor table; refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ngram_hash.h"
#include "sweep.h"
#include "tensors.h"

static const char* SWEEP_ =
    "model: {vocab_size: 5000, d_model: 64, n_layers: 4, n_heads: 4, seq_len: 16}\n"
    "moe: {layers: [1, 3], experts: 8, top_k: 2, d_expert: 64, shared_experts: 1}\n"
    "engram: {layers: [2, 0], max_ngram: 3, heads_per_ngram: 4, head_dim: 16, vocab_bases: [100, 100]}\n"
    "sweep: {rhos: [0, 0.2, 0.5, 0.8, 1], total_params: 3000000}\n";

static void load_(Config* c, const char* text, int n_over, char** over) {
    char err[1024];
    if (config_load_string(c, text, "test", n_over, over, err, sizeof err)) fail_msg("%s", err);
}

/* Σ of every tensor of a config, independently of accounting_compute. */
static int64_t total_params_(const Config* c, int64_t* rows_out) {
    NgramHash nh;
    memset(&nh, 0, sizeof nh);
    if (c->engram.layers.n)
        ngram_hash_init(&nh, c->engram.layers.v, c->engram.layers.n, c->engram.max_ngram, c->engram.heads_per_ngram,
                        c->engram.vocab_bases.v, c->model.vocab_size, 0, 0, FLAVOUR_DEEPSEEK);
    TensorTable tt;
    tensors_build(&tt, c, nh.rows);
    int64_t s = 0, rows = 0;
    for (int i = 0; i < tt.n; i++) {
        s += tt.t[i].numel;
        if (tt.t[i].group == OPT_TABLE) rows += tt.t[i].shape[0];
    }
    tensors_free(&tt);
    if (c->engram.layers.n) ngram_hash_free(&nh);
    *rows_out = rows;
    return s;
}

static void plans_keep_the_budget_and_the_active_parameters(void** s) {
    (void)s;
    Config c;
    load_(&c, SWEEP_, 0, NULL);
    SweepPoint* p;
    char err[1024];
    int n = sweep_plan(&c, &p, err, sizeof err);
    if (n < 0) fail_msg("%s", err);
    assert_int_equal(n, 5);
    for (int i = 0; i < n; i++) {
        Config pc;
        assert_int_equal(sweep_point_config(&c, &p[i], &pc, err, sizeof err), 0);
        int64_t rows, tot = total_params_(&pc, &rows);
        assert_int_equal(tot, p[i].acc.P_tot);   // the plan is what the model builds
        assert_int_equal(rows, p[i].acc.engram_rows);
        assert_int_equal(pc.moe.experts, p[i].experts);
        if (p[i].rho_target < 1) {
            assert_true(fabs(p[i].dev_P_tot) <= 0.01);
            assert_true(fabs(p[i].dev_P_act) <= 0.01);
            assert_true(fabs(p[i].acc.rho_actual - p[i].rho_target) <= 0.05);
        }
        if (i > 0) {
            assert_true(p[i].experts >= p[i - 1].experts);
            assert_true(p[i].acc.engram_rows <= p[i - 1].acc.engram_rows);
        }
        config_free(&pc);
    }
    assert_int_equal(p[0].experts, c.moe.top_k);   // ρ = 0: only the k active experts
    assert_true(p[0].acc.rho_actual == 0.0);
    assert_int_equal(p[4].acc.engram_rows, 0);     // ρ = 1: no Engram layers at all
    assert_true(p[4].acc.rho_actual == 1.0);
    free(p);
    config_free(&c);
}

static void impossible_sweeps_are_refused(void** s) {
    (void)s;
    Config c;
    SweepPoint* p;
    char err[1024];
    char* small[] = {"sweep.total_params=400000"};
    load_(&c, SWEEP_, 1, small);
    assert_int_equal(sweep_plan(&c, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "raise sweep.total_params"));
    config_free(&c);
    char* nomoe[] = {"moe.layers=[]"};
    load_(&c, SWEEP_, 1, nomoe);
    assert_int_equal(sweep_plan(&c, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "needs MoE layers"));
    config_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plans_keep_the_budget_and_the_active_parameters),
        cmocka_unit_test(impossible_sweeps_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
