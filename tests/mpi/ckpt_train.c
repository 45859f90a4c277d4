/*
 * ckpt_train.c — the checkpoint tests' MPI harness (io/checkpoint.h under real mpirun).
 *   ckpt_train run CONFIG OUT --from A --to B [--load PATH] [--save DIR] [--perturb EPS [--perturb-seed S]]
 *                  [key=value ...]
 *       train steps [A, B) of a fixed global batch sequence (counter-based tokens by step and
 *       sequence index, each rank its shard_batch_range slice); with --load the state comes from a
 *       checkpoint (whose step must be A); with --save it is saved after step B; --perturb multiplies
 *       every dense parameter by 1 + EPS·u (u in [-1, 1), drawn per element from S) first. Rank 0 writes
 *       OUT.losses (doubles, one per step) and OUT.state (floats: params, m, v at their logical
 *       layout (experts gathered under expert parallelism), then every Engram
 *       layer's table, m, v and row update counts, gathered in row order). A config with
 *       data.tokenizer trains through its compression, which the checkpoint then records.
 *   ckpt_train compare CONFIG A.state B.state TOL [k=v ...]   per part max|Δ| ≤ TOL·max|A| (TOL 0: bit-equal);
 *   ckpt_train compare-l2 ... (the same arguments)             per part ‖Δ‖₂ ≤ TOL·‖A‖₂, each part's printed;
 *       Adam moments 10·TOL (they amplify summation-order noise), row update counts exact
 *   ckpt_train compare-chaos CONFIG A.state B.state C1[,C2...] F [k=v ...]   per part ‖B−A‖₂ ≤ F·max ‖Ck−A‖₂
 *       (Ck: A's run with --perturb 1e-6, the divergence rounding noise alone causes); counts exact
 *   ckpt_train losses A.losses B.losses TOL          |Δ| ≤ TOL·|A| per step
 *   ckpt_train kill-loop CONFIG DIR [--max-saves N]  the kill test's victim: writes DIR/pid.<rank>,
 *       loads DIR's latest if any (checking its values), then saves pattern(step) for step+1, ...
 *   ckpt_train check CONFIG DIR                      load DIR's latest, check pattern(step) exactly
 *   ckpt_train load CONFIG PATH [key=value ...]      load only; prints the refusal line, exit 2
 *   ckpt_train corrupt FILE DATASET [AT]             flip one byte inside DATASET's data, at fraction AT
 *       of it (default 0.5)
 *   ckpt_train set-version FILE N                    rewrite the root format_version attribute
 *   ckpt_train foreign FILE                          an HDF5 file that is not a checkpoint
 */
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "comm.h"
#include "compress.h"
#include "config.h"
#include "rng.h"
#include "shard.h"
#include "train.h"

/* Sequences [first, first+count) of step s's global batch: x = first T tokens, y = last T. */
static void batch_(int32_t* x, int32_t* y, int64_t s, int T, int V, int first, int count) {
    for (int b = first; b < first + count; b++)
        for (int t = 0; t <= T; t++) {
            int32_t tok = (int32_t)(rng_u64(4321, (uint64_t)s, (uint64_t)b * (T + 1) + t) % (uint64_t)V);
            if (t < T) x[(size_t)(b - first) * T + t] = tok;
            if (t > 0) y[(size_t)(b - first) * T + t - 1] = tok;
        }
}

static void load_config_(Config* c, const char* path, int n_over, char** over) {
    char err[1024];
    if (config_load(c, path, n_over, over, err, sizeof err)) engram_fail("%s", err);
}

/* Gather rows [first, first+local) of every rank into rank 0's out (rank order = row order). */
static void gather_rows_(const Comm* w, const void* mine, int64_t local, int elem, MPI_Datatype type, void* out) {
    int n = (int)(local * elem), *counts = callocCheck(w->size, sizeof(int)), *displs = callocCheck(w->size, sizeof(int));
    mpiCheck(MPI_Gather(&n, 1, MPI_INT, counts, 1, MPI_INT, 0, w->comm));
    for (int r = 0, d = 0; r < w->size; r++) displs[r] = d, d += counts[r];
    mpiCheck(MPI_Gatherv(mine, n, type, out, counts, displs, type, 0, w->comm));
    free(counts), free(displs);
}

