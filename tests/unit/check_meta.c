/*
 * tests/unit/check_meta.c - metadata maps: values of every type, replace
 * and unset, key order, limits, deep copies, sharing by reference count,
 * and every allocation failure (each must leave the map as it was).
 */
#include "config.h"

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter_int.h"
#include "iqdb_int.h"

static iqdb_meta *new_meta(void)
{
    iqdb_meta *m = iqdb_meta_new();
    ck_assert_ptr_nonnull(m);
    return m;
}

static iqdb_value get_ok(const iqdb_meta *m, const char *key)
{
    iqdb_value v;
    ck_assert_int_eq(iqdb_meta_get(m, key, &v), 0);
    return v;
}

static void assert_str(iqdb_value v, const char *s, size_t len)
{
    ck_assert_int_eq(v.type, IQDB_TYPE_STRING);
    ck_assert_uint_eq(v.len, len);
    ck_assert_ptr_nonnull(v.v.s);
    ck_assert_int_eq(memcmp(v.v.s, s, len), 0);
}

/* ---- value constructors ---------------------------------------------- */

START_TEST(test_meta_values)
{
    iqdb_value v = iqdb_value_str("abc");
    assert_str(v, "abc", 3);
    v = iqdb_value_str(NULL);
    assert_str(v, "", 0);
    v = iqdb_value_strn("a\0b", 3);
    assert_str(v, "a\0b", 3);
    v = iqdb_value_strn(NULL, 7);
    assert_str(v, "", 0);
    v = iqdb_value_int(INT64_MIN);
    ck_assert_int_eq(v.type, IQDB_TYPE_INT);
    ck_assert(v.v.i == INT64_MIN);
    v = iqdb_value_double(-2.5);
    ck_assert_int_eq(v.type, IQDB_TYPE_DOUBLE);
    ck_assert(v.v.d == -2.5);
    v = iqdb_value_bool(42);
    ck_assert_int_eq(v.type, IQDB_TYPE_BOOL);
    ck_assert_int_eq(v.v.b, 1);
    v = iqdb_value_bool(0);
    ck_assert_int_eq(v.v.b, 0);
    v = iqdb_value_null();
    ck_assert_int_eq(v.type, IQDB_TYPE_NULL);
}
END_TEST

/* ---- every type round-trips ------------------------------------------ */

START_TEST(test_meta_types)
{
    iqdb_meta *m = new_meta();
    char buf[] = "x\0y";
    ck_assert_int_eq(iqdb_meta_set(m, "s", iqdb_value_str("hello")), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "nul", iqdb_value_strn(buf, 3)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "empty", iqdb_value_str("")), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "i", iqdb_value_int(INT64_MAX)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "d", iqdb_value_double(1.25)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "inf",
                                   iqdb_value_double(-INFINITY)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "b", iqdb_value_bool(7)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "n", iqdb_value_null()), 0);
    ck_assert_uint_eq(iqdb_meta_count(m), 8);

    /* The map keeps copies: the caller's buffer may change. */
    buf[0] = 'Z';
    assert_str(get_ok(m, "s"), "hello", 5);
    assert_str(get_ok(m, "nul"), "x\0y", 3);
    assert_str(get_ok(m, "empty"), "", 0);
    iqdb_value v = get_ok(m, "i");
    ck_assert_int_eq(v.type, IQDB_TYPE_INT);
    ck_assert(v.v.i == INT64_MAX);
    v = get_ok(m, "d");
    ck_assert_int_eq(v.type, IQDB_TYPE_DOUBLE);
    ck_assert(v.v.d == 1.25);
    v = get_ok(m, "inf");
    ck_assert(isinf(v.v.d) && v.v.d < 0);
    v = get_ok(m, "b");
    ck_assert_int_eq(v.type, IQDB_TYPE_BOOL);
    ck_assert_int_eq(v.v.b, 1);
    v = get_ok(m, "n");
    ck_assert_int_eq(v.type, IQDB_TYPE_NULL);

    ck_assert_int_eq(iqdb_meta_get(m, "missing", &v), IQDB_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "missing"));
    /* A key is matched whole, not as a prefix. */
    ck_assert_int_eq(iqdb_meta_get(m, "e", &v), IQDB_ENOTFOUND);
    ck_assert_int_eq(iqdb_meta_get(m, "emptyy", &v), IQDB_ENOTFOUND);
    iqdb_meta_free(m);
}
END_TEST

