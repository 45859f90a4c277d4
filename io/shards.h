/*
 * shards.h — token shard files (docs/data.md, ARCHITECTURE.md §5).
 *
 * engram shards, little-endian, version 1:
 *   offset  0  8 bytes   magic "ENGRAMTK"
 *   offset  8  uint32    version = 1
 *   offset 12  uint32    vocab size V (every token is < V)
 *   offset 16  uint64    token count n
 *   offset 24  uint32[n] tokens
 * The file is exactly 24 + 4n bytes. llm.c shards are read too: 256 int32 header (magic 20240520,
 * version 1 = uint16 tokens or 2 = uint32 tokens, token count), then the tokens.
 *
 * Not here: which shard a rank reads, batching (the data loader).
 */
#ifndef ENGRAM_SHARDS_H
#define ENGRAM_SHARDS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SHARD_MAGIC "ENGRAMTK"
#define SHARD_VERSION 1
#define SHARD_HEADER_BYTES 24
#define SHARD_LLMC_MAGIC 20240520
#define SHARD_LLMC_HEADER_INTS 256

typedef enum { SHARD_ENGRAM = 1, SHARD_LLMC_U16 = 2, SHARD_LLMC_U32 = 3 } ShardFormat;

typedef struct {
    int32_t* ids;        // [n] token ids, each in [0, vocab)
    size_t n;
    int64_t vocab;       // the V ids were checked against
    ShardFormat format;
} TokenShard;

/* Read a whole shard (either format). vocab > 0: every id must be < vocab (and, for engram shards,
 * the header's V must not exceed it); vocab <= 0: the header's V (llm.c shards: ids only checked
 * to fit int32). 0, or -1 with one line in err naming the file (and position and id for a bad id). */
int shards_read(const char* path, int64_t vocab, TokenShard* out, char* err, size_t errlen);
void shards_free(TokenShard* s);

/* Streaming writer of an engram shard: tokens go to PATH.tmp, and close puts the file in place
 * only if PATH does not exist (link + unlink: never overwrites). */
typedef struct {
    FILE* f;
    char path[4096], tmp[4200];
    uint64_t n;
    uint32_t vocab;
} ShardWriter;
int shards_writer_open(ShardWriter* w, const char* path, uint32_t vocab, char* err, size_t errlen);
/* Ids must be in [0, vocab). */
int shards_writer_append(ShardWriter* w, const int32_t* ids, size_t n, char* err, size_t errlen);
int shards_writer_close(ShardWriter* w, char* err, size_t errlen);
/* Give up: remove the temporary file. */
void shards_writer_abort(ShardWriter* w);

#endif
