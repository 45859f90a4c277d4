/*
 * tokenizer_files.c — tokenizer files → TokenizerSpec (tokenizer_files.h).
 *
 * tokenizer.json (Hugging Face): model BPE (vocab map; merges as "a b" strings or [a, b] pairs),
 * added_tokens, normalizer null or an empty Sequence, pre_tokenizer ByteLevel or a Sequence of
 * Split(Regex|String, Isolated, invert false) ending in ByteLevel(use_regex false) — DeepSeek-V3's
 * layout —, post_processor and decoder null or ByteLevel. GPT-2: encoder.json (token → id) and
 * vocab.bpe (first line "#version: ...", then one merge "a b" a line), with <|endoftext|> as a
 * special added token, as Hugging Face's GPT-2 tokenizer.json has it.
 *
 * Not here: building lookup tables or checking that merges resolve (src/tokenizer.c).
 */
#include "tokenizer_files.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "sha256.h"

static int is_dir_(const char* p) { struct stat st; return stat(p, &st) == 0 && S_ISDIR(st.st_mode); }
static int is_file_(const char* p) { struct stat st; return stat(p, &st) == 0 && S_ISREG(st.st_mode); }

/* 1-based line of byte offset off in text, for JSON syntax errors. */
static int line_of_(const char* text, size_t off) {
    int line = 1;
    for (size_t i = 0; i < off; i++) line += text[i] == '\n';
    return line;
}

static cJSON* parse_json_(const char* path, char** text_out, size_t* len, char* err, size_t errlen) {
    size_t n;
    char* text = engram_read_file(path, &n);
    if (!text) { engram_errf(err, errlen, "%s: cannot read tokenizer file", path); return NULL; }
    const char* end = NULL;
    cJSON* root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!root) {
        size_t off = end ? (size_t)(end - text) : 0;
        engram_errf(err, errlen, "%s:%d: not valid JSON", path, line_of_(text, off < n ? off : n));
        free(text);
        return NULL;
    }
    *text_out = text;
    *len = n;
    return root;
}

static void set_v_(TokenizerSpec* s, int64_t id) { if (id + 1 > s->V) s->V = id + 1; }

/* Vocab object {"token": id, ...} → s->vocab[id]. */
static int read_vocab_(const char* path, const cJSON* vocab, TokenizerSpec* s, char* err, size_t n) {
    if (!cJSON_IsObject(vocab)) return engram_errf(err, n, "%s: model.vocab must be an object {token: id}", path);
    int64_t maxid = -1;
    for (const cJSON* e = vocab->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= 2147483647.0 ||
            e->valuedouble != (double)(int64_t)e->valuedouble)
            return engram_errf(err, n, "%s: vocab entry \"%s\" has no valid id", path, e->string);
        if ((int64_t)e->valuedouble > maxid) maxid = (int64_t)e->valuedouble;
    }
    s->vocab = callocCheck((size_t)(maxid + 1), sizeof(char*));
    s->n_vocab = maxid + 1;   // before the loop: tokfiles_free must see the entries an error leaves
    for (const cJSON* e = vocab->child; e; e = e->next) {
        int64_t id = (int64_t)e->valuedouble;
        if (s->vocab[id]) return engram_errf(err, n, "%s: id %lld appears twice in the vocab", path, (long long)id);
        s->vocab[id] = strdupCheck(e->string);
    }
    if (s->n_vocab > s->V) s->V = s->n_vocab;
    return 0;
}

static void push_merge_(TokenizerSpec* s, size_t* cap, const char* a, size_t na, const char* b, size_t nb) {
    if (s->n_merges == *cap) {
        *cap = *cap ? 2 * *cap : 1024;
        s->merge_a = reallocCheck(s->merge_a, *cap * sizeof(char*));
        s->merge_b = reallocCheck(s->merge_b, *cap * sizeof(char*));
    }
    char* x = mallocCheck(na + 1); memcpy(x, a, na); x[na] = '\0';
    char* y = mallocCheck(nb + 1); memcpy(y, b, nb); y[nb] = '\0';
    s->merge_a[s->n_merges] = x;
    s->merge_b[s->n_merges++] = y;
}

/* One merge line "a b": exactly one space, as HF requires. */
static int push_merge_line_(TokenizerSpec* s, size_t* cap, const char* line, size_t len) {
    const char* sp = memchr(line, ' ', len);
    if (!sp || sp == line || sp == line + len - 1 || memchr(sp + 1, ' ', (size_t)(line + len - sp - 1))) return -1;
    push_merge_(s, cap, line, (size_t)(sp - line), sp + 1, (size_t)(line + len - sp - 1));
    return 0;
}