/* ---- replace --------------------------------------------------------- */

START_TEST(test_meta_replace)
{
    iqdb_meta *m = new_meta();
    ck_assert_int_eq(iqdb_meta_set(m, "k", iqdb_value_str("long value")), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "k", iqdb_value_str("v2")), 0);
    ck_assert_uint_eq(iqdb_meta_count(m), 1);
    assert_str(get_ok(m, "k"), "v2", 2);
    ck_assert_int_eq(iqdb_meta_set(m, "k", iqdb_value_int(3)), 0);
    iqdb_value v = get_ok(m, "k");
    ck_assert_int_eq(v.type, IQDB_TYPE_INT);
    ck_assert(v.v.i == 3);
    ck_assert_int_eq(iqdb_meta_set(m, "k", iqdb_value_str("back")), 0);
    assert_str(get_ok(m, "k"), "back", 4);
    ck_assert_uint_eq(iqdb_meta_count(m), 1);
    /* A failed replace keeps the old value. */
    ck_assert_int_eq(iqdb_meta_set(m, "k", iqdb_value_double(NAN)),
                     IQDB_EINVAL);
    assert_str(get_ok(m, "k"), "back", 4);
    iqdb_meta_free(m);
}
END_TEST

/* ---- unset ----------------------------------------------------------- */

START_TEST(test_meta_unset)
{
    iqdb_meta *m = new_meta();
    ck_assert_int_eq(iqdb_meta_set(m, "a", iqdb_value_int(1)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "b", iqdb_value_str("bee")), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "c", iqdb_value_int(3)), 0);
    ck_assert_int_eq(iqdb_meta_unset(m, "b"), 0);
    ck_assert_uint_eq(iqdb_meta_count(m), 2);
    iqdb_value v;
    ck_assert_int_eq(iqdb_meta_get(m, "b", &v), IQDB_ENOTFOUND);
    ck_assert(get_ok(m, "a").v.i == 1);
    ck_assert(get_ok(m, "c").v.i == 3);
    /* Absent keys are fine, twice. */
    ck_assert_int_eq(iqdb_meta_unset(m, "b"), 0);
    ck_assert_int_eq(iqdb_meta_unset(m, "zz"), 0);
    ck_assert_uint_eq(iqdb_meta_count(m), 2);
    ck_assert_int_eq(iqdb_meta_unset(m, "a"), 0);
    ck_assert_int_eq(iqdb_meta_unset(m, "c"), 0);
    ck_assert_uint_eq(iqdb_meta_count(m), 0);
    ck_assert_int_eq(iqdb_meta_unset(m, ""), 0);
    ck_assert_int_eq(iqdb_meta_unset(m, NULL), IQDB_EINVAL);
    ck_assert_int_eq(iqdb_meta_unset(NULL, "a"), IQDB_EINVAL);
    /* The emptied map is still usable. */
    ck_assert_int_eq(iqdb_meta_set(m, "a", iqdb_value_int(9)), 0);
    ck_assert(get_ok(m, "a").v.i == 9);
    iqdb_meta_free(m);
}
END_TEST

/* ---- order ----------------------------------------------------------- */

static int order_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

