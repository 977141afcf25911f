/*
 * tests/unit/check_durable.c - the durable-storage building blocks: the
 * file I/O table (fault injection, power-loss simulation), CRC32C and the
 * directory lock. The WAL has its own suite (check_wal.c).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "durable_int.h"
#include "iqdb_int.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------ */

static char *mktmp(void)
{
    char *d = strdup("/tmp/iqdb-durable-XXXXXX");
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

static char *path_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Whole content of path into buf (at most cap bytes); its size, or -1
 * when the file does not exist. */
static long slurp(const char *path, unsigned char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap);
    close(fd);
    ck_assert_int_ge(n, 0);
    return (long)n;
}

static void put_file(const char *path, const void *buf, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
    ck_assert_int_eq(fsync(fd), 0);
    close(fd);
}

/* Simulator backups left in dir. */
static int count_backups(const char *dir)
{
    DIR *dh = opendir(dir);
    ck_assert_ptr_nonnull(dh);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dh)) != NULL)
        n += strncmp(e->d_name, ".iqdb-plbak", 11) == 0;
    closedir(dh);
    return n;
}

/* ---- file I/O ----------------------------------------------------------- */

START_TEST(test_durable_io_roundtrip)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = path_in(d, "f");
    const iqdb_io *io = iqdb__io();
    int fd = io->open(p, O_RDWR | O_CREAT, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
    unsigned char buf[10000], back[10000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 7);
    ck_assert_int_eq(iqdb__io_pwrite_all(fd, buf, sizeof buf, 100), 0);
    ck_assert_int_eq(iqdb__io_pread_all(fd, back, sizeof back, 100), 0);
    ck_assert_mem_eq(buf, back, sizeof buf);
    ck_assert_int_eq(iqdb__io_pread_all(fd, back, 10, 100 + 9995), -2);
    ck_assert_int_eq(iqdb__io_pwrite_all(fd, buf, 0, 0), 0);
    ck_assert_int_eq(io->fdatasync(fd), 0);
    ck_assert_int_eq(io->fsync(fd), 0);
    ck_assert_int_eq(io->ftruncate(fd, 50), 0);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(st.st_size, 50);
    ck_assert_int_eq(io->close(fd), 0);
    char *q = path_in(d, "g");
    ck_assert_int_eq(io->rename(p, q), 0);
    ck_assert_int_eq(io->fsync_dir(d), 0);
    ck_assert_int_eq(io->unlink(q), 0);
    ck_assert_int_ne(io->fsync_dir(p), 0); /* gone */
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_WRITE), 1);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_FSYNC), 4); /* 2 files, 2 dirs */
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_FTRUNCATE), 1);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_RENAME), 1);
    free(p);
    free(q);
    rmtmp(d);
}
END_TEST

START_TEST(test_durable_io_fail_nth)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = path_in(d, "f");
    const iqdb_io *io = iqdb__io();
    int fd = io->open(p, O_RDWR | O_CREAT, 0644);
    ck_assert_int_ge(fd, 0);
    unsigned char b[64] = {1};

    iqdb__io_fail_nth(IQDB_IO_OP_WRITE, 2, ENOSPC);
    for (int i = 0; i < 5; i++) {
        errno = 0;
        int r = iqdb__io_pwrite_all(fd, b, sizeof b, 0);
        if (i == 2) {
            ck_assert_int_eq(r, -1);
            ck_assert_int_eq(errno, ENOSPC);
        } else {
            ck_assert_int_eq(r, 0);
        }
    }
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_WRITE), 5);

    iqdb__io_fail_nth(IQDB_IO_OP_FSYNC, 0, EIO);
    ck_assert_int_eq(io->fdatasync(fd), -1);
    ck_assert_int_eq(errno, EIO);
    ck_assert_int_eq(io->fdatasync(fd), 0); /* once only */

    iqdb__io_fail_nth(IQDB_IO_OP_FSYNC, 1, EIO);
    ck_assert_int_eq(io->fsync(fd), 0);
    ck_assert_int_eq(io->fsync_dir(d), -1); /* directory syncs count */

    iqdb__io_fail_nth(IQDB_IO_OP_FTRUNCATE, 0, EIO);
    ck_assert_int_eq(io->ftruncate(fd, 0), -1);
    ck_assert_int_eq(errno, EIO);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(st.st_size, 64); /* a failed ftruncate changed nothing */

    char *q = path_in(d, "g");
    iqdb__io_fail_nth(IQDB_IO_OP_RENAME, 0, EIO);
    ck_assert_int_eq(io->rename(p, q), -1);
    ck_assert_int_eq(access(p, F_OK), 0);

    /* Sticky: a full disk stays full. */
    iqdb__io_fail_from(IQDB_IO_OP_WRITE, 1, ENOSPC);
    ck_assert_int_eq(iqdb__io_pwrite_all(fd, b, 1, 0), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(iqdb__io_pwrite_all(fd, b, 1, 0), -1);
    iqdb__io_fail_nth(IQDB_IO_OP_WRITE, -1, 0);
    ck_assert_int_eq(iqdb__io_pwrite_all(fd, b, 1, 0), 0);

    iqdb__io_fail_from(IQDB_IO_OP_FSYNC, 0, EIO);
    iqdb__io_reset();
    ck_assert_int_eq(io->fdatasync(fd), 0);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_FSYNC), 1);
    io->close(fd);
    free(p);
    free(q);
    rmtmp(d);
}
END_TEST

