/*
 * iqdb/iqdb.h - the application API of iqdb, an embedded vector database.
 *
 * Overview
 * --------
 * A database stores float32 vectors of one fixed dimension under unique
 * ids (a uint64_t or a non-empty byte string), each with optional typed
 * metadata, and answers top-k nearest-neighbour queries, optionally
 * restricted by a metadata filter. The search is done by an index plugin
 * (flat, hnsw, ...) that the library loads at run time; the library itself
 * owns every vector, id and metadata value.
 *
 *     iqdb_config *cfg = iqdb_config_new(3, IQDB_METRIC_COSINE);
 *     iqdb *db;
 *     if (iqdb_open_memory(cfg, &db) != 0)
 *         fprintf(stderr, "%s\n", iqdb_errmsg(NULL));
 *     iqdb_config_free(cfg);
 *     float v[3] = {1, 0, 0};
 *     iqdb_upsert(db, iqdb_id_u64(1), v, 3, NULL);
 *     iqdb_results *res;
 *     iqdb_search(db, v, 3, 10, NULL, NULL, &res);
 *     ... iqdb_results_hits(res, 0) ...
 *     iqdb_results_free(res);
 *     iqdb_close(db);
 *
 * Errors
 * ------
 * Every fallible function returns 0 or a negative IQDB_E* code (status.h).
 * The detail of the most recent failure is kept as a message: see
 * iqdb_errmsg(). A call that fails changes nothing.
 *
 * Threads
 * -------
 * One iqdb handle may be shared by any number of threads. Searches and
 * reads run concurrently; writes (upsert, delete) are exclusive and wait
 * for running searches. Config, metadata, filter and results objects are
 * not synchronised: share them read-only or give each thread its own.
 *
 * Distances (smaller is always nearer)
 * ---------
 *   IQDB_METRIC_EUCLIDEAN  sqrt(sum_i (a_i - b_i)^2)
 *   IQDB_METRIC_COSINE     1 - (a.b) / (|a| |b|), in [0, 2]; when either
 *                          vector is all zeros the distance is defined as
 *                          1 (orthogonal), never NaN
 *   IQDB_METRIC_DOT        -(a.b)  (negated so smaller is nearer)
 *   IQDB_METRIC_MANHATTAN  sum_i |a_i - b_i|
 *   IQDB_METRIC_HAMMING    number of coordinates i where a_i != b_i
 *                          (a float; for 0/1 vectors this is the bit
 *                          Hamming distance)
 * Results are ordered by distance ascending; equal distances are ordered
 * by insertion order (the record whose latest upsert came first wins).
 */
#ifndef IQDB_IQDB_H
#define IQDB_IQDB_H

#include <stddef.h>
#include <stdint.h>
#include <iqdb/export.h>
#include <iqdb/status.h>
#include <iqdb/version.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest supported vector dimension. */
#define IQDB_MAX_DIM 65536u
/* Largest byte-string id, in bytes. */
#define IQDB_ID_MAX_BYTES 1024u
/* Largest metadata key, in bytes (excluding the terminating NUL). */
#define IQDB_META_MAX_KEY 255u
/* Largest metadata string value, in bytes. */
#define IQDB_META_MAX_STR (1u << 20)
/* Most entries in one metadata map. */
#define IQDB_META_MAX_ENTRIES 4096u

typedef struct iqdb iqdb;
typedef struct iqdb_config iqdb_config;
typedef struct iqdb_meta iqdb_meta;
typedef struct iqdb_filter iqdb_filter;
typedef struct iqdb_results iqdb_results;
typedef struct iqdb_params iqdb_params;

typedef enum iqdb_metric {
    IQDB_METRIC_EUCLIDEAN = 1,
    IQDB_METRIC_COSINE = 2,
    IQDB_METRIC_DOT = 3,
    IQDB_METRIC_MANHATTAN = 4,
    IQDB_METRIC_HAMMING = 5
} iqdb_metric;

/* The metric's name ("euclidean", "cosine", "dot", "manhattan",
 * "hamming"), or NULL for an unknown value. Static storage. */
IQDB_API const char *iqdb_metric_name(iqdb_metric metric);
/* Parse a metric name (also accepted: "l2", "ip", "l1"). Returns 0 and
 * sets *out, or IQDB_EMETRIC. */
IQDB_API int iqdb_metric_parse(const char *name, iqdb_metric *out);

/* ------------------------------------------------------------------ */
/* Errors                                                               */

/* The message describing the most recent failed call made by the calling
 * thread on `db` (or, with db == NULL, the calling thread's most recent
 * failure of any call, including the open functions and the handle-less
 * functions). Returns "" when there is none. The pointer stays valid
 * until the calling thread's next iqdb call. Messages are kept per
 * thread, so concurrent threads never see each other's messages. */
