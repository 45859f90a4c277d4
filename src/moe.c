/*
 * moe.c — the Mixture-of-Experts SwiGLU FFN of docs/model.md ("MoE FFN"): softmax router, top-k
 * (ties to the lower expert index, listed in descending probability), weights renormalised over the
 * top-k, token-major capacity admission, routed and shared SwiGLU experts, and the statistics and
 * gradient of the Switch-style load-balance loss. Forward and hand-written backward, fp32, on a Backend
 * (backend.h): its GEMMs through be->gemm, its SwiGLU through be->swiglu_*, its token-wise parts through
 * the be->moe_* ops whose CPU versions are the loops of this file (moe_softmax ... moe_scatter_add).
 *
 * How the work is laid out: the routing "plan" (which expert each assignment goes to, and which row
 * of that expert's packed buffer it occupies, or dropped) is a pure function of the router
 * probabilities, so the forward saves only the probabilities and the backward rebuilds the same plan.
 * Each expert's tokens are gathered into one contiguous block (expert 0's rows, then expert 1's, ...;
 * inside an expert in token order) and its three matmuls run as be->gemm calls; the shared experts see
 * every token, so each of their two input projections is one strided batch over the S experts. The
 * top-k and the plan stay on the host: the probabilities come back with to_host (no copy on the CPU)
 * and the plan's arrays go to the device. On the CPU with the OpenMP OpenBLAS (ops_gemm_in_parallel)
 * the routed experts run side by side, one thread each with single-threaded GEMMs (a few hundred rows
 * are too few to share well); otherwise one after another, each GEMM threaded by the BLAS (or one
 * stream on a device). Results are combined per token in a fixed order (shared experts, then the k
 * choices in descending probability).
 *
 * Under expert parallelism the packed rows go to the ranks holding their experts through the
 * MoeRoute hook (moe.h) and come back in the same packed order, so everything around the experts
 * (plan, combine, routing gradients) is the same code either way. The hook moves backend memory
 * (be->alltoallv in parallel/expert_exchange.c): the rows never cross to the host.
 *
 * Not here: the MPI exchange (parallel/expert_exchange.c), the block's RMSNorm and residual, the all-reduce of the
 * load-balance statistics (the caller sums MoeStats over ranks and hands the global figures back).
 *
 * Letters: N tokens of this call, D model width, E routed experts, S shared experts, k experts per
 * token, Fe expert hidden width, n_e rows packed for expert e, R = Σ_e n_e kept assignments (≤ N·k).
 */
#include "moe.h"

#include <math.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "ops.h"

/* ---- layout of the saved activations --------------------------------------------------------- */

/* Offsets (in floats) into acts. Sized for the worst case: every one of the N·k assignments kept.
 *   probs [N, E]      router softmax p (the routing plan is rebuilt from it in the backward)
 *   h1    [N·k, Fe]   packed by expert: X_e·w1[e]ᵀ for the rows of expert e (R rows used);
 *                     none under expert parallelism (the experts' ranks keep them: MoeEp)
 *   h3    [N·k, Fe]   packed likewise: X_e·w3[e]ᵀ (none likewise)
 *   y     [N·k, D]    packed likewise: Expert_e(X_e), before the routing weight
 *   sh1   [S, N, Fe]  f·shared_w1[s]ᵀ
 *   sh3   [S, N, Fe]  f·shared_w3[s]ᵀ
 * total = N·E + N·k·(2·Fe + D) + 2·S·N·Fe floats (N·k·2·Fe fewer under expert parallelism). */
typedef struct {
    size_t probs, h1, h3, y, sh1, sh3, total;
} MoeActsLayout;

/* The acts were sized for d->ep: a call with a hook must match it (no room for h1/h3 otherwise). */
static void ep_check_(const MoeDims* d, const MoeEp* ep) {
    if ((d->ep > 1) != (ep != NULL))
        engram_die("this is a bug: the MoE activations were sized for another expert parallelism",
                   "MoeDims.ep = %d, called %s a MoeEp", d->ep, ep ? "with" : "without");
}

