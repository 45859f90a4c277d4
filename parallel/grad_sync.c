/*
 * grad_sync.c — all-reduces of the data-parallel step (grad_sync.h): dense gradients through the
 * backend's all-reduce (MPI on the CPU, NCCL on the GPU), small host vectors and checks over MPI.
 */
#include "grad_sync.h"

#include <string.h>

double grad_sync_dense(Backend* be, const TensorTable* tt, float* grads, size_t bucket_floats) {
    double t0 = engram_now();
    size_t start = 0, len = 0;   // the open bucket: grads[start, start+len)
    for (int i = 0; i < tt->n; i++) {
        const TensorInfo* t = &tt->t[i];
        if (t->group == OPT_TABLE) continue;   // tables are row-sharded: their gradients go to owners
        if (t->shard == SHARD_EXPERTS && tt->ep > 1) {   // summed over their replicas (expert_exchange.c)
            if (len > 0) be->allreduce_sum(be, grads + start, len);   // closed here on every rank, even
            len = 0;                                                // one holding no experts
            continue;
        }
        if (len > 0 && start + len != t->offset) {   // not contiguous: close the bucket
            be->allreduce_sum(be, grads + start, len);
            len = 0;
        }
        if (len == 0) start = t->offset;
        len += (size_t)t->local_numel;
        if (len >= bucket_floats) {
            be->allreduce_sum(be, grads + start, len);
            len = 0;
        }
    }
    if (len > 0) be->allreduce_sum(be, grads + start, len);
    return engram_now() - t0;
}

void grad_sync_sum_f64(const Comm* c, double* v, int n) {
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, c->comm));
}

int grad_sync_replicas_equal(const Comm* c, const float* params, size_t n) {
    uint64_t h = 1469598103934665603ULL;   // FNV-1a over the bytes
    const unsigned char* b = (const unsigned char*)params;
    for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ULL;
    uint64_t lo = h, hi = h;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, c->comm));
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, c->comm));
    return lo == hi;
}
