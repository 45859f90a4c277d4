/*
 * engram_exchange.c — the all-to-all exchange of Engram rows and their gradients
 * (engram_exchange.h). A plan is built in three stages: local grouping by owner and the counts
 * (MPI_Ialltoall), then the keys (MPI_Ialltoallv), then the owners' dedup. The blocking path runs
 * them back to back with blocking collectives (faster than nonblocking ones waited for at once); the
 * prefetch path posts them for the next step and advances them whenever the training step calls
 * exchange_progress. Per-step arrays keep their capacity from step to step. The plan is host work
 * and MPI; the rows, their gradients and the tables are the backend's (rows moved with
 * be->alltoallv, gathered and summed by backend ops).
 */
#include "engram_exchange.h"

#include <string.h>

#include "shard.h"

static void plan_alloc_(ExchangePlan* p, int P) {
    memset(p, 0, sizeof *p);
    p->req = MPI_REQUEST_NULL;
    p->scount = callocCheck(P, sizeof(int));
    p->sdispl = callocCheck(P, sizeof(int));
    p->rcount = callocCheck(P, sizeof(int));
    p->rdispl = callocCheck(P, sizeof(int));
    p->swire = callocCheck(P, sizeof(int));
    p->rwire = callocCheck(P, sizeof(int));
}

static void plan_free_(ExchangePlan* p) {
    free(p->skeys), free(p->spos), free(p->rkeys), free(p->own_keys), free(p->own_inv);
    free(p->scount), free(p->sdispl), free(p->rcount), free(p->rdispl), free(p->swire), free(p->rwire);
}

/* Grow the per-step arrays to n_unique / n_recv entries. They are kept from step to step: fresh
 * megabyte allocations every step would page-fault every step. */
static void plan_reserve_unique_(ExchangePlan* p, int64_t n) {
    if (n <= p->cap_unique) return;
    p->cap_unique = n + n / 4;
    p->skeys = reallocCheck(p->skeys, (size_t)p->cap_unique * sizeof(int64_t));
    p->spos = reallocCheck(p->spos, (size_t)p->cap_unique * sizeof(int64_t));
}

static void plan_reserve_recv_(ExchangePlan* p, int64_t n) {
    if (n <= p->cap_recv) return;
    p->cap_recv = n + n / 4;
    p->rkeys = reallocCheck(p->rkeys, (size_t)p->cap_recv * sizeof(int64_t));
    p->own_keys = reallocCheck(p->own_keys, (size_t)p->cap_recv * sizeof(int64_t));
    p->own_inv = reallocCheck(p->own_inv, (size_t)p->cap_recv * sizeof(int64_t));
}

/* Room for n rows of Dh floats in the backend buffer *buf (cap rows now): grown with slack, never
 * shrunk, its contents not kept (every step fills it anew). */
static void rows_reserve_(Exchange* ex, float** buf, size_t* cap, size_t n) {
    if (n <= *cap && *buf) return;
    *cap = n + n / 4;
    if (*buf) ex->be->free(ex->be, *buf);
    *buf = ex->be->alloc(ex->be, (*cap + 1) * (size_t)ex->Dh * sizeof(float));
}

/* This step's plan arrays on the device (the arrays themselves on a host backend), and their end. */
static const int64_t* view_(Exchange* ex, const int64_t* h, int64_t n) {
    return backend_device_view(ex->be, h, (size_t)n * sizeof(int64_t), 1);
}
static void views_drop_(Exchange* ex) {
    const ExchangePlan* p = &ex->plan[ex->cur];
    const int64_t* h[4] = {p->spos, p->rkeys, p->own_inv, p->own_keys};
    const int64_t** d[4] = {&ex->spos, &ex->rkeys, &ex->own_inv, &ex->own_keys};
    for (int i = 0; i < 4; i++) {
        if (*d[i]) backend_device_done(ex->be, (void*)*d[i], (void*)h[i], 0, 0);
        *d[i] = NULL;
    }
}

