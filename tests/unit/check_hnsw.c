/*
 * tests/unit/check_hnsw.c - the HNSW plugin: parameters, recall against
 * an exact scan (generated clustered data and a Fashion-MNIST sample),
 * filtered search at several selectivities and the min(k, matches) rule,
 * deletes with repair (reachability of every live node, checked on the
 * saved graph), delete and re-add, parallel bulk builds and concurrent
 * searches, save/load round trips, hostile saved graphs, and allocation
 * failures that must leave the index as it was.
 *
 * Most tests go through the public API (tu_open(..., "hnsw")); filtered
 * traversal, save and load are also driven directly through db->ops so
 * any selectivity and any byte stream can be tried.
 */
#include "config.h"

#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "iqdb_int.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SCALE 4 /* sanitizer builds run smaller data sets */
#else
#define SCALE 1
#endif

#define K 10

/* ---- data ----------------------------------------------------------- */

typedef struct dataset {
    uint32_t dim;
    size_t n, nq;
    float *base, *queries;
} dataset;

static void ds_free(dataset *ds)
{
    free(ds->base);
    free(ds->queries);
    memset(ds, 0, sizeof *ds);
}

static float gauss(uint64_t *s)
{
    double u1 = ((double)(tu_next(s) >> 11) + 1.0) * 0x1p-53;
    double u2 = (double)(tu_next(s) >> 11) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* n base and nq query points around `clusters` random centres in
 * [-1, 1]^dim, with gaussian noise of deviation `noise` per coordinate
 * (the larger, the harder: 0.75 in 64 dimensions leaves recall@10 near
 * 0.98 at the default parameters). */
static void make_clustered(dataset *ds, size_t n, size_t nq, uint32_t dim,
                           size_t clusters, float noise, uint64_t seed)
{
    ds->dim = dim;
    ds->n = n;
    ds->nq = nq;
    ds->base = malloc(n * dim * sizeof(float));
    ds->queries = malloc(nq * dim * sizeof(float));
    float *cent = malloc(clusters * dim * sizeof(float));
    tu_fill(&seed, cent, clusters * dim);
    for (size_t i = 0; i < n + nq; i++) {
        float *v = i < n ? ds->base + i * dim : ds->queries + (i - n) * dim;
        const float *c = cent + (tu_next(&seed) % clusters) * dim;
        for (uint32_t j = 0; j < dim; j++)
            v[j] = c[j] + noise * gauss(&seed);
    }
    free(cent);
}

/* Fashion-MNIST through zlib's gzread, loaded at run time (the test is
 * not linked with -lz). Returns 0 when the files or zlib are absent. */
typedef void *(*gzopen_fn)(const char *, const char *);
typedef int (*gzread_fn)(void *, void *, unsigned);
typedef int (*gzclose_fn)(void *);

#define FMNIST "/usr/share/datasets/fashion-mnist/"

static float *idx_images(const char *path, size_t want, uint32_t *dim)
{
    void *lib = dlopen("libz.so.1", RTLD_NOW);
    if (lib == NULL)
        return NULL;
    gzopen_fn zopen;
    gzread_fn zread;
    gzclose_fn zclose;
    *(void **)&zopen = dlsym(lib, "gzopen");
    *(void **)&zread = dlsym(lib, "gzread");
    *(void **)&zclose = dlsym(lib, "gzclose");
    float *out = NULL;
    void *f = zopen && zread && zclose ? zopen(path, "rb") : NULL;
    unsigned char hd[16];
    if (f == NULL || zread(f, hd, 16) != 16)
        goto done;
    uint32_t cnt = (uint32_t)hd[4] << 24 | (uint32_t)hd[5] << 16 |
                   (uint32_t)hd[6] << 8 | hd[7];
    uint32_t rows = (uint32_t)hd[11] | (uint32_t)hd[10] << 8;
    uint32_t cols = (uint32_t)hd[15] | (uint32_t)hd[14] << 8;
    if (hd[2] != 8 || hd[3] != 3 || cnt < want)
        goto done;
    *dim = rows * cols;
    unsigned char *px = malloc(want * *dim);
    out = malloc(want * *dim * sizeof(float));
    if (zread(f, px, (unsigned)(want * *dim)) != (int)(want * *dim)) {
        free(out);
        out = NULL;
    } else {
        for (size_t i = 0; i < want * *dim; i++)
            out[i] = (float)px[i];
    }
    free(px);
done:
    if (f != NULL)
        zclose(f);
    dlclose(lib);
    return out;
}

static int load_fashion(dataset *ds, size_t n, size_t nq)
{
    uint32_t d1 = 0, d2 = 0;
    ds->base = idx_images(FMNIST "train-images-idx3-ubyte.gz", n, &d1);
    ds->queries = idx_images(FMNIST "t10k-images-idx3-ubyte.gz", nq, &d2);
    if (ds->base == NULL || ds->queries == NULL || d1 != d2) {
        ds_free(ds);
        return 0;
    }
    ds->dim = d1;
    ds->n = n;
    ds->nq = nq;
    return 1;
}

/* ---- exact answers and recall ------------------------------------------ */

static float l2(const float *a, const float *b, uint32_t dim)
{
    float s = 0;
    for (uint32_t i = 0; i < dim; i++)
        s += (a[i] - b[i]) * (a[i] - b[i]);
    return s;
}

/* The k nearest base indexes to q among alive[i] (NULL: all), nearest
 * first, into out; returns how many. */
static size_t exact_knn(const dataset *ds, const float *q,
                        const unsigned char *alive, size_t k, size_t *out)
{
    float best[64];
    size_t n = 0;
    for (size_t i = 0; i < ds->n; i++) {
        if (alive != NULL && !alive[i])
            continue;
        float d = l2(q, ds->base + i * ds->dim, ds->dim);
        if (n == k && !(d < best[k - 1]))
            continue;
        size_t p = n < k ? n++ : k - 1;
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

/* Build an index over ds (ids 0..n-1) through one batch upsert. */
static iqdb *build(const dataset *ds, const char *const *params)
{
    iqdb_config *c = iqdb_config_new(ds->dim, IQDB_METRIC_EUCLIDEAN);
    ck_assert_int_eq(iqdb_config_set_index(c, "hnsw"), 0);
    for (size_t i = 0; params != NULL && params[i] != NULL; i += 2)
        ck_assert_int_eq(iqdb_config_set_param(c, params[i], params[i + 1]),
                         0);
    iqdb *db = NULL;
    ck_assert_msg(iqdb_open_memory(c, &db) == 0, "open: %s",
                  iqdb_errmsg(NULL));
    iqdb_config_free(c);
    iqdb_record *recs = calloc(ds->n, sizeof *recs);
    for (size_t i = 0; i < ds->n; i++)
        recs[i] = (iqdb_record){iqdb_id_u64(i), ds->base + i * ds->dim,
                                NULL};
    ck_assert_msg(iqdb_upsert_batch(db, recs, ds->n, ds->dim) == 0,
                  "upsert: %s", iqdb_errmsg(db));
    free(recs);
    return db;
}

/* Mean recall@K of iqdb_search over the queries (alive: the ids still in
 * the database, NULL for all). */
static double recall(iqdb *db, const dataset *ds, const unsigned char *alive,
                     const iqdb_params *params)
{
    size_t truth[K], hits = 0, total = 0;
    for (size_t q = 0; q < ds->nq; q++) {
        const float *qv = ds->queries + q * ds->dim;
        size_t nt = exact_knn(ds, qv, alive, K, truth);
        iqdb_results *r;
        ck_assert_msg(iqdb_search(db, qv, ds->dim, K, NULL, params, &r) == 0,
                      "search: %s", iqdb_errmsg(db));
        ck_assert_uint_eq(iqdb_results_count(r, 0), nt);
        const iqdb_hit *h = iqdb_results_hits(r, 0);
        for (size_t i = 0; i < iqdb_results_count(r, 0); i++) {
            if (alive != NULL)
                ck_assert_msg(alive[h[i].id.v.u64], "deleted id returned");
            for (size_t j = 0; j < nt; j++)
                hits += h[i].id.v.u64 == truth[j];
        }
        total += nt;
        iqdb_results_free(r);
    }
    return total ? (double)hits / (double)total : 1.0;
}

/* ---- the plugin, directly ---------------------------------------------- */

static uint64_t slot_of(iqdb *db, uint64_t id)
{
    uint64_t slot = 0;
    ck_assert(iqdb__store_find(&db->store, iqdb_id_u64(id),
                               iqdb__id_hash(iqdb_id_u64(id)), &slot));
    return slot;
}

/* ef_search for plug_search (NULL: the index's default). */
static const char *plug_ef;

static int plug_search(iqdb *db, void *index, const float *q, size_t k,
                       const iqdb_filter_arg *f, iqdb_neighbor *out,
                       size_t *count, uint32_t *flags)
{
    iqdb_search_args a;
    iqdb_kv kv = {"ef_search", plug_ef};
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.query = q;
    a.k = k;
    a.filter = f;
    a.out = out;
    a.params = plug_ef ? &kv : NULL;
    a.nparams = plug_ef ? 1 : 0;
    int r = db->ops->search(index, &a);
    *count = a.out_count;
    if (flags != NULL)
        *flags = a.out_flags;
    return r;
}

typedef struct membuf {
    unsigned char *p;
    size_t len, cap, pos;
    int fail_read; /* make read return IQDB_EIO */
} membuf;

static int mb_write(void *ctx, const void *buf, size_t len)
{
    membuf *m = ctx;
    if (m->len + len > m->cap) {
        m->cap = (m->len + len) * 2;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->len, buf, len);
    m->len += len;
    return 0;
}

static int mb_read(void *ctx, void *buf, size_t len)
{
    membuf *m = ctx;
    if (m->fail_read)
        return IQDB_EIO;
    if (len > m->len - m->pos)
        return IQDB_ECORRUPT;
    memcpy(buf, m->p + m->pos, len);
    m->pos += len;
    return 0;
}

static membuf save_of(iqdb *db, void *index)
{
    membuf m = {NULL, 0, 0, 0, 0};
    iqdb_writer w = {sizeof w, &m, mb_write};
    ck_assert_int_eq(db->ops->save(index, &w), 0);
    return m;
}

static void *fresh_index(iqdb *db)
{
    iqdb_index_init init = {IQDB_ABI_VERSION, sizeof init, iqdb__host(),
                            db,               &db->view,   db->dim,
                            db->metric,       db->params,  db->nparams};
    void *ix = NULL;
    ck_assert_int_eq(db->ops->create(&init, &ix), 0);
    return ix;
}

/* Load bytes p[0..len) into a fresh index; returns the code and, on
 * success, the index in *out (else it is destroyed). */
static int load_bytes(iqdb *db, const unsigned char *p, size_t len,
                      uint32_t version, void **out)
{
    membuf m = {(unsigned char *)p, len, len, 0, 0};
    iqdb_reader r = {sizeof r, &m, mb_read, len};
    void *ix = fresh_index(db);
    int rc = db->ops->load(ix, &r, version);
    if (rc != 0 || out == NULL)
        db->ops->destroy(ix);
    else
        *out = ix;
    return rc;
}

/* ---- the saved graph, parsed (format of hnsw_persist.c) ----------------- */

typedef struct graph {
    uint32_t limit, entry, m;
    uint8_t *state;
    size_t *off;     /* offset of each node record */
    uint32_t **l0;   /* level-0 list of each node (into the buffer copy) */
    uint32_t *l0n;
} graph;

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void graph_free(graph *g)
{
    if (g->l0 != NULL)
        for (uint32_t n = 0; n < g->limit; n++)
            free(g->l0[n]);
    free(g->l0);
    free(g->l0n);
    free(g->state);
    free(g->off);
}

static void parse_graph(const membuf *m, graph *g)
{
    const unsigned char *p = m->p;
    ck_assert_uint_ge(m->len, 72);
    ck_assert_int_eq(memcmp(p, "IQHNSW\r\n", 8), 0);
    g->m = rd32(p + 20);
    g->limit = rd32(p + 28);
    g->entry = rd32(p + 32);
    g->state = calloc(g->limit + 1, 1);
    g->off = calloc(g->limit + 1, sizeof *g->off);
    g->l0 = calloc(g->limit + 1, sizeof *g->l0);
    g->l0n = calloc(g->limit + 1, sizeof *g->l0n);
    size_t o = 64;
    for (uint32_t n = 0; n < g->limit; n++) {
        g->off[n] = o;
        g->state[n] = p[o++];
        if (g->state[n] == 0)
            continue;
        int lv = p[o++];
        for (int l = 0; l <= lv; l++) {
            uint32_t c = (uint32_t)p[o] | (uint32_t)p[o + 1] << 8;
            o += 2;
            if (l == 0) {
                g->l0n[n] = c;
                g->l0[n] = malloc((c + 1) * sizeof(uint32_t));
                for (uint32_t i = 0; i < c; i++)
                    g->l0[n][i] = rd32(p + o + 4 * i);
            }
            o += 4 * (size_t)c;
        }
    }
    ck_assert_uint_eq(o + 8, m->len);
}

/* Live nodes not reachable from the entry point at level 0. */
static size_t unreachable(iqdb *db, void *index, size_t *live_out)
{
    membuf m = save_of(db, index);
    graph g;
    memset(&g, 0, sizeof g);
    parse_graph(&m, &g);
    size_t live = 0, seen = 0;
    for (uint32_t n = 0; n < g.limit; n++)
        live += g.state[n] == 1;
    if (live > 0) {
        unsigned char *mark = calloc(g.limit, 1);
        uint32_t *queue = malloc(g.limit * sizeof *queue);
        size_t head = 0, tail = 0;
        ck_assert_uint_lt(g.entry, g.limit);
        ck_assert_int_eq(g.state[g.entry], 1);
        mark[g.entry] = 1;
        queue[tail++] = g.entry;
        while (head < tail) {
            uint32_t u = queue[head++];
            seen++;
            for (uint32_t i = 0; i < g.l0n[u]; i++) {
                uint32_t v = g.l0[u][i];
                if (g.state[v] == 1 && !mark[v]) {
                    mark[v] = 1;
                    queue[tail++] = v;
                }
            }
        }
        free(mark);
        free(queue);
    }
    graph_free(&g);
    free(m.p);
    if (live_out != NULL)
        *live_out = live;
    return live - seen;
}

/* Recompute the trailing hash after editing a saved graph. */
static void rehash(membuf *m)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < m->len - 8; i++) {
        h ^= m->p[i];
        h *= 0x100000001b3ull;
    }
    for (int i = 0; i < 8; i++)
        m->p[m->len - 8 + i] = (unsigned char)(h >> (8 * i));
}

/* ---- parameters ----------------------------------------------------------- */

static int open_with(const char *key, const char *value, iqdb **out)
{
    iqdb_config *c = iqdb_config_new(8, IQDB_METRIC_EUCLIDEAN);
    iqdb_config_set_index(c, "hnsw");
    iqdb_config_set_param(c, key, value);
    *out = NULL;
    int r = iqdb_open_memory(c, out);
    iqdb_config_free(c);
    return r;
}

START_TEST(test_hnsw_bad_params_named)
{
    static const char *const bad[][2] = {
        {"m", "1"},           {"m", "257"},          {"m", "abc"},
        {"m", ""},            {"m", "-4"},           {"m", "16x"},
        {"ef_construction", "0"}, {"ef_construction", "99999999999"},
        {"ef_search", "0"},   {"ef_search", " 5"},   {"seed", "-1"},
        {"seed", "18446744073709551616"},            {"filter_widen", "0"},
        {"filter_widen", "2000"},
    };
    iqdb *db;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(open_with(bad[i][0], bad[i][1], &db), IQDB_EPARAM);
        ck_assert_ptr_null(db);
        char want[64];
        snprintf(want, sizeof want, "'%s'", bad[i][0]);
        ck_assert_msg(strstr(iqdb_errmsg(NULL), want) != NULL,
                      "message '%s' does not name %s", iqdb_errmsg(NULL),
                      want);
    }
    ck_assert_int_eq(open_with("encoding", "int8", &db), IQDB_EPARAM);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "'encoding'"));
    iqdb_config *hc = iqdb_config_new(8, IQDB_METRIC_HAMMING);
    iqdb_config_set_index(hc, "hnsw");
    iqdb_config_set_param(hc, "encoding", "bf16");
    ck_assert_int_eq(iqdb_open_memory(hc, &db), IQDB_EPARAM);
    iqdb_config_free(hc);
    ck_assert_int_eq(open_with("M", "16", &db), IQDB_EPARAM);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "'M'"));
    static const char *const good[][2] = {
        {"m", "2"}, {"m", "256"}, {"ef_construction", "1"},
        {"ef_search", "1000"}, {"seed", "18446744073709551615"},
        {"filter_widen", "1"}, {"encoding", "float"}, {"encoding", "bf16"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ck_assert_msg(open_with(good[i][0], good[i][1], &db) == 0, "%s=%s: %s",
                      good[i][0], good[i][1], iqdb_errmsg(NULL));
        iqdb_close(db);
    }
}
END_TEST

