/*
 * exchange_edge_cases.c — the Engram exchange (parallel/engram_exchange.h) alone, under mpirun at
 * P = 1..4, against a reference that each rank builds without MPI: every rank's requests are
 * regenerated from their seeds, so an owner knows who asks it for what, in which order.
 *
 * Tables whose row counts make owner blocks uneven or empty at P = 2..4 (1, 3, 7, 121 and 1009 rows;
 * rows of 3 floats), over eight steps that alternate the blocking plan and the prefetched one
 * (exchange_plan_next / exchange_progress / exchange_use_next), with steps where a rank asks for
 * nothing, where a layer is asked of by no rank, and where every rank asks for the same rows (every
 * request a duplicate for its owner). Consecutive steps reuse the owners' dedup slots that earlier
 * plans left behind. Checked, exactly:
 *   forward   every unique key's row in srows (through spos) equals the row of the whole table,
 *             drawn at P = 1 (tables_fill_normal draws each row from its global index);
 *   backward  each owner's own_keys are the distinct rows asked of it in order of first request
 *             (asking rank, then key order), and own_grads their gradients summed in rank order,
 *             the first copied and the others added (bit for bit);
 *   figures   unique and remote keys, keys served, and the wire bytes sent and received: counts to
 *             the P - 1 other ranks, remote keys, and rows both ways (a rank's own rows are not wire).
 * Prints one line per failure (at most 20 per rank) and exits 1 if any rank failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "config.h"
#include "device.h"
#include "engram_exchange.h"
#include "rng.h"
#include "shard.h"

#define L_ 5
#define DH_ 3
#define STEPS_ 8
static const int64_t ROWS_[L_] = {1, 3, 7, 121, 1009};

static int cmp_i64_(const void* a, const void* b) {
    int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
    return (x > y) - (x < y);
}

/* The sorted unique keys rank r asks for at step s (into keys, room for every row); their count. */
static int64_t keys_of_(int r, int s, int64_t* keys) {
    int64_t n = 0;
    if (s == 3 && r == 1) return 0;   // a rank that asks for nothing
    for (int l = 0; l < L_; l++) {
        if (s == 2 && l == 2) continue;   // a layer nobody asks of
        int draws = ROWS_[l] < 20 ? (int)ROWS_[l] : 60 + 13 * r;
        for (int i = 0; i < draws; i++) {
            // step 5: every rank draws the same rows; otherwise each rank its own, often overlapping
            uint64_t u = rng_u64(91, (uint64_t)(s == 5 ? 0 : r + 1) * 100 + (uint64_t)s, (uint64_t)l * 1000 + i);
            if (u % 4 == 0 && s != 5) continue;   // leave some rows out of the small tables
            keys[n++] = ROWKEY(l, (int64_t)(u % (uint64_t)ROWS_[l]));
        }
    }
    qsort(keys, (size_t)n, sizeof(int64_t), cmp_i64_);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (m == 0 || keys[i] != keys[m - 1]) keys[m++] = keys[i];
    return m;
}

/* The gradient rank r sends for key at step s, element j: values of mixed magnitude, so that the
 * order of the sums shows in the rounding. */
static float grad_(int r, int s, int64_t key, int j) {
    uint64_t u = rng_u64(92, (uint64_t)r * 64 + (uint64_t)s, (uint64_t)key * DH_ + (uint64_t)j);
    return (float)((double)(u % 200001) - 100000.0) / (float)(1 + u % 977);
}

static int fails_;
#define CHECK_(cond, ...)                                              \
    do {                                                               \
        if (!(cond)) {                                                 \
            if (fails_++ < 20) {                                       \
                fprintf(stderr, "rank %d step %d: ", w.rank, s);       \
                fprintf(stderr, __VA_ARGS__);                          \
                fprintf(stderr, "\n");                                 \
            }                                                          \
        }                                                              \
    } while (0)