/* link gives the file a second name; for fault injection it is a
 * rename-class operation, and a link that fails creates nothing. */
START_TEST(test_durable_io_link)
{
    iqdb__io_reset();
    char *d = mktmp(), *f = path_in(d, "f"), *l = path_in(d, "l"),
         *m = path_in(d, "m");
    const iqdb_io *io = iqdb__io();
    unsigned char got[16];
    struct stat sf, sl;
    put_file(f, "content", 7);
    ck_assert_int_eq(io->link(f, l), 0);
    ck_assert_int_eq(slurp(l, got, sizeof got), 7);
    ck_assert_mem_eq(got, "content", 7);
    ck_assert_int_eq(stat(f, &sf), 0);
    ck_assert_int_eq(stat(l, &sl), 0);
    ck_assert(sf.st_ino == sl.st_ino && sf.st_dev == sl.st_dev);
    ck_assert_int_eq(sf.st_nlink, 2);
    ck_assert_int_eq(iqdb__io_count(IQDB_IO_OP_RENAME), 1);
    errno = 0;
    ck_assert_int_eq(io->link(f, l), -1); /* link(2) never replaces */
    ck_assert_int_eq(errno, EEXIST);

    iqdb__io_fail_nth(IQDB_IO_OP_RENAME, 0, EIO);
    errno = 0;
    ck_assert_int_eq(io->link(f, m), -1);
    ck_assert_int_eq(errno, EIO);
    ck_assert_int_eq(access(m, F_OK), -1);
    ck_assert_int_eq(stat(f, &sf), 0);
    ck_assert_int_eq(sf.st_nlink, 2);
    ck_assert_int_eq(io->link(f, m), 0); /* once only */
    ck_assert_int_eq(slurp(m, got, sizeof got), 7);
    ck_assert_mem_eq(got, "content", 7);
    iqdb__io_reset();
    free(f);
    free(l);
    free(m);
    rmtmp(d);
}
END_TEST

/* A failing write may leave a prefix behind, like a real one: callers of
 * the table must not assume failed means untouched. */
START_TEST(test_durable_io_failed_write_partial)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = path_in(d, "f");
    int fd = iqdb__io()->open(p, O_RDWR | O_CREAT, 0644);
    unsigned char b[100];
    memset(b, 0xab, sizeof b);
    iqdb__io_fail_nth(IQDB_IO_OP_WRITE, 0, EIO);
    ck_assert_int_eq(iqdb__io_pwrite_all(fd, b, sizeof b, 0), -1);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    ck_assert_int_eq(st.st_size, 50);
    close(fd);
    iqdb__io_reset();
    free(p);
    rmtmp(d);
}
END_TEST

