/*
 * compress_tokenizer.c — compress_build: spec/ENGRAM.md §2.2 over every id of a loaded tokenizer.
 * Decodes each id alone (special tokens kept), makes the bytes text the way HF's decode does
 * (from_utf8_lossy), takes the raw token string, and hands all of it to compress_build_keys.
 *
 * Not here: the normaliser and the key rules (src/compress.c), tokenizer loading (src/tokenizer.c).
 * A thin wrapper so that src/compress.c links and is tested without the tokenizer.
 * (Kept as .c.in while src/tokenizer.c is being written: rename to .c when both are on one branch.)
 */
#include "compress.h"

#include "common.h"

void compress_build(Compression* c, const Tokenizer* tk) {
    int64_t V = tokenizer_vocab_size(tk);
    ByteBuf bytes = {0}, text = {0};       // text: every id's decoded text, back to back
    size_t* off = mallocCheck((size_t)(V + 1) * sizeof *off);
    for (int64_t i = 0; i < V; i++) {
        int32_t id = (int32_t)i;
        bytes.n = 0;
        tokenizer_decode(tk, &id, 1, &bytes);
        off[i] = text.n;
        tokenizer_utf8_lossy(bytes.v, bytes.n, &text);
    }
    off[V] = text.n;
    // Pointers only now: text.v moves while it grows (and is NULL if every text is empty).
    const char* base = text.v ? text.v : "";
    const char** decoded = mallocCheck((size_t)(V ? V : 1) * sizeof *decoded);
    const char** raw = mallocCheck((size_t)(V ? V : 1) * sizeof *raw);
    size_t* dlen = mallocCheck((size_t)(V ? V : 1) * sizeof *dlen);
    for (int64_t i = 0; i < V; i++) {
        decoded[i] = base + off[i];
        dlen[i] = off[i + 1] - off[i];
        raw[i] = tokenizer_token_string(tk, (int32_t)i);
    }
    compress_build_keys(c, V, decoded, dlen, raw);
    free(decoded);
    free(raw);
    free(dlen);
    free(off);
    free(bytes.v);
    free(text.v);
}
