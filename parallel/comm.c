/*
 * comm.c — MPI start-up, error reporting, agreeing on failures, and the CPUs a rank can count on
 * (comm.h).
 */
#define _GNU_SOURCE   // sched_getaffinity, CPU_COUNT
#include "comm.h"

#include <sched.h>
#include <unistd.h>

/* This process's affinity mask (every online CPU where it cannot be read). */
static void affinity_(cpu_set_t* set) {
    if (sched_getaffinity(0, sizeof *set, set) == 0) return;
    CPU_ZERO(set);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    for (long i = 0; i < online && i < CPU_SETSIZE; i++) CPU_SET(i, set);
}

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
    // the CPUs each rank of the node may run on: ranks whose masks meet share those CPUs
    MPI_Comm node;
    mpiCheck(MPI_Comm_split_type(c->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
    mpiCheck(MPI_Comm_size(node, &c->node_size));
    cpu_set_t mine;
    affinity_(&mine);
    cpu_set_t* all = mallocCheck((size_t)c->node_size * sizeof(cpu_set_t));   // [node_size]
    mpiCheck(MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, node));
    int sharing = 0;
    for (int r = 0; r < c->node_size; r++) {
        cpu_set_t both;
        CPU_AND(&both, &mine, &all[r]);
        sharing += CPU_COUNT(&both) > 0;
    }
    free(all);
    MPI_Comm_free(&node);
    c->cores = CPU_COUNT(&mine) / (sharing > 0 ? sharing : 1);
    if (c->cores < 1) c->cores = 1;
}

int comm_cores(const Comm* c) {
    if (c && c->cores > 0) return c->cores;
    cpu_set_t mine;
    affinity_(&mine);
    return CPU_COUNT(&mine) > 0 ? CPU_COUNT(&mine) : 1;
}

void comm_free(Comm* c) {
    MPI_Comm_free(&c->comm);
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}

int comm_agree(MPI_Comm comm, int failed, char* msg, int n) {
    int rank, size;
    mpiCheck(MPI_Comm_rank(comm, &rank));
    mpiCheck(MPI_Comm_size(comm, &size));
    int who = failed ? rank : size;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &who, 1, MPI_INT, MPI_MIN, comm));
    if (who == size) return -1;
    mpiCheck(MPI_Bcast(msg, n, MPI_CHAR, who, comm));
    return who;
}
