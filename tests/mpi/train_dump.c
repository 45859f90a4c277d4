/*
 * train_dump.c — trains a config for train.steps steps on P ranks (real mpirun) on a fixed global
 * batch sequence, checking on the way that
 *   - parameters stay bit-identical on every rank after every step (under expert parallelism: the
 *     replicated tensors on every rank, and the whole buffer across the replicas of the same experts),
 *   - the exchange's wire figures equal an independent count: every rank's unique keys are
 *     all-gathered and the remote keys and served keys are recounted from the ownership rule;
 *     wire bytes = counts + 8·remote keys + 2·row bytes·(remote + served) each way;
 *   - with parallel.expert_parallel > 1, the expert exchange's figures equal a recount made here from
 *     the saved router probabilities (own top-k and capacity admission, counts all-gathered, owners
 *     by the block rule): rows out/in, dispatched and dropped assignments and wire bytes
 *     (counts + 2 passes × D·4 bytes × (rows out + rows in), each way);
 * and rank 0 writes the losses, the dense parameters (experts gathered at their logical shape) and
 * the gathered Engram tables to OUT, and prints the assignments dropped over all steps.
 *   usage: train_dump CONFIG OUT [--data random|pattern|repeat] [--reverse] [--expect-idle-owner]
 *                     [--prefetch] [key=value ...]
 * --prefetch hands each step the next batch, so its hashing and counts/keys exchange overlap.
 *          train_dump --compare CONFIG A B TOL [--scale-floor=F] [key=value ...]
 *              per-tensor max|Δ| ≤ TOL·max(max|A|, F), losses ≤ TOL rel
 * TOL 0 asks for bit-identical files.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "comm.h"
#include "config.h"
#include "grad_sync.h"
#include "rng.h"
#include "shard.h"
#include "train.h"

static int fails_ = 0;
#define EXPECT(cond, ...) do { if (!(cond)) { printf("FAIL: " __VA_ARGS__); printf("\n"); fails_++; } } while (0)

/* Global batch of step s: [B,T+1] tokens; x = first T, y = last T of each row. */
/* Data: "random" (default) — uniform tokens; "pattern" — a learnable sequence, each row counting up by 3 mod V from a random
 * start; "repeat" — one token everywhere (heavy dedup, owners nobody asks). */
enum { DATA_PATTERN, DATA_RANDOM, DATA_REPEAT };
static void batch_(int32_t* x, int32_t* y, int s, int T, int V, int kind, int first, int count, int reverse) {
    for (int b = first; b < first + count; b++)
        for (int t = 0; t <= T; t++) {
            int row = reverse ? first + count - 1 - b : b - first;   // where this sequence sits locally
            uint64_t r = rng_u64(1234, (uint64_t)s, (uint64_t)b * (T + 1) + (kind == DATA_PATTERN ? 0 : t));
            int32_t tok = kind == DATA_REPEAT ? 7 : (int32_t)((r + (kind == DATA_PATTERN ? 3u * t : 0)) % (uint64_t)V);
            if (t < T) x[(size_t)row * T + t] = tok;
            if (t > 0) y[(size_t)row * T + t - 1] = tok;
        }
}

/* Recount the exchange's figures from all ranks' unique keys. Returns the number of ranks that own
 * none of the rows asked for this step (and checks that they were asked for nothing). */
