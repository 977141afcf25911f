/*
 * core/iqdb_int.h - declarations shared between the core's files.
 * Never installed, never included by plugins or tools.
 */
#ifndef IQDB_INT_H
#define IQDB_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <iqdb/iqdb.h>
#include <iqdb/plugin.h>

#if defined(__GNUC__)
#define IQDB__LIKELY(x) __builtin_expect(!!(x), 1)
#define IQDB__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define IQDB__LIKELY(x) (x)
#define IQDB__UNLIKELY(x) (x)
#endif

/* ---- allocator (alloc.c) ------------------------------------------- */
/* The one allocator of the core and (through the host table) of every
 * plugin. Tests can make it fail: see iqdb__alloc_fail_after. */
void *iqdb__malloc(size_t size);
void *iqdb__calloc(size_t n, size_t size);
void *iqdb__realloc(void *p, size_t size);
void iqdb__free(void *p);
void *iqdb__aligned_alloc(size_t alignment, size_t size);
void iqdb__aligned_free(void *p);
/* Zeroed memory straight from the kernel (an anonymous mapping), for the
 * vector arena: nothing to clear by hand, pages arrive on first touch, and
 * a region of 2 MiB or more is 2 MiB-aligned and asks for transparent huge
 * pages, so filling it takes one fault per 2 MiB rather than per 4 KiB.
 * size is rounded up to whole pages; free with the same size. Counts as
 * an allocation for fault injection. */
#define IQDB_HUGE_BYTES ((size_t)2 << 20) /* a transparent huge page */
void *iqdb__pages_alloc(size_t size);
void iqdb__pages_free(void *p, size_t size);
char *iqdb__strdup(const char *s);
void *iqdb__memdup(const void *p, size_t len);
/* Fault injection: after n more successful allocations every allocation
 * fails, until called again; n < 0 turns it off. Returns the number of
 * allocations made since the previous call (to size a sweep). */
long iqdb__alloc_fail_after(long n);
/* Checked a*b; returns 0 and sets *out, or -1 on overflow. */
int iqdb__mul_size(size_t a, size_t b, size_t *out);

/* ---- error messages (errmsg.c) -------------------------------------- */
/* Record the message for a failure of a call on `handle` (NULL for calls
 * without one) in the calling thread's slot; returns code. */
int iqdb__set_error(const void *handle, int code, const char *fmt, ...)
    IQDB_PRINTF(3, 4);
int iqdb__set_errorv(const void *handle, int code, const char *fmt,
                     va_list ap) IQDB_PRINTF(3, 0);
/* Re-tag the calling thread's last message to another handle (used when
 * an open fails, or when a message set by a plugin moves to the db). */
void iqdb__retag_error(const void *from, const void *to);
/* The calling thread's message (never NULL). */
const char *iqdb__last_error(void);

/* ---- metadata and filters (meta.c, filter.c, filter_parse.c) -------- */
/* Take a reference to an immutable stored map; iqdb_meta_free drops one.
 * Maps handed out as const (search hits) are shared this way. */
iqdb_meta *iqdb__meta_ref(const iqdb_meta *m);
/* The value stored under key[0..key_len) in m, or NULL when m is NULL or
 * has no such key. Borrowed; sets no error message; safe on a shared map. */
const iqdb_value *iqdb__meta_find(const iqdb_meta *m, const char *key,
                                  size_t key_len);
/* Approximate bytes held by m (0 for NULL). */
size_t iqdb__meta_memory(const iqdb_meta *m);


/* ---- vector arena (arena.c) ----------------------------------------- */
/* Vectors live in fixed-size chunks of 2^chunk_shift slots; a chunk never
 * moves once allocated, so a vector's address is stable while the arena
 * grows (only the small chunk table is reallocated). */
