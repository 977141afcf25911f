/*
 * core/kernels_avx2.c - distance kernels for AVX2 + FMA.
 *
 * The same design as kernels_avx512.c, at half the width and with 16
 * registers instead of 32. Every function carries a target attribute, so
 * the file builds without -mavx2 and its code only runs once kernels.c has
 * checked the CPU.
 *
 * Pair distances: chunk c of 8 floats goes to accumulator c % 4 of its
 * sum, the last partial chunk is a masked load (vmaskmovps never touches
 * the masked-off floats, so nothing past dim is read) into accumulator 3,
 * and the sum is ((a0 + a1) + (a2 + a3)) reduced across lanes in one
 * fixed order. dist_1xn and dist_gather run the same code for two base
 * vectors at once (one for cosine), so they give the same bits per pair.
 *
 * dot_mxn: the packed product of kernels_avx512.c (Goto and van de Geijn,
 * ACM TOMS 34(3), 2008) with a 6 x 16 micro-tile in 12 ymm registers, the
 * classic shape for 16 registers.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>

#include "iqdb_int.h"
#include "kernels_int.h"

#if defined(__x86_64__)

#include <immintrin.h>

#define TGT __attribute__((target("avx2,fma")))
#define INL static inline __attribute__((always_inline)) TGT

/* Floats per register, accumulators per sum, most pairs per block. */
enum { W = 8, U = 4, NBMAX = 2 };

/* Internal "metric": the plain sum of a_i b_i (norms, dot_mxn fallback). */
#define M_SUM 0

/* Lane masks for vmaskmovps: the r-element prefix mask starts at
 * mask_tab + 8 - r. */
static const int32_t mask_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                     0,  0,  0,  0,  0,  0,  0,  0};

INL __m256i prefix_mask(size_t r)
{
    const void *p = mask_tab + 8 - r;
    return _mm256_loadu_si256((const __m256i *)p);
}

/* ------------------------------------------------------------------ */
/* Pair distances                                                       */

INL float hsum(__m256 y)
{
    __m128 z = _mm_add_ps(_mm256_castps256_ps128(y),
                          _mm256_extractf128_ps(y, 1));
    z = _mm_add_ps(z, _mm_movehl_ps(z, z));
    z = _mm_add_ss(z, _mm_movehdup_ps(z));
    return _mm_cvtss_f32(z);
}

INL float reduce(const __m256 *a)
{
    return hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]),
                              _mm256_add_ps(a[2], a[3])));
}

/* acc + the metric's term for the chunk pair (x, y). */
INL __m256 term(int metric, __m256 acc, __m256 x, __m256 y)
{
    switch (metric) {
    case IQDB_M_EUCLIDEAN: {
        __m256 d = _mm256_sub_ps(x, y);
        return _mm256_fmadd_ps(d, d, acc);
    }
    case IQDB_M_MANHATTAN: {
        __m256 d = _mm256_sub_ps(x, y);
        return _mm256_add_ps(acc, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), d));
    }
    case IQDB_M_HAMMING: {
        /* Unordered not-equal: the same as C's != (NaN counts). */
        __m256 ne = _mm256_cmp_ps(x, y, _CMP_NEQ_UQ);
        return _mm256_add_ps(acc, _mm256_and_ps(ne, _mm256_set1_ps(1.0f)));
    }
    default: /* dot, cosine, M_SUM */
        return _mm256_fmadd_ps(x, y, acc);
    }
}

/* Accumulators of a block of nb pairs (q, v[j]); as in kernels_avx512.c. */
typedef struct {
    __m256 s[NBMAX][U];
    __m256 s2[NBMAX][U];
    __m256 sq[U];
} pair_acc;

INL __m256 load(const float *p, __m256i k, int tail)
{
    return tail ? _mm256_maskload_ps(p, k) : _mm256_loadu_ps(p);
}

/* Add the chunk at offset off (full, or the masked tail k) of every pair
 * to accumulator u. */
INL void chunk(int metric, int nb, int own_qn, pair_acc *a, int u,
               const float *q, const float *const *v, size_t off,
               __m256i k, int tail)
{
    __m256 x = load(q + off, k, tail);
#pragma GCC unroll 2
    for (int j = 0; j < nb; j++) {
        __m256 y = load(v[j] + off, k, tail);
        a->s[j][u] = term(metric, a->s[j][u], x, y);
        if (metric == IQDB_M_COSINE)
            a->s2[j][u] = _mm256_fmadd_ps(y, y, a->s2[j][u]);
    }
    if (metric == IQDB_M_COSINE && own_qn)
        a->sq[u] = _mm256_fmadd_ps(x, x, a->sq[u]);
}

