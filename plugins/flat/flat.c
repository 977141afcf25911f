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
        memset(h + f->words, 0, (cap - f->words) * sizeof *h);
        f->held = h;
        f->words = cap;
    }
    for (size_t i = 0; i < n; i++) {
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

static int flat_search_batch(void *index, iqdb_search_args *args, size_t n)
{
    flat *f = index;
    int err = 0;
    if (n > 0 && args[0].nparams > 0)
        return flat_search(index, &args[0]); /* reports the parameter */
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

static int flat_stats(void *index, iqdb_index_stats *st)
{
    flat *f = index;
    if (st->struct_size < sizeof *st)
        return IQDB_EINVAL;
    st->count = f->count;
    st->memory_bytes = sizeof *f + f->words * sizeof(uint64_t);
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
