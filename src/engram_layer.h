/*
 * engram_layer.h — the parametric part of one Engram layer (spec/ENGRAM.md §4, docs/model.md):
 * gate per branch (key/query RMSNorms, signed square root, sigmoid), shared value projection,
 * ShortConv (per-branch RMSNorm, depthwise causal dilated conv, SiLU) and the residual u + y.
 * Forward and hand-written backward in fp32: the two projections' GEMMs go through a Backend
 * (backend.h), the token-wise parts (gate, ShortConv and their backward) are backend ops whose CPU
 * versions are the functions below.
 *
 * Not here: hashing (ngram_hash.h), gathering rows from tables (the caller hands in e), the block
 * residual h += out (the caller adds out to h).
 */
#ifndef ENGRAM_ENGRAM_LAYER_H
#define ENGRAM_ENGRAM_LAYER_H

#include <stddef.h>

typedef struct {
    int B, T;          // batch, sequence
    int G, D;          // branches, model width
    int Ein;           // H_total·Dh, width of the gathered rows
    int K, dilation;   // ShortConv taps and dilation (= max_ngram)
    float qk_eps;      // eps of the key/query RMSNorms
    float conv_eps;    // eps of the ShortConv RMSNorm
} EngramDims;

/* Weights (and, with the same layout, their gradients). Shapes as docs/model.md. */
typedef struct {
    float* wk;       // [G, D, Ein]
    float* bk;       // [G, D]
    float* wv;       // [D, Ein]
    float* bv;       // [D]
    float* norm_k;   // [G, D]
    float* norm_q;   // [G, D]
    float* norm_c;   // [G, D]
    float* conv;     // [G·D, K]
} EngramWeights;

/* Views into acts (engram_acts_split; layout in engram_layer.c). */
typedef struct {
    float* khat;    // [N,G,D] x·rk, the key before its norm weight (x = e·wkᵀ + bk)
    float* z;       // [N,G,D] ShortConv input, RMSNorm_{norm_c}(u)
    float* y;       // [N,G,D] conv output before SiLU
    float* v;       // [N,D]   value e·wvᵀ + bv
    float* rk;      // [N,G]   1/sqrt(mean(x²) + qk_eps) of the key
    float* rq;      // [N,G]   1/sqrt(mean(h²) + qk_eps) of the query
    float* rc;      // [N,G]   1/sqrt(mean(u²) + conv_eps) of the ShortConv norm
    float* s;       // [N,G]   score k·q/√D, before the signed square root
    float* alpha;   // [N,G]   gate sigmoid(s')
} EngramActs;

struct Backend;

/* Floats of activation memory the forward saves for the backward: N·(3·G·D + D + 5·G), N = B·T
 * (layout in engram_layer.c; the gates α [N,G] are its last N·G floats). The backward also allocates
 * its own scratch from the backend, 2·N·G·D + N·D floats and ≤ 64·(G·D·(4 + K) + D) doubles. */
size_t engram_acts_floats(const EngramDims* d);
EngramActs engram_acts_split(const EngramDims* d, float* acts);

/* e [B,T,Ein] gathered rows, h [B,T,G,D] residual stream → out [B,T,G,D] (= u + SiLU(conv)),
 * acts [engram_acts_floats] saved for the backward. On the process's CPU backend; _on: on be, every
 * pointer (and those inside w) be's memory. */
void engram_layer_forward(const EngramDims* d, const EngramWeights* w, const float* e, const float* h,
                          float* out, float* acts);
void engram_layer_forward_on(struct Backend* be, const EngramDims* d, const EngramWeights* w, const float* e,
                             const float* h, float* out, float* acts);

/* dout [B,T,G,D] → de [B,T,Ein] (overwritten), dh [B,T,G,D] (accumulated: +=), weight gradients
 * accumulated into g. */
void engram_layer_backward(const EngramDims* d, const EngramWeights* w, const float* e, const float* h,
                           const float* acts, const float* dout, float* de, float* dh, EngramWeights* g);
void engram_layer_backward_on(struct Backend* be, const EngramDims* d, const EngramWeights* w, const float* e,
                              const float* h, const float* acts, const float* dout, float* de, float* dh,
                              EngramWeights* g);

/* ---- the token-wise parts on the host: the CPU backend's Engram ops (backend.h) -------------- */

/* Forward step 2, on entry acts' khat = e·wkᵀ and v = e·wvᵀ without biases: per token and branch
 * the gate α, u = α·v into out, z = RMSNorm(u); khat, v, rk, rq, rc, s, alpha as acts documents. */
void engram_gate_forward(const EngramDims* d, const EngramWeights* w, const float* h, float* out, float* acts);
/* Forward step 3: y = causal dilated depthwise conv of z (conv [G·D,K]), out += SiLU(y). */
void engram_conv_forward(const EngramDims* d, const float* conv, float* acts, float* out);
/* Backward of both: dy [N,G,D] = dout·SiLU'(y), dx [N,G,D] (the key before its bias) and dv [N,D]
 * (the value) OVERWRITTEN, dh += the query path, the small weight gradients (norms, biases, conv)
 * += into g, summed over tokens per chunk into part [engram_partials_doubles] (scratch) and then
 * in chunk order. */
void engram_tokens_backward(const EngramDims* d, const EngramWeights* w, const float* h, const float* acts,
                            const float* dout, float* dy, float* dx, float* dv, float* dh, double* part,
                            EngramWeights* g);
/* The token chunks of those sums, which depend on N only: chunks of csize tokens (the last short). */
void engram_backward_chunks(int N, int* csize, int* chunks);
/* Doubles of part: chunks · (G·D·(4 + K) + D). */
size_t engram_partials_doubles(const EngramDims* d);

#endif
