/*
 * config.c — the key table and everything that walks it: YAML loading with line numbers
 * (libyaml's document API), `key=value` overrides (the value is parsed as YAML, so lists use flow
 * syntax: engram.layers=[1,3]), defaults, range and cross-key validation, and YAML output of the
 * resolved config.
 *
 * Not here: meaning. What a key does is the consumer's business; this file only guarantees that
 * every value a consumer reads is of the right type, in range and consistent with its neighbours.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common.h"

#define OFF(field) offsetof(Config, field)
#define BIG 9.2e18
/* name, type, offset, default, min, max, choices, doc */
static const ConfigKey KEYS[] = {
    {"run.name", KEY_STR, OFF(run.name), "run", 0, 0, NULL, "run name; the run directory is run.dir/run.name"},
    {"run.dir", KEY_STR, OFF(run.dir), "runs", 0, 0, NULL, "parent directory of run directories"},
    {"run.seed", KEY_I64, OFF(run.seed), "1234", 0, BIG, NULL, "seed for initialisation and data order"},
    {"data.train", KEY_STR, OFF(data.train), "", 0, 0, NULL, "glob of training token shards"},
    {"data.val", KEY_STR, OFF(data.val), "", 0, 0, NULL, "glob of validation token shards"},
    {"data.tokenizer", KEY_STR, OFF(data.tokenizer), "", 0, 0, NULL, "tokenizer.json, or a directory / encoder.json path of GPT-2's encoder.json + vocab.bpe"},
    {"model.vocab_size", KEY_INT, OFF(model.vocab_size), "50257", 1, INT_MAX, NULL, "V: rows of the token embedding"},
    {"model.d_model", KEY_INT, OFF(model.d_model), "128", 1, 1 << 20, NULL, "D: model width"},
    {"model.n_layers", KEY_INT, OFF(model.n_layers), "4", 1, 4096, NULL, "L: transformer blocks"},
    {"model.n_heads", KEY_INT, OFF(model.n_heads), "4", 1, 4096, NULL, "attention heads (must divide d_model; head width even for RoPE)"},
    {"model.seq_len", KEY_INT, OFF(model.seq_len), "128", 1, 1 << 24, NULL, "T: tokens per sequence"},
    {"model.hc_mult", KEY_INT, OFF(model.hc_mult), "1", 1, 64, NULL, "G: residual branches (hyper-connection multiplier)"},
    {"model.tie_embeddings", KEY_BOOL, OFF(model.tie_embeddings), "true", 0, 0, NULL, "output projection tied to the token embedding"},
    {"model.d_ff", KEY_INT, OFF(model.d_ff), "0", 0, 1 << 24, NULL, "F: dense SwiGLU width; 0 = 4·d_model"},
    {"model.norm_eps", KEY_F64, OFF(model.norm_eps), "1e-5", 0, 1, NULL, "epsilon of every RMSNorm unless said otherwise"},
    {"model.rope_base", KEY_F64, OFF(model.rope_base), "10000", 1, 1e12, NULL, "RoPE base"},
    {"model.init_std", KEY_F64, OFF(model.init_std), "0.02", 0, 10, NULL, "std of matrix init"},
    {"moe.layers", KEY_INTLIST, OFF(moe.layers), "[]", 0, 4095, NULL, "block indices whose FFN is MoE"},
    {"moe.experts", KEY_INT, OFF(moe.experts), "0", 0, 1 << 20, NULL, "E: routed experts"},
    {"moe.top_k", KEY_INT, OFF(moe.top_k), "2", 1, 1 << 20, NULL, "k: experts per token"},
    {"moe.d_expert", KEY_INT, OFF(moe.d_expert), "0", 0, 1 << 24, NULL, "F_e: expert hidden width; 0 = model.d_ff"},
    {"moe.shared_experts", KEY_INT, OFF(moe.shared_experts), "0", 0, 1024, NULL, "always-on experts"},
    {"moe.aux_loss_coef", KEY_F64, OFF(moe.aux_loss_coef), "0.01", 0, 1e6, NULL, "weight of the load-balance loss"},
    {"moe.capacity_factor", KEY_F64, OFF(moe.capacity_factor), "0", 0, 1e6, NULL, "expert capacity factor; 0 = no limit (dropless)"},
    {"engram.layers", KEY_INTLIST, OFF(engram.layers), "[]", 0, 4095, NULL, "block indices with an Engram layer, order kept (decides the primes)"},
    {"engram.max_ngram", KEY_INT, OFF(engram.max_ngram), "3", 2, 16, NULL, "N: n-gram orders 2..N are hashed"},
    {"engram.heads_per_ngram", KEY_INT, OFF(engram.heads_per_ngram), "4", 1, 1024, NULL, "H: hash heads per order"},
    {"engram.head_dim", KEY_INT, OFF(engram.head_dim), "32", 1, 1 << 16, NULL, "Dh: width of one table row"},
    {"engram.vocab_bases", KEY_I64LIST, OFF(engram.vocab_bases), "[]", 1, 4e18, NULL, "base table size per order n = 2..N (length max_ngram-1); primes chosen above each"},
    {"engram.seed", KEY_I64, OFF(engram.seed), "0", 0, 1e15, NULL, "hash-multiplier seed (the generator is seeded seed + 10007·layer)"},
    {"engram.flavour", KEY_ENUM, OFF(engram.flavour), "deepseek", 0, 0, "deepseek|maxtext", "hashing arithmetic: deepseek (int64, the reference) or maxtext (int32)"},
    {"engram.kernel_size", KEY_INT, OFF(engram.kernel_size), "4", 1, 64, NULL, "K: ShortConv taps"},
    {"engram.lr_mult", KEY_F64, OFF(engram.lr_mult), "5", 0, 1e6, NULL, "learning-rate multiplier of the tables"},
    {"engram.init_std", KEY_F64, OFF(engram.init_std), "0.02", 0, 10, NULL, "std of table-row init"},
    {"engram.qk_norm_eps", KEY_F64, OFF(engram.qk_norm_eps), "-1", -1, 1, NULL, "epsilon of the key/query RMSNorms; -1 = model.norm_eps"},
    {"engram.conv_norm_eps", KEY_F64, OFF(engram.conv_norm_eps), "1e-5", 0, 1, NULL, "epsilon of the ShortConv RMSNorm"},
    {"engram.compressed_vocab_size", KEY_I64, OFF(engram.compressed_vocab_size), "0", 0, 4e18, NULL, "V' for runs without a tokenizer; 0 = derived from data.tokenizer"},
    {"engram.pad_id_compressed", KEY_I64, OFF(engram.pad_id_compressed), "-1", -1, 4e18, NULL, "compressed pad id for runs without a tokenizer; -1 = derived"},
    {"engram.pad_id", KEY_I64, OFF(engram.pad_id), "-1", -1, 4e18, NULL, "original pad id (mapped through the compression); -1 = the tokenizer's pad, else end-of-text"},
    {"train.steps", KEY_INT, OFF(train.steps), "100", 1, INT_MAX, NULL, "optimizer steps"},
    {"train.batch_size", KEY_INT, OFF(train.batch_size), "8", 1, 1 << 24, NULL, "global sequences per step, split over ranks"},
    {"train.lr", KEY_F64, OFF(train.lr), "1e-3", 0, 10, NULL, "peak learning rate"},
    {"train.warmup_steps", KEY_INT, OFF(train.warmup_steps), "10", 0, INT_MAX, NULL, "linear warm-up steps; 0 = none"},
    {"train.lr_decay", KEY_ENUM, OFF(train.lr_decay), "cosine", 0, 0, "cosine|constant", "schedule after warm-up"},
    {"train.min_lr_ratio", KEY_F64, OFF(train.min_lr_ratio), "0.1", 0, 1, NULL, "final lr as a fraction of train.lr (cosine)"},
    {"train.weight_decay", KEY_F64, OFF(train.weight_decay), "0.1", 0, 10, NULL, "AdamW weight decay on matrices"},
    {"train.grad_clip", KEY_F64, OFF(train.grad_clip), "1.0", 0, 1e12, NULL, "clip by global gradient norm; 0 = off"},
    {"train.beta1", KEY_F64, OFF(train.beta1), "0.9", 0, 0.999999, NULL, "Adam beta1"},
    {"train.beta2", KEY_F64, OFF(train.beta2), "0.95", 0, 0.999999999, NULL, "Adam beta2"},
    {"train.adam_eps", KEY_F64, OFF(train.adam_eps), "1e-8", 0, 1, NULL, "Adam epsilon"},
    {"train.eval_every", KEY_INT, OFF(train.eval_every), "50", 0, INT_MAX, NULL, "steps between validation passes; 0 = only at the end"},
    {"train.eval_batches", KEY_INT, OFF(train.eval_batches), "4", 1, INT_MAX, NULL, "global batches per validation pass"},
    {"train.log_every", KEY_INT, OFF(train.log_every), "10", 1, INT_MAX, NULL, "steps between progress lines"},
    {"train.max_bad_steps", KEY_INT, OFF(train.max_bad_steps), "5", 1, INT_MAX, NULL, "non-finite steps in a row before the run stops"},
    {"train.precision", KEY_ENUM, OFF(train.precision), "auto", 0, 0, "fp32|bf16|auto", "GEMM precision: fp32; bf16 inputs with fp32 accumulation and fp32 master weights (parallel.device=cuda only); auto = bf16 on cuda, fp32 on the CPU"},
    {"checkpoint.every", KEY_INT, OFF(checkpoint.every), "100", 0, INT_MAX, NULL, "steps between checkpoints; 0 = only at the end"},
    {"checkpoint.keep", KEY_INT, OFF(checkpoint.keep), "3", 1, INT_MAX, NULL, "newest checkpoints kept"},
    {"parallel.device", KEY_ENUM, OFF(parallel.device), "cpu", 0, 0, "cpu|cuda", "compute device; cuda needs a -DENGRAM_CUDA=ON build and a GPU (one rank per GPU), and is refused without them (docs/gpu.md)"},
    {"parallel.expert_parallel", KEY_INT, OFF(parallel.expert_parallel), "1", 1, 1 << 20, NULL, "ranks the routed experts are sharded over (divides the world size; experts need not divide by it); 1 = replicated"},
    {"sweep.rhos", KEY_F64LIST, OFF(sweep.rhos), "[]", 0, 1, NULL, "ρ values of a sweep (share of the sparse budget held by routed experts)"},
    {"sweep.total_params", KEY_I64, OFF(sweep.total_params), "0", 0, 4e18, NULL, "P_tot target of a sweep"},
};
#define N_KEYS ((int)(sizeof(KEYS) / sizeof(KEYS[0])))