START_TEST(test_meta_order)
{
    const char *keys[] = {"b",  "a",   "aa", "B",    "\xff", "a.b",
                          "_",  "z9",  "z",  "\x01", "ab",   "Zeta",
                          "0",  "a\x80"};
    const size_t n = sizeof keys / sizeof keys[0];
    iqdb_meta *m = new_meta();
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(iqdb_meta_set(m, keys[i], iqdb_value_int((int64_t)i)),
                         0);
    const char *sorted[sizeof keys / sizeof keys[0]];
    memcpy(sorted, keys, sizeof keys);
    /* strcmp compares as unsigned char: bytewise order. */
    qsort(sorted, n, sizeof sorted[0], order_keys);
    ck_assert_uint_eq(iqdb_meta_count(m), n);
    for (size_t i = 0; i < n; i++) {
        const char *k = NULL;
        iqdb_value v;
        ck_assert_int_eq(iqdb_meta_at(m, i, &k, &v), 0);
        ck_assert_str_eq(k, sorted[i]);
        ck_assert_int_eq(v.type, IQDB_TYPE_INT);
        ck_assert_str_eq(keys[v.v.i], k);
    }
    ck_assert_int_eq(iqdb_meta_at(m, n, NULL, NULL), IQDB_ERANGE);
    ck_assert_int_eq(iqdb_meta_at(m, (size_t)-1, NULL, NULL), IQDB_ERANGE);
    ck_assert_int_eq(iqdb_meta_at(NULL, 0, NULL, NULL), IQDB_EINVAL);
    /* Either output may be skipped. */
    const char *k = NULL;
    ck_assert_int_eq(iqdb_meta_at(m, 0, &k, NULL), 0);
    ck_assert_str_eq(k, sorted[0]);
    iqdb_meta_free(m);
}
END_TEST

/* ---- keys ------------------------------------------------------------ */

START_TEST(test_meta_keys)
{
    iqdb_meta *m = new_meta();
    char key[IQDB_META_MAX_KEY + 2];
    memset(key, 'k', sizeof key);
    key[IQDB_META_MAX_KEY] = '\0';
    ck_assert_int_eq(iqdb_meta_set(m, key, iqdb_value_int(1)), 0);
    ck_assert(get_ok(m, key).v.i == 1);
    key[IQDB_META_MAX_KEY] = 'k';
    key[IQDB_META_MAX_KEY + 1] = '\0';
    ck_assert_int_eq(iqdb_meta_set(m, key, iqdb_value_int(1)), IQDB_EINVAL);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "key"));
    ck_assert_int_eq(iqdb_meta_set(m, "", iqdb_value_int(1)), IQDB_EINVAL);
    ck_assert_int_eq(iqdb_meta_set(m, NULL, iqdb_value_int(1)), IQDB_EINVAL);
    ck_assert_int_eq(iqdb_meta_set(NULL, "a", iqdb_value_int(1)),
                     IQDB_EINVAL);
    ck_assert_int_eq(iqdb_meta_set(m, "\xc3\xa9t\xc3\xa9",
                                   iqdb_value_int(2)), 0);
    ck_assert_uint_eq(iqdb_meta_count(m), 2);
    iqdb_value v;
    ck_assert_int_eq(iqdb_meta_get(m, NULL, &v), IQDB_EINVAL);
    ck_assert_int_eq(iqdb_meta_get(NULL, "a", &v), IQDB_EINVAL);
    ck_assert_int_eq(iqdb_meta_get(m, "a", NULL), IQDB_EINVAL);
    iqdb_meta_free(m);
}
END_TEST

/* ---- limits ---------------------------------------------------------- */

START_TEST(test_meta_limits_values)
{
    iqdb_meta *m = new_meta();
    char *big = malloc(IQDB_META_MAX_STR + 1);
    ck_assert_ptr_nonnull(big);
    memset(big, 'x', IQDB_META_MAX_STR + 1);
    ck_assert_int_eq(iqdb_meta_set(m, "s",
                                   iqdb_value_strn(big, IQDB_META_MAX_STR)),
                     0);
    ck_assert_uint_eq(get_ok(m, "s").len, IQDB_META_MAX_STR);
    ck_assert_int_eq(iqdb_meta_set(m, "t", iqdb_value_strn(
                                   big, IQDB_META_MAX_STR + 1)),
                     IQDB_EINVAL);
    free(big);
    ck_assert_int_eq(iqdb_meta_set(m, "d", iqdb_value_double(NAN)),
                     IQDB_EINVAL);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "NaN"));
    iqdb_value bad = iqdb_value_int(0);
    bad.type = (iqdb_type)99;
    ck_assert_int_eq(iqdb_meta_set(m, "x", bad), IQDB_EINVAL);
    bad.type = IQDB_TYPE_STRING;
    bad.v.s = NULL;
    bad.len = 3;
    ck_assert_int_eq(iqdb_meta_set(m, "x", bad), IQDB_EINVAL);
    /* None of the failures added anything. */
    ck_assert_uint_eq(iqdb_meta_count(m), 1);
    iqdb_meta_free(m);
}
END_TEST

