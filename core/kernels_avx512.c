/*
 * core/kernels_avx512.c - distance kernels for AVX-512 (F, BW, VL) + FMA.
 *
 * Every function carries a target attribute, so the file builds without
 * -mavx512f and its code only runs once kernels.c has checked the CPU.
 *
 * Pair distances: a vector of dim floats is read in 16-float chunks;
 * chunk c goes to accumulator c % 4 of its sum (four FMA chains in
 * flight), the last partial chunk is a masked load (never a byte past dim)
 * into accumulator 3, and the sum is ((a0 + a1) + (a2 + a3)) reduced
 * across lanes in one fixed order. dist_1xn and dist_gather run the same
 * code for four base vectors at once (two for cosine), sharing the query
 * loads and prefetching the next four, and so give the same bits per pair.
 *
 * dot_mxn is a packed matrix product after Goto and van de Geijn,
 * "Anatomy of high-performance matrix multiplication" (ACM TOMS 34(3),
 * 2008), with the loop order and micro-kernel shape of BLIS: a block of
 * base vectors, transposed so that each k holds 32 consecutive vectors,
 * stays in L2 while every query passes over it; the micro-kernel keeps a
 * 14 x 32 tile of products in 28 zmm registers for the whole k loop.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>

#include "iqdb_int.h"
#include "kernels_int.h"

#if defined(__x86_64__)

#include <immintrin.h>

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define INL static inline __attribute__((always_inline)) TGT

/* Floats per register, accumulators per sum, most pairs per block. */
enum { W = 16, U = 4, NBMAX = 4 };

/* Internal "metric": the plain sum of a_i b_i (norms, dot_mxn fallback). */
#define M_SUM 0

/* ------------------------------------------------------------------ */
/* Pair distances                                                       */

INL float hsum(__m512 x)
{
    __m256 lo = _mm512_castps512_ps256(x);
    __m256 hi =
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
    __m256 y = _mm256_add_ps(lo, hi);
    __m128 z = _mm_add_ps(_mm256_castps256_ps128(y),
                          _mm256_extractf128_ps(y, 1));
    z = _mm_add_ps(z, _mm_movehl_ps(z, z));
    z = _mm_add_ss(z, _mm_movehdup_ps(z));
    return _mm_cvtss_f32(z);
}

INL float reduce(const __m512 *a)
{
    return hsum(_mm512_add_ps(_mm512_add_ps(a[0], a[1]),
                              _mm512_add_ps(a[2], a[3])));
}

/* acc + the metric's term for the chunk pair (x, y). */
INL __m512 term(int metric, __m512 acc, __m512 x, __m512 y)
{
    switch (metric) {
    case IQDB_M_EUCLIDEAN: {
        __m512 d = _mm512_sub_ps(x, y);
        return _mm512_fmadd_ps(d, d, acc);
    }
    case IQDB_M_MANHATTAN:
        return _mm512_add_ps(acc, _mm512_abs_ps(_mm512_sub_ps(x, y)));
    case IQDB_M_HAMMING: {
        /* Unordered not-equal: the same as C's != (NaN counts). */
        __mmask16 ne = _mm512_cmp_ps_mask(x, y, _CMP_NEQ_UQ);
        return _mm512_mask_add_ps(acc, ne, acc, _mm512_set1_ps(1.0f));
    }
    default: /* dot, cosine, M_SUM */
        return _mm512_fmadd_ps(x, y, acc);
    }
}

/* Accumulators of a block of nb pairs (q, v[j]). s: the metric's sum
 * (a.b for cosine); s2: |v[j]|^2 (cosine); sq: |q|^2 (cosine, when the
 * block computes the query's norm itself). */
typedef struct {
    __m512 s[NBMAX][U];
    __m512 s2[NBMAX][U];
    __m512 sq[U];
} pair_acc;

/* Add the chunk at offset off (full, or the masked tail k) of every pair
 * to accumulator u. */
INL void chunk(int metric, int nb, int own_qn, pair_acc *a, int u,
               const float *q, const float *const *v, size_t off,
               __mmask16 k, int tail)
{
    __m512 x = tail ? _mm512_maskz_loadu_ps(k, q + off)
                    : _mm512_loadu_ps(q + off);
#pragma GCC unroll 4
    for (int j = 0; j < nb; j++) {
        __m512 y = tail ? _mm512_maskz_loadu_ps(k, v[j] + off)
                        : _mm512_loadu_ps(v[j] + off);
        a->s[j][u] = term(metric, a->s[j][u], x, y);
        if (metric == IQDB_M_COSINE)
            a->s2[j][u] = _mm512_fmadd_ps(y, y, a->s2[j][u]);
    }
    if (metric == IQDB_M_COSINE && own_qn)
        a->sq[u] = _mm512_fmadd_ps(x, x, a->sq[u]);
}

