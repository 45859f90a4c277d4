/*
 * checkpoint.c — checkpoint_save: the collective HDF5 write of ARCHITECTURE.md §5 (format in
 * docs/checkpoint.md), then close, verify, rename, `latest`, and pruning of old checkpoints.
 *
 * Every rank makes every HDF5 call (dataset and attribute creation are collective in parallel
 * HDF5). Replicated data is written by rank 0 with the other ranks selecting nothing; the Engram
 * tables, their moments and update counts by each rank for its own rows; under expert parallelism
 * the routed experts and their moments by the ranks of the first expert-parallel group, each its
 * experts' hyperslab of the logical [E, ...] dataset. Without a Comm the same
 * code runs on HDF5's default sequential driver, so single-process users need no MPI_Init.
 * Loading is checkpoint_load.c.
 */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "accounting.h"
#include "checkpoint_layout.h"
#include "common.h"
#include "shard.h"

typedef struct {
    hid_t file, dxpl;
    int rank, P;
    MPI_Comm comm;        // MPI_COMM_NULL: one process, sequential driver
    int failed;
    char err[512];
    int n_sums;
    uint64_t* sums;       // [n sets] checksum parts, summed over ranks before they are written
    CkSummer* sm;         // takes the checksums while the writes go on (NULL: inline)
} Writer_;

__attribute__((format(printf, 2, 0))) static void fail_(Writer_* w, const char* fmt, const char* what) {
    if (w->failed) return;
    w->failed = 1;
    ckpt_errf(w->err, sizeof w->err, fmt, what);
}

/* Create a dataset (parents created on the way): no fill values, space allocated at once. */
static hid_t create_(Writer_* w, const char* path, hid_t type, int ndim, const hsize_t* dims) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    hid_t sp = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t ds = H5Dcreate2(w->file, path, type, sp, lcpl, dcpl, H5P_DEFAULT);
    H5Sclose(sp);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    if (ds < 0) fail_(w, "cannot create dataset %s", path);
    return ds;
}

/* Replicated datasets of at least this size are written by all ranks, each its block of rows
 * (every rank holds the same values); smaller ones by rank 0 alone. */
#define SPLIT_MIN_BYTES ((size_t)64 << 10)

/* A replicated dataset (open): every rank holds all of data. Small ones (and scalars) rank 0 writes
 * while the others select nothing; larger ones each rank its block of rows, so the copying into the
 * page cache is shared. Adds this rank's part of the checksum to *sum (NULL: none; complete after
 * ckpt_summer_wait(w->sm)). */
static void write_whole_(Writer_* w, hid_t ds, const char* path, hid_t type, int ndim, const hsize_t* dims,
                         const void* data, size_t nbytes, uint64_t* sum) {
    int64_t rows = ndim ? (int64_t)dims[0] : 1;
    size_t row_bytes = rows ? nbytes / (size_t)rows : 0;
    int64_t lo = 0, n = w->rank == 0 ? rows : 0, max_rows = rows;
    if (ndim && nbytes >= SPLIT_MIN_BYTES && rows >= w->P) {
        shard_row_range(rows, w->P, w->rank, &lo, &n);
        max_rows = shard_block_rows(rows, w->P);
    }
    if (ckpt_rows_io(1, ds, type, w->dxpl, lo, lo + n, max_rows, row_bytes, (char*)data + (size_t)lo * row_bytes,
                     nbytes ? sum : NULL, w->sm) < 0)
        fail_(w, "cannot write %s", path);
}

/* Each rank writes its rows [first, first+local) of a sharded dataset (open; none unless s->writes),
 * adding their checksum to *sum as write_whole_ does. */
static void write_rows_(Writer_* w, hid_t ds, const CkSet* s, hid_t type, int64_t first, int64_t local,
                        const void* data, uint64_t* sum) {
    if (!s->writes) local = 0;
    if (ckpt_rows_io(1, ds, type, w->dxpl, first, first + local, s->max_rows, ckpt_row_bytes(s), (void*)data, sum,
                     w->sm) < 0)
        fail_(w, "cannot write %s", s->path);
}

/* A dense set's part into its flat dataset ds (format 2): row r of the tensor is elements
 * [flat_at + r·re, +re) there (re = elements per row). Replicated sets are shared out as in
 * write_whole_; the checksum is the tensor's own (word indices from its first element). */
