/*
 * tensors.h — the one tensor table. Every parameter of the model is listed here once, with its
 * user-visible name, logical shape, sharding kind, optimizer group and init; forward, backward,
 * optimizer, gradient sync, exchange and checkpoints all walk this table, and nothing else lists
 * tensors (ARCHITECTURE.md §3, names and shapes as §5 and docs/model.md).
 *
 * Storage: dense tensors live in flat buffers (params, grads, m, v) at the table's offsets, so the
 * same layout serves all four and index i pairs with index i. Engram tables are row-sharded and
 * live in their own buffers (one per Engram layer, this rank's rows only).
 *
 * Not here: the math (model.c, ops.c), the exchange (parallel/), files (io/).
 */
#ifndef ENGRAM_TENSORS_H
#define ENGRAM_TENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "engram_layer.h"
#include "moe.h"

typedef enum { SHARD_REPLICATED = 0, SHARD_ROWS = 1, SHARD_EXPERTS = 2 } ShardKind;
typedef enum { OPT_DECAY = 0, OPT_NO_DECAY = 1, OPT_TABLE = 2 } OptGroup;
typedef enum { INIT_NORMAL, INIT_NORMAL_RESID, INIT_ONES, INIT_ZEROS, INIT_TABLE } InitKind;

typedef struct {
    char name[64];        // "blocks.3.attn.wqkv"
    int ndim;
    int64_t shape[4];     // logical (global) shape
    int64_t numel;        // logical element count
    int64_t local_numel;  // elements this rank holds in the flat buffers (numel unless expert-sharded)
    int64_t local_first;  // index of its first element in the logical tensor
    int64_t rows_first;   // expert-sharded: first expert held ([E, ...] rows); else 0
    int64_t rows_local;   // expert-sharded: experts held; else shape[0]
    ShardKind shard;
    OptGroup group;
    InitKind init;
    size_t offset;        // dense: float offset in the flat buffers; tables: unused
    int block;            // block index, -1 for wte/wout/norm_f
    int engram;           // tables: index into engram.layers; else -1
} TensorInfo;

typedef struct {
    int n;
    TensorInfo* t;        // [n] in docs/model.md order
    size_t dense_numel;   // floats in each dense flat buffer (this rank's share of expert tensors)
    int ep, ep_rank;      // expert-parallel group size and this rank's position in its group
} TensorTable;

/* table_rows [n_engram_layers]: rows of each Engram layer's flat table (from NgramHash). Every
 * tensor is held whole (ep = 1): the logical layout that tools and single-process runs use. */
void tensors_build(TensorTable* tt, const Config* c, const int64_t* table_rows);
/* Expert parallelism: the routed experts [E, ...] are split into ep blocks of ceil(E/ep) experts
 * (shard.h's row split; the last positions may hold fewer, or none) and this rank, at position
 * ep_rank of its group, holds only its block; the dense offsets are laid out again accordingly. */
void tensors_shard_experts(TensorTable* tt, int ep, int ep_rank);
void tensors_free(TensorTable* tt);
const TensorInfo* tensors_find(const TensorTable* tt, const char* name);

/* Named pointers into one buffer class (params, grads, m or v), one struct per block. */
typedef struct {
    float *attn_norm, *wqkv, *wo, *ffn_norm;   // [D] [3D,D] [D,D] [D]
    float *w1, *w3, *w2;                       // dense FFN [F,D] [F,D] [D,F]; NULL in MoE blocks
    MoeWeights moe;                            // router NULL in dense blocks
    EngramWeights eng;                         // wk NULL in blocks without Engram
    int engram;                                // index into engram.layers, -1 if none
    int is_moe;
} BlockPtrs;

typedef struct {
    float *wte, *wout, *norm_f;   // [V,D] [V,D] (wout = wte when tied) [D]
    BlockPtrs* blocks;            // [L]
    int L;
} ModelPtrs;

/* Point p at buffer base (dense layout); blocks allocated here, free with tensors_ptrs_free. */
void tensors_point(ModelPtrs* p, const TensorTable* tt, float* base);
void tensors_ptrs_free(ModelPtrs* p);

#endif
