/*
 * checkpoint_layout.c — the dataset list of a checkpoint, attribute helpers, and the checks that
 * a file is an engram checkpoint with the expected datasets (checkpoint_layout.h).
 */
#include "checkpoint_layout.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "shard.h"

void ckpt_errf(char* err, size_t errlen, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

typedef uint32_t __attribute__((may_alias)) Word_;   // reads any dataset's bytes as words

#define CK_KEY 0x9e3779b9u

/* Σ (w_i xor K)·(base + 2i mod 2^32) over n words; copies them to dst too when dst != NULL. */
static uint64_t sum_scalar_(void* dst, const void* src, size_t n, uint32_t base) {
    const Word_* w = (const Word_*)src;
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) s += (uint64_t)(w[i] ^ CK_KEY) * (uint32_t)(base + 2u * (uint32_t)i);
    if (dst) memcpy(dst, src, n * 4);
    return s;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CK_HAVE_AVX2 1
/* The same sum without multiplies, 16 words a step, for weights that do not wrap within the n words
 * (base + 2(n−1) < 2^32; the caller splits there). Word j = 8t + 2k + h sits in 64-bit lane k of
 * vector t (h = 0: low half, 1: high half) and weighs base + 16t + 4k + 2h, so with u = w xor K
 *   Σ = Σ_k (base + 4k)·E_k + (base + 4k + 2)·O_k + 16·(Σ_t t·e_tk + Σ_t t·o_tk),
 * E_k, O_k the sums of the low and high words of lane k. Lanes add whole 64-bit vectors (X: low word
 * + 2^32·high word) and the high words alone (O), so E = X − 2^32·O; running sums of X and O (BX, BO:
 * Σ_t (T−t)·x_t over T vectors) give the t-weighted ones. All of it exact mod 2^64. */
__attribute__((target("avx2"))) static uint64_t sum_avx2_(void* dst, const void* src, size_t n, uint32_t base) {
    const char* s = (const char*)src;
    char* d = (char*)dst;
    // copies to a destination aligned to 32 bytes use streaming stores, which write lines without
    // reading them first (a load writes hundreds of MB that nothing reads soon: 200 MB at P = 1 in
    // 17-19 ms against 20-24 ms with plain stores, 3 alternating pairs); a head of words brings d there
    if (d && (uintptr_t)d % 4 == 0 && (uintptr_t)d % 32 != 0 && n > 8) {
        size_t h = (32 - (uintptr_t)d % 32) / 4;
        return sum_scalar_(d, s, h, base) + sum_avx2_(d + 4 * h, s + 4 * h, n - h, base + 2u * (uint32_t)h);
    }
    const int nt = d && (uintptr_t)d % 32 == 0;
    const __m256i key = _mm256_set1_epi32((int)CK_KEY);
    __m256i X = _mm256_setzero_si256(), O = X, BX = X, BO = X;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i x = _mm256_loadu_si256((const __m256i*)(s + 4 * i)), y = _mm256_loadu_si256((const __m256i*)(s + 4 * i + 32));
        if (nt) {
            _mm256_stream_si256((__m256i*)(d + 4 * i), x);
            _mm256_stream_si256((__m256i*)(d + 4 * i + 32), y);
        } else if (d) {
            _mm256_storeu_si256((__m256i*)(d + 4 * i), x);
            _mm256_storeu_si256((__m256i*)(d + 4 * i + 32), y);
        }
        x = _mm256_xor_si256(x, key);
        y = _mm256_xor_si256(y, key);
        X = _mm256_add_epi64(X, x);
        O = _mm256_add_epi64(O, _mm256_srli_epi64(x, 32));
        BX = _mm256_add_epi64(BX, X);
        BO = _mm256_add_epi64(BO, O);
        X = _mm256_add_epi64(X, y);
        O = _mm256_add_epi64(O, _mm256_srli_epi64(y, 32));
        BX = _mm256_add_epi64(BX, X);
        BO = _mm256_add_epi64(BO, O);
    }
    if (nt) _mm_sfence();   // the streamed lines are in memory before anyone reads them
    uint64_t x[4], o[4], bx[4], bo[4], sum = 0, T = i / 8;   // T vectors
    _mm256_storeu_si256((__m256i*)x, X);
    _mm256_storeu_si256((__m256i*)o, O);
    _mm256_storeu_si256((__m256i*)bx, BX);
    _mm256_storeu_si256((__m256i*)bo, BO);
    for (int k = 0; k < 4; k++) {
        uint64_t e = x[k] - (o[k] << 32), be = bx[k] - (bo[k] << 32);   // Σ_t (T−t)·e_tk = T·E − Σ_t t·e_tk
        sum += (base + 4u * k) * e + (base + 4u * k + 2) * o[k] + 16 * (T * e - be + T * o[k] - bo[k]);
    }
    return sum + sum_scalar_(d ? d + 4 * i : NULL, s + 4 * i, n - i, base + 2u * (uint32_t)i);
}
#endif

