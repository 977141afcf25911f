/*
 * core/durable.c - durable databases: open, logged writes, compaction.
 *
 * A database directory holds "snapshot" (every record as of some WAL
 * sequence number, see snapshot.c), "wal" (every write since, see wal.c),
 * "LOCK", and the segments ("seg.*", "vec.*", see "segments" below) a
 * snapshot written by an automatic compaction reads vectors from.
 * Opening loads the snapshot, then replays the WAL frames newer than it.
 *
 * A write is logged before it is applied, and applied in log order:
 *
 *   1. under wmu: the frame is written to the WAL and gets sequence s;
 *   2. outside any lock: wait until s is durable (under IQDB_FSYNC_ALWAYS;
 *      concurrent writers share one fdatasync: group commit);
 *   3. under wmu: wait for s-1 to be applied, apply s, wake the others.
 *
 * So under IQDB_FSYNC_ALWAYS readers never see a write before it is
 * durable (under PERIODIC and NEVER step 2 is skipped: a write is applied
 * once logged), and the order in memory is the order in the log.
 *
 * Compaction folds the log into a new snapshot in three steps:
 *
 *   1. under wmu, with every logged write applied (sequence S): rotate
 *      the log - "wal" becomes "wal.old" and a new empty "wal" starts at
 *      S + 1 - then, under the store's read lock, encode everything but
 *      the vectors and pin the store (no slot below its limit is reused,
 *      so the vectors the snapshot reads stay as they were at S);
 *   2. with no lock: (automatic compactions) keep "wal.old" as a
 *      segment; write "snapshot.tmp" straight from the vector arena
 *      (only the vectors no segment holds), sync it, rename it over
 *      "snapshot", sync the directory, and delete "wal.old" and the
 *      segments the new snapshot does not use;
 *   3. under wmu: unpin, publish the new snapshot's sequence number.
 *
 * Automatic compaction runs step 2 on a thread of its own, so writers go
 * on logging and applying (into the new "wal") while the snapshot is
 * written; iqdb_flush and iqdb_close run all three in the caller. A
 * crash at any point leaves the old snapshot with "wal.old" and "wal"
 * holding every frame after it, or the new snapshot (with a leftover
 * "wal.old" whose frames it holds): open replays "wal.old" then "wal".
 * When step 2 fails, "wal.old" stays (the handle then refuses writes,
 * like after any failed write), and the next compaction of a later open
 * writes its snapshot without rotating again. If the sync of s fails the handle
 * refuses every later write (the kernel may have dropped the dirty pages;
 * retrying fsync would lie), s is not applied nor acknowledged, and
 * writers behind it fail the same way.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "durable_int.h"
#include "iqdb_int.h"
#include "serial_int.h"
#include "snapshot_int.h"
#include "wal_int.h"

typedef struct iqdb_durable {
    char *dir;
    iqdb_lock *lock;
    iqdb_wal *wal;
    int readonly;
    int sync_policy;
    uint32_t period_ms;
    const iqdb_codec_ops *codec;
    int level;
    uint64_t compact_bytes;
    uint64_t snap_bytes; /* size of the snapshot file on disk */
    pthread_mutex_t wmu;
    pthread_cond_t applied_cv;
    uint64_t applied; /* last sequence number applied in memory */
    int failed;       /* non-zero: refuse writes, and the applying of
                         writes already logged, with this code */
    int stopped;      /* non-zero: refuse new writes (a compaction's
                         snapshot failed; the log is sound) */
    uint64_t snap_seq; /* last frame the snapshot on disk holds */
    uint64_t empty_wal_size; /* size of an empty log (its header) */
    int snap_current; /* the snapshot on disk uses this handle's codec */
    iqdb_recovery recovery;
    pthread_mutex_t spare_mu;
    iqdb_buf spare; /* a frame buffer kept for the next write (spare_mu) */
    /* Compaction (wmu). */
    int old_live;    /* "wal.old" holds frames the snapshot does not */
    int old_found;   /* open found "wal.old" */
    int old_stale;   /* ... holding only frames the snapshot has */
    int old_damaged; /* ... damaged past the snapshot (salvaged) */
    int old_settle;  /* ... and wal's frames dropped: settle at open */
    int bg_active;   /* a thread is writing a snapshot (step 2) */
    int bg_joinable; /* bg_thread has been started and not joined */
    pthread_t bg_thread;
    char failmsg[256]; /* what set failed, when known */
    struct pending *q_head, *q_tail; /* logged, not yet applied (wmu) */
    int syncing; /* a writer is syncing the log for the queue (wmu) */
    /* Log files whose frames hold vectors (see "segments"; wmu):
     * entries 1..nlogs-1, entry 0 unused. */
    struct logent *logs;
    uint32_t nlogs, logcap;
    uint32_t cur_log; /* the entry of "wal", 0 when it has none */
    uint32_t old_log; /* the entry of "wal.old" while old_live */
    int no_links;     /* the file system refused a hard link: no segments */
} iqdb_durable;

/* ---- segments -------------------------------------------------------------
 *
 * A vector is written to disk once by its log frame. An automatic
 * compaction does not write it again: the log it lies in, once rotated
 * out as "wal.old", is kept under a second name, "seg.<base>.<salt>" (a
 * hard link made and synced before the snapshot that needs it is
 * renamed into place), and the snapshot (format 2) records where in
 * that segment each such vector lies. The snapshot being replaced is kept
 * the same way ("vec.<file id>") for the vectors it holds raw, so those
 * a flush or close wrote are not written again either. Only vectors with
 * no home - logged into a file that was reset, or held by a compressed
 * snapshot - are written into the snapshot itself, chunk by chunk; the
 * new snapshot then becomes their home.
 *
 * The store keeps each slot's home (iqdb_store.home: entry of d->logs in
 * the top 16 bits, file offset in the low 48); d->logs says what became
 * of each file: a log still appended to, rotated out and immutable, kept
 * as a segment the snapshot on disk refers to, the snapshot on disk
 * itself, or gone. A segment is
 * removed once a snapshot that no longer refers to it is in place; an
 * explicit flush or close (and an automatic compaction whose segments
 * hold more dead bytes than live ones, see plan_refs) writes a
 * self-contained format 1 snapshot and removes them all. A writable open
 * removes segment files its snapshot does not name (a crash between the
 * link and the rename, or between the rename and the removals). A file
 * system that refuses hard links gets format 1 snapshots only. */
enum { LOG_GONE = 0, LOG_ACTIVE, LOG_SEALED, LOG_SEGMENT, LOG_SNAP };

struct logent {
    uint64_t base, salt; /* the file's header: its name as a segment (base
                            0: a snapshot file, salt its id) */
    uint64_t len;        /* sealed: bytes of frames it holds; a snapshot
                            file: its size */
    int state;           /* LOG_*; LOG_SNAP: the file named "snapshot" now,
                            whose raw vectors are homes too (kept as
                            "vec.<id>" once a newer snapshot needs it) */
};

/* A logged write waiting to be applied (step 3), on its writer's stack,
 * queued in sequence order (wmu). */
typedef struct pending {
    uint64_t seq;
    int (*apply)(iqdb *, void *);
    void *arg;
    int done; /* applied or refused, with result r */
    int r;
    char msg[256]; /* r's message, for a writer another thread served */
    struct pending *next;
} pending;

/* A compaction between its steps 1 and 3. */
typedef struct compaction {
    iqdb *db;
    iqdb_snap_job *job;
    uint64_t seq; /* the snapshot holds frames up to this one */
    int link_old;           /* make wal.old the segment link_name first */
    char link_name[64];
    int link_snap;          /* and "snapshot" the segment snap_name */
    char snap_name[64];
    uint32_t *used;         /* d->logs entries the snapshot refers to */
    uint32_t nused;
    char (*drop)[64];       /* segments to remove once it is in place */
    uint32_t ndrop;
    uint32_t *drop_ent;     /* their d->logs entries */
    uint32_t ndrop_all;     /* then those it uses, up to here */
    int no_links;           /* step 2 found hard links refused */
} compaction;

/* The largest frame buffer kept between writes. A fresh multi-megabyte
 * buffer costs a page fault per 4 KiB on every write (measured: about
 * 1 ms of a 1000 x 784 batch); one buffer of at most this size stays
 * allocated per handle. */
#define SPARE_MAX ((size_t)16 << 20)

/* ---- helpers ------------------------------------------------------------ */

static int join(char *buf, size_t cap, const char *dir, const char *name)
{
    return snprintf(buf, cap, "%s/%s", dir, name) >= (int)cap ? -1 : 0;
}

/* A new d->logs entry (wmu, or before the handle is shared); 0 when the
 * table is full or out of memory: vectors logged there get no home and
 * go into the snapshot as before. */
static uint32_t log_add(iqdb_durable *d, uint64_t base, uint64_t salt,
                        uint64_t len, int state)
{
    if (d->nlogs == 0)
        d->nlogs = 1;
    if (d->nlogs > IQDB_MAX_SEGMENTS)
        return 0;
    if (d->nlogs >= d->logcap) {
        uint32_t cap = d->logcap ? d->logcap * 2 : 16;
        struct logent *p = iqdb__realloc(d->logs, cap * sizeof *p);
        if (p == NULL)
            return 0;
        d->logs = p;
        d->logcap = cap;
    }
    d->logs[d->nlogs] = (struct logent){base, salt, len, state};
    return d->nlogs++;
}

static uint32_t log_add_wal(iqdb_durable *d, iqdb_wal *w, int state)
{
    uint64_t salt, base;
    iqdb__wal_ident(w, &salt, &base);
    return log_add(d, base, salt, 0, state);
}

