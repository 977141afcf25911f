/*
 * bench/bench_durable.c - measures what durability costs in iqdb, in one
 * run, against SQLite and against the disk itself:
 *
 *  1. Durable upserts of the 60k Fashion-MNIST train vectors (784-d, the
 *     class name as metadata) into a fresh database: one record per call
 *     under IQDB_FSYNC_ALWAYS from 1 and from 8 threads (group commit
 *     should multiply the rate), batches of 1000 under ALWAYS, one record
 *     per call under PERIODIC (10 ms) and NEVER. Beside them: SQLite (WAL
 *     mode, synchronous=FULL, INSERT OR REPLACE of the same rows as BLOBs,
 *     one transaction per row and one per 1000 rows), and the raw latency
 *     of a 4 KiB pwrite + fdatasync in the same directory, appending and
 *     rewriting in place: the floor any per-record durable write pays.
 *     The batch case runs a second time with automatic compaction off,
 *     reported as a diagnostic: the share of its time compaction takes.
 *     The sync-bound cases run in interleaved slices (the batch cases in
 *     alternating whole passes, maintenance included), so a shared or
 *     rate-limited disk treats them alike; each reports records/s and the
 *     median and p99 latency of a call.
 *  2. Open time of a 200k x 128 database (generated data, fixed seed, flat
 *     index): snapshot only, and with a 20k-frame WAL left behind by a
 *     writer process that exited without closing. With the hnsw plugin,
 *     its build time against a reopen that loads the saved graph.
 *  3. Snapshot size and compaction (iqdb_flush) time with no compression,
 *     zstd (default level and 9) and lz4, on both data sets.
 *
 *   bench_durable [--dir DIR] [--max-seconds S] [--quick] [--no-sqlite]
 *                 [--fmnist-dir DIR]
 *
 *   --dir DIR        where the scratch directory is made (default $TMPDIR,
 *                    else /tmp); every database and probe file lives there,
 *                    so every figure is for that one filesystem
 *   --max-seconds S  time bound of each one-record-per-call case and of
 *                    the SQLite cases (default 10; 0.2 with --quick): a
 *                    slow disk would take many minutes for 60k syncs, and
 *                    a rate over a prefix is the same figure
 *   --quick          small sizes for a smoke test (2000 records, a 10k x
 *                    128 database, a 2k-frame WAL, a 2k hnsw graph); a
 *                    few seconds
 *   --no-sqlite      skip SQLite
 *
 * Uses only the public API, sqlite3.h and POSIX. Exit status: 1 on a
 * library or SQLite error (the message is printed), 2 on bad options. A
 * missed target is reported, not failed: the disk may be shared, and
 * bench/ measures rather than tests.
 */
#define _XOPEN_SOURCE 700

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <iqdb/iqdb.h>

#include "benchutil.h"
#include "dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_SQLITE3
#include <sqlite3.h>
#endif

/* Targets from the issue. */
#define TARGET_VS_SQLITE_ROW 1.0   /* iqdb/SQLite per-row, at least */
#define TARGET_VS_SQLITE_BATCH 2.0 /* iqdb/SQLite per-1000, at least */
#define TARGET_FLOOR 1.5           /* floor rate / iqdb rate, at most */
#define TARGET_OPEN_S 0.2          /* snapshot-only open, flat, at most */
#define TARGET_OPEN_VS_BUILD 0.10  /* hnsw reopen / build, at most */

#define BATCH 1000
#define BATCH_PASSES 5 /* whole passes of the batch case (--quick: 2) */
#define THREADS 8
#define PERIOD_MS 10
#define PROBE_BYTES 4096
#define OPEN_RUNS 5
#define RO_RUNS 3
#define HNSW_OPEN_RUNS 3
/* The sync-bound cases run in rounds of slices this long (at least
 * MIN_ROUNDS rounds): short enough that a neighbour's burst of syncs
 * lasting a second or two lands on every case alike. */
#define SLICE_S 0.25
#define MIN_ROUNDS 5

typedef struct opts {
    const char *dir; /* parent of the scratch directory */
    const char *fmnist_dir;
    double max_s;
    int quick;
    int sqlite;
    int rounds; /* interleaved rounds of the sync-bound cases */
} opts;

/* How much of everything one run does. */
typedef struct sizes {
    size_t write_n;  /* part 1 records (the Fashion-MNIST train set) */
    size_t open_n;   /* part 2 database */
    size_t wal_n;    /* part 2 WAL frames */
    size_t hnsw_n;   /* part 2 hnsw database: a prefix of the flat one */
    double probe_s;  /* fdatasync probe budget, each kind */
    size_t probe_max;
} sizes;

/* Rows to write, with their metadata: one map per label value, shared
 * read-only by every writer thread (iqdb.h allows that). */
typedef struct corpus {
    char name[64];
    const float *vec;
    size_t n;
    uint32_t dim;
    const uint8_t *labels; /* n entries, or NULL: no metadata */
    char text[256][32];    /* label value -> metadata string */
    iqdb_meta *meta[256];
} corpus;

/* One measured write case. */
typedef struct rate {
    char label[64];
    int ran;          /* 0: skipped */
    size_t done;      /* records written */
    size_t total;     /* records offered */
    size_t per_call;  /* records per call or transaction */
    int threads;
    double secs;
    double cpu;       /* CPU seconds per wall second, whole process */
    double med_us, p99_us; /* latency of one call (or transaction) */
} rate;

/* The latency of 4 KiB pwrite + fdatasync. */
typedef struct probe {
    size_t samples;
    double median_us, p99_us, mean_us;
} probe;

const char *bench_prog = "bench_durable";
static char scratch[PATH_MAX]; /* removed at exit when not empty */
static pid_t scratch_owner;    /* forked children leave it alone */

/* ------------------------------------------------------------------ */
/* Small utilities                                                      */

/* CPU time of every thread of the process: with disk-bound writers it
 * shows whether a case waited on the disk or computed. */
