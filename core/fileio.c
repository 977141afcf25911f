/*
 * core/fileio.c - the one table through which the core touches files,
 * with fault injection and a power-loss simulator for tests.
 *
 * Every durable-storage path (WAL, snapshots) calls iqdb__io()->op instead
 * of the POSIX function, so a test can:
 *  - make the N-th write, fsync (fsync, fdatasync, directory sync,
 *    write-back), ftruncate or rename (rename, link) fail with a chosen
 *    errno, once or from then on (SQLite's *fault.test approach: sweep N
 *    over every reachable point);
 *  - simulate power loss: between iqdb__io_powerloss_begin() and _crash(),
 *    every change that was not made durable (file bytes and sizes since the
 *    file's last fsync/fdatasync, creates, renames, links and unlinks since
 *    the directory's last sync) is recorded with what it replaced, and
 *    _crash() rolls the files back to that durable state, as the disk
 *    would be after the machine lost power.
 *
 * The wrappers cost one relaxed atomic increment per call when nothing is
 * injected; the real system call dominates by orders of magnitude.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "durable_int.h"
#include "iqdb_int.h"

/* ---- the real operations ------------------------------------------------ */

static int real_open(const char *path, int flags, mode_t mode)
{
    int fd;
    /* O_CLOEXEC always: a database file descriptor leaking into an exec'd
     * child would keep OFD locks and deleted files alive behind our back. */
    do
        fd = open(path, flags | O_CLOEXEC, mode);
    while (fd < 0 && errno == EINTR);
    return fd;
}

/* close is not retried on EINTR: on Linux the descriptor is gone even
 * then, and a retry could close a descriptor another thread just got. */
static int real_close(int fd)
{
    return close(fd);
}

static ssize_t real_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite(fd, buf, n, off);
}

static ssize_t real_pread(int fd, void *buf, size_t n, off_t off)
{
    return pread(fd, buf, n, off);
}

static int real_fsync(int fd)
{
    return fsync(fd);
}

static int real_fdatasync(int fd)
{
    return fdatasync(fd);
}

/* sync_file_range, waiting for the write-back or only starting it. 0
 * where the system or file system lacks it. */
static int real_sync_range(int fd, off_t off, off_t len, int wait)
{
#ifdef HAVE_SYNC_FILE_RANGE
    unsigned flags = SYNC_FILE_RANGE_WRITE;
    if (wait)
        flags |= SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WAIT_AFTER;
    if (sync_file_range(fd, off, len, flags) != 0 && errno != ENOSYS &&
        errno != EINVAL && errno != ESPIPE)
        return -1;
#else
    (void)fd;
    (void)off;
    (void)len;
    (void)wait;
#endif
    return 0;
}

static int real_ftruncate(int fd, off_t len)
{
    int r;
    do
        r = ftruncate(fd, len);
    while (r < 0 && errno == EINTR);
    return r;
}

static int real_rename(const char *from, const char *to)
{
    return rename(from, to);
}

static int real_unlink(const char *path)
{
    return unlink(path);
}

/* No EINTR loop, unlike open: neither POSIX nor Linux lists EINTR among
 * link(2)'s errors. */
static int real_link(const char *from, const char *to)
{
    return link(from, to);
}

/* A new or renamed directory entry is durable only once the directory
 * itself is synced (fsync(2): "Calling fsync() does not necessarily ensure
 * that the entry in the directory containing the file has also reached
 * disk"). */
