/*
 * compress.h — Engram's vocabulary compression P: V → V' (spec/ENGRAM.md §2), with utf8proc:
 * the eight-step normaliser (NFKC, NFD, strip marks, per-character full lowercase, whitespace
 * runs → one space, lone space kept), the key rules (U+FFFD → raw token string; empty → raw text)
 * and first-seen ids over every original id.
 *
 * Not here: hashing (src/ngram_hash.h), loading tokenizers (src/tokenizer.h).
 */
#ifndef ENGRAM_COMPRESS_H
#define ENGRAM_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "tokenizer.h"

typedef struct {
    int64_t V;          // original ids 0..V-1
    int64_t Vc;         // V': distinct keys
    int32_t* lookup;    // [V] original id → compressed id
    char tokenizer[4096];          // the tokenizer file it was built from ("" without one)
    char tokenizer_sha256[65];     // that file's sha256 in hex (checkpoints record both)
} Compression;

/* The normaliser of §2.1 on UTF-8 text; appends the result to out. Invalid UTF-8 input is taken
 * as U+FFFD per bad byte sequence (callers pass valid text). */
void compress_normalize(const char* s, size_t n, ByteBuf* out);

/* §2.2 from per-id strings: decoded[i] (len dlen[i]) is the decode of id i alone, already UTF-8
 * (lossy: may contain U+FFFD); raw[i] is its raw token string (may be NULL when absent). */
void compress_build_keys(Compression* c, int64_t V, const char* const* decoded, const size_t* dlen,
                         const char* const* raw);
/* §2.2 over every id of a tokenizer. */
void compress_build(Compression* c, const Tokenizer* tk);
void compress_free(Compression* c);

/* The compression of a run: builds it from tk and sets cfg's engram.compressed_vocab_size,
 * engram.pad_id_compressed and engram.pad_id (the tokenizer's pad, else its end-of-text, unless
 * set). A config value that disagrees with the tokenizer is an error: -1 with one line in err. */
int compress_for_config(Compression* c, Config* cfg, const Tokenizer* tk, char* err, size_t errlen);

/* §2.3: ids ≥ 0 → lookup[id]; negative ids pass through. Ids ≥ V are the caller's error (checked
 * when shards are read); here they abort with a message. */
void compress_apply(const Compression* c, const int32_t* ids, size_t n, int64_t* out);

#endif