int config_key_count(void) { return N_KEYS; }
const ConfigKey* config_key_at(int i) { return (i >= 0 && i < N_KEYS) ? &KEYS[i] : NULL; }

const ConfigKey* config_key_find(const char* name) {
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(KEYS[i].name, name) == 0) return &KEYS[i];
    return NULL;
}

static int key_index_(const ConfigKey* k) { return (int)(k - KEYS); }
static void* field_(const Config* c, const ConfigKey* k) { return (char*)c + k->offset; }

/* ---- errors: one line, "where: key: what (got VALUE)" ------------------------------------ */

typedef struct { const char* file; int line; } Loc;

static int errf_(char* err, size_t n, Loc at, const char* key, const char* fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int errf_(char* err, size_t n, Loc at, const char* key, const char* fmt, ...) {
    int w = 0;
    if (at.file && at.line > 0) w = snprintf(err, n, "%s:%d: ", at.file, at.line);
    else if (at.file) w = snprintf(err, n, "%s: ", at.file);
    if (w < 0 || (size_t)w >= n) return -1;
    if (key) {
        int w2 = snprintf(err + w, n - w, "%s: ", key);
        if (w2 < 0 || (size_t)(w + w2) >= n) return -1;
        w += w2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + w, n - w, fmt, ap);
    va_end(ap);
    return -1;
}

static Loc key_loc_(const Config* c, const ConfigKey* k) {
    int i = key_index_(k);
    if (c->origin && c->origin[i]) return (Loc){c->origin[i], c->line[i]};
    return (Loc){c->path && c->path[0] ? c->path : "defaults", 0};
}

/* Closest key by edit distance, for "did you mean". */
static int edit_distance_(const char* a, const char* b) {
    size_t la = strlen(a), lb = strlen(b);
    int* prev = callocCheck(lb + 1, sizeof(int));
    int* cur = callocCheck(lb + 1, sizeof(int));
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        int* t = prev; prev = cur; cur = t;
    }
    int d = prev[lb];
    free(prev);
    free(cur);
    return d;
}

