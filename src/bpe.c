/*
 * bpe.c — byte-level map, hash tables and the merge loop declared in bpe.h.
 *
 * The merge is Hugging Face's: a min-heap of candidate pairs keyed (rank, position); popping an
 * entry whose pair changed since it was pushed (its merged id no longer matches) skips it. This
 * gives the same result as GPT-2's "merge the lowest-ranked bigram everywhere, left to right"
 * loop, in O(n log n) instead of O(n²) for long pieces (runs of spaces or dashes).
 */
#include "bpe.h"

#include <string.h>

#include "common.h"

/* ---- byte-level map ---- */

static int printable_(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

uint32_t bpe_byte_to_cp(uint8_t b) {
    if (printable_(b)) return b;
    uint32_t k = 0;   // rank of b among the non-printable bytes
    for (int x = 0; x < b; x++) k += !printable_(x);
    return 256 + k;
}

int bpe_cp_to_byte(uint32_t cp) {
    static int16_t inv[BPE_BYTE_CP_LIMIT];
    static int ready = 0;
    if (!ready) {   // idempotent, so a race only repeats the same writes
        for (int i = 0; i < BPE_BYTE_CP_LIMIT; i++) inv[i] = -1;
        for (int b = 0; b < 256; b++) inv[bpe_byte_to_cp((uint8_t)b)] = (int16_t)b;
        ready = 1;
    }
    return cp < BPE_BYTE_CP_LIMIT ? inv[cp] : -1;
}

void bpe_byte_level_string(const uint8_t* s, size_t n, ByteBuf* out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = bpe_byte_to_cp(s[i]);
        char u[2];
        if (cp < 0x80) {
            u[0] = (char)cp;
            bytebuf_append(out, u, 1);
        } else {   // all code points are < 0x800: two UTF-8 bytes
            u[0] = (char)(0xC0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3F));
            bytebuf_append(out, u, 2);
        }
    }
}

/* ---- hashing ---- */

uint64_t bpe_hash_bytes(const void* p, size_t n) {
    const uint8_t* s = p;
    uint64_t h = 0x243F6A8885A308D3ULL ^ (n * 0x9E3779B97F4A7C15ULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 29;
        s += 8, n -= 8;
    }
    uint64_t w = 0;
    if (n) memcpy(&w, s, n);
    h = (h ^ w) * 0x94D049BB133111EBULL;
    h ^= h >> 32;
    return h ? h : 1;   // 0 marks empty slots
}

static size_t pow2_at_least_(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

/* ---- StrMap ---- */

void strmap_init(StrMap* m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least_(2 * expected + 1);
    m->hash = callocCheck(m->cap, sizeof *m->hash);
    m->off = mallocCheck(m->cap * sizeof *m->off);
    m->len = mallocCheck(m->cap * sizeof *m->len);
    m->val = mallocCheck(m->cap * sizeof *m->val);
}

void strmap_free(StrMap* m) {
    free(m->hash), free(m->off), free(m->len), free(m->val), free(m->keys);
    memset(m, 0, sizeof *m);
}

static size_t strmap_slot_(const StrMap* m, uint64_t h, const char* key, size_t n) {
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask)
        if (!m->hash[i] || (m->hash[i] == h && m->len[i] == n && !memcmp(m->keys + m->off[i], key, n))) return i;
}

static void strmap_grow_(StrMap* m) {
    StrMap g = *m;
    m->cap *= 2;
    m->hash = callocCheck(m->cap, sizeof *m->hash);
    m->off = mallocCheck(m->cap * sizeof *m->off);
    m->len = mallocCheck(m->cap * sizeof *m->len);
    m->val = mallocCheck(m->cap * sizeof *m->val);
    for (size_t i = 0; i < g.cap; i++) {
        if (!g.hash[i]) continue;
        size_t j = strmap_slot_(m, g.hash[i], g.keys + g.off[i], g.len[i]);
        m->hash[j] = g.hash[i], m->off[j] = g.off[i], m->len[j] = g.len[i], m->val[j] = g.val[i];
    }
    free(g.hash), free(g.off), free(g.len), free(g.val);
}

