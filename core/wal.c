/*
 * core/wal.c - the write-ahead log: frames, group commit, replay.
 * The API and its failure rules are described in wal_int.h.
 *
 * FILE FORMAT
 *
 * All integers are little-endian. A WAL file is a 40-byte header
 * followed by zero or more frames. Every frame starts at an offset that
 * is a multiple of 8 (the header is 40 bytes and every frame a multiple
 * of 8), which lets replay look for intact frames after a damaged one at
 * 8-byte steps.
 *
 * Header:
 *    0   8  magic: "IQDBWAL\0"
 *    8   4  format version: 1
 *   12   4  reserved, 0
 *   16   8  salt: random, new for every file (creation and each reset)
 *   24   8  base sequence number: the sequence number of the first
 *           frame (1 .. 2^63 - 1)
 *   32   4  CRC32C of bytes 0..31
 *   36   4  reserved, 0
 *
 * Frame (32-byte frame header, then the payload, zero-padded to a
 * multiple of 8 bytes):
 *    0   4  marker 0x52465149 (the bytes "IQFR")
 *    4   4  payload length in bytes, at most IQDB_WAL_MAX_PAYLOAD (2^30)
 *    8   8  sequence number: the header's base for the first frame, then
 *           previous + 1
 *   16   8  durable sequence number: the highest sequence number known
 *           to be on stable storage when this frame was written
 *           (base - 1 when none); always below this frame's own
 *   24   4  payload CRC32C over the payload and its padding
 *   28   4  header CRC32C over the 8 salt bytes (as in the file header)
 *           followed by bytes 0..27 of this frame header
 *   32   n  payload, then 0..7 zero bytes of padding
 *
 * The header CRC covers the payload CRC, so together they cover every
 * byte of the frame. Seeding it with the salt makes a frame left over
 * from an earlier file (before a reset) fail its check instead of being
 * replayed. The durable sequence number is what lets replay tell a torn
 * write from damaged acknowledged data (policy in wal_int.h): a frame
 * written after frame k had been synced proves frame k was durable.
 *
 * PREALLOCATION
 *
 * With preallocation on (iqdb__wal_set_prealloc), the file is usually
 * longer than the log: appends overwrite space that was already
 * allocated and written (with zeros), because on ext4 and similar file
 * systems an fdatasync after a write that grows the file must also
 * commit the size change to the journal (measured: about 2.5x the cost
 * of syncing a rewrite in place). So the handle keeps the end of
 * the last frame (the logical end: iqdb__wal_size) apart from the
 * physical size. When a frame would pass the physical size, zero bytes
 * are written after where it will end, max(chunk, the frame's size),
 * where chunk is what the log already holds, between 64 KiB and PREALLOC,
 * to a 4 KiB boundary, and then the frame itself. The next sync (the
 * frame's own under ALWAYS) carries the size change once; the frames
 * written into the zeros after it then sync without a metadata commit.
 * The extension gets no sync of its own: that would cost the extending
 * append a second sync and buy nothing, since a sync persists whatever
 * size its data needs. Zeros are written rather than fallocate'd:
 * fallocate leaves unwritten extents whose first write again needs a
 * journal commit. The zeros are written past the frame rather than
 * before it so a large frame's bytes are not written twice.
 *
 * Frames of BIG_FRAME bytes and more do not extend with zeros: space
 * reaches a frame in place only by being written twice (zeros, then the
 * frame), which for a large frame costs more than the size commit saves
 * (measured on ext4: 3.2 MB frames, 3.4 ms median appended at the end,
 * 5-6 ms with zero extension), so such a frame that passes the physical
 * size is written at the end as without preallocation. One that fits
 * into zeros already there is written in place like any other.
 *
 * Replay therefore treats zero bytes from the end of the last good frame
 * (or from the end of the damage, to 8-byte alignment) to the end of the
 * file as the clean end of the log, not as damage: a frame always starts
 * with a non-zero marker, so zeros can never be a frame. Damage is the
 * span from the first bad frame to the last non-zero byte (or the end of
 * the last intact frame after it); that is what truncated_bytes counts
 * and what a repairing replay truncates away, together with the zero
 * tail (the next append re-extends). A clean zero tail is kept.
 *
 * With preallocation off the file ends where the log does and replay keeps
 * the old rule: anything after the last good frame, zeros included, is
 * damage. A preallocated file opened with it off therefore
 * loses its zero tail to a truncation reported as damage (no frame is
 * lost). Preallocation does not change the format: a preallocated file is
 * a valid version 1 WAL whose tail an older reader truncates as torn.
 *
 * A reset still writes a new header-only file under the temporary name
 * and renames it into place rather than rewriting the header in place:
 * a header rewritten in place can be torn by a power loss (an
 * unreadable header is IQDB_ECORRUPT at open), and zeroing the old frames
 * before switching the header risks old intact frames surviving after a
 * zeroed gap, which replay would have to call corruption. The old frames
 * must be overwritten with zeros anyway for the next replay to find a
 * clean end, so reusing the old space would save no I/O over extending
 * the new file when its first frame is appended.
 *
 * GROUP COMMIT
 *
 * Appenders write their frame under the mutex (so frames stay in
 * sequence order), release it, and wait for durability. The first one
 * that finds no sync in flight becomes the leader: it notes the last
 * frame written so far, fdatasyncs without holding the mutex, publishes
 * the new durable mark and wakes everyone; the others sleep on the
 * condition variable meanwhile, and frames written during the sync are
 * covered by the next leader's sync. So N concurrent appenders cost
 * about two syncs rather than N, and a lone appender costs exactly one.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "durable_int.h"
#include "iqdb_int.h"
#include "wal_int.h"

#define WAL_MAGIC "IQDBWAL"  /* 8 bytes with its terminating NUL */
#define WAL_VERSION 1u
#define HDR_SIZE 40u
_Static_assert(HDR_SIZE == IQDB_WAL_HDR_SIZE, "wal_int.h agrees");
#define FRAME_HDR IQDB_WAL_FRAME_HDR /* 32 */
#define FRAME_MARK 0x52465149u /* "IQFR" */
#define READ_CHUNK ((size_t)1 << 20)
#define PREALLOC ((uint64_t)4 << 20) /* least zero extension of the file */
#define PREALLOC_ALIGN 4096u
#define PREALLOC_MIN ((uint64_t)64 << 10) /* first extension of a log */
#define BIG_FRAME ((uint64_t)1 << 20) /* appended past the end as is */
#define KICK_PIECE ((size_t)512 << 10) /* see frame_write */
#ifdef HAVE_SYNC_FILE_RANGE
#define KICK_PIECES 1
#else
#define KICK_PIECES 0 /* no way to start a write-back: one write */
#endif

