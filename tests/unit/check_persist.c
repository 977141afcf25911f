/*
 * tests/unit/check_persist.c - durable databases through the public API,
 * on real files: round trips, replay without close, codecs, configuration
 * checks, foreign directories, locking, crashes (SIGKILL), snapshot
 * corruption and hostile files, and injected I/O faults.
 */
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "durable_int.h"
#include "iqdb_int.h"
#include "serial_int.h"
#include "snapshot_int.h"
#include "testutil.h"
#include "wal_int.h"

#define DIM 6

static char tmpdir[256];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/iqdb-persist-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", tmpdir);
    iqdb__io_reset();
    atomic_store(&iqdb__compact_refs, 1);
}

static const char *path(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    return buf;
}

static iqdb_config *conf(const char *codec, int fsync)
{
    iqdb_config *c = iqdb_config_new(DIM, IQDB_METRIC_EUCLIDEAN);
    if (codec)
        ck_assert_int_eq(iqdb_config_set_compression(c, codec, 0), 0);
    iqdb_config_set_fsync(c, (iqdb_fsync)fsync, 10);
    return c;
}

static int open_db(const char *dir, const char *codec, iqdb **db)
{
    iqdb_config *c = conf(codec, IQDB_FSYNC_ALWAYS);
    int r = iqdb_open(dir, c, db);
    iqdb_config_free(c);
    return r;
}

/* Record i: vector from i, metadata {"i": i, "s": "rec-i"}, id u64 i or
 * a byte-string id for odd i. */
static void make(uint64_t i, float *v, iqdb_meta **m, iqdb_id *id, char *key)
{
    for (int j = 0; j < DIM; j++)
        v[j] = (float)i * 0.5f + (float)j;
    *m = iqdb_meta_new();
    iqdb_meta_set(*m, "i", iqdb_value_int((int64_t)i));
    char s[32];
    snprintf(s, sizeof s, "rec-%llu", (unsigned long long)i);
    iqdb_meta_set(*m, "s", iqdb_value_str(s));
    if (i % 2) {
        int n = snprintf(key, 32, "key-%llu", (unsigned long long)i);
        *id = iqdb_id_bytes(key, (size_t)n);
    } else {
        *id = iqdb_id_u64(i);
    }
}

static int put(iqdb *db, uint64_t i)
{
    float v[DIM];
    iqdb_meta *m;
    iqdb_id id;
    char key[32];
    make(i, v, &m, &id, key);
    int r = iqdb_upsert(db, id, v, DIM, m);
    iqdb_meta_free(m);
    return r;
}

/* 1: present and exact; 0: absent; fails the test if present but wrong. */
static int check(iqdb *db, uint64_t i)
{
    float v[DIM], got[DIM];
    iqdb_meta *m, *gm = NULL;
    iqdb_id id;
    char key[32];
    make(i, v, &m, &id, key);
    int r = iqdb_get(db, id, got, DIM, &gm);
    int present = r == 0;
    if (r == 0) {
        ck_assert_mem_eq(got, v, sizeof v);
        iqdb_value a, b;
        ck_assert_int_eq(iqdb_meta_get(gm, "s", &a), 0);
        ck_assert_int_eq(iqdb_meta_get(m, "s", &b), 0);
        ck_assert_uint_eq(a.len, b.len);
        ck_assert_mem_eq(a.v.s, b.v.s, a.len);
    } else {
        ck_assert_int_eq(r, IQDB_ENOTFOUND);
    }
    iqdb_meta_free(m);
    iqdb_meta_free(gm);
    return present;
}

static unsigned char *slurp(const char *p, size_t *n);
static int file_exists(const char *dir, const char *name);
static int snap_version(const char *dir);

/* ---- round trips ----------------------------------------------------------- */

static void round_trip(const char *codec)
{
    iqdb *db;
    const char *dir = path("db");
    ck_assert_msg(open_db(dir, codec, &db) == 0, "%s", iqdb_errmsg(NULL));
    for (uint64_t i = 0; i < 300; i++)
        ck_assert_int_eq(put(db, i), 0);
    for (uint64_t i = 0; i < 300; i += 7)
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    for (int session = 0; session < 3; session++) {
        ck_assert_msg(open_db(dir, codec, &db) == 0, "%s", iqdb_errmsg(NULL));
        for (uint64_t i = 0; i < 300; i++)
            ck_assert_int_eq(check(db, i), !(i % 7 == 0 && i % 2 == 0));
        for (uint64_t i = 300 + (uint64_t)session * 50; i < 350 + (uint64_t)session * 50; i++)
            ck_assert_int_eq(put(db, i), 0);
        /* Search still works after reopening. */
        float q[DIM] = {0};
        iqdb_results *r;
        ck_assert_int_eq(iqdb_search(db, q, DIM, 3, NULL, NULL, &r), 0);
        ck_assert_uint_eq(iqdb_results_count(r, 0), 3);
        iqdb_results_free(r);
        ck_assert_int_eq(iqdb_close(db), 0);
    }
    ck_assert_msg(open_db(dir, codec, &db) == 0, "%s", iqdb_errmsg(NULL));
    for (uint64_t i = 300; i < 450; i++)
        ck_assert_int_eq(check(db, i), 1);
    ck_assert_int_eq(iqdb_close(db), 0);
}

START_TEST(test_persist_round_trip_raw)
{
    round_trip(NULL);
}
END_TEST

START_TEST(test_persist_round_trip_zstd)
{
    round_trip("zstd");
}
END_TEST

START_TEST(test_persist_round_trip_lz4)
{
    round_trip("lz4");
}
END_TEST

/* A process that dies without closing leaves its writes in the WAL. */
START_TEST(test_persist_replay_without_close)
{
    const char *dir = path("db");
    pid_t pid = fork();
    if (pid == 0) {
        iqdb *db;
        if (open_db(dir, NULL, &db) != 0)
            _exit(2);
        for (uint64_t i = 0; i < 100; i++)
            if (put(db, i) != 0)
                _exit(3);
        iqdb_delete(db, iqdb_id_u64(10), NULL);
        _exit(0); /* no close, no flush */
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    iqdb *db;
    ck_assert_msg(open_db(dir, NULL, &db) == 0, "%s", iqdb_errmsg(NULL));
    ck_assert_uint_eq(iqdb_count(db), 99);
    for (uint64_t i = 0; i < 100; i++)
        ck_assert_int_eq(check(db, i), i != 10);
    iqdb_close(db);
}
END_TEST

START_TEST(test_persist_index_saved_state)
{
    /* The flat index saves nothing and is rebuilt; a reopen with
     * rebuilding forbidden still works for it. */
    const char *dir = path("db");
    iqdb *db;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    put(db, 1);
    iqdb_close(db);
    iqdb_config *c = conf(NULL, IQDB_FSYNC_NEVER);
    iqdb_config_set_rebuild(c, 0);
    iqdb_config_set_index(c, "nosuchindex"); /* the stored type wins */
    ck_assert_msg(iqdb_open(dir, c, &db) == 0, "%s", iqdb_errmsg(NULL));
    ck_assert_str_eq(iqdb_index_name(db), "flat");
    ck_assert_int_eq(check(db, 1), 1);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* What iqdb_check reported: counts of notes and damage (notes about
 * wal.old apart), and the first damage finding in full. */
typedef struct finding_log {
    int notes, damage, old_note;
    char file[64];
    uint64_t off;
    char msg[512];
} finding_log;

static void log_finding(void *ctx, const char *file, uint64_t off, int damage,
                        const char *msg)
{
    finding_log *f = ctx;
    f->notes += !damage;
    f->old_note += !damage && strcmp(file, "wal.old") == 0;
    if (damage && f->damage++ == 0) {
        snprintf(f->file, sizeof f->file, "%s", file);
        f->off = off;
        snprintf(f->msg, sizeof f->msg, "%s", msg);
    }
}

/* Run fn(arg) in a child process, which exits with its result; the
 * result must be 0. For writers that die without closing. */
static void in_child(int (*fn)(void *), void *arg)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(fn(arg));
    int st;
    waitpid(pid, &st, 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "child exited with %d", WEXITSTATUS(st));
}

/* The index section: loaded when the plugin reads its format, rebuilt
 * when the saved format is newer (if allowed), refused otherwise; with
 * the plugin absent, flat stands in (if a rebuild is allowed). Each
 * step runs in its own process, as plugins stay loaded once loaded. */
static int saver_loads(void)
{
    char so[600];
    snprintf(so, sizeof so, "%s/.libs/saver.so", getenv("IQDB_FIXTURE_DIR"));
    void *h = dlopen(so, RTLD_NOW | RTLD_NOLOAD);
    int (*fn)(void) = h ? (int (*)(void))dlsym(h, "saver_LTX_loads") : NULL;
    return fn ? fn() : -1;
}

static int saver_step(int step)
{
    if (step != 3) /* step 3: the plugin is not installed */
        iqdb_plugin_add_dir(getenv("IQDB_FIXTURE_DIR"));
    iqdb_config *c = conf(NULL, IQDB_FSYNC_NEVER);
    iqdb_config_set_index(c, "saver");
    iqdb *db;
    int r;
    if (step == 0) { /* create with format 2 */
        if (iqdb_open(path("db"), c, &db) != 0)
            return 10;
        for (uint64_t i = 0; i < 20; i++)
            put(db, i);
        iqdb_delete(db, iqdb_id_u64(4), NULL);
        return iqdb_close(db) == 0 ? 0 : 11;
    }
    if (step == 1) { /* reopen: the saved state is loaded */
        if ((r = iqdb_open(path("db"), c, &db)) != 0)
            return 20;
        r = iqdb_count(db) == 19 && saver_loads() == 1 ? 0 : 21;
        iqdb_close(db);
        return r;
    }
    if (step == 3) {
        /* The plugin is absent: refused without a rebuild; with one, flat
         * stands in (exact searches, the saver's search parameters
         * ignored) and writes go on, the stored index type kept. */
        iqdb_config_set_rebuild(c, 0);
        r = iqdb_open(path("db"), c, &db);
        if (r != IQDB_ENOPLUGIN || strstr(iqdb_errmsg(NULL), "saver") == NULL)
            return 40;
        iqdb_config_set_rebuild(c, 1);
        if (iqdb_open(path("db"), c, &db) != 0)
            return 41;
        if (strcmp(iqdb_index_name(db), "flat") != 0 || iqdb_count(db) != 19)
            return 42;
        iqdb_close(db);
        /* check says so, as a note. */
        finding_log fl;
        memset(&fl, 0, sizeof fl);
        if (iqdb_check(path("db"), NULL, log_finding, &fl) != 0 ||
            fl.damage != 0 || fl.notes != 1)
            return 46;
        if (iqdb_open(path("db"), c, &db) != 0)
            return 47;
        iqdb_params *sp = iqdb_params_new();
        iqdb_params_set(sp, "saver_only", "1");
        float q[DIM] = {0};
        iqdb_results *res;
        r = iqdb_search(db, q, DIM, 1, NULL, sp, &res) != 0 ||
                    iqdb_results_hits(res, 0)[0].id.v.u64 != 0
                ? 43
                : 0;
        iqdb_params_free(sp);
        if (r == 0)
            iqdb_results_free(res);
        if (r == 0 && (put(db, 100) != 0 || iqdb_flush(db) != 0))
            r = 44;
        if (iqdb_close(db) != 0 && r == 0)
            r = 45;
        return r;
    }
    if (step == 4) { /* installed again: its index, rebuilt */
        if (iqdb_open(path("db"), c, &db) != 0)
            return 50;
        r = strcmp(iqdb_index_name(db), "saver") == 0 &&
                    iqdb_count(db) == 20 && check(db, 100) &&
                    saver_loads() == 0
                ? 0
                : 51;
        /* Nothing written, but the close saves the rebuilt state. */
        if (iqdb_close(db) != 0 && r == 0)
            r = 52;
        return r;
    }
    if (step == 5) { /* so this open loads it instead of rebuilding */
        if (iqdb_open(path("db"), c, &db) != 0)
            return 60;
        r = iqdb_count(db) == 20 && saver_loads() == 1 ? 0 : 61;
        iqdb_close(db);
        return r;
    }
    /* An older plugin: rebuild allowed, then forbidden. */
    char old[600];
    snprintf(old, sizeof old, "%s/saverold.la", getenv("IQDB_FIXTURE_DIR"));
    if (iqdb_plugin_load(old) != 0)
        return 30;
    iqdb_config_set_rebuild(c, 0);
    r = iqdb_open(path("db"), c, &db);
    if (r != IQDB_ENOTSUP || strstr(iqdb_errmsg(NULL), "'saver'") == NULL)
        return 31;
    iqdb_config_set_rebuild(c, 1);
    if (iqdb_open(path("db"), c, &db) != 0)
        return 32;
    r = iqdb_count(db) == 19 && check(db, 5) && !check(db, 4) ? 0 : 33;
    float q[DIM] = {0};
    iqdb_results *res;
    if (r == 0 && (iqdb_search(db, q, DIM, 1, NULL, NULL, &res) != 0 ||
                   iqdb_results_hits(res, 0)[0].id.v.u64 != 0))
        r = 34;
    iqdb_close(db);
    return r;
}

START_TEST(test_persist_index_section)
{
    for (int step = 0; step < 6; step++) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(saver_step(step));
        int st;
        waitpid(pid, &st, 0);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "step %d exited %d", step, WEXITSTATUS(st));
    }
}
END_TEST

/* Reopening with another codec and flushing rewrites the snapshot in it,
 * though nothing changed; a read-only open reads a preallocated log tail
 * as a clean end. */
START_TEST(test_persist_recompress_and_readonly_tail)
{
    iqdb *db;
    ck_assert_int_eq(open_db(path("db"), NULL, &db), 0);
    for (uint64_t i = 0; i < 50; i++)
        put(db, i);
    ck_assert_int_eq(iqdb_close(db), 0);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", path("db"));
    size_t n;
    unsigned char *h = slurp(snap, &n);
    ck_assert_uint_eq(h[48], 0); /* codec id: raw */
    free(h);
    ck_assert_int_eq(open_db(path("db"), "zstd", &db), 0);
    ck_assert_int_eq(iqdb_flush(db), 0);
    iqdb_close(db);
    h = slurp(snap, &n);
    ck_assert_uint_eq(h[48], IQDB_CODEC_ID_ZSTD);
    free(h);
    /* The level is stored too: reopening with another level alone makes
     * the next flush rewrite the snapshot (a new file); with the same
     * level, a flush with nothing written leaves it alone. */
    struct stat s1, s2;
    iqdb_config *lc = conf(NULL, IQDB_FSYNC_ALWAYS);
    ck_assert_int_eq(iqdb_config_set_compression(lc, "zstd", 19), 0);
    for (int round = 0; round < 2; round++) {
        ck_assert_int_eq(stat(snap, &s1), 0);
        ck_assert_int_eq(iqdb_open(path("db"), lc, &db), 0);
        ck_assert_int_eq(iqdb_flush(db), 0);
        ck_assert_int_eq(iqdb_close(db), 0);
        ck_assert_int_eq(stat(snap, &s2), 0);
        if (round == 0)
            ck_assert_uint_ne(s1.st_ino, s2.st_ino);
        else
            ck_assert_uint_eq(s1.st_ino, s2.st_ino);
    }
    iqdb_config_free(lc);
    /* Opened with dim 0, the stored codec and level are kept. */
    lc = iqdb_config_new(0, (iqdb_metric)0);
    ck_assert_int_eq(iqdb_open(path("db"), lc, &db), 0);
    iqdb_stats sts;
    ck_assert_int_eq(iqdb_stat(db, &sts), 0);
    ck_assert_str_eq(sts.codec, "zstd");
    ck_assert_int_eq(sts.codec_level, 19);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_int_eq(stat(snap, &s1), 0);
    ck_assert_uint_eq(s1.st_ino, s2.st_ino);
    iqdb_config_free(lc);
    /* A writer dies leaving frames and preallocated zeros. */
    pid_t pid = fork();
    if (pid == 0) {
        iqdb *w;
        if (open_db(path("db"), "zstd", &w) != 0)
            _exit(2);
        _exit(put(w, 500) == 0 ? 0 : 3);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    iqdb_config *c = conf(NULL, 0);
    iqdb_config_set_readonly(c, 1);
    ck_assert_int_eq(iqdb_open(path("db"), c, &db), 0);
    iqdb_recovery rec;
    iqdb_recovery_report(db, &rec);
    ck_assert_uint_eq(rec.frames_replayed, 1);
    ck_assert_uint_eq(rec.bytes_truncated, 0);
    ck_assert_int_eq(check(db, 500), 1);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* ---- configuration and foreign directories ---------------------------- */

START_TEST(test_persist_config_mismatch)
{
    const char *dir = path("db");
    iqdb *db;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    iqdb_close(db);
    iqdb_config *c = iqdb_config_new(DIM + 1, IQDB_METRIC_COSINE);
    ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_ECONFIG);
    const char *msg = iqdb_errmsg(NULL);
    ck_assert_ptr_nonnull(strstr(msg, "dim 6"));
    ck_assert_ptr_nonnull(strstr(msg, "dim 7"));
    ck_assert_ptr_nonnull(strstr(msg, "cosine"));
    iqdb_config_free(c);
    /* The failed open left the lock free. */
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    iqdb_close(db);
}
END_TEST

START_TEST(test_persist_foreign_directory_untouched)
{
    const char *dir = path("notadb");
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    char file[600];
    snprintf(file, sizeof file, "%s/important.txt", dir);
    FILE *f = fopen(file, "w");
    fputs("keep me", f);
    fclose(f);
    iqdb *db;
    ck_assert_int_eq(open_db(dir, NULL, &db), IQDB_EEXIST);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "not an iqdb database"));
    char lock[600];
    snprintf(lock, sizeof lock, "%s/LOCK", dir);
    ck_assert_int_ne(access(lock, F_OK), 0);
    /* A plain file where the directory should be. */
    ck_assert_int_eq(open_db(file, NULL, &db), IQDB_EINVAL);
    f = fopen(file, "r");
    char buf[16] = "";
    ck_assert_ptr_nonnull(fgets(buf, sizeof buf, f));
    fclose(f);
    ck_assert_str_eq(buf, "keep me");
    /* Read-only open of nothing. */
    iqdb_config *c = conf(NULL, 0);
    iqdb_config_set_readonly(c, 1);
    ck_assert_int_eq(iqdb_open(path("absent"), c, &db), IQDB_ENOTFOUND);
    iqdb_config_free(c);
    /* Parents are never created: a missing parent, or a file where a
     * parent directory should be, is "not found" and creates nothing. */
    ck_assert_int_eq(open_db(path("nodir/db"), NULL, &db), IQDB_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "parent directory"));
    ck_assert_int_ne(access(path("nodir"), F_OK), 0);
    char sub[700];
    snprintf(sub, sizeof sub, "%s/db", file);
    ck_assert_int_eq(open_db(sub, NULL, &db), IQDB_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "not a directory"));
}
END_TEST

/* ---- locking ------------------------------------------------------------------ */

