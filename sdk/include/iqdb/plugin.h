/*
 * iqdb/plugin.h - the plugin ABI (version IQDB_ABI_MAJOR.IQDB_ABI_MINOR).
 *
 * Overview
 * --------
 * A plugin is a libtool module (NAME.la / NAME.so) that exports exactly one
 * symbol, NAME_LTX_iqdb_module (libltdl also finds a plain iqdb_module):
 *
 *     IQDB_PLUGIN_EXPORT const iqdb_module *NAME_LTX_iqdb_module(void);
 *
 * It returns a pointer to a static const iqdb_module descriptor. The core
 * checks the descriptor (ABI major equal, minor not newer than the
 * core's, struct_size large enough, required fields set) before it runs
 * any other code of the plugin, then calls its `init` with the host
 * services table and a registrar through which the module registers one
 * or more index types (iqdb_index_ops) and codecs (iqdb_codec_ops).
 *
 * Rules of the boundary
 * ---------------------
 * - Every table starts with `abi_version` (IQDB_ABI_VERSION at build time)
 *   and `struct_size` (sizeof the table at build time). Tables grow only at
 *   their end; the core never reads a slot beyond struct_size. Optional
 *   slots may be NULL and are marked so.
 * - Plugins see only slots, never the application's ids. Vectors are read
 *   through the host (iqdb_store_view); the core owns them and they stay at
 *   a stable address until the slot is removed.
 * - Errors cross as the IQDB_E* codes of status.h; the message is set with
 *   host->set_error. Never a C++ exception, longjmp, exit or abort.
 * - Memory is allocated with host->alloc and friends, so the core's
 *   allocator (and its fault injection in tests) covers plugins too.
 * - Threads: the core never runs add/remove/train/load/save/destroy
 *   concurrently with any other call on the same index instance; `search`
 *   may run on many threads at once, so it keeps per-call state on the
 *   stack or in per-thread scratch. A search is never called while an add
 *   or remove runs.
 *
 * See sdk/PLUGIN_GUIDE.md for a walk-through and sdk/template/ for a
 * plugin to start from.
 */
#ifndef IQDB_PLUGIN_H
#define IQDB_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <iqdb/export.h>
#include <iqdb/status.h>
#include <iqdb/version.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IQDB_ABI_VERSION ((uint32_t)((IQDB_ABI_MAJOR << 16) | IQDB_ABI_MINOR))
#define IQDB_ABI_VERSION_MAJOR(v) ((uint32_t)(v) >> 16)
#define IQDB_ABI_VERSION_MINOR(v) ((uint32_t)(v)&0xffffu)

/* Metric values, equal to iqdb_metric in iqdb.h. */
#define IQDB_M_EUCLIDEAN 1
#define IQDB_M_COSINE 2
#define IQDB_M_DOT 3
#define IQDB_M_MANHATTAN 4
#define IQDB_M_HAMMING 5
#define IQDB_M_COUNT 6 /* one past the largest metric value */

/* Log levels for host->log. */
#define IQDB_LOG_ERROR 0
#define IQDB_LOG_WARN 1
#define IQDB_LOG_INFO 2
#define IQDB_LOG_DEBUG 3

/* ------------------------------------------------------------------ */
/* Distance kernels                                                     */
/*
 * "Raw" distances order exactly like the reported ones and are cheaper:
 *   euclidean: squared L2 (reported: its square root)
 *   cosine:    1 - a.b / (|a||b|), 1 when either norm is 0 (reported as is)
 *   dot:       -(a.b)
 *   manhattan: sum |a_i - b_i|
 *   hamming:   count of a_i != b_i
 * host->kernels->finalize turns a raw distance into the reported one.
 */
typedef float (*iqdb_dist_fn)(const float *a, const float *b, size_t dim);

typedef struct iqdb_kernels {
    uint32_t abi_version;
    uint32_t struct_size;
    /* The instruction set chosen at run time: "avx512", "avx2", "scalar"
     * (or "neon"). */
    const char *isa;
    /* Raw distance for one pair, by metric (index IQDB_M_*; entry 0 is
     * NULL). */
    iqdb_dist_fn dist[IQDB_M_COUNT];
    /* Raw distances from q to n vectors base + j*stride (stride in
     * floats), into out[0..n). Bit-identical to dist[metric] per pair. */
    void (*dist_1xn)(int metric, const float *q, const float *base,
                     size_t stride, size_t n, size_t dim, float *out);
    /* Raw distances from q to the n vectors vecs[0..n) (any addresses),
     * into out[0..n). Bit-identical to dist[metric] per pair. */
    void (*dist_gather)(int metric, const float *q, const float *const *vecs,
                        size_t n, size_t dim, float *out);
    /* Dot products of m queries (q + i*qstride) with n vectors
     * (base + j*stride): out[i*ldo + j] = q_i . b_j, computed with register
     * and cache blocking for throughput. Not bit-identical to dist (the
     * summation order differs); callers that need exact distances re-rank
     * with dist. */
    void (*dot_mxn)(const float *q, size_t qstride, size_t m,
                    const float *base, size_t stride, size_t n, size_t dim,
                    float *out, size_t ldo);
    /* Squared L2 norms of n vectors base + j*stride into out[0..n). */
    void (*norms_sq)(const float *base, size_t stride, size_t n, size_t dim,
                     float *out);
    /* Reported distance from a raw one. */
    float (*finalize)(int metric, float raw);
    /* Methods above are valid for ABI 1.0. */
} iqdb_kernels;

