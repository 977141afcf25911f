/*
 * tests/unit/check_wal.c - the write-ahead log on real files: round trips,
 * torn tails, the bad-frame policy, I/O fault sweeps, group commit, the
 * sync policies and simulated power loss.
 *
 * Payloads are derived from a 64-bit id stored in their first 8 bytes, so
 * every replayed frame can be checked byte for byte and attributed to the
 * append that wrote it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "durable_int.h"
#include "iqdb_int.h"
#include "testutil.h"
#include "wal_int.h"

/* The documented layout (wal.c), for crafting and locating damage. */
#define HDR 40u
#define FHDR 32u
#define BIG_ID ((uint64_t)1 << 62) /* ids with this bit get large payloads */
/* and with this one, payloads past the 512 KiB pieces that a frame under
 * ALWAYS is written and handed to the device in (wal.c, frame_write) */
#define HUGE_ID ((uint64_t)1 << 61)

/* ---- helpers ------------------------------------------------------------ */

static char *mktmp(void)
{
    char *d = strdup("/tmp/iqdb-wal-XXXXXX");
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

static int rm_one(const char *p, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void rmtmp(char *d)
{
    nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(d);
}

static char *wal_path(const char *dir)
{
    size_t n = strlen(dir) + 16;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/" IQDB_WAL_FILE, dir);
    return p;
}

static unsigned char *file_get(const char *path, size_t *n)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    unsigned char *b = malloc((size_t)st.st_size + 1);
    ck_assert_ptr_nonnull(b);
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(read(fd, b, (size_t)st.st_size), st.st_size);
    close(fd);
    *n = (size_t)st.st_size;
    return b;
}

/* Replace path's content (no sync: the tests reopen in this process). */
static void file_put(const char *path, const void *b, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, b, n), (ssize_t)n);
    close(fd);
}

static off_t file_size(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return st.st_size;
}

/* Close w and cut its file back to the log, without the zero-filled
 * preallocation: the layout of a WAL written before preallocation, which
 * must replay the same, and a file whose end is the end of the log for
 * tests that add bytes there. */
static void close_trimmed(iqdb_wal *w, const char *path)
{
    uint64_t n = iqdb__wal_size(w);
    iqdb__wal_close(w);
    ck_assert_int_eq(truncate(path, (off_t)n), 0);
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t gen_len(uint64_t id)
{
    uint64_t h = mix(id);
    if (id & HUGE_ID)
        return 8 + 1200000 + (size_t)(h % 300000);
    return (id & BIG_ID) ? 8 + (size_t)(h % 300000) : 8 + (size_t)(h % 120);
}

static void gen(uint64_t id, unsigned char *buf)
{
    size_t n = gen_len(id);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(id >> (8 * i));
    uint64_t s = id;
    for (size_t i = 8; i < n; i++)
        buf[i] = (unsigned char)tu_next(&s);
}

static size_t frame_size(uint64_t id)
{
    return FHDR + ((gen_len(id) + 7) & ~(size_t)7);
}

struct got {
    uint64_t *seq, *id;
    size_t n, cap;
    size_t bad; /* frames whose payload is not what its id says */
};

static int collect(void *arg, uint64_t seq, const void *p, size_t len)
{
    struct got *g = arg;
    const unsigned char *b = p;
    uint64_t id = UINT64_MAX;
    if (len >= 8) {
        id = 0;
        for (int i = 7; i >= 0; i--)
            id = id << 8 | b[i];
        unsigned char *want = malloc(gen_len(id));
        ck_assert_ptr_nonnull(want);
        gen(id, want);
        if (len != gen_len(id) || memcmp(want, b, len) != 0)
            g->bad++;
        free(want);
    }
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 64;
        g->seq = realloc(g->seq, g->cap * sizeof *g->seq);
        g->id = realloc(g->id, g->cap * sizeof *g->id);
        ck_assert(g->seq && g->id);
    }
    g->seq[g->n] = seq;
    g->id[g->n] = id;
    g->n++;
    return 0;
}

static void got_free(struct got *g)
{
    free(g->seq);
    free(g->id);
    memset(g, 0, sizeof *g);
}

/* The suite runs twice: every test with the file ending at the log, then
 * with zero preallocation (iqdb_wal_options.prealloc), where the rules
 * must come out the same. */
static int g_prealloc;

static int open_as_configured(const char *dir, const iqdb_wal_options *o,
                              iqdb_wal **w)
{
    int r = iqdb__wal_open(dir, o, w);
    if (r == 0 && w != NULL)
        iqdb__wal_set_prealloc(*w, g_prealloc);
    return r;
}
#define iqdb__wal_open open_as_configured

static iqdb_wal_options opts(int sync, int create)
{
    iqdb_wal_options o = {sync, 5, create, 0, 1, NULL};
    return o;
}

static iqdb_wal *wal_new(const char *dir, int sync)
{
    iqdb_wal_options o = opts(sync, 1);
    iqdb_wal *w = NULL;
    int r = iqdb__wal_open(dir, &o, &w);
    ck_assert_msg(r == 0, "open: %s", iqdb__last_error());
    ck_assert_ptr_nonnull(w);
    return w;
}

static int append_id(iqdb_wal *w, uint64_t id, uint64_t *seq)
{
    unsigned char *b = malloc(gen_len(id));
    ck_assert_ptr_nonnull(b);
    gen(id, b);
    int r = iqdb__wal_append(w, b, gen_len(id), seq);
    free(b);
    return r;
}

static int write_id(iqdb_wal *w, uint64_t id, uint64_t *seq)
{
    unsigned char *b = malloc(gen_len(id));
    ck_assert_ptr_nonnull(b);
    gen(id, b);
    int r = iqdb__wal_write(w, b, gen_len(id), seq);
    free(b);
    return r;
}

/* Open dir's WAL and replay it into g; returns replay's code. */
static int reopen_replay(const char *dir, unsigned flags, struct got *g,
                         iqdb_wal_replay_info *info, iqdb_wal **keep)
{
    iqdb_wal_options o = opts(IQDB_WAL_ALWAYS, 0);
    iqdb_wal *w = NULL;
    int r = iqdb__wal_open(dir, &o, &w);
    ck_assert_msg(r == 0, "reopen: %s", iqdb__last_error());
    r = iqdb__wal_replay(w, flags, collect, g, info);
    if (keep != NULL)
        *keep = w;
    else
        iqdb__wal_close(w);
    return r;
}

/* ---- round trips -------------------------------------------------------- */

START_TEST(test_wal_round_trip)
{
    iqdb__io_reset();
    char *d = mktmp();
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    ck_assert_int_eq(iqdb__wal_next_seq(w), 1);
    ck_assert_uint_eq(iqdb__wal_size(w), HDR);
    uint64_t ids[400];
    uint64_t expect_size = HDR;
    for (uint64_t i = 0; i < 400; i++) {
        ids[i] = i % 37 == 5 ? (i | BIG_ID) : i;
        uint64_t seq;
        ck_assert_int_eq(append_id(w, ids[i], &seq), 0);
        ck_assert_uint_eq(seq, i + 1);
        expect_size += frame_size(ids[i]);
    }
    ck_assert_uint_eq(iqdb__wal_size(w), expect_size);
    ck_assert_int_eq(iqdb__wal_close(w), 0);

    struct got g = {0};
    iqdb_wal_replay_info info;
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, &w), 0);
    ck_assert_uint_eq(g.n, 400);
    ck_assert_uint_eq(g.bad, 0);
    for (size_t i = 0; i < 400; i++) {
        ck_assert_uint_eq(g.id[i], ids[i]);
        ck_assert_uint_eq(g.seq[i], i + 1);
    }
    ck_assert_uint_eq(info.frames, 400);
    ck_assert_uint_eq(info.first_seq, 1);
    ck_assert_uint_eq(info.next_seq, 401);
    ck_assert_uint_eq(info.valid_end, expect_size);
    ck_assert_uint_eq(info.truncated_bytes, 0);
    ck_assert_ptr_null(info.damage);
    /* Appends continue the sequence after a replay. */
    uint64_t seq;
    ck_assert_int_eq(append_id(w, 7777, &seq), 0);
    ck_assert_uint_eq(seq, 401);
    ck_assert_int_eq(iqdb__wal_close(w), 0);
    got_free(&g);
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), 0);
    ck_assert_uint_eq(g.n, 401);
    ck_assert_uint_eq(g.id[400], 7777);
    got_free(&g);
    rmtmp(d);
}
END_TEST

static int count_frames(void *arg, uint64_t seq, const void *p, size_t len)
{
    (void)seq;
    (void)p;
    ck_assert_uint_eq(len, 0);
    (*(int *)arg)++;
    return 0;
}

static int stop_at_three(void *arg, uint64_t seq, const void *p, size_t len)
{
    (void)arg;
    (void)p;
    (void)len;
    return seq == 3 ? 12345 : 0;
}