static MoeActsLayout acts_layout_(const MoeDims* d) {
    size_t N = (size_t)d->N, Nk = N * (size_t)d->k, Fe = (size_t)d->Fe;
    size_t Fr = d->ep > 1 ? 0 : Fe;   // the routed experts' h1/h3 columns kept here
    MoeActsLayout l;
    l.probs = 0;
    l.h1 = l.probs + N * (size_t)d->E;
    l.h3 = l.h1 + Nk * Fr;
    l.y = l.h3 + Nk * Fr;
    l.sh1 = l.y + Nk * (size_t)d->D;
    l.sh3 = l.sh1 + (size_t)d->S * N * Fe;
    l.total = l.sh3 + (size_t)d->S * N * Fe;
    return l;
}

size_t moe_acts_floats(const MoeDims* d) { return acts_layout_(d).total; }

/* ---- routing plan ---------------------------------------------------------------------------- */

/* Where each of the N·k assignments goes. Built from the probabilities alone, so the forward and
 * the backward agree exactly. */
typedef struct {
    int* top;       // [N, k] expert of choice j of token n, in descending probability
    long* row;      // [N, k] row in the packed expert buffers, −1 when dropped by capacity
    int* row_tok;   // [R] token of each packed row
    long* off;      // [E+1] first packed row of each expert; off[E] = R
    long R;         // kept assignments
    long dropped;   // assignments dropped by capacity
} MoePlan;

/* Indices of the k largest of p [E] into top [k], descending; ties go to the lower index. */
static void topk_(const float* p, int E, int k, int* top) {
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < E; i++) {
            int taken = 0;
            for (int m = 0; m < j; m++) taken |= (top[m] == i);
            if (!taken && (best < 0 || p[i] > p[best])) best = i;   // strict >: lower index wins
        }
        top[j] = best;
    }
}

/* Capacity per expert: ceil(cf·N·k/E), or "no limit" (N·k) when cf = 0. */
static long capacity_(const MoeDims* d) {
    long Nk = (long)d->N * d->k;
    if (d->capacity_factor <= 0) return Nk;
    return (long)ceil(d->capacity_factor * (double)d->N * d->k / d->E);
}

/* Top-k of every token, then token-major admission against the capacity, then packing. */
static void plan_build_(const MoeDims* d, const float* probs, MoePlan* pl) {
    int N = d->N, E = d->E, k = d->k;
    size_t Nk = (size_t)N * k;
    pl->top = mallocCheck(Nk * sizeof(int));
    pl->row = mallocCheck(Nk * sizeof(long));
    pl->row_tok = mallocCheck(Nk * sizeof(int));
    pl->off = callocCheck((size_t)E + 1, sizeof(long));
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) topk_(probs + (size_t)n * E, E, k, pl->top + (size_t)n * k);
    // admission, token-major: the slot inside the expert is the number admitted before it
    long C = capacity_(d), *fill = pl->off + 1;   // fill[e] counts admitted rows of expert e
    pl->dropped = 0;
    for (size_t a = 0; a < Nk; a++) {
        int e = pl->top[a];
        if (fill[e] < C) {
            pl->row[a] = fill[e]++;
        } else {
            pl->row[a] = -1;
            pl->dropped++;
        }
    }
    // fill → offsets (prefix sum), then slots → packed rows
    for (int e = 0; e < E; e++) pl->off[e + 1] += pl->off[e];
    pl->R = pl->off[E];
    for (size_t a = 0; a < Nk; a++) {
        if (pl->row[a] < 0) continue;
        pl->row[a] += pl->off[pl->top[a]];
        pl->row_tok[pl->row[a]] = (int)(a / (size_t)k);
    }
}

static void plan_free_(MoePlan* pl) {
    free(pl->top);
    free(pl->row);
    free(pl->row_tok);
    free(pl->off);
}

/* Σ_{j<k} p[top_j]: the normaliser of token n's routing weights (dropped choices included). */
static float topk_mass_(const float* p, const int* top, int k) {
    float s = 0.0f;
    for (int j = 0; j < k; j++) s += p[top[j]];
    return s;
}

/* ---- the token-wise parts: the CPU backend's MoE ops (backend.h) ----------------------------- */

void moe_softmax(float* probs, int N, int E) {
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float* p = probs + (size_t)n * E;
        float mx = p[0], s = 0.0f;
        for (int i = 1; i < E; i++) mx = fmaxf(mx, p[i]);
        for (int i = 0; i < E; i++) s += (p[i] = expf(p[i] - mx));
        for (int i = 0; i < E; i++) p[i] /= s;
    }
}