static int read_merges_(const char* path, const cJSON* merges, TokenizerSpec* s, char* err, size_t n) {
    if (!cJSON_IsArray(merges)) return engram_errf(err, n, "%s: model.merges must be an array", path);
    size_t cap = 0, i = 0;
    for (const cJSON* m = merges->child; m; m = m->next, i++) {
        if (cJSON_IsString(m) && push_merge_line_(s, &cap, m->valuestring, strlen(m->valuestring)) == 0) continue;
        if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
            cJSON_IsString(m->child->next)) {
            push_merge_(s, &cap, m->child->valuestring, strlen(m->child->valuestring), m->child->next->valuestring,
                        strlen(m->child->next->valuestring));
            continue;
        }
        return engram_errf(err, n, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", path, i);
    }
    return 0;
}

static int flag_(const cJSON* o, const char* key) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key)); }

static int read_added_(const char* path, const cJSON* added, TokenizerSpec* s, char* err, size_t n) {
    if (!added || cJSON_IsNull(added)) return 0;
    if (!cJSON_IsArray(added)) return engram_errf(err, n, "%s: added_tokens must be an array", path);
    s->added = callocCheck((size_t)cJSON_GetArraySize(added) + 1, sizeof(TokAdded));
    for (const cJSON* a = added->child; a; a = a->next) {
        const cJSON* id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON* content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= 2147483647.0 || !cJSON_IsString(content) ||
            !content->valuestring[0])
            return engram_errf(err, n, "%s: added token %zu needs an id and a non-empty content", path, s->n_added);
        TokAdded* t = &s->added[s->n_added++];
        t->content = strdupCheck(content->valuestring);
        t->id = (int32_t)id->valuedouble;
        t->special = flag_(a, "special");
        t->normalized = flag_(a, "normalized");
        t->lstrip = flag_(a, "lstrip");
        t->rstrip = flag_(a, "rstrip");
        t->single_word = flag_(a, "single_word");
        if (t->lstrip || t->rstrip || t->single_word)
            return engram_errf(err, n, "%s: added token \"%s\" uses lstrip/rstrip/single_word, which engram does not support",
                         path, t->content);
        set_v_(s, t->id);
    }
    return 0;
}

static const char* type_of_(const cJSON* o) {
    const cJSON* t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : "(no type)";
}

static int read_normalizer_(const char* path, const cJSON* norm, char* err, size_t n) {
    if (!norm || cJSON_IsNull(norm)) return 0;
    const cJSON* list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
    if (!strcmp(type_of_(norm), "Sequence") && cJSON_IsArray(list) && cJSON_GetArraySize(list) == 0) return 0;
    return engram_errf(err, n, "%s: normalizer %s is not supported (engram supports none or an empty Sequence)", path,
                 type_of_(norm));
}

static int read_byte_level_(const char* path, const cJSON* bl, int in_sequence, TokenizerSpec* s, char* err, size_t n) {
    const cJSON* use_regex = cJSON_GetObjectItemCaseSensitive(bl, "use_regex");
    s->byte_level_regex = use_regex ? cJSON_IsTrue(use_regex) : 1;   // HF's default is true
    s->add_prefix_space = flag_(bl, "add_prefix_space");
    if (in_sequence && s->n_split > 0 && s->byte_level_regex)
        return engram_errf(err, n, "%s: ByteLevel after Split must have use_regex false", path);
    return 0;
}

static int read_split_(const char* path, const cJSON* sp, TokenizerSpec* s, char* err, size_t n) {
    const cJSON* pat = cJSON_GetObjectItemCaseSensitive(sp, "pattern");
    const cJSON* re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    const cJSON* str = cJSON_GetObjectItemCaseSensitive(pat, "String");
    const cJSON* beh = cJSON_GetObjectItemCaseSensitive(sp, "behavior");
    if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") || flag_(sp, "invert"))
        return engram_errf(err, n, "%s: Split pre-tokenizer with behavior %s%s is not supported (only Isolated, invert false)",
                     path, cJSON_IsString(beh) ? beh->valuestring : "?", flag_(sp, "invert") ? ", invert true" : "");
    char* src;
    if (cJSON_IsString(re)) {
        src = strdupCheck(re->valuestring);
    } else if (cJSON_IsString(str)) {   // a literal: quote it for PCRE2
        size_t len = strlen(str->valuestring);
        src = mallocCheck(len + 5);
        snprintf(src, len + 5, "\\Q%s\\E", str->valuestring);
        if (strstr(str->valuestring, "\\E")) { free(src); return engram_errf(err, n, "%s: Split String pattern contains \\E", path); }
    } else {
        return engram_errf(err, n, "%s: Split pre-tokenizer needs pattern {\"Regex\": ...} or {\"String\": ...}", path);
    }
    s->split_regex = reallocCheck(s->split_regex, (size_t)(s->n_split + 1) * sizeof(char*));
    s->split_regex[s->n_split++] = src;
    return 0;
}

