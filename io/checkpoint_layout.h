/*
 * checkpoint_layout.h — private to io/checkpoint*.c: the list of datasets a checkpoint of a given
 * Trainer holds (one walk of the tensor table that save, the post-save verification and load all
 * share), the per-dataset checksum, and small HDF5 attribute helpers.
 *
 * Not here: the collective writes and reads themselves (checkpoint.c, checkpoint_load.c).
 */
#ifndef ENGRAM_CHECKPOINT_LAYOUT_H
#define ENGRAM_CHECKPOINT_LAYOUT_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "train.h"

/* Where a dataset's values live in the Trainer. Dense sources are whole (replicated) buffers, or
 * under expert parallelism this rank's experts [first, first+local) of an [E, ...] tensor; table
 * sources are this rank's rows [first, first+local) of a row-sharded dataset. */
typedef enum {
    CK_PARAM, CK_M, CK_V,                          // dense tensor t: params / m / v + offset
    CK_TABLE, CK_TABLE_M, CK_TABLE_V, CK_UPDATES,  // Engram layer e, row-sharded
    CK_MULT, CK_SIZES, CK_OFFSETS                  // Engram layer e's hashing arrays, whole
} CkSource;

typedef struct {
    char path[160];      // "/params/blocks.1.attn.wqkv", "/engram/layer_2/table"
    CkSource src;
    int is_float;        // float32, else int64
    int ndim;
    hsize_t dims[4];     // logical shape
    int tensor;          // dense: index into the tensor table
    int layer;           // Engram layer index (engram.layers order)
    int sharded;         // each rank holds rows [first, first+local) of dims[0] (ckpt_set_data)
    int64_t max_rows;    // sharded: the largest part any rank holds (the same on every rank)
    int writes;          // sharded: this rank writes its part and counts it in the checksum (of
                         // ranks holding the same experts, those of the first group do)
    int64_t flat_at;     // dense sets (format 2): first element in CKPT_FLAT[src]; -1: other sets
} CkSet;

/* Format 2 keeps the dense tensors' values, m and v in three flat float32 datasets, the tensors one
 * after another in the tensor table's order at their logical shapes (experts gathered), so a load
 * reads three datasets, not three per tensor. Each tensor is also a virtual dataset at its path
 * (/params/<name>, /optim/<name>/m, v) for h5py, h5ls and engram inspect. HDF5 1.10 cannot read a
 * virtual dataset through MPI-IO: readers by name open the file with the serial driver. */
extern const char* const CKPT_FLAT[3];   // indexed by CK_PARAM, CK_M, CK_V
/* Elements in each flat dataset: the dense tensors' logical sizes summed. */
int64_t ckpt_flat_numel(const CkSet* sets, int n);
/* The tensors' names and shapes as one line ("name [d0,d1];..."), kept as the flat datasets'
 * attribute `tensors`: a load compares it instead of opening every tensor's dataset. */
char* ckpt_flat_tensors(const CkSet* sets, int n);

/* Every dataset of tr's checkpoint (without /config and /tokenizer); *out malloc'd. */
int ckpt_layout(const Trainer* tr, CkSet** out);

/* Bytes of one row (dims[0] indexes rows) of a set. */
static inline size_t ckpt_row_bytes(const CkSet* s) {
    size_t b = s->is_float ? 4 : 8;
    for (int d = 1; d < s->ndim; d++) b *= (size_t)s->dims[d];
    return b;
}

/* Dataset checksum: Σ over 32-bit words w_i of (w_i xor c)·(2i+1 mod 2^32) mod 2^64, i the word's
 * index in the whole dataset. Linear in the words, so ranks add their parts at any P; any single
 * changed word changes it (the weight is odd). A corruption check, not a cryptographic hash. */
uint64_t ckpt_checksum(const void* data, size_t nbytes, uint64_t first_word);
/* The same, while copying the nbytes to dst (one pass over memory; dst NULL: no copy). AVX2 where
 * the CPU has it; the value never depends on the path (ckpt_checksum_reference: the plain loop). */
uint64_t ckpt_copy_checksum(void* dst, const void* src, size_t nbytes, uint64_t first_word);
uint64_t ckpt_checksum_reference(const void* data, size_t nbytes, uint64_t first_word);

