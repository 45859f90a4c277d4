/*
 * backend_ops.h — every op of a Backend (backend.h) after its memory: name, parameters after the
 * Backend*, and the arguments that pass them on, as one X-macro list. Wrappers of a whole backend
 * (the guarded one, src/backend_guard.c; the profiler, src/backend_profile.c) expand it once each,
 * so an op added to backend.h is added here and every wrapper has it.
 *   V(name, (params), (args))   an op returning void;   D(...) one returning double
 * Not here: alloc/free, the collectives' group and close (each wrapper has its own).
 */
#ifndef ENGRAM_BACKEND_OPS_H
#define ENGRAM_BACKEND_OPS_H

#define BACKEND_ARGS_(...) __VA_ARGS__

#define BACKEND_OPS(V, D) \
    V(to_device, (void* d, const void* s, size_t n), (d, s, n)) \
    V(to_host, (void* d, const void* s, size_t n), (d, s, n)) \
    V(copy, (void* d, const void* s, size_t n), (d, s, n)) \
    V(zero, (void* p, size_t n), (p, n)) \
    V(gemm, \
        (int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda, long long sA, const float* B, \
        int ldb, long long sB, float beta, float* C, int ldc, long long sC, int batch), \
        (ta, tb, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch)) \
    V(linear_forward, (float* o, const float* i, const float* W, const float* b, int N, int Di, int Do), \
        (o, i, W, b, N, Di, Do)) \
    V(linear_backward, \
        (float* di, float* dW, float* db, const float* dout, const float* in, const float* W, int N, int Di, \
        int Do), \
        (di, dW, db, dout, in, W, N, Di, Do)) \
    V(branches_mean, (float* o, const float* h, int N, int G, int D), (o, h, N, G, D)) \
    V(branches_sum, (float* o, const float* h, int N, int G, int D), (o, h, N, G, D)) \
    V(branches_add, (float* h, const float* x, int N, int G, int D), (h, x, N, G, D)) \
    V(scale, (float* y, const float* x, float a, size_t n), (y, x, a, n)) \
    V(add, (float* y, const float* x, size_t n), (y, x, n)) \
    V(rmsnorm_forward, (float* o, float* r, const float* x, const float* w, int N, int D, float eps), \
        (o, r, x, w, N, D, eps)) \
    V(rmsnorm_backward, \
        (float* dx, float* dw, const float* dout, const float* x, const float* w, const float* r, int N, int D), \
        (dx, dw, dout, x, w, r, N, D)) \
    V(rope_apply, (float* qkv, int B, int T, int D, int nh, float base, int inv), (qkv, B, T, D, nh, base, inv)) \
    V(attention_forward, (float* o, float* att, const float* qkv, int B, int T, int D, int nh), \
        (o, att, qkv, B, T, D, nh)) \
    V(attention_backward, \
        (float* dqkv, const float* dout, const float* qkv, const float* att, float* s, int B, int T, int D, \
        int nh), \
        (dqkv, dout, qkv, att, s, B, T, D, nh)) \
    V(swiglu_forward, (float* g, const float* h1, const float* h3, long n), (g, h1, h3, n)) \
    V(swiglu_backward, (float* dh1, float* dh3, const float* dg, const float* h1, const float* h3, long n), \
        (dh1, dh3, dg, h1, h3, n)) \
    D(crossentropy_forward, (float* p, const int32_t* y, int N, int V), (p, y, N, V)) \
    V(crossentropy_backward, (float* p, const int32_t* y, int N, int V, float s), (p, y, N, V, s)) \
    D(head_xent, \
        (const float* x, const float* W, const int32_t* y, int N, int D, int V, float* dx, float* dW, \
        float* scr, int rows, int lanes, float* dWl), \
        (x, W, y, N, D, V, dx, dW, scr, rows, lanes, dWl)) \
    V(embedding_forward, (float* h, const float* wte, const int32_t* x, int N, int G, int D), \
        (h, wte, x, N, G, D)) \
    V(embedding_backward, (float* dwte, const float* dh, const int32_t* x, int N, int G, int D), \
        (dwte, dh, x, N, G, D)) \
    V(engram_gate_forward, \
        (const EngramDims* d, const EngramWeights* w, const float* h, float* o, float* a), (d, w, h, o, a)) \
    V(engram_conv_forward, (const EngramDims* d, const float* conv, float* a, float* o), (d, conv, a, o)) \
    V(engram_tokens_backward, \
        (const EngramDims* d, const EngramWeights* w, const float* h, const float* a, const float* dout, \
        float* dy, float* dx, float* dv, float* dh, double* part, EngramWeights* g), \
        (d, w, h, a, dout, dy, dx, dv, dh, part, g)) \
    V(moe_softmax, (float* p, int N, int E), (p, N, E)) \
    V(moe_gather, (float* X, const float* f, const int* rt, long R, int D), (X, f, rt, R, D)) \
    V(moe_combine, \
        (const MoeDims* d, const float* p, const int* top, const long* row, const float* y, float* o), \
        (d, p, top, row, y, o)) \
    V(moe_routing_backward, \
        (const MoeDims* d, const float* p, const int* top, const long* row, const float* y, const float* dout, \
        const double* c, float* dy, float* dl), \
        (d, p, top, row, y, dout, c, dy, dl)) \
    V(moe_scatter_add, (const MoeDims* d, const long* row, const float* dX, float* df), (d, row, dX, df)) \
    V(rows_expand, (float* o, const float* r, const int64_t* inv, const int64_t* pos, size_t t, int Dh), \
        (o, r, inv, pos, t, Dh)) \
    V(rows_reduce, \
        (float* g, const float* de, const int64_t* inv, const int64_t* pos, size_t t, int64_t nu, int Dh), \
        (g, de, inv, pos, t, nu, Dh)) \
    D(sumsq, (const float* g, size_t n), (g, n)) \
    V(adam, (float* p, const float* g, float* m, float* v, size_t n, const AdamStep* s), (p, g, m, v, n, s)) \
    V(tables_gather, (const EngramTables* t, const int64_t* k, int64_t n, float* o), (t, k, n, o)) \
    V(rows_sum_owned, \
        (float* own, const float* r, const float* self, int64_t lo, int64_t hi, const int64_t* inv, int64_t n, \
        int Dh), \
        (own, r, self, lo, hi, inv, n, Dh)) \
    V(rows_adam, (const EngramTables* t, const int64_t* k, int64_t n, const float* g, const AdamStep* s), \
        (t, k, n, g, s)) \
    V(allreduce_sum, (float* buf, size_t n), (buf, n)) \
    V(alltoallv, \
        (const void* s, const size_t* sc, const size_t* sd, void* r, const size_t* rc, const size_t* rd), \
        (s, sc, sd, r, rc, rd))

#endif
