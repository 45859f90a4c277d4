/*
 * tokenizer_files.h — reading tokenizer files into a plain description (TokenizerSpec) that
 * src/tokenizer.c builds its tables from: Hugging Face tokenizer.json (BPE model) and GPT-2's
 * encoder.json + vocab.bpe. Every unsupported feature is refused here, with one line naming the
 * file and what it holds, so the encoder never meets a configuration it would get wrong.
 *
 * Not here: the BPE algorithm, regex compilation (src/tokenizer.c).
 */
#ifndef ENGRAM_TOKENIZER_FILES_H
#define ENGRAM_TOKENIZER_FILES_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char* content;       // UTF-8, NUL-terminated
    int32_t id;
    int special, normalized, lstrip, rstrip, single_word;
} TokAdded;

typedef struct {
    char path[4096];     // the file read (tokenizer.json or encoder.json)
    char sha256[65];     // of that file
    char** vocab;        // [n_vocab] model vocabulary by id (byte-level strings); NULL where unused
    int64_t n_vocab;     // max model id + 1
    int64_t V;           // max model or added id + 1
    char** merge_a;      // [n_merges] left and right halves, by rank
    char** merge_b;
    size_t n_merges;
    int ignore_merges;   // BPE option: a pre-token that is itself in the vocab is one id
    TokAdded* added;     // [n_added] added tokens in file order
    size_t n_added;
    char** split_regex;  // [n_split] Split(Regex, Isolated) pre-tokenizers run before ByteLevel
    int n_split;
    int byte_level_regex;   // ByteLevel use_regex: split with GPT-2's pattern
    int add_prefix_space;   // ByteLevel add_prefix_space
} TokenizerSpec;

/* path: a tokenizer.json, a directory holding tokenizer.json or encoder.json + vocab.bpe, or an
 * encoder.json (vocab.bpe beside it). 0 on success; -1 with one line in err. */
int tokfiles_read(const char* path, TokenizerSpec* spec, char* err, size_t errlen);
void tokfiles_free(TokenizerSpec* spec);

#endif
