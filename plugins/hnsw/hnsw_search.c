/*
 * plugins/hnsw/hnsw_search.c - per-thread scratch, the layer search
 * (Algorithm 2 of the paper) shared by inserts and queries, and queries
 * themselves (Algorithm 5, K-NN-SEARCH), filtered or not.
 *
 * Filtered queries follow the rule of the plugin guide: a node the filter
 * rejects still routes the search (it enters the candidate heap and its
 * links are followed) but never the result heap. The result heap holds
 * the ef nearest *allowed* nodes, so with a selective filter its bound
 * stays loose longer and the search naturally explores further; ef is
 * also widened by up to filter_widen as the filter gets more selective.
 * If the result heap never fills, the search has exhausted every node
 * reachable from the entry point, and the few allowed nodes it could not
 * reach are found by a scan of the unvisited ones, so a query returns
 * min(k, allowed) hits whenever the graph holds them.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "hnsw_int.h"

/* ---- bf16 codes ------------------------------------------------------- */
/*
 * bfloat16 keeps a float's sign, exponent and top 7 mantissa bits, so a
 * code is the float's upper half (rounded to nearest even) and decoding
 * is a 16-bit shift: cheap enough to do inside the distance loop. The
 * error is at most 2^-9 relative per coordinate, which perturbs the walk
 * through the graph a little; final answers are re-scored exactly.
 */

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    /* Rounding up would overflow to infinity near FLT_MAX: truncate. */
    if ((r & 0x7f800000u) == 0x7f800000u)
        r = u;
    return (uint16_t)(r >> 16);
}

static inline float from_bf16(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The three sums every metric reduces to. */
enum { SUM_SQDIFF, SUM_DOT, SUM_ABSDIFF };

static inline float finish(int metric, float s, float qn)
{
    switch (metric) {
    case IQDB_M_DOT:
        return -s;
    case IQDB_M_COSINE:
        return qn > 0 ? 1.0f - s / qn : 1.0f;
    default:
        return s;
    }
}

static inline float sum_scalar(int op, const float *q, const uint16_t *x,
                               size_t dim)
{
    float s = 0;
    for (size_t i = 0; i < dim; i++) {
        float a = q[i], b = from_bf16(x[i]);
        s += op == SUM_DOT ? a * b
                           : op == SUM_SQDIFF ? (a - b) * (a - b)
                                              : fabsf(a - b);
    }
    return s;
}

#define SCALAR_KERNEL(name, metric, op)                                    \
    static float name(const float *q, const uint16_t *x, size_t dim,       \
                      float qn)                                            \
    {                                                                      \
        return finish(metric, sum_scalar(op, q, x, dim), qn);              \
    }
SCALAR_KERNEL(l2_scalar, IQDB_M_EUCLIDEAN, SUM_SQDIFF)
SCALAR_KERNEL(dot_scalar, IQDB_M_DOT, SUM_DOT)
SCALAR_KERNEL(cos_scalar, IQDB_M_COSINE, SUM_DOT)
SCALAR_KERNEL(l1_scalar, IQDB_M_MANHATTAN, SUM_ABSDIFF)

#if defined(__x86_64__)
#define TGT512 __attribute__((target("avx512f")))
#define TGT2 __attribute__((target("avx2,fma")))

/* 16 codes to floats: widen to 32 bits, shift into the upper half. */
TGT512 static inline __m512 load16(const uint16_t *x)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)x);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h),
                                                 16));
}

TGT512 static inline __m512 step512(int op, __m512 a, __m512 b, __m512 acc)
{
    if (op == SUM_DOT)
        return _mm512_fmadd_ps(a, b, acc);
    __m512 d = _mm512_sub_ps(a, b);
    if (op == SUM_SQDIFF)
        return _mm512_fmadd_ps(d, d, acc);
    return _mm512_add_ps(acc, _mm512_abs_ps(d));
}

/* Codes are zero-padded to 32 entries, so the tail reads whole blocks of
 * codes and only the query needs a mask (masked-off lanes are 0 - 0). */