static uint64_t sum_(void* dst, const void* src, size_t n, uint32_t base) {
#ifdef CK_HAVE_AVX2
    if (__builtin_cpu_supports("avx2")) return sum_avx2_(dst, src, n, base);
#endif
    return sum_scalar_(dst, src, n, base);
}

uint64_t ckpt_copy_checksum(void* dst, const void* src, size_t nbytes, uint64_t first_word) {
    const size_t n = nbytes / 4, blk = (size_t)1 << 16;   // words per block (256 KiB: stays in L2)
    uint32_t w = (uint32_t)(2 * first_word + 1);           // the weight of word b (odd)
    uint64_t s = 0;
    // one thread: callers pass pieces that are in cache, and an OpenMP team on a loaded machine
    // waits for its slowest (descheduled) thread and leaves the other spinning through the I/O
    for (size_t b = 0, m; b < n; b += m, w += 2u * (uint32_t)m) {
        m = n - b < blk ? n - b : blk;
        size_t to_wrap = (size_t)((UINT32_MAX - w) / 2) + 1;   // words until the weight wraps to 1
        if (m > to_wrap) m = to_wrap;
        s += sum_(dst ? (char*)dst + 4 * b : NULL, (const char*)src + 4 * b, m, w);
    }
    if (dst && nbytes > 4 * n) memcpy((char*)dst + 4 * n, (const char*)src + 4 * n, nbytes - 4 * n);
    return s;
}

uint64_t ckpt_checksum(const void* data, size_t nbytes, uint64_t first_word) {
    return ckpt_copy_checksum(NULL, data, nbytes, first_word);
}

uint64_t ckpt_checksum_reference(const void* data, size_t nbytes, uint64_t first_word) {
    return sum_scalar_(NULL, data, nbytes / 4, (uint32_t)(2 * first_word + 1));
}

/* Pieces smaller than this are read straight into their destination whatever its alignment. */
#define BOUNCE_MIN_BYTES_ ((size_t)64 << 10)
/* Bounce buffers in flight: the reader fills one while the summer empties the others. */
#define N_BOUNCE_ 3
/* Jobs queued at most (the reader waits beyond). */
#define N_JOBS_ 64

typedef struct {
    void* dst;             // copy src here too (bounced reads), or NULL
    const void* src;
    size_t nbytes;
    uint64_t first_word;
    uint64_t* sum;         // added to (NULL: copy only); read by the caller only after ckpt_summer_wait
    int bounce;            // the bounce buffer src is (freed when done), or -1
} SumJob_;

struct CkSummer {
    pthread_mutex_t mu;
    pthread_cond_t cv;     // signalled on every change: job queued, job done, stop
    SumJob_ jobs[N_JOBS_]; // ring [head, tail)
    long head, tail;
    int stop;
    int bounce_busy[N_BOUNCE_];
    pthread_t thread;
};

/* Page-aligned piece-sized buffers for the process, kept: fresh pages for every load would cost a
 * page fault per 4 KiB. */
static void* bounce_(int i) {
    static void* buf[N_BOUNCE_];
    if (!buf[i]) buf[i] = callocPagesCheck(CKPT_READ_PIECE_BYTES, 1);
    return buf[i];
}

/* A job's work: the checksum and the copy, if dst (also where no sum is wanted: with its streaming
 * stores this copy moves 200 MB in 4 MiB pieces in 16-17 ms, memcpy in 25-27), or the checksum alone. */
static uint64_t job_work_(const SumJob_* j) { return ckpt_copy_checksum(j->dst, j->src, j->nbytes, j->first_word); }

static void* summer_main_(void* arg) {
    CkSummer* sm = arg;
    pthread_mutex_lock(&sm->mu);
    for (;;) {
        while (sm->head == sm->tail && !sm->stop) pthread_cond_wait(&sm->cv, &sm->mu);
        if (sm->head == sm->tail) break;
        SumJob_ j = sm->jobs[sm->head % N_JOBS_];
        pthread_mutex_unlock(&sm->mu);
        uint64_t k = job_work_(&j);
        pthread_mutex_lock(&sm->mu);
        if (j.sum) *j.sum += k;   // + is commutative mod 2^64: the order of jobs never changes a sum
        if (j.bounce >= 0) sm->bounce_busy[j.bounce] = 0;
        sm->head++;
        pthread_cond_broadcast(&sm->cv);
    }
    pthread_mutex_unlock(&sm->mu);
    return NULL;
}

CkSummer* ckpt_summer_start(int cores) {
    if (cores < 2) return NULL;
    CkSummer* sm = callocCheck(1, sizeof *sm);
    pthread_mutex_init(&sm->mu, NULL);
    pthread_cond_init(&sm->cv, NULL);
    if (pthread_create(&sm->thread, NULL, summer_main_, sm) != 0) {   // no thread: the caller sums inline
        pthread_cond_destroy(&sm->cv);
        pthread_mutex_destroy(&sm->mu);
        free(sm);
        return NULL;
    }
    return sm;
}

void ckpt_summer_wait(CkSummer* sm) {
    if (!sm) return;
    pthread_mutex_lock(&sm->mu);
    while (sm->head != sm->tail) pthread_cond_wait(&sm->cv, &sm->mu);
    pthread_mutex_unlock(&sm->mu);
}