void exchange_init(Exchange* ex, const Comm* comm, Backend* be, int Dh) {
    memset(ex, 0, sizeof *ex);
    ex->comm = comm;
    ex->be = be;
    ex->Dh = Dh;
    const int P = comm->size;
    ex->sbytes = callocCheck(P, sizeof(size_t)), ex->sboff = callocCheck(P, sizeof(size_t));
    ex->rbytes = callocCheck(P, sizeof(size_t)), ex->rboff = callocCheck(P, sizeof(size_t));
    mpiCheck(MPI_Type_contiguous(Dh, MPI_FLOAT, &ex->row_t));
    mpiCheck(MPI_Type_commit(&ex->row_t));
    for (int i = 0; i < 2; i++) plan_alloc_(&ex->plan[i], comm->size);
}

void exchange_free(Exchange* ex) {
    views_drop_(ex);
    for (int i = 0; i < 2; i++) {
        ExchangePlan* p = &ex->plan[i];
        if (p->req != MPI_REQUEST_NULL) MPI_Wait(&p->req, MPI_STATUS_IGNORE);
        plan_free_(p);
    }
    for (int l = 0; l < ex->n_slotted; l++) free(ex->slot[l]);
    free(ex->slot);
    free(ex->run);
    MPI_Type_free(&ex->row_t);
    Backend* be = ex->be;
    if (ex->srows) be->free(be, ex->srows), be->free(be, ex->rrows), be->free(be, ex->own_grads);
    free(ex->sbytes), free(ex->sboff), free(ex->rbytes), free(ex->rboff);
    memset(ex, 0, sizeof *ex);
}

/* Exclusive prefix sum of count [P] into displ; returns the total. */
static int64_t displs_(const int* count, int* displ, int P) {
    int64_t s = 0;
    for (int r = 0; r < P; r++) {
        if (s > INT32_MAX) engram_die("split the batch over more ranks", "exchange of %lld keys overflows MPI counts", (long long)s);
        displ[r] = (int)s;
        s += count[r];
    }
    return s;
}

/* Stage 1: group the unique keys by owner, key order kept within an owner; the counts are then
 * exchanged (blocking or posted by the caller). The keys are sorted (layer, row) and each owner
 * holds one contiguous row block of each layer, so an owner's keys of a layer are one run of them:
 * n_layers × P binary searches find the runs, and whole runs are copied (no work per key besides
 * the copy and its position). */
static void plan_group_(Exchange* ex, ExchangePlan* p, const RowSet* rs, const EngramTables* t) {
    const int P = ex->comm->size, L = t->n_layers;
    if (!ex->tab) {   // first plan: the owners' per-row slots for their dedup
        ex->tab = t;
        ex->n_slotted = L;
        ex->slot = callocCheck(L, sizeof(uint32_t*));
        for (int l = 0; l < L; l++) ex->slot[l] = callocCheck((size_t)t->local[l] + 1, sizeof(uint32_t));
        ex->run = callocCheck((size_t)L * P + 1, sizeof(int64_t));
    }
    p->stage = 0;
    p->n_unique = rs->n_unique;
    p->lookups = (int64_t)rs->n_layers * rs->n_pos;
    const int64_t nu = rs->n_unique;
    const int64_t* keys = rs->keys;
    plan_reserve_unique_(p, nu + 1);
    // run[l·P + o]: where owner o's keys of layer l start (its rows from o·blk on); the last run
    // of the last layer ends at nu
    int64_t* run = ex->run;
    for (int l = 0; l < L; l++) {
        const int64_t blk = shard_block_rows(t->rows[l], P);
        for (int o = 0; o < P; o++) {
            int64_t row = (int64_t)o * blk < t->rows[l] ? (int64_t)o * blk : t->rows[l];
            run[l * P + o] = keys_lower_bound(keys, nu, ROWKEY(l, row));
        }
    }
    run[L * P] = nu;
    memset(p->scount, 0, P * sizeof(int));
    for (int i = 0; i < L * P; i++) p->scount[i % P] += (int)(run[i + 1] - run[i]);
    displs_(p->scount, p->sdispl, P);
    memcpy(p->swire, p->sdispl, P * sizeof(int));   // scratch: where each owner's next run goes
    for (int i = 0; i < L * P; i++) {
        const int64_t a = run[i], n = run[i + 1] - a, at = p->swire[i % P];
        memcpy(p->skeys + at, keys + a, (size_t)n * sizeof(int64_t));
        for (int64_t j = 0; j < n; j++) p->spos[a + j] = at + j;
        p->swire[i % P] += (int)n;
    }
    memcpy(p->swire, p->scount, P * sizeof(int));
    p->swire[ex->comm->rank] = 0;
}