START_TEST(test_meta_limits_entries)
{
    iqdb_meta *m = new_meta();
    char key[32];
    /* Descending keys: every insertion goes to the front. */
    for (unsigned i = 0; i < IQDB_META_MAX_ENTRIES; i++) {
        snprintf(key, sizeof key, "k%05u", IQDB_META_MAX_ENTRIES - i);
        ck_assert_int_eq(iqdb_meta_set(m, key, iqdb_value_int(i)), 0);
    }
    ck_assert_uint_eq(iqdb_meta_count(m), IQDB_META_MAX_ENTRIES);
    ck_assert_int_eq(iqdb_meta_set(m, "new", iqdb_value_int(0)),
                     IQDB_EINVAL);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "full"));
    /* A full map still takes replacements. */
    ck_assert_int_eq(iqdb_meta_set(m, "k00001", iqdb_value_str("r")), 0);
    ck_assert_uint_eq(iqdb_meta_count(m), IQDB_META_MAX_ENTRIES);
    for (unsigned i = 1; i <= IQDB_META_MAX_ENTRIES; i++) {
        const char *k;
        snprintf(key, sizeof key, "k%05u", i);
        ck_assert_int_eq(iqdb_meta_at(m, i - 1, &k, NULL), 0);
        ck_assert_str_eq(k, key);
    }
    ck_assert_int_eq(iqdb_meta_unset(m, "k00002"), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "new", iqdb_value_int(0)), 0);
    iqdb_meta_free(m);
}
END_TEST

/* ---- clone ----------------------------------------------------------- */

START_TEST(test_meta_clone)
{
    iqdb_meta *m = new_meta();
    ck_assert_int_eq(iqdb_meta_set(m, "s", iqdb_value_strn("a\0b", 3)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "i", iqdb_value_int(5)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "n", iqdb_value_null()), 0);
    iqdb_meta *c = iqdb_meta_clone(m);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_ne(c, m);
    ck_assert_uint_eq(iqdb_meta_count(c), 3);
    iqdb_value vm = get_ok(m, "s"), vc = get_ok(c, "s");
    assert_str(vc, "a\0b", 3);
    ck_assert_ptr_ne(vm.v.s, vc.v.s);

    /* Changes to either side stay on that side. */
    ck_assert_int_eq(iqdb_meta_set(c, "i", iqdb_value_int(6)), 0);
    ck_assert_int_eq(iqdb_meta_unset(c, "s"), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "only_m", iqdb_value_bool(1)), 0);
    ck_assert(get_ok(m, "i").v.i == 5);
    assert_str(get_ok(m, "s"), "a\0b", 3);
    ck_assert(get_ok(c, "i").v.i == 6);
    ck_assert_uint_eq(iqdb_meta_count(c), 2);
    iqdb_value v;
    ck_assert_int_eq(iqdb_meta_get(c, "only_m", &v), IQDB_ENOTFOUND);

    /* The copy outlives the original. */
    iqdb_meta_free(m);
    ck_assert_int_eq(get_ok(c, "n").type, IQDB_TYPE_NULL);
    iqdb_meta_free(c);

    iqdb_meta *e = new_meta();
    c = iqdb_meta_clone(e);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(iqdb_meta_count(c), 0);
    ck_assert_int_eq(iqdb_meta_set(c, "a", iqdb_value_int(1)), 0);
    ck_assert_uint_eq(iqdb_meta_count(e), 0);
    iqdb_meta_free(c);
    iqdb_meta_free(e);
    ck_assert_ptr_null(iqdb_meta_clone(NULL));
}
END_TEST

/* ---- sharing --------------------------------------------------------- */