START_TEST(test_persist_second_writer_refused)
{
    const char *dir = path("db");
    iqdb *db, *db2;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    char d2[600];
    snprintf(d2, sizeof d2, "%s", dir);
    ck_assert_int_eq(open_db(d2, NULL, &db2), IQDB_ELOCKED);
    char link[600];
    snprintf(link, sizeof link, "%s/alias", tmpdir);
    ck_assert_int_eq(symlink(dir, link), 0);
    ck_assert_int_eq(open_db(link, NULL, &db2), IQDB_ELOCKED);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "alias"));
    pid_t pid = fork();
    if (pid == 0) {
        iqdb *x;
        _exit(open_db(dir, NULL, &x) == IQDB_ELOCKED ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    iqdb_close(db);
    ck_assert_int_eq(open_db(link, NULL, &db2), 0);
    iqdb_close(db2);
}
END_TEST

START_TEST(test_persist_readers_share)
{
    const char *dir = path("db");
    iqdb *db, *r1, *r2;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    put(db, 4);
    iqdb_close(db);
    iqdb_config *c = conf(NULL, 0);
    iqdb_config_set_readonly(c, 1);
    ck_assert_msg(iqdb_open(dir, c, &r1) == 0, "%s", iqdb_errmsg(NULL));
    ck_assert_int_eq(iqdb_open(dir, c, &r2), 0);
    ck_assert_int_eq(check(r2, 4), 1);
    ck_assert_int_eq(put(r1, 5), IQDB_EREADONLY);
    ck_assert_int_eq(open_db(dir, NULL, &db), IQDB_ELOCKED);
    iqdb_close(r1);
    iqdb_close(r2);
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* ---- crashes ----------------------------------------------------------------- */

/* A writer child reports every acknowledged record over a pipe and is
 * killed at a random moment; the reopened database must hold every
 * acknowledged record exactly, and nothing never written. */
static void crash_cycles(int cycles, const char *codec)
{
    /* tests/soak.sh raises the count for long soaks. */
    const char *env = getenv("IQDB_CRASH_CYCLES");
    if (env != NULL && atoi(env) > 0)
        cycles = atoi(env);
    const char *dir = path("db");
    uint64_t next = 0, seed = 12345;
    unsigned char *acked = calloc(1 << 20, 1);
    for (int c = 0; c < cycles; c++) {
        int fds[2];
        ck_assert_int_eq(pipe(fds), 0);
        uint64_t start = next;
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            iqdb *db;
            if (open_db(dir, codec, &db) != 0)
                _exit(2);
            uint64_t ready = UINT64_MAX;
            if (write(fds[1], &ready, sizeof ready) != sizeof ready)
                _exit(4);
            for (uint64_t i = start;; i++) {
                if (put(db, i) != 0)
                    _exit(3);
                if (write(fds[1], &i, sizeof i) != sizeof i)
                    _exit(4);
                if (i % 97 == 0)
                    iqdb_delete(db, iqdb_id_u64(i - 2), NULL);
            }
        }
        close(fds[1]);
        /* Three kills in four land while the child writes (within 5 ms
         * of its open, so a slow or loaded machine still gets writes in,
         * and a long soak's database does not grow much faster than with
         * the fourth); the fourth within 15 ms of the fork, the open
         * included. */
        uint64_t id;
        long window = 15000000;
        if (tu_next(&seed) % 4 != 0 &&
            read(fds[0], &id, sizeof id) == sizeof id) {
            ck_assert(id == UINT64_MAX);
            window = 5000000;
        }
        struct timespec ts = {0, (long)(tu_next(&seed) % (uint64_t)window)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        while (read(fds[0], &id, sizeof id) == sizeof id) {
            if (id == UINT64_MAX) /* the child's "opened" */
                continue;
            acked[id] = 1;
            if (id % 97 == 0 && id >= 2)
                acked[id - 2] = 2; /* maybe deleted: either is fine */
            if (id + 1 > next)
                next = id + 1;
        }
        close(fds[0]);
        iqdb *db;
        ck_assert_msg(open_db(dir, codec, &db) == 0, "cycle %d: %s", c,
                      iqdb_errmsg(NULL));
        /* Every acknowledged record is there, exact: the newest ones each
         * cycle, all of them every 256 cycles and at the end (the count
         * bounds cover the rest in between). */
        uint64_t from = (c % 256 == 255 || c == cycles - 1) ? 0 : start;
        uint64_t sure = 0, maybe = 0;
        for (uint64_t i = 0; i < next; i++) {
            sure += acked[i] == 1;
            maybe += acked[i] == 2;
            if (i < from)
                continue;
            int present = check(db, i);
            if (acked[i] == 1)
                ck_assert_msg(present, "cycle %d: acknowledged %llu lost", c,
                              (unsigned long long)i);
        }
        size_t count = iqdb_count(db);
        ck_assert_msg(count >= sure && count <= sure + maybe + 1,
                      "cycle %d: %zu records, expected %llu to %llu", c, count,
                      (unsigned long long)sure,
                      (unsigned long long)(sure + maybe + 1));
        /* Nothing never written: at most the one in flight. */
        ck_assert_int_eq(check(db, next + 1), 0);
        if (check(db, next))
            acked[next++] = 1; /* the unreported write made it */
        iqdb_close(db);
    }
    /* The test means something only if writes were acknowledged. */
    ck_assert_msg(next > (uint64_t)cycles, "only %llu records in %d cycles",
                  (unsigned long long)next, cycles);
    free(acked);
}

START_TEST(test_persist_crash_cycles)
{
    crash_cycles(200, NULL);
}
END_TEST

START_TEST(test_persist_crash_cycles_zstd)
{
    crash_cycles(20, "zstd");
}
END_TEST

/* ---- snapshot corruption and hostile files ---------------------------------- */

static unsigned char *slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n ? *n : 1);
    ck_assert_uint_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void spit(const char *p, const void *b, size_t n)
{
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* Crafting snapshots (layout in core/snapshot.c): little-endian fields,
 * the section table entry of a type, and checksums made good again. */
static void put_le32(unsigned char *p, uint32_t v)
{
    for (int k = 0; k < 4; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = v << 8 | p[k];
    return v;
}

static unsigned char *sec_entry(unsigned char *b, uint32_t type)
{
    for (uint32_t e = 0; e < b[52]; e++)
        if (b[128 + e * 48] == type)
            return b + 128 + e * 48;
    ck_abort_msg("no section of type %u", type);
    return NULL;
}

static void fix_header(unsigned char *b)
{
    put_le32(b + 124, iqdb__crc32c(0, b, 124));
}

static void fix_table(unsigned char *b)
{
    put_le32(b + 128 + b[52] * 48, iqdb__crc32c(0, b + 128, b[52] * 48u));
}

/* The section of entry ent: its checksum from its bytes, then the
 * table's. */
static void fix_section(unsigned char *b, unsigned char *ent)
{
    put_le32(ent + 32, iqdb__crc32c(0, b + get_le64(ent + 8),
                                    (size_t)get_le64(ent + 16)));
    fix_table(b);
}

static void small_db(const char *codec)
{
    iqdb *db;
    ck_assert_int_eq(open_db(path("db"), codec, &db), 0);
    for (uint64_t i = 0; i < 6; i++)
        put(db, i);
    iqdb_delete(db, iqdb_id_u64(2), NULL);
    ck_assert_int_eq(iqdb_close(db), 0);
}

/* Every single-byte flip (xor mask) of the first `flips` bytes of file,
 * and every step-th truncation to below `truncs` bytes: an open of dir
 * with c fails with IQDB_ECORRUPT, its message naming `name` when given,
 * and (with unchanged) leaves the file as it found it. The file is
 * restored at the end. */
static void damage_sweep(const char *dir, const char *file, iqdb_config *c,
                         size_t flips, unsigned char mask, size_t truncs,
                         size_t step, const char *name, int unchanged)
{
    size_t n;
    unsigned char *orig = slurp(file, &n), *bad = malloc(n);
    ck_assert_uint_le(flips, n);
    ck_assert_uint_le(truncs, n);
    iqdb *db;
    for (size_t i = 0; i < flips; i++) {
        memcpy(bad, orig, n);
        bad[i] ^= mask;
        spit(file, bad, n);
        int r = iqdb_open(dir, c, &db);
        ck_assert_msg(r == IQDB_ECORRUPT, "flip at %zu of %zu: %s (%s)", i,
                      flips, iqdb_errname(r), iqdb_errmsg(NULL));
        if (name != NULL)
            ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), name));
        if (unchanged) {
            size_t m;
            unsigned char *now = slurp(file, &m);
            ck_assert(m == n && memcmp(now, bad, n) == 0);
            free(now);
        }
    }
    for (size_t len = 0; len < truncs; len += step) {
        spit(file, orig, len);
        int r = iqdb_open(dir, c, &db);
        ck_assert_msg(r == IQDB_ECORRUPT, "truncated to %zu: %s", len,
                      iqdb_errname(r));
    }
    spit(file, orig, n);
    free(orig);
    free(bad);
}

static void corruption_sweep(const char *codec)
{
    small_db(codec);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", path("db"));
    size_t n;
    free(slurp(snap, &n));
    iqdb_config *c = conf(codec, IQDB_FSYNC_ALWAYS);
    /* Every single-byte flip, every truncation. */
    damage_sweep(path("db"), snap, c, n, 0x5a, n, 1, NULL, 0);
    iqdb_config_free(c);
    iqdb *db;
    ck_assert_int_eq(open_db(path("db"), codec, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 5);
    iqdb_close(db);
}


START_TEST(test_persist_snapshot_flips_raw)
{
    corruption_sweep(NULL);
}
END_TEST

START_TEST(test_persist_snapshot_flips_zstd)
{
    corruption_sweep("zstd");
}
END_TEST

START_TEST(test_persist_snapshot_flips_lz4)
{
    corruption_sweep("lz4");
}
END_TEST

/* A level the codec refuses fails the open before anything is made or
 * changed, with the codec's own message, rather than every compaction
 * after it. */
START_TEST(test_persist_bad_codec_level)
{
    static const struct {
        const char *codec;
        int level;
    } bad[] = {{"lz4", 5}, {"zstd", 23}, {"zstd", -1000000}};
    const char *dir = path("db");
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    iqdb *db;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
        ck_assert_int_eq(
            iqdb_config_set_compression(c, bad[i].codec, bad[i].level), 0);
        ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_EINVAL);
        ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "out of range"));
        ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), bad[i].codec));
        ck_assert_int_eq(access(dir, F_OK), -1); /* nothing created */
        iqdb_config_free(c);
    }
    /* An existing database is left as it was, and still opens. */
    ck_assert_int_eq(open_db(dir, "lz4", &db), 0);
    for (uint64_t i = 0; i < 20; i++)
        ck_assert_int_eq(put(db, i), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    size_t n1, n2;
    unsigned char *before = slurp(snap, &n1);
    iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
    ck_assert_int_eq(iqdb_config_set_compression(c, "lz4", 2), 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_EINVAL);
    iqdb_config_free(c);
    unsigned char *after = slurp(snap, &n2);
    ck_assert(n1 == n2 && memcmp(before, after, n1) == 0);
    free(before);
    free(after);
    /* Fast levels are levels too. */
    c = conf(NULL, IQDB_FSYNC_ALWAYS);
    ck_assert_int_eq(iqdb_config_set_compression(c, "lz4", -8), 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    iqdb_config_free(c);
    for (uint64_t i = 0; i < 20; i++)
        ck_assert_int_eq(check(db, i), 1);
    ck_assert_int_eq(iqdb_flush(db), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    /* A stored level the codec installed now refuses (another build may
     * take another range; here the field is rewritten): a writable open
     * with dim 0, which keeps the stored level, fails at once; a
     * read-only one, which never compresses, opens. */
    unsigned char *b = slurp(snap, &n1);
    unsigned char *ent = sec_entry(b, 1); /* CONFIG: "flat", 0 params, */
    unsigned char *cf = b + get_le64(ent + 8); /* "lz4", i32 level */
    ck_assert_mem_eq(cf + 2, "flat", 4);
    ck_assert_mem_eq(cf + 12, "lz4", 3);
    put_le32(cf + 15, 7);
    fix_section(b, ent);
    spit(snap, b, n1);
    free(b);
    c = iqdb_config_new(0, (iqdb_metric)0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_EINVAL);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "level 7"));
    iqdb_config_set_readonly(c, 1);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 20);
    ck_assert_int_eq(iqdb_close(db), 0);
    iqdb_config_free(c);
}
END_TEST

/* Names in a snapshot go to the plugin loader, which opens a name with
 * a '/' as a path: a file that names "./ee" as its index or a path as its
 * codec is damage, refused before any loading (else a crafted database
 * would run code from a file of its choosing at open, even read-only). */
START_TEST(test_persist_plugin_name_not_path)
{
    iqdb *db;
    for (int which = 0; which < 2; which++) {
        char dir[600], snap[700];
        snprintf(dir, sizeof dir, "%s", path("db"));
        snprintf(snap, sizeof snap, "%s/snapshot", dir);
        ck_assert_int_eq(open_db(dir, which ? "zstd" : NULL, &db), 0);
        ck_assert_int_eq(put(db, 1), 0);
        ck_assert_int_eq(iqdb_close(db), 0);
        size_t n;
        unsigned char *b = slurp(snap, &n);
        unsigned char *ent = sec_entry(b, 1); /* CONFIG */
        ck_assert_uint_eq(get_le64(ent + 4) & 0xffffffffu, 0); /* raw */
        unsigned char *cf = b + get_le64(ent + 8);
        size_t len = (size_t)get_le64(ent + 16);
        const char *from = which ? "zstd" : "flat";
        const char *to = which ? "/tmp" : "./ee";
        /* the index name, or the codec name after it and no params */
        size_t at = which ? 2 + 4 + 4 + 2 : 2;
        ck_assert_uint_lt(at + 4, len);
        ck_assert_mem_eq(cf + at, from, 4);
        memcpy(cf + at, to, 4);
        fix_section(b, ent);
        spit(snap, b, n);
        free(b);
        iqdb_config *c = iqdb_config_new(0, (iqdb_metric)0);
        iqdb_config_set_readonly(c, 1);
        ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_ECORRUPT);
        ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "not a plugin name"));
        iqdb_config_free(c);
        ck_assert_int_eq(iqdb_check(dir, NULL, NULL, NULL), IQDB_ECORRUPT);
        teardown();
        setup();
    }
}
END_TEST

/* An intact snapshot header with a higher format version is a newer
 * library's file: IQDB_ENOTSUP, not damage; the file is left alone. */
START_TEST(test_persist_newer_snapshot_version)
{
    const char *dir = path("db");
    iqdb *db;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    ck_assert_int_eq(put(db, 1), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    size_t n;
    unsigned char *b = slurp(snap, &n);
    put_le32(b + 8, 3);
    fix_header(b);
    spit(snap, b, n);
    ck_assert_int_eq(open_db(dir, NULL, &db), IQDB_ENOTSUP);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "format version 3"));
    ck_assert_int_eq(iqdb_check(dir, NULL, NULL, NULL), IQDB_ENOTSUP);
    size_t n2;
    unsigned char *after = slurp(snap, &n2);
    ck_assert(n == n2 && memcmp(b, after, n) == 0);
    free(after);
    /* Version 2 without its segment sections: damage. */
    put_le32(b + 8, 2);
    fix_header(b);
    spit(snap, b, n);
    ck_assert_int_eq(open_db(dir, NULL, &db), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "format 2"));
    /* Version 0 never existed: damage. */
    put_le32(b + 8, 0);
    fix_header(b);
    spit(snap, b, n);
    ck_assert_int_eq(open_db(dir, NULL, &db), IQDB_ECORRUPT);
    free(b);
}
END_TEST

START_TEST(test_persist_non_database_files)
{
    small_db(NULL);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", path("db"));
    unsigned char junk[4096];
    uint64_t seed = 9;
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)tu_next(&seed);
    const unsigned char sqlite[] = "SQLite format 3";
    const unsigned char zstd_frame[] = {0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05,
                                        0x29, 0x00, 0x00, 'h',  'e',  'l',
                                        'l',  'o'};
    size_t elf_n;
    unsigned char *elf = slurp("/bin/true", &elf_n);
    struct {
        const void *p;
        size_t n;
    } inputs[] = {{"", 0},       {"x", 1},           {junk, sizeof junk},
                  {elf, elf_n},  {sqlite, sizeof sqlite},
                  {zstd_frame, sizeof zstd_frame}};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        spit(snap, inputs[i].p, inputs[i].n);
        iqdb *db;
        int r = open_db(path("db"), NULL, &db);
        ck_assert_msg(r == IQDB_ECORRUPT, "input %zu: %s", i, iqdb_errname(r));
        ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "snapshot"));
    }
    free(elf);
}
END_TEST

/* ---- torn and damaged WAL tails through open ------------------------------- */

static void copy_file(const char *from, const char *to)
{
    size_t n;
    unsigned char *b = slurp(from, &n);
    spit(to, b, n);
    free(b);
}

/* 64 records, one synced frame each, left in the WAL by a process that
 * never closed. Damage inside the last 3 frames of every kind: the reopen
 * keeps exactly the frames before the damage. */
START_TEST(test_persist_wal_tail_damage)
{
    enum { N = 64 };
    const char *dir = path("db");
    pid_t pid = fork();
    if (pid == 0) {
        iqdb *db;
        if (open_db(dir, NULL, &db) != 0)
            _exit(2);
        for (uint64_t i = 0; i < N; i++)
            if (put(db, i) != 0)
                _exit(5);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char wal[600], snap[600], wal0[600], snap0[600];
    snprintf(wal, sizeof wal, "%s/wal", dir);
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    snprintf(wal0, sizeof wal0, "%s/wal.orig", tmpdir);
    snprintf(snap0, sizeof snap0, "%s/snapshot.orig", tmpdir);
    copy_file(wal, wal0);
    copy_file(snap, snap0);
    size_t n;
    unsigned char *orig = slurp(wal0, &n);
    /* Frame offsets from the layout in core/wal.c: a 40-byte header, then
     * frames of a 32-byte header (payload length at +4) and the payload
     * padded to 8 bytes; the log may end in preallocated zeros. */
    uint64_t off[N + 1];
    off[0] = 40;
    for (int i = 0; i < N; i++) {
        ck_assert_uint_le(off[i] + 32, n);
        uint32_t len = (uint32_t)orig[off[i] + 4] | (uint32_t)orig[off[i] + 5] << 8 |
                       (uint32_t)orig[off[i] + 6] << 16 | (uint32_t)orig[off[i] + 7] << 24;
        off[i + 1] = off[i] + 32 + ((len + 7u) & ~7u);
    }
    ck_assert_uint_le(off[N], n);
    unsigned char *bad = malloc(n);
    uint64_t seed = 77;
    /* mode 0: truncate at pos; 1: flip byte pos; 2: zero-fill from pos to
     * the end of its frame; 3: garbage-fill likewise. */
    for (int mode = 0; mode < 4; mode++) {
        for (uint64_t pos = off[N - 3]; pos < off[N]; pos++) {
            int k = N - 3;
            while (off[k + 1] <= pos)
                k++;
            if (mode >= 2 && pos != off[k])
                continue; /* fills cover whole frames */
            memcpy(bad, orig, n);
            size_t len = n;
            if (mode == 0)
                len = (size_t)pos;
            else if (mode == 1)
                bad[pos] ^= 0x20;
            else
                for (uint64_t b = off[k]; b < off[k + 1]; b++)
                    bad[b] = mode == 2 ? 0 : (unsigned char)tu_next(&seed);
            spit(wal, bad, len);
            copy_file(snap0, snap);
            iqdb *db;
            int r = open_db(dir, NULL, &db);
            ck_assert_msg(r == 0, "mode %d pos %llu: %s", mode,
                          (unsigned long long)pos, iqdb_errmsg(NULL));
            ck_assert_msg(iqdb_count(db) == (size_t)k,
                          "mode %d pos %llu (frame %d): %zu records", mode,
                          (unsigned long long)pos, k, iqdb_count(db));
            iqdb_recovery rec;
            iqdb_recovery_report(db, &rec);
            ck_assert_uint_eq(rec.frames_replayed, (uint64_t)k);
            /* Cut bytes are reported, except a damaged last frame that
             * reads as zeros up to the end: that is a clean end. */
            if (mode == 0 && len > off[k])
                ck_assert_uint_gt(rec.bytes_truncated, 0);
            iqdb_close(db);
        }
    }
    /* Strict recovery refuses damage to a frame that later frames prove
     * was durable, and leaves the files as they were. */
    memcpy(bad, orig, n);
    bad[off[N - 3] + 4] ^= 1;
    spit(wal, bad, n);
    copy_file(snap0, snap);
    iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
    iqdb_config_set_strict_recovery(c, 1);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "wal"));
    size_t n2;
    unsigned char *after = slurp(wal, &n2);
    ck_assert_uint_eq(n2, n);
    ck_assert_mem_eq(after, bad, n);
    free(after);
    iqdb_config_free(c);
    free(bad);
    free(orig);
}
END_TEST

/* ---- injected I/O faults ---------------------------------------------------------- */

/* The n-th operation of kind op fails: the failing write reports an
 * error, later writes are refused, and a reopen has every acknowledged
 * write. */
static void fault_sweep(int op, int err)
{
    for (long n = 0; n < 40; n++) {
        teardown();
        setup();
        iqdb *db;
        iqdb__io_reset();
        ck_assert_int_eq(open_db(path("db"), NULL, &db), 0);
        iqdb__io_fail_nth(op, n, err);
        uint64_t acked = 0;
        int failed = 0;
        for (uint64_t i = 0; i < 30; i++) {
            if (i == 15 && iqdb_flush(db) != 0)
                failed = 1; /* a failed compaction also stops writes */
            int r = put(db, i);
            if (r == 0 && !failed) {
                acked = i + 1;
                continue;
            }
            if (failed)
                ck_assert_msg(r == IQDB_EREADONLY, "op %d n %ld: write after "
                              "a failure gave %s", op, n, iqdb_errname(r));
            ck_assert_int_ne(r, 0);
            failed = 1;
        }
        iqdb_close(db);
        iqdb__io_reset();
        int r = open_db(path("db"), NULL, &db);
        ck_assert_msg(r == 0, "op %d n %ld: reopen %s", op, n, iqdb_errmsg(NULL));
        for (uint64_t i = 0; i < acked; i++)
            ck_assert_msg(check(db, i), "op %d n %ld: acknowledged %llu lost", op,
                          n, (unsigned long long)i);
        iqdb_close(db);
    }
}

START_TEST(test_persist_fault_write)
{
    fault_sweep(IQDB_IO_OP_WRITE, EIO);
    fault_sweep(IQDB_IO_OP_WRITE, ENOSPC);
}
END_TEST

START_TEST(test_persist_fault_fsync)
{
    fault_sweep(IQDB_IO_OP_FSYNC, EIO);
}
END_TEST

START_TEST(test_persist_fault_rename_truncate)
{
    fault_sweep(IQDB_IO_OP_RENAME, EIO);
    fault_sweep(IQDB_IO_OP_FTRUNCATE, EIO);
}
END_TEST

/* ENOSPC while writing a snapshot leaves the old one byte-identical and
 * the WAL intact. */