void moe_gather(float* X, const float* f, const int* row_tok, long R, int D) {
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < R; r++) memcpy(X + (size_t)r * D, f + (size_t)row_tok[r] * D, (size_t)D * sizeof(float));
}

void moe_combine(const MoeDims* d, const float* probs, const int* top_all, const long* row_all, const float* y,
                 float* out) {
    int D = d->D, E = d->E, k = d->k;
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < d->N; n++) {
        const float* p = probs + (size_t)n * E;
        const int* top = top_all + (size_t)n * k;
        float mass = topk_mass_(p, top, k), *o = out + (size_t)n * D;
        for (int j = 0; j < k; j++) {
            long r = row_all[(size_t)n * k + j];
            if (r < 0) continue;   // dropped: contributes 0, the other weights stay as they are
            float wj = p[top[j]] / mass;
            const float* yr = y + (size_t)r * D;
            for (int c = 0; c < D; c++) o[c] += wj * yr[c];
        }
    }
}

/* In the forward out_n = Σ_{kept j} (p_j/m)·y_j with m = Σ_{all k chosen} p, and p = softmax(l). */
void moe_routing_backward(const MoeDims* d, const float* probs, const int* top_all, const long* row_all,
                          const float* y, const float* dout, const double* c_aux, float* dy, float* dl) {
    int D = d->D, E = d->E, k = d->k;
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < d->N; n++) {
        const float* p = probs + (size_t)n * E;
        const float* go = dout + (size_t)n * D;
        const int* top = top_all + (size_t)n * k;
        const long* row = row_all + (size_t)n * k;
        double m = topk_mass_(p, top, k), dp[E], a[k], abar = 0.0, pdp = 0.0;
        // the weight w_j = p_j/m scaled y_j: dy_j = w_j·dout_n, and dL/dw_j = a_j = dout_n·y_j
        for (int j = 0; j < k; j++) {
            a[j] = 0.0;   // a dropped choice contributed nothing, so its a_j is 0
            if (row[j] < 0) continue;
            float wj = (float)(p[top[j]] / m);
            const float* yr = y + (size_t)row[j] * D;
            float* dyr = dy + (size_t)row[j] * D;
            for (int c = 0; c < D; c++) {
                a[j] += (double)go[c] * yr[c];
                dyr[c] = wj * go[c];
            }
            abar += a[j] * (p[top[j]] / m);
        }
        // w_j = p_j/m with m summing all k chosen p: dL/dp_l = (a_l − Σ_j a_j·w_j)/m for every chosen
        // l (kept or dropped); plus the aux term, which reaches every p_i
        for (int i = 0; i < E; i++) dp[i] = c_aux[i];
        for (int j = 0; j < k; j++) dp[top[j]] += (a[j] - abar) / m;
        // p = softmax(l): dl_i = p_i·(dp_i − Σ_l p_l·dp_l)
        for (int i = 0; i < E; i++) pdp += p[i] * dp[i];
        for (int i = 0; i < E; i++) dl[(size_t)n * E + i] = (float)(p[i] * (dp[i] - pdp));
    }
}

void moe_scatter_add(const MoeDims* d, const long* row_all, const float* dX, float* df) {
    int D = d->D, k = d->k;
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < d->N; n++) {
        float* o = df + (size_t)n * D;
        for (int j = 0; j < k; j++) {
            long r = row_all[(size_t)n * k + j];
            if (r < 0) continue;
            const float* x = dX + (size_t)r * D;
            for (int c = 0; c < D; c++) o[c] += x[c];
        }
    }
}

/* ---- the plan on the device ------------------------------------------------------------------ */

/* The plan's arrays the device ops read: top, row [N,k], row_tok [R]; the host's own on a host
 * backend, copies otherwise. */
typedef struct {
    int* top;
    long* row;
    int* row_tok;
} MoePlanDev;

static MoePlanDev plan_to_device_(Backend* be, const MoeDims* d, const MoePlan* pl) {
    size_t Nk = (size_t)d->N * d->k;
    return (MoePlanDev){backend_device_view(be, pl->top, Nk * sizeof(int), 1),
                        backend_device_view(be, pl->row, Nk * sizeof(long), 1),
                        backend_device_view(be, pl->row_tok, (size_t)pl->R * sizeof(int), 1)};
}