/*
 * Raw distances of the nb pairs (q, v[j]) into out[j]. Cosine takes the
 * query's squared norm qn unless own_qn, where it is summed in the same
 * pass; both give the same bits, because qn comes from this function with
 * M_SUM and (q, q), which performs the same operations. pf: nb vectors to
 * prefetch (the caller's next block), or NULL.
 */
INL void pairs(int metric, int nb, int own_qn, const float *q,
               const float *const *v, const float *const *pf, size_t dim,
               float qn, float *out)
{
    pair_acc a;
    const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int u = 0; u < U; u++) {
#pragma GCC unroll 4
        for (int j = 0; j < NBMAX; j++)
            a.s[j][u] = a.s2[j][u] = zero;
        a.sq[u] = zero;
    }
    size_t i = 0;
    for (; i + W * U <= dim; i += W * U) {
        if (pf != NULL) {
#pragma GCC unroll 4
            for (int j = 0; j < nb; j++)
#pragma GCC unroll 4
                for (int u = 0; u < U; u++)
                    _mm_prefetch((const char *)(pf[j] + i + u * W),
                                 _MM_HINT_T0);
        }
#pragma GCC unroll 4
        for (int u = 0; u < U; u++)
            chunk(metric, nb, own_qn, &a, u, q, v, i + u * W, 0, 0);
    }
    /* Up to three more whole chunks, then the masked tail in the fourth
     * accumulator (fixed positions, so no register is indexed at run
     * time). */
    if (i + W <= dim) {
        chunk(metric, nb, own_qn, &a, 0, q, v, i, 0, 0);
        i += W;
        if (i + W <= dim) {
            chunk(metric, nb, own_qn, &a, 1, q, v, i, 0, 0);
            i += W;
            if (i + W <= dim) {
                chunk(metric, nb, own_qn, &a, 2, q, v, i, 0, 0);
                i += W;
            }
        }
    }
    if (i < dim)
        chunk(metric, nb, own_qn, &a, 3, q, v, i,
              (__mmask16)((1u << (dim - i)) - 1u), 1);

    /* All reductions before the first call out, so that no accumulator
     * lives across a call. */
    float r[NBMAX], r2[NBMAX];
    float na = metric == IQDB_M_COSINE && own_qn ? reduce(a.sq) : qn;
