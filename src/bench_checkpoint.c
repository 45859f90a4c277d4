/*
 * bench_checkpoint.c — `engram bench checkpoint CONFIG [key=value ...] [--dir DIR] [--reps N]`:
 * checkpoint save and load throughput (MB/s of the file) at the world size it runs at (plain, or
 * under mpirun), next to a plain sequential write (fwrite + fsync) and read (fread) of the same
 * number of bytes by one process on the same disk in the same run. Save includes everything
 * checkpoint_save does (collective write, fsync, verification, rename, `latest`); load includes
 * every check and checksum. One training step runs first so that every buffer holds values (never
 * touched calloc'ed moments would make the save pay for page faults a real run never sees).
 * Files go to a fresh directory DIR/bench_checkpoint.XXXXXX (--dir, default .), removed at the end.
 * Prints one JSON line (rank 0): the best of --reps (default 10) of each side, and the ratios of
 * the medians too (on a shared host the best of a few reps swings by a third from run to run), and
 * how the load read the file (`load_reads`: "mapped" or "hdf5", docs/checkpoint.md).
 *
 * Both sides run under the same conditions, rep by rep (after one untimed save; the checkpoint's
 * save + load first in odd reps, the plain pair first in even ones):
 *  - page cache: each side's previous file is deleted just before it writes (outside the timing),
 *    so both write into just-freed page-cache memory (on a VM, writing into never-used memory costs
 *    several times more: a baseline that reuses freed pages against saves that never do is not a
 *    comparison of I/O code), and both read a file they just wrote (warm cache);
 *  - memory: the plain write sends, and the plain read fills, one buffer of the file's size (the
 *    checkpoint's bytes come from and go to the Trainer's buffers, not one hot 8 MB block), from
 *    the allocator of the Trainer's buffers (callocPagesCheck: huge pages where allowed), page
 *    aligned: the kernel's copy between page cache and a buffer misaligned to the file offset runs
 *    several times slower on some CPUs (AMD Zen, rep movsb), and the baseline should be the fast case;
 *  - CPU: while rank 0 runs the plain pair the other ranks sleep (no MPI busy-polling).
 *
 * Not here: correctness (tests/mpi/checkpoint_*.sh).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "checkpoint.h"
#include "cli.h"
#include "comm.h"
#include "common.h"
#include "rng.h"
#include "shard.h"

/* One process writes buf[0, n) with fwrite + fsync (8 MB calls), then reads the file back into buf
 * with fread: seconds each. */
static void plain_io_(const char* path, char* buf, size_t n, double* t_write, double* t_read) {
    const size_t chunk = (size_t)8 << 20;
    double t0 = engram_now();
    FILE* f = fopen(path, "wb");
    if (!f) engram_fail("bench checkpoint: cannot write %s", path);
    for (size_t off = 0; off < n; off += chunk) fwrite(buf + off, 1, n - off < chunk ? n - off : chunk, f);
    fflush(f);
    fsync(fileno(f));
    fclose(f);
    *t_write = engram_now() - t0;
    t0 = engram_now();
    f = fopen(path, "rb");
    size_t got = 0, k;
    while (got < n && (k = fread(buf + got, 1, n - got < chunk ? n - got : chunk, f)) > 0) got += k;
    fclose(f);
    *t_read = engram_now() - t0;
    if (got != n) engram_fail("bench checkpoint: read back %zu of %zu bytes from %s", got, n, path);
}