START_TEST(test_meta_refcount)
{
    iqdb_meta *m = new_meta();
    ck_assert_int_eq(iqdb_meta_set(m, "s", iqdb_value_str("shared")), 0);
    iqdb_meta *r = iqdb__meta_ref(m);
    ck_assert_ptr_eq(r, m);
    /* Shared maps are read-only. */
    ck_assert_int_eq(iqdb_meta_set(m, "t", iqdb_value_int(1)), IQDB_EINVAL);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "shared"));
    ck_assert_int_eq(iqdb_meta_unset(m, "s"), IQDB_EINVAL);
    ck_assert_uint_eq(iqdb_meta_count(m), 1);
    /* A clone of a shared map is private again. */
    iqdb_meta *c = iqdb_meta_clone(r);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(iqdb_meta_set(c, "t", iqdb_value_int(1)), 0);
    iqdb_meta_free(c);
    /* Dropping one reference leaves the map alive and readable. */
    iqdb_meta_free(m);
    assert_str(get_ok(r, "s"), "shared", 6);
    /* Back to one owner: writable. */
    ck_assert_int_eq(iqdb_meta_set(r, "t", iqdb_value_int(1)), 0);
    iqdb_meta_free(r);

    ck_assert_ptr_null(iqdb__meta_ref(NULL));
    iqdb_meta_free(NULL);
}
END_TEST

#define REF_THREADS 4
#define REF_ROUNDS 20000

static void *ref_worker(void *arg)
{
    const iqdb_meta *m = arg;
    for (int i = 0; i < REF_ROUNDS; i++) {
        iqdb_meta *r = iqdb__meta_ref(m);
        iqdb_value v;
        if (iqdb_meta_get(r, "k", &v) != 0)
            return (void *)1;
        iqdb_meta_free(r);
    }
    return NULL;
}

START_TEST(test_meta_refcount_threads)
{
    iqdb_meta *m = new_meta();
    ck_assert_int_eq(iqdb_meta_set(m, "k", iqdb_value_int(1)), 0);
    pthread_t t[REF_THREADS];
    for (int i = 0; i < REF_THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, ref_worker, m), 0);
    for (int i = 0; i < REF_THREADS; i++) {
        void *res;
        ck_assert_int_eq(pthread_join(t[i], &res), 0);
        ck_assert_ptr_null(res);
    }
    /* Every reference taken was dropped: the map is private again. */
    ck_assert_int_eq(iqdb_meta_set(m, "k2", iqdb_value_int(2)), 0);
    iqdb_meta_free(m);
}
END_TEST

/* ---- internal lookups and accounting --------------------------------- */

START_TEST(test_meta_find)
{
    iqdb_meta *m = new_meta();
    ck_assert_int_eq(iqdb_meta_set(m, "year", iqdb_value_int(2026)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "y", iqdb_value_int(1)), 0);
    const iqdb_value *v = iqdb__meta_find(m, "yearly", 4);
    ck_assert_ptr_nonnull(v);
    ck_assert(v->v.i == 2026);
    v = iqdb__meta_find(m, "year", 1);
    ck_assert_ptr_nonnull(v);
    ck_assert(v->v.i == 1);
    ck_assert_ptr_null(iqdb__meta_find(m, "yea", 3));
    ck_assert_ptr_null(iqdb__meta_find(NULL, "y", 1));
    ck_assert_ptr_null(iqdb__meta_find(m, "y", 0));
    ck_assert_int_eq(iqdb_meta_get(m, "", &(iqdb_value){0}), IQDB_ENOTFOUND);
    iqdb_meta_free(m);
}
END_TEST

START_TEST(test_meta_memory)
{
    iqdb_meta *m = new_meta();
    size_t empty = iqdb__meta_memory(m);
    ck_assert_uint_gt(empty, 0);
    ck_assert_int_eq(iqdb_meta_set(m, "a", iqdb_value_int(1)), 0);
    size_t one = iqdb__meta_memory(m);
    ck_assert_uint_gt(one, empty);
    char big[1000];
    memset(big, 'b', sizeof big);
    ck_assert_int_eq(iqdb_meta_set(m, "a", iqdb_value_strn(big, 1000)), 0);
    ck_assert_uint_ge(iqdb__meta_memory(m), one + 1000);
    ck_assert_uint_eq(iqdb__meta_memory(NULL), 0);
    iqdb_meta_free(m);
}
END_TEST

/* ---- allocation failures --------------------------------------------- */

/* Sweeps stop here at the latest: a sweep that never succeeds is a bug. */
#define SWEEP_MAX 10000