#pragma GCC unroll 4
    for (int j = 0; j < nb; j++) {
        r[j] = reduce(a.s[j]);
        if (metric == IQDB_M_COSINE)
            r2[j] = reduce(a.s2[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < nb; j++) {
        if (metric == IQDB_M_DOT)
            out[j] = -r[j];
        else if (metric == IQDB_M_COSINE)
            out[j] = iqdb__cosine_finish(r[j], na, r2[j], q, v[j], dim);
        else
            out[j] = r[j];
    }
}

INL float pair1(int metric, const float *a, const float *b, size_t dim)
{
    float r;
    pairs(metric, 1, metric == IQDB_M_COSINE, a, &b, NULL, dim, 0.0f, &r);
    return r;
}

TGT static float l2_avx512(const float *a, const float *b, size_t dim)
{
    return pair1(IQDB_M_EUCLIDEAN, a, b, dim);
}

TGT static float cosine_avx512(const float *a, const float *b, size_t dim)
{
    return pair1(IQDB_M_COSINE, a, b, dim);
}

TGT static float dot_avx512(const float *a, const float *b, size_t dim)
{
    return pair1(IQDB_M_DOT, a, b, dim);
}

TGT static float l1_avx512(const float *a, const float *b, size_t dim)
{
    return pair1(IQDB_M_MANHATTAN, a, b, dim);
}

TGT static float hamming_avx512(const float *a, const float *b, size_t dim)
{
    return pair1(IQDB_M_HAMMING, a, b, dim);
}

/* Pairs per block: four keep 16 accumulators in flight; cosine needs two
 * sums per pair, so it takes two. */
#define BLOCK_OF(metric) ((metric) == IQDB_M_COSINE ? 2 : NBMAX)

INL float query_norm(int metric, const float *q, size_t dim)
{
    float qn = 0.0f;
    if (metric == IQDB_M_COSINE)
        pairs(M_SUM, 1, 0, q, &q, NULL, dim, 0.0f, &qn);
    return qn;
}

INL void scan(int metric, const float *q, const float *base, size_t stride,
              size_t n, size_t dim, float *out)
{
    const int nb = BLOCK_OF(metric);
    float qn = query_norm(metric, q, dim);
    const float *v[NBMAX], *pf[NBMAX];
    size_t j = 0;
    for (; j + (size_t)nb <= n; j += (size_t)nb) {
        for (int t = 0; t < nb; t++) {
            v[t] = base + (j + (size_t)t) * stride;
            /* The next block, or (at the end) this one again. */
            pf[t] = j + (size_t)(nb + t) < n ? v[t] + (size_t)nb * stride
                                             : v[t];
        }
        pairs(metric, nb, 0, q, v, pf, dim, qn, out + j);
    }
    for (; j < n; j++) {
        v[0] = base + j * stride;
        pairs(metric, 1, 0, q, v, NULL, dim, qn, out + j);
    }
}

INL void gather(int metric, const float *q, const float *const *vecs,
                size_t n, size_t dim, float *out)
{
    const int nb = BLOCK_OF(metric);
    float qn = query_norm(metric, q, dim);
    size_t j = 0;
    for (; j + (size_t)nb <= n; j += (size_t)nb) {
        const float *const *pf =
            j + 2 * (size_t)nb <= n ? vecs + j + nb : vecs + j;
        pairs(metric, nb, 0, q, vecs + j, pf, dim, qn, out + j);
    }
    for (; j < n; j++)
        pairs(metric, 1, 0, q, vecs + j, NULL, dim, qn, out + j);
}

TGT static void dist_1xn_avx512(int metric, const float *q,
                                const float *base, size_t stride, size_t n,
                                size_t dim, float *out)
{
    switch (metric) {
    case IQDB_M_EUCLIDEAN:
        scan(IQDB_M_EUCLIDEAN, q, base, stride, n, dim, out);
        break;
    case IQDB_M_COSINE:
        scan(IQDB_M_COSINE, q, base, stride, n, dim, out);
        break;
    case IQDB_M_DOT:
        scan(IQDB_M_DOT, q, base, stride, n, dim, out);
        break;
    case IQDB_M_MANHATTAN:
        scan(IQDB_M_MANHATTAN, q, base, stride, n, dim, out);
        break;
    case IQDB_M_HAMMING:
        scan(IQDB_M_HAMMING, q, base, stride, n, dim, out);
        break;
    default:
        break;
    }
}

TGT static void dist_gather_avx512(int metric, const float *q,
                                   const float *const *vecs, size_t n,
                                   size_t dim, float *out)
{
    switch (metric) {
    case IQDB_M_EUCLIDEAN:
        gather(IQDB_M_EUCLIDEAN, q, vecs, n, dim, out);
        break;
    case IQDB_M_COSINE:
        gather(IQDB_M_COSINE, q, vecs, n, dim, out);
        break;
    case IQDB_M_DOT:
        gather(IQDB_M_DOT, q, vecs, n, dim, out);
        break;
    case IQDB_M_MANHATTAN:
        gather(IQDB_M_MANHATTAN, q, vecs, n, dim, out);
        break;
    case IQDB_M_HAMMING:
        gather(IQDB_M_HAMMING, q, vecs, n, dim, out);
        break;
    default:
        break;
    }
}

TGT static void norms_sq_avx512(const float *base, size_t stride, size_t n,
                                size_t dim, float *out)
{
    for (size_t j = 0; j < n; j++) {
        const float *b = base + j * stride;
        pairs(M_SUM, 1, 0, b, &b, NULL, dim, 0.0f, out + j);
    }
}

/* ------------------------------------------------------------------ */
/* dot_mxn                                                              */

/* Micro-tile: MR queries x NR base vectors (two zmm per query row). */
enum { MR = 14, NR = 32 };
/* Longest k block, and the bytes of packed base vectors kept in L2. */
enum { KC_MAX = 384, BP_BYTES = 1u << 20 };
/* Up to this many queries, transposing the base vectors costs more than
 * the micro-kernel saves (measured on 60000 x 784 and x 128); bytes of
 * base vectors per block of the unpacked path. */
enum { UNPACKED_MAX_M = 4, UNPACKED_BYTES = 256u << 10 };

/* Transpose the 16 x 16 block r in place: r[c] becomes column c. The
 * usual three stages: 32-bit interleave of row pairs, 64-bit interleave
 * of those, then a 4 x 4 transpose of the 128-bit lanes. */
INL void transpose16(__m512 *r)
{
    __m512 a[16], b[16];
#pragma GCC unroll 8
    for (int p = 0; p < 8; p++) {
        a[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        a[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    /* b[4g + c], lane L: column 4L + c of rows 4g .. 4g + 3. */
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        __m512d lo = _mm512_castps_pd(a[4 * g]);
        __m512d hi = _mm512_castps_pd(a[4 * g + 1]);
        __m512d lo2 = _mm512_castps_pd(a[4 * g + 2]);
        __m512d hi2 = _mm512_castps_pd(a[4 * g + 3]);
        b[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, lo2));
        b[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, lo2));
        b[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi, hi2));
        b[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi, hi2));
    }
    /* Column 4L + c gathers lane L of b[c], b[4 + c], b[8 + c], b[12 + c]. */
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m512 s0 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0x88);
        __m512 s1 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0xdd);
        __m512 s2 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0x88);
        __m512 s3 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0xdd);
        r[c] = _mm512_shuffle_f32x4(s0, s2, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(s1, s3, 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(s0, s2, 0xdd);
        r[12 + c] = _mm512_shuffle_f32x4(s1, s3, 0xdd);
    }
}