/* The home of a vector at offset off of log entry e (0 when none). */
static uint64_t home_of(uint32_t e, uint64_t off)
{
    return e != 0 && off <= IQDB_REF_OFF_MASK
               ? (uint64_t)e << IQDB_REF_SHIFT | off
               : 0;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Size of dir/snapshot (0 when it cannot be read: compaction then goes
 * by the threshold alone). */
static uint64_t snapshot_size(const char *dir)
{
    char p[4096];
    struct stat sb;
    if (join(p, sizeof p, dir, "snapshot") != 0 || stat(p, &sb) != 0)
        return 0;
    return (uint64_t)sb.st_size;
}

/* An empty directory, or one holding only what a crashed creation can
 * leave behind, may become a new database. */
/* dir/wal is a log holding nothing: its header and no byte more, as
 * creation makes it (create_new). */
static int is_empty_log(const char *dir)
{
    char p[4096];
    unsigned char h[8];
    struct stat st;
    if (join(p, sizeof p, dir, IQDB_WAL_FILE) != 0 || stat(p, &st) != 0 ||
        !S_ISREG(st.st_mode) || st.st_size != IQDB_WAL_HDR_SIZE)
        return 0;
    FILE *f = fopen(p, "rb");
    if (f == NULL)
        return 0;
    int ok = fread(h, 1, sizeof h, f) == sizeof h &&
             memcmp(h, "IQDBWAL", 8) == 0;
    fclose(f);
    return ok;
}

/* Whether dir holds nothing but what a creation that stopped early
 * leaves: the lock file, temporary files, and an empty log (the log is
 * made before the first snapshot). */
static int dir_is_fresh(const char *dir, int *fresh)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    struct dirent *de;
    *fresh = 1;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 ||
            strcmp(n, "LOCK") == 0 || strcmp(n, "snapshot.tmp") == 0 ||
            strcmp(n, IQDB_WAL_TMP_FILE) == 0 ||
            (strcmp(n, IQDB_WAL_FILE) == 0 && is_empty_log(dir)))
            continue;
        *fresh = 0;
    }
    closedir(d);
    return 0;
}

static void dur_free(iqdb_durable *d)
{
    if (d == NULL)
        return;
    iqdb__wal_close(d->wal);
    iqdb__lock_release(d->lock);
    pthread_mutex_destroy(&d->wmu);
    pthread_cond_destroy(&d->applied_cv);
    pthread_mutex_destroy(&d->spare_mu);
    iqdb__buf_free(&d->spare);
    iqdb__free(d->logs);
    iqdb__free(d->dir);
    iqdb__free(d);
}

/* ---- replay ---------------------------------------------------------------- */

typedef struct replay_ctx {
    iqdb *db;
    uint64_t skip_upto; /* frames already in the snapshot or applied */
    int err;
    uint64_t applied;
    const iqdb_wal *w; /* the log being replayed, for messages */
    uint32_t log;      /* its d->logs entry (0: none) */
} replay_ctx;

static int replay_frame(void *arg, uint64_t seq, const void *payload,
                        size_t len)
{
    replay_ctx *c = arg;
    if (seq <= c->skip_upto)
        return 0;
    c->skip_upto = seq;
    iqdb_batch bt;
    const char *why = "";
    int r = iqdb__dec_batch(payload, len, c->db->dim, &bt, &why);
    if (r != 0) {
        /* The frame passed its checksum, so this is not a torn write. */
        return c->err = iqdb__set_error(
                   NULL, r == IQDB_ENOMEM ? r : IQDB_ECORRUPT,
                   "%s: frame %llu at offset %llu has a good checksum but "
                   "does not decode: %s",
                   iqdb__wal_path(c->w), (unsigned long long)seq,
                   (unsigned long long)iqdb__wal_frame_offset(c->w), why);
    }
    if (bt.op == IQDB_OP_UPSERT) {
        /* Where each vector lies in the file, for compaction. */
        uint64_t at = iqdb__wal_frame_offset(c->w) + IQDB_WAL_FRAME_HDR;
        for (size_t i = 0; i < bt.n; i++)
            bt.vec_at[i] = home_of(c->log, at + bt.vec_at[i]);
        r = iqdb__apply_upserts(c->db, bt.recs, bt.n, bt.vec_at);
    } else
        r = iqdb__apply_delete(c->db, bt.recs[0].id, NULL);
    iqdb__batch_free(&bt);
    if (r != 0) {
        iqdb__retag_error(c->db, NULL);
        c->err = r;
    } else {
        c->applied++;
    }
    return r;
}

/* ---- open ------------------------------------------------------------------- */

/* Compress a few bytes with codec c at level: a level it refuses fails
 * here, with its message, rather than in every compaction. */
static int try_level(const iqdb_codec_ops *c, int level)
{
    static const unsigned char probe[64];
    size_t cap = c->bound(sizeof probe), len = 0;
    unsigned char *dst = cap ? iqdb__malloc(cap) : NULL;
    if (dst == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
    iqdb__set_error(NULL, 0, "%s", "");
    int r = c->compress(probe, sizeof probe, dst, cap, &len, level);
    iqdb__free(dst);
    if (r != 0) {
        char why[256];
        snprintf(why, sizeof why, "%s",
                 iqdb__last_error()[0] ? iqdb__last_error()
                                       : iqdb_strerror(r));
        return iqdb__set_error(NULL, r < 0 ? r : IQDB_EINTERNAL,
                               "compression codec '%s' refuses level %d: %s",
                               c->name, level, why);
    }
    return 0;
}

/* The codec the config names, with its level tried on a few bytes when
 * the handle may write: a level the codec refuses would otherwise pass
 * open (an empty database compresses nothing) and fail every compaction
 * after, including the one at close. */
static int open_codec(const iqdb_config *cfg, const iqdb_codec_ops **out)
{
    *out = NULL;
    if (cfg->codec == NULL)
        return 0;
    int r = iqdb__find_codec(cfg->codec, 0, out);
    if (r != 0)
        return iqdb__set_error(NULL, r, "compression codec '%s': %s",
                               cfg->codec, iqdb__last_error());
    if (cfg->readonly)
        return 0;
    if ((r = try_level(*out, cfg->level)) != 0)
        *out = NULL;
    return r;
}

/* A config describing the stored database, with the caller's plugin dirs. */
static int stored_config(const iqdb_snapshot *sn, const iqdb_config *cfg,
                         iqdb_config **out)
{
    iqdb_config *c = iqdb_config_new(sn->dim, (iqdb_metric)sn->metric);
    int r = c ? iqdb_config_set_index(c, sn->index) : IQDB_ENOMEM;
    for (size_t i = 0; r == 0 && i < sn->nparams; i++)
        r = iqdb_config_set_param(c, sn->params[i].key, sn->params[i].value);
    for (size_t i = 0; r == 0 && i < cfg->ndirs; i++)
        r = iqdb_config_add_plugin_dir(c, cfg->dirs[i]);
    if (r != 0) {
        iqdb_config_free(c);
        return iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
    }
    /* An absent index plugin: flat stands in when a rebuild is allowed
     * (the index is rebuilt from the records either way). */
    c->stand_in = cfg->rebuild;
    *out = c;
    return 0;
}

static int load_existing(iqdb_durable *d, const char *snap,
                         const iqdb_config *cfg, iqdb **out,
                         uint64_t *last_seq, uint32_t *codec_id,
                         int *level,
                         const iqdb_codec_ops **codec_out)
{
    iqdb_snapshot sn;
    int r = iqdb__snapshot_open(snap, &sn);
    if (r != 0)
        return r;
    /* dim 0: open whatever is stored. */
    if (cfg->dim != 0 && (sn.dim != cfg->dim || sn.metric != cfg->metric)) {
        r = iqdb__set_error(NULL, IQDB_ECONFIG,
                            "open: the database has dim %u and metric %s, "
                            "the configuration asks for dim %u and metric %s",
                            sn.dim, iqdb_metric_name((iqdb_metric)sn.metric),
                            cfg->dim,
                            iqdb_metric_name((iqdb_metric)cfg->metric)
                                ? iqdb_metric_name((iqdb_metric)cfg->metric)
                                : "(invalid)");
        goto out;
    }
    const iqdb_codec_ops *codec = NULL;
    if (sn.codec_id != 0 &&
        (r = iqdb__find_codec(sn.codec, sn.codec_id, &codec)) != 0) {
        r = iqdb__set_error(NULL, r,
                            "open: %s is compressed with codec '%s' (id %u), "
                            "which cannot be loaded: %s",
                            snap, sn.codec, sn.codec_id, iqdb__last_error());
        goto out;
    }
    if (codec != NULL && codec->id != sn.codec_id) {
        r = iqdb__set_error(NULL, IQDB_ECORRUPT,
                            "open: %s names codec '%s' with id %u, the "
                            "loaded codec of that name has id %u",
                            snap, sn.codec, sn.codec_id, codec->id);
        goto out;
    }
    iqdb_config *sc = NULL;
    if ((r = stored_config(&sn, cfg, &sc)) != 0)
        goto out;
    iqdb *db = NULL;
    r = iqdb__db_new(sc, &db);
    iqdb_config_free(sc);
    if (r == 0 && (r = iqdb__snapshot_load(db, &sn, codec, cfg->rebuild)) != 0) {
        iqdb_close(db);
        db = NULL;
    }
    /* Its segments become entries 1..n, and the file itself n + 1, as
     * the homes loaded name them. */
    for (uint32_t i = 0; r == 0 && i <= sn.nsegs; i++) {
        if (i == sn.nsegs && !sn.self_homes)
            break;
        uint32_t e = i < sn.nsegs
                         ? log_add(d, sn.segs[i].base, sn.segs[i].salt,
                                   sn.segs[i].len, LOG_SEGMENT)
                         : log_add(d, 0, sn.file_id, sn.file_size, LOG_SNAP);
        if (e != i + 1) {
            iqdb_close(db);
            db = NULL;
            r = iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
        }
    }
    if (r == 0) {
        *out = db;
        *last_seq = sn.last_seq;
        *codec_id = sn.codec_id;
        *level = sn.level;
        *codec_out = codec;
    }
out:
    iqdb__snapshot_close(&sn);
    return r;
}

static int create_new(const char *dir, const iqdb_config *cfg,
                      const iqdb_codec_ops *codec, iqdb **out)
{
    iqdb *db = NULL;
    int r = iqdb__db_new(cfg, &db);
    if (r != 0)
        return r;
    /* The log first (empty, synced, in place), then the snapshot that
     * makes the directory a database: so a database's snapshot always
     * has a log beside it, and one found without (and without wal.old)
     * was removed from outside (open_wal). An empty log left by a
     * creation that stopped before its snapshot is replaced. */
    char wp[4096];
    iqdb_wal *w = NULL;
    iqdb_wal_options o = {IQDB_WAL_NEVER, 100, 1, 0, 1, NULL};
    if (join(wp, sizeof wp, dir, IQDB_WAL_FILE) != 0) {
        r = iqdb__set_error(NULL, IQDB_EINVAL, "open: path too long");
    } else if (iqdb__io()->unlink(wp) != 0 && errno != ENOENT) {
        r = iqdb__set_error(NULL, iqdb__io_status(errno),
                            "open: cannot replace %s: %s", wp,
                            strerror(errno));
    } else if ((r = iqdb__wal_open(dir, &o, &w)) == 0) {
        iqdb__wal_close(w);
        r = iqdb__snapshot_write(db, dir, codec, cfg->level, 0);
    }
    if (r != 0) {
        iqdb__retag_error(db, NULL);
        iqdb_close(db);
        return r;
    }
    *out = db;
    return 0;
}

static int check_dir(const char *path, const iqdb_config *cfg, int *is_new)
{
    /* A read-only open or an open with dim 0 never creates anything. */
    int existing_only = cfg->readonly || cfg->dim == 0;
    const char *why = cfg->readonly ? "read-only open" : "opened with dim 0";
    struct stat st;
    char snap[4096];
    if (join(snap, sizeof snap, path, "snapshot") != 0)
        return iqdb__set_error(NULL, IQDB_EINVAL, "open: path too long");
    if (stat(path, &st) != 0) {
        if (errno == ENOTDIR)
            return iqdb__set_error(NULL, IQDB_ENOTFOUND,
                                   "open: %s: a component of the path is "
                                   "not a directory", path);
        if (errno != ENOENT)
            return iqdb__set_error(NULL, iqdb__io_status(errno),
                                   "open: %s: %s", path, strerror(errno));
        if (existing_only)
            return iqdb__set_error(NULL, IQDB_ENOTFOUND,
                                   "open: %s does not exist (%s)", path, why);
        if (mkdir(path, 0755) != 0) {
            /* Only the database directory itself is created, never its
             * parents: a missing parent is the caller's mistake. */
            if (errno == ENOENT || errno == ENOTDIR)
                return iqdb__set_error(NULL, IQDB_ENOTFOUND,
                                       "open: cannot create %s: its parent "
                                       "directory does not exist", path);
            return iqdb__set_error(NULL, iqdb__io_status(errno),
                                   "open: cannot create %s: %s", path,
                                   strerror(errno));
        }
        *is_new = 1;
        return 0;
    }
    if (!S_ISDIR(st.st_mode))
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "open: %s exists and is not a directory", path);
    int fresh;
    if (dir_is_fresh(path, &fresh) != 0)
        return iqdb__set_error(NULL, iqdb__io_status(errno), "open: %s: %s",
                               path, strerror(errno));
    if (exists(snap)) {
        *is_new = 0;
        return 0;
    }
    if (!fresh)
        return iqdb__set_error(NULL, IQDB_EEXIST,
                               "open: %s is not empty and is not an iqdb "
                               "database (no snapshot file); left untouched",
                               path);
    if (existing_only)
        return iqdb__set_error(NULL, IQDB_ENOTFOUND,
                               "open: %s holds no database (%s)", path, why);
    *is_new = 1;
    return 0;
}