static int real_fsync_dir(const char *dir)
{
    int fd = real_open(dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return -1;
    int r = fsync(fd);
    int e = errno;
    close(fd);
    if (r != 0)
        errno = e;
    return r;
}

/* Whole-buffer loops over the real calls, for the simulator's own
 * bookkeeping: it must neither count as injected operations nor come back
 * through the table (which would take the simulator's lock again). */
static int raw_pread_all(int fd, void *buf, size_t n, off_t off)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            errno = r < 0 ? errno : EIO;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

static int raw_pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            errno = w < 0 ? errno : EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

/* ---- fault injection ---------------------------------------------------- */

struct fault {
    atomic_long count; /* operations of this kind so far */
    atomic_long at;    /* index of the operation to fail, -1: none */
    atomic_int err;
    atomic_int sticky; /* fail every operation from `at` on */
};

static struct fault faults[IQDB_IO_OP_COUNT] = {
    {0, -1, 0, 0}, {0, -1, 0, 0}, {0, -1, 0, 0}, {0, -1, 0, 0}};

/* Count one operation of kind op; 1 (errno set) when it must fail. */
static int inject(int op)
{
    struct fault *f = &faults[op];
    long i = atomic_fetch_add_explicit(&f->count, 1, memory_order_relaxed);
    long at = atomic_load_explicit(&f->at, memory_order_relaxed);
    if (IQDB__LIKELY(at < 0))
        return 0;
    if (i == at || (i > at && atomic_load(&f->sticky))) {
        errno = atomic_load(&f->err);
        return 1;
    }
    return 0;
}

static void arm(int op, long n, int err, int sticky)
{
    if (op < 0 || op >= IQDB_IO_OP_COUNT)
        return;
    struct fault *f = &faults[op];
    atomic_store(&f->at, -1L);
    atomic_store(&f->count, 0L);
    atomic_store(&f->err, err);
    atomic_store(&f->sticky, sticky);
    atomic_store(&f->at, n < 0 ? -1L : n);
}

void iqdb__io_fail_nth(int op, long n, int err)
{
    arm(op, n, err, 0);
}

void iqdb__io_fail_from(int op, long n, int err)
{
    arm(op, n, err, 1);
}

long iqdb__io_count(int op)
{
    if (op < 0 || op >= IQDB_IO_OP_COUNT)
        return 0;
    return atomic_load(&faults[op].count);
}

void iqdb__io_reset(void)
{
    for (int op = 0; op < IQDB_IO_OP_COUNT; op++)
        arm(op, -1, 0, 0);
}

/* ---- power-loss simulation ---------------------------------------------- */
/*
 * Model: a file's bytes and size are durable as of its last successful
 * fsync/fdatasync (or as of _begin, for files untouched since); a
 * directory's entries as of its last fsync_dir. Everything in between is
 * recorded as an undo log:
 *  - per inode (found by fstat, so any descriptor of the file counts),
 *    each write or ftruncate with the bytes it replaced; the inode is kept
 *    open through a private descriptor so the log can be applied after the
 *    caller closed, renamed or unlinked the file;
 *  - per directory, each create, rename, link and unlink, with a
 *    hard-link backup of any entry that was replaced or removed (a link
 *    replaces nothing: link(2) refuses an existing target).
 * _crash(0) applies every undo (the pessimistic outcome). _crash(seed)
 * instead keeps a random subset of the unsynced writes, some of them only
 * as a prefix, and a random oldest prefix of the directory operations -
 * the reordered, torn outcomes a real disk may produce (journaling file
 * systems commit metadata in order, file data in any order).
 * After a crash the "machine" is dead: every operation through the table
 * fails with EIO (close excepted) until _end or _begin.
 *
 * While armed, every tracked operation runs under one mutex together with
 * its bookkeeping, so a crash from another thread sees each operation
 * either done and recorded or not started. Backups are hidden files named
 * ".iqdb-plbak-*" next to the entry they preserve. Renames and links are
 * modelled in the target's directory only. Because file state is keyed by
 * inode, not by path, a hard link needs no bookkeeping of its own beyond
 * the directory entry: writes, truncations and syncs through either name
 * (or a descriptor opened through either) land in the same record, and
 * the inode's private descriptor rolls its bytes back whichever names it
 * has left at the crash. Not modelled: a link kept by a sync of its
 * directory survives even when the crash undoes the unsynced create of
 * its source in another directory (as on a file system that orders
 * metadata per directory). The simulator's own memory comes from malloc,
 * not iqdb__malloc, so allocation fault tests do not trip it.
 */

struct pl_undo {
    struct pl_undo *next; /* older record */
    off_t off;
    size_t len;           /* bytes [off, off + len) were changed */
    size_t old_len;       /* of which [off, off + old_len) existed before */
    unsigned char *old;   /* their previous content */
    int shrink;           /* an ftruncate that cut the file */
};

struct pl_inode {
    struct pl_inode *next;
    dev_t dev;
    ino_t ino;
    int fd;               /* private read-write descriptor */
    off_t base_size;      /* durable size */
    struct pl_undo *undo; /* newest first */
};

enum { PL_CREATE, PL_RENAME, PL_UNLINK, PL_LINK };

struct pl_dirop {
    struct pl_dirop *next; /* older operation */
    int kind;
    char *a;      /* CREATE, UNLINK: the path; RENAME, LINK: from */
    char *b;      /* RENAME, LINK: to */
    char *backup; /* replaced or removed entry, or NULL */
    dev_t pdev;   /* the directory whose sync makes this durable */
    ino_t pino;
};

static pthread_mutex_t pl_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int pl_armed;
static int pl_dead;
static struct pl_inode *pl_inodes;
static struct pl_dirop *pl_dirops; /* newest first */
static unsigned long pl_backups;

static long pl_countdown = -1; /* operations left before an automatic
                                  crash (iqdb__io_powerloss_crash_at) */
static uint64_t pl_countdown_seed;
static int pl_crash_locked(uint64_t seed);

/* Every tracked operation starts here, with pl_mu held: it fails on a
 * dead machine, and the one an automatic crash was set for crashes it
 * first. */
static int pl_dead_check(void)
{
    if (!pl_dead && pl_countdown >= 0 && pl_countdown-- == 0)
        pl_crash_locked(pl_countdown_seed);
    if (pl_dead) {
        errno = EIO;
        return 1;
    }
    return 0;
}

/* Copy of path's directory part ("." when it has none). */
static char *pl_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return strdup(".");
    size_t n = (size_t)(slash - path);
    if (n == 0)
        n = 1; /* "/name": the root */
    char *p = malloc(n + 1);
    if (p != NULL) {
        memcpy(p, path, n);
        p[n] = '\0';
    }
    return p;
}

