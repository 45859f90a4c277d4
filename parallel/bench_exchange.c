/*
 * bench_exchange.c — `mpirun -np P engram bench exchange CONFIG [key=value ...] [--steps N]`:
 * trains a config on random tokens (each rank its slice of the global batch, the next step's plan
 * prefetched) and reports the step time split into compute / exchange / all-reduce (means over
 * ranks of what each rank's steps spent there: waiting for slower ranks inside a call counts as
 * that call's), then one exchange of the last step's keys timed alone next to plain collectives
 * moving the same bytes between the same ranks, in the same run.
 *
 * What each side of that comparison includes (per phase; max over ranks, best of reps, the two
 * sides alternating which goes first, after a barrier each):
 *   plan   exchange: group the unique keys by owner, counts (MPI_Alltoall), keys (MPI_Alltoallv),
 *                    the owners' dedup of what they were asked for
 *          plain:    the same MPI_Alltoall + MPI_Alltoallv, same counts
 *   rows   exchange: the owners' row copies out of their tables, rows (MPI_Alltoallv)
 *          plain:    the same MPI_Alltoallv of rows
 *   grads  exchange: gradients (MPI_Alltoallv), the owners' sums in rank order
 *          plain:    the same MPI_Alltoallv of gradients
 * Next to these, the rows and gradients phases' own work timed piece by piece ("floor"): the same
 * MPI_Alltoallv of rows and of gradients with only the wire bytes (counts without this rank's own
 * entry, as the exchange sends them), the owners' row copies out of the tables (be->tables_gather of
 * every key asked of this rank) and their sums (be->rows_sum_owned), each alone. Rows + gradients
 * over that floor says what the exchange costs beyond the work it cannot skip; over the plain
 * side, what it costs next to moving the bytes alone (where MPI's transport is itself a memory
 * copy, as on one node, the gather and the sums are of the same size as the moves).
 * Both sides make four collectives. The plain side's counts include each rank's keys and rows for
 * itself (MPI copies them locally); the exchange moves those with its own copies instead. Neither
 * side includes the optimizer's update of the rows (optimizer compute, not exchange). In training
 * the plan runs during the previous step's compute; rows and grads are what a step waits for.
 * Buffers of both sides come from the same allocator (page-aligned) and are touched before timing.
 * One JSON line on rank 0; ENGRAM_BENCH_REPS sets the repetitions (default 40).
 *
 * Not here: correctness (tests/mpi/), single-rank compute speed (bench train).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "comm.h"
#include "rng.h"
#include "shard.h"
#include "train.h"

/* Seconds of one exchange's three phases (plan, rows forward, gradients back) and their total. */
typedef struct {
    double plan, fwd, bwd, total;
} Phases_;

/* Buffers of the plain side, allocated and touched once (neither side pays for page faults). */
typedef struct {
    int* counts_in;     // [P]
    int64_t *k_out, *k_in;   // [n_unique], [n_recv] keys
    float *r_out, *r_in;     // [n_recv, Dh], [n_unique, Dh] rows
} Plain_;

static void plain_init_(Plain_* b, const Exchange* ex) {
    const ExchangePlan* p = &ex->plan[ex->cur];
    b->counts_in = callocCheck(ex->comm->size, sizeof(int));
    // from the allocator of the exchange's own buffers (page-aligned, huge pages where allowed): a
    // copy between buffers misaligned to each other runs several times slower on some CPUs, and the
    // baseline should be the fast case
    b->k_out = callocPagesCheck((size_t)p->n_unique + 1, sizeof(int64_t));
    b->k_in = callocPagesCheck((size_t)p->n_recv + 1, sizeof(int64_t));
    b->r_out = callocPagesCheck(((size_t)p->n_recv + 1) * ex->Dh, sizeof(float));
    b->r_in = callocPagesCheck(((size_t)p->n_unique + 1) * ex->Dh, sizeof(float));
    memset(b->r_out, 1, ((size_t)p->n_recv + 1) * ex->Dh * sizeof(float));
    memset(b->r_in, 1, ((size_t)p->n_unique + 1) * ex->Dh * sizeof(float));
}

static void plain_free_(Plain_* b) { free(b->counts_in), free(b->k_out), free(b->k_in), free(b->r_out), free(b->r_in); }

/* Max over ranks of each phase, and of the total. */
static Phases_ max_over_ranks_(const Exchange* ex, double t0, double t1, double t2, double t3) {
    double v[4] = {t1 - t0, t2 - t1, t3 - t2, t3 - t0};
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_DOUBLE, MPI_MAX, ex->comm->comm));
    return (Phases_){v[0], v[1], v[2], v[3]};
}

/* The plain side: the same four collectives as one exchange, with the same counts (a rank's keys
 * and rows for itself included, which MPI copies locally; the exchange copies those itself), and
 * nothing around them: counts (MPI_Alltoall) + keys (MPI_Alltoallv) | rows | gradients. */