/* The dump: dense params, m, v (experts at their logical shape); then per Engram layer table, m,
 * v, updates (as floats). */
static void dump_state_(const Trainer* tr, const Comm* w, const char* path) {
    const EngramTables* t = &tr->tables;
    FILE* f = w->rank == 0 ? fopen(path, "wb") : NULL;
    if (w->rank == 0 && !f) engram_fail("cannot write %s", path);
    const TensorTable* tt = &tr->model.tt;
    size_t nd = 0;
    for (int i = 0; i < tt->n; i++) nd += tt->t[i].group == OPT_TABLE ? 0 : (size_t)tt->t[i].numel;
    float* logical = f ? mallocCheck((nd + 1) * 4) : NULL;
    float* dense[3] = {tr->model.params, tr->model.m, tr->model.v};
    for (int k = 0; k < 3; k++) {   // backend memory: read through a host view (the buffer itself on the CPU)
        float* h = backend_host_view(tr->be, dense[k], tt->dense_numel * sizeof(float), 1);
        expert_gather_dense(tr->ep > 1 ? &tr->xx : NULL, tt, h, logical);
        backend_host_done(tr->be, h, dense[k], 0, 0);
        if (f) fwrite(logical, 4, nd, f);
    }
    free(logical);
    for (int l = 0; l < tr->model.hash.n_layers; l++) {
        size_t rows = (size_t)t->rows[l], Dh = (size_t)t->Dh, bytes = (size_t)t->local[l] * Dh * 4;
        float* all = mallocCheck(rows * Dh * 4 + 4);
        int64_t* upd = mallocCheck(rows * 8 + 8);
        float* parts[3] = {t->table[l], t->m[l], t->v[l]};
        for (int k = 0; k < 3; k++) {   // the tables are backend memory too
            float* h = backend_host_view(tr->be, parts[k], bytes, 1);
            gather_rows_(w, h, t->local[l], (int)Dh, MPI_FLOAT, all);
            backend_host_done(tr->be, h, parts[k], 0, 0);
            if (f) fwrite(all, 4, rows * Dh, f);
        }
        int64_t* hu = backend_host_view(tr->be, t->updates[l], (size_t)t->local[l] * 8, 1);
        gather_rows_(w, hu, t->local[l], 1, MPI_INT64_T, upd);
        backend_host_done(tr->be, hu, t->updates[l], 0, 0);
        for (size_t r = 0; f && r < rows; r++) {
            float u = (float)upd[r];
            fwrite(&u, 4, 1, f);
        }
        free(all), free(upd);
    }
    if (f) fclose(f);
}