struct iqdb_wal {
    pthread_mutex_t mu;
    pthread_cond_t synced; /* a sync finished or the handle failed */
    pthread_cond_t wake;   /* tells the flusher to stop */
    pthread_t flusher;
    int has_flusher;
    int stop;

    int fd;
    int sync;
    uint32_t period_ms;
    int readonly;
    int prealloc;
    char *dir;
    char *path;
    char *tmp;

    uint64_t salt;
    uint64_t base_seq;
    int replayed; /* appends allowed (replay done, or a new file) */
    int appended; /* an append was made: replay no longer allowed */

    uint64_t end;        /* offset past the last complete frame */
    uint64_t alloc;      /* physical size: [end, alloc) holds zeros */
    uint64_t next_seq;
    uint64_t synced_seq; /* every frame up to this one is durable */
    uint64_t synced_end; /* offset past frame synced_seq */
    int syncing;         /* a leader is in fdatasync */
    int cut_pending;     /* failed during that sync: cut back after it */

    int fail_code; /* 0 while healthy */
    char fail_msg[256];

    uint64_t frame_off; /* replay: the frame being delivered */
};

/* ---- little-endian fields ----------------------------------------------- */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t pad8(uint64_t n)
{
    return (n + 7) & ~(uint64_t)7;
}

static uint32_t header_crc(uint64_t salt, const unsigned char *frame)
{
    unsigned char s[8];
    put64(s, salt);
    return iqdb__crc32c(iqdb__crc32c(0, s, 8), frame, 28);
}

/* ---- failure state ------------------------------------------------------ */

/* Cut the file back to off after a failure (called with mu held, no sync
 * in flight). */
static void cut_back(iqdb_wal *w, uint64_t off)
{
    if (iqdb__io()->ftruncate(w->fd, (off_t)off) == 0) {
        w->end = w->alloc = off;
        return;
    }
    int e = errno;
    size_t n = strlen(w->fail_msg);
    snprintf(w->fail_msg + n, sizeof w->fail_msg - n,
             "; cutting back to offset %llu failed too: %s",
             (unsigned long long)off, strerror(e));
}

/* Record the failure (mu held); the first one's description is kept. */
static int set_failed(iqdb_wal *w, const char *op, int err)
{
    int code = iqdb__io_status(err);
    if (w->fail_code == 0) {
        w->fail_code = code;
        snprintf(w->fail_msg, sizeof w->fail_msg, "%s failed: %s", op,
                 strerror(err));
    }
    pthread_cond_broadcast(&w->synced);
    return code;
}

/* Enter the failed state after op failed with errno err (mu held); wrote
 * tells whether op was the write of a frame. Removes unacknowledged
 * bytes, so a reopen without a crash replays exactly what was
 * acknowledged: under ALWAYS every frame past the durable mark (deferred
 * while a leader's sync may still make some of them durable), otherwise
 * only the partial frame a failed write may have left past the last
 * complete one. Returns the code for the caller. */
static int enter_failed(iqdb_wal *w, const char *op, int err, int wrote)
{
    int code = set_failed(w, op, err);
    if (w->readonly)
        return code;
    if (w->sync == IQDB_WAL_ALWAYS) {
        if (w->syncing)
            w->cut_pending = 1;
        else
            cut_back(w, w->synced_end);
    } else if (wrote) {
        /* Frames up to w->end were acknowledged when written. */
        cut_back(w, w->end);
    }
    return code;
}

static int refuse(iqdb_wal *w)
{
    if (w->readonly)
        return iqdb__set_error(w, IQDB_EREADONLY,
                               "WAL '%s' was opened read-only", w->path);
    return iqdb__set_error(w, IQDB_EREADONLY,
                           "WAL '%s' refuses writes after an earlier "
                           "failure (%s); reopen the database",
                           w->path, w->fail_msg);
}

/* ---- syncing ------------------------------------------------------------ */

/* Be the leader: sync every frame written so far. Called with mu held
 * and no sync in flight; drops mu during fdatasync. */
static int lead_sync(iqdb_wal *w)
{
    uint64_t target = w->next_seq - 1, target_end = w->end;
    int fd = w->fd;
    w->syncing = 1;
    pthread_mutex_unlock(&w->mu);
    int r = iqdb__io()->fdatasync(fd);
    int e = errno;
    pthread_mutex_lock(&w->mu);
    w->syncing = 0;
    int code = 0;
    if (r == 0) {
        if (target > w->synced_seq) {
            w->synced_seq = target;
            w->synced_end = target_end;
        }
    } else {
        code = enter_failed(w, "fdatasync", e, 0);
    }
    if (w->cut_pending) {
        w->cut_pending = 0;
        cut_back(w, w->synced_end);
    }
    pthread_cond_broadcast(&w->synced);
    return code;
}

/* Wait until frame seq is durable, leading a sync when none is in flight.
 * mu held. 0 or the failure code (message set). */
static int wait_durable(iqdb_wal *w, uint64_t seq)
{
    for (;;) {
        if (w->synced_seq >= seq)
            return 0;
        /* A sync in flight may still cover seq even after a failure. */
        if (w->fail_code != 0 && !w->syncing)
            return iqdb__set_error(w, w->fail_code,
                                   "WAL '%s': frame %llu is not durable: %s",
                                   w->path, (unsigned long long)seq,
                                   w->fail_msg);
        if (!w->syncing) {
            int code = lead_sync(w);
            if (code != 0 && w->synced_seq < seq)
                return iqdb__set_error(
                    w, code, "WAL '%s': frame %llu is not durable: %s",
                    w->path, (unsigned long long)seq, w->fail_msg);
        } else {
            pthread_cond_wait(&w->synced, &w->mu);
        }
    }
}