START_TEST(test_durable_io_status)
{
    ck_assert_int_eq(iqdb__io_status(ENOSPC), IQDB_ENOSPC);
    ck_assert_int_eq(iqdb__io_status(EDQUOT), IQDB_ENOSPC);
    ck_assert_int_eq(iqdb__io_status(ENOMEM), IQDB_ENOMEM);
    ck_assert_int_eq(iqdb__io_status(EROFS), IQDB_EREADONLY);
    ck_assert_int_eq(iqdb__io_status(EACCES), IQDB_EREADONLY);
    ck_assert_int_eq(iqdb__io_status(EPERM), IQDB_EREADONLY);
    ck_assert_int_eq(iqdb__io_status(EIO), IQDB_EIO);
    ck_assert_int_eq(iqdb__io_status(EBADF), IQDB_EIO);
}
END_TEST

/* ---- power-loss simulation ---------------------------------------------- */

START_TEST(test_durable_powerloss_drops_unsynced_bytes)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = path_in(d, "f");
    const iqdb_io *io = iqdb__io();
    unsigned char a[300], b[500], got[2000];
    memset(a, 'a', sizeof a);
    memset(b, 'b', sizeof b);
    iqdb__io_powerloss_begin();
    int fd = io->open(p, O_RDWR | O_CREAT, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(io->fsync_dir(d), 0); /* the file's entry is durable */
    ck_assert_int_eq(iqdb__io_pwrite_all(fd, a, sizeof a, 0), 0);
    ck_assert_int_eq(io->fdatasync(fd), 0);
    ck_assert_int_eq(iqdb__io_pwrite_all(fd, b, sizeof b, 200), 0);
    ck_assert_int_eq(io->ftruncate(fd, 100), 0);
    ck_assert_int_eq(iqdb__io_pwrite_all(fd, b, 10, 1000), 0);
    ck_assert_int_eq(iqdb__io_powerloss_crash(0), 0);
    /* The machine is dead until the simulation ends. */
    ck_assert_int_eq(iqdb__io_pwrite_all(fd, b, 1, 0), -1);
    ck_assert_int_eq(errno, EIO);
    ck_assert_int_eq(io->fdatasync(fd), -1);
    ck_assert_int_lt(io->open(p, O_RDONLY, 0), 0);
    io->close(fd);
    iqdb__io_powerloss_end();
    ck_assert_int_eq(slurp(p, got, sizeof got), 300);
    ck_assert_mem_eq(got, a, 300);
    ck_assert_int_eq(count_backups(d), 0);
    free(p);
    rmtmp(d);
}
END_TEST

START_TEST(test_durable_powerloss_undoes_directory_ops)
{
    iqdb__io_reset();
    char *d = mktmp(), *f = path_in(d, "f"), *t = path_in(d, "t"),
         *g = path_in(d, "g"), *n = path_in(d, "new");
    const iqdb_io *io = iqdb__io();
    unsigned char got[100];
    put_file(f, "old", 3);
    put_file(g, "gone", 4);
    for (int synced = 0; synced < 2; synced++) {
        iqdb__io_powerloss_begin();
        /* The snapshot dance: temporary, sync, rename over, (dir sync). */
        int fd = io->open(t, O_RDWR | O_CREAT | O_TRUNC, 0644);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(iqdb__io_pwrite_all(fd, "new", 3, 0), 0);
        ck_assert_int_eq(io->fdatasync(fd), 0);
        ck_assert_int_eq(io->rename(t, f), 0);
        ck_assert_int_eq(io->unlink(g), 0);
        int fd2 = io->open(n, O_RDWR | O_CREAT, 0644);
        ck_assert_int_ge(fd2, 0);
        ck_assert_int_eq(io->fdatasync(fd2), 0);
        if (synced)
            ck_assert_int_eq(io->fsync_dir(d), 0);
        ck_assert_int_eq(iqdb__io_powerloss_crash(0), 0);
        io->close(fd);
        io->close(fd2);
        iqdb__io_powerloss_end();
        ck_assert_int_eq(slurp(f, got, sizeof got), 3);
        ck_assert_mem_eq(got, synced ? "new" : "old", 3);
        ck_assert_int_eq(access(t, F_OK), -1);
        ck_assert_int_eq(access(g, F_OK), synced ? -1 : 0);
        ck_assert_int_eq(access(n, F_OK), synced ? 0 : -1);
        ck_assert_int_eq(count_backups(d), 0);
    }
    free(f);
    free(t);
    free(g);
    free(n);
    rmtmp(d);
}
END_TEST