START_TEST(test_hnsw_bad_query_params)
{
    iqdb *db = tu_open(4, IQDB_METRIC_EUCLIDEAN, "hnsw");
    float v[4] = {1, 2, 3, 4};
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(1), v, 4, NULL), 0);
    static const char *const bad[][2] = {{"ef_search", "0"},
                                         {"ef_search", "x"},
                                         {"filter_widen", "0"},
                                         {"efsearch", "10"}};
    for (size_t i = 0; i < 4; i++) {
        iqdb_params *p = iqdb_params_new();
        iqdb_params_set(p, bad[i][0], bad[i][1]);
        iqdb_results *r = NULL;
        ck_assert_int_eq(iqdb_search(db, v, 4, 1, NULL, p, &r), IQDB_EPARAM);
        ck_assert_ptr_nonnull(strstr(iqdb_errmsg(db), bad[i][0]));
        iqdb_params_free(p);
    }
    iqdb_params *p = iqdb_params_new();
    iqdb_params_set(p, "ef_search", "7");
    iqdb_results *r = NULL;
    ck_assert_int_eq(iqdb_search(db, v, 4, 1, NULL, p, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 1);
    iqdb_results_free(r);
    iqdb_params_free(p);
    iqdb_close(db);
}
END_TEST

START_TEST(test_hnsw_registered_caps)
{
    const iqdb_index_ops *ops = NULL;
    ck_assert_int_eq(iqdb__find_index("hnsw", NULL, 0, &ops), 0);
    ck_assert_str_eq(ops->name, "hnsw");
    ck_assert(ops->caps & IQDB_CAP_FILTER_BITMAP);
    ck_assert(ops->caps & IQDB_CAP_FILTER_PREDICATE);
    ck_assert(ops->caps & IQDB_CAP_REMOVE);
    ck_assert(ops->caps & IQDB_CAP_PERSIST);
    ck_assert(ops->caps & IQDB_CAP_BATCH);
    ck_assert(!(ops->caps & IQDB_CAP_EXACT));
    ck_assert_uint_eq(ops->format_version, 1);
}
END_TEST

