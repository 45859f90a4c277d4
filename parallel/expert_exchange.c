/*
 * expert_exchange.c — the all-to-all dispatch and combine of expert rows within an expert-parallel
 * group, and the reductions over expert replicas (expert_exchange.h).
 *
 * The sender's rows are packed by expert (expert 0's, then expert 1's, ...) and a group position
 * holds consecutive experts, so the rows for each peer are already one contiguous range of the
 * packed buffer: the send side needs no copy. The receiver gets them grouped by source; one
 * permutation (built with the counts in the forward) regroups them by expert for the GEMMs, and its
 * inverse puts the results back in source order for the return trip. The rows are the backend's
 * memory: moved by be->alltoallv, regrouped by be->rows_expand (a gather of rows by index).
 */
#include "expert_exchange.h"

#include <string.h>

#include "shard.h"

static int imin_(int a, int b) { return a < b ? a : b; }

/* The permutations' device views of slot s, dropped (before they change or at the end). */
static void perm_views_drop_(Backend* be, ExpertSlot* s) {
    if (s->perm_d) backend_device_done(be, (void*)s->perm_d, s->perm, 0, 0);
    if (s->iperm_d) backend_device_done(be, (void*)s->iperm_d, s->iperm, 0, 0);
    s->perm_d = s->iperm_d = NULL;
}

/* Room for R rows received in slot s (the rows in backend memory). */
static void slot_reserve_(Backend* be, ExpertSlot* s, size_t R, size_t D) {
    if (R <= s->cap && s->xr) return;
    s->cap = R > 2 * s->cap ? R : 2 * s->cap;
    if (s->xr) be->free(be, s->xr), be->free(be, s->gr), be->free(be, s->stage);
    free(s->perm), free(s->iperm);
    s->xr = be->alloc(be, (s->cap + 1) * D * sizeof(float));
    s->gr = be->alloc(be, (s->cap + 1) * D * sizeof(float));
    s->stage = be->alloc(be, (s->cap + 1) * D * sizeof(float));
    s->perm = mallocCheck((s->cap + 1) * sizeof(int64_t));
    s->iperm = mallocCheck((s->cap + 1) * sizeof(int64_t));
}

/* The forward's counts: rows for each expert slot of each peer out (from the packed offsets), the
 * same from each peer in, and the permutation from source order to expert order. */
static void split_(ExpertExchange* x, ExpertSlot* s, const long* off) {
    const int EP = x->ep, epr = x->epr, E = x->E;
    for (int q = 0; q < EP; q++) {
        int lo = imin_(q * epr, E), hi = imin_((q + 1) * epr, E);
        for (int j = 0; j < epr; j++) s->sexp[q * epr + j] = lo + j < hi ? (int)(off[lo + j + 1] - off[lo + j]) : 0;
        s->sdispl[q] = (int)off[lo];
        s->scount[q] = (int)(off[hi] - off[lo]);
    }
    mpiCheck(MPI_Alltoall(s->sexp, epr, MPI_INT, s->rexp, epr, MPI_INT, x->group_comm));
    s->R = off[E];
    s->Rr = 0;
    for (int q = 0; q < EP; q++) {
        s->rcount[q] = 0;
        for (int j = 0; j < epr; j++) s->rcount[q] += s->rexp[q * epr + j];
        if (s->Rr + s->rcount[q] > INT32_MAX) engram_die("use more expert-parallel ranks or smaller batches", "expert rows overflow MPI counts");
        s->rdispl[q] = (int)s->Rr;
        s->Rr += s->rcount[q];
    }
    perm_views_drop_(x->be, s);
    slot_reserve_(x->be, s, (size_t)s->Rr, (size_t)x->D);
    // expert-major, then source rank, then the sender's order: row i of the expert-ordered buffer
    int64_t i = 0;
    int* seen = callocCheck(EP, sizeof(int));   // rows of source q placed so far (its earlier experts)
    for (int j = 0; j < epr; j++) {
        s->roff[j] = (long)i;
        for (int q = 0; q < EP; q++) {
            int n = s->rexp[q * epr + j];
            for (int r = 0; r < n; r++) s->perm[i++] = s->rdispl[q] + seen[q] + r;
            seen[q] += n;
        }
    }
    s->roff[epr] = (long)i;
    free(seen);
    for (int64_t j = 0; j < s->Rr; j++) s->iperm[s->perm[j]] = j;
    s->perm_d = backend_device_view(x->be, s->perm, (size_t)s->Rr * sizeof(int64_t), 1);
    s->iperm_d = backend_device_view(x->be, s->iperm, (size_t)s->Rr * sizeof(int64_t), 1);
    // the counts in bytes at the peers' ranks in the backend that moves the rows (group or world)
    const size_t row = (size_t)x->D * sizeof(float);
    for (int q = 0; q < EP; q++) {
        int wr = x->xbase + q;
        s->sbytes[wr] = (size_t)s->scount[q] * row, s->sboff[wr] = (size_t)s->sdispl[q] * row;
        s->rbytes[wr] = (size_t)s->rcount[q] * row, s->rboff[wr] = (size_t)s->rdispl[q] * row;
    }
    int64_t cbytes = (int64_t)(EP - 1) * epr * (int64_t)sizeof(int);
    x->st.bytes_sent += cbytes;
    x->st.bytes_recv += cbytes;
    x->st.dispatched += s->R;
    x->st.remote += s->R - s->scount[x->pos];
    x->st.served += s->Rr - s->rcount[x->pos];
}