/* A link is durable once the new name's directory is synced - a sync of
 * the old name's directory is not enough - and a crash before that takes
 * the new name away. Unsynced bytes written through the new name roll
 * back under both names: the simulator tracks the inode, not a path. */
START_TEST(test_durable_powerloss_link)
{
    iqdb__io_reset();
    char *d = mktmp(), *sub = path_in(d, "sub"), *f = path_in(d, "f");
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    char *l = path_in(sub, "l");
    const iqdb_io *io = iqdb__io();
    unsigned char got[100];
    /* mode 0: no directory sync; 1: f's directory; 2: l's directory. */
    for (int mode = 0; mode < 3; mode++) {
        put_file(f, "old", 3);
        iqdb__io_powerloss_begin();
        int fd = io->open(f, O_RDWR, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(iqdb__io_pwrite_all(fd, "durable", 7, 0), 0);
        ck_assert_int_eq(io->fdatasync(fd), 0);
        ck_assert_int_eq(io->link(f, l), 0);
        int fl = io->open(l, O_RDWR, 0);
        ck_assert_int_ge(fl, 0);
        ck_assert_int_eq(iqdb__io_pwrite_all(fl, "lost bytes", 10, 0), 0);
        if (mode == 1)
            ck_assert_int_eq(io->fsync_dir(d), 0);
        if (mode == 2)
            ck_assert_int_eq(io->fsync_dir(sub), 0);
        ck_assert_int_eq(iqdb__io_powerloss_crash(0), 0);
        io->close(fd);
        io->close(fl);
        iqdb__io_powerloss_end();
        ck_assert_int_eq(slurp(f, got, sizeof got), 7);
        ck_assert_mem_eq(got, "durable", 7);
        if (mode == 2) {
            ck_assert_int_eq(slurp(l, got, sizeof got), 7);
            ck_assert_mem_eq(got, "durable", 7);
            ck_assert_int_eq(unlink(l), 0);
        } else {
            ck_assert_msg(access(l, F_OK) == -1,
                          "mode %d: unsynced link survived the crash", mode);
        }
        ck_assert_int_eq(count_backups(d), 0);
        ck_assert_int_eq(count_backups(sub), 0);
    }
    free(f);
    free(l);
    free(sub);
    rmtmp(d);
}
END_TEST

/* Link, then unlink the old name (moving a file while it always has a
 * name): the crash keeps the new name only once the directory is synced,
 * and otherwise restores the old one - with the durable bytes either
 * way. */
START_TEST(test_durable_powerloss_link_then_unlink)
{
    iqdb__io_reset();
    char *d = mktmp(), *f = path_in(d, "f"), *l = path_in(d, "l");
    const iqdb_io *io = iqdb__io();
    unsigned char got[100];
    for (int synced = 0; synced < 2; synced++) {
        put_file(f, "durable", 7);
        iqdb__io_powerloss_begin();
        ck_assert_int_eq(io->link(f, l), 0);
        ck_assert_int_eq(io->unlink(f), 0);
        int fd = io->open(l, O_RDWR, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(iqdb__io_pwrite_all(fd, "lost bytes", 10, 0), 0);
        if (synced)
            ck_assert_int_eq(io->fsync_dir(d), 0);
        ck_assert_int_eq(iqdb__io_powerloss_crash(0), 0);
        io->close(fd);
        iqdb__io_powerloss_end();
        const char *kept = synced ? l : f, *gone = synced ? f : l;
        ck_assert_int_eq(slurp(kept, got, sizeof got), 7);
        ck_assert_mem_eq(got, "durable", 7);
        ck_assert_int_eq(access(gone, F_OK), -1);
        ck_assert_int_eq(count_backups(d), 0);
        unlink(l);
    }

    /* rename between two names of one inode changes nothing (POSIX), and
     * its rollback must not leave a simulator backup behind. */
    put_file(f, "durable", 7);
    iqdb__io_powerloss_begin();
    ck_assert_int_eq(io->link(f, l), 0);
    ck_assert_int_eq(io->fsync_dir(d), 0);
    ck_assert_int_eq(io->rename(f, l), 0);
    ck_assert_int_eq(iqdb__io_powerloss_crash(0), 0);
    iqdb__io_powerloss_end();
    ck_assert_int_eq(access(f, F_OK), 0);
    ck_assert_int_eq(slurp(l, got, sizeof got), 7);
    ck_assert_int_eq(count_backups(d), 0);
    free(f);
    free(l);
    rmtmp(d);
}
END_TEST

/* Random crash outcomes never touch synced bytes, and every outcome is a
 * mix of old and new bytes, never anything else. */
START_TEST(test_durable_powerloss_random_keeps_synced)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = path_in(d, "f");
    const iqdb_io *io = iqdb__io();
    unsigned char base[1000], upd[3000], got[5000];
    for (size_t i = 0; i < sizeof base; i++)
        base[i] = (unsigned char)(i % 251 + 1);
    for (size_t i = 0; i < sizeof upd; i++)
        upd[i] = (unsigned char)(i % 241 + 1);
    int sizes_seen[2] = {0, 0};
    for (uint64_t seed = 1; seed <= 200; seed++) {
        put_file(p, base, 500);
        iqdb__io_powerloss_begin();
        int fd = io->open(p, O_RDWR, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(iqdb__io_pwrite_all(fd, base + 500, 500, 500), 0);
        ck_assert_int_eq(io->fdatasync(fd), 0); /* 1000 synced bytes */
        for (int w = 0; w < 6; w++)
            ck_assert_int_eq(iqdb__io_pwrite_all(fd, upd + w * 500, 500,
                                                 1000 + w * 500),
                             0);
        ck_assert_int_eq(iqdb__io_powerloss_crash(seed), 0);
        io->close(fd);
        iqdb__io_powerloss_end();
        long n = slurp(p, got, sizeof got);
        ck_assert_int_ge(n, 1000);
        ck_assert_int_le(n, 4000);
        ck_assert_mem_eq(got, base, 1000);
        for (long i = 1000; i < n; i++)
            ck_assert(got[i] == 0 || got[i] == upd[i - 1000]);
        sizes_seen[n == 1000]++;
    }
    ck_assert_int_gt(sizes_seen[0], 0); /* some writes survived */
    ck_assert_int_gt(sizes_seen[1], 0); /* some crashes lost all */
    free(p);
    rmtmp(d);
}
END_TEST

/* Two unsynced writes to overlapping bytes: when the crash keeps the
 * newer and drops the older, the overlap holds the newer write's bytes
 * (the older one's undo must not clobber them), and every byte is one a
 * disk could show: durable, or from a write covering it. */
START_TEST(test_durable_powerloss_newer_write_kept)
{
    iqdb__io_reset();
    char *d = mktmp(), *p = path_in(d, "f");
    const iqdb_io *io = iqdb__io();
    unsigned char base[200], a[100], b[100], got[400];
    memset(base, 'x', sizeof base);
    memset(a, 'a', sizeof a);
    memset(b, 'b', sizeof b);
    int seen = 0;
    for (uint64_t seed = 1; seed <= 300; seed++) {
        put_file(p, base, sizeof base);
        iqdb__io_powerloss_begin();
        int fd = io->open(p, O_RDWR, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(iqdb__io_pwrite_all(fd, a, 100, 0), 0);  /* older */
        ck_assert_int_eq(iqdb__io_pwrite_all(fd, b, 100, 50), 0); /* newer */
        ck_assert_int_eq(iqdb__io_powerloss_crash(seed), 0);
        io->close(fd);
        iqdb__io_powerloss_end();
        ck_assert_int_eq(slurp(p, got, sizeof got), 200);
        for (int i = 0; i < 200; i++) {
            unsigned char c = got[i];
            int ok = c == 'x' || (i < 100 && c == 'a') ||
                     (i >= 50 && i < 150 && c == 'b');
            ck_assert_msg(ok, "seed %llu byte %d: %c", (unsigned long long)seed,
                          i, c);
        }
        if (got[149] == 'b') { /* the newer write kept whole */
            for (int i = 50; i < 150; i++)
                ck_assert_msg(got[i] == 'b', "seed %llu: kept newer write "
                              "lost at byte %d", (unsigned long long)seed, i);
            seen += got[0] == 'x'; /* and the older one dropped */
        }
    }
    ck_assert_int_gt(seen, 0);
    free(p);
    rmtmp(d);
}
END_TEST

/* ---- CRC32C ------------------------------------------------------------- */

static const struct {
    const char *what;
    unsigned char bytes[48];
    size_t n;
    uint32_t crc;
} crc_vectors[] = {
    {"check string", "123456789", 9, 0xE3069283u},
    {"empty", "", 0, 0x00000000u},
    /* RFC 3720 (iSCSI), B.4 */
    {"32 zeros", {0}, 32, 0x8A9136AAu},
    {"32 0xff",
     {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
     32,
     0x62A8AB43u},
    {"ascending",
     {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
      16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31},
     32,
     0x46DD794Eu},
    {"descending",
     {31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
      15, 14, 13, 12, 11, 10, 9,  8,  7,  6,  5,  4,  3,  2,  1,  0},
     32,
     0x113FDB5Cu},
};

START_TEST(test_durable_crc32c_vectors)
{
    for (size_t i = 0; i < sizeof crc_vectors / sizeof crc_vectors[0]; i++) {
        const unsigned char *b = crc_vectors[i].bytes;
        size_t n = crc_vectors[i].n;
        uint32_t want = crc_vectors[i].crc;
        ck_assert_msg(iqdb__crc32c(0, b, n) == want, "%s: got %08x",
                      crc_vectors[i].what, iqdb__crc32c(0, b, n));
        ck_assert_uint_eq(iqdb__crc32c_sw(0, b, n), want);
        if (iqdb__crc32c_hw_available())
            ck_assert_uint_eq(iqdb__crc32c_hw(0, b, n), want);
    }
}
END_TEST

START_TEST(test_durable_crc32c_chaining)
{
    const char *s = "123456789";
    for (size_t cut = 0; cut <= 9; cut++) {
        uint32_t c = iqdb__crc32c(0, s, cut);
        ck_assert_uint_eq(iqdb__crc32c(c, s + cut, 9 - cut), 0xE3069283u);
        c = iqdb__crc32c_sw(0, s, cut);
        ck_assert_uint_eq(iqdb__crc32c_sw(c, s + cut, 9 - cut), 0xE3069283u);
    }
}
END_TEST

/* Continuing a CRC over zeros without reading them gives what reading
 * them gives, for lengths around each power of two (every bit of the
 * length takes its own step) and from several starting states. */
START_TEST(test_durable_crc32c_zeros)
{
    static unsigned char zero[(1 << 17) + 3];
    const uint32_t starts[] = {0, 0xE3069283u, 0xffffffffu, 0x12345678u};
    for (size_t s = 0; s < sizeof starts / sizeof starts[0]; s++) {
        ck_assert_uint_eq(iqdb__crc32c_zeros(starts[s], 0), starts[s]);
        for (uint64_t p = 1; p <= (1u << 17); p <<= 1)
            for (uint64_t len = p - 1; len <= p + 1 && len < sizeof zero;
                 len++)
                ck_assert_uint_eq(iqdb__crc32c_zeros(starts[s], len),
                                  iqdb__crc32c(starts[s], zero, (size_t)len));
        ck_assert_uint_eq(iqdb__crc32c_zeros(starts[s], 100003),
                          iqdb__crc32c(starts[s], zero, 100003));
    }
}
END_TEST

/* The hardware and software paths agree on every length and alignment
 * (the head/body/tail split of both is exercised). */
START_TEST(test_durable_crc32c_sw_equals_hw)
{
    if (!iqdb__crc32c_hw_available())
        return;
    unsigned char buf[300 + 16];
    uint64_t seed = 42;
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)tu_next(&seed);
    for (size_t mis = 0; mis < 16; mis++) {
        for (size_t n = 0; n <= 300; n++) {
            uint32_t init = (uint32_t)tu_next(&seed);
            ck_assert_uint_eq(iqdb__crc32c_sw(init, buf + mis, n),
                              iqdb__crc32c_hw(init, buf + mis, n));
            ck_assert_uint_eq(iqdb__crc32c_sw(0, buf + mis, n),
                              iqdb__crc32c(0, buf + mis, n));
        }
    }
}
END_TEST

START_TEST(test_durable_crc32c_detects_flips)
{
    unsigned char buf[64];
    memset(buf, 0x5a, sizeof buf);
    uint32_t c0 = iqdb__crc32c(0, buf, sizeof buf);
    for (size_t i = 0; i < sizeof buf * 8; i++) {
        buf[i / 8] ^= (unsigned char)(1u << (i % 8));
        ck_assert_uint_ne(iqdb__crc32c(0, buf, sizeof buf), c0);
        buf[i / 8] ^= (unsigned char)(1u << (i % 8));
    }
}
END_TEST

/* ---- directory lock ----------------------------------------------------- */

START_TEST(test_durable_lock_exclusive_twice_same_process)
{
    char *d = mktmp();
    iqdb_lock *a = NULL, *b = NULL;
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &a), 0);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &b), IQDB_ELOCKED);
    ck_assert_ptr_null(b);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), d));
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "this process"));
    ck_assert_int_eq(iqdb__lock_acquire(d, 0, &b), IQDB_ELOCKED);
    iqdb__lock_release(a);
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &b), 0);
    iqdb__lock_release(b);
    iqdb__lock_release(NULL);
    rmtmp(d);
}
END_TEST