/* ---- small cases ------------------------------------------------------------ */

START_TEST(test_hnsw_small_and_empty)
{
    iqdb *db = tu_open(3, IQDB_METRIC_EUCLIDEAN, "hnsw");
    float q[3] = {0, 0, 0};
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, q, 3, 5, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 0);
    iqdb_results_free(r);
    /* Fewer records than k: all of them, nearest first, ties by
     * insertion order. */
    float v[4][3] = {{3, 0, 0}, {1, 0, 0}, {2, 0, 0}, {1, 0, 0}};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(10 + (uint64_t)i),
                                     v[i], 3, NULL),
                         0);
    ck_assert_int_eq(iqdb_search(db, q, 3, 10, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 4);
    const iqdb_hit *h = iqdb_results_hits(r, 0);
    ck_assert_uint_eq(h[0].id.v.u64, 11);
    ck_assert_uint_eq(h[1].id.v.u64, 13);
    ck_assert_uint_eq(h[2].id.v.u64, 12);
    ck_assert_uint_eq(h[3].id.v.u64, 10);
    ck_assert_float_eq_tol(h[0].distance, 1.0f, 1e-6f);
    iqdb_results_free(r);
    /* Delete everything, search, add again. */
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(10 + (uint64_t)i), NULL),
                         0);
    ck_assert_int_eq(iqdb_search(db, q, 3, 10, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 0);
    iqdb_results_free(r);
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(99), v[2], 3, NULL), 0);
    ck_assert_int_eq(iqdb_search(db, q, 3, 10, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 1);
    ck_assert_uint_eq(iqdb_results_hits(r, 0)[0].id.v.u64, 99);
    iqdb_results_free(r);
    iqdb_index_stats st = {sizeof st, 0, 0, 0};
    ck_assert_int_eq(db->ops->stats(db->index, &st), 0);
    ck_assert_uint_eq(st.count, 1);
    ck_assert_uint_eq(st.vector_copies, 0);
    iqdb_close(db);
}
END_TEST

/* ---- recall ---------------------------------------------------------------- */

START_TEST(test_hnsw_recall_clustered)
{
    dataset ds;
    make_clustered(&ds, 20000 / SCALE, 200 / SCALE, 64, 100, 0.75f, 7);
    static const char *const enc[][3] = {{"encoding", "float", NULL},
                                         {"encoding", "bf16", NULL}};
    for (int e = 0; e < 2; e++) {
        iqdb *db = build(&ds, enc[e]);
        double rc = recall(db, &ds, NULL, NULL);
        printf("hnsw: clustered %zux%u (%s) recall@10 = %.4f\n", ds.n,
               ds.dim, enc[e][1], rc);
        ck_assert_msg(rc >= 0.95, "recall %.4f", rc);
        /* Larger ef_search per query: at least as good; smaller: worse. */
        iqdb_params *p = iqdb_params_new();
        iqdb_params_set(p, "ef_search", "200");
        double hi = recall(db, &ds, NULL, p);
        iqdb_params_set(p, "ef_search", "4");
        double lo = recall(db, &ds, NULL, p);
        printf("hnsw: recall@10 at ef_search=200: %.4f, at 4 (k=10 wins): "
               "%.4f\n",
               hi, lo);
        ck_assert_msg(hi >= rc - 0.005 && hi >= 0.98, "recall %.4f", hi);
        ck_assert_msg(lo < rc, "recall %.4f at ef 4", lo);
        iqdb_params_free(p);
        iqdb_index_stats st = {sizeof st, 0, 0, 0};
        ck_assert_int_eq(db->ops->stats(db->index, &st), 0);
        ck_assert_uint_eq(st.count, ds.n);
        ck_assert_uint_eq(st.vector_copies, 0);
        double per = (double)st.memory_bytes / (double)st.count;
        printf("hnsw: %.1f index bytes per vector\n", per);
        /* The graph is about 4 (2m + 1) bytes a node; bf16 adds 2 a
         * dimension. */
        ck_assert(per > 132 && per < (e ? 132 + 128 : 132) + 60);
        ck_assert_uint_eq(unreachable(db, db->index, NULL), 0);
        iqdb_close(db);
    }
    ds_free(&ds);
}
END_TEST

START_TEST(test_hnsw_recall_sequential_inserts)
{
    /* One add() per record: the incremental path. */
    dataset ds;
    make_clustered(&ds, 6000 / SCALE, 100 / SCALE, 32, 40, 0.5f, 99);
    iqdb *db = tu_open(ds.dim, IQDB_METRIC_EUCLIDEAN, "hnsw");
    for (size_t i = 0; i < ds.n; i++)
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), ds.base + i * ds.dim,
                                     ds.dim, NULL),
                         0);
    double rc = recall(db, &ds, NULL, NULL);
    printf("hnsw: sequential %zux%u recall@10 = %.4f\n", ds.n, ds.dim, rc);
    ck_assert_msg(rc >= 0.95, "recall %.4f", rc);
    iqdb_close(db);
    ds_free(&ds);
}
END_TEST

START_TEST(test_hnsw_recall_fashion_mnist)
{
    dataset ds;
    memset(&ds, 0, sizeof ds);
    if (!load_fashion(&ds, 10000 / SCALE, 200 / SCALE)) {
        printf("hnsw: skipped, no " FMNIST " or no libz.so.1\n");
        return;
    }
    iqdb *db = build(&ds, NULL);
    double rc = recall(db, &ds, NULL, NULL);
    printf("hnsw: fashion-mnist %zux%u recall@10 = %.4f\n", ds.n, ds.dim, rc);
    ck_assert_msg(rc >= 0.95, "recall %.4f", rc);
    iqdb_close(db);
    ds_free(&ds);
}
END_TEST

