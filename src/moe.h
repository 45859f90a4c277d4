/*
 * moe.h — a Mixture-of-Experts SwiGLU FFN (docs/model.md): softmax router, top-k with weights
 * renormalised over the top-k, routed experts, always-on shared experts, optional capacity
 * (token-major admission, dropped assignments contribute 0), and the statistics of the Switch-style
 * load-balance loss. Forward and hand-written backward, fp32, on a Backend (backend.h; the process's
 * CPU backend unless a _on function names one): GEMMs through be->gemm, the rest through be->moe_*.
 *
 * The load-balance loss is global over the data-parallel batch: the forward returns this rank's
 * counts and probability sums, the caller sums them over ranks, and the backward takes the global
 * figures. Expert parallelism enters through MoeRoute, a hook that moves packed rows to the ranks
 * holding their experts and back (implemented over MPI in parallel/expert_exchange.c, so this file
 * stays free of MPI). Not here: the block's RMSNorm and residual.
 */
#ifndef ENGRAM_MOE_H
#define ENGRAM_MOE_H

#include <stddef.h>

struct Backend;

typedef struct {
    int N;                   // tokens on this rank (B·T)
    int D;                   // model width
    int E, S, k;             // routed experts, shared experts, experts per token
    int Fe;                  // expert hidden width
    double capacity_factor;  // 0 = no limit
    int ep;                  // > 1: expert parallel (the layer runs with a MoeEp): the experts' ranks
                             // keep h1/h3 (MoeEp), so the acts have no room for them
} MoeDims;

/* Weights (and, with the same layout, their gradients). Shapes as docs/model.md; under expert
 * parallelism the routed experts hold only this rank's E_loc experts (MoeRoute.e_first ...). */
typedef struct {
    float* router;      // [E, D]
    float* w1;          // [E_loc, Fe, D]
    float* w3;          // [E_loc, Fe, D]
    float* w2;          // [E_loc, D, Fe]
    float* shared_w1;   // [S, Fe, D]  (NULL when S = 0)
    float* shared_w3;   // [S, Fe, D]
    float* shared_w2;   // [S, D, Fe]
} MoeWeights;

typedef struct {
    double* counts;   // [E] assignments to each expert on this rank, before capacity drops
    double* psum;     // [E] Σ over this rank's tokens of the router probability p_i
    long dropped;     // assignments dropped by capacity on this rank
    long kept;        // assignments dispatched to experts on this rank (N·k − dropped)
} MoeStats;

/* Expert parallelism as the layer sees it. Rows X [R,D] packed by expert (off [E+1]: expert e's
 * rows are X[off[e], off[e+1])) leave for the ranks holding their experts; this rank receives the
 * rows of its experts [e_first, e_first + e_count) grouped by its local expert (roff [e_count+1]),
 * inside an expert by source rank, then the sender's order — a fixed order, so results do not
 * depend on timing. combine sends rows computed in that received order back to their senders, who
 * get them in their packed order. slot names the MoE layer (the hook keeps its counts from the
 * forward for the backward, which moves rows along the same split). Every row buffer, given or
 * returned, is the layer's backend memory. */
typedef struct {
    void* ctx;
    int e_first, e_count;
    /* Rows back in the received order: valid until the next dispatch of the same slot and direction
     * (forward and backward rows live apart, so a forward's rows survive the backward's dispatch). */
    float* (*dispatch)(void* ctx, int slot, int backward, const float* X, const long* off, long* roff);
    void (*combine)(void* ctx, int slot, const float* Yr, float* Y);
} MoeRoute;

/* Per MoE layer under expert parallelism: the hook, and what the owner side saves for the backward
 * (sized by the rows received, which vary step to step, so grown on demand). */
typedef struct {
    const MoeRoute* route;
    int slot;
    const float* xr;    // [Rr,D] the rows received in the forward (the hook's buffer, backend memory)
    long* roff;         // [e_count+1]
    float *h1, *h3;     // [Rr,Fe] X_r·w1ᵀ, X_r·w3ᵀ of the received rows (backend memory)
    size_t cap;         // rows h1/h3 have room for
} MoeEp;
void moe_ep_free(struct Backend* be, MoeEp* ep);

