/*
 * comm.c — MPI start-up, error reporting, and the CPUs a rank can count on (comm.h).
 */
#define _GNU_SOURCE   // sched_getaffinity, CPU_COUNT
#include "comm.h"

#include <sched.h>
#include <unistd.h>

void mpi_check_at(int rc, const char* file, int line) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    engram_die_at(file, line, "an MPI call failed; check that all ranks run the same engram build and config",
                  "MPI error %d: %s", rc, msg);
}

void comm_init(Comm* c, int* argc, char*** argv) {
    int started = 0;
    MPI_Initialized(&started);
    if (!started) mpiCheck(MPI_Init(argc, argv));
    /* errors come back as codes, so mpiCheck can say where they happened */
    mpiCheck(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    mpiCheck(MPI_Comm_dup(MPI_COMM_WORLD, &c->comm));
    mpiCheck(MPI_Comm_rank(c->comm, &c->rank));
    mpiCheck(MPI_Comm_size(c->comm, &c->size));
    MPI_Comm node;
    mpiCheck(MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
    mpiCheck(MPI_Comm_size(node, &c->node_size));
    MPI_Comm_free(&node);
}

int comm_cores(const Comm* c) {
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    const int ranks = c && c->node_size > 0 ? c->node_size : 1;
    cpu_set_t mask;
    long mine = online;
    if (sched_getaffinity(0, sizeof mask, &mask) == 0) mine = CPU_COUNT(&mask);
    long cores = mine < online ? mine : online / ranks;   // bound (mpirun binds to cores at small P) or shared
    return cores >= 1 ? (int)cores : 1;
}

void comm_free(Comm* c) {
    MPI_Comm_free(&c->comm);
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}
