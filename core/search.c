/*
 * core/search.c - query validation, filter planning and dispatch.
 *
 * A filter is planned per call. Usually it is evaluated once over the
 * live records into an allowed-slot bitmap. When few records match (at
 * most SCAN_MAX, or the index cannot take a bitmap) the core answers
 * exactly by scoring just those records; otherwise the bitmap goes into
 * the index's own search, so an approximate index filters during
 * traversal rather than after it.
 *
 * Evaluating the filter on every record costs more than the search
 * itself on a large database (200k records: about 3 ms against 0.05 ms
 * for an HNSW query). So when the index takes a predicate, the call has
 * few queries, and a sample of the records says that many match, the
 * filter goes to the index as a predicate instead, evaluated only on the
 * nodes the search visits, with the sample's estimate of the matches. If
 * the index then returns fewer than k hits for any query, the estimate
 * was wrong and the call is planned again with the full bitmap.
 *
 * Either way a filtered query returns min(k, matches) hits.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <iqdb/topk.h>

#include "iqdb_int.h"

/* Filters matching at most this many records are answered by a scan. */
#define SCAN_MAX 2048
/* Lazy (predicate) planning: records sampled for the estimate, the least
 * estimated matches, and the most filter evaluations per query a search
 * is assumed to make (a call with nq queries goes lazy only when
 * nq * LAZY_EVALS is below the record count). */
#define LAZY_SAMPLE 512
#define LAZY_MIN_MATCH (4 * SCAN_MAX)
#define LAZY_EVALS 4096

typedef struct plan {
    iqdb_filter_arg arg;
    uint64_t *bits;
    uint64_t *match; /* matching slots, when scanning */
    size_t nmatch;
    int scan;
    int lazy; /* the filter goes to the index as a predicate */
    iqdb *db;
    const iqdb_filter *f;
} plan;

static int plan_pred(void *ctx, uint64_t slot)
{
    const plan *p = ctx;
    const iqdb_store *s = &p->db->store;
    return iqdb__store_is_live(s, slot) &&
           iqdb_filter_eval(p->f, s->meta[slot]);
}

/* Estimated live records matching f, from LAZY_SAMPLE live records
 * spread evenly over the slots (deterministic). */
static uint64_t estimate_matches(const iqdb *db, const iqdb_filter *f)
{
    const iqdb_store *s = &db->store;
    uint64_t seen = 0, hit = 0;
    for (uint64_t i = 0; i < LAZY_SAMPLE; i++) {
        uint64_t slot = (2 * i + 1) * s->limit / (2 * LAZY_SAMPLE);
        while (slot < s->limit && !iqdb__store_is_live(s, slot))
            slot++;
        if (slot >= s->limit)
            break;
        seen++;
        hit += (uint64_t)iqdb_filter_eval(f, s->meta[slot]);
    }
    return seen ? (uint64_t)((double)hit / (double)seen *
                             (double)s->count)
                : 0;
}

static int make_plan(iqdb *db, const iqdb_filter *f, size_t k, size_t nq,
                     int allow_lazy, plan *p)
{
    const iqdb_store *s = &db->store;
    memset(p, 0, sizeof *p);
    p->db = db;
    p->f = f;
    if (f == NULL)
        return 0;
    if (allow_lazy && (db->ops->caps & IQDB_CAP_FILTER_PREDICATE) &&
        nq < s->count / LAZY_EVALS) {
        uint64_t est = estimate_matches(db, f);
        if (est >= LAZY_MIN_MATCH && est >= k) {
            p->lazy = 1;
            p->arg.struct_size = sizeof p->arg;
            p->arg.allowed_count = est;
            p->arg.pred = plan_pred;
            p->arg.pctx = p;
            return 0;
        }
    }
    size_t words = (size_t)((s->limit + 63) / 64);
    p->bits = iqdb__calloc(words ? words : 1, sizeof *p->bits);
    if (p->bits == NULL)
        return iqdb__set_error(db, IQDB_ENOMEM, "search: out of memory");
    uint64_t count = 0;
    for (size_t w = 0; w < words; w++) {
        uint64_t live = s->live[w];
        while (live) {
            unsigned b = (unsigned)__builtin_ctzll(live);
            live &= live - 1;
            uint64_t slot = (uint64_t)w * 64 + b;
            if (iqdb_filter_eval(f, s->meta[slot])) {
                p->bits[w] |= (uint64_t)1 << b;
                count++;
            }
        }
    }
    p->arg.struct_size = sizeof p->arg;
    p->arg.allowed = p->bits;
    p->arg.nbits = s->limit;
    p->arg.allowed_count = count;
    p->scan = count <= SCAN_MAX || count <= k ||
              !(db->ops->caps & IQDB_CAP_FILTER_BITMAP);
    if (!p->scan || count == 0)
        return 0;
    p->match = iqdb__malloc((size_t)count * sizeof *p->match);
    if (p->match == NULL)
        return iqdb__set_error(db, IQDB_ENOMEM, "search: out of memory");
    for (size_t w = 0; w < words; w++) {
        uint64_t m = p->bits[w];
        while (m) {
            p->match[p->nmatch++] = (uint64_t)w * 64 +
                                    (unsigned)__builtin_ctzll(m);
            m &= m - 1;
        }
    }
    return 0;
}