static int pl_parent_key(const char *path, dev_t *dev, ino_t *ino)
{
    char *dir = pl_parent(path);
    if (dir == NULL) {
        errno = ENOMEM;
        return -1;
    }
    struct stat st;
    int r = stat(dir, &st);
    free(dir);
    if (r == 0) {
        *dev = st.st_dev;
        *ino = st.st_ino;
    }
    return r;
}

/* Hard-link path to a fresh hidden name beside it; the backup's name, or
 * NULL with errno. */
static char *pl_backup(const char *path)
{
    char *dir = pl_parent(path);
    if (dir == NULL)
        return NULL;
    size_t n = strlen(dir) + 64;
    char *b = malloc(n);
    if (b != NULL) {
        snprintf(b, n, "%s/.iqdb-plbak-%ld-%lu", dir, (long)getpid(),
                 ++pl_backups);
        if (link(path, b) != 0) {
            int e = errno;
            free(b);
            b = NULL;
            errno = e;
        }
    } else {
        errno = ENOMEM;
    }
    free(dir);
    return b;
}

static struct pl_dirop *pl_push_dirop(int kind, const char *a, const char *b,
                                      char *backup, const char *keypath)
{
    struct pl_dirop *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    d->kind = kind;
    d->a = strdup(a);
    d->b = b ? strdup(b) : NULL;
    d->backup = backup;
    if (d->a == NULL || (b != NULL && d->b == NULL) ||
        pl_parent_key(keypath, &d->pdev, &d->pino) != 0) {
        free(d->a);
        free(d->b);
        free(d);
        return NULL;
    }
    d->next = pl_dirops;
    pl_dirops = d;
    return d;
}

static void pl_free_dirop(struct pl_dirop *d, int drop_backup)
{
    if (drop_backup && d->backup != NULL)
        unlink(d->backup);
    free(d->a);
    free(d->b);
    free(d->backup);
    free(d);
}

static void pl_free_undo(struct pl_undo *u)
{
    while (u != NULL) {
        struct pl_undo *next = u->next;
        free(u->old);
        free(u);
        u = next;
    }
}

/* The record of the file behind fd, created on first touch (its current
 * state being durable). *size receives the current size. NULL with errno
 * when fd cannot be tracked. */
static struct pl_inode *pl_inode(int fd, off_t *size)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return NULL;
    *size = st.st_size;
    if (!S_ISREG(st.st_mode)) {
        errno = EINVAL;
        return NULL;
    }
    for (struct pl_inode *i = pl_inodes; i != NULL; i = i->next)
        if (i->dev == st.st_dev && i->ino == st.st_ino)
            return i;
    struct pl_inode *i = calloc(1, sizeof *i);
    if (i == NULL)
        return NULL;
    /* A fresh read-write description of the same file (fd itself may be
     * write-only, and will be closed by its owner). */
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    i->fd = open(proc, O_RDWR | O_CLOEXEC);
    if (i->fd < 0)
        i->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (i->fd < 0) {
        free(i);
        return NULL;
    }
    i->dev = st.st_dev;
    i->ino = st.st_ino;
    i->base_size = st.st_size;
    i->next = pl_inodes;
    pl_inodes = i;
    return i;
}

