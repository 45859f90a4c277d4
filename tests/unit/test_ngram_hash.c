/*
 * test_ngram_hash.c — src/ngram_hash against the golden vectors (tests/data/multipliers.json,
 * primes.json, hash_ids.json: every case, every integer, exact) and against properties of the spec
 * (§3): exact primality, odd prefix-stable multipliers, row-independent hashing, and a plain
 * `%`-based re-implementation of the hash on random ids.
 *
 * The vectors hold int64 values up to 2^63−1; cJSON keeps numbers as double (exact only below
 * 2^53), so json_load_exact_ quotes every bare number before parsing and jint_ reads the digits
 * with strtoll.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "ngram_hash.h"

/* ---- exact JSON reading --------------------------------------------------------------------- */

static char* file_read_(const char* name) {
    char path[1024];
    size_t n;
    snprintf(path, sizeof path, "%s/%s", ENGRAM_TEST_DATA, name);
    char* s = engram_read_file(path, &n);
    if (!s) fail_msg("cannot open %s", path);
    return s;
}

// Wrap every number token outside strings in quotes: cJSON then keeps its digits verbatim.
static char* numbers_quote_(const char* s) {
    size_t n = strlen(s), o = 0;
    char* q = malloc(3 * n + 1);   // worst case: every character a one-digit number
    assert_non_null(q);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"') {   // copy a whole string, escapes included
            q[o++] = s[i++];
            while (s[i] != '"') {
                if (s[i] == '\\') q[o++] = s[i++];
                q[o++] = s[i++];
            }
            q[o++] = '"';
        } else if (c == '-' || isdigit((unsigned char)c)) {
            q[o++] = '"';
            while (i < n && strchr("0123456789+-.eE", s[i])) q[o++] = s[i++];
            q[o++] = '"';
            i--;
        } else {
            q[o++] = c;
        }
    }
    q[o] = '\0';
    return q;
}

static cJSON* json_load_exact_(const char* name) {
    char* raw = file_read_(name);
    char* quoted = numbers_quote_(raw);
    cJSON* root = cJSON_Parse(quoted);
    if (!root) fail_msg("%s: JSON parse error near: %.40s", name, cJSON_GetErrorPtr());
    free(raw);
    free(quoted);
    return root;
}

static const cJSON* jget_(const cJSON* obj, const char* key) {
    const cJSON* x = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!x) fail_msg("missing key \"%s\"", key);
    return x;
}

static int64_t jint_(const cJSON* x) {
    assert_non_null(x);
    if (!cJSON_IsString(x)) fail_msg("expected a number");
    char* end;
    errno = 0;
    long long v = strtoll(x->valuestring, &end, 10);
    if (errno || end == x->valuestring || *end) fail_msg("not an int64: %s", x->valuestring);
    return v;
}

static int64_t jkey_int_(const cJSON* obj, const char* key) { return jint_(jget_(obj, key)); }

// An int64 array of length n (asserted), freshly allocated.
static int64_t* jvec_(const cJSON* arr, int n) {
    assert_true(cJSON_IsArray(arr));
    assert_int_equal(cJSON_GetArraySize(arr), n);
    int64_t* v = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    assert_non_null(v);
    for (int i = 0; i < n; i++) v[i] = jint_(cJSON_GetArrayItem(arr, i));
    return v;
}

static int* jvec_int_(const cJSON* arr, int* n) {
    *n = cJSON_GetArraySize(arr);
    int* v = malloc((size_t)(*n ? *n : 1) * sizeof(int));
    assert_non_null(v);
    for (int i = 0; i < *n; i++) v[i] = (int)jint_(cJSON_GetArrayItem(arr, i));
    return v;
}

static EngramFlavour flavour_parse_(const char* s) {
    if (!strcmp(s, "deepseek")) return FLAVOUR_DEEPSEEK;
    if (!strcmp(s, "maxtext")) return FLAVOUR_MAXTEXT;
    fail_msg("unknown flavour %s", s);
    return FLAVOUR_DEEPSEEK;
}

// Equal int64 values, with both printed signed on failure.
static void expect_eq_(int64_t got, int64_t want, const char* what, int i) {
    if (got != want) fail_msg("%s[%d]: got %lld, want %lld", what, i, (long long)got,
                              (long long)want);
}