IQDB_API const char *iqdb_errmsg(const iqdb *db);

/* ------------------------------------------------------------------ */
/* Ids                                                                  */

enum { IQDB_ID_U64 = 1, IQDB_ID_BYTES = 2 };

/* A record id, passed by value. A BYTES id borrows its bytes for the
 * duration of the call only; the library copies what it keeps. */
typedef struct iqdb_id {
    uint32_t kind; /* IQDB_ID_U64 or IQDB_ID_BYTES */
    uint32_t len;  /* byte length for IQDB_ID_BYTES, 1..IQDB_ID_MAX_BYTES */
    union {
        uint64_t u64;
        const void *bytes;
    } v;
} iqdb_id;

static inline iqdb_id iqdb_id_u64(uint64_t value)
{
    iqdb_id id;
    id.kind = IQDB_ID_U64;
    id.len = 0;
    id.v.u64 = value;
    return id;
}

static inline iqdb_id iqdb_id_bytes(const void *bytes, size_t len)
{
    iqdb_id id;
    id.kind = IQDB_ID_BYTES;
    id.len = len > 0xffffffffu ? 0xffffffffu : (uint32_t)len;
    id.v.bytes = bytes;
    return id;
}

/* 1 when a and b name the same record, else 0. */
IQDB_API int iqdb_id_equal(iqdb_id a, iqdb_id b);

/* ------------------------------------------------------------------ */
/* Metadata values and maps                                             */

typedef enum iqdb_type {
    IQDB_TYPE_NULL = 0,
    IQDB_TYPE_STRING = 1,
    IQDB_TYPE_INT = 2,
    IQDB_TYPE_DOUBLE = 3,
    IQDB_TYPE_BOOL = 4
} iqdb_type;

/* A scalar value. A STRING borrows `s` (len bytes, need not be NUL
 * terminated, may contain NUL); maps and filters copy what they keep. */
typedef struct iqdb_value {
    iqdb_type type;
    size_t len; /* STRING only */
    union {
        const char *s;
        int64_t i;
        double d;
        int b;
    } v;
} iqdb_value;

static inline iqdb_value iqdb_value_null(void)
{
    iqdb_value x;
    x.type = IQDB_TYPE_NULL;
    x.len = 0;
    x.v.i = 0;
    return x;
}
/* A NUL-terminated string value (NULL becomes the empty string). */
IQDB_API iqdb_value iqdb_value_str(const char *s);
IQDB_API iqdb_value iqdb_value_strn(const char *s, size_t len);
IQDB_API iqdb_value iqdb_value_int(int64_t i);
IQDB_API iqdb_value iqdb_value_double(double d);
IQDB_API iqdb_value iqdb_value_bool(int b);

/* A new, empty metadata map, or NULL when out of memory. Free with
 * iqdb_meta_free(). */
IQDB_API iqdb_meta *iqdb_meta_new(void);
/* Free a map; NULL is accepted. */
IQDB_API void iqdb_meta_free(iqdb_meta *m);
/* A deep copy, or NULL when out of memory. */
IQDB_API iqdb_meta *iqdb_meta_clone(const iqdb_meta *m);

/* Set key (NUL-terminated, 1..IQDB_META_MAX_KEY bytes) to a copy of v,
 * replacing any previous value. Returns 0, IQDB_EINVAL (bad key, bad
 * type, string too long, double NaN, map full) or IQDB_ENOMEM. */
IQDB_API int iqdb_meta_set(iqdb_meta *m, const char *key, iqdb_value v);
/* Remove key; returns 0 whether or not it was present. */
IQDB_API int iqdb_meta_unset(iqdb_meta *m, const char *key);
/* Number of entries. */
IQDB_API size_t iqdb_meta_count(const iqdb_meta *m);
/* Look key up. Returns 0 and sets *out (strings borrowed from the map,
 * valid until it is changed or freed), or IQDB_ENOTFOUND. */
IQDB_API int iqdb_meta_get(const iqdb_meta *m, const char *key,
                           iqdb_value *out);
/* The i-th entry in key order (bytewise ascending), 0 <= i < count.
 * Borrowed pointers as for iqdb_meta_get. Returns 0 or IQDB_ERANGE. */
IQDB_API int iqdb_meta_at(const iqdb_meta *m, size_t i, const char **key,
                          iqdb_value *out);

