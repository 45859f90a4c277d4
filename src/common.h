/*
 * common.h — the few things every engram source file uses: fail-fast check macros that name the
 * file and line and end with a hint for the user, checked allocation, and rank-0 printing.
 *
 * Not here: anything that knows about MPI, HDF5 or the model (src/ never calls MPI or HDF5).
 *
 * Dimension letters used across the code base (ARCHITECTURE.md §3): B batch, T sequence, G branches,
 * D model width, L layers, V vocab, V' compressed vocab, E routed experts, k experts per token,
 * N max n-gram order, H heads per order, H_total = (N-1)·H, Dh Engram head width, P ranks.
 */
#ifndef ENGRAM_COMMON_H
#define ENGRAM_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define ENGRAM_VERSION "0.1.0"

/* Exit status of every user-facing error (bad config, bad input); 0 is success. */
#define ENGRAM_EXIT_USAGE 2

/* Print "file:line: what" plus an optional "---> HINT: ..." and exit. Used for internal failures
 * (out of memory, I/O) where the source location helps whoever reads the log. */
void engram_die_at(const char* file, int line, const char* hint, const char* fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));
#define engram_die(hint, ...) engram_die_at(__FILE__, __LINE__, (hint), __VA_ARGS__)

/* A user-input error: one line naming what is wrong, where, and how to fix it; exit status 2.
 * No source location: the user's file and key are the location that matters. */
void engram_fail(const char* fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* The line engram_fail prints, "engram: MESSAGE\n" on stderr, without exiting (for callers that
 * must tear down MPI first). */
void engram_vsay(const char* fmt, va_list ap);

void* engram_malloc_at(size_t n, const char* file, int line);
void* engram_calloc_at(size_t count, size_t size, const char* file, int line);
void* engram_realloc_at(void* p, size_t n, const char* file, int line);
char* engram_strdup_at(const char* s, const char* file, int line);
/* Zeroed, 4 KiB-aligned (release with free): for the large flat buffers that files are read into.
 * The kernel's copy from the page cache runs ~5x slower into a destination that is not 64-byte
 * aligned like the file offset (rep movsb on AMD Zen), and a checkpoint's datasets start on 4 KiB.
 * From 2 MiB on: 2 MiB-aligned, with transparent huge pages requested (madvise). */
void* engram_calloc_pages_at(size_t count, size_t size, const char* file, int line);
#define mallocCheck(n) engram_malloc_at((n), __FILE__, __LINE__)
#define callocCheck(c, s) engram_calloc_at((c), (s), __FILE__, __LINE__)
#define callocPagesCheck(c, s) engram_calloc_pages_at((c), (s), __FILE__, __LINE__)
#define reallocCheck(p, n) engram_realloc_at((p), (n), __FILE__, __LINE__)
#define strdupCheck(s) engram_strdup_at((s), __FILE__, __LINE__)

/* Format one error line into err[n] and return -1, for `return engram_errf(err, n, ...)`. */
int engram_errf(char* err, size_t n, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

/* A whole file into a NUL-terminated buffer (*n bytes, malloc'd); NULL if it cannot be read. */
char* engram_read_file(const char* path, size_t* n);

/* Wall-clock seconds from a monotonic clock, for benchmarks and progress lines. */
double engram_now(void);

/* Hot element-wise loops (ops.c, optim.c): an AVX2+FMA clone next to the baseline x86-64 one,
 * chosen at load time (GCC/Clang function multi-versioning), so the default build still runs on any
 * x86-64 node. Not under ThreadSanitizer: the clones' resolvers run before its runtime starts and
 * crash the program before main. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(ENGRAM_NO_CLONES) && !defined(__SANITIZE_THREAD__)
#define ENGRAM_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ENGRAM_SIMD_CLONES
#endif

/* Loops that visit scattered rows (table gathers, per-row sums) ask for the row they will visit
 * this many iterations later: the loads then overlap instead of each waiting its cache miss. */
#define ENGRAM_PREFETCH_AHEAD 12
/* Ask the cache for every 64-byte line of [p, p + bytes) (a hint: never faults). */
static inline void engram_prefetch(const void* p, size_t bytes) {
    for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch((const char*)p + b);
}

#endif
