/*
 * comm.h — the MPI world every rank runs in: start-up, shut-down, the ranks sharing a node and the
 * CPUs a rank can count on, agreeing on a failure some ranks met alone, the rank-0 print macro, and the mpiCheck macro that turns an MPI error
 * into a message with file, line and a hint.
 *
 * Not here: exchanges and gradient sync (their own files in parallel/), anything touching files.
 */
#ifndef ENGRAM_COMM_H
#define ENGRAM_COMM_H

#include <mpi.h>

#include "common.h"

typedef struct {
    int rank;        // this process, 0..size-1
    int size;        // P
    MPI_Comm comm;   // the world (a duplicate, so library traffic never mixes with ours)
    int node_size;   // ranks of the world on this rank's node (shared memory); 0: not known (1)
    int cores;       // CPUs this rank can count as its own (comm_cores); 0: not known
} Comm;

void comm_init(Comm* c, int* argc, char*** argv);
void comm_free(Comm* c);
/* CPUs this rank can count as its own: those it may run on (its affinity mask: where mpirun or
 * srun bound it, or the job's cpuset) divided by the ranks of its node that may run on any of them
 * too (itself included), at least 1. c NULL, or a Comm not made by comm_init: the mask alone (a lone
 * process). A helper thread pays off only where this is 2 or more; on fewer it takes turns with the
 * rank. */
int comm_cores(const Comm* c);

/* A verdict some ranks may reach alone (a file one node cannot read): every rank of comm calls
 * this at the same point, failed set where it failed and its reason in msg [n] (n the same on every
 * rank). Returns the lowest failing rank, whose reason msg then holds on every rank, or -1 where
 * none failed. Ranks that left alone would hang the others in their next collective. */
int comm_agree(MPI_Comm comm, int failed, char* msg, int n);

void mpi_check_at(int rc, const char* file, int line);
#define mpiCheck(call) mpi_check_at((call), __FILE__, __LINE__)

/* All ranks run the same control flow; only rank 0 speaks. */
#define printf0(comm, ...) do { if ((comm)->rank == 0) { printf(__VA_ARGS__); fflush(stdout); } } while (0)

#endif
