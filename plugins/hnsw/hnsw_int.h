/*
 * plugins/hnsw/hnsw_int.h - state shared by the HNSW plugin's files.
 *
 * The index is a Hierarchical Navigable Small World graph (Malkov and
 * Yashunin, "Efficient and robust approximate nearest neighbor search
 * using Hierarchical Navigable Small World graphs", IEEE TPAMI 2018; the
 * algorithm numbers in comments refer to that paper).
 *
 * Nodes are the core's slots, narrowed to uint32_t: a node id IS its slot,
 * so a vector is found by arithmetic on the arena layout and no id map is
 * needed. Slots must stay below HNSW_MAX_NODES (2^32 - 1; add() refuses
 * larger ones with IQDB_ERANGE). By default the index keeps no copy of
 * the vectors; with encoding=bf16 it keeps a bfloat16 code per node
 * (codes[], 2 bytes a dimension) for traversal only.
 *
 * Memory layout, per node id n < cap:
 *   links0[n * (1 + m0) ...]   level-0 list: count, then m0 = 2m ids
 *   upper[n]                   NULL, or level(n) lists for layers
 *                              1..level(n), each count then m ids
 *   level[n]                   top layer of n (0..HNSW_MAX_LEVEL)
 *   state[n]                   HNSW_ABSENT, HNSW_LIVE or HNSW_DELETED
 *   codes[n * cstride ...]     bf16 code of n (encoding=bf16 only)
 * Level 0 is one flat array (the traversal's hot data, one stride per
 * node); the upper layers, held by about 1/m of the nodes, are separate.
 *
 * A DELETED node is a tombstone: excluded from results and traversal at
 * once, its neighbours repaired, but other nodes may still hold a link to
 * it, which traversal skips. A sweep (hnsw_build.c: once tombstones reach
 * a tenth of the live nodes, and in train, i.e. "optimize") rewrites
 * every list that points to a tombstone and turns tombstones into ABSENT
 * nodes. Until then a tombstone keeps its level, and a re-added slot
 * reuses it: so every link at layer l, stale or not, points to a node
 * whose level is >= l, which is the invariant the traversal relies on
 * (load() checks it).
 *
 * Threads: search runs on many threads and only reads the graph; per-query
 * state lives in scratch taken from a small pool guarded by atomics. add()
 * may insert in parallel (OpenMP); it then guards each node's lists with a
 * one-byte spin lock and the entry point with a global lock.
 */
#ifndef HNSW_INT_H
#define HNSW_INT_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#include <iqdb/plugin.h>
#include <iqdb/topk.h>

#define HNSW_NAME "hnsw"
#define HNSW_VERSION "0.1.0"
/* Format of the data hnsw__save writes (see hnsw_persist.c). */
#define HNSW_FORMAT_VERSION 1u

#define HNSW_NONE UINT32_MAX
/* Node ids (slots) must be below this. */
#define HNSW_MAX_NODES ((uint64_t)UINT32_MAX)
/* Levels are clamped here; with m >= 2 a level above 30 has odds < 2^-30
 * per node. */
#define HNSW_MAX_LEVEL 30
/* Scratch buffers kept for reuse by concurrent searches. */
#define HNSW_POOL 64

enum { HNSW_ABSENT = 0, HNSW_LIVE = 1, HNSW_DELETED = 2 };

/* How traversal scores nodes: from the core's float vectors, or from a
 * bfloat16 copy of them (half the memory traffic; final answers are
 * always re-scored from the float vectors). */
enum { HNSW_ENC_FLOAT = 0, HNSW_ENC_BF16 = 1 };

/* Raw distance from float vector q to the bf16 code x of dim entries
 * (zero-padded to a multiple of 32). For cosine the code holds x / |x|
 * and qn is |q|; other metrics ignore qn. */
typedef float (*hnsw_code_fn)(const float *q, const uint16_t *x, size_t dim,
                              float qn);

/* A node and its raw distance to the current query. */
typedef struct hnsw_cand {
    float d;
    uint32_t id;
} hnsw_cand;

/* Per-thread working memory for one search, insert or repair. Allocated
 * once and grown on demand, so steady-state queries allocate nothing. */
