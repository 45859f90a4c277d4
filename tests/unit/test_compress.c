/*
 * test_compress.c — src/compress.c on hand-picked cases: the §2.1 normaliser step by step (each
 * expected output derived from spec/ENGRAM.md §2.1 and checked against Hugging Face `tokenizers`
 * 0.23.2 with the normaliser Sequence of tests/reference/hf_compress.js), the §2.2 key rules and
 * first-seen ids, and §2.3's pass-through of negative ids.
 *
 * Not here: whole vocabularies against HF (tests/reference/compression_matches_hf.sh).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compress.h"

typedef struct { const char* in; size_t n; const char* want; } Case;
#define C_(in, want) { in, sizeof(in) - 1, want }   // sizeof keeps embedded NUL bytes

static void assert_normalizes_(const Case* k) {
    ByteBuf out = {0};
    compress_normalize(k->in, k->n, &out);
    size_t wn = strlen(k->want);
    if (out.n != wn || memcmp(out.v, k->want, wn) != 0)
        fail_msg("normalize(\"%s\") = \"%.*s\" (%zu bytes), want \"%s\"", k->in, (int)out.n, out.v, out.n,
                 k->want);
    free(out.v);
}

static void run_cases_(const Case* cases, size_t n) {
    for (size_t i = 0; i < n; i++) assert_normalizes_(&cases[i]);
}

static void case_and_accents_fold_per_character(void** state) {
    (void)state;
    const Case cases[] = {
        C_("APPLE", "apple"), C_("Caf\u00e9", "cafe"),
        C_("\u0130", "i"),              // İ: NFD gives I + U+0307, the mark goes, I lowercases
        C_("\u00df", "\u00df"),         // ß stays: lowercase, not casefold
        C_("\u0391\u03a3", "\u03b1\u03c3"),   // ΑΣ → ασ: per character, no final-sigma rule
        C_("\u01c4", "dz"),             // Ǆ: NFKC → DŽ, NFD → DZ + caron, mark stripped
        C_("\u212a", "k"),              // Kelvin sign
    };
    run_cases_(cases, sizeof cases / sizeof *cases);
}

static void compatibility_forms_fold(void** state) {
    (void)state;
    const Case cases[] = {
        C_("\ufb01", "fi"), C_("\ufb03", "ffi"),                  // ligatures
        C_("\uff21\uff22\uff23", "abc"), C_("\uff11\uff12", "12"),  // full-width
        C_("\u210c", "h"), C_("\u00b2", "2"), C_("\u216b", "xii"), C_("\u24b6", "a"),
        C_("\uff8a\uff9e", "\u30cf"),   // halfwidth ﾊﾞ → バ → ハ + U+3099 (a mark, stripped)
    };
    run_cases_(cases, sizeof cases / sizeof *cases);
}

// NFKC composes Hangul syllables, then NFD splits them into conjoining jamo (letters, kept).
static void hangul_ends_decomposed(void** state) {
    (void)state;
    const Case cases[] = {
        C_("\ud55c\uad6d\uc5b4", "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165"),
    };
    run_cases_(cases, sizeof cases / sizeof *cases);
}

// Mn, Mc and Me are all stripped, also when nothing else is left.
static void every_mark_is_stripped(void** state) {
    (void)state;
    const Case cases[] = {
        C_("\u0301", ""), C_("\u0301\u0308", ""), C_("\u20dd", ""),   // Mn, Mn Mn, Me
        C_("\u0915\u094d\u0937\u093f", "\u0915\u0937"),              // क्षि: virama (Mn), i-sign (Mc)
    };
    run_cases_(cases, sizeof cases / sizeof *cases);
}

static void whitespace_runs_become_one_space_and_ends_are_stripped(void** state) {
    (void)state;
    const Case cases[] = {
        C_(" Apple", "apple"), C_(" a ", "a"), C_("a  b", "a b"), C_("a\t\tb\n", "a b"),
        C_("a\u00a0b", "a b"), C_("x\u00a0\u00a0y", "x y"),    // NBSP: NFKC makes it U+0020
        C_("\uff21\u3000\uff22", "a b"), C_("\u3000a", "a"),   // ideographic space
    };
    run_cases_(cases, sizeof cases / sizeof *cases);
}

// A token of only space/TAB/CR/LF (or NBSP, U+3000: spaces after NFKC) is " ", not "".
static void whitespace_only_keeps_one_space(void** state) {
    (void)state;
    const Case cases[] = {
        C_(" ", " "), C_("   ", " "), C_("\t\r\n", " "), C_("\u00a0", " "), C_("\u3000", " "),
        C_(" \u00a0 ", " "),
        // White_Space outside the run set is stripped to nothing; U+001C is not White_Space.
        C_("\u2028", ""), C_("\xc2\x85", ""), C_("\v", ""), C_("\x1c", "\x1c"),
        // The sentinel of step 6 is U+E000: in the input it also comes out as a space.
        C_("\ue000", " "), C_("a\ue000b", "a b"),
    };
    run_cases_(cases, sizeof cases / sizeof *cases);
}

static void nul_and_invalid_bytes_are_kept_as_text(void** state) {
    (void)state;
    const Case cases[] = {
        C_("", ""),
        C_("\xff", "\ufffd"), C_("a\xe2\x82z", "a\ufffdz"),   // one U+FFFD per maximal bad sequence
        C_("\xed\xa0\x80", "\ufffd\ufffd\ufffd"),                // a surrogate's bytes: three
    };
    ByteBuf out = {0};   // U+0000 is text: kept, and lengths (not NULs) end strings
    compress_normalize("a\0B", 3, &out);
    assert_int_equal(out.n, 3);
    assert_memory_equal(out.v, "a\0b", 3);
    free(out.v);
    run_cases_(cases, sizeof cases / sizeof *cases);
}

// §2.2: U+FFFD → raw string; empty → decoded text; one dictionary; ids in first-seen order.
static void keys_follow_the_rules_in_first_seen_order(void** state) {
    (void)state;
    const char* decoded[] = {"<s>", " Apple", "APPLE", "\xef\xbf\xbd", "\xef\xbf\xbd", "\xcc\x81",
                             "\t", "\xe3\x80\x80", "\xe2\x80\xa8", "\xef\xbf\xbd"};
    const char* raw[] = {"<s>", "\xc4\xa0" "Apple", "APPLE", "\xc3\xa2", "apple", "\xcc\x81",
                         "\xc4\x89", "x", "y", NULL};
    const int32_t want[] = {0, 1, 1, 2, 1, 3, 4, 4, 5, 6};
    // 3: raw "â"; 4: raw "apple" meets the normalised "apple" (one dictionary); 5: a lone mark
    // normalises to "" so its text is the key; 6, 7: both " "; 8: U+2028 → "" → its text;
    // 9: no raw string, so the decoded text.
    size_t V = sizeof decoded / sizeof *decoded, dlen[16];
    for (size_t i = 0; i < V; i++) dlen[i] = strlen(decoded[i]);
    Compression c;
    compress_build_keys(&c, (int64_t)V, decoded, dlen, raw);
    assert_int_equal(c.V, V);
    assert_int_equal(c.Vc, 7);
    for (size_t i = 0; i < V; i++)
        if (c.lookup[i] != want[i]) fail_msg("lookup[%zu] = %d, want %d", i, c.lookup[i], want[i]);
    compress_free(&c);
    assert_null(c.lookup);
}

static void apply_maps_ids_and_passes_negatives(void** state) {
    (void)state;
    const char* decoded[] = {"a", "A", " b", "B"};
    const char* raw[] = {"a", "A", "Ġb", "B"};
    size_t dlen[] = {1, 1, 2, 1};
    Compression c;
    compress_build_keys(&c, 4, decoded, dlen, raw);
    const int32_t ids[] = {3, 0, -1, 2, -100, 1};
    const int64_t want[] = {1, 0, -1, 1, -100, 0};
    int64_t out[6];
    compress_apply(&c, ids, 6, out);
    assert_memory_equal(out, want, sizeof want);
    compress_free(&c);
}

// An id ≥ V is the caller's error: compress_apply exits with a message instead of reading past.
static void apply_refuses_ids_outside_the_vocabulary(void** state) {
    (void)state;
    const char* decoded[] = {"a"};
    size_t dlen[] = {1};
    Compression c;
    compress_build_keys(&c, 1, decoded, dlen, decoded);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        int32_t id = 1;
        int64_t out;
        compress_apply(&c, &id, 1, &out);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    compress_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(case_and_accents_fold_per_character),
        cmocka_unit_test(compatibility_forms_fold),
        cmocka_unit_test(hangul_ends_decomposed),
        cmocka_unit_test(every_mark_is_stripped),
        cmocka_unit_test(whitespace_runs_become_one_space_and_ends_are_stripped),
        cmocka_unit_test(whitespace_only_keeps_one_space),
        cmocka_unit_test(nul_and_invalid_bytes_are_kept_as_text),
        cmocka_unit_test(keys_follow_the_rules_in_first_seen_order),
        cmocka_unit_test(apply_maps_ids_and_passes_negatives),
        cmocka_unit_test(apply_refuses_ids_outside_the_vocabulary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