static void plan_device_free_(Backend* be, MoePlanDev* dp, const MoePlan* pl) {
    backend_device_done(be, dp->top, pl->top, 0, 0);
    backend_device_done(be, dp->row, pl->row, 0, 0);
    backend_device_done(be, dp->row_tok, pl->row_tok, 0, 0);
}

/* The router's probabilities [N,E] on the host (to_host: the top-k runs there), and the plan. */
static float* plan_from_device_(Backend* be, const MoeDims* d, const float* probs, MoePlan* pl) {
    float* hp = backend_host_view(be, probs, (size_t)d->N * d->E * sizeof(float), 1);
    plan_build_(d, hp, pl);
    return hp;
}

static float* fbuf_(Backend* be, size_t n) { return be->alloc(be, (n ? n : 1) * sizeof(float)); }

/* ---- small pieces ---------------------------------------------------------------------------- */

/* One SwiGLU expert over n rows: h1 = X·w1ᵀ, h3 = X·w3ᵀ [n,Fe] (saved), y = (SiLU(h1)⊙h3)·w2ᵀ
 * [n,D], written with beta (0 = overwrite, 1 = accumulate). g [n,Fe] is scratch. */
static void expert_forward_(Backend* be, int n, int D, int Fe, const float* X, const float* w1, const float* w3,
                            const float* w2, float* h1, float* h3, float* g, float beta, float* y) {
    if (n == 0) return;
    be->gemm(be, 0, 1, n, Fe, D, 1.0f, X, D, 0, w1, D, 0, 0.0f, h1, Fe, 0, 1);
    be->gemm(be, 0, 1, n, Fe, D, 1.0f, X, D, 0, w3, D, 0, 0.0f, h3, Fe, 0, 1);
    be->swiglu_forward(be, g, h1, h3, (long)n * Fe);
    be->gemm(be, 0, 1, n, D, Fe, 1.0f, g, Fe, 0, w2, Fe, 0, beta, y, D, 0, 1);
}

/* ---- forward --------------------------------------------------------------------------------- */

/* psum [E] = Σ_n p[n,:] in double, counts [E] = assignments per expert before drops. Serial, on the
 * host copy of the probabilities. */
static void stats_fill_(const MoeDims* d, const float* probs, const MoePlan* pl, MoeStats* st) {
    if (!st) return;
    memset(st->counts, 0, (size_t)d->E * sizeof(double));
    memset(st->psum, 0, (size_t)d->E * sizeof(double));
    for (int n = 0; n < d->N; n++)
        for (int i = 0; i < d->E; i++) st->psum[i] += probs[(size_t)n * d->E + i];
    for (size_t a = 0; a < (size_t)d->N * d->k; a++) st->counts[pl->top[a]] += 1.0;
    st->dropped = pl->dropped;
    st->kept = pl->R;
}

/* out [N,D] = Σ_s Shared_s(f); the shared pre-activations sh1, sh3 [S,N,Fe] go to acts: both input
 * projections of all S experts as one strided batch each (f is every expert's input). */
static void shared_forward_(Backend* be, const MoeDims* d, const MoeWeights* w, const float* f, float* a_sh1,
                            float* a_sh3, float* out) {
    size_t N = (size_t)d->N, D = (size_t)d->D, Fe = (size_t)d->Fe, S = (size_t)d->S;
    if (S == 0) {
        be->zero(be, out, N * D * sizeof(float));
        return;
    }
    long long sw = (long long)(Fe * D), sh = (long long)(N * Fe);
    be->gemm(be, 0, 1, d->N, d->Fe, d->D, 1.0f, f, d->D, 0, w->shared_w1, d->D, sw, 0.0f, a_sh1, d->Fe, sh, d->S);
    be->gemm(be, 0, 1, d->N, d->Fe, d->D, 1.0f, f, d->D, 0, w->shared_w3, d->D, sw, 0.0f, a_sh3, d->Fe, sh, d->S);
    float* g = fbuf_(be, S * N * Fe);
    be->swiglu_forward(be, g, a_sh1, a_sh3, (long)(S * N * Fe));
    for (size_t s = 0; s < S; s++)   // summed into out one expert after another: not a batch
        be->gemm(be, 0, 1, d->N, d->D, d->Fe, 1.0f, g + s * N * Fe, d->Fe, 0, w->shared_w2 + s * Fe * D, d->Fe, 0,
                 s == 0 ? 0.0f : 1.0f, out, d->D, 0, 1);
    be->free(be, g);
}

