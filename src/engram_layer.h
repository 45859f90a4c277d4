/*
 * engram_layer.h — the parametric part of one Engram layer (spec/ENGRAM.md §4, docs/model.md):
 * gate per branch (key/query RMSNorms, signed square root, sigmoid), shared value projection,
 * ShortConv (per-branch RMSNorm, depthwise causal dilated conv, SiLU) and the residual u + y.
 * Forward and hand-written backward, fp32 on the CPU.
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

/* Floats of activation memory the forward saves for the backward: N·(3·G·D + D + 5·G), N = B·T
 * (layout in engram_layer.c; the gates α [N,G] are its last N·G floats). The backward also allocates
 * its own scratch, 2·N·G·D + N·D floats and ≤ 64·(G·D·(4 + K) + D) doubles. */
size_t engram_acts_floats(const EngramDims* d);

/* e [B,T,Ein] gathered rows, h [B,T,G,D] residual stream → out [B,T,G,D] (= u + SiLU(conv)),
 * acts [engram_acts_floats] saved for the backward. */
void engram_layer_forward(const EngramDims* d, const EngramWeights* w, const float* e, const float* h,
                          float* out, float* acts);

/* dout [B,T,G,D] → de [B,T,Ein] (overwritten), dh [B,T,G,D] (accumulated: +=), weight gradients
 * accumulated into g. */
void engram_layer_backward(const EngramDims* d, const EngramWeights* w, const float* e, const float* h,
                           const float* acts, const float* dout, float* de, float* dh, EngramWeights* g);

#endif