typedef struct iqdb_arena {
    uint32_t dim;
    uint32_t chunk_shift;
    size_t stride; /* floats per slot, a multiple of 8 (32 bytes) */
    float **chunks;
    size_t nchunks;   /* chunks allocated */
    size_t chunk_cap; /* entries in the chunks table */
    /* Chunks are carved from extents, anonymous mappings of several
     * chunks each (iqdb__pages_alloc), each at least as large as all the
     * chunks before it up to a cap: few mappings, huge pages where the
     * kernel gives them, and untouched room costs address space only. */
    struct iqdb_extent {
        void *p;
        size_t len;
    } *ext;
    size_t n_ext, ext_cap;
    char *spare;   /* the next unused chunk of the last extent */
    size_t nspare; /* unused chunks left there */
    void *map;        /* the first nmapped chunks lie in this private file
                         mapping (iqdb__arena_map), NULL when none */
    size_t map_len;
    size_t nmapped;
} iqdb_arena;

int iqdb__arena_init(iqdb_arena *a, uint32_t dim);
void iqdb__arena_destroy(iqdb_arena *a);
/* Make room for every slot below limit. Returns 0 or IQDB_ENOMEM. */
int iqdb__arena_reserve(iqdb_arena *a, uint64_t limit);
static inline float *iqdb__arena_at(const iqdb_arena *a, uint64_t slot)
{
    return a->chunks[slot >> a->chunk_shift] +
           (size_t)(slot & ((1u << a->chunk_shift) - 1)) * a->stride;
}
uint64_t iqdb__arena_memory(const iqdb_arena *a);
/* On an empty arena: map the whole chunks among the first `limit` slots
 * from fd at offset off (page-aligned; the file holds them in the arena's
 * own layout), private and copy-on-write, so they are read from the page
 * cache without a copy and a slot written later gets a page of its own.
 * The partial last chunk, if any, is left to iqdb__arena_reserve.
 * Returns the number of slots mapped (0: nothing mapped, e.g. mmap
 * refused; the caller then reads them). */
uint64_t iqdb__arena_map(iqdb_arena *a, int fd, uint64_t off, uint64_t limit);

/* ---- id map (idmap.c) ----------------------------------------------- */
/* Open addressing with linear probing and backward-shift deletion. It
 * stores (tag, slot) pairs of 32 bits each, the tag being the low half of
 * the id's hash; keys are compared through the caller's ids table, so
 * each id is kept once. Slots must be below IQDB_IDMAP_MAX_SLOT. */
#define IQDB_IDMAP_MAX_SLOT 0xffffffffu
typedef struct iqdb_idmap {
    uint32_t *tags; /* 0 = empty */
    uint32_t *slots;
    size_t cap; /* power of two, at most 2^32 */
    size_t count;
} iqdb_idmap;

uint64_t iqdb__id_hash(iqdb_id id);
int iqdb__idmap_init(iqdb_idmap *m);
void iqdb__idmap_destroy(iqdb_idmap *m);
/* Ensure room for `extra` more entries without failing later. */
int iqdb__idmap_reserve(iqdb_idmap *m, size_t extra);
/* Find id; ids[slot] is the id stored at a slot. Returns 1 and sets
 * *slot when found, else 0. */
int iqdb__idmap_find(const iqdb_idmap *m, const iqdb_id *ids, iqdb_id id,
                     uint64_t h, uint64_t *slot);
/* Insert or update (after reserve: cannot fail). */
void iqdb__idmap_put(iqdb_idmap *m, const iqdb_id *ids, iqdb_id id,
                     uint64_t h, uint64_t slot);
/* Remove id if present. */
void iqdb__idmap_del(iqdb_idmap *m, const iqdb_id *ids, iqdb_id id,
                     uint64_t h);