void ckpt_summer_stop(CkSummer* sm) {
    if (!sm) return;
    pthread_mutex_lock(&sm->mu);
    sm->stop = 1;
    pthread_cond_broadcast(&sm->cv);
    pthread_mutex_unlock(&sm->mu);
    pthread_join(sm->thread, NULL);   // the thread empties the queue first
    pthread_cond_destroy(&sm->cv);
    pthread_mutex_destroy(&sm->mu);
    free(sm);
}

/* Queue a checksum (and copy, for a bounced read): NULL summer, or nothing to do: now, inline. */
/* A job done here, by the caller; its sum added under sm's lock where sm's thread adds to sums too. */
static void job_here_(CkSummer* sm, const SumJob_* j) {
    uint64_t k = job_work_(j);
    if (!j->sum) return;
    if (sm) pthread_mutex_lock(&sm->mu);
    *j->sum += k;
    if (sm) pthread_mutex_unlock(&sm->mu);
}

static void summer_add_(CkSummer* sm, void* dst, const void* src, size_t nbytes, uint64_t first_word, uint64_t* sum,
                        int bounce) {
    const SumJob_ j = {dst, src, nbytes, first_word, sum, bounce};
    if (!sm) {
        job_here_(NULL, &j);
        return;
    }
    pthread_mutex_lock(&sm->mu);
    while (sm->tail - sm->head == N_JOBS_) pthread_cond_wait(&sm->cv, &sm->mu);
    sm->jobs[sm->tail++ % N_JOBS_] = j;
    pthread_cond_broadcast(&sm->cv);
    pthread_mutex_unlock(&sm->mu);
}

/* A free bounce buffer's index (waits for the summer to empty one); marked busy. */
static int bounce_take_(CkSummer* sm) {
    if (!sm) return 0;
    pthread_mutex_lock(&sm->mu);
    int i = -1;
    while (i < 0) {
        for (int k = 0; k < N_BOUNCE_ && i < 0; k++)
            if (!sm->bounce_busy[k]) i = k;
        if (i < 0) pthread_cond_wait(&sm->cv, &sm->mu);
    }
    sm->bounce_busy[i] = 1;
    pthread_mutex_unlock(&sm->mu);
    return i;
}

static void bounce_give_back_(CkSummer* sm, int i) {
    if (!sm) return;
    pthread_mutex_lock(&sm->mu);
    sm->bounce_busy[i] = 0;
    pthread_cond_broadcast(&sm->cv);
    pthread_mutex_unlock(&sm->mu);
}

herr_t ckpt_rows_io(int write, hid_t ds, hid_t memtype, hid_t dxpl, int64_t lo, int64_t hi, int64_t max_rows,
                    size_t row_bytes, void* data, uint64_t* sum, CkSummer* sm) {
    return ckpt_rows_io_at(write, ds, memtype, dxpl, lo, hi, max_rows, row_bytes, data, sum, sm, 0);
}

herr_t ckpt_rows_io_at(int write, hid_t ds, hid_t memtype, hid_t dxpl, int64_t lo, int64_t hi, int64_t max_rows,
                       size_t row_bytes, void* data, uint64_t* sum, CkSummer* sm, int64_t row0) {
    hid_t fs = H5Dget_space(ds);
    const haddr_t at = H5Dget_offset(ds);   // file offset of a contiguous dataset (memtype = file type)
    hsize_t dims[H5S_MAX_RANK];
    int nd = H5Sget_simple_extent_dims(fs, dims, NULL);
    const size_t PB = write ? CKPT_PIECE_BYTES : sm ? CKPT_READ_PIECE_BYTES : CKPT_INLINE_READ_PIECE_BYTES;
    int64_t piece = row_bytes >= PB ? 1 : (int64_t)(PB / (row_bytes ? row_bytes : 1));
    int64_t n_pieces = nd <= 0 ? 1 : (max_rows + piece - 1) / piece;
    size_t mem_row = nd <= 0 ? 0 : (size_t)H5Tget_size(memtype);
    for (int d = 1; d < nd; d++) mem_row *= (size_t)dims[d];
    herr_t rc = 0;
    char dummy[16];
    for (int64_t k = 0; k < n_pieces; k++) {
        int64_t a = lo + k * piece, b = a + piece < hi ? a + piece : hi;
        hid_t ms;
        if (nd <= 0) {   // scalar: written whole by whoever has rows
            ms = H5Screate(H5S_SCALAR);
            if (hi <= lo) H5Sselect_none(ms), H5Sselect_none(fs);
            else H5Sselect_all(fs);
        } else if (a < b) {
            hsize_t start[H5S_MAX_RANK] = {0}, count[H5S_MAX_RANK];
            start[0] = (hsize_t)a;
            count[0] = (hsize_t)(b - a);
            for (int d = 1; d < nd; d++) count[d] = dims[d];
            H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
            ms = H5Screate_simple(nd, count, NULL);
        } else {
            hsize_t one = 1;
            ms = H5Screate_simple(1, &one, NULL);
            H5Sselect_none(ms);
            H5Sselect_none(fs);
        }
        void* p = nd <= 0 ? (hi > lo ? data : dummy) : a < b ? (char*)data + (size_t)(a - lo) * mem_row : dummy;
        // checksums go to the summer's thread: a written piece is summed while the write copies it
        // (both only read it), a read one right after it arrives (still in cache)
        size_t piece_bytes = a < b ? (size_t)(b - a) * mem_row : 0;
        uint64_t first_word = (uint64_t)(a - row0) * mem_row / 4;
        if (sum && write && piece_bytes) summer_add_(sm, NULL, p, piece_bytes, first_word, sum, -1);
        // a read into memory misaligned to the file offset goes through an aligned bounce buffer (fast
        // kernel copy), then one pass copies it out and takes the checksum
        int misaligned = at != HADDR_UNDEF && ((uintptr_t)p - (at + (haddr_t)a * mem_row)) % 64 != 0;
        int bounce = !write && nd > 0 && misaligned && piece_bytes >= BOUNCE_MIN_BYTES_ &&
                             piece_bytes <= CKPT_READ_PIECE_BYTES ? bounce_take_(sm) : -1;
        herr_t r = write ? H5Dwrite(ds, memtype, ms, fs, dxpl, p)
                         : H5Dread(ds, memtype, ms, fs, dxpl, bounce >= 0 ? bounce_(bounce) : p);
        if (bounce >= 0 && r >= 0) summer_add_(sm, p, bounce_(bounce), piece_bytes, first_word, sum, bounce);
        else if (bounce >= 0) bounce_give_back_(sm, bounce);
        else if (sum && !write && piece_bytes && r >= 0) summer_add_(sm, NULL, p, piece_bytes, first_word, sum, -1);
        if (r < 0) rc = r;
        H5Sclose(ms);
    }
    H5Sclose(fs);
    return rc;
}

