/*
 * plugins/hnsw/hnsw_persist.c - saving and loading the graph.
 *
 * Format version 1 (HNSW_FORMAT_VERSION). All integers little-endian.
 *
 *   offset  size  field
 *   0       8     magic "IQHNSW\r\n"
 *   8       4     format version (1)
 *   12      4     dim (must equal the index's)
 *   16      4     metric (must equal the index's)
 *   20      4     m (2..256; level 0 holds 2m links)
 *   24      4     ef_construction (1..1000000)
 *   28      4     limit: every node id is below it
 *   32      4     entry node, 0xffffffff when the graph is empty
 *   36      4     top level (the entry's), 0xffffffff when empty
 *   40      8     live node count
 *   48      8     deleted node (tombstone) count
 *   56      8     level generator state
 *   64            limit node records, for ids 0, 1, ..., limit - 1:
 *                   1  state: 0 absent, 1 live, 2 deleted
 *                 and unless absent:
 *                   1  level L (0..30)
 *                   then for each layer l = 0..L:
 *                     2      count (at most 2m at layer 0, m above)
 *                     4 * count  neighbour ids
 *   end - 8 8     FNV-1a 64 hash of every byte before it
 *
 * load() checks everything before the index uses any of it: the header
 * against the index and the store, every count against its layer's
 * bound, every neighbour id (in range, not the node itself, not absent,
 * no repeats, on a node whose level reaches the layer), the counts of
 * live and deleted nodes, the entry point, the hash, and that the section
 * ends exactly there. It allocates only after checking that the bytes
 * left can hold what the allocation is for (at least one byte per node,
 * two per layer), that the store holds every node id (so the node arrays
 * are bounded by what the core already holds), and that the levels add
 * up to something a real graph could have; it builds the graph aside, so
 * a failed load leaves the index as it was.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hnsw_int.h"

#define MAGIC "IQHNSW\r\n"
#define HEADER_SIZE 64
#define BUF_SIZE 65536
#define NONE32 0xffffffffu

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#define FNV_INIT 0xcbf29ce484222325ull

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* ---- save ---------------------------------------------------------------- */

typedef struct wr {
    const iqdb_writer *w;
    unsigned char *buf;
    size_t len;
    uint64_t hash;
    int err;
} wr;

static void wr_flush(wr *o)
{
    if (o->err == 0 && o->len > 0) {
        o->hash = fnv(o->hash, o->buf, o->len);
        o->err = o->w->write(o->w->ctx, o->buf, o->len);
    }
    o->len = 0;
}

static void wr_put(wr *o, const void *p, size_t n)
{
    const unsigned char *s = p;
    while (n > 0 && o->err == 0) {
        size_t k = BUF_SIZE - o->len < n ? BUF_SIZE - o->len : n;
        memcpy(o->buf + o->len, s, k);
        o->len += k;
        s += k;
        n -= k;
        if (o->len == BUF_SIZE)
            wr_flush(o);
    }
}

int hnsw__save(hnsw *h, const iqdb_writer *w)
{
    wr o = {w, h->host->alloc(BUF_SIZE), 0, FNV_INIT, 0};
    if (o.buf == NULL)
        return h->host->set_error(h->hctx, IQDB_ENOMEM,
                                  "hnsw: out of memory saving");
    unsigned char hd[HEADER_SIZE];
    memcpy(hd, MAGIC, 8);
    put32(hd + 8, HNSW_FORMAT_VERSION);
    put32(hd + 12, h->dim);
    put32(hd + 16, (uint32_t)h->metric);
    put32(hd + 20, h->m);
    put32(hd + 24, h->ef_construction);
    put32(hd + 28, h->limit);
    put32(hd + 32, h->entry);
    put32(hd + 36, h->top < 0 ? NONE32 : (uint32_t)h->top);
    put64(hd + 40, h->nlive);
    put64(hd + 48, h->ntomb);
    put64(hd + 56, h->rng);
    wr_put(&o, hd, sizeof hd);
    unsigned char rec[4];
    for (uint32_t n = 0; n < h->limit && o.err == 0; n++) {
        unsigned char st[2] = {h->state[n], h->level[n]};
        wr_put(&o, st, st[0] == HNSW_ABSENT ? 1 : 2);
        if (st[0] == HNSW_ABSENT)
            continue;
        for (int l = 0; l <= h->level[n]; l++) {
            const uint32_t *lk = hnsw__links(h, n, l);
            rec[0] = (unsigned char)lk[0];
            rec[1] = (unsigned char)(lk[0] >> 8);
            wr_put(&o, rec, 2);
            for (uint32_t i = 0; i < lk[0]; i++) {
                put32(rec, lk[1 + i]);
                wr_put(&o, rec, 4);
            }
        }
    }
    wr_flush(&o);
    unsigned char tr[8];
    put64(tr, o.hash);
    if (o.err == 0)
        o.err = w->write(w->ctx, tr, sizeof tr);
    h->host->free(o.buf);
    if (o.err != 0)
        return h->host->set_error(h->hctx, o.err,
                                  "hnsw: writing the graph failed");
    return 0;
}

