/*
 * iqdb/status.h - status codes shared by the library, its plugins and tools.
 *
 * Every fallible iqdb function returns an int: 0 (IQDB_OK) on success or
 * one of the negative codes below. The list is the single source of truth:
 * it generates the enum, iqdb_strerror() and iqdb_errname(). Codes are
 * never renumbered once released; new codes are appended with new values.
 *
 * The detail of a failure (which file, field, plugin or byte offset) is
 * kept in a message readable with iqdb_errmsg() (see iqdb.h).
 */
#ifndef IQDB_STATUS_H
#define IQDB_STATUS_H

#include <iqdb/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/* XX(name, value, description) */
#define IQDB_STATUS_MAP(XX)                                                  \
    XX(EINVAL, -1, "invalid argument")                                       \
    XX(ENOMEM, -2, "out of memory")                                          \
    XX(EDIM, -3, "vector dimension does not match the database")             \
    XX(ENONFINITE, -4, "vector holds NaN or infinity")                       \
    XX(EEMPTY, -5, "empty vector or id")                                     \
    XX(EK, -6, "k must be at least 1")                                       \
    XX(EID, -7, "invalid record id")                                         \
    XX(ENOTFOUND, -8, "record not found")                                    \
    XX(EMETRIC, -9, "unknown or unsupported metric")                         \
    XX(EPARAM, -10, "unknown parameter or bad parameter value")              \
    XX(EFILTER, -11, "invalid filter")                                       \
    XX(EPARSE, -12, "filter syntax error")                                   \
    XX(ENOPLUGIN, -13, "plugin not found")                                   \
    XX(EPLUGIN, -14, "plugin failed to load or is malformed")                \
    XX(EABI, -15, "plugin ABI version mismatch")                             \
    XX(ENOTSUP, -16, "operation not supported")                              \
    XX(EIO, -17, "input/output error")                                       \
    XX(ECORRUPT, -18, "corrupt or truncated data")                           \
    XX(ELOCKED, -19, "database is locked by another handle")                 \
    XX(ECONFIG, -20, "configuration does not match the stored database")     \
    XX(EREADONLY, -21, "database is read-only or refuses writes")            \
    XX(ENOSPC, -22, "no space left on device")                               \
    XX(ERANGE, -23, "value out of range")                                    \
    XX(EINTERNAL, -24, "internal error")                                     \
    XX(EEXIST, -25, "already exists")

enum iqdb_status {
    IQDB_OK = 0,
#define IQDB__STATUS_ENUM(name, value, desc) IQDB_##name = (value),
    IQDB_STATUS_MAP(IQDB__STATUS_ENUM)
#undef IQDB__STATUS_ENUM
};

/* A static description of `code` ("success" for 0, "unknown error" for a
 * code this library does not know). Never NULL; never to be freed.
 * Thread-safe. */
IQDB_API const char *iqdb_strerror(int code);

/* The code's name without prefix, e.g. "EDIM"; "OK" for 0, "UNKNOWN"
 * otherwise. Never NULL; never to be freed. Thread-safe. */
IQDB_API const char *iqdb_errname(int code);

#ifdef __cplusplus
}
#endif
#endif /* IQDB_STATUS_H */
