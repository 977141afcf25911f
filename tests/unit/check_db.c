/*
 * tests/unit/check_db.c - the database handle through the public API:
 * open, records, validation, ordering, filters, batches, threads and
 * allocation failures.
 */
#include "config.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "iqdb_int.h"
#include "testutil.h"

/* ---- open ------------------------------------------------------------- */

START_TEST(test_db_open_rejects_bad_config)
{
    iqdb *db = NULL;
    iqdb_config *c = iqdb_config_new(0, IQDB_METRIC_EUCLIDEAN);
    ck_assert_int_eq(iqdb_open_memory(c, &db), IQDB_EINVAL);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "dim 0"));
    iqdb_config_free(c);
    c = iqdb_config_new(IQDB_MAX_DIM + 1, IQDB_METRIC_EUCLIDEAN);
    ck_assert_int_eq(iqdb_open_memory(c, &db), IQDB_EINVAL);
    iqdb_config_free(c);
    c = iqdb_config_new(4, (iqdb_metric)99);
    ck_assert_int_eq(iqdb_open_memory(c, &db), IQDB_EMETRIC);
    iqdb_config_free(c);
    ck_assert_int_eq(iqdb_open_memory(NULL, &db), IQDB_EINVAL);
    ck_assert_ptr_null(db);
}
END_TEST

START_TEST(test_db_open_unknown_plugin)
{
    iqdb *db = NULL;
    iqdb_config *c = iqdb_config_new(4, IQDB_METRIC_EUCLIDEAN);
    iqdb_config_set_index(c, "nosuchindex");
    ck_assert_int_eq(iqdb_open_memory(c, &db), IQDB_ENOPLUGIN);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "nosuchindex"));
    ck_assert_ptr_null(db);
    iqdb_config_free(c);
}
END_TEST

START_TEST(test_db_open_bad_param_named)
{
    iqdb *db = NULL;
    iqdb_config *c = iqdb_config_new(4, IQDB_METRIC_EUCLIDEAN);
    iqdb_config_set_param(c, "bogus_key", "3");
    ck_assert_int_eq(iqdb_open_memory(c, &db), IQDB_EPARAM);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "bogus_key"));
    iqdb_config_free(c);
}
END_TEST

START_TEST(test_db_open_max_dim)
{
    iqdb *db = tu_open(IQDB_MAX_DIM, IQDB_METRIC_DOT, NULL);
    float *v = calloc(IQDB_MAX_DIM, sizeof *v);
    v[IQDB_MAX_DIM - 1] = 2.0f;
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(1), v, IQDB_MAX_DIM, NULL), 0);
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(2), v, IQDB_MAX_DIM, NULL), 0);
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, v, IQDB_MAX_DIM, 5, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 2);
    ck_assert_float_eq(iqdb_results_hits(r, 0)[0].distance, -4.0f);
    iqdb_results_free(r);
    free(v);
    iqdb_close(db);
}
END_TEST

START_TEST(test_db_durable_open_arguments)
{
    iqdb *db = NULL;
    iqdb_config *c = iqdb_config_new(4, IQDB_METRIC_EUCLIDEAN);
    ck_assert_int_eq(iqdb_open(NULL, c, &db), IQDB_EINVAL);
    ck_assert_int_eq(iqdb_open("", c, &db), IQDB_EINVAL);
    ck_assert_int_eq(iqdb_open("/nonexistent-parent/db", NULL, &db),
                     IQDB_EINVAL);
    ck_assert_ptr_null(db);
    /* An in-memory database flushes as a no-op. */
    ck_assert_int_eq(iqdb_open_memory(c, &db), 0);
    ck_assert_int_eq(iqdb_flush(db), 0);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* ---- records ---------------------------------------------------------- */

START_TEST(test_db_crud)
{
    iqdb *db = tu_open(2, IQDB_METRIC_COSINE, NULL);
    float a[2] = {1, 0}, b[2] = {0, 1}, out[2];
    iqdb_meta *m = iqdb_meta_new();
    iqdb_meta_set(m, "kind", iqdb_value_str("doc"));
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(1), a, 2, m), 0);
    iqdb_meta_free(m);
    ck_assert_uint_eq(iqdb_count(db), 1);
    /* Replace keeps the count and drops the old metadata. */
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(1), b, 2, NULL), 0);
    ck_assert_uint_eq(iqdb_count(db), 1);
    iqdb_meta *got = (iqdb_meta *)1;
    ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(1), out, 2, &got), 0);
    ck_assert_float_eq(out[0], 0.0f);
    ck_assert_float_eq(out[1], 1.0f);
    ck_assert_ptr_null(got);
    int present = -1;
    ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(1), &present), 0);
    ck_assert_int_eq(present, 1);
    ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(1), &present), 0);
    ck_assert_int_eq(present, 0);
    ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(1), out, 2, NULL),
                     IQDB_ENOTFOUND);
    ck_assert_uint_eq(iqdb_count(db), 0);
    iqdb_close(db);
}
END_TEST