static double cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static void die_sys(const char *what, const char *path)
{
    fprintf(stderr, "%s: %s %s: %s\n", bench_prog, what, path, strerror(errno));
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median of v[0..n), n >= 1; sorts v. */
static double median(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Median and 99th percentile of v[0..n) (microseconds); sorts v. A disk
 * shared with other writers has a long tail, so the median is the figure
 * that compares like with like, while records/s pays the tail. */
static void percentiles(double *v, size_t n, double *med, double *p99)
{
    if (n == 0) {
        *med = *p99 = 0;
        return;
    }
    *med = median(v, n);
    *p99 = v[(n * 99 + 99) / 100 - 1];
}

static void path_join(char *buf, size_t len, const char *dir,
                      const char *name)
{
    if ((size_t)snprintf(buf, len, "%s/%s", dir, name) >= len) {
        fprintf(stderr, "%s: path too long: %s/%s\n", bench_prog, dir, name);
        exit(1);
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if ((flag == FTW_DP ? rmdir(path) : unlink(path)) != 0)
        fprintf(stderr, "%s: warning: cannot remove %s: %s\n", bench_prog, path,
                strerror(errno));
    return 0;
}

/* rm -rf, never following symlinks. */
static void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void remove_scratch(void)
{
    if (scratch[0] != '\0' && getpid() == scratch_owner)
        rm_tree(scratch);
}

static double file_mb(const char *dir, const char *name)
{
    char p[PATH_MAX];
    struct stat st;

    path_join(p, sizeof(p), dir, name);
    if (stat(p, &st) != 0)
        die_sys("cannot stat", p);
    return (double)st.st_size / 1e6;
}

/* The 1-minute load average, or -1 where /proc is absent. Writers here
 * mostly wait on the disk, so a CPU figure alone would not show that
 * the machine was shared; the load does, a little. */
static double loadavg1(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double l = -1;

    if (f != NULL) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

static const char *verdict(int ok)
{
    return ok ? "ok" : "MISSED";
}

/* ------------------------------------------------------------------ */
/* Opening databases                                                    */

typedef struct dbspec {
    uint32_t dim;
    iqdb_fsync policy;
    uint32_t period_ms;
    int no_autocompact; /* 1: compact only at flush and close */
    const char *index;  /* NULL: flat */
    const char *codec;  /* NULL: none */
    int level;
    int readonly;
} dbspec;

static dbspec spec_of(uint32_t dim, iqdb_fsync policy)
{
    dbspec s;

    memset(&s, 0, sizeof(s));
    s.dim = dim;
    s.policy = policy;
    s.period_ms = PERIOD_MS;
    return s;
}

/* Open path as s says; returns the code, with *out set on success. */
static int db_try_open(const char *path, const dbspec *s, iqdb **out)
{
    iqdb_config *cfg = iqdb_config_new(s->dim, IQDB_METRIC_EUCLIDEAN);
    int rc;

    if (cfg == NULL) {
        fprintf(stderr, "%s: out of memory for a config\n", bench_prog);
        exit(1);
    }
    if ((rc = iqdb_config_set_fsync(cfg, s->policy, s->period_ms)) != 0 ||
        (s->index != NULL &&
         (rc = iqdb_config_set_index(cfg, s->index)) != 0) ||
        (rc = iqdb_config_set_compression(cfg, s->codec, s->level)) != 0 ||
        (rc = iqdb_config_set_readonly(cfg, s->readonly)) != 0 ||
        (s->no_autocompact &&
         (rc = iqdb_config_set_compact_bytes(cfg, 0)) != 0))
        bench_die_lib(NULL, rc, "configuring");
    rc = iqdb_open(path, cfg, out);
    iqdb_config_free(cfg);
    return rc;
}

static iqdb *db_open(const char *path, const dbspec *s)
{
    iqdb *db = NULL;
    int rc = db_try_open(path, s, &db);

    if (rc != 0) {
        char what[PATH_MAX + 16];

        snprintf(what, sizeof(what), "iqdb_open(%s)", path);
        bench_die_lib(NULL, rc, what);
    }
    return db;
}

static void db_close(iqdb *db)
{
    int rc = iqdb_close(db);

    /* The handle is gone, so the thread's message is the one to show. */
    if (rc != 0)
        bench_die_lib(NULL, rc, "iqdb_close");
}

static void db_flush(iqdb *db)
{
    int rc = iqdb_flush(db);

    if (rc != 0)
        bench_die_lib(db, rc, "iqdb_flush");
}

static const float *row(const corpus *c, size_t i)
{
    return c->vec + i * c->dim;
}

static const iqdb_meta *meta_of(const corpus *c, size_t i)
{
    return c->labels != NULL ? c->meta[c->labels[i]] : NULL;
}

/* Upsert rows [0, n) in batches of BATCH, all ids u64 = row number. */
static void fill(iqdb *db, const corpus *c, size_t n)
{
    iqdb_record *recs = bench_xcalloc(BATCH, sizeof(*recs));
    size_t i, j;

    for (i = 0; i < n; i += BATCH) {
        size_t m = n - i < BATCH ? n - i : BATCH;
        int rc;

        for (j = 0; j < m; j++) {
            recs[j].id = iqdb_id_u64(i + j);
            recs[j].vector = row(c, i + j);
            recs[j].meta = meta_of(c, i + j);
        }
        if ((rc = iqdb_upsert_batch(db, recs, m, c->dim)) != 0)
            bench_die_lib(db, rc, "iqdb_upsert_batch");
    }
    free(recs);
}

static void corpus_init(corpus *c, const char *name, const ds_matrix *m,
                        const uint8_t *labels, int fmnist)
{
    unsigned l;

    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->vec = m->data;
    c->n = m->rows;
    c->dim = (uint32_t)m->dim;
    c->labels = labels;
    if (labels == NULL)
        return;
    for (l = 0; l < 256; l++) {
        iqdb_meta *meta = iqdb_meta_new();
        int rc;

        if (fmnist)
            snprintf(c->text[l], sizeof(c->text[l]), "%s",
                     ds_fmnist_class_name(l));
        else
            snprintf(c->text[l], sizeof(c->text[l]), "cluster %u", l);
        if (meta == NULL)
            bench_die_lib(NULL, IQDB_ENOMEM, "iqdb_meta_new");
        rc = iqdb_meta_set(meta, "label", iqdb_value_str(c->text[l]));
        if (rc != 0)
            bench_die_lib(NULL, rc, "iqdb_meta_set");
        c->meta[l] = meta;
    }
}

static void corpus_free(corpus *c)
{
    unsigned l;

    for (l = 0; l < 256; l++)
        iqdb_meta_free(c->meta[l]);
    memset(c, 0, sizeof(*c));
}

/* ------------------------------------------------------------------ */
/* Part 1: durable writes                                               */
/*
 * Every case runs in slices so that the sync-bound ones can be
 * interleaved: a shared disk, or a virtual disk behind a token-bucket
 * rate limiter, swings by 10x within seconds (bursts, then a few
 * milliseconds per sync), and cases run one after the other would each
 * meet a different disk. Interleaved, each sees the same mix. A case
 * keeps its database open across slices and accumulates time, records,
 * CPU and per-call latencies.
 */

/* One writer thread: rows [from, to) one per call until the deadline,
 * resuming after the rows done in earlier slices. */
typedef struct writer_arg {
    iqdb *db;
    const corpus *c;
    size_t from, to;
    double deadline;
    size_t done;
    double *lat; /* to - from entries: latency of each call, us */
    int rc;
    char msg[512]; /* iqdb_errmsg is per thread: copy it here */
} writer_arg;

static void *writer_main(void *p)
{
    writer_arg *a = p;
    size_t i;

    for (i = a->from + a->done; i < a->to; i++) {
        double t0 = bench_now();
        int rc;

        if (t0 >= a->deadline)
            break;
        rc = iqdb_upsert(a->db, iqdb_id_u64(i), row(a->c, i), a->c->dim,
                         meta_of(a->c, i));
        a->lat[a->done] = (bench_now() - t0) * 1e6;
        if (rc != 0) {
            a->rc = rc;
            snprintf(a->msg, sizeof(a->msg), "%s", iqdb_errmsg(a->db));
            break;
        }
        a->done++;
    }
    return NULL;
}

/* What every case accumulates over its slices. */
typedef struct acc {
    rate *r;
    double *lat; /* one entry per call or transaction, us */
    size_t calls;
    double cpu;  /* CPU seconds */
} acc;

static void acc_init(acc *a, rate *r, size_t max_calls, size_t total,
                     size_t per_call, int threads)
{
    a->r = r;
    a->lat = bench_xcalloc(max_calls, sizeof(*a->lat));
    a->calls = 0;
    a->cpu = 0;
    r->ran = 1;
    r->done = 0;
    r->secs = 0;
    r->total = total;
    r->per_call = per_call;
    r->threads = threads;
}

static void acc_finish(acc *a)
{
    rate *r = a->r;

    r->cpu = r->secs > 0 ? a->cpu / r->secs : 0.0;
    percentiles(a->lat, a->calls, &r->med_us, &r->p99_us);
    free(a->lat);
    a->lat = NULL;
}

/* Wait until an automatic compaction of the database at path has
 * written its snapshot (it deletes wal.old then), so its disk traffic
 * is charged to iqdb's slice and never to the next case's. */
static void wait_compaction(const char *path)
{
    char p[PATH_MAX];
    struct stat st;
    double t0 = bench_now();
    path_join(p, sizeof(p), path, "wal.old");
    while (stat(p, &st) == 0) {
        if (bench_now() - t0 > 60) {
            fprintf(stderr, "%s: the compaction of %s did not finish in "
                    "60 s\n", bench_prog, path);
            exit(1);
        }
        usleep(500);
    }
}

/* iqdb, one record per call, from `threads` threads, each a slice of the
 * ids. */
typedef struct one_case {
    char path[PATH_MAX];
    iqdb *db;
    int threads;
    writer_arg *args;
    acc a;
} one_case;

static void one_begin(one_case *k, const char *name, const corpus *c,
                      size_t n, iqdb_fsync policy, int threads, rate *r)
{
    dbspec s = spec_of(c->dim, policy);
    int t;

    path_join(k->path, sizeof(k->path), scratch, name);
    k->db = db_open(k->path, &s);
    k->threads = threads;
    k->args = bench_xcalloc((size_t)threads, sizeof(*k->args));
    acc_init(&k->a, r, n, n, 1, threads);
    for (t = 0; t < threads; t++) {
        writer_arg *w = &k->args[t];

        w->db = k->db;
        w->c = c;
        w->from = n * (size_t)t / (size_t)threads;
        w->to = n * (size_t)(t + 1) / (size_t)threads;
        w->lat = k->a.lat + w->from;
    }
}

static void one_slice(one_case *k, double budget)
{
    pthread_t *tids = bench_xcalloc((size_t)k->threads, sizeof(*tids));
    double t0 = bench_now(), c0 = cpu_s();
    int t;

    for (t = 0; t < k->threads; t++) {
        k->args[t].deadline = t0 + budget;
        if (pthread_create(&tids[t], NULL, writer_main, &k->args[t]) != 0) {
            fprintf(stderr, "%s: pthread_create failed\n", bench_prog);
            exit(1);
        }
    }
    for (t = 0; t < k->threads; t++)
        pthread_join(tids[t], NULL);
    wait_compaction(k->path);
    k->a.r->secs += bench_now() - t0;
    k->a.cpu += cpu_s() - c0;
    for (t = 0; t < k->threads; t++) {
        if (k->args[t].rc != 0) {
            fprintf(stderr, "%s: iqdb_upsert (thread %d) failed: %s: %s\n",
                    bench_prog, t, iqdb_errname(k->args[t].rc), k->args[t].msg);
            exit(1);
        }
    }
    free(tids);
}

static void one_end(one_case *k)
{
    size_t done = 0;
    int t;

    /* Pack the samples: slice t filled the first done entries of its
     * part of the array. */
    for (t = 0; t < k->threads; t++) {
        memmove(k->a.lat + done, k->args[t].lat,
                k->args[t].done * sizeof(*k->a.lat));
        done += k->args[t].done;
    }
    k->a.r->done = k->a.calls = done;
    if (iqdb_count(k->db) != done) {
        fprintf(stderr, "%s: %zu upserts acknowledged but the database "
                "counts %zu records\n", bench_prog, done, iqdb_count(k->db));
        exit(1);
    }
    db_close(k->db);
    rm_tree(k->path);
    acc_finish(&k->a);
    free(k->args);
}

/* iqdb, batches of BATCH records under ALWAYS. */
typedef struct batch_case {
    char path[PATH_MAX];
    iqdb *db;
    const corpus *c;
    size_t n;
    iqdb_record *recs;
    acc a;
    double ack_secs; /* to the last acknowledgement, without the wait for
                        a compaction still writing its snapshot */
} batch_case;

static void batch_begin(batch_case *k, const corpus *c, size_t n,
                        int no_autocompact, rate *r)
{
    dbspec s = spec_of(c->dim, IQDB_FSYNC_ALWAYS);

    s.no_autocompact = no_autocompact;

    path_join(k->path, sizeof(k->path), scratch, "iqdb-batch");
    k->db = db_open(k->path, &s);
    k->ack_secs = 0;
    k->c = c;
    k->n = n;
    k->recs = bench_xcalloc(BATCH, sizeof(*k->recs));
    acc_init(&k->a, r, n / BATCH + 1, n, BATCH, 1);
}

/* At most max_calls batches, until the budget is spent. */
static void batch_slice(batch_case *k, double budget, size_t max_calls)
{
    const corpus *c = k->c;
    double t0 = bench_now(), c0 = cpu_s();
    size_t i = k->a.r->done, j, calls;

    for (calls = 0; calls < max_calls && i < k->n && bench_now() < t0 + budget;
         calls++) {
        size_t m = k->n - i < BATCH ? k->n - i : BATCH;
        double t1 = bench_now();
        int rc;

        for (j = 0; j < m; j++) {
            k->recs[j].id = iqdb_id_u64(i + j);
            k->recs[j].vector = row(c, i + j);
            k->recs[j].meta = meta_of(c, i + j);
        }
        if ((rc = iqdb_upsert_batch(k->db, k->recs, m, c->dim)) != 0)
            bench_die_lib(k->db, rc, "iqdb_upsert_batch");
        k->a.lat[k->a.calls++] = (bench_now() - t1) * 1e6;
        i += m;
    }
    k->ack_secs += bench_now() - t0;
    wait_compaction(k->path);
    k->a.r->done = i;
    k->a.r->secs += bench_now() - t0;
    k->a.cpu += cpu_s() - c0;
}

static void batch_end(batch_case *k)
{
    db_close(k->db);
    rm_tree(k->path);
    acc_finish(&k->a);
    free(k->recs);
}

#ifdef HAVE_SQLITE3
static void sq_die(sqlite3 *db, const char *what)
{
    fprintf(stderr, "%s: SQLite %s failed: %s\n", bench_prog, what,
            db != NULL ? sqlite3_errmsg(db) : "out of memory");
    exit(1);
}

static int sq_mode_cb(void *arg, int ncol, char **val, char **col)
{
    (void)col;
    if (ncol >= 1 && val[0] != NULL)
        snprintf(arg, 16, "%s", val[0]);
    return 0;
}

/* A new database in WAL mode with synchronous=FULL: every commit is
 * synced, the closest SQLite setting to IQDB_FSYNC_ALWAYS. */
static sqlite3 *sq_open(const char *path)
{
    sqlite3 *db = NULL;
    char mode[16] = "";

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                        NULL) != SQLITE_OK)
        sq_die(db, "open");
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL", sq_mode_cb, mode,
                     NULL) != SQLITE_OK)
        sq_die(db, "PRAGMA journal_mode=WAL");
    if (strcmp(mode, "wal") != 0) {
        fprintf(stderr, "%s: SQLite refused WAL mode (got '%s')\n", bench_prog,
                mode);
        exit(1);
    }
    if (sqlite3_exec(db,
                     "PRAGMA synchronous=FULL;"
                     "CREATE TABLE v(id INTEGER PRIMARY KEY, vec BLOB, "
                     "label TEXT)",
                     NULL, NULL, NULL) != SQLITE_OK)
        sq_die(db, "schema");
    return db;
}