/* ------------------------------------------------------------------ */
/* Filters                                                              */
/*
 * A filter is a predicate over a record's metadata. Leaves compare one
 * field with a constant; and/or/not combine them. Closed world: a leaf
 * over a field that is absent, or whose value has a different type,
 * evaluates to false (so NOT of it is true). INT and DOUBLE are both
 * numbers and compare numerically with each other. Strings order
 * bytewise; booleans and null support only eq, neq and in. A record with
 * no metadata has no fields.
 *
 * Builder functions return a new filter or NULL when out of memory or
 * when an argument is invalid (NULL field, empty field, NaN constant).
 * The combinators take ownership of their filter arguments, also when
 * they fail, and accept NULL arguments (returning NULL), so a whole
 * expression can be built inline and checked once.
 */
IQDB_API iqdb_filter *iqdb_filter_eq(const char *field, iqdb_value v);
IQDB_API iqdb_filter *iqdb_filter_neq(const char *field, iqdb_value v);
IQDB_API iqdb_filter *iqdb_filter_lt(const char *field, iqdb_value v);
IQDB_API iqdb_filter *iqdb_filter_lte(const char *field, iqdb_value v);
IQDB_API iqdb_filter *iqdb_filter_gt(const char *field, iqdb_value v);
IQDB_API iqdb_filter *iqdb_filter_gte(const char *field, iqdb_value v);
/* field equals any of vals[0..n) (n >= 1). */
IQDB_API iqdb_filter *iqdb_filter_in(const char *field, const iqdb_value *vals,
                                     size_t n);
IQDB_API iqdb_filter *iqdb_filter_and(iqdb_filter *a, iqdb_filter *b);
IQDB_API iqdb_filter *iqdb_filter_or(iqdb_filter *a, iqdb_filter *b);
IQDB_API iqdb_filter *iqdb_filter_not(iqdb_filter *a);
/* Free a filter tree; NULL is accepted. */
IQDB_API void iqdb_filter_free(iqdb_filter *f);
/* A deep copy, or NULL when out of memory. */
IQDB_API iqdb_filter *iqdb_filter_clone(const iqdb_filter *f);

/* Longest filter text accepted by the parser, in bytes. */
#define IQDB_FILTER_MAX_TEXT 65536u
/* Deepest nesting of parentheses / NOT / AND / OR accepted. */
#define IQDB_FILTER_MAX_DEPTH 64u

typedef struct iqdb_parse_error {
    size_t offset;      /* byte offset in the text where the error is */
    char message[160];  /* what was expected or found */
} iqdb_parse_error;

/*
 * Parse a filter from text. Grammar (keywords case-insensitive):
 *
 *   expr    := or
 *   or      := and ( "OR" and )*
 *   and     := unary ( "AND" unary )*
 *   unary   := "NOT" unary | "(" expr ")" | leaf
 *   leaf    := field op value | field [ "NOT" ] "IN" "(" value ("," value)* ")"
 *   op      := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
 *   field   := [A-Za-z_][A-Za-z0-9_.]*  |  `any text in backquotes`
 *   value   := "string" | 'string' | integer | decimal | true | false | null
 *
 * Strings accept the escapes \" \' \\ \n \t. Example:
 *   kind = "doc" AND year >= 2026 AND NOT tag IN ("a", "b")
 *
 * Returns 0 and a new filter in *out (free with iqdb_filter_free), or
 * IQDB_EPARSE with *err (if not NULL) giving the byte offset and what was
 * wrong, IQDB_EINVAL for NULL arguments, IQDB_ERANGE for text longer than
 * IQDB_FILTER_MAX_TEXT or nested deeper than IQDB_FILTER_MAX_DEPTH, or
 * IQDB_ENOMEM. The thread's iqdb_errmsg(NULL) carries the same detail.
 */
IQDB_API int iqdb_filter_parse(const char *text, iqdb_filter **out,
                               iqdb_parse_error *err);

/* Evaluate f against m (m may be NULL: no fields). Returns 1 or 0. */
IQDB_API int iqdb_filter_eval(const iqdb_filter *f, const iqdb_meta *m);

/* ------------------------------------------------------------------ */
/* Configuration                                                        */

/* A new configuration for vectors of `dim` floats compared with
 * `metric`, using the "flat" index. Returns NULL when out of memory; an
 * invalid dim or metric is reported by the open call (so a config can be
 * filled in first and checked once). Free with iqdb_config_free(). */
IQDB_API iqdb_config *iqdb_config_new(uint32_t dim, iqdb_metric metric);
IQDB_API void iqdb_config_free(iqdb_config *cfg);

/* Choose the index type by plugin name ("flat", "hnsw", ...). The name
 * is checked when the database is opened. Returns 0, IQDB_EINVAL or
 * IQDB_ENOMEM. */
IQDB_API int iqdb_config_set_index(iqdb_config *cfg, const char *name);

/* Set an index parameter, key=value as text (e.g. "m", "16"). Keys and
 * values are checked by the index plugin when the database is opened:
 * an unknown key or a bad value fails the open with IQDB_EPARAM and a
 * message that names it. Setting a key again replaces its value. */