static void deadline_after(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* PERIODIC: sync what is pending, then sleep a period. A failure stops
 * the syncing for good (never retry fsync); the next append reports it. */
static void *flusher_main(void *arg)
{
    iqdb_wal *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (w->fail_code == 0 && !w->syncing &&
            w->synced_seq + 1 < w->next_seq)
            lead_sync(w);
        struct timespec ts;
        deadline_after(&ts, w->period_ms);
        /* Until the deadline, through spurious wake-ups. */
        while (!w->stop &&
               pthread_cond_timedwait(&w->wake, &w->mu, &ts) == 0) {
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- creating a WAL file ------------------------------------------------ */

uint64_t iqdb__random_id(uint64_t old)
{
    static uint64_t counter;
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        /* No entropy yet (early boot): the salt need only differ from the
         * previous file's, not be secret. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^
            (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)&s ^
            __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        s = (s ^ (s >> 30)) * 0xbf58476d1ce4e5b9ull;
        s = (s ^ (s >> 27)) * 0x94d049bb133111ebull;
        s ^= s >> 31;
    }
    return s == old ? s + 1 : s;
}

static void header_encode(unsigned char *h, uint64_t salt, uint64_t base)
{
    memset(h, 0, HDR_SIZE);
    memcpy(h, WAL_MAGIC, 8);
    put32(h + 8, WAL_VERSION);
    put64(h + 16, salt);
    put64(h + 24, base);
    put32(h + 32, iqdb__crc32c(0, h, 32));
}

/* Write a header-only WAL under the temporary name, sync it, rename it
 * into place, sync the directory. Returns 0, or -1 with errno and *op
 * naming the step. *fdout is the new file, open read-write, once the
 * rename has happened (-1 before): from then on the new file is in place
 * even if the directory sync fails. */
static int create_file(iqdb_wal *w, uint64_t salt, uint64_t base, int *fdout,
                       const char **op)
{
    const iqdb_io *io = iqdb__io();
    unsigned char h[HDR_SIZE];
    *fdout = -1;
    header_encode(h, salt, base);
    *op = "creating the WAL";
    int fd = io->open(w->tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    *op = "writing the WAL header";
    if (iqdb__io_pwrite_all(fd, h, HDR_SIZE, 0) != 0)
        goto fail_fd;
    *op = "fdatasync of the new WAL";
    if (io->fdatasync(fd) != 0)
        goto fail_fd;
    *op = "renaming the new WAL into place";
    if (io->rename(w->tmp, w->path) != 0)
        goto fail_fd;
    *fdout = fd;
    *op = "syncing the database directory";
    return io->fsync_dir(w->dir) != 0 ? -1 : 0;

fail_fd:;
    int e = errno;
    io->close(fd);
    io->unlink(w->tmp);
    errno = e;
    return -1;
}

/* ---- opening ------------------------------------------------------------ */

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = iqdb__malloc(a + 1 + b + 1);
    if (p != NULL) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

static void wal_free(iqdb_wal *w)
{
    if (w->fd >= 0)
        iqdb__io()->close(w->fd);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->synced);
    pthread_mutex_destroy(&w->mu);
    iqdb__free(w->dir);
    iqdb__free(w->path);
    iqdb__free(w->tmp);
    iqdb__free(w);
}

/* A handle with everything but the file, or NULL (message set). */
static iqdb_wal *wal_alloc(const char *dir, const iqdb_wal_options *o)
{
    iqdb_wal *w = iqdb__calloc(1, sizeof *w);
    if (w == NULL)
        goto fail_mem;
    w->fd = -1;
    w->sync = o->sync;
    w->period_ms = o->period_ms;
    w->readonly = o->readonly != 0;
    w->dir = iqdb__strdup(dir);
    w->path = join(dir, o->name ? o->name : IQDB_WAL_FILE);
    w->tmp = join(dir, IQDB_WAL_TMP_FILE);
    if (w->dir == NULL || w->path == NULL || w->tmp == NULL)
        goto fail_strings;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        goto fail_strings;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int r = pthread_mutex_init(&w->mu, NULL);
    if (r == 0 && (r = pthread_cond_init(&w->synced, NULL)) != 0)
        pthread_mutex_destroy(&w->mu);
    if (r == 0 && (r = pthread_cond_init(&w->wake, &ca)) != 0) {
        pthread_cond_destroy(&w->synced);
        pthread_mutex_destroy(&w->mu);
    }
    pthread_condattr_destroy(&ca);
    if (r != 0)
        goto fail_strings;
    return w;

fail_strings:
    iqdb__free(w->dir);
    iqdb__free(w->path);
    iqdb__free(w->tmp);
    iqdb__free(w);
fail_mem:
    iqdb__set_error(NULL, IQDB_ENOMEM, "out of memory opening the WAL of '%s'",
                    dir);
    return NULL;
}

/* Read and check the header of the open file w->fd. */
static int read_header(iqdb_wal *w)
{
    unsigned char h[HDR_SIZE];
    int r = iqdb__io_pread_all(w->fd, h, HDR_SIZE, 0);
    if (r == -2)
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "WAL '%s' is shorter than its %u-byte header",
                               w->path, HDR_SIZE);
    if (r != 0) {
        int e = errno;
        return iqdb__set_error(NULL, iqdb__io_status(e),
                               "reading WAL '%s' failed: %s", w->path,
                               strerror(e));
    }
    if (memcmp(h, WAL_MAGIC, 8) != 0)
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "'%s' is not an iqdb WAL (bad magic)",
                               w->path);
    uint32_t version = get32(h + 8);
    if (version > WAL_VERSION)
        return iqdb__set_error(NULL, IQDB_ENOTSUP,
                               "WAL '%s' has format version %u; this "
                               "library reads version %u",
                               w->path, version, WAL_VERSION);
    if (get32(h + 32) != iqdb__crc32c(0, h, 32))
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "WAL '%s': header checksum mismatch at "
                               "offset 32",
                               w->path);
    /* Sequence numbers stay below 2^63: a base near 2^64 would let them
     * wrap during replay (0 means "any" to the damage scan). */
    if (version == 0 || get32(h + 12) != 0 || get32(h + 36) != 0 ||
        get64(h + 24) == 0 || get64(h + 24) > (UINT64_MAX >> 1))
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "WAL '%s': invalid header field (version %u, "
                               "base sequence %llu)",
                               w->path, version,
                               (unsigned long long)get64(h + 24));
    w->salt = get64(h + 16);
    w->base_seq = get64(h + 24);
    return 0;
}

