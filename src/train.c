/*
 * train.c — the training step (train.h): one process, or P data-parallel ranks. The model, the
 * dense gradients' all-reduce, Σg² and the AdamW step go through the trainer's Backend, and so do
 * the Engram tables (backend memory), their rows' gather, expansion into e, the sums of de per
 * unique row, the row exchange's moves and sums, and the tables' lazy Adam; hashing, dedup, the
 * exchange's plan and the MoE statistics' sums stay on the host, and the step's lookup indices and
 * keys go to the device once per step.
 */
#include "train.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "device.h"
#include "grad_sync.h"
#include "optim.h"

#define BUCKET_FLOATS ((size_t)1 << 22)   // 16 MiB all-reduce buckets

void trainer_init(Trainer* tr, const Config* c, int B, uint64_t seed, const Comm* comm) {
    trainer_init_on(tr, c, B, seed, comm, NULL);
}

void trainer_init_on(Trainer* tr, const Config* c, int B, uint64_t seed, const Comm* comm, Backend* be) {
    memset(tr, 0, sizeof *tr);
    tr->comm = comm;
    if (!be) {   // the backend of parallel.device, with collectives over comm's ranks (none without comm)
        char err[512];
        if (comm && device_open(&tr->own_be, c->parallel.device, c->train.precision, comm->comm, err, sizeof err) != 0)
            engram_fail("%s", err);
        if (!comm && c->parallel.device != DEVICE_CPU)
            engram_die("run it as an MPI process (engram train, engram bench train)", "parallel.device=cuda needs MPI");
        if (!comm) backend_cpu_init(&tr->own_be);
        be = &tr->own_be;
    }
    tr->be = be;
    tr->ep = c->parallel.expert_parallel;
    if (c->moe.layers.n == 0) tr->ep = 1;   // nothing to shard
    if (tr->ep > 1 && !comm)
        engram_die("run under mpirun with a multiple of parallel.expert_parallel ranks, or set parallel.expert_parallel=1",
                   "parallel.expert_parallel = %d needs MPI ranks", tr->ep);
    if (tr->ep > 1) {
        expert_exchange_init(&tr->xx, comm, be, tr->ep, c->moe.experts, c->model.d_model, c->moe.layers.n);
        model_init_on(&tr->model, c, B, tr->ep, tr->xx.pos, be);
        tr->model.route = &tr->xx.route;
    } else {
        model_init_on(&tr->model, c, B, 1, 0, be);
    }
    model_init_params(&tr->model, seed);
    const Model* m = &tr->model;
    tr->n_tok_glob = (double)B * m->T;
    if (comm) grad_sync_sum_f64(comm, &tr->n_tok_glob, 1);
    int ne = m->hash.n_layers;
    size_t per = (size_t)B * m->T * m->Ein;
    tr->cids = mallocCheck(((size_t)B * m->T + 1) * sizeof(int64_t));
    tr->x_next = mallocCheck(((size_t)B * m->T + 1) * sizeof(int32_t));
    tr->e = be->alloc(be, (ne * per + 1) * sizeof(float));   // the model reads them on the backend
    tr->de = be->alloc(be, (ne * per + 1) * sizeof(float));
    tr->e_ptr = callocCheck(ne + 1, sizeof(float*));
    tr->de_ptr = callocCheck(ne + 1, sizeof(float*));
    for (int i = 0; i < ne; i++) tr->e_ptr[i] = tr->e + i * per, tr->de_ptr[i] = tr->de + i * per;
    if (ne > 0) {
        tables_init(&tr->tables, be, m->hash.rows, ne, c->engram.head_dim, comm ? comm->rank : 0,
                    comm ? comm->size : 1);
        tables_fill_normal(&tr->tables, seed, c->engram.init_std);
        if (comm) exchange_init(&tr->ex, comm, be, c->engram.head_dim);
        else tr->uniq = be->alloc(be, (ne * per + 1) * sizeof(float));   // unique rows ≤ lookups
    }
}

/* This step's lookup indices and keys on the device: made once a step, dropped before its RowSet
 * changes (the RowSet's own arrays on a host backend). */