/* The last "/seg." or "/vec." in m, or NULL. */
static const char *last_segment_name(const char *m)
{
    const char *last = NULL;
    for (const char *p = m; (p = strchr(p, '/')) != NULL; p++)
        if (strncmp(p, "/seg.", 5) == 0 || strncmp(p, "/vec.", 5) == 0)
            last = p;
    return last;
}

/* Remove the segment files the snapshot does not name: left by a crash
 * after a compaction made one and before its snapshot was in place, or
 * after a snapshot that no longer needs one was. Failures cost only
 * disk space. */
static void drop_orphan_segments(iqdb_durable *d)
{
    DIR *dh = opendir(d->dir);
    if (dh == NULL)
        return;
    struct dirent *de;
    int gone = 0;
    while ((de = readdir(dh)) != NULL) {
        if (strncmp(de->d_name, "seg.", 4) != 0 &&
            strncmp(de->d_name, "vec.", 4) != 0)
            continue;
        int named = 0;
        for (uint32_t e = 1; e < d->nlogs && !named; e++) {
            char n[64];
            iqdb__segment_name(n, sizeof n, d->logs[e].base, d->logs[e].salt);
            named = d->logs[e].state == LOG_SEGMENT &&
                    strcmp(n, de->d_name) == 0;
        }
        char p[4096];
        if (!named && join(p, sizeof p, d->dir, de->d_name) == 0 &&
            iqdb__io()->unlink(p) == 0)
            gone++;
    }
    closedir(dh);
    if (gone > 0)
        iqdb__io()->fsync_dir(d->dir);
}

/* Record the damage a replay found in file (recovery report, warning). */
static void note_damage(iqdb_durable *d, const char *file,
                        const iqdb_wal_replay_info *info)
{
    d->recovery.bytes_truncated += info->truncated_bytes;
    d->recovery.frames_discarded += info->later_frames;
    if (info->later_durable > 0)
        d->recovery.acknowledged_damage = 1;
    if (info->truncated_bytes == 0)
        return;
    d->recovery.damage_offset = info->valid_end;
    d->recovery.damage = info->damage ? info->damage : "torn write";
    iqdb__host()->log(IQDB_LOG_WARN, NULL,
                      "%s/%s: cut %llu bytes at offset %llu (%s); %llu "
                      "intact frames after the damage dropped%s",
                      d->dir, file, (unsigned long long)info->truncated_bytes,
                      (unsigned long long)info->valid_end,
                      info->damage ? info->damage : "torn write",
                      (unsigned long long)info->later_frames,
                      info->scan_cut ? " (the search for them was cut "
                                       "short by overlapping frame headers: "
                                       "treated as corruption)"
                      : info->later_durable ? " (the damaged frame had been "
                                              "durable: corruption)"
                                            : "");
}

/* Replay "wal.old", the log a compaction rotated out, when it is there
 * (a crash or a failure before that compaction's snapshot was in place).
 * It is only read: the frames newer than the snapshot are applied and
 * the file stays until a snapshot holds them. Sets *next to the sequence
 * number "wal" must start at (at most).
 *
 * Every frame of wal.old was made durable before the rotation, so any
 * damage in it is damage to acknowledged data: with strict recovery the
 * open fails (IQDB_ECORRUPT, the files untouched); otherwise the frames
 * before the damage are kept and everything after it - the rest of
 * wal.old and every frame of wal, which cannot apply over the gap - is
 * dropped and reported (d->old_damaged; open_wal skips wal's frames). */
static int replay_old(iqdb_durable *d, const iqdb_config *cfg, replay_ctx *c,
                      uint64_t last_seq, uint64_t *next)
{
    char p[4096];
    *next = last_seq + 1;
    if (join(p, sizeof p, d->dir, IQDB_WAL_OLD_FILE) != 0 || !exists(p))
        return 0;
    d->old_found = 1;
    iqdb_wal_options o = {IQDB_WAL_NEVER, 100, 0, 1, 1, IQDB_WAL_OLD_FILE};
    iqdb_wal *w = NULL;
    int r = iqdb__wal_open(d->dir, &o, &w);
    if (r != 0)
        return r;
    iqdb__wal_set_prealloc(w, 1);
    iqdb_wal_replay_info info;
    c->w = w;
    c->log = d->old_log = log_add_wal(d, w, LOG_SEALED);
    r = iqdb__wal_replay(w, IQDB_WAL_REPLAY_SALVAGE, replay_frame, c, &info);
    if (d->old_log != 0)
        d->logs[d->old_log].len = info.valid_end;
    if (r != 0) {
        if (c->err == 0)
            iqdb__retag_error(w, NULL);
        iqdb__wal_close(w);
        return r;
    }
    iqdb__wal_close(w);
    if (info.first_seq > last_seq + 1)
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "%s/%s starts at frame %llu but the snapshot "
                               "ends at frame %llu: frames are missing",
                               d->dir, IQDB_WAL_OLD_FILE,
                               (unsigned long long)info.first_seq,
                               (unsigned long long)last_seq);
    /* Damage among frames the snapshot already holds (a leftover of a
     * finished compaction) costs nothing. */
    int damaged = (info.truncated_bytes > 0 || info.later_frames > 0) &&
                  info.next_seq > last_seq;
    if (damaged && cfg->strict_recovery)
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "%s/%s: %s at offset %llu; every frame of "
                               "this log had been durable (strict "
                               "recovery)",
                               d->dir, IQDB_WAL_OLD_FILE,
                               info.damage ? info.damage : "damage",
                               (unsigned long long)info.valid_end);
    if (damaged) {
        info.later_durable = 1; /* acknowledged data */
        d->old_damaged = 1;
        note_damage(d, IQDB_WAL_OLD_FILE, &info);
    }
    if (info.next_seq > *next || damaged) {
        /* Live, or damaged: then it stays until the settling snapshot is
         * in place (removing it first would let a crash before that
         * leave wal starting after a gap, which no open can bridge). */
        if (info.next_seq > *next)
            *next = info.next_seq;
        d->old_live = 1;
    } else {
        if (d->old_log != 0)
            d->logs[d->old_log].state = LOG_GONE;
        d->old_log = 0;
        /* Only frames the snapshot holds: a leftover of a compaction that
         * finished. Removed once the open has succeeded (writable). */
        d->old_stale = 1;
    }
    return 0;
}

/* Replaying wal after wal.old: when wal.old was damaged and wal starts
 * past what survived of it, wal's frames cannot apply over the gap and
 * are dropped (counted); otherwise they are replayed. Decided at the
 * first frame. */
typedef struct wal_replay {
    replay_ctx *c;
    uint64_t expect; /* sequence number wal should start at, at most */
    int old_damaged;
    int decided, dropping;
    uint64_t dropped;
} wal_replay;

static int wal_frame(void *arg, uint64_t seq, const void *payload,
                     size_t len)
{
    wal_replay *w = arg;
    if (!w->decided) {
        w->decided = 1;
        w->dropping = w->old_damaged && seq > w->expect;
    }
    if (w->dropping) {
        w->dropped++;
        return 0;
    }
    return replay_frame(w->c, seq, payload, len);
}

