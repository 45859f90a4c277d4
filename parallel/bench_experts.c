/*
 * bench_experts.c — `mpirun -np P engram bench experts CONFIG [key=value ...] [--steps N]`: trains a
 * config on random tokens (each rank its slice of the global batch) at the config's
 * parallel.expert_parallel and reports the step time (per-rank mean over the timed steps, then the
 * slowest rank), the expert exchange's share and wire bytes, and the memory each rank holds for
 * parameters, gradients and Adam moments (the dense flat buffers; routed experts at their sharded
 * size), smallest and largest over ranks. One JSON line on rank 0. Run it at EP = 1 and EP = P on
 * the same config to see what sharding the experts buys (docs/parallel.md).
 *
 * Not here: correctness (tests/mpi/expert_parallel_equals_replicated.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "comm.h"
#include "train.h"

int bench_experts_main(int argc, char** argv) {
    Comm w;
    Config c;
    Trainer tr;
    int first, count, steps;
    const char* path = bench_mpi_start(argc, argv, "mpirun -np P engram bench experts CONFIG [key=value ...] [--steps N]",
                                       &w, &c, &tr, &first, &count, &steps);
    if (c.moe.layers.n == 0) engram_fail("%s: bench experts needs MoE layers (moe.layers)", path);
    const int T = c.model.seq_len, V = c.model.vocab_size;
    size_t n = (size_t)count * T + 1;
    int32_t *x = mallocCheck(n * 4), *y = mallocCheck(n * 4);
    double t_step = 0, t_x = 0, bytes = 0, loss = 0;
    for (int s = 0; s <= steps; s++) {   // step 0 warms up
        bench_fill_batch(x, y, s, T, V, first, count);
        loss = trainer_step(&tr, x, y, NULL);
        if (s > 0) t_step += tr.t_step, t_x += tr.t_experts, bytes += tr.ep > 1 ? (double)tr.xx.st.bytes_sent : 0.0;
    }
    // per rank: step, expert exchange, wire bytes per step; memory of params, grads, m, v and the experts' part
    const TensorTable* tt = &tr.model.tt;
    double expert_floats = 0;
    for (int i = 0; i < tt->n; i++) expert_floats += tt->t[i].shard == SHARD_EXPERTS ? (double)tt->t[i].local_numel : 0.0;
    double mine[5] = {t_step / steps, t_x / steps, bytes / steps, 4.0 * (double)tt->dense_numel, 4.0 * expert_floats};
    double hi[5], lo[5];
    mpiCheck(MPI_Allreduce(mine, hi, 5, MPI_DOUBLE, MPI_MAX, w.comm));
    mpiCheck(MPI_Allreduce(mine, lo, 5, MPI_DOUBLE, MPI_MIN, w.comm));
    if (w.rank == 0)
        printf("{\"bench\":\"experts\",\"config\":\"%s\",\"P\":%d,\"EP\":%d,\"experts\":%d,\"top_k\":%d,\"moe_layers\":%d,"
               "\"steps\":%d,\"step_s\":%.4f,\"expert_exchange_s\":%.4f,\"expert_wire_bytes_per_step\":%.0f,"
               "\"param_bytes_per_rank\":[%.0f,%.0f],\"param_grad_optim_bytes_per_rank\":[%.0f,%.0f],"
               "\"routed_expert_param_bytes_per_rank\":[%.0f,%.0f],\"last_loss\":%.4f}\n",
               path, w.size, tr.ep, c.moe.experts, c.moe.top_k, c.moe.layers.n, steps, hi[0], hi[1], hi[2], lo[3], hi[3],
               4 * lo[3], 4 * hi[3], lo[4], hi[4], loss);
    free(x), free(y);
    trainer_free(&tr);
    config_free(&c);
    comm_free(&w);
    return 0;
}