static const char* closest_key_(const char* name) {
    const char* best = KEYS[0].name;
    int best_d = INT_MAX;
    const char* dot = strrchr(name, '.');
    for (int i = 0; i < N_KEYS; i++) {
        int d = edit_distance_(name, KEYS[i].name);
        /* a right leaf under the wrong section ("train.d_model") is a near miss too */
        const char* kdot = strrchr(KEYS[i].name, '.');
        if (dot && kdot && strcmp(dot, kdot) == 0 && d > 2) d = 2;
        if (d < best_d) { best_d = d; best = KEYS[i].name; }
    }
    return best;
}

/* Sections are the key-name prefixes before the dot. */
static int section_is_(const ConfigKey* k, const char* name) {
    size_t n = strlen(name);
    return strncmp(k->name, name, n) == 0 && k->name[n] == '.';
}

static int is_section_(const char* name) {
    for (int i = 0; i < N_KEYS; i++)
        if (section_is_(&KEYS[i], name)) return 1;
    return 0;
}

static const char* closest_section_(const char* name) {
    static char best[64];
    int best_d = INT_MAX;
    for (int i = 0; i < N_KEYS; i++) {
        char sec[64];
        snprintf(sec, sizeof sec, "%.*s", (int)(strchr(KEYS[i].name, '.') - KEYS[i].name), KEYS[i].name);
        int d = edit_distance_(name, sec);
        if (d < best_d) { best_d = d; snprintf(best, sizeof best, "%s", sec); }
    }
    return best;
}

/* ---- typed values from YAML nodes ------------------------------------------------------- */

static int parse_i64_(const char* s, int64_t* out) {
    if (!s || !*s) return -1;
    errno = 0;
    char* end;
    long long v = strtoll(s, &end, 0);
    if (*end == '\0' && errno == 0) { *out = v; return 0; }
    /* 1e6 or 2.5e9 style, when it is an exact integer */
    errno = 0;
    double d = strtod(s, &end);
    if (*end != '\0' || errno != 0 || !isfinite(d) || d != floor(d) || fabs(d) > 9.0e18) return -1;
    *out = (int64_t)d;
    return 0;
}

