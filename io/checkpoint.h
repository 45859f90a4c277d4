/*
 * checkpoint.h — HDF5 checkpoints (ARCHITECTURE.md §5, format in docs/checkpoint.md): one file per
 * checkpoint, written collectively by all ranks with parallel HDF5 (MPI-IO, each rank its
 * hyperslab of the row-sharded Engram tables), logical global shapes, so a checkpoint written at P
 * ranks loads at any P'. Saved as <dir>/step_XXXXXXXX.h5.tmp, closed, verified, renamed; <dir>/latest
 * names the newest complete one; the newest checkpoint.keep are kept.
 *
 * Not here: deciding when to save (src/ driver), the math of anything it stores.
 */
#ifndef ENGRAM_CHECKPOINT_H
#define ENGRAM_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "compress.h"
#include "config.h"
#include "train.h"

#define CHECKPOINT_FORMAT "engram-checkpoint"
#define CHECKPOINT_FORMAT_VERSION 2

/* Training state beyond the tensors. */
typedef struct {
    int64_t step;            // training steps done, skipped ones included (Adam's t = step − bad_steps)
    int64_t tokens_seen;     // global tokens consumed
    int64_t data_position;   // global sequences consumed, so a run resumes at any P
    uint64_t seed;           // run.seed (all randomness is counter-based on it)
    int world_size;          // P that wrote the file (informational)
    long bad_steps;          // steps skipped for non-finite values so far
} CkptState;

/* All ranks of tr->comm call it (tr->comm NULL: one process). Writes <dir>/step_%08lld.h5 for
 * st->step, then <dir>/latest, then removes all but the newest c->checkpoint.keep. comp may be
 * NULL (no tokenizer). Returns 0, or -1 with one line in err (same on every rank); a failed save
 * never touches the previous checkpoints. */
int checkpoint_save(const Trainer* tr, const Config* c, const Compression* comp, const CkptState* st,
                    const char* dir, char* err, size_t errlen);

/* Resolve PATH: a checkpoint file, or a directory whose `latest` names one. 0 or -1 with err. */
int checkpoint_resolve(const char* path, char* file, size_t n, char* err, size_t errlen);

/* The resolved YAML config stored in a checkpoint (malloc'd), to build the Trainer before loading;
 * NULL with err on a missing, truncated or foreign file or a newer format version. */
char* checkpoint_read_config(const char* file, char* err, size_t errlen);

/* Load file into tr, which was trainer_init'ed from the same config at any P; all ranks call it.
 * Refuses (−1, err) a file whose tensor shapes differ from tr's. Fills st. */
int checkpoint_load(Trainer* tr, const char* file, CkptState* st, char* err, size_t errlen);
/* 1 where checkpoint_load reads file's contiguous datasets out of a mapping of it (a local file
 * system, ENGRAM_CKPT_MMAP not 0: docs/checkpoint.md), 0 where it reads through HDF5 and MPI-IO. */
int checkpoint_load_maps(const char* file);

#endif
