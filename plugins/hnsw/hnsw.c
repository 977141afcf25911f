/*
 * plugins/hnsw/hnsw.c - the HNSW index plugin: registration, parameters,
 * create and destroy, node storage, statistics.
 *
 * The plugin is split by phase, the way pgvector splits its HNSW access
 * method: this file (lifecycle), hnsw_build.c (insert, delete, repair),
 * hnsw_search.c (layer search, queries, scratch), hnsw_persist.c (save
 * and load). hnsw_int.h describes the graph's memory layout.
 *
 * Construction parameters (key=value text):
 *   m                links per node and upper layer, 2..256 (default 16);
 *                    level 0 holds 2m
 *   ef_construction  candidate list while inserting, >= 1 (default 200)
 *   ef_search        candidate list while searching, >= 1 (default 64);
 *                    also a per-query parameter
 *   seed             level generator seed (default 42)
 *   filter_widen     most a filtered query multiplies ef by, >= 1
 *                    (default 4): ef grows by one per decade of
 *                    selectivity (x2 at 10%, x3 at 1%), up to this; a
 *                    predicate-only filter gets all of it. Also a
 *                    per-query parameter
 *   encoding         what traversal scores: "float" (the default: the
 *                    core's vectors, no copy) or "bf16" (a bfloat16 copy
 *                    of each vector, 2 bytes a dimension: half the memory
 *                    traffic; not for hamming). bench/bench_hnsw measured
 *                    bf16 at 0.88x to 1.35x the single-thread queries
 *                    per second of "float" at equal recall (Fashion-MNIST
 *                    and clustered 128-d data, a shared 2-core machine:
 *                    the spread is mostly run-to-run noise) for 40% to
 *                    50% more memory, so "float" stays the default; bf16
 *                    may pay where memory bandwidth is what limits (many
 *                    threads on few memory channels). Results are
 *                    re-scored from the floats, so reported distances and
 *                    their order are exact.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hnsw_int.h"

/* Bounds that keep every size computation far from overflow. */
#define EF_MAX 1000000u
#define WIDEN_MAX 1024u

int hnsw__parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    uint64_t v = 0;
    if (s == NULL || *s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned dgt = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - dgt) / 10)
            return -1;
        v = v * 10 + dgt;
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* One parameter: its name, range, and where it goes. */
typedef struct param_def {
    const char *key;
    uint64_t lo, hi;
    const char *range; /* for the message */
} param_def;

static const param_def defs[] = {
    {"m", 2, 256, "an integer from 2 to 256"},
    {"ef_construction", 1, EF_MAX, "an integer from 1 to 1000000"},
    {"ef_search", 1, EF_MAX, "an integer from 1 to 1000000"},
    {"seed", 0, UINT64_MAX, "an unsigned 64-bit integer"},
    {"filter_widen", 1, WIDEN_MAX, "an integer from 1 to 1024"},
};

static int parse_params(hnsw *h, const iqdb_index_init *init)
{
    uint64_t v[5] = {16, 200, 64, 42, 4};
    /* The core's vectors by default: they live once (the copy is an
     * opt-in trade of memory for speed). */
    h->enc = HNSW_ENC_FLOAT;
    for (size_t i = 0; i < init->nparams; i++) {
        const iqdb_kv *kv = &init->params[i];
        if (kv->key != NULL && strcmp(kv->key, "encoding") == 0) {
            int f = kv->value != NULL && strcmp(kv->value, "float") == 0;
            int b = kv->value != NULL && strcmp(kv->value, "bf16") == 0;
            /* bf16 rounding would change which values compare equal. */
            if (!(f || (b && init->metric != IQDB_M_HAMMING)))
                return init->host->set_error(
                    init->hctx, IQDB_EPARAM,
                    "hnsw: parameter 'encoding' must be \"float\" or "
                    "\"bf16\" (\"float\" for hamming) (got '%s')",
                    kv->value ? kv->value : "(null)");
            h->enc = f ? HNSW_ENC_FLOAT : HNSW_ENC_BF16;
            continue;
        }
        size_t j = 0;
        while (j < 5 && (kv->key == NULL || strcmp(kv->key, defs[j].key)))
            j++;
        if (j == 5)
            return init->host->set_error(
                init->hctx, IQDB_EPARAM,
                "hnsw: unknown parameter '%s' (known: m, ef_construction, "
                "ef_search, seed, filter_widen, encoding)",
                kv->key ? kv->key : "(null)");
        if (hnsw__parse_u64(kv->value, defs[j].lo, defs[j].hi, &v[j]) != 0)
            return init->host->set_error(
                init->hctx, IQDB_EPARAM,
                "hnsw: parameter '%s' must be %s (got '%s')", defs[j].key,
                defs[j].range, kv->value ? kv->value : "(null)");
    }
    h->m = (uint32_t)v[0];
    h->m0 = 2 * h->m;
    h->ef_construction = (uint32_t)v[1];
    h->ef_search = (uint32_t)v[2];
    h->seed = v[3];
    h->filter_widen = (uint32_t)v[4];
    /* mL = 1 / ln(M), the choice the paper finds best (section 4.1). */
    h->level_mult = 1.0 / log((double)h->m);
    h->rng = h->seed;
    return 0;
}

