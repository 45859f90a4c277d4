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

#define ARGS_(...) __VA_ARGS__
#define GUARD_VOID_(name, params, args)                \
    static void guard_##name##_(Backend* be, ARGS_ params) { \
        enter_();                                       \
        inner_(be)->name(inner_(be), ARGS_ args);       \
        leave_();                                       \
    }
#define GUARD_DOUBLE_(name, params, args)                  \
    static double guard_##name##_(Backend* be, ARGS_ params) { \
        enter_();                                           \
        double r = inner_(be)->name(inner_(be), ARGS_ args); \
        leave_();                                           \
        return r;                                           \
    }

GUARD_VOID_(to_device, (void* d, const void* s, size_t n), (d, s, n))
GUARD_VOID_(to_host, (void* d, const void* s, size_t n), (d, s, n))
GUARD_VOID_(copy, (void* d, const void* s, size_t n), (d, s, n))
GUARD_VOID_(zero, (void* p, size_t n), (p, n))
GUARD_VOID_(gemm,
            (int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda, long long sA, const float* B,
             int ldb, long long sB, float beta, float* C, int ldc, long long sC, int batch),
            (ta, tb, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch))
GUARD_VOID_(linear_forward, (float* o, const float* i, const float* W, const float* b, int N, int Di, int Do),
            (o, i, W, b, N, Di, Do))
GUARD_VOID_(linear_backward,
            (float* di, float* dW, float* db, const float* dout, const float* in, const float* W, int N, int Di,
             int Do),
            (di, dW, db, dout, in, W, N, Di, Do))
GUARD_VOID_(branches_mean, (float* o, const float* h, int N, int G, int D), (o, h, N, G, D))
GUARD_VOID_(branches_sum, (float* o, const float* h, int N, int G, int D), (o, h, N, G, D))
GUARD_VOID_(branches_add, (float* h, const float* x, int N, int G, int D), (h, x, N, G, D))
GUARD_VOID_(scale, (float* y, const float* x, float a, size_t n), (y, x, a, n))
GUARD_VOID_(add, (float* y, const float* x, size_t n), (y, x, n))
GUARD_VOID_(rmsnorm_forward, (float* o, float* r, const float* x, const float* w, int N, int D, float eps),
            (o, r, x, w, N, D, eps))
GUARD_VOID_(rmsnorm_backward,
            (float* dx, float* dw, const float* dout, const float* x, const float* w, const float* r, int N, int D),
            (dx, dw, dout, x, w, r, N, D))
GUARD_VOID_(rope_apply, (float* qkv, int B, int T, int D, int nh, float base, int inv), (qkv, B, T, D, nh, base, inv))
GUARD_VOID_(attention_forward, (float* o, float* att, const float* qkv, int B, int T, int D, int nh),
            (o, att, qkv, B, T, D, nh))
GUARD_VOID_(attention_backward,
            (float* dqkv, const float* dout, const float* qkv, const float* att, float* s, int B, int T, int D,
             int nh),
            (dqkv, dout, qkv, att, s, B, T, D, nh))
GUARD_VOID_(swiglu_forward, (float* g, const float* h1, const float* h3, long n), (g, h1, h3, n))
GUARD_VOID_(swiglu_backward, (float* dh1, float* dh3, const float* dg, const float* h1, const float* h3, long n),
            (dh1, dh3, dg, h1, h3, n))
GUARD_DOUBLE_(crossentropy_forward, (float* p, const int32_t* y, int N, int V), (p, y, N, V))
GUARD_VOID_(crossentropy_backward, (float* p, const int32_t* y, int N, int V, float s), (p, y, N, V, s))
GUARD_DOUBLE_(head_xent,
              (const float* x, const float* W, const int32_t* y, int N, int D, int V, float* dx, float* dW,
               float* scr, int rows, int lanes, float* dWl),
              (x, W, y, N, D, V, dx, dW, scr, rows, lanes, dWl))
GUARD_VOID_(embedding_forward, (float* h, const float* wte, const int32_t* x, int N, int G, int D),
            (h, wte, x, N, G, D))
GUARD_VOID_(embedding_backward, (float* dwte, const float* dh, const int32_t* x, int N, int G, int D),
            (dwte, dh, x, N, G, D))