/* Open the existing file, or create it. */
static int open_file(iqdb_wal *w, const iqdb_wal_options *o)
{
    const iqdb_io *io = iqdb__io();
    w->fd = io->open(w->path, w->readonly ? O_RDONLY : O_RDWR, 0);
    if (w->fd >= 0) {
        struct stat st;
        if (fstat(w->fd, &st) != 0 || !S_ISREG(st.st_mode))
            return iqdb__set_error(NULL, IQDB_ECORRUPT,
                                   "WAL '%s' is not a regular file",
                                   w->path);
        return read_header(w);
    }
    int e = errno;
    if (e != ENOENT)
        return iqdb__set_error(NULL, iqdb__io_status(e),
                               "cannot open WAL '%s': %s", w->path,
                               strerror(e));
    if (!o->create || w->readonly)
        return iqdb__set_error(NULL, IQDB_ENOTFOUND, "no WAL '%s'",
                               w->path);
    w->base_seq = o->first_seq ? o->first_seq : 1;
    if (w->base_seq > (UINT64_MAX >> 1)) /* read_header would refuse it */
        return iqdb__set_error(NULL, IQDB_ERANGE,
                               "WAL '%s': first sequence number %llu is "
                               "out of range",
                               w->path, (unsigned long long)w->base_seq);
    w->salt = iqdb__random_id(0);
    int fd;
    const char *op;
    if (create_file(w, w->salt, w->base_seq, &fd, &op) != 0) {
        e = errno;
        if (fd >= 0)
            io->close(fd);
        return iqdb__set_error(NULL, iqdb__io_status(e),
                               "WAL '%s': %s failed: %s", w->path, op,
                               strerror(e));
    }
    w->fd = fd;
    w->replayed = 1;
    return 0;
}

int iqdb__wal_open(const char *dir, const iqdb_wal_options *opt,
                   iqdb_wal **out)
{
    static const iqdb_wal_options defaults = {IQDB_WAL_ALWAYS, 0, 1, 0, 1,
                                              NULL};
    const iqdb_wal_options *o = opt ? opt : &defaults;
    if (out != NULL)
        *out = NULL;
    if (dir == NULL || out == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "iqdb__wal_open: NULL argument");
    if (o->sync < IQDB_WAL_ALWAYS || o->sync > IQDB_WAL_NEVER)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "unknown WAL sync policy %d", o->sync);
    if (o->sync == IQDB_WAL_PERIODIC && o->period_ms == 0)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "periodic WAL sync needs a period of at "
                               "least 1 ms");
    iqdb_wal *w = wal_alloc(dir, o);
    if (w == NULL)
        return IQDB_ENOMEM;
    int rc = open_file(w, o);
    if (rc != 0)
        goto fail;
    if (!w->readonly && iqdb__io()->unlink(w->tmp) != 0 && errno != ENOENT) {
        int e = errno;
        rc = iqdb__set_error(NULL, iqdb__io_status(e),
                             "cannot remove stale '%s': %s", w->tmp,
                             strerror(e));
        goto fail;
    }
    w->end = w->synced_end = w->alloc = HDR_SIZE;
    w->next_seq = w->base_seq;
    w->synced_seq = w->base_seq - 1;
    if (w->sync == IQDB_WAL_PERIODIC && !w->readonly) {
        if (pthread_create(&w->flusher, NULL, flusher_main, w) != 0) {
            rc = iqdb__set_error(NULL, IQDB_ENOMEM,
                                 "cannot start the WAL flusher thread");
            goto fail;
        }
        w->has_flusher = 1;
    }
    *out = w;
    return 0;

fail:
    wal_free(w);
    return rc;
}

void iqdb__wal_set_prealloc(iqdb_wal *w, int on)
{
    if (w != NULL)
        w->prealloc = on != 0;
}

/* ---- replay ------------------------------------------------------------- */

/* A sliding window over the file, so replay reads in large chunks and a
 * frame is handed to the callback without a copy of its own. */
struct reader {
    int fd;
    uint64_t size;
    unsigned char *buf;
    size_t cap;
    uint64_t woff; /* file offset of buf[0] */
    size_t wlen;
};

/* Point *p at bytes [off, off + n) of the file; the caller has checked
 * off + n <= size, so n is bounded by the file and never by a length
 * field alone. */
static int rd_get(iqdb_wal *w, struct reader *r, uint64_t off, size_t n,
                  const unsigned char **p)
{
    if (off >= r->woff && off + n <= r->woff + r->wlen) {
        *p = r->buf + (off - r->woff);
        return 0;
    }
    if (n > r->cap) {
        unsigned char *nb = iqdb__realloc(r->buf, n);
        if (nb == NULL)
            return iqdb__set_error(w, IQDB_ENOMEM,
                                   "WAL '%s': out of memory reading a "
                                   "%zu-byte frame",
                                   w->path, n);
        r->buf = nb;
        r->cap = n;
    }
    size_t want = r->size - off < r->cap ? (size_t)(r->size - off) : r->cap;
    int rc = iqdb__io_pread_all(r->fd, r->buf, want, (off_t)off);
    if (rc != 0) {
        int e = rc == -2 ? EIO : errno;
        r->wlen = 0;
        return iqdb__set_error(w, iqdb__io_status(e),
                               "reading WAL '%s' at offset %llu failed: %s",
                               w->path, (unsigned long long)off,
                               rc == -2 ? "file shrank during replay"
                                        : strerror(e));
    }
    r->woff = off;
    r->wlen = want;
    *p = r->buf;
    return 0;
}

struct frame {
    uint64_t seq;
    uint64_t durable;
    size_t len;
    uint64_t size; /* header + padded payload */
    const unsigned char *payload;
};

/* Check the frame at off. expect is the required sequence number, or 0
 * for any (when scanning past damage). budget (NULL: none) is how many
 * more payload bytes may be checksummed: a frame whose payload would pass
 * it is not checked (returns 2). Returns 1 when good, 0 when not (*why
 * set), 2, or an error code. */