START_TEST(test_hnsw_recall_other_metrics)
{
    static const iqdb_metric ms[] = {IQDB_METRIC_COSINE, IQDB_METRIC_DOT,
                                     IQDB_METRIC_MANHATTAN,
                                     IQDB_METRIC_HAMMING};
    static const char *const enc[][3] = {{"encoding", "float", NULL},
                                         {"encoding", "bf16", NULL}};
    dataset ds;
    make_clustered(&ds, 3000, 50, 24, 30, 0.3f, 5);
    for (size_t mi = 0; mi < 4; mi++) {
        if (ms[mi] == IQDB_METRIC_HAMMING) /* 0/1 vectors */
            for (size_t i = 0; i < (ds.n + ds.nq) * ds.dim; i++) {
                float *v = i < ds.n * ds.dim ? &ds.base[i]
                                             : &ds.queries[i - ds.n * ds.dim];
                *v = *v > 0 ? 1.0f : 0.0f;
            }
        iqdb *ref = tu_open(ds.dim, ms[mi], "flat");
        iqdb_record *recs = calloc(ds.n, sizeof *recs);
        for (size_t i = 0; i < ds.n; i++)
            recs[i] = (iqdb_record){iqdb_id_u64(i), ds.base + i * ds.dim,
                                    NULL};
        ck_assert_int_eq(iqdb_upsert_batch(ref, recs, ds.n, ds.dim), 0);
        for (int e = 0; e < (ms[mi] == IQDB_METRIC_HAMMING ? 1 : 2); e++) {
            iqdb_config *c = iqdb_config_new(ds.dim, ms[mi]);
            iqdb_config_set_index(c, "hnsw");
            iqdb_config_set_param(c, enc[e][0], enc[e][1]);
            iqdb *db = NULL;
            ck_assert_int_eq(iqdb_open_memory(c, &db), 0);
            iqdb_config_free(c);
            ck_assert_int_eq(iqdb_upsert_batch(db, recs, ds.n, ds.dim), 0);
            size_t hits = 0;
            for (size_t q = 0; q < ds.nq; q++) {
                iqdb_results *a, *b;
                const float *qv = ds.queries + q * ds.dim;
                ck_assert_int_eq(
                    iqdb_search(db, qv, ds.dim, K, NULL, NULL, &a), 0);
                ck_assert_int_eq(
                    iqdb_search(ref, qv, ds.dim, K, NULL, NULL, &b), 0);
                ck_assert_uint_eq(iqdb_results_count(a, 0), K);
                /* Distances reported exactly: the nearest agree. */
                ck_assert_float_eq_tol(iqdb_results_hits(a, 0)[0].distance,
                                       iqdb_results_hits(b, 0)[0].distance,
                                       1e-4f);
                for (size_t i = 0; i < K; i++)
                    for (size_t j = 0; j < K; j++)
                        hits += iqdb_results_hits(a, 0)[i].id.v.u64 ==
                                iqdb_results_hits(b, 0)[j].id.v.u64;
                iqdb_results_free(a);
                iqdb_results_free(b);
            }
            double rc = (double)hits / (double)(ds.nq * K);
            printf("hnsw: %s (%s) recall@10 = %.4f\n",
                   iqdb_metric_name(ms[mi]), enc[e][1], rc);
            /* Hamming on 24 bits ties a lot: any of the tied ids will do,
             * so compare loosely there. */
            ck_assert_msg(rc >= (ms[mi] == IQDB_METRIC_HAMMING ? 0.5 : 0.95),
                          "recall %.4f", rc);
            iqdb_close(db);
        }
        free(recs);
        iqdb_close(ref);
    }
    ds_free(&ds);
}
END_TEST

START_TEST(test_hnsw_deterministic_one_thread)
{
    omp_set_num_threads(1);
    dataset ds;
    make_clustered(&ds, 3000, 1, 16, 20, 0.3f, 3);
    iqdb *a = build(&ds, NULL);
    iqdb *b = build(&ds, NULL);
    membuf ma = save_of(a, a->index), mb = save_of(b, b->index);
    ck_assert_uint_eq(ma.len, mb.len);
    ck_assert_int_eq(memcmp(ma.p, mb.p, ma.len), 0);
    /* A different seed gives a different graph. */
    static const char *const seed[] = {"seed", "43", NULL};
    iqdb *c = build(&ds, seed);
    membuf mc = save_of(c, c->index);
    ck_assert(mc.len != ma.len || memcmp(mc.p, ma.p, ma.len) != 0);
    free(ma.p);
    free(mb.p);
    free(mc.p);
    iqdb_close(a);
    iqdb_close(b);
    iqdb_close(c);
    ds_free(&ds);
}
END_TEST

/* ---- filters ---------------------------------------------------------------- */

/* Filtered recall through the plugin with an allowed-slot bitmap of the
 * given selectivity; also checks that every hit is allowed and that
 * min(k, allowed) hits come back. */
typedef struct okset {
    const unsigned char *ok;
    const uint64_t *slot2id;
} okset;

static int pred_ok(void *ctx, uint64_t slot)
{
    const okset *o = ctx;
    return o->ok[o->slot2id[slot]];
}

/* use_pred: pass the same set as a predicate only (selectivity unknown
 * to the index, so it always traverses the graph). */
static double filtered_recall(iqdb *db, const dataset *ds, double sel,
                              int use_pred, uint64_t seed)
{
    uint64_t words = (db->store.limit + 63) / 64;
    uint64_t *bits = calloc(words ? words : 1, 8);
    unsigned char *ok = calloc(ds->n, 1);
    uint64_t cnt = 0;
    for (size_t i = 0; i < ds->n; i++) {
        if ((double)(tu_next(&seed) >> 11) * 0x1p-53 >= sel)
            continue;
        uint64_t s = slot_of(db, i);
        bits[s / 64] |= 1ull << (s % 64);
        ok[i] = 1;
        cnt++;
    }
    uint64_t *slot2id = malloc(db->store.limit * sizeof *slot2id);
    for (size_t i = 0; i < ds->n; i++)
        slot2id[slot_of(db, i)] = i;
    iqdb_filter_arg f;
    memset(&f, 0, sizeof f);
    f.struct_size = sizeof f;
    okset os = {ok, slot2id};
    if (use_pred) {
        f.pred = pred_ok;
        f.pctx = &os;
    } else {
        f.allowed = bits;
        f.nbits = db->store.limit;
        f.allowed_count = cnt;
    }
    size_t truth[K], hits = 0, total = 0;
    iqdb_neighbor out[K];
    for (size_t q = 0; q < ds->nq; q++) {
        const float *qv = ds->queries + q * ds->dim;
        size_t nt = exact_knn(ds, qv, ok, K, truth), n;
        uint32_t flags;
        ck_assert_int_eq(plug_search(db, db->index, qv, K, &f, out, &n, &flags),
                         0);
        ck_assert_uint_eq(n, nt);
        ck_assert_uint_eq(flags & IQDB_RESULT_INCOMPLETE, 0);
        for (size_t i = 0; i < n; i++) {
            ck_assert(ok[slot2id[out[i].slot]]);
            if (i > 0)
                ck_assert(out[i].dist >= out[i - 1].dist);
            for (size_t j = 0; j < nt; j++)
                hits += slot2id[out[i].slot] == truth[j];
        }
        total += nt;
    }
    free(bits);
    free(ok);
    free(slot2id);
    return total ? (double)hits / (double)total : 1.0;
}

START_TEST(test_hnsw_filtered_recall)
{
    dataset ds;
    make_clustered(&ds, 20000 / SCALE, 100 / SCALE, 48, 80, 0.6f, 11);
    static const char *const bf16[] = {"encoding", "bf16", NULL};
    iqdb *db = build(&ds, bf16);
    static const double sels[] = {0.5, 0.1, 0.01, 0.001};
    /* At the default ef_search and at a low one (16), where the
     * traversal has to earn its recall. */
    static const char *const efs[] = {NULL, "16"};
    for (int e = 0; e < 2; e++)
        for (int pred = 0; pred < 2; pred++)
            for (size_t i = 0; i < 4; i++) {
                plug_ef = efs[e];
                double rc = filtered_recall(db, &ds, sels[i], pred, 100 + i);
                plug_ef = NULL;
                printf("hnsw: filtered recall@10 at selectivity %.1f%% "
                       "(%s, ef_search %s) = %.4f\n",
                       sels[i] * 100, pred ? "predicate" : "bitmap",
                       efs[e] ? efs[e] : "64", rc);
                ck_assert_msg(rc >= 0.95, "selectivity %g: recall %.4f",
                              sels[i], rc);
            }
    iqdb_close(db);
    ds_free(&ds);
}
END_TEST

