/*
 * plugins/flat/flat.c - the exact (brute-force) index.
 *
 * Built like any third-party plugin: it sees only the sdk headers and
 * reaches the core's vectors, allocator and SIMD kernels through the host
 * table. It keeps no copy of the vectors: just a bitmap of the slots it
 * holds (and their squared norms, for the batch path). A query walks the
 * arena 64 slots at a time: whole words of held-and-allowed slots go
 * through the contiguous kernel, partial words through the gather kernel,
 * empty words are skipped, so a filter costs nothing for the slots it
 * excludes.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <iqdb/plugin.h>
#include <iqdb/topk.h>

#define FLAT_VERSION "0.1.0"
#define STACK_K 256

static const iqdb_host *host;

typedef struct flat {
    void *hctx;
    const iqdb_store_view *store;
    const iqdb_kernels *kern;
    uint32_t dim;
    int metric;
    uint64_t *held; /* bitmap of slots held */
    float *norms;   /* squared norm per slot (batch path), words*64 */
    size_t words;   /* capacity of held, in 64-bit words */
    uint64_t count;
} flat;

static int flat_create(const iqdb_index_init *init, void **out)
{
    if (init->nparams > 0)
        return host->set_error(init->hctx, IQDB_EPARAM,
                               "flat: unknown parameter '%s' (the flat index "
                               "takes no parameters)",
                               init->params[0].key);
    flat *f = host->calloc(1, sizeof *f);
    if (f == NULL)
        return host->set_error(init->hctx, IQDB_ENOMEM, "flat: out of memory");
    f->hctx = init->hctx;
    f->store = init->store;
    f->kern = host->kernels;
    f->dim = init->dim;
    f->metric = init->metric;
    *out = f;
    return 0;
}

static void flat_destroy(void *index)
{
    flat *f = index;
    if (f == NULL)
        return;
    host->free(f->held);
    host->free(f->norms);
    host->free(f);
}

static int flat_add(void *index, const uint64_t *slots, size_t n)
{
    flat *f = index;
    uint64_t max = 0;
    for (size_t i = 0; i < n; i++)
        if (slots[i] > max)
            max = slots[i];
    size_t need = (size_t)(max / 64 + 1);
    if (n > 0 && need > f->words) {
        size_t cap = f->words ? f->words : 16;
        while (cap < need)
            cap *= 2;
        uint64_t *h = host->realloc(f->held, cap * sizeof *h);
        if (h == NULL)
            return host->set_error(f->hctx, IQDB_ENOMEM,
                                   "flat: out of memory");
        f->held = h;
        float *nr = host->realloc(f->norms, cap * 64 * sizeof *nr);
        if (nr == NULL)
            return host->set_error(f->hctx, IQDB_ENOMEM,
                                   "flat: out of memory");
        /* Both grown: only now is the larger capacity visible. */
        memset(h + f->words, 0, (cap - f->words) * sizeof *h);
        f->norms = nr;
        f->words = cap;
    }
    for (size_t i = 0; i < n; i++) {
        const float *v = f->store->vector(f->store->ctx, slots[i]);
        f->kern->norms_sq(v, f->dim, 1, f->dim, &f->norms[slots[i]]);

        uint64_t bit = (uint64_t)1 << (slots[i] & 63);
        if (!(f->held[slots[i] / 64] & bit)) {
            f->held[slots[i] / 64] |= bit;
            f->count++;
        }
    }
    return 0;
}

static int flat_remove(void *index, const uint64_t *slots, size_t n)
{
    flat *f = index;
    for (size_t i = 0; i < n; i++) {
        if (slots[i] / 64 >= f->words)
            continue;
        uint64_t bit = (uint64_t)1 << (slots[i] & 63);
        if (f->held[slots[i] / 64] & bit) {
            f->held[slots[i] / 64] &= ~bit;
            f->count--;
        }
    }
    return 0;
}