TGT512 static inline float sum512(int op, const float *q, const uint16_t *x,
                                  size_t dim)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        a0 = step512(op, _mm512_loadu_ps(q + i), load16(x + i), a0);
        a1 = step512(op, _mm512_loadu_ps(q + i + 16), load16(x + i + 16), a1);
    }
    for (; i < dim; i += 16) {
        size_t r = dim - i < 16 ? dim - i : 16;
        __mmask16 m = (__mmask16)((1u << r) - 1);
        a0 = step512(op, _mm512_maskz_loadu_ps(m, q + i), load16(x + i), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

#define AVX512_KERNEL(name, metric, op)                                    \
    TGT512 static float name(const float *q, const uint16_t *x,            \
                             size_t dim, float qn)                         \
    {                                                                      \
        return finish(metric, sum512(op, q, x, dim), qn);                  \
    }
AVX512_KERNEL(l2_avx512, IQDB_M_EUCLIDEAN, SUM_SQDIFF)
AVX512_KERNEL(dot_avx512, IQDB_M_DOT, SUM_DOT)
AVX512_KERNEL(cos_avx512, IQDB_M_COSINE, SUM_DOT)
AVX512_KERNEL(l1_avx512, IQDB_M_MANHATTAN, SUM_ABSDIFF)

TGT2 static inline __m256 load8(const uint16_t *x)
{
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)x);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h),
                                                 16));
}

TGT2 static inline __m256 step256(int op, __m256 a, __m256 b, __m256 acc)
{
    if (op == SUM_DOT)
        return _mm256_fmadd_ps(a, b, acc);
    __m256 d = _mm256_sub_ps(a, b);
    if (op == SUM_SQDIFF)
        return _mm256_fmadd_ps(d, d, acc);
    return _mm256_add_ps(acc, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), d));
}

TGT2 static inline float sum256(int op, const float *q, const uint16_t *x,
                                size_t dim)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= dim; i += 16) {
        a0 = step256(op, _mm256_loadu_ps(q + i), load8(x + i), a0);
        a1 = step256(op, _mm256_loadu_ps(q + i + 8), load8(x + i + 8), a1);
    }
    a0 = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a0),
                          _mm256_extractf128_ps(a0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h) + sum_scalar(op, q + i, x + i, dim - i);
}

#define AVX2_KERNEL(name, metric, op)                                      \
    TGT2 static float name(const float *q, const uint16_t *x, size_t dim,  \
                           float qn)                                       \
    {                                                                      \
        return finish(metric, sum256(op, q, x, dim), qn);                  \
    }
AVX2_KERNEL(l2_avx2, IQDB_M_EUCLIDEAN, SUM_SQDIFF)
AVX2_KERNEL(dot_avx2, IQDB_M_DOT, SUM_DOT)
AVX2_KERNEL(cos_avx2, IQDB_M_COSINE, SUM_DOT)
AVX2_KERNEL(l1_avx2, IQDB_M_MANHATTAN, SUM_ABSDIFF)
#endif

void hnsw__pick_kernels(hnsw *h)
{
    /* Index: metric - 1 for euclidean, cosine, dot, manhattan. */
    static const hnsw_code_fn scalar[4] = {l2_scalar, cos_scalar, dot_scalar,
                                           l1_scalar};
    const hnsw_code_fn *set = scalar;
#if defined(__x86_64__)
    static const hnsw_code_fn avx512[4] = {l2_avx512, cos_avx512, dot_avx512,
                                           l1_avx512};
    static const hnsw_code_fn avx2[4] = {l2_avx2, cos_avx2, dot_avx2,
                                         l1_avx2};
    /* Follow the core's choice of instruction set (which it may have
     * been told to lower). */
    const char *isa = h->kern->isa ? h->kern->isa : "";
    if (strcmp(isa, "avx512") == 0)
        set = avx512;
    else if (strcmp(isa, "avx2") == 0)
        set = avx2;
#endif
    h->cdist = NULL;
    if (h->metric >= IQDB_M_EUCLIDEAN && h->metric <= IQDB_M_MANHATTAN)
        h->cdist = set[h->metric - 1];
}

float hnsw__norm(const hnsw *h, const float *a)
{
    if (h->enc != HNSW_ENC_BF16 || h->metric != IQDB_M_COSINE)
        return 0;
    float n2;
    h->kern->norms_sq(a, h->dim, 1, h->dim, &n2);
    return sqrtf(n2);
}