static int run_(int argc, char** argv, const Comm* w) {
    const char *cfg_path = argv[2], *out = argv[3], *load = NULL, *save = NULL;
    long from = 0, to = 0;
    double perturb = 0;
    long perturb_seed = 99;
    int n_over = 0;
    char** over = callocCheck(argc, sizeof(char*));
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--from") && i + 1 < argc) from = atol(argv[++i]);
        else if (!strcmp(argv[i], "--to") && i + 1 < argc) to = atol(argv[++i]);
        else if (!strcmp(argv[i], "--load") && i + 1 < argc) load = argv[++i];
        else if (!strcmp(argv[i], "--save") && i + 1 < argc) save = argv[++i];
        else if (!strcmp(argv[i], "--perturb") && i + 1 < argc) perturb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--perturb-seed") && i + 1 < argc) perturb_seed = atol(argv[++i]);
        else over[n_over++] = argv[i];
    }
    Config c;
    load_config_(&c, cfg_path, n_over, over);
    char err[1024], file[4400];
    Compression comp = {0}, *compp = NULL;
    if (c.data.tokenizer[0]) {   // with a tokenizer: its compression, recorded in the checkpoint
        Tokenizer* tk = tokenizer_load(c.data.tokenizer, err, sizeof err);
        if (!tk || compress_for_config(&comp, &c, tk, err, sizeof err)) engram_fail("%s", err);
        tokenizer_free(tk);
        compp = &comp;
    }
    const int B = c.train.batch_size, T = c.model.seq_len, V = c.model.vocab_size;
    int first, count;
    shard_batch_range(B, w->size, w->rank, &first, &count);
    Trainer tr;
    trainer_init(&tr, &c, count, (uint64_t)c.run.seed, w);
    tr.lookup = comp.lookup;
    CkptState st = {0};
    if (load) {
        if (checkpoint_resolve(load, file, sizeof file, err, sizeof err) || checkpoint_load(&tr, file, &st, err, sizeof err))
            engram_fail("%s", err);
        if (st.step != from || st.data_position != from * B)
            engram_fail("%s: step %lld / data position %lld, expected %ld / %ld", file, (long long)st.step,
                        (long long)st.data_position, from, from * B);
    }
    if (perturb != 0) {   // every dense parameter times 1 + perturb·u, u in [-1, 1) fixed by its index
        size_t n = tr.model.tt.dense_numel;
        float* h = backend_host_view(tr.be, tr.model.params, n * sizeof(float), 1);
        for (size_t i = 0; i < n; i++) h[i] *= (float)(1.0 + perturb * ((double)(rng_u64((uint64_t)perturb_seed, 0, i) >> 11) * 0x1p-52 - 1.0));
        backend_host_done(tr.be, h, tr.model.params, n * sizeof(float), 1);
    }
    int32_t* x = mallocCheck(((size_t)count * T + 1) * sizeof(int32_t));
    int32_t* y = mallocCheck(((size_t)count * T + 1) * sizeof(int32_t));
    double* losses = callocCheck((size_t)(to - from) + 1, sizeof(double));
    for (long s = from; s < to; s++) {
        batch_(x, y, s, T, V, first, count);
        losses[s - from] = trainer_step(&tr, x, y, NULL);
    }
    if (save) {
        st = (CkptState){.step = tr.step, .tokens_seen = (int64_t)to * B * T, .data_position = (int64_t)to * B,
                         .seed = (uint64_t)c.run.seed, .world_size = w->size, .bad_steps = tr.bad_steps};
        if (checkpoint_save(&tr, &c, compp, &st, save, err, sizeof err)) engram_fail("%s", err);
    }
    if (compp) compress_free(compp);
    char path[4400];
    snprintf(path, sizeof path, "%s.losses", out);
    if (w->rank == 0) {
        FILE* f = fopen(path, "wb");
        if (!f) engram_fail("cannot write %s", path);
        fwrite(losses, sizeof(double), (size_t)(to - from), f);
        fclose(f);
        printf("P=%d: steps %ld..%ld%s%s, last loss %.9g\n", w->size, from, to, load ? " after loading" : "",
               save ? ", saved" : "", to > from ? losses[to - from - 1] : 0.0);
    }
    snprintf(path, sizeof path, "%s.state", out);
    dump_state_(&tr, w, path);
    free(x), free(y), free(losses), free(over);
    trainer_free(&tr);
    config_free(&c);
    return 0;
}

static float* slurp_(const char* path, size_t* n) {
    float* b = (float*)engram_read_file(path, n);
    if (!b) engram_fail("cannot read %s", path);
    return b;
}

/* Floats in part p of a state dump: params, m, v, then per Engram layer table, m, v, updates. */
static size_t part_len_(const Model* m, const Config* c, int p) {
    return p < 3 ? m->tt.dense_numel : (size_t)m->hash.rows[(p - 3) / 4] * ((p - 3) % 4 == 3 ? 1 : c->engram.head_dim);
}