static int open_wal(iqdb *db, iqdb_durable *d, const iqdb_config *cfg,
                    uint64_t last_seq)
{
    replay_ctx c = {db, last_seq, 0, 0, NULL, 0};
    uint64_t next;
    int r = replay_old(d, cfg, &c, last_seq, &next);
    if (r != 0)
        return r;
    /* No wal and no wal.old: creation makes the log before the first
     * snapshot, and nothing removes it after, so it was removed from
     * outside, and with it whatever was written after the snapshot. */
    char wp[4096];
    if (!d->old_found && join(wp, sizeof wp, d->dir, IQDB_WAL_FILE) == 0 &&
        !exists(wp)) {
        if (cfg->strict_recovery)
            return iqdb__set_error(NULL, IQDB_ECORRUPT,
                                   "%s is missing: the snapshot holds the "
                                   "writes up to frame %llu, and any "
                                   "acknowledged after it are lost (strict "
                                   "recovery; an open without it goes on "
                                   "from the snapshot)",
                                   wp, (unsigned long long)last_seq);
        /* (frame 0: the snapshot made at creation, no write yet) */
        d->recovery.damage = "the log file was missing";
        d->recovery.acknowledged_damage = 1;
        iqdb__host()->log(IQDB_LOG_WARN, NULL,
                          "%s is missing: going on from the snapshot "
                          "(frame %llu); writes acknowledged after it, if "
                          "any, are lost",
                          wp, (unsigned long long)last_seq);
    }
    iqdb_wal_options o = {cfg->fsync, cfg->period_ms ? cfg->period_ms : 100,
                          !cfg->readonly, cfg->readonly, next, NULL};
    r = iqdb__wal_open(d->dir, &o, &d->wal);
    if (r == IQDB_ENOTFOUND && cfg->readonly) {
        /* Rotated out and the new log not made yet, or no log at all (see
         * above): nothing more to replay. */
        d->recovery.frames_replayed = c.applied;
        d->applied = next - 1;
        d->snap_seq = last_seq;
        return 0;
    }
    if (r != 0)
        return r;
    /* Appends overwrite pre-written zeros, so an fdatasync carries no file
     * size change (measured: median 187 -> 142 us per synced append). A
     * read-only opener sets it too: it decides how replay reads a zero
     * tail (a clean end, not damage). */
    iqdb__wal_set_prealloc(d->wal, 1);
    iqdb_wal_replay_info info;
    unsigned flags = cfg->strict_recovery ? 0 : IQDB_WAL_REPLAY_SALVAGE;
    wal_replay wr = {&c, next, d->old_damaged, 0, 0, 0};
    c.w = d->wal;
    c.log = d->cur_log = log_add_wal(d, d->wal, LOG_ACTIVE);
    r = iqdb__wal_replay(d->wal, flags, wal_frame, &wr, &info);
    if (r != 0) {
        if (c.err == 0)
            iqdb__retag_error(d->wal, NULL);
        return r;
    }
    if (d->old_damaged && info.first_seq > next) {
        /* Dropped with the damage before them. The handle goes on after
         * them, and iqdb_open settles that in a snapshot at once. */
        d->old_settle = 1;
        d->recovery.frames_replayed = c.applied;
        d->recovery.frames_discarded += wr.dropped;
        note_damage(d, IQDB_WAL_FILE, &info);
        d->applied = iqdb__wal_next_seq(d->wal) - 1;
        d->snap_seq = last_seq;
        if (wr.dropped > 0)
            iqdb__host()->log(IQDB_LOG_WARN, NULL,
                              "%s/wal: %llu frames dropped after the damage "
                              "in wal.old",
                              d->dir, (unsigned long long)wr.dropped);
        return 0;
    }
    /* A log starting after the snapshot's (or wal.old's) end would mean
     * lost frames. */
    if (info.first_seq > next)
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "%s/wal starts at frame %llu but the %s ends "
                               "at frame %llu: frames are missing",
                               d->dir, (unsigned long long)info.first_seq,
                               d->old_live ? "rotated-out log wal.old"
                                           : "snapshot",
                               (unsigned long long)(next - 1));
    if (iqdb__wal_next_seq(d->wal) < next)
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "%s/wal ends at frame %llu, before the end "
                               "of the %s (frame %llu)",
                               d->dir,
                               (unsigned long long)iqdb__wal_next_seq(d->wal) - 1,
                               d->old_live ? "rotated-out log wal.old"
                                           : "snapshot",
                               (unsigned long long)(next - 1));
    d->recovery.frames_replayed = c.applied;
    note_damage(d, IQDB_WAL_FILE, &info);
    d->applied = iqdb__wal_next_seq(d->wal) - 1;
    d->snap_seq = last_seq;
    /* An empty log needs no compaction at close. */
    if (info.frames == 0)
        d->empty_wal_size = iqdb__wal_size(d->wal);
    return 0;
}

int iqdb_open(const char *path, const iqdb_config *cfg, iqdb **out)
{
    int r, is_new = 0;
    if (path == NULL || path[0] == '\0' || cfg == NULL || out == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "open: NULL argument");
    *out = NULL;
    if (cfg->dim != 0 && (cfg->dim > IQDB_MAX_DIM ||
                          iqdb_metric_name((iqdb_metric)cfg->metric) == NULL))
        return iqdb__db_new(cfg, out); /* reports the bad field */
    const iqdb_codec_ops *codec;
    if ((r = open_codec(cfg, &codec)) != 0)
        return r;
    iqdb_durable *d = iqdb__calloc(1, sizeof *d);
    if (d == NULL || (d->dir = iqdb__strdup(path)) == NULL) {
        iqdb__free(d);
        return iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
    }
    pthread_mutex_init(&d->wmu, NULL);
    pthread_cond_init(&d->applied_cv, NULL);
    pthread_mutex_init(&d->spare_mu, NULL);
    d->readonly = cfg->readonly;
    d->sync_policy = cfg->fsync;
    d->period_ms = cfg->fsync == IQDB_FSYNC_PERIODIC
                       ? (cfg->period_ms ? cfg->period_ms : 100)
                       : 0;
    d->codec = codec;
    d->level = cfg->level;
    d->compact_bytes = cfg->compact_bytes;
    iqdb *db = NULL;
    uint64_t last_seq = 0;
    char snap[4096];
    if ((r = check_dir(path, cfg, &is_new)) != 0 ||
        (r = iqdb__lock_acquire(path, !cfg->readonly, &d->lock)) != 0)
        goto fail;
    join(snap, sizeof snap, path, "snapshot");
    /* Look again under the lock: another opener may have created it. */
    if (is_new && exists(snap))
        is_new = 0;
    uint32_t snap_codec = codec ? codec->id : 0;
    int snap_level = codec ? cfg->level : 0;
    const iqdb_codec_ops *stored_codec = NULL;
    r = is_new ? create_new(path, cfg, codec, &db)
               : load_existing(d, snap, cfg, &db, &last_seq, &snap_codec,
                               &snap_level, &stored_codec);
    if (r != 0)
        goto fail;
    /* Opened with dim 0 and no compression asked for: keep the stored
     * codec and level rather than decompress on flush. */
    if (!is_new && cfg->dim == 0 && !cfg->codec_set) {
        d->codec = codec = stored_codec;
        d->level = snap_level;
        /* The stored level, tried as a configured one is: the codec
         * installed now may take another range. */
        if (codec != NULL && !cfg->readonly &&
            (r = try_level(codec, snap_level)) != 0)
            goto fail;
    }
    if ((r = open_wal(db, d, cfg, last_seq)) != 0)
        goto fail;
    /* The snapshot on disk is in this handle's codec and level: a flush
     * with nothing written has nothing to do. Otherwise the next flush or
     * close rewrites it. */
    d->snap_current = snap_codec == (codec ? codec->id : 0) &&
                      (codec == NULL || snap_level == d->level) &&
                      !db->index_unsaved;
    d->snap_bytes = snapshot_size(path);
    if (!cfg->readonly)
        drop_orphan_segments(d);
    if (d->old_stale && !cfg->readonly) {
        /* A finished compaction's leftover; harmless if this fails. */
        char old[4096];
        if (join(old, sizeof old, path, IQDB_WAL_OLD_FILE) == 0)
            iqdb__io()->unlink(old);
    }
    db->dur = d;
    if (d->old_settle && !cfg->readonly) {
        /* Settle the salvage before any new write: a snapshot of what
         * was kept, past the dropped frames, and no wal.old. Otherwise a
         * crash now would replay the damage again and drop what was
         * written after this open with the rest of wal. */
        if ((r = iqdb_flush(db)) != 0) {
            /* wal held only dropped frames: that flush emptied it. The
             * flush's message is the one to report, not close's. */
            char msg[512];
            snprintf(msg, sizeof msg, "%s", iqdb_errmsg(db));
            iqdb_close(db);
            return iqdb__set_error(NULL, r, "%s", msg);
        }
    }
    *out = db;
    return 0;
fail:
    if (db != NULL)
        iqdb_close(db);
    dur_free(d);
    return r;
}

/* ---- writes ------------------------------------------------------------------ */

static int refuse(iqdb *db, iqdb_durable *d)
{
    if (d->readonly)
        return iqdb__set_error(db, IQDB_EREADONLY,
                               "write: %s is open read-only", d->dir);
    return iqdb__set_error(db, IQDB_EREADONLY,
                           "write: an earlier write to %s failed (%s%s%s); "
                           "the handle refuses writes until the database "
                           "is reopened",
                           d->dir,
                           iqdb_strerror(d->failed ? d->failed : d->stopped),
                           d->failmsg[0] ? ": " : "", d->failmsg);
}

/* Stop accepting writes after failure r (wmu held), keeping the calling
 * thread's message for later refusals. */
static int fail(iqdb_durable *d, int r)
{
    if (d->failed == 0) {
        d->failed = r;
        if (d->stopped == 0)
            snprintf(d->failmsg, sizeof d->failmsg, "%s", iqdb__last_error());
    }
    return r;
}

/* Refuse new writes after failure r of a compaction's snapshot (wmu
 * held). Unlike fail(), writes already logged are still applied: the log
 * holding them is sound (they are in wal.old or wal, and acknowledged
 * once applied), so refusing them would report as failed a write a
 * reopen replays. */
static void stop(iqdb_durable *d, int r)
{
    if (d->stopped == 0 && d->failed == 0) {
        d->stopped = r;
        snprintf(d->failmsg, sizeof d->failmsg, "%s", iqdb__last_error());
    }
}

static void compact_auto(iqdb *db, iqdb_durable *d);

/* Automatic compaction is due once the log holds more than the
 * threshold and more than the snapshot itself. A compaction rewrites the
 * whole snapshot, so a fixed threshold alone would rewrite a large
 * database again after every few megabytes of writes (write
 * amplification growing with the database); waiting until the log has
 * grown as large as the snapshot bounds the bytes compaction writes to
 * about twice the bytes written, whatever the size. */
static int wal_is_due(const iqdb_durable *d)
{
    uint64_t w = iqdb__wal_size(d->wal);
    return w > d->compact_bytes && w > d->snap_bytes;
}

/* A buffer to encode a frame into, starting with room for the frame
 * header (iqdb__wal_write_framed): the spare one when no other writer
 * holds it. */