/* Slots of word w that may be returned. */
static uint64_t word_mask(const flat *f, const iqdb_filter_arg *fa, size_t w)
{
    uint64_t m = f->held[w];
    if (fa != NULL && fa->allowed != NULL) {
        uint64_t words = (fa->nbits + 63) / 64;
        m &= w < words ? fa->allowed[w] : 0;
    }
    return m;
}

static void offer_block(const flat *f, iqdb_topk *h, const float *d,
                        const uint64_t *slots, size_t n,
                        const iqdb_filter_arg *fa)
{
    const iqdb_store_view *sv = f->store;
    for (size_t j = 0; j < n; j++) {
        if (d[j] > iqdb_topk_bound(h))
            continue;
        if (fa != NULL && fa->pred != NULL && !fa->pred(fa->pctx, slots[j]))
            continue;
        iqdb_topk_offer(h, d[j], slots[j], sv->order(sv->ctx, slots[j]));
    }
}

static void scan(const flat *f, const float *q, const iqdb_filter_arg *fa,
                 iqdb_topk *h)
{
    iqdb_arena_layout lay;
    f->store->layout(f->store->ctx, &lay);
    uint64_t limit_words = (lay.slot_limit + 63) / 64;
    size_t words = limit_words < f->words ? (size_t)limit_words : f->words;
    uint64_t chunk_mask = ((uint64_t)1 << lay.chunk_shift) - 1;
    const float *vecs[64];
    uint64_t slots[64];
    float d[64];
    for (size_t w = 0; w < words; w++) {
        uint64_t m = word_mask(f, fa, w);
        if (m == 0)
            continue;
        uint64_t s0 = (uint64_t)w * 64;
        for (int j = 0; j < 64; j++)
            slots[j] = s0 + (uint64_t)j;
        if (m == ~(uint64_t)0 && lay.chunk_shift >= 6) {
            /* 64 consecutive slots inside one chunk: contiguous kernel. */
            const float *base = lay.chunks[s0 >> lay.chunk_shift] +
                                (size_t)(s0 & chunk_mask) * lay.stride;
            f->kern->dist_1xn(f->metric, q, base, lay.stride, 64, f->dim, d);
            offer_block(f, h, d, slots, 64, fa);
            continue;
        }
        size_t n = 0;
        while (m) {
            uint64_t s = s0 + (unsigned)__builtin_ctzll(m);
            m &= m - 1;
            slots[n] = s;
            vecs[n++] = lay.chunks[s >> lay.chunk_shift] +
                        (size_t)(s & chunk_mask) * lay.stride;
        }
        f->kern->dist_gather(f->metric, q, vecs, n, f->dim, d);
        offer_block(f, h, d, slots, n, fa);
    }
}

static int flat_search(void *index, iqdb_search_args *a)
{
    flat *f = index;
    if (a->nparams > 0)
        return host->set_error(f->hctx, IQDB_EPARAM,
                               "flat: unknown search parameter '%s'",
                               a->params[0].key);
    iqdb_topk_entry stack_buf[STACK_K];
    iqdb_topk_entry *buf = stack_buf;
    if (a->k > STACK_K && (buf = host->alloc(a->k * sizeof *buf)) == NULL)
        return host->set_error(f->hctx, IQDB_ENOMEM, "flat: out of memory");
    iqdb_topk h;
    iqdb_topk_init(&h, buf, a->k);
    scan(f, a->query, a->filter, &h);
    a->out_count = iqdb_topk_drain(&h, a->out);
    a->out_flags = 0;
    if (buf != stack_buf)
        host->free(buf);
    return 0;
}

/*
 * Batch search by matrix product. For euclidean, dot and cosine the
 * distances of a block of queries to a run of stored vectors come from one
 * blocked dot-product kernel (|b|^2 - 2 q.b + |q|^2 for euclidean), which
 * runs near the machine's peak but rounds differently from the exact
 * per-pair kernel. So the product only selects candidates, with a proven
 * error bound: for dot products of length d in float32, |fl(x.y) - x.y| <=
 * gamma_d |x||y| with gamma_d ~ d * 2^-24 (Higham, "Accuracy and Stability
 * of Numerical Algorithms", section 3.1). Every slot whose lower bound can
 * still beat the k-th best upper bound is kept, then all kept slots are
 * scored with the exact kernel and ranked like a single query. The result
 * is bit-identical to flat_search, only faster.
 */