/* Experts [0, n_exp) of w (local indices) over rows X [off[n_exp], D] grouped by expert (off
 * [n_exp+1], host): h1, h3 [.,Fe] saved, y [.,D] written; g [.,Fe] scratch. */
static void experts_forward_(Backend* be, const MoeDims* d, const MoeWeights* w, int n_exp, const long* off,
                             const float* X, float* h1, float* h3, float* g, float* y) {
    size_t D = (size_t)d->D, Fe = (size_t)d->Fe;
    #pragma omp parallel for schedule(dynamic) if (be->host && ops_gemm_in_parallel())   // see the top of the file
    for (int e = 0; e < n_exp; e++) {
        size_t r0 = (size_t)off[e], ow = (size_t)e * Fe * D;
        expert_forward_(be, (int)(off[e + 1] - off[e]), d->D, d->Fe, X + r0 * D, w->w1 + ow, w->w3 + ow,
                        w->w2 + ow, h1 + r0 * Fe, h3 + r0 * Fe, g + r0 * Fe, 0.0f, y + r0 * D);
    }
}

/* Owner-side activations for rows received: room for R rows (h1, h3). */
static void ep_reserve_(Backend* be, MoeEp* ep, size_t R, size_t Fe) {
    if (R <= ep->cap && ep->h1) return;
    ep->cap = R > 2 * ep->cap ? R : 2 * ep->cap;
    if (ep->h1) be->free(be, ep->h1), be->free(be, ep->h3);
    ep->h1 = fbuf_(be, (ep->cap + 1) * Fe);
    ep->h3 = fbuf_(be, (ep->cap + 1) * Fe);
}

void moe_ep_free(Backend* be, MoeEp* ep) {
    if (ep->h1) be->free(be, ep->h1), be->free(be, ep->h3);
    free(ep->roff);
    ep->h1 = ep->h3 = NULL, ep->roff = NULL, ep->cap = 0;
}

/* The rows of X [R,D] (packed by expert, off [E+1]) to their owners and Yr's back, through the hook
 * (backend memory both ways); run runs the owner's experts on the received rows. The rows received
 * in the forward stay in the hook's buffer (ep->xr) for the backward. */
typedef void (*EpRun_)(Backend* be, const MoeDims* d, const MoeWeights* w, MoeEp* ep, const float* rows,
                       float* out, MoeWeights* g);

static void ep_exchange_(Backend* be, const MoeDims* d, const MoeWeights* w, MoeEp* ep, int backward, const float* X,
                         const long* off, float* Y, EpRun_ run, MoeWeights* g) {
    const MoeRoute* rt = ep->route;
    long* roff = backward ? mallocCheck(((size_t)rt->e_count + 1) * sizeof(long))
                          : (ep->roff = reallocCheck(ep->roff, ((size_t)rt->e_count + 1) * sizeof(long)));
    const float* rows = rt->dispatch(rt->ctx, ep->slot, backward, X, off, roff);
    size_t Rr = (size_t)roff[rt->e_count];
    if (!backward) ep_reserve_(be, ep, Rr, (size_t)d->Fe), ep->xr = rows;
    float* yr = fbuf_(be, (Rr + 1) * (size_t)d->D);
    run(be, d, w, ep, rows, yr, g);
    rt->combine(rt->ctx, ep->slot, yr, Y);
    be->free(be, yr);
    if (backward) free(roff);
}

/* Owner side of the forward: the local experts over the rows received. */
static void ep_forward_run_(Backend* be, const MoeDims* d, const MoeWeights* w, MoeEp* ep, const float* rows,
                            float* out, MoeWeights* g) {
    (void)g;
    size_t Rr = (size_t)ep->roff[ep->route->e_count];
    float* scr = fbuf_(be, (Rr + 1) * (size_t)d->Fe);
    experts_forward_(be, d, w, ep->route->e_count, ep->roff, rows, ep->h1, ep->h3, scr, out);
    be->free(be, scr);
}

