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
#include "comm.h"
#include "common.h"
#include "ops.h"
#include "rng.h"
#include "train.h"

/* Model FLOPs per trained token: 6·N_active (forward and backward of every weight a token meets:
 * the tied embedding counted once, as the output head; top_k of the routed experts) plus 12·L·D·T
 * for attention's scores and values; Engram table rows are looked up, not multiplied. The same
 * formula as tests/reference/bench_torch.py's. */
static double flops_per_token_(const Config* c, size_t dense_numel) {
    const double D = c->model.d_model, V = c->model.vocab_size;
    double active = (double)dense_numel - (c->model.tie_embeddings ? 0.0 : V * D);
    active -= (double)c->moe.layers.n * (c->moe.experts - c->moe.top_k) * 3.0 * D * c->moe.d_expert;
    return 6.0 * active + 12.0 * c->model.n_layers * D * c->model.seq_len;
}

/* Dense peak of one H100/H200 SXM (datasheet): bf16 tensor cores, plain fp32. */
#define PEAK_BF16 989.4e12
#define PEAK_FP32 66.9e12

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
    Comm w = {0};
    const int gpu = c.parallel.device != DEVICE_CPU;
    if (gpu) comm_init(&w, &argc, &argv);
    Trainer tr;
    const double t_init = engram_now();
    trainer_init(&tr, &c, B, (uint64_t)c.run.seed, gpu ? &w : NULL);
    const double init_s = engram_now() - t_init;   // the parameters drawn and sent, the tables too
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
    const double tps = (double)B * T * steps / dt, fpt = flops_per_token_(&c, tr.model.tt.dense_numel);
    char mfu[64] = "null";   // against a GPU's peak; none is claimed for a CPU
    if (gpu) snprintf(mfu, sizeof mfu, "%.4f", fpt * tps / (c.train.precision == PRECISION_BF16 ? PEAK_BF16 : PEAK_FP32));
    printf("{\"bench\":\"train\",\"config\":\"%s\",\"impl\":\"engram\",\"device\":\"%s\",\"precision\":\"%s\","
           "\"params\":%zu,\"batch\":%d,\"seq_len\":%d,\"steps\":%d,\"seconds\":%.4f,\"step_ms\":%.2f,"
           "\"tokens_per_s\":%.0f,\"flops_per_token\":%.4g,\"mfu\":%s,\"gemm_share\":%.3f,\"init_s\":%.2f,\"threads\":%d,"
           "\"openblas_coretype\":\"%s\",\"last_loss\":%.4f}\n",
           path, gpu ? "cuda" : "cpu", c.train.precision == PRECISION_BF16 ? "bf16" : "fp32", tr.model.tt.dense_numel,
           B, T, steps, dt, 1e3 * dt / steps, tps, fpt, mfu, gpu ? 0.0 : ops_gemm_seconds / dt, init_s, threads,
           core ? core : "", loss);
    trainer_free(&tr);
    if (gpu) comm_free(&w);
    free(x);
    free(y);
    config_free(&c);
    return 0;
}