enum { QBLOCK_MAX = 512, NBLOCK = 512 };

typedef struct cand {
    uint64_t slot;
    float lower;
} cand;

typedef struct qstate {
    float qnorm;
    float *ub;   /* max-heap of the k smallest upper bounds */
    size_t nub;
    cand *c;     /* candidates */
    size_t nc, cap;
} qstate;

static float ub_bound(const qstate *s, size_t k)
{
    return s->nub < k ? INFINITY : s->ub[0];
}

static void ub_offer(qstate *s, size_t k, float x)
{
    size_t i;
    if (s->nub < k) {
        i = s->nub++;
        while (i > 0 && s->ub[(i - 1) / 2] < x) {
            s->ub[i] = s->ub[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        s->ub[i] = x;
        return;
    }
    if (!(x < s->ub[0]))
        return;
    i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nub)
            break;
        if (c + 1 < s->nub && s->ub[c + 1] > s->ub[c])
            c++;
        if (!(s->ub[c] > x))
            break;
        s->ub[i] = s->ub[c];
        i = c;
    }
    s->ub[i] = x;
}

/* Drop candidates that can no longer make the top k. */
static void prune(qstate *s, size_t k)
{
    float t = ub_bound(s, k);
    size_t n = 0;
    for (size_t i = 0; i < s->nc; i++)
        if (s->c[i].lower <= t)
            s->c[n++] = s->c[i];
    s->nc = n;
}

static int push_cand(qstate *s, size_t k, uint64_t slot, float lower)
{
    if (s->nc == s->cap) {
        prune(s, k);
        if (s->nc * 2 > s->cap) {
            size_t cap = s->cap * 2;
            cand *c = host->realloc(s->c, cap * sizeof *c);
            if (c == NULL)
                return IQDB_ENOMEM;
            s->c = c;
            s->cap = cap;
        }
    }
    s->c[s->nc].slot = slot;
    s->c[s->nc++].lower = lower;
    return 0;
}

/* Approximate distance and its error bound from a dot product. */
static inline void approx(int metric, float dot, float bn, float qn,
                          float gamma, float *a, float *e)
{
    switch (metric) {
    case IQDB_M_EUCLIDEAN:
        *a = bn + qn - 2.0f * dot;
        *e = gamma * 4.0f * (bn + qn);
        break;
    case IQDB_M_DOT:
        *a = -dot;
        *e = gamma * 2.0f * sqrtf(bn * qn);
        break;
    default: /* cosine */
        if (bn == 0.0f || qn == 0.0f) {
            *a = 1.0f;
            *e = 0.0f;
        } else {
            *a = 1.0f - dot / (sqrtf(bn) * sqrtf(qn));
            *e = gamma * 4.0f + 1e-6f;
        }
        break;
    }
}

