/*
 * backend_view.c — host views of a backend's memory (backend.h): where host code (the MoE plan,
 * the Engram rows, the MPI hooks, checkpoints) reads or writes what lives on the device. On a host
 * backend the view is the memory itself, so the CPU path copies nothing.
 */
#include <stdlib.h>

#include "backend.h"
#include "common.h"

void* backend_host_view(Backend* be, const void* p, size_t n, int fetch) {
    if (be->host) return (void*)p;
    void* v = mallocCheck(n ? n : 1);
    if (fetch && n) be->to_host(be, v, p, n);
    return v;
}

void backend_host_done(Backend* be, void* view, void* p, size_t n, int store) {
    if (be->host || view == p) return;
    if (store && n) be->to_device(be, p, view, n);
    free(view);
}

void* backend_device_view(Backend* be, const void* h, size_t n, int send) {
    if (be->host) return (void*)h;
    void* d = be->alloc(be, n);
    if (send && n) be->to_device(be, d, h, n);
    return d;
}

void backend_device_done(Backend* be, void* d, void* h, size_t n, int fetch) {
    if (be->host || d == h) return;
    if (fetch && n) be->to_host(be, h, d, n);
    be->free(be, d);
}
