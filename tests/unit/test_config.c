/*
 * test_config.c — the config reader as a user meets it: files, overrides, defaults, and the
 * one-line refusals `FILE:LINE: key: what is wrong (got VALUE)` for each kind of bad input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char tmpdir_[256];

static const char* write_yaml_(const char* name, const char* text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir_, name);
    FILE* f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Load text as a config file; returns the rc and leaves the error in err. */
static int load_text_(Config* c, const char* text, int n_over, char** over, char* err, size_t n) {
    const char* path = write_yaml_("c.yaml", text);
    return config_load(c, path, n_over, over, err, n);
}

/* Assert that loading text fails with an error containing every fragment given. */
static void assert_refused_(const char* text, int n_over, char** over, const char* frag1, const char* frag2) {
    Config c;
    char err[1024] = "";
    int rc = load_text_(&c, text, n_over, over, err, sizeof err);
    if (rc == 0 || !strstr(err, frag1) || (frag2 && !strstr(err, frag2)))
        fail_msg("expected refusal with '%s' and '%s', got rc=%d err='%s'", frag1, frag2 ? frag2 : "", rc, err);
    assert_null(strchr(err, '\n'));   // one line
    config_free(&c);
}

static void defaults_are_valid_and_resolved(void** state) {
    (void)state;
    Config c;
    char err[512];
    assert_int_equal(config_load(&c, NULL, 0, NULL, err, sizeof err), 0);
    assert_int_equal(c.model.d_ff, 4 * c.model.d_model);           // 0 means 4·D
    assert_int_equal(c.moe.d_expert, c.model.d_ff);
    assert_true(c.engram.qk_norm_eps == c.model.norm_eps);         // -1 means model.norm_eps
    assert_int_equal(c.engram.flavour, 0);
    config_free(&c);
}

