/*
 * comm.c — MPI start-up and error reporting (comm.h).
 */
#include "comm.h"

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
}

void comm_free(Comm* c) {
    MPI_Comm_free(&c->comm);
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}