void hnsw__encode(const hnsw_ctx *c, uint32_t n)
{
    const hnsw *h = c->h;
    const float *v = hnsw__vec(c, n);
    uint16_t *x = h->codes + (size_t)n * h->cstride;
    float s = 1.0f;
    if (h->metric == IQDB_M_COSINE) {
        double n2 = 0;
        for (uint32_t i = 0; i < h->dim; i++)
            n2 += (double)v[i] * v[i];
        s = n2 > 0 ? (float)(1.0 / sqrt(n2)) : 0.0f;
    }
    for (uint32_t i = 0; i < h->dim; i++)
        x[i] = to_bf16(v[i] * s);
    for (size_t i = h->dim; i < h->cstride; i++)
        x[i] = 0;
}

void hnsw__dist_ids(const hnsw_ctx *c, const float *a, float an,
                    const uint32_t *ids, size_t n, float *out)
{
    const hnsw *h = c->h;
    if (h->codes == NULL) {
        const float **v = c->sc->vecs;
        for (size_t j = 0; j < n; j++) {
            v[j] = hnsw__vec(c, ids[j]);
            __builtin_prefetch(v[j]);
        }
        h->kern->dist_gather(h->metric, a, v, n, h->dim, out);
        return;
    }
    const size_t bytes = h->cstride * sizeof(uint16_t);
    for (size_t j = 0; j < n; j++)
        __builtin_prefetch(h->codes + (size_t)ids[j] * h->cstride);
    for (size_t j = 0; j < n; j++) {
        /* The next code streams in while this one is scored. */
        if (j + 1 < n) {
            const char *p =
                (const char *)(h->codes + (size_t)ids[j + 1] * h->cstride);
            for (size_t o = 64; o < bytes; o += 64)
                __builtin_prefetch(p + o);
        }
        out[j] = h->cdist(a, h->codes + (size_t)ids[j] * h->cstride, h->dim,
                          an);
    }
}

/* ---- scratch --------------------------------------------------------- */

/* The pool slot this thread last used: start there next time, so threads
 * settle on distinct slots and rarely contend. */
static _Thread_local unsigned pool_hint;

static void account(hnsw *h, hnsw_scratch *sc, size_t old, size_t new_)
{
    sc->bytes += new_ - old;
    __atomic_add_fetch(&h->scratch_bytes, (uint64_t)(new_ - old),
                       __ATOMIC_RELAXED);
}

/* Grow *p (n entries of elem bytes) to at least want entries. */
static int grow_buf(hnsw *h, hnsw_scratch *sc, void **p, size_t *n,
                    size_t want, size_t elem)
{
    if (*n >= want)
        return 0;
    size_t cap = *n ? *n : 16;
    while (cap < want)
        cap *= 2;
    if (cap > SIZE_MAX / elem)
        return IQDB_ENOMEM;
    void *q = h->host->realloc(*p, cap * elem);
    if (q == NULL)
        return IQDB_ENOMEM;
    account(h, sc, *n * elem, cap * elem);
    *p = q;
    *n = cap;
    return 0;
}

void hnsw__scratch_free(hnsw *h, hnsw_scratch *sc)
{
    if (sc == NULL)
        return;
    __atomic_sub_fetch(&h->scratch_bytes, (uint64_t)sc->bytes,
                       __ATOMIC_RELAXED);
    h->host->free(sc->visited);
    h->host->free(sc->cand);
    h->host->free(sc->res);
    h->host->free(sc->sel);
    h->host->free(sc->batch);
    h->host->free(sc->topk);
    h->host->free(sc);
}

/* The per-neighbour-batch arrays hold one list of the widest layer. */
static int fit_batch(hnsw *h, hnsw_scratch *sc)
{
    size_t deg = (size_t)h->m0 + 1;
    if (sc->batch != NULL && sc->deg == deg)
        return 0;
    /* One block: vecs (pointers first, so every part stays aligned for
     * its type), then ids and lbuf (uint32), then dists (float). */
    size_t bytes = deg * (sizeof(const float *) + 2 * sizeof(uint32_t) +
                          sizeof(float));
    void *b = h->host->alloc(bytes);
    if (b == NULL)
        return IQDB_ENOMEM;
    h->host->free(sc->batch);
    sc->batch = b;
    account(h, sc, sc->deg_bytes, bytes);
    sc->deg_bytes = bytes;
    sc->deg = deg;
    sc->vecs = b;
    sc->ids = (uint32_t *)(void *)(sc->vecs + deg);
    sc->lbuf = sc->ids + deg;
    sc->dists = (float *)(void *)(sc->lbuf + deg);
    return 0;
}