/* train.precision auto: bf16 on a GPU, fp32 on the CPU; explicit values stay; bf16 on the CPU refused. */
static void precision_follows_the_device_unless_set(void** state) {
    (void)state;
    struct { const char* over[2]; int want; } cases[] = {
        {{"parallel.device=cpu", NULL}, PRECISION_FP32},
        {{"parallel.device=cuda", NULL}, PRECISION_BF16},
        {{"parallel.device=cuda", "train.precision=fp32"}, PRECISION_FP32},
        {{"parallel.device=cuda", "train.precision=bf16"}, PRECISION_BF16},
        {{"parallel.device=cpu", "train.precision=fp32"}, PRECISION_FP32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Config c;
        char err[512] = "";
        int n = cases[i].over[1] ? 2 : 1;
        assert_int_equal(config_load(&c, NULL, n, (char**)cases[i].over, err, sizeof err), 0);
        assert_int_equal(c.train.precision, cases[i].want);
        config_free(&c);
    }
    char* cpu_bf16[] = {"parallel.device=cpu", "train.precision=bf16"};
    assert_refused_("{}\n", 2, cpu_bf16, "train.precision", "parallel.device=cuda only");
}

static void tiny_config_loads_with_its_values(void** state) {
    (void)state;
    Config c;
    char err[512];
    int rc = config_load(&c, ENGRAM_SOURCE_DIR "/configs/tiny.yaml", 0, NULL, err, sizeof err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(c.model.vocab_size, 50257);
    assert_int_equal(c.model.d_model, 128);
    assert_int_equal(c.model.n_layers, 4);
    assert_true(c.moe.layers.n > 0 && c.engram.layers.n > 0);
    assert_int_equal(c.engram.vocab_bases.n, c.engram.max_ngram - 1);
    config_free(&c);
}

static void list_order_is_kept_as_written(void** state) {
    (void)state;
    Config c;
    char err[512];
    int rc = load_text_(&c, "engram:\n  layers: [3, 0, 2]\n  vocab_bases: [1009, 1013]\n", 0, NULL, err, sizeof err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(c.engram.layers.n, 3);
    assert_int_equal(c.engram.layers.v[0], 3);
    assert_int_equal(c.engram.layers.v[1], 0);
    assert_int_equal(c.engram.layers.v[2], 2);
    config_free(&c);
    /* block-style sequences are lists too */
    rc = load_text_(&c, "engram:\n  layers:\n    - 2\n    - 1\n  vocab_bases: [7, 9]\n", 0, NULL, err, sizeof err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(c.engram.layers.v[0], 2);
    assert_int_equal(c.engram.layers.v[1], 1);
    config_free(&c);
}

static void unknown_key_names_the_closest_valid_one(void** state) {
    (void)state;
    assert_refused_("model:\n  d_model: 64\n  n_layer: 2\n", 0, NULL, "c.yaml:3: model.n_layer: unknown key", "did you mean model.n_layers?");
    assert_refused_("train:\n  d_model: 64\n", 0, NULL, "train.d_model: unknown key", "did you mean model.d_model?");
    assert_refused_("modle:\n  d_model: 64\n", 0, NULL, "c.yaml:1: modle: unknown section", "did you mean model?");
}

static void wrong_types_are_refused_with_file_line_and_value(void** state) {
    (void)state;
    assert_refused_("model:\n  d_model: abc\n", 0, NULL, "c.yaml:2: model.d_model: must be an integer (got abc)", NULL);
    assert_refused_("model:\n  tie_embeddings: maybe\n", 0, NULL, "c.yaml:2: model.tie_embeddings: must be true or false (got maybe)", NULL);
    assert_refused_("engram:\n  layers: 3\n", 0, NULL, "c.yaml:2: engram.layers: must be a list of integers", "(got 3)");
    assert_refused_("engram:\n  layers: [1, x]\n", 0, NULL, "c.yaml:2: engram.layers: must be a list of integers", "(got x)");
    assert_refused_("engram:\n  flavour: jax\n", 0, NULL, "c.yaml:2: engram.flavour: must be one of deepseek|maxtext (got jax)", NULL);
    assert_refused_("train:\n  lr: [1]\n", 0, NULL, "c.yaml:2: train.lr: must be a number", "list");
    assert_refused_("- a\n- b\n", 0, NULL, "c.yaml:1:", "mapping of sections");
}

static void out_of_range_values_are_refused(void** state) {
    (void)state;
    assert_refused_("engram:\n  heads_per_ngram: -2\n", 0, NULL, "c.yaml:2: engram.heads_per_ngram: must be", "(got -2)");
    assert_refused_("train:\n  min_lr_ratio: 1.5\n", 0, NULL, "c.yaml:2: train.min_lr_ratio: must be in [0, 1] (got 1.5)", NULL);
    assert_refused_("sweep:\n  rhos: [0.5, 1.25]\n  total_params: 100\n", 0, NULL, "sweep.rhos: must be in [0, 1] (got 1.25)", NULL);
}

static void inconsistent_dimensions_are_refused(void** state) {
    (void)state;
    assert_refused_("model:\n  d_model: 100\n  n_heads: 3\n", 0, NULL, "c.yaml:3: model.n_heads: must divide model.d_model = 100 (got 3)", NULL);
    assert_refused_("model:\n  d_model: 96\n  n_heads: 32\n", 0, NULL, "model.n_heads: head width", "even for RoPE");
    assert_refused_("engram:\n  layers: [1]\n  max_ngram: 3\n  vocab_bases: [100]\n", 0, NULL,
                    "c.yaml:4: engram.vocab_bases: needs one base per n-gram order 2..3, i.e. 2 values (got [100])", NULL);
    assert_refused_("model:\n  n_layers: 4\nengram:\n  layers: [1, 4]\n  vocab_bases: [7, 9]\n", 0, NULL,
                    "c.yaml:4: engram.layers: block index 4 is out of range for model.n_layers = 4", "(got [1, 4])");
    assert_refused_("moe:\n  layers: [0, 0]\n  experts: 4\n", 0, NULL, "moe.layers: block 0 is listed twice", NULL);
    assert_refused_("moe:\n  layers: [0]\n  experts: 4\n  top_k: 5\n", 0, NULL, "c.yaml:4: moe.top_k: must be <= moe.experts = 4 (got 5)", NULL);
    assert_refused_("moe:\n  layers: [0]\n  experts: 0\n", 0, NULL, "moe.experts: must be >= 1 when moe.layers is not empty (got 0)", NULL);
    assert_refused_("engram:\n  layers: [0]\n  vocab_bases: [7, 9]\n  compressed_vocab_size: 10\n  pad_id_compressed: 10\n", 0, NULL,
                    "c.yaml:5: engram.pad_id_compressed: must be < engram.compressed_vocab_size = 10 (got 10)", NULL);
    assert_refused_("model:\n  d_model: 64\n  d_model: 32\n", 0, NULL, "c.yaml:3: model.d_model: given twice in this file (first on line 2)", NULL);
}

static void yaml_syntax_errors_name_the_line(void** state) {
    (void)state;
    assert_refused_("model:\n  d_model: 64\n  n_heads: [1, 2\n", 0, NULL, "c.yaml:", "YAML syntax error");
    Config c;
    char err[512];
    assert_int_equal(config_load(&c, "/nonexistent/x.yaml", 0, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/x.yaml: cannot open config"));
    config_free(&c);
}

static void overrides_apply_after_the_file_and_take_flow_lists(void** state) {
    (void)state;
    Config c;
    char err[512];
    char* over[] = {"train.steps=200", "engram.layers=[2,0]", "engram.vocab_bases=[1009, 1013]", "run.name=a:b", "model.tie_embeddings=false"};
    int rc = load_text_(&c, "train:\n  steps: 10\n  warmup_steps: 5\n", 5, over, err, sizeof err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(c.train.steps, 200);
    assert_int_equal(c.engram.layers.n, 2);
    assert_int_equal(c.engram.layers.v[0], 2);
    assert_int_equal(c.engram.vocab_bases.v[1], 1013);
    assert_string_equal(c.run.name, "a:b");
    assert_int_equal(c.model.tie_embeddings, 0);
    config_free(&c);
}

static void a_later_override_may_fix_an_earlier_inconsistency(void** state) {
    (void)state;
    Config c;
    char err[512];
    char* over[] = {"model.d_model=96", "model.n_heads=4"};   // 96/8 fine, then 96/4 fine; 96 with default 4 heads
    int rc = load_text_(&c, "model:\n  d_model: 64\n  n_heads: 8\n", 2, over, err, sizeof err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(c.model.d_model, 96);
    config_free(&c);
}

static void bad_overrides_name_the_command_line_position(void** state) {
    (void)state;
    char* o1[] = {"train.steps=5", "model.dmodel=64"};
    assert_refused_("{}\n", 2, o1, "command line:2: model.dmodel: unknown key", "did you mean model.d_model?");
    char* o2[] = {"train.steps"};
    assert_refused_("{}\n", 1, o2, "command line:1:", "expected key=value");
    char* o3[] = {"engram.heads_per_ngram=-2"};
    assert_refused_("{}\n", 1, o3, "command line:1: engram.heads_per_ngram: must be", "(got -2)");
    char* o4[] = {"model.n_heads=3"};
    assert_refused_("model:\n  d_model: 64\n", 1, o4, "command line:1: model.n_heads: must divide model.d_model = 64 (got 3)", NULL);
}

static void resolved_config_reads_back_to_the_same_config(void** state) {
    (void)state;
    Config a, b;
    char err[512];
    char* over[] = {"run.name=with space", "data.train=/data/*.bin", "run.dir=123", "sweep.rhos=[0.25, 0.75]",
                    "sweep.total_params=1.5e9", "engram.flavour=maxtext"};
    int rc = config_load(&a, ENGRAM_SOURCE_DIR "/configs/tiny.yaml", 6, over, err, sizeof err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(a.sweep.total_params, 1500000000LL);
    char* text = config_to_string(&a);
    rc = load_text_(&b, text, 0, NULL, err, sizeof err);
    if (rc) fail_msg("resolved config does not load: %s\n%s", err, text);
    char* text2 = config_to_string(&b);
    assert_string_equal(text, text2);
    assert_string_equal(b.run.name, "with space");
    assert_string_equal(b.run.dir, "123");
    assert_int_equal(b.engram.flavour, 1);
    free(text);
    free(text2);
    config_free(&a);
    config_free(&b);
}

static void every_key_has_a_valid_default_and_a_meaning(void** state) {
    (void)state;
    for (int i = 0; i < config_key_count(); i++) {
        const ConfigKey* k = config_key_at(i);
        assert_non_null(strchr(k->name, '.'));
        assert_true(strlen(k->doc) > 5);
        assert_ptr_equal(config_key_find(k->name), k);
    }
}

int main(void) {
    snprintf(tmpdir_, sizeof tmpdir_, "/tmp/engram_test_config_XXXXXX");
    if (!mkdtemp(tmpdir_)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_are_valid_and_resolved),
        cmocka_unit_test(precision_follows_the_device_unless_set),
        cmocka_unit_test(tiny_config_loads_with_its_values),
        cmocka_unit_test(list_order_is_kept_as_written),
        cmocka_unit_test(unknown_key_names_the_closest_valid_one),
        cmocka_unit_test(wrong_types_are_refused_with_file_line_and_value),
        cmocka_unit_test(out_of_range_values_are_refused),
        cmocka_unit_test(inconsistent_dimensions_are_refused),
        cmocka_unit_test(yaml_syntax_errors_name_the_line),
        cmocka_unit_test(overrides_apply_after_the_file_and_take_flow_lists),
        cmocka_unit_test(a_later_override_may_fix_an_earlier_inconsistency),
        cmocka_unit_test(bad_overrides_name_the_command_line_position),
        cmocka_unit_test(resolved_config_reads_back_to_the_same_config),
        cmocka_unit_test(every_key_has_a_valid_default_and_a_meaning),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir_);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir_);
    return rc;
}
