/*
 * config.h — run configuration: YAML files (libyaml), `key=value` overrides, defaults, validation
 * and the resolved config that runs and checkpoints record.
 *
 * Every key lives in one table (config.c) with its type, default, range and meaning; parsing,
 * overrides, printing, the docs (`engram config --keys`) and the range checks all walk it, so a
 * new key is one line there plus a field here. Cross-key rules (dimensions that must agree) are
 * in config_validate_.
 *
 * Errors read `FILE:LINE: key: what is wrong (got VALUE)`; overrides use `command line` as FILE
 * and the argument's position as LINE.
 */
#ifndef ENGRAM_CONFIG_H
#define ENGRAM_CONFIG_H

#include <stdint.h>
#include <stdio.h>

typedef struct { int n; int* v; } IntList;
typedef struct { int n; int64_t* v; } I64List;
typedef struct { int n; double* v; } F64List;

enum { LR_DECAY_COSINE = 0, LR_DECAY_CONSTANT = 1 };
enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 };
// train.precision; FP32 and BF16 are BackendPrecision's values, AUTO is resolved to one of them at load
enum { PRECISION_FP32 = 0, PRECISION_BF16 = 1, PRECISION_AUTO = 2 };
/* engram.flavour uses EngramFlavour's values (src/ngram_hash.h): 0 deepseek, 1 maxtext. */

typedef struct {
    struct { char* name; char* dir; int64_t seed; } run;
    struct { char* train; char* val; char* tokenizer; } data;
    struct {
        int vocab_size, d_model, n_layers, n_heads, seq_len, hc_mult, tie_embeddings;
        int d_ff;                   // 0 in the file means 4·d_model (resolved on load)
        double norm_eps, rope_base, init_std;
    } model;
    struct {
        IntList layers;             // block indices with an MoE FFN
        int experts, top_k, d_expert, shared_experts;
        double aux_loss_coef, capacity_factor;   // capacity 0 = dropless
    } moe;
    struct {
        IntList layers;             // block indices with Engram, order kept (decides the primes)
        int max_ngram, heads_per_ngram, head_dim, flavour, kernel_size;
        I64List vocab_bases;        // [max_ngram-1] base table size per order n = 2..N
        int64_t seed;
        double lr_mult, init_std, qk_norm_eps, conv_norm_eps;  // qk_norm_eps < 0: = model.norm_eps
        int64_t compressed_vocab_size;  // V' for runs without a tokenizer; 0 = from the tokenizer
        int64_t pad_id_compressed;      // -1 = from the tokenizer
        int64_t pad_id;                 // original id; -1 = the tokenizer's pad (else end-of-text)
    } engram;
    struct {
        int steps, batch_size, warmup_steps, eval_every, eval_batches, log_every, lr_decay;
        int max_bad_steps;
        int precision;              // PRECISION_FP32 | PRECISION_BF16
        double lr, weight_decay, grad_clip, beta1, beta2, adam_eps, min_lr_ratio;
    } train;
    struct { int every, keep; } checkpoint;
    struct { int device, expert_parallel; } parallel;
    struct { F64List rhos; int64_t total_params; } sweep;

    char* path;                     // the YAML file this came from ("" for defaults only)
    int* line;                      // [n_keys] line each key was set on; 0 = default
    char** origin;                  // [n_keys] file path, "command line", or NULL (default)
} Config;

/* The key table, for docs and tools. */
typedef enum { KEY_INT, KEY_I64, KEY_F64, KEY_BOOL, KEY_STR, KEY_ENUM, KEY_INTLIST, KEY_I64LIST,
               KEY_F64LIST } KeyType;
typedef struct {
    const char* name;       // dotted: "model.d_model"
    KeyType type;
    size_t offset;          // into Config
    const char* def;        // default as YAML text
    double min, max;        // inclusive range for numbers and list items
    const char* choices;    // KEY_ENUM: "a|b|c", index = stored value
    const char* doc;
} ConfigKey;

int config_key_count(void);
const ConfigKey* config_key_at(int i);
const ConfigKey* config_key_find(const char* name);

/* Defaults only (no file). Always succeeds. */
void config_defaults(Config* c);
/* Load PATH (may be NULL for defaults only), apply overrides ("key=value"), resolve derived
 * defaults and validate. Returns 0, or -1 with one line in err (no trailing newline). */
int config_load(Config* c, const char* path, int n_overrides, char** overrides, char* err,
                size_t errlen);
/* The same from YAML text (a checkpoint's /config); `where` names it in errors ("FILE:/config"). */
int config_load_string(Config* c, const char* text, const char* where, int n_overrides, char** overrides, char* err,
                       size_t errlen);
/* Apply one more override after loading, then re-validate (used by tools like `engram hash`). */
int config_override(Config* c, const char* assignment, int position, char* err, size_t errlen);
int config_validate(Config* c, char* err, size_t errlen);
void config_free(Config* c);

/* Resolved config as YAML (lists in flow style), loadable again. */
void config_write(const Config* c, FILE* f);
char* config_to_string(const Config* c);   // the same text, malloc'd
/* The value of one key as text, e.g. "[1, 3]"; malloc'd. */
char* config_value_string(const Config* c, const ConfigKey* k);
/* Markdown table of every key with type, default and meaning (docs/config.md). */
void config_write_keys_markdown(FILE* f);

#endif
