/*
 * tests/unit/check_kernels.c - the distance kernels and their dispatch.
 *
 * Every table this CPU runs (the others are skipped at run time) is held
 * to a double-precision reference on random vectors of awkward lengths;
 * the multi-vector kernels must reproduce the pair kernel bit for bit;
 * buffers are sized exactly (for ASan) or end at a PROT_NONE page, so a
 * kernel reading one float past a vector fails in any build.
 */
#include "config.h"

#include <check.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iqdb_int.h"
#include "kernels_int.h"

static const char *const isa_names[] = {"scalar", "avx2", "avx512"};
#define NISA (sizeof isa_names / sizeof isa_names[0])

/* Lengths around every SIMD width and unroll step, plus real ones. */
static const size_t dims[] = {1,   2,   3,   7,   8,   9,   15,  16,
                              17,  31,  33,  63,  65,  100, 127, 129,
                              255, 257, 511, 784, 1000, 1024};
#define NDIMS (sizeof dims / sizeof dims[0])

static const char *const metric_names[IQDB_M_COUNT] = {
    NULL, "euclidean", "cosine", "dot", "manhattan", "hamming"};

/* ---- helpers ---------------------------------------------------------- */

/* xorshift64*: reproducible across runs and platforms. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd_u32(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545f4914f6cdd1dull) >> 32);
}

static size_t rnd_below(size_t n)
{
    return (size_t)rnd_u32() % n;
}

/* Uniform in [-1, 1). */
static float rnd_float(void)
{
    return (float)((double)rnd_u32() / 2147483648.0 - 1.0);
}

/* n floats at a random 0..3-float offset into an exactly sized malloc
 * block: usually unaligned, and ending at the block's end, where ASan
 * catches a read past it. */
typedef struct {
    float *block;
    float *v;
} vecbuf;

static vecbuf vec_new(size_t n)
{
    size_t off = rnd_below(4);
    vecbuf b;
    b.block = malloc((n + off) * sizeof(float));
    ck_assert_ptr_nonnull(b.block);
    b.v = b.block + off;
    for (size_t i = 0; i < n; i++)
        b.v[i] = rnd_float();
    return b;
}

static void vec_free(vecbuf *b)
{
    free(b->block);
}

/* A block of n floats whose end touches a PROT_NONE page. */
typedef struct {
    void *map;
    size_t len;
    float *v;
} guarded;