static void step_views_(Trainer* tr, int make) {
    const RowSet* rs = &tr->rows;
    if (!make) {
        if (tr->inv_d) backend_device_done(tr->be, tr->inv_d, rs->inverse, 0, 0);
        if (tr->keys_d) backend_device_done(tr->be, tr->keys_d, rs->keys, 0, 0);
        tr->inv_d = tr->keys_d = NULL;
        return;
    }
    size_t total = (size_t)rs->n_layers * rs->n_pos;
    tr->inv_d = backend_device_view(tr->be, rs->inverse, total * sizeof(int64_t), 1);
    if (!tr->comm) tr->keys_d = backend_device_view(tr->be, rs->keys, (size_t)rs->n_unique * sizeof(int64_t), 1);
}

void trainer_free(Trainer* tr) {
    step_views_(tr, 0);
    if (tr->model.hash.n_layers > 0) {
        if (tr->comm) exchange_free(&tr->ex);   // before the tables its plans point into
        tables_free(&tr->tables);
    }
    rowset_free(&tr->rows);
    rowset_free(&tr->rows_next);
    free(tr->x_next);
    free(tr->cids);
    tr->be->free(tr->be, tr->e);
    tr->be->free(tr->be, tr->de);
    free(tr->e_ptr);
    free(tr->de_ptr);
    if (tr->uniq) tr->be->free(tr->be, tr->uniq);
    model_free(&tr->model);
    if (tr->ep > 1) expert_exchange_free(&tr->xx);
    if (tr->be == &tr->own_be) tr->own_be.close(&tr->own_be);
}

/* Compress x [B,T] to V' (negative ids pass through, spec/ENGRAM.md §2.3; identity without a
 * tokenizer) and hash and dedup it into rs. */
static void hash_batch_(Trainer* tr, const int32_t* x, RowSet* rs) {
    Model* m = &tr->model;
    size_t BT = (size_t)m->B * m->T;
    for (size_t i = 0; i < BT; i++) tr->cids[i] = tr->lookup && x[i] >= 0 ? tr->lookup[x[i]] : x[i];
    rowset_free(rs);
    rowset_build(rs, &m->hash, tr->cids, m->B, m->T);
}

/* Post the next step's hashing and plan. */
static void prefetch_(Trainer* tr, const int32_t* x_next) {
    Model* m = &tr->model;
    if (m->hash.n_layers == 0) return;
    memcpy(tr->x_next, x_next, (size_t)m->B * m->T * sizeof(int32_t));
    hash_batch_(tr, x_next, &tr->rows_next);
    if (tr->comm) exchange_plan_next(&tr->ex, &tr->rows_next, &tr->tables);
    tr->prefetched = 1;
}

/* Let the next step's plan advance (no-op without a prefetch). */
static void progress_(Trainer* tr) {
    if (tr->comm && tr->prefetched && tr->model.hash.n_layers) exchange_progress(&tr->ex);
}

/* The step's unique rows [n_unique, Dh] (the exchange's or the local gather's, backend memory;
 * unique key u at pos[u], or u) to the layers' e (backward = 0), or de's sums per unique row into
 * them (1). */
static void rows_move_(Trainer* tr, int backward, float* uniq, const int64_t* pos) {
    Backend* be = tr->be;
    const RowSet* rs = &tr->rows;
    size_t total = (size_t)rs->n_layers * rs->n_pos;
    if (!backward) be->rows_expand(be, tr->e, uniq, tr->inv_d, pos, total, tr->tables.Dh);
    else be->rows_reduce(be, uniq, tr->de, tr->inv_d, pos, total, rs->n_unique, tr->tables.Dh);
}

/* Hash the batch (or take the prefetched hashing) and bring in its rows: from the owners, or from
 * the local tables. */
