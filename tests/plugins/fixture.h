/*
 * tests/plugins/fixture.h - a minimal working index (exact scan through
 * the store view) that the broken-on-purpose fixtures below bend in one
 * way each. Each fixture defines FIXTURE_NAME before including this file.
 */
#ifndef IQDB_FIXTURE_H
#define IQDB_FIXTURE_H

#include <string.h>

#include <iqdb/plugin.h>
#include <iqdb/topk.h>

static const iqdb_host *fx_host;

typedef struct fx {
    const iqdb_store_view *sv;
    uint64_t held[1024]; /* up to 65536 slots, enough for tests */
} fx;

static inline int fx_create(const iqdb_index_init *init, void **out)
{
    fx *f = fx_host->calloc(1, sizeof *f);
    if (f == NULL)
        return IQDB_ENOMEM;
    f->sv = init->store;
    *out = f;
    return 0;
}

static inline void fx_destroy(void *i)
{
    fx_host->free(i);
}

static inline int fx_add(void *i, const uint64_t *s, size_t n)
{
    fx *f = i;
    for (size_t j = 0; j < n; j++) {
        if (s[j] >= 65536)
            return IQDB_ENOMEM;
        f->held[s[j] / 64] |= (uint64_t)1 << (s[j] % 64);
    }
    return 0;
}

static inline int fx_search(void *i, iqdb_search_args *a)
{
    fx *f = i;
    iqdb_topk_entry buf[64];
    iqdb_topk h;
    iqdb_topk_init(&h, buf, a->k < 64 ? a->k : 64);
    iqdb_dist_fn d = fx_host->kernels->dist[f->sv->metric];
    for (uint64_t s = 0; s < 65536; s++) {
        if (!((f->held[s / 64] >> (s % 64)) & 1))
            continue;
        if (!iqdb_filter_arg_allows(a->filter, s))
            continue;
        float x = d(a->query, f->sv->vector(f->sv->ctx, s), f->sv->dim);
        if (x <= iqdb_topk_bound(&h))
            iqdb_topk_offer(&h, x, s, f->sv->order(f->sv->ctx, s));
    }
    a->out_count = iqdb_topk_drain(&h, a->out);
    return 0;
}

#endif
