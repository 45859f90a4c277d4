/*
 * cmd_inspect.c — `engram inspect CHECKPOINT`: what a checkpoint holds, for people and scripts.
 * Summary (step, tokens, config, ρ accounting, per-tensor shape / norm / mean / std, Engram row
 * usage, optimizer state); `--tensor NAME [--slice A:B]` prints values; `--ngram TEXT` shows the
 * rows the n-grams ending at the text's last token map to, their owners, update counts and norms.
 * Single-process; reads through io/checkpoint_file.h (no HDF5 here).
 *
 * Not here: loading into a Trainer (io/checkpoint.h), the file format (docs/checkpoint.md).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_file.h"
#include "cli.h"
#include "common.h"
#include "ngram_hash.h"
#include "shard.h"
#include "tensors.h"
#include "tokenizer.h"

static void usage_(FILE* f) {
    fprintf(f,
            "usage: engram inspect CHECKPOINT [--json]\n"
            "       engram inspect CHECKPOINT --tensor NAME [--slice A:B] [--json]\n"
            "       engram inspect CHECKPOINT --ngram TEXT [--world-size P] [--json]\n\n"
            "CHECKPOINT is a checkpoint file or a run's checkpoint directory (its `latest`).\n"
            "Without options: step, tokens seen, config, parameter accounting (rho), every tensor's\n"
            "shape, norm, mean and std, Engram row usage and the optimizer state present.\n"
            "--tensor NAME  values of a tensor (\"blocks.1.attn.wqkv\", \"blocks.2.engram.table\") or of\n"
            "               any dataset path (\"/optim/wte/m\"); --slice A:B selects rows [A, B) of its\n"
            "               first axis (default: the first 16).\n"
            "--ngram TEXT   tokenizes TEXT with the config's data.tokenizer and the stored compression\n"
            "               and shows, per Engram layer and head, the row of the n-gram ending at the\n"
            "               last token, its owner rank at --world-size P (default: the writer's), its\n"
            "               update count and norm.\n"
            "--json         one JSON object instead of text.\n");
}

typedef struct {
    CkptFile* f;
    const char* file;
    Config c;
    NgramHash nh;
    TensorTable tt;
    int json;
} Ins_;

static const char* tensor_path_(const Ins_* s, const TensorInfo* t, char* buf, size_t n) {
    if (t->group == OPT_TABLE) snprintf(buf, n, "/engram/layer_%d/table", t->block);
    else snprintf(buf, n, "/params/%s", t->name);
    return buf;
    (void)s;
}

static cJSON* shape_json_(const int64_t* shape, int nd) {
    cJSON* a = cJSON_CreateArray();
    for (int i = 0; i < nd; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)shape[i]));
    return a;
}

static void shape_text_(char* out, size_t n, const int64_t* shape, int nd) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < nd && k < n; i++) k += (size_t)snprintf(out + k, n - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < n) snprintf(out + k, n - k, "]");
}

/* norm, mean, std of a dataset, read in row chunks of ≤ 1M values. */
static int stats_(Ins_* s, const char* path, double* norm, double* mean, double* sd, int64_t shape[4], int* nd) {
    *nd = ckptfile_shape(s->f, path, shape);
    if (*nd < 0) return -1;
    int64_t rows = *nd ? shape[0] : 1, per = 1;
    for (int i = 1; i < *nd; i++) per *= shape[i];
    int64_t chunk = per >= (1 << 20) ? 1 : (1 << 20) / per;
    double* buf = mallocCheck((size_t)(chunk * per) * sizeof(double));
    double sum = 0, sq = 0;
    for (int64_t r = 0; r < rows; r += chunk) {
        int64_t k = rows - r < chunk ? rows - r : chunk;
        if (ckptfile_read_f64(s->f, path, r, *nd ? k : 1, buf)) { free(buf); return -1; }
        for (int64_t i = 0; i < k * per; i++) sum += buf[i], sq += buf[i] * buf[i];
    }
    free(buf);
    double n = (double)(rows * per);
    *norm = sqrt(sq);
    *mean = sum / n;
    *sd = sqrt(fmax(0.0, sq / n - *mean * *mean));
    return 0;
}

