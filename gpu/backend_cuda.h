/*
 * backend_cuda.h — the CUDA backend (src/backend.h's interface on an NVIDIA GPU): cudaMalloc'd
 * memory, GEMMs through cuBLAS (fp32, or bf16 inputs with fp32 accumulation), the kernels of
 * kernels.cu, and NCCL for the collectives, with MPI only to hand out NCCL's id. One rank per GPU.
 * Built with -DENGRAM_CUDA=ON; parallel/device.c is its only caller.
 */
#ifndef ENGRAM_BACKEND_CUDA_H
#define ENGRAM_BACKEND_CUDA_H

#include <mpi.h>
#include <stddef.h>

#include "backend.h"

/* 0 when this process sees a usable GPU; else -1 and one line in err naming the CUDA error
 * (e.g. cudaErrorInsufficientDriver on a machine with the toolkit but no driver). */
int backend_cuda_probe(char* err, size_t n);

/* Open on GPU (local rank on its node) of comm, collective over comm; 0, or -1 with err. */
int backend_cuda_open(Backend* be, MPI_Comm comm, int precision, char* err, size_t n);

#endif