static void gather_rows_(Trainer* tr, const int32_t* x) {
    Model* m = &tr->model;
    if (m->hash.n_layers == 0) return;
    step_views_(tr, 0);   // the previous step's, before its RowSet goes
    if (tr->prefetched) {
        if (memcmp(tr->x_next, x, (size_t)m->B * m->T * sizeof(int32_t)) != 0)
            engram_die("the batch given to trainer_step must be the one given to trainer_prefetch",
                       "prefetched batch differs from the step's batch");
        RowSet t = tr->rows;
        tr->rows = tr->rows_next;
        tr->rows_next = t;
        if (tr->comm) exchange_use_next(&tr->ex);
        tr->prefetched = 0;
    } else {
        hash_batch_(tr, x, &tr->rows);
        if (tr->comm) exchange_plan(&tr->ex, &tr->rows, &tr->tables);
    }
    step_views_(tr, 1);
    if (tr->comm) {   // rows stay where they arrived; the expansion reads them through the positions
        exchange_forward(&tr->ex, &tr->tables);
        rows_move_(tr, 0, tr->ex.srows, tr->ex.spos);
    } else {
        tr->be->tables_gather(tr->be, &tr->tables, tr->keys_d, tr->rows.n_unique, tr->uniq);
        rows_move_(tr, 0, tr->uniq, NULL);
    }
}

/* MoE statistics, capacity drops and the CE sum, summed over ranks in one all-reduce. */
static double reduce_forward_stats_(Trainer* tr, double ce_sum) {
    Model* m = &tr->model;
    const int E = m->mdims.E;
    int n_moe = 0;
    for (int l = 0; l < m->L; l++) n_moe += m->P.blocks[l].is_moe;
    size_t n = (size_t)n_moe * (2 * E + 2) + 1;
    double* buf = mallocCheck(n * sizeof(double));
    size_t k = 0;
    for (int l = 0; l < m->L; l++) {
        if (!m->P.blocks[l].is_moe) continue;
        memcpy(buf + k, m->acts[l].moe_counts, E * sizeof(double)), k += E;
        memcpy(buf + k, m->acts[l].moe_psum, E * sizeof(double)), k += E;
        buf[k++] = (double)m->acts[l].moe_dropped;
        buf[k++] = (double)m->acts[l].moe_kept;
    }
    buf[k++] = ce_sum;
    if (tr->comm) grad_sync_sum_f64(tr->comm, buf, (int)n);
    k = 0;
    tr->dropped = tr->dispatched = 0;
    for (int l = 0; l < m->L; l++) {
        if (!m->P.blocks[l].is_moe) continue;
        memcpy(m->acts[l].moe_counts, buf + k, E * sizeof(double)), k += E;
        memcpy(m->acts[l].moe_psum, buf + k, E * sizeof(double)), k += E;
        tr->dropped += (long)buf[k++];
        tr->dispatched += (long)buf[k++];
    }
    ce_sum = buf[k];
    free(buf);
    return ce_sum;
}

static double forward_(Trainer* tr, const int32_t* x, const int32_t* y) {
    Model* m = &tr->model;
    double ce_sum = model_forward(m, x, y, tr->e_ptr);
    ce_sum = reduce_forward_stats_(tr, ce_sum);
    tr->ce = ce_sum / tr->n_tok_glob;
    tr->aux = model_aux_loss(m, tr->n_tok_glob);
    tr->loss = tr->ce + tr->aux;
    return tr->loss;
}

double trainer_loss(Trainer* tr, const int32_t* x, const int32_t* y) {
    if (tr->prefetched) engram_die("finish the prefetched step first", "trainer_loss while a step is prefetched");
    gather_rows_(tr, x);
    return forward_(tr, x, y);
}

/* Row gradients to their owners; returns Σ g² over the rows this rank updates. Leaves the keys
 * and summed gradients this rank updates in *keys, *grads (backend memory). */
static double row_grads_(Trainer* tr, const int64_t** keys, const float** grads, int64_t* n) {
    if (tr->comm) {   // gradients per unique row, straight into the send buffer
        rows_move_(tr, 1, tr->ex.srows, tr->ex.spos);
        exchange_backward(&tr->ex);
        *keys = tr->ex.own_keys, *grads = tr->ex.own_grads, *n = tr->ex.n_own;
    } else {
        rows_move_(tr, 1, tr->uniq, NULL);
        *keys = tr->keys_d, *grads = tr->uniq, *n = tr->rows.n_unique;
    }
    return tr->be->sumsq(tr->be, *grads, (size_t)*n * tr->tables.Dh);
}