/* ---- the golden vectors ---------------------------------------------------------------------- */

static void multipliers_equal_numpy_vectors_in_both_flavours(void** state) {
    (void)state;
    cJSON* root = json_load_exact_("multipliers.json");
    const cJSON* cases = jget_(root, "cases");
    int n_cases = 0, n_flavour[2] = {0, 0};
    const cJSON* c;
    cJSON_ArrayForEach(c, cases) {
        EngramFlavour fl = flavour_parse_(jget_(c, "flavour")->valuestring);
        int64_t seed = jkey_int_(c, "seed"), vocab_c = jkey_int_(c, "tokenizer_vocab_size");
        int layer = (int)jkey_int_(c, "layer_id"), N = (int)jkey_int_(c, "max_ngram_size");
        // the reader is exact: 2^63−1 does not survive a double
        expect_eq_(jkey_int_(c, "int_max_used"), fl == FLAVOUR_MAXTEXT ? INT32_MAX : INT64_MAX,
                   "int_max_used", n_cases);
        expect_eq_(jkey_int_(c, "rng_seed_used"), seed + 10007 * layer, "rng_seed_used", n_cases);
        assert_string_equal(jget_(c, "integers_dtype")->valuestring,
                            fl == FLAVOUR_MAXTEXT ? "int32" : "int64");
        expect_eq_(ngram_hash_half_bound(fl, vocab_c), jkey_int_(c, "half_bound"), "half_bound",
                   n_cases);
        int64_t* want = jvec_(jget_(c, "multipliers"), N);
        int64_t bases[8] = {2, 2, 2, 2, 2, 2, 2, 2};
        NgramHash nh;
        ngram_hash_init(&nh, &layer, 1, N, 1, bases, vocab_c, 0, (uint64_t)seed, fl);
        for (int k = 0; k < N; k++) expect_eq_(nh.multipliers[k], want[k], "multipliers", k);
        ngram_hash_free(&nh);
        free(want);
        n_cases++;
        n_flavour[fl]++;
    }
    assert_int_equal(n_cases, 50);
    assert_true(n_flavour[FLAVOUR_DEEPSEEK] > 0 && n_flavour[FLAVOUR_MAXTEXT] > 0);
    cJSON_Delete(root);
}

// One primes.json case: every layer's sizes (by order and flat), offsets and total rows.
static void prime_case_check_(const cJSON* c) {
    int n_layers, N = (int)jkey_int_(c, "max_ngram_size");
    int H = (int)jkey_int_(c, "n_head_per_ngram");
    int* layers = jvec_int_(jget_(c, "layer_ids_in_order"), &n_layers);
    int64_t* bases = jvec_(jget_(c, "engram_vocab_size"), N - 1);
    NgramHash nh;
    ngram_hash_init(&nh, layers, n_layers, N, H, bases, 129280, 2, 0, FLAVOUR_DEEPSEEK);
    const cJSON* per_layer = jget_(c, "per_layer");
    assert_int_equal(cJSON_GetArraySize(per_layer), n_layers);
    for (int l = 0; l < n_layers; l++) {
        const cJSON* pl = cJSON_GetArrayItem(per_layer, l);   // file order = config order
        assert_int_equal(atoi(pl->string), layers[l]);
        assert_int_equal(nh.layer_ids[l], layers[l]);
        const int64_t* got = nh.table_sizes + (size_t)l * nh.h_total;
        int64_t* flat = jvec_(jget_(pl, "flat_sizes"), nh.h_total);
        int64_t* off = jvec_(jget_(pl, "offsets"), nh.h_total);
        for (int i = 0; i < nh.h_total; i++) {
            expect_eq_(got[i], flat[i], "flat_sizes", i);
            expect_eq_(nh.offsets[(size_t)l * nh.h_total + i], off[i], "offsets", i);
        }
        const cJSON* by_n = jget_(pl, "sizes_by_ngram");
        assert_int_equal(cJSON_GetArraySize(by_n), N - 1);
        for (int n = 0; n < N - 1; n++) {
            int64_t* sz = jvec_(cJSON_GetArrayItem(by_n, n), H);
            for (int j = 0; j < H; j++) expect_eq_(got[n * H + j], sz[j], "sizes_by_ngram", j);
            free(sz);
        }
        expect_eq_(nh.rows[l], jkey_int_(pl, "total_rows"), "total_rows", l);
        free(flat);
        free(off);
    }
    ngram_hash_free(&nh);
    free(layers);
    free(bases);
}

