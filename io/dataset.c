/*
 * dataset.c — shards joined into one stream and cut into sequences (dataset.h).
 */
#include "dataset.h"

#include <glob.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "rng.h"
#include "shard.h"

int dataset_open(Dataset* d, const char* pattern, int64_t vocab, int T, uint64_t seed, int shuffle, char* err,
                 size_t errlen) {
    memset(d, 0, sizeof *d);
    snprintf(d->glob, sizeof d->glob, "%s", pattern);
    d->T = T, d->seed = seed, d->shuffle = shuffle;
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);   // sorted by name
    if (rc != 0 || g.gl_pathc == 0) {
        snprintf(err, errlen, "%s: no token shards match (make them with engram tokenize --out DIR, then point "
                 "data.train/data.val at DIR/train_*.bin / DIR/val_*.bin)", pattern);
        if (rc == 0) globfree(&g);
        return -1;
    }
    d->n_files = (int)g.gl_pathc;
    d->files = callocCheck(d->n_files, sizeof(TokenShard));
    d->start = callocCheck(d->n_files + 1, sizeof(int64_t));
    for (int i = 0; i < d->n_files; i++) {
        if (shards_read(g.gl_pathv[i], vocab, &d->files[i], err, errlen) != 0) {
            globfree(&g);
            dataset_free(d);
            return -1;
        }
        d->start[i + 1] = d->start[i] + (int64_t)d->files[i].n;
    }
    globfree(&g);
    d->n_tokens = d->start[d->n_files];
    d->n_seq = d->n_tokens > T ? (d->n_tokens - 1) / T : 0;
    if (d->n_seq == 0) {
        snprintf(err, errlen, "%s: %lld tokens is less than one sequence of model.seq_len + 1 = %d tokens", pattern,
                 (long long)d->n_tokens, T + 1);
        dataset_free(d);
        return -1;
    }
    return 0;
}

void dataset_free(Dataset* d) {
    for (int i = 0; i < d->n_files; i++) shards_free(&d->files[i]);
    free(d->files);
    free(d->start);
    memset(d, 0, sizeof *d);
}

/* Token k of the stream. Files are few: a linear scan is fine, and keeps the code obvious. */
static int32_t token_(const Dataset* d, int64_t k) {
    int f = 0;
    while (k >= d->start[f + 1]) f++;
    return d->files[f].ids[k - d->start[f]];
}

void dataset_sequence(const Dataset* d, int64_t g, int32_t* x, int32_t* y) {
    int64_t epoch = g / d->n_seq, i = g % d->n_seq;
    int64_t seq = d->shuffle ? (int64_t)rng_permute((uint64_t)i, (uint64_t)d->n_seq, d->seed, (uint64_t)epoch) : i;
    int64_t k = seq * d->T;
    for (int t = 0; t < d->T; t++) {
        x[t] = token_(d, k + t);
        y[t] = token_(d, k + t + 1);
    }
}

void dataset_batch(const Dataset* d, int64_t g, int B, int P, int rank, int32_t* x, int32_t* y) {
    int first, count;
    shard_batch_range(B, P, rank, &first, &count);
    for (int b = 0; b < count; b++)
        dataset_sequence(d, g + first + b, x + (size_t)b * d->T, y + (size_t)b * d->T);
}
