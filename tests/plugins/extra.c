/*
 * Fixture: a well-formed third-party index with neither remove nor filter
 * support, so the core must rebuild it on delete and plan filters itself.
 */
#include "fixture.h"

static const iqdb_index_ops ops = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_index_ops),
    .name = "extra",
    .description = "test fixture: exact scan without remove or filters",
    .caps = IQDB_CAP_EXACT,
    .create = fx_create,
    .destroy = fx_destroy,
    .add = fx_add,
    .search = fx_search,
};

static int init(const iqdb_host *h, const iqdb_registrar *r)
{
    fx_host = h;
    return r->register_index(r->ctx, &ops);
}

static const iqdb_module mod = {IQDB_ABI_VERSION, sizeof mod, "extra",
                                "1.2.3", init};

IQDB_PLUGIN_EXPORT const iqdb_module *extra_LTX_iqdb_module(void);
const iqdb_module *extra_LTX_iqdb_module(void)
{
    return &mod;
}
