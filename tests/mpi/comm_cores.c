/*
 * comm_cores.c — run under mpirun: each rank prints the ranks on its node (Comm.node_size) and the
 * CPUs it may count as its own (comm_cores), for tests/mpi/comm_cores.sh to compare with what
 * mpirun was asked for (binding, rank count) and what the machine has.
 */
#include <stdio.h>

#include "comm.h"

int main(int argc, char** argv) {
    Comm w;
    comm_init(&w, &argc, &argv);
    printf("rank %d node_size %d cores %d\n", w.rank, w.node_size, comm_cores(&w));
    fflush(stdout);
    comm_free(&w);
    return 0;
}
