/*
 * tests/unit/check_flat.c - the flat plugin is exact: for every metric,
 * dimensions that are and are not SIMD multiples (and large enough that an
 * arena chunk holds fewer than 64 vectors), with holes left by deletes,
 * its top-k matches a naive double-precision scan.
 */
#include "config.h"

#include <math.h>
#include <string.h>

#include "iqdb_int.h"
#include "testutil.h"

static double naive(int metric, const float *a, const float *b, uint32_t dim)
{
    double s = 0, na = 0, nb = 0;
    for (uint32_t i = 0; i < dim; i++) {
        double x = a[i], y = b[i];
        switch (metric) {
        case IQDB_METRIC_EUCLIDEAN: s += (x - y) * (x - y); break;
        case IQDB_METRIC_DOT: s -= x * y; break;
        case IQDB_METRIC_COSINE: s += x * y; na += x * x; nb += y * y; break;
        case IQDB_METRIC_MANHATTAN: s += fabs(x - y); break;
        default: s += x != y; break;
        }
    }
    if (metric == IQDB_METRIC_EUCLIDEAN)
        return sqrt(s);
    if (metric == IQDB_METRIC_COSINE)
        return na == 0 || nb == 0 ? 1.0 : 1.0 - s / (sqrt(na) * sqrt(nb));
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void check_exact(int metric, uint32_t dim, int n)
{
    iqdb *db = tu_open(dim, (iqdb_metric)metric, NULL);
    float *vecs = malloc((size_t)n * dim * sizeof *vecs);
    unsigned char *alive = calloc((size_t)n, 1);
    uint64_t seed = 11 + dim;
    for (int i = 0; i < n; i++) {
        float *v = vecs + (size_t)i * dim;
        tu_fill(&seed, v, dim);
        if (metric == IQDB_METRIC_HAMMING)
            for (uint32_t j = 0; j < dim; j++)
                v[j] = v[j] > 0 ? 1.0f : 0.0f;
        if (i == 5)
            memset(v, 0, dim * sizeof *v); /* a zero vector */
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64((uint64_t)i), v, dim, NULL),
                         0);
        alive[i] = 1;
    }
    for (int i = 0; i < n; i += 3) {
        iqdb_delete(db, iqdb_id_u64((uint64_t)i), NULL);
        alive[i] = 0;
    }
    double *d = malloc((size_t)n * sizeof *d);
    float *q = malloc(dim * sizeof *q);
    for (int t = 0; t < 4; t++) {
        tu_fill(&seed, q, dim);
        if (metric == IQDB_METRIC_HAMMING)
            for (uint32_t j = 0; j < dim; j++)
                q[j] = q[j] > 0 ? 1.0f : 0.0f;
        int m = 0;
        for (int i = 0; i < n; i++)
            if (alive[i])
                d[m++] = naive(metric, q, vecs + (size_t)i * dim, dim);
        qsort(d, (size_t)m, sizeof *d, cmp_double);
        iqdb_results *r;
        ck_assert_int_eq(iqdb_search(db, q, dim, 10, NULL, NULL, &r), 0);
        size_t cnt = iqdb_results_count(r, 0);
        ck_assert_uint_eq(cnt, (size_t)(m < 10 ? m : 10));
        const iqdb_hit *h = iqdb_results_hits(r, 0);
        double tol = 1e-4 * (1 + fabs(d[m - 1]));
        for (size_t i = 0; i < cnt; i++) {
            uint64_t id = h[i].id.v.u64;
            ck_assert(alive[id]);
            double own = naive(metric, q, vecs + id * dim, dim);
            ck_assert_msg(fabs(own - h[i].distance) <= tol,
                          "metric %d dim %u: reported %g true %g", metric, dim,
                          h[i].distance, own);
            ck_assert_msg(fabs(d[i] - h[i].distance) <= tol,
                          "metric %d dim %u rank %zu: got %g want %g", metric,
                          dim, i, h[i].distance, d[i]);
        }
        iqdb_results_free(r);
    }
    free(q);
    free(d);
    free(vecs);
    free(alive);
    iqdb_close(db);
}

START_TEST(test_flat_exact_every_metric)
{
    static const uint32_t dims[] = {1, 3, 8, 17, 33, 128, 784};
    for (int metric = 1; metric <= 5; metric++)
        for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
            check_exact(metric, dims[i], 700);
}
END_TEST

