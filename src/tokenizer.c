/*
 * tokenizer.c — byte-level BPE exact to Hugging Face `tokenizers` (tokenizer.h): tables built
 * from a TokenizerSpec (io/tokenizer_files.c), then encode as HF does it:
 *   1. split the text on added tokens, leftmost-longest: first those with normalized=false on the
 *      raw text, then those with normalized=true on the gaps (the normalizer is the identity);
 *   2. each gap through the Split(Isolated) regexes in order, each regex re-splitting every piece
 *      (matches and the text between them become pieces; empty pieces vanish);
 *   3. ByteLevel: optional prefix space, optional GPT-2 regex split, bytes → GPT-2 characters;
 *   4. BPE on each piece (src/bpe.c), with a cache of pieces seen in this call.
 * Regexes run with PCRE2 (UTF, UCP, JIT). HF compiles them with Oniguruma, whose \s is Unicode
 * White_Space; PCRE2's \s also matches U+180E, so \s and \S are rewritten to the explicit set.
 *
 * Not here: reading files (io/tokenizer_files.c), the merge loop and hash tables (src/bpe.c).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <pcre2.h>
#include <stdarg.h>
#include <string.h>

#include "bpe.h"
#include "common.h"
#include "tokenizer_files.h"

/* GPT-2's pre-tokenizer pattern, as HF's ByteLevel(use_regex=true) has it. */
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Oniguruma's \s: Unicode White_Space (no U+180E), as the inside of a character class. */
static const char WHITE_SPACE[] =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

typedef struct { const char* s; size_t n; int32_t id; } AddedRef;
typedef struct {
    AddedRef* tok;        // [n] grouped by first byte, longest first within a group
    size_t n;
    uint32_t first[257];  // tok[first[b] .. first[b+1]) start with byte b
} AddedSet;

struct Tokenizer {
    char path[4096];
    char sha256[65];
    int64_t V;
    char** str;           // [V] token string by id (an added token's content wins); NULL if none
    uint8_t* special;     // [V] 1 for added special tokens
    char* dec;            // decoded bytes of every id, back to back
    size_t* dec_off;      // [V+1] id i decodes to dec[dec_off[i] .. dec_off[i+1])
    int32_t byte_id[256]; // id of the one-byte token of each byte
    StrMap vocab;         // model vocabulary: string → id
    MergeMap merges;
    int ignore_merges;
    AddedSet added_raw, added_norm;   // normalized=false / normalized=true added tokens
    pcre2_code** split;   // [n_split] Split regexes
    int n_split;
    pcre2_code* bl_re;    // ByteLevel's GPT-2 regex, or NULL (use_regex false)
    int add_prefix_space;
    int32_t pad_id, eot_id;
};

/* ---- small helpers ---- */

void idvec_push(IdVec* v, int32_t id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 256;
        v->v = reallocCheck(v->v, v->cap * sizeof *v->v);
    }
    v->v[v->n++] = id;
}

void bytebuf_append(ByteBuf* b, const char* s, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->v = reallocCheck(b->v, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->v + b->n, s, n);
    b->n += n;
}