static void table_sizes_offsets_and_rows_equal_prime_vectors_in_layer_order(void** state) {
    (void)state;
    cJSON* root = json_load_exact_("primes.json");
    int n_cases = 0;
    const cJSON* c;
    cJSON_ArrayForEach(c, jget_(root, "cases")) {
        prime_case_check_(c);
        n_cases++;
    }
    assert_int_equal(n_cases, 17);
    cJSON_Delete(root);
}

// One hash_ids.json case × flavour: multipliers, sizes, offsets, local and global ids per layer.
static void hash_case_check_(const cJSON* c, const char* flavour_name, const cJSON* by_layer) {
    EngramFlavour fl = flavour_parse_(flavour_name);
    int n_layers, N = (int)jkey_int_(c, "max_ngram_size");
    int H = (int)jkey_int_(c, "n_head_per_ngram");
    int B = (int)jkey_int_(c, "B"), T = (int)jkey_int_(c, "S"), HT = (int)jkey_int_(c, "H_total");
    int* layers = jvec_int_(jget_(c, "layer_ids"), &n_layers);
    int64_t* bases = jvec_(jget_(c, "engram_vocab_size"), N - 1);
    NgramHash nh;
    ngram_hash_init(&nh, layers, n_layers, N, H, bases, jkey_int_(c, "tokenizer_vocab_size"),
                    jkey_int_(c, "pad_id_compressed"), (uint64_t)jkey_int_(c, "seed"), fl);
    assert_int_equal(nh.h_total, HT);
    int64_t* ids = malloc((size_t)B * T * sizeof(int64_t));
    int64_t* out = malloc((size_t)B * T * HT * sizeof(int64_t));
    const cJSON* in = jget_(c, "input_ids_compressed");
    for (int b = 0; b < B; b++) {
        int64_t* row = jvec_(cJSON_GetArrayItem(in, b), T);
        memcpy(ids + (size_t)b * T, row, (size_t)T * sizeof(int64_t));
        free(row);
    }
    for (int l = 0; l < n_layers; l++) {
        char key[16];
        snprintf(key, sizeof key, "%d", layers[l]);
        const cJSON* v = jget_(by_layer, key);
        int64_t* m = jvec_(jget_(v, "multipliers"), N);
        int64_t* sz = jvec_(jget_(v, "flat_sizes"), HT);
        int64_t* off = jvec_(jget_(v, "offsets"), HT);
        for (int k = 0; k < N; k++) expect_eq_(nh.multipliers[(size_t)l * N + k], m[k], "m", k);
        for (int i = 0; i < HT; i++) {
            expect_eq_(nh.table_sizes[(size_t)l * HT + i], sz[i], "flat_sizes", i);
            expect_eq_(nh.offsets[(size_t)l * HT + i], off[i], "offsets", i);
        }
        for (int global = 0; global <= 1; global++) {
            ngram_hash_ids(&nh, l, ids, B, T, global, out);
            const cJSON* want = jget_(v, global ? "hash_ids_global" : "hash_ids_local");
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++) {
                    int64_t* w = jvec_(cJSON_GetArrayItem(cJSON_GetArrayItem(want, b), t), HT);
                    for (int i = 0; i < HT; i++)
                        expect_eq_(out[((size_t)b * T + t) * HT + i], w[i], "hash id", i);
                    free(w);
                }
        }
        free(m);
        free(sz);
        free(off);
    }
    ngram_hash_free(&nh);
    free(layers);
    free(bases);
    free(ids);
    free(out);
}

