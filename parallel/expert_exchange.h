/*
 * expert_exchange.h — expert parallelism (ARCHITECTURE.md §4, docs/parallel.md). The routed experts
 * of every MoE layer are split over an expert-parallel group of EP consecutive ranks
 * {g·EP, ..., g·EP+EP−1}: the rank at position p = rank mod EP holds experts
 * [p·ceil(E/EP), (p+1)·ceil(E/EP)) ∩ [0, E) (shard.h; the last positions may hold none). Every rank
 * routes its own tokens; its packed expert rows (src/moe.c) travel to their owners in its group:
 *   forward:  rows per expert (MPI_Alltoall, ceil(E/EP) ints per peer) → rows (MPI_Alltoallv) →
 *             owners regroup them by expert (source rank, then the sender's order) and run them →
 *             outputs back along the same split reversed (MPI_Alltoallv)
 *   backward: output gradients along the forward's split (its counts are kept per layer), input
 *             gradients back
 * Expert weight gradients are then summed over the ranks holding the same experts (the same
 * position in every group), not over the world. A rank's rows for itself are copied by MPI and are
 * not counted as wire bytes.
 *
 * The counts travel with MPI on the host (control); the rows are the backend's memory and move with
 * the backend's alltoallv over the group (be->group; where a backend has none, over the world with zero
 * bytes to ranks outside the group), regrouped by be->rows_expand
 * through the permutation (on the device once per layer and forward).
 *
 * Not here: the experts' math (src/moe.c sees this file only through its MoeRoute hook), dense
 * gradients (grad_sync.c).
 */
#ifndef ENGRAM_EXPERT_EXCHANGE_H
#define ENGRAM_EXPERT_EXCHANGE_H

#include <stdint.h>

#include "backend.h"
#include "comm.h"
#include "moe.h"
#include "tensors.h"

typedef struct {
    int64_t dispatched;   // expert rows this rank's tokens sent (kept assignments, all MoE layers)
    int64_t remote;       // of those, to experts held by another rank
    int64_t served;       // rows other ranks sent to this rank's experts
    int64_t bytes_sent;   // wire bytes: counts, rows out and back, forward and backward
    int64_t bytes_recv;
    double seconds;       // time inside the exchange calls
} ExpertStats;

/* One MoE layer's split, made by its forward and reused by its backward. */
typedef struct {
    int *scount, *sdispl;   // [EP] rows to each group peer (contiguous in the packed order)
    int *rcount, *rdispl;   // [EP] rows from each group peer (source-ordered staging buffer)
    int *sexp, *rexp;       // [EP·epr] rows per (peer, expert slot of the receiver)
    long* roff;             // [epr+1] received rows per local expert, prefix sums
    int64_t R, Rr;          // rows sent (this rank's kept assignments), rows received
    int64_t* perm;          // [Rr] expert-ordered row i sits at perm[i] of the staging buffer
    int64_t* iperm;         // [Rr] its inverse: staged row j is expert-ordered row iperm[j]
    const int64_t *perm_d, *iperm_d;   // the two on the device (themselves on a host backend)
    size_t *sbytes, *sboff, *rbytes, *rboff;   // [world] scount / sdispl / rcount / rdispl in bytes, at
                                               // the peers' world ranks (0 elsewhere): be->alltoallv's
    float *xr, *gr;         // [Rr,D] forward rows / backward rows, in expert order (backend memory)
    float* stage;           // [Rr,D] source-ordered staging (backend memory)
    size_t cap;             // rows the buffers have room for
} ExpertSlot;

typedef struct {
    const Comm* world;
    Backend* be;              // the rows' memory; its world is world's ranks
    Backend* gbe;             // be over this group's EP ranks (be->group), or NULL: be itself moves
                              // the rows, over the world with zero bytes outside the group
    Backend* xbe;             // the one that moves rows: gbe, else be
    int xbase;                // group peer q is rank xbase + q of xbe
    int ep, pos, group;       // group size, this rank's position in its group, the group's index
    MPI_Comm group_comm;      // the EP ranks of this group
    MPI_Comm replica_comm;    // the ranks holding the same experts (one per group)
    int E, D, epr;            // experts, model width, experts per position ceil(E/EP)
    MPI_Datatype row_t;       // D floats
    MoeRoute route;           // the hook handed to the model
    int n_slots;              // MoE layers
    ExpertSlot* slot;         // [n_slots]
    ExpertStats st;           // figures since the last expert_exchange_reset
} ExpertExchange;

/* Collective over world: the group and replica communicators. ep must divide world->size; be (the
 * model's backend) is opened over world's ranks. */
void expert_exchange_init(ExpertExchange* x, const Comm* world, Backend* be, int ep, int E, int D, int n_moe_layers);
void expert_exchange_free(ExpertExchange* x);
/* Zero the figures (at the start of a step). */
void expert_exchange_reset(ExpertExchange* x);
/* In place: the expert-sharded gradients of tt (be's memory) summed over the replicas of this
 * rank's experts (MPI over the replica communicator, through a host copy on a device backend).
 * Returns seconds. */
double expert_grad_sync(Backend* be, const ExpertExchange* x, const TensorTable* tt, float* grads);
/* Σ g² over the expert-sharded tensors (be->sumsq), every expert counted once: this rank's part
 * summed over its group. */
double expert_sumsq(Backend* be, const ExpertExchange* x, const TensorTable* tt, const float* grads);

/* A dense buffer in tt's layout (params, grads, m or v) at its logical layout — every tensor whole,
 * in table order, Σ numel floats (returned) — into out on world rank 0 (others may pass NULL): the
 * experts come from the first group. x NULL (experts replicated): a copy. Collective over world. */
size_t expert_gather_dense(const ExpertExchange* x, const TensorTable* tt, const float* buf, float* out);

#endif
