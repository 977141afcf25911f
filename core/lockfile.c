/*
 * core/lockfile.c - one writer per database directory, many readers.
 *
 * The lock is a byte-range lock over the whole of <dir>/LOCK: an open
 * file description (OFD) lock, F_OFD_SETLK, where the kernel has them
 * (Linux 3.15+), else flock(2). Both belong to the open file description,
 * not the process, so
 *  - they conflict between two opens of the file even inside one process
 *    (classic POSIX fcntl locks would not: a process never conflicts with
 *    itself, and closing any descriptor of the file drops all of them);
 *  - the kernel drops them when the holder dies, so a crash never leaves
 *    a stale lock behind (which is why LOCK is never unlinked: unlinking
 *    a lock file races with a process that just opened it).
 * On top of the kernel lock, a process-wide registry keyed by the
 * directory's (st_dev, st_ino) catches a second open from this process
 * first - through any path naming the directory: symlink, relative path,
 * bind mount - so the message can say "this process" rather than blame
 * another one.
 *
 * The writer stores its pid in LOCK (unsynced, for messages only).
 *
 * fork(): the child shares the parent's open file descriptions, hence its
 * locks, and inherits a copy of the registry; a child that wants its own
 * database handle should exec first (descriptors are O_CLOEXEC).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "durable_int.h"
#include "iqdb_int.h"

#define LOCK_NAME "LOCK"

struct iqdb_lock {
    struct iqdb_lock *next; /* registry */
    dev_t dev;
    ino_t ino;
    int exclusive;
    int fd;    /* -1: registry only (a read-only file system) */
    char *dir; /* as the caller named it, for messages */
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct iqdb_lock *reg;

/* A lock of this process on the same directory that conflicts with the
 * requested mode; message set. */
static int registry_conflict(const char *dir, const struct stat *st,
                             int exclusive)
{
    for (const struct iqdb_lock *l = reg; l != NULL; l = l->next) {
        if (l->dev != st->st_dev || l->ino != st->st_ino)
            continue;
        if (l->exclusive)
            return iqdb__set_error(
                NULL, IQDB_ELOCKED,
                "database directory '%s' is already open for writing in "
                "this process (as '%s')",
                dir, l->dir);
        if (exclusive)
            return iqdb__set_error(
                NULL, IQDB_ELOCKED,
                "database directory '%s' is open read-only in this "
                "process (as '%s'); it cannot be opened for writing until "
                "that handle is closed",
                dir, l->dir);
    }
    return 0;
}

/* Open <dir>/LOCK. A reader on a read-only file system where LOCK does
 * not exist gets fd -1 and no kernel lock: no writer can exist there. */
static int lock_file_open(const char *dir, int exclusive, int *fd)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/" LOCK_NAME, dir) >=
        sizeof path)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "database directory path too long: '%s'", dir);
    /* Not through iqdb__io(): the lock is not data, and the power-loss
     * simulator must not unlink it under a live holder. */
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd >= 0)
        return 0;
    int e = errno;
    if (!exclusive && (e == EROFS || e == EACCES)) {
        *fd = open(path, O_RDONLY | O_CLOEXEC);
        if (*fd >= 0)
            return 0;
        if (e == EROFS && errno == ENOENT)
            return 0;
    }
    return iqdb__set_error(NULL, iqdb__io_status(e),
                           "cannot open lock file '%s': %s", path,
                           strerror(e));
}

/* Pid of the writer holding the lock, or 0 when the holders are readers
 * (or unknown). */
static long lock_writer_pid(int fd)
{
#ifdef F_OFD_GETLK
    struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0 || fl.l_type != F_WRLCK)
        return 0;
#endif
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    long pid = strtol(buf, NULL, 10);
    return pid > 0 ? pid : -1;
}

