/* Fixture: an older build of the "saver" index that reads only format 1. */
#include "saver.h"

static const iqdb_index_ops ops = SAVER_OPS(1);

static int init(const iqdb_host *h, const iqdb_registrar *r)
{
    fx_host = h;
    return r->register_index(r->ctx, &ops);
}

static const iqdb_module mod = {IQDB_ABI_VERSION, sizeof mod, "saverold",
                                "1.0", init};

IQDB_PLUGIN_EXPORT const iqdb_module *saverold_LTX_iqdb_module(void);
const iqdb_module *saverold_LTX_iqdb_module(void)
{
    return &mod;
}