static void free_plan(plan *p)
{
    iqdb__free(p->bits);
    iqdb__free(p->match);
}

/* Exact answer over the matching slots only. */
static int scan_one(iqdb *db, const plan *p, const float *q, size_t k,
                    iqdb_neighbor *out, size_t *count)
{
    enum { BLOCK = 256 };
    const float *vecs[BLOCK];
    float d[BLOCK];
    iqdb_topk_entry *buf = iqdb__malloc(k * sizeof *buf);
    if (buf == NULL)
        return IQDB_ENOMEM;
    iqdb_topk h;
    iqdb_topk_init(&h, buf, k);
    const iqdb_store *s = &db->store;
    for (size_t i = 0; i < p->nmatch; i += BLOCK) {
        size_t n = p->nmatch - i < BLOCK ? p->nmatch - i : BLOCK;
        for (size_t j = 0; j < n; j++)
            vecs[j] = iqdb__arena_at(&s->arena, p->match[i + j]);
        db->kernels->dist_gather(db->metric, q, vecs, n, db->dim, d);
        for (size_t j = 0; j < n; j++)
            if (d[j] <= iqdb_topk_bound(&h))
                iqdb_topk_offer(&h, d[j], p->match[i + j],
                                s->order[p->match[i + j]]);
    }
    *count = iqdb_topk_drain(&h, out);
    iqdb__free(buf);
    return 0;
}

static int check_out(iqdb *db, const plan *p, const iqdb_search_args *a,
                     size_t k)
{
    if (a->out_count > k)
        return iqdb__set_error(db, IQDB_EINTERNAL,
                               "index '%s' returned %zu hits for k=%zu",
                               db->ops->name, a->out_count, k);
    for (size_t i = 0; i < a->out_count; i++) {
        uint64_t slot = a->out[i].slot;
        if (!iqdb__store_is_live(&db->store, slot) ||
            ((p->bits || p->lazy) && !iqdb_filter_arg_allows(&p->arg, slot)))
            return iqdb__set_error(db, IQDB_EINTERNAL,
                                   "index '%s' returned slot %llu that is "
                                   "not live or not allowed",
                                   db->ops->name, (unsigned long long)slot);
    }
    return 0;
}

static int run_index(iqdb *db, const plan *p, const iqdb_params *params,
                     const float *queries, size_t nq, size_t k,
                     iqdb_neighbor *nb, size_t *counts)
{
    iqdb_search_args *args = iqdb__calloc(nq, sizeof *args);
    if (args == NULL)
        return iqdb__set_error(db, IQDB_ENOMEM, "search: out of memory");
    for (size_t q = 0; q < nq; q++) {
        args[q].struct_size = sizeof args[q];
        args[q].query = queries + q * db->dim;
        args[q].k = k;
        args[q].filter = p->bits || p->lazy ? &p->arg : NULL;
        /* Flat standing in for an absent plugin takes none of its
         * search parameters. */
        args[q].params = params && !db->stands_in ? params->kv : NULL;
        args[q].nparams = params && !db->stands_in ? params->n : 0;
        args[q].out = nb + q * k;
    }
    int r = 0;
    if (nq == 1) {
        r = db->ops->search(db->index, args);
    } else if (db->ops->search_batch != NULL) {
        r = db->ops->search_batch(db->index, args, nq);
    } else {
        /* The failing query's message is set on a worker thread: carry
         * it back to the caller's thread. */
        char msg[1024] = "";
#pragma omp parallel for schedule(dynamic, 4)
        for (size_t q = 0; q < nq; q++) {
            int rq = db->ops->search(db->index, &args[q]);
            if (rq != 0) {
#pragma omp critical
                if (r == 0) {
                    r = rq;
                    snprintf(msg, sizeof msg, "%s", iqdb_errmsg(db));
                }
            }
        }
        if (r != 0)
            iqdb__set_error(db, r, "%s", msg);
    }
    for (size_t q = 0; r == 0 && q < nq; q++) {
        r = check_out(db, p, &args[q], k);
        counts[q] = args[q].out_count;
    }
    if (r > 0)
        r = IQDB_EINTERNAL;
    iqdb__free(args);
    return r;
}

