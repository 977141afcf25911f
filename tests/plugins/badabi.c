/* Fixture: a module built for a future ABI major; must be refused. */
#include "fixture.h"

static int init(const iqdb_host *h, const iqdb_registrar *r)
{
    (void)h;
    (void)r;
    return IQDB_EINTERNAL; /* must never run */
}

static const iqdb_module mod = {((IQDB_ABI_MAJOR + 1) << 16), sizeof mod,
                                "badabi", "9.9", init};

IQDB_PLUGIN_EXPORT const iqdb_module *badabi_LTX_iqdb_module(void);
const iqdb_module *badabi_LTX_iqdb_module(void)
{
    return &mod;
}