static void sq_exec(sqlite3 *db, sqlite3_stmt *st, const char *what)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        sq_die(db, what);
    sqlite3_reset(st);
}

/* SQLite, INSERT OR REPLACE of the same rows, per_txn rows per
 * transaction (1: each statement its own autocommit transaction). */
typedef struct sq_case {
    char path[PATH_MAX];
    sqlite3 *db;
    sqlite3_stmt *ins, *begin, *commit;
    const corpus *c;
    size_t n, per_txn;
    acc a;
} sq_case;

static void sq_begin(sq_case *k, const char *name, const corpus *c,
                     size_t n, size_t per_txn, rate *r)
{
    path_join(k->path, sizeof(k->path), scratch, name);
    k->db = sq_open(k->path);
    if (sqlite3_prepare_v2(k->db, "INSERT OR REPLACE INTO v VALUES(?, ?, ?)",
                           -1, &k->ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(k->db, "BEGIN", -1, &k->begin, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(k->db, "COMMIT", -1, &k->commit, NULL) !=
            SQLITE_OK)
        sq_die(k->db, "prepare");
    k->c = c;
    k->n = n;
    k->per_txn = per_txn;
    acc_init(&k->a, r, n / per_txn + 1, n, per_txn, 1);
}

/* At most max_txns transactions, until the budget is spent. */
static void sq_slice(sq_case *k, double budget, size_t max_txns)
{
    const corpus *c = k->c;
    int bytes = (int)(c->dim * sizeof(float));
    double t0 = bench_now(), c0 = cpu_s();
    size_t i = k->a.r->done, txns;

    for (txns = 0; txns < max_txns && i < k->n && bench_now() < t0 + budget;
         txns++) {
        size_t end = k->n - i < k->per_txn ? k->n : i + k->per_txn;
        double t1 = bench_now();

        if (k->per_txn > 1)
            sq_exec(k->db, k->begin, "BEGIN");
        for (; i < end; i++) {
            sqlite3_bind_int64(k->ins, 1, (sqlite3_int64)i);
            sqlite3_bind_blob(k->ins, 2, row(c, i), bytes, SQLITE_STATIC);
            if (c->labels != NULL)
                sqlite3_bind_text(k->ins, 3, c->text[c->labels[i]], -1,
                                  SQLITE_STATIC);
            else
                sqlite3_bind_null(k->ins, 3);
            sq_exec(k->db, k->ins, "INSERT OR REPLACE");
        }
        if (k->per_txn > 1)
            sq_exec(k->db, k->commit, "COMMIT");
        k->a.lat[k->a.calls++] = (bench_now() - t1) * 1e6;
    }
    k->a.r->done = i;
    k->a.r->secs += bench_now() - t0;
    k->a.cpu += cpu_s() - c0;
}

static void sq_end(sq_case *k)
{
    char p[PATH_MAX + 8];

    sqlite3_finalize(k->ins);
    sqlite3_finalize(k->begin);
    sqlite3_finalize(k->commit);
    if (sqlite3_close(k->db) != SQLITE_OK)
        sq_die(k->db, "close");
    acc_finish(&k->a);
    /* The -wal and -shm files are gone after a clean close; be sure. */
    unlink(k->path);
    snprintf(p, sizeof(p), "%s-wal", k->path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", k->path);
    unlink(p);
}
#endif

/*
 * The latency of a 4 KiB pwrite followed by fdatasync. `append` writes
 * each block past the end of the file, as a growing log does: the file
 * size then changes with every write, so fdatasync must commit that too
 * (a filesystem journal commit on ext4). Otherwise it rewrites the first
 * block of a file whose size is already durable, the cheapest durable
 * write the disk offers.
 */
typedef struct probe_case {
    char path[PATH_MAX];
    int fd;
    int append;
    unsigned char buf[PROBE_BYTES];
    double *lat;
    size_t n, max;
    double sum;
    probe *out;
} probe_case;

static void probe_begin(probe_case *k, int append, size_t max, probe *out)
{
    path_join(k->path, sizeof(k->path), scratch,
              append ? "probe-append" : "probe-rewrite");
    k->fd = open(k->path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (k->fd < 0)
        die_sys("cannot create", k->path);
    k->append = append;
    memset(k->buf, 0xa5, sizeof(k->buf));
    k->lat = bench_xcalloc(max, sizeof(*k->lat));
    k->n = 0;
    k->max = max;
    k->sum = 0;
    k->out = out;
    /* Warm up, and for the rewrite case make the size durable first. */
    if (pwrite(k->fd, k->buf, sizeof(k->buf), 0) != (ssize_t)sizeof(k->buf) ||
        fdatasync(k->fd) != 0)
        die_sys("cannot write", k->path);
}

static void probe_slice(probe_case *k, double budget, size_t max_samples)
{
    double t_end = bench_now() + budget;
    size_t i;

    for (i = 0; i < max_samples && k->n < k->max && bench_now() < t_end; i++) {
        off_t off = k->append ? (off_t)(k->n + 1) * PROBE_BYTES : 0;
        double t0 = bench_now();

        k->buf[0] = (unsigned char)k->n; /* never the same bytes twice */
        if (pwrite(k->fd, k->buf, sizeof(k->buf), off) !=
                (ssize_t)sizeof(k->buf) ||
            fdatasync(k->fd) != 0)
            die_sys("cannot write", k->path);
        k->lat[k->n] = (bench_now() - t0) * 1e6;
        k->sum += k->lat[k->n++];
    }
}

static void probe_end(probe_case *k)
{
    close(k->fd);
    unlink(k->path);
    k->out->samples = k->n;
    k->out->mean_us = k->n > 0 ? k->sum / (double)k->n : 0.0;
    percentiles(k->lat, k->n, &k->out->median_us, &k->out->p99_us);
    free(k->lat);
}

static double rate_of(const rate *r)
{
    return r->done > 0 ? (double)r->done / r->secs : 0.0;
}

#define ROW_FMT "  %-36s %13s %7s %10s %7s %9s %9s %9s %5s\n"

static void print_rate(const rate *r, double floor_rate)
{
    char rec[32], sec[16], rps[16], xf[16], mean[16], med[16], p99[16];
    char cpu[16];
    double calls = (double)r->done / (double)r->per_call;

    if (!r->ran) {
        printf("  %-36s %s\n", r->label, "skipped");
        return;
    }
    snprintf(rec, sizeof(rec), "%zu/%zu", r->done, r->total);
    snprintf(sec, sizeof(sec), "%.2f", r->secs);
    snprintf(rps, sizeof(rps), "%.0f", rate_of(r));
    snprintf(xf, sizeof(xf), "%.2f", rate_of(r) / floor_rate);
    snprintf(mean, sizeof(mean), "%.0f",
             calls > 0 ? r->secs * r->threads / calls * 1e6 : 0.0);
    snprintf(med, sizeof(med), "%.0f", r->med_us);
    snprintf(p99, sizeof(p99), "%.0f", r->p99_us);
    snprintf(cpu, sizeof(cpu), "%.2f", r->cpu);
    printf(ROW_FMT, r->label, rec, sec, rps, xf, mean, med, p99, cpu);
}

static void print_probe(const char *label, const probe *p, double floor_rate)
{
    char n[16], rps[16], xf[16], mean[16], med[16], p99[16];

    snprintf(n, sizeof(n), "%zu", p->samples);
    snprintf(rps, sizeof(rps), "%.0f", 1e6 / p->median_us);
    snprintf(xf, sizeof(xf), "%.2f", 1e6 / p->median_us / floor_rate);
    snprintf(mean, sizeof(mean), "%.0f", p->mean_us);
    snprintf(med, sizeof(med), "%.0f", p->median_us);
    snprintf(p99, sizeof(p99), "%.0f", p->p99_us);
    printf(ROW_FMT, label, n, "", rps, xf, mean, med, p99, "");
}

/* The sync-bound one-per-call cases and the probes, interleaved in
 * o->rounds rounds whose order rotates, so none always follows the case
 * that spent the disk's burst. */
static void run_per_call(const opts *o, const sizes *z, const corpus *c,
                         size_t n, rate *r, probe *pa, probe *po)
{
    probe_case ka, ko;
    one_case k1, k8;
#ifdef HAVE_SQLITE3
    sq_case sr;
#endif
    int round, j;

    probe_begin(&ka, 1, z->probe_max, pa);
    probe_begin(&ko, 0, z->probe_max, po);
    one_begin(&k1, "iqdb-1", c, n, IQDB_FSYNC_ALWAYS, 1, &r[0]);
    one_begin(&k8, "iqdb-8", c, n, IQDB_FSYNC_ALWAYS, THREADS, &r[1]);
#ifdef HAVE_SQLITE3
    if (o->sqlite)
        sq_begin(&sr, "sqlite-row.db", c, n, 1, &r[5]);
#endif
    for (round = 0; round < o->rounds; round++) {
        for (j = 0; j < 5; j++) {
            switch ((j + round) % 5) {
            case 0:
                probe_slice(&ka, z->probe_s / o->rounds, SIZE_MAX);
                break;
            case 1:
                probe_slice(&ko, z->probe_s / o->rounds, SIZE_MAX);
                break;
            case 2:
                one_slice(&k1, o->max_s / o->rounds);
                break;
            case 3:
                one_slice(&k8, o->max_s / o->rounds);
                break;
            default:
#ifdef HAVE_SQLITE3
                if (o->sqlite)
                    sq_slice(&sr, o->max_s / o->rounds, SIZE_MAX);
#endif
                break;
            }
        }
    }
    probe_end(&ka);
    probe_end(&ko);
    one_end(&k1);
    one_end(&k8);
#ifdef HAVE_SQLITE3
    if (o->sqlite)
        sq_end(&sr);
#endif
}

/* The passes of one batch case, pooled: every call's latency, and the
 * records, seconds and CPU seconds of all passes. */
typedef struct pool {
    double *lat;
    size_t calls, done;
    double secs, cpu;
    double ack_secs; /* iqdb: batch_case.ack_secs, summed */
} pool;

/* iqdb's batch rate counting only the time to the last acknowledgement
 * of each pass (a compaction still writing its snapshot at the end is
 * left out, though never overlapped with the next case): reported beside
 * the verdict, which counts that wait. */
static double batch_ack_rate;

/* iqdb's batch rate with automatic compaction off (the log only, as
 * when the whole job fits under the threshold): what compaction costs,
 * reported beside the verdict. 0 when not run (--quick). */
static double batch_nocompact_rate;

/* Add a pass's figures (before acc_finish frees its latencies). */
static void pool_add(pool *p, const acc *a)
{
    memcpy(p->lat + p->calls, a->lat, a->calls * sizeof(*p->lat));
    p->calls += a->calls;
    p->done += a->r->done;
    p->secs += a->r->secs;
    p->cpu += a->cpu;
}

static void pool_finish(pool *p, rate *r, size_t n, size_t passes)
{
    r->ran = 1;
    r->done = p->done;
    r->total = n * passes;
    r->per_call = BATCH;
    r->threads = 1;
    r->secs = p->secs;
    r->cpu = p->secs > 0 ? p->cpu / p->secs : 0.0;
    percentiles(p->lat, p->calls, &r->med_us, &r->p99_us);
    free(p->lat);
}

/* Batches of BATCH records: whole passes over the n records, each into a
 * fresh database, iqdb and SQLite taking turns (so a disk that drifts
 * treats them alike). A pass is the whole job, maintenance included:
 * iqdb's automatic compactions (its pass waits for the snapshot the last
 * one writes on its thread) and SQLite's automatic checkpoints. Only
 * the final close of each is left out. */
static void run_batches(const opts *o, const corpus *c, size_t n, rate *r)
{
    size_t passes = o->quick ? 2 : BATCH_PASSES;
    size_t calls = (n + BATCH - 1) / BATCH;
    pool pi = {bench_xcalloc(passes * calls, sizeof(double)), 0, 0, 0, 0, 0};
#ifdef HAVE_SQLITE3
    pool ps = {bench_xcalloc(passes * calls, sizeof(double)), 0, 0, 0, 0, 0};
#endif
    rate tmp;

    size_t nc_done = 0;
    double nc_secs = 0;

    for (size_t pass = 0; pass < passes; pass++) {
        for (int turn = 0; turn < 2; turn++) {
            if ((turn == 0) == (pass % 2 == 0)) {
                batch_case kb;

                batch_begin(&kb, c, n, 0, &tmp);
                batch_slice(&kb, 1e9, calls);
                pool_add(&pi, &kb.a);
                pi.ack_secs += kb.ack_secs;
                batch_end(&kb);
                if (!o->quick) {
                    /* The same pass without automatic compaction. */
                    batch_begin(&kb, c, n, 1, &tmp);
                    batch_slice(&kb, 1e9, calls);
                    nc_done += tmp.done;
                    nc_secs += tmp.secs;
                    batch_end(&kb);
                }
                continue;
            }
#ifdef HAVE_SQLITE3
            if (o->sqlite) {
                sq_case sb;

                sq_begin(&sb, "sqlite-batch.db", c, n, BATCH, &tmp);
                sq_slice(&sb, 1e9, calls);
                pool_add(&ps, &sb.a);
                sq_end(&sb);
            }
#endif
        }
    }
    batch_ack_rate = pi.ack_secs > 0 ? (double)pi.done / pi.ack_secs : 0;
    batch_nocompact_rate = nc_secs > 0 ? (double)nc_done / nc_secs : 0;
    pool_finish(&pi, &r[2], n, passes);
#ifdef HAVE_SQLITE3
    if (o->sqlite)
        pool_finish(&ps, &r[6], n, passes);
    else
        free(ps.lat);
#endif
}

/* PERIODIC or NEVER, one record per call: not sync-bound, run alone. */
static void run_unsynced(const opts *o, const corpus *c, size_t n,
                         iqdb_fsync policy, rate *r)
{
    one_case k;

    one_begin(&k, "iqdb-unsynced", c, n, policy, 1, r);
    one_slice(&k, o->max_s);
    one_end(&k);
}

static void bench_writes(const opts *o, const sizes *z, const corpus *c)
{
    rate r[7];
    probe pa, po;
    const probe *fl;
    double floor_rate, ra, rsq_row = 0, rsq_batch = 0;
    size_t n = z->write_n < c->n ? z->write_n : c->n;
    int i;

    memset(r, 0, sizeof(r));
    snprintf(r[0].label, sizeof(r[0].label), "(a) iqdb ALWAYS, 1/call, 1 "
             "thread");
    snprintf(r[1].label, sizeof(r[1].label), "(b) iqdb ALWAYS, 1/call, %d "
             "threads", THREADS);
    snprintf(r[2].label, sizeof(r[2].label), "(c) iqdb ALWAYS, batch %d",
             BATCH);
    snprintf(r[3].label, sizeof(r[3].label), "(d) iqdb PERIODIC %d ms, "
             "1/call", PERIOD_MS);
    snprintf(r[4].label, sizeof(r[4].label), "(e) iqdb NEVER, 1/call");
    snprintf(r[5].label, sizeof(r[5].label), "(f) SQLite FULL, 1 row/txn");
    snprintf(r[6].label, sizeof(r[6].label), "(f) SQLite FULL, %d rows/txn",
             BATCH);

    printf("\n== 1. durable upserts: %s, %zu x %u, metadata {label} ==\n",
           c->name, n, c->dim);
    printf("[sync] %d interleaved rounds of: fdatasync probes, (a), (b)%s"
           "...\n", o->rounds, o->sqlite ? ", SQLite 1 row/txn" : "");
    fflush(stdout);
    run_per_call(o, z, c, n, r, &pa, &po);
    printf("[sync] %d alternating whole passes of: (c)%s...\n",
           o->quick ? 2 : BATCH_PASSES,
           o->sqlite ? ", SQLite 1000 rows/txn" : "");
    fflush(stdout);
    run_batches(o, c, n, r);
    printf("[iqdb] (d), (e)...\n");
    fflush(stdout);
    run_unsynced(o, c, n, IQDB_FSYNC_PERIODIC, &r[3]);
    run_unsynced(o, c, n, IQDB_FSYNC_NEVER, &r[4]);
#ifdef HAVE_SQLITE3
    if (o->sqlite) {
        rsq_row = rate_of(&r[5]);
        rsq_batch = rate_of(&r[6]);
    }
#endif
    /* The disk's floor is the cheaper probe: a log that rewrites space
     * whose size is already durable (SQLite's WAL, restarted in place
     * after each checkpoint) pays the rewriting figure; a log that grows
     * its file with every frame pays the appending one. */
    fl = po.median_us < pa.median_us ? &po : &pa;
    floor_rate = 1e6 / fl->median_us;

    printf("\n" ROW_FMT, "case", "records", "seconds", "records/s",
           "x floor", "mean us", "median us", "p99 us", "CPU");
    for (i = 0; i < 7; i++)
        print_rate(&r[i], floor_rate);
    print_probe("(g) 4 KiB pwrite+fdatasync, append", &pa, floor_rate);
    print_probe("(g) 4 KiB pwrite+fdatasync, rewrite", &po, floor_rate);
    printf("  (records/s over the time spent, time-bounded at %.1f s per "
           "case, in %d interleaved slices;\n   x floor = records/s over "
           "the floor, the faster probe's 1/median (here %s), i.e.\n   "
           "records per sync when sync-bound; us = latency of one call, "
           "batch or transaction;\n   mean = wall time x threads / calls; "
           "CPU = CPU seconds per wall second of the whole\n   process; "
           "(g) rows count samples, not records. The default automatic "
           "compaction (64 MiB\n   of WAL) runs inside the measured time "
           "(each iqdb slice also waits for the snapshot its\n   "
           "compaction thread writes); the final close does not. The "
           "batch cases (c) and (f)\n   are %d whole passes over the "
           "records each, into fresh databases, taking turns.)\n",
           o->max_s, o->rounds, fl == &po ? "rewrite" : "append",
           o->quick ? 2 : BATCH_PASSES);
    if (fl->mean_us > 2 * fl->median_us)
        printf("  WARNING: fdatasync's mean is %.1fx its median: the disk is "
               "shared or erratic, so every rate\n  here pays a tail the "
               "floor (from the median) does not; see the medians "
               "below\n", fl->mean_us / fl->median_us);

    ra = rate_of(&r[0]);
    printf("\n  group commit: %d threads / 1 thread = %.2fx; PERIODIC / "
           "ALWAYS = %.1fx; NEVER / ALWAYS = %.1fx\n",
           THREADS, rate_of(&r[1]) / ra, rate_of(&r[3]) / ra,
           rate_of(&r[4]) / ra);
    printf("\n  %-50s %9s %9s  %s\n", "target", "measured", "target",
           "verdict");
    if (rsq_row > 0) {
        printf("  %-50s %8.2fx %7s%.1fx  %s\n",
               "iqdb ALWAYS 1/call 1 thread / SQLite 1 row/txn", ra / rsq_row,
               ">= ", TARGET_VS_SQLITE_ROW,
               verdict(ra / rsq_row >= TARGET_VS_SQLITE_ROW));
        printf("  %-50s %8.2fx %7s%.1fx  %s\n",
               "iqdb ALWAYS batch 1000 / SQLite 1000 rows/txn",
               rate_of(&r[2]) / rsq_batch, ">= ", TARGET_VS_SQLITE_BATCH,
               verdict(rate_of(&r[2]) / rsq_batch >= TARGET_VS_SQLITE_BATCH));
        printf("  (batch, time to the last acknowledgement only, the last "
               "compaction's tail left out: %.2fx)\n",
               batch_ack_rate / rsq_batch);
        if (batch_nocompact_rate > 0)
            printf("  (batch with automatic compaction off, the log "
                   "alone: %.2fx)\n",
                   batch_nocompact_rate / rsq_batch);
    } else {
#ifdef HAVE_SQLITE3
        printf("  SQLite comparison skipped (--no-sqlite)\n");
#else
        printf("  SQLite comparison skipped: built without SQLite "
               "(install libsqlite3-dev and reconfigure)\n");
#endif
    }
    printf("  %-50s %8.2fx %7s%.2fx  %s\n",
           "iqdb ALWAYS 1/call 1 thread / fdatasync floor", ra / floor_rate,
           ">= ", 1.0 / TARGET_FLOOR,
           verdict(ra >= floor_rate / TARGET_FLOOR));
    printf("  (against the appending probe, the 1-thread rate is %.2fx)\n",
           ra * pa.median_us / 1e6);

    /* Rates pay a shared disk's tail, and the floor comes from a median:
     * the medians compare like with like. */
    printf("\n  medians, 1 record per call, 1 thread (lower is faster): "
           "iqdb ALWAYS %.0f us;\n  fdatasync append %.0f us, rewrite "
           "%.0f us", r[0].med_us, pa.median_us, po.median_us);
    if (rsq_row > 0)
        printf("; SQLite 1 row/txn %.0f us", r[5].med_us);
    printf("\n  iqdb / floor %.2fx (<= %.1fx: %s); iqdb / append %.2fx",
           r[0].med_us / fl->median_us, TARGET_FLOOR,
           verdict(r[0].med_us <= TARGET_FLOOR * fl->median_us),
           r[0].med_us / pa.median_us);
    if (rsq_row > 0)
        printf("; iqdb / SQLite %.2fx (<= %.1fx: %s)",
               r[0].med_us / r[5].med_us, 1.0 / TARGET_VS_SQLITE_ROW,
               verdict(r[0].med_us * TARGET_VS_SQLITE_ROW <= r[5].med_us));
    printf("\n");
    fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* Part 2: open time                                                    */

/* Time one open of path; returns the handle through *out. */
static double timed_open(const char *path, const dbspec *s, iqdb **out)
{
    double t0 = bench_now();

    *out = db_open(path, s);
    return bench_now() - t0;
}

static double timed_close(iqdb *db)
{
    double t0 = bench_now();

    db_close(db);
    return bench_now() - t0;
}

static double first_search(iqdb *db, const float *q, uint32_t dim)
{
    iqdb_results *res = NULL;
    double t0 = bench_now();
    int rc = iqdb_search(db, q, dim, 10, NULL, NULL, &res);

    if (rc != 0)
        bench_die_lib(db, rc, "iqdb_search");
    t0 = bench_now() - t0;
    if (iqdb_results_count(res, 0) == 0) {
        fprintf(stderr, "%s: a search of a non-empty database found "
                "nothing\n", bench_prog);
        exit(1);
    }
    iqdb_results_free(res);
    return t0;
}

static void expect_count(const iqdb *db, size_t want, const char *when)
{
    if (iqdb_count(db) != want) {
        fprintf(stderr, "%s: %s: %zu records, expected %zu\n", bench_prog, when,
                iqdb_count(db), want);
        exit(1);
    }
}

/* The child of the WAL case: write wal_n single records with NEVER and
 * leave without closing, as a crashed writer would; the WAL stays. */
static void wal_writer(const char *path, const corpus *c, size_t wal_n)
{
    dbspec s = spec_of(c->dim, IQDB_FSYNC_NEVER);
    iqdb *db = NULL;
    size_t i;
    int rc;

    /* No automatic compaction: the frames must stay in the WAL. */
    s.no_autocompact = 1;
    if ((rc = db_try_open(path, &s, &db)) != 0) {
        fprintf(stderr, "%s: child: iqdb_open: %s\n", bench_prog, iqdb_errmsg(NULL));
        _exit(1);
    }
    for (i = 0; i < wal_n; i++) {
        rc = iqdb_upsert(db, iqdb_id_u64(c->n + i), row(c, i % c->n), c->dim,
                         NULL);
        if (rc != 0) {
            fprintf(stderr, "%s: child: iqdb_upsert: %s\n", bench_prog,
                    iqdb_errmsg(db));
            _exit(1);
        }
    }
    _exit(0);
}

static void make_wal(const char *path, const corpus *c, size_t wal_n)
{
    pid_t pid;
    int st;

    fflush(NULL);
    pid = fork();
    if (pid < 0)
        die_sys("cannot fork for", path);
    if (pid == 0)
        wal_writer(path, c, wal_n);
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
        WEXITSTATUS(st) != 0) {
        fprintf(stderr, "%s: the WAL writer process failed\n", bench_prog);
        exit(1);
    }
}

/* hnsw: build time (batch upserts, NEVER) against a reopen that loads
 * the saved graph. Skipped when the plugin is absent. */
static void bench_hnsw(const corpus *c, const float *query)
{
    char path[PATH_MAX];
    dbspec s = spec_of(c->dim, IQDB_FSYNC_NEVER);
    double build, flush, opens[HNSW_OPEN_RUNS], closes[HNSW_OPEN_RUNS];
    double t0, o_med, c_med;
    iqdb *db = NULL;
    int rc, i;

    path_join(path, sizeof(path), scratch, "open-hnsw");
    s.index = "hnsw";
    s.no_autocompact = 1;
    rc = db_try_open(path, &s, &db);
    if (rc == IQDB_ENOPLUGIN) {
        printf("  hnsw plugin absent: skipped (%s)\n", iqdb_errmsg(NULL));
        rm_tree(path);
        return;
    }
    if (rc != 0)
        bench_die_lib(NULL, rc, "iqdb_open (hnsw)");
    printf("[hnsw] building %zu x %u with batches of %d...\n", c->n, c->dim,
           BATCH);
    fflush(stdout);
    t0 = bench_now();
    fill(db, c, c->n);
    build = bench_now() - t0;
    t0 = bench_now();
    db_flush(db);
    flush = bench_now() - t0;
    db_close(db);
    s.policy = IQDB_FSYNC_ALWAYS;
    s.no_autocompact = 0;
    for (i = 0; i < HNSW_OPEN_RUNS; i++) {
        opens[i] = timed_open(path, &s, &db);
        expect_count(db, c->n, "hnsw reopen");
        if (strcmp(iqdb_index_name(db), "hnsw") != 0) {
            fprintf(stderr, "%s: reopened an hnsw database as '%s'\n", bench_prog,
                    iqdb_index_name(db));
            exit(1);
        }
        if (i == 0)
            first_search(db, query, c->dim);
        closes[i] = timed_close(db);
    }
    o_med = median(opens, HNSW_OPEN_RUNS);
    c_med = median(closes, HNSW_OPEN_RUNS);
    rm_tree(path);
    printf("  hnsw (default parameters): build %.2f s (batch upserts under "
           "NEVER, WAL writes included),\n  flush %.2f s, reopen median "
           "%.3f s of %d, close %.2f s (each close rewrites the snapshot)\n",
           build, flush, o_med, HNSW_OPEN_RUNS, c_med);
    printf("  %-50s %8.1f%% %7s%.0f%%  %s\n", "hnsw reopen / build", 100 *
           o_med / build, "<= ", 100 * TARGET_OPEN_VS_BUILD,
           verdict(o_med <= TARGET_OPEN_VS_BUILD * build));
}

static void bench_open(const sizes *z, const corpus *c, const float *query)
{
    char path[PATH_MAX];
    dbspec s = spec_of(c->dim, IQDB_FSYNC_NEVER);
    double opens[OPEN_RUNS], closes[OPEN_RUNS], searches[OPEN_RUNS];
    double ro[RO_RUNS], build, flush, close1, t0, snap_med, ro_med;
    double wal_rw, wal_ro, wal_close, wal_mb, snap_mb;
    iqdb_recovery rec;
    iqdb *db;
    int i;

    printf("\n== 2. open time: %s %zu x %u, flat index ==\n", c->name, c->n,
           c->dim);
    printf("[flat] building with batches of %d under NEVER, then "
           "iqdb_flush...\n", BATCH);
    fflush(stdout);
    path_join(path, sizeof(path), scratch, "open-flat");
    s.no_autocompact = 1;
    db = db_open(path, &s);
    t0 = bench_now();
    fill(db, c, c->n);
    build = bench_now() - t0;
    t0 = bench_now();
    db_flush(db);
    flush = bench_now() - t0;
    close1 = timed_close(db);
    snap_mb = file_mb(path, "snapshot");

    /* Writer opens, as an application does (default ALWAYS policy). */
    s = spec_of(c->dim, IQDB_FSYNC_ALWAYS);
    for (i = 0; i < OPEN_RUNS; i++) {
        opens[i] = timed_open(path, &s, &db);
        expect_count(db, c->n, "snapshot reopen");
        searches[i] = first_search(db, query, c->dim);
        closes[i] = timed_close(db);
    }
    snap_med = median(opens, OPEN_RUNS);
    s.readonly = 1;
    for (i = 0; i < RO_RUNS; i++) {
        ro[i] = timed_open(path, &s, &db);
        expect_count(db, c->n, "read-only reopen");
        db_close(db);
    }
    ro_med = median(ro, RO_RUNS);

    printf("[flat] a child process writes %zu single records under NEVER "
           "and exits without closing...\n", z->wal_n);
    fflush(stdout);
    make_wal(path, c, z->wal_n);
    wal_mb = file_mb(path, "wal");
    /* Read-only opens first: they replay without folding the WAL, so
     * every run sees the same files. */
    for (i = 0; i < RO_RUNS; i++) {
        ro[i] = timed_open(path, &s, &db);
        expect_count(db, c->n + z->wal_n, "read-only open with a WAL");
        db_close(db);
    }
    wal_ro = median(ro, RO_RUNS);
    s.readonly = 0;
    wal_rw = timed_open(path, &s, &db);
    expect_count(db, c->n + z->wal_n, "open with a WAL");
    if (iqdb_recovery_report(db, &rec) != 0 ||
        rec.frames_replayed != z->wal_n || rec.bytes_truncated != 0) {
        fprintf(stderr, "%s: open replayed %llu frames and cut %llu bytes; "
                "expected %zu frames and none cut\n", bench_prog,
                (unsigned long long)rec.frames_replayed,
                (unsigned long long)rec.bytes_truncated, z->wal_n);
        exit(1);
    }
    wal_close = timed_close(db);
    printf("\n  build %.2f s, first flush %.2f s, close %.2f s; snapshot "
           "%.1f MB; nothing dropped from the page\n  cache by the bench, "
           "but the snapshot's vectors are written with O_DIRECT where the "
           "file\n  system allows: each read-write open follows a close that "
           "rewrote them, so it reads them\n  from the disk; read-only "
           "opens after the first are warm\n",
           build, flush, close1, snap_mb);
    printf("\n  %-44s %9s %5s\n", "open", "seconds", "runs");
    printf("  %-44s %9.4f %5d   (first search %.4f s, close %.2f s)\n",
           "snapshot only, read-write", snap_med, OPEN_RUNS,
           median(searches, OPEN_RUNS), median(closes, OPEN_RUNS));
    printf("  %-44s %9.4f %5d\n", "snapshot only, read-only", ro_med,
           RO_RUNS);
    {
        char label[64];

        snprintf(label, sizeof(label), "+ %zu-frame WAL (%.1f MB), read-only",
                 z->wal_n, wal_mb);
        printf("  %-44s %9.4f %5d\n", label, wal_ro, RO_RUNS);
        snprintf(label, sizeof(label), "+ %zu-frame WAL, read-write",
                 z->wal_n);
        printf("  %-44s %9.4f %5d   (its close folds the WAL: %.2f s)\n",
               label, wal_rw, 1, wal_close);
    }
    printf("  (median of the runs; read-write closes rewrite the snapshot, "
           "so those are the runs' costs too)\n");
    printf("\n  %-50s %8.3fs %6s%.1fs  %s\n", "snapshot-only open, flat",
           snap_med, "<= ", TARGET_OPEN_S, verdict(snap_med <= TARGET_OPEN_S));
    fflush(stdout);
    rm_tree(path);
}

/* ------------------------------------------------------------------ */
/* Part 3: snapshot size and compaction time per codec                  */

static void check_vectors(iqdb *db, const corpus *c)
{
    float *v = bench_xcalloc(c->dim, sizeof(*v));
    size_t probe_ids[2] = {0, c->n - 1};
    int i, rc;

    for (i = 0; i < 2; i++) {
        rc = iqdb_get(db, iqdb_id_u64(probe_ids[i]), v, c->dim, NULL);
        if (rc != 0)
            bench_die_lib(db, rc, "iqdb_get");
        if (memcmp(v, row(c, probe_ids[i]), c->dim * sizeof(*v)) != 0) {
            fprintf(stderr, "%s: record %zu read back differs\n", bench_prog,
                    probe_ids[i]);
            exit(1);
        }
    }
    free(v);
}

static void bench_codecs(const corpus *c)
{
    static const struct {
        const char *codec;
        int level;
        const char *label;
    } codecs[] = {{NULL, 0, "none"},
                  {"zstd", 0, "zstd (default level)"},
                  {"zstd", 9, "zstd level 9"},
                  {"lz4", 0, "lz4"}};
    char path[PATH_MAX];
    dbspec s = spec_of(c->dim, IQDB_FSYNC_NEVER);
    double none_mb = 0, t0, fold, vec_mb;
    size_t k;
    iqdb *db;
    int i;

    path_join(path, sizeof(path), scratch, "codecs");
    s.no_autocompact = 1;
    printf("[codecs] %s: building %zu x %u...\n", c->name, c->n, c->dim);
    fflush(stdout);
    db = db_open(path, &s);
    fill(db, c, c->n);
    t0 = bench_now();
    db_flush(db);
    fold = bench_now() - t0;
    db_close(db);
    /* snapshot.c lays vectors out with rows padded to 8 floats. */
    vec_mb = (double)c->n * (double)((c->dim + 7) / 8 * 8) * 4.0 / 1e6;
    printf("\n  %s %zu x %u, %s; vectors ~%.1f MB of it raw; "
           "folding the %zu-frame WAL took %.2f s\n",
           c->name, c->n, c->dim,
           c->labels != NULL ? "metadata {label}" : "no metadata", vec_mb,
           (c->n + BATCH - 1) / BATCH, fold);
    printf("  %-22s %12s %8s %10s %11s\n", "codec", "snapshot MB", "ratio",
           "flush s", "ro open s");
    for (k = 0; k < sizeof(codecs) / sizeof(codecs[0]); k++) {
        double mb, flush, ro[RO_RUNS];
        int rc;

        s.codec = codecs[k].codec;
        s.level = codecs[k].level;
        s.readonly = 0;
        rc = db_try_open(path, &s, &db);
        if (rc == IQDB_ENOPLUGIN) {
            printf("  %-22s plugin absent: skipped (%s)\n", codecs[k].label,
                   iqdb_errmsg(NULL));
            continue;
        }
        if (rc != 0)
            bench_die_lib(NULL, rc, "iqdb_open (codec)");
        /* The flush rewrites the whole snapshot with this handle's codec. */
        t0 = bench_now();
        db_flush(db);
        flush = bench_now() - t0;
        mb = file_mb(path, "snapshot");
        db_close(db);
        if (codecs[k].codec == NULL)
            none_mb = mb;
        s.readonly = 1;
        for (i = 0; i < RO_RUNS; i++) {
            ro[i] = timed_open(path, &s, &db);
            expect_count(db, c->n, "codec reopen");
            if (i == 0)
                check_vectors(db, c);
            db_close(db);
        }
        printf("  %-22s %12.2f %8.3f %10.2f %11.4f\n", codecs[k].label, mb,
               none_mb > 0 ? mb / none_mb : 0.0, flush, median(ro, RO_RUNS));
    }
    printf("  (ratio: to none. A codec compresses the vectors too, block by "
           "block; only an\n   uncompressed snapshot's vectors are "
           "memory-mapped at open, a compressed one's are\n   read and "
           "decompressed, which the ro open column shows.)\n");
    fflush(stdout);
    rm_tree(path);
}

/* ------------------------------------------------------------------ */
/* Options and main                                                     */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [options]\n"
            "  --dir DIR          make the scratch directory in DIR "
            "(default $TMPDIR, else /tmp)\n"
            "  --max-seconds S    time bound of each one-per-call and "
            "SQLite case (default 10)\n"
            "  --quick            small sizes, a few seconds (smoke test)\n"
            "  --no-sqlite        skip the SQLite comparison\n"
            "  --fmnist-dir DIR   Fashion-MNIST files (default %s)\n",
            bench_prog, DS_FMNIST_DIR);
}

static void parse_opts(int argc, char **argv, opts *o)
{
    int i, max_set = 0;

    memset(o, 0, sizeof(*o));
    o->dir = getenv("TMPDIR");
    if (o->dir == NULL || o->dir[0] == '\0')
        o->dir = "/tmp";
    o->fmnist_dir = DS_FMNIST_DIR;
    o->max_s = 10.0;
    o->sqlite = 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = strcmp(a, "--dir") == 0 ||
                    strcmp(a, "--max-seconds") == 0 ||
                    strcmp(a, "--fmnist-dir") == 0;

        if (takes && v == NULL) {
            fprintf(stderr, "%s: %s needs a value\n", bench_prog, a);
            exit(2);
        }
        if (strcmp(a, "--dir") == 0) {
            o->dir = v;
        } else if (strcmp(a, "--fmnist-dir") == 0) {
            o->fmnist_dir = v;
        } else if (strcmp(a, "--max-seconds") == 0) {
            char *end;

            errno = 0;
            o->max_s = strtod(v, &end);
            if (errno != 0 || end == v || *end != '\0' ||
                !(o->max_s > 0 && o->max_s <= 86400)) {
                fprintf(stderr, "%s: --max-seconds wants seconds in (0, "
                        "86400], not '%s'\n", bench_prog, v);
                exit(2);
            }
            max_set = 1;
        } else if (strcmp(a, "--quick") == 0) {
            o->quick = 1;
        } else if (strcmp(a, "--no-sqlite") == 0) {
            o->sqlite = 0;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "%s: unknown option '%s'\n", bench_prog, a);
            usage(stderr);
            exit(2);
        }
        if (takes)
            i++;
    }
    if (o->quick && !max_set)
        o->max_s = 0.2;
    o->rounds = (int)(o->max_s / SLICE_S + 0.5);
    if (o->rounds < MIN_ROUNDS)
        o->rounds = MIN_ROUNDS;
}

