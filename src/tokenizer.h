/*
 * tokenizer.h — byte-level BPE tokenizers exact to Hugging Face `tokenizers`: loaded from a
 * tokenizer.json (BPE model, added/special tokens, Split pre-tokenizer regexes run with PCRE2,
 * ByteLevel) or from GPT-2's encoder.json + vocab.bpe; encode text → ids, decode ids → bytes.
 *
 * Not here: the Engram compression of the vocabulary (src/compress.h), token shards (io/).
 * Ids are int32: every vocabulary we load has < 2^31 entries.
 */
#ifndef ENGRAM_TOKENIZER_H
#define ENGRAM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct Tokenizer Tokenizer;   // opaque

/* A growable array of ids / bytes; free with free(v.v). */
typedef struct { int32_t* v; size_t n, cap; } IdVec;
typedef struct { char* v; size_t n, cap; } ByteBuf;

/* path: a tokenizer.json, a directory holding tokenizer.json or encoder.json + vocab.bpe, or the
 * path of an encoder.json (vocab.bpe beside it). NULL with one line in err on failure, naming the
 * file and what is wrong. */
Tokenizer* tokenizer_load(const char* path, char* err, size_t errlen);
void tokenizer_free(Tokenizer* tk);

/* V: number of ids including added tokens (max id + 1). */
int64_t tokenizer_vocab_size(const Tokenizer* tk);
/* The file actually read (tokenizer.json or encoder.json) and its sha256 in hex. */
const char* tokenizer_path(const Tokenizer* tk);
const char* tokenizer_sha256(const Tokenizer* tk);

/* Ids of text (UTF-8), appended to out; added/special tokens in the text are matched as HF does.
 * Safe to call from several threads on one Tokenizer (per-call scratch and piece cache). Invalid
 * UTF-8 is encoded byte by byte (no regex matches it); HF cannot take such text at all. */
void tokenizer_encode(const Tokenizer* tk, const char* text, size_t len, IdVec* out);
/* Bytes of ids, appended to out, special tokens kept (skip_special_tokens=False). For byte-level
 * BPE the bytes may be invalid UTF-8 for a single id; callers that need text apply
 * tokenizer_utf8_lossy (HF's decode does the same, giving U+FFFD). */
void tokenizer_decode(const Tokenizer* tk, const int32_t* ids, size_t n, ByteBuf* out);
/* HF's String::from_utf8_lossy: each maximal invalid sequence → U+FFFD. Appends to out. */
void tokenizer_utf8_lossy(const char* bytes, size_t n, ByteBuf* out);
/* The raw vocabulary string of an id ("Ġthe" for byte-level pieces; an added token's content);
 * NULL for an id that has none. */
const char* tokenizer_token_string(const Tokenizer* tk, int32_t id);
/* The pad token's id if the tokenizer has one, else its end-of-text token, else -1. */
int32_t tokenizer_default_pad_id(const Tokenizer* tk);
/* The end-of-text token (an added special token such as GPT-2's <|endoftext|> or DeepSeek's
 * <｜end▁of▁sentence｜>), else -1. `engram tokenize` puts it before every document. */
int32_t tokenizer_eot_id(const Tokenizer* tk);
/* GPT-2's bytes_to_unicode: the code point byte b is written as in byte-level token strings. */
uint32_t tokenizer_byte_to_codepoint(uint8_t b);

void idvec_push(IdVec* v, int32_t id);
void bytebuf_append(ByteBuf* b, const char* s, size_t n);

#endif