IQDB_API int iqdb_config_set_param(iqdb_config *cfg, const char *key,
                                   const char *value);

/* Add a directory searched for plugins, before IQDB_PLUGIN_PATH and the
 * configured plugin directory (see iqdb_plugin_add_dir). */
IQDB_API int iqdb_config_add_plugin_dir(iqdb_config *cfg, const char *dir);

/* When a durable database syncs its write-ahead log. */
typedef enum iqdb_fsync {
    /* Every acknowledged write is on stable storage (fdatasync) before the
     * call returns; concurrent writers share one sync (group commit). The
     * default. */
    IQDB_FSYNC_ALWAYS = 0,
    /* A background thread syncs at most every period_ms milliseconds: a
     * power loss can take the writes of the last period. */
    IQDB_FSYNC_PERIODIC = 1,
    /* Sync the log only when a compaction (automatic, flush or close)
     * needs it: a power loss (not a process crash) can take any write
     * since the last compaction. */
    IQDB_FSYNC_NEVER = 2
} iqdb_fsync;

/* Durable databases only (ignored in memory). period_ms (>= 1) is used by
 * IQDB_FSYNC_PERIODIC. Returns 0 or IQDB_EINVAL. */
IQDB_API int iqdb_config_set_fsync(iqdb_config *cfg, iqdb_fsync policy,
                                   uint32_t period_ms);

/* Compress snapshots with the codec plugin `codec` ("zstd", "lz4"; NULL or
 * "none" for none, the default) at `level` (0: the codec's default; zstd
 * takes its negative fast levels to 22, lz4 -65537 to 1, -N meaning
 * acceleration N). Checked at open: an unknown codec fails with
 * IQDB_ENOPLUGIN, and a level the codec refuses with IQDB_EINVAL and the
 * codec's message, before anything is created (a read-only open, which
 * never compresses, checks only the codec). The
 * write-ahead log is never compressed; the snapshot's vectors are (in
 * blocks of about 1 MiB), so they are then read at open rather than
 * memory-mapped. The snapshot records its codec and
 * level; reopening an existing database with another codec or level
 * makes its next flush or close rewrite the snapshot that way (an open
 * with dim 0 and no compression set keeps the stored ones). Returns 0,
 * IQDB_EINVAL or IQDB_ENOMEM. */
IQDB_API int iqdb_config_set_compression(iqdb_config *cfg, const char *codec,
                                         int level);

/* Open read-only: a shared lock that coexists with other read-only
 * openers but not with a writer; writes fail with IQDB_EREADONLY. */
IQDB_API int iqdb_config_set_readonly(iqdb_config *cfg, int readonly);

/* Whether a reopen may rebuild the index from the stored records when the
 * saved index state cannot be loaded (its plugin cannot load, or the
 * state's format is newer than the plugin). Default 1; with 0 such an open
 * fails with IQDB_ENOTSUP naming the plugin. It also decides what happens
 * when the stored index type's plugin is not installed: with 1 the flat
 * index stands in (iqdb_index_name() and iqdb_stat() say "flat"; searches
 * are exact and ignore search parameters; a warning is logged); the
 * database keeps its index type and parameters, its next snapshot saves
 * no index state, and once the plugin is installed again a reopen
 * rebuilds that index. With 0 the open fails with IQDB_ENOPLUGIN naming
 * the plugin. */
IQDB_API int iqdb_config_set_rebuild(iqdb_config *cfg, int allow);

/* How a reopen treats a damaged write-ahead log. By default (0) the log
 * is cut at the first damaged frame and everything before it is kept,
 * also when intact frames follow the damage; what was cut is logged as a
 * warning and reported by iqdb_recovery_report(). With strict = 1, damage
 * that cannot be a torn write (an intact frame after it was written once
 * the damaged frame was already durable, i.e. acknowledged data was
 * corrupted) fails the open with IQDB_ECORRUPT naming the file and offset
 * and leaves the files untouched. */
IQDB_API int iqdb_config_set_strict_recovery(iqdb_config *cfg, int strict);

/* Fold the write-ahead log into a new snapshot automatically once it
 * grows past `bytes` (default 64 MiB; 0 turns automatic compaction off)
 * and past the size of the snapshot itself. A compaction rewrites the
 * snapshot's records; the second condition keeps the bytes it writes
 * within about twice the bytes written to the database, however large it
 * grows (so a large database's log may grow to the snapshot's size). The
 * snapshot of an automatic compaction is written by a thread the library
 * starts for it, while writes go on into a new log ("wal"; the old one
 * is kept as "wal.old" until the snapshot is in place). It leaves the
 * vectors where they were written: the old log, and the snapshot being
 * replaced for the vectors it holds, are kept as segments
 * ("seg.<base>.<salt>", "vec.<id>") that the snapshot reads them from,
 * until no live vector lies in them or the segments would outgrow twice
 * the live vectors (then that compaction writes every vector, as
 * iqdb_flush and iqdb_close always do, and removes the segments). If writing it fails,
 * later writes on the handle fail with IQDB_EREADONLY and a message
 * saying why, as after any failed write. */