START_TEST(test_db_byte_ids)
{
    iqdb *db = tu_open(2, IQDB_METRIC_EUCLIDEAN, NULL);
    float a[2] = {1, 2}, b[2] = {3, 4}, out[2];
    const unsigned char key[3] = {0xde, 0x00, 0xad};
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_bytes(key, 3), a, 2, NULL), 0);
    /* u64 7 and the 8 bytes of 7 are different ids. */
    uint64_t seven = 7;
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(7), b, 2, NULL), 0);
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_bytes(&seven, 8), a, 2, NULL), 0);
    ck_assert_uint_eq(iqdb_count(db), 3);
    ck_assert_int_eq(iqdb_get(db, iqdb_id_bytes(key, 3), out, 2, NULL), 0);
    ck_assert_float_eq(out[1], 2.0f);
    ck_assert_int_eq(iqdb_get(db, iqdb_id_bytes(key, 2), out, 2, NULL),
                     IQDB_ENOTFOUND);
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, a, 2, 1, NULL, NULL, &r), 0);
    const iqdb_hit *h = iqdb_results_hits(r, 0);
    ck_assert_uint_eq(h[0].id.kind, IQDB_ID_BYTES);
    ck_assert_uint_eq(h[0].id.len, 3);
    ck_assert_mem_eq(h[0].id.v.bytes, key, 3);
    iqdb_close(db);
    /* Results own their ids: still readable after close. */
    ck_assert_mem_eq(h[0].id.v.bytes, key, 3);
    iqdb_results_free(r);
}
END_TEST

START_TEST(test_db_slot_reuse)
{
    iqdb *db = tu_open(3, IQDB_METRIC_EUCLIDEAN, NULL);
    float v[3];
    uint64_t seed = 1;
    for (uint64_t i = 0; i < 1000; i++) {
        tu_fill(&seed, v, 3);
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), v, 3, NULL), 0);
    }
    for (uint64_t i = 0; i < 1000; i += 2)
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
    uint64_t limit = db->store.limit;
    for (uint64_t i = 5000; i < 5500; i++) {
        tu_fill(&seed, v, 3);
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), v, 3, NULL), 0);
    }
    /* The 500 freed slots were reused: no new slots handed out. */
    ck_assert_uint_eq(db->store.limit, limit);
    ck_assert_uint_eq(iqdb_count(db), 1000);
    for (uint64_t i = 5000; i < 5500; i++)
        ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(i), NULL, 0, NULL), 0);
    for (uint64_t i = 0; i < 1000; i++)
        ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(i), NULL, 0, NULL),
                         i % 2 ? 0 : IQDB_ENOTFOUND);
    iqdb_close(db);
}
END_TEST

/* ---- validation ------------------------------------------------------- */

/* Every rejected call leaves the database exactly as it was. */
static void assert_unchanged(iqdb *db)
{
    float q[3] = {0, 0, 0}, out[3];
    ck_assert_uint_eq(iqdb_count(db), 1);
    ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(1), out, 3, NULL), 0);
    ck_assert_float_eq(out[0], 1.0f);
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, q, 3, 5, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 1);
    iqdb_results_free(r);
}

START_TEST(test_db_validation)
{
    iqdb *db = tu_open(3, IQDB_METRIC_EUCLIDEAN, NULL);
    float v[3] = {1, 2, 3}, bad[3] = {1, NAN, 3}, inf[3] = {INFINITY, 0, 0};
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(1), v, 3, NULL), 0);
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(1), v, 2, NULL), IQDB_EDIM);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(db), "dimension 2"));
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(1), bad, 3, NULL),
                     IQDB_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(db), "element 1 is NaN"));
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(2), inf, 3, NULL),
                     IQDB_ENONFINITE);
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(2), v, 0, NULL), IQDB_EEMPTY);
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(2), NULL, 3, NULL),
                     IQDB_EINVAL);
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_bytes("", 0), v, 3, NULL),
                     IQDB_EID);
    static char big[IQDB_ID_MAX_BYTES + 1];
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_bytes(big, sizeof big), v, 3,
                                 NULL),
                     IQDB_EID);
    iqdb_id weird = iqdb_id_u64(3);
    weird.kind = 77;
    ck_assert_int_eq(iqdb_upsert(db, weird, v, 3, NULL), IQDB_EID);
    ck_assert_int_eq(iqdb_upsert(NULL, iqdb_id_u64(2), v, 3, NULL),
                     IQDB_EINVAL);
    iqdb_results *r = (iqdb_results *)1;
    ck_assert_int_eq(iqdb_search(db, v, 3, 0, NULL, NULL, &r), IQDB_EK);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(iqdb_search(db, v, 4, 1, NULL, NULL, &r), IQDB_EDIM);
    ck_assert_int_eq(iqdb_search(db, bad, 3, 1, NULL, NULL, &r),
                     IQDB_ENONFINITE);
    ck_assert_int_eq(iqdb_search(db, NULL, 3, 1, NULL, NULL, &r), IQDB_EINVAL);
    ck_assert_int_eq(iqdb_search(db, v, 0, 1, NULL, NULL, &r), IQDB_EEMPTY);
    iqdb_params *p = iqdb_params_new();
    iqdb_params_set(p, "ef_search", "10");
    ck_assert_int_eq(iqdb_search(db, v, 3, 1, NULL, p, &r), IQDB_EPARAM);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(db), "ef_search"));
    iqdb_params_free(p);
    float out[2];
    ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(1), out, 2, NULL), IQDB_EDIM);
    assert_unchanged(db);
    iqdb_close(db);
}
END_TEST

