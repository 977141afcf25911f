/*
 * core/errmsg.c - the detail of the last failure, kept per thread.
 *
 * Messages are per thread (like errno) and tagged with the handle the
 * failing call was made on, so threads sharing one database never read
 * each other's messages, and iqdb_errmsg(db) reports only failures on db.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "iqdb_int.h"

#define MSG_MAX 1024

struct errslot {
    const void *handle;
    char msg[MSG_MAX];
};

static _Thread_local struct errslot slot;

int iqdb__set_errorv(const void *handle, int code, const char *fmt,
                     va_list ap)
{
    char buf[MSG_MAX];
    /* fmt may print the previous message; format into a temporary. */
    vsnprintf(buf, sizeof buf, fmt, ap);
    slot.handle = handle;
    memcpy(slot.msg, buf, sizeof buf);
    return code;
}

int iqdb__set_error(const void *handle, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    iqdb__set_errorv(handle, code, fmt, ap);
    va_end(ap);
    return code;
}

void iqdb__retag_error(const void *from, const void *to)
{
    if (slot.handle == from)
        slot.handle = to;
}

const char *iqdb__last_error(void)
{
    return slot.msg;
}

const char *iqdb_errmsg(const iqdb *db)
{
    if (db == NULL || slot.handle == (const void *)db)
        return slot.msg;
    return "";
}