int hnsw__scratch_fit(hnsw *h, hnsw_scratch *sc, size_t ef, size_t k,
                      size_t sel)
{
    if (sc->vcap < h->cap) {
        uint16_t *v = h->host->realloc(sc->visited,
                                       (size_t)h->cap * sizeof *v);
        if (v == NULL)
            return IQDB_ENOMEM;
        memset(v + sc->vcap, 0, ((size_t)h->cap - sc->vcap) * sizeof *v);
        account(h, sc, sc->vcap * sizeof *v, (size_t)h->cap * sizeof *v);
        sc->visited = v;
        sc->vcap = h->cap;
    }
    if (fit_batch(h, sc) != 0 ||
        grow_buf(h, sc, (void **)&sc->res, &sc->res_cap, ef + 1,
                 sizeof *sc->res) != 0 ||
        grow_buf(h, sc, (void **)&sc->cand, &sc->cand_cap,
                 2 * ef + h->m0 + 1, sizeof *sc->cand) != 0 ||
        grow_buf(h, sc, (void **)&sc->sel, &sc->sel_cap, sel ? sel : 1,
                 sizeof *sc->sel) != 0 ||
        grow_buf(h, sc, (void **)&sc->topk, &sc->topk_cap, k ? k : 1,
                 sizeof *sc->topk) != 0)
        return IQDB_ENOMEM;
    return 0;
}

hnsw_scratch *hnsw__scratch_get(hnsw *h)
{
    unsigned start = pool_hint;
    for (unsigned i = 0; i < HNSW_POOL; i++) {
        unsigned j = (start + i) % HNSW_POOL;
        if (__atomic_load_n(&h->busy[j], __ATOMIC_RELAXED) ||
            __atomic_exchange_n(&h->busy[j], 1, __ATOMIC_ACQUIRE))
            continue;
        /* Only the holder of busy[j] touches pool[j]. */
        if (h->pool[j] == NULL) {
            h->pool[j] = h->host->calloc(1, sizeof(hnsw_scratch));
            if (h->pool[j] == NULL) {
                __atomic_store_n(&h->busy[j], 0, __ATOMIC_RELEASE);
                return NULL;
            }
        }
        h->pool[j]->slot = (int)j;
        pool_hint = j;
        return h->pool[j];
    }
    /* More threads than pool slots: a private scratch for this call. */
    hnsw_scratch *sc = h->host->calloc(1, sizeof *sc);
    if (sc != NULL)
        sc->slot = -1;
    return sc;
}

void hnsw__scratch_put(hnsw *h, hnsw_scratch *sc)
{
    if (sc == NULL)
        return;
    if (sc->slot < 0)
        hnsw__scratch_free(h, sc);
    else
        __atomic_store_n(&h->busy[sc->slot], 0, __ATOMIC_RELEASE);
}

void hnsw__visit_begin(hnsw_scratch *sc)
{
    /* Generation stamps: a pass costs nothing to clear, except once
     * every 65535 passes. */
    if (++sc->gen == 0) {
        memset(sc->visited, 0, sc->vcap * sizeof *sc->visited);
        sc->gen = 1;
    }
    sc->ncand = 0;
    sc->nres = 0;
}

/* ---- heaps ------------------------------------------------------------ */

/* Candidates: min-heap on d. A push that cannot grow the heap drops the
 * candidate (the search stays correct, only less thorough). */
static void cand_push(hnsw_ctx *c, float d, uint32_t id)
{
    hnsw_scratch *sc = c->sc;
    if (sc->ncand == sc->cand_cap &&
        grow_buf((hnsw *)c->h, sc, (void **)&sc->cand, &sc->cand_cap,
                 sc->cand_cap + 1, sizeof *sc->cand) != 0) {
        sc->oom = 1;
        return;
    }
    hnsw_cand *a = sc->cand;
    size_t i = sc->ncand++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (a[p].d <= d)
            break;
        a[i] = a[p];
        i = p;
    }
    a[i].d = d;
    a[i].id = id;
}

static void cand_pop(hnsw_scratch *sc)
{
    hnsw_cand *a = sc->cand;
    hnsw_cand x = a[--sc->ncand];
    size_t n = sc->ncand, i = 0;
    for (;;) {
        size_t ch = 2 * i + 1;
        if (ch >= n)
            break;
        if (ch + 1 < n && a[ch + 1].d < a[ch].d)
            ch++;
        if (a[ch].d >= x.d)
            break;
        a[i] = a[ch];
        i = ch;
    }
    if (n > 0)
        a[i] = x;
}