/* Σ g² over the dense gradients. Under expert parallelism each rank holds its experts' part: the
 * replicated tensors are counted here, the experts once over the group. */
static double dense_sumsq_(Trainer* tr) {
    const TensorTable* tt = &tr->model.tt;
    if (tr->ep == 1) return tr->be->sumsq(tr->be, tr->model.grads, tt->dense_numel);
    double ss = 0.0;
    for (int i = 0; i < tt->n; i++)
        if (tt->t[i].group != OPT_TABLE && tt->t[i].shard != SHARD_EXPERTS)
            ss += tr->be->sumsq(tr->be, tr->model.grads + tt->t[i].offset, (size_t)tt->t[i].local_numel);
    return ss + expert_sumsq(tr->be, &tr->xx, tt, tr->model.grads);
}

/* Test hook for the non-finite path: with ENGRAM_TEST_NONFINITE_FROM=N every step from the N-th
 * (1-based) gets a NaN gradient, so tests reach the skip-and-stop logic without a real blow-up. */
static int nonfinite_injected_(const Trainer* tr) {
    static long from = -2;
    if (from == -2) {
        const char* v = getenv("ENGRAM_TEST_NONFINITE_FROM");
        from = v ? atol(v) : -1;
    }
    return from > 0 && tr->step + tr->bad_steps + 1 >= from;
}

double trainer_step(Trainer* tr, const int32_t* x, const int32_t* y, const int32_t* x_next) {
    Model* m = &tr->model;
    const Config* c = m->cfg;
    double t0 = engram_now();
    if (tr->ep > 1) expert_exchange_reset(&tr->xx);
    gather_rows_(tr, x);
    if (x_next) prefetch_(tr, x_next);
    m->head_grad = 1;   // the head's gradients come with its forward (model.h)
    double loss = forward_(tr, x, y);
    m->head_grad = 0;
    progress_(tr);
    model_backward(m, tr->n_tok_glob, tr->de_ptr);
    if (nonfinite_injected_(tr)) tr->be->to_device(tr->be, m->grads, &(float){NAN}, sizeof(float));
    progress_(tr);
    tr->t_allreduce = tr->comm ? grad_sync_dense(tr->be, &m->tt, m->grads, BUCKET_FLOATS) : 0.0;
    if (tr->ep > 1) tr->t_allreduce += expert_grad_sync(tr->be, &tr->xx, &m->tt, m->grads);
    progress_(tr);
    double ss_dense = dense_sumsq_(tr), ss_rows = 0;
    const int64_t* keys = NULL;
    const float* grads = NULL;
    int64_t n_keys = 0;
    int has_rows = m->hash.n_layers > 0;
    if (has_rows) ss_rows = row_grads_(tr, &keys, &grads, &n_keys);
    if (tr->comm) grad_sync_sum_f64(tr->comm, &ss_rows, 1);   // each owner holds part of the rows
    tr->grad_norm = sqrt(ss_dense + ss_rows);
    tr->t_exchange = has_rows && tr->comm ? tr->ex.st.seconds : 0.0;
    tr->t_experts = tr->ep > 1 ? tr->xx.st.seconds : 0.0;
    tr->skipped = !isfinite(loss) || !isfinite(tr->grad_norm);   // identical on every rank
    if (tr->skipped) {   // a skipped step does not advance Adam's count
        tr->bad_steps++;
        tr->t_step = engram_now() - t0;
        return loss;
    }
    double scale = optim_clip_scale(tr->grad_norm, c->train.grad_clip);
    tr->lr = optim_lr(c, (int)tr->step);
    tr->step++;
    optim_adamw(tr->be, &m->tt, m->params, m->grads, m->m, m->v, c, tr->lr, tr->step, scale);
    if (has_rows) {
        AdamStep rs = optim_rows_step(c, tr->lr, tr->step, scale);
        tr->be->rows_adam(tr->be, &tr->tables, keys, n_keys, grads, &rs);
    }
    tr->t_step = engram_now() - t0;
    return loss;
}
