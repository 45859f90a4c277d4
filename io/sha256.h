/*
 * sha256.h — SHA-256 (FIPS 180-4) of bytes and of files, for naming the exact tokenizer file a
 * checkpoint was built with. Small and dependency-free; not a general crypto library (no HMAC,
 * no constant-time guarantees).
 */
#ifndef ENGRAM_SHA256_H
#define ENGRAM_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];        // chaining state
    uint8_t block[64];    // pending input, `fill` bytes used
    size_t fill;
    uint64_t bytes;       // total input length
} Sha256;

void sha256_init(Sha256* s);
void sha256_update(Sha256* s, const void* data, size_t n);
/* hex: 64 lowercase hex digits + NUL. */
void sha256_final_hex(Sha256* s, char hex[65]);
void sha256_hex(const void* data, size_t n, char hex[65]);

#endif
