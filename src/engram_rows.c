/*
 * engram_rows.c — dedup of the rows a step touches, gather/expand and gradient reduction, and the
 * local Engram tables (engram_rows.h).
 */
#include "engram_rows.h"

#include <string.h>

#include "backend.h"
#include "common.h"
#include "rng.h"
#include "shard.h"

static int cmp_i64_(const void* a, const void* b) {
    int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
    return (x > y) - (x < y);
}

int64_t keys_lower_bound(const int64_t* keys, int64_t n, int64_t key) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (keys[mid] < key) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

int64_t keys_dedup(const int64_t* in, size_t n, int64_t** uniq, int64_t* inverse) {
    int64_t* sorted = mallocCheck((n ? n : 1) * sizeof(int64_t));
    memcpy(sorted, in, n * sizeof(int64_t));
    qsort(sorted, n, sizeof(int64_t), cmp_i64_);
    int64_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || sorted[i] != sorted[u - 1]) sorted[u++] = sorted[i];
    *uniq = reallocCheck(sorted, (size_t)(u ? u : 1) * sizeof(int64_t));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) inverse[i] = keys_lower_bound(*uniq, u, in[i]);   // present by construction
    return u;
}

void rowset_build(RowSet* rs, const NgramHash* nh, const int64_t* ids, int B, int T) {
    memset(rs, 0, sizeof *rs);
    rs->n_layers = nh->n_layers;
    rs->h_total = nh->h_total;
    rs->n_pos = (long)B * T * nh->h_total;
    size_t total = (size_t)rs->n_layers * rs->n_pos;
    rs->ids = mallocCheck((total ? total : 1) * sizeof(int64_t));
    rs->inverse = mallocCheck((total ? total : 1) * sizeof(int64_t));
    int64_t* keys = mallocCheck((total ? total : 1) * sizeof(int64_t));
    for (int l = 0; l < nh->n_layers; l++) {
        int64_t* out = rs->ids + (size_t)l * rs->n_pos;
        ngram_hash_ids(nh, l, ids, B, T, 1, out);
        for (long p = 0; p < rs->n_pos; p++) keys[(size_t)l * rs->n_pos + p] = ROWKEY(l, out[p]);
    }
    rs->n_unique = keys_dedup(keys, total, &rs->keys, rs->inverse);
    free(keys);
}

void rowset_free(RowSet* rs) {
    free(rs->ids);
    free(rs->keys);
    free(rs->inverse);
    memset(rs, 0, sizeof *rs);
}

void rows_expand(float* out, const float* rows, const int64_t* inv, const int64_t* pos, size_t total, int Dh) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < total; i++) {
        int64_t u = pos ? pos[inv[i]] : inv[i];
        memcpy(out + i * Dh, rows + (size_t)u * Dh, (size_t)Dh * sizeof(float));
    }
}

void rows_reduce(float* grads, const float* de, const int64_t* inv, const int64_t* pos, size_t total,
                 int64_t n_unique, int Dh) {
    memset(grads, 0, (size_t)n_unique * Dh * sizeof(float));
    for (size_t i = 0; i < total; i++) {   // position order: deterministic sums
        int64_t u = pos ? pos[inv[i]] : inv[i];
        float* g = grads + (size_t)u * Dh;
        const float* d = de + i * Dh;
        for (int j = 0; j < Dh; j++) g[j] += d[j];
    }
}

void rowset_expand(const RowSet* rs, const float* unique_rows, const int64_t* pos, int Dh, float* out) {
    rows_expand(out, unique_rows, rs->inverse, pos, (size_t)rs->n_layers * rs->n_pos, Dh);
}

void rowset_reduce(const RowSet* rs, const float* de, const int64_t* pos, int Dh, float* unique_grads) {
    rows_reduce(unique_grads, de, rs->inverse, pos, (size_t)rs->n_layers * rs->n_pos, rs->n_unique, Dh);
}

void tables_init(EngramTables* t, Backend* be, const int64_t* rows, int n_layers, int Dh, int rank, int P) {
    memset(t, 0, sizeof *t);
    t->be = be;
    t->n_layers = n_layers;
    t->Dh = Dh;
    t->rows = mallocCheck((size_t)n_layers * sizeof(int64_t));
    t->first = mallocCheck((size_t)n_layers * sizeof(int64_t));
    t->local = mallocCheck((size_t)n_layers * sizeof(int64_t));
    t->table = callocCheck(n_layers, sizeof(float*));
    t->m = callocCheck(n_layers, sizeof(float*));
    t->v = callocCheck(n_layers, sizeof(float*));
    t->updates = callocCheck(n_layers, sizeof(int64_t*));
    for (int l = 0; l < n_layers; l++) {
        t->rows[l] = rows[l];
        shard_row_range(rows[l], P, rank, &t->first[l], &t->local[l]);
        size_t n = (size_t)t->local[l] * Dh;
        t->table[l] = be->alloc(be, n * sizeof(float));   // zeroed (page-aligned host memory on the CPU)
        t->m[l] = be->alloc(be, n * sizeof(float));
        t->v[l] = be->alloc(be, n * sizeof(float));
        t->updates[l] = be->alloc(be, (size_t)t->local[l] * sizeof(int64_t));
    }
}

