/*
 * sweep.c — ρ-allocation planning (sweep.h).
 *
 * P_tot, P_act and the inactive expert parameters are linear in E (each routed expert adds its
 * SwiGLU weights; the router adds a row), so two probes at E = k and E = k + 1 give the slopes:
 *   n·pe = inactive(k+1) − inactive(k)     parameters of one routed expert, all MoE layers
 *   dr   = P_act(k+1) − P_act(k)           the router's growth per expert
 * ρ < 1:  (E − k)·n·pe = ρ·(P_tot − P_act(E)), P_act(E) = P_act(k) + (E − k)·dr
 *         ⇒ E = k + ρ·(P_tot − P_act(k)) / (n·pe + ρ·dr), rounded to the nearest integer; the rest
 *         of the budget goes to tables, split equally over Engram layers and n-gram orders, each
 *         order's base = floor(share / (H·Dh)), then the primes (so the total lands slightly above).
 * ρ = 1:  no Engram layers; E = k + (P_tot − P_tot(k)) / (n·pe + dr), rounded.
 */
#include "sweep.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "ngram_hash.h"
#include "tensors.h"

/* Overrides that make the sweep config into a point's: E, bases (or no Engram), its own ρ. */
static void point_overrides_(const Config* c, SweepPoint* p) {
    p->n_overrides = 0;
    snprintf(p->overrides[p->n_overrides++], sizeof p->overrides[0], "moe.experts=%d", p->experts);
    if (p->base > 0) {
        char* o = p->overrides[p->n_overrides++];
        int w = snprintf(o, sizeof p->overrides[0], "engram.vocab_bases=[");
        for (int i = 0; i < c->engram.max_ngram - 1; i++)
            w += snprintf(o + w, sizeof p->overrides[0] - (size_t)w, "%s%lld", i ? "," : "", (long long)p->base);
        snprintf(o + w, sizeof p->overrides[0] - (size_t)w, "]");
    } else {
        snprintf(p->overrides[p->n_overrides++], sizeof p->overrides[0], "engram.layers=[]");
    }
    snprintf(p->overrides[p->n_overrides++], sizeof p->overrides[0], "sweep.rhos=[%.17g]", p->rho_target);
}

int sweep_point_config(const Config* c, const SweepPoint* p, Config* out, char* err, size_t errlen) {
    char* text = config_to_string(c);
    char* over[4];
    for (int i = 0; i < p->n_overrides; i++) over[i] = (char*)p->overrides[i];
    char where[300];
    snprintf(where, sizeof where, "%s (sweep point %s)", c->path && c->path[0] ? c->path : "config", p->name);
    int rc = config_load_string(out, text, where, p->n_overrides, over, err, errlen);
    free(text);
    return rc;
}

void sweep_account(const Config* pc, Accounting* a) {
    NgramHash nh;
    memset(&nh, 0, sizeof nh);
    if (pc->engram.layers.n > 0)   // the row counts depend on the bases and layers, not on V'
        ngram_hash_init(&nh, pc->engram.layers.v, pc->engram.layers.n, pc->engram.max_ngram, pc->engram.heads_per_ngram,
                        pc->engram.vocab_bases.v, pc->model.vocab_size, 0, (uint64_t)pc->engram.seed,
                        (EngramFlavour)pc->engram.flavour);
    TensorTable tt;
    tensors_build(&tt, pc, nh.rows);
    accounting_compute(pc, &tt, a);
    tensors_free(&tt);
    if (pc->engram.layers.n > 0) ngram_hash_free(&nh);
}

/* Accounting of the point (E, base): its config's tensor table, tables sized by the primes. */
static int count_(const Config* c, SweepPoint* p, char* err, size_t errlen) {
    point_overrides_(c, p);
    Config pc;
    if (sweep_point_config(c, p, &pc, err, errlen)) return -1;
    sweep_account(&pc, &p->acc);
    config_free(&pc);
    return 0;
}

static int plan_one_(const Config* c, double rho, SweepPoint* p, char* err, size_t errlen) {
    const int k = c->moe.top_k, no_engram = rho >= 1.0 || c->engram.layers.n == 0;
    const double target = (double)c->sweep.total_params;
    SweepPoint a = {.rho_target = rho, .experts = k, .base = no_engram ? 0 : 2};
    SweepPoint b = a;
    b.experts = k + 1;
    if (count_(c, &a, err, errlen) || count_(c, &b, err, errlen)) return -1;
    const double npe = (double)(b.acc.expert_inactive - a.acc.expert_inactive);
    const double dr = (double)(b.acc.P_act - a.acc.P_act);
    const double act_k = (double)a.acc.P_act;
    *p = a;
    if (no_engram) {
        double base_tot = (double)(a.acc.P_tot - a.acc.table_params);
        p->experts = k + (int)lround((target - base_tot) / (npe + dr));
    } else {
        p->experts = k + (int)lround(rho * (target - act_k) / (npe + rho * dr));
    }
    if (p->experts < k) p->experts = k;
    if (!no_engram) {
        const int E = p->experts;
        double budget = target - (act_k + (E - k) * dr) - (E - k) * npe;
        double share = budget / ((double)c->engram.layers.n * (c->engram.max_ngram - 1));
        p->base = (int64_t)floor(share / ((double)c->engram.heads_per_ngram * c->engram.head_dim));
        if (p->base < 2) {
            snprintf(err, errlen, "%s: sweep.total_params: %lld leaves no room for Engram tables at rho = %g (the "
                     "backbone and experts take %.0f); raise sweep.total_params", c->path, (long long)c->sweep.total_params,
                     rho, act_k + (E - k) * (dr + npe));
            return -1;
        }
    }
    snprintf(p->name, sizeof p->name, "rho_%g", rho);
    return count_(c, p, err, errlen);
}

int sweep_plan(const Config* c, SweepPoint** out, char* err, size_t errlen) {
    const char* where = c->path && c->path[0] ? c->path : "config";
    if (c->sweep.rhos.n == 0) {
        snprintf(err, errlen, "%s: sweep.rhos: a sweep needs at least one rho (got []); e.g. sweep.rhos=[0,0.5,1]", where);
        return -1;
    }
    if (c->moe.layers.n == 0) {
        snprintf(err, errlen, "%s: moe.layers: a rho sweep trades routed experts for Engram rows, so it needs MoE layers "
                 "(got [])", where);
        return -1;
    }
    const int n = c->sweep.rhos.n;
    SweepPoint* pts = callocCheck(n, sizeof(SweepPoint));
    for (int i = 0; i < n; i++)
        if (plan_one_(c, c->sweep.rhos.v[i], &pts[i], err, errlen)) {
            free(pts);
            return -1;
        }
    double act_sum = 0;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (pts[i].rho_target < 1.0) act_sum += (double)pts[i].acc.P_act, m++;
    for (int i = 0; i < n; i++) {
        pts[i].dev_P_tot = (double)pts[i].acc.P_tot / (double)c->sweep.total_params - 1.0;
        pts[i].dev_P_act = m ? (double)pts[i].acc.P_act / (act_sum / m) - 1.0 : 0.0;
    }
    *out = pts;
    return n;
}
