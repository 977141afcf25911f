/*
 * bench/benchutil.c - the helpers of benchutil.h.
 */
#define _POSIX_C_SOURCE 200809L

#include "benchutil.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

double bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void bench_set_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

void bench_die_lib(const iqdb *db, int rc, const char *what)
{
    fprintf(stderr, "%s: %s failed: %s (%s): %s\n", bench_prog, what,
            iqdb_errname(rc), iqdb_strerror(rc), iqdb_errmsg(db));
    exit(1);
}

void *bench_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL) {
        fprintf(stderr, "%s: out of memory (%zu x %zu bytes)\n", bench_prog,
                n, size);
        exit(1);
    }
    return p;
}

int bench_fmt(char *buf, size_t len, const char *f, ...)
{
    va_list ap;
    int n;

    va_start(ap, f);
    n = vsnprintf(buf, len, f, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < len ? 0 : -1;
}
