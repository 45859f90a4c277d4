/*
 * h5io.h — small helpers over the HDF5 C API for reading whole datasets and attributes, with
 * errors that name the file and the path. Checkpoints (io/checkpoint.c) and the reference tests
 * use them. Not here: collective (MPI-IO) writes, which live with the checkpoint code.
 */
#ifndef ENGRAM_H5IO_H
#define ENGRAM_H5IO_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* Element count of dataset `path`, or -1 if it does not exist. */
int64_t h5io_numel(hid_t file, const char* path);
/* Read dataset `path` (any numeric type, converted) into out[n]; -1 with err if missing or the
 * element count differs from n. */
int h5io_read_f32(hid_t file, const char* path, float* out, size_t n, char* err, size_t errlen);
int h5io_read_f64(hid_t file, const char* path, double* out, size_t n, char* err, size_t errlen);
int h5io_read_i32(hid_t file, const char* path, int32_t* out, size_t n, char* err, size_t errlen);
/* Attribute of the root group: a number, or a string (malloc'd). */
int h5io_attr_f64(hid_t file, const char* name, double* out);
char* h5io_attr_string(hid_t file, const char* name);

#endif