static guarded guarded_new(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t bytes = (n * sizeof(float) + page - 1) / page * page;
    guarded g;
    g.len = bytes + page;
    g.map = mmap(NULL, g.len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(g.map != MAP_FAILED);
    ck_assert_int_eq(mprotect((char *)g.map + bytes, page, PROT_NONE), 0);
    g.v = (float *)(void *)((char *)g.map + bytes) - n;
    for (size_t i = 0; i < n; i++)
        g.v[i] = rnd_float();
    return g;
}

static void guarded_free(guarded *g)
{
    munmap(g->map, g->len);
}

/* The tables this CPU runs; the others are skipped. */
static size_t usable_tables(const iqdb_kernels **out)
{
    size_t n = 0;
    for (size_t i = 0; i < NISA; i++) {
        const iqdb_kernels *k = iqdb__kernels_named(isa_names[i]);
        if (k != NULL)
            out[n++] = k;
    }
    return n;
}

/* Reference distance in double; *scale gets the sum of the terms' sizes,
 * the unit of the rounding error of a float sum. */
static double ref_dist(int metric, const float *a, const float *b,
                       size_t dim, double *scale)
{
    double s = 0.0, sc = 0.0, na = 0.0, nb = 0.0;
    for (size_t i = 0; i < dim; i++) {
        double x = a[i], y = b[i];
        switch (metric) {
        case IQDB_M_EUCLIDEAN:
            s += (x - y) * (x - y);
            break;
        case IQDB_M_COSINE:
            s += x * y;
            na += x * x;
            nb += y * y;
            break;
        case IQDB_M_DOT:
            s -= x * y;
            sc += fabs(x * y);
            break;
        case IQDB_M_MANHATTAN:
            s += fabs(x - y);
            break;
        case IQDB_M_HAMMING:
            s += a[i] != b[i];
            break;
        default:
            break;
        }
    }
    if (metric == IQDB_M_EUCLIDEAN || metric == IQDB_M_MANHATTAN)
        sc = s;
    if (metric == IQDB_M_COSINE) {
        sc = 1.0;
        if (na == 0.0 || nb == 0.0)
            s = 1.0;
        else
            s = 1.0 - s / (sqrt(na) * sqrt(nb));
        s = s < 0.0 ? 0.0 : s > 2.0 ? 2.0 : s;
    }
    *scale = sc;
    return s;
}

/* Float sums of up to 1024 terms: a few 1e-6 of the terms' total. */
static void check_dist(const char *isa, int metric, size_t dim, float got,
                       double want, double scale)
{
    double tol = metric == IQDB_M_HAMMING  ? 0.0
                 : metric == IQDB_M_COSINE ? 2e-5
                                           : 2e-5 * scale;
    ck_assert_msg(!isnan(got), "%s %s dim %zu: NaN", isa,
                  metric_names[metric], dim);
    ck_assert_msg(fabs(got - want) <= tol,
                  "%s %s dim %zu: got %.9g, want %.9g (tol %.3g)", isa,
                  metric_names[metric], dim, (double)got, want, tol);
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(test_kernels_reference)
{
    const iqdb_kernels *t[NISA];
    size_t nt = usable_tables(t);
    for (size_t d = 0; d < NDIMS; d++) {
        size_t dim = dims[d];
        for (int rep = 0; rep < 3; rep++) {
            vecbuf a = vec_new(dim), b = vec_new(dim);
            for (size_t k = 0; k < nt; k++) {
                for (int m = 1; m < IQDB_M_COUNT; m++) {
                    double scale;
                    double want = ref_dist(m, a.v, b.v, dim, &scale);
                    check_dist(t[k]->isa, m, dim,
                               t[k]->dist[m](a.v, b.v, dim), want, scale);
                }
            }
            vec_free(&a);
            vec_free(&b);
        }
    }
}
END_TEST

START_TEST(test_kernels_hamming_exact)
{
    const iqdb_kernels *t[NISA];
    size_t nt = usable_tables(t);
    for (size_t d = 0; d < NDIMS; d++) {
        size_t dim = dims[d];
        vecbuf a = vec_new(dim), b = vec_new(dim);
        size_t want = 0;
        for (size_t i = 0; i < dim; i++) {
            /* Small integers make ties; -0 equals +0. */
            a.v[i] = (float)rnd_below(3);
            b.v[i] = (float)rnd_below(3);
            if (a.v[i] == 0.0f && rnd_below(2))
                b.v[i] = -0.0f;
            want += a.v[i] != b.v[i];
        }
        for (size_t k = 0; k < nt; k++) {
            float got = t[k]->dist[IQDB_M_HAMMING](a.v, b.v, dim);
            ck_assert_msg(got == (float)want, "%s dim %zu: %g != %zu",
                          t[k]->isa, dim, (double)got, want);
            ck_assert(t[k]->dist[IQDB_M_HAMMING](a.v, a.v, dim) == 0.0f);
        }
        vec_free(&a);
        vec_free(&b);
    }
}
END_TEST

START_TEST(test_kernels_zero_vectors)
{
    const iqdb_kernels *t[NISA];
    size_t nt = usable_tables(t);
    for (size_t d = 0; d < NDIMS; d++) {
        size_t dim = dims[d];
        vecbuf z = vec_new(dim), x = vec_new(dim);
        memset(z.v, 0, dim * sizeof(float));
        for (size_t k = 0; k < nt; k++) {
            iqdb_dist_fn cosine = t[k]->dist[IQDB_M_COSINE];
            /* Exactly 1 when either vector is zero, never NaN. */
            ck_assert(cosine(z.v, x.v, dim) == 1.0f);
            ck_assert(cosine(x.v, z.v, dim) == 1.0f);
            ck_assert(cosine(z.v, z.v, dim) == 1.0f);
            ck_assert(t[k]->dist[IQDB_M_EUCLIDEAN](z.v, z.v, dim) == 0.0f);
            ck_assert(t[k]->dist[IQDB_M_DOT](z.v, x.v, dim) == 0.0f);
            ck_assert(t[k]->dist[IQDB_M_MANHATTAN](z.v, z.v, dim) == 0.0f);
            float out[2];
            const float *v[2] = {z.v, x.v};
            t[k]->dist_gather(IQDB_M_COSINE, z.v, v, 2, dim, out);
            ck_assert(out[0] == 1.0f && out[1] == 1.0f);
            t[k]->dist_1xn(IQDB_M_COSINE, x.v, z.v, 0, 2, dim, out);
            ck_assert(out[0] == 1.0f && out[1] == 1.0f);
        }
        vec_free(&z);
        vec_free(&x);
    }
}
END_TEST

START_TEST(test_kernels_identical_vectors)
{
    const iqdb_kernels *t[NISA];
    size_t nt = usable_tables(t);
    for (size_t d = 0; d < NDIMS; d++) {
        size_t dim = dims[d];
        vecbuf a = vec_new(dim), s = vec_new(dim), n = vec_new(dim);
        for (size_t i = 0; i < dim; i++) {
            s.v[i] = 3.0f * a.v[i];
            n.v[i] = -a.v[i];
        }
        for (size_t k = 0; k < nt; k++) {
            iqdb_dist_fn cosine = t[k]->dist[IQDB_M_COSINE];
            float c = cosine(a.v, a.v, dim);
            ck_assert_msg(c >= 0.0f && c < 1e-6f, "%s dim %zu: %g",
                          t[k]->isa, dim, (double)c);
            c = cosine(a.v, s.v, dim);
            ck_assert_msg(c >= 0.0f && c < 1e-6f, "%s dim %zu: %g",
                          t[k]->isa, dim, (double)c);
            c = cosine(a.v, n.v, dim);
            ck_assert_msg(c <= 2.0f && c > 2.0f - 1e-6f, "%s dim %zu: %g",
                          t[k]->isa, dim, (double)c);
            ck_assert(t[k]->dist[IQDB_M_EUCLIDEAN](a.v, a.v, dim) == 0.0f);
            ck_assert(t[k]->dist[IQDB_M_MANHATTAN](a.v, a.v, dim) == 0.0f);
            ck_assert(t[k]->dist[IQDB_M_HAMMING](a.v, a.v, dim) == 0.0f);
        }
        vec_free(&a);
        vec_free(&s);
        vec_free(&n);
    }
}
END_TEST

/* Squares that overflow or underflow float must still give the right
 * cosine, not NaN and not the zero-vector 1. */
START_TEST(test_kernels_cosine_extremes)
{
    const iqdb_kernels *t[NISA];
    size_t nt = usable_tables(t);
    static const float scales[] = {1e30f, 1e-30f, FLT_MAX, FLT_TRUE_MIN};
    for (size_t d = 0; d < NDIMS; d += 3) {
        size_t dim = dims[d];
        vecbuf a = vec_new(dim), b = vec_new(dim), n = vec_new(dim);
        for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++) {
            for (size_t i = 0; i < dim; i++) {
                a.v[i] = scales[s];
                b.v[i] = scales[s];
                n.v[i] = -scales[s];
            }
            for (size_t k = 0; k < nt; k++) {
                float c = t[k]->dist[IQDB_M_COSINE](a.v, b.v, dim);
                ck_assert_msg(c >= 0.0f && c < 1e-6f, "%s dim %zu x %g: %g",
                              t[k]->isa, dim, (double)scales[s], (double)c);
                c = t[k]->dist[IQDB_M_COSINE](a.v, n.v, dim);
                ck_assert_msg(c == 2.0f, "%s dim %zu x %g: %g", t[k]->isa,
                              dim, (double)scales[s], (double)c);
            }
        }
        vec_free(&a);
        vec_free(&b);
        vec_free(&n);
    }
}
END_TEST

/* dist_1xn and dist_gather give the very bits of dist[metric]. */
START_TEST(test_kernels_multi_bit_identical)
{
    const iqdb_kernels *t[NISA];
    size_t nt = usable_tables(t);
    for (size_t d = 0; d < NDIMS; d++) {
        size_t dim = dims[d];
        for (int rep = 0; rep < 2; rep++) {
            size_t n = 1 + rnd_below(37);
            size_t stride = dim + rnd_below(6);
            vecbuf q = vec_new(dim);
            vecbuf base = vec_new((n - 1) * stride + dim);
            /* A zero vector exercises the cosine special case. */
            memset(base.v + rnd_below(n) * stride, 0, dim * sizeof(float));
            const float **vecs = malloc(n * sizeof *vecs);
            float *o1 = malloc(n * sizeof(float));
            float *o2 = malloc(n * sizeof(float));
            float *o3 = malloc(n * sizeof(float));
            for (size_t j = 0; j < n; j++)
                vecs[j] = base.v + rnd_below(n) * stride;
            for (size_t k = 0; k < nt; k++) {
                for (int m = 1; m < IQDB_M_COUNT; m++) {
                    t[k]->dist_1xn(m, q.v, base.v, stride, n, dim, o1);
                    t[k]->dist_gather(m, q.v, vecs, n, dim, o3);
                    for (size_t j = 0; j < n; j++)
                        o2[j] = t[k]->dist[m](q.v, base.v + j * stride, dim);
                    ck_assert_msg(memcmp(o1, o2, n * sizeof(float)) == 0,
                                  "%s %s dim %zu n %zu: dist_1xn differs",
                                  t[k]->isa, metric_names[m], dim, n);
                    for (size_t j = 0; j < n; j++)
                        o2[j] = t[k]->dist[m](q.v, vecs[j], dim);
                    ck_assert_msg(memcmp(o3, o2, n * sizeof(float)) == 0,
                                  "%s %s dim %zu n %zu: dist_gather differs",
                                  t[k]->isa, metric_names[m], dim, n);
                }
            }
            free(o1);
            free(o2);
            free(o3);
            free(vecs);
            vec_free(&q);
            vec_free(&base);
        }
    }
}
END_TEST

/* out[i*ldo + j] = q_i . b_j, compared with the reference; the ldo - n
 * floats after each row are never written. */
static void check_dot_mxn(const iqdb_kernels *t, size_t m, size_t n,
                          size_t dim)
{
    size_t qstride = dim + rnd_below(3), stride = dim + rnd_below(3);
    size_t ldo = n + 1 + rnd_below(3);
    vecbuf q = vec_new((m - 1) * qstride + dim);
    vecbuf b = vec_new((n - 1) * stride + dim);
    float *out = malloc(m * ldo * sizeof(float));
    ck_assert_ptr_nonnull(out);
    for (size_t i = 0; i < m * ldo; i++)
        out[i] = -12345.0f;
    t->dot_mxn(q.v, qstride, m, b.v, stride, n, dim, out, ldo);
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < n; j++) {
            const float *x = q.v + i * qstride, *y = b.v + j * stride;
            double s = 0.0, sc = 0.0;
            for (size_t k = 0; k < dim; k++) {
                s += (double)x[k] * y[k];
                sc += fabs((double)x[k] * y[k]);
            }
            ck_assert_msg(fabs(out[i * ldo + j] - s) <= 2e-5 * sc,
                          "%s m %zu n %zu dim %zu: [%zu][%zu] %g != %g",
                          t->isa, m, n, dim, i, j,
                          (double)out[i * ldo + j], s);
        }
        for (size_t j = n; j < ldo; j++)
            ck_assert_msg(out[i * ldo + j] == -12345.0f,
                          "%s: wrote past n in row %zu", t->isa, i);
    }
    free(out);
    vec_free(&q);
    vec_free(&b);
}

