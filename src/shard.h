/*
 * shard.h — how work and rows are split over P ranks (ARCHITECTURE.md §4). Pure arithmetic, shared
 * by the exchange in parallel/, the data loader and tools such as `engram hash --world-size`, so
 * every part of the system agrees on who owns what.
 */
#ifndef ENGRAM_SHARD_H
#define ENGRAM_SHARD_H

#include <stdint.h>
#include <stdio.h>

/* Rows of a table split into P contiguous blocks of ceil(rows/P); the last ranks may own fewer
 * rows, or none when rows < P. */
static inline int64_t shard_block_rows(int64_t rows, int P) { return (rows + P - 1) / P; }
static inline int shard_row_owner(int64_t row, int64_t rows, int P) {
    return (int)(row / shard_block_rows(rows, P));
}
/* [*first, *first + *count) rows owned by rank r. */
static inline void shard_row_range(int64_t rows, int P, int r, int64_t* first, int64_t* count) {
    int64_t blk = shard_block_rows(rows, P), lo = blk * r, hi = lo + blk;
    if (lo > rows) lo = rows;
    if (hi > rows) hi = rows;
    *first = lo;
    *count = hi - lo;
}
/* The global batch of B sequences: the first (B mod P) ranks take one more. */
static inline void shard_batch_range(int B, int P, int r, int* first, int* count) {
    int base = B / P, extra = B % P;
    *count = base + (r < extra);
    *first = r * base + (r < extra ? r : extra);
}
/* Why a batch of B sequences cannot be split over P ranks (one would have none), named after where
 * the config came from, into err [n]; 0 where it can. Every rank knows B and P, so every rank refuses
 * together (a refusal by the ranks left without a sequence alone leaves the others in a collective). */
static inline int shard_batch_refused(int B, int P, const char* where, char* err, size_t n) {
    if (B >= P) return 0;
    snprintf(err, n, "%s: train.batch_size: %d sequences cannot be split over %d ranks; give train.batch_size=%d or "
             "more, or use at most %d ranks", where, B, P, P, B);
    return 1;
}

#endif