/* Record that [off, off + len) of the file is about to change; the bytes
 * there that exist now are saved. */
static struct pl_undo *pl_record(struct pl_inode *ino, off_t size, off_t off,
                                 size_t len, int shrink)
{
    struct pl_undo *u = calloc(1, sizeof *u);
    if (u == NULL)
        return NULL;
    u->off = off;
    u->len = len;
    u->shrink = shrink;
    if (off < size) {
        uint64_t avail = (uint64_t)(size - off);
        u->old_len = avail < len ? (size_t)avail : len;
        u->old = malloc(u->old_len ? u->old_len : 1);
        if (u->old == NULL ||
            (u->old_len > 0 &&
             raw_pread_all(ino->fd, u->old, u->old_len, off) != 0)) {
            free(u->old);
            free(u);
            errno = EIO;
            return NULL;
        }
    }
    return u;
}

static ssize_t pl_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    pthread_mutex_lock(&pl_mu);
    ssize_t r = -1;
    off_t size;
    struct pl_inode *ino;
    struct pl_undo *u = NULL;
    if (pl_dead_check() || (ino = pl_inode(fd, &size)) == NULL ||
        (u = pl_record(ino, size, off, n, 0)) == NULL)
        goto out;
    r = real_pwrite(fd, buf, n, off);
    if (r > 0) {
        u->len = (size_t)r;
        if (u->old_len > u->len)
            u->old_len = u->len;
        u->next = ino->undo;
        ino->undo = u;
        u = NULL;
    }
out:
    if (u != NULL) {
        int e = errno;
        pl_free_undo(u);
        errno = e;
    }
    pthread_mutex_unlock(&pl_mu);
    return r;
}

/* Called with pl_mu held. */
static int pl_ftruncate_locked(int fd, off_t len)
{
    int r = -1;
    off_t size;
    struct pl_inode *ino;
    struct pl_undo *u = NULL;
    if (pl_dead_check() || (ino = pl_inode(fd, &size)) == NULL)
        goto out;
    if (len < size)
        u = pl_record(ino, size, len, (size_t)(size - len), 1);
    else
        u = pl_record(ino, size, size, (size_t)(len - size), 0);
    if (u == NULL)
        goto out;
    r = real_ftruncate(fd, len);
    if (r == 0) {
        u->next = ino->undo;
        ino->undo = u;
        u = NULL;
    }
out:
    if (u != NULL) {
        int e = errno;
        pl_free_undo(u);
        errno = e;
    }
    return r;
}

static int pl_ftruncate(int fd, off_t len)
{
    pthread_mutex_lock(&pl_mu);
    int r = pl_ftruncate_locked(fd, len);
    pthread_mutex_unlock(&pl_mu);
    return r;
}

static int pl_sync(int fd, int data_only)
{
    pthread_mutex_lock(&pl_mu);
    int r = -1;
    if (pl_dead_check())
        goto out;
    r = data_only ? real_fdatasync(fd) : real_fsync(fd);
    if (r == 0) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
            for (struct pl_inode *i = pl_inodes; i != NULL; i = i->next) {
                if (i->dev == st.st_dev && i->ino == st.st_ino) {
                    pl_free_undo(i->undo);
                    i->undo = NULL;
                    i->base_size = st.st_size;
                }
            }
        }
    }
out:
    pthread_mutex_unlock(&pl_mu);
    return r;
}