static void* fail_(char* err, size_t n, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
static void* fail_(char* err, size_t n, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return NULL;
}

/* ---- regexes ---- */

/* Rewrite \s and \S (outside classes) to Oniguruma's White_Space set; see the file comment. */
static char* onig_whitespace_(const char* src) {
    ByteBuf b = {0};
    int in_class = 0;
    for (const char* p = src; *p; p++) {
        if (p[0] == '\\' && p[1] == 'Q') {   // \Q...\E is literal (Split String patterns): copy as is
            const char* end = strstr(p + 2, "\\E");
            size_t len = end ? (size_t)(end + 2 - p) : strlen(p);
            bytebuf_append(&b, p, len);
            p += len - 1;
            continue;
        }
        if (p[0] == '\\' && p[1]) {
            if (p[1] == 's' && in_class) {
                bytebuf_append(&b, WHITE_SPACE, strlen(WHITE_SPACE));
            } else if (p[1] == 's' || (p[1] == 'S' && !in_class)) {
                bytebuf_append(&b, p[1] == 's' ? "[" : "[^", p[1] == 's' ? 1 : 2);
                bytebuf_append(&b, WHITE_SPACE, strlen(WHITE_SPACE));
                bytebuf_append(&b, "]", 1);
            } else {
                bytebuf_append(&b, p, 2);
            }
            p++;
            continue;
        }
        if (*p == '[' && !in_class) {
            in_class = 1;
            bytebuf_append(&b, p, 1);
            if (p[1] == '^') bytebuf_append(&b, ++p, 1);
            if (p[1] == ']') bytebuf_append(&b, ++p, 1);   // a leading ] is literal
            continue;
        }
        if (*p == '[' && in_class && p[1] == ':') {   // POSIX class [:name:] inside a class
            const char* end = strstr(p + 2, ":]");
            if (end) {
                bytebuf_append(&b, p, (size_t)(end + 2 - p));
                p = end + 1;
                continue;
            }
        }
        if (*p == ']' && in_class) in_class = 0;
        bytebuf_append(&b, p, 1);
    }
    bytebuf_append(&b, "", 1);
    return b.v;
}

static pcre2_code* compile_(const char* pattern, const char* file, const char* what, char* err, size_t errlen) {
    char* src = onig_whitespace_(pattern);
    int code;
    PCRE2_SIZE off;
    pcre2_code* re = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
                                   &code, &off, NULL);
    free(src);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return fail_(err, errlen, "%s: %s does not compile with PCRE2 (%s): %s", file, what, (char*)msg, pattern);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);   // without JIT (unsupported CPU) matching is slower, not different
    return re;
}

/* ---- added tokens ---- */

static int added_cmp_(const void* a, const void* b) {
    const AddedRef *x = a, *y = b;
    uint8_t fx = (uint8_t)x->s[0], fy = (uint8_t)y->s[0];
    if (fx != fy) return fx < fy ? -1 : 1;
    return x->n != y->n ? (x->n > y->n ? -1 : 1) : 0;
}

/* The set points at tk->str, which holds each added token's content. */
static void added_build_(AddedSet* set, const Tokenizer* tk, const TokenizerSpec* sp, int normalized) {
    set->tok = callocCheck(sp->n_added + 1, sizeof *set->tok);
    set->n = 0;
    for (size_t i = 0; i < sp->n_added; i++) {
        const char* s = tk->str[sp->added[i].id];
        if (sp->added[i].normalized == normalized) set->tok[set->n++] = (AddedRef){s, strlen(s), sp->added[i].id};
    }
    qsort(set->tok, set->n, sizeof *set->tok, added_cmp_);
    size_t k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < set->n && (uint8_t)set->tok[k].s[0] < b) k++;
        set->first[b] = (uint32_t)k;
    }
}

/* Longest added token at s[0..n), or NULL. */
static const AddedRef* added_match_(const AddedSet* set, const char* s, size_t n) {
    uint8_t b = (uint8_t)s[0];
    for (uint32_t k = set->first[b]; k < set->first[b + 1]; k++)
        if (set->tok[k].n <= n && !memcmp(set->tok[k].s, s, set->tok[k].n)) return &set->tok[k];
    return NULL;
}

/* ---- loading ---- */

static int32_t find_special_(const TokenizerSpec* sp, const char* const* needles) {
    int32_t best = -1;
    for (size_t i = 0; i < sp->n_added; i++) {
        if (!sp->added[i].special || (best >= 0 && sp->added[i].id > best)) continue;
        for (const char* const* nd = needles; *nd; nd++)
            if (strstr(sp->added[i].content, *nd)) { best = sp->added[i].id; break; }
    }
    return best;
}

/* Decoded bytes of one token string, as HF's ByteLevel decoder: every character mapped back to
 * its byte, unless one of them is not a byte-level character; then the string's own UTF-8. */
static void decode_token_(const char* s, ByteBuf* out) {
    size_t start = out->n;
    for (const uint8_t* p = (const uint8_t*)s; *p;) {
        uint32_t cp;
        int len = (*p < 0x80) ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : 4;
        cp = len == 1 ? *p : (uint32_t)(*p & (0x7F >> len));
        for (int k = 1; k < len && p[k]; k++) cp = cp << 6 | (p[k] & 0x3F);
        int byte = bpe_cp_to_byte(cp);
        if (byte < 0) {
            out->n = start;
            bytebuf_append(out, s, strlen(s));
            return;
        }
        char c = (char)byte;
        bytebuf_append(out, &c, 1);
        for (int k = 0; k < len && *p; k++) p++;
    }
}