START_TEST(test_meta_oom_new)
{
    long n;
    for (n = 0; n < SWEEP_MAX; n++) {
        iqdb__alloc_fail_after(n);
        iqdb_meta *m = iqdb_meta_new();
        iqdb__alloc_fail_after(-1);
        if (m != NULL) {
            iqdb_meta_free(m);
            break;
        }
        ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "memory"));
    }
    ck_assert_int_eq(n, 1);
}
END_TEST

/* A map with `count` keys k000, k002, ... (even numbers). */
static iqdb_meta *fill_meta(unsigned count)
{
    iqdb_meta *m = new_meta();
    char key[16];
    for (unsigned i = 0; i < count; i++) {
        snprintf(key, sizeof key, "k%03u", 2 * i);
        ck_assert_int_eq(iqdb_meta_set(m, key, iqdb_value_str(key)), 0);
    }
    return m;
}

static void assert_filled(const iqdb_meta *m, unsigned count)
{
    char key[16];
    ck_assert_uint_eq(iqdb_meta_count(m), count);
    for (unsigned i = 0; i < count; i++) {
        snprintf(key, sizeof key, "k%03u", 2 * i);
        assert_str(get_ok(m, key), key, strlen(key));
    }
}

START_TEST(test_meta_oom_set)
{
    /* 4 entries fill the initial array, so the 5th key grows it. */
    const unsigned sizes[] = {0, 3, 4};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        iqdb_meta *m = fill_meta(sizes[s]);
        long n;
        int rc = -1;
        for (n = 0; n < SWEEP_MAX; n++) {
            iqdb__alloc_fail_after(n);
            rc = iqdb_meta_set(m, "k001", iqdb_value_str("new"));
            iqdb__alloc_fail_after(-1);
            if (rc == 0)
                break;
            ck_assert_int_eq(rc, IQDB_ENOMEM);
            assert_filled(m, sizes[s]);
        }
        ck_assert_int_eq(rc, 0);
        ck_assert_int_eq(n, sizes[s] % 4 == 0 ? 2 : 1);
        assert_str(get_ok(m, "k001"), "new", 3);
        ck_assert_uint_eq(iqdb_meta_count(m), sizes[s] + 1);
        iqdb_meta_free(m);
    }
}
END_TEST

START_TEST(test_meta_oom_replace)
{
    iqdb_meta *m = fill_meta(3);
    long n;
    int rc = -1;
    for (n = 0; n < SWEEP_MAX; n++) {
        iqdb__alloc_fail_after(n);
        rc = iqdb_meta_set(m, "k002", iqdb_value_int(7));
        iqdb__alloc_fail_after(-1);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, IQDB_ENOMEM);
        assert_filled(m, 3);
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(n, 1);
    ck_assert(get_ok(m, "k002").v.i == 7);
    iqdb_meta_free(m);
}
END_TEST

START_TEST(test_meta_oom_clone)
{
    iqdb_meta *m = fill_meta(6);
    long n;
    iqdb_meta *c = NULL;
    for (n = 0; n < SWEEP_MAX; n++) {
        iqdb__alloc_fail_after(n);
        c = iqdb_meta_clone(m);
        iqdb__alloc_fail_after(-1);
        if (c != NULL)
            break;
    }
    /* The map, its array, one buffer per entry. */
    ck_assert_int_eq(n, 8);
    assert_filled(c, 6);
    assert_filled(m, 6);
    iqdb_meta_free(c);
    iqdb_meta_free(m);
}
END_TEST

static Suite *meta_suite(void)
{
    Suite *s = suite_create("meta");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"values", test_meta_values},
        {"types", test_meta_types},
        {"replace", test_meta_replace},
        {"unset", test_meta_unset},
        {"order", test_meta_order},
        {"keys", test_meta_keys},
        {"limits_values", test_meta_limits_values},
        {"limits_entries", test_meta_limits_entries},
        {"clone", test_meta_clone},
        {"refcount", test_meta_refcount},
        {"refcount_threads", test_meta_refcount_threads},
        {"find", test_meta_find},
        {"memory", test_meta_memory},
        {"oom_new", test_meta_oom_new},
        {"oom_set", test_meta_oom_set},
        {"oom_replace", test_meta_oom_replace},
        {"oom_clone", test_meta_oom_clone},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(meta_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