static void write_flat_(Writer_* w, hid_t ds, const CkSet* s, const void* data, int64_t first, int64_t local,
                        uint64_t* sum) {
    int64_t rows = s->ndim ? (int64_t)s->dims[0] : 1, numel = 1;
    for (int d = 0; d < s->ndim; d++) numel *= (int64_t)s->dims[d];
    const int64_t re = rows ? numel / rows : 0, at = s->flat_at;
    int64_t lo = first, n = s->writes ? local : 0, max_rows = s->max_rows;
    const float* p = data;   // row lo's values
    if (!s->sharded) {
        lo = 0, n = w->rank == 0 ? rows : 0, max_rows = rows;
        if ((size_t)numel * 4 >= SPLIT_MIN_BYTES && rows >= w->P) {
            shard_row_range(rows, w->P, w->rank, &lo, &n);
            max_rows = shard_block_rows(rows, w->P);
        }
        p += (size_t)(lo * re);
    }
    if (ckpt_rows_io_at(1, ds, H5T_NATIVE_FLOAT, w->dxpl, at + lo * re, at + (lo + n) * re, max_rows * re, 4,
                        (void*)p, numel ? sum : NULL, w->sm, at) < 0)
        fail_(w, "cannot write %s", s->path);
}

/* Each dense tensor as a virtual dataset at its path, mapping its elements of the flat dataset:
 * h5py, h5ls and inspect see it by name (with its checksum), loads read the flat one. */
static hid_t create_view_(Writer_* w, const CkSet* s, int64_t flat_n) {
    int64_t numel = 1;
    for (int d = 0; d < s->ndim; d++) numel *= (int64_t)s->dims[d];
    hsize_t n = (hsize_t)flat_n, start = (hsize_t)s->flat_at, count = (hsize_t)numel;
    hid_t vs = s->ndim ? H5Screate_simple(s->ndim, s->dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t src = H5Screate_simple(1, &n, NULL);
    H5Sselect_hyperslab(src, H5S_SELECT_SET, &start, NULL, &count, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    H5Pset_virtual(dcpl, vs, ".", CKPT_FLAT[s->src - CK_PARAM], src);
    hid_t ds = H5Dcreate2(w->file, s->path, H5T_NATIVE_FLOAT, vs, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl), H5Pclose(lcpl), H5Sclose(vs), H5Sclose(src);
    if (ds < 0) fail_(w, "cannot create dataset %s", s->path);
    return ds;
}

/* A small metadata dataset: created, written by rank 0, closed. */
static void write_small_(Writer_* w, const char* path, hid_t type, int ndim, const hsize_t* dims, const void* data,
                         size_t nbytes) {
    hid_t ds = create_(w, path, type, ndim, dims);
    if (ds < 0) return;
    write_whole_(w, ds, path, type, ndim, dims, data, nbytes, NULL);
    H5Dclose(ds);
}

static void write_string_dataset_(Writer_* w, const char* path, const char* text) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(text) ? strlen(text) : 1);
    H5Tset_cset(t, H5T_CSET_UTF8);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    write_small_(w, path, t, 0, NULL, strlen(text) ? text : " ", 0);
    H5Tclose(t);
}