static void add_i64_attr_(Ins_* s, cJSON* o, const char* obj, const char* name) {
    int64_t v;
    if (ckptfile_attr_i64(s->f, obj, name, &v) == 0) cJSON_AddNumberToObject(o, name, (double)v);
}

static cJSON* int_list_(const int* v, int n) {
    cJSON* a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

/* The whole summary as one JSON object; text output prints from it. */
static cJSON* summary_(Ins_* s) {
    cJSON* o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", s->file);
    cJSON_AddNumberToObject(o, "format_version", ckptfile_version(s->f));
    add_i64_attr_(s, o, "/", "step");
    add_i64_attr_(s, o, "/", "tokens_seen");
    add_i64_attr_(s, o, "/", "world_size");
    char* str;
    if ((str = ckptfile_attr_str(s->f, "/", "created"))) cJSON_AddStringToObject(o, "created", str), free(str);
    if ((str = ckptfile_attr_str(s->f, "/", "engram_version"))) cJSON_AddStringToObject(o, "engram_version", str), free(str);
    const Config* c = &s->c;
    cJSON* cf = cJSON_AddObjectToObject(o, "config");
    cJSON_AddNumberToObject(cf, "vocab_size", c->model.vocab_size);
    cJSON_AddNumberToObject(cf, "d_model", c->model.d_model);
    cJSON_AddNumberToObject(cf, "n_layers", c->model.n_layers);
    cJSON_AddNumberToObject(cf, "n_heads", c->model.n_heads);
    cJSON_AddNumberToObject(cf, "seq_len", c->model.seq_len);
    cJSON_AddNumberToObject(cf, "hc_mult", c->model.hc_mult);
    cJSON_AddItemToObject(cf, "moe_layers", int_list_(c->moe.layers.v, c->moe.layers.n));
    cJSON_AddNumberToObject(cf, "experts", c->moe.experts);
    cJSON_AddNumberToObject(cf, "top_k", c->moe.top_k);
    cJSON_AddItemToObject(cf, "engram_layers", int_list_(c->engram.layers.v, c->engram.layers.n));
    cJSON_AddNumberToObject(cf, "max_ngram", c->engram.max_ngram);
    cJSON_AddNumberToObject(cf, "heads_per_ngram", c->engram.heads_per_ngram);
    cJSON_AddNumberToObject(cf, "head_dim", c->engram.head_dim);
    cJSON_AddStringToObject(cf, "tokenizer", c->data.tokenizer);
    cJSON* ac = cJSON_AddObjectToObject(o, "accounting");
    static const char* acc_i[] = {"P_tot", "P_act", "P_sparse", "experts", "engram_rows"};
    for (int i = 0; i < 5; i++) add_i64_attr_(s, ac, "/accounting", acc_i[i]);
    double d;
    if (ckptfile_attr_f64(s->f, "/accounting", "rho_target", &d) == 0) cJSON_AddNumberToObject(ac, "rho_target", d);
    if (ckptfile_attr_f64(s->f, "/accounting", "rho_actual", &d) == 0) cJSON_AddNumberToObject(ac, "rho_actual", d);
    const char* lk = "/tokenizer/compress_lookup";
    if (ckptfile_exists(s->f, lk)) {
        cJSON* tk = cJSON_AddObjectToObject(o, "tokenizer");
        if ((str = ckptfile_attr_str(s->f, lk, "tokenizer"))) cJSON_AddStringToObject(tk, "path", str), free(str);
        if ((str = ckptfile_attr_str(s->f, lk, "tokenizer_sha256"))) cJSON_AddStringToObject(tk, "sha256", str), free(str);
        static const char* tk_i[] = {"V", "V_compressed", "pad_id", "pad_id_compressed"};
        for (int i = 0; i < 4; i++) add_i64_attr_(s, tk, lk, tk_i[i]);
    } else {
        cJSON_AddNullToObject(o, "tokenizer");
    }
    cJSON* st = cJSON_AddObjectToObject(o, "state");
    add_i64_attr_(s, st, "/state", "data_position");
    add_i64_attr_(s, st, "/state", "bad_steps");
    add_i64_attr_(s, st, "/state", "seed");
    // tensors
    cJSON* ts = cJSON_AddArrayToObject(o, "tensors");
    cJSON* eng = cJSON_AddArrayToObject(o, "engram");
    int dense = 0, dense_moments = 0, tables = 0, table_moments = 0;
    char path[256], mpath[300], vpath[300];
    for (int i = 0; i < s->tt.n; i++) {
        const TensorInfo* t = &s->tt.t[i];
        tensor_path_(s, t, path, sizeof path);
        double norm, mean, sd;
        int64_t shape[4];
        int nd;
        cJSON* T = cJSON_CreateObject();
        cJSON_AddStringToObject(T, "name", t->name);
        cJSON_AddStringToObject(T, "path", path);
        if (stats_(s, path, &norm, &mean, &sd, shape, &nd) == 0) {
            cJSON_AddItemToObject(T, "shape", shape_json_(shape, nd));
            cJSON_AddNumberToObject(T, "norm", norm);
            cJSON_AddNumberToObject(T, "mean", mean);
            cJSON_AddNumberToObject(T, "std", sd);
        } else {
            cJSON_AddBoolToObject(T, "missing", 1);
        }
        cJSON_AddItemToArray(ts, T);
        if (t->group != OPT_TABLE) {
            snprintf(mpath, sizeof mpath, "/optim/%s/m", t->name);
            snprintf(vpath, sizeof vpath, "/optim/%s/v", t->name);
            dense++;
            dense_moments += ckptfile_exists(s->f, mpath) && ckptfile_exists(s->f, vpath);
            continue;
        }
        snprintf(mpath, sizeof mpath, "/engram/layer_%d/m", t->block);
        snprintf(vpath, sizeof vpath, "/engram/layer_%d/v", t->block);
        tables++;
        table_moments += ckptfile_exists(s->f, mpath) && ckptfile_exists(s->f, vpath);
        // row usage
        char upath[300];
        snprintf(upath, sizeof upath, "/engram/layer_%d/row_updates", t->block);
        int64_t rows = t->shape[0], used = 0, top_row[5], top_n[5];
        int n_top = 0;
        int64_t* u = mallocCheck((size_t)(rows + 1) * sizeof(int64_t));
        int ok = ckptfile_read_i64(s->f, upath, 0, rows, u) == 0;
        for (int64_t r = 0; ok && r < rows; r++) {
            if (u[r] > 0) used++;
            if (u[r] <= 0 || (n_top == 5 && u[r] <= top_n[4])) continue;
            int k = n_top < 5 ? n_top++ : 4;   // insert into the sorted top 5
            for (; k > 0 && top_n[k - 1] < u[r]; k--) top_n[k] = top_n[k - 1], top_row[k] = top_row[k - 1];
            top_n[k] = u[r], top_row[k] = r;
        }
        free(u);
        cJSON* E = cJSON_CreateObject();
        cJSON_AddNumberToObject(E, "layer", t->block);
        cJSON_AddNumberToObject(E, "rows", (double)rows);
        cJSON_AddNumberToObject(E, "head_dim", (double)t->shape[1]);
        cJSON_AddNumberToObject(E, "table_params", (double)t->numel);
        if (ok) {
            cJSON_AddNumberToObject(E, "rows_updated", (double)used);
            cJSON_AddNumberToObject(E, "fraction_updated", rows ? (double)used / (double)rows : 0.0);
            cJSON* top = cJSON_AddArrayToObject(E, "most_updated");
            for (int k = 0; k < n_top; k++) {
                cJSON* R = cJSON_CreateObject();
                cJSON_AddNumberToObject(R, "row", (double)top_row[k]);
                cJSON_AddNumberToObject(R, "updates", (double)top_n[k]);
                cJSON_AddItemToArray(top, R);
            }
        }
        cJSON_AddItemToArray(eng, E);
    }
    cJSON* op = cJSON_AddObjectToObject(o, "optimizer");
    cJSON_AddNumberToObject(op, "dense_tensors", dense);
    cJSON_AddNumberToObject(op, "dense_with_moments", dense_moments);
    cJSON_AddNumberToObject(op, "tables", tables);
    cJSON_AddNumberToObject(op, "tables_with_moments", table_moments);
    if (dense > 0) {
        snprintf(mpath, sizeof mpath, "/optim/%s", s->tt.t[0].name);
        add_i64_attr_(s, op, mpath, "step");
        double betas[2];
        if (ckptfile_attr_f64s(s->f, mpath, "betas", betas, 2) == 2) {
            cJSON* b = cJSON_AddArrayToObject(op, "betas");
            cJSON_AddItemToArray(b, cJSON_CreateNumber(betas[0]));
            cJSON_AddItemToArray(b, cJSON_CreateNumber(betas[1]));
        }
    }
    return o;
}

static double num_(const cJSON* o, const char* k) {
    const cJSON* v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}
static const char* str_(const cJSON* o, const char* k) {
    const cJSON* v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "?";
}
static void list_text_(char* out, size_t n, const cJSON* a) {
    size_t k = (size_t)snprintf(out, n, "[");
    const cJSON* x;
    int i = 0;
    cJSON_ArrayForEach(x, a) if (k < n) k += (size_t)snprintf(out + k, n - k, "%s%g", i++ ? "," : "", x->valuedouble);
    if (k < n) snprintf(out + k, n - k, "]");
}

static void print_summary_(const cJSON* o) {
    const cJSON *cf = cJSON_GetObjectItem(o, "config"), *ac = cJSON_GetObjectItem(o, "accounting");
    printf("checkpoint  %s (format %g, engram %s, written %s by %g ranks)\n", str_(o, "file"), num_(o, "format_version"),
           str_(o, "engram_version"), str_(o, "created"), num_(o, "world_size"));
    printf("step        %.0f, tokens seen %.0f\n", num_(o, "step"), num_(o, "tokens_seen"));
    char moe[128], eng[128];
    list_text_(moe, sizeof moe, cJSON_GetObjectItem(cf, "moe_layers"));
    list_text_(eng, sizeof eng, cJSON_GetObjectItem(cf, "engram_layers"));
    printf("model       V %g, D %g, L %g, heads %g, T %g, G %g; MoE layers %s (E %g, k %g); Engram layers %s (N %g, H %g, Dh %g)\n",
           num_(cf, "vocab_size"), num_(cf, "d_model"), num_(cf, "n_layers"), num_(cf, "n_heads"), num_(cf, "seq_len"),
           num_(cf, "hc_mult"), moe, num_(cf, "experts"), num_(cf, "top_k"), eng, num_(cf, "max_ngram"),
           num_(cf, "heads_per_ngram"), num_(cf, "head_dim"));
    printf("accounting  P_tot %.0f, P_act %.0f, P_sparse %.0f, rho %.4f (target %.4f), experts %g, Engram rows %.0f\n",
           num_(ac, "P_tot"), num_(ac, "P_act"), num_(ac, "P_sparse"), num_(ac, "rho_actual"), num_(ac, "rho_target"),
           num_(ac, "experts"), num_(ac, "engram_rows"));
    const cJSON* tk = cJSON_GetObjectItem(o, "tokenizer");
    if (cJSON_IsObject(tk))
        printf("tokenizer   %s (sha256 %s), V %.0f → V' %.0f, pad %.0f → %.0f\n", str_(tk, "path"), str_(tk, "sha256"),
               num_(tk, "V"), num_(tk, "V_compressed"), num_(tk, "pad_id"), num_(tk, "pad_id_compressed"));
    else
        printf("tokenizer   none recorded (saved without a tokenizer)\n");
    const cJSON* st = cJSON_GetObjectItem(o, "state");
    printf("state       seed %.0f, data position %.0f sequences, bad steps %.0f\n", num_(st, "seed"), num_(st, "data_position"),
           num_(st, "bad_steps"));
    printf("\n%-34s %-14s %12s %12s %12s\n", "tensor", "shape", "norm", "mean", "std");
    const cJSON* t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(o, "tensors")) {
        char shape[64];
        list_text_(shape, sizeof shape, cJSON_GetObjectItem(t, "shape"));
        if (cJSON_GetObjectItem(t, "missing")) printf("%-34s MISSING\n", str_(t, "name"));
        else printf("%-34s %-14s %12.5g %12.5g %12.5g\n", str_(t, "name"), shape, num_(t, "norm"), num_(t, "mean"), num_(t, "std"));
    }
    const cJSON* e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(o, "engram")) {
        printf("\nEngram layer %g: table [%.0f, %g] (%.0f params); rows updated %.0f (%.2f%%); most updated:", num_(e, "layer"),
               num_(e, "rows"), num_(e, "head_dim"), num_(e, "table_params"), num_(e, "rows_updated"),
               100 * num_(e, "fraction_updated"));
        const cJSON* r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItem(e, "most_updated")) printf(" row %.0f ×%.0f", num_(r, "row"), num_(r, "updates"));
        printf("\n");
    }
    const cJSON* op = cJSON_GetObjectItem(o, "optimizer");
    printf("\noptimizer   Adam moments for %g of %g dense tensors and %g of %g Engram tables; step %.0f\n",
           num_(op, "dense_with_moments"), num_(op, "dense_tensors"), num_(op, "tables_with_moments"), num_(op, "tables"),
           num_(op, "step"));
}

