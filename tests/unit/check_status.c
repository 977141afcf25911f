/* tests/unit/check_status.c - status codes, names and descriptions. */
#include "config.h"

#include <string.h>

#include "iqdb_int.h"
#include "testutil.h"

START_TEST(test_status_every_code_named)
{
    int seen = 0;
#define XX(name, value, desc)                                                \
    ck_assert_str_eq(iqdb_errname(IQDB_##name), #name);                      \
    ck_assert_str_eq(iqdb_strerror(IQDB_##name), desc);                      \
    ck_assert_int_lt(IQDB_##name, 0);                                        \
    seen++;
    IQDB_STATUS_MAP(XX)
#undef XX
    ck_assert_int_ge(seen, 25);
    ck_assert_str_eq(iqdb_strerror(0), "success");
    ck_assert_str_eq(iqdb_errname(0), "OK");
    ck_assert_str_eq(iqdb_strerror(-9999), "unknown error");
    ck_assert_str_eq(iqdb_errname(12), "UNKNOWN");
}
END_TEST

START_TEST(test_status_codes_stable)
{
    /* Released codes never change value. */
    ck_assert_int_eq(IQDB_EINVAL, -1);
    ck_assert_int_eq(IQDB_EDIM, -3);
    ck_assert_int_eq(IQDB_ECORRUPT, -18);
    ck_assert_int_eq(IQDB_EEXIST, -25);
}
END_TEST

START_TEST(test_status_metric_names)
{
    iqdb_metric m;
    ck_assert_int_eq(iqdb_metric_parse("L2", &m), 0);
    ck_assert_int_eq(m, IQDB_METRIC_EUCLIDEAN);
    ck_assert_int_eq(iqdb_metric_parse("cosine", &m), 0);
    ck_assert_str_eq(iqdb_metric_name(m), "cosine");
    ck_assert_int_eq(iqdb_metric_parse("chebyshev", &m), IQDB_EMETRIC);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "chebyshev"));
    ck_assert_ptr_null(iqdb_metric_name((iqdb_metric)0));
    ck_assert_str_eq(iqdb_version(), IQDB_VERSION_STRING);
}
END_TEST

START_TEST(test_status_alloc_fault_injection)
{
    iqdb__alloc_fail_after(2);
    void *a = iqdb__malloc(8), *b = iqdb__malloc(8), *c = iqdb__malloc(8);
    iqdb__alloc_fail_after(-1);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_null(c);
    iqdb__free(a);
    iqdb__free(b);
    size_t out;
    ck_assert_int_eq(iqdb__mul_size(SIZE_MAX / 2, 3, &out), -1);
    ck_assert_int_eq(iqdb__mul_size(6, 7, &out), 0);
    ck_assert_uint_eq(out, 42);
}
END_TEST

static Suite *status_suite(void)
{
    Suite *s = suite_create("status");
    TCase *tc = tcase_create("codes");
    tcase_add_test(tc, test_status_every_code_named);
    tcase_add_test(tc, test_status_codes_stable);
    tcase_add_test(tc, test_status_metric_names);
    suite_add_tcase(s, tc);
    tc = tcase_create("alloc");
    tcase_add_test(tc, test_status_alloc_fault_injection);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(status_suite());
}
