/*
 * compress.c — Engram's vocabulary compression P: V → V' (spec/ENGRAM.md §2): the eight-step
 * normaliser of §2.1 with utf8proc, the key rules and first-seen ids of §2.2 over per-id strings,
 * and the lookup of §2.3.
 *
 * Not here: decoding ids with a tokenizer (compress_build, src/compress_tokenizer.c), storing the
 * table in checkpoints. The reference is Hugging Face `tokenizers` (tests/reference/hf_compress.js);
 * docs/compression.md lists how far utf8proc's Unicode tables agree with it on real vocabularies.
 */
#include "compress.h"

#include <string.h>
#include <utf8proc.h>

#include "common.h"

/* ---- small buffers ------------------------------------------------------------------------ */

// Private append: bytebuf_append lives in tokenizer.c, which this file must not need.
static void buf_put_(ByteBuf* b, const void* s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        b->v = reallocCheck(b->v, cap);
        b->cap = cap;
    }
    memcpy(b->v + b->n, s, n);
    b->n += n;
    b->v[b->n] = '\0';   // callers may hand the buffer to utf8proc or print it
}

typedef struct { int32_t* v; size_t n, cap; } CpVec_;   // code points

static void cp_push_(CpVec_* a, int32_t c) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->v = reallocCheck(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = c;
}

/* ---- UTF-8 in and out --------------------------------------------------------------------- */

// Length of the longest prefix of s[0..n) that starts a well-formed UTF-8 sequence (Unicode
// Table 3-7), and in *full whether that prefix is a complete sequence. A result of 0 means s[0]
// can start no sequence.
static size_t utf8_prefix_(const unsigned char* s, size_t n, int* full) {
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;   // allowed range of the second byte
    if (c < 0x80) { *full = 1; return 1; }
    else if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) { need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else { *full = 0; return 0; }
    size_t k = 1;
    while (k < need && k < n) {
        unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
        if (s[k] < lo_k || s[k] > hi_k) break;
        k++;
    }
    *full = k == need;
    return k;
}

// Rust's String::from_utf8_lossy: each maximal ill-formed subpart becomes one U+FFFD.
static void utf8_lossy_(const char* s, size_t n, ByteBuf* out) {
    const unsigned char* u = (const unsigned char*)s;
    size_t i = 0;
    while (i < n) {
        int full;
        size_t k = utf8_prefix_(u + i, n - i, &full);
        if (full) buf_put_(out, u + i, k);
        else buf_put_(out, "\xEF\xBF\xBD", 3);
        i += k ? k : 1;
    }
}

static void utf8_decode_(const char* s, size_t n, CpVec_* out) {
    const utf8proc_uint8_t* u = (const utf8proc_uint8_t*)s;
    size_t i = 0;
    while (i < n) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(u + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0) engram_die("this is a bug in engram", "utf8proc_iterate on text made valid: %zd", k);
        cp_push_(out, c);
        i += (size_t)k;
    }
}

static void utf8_encode_(const int32_t* cp, size_t n, ByteBuf* out) {
    for (size_t i = 0; i < n; i++) {
        utf8proc_uint8_t b[4];
        utf8proc_ssize_t k = utf8proc_encode_char(cp[i], b);
        buf_put_(out, b, (size_t)k);
    }
}

// utf8proc_map on valid UTF-8 (NUL bytes allowed: the length is given); the result replaces *b.
static void utf8proc_apply_(ByteBuf* b, utf8proc_option_t opt) {
    utf8proc_uint8_t* res = NULL;
    utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t*)(b->n ? b->v : ""), (utf8proc_ssize_t)b->n,
                                      &res, opt);
    if (k < 0) engram_die("this is a bug in engram", "utf8proc_map: %s", utf8proc_errmsg(k));
    b->n = 0;
    buf_put_(b, res, (size_t)k);
    free(res);
}

/* ---- the normaliser, §2.1 ----------------------------------------------------------------- */

