/*
 * bench_train.c — `engram bench train CONFIG [key=value ...] [--steps N] [--warmup N]`: single-rank
 * training throughput of a config on random tokens (fixed seed), with the share of step time spent
 * in GEMMs. Prints one JSON line. The PyTorch side of the comparison is
 * tests/reference/bench_torch.py; jobs/bench_model.sh runs both in one go.
 *
 * Not here: data loading, tokenization, multi-rank exchange (each has its own benchmark).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench.h"
#include "cli.h"
#include "common.h"
#include "ops.h"
#include "rng.h"
#include "train.h"

static int positive_(const char* opt, const char* v) {
    char* end;
    long n = strtol(v, &end, 10);
    if (*end || n < 0 || n > 1000000) engram_fail("bench train: %s must be a non-negative integer (got %s)", opt, v);
    return (int)n;
}

int bench_train_main(int argc, char** argv) {
    const char *path = NULL, *v;
    int steps = 10, warmup = 2;
    char** over = callocCheck(argc, sizeof(char*));
    int n_over = 0;
    for (int i = 1; i < argc; i++) {
        if ((v = cli_option(argc, argv, &i, "--steps"))) steps = positive_("--steps", v);
        else if ((v = cli_option(argc, argv, &i, "--warmup"))) warmup = positive_("--warmup", v);
        else if (argv[i][0] == '-') engram_fail("bench train: unknown option %s", argv[i]);
        else if (strchr(argv[i], '=')) over[n_over++] = argv[i];
        else path = argv[i];
    }
    if (!path) engram_fail("usage: engram bench train CONFIG [key=value ...] [--steps N] [--warmup N]");
    if (steps < 1) engram_fail("bench train: --steps must be >= 1");
    Config c;
    cli_load_config(&c, path, n_over, over);
    free(over);
    const int B = c.train.batch_size, T = c.model.seq_len, V = c.model.vocab_size;
    int32_t* x = mallocCheck((size_t)B * (T + 1) * sizeof(int32_t));
    for (size_t i = 0; i < (size_t)B * (T + 1); i++) x[i] = (int32_t)(rng_u64(7, 1, i) % (uint64_t)V);
    int32_t* y = mallocCheck((size_t)B * T * sizeof(int32_t));
    for (int b = 0; b < B; b++) memcpy(y + (size_t)b * T, x + (size_t)b * (T + 1) + 1, (size_t)T * sizeof(int32_t));
    Trainer tr;
    trainer_init(&tr, &c, B, (uint64_t)c.run.seed, NULL);
    for (int s = 0; s < warmup; s++) trainer_step(&tr, x, y, NULL);
    ops_gemm_seconds = 0.0;
    double t0 = engram_now(), loss = 0;
    for (int s = 0; s < steps; s++) loss = trainer_step(&tr, x, y, NULL);
    double dt = engram_now() - t0;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    const char* core = getenv("OPENBLAS_CORETYPE");
    printf("{\"bench\":\"train\",\"config\":\"%s\",\"impl\":\"engram\",\"params\":%zu,\"batch\":%d,\"seq_len\":%d,"
           "\"steps\":%d,\"seconds\":%.4f,\"step_ms\":%.2f,\"tokens_per_s\":%.0f,\"gemm_share\":%.3f,"
           "\"threads\":%d,\"openblas_coretype\":\"%s\",\"last_loss\":%.4f}\n",
           path, tr.model.tt.dense_numel, B, T, steps, dt, 1e3 * dt / steps, (double)B * T * steps / dt,
           ops_gemm_seconds / dt, threads, core ? core : "", loss);
    trainer_free(&tr);
    free(x);
    free(y);
    config_free(&c);
    return 0;
}