static int check_wire_(Trainer* tr, const Comm* w) {
    const Exchange* ex = &tr->ex;
    const RowSet* rs = &tr->rows;
    int P = w->size, n = (int)rs->n_unique;
    int* counts = callocCheck(P, sizeof(int));
    int* displs = callocCheck(P, sizeof(int));
    mpiCheck(MPI_Allgather(&n, 1, MPI_INT, counts, 1, MPI_INT, w->comm));
    int total = 0;
    for (int r = 0; r < P; r++) displs[r] = total, total += counts[r];
    int64_t* all = mallocCheck(((size_t)total + 1) * sizeof(int64_t));
    mpiCheck(MPI_Allgatherv(rs->keys, n, MPI_INT64_T, all, counts, displs, MPI_INT64_T, w->comm));
    int64_t remote = 0, served = 0;
    char* asked = callocCheck(P, 1);   // asked[o]: some rank asked owner o for a row
    for (int r = 0; r < P; r++)
        for (int i = 0; i < counts[r]; i++) {
            int64_t k = all[displs[r] + i];
            int owner = shard_row_owner(ROWKEY_ROW(k), tr->tables.rows[ROWKEY_LAYER(k)], P);
            asked[owner] = 1;
            if (r == w->rank && owner != w->rank) remote++;
            if (r != w->rank && owner == w->rank) served++;
        }
    int idle = 0;
    for (int o = 0; o < P; o++) idle += !asked[o];
    if (!asked[w->rank]) EXPECT(ex->plan[ex->cur].n_recv == 0 && ex->n_own == 0, "rank %d owns no asked row but received requests", w->rank);
    free(asked);
    int64_t row = (int64_t)tr->tables.Dh * 4;
    int64_t sent = (int64_t)(P - 1) * 4 + remote * 8 + (served + remote) * row;
    int64_t recv = (int64_t)(P - 1) * 4 + served * 8 + (remote + served) * row;
    EXPECT(ex->st.remote == remote && ex->st.served == served, "rank %d: exchange counted %lld remote / %lld served keys, recount %lld / %lld",
           w->rank, (long long)ex->st.remote, (long long)ex->st.served, (long long)remote, (long long)served);
    EXPECT(ex->st.bytes_sent == sent && ex->st.bytes_recv == recv, "rank %d: wire bytes %lld/%lld, expected %lld/%lld", w->rank,
           (long long)ex->st.bytes_sent, (long long)ex->st.bytes_recv, (long long)sent, (long long)recv);
    EXPECT(ex->st.lookups == (int64_t)rs->n_layers * rs->n_pos, "rank %d: lookups", w->rank);
    free(counts), free(displs), free(all);
    return idle;
}

/* 1 when the replicated tensors are bit-identical on every rank and, under expert parallelism, the
 * whole local buffer across the ranks holding the same experts. */
static int replicas_equal_(const Trainer* tr, const Comm* w) {
    const TensorTable* tt = &tr->model.tt;
    if (tr->ep == 1) return grad_sync_replicas_equal(w, tr->model.params, tt->dense_numel);
    int ok = 1;
    for (int i = 0; i < tt->n; i++)
        if (tt->t[i].group != OPT_TABLE && tt->t[i].shard != SHARD_EXPERTS)
            ok &= grad_sync_replicas_equal(w, tr->model.params + tt->t[i].offset, (size_t)tt->t[i].local_numel);
    Comm rc = {.rank = 0, .size = 0, .comm = tr->xx.replica_comm};
    return ok & grad_sync_replicas_equal(&rc, tr->model.params, tt->dense_numel);
}

/* top [k] of p [E], descending, ties to the lower index (written again here, not taken from moe.c). */
static void topk_ref_(const float* p, int E, int k, int* top) {
    char* used = callocCheck(E, 1);
    for (int j = 0; j < k; j++) {
        int b = -1;
        for (int i = 0; i < E; i++)
            if (!used[i] && (b < 0 || p[i] > p[b])) b = i;
        used[b] = 1, top[j] = b;
    }
    free(used);
}

/* Recount the expert exchange's figures of the last step from every MoE layer's saved router
 * probabilities; returns the assignments dropped over all ranks. */