IQDB_API int iqdb_config_set_compact_bytes(iqdb_config *cfg, uint64_t bytes);

/* ------------------------------------------------------------------ */
/* Opening and closing                                                  */

/* Open a new, empty in-memory database described by cfg (which is only
 * read, and may be freed right after). On success *out is a handle to be
 * closed with iqdb_close(). Errors: IQDB_EINVAL (NULL argument, dim 0 or
 * above IQDB_MAX_DIM), IQDB_EMETRIC, IQDB_ENOPLUGIN / IQDB_EPLUGIN /
 * IQDB_EABI (index plugin), IQDB_EPARAM (index parameter), IQDB_ENOMEM.
 * The message is read with iqdb_errmsg(NULL). */
IQDB_API int iqdb_open_memory(const iqdb_config *cfg, iqdb **out);

/*
 * Open, or create, the durable database in directory `path` (created when
 * absent; its parent must exist). The directory holds the snapshot
 * ("snapshot"), the write-ahead log ("wal", and "wal.old" while a
 * compaction writes its snapshot), the log segments an automatic
 * compaction's snapshot reads vectors from ("seg.*", "vec.*") and a lock file
 * ("LOCK").
 *
 * Creating: cfg gives dim, metric, index and parameters. Reopening: the
 * stored dim and metric must equal cfg's (else IQDB_ECONFIG naming both),
 * unless cfg's dim is 0, which opens an existing database whatever its
 * dim and metric (read them with iqdb_dim() and iqdb_metric_of(); a
 * missing database is then IQDB_ENOTFOUND and nothing is created);
 * the index type and its parameters are restored from the snapshot,
 * whatever cfg asks for. cfg's fsync policy, compression, read-only flag,
 * rebuild permission, compaction threshold and plugin directories apply
 * to this handle. The WAL is replayed: a torn tail is cut off and every
 * write acknowledged before a crash is there (see docs/FORMAT.md for the
 * policy on damage that is not a torn tail). An uncompressed snapshot's
 * vectors are memory-mapped (private, copy-on-write) rather than copied,
 * so they are held once, in the page cache; that file stays allocated on
 * disk until the handle is closed, even once a compaction has replaced
 * it.
 *
 * Errors (message via iqdb_errmsg(NULL)): IQDB_EINVAL (bad argument, path
 * not a directory, a compression level the codec refuses), IQDB_EEXIST
 * (the directory holds something that is not an iqdb database: it is
 * left untouched), IQDB_ELOCKED (a writable open while another handle, writable or
 * read-only, in this or another process holds the database; a read-only
 * open while a writer does), IQDB_ECONFIG, IQDB_ECORRUPT (file
 * and offset), IQDB_ENOPLUGIN (codec plugin missing, named; index plugin
 * missing when rebuilding is not allowed, see iqdb_config_set_rebuild),
 * IQDB_ENOTSUP (a snapshot or log written in a newer format version),
 * IQDB_EREADONLY (the files may not be written: permissions, a read-only
 * file system), IQDB_EIO, IQDB_ENOSPC, IQDB_ENOMEM, IQDB_ENOTFOUND
 * (read-only open of a missing database; a parent directory that does not
 * exist or is not a directory).
 *
 * Writes after a failed write, fsync or rename of the handle's files are
 * refused with IQDB_EREADONLY until the database is reopened; the failed
 * write was never acknowledged. Concurrent writes already in the log are
 * acknowledged exactly when a sync made them durable, so a reopen without
 * a crash in between holds every acknowledged write and none that failed
 * (after a crash, a failed write may be there too, like any write that
 * was not acknowledged).
 */
IQDB_API int iqdb_open(const char *path, const iqdb_config *cfg, iqdb **out);

/* What the last open of a durable database recovered from its log. */
typedef struct iqdb_recovery {
    uint64_t frames_replayed;  /* log frames applied on open */
    uint64_t bytes_truncated;  /* damaged or torn tail cut off */
    uint64_t frames_discarded; /* intact frames found after the damage and
                                  dropped with it */
    int acknowledged_damage;   /* 1 when the damaged frame had been durable
                                  (corruption, not a torn write) */
    uint64_t damage_offset;    /* byte offset in the log where the cut was
                                  made (when bytes_truncated > 0) */
    const char *damage;        /* why the frame there was rejected, or
                                  "the log file was missing" (static
                                  strings), NULL for a clean log */
} iqdb_recovery;