/* The finite check looks at several elements at a time: a NaN or an
 * infinity in any lane, at any position, in any dimension, is found and
 * named, and no finite value (the largest, the smallest subnormal, minus
 * zero) is taken for one. */
START_TEST(test_db_nonfinite_every_position)
{
    const float bad[4] = {NAN, -NAN, INFINITY, -INFINITY};
    const float fine[5] = {FLT_MAX, -FLT_MAX, 1e-45f, -0.0f, FLT_MIN};
    float v[40];
    char want[64];
    for (uint32_t dim = 1; dim <= 40; dim++) {
        iqdb *db = tu_open(dim, IQDB_METRIC_EUCLIDEAN, NULL);
        iqdb_results *r = NULL;
        for (uint32_t i = 0; i < dim; i++)
            v[i] = fine[i % 5];
        ck_assert_int_eq(iqdb_search(db, v, dim, 1, NULL, NULL, &r), 0);
        iqdb_results_free(r);
        for (uint32_t p = 0; p < dim; p++) {
            for (int b = 0; b < 4; b++) {
                v[p] = bad[b];
                ck_assert_int_eq(iqdb_search(db, v, dim, 1, NULL, NULL, &r),
                                 IQDB_ENONFINITE);
                snprintf(want, sizeof want, "element %u is %s", p,
                         b < 2 ? "NaN" : "infinite");
                ck_assert_ptr_nonnull(strstr(iqdb_errmsg(db), want));
                v[p] = fine[p % 5];
            }
        }
        iqdb_close(db);
    }
}
END_TEST

START_TEST(test_db_errmsg_per_handle)
{
    iqdb *a = tu_open(2, IQDB_METRIC_EUCLIDEAN, NULL);
    iqdb *b = tu_open(2, IQDB_METRIC_EUCLIDEAN, NULL);
    float v[2] = {1, 1};
    ck_assert_int_eq(iqdb_upsert(a, iqdb_id_u64(1), v, 3, NULL), IQDB_EDIM);
    ck_assert_str_ne(iqdb_errmsg(a), "");
    ck_assert_str_eq(iqdb_errmsg(b), "");
    ck_assert_str_eq(iqdb_errmsg(NULL), iqdb_errmsg(a));
    iqdb_close(a);
    iqdb_close(b);
}
END_TEST

START_TEST(test_db_batch_all_or_nothing)
{
    iqdb *db = tu_open(3, IQDB_METRIC_EUCLIDEAN, NULL);
    float v[3] = {1, 2, 3}, w[3] = {4, 5, 6}, bad[3] = {0, 0, NAN};
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(1), v, 3, NULL), 0);
    iqdb_record recs[4] = {{iqdb_id_u64(10), v, NULL},
                           {iqdb_id_u64(1), w, NULL},
                           {iqdb_id_u64(11), bad, NULL},
                           {iqdb_id_u64(12), v, NULL}};
    ck_assert_int_eq(iqdb_upsert_batch(db, recs, 4, 3), IQDB_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(db), "record 2"));
    assert_unchanged(db);
    /* Duplicates within a batch: the last one wins. */
    recs[2].vector = w;
    recs[3].id = iqdb_id_u64(10);
    recs[3].vector = w;
    ck_assert_int_eq(iqdb_upsert_batch(db, recs, 4, 3), 0);
    ck_assert_uint_eq(iqdb_count(db), 3);
    float out[3];
    ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(10), out, 3, NULL), 0);
    ck_assert_float_eq(out[0], 4.0f);
    ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(1), out, 3, NULL), 0);
    ck_assert_float_eq(out[0], 4.0f);
    ck_assert_int_eq(iqdb_upsert_batch(db, recs, 0, 3), 0);
    iqdb_close(db);
}
END_TEST

/* ---- ordering --------------------------------------------------------- */