/* Vocabulary, byte ids and merges; 0 or -1 with err. */
static int build_tables_(Tokenizer* tk, TokenizerSpec* sp, char* err, size_t errlen) {
    strmap_init(&tk->vocab, (size_t)sp->n_vocab);
    for (int64_t i = 0; i < sp->n_vocab; i++)
        if (sp->vocab[i]) {
            strmap_put(&tk->vocab, sp->vocab[i], strlen(sp->vocab[i]), (int32_t)i);
            tk->str[i] = sp->vocab[i];
            sp->vocab[i] = NULL;   // taken over
        }
    for (size_t i = 0; i < sp->n_added; i++) {   // HF's id_to_token asks the added vocabulary first
        TokAdded* a = &sp->added[i];
        free(tk->str[a->id]);
        tk->str[a->id] = strdupCheck(a->content);
        tk->special[a->id] = (uint8_t)a->special;
    }
    for (int b = 0; b < 256; b++) {
        ByteBuf s = {0};
        uint8_t byte = (uint8_t)b;
        bpe_byte_level_string(&byte, 1, &s);
        tk->byte_id[b] = strmap_get(&tk->vocab, s.v, s.n);
        free(s.v);
        if (tk->byte_id[b] < 0) {
            fail_(err, errlen, "%s: the vocab lacks the byte-level token of byte 0x%02X (not a byte-level BPE?)",
                  sp->path, b);
            return -1;
        }
    }
    mergemap_init(&tk->merges, sp->n_merges);
    ByteBuf ab = {0};
    for (size_t r = 0; r < sp->n_merges; r++) {
        size_t na = strlen(sp->merge_a[r]), nb = strlen(sp->merge_b[r]);
        ab.n = 0;
        bytebuf_append(&ab, sp->merge_a[r], na);
        bytebuf_append(&ab, sp->merge_b[r], nb);
        int32_t a = strmap_get(&tk->vocab, sp->merge_a[r], na), b = strmap_get(&tk->vocab, sp->merge_b[r], nb);
        int32_t m = strmap_get(&tk->vocab, ab.v, ab.n);
        if (a < 0 || b < 0 || m < 0) {
            free(ab.v);
            fail_(err, errlen, "%s: merge %zu (\"%s %s\") uses a token that is not in the vocab", sp->path, r,
                  sp->merge_a[r], sp->merge_b[r]);
            return -1;
        }
        mergemap_put(&tk->merges, a, b, (int32_t)r, m);
    }
    free(ab.v);
    return 0;
}

static int build_regexes_(Tokenizer* tk, const TokenizerSpec* sp, char* err, size_t errlen) {
    tk->split = callocCheck((size_t)sp->n_split + 1, sizeof *tk->split);
    for (int i = 0; i < sp->n_split; i++, tk->n_split++) {
        char what[64];
        snprintf(what, sizeof what, "Split regex %d", i + 1);
        if (!(tk->split[i] = compile_(sp->split_regex[i], sp->path, what, err, errlen))) return -1;
    }
    if (sp->byte_level_regex && !(tk->bl_re = compile_(GPT2_PATTERN, sp->path, "GPT-2 pattern", err, errlen)))
        return -1;
    return 0;
}

static void build_decode_(Tokenizer* tk) {
    ByteBuf dec = {0};
    tk->dec_off = mallocCheck(((size_t)tk->V + 1) * sizeof *tk->dec_off);
    for (int64_t i = 0; i < tk->V; i++) {
        tk->dec_off[i] = dec.n;
        if (tk->str[i]) decode_token_(tk->str[i], &dec);
    }
    tk->dec_off[tk->V] = dec.n;
    tk->dec = dec.v;
}

