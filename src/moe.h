/*
 * moe.h — a Mixture-of-Experts SwiGLU FFN (docs/model.md): softmax router, top-k with weights
 * renormalised over the top-k, routed experts, always-on shared experts, optional capacity
 * (token-major admission, dropped assignments contribute 0), and the statistics of the Switch-style
 * load-balance loss. Forward and hand-written backward, fp32 on the CPU, GEMMs through cblas.
 *
 * The load-balance loss is global over the data-parallel batch: the forward returns this rank's
 * counts and probability sums, the caller sums them over ranks, and the backward takes the global
 * figures. Not here: expert parallelism (parallel/), the block's RMSNorm and residual.
 */
#ifndef ENGRAM_MOE_H
#define ENGRAM_MOE_H

#include <stddef.h>

typedef struct {
    int N;                   // tokens on this rank (B·T)
    int D;                   // model width
    int E, S, k;             // routed experts, shared experts, experts per token
    int Fe;                  // expert hidden width
    double capacity_factor;  // 0 = no limit
} MoeDims;

/* Weights (and, with the same layout, their gradients). Shapes as docs/model.md. */
typedef struct {
    float* router;      // [E, D]
    float* w1;          // [E, Fe, D]
    float* w3;          // [E, Fe, D]
    float* w2;          // [E, D, Fe]
    float* shared_w1;   // [S, Fe, D]  (NULL when S = 0)
    float* shared_w3;   // [S, Fe, D]
    float* shared_w2;   // [S, D, Fe]
} MoeWeights;

typedef struct {
    double* counts;   // [E] assignments to each expert on this rank, before capacity drops
    double* psum;     // [E] Σ over this rank's tokens of the router probability p_i
    long dropped;     // assignments dropped by capacity on this rank
} MoeStats;

/* Floats of activation memory the forward saves (sized for the worst case, all tokens kept):
 *   N·E + N·k·(2·Fe + D) + 2·S·N·Fe
 * laid out as probs [N,E] (the router softmax; the backward rebuilds the routing from it), then,
 * packed by expert (expert 0's kept rows, then expert 1's, ...; token order inside an expert),
 * h1 [N·k,Fe] = X·w1ᵀ, h3 [N·k,Fe] = X·w3ᵀ, y [N·k,D] = Expert(X) before the routing weight, then
 * sh1 [S,N,Fe] and sh3 [S,N,Fe] for the shared experts. */
size_t moe_acts_floats(const MoeDims* d);

/* f [N,D] normalised input → out [N,D]; acts saved for the backward; stats filled (this rank;
 * overwritten, not accumulated), or not when stats is NULL. */
void moe_forward(const MoeDims* d, const MoeWeights* w, const float* f, float* out, float* acts,
                 MoeStats* stats);

/* Aux loss E·Σ_i (counts_i/(n_tok·k))·(psum_i/n_tok) from global counts/psum and global n_tok. */
double moe_aux_loss(const MoeDims* d, const double* counts, const double* psum, double n_tok);

/* dout [N,D] → df [N,D] (accumulated: +=), weight gradients accumulated into g. aux_coef scales
 * the load-balance loss; counts_glob [E] and n_tok_glob are the global figures (f_i is constant). */
void moe_backward(const MoeDims* d, const MoeWeights* w, const float* f, const float* acts,
                  const float* dout, double aux_coef, const double* counts_glob, double n_tok_glob,
                  float* df, MoeWeights* g);

#endif