void moe_forward(const MoeDims* d, const MoeWeights* w, const float* f, float* out, float* acts,
                 MoeStats* stats, MoeEp* ep) {
    moe_forward_on(backend_cpu(), d, w, f, out, acts, stats, ep);
}

void moe_forward_on(Backend* be, const MoeDims* d, const MoeWeights* w, const float* f, float* out, float* acts,
                    MoeStats* stats, MoeEp* ep) {
    MoeActsLayout L = acts_layout_(d);
    ep_check_(d, ep);
    size_t D = (size_t)d->D, Fe = (size_t)d->Fe;
    float* probs = acts + L.probs;
    // 1. router: [N,D] -> p [N,E]
    be->gemm(be, 0, 1, d->N, d->E, d->D, 1.0f, f, d->D, 0, w->router, d->D, 0, 0.0f, probs, d->E, 0, 1);
    be->moe_softmax(be, probs, d->N, d->E);
    // 2. plan on the host: top-k, admission, packed rows; statistics of this call
    MoePlan pl;
    float* hp = plan_from_device_(be, d, probs, &pl);
    stats_fill_(d, hp, &pl, stats);
    backend_host_done(be, hp, probs, 0, 0);
    MoePlanDev dp = plan_to_device_(be, d, &pl);
    // 3. shared experts: [N,D] -> out [N,D]
    shared_forward_(be, d, w, f, acts + L.sh1, acts + L.sh3, out);
    // 4. routed experts, each over its packed rows: X_e [n_e,D] -> y_e [n_e,D]
    float* X = fbuf_(be, ((size_t)pl.R + 1) * D);
    be->moe_gather(be, X, f, dp.row_tok, pl.R, d->D);
    if (!ep) {
        float* g = fbuf_(be, ((size_t)pl.R + 1) * Fe);
        experts_forward_(be, d, w, d->E, pl.off, X, acts + L.h1, acts + L.h3, g, acts + L.y);
        be->free(be, g);
    } else {   // the rows go to their experts' ranks, which run them and send y back in packed order
        ep_exchange_(be, d, w, ep, 0, X, pl.off, acts + L.y, ep_forward_run_, NULL);
    }
    // 5. combine: out[n] += Σ_j w_j·y[row_j]
    be->moe_combine(be, d, probs, dp.top, dp.row, acts + L.y, out);
    be->free(be, X);
    plan_device_free_(be, &dp, &pl);
    plan_free_(&pl);
}

double moe_aux_loss(const MoeDims* d, const double* counts, const double* psum, double n_tok) {
    double s = 0.0;
    for (int i = 0; i < d->E; i++) s += (counts[i] / (n_tok * d->k)) * (psum[i] / n_tok);
    return d->E * s;
}

/* ---- backward -------------------------------------------------------------------------------- */

/* Backward of one SwiGLU expert over n rows (X [n,D], h1/h3 [n,Fe] as saved, dy [n,D]):
 * weight gradients accumulated into dw1/dw3 [Fe,D] and dw2 [D,Fe]; dX [n,D] written with beta.
 * Scratch: g, dh1, dh3 [n,Fe]. */
static void expert_backward_(Backend* be, int n, int D, int Fe, const float* X, const float* w1, const float* w3,
                             const float* w2, const float* h1, const float* h3, const float* dy,
                             float* dw1, float* dw3, float* dw2, float beta, float* dX, float* g,
                             float* dh1, float* dh3) {
    if (n == 0) return;
    long nf = (long)n * Fe;
    // in the forward y = g·w2ᵀ with g = SiLU(h1)⊙h3, so dw2 += dyᵀ·g and dg = dy·w2 (into dh1)
    be->swiglu_forward(be, g, h1, h3, nf);
    be->gemm(be, 1, 0, D, Fe, n, 1.0f, dy, D, 0, g, Fe, 0, 1.0f, dw2, Fe, 0, 1);
    be->gemm(be, 0, 0, n, Fe, D, 1.0f, dy, D, 0, w2, Fe, 0, 0.0f, dh1, Fe, 0, 1);
    // g = SiLU(h1)·h3: dh3 = dg·SiLU(h1), dh1 = dg·h3·SiLU'(h1) (dg read from dh1 before it is written)
    be->swiglu_backward(be, dh1, dh3, dh1, h1, h3, nf);
    // h1 = X·w1ᵀ and h3 = X·w3ᵀ: dw1 += dh1ᵀ·X, dw3 += dh3ᵀ·X, dX = dh1·w1 + dh3·w3
    be->gemm(be, 1, 0, Fe, D, n, 1.0f, dh1, Fe, 0, X, D, 0, 1.0f, dw1, D, 0, 1);
    be->gemm(be, 1, 0, Fe, D, n, 1.0f, dh3, Fe, 0, X, D, 0, 1.0f, dw3, D, 0, 1);
    be->gemm(be, 0, 0, n, D, Fe, 1.0f, dh1, Fe, 0, w1, D, 0, beta, dX, D, 0, 1);
    be->gemm(be, 0, 0, n, D, Fe, 1.0f, dh3, Fe, 0, w3, D, 0, 1.0f, dX, D, 0, 1);
}