/* ---- record store (store.c) ----------------------------------------- */
typedef struct iqdb_store {
    uint32_t dim;
    iqdb_arena arena;
    uint64_t limit;     /* slots ever handed out (high-water mark) */
    uint64_t cap;       /* capacity of the per-slot arrays */
    iqdb_id *ids;       /* per slot; BYTES ids own their bytes */
    iqdb_meta **meta;   /* per slot, NULL = none */
    uint64_t *order;    /* per slot insertion sequence */
    uint64_t *home;     /* per slot: where the vector also lies in a log
                           file, 0 when nowhere known (durable.c, "vector
                           homes") */
    uint64_t *live;     /* bitmap over slots */
    uint64_t *free_slots;
    size_t nfree;
    uint64_t count;
    uint64_t next_order;
    iqdb_idmap map;
    /* A snapshot is being written from the slots that were live when it
     * was prepared (pin_live, a bitmap over pin_limit slots, bit i of
     * byte i/8; durable.c): releasing one of those holds it back, at the
     * top of free_slots (nheld of them), until unpinned, so no vector the
     * snapshot reads is overwritten. Every other slot is reused as usual
     * (the snapshot writes zeros for them, never reading them). */
    int pinned;
    const unsigned char *pin_live;
    uint64_t pin_limit;
    uint64_t nheld;
} iqdb_store;

int iqdb__store_init(iqdb_store *s, uint32_t dim);
void iqdb__store_destroy(iqdb_store *s);
/* Make room for n more slots so that take/fill cannot fail. */
int iqdb__store_reserve(iqdb_store *s, size_t n);
/* A free slot (after reserve). Its vector may be written at once. */
uint64_t iqdb__store_take(iqdb_store *s);
/* Give back a slot taken but never published. */
void iqdb__store_untake(iqdb_store *s, uint64_t slot);
/* Publish a taken slot under id (whose bytes the store now owns) with
 * meta (reference now owned by the store), replacing nothing. */
void iqdb__store_publish(iqdb_store *s, uint64_t slot, iqdb_id owned_id,
                         uint64_t h, iqdb_meta *meta);
/* Pin the store for a snapshot writer, and release the pin (see
 * iqdb_store.pinned). */
void iqdb__store_pin(iqdb_store *s, const unsigned char *live,
                     uint64_t limit);
void iqdb__store_unpin(iqdb_store *s);
/* Unpublish a live slot: drop id, meta and liveness; slot becomes free
 * (held back until unpinned while the store is pinned). */
void iqdb__store_release(iqdb_store *s, uint64_t slot);
/* Live slot of id, or 0 when absent. */
int iqdb__store_find(const iqdb_store *s, iqdb_id id, uint64_t h,
                     uint64_t *slot);
static inline int iqdb__store_is_live(const iqdb_store *s, uint64_t slot)
{
    return slot < s->limit && ((s->live[slot >> 6] >> (slot & 63)) & 1);
}
/* Restore a live record at a given slot and insertion order (loading a
 * snapshot into an empty store reserved for `limit` slots), then set the
 * high-water mark, free list and next order once every record is in. */
void iqdb__store_restore(iqdb_store *s, uint64_t slot, iqdb_id owned_id,
                         uint64_t h, iqdb_meta *meta, uint64_t order);
void iqdb__store_finish_restore(iqdb_store *s, uint64_t limit,
                                uint64_t next_order);
/* Validate an id: kind and length. Returns 0 or IQDB_EID. */
int iqdb__id_check(iqdb_id id);
/* A copy of id owning its bytes, or IQDB_ENOMEM. */
int iqdb__id_copy(iqdb_id id, iqdb_id *out);
void iqdb__id_free(iqdb_id *id);

/* ---- plugin registry (plugin_loader.c, host.c) ---------------------- */
/* The host table handed to every plugin. */
const iqdb_host *iqdb__host(void);
/* Find a registered index type, loading the module of the same name if
 * needed (extra_dirs searched first). Returns 0 and sets *ops, or an
 * error (message set on handle NULL). */
/* Whether s can name a plugin: 1 to 64 of [A-Za-z0-9_-]. Names read
 * from files must pass it: a name with a '/' is opened as a path. */
int iqdb__plugin_name_valid(const char *s);
int iqdb__find_index(const char *name, char *const *extra_dirs, size_t ndirs,
                     const iqdb_index_ops **ops);
