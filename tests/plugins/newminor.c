/* Fixture: same major, a newer minor than the core: must be refused. */
#include "fixture.h"

static int init(const iqdb_host *h, const iqdb_registrar *r)
{
    (void)h;
    (void)r;
    return IQDB_EINTERNAL; /* must never run */
}

static const iqdb_module mod = {(IQDB_ABI_MAJOR << 16) | (IQDB_ABI_MINOR + 1),
                                sizeof mod, "newminor", "1.0", init};

IQDB_PLUGIN_EXPORT const iqdb_module *newminor_LTX_iqdb_module(void);
const iqdb_module *newminor_LTX_iqdb_module(void)
{
    return &mod;
}
