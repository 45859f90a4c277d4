/*
 * replay_main.c — main for the fuzz targets in the normal build: feed every file named (or in a
 * directory named) to LLVMFuzzerTestOneInput once. The unit tests run it over tests/data/fuzz/<target>/,
 * the inputs that once crashed, so those stay fixed without clang or libFuzzer.
 *
 * Not here: fuzzing itself (ENGRAM_FUZZ links libFuzzer's main instead; see docs/fuzzing.md).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int replay_file_(const char* path) {
    FILE* f = fopen(path, "rb");
    if (!f) { perror(path); return -1; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t* buf = malloc(n > 0 ? (size_t)n : 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) { fprintf(stderr, "%s: read error\n", path); free(buf); return -1; }
    LLVMFuzzerTestOneInput(buf, got);   // a crash ends the test; returning is passing
    free(buf);
    return 0;
}

static int by_name_(const void* a, const void* b) { return strcmp(*(char* const*)a, *(char* const*)b); }

int main(int argc, char** argv) {
    int count = 0, bad = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) { perror(argv[i]); return 1; }
        if (!S_ISDIR(st.st_mode)) { bad |= replay_file_(argv[i]); count++; continue; }
        DIR* d = opendir(argv[i]);
        struct dirent* e;
        char** names = NULL;
        size_t n = 0;
        while (d && (e = readdir(d)))
            if (e->d_name[0] != '.') { names = realloc(names, (n + 1) * sizeof *names); names[n++] = strdup(e->d_name); }
        if (d) closedir(d);
        qsort(names, n, sizeof *names, by_name_);   // a fixed order, so a failure names the same file each time
        for (size_t j = 0; j < n; j++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], names[j]);
            printf("%s\n", path);
            fflush(stdout);
            bad |= replay_file_(path);
            count++;
            free(names[j]);
        }
        free(names);
    }
    printf("replayed %d input%s\n", count, count == 1 ? "" : "s");
    return bad ? 1 : 0;
}
