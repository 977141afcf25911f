/*
 * bench/benchutil.h - small helpers shared by the bench programs: a
 * monotonic clock, the OpenMP team size, fatal errors and allocation
 * that exit with a message. Each program defines bench_prog, its name in
 * messages.
 */
#ifndef IQDB_BENCH_BENCHUTIL_H
#define IQDB_BENCH_BENCHUTIL_H

#include <iqdb/iqdb.h>

#include <stddef.h>

/* The program's name, for messages; defined by each program. */
extern const char *bench_prog;

/* Monotonic seconds. */
double bench_now(void);
/* The library runs its OpenMP regions (parallel build, batch search) on
 * the calling thread's team size. */
void bench_set_threads(int n);
/* "PROG: WHAT failed: NAME (text): message", then exit(1). */
void bench_die_lib(const iqdb *db, int rc, const char *what)
    __attribute__((noreturn));
/* calloc that exits with a message when out of memory; never NULL. */
void *bench_xcalloc(size_t n, size_t size);
/* snprintf that reports truncation: 0 when the text fit, else -1. */
int bench_fmt(char *buf, size_t len, const char *f, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* IQDB_BENCH_BENCHUTIL_H */