static int batch_block(const flat *f, iqdb_search_args *args, size_t nq,
                       qstate *st, float *tmp)
{
    iqdb_arena_layout lay;
    f->store->layout(f->store->ctx, &lay);
    size_t k = args[0].k;
    /* gamma_{d+4} with headroom: (d + 4) u / (1 - (d + 4) u), u = 2^-24. */
    float du = (float)(f->dim + 4) * 0x1p-24f;
    float gamma = 1.25f * du / (1.0f - du);
    const iqdb_filter_arg *fa = args[0].filter;
    size_t per = (size_t)1 << lay.chunk_shift;
    /* Queries as one strided matrix: they are consecutive in the caller's
     * buffer only by convention, so pass them one block row at a time
     * when they are not. */
    const float *q0 = args[0].query;
    int contiguous = 1;
    for (size_t i = 1; i < nq; i++)
        if (args[i].query != q0 + i * f->dim)
            contiguous = 0;
    uint64_t end;
    for (uint64_t s0 = 0; s0 < lay.slot_limit; s0 = end) {
        uint64_t chunk_end = ((s0 >> lay.chunk_shift) + 1) << lay.chunk_shift;
        end = s0 + NBLOCK;
        if (end > chunk_end)
            end = chunk_end;
        if (end > lay.slot_limit)
            end = lay.slot_limit;
        size_t n = (size_t)(end - s0);
        /* Which slots of the block may be returned, decided once for all
         * queries. */
        unsigned char ok[NBLOCK];
        size_t nok = 0;
        for (size_t j = 0; j < n; j++) {
            uint64_t slot = s0 + j;
            size_t w = (size_t)(slot / 64);
            ok[j] = w < f->words && ((word_mask(f, fa, w) >> (slot & 63)) & 1);
            nok += ok[j];
        }
        if (nok == 0)
            continue;
        const float *base = lay.chunks[s0 >> lay.chunk_shift] +
                            (size_t)(s0 & (per - 1)) * lay.stride;
        if (contiguous) {
            f->kern->dot_mxn(q0, f->dim, nq, base, lay.stride, n, f->dim, tmp,
                             NBLOCK);
        } else {
            for (size_t i = 0; i < nq; i++)
                f->kern->dot_mxn(args[i].query, f->dim, 1, base, lay.stride,
                                 n, f->dim, tmp + i * NBLOCK, NBLOCK);
        }
        const float *bn = f->norms + s0;
        for (size_t i = 0; i < nq; i++) {
            qstate *qs = &st[i];
            const float *row = tmp + i * NBLOCK;
            float t = ub_bound(qs, k);
            for (size_t j = 0; j < n; j++) {
                float a, e;
                approx(f->metric, row[j], bn[j], qs->qnorm, gamma, &a, &e);
                if (a - e > t || !ok[j])
                    continue;
                if (push_cand(qs, k, s0 + j, a - e) != 0)
                    return IQDB_ENOMEM;
                ub_offer(qs, k, a + e);
                t = ub_bound(qs, k);
            }
        }
    }
    return 0;
}

/* Score the surviving candidates exactly and rank them. */
static int rerank(const flat *f, iqdb_search_args *a, qstate *qs)
{
    enum { G = 64 };
    const float *vecs[G];
    uint64_t slots[G];
    float d[G];
    prune(qs, a->k);
    iqdb_topk_entry stack_buf[STACK_K];
    iqdb_topk_entry *buf = stack_buf;
    if (a->k > STACK_K && (buf = host->alloc(a->k * sizeof *buf)) == NULL)
        return IQDB_ENOMEM;
    iqdb_topk h;
    iqdb_topk_init(&h, buf, a->k);
    for (size_t i = 0; i < qs->nc; i += G) {
        size_t n = qs->nc - i < G ? qs->nc - i : G;
        for (size_t j = 0; j < n; j++) {
            slots[j] = qs->c[i + j].slot;
            vecs[j] = f->store->vector(f->store->ctx, slots[j]);
        }
        f->kern->dist_gather(f->metric, a->query, vecs, n, f->dim, d);
        offer_block(f, &h, d, slots, n, NULL);
    }
    a->out_count = iqdb_topk_drain(&h, a->out);
    a->out_flags = 0;
    if (buf != stack_buf)
        host->free(buf);
    return 0;
}