/* The three dense tensors whose values differ most (relative 2-norm), for the record. */
static void worst_tensors_(const TensorTable* tt, const float* a, const float* b) {
    int top[3] = {-1, -1, -1};
    double rel[3] = {-1, -1, -1};
    for (int i = 0; i < tt->n; i++) {
        const TensorInfo* t = &tt->t[i];
        if (t->engram >= 0) continue;   // tables are parts of their own
        double d = 0, r = 0;
        for (int64_t k = 0; k < t->local_numel; k++) {
            double x = a[t->offset + k], y = b[t->offset + k];
            d += (y - x) * (y - x), r += x * x;
        }
        double q = r > 0 ? sqrt(d / r) : sqrt(d);
        for (int j = 0; j < 3; j++)
            if (q > rel[j]) {
                for (int k = 2; k > j; k--) rel[k] = rel[k - 1], top[k] = top[k - 1];
                rel[j] = q, top[j] = i;
                break;
            }
    }
    for (int j = 0; j < 3 && top[j] >= 0; j++) printf("    %s: %.2e\n", tt->t[top[j]].name, rel[j]);
}

/* Part by part (params, m, v, then per layer table, m, v, updates): max|Δ| ≤ tol·max|a|, or with l2
 * ‖Δ‖₂ ≤ tol·‖a‖₂ (runs on different devices: Adam turns a last-bit difference of a near-zero
 * gradient into a whole step of that one element, which a max norm reports as divergence). */
static int compare_(const char* cfg_path, const char* pa, const char* pb, double tol, int l2, int n_over, char** over) {
    Config c;
    load_config_(&c, cfg_path, n_over, over);
    Model m;
    model_init(&m, &c, 1);
    size_t na, nb;
    float *a = slurp_(pa, &na), *b = slurp_(pb, &nb);
    int fails = 0;
    if (na != nb) engram_fail("%s and %s differ in size (%zu vs %zu)", pa, pb, na, nb);
    if (tol == 0 && memcmp(a, b, na)) { printf("FAIL: %s and %s are not bit-identical\n", pa, pb); fails++; }
    size_t off = 0;
    double worst = 0;
    int n_parts = 3 + 4 * m.hash.n_layers;
    for (int p = 0; p < n_parts; p++) {
        size_t len = part_len_(&m, &c, p);
        // Adam moments of rows amplify summation-order noise: 10·TOL; update counts exact
        int kind = p < 3 ? p : 3 + (p - 3) % 4;
        double t = kind == 6 ? 0 : (kind == 1 || kind == 2 || kind == 4 || kind == 5) ? 10 * tol : tol;
        double mx = 0, d = 0, na2 = 0, d2 = 0;
        for (size_t i = off; i < off + len; i++) {
            double di = fabs((double)a[i] - b[i]);
            mx = fmax(mx, fabs(a[i])), d = fmax(d, di), na2 += (double)a[i] * a[i], d2 += di * di;
        }
        if (l2) {
            mx = sqrt(na2), d = sqrt(d2);
            printf("part %d: ‖Δ‖₂ %.3e, ‖ref‖₂ %.3e: %.2e (tolerance %.0e)\n", p, d, mx, mx > 0 ? d / mx : d, t);
            if (p == 1) worst_tensors_(&m.tt, a + off, b + off);
        }
        if (d > t * mx) { printf("FAIL: part %d: %s %.3e > %.1e · %.3e\n", p, l2 ? "‖Δ‖₂" : "max|Δ|", d, t, mx); fails++; }
        worst = fmax(worst, mx > 0 ? d / mx : d);
        off += len;
    }
    if (off * 4 != na) { printf("FAIL: dump size %zu, expected %zu\n", na, off * 4); fails++; }
    printf("%s vs %s: %d parts within %.2e of %s — %s\n", pa, pb, n_parts, worst, l2 ? "‖ref‖₂" : "max|ref|",
           fails ? "FAILED" : "ok");
    model_free(&m);
    config_free(&c);
    free(a), free(b);
    return fails ? 1 : 0;
}

