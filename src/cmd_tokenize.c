/*
 * cmd_tokenize.c — `engram tokenize`: text files → engram token shards (io/shards.h), or the ids
 * of one file on stdout (--print, for comparing with other tokenizers).
 *
 * Documents are the input files, in the order given. Each document is preceded by the
 * tokenizer's end-of-text token (llm.c's convention), so every shard starts at a separator and a
 * model sees where documents meet. The token stream is cut into blocks of --val-block tokens;
 * block c goes to validation when round((c+1)·F) > round(c·F), i.e. one block in every 1/F,
 * spread evenly through the corpus (F = 0.05: blocks 9, 29, 49, ...). Deterministic: the same
 * files and options give the same shards, byte for byte.
 *
 * Not here: the tokenizer (src/tokenizer.c), the shard format (io/shards.c).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "common.h"
#include "compress.h"
#include "shards.h"
#include "tokenizer.h"
#include "tokenizer_files.h"

static void usage_(FILE* f) {
    fprintf(f,
            "usage: engram tokenize --tokenizer PATH --out DIR [options] TEXT...\n"
            "       engram tokenize --tokenizer PATH --print FILE | --decode FILE | --dump-vocab\n"
            "       engram tokenize --tokenizer PATH --compression [--json]\n\n"
            "Encodes the TEXT files (UTF-8; one document each, in order, each preceded by the\n"
            "end-of-text token) into DIR/train_000000.bin ... and DIR/val_000000.bin ...\n"
            "(format: docs/data.md). Existing shards in DIR are never overwritten.\n\n"
            "  --tokenizer PATH    tokenizer.json, or GPT-2's encoder.json (vocab.bpe beside it), or a\n"
            "                      directory holding either\n"
            "  --out DIR           where the shards go (created if missing)\n"
            "  --val-fraction F    share of tokens for validation, 0 <= F < 1 (default 0.05)\n"
            "  --val-block N       tokens per train/val block (default 4096): one block in every 1/F\n"
            "                      goes to validation\n"
            "  --shard-tokens N    tokens per shard file at most (default 100000000)\n"
            "  --print FILE        print the ids of FILE (no end-of-text added), space-separated\n"
            "  --decode FILE       print the text of the ids in FILE (whitespace-separated; invalid\n"
            "                      UTF-8 becomes U+FFFD, as Hugging Face's decode)\n"
            "  --dump-vocab        print a JSON array: the decoded text of every id alone\n"
            "  --compression       print V, V' (the Engram compressed vocabulary), the reduction and\n"
            "                      the compressed pad id; with --json also the lookup table\n");
}

typedef struct {
    const char* dir;
    const char* kind;       // "train" | "val"
    ShardWriter w;
    int open, index;        // current file open?; next file number
    uint64_t tokens, shard_tokens;
} ShardSeq;

typedef struct {
    ShardSeq train, val;
    uint64_t pos;           // tokens seen so far
    uint64_t block;         // --val-block
    int64_t f_ppm;          // F in parts per million
    char** created;         // shards put in place so far (removed again on failure)
    int n_created;
} Splitter;

static Splitter* cleanup_;   // what to remove if the command fails half-way

static void fail_cleanup_(const char* msg) {
    if (cleanup_) {
        shards_writer_abort(&cleanup_->train.w);
        shards_writer_abort(&cleanup_->val.w);
        for (int i = 0; i < cleanup_->n_created; i++) unlink(cleanup_->created[i]);
    }
    engram_fail("%s", msg);
}

static void seq_close_(Splitter* sp, ShardSeq* q) {
    char err[512];
    if (!q->open) return;
    if (shards_writer_close(&q->w, err, sizeof err)) fail_cleanup_(err);
    q->open = 0;
    sp->created = reallocCheck(sp->created, (size_t)(sp->n_created + 1) * sizeof(char*));
    sp->created[sp->n_created++] = strdupCheck(q->w.path);
}

static void seq_append_(Splitter* sp, ShardSeq* q, const int32_t* ids, size_t n, uint32_t vocab) {
    char err[512], path[4096];
    while (n > 0) {
        if (q->open && q->w.n == q->shard_tokens) seq_close_(sp, q);
        if (!q->open) {
            snprintf(path, sizeof path, "%s/%s_%06d.bin", q->dir, q->kind, q->index++);
            if (shards_writer_open(&q->w, path, vocab, err, sizeof err)) fail_cleanup_(err);
            q->open = 1;
        }
        size_t room = (size_t)(q->shard_tokens - q->w.n), k = n < room ? n : room;
        if (shards_writer_append(&q->w, ids, k, err, sizeof err)) fail_cleanup_(err);
        q->tokens += k, ids += k, n -= k;
    }
}

static int block_is_val_(const Splitter* sp, uint64_t c) {
    int64_t f = sp->f_ppm;
    return ((int64_t)(c + 1) * f + 500000) / 1000000 > ((int64_t)c * f + 500000) / 1000000;
}

/* Route ids to train or val block by block. */
static void split_ids_(Splitter* sp, const int32_t* ids, size_t n, uint32_t vocab) {
    while (n > 0) {
        uint64_t c = sp->pos / sp->block, left = (c + 1) * sp->block - sp->pos;
        size_t k = n < left ? n : (size_t)left;
        seq_append_(sp, block_is_val_(sp, c) ? &sp->val : &sp->train, ids, k, vocab);
        sp->pos += k, ids += k, n -= k;
    }
}

