/* core/status.c - names and descriptions of the status codes. */
#include "config.h"

#include "iqdb_int.h"

const char *iqdb_strerror(int code)
{
    switch (code) {
    case IQDB_OK:
        return "success";
#define XX(name, value, desc)                                                \
    case IQDB_##name:                                                        \
        return desc;
        IQDB_STATUS_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

const char *iqdb_errname(int code)
{
    switch (code) {
    case IQDB_OK:
        return "OK";
#define XX(name, value, desc)                                                \
    case IQDB_##name:                                                        \
        return #name;
        IQDB_STATUS_MAP(XX)
#undef XX
    default:
        return "UNKNOWN";
    }
}

const char *iqdb_version(void)
{
    return IQDB_VERSION_STRING;
}