START_TEST(test_db_ties_by_insertion_order)
{
    iqdb *db = tu_open(2, IQDB_METRIC_EUCLIDEAN, NULL);
    float v[2] = {1, 1}, q[2] = {0, 0};
    /* Inserted in a scrambled id order; all at the same distance. */
    uint64_t ids[6] = {50, 3, 99, 7, 1, 20};
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(ids[i]), v, 2, NULL), 0);
    /* Free a low slot and re-insert: order follows time, not slot. */
    iqdb_delete(db, iqdb_id_u64(3), NULL);
    iqdb_upsert(db, iqdb_id_u64(3), v, 2, NULL);
    uint64_t want[6] = {50, 99, 7, 1, 20, 3};
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, q, 2, 4, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 4);
    for (int i = 0; i < 4; i++)
        ck_assert_uint_eq(iqdb_results_hits(r, 0)[i].id.v.u64, want[i]);
    iqdb_results_free(r);
    /* k larger than the count returns every record. */
    ck_assert_int_eq(iqdb_search(db, q, 2, 100, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 6);
    for (int i = 0; i < 6; i++)
        ck_assert_uint_eq(iqdb_results_hits(r, 0)[i].id.v.u64, want[i]);
    iqdb_results_free(r);
    iqdb_close(db);
}
END_TEST

START_TEST(test_db_empty_database)
{
    iqdb *db = tu_open(2, IQDB_METRIC_EUCLIDEAN, NULL);
    float q[2] = {0, 0};
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, q, 2, 10, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_nqueries(r), 1);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 0);
    ck_assert_ptr_null(iqdb_results_hits(r, 0));
    iqdb_results_free(r);
    iqdb_close(db);
}
END_TEST