START_TEST(test_wal_zero_length_and_callback_stop)
{
    iqdb__io_reset();
    char *d = mktmp();
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(iqdb__wal_append(w, NULL, 0, NULL), 0);
    ck_assert_uint_eq(iqdb__wal_size(w), HDR + 5 * FHDR);
    ck_assert_int_eq(iqdb__wal_append(w, NULL, 1, NULL), IQDB_EINVAL);
    ck_assert_int_eq(iqdb__wal_append(w, "x", IQDB_WAL_MAX_PAYLOAD + 1, NULL),
                     IQDB_ERANGE);
    iqdb__wal_close(w);

    iqdb_wal_options o = opts(IQDB_WAL_ALWAYS, 0);
    ck_assert_int_eq(iqdb__wal_open(d, &o, &w), 0);
    /* A callback's non-zero value stops replay and leaves the file. */
    ck_assert_int_eq(iqdb__wal_replay(w, 0, stop_at_three, NULL, NULL), 12345);
    int n = 0;
    ck_assert_int_eq(iqdb__wal_replay(w, 0, count_frames, &n, NULL), 0);
    ck_assert_int_eq(n, 5);
    iqdb__wal_close(w);
    ck_assert_int_eq(iqdb__wal_close(NULL), 0);
    rmtmp(d);
}
END_TEST

/* ---- opening ------------------------------------------------------------ */

static void put_header(const char *path, uint32_t version, uint32_t res,
                       uint64_t base, int good_crc)
{
    unsigned char h[HDR] = "IQDBWAL";
    for (int i = 0; i < 4; i++) {
        h[8 + i] = (unsigned char)(version >> (8 * i));
        h[12 + i] = (unsigned char)(res >> (8 * i));
    }
    for (int i = 0; i < 8; i++) {
        h[16 + i] = (unsigned char)(0x1234567890ull >> (8 * i));
        h[24 + i] = (unsigned char)(base >> (8 * i));
    }
    uint32_t c = iqdb__crc32c(0, h, 32) ^ (good_crc ? 0u : 1u);
    for (int i = 0; i < 4; i++)
        h[32 + i] = (unsigned char)(c >> (8 * i));
    file_put(path, h, HDR);
}

static int try_open(const char *dir, const iqdb_wal_options *o)
{
    iqdb_wal *w = NULL;
    int r = iqdb__wal_open(dir, o, &w);
    if (r == 0)
        iqdb__wal_close(w);
    else
        ck_assert_ptr_null(w);
    return r;
}

START_TEST(test_wal_open_errors)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = wal_path(d);
    iqdb_wal_options o = opts(IQDB_WAL_ALWAYS, 0);
    iqdb_wal *w = NULL;
    ck_assert_int_eq(try_open(d, &o), IQDB_ENOTFOUND);
    o.readonly = 1;
    o.create = 1;
    ck_assert_int_eq(try_open(d, &o), IQDB_ENOTFOUND);
    o = opts(7, 1);
    ck_assert_int_eq(try_open(d, &o), IQDB_EINVAL);
    o = opts(IQDB_WAL_PERIODIC, 1);
    o.period_ms = 0;
    ck_assert_int_eq(try_open(d, &o), IQDB_EINVAL);
    ck_assert_int_eq(iqdb__wal_open(NULL, NULL, &w), IQDB_EINVAL);
    ck_assert_int_eq(iqdb__wal_open(d, NULL, NULL), IQDB_EINVAL);
    ck_assert_int_eq(access(p, F_OK), -1); /* nothing created */

    o = opts(IQDB_WAL_ALWAYS, 1);
    file_put(p, "hello, I am not a log at all, just some text....", 48);
    ck_assert_int_eq(try_open(d, &o), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), p));
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "magic"));
    file_put(p, "IQDBWAL", 8);
    ck_assert_int_eq(try_open(d, &o), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "shorter"));
    file_put(p, "", 0);
    ck_assert_int_eq(try_open(d, &o), IQDB_ECORRUPT);
    put_header(p, 2, 0, 1, 1);
    ck_assert_int_eq(try_open(d, &o), IQDB_ENOTSUP);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "version 2"));
    put_header(p, 1, 0, 1, 0);
    ck_assert_int_eq(try_open(d, &o), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "checksum"));
    put_header(p, 1, 9, 1, 1);
    ck_assert_int_eq(try_open(d, &o), IQDB_ECORRUPT);
    put_header(p, 1, 0, 0, 1);
    ck_assert_int_eq(try_open(d, &o), IQDB_ECORRUPT);
    put_header(p, 0, 0, 1, 1);
    ck_assert_int_eq(try_open(d, &o), IQDB_ECORRUPT);
    /* A base sequence number sequence numbers could wrap from. */
    put_header(p, 1, 0, UINT64_MAX - 1, 1);
    ck_assert_int_eq(try_open(d, &o), IQDB_ECORRUPT);
    put_header(p, 1, 0, (UINT64_MAX >> 1) + 1, 1);
    ck_assert_int_eq(try_open(d, &o), IQDB_ECORRUPT);
    put_header(p, 1, 0, UINT64_MAX >> 1, 1);
    ck_assert_int_eq(try_open(d, &o), 0);
    put_header(p, 1, 0, 77, 1);
    ck_assert_int_eq(iqdb__wal_open(d, &o, &w), 0);
    ck_assert_int_eq(iqdb__wal_replay(w, 0, NULL, NULL, NULL), 0);
    ck_assert_uint_eq(iqdb__wal_next_seq(w), 77);
    iqdb__wal_close(w);
    unlink(p);
    ck_assert_int_eq(mkdir(p, 0755), 0); /* a directory named wal */
    ck_assert_int_ne(try_open(d, &o), 0);
    rmdir(p);

    /* first_seq for a new WAL; a stale temporary is removed. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/" IQDB_WAL_TMP_FILE, d);
    o.first_seq = 1000;
    ck_assert_int_eq(iqdb__wal_open(d, &o, &w), 0);
    uint64_t seq;
    ck_assert_int_eq(append_id(w, 1, &seq), 0);
    ck_assert_uint_eq(seq, 1000);
    iqdb__wal_close(w);
    file_put(tmp, "junk", 4);
    ck_assert_int_eq(try_open(d, &o), 0);
    ck_assert_int_eq(access(tmp, F_OK), -1);
    free(p);
    rmtmp(d);
}
END_TEST

START_TEST(test_wal_replay_rules)
{
    iqdb__io_reset();
    char *d = mktmp();
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    ck_assert_int_eq(append_id(w, 1, NULL), 0);
    /* Replay after an append would deliver frames twice. */
    ck_assert_int_eq(iqdb__wal_replay(w, 0, NULL, NULL, NULL), IQDB_EINVAL);
    iqdb__wal_close(w);
    iqdb_wal_options o = opts(IQDB_WAL_ALWAYS, 0);
    ck_assert_int_eq(iqdb__wal_open(d, &o, &w), 0);
    /* An existing WAL must be replayed before appending or resetting. */
    ck_assert_int_eq(append_id(w, 2, NULL), IQDB_EINVAL);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "replay"));
    ck_assert_int_eq(iqdb__wal_reset(w), IQDB_EINVAL);
    ck_assert_int_eq(iqdb__wal_replay(w, 0, NULL, NULL, NULL), 0);
    ck_assert_int_eq(append_id(w, 2, NULL), 0);
    ck_assert_int_eq(iqdb__wal_wait(w, 99), IQDB_EINVAL);
    char *p = wal_path(d);
    close_trimmed(w, p);

    /* Read-only: replays, never changes the file, refuses writes. */
    off_t before = file_size(p);
    int fd = open(p, O_WRONLY | O_APPEND);
    ck_assert_int_eq(write(fd, "torn", 4), 4);
    close(fd);
    o.readonly = 1;
    ck_assert_int_eq(iqdb__wal_open(d, &o, &w), 0);
    struct got g = {0};
    iqdb_wal_replay_info info;
    ck_assert_int_eq(iqdb__wal_replay(w, 0, collect, &g, &info), 0);
    ck_assert_uint_eq(g.n, 2);
    ck_assert_uint_eq(info.truncated_bytes, 4);
    ck_assert_int_eq(file_size(p), before + 4);
    ck_assert_int_eq(append_id(w, 3, NULL), IQDB_EREADONLY);
    ck_assert_int_eq(iqdb__wal_reset(w), IQDB_EREADONLY);
    ck_assert_int_eq(iqdb__wal_failed(w), IQDB_EREADONLY);
    ck_assert_int_eq(iqdb__wal_sync(w), 0);
    iqdb__wal_close(w);
    got_free(&g);
    free(p);
    rmtmp(d);
}
END_TEST

/* ---- reset -------------------------------------------------------------- */