static int pl_open(const char *path, int flags, mode_t mode)
{
    pthread_mutex_lock(&pl_mu);
    int fd = -1;
    if (pl_dead_check())
        goto out;
    struct stat st;
    int existed = lstat(path, &st) == 0;
    /* O_TRUNC on an existing file is an unsynced truncation: do it
     * through the recorded path. */
    int trunc = (flags & O_TRUNC) && existed && S_ISREG(st.st_mode) &&
                (flags & O_ACCMODE) != O_RDONLY;
    fd = real_open(path, trunc ? flags & ~O_TRUNC : flags, mode);
    if (fd < 0)
        goto out;
    if (trunc) {
        if (pl_ftruncate_locked(fd, 0) != 0) {
            int e = errno;
            close(fd);
            fd = -1;
            errno = e;
            goto out;
        }
    }
    if ((flags & O_CREAT) && !existed &&
        pl_push_dirop(PL_CREATE, path, NULL, NULL, path) == NULL) {
        close(fd);
        unlink(path);
        fd = -1;
        errno = ENOMEM;
    }
out:
    pthread_mutex_unlock(&pl_mu);
    return fd;
}

static int pl_rename(const char *from, const char *to)
{
    pthread_mutex_lock(&pl_mu);
    int r = -1;
    char *backup = NULL;
    struct stat st, fst;
    if (pl_dead_check())
        goto out;
    if (lstat(to, &st) == 0) {
        /* from and to already name one inode (a link made through the
         * table): rename(2) changes nothing then, so there is nothing to
         * undo - and the undo, rename(backup, to) between two names of
         * that inode, would itself do nothing and leave the backup. */
        if (lstat(from, &fst) == 0 && fst.st_dev == st.st_dev &&
            fst.st_ino == st.st_ino) {
            r = real_rename(from, to);
            goto out;
        }
        if ((backup = pl_backup(to)) == NULL)
            goto out;
    }
    r = real_rename(from, to);
    if (r != 0 || pl_push_dirop(PL_RENAME, from, to, backup, to) == NULL) {
        int e = r != 0 ? errno : ENOMEM;
        if (r == 0)
            real_rename(to, from);
        if (backup != NULL) {
            if (r == 0)
                rename(backup, to);
            else
                unlink(backup);
            free(backup);
        }
        r = -1;
        errno = e;
    }
out:
    pthread_mutex_unlock(&pl_mu);
    return r;
}

/* A new name for an existing inode: the only thing to undo is the entry
 * itself (the inode's bytes are tracked by inode, see above). */
static int pl_link(const char *from, const char *to)
{
    pthread_mutex_lock(&pl_mu);
    int r = -1;
    if (pl_dead_check())
        goto out;
    r = real_link(from, to);
    if (r == 0 && pl_push_dirop(PL_LINK, from, to, NULL, to) == NULL) {
        /* Untracked, the name would outlive a crash it must not: take it
         * back and fail the call instead. */
        unlink(to);
        r = -1;
        errno = ENOMEM;
    }
out:
    pthread_mutex_unlock(&pl_mu);
    return r;
}

static int pl_unlink(const char *path)
{
    pthread_mutex_lock(&pl_mu);
    int r = -1;
    char *backup;
    if (pl_dead_check() || (backup = pl_backup(path)) == NULL)
        goto out;
    r = real_unlink(path);
    if (r != 0 || pl_push_dirop(PL_UNLINK, path, NULL, backup, path) == NULL) {
        int e = r != 0 ? errno : ENOMEM;
        if (r == 0)
            rename(backup, path);
        else
            unlink(backup);
        free(backup);
        r = -1;
        errno = e;
    }
out:
    pthread_mutex_unlock(&pl_mu);
    return r;
}

static int pl_fsync_dir(const char *dir)
{
    pthread_mutex_lock(&pl_mu);
    int r = -1;
    struct stat st;
    if (pl_dead_check())
        goto out;
    r = real_fsync_dir(dir);
    if (r != 0 || stat(dir, &st) != 0)
        goto out;
    for (struct pl_dirop **pp = &pl_dirops; *pp != NULL;) {
        struct pl_dirop *d = *pp;
        if (d->pdev == st.st_dev && d->pino == st.st_ino) {
            *pp = d->next;
            pl_free_dirop(d, 1);
        } else {
            pp = &d->next;
        }
    }
out:
    pthread_mutex_unlock(&pl_mu);
    return r;
}

/* Forget every record; backups are dropped (their entries are gone for
 * good) unless the caller already restored them. Called with pl_mu. */
static void pl_clear(void)
{
    while (pl_inodes != NULL) {
        struct pl_inode *i = pl_inodes;
        pl_inodes = i->next;
        pl_free_undo(i->undo);
        close(i->fd);
        free(i);
    }
    while (pl_dirops != NULL) {
        struct pl_dirop *d = pl_dirops;
        pl_dirops = d->next;
        pl_free_dirop(d, 1);
    }
}