static int read_pre_tokenizer_(const char* path, const cJSON* pre, TokenizerSpec* s, char* err, size_t n) {
    if (!pre || cJSON_IsNull(pre))
        return engram_errf(err, n, "%s: no pre_tokenizer; engram supports byte-level BPE (ByteLevel) only", path);
    if (!strcmp(type_of_(pre), "ByteLevel")) return read_byte_level_(path, pre, 0, s, err, n);
    if (strcmp(type_of_(pre), "Sequence"))
        return engram_errf(err, n, "%s: pre_tokenizer %s is not supported (ByteLevel, or Sequence of Split + ByteLevel)",
                     path, type_of_(pre));
    const cJSON* list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    int seen_bl = 0;
    for (const cJSON* p = cJSON_IsArray(list) ? list->child : NULL; p; p = p->next) {
        const char* t = type_of_(p);
        if (seen_bl) return engram_errf(err, n, "%s: pre_tokenizer %s after ByteLevel is not supported", path, t);
        if (!strcmp(t, "Split")) {
            if (read_split_(path, p, s, err, n)) return -1;
        } else if (!strcmp(t, "ByteLevel")) {
            if (read_byte_level_(path, p, 1, s, err, n)) return -1;
            seen_bl = 1;
        } else {
            return engram_errf(err, n, "%s: pre_tokenizer %s is not supported (ByteLevel, or Sequence of Split + ByteLevel)",
                         path, t);
        }
    }
    if (!seen_bl) return engram_errf(err, n, "%s: pre_tokenizer Sequence must end with ByteLevel (byte-level BPE)", path);
    return 0;
}

/* post_processor and decoder: null or ByteLevel (neither adds tokens nor changes ids). */
static int read_passive_(const char* path, const cJSON* o, const char* what, char* err, size_t n) {
    if (!o || cJSON_IsNull(o) || !strcmp(type_of_(o), "ByteLevel")) return 0;
    return engram_errf(err, n, "%s: %s %s is not supported (engram supports none or ByteLevel)", path, what, type_of_(o));
}

static int null_or_empty_(const cJSON* o) {
    return !o || cJSON_IsNull(o) || (cJSON_IsString(o) && !o->valuestring[0]);
}

