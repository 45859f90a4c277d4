/*
 * checkpoint_load.c — finding a checkpoint (a file, or a directory's `latest`), reading its config,
 * and loading it into a Trainer at any world size (checkpoint.h).
 *
 * Everything that can be checked without touching the Trainer is checked first (format, version,
 * every dataset's shape, the hashing arrays against the config's), identically on every rank; then
 * every rank reads replicated datasets whole, its own rows of the Engram tables and (under expert
 * parallelism) its own experts (independent MPI-IO transfers), taking checksums as the pieces arrive
 * (on a second thread; each row's once over all ranks). Checksums are verified last: a refused file may leave the Trainer half-loaded,
 * and the callers exit.
 */
#include "checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint_layout.h"
#include "common.h"
#include "shard.h"

/* Replicated sets from this size on are checksummed in parts, each rank its block of rows. */
#define PARTS_MIN_BYTES_ ((size_t)64 << 10)

int checkpoint_resolve(const char* path, char* file, size_t n, char* err, size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        ckpt_errf(err, errlen, "%s: no such checkpoint file or directory", path);
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(file, n, "%s", path);
        return 0;
    }
    char latest[4352], name[1024] = "";
    snprintf(latest, sizeof latest, "%s/latest", path);
    FILE* f = fopen(latest, "r");
    if (!f) {
        ckpt_errf(err, errlen, "%s: no `latest` file, so no complete checkpoint in this directory", path);
        return -1;
    }
    if (!fgets(name, sizeof name, f)) name[0] = '\0';
    fclose(f);
    name[strcspn(name, "\r\n")] = '\0';
    if (!name[0] || strchr(name, '/')) {
        ckpt_errf(err, errlen, "%s: does not name a checkpoint file (got \"%s\")", latest, name);
        return -1;
    }
    snprintf(file, n, "%s/%s", path, name);
    if (stat(file, &sb) != 0) {
        ckpt_errf(err, errlen, "%s: names %s, which does not exist", latest, name);
        return -1;
    }
    return 0;
}

char* checkpoint_read_config(const char* file, char* err, size_t errlen) {
    CkQuiet q = ckpt_quiet();
    hid_t f = ckpt_open_checked(file, H5P_DEFAULT, NULL, err, errlen);
    char* yaml = NULL;
    if (f >= 0) {
        yaml = ckpt_read_config_string(f);
        if (!yaml) ckpt_errf(err, errlen, "%s: /config is missing or unreadable (corrupt checkpoint)", file);
        H5Fclose(f);
    }
    ckpt_loud(q);
    return yaml;
}

/* The hashing arrays must equal the config's: the same rows must mean the same n-grams. */
static int check_hash_(const hid_t* ids, const char* file, const Trainer* tr, const CkSet* sets, int n, char* err,
                       size_t errlen) {
    for (int i = 0; i < n; i++) {
        const CkSet* s = &sets[i];
        if (s->src < CK_MULT) continue;
        int64_t first, local;
        (void)first, (void)local;
        size_t cnt = (size_t)s->dims[0];
        int64_t* have = mallocCheck(cnt * sizeof(int64_t));
        const NgramHash* nh = &tr->model.hash;
        const int64_t* want = s->src == CK_MULT ? nh->multipliers + (size_t)s->layer * nh->max_ngram
                              : s->src == CK_SIZES ? nh->table_sizes + (size_t)s->layer * nh->h_total
                                                   : nh->offsets + (size_t)s->layer * nh->h_total;
        int rc = H5Dread(ids[i], H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, have) < 0;
        if (rc) ckpt_errf(err, errlen, "%s: cannot read %s (corrupt file)", file, s->path);
        else if (memcmp(have, want, cnt * sizeof(int64_t))) {
            ckpt_errf(err, errlen, "%s: %s differs from this config's (engram.seed, engram.layers, engram.vocab_bases or the "
                     "compressed vocabulary changed?); the table rows would mean other n-grams", file, s->path);
            rc = 1;
        }
        free(have);
        if (rc) return -1;
    }
    return 0;
}

/* Read rows [lo, hi) of an open set (this rank's part of max_rows per rank) into out, adding their
 * checksum to *sum (NULL: none; complete after the summer's wait). A dense set of a format 2 file
 * (flat) is read from its flat dataset ds, its rows as elements from s->flat_at on. 0 or -1. */
static int read_rows_(const CkMap* map, hid_t ds, const CkSet* s, int flat, hid_t dxpl, int64_t lo, int64_t hi,
                      int64_t max_rows, size_t row_bytes, void* out, uint64_t* sum, CkSummer* sm) {
    if (flat && s->flat_at >= 0) {
        const int64_t re = (int64_t)(row_bytes / 4), at = s->flat_at;
        if (ckpt_rows_read_mapped(map, ds, H5T_NATIVE_FLOAT, at + lo * re, at + hi * re, out, sum, sm, at)) return 0;
        return ckpt_rows_io_at(0, ds, H5T_NATIVE_FLOAT, dxpl, at + lo * re, at + hi * re, max_rows * re, 4, out, sum,
                               sm, at) < 0 ? -1 : 0;
    }
    hid_t mt = s->is_float ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64;
    if (ckpt_rows_read_mapped(map, ds, mt, lo, hi, out, sum, sm, 0)) return 0;
    return ckpt_rows_io(0, ds, mt, dxpl, lo, hi, max_rows, row_bytes, out, sum, sm) < 0 ? -1 : 0;
}