/* --tensor NAME [--slice A:B]: rows [A, B) of the first axis. */
static void show_tensor_(Ins_* s, const char* name, const char* slice) {
    char path[300];
    const TensorInfo* t = tensors_find(&s->tt, name);
    if (t) tensor_path_(s, t, path, sizeof path);
    else if (name[0] == '/') snprintf(path, sizeof path, "%s", name);
    else engram_fail("%s: no tensor named %s; `engram inspect %s` lists them (or give a dataset path like /optim/wte/m)",
                     s->file, name, s->file);
    int64_t shape[4];
    int nd = ckptfile_shape(s->f, path, shape);
    if (nd < 0) engram_fail("%s: no dataset %s", s->file, path);
    int64_t rows = nd ? shape[0] : 1, per = 1, a = 0, b = rows < 16 ? rows : 16;
    for (int i = 1; i < nd; i++) per *= shape[i];
    if (slice) {
        char* end;
        a = strtoll(slice, &end, 10);
        b = *end == ':' ? (end[1] ? strtoll(end + 1, &end, 10) : rows) : -1;
        if (*end && *end != ':') b = -1;
        if (a < 0 || b < a || b > rows)
            engram_fail("inspect: --slice A:B must satisfy 0 <= A <= B <= %lld for %s (got %s)", (long long)rows, path, slice);
    }
    double* v = mallocCheck((size_t)((b - a) * per + 1) * sizeof(double));
    if (ckptfile_read_f64(s->f, path, a, nd ? b - a : 1, v)) engram_fail("%s: cannot read %s (corrupt file)", s->file, path);
    char shp[64];
    shape_text_(shp, sizeof shp, shape, nd);
    if (s->json) {
        cJSON* o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "tensor", name);
        cJSON_AddStringToObject(o, "path", path);
        cJSON_AddItemToObject(o, "shape", shape_json_(shape, nd));
        cJSON* sl = cJSON_AddArrayToObject(o, "slice");
        cJSON_AddItemToArray(sl, cJSON_CreateNumber((double)a));
        cJSON_AddItemToArray(sl, cJSON_CreateNumber((double)b));
        cJSON* rs = cJSON_AddArrayToObject(o, "values");
        for (int64_t r = 0; r < (nd ? b - a : 1); r++) {
            cJSON* row = cJSON_CreateArray();
            for (int64_t j = 0; j < per; j++) cJSON_AddItemToArray(row, cJSON_CreateNumber(v[r * per + j]));
            cJSON_AddItemToArray(rs, row);
        }
        char* out = cJSON_PrintUnformatted(o);
        puts(out);
        free(out);
        cJSON_Delete(o);
    } else {
        printf("%s %s, rows %lld:%lld\n", path, shp, (long long)a, (long long)b);
        for (int64_t r = 0; r < (nd ? b - a : 1); r++) {
            printf("%6lld:", (long long)(a + r));
            for (int64_t j = 0; j < per; j++) printf(" %.8g", v[r * per + j]);
            printf("\n");
        }
    }
    free(v);
}