/* Runs that diverge by chaos (Adam steps whole elements on last-bit differences; MoE routing flips):
 * part by part, ‖B−A‖₂ ≤ factor·max_k ‖C_k−A‖₂, where the C_k (comma-separated files) are A's own
 * run from parameters perturbed by a relative 1e-6 (run --perturb, one --perturb-seed each): B
 * strays from A no further than rounding noise at the start makes A stray from itself. Row update
 * counts exact. */
static int compare_chaos_(const char* cfg_path, const char* pa, const char* pb, const char* pcs, double factor,
                          int n_over, char** over) {
    Config c;
    load_config_(&c, cfg_path, n_over, over);
    Model m;
    model_init(&m, &c, 1);
    size_t na, nb, nc;
    float *a = slurp_(pa, &na), *b = slurp_(pb, &nb), *cs[8];
    int n_c = 0;   // the references: comma-separated, the largest divergence counts
    char* list = strdupCheck(pcs);
    for (char* tok = strtok(list, ","); tok && n_c < 8; tok = strtok(NULL, ",")) {
        cs[n_c++] = slurp_(tok, &nc);
        if (nc != na) engram_fail("%s and %s differ in size", pa, tok);
    }
    free(list);
    if (na != nb || !n_c) engram_fail("%s and %s differ in size, or no reference", pa, pb);
    int fails = 0, n_parts = 3 + 4 * m.hash.n_layers;
    size_t off = 0;
    for (int p = 0; p < n_parts; p++) {
        size_t len = part_len_(&m, &c, p);
        double db = 0, dc = 0, ref = 0;
        for (size_t i = off; i < off + len; i++) db += ((double)b[i] - a[i]) * ((double)b[i] - a[i]), ref += (double)a[i] * a[i];
        for (int k = 0; k < n_c; k++) {
            double d = 0;
            for (size_t i = off; i < off + len; i++) d += ((double)cs[k][i] - a[i]) * ((double)cs[k][i] - a[i]);
            dc = fmax(dc, d);
        }
        db = sqrt(db), dc = sqrt(dc), ref = sqrt(ref);
        const int counts = p >= 3 && (p - 3) % 4 == 3;
        const int bad = counts ? db != 0 : db > factor * dc;
        printf("part %d: ‖B−A‖₂ %.3e, ‖C−A‖₂ %.3e (ratio %.2f), ‖A‖₂ %.3e%s\n", p, db, dc, dc > 0 ? db / dc : 0.0,
               ref, bad ? (counts ? " FAIL: counts differ" : " FAIL") : "");
        fails += bad;
        off += len;
    }
    printf("%s vs %s (chaos references %s): %s\n", pa, pb, pcs, fails ? "FAILED" : "ok");
    model_free(&m);
    config_free(&c);
    for (int k = 0; k < n_c; k++) free(cs[k]);
    free(a), free(b);
    return fails ? 1 : 0;
}

static int losses_(const char* pa, const char* pb, double tol) {
    size_t na, nb;
    double *a = (double*)slurp_(pa, &na), *b = (double*)slurp_(pb, &nb);
    if (na != nb) engram_fail("%s and %s hold different step counts", pa, pb);
    double worst = 0;
    for (size_t i = 0; i < na / 8; i++) worst = fmax(worst, fabs(a[i] - b[i]) / fabs(a[i]));
    int ok = tol == 0 ? memcmp(a, b, na) == 0 : worst <= tol;
    printf("%s vs %s: %zu losses, worst relative difference %.2e — %s\n", pa, pb, na / 8, worst, ok ? "ok" : "FAILED");
    free(a), free(b);
    return ok ? 0 : 1;
}

/* ---- kill test: the values of every tensor are a function of the step ------------------------ */

static float pattern_(int64_t step, uint64_t stream, uint64_t i) {
    return (float)(rng_u64((uint64_t)step, stream, i) >> 40) * 0x1p-24f;
}