/* The expected checksums of a format 2 file's dense sets: the flat datasets' `checksums` arrays,
 * in set order (has[i] 0 where one is missing or of another length). */
static void flat_checksums_(const hid_t* ids, const CkSet* sets, int n, uint64_t* want, int* has) {
    for (int k = 0; k < 3; k++) {
        int m = 0, first = -1;
        for (int i = 0; i < n; i++)
            if (sets[i].flat_at >= 0 && (int)sets[i].src == CK_PARAM + k) first = first < 0 ? i : first, m++;
        if (first < 0) continue;
        uint64_t* v = callocCheck((size_t)m + 1, sizeof(uint64_t));
        int ok = ckpt_attr_read_u64s(ids[first], "checksums", v, m) == 0;
        for (int i = 0, j = 0; i < n; i++)
            if (sets[i].flat_at >= 0 && (int)sets[i].src == CK_PARAM + k) has[i] = ok, want[i] = v[j++];
        free(v);
    }
}

static void* target_(Trainer* tr, const CkSet* s, int64_t* first, int64_t* local) {
    if (s->src == CK_MULT || s->src == CK_SIZES || s->src == CK_OFFSETS) return NULL;   // compared, not loaded
    return (void*)ckpt_set_data(tr, s, first, local);
}

/* Read every tensor and compare checksums. Every row's checksum is taken once over all ranks, and
 * the parts are summed over ranks: a row-sharded set's rows by the rank holding them; a replicated
 * set's rows, which every rank reads, by the rank whose block of rows they fall in (the same file
 * bytes reach every rank, so checking each once is enough, and P ranks share the work). Small
 * replicated sets (and scalars) every rank checks whole itself. 0, or -1 with err (the same on
 * every rank). */
static int read_tensors_(const hid_t* ids, int flat, const char* file, Trainer* tr, const CkSet* sets, int n,
                         hid_t dxpl, MPI_Comm comm, char* err, size_t errlen) {
    CkMap* map = ckpt_map_open(file);   // NULL: every read through HDF5
    const int P = tr->comm ? tr->comm->size : 1, rank = tr->comm ? tr->comm->rank : 0;
    uint64_t* sums = callocCheck((size_t)n + 1, sizeof(uint64_t));    // [n] parts summed over ranks
    uint64_t* whole = callocCheck((size_t)n + 1, sizeof(uint64_t));   // [n] sets each rank checks whole
    int* in_parts = callocCheck((size_t)n + 1, sizeof(int));          // [n] checked in parts (sums)
    uint64_t* want = callocCheck((size_t)n + 1, sizeof(uint64_t));    // [n] the checksum attributes
    int* has = callocCheck((size_t)n + 1, sizeof(int));               // [n] attribute present
    int bad = -1;
    // checksums on another thread while the next pieces are read (where the rank has a core to spare)
    CkSummer* sm = ckpt_summer_start(comm_cores(tr->comm));
    if (flat) flat_checksums_(ids, sets, n, want, has);
    for (int i = 0; i < n && bad < 0; i++) {
        const CkSet* s = &sets[i];
        int64_t first = 0, local = 0;
        void* out = target_(tr, s, &first, &local);
        if (!out) continue;
        if (!flat || s->flat_at < 0) has[i] = ckpt_attr_read_u64(ids[i], "checksum", &want[i]) == 0;
        if (s->sharded) {   // each row counted once in the sum: replicas of an expert outside the first group don't
            in_parts[i] = 1;
            if (read_rows_(map, ids[i], s, flat, dxpl, first, first + local, s->max_rows, ckpt_row_bytes(s), out,
                           s->writes ? &sums[i] : NULL, sm)) bad = i;
            continue;
        }
        // every rank reads the whole of a replicated set itself (one kernel copy per rank from the
        // shared page cache, where a read by rank 0 and a broadcast would cost two)
        size_t numel = 1;
        for (int d = 0; d < s->ndim; d++) numel *= (size_t)s->dims[d];
        int64_t rows = s->ndim ? (int64_t)s->dims[0] : 1;
        size_t row_bytes = numel * (s->is_float ? 4 : 8) / (size_t)rows;
        in_parts[i] = P > 1 && s->ndim > 0 && rows >= P && numel * (s->is_float ? 4 : 8) >= PARTS_MIN_BYTES_;
        if (!in_parts[i]) {
            if (read_rows_(map, ids[i], s, flat, dxpl, 0, rows, rows, row_bytes, out, &whole[i], sm)) bad = i;
            continue;
        }
        // block by block (every rank makes the same calls), summing only its own block
        for (int b = 0; b < P && bad < 0; b++) {
            int64_t lo, cnt;
            shard_row_range(rows, P, b, &lo, &cnt);
            if (read_rows_(map, ids[i], s, flat, dxpl, lo, lo + cnt, shard_block_rows(rows, P), row_bytes,
                           (char*)out + (size_t)lo * row_bytes, b == rank ? &sums[i] : NULL, sm)) bad = i;
        }
    }
    ckpt_summer_stop(sm);   // every sum complete, every bounced piece in place
    ckpt_map_close(map);
    if (comm != MPI_COMM_NULL) {
        MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
        MPI_Allreduce(MPI_IN_PLACE, sums, n, MPI_UINT64_T, MPI_SUM, comm);
    }
    const int unreadable = bad >= 0;
    if (unreadable) ckpt_errf(err, errlen, "%s: cannot read %s (truncated or corrupt file)", file, sets[bad].path);
    for (int i = 0; i < n && bad < 0; i++) {
        if (!target_(tr, &sets[i], &(int64_t){0}, &(int64_t){0})) continue;
        if (!has[i] || want[i] != (in_parts[i] ? sums[i] : whole[i])) bad = i;
    }
    if (comm != MPI_COMM_NULL) MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
    if (bad >= 0 && !unreadable)   // the attribute is the same on every rank
        ckpt_errf(err, errlen, "%s: %s %s (corrupt file)", file, sets[bad].path,
                  has[bad] ? "does not match its checksum" : "has no checksum attribute");
    free(want);
    free(has);
    free(sums);
    free(whole);
    free(in_parts);
    return bad >= 0 ? -1 : 0;
}

