/*
 * model.h — the model of ARCHITECTURE.md §3 / docs/model.md in fp32: parameters in flat buffers
 * laid out by the tensor table, activations planned once for a local batch [B,T], and the forward
 * and backward passes over the blocks (Engram → attention → FFN/MoE). Buffers and the dense ops
 * go through the model's Backend (backend.h; the CPU one unless model_init_on names another).
 *
 * The model never touches Engram tables or other ranks: the caller gathers the rows each Engram
 * layer needs (e) before the forward and takes their gradients (de) after the backward, and sums
 * MoE statistics over ranks between the two. See train.c for the single-rank step.
 */
#ifndef ENGRAM_MODEL_H
#define ENGRAM_MODEL_H

#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "ngram_hash.h"
#include "tensors.h"

typedef struct {
    float* h_in;          // [B,T,G,D] stream entering the Engram layer (Engram blocks only)
    float* eng_acts;      // [engram_acts_floats]
    float* eng_out;       // [B,T,G,D]
    float *xa, *ra, *a;   // attention input: mean_G h [BT,D], rstd [BT], normed [BT,D]
    float* qkv;           // [BT,3D], q and k rotated
    float* att;           // [B,nh,T,T]
    float* o;             // [BT,D] heads concatenated, before wo
    float *xf, *rf, *f;   // FFN input: mean_G h, rstd, normed
    float *h1, *h3, *g;   // dense FFN [BT,F]
    float* moe_acts;      // [moe_acts_floats]
    double *moe_counts, *moe_psum;   // [E]: this rank's, or global once the caller summed them
    long moe_dropped, moe_kept;      // this rank's assignments dropped by capacity / dispatched
    MoeEp ep;                        // expert parallelism: the hook and the owner side's activations
} BlockActs;

typedef struct {
    const Config* cfg;
    Backend* be;                      // where the buffers live and the ops run (not owned)
    int B, T, D, G, V, L, nh, F, Ein;
    TensorTable tt;
    float *params, *grads, *m, *v;    // dense flat buffers [tt.dense_numel]
    ModelPtrs P, dP;                  // named pointers into params and grads
    NgramHash hash;                   // Engram hashing (n_layers = 0 without Engram)
    EngramDims edims;
    MoeDims mdims;
    const MoeRoute* route;             // expert parallelism (set by the caller); NULL: all experts here
    // activations [B,T] planned once
    float* h;                          // [B,T,G,D] residual stream
    BlockActs* acts;                   // [L]
    float *xn, *rn, *xfin;             // final norm: mean_G h, rstd, normed [BT,D]
    float* probs;                      // [BT,V] logits of a forward without targets (lazily allocated)
    int head_grad;                     // set by the caller: a forward with targets also computes the
                                       // head's gradients (fused; else model_backward recomputes them)
    int head_ready, head_rows;         // dx_head/dw_head hold this forward's; tokens per head block
    int head_lanes;                    // threads taking head blocks in turn (ops.h head_xent)
    float* head_s;                     // [head_lanes,head_rows,V] each lane's logits → p → p − onehot
    float *dx_head, *dw_head;          // [BT,D], [V,D] gradients of Σ CE (unscaled)
    float* dw_lanes;                   // [head_lanes−1,V,D] lanes 1.. their dW parts
    const int32_t *x, *y;              // tokens and targets of the last forward (the caller's, host)
    int32_t *xd, *yd;                  // [BT] copies of them on the backend
    float* const* e;                   // [n_engram] gathered rows of the last forward
    // backward: dh [B,T,G,D] residual gradient; scratch [BT,D] ×3, [BT,F] ×3, [BT,3D], [B,nh,T,T], [B,T,G,D]
    float *dh, *s_d1, *s_d2, *s_d3, *s_f1, *s_f2, *s_f3, *dqkv, *s_att, *s_eng;
} Model;

/* B = this rank's sequences per step; builds the tensor table, hashing and buffers. */
void model_init(Model* m, const Config* c, int B);
/* The same, holding only the routed experts of position ep_rank in an expert-parallel group of ep
 * ranks (tensors_shard_experts); model_init is ep = 1. */
void model_init_ep(Model* m, const Config* c, int B, int ep, int ep_rank);
/* The same on backend be (its buffers from be->alloc, its ops through be; be outlives the model). */
void model_init_on(Model* m, const Config* c, int B, int ep, int ep_rank, Backend* be);
void model_free(Model* m);
/* Initialise parameters (ARCHITECTURE.md §3.1 Init); Engram tables are the caller's. */
void model_init_params(Model* m, uint64_t seed);

/* x, y [B,T]; e[i] [B,T,Ein] rows of Engram layer i (engram.layers order). Returns Σ of the
 * local tokens' cross-entropy; MoE statistics land in acts[l].moe_counts/psum. */
double model_forward(Model* m, const int32_t* x, const int32_t* y, float* const* e);
/* Load-balance loss from the MoE statistics (summed over ranks by then) over n_tok_glob tokens,
 * already multiplied by moe.aux_loss_coef. */
double model_aux_loss(const Model* m, double n_tok_glob);
/* Gradients of loss = CE_sum/n_tok_glob + aux into m->grads (overwritten) and de[i] [B,T,Ein]. */
void model_backward(Model* m, double n_tok_glob, float* const* de);

#endif
