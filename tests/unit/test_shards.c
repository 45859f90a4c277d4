/*
 * test_shards.c — token shards: engram shards round-trip through the writer and reader (several
 * sizes, empty included); llm.c shards (uint16 and uint32) read back; and every damaged file is
 * refused with one line naming it: truncated, trailing bytes, bad magic, newer version, an id at
 * or above the vocab size (with its position), a shard from a larger vocab. The writer never
 * overwrites.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shards.h"

static char dir_[256];

static const char* path_(const char* name) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", dir_, name);
    return p;
}

static void write_ids_(const char* path, const int32_t* ids, size_t n, uint32_t vocab) {
    ShardWriter w;
    char err[512];
    unlink(path);
    assert_int_equal(shards_writer_open(&w, path, vocab, err, sizeof err), 0);
    assert_int_equal(shards_writer_append(&w, ids, n / 2, err, sizeof err), 0);   // two appends
    assert_int_equal(shards_writer_append(&w, ids + n / 2, n - n / 2, err, sizeof err), 0);
    assert_int_equal(shards_writer_close(&w, err, sizeof err), 0);
}

static void round_trip(void** state) {
    (void)state;
    size_t sizes[] = {0, 1, 7, 100000};
    for (int k = 0; k < 4; k++) {
        size_t n = sizes[k];
        int32_t* ids = malloc((n + 1) * sizeof *ids);
        for (size_t i = 0; i < n; i++) ids[i] = (int32_t)((i * 2654435761u) % 128815);
        write_ids_(path_("rt.bin"), ids, n, 128815);
        TokenShard s;
        char err[512];
        assert_int_equal(shards_read(path_("rt.bin"), 0, &s, err, sizeof err), 0);
        assert_int_equal(s.n, n);
        assert_int_equal(s.vocab, 128815);
        assert_int_equal(s.format, SHARD_ENGRAM);
        if (n) assert_memory_equal(s.ids, ids, n * sizeof *ids);
        shards_free(&s);
        free(ids);
    }
    FILE* f = fopen(path_("rt.bin"), "rb");   // header bytes exactly as documented
    unsigned char h[24];
    assert_int_equal(fread(h, 1, 24, f), 24);
    fclose(f);
    assert_memory_equal(h, "ENGRAMTK\x01\x00\x00\x00\x2F\xF7\x01\x00\xA0\x86\x01\x00\x00\x00\x00\x00", 24);
}

static void writer_never_overwrites(void** state) {
    (void)state;
    int32_t ids[3] = {1, 2, 3};
    write_ids_(path_("keep.bin"), ids, 3, 10);
    ShardWriter w;
    char err[512];
    assert_int_equal(shards_writer_open(&w, path_("keep.bin"), 10, err, sizeof err), -1);
    assert_non_null(strstr(err, "keep.bin exists"));
    assert_int_equal(shards_writer_open(&w, path_("w.bin"), 10, err, sizeof err), 0);
    int32_t bad = 10;
    assert_int_equal(shards_writer_append(&w, &bad, 1, err, sizeof err), -1);   // ids are checked on write too
    shards_writer_abort(&w);
    assert_int_not_equal(access(path_("w.bin.tmp"), F_OK), 0);
}

static void write_raw_(const char* name, const void* data, size_t n) {
    FILE* f = fopen(path_(name), "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

/* llm.c layout: 256 int32 header then tokens. */
static void write_llmc_(const char* name, int version, uint32_t count, const void* body, size_t body_bytes) {
    int32_t h[256] = {SHARD_LLMC_MAGIC, version, (int32_t)count};
    FILE* f = fopen(path_(name), "wb");
    fwrite(h, 4, 256, f);
    fwrite(body, 1, body_bytes, f);
    fclose(f);
}

