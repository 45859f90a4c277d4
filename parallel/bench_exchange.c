/*
 * bench_exchange.c — `mpirun -np P engram bench exchange CONFIG [key=value ...] [--steps N]`:
 * trains a config on random tokens (each rank its slice of the global batch, the next step's plan
 * prefetched) and reports, per rank 0's view, the step time split into compute / exchange /
 * all-reduce (in the step, so waiting for slower ranks counts), and one whole exchange of the last
 * step's rows timed alone after a barrier next to plain MPI_Alltoall/Alltoallv calls moving the
 * same bytes between the same ranks in the same run (counts, keys, rows forward, gradients back),
 * without the grouping, dedup, gathers and sums around them; and the same for the rows alone (the
 * part a training step waits for: the plan is prefetched during the previous step). One JSON line
 * on rank 0. ENGRAM_BENCH_REPS sets the repetitions (best of, default 20).
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

/* The same collectives as one exchange step (counts and keys too when with_plan), on buffers of the
 * same sizes. */
static double plain_alltoall_(const Exchange* ex, int reps, int with_plan) {
    const ExchangePlan* p = &ex->plan[ex->cur];
    const int P = ex->comm->size;
    int* tmp = mallocCheck(P * sizeof(int));
    int64_t* k_out = mallocCheck(((size_t)p->n_unique + 1) * sizeof(int64_t));
    int64_t* k_in = mallocCheck(((size_t)p->n_recv + 1) * sizeof(int64_t));
    float* r_out = callocCheck(((size_t)p->n_recv + 1) * ex->Dh, sizeof(float));
    float* r_in = callocCheck(((size_t)p->n_unique + 1) * ex->Dh, sizeof(float));
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        mpiCheck(MPI_Barrier(ex->comm->comm));
        double t0 = engram_now();
        if (with_plan) {
            mpiCheck(MPI_Alltoall(p->scount, 1, MPI_INT, tmp, 1, MPI_INT, ex->comm->comm));
            mpiCheck(MPI_Alltoallv(k_out, p->scount, p->sdispl, MPI_INT64_T, k_in, p->rcount, p->rdispl, MPI_INT64_T,
                                   ex->comm->comm));
        }
        mpiCheck(MPI_Alltoallv(r_out, p->rcount, p->rdispl, ex->row_t, r_in, p->scount, p->sdispl, ex->row_t, ex->comm->comm));
        mpiCheck(MPI_Alltoallv(r_in, p->scount, p->sdispl, ex->row_t, r_out, p->rcount, p->rdispl, ex->row_t, ex->comm->comm));
        double dt = engram_now() - t0;
        mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, ex->comm->comm));
        if (dt < best) best = dt;
    }
    free(tmp), free(k_out), free(k_in), free(r_out), free(r_in);
    return best;
}

/* One whole exchange for the last step's rows (plan, rows forward, gradients back), after a
 * barrier so that waiting for slower ranks' compute is not counted; max over ranks, best of reps. */
static double exchange_alone_(Trainer* tr, int reps, int with_plan) {
    Exchange* ex = &tr->ex;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        mpiCheck(MPI_Barrier(ex->comm->comm));
        double t0 = engram_now();
        if (with_plan) exchange_plan(ex, &tr->rows, &tr->tables);
        exchange_forward(ex, &tr->tables);
        exchange_backward(ex);
        double dt = engram_now() - t0;
        mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, ex->comm->comm));
        if (dt < best) best = dt;
    }
    return best;
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
    int reps = getenv("ENGRAM_BENCH_REPS") ? atoi(getenv("ENGRAM_BENCH_REPS")) : 20;
    double alone = exchange_alone_(&tr, reps, 1), plain = plain_alltoall_(&tr.ex, reps, 1);
    double rows = exchange_alone_(&tr, reps, 0), plain_rows = plain_alltoall_(&tr.ex, reps, 0);
    double sums[4] = {t_step / steps, t_ex / steps, t_ar / steps, (double)bytes / steps};
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, sums, 4, MPI_DOUBLE, MPI_SUM, w.comm));   // mean over ranks
    for (int i = 0; i < 4; i++) sums[i] /= w.size;
    if (w.rank == 0)
        printf("{\"bench\":\"exchange\",\"config\":\"%s\",\"P\":%d,\"steps\":%d,\"step_s\":%.4f,\"compute_s\":%.4f,"
               "\"exchange_s\":%.5f,\"allreduce_s\":%.5f,\"wire_bytes_per_rank\":%.0f,\"exchange_alone_s\":%.5f,"
               "\"plain_alltoall_s\":%.5f,\"exchange_over_plain\":%.2f,\"rows_only_s\":%.5f,\"plain_rows_s\":%.5f,"
               "\"rows_over_plain\":%.2f}\n",
               path, w.size, steps, sums[0], sums[0] - sums[1] - sums[2], sums[1], sums[2], sums[3], alone, plain,
               plain > 0 ? alone / plain : 0.0, rows, plain_rows, plain_rows > 0 ? rows / plain_rows : 0.0);
    free(x), free(y), free(xn), free(yn);
    trainer_free(&tr);
    config_free(&c);
    comm_free(&w);
    return 0;
}