/* Offset of the first invalid UTF-8 sequence in s, or -1. */
static long utf8_invalid_at_(const char* s, size_t n) {
    ByteBuf b = {0};
    tokenizer_utf8_lossy(s, n, &b);   // valid text comes back unchanged, byte for byte
    long at = -1;
    if (b.n != n || memcmp(b.v, s, n)) {
        at = 0;
        while ((size_t)at < n && s[at] == b.v[at]) at++;
        while (at > 0 && ((uint8_t)s[at] & 0xC0) == 0x80) at--;   // back to the sequence start
    }
    free(b.v);
    return at;
}

static char* read_text_(const char* path, size_t* n) {
    char msg[4400];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(msg, sizeof msg, "tokenize: %s is a directory; give text files", path);
        fail_cleanup_(msg);
    }
    char* text = engram_read_file(path, n);
    if (!text) {
        snprintf(msg, sizeof msg, "tokenize: cannot read %s (%s)", path, strerror(errno));
        fail_cleanup_(msg);
    }
    long bad = utf8_invalid_at_(text, *n);
    if (bad >= 0) {
        snprintf(msg, sizeof msg, "tokenize: %s: invalid UTF-8 at byte %ld; convert it first (e.g. iconv -f latin1 -t utf-8)",
                 path, bad);
        fail_cleanup_(msg);
    }
    return text;
}

static Tokenizer* load_(const char* path) {
    char err[1024];
    if (!path) engram_fail("tokenize: --tokenizer PATH is required; see engram tokenize --help");
    Tokenizer* tk = tokenizer_load(path, err, sizeof err);
    if (!tk) engram_fail("%s", err);
    return tk;
}

static int print_ids_(const Tokenizer* tk, const char* file) {
    size_t n;
    char* text = read_text_(file, &n);
    IdVec ids = {0};
    tokenizer_encode(tk, text, n, &ids);
    ByteBuf out = {0};
    char num[16];
    for (size_t i = 0; i < ids.n; i++) {
        int k = snprintf(num, sizeof num, i + 1 < ids.n ? "%d " : "%d\n", ids.v[i]);
        bytebuf_append(&out, num, (size_t)k);
    }
    fwrite(out.v, 1, out.n, stdout);
    free(out.v), free(ids.v), free(text);
    return fflush(stdout) ? 1 : 0;
}

static int decode_ids_(const Tokenizer* tk, const char* file) {
    size_t n;
    char* text = engram_read_file(file, &n);
    if (!text) engram_fail("tokenize: cannot read %s (%s)", file, strerror(errno));
    IdVec ids = {0};
    int64_t V = tokenizer_vocab_size(tk);
    for (char *p = text, *end; *p;) {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (!*p) break;
        long id = strtol(p, &end, 10);
        if (end == p || id < 0 || id >= V)
            engram_fail("tokenize: %s: byte %ld: expected an id in [0, %lld)", file, (long)(p - text), (long long)V);
        idvec_push(&ids, (int32_t)id);
        p = end;
    }
    ByteBuf bytes = {0}, out = {0};
    tokenizer_decode(tk, ids.v, ids.n, &bytes);
    tokenizer_utf8_lossy(bytes.v, bytes.n, &out);
    fwrite(out.v, 1, out.n, stdout);
    free(text), free(ids.v), free(bytes.v), free(out.v);
    return fflush(stdout) ? 1 : 0;
}