/*
 * Pack nc base vectors (b + j*stride, kc floats each) into panels of NR:
 * panel p holds, for k = 0 .. kc-1, the k-th float of vectors
 * p*NR .. p*NR + NR-1, zero past nc.
 */
TGT static void pack_base(const float *b, size_t stride, size_t nc,
                          size_t kc, float *bp)
{
    for (size_t jr = 0; jr < nc; jr += NR) {
        float *panel = bp + (jr / NR) * kc * NR;
        for (size_t h = 0; h < NR / W; h++) {
            size_t j0 = jr + h * W;
            size_t rows = j0 >= nc ? 0 : nc - j0 < W ? nc - j0 : W;
            for (size_t k0 = 0; k0 < kc; k0 += W) {
                size_t cols = kc - k0 < W ? kc - k0 : W;
                __mmask16 km = (__mmask16)((1u << cols) - 1u);
                __m512 r[W];
#pragma GCC unroll 16
                for (size_t t = 0; t < W; t++)
                    r[t] = t < rows ? _mm512_maskz_loadu_ps(
                                          km, b + (j0 + t) * stride + k0)
                                    : _mm512_setzero_ps();
                transpose16(r);
#pragma GCC unroll 16
                for (size_t c = 0; c < W; c++)
                    if (c < cols)
                        _mm512_store_ps(panel + (k0 + c) * NR + h * W, r[c]);
            }
        }
    }
}

/* Pack mr queries (kc floats each) k-major: ap[k*MR + r], zero past mr. */
TGT static void pack_queries(const float *q, size_t qstride, size_t mr,
                             size_t kc, float *ap)
{
    for (size_t r = 0; r < MR; r++) {
        if (r < mr) {
            const float *qr = q + r * qstride;
            for (size_t k = 0; k < kc; k++)
                ap[k * MR + r] = qr[k];
        } else {
            for (size_t k = 0; k < kc; k++)
                ap[k * MR + r] = 0.0f;
        }
    }
}

/*
 * c[r*ldc + j] (+)= sum_k ap[k*MR + r] * bp[k*NR + j] for r < mr and the
 * columns in masks m0 (j < 16) and m1 (16 <= j < 32). The whole MR x NR
 * tile lives in 28 registers: per k, two loads of base values and MR
 * broadcasts of query values feed 2*MR independent FMAs.
 */