static uint64_t pl_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Undo bytes [from, to) of record u (offsets within the write): old
 * bytes where they existed, zeros where the write had extended the file
 * (a hole, as after a crash that persisted the new size but not the
 * data). */
static int pl_undo_sub(int fd, const struct pl_undo *u, size_t from,
                       size_t to)
{
    static const unsigned char zeros[4096];
    size_t old_end = to < u->old_len ? to : u->old_len;
    if (from < old_end &&
        raw_pwrite_all(fd, u->old + from, old_end - from,
                       u->off + (off_t)from) != 0)
        return -1;
    for (size_t at = from > u->old_len ? from : u->old_len; at < to;) {
        size_t n = to - at < sizeof zeros ? to - at : sizeof zeros;
        if (raw_pwrite_all(fd, zeros, n, u->off + (off_t)at) != 0)
            return -1;
        at += n;
    }
    return 0;
}

/* File ranges [lo, hi) that newer kept writes decided (pl_crash_inode). */
struct pl_kept {
    struct pl_range {
        off_t lo, hi;
    } *r;
    size_t n, cap;
};

static int pl_kept_add(struct pl_kept *k, off_t lo, off_t hi)
{
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 16;
        struct pl_range *r = realloc(k->r, cap * sizeof *r);
        if (r == NULL)
            return -1;
        k->r = r;
        k->cap = cap;
    }
    k->r[k->n].lo = lo;
    k->r[k->n++].hi = hi;
    return 0;
}

/* Undo [keep, len) of record u except where a newer kept write (in k)
 * overwrote it: those bytes hold the newer data after the crash, which
 * is what a disk that persisted the newer write but lost this one
 * shows. */
static int pl_undo_range(int fd, const struct pl_undo *u, size_t keep,
                         const struct pl_kept *k)
{
    if (keep >= u->len)
        return 0;
    size_t span = u->len - keep;
    unsigned char *cov = NULL;
    for (size_t i = 0; i < k->n; i++) {
        off_t from = u->off + (off_t)keep, to = u->off + (off_t)u->len;
        off_t lo = k->r[i].lo > from ? k->r[i].lo : from;
        off_t hi = k->r[i].hi < to ? k->r[i].hi : to;
        if (lo >= hi)
            continue;
        if (cov == NULL && (cov = calloc(span, 1)) == NULL)
            return -1;
        memset(cov + (lo - u->off - (off_t)keep), 1, (size_t)(hi - lo));
    }
    if (cov == NULL)
        return pl_undo_sub(fd, u, keep, u->len);
    int r = 0;
    for (size_t at = 0; at < span && r == 0;) {
        size_t end = at;
        while (end < span && cov[end] == cov[at])
            end++;
        if (!cov[at])
            r = pl_undo_sub(fd, u, keep + at, keep + end);
        at = end;
    }
    free(cov);
    return r;
}

/* Roll one file back through its private descriptor, newest change
 * first, so each record's saved bytes are the state it overwrote. */
static int pl_crash_inode(struct pl_inode *ino, uint64_t *rng, int random)
{
    off_t final = ino->base_size;
    struct pl_undo *list = ino->undo;
    struct pl_kept kept = {NULL, 0, 0};
    ino->undo = NULL;
    int r = 0;
    for (struct pl_undo *u = list; u != NULL && r == 0; u = u->next) {
        size_t keep = 0;
        if (random && !u->shrink && u->len > 0) {
            switch (pl_rand(rng) % 4) {
            case 2:
                keep = u->len;
                break;
            case 3:
                keep = (size_t)(pl_rand(rng) % u->len);
                break;
            default:
                break;
            }
        }
        if (keep > 0 && u->off + (off_t)keep > final)
            final = u->off + (off_t)keep;
        r = pl_undo_range(ino->fd, u, keep, &kept);
        if (r == 0 && keep > 0)
            r = pl_kept_add(&kept, u->off, u->off + (off_t)keep);
    }
    free(kept.r);
    pl_free_undo(list);
    if (r == 0)
        r = real_ftruncate(ino->fd, final);
    return r;
}