START_TEST(test_wal_reset)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = wal_path(d);
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    for (uint64_t i = 0; i < 10; i++)
        ck_assert_int_eq(append_id(w, i, NULL), 0);
    uint64_t oldlog = iqdb__wal_size(w);
    size_t oldn;
    unsigned char *old = file_get(p, &oldn);
    ck_assert_int_eq(iqdb__wal_reset(w), 0);
    ck_assert_uint_eq(iqdb__wal_size(w), HDR);
    ck_assert_int_eq(file_size(p), HDR);
    ck_assert_uint_eq(iqdb__wal_next_seq(w), 11);
    for (uint64_t i = 100; i < 105; i++)
        ck_assert_int_eq(append_id(w, i, NULL), 0);
    iqdb__wal_close(w);

    struct got g = {0};
    iqdb_wal_replay_info info;
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), 0);
    ck_assert_uint_eq(g.n, 5);
    ck_assert_uint_eq(info.first_seq, 11);
    for (size_t i = 0; i < 5; i++) {
        ck_assert_uint_eq(g.seq[i], 11 + i);
        ck_assert_uint_eq(g.id[i], 100 + i);
    }
    got_free(&g);

    /* Frames of the old file, even with the right sequence numbers, do
     * not pass for frames of the new one: their checksums carry the old
     * salt. Put the old frames after the new header. */
    size_t newn;
    unsigned char *cur = file_get(p, &newn);
    unsigned char *mixd = malloc(HDR + oldn);
    memcpy(mixd, cur, HDR);
    memcpy(mixd + HDR, old + HDR, oldn - HDR);
    file_put(p, mixd, oldn);
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), 0);
    ck_assert_uint_eq(g.n, 0);
    /* The old file's zero preallocation is not damage. */
    ck_assert_uint_eq(info.truncated_bytes, oldlog - HDR);
    ck_assert_uint_eq(info.later_frames, 0);
    ck_assert_int_eq(file_size(p), HDR);
    got_free(&g);

    /* Nor do frames of another WAL with exactly the expected sequence
     * numbers (stale blocks of another file showing up after a crash). */
    char *d2 = mktmp(), *p2 = wal_path(d2);
    iqdb_wal_options o = opts(IQDB_WAL_ALWAYS, 1);
    o.first_seq = 11;
    ck_assert_int_eq(iqdb__wal_open(d2, &o, &w), 0);
    for (uint64_t i = 200; i < 205; i++)
        ck_assert_int_eq(append_id(w, i, NULL), 0);
    iqdb__wal_close(w);
    size_t n2;
    unsigned char *other = file_get(p2, &n2);
    unsigned char *mix2 = malloc(n2);
    memcpy(mix2, cur, HDR);
    memcpy(mix2 + HDR, other + HDR, n2 - HDR);
    file_put(p, mix2, n2);
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), 0);
    ck_assert_uint_eq(g.n, 0);
    ck_assert_str_eq(info.damage, "frame header checksum mismatch");
    got_free(&g);
    free(other);
    free(mix2);
    free(p2);
    rmtmp(d2);
    free(old);
    free(cur);
    free(mixd);
    free(p);
    rmtmp(d);
}
END_TEST

/* ---- preallocation ------------------------------------------------------ */

/* Frames are written into a zero-filled preallocation; replay ends
 * cleanly at the zeros, keeps them, and appends go on in place. */
START_TEST(test_wal_prealloc_clean_end)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = wal_path(d);
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    for (uint64_t i = 0; i < 5; i++)
        ck_assert_int_eq(append_id(w, i, NULL), 0);
    uint64_t logical = iqdb__wal_size(w);
    off_t phys = file_size(p);
    ck_assert_int_ge(phys, (off_t)(64u << 10)); /* the first, smallest extension */
    iqdb__wal_close(w);

    struct got g = {0};
    iqdb_wal_replay_info info;
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, &w), 0);
    ck_assert_uint_eq(g.n, 5);
    ck_assert_ptr_null(info.damage);
    ck_assert_uint_eq(info.truncated_bytes, 0);
    ck_assert_uint_eq(info.later_frames, 0);
    ck_assert_uint_eq(info.valid_end, logical);
    ck_assert_uint_eq(info.file_size, logical);
    ck_assert_uint_eq(iqdb__wal_size(w), logical);
    ck_assert_int_eq(file_size(p), phys); /* the zeros stay */

    /* In place: one write and one sync per frame, no growth. */
    iqdb__io_reset();
    for (uint64_t i = 5; i < 10; i++)
        ck_assert_int_eq(append_id(w, i, NULL), 0);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_WRITE), 5);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_FSYNC), 5);
    ck_assert_int_eq(file_size(p), phys);
    ck_assert_uint_gt(iqdb__wal_size(w), logical);
    logical = iqdb__wal_size(w);
    iqdb__wal_close(w);
    got_free(&g);

    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), 0);
    ck_assert_uint_eq(g.n, 10);
    for (size_t i = 0; i < 10; i++) {
        ck_assert_uint_eq(g.id[i], i);
        ck_assert_uint_eq(g.seq[i], i + 1);
    }
    ck_assert_ptr_null(info.damage);
    ck_assert_uint_eq(info.valid_end, logical);
    got_free(&g);

    /* A big frame passing the zeros goes at the end without any; the
     * next small one extends again. */
    w = NULL;
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, &w), 0);
    size_t big = (5u << 20) + 3;
    unsigned char *b = calloc(big, 1);
    ck_assert_ptr_nonnull(b);
    memset(b, 0xa5, big);
    ck_assert_int_eq(iqdb__wal_append(w, b, big, NULL), 0);
    ck_assert_int_ge(file_size(p), (off_t)(logical + FHDR + big));
    ck_assert_int_eq(append_id(w, 11, NULL), 0);
    ck_assert_int_ge(file_size(p), (off_t)(iqdb__wal_size(w) + (4u << 20)));
    logical = iqdb__wal_size(w);
    iqdb__wal_close(w);
    got_free(&g);
    free(b);
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), 0);
    ck_assert_uint_eq(g.n, 12);
    ck_assert_uint_eq(g.id[11], 11);
    ck_assert_ptr_null(info.damage);
    ck_assert_uint_eq(info.valid_end, logical);
    got_free(&g);
    free(p);
    rmtmp(d);
}
END_TEST

/* A torn last frame inside the preallocation: the torn bytes are damage
 * (truncated, and only they are counted), the zeros after them are not. */
START_TEST(test_wal_prealloc_torn_then_zeros)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = wal_path(d);
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    for (uint64_t i = 0; i < 7; i++)
        ck_assert_int_eq(append_id(w, i, NULL), 0);
    uint64_t last = iqdb__wal_size(w);
    ck_assert_int_eq(append_id(w, 7 | BIG_ID, NULL), 0);
    uint64_t end = iqdb__wal_size(w);
    iqdb__wal_close(w);

    /* Only the first half of the last frame reached the disk. */
    uint64_t keep = ((end - last) / 2) & ~(uint64_t)7;
    size_t zn = (size_t)(end - last - keep);
    unsigned char *z = calloc(zn, 1);
    int fd = open(p, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, z, zn, (off_t)(last + keep)), (ssize_t)zn);
    close(fd);
    free(z);

    struct got g = {0};
    iqdb_wal_replay_info info;
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, &w), 0);
    ck_assert_uint_eq(g.n, 7);
    ck_assert_ptr_nonnull(info.damage);
    ck_assert_uint_eq(info.valid_end, last);
    ck_assert_uint_gt(info.truncated_bytes, 0);
    ck_assert_uint_le(info.truncated_bytes, keep);
    ck_assert_uint_eq(info.file_size, last + info.truncated_bytes);
    ck_assert_uint_eq(info.later_frames, 0);
    ck_assert_int_eq(file_size(p), (off_t)last);

    /* Appending re-extends, and the next replay ends cleanly. */
    ck_assert_int_eq(append_id(w, 70, NULL), 0);
    ck_assert_int_gt(file_size(p), (off_t)iqdb__wal_size(w));
    iqdb__wal_close(w);
    got_free(&g);
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), 0);
    ck_assert_uint_eq(g.n, 8);
    ck_assert_uint_eq(g.id[7], 70);
    ck_assert_ptr_null(info.damage);
    got_free(&g);
    free(p);
    rmtmp(d);
}
END_TEST

/* Zeros in the middle of the log are damage, not an end: durable frames
 * after them still prove acknowledged data was lost. */