/* Results: max-heap on d, at most ef entries (reserved by scratch_fit). */
static void res_push(hnsw_scratch *sc, float d, uint32_t id)
{
    hnsw_cand *a = sc->res;
    size_t i = sc->nres++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (a[p].d >= d)
            break;
        a[i] = a[p];
        i = p;
    }
    a[i].d = d;
    a[i].id = id;
}

/* Put x in place of the root (the farthest) and sift it down. */
static void res_replace_top(hnsw_scratch *sc, hnsw_cand x)
{
    hnsw_cand *a = sc->res;
    size_t n = sc->nres, i = 0;
    for (;;) {
        size_t ch = 2 * i + 1;
        if (ch >= n)
            break;
        if (ch + 1 < n && a[ch + 1].d > a[ch].d)
            ch++;
        if (a[ch].d <= x.d)
            break;
        a[i] = a[ch];
        i = ch;
    }
    a[i] = x;
}

static void res_pop(hnsw_scratch *sc)
{
    hnsw_cand x = sc->res[--sc->nres];
    if (sc->nres > 0)
        res_replace_top(sc, x);
}

size_t hnsw__drain_sorted(hnsw_scratch *sc, hnsw_cand *out)
{
    size_t n = sc->nres;
    while (sc->nres > 0) {
        out[sc->nres - 1] = sc->res[0];
        res_pop(sc);
    }
    return n;
}

void hnsw__seed(hnsw_ctx *c, uint32_t n, float d, int allowed)
{
    cand_push(c, d, n);
    if (allowed)
        res_push(c->sc, d, n);
}

/* ---- traversal --------------------------------------------------------- */

/* The list of n at layer. While a parallel build runs, a copy taken under
 * n's lock (the list may be rewritten by another thread); otherwise the
 * list itself. */
static inline const uint32_t *get_links(const hnsw_ctx *c, uint32_t n,
                                        int layer, uint32_t *cnt)
{
    const uint32_t *l = hnsw__links(c->h, n, layer);
    if (c->locks == NULL) {
        *cnt = l[0];
        return l + 1;
    }
    hnsw__lock(c, n);
    uint32_t k = l[0];
    memcpy(c->sc->lbuf, l + 1, (size_t)k * sizeof *l);
    hnsw__unlock(c, n);
    *cnt = k;
    return c->sc->lbuf;
}

static inline int allows(const iqdb_filter_arg *f, uint32_t n)
{
    if (f == NULL)
        return 1;
    if (f->allowed != NULL &&
        (n >= f->nbits || !((f->allowed[n >> 6] >> (n & 63)) & 1)))
        return 0;
    return f->pred == NULL || f->pred(f->pctx, n);
}

/*
 * Algorithm 2 (SEARCH-LAYER). The candidate heap C and the result heap W
 * are in the scratch, seeded by the caller. Every unvisited live
 * neighbour of the expanded node is scored in one gather call (its
 * vectors prefetched first); the links of the next node to expand are
 * prefetched while those distances are computed.
 */