void strmap_put(StrMap* m, const char* key, size_t n, int32_t val) {
    if (2 * (m->n + 1) > m->cap) strmap_grow_(m);
    uint64_t h = bpe_hash_bytes(key, n);
    size_t i = strmap_slot_(m, h, key, n);
    if (!m->hash[i]) {
        if (m->keys_n + n > m->keys_cap) {
            m->keys_cap = pow2_at_least_(m->keys_n + n + 1);
            m->keys = reallocCheck(m->keys, m->keys_cap);
        }
        memcpy(m->keys + m->keys_n, key, n);
        m->hash[i] = h, m->off[i] = (uint32_t)m->keys_n, m->len[i] = (uint32_t)n;
        m->keys_n += n;
        m->n++;
    }
    m->val[i] = val;
}

int32_t strmap_get(const StrMap* m, const char* key, size_t n) {
    size_t i = strmap_slot_(m, bpe_hash_bytes(key, n), key, n);
    return m->hash[i] ? m->val[i] : -1;
}

/* ---- MergeMap ---- */

void mergemap_init(MergeMap* m, size_t expected) {
    m->cap = pow2_at_least_(2 * expected + 1);
    m->n = 0;
    m->key = mallocCheck(m->cap * sizeof *m->key);
    memset(m->key, 0xFF, m->cap * sizeof *m->key);
    m->rank = mallocCheck(m->cap * sizeof *m->rank);
    m->merged = mallocCheck(m->cap * sizeof *m->merged);
}

void mergemap_free(MergeMap* m) {
    free(m->key), free(m->rank), free(m->merged);
    memset(m, 0, sizeof *m);
}

void mergemap_put(MergeMap* m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    if (2 * (m->n + 1) > m->cap) engram_die("", "merge map sized for fewer merges than given");
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t mask = m->cap - 1, i = (size_t)((k * 0x9E3779B97F4A7C15ULL) >> 20) & mask;
    while (m->key[i] != UINT64_MAX && m->key[i] != k) i = (i + 1) & mask;
    if (m->key[i] == k) return;
    m->key[i] = k, m->rank[i] = rank, m->merged[i] = merged;
    m->n++;
}

/* ---- the merge ---- */

void bpe_scratch_free(BpeScratch* s) {
    free(s->id), free(s->prev), free(s->next), free(s->heap), free(s->heap_new);
    memset(s, 0, sizeof *s);
}

