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

#endif