/* Fill *out for db (all zero for in-memory databases). Returns 0 or
 * IQDB_EINVAL. */
IQDB_API int iqdb_recovery_report(const iqdb *db, iqdb_recovery *out);

/* One finding of iqdb_check(): the file (a path inside the database
 * directory), the byte offset the finding is about (0 when it concerns
 * the whole file), a message, and whether it is damage (1) or a note (0:
 * e.g. a torn log tail that the next writable open cuts off, as it should
 * after a crash). */
typedef void (*iqdb_check_fn)(void *ctx, const char *file, uint64_t offset,
                              int damage, const char *message);

/*
 * Verify the durable database in directory `path` without changing it:
 * the snapshot's header, section table and the checksum of every section
 * (the vectors a chunk at a time, so in little memory),
 * and every frame of the write-ahead log (checksums, sequence, decoding),
 * each reported on its own; then, when none of that is damaged, the full
 * structure through a read-only open (ids, vectors, metadata, the index
 * state loaded through its plugin, the log applied). Each finding is
 * passed to fn (may be NULL). Takes a shared lock, so it fails
 * with IQDB_ELOCKED while a writer holds the database. cfg (may be NULL)
 * supplies plugin directories.
 *
 * Returns 0 when nothing is damaged (notes may have been reported),
 * IQDB_ECORRUPT when damage was found, or the code of what prevented the
 * check (IQDB_ENOTFOUND: no database at path; IQDB_ELOCKED; IQDB_ENOPLUGIN
 * when a codec needed to read the snapshot is missing; IQDB_ENOTSUP for
 * files of a newer format version; IQDB_EIO; IQDB_ENOMEM), with the
 * message via iqdb_errmsg(NULL). A missing index plugin is a note: the
 * flat index stands in (see iqdb_config_set_rebuild), so the index's
 * saved state is not checked.
 */
IQDB_API int iqdb_check(const char *path, const iqdb_config *cfg,
                        iqdb_check_fn fn, void *ctx);

/* Fold the write-ahead log into a new snapshot (written to a temporary
 * file, synced, renamed over the old one, directory synced) and empty the
 * log. A no-op for in-memory databases. On failure nothing acknowledged
 * is lost and the handle refuses further writes; the previous snapshot is
 * intact unless the failure came once the complete new one had replaced
 * it (the directory sync, or emptying the log after it). Returns 0
 * or an error code. */
IQDB_API int iqdb_flush(iqdb *db);

/* Close a database and free everything it owns; NULL is accepted. No
 * other call on db may be running or follow. Results obtained from db
 * stay valid (they own their data). A durable database is compacted
 * first (as iqdb_flush); if that fails the handle is still freed, every
 * acknowledged write is still in the log, and the code is returned. A
 * handle that refuses writes after a failure is not compacted, and close
 * returns that failure's code (the log still holds every acknowledged
 * write). */
IQDB_API int iqdb_close(iqdb *db);

/* Shape of an open database. */
IQDB_API uint32_t iqdb_dim(const iqdb *db);
IQDB_API iqdb_metric iqdb_metric_of(const iqdb *db);
/* Number of records. */
IQDB_API size_t iqdb_count(const iqdb *db);
/* The index type's name (static for the life of db). */
IQDB_API const char *iqdb_index_name(const iqdb *db);

/* A description of an open database, filled by iqdb_stat(). Strings are
 * owned by db and stay valid until it is closed. */
typedef struct iqdb_stats {
    uint32_t dim;
    iqdb_metric metric;
    uint64_t count;            /* records */
    const char *index;         /* index type name */
    const char *index_params;  /* its parameters, "key=value,..." ("" when
                                  none were set: the index's defaults) */
    uint64_t vector_bytes;     /* memory holding the vectors */
    uint64_t index_bytes;      /* memory the index reports (0: unknown) */
    int durable;               /* 1 for iqdb_open, 0 for iqdb_open_memory */
    /* Durable databases only (zero otherwise): */
    int readonly;
    iqdb_fsync fsync;
    uint32_t period_ms;        /* IQDB_FSYNC_PERIODIC */
    const char *codec;         /* snapshot codec of this handle, "none" */
    int codec_level;           /* 0: the codec's default */
    uint64_t snapshot_bytes;   /* size of the snapshot file */
    uint64_t wal_bytes;        /* log in use: header and frames since the
                                  last snapshot, in "wal" (a "wal.old"
                                  that a compaction is still folding, or
                                  that a failure left, is not counted) */
    uint64_t wal_file_bytes;   /* size of the log file (it is preallocated,
                                  so it may be larger than wal_bytes) */
} iqdb_stats;