static int parse_f64_(const char* s, double* out) {
    if (!s || !*s) return -1;
    errno = 0;
    char* end;
    double d = strtod(s, &end);
    if (*end != '\0' || errno == ERANGE || !isfinite(d)) return -1;
    *out = d;
    return 0;
}

static int parse_bool_(const char* s, int* out) {
    static const char* yes[] = {"true", "True", "TRUE", "yes", "Yes", "on", "On", "1"};
    static const char* no[] = {"false", "False", "FALSE", "no", "No", "off", "Off", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(*yes); i++) {
        if (strcmp(s, yes[i]) == 0) { *out = 1; return 0; }
        if (strcmp(s, no[i]) == 0) { *out = 0; return 0; }
    }
    return -1;
}

static int parse_enum_(const char* s, const char* choices, int* out) {
    size_t n = strlen(s);
    int idx = 0;
    for (const char* p = choices; *p; idx++) {
        const char* bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) { *out = idx; return 0; }
        p += len + (bar ? 1 : 0);
    }
    return -1;
}

static const char* type_word_(KeyType t) {
    switch (t) {
    case KEY_INT: case KEY_I64: return "an integer";
    case KEY_F64: return "a number";
    case KEY_BOOL: return "true or false";
    case KEY_STR: return "a string";
    case KEY_ENUM: return "one of";
    case KEY_INTLIST: case KEY_I64LIST: return "a list of integers, e.g. [1, 3]";
    case KEY_F64LIST: return "a list of numbers, e.g. [0.25, 0.5]";
    }
    return "?";
}

static int is_list_(KeyType t) { return t == KEY_INTLIST || t == KEY_I64LIST || t == KEY_F64LIST; }

static int range_err_(char* err, size_t n, Loc at, const ConfigKey* k, double v, const char* got) {
    if (v >= k->min && v <= k->max) return 0;
    if (k->max >= 1e18) return errf_(err, n, at, k->name, "must be >= %g (got %s)", k->min, got);
    return errf_(err, n, at, k->name, "must be in [%g, %g] (got %s)", k->min, k->max, got);
}

/* One scalar into a number of the key's element type, range-checked. */
static int scalar_number_(const ConfigKey* k, const char* s, Loc at, int64_t* iv, double* fv,
                          char* err, size_t n) {
    int want_int = k->type == KEY_INT || k->type == KEY_I64 || k->type == KEY_INTLIST ||
                   k->type == KEY_I64LIST;
    if (want_int) {
        if (parse_i64_(s, iv) != 0)
            return errf_(err, n, at, k->name, "must be %s (got %s)", type_word_(k->type), s);
        return range_err_(err, n, at, k, (double)*iv, s);
    }
    if (parse_f64_(s, fv) != 0)
        return errf_(err, n, at, k->name, "must be %s (got %s)", type_word_(k->type), s);
    return range_err_(err, n, at, k, *fv, s);
}

static void list_free_(const ConfigKey* k, void* f) {
    if (k->type == KEY_INTLIST) { free(((IntList*)f)->v); *(IntList*)f = (IntList){0, NULL}; }
    if (k->type == KEY_I64LIST) { free(((I64List*)f)->v); *(I64List*)f = (I64List){0, NULL}; }
    if (k->type == KEY_F64LIST) { free(((F64List*)f)->v); *(F64List*)f = (F64List){0, NULL}; }
}

static int set_list_(Config* c, const ConfigKey* k, yaml_document_t* doc, yaml_node_t* node,
                     Loc at, char* err, size_t n) {
    if (node->type != YAML_SEQUENCE_NODE)
        return errf_(err, n, at, k->name, "must be %s (got %s)", type_word_(k->type),
                     node->type == YAML_SCALAR_NODE ? (char*)node->data.scalar.value : "a mapping");
    int count = (int)(node->data.sequence.items.top - node->data.sequence.items.start);
    void* f = field_(c, k);
    list_free_(k, f);
    size_t elem = k->type == KEY_INTLIST ? sizeof(int) : k->type == KEY_I64LIST ? sizeof(int64_t) : sizeof(double);
    void* v = callocCheck(count ? count : 1, elem);
    for (int i = 0; i < count; i++) {
        yaml_node_t* item = yaml_document_get_node(doc, node->data.sequence.items.start[i]);
        Loc iat = {at.file, at.file && strcmp(at.file, "command line") == 0 ? at.line : (int)item->start_mark.line + 1};
        if (item->type != YAML_SCALAR_NODE) {
            free(v);
            return errf_(err, n, iat, k->name, "must be %s (got a nested list or mapping)", type_word_(k->type));
        }
        int64_t iv = 0;
        double fv = 0;
        if (scalar_number_(k, (char*)item->data.scalar.value, iat, &iv, &fv, err, n) != 0) { free(v); return -1; }
        if (k->type == KEY_INTLIST) ((int*)v)[i] = (int)iv;
        else if (k->type == KEY_I64LIST) ((int64_t*)v)[i] = iv;
        else ((double*)v)[i] = fv;
    }
    /* the three list structs share the {int n; T* v;} layout */
    ((IntList*)f)->n = count;
    ((IntList*)f)->v = v;
    return 0;
}

