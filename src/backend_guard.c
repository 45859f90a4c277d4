/*
 * backend_guard.c — a debug backend that proves the model code reaches its memory only through the
 * Backend (backend.h: backend_guard_wrap). It wraps an open CPU backend: the same ops, the same
 * results, but be->host = 0, and every buffer it hands out is a separate mmap kept PROT_NONE except
 * while one of its own ops (or to_host / to_device / copy / zero) runs. Host code that reads or
 * writes device memory directly (a missing to_host, a pointer handed to MPI or HDF5) dies with
 * SIGSEGV at that line, as it would misbehave on a GPU.
 *
 * Selected by ENGRAM_GUARD_BACKEND=1 when device_open opens the CPU backend (parallel/device.c):
 * tests only (tests/mpi/guarded_backend_equals_cpu.sh). Slow by design: every op opens and closes
 * every buffer.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"
#include "backend_ops.h"
#include "common.h"

/* ---- the guarded buffers: one registry for the process ----------------------------------------- */

typedef struct {
    void* p;
    size_t len;   // bytes mapped (whole pages)
} GuardBuf;

static pthread_mutex_t lock_ = PTHREAD_MUTEX_INITIALIZER;
static GuardBuf* bufs_;    // [n_bufs_] live buffers
static size_t n_bufs_, cap_bufs_;
static int depth_;         // ops in progress (OpenMP threads may call ops from inside an op)

static void protect_all_(int prot) {
    for (size_t i = 0; i < n_bufs_; i++)
        if (mprotect(bufs_[i].p, bufs_[i].len, prot) != 0) engram_die("this is a bug", "mprotect failed");
}

/* Open every buffer for an op (nested calls: the first opens, the last closes). */
static void enter_(void) {
    pthread_mutex_lock(&lock_);
    if (depth_++ == 0) protect_all_(PROT_READ | PROT_WRITE);
    pthread_mutex_unlock(&lock_);
}
static void leave_(void) {
    pthread_mutex_lock(&lock_);
    if (--depth_ == 0) protect_all_(PROT_NONE);
    pthread_mutex_unlock(&lock_);
}

static size_t pages_(size_t bytes) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return ((bytes ? bytes : 1) + pg - 1) / pg * pg;
}

static void* guard_alloc_(Backend* be, size_t bytes) {
    (void)be;
    size_t len = pages_(bytes);
    void* p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);   // zero-filled
    if (p == MAP_FAILED) engram_die("free memory", "mmap of %zu bytes failed", len);
    pthread_mutex_lock(&lock_);
    if (n_bufs_ == cap_bufs_) bufs_ = reallocCheck(bufs_, (cap_bufs_ = 2 * cap_bufs_ + 64) * sizeof(GuardBuf));
    bufs_[n_bufs_++] = (GuardBuf){p, len};
    if (depth_ > 0 && mprotect(p, len, PROT_READ | PROT_WRITE) != 0) engram_die("this is a bug", "mprotect failed");
    pthread_mutex_unlock(&lock_);
    return p;
}

static void guard_free_(Backend* be, void* p) {
    (void)be;
    if (!p) return;
    pthread_mutex_lock(&lock_);
    size_t i = 0;
    while (i < n_bufs_ && bufs_[i].p != p) i++;
    if (i == n_bufs_) engram_die("this is a bug", "guarded backend: free of a pointer it did not hand out");
    munmap(p, bufs_[i].len);
    bufs_[i] = bufs_[--n_bufs_];
    pthread_mutex_unlock(&lock_);
}

/* ---- every other op: the wrapped backend's, between enter_ and leave_ -------------------------- */

static Backend* inner_(Backend* be) { return (Backend*)be->impl; }

#define GUARD_VOID_(name, params, args)                \
    static void guard_##name##_(Backend* be, BACKEND_ARGS_ params) { \
        enter_();                                       \
        inner_(be)->name(inner_(be), BACKEND_ARGS_ args);       \
        leave_();                                       \
    }
#define GUARD_DOUBLE_(name, params, args)                  \
    static double guard_##name##_(Backend* be, BACKEND_ARGS_ params) { \
        enter_();                                           \
        double r = inner_(be)->name(inner_(be), BACKEND_ARGS_ args); \
        leave_();                                           \
        return r;                                           \
    }

BACKEND_OPS(GUARD_VOID_, GUARD_DOUBLE_)

static void guard_close_(Backend* be) {
    Backend* in = inner_(be);
    in->close(in);
    free(in);
    be->impl = NULL;
}

/* The inner backend's group, guarded the same way (the guarded ops reach it through impl). */
static Backend* guard_group_(Backend* be, int color, int key) {
    Backend* in = inner_(be);
    Backend* ig = in->group(in, color, key);
    Backend* g = mallocCheck(sizeof *g);
    *g = *be;
    g->impl = ig;
    g->rank = ig->rank, g->size = ig->size;
    g->group = NULL;
    return g;
}

void backend_guard_wrap(Backend* be) {
    Backend* in = mallocCheck(sizeof *in);
    *in = *be;
    be->name = "cpu-guarded";
    be->host = 0;
    be->impl = in;
    be->alloc = guard_alloc_;
    be->free = guard_free_;
#define SET_(name, params, args) be->name = in->name ? guard_##name##_ : NULL;
    BACKEND_OPS(SET_, SET_)
#undef SET_
    be->group = in->group ? guard_group_ : NULL;
    be->close = guard_close_;
}