static Phases_ plain_once_(const Exchange* ex, Plain_* b) {
    const ExchangePlan* p = &ex->plan[ex->cur];
    MPI_Comm c = ex->comm->comm;
    mpiCheck(MPI_Barrier(c));
    double t0 = engram_now();
    mpiCheck(MPI_Alltoall(p->scount, 1, MPI_INT, b->counts_in, 1, MPI_INT, c));
    mpiCheck(MPI_Alltoallv(b->k_out, p->scount, p->sdispl, MPI_INT64_T, b->k_in, p->rcount, p->rdispl, MPI_INT64_T, c));
    double t1 = engram_now();
    mpiCheck(MPI_Alltoallv(b->r_out, p->rcount, p->rdispl, ex->row_t, b->r_in, p->scount, p->sdispl, ex->row_t, c));
    double t2 = engram_now();
    mpiCheck(MPI_Alltoallv(b->r_in, p->scount, p->sdispl, ex->row_t, b->r_out, p->rcount, p->rdispl, ex->row_t, c));
    return max_over_ranks_(ex, t0, t1, t2, engram_now());
}

/* The exchange side, for the last step's rows: exchange_plan (grouping by owner, counts, keys, the
 * owners' dedup), exchange_forward (the owners' row copies, rows), exchange_backward (gradients,
 * the owners' sums in rank order). Not the optimizer's update of the rows (optimizer compute). */
static Phases_ exchange_once_(Trainer* tr) {
    Exchange* ex = &tr->ex;
    mpiCheck(MPI_Barrier(ex->comm->comm));
    double t0 = engram_now();
    exchange_plan(ex, &tr->rows, &tr->tables);
    double t1 = engram_now();
    exchange_forward(ex, &tr->tables);
    double t2 = engram_now();
    exchange_backward(ex);
    return max_over_ranks_(ex, t0, t1, t2, engram_now());
}

/* The floor of the rows and gradients phases, piece by piece, each the max over ranks, into best
 * where lower: [0] wire-only rows, [1] the owners' gather, [2] wire-only gradients, [3] their sums. */
static void floor_once_(Trainer* tr, double best[4]) {
    Exchange* ex = &tr->ex;
    const ExchangePlan* p = &ex->plan[ex->cur];
    Backend* be = ex->be;
    const int me = ex->comm->rank;
    const size_t Dh = (size_t)ex->Dh;
    double t[5];
    mpiCheck(MPI_Barrier(ex->comm->comm));
    t[0] = engram_now();
    be->alltoallv(be, ex->rrows, ex->rbytes, ex->rboff, ex->srows, ex->sbytes, ex->sboff);
    t[1] = engram_now();
    be->tables_gather(be, &tr->tables, ex->rkeys, p->n_recv, ex->rrows);
    if (be->sync) be->sync(be);
    t[2] = engram_now();
    be->alltoallv(be, ex->srows, ex->sbytes, ex->sboff, ex->rrows, ex->rbytes, ex->rboff);
    t[3] = engram_now();
    const int64_t self_lo = p->rdispl[me], self_hi = self_lo + p->rcount[me];
    be->rows_sum_owned(be, ex->own_grads, ex->rrows, ex->srows + (size_t)p->sdispl[me] * Dh, self_lo, self_hi,
                       ex->own_inv, p->n_recv, ex->Dh);
    if (be->sync) be->sync(be);
    t[4] = engram_now();
    double v[4] = {t[1] - t[0], t[2] - t[1], t[3] - t[2], t[4] - t[3]};
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_DOUBLE, MPI_MAX, ex->comm->comm));
    for (int k = 0; k < 4; k++) best[k] = v[k] < best[k] ? v[k] : best[k];
}

static void keep_best_(Phases_* best, Phases_ t) {
    if (t.plan < best->plan) best->plan = t.plan;
    if (t.fwd < best->fwd) best->fwd = t.fwd;
    if (t.bwd < best->bwd) best->bwd = t.bwd;
    if (t.total < best->total) best->total = t.total;
}

void bench_fill_batch(int32_t* x, int32_t* y, int s, int T, int V, int first, int count) {
    for (int b = first; b < first + count; b++)
        for (int t = 0; t <= T; t++) {
            int32_t tok = (int32_t)(rng_u64(77, (uint64_t)s, (uint64_t)b * (T + 1) + t) % (uint64_t)V);
            if (t < T) x[(size_t)(b - first) * T + t] = tok;
            if (t > 0) y[(size_t)(b - first) * T + t - 1] = tok;
        }
}