static int frame_check(iqdb_wal *w, struct reader *r, uint64_t off,
                       uint64_t expect, struct frame *f, const char **why,
                       uint64_t *budget)
{
    const unsigned char *h;
    if (r->size - off < FRAME_HDR) {
        *why = "incomplete frame header";
        return 0;
    }
    int rc = rd_get(w, r, off, FRAME_HDR, &h);
    if (rc != 0)
        return rc;
    if (get32(h) != FRAME_MARK) {
        *why = "bad frame marker";
        return 0;
    }
    if (get32(h + 28) != header_crc(w->salt, h)) {
        *why = "frame header checksum mismatch";
        return 0;
    }
    uint32_t len = get32(h + 4), pcrc = get32(h + 24);
    f->seq = get64(h + 8);
    f->durable = get64(h + 16);
    if (len > IQDB_WAL_MAX_PAYLOAD) {
        *why = "frame length above the maximum";
        return 0;
    }
    if (expect != 0 && f->seq != expect) {
        *why = "unexpected sequence number";
        return 0;
    }
    if (f->seq < w->base_seq || f->durable >= f->seq ||
        f->durable + 1 < w->base_seq) {
        *why = "sequence numbers out of range";
        return 0;
    }
    uint64_t padded = pad8(len);
    if (r->size - off - FRAME_HDR < padded) {
        *why = "incomplete frame payload";
        return 0;
    }
    if (budget != NULL) {
        if (padded > *budget)
            return 2;
        *budget -= padded;
    }
    const unsigned char *all;
    rc = rd_get(w, r, off, FRAME_HDR + (size_t)padded, &all);
    if (rc != 0)
        return rc;
    if (iqdb__crc32c(0, all + FRAME_HDR, (size_t)padded) != pcrc) {
        *why = "frame payload checksum mismatch";
        return 0;
    }
    f->len = len;
    f->size = FRAME_HDR + padded;
    f->payload = all + FRAME_HDR;
    return 1;
}

/* Look past the damage at off for intact frames of this file (at 8-byte
 * steps: frames are 8-aligned). Fills the later_* counts; *proof gets the
 * first frame proving frame `expect` was durable.
 *
 * A candidate whose header checks out costs a checksum of the payload it
 * claims. In a real log past real damage, candidates are the intact
 * frames themselves (the scan jumps past each) and headers that check out
 * by chance (the salt makes that a 2^-32 event), so the payloads summed
 * stay within the file's size. A crafted file can stack headers that each
 * claim the rest of the file, which would cost time quadratic in its size:
 * so the scan checksums at most twice the file's size plus 1 MiB and, past
 * that, stops and counts the damage as not provably torn (info->scan_cut;
 * proof_seq 0), which is what strict recovery must refuse. */
static int scan_after_damage(iqdb_wal *w, struct reader *r, uint64_t off,
                             uint64_t zeros_from, uint64_t expect,
                             iqdb_wal_replay_info *info, uint64_t *data_end,
                             uint64_t *proof_seq, uint64_t *proof_off)
{
    const char *why;
    struct frame f;
    uint64_t budget = 2 * r->size + ((uint64_t)1 << 20);
    /* No frame starts in the zero tail (its marker would be zeros), but
     * one starting before it may end inside it (zero payload bytes). */
    for (uint64_t o = off + 8; o < zeros_from && o + FRAME_HDR <= r->size;) {
        int v = frame_check(w, r, o, 0, &f, &why, &budget);
        if (v < 0)
            return v;
        if (v == 2) {
            info->scan_cut = o;
            if (info->later_durable++ == 0) {
                *proof_seq = 0;
                *proof_off = o;
            }
            return 0;
        }
        if (v == 1 && f.seq > expect) {
            info->later_frames++;
            if (o + f.size > *data_end)
                *data_end = o + f.size;
            if (f.durable >= expect) {
                if (info->later_durable++ == 0) {
                    *proof_seq = f.seq;
                    *proof_off = o;
                }
            }
            o += f.size;
        } else {
            o += 8;
        }
    }
    return 0;
}

/* Where the run of zero bytes that ends the file starts, at or after off
 * and rounded up to the 8-byte frame alignment (r->size when the file
 * ends in a non-zero byte; off when everything from off is zero). */
static int zero_tail(iqdb_wal *w, struct reader *r, uint64_t off,
                     uint64_t *from)
{
    uint64_t last = off; /* just past the last non-zero byte seen */
    for (uint64_t o = off; o < r->size;) {
        size_t n = r->size - o < r->cap ? (size_t)(r->size - o) : r->cap;
        const unsigned char *p;
        int rc = rd_get(w, r, o, n, &p);
        if (rc != 0)
            return rc;
        for (size_t i = n; i > 0; i--) {
            if (p[i - 1] != 0) {
                last = o + i;
                break;
            }
        }
        o += n;
    }
    *from = pad8(last) < r->size ? pad8(last) : r->size;
    return 0;
}

/* Deliver the good frames; returns 0 with *off and *expect past the last one
 * and *why set when a bad frame stopped it, or a code. */
static int replay_frames(iqdb_wal *w, struct reader *r,
                         iqdb_wal_frame_fn fn, void *arg, uint64_t *off,
                         uint64_t *expect, uint64_t *frames,
                         const char **why)
{
    struct frame f;
    *why = NULL;
    while (*off < r->size) {
        int v = frame_check(w, r, *off, *expect, &f, why, NULL);
        if (v < 0)
            return v;
        if (v == 0)
            return 0;
        if (fn != NULL) {
            w->frame_off = *off;
            int cr = fn(arg, f.seq, f.payload, f.len);
            if (cr != 0)
                return cr;
        }
        *off += f.size;
        (*expect)++;
        (*frames)++;
    }
    return 0;
}