/* Counts in: size the receive side and copy this rank's keys to itself (MPI moves the others). */
static void plan_counts_in_(Exchange* ex, ExchangePlan* p) {
    const int P = ex->comm->size, me = ex->comm->rank;
    p->n_recv = displs_(p->rcount, p->rdispl, P);
    memcpy(p->rwire, p->rcount, P * sizeof(int));
    p->rwire[me] = 0;
    plan_reserve_recv_(p, p->n_recv + 1);
    memcpy(p->rkeys + p->rdispl[me], p->skeys + p->sdispl[me], (size_t)p->scount[me] * sizeof(int64_t));
}

/* The distinct rows among the keys asked of this rank, in order of first request, found through a
 * sparse set: slot[l][r] names the row's place in own_keys if it has one in this plan, which holds
 * exactly when own_keys there is the row's key (whatever an old plan left in slot). O(requests), no
 * sort, no clearing between plans. Each asker's keys are sorted, so they are walked as runs of one
 * layer each (no per-key decoding), and the first asker's are distinct (no check). */
static void owner_dedup_(Exchange* ex, ExchangePlan* p) {
    const EngramTables* t = ex->tab;
    const int P = ex->comm->size, L = t->n_layers;
    int64_t* restrict own_keys = p->own_keys;
    int64_t* restrict own_inv = p->own_inv;
    const int64_t* restrict rk = p->rkeys;
    int64_t n_own = 0;
    for (int b = 0; b < P; b++) {
        int64_t a = p->rdispl[b];
        const int64_t block_end = a + p->rcount[b];
        for (int l = 0; l < L && a < block_end; l++) {
            const int64_t end = l + 1 < L ? a + keys_lower_bound(rk + a, block_end - a, ROWKEY(l + 1, 0)) : block_end;
            const int64_t base = ROWKEY(l, t->first[l]);   // the key of this rank's first row of layer l
            const uint64_t local = (uint64_t)t->local[l];
            uint32_t* restrict slot = ex->slot[l];
            for (int64_t i = a; i < end; i++) {
                if (i + ENGRAM_PREFETCH_AHEAD < end) {   // slots of rows scattered over the tables
                    const uint64_t ra = (uint64_t)(rk[i + ENGRAM_PREFETCH_AHEAD] - base);
                    if (ra < local) __builtin_prefetch(&slot[ra]);
                }
                const int64_t key = rk[i];
                const uint64_t r = (uint64_t)(key - base);
                if (r >= local)
                    engram_die("this is a bug: a rank was asked for a row it does not own", "row %lld of layer %d",
                               (long long)ROWKEY_ROW(key), ROWKEY_LAYER(key));
                if (b == 0) {   // the first asker's keys are distinct: each is a first request
                    slot[r] = (uint32_t)n_own;   // < 2^31: displs_ caps the requests
                    own_keys[n_own] = key;
                    own_inv[i] = n_own++;
                    continue;
                }
                uint32_t s = slot[r];
                if (s >= (uint64_t)n_own || own_keys[s] != key) {   // first request in this plan
                    s = slot[r] = (uint32_t)n_own;
                    own_keys[n_own++] = key;
                }
                own_inv[i] = s;
            }
            a = end;
        }
    }
    p->n_own = n_own;
}

