/*
 * cmd_hash.c — `engram hash`: which Engram table rows an input maps to, per layer, order and head,
 * and (with --world-size P) which rank owns each row. A tool for checking the hashing against the
 * reference and for looking at collisions; it shares every line of hashing with training.
 */
#include <cjson/cJSON.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "compress.h"
#include "ngram_hash.h"
#include "shard.h"

static void usage_(FILE* f) {
    fprintf(f,
            "usage: engram hash CONFIG [key=value ...] (--text STR | --ids=1,2,3[;4,5,6]) [--json]\n"
            "                   [--world-size P]\n\n"
            "--ids   already-compressed token ids; ';' separates batch rows of equal length;\n"
            "        negative ids are allowed (write --ids=-1,5 so -1 is not read as an option).\n"
            "        V' and the pad id come from engram.compressed_vocab_size and\n"
            "        engram.pad_id_compressed (config or overrides).\n"
            "--text  text through the config's tokenizer (data.tokenizer) and its compression;\n"
            "        V' and the pad id then come from the tokenizer.\n"
            "--json  {\"layers\":[{\"layer_id\",\"multipliers\",\"table_sizes\",\"offsets\",\n"
            "        \"local_ids\",\"global_ids\"}]} with ids shaped [B][T][H_total].\n"
            "--world-size P  also show each row's owner rank when tables are split over P ranks.\n");
}

/* "1,2,3;4,5,6" → ids [B,T]; rows must have equal length. */
static int64_t* parse_ids_(const char* s, int* B, int* T) {
    int cap = 16, n = 0, rows = 1, row_len = 0, width = -1;
    int64_t* ids = mallocCheck(cap * sizeof(int64_t));
    const char* p = s;
    for (;;) {
        char* end;
        long long v = strtoll(p, &end, 10);
        if (end == p) engram_fail("hash: --ids: expected an integer at '%s' (got %s)", p, s);
        if (n == cap) ids = reallocCheck(ids, (cap *= 2) * sizeof(int64_t));
        ids[n++] = v;
        row_len++;
        p = end;
        if (*p == ',') { p++; continue; }
        if (*p == ';' || *p == '\0') {
            if (width >= 0 && row_len != width)
                engram_fail("hash: --ids: batch rows must have equal length (row 0 has %d ids, row %d has %d)",
                            width, rows - 1, row_len);
            width = row_len;
            row_len = 0;
            if (*p == '\0') break;
            p++;
            rows++;
            continue;
        }
        engram_fail("hash: --ids: unexpected '%c'; use commas between ids and ';' between rows (got %s)", *p, s);
    }
    *B = rows;
    *T = width;
    return ids;
}

/* Text → tokenizer ids → compressed ids [1,T]; sets V' and the pad from the tokenizer. */
static int64_t* text_ids_(Config* c, const char* path, const char* text, int* T) {
    if (!c->data.tokenizer[0]) engram_fail("%s: data.tokenizer: needed with --text (got \"\"); set it or use --ids", path);
    char err[1024];
    Tokenizer* tk = tokenizer_load(c->data.tokenizer, err, sizeof err);
    if (!tk) engram_fail("%s", err);
    Compression comp;
    if (compress_for_config(&comp, c, tk, err, sizeof err)) engram_fail("%s", err);
    IdVec v = {0};
    tokenizer_encode(tk, text, strlen(text), &v);
    if (v.n == 0) engram_fail("hash: --text gives no tokens (got \"%s\")", text);
    int64_t* ids = mallocCheck(v.n * sizeof(int64_t));
    compress_apply(&comp, v.v, v.n, ids);
    *T = (int)v.n;
    free(v.v);
    compress_free(&comp);
    tokenizer_free(tk);
    return ids;
}

static cJSON* i64_array_(const int64_t* v, int n) {
    cJSON* a = cJSON_CreateArray();
    char buf[32];
    for (int i = 0; i < n; i++) {
        /* raw text: cJSON numbers are doubles and would round ids above 2^53 */
        snprintf(buf, sizeof buf, "%lld", (long long)v[i]);
        cJSON_AddItemToArray(a, cJSON_CreateRaw(buf));
    }
    return a;
}

static cJSON* ids_json_(const int64_t* out, int B, int T, int HT) {
    cJSON* bs = cJSON_CreateArray();
    for (int b = 0; b < B; b++) {
        cJSON* ts = cJSON_CreateArray();
        for (int t = 0; t < T; t++) cJSON_AddItemToArray(ts, i64_array_(out + ((size_t)b * T + t) * HT, HT));
        cJSON_AddItemToArray(bs, ts);
    }
    return bs;
}

static void print_human_(const NgramHash* nh, int li, const int64_t* ids, const int64_t* glob, int B, int T,
                         int world) {
    int HT = nh->h_total, H = nh->heads, N = nh->max_ngram;
    printf("layer %d  multipliers [", nh->layer_ids[li]);
    for (int k = 0; k < N; k++) printf("%s%lld", k ? ", " : "", (long long)nh->multipliers[li * N + k]);
    printf("]  rows %lld\n", (long long)nh->rows[li]);
    for (int n = 2; n <= N; n++) {
        printf("  %d-gram table sizes [", n);
        for (int h = 0; h < H; h++) printf("%s%lld", h ? ", " : "", (long long)nh->table_sizes[li * HT + (n - 2) * H + h]);
        printf("]\n");
    }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            printf("  b%d t%-3d id %-8lld", b, t, (long long)ids[b * T + t]);
            for (int n = 2; n <= N; n++) {
                printf(" | %d-gram rows", n);
                for (int h = 0; h < H; h++) {
                    int64_t row = glob[((size_t)b * T + t) * HT + (n - 2) * H + h];
                    if (world > 0) printf(" %lld@r%d", (long long)row, shard_row_owner(row, nh->rows[li], world));
                    else printf(" %lld", (long long)row);
                }
            }
            printf("\n");
        }
}

