/*
 * ngram_hash.c — Engram's n-gram hashing (spec/ENGRAM.md §3, Appendix A), exact to the DeepSeek
 * reference: numpy's default_rng stream (SeedSequence → PCG64 → Lemire bounded integers) for the
 * per-layer multipliers, deterministic Miller–Rabin for the distinct-prime table sizes, the flat
 * offsets, and the hash ids themselves (int64 "deepseek" or int32 "maxtext" arithmetic).
 *
 * Not here: tokenizer compression, config parsing (callers validate first; init re-checks and
 * dies), row ownership across ranks, the embedding tables.
 *
 * Hashing speed: every output is one floor modulo by a per-column prime. It is done with a
 * precomputed reciprocal (Barrett, one correction step; exact for every 64-bit value) instead of
 * a hardware division, and the positions are split across OpenMP threads (each output depends
 * only on the input, so the result is the same for any thread count).
 */
#include "ngram_hash.h"

#include <string.h>

#include "common.h"

/* ---- numpy SeedSequence (pool size 4) ----------------------------------------------------- */

#define SS_INIT_A 0x43b0d7e5u
#define SS_MULT_A 0x931e8875u
#define SS_INIT_B 0x8b51f9ddu
#define SS_MULT_B 0x58f38dedu
#define SS_MIX_MULT_L 0xca01f9ddu
#define SS_MIX_MULT_R 0x4973f715u

// h evolves across every hashmix call of one SeedSequence, as in numpy.
static uint32_t ss_hashmix_(uint32_t v, uint32_t* h) {
    v ^= *h;
    *h *= SS_MULT_A;
    v *= *h;
    return v ^ (v >> 16);
}

static uint32_t ss_mix_(uint32_t x, uint32_t y) {
    uint32_t r = SS_MIX_MULT_L * x - SS_MIX_MULT_R * y;
    return r ^ (r >> 16);
}

/* SeedSequence(seed).generate_state(4, uint64) → out [4]. A uint64 seed is at most 2 entropy
 * words, fewer than the pool, so the "extra entropy" loop of numpy never runs. */
