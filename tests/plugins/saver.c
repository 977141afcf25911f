/* Fixture: the "saver" index at format version 2. */
#include "saver.h"

static const iqdb_index_ops ops = SAVER_OPS(2);

static int init(const iqdb_host *h, const iqdb_registrar *r)
{
    fx_host = h;
    return r->register_index(r->ctx, &ops);
}

static const iqdb_module mod = {IQDB_ABI_VERSION, sizeof mod, "saver", "2.0",
                                init};

IQDB_PLUGIN_EXPORT const iqdb_module *saver_LTX_iqdb_module(void);
const iqdb_module *saver_LTX_iqdb_module(void)
{
    return &mod;
}

/* Lets the test read how many loads happened (same process). */
IQDB_PLUGIN_EXPORT int saver_LTX_loads(void);
int saver_LTX_loads(void)
{
    return saver_loads;
}