/* ------------------------------------------------------------------ */
/* The core's vectors, as an index sees them                            */

/* The arena layout: vector of slot s is at
 *   chunks[s >> chunk_shift] + (s & ((1 << chunk_shift) - 1)) * stride
 * Every vector starts on a 32-byte boundary; stride >= dim floats. The
 * layout (the chunks array in particular) may change across calls that
 * add records, never during one call: re-read it at the start of each
 * call. */
typedef struct iqdb_arena_layout {
    uint32_t struct_size;
    uint32_t chunk_shift;
    size_t stride;              /* floats from one vector to the next */
    size_t nchunks;
    const float *const *chunks; /* chunks[i] may be NULL past the last */
    uint64_t slot_limit;        /* every slot in use is below this */
} iqdb_arena_layout;

typedef struct iqdb_store_view {
    uint32_t abi_version;
    uint32_t struct_size;
    void *ctx; /* pass to the functions below */
    uint32_t dim;
    int metric;
    /* Vector of a slot the index was given with add (and not removed). */
    const float *(*vector)(void *ctx, uint64_t slot);
    /* The current arena layout. */
    void (*layout)(void *ctx, iqdb_arena_layout *out);
    /* Insertion order of a live slot: smaller means inserted earlier. Used
     * to break distance ties the way the core promises. */
    uint64_t (*order)(void *ctx, uint64_t slot);
    /* Methods above are valid for ABI 1.0. */
} iqdb_store_view;

/* ------------------------------------------------------------------ */
/* Host services                                                        */

typedef struct iqdb_host {
    uint32_t abi_version; /* the core's IQDB_ABI_VERSION */
    uint32_t struct_size;
    const char *core_version;
    /* The core's allocator. aligned_alloc's memory is freed with
     * aligned_free; alignment is a power of two. */
    void *(*alloc)(size_t size);
    void *(*calloc)(size_t n, size_t size);
    void *(*realloc)(void *p, size_t size);
    void (*free)(void *p);
    void *(*aligned_alloc)(size_t alignment, size_t size);
    void (*aligned_free)(void *p);
    /* Log a line (level IQDB_LOG_*), tagged with the plugin's name. */
    void (*log)(int level, const char *plugin, const char *fmt, ...)
        IQDB_PRINTF(3, 4);
    /* Set the message for the error `code` of the call in progress on the
     * index whose host context is hctx (or, for codecs and init, NULL).
     * Returns code, so a plugin can write
     *   return host->set_error(hctx, IQDB_EPARAM, "m: must be ...");
     * Safe to call from any thread. */
    int (*set_error)(void *hctx, int code, const char *fmt, ...)
        IQDB_PRINTF(3, 4);
    /* The distance kernels chosen for this CPU. */
    const iqdb_kernels *kernels;
    /* Threads a parallel operation may use (>= 1). */
    int (*max_threads)(void);
    /* Methods above are valid for ABI 1.0. */
} iqdb_host;

/* ------------------------------------------------------------------ */
/* Index plugins                                                        */

/* Capability flags (iqdb_index_ops.caps): each answers a question. */
/* Are results exact (the true top-k)? */
#define IQDB_CAP_EXACT (1ull << 0)
/* Does search honour iqdb_filter_arg.allowed (the slot bitmap)? */
#define IQDB_CAP_FILTER_BITMAP (1ull << 1)
/* Does search honour iqdb_filter_arg.pred (the predicate)? */
#define IQDB_CAP_FILTER_PREDICATE (1ull << 2)
/* Is search_batch provided? */
#define IQDB_CAP_BATCH (1ull << 3)
/* Is remove provided (else the core rebuilds the index on delete)? */
#define IQDB_CAP_REMOVE (1ull << 4)
/* Are save and load provided? */
#define IQDB_CAP_PERSIST (1ull << 5)
/* Does the index need train before it answers well? */
#define IQDB_CAP_TRAIN (1ull << 6)