static int pred_mod7(void *ctx, uint64_t slot)
{
    const uint64_t *slot2id = ctx;
    return slot2id[slot] % 7 == 3;
}

static int pred_few(void *ctx, uint64_t slot)
{
    const uint64_t *slot2id = ctx;
    return slot2id[slot] % 1000 == 1;
}

START_TEST(test_hnsw_filter_min_k_and_predicate)
{
    dataset ds;
    make_clustered(&ds, 5000 / SCALE, 20, 16, 20, 0.3f, 13);
    iqdb *db = build(&ds, NULL);
    uint64_t *slot2id = malloc(db->store.limit * sizeof *slot2id);
    for (size_t i = 0; i < ds.n; i++)
        slot2id[slot_of(db, i)] = i;
    iqdb_neighbor out[K];
    size_t n;
    /* 5 allowed slots, k = 10: exactly those 5 come back. */
    uint64_t words = (db->store.limit + 63) / 64;
    uint64_t *bits = calloc(words, 8);
    for (size_t i = 0; i < 5; i++) {
        uint64_t s = slot_of(db, i * 97);
        bits[s / 64] |= 1ull << (s % 64);
    }
    iqdb_filter_arg f;
    memset(&f, 0, sizeof f);
    f.struct_size = sizeof f;
    f.allowed = bits;
    f.nbits = db->store.limit;
    f.allowed_count = 5;
    for (size_t q = 0; q < ds.nq; q++) {
        ck_assert_int_eq(plug_search(db, db->index, ds.queries + q * ds.dim, K,
                                     &f, out, &n, NULL),
                         0);
        ck_assert_uint_eq(n, 5);
        for (size_t i = 0; i < n; i++)
            ck_assert_uint_eq(slot2id[out[i].slot] % 97, 0);
    }
    /* A bitmap allowing nothing. */
    memset(bits, 0, words * 8);
    f.allowed_count = 0;
    ck_assert_int_eq(
        plug_search(db, db->index, ds.queries, K, &f, out, &n, NULL), 0);
    ck_assert_uint_eq(n, 0);
    /* A predicate alone matching fewer than k: all of them, and the
     * index (which has looked at every node) calls that complete. */
    memset(&f, 0, sizeof f);
    f.struct_size = sizeof f;
    f.pred = pred_few;
    f.pctx = slot2id;
    uint32_t flags;
    ck_assert_int_eq(
        plug_search(db, db->index, ds.queries, K, &f, out, &n, &flags), 0);
    ck_assert_uint_eq(n, (ds.n + 998) / 1000);
    ck_assert_uint_eq(flags, 0);
    /* A predicate alone (1/7 of the records), checked against exact. */
    memset(&f, 0, sizeof f);
    f.struct_size = sizeof f;
    f.pred = pred_mod7;
    f.pctx = slot2id;
    unsigned char *ok = calloc(ds.n, 1);
    for (size_t i = 0; i < ds.n; i++)
        ok[i] = i % 7 == 3;
    size_t truth[K], hits = 0, total = 0;
    for (size_t q = 0; q < ds.nq; q++) {
        const float *qv = ds.queries + q * ds.dim;
        size_t nt = exact_knn(&ds, qv, ok, K, truth);
        ck_assert_int_eq(plug_search(db, db->index, qv, K, &f, out, &n, NULL),
                         0);
        ck_assert_uint_eq(n, nt);
        for (size_t i = 0; i < n; i++) {
            ck_assert(ok[slot2id[out[i].slot]]);
            for (size_t j = 0; j < nt; j++)
                hits += slot2id[out[i].slot] == truth[j];
        }
        total += nt;
    }
    ck_assert_msg((double)hits / (double)total >= 0.95, "pred recall %.4f",
                  (double)hits / (double)total);
    /* Through the core: metadata filters, 50 % (index path) and 0.2 %
     * (the core's scan), min(k, matches) either way. */
    iqdb_close(db);
    db = tu_open(ds.dim, IQDB_METRIC_EUCLIDEAN, "hnsw");
    iqdb_record *recs = calloc(ds.n, sizeof *recs);
    iqdb_meta **metas = calloc(ds.n, sizeof *metas);
    size_t nrare = 0;
    for (size_t i = 0; i < ds.n; i++) {
        int is_rare = i % 500 == 7;
        nrare += is_rare;
        metas[i] = iqdb_meta_new();
        iqdb_meta_set(metas[i], "half", iqdb_value_int((int64_t)(i % 2)));
        iqdb_meta_set(metas[i], "rare", iqdb_value_bool(is_rare));
        recs[i] = (iqdb_record){iqdb_id_u64(i), ds.base + i * ds.dim,
                                metas[i]};
    }
    ck_assert_int_eq(iqdb_upsert_batch(db, recs, ds.n, ds.dim), 0);
    iqdb_filter *half = iqdb_filter_eq("half", iqdb_value_int(1));
    iqdb_filter *rare = iqdb_filter_eq("rare", iqdb_value_bool(1));
    for (size_t q = 0; q < ds.nq; q++) {
        iqdb_results *r;
        const float *qv = ds.queries + q * ds.dim;
        ck_assert_int_eq(iqdb_search(db, qv, ds.dim, K, half, NULL, &r), 0);
        ck_assert_uint_eq(iqdb_results_count(r, 0), K);
        for (size_t i = 0; i < K; i++)
            ck_assert_uint_eq(iqdb_results_hits(r, 0)[i].id.v.u64 % 2, 1);
        iqdb_results_free(r);
        ck_assert_int_eq(iqdb_search(db, qv, ds.dim, 100, rare, NULL, &r), 0);
        ck_assert_uint_eq(iqdb_results_count(r, 0), nrare);
        iqdb_results_free(r);
    }
    iqdb_filter_free(half);
    iqdb_filter_free(rare);
    for (size_t i = 0; i < ds.n; i++)
        iqdb_meta_free(metas[i]);
    free(metas);
    free(recs);
    free(ok);
    free(bits);
    free(slot2id);
    iqdb_close(db);
    ds_free(&ds);
}
END_TEST

/* ---- deletes ---------------------------------------------------------------- */

START_TEST(test_hnsw_delete_half_one_by_one)
{
    dataset ds;
    make_clustered(&ds, 8000 / SCALE, 100 / SCALE, 64, 60, 0.7f, 21);
    iqdb *db = build(&ds, NULL);
    unsigned char *alive = malloc(ds.n);
    memset(alive, 1, ds.n);
    uint64_t seed = 5;
    size_t want = ds.n / 2, done = 0;
    while (done < want) {
        size_t i = tu_next(&seed) % ds.n;
        if (!alive[i])
            continue;
        int was = 0;
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), &was), 0);
        ck_assert_int_eq(was, 1);
        alive[i] = 0;
        done++;
    }
    double rc = recall(db, &ds, alive, NULL);
    size_t live = 0, lost = unreachable(db, db->index, &live);
    printf("hnsw: after deleting 50%% one by one: recall@10 = %.4f, "
           "%zu of %zu live nodes unreachable\n",
           rc, lost, live);
    ck_assert_uint_eq(live, ds.n - want);
    ck_assert_msg(rc >= 0.95, "recall %.4f", rc);
    ck_assert_uint_eq(lost, 0);
    /* optimize: sweeps the tombstones; still reachable, same recall. */
    ck_assert_int_eq(db->ops->train(db->index), 0);
    lost = unreachable(db, db->index, &live);
    double rc2 = recall(db, &ds, alive, NULL);
    printf("hnsw: after optimize: recall@10 = %.4f, %zu unreachable\n", rc2,
           lost);
    ck_assert_uint_eq(lost, 0);
    ck_assert_msg(rc2 >= 0.95, "recall %.4f", rc2);
    iqdb_close(db);
    free(alive);
    ds_free(&ds);
}
END_TEST