int main(int argc, char** argv) {
    Comm w;
    comm_init(&w, &argc, &argv);
    const int P = w.size, me = w.rank;
    Backend be;
    char err[512];
    if (device_open(&be, DEVICE_CPU, BACKEND_FP32, w.comm, err, sizeof err) != 0) engram_fail("%s", err);
    EngramTables t, whole;
    tables_init(&t, &be, ROWS_, L_, DH_, me, P);
    tables_fill_normal(&t, 7, 1.0);
    tables_init(&whole, backend_cpu(), ROWS_, L_, DH_, 0, 1);
    tables_fill_normal(&whole, 7, 1.0);
    Exchange ex;
    exchange_init(&ex, &w, &be, DH_);
    int64_t total_rows = 0;
    for (int l = 0; l < L_; l++) total_rows += ROWS_[l];
    int64_t* keys = mallocCheck((size_t)total_rows * sizeof(int64_t));
    int64_t* other = mallocCheck((size_t)total_rows * sizeof(int64_t));
    int64_t* exp_keys = mallocCheck((size_t)total_rows * sizeof(int64_t));   // expected own_keys
    float* exp_grads = mallocCheck((size_t)total_rows * DH_ * sizeof(float));
    int64_t** slot = mallocCheck(L_ * sizeof(int64_t*));   // the reference's own dedup: a full scan
    for (int l = 0; l < L_; l++) slot[l] = mallocCheck((size_t)ROWS_[l] * sizeof(int64_t));
    RowSet rs = {.n_layers = L_, .n_pos = 1};
    for (int s = 0; s < STEPS_; s++) {
        int64_t n = keys_of_(me, s, keys);
        if (s % 2 == 0) {   // blocking plan; the next step's is posted during this one
            rs.keys = keys, rs.n_unique = n;
            exchange_plan(&ex, &rs, &t);
        } else {
            exchange_use_next(&ex);
        }
        const ExchangePlan* p = &ex.plan[ex.cur];
        CHECK_(p->n_unique == n, "%lld unique keys in the plan, expected %lld", (long long)p->n_unique, (long long)n);
        exchange_forward(&ex, &t);
        for (int64_t u = 0; u < n; u++) {
            int l = ROWKEY_LAYER(keys[u]);
            int64_t row = ROWKEY_ROW(keys[u]);
            const float* got = ex.srows + (size_t)ex.spos[u] * DH_;
            CHECK_(!memcmp(got, whole.table[l] + row * DH_, DH_ * sizeof(float)),
                   "forward: row %lld of layer %d is not the table's", (long long)row, l);
        }
        if (s % 2 == 0 && s + 1 < STEPS_) {   // post the next step's plan, advance it while "computing"
            int64_t* next = mallocCheck((size_t)total_rows * sizeof(int64_t));
            RowSet nrs = {.n_layers = L_, .n_pos = 1, .keys = next, .n_unique = keys_of_(me, s + 1, next)};
            exchange_plan_next(&ex, &nrs, &t);
            free(next);   // the plan keeps its own copy of the keys
            for (int k = 0; k < 3; k++) exchange_progress(&ex);
        }
        for (int64_t u = 0; u < n; u++)
            for (int j = 0; j < DH_; j++) ex.srows[(size_t)ex.spos[u] * DH_ + j] = grad_(me, s, keys[u], j);
        exchange_backward(&ex);

        // the reference: walk every rank's requests in rank order, keeping those this rank owns
        int64_t n_exp = 0, remote = 0, served = 0;
        for (int l = 0; l < L_; l++)
            for (int64_t r = 0; r < ROWS_[l]; r++) slot[l][r] = -1;
        for (int q = 0; q < P; q++) {
            int64_t m = keys_of_(q, s, other);
            for (int64_t i = 0; i < m; i++) {
                int l = ROWKEY_LAYER(other[i]);
                int64_t row = ROWKEY_ROW(other[i]);
                if (shard_row_owner(row, ROWS_[l], P) != me) {
                    if (q == me) remote++;
                    continue;
                }
                if (q != me) served++;
                float* g = exp_grads + (size_t)(slot[l][row] < 0 ? n_exp : slot[l][row]) * DH_;
                if (slot[l][row] < 0) {
                    exp_keys[n_exp] = other[i];
                    slot[l][row] = n_exp++;
                    for (int j = 0; j < DH_; j++) g[j] = grad_(q, s, other[i], j);
                } else {
                    for (int j = 0; j < DH_; j++) g[j] += grad_(q, s, other[i], j);
                }
            }
        }
        CHECK_(ex.n_own == n_exp, "%lld distinct rows asked of this rank, expected %lld", (long long)ex.n_own,
               (long long)n_exp);
        for (int64_t i = 0; i < n_exp && i < ex.n_own; i++) {
            CHECK_(ex.own_keys[i] == exp_keys[i], "own_keys[%lld] = row %lld of layer %d, expected row %lld of layer %d",
                   (long long)i, (long long)ROWKEY_ROW(ex.own_keys[i]), ROWKEY_LAYER(ex.own_keys[i]),
                   (long long)ROWKEY_ROW(exp_keys[i]), ROWKEY_LAYER(exp_keys[i]));
            CHECK_(!memcmp(ex.own_grads + (size_t)i * DH_, exp_grads + (size_t)i * DH_, DH_ * sizeof(float)),
                   "backward: the summed gradient of own row %lld differs (first element %.9g, expected %.9g)",
                   (long long)i, ex.own_grads[(size_t)i * DH_], exp_grads[(size_t)i * DH_]);
        }
        const ExchangeStats* st = &ex.st;
        const int64_t row_bytes = DH_ * sizeof(float), counts = (int64_t)(P - 1) * sizeof(int);
        CHECK_(st->unique == n && st->remote == remote && st->served == served,
               "figures: unique %lld remote %lld served %lld, expected %lld %lld %lld", (long long)st->unique,
               (long long)st->remote, (long long)st->served, (long long)n, (long long)remote, (long long)served);
        int64_t want_sent = counts + remote * 8 + (served + remote) * row_bytes;
        int64_t want_recv = counts + served * 8 + (remote + served) * row_bytes;
        CHECK_(st->bytes_sent == want_sent && st->bytes_recv == want_recv,
               "wire bytes sent %lld received %lld, expected %lld and %lld", (long long)st->bytes_sent,
               (long long)st->bytes_recv, (long long)want_sent, (long long)want_recv);
    }
    int all = fails_;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_SUM, w.comm));
    if (me == 0) printf("exchange_edge_cases P=%d: %s (%d failures over all ranks)\n", P, all ? "FAILED" : "ok", all);
    for (int l = 0; l < L_; l++) free(slot[l]);
    free(slot), free(keys), free(other), free(exp_keys), free(exp_grads);
    exchange_free(&ex);
    tables_free(&t);
    tables_free(&whole);
    be.close(&be);
    comm_free(&w);
    return all ? 1 : 0;
}
