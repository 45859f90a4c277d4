/*
 * accounting.h — the parameter accounting of ARCHITECTURE.md §7 for one config: total, active and
 * sparse parameters and the share ρ of the sparse budget held by routed experts (the rest is
 * Engram table rows). Checkpoints record it under /accounting and `engram inspect` prints it;
 * definitions in docs/checkpoint.md.
 *
 * Not here: planning a sweep (choosing E and table sizes for a target ρ) — the [Sweeps] issue.
 */
#ifndef ENGRAM_ACCOUNTING_H
#define ENGRAM_ACCOUNTING_H

#include <stdint.h>

#include "config.h"
#include "tensors.h"

typedef struct {
    int64_t P_tot;            // every parameter, Engram table rows included
    int64_t P_act;            // P_tot − table params − (E−k)·(one routed expert) per MoE layer
    int64_t P_sparse;         // P_tot − P_act
    int64_t table_params;     // Σ rows·Dh over Engram layers
    int64_t expert_inactive;  // routed-expert params beyond the k active ones, all MoE layers
    double rho_actual;        // expert_inactive / P_sparse (1 when P_sparse = 0)
    double rho_target;        // sweep.rhos[0] when the config names exactly one ρ, else rho_actual
    int experts;              // E routed experts per MoE layer (0 without MoE layers)
    int64_t engram_rows;      // Σ rows over Engram layers
} Accounting;

void accounting_compute(const Config* c, const TensorTable* tt, Accounting* a);

#endif