/* Describe db in *out. Thread-safe with every other call on db. Returns
 * 0, IQDB_EINVAL or IQDB_EIO (a file could not be examined). */
IQDB_API int iqdb_stat(iqdb *db, iqdb_stats *out);


/* ------------------------------------------------------------------ */
/* Records                                                              */

/* Insert, or replace, the record `id` with a copy of vec[0..dim) and of
 * meta (NULL: no metadata). Replacing keeps the count. Errors, each
 * leaving the database unchanged: IQDB_EINVAL (NULL db or vec),
 * IQDB_EEMPTY (dim 0), IQDB_EDIM, IQDB_ENONFINITE (NaN or +-Inf, the
 * message gives the index), IQDB_EID (empty or over-long byte id, bad
 * kind), IQDB_ENOMEM, or an index plugin's error. A durable database
 * adds: IQDB_EREADONLY (a read-only handle, or one that refuses writes
 * after a failure, see iqdb_open), IQDB_EIO and IQDB_ENOSPC (the log
 * could not be written or synced; the write was not acknowledged), and
 * IQDB_ERANGE (the write, one log frame, would pass 1 GiB encoded). */
IQDB_API int iqdb_upsert(iqdb *db, iqdb_id id, const float *vec, uint32_t dim,
                         const iqdb_meta *meta);

/* One record of a batch. */
typedef struct iqdb_record {
    iqdb_id id;
    const float *vector;   /* dim floats */
    const iqdb_meta *meta; /* may be NULL */
} iqdb_record;

/* Upsert n records, all or nothing: if any record is invalid or any step
 * fails, the database is left exactly as before and the message names the
 * failing record's index. Records are applied in order, so when an id
 * repeats within the batch the last one wins. n == 0 is a no-op. Errors
 * as iqdb_upsert; in a durable database a batch is one log frame, at most
 * 1 GiB encoded (about 340,000 records of 784 floats): a larger one is
 * IQDB_ERANGE, to be split by the caller. */
IQDB_API int iqdb_upsert_batch(iqdb *db, const iqdb_record *recs, size_t n,
                               uint32_t dim);

/* Read record id: copies its vector into vec_out[0..dim) (vec_out may be
 * NULL to skip) and, when meta_out is not NULL, sets *meta_out to a new
 * copy of its metadata (NULL when it has none; free with iqdb_meta_free).
 * Returns 0, IQDB_ENOTFOUND, IQDB_EDIM (dim differs from the database's),
 * IQDB_EID, IQDB_EINVAL or IQDB_ENOMEM. */
IQDB_API int iqdb_get(iqdb *db, iqdb_id id, float *vec_out, uint32_t dim,
                      iqdb_meta **meta_out);

/* Delete record id. Idempotent: returns 0 whether or not it was present
 * and, when was_present is not NULL, sets it to 1 or 0. Errors: IQDB_EID,
 * IQDB_EINVAL, or an index plugin's error (the record then stays); in a
 * durable database also IQDB_EREADONLY, IQDB_EIO and IQDB_ENOSPC, as for
 * iqdb_upsert. */
IQDB_API int iqdb_delete(iqdb *db, iqdb_id id, int *was_present);

/* Called by iqdb_foreach() for each record. rec and everything it points
 * to is borrowed for the duration of the call. Return 0 to go on; any
 * other value stops the walk and is returned by iqdb_foreach. The
 * callback must not call functions that write to db. */
typedef int (*iqdb_foreach_fn)(void *ctx, const iqdb_record *rec);

/* Call fn for every record of db, in no particular order, under db's read
 * lock (writers wait until the walk ends; searches and gets proceed).
 * Returns 0 when every record was visited, fn's non-zero value when it
 * stopped the walk, or IQDB_EINVAL. */
IQDB_API int iqdb_foreach(iqdb *db, iqdb_foreach_fn fn, void *ctx);

/* ------------------------------------------------------------------ */
/* Search                                                               */

/* Per-query index parameters as key=value text (e.g. "ef_search"="64").
 * The index checks them at search time: an unknown key or a bad value
 * fails the search with IQDB_EPARAM naming it. */
IQDB_API iqdb_params *iqdb_params_new(void);
IQDB_API void iqdb_params_free(iqdb_params *p);
IQDB_API int iqdb_params_set(iqdb_params *p, const char *key,
                             const char *value);

/* One hit. id, distance and meta are owned by the results object. */
typedef struct iqdb_hit {
    iqdb_id id;             /* BYTES ids point into the results object */
    float distance;         /* smaller is nearer; see the metric table */
    const iqdb_meta *meta;  /* NULL when the record has no metadata */
} iqdb_hit;

