/*
 * accounting.c — ARCHITECTURE.md §7's parameter counts from the tensor table (accounting.h).
 */
#include "accounting.h"

#include <string.h>

void accounting_compute(const Config* c, const TensorTable* tt, Accounting* a) {
    memset(a, 0, sizeof *a);
    const int E = c->moe.layers.n > 0 ? c->moe.experts : 0, k = c->moe.top_k;
    for (int i = 0; i < tt->n; i++) {
        const TensorInfo* t = &tt->t[i];
        a->P_tot += t->numel;
        if (t->group == OPT_TABLE) {
            a->table_params += t->numel;
            a->engram_rows += t->shape[0];
        } else if (t->shard == SHARD_EXPERTS && E > 0) {
            // [E, ...]: one routed expert holds numel/E of it; E−k of them are idle for a token
            a->expert_inactive += t->numel / E * (E > k ? E - k : 0);
        }
    }
    a->P_act = a->P_tot - a->table_params - a->expert_inactive;
    a->P_sparse = a->P_tot - a->P_act;
    a->rho_actual = a->P_sparse > 0 ? (double)a->expert_inactive / (double)a->P_sparse : 1.0;
    a->rho_target = c->sweep.rhos.n == 1 ? c->sweep.rhos.v[0] : a->rho_actual;
    a->experts = E;
}