int iqdb__wal_replay(iqdb_wal *w, unsigned flags, iqdb_wal_frame_fn fn,
                     void *arg, iqdb_wal_replay_info *info)
{
    iqdb_wal_replay_info dummy;
    if (info == NULL)
        info = &dummy;
    memset(info, 0, sizeof *info);
    if (w == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "iqdb__wal_replay: NULL handle");
    if (w->appended)
        return iqdb__set_error(w, IQDB_EINVAL,
                               "WAL '%s': replay after appends", w->path);
    if (w->fail_code != 0)
        return refuse(w);
    struct stat st;
    if (fstat(w->fd, &st) != 0) {
        int e = errno;
        return iqdb__set_error(w, iqdb__io_status(e),
                               "cannot stat WAL '%s': %s", w->path,
                               strerror(e));
    }
    struct reader r = {w->fd, (uint64_t)st.st_size, NULL, 0, 0, 0};
    r.cap = r.size < READ_CHUNK ? (size_t)r.size : READ_CHUNK;
    if (r.cap < FRAME_HDR)
        r.cap = FRAME_HDR;
    r.buf = iqdb__malloc(r.cap);
    if (r.buf == NULL)
        return iqdb__set_error(w, IQDB_ENOMEM,
                               "WAL '%s': out of memory for replay",
                               w->path);

    uint64_t off = HDR_SIZE, expect = w->base_seq, frames = 0;
    const char *why;
    int rc = replay_frames(w, &r, fn, arg, &off, &expect, &frames, &why);
    info->frames = frames;
    info->first_seq = w->base_seq;
    info->next_seq = expect;
    info->file_size = r.size;
    info->valid_end = off;
    if (rc != 0)
        goto out;
    uint64_t zeros_from = r.size;
    if (w->prealloc && off < r.size &&
        (rc = zero_tail(w, &r, off, &zeros_from)) != 0)
        goto out;
    /* Only zeros after the last good frame: the preallocated clean end. */
    info->file_size = zeros_from;
    if (zeros_from > off) {
        uint64_t proof_seq = 0, proof_off = 0, data_end = zeros_from;
        info->damage = why;
        rc = scan_after_damage(w, &r, off, zeros_from, expect, info,
                               &data_end, &proof_seq, &proof_off);
        if (rc != 0)
            goto out;
        info->file_size = data_end;
        info->truncated_bytes = data_end - off;
        if (info->later_durable > 0 && !(flags & IQDB_WAL_REPLAY_SALVAGE) &&
            proof_seq == 0) {
            rc = iqdb__set_error(
                w, IQDB_ECORRUPT,
                "WAL '%s': frame %llu at offset %llu is damaged (%s), and "
                "the search for intact frames after it was cut short at "
                "offset %llu (frame headers that each claim the rest of the "
                "file: a crafted file?), so it cannot be shown to be a torn "
                "write; the WAL is left as it is (replay with salvage to "
                "drop everything from offset %llu)",
                w->path, (unsigned long long)expect, (unsigned long long)off,
                why, (unsigned long long)proof_off, (unsigned long long)off);
            goto out;
        }
        if (info->later_durable > 0 && !(flags & IQDB_WAL_REPLAY_SALVAGE)) {
            rc = iqdb__set_error(
                w, IQDB_ECORRUPT,
                "WAL '%s': frame %llu at offset %llu is damaged (%s), but "
                "frame %llu at offset %llu, written after frame %llu had "
                "been made durable, is intact: acknowledged writes would "
                "be lost; the WAL is left as it is (replay with salvage to "
                "drop everything from offset %llu)",
                w->path, (unsigned long long)expect, (unsigned long long)off,
                why, (unsigned long long)proof_seq,
                (unsigned long long)proof_off, (unsigned long long)expect,
                (unsigned long long)off);
            goto out;
        }
    }
    pthread_mutex_lock(&w->mu);
    /* Damage goes with the zero tail after it (appends re-extend); a
     * clean zero tail stays for the appends to overwrite. */
    if (!w->readonly && info->damage != NULL &&
        iqdb__io()->ftruncate(w->fd, (off_t)off) != 0) {
        int e = errno;
        /* set_failed, not enter_failed: nothing may be cut back here, the
         * durable marks do not describe this file until replay ends. */
        set_failed(w, "ftruncate of the torn tail", e);
        rc = iqdb__set_error(w, iqdb__io_status(e),
                             "WAL '%s': truncating to offset %llu failed: %s",
                             w->path, (unsigned long long)off, strerror(e));
    }
    /* Replayed frames may sit only in the page cache (the previous process
     * crashed without syncing); make them durable before new frames
     * build on them and claim them as durable. The same sync makes a zero
     * tail durable, so appends into it need no metadata commit. */
    if (rc == 0 && !w->readonly && (frames > 0 || off < r.size) &&
        iqdb__io()->fdatasync(w->fd) != 0) {
        int e = errno;
        set_failed(w, "fdatasync after replay", e);
        rc = iqdb__set_error(w, iqdb__io_status(e),
                             "WAL '%s': fdatasync after replay failed: %s",
                             w->path, strerror(e));
    }
    if (rc == 0) {
        w->end = w->synced_end = off;
        w->alloc = info->damage != NULL ? off : r.size;
        w->next_seq = expect;
        w->synced_seq = expect - 1;
        w->replayed = 1;
    }
    pthread_mutex_unlock(&w->mu);
out:
    iqdb__free(r.buf);
    return rc;
}

/* ---- appending ---------------------------------------------------------- */

/* Fill in the frame header of f (FRAME_HDR bytes, then a payload of len
 * bytes with room for its padding) but for the fields only known under
 * the mutex (sequence numbers, header CRC). Done outside it: checksumming
 * a large batch must not hold up other writers. */
static int too_long(iqdb_wal *w, size_t len)
{
    return iqdb__set_error(w, IQDB_ERANGE,
                           "WAL '%s': a %zu-byte frame exceeds the maximum "
                           "of %zu bytes",
                           w->path, len, IQDB_WAL_MAX_PAYLOAD);
}

static int frame_seal(iqdb_wal *w, unsigned char *f, size_t len)
{
    if (len > IQDB_WAL_MAX_PAYLOAD)
        return too_long(w, len);
    size_t padded = (size_t)pad8(len);
    memset(f, 0, FRAME_HDR);
    memset(f + FRAME_HDR + len, 0, padded - len);
    put32(f, FRAME_MARK);
    put32(f + 4, (uint32_t)len);
    put32(f + 24, iqdb__crc32c(0, f + FRAME_HDR, padded));
    return 0;
}

/* The frame for payload, in a new buffer, sealed. */
static int frame_build(iqdb_wal *w, const void *payload, size_t len,
                       unsigned char **out, size_t *size)
{
    if (len > IQDB_WAL_MAX_PAYLOAD)
        return too_long(w, len);
    size_t padded = (size_t)pad8(len);
    unsigned char *f = iqdb__malloc(FRAME_HDR + padded);
    if (f == NULL)
        return iqdb__set_error(w, IQDB_ENOMEM,
                               "WAL '%s': out of memory for a %zu-byte frame",
                               w->path, len);
    if (len > 0)
        memcpy(f + FRAME_HDR, payload, len);
    frame_seal(w, f, len);
    *out = f;
    *size = FRAME_HDR + padded;
    return 0;
}

/* The frame about to be written at w->end, size bytes, passes the
 * physical size: write zeros after where it will end (mu held; see
 * PREALLOCATION). No sync: the next one carries the size change. Failures
 * enter the failed state like a frame's write. */