static void hash_ids_equal_golden_vectors_local_and_global_in_both_flavours(void** state) {
    (void)state;
    cJSON* root = json_load_exact_("hash_ids.json");
    int n_runs = 0, saw_negative = 0;
    const cJSON* c;
    cJSON_ArrayForEach(c, jget_(root, "cases")) {
        const cJSON* fl;
        cJSON_ArrayForEach(fl, jget_(c, "by_flavour")) {
            hash_case_check_(c, fl->string, fl);
            n_runs++;
        }
        if (!strcmp(jget_(c, "name")->valuestring, "tiny_negative_ids")) saw_negative = 1;
    }
    assert_int_equal(n_runs, 8);   // 4 cases × 2 flavours
    assert_true(saw_negative);
    cJSON_Delete(root);
}

/* ---- the numpy stream, spot values taken from numpy 1.24.2 ---------------------------------- */

static void numpy_stream_spot_values_equal_numpy(void** state) {
    (void)state;
    NpRng rng;
    // default_rng(0).bit_generator.random_raw(3)
    const uint64_t raw0[3] = {11749869230777074271ULL, 4976686463289251617ULL,
                              755828109848996024ULL};
    nprng_seed(&rng, 0);
    for (int i = 0; i < 3; i++) assert_true(nprng_next64(&rng) == raw0[i]);
    const uint64_t raw2w[2] = {87427594128977387ULL, 6872972437549564694ULL};   // seed 2^40+5
    nprng_seed(&rng, (1ULL << 40) + 5);
    for (int i = 0; i < 2; i++) assert_true(nprng_next64(&rng) == raw2w[i]);
    int64_t out[5];
    const int64_t small[5] = {699, 227, 788, 316, 204};   // integers(0,1000,5,int64): 32-bit path
    nprng_seed(&rng, 12345);
    nprng_integers_i64(&rng, 1000, 5, out);
    for (int i = 0; i < 5; i++) expect_eq_(out[i], small[i], "int64 small range", i);
    const int64_t raw32[3] = {4058335883, 2684764585, 2938530453};   // integers(0, 2^32): raw
    nprng_seed(&rng, 7);
    nprng_integers_i64(&rng, 1LL << 32, 3, out);
    for (int i = 0; i < 3; i++) expect_eq_(out[i], raw32[i], "int64 R=2^32-1", i);
    const int64_t big[3] = {2684764586, 3853503933, 3331544672};   // integers(0, 2^32+1): 64-bit
    nprng_seed(&rng, 7);
    nprng_integers_i64(&rng, (1LL << 32) + 1, 3, out);
    for (int i = 0; i < 3; i++) expect_eq_(out[i], big[i], "int64 R=2^32", i);
    int32_t out32[5];
    const int32_t i32[5] = {958, 506, 757, 565, 177};   // default_rng(99).integers(0,1000,5,int32)
    nprng_seed(&rng, 99);
    nprng_integers_i32(&rng, 1000, 5, out32);
    for (int i = 0; i < 5; i++) expect_eq_(out32[i], i32[i], "int32", i);
    nprng_seed(&rng, 3);
    nprng_integers_i64(&rng, 1, 2, out);   // R = 0: zeros, no draw
    assert_true(out[0] == 0 && out[1] == 0);
}

/* ---- primes ------------------------------------------------------------------------------ */

static int trial_division_(uint64_t n) {
    if (n < 2) return 0;
    for (uint64_t d = 2; d * d <= n; d++)
        if (n % d == 0) return 0;
    return 1;
}

static void prime_is_agrees_with_trial_division_below_100000(void** state) {
    (void)state;
    for (uint64_t n = 0; n < 100000; n++)
        if (prime_is(n) != trial_division_(n))
            fail_msg("prime_is(%llu) wrong", (unsigned long long)n);
}

