/*
 * cmd_bench.c — `engram bench WHAT`: benchmarks that print one JSON line of figures each.
 * Speed targets are checked by reading these figures, never by timed tests.
 */
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "common.h"

int cmd_bench(int argc, char** argv) {
    if (argc < 2 || cli_is_help(argv[1])) {
        fprintf(argc < 2 ? stderr : stdout,
                "usage: engram bench hash      hashing throughput: 2 layers, N=3, H=8, 1M tokens\n"
                "       engram bench tokenize  encode MB/s: [--tokenizer PATH] [--reps N] [FILE]\n");
        return argc < 2 ? ENGRAM_EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "hash")) return bench_hash_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "tokenize")) return bench_tokenize_main(argc - 1, argv + 1);
    engram_fail("bench: unknown benchmark '%s'; see engram bench --help", argv[1]);
}