Tokenizer* tokenizer_load(const char* path, char* err, size_t errlen) {
    TokenizerSpec sp;
    if (tokfiles_read(path, &sp, err, errlen)) return NULL;
    Tokenizer* tk = callocCheck(1, sizeof *tk);
    snprintf(tk->path, sizeof tk->path, "%s", sp.path);
    memcpy(tk->sha256, sp.sha256, sizeof tk->sha256);
    tk->V = sp.V;
    tk->str = callocCheck((size_t)tk->V, sizeof *tk->str);
    tk->special = callocCheck((size_t)tk->V, 1);
    tk->ignore_merges = sp.ignore_merges;
    tk->add_prefix_space = sp.add_prefix_space;
    if (build_tables_(tk, &sp, err, errlen) || build_regexes_(tk, &sp, err, errlen)) {
        tokfiles_free(&sp);
        tokenizer_free(tk);
        return NULL;
    }
    added_build_(&tk->added_raw, tk, &sp, 0);
    added_build_(&tk->added_norm, tk, &sp, 1);
    build_decode_(tk);
    static const char* const PAD[] = {"pad", "PAD", NULL};
    static const char* const EOT[] = {"endoftext", "end_of_text", "end▁of▁sentence", "</s>", "<eos>", NULL};
    tk->eot_id = find_special_(&sp, EOT);
    tk->pad_id = find_special_(&sp, PAD);
    if (tk->pad_id < 0) tk->pad_id = tk->eot_id;
    tokfiles_free(&sp);
    return tk;
}

void tokenizer_free(Tokenizer* tk) {
    if (!tk) return;
    for (int64_t i = 0; tk->str && i < tk->V; i++) free(tk->str[i]);
    for (int i = 0; i < tk->n_split; i++) pcre2_code_free(tk->split[i]);
    pcre2_code_free(tk->bl_re);
    strmap_free(&tk->vocab);
    mergemap_free(&tk->merges);
    free(tk->str), free(tk->special), free(tk->dec), free(tk->dec_off), free(tk->split);
    free(tk->added_raw.tok), free(tk->added_norm.tok);
    free(tk);
}

int64_t tokenizer_vocab_size(const Tokenizer* tk) { return tk->V; }
const char* tokenizer_path(const Tokenizer* tk) { return tk->path; }
const char* tokenizer_sha256(const Tokenizer* tk) { return tk->sha256; }
int32_t tokenizer_default_pad_id(const Tokenizer* tk) { return tk->pad_id; }
int32_t tokenizer_eot_id(const Tokenizer* tk) { return tk->eot_id; }
uint32_t tokenizer_byte_to_codepoint(uint8_t b) { return bpe_byte_to_cp(b); }

const char* tokenizer_token_string(const Tokenizer* tk, int32_t id) {
    return id >= 0 && id < tk->V ? tk->str[id] : NULL;
}

/* ---- encode ---- */

typedef struct {
    const Tokenizer* tk;
    IdVec* out;
    pcre2_match_data* md;
    PieceCache cache;
    BpeScratch scratch;
    IdVec sym;           // initial symbols of a piece
    ByteBuf prefixed;    // a piece with ByteLevel's prefix space
    ByteBuf bl;          // byte-level string of a piece (ignore_merges)
} Enc;

typedef void (*PieceFn)(Enc* e, const char* s, size_t n, int depth);

/* HF's Split(Isolated): matches and the gaps between them, in order, each to fn; empty matches
 * make no piece (Oniguruma's find_iter then moves on one character, as here). */
static void regex_pieces_(Enc* e, const pcre2_code* re, const char* s, size_t n, PieceFn fn, int depth) {
    size_t pos = 0, prev = 0;
    while (pos < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, 0, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) engram_die("", "PCRE2 match failed with code %d", rc);
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(e->md);
        size_t a = ov[0], b = ov[1];
        if (a == b) {   // step over one UTF-8 character
            pos = a + 1;
            while (pos < n && ((uint8_t)s[pos] & 0xC0) == 0x80) pos++;
            continue;
        }
        if (a > prev) fn(e, s + prev, a - prev, depth);
        fn(e, s + a, b - a, depth);
        prev = pos = b;
    }
    if (prev < n) fn(e, s + prev, n - prev, depth);
}

static void bpe_piece_(Enc* e, const char* s, size_t n, int depth) {
    (void)depth;
    const Tokenizer* tk = e->tk;
    uint64_t h = bpe_hash_bytes(s, n);
    size_t n_ids;
    const int32_t* hit = piececache_get(&e->cache, h, s, n, &n_ids);
    if (hit) {
        for (size_t i = 0; i < n_ids; i++) idvec_push(e->out, hit[i]);
        return;
    }
    size_t start = e->out->n;
    int32_t whole = -1;
    if (tk->ignore_merges) {
        e->bl.n = 0;
        bpe_byte_level_string((const uint8_t*)s, n, &e->bl);
        whole = strmap_get(&tk->vocab, e->bl.v, e->bl.n);
    }
    if (whole >= 0) {
        idvec_push(e->out, whole);
    } else {
        e->sym.n = 0;
        for (size_t i = 0; i < n; i++) idvec_push(&e->sym, tk->byte_id[(uint8_t)s[i]]);
        bpe_merge(&tk->merges, e->sym.v, n, &e->scratch, e->out);
    }
    piececache_put(&e->cache, h, s, n, e->out->v + start, e->out->n - start);
}