/* Datasets are written and read in pieces of at most this many bytes per rank and call: one
 * 200 MB pwrite is ~10x slower than 8 MB ones on Linux (page-cache behaviour of huge writes). */
#define CKPT_PIECE_BYTES ((size_t)8 << 20)
/* Reads go in smaller pieces: the checksum of each piece is taken (on another thread) right after it
 * arrives, while the next is read. 4 MiB loaded 200 MB in 34–36 ms where 1 MiB took 39–40 and 256 KiB
 * 38–47 (fewer H5Dread calls; bench checkpoint, tiny.yaml). */
#define CKPT_READ_PIECE_BYTES ((size_t)4 << 20)
/* Without that thread the reader sums each piece itself right after reading it: pieces that fit in
 * L2 are summed from there (P = 2 on two cores, 6 alternating pairs: 1 MiB loaded in 0.046 s where
 * 4 MiB took 0.051, lower in 5 of 6; 512 KiB and 256 KiB were no better). */
#define CKPT_INLINE_READ_PIECE_BYTES ((size_t)1 << 20)

/* A thread that takes checksums (and copies bounced reads into place) while the caller moves the
 * next piece: on a core left free, the checksums cost no time. On one core it only takes turns with
 * the caller (2 ranks bound to 2 cores loaded 200 MB in 0.035 s with it, 0.032 s inline), so it
 * starts only where cores (comm_cores) is 2 or more. */
typedef struct CkSummer CkSummer;
// NULL (everything then runs inline) below 2 cores, or if no thread can be made
CkSummer* ckpt_summer_start(int cores);
void ckpt_summer_wait(CkSummer* sm);    // every queued job done: the sums are complete
void ckpt_summer_stop(CkSummer* sm);    // wait, end the thread, free (NULL: nothing)

/* Write (or read) rows [lo, hi) of dataset ds (this rank's part; lo == hi: none) in collective
 * pieces; every rank of the file's communicator calls it with the same max_rows (the largest part
 * of any rank) so all make the same number of calls. data holds (hi−lo)·row_elems elements of
 * memtype. sum (NULL: none): adds the checksum of the rows moved (word indices from row 0), taken
 * piece by piece while each is in cache, by sm's thread (sm NULL: inline). With a summer, *sum (and,
 * for a read, data) is complete only after ckpt_summer_wait(sm). Returns the H5Dwrite/H5Dread
 * status (< 0 on failure). */
herr_t ckpt_rows_io(int write, hid_t ds, hid_t memtype, hid_t dxpl, int64_t lo, int64_t hi, int64_t max_rows,
                    size_t row_bytes, void* data, uint64_t* sum, CkSummer* sm);
/* The same for a set that starts at row row0 of ds (a tensor in a flat dataset): the checksum's
 * word indices count from row0, so the sum is the tensor's own. */
herr_t ckpt_rows_io_at(int write, hid_t ds, hid_t memtype, hid_t dxpl, int64_t lo, int64_t hi, int64_t max_rows,
                       size_t row_bytes, void* data, uint64_t* sum, CkSummer* sm, int64_t row0);

/* A checkpoint file mapped read-only for a load: contiguous datasets are then copied (with their
 * checksum, in one pass) straight out of the page cache by a user-space copy, where H5Dread has the
 * kernel copy each page (200 MB at P = 1: ~15 ms against ~25 ms for pread, on the development VM).
 * Only on local file systems (ext4, xfs, btrfs, tmpfs, ...): elsewhere (NFS, Lustre, GPFS, ...)
 * reads go through HDF5 and MPI-IO. ENGRAM_CKPT_MMAP=0 turns it off. */
typedef struct CkMap CkMap;
// NULL where the file is not mapped (turned off, another file system, mmap failed): read with HDF5
CkMap* ckpt_map_open(const char* file);
void ckpt_map_close(CkMap* m);   // NULL: nothing
/* Read rows [lo, hi) of ds (rows from row0 on count for the checksum, as in ckpt_rows_io_at) from
 * the mapping: 1 done (data and *sum complete after ckpt_summer_wait(sm), as for ckpt_rows_io), or 0
 * where this dataset cannot be read so (no mapping, not contiguous, another type in the file than
 * memtype, rows beyond the end of the file): nothing read, the caller reads it with HDF5. With a
 * summer, every other piece is copied by its thread. */