START_TEST(test_durable_lock_other_names_same_directory)
{
    char *d = mktmp();
    char *sub = path_in(d, "db"), *link = path_in(d, "alias");
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    ck_assert_int_eq(symlink(sub, link), 0);
    iqdb_lock *a = NULL, *b = NULL;
    ck_assert_int_eq(iqdb__lock_acquire(sub, 1, &a), 0);
    /* Through a symlink. */
    ck_assert_int_eq(iqdb__lock_acquire(link, 1, &b), IQDB_ELOCKED);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "this process"));
    /* Through a relative path and a path with dot components. */
    char cwd[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(d), 0);
    ck_assert_int_eq(iqdb__lock_acquire("db", 1, &b), IQDB_ELOCKED);
    ck_assert_int_eq(iqdb__lock_acquire("./alias/../db/.", 0, &b),
                     IQDB_ELOCKED);
    ck_assert_int_eq(chdir(cwd), 0);
    iqdb__lock_release(a);
    ck_assert_int_eq(iqdb__lock_acquire(link, 1, &b), 0);
    iqdb__lock_release(b);
    free(sub);
    free(link);
    rmtmp(d);
}
END_TEST

START_TEST(test_durable_lock_shared)
{
    char *d = mktmp();
    iqdb_lock *r1 = NULL, *r2 = NULL, *w = NULL;
    ck_assert_int_eq(iqdb__lock_acquire(d, 0, &r1), 0);
    ck_assert_int_eq(iqdb__lock_acquire(d, 0, &r2), 0);
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &w), IQDB_ELOCKED);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "read-only"));
    iqdb__lock_release(r1);
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &w), IQDB_ELOCKED);
    iqdb__lock_release(r2);
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &w), 0);
    ck_assert_int_eq(iqdb__lock_acquire(d, 0, &r1), IQDB_ELOCKED);
    iqdb__lock_release(w);
    rmtmp(d);
}
END_TEST