/* ---- load ---------------------------------------------------------------- */

typedef struct rd {
    const iqdb_reader *r;
    unsigned char *buf;
    size_t pos, len;
    uint64_t left; /* bytes of the section not yet read into buf */
    uint64_t hash; /* of every byte taken */
    uint64_t off;  /* section offset of buf[pos], for messages */
} rd;

/* Bytes not yet taken. */
static uint64_t rd_avail(const rd *d)
{
    return d->left + (d->len - d->pos);
}

/* n (<= BUF_SIZE) bytes at *p, hashed. 0, IQDB_ECORRUPT at the end of
 * the section, or the reader's code. */
static int rd_take(rd *d, size_t n, const unsigned char **p)
{
    if (d->len - d->pos < n) {
        if (rd_avail(d) < n)
            return IQDB_ECORRUPT;
        memmove(d->buf, d->buf + d->pos, d->len - d->pos);
        d->len -= d->pos;
        d->pos = 0;
        size_t want = BUF_SIZE - d->len;
        if (want > d->left)
            want = (size_t)d->left;
        int r = d->r->read(d->r->ctx, d->buf + d->len, want);
        if (r != 0)
            return r;
        d->left -= want;
        d->len += want;
    }
    *p = d->buf + d->pos;
    d->hash = fnv(d->hash, *p, n);
    d->pos += n;
    d->off += n;
    return 0;
}

/* The graph part of an hnsw, built aside during a load. */
static void graph_free(hnsw *g)
{
    if (g->upper != NULL)
        for (uint32_t n = 0; n < g->cap; n++)
            g->host->free(g->upper[n]);
    g->host->free(g->links0);
    g->host->free(g->upper);
    g->host->free(g->level);
    g->host->free(g->state);
    g->host->aligned_free(g->codes);
    g->codes = NULL;
    g->links0 = NULL;
    g->upper = NULL;
    g->level = NULL;
    g->state = NULL;
    g->cap = g->limit = 0;
    g->upper_bytes = 0;
}

#define BAD(...)                                                            \
    do {                                                                    \
        r = h->host->set_error(h->hctx, IQDB_ECORRUPT, __VA_ARGS__);        \
        goto out;                                                           \
    } while (0)

/* Take n bytes or fail the load (a read error keeps its own code). */
#define TAKE(n, p)                                                          \
    do {                                                                    \
        int rc_ = rd_take(d, (n), (p));                                     \
        if (rc_ == IQDB_ECORRUPT)                                           \
            BAD("hnsw: graph section truncated at byte %llu",               \
                (unsigned long long)d->off);                                \
        if (rc_ != 0) {                                                     \
            r = h->host->set_error(h->hctx, rc_,                            \
                                   "hnsw: reading the graph failed");       \
            goto out;                                                       \
        }                                                                   \
    } while (0)

