/*
 * bench_hash.c — `engram bench hash`: throughput of ngram_hash_ids on the DeepSeek demo config
 * (layers [1,15], N=3, H=8, bases [646400,646400], V'=129280, seed 0) over a 1M-token batch
 * (B=1024, T=1024) of fixed-seed random compressed ids, both layers, global row ids.
 * Prints one JSON line; "seconds" is the best of --reps timed passes (one pass = both layers).
 *
 * Not here: correctness (tests/unit/test_ngram_hash.c), tokenizer or table-lookup costs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench.h"
#include "common.h"
#include "ngram_hash.h"

static uint64_t splitmix_(uint64_t* s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int arg_int_(int argc, char** argv, int* i) {
    if (*i + 1 >= argc) engram_fail("bench hash: %s needs a value", argv[*i]);
    char* end;
    long v = strtol(argv[++*i], &end, 10);
    if (*end || v < 1 || v > 1000000)
        engram_fail("bench hash: %s must be a positive integer (got %s)", argv[*i - 1], argv[*i]);
    return (int)v;
}

int bench_hash_main(int argc, char** argv) {
    int reps = 5, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps")) reps = arg_int_(argc, argv, &i);
        else if (!strcmp(argv[i], "--threads")) threads = arg_int_(argc, argv, &i);
        else engram_fail("bench hash: unknown option %s (use --reps N, --threads N)", argv[i]);
    }
#ifdef _OPENMP
    if (threads) omp_set_num_threads(threads);
    threads = omp_get_max_threads();
#else
    threads = 1;
#endif
    const int layers[2] = {1, 15}, B = 1024, T = 1024;
    const int64_t bases[2] = {646400, 646400}, vocab_c = 129280;
    NgramHash nh;
    ngram_hash_init(&nh, layers, 2, 3, 8, bases, vocab_c, 2, 0, FLAVOUR_DEEPSEEK);
    const size_t n_tok = (size_t)B * T;
    int64_t* ids = mallocCheck(n_tok * sizeof(int64_t));                 // [B,T]
    int64_t* out = mallocCheck(2 * n_tok * nh.h_total * sizeof(int64_t)); // [2,B,T,H_total]
    uint64_t s = 20260101;
    for (size_t i = 0; i < n_tok; i++) ids[i] = (int64_t)(splitmix_(&s) % (uint64_t)vocab_c);
    double best = 1e30;
    for (int r = -1; r < reps; r++) {   // r = -1: untimed warm-up (page faults, thread start)
        double t0 = engram_now();
        for (int l = 0; l < 2; l++)
            ngram_hash_ids(&nh, l, ids, B, T, 1, out + (size_t)l * n_tok * nh.h_total);
        double dt = engram_now() - t0;
        if (r >= 0 && dt < best) best = dt;
    }
    printf("{\"bench\":\"hash\",\"tokens\":%zu,\"layers\":2,\"N\":3,\"H\":8,\"seconds\":%.6f,"
           "\"tokens_per_s\":%.0f,\"threads\":%d,\"reps\":%d}\n",
           n_tok, best, (double)n_tok / best, threads, reps);
    free(ids);
    free(out);
    ngram_hash_free(&nh);
    return 0;
}