static int cmp_seconds_(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

/* Ranks other than 0 wait here, sleeping, until rank 0 arrives (no busy-polling of a core). */
static void quiet_barrier_(const Comm* w) {
    if (w->size == 1) return;
    MPI_Request rq;
    mpiCheck(MPI_Ibarrier(w->comm, &rq));
    int done = 0;
    while (!done) {
        mpiCheck(MPI_Test(&rq, &done, MPI_STATUS_IGNORE));
        if (!done) usleep(200);
    }
}

int bench_checkpoint_main(int argc, char** argv) {
    const char *path = NULL, *parent = ".", *v;
    int reps = 10, n_over = 0;
    char** over = callocCheck(argc, sizeof(char*));
    for (int i = 1; i < argc; i++) {
        if ((v = cli_option(argc, argv, &i, "--dir"))) parent = v;
        else if ((v = cli_option(argc, argv, &i, "--reps"))) reps = atoi(v);
        else if (argv[i][0] == '-') engram_fail("bench checkpoint: unknown option %s", argv[i]);
        else if (strchr(argv[i], '=')) over[n_over++] = argv[i];
        else path = argv[i];
    }
    if (!path) engram_fail("usage: engram bench checkpoint CONFIG [key=value ...] [--dir DIR] [--reps N]");
    if (reps < 1) engram_fail("bench checkpoint: --reps must be >= 1 (got %d)", reps);
    Comm w;
    comm_init(&w, &argc, &argv);
    Config c;
    cli_load_config(&c, path, n_over, over);
    free(over);
    // a directory of its own under --dir (made by rank 0, its name broadcast): the bench deletes the
    // files it writes, and must never touch a run's checkpoints, nor another bench's beside it
    char dir[4096] = "";
    int made = 0;   // 0, or rank 0's errno
    if (w.rank == 0) {
        snprintf(dir, sizeof dir, "%s/bench_checkpoint.XXXXXX", parent);
        made = mkdtemp(dir) ? 0 : errno;
    }
    mpiCheck(MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, w.comm));
    mpiCheck(MPI_Bcast(&made, 1, MPI_INT, 0, w.comm));
    if (made && w.rank == 0)
        engram_fail("bench checkpoint: cannot create a directory in %s: %s (--dir DIR picks where it writes)", parent,
                    strerror(made));
    if (made) exit(ENGRAM_EXIT_USAGE);   // rank 0 said why
    c.checkpoint.keep = reps + 1;   // pruning (deleting an old file) is not what is measured
    int first, count;
    shard_batch_range(c.train.batch_size, w.size, w.rank, &first, &count);
    Trainer tr;
    trainer_init(&tr, &c, count > 0 ? count : 1, (uint64_t)c.run.seed, w.size > 1 ? &w : NULL);
    // one real step first, so every buffer (Adam moments included) holds values, as in a run
    const int T = c.model.seq_len, V = c.model.vocab_size, B = count > 0 ? count : 1;
    int32_t* x = mallocCheck((size_t)B * T * sizeof(int32_t));
    int32_t* y = mallocCheck((size_t)B * T * sizeof(int32_t));
    for (size_t i = 0; i < (size_t)B * T; i++) x[i] = (int32_t)(rng_u64(7, (uint64_t)w.rank, i) % (uint64_t)V), y[i] = x[i];
    trainer_step(&tr, x, y, NULL);
    free(x), free(y);
    char err[1024], file[4400], prev[4400] = "", plain[4400];
    snprintf(plain, sizeof plain, "%s/plain.bin", dir);
    double* t[4];   // [4][reps] seconds of each rep: save, load, plain write, plain read
    for (int k = 0; k < 4; k++) t[k] = callocCheck((size_t)reps, sizeof(double));
    size_t bytes = 0;
    char* buf = NULL;
    CkptState st = {.seed = (uint64_t)c.run.seed, .world_size = w.size};
    // an untimed save first: it sizes the plain pair's buffer, and no side pays for the first touch
    st.step = 0;
    if (checkpoint_save(&tr, &c, NULL, &st, dir, err, sizeof err)) engram_fail("%s", err);
    snprintf(prev, sizeof prev, "%s/step_%08d.h5", dir, 0);
    if (w.rank == 0) {
        struct stat sb;
        if (stat(prev, &sb)) engram_fail("bench checkpoint: %s vanished", prev);
        bytes = (size_t)sb.st_size;
        buf = callocPagesCheck(bytes, 1);   // as the Trainer's buffers: page-aligned, huge pages where allowed
        for (size_t i = 0; i < bytes; i++) buf[i] = (char)(i * 131 + 7);
    }
    for (int r = 1; r <= reps; r++) {
        for (int side = 0; side < 2; side++) {
            if ((side == 0) == (r % 2 == 1)) {   // the checkpoint first in odd reps, second in even ones
                st.step = r;
                if (w.rank == 0) unlink(prev);   // as the plain file: write into just-freed pages
                mpiCheck(MPI_Barrier(w.comm));
                double t0 = engram_now();
                if (checkpoint_save(&tr, &c, NULL, &st, dir, err, sizeof err)) engram_fail("%s", err);
                mpiCheck(MPI_Barrier(w.comm));
                double ts = engram_now() - t0;
                snprintf(file, sizeof file, "%s/step_%08d.h5", dir, r);
                t0 = engram_now();
                CkptState got;
                if (checkpoint_load(&tr, file, &got, err, sizeof err)) engram_fail("%s", err);
                mpiCheck(MPI_Barrier(w.comm));
                double tl = engram_now() - t0;
                t[0][r - 1] = ts, t[1][r - 1] = tl;
                snprintf(prev, sizeof prev, "%s", file);
            } else {
                if (w.rank == 0) {
                    double tw, trd;
                    unlink(plain);
                    plain_io_(plain, buf, bytes, &tw, &trd);
                    t[2][r - 1] = tw, t[3][r - 1] = trd;
                }
                quiet_barrier_(&w);
            }
        }
    }
    if (w.rank == 0) {
        double mb = (double)bytes / 1e6, best[4], med[4];
        for (int k = 0; k < 4; k++) qsort(t[k], (size_t)reps, sizeof(double), cmp_seconds_), best[k] = t[k][0],
                                    med[k] = (t[k][(reps - 1) / 2] + t[k][reps / 2]) / 2;
        printf("{\"bench\":\"checkpoint\",\"config\":\"%s\",\"ranks\":%d,\"bytes\":%zu,\"save_s\":%.4f,\"load_s\":%.4f,"
               "\"save_MBps\":%.1f,\"load_MBps\":%.1f,\"plain_write_MBps\":%.1f,\"plain_read_MBps\":%.1f,"
               "\"save_ratio\":%.3g,\"load_ratio\":%.3g,\"save_ratio_median\":%.3g,\"load_ratio_median\":%.3g,"
               "\"reps\":%d,\"load_reads\":\"%s\"}\n",
               path, w.size, bytes, best[0], best[1], mb / best[0], mb / best[1], mb / best[2], mb / best[3],
               best[2] / best[0], best[3] / best[1], med[2] / med[0], med[3] / med[1], reps,
               checkpoint_load_maps(file) ? "mapped" : "hdf5");
        unlink(file);
        unlink(plain);
        char latest[4400];
        snprintf(latest, sizeof latest, "%s/latest", dir);
        unlink(latest);
        rmdir(dir);
    }
    for (int k = 0; k < 4; k++) free(t[k]);
    free(buf);
    trainer_free(&tr);
    config_free(&c);
    comm_free(&w);
    return 0;
}
