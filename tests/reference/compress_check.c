/*
 * compress_check.c — src/compress.c against Hugging Face `tokenizers` on whole real vocabularies.
 * Reads the JSON files written by tests/reference/hf_compress.js (per-id decoded text, raw token
 * string, HF-normalised text and HF's lookup table) and checks two things for every id:
 *   1. normaliser: compress_normalize(decoded[i]) == HF's normaliser on decoded[i];
 *   2. table: compress_build_keys over HF's decoded/raw strings gives HF's V', pad id and lookup.
 * Every disagreement is printed (id, text, both results as code points): that is the
 * utf8proc-vs-Rust Unicode-table check of spec/ENGRAM.md §2.3. Exit status 1 on any difference.
 *
 * With --codepoints FILE (from hf_normalize_all.js) it also compares the normaliser on every Unicode
 * scalar value alone. There the tables do differ (docs/compression.md): each difference is put in
 * one of four known Unicode-version classes and the ranges are listed; only an unexplained
 * difference fails.
 *
 * Not here: decoding ids (the strings are HF's own, so only compression is under test).
 * Usage: compress_check [--codepoints FILE] REF.json...
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "common.h"
#include "compress.h"

typedef struct {
    int64_t V, Vc, pad_id, pad_c;
    int32_t* lookup;
    char **decoded, **raw, **normalized;   // NUL-ended copies; raw[i] may be NULL
    size_t *dlen, *nlen;
} Ref;

static char* read_file_(const char* path) {
    FILE* f = fopen(path, "rb");
    if (!f) engram_die("run tests/reference/hf_compress.js first", "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char* s = mallocCheck((size_t)n + 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) engram_die(NULL, "short read on %s", path);
    s[n] = '\0';
    fclose(f);
    return s;
}

static int hexval_(char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

// Hex string → bytes (NUL-ended; U+0000 inside survives, which is why the reference writes hex).
static char* unhex_(const cJSON* item, size_t* len) {
    if (cJSON_IsNull(item)) { *len = 0; return NULL; }
    const char* h = item->valuestring;
    size_t n = strlen(h) / 2;
    char* s = mallocCheck(n + 1);
    for (size_t i = 0; i < n; i++) s[i] = (char)(hexval_(h[2 * i]) << 4 | hexval_(h[2 * i + 1]));
    s[n] = '\0';
    *len = n;
    return s;
}

static const cJSON* field_(const cJSON* root, const char* key) {
    const cJSON* f = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!f) engram_die("regenerate it with tests/reference/hf_compress.js", "reference has no \"%s\"", key);
    return f;
}

static void ref_load_(Ref* r, const char* path) {
    char* text = read_file_(path);
    cJSON* root = cJSON_Parse(text);
    if (!root) engram_die(NULL, "%s is not JSON", path);
    r->V = (int64_t)field_(root, "V")->valuedouble;
    r->Vc = (int64_t)field_(root, "Vc")->valuedouble;
    r->pad_id = (int64_t)field_(root, "pad_id")->valuedouble;
    r->pad_c = (int64_t)field_(root, "pad_c")->valuedouble;
    size_t V = (size_t)r->V;
    r->lookup = mallocCheck(V * sizeof *r->lookup);
    r->decoded = mallocCheck(V * sizeof(char*));
    r->raw = mallocCheck(V * sizeof(char*));
    r->normalized = mallocCheck(V * sizeof(char*));
    r->dlen = mallocCheck(V * sizeof(size_t));
    r->nlen = mallocCheck(V * sizeof(size_t));
    const cJSON *lk = field_(root, "lookup"), *dh = field_(root, "decoded_hex");
    const cJSON *rh = field_(root, "raw_hex"), *nh = field_(root, "normalized_hex");
    if (cJSON_GetArraySize(lk) != r->V || cJSON_GetArraySize(dh) != r->V)
        engram_die(NULL, "%s: arrays are not V = %lld long", path, (long long)r->V);
    const cJSON *l = lk->child, *d = dh->child, *w = rh->child, *z = nh->child;
    for (size_t i = 0; i < V; i++, l = l->next, d = d->next, w = w->next, z = z->next) {
        size_t rl;
        r->lookup[i] = (int32_t)l->valuedouble;
        r->decoded[i] = unhex_(d, &r->dlen[i]);
        r->raw[i] = unhex_(w, &rl);
        r->normalized[i] = unhex_(z, &r->nlen[i]);
    }
    cJSON_Delete(root);
    free(text);
}

static void ref_free_(Ref* r) {
    for (int64_t i = 0; i < r->V; i++) {
        free(r->decoded[i]);
        free(r->raw[i]);
        free(r->normalized[i]);
    }
    free(r->decoded);
    free(r->raw);
    free(r->normalized);
    free(r->dlen);
    free(r->nlen);
    free(r->lookup);
}

// Text as code points, "U+0069 U+0307"; printable ASCII shown as itself in quotes beside.
static void print_cps_(const char* label, const char* s, size_t n) {
    printf("    %-5s \"", label);
    for (size_t i = 0; i < n; i++) putchar(s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '.');
    printf("\" =");
    const utf8proc_uint8_t* u = (const utf8proc_uint8_t*)s;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(u + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0) { printf(" <bad byte %02x>", u[i]); i++; continue; }
        printf(" U+%04X(%s)", (unsigned)c, utf8proc_category_string(c));
        i += (size_t)k;
    }
    printf("\n");
}

static size_t check_normalizer_(const Ref* r) {
    size_t bad = 0;
    ByteBuf out = {0};
    for (int64_t i = 0; i < r->V; i++) {
        out.n = 0;
        compress_normalize(r->decoded[i], r->dlen[i], &out);
        if (out.n == r->nlen[i] && memcmp(out.v, r->normalized[i], out.n) == 0) continue;
        bad++;
        printf("  normaliser differs on id %lld:\n", (long long)i);
        print_cps_("text", r->decoded[i], r->dlen[i]);
        print_cps_("HF", r->normalized[i], r->nlen[i]);
        print_cps_("ours", out.v, out.n);
    }
    free(out.v);
    return bad;
}

static size_t check_table_(const Ref* r) {
    Compression c;
    double t0 = engram_now();
    compress_build_keys(&c, r->V, (const char* const*)r->decoded, r->dlen, (const char* const*)r->raw);
    printf("  table built in %.3f s\n", engram_now() - t0);
    size_t bad = 0;
    for (int64_t i = 0; i < r->V; i++) {
        if (c.lookup[i] == r->lookup[i]) continue;
        if (bad++ < 50)
            printf("  lookup[%lld]: HF %d, ours %d (raw \"%s\")\n", (long long)i, r->lookup[i],
                   c.lookup[i], r->raw[i] ? r->raw[i] : "(none)");
    }
    if (bad > 50) printf("  ... %zu lookup differences in all\n", bad);
    printf("  V %lld, V' HF %lld ours %lld, pad %lld -> HF %lld ours %d\n", (long long)r->V,
           (long long)r->Vc, (long long)c.Vc, (long long)r->pad_id, (long long)r->pad_c,
           c.lookup[r->pad_id]);
    bad += c.Vc != r->Vc;
    bad += c.lookup[r->pad_id] != r->pad_c;
    compress_free(&c);
    return bad;
}

/* ---- every code point alone ---------------------------------------------------------------- */