/* Wire bytes of rows: out of this rank n_out rows (self excluded by the caller), in n_in. */
static void count_rows_(ExpertExchange* x, int64_t n_out, int64_t n_in) {
    x->st.bytes_sent += n_out * x->D * (int64_t)sizeof(float);
    x->st.bytes_recv += n_in * x->D * (int64_t)sizeof(float);
}

static float* dispatch_(void* ctx, int slot, int backward, const float* X, const long* off, long* roff) {
    ExpertExchange* x = ctx;
    ExpertSlot* s = &x->slot[slot];
    Backend* be = x->be;
    double t0 = engram_now();
    if (!backward) split_(x, s, off);
    x->xbe->alltoallv(x->xbe, X, s->sbytes, s->sboff, s->stage, s->rbytes, s->rboff);
    count_rows_(x, s->R - s->scount[x->pos], s->Rr - s->rcount[x->pos]);
    float* dst = backward ? s->gr : s->xr;
    be->rows_expand(be, dst, s->stage, s->perm_d, NULL, (size_t)s->Rr, x->D);   // source order → expert order
    memcpy(roff, s->roff, ((size_t)x->route.e_count + 1) * sizeof(long));
    x->st.seconds += engram_now() - t0;
    return dst;
}

static void combine_(void* ctx, int slot, const float* Yr, float* Y) {
    ExpertExchange* x = ctx;
    ExpertSlot* s = &x->slot[slot];
    Backend* be = x->be;
    double t0 = engram_now();
    be->rows_expand(be, s->stage, Yr, s->iperm_d, NULL, (size_t)s->Rr, x->D);   // expert order → source order
    // the dispatch's split reversed: what came from a peer goes back to it, into its packed order
    x->xbe->alltoallv(x->xbe, s->stage, s->rbytes, s->rboff, Y, s->sbytes, s->sboff);
    count_rows_(x, s->Rr - s->rcount[x->pos], s->R - s->scount[x->pos]);
    x->st.seconds += engram_now() - t0;
}

void expert_exchange_init(ExpertExchange* x, const Comm* world, Backend* be, int ep, int E, int D, int n_moe_layers) {
    memset(x, 0, sizeof *x);
    if (ep < 1 || world->size % ep != 0)
        engram_die("run on a multiple of parallel.expert_parallel ranks, or change it to divide the world size",
                   "parallel.expert_parallel = %d does not divide the %d ranks", ep, world->size);
    if (be->size != world->size || be->rank != world->rank)
        engram_die("this is a bug: open the backend over the trainer's ranks", "expert exchange: backend rank %d of %d, world rank %d of %d",
                   be->rank, be->size, world->rank, world->size);
    x->world = world;
    x->be = be;
    x->ep = ep, x->pos = world->rank % ep, x->group = world->rank / ep;
    x->E = E, x->D = D, x->epr = (int)shard_block_rows(E, ep);
    mpiCheck(MPI_Comm_split(world->comm, x->group, world->rank, &x->group_comm));
    mpiCheck(MPI_Comm_split(world->comm, x->pos, world->rank, &x->replica_comm));
    // rows move among the group only: an MPI_Alltoallv over the world would meet every rank
    x->gbe = be->group ? be->group(be, x->group, world->rank) : NULL;
    x->xbe = x->gbe ? x->gbe : be;
    x->xbase = x->gbe ? 0 : x->group * ep;
    mpiCheck(MPI_Type_contiguous(D, MPI_FLOAT, &x->row_t));
    mpiCheck(MPI_Type_commit(&x->row_t));
    int64_t first, count;
    shard_row_range(E, ep, x->pos, &first, &count);
    x->route = (MoeRoute){.ctx = x, .e_first = (int)first, .e_count = (int)count, .dispatch = dispatch_, .combine = combine_};
    x->n_slots = n_moe_layers;
    x->slot = callocCheck(n_moe_layers + 1, sizeof(ExpertSlot));
    for (int l = 0; l < n_moe_layers; l++) {
        ExpertSlot* s = &x->slot[l];
        s->scount = callocCheck(ep, sizeof(int)), s->sdispl = callocCheck(ep, sizeof(int));
        s->rcount = callocCheck(ep, sizeof(int)), s->rdispl = callocCheck(ep, sizeof(int));
        s->sexp = callocCheck((size_t)ep * x->epr, sizeof(int)), s->rexp = callocCheck((size_t)ep * x->epr, sizeof(int));
        s->roff = callocCheck((size_t)x->epr + 1, sizeof(long));
        const int xn = x->xbe->size;
        s->sbytes = callocCheck(xn, sizeof(size_t)), s->sboff = callocCheck(xn, sizeof(size_t));
        s->rbytes = callocCheck(xn, sizeof(size_t)), s->rboff = callocCheck(xn, sizeof(size_t));
    }
}