static int batch_run(const flat *f, iqdb_search_args *args, size_t nq)
{
    size_t k = args[0].k;
    int r = IQDB_ENOMEM;
    qstate *st = host->calloc(nq, sizeof *st);
    float *ub = host->alloc(nq * k * sizeof *ub);
    float *tmp = host->aligned_alloc(64, nq * NBLOCK * sizeof *tmp);
    if (st == NULL || ub == NULL || tmp == NULL)
        goto out;
    for (size_t i = 0; i < nq; i++) {
        st[i].ub = ub + i * k;
        st[i].cap = 4 * k + 64;
        st[i].c = host->alloc(st[i].cap * sizeof *st[i].c);
        if (st[i].c == NULL)
            goto out;
        f->kern->norms_sq(args[i].query, f->dim, 1, f->dim, &st[i].qnorm);
    }
    if ((r = batch_block(f, args, nq, st, tmp)) != 0)
        goto out;
    for (size_t i = 0; i < nq && r == 0; i++)
        r = rerank(f, &args[i], &st[i]);
out:
    if (st != NULL)
        for (size_t i = 0; i < nq; i++)
            host->free(st[i].c);
    host->free(st);
    host->free(ub);
    host->aligned_free(tmp);
    return r;
}

static int flat_search_batch(void *index, iqdb_search_args *args, size_t n)
{
    flat *f = index;
    int err = 0;
    if (n > 0 && args[0].nparams > 0)
        return flat_search(index, &args[0]); /* reports the parameter */
    /* Predicates cannot be tested inside the product loop; metrics other
     * than euclidean, dot and cosine have no product form; tiny batches
     * gain nothing. Those run as parallel single queries. */
    int gemm = n >= 8 && (f->metric == IQDB_M_EUCLIDEAN ||
                          f->metric == IQDB_M_DOT ||
                          f->metric == IQDB_M_COSINE) &&
               (args[0].filter == NULL || args[0].filter->pred == NULL);
    if (!gemm) {
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t i = 0; i < n; i++) {
            int r = flat_search(f, &args[i]);
            if (r != 0) {
#pragma omp atomic write
                err = r;
            }
        }
        return err;
    }
    /* One block of queries per thread when that fits: every block streams
     * the whole base once, and equal blocks keep both cores busy. */
    size_t threads = (size_t)host->max_threads();
    size_t qb = (n + threads - 1) / threads;
    if (qb > QBLOCK_MAX)
        qb = QBLOCK_MAX;
    if (qb < 8)
        qb = 8;
    size_t nblocks = (n + qb - 1) / qb;
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t b = 0; b < nblocks; b++) {
        size_t lo = b * qb, cnt = n - lo < qb ? n - lo : qb;
        int r = batch_run(f, args + lo, cnt);
        if (r != 0) {
#pragma omp atomic write
            err = r;
        }
    }
    if (err != 0)
        return host->set_error(f->hctx, err, "flat: batch search: %s",
                               err == IQDB_ENOMEM ? "out of memory"
                                                  : "failed");
    return 0;
}

static int flat_stats(void *index, iqdb_index_stats *st)
{
    flat *f = index;
    if (st->struct_size < sizeof *st)
        return IQDB_EINVAL;
    st->count = f->count;
    st->memory_bytes =
        sizeof *f + f->words * (sizeof(uint64_t) + 64 * sizeof(float));
    st->vector_copies = 0;
    return 0;
}

static const iqdb_index_ops flat_ops = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_index_ops),
    .name = "flat",
    .description = "exact brute-force search over the core's vectors",
    .caps = IQDB_CAP_EXACT | IQDB_CAP_FILTER_BITMAP |
            IQDB_CAP_FILTER_PREDICATE | IQDB_CAP_BATCH | IQDB_CAP_REMOVE,
    .format_version = 0,
    .create = flat_create,
    .destroy = flat_destroy,
    .add = flat_add,
    .remove = flat_remove,
    .search = flat_search,
    .search_batch = flat_search_batch,
    .stats = flat_stats,
};

static int flat_init(const iqdb_host *h, const iqdb_registrar *reg)
{
    host = h;
    return reg->register_index(reg->ctx, &flat_ops);
}

static const iqdb_module flat_module = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_module),
    .name = "flat",
    .version = FLAT_VERSION,
    .init = flat_init,
};

IQDB_PLUGIN_EXPORT const iqdb_module *flat_LTX_iqdb_module(void);

const iqdb_module *flat_LTX_iqdb_module(void)
{
    return &flat_module;
}
