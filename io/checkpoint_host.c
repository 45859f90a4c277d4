/*
 * checkpoint_host.c — the Trainer as checkpoint code sees it (checkpoint_layout.h): save and load
 * read and write host memory, so on a device backend the dense params, m and v cross through host
 * copies around them (to_host before a save, to_device after a load). On the CPU backend the
 * Trainer itself: nothing is copied.
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

Trainer* ckpt_host_view(const Trainer* tr, int fetch) {
    if (tr->be->host) return (Trainer*)tr;
    Trainer* view = mallocCheck(sizeof *view);
    *view = *tr;
    size_t bytes = tr->model.tt.dense_numel * sizeof(float);
    for (int i = 0; i < 3; i++) *dense_(view, i) = backend_host_view(tr->be, *dense_((Trainer*)tr, i), bytes, fetch);
    return view;
}

void ckpt_host_done(Trainer* view, Trainer* tr, int store) {
    if (view == tr) return;
    size_t bytes = tr->model.tt.dense_numel * sizeof(float);
    for (int i = 0; i < 3; i++) backend_host_done(tr->be, *dense_(view, i), *dense_(tr, i), bytes, store);
    if (store) tr->step = view->step, tr->bad_steps = view->bad_steps;   // what a load sets besides them
    free(view);
}
