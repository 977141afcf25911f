/*
 * Fixture: an exact index that takes a bitmap or a predicate, but given a
 * predicate alone (the core's lazy plan) answers with just one hit, the
 * farthest allowed slot: so a test can see that the lazy plan was used
 * (k = 1: that hit comes back) and that a short answer makes the core
 * plan again with the bitmap (k > 1: the exact answer comes back).
 */
#include "fixture.h"

static int sp_search(void *i, iqdb_search_args *a)
{
    const iqdb_filter_arg *flt = a->filter;
    if (flt == NULL || flt->allowed != NULL || flt->pred == NULL)
        return fx_search(i, a);
    fx *f = i;
    iqdb_dist_fn d = fx_host->kernels->dist[f->sv->metric];
    float worst = -1.0f;
    uint64_t at = 0;
    for (uint64_t s = 0; s < 65536; s++) {
        if (!((f->held[s / 64] >> (s % 64)) & 1) ||
            !iqdb_filter_arg_allows(flt, s))
            continue;
        float x = d(a->query, f->sv->vector(f->sv->ctx, s), f->sv->dim);
        if (x > worst) {
            worst = x;
            at = s;
        }
    }
    a->out_count = 0;
    if (worst >= 0.0f && a->k > 0) {
        a->out[0].slot = at;
        a->out[0].dist = worst;
        a->out_count = 1;
    }
    return 0;
}

static const iqdb_index_ops ops = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_index_ops),
    .name = "shortpred",
    .description = "test fixture: one hit for a predicate-only filter",
    .caps = IQDB_CAP_EXACT | IQDB_CAP_FILTER_BITMAP |
            IQDB_CAP_FILTER_PREDICATE,
    .create = fx_create,
    .destroy = fx_destroy,
    .add = fx_add,
    .search = sp_search,
};

static int init(const iqdb_host *h, const iqdb_registrar *r)
{
    fx_host = h;
    return r->register_index(r->ctx, &ops);
}

static const iqdb_module mod = {IQDB_ABI_VERSION, sizeof mod, "shortpred",
                                "1.0.0", init};

IQDB_PLUGIN_EXPORT const iqdb_module *shortpred_LTX_iqdb_module(void);
const iqdb_module *shortpred_LTX_iqdb_module(void)
{
    return &mod;
}