/* Read the node records into g. */
static int read_nodes(hnsw *h, hnsw *g, rd *d, uint64_t slot_limit)
{
    int r = 0;
    const unsigned char *p;
    /* Levels follow P(level >= l) = m^-l, so the upper layers of all
     * nodes add up to about limit / (m - 1): twice the limit (plus room
     * for tiny graphs) is never reached by a real graph, and bounds the
     * upper-layer memory a hostile one can make us allocate. */
    uint64_t layers = 0, max_layers = 2 * (uint64_t)g->limit + 64;
    for (uint32_t n = 0; n < g->limit; n++) {
        TAKE(1, &p);
        uint8_t st = p[0];
        if (st > HNSW_DELETED)
            BAD("hnsw: node %u has bad state %u", n, st);
        if (st == HNSW_ABSENT)
            continue;
        TAKE(1, &p);
        uint8_t lv = p[0];
        if (lv > HNSW_MAX_LEVEL)
            BAD("hnsw: node %u has level %u (most is %d)", n, lv,
                HNSW_MAX_LEVEL);
        if (st == HNSW_LIVE && n >= slot_limit)
            BAD("hnsw: live node %u is beyond the store's %llu slots", n,
                (unsigned long long)slot_limit);
        layers += lv;
        if (layers > max_layers)
            BAD("hnsw: implausibly many upper layers by node %u", n);
        /* Each layer needs at least its 2-byte count. */
        if (rd_avail(d) < 2 * ((uint64_t)lv + 1))
            BAD("hnsw: graph section truncated at node %u", n);
        g->state[n] = st;
        g->level[n] = lv;
        if (hnsw__upper_alloc(g, n, lv) != 0) {
            r = h->host->set_error(h->hctx, IQDB_ENOMEM,
                                   "hnsw: out of memory loading");
            goto out;
        }
        for (int l = 0; l <= lv; l++) {
            TAKE(2, &p);
            uint32_t cnt = (uint32_t)p[0] | (uint32_t)p[1] << 8;
            if (cnt > hnsw__mmax(g, l))
                BAD("hnsw: node %u has %u links at layer %d (most is %u)",
                    n, cnt, l, hnsw__mmax(g, l));
            uint32_t *lk = hnsw__links(g, n, l);
            TAKE((size_t)cnt * 4, &p);
            for (uint32_t i = 0; i < cnt; i++)
                lk[1 + i] = get32(p + 4 * i);
            lk[0] = cnt;
        }
    }
out:
    return r;
}

/* Check every link and the counts once all nodes are known. */
static int check_graph(hnsw *h, hnsw *g, uint32_t *stamp)
{
    int r = 0;
    uint64_t live = 0, dead = 0;
    int top = -1;
    uint32_t tick = 0;
    for (uint32_t n = 0; n < g->limit; n++) {
        if (g->state[n] == HNSW_ABSENT)
            continue;
        if (g->state[n] == HNSW_LIVE) {
            live++;
            if ((int)g->level[n] > top)
                top = g->level[n];
        } else {
            dead++;
        }
        for (int l = 0; l <= g->level[n]; l++) {
            const uint32_t *lk = hnsw__links(g, n, l);
            if (++tick == 0) {
                memset(stamp, 0, (size_t)g->limit * sizeof *stamp);
                tick = 1;
            }
            for (uint32_t i = 0; i < lk[0]; i++) {
                uint32_t id = lk[1 + i];
                if (id >= g->limit || id == n ||
                    g->state[id] == HNSW_ABSENT || g->level[id] < l)
                    BAD("hnsw: node %u links to %u at layer %d, which is "
                        "out of range or not on that layer",
                        n, id, l);
                if (stamp[id] == tick)
                    BAD("hnsw: node %u links to %u twice at layer %d", n,
                        id, l);
                stamp[id] = tick;
            }
        }
    }
    if (live != g->nlive || dead != g->ntomb)
        BAD("hnsw: header counts %llu live and %llu deleted nodes, the "
            "graph has %llu and %llu",
            (unsigned long long)g->nlive, (unsigned long long)g->ntomb,
            (unsigned long long)live, (unsigned long long)dead);
    if (live == 0 ? g->entry != HNSW_NONE || g->top != -1
                  : g->entry >= g->limit ||
                        g->state[g->entry] != HNSW_LIVE ||
                        g->top != top || g->level[g->entry] != top)
        BAD("hnsw: bad entry point %u at level %d", g->entry, g->top);
out:
    return r;
}