START_TEST(test_flat_exact_huge_dim)
{
    /* 20000 floats per vector: an arena chunk holds < 64 vectors, so the
     * scan takes the gather path across chunk boundaries. */
    check_exact(IQDB_METRIC_EUCLIDEAN, 20000, 150);
    check_exact(IQDB_METRIC_COSINE, 20000, 150);
}
END_TEST

/* The batch path (blocked products, then exact re-ranking) returns the
 * very same hits and distances as one query at a time, ties included. */
static void check_batch(int metric, uint32_t dim)
{
    enum { N = 3000, NQ = 50 };
    iqdb *db = tu_open(dim, (iqdb_metric)metric, NULL);
    float *v = malloc((size_t)dim * sizeof *v);
    uint64_t seed = 77 + dim;
    for (int i = 0; i < N; i++) {
        /* Every fifth vector repeats an earlier one: exact ties. */
        if (i % 5 != 4)
            tu_fill(&seed, v, dim);
        if (i == 100)
            memset(v, 0, dim * sizeof *v);
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64((uint64_t)i), v, dim,
                                     NULL), 0);
    }
    float *qs = malloc((size_t)NQ * dim * sizeof *qs);
    tu_fill(&seed, qs, (size_t)NQ * dim);
    memset(qs, 0, dim * sizeof *qs); /* a zero query */
    iqdb_results *b;
    ck_assert_int_eq(iqdb_search_batch(db, qs, NQ, dim, 15, NULL, NULL, &b),
                     0);
    for (int q = 0; q < NQ; q++) {
        iqdb_results *s;
        ck_assert_int_eq(
            iqdb_search(db, qs + (size_t)q * dim, dim, 15, NULL, NULL, &s), 0);
        ck_assert_uint_eq(iqdb_results_count(b, q), 15);
        for (int i = 0; i < 15; i++) {
            const iqdb_hit *x = &iqdb_results_hits(b, q)[i];
            const iqdb_hit *y = &iqdb_results_hits(s, 0)[i];
            ck_assert_msg(x->id.v.u64 == y->id.v.u64 &&
                              x->distance == y->distance,
                          "metric %d dim %u query %d rank %d: batch %llu %g, "
                          "single %llu %g",
                          metric, dim, q, i, (unsigned long long)x->id.v.u64,
                          x->distance, (unsigned long long)y->id.v.u64,
                          y->distance);
        }
        iqdb_results_free(s);
    }
    iqdb_results_free(b);
    free(qs);
    free(v);
    iqdb_close(db);
}

START_TEST(test_flat_batch_equals_single)
{
    static const uint32_t dims[] = {5, 33, 784};
    for (int metric = 1; metric <= 5; metric++)
        for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
            check_batch(metric, dims[i]);
}
END_TEST

START_TEST(test_flat_stats_no_vector_copy)
{
    const iqdb_index_ops *ops;
    ck_assert_int_eq(iqdb__find_index("flat", NULL, 0, &ops), 0);
    ck_assert(ops->caps & IQDB_CAP_EXACT);
    iqdb *db = tu_open(4, IQDB_METRIC_EUCLIDEAN, NULL);
    float v[4] = {1, 2, 3, 4};
    for (uint64_t i = 0; i < 100; i++)
        iqdb_upsert(db, iqdb_id_u64(i), v, 4, NULL);
    iqdb_index_stats st = {sizeof st, 0, 0, 0};
    ck_assert_int_eq(ops->stats(db->index, &st), 0);
    ck_assert_uint_eq(st.count, 100);
    ck_assert_uint_eq(st.vector_copies, 0);
    ck_assert_uint_lt(st.memory_bytes, 100 * 4 * sizeof(float) * 4);
    iqdb_close(db);
}
END_TEST

static Suite *flat_suite(void)
{
    Suite *s = suite_create("flat");
    TCase *tc = tcase_create("exact");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_flat_exact_every_metric);
    tcase_add_test(tc, test_flat_exact_huge_dim);
    tcase_add_test(tc, test_flat_batch_equals_single);
    suite_add_tcase(s, tc);
    tc = tcase_create("stats");
    tcase_add_test(tc, test_flat_stats_no_vector_copy);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(flat_suite());
}
