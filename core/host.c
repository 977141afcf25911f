/*
 * core/host.c - the host services table handed to every plugin.
 *
 * Plugins reach the core only through this table: its allocator (so
 * fault injection covers plugins), logging, error messages and the
 * distance kernels chosen for this CPU.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include <omp.h>

#include "iqdb_int.h"
#include "kernels_int.h"

static int log_level(void)
{
    const char *e = getenv("IQDB_LOG");
    return e ? atoi(e) : IQDB_LOG_WARN;
}

static void host_log(int level, const char *plugin, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    if (level > log_level() || level < 0 || level > IQDB_LOG_DEBUG)
        return;
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr);
    fprintf(stderr, "iqdb[%s] %s: ", plugin ? plugin : "core", names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
}

static int host_set_error(void *hctx, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    iqdb__set_errorv(hctx, code, fmt, ap);
    va_end(ap);
    return code;
}

static int host_max_threads(void)
{
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
}

static iqdb_host host_table;
static pthread_once_t host_once = PTHREAD_ONCE_INIT;

static void host_init(void)
{
    host_table.abi_version = IQDB_ABI_VERSION;
    host_table.struct_size = sizeof host_table;
    host_table.core_version = IQDB_VERSION_STRING;
    host_table.alloc = iqdb__malloc;
    host_table.calloc = iqdb__calloc;
    host_table.realloc = iqdb__realloc;
    host_table.free = iqdb__free;
    host_table.aligned_alloc = iqdb__aligned_alloc;
    host_table.aligned_free = iqdb__aligned_free;
    host_table.log = host_log;
    host_table.set_error = host_set_error;
    host_table.kernels = iqdb__kernels();
    host_table.max_threads = host_max_threads;
}

const iqdb_host *iqdb__host(void)
{
    pthread_once(&host_once, host_init);
    return &host_table;
}