static int is_mark_(int32_t c) {
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

// Unicode White_Space, which is Rust's char::is_whitespace (used by HF's Strip).
static int is_white_space_(int32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

static int is_run_space_(int32_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Steps 3 and 4: drop every Mark, then Rust's char::to_lowercase per character. Its full mapping
// differs from utf8proc's simple one only for U+0130 (SpecialCasing.txt's one unconditional
// lowercase entry). After step 2 U+0130 is already "I" + U+0307, so this branch is for fidelity.
static void strip_marks_lower_(const CpVec_* in, CpVec_* out) {
    for (size_t i = 0; i < in->n; i++) {
        int32_t c = in->v[i];
        if (is_mark_(c)) continue;
        if (c == 0x130) { cp_push_(out, 'i'); cp_push_(out, 0x307); continue; }
        cp_push_(out, utf8proc_tolower(c));
    }
}

// Steps 5–8 in place: space runs → " ", lone " " → U+E000, strip White_Space, U+E000 → " ".
static void spaces_(CpVec_* a) {
    size_t m = 0;
    int in_run = 0;
    for (size_t i = 0; i < a->n; i++) {
        int32_t c = a->v[i];
        if (!is_run_space_(c)) a->v[m++] = c;
        else if (!in_run) a->v[m++] = ' ';
        in_run = is_run_space_(c);
    }
    a->n = m;
    if (a->n == 1 && a->v[0] == ' ') a->v[0] = 0xE000;
    size_t lo = 0, hi = a->n;
    while (lo < hi && is_white_space_(a->v[lo])) lo++;
    while (hi > lo && is_white_space_(a->v[hi - 1])) hi--;
    if (lo > 0) memmove(a->v, a->v + lo, (hi - lo) * sizeof *a->v);
    a->n = hi - lo;
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i] == 0xE000) a->v[i] = ' ';
}

void compress_normalize(const char* s, size_t n, ByteBuf* out) {
    ByteBuf t = {0};
    utf8_lossy_(s, n, &t);
    utf8proc_apply_(&t, UTF8PROC_COMPOSE | UTF8PROC_COMPAT | UTF8PROC_STABLE);   // 1. NFKC
    utf8proc_apply_(&t, UTF8PROC_DECOMPOSE | UTF8PROC_STABLE);                   // 2. NFD
    CpVec_ a = {0}, b = {0};
    utf8_decode_(t.v, t.n, &a);
    strip_marks_lower_(&a, &b);                                                  // 3, 4
    spaces_(&b);                                                                 // 5–8
    utf8_encode_(b.v, b.n, out);
    if (!out->v) buf_put_(out, "", 0);   // an empty result is still a valid, NUL-ended buffer
    free(t.v);
    free(a.v);
    free(b.v);
}

/* ---- key dictionary: open addressing, string → first-seen id ------------------------------ */

typedef struct { char* key; size_t len; int32_t id; } Slot_;
typedef struct { Slot_* slot; size_t mask; int32_t n; } KeyMap_;

static uint64_t hash_bytes_(const char* s, size_t n) {   // FNV-1a, 64-bit
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

// Sized once for at most max_keys keys at load ≤ 1/2, so it never grows.
static void keymap_init_(KeyMap_* m, int64_t max_keys) {
    size_t cap = 16;
    while (cap < 2 * (size_t)max_keys) cap *= 2;
    m->slot = callocCheck(cap, sizeof *m->slot);
    m->mask = cap - 1;
    m->n = 0;
}

// The id of key, giving it the next new id when it is seen for the first time.
static int32_t keymap_id_(KeyMap_* m, const char* key, size_t len) {
    size_t i = (size_t)hash_bytes_(key, len) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        Slot_* s = &m->slot[i];
        if (!s->key) {
            s->key = mallocCheck(len + 1);
            memcpy(s->key, key, len);
            s->key[len] = '\0';
            s->len = len;
            s->id = m->n++;
            return s->id;
        }
        if (s->len == len && memcmp(s->key, key, len) == 0) return s->id;
    }
}

static void keymap_free_(KeyMap_* m) {
    for (size_t i = 0; i <= m->mask; i++) free(m->slot[i].key);
    free(m->slot);
}

/* ---- the table, §2.2 and §2.3 ------------------------------------------------------------- */

static int has_replacement_char_(const char* s, size_t n) {
    for (size_t i = 0; i + 3 <= n; i++)
        if (memcmp(s + i, "\xEF\xBF\xBD", 3) == 0) return 1;
    return 0;
}

// raw[i] may be NULL (an id with no token string); the decoded text is its key then, since there is
// no raw form to fall back to. HF vocabularies have a string for every id 0..V-1.
void compress_build_keys(Compression* c, int64_t V, const char* const* decoded, const size_t* dlen,
                         const char* const* raw) {
    if (V < 0 || V > INT32_MAX) engram_die("vocabularies must have < 2^31 ids", "V = %lld", (long long)V);
    c->V = V;
    c->tokenizer[0] = c->tokenizer_sha256[0] = '\0';
    c->lookup = mallocCheck((size_t)(V ? V : 1) * sizeof *c->lookup);
    KeyMap_ m;
    keymap_init_(&m, V);
    ByteBuf norm = {0};
    for (int64_t i = 0; i < V; i++) {
        const char* key = decoded[i];
        size_t len = dlen[i];
        if (has_replacement_char_(decoded[i], dlen[i])) {
            if (raw[i]) { key = raw[i]; len = strlen(raw[i]); }
        } else {
            norm.n = 0;
            compress_normalize(decoded[i], dlen[i], &norm);
            if (norm.n > 0) { key = norm.v; len = norm.n; }
        }
        c->lookup[i] = keymap_id_(&m, key, len);
    }
    c->Vc = m.n;
    free(norm.v);
    keymap_free_(&m);
}

void compress_free(Compression* c) {
    free(c->lookup);
    c->lookup = NULL;
    c->V = c->Vc = 0;
}

void compress_apply(const Compression* c, const int32_t* ids, size_t n, int64_t* out) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id >= c->V)
            engram_die("token ids must come from the tokenizer the compression table was built with",
                       "token id %d at position %zu is outside the vocabulary (V = %lld)", id, i,
                       (long long)c->V);
        out[i] = id < 0 ? id : c->lookup[id];   // negative ids (padding) pass through unchanged
    }
}
