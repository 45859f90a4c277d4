/*
 * test_tokenizer.c — the tokenizer's parts that have a known answer without a reference library:
 * GPT-2's byte-level map, Rust's from_utf8_lossy on malformed UTF-8, BPE merge order, added-token
 * matching, decode, the default pad id, and the one-line refusal of every unsupported
 * tokenizer.json feature. Exactness on real tokenizers against HF: tests/reference/hf_*.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer.h"

static char dir_[256];

/* ---- byte-level map ---- */

static void byte_map_matches_gpt2(void** state) {
    (void)state;
    assert_int_equal(tokenizer_byte_to_codepoint('a'), 'a');
    assert_int_equal(tokenizer_byte_to_codepoint('!'), '!');
    assert_int_equal(tokenizer_byte_to_codepoint(' '), 0x120);    // Ġ
    assert_int_equal(tokenizer_byte_to_codepoint('\n'), 0x10A);   // Ċ
    assert_int_equal(tokenizer_byte_to_codepoint(0), 0x100);
    assert_int_equal(tokenizer_byte_to_codepoint(127), 0x121);
    assert_int_equal(tokenizer_byte_to_codepoint(0xA0), 0x142);
    assert_int_equal(tokenizer_byte_to_codepoint(0xAD), 0x143);   // the last non-printable
    assert_int_equal(tokenizer_byte_to_codepoint(0xA1), 0xA1);
    assert_int_equal(tokenizer_byte_to_codepoint(0xFF), 0xFF);
    int seen[324] = {0};   // a bijection onto 256 code points below 324
    for (int b = 0; b < 256; b++) {
        uint32_t cp = tokenizer_byte_to_codepoint((uint8_t)b);
        assert_true(cp < 324);
        assert_int_equal(seen[cp]++, 0);
    }
}

/* ---- from_utf8_lossy ---- */

static void lossy_is_(const char* in, size_t n, const char* want) {
    ByteBuf b = {0};
    tokenizer_utf8_lossy(in, n, &b);
    bytebuf_append(&b, "", 1);
    assert_string_equal(b.v, want);
    free(b.v);
}

#define R "\xEF\xBF\xBD"   // U+FFFD
static void utf8_lossy_replaces_maximal_subparts(void** state) {
    (void)state;
    lossy_is_("hello", 5, "hello");
    lossy_is_("caf\xC3\xA9", 5, "caf\xC3\xA9");
    lossy_is_("\xF0\x9F\x98\x80", 4, "\xF0\x9F\x98\x80");
    lossy_is_("a\x80" "b", 3, "a" R "b");                    // lone continuation
    lossy_is_("\xC3", 1, R);                                  // truncated 2-byte
    lossy_is_("\xE2\x82", 2, R);                              // truncated 3-byte: one U+FFFD
    lossy_is_("\xF0\x9F\x98", 3, R);                          // truncated 4-byte: one
    lossy_is_("\xF0\x9F\x98" "A", 4, R "A");
    lossy_is_("\xC0\xAF", 2, R R);                            // overlong: each byte
    lossy_is_("\xE0\x80\xAF", 3, R R R);                      // E0 needs A0..BF
    lossy_is_("\xED\xA0\x80", 3, R R R);                      // surrogate
    lossy_is_("\xF4\x90\x80\x80", 4, R R R R);                // above U+10FFFF
    lossy_is_("\xF5\xFF", 2, R R);
    lossy_is_("\xE2\x28\xA1", 3, R "(" R);
    lossy_is_("\xF1\x80\x80\xE1\x80\xC0", 6, R R R);          // Unicode 6.0 table 3-8 style
    // the W3C/WHATWG example: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 → a,FFFD,FFFD,FFFD,b,FFFD,c,FFFD,FFFD,d
    lossy_is_("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64", 13, "a" R R R "b" R "c" R R "d");
}

/* ---- a small byte-level tokenizer.json ---- */

/* ids 0..255: the byte-level characters of bytes 0..255; then merges; then added tokens. */
static const char* MERGES[][2] = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"}};
enum { ID_HE = 256, ID_LL, ID_HELL, ID_HELLO, ID_GW, ID_EOT, ID_PAD };

static char* cp_utf8_(uint32_t cp, char out[4]) {
    if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
    else out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
    return out;
}