void hnsw__search_layer(hnsw_ctx *c, int layer, size_t ef,
                        const iqdb_filter_arg *f)
{
    const hnsw *h = c->h;
    hnsw_scratch *sc = c->sc;
    const uint8_t *state = h->state;
    uint16_t *visited = sc->visited;
    const uint16_t gen = sc->gen;
    /* Without tombstones every linked node is live: skip the lookup. */
    const int dead = h->ntomb > 0;
    while (sc->ncand > 0) {
        hnsw_cand cur = sc->cand[0];
        /* The nearest unexpanded node is farther than the ef-th result:
         * nothing closer can be reached (the paper's stop rule). */
        if (sc->nres >= ef && cur.d > sc->res[0].d)
            break;
        cand_pop(sc);
        uint32_t cnt;
        const uint32_t *lk = get_links(c, cur.id, layer, &cnt);
        size_t nb = 0;
        for (uint32_t j = 0; j < cnt; j++) {
            uint32_t id = lk[j];
            if (visited[id] == gen)
                continue;
            visited[id] = gen;
            if (dead && state[id] != HNSW_LIVE)
                continue;
            sc->ids[nb++] = id;
        }
        if (sc->ncand > 0 && c->locks == NULL) {
            /* The next node's list: a level-0 list of m0 = 32 links is
             * 132 bytes, three cache lines. Fetching all three measured
             * 2-3% more queries/s than the first alone (200k x 128). */
            const char *nl =
                (const char *)hnsw__links(h, sc->cand[0].id, layer);
            __builtin_prefetch(nl);
            __builtin_prefetch(nl + 64);
            __builtin_prefetch(nl + 128);
        }
        if (nb == 0)
            continue;
        hnsw__dist_ids(c, c->q, c->qn, sc->ids, nb, sc->dists);
        for (size_t j = 0; j < nb; j++) {
            float d = sc->dists[j];
            if (sc->nres < ef || d < sc->res[0].d) {
                cand_push(c, d, sc->ids[j]);
                if (!allows(f, sc->ids[j]))
                    continue;
                if (sc->nres < ef)
                    res_push(sc, d, sc->ids[j]);
                else
                    res_replace_top(sc, (hnsw_cand){d, sc->ids[j]});
            }
        }
    }
}

/* Algorithm 2 with ef = 1 reduces to a greedy walk: move to the nearest
 * neighbour while it improves. No visited set is needed, the distance
 * strictly decreases. */
void hnsw__greedy(hnsw_ctx *c, int layer, uint32_t *cur, float *dcur)
{
    const hnsw *h = c->h;
    hnsw_scratch *sc = c->sc;
    for (;;) {
        uint32_t cnt;
        const uint32_t *lk = get_links(c, *cur, layer, &cnt);
        size_t nb = 0;
        for (uint32_t j = 0; j < cnt; j++)
            if (h->state[lk[j]] == HNSW_LIVE)
                sc->ids[nb++] = lk[j];
        if (nb == 0)
            return;
        hnsw__dist_ids(c, c->q, c->qn, sc->ids, nb, sc->dists);
        uint32_t best = *cur;
        float bd = *dcur;
        for (size_t j = 0; j < nb; j++)
            if (sc->dists[j] < bd) {
                bd = sc->dists[j];
                best = sc->ids[j];
            }
        if (best == *cur)
            return;
        *cur = best;
        *dcur = bd;
    }
}

/* ---- queries ----------------------------------------------------------- */

/* Per-query parameters: ef_search and filter_widen. */
static int query_params(hnsw *h, const iqdb_search_args *a, size_t *ef,
                        uint32_t *widen)
{
    for (size_t i = 0; i < a->nparams; i++) {
        const iqdb_kv *kv = &a->params[i];
        uint64_t v;
        if (kv->key != NULL && strcmp(kv->key, "ef_search") == 0) {
            if (hnsw__parse_u64(kv->value, 1, 1000000, &v) != 0)
                return h->host->set_error(
                    h->hctx, IQDB_EPARAM,
                    "hnsw: search parameter 'ef_search' must be an integer "
                    "from 1 to 1000000 (got '%s')",
                    kv->value ? kv->value : "(null)");
            *ef = (size_t)v;
        } else if (kv->key != NULL && strcmp(kv->key, "filter_widen") == 0) {
            if (hnsw__parse_u64(kv->value, 1, 1024, &v) != 0)
                return h->host->set_error(
                    h->hctx, IQDB_EPARAM,
                    "hnsw: search parameter 'filter_widen' must be an "
                    "integer from 1 to 1024 (got '%s')",
                    kv->value ? kv->value : "(null)");
            *widen = (uint32_t)v;
        } else {
            return h->host->set_error(
                h->hctx, IQDB_EPARAM,
                "hnsw: unknown search parameter '%s' (known: ef_search, "
                "filter_widen)",
                kv->key ? kv->key : "(null)");
        }
    }
    return 0;
}

/* The allowed nodes the graph search could not reach: score them all.
 * Runs only when the result heap never filled, i.e. the search already
 * visited every node reachable from the entry point. */
static void scan_unvisited(hnsw_ctx *c, const iqdb_filter_arg *f,
                           iqdb_topk *tk)
{
    const hnsw *h = c->h;
    const iqdb_store_view *sv = h->store;
    for (uint32_t n = 0; n < h->limit; n++) {
        if (h->state[n] != HNSW_LIVE || hnsw__visited(c->sc, n) ||
            !allows(f, n))
            continue;
        float d = h->dist(c->q, hnsw__vec(c, n), h->dim);
        if (d <= iqdb_topk_bound(tk))
            iqdb_topk_offer(tk, d, n, sv->order(sv->ctx, n));
    }
}