START_TEST(test_hnsw_delete_half_batch)
{
    /* One remove() call with half the slots: the sweep path. Driven on
     * the plugin directly (the core deletes one record per call). */
    dataset ds;
    make_clustered(&ds, 10000 / SCALE, 100 / SCALE, 64, 60, 0.7f, 23);
    static const char *const bf16[] = {"encoding", "bf16", NULL};
    iqdb *db = build(&ds, bf16);
    unsigned char *alive = malloc(ds.n);
    memset(alive, 1, ds.n);
    uint64_t *slots = malloc(ds.n * sizeof *slots), *slot2id =
        malloc(db->store.limit * sizeof *slot2id);
    size_t ns = 0;
    uint64_t seed = 77;
    for (size_t i = 0; i < ds.n; i++) {
        slot2id[slot_of(db, i)] = i;
        if (tu_next(&seed) % 2) {
            slots[ns++] = slot_of(db, i);
            alive[i] = 0;
        }
    }
    ck_assert_int_eq(db->ops->remove(db->index, slots, ns), 0);
    size_t live, lost = unreachable(db, db->index, &live);
    ck_assert_uint_eq(live, ds.n - ns);
    ck_assert_uint_eq(lost, 0);
    size_t truth[K], hits = 0, total = 0, n;
    iqdb_neighbor out[K];
    for (size_t q = 0; q < ds.nq; q++) {
        const float *qv = ds.queries + q * ds.dim;
        size_t nt = exact_knn(&ds, qv, alive, K, truth);
        ck_assert_int_eq(
            plug_search(db, db->index, qv, K, NULL, out, &n, NULL), 0);
        ck_assert_uint_eq(n, nt);
        for (size_t i = 0; i < n; i++) {
            ck_assert(alive[slot2id[out[i].slot]]);
            for (size_t j = 0; j < nt; j++)
                hits += slot2id[out[i].slot] == truth[j];
        }
        total += nt;
    }
    double rc = (double)hits / (double)total;
    printf("hnsw: after removing 50%% in one batch: recall@10 = %.4f\n", rc);
    ck_assert_msg(rc >= 0.95, "recall %.4f", rc);
    /* Removing again, or slots never added, is a no-op. */
    uint64_t bogus[2] = {slots[0], 1u << 30};
    ck_assert_int_eq(db->ops->remove(db->index, bogus, 2), 0);
    /* Put them back (same slots, same vectors): recall over everything. */
    ck_assert_int_eq(db->ops->add(db->index, slots, ns), 0);
    memset(alive, 1, ds.n);
    hits = total = 0;
    for (size_t q = 0; q < ds.nq; q++) {
        const float *qv = ds.queries + q * ds.dim;
        size_t nt = exact_knn(&ds, qv, alive, K, truth);
        ck_assert_int_eq(
            plug_search(db, db->index, qv, K, NULL, out, &n, NULL), 0);
        ck_assert_uint_eq(n, nt);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < nt; j++)
                hits += slot2id[out[i].slot] == truth[j];
        total += nt;
    }
    rc = (double)hits / (double)total;
    printf("hnsw: after re-adding them: recall@10 = %.4f\n", rc);
    ck_assert_msg(rc >= 0.95, "recall %.4f", rc);
    ck_assert_uint_eq(unreachable(db, db->index, NULL), 0);
    free(slots);
    free(slot2id);
    free(alive);
    iqdb_close(db);
    ds_free(&ds);
}
END_TEST

START_TEST(test_hnsw_delete_readd_update)
{
    dataset ds;
    make_clustered(&ds, 3000, 0, 16, 20, 0.3f, 31);
    iqdb *db = build(&ds, NULL);
    iqdb_results *r;
    for (size_t i = 0; i < 200; i += 7) {
        const float *v = ds.base + i * ds.dim;
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
        ck_assert_int_eq(iqdb_search(db, v, ds.dim, 5, NULL, NULL, &r), 0);
        for (size_t j = 0; j < iqdb_results_count(r, 0); j++)
            ck_assert_uint_ne(iqdb_results_hits(r, 0)[j].id.v.u64, i);
        iqdb_results_free(r);
        /* Back under the same id: found first again. */
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), v, ds.dim, NULL), 0);
        ck_assert_int_eq(iqdb_search(db, v, ds.dim, 1, NULL, NULL, &r), 0);
        ck_assert_uint_eq(iqdb_results_hits(r, 0)[0].id.v.u64, i);
        iqdb_results_free(r);
    }
    /* Updates move a record: its new vector finds it, the old does not. */
    for (size_t i = 1; i < 200; i += 7) {
        float nv[16];
        for (int j = 0; j < 16; j++)
            nv[j] = 5.0f + (float)j + (float)i * 0.01f;
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), nv, 16, NULL), 0);
        ck_assert_int_eq(iqdb_search(db, nv, 16, 1, NULL, NULL, &r), 0);
        ck_assert_uint_eq(iqdb_results_hits(r, 0)[0].id.v.u64, i);
        iqdb_results_free(r);
    }
    ck_assert_uint_eq(iqdb_count(db), ds.n);
    ck_assert_uint_eq(unreachable(db, db->index, NULL), 0);
    iqdb_close(db);
    ds_free(&ds);
}
END_TEST

START_TEST(test_hnsw_search_allocates_nothing)
{
    /* Once a workload has sized the scratch, queries through the plugin
     * allocate nothing (iqdb__alloc_fail_after counts every allocation
     * of the core's allocator, which plugins use). */
    dataset ds;
    make_clustered(&ds, 4000 / SCALE, 50, 32, 20, 0.4f, 81);
    static const char *const bf16[] = {"encoding", "bf16", NULL};
    for (int e = 0; e < 2; e++) {
        iqdb *db = build(&ds, e ? bf16 : NULL);
        uint64_t words = (db->store.limit + 63) / 64;
        uint64_t *bits = calloc(words, 8);
        for (uint64_t i = 0; i < db->store.limit; i += 3)
            bits[i / 64] |= 1ull << (i % 64);
        iqdb_filter_arg f;
        memset(&f, 0, sizeof f);
        f.struct_size = sizeof f;
        f.allowed = bits;
        f.nbits = db->store.limit;
        f.allowed_count = (db->store.limit + 2) / 3;
        iqdb_neighbor out[K];
        size_t n;
        /* The first pass sizes the scratch (its heaps grow to the
         * largest frontier seen); the second must not allocate. */
        for (int pass = 0; pass < 2; pass++) {
            iqdb__alloc_fail_after(-1);
            for (size_t q = 0; q < ds.nq; q++) {
                const float *qv = ds.queries + q * ds.dim;
                ck_assert_int_eq(
                    plug_search(db, db->index, qv, K, NULL, out, &n, NULL),
                    0);
                ck_assert_int_eq(
                    plug_search(db, db->index, qv, K, &f, out, &n, NULL), 0);
            }
            long allocs = iqdb__alloc_fail_after(-1);
            if (pass == 1)
                ck_assert_int_eq(allocs, 0);
        }
        free(bits);
        iqdb_close(db);
    }
    ds_free(&ds);
}
END_TEST

/* ---- threads ------------------------------------------------------------------ */

START_TEST(test_hnsw_parallel_build_and_concurrent_search)
{
    omp_set_num_threads(2);
    dataset ds;
    make_clustered(&ds, 20000 / SCALE, 200 / SCALE, 48, 100, 0.6f, 41);
    iqdb *db = build(&ds, NULL);
    double rc = recall(db, &ds, NULL, NULL);
    printf("hnsw: parallel build (2 threads) recall@10 = %.4f\n", rc);
    ck_assert_msg(rc >= 0.95, "recall %.4f", rc);
    ck_assert_uint_eq(unreachable(db, db->index, NULL), 0);
    /* Sequential answers, then the same from 4 threads at once, then the
     * batch entry point. */
    uint64_t *ids = malloc(ds.nq * K * sizeof *ids);
    for (size_t q = 0; q < ds.nq; q++) {
        iqdb_results *r;
        ck_assert_int_eq(iqdb_search(db, ds.queries + q * ds.dim, ds.dim, K,
                                     NULL, NULL, &r),
                         0);
        for (size_t i = 0; i < K; i++)
            ids[q * K + i] = iqdb_results_hits(r, 0)[i].id.v.u64;
        iqdb_results_free(r);
    }
    int bad = 0;
#pragma omp parallel for num_threads(4) schedule(dynamic, 1)
    for (size_t t = 0; t < 4 * ds.nq; t++) {
        size_t q = t % ds.nq;
        iqdb_results *r = NULL;
        if (iqdb_search(db, ds.queries + q * ds.dim, ds.dim, K, NULL, NULL,
                        &r) != 0) {
#pragma omp atomic write
            bad = 1;
            continue;
        }
        for (size_t i = 0; i < K; i++)
            if (iqdb_results_hits(r, 0)[i].id.v.u64 != ids[q * K + i]) {
#pragma omp atomic write
                bad = 1;
            }
        iqdb_results_free(r);
    }
    ck_assert_int_eq(bad, 0);
    iqdb_results *rb;
    ck_assert_int_eq(iqdb_search_batch(db, ds.queries, ds.nq, ds.dim, K, NULL,
                                       NULL, &rb),
                     0);
    for (size_t q = 0; q < ds.nq; q++)
        for (size_t i = 0; i < K; i++)
            ck_assert_uint_eq(iqdb_results_hits(rb, q)[i].id.v.u64,
                              ids[q * K + i]);
    iqdb_results_free(rb);
    free(ids);
    iqdb_close(db);
    ds_free(&ds);
}
END_TEST