static int pl_crash_dirop(const struct pl_dirop *d)
{
    switch (d->kind) {
    case PL_CREATE:
        if (unlink(d->a) != 0 && errno != ENOENT)
            return -1;
        return 0;
    case PL_RENAME:
        if (rename(d->b, d->a) != 0)
            return -1;
        return d->backup ? rename(d->backup, d->b) : 0;
    case PL_LINK:
        /* Newer operations on the name (an unlink, a rename over it or
         * away) were undone first, so the name is back as link made it. */
        return unlink(d->b);
    default:
        return rename(d->backup, d->a);
    }
}

void iqdb__io_powerloss_begin(void)
{
    pthread_mutex_lock(&pl_mu);
    pl_clear();
    pl_dead = 0;
    pl_countdown = -1;
    atomic_store(&pl_armed, 1);
    pthread_mutex_unlock(&pl_mu);
}

int iqdb__io_powerloss_crash(uint64_t seed)
{
    pthread_mutex_lock(&pl_mu);
    int r = -1;
    if (atomic_load(&pl_armed) && !pl_dead)
        r = pl_crash_locked(seed);
    pthread_mutex_unlock(&pl_mu);
    return r;
}

void iqdb__io_powerloss_crash_at(long n, uint64_t seed)
{
    pthread_mutex_lock(&pl_mu);
    pl_countdown = n;
    pl_countdown_seed = seed;
    pthread_mutex_unlock(&pl_mu);
}

int iqdb__io_powerloss_dead(void)
{
    pthread_mutex_lock(&pl_mu);
    int d = pl_dead;
    pthread_mutex_unlock(&pl_mu);
    return d;
}

/* The crash itself, pl_mu held, armed and alive. */
static int pl_crash_locked(uint64_t seed)
{
    int r = 0;
    uint64_t rng = seed;
    pl_countdown = -1;
    /* File contents first, through the private descriptors, so names do
     * not matter; then the directory entries, newest first. Other threads'
     * operations wait on pl_mu and then find the machine dead. */
    for (struct pl_inode *i = pl_inodes; i != NULL; i = i->next)
        if (pl_crash_inode(i, &rng, seed != 0) != 0)
            r = -1;
    size_t n = 0;
    for (struct pl_dirop *d = pl_dirops; d != NULL; d = d->next)
        n++;
    /* A journaling file system persists metadata operations in order:
     * keep the oldest `keep` of them. */
    size_t keep = seed != 0 ? (size_t)(pl_rand(&rng) % (n + 1)) : 0;
    size_t undo = n - keep;
    while (pl_dirops != NULL) {
        struct pl_dirop *d = pl_dirops;
        pl_dirops = d->next;
        int undone = undo > 0;
        if (undone) {
            undo--;
            if (pl_crash_dirop(d) != 0)
                r = -1;
        }
        pl_free_dirop(d, !undone);
    }
    pl_clear();
    pl_dead = 1;
    return r;
}

void iqdb__io_powerloss_end(void)
{
    pthread_mutex_lock(&pl_mu);
    pl_clear();
    pl_dead = 0;
    pl_countdown = -1;
    atomic_store(&pl_armed, 0);
    pthread_mutex_unlock(&pl_mu);
}

/* ---- the table ---------------------------------------------------------- */

static int armed(void)
{
    return IQDB__UNLIKELY(
        atomic_load_explicit(&pl_armed, memory_order_acquire) != 0);
}

static int io_open(const char *path, int flags, mode_t mode)
{
    if (armed())
        return pl_open(path, flags, mode);
    return real_open(path, flags, mode);
}

static ssize_t io_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (inject(IQDB_IO_OP_WRITE)) {
        /* A failing write may still have stored a prefix, as a real one
         * that hits EIO or ENOSPC part-way does; callers must cope with
         * the partial bytes. */
        int e = errno;
        size_t half = n / 2;
#ifdef O_DIRECT
        /* On a descriptor opened with O_DIRECT, a prefix the device
         * could have taken: whole blocks. */
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0 && (fl & O_DIRECT))
            half &= ~(size_t)4095;
#endif
        if (half > 0) {
            if (armed())
                pl_pwrite(fd, buf, half, off);
            else
                real_pwrite(fd, buf, half, off);
        }
        errno = e;
        return -1;
    }
    if (armed())
        return pl_pwrite(fd, buf, n, off);
    return real_pwrite(fd, buf, n, off);
}

