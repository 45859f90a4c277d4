/*
 * checkpoint_file.h — read-only, single-process access to one checkpoint for tools (`engram
 * inspect`): attributes, the stored config, dataset shapes and row ranges of any dataset converted
 * to double or int64. Opening checks the format and version like checkpoint_load does, so tools
 * refuse the same files with the same one-line errors. Hides HDF5 from src/.
 *
 * Not here: loading into a Trainer (checkpoint.h), anything collective.
 */
#ifndef ENGRAM_CHECKPOINT_FILE_H
#define ENGRAM_CHECKPOINT_FILE_H

#include <stddef.h>
#include <stdint.h>

typedef struct CkptFile CkptFile;

/* path: a checkpoint file or a run's checkpoint directory (its `latest`). NULL with err. */
CkptFile* ckptfile_open(const char* path, char* err, size_t errlen);
void ckptfile_close(CkptFile* f);
const char* ckptfile_path(const CkptFile* f);   // the file actually opened
int ckptfile_version(const CkptFile* f);

/* Attribute `name` of object `obj` ("/" for the root, "/accounting", a dataset path): 0 or -1. */
int ckptfile_attr_i64(CkptFile* f, const char* obj, const char* name, int64_t* out);
int ckptfile_attr_f64(CkptFile* f, const char* obj, const char* name, double* out);
/* Numeric array attribute into out[n]; returns its element count (≤ n read) or -1. */
int ckptfile_attr_f64s(CkptFile* f, const char* obj, const char* name, double* out, int n);
char* ckptfile_attr_str(CkptFile* f, const char* obj, const char* name);   // malloc'd or NULL

char* ckptfile_config(CkptFile* f);   // /config (malloc'd) or NULL
int ckptfile_exists(CkptFile* f, const char* path);
/* Dataset rank with its shape in shape[0..3], or -1 if there is no such dataset. */
int ckptfile_shape(CkptFile* f, const char* path, int64_t shape[4]);
/* Rows [first, first+count) along the first axis (all of a scalar or 1-D when count covers it),
 * converted; out holds count·(elements per row). 0 or -1. */
int ckptfile_read_f64(CkptFile* f, const char* path, int64_t first, int64_t count, double* out);
int ckptfile_read_i64(CkptFile* f, const char* path, int64_t first, int64_t count, int64_t* out);

#endif