/* Reported distances follow the documented formulas. */
START_TEST(test_db_metric_distances)
{
    float a[3] = {1, 2, 3}, b[3] = {-1, 0, 3}, z[3] = {0, 0, 0};
    struct {
        iqdb_metric m;
        float ab, az;
    } cases[] = {
        {IQDB_METRIC_EUCLIDEAN, sqrtf(8.0f), sqrtf(14.0f)},
        {IQDB_METRIC_DOT, -8.0f, 0.0f},
        {IQDB_METRIC_COSINE, 1.0f - 8.0f / (sqrtf(14.0f) * sqrtf(10.0f)), 1.0f},
        {IQDB_METRIC_MANHATTAN, 4.0f, 6.0f},
        {IQDB_METRIC_HAMMING, 2.0f, 3.0f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        iqdb *db = tu_open(3, cases[c].m, NULL);
        iqdb_upsert(db, iqdb_id_u64(1), b, 3, NULL);
        iqdb_upsert(db, iqdb_id_u64(2), z, 3, NULL);
        iqdb_results *r;
        ck_assert_int_eq(iqdb_search(db, a, 3, 2, NULL, NULL, &r), 0);
        const iqdb_hit *h = iqdb_results_hits(r, 0);
        for (int i = 0; i < 2; i++) {
            float want = h[i].id.v.u64 == 1 ? cases[c].ab : cases[c].az;
            ck_assert_msg(fabsf(h[i].distance - want) <= 1e-5f * (1 + fabsf(want)),
                          "metric %d: got %g want %g", cases[c].m,
                          h[i].distance, want);
            ck_assert(!isnan(h[i].distance));
        }
        ck_assert(h[0].distance <= h[1].distance);
        iqdb_results_free(r);
        iqdb_close(db);
    }
}
END_TEST

/* ---- filters and batches against a naive reference --------------------- */

#define NREF 6000
#define DREF 24

static float ref_vecs[NREF][DREF];

static iqdb *fill_ref(const char *index)
{
    iqdb *db = tu_open(DREF, IQDB_METRIC_EUCLIDEAN, index);
    uint64_t seed = 42;
    iqdb_record *recs = calloc(NREF, sizeof *recs);
    iqdb_meta **metas = calloc(NREF, sizeof *metas);
    for (int i = 0; i < NREF; i++) {
        tu_fill(&seed, ref_vecs[i], DREF);
        metas[i] = iqdb_meta_new();
        iqdb_meta_set(metas[i], "g", iqdb_value_int(i % 10));
        iqdb_meta_set(metas[i], "even", iqdb_value_bool(i % 2 == 0));
        if (i % 3 == 0)
            iqdb_meta_set(metas[i], "kind", iqdb_value_str("doc"));
        recs[i] = (iqdb_record){iqdb_id_u64((uint64_t)i), ref_vecs[i],
                                metas[i]};
    }
    ck_assert_int_eq(iqdb_upsert_batch(db, recs, NREF, DREF), 0);
    for (int i = 0; i < NREF; i++)
        iqdb_meta_free(metas[i]);
    free(metas);
    free(recs);
    return db;
}

static int ref_match(int i, int which)
{
    switch (which) {
    case 0: return 1;
    case 1: return i % 10 == 3;                  /* g = 3 */
    case 2: return i % 3 == 0 && i % 2 == 0;     /* kind = "doc" AND even */
    case 3: return i % 10 >= 2;                  /* g >= 2 (80 %) */
    case 4: return i == 17 || i == 4242;         /* two records */
    default: return 0;                           /* nothing */
    }
}

static const char *const ref_filters[] = {
    NULL, "g = 3", "kind = \"doc\" AND even = true", "g >= 2",
    "g = 7 AND NOT g IN (7) OR `g` = 7 AND (g < 0) OR g = 9 AND g = 8 OR "
    "(g = 7 AND g = 7 AND g = 9) OR g = 17 OR g = 4242 OR "
    "NOT (g <= 9)",
    "kind = \"none\""};

/* Naive exact top-k with ties by insertion order (= id here). */
static int ref_topk(const float *q, int k, int which, int *out)
{
    int n = 0;
    float best[64];
    for (int i = 0; i < NREF; i++) {
        if (!ref_match(i, which))
            continue;
        float d = 0;
        for (int j = 0; j < DREF; j++)
            d += (q[j] - ref_vecs[i][j]) * (q[j] - ref_vecs[i][j]);
        int p = n < k ? n++ : k;
        if (p == k && !(d < best[k - 1]))
            continue;
        if (p == k)
            p = k - 1;
        while (p > 0 && best[p - 1] > d) {
            best[p] = best[p - 1];
            out[p] = out[p - 1];
            p--;
        }
        best[p] = d;
        out[p] = i;
    }
    return n;
}

static void check_filtered(const char *index)
{
    iqdb *db = fill_ref(index);
    uint64_t seed = 7;
    float q[DREF];
    for (size_t f = 0; f < sizeof ref_filters / sizeof ref_filters[0]; f++) {
        iqdb_filter *flt = NULL;
        if (ref_filters[f]) {
            iqdb_parse_error pe;
            ck_assert_msg(iqdb_filter_parse(ref_filters[f], &flt, &pe) == 0,
                          "parse %s: %s", ref_filters[f], pe.message);
        }
        /* filter 4 matches ids 17 and 4242 only when "g" equals them,
         * which never happens: expect nothing from the big OR. */
        int which = f == 4 ? 5 : (int)f;
        for (int t = 0; t < 5; t++) {
            tu_fill(&seed, q, DREF);
            int want[64];
            int n = ref_topk(q, 10, which, want);
            iqdb_results *r;
            ck_assert_int_eq(iqdb_search(db, q, DREF, 10, flt, NULL, &r), 0);
            ck_assert_uint_eq(iqdb_results_count(r, 0), (size_t)n);
            for (int i = 0; i < n; i++)
                ck_assert_uint_eq(iqdb_results_hits(r, 0)[i].id.v.u64,
                                  (uint64_t)want[i]);
            iqdb_results_free(r);
        }
        iqdb_filter_free(flt);
    }
    iqdb_close(db);
}

START_TEST(test_db_filtered_exact_flat)
{
    check_filtered(NULL);
}
END_TEST

START_TEST(test_db_filtered_exact_without_index_filter)
{
    const char *dir = getenv("IQDB_FIXTURE_DIR");
    ck_assert_ptr_nonnull(dir);
    ck_assert_int_eq(iqdb_plugin_add_dir(dir), 0);
    check_filtered("extra");
}
END_TEST

/* Lazy filter planning on a large database: the filter goes to the index
 * as a predicate with an estimate, and a short answer makes the core plan
 * again with the bitmap. The shortpred fixture answers a predicate-only
 * filter with one hit, the farthest allowed one. */
START_TEST(test_db_filter_lazy_plan)
{
    const char *dir = getenv("IQDB_FIXTURE_DIR");
    ck_assert_ptr_nonnull(dir);
    ck_assert_int_eq(iqdb_plugin_add_dir(dir), 0);
    enum { N = 20000 };
    iqdb *db = tu_open(2, IQDB_METRIC_EUCLIDEAN, "shortpred");
    iqdb *flat = tu_open(2, IQDB_METRIC_EUCLIDEAN, "flat");
    for (uint64_t i = 0; i < N; i++) {
        float v[2] = {(float)(i % 1000), (float)(i / 1000)};
        iqdb_meta *m = iqdb_meta_new();
        iqdb_meta_set(m, "even", iqdb_value_bool(i % 2 == 0));
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), v, 2, m), 0);
        ck_assert_int_eq(iqdb_upsert(flat, iqdb_id_u64(i), v, 2, m), 0);
        iqdb_meta_free(m);
    }
    iqdb_filter *f = iqdb_filter_eq("even", iqdb_value_bool(1));
    float q[2] = {10.2f, 3.1f};
    iqdb_results *r, *want;
    /* k = 1: the lazy plan's (deliberately wrong) single hit stands, which
     * shows the predicate went to the index. */
    ck_assert_int_eq(iqdb_search(db, q, 2, 1, f, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 1);
    uint64_t far = iqdb_results_hits(r, 0)[0].id.v.u64;
    ck_assert_uint_eq(far % 2, 0);
    ck_assert_float_gt(iqdb_results_hits(r, 0)[0].distance, 900.0f);
    iqdb_results_free(r);
    /* k = 10: one hit is short, so the core re-plans with the bitmap and
     * the answer is exact. */
    ck_assert_int_eq(iqdb_search(db, q, 2, 10, f, NULL, &r), 0);
    ck_assert_int_eq(iqdb_search(flat, q, 2, 10, f, NULL, &want), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 10);
    ck_assert_uint_eq(iqdb_results_count(want, 0), 10);
    for (size_t i = 0; i < 10; i++)
        ck_assert_uint_eq(iqdb_results_hits(r, 0)[i].id.v.u64,
                          iqdb_results_hits(want, 0)[i].id.v.u64);
    iqdb_results_free(r);
    iqdb_results_free(want);
    /* Flat takes the lazy plan too and stays exact, as does a batch
     * (bitmap: several queries share one evaluation). */
    float qs[4] = {500.5f, 10.0f, 3.0f, 19.0f};
    iqdb_results *a, *b;
    ck_assert_int_eq(iqdb_search(flat, qs, 2, 7, f, NULL, &a), 0);
    ck_assert_int_eq(iqdb_search_batch(flat, qs, 2, 2, 7, f, NULL, &b), 0);
    for (size_t i = 0; i < 7; i++) {
        ck_assert_uint_eq(iqdb_results_hits(a, 0)[i].id.v.u64,
                          iqdb_results_hits(b, 0)[i].id.v.u64);
        ck_assert_uint_eq(iqdb_results_hits(a, 0)[i].id.v.u64 % 2, 0);
    }
    iqdb_results_free(a);
    iqdb_results_free(b);
    /* A filter too selective for the estimate (1 in 1000) is planned with
     * the bitmap and scanned: exact even with shortpred. */
    iqdb_filter *rare = iqdb_filter_lt("id_mod", iqdb_value_int(0));
    ck_assert_int_eq(iqdb_search(db, q, 2, 3, rare, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 0);
    iqdb_results_free(r);
    iqdb_filter_free(rare);
    iqdb_filter_free(f);
    iqdb_close(db);
    iqdb_close(flat);
}
END_TEST

START_TEST(test_db_filter_min_k_matches)
{
    iqdb *db = fill_ref(NULL);
    float q[DREF] = {0};
    iqdb_filter *f = iqdb_filter_in("g", (iqdb_value[]){iqdb_value_int(4)}, 1);
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, q, DREF, 5000, f, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), NREF / 10);
    const iqdb_hit *h = iqdb_results_hits(r, 0);
    for (size_t i = 0; i < NREF / 10; i++) {
        iqdb_value v;
        ck_assert_int_eq(iqdb_meta_get(h[i].meta, "g", &v), 0);
        ck_assert_int_eq(v.v.i, 4);
        if (i > 0)
            ck_assert(h[i - 1].distance <= h[i].distance);
    }
    iqdb_results_free(r);
    iqdb_filter_free(f);
    iqdb_close(db);
}
END_TEST

