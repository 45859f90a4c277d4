/*
 * bench.h — micro-benchmarks behind `engram bench ...`; each prints one JSON line on stdout.
 *
 * Not here: correctness checks (tests/), the command-line dispatch (src/cmd_bench.c).
 */
#ifndef ENGRAM_BENCH_H
#define ENGRAM_BENCH_H

/* `engram bench hash [--reps N] [--threads N]`: argv[0] is the subcommand name ("hash"), options
 * follow. Hashes a 1M-token batch with the default DeepSeek config; returns the exit status. */
int bench_hash_main(int argc, char** argv);
int bench_train_main(int argc, char** argv);
/* `mpirun -np P engram bench exchange CONFIG [k=v ...] [--steps N]` (parallel/bench_exchange.c) */
int bench_exchange_main(int argc, char** argv);
/* `engram bench checkpoint CONFIG [key=value ...] [--dir DIR] [--reps N]`: save/load MB/s at the
 * world size it runs at (plain or under mpirun) next to fwrite+fsync / fread of the same bytes. */
int bench_checkpoint_main(int argc, char** argv);

/* `engram bench tokenize [--tokenizer PATH] [--reps N] [FILE]`: encode MB/s of one text. */
int bench_tokenize_main(int argc, char** argv);

#endif