static void prime_is_rejects_carmichaels_and_pseudoprimes_and_accepts_large_primes(void** s) {
    (void)s;
    static const uint64_t composite[] = {
        0, 1, 4, 561, 1105, 1729, 2465, 2821, 6601, 8911, 41041, 825265, 321197185, 5394826801ULL,
        232250619601ULL, 9746347772161ULL,   // Carmichael numbers
        2047, 1373653, 25326001, 3215031751ULL, 2152302898747ULL, 3474749660383ULL,
        341550071728321ULL, 3825123056546413051ULL,   // strong pseudoprimes to the first k primes
        UINT64_MAX, 18446744030759878681ULL /* 4294967291^2 */, 4611686014132420609ULL,
        9223372021822390277ULL, 998244359987710471ULL, 9223372036854775807ULL /* 2^63-1 */,
        18446744073709551555ULL};
    static const uint64_t prime[] = {2, 3, 37, 41, 998244353, 1000000007, 2147483647, 4294967291ULL,
                                     2305843009213693951ULL /* 2^61-1 */, 4611686018427387847ULL,
                                     9223372036854775783ULL, 18446744073709551557ULL /* 2^64-59 */};
    for (size_t i = 0; i < sizeof composite / sizeof *composite; i++)
        if (prime_is(composite[i])) fail_msg("%llu is composite", (unsigned long long)composite[i]);
    for (size_t i = 0; i < sizeof prime / sizeof *prime; i++)
        if (!prime_is(prime[i])) fail_msg("%llu is prime", (unsigned long long)prime[i]);
}

static void table_sizes_are_distinct_primes_above_their_base_across_all_layers(void** state) {
    (void)state;
    const int layers[4] = {3, 0, 7, 1};
    const int64_t bases[3] = {1, 100, 97};   // overlapping ranges force the shared used set
    NgramHash nh;
    ngram_hash_init(&nh, layers, 4, 4, 5, bases, 50, 0, 1, FLAVOUR_DEEPSEEK);
    const int C = nh.n_layers * nh.h_total;
    for (int i = 0; i < C; i++) {
        assert_true(prime_is((uint64_t)nh.table_sizes[i]));
        assert_true(nh.table_sizes[i] >= bases[(i % nh.h_total) / nh.heads]);
        for (int k = 0; k < i; k++) assert_true(nh.table_sizes[k] != nh.table_sizes[i]);
    }
    ngram_hash_free(&nh);
}

/* ---- multipliers ------------------------------------------------------------------------ */

static void multipliers_are_odd_bounded_and_prefix_stable(void** state) {
    (void)state;
    const int64_t vocabs[5] = {1, 3, 1000, 129280, (int64_t)1 << 31};
    const int64_t bases[7] = {2, 2, 2, 2, 2, 2, 2};
    for (int f = 0; f < 2; f++)
        for (int vi = 0; vi < 5; vi++)
            for (int layer = 0; layer < 40; layer += 13) {
                EngramFlavour fl = (EngramFlavour)f;
                int64_t V = vocabs[vi];
                if (fl == FLAVOUR_MAXTEXT && V > INT32_MAX) V = INT32_MAX;
                int64_t hb = ngram_hash_half_bound(fl, V);
                NgramHash a, b;
                ngram_hash_init(&a, &layer, 1, 3, 1, bases, V, 0, 42, fl);
                ngram_hash_init(&b, &layer, 1, 8, 1, bases, V, 0, 42, fl);
                for (int k = 0; k < 8; k++) {
                    assert_true(b.multipliers[k] & 1);
                    assert_true(b.multipliers[k] >= 1 && b.multipliers[k] < 2 * hb);
                    if (k < 3) expect_eq_(a.multipliers[k], b.multipliers[k], "prefix", k);
                }
                ngram_hash_free(&a);
                ngram_hash_free(&b);
            }
    // V' beyond INT_MAX/2: half_bound clamps to 1, every multiplier is 1
    assert_int_equal(ngram_hash_half_bound(FLAVOUR_MAXTEXT, INT32_MAX), 1);
    assert_int_equal(ngram_hash_half_bound(FLAVOUR_DEEPSEEK, INT64_MAX), 1);
}

/* ---- hashing properties --------------------------------------------------------------------- */