static void write_metadata_(Writer_* w, const Trainer* tr, const Config* c, const Compression* comp, const CkptState* st,
                            const char* created) {
    hid_t f = w->file;
    int bad = 0;
    bad |= ckpt_attr_write_str(f, "format", CHECKPOINT_FORMAT);
    bad |= ckpt_attr_write_i64(f, "format_version", CHECKPOINT_FORMAT_VERSION);
    bad |= ckpt_attr_write_i64(f, "step", st->step);
    bad |= ckpt_attr_write_i64(f, "tokens_seen", st->tokens_seen);
    bad |= ckpt_attr_write_i64(f, "world_size", w->P);
    bad |= ckpt_attr_write_str(f, "created", created);
    bad |= ckpt_attr_write_str(f, "engram_version", ENGRAM_VERSION);
    char* yaml = config_to_string(c);
    write_string_dataset_(w, "/config", yaml);
    free(yaml);

    Accounting a;
    accounting_compute(c, &tr->model.tt, &a);
    hid_t g = H5Gcreate2(f, "/accounting", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bad |= ckpt_attr_write_i64(g, "P_tot", a.P_tot) | ckpt_attr_write_i64(g, "P_act", a.P_act);
    bad |= ckpt_attr_write_i64(g, "P_sparse", a.P_sparse);
    bad |= ckpt_attr_write_f64s(g, "rho_target", &a.rho_target, 1) | ckpt_attr_write_f64s(g, "rho_actual", &a.rho_actual, 1);
    bad |= ckpt_attr_write_i64(g, "experts", a.experts) | ckpt_attr_write_i64(g, "engram_rows", a.engram_rows);
    H5Gclose(g);

    g = H5Gcreate2(f, "/state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bad |= ckpt_attr_write_u64(g, "seed", st->seed) | ckpt_attr_write_i64(g, "data_position", st->data_position);
    bad |= ckpt_attr_write_i64(g, "bad_steps", st->bad_steps);
    H5Gclose(g);

    if (comp && comp->lookup) {
        hsize_t V = (hsize_t)comp->V;
        write_small_(w, "/tokenizer/compress_lookup", H5T_NATIVE_INT32, 1, &V, comp->lookup, (size_t)V * 4);
        hid_t ds = H5Dopen2(f, "/tokenizer/compress_lookup", H5P_DEFAULT);
        if (ds >= 0) {
            bad |= ckpt_attr_write_i64(ds, "V", comp->V) | ckpt_attr_write_i64(ds, "V_compressed", comp->Vc);
            bad |= ckpt_attr_write_i64(ds, "pad_id", c->engram.pad_id);
            bad |= ckpt_attr_write_i64(ds, "pad_id_compressed", c->engram.pad_id_compressed);
            bad |= ckpt_attr_write_str(ds, "tokenizer", comp->tokenizer);
            bad |= ckpt_attr_write_str(ds, "tokenizer_sha256", comp->tokenizer_sha256);
            H5Dclose(ds);
        }
    }
    if (bad) fail_(w, "cannot write the %s attributes", "metadata");
}

/* All datasets of the layout, in three passes: create them all (collective metadata), write every
 * rank's part of each (independent transfers: no rank waits for another between datasets), then the
 * checksums (summed over ranks) and group attributes. */
static void write_tensors_(Writer_* w, const Trainer* tr, const Config* c, const CkSet* sets, int n) {
    w->sums = callocCheck((size_t)n + 1, sizeof(uint64_t));
    hid_t* ds = mallocCheck(((size_t)n + 1) * sizeof(hid_t));
    const int64_t flat_n = ckpt_flat_numel(sets, n);
    hsize_t fdims = (hsize_t)flat_n;
    hid_t flat[3];   // the dense tensors' values, m and v (format 2)
    for (int k = 0; k < 3; k++) flat[k] = create_(w, CKPT_FLAT[k], H5T_NATIVE_FLOAT, 1, &fdims);
    for (int i = 0; i < n; i++)
        ds[i] = sets[i].flat_at >= 0 ? flat[sets[i].src - CK_PARAM]
                : create_(w, sets[i].path, sets[i].is_float ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64, sets[i].ndim,
                          sets[i].dims);
    for (int i = 0; i < n; i++) {
        const CkSet* s = &sets[i];
        if (ds[i] < 0) continue;
        hid_t type = s->is_float ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64;
        int64_t first = 0, local = 0;
        const void* data = ckpt_set_data(tr, s, &first, &local);
        if (s->flat_at >= 0) {
            write_flat_(w, ds[i], s, data, first, local, &w->sums[i]);
        } else if (s->sharded) {
            write_rows_(w, ds[i], s, type, first, local, data, &w->sums[i]);
        } else {
            size_t numel = 1;
            for (int d = 0; d < s->ndim; d++) numel *= (size_t)s->dims[d];
            write_whole_(w, ds[i], s->path, type, s->ndim, s->dims, data, numel * (s->is_float ? 4 : 8), &w->sums[i]);
        }
    }
    ckpt_summer_wait(w->sm);
    if (w->comm != MPI_COMM_NULL) MPI_Allreduce(MPI_IN_PLACE, w->sums, n, MPI_UINT64_T, MPI_SUM, w->comm);
    const double betas[2] = {c->train.beta1, c->train.beta2};
    // the flat datasets carry every dense tensor's checksum (in set order) and the tensors' shapes
    uint64_t* flat_sums = callocCheck((size_t)n + 1, sizeof(uint64_t));
    char* shapes = ckpt_flat_tensors(sets, n);
    for (int k = 0; k < 3; k++) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (sets[i].flat_at >= 0 && (int)sets[i].src == CK_PARAM + k) flat_sums[m++] = w->sums[i];
        if (flat[k] < 0 || ckpt_attr_write_u64s(flat[k], "checksums", flat_sums, m) ||
            ckpt_attr_write_str(flat[k], "tensors", shapes))
            fail_(w, "cannot write the attributes of %s", CKPT_FLAT[k]);
        if (flat[k] >= 0) H5Dclose(flat[k]);
    }
    free(shapes);
    free(flat_sums);
    for (int i = 0; i < n; i++) {
        const int view = sets[i].flat_at >= 0;   // its checksum is in the flat dataset's array
        if (view) ds[i] = flat[sets[i].src - CK_PARAM] < 0 ? -1 : create_view_(w, &sets[i], flat_n);
        if (ds[i] < 0 || (!view && ckpt_attr_write_u64(ds[i], "checksum", w->sums[i])))
            fail_(w, "cannot write the checksum of %s", sets[i].path);
        if (ds[i] >= 0) H5Dclose(ds[i]);
        if (sets[i].src == CK_M) {   // the /optim/<name> group: Adam's step count and betas
            char grp[sizeof sets[i].path];
            snprintf(grp, sizeof grp, "%s", sets[i].path);
            *strrchr(grp, '/') = '\0';
            hid_t g = H5Gopen2(w->file, grp, H5P_DEFAULT);
            if (g < 0 || ckpt_attr_write_i64(g, "step", tr->step) || ckpt_attr_write_f64s(g, "betas", betas, 2))
                fail_(w, "cannot write the attributes of %s", grp);
            if (g >= 0) H5Gclose(g);
        }
    }
    free(ds);
}

/* ---- after the write: durable, verified, renamed, named by `latest`, old ones pruned ----------- */

static int fsync_path_(const char* path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int mkdirs_(const char* dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char* s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0777) && errno != EEXIST) return -1;
        *s = '/';
    }
    return mkdir(p, 0777) && errno != EEXIST ? -1 : 0;
}