/* --ngram TEXT: per Engram layer and head, the row of the n-gram ending at the last token. */
static void show_ngram_(Ins_* s, const char* text, int world) {
    const Config* c = &s->c;
    if (c->engram.layers.n == 0) engram_fail("%s: the model has no Engram layers (engram.layers is empty)", s->file);
    if (!c->data.tokenizer[0])
        engram_fail("%s: its config has no data.tokenizer, so --ngram cannot tokenize; use `engram hash` with ids", s->file);
    const char* lk = "/tokenizer/compress_lookup";
    int64_t shape[4];
    if (ckptfile_shape(s->f, lk, shape) != 1)
        engram_fail("%s: no %s (saved without a tokenizer); --ngram needs the stored compression", s->file, lk);
    char err[1024];
    Tokenizer* tk = tokenizer_load(c->data.tokenizer, err, sizeof err);
    if (!tk) engram_fail("%s (the tokenizer named by %s's config)", err, s->file);
    char* sha = ckptfile_attr_str(s->f, lk, "tokenizer_sha256");
    if (sha && strcmp(sha, tokenizer_sha256(tk)))
        fprintf(stderr, "engram: warning: %s has sha256 %s, but the checkpoint was written with %s\n", tokenizer_path(tk),
                tokenizer_sha256(tk), sha);
    free(sha);
    int64_t V = shape[0];
    int64_t* lookup = mallocCheck((size_t)V * sizeof(int64_t));
    if (ckptfile_read_i64(s->f, lk, 0, V, lookup)) engram_fail("%s: cannot read %s (corrupt file)", s->file, lk);
    IdVec ids = {0};
    tokenizer_encode(tk, text, strlen(text), &ids);
    if (ids.n == 0) engram_fail("inspect: --ngram gives no tokens (got \"%s\")", text);
    int T = (int)ids.n, HT = s->nh.h_total, H = s->nh.heads;
    int64_t* cids = mallocCheck((size_t)T * sizeof(int64_t));
    for (int t = 0; t < T; t++) {
        if (ids.v[t] >= V) engram_fail("%s: token id %d is outside the stored compression (V = %lld)", s->file, ids.v[t], (long long)V);
        cids[t] = lookup[ids.v[t]];
    }
    int64_t* glob = mallocCheck((size_t)T * HT * sizeof(int64_t));
    cJSON* o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "text", text);
    cJSON* a = cJSON_AddArrayToObject(o, "ids");
    cJSON* ac = cJSON_AddArrayToObject(o, "compressed_ids");
    for (int t = 0; t < T; t++) {
        cJSON_AddItemToArray(a, cJSON_CreateNumber(ids.v[t]));
        cJSON_AddItemToArray(ac, cJSON_CreateNumber((double)cids[t]));
    }
    cJSON_AddNumberToObject(o, "world_size", world);
    cJSON* layers = cJSON_AddArrayToObject(o, "layers");
    if (!s->json) {
        printf("text \"%s\": %d tokens; ids", text, T);
        for (int t = 0; t < T; t++) printf(" %d", ids.v[t]);
        printf("; compressed");
        for (int t = 0; t < T; t++) printf(" %lld", (long long)cids[t]);
        printf("\nrows of the n-grams ending at the last token (owners at world size %d):\n", world);
    }
    for (int li = 0; li < s->nh.n_layers; li++) {
        int blk = s->nh.layer_ids[li];
        int64_t rows = s->nh.rows[li];
        ngram_hash_ids(&s->nh, li, cids, 1, T, 1, glob);
        cJSON* L = cJSON_CreateObject();
        cJSON_AddNumberToObject(L, "layer", blk);
        cJSON* hs = cJSON_AddArrayToObject(L, "heads");
        char tpath[128], upath[128];
        snprintf(tpath, sizeof tpath, "/engram/layer_%d/table", blk);
        snprintf(upath, sizeof upath, "/engram/layer_%d/row_updates", blk);
        int64_t tshape[4];
        if (ckptfile_shape(s->f, tpath, tshape) != 2) engram_fail("%s: no %s", s->file, tpath);
        double* row = mallocCheck((size_t)tshape[1] * sizeof(double));
        for (int col = 0; col < HT; col++) {
            int64_t r = glob[(size_t)(T - 1) * HT + col], upd = 0;
            if (ckptfile_read_f64(s->f, tpath, r, 1, row) || ckptfile_read_i64(s->f, upath, r, 1, &upd))
                engram_fail("%s: cannot read row %lld of %s (corrupt file)", s->file, (long long)r, tpath);
            double norm = 0;
            for (int64_t j = 0; j < tshape[1]; j++) norm += row[j] * row[j];
            norm = sqrt(norm);
            int owner = shard_row_owner(r, rows, world);
            cJSON* h = cJSON_CreateObject();
            cJSON_AddNumberToObject(h, "n", col / H + 2);
            cJSON_AddNumberToObject(h, "head", col % H);
            cJSON_AddNumberToObject(h, "row", (double)r);
            cJSON_AddNumberToObject(h, "owner", owner);
            cJSON_AddNumberToObject(h, "updates", (double)upd);
            cJSON_AddNumberToObject(h, "norm", norm);
            cJSON_AddItemToArray(hs, h);
            if (!s->json)
                printf("  layer %d  %d-gram head %d: row %lld (rank %d of %d), updated %lld times, norm %.6g\n", blk, col / H + 2,
                       col % H, (long long)r, owner, world, (long long)upd, norm);
        }
        free(row);
        cJSON_AddItemToArray(layers, L);
    }
    if (s->json) {
        char* out = cJSON_PrintUnformatted(o);
        puts(out);
        free(out);
    }
    cJSON_Delete(o);
    free(glob), free(cids), free(lookup), free(ids.v);
    tokenizer_free(tk);
}