typedef struct hnsw_scratch {
    uint16_t *visited; /* visited[n] == gen: n seen in this pass */
    size_t vcap;       /* nodes covered by visited */
    uint16_t gen;
    int oom;           /* a push was dropped for want of memory */
    hnsw_cand *cand;   /* min-heap: nodes still to expand */
    size_t ncand, cand_cap;
    hnsw_cand *res;    /* max-heap: the ef best allowed nodes */
    size_t nres, res_cap;
    hnsw_cand *sel;    /* candidate lists for neighbour selection */
    size_t sel_cap;
    void *batch;       /* one block holding the arrays below */
    size_t deg, deg_bytes;
    uint32_t *ids;     /* one neighbour batch: deg = m0 + 1 entries each */
    const float **vecs;
    float *dists;
    uint32_t *lbuf;    /* a list copied under its lock */
    iqdb_topk_entry *topk;
    size_t topk_cap;
    size_t bytes;      /* what this scratch holds */
    int slot;          /* index in the pool, -1 for a private one */
} hnsw_scratch;

typedef struct hnsw {
    const iqdb_host *host;
    void *hctx;
    const iqdb_store_view *store;
    const iqdb_kernels *kern;
    iqdb_dist_fn dist;
    uint32_t dim;
    int metric;
    int enc;              /* HNSW_ENC_* */
    hnsw_code_fn cdist;   /* bf16 kernel for the metric, chosen at create */
    size_t cstride;       /* uint16 per code: dim rounded up to 32 */
    uint16_t *codes;      /* cap * cstride, 64-byte aligned, or NULL */

    /* Parameters (see hnsw.c). */
    uint32_t m, m0, ef_construction, ef_search, filter_widen;
    uint64_t seed;
    double level_mult; /* 1 / ln(m) */
    uint64_t rng;      /* level generator state */

    /* The graph. */
    uint32_t cap;      /* nodes the arrays hold */
    uint32_t limit;    /* every node ever added is below this */
    uint32_t *links0;
    uint32_t **upper;
    uint8_t *level;
    uint8_t *state;
    uint32_t entry;    /* HNSW_NONE when empty */
    int top;           /* level of entry, -1 when empty */
    uint64_t nlive, ntomb;
    uint64_t upper_bytes;

    /* Scratch pool. busy[i] is taken with an atomic exchange. */
    hnsw_scratch *pool[HNSW_POOL];
    unsigned char busy[HNSW_POOL];
    uint64_t scratch_bytes; /* updated atomically */
} hnsw;

/* What one operation works with: the index, its scratch, the arena
 * layout read at the start of the call, the current query vector. */
typedef struct hnsw_ctx {
    const hnsw *h;
    hnsw_scratch *sc;
    iqdb_arena_layout lay;
    uint64_t chunk_mask;
    const float *q;
    float qn;             /* |q| for cosine codes (hnsw__set_query) */
    unsigned char *locks; /* per-node spin locks (parallel build), or NULL */
} hnsw_ctx;

/* ---- small inline helpers ------------------------------------------- */

#if defined(__x86_64__) || defined(__i386__)
#define HNSW_PAUSE() __builtin_ia32_pause()
#else
#define HNSW_PAUSE() ((void)0)
#endif

/* libgomp is not built for ThreadSanitizer, so TSan cannot see the
 * fork and join of a parallel region; these annotations tell it (no-ops
 * in other builds). */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define HNSW_TSAN_ACQUIRE(p) __tsan_acquire(p)
#define HNSW_TSAN_RELEASE(p) __tsan_release(p)
#else
#define HNSW_TSAN_ACQUIRE(p) ((void)(p))
#define HNSW_TSAN_RELEASE(p) ((void)(p))
#endif

static inline uint32_t hnsw__mmax(const hnsw *h, int layer)
{
    return layer == 0 ? h->m0 : h->m;
}

/* The list of node n at layer: [0] = count, then the ids. */
static inline uint32_t *hnsw__links(const hnsw *h, uint32_t n, int layer)
{
    if (layer == 0)
        return h->links0 + (size_t)n * (1 + h->m0);
    return h->upper[n] + (size_t)(layer - 1) * (1 + h->m);
}

static inline const float *hnsw__vec(const hnsw_ctx *c, uint32_t n)
{
    return c->lay.chunks[n >> c->lay.chunk_shift] +
           (size_t)(n & c->chunk_mask) * c->lay.stride;
}

/* A node lock is held for one list update (microseconds), so waiters
 * spin; but when the holder's thread is descheduled (more runnable
 * threads than cores), spinning on would burn the waiter's whole time
 * slice, so after a short spin it yields the core instead. */
static inline void hnsw__lock(const hnsw_ctx *c, uint32_t n)
{
    if (c->locks == NULL)
        return;
    while (__atomic_exchange_n(&c->locks[n], 1, __ATOMIC_ACQUIRE)) {
        unsigned spins = 0;
        while (__atomic_load_n(&c->locks[n], __ATOMIC_RELAXED)) {
            if (++spins < 256)
                HNSW_PAUSE();
            else
                sched_yield();
        }
    }
}

