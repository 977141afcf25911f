/* Fixture: an index table whose struct_size is smaller than ABI 1.0's. */
#include <stddef.h>

#include "fixture.h"

static const iqdb_index_ops ops = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = offsetof(iqdb_index_ops, search),
    .name = "smalltable",
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

static const iqdb_module mod = {IQDB_ABI_VERSION, sizeof mod, "smalltable",
                                "1.0", init};

IQDB_PLUGIN_EXPORT const iqdb_module *smalltable_LTX_iqdb_module(void);
const iqdb_module *smalltable_LTX_iqdb_module(void)
{
    return &mod;
}
