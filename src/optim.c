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



double optim_clip_scale(double norm, double clip) {
    if (clip <= 0) return 1.0;
    double k = clip / (norm + 1e-6);
    return k < 1.0 ? k : 1.0;
}

typedef struct {
    double lr, wd, b1, b2, eps, bc1, bc2, scale;
} AdamConsts;

/* One Adam(W) update of n elements, in double (vectorised: no calls, no errno in the loop). */
ENGRAM_SIMD_CLONES static void adam_span_(float* restrict p, const float* restrict g, float* restrict m,
                                          float* restrict v, size_t n, const AdamConsts* k) {
    const double lr = k->lr, decay = 1.0 - k->lr * k->wd, b1 = k->b1, b2 = k->b2, eps = k->eps;
    const double bc1 = k->bc1, bc2 = k->bc2, scale = k->scale;
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        double gi = (double)g[i] * scale;
        double mi = b1 * m[i] + (1.0 - b1) * gi;
        double vi = b2 * v[i] + (1.0 - b2) * gi * gi;
        m[i] = (float)mi;
        v[i] = (float)vi;
        double pi = (double)p[i] * decay;   // decoupled decay (wd = 0 where none)
        p[i] = (float)(pi - lr * (mi / bc1) / (__builtin_sqrt(vi / bc2) + eps));
    }
}

/* Σ g² in double: eight running sums (element i goes to sum i mod 8), added up at the end; the order
 * is fixed by the code, so the result does not depend on the machine or the vector width. */
ENGRAM_SIMD_CLONES double optim_sumsq(const float* g, size_t n) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += (double)g[i + j] * g[i + j];
    for (; i < n; i++) acc[i % 8] += (double)g[i] * g[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* p, m, v of n elements: one Adam(W) update, in spans of 16k elements over the threads. */
void optim_adam(float* p, const float* g, float* m, float* v, size_t n, const AdamStep* s) {
    const AdamConsts k = {s->lr, s->wd, s->beta1, s->beta2, s->eps, 1.0 - pow(s->beta1, (double)s->t),
                          1.0 - pow(s->beta2, (double)s->t), s->grad_scale};
    const size_t span = 16384, n_spans = (n + span - 1) / span;
#pragma omp parallel for schedule(static) if (n_spans > 1)
    for (size_t i = 0; i < n_spans; i++) {
        size_t i0 = i * span, len = n - i0 < span ? n - i0 : span;
        adam_span_(p + i0, g + i0, m + i0, v + i0, len, &k);
    }
}

void optim_adamw(Backend* be, const TensorTable* tt, float* params, const float* grads, float* m, float* v,
                 const Config* c, double lr, int64_t t, double grad_scale) {
    AdamStep s = {.lr = lr, .beta1 = c->train.beta1, .beta2 = c->train.beta2, .eps = c->train.adam_eps,
                  .grad_scale = grad_scale, .t = t};
    for (int i = 0; i < tt->n; i++) {
        const TensorInfo* ti = &tt->t[i];
        if (ti->group == OPT_TABLE) continue;
        s.wd = ti->group == OPT_DECAY ? c->train.weight_decay : 0.0;
        size_t o = ti->offset;
        be->adam(be, params + o, grads + o, m + o, v + o, (size_t)ti->local_numel, &s);
    }
}

AdamStep optim_rows_step(const Config* c, double lr, int64_t t, double grad_scale) {
    return (AdamStep){.lr = lr * c->engram.lr_mult, .wd = 0.0, .beta1 = c->train.beta1, .beta2 = c->train.beta2,
                      .eps = c->train.adam_eps, .grad_scale = grad_scale, .t = t};
}

void optim_rows_adam(const EngramTables* tab, const int64_t* keys, int64_t n, const float* grads, const AdamStep* st) {
    const int Dh = tab->Dh;
    AdamStep s = *st;
    s.wd = 0.0;   // tables never decay
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        int l = ROWKEY_LAYER(keys[i]);
        int64_t r = ROWKEY_ROW(keys[i]) - tab->first[l];
        if (r < 0 || r >= tab->local[l]) engram_die("this is a bug: a row update reached a rank that does not own it",
                                                     "row %lld of layer %d", (long long)ROWKEY_ROW(keys[i]), l);
        size_t o = (size_t)r * Dh;
        optim_adam(tab->table[l] + o, grads + (size_t)i * Dh, tab->m[l] + o, tab->v[l] + o, (size_t)Dh, &s);
        tab->updates[l][r]++;
    }
}