START_TEST(test_wal_prealloc_zero_gap)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = wal_path(d);
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    uint64_t off[11];
    for (uint64_t i = 0; i < 10; i++) {
        off[i] = iqdb__wal_size(w);
        ck_assert_int_eq(append_id(w, i, NULL), 0);
    }
    off[10] = iqdb__wal_size(w);
    iqdb__wal_close(w);
    size_t zn = (size_t)(off[6] - off[5]);
    unsigned char *z = calloc(zn, 1);
    int fd = open(p, O_WRONLY);
    ck_assert_int_eq(pwrite(fd, z, zn, (off_t)off[5]), (ssize_t)zn);
    close(fd);
    free(z);
    struct got g = {0};
    iqdb_wal_replay_info info;
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), IQDB_ECORRUPT);
    ck_assert_uint_eq(info.valid_end, off[5]);
    ck_assert_uint_eq(info.later_frames, 4);
    ck_assert_uint_gt(info.later_durable, 0);
    ck_assert_uint_eq(info.truncated_bytes, off[10] - off[5]);
    got_free(&g);
    ck_assert_int_eq(reopen_replay(d, IQDB_WAL_REPLAY_SALVAGE, &g, &info,
                                   NULL), 0);
    ck_assert_uint_eq(g.n, 5);
    ck_assert_int_eq(file_size(p), (off_t)off[5]);
    got_free(&g);
    free(p);
    rmtmp(d);
}
END_TEST

/* After a reset the new file is extended once by its first frame; later
 * frames go in place, and replay finds exactly the new frames. */
START_TEST(test_wal_prealloc_after_reset)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = wal_path(d);
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    for (uint64_t i = 0; i < 10; i++)
        ck_assert_int_eq(append_id(w, i, NULL), 0);
    ck_assert_int_eq(iqdb__wal_reset(w), 0);
    ck_assert_uint_eq(iqdb__wal_size(w), HDR);
    ck_assert_int_eq(append_id(w, 100, NULL), 0);
    off_t phys = file_size(p);
    ck_assert_int_ge(phys, (off_t)(64u << 10)); /* the first, smallest extension */
    iqdb__io_reset();
    for (uint64_t i = 101; i < 120; i++)
        ck_assert_int_eq(append_id(w, i, NULL), 0);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_FSYNC), 19);
    ck_assert_int_eq(file_size(p), phys);
    uint64_t logical = iqdb__wal_size(w);
    iqdb__wal_close(w);
    struct got g = {0};
    iqdb_wal_replay_info info;
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), 0);
    ck_assert_uint_eq(g.n, 20);
    ck_assert_uint_eq(info.first_seq, 11);
    ck_assert_uint_eq(g.id[0], 100);
    ck_assert_uint_eq(g.id[19], 119);
    ck_assert_ptr_null(info.damage);
    ck_assert_uint_eq(info.valid_end, logical);
    ck_assert_int_eq(file_size(p), phys);
    got_free(&g);
    free(p);
    rmtmp(d);
}
END_TEST

/* ---- torn tails --------------------------------------------------------- */

enum { TORN_N = 64 };

struct torn {
    char *dir, *path;
    unsigned char *pristine;
    size_t size;
    size_t off[TORN_N + 1]; /* frame k starts at off[k]; off[N] = end */
};

/* 64 frames, ids 0..63: the first 61 each appended and synced alone, the
 * last 3 written together and synced by one group commit - the state a
 * crash in the middle of that group commit would find. */
static void torn_build(struct torn *t, int sync_each)
{
    t->dir = mktmp();
    t->path = wal_path(t->dir);
    iqdb_wal *w = wal_new(t->dir, IQDB_WAL_ALWAYS);
    t->off[0] = HDR;
    uint64_t seq = 0;
    for (uint64_t i = 0; i < TORN_N; i++) {
        if (sync_each || i < TORN_N - 3)
            ck_assert_int_eq(append_id(w, i, &seq), 0);
        else
            ck_assert_int_eq(write_id(w, i, &seq), 0);
        t->off[i + 1] = t->off[i] + frame_size(i);
    }
    ck_assert_int_eq(iqdb__wal_wait(w, seq), 0);
    close_trimmed(w, t->path);
    t->pristine = file_get(t->path, &t->size);
    ck_assert_uint_eq(t->size, t->off[TORN_N]);
}

static void torn_free(struct torn *t)
{
    free(t->pristine);
    free(t->path);
    rmtmp(t->dir);
}

/* Replay a damaged copy (img, n bytes) and check that exactly the frames
 * before frame k survive, the file is cut there, and it accepts appends.
 * With preallocation, zeros from frame k (to 8-byte alignment) to the
 * end are the clean end of the log instead: not damage, not cut. */
static void torn_expect(struct torn *t, const unsigned char *img, size_t n,
                        size_t k, long later, int append_after)
{
    file_put(t->path, img, n);
    struct got g = {0};
    iqdb_wal_replay_info info;
    iqdb_wal *w;
    int r = reopen_replay(t->dir, 0, &g, &info, &w);
    ck_assert_msg(r == 0, "frame %zu: %s", k, iqdb__last_error());
    ck_assert_uint_eq(g.bad, 0);
    ck_assert_msg(g.n == k, "damage in frame %zu: replayed %zu", k, g.n);
    for (size_t i = 0; i < k; i++)
        ck_assert_uint_eq(g.id[i], i);
    ck_assert_uint_eq(info.valid_end, t->off[k]);
    size_t data_end = g_prealloc ? t->off[k] : n;
    for (size_t i = n; g_prealloc && i > t->off[k]; i--) {
        if (img[i - 1] != 0) {
            data_end = (i + 7) & ~(size_t)7;
            break;
        }
    }
    if (data_end > n)
        data_end = n;
    ck_assert_uint_eq(info.truncated_bytes, data_end - t->off[k]);
    if (data_end > t->off[k]) {
        ck_assert_ptr_nonnull(info.damage);
        ck_assert_int_eq(file_size(t->path), (off_t)t->off[k]);
    } else {
        ck_assert_ptr_null(info.damage);
        ck_assert_int_eq(file_size(t->path), (off_t)n);
    }
    if (later >= 0)
        ck_assert_uint_eq(info.later_frames, (uint64_t)later);
    ck_assert_uint_eq(info.later_durable, 0);
    if (append_after) {
        ck_assert_int_eq(append_id(w, 5000, NULL), 0);
        iqdb__wal_close(w);
        got_free(&g);
        ck_assert_int_eq(reopen_replay(t->dir, 0, &g, &info, NULL), 0);
        ck_assert_uint_eq(g.n, k + 1);
        ck_assert_uint_eq(g.id[k], 5000);
    } else {
        iqdb__wal_close(w);
    }
    got_free(&g);
}

START_TEST(test_wal_torn_tail_truncation)
{
    iqdb__io_reset();
    struct torn t;
    torn_build(&t, 0);
    for (size_t k = TORN_N - 3; k < TORN_N; k++)
        for (size_t n = t.off[k]; n < t.off[k + 1]; n++)
            torn_expect(&t, t.pristine, n, k, 0, n % 17 == 0);
    torn_free(&t);
}
END_TEST

START_TEST(test_wal_torn_tail_byte_flips)
{
    iqdb__io_reset();
    struct torn t;
    torn_build(&t, 0);
    unsigned char *img = malloc(t.size);
    for (size_t k = TORN_N - 3; k < TORN_N; k++) {
        for (size_t b = t.off[k]; b < t.off[k + 1]; b++) {
            memcpy(img, t.pristine, t.size);
            img[b] ^= (unsigned char)(1u << (b % 8));
            /* The frames after the damaged one are intact, and reported. */
            torn_expect(&t, img, t.size, k, (long)(TORN_N - 1 - k),
                        b % 29 == 0);
        }
    }
    free(img);
    torn_free(&t);
}
END_TEST

START_TEST(test_wal_torn_tail_fills)
{
    iqdb__io_reset();
    struct torn t;
    torn_build(&t, 0);
    unsigned char *img = malloc(t.size);
    uint64_t seed = 99;
    for (size_t k = TORN_N - 3; k < TORN_N; k++) {
        size_t s = t.off[k], e = t.off[k + 1];
        /* regions: header, payload, whole frame, frame to end of file,
         * a single 8-byte word in the middle */
        size_t reg[5][2] = {{s, s + FHDR},
                            {s + FHDR, e},
                            {s, e},
                            {s, t.size},
                            {s + 8 * ((e - s) / 16), s + 8 * ((e - s) / 16) + 8}};
        for (int r = 0; r < 5; r++) {
            for (int garbage = 0; garbage < 2; garbage++) {
                memcpy(img, t.pristine, t.size);
                for (size_t i = reg[r][0]; i < reg[r][1]; i++)
                    img[i] = garbage ? (unsigned char)tu_next(&seed) : 0;
                if (memcmp(img, t.pristine, t.size) == 0)
                    continue; /* the fill changed nothing */
                torn_expect(&t, img, t.size, k, r == 3 ? 0 : -1, r == 2);
            }
        }
    }
    /* Zeros appended past the end (a file extended but never written). */
    memcpy(img, t.pristine, t.size);
    unsigned char *ext = calloc(t.size + 4096, 1);
    memcpy(ext, t.pristine, t.size);
    torn_expect(&t, ext, t.size + 4096, TORN_N, 0, 1);
    free(ext);
    free(img);
    torn_free(&t);
}
END_TEST