/* A key=value parameter, both NUL-terminated text. */
typedef struct iqdb_kv {
    const char *key;
    const char *value;
} iqdb_kv;

/* What the core hands to create. */
typedef struct iqdb_index_init {
    uint32_t abi_version;
    uint32_t struct_size;
    const iqdb_host *host;
    void *hctx;                    /* pass to host->set_error */
    const iqdb_store_view *store;  /* valid for the index's life */
    uint32_t dim;
    int metric;                    /* IQDB_M_* */
    const iqdb_kv *params;         /* construction parameters */
    size_t nparams;
    /* Fields above are valid for ABI 1.0. */
} iqdb_index_init;

/* Which slots a search may return. Both parts may be present; a slot is
 * allowed when it passes both. An index without IQDB_CAP_FILTER_* never
 * receives a filter (the core post-filters or scans instead). */
typedef struct iqdb_filter_arg {
    uint32_t struct_size;
    /* Bit s of allowed[s / 64] (bit s % 64) set = slot s allowed; slots
     * at or above nbits are not allowed. NULL: no bitmap. */
    const uint64_t *allowed;
    uint64_t nbits;
    /* Number of allowed slots that are live (lets an index size its
     * search or switch to scanning). With a predicate and no bitmap: an
     * estimate of it from a sample (0: unknown), never to be taken as
     * exact: when the index returns fewer than k hits, the core plans
     * the query again with the full bitmap. */
    uint64_t allowed_count;
    /* Predicate: non-zero = allowed. NULL: no predicate. Thread-safe. */
    int (*pred)(void *pctx, uint64_t slot);
    void *pctx;
} iqdb_filter_arg;

static inline int iqdb_filter_arg_allows(const iqdb_filter_arg *f,
                                         uint64_t slot)
{
    if (f == NULL)
        return 1;
    if (f->allowed != NULL &&
        (slot >= f->nbits || !((f->allowed[slot >> 6] >> (slot & 63)) & 1)))
        return 0;
    if (f->pred != NULL && !f->pred(f->pctx, slot))
        return 0;
    return 1;
}

/* A neighbour: a slot and its raw distance. */
typedef struct iqdb_neighbor {
    uint64_t slot;
    float dist;
} iqdb_neighbor;

/* Flags an index sets in iqdb_search_args.out_flags. */
/* The index found fewer than min(k, allowed) neighbours. */
#define IQDB_RESULT_INCOMPLETE (1u << 0)

typedef struct iqdb_search_args {
    uint32_t struct_size;
    const float *query;            /* dim floats, finite */
    size_t k;                      /* >= 1 */
    const iqdb_filter_arg *filter; /* NULL: every slot allowed */
    const iqdb_kv *params;         /* per-query parameters */
    size_t nparams;
    iqdb_neighbor *out;            /* room for k neighbours */
    size_t out_count;              /* set by the index */
    uint32_t out_flags;            /* set by the index: IQDB_RESULT_* */
    /* Fields above are valid for ABI 1.0. */
} iqdb_search_args;

/* Byte streams for save/load. write/read return 0 or an IQDB_E* code; read
 * fills exactly len bytes or fails (IQDB_ECORRUPT at end of stream). */
typedef struct iqdb_writer {
    uint32_t struct_size;
    void *ctx;
    int (*write)(void *ctx, const void *buf, size_t len);
} iqdb_writer;

typedef struct iqdb_reader {
    uint32_t struct_size;
    void *ctx;
    int (*read)(void *ctx, void *buf, size_t len);
    uint64_t remaining; /* bytes left in the section when load starts */
} iqdb_reader;

/* Statistics an index reports (all optional, 0 when unknown). */
typedef struct iqdb_index_stats {
    uint32_t struct_size;
    uint64_t count;            /* slots held */
    uint64_t memory_bytes;     /* bytes the index allocated itself */
    uint64_t vector_copies;    /* extra float copies of vectors it keeps */
} iqdb_index_stats;