static void frame_buf_take(iqdb_durable *d, iqdb_buf *b)
{
    static const unsigned char hdr[IQDB_WAL_FRAME_HDR];
    pthread_mutex_lock(&d->spare_mu);
    *b = d->spare;
    iqdb__buf_init(&d->spare);
    pthread_mutex_unlock(&d->spare_mu);
    b->len = 0;
    b->oom = 0;
    iqdb__buf_put(b, hdr, sizeof hdr);
}

/* Keep b as the spare when there is none and it is not too large. */
static void frame_buf_give(iqdb_durable *d, iqdb_buf *b)
{
    if (b->p != NULL && b->cap <= SPARE_MAX) {
        pthread_mutex_lock(&d->spare_mu);
        if (d->spare.p == NULL) {
            d->spare = *b;
            iqdb__buf_init(b);
        }
        pthread_mutex_unlock(&d->spare_mu);
    }
    iqdb__buf_free(b);
}

/* Apply the queued writes from the head through `last`, in order
 * (wmu held; every frame up to last->seq is durable as the policy
 * requires). Each gets its result; after a failure the rest are refused,
 * as memory must stay a prefix of the log. */
static void apply_through(iqdb *db, iqdb_durable *d, pending *last)
{
    for (;;) {
        pending *e = d->q_head;
        if (d->failed) {
            e->r = refuse(db, d);
        } else {
            e->r = e->apply(db, e->arg);
            /* Logged but not applied: memory and log now differ, so stop
             * writing; a reopen replays the frame. */
            if (e->r != 0)
                fail(d, e->r);
        }
        if (e->r != 0)
            snprintf(e->msg, sizeof e->msg, "%s", iqdb__last_error());
        d->applied = e->seq;
        e->done = 1;
        d->q_head = e->next;
        if (d->q_head == NULL)
            d->q_tail = NULL;
        if (e == last)
            return;
    }
}

/* Settle the queued writes up to sequence number `upto` after their
 * sync failed with r (wmu held): none is applied or acknowledged, and
 * the handle stops taking writes. */
static void fail_through(iqdb_durable *d, uint64_t upto, int r,
                         const char *msg)
{
    fail(d, r);
    while (d->q_head != NULL && d->q_head->seq <= upto) {
        pending *e = d->q_head;
        e->r = r;
        snprintf(e->msg, sizeof e->msg, "%s", msg);
        d->applied = e->seq;
        e->done = 1;
        d->q_head = e->next;
    }
    if (d->q_head == NULL)
        d->q_tail = NULL;
}

/* Steps 1-3 of the file comment for one write encoded into payload (from
 * frame_buf_take; given back here). Steps 2 and 3 are combined for all
 * the writers waiting at once: under IQDB_FSYNC_ALWAYS one of them, the
 * leader, syncs the log up to the last frame queued, then applies every
 * queued write it covered, in order, and wakes the others once; writes
 * queued meanwhile wait for the next leader. So concurrent writers share
 * a sync and cost one wake-up each, not a hand-over of the mutex per
 * write. Under the other policies a writer applies the queue up to its
 * own write. */
static int logged_write(iqdb *db, iqdb_buf *payload,
                        int (*apply)(iqdb *, void *), void *arg,
                        uint64_t *where)
{
    static const unsigned char zeros[8];
    iqdb_durable *d = db->dur;
    uint64_t seq = 0;
    int r;
    pending me;
    size_t len = payload->oom ? 0 : payload->len - IQDB_WAL_FRAME_HDR;
    /* Room for the frame's zero padding. */
    iqdb__buf_put(payload, zeros, iqdb__wal_frame_size(len) - len);
    if (payload->oom) {
        frame_buf_give(d, payload);
        return iqdb__set_error(db, IQDB_ENOMEM, "write: out of memory");
    }
    pthread_mutex_lock(&d->wmu);
    if (d->readonly || d->failed || d->stopped) {
        /* Built under wmu: another writer may be failing the handle. */
        r = refuse(db, d);
        pthread_mutex_unlock(&d->wmu);
        frame_buf_give(d, payload);
        return r;
    }
    /* The frame goes at the log's end: where[0], in log entry where[1]. */
    if (where != NULL) {
        where[0] = iqdb__wal_size(d->wal);
        where[1] = d->cur_log;
    }
    r = iqdb__wal_write_framed(d->wal, payload->p, len, &seq);
    if (r != 0) {
        iqdb__retag_error(d->wal, db);
        /* The log cuts the failed frame back and takes no more frames,
         * but writes queued before it stay: those its syncs cover are
         * durable and must be applied and acknowledged like any other
         * (stop, not fail). */
        if (r != IQDB_ERANGE && r != IQDB_ENOMEM)
            stop(d, r);
        pthread_mutex_unlock(&d->wmu);
        frame_buf_give(d, payload);
        return r;
    }
    me.seq = seq;
    me.apply = apply;
    me.arg = arg;
    me.done = 0;
    me.r = 0;
    me.msg[0] = '\0';
    me.next = NULL;
    if (d->q_tail != NULL)
        d->q_tail->next = &me;
    else
        d->q_head = &me;
    d->q_tail = &me;
    frame_buf_give(d, payload);
    if (d->sync_policy != IQDB_FSYNC_ALWAYS) {
        apply_through(db, d, &me);
        pthread_cond_broadcast(&d->applied_cv);
    }
    while (!me.done) {
        if (d->syncing) {
            pthread_cond_wait(&d->applied_cv, &d->wmu);
            continue;
        }
        /* Lead: sync every frame queued so far, then apply them. */
        uint64_t upto = d->q_tail->seq;
        d->syncing = 1;
        pthread_mutex_unlock(&d->wmu);
        int s = iqdb__wal_wait(d->wal, upto);
        char msg[256] = "";
        if (s != 0) {
            iqdb__retag_error(d->wal, db);
            snprintf(msg, sizeof msg, "%s", iqdb__last_error());
        }
        pthread_mutex_lock(&d->wmu);
        d->syncing = 0;
        /* After a failure, every queued write the log made durable
         * anyway is applied and acknowledged (a sync led inside the log
         * covers every frame written when it starts, so it may have
         * covered frames past an earlier leader's upto); the rest fails.
         * The log takes no sync after a failure, so none becomes durable
         * later. */
        uint64_t durable = s == 0 ? upto : iqdb__wal_synced_seq(d->wal);
        if (d->q_head != NULL && d->q_head->seq <= durable) {
            pending *last = d->q_head;
            while (last->next != NULL && last->next->seq <= durable)
                last = last->next;
            apply_through(db, d, last);
        }
        if (s != 0)
            fail_through(d, upto, s, msg);
        pthread_cond_broadcast(&d->applied_cv);
    }
    r = me.r;
    /* Compact only when no logged write waits to be applied: the log is
     * rotated at the snapshot's sequence number. A later writer will
     * find the moment; none while a compaction is still writing. */
    if (r == 0 && d->compact_bytes > 0 && !d->bg_active && !d->stopped &&
        !d->failed && wal_is_due(d) &&
        d->applied + 1 == iqdb__wal_next_seq(d->wal))
        compact_auto(db, d);
    pthread_mutex_unlock(&d->wmu);
    if (r != 0)
        iqdb__set_error(db, r, "%s", me.msg);
    return r;
}

typedef struct upsert_arg {
    const iqdb_record *recs;
    size_t n;
    uint64_t *at;      /* each vector's offset in the frame buffer, made
                          its home here; NULL: no homes */
    uint64_t where[2]; /* from logged_write */
} upsert_arg;

static int apply_upsert_cb(iqdb *db, void *arg)
{
    upsert_arg *a = arg;
    if (a->at != NULL)
        for (size_t i = 0; i < a->n; i++)
            a->at[i] = home_of((uint32_t)a->where[1], a->where[0] + a->at[i]);
    return iqdb__apply_upserts(db, a->recs, a->n, a->at);
}

typedef struct delete_arg {
    iqdb_id id;
    int *present;
} delete_arg;

static int apply_delete_cb(iqdb *db, void *arg)
{
    delete_arg *a = arg;
    return iqdb__apply_delete(db, a->id, a->present);
}

int iqdb__durable_upsert(iqdb *db, const iqdb_record *recs, size_t n,
                         uint32_t dim)
{
    iqdb_buf b;
    uint64_t one;
    /* Without room for the homes the write goes on without them. */
    uint64_t *at = n == 1 ? &one : iqdb__malloc(n * sizeof *at);
    frame_buf_take(db->dur, &b);
    iqdb__enc_upserts(&b, recs, n, dim, at);
    upsert_arg a = {recs, n, at, {0, 0}};
    int r = logged_write(db, &b, apply_upsert_cb, &a, a.where);
    if (at != &one)
        iqdb__free(at);
    return r;
}

int iqdb__durable_delete(iqdb *db, iqdb_id id, int *was_present)
{
    iqdb_buf b;
    frame_buf_take(db->dur, &b);
    iqdb__enc_delete(&b, id);
    delete_arg a = {id, was_present};
    return logged_write(db, &b, apply_delete_cb, &a, NULL);
}

/* ---- compaction ------------------------------------------------------------------ */

/* Drop the entries of logs and files that are gone, renumbering the
 * others and the homes in them, so the table does not grow without end
 * (wmu held, no logged write waiting to be applied). Only once enough
 * are gone to be worth a pass over the slots. */
static void logs_compact(iqdb *db, iqdb_durable *d)
{
    uint32_t n = d->nlogs, gone = 0;
    for (uint32_t e = 1; e < n; e++)
        gone += d->logs[e].state == LOG_GONE;
    if (gone < 16 && gone * 2 < n)
        return;
    uint32_t *map = iqdb__calloc(n ? n : 1, sizeof *map);
    if (map == NULL)
        return;
    uint32_t k = 1;
    for (uint32_t e = 1; e < n; e++)
        if (d->logs[e].state != LOG_GONE) {
            map[e] = k;
            d->logs[k++] = d->logs[e];
        }
    iqdb_store *s = &db->store;
    for (uint64_t i = 0; i < s->limit; i++) {
        uint64_t e = s->home[i] >> IQDB_REF_SHIFT;
        if (e != 0)
            s->home[i] = e < n && map[e] != 0
                             ? (uint64_t)map[e] << IQDB_REF_SHIFT |
                                   (s->home[i] & IQDB_REF_OFF_MASK)
                             : 0;
    }
    d->cur_log = map[d->cur_log];
    d->old_log = map[d->old_log];
    d->nlogs = k;
    iqdb__free(map);
}