INL void micro_kernel(size_t kc, const float *ap, const float *bp, float *c,
                      size_t ldc, size_t mr, __mmask16 m0, __mmask16 m1,
                      int add)
{
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 14
    for (int r = 0; r < MR; r++)
        c0[r] = c1[r] = _mm512_setzero_ps();
    for (size_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(bp);
        __m512 b1 = _mm512_load_ps(bp + W);
#pragma GCC unroll 14
        for (int r = 0; r < MR; r++) {
            __m512 x = _mm512_set1_ps(ap[r]);
            c0[r] = _mm512_fmadd_ps(x, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(x, b1, c1[r]);
        }
        ap += MR;
        bp += NR;
    }
#pragma GCC unroll 14
    for (int r = 0; r < MR; r++) {
        if ((size_t)r < mr) {
            float *cr = c + (size_t)r * ldc;
            if (add) {
                c0[r] = _mm512_add_ps(c0[r], _mm512_maskz_loadu_ps(m0, cr));
                c1[r] = _mm512_add_ps(c1[r],
                                      _mm512_maskz_loadu_ps(m1, cr + W));
            }
            _mm512_mask_storeu_ps(cr, m0, c0[r]);
            _mm512_mask_storeu_ps(cr + W, m1, c1[r]);
        }
    }
}

/* Column masks for the nr (1..NR) valid columns of a tile. */
static void tile_masks(size_t nr, __mmask16 *m0, __mmask16 *m1)
{
    *m0 = (__mmask16)(nr >= W ? 0xffffu : (1u << nr) - 1u);
    *m1 = (__mmask16)(nr <= W    ? 0u
                      : nr >= NR ? 0xffffu
                                 : (1u << (nr - W)) - 1u);
}

/* For a few queries, or without memory for the packed panels: per
 * query, four base vectors at a time through the pair code, over blocks of
 * base vectors small enough to stay in L2 while every query passes. */
TGT static void dot_mxn_unpacked(const float *q, size_t qstride, size_t m,
                                 const float *base, size_t stride, size_t n,
                                 size_t dim, float *out, size_t ldo)
{
    size_t row = stride > dim ? stride : dim;
    size_t blk = UNPACKED_BYTES / ((row + 1) * sizeof(float)) / NBMAX * NBMAX;
    if (blk < NBMAX)
        blk = NBMAX;
    for (size_t j0 = 0; j0 < n; j0 += blk) {
        size_t j1 = n - j0 < blk ? n : j0 + blk;
        for (size_t i = 0; i < m; i++) {
            const float *qi = q + i * qstride;
            float *o = out + i * ldo;
            const float *v[NBMAX];
            size_t j = j0;
            for (; j + NBMAX <= j1; j += NBMAX) {
                for (int t = 0; t < NBMAX; t++)
                    v[t] = base + (j + (size_t)t) * stride;
                pairs(M_SUM, NBMAX, 0, qi, v, NULL, dim, 0.0f, o + j);
            }
            for (; j < j1; j++) {
                v[0] = base + j * stride;
                pairs(M_SUM, 1, 0, qi, v, NULL, dim, 0.0f, o + j);
            }
        }
    }
}

TGT static void dot_mxn_avx512(const float *q, size_t qstride, size_t m,
                               const float *base, size_t stride, size_t n,
                               size_t dim, float *out, size_t ldo)
{
    if (m == 0 || n == 0)
        return;
    if (dim == 0) {
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++)
                out[i * ldo + j] = 0.0f;
        return;
    }
    if (m <= UNPACKED_MAX_M) {
        dot_mxn_unpacked(q, qstride, m, base, stride, n, dim, out, ldo);
        return;
    }
    /* k blocks of equal length, at most KC_MAX; base blocks of nc_max
     * vectors, a multiple of NR, filling BP_BYTES. */
    size_t nkb = (dim + KC_MAX - 1) / KC_MAX;
    size_t kc_max = (dim + nkb - 1) / nkb;
    size_t nc_max = BP_BYTES / (kc_max * sizeof(float)) / NR * NR;
    if (nc_max < NR)
        nc_max = NR;
    size_t n_up = (n + NR - 1) / NR * NR;
    if (nc_max > n_up)
        nc_max = n_up;
    float *bp = iqdb__aligned_alloc(
        64, (nc_max * kc_max + (size_t)MR * kc_max) * sizeof(float));
    if (bp == NULL) {
        dot_mxn_unpacked(q, qstride, m, base, stride, n, dim, out, ldo);
        return;
    }
    float *ap = bp + nc_max * kc_max;

    for (size_t jc = 0; jc < n; jc += nc_max) {
        size_t nc = n - jc < nc_max ? n - jc : nc_max;
        for (size_t pc = 0; pc < dim; pc += kc_max) {
            size_t kc = dim - pc < kc_max ? dim - pc : kc_max;
            pack_base(base + jc * stride + pc, stride, nc, kc, bp);
            for (size_t ic = 0; ic < m; ic += MR) {
                size_t mr = m - ic < MR ? m - ic : MR;
                pack_queries(q + ic * qstride + pc, qstride, mr, kc, ap);
                for (size_t jr = 0; jr < nc; jr += NR) {
                    __mmask16 m0, m1;
                    tile_masks(nc - jr < NR ? nc - jr : NR, &m0, &m1);
                    float *c = out + ic * ldo + jc + jr;
                    micro_kernel(kc, ap, bp + jr * kc, c, ldo, mr, m0, m1,
                                 pc > 0);
                }
            }
        }
    }
    iqdb__aligned_free(bp);
}

const iqdb_kernels iqdb__kernels_avx512 = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_kernels),
    .isa = "avx512",
    .dist = {NULL, l2_avx512, cosine_avx512, dot_avx512, l1_avx512,
             hamming_avx512},
    .dist_1xn = dist_1xn_avx512,
    .dist_gather = dist_gather_avx512,
    .dot_mxn = dot_mxn_avx512,
    .norms_sq = norms_sq_avx512,
    .finalize = iqdb__finalize,
};

#endif /* __x86_64__ */
