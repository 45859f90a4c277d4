/*
 * sharded_hash_equals_single_rank.c — run under mpirun at P = 1..4. The global batch is split as
 * ARCHITECTURE.md §4 says (the first B mod P ranks take one more sequence); each rank hashes only
 * its own sequences; rank 0 gathers them and compares with hashing the whole batch on one rank.
 * Also checks that the row blocks of every rank tile each layer's table exactly, and that each
 * row's owner is the rank whose block holds it.
 */
#include <stdio.h>
#include <string.h>

#include "comm.h"
#include "ngram_hash.h"
#include "shard.h"

int main(int argc, char** argv) {
    Comm w;
    comm_init(&w, &argc, &argv);
    const int B = 7, T = 13;   // 7 divides by none of 2, 3, 4
    const int layers[] = {3, 1};
    const int64_t bases[] = {1009, 1013};
    NgramHash nh;
    ngram_hash_init(&nh, layers, 2, 3, 2, bases, 1000, 0, 42, FLAVOUR_DEEPSEEK);
    int HT = nh.h_total;
    int64_t ids[7 * 13];
    uint64_t s = 12345;
    for (int i = 0; i < B * T; i++) { s = s * 6364136223846793005ULL + 1442695040888963407ULL; ids[i] = (int64_t)((s >> 33) % 1000); }

    int first, count, fails = 0;
    shard_batch_range(B, w.size, w.rank, &first, &count);
    int* counts = callocCheck(w.size, sizeof(int));
    int* displs = callocCheck(w.size, sizeof(int));
    for (int r = 0; r < w.size; r++) {
        int f, c;
        shard_batch_range(B, w.size, r, &f, &c);
        counts[r] = c * T * HT;
        displs[r] = f * T * HT;
    }
    int64_t* mine = mallocCheck(((size_t)count * T * HT + 1) * sizeof(int64_t));
    int64_t* gathered = mallocCheck((size_t)B * T * HT * sizeof(int64_t));
    int64_t* whole = mallocCheck((size_t)B * T * HT * sizeof(int64_t));
    for (int li = 0; li < nh.n_layers; li++) {
        ngram_hash_ids(&nh, li, ids + (size_t)first * T, count, T, 1, mine);
        mpiCheck(MPI_Gatherv(mine, counts[w.rank], MPI_INT64_T, gathered, counts, displs, MPI_INT64_T, 0, w.comm));
        if (w.rank == 0) {
            ngram_hash_ids(&nh, li, ids, B, T, 1, whole);
            if (memcmp(whole, gathered, (size_t)B * T * HT * sizeof(int64_t)) != 0) {
                printf("FAIL P=%d layer %d: sharded hash ids differ from single-rank\n", w.size, nh.layer_ids[li]);
                fails++;
            }
        }
        /* row blocks tile [0, rows): contiguous, in rank order, owner agrees */
        int64_t next = 0;
        for (int r = 0; r < w.size; r++) {
            int64_t lo, n;
            shard_row_range(nh.rows[li], w.size, r, &lo, &n);
            if (lo != next) { printf("FAIL P=%d: rank %d block starts at %lld, expected %lld\n", w.size, r, (long long)lo, (long long)next); fails++; }
            for (int64_t row = lo; row < lo + n; row += (n > 50 ? n / 50 : 1))
                if (shard_row_owner(row, nh.rows[li], w.size) != r) { printf("FAIL: row %lld owner\n", (long long)row); fails++; break; }
            if (n > 0 && shard_row_owner(lo + n - 1, nh.rows[li], w.size) != r) { printf("FAIL: last row owner\n"); fails++; }
            next = lo + n;
        }
        if (next != nh.rows[li]) { printf("FAIL P=%d: blocks cover %lld of %lld rows\n", w.size, (long long)next, (long long)nh.rows[li]); fails++; }
    }
    int total = 0;
    mpiCheck(MPI_Allreduce(&fails, &total, 1, MPI_INT, MPI_SUM, w.comm));
    printf0(&w, "P=%d: sharded hashing %s\n", w.size, total ? "FAILED" : "equals single-rank");
    free(mine); free(gathered); free(whole); free(counts); free(displs);
    ngram_hash_free(&nh);
    comm_free(&w);
    return total ? 1 : 0;
}