struct CkMap {
    const char* base;
    size_t len;
};

/* File systems whose pages a mapping reads straight from this node's page cache (statfs f_type). */
static int local_fs_(long type) {
    static const long local[] = {
        0xEF53,       // ext2/3/4
        0x58465342,   // xfs
        0x9123683E,   // btrfs
        0x01021994,   // tmpfs
        0x858458F6,   // ramfs
        0x794C7630,   // overlayfs
        0x2FC12FC1,   // zfs
        0xF2F52010,   // f2fs
    };
    for (size_t i = 0; i < sizeof local / sizeof *local; i++)
        if ((type & 0xFFFFFFFFL) == local[i]) return 1;
    return 0;
}

CkMap* ckpt_map_open(const char* file) {
    const char* env = getenv("ENGRAM_CKPT_MMAP");
    if (env && !strcmp(env, "0")) return NULL;
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct statfs fs;
    struct stat sb;
    CkMap* m = NULL;
    if (fstatfs(fd, &fs) == 0 && local_fs_((long)fs.f_type) && fstat(fd, &sb) == 0 && sb.st_size > 0) {
        void* p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            madvise(p, (size_t)sb.st_size, MADV_SEQUENTIAL);   // read ahead where the pages are not cached
            m = callocCheck(1, sizeof *m);
            m->base = p, m->len = (size_t)sb.st_size;
        }
    }
    close(fd);   // the mapping stays valid
    return m;
}

void ckpt_map_close(CkMap* m) {
    if (!m) return;
    munmap((void*)m->base, m->len);
    free(m);
}

int ckpt_rows_read_mapped(const CkMap* m, hid_t ds, hid_t memtype, int64_t lo, int64_t hi, void* data, uint64_t* sum,
                          CkSummer* sm, int64_t row0) {
    const haddr_t at = m ? H5Dget_offset(ds) : HADDR_UNDEF;   // defined for contiguous, allocated data only
    if (at == HADDR_UNDEF) return 0;
    hid_t ft = H5Dget_type(ds), fs = H5Dget_space(ds);
    hsize_t dims[H5S_MAX_RANK];
    int nd = H5Sget_simple_extent_dims(fs, dims, NULL);
    const int same = ft >= 0 && H5Tequal(ft, memtype) > 0;   // the file's bytes are the memory's
    H5Tclose(ft), H5Sclose(fs);
    if (!same || nd < 1 || lo < 0 || hi > (int64_t)dims[0]) return 0;
    size_t row = H5Tget_size(memtype);
    for (int d = 1; d < nd; d++) row *= (size_t)dims[d];
    const size_t off = (size_t)at + (size_t)lo * row, n = (size_t)(hi - lo) * row;
    if (off > m->len || n > m->len - off) return 0;   // HDF5 will say what is wrong
    const char* src = m->base + off;
    for (size_t b = 0, k = 0; b < n; b += CKPT_READ_PIECE_BYTES, k++) {
        size_t len = n - b < CKPT_READ_PIECE_BYTES ? n - b : CKPT_READ_PIECE_BYTES;
        uint64_t first_word = ((size_t)(lo - row0) * row + b) / 4;
        if (k % 2) summer_add_(sm, (char*)data + b, src + b, len, first_word, sum, -1);   // on the thread, if any
        else job_here_(sm, &(SumJob_){(char*)data + b, src + b, len, first_word, sum, -1});
    }
    return 1;
}

