/*
 * h5io.c — whole-dataset and attribute reads (h5io.h).
 */
#include "h5io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t h5io_numel(hid_t file, const char* path) {
    if (H5Lexists(file, path, H5P_DEFAULT) <= 0) return -1;
    hid_t ds = H5Dopen2(file, path, H5P_DEFAULT);
    if (ds < 0) return -1;
    hid_t sp = H5Dget_space(ds);
    int64_t n = (int64_t)H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    H5Dclose(ds);
    return n;
}

static int read_(hid_t file, const char* path, hid_t memtype, void* out, size_t n, char* err, size_t errlen) {
    int64_t have = h5io_numel(file, path);
    if (have < 0) {
        snprintf(err, errlen, "dataset %s is missing", path);
        return -1;
    }
    if ((size_t)have != n) {
        snprintf(err, errlen, "dataset %s has %lld elements, expected %zu", path, (long long)have, n);
        return -1;
    }
    hid_t ds = H5Dopen2(file, path, H5P_DEFAULT);
    herr_t rc = H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
    H5Dclose(ds);
    if (rc < 0) snprintf(err, errlen, "cannot read dataset %s", path);
    return rc < 0 ? -1 : 0;
}

int h5io_read_f32(hid_t f, const char* p, float* out, size_t n, char* err, size_t el) {
    return read_(f, p, H5T_NATIVE_FLOAT, out, n, err, el);
}
int h5io_read_f64(hid_t f, const char* p, double* out, size_t n, char* err, size_t el) {
    return read_(f, p, H5T_NATIVE_DOUBLE, out, n, err, el);
}
int h5io_read_i32(hid_t f, const char* p, int32_t* out, size_t n, char* err, size_t el) {
    return read_(f, p, H5T_NATIVE_INT32, out, n, err, el);
}

int h5io_attr_f64(hid_t file, const char* name, double* out) {
    if (H5Aexists(file, name) <= 0) return -1;
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    herr_t rc = H5Aread(a, H5T_NATIVE_DOUBLE, out);
    H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

char* h5io_attr_string(hid_t file, const char* name) {
    if (H5Aexists(file, name) <= 0) return NULL;
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    char* out = NULL;
    if (H5Tis_variable_str(t) > 0) {
        char* s = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        if (H5Aread(a, mt, &s) >= 0 && s) {
            out = strdup(s);
            H5free_memory(s);
        }
        H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(t);
        out = calloc(n + 1, 1);
        if (out && H5Aread(a, t, out) < 0) {
            free(out);
            out = NULL;
        }
    }
    H5Tclose(t);
    H5Aclose(a);
    return out;
}