/* ---- the bad-frame policy ----------------------------------------------- */

START_TEST(test_wal_bad_frame_followed_by_good_frames)
{
    iqdb__io_reset();
    struct torn t;
    torn_build(&t, 1); /* every frame synced before the next was written */
    unsigned char *img = malloc(t.size);
    memcpy(img, t.pristine, t.size);
    size_t k = 10;
    img[t.off[k] + FHDR + 3] ^= 0x40;
    file_put(t.path, img, t.size);

    /* Frame 11 was written after frame 10 was durable: 10's damage is
     * corruption of acknowledged data. Refused, file untouched. */
    struct got g = {0};
    iqdb_wal_replay_info info;
    iqdb_wal *w;
    ck_assert_int_eq(reopen_replay(t.dir, 0, &g, &info, &w), IQDB_ECORRUPT);
    char want[64];
    snprintf(want, sizeof want, "offset %zu", t.off[k]);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), want));
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), t.path));
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "frame 11 "));
    ck_assert_uint_eq(g.n, k);
    ck_assert_uint_eq(info.later_frames, TORN_N - 1 - k);
    ck_assert_uint_gt(info.later_durable, 0);
    ck_assert_uint_eq(info.valid_end, t.off[k]);
    size_t n;
    unsigned char *now = file_get(t.path, &n);
    ck_assert_uint_eq(n, t.size);
    ck_assert_mem_eq(now, img, n);
    free(now);
    ck_assert_int_ne(append_id(w, 1, NULL), 0);

    /* Salvage: the caller chooses to drop everything from the damage. */
    got_free(&g);
    ck_assert_int_eq(iqdb__wal_replay(w, IQDB_WAL_REPLAY_SALVAGE, collect, &g,
                                      &info),
                     0);
    ck_assert_uint_eq(g.n, k);
    ck_assert_uint_eq(info.later_frames, TORN_N - 1 - k);
    ck_assert_int_eq(file_size(t.path), (off_t)t.off[k]);
    ck_assert_int_eq(append_id(w, 1, NULL), 0);
    iqdb__wal_close(w);
    got_free(&g);

    /* Damage in the last frame: nothing proves it durable. */
    memcpy(img, t.pristine, t.size);
    img[t.off[TORN_N - 1] + 5] ^= 1;
    torn_expect(&t, img, t.size, TORN_N - 1, 0, 0);
    free(img);
    torn_free(&t);

    /* The same middle damage in a WAL that was never synced frame by frame
     * (NEVER): no frame proves frame 10 durable, so it is treated as a
     * torn write - truncated, and the lost frames reported. */
    char *d = mktmp(), *p = wal_path(d);
    w = wal_new(d, IQDB_WAL_NEVER);
    size_t off10 = HDR;
    for (uint64_t i = 0; i < TORN_N; i++) {
        ck_assert_int_eq(append_id(w, i, NULL), 0);
        if (i < 10)
            off10 += frame_size(i);
    }
    iqdb__wal_close(w);
    size_t sz;
    img = file_get(p, &sz);
    img[off10 + 20] ^= 0x10;
    file_put(p, img, sz);
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), 0);
    ck_assert_uint_eq(g.n, 10);
    ck_assert_uint_eq(info.later_frames, TORN_N - 11);
    ck_assert_uint_eq(info.later_durable, 0);
    ck_assert_int_eq(file_size(p), (off_t)off10);
    got_free(&g);
    free(img);
    free(p);
    rmtmp(d);
}
END_TEST

/* A frame header with a valid checksum claiming a huge payload is bounded
 * by the file, never trusted for an allocation. */
/* A frame header at h, as core/wal.c lays it out, whose header checksum
 * is good for the file whose header is img (its salt at 16..23); the
 * payload checksum is pcrc, whatever the payload. */
static void craft_header(unsigned char *h, const unsigned char *img,
                         uint32_t len, uint64_t seq, uint64_t durable,
                         uint32_t pcrc)
{
    uint32_t mark = 0x52465149u;
    for (int i = 0; i < 4; i++) {
        h[i] = (unsigned char)(mark >> (8 * i));
        h[4 + i] = (unsigned char)(len >> (8 * i));
        h[24 + i] = (unsigned char)(pcrc >> (8 * i));
    }
    for (int i = 0; i < 8; i++) {
        h[8 + i] = (unsigned char)(seq >> (8 * i));
        h[16 + i] = (unsigned char)(durable >> (8 * i));
    }
    uint32_t hc = iqdb__crc32c(iqdb__crc32c(0, img + 16, 8), h, 28);
    for (int i = 0; i < 4; i++)
        h[28 + i] = (unsigned char)(hc >> (8 * i));
}

START_TEST(test_wal_hostile_lengths)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = wal_path(d);
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    ck_assert_int_eq(append_id(w, 1, NULL), 0);
    close_trimmed(w, p);
    size_t n;
    unsigned char *img = file_get(p, &n);
    uint32_t lens[2] = {(uint32_t)IQDB_WAL_MAX_PAYLOAD,
                        (uint32_t)IQDB_WAL_MAX_PAYLOAD + 1};
    const char *why[2] = {"incomplete frame payload",
                          "frame length above the maximum"};
    for (int c = 0; c < 2; c++) {
        unsigned char *f = calloc(n + FHDR + 64, 1);
        memcpy(f, img, n);
        craft_header(f + n, img, lens[c], 2, 1, 0);
        file_put(p, f, n + FHDR + 64);
        struct got g = {0};
        iqdb_wal_replay_info info;
        ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), 0);
        ck_assert_uint_eq(g.n, 1);
        ck_assert_str_eq(info.damage, why[c]);
        ck_assert_int_eq(file_size(p), (off_t)n);
        got_free(&g);
        free(f);
    }
    free(img);
    free(p);
    rmtmp(d);
}
END_TEST

/* Past damage, frame headers stacked back to back, each checking out and
 * claiming a payload to the end of the file: checksumming every claim
 * would take time quadratic in the file's size, so the scan stops at its
 * budget and the damage is not taken for a torn write (strict replay
 * refuses, salvage cuts it off as acknowledged damage). */
START_TEST(test_wal_scan_budget)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = wal_path(d);
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    for (uint64_t id = 1; id <= 3; id++)
        ck_assert_int_eq(append_id(w, id, NULL), 0);
    close_trimmed(w, p);
    size_t n;
    unsigned char *img = file_get(p, &n);
    /* 1 MiB of stacked headers after one byte of damage at n; each
     * claims the rest of the file, with a payload checksum that never
     * matches. */
    size_t total = n + ((size_t)1 << 20);
    unsigned char *f = calloc(total, 1);
    memcpy(f, img, n);
    f[n] = 0xee; /* the damage: a bad marker */
    size_t stacked = 0;
    for (size_t o = n + 8; o + FHDR <= total; o += FHDR, stacked++)
        craft_header(f + o, img, (uint32_t)(total - o - FHDR) & ~7u, 5, 3,
                     1);
    ck_assert_uint_gt(stacked, 30000);
    file_put(p, f, total);
    struct got g = {0};
    iqdb_wal_replay_info info;
    ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), IQDB_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "cut short"));
    ck_assert_uint_gt(info.scan_cut, n);
    ck_assert_int_eq(file_size(p), (off_t)total); /* left as it is */
    got_free(&g);
    memset(&g, 0, sizeof g);
    ck_assert_int_eq(reopen_replay(d, IQDB_WAL_REPLAY_SALVAGE, &g, &info,
                                   NULL),
                     0);
    ck_assert_uint_eq(g.n, 3);
    ck_assert_uint_eq(info.later_durable, 1);
    ck_assert_int_eq(file_size(p), (off_t)n);
    got_free(&g);
    free(f);
    free(img);
    free(p);
    rmtmp(d);
}
END_TEST

/* ---- fault injection ---------------------------------------------------- */

struct run {
    uint64_t seq[32], id[32];
    size_t nacked;
    uint64_t reset_at;  /* next_seq when the reset was attempted, 0: none */
    int reset_ok;
    uint64_t attempted; /* id of the append in flight at the failure */
    int failed;         /* the error code seen, 0 if none */
};

/* Failures seen at the write-back started for a piece of a large frame. */
static int kick_failures;

/* Create a WAL, append 6 frames, reset, append 6 more (the third of each
 * six over 1.2 MB, so written in pieces under ALWAYS); stop at the first
 * failure after checking the failed handle's behaviour. */