static void sizes_for(const opts *o, sizes *z)
{
    z->write_n = o->quick ? 2000 : 60000;
    z->open_n = o->quick ? 10000 : 200000;
    z->wal_n = o->quick ? 2000 : 20000;
    /* An hnsw build is the slowest step by far; in a smoke run a small
     * graph exercises the same code. */
    z->hnsw_n = o->quick ? 2000 : 200000;
    z->probe_s = o->quick ? 0.1 : 2.0;
    z->probe_max = o->quick ? 200 : 5000;
}

static void make_scratch(const opts *o)
{
    if ((size_t)snprintf(scratch, sizeof(scratch), "%s/bench_durable.XXXXXX",
                         o->dir) >= sizeof(scratch)) {
        fprintf(stderr, "%s: --dir path too long\n", bench_prog);
        exit(2);
    }
    if (mkdtemp(scratch) == NULL) {
        int e = errno;

        fprintf(stderr, "%s: cannot make a directory in %s: %s\n", bench_prog,
                o->dir, strerror(e));
        scratch[0] = '\0';
        exit(1);
    }
    scratch_owner = getpid();
    atexit(remove_scratch);
}

/* Fashion-MNIST train set, or generated 784-d data of the same size when
 * it is absent (10 clusters, so there are labels for the metadata). */
