/*
 * core/kernels_scalar.c - the portable distance kernels.
 *
 * The table every CPU runs, and the shared pieces of every table: the
 * cosine finish and its overflow / underflow slow path. Each per-pair
 * kernel keeps four partial sums (element i goes to sum i % 4) so that the
 * four dependency chains overlap; the compiler never reorders float sums
 * on its own, so this order is the one the results follow. The multi-vector
 * kernels call the very same per-pair functions through a pointer, which
 * makes them bit-identical to dist[] by construction.
 */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stddef.h>

#include "kernels_int.h"

/*
 * SUM4_LOOP(TERM) accumulates TERM(i) for i in [0, dim) into four partial
 * sums s0..s3 (element i into s[i % 4], the tail into s0) and yields
 * (s0 + s1) + (s2 + s3).
 */
#define SUM4_LOOP(TERM, result)                                          \
    do {                                                                 \
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;                \
        size_t i = 0;                                                    \
        for (; i + 4 <= dim; i += 4) {                                   \
            s0 += TERM(i);                                               \
            s1 += TERM(i + 1);                                           \
            s2 += TERM(i + 2);                                           \
            s3 += TERM(i + 3);                                           \
        }                                                                \
        for (; i < dim; i++)                                             \
            s0 += TERM(i);                                               \
        (result) = (s0 + s1) + (s2 + s3);                                \
    } while (0)

#define L2_TERM(i) ((a[i] - b[i]) * (a[i] - b[i]))
#define DOT_TERM(i) (a[i] * b[i])
#define L1_TERM(i) fabsf(a[i] - b[i])

static float l2_scalar(const float *a, const float *b, size_t dim)
{
    float r;
    SUM4_LOOP(L2_TERM, r);
    return r;
}

static float dotsum_scalar(const float *a, const float *b, size_t dim)
{
    float r;
    SUM4_LOOP(DOT_TERM, r);
    return r;
}

static float dot_scalar(const float *a, const float *b, size_t dim)
{
    return -dotsum_scalar(a, b, dim);
}

static float l1_scalar(const float *a, const float *b, size_t dim)
{
    float r;
    SUM4_LOOP(L1_TERM, r);
    return r;
}

static float hamming_scalar(const float *a, const float *b, size_t dim)
{
    /* An integer count is exact and order-free. */
    size_t n = 0;
    for (size_t i = 0; i < dim; i++)
        n += a[i] != b[i];
    return (float)n;
}

static float cosine_scalar(const float *a, const float *b, size_t dim)
{
    /* One pass, two partial sums per quantity (six chains in flight). */
    float d0 = 0.0f, d1 = 0.0f, a0 = 0.0f, a1 = 0.0f, b0 = 0.0f, b1 = 0.0f;
    size_t i = 0;
    for (; i + 2 <= dim; i += 2) {
        d0 += a[i] * b[i];
        a0 += a[i] * a[i];
        b0 += b[i] * b[i];
        d1 += a[i + 1] * b[i + 1];
        a1 += a[i + 1] * a[i + 1];
        b1 += b[i + 1] * b[i + 1];
    }
    if (i < dim) {
        d0 += a[i] * b[i];
        a0 += a[i] * a[i];
        b0 += b[i] * b[i];
    }
    return iqdb__cosine_finish(d0 + d1, a0 + a1, b0 + b1, a, b, dim);
}

/* Cosine in double precision, for the sums float cannot hold. */
static float cosine_double(const float *a, const float *b, size_t dim)
{
    double d = 0.0, na = 0.0, nb = 0.0;
    for (size_t i = 0; i < dim; i++) {
        d += (double)a[i] * b[i];
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }
    if (na == 0.0 || nb == 0.0)
        return 1.0f;
    double r = 1.0 - d / (sqrt(na) * sqrt(nb));
    return (float)(r < 0.0 ? 0.0 : r > 2.0 ? 2.0 : r);
}