static int hnsw_create(const iqdb_index_init *init, void **out)
{
    const iqdb_host *host = init->host;
    if (init->metric <= 0 || init->metric >= IQDB_M_COUNT ||
        host->kernels->dist[init->metric] == NULL)
        return host->set_error(init->hctx, IQDB_EMETRIC,
                               "hnsw: unsupported metric %d", init->metric);
    hnsw *h = host->calloc(1, sizeof *h);
    if (h == NULL)
        return host->set_error(init->hctx, IQDB_ENOMEM,
                               "hnsw: out of memory");
    h->host = host;
    h->hctx = init->hctx;
    h->store = init->store;
    h->kern = host->kernels;
    h->dim = init->dim;
    h->metric = init->metric;
    h->dist = h->kern->dist[init->metric];
    h->entry = HNSW_NONE;
    h->top = -1;
    int r = parse_params(h, init);
    if (r != 0) {
        host->free(h);
        return r;
    }
    h->cstride = ((size_t)h->dim + 31) / 32 * 32;
    hnsw__pick_kernels(h);
    *out = h;
    return 0;
}

static void hnsw_destroy(void *index)
{
    hnsw *h = index;
    if (h == NULL)
        return;
    for (uint32_t n = 0; n < h->limit; n++)
        h->host->free(h->upper[n]);
    for (int i = 0; i < HNSW_POOL; i++)
        hnsw__scratch_free(h, h->pool[i]);
    h->host->free(h->links0);
    h->host->free(h->upper);
    h->host->free(h->level);
    h->host->free(h->state);
    h->host->aligned_free(h->codes);
    h->host->free(h);
}

/* Per node: level-0 list, upper pointer, level and state bytes, code. */
static size_t node_bytes(const hnsw *h)
{
    return (1 + (size_t)h->m0) * sizeof(uint32_t) + sizeof(uint32_t *) + 2 +
           (h->enc == HNSW_ENC_BF16 ? h->cstride * sizeof(uint16_t) : 0);
}

int hnsw__grow(hnsw *h, uint64_t need)
{
    if (need <= h->cap)
        return 0;
    if (need > HNSW_MAX_NODES)
        return IQDB_ENOMEM;
    uint64_t cap = h->cap ? (uint64_t)h->cap * 2 : 1024;
    if (cap < need)
        cap = need;
    if (cap > HNSW_MAX_NODES)
        cap = HNSW_MAX_NODES;
    size_t stride = 1 + (size_t)h->m0;
    if (cap > SIZE_MAX / (stride * sizeof(uint32_t)))
        return IQDB_ENOMEM;
    /* Each array grows on its own; cap moves only when all have, so a
     * failure leaves some arrays larger but the index unchanged. */
    uint32_t *l0 = h->host->realloc(h->links0,
                                    (size_t)cap * stride * sizeof *l0);
    if (l0 == NULL)
        return IQDB_ENOMEM;
    h->links0 = l0;
    uint32_t **up = h->host->realloc(h->upper, (size_t)cap * sizeof *up);
    if (up == NULL)
        return IQDB_ENOMEM;
    h->upper = up;
    uint8_t *lv = h->host->realloc(h->level, (size_t)cap);
    if (lv == NULL)
        return IQDB_ENOMEM;
    h->level = lv;
    uint8_t *st = h->host->realloc(h->state, (size_t)cap);
    if (st == NULL)
        return IQDB_ENOMEM;
    h->state = st;
    size_t old = h->cap, add = (size_t)cap - old;
    if (h->enc == HNSW_ENC_BF16) {
        /* Aligned memory has no realloc: copy. Codes of nodes not live
         * are never read, so the new part needs no clearing. */
        if ((size_t)cap > SIZE_MAX / (h->cstride * sizeof(uint16_t)))
            return IQDB_ENOMEM;
        uint16_t *cd = h->host->aligned_alloc(
            64, (size_t)cap * h->cstride * sizeof(uint16_t));
        if (cd == NULL)
            return IQDB_ENOMEM;
        if (old > 0)
            memcpy(cd, h->codes, old * h->cstride * sizeof(uint16_t));
        h->host->aligned_free(h->codes);
        h->codes = cd;
    }
    memset(h->links0 + old * stride, 0, add * stride * sizeof(uint32_t));
    for (size_t i = old; i < (size_t)cap; i++)
        h->upper[i] = NULL;
    memset(h->level + old, 0, add);
    memset(h->state + old, HNSW_ABSENT, add);
    h->cap = (uint32_t)cap;
    return 0;
}

