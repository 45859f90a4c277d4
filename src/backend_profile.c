/*
 * backend_profile.c — ENGRAM_PROFILE=1: where a run's time goes, op by op, on any backend
 * (backend.h: backend_profile_wrap; device_open applies it). Every op runs as before; then the
 * wrapper waits for it (be->sync on a GPU) and adds its wall time to that op's total. At close,
 * rank 0 prints on stderr one line per op that ran (calls, total ms, µs per call, share of the time
 * since the backend opened), the allocations, and the time outside ops (host work: hashing, plans,
 * MPI control, checkpoints).
 *
 * Waiting after every op takes away the overlap of host and device work: the totals rank the ops,
 * and their sum is an upper bound of the time a step spends in them. A group (be->group) is the
 * inner backend's own, not timed.
 */
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "backend_ops.h"
#include "common.h"

#define OP_ENUM_(name, params, args) OP_##name,
#define OP_NAME_(name, params, args) #name,
enum { BACKEND_OPS(OP_ENUM_, OP_ENUM_) OP_ALLOC, OP_FREE, N_OPS };
static const char* const names_[N_OPS] = {BACKEND_OPS(OP_NAME_, OP_NAME_) "alloc", "free"};

typedef struct {
    Backend* in;          // the wrapped backend
    double opened;        // engram_now() at wrap
    double sec[N_OPS];    // wall time per op, waits included
    long calls[N_OPS];
} Profile;

static Profile* prof_(Backend* be) { return (Profile*)be->impl; }

static void done_(Profile* p, int op, double t0) {
    if (p->in->sync) p->in->sync(p->in);
    p->sec[op] += engram_now() - t0;
    p->calls[op]++;
}

#define PROF_VOID_(name, params, args)                               \
    static void prof_##name##_(Backend* be, BACKEND_ARGS_ params) {  \
        Profile* prof = prof_(be);                                      \
        double t0 = engram_now();                                    \
        prof->in->name(prof->in, BACKEND_ARGS_ args);                      \
        done_(prof, OP_##name, t0);                                     \
    }
#define PROF_DOUBLE_(name, params, args)                               \
    static double prof_##name##_(Backend* be, BACKEND_ARGS_ params) {  \
        Profile* prof = prof_(be);                                        \
        double t0 = engram_now();                                      \
        double r = prof->in->name(prof->in, BACKEND_ARGS_ args);             \
        done_(prof, OP_##name, t0);                                       \
        return r;                                                      \
    }
BACKEND_OPS(PROF_VOID_, PROF_DOUBLE_)

static void* prof_alloc_(Backend* be, size_t bytes) {
    Profile* p = prof_(be);
    double t0 = engram_now();
    void* r = p->in->alloc(p->in, bytes);
    done_(p, OP_ALLOC, t0);
    return r;
}

static void prof_free_(Backend* be, void* ptr) {
    Profile* p = prof_(be);
    double t0 = engram_now();
    p->in->free(p->in, ptr);
    done_(p, OP_FREE, t0);
}

static Backend* prof_group_(Backend* be, int color, int key) {
    Backend* in = prof_(be)->in;
    return in->group(in, color, key);
}

static void prof_sync_(Backend* be) {
    Backend* in = prof_(be)->in;
    in->sync(in);
}

/* The table, slowest op first. */
static void print_(const Profile* p, const char* name) {
    double total = engram_now() - p->opened, in_ops = 0;
    int order[N_OPS], n = 0;
    for (int i = 0; i < N_OPS; i++)
        if (p->calls[i]) order[n++] = i, in_ops += p->sec[i];
    for (int i = 1; i < n; i++)   // insertion sort: a few dozen ops
        for (int j = i; j > 0 && p->sec[order[j]] > p->sec[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    fprintf(stderr, "engram profile (%s backend, rank 0): %.3f s since it opened, %.3f s in ops, %.3f s outside\n",
            name, total, in_ops, total - in_ops);
    fprintf(stderr, "  %-24s %8s %12s %12s %7s\n", "op", "calls", "total ms", "us/call", "share");
    for (int k = 0; k < n; k++) {
        int i = order[k];
        fprintf(stderr, "  %-24s %8ld %12.2f %12.1f %6.1f%%\n", names_[i], p->calls[i], 1e3 * p->sec[i],
                1e6 * p->sec[i] / (double)p->calls[i], total > 0 ? 100 * p->sec[i] / total : 0.0);
    }
}

static void prof_close_(Backend* be) {
    Profile* p = prof_(be);
    if (be->rank == 0) print_(p, p->in->name);
    p->in->close(p->in);
    free(p->in);
    free(p);
    be->impl = NULL;
}

void backend_profile_wrap(Backend* be) {
    Profile* p = callocCheck(1, sizeof *p);
    p->in = mallocCheck(sizeof *p->in);
    *p->in = *be;
    p->opened = engram_now();
    be->impl = p;
    be->alloc = prof_alloc_;
    be->free = prof_free_;
#define SET_(name, params, args) be->name = p->in->name ? prof_##name##_ : NULL;
    BACKEND_OPS(SET_, SET_)
#undef SET_
    be->group = p->in->group ? prof_group_ : NULL;
    be->sync = p->in->sync ? prof_sync_ : NULL;
    be->close = prof_close_;
}