static CkSet* push_(CkSet** v, int* n, int* cap) {
    if (*n == *cap) *v = reallocCheck(*v, (size_t)(*cap = *cap ? 2 * *cap : 64) * sizeof(CkSet));
    CkSet* s = &(*v)[(*n)++];
    memset(s, 0, sizeof *s);
    s->tensor = s->layer = -1;
    s->flat_at = -1;
    return s;
}

int ckpt_layout(const Trainer* tr, CkSet** out) {
    const TensorTable* tt = &tr->model.tt;
    const NgramHash* nh = &tr->model.hash;
    const int P = tr->comm ? tr->comm->size : 1, rank = tr->comm ? tr->comm->rank : 0;
    CkSet* v = NULL;
    int n = 0, cap = 0;
    static const char* dense_dir[3] = {"/params/%s", "/optim/%s/m", "/optim/%s/v"};
    int64_t flat = 0;   // the next dense tensor's place in the flat datasets
    static const char* table_name[4] = {"table", "m", "v", "row_updates"};
    for (int i = 0; i < tt->n; i++) {
        const TensorInfo* t = &tt->t[i];
        if (t->group != OPT_TABLE) {
            for (int k = 0; k < 3; k++) {
                CkSet* s = push_(&v, &n, &cap);
                snprintf(s->path, sizeof s->path, dense_dir[k], t->name);
                s->src = (CkSource)(CK_PARAM + k);
                s->is_float = 1;
                s->ndim = t->ndim;
                for (int d = 0; d < t->ndim; d++) s->dims[d] = (hsize_t)t->shape[d];
                s->tensor = i;
                s->flat_at = flat;
                if (t->shard == SHARD_EXPERTS && tt->ep > 1) {   // [E, ...]: each rank its experts
                    s->sharded = 1;
                    s->max_rows = shard_block_rows(t->shape[0], tt->ep);
                    s->writes = rank < tt->ep;   // the first group holds every expert once
                }
            }
            flat += t->numel;
            continue;
        }
        const int e = t->engram, blk = nh->layer_ids[e];
        for (int k = 0; k < 4; k++) {
            CkSet* s = push_(&v, &n, &cap);
            snprintf(s->path, sizeof s->path, "/engram/layer_%d/%s", blk, table_name[k]);
            s->src = (CkSource)(CK_TABLE + k);
            s->is_float = k < 3;
            s->ndim = k < 3 ? 2 : 1;
            s->dims[0] = (hsize_t)tr->tables.rows[e];
            s->dims[1] = (hsize_t)tr->tables.Dh;
            s->layer = e;
            s->sharded = s->writes = 1;
            s->max_rows = shard_block_rows(tr->tables.rows[e], P);
        }
        static const char* hash_name[3] = {"multipliers", "table_sizes", "offsets"};
        for (int k = 0; k < 3; k++) {
            CkSet* s = push_(&v, &n, &cap);
            snprintf(s->path, sizeof s->path, "/engram/layer_%d/%s", blk, hash_name[k]);
            s->src = (CkSource)(CK_MULT + k);
            s->ndim = 1;
            s->dims[0] = (hsize_t)(k == 0 ? nh->max_ngram : nh->h_total);
            s->layer = e;
        }
    }
    *out = v;
    return n;
}

const char* const CKPT_FLAT[3] = {"/dense/params", "/dense/m", "/dense/v"};

int64_t ckpt_flat_numel(const CkSet* sets, int n) {
    int64_t end = 0;
    for (int i = 0; i < n; i++)
        if (sets[i].flat_at >= 0) {
            int64_t numel = 1;
            for (int d = 0; d < sets[i].ndim; d++) numel *= (int64_t)sets[i].dims[d];
            if (sets[i].flat_at + numel > end) end = sets[i].flat_at + numel;
        }
    return end;
}

char* ckpt_flat_tensors(const CkSet* sets, int n) {
    size_t cap = 256, len = 0;
    char* out = mallocCheck(cap);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (sets[i].src != CK_PARAM) continue;
        char one[256];
        int k = snprintf(one, sizeof one, "%s%s [", len ? ";" : "", sets[i].path + strlen("/params/"));
        for (int d = 0; d < sets[i].ndim; d++)
            k += snprintf(one + k, sizeof one - (size_t)k, "%s%llu", d ? "," : "", (unsigned long long)sets[i].dims[d]);
        k += snprintf(one + k, sizeof one - (size_t)k, "]");
        while (len + (size_t)k + 1 > cap) out = reallocCheck(out, cap *= 2);
        memcpy(out + len, one, (size_t)k + 1);
        len += (size_t)k;
    }
    return out;
}

/* ---- attributes ------------------------------------------------------------------------------ */

static int attr_write_(hid_t obj, const char* name, hid_t type, hid_t space, const void* v) {
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return rc < 0 ? -1 : 0;
}