START_TEST(test_db_batch_matches_single)
{
    iqdb *db = fill_ref(NULL);
    enum { NQ = 37 };
    static float qs[NQ * DREF];
    uint64_t seed = 99;
    tu_fill(&seed, qs, NQ * DREF);
    iqdb_filter *f = NULL;
    iqdb_filter_parse("g >= 2", &f, NULL);
    for (int pass = 0; pass < 2; pass++) {
        const iqdb_filter *flt = pass ? f : NULL;
        iqdb_results *b;
        ck_assert_int_eq(
            iqdb_search_batch(db, qs, NQ, DREF, 10, flt, NULL, &b), 0);
        ck_assert_uint_eq(iqdb_results_nqueries(b), NQ);
        for (int q = 0; q < NQ; q++) {
            iqdb_results *s;
            ck_assert_int_eq(
                iqdb_search(db, qs + q * DREF, DREF, 10, flt, NULL, &s), 0);
            ck_assert_uint_eq(iqdb_results_count(b, q),
                              iqdb_results_count(s, 0));
            for (size_t i = 0; i < iqdb_results_count(s, 0); i++) {
                ck_assert_uint_eq(iqdb_results_hits(b, q)[i].id.v.u64,
                                  iqdb_results_hits(s, 0)[i].id.v.u64);
                ck_assert_float_eq(iqdb_results_hits(b, q)[i].distance,
                                   iqdb_results_hits(s, 0)[i].distance);
            }
            iqdb_results_free(s);
        }
        iqdb_results_free(b);
    }
    /* A bad query anywhere fails the whole batch and names it. */
    qs[20 * DREF + 3] = NAN;
    iqdb_results *b = (iqdb_results *)1;
    ck_assert_int_eq(iqdb_search_batch(db, qs, NQ, DREF, 10, NULL, NULL, &b),
                     IQDB_ENONFINITE);
    ck_assert_ptr_null(b);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(db), "query 20"));
    iqdb_filter_free(f);
    iqdb_close(db);
}
END_TEST