START_TEST(test_persist_enospc_keeps_snapshot)
{
    iqdb *db;
    ck_assert_int_eq(open_db(path("db"), NULL, &db), 0);
    for (uint64_t i = 0; i < 20; i++)
        put(db, i);
    ck_assert_int_eq(iqdb_flush(db), 0);
    for (uint64_t i = 20; i < 40; i++)
        put(db, i);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", path("db"));
    size_t n1, n2;
    unsigned char *before = slurp(snap, &n1);
    iqdb__io_fail_nth(IQDB_IO_OP_WRITE, 2, ENOSPC);
    ck_assert_int_eq(iqdb_flush(db), IQDB_ENOSPC);
    ck_assert_int_eq(put(db, 99), IQDB_EREADONLY);
    iqdb__io_reset();
    unsigned char *after = slurp(snap, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_mem_eq(before, after, n1);
    iqdb_close(db);
    ck_assert_int_eq(open_db(path("db"), NULL, &db), 0);
    for (uint64_t i = 0; i < 40; i++)
        ck_assert_int_eq(check(db, i), 1);
    ck_assert_int_eq(check(db, 99), 0);
    iqdb_close(db);
    free(before);
    free(after);
}
END_TEST

/* ---- power loss, policies, group commit, compaction -------------------- */

/* Under IQDB_FSYNC_ALWAYS a power cut (unsynced writes and directory
 * operations dropped or partly kept, at random) loses nothing that was
 * acknowledged, also across compactions. */
START_TEST(test_persist_power_loss)
{
    uint64_t seed = 4242;
    for (int round = 0; round < 40; round++) {
        teardown();
        setup();
        iqdb *db;
        ck_assert_int_eq(open_db(path("db"), NULL, &db), 0);
        uint64_t base = 0, acked = 0;
        put(db, base);
        iqdb__io_powerloss_begin();
        int n = 5 + (int)(tu_next(&seed) % 40);
        int flush_at = (int)(tu_next(&seed) % (uint64_t)(n + 5));
        for (int i = 1; i <= n; i++) {
            if (i == flush_at && iqdb_flush(db) != 0)
                break;
            if (put(db, (uint64_t)i) != 0)
                break;
            acked = (uint64_t)i;
        }
        ck_assert_int_eq(iqdb__io_powerloss_crash(round % 3 ? tu_next(&seed) : 0),
                         0);
        iqdb_close(db); /* fails to compact on the dead "machine"; frees */
        iqdb__io_powerloss_end();
        int r = open_db(path("db"), NULL, &db);
        ck_assert_msg(r == 0, "round %d: %s", round, iqdb_errmsg(NULL));
        for (uint64_t i = 0; i <= acked; i++)
            ck_assert_msg(check(db, i), "round %d: acknowledged %llu lost "
                          "(flush at %d)", round, (unsigned long long)i,
                          flush_at);
        iqdb_close(db);
    }
}
END_TEST

START_TEST(test_persist_fsync_policies)
{
    for (int policy = IQDB_FSYNC_PERIODIC; policy <= IQDB_FSYNC_NEVER; policy++) {
        char name[32];
        snprintf(name, sizeof name, "db%d", policy);
        iqdb_config *c = conf(NULL, policy);
        iqdb *db;
        ck_assert_int_eq(iqdb_open(path(name), c, &db), 0);
        iqdb__io_reset();
        for (uint64_t i = 0; i < 50; i++)
            ck_assert_int_eq(put(db, i), 0);
        /* Far fewer syncs than writes. */
        ck_assert_int_lt(iqdb__io_count(IQDB_IO_OP_FSYNC), 25);
        ck_assert_int_eq(iqdb_close(db), 0);
        ck_assert_int_eq(iqdb_open(path(name), c, &db), 0);
        for (uint64_t i = 0; i < 50; i++)
            ck_assert_int_eq(check(db, i), 1);
        iqdb_close(db);
        iqdb_config_free(c);
    }
    iqdb_config *c = conf(NULL, 0);
    ck_assert_int_eq(iqdb_config_set_fsync(c, IQDB_FSYNC_PERIODIC, 0),
                     IQDB_EINVAL);
    iqdb_config_free(c);
}
END_TEST

typedef struct wctx {
    iqdb *db;
    uint64_t first;
    int errors;
} wctx;

static void *writer(void *arg)
{
    wctx *w = arg;
    for (uint64_t i = w->first; i < w->first + 40; i++)
        if (put(w->db, i) != 0)
            w->errors++;
    return NULL;
}

/* Concurrent writers under ALWAYS share syncs and lose nothing. */
START_TEST(test_persist_group_commit)
{
    iqdb *db;
    ck_assert_int_eq(open_db(path("db"), NULL, &db), 0);
    iqdb__io_reset();
    pthread_t th[8];
    wctx w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (wctx){db, (uint64_t)i * 1000, 0};
        pthread_create(&th[i], NULL, writer, &w[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    long syncs = iqdb__io_count(IQDB_IO_OP_FSYNC);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(w[i].errors, 0);
    /* 320 acknowledged writes; a sync per write would be 320. */
    ck_assert_msg(syncs < 320, "%ld syncs for 320 writes", syncs);
    iqdb_close(db);
    ck_assert_int_eq(open_db(path("db"), NULL, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 320);
    for (int t = 0; t < 8; t++)
        for (uint64_t i = 0; i < 40; i++)
            ck_assert_int_eq(check(db, (uint64_t)t * 1000 + i), 1);
    iqdb_close(db);
}
END_TEST

typedef struct fctx {
    iqdb *db;
    uint64_t first;
    unsigned char ok[40]; /* 1: acknowledged */
    int late_success;     /* a write acknowledged after one was refused */
} fctx;

static void *fault_writer(void *arg)
{
    fctx *w = arg;
    int failed = 0;
    for (uint64_t i = 0; i < 40; i++) {
        int r = put(w->db, w->first + i);
        w->ok[i] = r == 0;
        if (r == 0 && failed)
            w->late_success = 1;
        if (r != 0)
            failed = 1;
    }
    return NULL;
}

/* Eight writers share syncs while the n-th operation of kind op fails:
 * no thread gets a write acknowledged after one was refused, and after a
 * reopen exactly the acknowledged writes are there (a refused write must
 * not come back, an acknowledged one must not be lost). With refused, a
 * write after the writers is refused too. Returns the writes
 * acknowledged. */
static int group_fault_round(int op, long n, int refused)
{
    teardown();
    setup();
    iqdb *db;
    ck_assert_int_eq(open_db(path("db"), NULL, &db), 0);
    iqdb__io_fail_nth(op, n, EIO);
    pthread_t th[8];
    fctx w[8];
    for (int i = 0; i < 8; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].db = db;
        w[i].first = (uint64_t)i * 1000;
        pthread_create(&th[i], NULL, fault_writer, &w[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    if (refused)
        ck_assert_int_eq(put(db, 99999), IQDB_EREADONLY);
    iqdb_close(db);
    iqdb__io_reset();
    ck_assert_int_eq(open_db(path("db"), NULL, &db), 0);
    int acked = 0;
    for (int t = 0; t < 8; t++) {
        ck_assert_int_eq(w[t].late_success, 0);
        for (uint64_t i = 0; i < 40; i++) {
            acked += w[t].ok[i];
            ck_assert_msg(check(db, w[t].first + i) == w[t].ok[i],
                          "n %ld: write %llu %s, but %s after reopen", n,
                          (unsigned long long)(w[t].first + i),
                          w[t].ok[i] ? "acknowledged" : "refused",
                          w[t].ok[i] ? "absent" : "present");
        }
    }
    iqdb_close(db);
    return acked;
}

/* A sync fails: every write it covered fails and the handle refuses
 * writes. */
START_TEST(test_persist_group_commit_fault)
{
    for (long n = 1; n < 40; n += 6)
        ck_assert_int_lt(group_fault_round(IQDB_IO_OP_FSYNC, n, 1), 320);
}
END_TEST

/* A frame write fails: the writes queued before it that a sync covered
 * are acknowledged, the others refused. */
START_TEST(test_persist_group_commit_write_fault)
{
    for (long n = 5; n < 200; n += 7)
        group_fault_round(IQDB_IO_OP_WRITE, n, 0);
}
END_TEST

START_TEST(test_persist_auto_compaction)
{
    iqdb_config *c = conf(NULL, IQDB_FSYNC_NEVER);
    iqdb_config_set_compact_bytes(c, 4096);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(path("db"), c, &db), 0);
    pid_t pid = fork();
    if (pid == 0) { /* writes, then dies without closing */
        for (uint64_t i = 0; i < 300; i++)
            if (put(db, i) != 0)
                _exit(1);
        /* Let a compaction still writing its snapshot finish. */
        for (int t = 0; t < 2000 && file_exists(path("db"), "wal.old"); t++)
            usleep(5000);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    iqdb_close(db); /* the parent's handle never wrote */
    c->readonly = 1;
    ck_assert_int_eq(iqdb_open(path("db"), c, &db), 0);
    c->readonly = 0;
    /* Compactions ran, so not every frame is left to replay. (The log may
     * hold more than the threshold: writes go on into the new log while
     * a compaction writes its snapshot.) */
    iqdb_recovery rec;
    iqdb_recovery_report(db, &rec);
    ck_assert_msg(rec.frames_replayed < 300, "%llu frames replayed",
                  (unsigned long long)rec.frames_replayed);
    iqdb_close(db);
    ck_assert_int_eq(iqdb_open(path("db"), c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 300);
    for (uint64_t i = 0; i < 300; i++)
        ck_assert_int_eq(check(db, i), 1);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST


/* Automatic compaction waits for the log to outgrow the snapshot, so the
 * number of snapshot rewrites grows with the log of the data size, not
 * linearly with it. */
START_TEST(test_persist_compaction_amortized)
{
    iqdb_config *c = conf(NULL, IQDB_FSYNC_NEVER);
    iqdb_config_set_compact_bytes(c, 4096);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(path("db"), c, &db), 0);
    iqdb__io_reset();
    for (uint64_t i = 0; i < 3000; i++)
        ck_assert_int_eq(put(db, i), 0);
    /* Each compaction renames twice (snapshot, log). 3000 frames of about
     * 110 bytes make 330 KB of log: a 4 KiB threshold alone would compact
     * about 80 times. */
    long renames = iqdb__io_count(IQDB_IO_OP_RENAME);
    ck_assert_msg(renames >= 2 && renames <= 2 * 12, "%ld renames", renames);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_int_eq(iqdb_open(path("db"), c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 3000);
    for (uint64_t i = 0; i < 3000; i += 7)
        ck_assert_int_eq(check(db, i), 1);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* ---- background compaction --------------------------------------------- */

/* The hook parks the compaction thread between its steps until released. */
static pthread_mutex_t hook_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hook_cv = PTHREAD_COND_INITIALIZER;
static int hook_parked, hook_release;

static void park_hook(const char *dir)
{
    (void)dir;
    pthread_mutex_lock(&hook_mu);
    hook_parked++;
    pthread_cond_broadcast(&hook_cv);
    while (!hook_release)
        pthread_cond_wait(&hook_cv, &hook_mu);
    pthread_mutex_unlock(&hook_mu);
}

static void hook_arm(void)
{
    hook_parked = 0;
    hook_release = 0;
    iqdb__compact_hook = park_hook;
}

static int hook_is_parked(void)
{
    pthread_mutex_lock(&hook_mu);
    int p = hook_parked;
    pthread_mutex_unlock(&hook_mu);
    return p;
}

static void hook_let_go(void)
{
    pthread_mutex_lock(&hook_mu);
    hook_release = 1;
    iqdb__compact_hook = NULL;
    pthread_cond_broadcast(&hook_cv);
    pthread_mutex_unlock(&hook_mu);
}

static int file_exists(const char *dir, const char *name)
{
    char p[1024];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0;
}

/* Let the parked compaction go, wait for it to put its snapshot in place
 * (it deletes wal.old then), and copy that snapshot alone (with the log
 * segments it may refer to, and no log) into path("snaponly"), to be
 * opened as the state at the compaction's start. Returns the snapshot's
 * bytes (*n of them; the caller frees them). */
static unsigned char *let_go_and_copy_snapshot(const char *dir, size_t *n)
{
    hook_let_go();
    for (int t = 0; t < 2000 && file_exists(dir, "wal.old"); t++)
        usleep(5000);
    ck_assert(!file_exists(dir, "wal.old"));
    char snap[600], copy[600];
    ck_assert_int_eq(mkdir(path("snaponly"), 0755), 0);
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    snprintf(copy, sizeof copy, "%s/snapshot", path("snaponly"));
    unsigned char *b = slurp(snap, n);
    spit(copy, b, *n);
    /* Format 2 exactly when automatic compactions keep segments. */
    ck_assert_uint_eq(b[8], atomic_load(&iqdb__compact_refs) ? 2 : 1);
    DIR *dh = opendir(dir);
    ck_assert_ptr_nonnull(dh);
    struct dirent *de;
    int segs = 0;
    while ((de = readdir(dh)) != NULL) {
        if (strncmp(de->d_name, "seg.", 4) != 0 &&
            strncmp(de->d_name, "vec.", 4) != 0)
            continue;
        size_t sn;
        char from[1024], to[1024];
        snprintf(from, sizeof from, "%s/%s", dir, de->d_name);
        snprintf(to, sizeof to, "%s/%s", path("snaponly"), de->d_name);
        unsigned char *s = slurp(from, &sn);
        spit(to, s, sn);
        free(s);
        segs++;
    }
    closedir(dh);
    ck_assert_int_eq(segs > 0, atomic_load(&iqdb__compact_refs) != 0);
    return b;
}

/* Write records from *next on until an automatic compaction is parked in
 * the hook; returns how many were written. */
static uint64_t write_until_parked(iqdb *db, uint64_t *next)
{
    uint64_t n = 0;
    while (!hook_is_parked()) {
        ck_assert_int_eq(put(db, (*next)++), 0);
        ck_assert_msg(++n < 5000, "no automatic compaction started");
    }
    return n;
}

/* While a compaction writes its snapshot, writes and reads go on, and no
 * slot the snapshot reads is reused: the snapshot holds exactly the
 * records as of the frame it was started at, whatever is deleted and
 * added meanwhile. */
static void bg_compaction_pinned(int refs)
{
    atomic_store(&iqdb__compact_refs, refs);
    iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
    iqdb_config_set_compact_bytes(c, 4096);
    iqdb *db;
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path("db"));
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    hook_arm();
    uint64_t next = 0;
    write_until_parked(db, &next);
    uint64_t at_start = next; /* records 0 .. at_start-1 written */
    /* The log was rotated: the old frames wait in wal.old. */
    ck_assert(file_exists(dir, "wal.old"));
    ck_assert(file_exists(dir, "wal"));
    /* Free the first ten slots and add ten records: without the pin they
     * would take those slots and overwrite the vectors being written. */
    for (uint64_t i = 0; i < 10; i++) {
        int present = 0;
        iqdb_id id;
        char key[32];
        float v[DIM];
        iqdb_meta *m;
        make(i, v, &m, &id, key);
        iqdb_meta_free(m);
        ck_assert_int_eq(iqdb_delete(db, id, &present), 0);
        ck_assert_int_eq(present, 1);
    }
    for (uint64_t i = 1000; i < 1010; i++)
        ck_assert_int_eq(put(db, i), 0);
    ck_assert_int_eq(check(db, 1005), 1);
    ck_assert_int_eq(check(db, 5), 0);
    /* The new snapshot alone: the state at the start of the compaction. */
    size_t n;
    free(let_go_and_copy_snapshot(dir, &n));
    iqdb *so;
    ck_assert_int_eq(iqdb_open(path("snaponly"), c, &so), 0);
    /* The write that started the compaction is its last record; the
     * writer may have added one more before it saw the hook parked. */
    size_t held = iqdb_count(so);
    ck_assert_uint_ge(held, 10);
    ck_assert_uint_le(held, at_start);
    for (uint64_t i = 0; i < at_start; i++)
        ck_assert_int_eq(check(so, i), i < held);
    ck_assert_int_eq(check(so, 1000), 0);
    iqdb_close(so);
    /* The database itself: everything, through snapshot and new log. */
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), at_start);
    for (uint64_t i = 0; i < at_start; i++)
        ck_assert_int_eq(check(db, i), i >= 10);
    for (uint64_t i = 1000; i < 1010; i++)
        ck_assert_int_eq(check(db, i), 1);
    iqdb_close(db);
    iqdb_config_free(c);
}

START_TEST(test_persist_bg_compaction_pinned)
{
    bg_compaction_pinned(0);
}
END_TEST

START_TEST(test_persist_bg_compaction_pinned_refs)
{
    bg_compaction_pinned(1);
}
END_TEST

/* Updates while a compaction writes its snapshot reuse slots: only the
 * slots the snapshot reads are held back, so the slot count grows by at
 * most the live records, however many writes the compaction overlaps. */
START_TEST(test_persist_bg_compaction_slots_bounded)
{
    iqdb_config *c = conf(NULL, IQDB_FSYNC_NEVER);
    iqdb_config_set_compact_bytes(c, 4096);
    iqdb *db;
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path("db"));
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    hook_arm();
    uint64_t next = 0;
    write_until_parked(db, &next);
    uint64_t live = iqdb_count(db), limit0 = db->store.limit;
    /* 40 updates of every record while the compaction is parked. */
    for (int round = 0; round < 40; round++)
        for (uint64_t i = 0; i < next; i++)
            ck_assert_int_eq(put(db, i), 0);
    ck_assert_msg(db->store.limit <= limit0 + 2 * live + 2,
                  "%llu slots for %llu records (%llu before)",
                  (unsigned long long)db->store.limit,
                  (unsigned long long)live, (unsigned long long)limit0);
    hook_let_go();
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), next);
    for (uint64_t i = 0; i < next; i++)
        ck_assert_int_eq(check(db, i), 1);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* A child writes records [from, to) and exits without closing: they stay
 * as frames in wal. */
typedef struct frames_job {
    const char *dir;
    uint64_t from, to;
} frames_job;

static int write_frames(void *arg)
{
    frames_job *j = arg;
    iqdb *w;
    if (open_db(j->dir, NULL, &w) != 0)
        return 2;
    for (uint64_t i = j->from; i < j->to; i++)
        if (put(w, i) != 0)
            return 3;
    return 0; /* no close */
}

static void leave_frames(const char *dir, uint64_t from, uint64_t to)
{
    frames_job j = {dir, from, to};
    in_child(write_frames, &j);
}

/* A frame whose checksums are good but whose payload does not decode is
 * damage that names the file and the frame's offset, in iqdb_check and
 * in the refused open. */
START_TEST(test_persist_undecodable_frame)
{
    const char *dir = path("db");
    iqdb *db;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    leave_frames(dir, 0, 5);
    char wp[600];
    snprintf(wp, sizeof wp, "%s/wal", dir);
    size_t n;
    unsigned char *b = slurp(wp, &n);
    /* Frame 3: past the 40-byte header and two frames. */
    uint64_t off = 40;
    for (int k = 0; k < 2; k++) {
        uint32_t len = (uint32_t)get_le64(b + off + 4) & 0xffffffffu;
        off += 32 + ((len + 7) & ~7u);
    }
    uint32_t len = (uint32_t)get_le64(b + off + 4) & 0xffffffffu;
    ck_assert_uint_lt(off + 32 + len, n);
    b[off + 32] = 0xee; /* no such operation */
    uint32_t padded = (len + 7) & ~7u;
    put_le32(b + off + 24, iqdb__crc32c(0, b + off + 32, padded));
    unsigned char hc[36];
    memcpy(hc, b + 16, 8); /* the file's salt */
    memcpy(hc + 8, b + off, 28);
    put_le32(b + off + 28, iqdb__crc32c(0, hc, sizeof hc));
    spit(wp, b, n);
    free(b);
    finding_log f;
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(iqdb_check(dir, NULL, log_finding, &f), IQDB_ECORRUPT);
    ck_assert_int_eq(f.damage, 1);
    ck_assert_str_eq(f.file, "wal");
    ck_assert_uint_eq(f.off, off);
    ck_assert_ptr_nonnull(strstr(f.msg, "frame 3"));
    ck_assert_int_eq(open_db(dir, NULL, &db), IQDB_ECORRUPT);
    char want[700];
    snprintf(want, sizeof want, "%s: frame 3 at offset %llu", wp,
             (unsigned long long)off);
    ck_assert_msg(strstr(iqdb_errmsg(NULL), want) != NULL, "%s",
                  iqdb_errmsg(NULL));
}
END_TEST

/* Deletes of short byte-string ids, left in the log by a process that
 * exits without closing, replay (their frames are the smallest a write
 * makes: a 1-byte id is a 6-byte record). */
static int short_id_writes(void *arg)
{
    iqdb *w;
    float v[DIM] = {1, 2, 3, 4, 5, 6};
    if (open_db(arg, NULL, &w) != 0)
        return 2;
    for (uint32_t l = 1; l <= 4; l++) {
        if (iqdb_upsert(w, iqdb_id_bytes("abcd", l), v, DIM, NULL) != 0)
            return 3;
        if (l % 2 && iqdb_delete(w, iqdb_id_bytes("abcd", l), NULL) != 0)
            return 4;
    }
    return 0; /* no close */
}

START_TEST(test_persist_short_id_delete_replays)
{
    const char *dir = path("db");
    in_child(short_id_writes, (void *)dir);
    ck_assert_int_eq(iqdb_check(dir, NULL, NULL, NULL), 0);
    iqdb *db;
    ck_assert_msg(open_db(dir, NULL, &db) == 0, "%s", iqdb_errmsg(NULL));
    ck_assert_uint_eq(iqdb_count(db), 2);
    for (uint32_t l = 1; l <= 4; l++)
        ck_assert_int_eq(iqdb_get(db, iqdb_id_bytes("abcd", l), NULL, DIM,
                                  NULL),
                         l % 2 ? IQDB_ENOTFOUND : 0);
    ck_assert_int_eq(iqdb_close(db), 0);
}
END_TEST

/* A log removed from outside: creation makes the log before the first
 * snapshot and nothing removes it after, so a snapshot without one is
 * damage (writes after the snapshot are lost). Strict recovery refuses to
 * open; otherwise open goes on from the snapshot and says so. */
static void wal_missing_case(int close_first)
{
    char dir[600], wp[700];
    snprintf(dir, sizeof dir, "%s", path("db"));
    snprintf(wp, sizeof wp, "%s/wal", dir);
    iqdb *db;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    iqdb_recovery rec;
    iqdb_recovery_report(db, &rec);
    ck_assert_ptr_null(rec.damage);
    uint64_t kept = 0;
    if (close_first) { /* the snapshot holds frames */
        for (uint64_t i = 0; i < 10; i++)
            ck_assert_int_eq(put(db, i), 0);
        kept = 10;
    }
    ck_assert_int_eq(iqdb_close(db), 0);
    /* Acknowledged writes in the log only (the first case: before any
     * compaction, the snapshot still being the one made at creation). */
    leave_frames(dir, 10, 15);
    ck_assert_int_eq(unlink(wp), 0);
    finding_log f;
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(iqdb_check(dir, NULL, log_finding, &f), IQDB_ECORRUPT);
    ck_assert_int_eq(f.damage, 1);
    ck_assert_str_eq(f.file, "wal");
    ck_assert_ptr_nonnull(strstr(f.msg, "missing"));
    iqdb_config *s = conf(NULL, IQDB_FSYNC_ALWAYS);
    iqdb_config_set_strict_recovery(s, 1);
    ck_assert_int_eq(iqdb_open(dir, s, &db), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "is missing"));
    ck_assert(!file_exists(dir, "wal")); /* refused: nothing changed */
    iqdb_config_free(s);
    /* Read-only: the snapshot's records, nothing changed. */
    iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
    iqdb_config_set_readonly(c, 1);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    iqdb_recovery_report(db, &rec);
    ck_assert_ptr_nonnull(rec.damage);
    ck_assert_int_eq(rec.acknowledged_damage, 1);
    ck_assert_uint_eq(iqdb_count(db), kept);
    iqdb_close(db);
    iqdb_config_free(c);
    ck_assert(!file_exists(dir, "wal"));
    /* Writable: goes on from the snapshot with a new log. */
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    iqdb_recovery_report(db, &rec);
    ck_assert_ptr_nonnull(strstr(rec.damage, "missing"));
    ck_assert_uint_eq(iqdb_count(db), kept);
    for (uint64_t i = 0; i < kept; i++)
        ck_assert_int_eq(check(db, i), 1);
    ck_assert_int_eq(check(db, 12), 0);
    ck_assert_int_eq(put(db, 20), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    iqdb_recovery_report(db, &rec);
    ck_assert_ptr_null(rec.damage);
    ck_assert_uint_eq(iqdb_count(db), kept + 1);
    ck_assert_int_eq(iqdb_close(db), 0);
}

/* Stacked frame headers after damage make the scan stop at its budget;
 * iqdb_check calls that damage (as open does), not a torn tail. */
START_TEST(test_persist_check_scan_cut)
{
    char dir[600], wp[700];
    snprintf(dir, sizeof dir, "%s", path("db"));
    snprintf(wp, sizeof wp, "%s/wal", dir);
    iqdb *db;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    leave_frames(dir, 0, 3);
    size_t n;
    unsigned char *img = slurp(wp, &n);
    /* The end of the last frame: the first zero byte run to the end. */
    size_t end = n;
    while (end > 40 && img[end - 1] == 0)
        end--;
    end = (end + 7) & ~(size_t)7;
    size_t total = end + ((size_t)1 << 20);
    unsigned char *f = calloc(total, 1);
    memcpy(f, img, end);
    f[end] = 0xee;
    for (size_t o = end + 8; o + 32 <= total; o += 32) {
        unsigned char *h = f + o;
        put_le32(h, 0x52465149u);
        put_le32(h + 4, (uint32_t)(total - o - 32) & ~7u);
        put_le64(h + 8, 9);
        put_le64(h + 16, 3);
        h[24] = 1;
        unsigned char hc[36];
        memcpy(hc, img + 16, 8);
        memcpy(hc + 8, h, 28);
        put_le32(h + 28, iqdb__crc32c(0, hc, sizeof hc));
    }
    spit(wp, f, total);
    free(f);
    free(img);
    finding_log fr;
    memset(&fr, 0, sizeof fr);
    ck_assert_int_eq(iqdb_check(dir, NULL, log_finding, &fr), IQDB_ECORRUPT);
    ck_assert_int_eq(fr.damage, 1);
    ck_assert_ptr_nonnull(strstr(fr.msg, "cut short"));
}
END_TEST

START_TEST(test_persist_wal_missing)
{
    wal_missing_case(0);
    teardown();
    setup();
    wal_missing_case(1);
}
END_TEST

/* Creation makes the log, then the snapshot: a directory left with only
 * the lock file and an empty log (a creation that stopped in between) is
 * created again, while a log with frames, or any other file, makes it
 * not an iqdb database. */
START_TEST(test_persist_creation_interrupted)
{
    char dir[600], wp[700];
    snprintf(dir, sizeof dir, "%s", path("db"));
    snprintf(wp, sizeof wp, "%s/wal", dir);
    iqdb *db;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    size_t n;
    unsigned char *empty = slurp(wp, &n);
    ck_assert_uint_eq(n, 40);
    char snap[700];
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    ck_assert_int_eq(unlink(snap), 0);
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    ck_assert_int_eq(put(db, 1), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    ck_assert_int_eq(check(db, 1), 1);
    ck_assert_int_eq(iqdb_close(db), 0);
    /* A log that is not empty beside no snapshot: left alone. */
    ck_assert_int_eq(unlink(snap), 0);
    size_t m;
    unsigned char *full = slurp(wp, &m);
    unsigned char *grown = malloc(m + 8);
    memcpy(grown, empty, 40);
    memset(grown + 40, 0, m + 8 - 40);
    spit(wp, grown, m + 8);
    ck_assert_int_eq(open_db(dir, NULL, &db), IQDB_EEXIST);
    ck_assert(!file_exists(dir, "snapshot"));
    free(grown);
    free(full);
    free(empty);
}
END_TEST

/* The snapshot write of an automatic compaction fails (a full disk): the
 * handle refuses writes with a message saying why, the old snapshot is
 * untouched, and a reopen has every acknowledged record from wal.old and
 * the new log; its close folds both and removes wal.old. */
START_TEST(test_persist_bg_compaction_fails)
{
    iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
    iqdb_config_set_compact_bytes(c, 4096);
    iqdb *db;
    const char *dir = path("db");
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    size_t n1, n2;
    unsigned char *before = slurp(snap, &n1);
    hook_arm();
    uint64_t next = 0;
    write_until_parked(db, &next);
    /* Acknowledged into the new log while the compaction waits. */
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(put(db, next++), 0);
    iqdb__io_fail_from(IQDB_IO_OP_WRITE, 0, ENOSPC);
    hook_let_go();
    /* flush waits for the compaction thread, then refuses. */
    ck_assert_int_eq(iqdb_flush(db), IQDB_EREADONLY);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(db), "No space left"));
    iqdb__io_reset();
    ck_assert_int_eq(put(db, 4999), IQDB_EREADONLY);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(db), "snapshot"));
    unsigned char *after = slurp(snap, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_mem_eq(before, after, n1);
    free(before);
    free(after);
    ck_assert(!file_exists(dir, "snapshot.tmp"));
    ck_assert(file_exists(dir, "wal.old"));
    /* Close does no final compaction and says so with the failure. */
    ck_assert_int_eq(iqdb_close(db), IQDB_ENOSPC);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "not compacted"));
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "No space left"));
    /* check: the rotated-out log is a note, not damage. */
    finding_log f;
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(iqdb_check(dir, NULL, log_finding, &f), 0);
    ck_assert_int_eq(f.damage, 0);
    ck_assert_int_eq(f.old_note, 1);
    /* Read-only: everything, nothing changed on disk. */
    c->readonly = 1;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), next);
    iqdb_close(db);
    ck_assert(file_exists(dir, "wal.old"));
    c->readonly = 0;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), next);
    for (uint64_t i = 0; i < next; i++)
        ck_assert_int_eq(check(db, i), 1);
    ck_assert_int_eq(check(db, 4999), 0);
    ck_assert_int_eq(put(db, next), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert(!file_exists(dir, "wal.old"));
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), next + 1);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

