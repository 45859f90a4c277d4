/*
 * train.h — one training step as a library function: hash the batch, gather the Engram rows it
 * needs, forward, backward, reduce row gradients per unique row, clip by the global norm, AdamW
 * on dense tensors and lazy Adam on the gathered rows. Used by tests, benchmarks and (with the
 * parallel hooks of later issues) `engram train`.
 *
 * With a Comm (P ranks, data-parallel) the rows come through the all-to-all exchange, dense
 * gradients and MoE statistics are summed over ranks, and each owner updates its rows; with
 * parallel.expert_parallel > 1 the routed experts are sharded and their rows move through the
 * expert exchange (parallel/expert_exchange.h); without one
 * (NULL) the same step runs on one process with a local gather. This file is where src/ meets
 * parallel/ (ARCHITECTURE.md §1).
 */
#ifndef ENGRAM_TRAIN_H
#define ENGRAM_TRAIN_H

#include <stdint.h>

#include "comm.h"
#include "engram_exchange.h"
#include "engram_rows.h"
#include "expert_exchange.h"
#include "model.h"

typedef struct {
    const Comm* comm;        // NULL: one process
    Backend* be;             // the model's backend: dense ops, the gradient all-reduce, Adam, Σg²
    Backend own_be;          // be when the caller named none: the CPU one (MPI collectives with comm)
    Exchange ex;             // with comm
    ExpertExchange xx;       // with comm and parallel.expert_parallel > 1 (and MoE layers)
    int ep;                  // expert-parallel group size in use (1: experts replicated)
    double n_tok_glob;       // tokens per step over all ranks
    Model model;
    const int32_t* lookup;   // [V] original → compressed id (Compression.lookup); NULL = identity
    EngramTables tables;
    RowSet rows;             // rows of the current step
    RowSet rows_next;        // rows of the prefetched next step
    int32_t* x_next;         // [B,T] the prefetched batch (checked against the next step's)
    int prefetched;
    int64_t* cids;           // [B,T] compressed ids of the current batch
    float* e;                // [n_engram, B,T,Ein] gathered rows (backend memory)
    float* de;               // [n_engram, B,T,Ein] their gradients (backend memory)
    float** e_ptr;           // [n_engram] → e per layer
    float** de_ptr;
    float* uniq;             // [max unique, Dh] unique rows, then their gradients (one process; backend memory)
    int64_t* inv_d;          // [n_layers·n_pos] rows.inverse on the device, this step's
    int64_t* keys_d;         // [n_unique] rows.keys on the device (one process), this step's
    int64_t step;            // optimizer steps taken (Adam's t after the next step is step+1)
    // figures of the last step
    double loss, ce, aux, grad_norm, lr;
    long dropped;            // assignments dropped by capacity, all ranks
    long dispatched;         // assignments sent to experts (kept), all ranks
    double t_exchange, t_allreduce, t_step;   // seconds of the last step
    double t_experts;        // seconds of the last step in the expert exchange (this rank)
    int skipped;             // 1 if the last step was skipped for non-finite values
    long bad_steps;          // steps skipped in total
} Trainer;

/* B = this rank's sequences per step; comm NULL for one process. Initialises parameters and tables
 * from seed (the same values at any P). */
void trainer_init(Trainer* tr, const Config* c, int B, uint64_t seed, const Comm* comm);
/* The same on backend be (model_init_on), whose collectives run over comm's ranks; be NULL (what
 * trainer_init passes) opens the CPU backend, freed by trainer_free. */
void trainer_init_on(Trainer* tr, const Config* c, int B, uint64_t seed, const Comm* comm, Backend* be);
void trainer_free(Trainer* tr);
/* One optimizer step on this rank's x, y [B,T]; returns the global loss (CE mean over all ranks'
 * tokens + aux) before the update. All ranks call it together. x_next (may be NULL) is the next
 * step's batch: its hashing, dedup and the counts/keys exchange are posted during this step and
 * progress while it computes; its rows are read at the start of the next step, after this step's
 * update, so results are exactly those without it. The next call must then pass x = x_next. */
double trainer_step(Trainer* tr, const int32_t* x, const int32_t* y, const int32_t* x_next);
/* Forward only: loss of x, y [B,T] (CE mean + aux), no update. */
double trainer_loss(Trainer* tr, const int32_t* x, const int32_t* y);

#endif