typedef struct iqdb_index_ops {
    uint32_t abi_version;
    uint32_t struct_size;
    const char *name;        /* index type name, e.g. "flat" */
    const char *description; /* one line */
    uint64_t caps;           /* IQDB_CAP_* */
    uint32_t format_version; /* of the data save writes; 0 if none */

    /* Create an empty index. Check init->params: an unknown key or a bad
     * value returns IQDB_EPARAM with a message naming it. */
    int (*create)(const iqdb_index_init *init, void **out);
    /* Free the index. */
    void (*destroy)(void *index);
    /* Add n slots whose vectors are now in the store. On failure the
     * index must be as before the call. */
    int (*add)(void *index, const uint64_t *slots, size_t n);
    /* Remove n slots. May be NULL (IQDB_CAP_REMOVE unset). */
    int (*remove)(void *index, const uint64_t *slots, size_t n);
    /* Answer one query into args->out, nearest first (ties: smaller
     * store->order first), setting out_count. Unknown or bad per-query
     * params: IQDB_EPARAM. */
    int (*search)(void *index, iqdb_search_args *args);
    /* Answer n queries; may run them in parallel. args[i] as for search.
     * May be NULL (IQDB_CAP_BATCH unset): the core calls search in an
     * OpenMP loop. */
    int (*search_batch)(void *index, iqdb_search_args *args, size_t n);
    /* (Re)train on the slots currently held. May be NULL. */
    int (*train)(void *index);
    /* Write the index's state. May be NULL (IQDB_CAP_PERSIST unset). */
    int (*save)(void *index, const iqdb_writer *w);
    /* Replace the (empty) index's state with saved data written by a
     * save of format `format_version`. Must reject anything malformed with
     * IQDB_ECORRUPT and never trust a length it has not checked. May be
     * NULL. */
    int (*load)(void *index, const iqdb_reader *r, uint32_t format_version);
    /* Fill stats. May be NULL. */
    int (*stats)(void *index, iqdb_index_stats *st);
    /* Methods above are valid for ABI 1.0. */
} iqdb_index_ops;

/* ------------------------------------------------------------------ */
/* Codec plugins                                                        */

typedef struct iqdb_codec_ops {
    uint32_t abi_version;
    uint32_t struct_size;
    const char *name;        /* e.g. "zstd" */
    const char *description;
    uint32_t id;             /* stable numeric id stored in snapshots */
    int default_level;
    /* Largest compressed size of src_len input bytes (0 on overflow). */
    size_t (*bound)(size_t src_len);
    /* Compress src[0..src_len) into dst (capacity dst_cap); set *out_len.
     * Returns 0, IQDB_EINVAL (bad level), IQDB_ERANGE (dst_cap too small;
     * bound() is always enough) or IQDB_ENOMEM / IQDB_EINTERNAL. Level 0
     * means the codec's default. May run on several threads at once. */
    int (*compress)(const void *src, size_t src_len, void *dst,
                    size_t dst_cap, size_t *out_len, int level);
    /* Decompress into dst, which must receive exactly dst_cap bytes (the
     * size recorded when compressing). Anything else: IQDB_ECORRUPT. */
    int (*decompress)(const void *src, size_t src_len, void *dst,
                      size_t dst_cap, size_t *out_len);
    /* Methods above are valid for ABI 1.0. */
} iqdb_codec_ops;

/* Stable codec ids. 0 means "stored uncompressed". Third-party codecs use
 * ids at or above IQDB_CODEC_ID_PRIVATE. */
#define IQDB_CODEC_ID_NONE 0u
#define IQDB_CODEC_ID_ZSTD 1u
#define IQDB_CODEC_ID_LZ4 2u
#define IQDB_CODEC_ID_PRIVATE 0x10000u

/* ------------------------------------------------------------------ */
/* Modules                                                              */

typedef struct iqdb_registrar {
    uint32_t abi_version;
    uint32_t struct_size;
    void *ctx;
    /* Register an index type; ops must be static (the core keeps the
     * pointer and never copies or frees it). Returns 0, IQDB_EEXIST (name
     * taken) or IQDB_EPLUGIN (malformed table, with a message). */
    int (*register_index)(void *ctx, const iqdb_index_ops *ops);
    int (*register_codec)(void *ctx, const iqdb_codec_ops *ops);
    /* Methods above are valid for ABI 1.0. */
} iqdb_registrar;

typedef struct iqdb_module {
    uint32_t abi_version; /* IQDB_ABI_VERSION of the headers built with */
    uint32_t struct_size; /* sizeof(iqdb_module) */
    const char *name;     /* module name; equals the file's base name */
    const char *version;  /* the module's own version string */
    /* Register what the module provides. Called once, after the
     * descriptor was checked. Returns 0 or an IQDB_E* code. */
    int (*init)(const iqdb_host *host, const iqdb_registrar *reg);
    /* Methods above are valid for ABI 1.0. */
} iqdb_module;

/* The type of the entry point. */
typedef const iqdb_module *(*iqdb_module_entry_fn)(void);

/* The entry point's name, without the LTX prefix. */
#define IQDB_MODULE_ENTRY "iqdb_module"

#ifdef __cplusplus
}
#endif
#endif /* IQDB_PLUGIN_H */
