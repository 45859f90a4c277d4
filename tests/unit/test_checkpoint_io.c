/*
 * test_checkpoint_io.c — the piece-wise dataset I/O under checkpoints (io/checkpoint_layout.h):
 * the dataset checksum against its formula written out here, and reads into memory that is not
 * aligned like the file (they go through a bounce buffer) against the bytes that were written, and
 * reads out of a mapped file (ckpt_rows_read_mapped) against the same, with the datasets it must
 * leave to HDF5 (chunked, another type in the file, rows past the end of a truncated file).
 * Sequential HDF5 driver, one process; the collective paths are covered by tests/mpi/checkpoint_*.
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

#include "checkpoint_layout.h"
#include "common.h"

/* docs/checkpoint.md: Σ over 32-bit words w_i of (w_i xor 0x9e3779b9)·(2i+1 mod 2^32) mod 2^64. */
static uint64_t formula_(const void* data, size_t nbytes, uint64_t first_word) {
    uint64_t s = 0;
    for (size_t k = 0; k < nbytes / 4; k++) {
        uint32_t w;
        memcpy(&w, (const char*)data + 4 * k, 4);
        s += (uint64_t)(w ^ 0x9e3779b9u) * (uint32_t)(2 * (first_word + k) + 1);
    }
    return s;
}

static void fill_(void* p, size_t n, uint32_t seed) {
    uint32_t x = seed;
    for (size_t i = 0; i < n; i++) x = x * 1664525u + 1013904223u, ((unsigned char*)p)[i] = (unsigned char)(x >> 24);
}

static void checksum_equals_formula(void** state) {
    (void)state;
    const size_t n = (3u << 20) + 12;   // several 256 KiB blocks, a vector tail and a scalar tail
    char* a = mallocCheck(n + 8);
    char* copy = mallocCheck(n + 8);
    fill_(a, n + 8, 7);
    const size_t lens[] = {0, 4, 60, 64, 68, 1000, n};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
        for (int off = 0; off < 8; off += 4)   // words at unaligned addresses too
            for (uint64_t first = 0; first < 3000000000u; first += 1500000001u) {   // weights past 2^32 wrap
                uint64_t want = formula_(a + off, lens[i], first);
                assert_true(ckpt_checksum(a + off, lens[i], first) == want);
                assert_true(ckpt_checksum_reference(a + off, lens[i], first) == want);
                memset(copy, 0, n + 8);
                assert_true(ckpt_copy_checksum(copy + 4, a + off, lens[i], first) == want);
                assert_memory_equal(copy + 4, a + off, lens[i]);
            }
    free(a);
    free(copy);
}

/* Word indices past 2^31 (where the weight 2i+1 wraps mod 2^32, possibly inside one call), past 2^32
 * and far beyond, random lengths (tails of any length, bytes past the last whole word), addresses
 * 4 bytes off 32: every path against the formula, and the copy leaves the bytes after it alone. */
static void checksum_equals_formula_where_weights_wrap(void** state) {
    (void)state;
    const size_t cap = (size_t)1 << 20;
    char* a = mallocCheck(cap + 8);
    char* copy = mallocCheck(cap + 16);
    fill_(a, cap + 8, 3);
    const uint64_t near[] = {(uint64_t)1 << 31, (uint64_t)1 << 32, ((uint64_t)1 << 32) + ((uint64_t)1 << 31),
                             (uint64_t)1 << 33, ((uint64_t)1 << 62) + ((uint64_t)1 << 31)};
    uint32_t x = 12345;
    for (int c = 0; c < 240; c++) {
        x = x * 1664525u + 1013904223u;
        size_t nbytes = c % 3 == 0 ? x % 200 : c % 3 == 1 ? x % 70000 : x % cap;   // short, one block, several
        x = x * 1664525u + 1013904223u;
        uint64_t at = near[c % 5], back = x % (nbytes / 4 + 40);   // the wrap anywhere inside, or just after
        uint64_t first = c % 7 == 6 ? at + back : at - back;
        size_t off = (c & 1) * 4;
        uint64_t want = formula_(a + off, nbytes, first);
        assert_true(ckpt_checksum(a + off, nbytes, first) == want);
        assert_true(ckpt_checksum_reference(a + off, nbytes, first) == want);
        memset(copy, 0xee, cap + 16);
        assert_true(ckpt_copy_checksum(copy + 4, a + off, nbytes, first) == want);
        assert_memory_equal(copy + 4, a + off, nbytes);
        assert_true((unsigned char)copy[4 + nbytes] == 0xee && (unsigned char)copy[3] == 0xee);
    }
    free(a);
    free(copy);
}

/* A fresh temporary file (path: a mkstemp template, filled in) and [rows, cols] page-aligned floats
 * of pseudo-random bytes to write there. */
static float* temp_and_rows_(char* path, int64_t rows, int64_t cols, uint32_t seed) {
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    float* src = callocPagesCheck((size_t)rows * cols, sizeof(float));
    fill_(src, (size_t)rows * cols * 4, seed);
    return src;
}

