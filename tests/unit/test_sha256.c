/*
 * test_sha256.c — io/sha256.c against the FIPS 180-4 example digests and against `sha256sum` on
 * a file long enough to cross many blocks, fed in uneven pieces.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

static void known_digests(void** state) {
    (void)state;
    char hex[65];
    sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char* two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";   // 56 bytes: padding spills
    sha256_hex(two, strlen(two), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    Sha256 s;   // one million 'a', in pieces of 997
    sha256_init(&s);
    char buf[997];
    memset(buf, 'a', sizeof buf);
    for (size_t left = 1000000; left > 0;) {
        size_t k = left < sizeof buf ? left : sizeof buf;
        sha256_update(&s, buf, k);
        left -= k;
    }
    sha256_final_hex(&s, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void matches_sha256sum(void** state) {
    (void)state;
    char path[] = "/tmp/engram_sha_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE* f = fdopen(fd, "wb");
    unsigned char* data = malloc(100003);
    uint32_t x = 12345;
    for (size_t i = 0; i < 100003; i++) data[i] = (unsigned char)((x = x * 1103515245u + 12345u) >> 16);
    fwrite(data, 1, 100003, f);
    fclose(f);
    char cmd[128], want[65] = "", hex[65];
    snprintf(cmd, sizeof cmd, "sha256sum %s", path);
    FILE* p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%64s", want), 1);
    pclose(p);
    sha256_hex(data, 100003, hex);
    assert_string_equal(hex, want);
    remove(path);
    free(data);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(known_digests), cmocka_unit_test(matches_sha256sum)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