static int extend(iqdb_wal *w, uint64_t size)
{
    uint64_t need = w->end + size;
    /* Grow with the log: a young log extends by what it already holds
     * (at least PREALLOC_MIN), so a process that writes a few frames and
     * exits pays a small first extension; an old one by PREALLOC. */
    uint64_t chunk = w->end < PREALLOC_MIN ? PREALLOC_MIN
                     : w->end < PREALLOC   ? w->end
                                           : PREALLOC;
    uint64_t to = need + (size > chunk ? size : chunk);
    to = (to + PREALLOC_ALIGN - 1) & ~(uint64_t)(PREALLOC_ALIGN - 1);
    uint64_t from = need > w->alloc ? need : w->alloc;
    uint64_t grow = to - from;
    size_t bufn = grow < PREALLOC ? (size_t)grow : (size_t)PREALLOC;
    unsigned char *zeros = iqdb__calloc(1, bufn);
    if (zeros == NULL)
        return iqdb__set_error(w, IQDB_ENOMEM,
                               "WAL '%s': out of memory extending the file",
                               w->path);
    int e = 0;
    for (uint64_t at = from; at < to;) {
        uint64_t left = to - at;
        size_t n = left < bufn ? (size_t)left : bufn;
        if (iqdb__io_pwrite_all(w->fd, zeros, n, (off_t)at) != 0) {
            e = errno;
            break;
        }
        at += n;
    }
    iqdb__free(zeros);
    if (e != 0) {
        int code = enter_failed(w, "write", e, 1);
        return iqdb__set_error(w, code,
                               "WAL '%s': extending the file from %llu to "
                               "%llu bytes with zeros failed: %s",
                               w->path, (unsigned long long)from,
                               (unsigned long long)to, strerror(e));
    }
    /* [w->alloc, need) is a hole until the frame is written next; it
     * reads as zeros, like any never-written tail. */
    w->alloc = to;
    return 0;
}

/* Write a built frame at the end (mu held). */
static int frame_write(iqdb_wal *w, unsigned char *f, size_t size,
                       uint64_t *seq)
{
    if (w->readonly || w->fail_code != 0)
        return refuse(w);
    if (!w->replayed)
        return iqdb__set_error(w, IQDB_EINVAL,
                               "WAL '%s': replay it before appending",
                               w->path);
    if (w->end > (uint64_t)INT64_MAX - size)
        return iqdb__set_error(w, IQDB_ERANGE, "WAL '%s' is full", w->path);
    if (w->prealloc && w->end + size > w->alloc && size < BIG_FRAME) {
        int rc = extend(w, size);
        if (rc != 0)
            return rc;
    }
    put64(f + 8, w->next_seq);
    put64(f + 16, w->synced_seq);
    put32(f + 28, header_crc(w->salt, f));
    uint64_t at = w->end;
    const char *op = "write";
    int e = 0;
    if (KICK_PIECES && w->sync == IQDB_WAL_ALWAYS && size > KICK_PIECE) {
        /* A large frame under ALWAYS is written in pieces, each handed to
         * the device at once, so the disk writes one piece while the next
         * is copied and the sync that follows waits for the last piece
         * only (measured: 60 frames of 3 MB, write + fdatasync, 106 ms
         * against 141 ms in one write). */
        for (size_t o = 0; o < size && e == 0;) {
            size_t n = size - o < KICK_PIECE ? size - o : KICK_PIECE;
            if (iqdb__io_pwrite_all(w->fd, f + o, n, (off_t)(at + o)) != 0)
                e = errno;
            else if (iqdb__io()->start_writeback(w->fd, (off_t)(at + o),
                                                 (off_t)n) != 0) {
                e = errno;
                op = "write-back";
            }
            o += n;
        }
    } else if (iqdb__io_pwrite_all(w->fd, f, size, (off_t)at) != 0) {
        e = errno;
    }
    if (e != 0) {
        int code = enter_failed(w, op, e, 1);
        return iqdb__set_error(w, code,
                               "WAL '%s': %s of frame %llu at offset %llu "
                               "failed: %s",
                               w->path, op, (unsigned long long)w->next_seq,
                               (unsigned long long)at, strerror(e));
    }
    w->end += size;
    if (w->end > w->alloc) /* a big frame went past the zeros */
        w->alloc = w->end;
    w->appended = 1;
    *seq = w->next_seq++;
    return 0;
}

static int append(iqdb_wal *w, const void *payload, size_t len,
                  uint64_t *seq, int wait)
{
    if (w == NULL || (payload == NULL && len > 0))
        return iqdb__set_error(w, IQDB_EINVAL,
                               "iqdb__wal_append: NULL argument");
    unsigned char *f = NULL;
    size_t size = 0;
    int rc = frame_build(w, payload, len, &f, &size);
    if (rc != 0)
        return rc;
    uint64_t s = 0;
    pthread_mutex_lock(&w->mu);
    rc = frame_write(w, f, size, &s);
    if (rc == 0 && wait)
        rc = wait_durable(w, s);
    pthread_mutex_unlock(&w->mu);
    iqdb__free(f);
    if (rc == 0 && seq != NULL)
        *seq = s;
    return rc;
}

int iqdb__wal_append(iqdb_wal *w, const void *payload, size_t len,
                     uint64_t *seq)
{
    return append(w, payload, len, seq,
                  w != NULL && w->sync == IQDB_WAL_ALWAYS);
}

int iqdb__wal_write(iqdb_wal *w, const void *payload, size_t len,
                    uint64_t *seq)
{
    return append(w, payload, len, seq, 0);
}

size_t iqdb__wal_frame_size(size_t len)
{
    return len > IQDB_WAL_MAX_PAYLOAD ? len : (size_t)pad8(len);
}

int iqdb__wal_write_framed(iqdb_wal *w, unsigned char *buf, size_t len,
                           uint64_t *seq)
{
    if (w == NULL || buf == NULL)
        return iqdb__set_error(w, IQDB_EINVAL,
                               "iqdb__wal_write_framed: NULL argument");
    int rc = frame_seal(w, buf, len);
    if (rc != 0)
        return rc;
    uint64_t s = 0;
    pthread_mutex_lock(&w->mu);
    rc = frame_write(w, buf, FRAME_HDR + (size_t)pad8(len), &s);
    pthread_mutex_unlock(&w->mu);
    if (rc == 0 && seq != NULL)
        *seq = s;
    return rc;
}