GUARD_VOID_(engram_gate_forward,
            (const EngramDims* d, const EngramWeights* w, const float* h, float* o, float* a), (d, w, h, o, a))
GUARD_VOID_(engram_conv_forward, (const EngramDims* d, const float* conv, float* a, float* o), (d, conv, a, o))
GUARD_VOID_(engram_tokens_backward,
            (const EngramDims* d, const EngramWeights* w, const float* h, const float* a, const float* dout,
             float* dy, float* dx, float* dv, float* dh, double* part, EngramWeights* g),
            (d, w, h, a, dout, dy, dx, dv, dh, part, g))
GUARD_VOID_(moe_softmax, (float* p, int N, int E), (p, N, E))
GUARD_VOID_(moe_gather, (float* X, const float* f, const int* rt, long R, int D), (X, f, rt, R, D))
GUARD_VOID_(moe_combine,
            (const MoeDims* d, const float* p, const int* top, const long* row, const float* y, float* o),
            (d, p, top, row, y, o))
GUARD_VOID_(moe_routing_backward,
            (const MoeDims* d, const float* p, const int* top, const long* row, const float* y, const float* dout,
             const double* c, float* dy, float* dl),
            (d, p, top, row, y, dout, c, dy, dl))
GUARD_VOID_(moe_scatter_add, (const MoeDims* d, const long* row, const float* dX, float* df), (d, row, dX, df))
GUARD_VOID_(rows_expand, (float* o, const float* r, const int64_t* inv, const int64_t* pos, size_t t, int Dh),
            (o, r, inv, pos, t, Dh))
GUARD_VOID_(rows_reduce,
            (float* g, const float* de, const int64_t* inv, const int64_t* pos, size_t t, int64_t nu, int Dh),
            (g, de, inv, pos, t, nu, Dh))
GUARD_DOUBLE_(sumsq, (const float* g, size_t n), (g, n))
GUARD_VOID_(adam, (float* p, const float* g, float* m, float* v, size_t n, const AdamStep* s), (p, g, m, v, n, s))
GUARD_VOID_(tables_gather, (const EngramTables* t, const int64_t* k, int64_t n, float* o), (t, k, n, o))
GUARD_VOID_(rows_sum_owned,
            (float* own, const float* r, const float* self, int64_t lo, int64_t hi, const int64_t* inv, int64_t n,
             int Dh),
            (own, r, self, lo, hi, inv, n, Dh))
GUARD_VOID_(rows_adam, (const EngramTables* t, const int64_t* k, int64_t n, const float* g, const AdamStep* s),
            (t, k, n, g, s))
GUARD_VOID_(allreduce_sum, (float* buf, size_t n), (buf, n))
GUARD_VOID_(alltoallv,
            (const void* s, const size_t* sc, const size_t* sd, void* r, const size_t* rc, const size_t* rd),
            (s, sc, sd, r, rc, rd))

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
#define SET_(name) be->name = in->name ? guard_##name##_ : NULL
    SET_(to_device), SET_(to_host), SET_(copy), SET_(zero), SET_(gemm), SET_(linear_forward);
    SET_(linear_backward), SET_(branches_mean), SET_(branches_sum), SET_(branches_add), SET_(scale), SET_(add);
    SET_(rmsnorm_forward), SET_(rmsnorm_backward), SET_(rope_apply), SET_(attention_forward);
    SET_(attention_backward), SET_(swiglu_forward), SET_(swiglu_backward), SET_(crossentropy_forward);
    SET_(crossentropy_backward), SET_(head_xent), SET_(embedding_forward), SET_(embedding_backward);
    SET_(engram_gate_forward), SET_(engram_conv_forward), SET_(engram_tokens_backward), SET_(moe_softmax);
    SET_(moe_gather), SET_(moe_combine), SET_(moe_routing_backward), SET_(moe_scatter_add), SET_(rows_expand);
    SET_(rows_reduce), SET_(sumsq), SET_(adam), SET_(tables_gather), SET_(rows_sum_owned);
    SET_(rows_adam), SET_(allreduce_sum), SET_(alltoallv);
#undef SET_
    be->group = in->group ? guard_group_ : NULL;
    be->close = guard_close_;
}