/* Fork a child that takes the lock (mode excl) and holds it until told. */
static pid_t child_holding(const char *dir, int excl, int *release_fd)
{
    int ready[2], go[2];
    ck_assert_int_eq(pipe(ready), 0);
    ck_assert_int_eq(pipe(go), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        iqdb_lock *l = NULL;
        char c = iqdb__lock_acquire(dir, excl, &l) == 0 ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1)
            _exit(2);
        if (read(go[0], &c, 1) < 0)
            _exit(3);
        iqdb__lock_release(l);
        _exit(0);
    }
    close(ready[1]);
    close(go[0]);
    char c = 0;
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    ck_assert_int_eq(c, 'y');
    close(ready[0]);
    *release_fd = go[1];
    return pid;
}

static void child_release(pid_t pid, int fd)
{
    char c = 'x';
    ck_assert_int_eq(write(fd, &c, 1), 1);
    close(fd);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

START_TEST(test_durable_lock_other_process)
{
    char *d = mktmp();
    iqdb_lock *l = NULL;
    int go;
    pid_t pid = child_holding(d, 1, &go);
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &l), IQDB_ELOCKED);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "another process"));
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), d));
    char pidtxt[32];
    snprintf(pidtxt, sizeof pidtxt, "pid %ld", (long)pid);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), pidtxt));
    ck_assert_int_eq(iqdb__lock_acquire(d, 0, &l), IQDB_ELOCKED);
    child_release(pid, go);
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &l), 0);
    iqdb__lock_release(l);

    /* A reader elsewhere: readers here coexist, a writer does not. */
    pid = child_holding(d, 0, &go);
    ck_assert_int_eq(iqdb__lock_acquire(d, 0, &l), 0);
    iqdb__lock_release(l);
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &l), IQDB_ELOCKED);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "another process"));
    child_release(pid, go);
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &l), 0);
    iqdb__lock_release(l);
    rmtmp(d);
}
END_TEST

