/*
 * bench.h — micro-benchmarks behind `engram bench ...`; each prints one JSON line on stdout.
 *
 * Not here: correctness checks (tests/), the command-line dispatch (src/cmd_bench.c).
 */
#ifndef ENGRAM_BENCH_H
#define ENGRAM_BENCH_H

#include <stdint.h>

#include "train.h"

/* `engram bench hash [--reps N] [--threads N]`: argv[0] is the subcommand name ("hash"), options
 * follow. Hashes a 1M-token batch with the default DeepSeek config; returns the exit status. */
int bench_hash_main(int argc, char** argv);
int bench_train_main(int argc, char** argv);
/* `mpirun -np P engram bench exchange CONFIG [k=v ...] [--steps N]` (parallel/bench_exchange.c) */
int bench_exchange_main(int argc, char** argv);
/* `mpirun -np P engram bench experts CONFIG [k=v ...] [--steps N]` (parallel/bench_experts.c) */
int bench_experts_main(int argc, char** argv);
/* Sequences [first, first+count) of step s's global batch of random tokens (seeded): x [count,T]
 * and its targets y [count,T]; the multi-rank benchmarks share it. */
void bench_fill_batch(int32_t* x, int32_t* y, int s, int T, int V, int first, int count);
/* The multi-rank benchmarks' start (parallel/bench_exchange.c): MPI, the arguments `CONFIG
 * [key=value ...] [--steps N]` (usage printed when they are wrong), the config, this rank's slice
 * [first, first+count) of the global batch and a Trainer on it. Returns the config path. */
const char* bench_mpi_start(int argc, char** argv, const char* usage, Comm* w, Config* c, Trainer* tr, int* first,
                            int* count, int* steps);
/* `engram bench checkpoint CONFIG [key=value ...] [--dir DIR] [--reps N]`: save/load MB/s at the
 * world size it runs at (plain or under mpirun) next to fwrite+fsync / fread of the same bytes. */
int bench_checkpoint_main(int argc, char** argv);

/* `engram bench tokenize [--tokenizer PATH] [--reps N] [FILE]`: encode MB/s of one text. */
int bench_tokenize_main(int argc, char** argv);

#endif
