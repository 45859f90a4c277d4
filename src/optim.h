/*
 * optim.h — the optimizers of ARCHITECTURE.md §3.1 / docs/model.md: the learning-rate schedule
 * (linear warm-up, then cosine or constant), clipping by the global gradient norm, AdamW over the
 * dense tensors of the tensor table (decay on matrices only), and the lazy Adam of Engram tables
 * (lr·engram.lr_mult, no decay, only the rows gathered this step).
 *
 * Not here: summing gradients over ranks (parallel/grad_sync), which happens before these.
 */
#ifndef ENGRAM_OPTIM_H
#define ENGRAM_OPTIM_H

#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "engram_rows.h"
#include "tensors.h"

/* lr of step s (0-based). */
double optim_lr(const Config* c, int s);

/* Σ g² over the dense gradient buffer (double, fixed order). */
double optim_sumsq(const float* g, size_t n);
/* clip/(norm + 1e-6) if that is < 1, else 1 (torch.nn.utils.clip_grad_norm_); clip 0 = off. */
double optim_clip_scale(double norm, double clip);

/* One Adam(W) update of n elements on the host (backend.h's AdamStep: decoupled decay, bias
 * corrections for step t, gradients times grad_scale), in double: the CPU backend's `adam`. */
void optim_adam(float* p, const float* g, float* m, float* v, size_t n, const AdamStep* s);

/* One AdamW step over every dense tensor, through be->adam (params, grads, m, v are be's
 * buffers); t = step count after this update (1-based). The gradients are multiplied by
 * grad_scale first (clipping). */
void optim_adamw(Backend* be, const TensorTable* tt, float* params, const float* grads, float* m, float* v,
                 const Config* c, double lr, int64_t t, double grad_scale);

/* The Engram tables' Adam step: the rate lr·engram.lr_mult, no decay, step t, gradients times
 * grad_scale. */
AdamStep optim_rows_step(const Config* c, double lr, int64_t t, double grad_scale);
/* Lazy Adam on the n unique rows keys[] (held locally) with gradients grads [n, Dh], on host
 * memory: the CPU backend's rows_adam. */
void optim_rows_adam(const EngramTables* tab, const int64_t* keys, int64_t n, const float* grads, const AdamStep* s);

#endif
