/*
 * checkpoint_file.c — read-only access to one checkpoint for tools (checkpoint_file.h).
 */
#include "checkpoint_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "checkpoint_layout.h"
#include "common.h"

struct CkptFile {
    hid_t id;
    int version;
    char path[4400];
};

CkptFile* ckptfile_open(const char* path, char* err, size_t errlen) {
    CkptFile* f = callocCheck(1, sizeof *f);
    if (checkpoint_resolve(path, f->path, sizeof f->path, err, errlen)) {
        free(f);
        return NULL;
    }
    CkQuiet q = ckpt_quiet();
    f->id = ckpt_open_checked(f->path, H5P_DEFAULT, &f->version, err, errlen);
    ckpt_loud(q);
    if (f->id < 0) {
        free(f);
        return NULL;
    }
    return f;
}

void ckptfile_close(CkptFile* f) {
    if (!f) return;
    H5Fclose(f->id);
    free(f);
}

const char* ckptfile_path(const CkptFile* f) { return f->path; }
int ckptfile_version(const CkptFile* f) { return f->version; }

int ckptfile_exists(CkptFile* f, const char* path) {
    CkQuiet q = ckpt_quiet();
    int ok = ckpt_path_exists(f->id, path);
    ckpt_loud(q);
    return ok;
}

static hid_t open_obj_(CkptFile* f, const char* obj) {
    if (!ckptfile_exists(f, obj)) return -1;
    return H5Oopen(f->id, obj, H5P_DEFAULT);
}

int ckptfile_attr_i64(CkptFile* f, const char* obj, const char* name, int64_t* out) {
    hid_t o = open_obj_(f, obj);
    if (o < 0) return -1;
    int rc = ckpt_attr_read_i64(o, name, out);
    H5Oclose(o);
    return rc;
}

int ckptfile_attr_f64(CkptFile* f, const char* obj, const char* name, double* out) {
    hid_t o = open_obj_(f, obj);
    if (o < 0) return -1;
    int rc = ckpt_attr_read_f64(o, name, out);
    H5Oclose(o);
    return rc;
}

int ckptfile_attr_f64s(CkptFile* f, const char* obj, const char* name, double* out, int n) {
    hid_t o = open_obj_(f, obj);
    if (o < 0) return -1;
    int got = -1;
    if (H5Aexists(o, name) > 0) {
        hid_t a = H5Aopen(o, name, H5P_DEFAULT), sp = H5Aget_space(a);
        hssize_t cnt = H5Sget_simple_extent_npoints(sp);
        double* buf = mallocCheck(((size_t)cnt + 1) * sizeof(double));
        if (H5Aread(a, H5T_NATIVE_DOUBLE, buf) >= 0) {
            got = (int)cnt;
            memcpy(out, buf, (size_t)(cnt < n ? cnt : n) * sizeof(double));
        }
        free(buf);
        H5Sclose(sp);
        H5Aclose(a);
    }
    H5Oclose(o);
    return got;
}

char* ckptfile_attr_str(CkptFile* f, const char* obj, const char* name) {
    hid_t o = open_obj_(f, obj);
    if (o < 0) return NULL;
    char* s = ckpt_attr_read_str(o, name);
    H5Oclose(o);
    return s;
}

char* ckptfile_config(CkptFile* f) { return ckpt_read_config_string(f->id); }

int ckptfile_shape(CkptFile* f, const char* path, int64_t shape[4]) {
    if (!ckptfile_exists(f, path)) return -1;
    CkQuiet q = ckpt_quiet();
    hid_t ds = H5Dopen2(f->id, path, H5P_DEFAULT);
    ckpt_loud(q);
    if (ds < 0) return -1;
    hid_t sp = H5Dget_space(ds);
    hsize_t d[H5S_MAX_RANK] = {0};
    int nd = H5Sget_simple_extent_dims(sp, d, NULL);
    H5Sclose(sp);
    H5Dclose(ds);
    if (nd > 4) return -1;
    for (int i = 0; i < 4; i++) shape[i] = i < nd ? (int64_t)d[i] : 1;
    return nd;
}

static int read_(CkptFile* f, const char* path, int64_t first, int64_t count, hid_t mt, void* out) {
    int64_t shape[4];
    int nd = ckptfile_shape(f, path, shape);
    if (nd < 0 || (nd > 0 && (first < 0 || count < 0 || first + count > shape[0]))) return -1;
    hid_t ds = H5Dopen2(f->id, path, H5P_DEFAULT);
    hid_t fs = H5Dget_space(ds), ms = H5S_ALL;
    if (nd > 0) {
        hsize_t start[4] = {(hsize_t)first, 0, 0, 0}, cnt[4];
        for (int i = 0; i < nd; i++) cnt[i] = i == 0 ? (hsize_t)count : (hsize_t)shape[i];
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
        ms = H5Screate_simple(nd, cnt, NULL);
    }
    CkQuiet q = ckpt_quiet();
    herr_t rc = count == 0 && nd > 0 ? 0 : H5Dread(ds, mt, ms, nd > 0 ? fs : H5S_ALL, H5P_DEFAULT, out);
    ckpt_loud(q);
    if (ms != H5S_ALL) H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(ds);
    return rc < 0 ? -1 : 0;
}

int ckptfile_read_f64(CkptFile* f, const char* path, int64_t first, int64_t count, double* out) {
    return read_(f, path, first, count, H5T_NATIVE_DOUBLE, out);
}
int ckptfile_read_i64(CkptFile* f, const char* path, int64_t first, int64_t count, int64_t* out) {
    return read_(f, path, first, count, H5T_NATIVE_INT64, out);
}