int cmd_inspect(int argc, char** argv) {
    const char *path = NULL, *tensor = NULL, *slice = NULL, *ngram = NULL, *v;
    int json = 0, world = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { usage_(stdout); return 0; }
        if (!strcmp(argv[i], "--json")) json = 1;
        else if ((v = cli_option(argc, argv, &i, "--tensor"))) tensor = v;
        else if ((v = cli_option(argc, argv, &i, "--slice"))) slice = v;
        else if ((v = cli_option(argc, argv, &i, "--ngram"))) ngram = v;
        else if ((v = cli_option(argc, argv, &i, "--world-size"))) {
            char* end;
            world = (int)strtol(v, &end, 10);
            if (*end || world < 1) engram_fail("inspect: --world-size must be a positive integer (got %s)", v);
        } else if (argv[i][0] == '-') engram_fail("inspect: unknown option %s; see engram inspect --help", argv[i]);
        else if (!path) path = argv[i];
        else engram_fail("inspect: one CHECKPOINT only (got %s and %s)", path, argv[i]);
    }
    if (!path) { usage_(stderr); return ENGRAM_EXIT_USAGE; }
    if (tensor && ngram) engram_fail("inspect: give --tensor or --ngram, not both");
    if (slice && !tensor) engram_fail("inspect: --slice goes with --tensor NAME");
    if (world && !ngram) engram_fail("inspect: --world-size goes with --ngram TEXT");
    Ins_ s = {.json = json};
    char err[1024];
    s.f = ckptfile_open(path, err, sizeof err);
    if (!s.f) engram_fail("%s", err);
    s.file = ckptfile_path(s.f);
    char* yaml = ckptfile_config(s.f);
    if (!yaml) engram_fail("%s: /config is missing or unreadable (corrupt checkpoint)", s.file);
    char where[4500];
    snprintf(where, sizeof where, "%s:/config", s.file);
    if (config_load_string(&s.c, yaml, where, 0, NULL, err, sizeof err)) engram_fail("%s", err);
    free(yaml);
    int ne = s.c.engram.layers.n;
    if (ne > 0) {
        const Config* c = &s.c;
        int64_t vc = c->engram.compressed_vocab_size > 0 ? c->engram.compressed_vocab_size : c->model.vocab_size;
        int64_t pad = c->engram.pad_id_compressed >= 0 ? c->engram.pad_id_compressed : 0;
        ngram_hash_init(&s.nh, c->engram.layers.v, ne, c->engram.max_ngram, c->engram.heads_per_ngram, c->engram.vocab_bases.v,
                        vc, pad, (uint64_t)c->engram.seed, (EngramFlavour)c->engram.flavour);
    }
    tensors_build(&s.tt, &s.c, ne > 0 ? s.nh.rows : NULL);
    if (tensor) {
        show_tensor_(&s, tensor, slice);
    } else if (ngram) {
        int64_t ws = 1;
        ckptfile_attr_i64(s.f, "/", "world_size", &ws);
        show_ngram_(&s, ngram, world ? world : (int)ws);
    } else {
        cJSON* o = summary_(&s);
        if (json) {
            char* out = cJSON_PrintUnformatted(o);
            puts(out);
            free(out);
        } else {
            print_summary_(o);
        }
        cJSON_Delete(o);
    }
    tensors_free(&s.tt);
    if (ne > 0) ngram_hash_free(&s.nh);
    config_free(&s.c);
    ckptfile_close(s.f);
    return 0;
}