static int set_scalar_(Config* c, const ConfigKey* k, const char* s, Loc at, char* err, size_t n) {
    void* f = field_(c, k);
    int64_t iv = 0;
    double fv = 0;
    switch (k->type) {
    case KEY_INT:
        if (scalar_number_(k, s, at, &iv, &fv, err, n)) return -1;
        *(int*)f = (int)iv;
        return 0;
    case KEY_I64:
        if (scalar_number_(k, s, at, &iv, &fv, err, n)) return -1;
        *(int64_t*)f = iv;
        return 0;
    case KEY_F64:
        if (scalar_number_(k, s, at, &iv, &fv, err, n)) return -1;
        *(double*)f = fv;
        return 0;
    case KEY_BOOL:
        if (parse_bool_(s, (int*)f)) return errf_(err, n, at, k->name, "must be true or false (got %s)", s);
        return 0;
    case KEY_ENUM:
        if (parse_enum_(s, k->choices, (int*)f))
            return errf_(err, n, at, k->name, "must be one of %s (got %s)", k->choices, s);
        return 0;
    case KEY_STR:
        free(*(char**)f);
        *(char**)f = strdupCheck(strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ? "" : s);
        return 0;
    default:
        return errf_(err, n, at, k->name, "must be %s (got %s)", type_word_(k->type), s);
    }
}

static void mark_(Config* c, const ConfigKey* k, Loc at) {
    int i = key_index_(k);
    free(c->origin[i]);
    c->origin[i] = at.file ? strdupCheck(at.file) : NULL;
    c->line[i] = at.line;
}

static int set_node_(Config* c, const ConfigKey* k, yaml_document_t* doc, yaml_node_t* node, Loc at,
                     char* err, size_t n) {
    int rc;
    if (is_list_(k->type)) rc = set_list_(c, k, doc, node, at, err, n);
    else if (node->type != YAML_SCALAR_NODE)
        rc = errf_(err, n, at, k->name, "must be %s%s%s (got a %s)", type_word_(k->type),
                   k->type == KEY_ENUM ? " " : "", k->type == KEY_ENUM ? k->choices : "",
                   node->type == YAML_SEQUENCE_NODE ? "list" : "mapping");
    else rc = set_scalar_(c, k, (char*)node->data.scalar.value, at, err, n);
    if (rc == 0) mark_(c, k, at);
    return rc;
}

/* Parse a YAML text into a document; -1 with err on a syntax error. */
static int yaml_load_text_(yaml_document_t* doc, const unsigned char* text, size_t len, const char* where,
                           int line_base, char* err, size_t n) {
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, text, len);
    int ok = yaml_parser_load(&p, doc);
    if (!ok) {
        Loc at = {where, line_base ? line_base : (int)p.problem_mark.line + 1};
        errf_(err, n, at, NULL, "YAML syntax error: %s%s%s", p.problem ? p.problem : "unknown",
              p.context ? " " : "", p.context ? p.context : "");
    }
    yaml_parser_delete(&p);
    return ok ? 0 : -1;
}

static void config_resolve_(Config* c);

/* ---- files and overrides ------------------------------------------------------------------ */

static int walk_mapping_(Config* c, yaml_document_t* doc, yaml_node_t* map, const char* prefix,
                         const char* file, char* seen, char* err, size_t n) {
    for (yaml_node_pair_t* pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
        yaml_node_t* kn = yaml_document_get_node(doc, pr->key);
        yaml_node_t* vn = yaml_document_get_node(doc, pr->value);
        Loc at = {file, (int)kn->start_mark.line + 1};
        if (kn->type != YAML_SCALAR_NODE) return errf_(err, n, at, NULL, "keys must be plain names");
        char name[256];
        snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", (char*)kn->data.scalar.value);
        const ConfigKey* k = config_key_find(name);
        if (!prefix[0] && !k && !is_section_(name)) {
            return errf_(err, n, at, name, "unknown section; did you mean %s?", closest_section_(name));
        }
        if (!k && vn->type == YAML_MAPPING_NODE && !prefix[0]) {
            if (walk_mapping_(c, doc, vn, name, file, seen, err, n)) return -1;
            continue;
        }
        if (!k) {
            if (vn->type == YAML_MAPPING_NODE) return errf_(err, n, at, name, "unknown section; did you mean %s?", closest_key_(name));
            return errf_(err, n, at, name, "unknown key; did you mean %s?", closest_key_(name));
        }
        int idx = key_index_(k);
        if (seen[idx]) return errf_(err, n, at, name, "given twice in this file (first on line %d)", c->line[idx]);
        seen[idx] = 1;
        at.line = (int)vn->start_mark.line + 1;
        if (set_node_(c, k, doc, vn, at, err, n)) return -1;
    }
    return 0;
}