/* ---- persistence ----------------------------------------------------------------- */

START_TEST(test_hnsw_save_load_identical)
{
    dataset ds;
    make_clustered(&ds, 5000 / SCALE, 50, 24, 30, 0.3f, 51);
    static const char *const enc[][3] = {{"encoding", "float", NULL},
                                         {"encoding", "bf16", NULL}};
    for (int e = 0; e < 2; e++) {
        iqdb *db = build(&ds, enc[e]);
        for (size_t i = 0; i < ds.n; i += 3) /* tombstones too */
            ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
        membuf m = save_of(db, db->index);
        void *ix = NULL;
        ck_assert_int_eq(load_bytes(db, m.p, m.len, 1, &ix), 0);
        membuf m2 = save_of(db, ix);
        ck_assert_uint_eq(m.len, m2.len);
        ck_assert_int_eq(memcmp(m.p, m2.p, m.len), 0);
        iqdb_neighbor a[K], b[K];
        for (size_t q = 0; q < ds.nq; q++) {
            size_t na, nb;
            const float *qv = ds.queries + q * ds.dim;
            ck_assert_int_eq(
                plug_search(db, db->index, qv, K, NULL, a, &na, NULL), 0);
            ck_assert_int_eq(plug_search(db, ix, qv, K, NULL, b, &nb, NULL),
                             0);
            ck_assert_uint_eq(na, nb);
            for (size_t i = 0; i < na; i++) {
                ck_assert_uint_eq(a[i].slot, b[i].slot);
                ck_assert(a[i].dist == b[i].dist);
            }
        }
        /* The loaded index keeps working: remove and add. */
        uint64_t s = slot_of(db, 1);
        ck_assert_int_eq(db->ops->remove(ix, &s, 1), 0);
        ck_assert_int_eq(db->ops->add(ix, &s, 1), 0);
        size_t na;
        ck_assert_int_eq(plug_search(db, ix, ds.base + ds.dim, 1, NULL, a,
                                     &na, NULL),
                         0);
        ck_assert_uint_eq(na, 1);
        ck_assert_uint_eq(a[0].slot, slot_of(db, 1));
        db->ops->destroy(ix);
        free(m.p);
        free(m2.p);
        iqdb_close(db);
    }
    ds_free(&ds);
}
END_TEST

/* A small graph with upper layers and tombstones, saved. */
static iqdb *small_graph(membuf *m)
{
    dataset ds;
    make_clustered(&ds, 150, 0, 8, 5, 0.3f, 61);
    static const char *const p[] = {"m", "3", "ef_construction", "20", NULL};
    iqdb *db = build(&ds, p);
    /* Few enough deletes that no sweep runs: tombstones stay. */
    for (size_t i = 0; i < 150; i += 23)
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
    *m = save_of(db, db->index);
    ds_free(&ds);
    return db;
}

START_TEST(test_hnsw_load_every_truncation)
{
    membuf m;
    iqdb *db = small_graph(&m);
    ck_assert_int_eq(load_bytes(db, m.p, m.len, 1, NULL), 0);
    for (size_t len = 0; len < m.len; len++) {
        int rc = load_bytes(db, m.p, len, 1, NULL);
        ck_assert_msg(rc == IQDB_ECORRUPT, "length %zu of %zu: %d", len,
                      m.len, rc);
    }
    /* One extra byte is as bad as one missing. */
    unsigned char *longer = malloc(m.len + 1);
    memcpy(longer, m.p, m.len);
    longer[m.len] = 0;
    ck_assert_int_eq(load_bytes(db, longer, m.len + 1, 1, NULL), IQDB_ECORRUPT);
    free(longer);
    /* Other versions; a failing reader keeps its code. */
    ck_assert_int_eq(load_bytes(db, m.p, m.len, 2, NULL), IQDB_ENOTSUP);
    ck_assert_int_eq(load_bytes(db, m.p, m.len, 0, NULL), IQDB_ECORRUPT);
    membuf fr = {m.p, m.len, m.len, 0, 1};
    iqdb_reader rd = {sizeof rd, &fr, mb_read, m.len};
    void *ix = fresh_index(db);
    ck_assert_int_eq(db->ops->load(ix, &rd, 1), IQDB_EIO);
    db->ops->destroy(ix);
    free(m.p);
    iqdb_close(db);
}
END_TEST

START_TEST(test_hnsw_load_byte_flips)
{
    membuf m;
    iqdb *db = small_graph(&m);
    unsigned char *p = malloc(m.len);
    uint64_t seed = 9;
    float q[8] = {0};
    iqdb_neighbor out[K];
    size_t accepted = 0;
    for (int t = 0; t < 3000 / SCALE; t++) {
        memcpy(p, m.p, m.len);
        size_t at = tu_next(&seed) % m.len;
        p[at] ^= (unsigned char)(1 + tu_next(&seed) % 255);
        /* The hash catches every single-byte change. */
        ck_assert_int_eq(load_bytes(db, p, m.len, 1, NULL), IQDB_ECORRUPT);
        /* With the hash fixed, the structure checks must hold: either
         * rejected, or a graph that searches without harm. */
        membuf e = {p, m.len, m.len, 0, 0};
        rehash(&e);
        void *ix = NULL;
        int rc = load_bytes(db, p, m.len, 1, &ix);
        ck_assert_msg(rc == 0 || rc == IQDB_ECORRUPT, "rc %d", rc);
        if (rc == 0) {
            size_t n;
            accepted++;
            ck_assert_int_eq(plug_search(db, ix, q, K, NULL, out, &n, NULL),
                             0);
            db->ops->destroy(ix);
        }
    }
    printf("hnsw: %zu of %d rehashed byte flips loaded as valid graphs\n",
           accepted, 3000 / SCALE);
    free(p);
    free(m.p);
    iqdb_close(db);
}
END_TEST

