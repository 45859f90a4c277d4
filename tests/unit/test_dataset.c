/*
 * test_dataset.c — the data loader: shards joined in name order and cut into sequences of T+1
 * tokens with stride T; each epoch a permutation (every sequence exactly once); the same global
 * batch at any rank count; refusals for no match and too few tokens.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "rng.h"

static char dir_[256];

/* Two shards: tokens 0..n0-1 and n0..n0+n1-1 (mod 1000). */
static void write_shards_(int n0, int n1) {
    char path[512], err[256];
    int sizes[2] = {n0, n1}, next = 0;
    for (int f = 0; f < 2; f++) {
        snprintf(path, sizeof path, "%s/train_%06d.bin", dir_, f);
        remove(path);
        ShardWriter w;
        assert_int_equal(shards_writer_open(&w, path, 1000, err, sizeof err), 0);
        for (int i = 0; i < sizes[f]; i++, next++) {
            int32_t id = next % 1000;
            assert_int_equal(shards_writer_append(&w, &id, 1, err, sizeof err), 0);
        }
        assert_int_equal(shards_writer_close(&w, err, sizeof err), 0);
    }
}

static void sequences_are_windows_of_T_plus_1_with_stride_T_across_files(void** s) {
    (void)s;
    write_shards_(50, 31);
    char glob[512], err[256];
    snprintf(glob, sizeof glob, "%s/train_*.bin", dir_);
    Dataset d;
    assert_int_equal(dataset_open(&d, glob, 1000, 8, 1, 0, err, sizeof err), 0);
    assert_int_equal(d.n_tokens, 81);
    assert_int_equal(d.n_seq, 10);   // (81 - 1) / 8
    int32_t x[8], y[8];
    for (int g = 0; g < 12; g++) {   // wraps into a second epoch
        dataset_sequence(&d, g, x, y);
        int seq = g % 10;
        for (int t = 0; t < 8; t++) {
            assert_int_equal(x[t], seq * 8 + t);
            assert_int_equal(y[t], seq * 8 + t + 1);
        }
    }
    dataset_free(&d);
}

static void each_shuffled_epoch_visits_every_sequence_once(void** s) {
    (void)s;
    for (uint64_t n = 1; n < 300; n += 37) {
        char* seen = calloc(n, 1);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t p = rng_permute(i, n, 42, 3);
            assert_true(p < n);
            assert_false(seen[p]);
            seen[p] = 1;
        }
        free(seen);
    }
    /* different epochs, different orders */
    int same = 0;
    for (uint64_t i = 0; i < 100; i++) same += rng_permute(i, 100, 42, 0) == rng_permute(i, 100, 42, 1);
    assert_true(same < 20);
}

static void a_global_batch_is_the_same_at_any_rank_count(void** s) {
    (void)s;
    write_shards_(300, 200);
    char glob[512], err[256];
    snprintf(glob, sizeof glob, "%s/train_*.bin", dir_);
    Dataset d;
    assert_int_equal(dataset_open(&d, glob, 1000, 10, 7, 1, err, sizeof err), 0);
    enum { B = 7, T = 10 };
    int32_t whole_x[B * T], whole_y[B * T], x[B * T], y[B * T];
    dataset_batch(&d, 33, B, 1, 0, whole_x, whole_y);
    for (int P = 2; P <= 4; P++) {
        int row = 0;
        for (int r = 0; r < P; r++) {
            dataset_batch(&d, 33, B, P, r, x, y);
            int count = B / P + (r < B % P);
            assert_memory_equal(x, whole_x + row * T, (size_t)count * T * sizeof(int32_t));
            assert_memory_equal(y, whole_y + row * T, (size_t)count * T * sizeof(int32_t));
            row += count;
        }
        assert_int_equal(row, B);
    }
    dataset_free(&d);
}

static void no_match_and_short_streams_are_refused(void** s) {
    (void)s;
    char glob[512], err[512];
    Dataset d;
    snprintf(glob, sizeof glob, "%s/nothing_*.bin", dir_);
    assert_int_equal(dataset_open(&d, glob, 1000, 8, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "no token shards match"));
    write_shards_(3, 2);
    snprintf(glob, sizeof glob, "%s/train_*.bin", dir_);
    assert_int_equal(dataset_open(&d, glob, 1000, 8, 1, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "less than one sequence"));
    write_shards_(30, 2);
    assert_int_equal(dataset_open(&d, glob, 500, 8, 1, 0, err, sizeof err), -1);   // ids ≥ 500 inside
}

int main(void) {
    snprintf(dir_, sizeof dir_, "/tmp/engram_test_dataset_XXXXXX");
    if (!mkdtemp(dir_)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sequences_are_windows_of_T_plus_1_with_stride_T_across_files),
        cmocka_unit_test(each_shuffled_epoch_visits_every_sequence_once),
        cmocka_unit_test(a_global_batch_is_the_same_at_any_rank_count),
        cmocka_unit_test(no_match_and_short_streams_are_refused),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir_);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir_);
    return rc;
}