static int load_text_(Config* c, const unsigned char* text, size_t got, const char* path, char* err, size_t n) {
    yaml_document_t doc;
    int rc = yaml_load_text_(&doc, text, got, path, 0, err, n);
    if (rc) return -1;
    yaml_node_t* root = yaml_document_get_root_node(&doc);
    char* seen = callocCheck(N_KEYS, 1);
    if (root && root->type == YAML_MAPPING_NODE) rc = walk_mapping_(c, &doc, root, "", path, seen, err, n);
    else if (root && !(root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0))
        rc = errf_(err, n, (Loc){path, (int)root->start_mark.line + 1}, NULL,
                   "a config is a mapping of sections (run:, model:, ...), not a %s",
                   root->type == YAML_SEQUENCE_NODE ? "list" : "single value");
    free(seen);
    yaml_document_delete(&doc);
    return rc;
}

static int load_file_(Config* c, const char* path, char* err, size_t n) {
    FILE* f = fopen(path, "rb");
    if (!f) return errf_(err, n, (Loc){path, 0}, NULL, "cannot open config: %s", strerror(errno));
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char* text = mallocCheck((size_t)len + 1);
    size_t got = fread(text, 1, (size_t)len, f);
    fclose(f);
    int rc = load_text_(c, text, got, path, err, n);
    free(text);
    return rc;
}

/* One key=value into c, without the cross-key checks (a later override may fix an earlier one). */
static int override_apply_(Config* c, const char* assignment, int position, char* err, size_t n) {
    Loc at = {"command line", position};
    const char* eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return errf_(err, n, at, NULL, "expected key=value, e.g. train.steps=200 (got %s)", assignment);
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(eq - assignment), assignment);
    const ConfigKey* k = config_key_find(name);
    if (!k) return errf_(err, n, at, name, "unknown key; did you mean %s?", closest_key_(name));
    const char* val = eq + 1;
    int rc;
    if (is_list_(k->type) || val[0] == '[') {
        yaml_document_t doc;
        if (yaml_load_text_(&doc, (const unsigned char*)val, strlen(val), "command line", position, err, n)) return -1;
        yaml_node_t* root = yaml_document_get_root_node(&doc);
        if (!root) rc = errf_(err, n, at, name, "must be %s (got an empty value)", type_word_(k->type));
        else rc = set_node_(c, k, &doc, root, at, err, n);
        yaml_document_delete(&doc);
    } else {
        /* scalars are taken verbatim: values with colons or glob stars need no quoting */
        rc = set_scalar_(c, k, val, at, err, n);
        if (rc == 0) mark_(c, k, at);
    }
    return rc;
}

int config_override(Config* c, const char* assignment, int position, char* err, size_t n) {
    if (override_apply_(c, assignment, position, err, n)) return -1;
    config_resolve_(c);
    return config_validate(c, err, n);
}

/* ---- defaults, resolution, validation ----------------------------------------------------- */

void config_defaults(Config* c) {
    memset(c, 0, sizeof *c);
    c->path = strdupCheck("");
    c->line = callocCheck(N_KEYS, sizeof(int));
    c->origin = callocCheck(N_KEYS, sizeof(char*));
    char err[256];
    for (int i = 0; i < N_KEYS; i++) {
        const ConfigKey* k = &KEYS[i];
        yaml_document_t doc;
        if (yaml_load_text_(&doc, (const unsigned char*)k->def, strlen(k->def), "defaults", 0, err, sizeof err))
            engram_die("this is a bug in the key table", "default of %s: %s", k->name, err);
        yaml_node_t* root = yaml_document_get_root_node(&doc);
        int rc = (!root) ? set_scalar_(c, k, "", (Loc){"defaults", 0}, err, sizeof err)
                         : set_node_(c, k, &doc, root, (Loc){NULL, 0}, err, sizeof err);
        yaml_document_delete(&doc);
        if (rc) engram_die("this is a bug in the key table", "default of %s: %s", k->name, err);
    }
}

static int list_check_layers_(const Config* c, const char* key, const IntList* l, char* err, size_t n) {
    const ConfigKey* k = config_key_find(key);
    for (int i = 0; i < l->n; i++) {
        if (l->v[i] >= c->model.n_layers) {
            char* got = config_value_string(c, k);
            int rc = errf_(err, n, key_loc_(c, k), key, "block index %d is out of range for model.n_layers = %d; indices are 0..%d (got %s)",
                           l->v[i], c->model.n_layers, c->model.n_layers - 1, got);
            free(got);
            return rc;
        }
        for (int j = 0; j < i; j++)
            if (l->v[j] == l->v[i]) {
                char* got = config_value_string(c, k);
                int rc = errf_(err, n, key_loc_(c, k), key, "block %d is listed twice (got %s)", l->v[i], got);
                free(got);
                return rc;
            }
    }
    return 0;
}

