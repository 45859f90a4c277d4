/*
 * fuzz_config.c — libFuzzer target for the config reader: YAML text, then NUL-separated `key=value`
 * overrides, through config_load_string. A config that loads must also print and load again to the
 * same text (what run directories and checkpoints rely on).
 */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    size_t n0, nrest;
    const uint8_t* rest;
    fuzz_split(data, size, &n0, &rest, &nrest);
    char* text = mallocCheck(n0 + 1);
    memcpy(text, data, n0);
    text[n0] = '\0';
    // overrides: the rest, split at NULs (at most 8)
    char* over = mallocCheck(nrest + 1);
    if (nrest) memcpy(over, rest, nrest);
    over[nrest] = '\0';
    char* ov[8];
    int n_ov = 0;
    for (size_t i = 0; rest && i <= nrest && n_ov < 8;) {
        ov[n_ov++] = over + i;
        i += strlen(over + i) + 1;
    }
    Config c;
    char err[2048];
    if (config_load_string(&c, text, "fuzz.yaml", n_ov, ov, err, sizeof err) == 0) {
        char* a = config_to_string(&c);
        Config d;
        if (config_load_string(&d, a, "fuzz.yaml:resolved", 0, NULL, err, sizeof err) != 0) {
            fprintf(stderr, "a loaded config does not load again: %s\n--- text\n%s\n", err, a);
            abort();
        }
        char* b = config_to_string(&d);
        if (strcmp(a, b)) {
            fprintf(stderr, "a config printed and loaded again prints differently:\n--- first\n%s\n--- second\n%s\n", a, b);
            abort();
        }
        free(a), free(b);
        config_free(&d);
    }
    config_free(&c);
    free(text), free(over);
    return 0;
}