/*
 * Raw distances of the nb pairs (q, v[j]) into out[j]; see pairs() in
 * kernels_avx512.c for qn, own_qn and pf.
 */
INL void pairs(int metric, int nb, int own_qn, const float *q,
               const float *const *v, const float *const *pf, size_t dim,
               float qn, float *out)
{
    pair_acc a;
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int u = 0; u < U; u++) {
#pragma GCC unroll 2
        for (int j = 0; j < NBMAX; j++)
            a.s[j][u] = a.s2[j][u] = zero;
        a.sq[u] = zero;
    }
    const __m256i none = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + W * U <= dim; i += W * U) {
        /* One prefetch per 64-byte line: two chunks. */
        if (pf != NULL) {
#pragma GCC unroll 2
            for (int j = 0; j < nb; j++) {
                _mm_prefetch((const char *)(pf[j] + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(pf[j] + i + 2 * W), _MM_HINT_T0);
            }
        }
#pragma GCC unroll 4
        for (int u = 0; u < U; u++)
            chunk(metric, nb, own_qn, &a, u, q, v, i + u * W, none, 0);
    }
    if (i + W <= dim) {
        chunk(metric, nb, own_qn, &a, 0, q, v, i, none, 0);
        i += W;
        if (i + W <= dim) {
            chunk(metric, nb, own_qn, &a, 1, q, v, i, none, 0);
            i += W;
            if (i + W <= dim) {
                chunk(metric, nb, own_qn, &a, 2, q, v, i, none, 0);
                i += W;
            }
        }
    }
    if (i < dim)
        chunk(metric, nb, own_qn, &a, 3, q, v, i, prefix_mask(dim - i), 1);

    float r[NBMAX], r2[NBMAX];
    float na = metric == IQDB_M_COSINE && own_qn ? reduce(a.sq) : qn;
#pragma GCC unroll 2
    for (int j = 0; j < nb; j++) {
        r[j] = reduce(a.s[j]);
        if (metric == IQDB_M_COSINE)
            r2[j] = reduce(a.s2[j]);
    }
#pragma GCC unroll 2
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

TGT static float l2_avx2(const float *a, const float *b, size_t dim)
{
    return pair1(IQDB_M_EUCLIDEAN, a, b, dim);
}

TGT static float cosine_avx2(const float *a, const float *b, size_t dim)
{
    return pair1(IQDB_M_COSINE, a, b, dim);
}

TGT static float dot_avx2(const float *a, const float *b, size_t dim)
{
    return pair1(IQDB_M_DOT, a, b, dim);
}

TGT static float l1_avx2(const float *a, const float *b, size_t dim)
{
    return pair1(IQDB_M_MANHATTAN, a, b, dim);
}

TGT static float hamming_avx2(const float *a, const float *b, size_t dim)
{
    return pair1(IQDB_M_HAMMING, a, b, dim);
}

/* Pairs per block: two keep 8 accumulators in flight; cosine needs two
 * sums per pair, so it takes one. */
#define BLOCK_OF(metric) ((metric) == IQDB_M_COSINE ? 1 : NBMAX)

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

TGT static void dist_1xn_avx2(int metric, const float *q, const float *base,
                              size_t stride, size_t n, size_t dim, float *out)
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

TGT static void dist_gather_avx2(int metric, const float *q,
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

TGT static void norms_sq_avx2(const float *base, size_t stride, size_t n,
                              size_t dim, float *out)
{
    for (size_t j = 0; j < n; j++) {
        const float *b = base + j * stride;
        pairs(M_SUM, 1, 0, b, &b, NULL, dim, 0.0f, out + j);
    }
}

/* ------------------------------------------------------------------ */
/* dot_mxn                                                              */

/* Micro-tile: MR queries x NR base vectors (two ymm per query row). */
enum { MR = 6, NR = 16 };
/* Longest k block, and the bytes of packed base vectors kept in L2. */
enum { KC_MAX = 384, BP_BYTES = 1u << 20 };
/* Up to this many queries, transposing the base vectors costs more than
 * the micro-kernel saves (measured on 60000 x 784 and x 128); bytes of
 * base vectors per block of the unpacked path. */
enum { UNPACKED_MAX_M = 3, UNPACKED_BYTES = 256u << 10 };

/* Transpose the 8 x 8 block r in place: r[c] becomes column c (32-bit
 * then 64-bit interleaves, then a swap of 128-bit lanes). */
INL void transpose8(__m256 *r)
{
    __m256 a[8], b[8];
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) {
        a[2 * p] = _mm256_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        a[2 * p + 1] = _mm256_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    /* b[4g + c], lane L: column 4L + c of rows 4g .. 4g + 3. */
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++) {
        __m256d lo = _mm256_castps_pd(a[4 * g]);
        __m256d hi = _mm256_castps_pd(a[4 * g + 1]);
        __m256d lo2 = _mm256_castps_pd(a[4 * g + 2]);
        __m256d hi2 = _mm256_castps_pd(a[4 * g + 3]);
        b[4 * g] = _mm256_castpd_ps(_mm256_unpacklo_pd(lo, lo2));
        b[4 * g + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(lo, lo2));
        b[4 * g + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(hi, hi2));
        b[4 * g + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(hi, hi2));
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(b[c], b[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(b[c], b[4 + c], 0x31);
    }
}

/* Pack nc base vectors into panels of NR, as in kernels_avx512.c. */
TGT static void pack_base(const float *b, size_t stride, size_t nc,
                          size_t kc, float *bp)
{
    for (size_t jr = 0; jr < nc; jr += NR) {
        float *panel = bp + jr * kc;
        for (size_t h = 0; h < NR / W; h++) {
            size_t j0 = jr + h * W;
            size_t rows = j0 >= nc ? 0 : nc - j0 < W ? nc - j0 : W;
            for (size_t k0 = 0; k0 < kc; k0 += W) {
                size_t cols = kc - k0 < W ? kc - k0 : W;
                __m256i km = prefix_mask(cols);
                __m256 r[W];
#pragma GCC unroll 8
                for (size_t t = 0; t < W; t++)
                    r[t] = t < rows ? _mm256_maskload_ps(
                                          b + (j0 + t) * stride + k0, km)
                                    : _mm256_setzero_ps();
                transpose8(r);
#pragma GCC unroll 8
                for (size_t c = 0; c < W; c++)
                    if (c < cols)
                        _mm256_store_ps(panel + (k0 + c) * NR + h * W, r[c]);
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

/* c[r*ldc + j] (+)= sum_k ap[k*MR + r] * bp[k*NR + j] for r < mr and the
 * columns in lane masks m0 (j < 8) and m1 (8 <= j < 16). */
INL void micro_kernel(size_t kc, const float *ap, const float *bp, float *c,
                      size_t ldc, size_t mr, __m256i m0, __m256i m1, int add)
{
    __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
        c0[r] = c1[r] = _mm256_setzero_ps();
    for (size_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(bp);
        __m256 b1 = _mm256_load_ps(bp + W);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m256 x = _mm256_broadcast_ss(ap + r);
            c0[r] = _mm256_fmadd_ps(x, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
        }
        ap += MR;
        bp += NR;
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        if ((size_t)r < mr) {
            float *cr = c + (size_t)r * ldc;
            if (add) {
                c0[r] = _mm256_add_ps(c0[r], _mm256_maskload_ps(cr, m0));
                c1[r] = _mm256_add_ps(c1[r], _mm256_maskload_ps(cr + W, m1));
            }
            _mm256_maskstore_ps(cr, m0, c0[r]);
            _mm256_maskstore_ps(cr + W, m1, c1[r]);
        }
    }
}

/* For a few queries, or without memory for the packed panels: per
 * query, two base vectors at a time through the pair code, over blocks of
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

TGT static void dot_mxn_avx2(const float *q, size_t qstride, size_t m,
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
                    size_t nr = nc - jr < NR ? nc - jr : NR;
                    __m256i m0 = prefix_mask(nr < W ? nr : W);
                    __m256i m1 = prefix_mask(nr > W ? nr - W : 0);
                    float *c = out + ic * ldo + jc + jr;
                    micro_kernel(kc, ap, bp + jr * kc, c, ldo, mr, m0, m1,
                                 pc > 0);
                }
            }
        }
    }
    iqdb__aligned_free(bp);
}

const iqdb_kernels iqdb__kernels_avx2 = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_kernels),
    .isa = "avx2",
    .dist = {NULL, l2_avx2, cosine_avx2, dot_avx2, l1_avx2, hamming_avx2},
    .dist_1xn = dist_1xn_avx2,
    .dist_gather = dist_gather_avx2,
    .dot_mxn = dot_mxn_avx2,
    .norms_sq = norms_sq_avx2,
    .finalize = iqdb__finalize,
};

#endif /* __x86_64__ */