/* s[0..n) as a JSON string (control characters, NUL included, as \u00XX). */
static void json_string_(ByteBuf* out, const char* s, size_t n) {
    bytebuf_append(out, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        char esc[8];
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') esc[0] = '\\', esc[1] = (char)c, bytebuf_append(out, esc, 2);
        else if (c < 0x20) bytebuf_append(out, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", c));
        else bytebuf_append(out, s + i, 1);
    }
    bytebuf_append(out, "\"", 1);
}

static int dump_vocab_(const Tokenizer* tk) {
    ByteBuf bytes = {0}, text = {0}, json = {0};
    bytebuf_append(&json, "[", 1);
    for (int32_t id = 0; id < tokenizer_vocab_size(tk); id++) {
        bytes.n = text.n = 0;
        tokenizer_decode(tk, &id, 1, &bytes);
        tokenizer_utf8_lossy(bytes.v, bytes.n, &text);
        if (id) bytebuf_append(&json, ",", 1);
        json_string_(&json, text.v, text.n);
    }
    bytebuf_append(&json, "]\n", 2);
    fwrite(json.v, 1, json.n, stdout);
    free(json.v), free(bytes.v), free(text.v);
    return fflush(stdout) ? 1 : 0;
}

/* Refuse a DIR that already holds shards; create it if missing. */
/* V, V', reduction and pad ids (spec/ENGRAM.md §2); --json adds the lookup table. */
static int print_compression_(const Tokenizer* tk, int json) {
    Compression c;
    compress_build(&c, tk);
    int32_t pad = tokenizer_default_pad_id(tk);
    long long pad_c = pad >= 0 ? c.lookup[pad] : -1;
    double red = 1.0 - (double)c.Vc / (double)c.V;
    if (!json) {
        printf("tokenizer %s\nV %lld\nV' %lld\nreduction %.1f%%\npad id %d -> compressed %lld\n", tokenizer_path(tk),
               (long long)c.V, (long long)c.Vc, 100.0 * red, pad, pad_c);
    } else {
        printf("{\"tokenizer\":\"%s\",\"sha256\":\"%s\",\"V\":%lld,\"V_compressed\":%lld,\"reduction\":%.6f,"
               "\"pad_id\":%d,\"pad_id_compressed\":%lld,\"lookup\":[", tokenizer_path(tk), tokenizer_sha256(tk),
               (long long)c.V, (long long)c.Vc, red, pad, pad_c);
        for (int64_t i = 0; i < c.V; i++) printf("%s%d", i ? "," : "", c.lookup[i]);
        printf("]}\n");
    }
    compress_free(&c);
    return 0;
}

static void prepare_dir_(const char* dir) {
    struct stat st;
    if (stat(dir, &st) != 0 && mkdir(dir, 0777) != 0)
        engram_fail("tokenize: cannot create --out %s (%s)", dir, strerror(errno));
    DIR* d = opendir(dir);
    if (!d) engram_fail("tokenize: --out %s is not a directory I can read", dir);
    for (struct dirent* e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        int shard = (!strncmp(e->d_name, "train_", 6) || !strncmp(e->d_name, "val_", 4)) && len > 4 &&
                    !strcmp(e->d_name + len - 4, ".bin");
        if (shard) {
            char name[512];   // d_name dies with closedir
            snprintf(name, sizeof name, "%s", e->d_name);
            closedir(d);
            engram_fail("tokenize: %s/%s exists; engram never overwrites shards (remove them or choose another --out)",
                        dir, name);
        }
    }
    closedir(d);
}

static uint64_t parse_count_(const char* opt, const char* v) {
    char* end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || v[0] == '-' || x == 0) engram_fail("tokenize: %s must be a positive integer (got %s)", opt, v);
    return x;
}