typedef struct sctx {
    iqdb *db;
    uint64_t first, n;
    unsigned char res[4000]; /* 1 acknowledged, 2 refused */
} sctx;

static void *until_refused(void *arg)
{
    sctx *w = arg;
    for (w->n = 0; w->n < 4000; w->n++) {
        int r = put(w->db, w->first + w->n);
        w->res[w->n] = r == 0 ? 1 : 2;
        if (r != 0) {
            w->n++;
            break;
        }
    }
    return NULL;
}

/* When a compaction's snapshot fails while writers are busy, the writes
 * already logged are still applied and acknowledged; the ones refused
 * were never logged: none of them comes back after a reopen. */
START_TEST(test_persist_bg_compaction_fails_busy)
{
    iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
    iqdb_config_set_compact_bytes(c, 4096);
    iqdb *db;
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path("db"));
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    hook_arm();
    uint64_t next = 0;
    write_until_parked(db, &next);
    iqdb__io_fail_from(IQDB_IO_OP_RENAME, 0, EIO);
    pthread_t th[4];
    static sctx w[4];
    for (int t = 0; t < 4; t++) {
        w[t].db = db;
        w[t].first = 10000 * (uint64_t)(t + 1);
        pthread_create(&th[t], NULL, until_refused, &w[t]);
    }
    usleep(20000);
    hook_let_go();
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    iqdb_close(db);
    iqdb__io_reset();
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    for (uint64_t i = 0; i < next; i++)
        ck_assert_int_eq(check(db, i), 1);
    for (int t = 0; t < 4; t++) {
        ck_assert_int_eq(w[t].res[w[t].n - 1], 2); /* ended refused */
        for (uint64_t i = 0; i < w[t].n; i++)
            ck_assert_msg(check(db, w[t].first + i) == (w[t].res[i] == 1),
                          "writer %d record %llu: %s, but %s after reopen", t,
                          (unsigned long long)i,
                          w[t].res[i] == 1 ? "acknowledged" : "refused",
                          w[t].res[i] == 1 ? "absent" : "present");
    }
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* A crash right after the log was renamed to wal.old, before the new log
 * was created: open replays wal.old alone and starts a new log after
 * it. */
START_TEST(test_persist_wal_old_only)
{
    const char *dir = path("db");
    iqdb *db;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    pid_t pid = fork();
    if (pid == 0) {
        for (uint64_t i = 0; i < 20; i++)
            if (put(db, i) != 0)
                _exit(1);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    iqdb_close(db);
    char from[600], to[600];
    snprintf(from, sizeof from, "%s/wal", dir);
    snprintf(to, sizeof to, "%s/wal.old", dir);
    ck_assert_int_eq(rename(from, to), 0);
    iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
    c->readonly = 1;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 20);
    iqdb_stats sts;
    ck_assert_int_eq(iqdb_stat(db, &sts), 0);
    ck_assert_uint_eq(sts.wal_bytes, 0);
    iqdb_close(db);
    ck_assert(!file_exists(dir, "wal"));
    c->readonly = 0;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert(file_exists(dir, "wal"));
    for (uint64_t i = 0; i < 20; i++)
        ck_assert_int_eq(check(db, i), 1);
    for (uint64_t i = 20; i < 25; i++)
        ck_assert_int_eq(put(db, i), 0);
    iqdb_close(db);
    ck_assert(!file_exists(dir, "wal.old"));
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 25);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* Append record i to the log w as one frame of its own. */
static void log_record(iqdb_wal *w, uint64_t i)
{
    float v[DIM];
    iqdb_meta *m;
    iqdb_id id;
    char key[32];
    make(i, v, &m, &id, key);
    iqdb_record rec = {id, v, m};
    iqdb_buf b;
    iqdb__buf_init(&b);
    iqdb__enc_upserts(&b, &rec, 1, DIM, NULL);
    ck_assert_int_eq(iqdb__wal_append(w, b.p, b.len, NULL), 0);
    iqdb__buf_free(&b);
    iqdb_meta_free(m);
}

/* wal.old then wal, written by hand: frames base..base+2 in wal.old
 * (records 5-7), then a log starting at base + 3 + gap (record 9). */
static uint64_t two_logs(const char *dir, uint64_t gap)
{
    iqdb *db;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    for (uint64_t i = 0; i < 5; i++)
        ck_assert_int_eq(put(db, i), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    iqdb_wal *w;
    iqdb_wal_options o = {IQDB_WAL_ALWAYS, 5, 0, 0, 1, NULL};
    iqdb_wal_replay_info info;
    ck_assert_int_eq(iqdb__wal_open(dir, &o, &w), 0);
    ck_assert_int_eq(iqdb__wal_replay(w, 0, NULL, NULL, &info), 0);
    uint64_t base = info.next_seq;
    for (uint64_t i = 5; i < 8; i++)
        log_record(w, i);
    ck_assert_int_eq(iqdb__wal_rotate(w, "wal.old"), 0);
    iqdb__wal_close(w);
    char p[600];
    snprintf(p, sizeof p, "%s/wal", dir);
    ck_assert_int_eq(unlink(p), 0);
    o.create = 1;
    o.first_seq = base + 3 + gap;
    ck_assert_int_eq(iqdb__wal_open(dir, &o, &w), 0);
    log_record(w, 9);
    iqdb__wal_close(w);
    return base;
}

/* Frames of wal.old and wal in sequence replay in order; a gap between
 * them is corruption, reported, never skipped. */
START_TEST(test_persist_wal_old_gap)
{
    iqdb *db;
    two_logs(path("ok"), 0);
    ck_assert_int_eq(open_db(path("ok"), NULL, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 9);
    ck_assert_int_eq(check(db, 7), 1);
    ck_assert_int_eq(check(db, 9), 1);
    iqdb_close(db);
    two_logs(path("gap"), 1);
    ck_assert_int_eq(open_db(path("gap"), NULL, &db), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "frames are missing"));
    /* Nothing was changed by the failed open. */
    ck_assert(file_exists(path("gap"), "wal.old"));
    ck_assert(file_exists(path("gap"), "wal"));
}
END_TEST

/* Damage in wal.old is damage to acknowledged frames. Strict recovery
 * refuses the open and changes nothing; by default the frames before the
 * damage are kept, the rest (and every frame of wal, which cannot apply
 * over the gap) is dropped and reported, and the open settles that in a
 * snapshot at once, so what is written afterwards survives a crash. */
/* A damaged leftover wal.old whose frames the snapshot holds (its delete
 * lost in a crash, then bit rot) costs nothing: wal replays in full, also
 * under strict recovery, and the leftover is removed. */
/* wal.old's first frame past the snapshot is damaged, so wal (past the
 * gap) is dropped and the open settles that in a snapshot. wal.old must
 * stay until that snapshot is in place: when the settle fails, or power
 * is lost at any step of it, the next open still salvages the same. */
static void damage_first_old_frame(const char *dir)
{
    two_logs(dir, 0);
    char old[600];
    snprintf(old, sizeof old, "%s/wal.old", dir);
    size_t n;
    unsigned char *b = slurp(old, &n);
    b[40 + 32 + 3] ^= 0x40; /* the first frame's payload */
    spit(old, b, n);
    free(b);
}

START_TEST(test_persist_wal_old_settle_fails)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path("db"));
    damage_first_old_frame(dir);
    iqdb *db;
    iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
    iqdb__io_fail_from(IQDB_IO_OP_RENAME, 0, EIO);
    ck_assert_int_ne(iqdb_open(dir, c, &db), 0);
    iqdb__io_reset();
    ck_assert(file_exists(dir, "wal.old"));
    ck_assert_msg(iqdb_open(dir, c, &db) == 0, "%s", iqdb_errmsg(NULL));
    ck_assert_uint_eq(iqdb_count(db), 5);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert(!file_exists(dir, "wal.old"));
    iqdb_config_free(c);
}
END_TEST

START_TEST(test_persist_wal_old_settle_power_loss)
{
    int rounds = 0;
    for (long at = 0; at < 200; at++) {
        teardown();
        setup();
        char dir[512];
        snprintf(dir, sizeof dir, "%s", path("db"));
        damage_first_old_frame(dir);
        iqdb *db;
        iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
        iqdb__io_powerloss_begin();
        iqdb__io_powerloss_crash_at(at, at % 2 ? 0 : (uint64_t)at * 7 + 1);
        int r = iqdb_open(dir, c, &db);
        iqdb__io_powerloss_crash_at(-1, 0);
        int dead = iqdb__io_powerloss_dead();
        if (r == 0)
            iqdb_close(db);
        iqdb__io_powerloss_end();
        if (!dead) { /* past the last operation: swept them all */
            iqdb_config_free(c);
            break;
        }
        rounds++;
        ck_assert_msg(iqdb_open(dir, c, &db) == 0, "crash at %ld: %s", at,
                      iqdb_errmsg(NULL));
        ck_assert_uint_eq(iqdb_count(db), 5);
        for (uint64_t i = 0; i < 5; i++)
            ck_assert_int_eq(check(db, i), 1);
        iqdb_close(db);
        iqdb_config_free(c);
    }
    ck_assert_int_gt(rounds, 5);
}
END_TEST

/* A compaction that does not rotate (wal.old still live at open) folds
 * wal's frames into its snapshot and removes wal.old; under NEVER and
 * PERIODIC those frames must be synced first, or a power loss leaves wal
 * ending before the snapshot and the database unopenable. */
static void flush_without_rotation(int policy)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path("db"));
    two_logs(dir, 0);
    iqdb *db;
    iqdb_config *c = conf(NULL, policy);
    iqdb_config_set_fsync(c, (iqdb_fsync)policy, 100000);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert(file_exists(dir, "wal.old"));
    iqdb__io_powerloss_begin();
    for (uint64_t i = 20; i < 30; i++)
        ck_assert_int_eq(put(db, i), 0);
    ck_assert_int_eq(iqdb_flush(db), 0);
    ck_assert(!file_exists(dir, "wal.old"));
    /* And the log is empty, as a flush promises: a header only. */
    iqdb_stats st;
    ck_assert_int_eq(iqdb_stat(db, &st), 0);
    ck_assert_uint_eq(st.wal_bytes, 40);
    ck_assert_int_eq(iqdb__io_powerloss_crash(0), 0);
    iqdb_close(db);
    iqdb__io_powerloss_end();
    ck_assert_msg(iqdb_open(dir, c, &db) == 0, "%s", iqdb_errmsg(NULL));
    for (uint64_t i = 20; i < 30; i++) /* flushed: durable */
        ck_assert_int_eq(check(db, i), 1);
    iqdb_close(db);
    iqdb_config_free(c);
}

START_TEST(test_persist_flush_without_rotation)
{
    flush_without_rotation(IQDB_FSYNC_NEVER);
    teardown();
    setup();
    flush_without_rotation(IQDB_FSYNC_PERIODIC);
}
END_TEST

START_TEST(test_persist_wal_old_stale_damaged)
{
    char dir[512], walp[600], oldp[600];
    snprintf(dir, sizeof dir, "%s", path("db"));
    snprintf(walp, sizeof walp, "%s/wal", dir);
    snprintf(oldp, sizeof oldp, "%s/wal.old", dir);
    iqdb *db;
    ck_assert_int_eq(open_db(dir, NULL, &db), 0);
    pid_t pid = fork();
    if (pid == 0) {
        for (uint64_t i = 0; i < 10; i++)
            if (put(db, i) != 0)
                _exit(1);
        size_t n;
        unsigned char *b = slurp(walp, &n);
        if (iqdb_flush(db) != 0)
            _exit(2);
        b[40 + 32 + 3] ^= 0x40;
        spit(oldp, b, n); /* the old log, back, damaged */
        free(b);
        for (uint64_t i = 10; i < 20; i++)
            if (put(db, i) != 0)
                _exit(3);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    iqdb_close(db);
    ck_assert(file_exists(dir, "wal.old"));
    iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
    iqdb_config_set_strict_recovery(c, 1);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 20);
    for (uint64_t i = 0; i < 20; i++)
        ck_assert_int_eq(check(db, i), 1);
    iqdb_close(db);
    ck_assert(!file_exists(dir, "wal.old"));
    iqdb_config_free(c);
}
END_TEST

START_TEST(test_persist_wal_old_damaged)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path("db"));
    two_logs(dir, 0);
    char old[600];
    snprintf(old, sizeof old, "%s/wal.old", dir);
    size_t n;
    unsigned char *b = slurp(old, &n);
    b[40 + 32 + 3] ^= 0x40; /* the first frame's payload */
    spit(old, b, n);
    free(b);
    iqdb *db;
    iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
    iqdb_config_set_strict_recovery(c, 1);
    ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "wal.old"));
    ck_assert(file_exists(dir, "wal.old"));
    iqdb_config_set_strict_recovery(c, 0);
    c->readonly = 1;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 5);
    iqdb_close(db);
    ck_assert(file_exists(dir, "wal.old"));
    c->readonly = 0;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    iqdb_recovery rec;
    iqdb_recovery_report(db, &rec);
    ck_assert_int_eq(rec.acknowledged_damage, 1);
    ck_assert_uint_eq(rec.frames_discarded, 3); /* 6, 7 in wal.old; 9 */
    ck_assert_uint_eq(iqdb_count(db), 5);
    ck_assert_int_eq(check(db, 9), 0);
    ck_assert(!file_exists(dir, "wal.old"));
    /* A writer dies after this open: its writes must survive. */
    pid_t pid = fork();
    if (pid == 0) {
        for (uint64_t i = 20; i < 25; i++)
            if (put(db, i) != 0)
                _exit(1);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    iqdb_close(db);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 10);
    for (uint64_t i = 20; i < 25; i++)
        ck_assert_int_eq(check(db, i), 1);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* Crashes in the middle of background compactions. The child keeps
 * about 50 live records (each put is followed by the delete of the
 * record 50 before it), so the snapshot stays small and, with a 4 KiB
 * threshold, a compaction starts every few dozen writes and runs while
 * the child goes on writing; SIGKILL lands anywhere in them. Every
 * acknowledged put not followed by an acknowledged delete must be there,
 * exact; every acknowledged delete must have stuck. */
#define KEEP 50
/* Delete record i through db (present). */
static void del_rec(iqdb *db, uint64_t i)
{
    iqdb_id id;
    char key[32];
    float v[DIM];
    iqdb_meta *m;
    make(i, v, &m, &id, key);
    iqdb_meta_free(m);
    int present = 0;
    ck_assert_int_eq(iqdb_delete(db, id, &present), 0);
    ck_assert_int_eq(present, 1);
}

