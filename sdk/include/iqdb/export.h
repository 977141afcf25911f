/*
 * iqdb/export.h - the one export macro.
 *
 * The library is built with -fvisibility=hidden; only declarations marked
 * IQDB_API are exported. Plugins use IQDB_PLUGIN_EXPORT for their single
 * entry point.
 */
#ifndef IQDB_EXPORT_H
#define IQDB_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define IQDB_API __attribute__((visibility("default")))
#define IQDB_PLUGIN_EXPORT __attribute__((visibility("default")))
#define IQDB_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define IQDB_API
#define IQDB_PLUGIN_EXPORT
#define IQDB_PRINTF(fmt, args)
#endif

#endif /* IQDB_EXPORT_H */