int cmd_hash(int argc, char** argv) {
    const char *path = NULL, *ids_arg = NULL, *text = NULL, *v;
    int json = 0, world = 0;
    char** over = callocCheck(argc, sizeof(char*));
    int n_over = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { usage_(stdout); free(over); return 0; }
        if (!strcmp(argv[i], "--json")) json = 1;
        else if ((v = cli_option(argc, argv, &i, "--ids"))) ids_arg = v;
        else if ((v = cli_option(argc, argv, &i, "--text"))) text = v;
        else if ((v = cli_option(argc, argv, &i, "--world-size"))) {
            char* end;
            world = (int)strtol(v, &end, 10);
            if (*end || world < 1) engram_fail("hash: --world-size must be a positive integer (got %s)", v);
        } else if (argv[i][0] == '-' && argv[i][1] == '-') engram_fail("hash: unknown option %s; see engram hash --help", argv[i]);
        else if (strchr(argv[i], '=')) over[n_over++] = argv[i];
        else if (!path) path = argv[i];
        else engram_fail("hash: one CONFIG file only (got %s and %s)", path, argv[i]);
    }
    if (!path) { usage_(stderr); free(over); return ENGRAM_EXIT_USAGE; }
    if (!!ids_arg == !!text) engram_fail("hash: give exactly one of --ids=LIST or --text STR");
    Config c;
    cli_load_config(&c, path, n_over, over);
    free(over);
    if (c.engram.layers.n == 0) engram_fail("%s: engram.layers is empty: nothing to hash (set e.g. engram.layers=[1])", path);
    int B, T;
    int64_t* ids = text ? text_ids_(&c, path, text, &T) : parse_ids_(ids_arg, &B, &T);
    if (text) B = 1;
    if (c.engram.compressed_vocab_size <= 0)
        engram_fail("%s: engram.compressed_vocab_size: needed with --ids (got %lld); set it, e.g. engram.compressed_vocab_size=32962",
                    path, (long long)c.engram.compressed_vocab_size);
    if (c.engram.pad_id_compressed < 0)
        engram_fail("%s: engram.pad_id_compressed: needed with --ids (got %lld); set it, e.g. engram.pad_id_compressed=0",
                    path, (long long)c.engram.pad_id_compressed);
    NgramHash nh;
    ngram_hash_init(&nh, c.engram.layers.v, c.engram.layers.n, c.engram.max_ngram, c.engram.heads_per_ngram,
                    c.engram.vocab_bases.v, c.engram.compressed_vocab_size, c.engram.pad_id_compressed,
                    (uint64_t)c.engram.seed, (EngramFlavour)c.engram.flavour);
    int HT = nh.h_total;
    int64_t* loc = mallocCheck((size_t)B * T * HT * sizeof(int64_t));
    int64_t* glob = mallocCheck((size_t)B * T * HT * sizeof(int64_t));
    cJSON* root = cJSON_CreateObject();
    cJSON* layers = cJSON_AddArrayToObject(root, "layers");
    for (int li = 0; li < nh.n_layers; li++) {
        ngram_hash_ids(&nh, li, ids, B, T, 0, loc);
        ngram_hash_ids(&nh, li, ids, B, T, 1, glob);
        if (!json) { print_human_(&nh, li, ids, glob, B, T, world); continue; }
        cJSON* L = cJSON_CreateObject();
        cJSON_AddNumberToObject(L, "layer_id", nh.layer_ids[li]);
        cJSON_AddItemToObject(L, "multipliers", i64_array_(nh.multipliers + (size_t)li * nh.max_ngram, nh.max_ngram));
        cJSON_AddItemToObject(L, "table_sizes", i64_array_(nh.table_sizes + (size_t)li * HT, HT));
        cJSON_AddItemToObject(L, "offsets", i64_array_(nh.offsets + (size_t)li * HT, HT));
        cJSON_AddItemToObject(L, "rows", i64_array_(nh.rows + li, 1));
        cJSON_AddItemToObject(L, "local_ids", ids_json_(loc, B, T, HT));
        cJSON_AddItemToObject(L, "global_ids", ids_json_(glob, B, T, HT));
        if (world > 0) {
            int64_t* own = mallocCheck((size_t)B * T * HT * sizeof(int64_t));
            for (size_t i = 0; i < (size_t)B * T * HT; i++) own[i] = shard_row_owner(glob[i], nh.rows[li], world);
            cJSON_AddItemToObject(L, "owners", ids_json_(own, B, T, HT));
            free(own);
        }
        cJSON_AddItemToArray(layers, L);
    }
    if (json) {
        char* s = cJSON_PrintUnformatted(root);
        puts(s);
        free(s);
    }
    cJSON_Delete(root);
    free(loc);
    free(glob);
    free(ids);
    ngram_hash_free(&nh);
    config_free(&c);
    return 0;
}