int ckpt_attr_write_i64(hid_t obj, const char* name, int64_t v) {
    return attr_write_(obj, name, H5T_NATIVE_INT64, H5Screate(H5S_SCALAR), &v);
}
int ckpt_attr_write_u64(hid_t obj, const char* name, uint64_t v) {
    return attr_write_(obj, name, H5T_NATIVE_UINT64, H5Screate(H5S_SCALAR), &v);
}
int ckpt_attr_write_u64s(hid_t obj, const char* name, const uint64_t* v, int n) {
    hsize_t len = (hsize_t)(n > 0 ? n : 1);
    uint64_t zero = 0;
    return attr_write_(obj, name, H5T_NATIVE_UINT64, H5Screate_simple(1, &len, NULL), n > 0 ? (const void*)v : &zero);
}
int ckpt_attr_read_u64s(hid_t obj, const char* name, uint64_t* v, int n) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), sp = a < 0 ? -1 : H5Aget_space(a);
    int ok = sp >= 0 && H5Sget_simple_extent_npoints(sp) == (hssize_t)(n > 0 ? n : 1) &&
             (n == 0 || H5Aread(a, H5T_NATIVE_UINT64, v) >= 0);
    if (sp >= 0) H5Sclose(sp);
    if (a >= 0) H5Aclose(a);
    return ok ? 0 : -1;
}
int ckpt_attr_write_f64s(hid_t obj, const char* name, const double* v, int n) {
    hsize_t d = (hsize_t)n;
    return attr_write_(obj, name, H5T_NATIVE_DOUBLE, n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &d, NULL), v);
}
int ckpt_attr_write_str(hid_t obj, const char* name, const char* s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) ? strlen(s) : 1);
    H5Tset_cset(t, H5T_CSET_UTF8);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    int rc = attr_write_(obj, name, t, H5Screate(H5S_SCALAR), strlen(s) ? s : " ");
    H5Tclose(t);
    return rc;
}

static int attr_read_(hid_t obj, const char* name, hid_t type, void* v) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t sp = H5Aget_space(a);
    hssize_t npts = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    herr_t rc = npts == 1 ? H5Aread(a, type, v) : -1;
    H5Aclose(a);
    return rc < 0 ? -1 : 0;
}
int ckpt_attr_read_i64(hid_t obj, const char* name, int64_t* v) { return attr_read_(obj, name, H5T_NATIVE_INT64, v); }
int ckpt_attr_read_u64(hid_t obj, const char* name, uint64_t* v) { return attr_read_(obj, name, H5T_NATIVE_UINT64, v); }
int ckpt_attr_read_f64(hid_t obj, const char* name, double* v) { return attr_read_(obj, name, H5T_NATIVE_DOUBLE, v); }

/* A string attribute (is_attr) or scalar string dataset obj, fixed-length or variable-length, as a
 * malloc'd NUL-terminated string; NULL if it is not a string or cannot be read. */
static char* read_string_(hid_t obj, int is_attr) {
    hid_t t = is_attr ? H5Aget_type(obj) : H5Dget_type(obj);
    char* out = NULL;
    if (H5Tget_class(t) == H5T_STRING) {
        const int var = H5Tis_variable_str(t) > 0;
        const size_t n = var ? 0 : H5Tget_size(t);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, var ? H5T_VARIABLE : n + 1);   // fixed: NUL-terminated in memory
        H5Tset_cset(mt, H5Tget_cset(t));
        char* s = NULL;
        void* buf = var ? (void*)&s : (void*)(out = callocCheck(n + 1, 1));
        herr_t rc = is_attr ? H5Aread(obj, mt, buf) : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        if (var) {
            if (rc >= 0 && s) out = strdupCheck(s);
            if (s) H5free_memory(s);
        } else if (rc < 0) {
            free(out), out = NULL;
        }
        H5Tclose(mt);
    }
    H5Tclose(t);
    return out;
}

char* ckpt_attr_read_str(hid_t obj, const char* name) {
    if (H5Aexists(obj, name) <= 0) return NULL;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    char* out = read_string_(a, 1);
    H5Aclose(a);
    return out;
}

/* ---- checks ---------------------------------------------------------------------------------- */

hid_t ckpt_open_checked(const char* file, hid_t fapl, int* version, char* err, size_t errlen) {
    struct stat sb;
    if (stat(file, &sb) != 0) {
        snprintf(err, errlen, "%s: no such checkpoint file", file);
        return -1;
    }
    if (H5Fis_hdf5(file) <= 0) {
        snprintf(err, errlen, "%s: not an HDF5 file (corrupt, or not a checkpoint)", file);
        return -1;
    }
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, fapl);
    if (f < 0) {
        snprintf(err, errlen, "%s: cannot open as HDF5 (truncated or corrupt file)", file);
        return -1;
    }
    char* fmt = ckpt_attr_read_str(f, "format");
    int64_t ver = -1;
    int ok = fmt && !strcmp(fmt, CHECKPOINT_FORMAT);
    free(fmt);
    if (!ok) {
        snprintf(err, errlen, "%s: not an engram checkpoint (no format=\"%s\" attribute on its root)", file, CHECKPOINT_FORMAT);
    } else if (ckpt_attr_read_i64(f, "format_version", &ver) || ver < 1) {
        snprintf(err, errlen, "%s: engram checkpoint without a valid format_version attribute (corrupt file)", file);
        ok = 0;
    } else if (ver > CHECKPOINT_FORMAT_VERSION) {
        snprintf(err, errlen, "%s: checkpoint format version %lld is newer than this engram %s reads (%d); use a newer engram",
                 file, (long long)ver, ENGRAM_VERSION, CHECKPOINT_FORMAT_VERSION);
        ok = 0;
    }
    if (!ok) {
        H5Fclose(f);
        return -1;
    }
    if (version) *version = (int)ver;
    return f;
}