START_TEST(test_kernels_dot_mxn)
{
    /* Odd shapes: partial micro-tiles in both directions, several k
     * blocks (dim 785) and several base blocks (n 1100 at dim 785). */
    static const size_t shapes[][3] = {
        {1, 1, 1},    {1, 7, 3},    {3, 5, 7},     {13, 37, 17},
        {15, 33, 100}, {7, 70, 785}, {29, 65, 129}, {5, 1100, 785},
    };
    const iqdb_kernels *t[NISA];
    size_t nt = usable_tables(t);
    for (size_t k = 0; k < nt; k++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_dot_mxn(t[k], shapes[s][0], shapes[s][1], shapes[s][2]);
}
END_TEST

/* The failure twin: without memory for its packed panels dot_mxn takes
 * its unpacked path and is still right. */
START_TEST(test_kernels_dot_mxn_no_memory)
{
    const iqdb_kernels *t[NISA];
    size_t nt = usable_tables(t);
    for (size_t k = 0; k < nt; k++) {
        iqdb__alloc_fail_after(0);
        check_dot_mxn(t[k], 9, 41, 33);
        iqdb__alloc_fail_after(-1);
    }
}
END_TEST

START_TEST(test_kernels_norms_sq)
{
    const iqdb_kernels *t[NISA];
    size_t nt = usable_tables(t);
    for (size_t d = 0; d < NDIMS; d++) {
        size_t dim = dims[d], n = 1 + rnd_below(9);
        size_t stride = dim + rnd_below(3);
        vecbuf b = vec_new((n - 1) * stride + dim);
        float out[9];
        for (size_t k = 0; k < nt; k++) {
            t[k]->norms_sq(b.v, stride, n, dim, out);
            for (size_t j = 0; j < n; j++) {
                double s = 0.0;
                for (size_t i = 0; i < dim; i++)
                    s += (double)b.v[j * stride + i] * b.v[j * stride + i];
                ck_assert_msg(fabs(out[j] - s) <= 2e-5 * s, "%s dim %zu",
                              t[k]->isa, dim);
            }
        }
        vec_free(&b);
    }
}
END_TEST

START_TEST(test_kernels_finalize)
{
    ck_assert(iqdb__finalize(IQDB_M_EUCLIDEAN, 4.0f) == 2.0f);
    ck_assert(iqdb__finalize(IQDB_M_EUCLIDEAN, 0.0f) == 0.0f);
    /* A raw value rounded below zero reports 0, not NaN. */
    ck_assert(iqdb__finalize(IQDB_M_EUCLIDEAN, -1e-7f) == 0.0f);
    ck_assert(iqdb__finalize(IQDB_M_COSINE, 0.25f) == 0.25f);
    ck_assert(iqdb__finalize(IQDB_M_DOT, -5.5f) == -5.5f);
    ck_assert(iqdb__finalize(IQDB_M_MANHATTAN, 3.0f) == 3.0f);
    ck_assert(iqdb__finalize(IQDB_M_HAMMING, 7.0f) == 7.0f);
    const iqdb_kernels *t[NISA];
    size_t nt = usable_tables(t);
    for (size_t k = 0; k < nt; k++)
        ck_assert(t[k]->finalize(IQDB_M_EUCLIDEAN, 9.0f) == 3.0f);
}
END_TEST

/* Every kernel reads exactly dim floats: each vector ends at a PROT_NONE
 * page, which also catches masked loads ASan does not see. */
START_TEST(test_kernels_exact_reads)
{
    const iqdb_kernels *t[NISA];
    size_t nt = usable_tables(t);
    for (size_t d = 0; d < NDIMS; d++) {
        size_t dim = dims[d], n = 5;
        guarded a = guarded_new(dim), b = guarded_new(dim);
        guarded base = guarded_new(n * dim);
        float out[5 * 5];
        const float *vecs[5];
        for (size_t j = 0; j < n; j++)
            vecs[j] = base.v + (n - 1 - j) * dim;
        for (size_t k = 0; k < nt; k++) {
            for (int m = 1; m < IQDB_M_COUNT; m++) {
                out[0] = t[k]->dist[m](a.v, b.v, dim);
                t[k]->dist_1xn(m, a.v, base.v, dim, n, dim, out);
                t[k]->dist_gather(m, b.v, vecs, n, dim, out);
            }
            t[k]->norms_sq(base.v, dim, n, dim, out);
            t[k]->dot_mxn(base.v, dim, n, base.v, dim, n, dim, out, n);
            t[k]->dot_mxn(a.v, dim, 1, base.v, dim, n, dim, out, n);
        }
        guarded_free(&a);
        guarded_free(&b);
        guarded_free(&base);
    }
}
END_TEST

START_TEST(test_kernels_tables)
{
    ck_assert_ptr_eq(iqdb__kernels_named("scalar"), &iqdb__kernels_scalar);
    ck_assert_ptr_null(iqdb__kernels_named("bogus"));
    ck_assert_ptr_null(iqdb__kernels_named(""));
    ck_assert_ptr_null(iqdb__kernels_named(NULL));
#if defined(__x86_64__)
    __builtin_cpu_init();
    /* On x86-64 the tables exist; the CPU decides which run. */
    if (__builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        ck_assert_ptr_eq(iqdb__kernels_named("avx512"), &iqdb__kernels_avx512);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        ck_assert_ptr_eq(iqdb__kernels_named("avx2"), &iqdb__kernels_avx2);
#else
    ck_assert_ptr_null(iqdb__kernels_named("avx2"));
#endif
    for (size_t i = 0; i < NISA; i++) {
        const iqdb_kernels *k = iqdb__kernels_named(isa_names[i]);
        if (k == NULL) {
            fprintf(stderr, "check_kernels: %s not supported here, "
                            "skipped\n", isa_names[i]);
            continue;
        }
        ck_assert_uint_eq(k->abi_version, IQDB_ABI_VERSION);
        ck_assert_uint_eq(k->struct_size, sizeof(iqdb_kernels));
        ck_assert_str_eq(k->isa, isa_names[i]);
        ck_assert(k->dist[0] == NULL);
        for (int m = 1; m < IQDB_M_COUNT; m++)
            ck_assert(k->dist[m] != NULL);
        ck_assert(k->dist_1xn != NULL && k->dist_gather != NULL &&
                  k->dot_mxn != NULL && k->norms_sq != NULL &&
                  k->finalize != NULL);
    }
}
END_TEST

/* The best table under each cap; never one the CPU cannot run. */
START_TEST(test_kernels_pick)
{
    const iqdb_kernels *avx2 = iqdb__kernels_named("avx2");
    const iqdb_kernels *avx512 = iqdb__kernels_named("avx512");
    const iqdb_kernels *best = avx512 ? avx512
                               : avx2 ? avx2
                                      : &iqdb__kernels_scalar;
    ck_assert_ptr_eq(iqdb__kernels_pick("scalar"), &iqdb__kernels_scalar);
    ck_assert_ptr_eq(iqdb__kernels_pick("avx2"),
                     avx2 ? avx2 : &iqdb__kernels_scalar);
    ck_assert_ptr_eq(iqdb__kernels_pick("avx512"), best);
    ck_assert_ptr_eq(iqdb__kernels_pick(NULL), best);
    ck_assert_ptr_eq(iqdb__kernels_pick(""), best);
    ck_assert_ptr_eq(iqdb__kernels_pick("bogus"), best);
    ck_assert_ptr_eq(iqdb__kernels(), iqdb__kernels_pick(getenv("IQDB_ISA")));
}
END_TEST

/* IQDB_ISA caps the choice made on first use; run in a child so that the
 * choice is still to be made (and this process's stays untouched). */
static void expect_env_choice(const char *cap, const char *want)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("IQDB_ISA", cap, 1);
        const iqdb_kernels *k = iqdb__kernels();
        _exit(strcmp(k->isa, want) == 0 && iqdb__kernels() == k ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "IQDB_ISA=%s did not select %s", cap, want);
}

START_TEST(test_kernels_env_cap)
{
    expect_env_choice("scalar", "scalar");
    expect_env_choice("avx2", iqdb__kernels_pick("avx2")->isa);
    expect_env_choice("avx512", iqdb__kernels_pick(NULL)->isa);
    expect_env_choice("no-such-isa", iqdb__kernels_pick(NULL)->isa);
}
END_TEST

static void *first_use(void *arg)
{
    *(const iqdb_kernels **)arg = iqdb__kernels();
    return NULL;
}

START_TEST(test_kernels_concurrent_first_use)
{
    pthread_t th[4];
    const iqdb_kernels *got[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, first_use, &got[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_ptr_eq(got[i], got[0]);
    }
    ck_assert_ptr_nonnull(got[0]);
}
END_TEST

static Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        /* First, while this process has not chosen a table yet (matters
         * with CK_FORK=no). */
        {"env_cap", test_kernels_env_cap},
        {"concurrent_first_use", test_kernels_concurrent_first_use},
        {"tables", test_kernels_tables},
        {"pick", test_kernels_pick},
        {"reference", test_kernels_reference},
        {"hamming_exact", test_kernels_hamming_exact},
        {"zero_vectors", test_kernels_zero_vectors},
        {"identical_vectors", test_kernels_identical_vectors},
        {"cosine_extremes", test_kernels_cosine_extremes},
        {"multi_bit_identical", test_kernels_multi_bit_identical},
        {"dot_mxn", test_kernels_dot_mxn},
        {"dot_mxn_no_memory", test_kernels_dot_mxn_no_memory},
        {"norms_sq", test_kernels_norms_sq},
        {"finalize", test_kernels_finalize},
        {"exact_reads", test_kernels_exact_reads},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        /* Sanitizer builds are several times slower. */
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(kernels_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