/*
 * Top-k nearest records to query[0..dim), nearest first, restricted to
 * records matching filter (NULL: all). When fewer than k records exist or
 * match, all of them are returned. params may be NULL.
 *
 * On success *out is a results object with one query (index 0), owned by
 * the caller and freed with iqdb_results_free(); it owns copies of the ids
 * and metadata, so it stays valid after later writes and after
 * iqdb_close(). Errors: IQDB_EINVAL, IQDB_EEMPTY, IQDB_EDIM,
 * IQDB_ENONFINITE, IQDB_EK (k == 0), IQDB_EPARAM, IQDB_ENOMEM, or the
 * index plugin's error.
 */
IQDB_API int iqdb_search(iqdb *db, const float *query, uint32_t dim, size_t k,
                         const iqdb_filter *filter, const iqdb_params *params,
                         iqdb_results **out);

/* Search nq queries stored row after row in queries[0..nq*dim), in
 * parallel (OpenMP), with a shared filter and params. Result list q
 * answers query q. All queries are validated first; on any error no
 * results are returned and the message names the failing query. */
IQDB_API int iqdb_search_batch(iqdb *db, const float *queries, size_t nq,
                               uint32_t dim, size_t k,
                               const iqdb_filter *filter,
                               const iqdb_params *params, iqdb_results **out);

/* Number of queries answered by r. */
IQDB_API size_t iqdb_results_nqueries(const iqdb_results *r);
/* Number of hits for query q (0 for q out of range). */
IQDB_API size_t iqdb_results_count(const iqdb_results *r, size_t q);
/* The hits for query q, an array of iqdb_results_count(r, q) entries,
 * valid until iqdb_results_free(r); NULL when there are none. */
IQDB_API const iqdb_hit *iqdb_results_hits(const iqdb_results *r, size_t q);
/* Free results; NULL is accepted. */
IQDB_API void iqdb_results_free(iqdb_results *r);

/* ------------------------------------------------------------------ */
/* Plugins                                                              */
/*
 * Plugins are loaded once per process and stay resident. A plugin module
 * named NAME (file NAME.la / NAME.so) is searched for in, in order: the
 * directories added with iqdb_plugin_add_dir() (and those of the config
 * being opened), the colon-separated IQDB_PLUGIN_PATH environment
 * variable (ignored in set-uid/set-gid processes), then the plugin
 * directory chosen at configure time (iqdb_plugin_dir()). An index type
 * or codec named NAME is provided by the module of the same name, or by
 * any already-loaded module that registered it.
 */

typedef enum iqdb_plugin_kind {
    IQDB_PLUGIN_INDEX = 1,
    IQDB_PLUGIN_CODEC = 2
} iqdb_plugin_kind;

typedef struct iqdb_plugin_info {
    const char *name;        /* index type or codec name */
    iqdb_plugin_kind kind;
    const char *version;     /* the module's version string */
    uint32_t abi_major;      /* ABI the module was built against */
    uint32_t abi_minor;
    const char *file;        /* file it was loaded from */
    const char *module;      /* module name */
    const char *description; /* one line */
    uint64_t caps;           /* IQDB_CAP_* flags (index) or 0 */
    uint32_t codec_id;       /* stable codec id (codec) or 0 */
} iqdb_plugin_info;

/* Add a directory to the process-wide plugin search path (searched
 * first, most recently added last). Returns 0, IQDB_EINVAL or
 * IQDB_ENOMEM. Thread-safe. */
IQDB_API int iqdb_plugin_add_dir(const char *dir);

/* The configured plugin directory (static string). */
IQDB_API const char *iqdb_plugin_dir(void);

/* Load the module `name` (a bare module name searched for as above, or a
 * path to a .la/.so file) and register what it provides. Loading an
 * already loaded module is a no-op returning 0. Errors: IQDB_ENOPLUGIN
 * (no such file anywhere; the message lists where it looked),
 * IQDB_EPLUGIN (not loadable, no entry point, malformed table: the
 * message names the file and the symbol or field), IQDB_EABI (the
 * message names the file and both versions). Thread-safe. */
IQDB_API int iqdb_plugin_load(const char *name);

/* Load every module found in the search path, skipping (and logging)
 * those that fail. Returns the number loaded, or a negative code. */
IQDB_API int iqdb_plugin_load_all(void);

/* A snapshot of the registered index types and codecs. On success *out
 * is an array of *n entries; free it with iqdb_plugin_list_free(). The
 * strings in it stay valid for the life of the process. */
IQDB_API int iqdb_plugin_list(iqdb_plugin_info **out, size_t *n);
IQDB_API void iqdb_plugin_list_free(iqdb_plugin_info *list);

#ifdef __cplusplus
}
#endif
#endif /* IQDB_IQDB_H */
