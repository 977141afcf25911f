/*
 * tests/integration/api_test.c - the seeds' README walk-through, through
 * the shared library and the public header only (as an application sees
 * it): open, upsert with metadata, search, filtered search, batch, get,
 * delete, errors.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <iqdb/iqdb.h>

static iqdb *open_db(uint32_t dim, iqdb_metric m)
{
    iqdb_config *c = iqdb_config_new(dim, m);
    iqdb *db = NULL;
    ck_assert_msg(iqdb_open_memory(c, &db) == 0, "%s", iqdb_errmsg(NULL));
    iqdb_config_free(c);
    return db;
}

START_TEST(test_api_quick_start)
{
    iqdb *db = open_db(3, IQDB_METRIC_COSINE);
    float a[3] = {1, 0, 0}, b[3] = {0, 1, 0};
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(1), a, 3, NULL), 0);
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(2), b, 3, NULL), 0);
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, a, 3, 1, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 1);
    ck_assert_uint_eq(iqdb_results_hits(r, 0)[0].id.v.u64, 1);
    ck_assert(fabsf(iqdb_results_hits(r, 0)[0].distance) < 1e-6f);
    iqdb_results_free(r);
    ck_assert_int_eq(iqdb_close(db), 0);
}
END_TEST

START_TEST(test_api_filtered_documents)
{
    iqdb *db = open_db(2, IQDB_METRIC_COSINE);
    iqdb_meta *doc = iqdb_meta_new(), *img = iqdb_meta_new();
    iqdb_meta_set(doc, "kind", iqdb_value_str("doc"));
    iqdb_meta_set(doc, "year", iqdb_value_int(2026));
    iqdb_meta_set(img, "kind", iqdb_value_str("image"));
    float v1[2] = {1, 0}, v2[2] = {0.99f, 0.10f};
    iqdb_upsert(db, iqdb_id_u64(1), v1, 2, doc);
    iqdb_upsert(db, iqdb_id_u64(2), v2, 2, img);
    iqdb_meta_free(doc);
    iqdb_meta_free(img);
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, v1, 2, 2, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 2);
    iqdb_results_free(r);
    iqdb_filter *f;
    iqdb_parse_error pe;
    ck_assert_int_eq(iqdb_filter_parse(
                         "kind = \"doc\" AND year >= 2026 AND NOT tag IN "
                         "(\"a\", \"b\")",
                         &f, &pe),
                     0);
    ck_assert_int_eq(iqdb_search(db, v1, 2, 5, f, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 1);
    const iqdb_hit *h = iqdb_results_hits(r, 0);
    ck_assert_uint_eq(h[0].id.v.u64, 1);
    iqdb_value v;
    ck_assert_int_eq(iqdb_meta_get(h[0].meta, "year", &v), 0);
    ck_assert_int_eq(v.v.i, 2026);
    iqdb_results_free(r);
    iqdb_filter_free(f);
    ck_assert_int_eq(iqdb_filter_parse("kind = ", &f, &pe), IQDB_EPARSE);
    ck_assert_uint_eq(pe.offset, 7);
    iqdb_close(db);
}
END_TEST

START_TEST(test_api_errors_are_codes_with_messages)
{
    iqdb *db = open_db(3, IQDB_METRIC_COSINE);
    float v[1] = {1};
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(1), v, 1, NULL), IQDB_EDIM);
    ck_assert_str_eq(iqdb_errname(IQDB_EDIM), "EDIM");
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(db), "dimension 1"));
    ck_assert_uint_eq(iqdb_count(db), 0);
    iqdb_close(db);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("readme");
    tcase_add_test(tc, test_api_quick_start);
    tcase_add_test(tc, test_api_filtered_documents);
    tcase_add_test(tc, test_api_errors_are_codes_with_messages);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