static void reads_llmc_shards(void** state) {
    (void)state;
    uint16_t t16[5] = {50256, 15496, 11, 995, 0};
    uint32_t t32[3] = {100000, 1, 128814};
    write_llmc_("llmc16.bin", 1, 5, t16, sizeof t16);
    write_llmc_("llmc32.bin", 2, 3, t32, sizeof t32);
    TokenShard s;
    char err[512];
    assert_int_equal(shards_read(path_("llmc16.bin"), 50257, &s, err, sizeof err), 0);
    assert_int_equal(s.format, SHARD_LLMC_U16);
    assert_int_equal(s.n, 5);
    for (int i = 0; i < 5; i++) assert_int_equal(s.ids[i], t16[i]);
    shards_free(&s);
    assert_int_equal(shards_read(path_("llmc32.bin"), 0, &s, err, sizeof err), 0);
    assert_int_equal(s.format, SHARD_LLMC_U32);
    assert_int_equal(s.ids[2], 128814);
    shards_free(&s);
    assert_int_equal(shards_read(path_("llmc32.bin"), 128000, &s, err, sizeof err), -1);   // 128814 ≥ V
    assert_non_null(strstr(err, "token 2 is 128814"));
}

static void refused_(const char* name, int64_t vocab, const char* frag) {
    TokenShard s;
    char err[512] = "";
    int rc = shards_read(path_(name), vocab, &s, err, sizeof err);
    if (rc == 0 || !strstr(err, frag) || !strstr(err, name) || strchr(err, '\n'))
        fail_msg("%s: wanted a one-line refusal with '%s', got rc=%d '%s'", name, frag, rc, err);
}

static void damaged_shards_are_refused(void** state) {
    (void)state;
    int32_t ids[4] = {5, 6, 7, 8};
    write_ids_(path_("good.bin"), ids, 4, 100);
    unsigned char buf[24 + 16];
    FILE* f = fopen(path_("good.bin"), "rb");
    assert_int_equal(fread(buf, 1, sizeof buf, f), sizeof buf);
    fclose(f);
    write_raw_("trunc.bin", buf, sizeof buf - 3);
    refused_("trunc.bin", 0, "truncated");
    write_raw_("tiny.bin", buf, 10);
    refused_("tiny.bin", 0, "truncated");
    unsigned char extra[sizeof buf + 4] = {0};
    memcpy(extra, buf, sizeof buf);
    write_raw_("extra.bin", extra, sizeof extra);
    refused_("extra.bin", 0, "bytes after");
    unsigned char m[sizeof buf];
    memcpy(m, buf, sizeof buf);
    m[0] = 'X';
    write_raw_("magic.bin", m, sizeof m);
    refused_("magic.bin", 0, "not a token shard");
    memcpy(m, buf, sizeof buf);
    m[8] = 2;
    write_raw_("newer.bin", m, sizeof m);
    refused_("newer.bin", 0, "version 2");
    memcpy(m, buf, sizeof buf);
    m[24 + 8] = 100;   // third token = 100 = V
    write_raw_("badid.bin", m, sizeof m);
    refused_("badid.bin", 0, "token 2 is 100, not below the vocab size 100");
    refused_("good.bin", 50, "exceeds the model's 50");
    refused_("nope.bin", 0, "cannot open");
    uint16_t t[2] = {1, 2};
    write_llmc_("llmc_short.bin", 1, 3, t, sizeof t);
    refused_("llmc_short.bin", 0, "truncated");
    write_llmc_("llmc_v3.bin", 3, 2, t, sizeof t);
    refused_("llmc_v3.bin", 0, "llm.c shard version 3");
}

int main(void) {
    snprintf(dir_, sizeof dir_, "/tmp/engram_test_shards_XXXXXX");
    if (!mkdtemp(dir_)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(writer_never_overwrites),
        cmocka_unit_test(reads_llmc_shards),
        cmocka_unit_test(damaged_shards_are_refused),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir_);
    if (system(cmd) != 0) return 1;
    return rc;
}