/* The shared experts saw every token with weight 1: dout flows into each unchanged, df += dX. */
static void shared_backward_(Backend* be, const MoeDims* d, const MoeWeights* w, const float* f, const float* a_sh1,
                             const float* a_sh3, const float* dout, float* df, MoeWeights* g) {
    size_t N = (size_t)d->N, D = (size_t)d->D, Fe = (size_t)d->Fe;
    if (d->S == 0) return;
    float* scr = fbuf_(be, 3 * N * Fe);
    for (int s = 0; s < d->S; s++) {
        size_t ow = (size_t)s * Fe * D;
        expert_backward_(be, d->N, d->D, d->Fe, f, w->shared_w1 + ow, w->shared_w3 + ow, w->shared_w2 + ow,
                         a_sh1 + s * N * Fe, a_sh3 + s * N * Fe, dout, g->shared_w1 + ow,
                         g->shared_w3 + ow, g->shared_w2 + ow, 1.0f, df, scr, scr + N * Fe,
                         scr + 2 * N * Fe);
    }
    be->free(be, scr);
}

/* The aux loss's gradient per token and expert, a constant (counts are not differentiated):
 * aux = E·Σ_i (counts_i/(n_tok·k))·(Σ_n p_ni/n_tok), so d aux_coef·aux / dp_ni = c_i below. */
static void aux_grad_(const MoeDims* d, double aux_coef, const double* counts, double n_tok, double* c) {
    for (int i = 0; i < d->E; i++)
        c[i] = (aux_coef != 0.0 && counts) ? aux_coef * d->E * (counts[i] / (n_tok * d->k)) / n_tok : 0.0;
}

/* Backward of experts [0, n_exp) of w (local indices) over rows X grouped by expert (off [n_exp+1],
 * host), h1/h3 as saved, dy [.,D]: weight gradients accumulated into g, dX [.,D] written. */
static void experts_backward_(Backend* be, const MoeDims* d, const MoeWeights* w, int n_exp, const long* off,
                              const float* X, const float* h1, const float* h3, const float* dy, MoeWeights* g,
                              float* dX) {
    size_t D = (size_t)d->D, Fe = (size_t)d->Fe, R = (size_t)off[n_exp];
    float* scr = fbuf_(be, (3 * R + 1) * Fe);
    #pragma omp parallel for schedule(dynamic) if (be->host && ops_gemm_in_parallel())
    for (int e = 0; e < n_exp; e++) {
        size_t r0 = (size_t)off[e], ow = (size_t)e * Fe * D;
        expert_backward_(be, (int)(off[e + 1] - off[e]), d->D, d->Fe, X + r0 * D, w->w1 + ow, w->w3 + ow,
                         w->w2 + ow, h1 + r0 * Fe, h3 + r0 * Fe, dy + r0 * D, g->w1 + ow, g->w3 + ow, g->w2 + ow,
                         0.0f, dX + r0 * D, scr + r0 * Fe, scr + (R + r0) * Fe, scr + (2 * R + r0) * Fe);
    }
    be->free(be, scr);
}

/* Owner side of the backward: the local experts over the forward's rows, dy received as rows. */
static void ep_backward_run_(Backend* be, const MoeDims* d, const MoeWeights* w, MoeEp* ep, const float* rows,
                             float* out, MoeWeights* g) {
    experts_backward_(be, d, w, ep->route->e_count, ep->roff, ep->xr, ep->h1, ep->h3, rows, g, out);
}

