/*
 * engram_exchange.c — the all-to-all exchange of Engram rows and their gradients
 * (engram_exchange.h).
 */
#include "engram_exchange.h"

#include <string.h>

#include "shard.h"

void exchange_init(Exchange* ex, const Comm* comm, int Dh) {
    memset(ex, 0, sizeof *ex);
    ex->comm = comm;
    ex->Dh = Dh;
    mpiCheck(MPI_Type_contiguous(Dh, MPI_FLOAT, &ex->row_t));
    mpiCheck(MPI_Type_commit(&ex->row_t));
    int P = comm->size;
    ex->scount = callocCheck(P, sizeof(int));
    ex->sdispl = callocCheck(P, sizeof(int));
    ex->rcount = callocCheck(P, sizeof(int));
    ex->rdispl = callocCheck(P, sizeof(int));
}

static void step_free_(Exchange* ex) {
    void* bufs[] = {ex->skeys, ex->sperm, ex->rkeys, ex->srows, ex->rrows, ex->own_keys, ex->own_inv, ex->own_grads};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
    ex->skeys = ex->sperm = ex->rkeys = ex->own_keys = ex->own_inv = NULL;
    ex->srows = ex->rrows = ex->own_grads = NULL;
}

void exchange_free(Exchange* ex) {
    step_free_(ex);
    MPI_Type_free(&ex->row_t);
    free(ex->scount);
    free(ex->sdispl);
    free(ex->rcount);
    free(ex->rdispl);
    memset(ex, 0, sizeof *ex);
}

static int owner_(const EngramTables* t, int64_t key, int P) {
    int l = ROWKEY_LAYER(key);
    return shard_row_owner(ROWKEY_ROW(key), t->rows[l], P);
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

void exchange_plan(Exchange* ex, const RowSet* rs, const EngramTables* t) {
    const int P = ex->comm->size, me = ex->comm->rank;
    double t0 = engram_now();
    step_free_(ex);
    memset(&ex->st, 0, sizeof ex->st);
    ex->n_unique = rs->n_unique;
    size_t nu = (size_t)rs->n_unique;
    // group the unique keys by owner: a stable counting sort keeps key order within an owner
    int* own = mallocCheck((nu ? nu : 1) * sizeof(int));
    memset(ex->scount, 0, P * sizeof(int));
    for (size_t i = 0; i < nu; i++) ex->scount[own[i] = owner_(t, rs->keys[i], P)]++;
    displs_(ex->scount, ex->sdispl, P);
    ex->skeys = mallocCheck((nu ? nu : 1) * sizeof(int64_t));
    ex->sperm = mallocCheck((nu ? nu : 1) * sizeof(int64_t));
    int* fill = callocCheck(P, sizeof(int));
    for (size_t i = 0; i < nu; i++) {
        int64_t j = ex->sdispl[own[i]] + fill[own[i]]++;
        ex->skeys[j] = rs->keys[i];
        ex->sperm[j] = (int64_t)i;
    }
    free(fill);
    free(own);
    // counts, then keys
    mpiCheck(MPI_Alltoall(ex->scount, 1, MPI_INT, ex->rcount, 1, MPI_INT, ex->comm->comm));
    ex->n_recv = displs_(ex->rcount, ex->rdispl, P);
    ex->rkeys = mallocCheck((size_t)(ex->n_recv ? ex->n_recv : 1) * sizeof(int64_t));
    mpiCheck(MPI_Alltoallv(ex->skeys, ex->scount, ex->sdispl, MPI_INT64_T, ex->rkeys, ex->rcount, ex->rdispl,
                           MPI_INT64_T, ex->comm->comm));
    // owner side: the distinct rows asked of this rank, and where each request's gradient goes
    ex->own_inv = mallocCheck((size_t)(ex->n_recv ? ex->n_recv : 1) * sizeof(int64_t));
    ex->n_own = keys_dedup(ex->rkeys, (size_t)ex->n_recv, &ex->own_keys, ex->own_inv);
    ex->srows = mallocCheck((nu ? nu : 1) * ex->Dh * sizeof(float));
    ex->rrows = mallocCheck((size_t)(ex->n_recv ? ex->n_recv : 1) * ex->Dh * sizeof(float));
    ex->own_grads = mallocCheck((size_t)(ex->n_own ? ex->n_own : 1) * ex->Dh * sizeof(float));
    // figures: what crossed the wire (a rank's requests to itself are local copies)
    ex->st.lookups = (int64_t)rs->n_layers * rs->n_pos;
    ex->st.unique = rs->n_unique;
    ex->st.remote = rs->n_unique - ex->scount[me];
    ex->st.served = ex->n_recv - ex->rcount[me];
    ex->st.bytes_sent = (int64_t)(P - 1) * sizeof(int) + ex->st.remote * (int64_t)sizeof(int64_t);
    ex->st.bytes_recv = (int64_t)(P - 1) * sizeof(int) + ex->st.served * (int64_t)sizeof(int64_t);
    ex->st.seconds += engram_now() - t0;
}

void exchange_forward(Exchange* ex, const EngramTables* t, float* unique_rows) {
    double t0 = engram_now();
    const size_t Dh = (size_t)ex->Dh;
    tables_gather_local(t, ex->rkeys, ex->n_recv, ex->rrows);   // owners copy the rows asked of them
    mpiCheck(MPI_Alltoallv(ex->rrows, ex->rcount, ex->rdispl, ex->row_t, ex->srows, ex->scount, ex->sdispl, ex->row_t,
                           ex->comm->comm));
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < ex->n_unique; j++)
        memcpy(unique_rows + (size_t)ex->sperm[j] * Dh, ex->srows + (size_t)j * Dh, Dh * sizeof(float));
    int64_t row_bytes = (int64_t)(Dh * sizeof(float));
    ex->st.bytes_sent += ex->st.served * row_bytes;
    ex->st.bytes_recv += ex->st.remote * row_bytes;
    ex->st.seconds += engram_now() - t0;
}

void exchange_backward(Exchange* ex, const float* unique_grads) {
    double t0 = engram_now();
    const size_t Dh = (size_t)ex->Dh;
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < ex->n_unique; j++)
        memcpy(ex->srows + (size_t)j * Dh, unique_grads + (size_t)ex->sperm[j] * Dh, Dh * sizeof(float));
    // the forward's split tables in reverse: what this rank received then, it sends back now
    mpiCheck(MPI_Alltoallv(ex->srows, ex->scount, ex->sdispl, ex->row_t, ex->rrows, ex->rcount, ex->rdispl, ex->row_t,
                           ex->comm->comm));
    // rrows is grouped by asking rank, ascending: summing in buffer order sums in rank order
    memset(ex->own_grads, 0, (size_t)ex->n_own * Dh * sizeof(float));
    for (int64_t i = 0; i < ex->n_recv; i++) {
        float* g = ex->own_grads + (size_t)ex->own_inv[i] * Dh;
        const float* c = ex->rrows + (size_t)i * Dh;
        for (size_t j = 0; j < Dh; j++) g[j] += c[j];
    }
    int64_t row_bytes = (int64_t)(Dh * sizeof(float));
    ex->st.bytes_sent += ex->st.remote * row_bytes;
    ex->st.bytes_recv += ex->st.served * row_bytes;
    ex->st.seconds += engram_now() - t0;
}
