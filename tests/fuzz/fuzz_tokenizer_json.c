/*
 * fuzz_tokenizer_json.c — libFuzzer target for the tokenizer.json reader: the bytes as a
 * tokenizer.json file through tokenizer_load (the reader, then the table building); a tokenizer
 * that loads encodes and decodes a short text.
 */
#include <stdlib.h>

#include "fuzz.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* path = fuzz_write("tokenizer.json", data, size);
    char err[2048];
    Tokenizer* tk = tokenizer_load(path, err, sizeof err);
    if (!tk) return 0;
    static const char text[] = "Hello, world!  It's 2024 <|endoftext|> \xce\xbb x\xff";
    IdVec ids = {0};
    ByteBuf bytes = {0};
    tokenizer_encode(tk, text, sizeof text - 1, &ids);
    tokenizer_decode(tk, ids.v, ids.n, &bytes);
    free(ids.v), free(bytes.v);
    tokenizer_free(tk);
    return 0;
}
