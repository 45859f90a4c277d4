/*
 * device.c — picks and opens a compute backend (device.h), and gives the CPU
 * backend its collectives: MPI on host buffers, over a duplicate of the caller's communicator.
 */
#include "device.h"

#include <limits.h>
#include <stdlib.h>

#include "comm.h"
#include "common.h"
#include "config.h"
#ifdef ENGRAM_HAVE_CUDA
#include "backend_cuda.h"
#endif

#define NO_CUDA_BUILD "this build has no CUDA backend: configure with -DENGRAM_CUDA=ON"

int device_has_cuda(void) {
#ifdef ENGRAM_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

int device_probe(int device, char* err, size_t n) {
    if (device != DEVICE_CUDA) return 0;
#ifdef ENGRAM_HAVE_CUDA
    return backend_cuda_probe(err, n);
#else
    return engram_errf(err, n, NO_CUDA_BUILD);
#endif
}

/* ---- the CPU backend's collectives: MPI ------------------------------------------------------- */

static MPI_Comm mpi_comm_(Backend* be) { return *(MPI_Comm*)be->impl; }

static void mpi_allreduce_sum_(Backend* be, float* buf, size_t n) {
    // MPI counts are int: sum in chunks of at most INT_MAX floats
    for (size_t o = 0; o < n; o += INT_MAX) {
        int c = n - o < (size_t)INT_MAX ? (int)(n - o) : INT_MAX;
        mpiCheck(MPI_Allreduce(MPI_IN_PLACE, buf + o, c, MPI_FLOAT, MPI_SUM, mpi_comm_(be)));
    }
}

/* size_t byte counts → MPI's int counts; a single message over 2 GiB is refused, not truncated. */
static int* int_counts_(const size_t* c, int P) {
    int* out = mallocCheck((size_t)P * sizeof(int));
    for (int r = 0; r < P; r++) {
        if (c[r] > (size_t)INT_MAX)
            engram_die("split the exchange into smaller steps (a smaller train.batch_size per rank)",
                       "alltoallv: %zu bytes for rank %d exceed MPI's int counts", c[r], r);
        out[r] = (int)c[r];
    }
    return out;
}

static void mpi_alltoallv_(Backend* be, const void* send, const size_t* scounts, const size_t* sdispls, void* recv,
                           const size_t* rcounts, const size_t* rdispls) {
    const int P = be->size;
    int *sc = int_counts_(scounts, P), *sd = int_counts_(sdispls, P);
    int *rc = int_counts_(rcounts, P), *rd = int_counts_(rdispls, P);
    mpiCheck(MPI_Alltoallv(send, sc, sd, MPI_BYTE, recv, rc, rd, MPI_BYTE, mpi_comm_(be)));
    free(sc), free(sd), free(rc), free(rd);
}

static void mpi_close_(Backend* be) {
    MPI_Comm c = mpi_comm_(be);
    mpiCheck(MPI_Comm_free(&c));
    free(be->impl);
    be->impl = NULL;
}

static Backend* mpi_group_(Backend* be, int color, int key) {
    Backend* g = mallocCheck(sizeof *g);
    *g = *be;   // the same memory and ops; only the communicator differs
    MPI_Comm* c = mallocCheck(sizeof(MPI_Comm));
    mpiCheck(MPI_Comm_split(mpi_comm_(be), color, key, c));
    g->impl = c;
    mpiCheck(MPI_Comm_rank(*c, &g->rank));
    mpiCheck(MPI_Comm_size(*c, &g->size));
    g->group = NULL;
    return g;
}

int device_open(Backend* be, int device, int precision, MPI_Comm comm, char* err, size_t n) {
    if (device_probe(device, err, n) != 0) return -1;
    const char* profile = getenv("ENGRAM_PROFILE");   // op-by-op times (src/backend_profile.c)
#ifdef ENGRAM_HAVE_CUDA
    if (device == DEVICE_CUDA) {
        if (backend_cuda_open(be, comm, precision, err, n) != 0) return -1;
        if (profile && profile[0] == '1') backend_profile_wrap(be);
        return 0;
    }
#endif
    (void)precision;
    backend_cpu_init(be);
    MPI_Comm* c = mallocCheck(sizeof(MPI_Comm));
    mpiCheck(MPI_Comm_dup(comm, c));
    be->impl = c;
    mpiCheck(MPI_Comm_rank(*c, &be->rank));
    mpiCheck(MPI_Comm_size(*c, &be->size));
    be->allreduce_sum = mpi_allreduce_sum_;
    be->alltoallv = mpi_alltoallv_;
    be->group = mpi_group_;
    be->close = mpi_close_;
    const char* guard = getenv("ENGRAM_GUARD_BACKEND");   // tests: the model touches memory only via be
    if (guard && guard[0] == '1') backend_guard_wrap(be);
    if (profile && profile[0] == '1') backend_profile_wrap(be);
    return 0;
}