START_TEST(test_db_delete_rebuilds_index_without_remove)
{
    ck_assert_int_eq(iqdb_plugin_add_dir(getenv("IQDB_FIXTURE_DIR")), 0);
    iqdb *db = tu_open(2, IQDB_METRIC_EUCLIDEAN, "extra");
    float v[2];
    for (int i = 0; i < 10; i++) {
        v[0] = (float)i;
        v[1] = 0;
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64((uint64_t)i), v, 2, NULL),
                         0);
    }
    v[0] = 0;
    iqdb_delete(db, iqdb_id_u64(0), NULL);
    iqdb_upsert(db, iqdb_id_u64(1), (float[]){9.5f, 0}, 2, NULL);
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, v, 2, 3, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_hits(r, 0)[0].id.v.u64, 2);
    ck_assert_uint_eq(iqdb_results_hits(r, 0)[1].id.v.u64, 3);
    iqdb_results_free(r);
    ck_assert_uint_eq(iqdb_count(db), 9);
    iqdb_close(db);
}
END_TEST

START_TEST(test_db_results_outlive_writes)
{
    iqdb *db = tu_open(2, IQDB_METRIC_EUCLIDEAN, NULL);
    iqdb_meta *m = iqdb_meta_new();
    iqdb_meta_set(m, "name", iqdb_value_str("first"));
    float v[2] = {1, 1};
    iqdb_upsert(db, iqdb_id_u64(1), v, 2, m);
    iqdb_meta_free(m);
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, v, 2, 1, NULL, NULL, &r), 0);
    iqdb_upsert(db, iqdb_id_u64(1), v, 2, NULL);
    iqdb_delete(db, iqdb_id_u64(1), NULL);
    iqdb_close(db);
    iqdb_value val;
    ck_assert_int_eq(iqdb_meta_get(iqdb_results_hits(r, 0)[0].meta, "name",
                                   &val), 0);
    ck_assert_uint_eq(val.len, 5);
    ck_assert_mem_eq(val.v.s, "first", 5);
    iqdb_results_free(r);
}
END_TEST

/* ---- threads ------------------------------------------------------------- */

/* The writer keeps NREC records whose vectors are all-`gen` and whose
 * metadata says gen; a reader must never see a hit whose distance does
 * not match its own metadata (a torn or mixed record). */
#define TDIM 16
#define NREC 200

typedef struct tctx {
    iqdb *db;
    volatile int stop;
    int bad;
    long searches;
} tctx;

