/*
 * model_check.c — compares the C model with the PyTorch reference (tests/reference/model_ref.py)
 * on one config: both start from the parameters stored in REF.h5 and see its batch.
 *   logits:          max|Δ| ≤ 1e-4 · max|ref|
 *   loss:            within 1e-5 relative (and the dropped-assignment count equal)
 *   every gradient:  max|Δ| ≤ 1e-4 · max|ref| of that tensor (Engram tables as dense [rows, Dh])
 *   10 steps:        each loss within 1e-4 relative
 * usage: model_check CONFIG.yaml REF.h5     (exit 0 when everything agrees)
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "h5io.h"
#include "train.h"

static int fails_ = 0;

static void check_(int ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void check_(int ok, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "  ok  " : "  FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (!ok) fails_++;
}

static void read_or_die_(hid_t f, const char* path, float* out, size_t n) {
    char err[256];
    if (h5io_read_f32(f, path, out, n, err, sizeof err)) engram_die("regenerate the reference file", "%s", err);
}

/* Parameters of REF.h5 into the trainer (dense buffers and the single-rank tables). */
static void load_params_(Trainer* tr, hid_t f) {
    const TensorTable* tt = &tr->model.tt;
    char path[128];
    for (int i = 0; i < tt->n; i++) {
        const TensorInfo* t = &tt->t[i];
        snprintf(path, sizeof path, "/params/%s", t->name);
        float* dst = t->group == OPT_TABLE ? tr->tables.table[t->engram] : tr->model.params + t->offset;
        read_or_die_(f, path, dst, (size_t)t->numel);
    }
}

static double max_abs_(const float* a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

static double max_diff_(const float* a, const float* b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* Compare one tensor's C values with REF.h5's dataset at prefix/name. */
static void compare_tensor_(hid_t f, const char* prefix, const char* name, const float* ours, size_t n, double tol) {
    char path[160];
    snprintf(path, sizeof path, "%s/%s", prefix, name);   // "/grads/wte", "/logits"
    float* ref = mallocCheck(n * sizeof(float));
    read_or_die_(f, path, ref, n);
    double mx = max_abs_(ref, n), d = max_diff_(ours, ref, n);
    check_(d <= tol * mx || (mx == 0 && d == 0), "%-36s%s max|Δ| %.3e  max|ref| %.3e  (%.1e)", path, "", d,
           mx, mx > 0 ? d / mx : d);
    free(ref);
}

static void check_gradients_(Trainer* tr, hid_t f, const int32_t* x, const int32_t* y) {
    Model* m = &tr->model;
    trainer_loss(tr, x, y);
    model_backward(m, (double)m->B * m->T, tr->de_ptr);
    const TensorTable* tt = &m->tt;
    float* dense_tab = NULL;
    if (m->hash.n_layers) rowset_reduce(&tr->rows, tr->de, NULL, tr->tables.Dh, tr->uniq);
    for (int i = 0; i < tt->n; i++) {
        const TensorInfo* t = &tt->t[i];
        if (t->group != OPT_TABLE) {
            compare_tensor_(f, "/grads", t->name, m->grads + t->offset, (size_t)t->numel, 1e-4);
            continue;
        }
        // unique-row gradients scattered into the dense [rows, Dh] layout of the reference
        dense_tab = reallocCheck(dense_tab, (size_t)t->numel * sizeof(float));
        memset(dense_tab, 0, (size_t)t->numel * sizeof(float));
        for (int64_t u = 0; u < tr->rows.n_unique; u++)
            if (ROWKEY_LAYER(tr->rows.keys[u]) == t->engram)
                memcpy(dense_tab + ROWKEY_ROW(tr->rows.keys[u]) * t->shape[1], tr->uniq + u * t->shape[1],
                       (size_t)t->shape[1] * sizeof(float));
        compare_tensor_(f, "/grads", t->name, dense_tab, (size_t)t->numel, 1e-4);
    }
    free(dense_tab);
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: model_check CONFIG.yaml REF.h5\n");
        return 2;
    }
    Config c;
    char err[1024];
    if (config_load(&c, argv[1], 0, NULL, err, sizeof err)) engram_fail("%s", err);
    hid_t f = H5Fopen(argv[2], H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) engram_fail("%s: cannot open the reference file", argv[2]);
    const int B = c.train.batch_size, T = c.model.seq_len, V = c.model.vocab_size;
    int32_t* x = mallocCheck((size_t)B * T * sizeof(int32_t));
    int32_t* y = mallocCheck((size_t)B * T * sizeof(int32_t));
    if (h5io_read_i32(f, "/batch/x", x, (size_t)B * T, err, sizeof err) ||
        h5io_read_i32(f, "/batch/y", y, (size_t)B * T, err, sizeof err))
        engram_fail("%s: %s", argv[2], err);
    printf("%s vs %s\n", argv[1], argv[2]);

    Trainer tr;
    trainer_init(&tr, &c, B, 1, NULL);
    load_params_(&tr, f);
    // logits (forward without targets leaves them in probs)
    trainer_loss(&tr, x, NULL);
    compare_tensor_(f, "", "logits", tr.model.probs, (size_t)B * T * V, 1e-4);
    double ref_loss = 0, ref_ce = 0, ref_dropped = 0;
    h5io_attr_f64(f, "loss", &ref_loss);
    h5io_attr_f64(f, "ce_loss", &ref_ce);
    h5io_attr_f64(f, "dropped", &ref_dropped);
    double loss = trainer_loss(&tr, x, y);
    check_(fabs(loss - ref_loss) <= 1e-5 * fabs(ref_loss), "loss %.9f  ref %.9f  (rel %.1e)", loss, ref_loss,
           fabs(loss - ref_loss) / fabs(ref_loss));
    check_(fabs(tr.ce - ref_ce) <= 1e-5 * fabs(ref_ce), "cross-entropy %.9f  ref %.9f", tr.ce, ref_ce);
    check_(tr.dropped == (long)ref_dropped, "dropped assignments %ld  ref %.0f", tr.dropped, ref_dropped);
    check_gradients_(&tr, f, x, y);
    trainer_free(&tr);

    // training: same init, same batch every step
    int steps = c.train.steps;
    double* ref_losses = mallocCheck((size_t)steps * sizeof(double));
    if (h5io_read_f64(f, "/train/losses", ref_losses, (size_t)steps, err, sizeof err)) engram_fail("%s", err);
    trainer_init(&tr, &c, B, 1, NULL);
    load_params_(&tr, f);
    for (int s = 0; s < steps; s++) {
        double l = trainer_step(&tr, x, y, NULL);
        check_(fabs(l - ref_losses[s]) <= 1e-4 * fabs(ref_losses[s]), "step %2d loss %.7f  ref %.7f  (rel %.1e)", s, l,
               ref_losses[s], fabs(l - ref_losses[s]) / fabs(ref_losses[s]));
    }
    trainer_free(&tr);
    free(ref_losses);
    free(x);
    free(y);
    H5Fclose(f);
    config_free(&c);
    printf("%s: %s\n", argv[1], fails_ ? "FAILED" : "matches the PyTorch reference");
    return fails_ ? 1 : 0;
}
