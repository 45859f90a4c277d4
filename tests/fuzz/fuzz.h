/*
 * fuzz.h — what the fuzz targets in tests/fuzz/ share: the libFuzzer entry point they define, and
 * a scratch directory for the readers that take a path (tokenizers, shards), so that fuzzing goes
 * through the same entry points a user's files do.
 *
 * Not here: main (libFuzzer's under ENGRAM_FUZZ, replay_main.c otherwise).
 */
#ifndef ENGRAM_FUZZ_H
#define ENGRAM_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

/* A directory of this process's own, made on first use and removed at exit. */
const char* fuzz_dir(void);
/* Write n bytes to fuzz_dir()/name; returns the path (static storage, one per name slot). */
const char* fuzz_write(const char* name, const void* bytes, size_t n);
/* Split data at its first NUL byte: *n0 bytes before it; *rest and *nrest after (NULL, 0 if none). */
void fuzz_split(const uint8_t* data, size_t size, size_t* n0, const uint8_t** rest, size_t* nrest);
/* Encode and decode a fixed text with a tokenizer that loaded (special token, non-ASCII, a stray
 * byte), then free it: what the tokenizer targets do with whatever loads. */
void fuzz_use_tokenizer(Tokenizer* tk);

#endif