static void shape_str_(char* out, size_t n, int ndim, const hsize_t* d) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(out + k, n - k, "%s%llu", i ? "," : "", (unsigned long long)d[i]);
    if (k < n) snprintf(out + k, n - k, "]");
}

int ckpt_path_exists(hid_t f, const char* path) {
    if (!strcmp(path, "/")) return 1;
    char part[512];
    int present = 1;
    for (const char* p = path + 1; present; p++) {
        if (*p != '/' && *p) continue;
        size_t k = (size_t)(p - path);
        if (k >= sizeof part) return 0;
        memcpy(part, path, k);
        part[k] = '\0';
        present = H5Lexists(f, part, H5P_DEFAULT) > 0;
        if (!*p) break;
    }
    return present;
}

/* One set present with its shape and class; the dataset left open in *id where id != NULL. */
static int check_set_(hid_t f, const char* file, const CkSet* s, hid_t* id, char* err, size_t errlen) {
    // open first (one lookup); only a failure walks the path to tell "missing" from "unreadable"
    hid_t ds = H5Dopen2(f, s->path, H5P_DEFAULT);
    if (ds < 0 && !ckpt_path_exists(f, s->path)) {
        snprintf(err, errlen, "%s: dataset %s is missing; this config expects it (written with a different config? "
                 "`engram inspect %s` shows the one it holds)", file, s->path, file);
        return -1;
    }
    if (ds < 0) {
        snprintf(err, errlen, "%s: %s is not a readable dataset (corrupt file)", file, s->path);
        return -1;
    }
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds);
    hsize_t d[H5S_MAX_RANK] = {0};
    int nd = H5Sget_simple_extent_dims(sp, d, NULL);
    H5T_class_t cls = H5Tget_class(ty);
    H5Sclose(sp);
    H5Tclose(ty);
    int same = nd == s->ndim, same_class = cls == (s->is_float ? H5T_FLOAT : H5T_INTEGER);
    for (int k = 0; same && k < nd; k++) same = d[k] == s->dims[k];
    if (same && same_class && id) *id = ds;
    else H5Dclose(ds);
    if (!same) {
        char have[96], want[96];
        shape_str_(have, sizeof have, nd, d);
        shape_str_(want, sizeof want, s->ndim, s->dims);
        snprintf(err, errlen, "%s: %s has shape %s but this config needs %s (written with a different config? "
                 "`engram inspect %s` shows the one it holds)", file, s->path, have, want, file);
        return -1;
    }
    if (!same_class) {
        snprintf(err, errlen, "%s: %s holds %s, expected %s (corrupt file)", file, s->path,
                 cls == H5T_FLOAT ? "floats" : "non-floats", s->is_float ? "float32" : "int64");
        return -1;
    }
    return 0;
}

/* The first tensor where the flat datasets' `tensors` list (have) and the config's (want) differ, as
 * the per-dataset check would say it: a shape, a tensor missing, or one the config lacks. */
static void tensors_diff_(const char* file, const char* have, const char* want, char* err, size_t errlen) {
    const char *h = have, *w = want;
    for (;;) {
        size_t hl = strcspn(h, ";"), wl = strcspn(w, ";");
        if (hl != wl || strncmp(h, w, hl)) {
            size_t hn = strcspn(h, " "), wn = strcspn(w, " ");
            if (!wl) {
                snprintf(err, errlen, "%s: /params/%.*s is in the file but not in this config (written with a different "
                         "config? `engram inspect %s` shows the one it holds)", file, (int)(hn < hl ? hn : hl), h, file);
            } else if (hl && hn == wn && !strncmp(h, w, hn)) {
                snprintf(err, errlen, "%s: /params/%.*s has shape %.*s but this config needs %.*s (written with a "
                         "different config? `engram inspect %s` shows the one it holds)", file, (int)hn, h,
                         (int)(hl - hn - 1), h + hn + 1, (int)(wl - wn - 1), w + wn + 1, file);
            } else {
                snprintf(err, errlen, "%s: dataset /params/%.*s is missing; this config expects it (written with a "
                         "different config? `engram inspect %s` shows the one it holds)", file, (int)wn, w, file);
            }
            return;
        }
        if (!h[hl]) return;   // both ended together: no difference
        h += hl + 1, w += wl + 1;
    }
}

/* Format 2: the flat datasets present, 1-D float32 of the dense tensors' total size, and holding the
 * tensors (names and shapes) this config has; flat_ids [3] receive them open (NULL: closed). */