/* step_XXXXXXXX.h5 → step, else -1. */
static long long step_of_(const char* name, const char* suffix) {
    long long s;
    int len = 0;
    if (sscanf(name, "step_%lld%n", &s, &len) != 1 || s < 0 || strcmp(name + len, suffix)) return -1;
    return s;
}

static int cmp_desc_(const void* a, const void* b) {
    long long x = *(const long long*)a, y = *(const long long*)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Remove stale .tmp files and all but the newest `keep` checkpoints (never the one just written). */
static void prune_(const char* dir, int keep, long long current) {
    DIR* d = opendir(dir);
    if (!d) return;
    long long* steps = NULL;
    int n = 0, cap = 0;
    char path[4352];
    struct dirent* de;
    while ((de = readdir(d))) {
        long long s;
        if (step_of_(de->d_name, ".h5.tmp") >= 0 || !strcmp(de->d_name, "latest.tmp")) {
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        } else if ((s = step_of_(de->d_name, ".h5")) >= 0) {
            if (n == cap) steps = reallocCheck(steps, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *steps);
            steps[n++] = s;
        }
    }
    closedir(d);
    if (n > 0) qsort(steps, (size_t)n, sizeof *steps, cmp_desc_);
    for (int i = keep; i < n; i++) {
        if (steps[i] == current) continue;
        snprintf(path, sizeof path, "%s/step_%08lld.h5", dir, steps[i]);
        unlink(path);
    }
    free(steps);
}

/* Rank 0, after every rank closed the file: make it durable, check it, publish it. */
static int publish_(const Trainer* tr, const char* dir, const char* tmp, const char* final, long long step, int keep,
                    char* err, size_t errlen) {
    if (fsync_path_(tmp)) {
        ckpt_errf(err, errlen, "%s: cannot sync the new checkpoint: %s", tmp, strerror(errno));
        return -1;
    }
    hid_t f = ckpt_open_checked(tmp, H5P_DEFAULT, NULL, err, errlen);
    if (f < 0) return -1;
    CkSet* sets = NULL;
    int n = ckpt_layout(tr, &sets);
    int rc = ckpt_check_sets(f, tmp, sets, n, 1, NULL, err, errlen);   // as a load will check it
    free(sets);
    H5Fclose(f);
    if (rc) return -1;
    if (rename(tmp, final)) {
        ckpt_errf(err, errlen, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
        return -1;
    }
    fsync_path_(dir);
    char latest[4352], latest_tmp[4352];
    snprintf(latest, sizeof latest, "%s/latest", dir);
    snprintf(latest_tmp, sizeof latest_tmp, "%s/latest.tmp", dir);
    FILE* lf = fopen(latest_tmp, "w");
    const char* base = strrchr(final, '/') ? strrchr(final, '/') + 1 : final;
    if (!lf || fprintf(lf, "%s\n", base) < 0 || fflush(lf) || fsync(fileno(lf)) || fclose(lf) || rename(latest_tmp, latest)) {
        ckpt_errf(err, errlen, "%s: cannot write: %s", latest, strerror(errno));
        return -1;
    }
    fsync_path_(dir);
    prune_(dir, keep, step);
    return 0;
}

/* Every rank returns the same status and the first failing rank's message (comm_agree). */
static int agree_(MPI_Comm comm, int failed, char* err, size_t errlen) {
    if (comm == MPI_COMM_NULL) return failed ? -1 : 0;
    return comm_agree(comm, failed, err, (int)errlen) < 0 ? 0 : -1;
}

int checkpoint_save(const Trainer* dev, const Config* c, const Compression* comp, const CkptState* st,
                    const char* dir, char* err, size_t errlen) {
    const Trainer* tr = ckpt_host_view(dev, 1);   // the buffers in host memory (dev itself on the CPU)
    CkQuiet q = ckpt_quiet();
    Writer_ w = {.file = -1, .dxpl = H5P_DEFAULT, .rank = 0, .P = 1, .comm = MPI_COMM_NULL};
    if (tr->comm) w.rank = tr->comm->rank, w.P = tr->comm->size, w.comm = tr->comm->comm;
    char tmp[4400], final[4352], created[32] = "";
    snprintf(final, sizeof final, "%s/step_%08lld.h5", dir, (long long)st->step);
    snprintf(tmp, sizeof tmp, "%s.tmp", final);
    if (w.rank == 0) {
        if (mkdirs_(dir)) fail_(&w, "%s: cannot create the checkpoint directory", dir);
        time_t now = time(NULL);
        strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    }
    if (agree_(w.comm, w.failed, w.err, sizeof w.err)) goto out;
    if (w.comm != MPI_COMM_NULL) MPI_Bcast(created, sizeof created, MPI_CHAR, 0, w.comm);

    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    // datasets of 64 KiB and more start on a 4 KiB boundary: the kernel's copy into the page cache
    // runs several times slower into a destination misaligned to the source (AMD Zen); same format
    H5Pset_alignment(fapl, (hsize_t)64 << 10, 4096);
    if (w.comm != MPI_COMM_NULL) {
        H5Pset_fapl_mpio(fapl, w.comm, MPI_INFO_NULL);
        H5Pset_coll_metadata_write(fapl, 1);
        w.dxpl = H5Pcreate(H5P_DATASET_XFER);
        H5Pset_dxpl_mpio(w.dxpl, H5FD_MPIO_INDEPENDENT);
    }
    w.file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (w.file < 0) {
        fail_(&w, "%s: cannot create the checkpoint file (directory not writable?)", tmp);
    } else {
        CkSet* sets = NULL;
        int n = ckpt_layout(tr, &sets);
        write_metadata_(&w, tr, c, comp, st, created);
        w.sm = ckpt_summer_start(comm_cores(tr->comm));
        write_tensors_(&w, tr, c, sets, n);
        ckpt_summer_stop(w.sm);
        free(sets);
        free(w.sums);
        if (H5Fclose(w.file) < 0) fail_(&w, "%s: cannot close the checkpoint file (disk full?)", tmp);
    }
    if (w.dxpl != H5P_DEFAULT) H5Pclose(w.dxpl);
    if (agree_(w.comm, w.failed, w.err, sizeof w.err)) goto out;
    if (w.rank == 0 && publish_(tr, dir, tmp, final, (long long)st->step, c->checkpoint.keep, w.err, sizeof w.err))
        w.failed = 1;
    agree_(w.comm, w.failed, w.err, sizeof w.err);
out:
    ckpt_loud(q);
    if (w.failed || w.err[0]) {
        // with several ranks agree_ already copied the message everywhere; mark failure locally too
        ckpt_errf(err, errlen, "%s", w.err);
    }
    ckpt_host_done((Trainer*)tr, (Trainer*)dev, 0);
    return w.err[0] ? -1 : 0;
}