static void compacting_crash_cycles(int cycles)
{
    const char *env = getenv("IQDB_CRASH_CYCLES");
    if (env != NULL && atoi(env) > 0)
        cycles = atoi(env);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path("db"));
    iqdb_config *cf = conf(NULL, IQDB_FSYNC_ALWAYS);
    iqdb_config_set_compact_bytes(cf, 4096);
    /* state[i]: 0 never acknowledged, 1 put acknowledged, 2 deleted. */
    size_t cap = 1 << 22;
    unsigned char *state = calloc(cap, 1);
    uint64_t next = KEEP, seed = 777, compactions = 0, mid = 0;
    /* Records 0..KEEP-1 first, so every put has a delete to pair. */
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, cf, &db), 0);
    for (uint64_t i = 0; i < KEEP; i++) {
        ck_assert_int_eq(put(db, i), 0);
        state[i] = 1;
    }
    ck_assert_int_eq(iqdb_close(db), 0);
    for (int c = 0; c < cycles; c++) {
        int fds[2];
        ck_assert_int_eq(pipe(fds), 0);
        uint64_t start = next;
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            if (iqdb_open(dir, cf, &db) != 0)
                _exit(2);
            uint64_t ready = UINT64_MAX;
            if (write(fds[1], &ready, 8) != 8)
                _exit(4);
            for (uint64_t i = start;; i++) {
                uint64_t msg = i << 1;
                if (put(db, i) != 0 || write(fds[1], &msg, 8) != 8)
                    _exit(3);
                iqdb_id id;
                char key[32];
                float v[DIM];
                iqdb_meta *m;
                make(i - KEEP, v, &m, &id, key);
                iqdb_meta_free(m);
                msg = (i - KEEP) << 1 | 1;
                if (iqdb_delete(db, id, NULL) != 0 || write(fds[1], &msg, 8) != 8)
                    _exit(4);
            }
        }
        close(fds[1]);
        /* As in crash_cycles: three kills in four once the child has
         * opened, the fourth anywhere. */
        uint64_t msg;
        if (tu_next(&seed) % 4 != 0 && read(fds[0], &msg, 8) == 8)
            ck_assert(msg == UINT64_MAX);
        struct timespec ts = {0, (long)(tu_next(&seed) % 30000000)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        ck_assert_msg(WIFSIGNALED(st), "cycle %d: child exited %d", c,
                      WEXITSTATUS(st));
        while (read(fds[0], &msg, 8) == 8) {
            if (msg == UINT64_MAX) /* the child's "opened" */
                continue;
            uint64_t i = msg >> 1;
            ck_assert(i < cap);
            state[i] = (msg & 1) ? 2 : 1;
            if (!(msg & 1) && i + 1 > next)
                next = i + 1;
        }
        close(fds[0]);
        mid += file_exists(dir, "wal.old");
        ck_assert(next + 2 < cap);
        if (iqdb_open(dir, cf, &db) != 0)
            ck_abort_msg("cycle %d: %s", c, iqdb_errmsg(NULL));
        iqdb_recovery rec;
        iqdb_recovery_report(db, &rec);
        /* The in flight operation: the delete of next - 1 - KEEP (its put
         * was acknowledged, the delete maybe applied), or the put of
         * next. */
        uint64_t maybe_del = next - 1 - KEEP;
        uint64_t live = 0;
        for (uint64_t i = start >= 2 * KEEP ? start - 2 * KEEP : 0; i < next;
             i++) {
            int present = check(db, i);
            if (state[i] == 1 && i != maybe_del)
                ck_assert_msg(present, "cycle %d: acknowledged %llu lost", c,
                              (unsigned long long)i);
            if (state[i] == 2)
                ck_assert_msg(!present, "cycle %d: deleted %llu is back", c,
                              (unsigned long long)i);
            if (state[i] == 1 && i == maybe_del) {
                /* Finish the interrupted delete, so the next child's
                 * deletes leave only KEEP records. */
                if (present) {
                    del_rec(db, i);
                    present = 0;
                }
                state[i] = 2;
            }
            live += present;
        }
        /* The unacknowledged put may have made it; nothing beyond it. Its
         * child never deleted the record KEEP before it: do that here. */
        if (check(db, next)) {
            state[next++] = 1;
            del_rec(db, next - 1 - KEEP);
            state[next - 1 - KEEP] = 2;
        }
        ck_assert_int_eq(check(db, next), 0);
        ck_assert_uint_eq(iqdb_count(db), live);
        iqdb_stats sts;
        ck_assert_int_eq(iqdb_stat(db, &sts), 0);
        compactions += rec.frames_replayed < (next - start) * 2;
        iqdb_close(db);
    }
    /* The test means something only if compactions happened in the
     * children (fewer frames to replay than the cycle wrote). */
    ck_assert_msg(compactions > (uint64_t)cycles / 4,
                  "compactions in only %llu of %d cycles",
                  (unsigned long long)compactions, cycles);
    if (getenv("IQDB_CRASH_VERBOSE"))
        fprintf(stderr, "%d cycles, %llu with compactions, %llu killed "
                "mid-compaction, %llu records\n", cycles,
                (unsigned long long)compactions, (unsigned long long)mid,
                (unsigned long long)next);
    free(state);
    iqdb_config_free(cf);
}

START_TEST(test_persist_crash_compacting)
{
    compacting_crash_cycles(150);
}
END_TEST

/* The workload of power_loss_compacting: puts, and a delete of the record
 * ten before after every third. st[i]: 1 put acknowledged, 2 delete
 * acknowledged; *inflight: a delete that did not return (maybe applied). */
static void pl_workload(iqdb *db, unsigned char *st, uint64_t n,
                        uint64_t *inflight)
{
    *inflight = UINT64_MAX;
    for (uint64_t i = 0; i < n; i++) {
        if (put(db, i) != 0) {
            ck_assert_msg(iqdb__io_powerloss_dead(), "put %llu failed "
                          "before the crash: %s", (unsigned long long)i,
                          iqdb_errmsg(db));
            return;
        }
        st[i] = 1;
        if (i >= 10 && i % 3 == 0) {
            iqdb_id id;
            char key[32];
            float v[DIM];
            iqdb_meta *m;
            make(i - 10, v, &m, &id, key);
            iqdb_meta_free(m);
            if (iqdb_delete(db, id, NULL) != 0) {
                ck_assert(iqdb__io_powerloss_dead());
                *inflight = i - 10;
                return;
            }
            st[i - 10] = 2;
        }
    }
}

/* Power loss at every few operations of a run in which automatic
 * compactions rotate the log and write snapshots on their own thread:
 * under ALWAYS nothing acknowledged is lost and no acknowledged delete is
 * undone, whichever step of which thread the cut hits (unsynced writes
 * dropped or partly kept, unsynced directory operations undone). */
START_TEST(test_persist_power_loss_compacting)
{
    iqdb_config *c = conf(NULL, IQDB_FSYNC_ALWAYS);
    iqdb_config_set_compact_bytes(c, 2048);
    const uint64_t n = 150;
    unsigned char st[150];
    uint64_t inflight, seed = 99;
    /* A run without a crash counts the operations. */
    iqdb *db;
    ck_assert_int_eq(iqdb_open(path("db"), c, &db), 0);
    iqdb__io_reset();
    memset(st, 0, sizeof st);
    pl_workload(db, st, n, &inflight);
    long ops = iqdb__io_count(IQDB_IO_OP_WRITE) + iqdb__io_count(IQDB_IO_OP_FSYNC) +
               iqdb__io_count(IQDB_IO_OP_RENAME);
    iqdb_close(db);
    int mid = 0, rounds = 0;
    for (long at = 0; at < ops; at += ops / 120 + 1, rounds++) {
        teardown();
        setup();
        ck_assert_int_eq(iqdb_open(path("db"), c, &db), 0);
        iqdb__io_powerloss_begin();
        iqdb__io_powerloss_crash_at(at, rounds % 3 ? tu_next(&seed) : 0);
        memset(st, 0, sizeof st);
        pl_workload(db, st, n, &inflight);
        /* Cancel the countdown first: the compaction thread may still
         * reach it. */
        iqdb__io_powerloss_crash_at(-1, 0);
        if (!iqdb__io_powerloss_dead())
            ck_assert_int_eq(iqdb__io_powerloss_crash(tu_next(&seed)), 0);
        iqdb_close(db); /* waits for the compaction thread, which fails */
        iqdb__io_powerloss_end();
        mid += file_exists(path("db"), "wal.old");
        int r = iqdb_open(path("db"), c, &db);
        ck_assert_msg(r == 0, "crash at %ld: %s", at, iqdb_errmsg(NULL));
        for (uint64_t i = 0; i < n; i++) {
            int present = check(db, i);
            if (st[i] == 1 && i != inflight)
                ck_assert_msg(present, "crash at %ld: acknowledged %llu "
                              "lost", at, (unsigned long long)i);
            if (st[i] == 2)
                ck_assert_msg(!present, "crash at %ld: deleted %llu is "
                              "back", at, (unsigned long long)i);
        }
        iqdb_close(db);
    }
    /* Some cuts fell inside compactions (after a rotation was durable,
     * before the snapshot replaced the old one). */
    ck_assert_msg(mid > 0, "no crash inside a compaction in %d rounds",
                  rounds);
    if (getenv("IQDB_CRASH_VERBOSE"))
        fprintf(stderr, "%d crash points over %ld operations, %d inside "
                "compactions\n", rounds, ops, mid);
    iqdb_config_free(c);
}
END_TEST

/* ---- vectors left in log segments (format 2) ----------------------------- */

#define SD 64 /* 256 bytes a vector: most of a frame, as in real use */

static void svec(uint64_t i, uint64_t gen, float *v)
{
    for (int j = 0; j < SD; j++)
        v[j] = (float)((i * 131 + gen * 17 + (uint64_t)j * 7) % 1009) * 0.25f;
}

/* Record i of generation gen: a byte-string id for odd i, metadata
 * {"g": gen}. */
static iqdb_id sid(uint64_t i, char *key)
{
    if (i % 2 == 0)
        return iqdb_id_u64(i);
    int n = snprintf(key, 32, "seg-key-%llu", (unsigned long long)i);
    return iqdb_id_bytes(key, (size_t)n);
}

/* Records [from, from + n) of generation gen in one batch. */
static int sput_batch(iqdb *db, uint64_t from, size_t n, uint64_t gen)
{
    static float vs[64 * SD];
    iqdb_record recs[64];
    char keys[64][32];
    iqdb_meta *ms[64];
    ck_assert_uint_le(n, 64);
    for (size_t k = 0; k < n; k++) {
        svec(from + k, gen, vs + k * SD);
        ms[k] = iqdb_meta_new();
        iqdb_meta_set(ms[k], "g", iqdb_value_int((int64_t)gen));
        recs[k].id = sid(from + k, keys[k]);
        recs[k].vector = vs + k * SD;
        recs[k].meta = ms[k];
    }
    int r = iqdb_upsert_batch(db, recs, n, SD);
    for (size_t k = 0; k < n; k++)
        iqdb_meta_free(ms[k]);
    return r;
}

static int sdel(iqdb *db, uint64_t i)
{
    char key[32];
    return iqdb_delete(db, sid(i, key), NULL);
}

/* 1: record i present with generation gen's vector and metadata; 0:
 * absent; fails the test if present otherwise. */
static int scheck(iqdb *db, uint64_t i, uint64_t gen)
{
    char key[32];
    float v[SD], got[SD];
    iqdb_meta *m = NULL;
    int r = iqdb_get(db, sid(i, key), got, SD, &m);
    if (r == IQDB_ENOTFOUND)
        return 0;
    ck_assert_int_eq(r, 0);
    svec(i, gen, v);
    ck_assert_msg(memcmp(v, got, sizeof v) == 0, "record %llu: wrong vector",
                  (unsigned long long)i);
    iqdb_value g;
    ck_assert_int_eq(iqdb_meta_get(m, "g", &g), 0);
    ck_assert_int_eq(g.v.i, (int64_t)gen);
    iqdb_meta_free(m);
    return 1;
}

static iqdb_config *sconf(uint64_t compact)
{
    iqdb_config *c = iqdb_config_new(SD, IQDB_METRIC_EUCLIDEAN);
    iqdb_config_set_compact_bytes(c, compact);
    return c;
}

/* Wait until no compaction is between its rotation and its end (no
 * wal.old). */
static void wait_compacted(const char *dir)
{
    for (int t = 0; t < 4000 && file_exists(dir, "wal.old"); t++)
        usleep(2500);
    ck_assert(!file_exists(dir, "wal.old"));
}

static int snap_version(const char *dir)
{
    char p[600];
    snprintf(p, sizeof p, "%s/snapshot", dir);
    size_t n;
    unsigned char *b = slurp(p, &n);
    ck_assert_uint_ge(n, 12);
    int v = b[8];
    free(b);
    return v;
}

/* The segment files in dir (kept logs "seg.*" and kept snapshots
 * "vec.*"): how many, their total size, and the first names (up to max,
 * 64 bytes each). */
static int list_segments(const char *dir, char (*names)[64], int max,
                         uint64_t *bytes)
{
    DIR *dh = opendir(dir);
    ck_assert_ptr_nonnull(dh);
    struct dirent *de;
    int n = 0;
    if (bytes != NULL)
        *bytes = 0;
    while ((de = readdir(dh)) != NULL) {
        if (strncmp(de->d_name, "seg.", 4) != 0 &&
            strncmp(de->d_name, "vec.", 4) != 0)
            continue;
        if (n < max) {
            ck_assert_uint_lt(strlen(de->d_name), 64);
            memcpy(names[n], de->d_name, strlen(de->d_name) + 1);
        }
        n++;
        if (bytes != NULL) {
            char p[1024];
            struct stat st;
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            ck_assert_int_eq(stat(p, &st), 0);
            *bytes += (uint64_t)st.st_size;
        }
    }
    closedir(dh);
    return n;
}

/* Generation of record i after round_writes(.., round): rounds rewrite
 * every fifth record and delete every ninth. */
static uint64_t sgen(uint64_t i, int rounds)
{
    return i % 5 == 0 ? (uint64_t)rounds : 0;
}

/* Write records [from, to) in batches of 16, then rewrite every fifth of
 * them `rounds` times and delete every ninth; wait for the automatic
 * compactions. */
static void round_writes(iqdb *db, const char *dir, uint64_t from,
                         uint64_t to, int rounds)
{
    for (uint64_t i = from; i < to; i += 16)
        ck_assert_int_eq(sput_batch(db, i, to - i < 16 ? to - i : 16, 0), 0);
    for (int g = 1; g <= rounds; g++)
        for (uint64_t i = from; i < to; i++)
            if (i % 5 == 0)
                ck_assert_int_eq(sput_batch(db, i, 1, (uint64_t)g), 0);
    for (uint64_t i = from; i < to; i++)
        if (i % 9 == 4)
            ck_assert_int_eq(sdel(db, i), 0);
    wait_compacted(dir);
}

typedef struct seg_session {
    uint64_t from, to;
    int rounds;
} seg_session;

/* A session that dies without closing (no final compaction): what is on
 * disk is what automatic compactions and the log made. */
static int seg_session_child(void *arg)
{
    seg_session *s = arg;
    iqdb_config *c = sconf(32768);
    iqdb *db;
    if (iqdb_open(path("db"), c, &db) != 0)
        return 1;
    round_writes(db, path("db"), s->from, s->to, s->rounds);
    return 0;
}

static void seg_verify(iqdb *db, uint64_t to, int rounds)
{
    uint64_t live = 0;
    for (uint64_t i = 0; i < to; i++) {
        int want = (i % 9) != 4;
        ck_assert_int_eq(scheck(db, i, sgen(i, rounds)), want);
        live += (uint64_t)want;
    }
    ck_assert_uint_eq(iqdb_count(db), live);
}

/* Automatic compactions leave the vectors in the rotated logs (format 2
 * snapshots, seg.* files), across sessions that die without closing:
 * every record comes back exact, read-only and read-write, a later
 * session's compaction keeps the earlier session's segments rather than
 * rewriting their vectors, and a close writes a self-contained format 1
 * snapshot and removes the segments. */
START_TEST(test_persist_segments_round_trip)
{
    const char *dir = path("db");
    seg_session s1 = {0, 400, 2};
    in_child(seg_session_child, &s1);
    ck_assert_int_eq(snap_version(dir), 2);
    char first[8][64];
    int n1 = list_segments(dir, first, 8, NULL);
    ck_assert_int_ge(n1, 1);
    ck_assert_int_le(n1, 8);
    /* The snapshot's vector section is a hole: no vector is in it. */
    char p[600];
    snprintf(p, sizeof p, "%s/snapshot", dir);
    size_t n;
    unsigned char *b = slurp(p, &n);
    const unsigned char *ent = sec_entry(b, IQDB_SEC_VECTORS);
    uint64_t off = get_le64(ent + 8), len = get_le64(ent + 16);
    ck_assert_uint_ge(len, 300 * SD * 4);
    ck_assert_uint_le(off + len, n);
    unsigned char any = 0;
    for (uint64_t k = 0; k < len; k++)
        any |= b[off + k];
    ck_assert_uint_eq(any, 0);
    free(b);
    iqdb_config *c = sconf(32768);
    iqdb_config_set_readonly(c, 1);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    seg_verify(db, 400, 2);
    iqdb_close(db);
    iqdb_config_free(c);
    /* A second session adds to it and dies too. */
    seg_session s2 = {400, 800, 2};
    in_child(seg_session_child, &s2);
    ck_assert_int_eq(snap_version(dir), 2);
    int kept = 0;
    for (int i = 0; i < n1; i++)
        kept += file_exists(dir, first[i]);
    ck_assert_msg(kept > 0, "the first session's segments were all dropped");
    c = sconf(32768);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    seg_verify(db, 800, 2);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_int_eq(snap_version(dir), 1);
    ck_assert_int_eq(list_segments(dir, NULL, 0, NULL), 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    seg_verify(db, 800, 2);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* The bytes of segment i (0-based) the snapshot in dir needs, and its
 * name. */
static uint64_t seg_needs(const char *dir, uint32_t i, char *name)
{
    char p[600];
    snprintf(p, sizeof p, "%s/snapshot", dir);
    size_t n;
    unsigned char *b = slurp(p, &n);
    const unsigned char *ent = sec_entry(b, IQDB_SEC_SEGMENTS);
    const unsigned char *s = b + get_le64(ent + 8);
    ck_assert_uint_lt(i, (uint32_t)s[0] | (uint32_t)s[1] << 8);
    uint64_t base = get_le64(s + 8 + i * 24), salt = get_le64(s + 16 + i * 24);
    uint64_t len = get_le64(s + 24 + i * 24);
    iqdb__segment_name(name, 64, base, salt);
    free(b);
    return len;
}

static int small_seg_child(void *arg)
{
    (void)arg;
    iqdb_config *c = sconf(2048);
    iqdb *db;
    if (iqdb_open(path("db"), c, &db) != 0)
        return 1;
    /* The fourth batch passes the threshold and the first snapshot's
     * size: records 0-15 end in the segment, 16-23 in the log. */
    for (uint64_t i = 0; i < 24; i += 4)
        ck_assert_int_eq(sput_batch(db, i, 4, 0), 0);
    wait_compacted(path("db"));
    return 0;
}

/* A segment the snapshot needs is damaged, cut short, replaced or gone:
 * the open fails with IQDB_ECORRUPT naming it, changes nothing, and
 * iqdb_check reports it; with the file restored the database opens. */
START_TEST(test_persist_segments_damage)
{
    const char *dir = path("db");
    in_child(small_seg_child, NULL);
    ck_assert_int_eq(snap_version(dir), 2);
    char name[64], p[600];
    uint64_t need = seg_needs(dir, 0, name);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    size_t n;
    unsigned char *orig = slurp(p, &n), *bad = malloc(n);
    ck_assert_uint_le(need, n);
    ck_assert_uint_gt(need, IQDB_WAL_HDR_SIZE);
    iqdb_config *c = sconf(2048);
    iqdb *db;
    damage_sweep(dir, p, c, (size_t)need, 0x21, (size_t)need, 1, name, 1);
    memcpy(bad, orig, n);
    bad[need - 1] ^= 0x21;
    spit(p, bad, n);
    finding_log fl;
    memset(&fl, 0, sizeof fl);
    ck_assert_int_eq(iqdb_check(dir, NULL, log_finding, &fl), IQDB_ECORRUPT);
    ck_assert_str_eq(fl.file, name);
    /* Another log under its name (a different salt). */
    memcpy(bad, orig, n);
    bad[16] ^= 1;
    spit(p, bad, n);
    ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_ECORRUPT);
    ck_assert_int_eq(unlink(p), 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "missing"));
    finding_log f;
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(iqdb_check(dir, NULL, log_finding, &f), IQDB_ECORRUPT);
    ck_assert_int_eq(f.damage, 1);
    ck_assert_str_eq(f.file, name);
    spit(p, orig, n);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    for (uint64_t i = 0; i < 24; i++)
        ck_assert_int_eq(scheck(db, i, 0), 1);
    iqdb_close(db);
    iqdb_config_free(c);
    free(orig);
    free(bad);
}
END_TEST

/* Every byte flip and every truncation of a format 2 snapshot (segment
 * and reference sections, and the hole where its vectors would be) is
 * rejected. */
START_TEST(test_persist_segments_snapshot_flips)
{
    const char *dir = path("db");
    in_child(small_seg_child, NULL);
    ck_assert_int_eq(snap_version(dir), 2);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    size_t n;
    free(slurp(snap, &n));
    iqdb_config *c = sconf(2048);
    damage_sweep(dir, snap, c, n, 0x5a, n, 1, NULL, 0);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 24);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* References a crafted file makes with good checksums are still checked:
 * to an unlisted segment, outside the bytes the segment holds, for a
 * dead slot, or in a chunk the file stores. */
