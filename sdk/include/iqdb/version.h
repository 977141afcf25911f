/*
 * iqdb/version.h - library and plugin ABI versions.
 *
 * The ABI promise
 * ---------------
 * IQDB_ABI_MAJOR changes only when a plugin built against the old headers
 * could misbehave with the new core: a slot removed, reordered or given a
 * new meaning. Within one major version, IQDB_ABI_MINOR grows whenever
 * tables gain slots at their end; every table starts with its version and
 * its struct_size, so a newer core reads an older plugin's shorter table
 * safely and an older core refuses a plugin whose minor is newer than its
 * own. A plugin built against ABI M.m loads in any core M.n with n >= m.
 *
 * The application API follows the library's libtool -version-info;
 * IQDB_VERSION_* name the release.
 */
#ifndef IQDB_VERSION_H
#define IQDB_VERSION_H

#include <iqdb/export.h>

#define IQDB_VERSION_MAJOR 0
#define IQDB_VERSION_MINOR 1
#define IQDB_VERSION_PATCH 0
#define IQDB_VERSION_STRING "0.1.0"

#define IQDB_ABI_MAJOR 1
#define IQDB_ABI_MINOR 0

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version string at run time (static storage). */
IQDB_API const char *iqdb_version(void);

#ifdef __cplusplus
}
#endif
#endif /* IQDB_VERSION_H */