static void heap_push_(BpeScratch* s, uint64_t key, int32_t merged) {
    if (s->hn == s->hcap) {
        s->hcap = s->hcap ? 2 * s->hcap : 64;
        s->heap = reallocCheck(s->heap, s->hcap * sizeof *s->heap);
        s->heap_new = reallocCheck(s->heap_new, s->hcap * sizeof *s->heap_new);
    }
    size_t i = s->hn++;
    while (i > 0 && s->heap[(i - 1) / 2] > key) {
        s->heap[i] = s->heap[(i - 1) / 2], s->heap_new[i] = s->heap_new[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = key, s->heap_new[i] = merged;
}

static void heap_pop_(BpeScratch* s, uint64_t* key, int32_t* merged) {
    *key = s->heap[0], *merged = s->heap_new[0];
    uint64_t last = s->heap[--s->hn];
    int32_t last_new = s->heap_new[s->hn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->hn) break;
        if (c + 1 < s->hn && s->heap[c + 1] < s->heap[c]) c++;
        if (s->heap[c] >= last) break;
        s->heap[i] = s->heap[c], s->heap_new[i] = s->heap_new[c];
        i = c;
    }
    s->heap[i] = last, s->heap_new[i] = last_new;
}

/* Push the pair starting at live symbol p, if it is a merge. */
static void push_pair_(const MergeMap* mm, BpeScratch* s, int32_t p) {
    int32_t q = s->next[p];
    if (q < 0) return;
    long slot = mergemap_find(mm, s->id[p], s->id[q]);
    if (slot >= 0) heap_push_(s, (uint64_t)(uint32_t)mm->rank[slot] << 32 | (uint32_t)p, mm->merged[slot]);
}

void bpe_merge(const MergeMap* mm, const int32_t* sym, size_t n, BpeScratch* s, IdVec* out) {
    if (n == 0) return;
    if (n > s->cap) {
        s->cap = n;
        s->id = reallocCheck(s->id, n * sizeof *s->id);
        s->prev = reallocCheck(s->prev, n * sizeof *s->prev);
        s->next = reallocCheck(s->next, n * sizeof *s->next);
    }
    for (size_t i = 0; i < n; i++) {
        s->id[i] = sym[i];
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    s->hn = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair_(mm, s, (int32_t)i);
    while (s->hn > 0) {
        uint64_t key;
        int32_t merged;
        heap_pop_(s, &key, &merged);
        int32_t p = (int32_t)(key & 0xFFFFFFFFu), q = s->next[p];
        if (s->id[p] < 0 || q < 0) continue;   // p was absorbed, or is last
        long slot = mergemap_find(mm, s->id[p], s->id[q]);
        if (slot < 0 || mm->merged[slot] != merged) continue;   // stale entry
        s->id[p] = merged;   // in the forward pass q was p's right neighbour; now p holds both
        s->id[q] = -1;
        s->next[p] = s->next[q];
        if (s->next[p] >= 0) s->prev[s->next[p]] = p;
        if (s->prev[p] >= 0) push_pair_(mm, s, s->prev[p]);
        push_pair_(mm, s, p);
    }
    for (int32_t p = 0; p >= 0; p = s->next[p]) idvec_push(out, s->id[p]);
}

/* ---- PieceCache ---- */

void piececache_free(PieceCache* c) {
    free(c->hash), free(c->key_off), free(c->key_len), free(c->ids_off), free(c->ids_len);
    free(c->keys.v), free(c->ids.v);
    memset(c, 0, sizeof *c);
}

static size_t cache_slot_(const PieceCache* c, uint64_t h, const char* key, size_t n) {
    size_t mask = c->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask)
        if (!c->hash[i] || (c->hash[i] == h && c->key_len[i] == n && !memcmp(c->keys.v + c->key_off[i], key, n)))
            return i;
}

const int32_t* piececache_get(const PieceCache* c, uint64_t h, const char* key, size_t n, size_t* n_ids) {
    if (!c->cap) return NULL;
    size_t i = cache_slot_(c, h, key, n);
    if (!c->hash[i]) return NULL;
    *n_ids = c->ids_len[i];
    return c->ids.v + c->ids_off[i];
}

static void cache_alloc_(PieceCache* c, size_t cap) {
    c->cap = cap;
    c->hash = callocCheck(cap, sizeof *c->hash);
    c->key_off = mallocCheck(cap * sizeof *c->key_off);
    c->key_len = mallocCheck(cap * sizeof *c->key_len);
    c->ids_off = mallocCheck(cap * sizeof *c->ids_off);
    c->ids_len = mallocCheck(cap * sizeof *c->ids_len);
}

static void cache_grow_(PieceCache* c) {
    PieceCache old = *c;
    cache_alloc_(c, old.cap ? 2 * old.cap : 4096);
    for (size_t i = 0; i < old.cap; i++) {
        if (!old.hash[i]) continue;
        size_t j = cache_slot_(c, old.hash[i], old.keys.v + old.key_off[i], old.key_len[i]);
        c->hash[j] = old.hash[i], c->key_off[j] = old.key_off[i], c->key_len[j] = old.key_len[i];
        c->ids_off[j] = old.ids_off[i], c->ids_len[j] = old.ids_len[i];
    }
    free(old.hash), free(old.key_off), free(old.key_len), free(old.ids_off), free(old.ids_len);
}

void piececache_put(PieceCache* c, uint64_t h, const char* key, size_t n, const int32_t* ids, size_t n_ids) {
    // offsets are uint32: past 4 GiB of cached keys or ids, stop caching (results stay exact)
    if (c->keys.n + n >= UINT32_MAX || c->ids.n + n_ids >= UINT32_MAX) return;
    if (2 * (c->n + 1) > c->cap) cache_grow_(c);
    size_t i = cache_slot_(c, h, key, n);
    if (c->hash[i]) return;
    c->hash[i] = h;
    c->key_off[i] = (uint32_t)c->keys.n, c->key_len[i] = (uint32_t)n;
    c->ids_off[i] = (uint32_t)c->ids.n, c->ids_len[i] = (uint32_t)n_ids;
    bytebuf_append(&c->keys, key, n);
    for (size_t k = 0; k < n_ids; k++) idvec_push(&c->ids, ids[k]);
    c->n++;
}