static inline void hnsw__unlock(const hnsw_ctx *c, uint32_t n)
{
    if (c->locks != NULL)
        __atomic_store_n(&c->locks[n], 0, __ATOMIC_RELEASE);
}

/* ---- hnsw.c: lifecycle ---------------------------------------------- */
/* Grow the node arrays to hold ids below need. 0 or IQDB_ENOMEM; on
 * failure the index is unchanged. */
int hnsw__grow(hnsw *h, uint64_t need);
/* Give node n room for `level` upper layers (empty lists). */
int hnsw__upper_alloc(hnsw *h, uint32_t n, int level);
void hnsw__upper_free(hnsw *h, uint32_t n);
/* Parse a decimal integer in [lo, hi]; 0 or -1. */
int hnsw__parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);
/* Make the highest-level live node the entry point (after deletes). */
void hnsw__pick_entry(hnsw *h);
/* Set up a context for one call. */
void hnsw__ctx_init(hnsw_ctx *c, const hnsw *h, hnsw_scratch *sc);

/* ---- hnsw_search.c: distances, scratch, layer search, queries -------- */
/* Choose the bf16 kernel matching the core's instruction set. */
void hnsw__pick_kernels(hnsw *h);
/* |a| when the codes need it (cosine), else 0. */
float hnsw__norm(const hnsw *h, const float *a);
static inline void hnsw__set_query(hnsw_ctx *c, const float *q)
{
    c->q = q;
    c->qn = hnsw__norm(c->h, q);
}
/* Traversal distances from a (floats; an = hnsw__norm(a)) to the nodes
 * ids[0..n), n <= m0 + 1: from the codes when there are any, else from
 * the core's vectors. */
void hnsw__dist_ids(const hnsw_ctx *c, const float *a, float an,
                    const uint32_t *ids, size_t n, float *out);
/* Write node n's code from its vector in the store. */
void hnsw__encode(const hnsw_ctx *c, uint32_t n);
/* Take a scratch from the pool (or a fresh one when all are busy); NULL
 * when out of memory. Give it back with hnsw__scratch_put. */
hnsw_scratch *hnsw__scratch_get(hnsw *h);
void hnsw__scratch_put(hnsw *h, hnsw_scratch *sc);
void hnsw__scratch_free(hnsw *h, hnsw_scratch *sc);
/* Grow sc for a pass over every node with heaps of ef and a top-k of k.
 * 0 or IQDB_ENOMEM. */
int hnsw__scratch_fit(hnsw *h, hnsw_scratch *sc, size_t ef, size_t k,
                      size_t sel);
/* Start a pass: a new visited generation, empty heaps. */
void hnsw__visit_begin(hnsw_scratch *sc);
static inline int hnsw__visited(const hnsw_scratch *sc, uint32_t n)
{
    return sc->visited[n] == sc->gen;
}
static inline void hnsw__visit(hnsw_scratch *sc, uint32_t n)
{
    sc->visited[n] = sc->gen;
}
/* Seed the heaps with an entry point (already marked visited). */
void hnsw__seed(hnsw_ctx *c, uint32_t n, float d, int allowed);
/* Algorithm 2 at `layer` from the seeded points: leaves up to ef allowed
 * nodes in sc->res (a max-heap). */
void hnsw__search_layer(hnsw_ctx *c, int layer, size_t ef,
                        const iqdb_filter_arg *filter);
/* Greedy descent at one layer (Algorithm 2 with ef = 1). */
void hnsw__greedy(hnsw_ctx *c, int layer, uint32_t *cur, float *dcur);
/* Empty sc->res into out[], nearest first; returns the count. */
size_t hnsw__drain_sorted(hnsw_scratch *sc, hnsw_cand *out);
int hnsw__search(hnsw *h, iqdb_search_args *a);
int hnsw__search_batch(hnsw *h, iqdb_search_args *args, size_t n);

/* ---- hnsw_build.c: insert, delete, repair ----------------------------- */
int hnsw__add(hnsw *h, const uint64_t *slots, size_t n);
int hnsw__remove(hnsw *h, const uint64_t *slots, size_t n);
/* Rewrite every list that points to a tombstone, drop the tombstones,
 * then reconnect any live node unreachable from the entry point. */
int hnsw__optimize(hnsw *h);

/* ---- hnsw_persist.c ------------------------------------------------- */
int hnsw__save(hnsw *h, const iqdb_writer *w);
int hnsw__load(hnsw *h, const iqdb_reader *r, uint32_t format_version);

#endif /* HNSW_INT_H */
