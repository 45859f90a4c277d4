/*
 * engram_exchange.c — the all-to-all exchange of Engram rows and their gradients
 * (engram_exchange.h). A plan is built in three stages: local grouping by owner and the counts
 * (MPI_Ialltoall), then the keys (MPI_Ialltoallv), then the owners' dedup. The blocking path runs
 * them back to back; the prefetch path posts them for the next step and advances them whenever
 * the training step calls exchange_progress.
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
}

/* Drop the per-step arrays (the [P] count arrays stay). */
static void plan_clear_(ExchangePlan* p) {
    free(p->skeys), free(p->spos), free(p->rkeys), free(p->own_keys), free(p->own_inv);
    p->skeys = p->spos = p->rkeys = p->own_keys = p->own_inv = NULL;
    p->stage = 0;
}

void exchange_init(Exchange* ex, const Comm* comm, int Dh) {
    memset(ex, 0, sizeof *ex);
    ex->comm = comm;
    ex->Dh = Dh;
    mpiCheck(MPI_Type_contiguous(Dh, MPI_FLOAT, &ex->row_t));
    mpiCheck(MPI_Type_commit(&ex->row_t));
    for (int i = 0; i < 2; i++) plan_alloc_(&ex->plan[i], comm->size);
}

void exchange_free(Exchange* ex) {
    for (int i = 0; i < 2; i++) {
        ExchangePlan* p = &ex->plan[i];
        if (p->req != MPI_REQUEST_NULL) MPI_Wait(&p->req, MPI_STATUS_IGNORE);
        plan_clear_(p);
        free(p->scount), free(p->sdispl), free(p->rcount), free(p->rdispl);
    }
    for (int l = 0; l < ex->n_stamped; l++) free(ex->stamp[l]), free(ex->slot[l]);
    free(ex->stamp), free(ex->slot);
    MPI_Type_free(&ex->row_t);
    free(ex->srows), free(ex->rrows), free(ex->own_grads);
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

/* Stage 1: group the unique keys by owner (a stable counting sort keeps key order within an owner)
 * and post the counts. */
static void plan_begin_(Exchange* ex, ExchangePlan* p, const RowSet* rs, const EngramTables* t) {
    const int P = ex->comm->size;
    if (!ex->tab) {   // first plan: per-row stamps for the owners' dedup (no sort, no clearing)
        ex->tab = t;
        ex->n_stamped = t->n_layers;
        ex->stamp = callocCheck(t->n_layers, sizeof(int64_t*));
        ex->slot = callocCheck(t->n_layers, sizeof(int64_t*));
        for (int l = 0; l < t->n_layers; l++) {
            ex->stamp[l] = mallocCheck(((size_t)t->local[l] + 1) * sizeof(int64_t));
            ex->slot[l] = mallocCheck(((size_t)t->local[l] + 1) * sizeof(int64_t));
            for (int64_t r = 0; r < t->local[l]; r++) ex->stamp[l][r] = -1;
        }
    }
    plan_clear_(p);
    p->n_unique = rs->n_unique;
    p->lookups = (int64_t)rs->n_layers * rs->n_pos;
    size_t nu = (size_t)rs->n_unique;
    int* own = mallocCheck((nu ? nu : 1) * sizeof(int));
    memset(p->scount, 0, P * sizeof(int));
    for (size_t i = 0; i < nu; i++) {
        int l = ROWKEY_LAYER(rs->keys[i]);
        p->scount[own[i] = shard_row_owner(ROWKEY_ROW(rs->keys[i]), t->rows[l], P)]++;
    }
    displs_(p->scount, p->sdispl, P);
    p->skeys = mallocCheck((nu ? nu : 1) * sizeof(int64_t));
    p->spos = mallocCheck((nu ? nu : 1) * sizeof(int64_t));
    int* fill = callocCheck(P, sizeof(int));
    for (size_t i = 0; i < nu; i++) {
        int64_t j = p->sdispl[own[i]] + fill[own[i]]++;
        p->skeys[j] = rs->keys[i];
        p->spos[i] = j;
    }
    free(fill);
    free(own);
    mpiCheck(MPI_Ialltoall(p->scount, 1, MPI_INT, p->rcount, 1, MPI_INT, ex->comm->comm, &p->req));
    p->stage = 1;
}

/* The distinct rows among the keys asked of this rank, in order of first request, found through
 * per-row stamps: O(requests), no sort. */
static void owner_dedup_(Exchange* ex, ExchangePlan* p) {
    const EngramTables* t = ex->tab;
    int64_t stamp = ex->plans++;
    size_t n = (size_t)p->n_recv;
    p->own_inv = mallocCheck((n ? n : 1) * sizeof(int64_t));
    p->own_keys = mallocCheck((n ? n : 1) * sizeof(int64_t));
    p->n_own = 0;
    for (size_t i = 0; i < n; i++) {
        int l = ROWKEY_LAYER(p->rkeys[i]);
        int64_t r = ROWKEY_ROW(p->rkeys[i]) - t->first[l];
        if (r < 0 || r >= t->local[l])
            engram_die("this is a bug: a rank was asked for a row it does not own", "row %lld of layer %d",
                       (long long)ROWKEY_ROW(p->rkeys[i]), l);
        if (ex->stamp[l][r] != stamp) {
            ex->stamp[l][r] = stamp;
            ex->slot[l][r] = p->n_own;
            p->own_keys[p->n_own++] = p->rkeys[i];
        }
        p->own_inv[i] = ex->slot[l][r];
    }
}

/* Stages 2 and 3, each once its messages are in. With wait, block until the plan is ready. */
static void plan_advance_(Exchange* ex, ExchangePlan* p, int wait) {
    while (p->stage == 1 || p->stage == 2) {
        int done = 0;
        if (wait) mpiCheck(MPI_Wait(&p->req, MPI_STATUS_IGNORE)), done = 1;
        else mpiCheck(MPI_Test(&p->req, &done, MPI_STATUS_IGNORE));
        if (!done) return;
        if (p->stage == 1) {   // counts in: post the keys
            p->n_recv = displs_(p->rcount, p->rdispl, ex->comm->size);
            p->rkeys = mallocCheck((size_t)(p->n_recv ? p->n_recv : 1) * sizeof(int64_t));
            mpiCheck(MPI_Ialltoallv(p->skeys, p->scount, p->sdispl, MPI_INT64_T, p->rkeys, p->rcount, p->rdispl,
                                    MPI_INT64_T, ex->comm->comm, &p->req));
            p->stage = 2;
        } else {               // keys in: the distinct rows asked of this rank, and where each request's gradient goes
            owner_dedup_(ex, p);
            p->stage = 3;
        }
    }
}

/* Make plan[cur] this step's: buffers sized for it, figures of what will cross the wire. */
static void plan_activate_(Exchange* ex) {
    const ExchangePlan* p = &ex->plan[ex->cur];
    const int me = ex->comm->rank, P = ex->comm->size;
    size_t Dh = (size_t)ex->Dh;
    ex->srows = reallocCheck(ex->srows, ((size_t)p->n_unique + 1) * Dh * sizeof(float));
    ex->rrows = reallocCheck(ex->rrows, ((size_t)p->n_recv + 1) * Dh * sizeof(float));
    ex->own_grads = reallocCheck(ex->own_grads, ((size_t)p->n_own + 1) * Dh * sizeof(float));
    ex->n_own = p->n_own;
    ex->own_keys = p->own_keys;
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
    ExchangePlan* p = &ex->plan[ex->cur];
    plan_begin_(ex, p, rs, t);
    plan_advance_(ex, p, 1);
    plan_activate_(ex);
    ex->st.seconds = engram_now() - t0;
}

void exchange_plan_next(Exchange* ex, const RowSet* rs, const EngramTables* t) {
    double t0 = engram_now();
    plan_begin_(ex, &ex->plan[1 - ex->cur], rs, t);
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
    ex->cur = 1 - ex->cur;
    plan_activate_(ex);
    ex->st.seconds = engram_now() - t0;
}

const int64_t* exchange_positions(const Exchange* ex) { return ex->plan[ex->cur].spos; }

void exchange_forward(Exchange* ex, const EngramTables* t) {
    double t0 = engram_now();
    const ExchangePlan* p = &ex->plan[ex->cur];
    tables_gather_local(t, p->rkeys, p->n_recv, ex->rrows);   // owners copy the rows asked of them
    mpiCheck(MPI_Alltoallv(ex->rrows, p->rcount, p->rdispl, ex->row_t, ex->srows, p->scount, p->sdispl, ex->row_t,
                           ex->comm->comm));
    int64_t row_bytes = (int64_t)ex->Dh * (int64_t)sizeof(float);
    ex->st.bytes_sent += ex->st.served * row_bytes;
    ex->st.bytes_recv += ex->st.remote * row_bytes;
    ex->st.seconds += engram_now() - t0;
}

void exchange_backward(Exchange* ex) {
    double t0 = engram_now();
    const ExchangePlan* p = &ex->plan[ex->cur];
    const size_t Dh = (size_t)ex->Dh;
    // the forward's split tables in reverse: what this rank received then, it sends back now
    mpiCheck(MPI_Alltoallv(ex->srows, p->scount, p->sdispl, ex->row_t, ex->rrows, p->rcount, p->rdispl, ex->row_t,
                           ex->comm->comm));
    // rrows is grouped by asking rank, ascending: summing in buffer order sums in rank order
    memset(ex->own_grads, 0, (size_t)p->n_own * Dh * sizeof(float));
    for (int64_t i = 0; i < p->n_recv; i++) {
        float* g = ex->own_grads + (size_t)p->own_inv[i] * Dh;
        const float* c = ex->rrows + (size_t)i * Dh;
        for (size_t j = 0; j < Dh; j++) g[j] += c[j];
    }
    int64_t row_bytes = (int64_t)(Dh * sizeof(float));
    ex->st.bytes_sent += ex->st.remote * row_bytes;
    ex->st.bytes_recv += ex->st.served * row_bytes;
    ex->st.seconds += engram_now() - t0;
}