static void workload(const char *dir, int sync, int want_code, struct run *r)
{
    memset(r, 0, sizeof *r);
    r->attempted = UINT64_MAX;
    iqdb_wal_options o = opts(sync, 1);
    iqdb_wal *w = NULL;
    int rc = iqdb__wal_open(dir, &o, &w);
    if (rc != 0) {
        ck_assert_msg(rc == want_code, "open: %d %s", rc, iqdb__last_error());
        r->failed = rc;
        return;
    }
    for (uint64_t i = 0; i < 12 && rc == 0; i++) {
        if (i == 6) {
            r->reset_at = iqdb__wal_next_seq(w);
            rc = iqdb__wal_reset(w);
            if (rc != 0)
                break;
            r->reset_ok = 1;
        }
        uint64_t seq, id = i == 2 || i == 9 ? i | HUGE_ID : i;
        r->attempted = id;
        rc = append_id(w, id, &seq);
        if (rc == 0) {
            r->seq[r->nacked] = seq;
            r->id[r->nacked++] = id;
        }
    }
    if (rc != 0) {
        ck_assert_msg(rc == want_code, "got %d want %d: %s", rc, want_code,
                      iqdb__last_error());
        ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "failed"));
        kick_failures +=
            strstr(iqdb__last_error(), "write-back of frame") != NULL;
        r->failed = rc;
        ck_assert_int_eq(iqdb__wal_failed(w), want_code);
        ck_assert_int_eq(append_id(w, 99, NULL), IQDB_EREADONLY);
        ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "refuses writes"));
        ck_assert_int_eq(iqdb__wal_reset(w), IQDB_EREADONLY);
        ck_assert_int_eq(append_id(w, 98, NULL), IQDB_EREADONLY);
    }
    iqdb__wal_close(w);
}

/* After the run, without faults: the WAL replays exactly the acknowledged
 * frames (of the current file: after a completed reset, those after it;
 * after a failed reset, either all or none of those before it). With
 * extra_ok, the one unacknowledged frame in flight may also appear. */
static void verify(const char *dir, const struct run *r, int extra_ok)
{
    iqdb_wal_options o = opts(IQDB_WAL_ALWAYS, 1);
    iqdb_wal *w = NULL;
    ck_assert_msg(iqdb__wal_open(dir, &o, &w) == 0, "reopen: %s",
                  iqdb__last_error());
    struct got g = {0};
    ck_assert_msg(iqdb__wal_replay(w, 0, collect, &g, NULL) == 0,
                  "replay: %s", iqdb__last_error());
    iqdb__wal_close(w);
    ck_assert_uint_eq(g.bad, 0);
    size_t from = 0;
    if (r->reset_at != 0) {
        while (from < r->nacked && r->seq[from] < r->reset_at)
            from++;
        /* A failed reset may or may not have replaced the file. */
        if (!r->reset_ok && g.n == 0)
            from = r->nacked;
        else if (!r->reset_ok)
            from = 0;
    }
    size_t want = r->nacked - from;
    if (extra_ok && g.n == want + 1) {
        ck_assert_uint_eq(g.id[want], r->attempted);
    } else {
        ck_assert_msg(g.n == want, "replayed %zu frames, acknowledged %zu",
                      g.n, want);
    }
    for (size_t i = 0; i < want; i++) {
        ck_assert_uint_eq(g.id[i], r->id[from + i]);
        ck_assert_uint_eq(g.seq[i], r->seq[from + i]);
    }
    got_free(&g);
}

/* For every n: the n-th operation of kind op fails with err. */
static void sweep(int op, int err, int sync, int cut_fails, long min_points)
{
    long n;
    int code = iqdb__io_status(err);
    for (n = 0;; n++) {
        char *d = mktmp();
        struct run r;
        iqdb__io_reset();
        iqdb__io_fail_nth(op, n, err);
        if (cut_fails)
            iqdb__io_fail_nth(IQDB_IO_OP_FTRUNCATE, 0, EIO);
        workload(d, sync, code, &r);
        int fired = iqdb__io_count(op) > n;
        iqdb__io_reset();
        ck_assert_int_eq(fired, r.failed != 0);
        /* A failed sync whose cut-back failed too leaves its frame. */
        verify(d, &r, cut_fails && op == IQDB_IO_OP_FSYNC);
        rmtmp(d);
        if (!fired)
            break;
    }
    ck_assert_int_ge(n, min_points); /* the sweep reached the appends */
}

START_TEST(test_wal_fault_write)
{
    sweep(IQDB_IO_OP_WRITE, EIO, IQDB_WAL_ALWAYS, 0, 13);
    sweep(IQDB_IO_OP_WRITE, ENOSPC, IQDB_WAL_ALWAYS, 0, 13);
    sweep(IQDB_IO_OP_WRITE, ENOSPC, IQDB_WAL_NEVER, 0, 13);
}
END_TEST

START_TEST(test_wal_fault_fsync)
{
    kick_failures = 0;
    sweep(IQDB_IO_OP_FSYNC, EIO, IQDB_WAL_ALWAYS, 0, 13);
    sweep(IQDB_IO_OP_FSYNC, ENOSPC, IQDB_WAL_ALWAYS, 0, 13);
#ifdef HAVE_SYNC_FILE_RANGE
    /* Each piece of the two large frames, in both sweeps. */
    ck_assert_int_ge(kick_failures, 2 * 2 * 3);
#else
    ck_assert_int_eq(kick_failures, 0); /* written whole */
#endif
}
END_TEST

START_TEST(test_wal_fault_rename)
{
    sweep(IQDB_IO_OP_RENAME, EIO, IQDB_WAL_ALWAYS, 0, 2);
}
END_TEST

/* The cut-back after a failure fails too: a partial frame stays behind
 * and the next replay treats it as a torn tail. */
START_TEST(test_wal_fault_ftruncate)
{
    sweep(IQDB_IO_OP_WRITE, EIO, IQDB_WAL_ALWAYS, 1, 13);
    sweep(IQDB_IO_OP_FSYNC, ENOSPC, IQDB_WAL_ALWAYS, 1, 13);
}
END_TEST

/* Faults while replay repairs a torn tail. */
START_TEST(test_wal_fault_in_replay)
{
    int ops[2] = {IQDB_IO_OP_FTRUNCATE, IQDB_IO_OP_FSYNC};
    for (int o = 0; o < 2; o++) {
        iqdb__io_reset();
        char *d = mktmp(), *p = wal_path(d);
        iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
        for (uint64_t i = 0; i < 10; i++)
            ck_assert_int_eq(append_id(w, i, NULL), 0);
        iqdb__wal_close(w);
        int fd = open(p, O_WRONLY | O_APPEND);
        ck_assert_int_eq(write(fd, "\x49\x51\x46\x52torn", 8), 8);
        close(fd);
        iqdb__io_fail_nth(ops[o], 0, EIO);
        struct got g = {0};
        ck_assert_int_eq(reopen_replay(d, 0, &g, NULL, &w), IQDB_EIO);
        ck_assert_int_eq(append_id(w, 50, NULL), IQDB_EREADONLY);
        iqdb__wal_close(w);
        iqdb__io_reset();
        got_free(&g);
        iqdb_wal_replay_info info;
        ck_assert_int_eq(reopen_replay(d, 0, &g, &info, NULL), 0);
        ck_assert_uint_eq(g.n, 10);
        got_free(&g);
        free(p);
        rmtmp(d);
    }
}
END_TEST

/* Every allocation failing in turn: clean errors, no leaks, and the file
 * still replays what was acknowledged. */
START_TEST(test_wal_alloc_failures)
{
    iqdb__io_reset();
    for (long n = 0;; n++) {
        char *d = mktmp();
        iqdb__alloc_fail_after(n);
        iqdb_wal *w = NULL;
        iqdb_wal_options o = opts(IQDB_WAL_ALWAYS, 1);
        int acked = 0, done = 0;
        int rc = iqdb__wal_open(d, &o, &w);
        if (rc == 0) {
            for (uint64_t i = 0; i < 3 && rc == 0; i++)
                if ((rc = append_id(w, i, NULL)) == 0)
                    acked++;
            iqdb__wal_close(w);
        }
        if (rc == 0) {
            struct got g = {0};
            o.create = 0;
            rc = iqdb__wal_open(d, &o, &w);
            if (rc == 0) {
                rc = iqdb__wal_replay(w, 0, collect, &g, NULL);
                iqdb__wal_close(w);
            }
            got_free(&g);
            done = rc == 0;
        }
        iqdb__alloc_fail_after(-1);
        if (rc != 0)
            ck_assert_int_eq(rc, IQDB_ENOMEM);
        if (acked > 0) {
            struct got g = {0};
            ck_assert_int_eq(reopen_replay(d, 0, &g, NULL, NULL), 0);
            ck_assert_uint_eq(g.n, (size_t)acked);
            got_free(&g);
        }
        rmtmp(d);
        if (done)
            break;
    }
}
END_TEST

/* ---- sync policies ------------------------------------------------------ */