/* Stages 2 and 3 of a posted plan, each once its messages are in. With wait, block until ready. */
static void plan_advance_(Exchange* ex, ExchangePlan* p, int wait) {
    while (p->stage == 1 || p->stage == 2) {
        int done = 0;
        if (wait) mpiCheck(MPI_Wait(&p->req, MPI_STATUS_IGNORE)), done = 1;
        else mpiCheck(MPI_Test(&p->req, &done, MPI_STATUS_IGNORE));
        if (!done) return;
        if (p->stage == 1) {   // counts in: post the keys
            plan_counts_in_(ex, p);
            mpiCheck(MPI_Ialltoallv(p->skeys, p->swire, p->sdispl, MPI_INT64_T, p->rkeys, p->rwire, p->rdispl,
                                    MPI_INT64_T, ex->comm->comm, &p->req));
            p->stage = 2;
        } else {               // keys in: the distinct rows asked of this rank, and where each request's gradient goes
            owner_dedup_(ex, p);
            p->stage = 3;
        }
    }
}

/* Make plan[cur] this step's: buffers sized for it, its keys and indices on the device, the byte
 * counts of its rows, figures of what will cross the wire. */
static void plan_activate_(Exchange* ex) {
    const ExchangePlan* p = &ex->plan[ex->cur];
    const int me = ex->comm->rank, P = ex->comm->size;
    size_t row_bytes = (size_t)ex->Dh * sizeof(float);
    rows_reserve_(ex, &ex->srows, &ex->cap_srows, (size_t)p->n_unique);
    rows_reserve_(ex, &ex->rrows, &ex->cap_rrows, (size_t)p->n_recv);
    rows_reserve_(ex, &ex->own_grads, &ex->cap_own, (size_t)p->n_own);
    ex->spos = view_(ex, p->spos, p->n_unique);
    ex->rkeys = view_(ex, p->rkeys, p->n_recv);
    ex->own_inv = view_(ex, p->own_inv, p->n_recv);
    ex->own_keys = view_(ex, p->own_keys, p->n_own);
    ex->n_own = p->n_own;
    for (int r = 0; r < P; r++) {
        ex->sbytes[r] = (size_t)p->swire[r] * row_bytes, ex->sboff[r] = (size_t)p->sdispl[r] * row_bytes;
        ex->rbytes[r] = (size_t)p->rwire[r] * row_bytes, ex->rboff[r] = (size_t)p->rdispl[r] * row_bytes;
    }
    // a rank's requests to itself are local copies, not wire traffic
    ExchangeStats* st = &ex->st;
    st->lookups = p->lookups;
    st->unique = p->n_unique;
    st->remote = p->n_unique - p->scount[me];
    st->served = p->n_recv - p->rcount[me];
    st->bytes_sent = (int64_t)(P - 1) * sizeof(int) + st->remote * (int64_t)sizeof(int64_t);
    st->bytes_recv = (int64_t)(P - 1) * sizeof(int) + st->served * (int64_t)sizeof(int64_t);
}

void exchange_plan(Exchange* ex, const RowSet* rs, const EngramTables* t) {
    double t0 = engram_now();
    views_drop_(ex);
    ExchangePlan* p = &ex->plan[ex->cur];
    plan_group_(ex, p, rs, t);   // blocking collectives here: nothing to overlap with
    mpiCheck(MPI_Alltoall(p->scount, 1, MPI_INT, p->rcount, 1, MPI_INT, ex->comm->comm));
    plan_counts_in_(ex, p);
    mpiCheck(MPI_Alltoallv(p->skeys, p->swire, p->sdispl, MPI_INT64_T, p->rkeys, p->rwire, p->rdispl, MPI_INT64_T,
                           ex->comm->comm));
    owner_dedup_(ex, p);
    p->stage = 3;
    plan_activate_(ex);
    ex->st.seconds = engram_now() - t0;
}