int ckpt_rows_read_mapped(const CkMap* m, hid_t ds, hid_t memtype, int64_t lo, int64_t hi, void* data, uint64_t* sum,
                          CkSummer* sm, int64_t row0);

/* Attributes of an object (file, group or dataset). Writers: every rank calls with the same value
 * (collective metadata in parallel HDF5). Return 0 or -1. */
int ckpt_attr_write_i64(hid_t obj, const char* name, int64_t v);
int ckpt_attr_write_u64(hid_t obj, const char* name, uint64_t v);
int ckpt_attr_write_u64s(hid_t obj, const char* name, const uint64_t* v, int n);
int ckpt_attr_read_u64s(hid_t obj, const char* name, uint64_t* v, int n);   // exactly n values
int ckpt_attr_write_f64s(hid_t obj, const char* name, const double* v, int n);
int ckpt_attr_write_str(hid_t obj, const char* name, const char* s);
int ckpt_attr_read_i64(hid_t obj, const char* name, int64_t* v);
int ckpt_attr_read_u64(hid_t obj, const char* name, uint64_t* v);
int ckpt_attr_read_f64(hid_t obj, const char* name, double* v);
char* ckpt_attr_read_str(hid_t obj, const char* name);   // malloc'd, NULL if absent

/* Open FILE read-only (fapl: H5P_DEFAULT or an MPI-IO list) and check it is an engram checkpoint
 * of a version this build reads. Returns the file id, or -1 with "FILE: problem" in err. */
hid_t ckpt_open_checked(const char* file, hid_t fapl, int* version, char* err, size_t errlen);
/* Does every component of path ("/a/b/c") exist? H5Lexists alone needs the parents to exist. */
int ckpt_path_exists(hid_t f, const char* path);
/* Every set present with its shape and element class, and /config. 0 or -1 with err. ids (NULL:
 * none) receives the n datasets still open, for the caller to read and close (opening one costs
 * tens of µs: a load of a few hundred datasets should not open each more than once); on failure
 * none is left open. */
int ckpt_check_sets(hid_t f, const char* file, const CkSet* sets, int n, int flat, hid_t* ids, char* err,
                    size_t errlen);
/* With flat (a format 2 file), the dense sets are not opened one by one: the flat datasets are
 * checked instead (present, the config's tensors and total size), and ids of dense sets are their
 * flat dataset's. ckpt_close_sets closes what ckpt_check_sets left open, each id once. */
void ckpt_close_sets(const CkSet* sets, int n, int flat, const hid_t* ids);
/* /config as a malloc'd string; NULL if absent. */
char* ckpt_read_config_string(hid_t f);

/* snprintf into an error buffer (a function, so long paths need no truncation warnings). */
void ckpt_errf(char* err, size_t errlen, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

/* Silence HDF5's own error printing for the duration of a call (we report one line instead). */
typedef struct { H5E_auto2_t fn; void* data; } CkQuiet;
static inline CkQuiet ckpt_quiet(void) {
    CkQuiet q;
    H5Eget_auto2(H5E_DEFAULT, &q.fn, &q.data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return q;
}
static inline void ckpt_loud(CkQuiet q) { H5Eset_auto2(H5E_DEFAULT, q.fn, q.data); }

/* The values behind one set in the trainer: the whole buffer, or (sharded sets) this rank's rows,
 * whose range goes to *first, *local. Save reads from it; load writes into it. */
const void* ckpt_set_data(const Trainer* tr, const CkSet* s, int64_t* first, int64_t* local);

/* tr with its dense params, m and v and its Engram tables (values, moments, update counts) in host
 * memory (checkpoint_host.c): tr itself on a host backend, else a copy of it pointing at host
 * copies, filled from the device when fetch (save).
 * ckpt_host_done frees it, first storing the copies to the device when store (a load that
 * succeeded) and taking over the view's step counts. */
Trainer* ckpt_host_view(const Trainer* tr, int fetch);
void ckpt_host_done(Trainer* view, Trainer* tr, int store);

#endif