static ssize_t io_pread(int fd, void *buf, size_t n, off_t off)
{
    if (armed()) {
        pthread_mutex_lock(&pl_mu);
        int dead = pl_dead_check();
        pthread_mutex_unlock(&pl_mu);
        if (dead)
            return -1;
    }
    return real_pread(fd, buf, n, off);
}

/* An injected fsync failure syncs nothing: under the simulator the data
 * stays unsynced, as it may after a real EIO from fsync. */
static int io_fsync(int fd)
{
    if (inject(IQDB_IO_OP_FSYNC))
        return -1;
    if (armed())
        return pl_sync(fd, 0);
    return real_fsync(fd);
}

static int io_fdatasync(int fd)
{
    if (inject(IQDB_IO_OP_FSYNC))
        return -1;
    if (armed())
        return pl_sync(fd, 1);
    return real_fdatasync(fd);
}

/* Under the simulator a write-back changes nothing durable: the bytes
 * stay unsynced until an fsync, as on a disk with a volatile cache. */
static int io_sync_range(int fd, off_t off, off_t len, int wait)
{
    if (inject(IQDB_IO_OP_FSYNC))
        return -1;
    if (armed()) {
        pthread_mutex_lock(&pl_mu);
        int dead = pl_dead_check();
        pthread_mutex_unlock(&pl_mu);
        return dead ? -1 : 0;
    }
    return real_sync_range(fd, off, len, wait);
}

static int io_writeback(int fd, off_t off, off_t len)
{
    return io_sync_range(fd, off, len, 1);
}

static int io_start_writeback(int fd, off_t off, off_t len)
{
    return io_sync_range(fd, off, len, 0);
}

static int io_ftruncate(int fd, off_t len)
{
    if (inject(IQDB_IO_OP_FTRUNCATE))
        return -1;
    if (armed())
        return pl_ftruncate(fd, len);
    return real_ftruncate(fd, len);
}

static int io_rename(const char *from, const char *to)
{
    if (inject(IQDB_IO_OP_RENAME))
        return -1;
    if (armed())
        return pl_rename(from, to);
    return real_rename(from, to);
}

static int io_unlink(const char *path)
{
    if (armed())
        return pl_unlink(path);
    return real_unlink(path);
}

/* A directory-entry change like rename, so it shares rename's fault
 * class: a test sweeping rename failures reaches links too. */
static int io_link(const char *from, const char *to)
{
    if (inject(IQDB_IO_OP_RENAME))
        return -1;
    if (armed())
        return pl_link(from, to);
    return real_link(from, to);
}

static int io_fsync_dir(const char *dir)
{
    if (inject(IQDB_IO_OP_FSYNC))
        return -1;
    if (armed())
        return pl_fsync_dir(dir);
    return real_fsync_dir(dir);
}

static const iqdb_io io_table = {
    .open = io_open,
    .close = real_close,
    .pwrite = io_pwrite,
    .pread = io_pread,
    .fsync = io_fsync,
    .fdatasync = io_fdatasync,
    .ftruncate = io_ftruncate,
    .rename = io_rename,
    .unlink = io_unlink,
    .link = io_link,
    .fsync_dir = io_fsync_dir,
    .writeback = io_writeback,
    .start_writeback = io_start_writeback,
};

const iqdb_io *iqdb__io(void)
{
    return &io_table;
}

/* ---- helpers ------------------------------------------------------------ */

int iqdb__io_pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
    const unsigned char *p = buf;
    const iqdb_io *io = iqdb__io();
    while (n > 0) {
        ssize_t w = io->pwrite(fd, p, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            /* pwrite makes no progress only on a broken device; looping
             * would spin forever. */
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

int iqdb__io_pread_all(int fd, void *buf, size_t n, off_t off)
{
    unsigned char *p = buf;
    const iqdb_io *io = iqdb__io();
    while (n > 0) {
        ssize_t r = io->pread(fd, p, n, off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            return -2;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

int iqdb__io_status(int err)
{
    switch (err) {
    case ENOSPC:
#ifdef EDQUOT
    case EDQUOT:
#endif
        return IQDB_ENOSPC;
    case ENOMEM:
        return IQDB_ENOMEM;
    case EROFS:
    case EACCES:
    case EPERM:
        return IQDB_EREADONLY;
    default:
        return IQDB_EIO;
    }
}