START_TEST(test_persist_segments_bad_refs)
{
    const char *dir = path("db");
    in_child(small_seg_child, NULL);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    size_t n;
    unsigned char *orig = slurp(snap, &n), *b = malloc(n);
    iqdb_config *c = sconf(2048);
    iqdb *db;
    const uint64_t cases[][2] = {
        {0, (uint64_t)7 << IQDB_REF_SHIFT | 4096}, /* unlisted segment */
        {0, (uint64_t)1 << IQDB_REF_SHIFT | 8},    /* inside its header */
        {0, (uint64_t)1 << IQDB_REF_SHIFT | IQDB_REF_OFF_MASK}, /* past it */
        {0, 0}, /* no reference for one live slot: the chunk is stored,
                   and the others' references are then wrong */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(b, orig, n);
        unsigned char *ent = sec_entry(b, IQDB_SEC_REFS);
        unsigned char *refs = b + get_le64(ent + 8);
        ck_assert_uint_ne(get_le64(refs + cases[k][0] * 8), 0);
        put_le64(refs + cases[k][0] * 8, cases[k][1]);
        fix_section(b, ent);
        spit(snap, b, n);
        int r = iqdb_open(dir, c, &db);
        ck_assert_msg(r == IQDB_ECORRUPT, "case %zu: %s", k, iqdb_errname(r));
    }
    /* The segment list: empty, a segment starting past the snapshot's
     * last frame, one too short to hold a frame. */
    for (int k = 0; k < 3; k++) {
        memcpy(b, orig, n);
        unsigned char *ent = sec_entry(b, IQDB_SEC_SEGMENTS);
        unsigned char *sg = b + get_le64(ent + 8);
        if (k == 0)
            put_le32(sg, 0);
        else if (k == 1)
            put_le64(sg + 8, get_le64(b + 64) + 1);
        else
            put_le64(sg + 24, IQDB_WAL_HDR_SIZE);
        fix_section(b, ent);
        spit(snap, b, n);
        int r = iqdb_open(dir, c, &db);
        ck_assert_msg(r == IQDB_ECORRUPT, "segment case %d: %s", k,
                      iqdb_errname(r));
    }
    spit(snap, orig, n);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    iqdb_close(db);
    iqdb_config_free(c);
    free(orig);
    free(b);
}
END_TEST

/* Segment files the snapshot does not name (a crash between a
 * compaction's link and its snapshot) are removed by a writable open,
 * left alone by a read-only one; the named ones stay. */
START_TEST(test_persist_segments_orphans)
{
    const char *dir = path("db");
    in_child(small_seg_child, NULL);
    char name[64], p[600], q[600];
    seg_needs(dir, 0, name);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(q, sizeof q, "%s/seg.00000000000000ff.0000000000000001", dir);
    size_t n;
    unsigned char *b = slurp(p, &n);
    spit(q, b, n);
    free(b);
    iqdb_config *c = sconf(2048);
    iqdb_config_set_readonly(c, 1);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    iqdb_close(db);
    ck_assert(file_exists(dir, "seg.00000000000000ff.0000000000000001"));
    iqdb_config_set_readonly(c, 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert(!file_exists(dir, "seg.00000000000000ff.0000000000000001"));
    ck_assert(file_exists(dir, name));
    for (uint64_t i = 0; i < 24; i++)
        ck_assert_int_eq(scheck(db, i, 0), 1);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* Each batch rewrites the same 49 records and adds one for good, so
 * every segment keeps a few live vectors among many dead ones: automatic
 * compactions then write a snapshot whole and drop the segments, so they
 * never hold much more than twice the live vectors (plus the threshold
 * and the log rotated out last). */
START_TEST(test_persist_segments_bounded)
{
    const char *dir = path("db");
    const uint64_t compact = 16384;
    iqdb_config *c = sconf(compact);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    int dropped = 0, had = 0, refs = 0;
    for (uint64_t g = 0; g < 80; g++) {
        ck_assert_int_eq(sput_batch(db, 0, 49, g), 0);
        ck_assert_int_eq(sput_batch(db, 1000 + g, 1, 0), 0);
        wait_compacted(dir);
        uint64_t bytes;
        int segs = list_segments(dir, NULL, 0, &bytes);
        dropped += had && segs == 0;
        had = segs > 0;
        refs += segs > 0;
        iqdb_stats st;
        ck_assert_int_eq(iqdb_stat(db, &st), 0);
        /* Twice the live vectors, the threshold, and a rotated log (at
         * most the snapshot's size or the threshold, plus a batch). */
        uint64_t live = (49 + g + 1) * SD * 4;
        uint64_t cap = 2 * live + compact +
                       (st.snapshot_bytes > compact ? st.snapshot_bytes
                                                    : compact) +
                       50 * (SD * 4 + 64);
        ck_assert_msg(bytes <= cap, "round %llu: %llu bytes of segments, "
                      "bound %llu", (unsigned long long)g,
                      (unsigned long long)bytes, (unsigned long long)cap);
    }
    ck_assert_msg(dropped > 0, "no compaction dropped the segments");
    ck_assert_msg(refs > 0, "no compaction kept a segment");
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t i = 0; i < 49; i++)
            ck_assert_int_eq(scheck(db, i, 79), 1);
        for (uint64_t g = 0; g < 80; g++)
            ck_assert_int_eq(scheck(db, 1000 + g, 0), 1);
        if (pass == 0) {
            ck_assert_int_eq(iqdb_close(db), 0);
            ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
        }
    }
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* Power loss at every few operations of a run of batches whose
 * automatic compactions keep segments (link, snapshot, removals on the
 * compaction's thread): under ALWAYS every acknowledged batch comes back
 * exact, and no acknowledged delete is undone. */
static void spl_workload(iqdb *db, unsigned char *st, uint64_t n)
{
    for (uint64_t i = 0; i < n; i += 8) {
        if (sput_batch(db, i, 8, 0) != 0) {
            ck_assert(iqdb__io_powerloss_dead());
            return;
        }
        memset(st + i, 1, 8);
        if (i >= 24 && sdel(db, i - 21) == 0)
            st[i - 21] = 2;
        else if (i >= 24) {
            ck_assert(iqdb__io_powerloss_dead());
            st[i - 21] = 3; /* unknown */
            return;
        }
    }
}

START_TEST(test_persist_segments_power_loss)
{
    iqdb_config *c = sconf(8192);
    const uint64_t n = 160;
    unsigned char st[160];
    uint64_t seed = 77;
    iqdb *db;
    ck_assert_int_eq(iqdb_open(path("db"), c, &db), 0);
    iqdb__io_reset();
    memset(st, 0, sizeof st);
    spl_workload(db, st, n);
    long ops = iqdb__io_count(IQDB_IO_OP_WRITE) +
               iqdb__io_count(IQDB_IO_OP_FSYNC) +
               iqdb__io_count(IQDB_IO_OP_RENAME);
    iqdb_close(db);
    int rounds = 0, v2 = 0, segs = 0;
    for (long at = 0; at < ops; at += ops / 100 + 1, rounds++) {
        teardown();
        setup();
        ck_assert_int_eq(iqdb_open(path("db"), c, &db), 0);
        iqdb__io_powerloss_begin();
        iqdb__io_powerloss_crash_at(at, rounds % 3 ? tu_next(&seed) : 0);
        memset(st, 0, sizeof st);
        spl_workload(db, st, n);
        iqdb__io_powerloss_crash_at(-1, 0);
        if (!iqdb__io_powerloss_dead())
            ck_assert_int_eq(iqdb__io_powerloss_crash(tu_next(&seed)), 0);
        iqdb_close(db);
        iqdb__io_powerloss_end();
        v2 += snap_version(path("db")) == 2;
        segs += list_segments(path("db"), NULL, 0, NULL) > 0;
        int r = iqdb_open(path("db"), c, &db);
        ck_assert_msg(r == 0, "crash at %ld: %s", at, iqdb_errmsg(NULL));
        for (uint64_t i = 0; i < n; i++) {
            int present = scheck(db, i, 0);
            if (st[i] == 1)
                ck_assert_msg(present, "crash at %ld: acknowledged %llu "
                              "lost", at, (unsigned long long)i);
            if (st[i] == 2)
                ck_assert_msg(!present, "crash at %ld: deleted %llu is "
                              "back", at, (unsigned long long)i);
        }
        iqdb_close(db);
    }
    /* Cuts after a compaction that left vectors in a segment. */
    ck_assert_msg(v2 > 0 && segs > 0, "format 2 in %d and segments in %d "
                  "of %d rounds", v2, segs, rounds);
    if (getenv("IQDB_CRASH_VERBOSE"))
        fprintf(stderr, "%d crash points over %ld operations, format 2 "
                "after %d\n", rounds, ops, v2);
    iqdb_config_free(c);
}
END_TEST

static int old_kept_child(void *arg);

/* A kept snapshot ("vec.<id>") that a format 2 snapshot reads vectors
 * from is checked whole: every byte flip and every truncation of it fails
 * the open with IQDB_ECORRUPT naming it, and changes nothing. */
START_TEST(test_persist_segments_vec_damage)
{
    const char *dir = path("db");
    iqdb_config *c = sconf(4096);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_int_eq(sput_batch(db, 0, 20, 0), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    char p[600];
    snprintf(p, sizeof p, "%s/snapshot", dir);
    size_t n;
    unsigned char *b = slurp(p, &n);
    char vec[64];
    iqdb__segment_name(vec, sizeof vec, 0, get_le64(b + 72));
    free(b);
    uint64_t next = 20;
    in_child(old_kept_child, &next);
    ck_assert_int_eq(snap_version(dir), 2);
    snprintf(p, sizeof p, "%s/%s", dir, vec);
    unsigned char *orig = slurp(p, &n);
    damage_sweep(dir, p, c, n, 0x44, n, 7, vec, 0);
    spit(p, orig, n - 1); /* cut short */
    finding_log f;
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(iqdb_check(dir, NULL, log_finding, &f), IQDB_ECORRUPT);
    ck_assert_str_eq(f.file, vec);
    spit(p, orig, n);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    for (uint64_t i = 0; i < iqdb_count(db); i++)
        ck_assert_int_eq(scheck(db, i, 0), 1);
    iqdb_close(db);
    iqdb_config_free(c);
    free(orig);
}
END_TEST

/* A close (or flush) writes every vector and removes the segments also
 * when nothing was written since the automatic compaction that made
 * them. */
START_TEST(test_persist_segments_close_self_contained)
{
    const char *dir = path("db");
    iqdb_config *c = sconf(4096);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    uint64_t next = 0;
    while (snap_version(dir) != 2) {
        ck_assert_uint_lt(next, 400);
        ck_assert_int_eq(sput_batch(db, next, 8, 0), 0);
        next += 8;
        wait_compacted(dir);
    }
    ck_assert_int_gt(list_segments(dir, NULL, 0, NULL), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_int_eq(snap_version(dir), 1);
    ck_assert_int_eq(list_segments(dir, NULL, 0, NULL), 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    for (uint64_t i = 0; i < next; i++)
        ck_assert_int_eq(scheck(db, i, 0), 1);
    iqdb_close(db);
    iqdb_config_free(c);
}
END_TEST

/* After a close, the format 1 snapshot is a home for the vectors it
 * holds: the next session's automatic compaction keeps it as a segment
 * ("vec.<id>") instead of writing them again, even where new records
 * share an arena chunk with them; a close then writes every vector and
 * removes it. */
static int old_kept_child(void *arg)
{
    uint64_t *next = arg;
    iqdb_config *c = sconf(4096);
    iqdb *db;
    if (iqdb_open(path("db"), c, &db) != 0)
        return 1;
    while (snap_version(path("db")) != 2) {
        ck_assert_uint_lt(*next, 400);
        ck_assert_int_eq(sput_batch(db, *next, 8, 0), 0);
        *next += 8;
        wait_compacted(path("db"));
    }
    return 0; /* killed, not closed: the format 2 snapshot stays */
}

START_TEST(test_persist_segments_old_snapshot_kept)
{
    const char *dir = path("db");
    iqdb_config *c = sconf(4096);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_int_eq(sput_batch(db, 0, 20, 0), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    char p[600];
    snprintf(p, sizeof p, "%s/snapshot", dir);
    size_t n;
    unsigned char *b = slurp(p, &n);
    uint64_t id = get_le64(b + 72);
    free(b);
    ck_assert_uint_ne(id, 0);
    char vec[64];
    iqdb__segment_name(vec, sizeof vec, 0, id);
    /* A second session writes batches of 8 until an automatic
     * compaction leaves a format 2 snapshot, and dies; how many it wrote
     * is read back from the database below. */
    uint64_t next = 20;
    in_child(old_kept_child, &next);
    ck_assert_int_eq(snap_version(dir), 2);
    ck_assert(file_exists(dir, vec));
    /* No vector in the new snapshot: its vector section is a hole. */
    b = slurp(p, &n);
    const unsigned char *ent = sec_entry(b, IQDB_SEC_VECTORS);
    uint64_t off = get_le64(ent + 8), len = get_le64(ent + 16);
    unsigned char any = 0;
    for (uint64_t k = 0; k < len; k++)
        any |= b[off + k];
    ck_assert_uint_eq(any, 0);
    free(b);
    /* Read-only, from the kept snapshot, the segments and the log. */
    iqdb_config *ro = sconf(4096);
    iqdb_config_set_readonly(ro, 1);
    ck_assert_int_eq(iqdb_open(dir, ro, &db), 0);
    uint64_t count = iqdb_count(db);
    ck_assert_uint_ge(count, 28);
    ck_assert_uint_eq(count % 4, 0);
    for (uint64_t i = 0; i < count; i++)
        ck_assert_int_eq(scheck(db, i, 0), 1);
    iqdb_close(db);
    /* A close writes every vector and removes the kept file. */
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert(!file_exists(dir, vec));
    ck_assert_int_eq(snap_version(dir), 1);
    ck_assert_int_eq(list_segments(dir, NULL, 0, NULL), 0);
    ck_assert_int_eq(iqdb_open(dir, ro, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), count);
    for (uint64_t i = 0; i < count; i++)
        ck_assert_int_eq(scheck(db, i, 0), 1);
    iqdb_close(db);
    iqdb_config_free(ro);
    iqdb_config_free(c);
}
END_TEST

/* Batches of 8 records from `from` until `to` or the first refused
 * one, each followed by a short wait for a compaction it started (which
 * may fail and leave wal.old): the end of the acknowledged ones. */
static uint64_t batches_until_refused(iqdb *db, const char *dir,
                                      uint64_t from, uint64_t to)
{
    uint64_t acked = from;
    for (uint64_t i = from; i < to; i += 8) {
        if (sput_batch(db, i, 8, 0) != 0)
            break;
        acked = i + 8;
        for (int t = 0; t < 200 && file_exists(dir, "wal.old"); t++)
            usleep(2500);
    }
    return acked;
}

/* A file system that refuses hard links (EPERM from link, as on FAT):
 * the compaction writes every vector instead, and the handle keeps
 * working and stops trying. Any other rename-class failure stops the
 * handle as before. */
START_TEST(test_persist_segments_no_links)
{
    int fell_back = 0;
    for (long k = 0; k < 8; k++) {
        teardown();
        setup();
        const char *dir = path("db");
        iqdb_config *c = sconf(4096);
        iqdb *db;
        ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
        iqdb__io_fail_nth(IQDB_IO_OP_RENAME, k, EPERM);
        uint64_t acked = batches_until_refused(db, dir, 0, 160);
        if (acked == 160) {
            /* Only a refused link leaves the handle writing: then no
             * compaction made a segment. */
            ck_assert_msg(list_segments(dir, NULL, 0, NULL) == 0,
                          "k %ld: segments after a refused link", k);
            ck_assert_int_eq(snap_version(dir), 1);
            fell_back++;
        }
        iqdb_close(db);
        iqdb__io_reset();
        ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
        for (uint64_t i = 0; i < acked; i++)
            ck_assert_int_eq(scheck(db, i, 0), 1);
        iqdb_close(db);
        iqdb_config_free(c);
    }
    /* The links of the first compactions; the renames around them
     * stopped their handles. */
    ck_assert_int_ge(fell_back, 1);
    ck_assert_int_le(fell_back, 3);
}
END_TEST

/* The same on a reopened database, whose compactions link the replaced
 * snapshot after wal.old: whichever link is refused, nothing is left
 * behind a close, and every acknowledged batch is there. */
START_TEST(test_persist_segments_no_links_reopened)
{
    int fell_back = 0;
    for (long k = 0; k < 8; k++) {
        teardown();
        setup();
        const char *dir = path("db");
        iqdb_config *c = sconf(4096);
        iqdb *db;
        ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
        ck_assert_int_eq(sput_batch(db, 0, 24, 0), 0);
        ck_assert_int_eq(iqdb_close(db), 0);
        ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
        iqdb__io_fail_nth(IQDB_IO_OP_RENAME, k, EPERM);
        uint64_t acked = batches_until_refused(db, dir, 24, 160);
        int r = iqdb_close(db);
        if (acked == 160) {
            ck_assert_int_eq(r, 0);
            fell_back += list_segments(dir, NULL, 0, NULL) == 0;
        }
        iqdb__io_reset();
        if (r == 0)
            ck_assert_msg(list_segments(dir, NULL, 0, NULL) == 0,
                          "k %ld: segments left behind a close", k);
        ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
        for (uint64_t i = 0; i < acked; i++)
            ck_assert_int_eq(scheck(db, i, 0), 1);
        iqdb_close(db);
        iqdb_config_free(c);
    }
    ck_assert_int_ge(fell_back, 1);
}
END_TEST

/* SIGKILL a writer of batches at random moments, many times, on one
 * database that is never closed (checked through read-only opens), so
 * automatic compactions keep segments across the writers and kills land
 * in them: every acknowledged batch comes back exact, no acknowledged
 * delete is undone. A window of SKEEP records stays live: each batch of
 * 8 is followed by the deletes of the 8 records SKEEP before it. */
#define SKEEP 32
static void segments_crash_cycles(int cycles)
{
    const char *env = getenv("IQDB_CRASH_CYCLES");
    if (env != NULL && atoi(env) > 0)
        cycles = atoi(env);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path("db"));
    iqdb_config *cf = sconf(16384), *ro = sconf(16384);
    iqdb_config_set_readonly(ro, 1);
    size_t cap = 1 << 21;
    unsigned char *state = calloc(cap, 1);
    uint64_t next = 0, seed = 4711, v2 = 0, segs = 0, mid = 0;
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, cf, &db), 0);
    for (; next < SKEEP; next += 8) {
        ck_assert_int_eq(sput_batch(db, next, 8, 0), 0);
        memset(state + next, 1, 8);
    }
    iqdb_close(db);
    for (int c = 0; c < cycles; c++) {
        int fds[2];
        ck_assert_int_eq(pipe(fds), 0);
        uint64_t start = next;
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            if (iqdb_open(dir, cf, &db) != 0)
                _exit(2);
            uint64_t ready = UINT64_MAX;
            if (write(fds[1], &ready, 8) != 8)
                _exit(4);
            for (uint64_t i = start;; i += 8) {
                uint64_t msg = i << 1;
                if (sput_batch(db, i, 8, 0) != 0 ||
                    write(fds[1], &msg, 8) != 8)
                    _exit(3);
                for (uint64_t j = i - SKEEP; j < i - SKEEP + 8; j++) {
                    msg = j << 1 | 1;
                    if (sdel(db, j) != 0 || write(fds[1], &msg, 8) != 8)
                        _exit(4);
                }
            }
        }
        close(fds[1]);
        uint64_t msg;
        if (tu_next(&seed) % 4 != 0 && read(fds[0], &msg, 8) == 8)
            ck_assert(msg == UINT64_MAX);
        struct timespec ts = {0, (long)(tu_next(&seed) % 40000000)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        ck_assert_msg(WIFSIGNALED(st), "cycle %d: child exited %d", c,
                      WEXITSTATUS(st));
        while (read(fds[0], &msg, 8) == 8) {
            if (msg == UINT64_MAX)
                continue;
            uint64_t i = msg >> 1;
            ck_assert(i + 8 < cap);
            if (msg & 1) {
                state[i] = 2;
            } else {
                memset(state + i, 1, 8);
                if (i + 8 > next)
                    next = i + 8;
            }
        }
        close(fds[0]);
        mid += file_exists(dir, "wal.old");
        v2 += snap_version(dir) == 2;
        segs += list_segments(dir, NULL, 0, NULL) > 0;
        ck_assert(next + 16 < cap);
        if (iqdb_open(dir, ro, &db) != 0)
            ck_abort_msg("cycle %d: %s", c, iqdb_errmsg(NULL));
        /* In flight: the batch at next (maybe applied) and, when this
         * cycle's child acknowledged a batch, the deletes that followed
         * the last one (maybe some applied). */
        uint64_t del0 = next > start ? next - 8 - SKEEP : UINT64_MAX;
        uint64_t from = start >= 2 * SKEEP ? start - 2 * SKEEP : 0;
        for (uint64_t i = from; i < next + 8; i++) {
            int present = scheck(db, i, 0);
            int in_flight_del = del0 != UINT64_MAX && i >= del0 && i < del0 + 8;
            if (state[i] == 1 && !in_flight_del)
                ck_assert_msg(present, "cycle %d: acknowledged %llu lost", c,
                              (unsigned long long)i);
            if (state[i] == 2)
                ck_assert_msg(!present, "cycle %d: deleted %llu is back", c,
                              (unsigned long long)i);
        }
        iqdb_close(db);
        /* Settle what was in flight, through a writable open that is
         * killed, not closed (a close would write format 1). */
        pid = fork();
        if (pid == 0) {
            if (iqdb_open(dir, cf, &db) != 0)
                _exit(2);
            char key[32];
            for (uint64_t j = del0; del0 != UINT64_MAX && j < del0 + 8; j++)
                if (iqdb_delete(db, sid(j, key), NULL) != 0)
                    _exit(3);
            if (iqdb_get(db, sid(next, key), NULL, 0, NULL) == 0) {
                for (uint64_t j = next - SKEEP; j < next - SKEEP + 8; j++)
                    if (iqdb_delete(db, sid(j, key), NULL) != 0)
                        _exit(3);
                _exit(10); /* the batch at next made it */
            }
            _exit(0);
        }
        waitpid(pid, &st, 0);
        ck_assert_msg(WIFEXITED(st) && (WEXITSTATUS(st) == 0 ||
                                        WEXITSTATUS(st) == 10),
                      "cycle %d: settling child exited %d", c,
                      WEXITSTATUS(st));
        if (del0 != UINT64_MAX)
            memset(state + del0, 2, 8);
        if (WEXITSTATUS(st) == 10) {
            memset(state + next, 1, 8);
            memset(state + next - SKEEP, 2, 8);
            next += 8;
        }
    }
    ck_assert_msg(v2 > (uint64_t)cycles / 10 && segs > (uint64_t)cycles / 10,
                  "format 2 after %llu and segments after %llu of %d cycles",
                  (unsigned long long)v2, (unsigned long long)segs, cycles);
    if (getenv("IQDB_CRASH_VERBOSE"))
        fprintf(stderr, "%d cycles, format 2 after %llu, segments after "
                "%llu, killed mid-compaction %llu, %llu records\n", cycles,
                (unsigned long long)v2, (unsigned long long)segs,
                (unsigned long long)mid, (unsigned long long)next);
    free(state);
    iqdb_config_free(cf);
    iqdb_config_free(ro);
}

START_TEST(test_persist_segments_crash_cycles)
{
    segments_crash_cycles(150);
}
END_TEST

/* The n-th rename-class operation (rotation, segment link, snapshot
 * rename) or sync of a run with automatic compactions fails: no
 * acknowledged write is lost, and the handle refuses writes after it. */
START_TEST(test_persist_segments_faults)
{
    const int ops[] = {IQDB_IO_OP_RENAME, IQDB_IO_OP_FSYNC, IQDB_IO_OP_WRITE};
    int linked = 0;
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
        for (long k = 0; k < 24; k++) {
            teardown();
            setup();
            const char *dir = path("db");
            iqdb_config *c = sconf(8192);
            iqdb *db;
            ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
            iqdb__io_fail_nth(ops[o], ops[o] == IQDB_IO_OP_RENAME ? k : k * 5,
                              EIO);
            uint64_t acked = batches_until_refused(db, dir, 0, 240);
            linked += list_segments(dir, NULL, 0, NULL) > 0;
            iqdb_close(db);
            iqdb__io_reset();
            int r = iqdb_open(dir, c, &db);
            ck_assert_msg(r == 0, "op %d k %ld: reopen: %s", ops[o], k,
                          iqdb_errmsg(NULL));
            for (uint64_t i = 0; i < acked; i++)
                ck_assert_msg(scheck(db, i, 0), "op %d k %ld: acknowledged "
                              "%llu lost", ops[o], k, (unsigned long long)i);
            iqdb_close(db);
            iqdb_config_free(c);
        }
    ck_assert_int_gt(linked, 0);
}
END_TEST

/* ---- the vector section mapped at open ---------------------------------- */

#define MDIM 256 /* 1 KiB a vector: 1024-slot chunks */

static void mvec(uint64_t i, float *v)
{
    for (int j = 0; j < MDIM; j++)
        v[j] = (float)((i * 31 + (uint64_t)j * 7) % 1000) * 0.25f;
}

static void mcheck(iqdb *db, uint64_t i, int want)
{
    float v[MDIM], got[MDIM];
    mvec(i, v);
    int r = iqdb_get(db, iqdb_id_u64(i), got, MDIM, NULL);
    ck_assert_int_eq(r, want ? 0 : IQDB_ENOTFOUND);
    if (want)
        ck_assert_mem_eq(got, v, sizeof v);
}

/* A reopen maps the whole chunks of the snapshot's vector section instead
 * of reading them; records there read back exact, slots reused after a
 * delete get pages of their own (the file is never written through the
 * mapping), compaction writes from the mapping, and a damaged byte in a
 * mapped chunk still fails the open. */
START_TEST(test_persist_vectors_mapped)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path("db"));
    iqdb_config *c = iqdb_config_new(MDIM, IQDB_METRIC_EUCLIDEAN);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    float v[MDIM];
    for (uint64_t i = 0; i < 2500; i++) {
        mvec(i, v);
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), v, MDIM, NULL), 0);
    }
    ck_assert_int_eq(iqdb_close(db), 0);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    size_t n0;
    unsigned char *before = slurp(snap, &n0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_ptr_nonnull(db->store.arena.map);
    ck_assert_uint_eq(db->store.arena.nmapped, 2);
    for (uint64_t i = 0; i < 2500; i += 3)
        mcheck(db, i, 1);
    /* Free slots in the mapped chunks and fill them again. */
    for (uint64_t i = 100; i < 200; i++)
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
    for (uint64_t i = 5000; i < 5100; i++) {
        mvec(i, v);
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), v, MDIM, NULL), 0);
    }
    for (uint64_t i = 5000; i < 5100; i++)
        mcheck(db, i, 1);
    /* The file under the mapping is unchanged. */
    size_t n1;
    unsigned char *now = slurp(snap, &n1);
    ck_assert_uint_eq(n0, n1);
    ck_assert_mem_eq(before, now, n0);
    free(now);
    free(before);
    ck_assert_int_eq(iqdb_flush(db), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), 2500);
    for (uint64_t i = 0; i < 2500; i++)
        mcheck(db, i, i < 100 || i >= 200);
    for (uint64_t i = 5000; i < 5100; i++)
        mcheck(db, i, 1);
    ck_assert_int_eq(iqdb_close(db), 0);
    /* One flipped byte inside the first mapped chunk. */
    size_t n;
    unsigned char *b = slurp(snap, &n);
    uint64_t voff = get_le64(sec_entry(b, 6) + 8); /* IQDB_SEC_VECTORS */
    ck_assert_uint_gt(voff, 0);
    b[voff + 4096 + 5] ^= 0x10;
    spit(snap, b, n);
    free(b);
    ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "vector section"));
    iqdb_config_free(c);
}
END_TEST