void exchange_plan_next(Exchange* ex, const RowSet* rs, const EngramTables* t) {
    double t0 = engram_now();
    ExchangePlan* p = &ex->plan[1 - ex->cur];
    plan_group_(ex, p, rs, t);
    mpiCheck(MPI_Ialltoall(p->scount, 1, MPI_INT, p->rcount, 1, MPI_INT, ex->comm->comm, &p->req));
    p->stage = 1;
    ex->st.seconds += engram_now() - t0;
}

void exchange_progress(Exchange* ex) {
    double t0 = engram_now();
    plan_advance_(ex, &ex->plan[1 - ex->cur], 0);
    ex->st.seconds += engram_now() - t0;
}

void exchange_use_next(Exchange* ex) {
    double t0 = engram_now();
    ExchangePlan* p = &ex->plan[1 - ex->cur];
    if (p->stage == 0) engram_die("this is a bug: no prefetched plan", "exchange_use_next without exchange_plan_next");
    plan_advance_(ex, p, 1);
    views_drop_(ex);
    ex->cur = 1 - ex->cur;
    plan_activate_(ex);
    ex->st.seconds = engram_now() - t0;
}

void exchange_forward(Exchange* ex, const EngramTables* t) {
    double t0 = engram_now();
    const ExchangePlan* p = &ex->plan[ex->cur];
    Backend* be = ex->be;
    const int me = ex->comm->rank;
    const size_t Dh = (size_t)ex->Dh;
    // owners copy the rows asked of them: other ranks' into rrows to be sent, their own straight into srows
    be->tables_gather(be, t, ex->rkeys, p->rdispl[me], ex->rrows);
    be->tables_gather(be, t, ex->rkeys + p->rdispl[me], p->rcount[me], ex->srows + (size_t)p->sdispl[me] * Dh);
    int64_t after = (int64_t)p->rdispl[me] + p->rcount[me];
    be->tables_gather(be, t, ex->rkeys + after, p->n_recv - after, ex->rrows + (size_t)after * Dh);
    be->alltoallv(be, ex->rrows, ex->rbytes, ex->rboff, ex->srows, ex->sbytes, ex->sboff);
    int64_t row_bytes = (int64_t)(Dh * sizeof(float));
    ex->st.bytes_sent += ex->st.served * row_bytes;
    ex->st.bytes_recv += ex->st.remote * row_bytes;
    ex->st.seconds += engram_now() - t0;
}

void exchange_backward(Exchange* ex) {
    double t0 = engram_now();
    const ExchangePlan* p = &ex->plan[ex->cur];
    Backend* be = ex->be;
    const int me = ex->comm->rank;
    const size_t Dh = (size_t)ex->Dh;
    // the forward's split tables in reverse: what this rank received then, it sends back now
    be->alltoallv(be, ex->srows, ex->sbytes, ex->sboff, ex->rrows, ex->rbytes, ex->rboff);
    // contributions are grouped by asking rank, ascending, so summing in that order sums in rank
    // order; this rank's own sit in srows (they never crossed the wire)
    const int64_t self_lo = p->rdispl[me], self_hi = self_lo + p->rcount[me];
    be->rows_sum_owned(be, ex->own_grads, ex->rrows, ex->srows + (size_t)p->sdispl[me] * Dh, self_lo, self_hi,
                       ex->own_inv, p->n_recv, ex->Dh);
    int64_t row_bytes = (int64_t)(Dh * sizeof(float));
    ex->st.bytes_sent += ex->st.remote * row_bytes;
    ex->st.bytes_recv += ex->st.served * row_bytes;
    ex->st.seconds += engram_now() - t0;
}