static void ss_generate_state_(uint64_t seed, uint64_t out[4]) {
    uint32_t entropy[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    int n_entropy = (seed >> 32) ? 2 : 1;
    uint32_t pool[4], h = SS_INIT_A;
    for (int i = 0; i < 4; i++) pool[i] = ss_hashmix_(i < n_entropy ? entropy[i] : 0, &h);
    for (int src = 0; src < 4; src++)
        for (int dst = 0; dst < 4; dst++)
            if (src != dst) pool[dst] = ss_mix_(pool[dst], ss_hashmix_(pool[src], &h));
    uint32_t g = SS_INIT_B, words[8];
    for (int i = 0; i < 8; i++) {
        uint32_t w = pool[i % 4] ^ g;
        g *= SS_MULT_B;
        w *= g;
        words[i] = w ^ (w >> 16);
    }
    for (int i = 0; i < 4; i++) out[i] = (uint64_t)words[2 * i] | (uint64_t)words[2 * i + 1] << 32;
}

/* ---- PCG64 (XSL-RR 128/64) ------------------------------------------------------------------ */

#define PCG_MULT (((unsigned __int128)2549297995355413924ULL << 64) | 4865540595714422341ULL)

static void pcg_step_(NpRng* rng) { rng->state = rng->state * PCG_MULT + rng->inc; }

void nprng_seed(NpRng* rng, uint64_t seed) {
    uint64_t s[4];
    ss_generate_state_(seed, s);
    unsigned __int128 initstate = (unsigned __int128)s[0] << 64 | s[1];
    unsigned __int128 initseq = (unsigned __int128)s[2] << 64 | s[3];
    rng->inc = initseq << 1 | 1;
    rng->state = 0;
    pcg_step_(rng);
    rng->state += initstate;
    pcg_step_(rng);
    rng->has_cached = 0;
    rng->cached = 0;
}

uint64_t nprng_next64(NpRng* rng) {
    pcg_step_(rng);
    uint64_t x = (uint64_t)(rng->state >> 64) ^ (uint64_t)rng->state;
    unsigned rot = (unsigned)(rng->state >> 122);
    return (x >> rot) | (x << ((64 - rot) & 63));
}

// Low half first; the high half waits for the next 32-bit draw (numpy's has_uint32).
uint32_t nprng_next32(NpRng* rng) {
    if (rng->has_cached) {
        rng->has_cached = 0;
        return rng->cached;
    }
    uint64_t v = nprng_next64(rng);
    rng->has_cached = 1;
    rng->cached = (uint32_t)(v >> 32);
    return (uint32_t)v;
}

/* ---- Lemire bounded integers on the inclusive range [0, R] (numpy, no masking) -------------- */

static uint64_t lemire64_(NpRng* rng, uint64_t R) {
    const uint64_t excl = R + 1;
    unsigned __int128 m = (unsigned __int128)nprng_next64(rng) * excl;
    uint64_t lo = (uint64_t)m;
    if (lo < excl) {
        const uint64_t threshold = (UINT64_MAX - R) % excl;   // = 2^64 mod (R+1)
        while (lo < threshold) {
            m = (unsigned __int128)nprng_next64(rng) * excl;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

static uint32_t lemire32_(NpRng* rng, uint32_t R) {
    const uint32_t excl = R + 1;
    uint64_t m = (uint64_t)nprng_next32(rng) * excl;
    uint32_t lo = (uint32_t)m;
    if (lo < excl) {
        const uint32_t threshold = (UINT32_MAX - R) % excl;
        while (lo < threshold) {
            m = (uint64_t)nprng_next32(rng) * excl;
            lo = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

// Generator.integers(0, high, n, dtype=int64): numpy's random_bounded_uint64_fill.
void nprng_integers_i64(NpRng* rng, int64_t high, size_t n, int64_t* out) {
    if (high < 1) engram_die("the exclusive bound must be >= 1", "nprng_integers_i64: high=%lld",
                             (long long)high);
    const uint64_t R = (uint64_t)high - 1;
    for (size_t i = 0; i < n; i++) {
        if (R == 0) out[i] = 0;                                  // no draw at all
        else if (R == 0xFFFFFFFFULL) out[i] = nprng_next32(rng); // raw 32-bit draw
        else if (R < 0xFFFFFFFFULL) out[i] = lemire32_(rng, (uint32_t)R);
        else out[i] = (int64_t)lemire64_(rng, R);
    }
}

// Generator.integers(0, high, n, dtype=int32): R ≤ 2^31−2, so always the 32-bit Lemire path.
void nprng_integers_i32(NpRng* rng, int32_t high, size_t n, int32_t* out) {
    if (high < 1) engram_die("the exclusive bound must be >= 1", "nprng_integers_i32: high=%d",
                             (int)high);
    const uint32_t R = (uint32_t)high - 1;
    for (size_t i = 0; i < n; i++) out[i] = R == 0 ? 0 : (int32_t)lemire32_(rng, R);
}

/* ---- primes ------------------------------------------------------------------------------ */

static uint64_t mulmod_(uint64_t a, uint64_t b, uint64_t n) {
    return (uint64_t)((unsigned __int128)a * b % n);
}

static uint64_t powmod_(uint64_t a, uint64_t e, uint64_t n) {
    uint64_t r = 1;
    for (a %= n; e; e >>= 1, a = mulmod_(a, a, n))
        if (e & 1) r = mulmod_(r, a, n);
    return r;
}

// 1 when base a proves odd n = d·2^s + 1 composite.
static int mr_witness_(uint64_t n, uint64_t d, int s, uint64_t a) {
    uint64_t x = powmod_(a, d, n);
    if (x == 1 || x == n - 1) return 0;
    for (int i = 1; i < s; i++) {
        x = mulmod_(x, x, n);
        if (x == n - 1) return 0;
    }
    return 1;
}

/* The first 12 primes as bases decide every n < 3.3e24 (Sorenson & Webster), so all of uint64. */
int prime_is(uint64_t n) {
    static const uint64_t bases[12] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37};
    if (n < 2) return 0;
    for (int i = 0; i < 12; i++) {
        if (n == bases[i]) return 1;
        if (n % bases[i] == 0) return 0;
    }
    uint64_t d = n - 1;
    int s = 0;
    for (; !(d & 1); d >>= 1) s++;
    for (int i = 0; i < 12; i++)
        if (mr_witness_(n, d, s, bases[i])) return 0;
    return 1;
}

/* ---- init: multipliers, primes, offsets ---------------------------------------------------- */

int64_t ngram_hash_half_bound(EngramFlavour flavour, int64_t vocab_c) {
    if (vocab_c < 1) engram_die("engram.compressed_vocab_size must be >= 1",
                                "ngram_hash_half_bound: vocab_c=%lld", (long long)vocab_c);
    int64_t int_max = flavour == FLAVOUR_MAXTEXT ? INT32_MAX : INT64_MAX;
    int64_t half = int_max / vocab_c / 2;
    return half > 1 ? half : 1;
}

// The largest base we accept: keeps the prime search far from uint64/int64 wrap-around.
#define BASE_MAX ((int64_t)1 << 62)

static void check_sizes_(int max_ngram, int heads, const int64_t* vocab_bases, int64_t vocab_c,
                         EngramFlavour flavour) {
    if (max_ngram < 2) engram_die("engram.max_ngram must be >= 2", "max_ngram=%d", max_ngram);
    if (heads < 1) engram_die("engram.heads_per_ngram must be >= 1", "heads=%d", heads);
    if ((int64_t)(max_ngram - 1) * heads > INT32_MAX)
        engram_die("reduce engram.max_ngram or engram.heads_per_ngram", "(N-1)*H overflows int");
    if (vocab_c < 1) engram_die("engram.compressed_vocab_size must be >= 1", "vocab_c=%lld",
                                (long long)vocab_c);
    if (flavour != FLAVOUR_DEEPSEEK && flavour != FLAVOUR_MAXTEXT)
        engram_die("flavour is deepseek or maxtext", "unknown flavour %d", (int)flavour);
    if (flavour == FLAVOUR_MAXTEXT && vocab_c > INT32_MAX)
        engram_die("the maxtext flavour hashes int32 ids; use the deepseek flavour",
                   "vocab_c=%lld does not fit int32", (long long)vocab_c);
    if (!vocab_bases) engram_die("give engram.vocab_bases, one per order 2..N", "vocab_bases NULL");
    for (int i = 0; i < max_ngram - 1; i++)
        if (vocab_bases[i] < 1 || vocab_bases[i] > BASE_MAX)
            engram_die("engram.vocab_bases entries must be in [1, 2^62]", "vocab_bases[%d]=%lld",
                       i, (long long)vocab_bases[i]);
}

/* Layer ids seed numpy (seed + 10007·id must be a non-negative uint64) and name the per-layer
 * tables of the reference, so they are >= 0 and distinct. */
static void check_layers_(const int* layer_ids, int n_layers, uint64_t seed) {
    if (n_layers < 1 || !layer_ids)
        engram_die("list at least one block index in engram.layers", "n_layers=%d", n_layers);
    for (int l = 0; l < n_layers; l++) {
        if (layer_ids[l] < 0) engram_die("engram.layers are 0-based block indices (>= 0)",
                                         "layer_ids[%d]=%d", l, layer_ids[l]);
        if (seed > UINT64_MAX - 10007ULL * (uint64_t)layer_ids[l])
            engram_die("use a smaller engram.seed", "seed + 10007*%d overflows uint64",
                       layer_ids[l]);
        for (int k = 0; k < l; k++)
            if (layer_ids[k] == layer_ids[l])
                engram_die("engram.layers must not repeat a block index", "layer %d twice",
                           layer_ids[l]);
    }
}

// multipliers[l, k] = 2·r + 1, r = default_rng(seed + 10007·layer_id).integers(0, half_bound, N).
static void multipliers_draw_(NgramHash* nh, uint64_t seed) {
    const int N = nh->max_ngram;
    const int64_t half = ngram_hash_half_bound(nh->flavour, nh->vocab_c);
    int64_t* r64 = mallocCheck((size_t)N * sizeof(int64_t));
    int32_t* r32 = mallocCheck((size_t)N * sizeof(int32_t));
    for (int l = 0; l < nh->n_layers; l++) {
        NpRng rng;
        nprng_seed(&rng, seed + 10007ULL * (uint64_t)nh->layer_ids[l]);
        int64_t* m = nh->multipliers + (size_t)l * N;
        if (nh->flavour == FLAVOUR_MAXTEXT) {
            nprng_integers_i32(&rng, (int32_t)half, (size_t)N, r32);   // half < 2^30 here
            for (int k = 0; k < N; k++) m[k] = 2 * (int64_t)r32[k] + 1;
        } else {
            nprng_integers_i64(&rng, half, (size_t)N, r64);
            for (int k = 0; k < N; k++) m[k] = 2 * r64[k] + 1;
        }
        for (int k = 0; k < N; k++)   // 2r+1 < 2·half_bound ≤ INT_MAX/V' by construction
            if (nh->flavour == FLAVOUR_MAXTEXT && m[k] > INT32_MAX)
                engram_die("report this bug", "maxtext multiplier %lld does not fit int32",
                           (long long)m[k]);
    }
    free(r64);
    free(r32);
}

// Smallest prime > cur not in used[0..n_used). used is small ((N−1)·H per layer), a scan is fine.
static int64_t prime_next_(int64_t cur, const int64_t* used, size_t n_used) {
    for (int64_t p = cur + 1;; p++) {
        if (!prime_is((uint64_t)p)) continue;
        size_t i = 0;
        while (i < n_used && used[i] != p) i++;
        if (i == n_used) return p;
    }
}

// ONE used set across all layers (config order) and orders: the table_sizes array itself.
static void primes_assign_(NgramHash* nh, const int64_t* vocab_bases) {
    const int H = nh->heads;
    size_t n_used = 0;
    for (int l = 0; l < nh->n_layers; l++)
        for (int n = 2; n <= nh->max_ngram; n++) {
            int64_t cur = vocab_bases[n - 2] - 1;
            for (int j = 0; j < H; j++) {
                cur = prime_next_(cur, nh->table_sizes, n_used);
                nh->table_sizes[n_used++] = cur;   // index = l·H_total + (n−2)·H + j
                if (nh->flavour == FLAVOUR_MAXTEXT && cur > INT32_MAX)
                    engram_die("the maxtext flavour needs table sizes < 2^31; lower "
                               "engram.vocab_bases or use the deepseek flavour",
                               "prime %lld does not fit int32", (long long)cur);
            }
        }
}

static void offsets_fill_(NgramHash* nh) {
    for (int l = 0; l < nh->n_layers; l++) {
        const int64_t* size = nh->table_sizes + (size_t)l * nh->h_total;
        int64_t* off = nh->offsets + (size_t)l * nh->h_total;
        int64_t rows = 0;
        for (int c = 0; c < nh->h_total; c++) {
            off[c] = rows;
            if (size[c] > INT64_MAX - rows)
                engram_die("lower engram.vocab_bases or engram.heads_per_ngram",
                           "layer %d: table rows overflow int64", nh->layer_ids[l]);
            rows += size[c];
        }
        nh->rows[l] = rows;
    }
}

void ngram_hash_init(NgramHash* nh, const int* layer_ids, int n_layers, int max_ngram, int heads,
                     const int64_t* vocab_bases, int64_t vocab_c, int64_t pad_c, uint64_t seed,
                     EngramFlavour flavour) {
    check_layers_(layer_ids, n_layers, seed);
    check_sizes_(max_ngram, heads, vocab_bases, vocab_c, flavour);
    memset(nh, 0, sizeof(*nh));
    nh->n_layers = n_layers;
    nh->max_ngram = max_ngram;
    nh->heads = heads;
    nh->h_total = (max_ngram - 1) * heads;
    nh->flavour = flavour;
    nh->vocab_c = vocab_c;
    nh->pad_c = pad_c;
    const size_t L = (size_t)n_layers, C = L * (size_t)nh->h_total;
    nh->layer_ids = mallocCheck(L * sizeof(int));
    memcpy(nh->layer_ids, layer_ids, L * sizeof(int));
    nh->multipliers = mallocCheck(L * (size_t)max_ngram * sizeof(int64_t));
    nh->table_sizes = mallocCheck(C * sizeof(int64_t));
    nh->offsets = mallocCheck(C * sizeof(int64_t));
    nh->rows = mallocCheck(L * sizeof(int64_t));
    multipliers_draw_(nh, seed);
    primes_assign_(nh, vocab_bases);
    offsets_fill_(nh);
}

void ngram_hash_free(NgramHash* nh) {
    free(nh->layer_ids);
    free(nh->multipliers);
    free(nh->table_sizes);
    free(nh->offsets);
    free(nh->rows);
    memset(nh, 0, sizeof(*nh));
}

/* ---- hash ids ----------------------------------------------------------------------------- */

/* u mod p with recip = (2^64−1) div p ≥ 2^64/p − 1 (p ≥ 2): then u·recip/2^64 > u/p − 1, so
 * q = hi64(u·recip) is u div p or one less, and one conditional subtraction makes the remainder
 * exact for every uint64 u. */
static inline uint64_t mod_u64_(uint64_t u, uint64_t p, uint64_t recip) {
    uint64_t q = (uint64_t)(((unsigned __int128)u * recip) >> 64);
    uint64_t x = u - q * p;
    return x >= p ? x - p : x;
}

/* Floor modulo (numpy/JAX %), result in [0, p). For a < 0: ~a = −a−1 ≥ 0 and
 * a mod p = p − 1 − (~a mod p) = (~x) + p; s (all ones or zero) selects it without a branch. */
static inline int64_t floor_mod_(int64_t a, uint64_t p, uint64_t recip) {
    uint64_t s = a < 0 ? ~UINT64_C(0) : 0;   // all ones where a < 0 (no signed shift)
    uint64_t x = mod_u64_((uint64_t)a ^ s, p, recip);
    return (int64_t)((x ^ s) + (s & p));
}

/* One position: row [T] ids, out [H_total]. Products and XORs wrap in uint64; the maxtext flavour
 * keeps the low 32 bits sign-extended, which equals int32 arithmetic on int32-truncated ids
 * (truncation commutes with wrapping multiply and XOR). */
static inline void hash_position_(const int64_t* row, int64_t t, int64_t pad, int N, int H,
                                  int sext32, const uint64_t* restrict mult,
                                  const uint64_t* restrict P, const uint64_t* restrict recip,
                                  const int64_t* restrict off, int64_t* restrict out) {
    uint64_t acc = (uint64_t)row[t] * mult[0];
    for (int k = 1; k < N; k++) {
        uint64_t tok = (uint64_t)(t - k >= 0 ? row[t - k] : pad);
        acc ^= tok * mult[k];
        int64_t a = sext32 ? (int64_t)(int32_t)(uint32_t)acc : (int64_t)acc;
        const int c0 = (k - 1) * H;
        if (a >= 0)   // always, for valid ids: skip the sign fix-up
            for (int j = 0; j < H; j++)
                out[c0 + j] = (int64_t)mod_u64_((uint64_t)a, P[c0 + j], recip[c0 + j]) +
                              off[c0 + j];
        else
            for (int j = 0; j < H; j++)
                out[c0 + j] = floor_mod_(a, P[c0 + j], recip[c0 + j]) + off[c0 + j];
    }
}

/* Per-column constants of one layer in one buffer, [mult N | P HT | recip HT | off HT] with
 * HT = H_total, so the hot loop reads nothing from the NgramHash. */
typedef struct {
    uint64_t *mult, *P, *recip;
    int64_t* off;   // column offsets (global ids) or zeros (local ids)
} HashConsts;

static uint64_t* consts_build_(const NgramHash* nh, int li, int global, HashConsts* k) {
    const int N = nh->max_ngram, HT = nh->h_total;
    uint64_t* buf = mallocCheck(((size_t)N + 3 * (size_t)HT) * sizeof(uint64_t));
    k->mult = buf;
    k->P = buf + N;
    k->recip = k->P + HT;
    k->off = (int64_t*)(k->recip + HT);
    for (int j = 0; j < N; j++) k->mult[j] = (uint64_t)nh->multipliers[(size_t)li * N + j];
    for (int c = 0; c < HT; c++) {
        int64_t p = nh->table_sizes[(size_t)li * HT + c];
        if (p < 2)
            engram_die("table sizes are primes >= 2; build the NgramHash with ngram_hash_init",
                       "table_sizes[%d][%d]=%lld", li, c, (long long)p);
        k->P[c] = (uint64_t)p;
        k->recip[c] = UINT64_MAX / (uint64_t)p;
        k->off[c] = global ? nh->offsets[(size_t)li * HT + c] : 0;
    }
    return buf;
}

#define HASH_CHUNK 2048   // positions per OpenMP work item

void ngram_hash_ids(const NgramHash* nh, int li, const int64_t* ids, int B, int T, int global,
                    int64_t* out) {
    if (li < 0 || li >= nh->n_layers)
        engram_die("layer index is 0..n_layers-1, not a block id", "li=%d, n_layers=%d", li,
                   nh->n_layers);
    if (B < 0 || T < 0) engram_die("batch and sequence sizes are >= 0", "B=%d T=%d", B, T);
    const int N = nh->max_ngram, H = nh->heads, HT = nh->h_total;
    const int sext32 = nh->flavour == FLAVOUR_MAXTEXT;
    HashConsts k;
    uint64_t* buf = consts_build_(nh, li, global, &k);
    const int64_t pad = nh->pad_c, n_pos = (int64_t)B * T;
    const int64_t n_chunks = (n_pos + HASH_CHUNK - 1) / HASH_CHUNK;
    // chunks of positions, so (b, t) is divided out once per chunk, not once per position
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n_chunks > 4)
#endif
    for (int64_t ch = 0; ch < n_chunks; ch++) {
        const int64_t lo = ch * HASH_CHUNK, hi = lo + HASH_CHUNK < n_pos ? lo + HASH_CHUNK : n_pos;
        int64_t b = lo / T, t = lo - b * T;
        for (int64_t bt = lo; bt < hi; bt++) {
            hash_position_(ids + b * T, t, pad, N, H, sext32, k.mult, k.P, k.recip, k.off,
                           out + bt * (int64_t)HT);
            if (++t == T) t = 0, b++;
        }
    }
    free(buf);
}