struct gc_arg {
    iqdb_wal *w;
    uint64_t base;
    int n;
    int failures;
};

static void *gc_thread(void *p)
{
    struct gc_arg *a = p;
    for (int i = 0; i < a->n; i++)
        if (append_id(a->w, a->base + (uint64_t)i, NULL) != 0)
            a->failures++;
    return NULL;
}

START_TEST(test_wal_group_commit)
{
    enum { T = 8, PER = 150 };
    iqdb__io_reset();
    char *d = mktmp();
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    iqdb__io_reset();
    pthread_t th[T];
    struct gc_arg a[T];
    for (int t = 0; t < T; t++) {
        a[t] = (struct gc_arg){w, (uint64_t)t * 1000, PER, 0};
        ck_assert_int_eq(pthread_create(&th[t], NULL, gc_thread, &a[t]), 0);
    }
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        ck_assert_int_eq(a[t].failures, 0);
    }
    long syncs = iqdb__io_count(IQDB_IO_OP_FSYNC);
    ck_assert_msg(syncs < T * PER, "%ld syncs for %d appends", syncs, T * PER);
    if (getenv("IQDB_TEST_VERBOSE"))
        fprintf(stderr, "group commit: %ld syncs for %d appends\n", syncs,
                T * PER);
    ck_assert_int_gt(syncs, 0);
    iqdb__wal_close(w);
    struct got g = {0};
    ck_assert_int_eq(reopen_replay(d, 0, &g, NULL, NULL), 0);
    ck_assert_uint_eq(g.n, T * PER);
    ck_assert_uint_eq(g.bad, 0);
    static unsigned char seen[T][PER];
    memset(seen, 0, sizeof seen);
    for (size_t i = 0; i < g.n; i++) {
        uint64_t t = g.id[i] / 1000, k = g.id[i] % 1000;
        ck_assert(t < T && k < PER && !seen[t][k]);
        seen[t][k] = 1;
        ck_assert_uint_eq(g.seq[i], i + 1);
    }
    got_free(&g);
    rmtmp(d);
}
END_TEST

/* The split API: frames written without a sync share the next one. */
START_TEST(test_wal_write_then_wait)
{
    iqdb__io_reset();
    char *d = mktmp();
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    /* Past the first frame, which may extend the file. */
    ck_assert_int_eq(append_id(w, 0, NULL), 0);
    iqdb__io_reset();
    uint64_t s1, s2, s3;
    ck_assert_int_eq(write_id(w, 1, &s1), 0);
    ck_assert_int_eq(write_id(w, 2, &s2), 0);
    ck_assert_int_eq(write_id(w, 3, &s3), 0);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_FSYNC), 0);
    ck_assert_int_eq(iqdb__wal_wait(w, s3), 0);
    ck_assert_int_eq(iqdb__wal_wait(w, s1), 0);
    ck_assert_int_eq(iqdb__wal_sync(w), 0);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_FSYNC), 1);
    iqdb__wal_close(w);
    rmtmp(d);
}
END_TEST

/* Frames built in place by the caller (iqdb__wal_write_framed) replay
 * like copied ones, whatever the header room and the padding held
 * before; large ones take the interleaved CRC path. */
START_TEST(test_wal_write_framed)
{
    iqdb__io_reset();
    char *d = mktmp();
    iqdb_wal *w = wal_new(d, IQDB_WAL_ALWAYS);
    uint64_t ids[] = {1, 2, BIG_ID | 3, 4, BIG_ID | 5, 6};
    size_t n = sizeof ids / sizeof ids[0];
    uint64_t seq = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = gen_len(ids[i]);
        ck_assert_uint_eq(iqdb__wal_frame_size(len), (len + 7) & ~(size_t)7);
        unsigned char *b = malloc(FHDR + iqdb__wal_frame_size(len));
        ck_assert_ptr_nonnull(b);
        memset(b, 0xa5, FHDR + iqdb__wal_frame_size(len));
        gen(ids[i], b + FHDR);
        ck_assert_int_eq(iqdb__wal_write_framed(w, b, len, &seq), 0);
        free(b);
    }
    ck_assert_int_eq(iqdb__wal_wait(w, seq), 0);
    iqdb__wal_close(w);
    struct got g = {0};
    ck_assert_int_eq(reopen_replay(d, 0, &g, NULL, NULL), 0);
    ck_assert_uint_eq(g.n, n);
    ck_assert_uint_eq(g.bad, 0);
    for (size_t i = 0; i < n; i++)
        ck_assert_uint_eq(g.id[i], ids[i]);
    got_free(&g);
    rmtmp(d);
}
END_TEST

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

START_TEST(test_wal_periodic)
{
    iqdb__io_reset();
    char *d = mktmp();
    iqdb_wal_options o = opts(IQDB_WAL_PERIODIC, 1);
    o.period_ms = 20;
    iqdb_wal *w = NULL;
    ck_assert_int_eq(iqdb__wal_open(d, &o, &w), 0);
    iqdb__io_reset();
    /* Appends do not sync; the flusher does, within a period or so. */
    for (uint64_t i = 0; i < 30; i++)
        ck_assert_int_eq(append_id(w, i, NULL), 0);
    double t0 = now_ms();
    while (iqdb__io_count(IQDB_IO_OP_FSYNC) == 0 && now_ms() - t0 < 2000)
        usleep(1000);
    ck_assert_int_ge(iqdb__io_count(IQDB_IO_OP_FSYNC), 1);
    /* Continuous appends for 200 ms: at most one sync per period. */
    iqdb__io_reset();
    t0 = now_ms();
    uint64_t i = 30;
    while (now_ms() - t0 < 200) {
        ck_assert_int_eq(append_id(w, i++, NULL), 0);
        usleep(200);
    }
    double el = now_ms() - t0;
    long syncs = iqdb__io_count(IQDB_IO_OP_FSYNC);
    ck_assert_msg(syncs <= (long)(el / 20) + 2, "%ld syncs in %.0f ms", syncs,
                  el);
    ck_assert_int_ge(syncs, 2);
    ck_assert_int_eq(iqdb__wal_close(w), 0);
    struct got g = {0};
    ck_assert_int_eq(reopen_replay(d, 0, &g, NULL, NULL), 0);
    ck_assert_uint_eq(g.n, i);
    got_free(&g);
    rmtmp(d);
}
END_TEST

/* A failed background sync stops the handle; the next append says so. */
START_TEST(test_wal_periodic_failure)
{
    iqdb__io_reset();
    char *d = mktmp();
    iqdb_wal_options o = opts(IQDB_WAL_PERIODIC, 1);
    o.period_ms = 2;
    iqdb_wal *w = NULL;
    ck_assert_int_eq(iqdb__wal_open(d, &o, &w), 0);
    iqdb__io_fail_nth(IQDB_IO_OP_FSYNC, 0, EIO);
    ck_assert_int_eq(append_id(w, 1, NULL), 0);
    double t0 = now_ms();
    while (iqdb__wal_failed(w) == 0 && now_ms() - t0 < 2000)
        usleep(1000);
    ck_assert_int_eq(iqdb__wal_failed(w), IQDB_EIO);
    ck_assert_int_eq(append_id(w, 2, NULL), IQDB_EREADONLY);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "fdatasync"));
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), strerror(EIO)));
    ck_assert_int_eq(iqdb__wal_sync(w), IQDB_EIO);
    long syncs = iqdb__io_count(IQDB_IO_OP_FSYNC);
    usleep(20000);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_FSYNC), syncs); /* no retry */
    iqdb__wal_close(w);
    iqdb__io_reset();
    rmtmp(d);
}
END_TEST

START_TEST(test_wal_never)
{
    iqdb__io_reset();
    char *d = mktmp();
    iqdb_wal *w = wal_new(d, IQDB_WAL_NEVER);
    iqdb__io_reset();
    for (uint64_t i = 0; i < 50; i++)
        ck_assert_int_eq(append_id(w, i, NULL), 0);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_FSYNC), 0);
    ck_assert_int_eq(iqdb__wal_sync(w), 0);
    ck_assert_int_eq(iqdb__wal_sync(w), 0);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_FSYNC), 1);
    ck_assert_int_eq(append_id(w, 50, NULL), 0);
    ck_assert_int_eq(iqdb__wal_close(w), 0);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_FSYNC), 1);
    struct got g = {0};
    ck_assert_int_eq(reopen_replay(d, 0, &g, NULL, NULL), 0);
    ck_assert_uint_eq(g.n, 51);
    got_free(&g);
    rmtmp(d);
}
END_TEST

/* ---- power loss --------------------------------------------------------- */

struct pl_arg {
    iqdb_wal *w;
    uint64_t base;
    int split;             /* write 3 frames, then wait for the last */
    uint64_t acked[2048];  /* ids */
    int nacked;
    uint64_t tried;        /* ids base .. base + tried - 1 were attempted */
};