static int read_model_(const char* path, const cJSON* model, TokenizerSpec* s, char* err, size_t n) {
    if (!cJSON_IsObject(model)) return engram_errf(err, n, "%s: no \"model\" object", path);
    const cJSON* type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (type && (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE")))
        return engram_errf(err, n, "%s: model type %s is not supported (engram supports BPE)", path, type_of_(model));
    if (!null_or_empty_(cJSON_GetObjectItemCaseSensitive(model, "dropout")))
        return engram_errf(err, n, "%s: BPE dropout is not supported (encoding would not be deterministic)", path);
    if (!null_or_empty_(cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix")) ||
        !null_or_empty_(cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix")))
        return engram_errf(err, n, "%s: BPE continuing_subword_prefix/end_of_word_suffix are not supported", path);
    if (flag_(model, "byte_fallback")) return engram_errf(err, n, "%s: BPE byte_fallback is not supported", path);
    s->ignore_merges = flag_(model, "ignore_merges");
    if (read_vocab_(path, cJSON_GetObjectItemCaseSensitive(model, "vocab"), s, err, n)) return -1;
    return read_merges_(path, cJSON_GetObjectItemCaseSensitive(model, "merges"), s, err, n);
}

static int read_tokenizer_json_(const char* path, const cJSON* root, TokenizerSpec* s, char* err, size_t n) {
    const cJSON* trunc = cJSON_GetObjectItemCaseSensitive(root, "truncation");
    const cJSON* pad = cJSON_GetObjectItemCaseSensitive(root, "padding");
    if ((trunc && !cJSON_IsNull(trunc)) || (pad && !cJSON_IsNull(pad)))
        return engram_errf(err, n, "%s: truncation/padding are set; engram encodes whole texts (set them to null)", path);
    if (read_model_(path, cJSON_GetObjectItemCaseSensitive(root, "model"), s, err, n) ||
        read_added_(path, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), s, err, n) ||
        read_normalizer_(path, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), err, n) ||
        read_pre_tokenizer_(path, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), s, err, n) ||
        read_passive_(path, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "post_processor", err, n) ||
        read_passive_(path, cJSON_GetObjectItemCaseSensitive(root, "decoder"), "decoder", err, n))
        return -1;
    return 0;
}

/* GPT-2: vocab from encoder.json, merges from vocab.bpe beside it. */
static int read_gpt2_(const char* path, const cJSON* root, TokenizerSpec* s, char* err, size_t n) {
    if (read_vocab_(path, root, s, err, n)) return -1;
    char bpe[4200];
    const char* slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path) : 1;
    snprintf(bpe, sizeof bpe, "%.*s/vocab.bpe", dirlen, slash ? path : ".");
    size_t len;
    char* text = engram_read_file(bpe, &len);
    if (!text) return engram_errf(err, n, "%s: cannot read vocab.bpe (GPT-2's merges; it must be beside encoder.json)", bpe);
    size_t cap = 0;
    int lineno = 0;
    for (char *line = text, *next; line < text + len; line = next) {
        char* nl = memchr(line, '\n', (size_t)(text + len - line));
        next = nl ? nl + 1 : text + len;
        size_t ll = (size_t)((nl ? nl : text + len) - line);
        if (ll && line[ll - 1] == '\r') ll--;
        lineno++;
        if (ll == 0 || (ll >= 8 && !memcmp(line, "#version", 8))) continue;
        if (push_merge_line_(s, &cap, line, ll)) {
            free(text);
            return engram_errf(err, n, "%s:%d: a merge line must be two tokens separated by one space", bpe, lineno);
        }
    }
    free(text);
    s->byte_level_regex = 1;
    for (int64_t id = 0; id < s->n_vocab; id++)   // HF's GPT-2 tokenizer.json has it as a special added token
        if (s->vocab[id] && !strcmp(s->vocab[id], "<|endoftext|>")) {
            s->added = callocCheck(1, sizeof(TokAdded));
            s->added[0] = (TokAdded){.content = strdupCheck("<|endoftext|>"), .id = (int32_t)id, .special = 1,
                                     .normalized = 1};
            s->n_added = 1;
        }
    return 0;
}

/* Resolve a directory to the file inside it that names the tokenizer. */
static int resolve_path_(const char* path, char* out, size_t outlen, char* err, size_t n) {
    if (!is_dir_(path)) {
        if (!is_file_(path)) return engram_errf(err, n, "%s: no such tokenizer file or directory", path);
        snprintf(out, outlen, "%s", path);
        return 0;
    }
    snprintf(out, outlen, "%s/tokenizer.json", path);
    if (is_file_(out)) return 0;
    snprintf(out, outlen, "%s/encoder.json", path);
    if (is_file_(out)) return 0;
    return engram_errf(err, n, "%s: directory holds neither tokenizer.json nor encoder.json + vocab.bpe", path);
}

int tokfiles_read(const char* path, TokenizerSpec* s, char* err, size_t errlen) {
    memset(s, 0, sizeof *s);
    if (resolve_path_(path, s->path, sizeof s->path, err, errlen)) return -1;
    char* text = NULL;
    size_t len = 0;
    cJSON* root = parse_json_(s->path, &text, &len, err, errlen);
    if (!root) return -1;
    sha256_hex(text, len, s->sha256);
    int rc;
    if (!cJSON_IsObject(root))
        rc = engram_errf(err, errlen, "%s: expected a JSON object (tokenizer.json or encoder.json)", s->path);
    else if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "model")))   // encoder.json maps "model" to an id
        rc = read_tokenizer_json_(s->path, root, s, err, errlen);
    else
        rc = read_gpt2_(s->path, root, s, err, errlen);
    cJSON_Delete(root);
    free(text);
    if (rc) tokfiles_free(s);
    return rc;
}

void tokfiles_free(TokenizerSpec* s) {
    for (int64_t i = 0; s->vocab && i < s->n_vocab; i++) free(s->vocab[i]);
    for (size_t i = 0; i < s->n_merges; i++) free(s->merge_a[i]), free(s->merge_b[i]);
    for (size_t i = 0; i < s->n_added; i++) free(s->added[i].content);
    for (int i = 0; i < s->n_split; i++) free(s->split_regex[i]);
    free(s->vocab), free(s->merge_a), free(s->merge_b), free(s->added), free(s->split_regex);
    memset(s, 0, sizeof *s);
}
