/*
 * checkpoint_host.c — the Trainer as checkpoint code sees it (checkpoint_layout.h): save and load
 * read and write host memory, so on a device backend the dense params, m and v and the Engram
 * tables, their moments and update counts cross through host copies around them (to_host before a
 * save, to_device after a load). On the CPU backend the Trainer itself: nothing is copied.
 *
 * Not here: which datasets there are and where their values live (checkpoint_layout.c).
 */
#include <stdlib.h>

#include "checkpoint_layout.h"
#include "common.h"

/* The model's dense buffers the checkpoint holds: params, m and v. */
static float** dense_(Trainer* tr, int i) {
    return i == 0 ? &tr->model.params : i == 1 ? &tr->model.m : &tr->model.v;
}

/* Layer l's table buffers: table, m, v (floats) and updates (int64), with their bytes. */
static void** table_part_(EngramTables* t, int l, int i, size_t* bytes) {
    size_t rows = (size_t)t->local[l];
    *bytes = i == 3 ? rows * sizeof(int64_t) : rows * (size_t)t->Dh * sizeof(float);
    return i == 0 ? (void**)&t->table[l] : i == 1 ? (void**)&t->m[l] : i == 2 ? (void**)&t->v[l] : (void**)&t->updates[l];
}

Trainer* ckpt_host_view(const Trainer* tr, int fetch) {
    if (tr->be->host) return (Trainer*)tr;
    Trainer* view = mallocCheck(sizeof *view);
    *view = *tr;
    size_t bytes = tr->model.tt.dense_numel * sizeof(float);
    for (int i = 0; i < 3; i++) *dense_(view, i) = backend_host_view(tr->be, *dense_((Trainer*)tr, i), bytes, fetch);
    // the tables: the view's own pointer arrays, each entry a host copy
    EngramTables* t = &view->tables;
    int nl = t->n_layers;
    t->table = mallocCheck(((size_t)nl + 1) * sizeof(float*)), t->m = mallocCheck(((size_t)nl + 1) * sizeof(float*));
    t->v = mallocCheck(((size_t)nl + 1) * sizeof(float*)), t->updates = mallocCheck(((size_t)nl + 1) * sizeof(int64_t*));
    for (int l = 0; l < nl; l++)
        for (int i = 0; i < 4; i++) {
            size_t n;
            void* d = *table_part_((EngramTables*)&tr->tables, l, i, &n);
            *table_part_(t, l, i, &n) = backend_host_view(tr->be, d, n, fetch);
        }
    return view;
}

void ckpt_host_done(Trainer* view, Trainer* tr, int store) {
    if (view == tr) return;
    size_t bytes = tr->model.tt.dense_numel * sizeof(float);
    for (int i = 0; i < 3; i++) backend_host_done(tr->be, *dense_(view, i), *dense_(tr, i), bytes, store);
    EngramTables* t = &view->tables;
    for (int l = 0; l < t->n_layers; l++)
        for (int i = 0; i < 4; i++) {
            size_t n;
            void* h = *table_part_(t, l, i, &n);
            backend_host_done(tr->be, h, *table_part_(&tr->tables, l, i, &n), n, store);
        }
    free(t->table), free(t->m), free(t->v), free(t->updates);
    if (store) tr->step = view->step, tr->bad_steps = view->bad_steps;   // what a load sets besides them
    free(view);
}