/* edit(root) may change the default tokenizer before it is written. */
static const char* write_tokenizer_(void (*edit)(cJSON* root)) {
    cJSON* root = cJSON_CreateObject();
    cJSON* model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON* vocab = cJSON_AddObjectToObject(model, "vocab");
    char u[4];
    for (int b = 0; b < 256; b++) cJSON_AddNumberToObject(vocab, cp_utf8_(tokenizer_byte_to_codepoint((uint8_t)b), u), b);
    cJSON* merges = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < 5; i++) {
        char line[32], whole[32];
        snprintf(line, sizeof line, "%s %s", MERGES[i][0], MERGES[i][1]);
        snprintf(whole, sizeof whole, "%s%s", MERGES[i][0], MERGES[i][1]);
        cJSON_AddItemToArray(merges, cJSON_CreateString(line));
        cJSON_AddNumberToObject(vocab, whole, 256 + i);
    }
    cJSON* added = cJSON_AddArrayToObject(root, "added_tokens");
    const char* names[] = {"<|endoftext|>", "<pad>"};
    for (int i = 0; i < 2; i++) {
        cJSON* a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", ID_EOT + i);
        cJSON_AddStringToObject(a, "content", names[i]);
        cJSON_AddBoolToObject(a, "special", 1);
        cJSON_AddBoolToObject(a, "normalized", 0);
        cJSON_AddItemToArray(added, a);
    }
    cJSON_AddNullToObject(root, "normalizer");
    cJSON* pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddBoolToObject(pre, "add_prefix_space", 0);
    cJSON_AddBoolToObject(pre, "use_regex", 1);
    if (edit) edit(root);
    static char path[300];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir_);
    char* text = cJSON_Print(root);
    FILE* f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(root);
    return path;
}

static Tokenizer* load_ok_(void (*edit)(cJSON*)) {
    char err[512] = "";
    Tokenizer* tk = tokenizer_load(write_tokenizer_(edit), err, sizeof err);
    if (!tk) fail_msg("load failed: %s", err);
    return tk;
}

static void encode_is_(const Tokenizer* tk, const char* text, const int32_t* want, size_t n) {
    IdVec ids = {0};
    tokenizer_encode(tk, text, strlen(text), &ids);
    if (ids.n != n) fail_msg("'%s': %zu ids, want %zu", text, ids.n, n);
    for (size_t i = 0; i < n; i++)
        if (ids.v[i] != want[i]) fail_msg("'%s': id %zu is %d, want %d", text, i, ids.v[i], want[i]);
    free(ids.v);
}

static void bpe_merges_by_rank_and_matches_added_tokens(void** state) {
    (void)state;
    Tokenizer* tk = load_ok_(NULL);
    assert_int_equal(tokenizer_vocab_size(tk), ID_PAD + 1);
    encode_is_(tk, "hello", (int32_t[]){ID_HELLO}, 1);
    encode_is_(tk, "hello world", (int32_t[]){ID_HELLO, ID_GW, 'o', 'r', 'l', 'd'}, 6);
    encode_is_(tk, "hellhe", (int32_t[]){ID_HELL, ID_HE}, 2);   // one pre-token: "he","ll" then "hell"
    encode_is_(tk, "a<|endoftext|><pad>b", (int32_t[]){'a', ID_EOT, ID_PAD, 'b'}, 4);
    // no added token here: GPT-2's regex gives "<|", "endoftext", "|"
    encode_is_(tk, "<|endoftext|", (int32_t[]){'<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x', 't', '|'}, 12);
    tokenizer_free(tk);
}

static void decode_inverts_encode_and_keeps_specials(void** state) {
    (void)state;
    Tokenizer* tk = load_ok_(NULL);
    const char* text = "hello world<|endoftext|> caf\xC3\xA9 \xF0\x9F\x98\x80!";
    IdVec ids = {0};
    tokenizer_encode(tk, text, strlen(text), &ids);
    ByteBuf b = {0};
    tokenizer_decode(tk, ids.v, ids.n, &b);
    assert_int_equal(b.n, strlen(text));
    assert_memory_equal(b.v, text, b.n);
    assert_string_equal(tokenizer_token_string(tk, ID_GW), "\xC4\xA0w");   // "Ġw"
    assert_string_equal(tokenizer_token_string(tk, ID_EOT), "<|endoftext|>");
    assert_null(tokenizer_token_string(tk, ID_PAD + 1));
    assert_int_equal(tokenizer_default_pad_id(tk), ID_PAD);
    assert_int_equal(tokenizer_eot_id(tk), ID_EOT);
    assert_int_equal(strlen(tokenizer_sha256(tk)), 64);
    free(ids.v), free(b.v);
    tokenizer_free(tk);
}

/* Split(String "l") then Split(Regex "\s+"), both Isolated, then ByteLevel without regex. */
static void set_splits_(cJSON* r) {
    cJSON_ReplaceItemInObject(r, "pre_tokenizer", cJSON_Parse(
        "{\"type\":\"Sequence\",\"pretokenizers\":["
        "{\"type\":\"Split\",\"pattern\":{\"String\":\"l\"},\"behavior\":\"Isolated\",\"invert\":false},"
        "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}"));
}