void tables_fill_normal(EngramTables* t, uint64_t seed, double std) {
    for (int l = 0; l < t->n_layers; l++) {
        uint64_t stream = rng_stream("engram.table") + (uint64_t)l;
        size_t bytes = (size_t)t->local[l] * t->Dh * sizeof(float);
        float* h = backend_host_view(t->be, t->table[l], bytes, 0);   // the table itself on the CPU
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < t->local[l]; r++)
            for (int j = 0; j < t->Dh; j++) {
                uint64_t idx = (uint64_t)(t->first[l] + r) * (uint64_t)t->Dh + (uint64_t)j;
                h[r * t->Dh + j] = (float)(std * rng_normal(seed, stream, idx));
            }
        backend_host_done(t->be, h, t->table[l], bytes, 1);
    }
}

void tables_free(EngramTables* t) {
    for (int l = 0; l < t->n_layers; l++) {
        t->be->free(t->be, t->table[l]);
        t->be->free(t->be, t->m[l]);
        t->be->free(t->be, t->v[l]);
        t->be->free(t->be, t->updates[l]);
    }
    free(t->table);
    free(t->m);
    free(t->v);
    free(t->updates);
    free(t->rows);
    free(t->first);
    free(t->local);
    memset(t, 0, sizeof *t);
}

/* Gathers of at least this many floats (16 MB) use OpenMP threads. */
#define GATHER_PARALLEL_FLOATS_ ((int64_t)1 << 22)
/* Keys per piece of a gather: a thread's unit of work. */
#define GATHER_PIECE_ 4096

/* One table row of key (its layer's table held here: checked), the layer remembered in *l, *base and
 * *local so that a run of keys of one layer (sorted keys are such runs) decodes no key. */
static inline const float* gather_row_(const EngramTables* t, int64_t key, int* l, int64_t* base, uint64_t* local) {
    uint64_t r = (uint64_t)(key - *base);
    if (r >= *local) {   // another layer than the last key's (for any other layer, key - base is out of range)
        *l = ROWKEY_LAYER(key);
        if (*l < 0 || *l >= t->n_layers) engram_die("this is a bug: a key of no Engram layer", "key %lld", (long long)key);
        *base = ROWKEY(*l, t->first[*l]), *local = (uint64_t)t->local[*l];
        r = (uint64_t)(key - *base);
        if (r >= *local)
            engram_die("this is a bug: a row was gathered from a rank that does not own it",
                       "row %lld of layer %d is not held here", (long long)ROWKEY_ROW(key), *l);
    }
    return t->table[*l] + r * (uint64_t)t->Dh;
}

void tables_gather_local(const EngramTables* t, const int64_t* keys, int64_t n, float* out) {
    // threads only for large gathers: a team costs more than it saves on a few MB (and much more
    // where ranks already fill the cores)
    const size_t row_bytes = (size_t)t->Dh * sizeof(float);
    const int64_t pieces = (n + GATHER_PIECE_ - 1) / GATHER_PIECE_;
#pragma omp parallel for schedule(static) if (n * t->Dh >= GATHER_PARALLEL_FLOATS_)
    for (int64_t c = 0; c < pieces; c++) {
        const int64_t lo = c * GATHER_PIECE_, hi = lo + GATHER_PIECE_ < n ? lo + GATHER_PIECE_ : n;
        int l = 0, pl = 0;
        int64_t base = 0, pbase = 0;   // the current layer's key of the first row held here, and the prefetch's
        uint64_t local = 0, plocal = 0;
        for (int64_t i = lo; i < hi; i++) {
            if (i + ENGRAM_PREFETCH_AHEAD < hi)   // the rows are scattered over tables larger than the caches
                engram_prefetch(gather_row_(t, keys[i + ENGRAM_PREFETCH_AHEAD], &pl, &pbase, &plocal), row_bytes);
            memcpy(out + i * t->Dh, gather_row_(t, keys[i], &l, &base, &local), row_bytes);
        }
    }
}

/* Contribution i of rows_sum_owned: self's rows in [self_lo, self_hi), recv's elsewhere. */
static inline const float* contribution_(const float* recv, const float* self, int64_t self_lo, int64_t self_hi,
                                         int64_t i, size_t D) {
    return i >= self_lo && i < self_hi ? self + (size_t)(i - self_lo) * D : recv + (size_t)i * D;
}

void rows_sum_owned(float* own, const float* recv, const float* self, int64_t self_lo, int64_t self_hi,
                    const int64_t* own_inv, int64_t n_recv, int Dh) {
    const size_t D = (size_t)Dh;
    int64_t fresh = 0;   // the next row number not yet seen: row own_inv[i] is new exactly when it equals it
    for (int64_t i = 0; i < n_recv;) {
        if (own_inv[i] == fresh) {
            // a run of first contributions goes to consecutive rows from consecutive ones (within
            // recv or within self): one copy (the first asker's are all such; most others' too)
            const int64_t stop = i < self_lo ? self_lo : i < self_hi ? self_hi : n_recv;
            int64_t n = 1;
            while (i + n < stop && own_inv[i + n] == fresh + n) n++;
            const float* c = contribution_(recv, self, self_lo, self_hi, i, D);
            memcpy(own + (size_t)fresh * D, c, (size_t)n * D * sizeof(float));
            fresh += n, i += n;
            continue;
        }
        if (i + ENGRAM_PREFETCH_AHEAD < n_recv)   // rows of own are scattered (megabytes of them)
            engram_prefetch(own + (size_t)own_inv[i + ENGRAM_PREFETCH_AHEAD] * D, D * sizeof(float));
        float* g = own + (size_t)own_inv[i] * D;
        const float* c = contribution_(recv, self, self_lo, self_hi, i, D);
        for (size_t j = 0; j < D; j++) g[j] += c[j];
        i++;
    }
}