static int run_scan(iqdb *db, const plan *p, const float *queries, size_t nq,
                    size_t k, iqdb_neighbor *nb, size_t *counts)
{
    int r = 0;
#pragma omp parallel for schedule(dynamic, 1) if (nq > 1)
    for (size_t q = 0; q < nq; q++) {
        int rq = scan_one(db, p, queries + q * db->dim, k, nb + q * k,
                          &counts[q]);
        if (rq != 0) {
#pragma omp atomic write
            r = rq;
        }
    }
    if (r != 0)
        return iqdb__set_error(db, r, "search: out of memory");
    return 0;
}

static int search_locked(iqdb *db, const float *queries, size_t nq, size_t k,
                         const iqdb_filter *filter, const iqdb_params *params,
                         iqdb_results **out)
{
    plan p;
    int lazy_ok = 1;
again:;
    int r = make_plan(db, filter, k, nq, lazy_ok, &p);
    if (r != 0)
        goto done;
    uint64_t avail = p.bits ? p.arg.allowed_count : db->store.count;
    size_t kk = k < avail ? k : (size_t)avail;
    size_t *counts = iqdb__calloc(nq, sizeof *counts);
    iqdb_neighbor *nb = NULL;
    size_t bytes;
    if (counts == NULL || iqdb__mul_size(nq, kk ? kk : 1, &bytes) != 0 ||
        iqdb__mul_size(bytes, sizeof *nb, &bytes) != 0 ||
        (nb = iqdb__malloc(bytes)) == NULL) {
        r = iqdb__set_error(db, IQDB_ENOMEM, "search: out of memory");
        goto free_bufs;
    }
    if (kk > 0) {
        r = p.scan && p.bits
                ? run_scan(db, &p, queries, nq, kk, nb, counts)
                : run_index(db, &p, params, queries, nq, kk, nb, counts);
        if (r != 0)
            goto free_bufs;
    }
    /* The estimate promised at least k matches; a short answer means it
     * was wrong (or the index gave up): plan again with the bitmap. */
    for (size_t q = 0; p.lazy && q < nq; q++) {
        if (counts[q] < kk) {
            iqdb__free(nb);
            iqdb__free(counts);
            free_plan(&p);
            lazy_ok = 0;
            goto again;
        }
    }
    r = iqdb__results_build(db, nb, counts, nq, kk, out);
    if (r != 0)
        iqdb__set_error(db, r, "search: out of memory");
free_bufs:
    iqdb__free(nb);
    iqdb__free(counts);
done:
    free_plan(&p);
    return r;
}

static int search_many(iqdb *db, const float *queries, size_t nq,
                       uint32_t dim, size_t k, const iqdb_filter *filter,
                       const iqdb_params *params, iqdb_results **out)
{
    int r;
    if (db == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "search: NULL database");
    if (out == NULL)
        return iqdb__set_error(db, IQDB_EINVAL, "search: NULL out");
    *out = NULL;
    if (k == 0)
        return iqdb__set_error(db, IQDB_EK, "search: k must be at least 1");
    if (nq > 0 && queries == NULL)
        return iqdb__set_error(db, IQDB_EINVAL, "search: NULL query");
    for (size_t q = 0; q < nq; q++) {
        char what[48] = "search";
        if (nq > 1)
            snprintf(what, sizeof what, "search: query %zu", q);
        if (dim != 0 && nq > SIZE_MAX / dim)
            return iqdb__set_error(db, IQDB_EINVAL, "search: too many queries");
        r = iqdb__check_vector(db, queries + q * (size_t)dim, dim, db->dim,
                               what);
        if (r != 0)
            return r;
    }
    pthread_rwlock_rdlock(&db->lock);
    r = search_locked(db, queries, nq, k, filter, params, out);
    pthread_rwlock_unlock(&db->lock);
    return r;
}

int iqdb_search(iqdb *db, const float *query, uint32_t dim, size_t k,
                const iqdb_filter *filter, const iqdb_params *params,
                iqdb_results **out)
{
    return search_many(db, query, 1, dim, k, filter, params, out);
}

int iqdb_search_batch(iqdb *db, const float *queries, size_t nq,
                      uint32_t dim, size_t k, const iqdb_filter *filter,
                      const iqdb_params *params, iqdb_results **out)
{
    return search_many(db, queries, nq, dim, k, filter, params, out);
}