/* Whether the snapshot on disk reads vectors from segments (wmu). */
static int has_segments(const iqdb_durable *d)
{
    for (uint32_t e = 1; e < d->nlogs; e++)
        if (d->logs[e].state == LOG_SEGMENT)
            return 1;
    return 0;
}

static void compaction_free(compaction *c)
{
    iqdb__free(c->used);
    iqdb__free(c->drop);
    iqdb__free(c->drop_ent);
    c->used = NULL;
    c->drop = NULL;
    c->drop_ent = NULL;
    c->nused = c->ndrop = c->ndrop_all = 0;
}

/* Decide which vectors the snapshot leaves in segments (wmu held, the
 * job prepared): with refs (an automatic compaction, no codec), every
 * live vector whose log is rotated out or already a segment, unless
 * those segments would be more than twice the database's live vectors
 * (plus the compaction threshold): then this snapshot is written whole,
 * and the dead bytes go with the segments. So segments never take more
 * than about twice the vectors' size on disk, and a snapshot written
 * whole costs no more than the dead bytes it drops. The segments this snapshot does not
 * use are listed for removal. Allocation failures only cost the
 * references: the snapshot is then written whole. */
static void plan_refs(iqdb *db, iqdb_durable *d, compaction *c, int refs_ok)
{
    const iqdb_store *s = &db->store;
    uint64_t limit;
    const unsigned char *live = iqdb__snapshot_job_live(c->job, &limit);
    uint32_t n = d->nlogs;
    uint64_t *cnt = NULL;
    uint32_t *ord = NULL;
    refs_ok = refs_ok && d->codec == NULL && n > 1 && !d->no_links;
    if (refs_ok && ((cnt = iqdb__calloc(n, sizeof *cnt)) == NULL ||
                    (ord = iqdb__calloc(n, sizeof *ord)) == NULL))
        refs_ok = 0;
    uint64_t homed = 0, seg_bytes = 0;
    uint32_t nused = 0;
    for (uint64_t i = 0; refs_ok && i < limit; i++) {
        uint64_t e = s->home[i] >> IQDB_REF_SHIFT;
        if (((live[i >> 3] >> (i & 7)) & 1) && e != 0 && e < n &&
            (d->logs[e].state == LOG_SEALED ||
             d->logs[e].state == LOG_SEGMENT ||
             d->logs[e].state == LOG_SNAP)) {
            cnt[e]++;
            homed++;
        }
    }
    for (uint32_t e = 1; refs_ok && e < n; e++)
        if (cnt[e] > 0) {
            seg_bytes += d->logs[e].len;
            nused++;
        }
    /* The live vectors, homed or not: what writing the snapshot whole
     * costs. At most 2^40 slots of at most 2^18 bytes: no overflow. */
    uint64_t live_bytes = s->count * (uint64_t)db->dim * 4;
    if (refs_ok && (homed == 0 || (seg_bytes > d->compact_bytes &&
                                   seg_bytes - d->compact_bytes >
                                       2 * live_bytes)))
        refs_ok = 0;
    uint64_t *refs = NULL;
    iqdb_snap_seg *segs = NULL;
    uint32_t *kept = NULL;
    if (refs_ok &&
        ((refs = iqdb__malloc(limit ? (size_t)limit * 8 : 8)) == NULL ||
         (segs = iqdb__malloc(nused * sizeof *segs)) == NULL ||
         (kept = iqdb__malloc(nused * sizeof *kept)) == NULL ||
         (c->used = iqdb__malloc(nused * sizeof *c->used)) == NULL)) {
        iqdb__free(refs);
        refs = NULL;
        refs_ok = 0;
    }
    if (refs_ok) {
        uint32_t k = 0;
        for (uint32_t e = 1; e < n; e++)
            if (cnt[e] > 0) {
                ord[e] = ++k;
                segs[k - 1] = (iqdb_snap_seg){d->logs[e].base, d->logs[e].salt,
                                              d->logs[e].len};
                c->used[k - 1] = e;
            }
        for (uint64_t i = 0; i < limit; i++) {
            uint64_t h = s->home[i], e = h >> IQDB_REF_SHIFT;
            refs[i] = ((live[i >> 3] >> (i & 7)) & 1) && e != 0 && e < n &&
                              ord[e] != 0
                          ? (uint64_t)ord[e] << IQDB_REF_SHIFT |
                                (h & IQDB_REF_OFF_MASK)
                          : 0;
        }
        if (iqdb__snapshot_set_refs(c->job, refs, segs, nused, kept) != 0) {
            refs_ok = 0;
            memset(ord, 0, n * sizeof *ord);
        } else {
            /* Only the segments some reference still names (a chunk
             * with a vector of no home is written whole, references
             * and all). */
            for (uint32_t u = 0; u < nused; u++) {
                uint32_t e = c->used[u];
                ord[e] = kept[u];
                if (kept[u] != 0)
                    c->used[c->nused++] = e;
            }
        }
        if (c->nused == 0) {
            refs_ok = 0;
            iqdb__free(c->used);
            c->used = NULL;
        }
    }
    iqdb__free(segs);
    iqdb__free(kept);
    if (refs_ok && d->old_log != 0 && ord[d->old_log] != 0 &&
        d->logs[d->old_log].state == LOG_SEALED) {
        c->link_old = 1;
        iqdb__segment_name(c->link_name, sizeof c->link_name,
                           d->logs[d->old_log].base, d->logs[d->old_log].salt);
    }
    /* The snapshot file being replaced, kept for the vectors it holds. */
    for (uint32_t e = 1; refs_ok && e < n; e++)
        if (d->logs[e].state == LOG_SNAP && ord[e] != 0) {
            c->link_snap = 1;
            iqdb__segment_name(c->snap_name, sizeof c->snap_name, 0,
                               d->logs[e].salt);
        }
    /* The segments on disk: first those this snapshot does not use (to
     * remove once it is in place), then those it does (removed too if
     * step 2 has to write every vector after all). */
    uint32_t nseg = 0;
    for (uint32_t e = 1; e < n; e++)
        nseg += d->logs[e].state == LOG_SEGMENT;
    if (nseg > 0 && (c->drop = iqdb__malloc(nseg * sizeof *c->drop)) != NULL &&
        (c->drop_ent = iqdb__malloc(nseg * sizeof *c->drop_ent)) != NULL) {
        for (int used = 0; used < 2; used++) {
            for (uint32_t e = 1; e < n; e++)
                if (d->logs[e].state == LOG_SEGMENT &&
                    (ord != NULL && ord[e] != 0) == used) {
                    iqdb__segment_name(c->drop[c->ndrop_all],
                                       sizeof c->drop[0], d->logs[e].base,
                                       d->logs[e].salt);
                    c->drop_ent[c->ndrop_all++] = e;
                }
            if (!used)
                c->ndrop = c->ndrop_all;
        }
    }
    iqdb__free(cnt);
    iqdb__free(ord);
}

/* Step 1 (file comment): wmu held, every logged write applied. refs:
 * an automatic compaction, which may leave vectors in segments. */
static int compact_begin(iqdb *db, iqdb_durable *d, compaction *c, int refs)
{
    int r;
    memset(c, 0, sizeof *c);
    /* No logged write waits to be applied here: the table may shrink. */
    logs_compact(db, d);
    /* A "wal.old" still holding frames the snapshot lacks (a compaction
     * that failed, or a crash before one finished) must not be replaced:
     * this snapshot will hold them, and the log is not rotated. */
    if (!d->old_live) {
        uint64_t end = iqdb__wal_size(d->wal);
        r = iqdb__wal_rotate(d->wal, IQDB_WAL_OLD_FILE);
        if (r != 0) {
            iqdb__retag_error(d->wal, db);
            return fail(d, r);
        }
        /* The file holding the vectors logged so far is wal.old now,
         * immutable. */
        if (d->cur_log != 0) {
            d->logs[d->cur_log].state = LOG_SEALED;
            d->logs[d->cur_log].len = end;
        }
        d->old_log = d->cur_log;
        d->cur_log = log_add_wal(d, d->wal, LOG_ACTIVE);
        d->old_live = 1;
        d->empty_wal_size = iqdb__wal_size(d->wal);
    } else if ((r = iqdb__wal_sync(d->wal)) != 0) {
        /* The snapshot will hold wal's frames and wal.old then goes: under
         * NEVER or PERIODIC they must first be durable (the rotation
         * does this itself), or a power loss would leave a wal ending
         * before the snapshot with nothing to bridge them. */
        iqdb__retag_error(d->wal, db);
        return fail(d, r);
    }
    c->db = db;
    c->seq = d->applied;
    pthread_rwlock_rdlock(&db->lock);
    r = iqdb__snapshot_prepare(db, d->codec, d->level, c->seq, &c->job);
    if (r == 0) {
        uint64_t limit;
        const unsigned char *live = iqdb__snapshot_job_live(c->job, &limit);
        iqdb__store_pin(&db->store, live, limit);
    }
    pthread_rwlock_unlock(&db->lock);
    if (r != 0)
        stop(d, r); /* wal.old stays; the log is sound */
    else
        plan_refs(db, d, c, refs);
    return r;
}

/* Give file `name` (wal.old, or the snapshot being replaced) its segment
 * name `seg`: a second name, synced by make_segments before a snapshot
 * refers to it. A leftover of that name (an attempt that failed before
 * its snapshot was in place) is the same file or a stale copy:
 * replaced. */
static int make_link(iqdb_durable *d, const compaction *c, const char *name,
                     const char *seg)
{
    char from[4096], to[4096];
    const iqdb_io *io = iqdb__io();
    if (join(from, sizeof from, d->dir, name) != 0 ||
        join(to, sizeof to, d->dir, seg) != 0)
        return iqdb__set_error(c->db, IQDB_EINVAL, "compaction: path too long");
    int r = io->link(from, to);
    if (r != 0 && errno == EEXIST && io->unlink(to) == 0)
        r = io->link(from, to);
    if (r != 0 && (errno == EPERM || errno == ENOTSUP ||
                   errno == EOPNOTSUPP || errno == EMLINK ||
                   errno == ENOSYS || errno == EXDEV))
        return IQDB_ENOTSUP; /* a file system without hard links */
    if (r != 0) {
        int e = errno;
        return iqdb__set_error(c->db, iqdb__io_status(e),
                               "compaction: cannot keep %s as %s: %s", from,
                               to, strerror(e));
    }
    return 0;
}

/* Keep wal.old and the replaced snapshot, as the plan says, under their
 * segment names, and sync the directory. IQDB_ENOTSUP: the file system
 * refuses hard links. */
