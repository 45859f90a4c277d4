/*
 * shards.c — token shard reading and writing (format in shards.h). Reading is one fread of the
 * whole file followed by checks; little-endian is assumed of the host (x86-64, aarch64) and
 * checked once at run time.
 */
#include "shards.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

static void check_little_endian_(void) {
    uint32_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    if (b != 1) engram_die("shards are little-endian; this host is not", "big-endian hosts are not supported");
}

static uint32_t u32_(const uint8_t* p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t u64_(const uint8_t* p) { return (uint64_t)u32_(p) | (uint64_t)u32_(p + 4) << 32; }

/* Body of n tokens of width bytes each at off, the file being size bytes. */
static int check_size_(const char* path, uint64_t size, uint64_t off, uint64_t n, int width, char* err, size_t errlen) {
    if (n > (size - off) / (uint64_t)width && size >= off)
        return engram_errf(err, errlen, "%s: truncated: header says %llu tokens (%llu bytes) but the file has %llu bytes", path,
                     (unsigned long long)n, (unsigned long long)(off + n * (uint64_t)width), (unsigned long long)size);
    if (off + n * (uint64_t)width != size)
        return engram_errf(err, errlen, "%s: %llu bytes after the %llu tokens the header announces (corrupt or not a shard)",
                     path, (unsigned long long)(size - off - n * (uint64_t)width), (unsigned long long)n);
    return 0;
}

static int read_body_(FILE* f, const char* path, TokenShard* s, int width, char* err, size_t errlen) {
    s->ids = mallocCheck(s->n * sizeof(int32_t));
    if (width == 4) {
        if (fread(s->ids, 4, s->n, f) != s->n) return engram_errf(err, errlen, "%s: read error", path);
        return 0;
    }
    uint16_t buf[4096];
    for (size_t i = 0; i < s->n;) {
        size_t k = s->n - i < 4096 ? s->n - i : 4096;
        if (fread(buf, 2, k, f) != k) return engram_errf(err, errlen, "%s: read error", path);
        for (size_t j = 0; j < k; j++) s->ids[i + j] = buf[j];
        i += k;
    }
    return 0;
}

static int read_header_(FILE* f, const char* path, uint64_t size, int64_t vocab, TokenShard* s, int* width,
                        uint64_t* off, char* err, size_t errlen) {
    uint8_t h[SHARD_LLMC_HEADER_INTS * 4];
    size_t got = fread(h, 1, sizeof h < size ? sizeof h : size, f);
    if (got >= SHARD_HEADER_BYTES && !memcmp(h, SHARD_MAGIC, 8)) {
        uint32_t version = u32_(h + 8), V = u32_(h + 12);
        if (version != SHARD_VERSION)
            return engram_errf(err, errlen, "%s: engram shard version %u; this engram reads version %d (upgrade engram)", path,
                         version, SHARD_VERSION);
        if (V == 0 || V > INT32_MAX) return engram_errf(err, errlen, "%s: vocab size %u in the header is invalid", path, V);
        if (vocab > 0 && V > vocab)
            return engram_errf(err, errlen, "%s: shard vocab size %u exceeds the model's %lld (another tokenizer?)", path, V,
                         (long long)vocab);
        s->format = SHARD_ENGRAM, s->n = u64_(h + 16), s->vocab = vocab > 0 ? vocab : V;
        *width = 4, *off = SHARD_HEADER_BYTES;
        return 0;
    }
    if (got >= sizeof h && u32_(h) == SHARD_LLMC_MAGIC) {
        uint32_t version = u32_(h + 4);
        if (version != 1 && version != 2)
            return engram_errf(err, errlen, "%s: llm.c shard version %u; known are 1 (uint16 tokens) and 2 (uint32)", path,
                         version);
        s->format = version == 1 ? SHARD_LLMC_U16 : SHARD_LLMC_U32, s->n = u32_(h + 8);
        s->vocab = vocab > 0 ? vocab : (int64_t)INT32_MAX + 1;
        *width = version == 1 ? 2 : 4, *off = sizeof h;
        return 0;
    }
    if (got < SHARD_HEADER_BYTES) return engram_errf(err, errlen, "%s: truncated: %llu bytes, shorter than a shard header", path, (unsigned long long)size);
    return engram_errf(err, errlen, "%s: not a token shard (magic is neither \"%s\" nor llm.c's %d)", path, SHARD_MAGIC,
                 SHARD_LLMC_MAGIC);
}

int shards_read(const char* path, int64_t vocab, TokenShard* s, char* err, size_t errlen) {
    check_little_endian_();
    memset(s, 0, sizeof *s);
    FILE* f = fopen(path, "rb");
    if (!f) return engram_errf(err, errlen, "%s: cannot open shard (%s)", path, strerror(errno));
    struct stat st;
    int width = 4;
    uint64_t off = 0;
    int rc = fstat(fileno(f), &st) ? engram_errf(err, errlen, "%s: cannot stat", path) : 0;
    if (!rc) rc = read_header_(f, path, (uint64_t)st.st_size, vocab, s, &width, &off, err, errlen);
    if (!rc) rc = check_size_(path, (uint64_t)st.st_size, off, s->n, width, err, errlen);
    if (!rc && fseek(f, (long)off, SEEK_SET)) rc = engram_errf(err, errlen, "%s: seek failed", path);
    if (!rc) rc = read_body_(f, path, s, width, err, errlen);
    fclose(f);
    for (size_t i = 0; !rc && i < s->n; i++) {
        uint32_t id = (uint32_t)s->ids[i];   // uint32 on disk: ≥ 2^31 reads as negative here
        if ((int64_t)id >= s->vocab)
            rc = engram_errf(err, errlen, "%s: token %zu is %u, not below the vocab size %lld", path, i, id, (long long)s->vocab);
    }
    if (rc) shards_free(s);
    return rc;
}

void shards_free(TokenShard* s) {
    free(s->ids);
    memset(s, 0, sizeof *s);
}

static void put_u32_(uint8_t* p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void put_u64_(uint8_t* p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }

static int write_header_(ShardWriter* w) {
    uint8_t h[SHARD_HEADER_BYTES];
    memcpy(h, SHARD_MAGIC, 8);
    put_u32_(h + 8, SHARD_VERSION);
    put_u32_(h + 12, w->vocab);
    put_u64_(h + 16, w->n);
    return fseek(w->f, 0, SEEK_SET) == 0 && fwrite(h, 1, sizeof h, w->f) == sizeof h ? 0 : -1;
}

int shards_writer_open(ShardWriter* w, const char* path, uint32_t vocab, char* err, size_t errlen) {
    check_little_endian_();
    memset(w, 0, sizeof *w);
    struct stat st;
    if (stat(path, &st) == 0) return engram_errf(err, errlen, "%s exists; engram never overwrites shards (remove it or choose another --out)", path);
    snprintf(w->path, sizeof w->path, "%s", path);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp", path);
    w->vocab = vocab;
    w->f = fopen(w->tmp, "wb");
    if (!w->f) return engram_errf(err, errlen, "%s: cannot create (%s)", w->tmp, strerror(errno));
    if (write_header_(w)) { shards_writer_abort(w); return engram_errf(err, errlen, "%s: write error", w->tmp); }
    return 0;
}

int shards_writer_append(ShardWriter* w, const int32_t* ids, size_t n, char* err, size_t errlen) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= w->vocab)
            return engram_errf(err, errlen, "%s: token %d is outside the vocab [0, %u)", w->path, ids[i], w->vocab);
    if (fwrite(ids, 4, n, w->f) != n) return engram_errf(err, errlen, "%s: write error (%s)", w->tmp, strerror(errno));
    w->n += n;
    return 0;
}

int shards_writer_close(ShardWriter* w, char* err, size_t errlen) {
    int bad = write_header_(w) || fflush(w->f) || fsync(fileno(w->f));
    bad |= fclose(w->f) != 0;
    w->f = NULL;
    if (bad) { unlink(w->tmp); return engram_errf(err, errlen, "%s: write error", w->tmp); }
    if (link(w->tmp, w->path) != 0) {
        int e = errno;
        unlink(w->tmp);
        return engram_errf(err, errlen, "%s: cannot put in place (%s)%s", w->path, strerror(e),
                     e == EEXIST ? "; engram never overwrites shards" : "");
    }
    unlink(w->tmp);
    return 0;
}

void shards_writer_abort(ShardWriter* w) {
    if (w->f) fclose(w->f);
    w->f = NULL;
    if (w->tmp[0]) unlink(w->tmp);
}