void expert_exchange_free(ExpertExchange* x) {
    for (int l = 0; l < x->n_slots; l++) {
        ExpertSlot* s = &x->slot[l];
        free(s->scount), free(s->sdispl), free(s->rcount), free(s->rdispl), free(s->sexp), free(s->rexp), free(s->roff);
        free(s->sbytes), free(s->sboff), free(s->rbytes), free(s->rboff);
        perm_views_drop_(x->be, s);
        if (s->xr) x->be->free(x->be, s->xr), x->be->free(x->be, s->gr), x->be->free(x->be, s->stage);
        free(s->perm), free(s->iperm);
    }
    free(x->slot);
    if (x->gbe) x->gbe->close(x->gbe), free(x->gbe);
    MPI_Type_free(&x->row_t);
    MPI_Comm_free(&x->group_comm);
    MPI_Comm_free(&x->replica_comm);
    memset(x, 0, sizeof *x);
}

void expert_exchange_reset(ExpertExchange* x) { memset(&x->st, 0, sizeof x->st); }

double expert_grad_sync(Backend* be, const ExpertExchange* x, const TensorTable* tt, float* grads) {
    double t0 = engram_now();
    if (x->world->size / x->ep > 1)
        for (int i = 0; i < tt->n; i++) {   // same position, same experts, same local_numel on every replica
            const TensorInfo* t = &tt->t[i];
            if (t->shard != SHARD_EXPERTS || t->local_numel == 0) continue;
            if (t->local_numel > INT32_MAX) engram_die("use more expert-parallel ranks", "%s too large for one all-reduce", t->name);
            size_t bytes = (size_t)t->local_numel * sizeof(float);
            float* h = backend_host_view(be, grads + t->offset, bytes, 1);
            mpiCheck(MPI_Allreduce(MPI_IN_PLACE, h, (int)t->local_numel, MPI_FLOAT, MPI_SUM, x->replica_comm));
            backend_host_done(be, h, grads + t->offset, bytes, 1);
        }
    return engram_now() - t0;
}

double expert_sumsq(Backend* be, const ExpertExchange* x, const TensorTable* tt, const float* grads) {
    double ss = 0.0;
    for (int i = 0; i < tt->n; i++)
        if (tt->t[i].shard == SHARD_EXPERTS) ss += be->sumsq(be, grads + tt->t[i].offset, (size_t)tt->t[i].local_numel);
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &ss, 1, MPI_DOUBLE, MPI_SUM, x->group_comm));
    return ss;
}

size_t expert_gather_dense(const ExpertExchange* x, const TensorTable* tt, const float* buf, float* out) {
    int ep = x ? x->ep : 1, me = x ? x->world->rank : 0;
    int* counts = callocCheck(ep, sizeof(int));
    int* displs = callocCheck(ep, sizeof(int));
    size_t off = 0;
    for (int i = 0; i < tt->n; i++) {
        const TensorInfo* t = &tt->t[i];
        if (t->group == OPT_TABLE) continue;
        if (t->shard != SHARD_EXPERTS || ep == 1) {
            if (me == 0 && out) memcpy(out + off, buf + t->offset, (size_t)t->numel * sizeof(float));
        } else if (me < ep) {   // the first group: positions in expert order
            int n = (int)t->local_numel;
            mpiCheck(MPI_Gather(&n, 1, MPI_INT, counts, 1, MPI_INT, 0, x->group_comm));
            for (int r = 0, d = 0; r < ep; r++) displs[r] = d, d += counts[r];
            mpiCheck(MPI_Gatherv(buf + t->offset, n, MPI_FLOAT, out ? out + off : NULL, counts, displs, MPI_FLOAT, 0,
                                 x->group_comm));
        }
        off += (size_t)t->numel;
    }
    free(counts), free(displs);
    return off;
}