/* A cross-key rule failed: report it at KEY's location with KEY's value. */
static int rule_err_(const Config* c, const char* key, char* err, size_t n, const char* fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int rule_err_(const Config* c, const char* key, char* err, size_t n, const char* fmt, ...) {
    const ConfigKey* k = config_key_find(key);
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char* got = config_value_string(c, k);
    errf_(err, n, key_loc_(c, k), key, "%s (got %s)", what, got);
    free(got);
    return -1;
}

int config_validate(Config* c, char* err, size_t n) {
    const int D = c->model.d_model, NH = c->model.n_heads;
    if (D % NH != 0) return rule_err_(c, "model.n_heads", err, n, "must divide model.d_model = %d", D);
    if ((D / NH) % 2 != 0)
        return rule_err_(c, "model.n_heads", err, n, "head width d_model/n_heads = %d must be even for RoPE", D / NH);
    if (list_check_layers_(c, "moe.layers", &c->moe.layers, err, n)) return -1;
    if (list_check_layers_(c, "engram.layers", &c->engram.layers, err, n)) return -1;
    if (c->moe.layers.n > 0) {
        if (c->moe.experts < 1) return rule_err_(c, "moe.experts", err, n, "must be >= 1 when moe.layers is not empty");
        if (c->moe.top_k > c->moe.experts)
            return rule_err_(c, "moe.top_k", err, n, "must be <= moe.experts = %d", c->moe.experts);
    }
    if (c->engram.layers.n > 0) {
        if (c->engram.vocab_bases.n != c->engram.max_ngram - 1)
            return rule_err_(c, "engram.vocab_bases", err, n, "needs one base per n-gram order 2..%d, i.e. %d values",
                             c->engram.max_ngram, c->engram.max_ngram - 1);
        int64_t vc = c->engram.compressed_vocab_size, pc = c->engram.pad_id_compressed;
        if (vc > 0 && pc >= vc)
            return rule_err_(c, "engram.pad_id_compressed", err, n, "must be < engram.compressed_vocab_size = %lld", (long long)vc);
        if (c->engram.flavour == 1 && vc > INT32_MAX)
            return rule_err_(c, "engram.compressed_vocab_size", err, n, "must be < 2^31 with engram.flavour = maxtext");
        for (int i = 0; i < c->engram.vocab_bases.n; i++)
            if (c->engram.flavour == 1 && c->engram.vocab_bases.v[i] > INT32_MAX / 2)
                return rule_err_(c, "engram.vocab_bases", err, n, "bases must be < 2^30 with engram.flavour = maxtext (int32 hashing)");
    }
    if (c->train.precision == PRECISION_BF16 && c->parallel.device != DEVICE_CUDA)
        return rule_err_(c, "train.precision", err, n, "bf16 runs on parallel.device=cuda only; use fp32 on the CPU");
    if (c->sweep.rhos.n > 0 && c->sweep.total_params <= 0)
        return rule_err_(c, "sweep.total_params", err, n, "must be > 0 when sweep.rhos is given");
    return 0;
}

/* Derived defaults; a value the user set is never touched. */
static void config_resolve_(Config* c) {
    if (c->model.d_ff == 0) c->model.d_ff = 4 * c->model.d_model;
    if (c->moe.d_expert == 0) c->moe.d_expert = c->model.d_ff;
    if (c->engram.qk_norm_eps < 0) c->engram.qk_norm_eps = c->model.norm_eps;
    if (c->train.precision == PRECISION_AUTO)   // a GPU trains in bf16; fp32 there is for tests
        c->train.precision = c->parallel.device == DEVICE_CUDA ? PRECISION_BF16 : PRECISION_FP32;
}

int config_load(Config* c, const char* path, int n_overrides, char** overrides, char* err, size_t n) {
    config_defaults(c);
    if (path) {
        free(c->path);
        c->path = strdupCheck(path);
        if (load_file_(c, path, err, n)) return -1;
    }
    for (int i = 0; i < n_overrides; i++)
        if (override_apply_(c, overrides[i], i + 1, err, n)) return -1;
    config_resolve_(c);
    return config_validate(c, err, n);
}

int config_load_string(Config* c, const char* text, const char* where, int n_overrides, char** overrides, char* err,
                       size_t n) {
    config_defaults(c);
    free(c->path);
    c->path = strdupCheck(where);
    if (load_text_(c, (const unsigned char*)text, strlen(text), where, err, n)) return -1;
    for (int i = 0; i < n_overrides; i++)
        if (override_apply_(c, overrides[i], i + 1, err, n)) return -1;
    config_resolve_(c);
    return config_validate(c, err, n);
}

void config_free(Config* c) {
    for (int i = 0; i < N_KEYS; i++) {
        const ConfigKey* k = &KEYS[i];
        void* f = field_(c, k);
        if (k->type == KEY_STR) { free(*(char**)f); *(char**)f = NULL; }
        if (is_list_(k->type)) list_free_(k, f);
        if (c->origin) free(c->origin[i]);
    }
    free(c->origin);
    free(c->line);
    free(c->path);
    c->origin = NULL;
    c->line = NULL;
    c->path = NULL;
}

/* ---- output --------------------------------------------------------------------------------- */

static int needs_quotes_(const char* s) {
    if (!*s) return 1;
    if (strpbrk(s, ":#{}[],&*!|>'\"%@`") || isspace((unsigned char)s[0]) || isspace((unsigned char)s[strlen(s) - 1])) return 1;
    int b;
    int64_t iv;
    double fv;
    /* a string that would read back as a number, bool or null */
    return parse_bool_(s, &b) == 0 || parse_i64_(s, &iv) == 0 || parse_f64_(s, &fv) == 0 ||
           strcmp(s, "~") == 0 || strcmp(s, "null") == 0;
}

char* config_value_string(const Config* c, const ConfigKey* k) {
    size_t cap = 64, len = 0;
    char* out = mallocCheck(cap);
    out[0] = '\0';
#define APPEND(...)                                                                           \
    do {                                                                                      \
        int need = snprintf(NULL, 0, __VA_ARGS__);                                            \
        while (len + (size_t)need + 1 > cap) out = reallocCheck(out, cap *= 2);               \
        len += (size_t)snprintf(out + len, cap - len, __VA_ARGS__);                           \
    } while (0)
    const void* f = field_(c, k);
    switch (k->type) {
    case KEY_INT: APPEND("%d", *(const int*)f); break;
    case KEY_I64: APPEND("%lld", (long long)*(const int64_t*)f); break;
    case KEY_F64: APPEND("%.17g", *(const double*)f); break;
    case KEY_BOOL: APPEND("%s", *(const int*)f ? "true" : "false"); break;
    case KEY_ENUM: {
        const char* p = k->choices;
        for (int i = 0; i < *(const int*)f && strchr(p, '|'); i++) p = strchr(p, '|') + 1;
        const char* bar = strchr(p, '|');
        APPEND("%.*s", (int)(bar ? (size_t)(bar - p) : strlen(p)), p);
        break;
    }
    case KEY_STR: {
        const char* s = *(char* const*)f ? *(char* const*)f : "";
        if (needs_quotes_(s)) {
            APPEND("\"");
            for (const char* q = s; *q; q++) {
                if (*q == '"' || *q == '\\') APPEND("\\%c", *q);
                else APPEND("%c", *q);
            }
            APPEND("\"");
        } else APPEND("%s", s);
        break;
    }
    case KEY_INTLIST: case KEY_I64LIST: case KEY_F64LIST: {
        const IntList* l = f;
        APPEND("[");
        for (int i = 0; i < l->n; i++) {
            if (i) APPEND(", ");
            if (k->type == KEY_INTLIST) APPEND("%d", ((const IntList*)f)->v[i]);
            else if (k->type == KEY_I64LIST) APPEND("%lld", (long long)((const I64List*)f)->v[i]);
            else APPEND("%.17g", ((const F64List*)f)->v[i]);
        }
        APPEND("]");
        break;
    }
    }
#undef APPEND
    return out;
}

void config_write(const Config* c, FILE* f) {
    char section[64] = "";
    for (int i = 0; i < N_KEYS; i++) {
        const ConfigKey* k = &KEYS[i];
        const char* dot = strchr(k->name, '.');
        int slen = (int)(dot - k->name);
        if ((int)strlen(section) != slen || strncmp(section, k->name, slen) != 0) {
            snprintf(section, sizeof section, "%.*s", slen, k->name);
            fprintf(f, "%s:\n", section);
        }
        char* v = config_value_string(c, k);
        fprintf(f, "  %s: %s\n", dot + 1, v);
        free(v);
    }
}

char* config_to_string(const Config* c) {
    char* buf = NULL;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    if (!f) engram_die(NULL, "open_memstream failed");
    config_write(c, f);
    fclose(f);
    return buf;
}

void config_write_keys_markdown(FILE* f) {
    fprintf(f, "| key | type | default | meaning |\n|---|---|---|---|\n");
    for (int i = 0; i < N_KEYS; i++) {
        const ConfigKey* k = &KEYS[i];
        const char* t = k->type == KEY_ENUM ? k->choices : type_word_(k->type);
        if (is_list_(k->type)) t = k->type == KEY_F64LIST ? "list of numbers" : "list of integers";
        fprintf(f, "| `%s` | %s | `%s` | %s |\n", k->name, t, k->def[0] ? k->def : "\"\"", k->doc);
    }
}
