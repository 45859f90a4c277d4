/*
 * engram_exchange.h — how an Engram row gets to the rank that needs it, and its gradient back
 * (ARCHITECTURE.md §4). Tables are split into P contiguous row blocks (owner = row / ceil(rows/P)).
 * Each step, every rank:
 *   plan:     groups its unique (layer,row) keys by owner → per-owner counts (MPI_Alltoall) →
 *             keys (MPI_Alltoallv); owners dedup what they were asked for
 *   forward:  owners copy the rows → rows back (be->alltoallv) → the asker's unique-row buffer
 *   backward: unique-row gradients along the same split tables in reverse; each owner sums the
 *             contributions for a row in rank order, ready for the sparse optimizer
 * One exchange per step covers every Engram layer. A rank's requests to itself skip MPI: its keys,
 * rows and gradients are copied (or summed) straight between its own buffers, at their place in
 * rank order, and are not counted as wire bytes.
 *
 * The plan (grouping, counts, keys, the owners' dedup) is host work and MPI (control); the rows,
 * their gradients and the tables are the backend's memory: the owners' gather (be->tables_gather),
 * the moves of rows and gradients (be->alltoallv: MPI_Alltoallv on the CPU, NCCL on a GPU) and the
 * owners' sums (be->rows_sum_owned) are backend ops, and the plan's keys and indices go to the
 * device once per step (on the CPU they are the plan's own arrays: nothing is copied).
 *
 * Not here: hashing and dedup of the local batch (src/engram_rows.c), the optimizer (src/optim.c).
 */
#ifndef ENGRAM_ENGRAM_EXCHANGE_H
#define ENGRAM_ENGRAM_EXCHANGE_H

#include <stdint.h>

#include "backend.h"
#include "comm.h"
#include "engram_rows.h"

typedef struct {
    int64_t lookups;        // (layer,row) lookups of this rank's batch, before dedup
    int64_t unique;         // unique keys this rank asked for
    int64_t remote;         // of those, owned by another rank
    int64_t served;         // keys other ranks asked this rank for (remote askers only)
    int64_t bytes_sent;     // wire bytes this step: counts, keys, rows and gradients to other ranks
    int64_t bytes_recv;
    double seconds;         // time inside the exchange calls this step
} ExchangeStats;

/* Who asks whom for which rows, for one step. Built in stages so that the next step's plan can be
 * posted with nonblocking MPI while this step computes (ARCHITECTURE.md §2). */
typedef struct {
    int stage;              // 0 empty, 1 counts posted, 2 keys posted, 3 ready
    MPI_Request req;
    int64_t n_unique;       // this rank's unique keys
    int64_t lookups;        // lookups before dedup
    int *scount, *sdispl;   // [P] keys this rank asks each owner for
    int *rcount, *rdispl;   // [P] keys each rank asks this rank for
    int64_t n_recv;         // Σ rcount
    int64_t* skeys;         // [n_unique] unique keys grouped by owner (key order within an owner)
    int64_t* spos;          // [n_unique] unique key u of the RowSet is skeys[spos[u]]
    int64_t* rkeys;         // [n_recv] keys asked of this rank, grouped by asking rank
    int64_t n_own;          // distinct keys among rkeys: the rows this rank updates
    int64_t* own_keys;      // [n_own] in order of first request (deterministic)
    int64_t* own_inv;       // [n_recv] index into own_keys
    int *swire, *rwire;     // [P] scount / rcount with this rank's own entry 0: what MPI moves
    int64_t cap_unique, cap_recv;   // capacities of the per-step arrays (kept from step to step)
} ExchangePlan;

typedef struct {
    const Comm* comm;
    Backend* be;            // the rows' and the tables' memory; its world is comm's ranks
    int Dh;
    MPI_Datatype row_t;     // Dh floats
    ExchangePlan plan[2];   // this step's and the next step's
    int cur;                // plan[cur] is this step's
    const EngramTables* tab;   // the local tables (row ranges), set by the first plan
    int n_slotted;          // layers of slot (the tables may be freed before the exchange)
    uint32_t** slot;        // [n_layers] → [local rows] the owners' dedup: the row's place in
                            // own_keys, valid only where own_keys there holds the row's key
    int64_t* run;           // [n_layers·P + 1] scratch of the grouping: where each owner's keys of
                            // each layer start among the sorted unique keys
    // be's memory, sized for this step's plan (kept from step to step)
    float* srows;           // [n_unique, Dh] rows (forward) / gradients (backward) in skeys order:
                            // the model reads and writes them in place through spos
    float* rrows;           // [n_recv, Dh] rows served / gradient contributions received
    float* own_grads;       // [n_own, Dh] summed in rank order
    size_t cap_srows, cap_rrows, cap_own;   // their room in rows
    // this step's plan on the device (plan[cur]'s arrays themselves on a host backend)
    const int64_t* spos;    // [n_unique] = plan[cur].spos
    const int64_t* rkeys;   // [n_recv] = plan[cur].rkeys
    const int64_t* own_inv; // [n_recv] = plan[cur].own_inv
    int64_t n_own;          // = plan[cur].n_own, for the optimizer
    const int64_t* own_keys;   // [n_own] = plan[cur].own_keys
    size_t *sbytes, *sboff; // [P] bytes of rows: swire / sdispl times Dh floats (be->alltoallv's counts)
    size_t *rbytes, *rboff; // [P] the same of rwire / rdispl
    ExchangeStats st;       // figures of this step
} Exchange;

/* be: the backend the tables live on, opened over comm's ranks. */
void exchange_init(Exchange* ex, const Comm* comm, Backend* be, int Dh);
void exchange_free(Exchange* ex);
/* Blocking: this step's counts and keys for the rows of rs (its keys sorted, as rowset_build leaves
 * them; the tables give the owners). */
void exchange_plan(Exchange* ex, const RowSet* rs, const EngramTables* t);
/* Nonblocking: post the NEXT step's counts (keys follow from exchange_progress). */
void exchange_plan_next(Exchange* ex, const RowSet* rs, const EngramTables* t);
/* Advance the next step's plan if its messages arrived; cheap, call it between pieces of work. */
void exchange_progress(Exchange* ex);
/* Finish the next step's plan and make it this step's (at the start of that step). */
void exchange_use_next(Exchange* ex);
/* Rows of every unique key into ex->srows (key u at row ex->spos[u]). Reads the tables (t's memory
 * is ex->be's) now: call it after the previous step's update, so prefetching never makes rows
 * stale. */
void exchange_forward(Exchange* ex, const EngramTables* t);
/* The gradients the caller left in ex->srows (same positions) → own_keys / own_grads on the owners. */
void exchange_backward(Exchange* ex);

#endif