int checkpoint_load_maps(const char* file) {
    CkMap* m = ckpt_map_open(file);
    ckpt_map_close(m);
    return m != NULL;
}

int checkpoint_load(Trainer* dev, const char* file, CkptState* st, char* err, size_t errlen) {
    Trainer* tr = ckpt_host_view(dev, 0);   // read into host memory (dev itself on the CPU)
    CkQuiet q = ckpt_quiet();
    MPI_Comm comm = tr->comm ? tr->comm->comm : MPI_COMM_NULL;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), dxpl = H5P_DEFAULT;
    if (comm != MPI_COMM_NULL) {
        H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
        H5Pset_all_coll_metadata_ops(fapl, 1);
        dxpl = H5Pcreate(H5P_DATASET_XFER);
        H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_INDEPENDENT);
    }
    int rc = -1, version = 0;
    hid_t f = ckpt_open_checked(file, fapl, &version, err, errlen);
    H5Pclose(fapl);
    if (f >= 0) {
        CkSet* sets = NULL;
        int n = ckpt_layout(tr, &sets);
        memset(st, 0, sizeof *st);
        hid_t g = -1;
        int64_t ws = 0, ds = 0, bs = 0;
        hid_t* ids = mallocCheck(((size_t)n + 1) * sizeof(hid_t));   // [n] the datasets, open until the end
        const int flat = version >= 2;   // dense tensors in /dense/{params,m,v}
        int opened = ckpt_check_sets(f, file, sets, n, flat, ids, err, errlen) == 0;
        if (!opened || check_hash_(ids, file, tr, sets, n, err, errlen)) {
            // refused before touching tr
        } else if (ckpt_attr_read_i64(f, "step", &st->step) || ckpt_attr_read_i64(f, "tokens_seen", &st->tokens_seen) ||
                   ckpt_attr_read_i64(f, "world_size", &ws) || (g = H5Gopen2(f, "/state", H5P_DEFAULT)) < 0 ||
                   ckpt_attr_read_u64(g, "seed", &st->seed) || ckpt_attr_read_i64(g, "data_position", &ds) ||
                   ckpt_attr_read_i64(g, "bad_steps", &bs)) {
            ckpt_errf(err, errlen, "%s: step, tokens_seen, world_size or /state attributes missing (corrupt file)", file);
        } else if (read_tensors_(ids, flat, file, tr, sets, n, dxpl, comm, err, errlen) == 0) {
            st->world_size = (int)ws;
            st->data_position = ds;
            st->bad_steps = (long)bs;
            tr->step = st->step - st->bad_steps;   // Adam's count: skipped steps did not advance it
            tr->bad_steps = st->bad_steps;
            rc = 0;
        }
        if (g >= 0) H5Gclose(g);
        if (opened) ckpt_close_sets(sets, n, flat, ids);
        free(ids);
        free(sets);
        H5Fclose(f);
    }
    if (dxpl != H5P_DEFAULT) H5Pclose(dxpl);
    ckpt_loud(q);
    ckpt_host_done(tr, dev, rc == 0);
    return rc;
}