int hnsw__load(hnsw *h, const iqdb_reader *rdr, uint32_t format_version)
{
    int r = 0;
    if (format_version != HNSW_FORMAT_VERSION)
        return h->host->set_error(h->hctx,
                                  format_version > HNSW_FORMAT_VERSION
                                      ? IQDB_ENOTSUP
                                      : IQDB_ECORRUPT,
                                  "hnsw: graph format version %u, this "
                                  "plugin reads version %u",
                                  format_version, HNSW_FORMAT_VERSION);
    rd dd = {rdr, h->host->alloc(BUF_SIZE), 0, 0, rdr->remaining, FNV_INIT,
             0};
    rd *d = &dd;
    hnsw g = *h; /* parameters and host; the graph is built fresh */
    g.links0 = NULL;
    g.upper = NULL;
    g.level = NULL;
    g.state = NULL;
    g.codes = NULL;
    g.cap = g.limit = 0;
    g.upper_bytes = 0;
    uint32_t *stamp = NULL;
    const unsigned char *p;
    if (d->buf == NULL) {
        r = h->host->set_error(h->hctx, IQDB_ENOMEM,
                               "hnsw: out of memory loading");
        goto out;
    }
    TAKE(HEADER_SIZE, &p);
    if (memcmp(p, MAGIC, 8) != 0 || get32(p + 8) != HNSW_FORMAT_VERSION)
        BAD("hnsw: not an hnsw graph of format version %u",
            HNSW_FORMAT_VERSION);
    if (get32(p + 12) != h->dim || get32(p + 16) != (uint32_t)h->metric)
        BAD("hnsw: graph saved for dim %u metric %u, the index has dim %u "
            "metric %d",
            get32(p + 12), get32(p + 16), h->dim, h->metric);
    uint32_t m = get32(p + 20), efc = get32(p + 24);
    if (m < 2 || m > 256 || efc < 1 || efc > 1000000)
        BAD("hnsw: graph saved with m %u, ef_construction %u (out of range)",
            m, efc);
    /* The graph's shape is fixed by the parameters it was built with. */
    g.m = m;
    g.m0 = 2 * m;
    g.ef_construction = efc;
    g.level_mult = 1.0 / log((double)m);
    uint32_t limit = get32(p + 28);
    g.entry = get32(p + 32);
    uint32_t top = get32(p + 36);
    if (top != NONE32 && top > HNSW_MAX_LEVEL)
        BAD("hnsw: graph claims top level %u (most is %d)", top,
            HNSW_MAX_LEVEL);
    g.top = top == NONE32 ? -1 : (int)top;
    g.nlive = get64(p + 40);
    g.ntomb = get64(p + 48);
    g.rng = get64(p + 56);
    /* Each node costs at least one byte, the trailer eight. */
    if ((uint64_t)limit + 8 > rd_avail(d) || limit >= HNSW_MAX_NODES)
        BAD("hnsw: graph claims %u nodes, the section has %llu bytes left",
            limit, (unsigned long long)rd_avail(d));
    if (g.nlive + g.ntomb > limit)
        BAD("hnsw: graph claims more nodes than its limit %u", limit);
    /* Node ids are the store's slots: the store must hold them all (which
     * also bounds the node arrays by what the core already holds). */
    iqdb_arena_layout lay = {sizeof lay, 0, 0, 0, NULL, 0};
    h->store->layout(h->store->ctx, &lay);
    if (limit > lay.slot_limit)
        BAD("hnsw: graph has nodes up to %u, the store only %llu slots",
            limit, (unsigned long long)lay.slot_limit);
    if (hnsw__grow(&g, limit) != 0) {
        r = h->host->set_error(h->hctx, IQDB_ENOMEM,
                               "hnsw: out of memory loading %u nodes", limit);
        goto out;
    }
    g.limit = limit;
    if ((r = read_nodes(h, &g, d, lay.slot_limit)) != 0)
        goto out;
    uint64_t sum = d->hash;
    TAKE(8, &p);
    if (get64(p) != sum)
        BAD("hnsw: graph hash mismatch (the section is corrupt)");
    if (rd_avail(d) != 0)
        BAD("hnsw: %llu stray bytes after the graph",
            (unsigned long long)rd_avail(d));
    stamp = h->host->calloc((size_t)limit + 1, sizeof *stamp);
    if (stamp == NULL) {
        r = h->host->set_error(h->hctx, IQDB_ENOMEM,
                               "hnsw: out of memory loading");
        goto out;
    }
    if ((r = check_graph(h, &g, stamp)) != 0)
        goto out;
    if (g.codes != NULL) {
        hnsw_ctx c;
        hnsw__ctx_init(&c, &g, NULL);
        for (uint32_t n = 0; n < g.limit; n++)
            if (g.state[n] == HNSW_LIVE)
                hnsw__encode(&c, n);
    }
    /* Success: the new graph replaces the old one. */
    graph_free(h);
    h->m = g.m;
    h->m0 = g.m0;
    h->ef_construction = g.ef_construction;
    h->level_mult = g.level_mult;
    h->rng = g.rng;
    h->cap = g.cap;
    h->limit = g.limit;
    h->links0 = g.links0;
    h->upper = g.upper;
    h->level = g.level;
    h->state = g.state;
    h->codes = g.codes;
    h->entry = g.entry;
    h->top = g.top;
    h->nlive = g.nlive;
    h->ntomb = g.ntomb;
    h->upper_bytes = g.upper_bytes;
    g.links0 = NULL;
    g.upper = NULL;
    g.level = NULL;
    g.state = NULL;
    g.codes = NULL;
    g.cap = 0;
out:
    graph_free(&g);
    h->host->free(stamp);
    h->host->free(dd.buf);
    return r;
}