int hnsw__upper_alloc(hnsw *h, uint32_t n, int level)
{
    if (level == 0)
        return 0;
    size_t bytes = (size_t)level * (1 + (size_t)h->m) * sizeof(uint32_t);
    uint32_t *b = h->host->calloc(1, bytes);
    if (b == NULL)
        return IQDB_ENOMEM;
    h->upper[n] = b;
    h->upper_bytes += bytes;
    return 0;
}

void hnsw__upper_free(hnsw *h, uint32_t n)
{
    if (h->upper[n] == NULL)
        return;
    h->upper_bytes -=
        (size_t)h->level[n] * (1 + (size_t)h->m) * sizeof(uint32_t);
    h->host->free(h->upper[n]);
    h->upper[n] = NULL;
}

void hnsw__pick_entry(hnsw *h)
{
    uint32_t best = HNSW_NONE;
    int lv = -1;
    for (uint32_t n = 0; n < h->limit; n++)
        if (h->state[n] == HNSW_LIVE && (int)h->level[n] > lv) {
            best = n;
            lv = h->level[n];
        }
    h->entry = best;
    h->top = lv;
}

void hnsw__ctx_init(hnsw_ctx *c, const hnsw *h, hnsw_scratch *sc)
{
    memset(c, 0, sizeof *c);
    c->h = h;
    c->sc = sc;
    c->lay.struct_size = sizeof c->lay;
    h->store->layout(h->store->ctx, &c->lay);
    c->chunk_mask = ((uint64_t)1 << c->lay.chunk_shift) - 1;
}

/* ---- ops ------------------------------------------------------------ */

static int hnsw_add(void *index, const uint64_t *slots, size_t n)
{
    return hnsw__add(index, slots, n);
}

static int hnsw_remove(void *index, const uint64_t *slots, size_t n)
{
    return hnsw__remove(index, slots, n);
}

static int hnsw_search(void *index, iqdb_search_args *args)
{
    return hnsw__search(index, args);
}

static int hnsw_search_batch(void *index, iqdb_search_args *args, size_t n)
{
    return hnsw__search_batch(index, args, n);
}

static int hnsw_train(void *index)
{
    return hnsw__optimize(index);
}

static int hnsw_save(void *index, const iqdb_writer *w)
{
    return hnsw__save(index, w);
}

static int hnsw_load(void *index, const iqdb_reader *r, uint32_t version)
{
    return hnsw__load(index, r, version);
}

static int hnsw_stats(void *index, iqdb_index_stats *st)
{
    hnsw *h = index;
    if (st->struct_size < sizeof *st)
        return IQDB_EINVAL;
    st->count = h->nlive;
    st->memory_bytes = sizeof *h + (uint64_t)h->cap * node_bytes(h) +
                       h->upper_bytes +
                       __atomic_load_n(&h->scratch_bytes, __ATOMIC_RELAXED);
    st->vector_copies = 0;
    return 0;
}

static const iqdb_index_ops hnsw_ops = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_index_ops),
    .name = HNSW_NAME,
    .description = "approximate search on a hierarchical navigable small "
                   "world graph (Malkov and Yashunin)",
    .caps = IQDB_CAP_FILTER_BITMAP | IQDB_CAP_FILTER_PREDICATE |
            IQDB_CAP_BATCH | IQDB_CAP_REMOVE | IQDB_CAP_PERSIST,
    .format_version = HNSW_FORMAT_VERSION,
    .create = hnsw_create,
    .destroy = hnsw_destroy,
    .add = hnsw_add,
    .remove = hnsw_remove,
    .search = hnsw_search,
    .search_batch = hnsw_search_batch,
    .train = hnsw_train,
    .save = hnsw_save,
    .load = hnsw_load,
    .stats = hnsw_stats,
};

static int hnsw_init(const iqdb_host *h, const iqdb_registrar *reg)
{
    (void)h;
    return reg->register_index(reg->ctx, &hnsw_ops);
}

static const iqdb_module hnsw_module = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_module),
    .name = HNSW_NAME,
    .version = HNSW_VERSION,
    .init = hnsw_init,
};

IQDB_PLUGIN_EXPORT const iqdb_module *hnsw_LTX_iqdb_module(void);

const iqdb_module *hnsw_LTX_iqdb_module(void)
{
    return &hnsw_module;
}