/* Write a [rows, cols] float dataset (datasets of 64 KiB and more on 4 KiB, as checkpoints do),
 * then read rows [lo, hi) into dst (twice: with a checksum, then without); returns the first read's
 * checksum. sm: the checksum thread (NULL: inline). */
static uint64_t write_then_read_(const char* path, const float* src, int64_t rows, int64_t cols, int64_t lo,
                                 int64_t hi, void* dst, CkSummer* sm) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_alignment(fapl, (hsize_t)64 << 10, 4096);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    assert_true(f >= 0);
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    hid_t sp = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    hid_t ds = H5Dcreate2(f, "x", H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    size_t row_bytes = (size_t)cols * 4;
    uint64_t wsum = 0, rsum = 0;
    assert_true(ckpt_rows_io(1, ds, H5T_NATIVE_FLOAT, H5P_DEFAULT, 0, rows, rows, row_bytes, (void*)src, &wsum, sm) >= 0);
    ckpt_summer_wait(sm);
    assert_true(wsum == formula_(src, (size_t)rows * row_bytes, 0));
    assert_true(ckpt_rows_io(0, ds, H5T_NATIVE_FLOAT, H5P_DEFAULT, lo, hi, hi - lo, row_bytes, dst, &rsum, sm) >= 0);
    ckpt_summer_wait(sm);   // the bounced pieces are copied into dst by the thread
    // again without a sum (rows another rank checks): the caller's checks of dst are of this read
    memset(dst, 0xee, (size_t)(hi - lo) * row_bytes);
    assert_true(ckpt_rows_io(0, ds, H5T_NATIVE_FLOAT, H5P_DEFAULT, lo, hi, hi - lo, row_bytes, dst, NULL, sm) >= 0);
    ckpt_summer_wait(sm);
    H5Dclose(ds), H5Pclose(dcpl), H5Sclose(sp), H5Fclose(f), H5Pclose(fapl);
    return rsum;
}

static void misaligned_read_equals_written(void** state) {
    (void)state;
    char path[] = "/tmp/engram_test_ckio_XXXXXX";
    // five read pieces and a bit (more than the bounce buffers in flight); rows odd, cols prime
    const int64_t cols = 37, rows = (int64_t)(5 * CKPT_READ_PIECE_BYTES / (cols * 4)) + 4001;
    float* src = temp_and_rows_(path, rows, cols, 11);
    char* dst = callocPagesCheck((size_t)rows * cols * 4 + 64, 1);
    const int64_t ranges[][2] = {{0, rows}, {5, rows - 10}, {3, 400}};   // whole, most, one small piece
    const int shifts[] = {0, 4, 16, 60};                             // 0: direct; others: through the bounce buffer
    assert_null(ckpt_summer_start(1));   // on one core: inline
    CkSummer* sm = ckpt_summer_start(2);
    assert_non_null(sm);
    for (size_t r = 0; r < sizeof ranges / sizeof *ranges; r++)
        for (size_t k = 0; k < 2 * sizeof shifts / sizeof *shifts; k++) {   // inline, then on the summer thread
            int64_t lo = ranges[r][0], hi = ranges[r][1];
            size_t nbytes = (size_t)(hi - lo) * cols * 4;
            memset(dst, 0xee, (size_t)rows * cols * 4 + 64);
            const int shift = shifts[k % 4];
            uint64_t sum = write_then_read_(path, src, rows, cols, lo, hi, dst + shift, k < 4 ? NULL : sm);
            assert_memory_equal(dst + shift, (const char*)src + (size_t)lo * cols * 4, nbytes);
            assert_true((unsigned char)dst[shift + nbytes] == 0xee);   // nothing written past the rows
            assert_true(sum == formula_(dst + shift, nbytes, (uint64_t)lo * cols));
        }
    ckpt_summer_stop(sm);
    free(src);
    free(dst);
    unlink(path);
}

/* The mapped read: the bytes written and their checksum, inline and on the summer's thread, into
 * destinations at any offset, counted from row0; and 0 (nothing read: HDF5's turn) for what it
 * cannot read straight from the file. */