/* Score the batch sc->ids/vecs[0..nb) exactly into the top-k. */
static void offer_batch(hnsw_ctx *c, iqdb_topk *tk, size_t nb)
{
    const hnsw *h = c->h;
    hnsw_scratch *sc = c->sc;
    const iqdb_store_view *sv = h->store;
    h->kern->dist_gather(h->metric, c->q, sc->vecs, nb, h->dim, sc->dists);
    for (size_t j = 0; j < nb; j++)
        if (sc->dists[j] <= iqdb_topk_bound(tk))
            iqdb_topk_offer(tk, sc->dists[j], sc->ids[j],
                            sv->order(sv->ctx, sc->ids[j]));
}

/* Exact answer over the allowed slots of the bitmap (and predicate). */
static size_t scan_allowed(hnsw_ctx *c, iqdb_search_args *a, uint64_t target)
{
    const hnsw *h = c->h;
    hnsw_scratch *sc = c->sc;
    const iqdb_filter_arg *f = a->filter;
    iqdb_topk tk;
    iqdb_topk_init(&tk, sc->topk, a->k);
    uint64_t lim = f->nbits < h->limit ? f->nbits : h->limit;
    size_t nb = 0;
    for (uint64_t wd = 0; wd < (lim + 63) / 64; wd++) {
        for (uint64_t bits = f->allowed[wd]; bits != 0; bits &= bits - 1) {
            uint64_t n = wd * 64 + (uint64_t)__builtin_ctzll(bits);
            if (n >= lim || h->state[n] != HNSW_LIVE ||
                (f->pred != NULL && !f->pred(f->pctx, n)))
                continue;
            sc->ids[nb] = (uint32_t)n;
            sc->vecs[nb++] = hnsw__vec(c, (uint32_t)n);
            if (nb == sc->deg) {
                offer_batch(c, &tk, nb);
                nb = 0;
            }
        }
    }
    if (nb > 0)
        offer_batch(c, &tk, nb);
    size_t n = iqdb_topk_drain(&tk, a->out);
    if (n < target)
        a->out_flags |= IQDB_RESULT_INCOMPLETE;
    return n;
}

/* Replace the traversal's distances of the result heap by exact ones
 * from the core's vectors (the heap order no longer matters: it is only
 * read as an array from here on). */
static void rescore(hnsw_ctx *c)
{
    const hnsw *h = c->h;
    hnsw_scratch *sc = c->sc;
    for (size_t i = 0; i < sc->nres; i += sc->deg) {
        size_t b = sc->nres - i < sc->deg ? sc->nres - i : sc->deg;
        for (size_t j = 0; j < b; j++) {
            sc->vecs[j] = hnsw__vec(c, sc->res[i + j].id);
            __builtin_prefetch(sc->vecs[j]);
        }
        h->kern->dist_gather(h->metric, c->q, sc->vecs, b, h->dim,
                             sc->dists);
        for (size_t j = 0; j < b; j++)
            sc->res[i + j].d = sc->dists[j];
    }
}