static uint64_t splitmix_(uint64_t* s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Valid ids, small negatives, and (wild) arbitrary 64-bit values whose products wrap.
static void ids_random_(int64_t* ids, size_t n, int64_t vocab_c, int wild, uint64_t* s) {
    for (size_t i = 0; i < n; i++) {
        uint64_t r = splitmix_(s);
        switch (r % 4) {
        case 0: ids[i] = -(int64_t)(splitmix_(s) % 200) - 1; break;
        case 1: ids[i] = wild ? (int64_t)splitmix_(s) : (int64_t)(splitmix_(s) % 1000); break;
        default: ids[i] = (int64_t)(splitmix_(s) % (uint64_t)vocab_c);
        }
    }
}

/* The spec's pseudo-code, written plainly: tokens padded before the start, signed wrap-around
 * products (int64 or int32), XOR, `%` then +p for negatives. */
static void hash_reference_(const NgramHash* nh, int li, const int64_t* ids, int B, int T,
                            int global, int64_t* out) {
    const int N = nh->max_ngram, H = nh->heads, HT = nh->h_total;
    const int64_t* m = nh->multipliers + (size_t)li * N;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int64_t acc64 = 0;
            int32_t acc32 = 0;
            for (int k = 0; k < N; k++) {
                int64_t tok = t - k >= 0 ? ids[(size_t)b * T + t - k] : nh->pad_c;
                acc64 ^= (int64_t)((uint64_t)tok * (uint64_t)m[k]);
                acc32 ^= (int32_t)((uint32_t)(int32_t)tok * (uint32_t)m[k]);
                if (k == 0) continue;
                for (int j = 0; j < H; j++) {
                    int c = (k - 1) * H + j;
                    int64_t p = nh->table_sizes[(size_t)li * HT + c], r;
                    if (nh->flavour == FLAVOUR_MAXTEXT) r = (int64_t)(acc32 % (int32_t)p);
                    else r = acc64 % p;
                    if (r < 0) r += p;
                    out[((size_t)b * T + t) * HT + c] =
                        r + (global ? nh->offsets[(size_t)li * HT + c] : 0);
                }
            }
        }
}

static void hash_ids_equal_plain_modulo_reference_on_random_ids(void** state) {
    (void)state;
    const int layers[2] = {5, 2};
    const int64_t big_bases[3] = {2, 3000000019LL, ((int64_t)1 << 60) - 1000};   // p = 2 .. ~2^60
    const int64_t mt_bases[3] = {2, 65536, 2000000000};
    const int shapes[6][2] = {{0, 5}, {3, 1}, {2, 2}, {1, 3}, {7, 33}, {4, 4096}};
    uint64_t s = 12345;
    for (int f = 0; f < 2; f++) {
        EngramFlavour fl = (EngramFlavour)f;
        NgramHash nh;
        ngram_hash_init(&nh, layers, 2, 4, 3, fl == FLAVOUR_MAXTEXT ? mt_bases : big_bases, 1000,
                        7, 9, fl);
        for (int si = 0; si < 6; si++) {
            int B = shapes[si][0], T = shapes[si][1];
            size_t n = (size_t)B * T, no = n * nh.h_total;
            int64_t* ids = malloc((n ? n : 1) * sizeof(int64_t));
            int64_t* got = malloc((no ? no : 1) * sizeof(int64_t));
            int64_t* want = malloc((no ? no : 1) * sizeof(int64_t));
            ids_random_(ids, n, nh.vocab_c, 1, &s);
            for (int l = 0; l < 2; l++)
                for (int global = 0; global <= 1; global++) {
                    ngram_hash_ids(&nh, l, ids, B, T, global, got);
                    hash_reference_(&nh, l, ids, B, T, global, want);
                    for (size_t i = 0; i < no; i++) expect_eq_(got[i], want[i], "hash", (int)i);
                }
            free(ids);
            free(got);
            free(want);
        }
        ngram_hash_free(&nh);
    }
}

static void hashing_row_by_row_equals_hashing_the_batch(void** state) {
    (void)state;
    const int layers[2] = {1, 15};
    const int64_t bases[2] = {646400, 646400};
    const int B = 6, T = 50;
    uint64_t s = 777;
    int64_t ids[6 * 50];
    for (int f = 0; f < 2; f++) {
        NgramHash nh;
        ngram_hash_init(&nh, layers, 2, 3, 8, bases, 129280, 2, 0, (EngramFlavour)f);
        const int HT = nh.h_total;
        ids_random_(ids, (size_t)B * T, nh.vocab_c, 0, &s);
        int64_t* batch = malloc((size_t)B * T * HT * sizeof(int64_t));
        int64_t* row = malloc((size_t)T * HT * sizeof(int64_t));
        for (int l = 0; l < 2; l++) {
            ngram_hash_ids(&nh, l, ids, B, T, 1, batch);
            for (int b = 0; b < B; b++) {
                ngram_hash_ids(&nh, l, ids + (size_t)b * T, 1, T, 1, row);
                assert_memory_equal(row, batch + (size_t)b * T * HT,
                                    (size_t)T * HT * sizeof(int64_t));
            }
            for (size_t i = 0; i < (size_t)B * T * HT; i++) {   // global ids stay in their column
                int c = (int)(i % HT);
                int64_t off = nh.offsets[(size_t)l * HT + c];
                assert_true(batch[i] >= off && batch[i] < off + nh.table_sizes[(size_t)l * HT + c]);
            }
        }
        free(batch);
        free(row);
        ngram_hash_free(&nh);
    }
}

