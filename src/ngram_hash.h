/*
 * ngram_hash.h — Engram's n-gram hashing, exact to the DeepSeek reference (spec/ENGRAM.md §3 and
 * Appendix A): numpy's random stream re-done in C (SeedSequence → PCG64 → Lemire bounded integers),
 * the odd per-layer multipliers, the distinct-prime table sizes, the flattened offsets and the hash
 * ids themselves. Two flavours: "deepseek" (int64, the default) and "maxtext" (int32).
 *
 * Not here: tokenizer compression (src/tokenizer), row ownership across ranks (parallel/), tables.
 *
 * Ids going in are COMPRESSED ids (V' vocabulary); negative ids pass through the hash unchanged,
 * as in the reference. Shapes: ids [B,T]; hash ids [B,T,H_total] with column c = (n-2)·H + head.
 */
#ifndef ENGRAM_NGRAM_HASH_H
#define ENGRAM_NGRAM_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef enum { FLAVOUR_DEEPSEEK = 0, FLAVOUR_MAXTEXT = 1 } EngramFlavour;

/* ---- numpy's default_rng(seed) stream ---------------------------------------------------- */
typedef struct {
    unsigned __int128 state;
    unsigned __int128 inc;
    int has_cached;      // a high 32-bit half is waiting (next32 splits one next64)
    uint32_t cached;
} NpRng;

void nprng_seed(NpRng* rng, uint64_t seed);             // SeedSequence(seed) → PCG64
uint64_t nprng_next64(NpRng* rng);
uint32_t nprng_next32(NpRng* rng);
/* Generator.integers(0, high, size=n, dtype=int64 | int32); high ≥ 1. */
void nprng_integers_i64(NpRng* rng, int64_t high, size_t n, int64_t* out);
void nprng_integers_i32(NpRng* rng, int32_t high, size_t n, int32_t* out);

/* ---- primes ------------------------------------------------------------------------------ */
int prime_is(uint64_t n);                               // exact (deterministic Miller–Rabin)

/* ---- the hashing of all Engram layers of one model ---------------------------------------- */
typedef struct {
    int n_layers;            // number of Engram layers (= length of engram.layers)
    int max_ngram;           // N: orders 2..N are hashed
    int heads;               // H: heads per order
    int h_total;             // (N-1)·H columns per layer
    EngramFlavour flavour;
    int64_t vocab_c;         // V': compressed vocabulary size
    int64_t pad_c;           // compressed pad id, used before the sequence start
    int* layer_ids;          // [n_layers] block indices, in config order (decides the primes)
    int64_t* multipliers;    // [n_layers, N] odd multipliers; k pairs with look-back distance k
    int64_t* table_sizes;    // [n_layers, H_total] distinct primes
    int64_t* offsets;        // [n_layers, H_total] first row of each column in the flat table
    int64_t* rows;           // [n_layers] rows of each layer's flat table (Σ table_sizes)
} NgramHash;

/* half_bound = max(1, (INT_MAX div V') div 2), INT_MAX = 2^63-1 (deepseek) | 2^31-1 (maxtext):
 * the exclusive bound of the multiplier draws (spec §3.1). */
int64_t ngram_hash_half_bound(EngramFlavour flavour, int64_t vocab_c);

/* vocab_bases [N-1]: one base table size per order n = 2..N. Dies with a message on bad input
 * (callers validate configs first; this guards the library boundary). */
void ngram_hash_init(NgramHash* nh, const int* layer_ids, int n_layers, int max_ngram, int heads,
                     const int64_t* vocab_bases, int64_t vocab_c, int64_t pad_c, uint64_t seed,
                     EngramFlavour flavour);
void ngram_hash_free(NgramHash* nh);

/* Hash ids of layer index li (0..n_layers-1, not the block id) for a batch.
 * ids [B,T] compressed → out [B,T,H_total]; with global != 0 the column offset is added, giving
 * rows of the layer's flat table. */
void ngram_hash_ids(const NgramHash* nh, int li, const int64_t* ids, int B, int T, int global,
                    int64_t* out);

#endif