int iqdb__wal_wait(iqdb_wal *w, uint64_t seq)
{
    if (w == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "iqdb__wal_wait: NULL handle");
    pthread_mutex_lock(&w->mu);
    int rc;
    if (seq >= w->next_seq)
        rc = iqdb__set_error(w, IQDB_EINVAL,
                             "WAL '%s': frame %llu was never written",
                             w->path, (unsigned long long)seq);
    else
        rc = wait_durable(w, seq);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int iqdb__wal_sync(iqdb_wal *w)
{
    if (w == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "iqdb__wal_sync: NULL handle");
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    if (!w->readonly && w->next_seq > w->base_seq)
        rc = wait_durable(w, w->next_seq - 1);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* Start a new, empty file at the next sequence number: the old file is
 * renamed to keep (inside the directory) first, or just replaced when
 * keep is NULL. */
static int renew(iqdb_wal *w, const char *keep, const char *what)
{
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    char *kept = NULL;
    if (w->readonly || w->fail_code != 0) {
        rc = refuse(w);
        goto out;
    }
    if (!w->replayed) {
        rc = iqdb__set_error(w, IQDB_EINVAL, "WAL '%s': replay it before a %s",
                             w->path, what);
        goto out;
    }
    if (w->next_seq > (UINT64_MAX >> 1)) {
        rc = iqdb__set_error(w, IQDB_ERANGE, "WAL '%s': %s: sequence "
                             "numbers exhausted", w->path, what);
        goto out;
    }
    if (keep != NULL && (kept = join(w->dir, keep)) == NULL) {
        rc = iqdb__set_error(w, IQDB_ENOMEM, "WAL '%s': %s: out of memory",
                             w->path, what);
        goto out;
    }
    /* Every frame must be durable before the file holding it goes: an
     * appender may still be waiting to be acknowledged for it. The loop
     * covers frames written while the mutex was dropped for a sync (a
     * caller breaking the no-concurrent-appends rule would otherwise get
     * a frame acknowledged and then discarded). For a rotation it also
     * keeps the log a prefix across the two files whatever the policy:
     * the new file's frames can never be durable while the old one's
     * tail is not. */
    while (w->synced_seq + 1 < w->next_seq || w->syncing) {
        if (w->syncing)
            pthread_cond_wait(&w->synced, &w->mu);
        else if ((rc = wait_durable(w, w->next_seq - 1)) != 0)
            goto out;
    }
    if (kept != NULL && iqdb__io()->rename(w->path, kept) != 0) {
        int e = errno;
        rc = set_failed(w, "renaming the old WAL", e);
        iqdb__set_error(w, rc, "WAL '%s': %s: renaming it to '%s' failed: %s",
                        w->path, what, kept, strerror(e));
        goto out;
    }
    uint64_t salt = iqdb__random_id(w->salt);
    int fd;
    const char *op;
    int r = create_file(w, salt, w->next_seq, &fd, &op);
    int e = errno;
    if (fd >= 0) {
        iqdb__io()->close(w->fd);
        w->fd = fd;
        w->salt = salt;
        w->base_seq = w->next_seq;
        w->end = w->synced_end = w->alloc = HDR_SIZE;
    }
    if (r != 0) {
        /* Reset: the old WAL is intact, or the new one in place. Rotation:
         * the old frames are under their new name, and there may be no
         * file under the old one yet (open copes). Nothing to cut back
         * either way, but the rule holds - no more writes on this
         * handle. */
        rc = set_failed(w, op, e);
        iqdb__set_error(w, rc, "WAL '%s': %s: %s failed: %s", w->path, what,
                        op, strerror(e));
    }
out:
    pthread_mutex_unlock(&w->mu);
    iqdb__free(kept);
    return rc;
}

int iqdb__wal_reset(iqdb_wal *w)
{
    if (w == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "iqdb__wal_reset: NULL handle");
    return renew(w, NULL, "reset");
}

int iqdb__wal_rotate(iqdb_wal *w, const char *keep)
{
    if (w == NULL || keep == NULL || keep[0] == '\0' || strchr(keep, '/'))
        return iqdb__set_error(w, IQDB_EINVAL,
                               "iqdb__wal_rotate: bad argument");
    return renew(w, keep, "rotation");
}

/* ---- queries and close -------------------------------------------------- */

uint64_t iqdb__wal_size(iqdb_wal *w)
{
    if (w == NULL)
        return 0;
    pthread_mutex_lock(&w->mu);
    uint64_t n = w->end;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void iqdb__wal_ident(iqdb_wal *w, uint64_t *salt, uint64_t *base)
{
    pthread_mutex_lock(&w->mu);
    *salt = w->salt;
    *base = w->base_seq;
    pthread_mutex_unlock(&w->mu);
}

uint64_t iqdb__wal_frame_offset(const iqdb_wal *w)
{
    return w != NULL ? w->frame_off : 0;
}

const char *iqdb__wal_path(const iqdb_wal *w)
{
    return w != NULL ? w->path : "";
}

uint64_t iqdb__wal_synced_seq(iqdb_wal *w)
{
    if (w == NULL)
        return 0;
    pthread_mutex_lock(&w->mu);
    uint64_t n = w->synced_seq;
    pthread_mutex_unlock(&w->mu);
    return n;
}

uint64_t iqdb__wal_next_seq(iqdb_wal *w)
{
    if (w == NULL)
        return 0;
    pthread_mutex_lock(&w->mu);
    uint64_t n = w->next_seq;
    pthread_mutex_unlock(&w->mu);
    return n;
}

int iqdb__wal_failed(iqdb_wal *w)
{
    if (w == NULL)
        return IQDB_EINVAL;
    pthread_mutex_lock(&w->mu);
    int c = w->readonly ? IQDB_EREADONLY : w->fail_code;
    pthread_mutex_unlock(&w->mu);
    return c;
}

int iqdb__wal_close(iqdb_wal *w)
{
    if (w == NULL)
        return 0;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->mu);
    if (w->has_flusher)
        pthread_join(w->flusher, NULL);
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    if (w->sync == IQDB_WAL_PERIODIC && !w->readonly && w->fail_code == 0 &&
        w->synced_seq + 1 < w->next_seq)
        rc = wait_durable(w, w->next_seq - 1);
    pthread_mutex_unlock(&w->mu);
    wal_free(w);
    return rc;
}