int hnsw__search(hnsw *h, iqdb_search_args *a)
{
    size_t ef = h->ef_search;
    uint32_t widen = h->filter_widen;
    int r = query_params(h, a, &ef, &widen);
    if (r != 0)
        return r;
    a->out_count = 0;
    a->out_flags = 0;
    const iqdb_filter_arg *f = a->filter;
    if (f != NULL && f->allowed == NULL && f->pred == NULL)
        f = NULL;
    uint64_t target = a->k < h->nlive ? a->k : h->nlive;
    int scan = 0;
    if (f != NULL) {
        /* The result heap takes only matching nodes, so the search runs
         * until it holds ef of them: about ef / selectivity nodes, which
         * is widening enough (filtered recall measured above unfiltered
         * recall at the same ef). filter_widen adds a margin per decade
         * of selectivity: ef times 1 + floor(log10(1 / selectivity)),
         * at most filter_widen. A predicate alone has unknown
         * selectivity (unless the core passes an estimate in
         * allowed_count): the full filter_widen. */
        uint64_t w = widen;
        if (f->allowed != NULL || f->allowed_count > 0) {
            if (f->allowed != NULL && f->allowed_count < target)
                target = f->allowed_count;
            uint64_t dec = 1;
            for (uint64_t x = f->allowed_count * 10; x <= h->nlive && dec < w;
                 x *= 10)
                dec++;
            w = dec;
        }
        ef *= (size_t)w;
        /* So few matches that scoring them all costs less than the
         * ef / selectivity nodes a traversal would visit: scan them. */
        scan = f->allowed != NULL &&
               (double)f->allowed_count * (double)f->allowed_count <=
                   (double)ef * (double)h->nlive;
    }
    /* No point holding more results than there are nodes (and an
     * absurd ef must not turn into an absurd allocation). */
    if (ef > h->nlive)
        ef = (size_t)h->nlive;
    if (ef < a->k)
        ef = a->k;
    if (target == 0 || h->entry == HNSW_NONE)
        return 0;

    hnsw_scratch *sc = hnsw__scratch_get(h);
    if (sc == NULL || hnsw__scratch_fit(h, sc, ef, a->k, 0) != 0) {
        hnsw__scratch_put(h, sc);
        return h->host->set_error(h->hctx, IQDB_ENOMEM,
                                  "hnsw: out of memory for search scratch");
    }
    sc->oom = 0;
    hnsw_ctx c;
    hnsw__ctx_init(&c, h, sc);
    hnsw__set_query(&c, a->query);
    if (scan) {
        a->out_count = scan_allowed(&c, a, target);
        hnsw__scratch_put(h, sc);
        return 0;
    }

    /* Algorithm 5: greedy descent to layer 1, then a wide search at 0. */
    uint32_t cur = h->entry;
    float dcur;
    hnsw__dist_ids(&c, c.q, c.qn, &cur, 1, &dcur);
    for (int layer = h->top; layer > 0; layer--)
        hnsw__greedy(&c, layer, &cur, &dcur);
    hnsw__visit_begin(sc);
    hnsw__visit(sc, cur);
    hnsw__seed(&c, cur, dcur, allows(f, cur));
    hnsw__search_layer(&c, 0, ef, f);

    if (h->codes != NULL)
        rescore(&c);
    const iqdb_store_view *sv = h->store;
    iqdb_topk tk;
    iqdb_topk_init(&tk, sc->topk, a->k);
    for (size_t i = 0; i < sc->nres; i++) {
        const hnsw_cand *e = &sc->res[i];
        if (e->d <= iqdb_topk_bound(&tk))
            iqdb_topk_offer(&tk, e->d, e->id, sv->order(sv->ctx, e->id));
    }
    if (tk.n < target) {
        scan_unvisited(&c, f, &tk);
        /* Every live node has now been looked at: with a predicate alone
         * (match count unknown to the index) what was found is all
         * there is. */
        if (f != NULL && f->allowed == NULL)
            target = tk.n;
    }
    a->out_count = iqdb_topk_drain(&tk, a->out);
    if (a->out_count < target)
        a->out_flags |= IQDB_RESULT_INCOMPLETE;
    if (sc->oom)
        h->host->log(IQDB_LOG_WARN, HNSW_NAME,
                     "out of memory growing the candidate heap: a search "
                     "explored less than it could");
    hnsw__scratch_put(h, sc);
    return 0;
}

int hnsw__search_batch(hnsw *h, iqdb_search_args *args, size_t n)
{
    /* Check parameters here, so a message lands on the caller's thread. */
    for (size_t i = 0; i < n; i++) {
        size_t ef = 0;
        uint32_t widen = 0;
        int r = query_params(h, &args[i], &ef, &widen);
        if (r != 0)
            return r;
    }
    int err = 0;
    HNSW_TSAN_RELEASE(h);
#pragma omp parallel if (n > 1)
    {
        HNSW_TSAN_ACQUIRE(h);
#pragma omp for schedule(dynamic, 1)
        for (size_t i = 0; i < n; i++) {
            int r = hnsw__search(h, &args[i]);
            if (r != 0) {
#pragma omp atomic write
                err = r;
            }
        }
        HNSW_TSAN_RELEASE(h);
    }
    HNSW_TSAN_ACQUIRE(h);
    if (err != 0)
        return h->host->set_error(h->hctx, err,
                                  "hnsw: batch search: out of memory");
    return 0;
}