/* Set (check = 0) or count mismatches against (check = 1) pattern(step) everywhere. */
static long pattern_apply_(Trainer* tr, int64_t step, int check) {
    long bad = 0;
    float* dense[3] = {tr->model.params, tr->model.m, tr->model.v};
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < tr->model.tt.dense_numel; i++) {
            float want = pattern_(step, (uint64_t)k, i);
            if (check) bad += dense[k][i] != want;
            else dense[k][i] = want;
        }
    EngramTables* t = &tr->tables;
    for (int l = 0; l < t->n_layers; l++) {
        float* parts[3] = {t->table[l], t->m[l], t->v[l]};
        for (int k = 0; k < 3; k++)
            for (int64_t i = 0; i < t->local[l] * t->Dh; i++) {
                float want = pattern_(step, 10 + 3 * (uint64_t)l + k, (uint64_t)(t->first[l] * t->Dh + i));
                if (check) bad += parts[k][i] != want;
                else parts[k][i] = want;
            }
        for (int64_t r = 0; r < t->local[l]; r++) {
            int64_t want = step * 1000 + t->first[l] + r;
            if (check) bad += t->updates[l][r] != want;
            else t->updates[l][r] = want;
        }
    }
    return bad;
}

/* Load DIR's latest (if any and `must` is 0) and check it; returns its step or -1 when none. */
static int64_t load_checked_(Trainer* tr, const Comm* w, const char* dir, int must) {
    char err[1024], file[4400], latest[4400];
    snprintf(latest, sizeof latest, "%s/latest", dir);
    if (!must && access(latest, F_OK) != 0) return -1;
    CkptState st;
    if (checkpoint_resolve(dir, file, sizeof file, err, sizeof err) || checkpoint_load(tr, file, &st, err, sizeof err))
        engram_fail("FAIL: %s", err);
    long bad = pattern_apply_(tr, st.step, 1);
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_LONG, MPI_SUM, w->comm));
    if (bad || st.data_position != st.step) engram_fail("FAIL: %s: %ld values differ from step %lld's", file, bad, (long long)st.step);
    printf0(w, "%s loads at P=%d: step %lld, every value as saved\n", file, w->size, (long long)st.step);
    return st.step;
}

static int kill_loop_(int argc, char** argv, const Comm* w, int check_only) {
    Config c;
    load_config_(&c, argv[2], 0, NULL);
    const char* dir = argv[3];
    long max_saves = argc > 5 && !strcmp(argv[4], "--max-saves") ? atol(argv[5]) : -1;
    Trainer tr;
    trainer_init(&tr, &c, 1, 1, w);
    int64_t step = load_checked_(&tr, w, dir, check_only);
    if (!check_only) {
        char pidfile[4400], err[1024];
        snprintf(pidfile, sizeof pidfile, "%s/pid.%d", dir, w->rank);
        FILE* f = fopen(pidfile, "w");
        if (f) fprintf(f, "%d\n", (int)getpid()), fclose(f);
        for (long n = 0; max_saves < 0 || n < max_saves; n++) {
            step++;
            pattern_apply_(&tr, step, 0);
            CkptState st = {.step = step, .tokens_seen = step, .data_position = step, .seed = 1, .world_size = w->size};
            if (checkpoint_save(&tr, &c, NULL, &st, dir, err, sizeof err)) engram_fail("FAIL: %s", err);
        }
    }
    trainer_free(&tr);
    config_free(&c);
    return 0;
}

/* ---- making bad files ------------------------------------------------------------------------ */