static int check_flat_(hid_t f, const char* file, const CkSet* sets, int n, hid_t* flat_ids, char* err, size_t errlen) {
    CkSet fs;
    memset(&fs, 0, sizeof fs);
    fs.is_float = 1, fs.ndim = 1, fs.dims[0] = (hsize_t)ckpt_flat_numel(sets, n), fs.flat_at = -1;
    fs.tensor = fs.layer = -1;
    hid_t ids[3] = {-1, -1, -1};
    int rc = 0;
    for (int k = 0; k < 3 && rc == 0; k++) {
        snprintf(fs.path, sizeof fs.path, "%s", CKPT_FLAT[k]);
        hid_t ds = H5Dopen2(f, fs.path, H5P_DEFAULT);
        char* have = ds >= 0 ? ckpt_attr_read_str(ds, "tensors") : NULL;
        char* want = ckpt_flat_tensors(sets, n);
        if (ds >= 0) H5Dclose(ds);
        if (have && strcmp(have, want)) {   // the tensor-level reason first: it names what changed
            tensors_diff_(file, have, want, err, errlen);
            rc = -1;
        } else if (ds >= 0 && !have) {
            snprintf(err, errlen, "%s: %s has no `tensors` attribute (corrupt file)", file, fs.path);
            rc = -1;
        } else {
            rc = check_set_(f, file, &fs, &ids[k], err, errlen);
        }
        free(have);
        free(want);
    }
    for (int k = 0; k < 3; k++)
        if (rc || !flat_ids) {
            if (ids[k] >= 0) H5Dclose(ids[k]);
        } else {
            flat_ids[k] = ids[k];
        }
    return rc;
}

int ckpt_check_sets(hid_t f, const char* file, const CkSet* sets, int n, int flat, hid_t* ids, char* err,
                    size_t errlen) {
    if (H5Lexists(f, "/config", H5P_DEFAULT) <= 0) {
        snprintf(err, errlen, "%s: /config is missing (corrupt or incomplete checkpoint)", file);
        return -1;
    }
    hid_t fid[3] = {-1, -1, -1};
    if (flat && check_flat_(f, file, sets, n, ids ? fid : NULL, err, errlen)) return -1;
    for (int i = 0; i < n; i++) {
        hid_t ds = -1;
        if (flat && sets[i].flat_at >= 0) {   // read through its flat dataset
            if (ids) ids[i] = fid[sets[i].src - CK_PARAM];
            continue;
        }
        if (check_set_(f, file, &sets[i], ids ? &ds : NULL, err, errlen)) {
            for (int k = 0; ids && k < i; k++)
                if (!(flat && sets[k].flat_at >= 0)) H5Dclose(ids[k]);
            for (int k = 0; k < 3; k++)
                if (fid[k] >= 0) H5Dclose(fid[k]);
            return -1;
        }
        if (ids) ids[i] = ds;
    }
    return 0;
}

void ckpt_close_sets(const CkSet* sets, int n, int flat, const hid_t* ids) {
    hid_t fid[3] = {-1, -1, -1};
    for (int i = 0; i < n; i++) {
        if (flat && sets[i].flat_at >= 0) fid[sets[i].src - CK_PARAM] = ids[i];   // shared: closed once below
        else if (ids[i] >= 0) H5Dclose(ids[i]);
    }
    for (int k = 0; k < 3; k++)
        if (fid[k] >= 0) H5Dclose(fid[k]);
}

char* ckpt_read_config_string(hid_t f) {
    if (H5Lexists(f, "/config", H5P_DEFAULT) <= 0) return NULL;
    hid_t ds = H5Dopen2(f, "/config", H5P_DEFAULT);
    if (ds < 0) return NULL;
    char* out = read_string_(ds, 0);
    H5Dclose(ds);
    return out;
}

/* The values behind one set: whole buffer or this rank's rows. */
const void* ckpt_set_data(const Trainer* tr, const CkSet* s, int64_t* first, int64_t* local) {
    const Model* m = &tr->model;
    const EngramTables* t = &tr->tables;
    const NgramHash* nh = &m->hash;
    int e = s->layer;
    if (e >= 0) *first = t->first[e], *local = t->local[e];
    if (s->sharded && s->tensor >= 0) *first = m->tt.t[s->tensor].rows_first, *local = m->tt.t[s->tensor].rows_local;
    switch (s->src) {
    case CK_PARAM: return m->params + m->tt.t[s->tensor].offset;
    case CK_M: return m->m + m->tt.t[s->tensor].offset;
    case CK_V: return m->v + m->tt.t[s->tensor].offset;
    case CK_TABLE: return t->table[e];
    case CK_TABLE_M: return t->m[e];
    case CK_TABLE_V: return t->v[e];
    case CK_UPDATES: return t->updates[e];
    case CK_MULT: return nh->multipliers + (size_t)e * nh->max_ngram;
    case CK_SIZES: return nh->table_sizes + (size_t)e * nh->h_total;
    case CK_OFFSETS: return nh->offsets + (size_t)e * nh->h_total;
    }
    return NULL;
}