static void *reader(void *arg)
{
    tctx *t = arg;
    float q[TDIM] = {0};
    while (!t->stop) {
        iqdb_results *r;
        if (iqdb_search(t->db, q, TDIM, 20, NULL, NULL, &r) != 0) {
            __atomic_add_fetch(&t->bad, 1, __ATOMIC_RELAXED);
            continue;
        }
        const iqdb_hit *h = iqdb_results_hits(r, 0);
        for (size_t i = 0; i < iqdb_results_count(r, 0); i++) {
            iqdb_value g;
            if (h[i].meta == NULL || iqdb_meta_get(h[i].meta, "gen", &g) != 0) {
                __atomic_add_fetch(&t->bad, 1, __ATOMIC_RELAXED);
                continue;
            }
            float want = sqrtf((float)TDIM) * (float)g.v.i;
            if (fabsf(h[i].distance - want) > 1e-3f * (1 + want))
                __atomic_add_fetch(&t->bad, 1, __ATOMIC_RELAXED);
            if (i > 0 && h[i - 1].distance > h[i].distance)
                __atomic_add_fetch(&t->bad, 1, __ATOMIC_RELAXED);
        }
        iqdb_results_free(r);
        __atomic_add_fetch(&t->searches, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

START_TEST(test_db_concurrent_readers_one_writer)
{
    tctx t = {tu_open(TDIM, IQDB_METRIC_EUCLIDEAN, NULL), 0, 0, 0};
    float v[TDIM];
    iqdb_meta *m = iqdb_meta_new();
    for (int i = 0; i < NREC; i++) {
        for (int j = 0; j < TDIM; j++)
            v[j] = 1.0f + (float)i;
        iqdb_meta_set(m, "gen", iqdb_value_int(1 + i));
        iqdb_upsert(t.db, iqdb_id_u64((uint64_t)i), v, TDIM, m);
    }
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, reader, &t);
    uint64_t seed = 5;
    for (int round = 0; round < 3000; round++) {
        int id = (int)(tu_next(&seed) % NREC);
        int gen = 1 + (int)(tu_next(&seed) % 1000);
        for (int j = 0; j < TDIM; j++)
            v[j] = (float)gen;
        iqdb_meta_set(m, "gen", iqdb_value_int(gen));
        if (round % 7 == 0) {
            iqdb_delete(t.db, iqdb_id_u64((uint64_t)id), NULL);
        } else {
            ck_assert_int_eq(
                iqdb_upsert(t.db, iqdb_id_u64((uint64_t)id), v, TDIM, m), 0);
        }
    }
    t.stop = 1;
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    iqdb_meta_free(m);
    ck_assert_int_eq(t.bad, 0);
    ck_assert(t.searches > 0);
    iqdb_close(t.db);
}
END_TEST

/* ---- allocation failures ------------------------------------------------ */

START_TEST(test_db_alloc_failure_sweep)
{
    iqdb *db = tu_open(3, IQDB_METRIC_EUCLIDEAN, NULL);
    float v[3] = {1, 2, 3};
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(1), v, 3, NULL), 0);
    iqdb_meta *m = iqdb_meta_new();
    iqdb_meta_set(m, "k", iqdb_value_str("v"));
    unsigned char key[5] = "bytes";
    iqdb_record recs[3] = {{iqdb_id_bytes(key, 5), v, m},
                           {iqdb_id_u64(1), v, m},
                           {iqdb_id_u64(300), v, NULL}};
    int r = IQDB_ENOMEM;
    long n;
    for (n = 0; r != 0 && n < 1000; n++) {
        iqdb__alloc_fail_after(n);
        r = iqdb_upsert_batch(db, recs, 3, 3);
        iqdb__alloc_fail_after(-1);
        if (r != 0) {
            ck_assert_int_eq(r, IQDB_ENOMEM);
            assert_unchanged(db);
        }
    }
    ck_assert_int_eq(r, 0);
    ck_assert(n > 3);
    ck_assert_uint_eq(iqdb_count(db), 3);
    /* Search fails cleanly too. */
    iqdb_filter *f = iqdb_filter_eq("k", iqdb_value_str("v"));
    r = IQDB_ENOMEM;
    for (n = 0; r != 0 && n < 1000; n++) {
        iqdb_results *res = (iqdb_results *)1;
        iqdb__alloc_fail_after(n);
        r = iqdb_search(db, v, 3, 2, f, NULL, &res);
        iqdb__alloc_fail_after(-1);
        if (r != 0) {
            ck_assert_int_eq(r, IQDB_ENOMEM);
            ck_assert_ptr_null(res);
        } else {
            ck_assert_uint_eq(iqdb_results_count(res, 0), 2);
            iqdb_results_free(res);
        }
    }
    ck_assert_int_eq(r, 0);
    iqdb_filter_free(f);
    iqdb_meta_free(m);
    iqdb_close(db);
}
END_TEST

static Suite *db_suite(void)
{
    Suite *s = suite_create("db");
    struct {
        const char *name;
        const TTest *t;
    } cases[] = {
        {"open_rejects_bad_config", test_db_open_rejects_bad_config},
        {"open_unknown_plugin", test_db_open_unknown_plugin},
        {"open_bad_param_named", test_db_open_bad_param_named},
        {"open_max_dim", test_db_open_max_dim},
        {"durable_open_arguments", test_db_durable_open_arguments},
        {"crud", test_db_crud},
        {"byte_ids", test_db_byte_ids},
        {"slot_reuse", test_db_slot_reuse},
        {"validation", test_db_validation},
        {"nonfinite_every_position", test_db_nonfinite_every_position},
        {"errmsg_per_handle", test_db_errmsg_per_handle},
        {"batch_all_or_nothing", test_db_batch_all_or_nothing},
        {"ties_by_insertion_order", test_db_ties_by_insertion_order},
        {"empty_database", test_db_empty_database},
        {"metric_distances", test_db_metric_distances},
        {"filtered_exact_flat", test_db_filtered_exact_flat},
        {"filtered_exact_without_index_filter",
         test_db_filtered_exact_without_index_filter},
        {"filter_min_k_matches", test_db_filter_min_k_matches},
        {"filter_lazy_plan", test_db_filter_lazy_plan},
        {"batch_matches_single", test_db_batch_matches_single},
        {"delete_rebuilds_index_without_remove",
         test_db_delete_rebuilds_index_without_remove},
        {"results_outlive_writes", test_db_results_outlive_writes},
        {"concurrent_readers_one_writer",
         test_db_concurrent_readers_one_writer},
        {"alloc_failure_sweep", test_db_alloc_failure_sweep},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 300);
        tcase_add_test(tc, cases[i].t);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return tu_run(db_suite());
}