static int corrupt_(const char* file, const char* dataset, double frac) {
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = f < 0 ? -1 : H5Dopen2(f, dataset, H5P_DEFAULT);
    if (ds < 0) engram_fail("%s: cannot open %s", file, dataset);
    haddr_t off = H5Dget_offset(ds);
    hsize_t size = H5Dget_storage_size(ds);
    hid_t dcpl = H5Dget_create_plist(ds);
    if (H5Pget_layout(dcpl) == H5D_VIRTUAL) {   // a tensor of a format 2 file: its bytes in the flat dataset
        char src[256];
        hsize_t lo[H5S_MAX_RANK], hi[H5S_MAX_RANK];
        hid_t ss = H5Pget_virtual_srcspace(dcpl, 0);
        H5Pget_virtual_dsetname(dcpl, 0, src, sizeof src);
        H5Sget_select_bounds(ss, lo, hi);
        hid_t sd = H5Dopen2(f, src, H5P_DEFAULT);
        if (sd < 0) engram_fail("%s: cannot open %s, the source of %s", file, src, dataset);
        off = H5Dget_offset(sd) + lo[0] * sizeof(float), size = (hi[0] - lo[0] + 1) * sizeof(float);
        H5Dclose(sd);
        H5Sclose(ss);
    }
    H5Pclose(dcpl);
    H5Dclose(ds);
    H5Fclose(f);
    int fd = open(file, O_RDWR);
    unsigned char byte;
    off_t at = (off_t)(off + (hsize_t)(frac * (double)(size - 1)));
    if (fd < 0 || pread(fd, &byte, 1, at) != 1) engram_fail("%s: cannot read byte %lld", file, (long long)at);
    byte ^= 0x10;
    if (pwrite(fd, &byte, 1, at) != 1) engram_fail("%s: cannot write", file);
    close(fd);
    printf("flipped a bit at byte %lld (inside %s)\n", (long long)at, dataset);
    return 0;
}

static int set_version_(const char* file, long v) {
    hid_t f = H5Fopen(file, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) engram_fail("%s: cannot open", file);
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    int64_t x = v;
    H5Awrite(a, H5T_NATIVE_INT64, &x);
    H5Aclose(a);
    H5Fclose(f);
    return 0;
}

static int foreign_(const char* file) {
    hid_t f = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t n = 4;
    float v[4] = {1, 2, 3, 4};
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t ds = H5Dcreate2(f, "/data", H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(ds), H5Sclose(sp), H5Fclose(f);
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: see the header of tests/mpi/ckpt_train.c\n");
        return 2;
    }
    const char* mode = argv[1];
    if (!strcmp(mode, "compare") && argc >= 6) return compare_(argv[2], argv[3], argv[4], atof(argv[5]), 0, argc - 6, argv + 6);
    if (!strcmp(mode, "compare-chaos") && argc >= 7)
        return compare_chaos_(argv[2], argv[3], argv[4], argv[5], atof(argv[6]), argc - 7, argv + 7);
    if (!strcmp(mode, "compare-l2") && argc >= 6)
        return compare_(argv[2], argv[3], argv[4], atof(argv[5]), 1, argc - 6, argv + 6);
    if (!strcmp(mode, "losses") && argc == 5) return losses_(argv[2], argv[3], atof(argv[4]));
    if (!strcmp(mode, "corrupt") && (argc == 4 || argc == 5)) return corrupt_(argv[2], argv[3], argc == 5 ? atof(argv[4]) : 0.5);
    if (!strcmp(mode, "set-version") && argc == 4) return set_version_(argv[2], atol(argv[3]));
    if (!strcmp(mode, "foreign")) return foreign_(argv[2]);
    Comm w;
    comm_init(&w, &argc, &argv);
    int rc = 2;
    if (!strcmp(mode, "run") && argc >= 4) rc = run_(argc, argv, &w);
    else if (!strcmp(mode, "kill-loop") && argc >= 4) rc = kill_loop_(argc, argv, &w, 0);
    else if (!strcmp(mode, "check") && argc >= 4) rc = kill_loop_(argc, argv, &w, 1);
    else if (!strcmp(mode, "load") && argc >= 4) {
        Config c;
        load_config_(&c, argv[2], argc - 4, argv + 4);
        Trainer tr;
        trainer_init(&tr, &c, 1, 1, &w);
        char err[1024], file[4400];
        CkptState st;
        if (checkpoint_resolve(argv[3], file, sizeof file, err, sizeof err) || checkpoint_load(&tr, file, &st, err, sizeof err))
            engram_fail("%s", err);
        printf0(&w, "%s loaded: step %lld\n", file, (long long)st.step);
        trainer_free(&tr);
        config_free(&c);
        rc = 0;
    } else fprintf(stderr, "ckpt_train: unknown mode %s\n", mode);
    comm_free(&w);
    return rc;
}
