/*
 * grad_sync.h — data-parallel reductions: dense gradients summed over ranks in buckets (walking the
 * tensor table), small double vectors (losses, MoE statistics), and the check that replicated
 * parameters are bit-identical on every rank.
 *
 * Not here: Engram row gradients (engram_exchange.c), expert-sharded gradients under expert
 * parallelism (expert_exchange.c; this file skips them when the table is sharded).
 */
#ifndef ENGRAM_GRAD_SYNC_H
#define ENGRAM_GRAD_SYNC_H

#include <stddef.h>

#include "backend.h"
#include "comm.h"
#include "tensors.h"

/* In place: grads (be's buffer) = Σ over be's ranks, for every replicated dense tensor, bucket by
 * bucket through be->allreduce_sum (tensors are contiguous in table order; a bucket closes once it
 * holds ≥ bucket_floats). Returns seconds. */
double grad_sync_dense(Backend* be, const TensorTable* tt, float* grads, size_t bucket_floats);
/* In place: v[n] = Σ over ranks. */
void grad_sync_sum_f64(const Comm* c, double* v, int n);
/* 1 when params [n] hash to the same value on every rank. */
int grad_sync_replicas_equal(const Comm* c, const float* params, size_t n);

#endif
