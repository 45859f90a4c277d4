/*
 * fuzz_gpt2_files.c — libFuzzer target for GPT-2's tokenizer files: the bytes up to the first NUL
 * are encoder.json, the rest vocab.bpe, both written beside each other and loaded through
 * tokenizer_load of the directory; a tokenizer that loads encodes and decodes a short text.
 */

#include "fuzz.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    size_t n0, nrest;
    const uint8_t* rest;
    fuzz_split(data, size, &n0, &rest, &nrest);
    fuzz_write("encoder.json", data, n0);
    fuzz_write("vocab.bpe", rest ? rest : data, nrest);
    char err[2048];
    Tokenizer* tk = tokenizer_load(fuzz_dir(), err, sizeof err);
    if (!tk) return 0;
    fuzz_use_tokenizer(tk);
    return 0;
}
