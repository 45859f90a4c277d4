/*
 * fuzz_shards.c — libFuzzer target for the token shard reader: the bytes as a shard file through
 * shards_read, with the vocab size taken from the first input byte (0: the header's own V). Every
 * id of a shard that reads is below its vocab.
 */
#include <stdlib.h>

#include "fuzz.h"
#include "shards.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    static const int64_t vocabs[4] = {0, 50257, 300, 1};
    int64_t vocab = vocabs[data[0] & 3];
    const char* path = fuzz_write("shard.bin", data + 1, size - 1);
    TokenShard s;
    char err[2048];
    if (shards_read(path, vocab, &s, err, sizeof err) != 0) return 0;
    for (size_t i = 0; i < s.n; i++)
        if (s.ids[i] < 0 || s.ids[i] >= s.vocab) abort();
    shards_free(&s);
    return 0;
}