/* ---- bad input ------------------------------------------------------------------------- */

typedef struct {
    const char* what;
    int layers[2];
    int n_layers, N, H;
    int64_t bases[2], vocab_c;
    EngramFlavour flavour;
} BadInit;

// Runs init in a child; it must exit 1 with a "---> HINT:" line on stderr.
static void init_dies_with_hint_(const BadInit* c) {
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 2);
        NgramHash nh;
        ngram_hash_init(&nh, c->layers, c->n_layers, c->N, c->H, c->bases, c->vocab_c, 0, 0,
                        c->flavour);
        _exit(0);   // not reached when init rejects the input
    }
    close(fd[1]);
    char buf[2048] = {0};
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1 || !strstr(buf, "HINT"))
        fail_msg("%s: expected exit 1 with a hint, got status %d, stderr: %s", c->what, status,
                 buf);
}

static void init_dies_with_a_hint_on_bad_input(void** state) {
    (void)state;
    const BadInit cases[] = {
        {"no layers", {1, 2}, 0, 3, 8, {10, 10}, 100, FLAVOUR_DEEPSEEK},
        {"N = 1", {1, 2}, 2, 1, 8, {10, 10}, 100, FLAVOUR_DEEPSEEK},
        {"H = 0", {1, 2}, 2, 3, 0, {10, 10}, 100, FLAVOUR_DEEPSEEK},
        {"V' = 0", {1, 2}, 2, 3, 8, {10, 10}, 0, FLAVOUR_DEEPSEEK},
        {"base 0", {1, 2}, 2, 3, 8, {10, 0}, 100, FLAVOUR_DEEPSEEK},
        {"negative layer id", {-1, 2}, 2, 3, 8, {10, 10}, 100, FLAVOUR_DEEPSEEK},
        {"repeated layer id", {4, 4}, 2, 3, 8, {10, 10}, 100, FLAVOUR_DEEPSEEK},
        {"maxtext V' > int32", {1, 2}, 2, 3, 8, {10, 10}, (int64_t)1 << 31, FLAVOUR_MAXTEXT},
        {"maxtext primes > int32", {1, 2}, 2, 3, 8, {10, (int64_t)1 << 31}, 100, FLAVOUR_MAXTEXT},
        {"rows overflow int64", {1, 2}, 2, 3, 8, {10, (int64_t)1 << 62}, 100, FLAVOUR_DEEPSEEK},
        {"unknown flavour", {1, 2}, 2, 3, 8, {10, 10}, 100, (EngramFlavour)7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) init_dies_with_hint_(&cases[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(multipliers_equal_numpy_vectors_in_both_flavours),
        cmocka_unit_test(table_sizes_offsets_and_rows_equal_prime_vectors_in_layer_order),
        cmocka_unit_test(hash_ids_equal_golden_vectors_local_and_global_in_both_flavours),
        cmocka_unit_test(numpy_stream_spot_values_equal_numpy),
        cmocka_unit_test(prime_is_agrees_with_trial_division_below_100000),
        cmocka_unit_test(prime_is_rejects_carmichaels_and_pseudoprimes_and_accepts_large_primes),
        cmocka_unit_test(table_sizes_are_distinct_primes_above_their_base_across_all_layers),
        cmocka_unit_test(multipliers_are_odd_bounded_and_prefix_stable),
        cmocka_unit_test(hash_ids_equal_plain_modulo_reference_on_random_ids),
        cmocka_unit_test(hashing_row_by_row_equals_hashing_the_batch),
        cmocka_unit_test(init_dies_with_a_hint_on_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