static void split_sequence_isolates_matches(void** state) {
    (void)state;
    Tokenizer* tk = load_ok_(set_splits_);
    encode_is_(tk, "hello", (int32_t[]){ID_HE, 'l', 'l', 'o'}, 4);   // "l" pieces stop the merges
    encode_is_(tk, "he  he", (int32_t[]){ID_HE, 32, 32, ID_HE}, 4);  // one "  " piece: no merge for it
    encode_is_(tk, "hehe", (int32_t[]){ID_HE, ID_HE}, 2);
    tokenizer_free(tk);
}

static void drop_pad_(cJSON* root) { cJSON_DeleteItemFromArray(cJSON_GetObjectItem(root, "added_tokens"), 1); }
static void pad_falls_back_to_end_of_text(void** state) {
    (void)state;
    Tokenizer* tk = load_ok_(drop_pad_);
    assert_int_equal(tokenizer_default_pad_id(tk), ID_EOT);
    tokenizer_free(tk);
}

/* ---- refusals ---- */

static void refused_(void (*edit)(cJSON*), const char* frag) {
    char err[512] = "";
    Tokenizer* tk = tokenizer_load(write_tokenizer_(edit), err, sizeof err);
    tokenizer_free(tk);
    if (tk || !strstr(err, frag) || !strstr(err, "tokenizer.json") || strchr(err, '\n'))
        fail_msg("wanted a one-line refusal naming the file with '%s', got '%s'", frag, err);
}

static void set_norm_(cJSON* r) {
    cJSON_ReplaceItemInObject(r, "normalizer", cJSON_Parse("{\"type\":\"NFC\"}"));
}
static void set_pre_(cJSON* r) {
    cJSON_ReplaceItemInObject(r, "pre_tokenizer", cJSON_Parse("{\"type\":\"Whitespace\"}"));
}
static void set_split_(cJSON* r) {
    cJSON_ReplaceItemInObject(r, "pre_tokenizer", cJSON_Parse(
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},"
        "\"behavior\":\"Removed\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]}"));
}
static void set_bad_regex_(cJSON* r) {
    cJSON_ReplaceItemInObject(r, "pre_tokenizer", cJSON_Parse(
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},"
        "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]}"));
}
static void set_model_(cJSON* r) { cJSON_ReplaceItemInObject(cJSON_GetObjectItem(r, "model"), "type", cJSON_CreateString("WordPiece")); }
static void set_merge_(cJSON* r) {
    cJSON_AddItemToArray(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "model"), "merges"), cJSON_CreateString("x yz"));
}
static void set_post_(cJSON* r) { cJSON_AddItemToObject(r, "post_processor", cJSON_Parse("{\"type\":\"TemplateProcessing\"}")); }
static void set_lstrip_(cJSON* r) {
    cJSON_AddTrueToObject(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "added_tokens"), 0), "lstrip");
}

static void unsupported_features_are_refused_in_one_line(void** state) {
    (void)state;
    refused_(set_norm_, "normalizer NFC is not supported");
    refused_(set_pre_, "pre_tokenizer Whitespace is not supported");
    refused_(set_split_, "behavior Removed");
    refused_(set_bad_regex_, "Split regex 1 does not compile");
    refused_(set_model_, "model type WordPiece is not supported");
    refused_(set_merge_, "\"x yz\"");
    refused_(set_post_, "post_processor TemplateProcessing");
    refused_(set_lstrip_, "lstrip");
    char err[512], path[300];
    snprintf(path, sizeof path, "%s/broken.json", dir_);
    FILE* f = fopen(path, "w");
    fputs("{\n\"model\": {\n", f);
    fclose(f);
    assert_null(tokenizer_load(path, err, sizeof err));
    assert_non_null(strstr(err, "broken.json:"));
    assert_non_null(strstr(err, "not valid JSON"));
    snprintf(path, sizeof path, "%s/missing.json", dir_);
    assert_null(tokenizer_load(path, err, sizeof err));
    assert_non_null(strstr(err, "missing.json: no such tokenizer file"));
}

int main(void) {
    snprintf(dir_, sizeof dir_, "/tmp/engram_test_tokenizer_XXXXXX");
    if (!mkdtemp(dir_)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(byte_map_matches_gpt2),
        cmocka_unit_test(utf8_lossy_replaces_maximal_subparts),
        cmocka_unit_test(bpe_merges_by_rank_and_matches_added_tokens),
        cmocka_unit_test(decode_inverts_encode_and_keeps_specials),
        cmocka_unit_test(pad_falls_back_to_end_of_text),
        cmocka_unit_test(split_sequence_isolates_matches),
        cmocka_unit_test(unsupported_features_are_refused_in_one_line),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir_);
    if (system(cmd) != 0) return 1;
    return rc;
}