static void load_writes_data(const opts *o, const sizes *z, ds_dataset *d,
                             corpus *c)
{
    char err[1024];
    double t0 = bench_now();

    if (ds_fmnist_present(o->fmnist_dir)) {
        if (ds_fmnist_load(o->fmnist_dir, d, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: %s\n", bench_prog, err);
            exit(1);
        }
        ds_matrix_truncate(&d->base, z->write_n);
        corpus_init(c, "Fashion-MNIST train", &d->base, d->base_labels, 1);
        printf("loaded Fashion-MNIST from %s in %.2f s\n", o->fmnist_dir,
               bench_now() - t0);
    } else {
        ds_gen_spec spec;

        ds_gen_spec_default(&spec);
        spec.n = z->write_n;
        spec.nq = 1;
        spec.dim = 784;
        spec.clusters = 10;
        printf("Fashion-MNIST not found in %s (Debian package "
               "dataset-fashion-mnist): using generated %zu x 784 data\n",
               o->fmnist_dir, spec.n);
        if (ds_gen_clustered(&spec, d, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: %s\n", bench_prog, err);
            exit(1);
        }
        corpus_init(c, "generated 784-d", &d->base, d->base_labels, 0);
    }
}

int main(int argc, char **argv)
{
    char err[1024];
    ds_dataset fm, gen;
    ds_gen_spec spec;
    corpus cw, cg;
    sizes z;
    opts o;
    double t_start = bench_now(), load0;
    int i;
#ifdef IQDB_BUILD_PLUGINS
    /* Built, not installed: find the plugins of this build tree first. */
    iqdb_plugin_add_dir(IQDB_BUILD_PLUGINS);
#endif

    parse_opts(argc, argv, &o);
    sizes_for(&o, &z);
    printf("command:");
    for (i = 0; i < argc; i++)
        printf(" %s", argv[i]);
    printf("\nbench_durable: iqdb %s; %ld CPUs online; ", iqdb_version(),
           sysconf(_SC_NPROCESSORS_ONLN));
#ifdef HAVE_SQLITE3
    printf("SQLite %s%s\n", sqlite3_libversion(),
           o.sqlite ? "" : " (not run: --no-sqlite)");
#else
    printf("built without SQLite: the SQLite comparison is skipped\n");
#endif
    make_scratch(&o);
    load0 = loadavg1();
    printf("scratch directory %s (removed at exit); load average %.2f\n",
           scratch, load0);
    fflush(stdout);

    load_writes_data(&o, &z, &fm, &cw);
    bench_writes(&o, &z, &cw);

    ds_gen_spec_default(&spec);
    spec.n = z.open_n;
    spec.nq = 1;
    printf("\ngenerating %zu x %zu vectors (%zu clusters, seed %#llx)...\n",
           spec.n, spec.dim, spec.clusters, (unsigned long long)spec.seed);
    fflush(stdout);
    if (ds_gen_clustered(&spec, &gen, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", bench_prog, err);
        return 1;
    }
    snprintf(gen.name, sizeof(gen.name), "generated");
    corpus_init(&cg, "generated", &gen.base, NULL, 0);
    bench_open(&z, &cg, gen.queries.data);
    {
        corpus ch = cg;

        ch.n = z.hnsw_n < cg.n ? z.hnsw_n : cg.n;
        bench_hnsw(&ch, gen.queries.data);
    }

    printf("\n== 3. snapshot size and compaction time per codec ==\n");
    bench_codecs(&cg);
    bench_codecs(&cw);

    {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

        /* Only the starting load says something about other users: the
         * hnsw build and the blocked writers raise the later figures. */
        printf("\ndone in %.0f s; load average %.2f at the start, %.2f at "
               "the end\n", bench_now() - t_start, load0, loadavg1());
        if (ncpu > 0 && load0 >= (double)ncpu)
            printf("WARNING: the load average at the start reached the CPU "
                   "count: the machine was shared\nand the figures are "
                   "unreliable; rerun when it is idle\n");
    }
    corpus_free(&cw);
    corpus_free(&cg);
    ds_dataset_free(&fm);
    ds_dataset_free(&gen);
    return 0;
}