static void *pl_thread(void *p)
{
    struct pl_arg *a = p;
    for (uint64_t i = 0; i < 1500;) {
        if (a->split) {
            uint64_t seq = 0;
            int k = 0, rc = 0;
            for (; k < 3 && rc == 0; k++) {
                a->tried++;
                rc = write_id(a->w, a->base + i + (uint64_t)k, &seq);
            }
            if (rc == 0)
                rc = iqdb__wal_wait(a->w, seq);
            if (rc != 0)
                return NULL;
            for (int j = 0; j < 3; j++)
                a->acked[a->nacked++] = a->base + i + (uint64_t)j;
            i += 3;
        } else {
            a->tried++;
            if (append_id(a->w, a->base + i, NULL) != 0)
                return NULL;
            a->acked[a->nacked++] = a->base + i;
            i++;
        }
    }
    return NULL;
}

static int has_id(const struct got *g, uint64_t id)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->id[i] == id)
            return 1;
    return 0;
}

/* Appenders under ALWAYS (some with the split API, so several frames are
 * unsynced at once), power cut at a random moment, random or pessimistic
 * outcome: on reopen every acknowledged frame is there, nothing that was
 * never written is, and replay never mistakes the torn writes for
 * corruption. */
START_TEST(test_wal_powerloss_always)
{
    enum { T = 4, CYCLES = 30 };
    iqdb__io_reset();
    char *d = mktmp();
    uint64_t rng = 7;
    uint64_t *must = NULL; /* acknowledged ids since the last reset */
    size_t nmust = 0;
    int saw_later = 0;
    for (int c = 0; c < CYCLES; c++) {
        iqdb__io_powerloss_begin();
        iqdb_wal_options o = opts(IQDB_WAL_ALWAYS, 1);
        iqdb_wal *w = NULL;
        ck_assert_int_eq(iqdb__wal_open(d, &o, &w), 0);
        struct got g = {0};
        iqdb_wal_replay_info info;
        int rc = iqdb__wal_replay(w, 0, collect, &g, &info);
        ck_assert_msg(rc == 0, "cycle %d: %s", c, iqdb__last_error());
        ck_assert_uint_eq(g.bad, 0);
        saw_later += info.later_frames > 0;
        for (size_t i = 0; i < nmust; i++)
            ck_assert_msg(has_id(&g, must[i]), "cycle %d: lost id %llu", c,
                          (unsigned long long)must[i]);
        for (size_t i = 0; i < g.n; i++) /* ids are (cycle, thread, i) */
            ck_assert_uint_lt(g.id[i] / 100000, (uint64_t)c);
        /* Replay made what it found durable: it all must survive now. */
        must = realloc(must, (g.n + T * 2048) * sizeof *must);
        if (g.n > 0)
            memcpy(must, g.id, g.n * sizeof *must);
        nmust = g.n;
        got_free(&g);
        if (c % 7 == 6) {
            ck_assert_int_eq(iqdb__wal_reset(w), 0);
            nmust = 0;
        }
        pthread_t th[T];
        static struct pl_arg a[T];
        for (int t = 0; t < T; t++) {
            memset(&a[t], 0, sizeof a[t]);
            a[t].w = w;
            a[t].base = (uint64_t)c * 100000 + (uint64_t)t * 10000;
            a[t].split = t % 2;
            ck_assert_int_eq(pthread_create(&th[t], NULL, pl_thread, &a[t]),
                             0);
        }
        usleep((useconds_t)(tu_next(&rng) % 4000));
        uint64_t seed = c % 3 == 0 ? 0 : tu_next(&rng);
        ck_assert_int_eq(iqdb__io_powerloss_crash(seed), 0);
        for (int t = 0; t < T; t++) {
            pthread_join(th[t], NULL);
            for (int i = 0; i < a[t].nacked; i++)
                must[nmust++] = a[t].acked[i];
        }
        iqdb__wal_close(w);
        iqdb__io_powerloss_end();
    }
    if (getenv("IQDB_TEST_VERBOSE"))
        fprintf(stderr, "powerloss: %d of %d reopens found intact frames "
                "after a torn one; %zu ids required at the end\n",
                saw_later, CYCLES, nmust);
    free(must);
    rmtmp(d);
}
END_TEST

/* Power cut at every step of creating and of resetting a WAL: afterwards
 * there is either no WAL or a valid one, holding all the old frames or
 * none of them - never a short or half-written file. */
START_TEST(test_wal_powerloss_create_and_reset)
{
    int ops[3] = {IQDB_IO_OP_WRITE, IQDB_IO_OP_FSYNC, IQDB_IO_OP_RENAME};
    for (int phase = 0; phase < 2; phase++) {
        for (int oi = 0; oi < 3; oi++) {
            for (long k = 0;; k++) {
                iqdb__io_reset();
                char *d = mktmp();
                iqdb_wal_options o = opts(IQDB_WAL_ALWAYS, 1);
                iqdb_wal *w = NULL;
                if (phase == 1) {
                    ck_assert_int_eq(iqdb__wal_open(d, &o, &w), 0);
                    for (uint64_t i = 0; i < 5; i++)
                        ck_assert_int_eq(append_id(w, i, NULL), 0);
                }
                iqdb__io_powerloss_begin();
                /* Power dies at the k-th operation: it and every later one
                 * fail, then the crash drops what was not synced. */
                iqdb__io_fail_from(ops[oi], k, EIO);
                int rc = phase == 0 ? iqdb__wal_open(d, &o, &w)
                                    : iqdb__wal_reset(w);
                int fired = iqdb__io_count(ops[oi]) > k;
                ck_assert_int_eq(fired, rc != 0);
                ck_assert_int_eq(iqdb__io_powerloss_crash(0), 0);
                iqdb__wal_close(w);
                iqdb__io_powerloss_end();
                iqdb__io_reset();
                o.create = 0;
                w = NULL;
                rc = iqdb__wal_open(d, &o, &w);
                if (phase == 0 && rc == IQDB_ENOTFOUND) {
                    ck_assert(fired);
                } else {
                    ck_assert_msg(rc == 0, "k=%ld: %s", k, iqdb__last_error());
                    struct got g = {0};
                    ck_assert_int_eq(iqdb__wal_replay(w, 0, collect, &g, NULL),
                                     0);
                    ck_assert(g.n == 0 || (phase == 1 && g.n == 5));
                    if (!fired && phase == 1)
                        ck_assert_uint_eq(g.n, 0);
                    got_free(&g);
                    iqdb__wal_close(w);
                }
                rmtmp(d);
                if (!fired)
                    break;
            }
        }
    }
}
END_TEST

static Suite *wal_suite(int prealloc)
{
    Suite *s = suite_create(prealloc ? "wal (preallocated)" : "wal");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"round_trip", test_wal_round_trip},
        {"zero_length", test_wal_zero_length_and_callback_stop},
        {"open_errors", test_wal_open_errors},
        {"replay_rules", test_wal_replay_rules},
        {"reset", test_wal_reset},
        {"torn_tail_truncation", test_wal_torn_tail_truncation},
        {"torn_tail_byte_flips", test_wal_torn_tail_byte_flips},
        {"torn_tail_fills", test_wal_torn_tail_fills},
        {"bad_frame_policy", test_wal_bad_frame_followed_by_good_frames},
        {"hostile_lengths", test_wal_hostile_lengths},
        {"scan_budget", test_wal_scan_budget},
        {"fault_write", test_wal_fault_write},
        {"fault_fsync", test_wal_fault_fsync},
        {"fault_rename", test_wal_fault_rename},
        {"fault_ftruncate", test_wal_fault_ftruncate},
        {"fault_in_replay", test_wal_fault_in_replay},
        {"alloc_failures", test_wal_alloc_failures},
        {"group_commit", test_wal_group_commit},
        {"write_then_wait", test_wal_write_then_wait},
        {"write_framed", test_wal_write_framed},
        {"periodic", test_wal_periodic},
        {"periodic_failure", test_wal_periodic_failure},
        {"never", test_wal_never},
        {"powerloss_always", test_wal_powerloss_always},
        {"powerloss_create_reset", test_wal_powerloss_create_and_reset},
        /* from here: preallocation only */
        {"prealloc_clean_end", test_wal_prealloc_clean_end},
        {"prealloc_torn_then_zeros", test_wal_prealloc_torn_then_zeros},
        {"prealloc_zero_gap", test_wal_prealloc_zero_gap},
        {"prealloc_after_reset", test_wal_prealloc_after_reset},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (!prealloc && strncmp(cases[i].name, "prealloc_", 9) == 0)
            continue;
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    g_prealloc = 0;
    int r = tu_run(wal_suite(0));
    g_prealloc = 1;
    int r2 = tu_run(wal_suite(1));
    return r != EXIT_SUCCESS ? r : r2;
}