int iqdb__find_codec(const char *name, uint32_t id,
                     const iqdb_codec_ops **ops);
/* Size of the v1 part of each table: the least struct_size accepted. */
#define IQDB__V1_SIZE(type, last) (offsetof(type, last) + sizeof(((type *)0)->last))

/* ---- configuration (config.c) --------------------------------------- */
struct iqdb_config {
    uint32_t dim;
    int metric;
    char *index;
    iqdb_kv *params; /* owned strings */
    size_t nparams;
    char **dirs;
    size_t ndirs;
    /* durable databases */
    int fsync;          /* iqdb_fsync */
    uint32_t period_ms;
    char *codec;        /* NULL: none */
    int codec_set; /* set_compression was called */
    int level;
    int readonly;
    int rebuild;
    int strict_recovery;
    uint64_t compact_bytes;
    /* internal: opening a stored database whose index plugin may be
     * absent, with a rebuild allowed: let flat stand in (db.c) */
    int stand_in;
};

struct iqdb_params {
    iqdb_kv *kv; /* owned strings */
    size_t n;
};

/* Set key=value in a kv array (replacing an existing key). */
int iqdb__kv_set(iqdb_kv **arr, size_t *n, const char *key,
                 const char *value);
void iqdb__kv_free(iqdb_kv *arr, size_t n);

/* ---- the database handle (db.c, search.c) --------------------------- */
#include <pthread.h>

struct iqdb {
    uint32_t dim;
    int metric;
    pthread_rwlock_t lock; /* readers: searches and gets; writer: writes */
    iqdb_store store;
    const iqdb_index_ops *ops;
    void *index;
    iqdb_store_view view;
    const iqdb_kernels *kernels;
    iqdb_kv *params; /* construction parameters, owned */
    size_t nparams;
    char *params_text; /* the same as "k=v,k=v" (iqdb_stat) */
    /* The stored index type when its plugin is absent and the flat index
     * stands in for it (exact searches; params are the stored type's,
     * kept for the snapshot, not given to flat); NULL normally. */
    char *stands_in;
    /* The index was rebuilt at open though it can save its state (none
     * saved, or in a newer format): the next compaction writes it. */
    int index_unsaved;
    struct iqdb_durable *dur; /* NULL for in-memory databases */
};

/* ---- durable databases (durable.c) ------------------------------------ */
/* Log a batch of upserts / a delete before it is applied; called by the
 * write functions of db.c for durable handles, with validated input. They
 * apply the write themselves, in log order. */
int iqdb__durable_upsert(iqdb *db, const iqdb_record *recs, size_t n,
                         uint32_t dim);
int iqdb__durable_delete(iqdb *db, iqdb_id id, int *was_present);
/* The durable fields of iqdb_stat (db->dur != NULL). */
int iqdb__durable_stat(iqdb *db, iqdb_stats *st);
/* Final compaction and release, from iqdb_close. */
int iqdb__durable_close(iqdb *db);
/* Apply without logging: the in-memory part of a write (db.c). */
/* homes (may be NULL): each record's vector home (iqdb_store.home). */
int iqdb__apply_upserts(iqdb *db, const iqdb_record *recs, size_t n,
                        const uint64_t *homes);
int iqdb__apply_delete(iqdb *db, iqdb_id id, int *was_present);

/* A new empty database from a checked configuration (message on NULL). */
int iqdb__db_new(const iqdb_config *cfg, iqdb **out);

/* Check a vector: NULL, dim, finiteness. handle for the message. */
int iqdb__check_vector(const void *handle, const float *v, uint32_t dim,
                       uint32_t want, const char *what);

/* ---- results (results.c) -------------------------------------------- */
/* Build a results object for nq queries from per-query neighbour lists
 * (counts[q] entries at nb + q * k) under the read lock. */
int iqdb__results_build(iqdb *db, const iqdb_neighbor *nb,
                        const size_t *counts, size_t nq, size_t k,
                        iqdb_results **out);

#endif /* IQDB_INT_H */
