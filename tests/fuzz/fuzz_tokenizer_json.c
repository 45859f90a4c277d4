/*
 * fuzz_tokenizer_json.c — libFuzzer target for the tokenizer.json reader: the bytes as a
 * tokenizer.json file through tokenizer_load (the reader, then the table building); a tokenizer
 * that loads encodes and decodes a short text.
 */

#include "fuzz.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* path = fuzz_write("tokenizer.json", data, size);
    char err[2048];
    Tokenizer* tk = tokenizer_load(path, err, sizeof err);
    if (!tk) return 0;
    fuzz_use_tokenizer(tk);
    return 0;
}
