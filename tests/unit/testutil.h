/* tests/unit/testutil.h - small helpers shared by the Check suites. */
#ifndef IQDB_TESTUTIL_H
#define IQDB_TESTUTIL_H

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include <iqdb/iqdb.h>

/* Deterministic PRNG (splitmix64) so failures reproduce. */
static inline uint64_t tu_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline float tu_uniform(uint64_t *s)
{
    return (float)((tu_next(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static inline void tu_fill(uint64_t *s, float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = tu_uniform(s);
}

/* Open an in-memory database or fail the test. */
static inline iqdb *tu_open(uint32_t dim, iqdb_metric m, const char *index)
{
    iqdb_config *c = iqdb_config_new(dim, m);
    ck_assert_ptr_nonnull(c);
    if (index)
        ck_assert_int_eq(iqdb_config_set_index(c, index), 0);
    iqdb *db = NULL;
    int r = iqdb_open_memory(c, &db);
    ck_assert_msg(r == 0, "open failed: %s", iqdb_errmsg(NULL));
    iqdb_config_free(c);
    return db;
}

static inline int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
