/*
 * engram_rows.h — the Engram table rows one step touches: the hash ids of every Engram layer for
 * the local batch, deduplicated into sorted unique (layer, row) keys with an inverse index, and
 * the local tables with their Adam moments. Gather (forward) and gradient accumulation (backward)
 * go through the unique keys, so a row asked for by many tokens is fetched and updated once.
 *
 * Single-process here; parallel/engram_exchange moves the unique keys' rows between owners.
 * Not here: MPI, the model's math.
 */
#ifndef ENGRAM_ENGRAM_ROWS_H
#define ENGRAM_ENGRAM_ROWS_H

#include <stdint.h>

#include "ngram_hash.h"

struct Backend;

/* key = layer << 48 | row: layers < 2^15, rows < 2^48 */
#define ROWKEY(layer, row) (((int64_t)(layer) << 48) | (int64_t)(row))
#define ROWKEY_LAYER(k) ((int)((k) >> 48))
#define ROWKEY_ROW(k) ((k) & ((INT64_C(1) << 48) - 1))

typedef struct {
    int n_layers, h_total;
    long n_pos;            // B·T·H_total lookups per layer
    int64_t* ids;          // [n_layers, B, T, H_total] global rows of each layer's table
    int64_t n_unique;
    int64_t* keys;         // [n_unique] sorted unique ROWKEYs
    int64_t* inverse;      // [n_layers, B·T·H_total] index into keys
} RowSet;

/* First index of sorted keys[0..n) whose key is not below key (n if none). */
int64_t keys_lower_bound(const int64_t* keys, int64_t n, int64_t key);
/* Sorted unique values of in[n] into *uniq (malloc'd) and, for each input, its index there. */
int64_t keys_dedup(const int64_t* in, size_t n, int64_t** uniq, int64_t* inverse);

/* Hash ids (compressed [B,T]) for every Engram layer and dedup them. */
void rowset_build(RowSet* rs, const NgramHash* nh, const int64_t* ids, int B, int T);
void rowset_free(RowSet* rs);

/* Local tables of every Engram layer: rows [first, first+local) of each, with Adam moments and
 * per-row update counts. On one rank first = 0 and local = rows. table, m, v and updates are the
 * backend's memory (host memory on the CPU backend); the row ranges are host memory. */
typedef struct {
    struct Backend* be;    // whose memory the tables are
    int n_layers, Dh;
    int64_t* rows;         // [n_layers] global rows of each table
    int64_t* first;        // [n_layers] first row held here
    int64_t* local;        // [n_layers] rows held here
    float** table;         // [n_layers] → [local, Dh]
    float** m;             // [n_layers] → [local, Dh]
    float** v;             // [n_layers] → [local, Dh]
    int64_t** updates;     // [n_layers] → [local] times each row was updated
} EngramTables;

void tables_init(EngramTables* t, struct Backend* be, const int64_t* rows, int n_layers, int Dh, int rank, int P);
/* N(0, std) rows, each drawn from (seed, layer, global row) so any P gives the same table (drawn on
 * the host, sent to the backend's memory). */
void tables_fill_normal(EngramTables* t, uint64_t seed, double std);
void tables_free(EngramTables* t);

/* unique rows → e per layer [B·T, H_total·Dh] (e[l] = out + l·n_pos·Dh). Unique key u's row is
 * at unique_rows[pos[u]] (pos NULL: at u), so rows can stay in the order they arrived in. */
void rowset_expand(const RowSet* rs, const float* unique_rows, const int64_t* pos, int Dh, float* out);
/* de per layer [B·T, H_total·Dh] → unique-row gradients [n_unique, Dh] (overwritten; key u's at
 * pos[u], or u), summed in position order so the result is deterministic. */
void rowset_reduce(const RowSet* rs, const float* de, const int64_t* pos, int Dh, float* unique_grads);
/* The same over raw arrays (the CPU backend's rows_expand / rows_reduce, backend.h): total lookups,
 * inv [total] into the unique keys, pos [n_unique] or NULL. */
void rows_expand(float* out, const float* rows, const int64_t* inv, const int64_t* pos, size_t total, int Dh);
void rows_reduce(float* grads, const float* de, const int64_t* inv, const int64_t* pos, size_t total,
                 int64_t n_unique, int Dh);
/* Copy the rows of keys [n] (held here) out of the local tables into out [n,Dh] (the CPU backend's
 * tables_gather, backend.h). */
void tables_gather_local(const EngramTables* t, const int64_t* keys, int64_t n, float* out);
/* An owner's sums of gradient contributions (the CPU backend's rows_sum_owned, backend.h): for i <
 * n_recv in order, contribution i is self[i − self_lo] when self_lo ≤ i < self_hi, else recv[i]
 * (rows of Dh), and goes to row own_inv[i] of own [., Dh]. Rows are numbered in order of first
 * contribution: a row's first is copied, the later ones added, so each row is summed in i order
 * (rank order, for the exchange). */
void rows_sum_owned(float* own, const float* recv, const float* self, int64_t self_lo, int64_t self_hi,
                    const int64_t* own_inv, int64_t n_recv, int Dh);

#endif