/* A holder that dies without releasing leaves no stale lock. */
START_TEST(test_durable_lock_dies_with_holder)
{
    char *d = mktmp();
    int go;
    pid_t pid = child_holding(d, 1, &go);
    kill(pid, SIGKILL);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    close(go);
    iqdb_lock *l = NULL;
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &l), 0);
    iqdb__lock_release(l);
    rmtmp(d);
}
END_TEST

START_TEST(test_durable_lock_errors)
{
    char *d = mktmp(), *f = path_in(d, "file"), *m = path_in(d, "missing");
    iqdb_lock *l = NULL;
    put_file(f, "x", 1);
    ck_assert_int_eq(iqdb__lock_acquire(f, 1, &l), IQDB_EINVAL);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), "not a directory"));
    ck_assert_int_eq(iqdb__lock_acquire(m, 1, &l), IQDB_EIO);
    ck_assert_ptr_nonnull(strstr(iqdb__last_error(), m));
    ck_assert_int_eq(iqdb__lock_acquire(NULL, 1, &l), IQDB_EINVAL);
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, NULL), IQDB_EINVAL);
    /* Every allocation failing in turn: a clean error, then success. */
    for (long n = 0;; n++) {
        iqdb__alloc_fail_after(n);
        int r = iqdb__lock_acquire(d, 1, &l);
        iqdb__alloc_fail_after(-1);
        if (r == 0) {
            iqdb__lock_release(l);
            break;
        }
        ck_assert_int_eq(r, IQDB_ENOMEM);
        ck_assert_ptr_null(l);
    }
    ck_assert_int_eq(iqdb__lock_acquire(d, 1, &l), 0);
    iqdb__lock_release(l);
    free(f);
    free(m);
    rmtmp(d);
}
END_TEST

