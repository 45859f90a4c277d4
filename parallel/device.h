/*
 * device.h — opening the compute backend a rank runs on (src/backend.h's interface):
 * "cpu" with MPI collectives over host buffers, or "cuda" (gpu/: one rank per GPU, NCCL
 * collectives, MPI for control) in builds configured with -DENGRAM_CUDA=ON.
 *
 * Not here: the ops themselves (src/backend_cpu.c, gpu/).
 */
#ifndef ENGRAM_DEVICE_H
#define ENGRAM_DEVICE_H

#include <mpi.h>
#include <stddef.h>

#include "backend.h"

/* 1 when this build holds the CUDA backend. */
int device_has_cuda(void);

/* 0 when `device` (config.h's DEVICE_CPU | DEVICE_CUDA) can run on this process; else -1 with one
 * line in err saying why (no CUDA in this build; no usable GPU, naming the CUDA error). */
int device_probe(int device, char* err, size_t n);

/* Open the backend for this rank of comm (collective: every rank of comm calls it). precision is a
 * BackendPrecision (the CPU backend computes fp32 whatever is asked). 0, or -1 with err as above. */
int device_open(Backend* be, int device, int precision, MPI_Comm comm, char* err, size_t n);

#endif