static int make_segments(iqdb_durable *d, const compaction *c)
{
    int r = 0;
    if (c->link_old)
        r = make_link(d, c, IQDB_WAL_OLD_FILE, c->link_name);
    if (r == 0 && c->link_snap &&
        (r = make_link(d, c, "snapshot", c->snap_name)) != 0 && c->link_old) {
        /* No snapshot will name the first link: take it back (the next
         * writable open would remove it otherwise). */
        char p[4096];
        if (join(p, sizeof p, d->dir, c->link_name) == 0)
            iqdb__io()->unlink(p);
    }
    if (r != 0)
        return r;
    if (iqdb__io()->fsync_dir(d->dir) != 0) {
        int e = errno;
        return iqdb__set_error(c->db, iqdb__io_status(e),
                               "compaction: directory fsync of %s failed: %s",
                               d->dir, strerror(e));
    }
    return 0;
}

/* Step 2: no lock held. */
static int compact_write(iqdb_durable *d, compaction *c)
{
    int r = c->link_old || c->link_snap ? make_segments(d, c) : 0;
    if (r == IQDB_ENOTSUP) {
        /* No hard links here: this snapshot holds every vector, and no
         * later compaction of the handle tries again. */
        iqdb__snapshot_clear_refs(c->job);
        iqdb__free(c->used);
        c->used = NULL;
        c->nused = 0;
        c->ndrop = c->ndrop_all;
        c->no_links = 1;
        r = 0;
    }
    if (r == 0)
        r = iqdb__snapshot_commit(c->job, d->dir);
    if (r == 0) {
        char p[4096];
        int gone = 0;
        /* The snapshot holds every frame of wal.old (or the segment that
         * is its second name does). Where an unlink fails or is lost in
         * a crash, the next open removes the file. */
        if (join(p, sizeof p, d->dir, IQDB_WAL_OLD_FILE) == 0 &&
            iqdb__io()->unlink(p) == 0)
            gone++;
        for (uint32_t i = 0; i < c->ndrop; i++)
            if (join(p, sizeof p, d->dir, c->drop[i]) == 0 &&
                iqdb__io()->unlink(p) == 0)
                gone++;
        if (gone > 0)
            iqdb__io()->fsync_dir(d->dir); /* fewer leftovers */
    }
    return r;
}

/* Step 3: wmu held. r is step 2's result. */
static void compact_end(iqdb *db, iqdb_durable *d, compaction *c, int r)
{
    iqdb__store_unpin(&db->store);
    if (r != 0) {
        iqdb__snapshot_job_free(c->job);
        c->job = NULL;
        compaction_free(c);
        stop(d, r);
        return;
    }
    for (uint32_t i = 0; i < c->nused; i++)
        d->logs[c->used[i]].state = LOG_SEGMENT;
    for (uint32_t i = 0; i < c->ndrop; i++)
        d->logs[c->drop_ent[i]].state = LOG_GONE;
    if (d->old_log != 0 && d->logs[d->old_log].state == LOG_SEALED)
        d->logs[d->old_log].state = LOG_GONE; /* removed with wal.old */
    d->old_log = 0;
    /* The snapshot file replaced: kept as a segment (used) or gone. */
    for (uint32_t e = 1; e < d->nlogs; e++)
        if (d->logs[e].state == LOG_SNAP)
            d->logs[e].state = LOG_GONE;
    d->no_links |= c->no_links;
    /* The new file is a home for the vectors it holds raw (the slots
     * live at its start: pinned till now, so none was reused). */
    uint64_t id, size;
    iqdb__snapshot_job_file(c->job, &id, &size);
    if (d->codec == NULL) {
        uint32_t e = log_add(d, 0, id, size, LOG_SNAP);
        iqdb__snapshot_job_homes(c->job, e, db->store.home);
    }
    iqdb__snapshot_job_free(c->job);
    c->job = NULL;
    /* Not while a logged write waits to be applied: it holds its log's
     * entry number (logged_write), which this would change. */
    if (d->q_head == NULL)
        logs_compact(db, d);
    compaction_free(c);
    d->snap_seq = c->seq;
    d->snap_current = 1;
    d->snap_bytes = snapshot_size(d->dir);
    d->old_live = 0;
}

void (*iqdb__compact_hook)(const char *dir);
atomic_int iqdb__compact_refs = 1;

static void *compact_main(void *arg)
{
    compaction *c = arg;
    iqdb *db = c->db;
    iqdb_durable *d = db->dur;
    if (iqdb__compact_hook != NULL)
        iqdb__compact_hook(d->dir);
    int r = compact_write(d, c);
    if (r != 0)
        iqdb__host()->log(IQDB_LOG_WARN, NULL,
                          "automatic compaction of %s failed: %s", d->dir,
                          iqdb__last_error());
    pthread_mutex_lock(&d->wmu);
    compact_end(db, d, c, r);
    d->bg_active = 0;
    pthread_cond_broadcast(&d->applied_cv);
    pthread_mutex_unlock(&d->wmu);
    iqdb__free(c);
    return NULL;
}

/* Start a compaction whose snapshot is written on a thread of its own
 * (wmu held, every logged write applied, none running). */
static void compact_auto(iqdb *db, iqdb_durable *d)
{
    if (d->bg_joinable) {
        /* The last one has finished (bg_active is clear): reap it. */
        pthread_join(d->bg_thread, NULL);
        d->bg_joinable = 0;
    }
    compaction *c = iqdb__malloc(sizeof *c);
    int r = c ? compact_begin(db, d, c, atomic_load(&iqdb__compact_refs))
              : iqdb__set_error(db, IQDB_ENOMEM, "compaction: out of memory");
    if (c == NULL || r != 0) {
        iqdb__free(c);
        iqdb__host()->log(IQDB_LOG_WARN, NULL,
                          "automatic compaction of %s failed: %s", d->dir,
                          iqdb__last_error());
        return;
    }
    if (pthread_create(&d->bg_thread, NULL, compact_main, c) == 0) {
        /* It cannot finish before wmu is released. */
        d->bg_active = 1;
        d->bg_joinable = 1;
        return;
    }
    /* No thread: write the snapshot here. */
    r = compact_write(d, c);
    compact_end(db, d, c, r);
    iqdb__free(c);
    if (r != 0)
        iqdb__host()->log(IQDB_LOG_WARN, NULL,
                          "automatic compaction of %s failed: %s", d->dir,
                          iqdb__last_error());
}

/* Wait until no compaction thread runs and every logged write is applied
 * (or the handle failed), then reap the thread. wmu held. */
static void quiesce(iqdb_durable *d)
{
    while (d->bg_active ||
           (d->wal != NULL && !d->failed &&
            d->applied + 1 != iqdb__wal_next_seq(d->wal)))
        pthread_cond_wait(&d->applied_cv, &d->wmu);
    if (d->bg_joinable) {
        pthread_join(d->bg_thread, NULL);
        d->bg_joinable = 0;
    }
}

/* A whole compaction in the caller. wmu held, quiesced. */
static int compact_locked(iqdb *db, iqdb_durable *d)
{
    if (d->readonly || d->failed || d->stopped)
        return refuse(db, d);
    /* Nothing written since the snapshot, which is already in this
     * handle's compression and holds every vector: nothing to do. */
    if (d->snap_current && !d->old_live && !has_segments(d) &&
        d->applied == d->snap_seq &&
        iqdb__wal_next_seq(d->wal) == d->applied + 1 &&
        iqdb__wal_size(d->wal) <= d->empty_wal_size)
        return 0;
    compaction c;
    int rotates = !d->old_live;
    int r = compact_begin(db, d, &c, 0);
    if (r != 0)
        return r;
    r = compact_write(d, &c);
    compact_end(db, d, &c, r);
    if (r == 0 && !rotates) {
        /* Not rotated (wal.old was live), so wal still holds frames the
         * snapshot now has, all of them (wmu held throughout): empty it,
         * as a flush promises. A failure here loses nothing. */
        if (d->cur_log != 0)
            d->logs[d->cur_log].state = LOG_GONE; /* replaced */
        d->cur_log = 0;
        if ((r = iqdb__wal_reset(d->wal)) != 0) {
            iqdb__retag_error(d->wal, db);
            return fail(d, r);
        }
        d->cur_log = log_add_wal(d, d->wal, LOG_ACTIVE);
        d->empty_wal_size = iqdb__wal_size(d->wal);
    }
    return r;
}

int iqdb_recovery_report(const iqdb *db, iqdb_recovery *out)
{
    if (db == NULL || out == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "recovery: NULL argument");
    memset(out, 0, sizeof *out);
    if (db->dur != NULL)
        *out = db->dur->recovery;
    return 0;
}

int iqdb_flush(iqdb *db)
{
    if (db == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "flush: NULL database");
    iqdb_durable *d = db->dur;
    if (d == NULL)
        return 0;
    pthread_mutex_lock(&d->wmu);
    /* Wait for writes already logged to be applied and for a compaction
     * still writing its snapshot. */
    quiesce(d);
    int r = compact_locked(db, d);
    pthread_mutex_unlock(&d->wmu);
    return r;
}

int iqdb__durable_close(iqdb *db)
{
    iqdb_durable *d = db->dur;
    int r = 0;
    pthread_mutex_lock(&d->wmu);
    quiesce(d);
    pthread_mutex_unlock(&d->wmu);
    if (!d->readonly && !d->failed && !d->stopped)
        r = iqdb_flush(db);
    else if (!d->readonly) {
        /* No final compaction on a handle that failed: say so, as a
         * failed one would. */
        int f = d->failed ? d->failed : d->stopped;
        r = iqdb__set_error(db, f,
                            "close: %s was not compacted after an earlier "
                            "failure (%s%s%s); every acknowledged write is "
                            "in the log, which the next open replays",
                            d->dir, iqdb_strerror(f),
                            d->failmsg[0] ? ": " : "", d->failmsg);
    }
    int c = iqdb__wal_close(d->wal);
    d->wal = NULL;
    if (r == 0 && c != 0 && !d->readonly) {
        iqdb__retag_error(NULL, db);
        r = c;
    }
    db->dur = NULL;
    dur_free(d);
    return r;
}

/* ---- description and verification -------------------------------------- */

