/*
 * compress_tokenizer.c — compress_build: spec/ENGRAM.md §2.2 over every id of a loaded tokenizer.
 * Decodes each id alone (special tokens kept), makes the bytes text the way HF's decode does
 * (from_utf8_lossy), takes the raw token string, and hands all of it to compress_build_keys.
 *
 * Not here: the normaliser and the key rules (src/compress.c), tokenizer loading (src/tokenizer.c).
 * A thin wrapper so that src/compress.c links and is tested without the tokenizer. Also resolves a
 * run config's V' and compressed pad id from its tokenizer (compress_for_config).
 */
#include "compress.h"

#include <stdio.h>

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
    snprintf(c->tokenizer, sizeof c->tokenizer, "%s", tokenizer_path(tk));
    snprintf(c->tokenizer_sha256, sizeof c->tokenizer_sha256, "%s", tokenizer_sha256(tk));
    free(decoded);
    free(raw);
    free(dlen);
    free(off);
    free(bytes.v);
    free(text.v);
}

int compress_for_config(Compression* c, Config* cfg, const Tokenizer* tk, char* err, size_t errlen) {
    const char* where = cfg->path && cfg->path[0] ? cfg->path : "config";
    int64_t V = tokenizer_vocab_size(tk);
    if (cfg->model.vocab_size < V) {
        snprintf(err, errlen, "%s: model.vocab_size: smaller than the tokenizer's %lld ids (got %d); set model.vocab_size=%lld",
                 where, (long long)V, cfg->model.vocab_size, (long long)V);
        return -1;
    }
    int64_t pad = cfg->engram.pad_id >= 0 ? cfg->engram.pad_id : tokenizer_default_pad_id(tk);
    if (pad < 0 || pad >= V) {
        snprintf(err, errlen, "%s: engram.pad_id: not an id of the tokenizer %s (got %lld; it has %lld ids)", where,
                 tokenizer_path(tk), (long long)pad, (long long)V);
        return -1;
    }
    compress_build(c, tk);
    int64_t pad_c = c->lookup[pad];
    if (cfg->engram.compressed_vocab_size > 0 && cfg->engram.compressed_vocab_size != c->Vc) {
        snprintf(err, errlen, "%s: engram.compressed_vocab_size: conflicts with the tokenizer %s, which gives V' = %lld (got %lld); "
                 "remove the key", where, tokenizer_path(tk), (long long)c->Vc, (long long)cfg->engram.compressed_vocab_size);
        compress_free(c);
        return -1;
    }
    if (cfg->engram.pad_id_compressed >= 0 && cfg->engram.pad_id_compressed != pad_c) {
        snprintf(err, errlen, "%s: engram.pad_id_compressed: conflicts with the tokenizer %s, which maps pad id %lld to %lld (got %lld); "
                 "remove the key", where, tokenizer_path(tk), (long long)pad, (long long)pad_c,
                 (long long)cfg->engram.pad_id_compressed);
        compress_free(c);
        return -1;
    }
    cfg->engram.compressed_vocab_size = c->Vc;
    cfg->engram.pad_id_compressed = pad_c;
    cfg->engram.pad_id = pad;
    return 0;
}
