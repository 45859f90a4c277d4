/*
 * harness.c — the scratch directory and helpers of fuzz.h, compiled into every fuzz target.
 */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir_[64];
static char paths_[4][128];

static void cleanup_(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir_);
    if (system(cmd)) {}
}

const char* fuzz_dir(void) {
    if (!dir_[0]) {
        snprintf(dir_, sizeof dir_, "/tmp/engram_fuzz_XXXXXX");
        if (!mkdtemp(dir_)) { perror("mkdtemp"); abort(); }
        atexit(cleanup_);
    }
    return dir_;
}

const char* fuzz_write(const char* name, const void* bytes, size_t n) {
    static int slot;
    char* p = paths_[slot++ % 4];
    snprintf(p, sizeof paths_[0], "%s/%s", fuzz_dir(), name);
    FILE* f = fopen(p, "wb");
    if (!f || fwrite(bytes, 1, n, f) != n || fclose(f)) { perror(p); abort(); }
    return p;
}

void fuzz_split(const uint8_t* data, size_t size, size_t* n0, const uint8_t** rest, size_t* nrest) {
    const uint8_t* nul = memchr(data, 0, size);
    *n0 = nul ? (size_t)(nul - data) : size;
    *rest = nul ? nul + 1 : NULL;
    *nrest = nul ? size - *n0 - 1 : 0;
}

void fuzz_use_tokenizer(Tokenizer* tk) {
    static const char text[] = "Hello, world!  It's 2024 <|endoftext|> \xce\xbb x\xff";
    IdVec ids = {0};
    ByteBuf bytes = {0};
    tokenizer_encode(tk, text, sizeof text - 1, &ids);
    tokenizer_decode(tk, ids.v, ids.n, &bytes);
    free(ids.v), free(bytes.v);
    tokenizer_free(tk);
}
