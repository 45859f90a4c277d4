/*
 * bench.h — micro-benchmarks behind `engram bench ...`; each prints one JSON line on stdout.
 *
 * Not here: correctness checks (tests/), the model or training loop benchmarks' timing policy.
 */
#ifndef ENGRAM_BENCH_H
#define ENGRAM_BENCH_H

/* `engram bench hash [--reps N] [--threads N]`: argv[0] is the subcommand name ("hash"), options
 * follow. Hashes a 1M-token batch with the default DeepSeek config; returns the exit status. */
int bench_hash_main(int argc, char** argv);

/* `engram bench tokenize [--tokenizer PATH] [--reps N] [FILE]`: encode MB/s of one text. */
int bench_tokenize_main(int argc, char** argv);

#endif
