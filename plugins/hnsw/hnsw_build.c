/*
 * plugins/hnsw/hnsw_build.c - building and maintaining the graph:
 * level assignment, insertion (Algorithm 1 of the paper) with the
 * heuristic neighbour selection (Algorithm 4), parallel bulk insertion,
 * deletion with neighbour repair, the tombstone sweep and the
 * reachability repair that "optimize" runs.
 *
 * Every write first reserves all the memory it will need (node arrays,
 * upper-layer blocks, per-thread scratch, BFS buffers); only then does it
 * touch the graph, and from there on nothing can fail. That is how add()
 * and remove() leave the index as it was when they return an error.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "hnsw_int.h"

/* Batches with at least this many new nodes are inserted in parallel. */
#define PAR_MIN 256
/* A batch this large, and at least 1/16 of the index, ends with the
 * reachability repair (reconnect): its BFS is cheap next to inserting
 * that many nodes. Smaller adds leave it to optimize (train). */
#define BULK_MIN 1024
/* Rounds of the reachability repair (each may displace a link). */
#define RECONNECT_ROUNDS 4

/* ---- helpers ----------------------------------------------------------- */

static int cand_cmp(const void *a, const void *b)
{
    const hnsw_cand *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Nearest first, ties by id so that builds are reproducible. */
static void sort_cands(hnsw_cand *a, size_t n)
{
    if (n > 32) {
        qsort(a, n, sizeof *a, cand_cmp);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        hnsw_cand x = a[i];
        size_t j = i;
        while (j > 0 && cand_cmp(&a[j - 1], &x) > 0) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Candidates the sweep gathers for one list, at most. */
static size_t sweep_cap(const hnsw *h)
{
    size_t c = 8 * (size_t)h->m0;
    return c < 256 ? 256 : c;
}

static size_t sel_need(const hnsw *h)
{
    size_t a = (size_t)h->ef_construction + 1, b = sweep_cap(h);
    return a > b ? a : b;
}

/* Score sc->sel[from..to) against base (a batch at a time). */
static void score_sel(hnsw_ctx *c, const float *base, size_t from, size_t to)
{
    hnsw_scratch *sc = c->sc;
    float bn = hnsw__norm(c->h, base);
    for (size_t i = from; i < to; i += sc->deg) {
        size_t b = to - i < sc->deg ? to - i : sc->deg;
        for (size_t j = 0; j < b; j++)
            sc->ids[j] = sc->sel[i + j].id;
        hnsw__dist_ids(c, base, bn, sc->ids, b, sc->dists);
        for (size_t j = 0; j < b; j++)
            sc->sel[i + j].d = sc->dists[j];
    }
}

/* Traversal distance from float vector a (norm an) to node n. */
static inline float pair_dist(const hnsw_ctx *c, const float *a, float an,
                              uint32_t n)
{
    const hnsw *h = c->h;
    if (h->codes != NULL)
        return h->cdist(a, h->codes + (size_t)n * h->cstride, h->dim, an);
    return h->dist(a, hnsw__vec(c, n), h->dim);
}

static void write_list(uint32_t *l, const hnsw_cand *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        l[1 + i] = c[i].id;
    l[0] = (uint32_t)n;
}

static int list_has(const uint32_t *l, uint32_t id)
{
    for (uint32_t i = 0; i < l[0]; i++)
        if (l[1 + i] == id)
            return 1;
    return 0;
}

/* Level of a new node: floor(-ln(U) * mL), U uniform in (0, 1] (the
 * paper's exponentially decaying distribution, section 4). splitmix64 on
 * the index's own state, so a fixed seed gives the same levels. */
static int draw_level(hnsw *h)
{
    uint64_t z = (h->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    double u = ((double)(z >> 11) + 1.0) * 0x1p-53;
    double l = floor(-log(u) * h->level_mult);
    return l > HNSW_MAX_LEVEL ? HNSW_MAX_LEVEL : (int)l;
}

/* ---- Algorithm 4 --------------------------------------------------------- */

/*
 * SELECT-NEIGHBORS-HEURISTIC without extendCandidates or
 * keepPrunedConnections: walk the candidates nearest first and keep one
 * only when it is nearer to the base than to every node kept so far, so
 * links spread in different directions instead of clustering. When no
 * more than mmax candidates are offered all are kept: dropping them would
 * only thin the graph.
 *
 * cands[0..k0) are links that must stay (repairs keep a node's live
 * links and only fill the room a deleted one left, so a repair never
 * takes away some node's last way in); cands[k0..n) are the candidates,
 * sorted nearest first by distance to the base. The chosen ones end up
 * compacted at the front; returns how many there are.
 */
static size_t select_neighbors(hnsw_ctx *c, hnsw_cand *cands, size_t k0,
                               size_t n, size_t mmax)
{
    const hnsw *h = c->h;
    if (n <= mmax)
        return n;
    size_t k = k0;
    for (size_t i = k0; i < n && k < mmax; i++) {
        const float *v = hnsw__vec(c, cands[i].id);
        float vn = hnsw__norm(h, v);
        int keep = 1;
        for (size_t j = 0; j < k && keep; j++)
            keep = !(pair_dist(c, v, vn, cands[j].id) < cands[i].d);
        if (keep)
            cands[k++] = cands[i];
    }
    return k;
}

/* ---- Algorithm 1 --------------------------------------------------------- */

/* Set q's list at layer lc to the chosen neighbours nb[0..ns). If other
 * threads linked themselves to q meanwhile (q reached through them), the
 * list is not empty: merge and select again rather than drop them. */
static void set_links(hnsw_ctx *c, uint32_t q, int lc, const hnsw_cand *nb,
                      size_t ns)
{
    hnsw *h = (hnsw *)c->h;
    hnsw_scratch *sc = c->sc;
    uint32_t *l = hnsw__links(h, q, lc);
    hnsw__lock(c, q);
    if (l[0] == 0) {
        write_list(l, nb, ns);
    } else {
        size_t n = 0;
        hnsw__visit_begin(sc);
        hnsw__visit(sc, q);
        for (size_t i = 0; i < ns; i++) {
            sc->sel[n++] = nb[i];
            hnsw__visit(sc, nb[i].id);
        }
        size_t from = n;
        for (uint32_t j = 0; j < l[0]; j++) {
            uint32_t id = l[1 + j];
            if (hnsw__visited(sc, id) || h->state[id] != HNSW_LIVE)
                continue;
            hnsw__visit(sc, id);
            sc->sel[n++].id = id;
        }
        score_sel(c, c->q, from, n);
        sort_cands(sc->sel, n);
        n = select_neighbors(c, sc->sel, 0, n, hnsw__mmax(h, lc));
        write_list(l, sc->sel, n);
    }
    hnsw__unlock(c, q);
}

/* Add the reverse link e -> q (Algorithm 1, lines 11-16): append while
 * e has room, else shrink e's list with Algorithm 4 over its links and q.
 * Links to deleted nodes are dropped on the way. */
static void add_link(hnsw_ctx *c, uint32_t e, int lc, uint32_t q, float dq)
{
    hnsw *h = (hnsw *)c->h;
    hnsw_scratch *sc = c->sc;
    uint32_t mmax = hnsw__mmax(h, lc);
    uint32_t *l = hnsw__links(h, e, lc);
    hnsw__lock(c, e);
    uint32_t cnt = l[0];
    if (list_has(l, q)) {
        hnsw__unlock(c, e);
        return;
    }
    if (cnt < mmax) {
        l[1 + cnt] = q;
        l[0] = cnt + 1;
        hnsw__unlock(c, e);
        return;
    }
    size_t n = 0;
    for (uint32_t j = 0; j < cnt; j++)
        if (h->state[l[1 + j]] == HNSW_LIVE)
            sc->sel[n++].id = l[1 + j];
    score_sel(c, hnsw__vec(c, e), 0, n);
    sc->sel[n].d = dq;
    sc->sel[n++].id = q;
    sort_cands(sc->sel, n);
    n = select_neighbors(c, sc->sel, 0, n, mmax);
    write_list(l, sc->sel, n);
    hnsw__unlock(c, e);
}

/*
 * INSERT (Algorithm 1) of node q, whose level, state and (empty) lists
 * were set up before. glock guards the entry point in a parallel build:
 * it is held just long enough to read the entry point, or for the whole
 * insertion when q will become the new top (so only one thread at a time
 * can raise the graph).
 */
static void insert_one(hnsw_ctx *c, pthread_mutex_t *glock, uint32_t q)
{
    hnsw *h = (hnsw *)c->h;
    hnsw_scratch *sc = c->sc;
    hnsw_cand nb[256]; /* m <= 256 */
    int L = h->level[q];
    hnsw__set_query(c, hnsw__vec(c, q));
    if (glock != NULL)
        pthread_mutex_lock(glock);
    uint32_t ep = h->entry;
    int top = h->top;
    int hold = L > top;
    if (glock != NULL && !hold)
        pthread_mutex_unlock(glock);
    if (ep == HNSW_NONE) {
        h->entry = q;
        h->top = L;
        if (glock != NULL)
            pthread_mutex_unlock(glock);
        return;
    }
    float dep = pair_dist(c, c->q, c->qn, ep);
    /* Lines 5-7: greedy descent through the layers above q's level. */
    for (int lc = top; lc > L; lc--)
        hnsw__greedy(c, lc, &ep, &dep);
    /* Lines 8-17: at each layer q lives on, find ef_construction
     * candidates, link to the heuristic's choice, and link back. */
    for (int lc = L < top ? L : top; lc >= 0; lc--) {
        hnsw__visit_begin(sc);
        hnsw__visit(sc, q);
        hnsw__visit(sc, ep);
        hnsw__seed(c, ep, dep, 1);
        hnsw__search_layer(c, lc, h->ef_construction, NULL);
        size_t nw = hnsw__drain_sorted(sc, sc->sel);
        ep = sc->sel[0].id; /* nearest: the next layer's entry */
        dep = sc->sel[0].d;
        size_t ns = select_neighbors(c, sc->sel, 0, nw, h->m);
        memcpy(nb, sc->sel, ns * sizeof *nb);
        set_links(c, q, lc, nb, ns);
        for (size_t i = 0; i < ns; i++)
            add_link(c, nb[i].id, lc, q, nb[i].d);
    }
    if (hold) {
        h->entry = q;
        h->top = L;
        if (glock != NULL)
            pthread_mutex_unlock(glock);
    }
}

/* ---- resources of one write ------------------------------------------- */

typedef struct work {
    hnsw_scratch *sc[HNSW_POOL];
    int nth;
    unsigned char *locks; /* per-node spin locks, parallel insert */
    uint32_t *queue;      /* BFS queue of the reachability repair */
    uint64_t *reached;    /* BFS marks */
} work;

static void work_end(hnsw *h, work *w)
{
    for (int t = 0; t < w->nth; t++)
        hnsw__scratch_put(h, w->sc[t]);
    h->host->free(w->locks);
    h->host->free(w->queue);
    h->host->free(w->reached);
    memset(w, 0, sizeof *w);
}

/* Reserve scratch for nth threads, and optionally node locks and the
 * BFS buffers, sized for every node id below h->cap. */
static int work_begin(hnsw *h, work *w, int nth, int locks, int bfs)
{
    memset(w, 0, sizeof *w);
    if (nth > HNSW_POOL / 2)
        nth = HNSW_POOL / 2;
    for (; w->nth < nth; w->nth++) {
        hnsw_scratch *sc = hnsw__scratch_get(h);
        w->sc[w->nth] = sc;
        if (sc == NULL ||
            hnsw__scratch_fit(h, sc, h->ef_construction, 0, sel_need(h)))
            goto fail;
    }
    if (locks && (w->locks = h->host->calloc(h->cap, 1)) == NULL)
        goto fail;
    if (bfs) {
        w->queue = h->host->alloc((size_t)h->cap * sizeof *w->queue);
        w->reached = h->host->alloc(((size_t)h->cap / 64 + 1) * 8);
        if (w->queue == NULL || w->reached == NULL)
            goto fail;
    }
    return 0;
fail:
    w->nth += w->nth < nth; /* put back the one that failed to fit */
    work_end(h, w);
    return IQDB_ENOMEM;
}

static int threads(const hnsw *h, size_t work_items)
{
    if (work_items < PAR_MIN)
        return 1;
    int n = h->host->max_threads();
    return n < 1 ? 1 : n;
}

/* ---- reachability -------------------------------------------------------- */

static inline int is_reached(const uint64_t *r, uint32_t n)
{
    return (r[n >> 6] >> (n & 63)) & 1;
}

/* Mark everything reachable at level 0 from start (if not marked). */
static void bfs(const hnsw *h, uint64_t *reached, uint32_t *queue,
                uint32_t start)
{
    if (is_reached(reached, start))
        return;
    size_t head = 0, tail = 0;
    reached[start >> 6] |= (uint64_t)1 << (start & 63);
    queue[tail++] = start;
    while (head < tail) {
        const uint32_t *l = hnsw__links(h, queue[head++], 0);
        for (uint32_t i = 0; i < l[0]; i++) {
            uint32_t id = l[1 + i];
            if (h->state[id] != HNSW_LIVE || is_reached(reached, id))
                continue;
            reached[id >> 6] |= (uint64_t)1 << (id & 63);
            queue[tail++] = id;
        }
    }
}

/* Search the reachable graph for z's nearest nodes; nearest first in
 * sc->sel, returns how many. The level-0 search must start from a
 * reached node (the upper layers may lead elsewhere): everything it can
 * walk to is then reached too. */
static size_t near_reachable(hnsw_ctx *c, const uint64_t *reached,
                             uint32_t z)
{
    const hnsw *h = c->h;
    hnsw_scratch *sc = c->sc;
    hnsw__set_query(c, hnsw__vec(c, z));
    uint32_t cur = h->entry;
    float dcur = pair_dist(c, c->q, c->qn, cur);
    for (int lc = h->top; lc > 0; lc--)
        hnsw__greedy(c, lc, &cur, &dcur);
    if (!is_reached(reached, cur)) {
        cur = h->entry;
        dcur = pair_dist(c, c->q, c->qn, cur);
    }
    hnsw__visit_begin(sc);
    hnsw__visit(sc, z);
    hnsw__visit(sc, cur);
    hnsw__seed(c, cur, dcur, 1);
    hnsw__search_layer(c, 0, h->ef_construction, NULL);
    return hnsw__drain_sorted(sc, sc->sel);
}

/* Make unreached live node z reachable: link to it from the nearest
 * reachable node that has room at level 0 (level-0 lists are rarely
 * full: the heuristic keeps far fewer than 2m). If none has room, take
 * the nearest one's last link, and report it so a later round can check
 * that the displaced node is still reachable. */
static void link_unreached(hnsw_ctx *c, const uint64_t *reached, uint32_t z,
                           int *displaced)
{
    hnsw *h = (hnsw *)c->h;
    hnsw_scratch *sc = c->sc;
    size_t n = near_reachable(c, reached, z);
    if (n == 0)
        return;
    size_t i = 0;
    while (i < n && hnsw__links(h, sc->sel[i].id, 0)[0] >= h->m0)
        i++;
    uint32_t *ly = hnsw__links(h, sc->sel[i < n ? i : 0].id, 0);
    if (i < n) {
        ly[1 + ly[0]++] = z;
    } else {
        ly[ly[0]] = z;
        *displaced = 1;
    }
    uint32_t *lz = hnsw__links(h, z, 0);
    for (uint32_t j = 0; j < lz[0]; j++)
        if (h->state[lz[1 + j]] == HNSW_LIVE)
            return;
    n = select_neighbors(c, sc->sel, 0, n, h->m);
    write_list(lz, sc->sel, n);
}

/*
 * The heuristic can leave a node without any link into it (every node
 * that linked to it later found a better-spread choice), and deletes make
 * that likelier. A BFS over level 0 from the entry point finds such nodes;
 * each gets a link from its nearest reachable node, then the BFS goes on
 * from it. Level 0 holds every node, so this is what makes each live node
 * findable.
 */
static void reconnect(hnsw *h, work *w)
{
    if (h->entry == HNSW_NONE)
        return;
    hnsw_ctx c;
    hnsw__ctx_init(&c, h, w->sc[0]);
    for (int round = 0; round < RECONNECT_ROUNDS; round++) {
        int displaced = 0;
        memset(w->reached, 0, ((size_t)h->limit / 64 + 1) * 8);
        bfs(h, w->reached, w->queue, h->entry);
        for (uint32_t z = 0; z < h->limit; z++) {
            if (h->state[z] != HNSW_LIVE || is_reached(w->reached, z))
                continue;
            link_unreached(&c, w->reached, z, &displaced);
            bfs(h, w->reached, w->queue, z);
        }
        if (!displaced)
            break;
    }
}

/* ---- add ----------------------------------------------------------------- */

int hnsw__add(hnsw *h, const uint64_t *slots, size_t n)
{
    const iqdb_host *host = h->host;
    if (n == 0)
        return 0;
    uint64_t maxs = 0;
    for (size_t i = 0; i < n; i++) {
        if (slots[i] >= HNSW_MAX_NODES)
            return host->set_error(h->hctx, IQDB_ERANGE,
                                   "hnsw: slot %llu is beyond the index's "
                                   "limit of %llu nodes",
                                   (unsigned long long)slots[i],
                                   (unsigned long long)HNSW_MAX_NODES);
        if (slots[i] > maxs)
            maxs = slots[i];
    }
    if (hnsw__grow(h, maxs + 1) != 0)
        return host->set_error(h->hctx, IQDB_ENOMEM,
                               "hnsw: out of memory growing the graph to "
                               "%llu nodes",
                               (unsigned long long)maxs + 1);
    int nth = threads(h, n);
    int bulk = n >= BULK_MIN && n * 16 >= h->nlive;
    work w;
    if (work_begin(h, &w, nth, nth > 1, bulk) != 0)
        return host->set_error(h->hctx, IQDB_ENOMEM,
                               "hnsw: out of memory for build scratch");

    /* Reserve: which slots are new, their levels and upper blocks. */
    uint64_t rng0 = h->rng;
    size_t ntodo = 0;
    uint32_t *todo = host->alloc(n * sizeof *todo);
    uint8_t *tlv = host->alloc(n);
    uint32_t **blk = host->calloc(n, sizeof *blk);
    if (todo == NULL || tlv == NULL || blk == NULL)
        goto fail;
    hnsw_scratch *sc0 = w.sc[0];
    hnsw__visit_begin(sc0); /* marks duplicates within the batch */
    for (size_t i = 0; i < n; i++) {
        uint32_t s = (uint32_t)slots[i];
        if (h->state[s] == HNSW_LIVE || hnsw__visited(sc0, s))
            continue;
        hnsw__visit(sc0, s);
        /* A tombstone keeps its level: stale links to it stay valid. */
        int lv = h->state[s] == HNSW_DELETED ? h->level[s] : draw_level(h);
        if (h->state[s] != HNSW_DELETED && lv > 0) {
            blk[ntodo] = host->calloc((size_t)lv * (1 + (size_t)h->m),
                                      sizeof(uint32_t));
            if (blk[ntodo] == NULL)
                goto fail;
        }
        tlv[ntodo] = (uint8_t)lv;
        todo[ntodo++] = s;
    }

    /* Commit: from here on nothing fails. */
    for (size_t i = 0; i < ntodo; i++) {
        uint32_t q = todo[i];
        if (h->state[q] == HNSW_DELETED) {
            h->ntomb--;
            for (int l = 0; l <= h->level[q]; l++)
                hnsw__links(h, q, l)[0] = 0;
        } else {
            h->level[q] = tlv[i];
            h->upper[q] = blk[i];
            h->upper_bytes +=
                (size_t)tlv[i] * (1 + (size_t)h->m) * sizeof(uint32_t);
        }
        h->state[q] = HNSW_LIVE;
    }
    h->nlive += ntodo;
    if (maxs + 1 > h->limit)
        h->limit = (uint32_t)(maxs + 1);
    if (h->codes != NULL) {
        hnsw_ctx c;
        hnsw__ctx_init(&c, h, w.sc[0]);
        for (size_t i = 0; i < ntodo; i++)
            hnsw__encode(&c, todo[i]);
    }

    if (w.nth == 1 || ntodo < PAR_MIN) {
        hnsw_ctx c;
        hnsw__ctx_init(&c, h, w.sc[0]);
        for (size_t i = 0; i < ntodo; i++)
            insert_one(&c, NULL, todo[i]);
    } else {
        /* A pthread mutex rather than an omp_lock_t: same cost, and
         * ThreadSanitizer understands it. */
        pthread_mutex_t glock = PTHREAD_MUTEX_INITIALIZER;
        HNSW_TSAN_RELEASE(h);
#pragma omp parallel num_threads(w.nth)
        {
            HNSW_TSAN_ACQUIRE(h);
            hnsw_ctx c;
            hnsw__ctx_init(&c, h, w.sc[omp_get_thread_num()]);
            c.locks = w.locks;
#pragma omp for schedule(dynamic, 16)
            for (size_t i = 0; i < ntodo; i++)
                insert_one(&c, &glock, todo[i]);
            HNSW_TSAN_RELEASE(h);
        }
        HNSW_TSAN_ACQUIRE(h);
        pthread_mutex_destroy(&glock);
    }
    if (bulk)
        reconnect(h, &w);
    host->free(todo);
    host->free(tlv);
    host->free(blk);
    work_end(h, &w);
    return 0;
fail:
    h->rng = rng0;
    if (blk != NULL)
        for (size_t i = 0; i < n; i++)
            host->free(blk[i]);
    host->free(todo);
    host->free(tlv);
    host->free(blk);
    work_end(h, &w);
    return host->set_error(h->hctx, IQDB_ENOMEM,
                           "hnsw: out of memory adding %zu nodes", n);
}

/* ---- delete and repair --------------------------------------------------- */

/* Repair y's list at layer l (y a live node whose list held the deleted
 * x): y keeps its live links, and the room x left is filled from x's
 * links by Algorithm 4, so y reconnects to the nodes it used to reach
 * through x. */
static void repair_one(hnsw_ctx *c, uint32_t y, uint32_t x, int l)
{
    const hnsw *h = c->h;
    hnsw_scratch *sc = c->sc;
    uint32_t *ly = hnsw__links(h, y, l);
    const uint32_t *lx = hnsw__links(h, x, l);
    size_t n = 0;
    hnsw__visit_begin(sc);
    hnsw__visit(sc, y);
    hnsw__visit(sc, x);
    for (uint32_t j = 0; j < ly[0]; j++) {
        uint32_t id = ly[1 + j];
        if (hnsw__visited(sc, id) || h->state[id] != HNSW_LIVE)
            continue;
        hnsw__visit(sc, id);
        sc->sel[n++].id = id;
    }
    size_t kept = n;
    for (uint32_t j = 0; j < lx[0]; j++) {
        uint32_t id = lx[1 + j];
        if (hnsw__visited(sc, id) || h->state[id] != HNSW_LIVE)
            continue;
        hnsw__visit(sc, id);
        sc->sel[n++].id = id;
    }
    score_sel(c, hnsw__vec(c, y), kept, n);
    sort_cands(sc->sel + kept, n - kept);
    n = select_neighbors(c, sc->sel, kept, n, hnsw__mmax(h, l));
    write_list(ly, sc->sel, n);
}

/* After the repair, each live node that x linked to at level 0 should be
 * linked from one of x's other neighbours still: if none chose it, x may have
 * been its only way in. Link it from the nearest of them with room. */
static void keep_in_links(hnsw_ctx *c, uint32_t x)
{
    const hnsw *h = c->h;
    const uint32_t *lx = hnsw__links(h, x, 0);
    for (uint32_t i = 0; i < lx[0]; i++) {
        uint32_t z = lx[1 + i];
        if (h->state[z] != HNSW_LIVE)
            continue;
        int linked = 0;
        for (uint32_t j = 0; j < lx[0] && !linked; j++) {
            uint32_t y = lx[1 + j];
            linked = y != z && h->state[y] == HNSW_LIVE &&
                     list_has(hnsw__links(h, y, 0), z);
        }
        if (linked)
            continue;
        const float *vz = hnsw__vec(c, z);
        float zn = hnsw__norm(h, vz);
        uint32_t best = HNSW_NONE;
        float bd = 0;
        for (uint32_t j = 0; j < lx[0]; j++) {
            uint32_t y = lx[1 + j];
            if (y == z || h->state[y] != HNSW_LIVE ||
                hnsw__links(h, y, 0)[0] >= h->m0)
                continue;
            float d = pair_dist(c, vz, zn, y);
            if (best == HNSW_NONE || d < bd) {
                best = y;
                bd = d;
            }
        }
        if (best != HNSW_NONE) {
            uint32_t *ly = hnsw__links(h, best, 0);
            ly[1 + ly[0]++] = z;
        }
    }
}

/* Repair around one deleted node, at every layer it lived on. Only the
 * neighbours x links to are visited; nodes that linked to x without x
 * linking back keep a stale link (skipped by traversal) until a sweep. */
static void local_repair(hnsw_ctx *c, uint32_t x)
{
    const hnsw *h = c->h;
    for (int l = h->level[x]; l >= 0; l--) {
        const uint32_t *lx = hnsw__links(h, x, l);
        for (uint32_t i = 0; i < lx[0]; i++) {
            uint32_t y = lx[1 + i];
            if (h->state[y] == HNSW_LIVE &&
                list_has(hnsw__links(h, y, l), x))
                repair_one(c, y, x, l);
        }
    }
    keep_in_links(c, x);
}

/* Sweep helper: y keeps its live links at layer l and fills the room
 * its deleted neighbours leave from their live links (two hops through
 * tombstones), by Algorithm 4. */
static void rebuild_list(hnsw_ctx *c, uint32_t y, int l)
{
    const hnsw *h = c->h;
    hnsw_scratch *sc = c->sc;
    uint32_t *ly = hnsw__links(h, y, l);
    size_t n = 0, cap = sweep_cap(h);
    hnsw__visit_begin(sc);
    hnsw__visit(sc, y);
    for (uint32_t j = 0; j < ly[0]; j++) {
        uint32_t id = ly[1 + j];
        if (hnsw__visited(sc, id))
            continue;
        hnsw__visit(sc, id);
        if (h->state[id] == HNSW_LIVE)
            sc->sel[n++].id = id;
    }
    size_t kept = n;
    for (uint32_t j = 0; j < ly[0]; j++) {
        uint32_t d = ly[1 + j];
        if (h->state[d] != HNSW_DELETED)
            continue;
        const uint32_t *ld = hnsw__links(h, d, l);
        for (uint32_t a = 0; a < ld[0] && n < cap; a++) {
            uint32_t id = ld[1 + a];
            if (hnsw__visited(sc, id))
                continue;
            hnsw__visit(sc, id);
            if (h->state[id] == HNSW_LIVE) {
                sc->sel[n++].id = id;
                continue;
            }
            const uint32_t *l2 = hnsw__links(h, id, l);
            for (uint32_t b = 0; b < l2[0] && n < cap; b++) {
                uint32_t id2 = l2[1 + b];
                if (hnsw__visited(sc, id2))
                    continue;
                hnsw__visit(sc, id2);
                if (h->state[id2] == HNSW_LIVE)
                    sc->sel[n++].id = id2;
            }
        }
    }
    score_sel(c, hnsw__vec(c, y), kept, n);
    sort_cands(sc->sel + kept, n - kept);
    n = select_neighbors(c, sc->sel, kept, n, hnsw__mmax(h, l));
    write_list(ly, sc->sel, n);
}

/*
 * Rewrite every live list that points to a tombstone, then free the
 * tombstones. Each live node reads only its own lists and those of
 * tombstones (which nobody writes here), so nodes are repaired in
 * parallel without locks.
 */
static void sweep(hnsw *h, work *w)
{
    uint32_t limit = h->limit;
    HNSW_TSAN_RELEASE(h);
#pragma omp parallel num_threads(w->nth) if (w->nth > 1)
    {
        HNSW_TSAN_ACQUIRE(h);
        hnsw_ctx c;
        hnsw__ctx_init(&c, h, w->sc[omp_get_thread_num()]);
#pragma omp for schedule(dynamic, 64)
        for (uint32_t y = 0; y < limit; y++) {
            if (h->state[y] != HNSW_LIVE)
                continue;
            for (int l = 0; l <= h->level[y]; l++) {
                const uint32_t *ly = hnsw__links(h, y, l);
                uint32_t j = 0;
                while (j < ly[0] && h->state[ly[1 + j]] == HNSW_LIVE)
                    j++;
                if (j < ly[0])
                    rebuild_list(&c, y, l);
            }
        }
        HNSW_TSAN_RELEASE(h);
    }
    HNSW_TSAN_ACQUIRE(h);
    for (uint32_t y = 0; y < limit; y++) {
        if (h->state[y] != HNSW_DELETED)
            continue;
        hnsw__upper_free(h, y);
        hnsw__links(h, y, 0)[0] = 0;
        h->level[y] = 0;
        h->state[y] = HNSW_ABSENT;
    }
    h->ntomb = 0;
}

/* The entry point x was deleted: prefer a live neighbour on its top
 * layer (same level), else scan for the highest live node. */
static void replace_entry(hnsw *h, uint32_t x)
{
    if (h->top > 0) {
        const uint32_t *l = hnsw__links(h, x, h->top);
        for (uint32_t i = 0; i < l[0]; i++)
            if (h->state[l[1 + i]] == HNSW_LIVE) {
                h->entry = l[1 + i];
                return;
            }
    }
    hnsw__pick_entry(h);
}

int hnsw__remove(hnsw *h, const uint64_t *slots, size_t n)
{
    size_t live = 0;
    for (size_t i = 0; i < n; i++)
        live += slots[i] < h->limit && h->state[slots[i]] == HNSW_LIVE;
    if (live == 0)
        return 0;
    /* Many tombstones: one sweep beats repairing each. */
    uint64_t rest = h->nlive > live ? h->nlive - live : 0;
    int big = (h->ntomb + live) * 10 >= rest + 1;
    /* The scratch usually exists already at the right size, so a small
     * remove allocates nothing: the core relies on remove to undo an add
     * when an update fails. */
    work w;
    if (big && work_begin(h, &w, threads(h, h->limit), 0, 1) != 0)
        big = 0; /* no room for the sweep: repair locally instead */
    if (!big && work_begin(h, &w, 1, 0, 0) != 0)
        return h->host->set_error(h->hctx, IQDB_ENOMEM,
                                  "hnsw: out of memory removing %zu nodes",
                                  n);
    hnsw_ctx c;
    hnsw__ctx_init(&c, h, w.sc[0]);
    for (size_t i = 0; i < n; i++) {
        if (slots[i] >= h->limit || h->state[slots[i]] != HNSW_LIVE)
            continue;
        uint32_t x = (uint32_t)slots[i];
        h->state[x] = HNSW_DELETED;
        h->nlive--;
        h->ntomb++;
        if (x == h->entry)
            replace_entry(h, x);
        if (!big)
            local_repair(&c, x);
    }
    if (big) {
        sweep(h, &w);
        reconnect(h, &w);
    }
    work_end(h, &w);
    return 0;
}

int hnsw__optimize(hnsw *h)
{
    if (h->limit == 0)
        return 0;
    work w;
    if (work_begin(h, &w, threads(h, h->limit), 0, 1) != 0)
        return h->host->set_error(h->hctx, IQDB_ENOMEM,
                                  "hnsw: out of memory optimizing");
    if (h->ntomb > 0)
        sweep(h, &w);
    if (h->entry == HNSW_NONE || h->state[h->entry] != HNSW_LIVE)
        hnsw__pick_entry(h);
    reconnect(h, &w);
    work_end(h, &w);
    return 0;
}