const char* bench_mpi_start(int argc, char** argv, const char* usage, Comm* w, Config* c, Trainer* tr, int* first,
                            int* count, int* steps) {
    comm_init(w, &argc, &argv);
    const char *path = NULL, *v;
    *steps = 5;
    char** over = callocCheck(argc, sizeof(char*));
    int n_over = 0;
    for (int i = 1; i < argc; i++) {
        if ((v = cli_option(argc, argv, &i, "--steps"))) *steps = atoi(v);
        else if (strchr(argv[i], '=')) over[n_over++] = argv[i];
        else path = argv[i];
    }
    if (!path || *steps < 1) engram_fail("usage: %s", usage);
    cli_load_config(c, path, n_over, over);
    free(over);
    char err[512];
    if (shard_batch_refused(c->train.batch_size, w->size, path, err, sizeof err)) {   // every rank; rank 0 says why
        if (w->rank == 0) engram_fail("%s", err);
        exit(ENGRAM_EXIT_USAGE);
    }
    shard_batch_range(c->train.batch_size, w->size, w->rank, first, count);
    trainer_init(tr, c, *count, (uint64_t)c->run.seed, w);
    return path;
}

int bench_exchange_main(int argc, char** argv) {
    Comm w;
    Config c;
    Trainer tr;
    int first, count, steps;
    const char* path = bench_mpi_start(argc, argv, "mpirun -np P engram bench exchange CONFIG [key=value ...] [--steps N]",
                                       &w, &c, &tr, &first, &count, &steps);
    if (c.engram.layers.n == 0) engram_fail("%s: bench exchange needs Engram layers (engram.layers)", path);
    const int T = c.model.seq_len, V = c.model.vocab_size;
    size_t n = (size_t)count * T + 1;
    int32_t *x = mallocCheck(n * 4), *y = mallocCheck(n * 4), *xn = mallocCheck(n * 4), *yn = mallocCheck(n * 4);
    bench_fill_batch(x, y, 0, T, V, first, count);
    double t_step = 0, t_ex = 0, t_ar = 0;
    int64_t bytes = 0;
    for (int s = 0; s <= steps; s++) {   // step 0 warms up
        bench_fill_batch(xn, yn, s + 1, T, V, first, count);
        trainer_step(&tr, x, y, xn);
        if (s > 0) {
            t_step += tr.t_step, t_ex += tr.ex.st.seconds, t_ar += tr.t_allreduce;
            bytes += tr.ex.st.bytes_sent;
        }
        int32_t* t = x; x = xn; xn = t;
        t = y; y = yn; yn = t;
    }
    int reps = getenv("ENGRAM_BENCH_REPS") ? atoi(getenv("ENGRAM_BENCH_REPS")) : 40;
    Phases_ ex_best = {1e30, 1e30, 1e30, 1e30}, pl_best = ex_best;
    double fl_best[4] = {1e30, 1e30, 1e30, 1e30};   // floor_once_'s pieces
    Plain_ buf;
    plain_init_(&buf, &tr.ex);
    for (int r = 0; r < reps; r++) {   // the two sides alternate which goes first
        if (r % 2 == 0) keep_best_(&ex_best, exchange_once_(&tr)), keep_best_(&pl_best, plain_once_(&tr.ex, &buf));
        else keep_best_(&pl_best, plain_once_(&tr.ex, &buf)), keep_best_(&ex_best, exchange_once_(&tr));
        floor_once_(&tr, fl_best);
    }
    const double floor = fl_best[0] + fl_best[1] + fl_best[2] + fl_best[3];
    plain_free_(&buf);
    double sums[4] = {t_step / steps, t_ex / steps, t_ar / steps, (double)bytes / steps};
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, sums, 4, MPI_DOUBLE, MPI_SUM, w.comm));   // mean over ranks
    for (int i = 0; i < 4; i++) sums[i] /= w.size;
    if (w.rank == 0)
        printf("{\"bench\":\"exchange\",\"config\":\"%s\",\"P\":%d,\"steps\":%d,\"step_s\":%.4f,\"compute_s\":%.4f,"
               "\"exchange_s\":%.5f,\"allreduce_s\":%.5f,\"wire_bytes_per_rank\":%.0f,\"reps\":%d,"
               "\"exchange_alone_s\":%.6f,\"plain_alltoall_s\":%.6f,\"exchange_over_plain\":%.2f,"
               "\"plan_s\":%.6f,\"plain_plan_s\":%.6f,\"rows_s\":%.6f,\"plain_rows_s\":%.6f,"
               "\"grads_s\":%.6f,\"plain_grads_s\":%.6f,\"rows_over_plain\":%.2f,\"wire_rows_s\":%.4g,"
               "\"owners_gather_s\":%.4g,\"wire_grads_s\":%.4g,\"owners_sums_s\":%.4g,\"rows_over_floor\":%.2f}\n",
               path, w.size, steps, sums[0], sums[0] - sums[1] - sums[2], sums[1], sums[2], sums[3], reps, ex_best.total,
               pl_best.total, ex_best.total / pl_best.total, ex_best.plan, pl_best.plan, ex_best.fwd, pl_best.fwd,
               ex_best.bwd, pl_best.bwd, (ex_best.fwd + ex_best.bwd) / (pl_best.fwd + pl_best.bwd), fl_best[0],
               fl_best[1], fl_best[2], fl_best[3], (ex_best.fwd + ex_best.bwd) / floor);
    free(x), free(y), free(xn), free(yn);
    trainer_free(&tr);
    config_free(&c);
    comm_free(&w);
    return 0;
}