static long check_experts_(Trainer* tr, const Comm* w) {
    const Model* m = &tr->model;
    const int E = m->mdims.E, k = m->mdims.k, N = m->mdims.N, D = m->D, EP = tr->ep;
    const int epr = (E + EP - 1) / EP, me = w->rank, pos = me % EP, g0 = me - pos;
    double cf = m->mdims.capacity_factor;
    long cap = cf <= 0 ? (long)N * k : (long)ceil(cf * (double)N * k / E);
    int64_t out = 0, in = 0, dispatched = 0, sent = 0;
    long dropped = 0;
    int* kept = callocCheck(E, sizeof(int));
    int* all = callocCheck((size_t)E * w->size, sizeof(int));
    int* top = callocCheck(k, sizeof(int));
    for (int l = 0; l < m->L; l++) {
        if (!m->P.blocks[l].is_moe) continue;
        memset(kept, 0, E * sizeof(int));
        for (int n = 0; n < N; n++) {   // token-major admission against the per-rank capacity
            topk_ref_(m->acts[l].moe_acts + (size_t)n * E, E, k, top);
            for (int j = 0; j < k; j++) {
                if (kept[top[j]] < cap) kept[top[j]]++;
                else dropped++;
            }
        }
        mpiCheck(MPI_Allgather(kept, E, MPI_INT, all, E, MPI_INT, w->comm));
        for (int e = 0; e < E; e++) {
            dispatched += kept[e];
            if (e / epr != pos) out += kept[e];
            if (e / epr == pos)
                for (int s = g0; s < g0 + EP; s++) in += s != me ? all[(size_t)s * E + e] : 0;
        }
        sent += (int64_t)(EP - 1) * epr * 4;
    }
    sent += 2 * (out + in) * (int64_t)D * 4;
    const ExpertStats* st = &tr->xx.st;
    EXPECT(st->remote == out && st->served == in && st->dispatched == dispatched,
           "rank %d: expert rows out/in/dispatched %lld/%lld/%lld, recount %lld/%lld/%lld", me, (long long)st->remote,
           (long long)st->served, (long long)st->dispatched, (long long)out, (long long)in, (long long)dispatched);
    EXPECT(st->bytes_sent == sent && st->bytes_recv == sent, "rank %d: expert wire bytes %lld/%lld, expected %lld each way",
           me, (long long)st->bytes_sent, (long long)st->bytes_recv, (long long)sent);
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &dropped, 1, MPI_LONG, MPI_SUM, w->comm));
    EXPECT(tr->dropped == dropped, "rank %d: %ld dropped assignments, recount %ld", me, tr->dropped, dropped);
    free(kept), free(all), free(top);
    return dropped;
}

/* Full table of every Engram layer on rank 0 (blocks arrive in rank order). */
static float* gather_tables_(Trainer* tr, const Comm* w, size_t* n_out) {
    const EngramTables* t = &tr->tables;
    size_t total = 0;
    for (int l = 0; l < t->n_layers; l++) total += (size_t)t->rows[l] * t->Dh;
    float* all = w->rank == 0 ? mallocCheck((total + 1) * sizeof(float)) : NULL;
    int* counts = callocCheck(w->size, sizeof(int));
    int* displs = callocCheck(w->size, sizeof(int));
    size_t off = 0;
    for (int l = 0; l < t->n_layers; l++) {
        int mine = (int)(t->local[l] * t->Dh);
        mpiCheck(MPI_Gather(&mine, 1, MPI_INT, counts, 1, MPI_INT, 0, w->comm));
        for (int r = 0, d = 0; r < w->size; r++) displs[r] = d, d += counts[r];
        mpiCheck(MPI_Gatherv(t->table[l], mine, MPI_FLOAT, all ? all + off : NULL, counts, displs, MPI_FLOAT, 0, w->comm));
        off += (size_t)t->rows[l] * t->Dh;
    }
    free(counts), free(displs);
    *n_out = total;
    return all;
}

