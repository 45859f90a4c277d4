/*
 * dataset.h — training and validation data from token shards (docs/data.md): every shard matching
 * a glob, in name order, read whole and joined into one token stream, cut into sequences of T+1
 * tokens with stride T (sequence i is tokens [i·T, i·T + T + 1): x = the first T, y = the last T).
 * The global data position g counts sequences consumed; epoch e = g / n_seq visits the sequences in
 * a permutation fixed by (seed, e) (validation: in order). A step's global batch is the B sequences
 * at positions [g, g+B), split over ranks as ARCHITECTURE.md §4, so any P sees the same data and a
 * checkpoint's position resumes at any P.
 *
 * Not here: tokenization (engram tokenize), what the model does with the batch.
 */
#ifndef ENGRAM_DATASET_H
#define ENGRAM_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "shards.h"

typedef struct {
    int n_files;
    TokenShard* files;       // [n_files]
    int64_t* start;          // [n_files + 1] first token of each file in the stream
    int64_t n_tokens;
    int T;
    int64_t n_seq;           // sequences available
    uint64_t seed;
    int shuffle;             // 1: a fresh permutation each epoch; 0: in order
    char glob[1024];
} Dataset;

/* Every file matching glob; ids are checked < vocab. -1 with one line in err when nothing matches,
 * a shard is bad, or the stream is shorter than one sequence. */
int dataset_open(Dataset* d, const char* glob, int64_t vocab, int T, uint64_t seed, int shuffle, char* err,
                 size_t errlen);
void dataset_free(Dataset* d);

/* x, y [T] of the sequence at global position g. */
void dataset_sequence(const Dataset* d, int64_t g, int32_t* x, int32_t* y);
/* This rank's rows [count, T] of the global batch of B sequences at position g. */
void dataset_batch(const Dataset* d, int64_t g, int B, int P, int rank, int32_t* x, int32_t* y);

#endif