/* The routed experts: each over its packed rows (here, or on its owner under expert parallelism),
 * then dX scattered back to df. */
static void routed_backward_(Backend* be, const MoeDims* d, const MoeWeights* w, const float* f, const float* a_h1,
                             const float* a_h3, const MoePlan* pl, const MoePlanDev* dp, const float* dy, float* df,
                             MoeWeights* g, MoeEp* ep) {
    size_t D = (size_t)d->D, R = (size_t)pl->R;
    float* dX = fbuf_(be, (R + 1) * D);
    if (!ep) {
        // in the forward X_e was gathered from f: gather it again
        float* X = fbuf_(be, (R + 1) * D);
        be->moe_gather(be, X, f, dp->row_tok, pl->R, d->D);
        experts_backward_(be, d, w, d->E, pl->off, X, a_h1, a_h3, dy, g, dX);
        be->free(be, X);
    } else {   // dy follows the forward's rows to their owners; dX comes back in packed order
        ep_exchange_(be, d, w, ep, 1, dy, pl->off, dX, ep_backward_run_, g);
    }
    be->moe_scatter_add(be, d, dp->row, dX, df);
    be->free(be, dX);
}

void moe_backward(const MoeDims* d, const MoeWeights* w, const float* f, const float* acts,
                  const float* dout, double aux_coef, const double* counts_glob, double n_tok_glob,
                  float* df, MoeWeights* g, MoeEp* ep) {
    moe_backward_on(backend_cpu(), d, w, f, acts, dout, aux_coef, counts_glob, n_tok_glob, df, g, ep);
}

void moe_backward_on(Backend* be, const MoeDims* d, const MoeWeights* w, const float* f, const float* acts,
                     const float* dout, double aux_coef, const double* counts_glob, double n_tok_glob, float* df,
                     MoeWeights* g, MoeEp* ep) {
    MoeActsLayout L = acts_layout_(d);
    ep_check_(d, ep);
    size_t N = (size_t)d->N, D = (size_t)d->D, E = (size_t)d->E;
    const float* probs = acts + L.probs;
    // the forward's plan, rebuilt from the saved probabilities (same p, same plan)
    MoePlan pl;
    float* hp = plan_from_device_(be, d, probs, &pl);
    backend_host_done(be, hp, (float*)probs, 0, 0);
    MoePlanDev dp = plan_to_device_(be, d, &pl);
    // steps 5 and 3 in reverse: out was Σ_s Shared_s(f) + Σ_j w_j·y_j, so the shared experts get
    // dout unchanged and each y_j gets w_j·dout
    shared_backward_(be, d, w, f, acts + L.sh1, acts + L.sh3, dout, df, g);
    // the weights w_j = p_j/Σ_top p and the aux term lead back to the router logits: dl [N,E]
    double* c_aux = mallocCheck(E * sizeof(double));
    aux_grad_(d, aux_coef, counts_glob, n_tok_glob, c_aux);
    double* c_aux_d = backend_device_view(be, c_aux, E * sizeof(double), 1);
    float* dy = fbuf_(be, ((size_t)pl.R + 1) * D);
    float* dl = fbuf_(be, N * E);
    be->moe_routing_backward(be, d, probs, dp.top, dp.row, acts + L.y, dout, c_aux_d, dy, dl);
    // step 4 in reverse: y_e = Expert_e(X_e) over the gathered rows, so dX_e is scattered back
    routed_backward_(be, d, w, f, acts + L.h1, acts + L.h3, &pl, &dp, dy, df, g, ep);
    // step 1 in reverse: the logits were f·routerᵀ, so drouter += dlᵀ·f [E,D], df += dl·router [N,D]
    be->gemm(be, 1, 0, d->E, d->D, d->N, 1.0f, dl, d->E, 0, f, d->D, 0, 1.0f, g->router, d->D, 0, 1);
    be->gemm(be, 0, 0, d->N, d->D, d->E, 1.0f, dl, d->E, 0, w->router, d->D, 0, 1.0f, df, d->D, 0, 1);
    backend_device_done(be, c_aux_d, c_aux, 0, 0);
    free(c_aux);
    be->free(be, dy);
    be->free(be, dl);
    plan_device_free_(be, &dp, &pl);
    plan_free_(&pl);
}