static Suite *durable_suite(void)
{
    Suite *s = suite_create("durable");
    struct {
        const char *name;
        const TTest *test;
    } cases[] = {
        {"io_roundtrip", test_durable_io_roundtrip},
        {"io_fail_nth", test_durable_io_fail_nth},
        {"io_link", test_durable_io_link},
        {"io_failed_write_partial", test_durable_io_failed_write_partial},
        {"io_status", test_durable_io_status},
        {"powerloss_bytes", test_durable_powerloss_drops_unsynced_bytes},
        {"powerloss_dirops", test_durable_powerloss_undoes_directory_ops},
        {"powerloss_link", test_durable_powerloss_link},
        {"powerloss_link_unlink", test_durable_powerloss_link_then_unlink},
        {"powerloss_random", test_durable_powerloss_random_keeps_synced},
        {"powerloss_newer_write_kept", test_durable_powerloss_newer_write_kept},
        {"crc32c_vectors", test_durable_crc32c_vectors},
        {"crc32c_chaining", test_durable_crc32c_chaining},
        {"crc32c_zeros", test_durable_crc32c_zeros},
        {"crc32c_sw_hw", test_durable_crc32c_sw_equals_hw},
        {"crc32c_flips", test_durable_crc32c_detects_flips},
        {"lock_twice", test_durable_lock_exclusive_twice_same_process},
        {"lock_aliases", test_durable_lock_other_names_same_directory},
        {"lock_shared", test_durable_lock_shared},
        {"lock_other_process", test_durable_lock_other_process},
        {"lock_dies_with_holder", test_durable_lock_dies_with_holder},
        {"lock_errors", test_durable_lock_errors},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return tu_run(durable_suite());
}