/* Floats of activation memory the forward saves (sized for the worst case, all tokens kept):
 *   N·E + N·k·(2·Fe + D) + 2·S·N·Fe   (N·E + N·k·D + 2·S·N·Fe where d->ep > 1: no h1, h3)
 * laid out as probs [N,E] (the router softmax; the backward rebuilds the routing from it), then,
 * packed by expert (expert 0's kept rows, then expert 1's, ...; token order inside an expert),
 * h1 [N·k,Fe] = X·w1ᵀ, h3 [N·k,Fe] = X·w3ᵀ, y [N·k,D] = Expert(X) before the routing weight, then
 * sh1 [S,N,Fe] and sh3 [S,N,Fe] for the shared experts. */
size_t moe_acts_floats(const MoeDims* d);

/* f [N,D] normalised input → out [N,D]; acts saved for the backward; stats filled (this rank;
 * overwritten, not accumulated), or not when stats is NULL. ep NULL: every expert is local. */
void moe_forward(const MoeDims* d, const MoeWeights* w, const float* f, float* out, float* acts,
                 MoeStats* stats, MoeEp* ep);
/* The same on be: f, out, acts and w's pointers are be's memory; stats stay on the host. */
void moe_forward_on(struct Backend* be, const MoeDims* d, const MoeWeights* w, const float* f, float* out,
                    float* acts, MoeStats* stats, MoeEp* ep);

/* Aux loss E·Σ_i (counts_i/(n_tok·k))·(psum_i/n_tok) from global counts/psum and global n_tok. */
double moe_aux_loss(const MoeDims* d, const double* counts, const double* psum, double n_tok);

/* dout [N,D] → df [N,D] (accumulated: +=), weight gradients accumulated into g. aux_coef scales
 * the load-balance loss; counts_glob [E] and n_tok_glob are the global figures (f_i is constant). */
void moe_backward(const MoeDims* d, const MoeWeights* w, const float* f, const float* acts,
                  const float* dout, double aux_coef, const double* counts_glob, double n_tok_glob,
                  float* df, MoeWeights* g, MoeEp* ep);
void moe_backward_on(struct Backend* be, const MoeDims* d, const MoeWeights* w, const float* f, const float* acts,
                     const float* dout, double aux_coef, const double* counts_glob, double n_tok_glob, float* df,
                     MoeWeights* g, MoeEp* ep);

/* ---- the token-wise parts on the host: the CPU backend's MoE ops (backend.h) ------------------ *
 * The routing plan as the ops read it: top [N,k] experts of each token in descending probability,
 * row [N,k] its packed row (−1: dropped by capacity), row_tok [R] the token of each packed row. */

/* probs [N,E] router logits → softmax over E, in place. */
void moe_softmax(float* probs, int N, int E);
/* X [R,D]: row r is f[row_tok[r]]. */
void moe_gather(float* X, const float* f, const int* row_tok, long R, int D);
/* out[n] += Σ_j (p_j/Σ_top p)·y[row[n,j]] over token n's kept choices, j in order. */
void moe_combine(const MoeDims* d, const float* probs, const int* top, const long* row, const float* y,
                 float* out);
/* The routing's backward: dy [R,D] (written) of each packed row, dl [N,E] (written) the gradient of
 * the router logits, from dout [N,D], y [R,D] and c_aux [E] (the aux loss's per-probability term). */
void moe_routing_backward(const MoeDims* d, const float* probs, const int* top, const long* row, const float* y,
                          const float* dout, const double* c_aux, float* dy, float* dl);
/* df[n] += Σ_j dX[row[n,j]] over token n's kept choices, j in order. */
void moe_scatter_add(const MoeDims* d, const long* row, const float* dX, float* df);

#endif
