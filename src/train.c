/*
 * train.c — the single-rank training step (train.h).
 */
#include "train.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "optim.h"

void trainer_init(Trainer* tr, const Config* c, int B, uint64_t seed) {
    memset(tr, 0, sizeof *tr);
    model_init(&tr->model, c, B);
    model_init_params(&tr->model, seed);
    const Model* m = &tr->model;
    int ne = m->hash.n_layers;
    size_t per = (size_t)B * m->T * m->Ein;
    tr->cids = mallocCheck((size_t)B * m->T * sizeof(int64_t));
    tr->e = callocCheck(ne * per + 1, sizeof(float));
    tr->de = callocCheck(ne * per + 1, sizeof(float));
    tr->e_ptr = callocCheck(ne + 1, sizeof(float*));
    tr->de_ptr = callocCheck(ne + 1, sizeof(float*));
    for (int i = 0; i < ne; i++) tr->e_ptr[i] = tr->e + i * per, tr->de_ptr[i] = tr->de + i * per;
    if (ne > 0) {
        tables_init(&tr->tables, m->hash.rows, ne, c->engram.head_dim, 0, 1);
        tables_fill_normal(&tr->tables, seed, c->engram.init_std);
        tr->uniq = mallocCheck(ne * per * sizeof(float));   // unique rows ≤ lookups
    }
}

void trainer_free(Trainer* tr) {
    if (tr->model.hash.n_layers > 0) tables_free(&tr->tables);
    rowset_free(&tr->rows);
    free(tr->cids);
    free(tr->e);
    free(tr->de);
    free(tr->e_ptr);
    free(tr->de_ptr);
    free(tr->uniq);
    model_free(&tr->model);
}

/* Hash the batch and gather its rows into e. */
static void gather_rows_(Trainer* tr, const int32_t* x) {
    Model* m = &tr->model;
    if (m->hash.n_layers == 0) return;
    size_t BT = (size_t)m->B * m->T;
    for (size_t i = 0; i < BT; i++) tr->cids[i] = x[i];   // identity compression (no tokenizer)
    rowset_free(&tr->rows);
    rowset_build(&tr->rows, &m->hash, tr->cids, m->B, m->T);
    tables_gather_local(&tr->tables, tr->rows.keys, tr->rows.n_unique, tr->uniq);
    rowset_expand(&tr->rows, tr->uniq, tr->tables.Dh, tr->e);
}

static double forward_(Trainer* tr, const int32_t* x, const int32_t* y) {
    Model* m = &tr->model;
    double n_tok = (double)m->B * m->T;
    gather_rows_(tr, x);
    tr->ce = model_forward(m, x, y, tr->e_ptr) / n_tok;
    tr->aux = model_aux_loss(m, n_tok);
    tr->dropped = 0;
    for (int l = 0; l < m->L; l++) tr->dropped += m->acts[l].moe_dropped;
    tr->loss = tr->ce + tr->aux;
    return tr->loss;
}

double trainer_loss(Trainer* tr, const int32_t* x, const int32_t* y) { return forward_(tr, x, y); }

double trainer_step(Trainer* tr, const int32_t* x, const int32_t* y) {
    Model* m = &tr->model;
    const Config* c = m->cfg;
    double loss = forward_(tr, x, y);
    model_backward(m, (double)m->B * m->T, tr->de_ptr);
    double ss = optim_sumsq(m->grads, m->tt.dense_numel);
    int has_rows = m->hash.n_layers > 0;
    if (has_rows) {
        rowset_reduce(&tr->rows, tr->de, tr->tables.Dh, tr->uniq);   // uniq now holds row gradients
        ss += optim_sumsq(tr->uniq, (size_t)tr->rows.n_unique * tr->tables.Dh);
    }
    tr->grad_norm = sqrt(ss);
    tr->skipped = !isfinite(loss) || !isfinite(tr->grad_norm);
    if (tr->skipped) {   // a skipped step does not advance Adam's count
        tr->bad_steps++;
        return loss;
    }
    double scale = optim_clip_scale(tr->grad_norm, c->train.grad_clip);
    tr->lr = optim_lr(c, (int)tr->step);
    tr->step++;
    optim_adamw(&m->tt, m->params, m->grads, m->m, m->v, c, tr->lr, tr->step, scale);
    if (has_rows) optim_rows_adam(&tr->tables, tr->rows.keys, tr->rows.n_unique, tr->uniq, c, tr->lr, tr->step, scale);
    return loss;
}
