/*
 * nprng_check.c — reads the JSON lines of tests/reference/numpy_multipliers.py on stdin (one case
 * each: flavour, seed, layer_id, vocab_c, N, half_bound, multipliers drawn by numpy itself) and
 * compares them with ngram_hash_half_bound / ngram_hash_init. Prints every mismatch; exit status 1
 * on any mismatch, on a line it cannot read, or when no case was read.
 *
 * Not here: the numpy side (the python script), the golden vectors (tests/unit/test_ngram_hash.c).
 * Numbers reach 2^63, beyond a double, so they are read as digits, not through cJSON's doubles.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngram_hash.h"

#define MAX_N 64

typedef struct {
    char flavour[16];
    uint64_t seed;
    long long layer_id, vocab_c, n, half_bound;
    int64_t m[MAX_N];
} Case;

// The digits right after "key": in line (a number; the lines come from json.dumps).
static const char* key_find_(const char* line, const char* key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char* p = strstr(line, pat);
    return p ? p + strlen(pat) : NULL;
}

static int key_ll_(const char* line, const char* key, long long* v) {
    const char* p = key_find_(line, key);
    char* end;
    if (!p) return 0;
    errno = 0;
    *v = strtoll(p, &end, 10);
    return !errno && end != p;
}

static int case_parse_(const char* line, Case* c) {
    const char* p = key_find_(line, "flavour");
    const char* q = p ? strchr(p + 1, '"') : NULL;
    if (!p || *p != '"' || !q || q - p - 1 >= (long)sizeof c->flavour) return 0;
    memcpy(c->flavour, p + 1, (size_t)(q - p - 1));
    c->flavour[q - p - 1] = '\0';
    char* end;
    if (!(p = key_find_(line, "seed"))) return 0;
    errno = 0;
    c->seed = strtoull(p, &end, 10);
    if (errno || end == p) return 0;
    if (!key_ll_(line, "layer_id", &c->layer_id) || !key_ll_(line, "vocab_c", &c->vocab_c) ||
        !key_ll_(line, "N", &c->n) || !key_ll_(line, "half_bound", &c->half_bound))
        return 0;
    if (c->n < 2 || c->n > MAX_N || !(p = key_find_(line, "multipliers")) || *p != '[') return 0;
    for (int k = 0; k < c->n; k++) {
        errno = 0;
        c->m[k] = strtoll(++p, &end, 10);   // skips '[' or ','
        if (errno || end == p || (*end != ',' && *end != ']')) return 0;
        p = end;
    }
    return *p == ']';
}

// 1 when ngram_hash agrees with numpy on this case; prints what differs otherwise.
static int case_check_(const Case* c, int lineno) {
    EngramFlavour fl = strcmp(c->flavour, "maxtext") ? FLAVOUR_DEEPSEEK : FLAVOUR_MAXTEXT;
    int64_t bases[MAX_N], hb = ngram_hash_half_bound(fl, c->vocab_c);
    for (int k = 0; k < MAX_N; k++) bases[k] = 2;
    int ok = hb == c->half_bound, layer = (int)c->layer_id;
    NgramHash nh;
    ngram_hash_init(&nh, &layer, 1, (int)c->n, 1, bases, c->vocab_c, 0, c->seed, fl);
    for (int k = 0; k < c->n; k++) ok &= nh.multipliers[k] == c->m[k];
    if (!ok) {
        printf("line %d: %s seed=%llu layer=%lld V'=%lld N=%lld: half_bound %lld (numpy %lld), "
               "multipliers", lineno, c->flavour, (unsigned long long)c->seed, c->layer_id,
               c->vocab_c, c->n, (long long)hb, c->half_bound);
        for (int k = 0; k < c->n; k++)
            printf(" %lld%s", (long long)nh.multipliers[k],
                   nh.multipliers[k] == c->m[k] ? "" : "(!)");
        printf("\n");
    }
    ngram_hash_free(&nh);
    return ok;
}

int main(void) {
    char line[8192];
    int lineno = 0, n_cases = 0, n_bad = 0;
    while (fgets(line, sizeof line, stdin)) {
        lineno++;
        if (line[0] == '\n' || line[0] == '\0') continue;
        Case c;
        if (!case_parse_(line, &c)) {
            printf("line %d: cannot read: %s", lineno, line);
            n_bad++;
            continue;
        }
        n_cases++;
        n_bad += !case_check_(&c, lineno);
    }
    printf("nprng_check: %d cases from numpy, %d mismatches\n", n_cases, n_bad);
    return n_bad || !n_cases;
}