static int write_shards_(const Tokenizer* tk, const char* dir, char** files, int n_files, double F, uint64_t block,
                         uint64_t shard_tokens) {
    prepare_dir_(dir);
    int64_t V = tokenizer_vocab_size(tk);
    if (V > UINT32_MAX) engram_fail("tokenize: vocab of %lld ids does not fit uint32 shards", (long long)V);
    int32_t eot = tokenizer_eot_id(tk);
    Splitter sp = {.train = {.dir = dir, .kind = "train", .shard_tokens = shard_tokens},
                   .val = {.dir = dir, .kind = "val", .shard_tokens = shard_tokens},
                   .block = block, .f_ppm = (int64_t)(F * 1e6 + 0.5)};
    cleanup_ = &sp;
    double t0 = engram_now();
    size_t bytes = 0;
    IdVec ids = {0};
    for (int i = 0; i < n_files; i++) {
        size_t n;
        char* text = read_text_(files[i], &n);
        ids.n = 0;
        if (eot >= 0) idvec_push(&ids, eot);
        tokenizer_encode(tk, text, n, &ids);
        split_ids_(&sp, ids.v, ids.n, (uint32_t)V);
        bytes += n;
        free(text);
    }
    seq_close_(&sp, &sp.train);
    seq_close_(&sp, &sp.val);
    cleanup_ = NULL;
    double dt = engram_now() - t0;
    printf("tokenize: %d file%s, %.2f MB -> %llu tokens (train %llu in %d shard%s, val %llu in %d shard%s) in %.2f s, "
           "%.1f MB/s, into %s\n",
           n_files, n_files == 1 ? "" : "s", bytes / 1e6, (unsigned long long)sp.pos,
           (unsigned long long)sp.train.tokens, sp.train.index, sp.train.index == 1 ? "" : "s",
           (unsigned long long)sp.val.tokens, sp.val.index, sp.val.index == 1 ? "" : "s", dt, bytes / 1e6 / dt, dir);
    if (eot < 0) fprintf(stderr, "engram: note: %s has no end-of-text token; documents are not separated\n", tokenizer_path(tk));
    if (F > 0 && sp.val.tokens == 0)
        fprintf(stderr, "engram: warning: no validation tokens: %llu tokens make fewer blocks of %llu than one in 1/F; "
                "lower --val-block\n", (unsigned long long)sp.pos, (unsigned long long)block);
    for (int i = 0; i < sp.n_created; i++) free(sp.created[i]);
    free(sp.created), free(ids.v);
    return 0;
}

int cmd_tokenize(int argc, char** argv) {
    const char *tok = NULL, *out = NULL, *print = NULL, *decode = NULL, *v;
    int dump = 0, compression = 0, json = 0;
    double F = 0.05;
    uint64_t block = 4096, shard_tokens = 100000000;
    char** files = callocCheck((size_t)argc, sizeof(char*));
    int n_files = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { usage_(stdout); free(files); return 0; }
        if ((v = cli_option(argc, argv, &i, "--tokenizer"))) tok = v;
        else if ((v = cli_option(argc, argv, &i, "--out"))) out = v;
        else if ((v = cli_option(argc, argv, &i, "--print"))) print = v;
        else if ((v = cli_option(argc, argv, &i, "--decode"))) decode = v;
        else if (!strcmp(argv[i], "--dump-vocab")) dump = 1;
        else if (!strcmp(argv[i], "--compression")) compression = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if ((v = cli_option(argc, argv, &i, "--val-block"))) block = parse_count_("--val-block", v);
        else if ((v = cli_option(argc, argv, &i, "--shard-tokens"))) shard_tokens = parse_count_("--shard-tokens", v);
        else if ((v = cli_option(argc, argv, &i, "--val-fraction"))) {
            char* end;
            F = strtod(v, &end);
            if (*end || !(F >= 0 && F < 1)) engram_fail("tokenize: --val-fraction must be in [0, 1) (got %s)", v);
        } else if (argv[i][0] == '-' && argv[i][1]) engram_fail("tokenize: unknown option %s; see engram tokenize --help", argv[i]);
        else files[n_files++] = argv[i];
    }
    int modes = !!print + !!decode + dump + compression;
    if (!modes && (!out || n_files == 0)) {
        usage_(stderr);
        free(files);
        return ENGRAM_EXIT_USAGE;
    }
    if (modes > 1 || (modes && (out || n_files > 0)))
        engram_fail("tokenize: --print, --decode, --dump-vocab and --compression go alone (no --out, no TEXT files)");
    if (json && !compression) engram_fail("tokenize: --json goes with --compression");
    Tokenizer* tk = load_(tok);
    int rc = print ? print_ids_(tk, print)
             : decode ? decode_ids_(tk, decode)
             : dump ? dump_vocab_(tk)
             : compression ? print_compression_(tk, json)
             : write_shards_(tk, out, files, n_files, F, block, shard_tokens);
    tokenizer_free(tk);
    free(files);
    return rc;
}