static int run_(int argc, char** argv) {
    Comm w;
    comm_init(&w, &argc, &argv);
    const char* cfg_path = argv[1];
    const char* out = argv[2];
    int kind = DATA_RANDOM, n_over = 0, reverse = 0, expect_idle = 0, prefetch = 0;
    char** over = callocCheck(argc, sizeof(char*));
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--reverse")) reverse = 1;   // same batch, sequences in reverse order
        else if (!strcmp(argv[i], "--expect-idle-owner")) expect_idle = 1;
        else if (!strcmp(argv[i], "--prefetch")) prefetch = 1;   // overlap the next step's plan
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) {
            i++;
            kind = !strcmp(argv[i], "repeat") ? DATA_REPEAT : !strcmp(argv[i], "random") ? DATA_RANDOM : DATA_PATTERN;
        }
        else over[n_over++] = argv[i];
    }
    Config c;
    char err[1024];
    if (config_load(&c, cfg_path, n_over, over, err, sizeof err)) engram_fail("%s", err);
    const int B = c.train.batch_size, T = c.model.seq_len, V = c.model.vocab_size, steps = c.train.steps;
    int first, count;
    shard_batch_range(B, w.size, w.rank, &first, &count);
    Trainer tr;
    trainer_init(&tr, &c, count, (uint64_t)c.run.seed, &w);
    int32_t* x = mallocCheck(((size_t)count * T + 1) * sizeof(int32_t));
    int32_t* y = mallocCheck(((size_t)count * T + 1) * sizeof(int32_t));
    double* losses = callocCheck(steps, sizeof(double));
    int idle_steps = 0;
    long dropped = 0;
    int32_t* xn = mallocCheck(((size_t)count * T + 1) * sizeof(int32_t));
    int32_t* yn = mallocCheck(((size_t)count * T + 1) * sizeof(int32_t));
    batch_(x, y, 0, T, V, kind, first, count, reverse);
    for (int s = 0; s < steps; s++) {
        int more = prefetch && s + 1 < steps;   // with --prefetch the next batch is announced
        if (more) batch_(xn, yn, s + 1, T, V, kind, first, count, reverse);
        losses[s] = trainer_step(&tr, x, y, more ? xn : NULL);
        EXPECT(replicas_equal_(&tr, &w), "step %d: parameters differ across ranks", s);
        if (tr.model.hash.n_layers) idle_steps += check_wire_(&tr, &w) > 0;
        if (tr.ep > 1) dropped += check_experts_(&tr, &w);
        else dropped += tr.dropped;
        if (more) {
            int32_t* t = x; x = xn; xn = t;
            t = y; y = yn; yn = t;
        } else if (s + 1 < steps) {
            batch_(x, y, s + 1, T, V, kind, first, count, reverse);
        }
    }
    free(xn), free(yn);
    EXPECT(!expect_idle || idle_steps == steps, "expected a rank owning no asked row at every step (%d of %d steps)",
           idle_steps, steps);
    size_t n_tab = 0, n_par = 0;
    float* tables = tr.model.hash.n_layers ? gather_tables_(&tr, &w, &n_tab) : NULL;
    const TensorTable* tt = &tr.model.tt;
    for (int i = 0; i < tt->n; i++) n_par += tt->t[i].group == OPT_TABLE ? 0 : (size_t)tt->t[i].numel;
    float* params = w.rank == 0 ? mallocCheck((n_par + 1) * sizeof(float)) : NULL;
    expert_gather_dense(tr.ep > 1 ? &tr.xx : NULL, tt, tr.model.params, params);
    if (w.rank == 0) {
        FILE* f = fopen(out, "wb");
        if (!f) engram_fail("cannot write %s", out);
        fwrite(losses, sizeof(double), steps, f);
        fwrite(params, sizeof(float), n_par, f);
        if (n_tab) fwrite(tables, sizeof(float), n_tab, f);
        fclose(f);
        printf("P=%d EP=%d: %d steps, final loss %.6f, steps with an idle owner %d, %s\n", w.size, tr.ep, steps,
               losses[steps - 1], idle_steps, fails_ ? "checks FAILED" : "checks passed");
        printf("dropped assignments: %ld\n", dropped);
    }
    int total_fails = fails_;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &total_fails, 1, MPI_INT, MPI_SUM, w.comm));
    free(tables), free(params), free(x), free(y), free(losses), free(over);
    trainer_free(&tr);
    config_free(&c);
    comm_free(&w);
    return total_fails ? 1 : 0;
}

static float* slurp_(const char* path, size_t* n) {
    float* b = (float*)engram_read_file(path, n);
    if (!b) engram_fail("cannot read %s", path);
    return b;
}