// Why HF (Unicode 9.0 normalisation tables, Rust std's newer case tables) and utf8proc differ on
// one code point c: h is HF's output, o ours, both as hex of UTF-8; in is c's own hex.
typedef enum { CP_UNEXPLAINED, CP_NEW_MARK, CP_NEW_DECOMP, CP_OLD_MARK, CP_NEW_CASE, CP_NCLASS } CpClass;
static const char* const CP_CLASS_TAG[CP_NCLASS] = {"UNEXPLAINED", "new-mark", "new-decomp",
                                                    "old-mark", "new-case"};
static const char* const CP_CLASS_NAME[CP_NCLASS] = {
    "differences no Unicode-version class explains (these fail the check)",
    "Mark newer than HF's Unicode 9.0 normalisation tables: HF keeps it, we strip it",
    "decomposition newer than HF's Unicode 9.0 tables: HF keeps it, we decompose it",
    "a Mark in Unicode 9.0, a letter since: HF strips it, we keep it",
    "lowercase mapping newer than utf8proc (unassigned there; Rust std knows it)",
};

static int is_mark_cat_(int32_t c) {
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

static CpClass cp_classify_(int32_t c, const char* in, const char* h, const char* o) {
    int hf_kept = strcmp(h, in) == 0, we_kept = strcmp(o, in) == 0;
    if (hf_kept && o[0] == '\0' && is_mark_cat_(c)) return CP_NEW_MARK;
    if (hf_kept && utf8proc_get_property(c)->decomp_seqindex != UINT16_MAX) return CP_NEW_DECOMP;
    if (h[0] == '\0' && we_kept && !is_mark_cat_(c)) return CP_OLD_MARK;
    if (we_kept && utf8proc_category(c) == UTF8PROC_CATEGORY_CN) return CP_NEW_CASE;
    return CP_UNEXPLAINED;
}

static void hex_of_(const char* s, size_t n, char* out) {
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", (unsigned char)s[i]);
    out[2 * n] = '\0';
}

// Prints differing code points as ranges per class; returns the number left unexplained.
static size_t check_codepoints_(const char* path) {
    FILE* f = fopen(path, "r");
    if (!f) engram_die("run tests/reference/hf_normalize_all.js first", "cannot open %s", path);
    char line[1024], h[512], in[16], o[1024];
    size_t count[CP_NCLASS] = {0}, n = 0;
    long run_lo = -1, run_hi = -1;
    CpClass run_k = CP_UNEXPLAINED;
    ByteBuf out = {0};
    while (fgets(line, sizeof line, f)) {
        unsigned cp;
        h[0] = '\0';
        if (sscanf(line, "%x %511s", &cp, h) < 1) engram_die(NULL, "%s: bad line '%s'", path, line);
        n++;
        utf8proc_uint8_t u[4];
        utf8proc_ssize_t k = utf8proc_encode_char((utf8proc_int32_t)cp, u);
        hex_of_((const char*)u, (size_t)k, in);
        out.n = 0;
        compress_normalize((const char*)u, (size_t)k, &out);
        hex_of_(out.v, out.n, o);
        if (strcmp(h, o) == 0) continue;
        CpClass c = cp_classify_((int32_t)cp, in, h, o);
        count[c]++;
        if (c == CP_UNEXPLAINED) printf("  U+%04X: HF %s, ours %s (hex UTF-8)\n", cp, h, o);
        if (run_lo >= 0 && c == run_k && (long)cp == run_hi + 1) { run_hi = cp; continue; }
        if (run_lo >= 0) printf("  %-10s U+%04lX..U+%04lX\n", CP_CLASS_TAG[run_k], run_lo, run_hi);
        run_lo = run_hi = cp;
        run_k = c;
    }
    if (run_lo >= 0) printf("  %-10s U+%04lX..U+%04lX\n", CP_CLASS_TAG[run_k], run_lo, run_hi);
    fclose(f);
    free(out.v);
    printf("%s: %zu code points compared\n", path, n);
    for (int c = 0; c < CP_NCLASS; c++)
        printf("  %6zu  %-10s %s\n", count[c], CP_CLASS_TAG[c], CP_CLASS_NAME[c]);
    if (n != 0x110000 - 0x800) { printf("  expected %d code points\n", 0x110000 - 0x800); return 1; }
    return count[CP_UNEXPLAINED];
}

int main(int argc, char** argv) {
    const char* codepoints = NULL;
    int a = 1;
    if (argc > 2 && strcmp(argv[1], "--codepoints") == 0) {
        codepoints = argv[2];
        a = 3;
    }
    if (a >= argc) {
        fprintf(stderr, "usage: compress_check [--codepoints FILE] REF.json...\n");
        return 2;
    }
    printf("utf8proc %s (Unicode %s)\n", utf8proc_version(), utf8proc_unicode_version());
    size_t total = 0;
    if (codepoints) total += check_codepoints_(codepoints);
    for (; a < argc; a++) {
        Ref r;
        ref_load_(&r, argv[a]);
        printf("%s: %lld ids\n", argv[a], (long long)r.V);
        size_t nb = check_normalizer_(&r), tb = check_table_(&r);
        printf("  %zu normaliser differences, %zu table differences over %lld ids\n", nb, tb,
               (long long)r.V);
        total += nb + tb;
        ref_free_(&r);
    }
    printf(total ? "FAIL: %zu differences\n" : "OK: no differences\n", total);
    return total ? 1 : 0;
}
