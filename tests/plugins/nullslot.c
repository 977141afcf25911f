/* Fixture: registers an index whose required 'search' slot is NULL. */
#include "fixture.h"

static const iqdb_index_ops ops = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_index_ops),
    .name = "nullslot",
    .create = fx_create,
    .destroy = fx_destroy,
    .add = fx_add,
    .search = NULL,
};

static int init(const iqdb_host *h, const iqdb_registrar *r)
{
    fx_host = h;
    return r->register_index(r->ctx, &ops);
}

static const iqdb_module mod = {IQDB_ABI_VERSION, sizeof mod, "nullslot",
                                "1.0", init};

IQDB_PLUGIN_EXPORT const iqdb_module *nullslot_LTX_iqdb_module(void);
const iqdb_module *nullslot_LTX_iqdb_module(void)
{
    return &mod;
}
