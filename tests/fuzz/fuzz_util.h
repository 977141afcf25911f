/*
 * tests/fuzz/fuzz_util.h - what the fuzz targets that go through the
 * public API share: failing loudly, the scratch directory, small files,
 * little-endian fields, and the walk every database that opened gets.
 * Header-only (each target is one program built by hand, see README.md);
 * the including file defines FUZZ_NAME before including it.
 */
#ifndef IQDB_FUZZ_UTIL_H
#define IQDB_FUZZ_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <iqdb/iqdb.h>

#ifndef FUZZ_NAME
#error "define FUZZ_NAME before including fuzz_util.h"
#endif

/* Abort with what returned r and the thread's message. */
static inline void fz_die(const char *what, int r)
{
    fprintf(stderr, FUZZ_NAME ": %s returned %d (%s): %s\n", what, r,
            iqdb_strerror(r), iqdb_errmsg(NULL));
    abort();
}

/* r must be 0 or a code a hostile file may cause; plugin_ok adds
 * IQDB_ENOPLUGIN (a file may name a plugin that is not installed). */
static inline void fz_allowed(const char *what, int r, int plugin_ok)
{
    if (r != 0 && r != IQDB_ECORRUPT && r != IQDB_ENOTSUP &&
        r != IQDB_ENOMEM && !(plugin_ok && r == IQDB_ENOPLUGIN))
        fz_die(what, r);
}

/* A new scratch directory FUZZ_NAME.XXXXXX in /dev/shm (else /tmp) into
 * dir; quiets the library's warnings, which hostile files cause. */
static inline void fz_scratch(char *dir, size_t n)
{
    if (getenv("IQDB_LOG") == NULL)
        setenv("IQDB_LOG", "0", 1);
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, n, "%s/" FUZZ_NAME ".XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
}

static inline uint8_t *fz_slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    if (f == NULL)
        fz_die("reading a file back", -1);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    if (b == NULL || fread(b, 1, (size_t)len, f) != (size_t)len)
        fz_die("reading a file back", -1);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static inline void fz_spit(const char *p, const void *b, size_t n)
{
    FILE *f = fopen(p, "wb");
    if (f == NULL || (n > 0 && fwrite(b, 1, n, f) != n))
        fz_die("writing a file", -1);
    fclose(f);
}

static inline void fz_put32(uint8_t *p, uint32_t v)
{
    for (int k = 0; k < 4; k++)
        p[k] = (uint8_t)(v >> (8 * k));
}

static inline void fz_put64(uint8_t *p, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        p[k] = (uint8_t)(v >> (8 * k));
}

static inline uint64_t fz_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = v << 8 | p[k];
    return v;
}

typedef struct fz_walk_state {
    uint32_t dim;
    size_t n;
} fz_walk_state;

static inline int fz_visit(void *ctx, const iqdb_record *rec)
{
    fz_walk_state *w = ctx;
    for (uint32_t k = 0; k < w->dim; k++)
        if (!isfinite(rec->vector[k]))
            fz_die("a walked record with a non-finite element", -1);
    w->n++;
    return 0;
}

/* What every database that opened must stand: iqdb_stat, a walk of every
 * record (finite elements, as many as iqdb_count says), a top-5 search
 * from the origin (it must succeed when search_ok, else may also give a
 * hostile-file code) and a get of each hit. */
static inline void fz_walk(iqdb *db, int search_ok)
{
    iqdb_stats st;
    int r = iqdb_stat(db, &st);
    if (r != 0)
        fz_die("iqdb_stat", r);
    fz_walk_state w = {iqdb_dim(db), 0};
    if ((r = iqdb_foreach(db, fz_visit, &w)) != 0)
        fz_die("iqdb_foreach", r);
    if (w.n != iqdb_count(db))
        fz_die("iqdb_foreach visited a count other than iqdb_count", -1);
    float *q = calloc(w.dim ? w.dim : 1, sizeof *q);
    if (q == NULL)
        return;
    iqdb_results *res = NULL;
    r = iqdb_search(db, q, w.dim, 5, NULL, NULL, &res);
    if (search_ok && r != 0)
        fz_die("iqdb_search", r);
    fz_allowed("iqdb_search", r, 0);
    if (r == 0) {
        for (size_t i = 0; i < iqdb_results_count(res, 0); i++) {
            int g = iqdb_get(db, iqdb_results_hits(res, 0)[i].id, q, w.dim,
                             NULL);
            if (g != 0)
                fz_die("iqdb_get of a search hit", g);
        }
        iqdb_results_free(res);
    }
    free(q);
}

#endif