/* Compare two dumps tensor by tensor: the layout is losses, dense params, tables. A first extra
 * argument --scale-floor=F makes a tensor's scale max(max|ref|, F): a tensor that starts at zero (a
 * bias) is only as large as Adam moved it, so its own max understates what float noise means there. */
static int compare_(const char* cfg_path, const char* pa, const char* pb, double tol, int n_over, char** over) {
    Config c;
    char err[1024];
    double floor_ = 0;
    if (n_over > 0 && !strncmp(over[0], "--scale-floor=", 14)) floor_ = atof(over[0] + 14), n_over--, over++;
    if (config_load(&c, cfg_path, n_over, over, err, sizeof err)) engram_fail("%s", err);
    size_t na, nb;
    char* a = (char*)slurp_(pa, &na);
    char* b = (char*)slurp_(pb, &nb);
    if (na != nb || tol == 0) {   // sizes first; tolerance 0 asks for bit-identical files
        int same = na == nb && memcmp(a, b, na) == 0;
        if (na != nb) printf("FAIL: %s and %s differ in size (%zu vs %zu)\n", pa, pb, na, nb);
        else printf("%s: %s vs %s\n", same ? "bit-identical" : "FAIL: not bit-identical", pa, pb);
        free(a), free(b);
        config_free(&c);
        return !same;
    }
    Model m;
    model_init(&m, &c, 1);   // for the tensor table only (the logical layout the dumps hold)
    size_t want = (size_t)c.train.steps * sizeof(double);
    for (int i = 0; i < m.tt.n; i++) want += (size_t)m.tt.t[i].numel * sizeof(float);
    if (na != want) { printf("FAIL: %s holds %zu bytes, this config's dump %zu\n", pa, na, want); return 1; }
    const double* la = (const double*)a;
    const double* lb = (const double*)b;
    double worst_loss = 0;
    for (int s = 0; s < c.train.steps; s++) worst_loss = fmax(worst_loss, fabs(la[s] - lb[s]) / fabs(la[s]));
    if (worst_loss > tol) { printf("FAIL: losses differ by %.2e relative\n", worst_loss); fails_++; }
    const float* fa = (const float*)(a + c.train.steps * sizeof(double));
    const float* fb = (const float*)(b + c.train.steps * sizeof(double));
    size_t table_off = m.tt.dense_numel;
    double worst = 0;
    for (int i = 0; i < m.tt.n; i++) {
        const TensorInfo* t = &m.tt.t[i];
        size_t off = t->group == OPT_TABLE ? table_off : t->offset;
        if (t->group == OPT_TABLE) table_off += (size_t)t->numel;
        double mx = 0, d = 0;
        for (int64_t j = 0; j < t->numel; j++) {
            mx = fmax(mx, fabs(fa[off + j]));
            d = fmax(d, fabs((double)fa[off + j] - fb[off + j]));
        }
        mx = fmax(mx, floor_);
        if (d > tol * mx) { printf("FAIL: %s max|Δ| %.3e > %.1e · %.3e\n", t->name, d, tol, mx); fails_++; }
        worst = fmax(worst, mx > 0 ? d / mx : d);
    }
    printf("%s vs %s: losses within %.1e, tensors within %.1e of max|ref|%s (%d tensors) — %s\n", pa, pb, worst_loss, worst, floor_ > 0 ? " (floored)" : "",
           m.tt.n, fails_ ? "FAILED" : "ok");
    model_free(&m);
    free(a), free(b);
    config_free(&c);
    return fails_ ? 1 : 0;
}

int main(int argc, char** argv) {
    if (argc >= 6 && !strcmp(argv[1], "--compare")) return compare_(argv[2], argv[3], argv[4], atof(argv[5]), argc - 6, argv + 6);
    if (argc < 3) {
        fprintf(stderr, "usage: train_dump CONFIG OUT [--data random|pattern|repeat] [--reverse] [--expect-idle-owner] [--prefetch] [key=value ...]\n"
                        "       train_dump --compare CONFIG A B TOL [--scale-floor=F] [key=value ...]\n");
        return 2;
    }
    return run_(argc, argv);
}