static void mapped_read_equals_written(void** state) {
    (void)state;
    char path[] = "/tmp/engram_test_ckmap_XXXXXX";
    const int64_t cols = 37, rows = (int64_t)(3 * CKPT_READ_PIECE_BYTES / (cols * 4)) + 4001;   // pieces for both sides
    float* src = temp_and_rows_(path, rows, cols, 13);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_alignment(fapl, (hsize_t)64 << 10, 4096);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols}, chunk[2] = {64, (hsize_t)cols};
    hid_t sp = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE), ccpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    H5Pset_chunk(ccpl, 2, chunk);
    const char* names[3] = {"x", "chunked", "big_endian"};
    hid_t types[3] = {H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, H5T_IEEE_F32BE}, pls[3] = {dcpl, ccpl, dcpl};
    for (int i = 0; i < 3; i++) {
        hid_t ds = H5Dcreate2(f, names[i], types[i], sp, H5P_DEFAULT, pls[i], H5P_DEFAULT);
        assert_true(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, src) >= 0);
        H5Dclose(ds);
    }
    H5Pclose(dcpl), H5Pclose(ccpl), H5Sclose(sp), H5Fclose(f), H5Pclose(fapl);

    setenv("ENGRAM_CKPT_MMAP", "0", 1);
    assert_null(ckpt_map_open(path));   // turned off
    unsetenv("ENGRAM_CKPT_MMAP");
    CkMap* m = ckpt_map_open(path);
    if (!m) {
        unlink(path), free(src);
        print_message("%s is on a file system the load does not map; mapped reads not tested\n", path);
        skip();
    }
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t x = H5Dopen2(f, "x", H5P_DEFAULT);
    char* dst = callocPagesCheck((size_t)rows * cols * 4 + 64, 1);
    CkSummer* sm = ckpt_summer_start(2);
    const int64_t ranges[][2] = {{0, rows}, {5, rows - 10}, {3, 400}}, row0s[] = {0, 2};
    const int shifts[] = {0, 4, 16, 60};
    for (size_t r = 0; r < sizeof ranges / sizeof *ranges; r++)
        for (size_t k = 0; k < 8; k++) {   // inline, then with the thread; every shift, both row0s
            const int64_t lo = ranges[r][0], hi = ranges[r][1], row0 = row0s[k % 2];
            const size_t nbytes = (size_t)(hi - lo) * cols * 4;
            const int shift = shifts[k % 4];
            CkSummer* s = k < 4 ? NULL : sm;
            uint64_t sum = 0;
            memset(dst, 0xee, (size_t)rows * cols * 4 + 64);
            assert_int_equal(ckpt_rows_read_mapped(m, x, H5T_NATIVE_FLOAT, lo, hi, dst + shift, &sum, s, row0), 1);
            ckpt_summer_wait(s);
            assert_memory_equal(dst + shift, (const char*)src + (size_t)lo * cols * 4, nbytes);
            assert_true((unsigned char)dst[shift + nbytes] == 0xee && (unsigned char)dst[shift ? shift - 1 : 0] ==
                        (shift ? 0xee : ((const unsigned char*)src)[(size_t)lo * cols * 4]));
            assert_true(sum == formula_(dst + shift, nbytes, (uint64_t)(lo - row0) * cols));
            memset(dst, 0xee, nbytes + 64);   // and without a sum
            assert_int_equal(ckpt_rows_read_mapped(m, x, H5T_NATIVE_FLOAT, lo, hi, dst + shift, NULL, s, row0), 1);
            ckpt_summer_wait(s);
            assert_memory_equal(dst + shift, (const char*)src + (size_t)lo * cols * 4, nbytes);
        }
    uint64_t sum = 0;
    assert_int_equal(ckpt_rows_read_mapped(NULL, x, H5T_NATIVE_FLOAT, 0, rows, dst, &sum, NULL, 0), 0);   // no map
    assert_int_equal(ckpt_rows_read_mapped(m, x, H5T_NATIVE_FLOAT, 0, rows + 1, dst, &sum, NULL, 0), 0);   // rows past the set
    assert_int_equal(ckpt_rows_read_mapped(m, x, H5T_NATIVE_INT32, 0, rows, dst, &sum, NULL, 0), 0);   // another type asked
    for (int i = 1; i < 3; i++) {   // chunked; stored big-endian
        hid_t ds = H5Dopen2(f, names[i], H5P_DEFAULT);
        assert_int_equal(ckpt_rows_read_mapped(m, ds, H5T_NATIVE_FLOAT, 0, rows, dst, &sum, NULL, 0), 0);
        H5Dclose(ds);
    }
    assert_true(sum == 0);
    ckpt_map_close(m);
    // the same file cut short after it was opened: the rows past its end are left to HDF5
    haddr_t at = H5Dget_offset(x);
    assert_true(truncate(path, (off_t)at + (off_t)(rows / 2) * cols * 4) == 0);
    m = ckpt_map_open(path);
    assert_non_null(m);
    assert_int_equal(ckpt_rows_read_mapped(m, x, H5T_NATIVE_FLOAT, 0, rows / 2, dst, NULL, NULL, 0), 1);
    assert_int_equal(ckpt_rows_read_mapped(m, x, H5T_NATIVE_FLOAT, 0, rows / 2 + 1, dst, NULL, NULL, 0), 0);
    ckpt_map_close(m);
    ckpt_summer_stop(sm);
    H5Dclose(x), H5Fclose(f);
    free(src);
    free(dst);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(checksum_equals_formula),
        cmocka_unit_test(checksum_equals_formula_where_weights_wrap),
        cmocka_unit_test(misaligned_read_equals_written),
        cmocka_unit_test(mapped_read_equals_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