float iqdb__cosine_finish(float dot, float na, float nb, const float *a,
                          const float *b, size_t dim)
{
    /* A squared norm below FLT_MIN may be a tiny non-zero vector whose
     * squares underflowed, and one above FLT_MAX overflowed: recompute
     * those rare cases in double so that finite input never yields NaN
     * and only an all-zero vector gives the defined 1. The test is on the
     * sums alone, so every caller with the same sums takes the same
     * branch, which keeps dist_1xn bit-identical to dist. */
    if (!(na >= FLT_MIN && na <= FLT_MAX && nb >= FLT_MIN && nb <= FLT_MAX &&
          fabsf(dot) <= FLT_MAX))
        return cosine_double(a, b, dim);
    float r = 1.0f - dot / (sqrtf(na) * sqrtf(nb));
    /* Rounding can step just outside [0, 2]. */
    return r < 0.0f ? 0.0f : r > 2.0f ? 2.0f : r;
}

static iqdb_dist_fn scalar_fn(int metric)
{
    switch (metric) {
    case IQDB_M_EUCLIDEAN: return l2_scalar;
    case IQDB_M_COSINE: return cosine_scalar;
    case IQDB_M_DOT: return dot_scalar;
    case IQDB_M_MANHATTAN: return l1_scalar;
    case IQDB_M_HAMMING: return hamming_scalar;
    default: return NULL;
    }
}

static void dist_1xn_scalar(int metric, const float *q, const float *base,
                            size_t stride, size_t n, size_t dim, float *out)
{
    /* Called through a pointer so that it is the same code as dist[]. */
    iqdb_dist_fn f = scalar_fn(metric);
    for (size_t j = 0; j < n; j++) {
        if (j + 2 < n)
            __builtin_prefetch(base + (j + 2) * stride);
        out[j] = f(q, base + j * stride, dim);
    }
}

static void dist_gather_scalar(int metric, const float *q,
                               const float *const *vecs, size_t n, size_t dim,
                               float *out)
{
    iqdb_dist_fn f = scalar_fn(metric);
    for (size_t j = 0; j < n; j++) {
        if (j + 2 < n)
            __builtin_prefetch(vecs[j + 2]);
        out[j] = f(q, vecs[j], dim);
    }
}

/* Base vectors per cache block of dot_mxn: about 256 KiB of them, reused
 * by every query before the next block is read. */
static size_t scalar_block(size_t dim)
{
    size_t nb = (256u * 1024u) / ((dim + 1) * sizeof(float));
    return nb < 4 ? 4 : nb;
}

static void dot_mxn_scalar(const float *q, size_t qstride, size_t m,
                           const float *base, size_t stride, size_t n,
                           size_t dim, float *out, size_t ldo)
{
    size_t blk = scalar_block(dim);
    for (size_t j0 = 0; j0 < n; j0 += blk) {
        size_t j1 = j0 + blk < n ? j0 + blk : n;
        for (size_t i = 0; i < m; i++) {
            const float *qi = q + i * qstride;
            float *o = out + i * ldo;
            size_t j = j0;
            /* Four base vectors at once: each query element is loaded
             * once for four independent sums. */
            for (; j + 4 <= j1; j += 4) {
                const float *b0 = base + j * stride;
                const float *b1 = b0 + stride, *b2 = b1 + stride;
                const float *b3 = b2 + stride;
                float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
                for (size_t k = 0; k < dim; k++) {
                    float x = qi[k];
                    s0 += x * b0[k];
                    s1 += x * b1[k];
                    s2 += x * b2[k];
                    s3 += x * b3[k];
                }
                o[j] = s0;
                o[j + 1] = s1;
                o[j + 2] = s2;
                o[j + 3] = s3;
            }
            for (; j < j1; j++)
                o[j] = dotsum_scalar(qi, base + j * stride, dim);
        }
    }
}

static void norms_sq_scalar(const float *base, size_t stride, size_t n,
                            size_t dim, float *out)
{
    for (size_t j = 0; j < n; j++) {
        const float *b = base + j * stride;
        out[j] = dotsum_scalar(b, b, dim);
    }
}

const iqdb_kernels iqdb__kernels_scalar = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_kernels),
    .isa = "scalar",
    .dist = {NULL, l2_scalar, cosine_scalar, dot_scalar, l1_scalar,
             hamming_scalar},
    .dist_1xn = dist_1xn_scalar,
    .dist_gather = dist_gather_scalar,
    .dot_mxn = dot_mxn_scalar,
    .norms_sq = norms_sq_scalar,
    .finalize = iqdb__finalize,
};