/* ---- iqdb_check, iqdb_stat, iqdb_foreach, opening with dim 0 ---------------- */

typedef struct findings {
    int n, damage, in_wal, in_snapshot;
    char file[32];
    uint64_t offset;
} findings;

static void on_finding(void *ctx, const char *file, uint64_t off, int damage,
                       const char *msg)
{
    findings *f = ctx;
    ck_assert_ptr_nonnull(msg);
    if (f->n++ == 0) {
        snprintf(f->file, sizeof f->file, "%s", file);
        f->offset = off;
    }
    f->damage += damage;
    f->in_wal += strcmp(file, "wal") == 0;
    f->in_snapshot += strcmp(file, "snapshot") == 0;
}

/* A snapshot past the write-back step (8 MiB) is written back as it
 * goes; a failed write-back fails the flush (its error would otherwise be
 * consumed, and the final fsync report success over lost pages) with the
 * previous snapshot byte-identical and nothing acknowledged lost. Every
 * sync-class operation of the flush fails in turn. */
START_TEST(test_persist_snapshot_writeback_fails)
{
    int saw_writeback = 0;
    for (long n = 0; n < 40; n++) {
        teardown();
        setup();
        char dir[512];
        snprintf(dir, sizeof dir, "%s", path("db"));
        iqdb_config *c = iqdb_config_new(MDIM, IQDB_METRIC_EUCLIDEAN);
        iqdb *db;
        ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
        static float vs[500 * MDIM];
        iqdb_record recs[500];
        for (uint64_t b = 0; b < 20; b++) {
            for (uint64_t i = 0; i < 500; i++) {
                mvec(b * 500 + i, vs + i * MDIM);
                recs[i].id = iqdb_id_u64(b * 500 + i);
                recs[i].vector = vs + i * MDIM;
                recs[i].meta = NULL;
            }
            ck_assert_int_eq(iqdb_upsert_batch(db, recs, 500, MDIM), 0);
            if (b == 9) /* a first snapshot of 10k records: 10 MiB */
                ck_assert_int_eq(iqdb_flush(db), 0);
        }
        char snap[600];
        snprintf(snap, sizeof snap, "%s/snapshot", dir);
        size_t n0;
        unsigned char *before = slurp(snap, &n0);
        iqdb__io_reset();
        iqdb__io_fail_nth(IQDB_IO_OP_FSYNC, n, EIO);
        int r = iqdb_flush(db);
        long ops = iqdb__io_count(IQDB_IO_OP_FSYNC);
        iqdb__io_reset();
        if (r != 0) {
            saw_writeback += strstr(iqdb_errmsg(db), "write-back") != NULL;
            size_t n1;
            unsigned char *after = slurp(snap, &n1);
            /* Unless the failure came after the rename. */
            if (strstr(iqdb_errmsg(db), "directory") == NULL) {
                ck_assert_uint_eq(n0, n1);
                ck_assert_mem_eq(before, after, n0);
            }
            free(after);
        }
        free(before);
        iqdb_close(db);
        ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
        ck_assert_uint_eq(iqdb_count(db), 10000);
        for (uint64_t i = 0; i < 10000; i += 97)
            mcheck(db, i, 1);
        iqdb_close(db);
        iqdb_config_free(c);
        if (r == 0 && ops <= n) /* past the flush's last sync */
            break;
    }
    ck_assert_int_gt(saw_writeback, 0);
}
END_TEST

/* Raw vector chunks go to the snapshot with O_DIRECT where the file
 * system allows it (core/snapshot.c, w_chunk). The file must be the same,
 * byte for byte, as the one written through the page cache: with dead
 * slots (staged chunks), a partial last chunk, and a dimension whose
 * chunks are not block multiples (those stay buffered). Where O_DIRECT
 * works, the direct path must really be taken (fewer, gathered writes),
 * and a direct write refused with EINVAL must fall back to the page cache
 * with the same file as the result. */
static void dvec(uint32_t dim, uint64_t i, float *v)
{
    for (uint32_t j = 0; j < dim; j++)
        v[j] = (float)((i * 13 + (uint64_t)j * 5) % 977) * 0.5f - 100.0f;
}

/* Deleted: every 7th id in [1100, 1300), or every 7th of all when n is
 * small (dead slots in the second 1024-slot chunk, or everywhere). */
static int direct_dead(uint64_t n, uint64_t i)
{
    if (n >= 1300)
        return i >= 1100 && i < 1300 && i % 7 == 3;
    return i % 7 == 3;
}

/* A database of n records (direct_dead deleted) in dir; flushes it with
 * O_DIRECT on or off and an EINVAL injected at write fail_at (< 0: none).
 * Returns the flush's result; *writes: write operations it made. */
static int direct_db(const char *dir, uint32_t dim, uint64_t n, int direct,
                     long fail_at, long *writes)
{
    iqdb_config *c = iqdb_config_new(dim, IQDB_METRIC_EUCLIDEAN);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    float *vs = malloc(sizeof(float) * dim * 500);
    iqdb_record recs[500];
    for (uint64_t b = 0; b < n; b += 500) {
        uint64_t m = n - b < 500 ? n - b : 500;
        for (uint64_t i = 0; i < m; i++) {
            dvec(dim, b + i, vs + i * dim);
            recs[i].id = iqdb_id_u64(b + i);
            recs[i].vector = vs + i * dim;
            recs[i].meta = NULL;
        }
        ck_assert_int_eq(iqdb_upsert_batch(db, recs, m, dim), 0);
    }
    free(vs);
    for (uint64_t i = 0; i < n; i++)
        if (direct_dead(n, i))
            ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
    iqdb__snapshot_direct = direct;
    iqdb__io_reset();
    if (fail_at >= 0)
        iqdb__io_fail_nth(IQDB_IO_OP_WRITE, fail_at, EINVAL);
    int r = iqdb_flush(db);
    *writes = iqdb__io_count(IQDB_IO_OP_WRITE);
    iqdb__io_reset();
    iqdb__snapshot_direct = 1;
    iqdb_close(db);
    iqdb_config_free(c);
    return r;
}

static void direct_verify(const char *dir, uint32_t dim, uint64_t n)
{
    iqdb_config *c = iqdb_config_new(dim, IQDB_METRIC_EUCLIDEAN);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    float *v = malloc(sizeof(float) * dim), *got = malloc(sizeof(float) * dim);
    for (uint64_t i = 0; i < n; i++) {
        int live = !direct_dead(n, i);
        int r = iqdb_get(db, iqdb_id_u64(i), got, dim, NULL);
        ck_assert_int_eq(r, live ? 0 : IQDB_ENOTFOUND);
        if (live) {
            dvec(dim, i, v);
            ck_assert_mem_eq(v, got, sizeof(float) * dim);
        }
    }
    free(v);
    free(got);
    iqdb_close(db);
    iqdb_config_free(c);
}

static int direct_supported(void)
{
#ifdef O_DIRECT
    int fd = open(path("probe"), O_WRONLY | O_CREAT | O_DIRECT, 0644);
    if (fd < 0)
        return 0;
    void *b = NULL;
    int ok = posix_memalign(&b, 4096, 4096) == 0;
    if (ok) {
        memset(b, 0, 4096);
        ok = pwrite(fd, b, 4096, 0) == 4096;
    }
    free(b);
    close(fd);
    unlink(path("probe"));
    return ok;
#else
    return 0;
#endif
}

START_TEST(test_persist_snapshot_direct)
{
    /* 256-d: 1 KiB vectors, 1024-slot chunks of 1 MiB (direct); 8200-d:
     * 16-slot chunks of 524,800 bytes, not a block multiple (buffered). */
    const uint32_t dims[3] = {256, 8200, 256};
    /* 4500: dead slots in chunk 1 only, chunks 2 and 3 gather; 1299:
     * dead slots in every chunk, each staged in turn. */
    const uint64_t ns[3] = {4500, 61, 1299};
    int can = direct_supported();
    for (int k = 0; k < 3; k++) {
        char d1[512], d0[512], s1[600], s0[600];
        snprintf(d1, sizeof d1, "%s", path("direct"));
        snprintf(d0, sizeof d0, "%s", path("buffered"));
        snprintf(s1, sizeof s1, "%s/snapshot", d1);
        snprintf(s0, sizeof s0, "%s/snapshot", d0);
        long w1, w0;
        ck_assert_int_eq(direct_db(d1, dims[k], ns[k], 1, -1, &w1), 0);
        ck_assert_int_eq(direct_db(d0, dims[k], ns[k], 0, -1, &w0), 0);
        size_t n1, n0;
        unsigned char *b1 = slurp(s1, &n1), *b0 = slurp(s0, &n0);
        ck_assert_uint_eq(n1, n0);
        /* Every byte but the random file id (and the header's CRC). */
        ck_assert_uint_ge(n0, 128);
        ck_assert_uint_ne(get_le64(b1 + 72), get_le64(b0 + 72));
        memcpy(b1 + 72, b0 + 72, 8);
        memcpy(b1 + 124, b0 + 124, 4);
        ck_assert_mem_eq(b1, b0, n0);
        if (k == 0 && can)
            ck_assert_int_lt(w1, w0); /* the chunks went as gathered runs */
        if (k == 1)
            ck_assert_int_eq(w1, w0);
        direct_verify(d1, dims[k], ns[k]);
        /* EINVAL at each write in turn: a buffered write fails the flush
         * (nothing is lost: the log keeps every record); a direct one
         * falls back and gives the same file. */
        int fell_back = 0;
        for (long at = 0; k == 0 && at < w1; at++) {
            char cmd[600];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", d1);
            ck_assert_int_eq(system(cmd), 0);
            long w;
            int r = direct_db(d1, dims[k], ns[k], 1, at, &w);
            if (r == 0) {
                size_t n2;
                unsigned char *b2 = slurp(s1, &n2);
                ck_assert_uint_eq(n2, n0);
                memcpy(b2 + 72, b0 + 72, 8);
                memcpy(b2 + 124, b0 + 124, 4);
                ck_assert_mem_eq(b2, b0, n0);
                free(b2);
                fell_back++;
            } else {
                ck_assert_int_eq(r, IQDB_EIO);
            }
            direct_verify(d1, dims[k], ns[k]);
        }
        if (k == 0 && can)
            ck_assert_int_gt(fell_back, 0);
        free(b1);
        free(b0);
        teardown();
        setup();
    }
}
END_TEST

/* Power lost at every operation of a flush whose snapshot is written
 * direct (256-d, 4500 records, a first snapshot already there): the
 * reopen has every record, from the old snapshot and the log or from the
 * new snapshot. */
START_TEST(test_persist_snapshot_direct_power_loss)
{
    int rounds = 0;
    for (long at = 0; at < 400; at++) {
        teardown();
        setup();
        char dir[512];
        snprintf(dir, sizeof dir, "%s", path("db"));
        long w;
        /* 4500 records, flushed: the first snapshot. */
        ck_assert_int_eq(direct_db(dir, 256, 4500, 1, -1, &w), 0);
        iqdb_config *c = iqdb_config_new(256, IQDB_METRIC_EUCLIDEAN);
        iqdb *db;
        ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
        float v[256];
        for (uint64_t i = 4500; i < 4600; i++) { /* logged, durable */
            dvec(256, i, v);
            ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), v, 256, NULL),
                             0);
        }
        iqdb__io_powerloss_begin();
        iqdb__io_powerloss_crash_at(at, at % 2 ? 0 : (uint64_t)at * 7 + 1);
        int r = iqdb_flush(db);
        iqdb__io_powerloss_crash_at(-1, 0);
        int dead = iqdb__io_powerloss_dead();
        iqdb_close(db);
        iqdb__io_powerloss_end();
        iqdb_config_free(c);
        if (!dead) { /* past the flush's last operation */
            ck_assert_int_eq(r, 0);
            break;
        }
        rounds++;
        direct_verify(dir, 256, 4600);
    }
    ck_assert_int_gt(rounds, 10);
}
END_TEST

/* An automatic compaction written direct on its own thread while the
 * writer goes on (256-d: whole chunks from the arena, gathered). It is
 * held in the hook before it writes; meanwhile records it must hold are
 * deleted (their slots held back by the pin) or updated (new slots), and
 * new records take the slots that were already dead when it started.
 * Its snapshot, opened alone, must be the state at its start: original
 * vectors, deleted records present, no new ones, and zeros (a staged
 * chunk) where the slots dead at its start were reused. */
static void dput(iqdb *db, uint64_t id, uint64_t seed)
{
    float v[256];
    dvec(256, seed, v);
    ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(id), v, 256, NULL), 0);
}

static void direct_background(int refs)
{
    atomic_store(&iqdb__compact_refs, refs);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path("db"));
    iqdb_config *c = iqdb_config_new(256, IQDB_METRIC_EUCLIDEAN);
    iqdb_config_set_compact_bytes(c, (uint64_t)3 << 20);
    iqdb *db;
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    hook_arm();
    static float vs[500 * 256];
    iqdb_record recs[500];
    const uint64_t limit = (uint64_t)3 << 20;
    uint64_t next = 0;
    iqdb_stats st;
    /* Fill the log to just under the threshold: batches, then single
     * records. Then slots 2100-2109 die, and deletes from the top push
     * the log over: no record is added between those deletes and the
     * compaction's start, so those slots are still dead there. */
    for (;;) {
        ck_assert_int_eq(iqdb_stat(db, &st), 0);
        if (st.wal_bytes + 600000 > limit)
            break;
        for (uint64_t i = 0; i < 500; i++) {
            dvec(256, next + i, vs + i * 256);
            recs[i].id = iqdb_id_u64(next + i);
            recs[i].vector = vs + i * 256;
            recs[i].meta = NULL;
        }
        ck_assert_int_eq(iqdb_upsert_batch(db, recs, 500, 256), 0);
        next += 500;
    }
    for (;;) {
        ck_assert_int_eq(iqdb_stat(db, &st), 0);
        if (st.wal_bytes + 4000 > limit)
            break;
        dput(db, next, next);
        next++;
    }
    ck_assert(!hook_is_parked());
    ck_assert_uint_ge(next, 2200);
    for (uint64_t i = 2100; i < 2110; i++)
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
    uint64_t top = next;
    /* The log is rotated in the write that starts the compaction, before
     * its thread reaches the hook. */
    while (!file_exists(dir, "wal.old")) {
        ck_assert_uint_gt(top, 2300);
        top--;
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(top), NULL), 0);
    }
    for (int t = 0; t < 2000 && !hook_is_parked(); t++)
        usleep(1000);
    ck_assert(hook_is_parked());
    /* The snapshot holds [0, top) but 2100-2109. */
    uint64_t held = top;
    for (uint64_t i = 10; i < 20; i++)
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
    for (uint64_t i = 40; i < 50; i++)
        dput(db, i, i + 777777);
    for (uint64_t i = 100000; i < 100100; i++)
        dput(db, i, i);
    /* The snapshot alone. */
    size_t n;
    unsigned char *b = let_go_and_copy_snapshot(dir, &n);
    /* Slots 2100-2109 (dead at the start, reused since): zeros. */
    const unsigned char *ent = sec_entry(b, IQDB_SEC_VECTORS);
    uint64_t off = get_le64(ent + 8) + 2100 * 1024;
    ck_assert_uint_le(off + 10 * 1024, n);
    unsigned char any = 0;
    for (uint64_t k = 0; k < 10 * 1024; k++)
        any |= b[off + k];
    ck_assert_uint_eq(any, 0);
    free(b);
    iqdb *so;
    ck_assert_int_eq(iqdb_open(path("snaponly"), c, &so), 0);
    ck_assert_uint_eq(iqdb_count(so), held - 10);
    float v[256], got[256];
    ck_assert_int_eq(iqdb_get(so, iqdb_id_u64(top), got, 256, NULL),
                     IQDB_ENOTFOUND);
    for (uint64_t i = 0; i < held; i++) {
        int live = i < 2100 || i >= 2110;
        ck_assert_int_eq(iqdb_get(so, iqdb_id_u64(i), got, 256, NULL),
                         live ? 0 : IQDB_ENOTFOUND);
        if (live) {
            dvec(256, i, v);
            ck_assert_mem_eq(v, got, sizeof v);
        }
    }
    ck_assert_int_eq(iqdb_get(so, iqdb_id_u64(100000), got, 256, NULL),
                     IQDB_ENOTFOUND);
    iqdb_close(so);
    /* The database: everything, through the snapshot and the new log. */
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_uint_eq(iqdb_count(db), held - 20 + 100);
    for (uint64_t i = 40; i < 50; i++) {
        dvec(256, i + 777777, v);
        ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(i), got, 256, NULL), 0);
        ck_assert_mem_eq(v, got, sizeof v);
    }
    for (uint64_t i = 100000; i < 100100; i++) {
        dvec(256, i, v);
        ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(i), got, 256, NULL), 0);
        ck_assert_mem_eq(v, got, sizeof v);
    }
    ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(15), got, 256, NULL),
                     IQDB_ENOTFOUND);
    iqdb_close(db);
    iqdb_config_free(c);
}

