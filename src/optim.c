/*
 * optim.c — schedule, clipping, AdamW and the lazy Adam of Engram rows (optim.h).
 */
#include "optim.h"

#include <math.h>

#include "common.h"

double optim_lr(const Config* c, int s) {
    const double lr = c->train.lr, w = c->train.warmup_steps;
    if (s < w) return lr * (s + 1) / w;
    if (c->train.lr_decay == LR_DECAY_CONSTANT) return lr;
    double denom = c->train.steps - 1 - w;
    double frac = denom > 0 ? (s - w) / denom : 0.0;
    if (frac > 1.0) frac = 1.0;
    double mn = c->train.min_lr_ratio * lr;
    return mn + (lr - mn) * 0.5 * (1.0 + cos(M_PI * frac));
}

double optim_sumsq(const float* g, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

double optim_clip_scale(double norm, double clip) {
    if (clip <= 0) return 1.0;
    double k = clip / (norm + 1e-6);
    return k < 1.0 ? k : 1.0;
}

/* p, m, v of n elements: one Adam(W) update. */
static void adam_update_(float* p, const float* g, float* m, float* v, size_t n, double lr, double wd,
                         double b1, double b2, double eps, int64_t t, double scale) {
    const double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        double gi = (double)g[i] * scale;
        double mi = b1 * m[i] + (1.0 - b1) * gi;
        double vi = b2 * v[i] + (1.0 - b2) * gi * gi;
        m[i] = (float)mi;
        v[i] = (float)vi;
        double pi = (double)p[i] * (1.0 - lr * wd);   // decoupled decay (wd = 0 where none)
        p[i] = (float)(pi - lr * (mi / bc1) / (sqrt(vi / bc2) + eps));
    }
}

void optim_adamw(const TensorTable* tt, float* params, const float* grads, float* m, float* v, const Config* c,
                 double lr, int64_t t, double grad_scale) {
    for (int i = 0; i < tt->n; i++) {
        const TensorInfo* ti = &tt->t[i];
        if (ti->group == OPT_TABLE) continue;
        double wd = ti->group == OPT_DECAY ? c->train.weight_decay : 0.0;
        size_t o = ti->offset;
        adam_update_(params + o, grads + o, m + o, v + o, (size_t)ti->numel, lr, wd, c->train.beta1,
                     c->train.beta2, c->train.adam_eps, t, grad_scale);
    }
}

void optim_rows_adam(EngramTables* tab, const int64_t* keys, int64_t n, const float* grads, const Config* c,
                     double lr, int64_t t, double grad_scale) {
    const int Dh = tab->Dh;
    const double rlr = lr * c->engram.lr_mult;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        int l = ROWKEY_LAYER(keys[i]);
        int64_t r = ROWKEY_ROW(keys[i]) - tab->first[l];
        if (r < 0 || r >= tab->local[l]) engram_die("this is a bug: a row update reached a rank that does not own it",
                                                     "row %lld of layer %d", (long long)ROWKEY_ROW(keys[i]), l);
        size_t o = (size_t)r * Dh;
        adam_update_(tab->table[l] + o, grads + (size_t)i * Dh, tab->m[l] + o, tab->v[l] + o, (size_t)Dh, rlr, 0.0,
                     c->train.beta1, c->train.beta2, c->train.adam_eps, t, grad_scale);
        tab->updates[l][r]++;
    }
}
