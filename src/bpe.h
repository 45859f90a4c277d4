/*
 * bpe.h — the pieces of byte-level BPE that know nothing about files or regexes: GPT-2's
 * bytes_to_unicode map, hash tables (string → id, (id, id) → merge, piece → ids cache) and the
 * rank-based merge of one pre-token, exactly as Hugging Face's `Word::merge_all` (lowest rank
 * first, leftmost on ties).
 *
 * Not here: pre-tokenization, added tokens, loading (src/tokenizer.c, io/tokenizer_files.c).
 */
#ifndef ENGRAM_BPE_H
#define ENGRAM_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order (space → U+0120 'Ġ'). Code points are < BPE_BYTE_CP_LIMIT. */
#define BPE_BYTE_CP_LIMIT 324
uint32_t bpe_byte_to_cp(uint8_t b);
/* Inverse: the byte of a code point, or -1 if it is not one of the 256. */
int bpe_cp_to_byte(uint32_t cp);
/* UTF-8 of the byte-level string of bytes s[0..n) appended to out (1 or 2 bytes per input byte). */
void bpe_byte_level_string(const uint8_t* s, size_t n, ByteBuf* out);

uint64_t bpe_hash_bytes(const void* p, size_t n);

/* Open-addressing map from byte strings to int32 (the vocabulary). Keys are copied. */
typedef struct {
    uint64_t* hash;    // [cap] 0 = empty slot
    uint32_t* off;     // [cap] key offset in keys
    uint32_t* len;     // [cap] key length
    int32_t* val;      // [cap]
    char* keys;        // key bytes, back to back
    size_t n, cap, keys_n, keys_cap;
} StrMap;
void strmap_init(StrMap* m, size_t expected);
void strmap_free(StrMap* m);
/* Inserts or overwrites. */
void strmap_put(StrMap* m, const char* key, size_t n, int32_t val);
/* The value, or -1 when absent. */
int32_t strmap_get(const StrMap* m, const char* key, size_t n);

/* Merges: (left id, right id) → rank and merged id. */
typedef struct {
    uint64_t* key;     // [cap] left << 32 | right; UINT64_MAX = empty
    int32_t* rank;     // [cap]
    int32_t* merged;   // [cap]
    size_t n, cap;
} MergeMap;
void mergemap_init(MergeMap* m, size_t expected);
void mergemap_free(MergeMap* m);
/* Keeps the first (lowest) rank if a pair repeats, as HF does. */
void mergemap_put(MergeMap* m, int32_t a, int32_t b, int32_t rank, int32_t merged);
/* Slot index or -1. */
static inline long mergemap_find(const MergeMap* m, int32_t a, int32_t b) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t mask = m->cap - 1, i = (size_t)((k * 0x9E3779B97F4A7C15ULL) >> 20) & mask;
    for (;; i = (i + 1) & mask) {
        if (m->key[i] == k) return (long)i;
        if (m->key[i] == UINT64_MAX) return -1;
    }
}

/* Scratch of one merge: symbols and the heap, grown as needed. */
typedef struct {
    int32_t* id;       // [cap] symbol ids
    int32_t* prev;     // [cap] linked list over live symbols
    int32_t* next;
    uint64_t* heap;    // [hcap] rank << 32 | pos, min-heap
    int32_t* heap_new; // [hcap] merged id expected by each heap entry
    size_t cap, hcap, hn;
} BpeScratch;
void bpe_scratch_free(BpeScratch* s);

/* BPE of one pre-token given as initial symbol ids sym[0..n) (one per byte); appends the final
 * ids to out. */
void bpe_merge(const MergeMap* merges, const int32_t* sym, size_t n, BpeScratch* s, IdVec* out);

/* Piece bytes → ids, remembering every piece seen during one encode call. */
typedef struct {
    uint64_t* hash;    // [cap] 0 = empty
    uint32_t* key_off; // [cap] into keys
    uint32_t* key_len;
    uint32_t* ids_off; // [cap] into ids
    uint32_t* ids_len;
    ByteBuf keys;
    IdVec ids;
    size_t n, cap;
} PieceCache;
void piececache_free(PieceCache* c);
/* Pointer to the cached ids (count in *n_ids), or NULL. h: bpe_hash_bytes(key, n). */
const int32_t* piececache_get(const PieceCache* c, uint64_t h, const char* key, size_t n, size_t* n_ids);
void piececache_put(PieceCache* c, uint64_t h, const char* key, size_t n, const int32_t* ids, size_t n_ids);

#endif