static int lock_conflict(const char *dir, int fd, int exclusive)
{
    long pid = lock_writer_pid(fd);
    if (!exclusive || pid != 0) {
        char who[48] = "";
        if (pid > 0)
            snprintf(who, sizeof who, " (pid %ld)", pid);
        return iqdb__set_error(NULL, IQDB_ELOCKED,
                               "database directory '%s' is locked by a "
                               "writer in another process%s",
                               dir, who);
    }
#ifdef F_OFD_GETLK
    return iqdb__set_error(NULL, IQDB_ELOCKED,
                           "database directory '%s' is open read-only in "
                           "another process; a writer must wait until it "
                           "is closed",
                           dir);
#else
    return iqdb__set_error(NULL, IQDB_ELOCKED,
                           "database directory '%s' is locked by another "
                           "process",
                           dir);
#endif
}

/* Store our pid for other processes' messages. Best effort: a failure
 * here is not a failure to lock. */
static void write_pid(int fd)
{
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        return;
}

/* Take the kernel lock without waiting. */
static int lock_take(const char *dir, int fd, int exclusive)
{
    int r = -1;
#ifdef F_OFD_SETLK
    struct flock fl = {.l_type = (short)(exclusive ? F_WRLCK : F_RDLCK),
                       .l_whence = SEEK_SET};
    r = fcntl(fd, F_OFD_SETLK, &fl);
    if (r != 0 && errno == EINVAL) /* kernel without OFD locks */
#endif
        r = flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB);
    if (r == 0)
        return 0;
    int e = errno;
    if (e == EAGAIN || e == EACCES || e == EWOULDBLOCK)
        return lock_conflict(dir, fd, exclusive);
    return iqdb__set_error(NULL, iqdb__io_status(e),
                           "cannot lock database directory '%s': %s", dir,
                           strerror(e));
}

int iqdb__lock_acquire(const char *dir, int exclusive, iqdb_lock **out)
{
    if (dir == NULL || out == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "iqdb__lock_acquire: NULL argument");
    *out = NULL;
    struct stat st;
    if (stat(dir, &st) != 0) {
        int e = errno;
        return iqdb__set_error(NULL, iqdb__io_status(e),
                               "cannot lock database directory '%s': %s", dir,
                               strerror(e));
    }
    if (!S_ISDIR(st.st_mode))
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "cannot lock '%s': not a directory", dir);
    exclusive = exclusive != 0;

    /* The registry lock is held across the kernel lock so two threads of
     * this process racing for one directory get the "this process"
     * message, never a confusing kernel-level conflict. */
    iqdb_lock *l = NULL;
    int fd = -1;
    pthread_mutex_lock(&reg_mu);
    int rc = registry_conflict(dir, &st, exclusive);
    if (rc != 0)
        goto fail_registry;
    l = iqdb__calloc(1, sizeof *l);
    if (l == NULL || (l->dir = iqdb__strdup(dir)) == NULL) {
        rc = iqdb__set_error(NULL, IQDB_ENOMEM, "out of memory locking '%s'",
                             dir);
        goto fail_alloc;
    }
    rc = lock_file_open(dir, exclusive, &fd);
    if (rc != 0)
        goto fail_alloc;
    if (fd >= 0 && (rc = lock_take(dir, fd, exclusive)) != 0)
        goto fail_take;
    if (exclusive)
        write_pid(fd);
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    l->exclusive = exclusive;
    l->fd = fd;
    l->next = reg;
    reg = l;
    pthread_mutex_unlock(&reg_mu);
    *out = l;
    return 0;

fail_take:
    close(fd);
fail_alloc:
    if (l != NULL)
        iqdb__free(l->dir);
    iqdb__free(l);
fail_registry:
    pthread_mutex_unlock(&reg_mu);
    return rc;
}

void iqdb__lock_release(iqdb_lock *lock)
{
    if (lock == NULL)
        return;
    pthread_mutex_lock(&reg_mu);
    for (iqdb_lock **pp = &reg; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == lock) {
            *pp = lock->next;
            break;
        }
    }
    /* Closing the only descriptor of this open file description drops
     * the OFD or flock lock. Done under reg_mu so a thread that sees the
     * registry entry gone also finds the kernel lock gone. */
    if (lock->fd >= 0)
        close(lock->fd);
    pthread_mutex_unlock(&reg_mu);
    iqdb__free(lock->dir);
    iqdb__free(lock);
}