/* ByteLevel on one piece: prefix space, GPT-2 regex, then BPE. */
static void byte_level_(Enc* e, const char* s, size_t n) {
    if (e->tk->add_prefix_space && s[0] != ' ') {
        e->prefixed.n = 0;
        bytebuf_append(&e->prefixed, " ", 1);
        bytebuf_append(&e->prefixed, s, n);
        s = e->prefixed.v, n = e->prefixed.n;
    }
    if (e->tk->bl_re) regex_pieces_(e, e->tk->bl_re, s, n, bpe_piece_, 0);
    else bpe_piece_(e, s, n, 0);
}

/* Split regex number depth on a piece, recursing into the next one; past the last, ByteLevel. */
static void split_(Enc* e, const char* s, size_t n, int depth) {
    if (depth == e->tk->n_split) byte_level_(e, s, n);
    else regex_pieces_(e, e->tk->split[depth], s, n, split_, depth + 1);
}

/* Added tokens of set, leftmost-longest; the gaps go to gap. */
static void added_split_(Enc* e, const AddedSet* set, const char* s, size_t n, void (*gap)(Enc*, const char*, size_t)) {
    size_t prev = 0;
    for (size_t i = 0; i < n && set->n > 0;) {
        const AddedRef* m = added_match_(set, s + i, n - i);
        if (!m) { i++; continue; }
        if (i > prev) gap(e, s + prev, i - prev);
        idvec_push(e->out, m->id);
        prev = i += m->n;
    }
    if (prev < n) gap(e, s + prev, n - prev);
}

static void after_norm_added_(Enc* e, const char* s, size_t n) { split_(e, s, n, 0); }
static void after_raw_added_(Enc* e, const char* s, size_t n) {
    added_split_(e, &e->tk->added_norm, s, n, after_norm_added_);
}

void tokenizer_encode(const Tokenizer* tk, const char* text, size_t len, IdVec* out) {
    Enc e = {.tk = tk, .out = out};
    e.md = pcre2_match_data_create(1, NULL);
    added_split_(&e, &tk->added_raw, text, len, after_raw_added_);
    pcre2_match_data_free(e.md);
    piececache_free(&e.cache);
    bpe_scratch_free(&e.scratch);
    free(e.sym.v), free(e.prefixed.v), free(e.bl.v);
}

/* ---- decode ---- */

void tokenizer_decode(const Tokenizer* tk, const int32_t* ids, size_t n, ByteBuf* out) {
    for (size_t i = 0; i < n; i++) {   // ids without a token are skipped, as HF's decode does
        if (ids[i] < 0 || ids[i] >= tk->V) continue;
        bytebuf_append(out, tk->dec + tk->dec_off[ids[i]], tk->dec_off[ids[i] + 1] - tk->dec_off[ids[i]]);
    }
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 with *bad = bytes of its maximal invalid
 * prefix (at least 1): the "maximal subpart" rule Rust's from_utf8_lossy follows. */
static size_t utf8_valid_(const uint8_t* s, size_t n, size_t* bad) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else { *bad = 1; return 0; }
    size_t j = 1;
    if (j < n && s[j] >= lo && s[j] <= hi) {
        j++;
        while (j <= (size_t)need && j < n && s[j] >= 0x80 && s[j] <= 0xBF) j++;
    }
    if (j == (size_t)need + 1) return j;
    *bad = j;
    return 0;
}

void tokenizer_utf8_lossy(const char* bytes, size_t n, ByteBuf* out) {
    const uint8_t* s = (const uint8_t*)bytes;
    size_t i = 0, run = 0;   // s[run .. i) is valid and not yet copied
    while (i < n) {
        size_t bad = 0, ok = utf8_valid_(s + i, n - i, &bad);
        if (ok) { i += ok; continue; }
        bytebuf_append(out, bytes + run, i - run);
        bytebuf_append(out, "\xEF\xBF\xBD", 3);
        i += bad;
        run = i;
    }
    bytebuf_append(out, bytes + run, i - run);
}