START_TEST(test_hnsw_load_hostile_fields)
{
    membuf m;
    iqdb *db = small_graph(&m);
    graph g;
    memset(&g, 0, sizeof g);
    parse_graph(&m, &g);
    /* Find a live node with links, and a deleted one. */
    uint32_t live = 0, dead = 0;
    while (live < g.limit && (g.state[live] != 1 || g.l0n[live] < 2))
        live++;
    while (dead < g.limit && g.state[dead] != 2)
        dead++;
    ck_assert_uint_lt(live, g.limit);
    ck_assert_uint_lt(dead, g.limit);
    size_t lo = g.off[live]; /* state, level, count, ids... */
    unsigned char *p = malloc(m.len);
    membuf e = {p, m.len, m.len, 0, 0};
#define HOSTILE(edit)                                                       \
    do {                                                                    \
        memcpy(p, m.p, m.len);                                              \
        edit;                                                               \
        rehash(&e);                                                         \
        ck_assert_int_eq(load_bytes(db, p, m.len, 1, NULL), IQDB_ECORRUPT); \
    } while (0)
    HOSTILE(memcpy(p, "IQHNSW\r\r", 8));                 /* magic */
    HOSTILE(wr32(p + 8, 7));                              /* version */
    HOSTILE(wr32(p + 12, 9));                             /* dim */
    HOSTILE(wr32(p + 16, 3));                             /* metric */
    HOSTILE(wr32(p + 20, 1000));                          /* m */
    HOSTILE(wr32(p + 20, 2));                             /* m: 2m < counts */
    HOSTILE(wr32(p + 24, 0));                             /* ef_construction */
    HOSTILE(wr32(p + 28, 0xfffffff0u));                   /* huge limit */
    HOSTILE(wr32(p + 28, g.limit - 1));                   /* short limit */
    HOSTILE(wr32(p + 32, g.limit + 3));                   /* entry */
    HOSTILE(wr32(p + 32, dead));                          /* entry deleted */
    HOSTILE(wr32(p + 36, 29));                            /* top level */
    HOSTILE(wr32(p + 36, 0xfffffffeu));                   /* top level */
    HOSTILE(p[40] ^= 1);                                  /* live count */
    HOSTILE(p[48] ^= 1);                                  /* deleted count */
    HOSTILE(p[lo] = 7);                                   /* state */
    HOSTILE(p[lo + 1] = 200);                             /* level */
    HOSTILE(wr32(p + 28, g.limit + 1));                   /* beyond store */
    /* A well-formed graph of tombstones that all claim level 29: only the
     * plausibility bound on levels stops it (each node would make the
     * loader allocate 29 upper lists from 60 bytes of input). */
    size_t big = 64 + (size_t)g.limit * 62 + 8;
    unsigned char *q = calloc(big, 1);
    memcpy(q, m.p, 64);
    wr32(q + 32, 0xffffffffu); /* no entry */
    wr32(q + 36, 0xffffffffu);
    memset(q + 40, 0, 8);      /* 0 live */
    memset(q + 48, 0, 8);
    wr32(q + 48, g.limit);     /* all deleted */
    for (uint32_t n = 0; n < g.limit; n++) {
        q[64 + (size_t)n * 62] = 2;
        q[64 + (size_t)n * 62 + 1] = 29;
    }
    membuf qe = {q, big, big, 0, 0};
    rehash(&qe);
    ck_assert_int_eq(load_bytes(db, q, big, 1, NULL), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(db), "upper layers"));
    /* The same at level 1 is a valid (if empty) graph. */
    for (uint32_t n = 0; n < g.limit; n++)
        q[64 + (size_t)n * 62 + 1] = 1;
    size_t small = 64 + (size_t)g.limit * 6 + 8;
    for (uint32_t n = 0; n < g.limit; n++) {
        q[64 + (size_t)n * 6] = 2;
        q[64 + (size_t)n * 6 + 1] = 1;
        memset(q + 64 + (size_t)n * 6 + 2, 0, 4);
    }
    qe.len = small;
    rehash(&qe);
    ck_assert_int_eq(load_bytes(db, q, small, 1, NULL), 0);
    free(q);
    HOSTILE(p[lo + 2] = 0xff; p[lo + 3] = 0xff);          /* count 65535 */
    HOSTILE(p[lo + 2] = 7);                               /* count > 2m */
    HOSTILE(wr32(p + lo + 4, g.limit + 100));             /* id range */
    HOSTILE(wr32(p + lo + 4, 0xffffffffu));               /* id range */
    HOSTILE(wr32(p + lo + 4, live));                      /* self link */
    HOSTILE(wr32(p + lo + 4, rd32(p + lo + 8)));          /* repeat */
    /* A link to an absent node: mark the target absent is not possible in
     * place, so point at an id past the last present one. */
    graph_free(&g);
    free(p);
    free(m.p);
    iqdb_close(db);
#undef HOSTILE
}
END_TEST

/* ---- allocation failures ----------------------------------------------------------- */

START_TEST(test_hnsw_oom_leaves_index_unchanged)
{
    dataset ds;
    make_clustered(&ds, 700, 0, 8, 10, 0.3f, 71);
    iqdb *db = tu_open(8, IQDB_METRIC_EUCLIDEAN, "hnsw");
    iqdb_record *recs = calloc(ds.n, sizeof *recs);
    for (size_t i = 0; i < ds.n; i++)
        recs[i] = (iqdb_record){iqdb_id_u64(i), ds.base + i * 8, NULL};
    ck_assert_int_eq(iqdb_upsert_batch(db, recs, 300, 8), 0);
    for (size_t i = 0; i < 300; i += 5)
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
    /* A 400-record batch (parallel path) and single upserts that reuse
     * tombstones, failing at every allocation in turn. */
    size_t steps[2] = {400, 1};
    for (int s = 0; s < 2; s++) {
        size_t at = s == 0 ? 300 : 0;
        for (long k = 0;; k++) {
            membuf before = save_of(db, db->index);
            iqdb__alloc_fail_after(k);
            int rc = iqdb_upsert_batch(db, recs + at, steps[s], 8);
            iqdb__alloc_fail_after(-1);
            membuf after = save_of(db, db->index);
            if (rc == 0) {
                free(before.p);
                free(after.p);
                break;
            }
            ck_assert_int_eq(rc, IQDB_ENOMEM);
            ck_assert_uint_eq(before.len, after.len);
            ck_assert_int_eq(memcmp(before.p, after.p, before.len), 0);
            free(before.p);
            free(after.p);
        }
    }
    /* Updates of live records: the core adds the new slots, then removes
     * the old ones (and, if that fails, the new ones again), so the
     * graph may differ in its tombstones, but not in what it answers. */
    for (long k = 0;; k++) {
        iqdb_neighbor a[K], b[K];
        size_t na, nb;
        ck_assert_int_eq(
            plug_search(db, db->index, ds.base, K, NULL, a, &na, NULL), 0);
        size_t before = iqdb_count(db);
        iqdb__alloc_fail_after(k);
        int rc = iqdb_upsert_batch(db, recs + 1, 50, 8);
        iqdb__alloc_fail_after(-1);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, IQDB_ENOMEM);
        ck_assert_uint_eq(iqdb_count(db), before);
        ck_assert_int_eq(
            plug_search(db, db->index, ds.base, K, NULL, b, &nb, NULL), 0);
        ck_assert_uint_eq(na, nb);
        for (size_t i = 0; i < na; i++)
            ck_assert_uint_eq(a[i].slot, b[i].slot);
    }
    /* Deletes too. */
    for (long k = 0;; k++) {
        membuf before = save_of(db, db->index);
        iqdb__alloc_fail_after(k);
        int rc = iqdb_delete(db, iqdb_id_u64(301), NULL);
        iqdb__alloc_fail_after(-1);
        membuf after = save_of(db, db->index);
        int same = before.len == after.len &&
                   memcmp(before.p, after.p, before.len) == 0;
        free(before.p);
        free(after.p);
        if (rc == 0)
            break;
        ck_assert_int_eq(rc, IQDB_ENOMEM);
        ck_assert(same);
    }
    ck_assert_uint_eq(unreachable(db, db->index, NULL), 0);
    iqdb_results *r;
    ck_assert_int_eq(iqdb_search(db, ds.base, 8, 5, NULL, NULL, &r), 0);
    ck_assert_uint_eq(iqdb_results_count(r, 0), 5);
    iqdb_results_free(r);
    free(recs);
    iqdb_close(db);
    ds_free(&ds);
}
END_TEST

static Suite *hnsw_suite(void)
{
    Suite *s = suite_create("hnsw");
    TCase *tc = tcase_create("params");
    tcase_add_test(tc, test_hnsw_bad_params_named);
    tcase_add_test(tc, test_hnsw_bad_query_params);
    tcase_add_test(tc, test_hnsw_registered_caps);
    tcase_add_test(tc, test_hnsw_small_and_empty);
    suite_add_tcase(s, tc);
    tc = tcase_create("recall");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_hnsw_recall_clustered);
    tcase_add_test(tc, test_hnsw_recall_sequential_inserts);
    tcase_add_test(tc, test_hnsw_recall_fashion_mnist);
    tcase_add_test(tc, test_hnsw_recall_other_metrics);
    tcase_add_test(tc, test_hnsw_deterministic_one_thread);
    suite_add_tcase(s, tc);
    tc = tcase_create("filter");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_hnsw_filtered_recall);
    tcase_add_test(tc, test_hnsw_filter_min_k_and_predicate);
    suite_add_tcase(s, tc);
    tc = tcase_create("delete");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_hnsw_delete_half_one_by_one);
    tcase_add_test(tc, test_hnsw_delete_half_batch);
    tcase_add_test(tc, test_hnsw_delete_readd_update);
    suite_add_tcase(s, tc);
    tc = tcase_create("threads");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_hnsw_parallel_build_and_concurrent_search);
    tcase_add_test(tc, test_hnsw_search_allocates_nothing);
    suite_add_tcase(s, tc);
    tc = tcase_create("persist");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_hnsw_save_load_identical);
    tcase_add_test(tc, test_hnsw_load_every_truncation);
    tcase_add_test(tc, test_hnsw_load_byte_flips);
    tcase_add_test(tc, test_hnsw_load_hostile_fields);
    suite_add_tcase(s, tc);
    tc = tcase_create("oom");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_hnsw_oom_leaves_index_unchanged);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(hnsw_suite());
}
