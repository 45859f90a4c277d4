/*
 * rng.h — counter-based random numbers for initialisation and data order: the value at index i of
 * stream s depends only on (seed, s, i), never on how work is split, so a tensor or a table
 * initialised on P ranks (each its own rows) equals the one initialised on one rank.
 */
#ifndef ENGRAM_RNG_H
#define ENGRAM_RNG_H

#include <math.h>
#include <stdint.h>

static inline uint64_t rng_mix(uint64_t x) {   // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline uint64_t rng_u64(uint64_t seed, uint64_t stream, uint64_t i) {
    return rng_mix(rng_mix(seed ^ rng_mix(stream)) ^ i);
}

/* uniform in (0, 1) */
static inline double rng_uniform(uint64_t seed, uint64_t stream, uint64_t i) {
    return ((double)(rng_u64(seed, stream, i) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* standard normal (Box–Muller on two independent uniforms of the same counter) */
static inline double rng_normal(uint64_t seed, uint64_t stream, uint64_t i) {
    double u1 = rng_uniform(seed, stream, 2 * i), u2 = rng_uniform(seed, stream, 2 * i + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* A stream id for a name (FNV-1a), so each tensor draws its own numbers. */
static inline uint64_t rng_stream(const char* name) {
    uint64_t h = 1469598103934665603ULL;
    for (; *name; name++) h = (h ^ (unsigned char)*name) * 1099511628211ULL;
    return h;
}

/* A permutation of [0, n) chosen by (seed, stream), evaluated one index at a time: a 4-round
 * Feistel network on the smallest even power of two ≥ n, cycle-walking values ≥ n back in. No
 * table, so shuffling a data set of any size costs nothing up front. */
static inline uint64_t rng_permute(uint64_t i, uint64_t n, uint64_t seed, uint64_t stream) {
    if (n <= 1) return 0;
    int bits = 2;
    while ((UINT64_C(1) << bits) < n) bits += 2;
    const int h = bits / 2;
    const uint64_t mask = (UINT64_C(1) << h) - 1;
    uint64_t x = i;
    do {
        uint64_t l = x >> h, r = x & mask;
        for (uint64_t round = 0; round < 4; round++) {
            uint64_t f = rng_u64(seed, stream, (round << 58) ^ r) & mask;
            uint64_t t = r;
            r = l ^ f;
            l = t;
        }
        x = (l << h) | r;
    } while (x >= n);
    return x;
}

#endif
