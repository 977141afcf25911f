/* Fixture: a loadable module with no iqdb entry point at all. */
#include <iqdb/export.h>

IQDB_PLUGIN_EXPORT int noentry_LTX_something_else(void);
int noentry_LTX_something_else(void)
{
    return 42;
}
