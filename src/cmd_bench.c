/*
 * cmd_bench.c — `engram bench WHAT`: benchmarks that print one JSON line of figures each.
 * Speed targets are checked by reading these figures, never by timed tests.
 */
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "common.h"

static const struct {
    const char* name;
    int (*run)(int argc, char** argv);
    const char* usage;
} BENCHES[] = {
    {"hash", bench_hash_main, "hash                           hashing throughput: 2 layers, N=3, H=8, 1M tokens"},
    {"tokenize", bench_tokenize_main, "tokenize [--tokenizer PATH] [--reps N] [FILE]   encode MB/s"},
    {"checkpoint", bench_checkpoint_main, "checkpoint CONFIG [k=v ...] [--dir DIR] [--reps N]   save/load MB/s vs fwrite+fsync/fread (mpirun-able)"},
    {"train", bench_train_main, "train CONFIG [k=v ...] [--steps N] [--warmup N]   single-rank tokens/s, GEMM share"},
    {"exchange", bench_exchange_main, "exchange CONFIG [k=v ...] [--steps N]   under mpirun: step split, exchange vs plain all-to-all"},
    {"experts", bench_experts_main, "experts CONFIG [k=v ...] [--steps N]   under mpirun: step time and per-rank parameter+optimizer memory at parallel.expert_parallel"},
};

int cmd_bench(int argc, char** argv) {
    const int n = (int)(sizeof BENCHES / sizeof *BENCHES);
    if (argc < 2 || cli_is_help(argv[1])) {
        FILE* f = argc < 2 ? stderr : stdout;
        for (int i = 0; i < n; i++) fprintf(f, "%s engram bench %s\n", i ? "      " : "usage:", BENCHES[i].usage);
        return argc < 2 ? ENGRAM_EXIT_USAGE : 0;
    }
    for (int i = 0; i < n; i++)
        if (!strcmp(argv[1], BENCHES[i].name)) return BENCHES[i].run(argc - 1, argv + 1);
    engram_fail("bench: unknown benchmark '%s'; see engram bench --help", argv[1]);
}