int iqdb__durable_stat(iqdb *db, iqdb_stats *st)
{
    iqdb_durable *d = db->dur;
    char path[4096];
    struct stat sb;
    st->readonly = d->readonly;
    st->fsync = (iqdb_fsync)d->sync_policy;
    st->period_ms = d->period_ms;
    st->codec = d->codec ? d->codec->name : "none";
    st->codec_level = d->codec ? d->level : 0;
    st->wal_bytes = iqdb__wal_size(d->wal);
    if (join(path, sizeof path, d->dir, "snapshot") != 0 ||
        stat(path, &sb) != 0)
        return iqdb__set_error(db, IQDB_EIO, "stat: %s/snapshot: %s", d->dir,
                               strerror(errno));
    st->snapshot_bytes = (uint64_t)sb.st_size;
    /* A read-only handle may find only wal.old (no log yet). */
    if (join(path, sizeof path, d->dir, IQDB_WAL_FILE) != 0 ||
        (stat(path, &sb) != 0 && (errno != ENOENT || d->wal != NULL)))
        return iqdb__set_error(db, IQDB_EIO, "stat: %s/%s: %s", d->dir,
                               IQDB_WAL_FILE, strerror(errno));
    st->wal_file_bytes = d->wal != NULL ? (uint64_t)sb.st_size : 0;
    return 0;
}

typedef struct check_ctx {
    iqdb_check_fn fn;
    void *ctx;
    const char *dir;
    int damaged;
} check_ctx;

static void finding(check_ctx *c, const char *file, uint64_t off, int damage,
                    const char *msg)
{
    if (damage)
        c->damaged = 1;
    if (c->fn != NULL)
        c->fn(c->ctx, file, off, damage, msg);
}

/* Header, section table and every section's checksum and decoding.
 * Sets *dim when the header could be read. */
static int check_snapshot_sections(check_ctx *c, const char *snap,
                                   uint32_t *dim, uint64_t *last_seq)
{
    iqdb_snapshot sn;
    int r = iqdb__snapshot_open(snap, &sn);
    if (r == IQDB_ECORRUPT) {
        finding(c, "snapshot", 0, 1, iqdb__last_error());
        return 0;
    }
    if (r != 0)
        return r;
    *dim = sn.dim;
    *last_seq = sn.last_seq;
    const iqdb_codec_ops *codec = NULL;
    if (sn.codec_id != 0 &&
        (r = iqdb__find_codec(sn.codec, sn.codec_id, &codec)) != 0) {
        r = iqdb__set_error(NULL, r,
                            "check: %s is compressed with codec '%s', which "
                            "cannot be loaded: %s",
                            snap, sn.codec, iqdb__last_error());
        goto out;
    }
    for (uint32_t i = 0; i < sn.nsec; i++) {
        const iqdb_snap_section *sec = &sn.sec[i];
        r = iqdb__snapshot_verify(&sn, sec, codec);
        if (r == IQDB_ECORRUPT) {
            finding(c, "snapshot", sec->offset, 1, iqdb__last_error());
            r = 0;
        } else if (r != 0) {
            goto out;
        }
    }
out:
    iqdb__snapshot_close(&sn);
    return r;
}

/* Decode each log frame (dim 0: the snapshot could not tell the
 * dimension, so only the checksums were verified). */
typedef struct wal_check {
    check_ctx *c;
    uint32_t dim;
    uint64_t bad;
    const char *file;
    const iqdb_wal *w;
} wal_check;

static int check_frame(void *arg, uint64_t seq, const void *payload,
                       size_t len)
{
    wal_check *w = arg;
    if (w->dim == 0)
        return 0;
    iqdb_batch bt;
    const char *why = "";
    int r = iqdb__dec_batch(payload, len, w->dim, &bt, &why);
    if (r == IQDB_ENOMEM)
        return r;
    if (r != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "frame %llu has a good checksum but "
                 "does not decode: %s", (unsigned long long)seq, why);
        finding(w->c, w->file, iqdb__wal_frame_offset(w->w), 1, msg);
        w->bad++;
        return 0;
    }
    iqdb__batch_free(&bt);
    return 0;
}

/* Every frame of one log file, read-only: checksums, sequence,
 * decoding. */
static int check_wal(check_ctx *c, const char *dir, const char *file,
                     uint32_t dim, uint64_t last_seq)
{
    iqdb_wal_options o = {IQDB_WAL_NEVER, 100, 0, 1, 1, file};
    iqdb_wal *w = NULL;
    int r = iqdb__wal_open(dir, &o, &w);
    if (r == IQDB_ENOTFOUND) {
        char old[4096];
        /* As open sees it: missing beside a snapshot is damage. */
        if (strcmp(file, IQDB_WAL_FILE) == 0 &&
            !(join(old, sizeof old, dir, IQDB_WAL_OLD_FILE) == 0 &&
              exists(old))) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "the log file is missing: the snapshot holds the "
                     "writes up to frame %llu, and any acknowledged after "
                     "it are lost",
                     (unsigned long long)last_seq);
            finding(c, file, 0, 1, msg);
        } else {
            finding(c, file, 0, 0, "no log file (the next writable open "
                    "creates it)");
        }
        return 0;
    }
    if (r == IQDB_ECORRUPT) {
        finding(c, file, 0, 1, iqdb__last_error());
        return 0;
    }
    if (r != 0)
        return r;
    iqdb__wal_set_prealloc(w, 1);
    wal_check wc = {c, dim, 0, file, w};
    iqdb_wal_replay_info info;
    r = iqdb__wal_replay(w, IQDB_WAL_REPLAY_SALVAGE, check_frame, &wc, &info);
    if (r == IQDB_ECORRUPT) {
        finding(c, file, 0, 1, iqdb__last_error());
        r = 0;
    } else if (r == 0 && info.truncated_bytes > 0) {
        char msg[512];
        /* A scan cut short proves nothing torn: damage, as in open. */
        int dmg = info.later_frames > 0 || info.scan_cut != 0;
        snprintf(msg, sizeof msg,
                 "%s/%s: %s at offset %llu: %llu bytes%s%s", dir, file,
                 info.damage ? info.damage : "torn write",
                 (unsigned long long)info.valid_end,
                 (unsigned long long)info.truncated_bytes,
                 dmg ? "" : " of torn tail (an interrupted write; the next "
                            "writable open cuts it off)",
                 info.later_frames > 0 ? ", with intact frames after it"
                 : info.scan_cut != 0
                     ? ", and the search for intact frames after it was cut "
                       "short by overlapping frame headers (a crafted file?)"
                     : "");
        finding(c, file, info.valid_end, dmg, msg);
    }
    iqdb__wal_close(w);
    return r;
}

/* The log rotated out by a compaction that had not finished, if any. */
static int check_old_wal(check_ctx *c, const char *dir, uint32_t dim)
{
    char p[4096];
    if (join(p, sizeof p, dir, IQDB_WAL_OLD_FILE) != 0 || !exists(p))
        return 0;
    finding(c, IQDB_WAL_OLD_FILE, 0, 0,
            "a log rotated out by a compaction that did not finish (a "
            "crash or a failed snapshot write); open replays it, and the "
            "next compaction removes it");
    return check_wal(c, dir, IQDB_WAL_OLD_FILE, dim, 0);
}

int iqdb_check(const char *path, const iqdb_config *cfg, iqdb_check_fn fn,
               void *ctx)
{
    if (path == NULL || path[0] == '\0')
        return iqdb__set_error(NULL, IQDB_EINVAL, "check: NULL path");
    char snap[4096];
    if (join(snap, sizeof snap, path, "snapshot") != 0)
        return iqdb__set_error(NULL, IQDB_EINVAL, "check: path too long");
    if (!exists(snap))
        return iqdb__set_error(NULL, IQDB_ENOTFOUND,
                               "check: %s holds no iqdb database (no "
                               "snapshot file)", path);
    check_ctx c = {fn, ctx, path, 0};
    iqdb_lock *lock = NULL;
    int r = iqdb__lock_acquire(path, 0, &lock);
    if (r != 0)
        return r;
    uint32_t dim = 0;
    uint64_t last_seq = 0;
    if ((r = check_snapshot_sections(&c, snap, &dim, &last_seq)) != 0 ||
        (r = check_old_wal(&c, path, dim)) != 0 ||
        (r = check_wal(&c, path, IQDB_WAL_FILE, dim, last_seq)) != 0 ||
        c.damaged)
        goto out;
    /* Every section reads back: now the structure, through a read-only
     * open (records, index state, log frames). */
    iqdb_config *oc = iqdb_config_new(0, (iqdb_metric)0);
    if (oc == NULL) {
        r = iqdb__set_error(NULL, IQDB_ENOMEM, "check: out of memory");
        goto out;
    }
    iqdb_config_set_readonly(oc, 1);
    for (size_t i = 0; cfg != NULL && r == 0 && i < cfg->ndirs; i++)
        r = iqdb_config_add_plugin_dir(oc, cfg->dirs[i]);
    iqdb *db = NULL;
    if (r == 0)
        r = iqdb_open(path, oc, &db);
    iqdb_config_free(oc);
    if (r == IQDB_ECORRUPT) {
        /* Messages name the file by its path in the directory. */
        const char *m = iqdb__last_error(), *file = "snapshot", *sg;
        char wp[4096], op[4096], segname[64];
        if ((sg = strstr(m, "log segment ")) != NULL &&
            (sg = last_segment_name(sg)) != NULL) {
            /* A segment the snapshot needs: its name, after the last
             * "/seg." or "/vec." (the directory's own path may hold
             * one), up to a space or a colon. */
            size_t k = 0;
            for (sg++; sg[k] != '\0' && sg[k] != ' ' && sg[k] != ':' &&
                       k + 1 < sizeof segname;
                 k++)
                segname[k] = sg[k];
            segname[k] = '\0';
            file = segname;
        } else if (join(op, sizeof op, path, IQDB_WAL_OLD_FILE) == 0 &&
                   strstr(m, op) != NULL)
            file = IQDB_WAL_OLD_FILE;
        else if (join(wp, sizeof wp, path, IQDB_WAL_FILE) == 0 &&
                 strstr(m, wp) != NULL && strstr(m, snap) == NULL)
            file = IQDB_WAL_FILE;
        finding(&c, file, 0, 1, m);
        r = 0;
        goto out;
    }
    if (r != 0)
        goto out;
    if (db->stands_in != NULL) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "index plugin '%s' is not installed: its saved state was "
                 "not checked (an open lets the flat index stand in)",
                 db->stands_in);
        finding(&c, "snapshot", 0, 0, msg);
    }
    /* The log's findings were reported by check_wal. */
    iqdb_close(db);
out:
    iqdb__lock_release(lock);
    if (r == 0 && c.damaged)
        r = iqdb__set_error(NULL, IQDB_ECORRUPT, "check: %s is damaged",
                            path);
    return r;
}