START_TEST(test_persist_snapshot_direct_background)
{
    direct_background(0);
}
END_TEST

/* The same with the vectors left in the rotated log (kept as a segment):
 * the pinned slots matter only for what the snapshot writes itself. */
START_TEST(test_persist_snapshot_direct_background_refs)
{
    direct_background(1);
}
END_TEST

/* With a codec the vector section is compressed too, one block per arena
 * chunk: the snapshot shrinks, nothing is mapped, every vector (and the
 * zeros of dead slots) reads back exact, iqdb_check decodes it, and a
 * block header that lies is caught even with every checksum made to
 * match. */
/* A crafted header claiming 2^40 slots, its checksum made good: refused
 * as corrupt before anything is sized by the claim (the vector section,
 * raw or in compressed blocks, cannot back it). */
static void huge_limit(const char *codec)
{
    small_db(codec);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", path("db"));
    size_t n;
    unsigned char *b = slurp(snap, &n);
    put_le64(b + 32, (uint64_t)1 << 40);
    fix_header(b);
    spit(snap, b, n);
    free(b);
    iqdb *db;
    int r = open_db(path("db"), codec, &db);
    ck_assert_msg(r == IQDB_ECORRUPT, "%s: %s (%s)", codec ? codec : "raw",
                  iqdb_errname(r), iqdb_errmsg(NULL));
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "vector section"));
}

/* A crafted last sequence number the log after it could not follow
 * (sequence numbers stay below 2^63): refused, so the library never
 * writes a log it would then refuse to read. */
static void huge_last_seq(void)
{
    small_db(NULL);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", path("db"));
    size_t n;
    unsigned char *b = slurp(snap, &n);
    put_le64(b + 64, UINT64_MAX >> 1);
    fix_header(b);
    spit(snap, b, n);
    free(b);
    iqdb *db;
    ck_assert_int_eq(open_db(path("db"), NULL, &db), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "sequence number"));
}

/* A compressed section whose table entry claims 2^40 raw bytes, the
 * table's checksum made good: open and iqdb_check both call it corrupt,
 * neither allocating what it claims. */
static void huge_raw_claim(void)
{
    iqdb *db;
    ck_assert_int_eq(open_db(path("db"), "zstd", &db), 0);
    for (uint64_t i = 0; i < 300; i++)
        ck_assert_int_eq(put(db, i), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", path("db"));
    size_t n;
    unsigned char *b = slurp(snap, &n);
    unsigned char *ent = sec_entry(b, 5); /* META */
    ck_assert_uint_ne(ent[4], 0);         /* compressed */
    put_le64(ent + 24, (uint64_t)1 << 40);
    fix_table(b);
    spit(snap, b, n);
    free(b);
    ck_assert_int_eq(open_db(path("db"), "zstd", &db), IQDB_ECORRUPT);
    findings f = {0};
    ck_assert_int_eq(iqdb_check(path("db"), NULL, on_finding, &f),
                     IQDB_ECORRUPT);
    ck_assert_int_gt(f.damage, 0);
}

START_TEST(test_persist_snapshot_huge_limit)
{
    huge_raw_claim();
    teardown();
    setup();
    huge_limit(NULL);
    teardown();
    setup();
    huge_limit("zstd");
    teardown();
    setup();
    huge_last_seq();
}
END_TEST

static void vectors_compressed(const char *codec)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path(codec));
    iqdb_config *c = iqdb_config_new(MDIM, IQDB_METRIC_EUCLIDEAN);
    ck_assert_int_eq(iqdb_config_set_compression(c, codec, 0), 0);
    iqdb *db;
    ck_assert_msg(iqdb_open(dir, c, &db) == 0, "%s", iqdb_errmsg(NULL));
    float v[MDIM];
    for (uint64_t i = 0; i < 2500; i++) {
        mvec(i, v);
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), v, MDIM, NULL), 0);
    }
    for (uint64_t i = 1000; i < 1300; i++) /* dead slots, a block of them */
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    size_t n;
    unsigned char *orig = slurp(snap, &n);
    /* 2500 slots x 1 KiB of vectors, compressible: well under half. */
    ck_assert_msg(n < 2500 * MDIM * 4 / 2, "%s snapshot of %zu bytes", codec,
                  n);
    unsigned char *ent = sec_entry(orig, 6); /* IQDB_SEC_VECTORS */
    ck_assert_uint_ne(ent[4], 0);              /* compressed */
    uint64_t voff = get_le64(ent + 8), vlen = get_le64(ent + 16);
    ck_assert_uint_gt(vlen, 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    ck_assert_ptr_null(db->store.arena.map);
    for (uint64_t i = 0; i < 2500; i++)
        mcheck(db, i, i < 1000 || i >= 1300);
    /* Reuse dead slots, compact, reopen. */
    for (uint64_t i = 5000; i < 5100; i++) {
        mvec(i, v);
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), v, MDIM, NULL), 0);
    }
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_int_eq(iqdb_open(dir, c, &db), 0);
    for (uint64_t i = 5000; i < 5100; i++)
        mcheck(db, i, 1);
    ck_assert_uint_eq(iqdb_count(db), 2300);
    ck_assert_int_eq(iqdb_close(db), 0);
    findings f = {0};
    ck_assert_int_eq(iqdb_check(dir, NULL, on_finding, &f), 0);
    ck_assert_int_eq(f.damage, 0);
    /* The first block's stored length one larger, with the section's
     * checksum and the table's recomputed: the framing check refuses it. */
    size_t nb;
    unsigned char *b = slurp(snap, &nb);
    ent = sec_entry(b, 6);
    voff = get_le64(ent + 8);
    vlen = get_le64(ent + 16);
    unsigned char *blk = b + voff;
    uint32_t st = (uint32_t)blk[4] | (uint32_t)blk[5] << 8 |
                  (uint32_t)blk[6] << 16 | (uint32_t)blk[7] << 24;
    put_le32(blk + 4, st + 1);
    fix_section(b, ent);
    spit(snap, b, nb);
    ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_ECORRUPT);
    ck_assert_msg(strstr(iqdb_errmsg(NULL), "vector") != NULL, "%s",
                  iqdb_errmsg(NULL));
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(iqdb_check(dir, NULL, on_finding, &f), IQDB_ECORRUPT);
    ck_assert_int_gt(f.damage, 0);
    ck_assert_str_eq(f.file, "snapshot");
    ck_assert_uint_eq(f.offset, voff);
    /* A byte flipped inside the compressed blocks: the checksum. */
    free(b);
    orig[voff + vlen / 2] ^= 0x21;
    spit(snap, orig, n);
    ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "checksum"));
    free(orig);
    iqdb_config_free(c);
}

/* Data that compresses beyond the ratio a reader accepts (1024:1, plus
 * 1 MiB per section) is stored raw, so it still opens: 12 MB of
 * identical metadata, a chunk of all-zero live vectors, a chunk of dead
 * slots. And a crafted vector block claiming that ratio is refused. */
START_TEST(test_persist_compression_extremes)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path("db"));
    iqdb_config *c = iqdb_config_new(MDIM, IQDB_METRIC_EUCLIDEAN);
    ck_assert_int_eq(iqdb_config_set_compression(c, "zstd", 0), 0);
    iqdb *db;
    ck_assert_msg(iqdb_open(dir, c, &db) == 0, "%s", iqdb_errmsg(NULL));
    char *big = malloc(4001);
    memset(big, 'a', 4000);
    big[4000] = '\0';
    iqdb_meta *m = iqdb_meta_new();
    ck_assert_int_eq(iqdb_meta_set(m, "s", iqdb_value_str(big)), 0);
    float v[MDIM], got[MDIM], zero[MDIM] = {0};
    for (uint64_t i = 0; i < 3072; i++) {
        if (i >= 1024 && i < 2048)
            memset(v, 0, sizeof v);
        else
            mvec(i, v);
        ck_assert_int_eq(iqdb_upsert(db, iqdb_id_u64(i), v, MDIM, m), 0);
    }
    for (uint64_t i = 2048; i < 3072; i++) /* a whole chunk of dead slots */
        ck_assert_int_eq(iqdb_delete(db, iqdb_id_u64(i), NULL), 0);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_msg(iqdb_open(dir, c, &db) == 0, "%s", iqdb_errmsg(NULL));
    ck_assert_uint_eq(iqdb_count(db), 2048);
    for (uint64_t i = 0; i < 2048; i += 7) {
        iqdb_meta *gm = NULL;
        ck_assert_int_eq(iqdb_get(db, iqdb_id_u64(i), got, MDIM, &gm), 0);
        if (i >= 1024) {
            ck_assert_mem_eq(got, zero, sizeof got);
        } else {
            mvec(i, v);
            ck_assert_mem_eq(got, v, sizeof got);
        }
        iqdb_value val;
        ck_assert_int_eq(iqdb_meta_get(gm, "s", &val), 0);
        ck_assert_uint_eq(val.len, 4000);
        iqdb_meta_free(gm);
    }
    ck_assert_int_eq(iqdb_close(db), 0);
    findings f = {0};
    ck_assert_int_eq(iqdb_check(dir, NULL, on_finding, &f), 0);
    /* The first vector block made to claim 1 MiB from a single byte,
     * every checksum made good: refused before anything is sized by it. */
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    size_t nb;
    unsigned char *b = slurp(snap, &nb), *ent = sec_entry(b, 6);
    put_le32(b + get_le64(ent + 8) + 4, 1);
    fix_section(b, ent);
    spit(snap, b, nb);
    free(b);
    ck_assert_int_eq(iqdb_open(dir, c, &db), IQDB_ECORRUPT);
    ck_assert_msg(strstr(iqdb_errmsg(NULL), "ratio") != NULL, "%s",
                  iqdb_errmsg(NULL));
    iqdb_meta_free(m);
    free(big);
    iqdb_config_free(c);
}
END_TEST

START_TEST(test_persist_vectors_compressed)
{
    vectors_compressed("zstd");
    vectors_compressed("lz4");
}
END_TEST

static int count_cb(void *ctx, const iqdb_record *rec)
{
    ck_assert_ptr_nonnull(rec->vector);
    (*(int *)ctx)++;
    return 0;
}

START_TEST(test_persist_check_stat_foreach)
{
    const char *dir = path("db");
    findings f;
    iqdb *db;
    /* No database yet. */
    ck_assert_int_eq(iqdb_check(dir, NULL, NULL, NULL), IQDB_ENOTFOUND);
    iqdb_config *z = iqdb_config_new(0, (iqdb_metric)0);
    ck_assert_int_eq(iqdb_open(dir, z, &db), IQDB_ENOTFOUND);
    struct stat sb;
    ck_assert_int_ne(stat(dir, &sb), 0); /* nothing was created */
    /* A child writes 100 records and dies without closing: frames in the
     * log after the snapshot. */
    pid_t pid = fork();
    if (pid == 0) {
        if (open_db(dir, "zstd", &db) != 0)
            _exit(2);
        for (uint64_t i = 0; i < 100; i++)
            if (put(db, i) != 0)
                _exit(3);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(iqdb_check(dir, NULL, on_finding, &f), 0);
    ck_assert_int_eq(f.n, 0);
    /* dim 0 opens whatever is there, keeping its codec. */
    ck_assert_msg(iqdb_open(dir, z, &db) == 0, "%s", iqdb_errmsg(NULL));
    ck_assert_uint_eq(iqdb_dim(db), DIM);
    ck_assert_uint_eq(iqdb_count(db), 100);
    iqdb_stats sts;
    ck_assert_int_eq(iqdb_stat(db, &sts), 0);
    ck_assert_uint_eq(sts.count, 100);
    ck_assert_int_eq(sts.durable, 1);
    ck_assert_str_eq(sts.codec, "zstd");
    ck_assert_str_eq(sts.index, "flat");
    ck_assert_uint_gt(sts.wal_bytes, 100 * DIM * 4);
    ck_assert_uint_gt(sts.snapshot_bytes, 0);
    ck_assert_uint_ge(sts.vector_bytes, 100 * DIM * 4);
    int n = 0;
    ck_assert_int_eq(iqdb_foreach(db, count_cb, &n), 0);
    ck_assert_int_eq(n, 100);
    /* A writer holds it: check is refused. */
    ck_assert_int_eq(iqdb_check(dir, NULL, NULL, NULL), IQDB_ELOCKED);
    ck_assert_int_eq(iqdb_close(db), 0);
    ck_assert_msg(iqdb_open(dir, z, &db) == 0, "%s", iqdb_errmsg(NULL));
    ck_assert_int_eq(iqdb_stat(db, &sts), 0);
    ck_assert_str_eq(sts.codec, "zstd"); /* not decompressed by the flush */
    ck_assert_int_eq(iqdb_close(db), 0);
    iqdb_config_free(z);

    /* A flipped byte in the middle of the snapshot: damage, with file and
     * offset, and nothing changed. */
    char snap[600];
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    size_t len;
    unsigned char *b = slurp(snap, &len);
    b[len / 2] ^= 0x10;
    spit(snap, b, len);
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(iqdb_check(dir, NULL, on_finding, &f), IQDB_ECORRUPT);
    ck_assert_int_ge(f.damage, 1);
    ck_assert_str_eq(f.file, "snapshot");
    ck_assert_uint_le(f.offset, len / 2);
    size_t len2;
    unsigned char *b2 = slurp(snap, &len2);
    ck_assert_uint_eq(len, len2);
    ck_assert_mem_eq(b, b2, len);
    free(b2);
    b[len / 2] ^= 0x10;
    spit(snap, b, len);
    free(b);

    /* Frames in the log: a flip in an early frame, with intact frames
     * after it, is damage; a torn last frame is only a note. */
    pid = fork();
    if (pid == 0) {
        if (open_db(dir, "zstd", &db) != 0)
            _exit(2);
        for (uint64_t i = 100; i < 140; i++)
            if (put(db, i) != 0)
                _exit(3);
        _exit(0);
    }
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char wal[600];
    snprintf(wal, sizeof wal, "%s/wal", dir);
    iqdb_config *rc = conf("zstd", IQDB_FSYNC_ALWAYS);
    iqdb_config_set_readonly(rc, 1);
    ck_assert_int_eq(iqdb_open(dir, rc, &db), 0);
    ck_assert_int_eq(iqdb_stat(db, &sts), 0);
    iqdb_close(db);
    uint64_t used = sts.wal_bytes;
    b = slurp(wal, &len);
    ck_assert_uint_ge(len, used);
    /* torn tail: cut the last frame short */
    spit(wal, b, (size_t)used - 3);
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(iqdb_check(dir, NULL, on_finding, &f), 0);
    ck_assert_int_eq(f.n, 1);
    ck_assert_int_eq(f.damage, 0);
    ck_assert_str_eq(f.file, "wal");
    /* damage in the middle */
    b[used / 3] ^= 0x01;
    spit(wal, b, len);
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(iqdb_check(dir, NULL, on_finding, &f), IQDB_ECORRUPT);
    ck_assert_int_ge(f.damage, 1);
    ck_assert_str_eq(f.file, "wal");
    ck_assert_uint_le(f.offset, used / 3);
    ck_assert_uint_gt(f.offset, 0);
    free(b);
    /* Both files damaged: each is reported. */
    b = slurp(snap, &len);
    b[len / 2] ^= 0x10;
    spit(snap, b, len);
    free(b);
    memset(&f, 0, sizeof f);
    ck_assert_int_eq(iqdb_check(dir, NULL, on_finding, &f), IQDB_ECORRUPT);
    ck_assert_int_ge(f.in_snapshot, 1);
    ck_assert_int_ge(f.in_wal, 1);
    iqdb_config_free(rc);
}
END_TEST

static Suite *persist_suite(void)
{
    Suite *s = suite_create("persist");
    struct {
        const char *name;
        const TTest *t;
    } cases[] = {
        {"round_trip_raw", test_persist_round_trip_raw},
        {"round_trip_zstd", test_persist_round_trip_zstd},
        {"round_trip_lz4", test_persist_round_trip_lz4},
        {"replay_without_close", test_persist_replay_without_close},
        {"index_saved_state", test_persist_index_saved_state},
        {"index_section", test_persist_index_section},
        {"recompress_and_readonly_tail", test_persist_recompress_and_readonly_tail},
        {"bad_codec_level", test_persist_bad_codec_level},
        {"short_id_delete_replays", test_persist_short_id_delete_replays},
        {"plugin_name_not_path", test_persist_plugin_name_not_path},
        {"newer_snapshot_version", test_persist_newer_snapshot_version},
        {"undecodable_frame", test_persist_undecodable_frame},
        {"wal_missing", test_persist_wal_missing},
        {"check_scan_cut", test_persist_check_scan_cut},
        {"creation_interrupted", test_persist_creation_interrupted},
        {"config_mismatch", test_persist_config_mismatch},
        {"foreign_directory_untouched", test_persist_foreign_directory_untouched},
        {"second_writer_refused", test_persist_second_writer_refused},
        {"readers_share", test_persist_readers_share},
        {"crash_cycles", test_persist_crash_cycles},
        {"crash_cycles_zstd", test_persist_crash_cycles_zstd},
        {"snapshot_flips_raw", test_persist_snapshot_flips_raw},
        {"snapshot_flips_zstd", test_persist_snapshot_flips_zstd},
        {"snapshot_flips_lz4", test_persist_snapshot_flips_lz4},
        {"non_database_files", test_persist_non_database_files},
        {"wal_tail_damage", test_persist_wal_tail_damage},
        {"power_loss", test_persist_power_loss},
        {"fsync_policies", test_persist_fsync_policies},
        {"group_commit", test_persist_group_commit},
        {"group_commit_fault", test_persist_group_commit_fault},
        {"vectors_mapped", test_persist_vectors_mapped},
        {"vectors_compressed", test_persist_vectors_compressed},
        {"snapshot_huge_limit", test_persist_snapshot_huge_limit},
        {"compression_extremes", test_persist_compression_extremes},
        {"snapshot_writeback_fails", test_persist_snapshot_writeback_fails},
        {"snapshot_direct", test_persist_snapshot_direct},
        {"snapshot_direct_power_loss", test_persist_snapshot_direct_power_loss},
        {"snapshot_direct_background", test_persist_snapshot_direct_background},
        {"snapshot_direct_background_refs",
         test_persist_snapshot_direct_background_refs},
        {"group_commit_write_fault", test_persist_group_commit_write_fault},
        {"wal_old_settle_fails", test_persist_wal_old_settle_fails},
        {"wal_old_settle_power_loss", test_persist_wal_old_settle_power_loss},
        {"flush_without_rotation", test_persist_flush_without_rotation},
        {"auto_compaction", test_persist_auto_compaction},
        {"fault_write", test_persist_fault_write},
        {"fault_fsync", test_persist_fault_fsync},
        {"fault_rename_truncate", test_persist_fault_rename_truncate},
        {"enospc_keeps_snapshot", test_persist_enospc_keeps_snapshot},
        {"check_stat_foreach", test_persist_check_stat_foreach},
        {"compaction_amortized", test_persist_compaction_amortized},
        {"bg_compaction_pinned", test_persist_bg_compaction_pinned},
        {"bg_compaction_pinned_refs", test_persist_bg_compaction_pinned_refs},
        {"bg_compaction_fails", test_persist_bg_compaction_fails},
        {"bg_compaction_slots_bounded", test_persist_bg_compaction_slots_bounded},
        {"bg_compaction_fails_busy", test_persist_bg_compaction_fails_busy},
        {"wal_old_only", test_persist_wal_old_only},
        {"wal_old_gap", test_persist_wal_old_gap},
        {"wal_old_damaged", test_persist_wal_old_damaged},
        {"wal_old_stale_damaged", test_persist_wal_old_stale_damaged},
        {"crash_compacting", test_persist_crash_compacting},
        {"power_loss_compacting", test_persist_power_loss_compacting},
        {"segments_round_trip", test_persist_segments_round_trip},
        {"segments_damage", test_persist_segments_damage},
        {"segments_snapshot_flips", test_persist_segments_snapshot_flips},
        {"segments_bad_refs", test_persist_segments_bad_refs},
        {"segments_orphans", test_persist_segments_orphans},
        {"segments_bounded", test_persist_segments_bounded},
        {"segments_faults", test_persist_segments_faults},
        {"segments_power_loss", test_persist_segments_power_loss},
        {"segments_close_self_contained",
         test_persist_segments_close_self_contained},
        {"segments_old_snapshot_kept", test_persist_segments_old_snapshot_kept},
        {"segments_vec_damage", test_persist_segments_vec_damage},
        {"segments_no_links", test_persist_segments_no_links},
        {"segments_no_links_reopened", test_persist_segments_no_links_reopened},
        {"segments_crash_cycles", test_persist_segments_crash_cycles},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 600);
        tcase_add_test(tc, cases[i].t);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return tu_run(persist_suite());
}
