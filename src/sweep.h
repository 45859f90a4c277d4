/*
 * sweep.h — ρ-allocation planning (ARCHITECTURE.md §7). For a backbone, top-k and a total budget
 * P_tot, each ρ gives a number of routed experts E and Engram table bases (then primes): ρ of the
 * sparse budget P_sparse = P_tot − P_act is held by routed experts beyond the k active ones, 1 − ρ by
 * Engram table rows. Every count comes from the tensor table of the point's config (the same table
 * the model, optimizer and checkpoints walk), so the plan is exactly what training will build.
 *
 * Not here: launching the runs or reading their results (cmd_sweep.c).
 */
#ifndef ENGRAM_SWEEP_H
#define ENGRAM_SWEEP_H

#include <stdint.h>

#include "accounting.h"
#include "config.h"

typedef struct {
    double rho_target;
    int experts;               // E routed experts per MoE layer
    int64_t base;              // Engram vocab base per order (0 at ρ = 1: no Engram layers)
    Accounting acc;            // of the point's config
    double dev_P_tot;          // P_tot / target − 1
    double dev_P_act;          // P_act / (mean P_act over the points with ρ < 1) − 1
    char name[32];             // "rho_0.25"
    char overrides[4][128];    // key=value lines that turn the sweep config into this point's
    int n_overrides;
} SweepPoint;

/* Plan every ρ of c->sweep.rhos. Returns the number of points (*out malloc'd), or −1 with one line
 * in err (no MoE layers, a budget too small for a ρ, ...). */
int sweep_plan(const Config* c, SweepPoint** out, char* err, size_t errlen);

/* Accounting of any config from its own tensor table (tables sized by their primes). */
void sweep_account(const Config* c, Accounting* a);

/* The point's config: c with the point's overrides applied. 0 or −1 with err. */
int sweep_point_config(const Config* c, const SweepPoint* p, Config* out, char* err, size_t errlen);

#endif
