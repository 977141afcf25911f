/*
 * core/durable_int.h - the building blocks of durable databases: the file
 * I/O table (with fault injection), CRC32C, the directory lock and the
 * write-ahead log. Internal to the core.
 */
#ifndef IQDB_DURABLE_INT_H
#define IQDB_DURABLE_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- file I/O (fileio.c) ------------------------------------------------ */
/* Every file operation of the core goes through this table so that tests
 * can make the N-th write, fsync, rename, link or ftruncate fail (EIO,
 * ENOSPC) and can simulate power loss. Functions follow POSIX: -1 and
 * errno. */
typedef struct iqdb_io {
    int (*open)(const char *path, int flags, mode_t mode);
    int (*close)(int fd);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
    int (*fsync)(int fd);
    int (*fdatasync)(int fd);
    int (*ftruncate)(int fd, off_t len);
    int (*rename)(const char *from, const char *to);
    int (*unlink)(const char *path);
    /* Give the file named from the second name to (link(2); to must not
     * exist). Like a rename, durable only once to's directory is synced. */
    int (*link)(const char *from, const char *to);
    int (*fsync_dir)(const char *dir);
    /* Write back bytes [off, off + len) of fd and wait for it
     * (sync_file_range; no device flush, so not a durability point). 0
     * where the system or file system lacks it. A failure is a write
     * failure: the error would otherwise be consumed here and the final
     * fsync of the same file report success. */
    int (*writeback)(int fd, off_t off, off_t len);
    /* Start writing back bytes [off, off + len) of fd without waiting for
     * it (sync_file_range with SYNC_FILE_RANGE_WRITE alone): the device
     * takes the first part of a large write while the rest is still being
     * copied. Neither a durability point nor a wait, so no write-back
     * error is consumed; a failure is still treated as a write failure.
     * 0 where the system lacks it. */
    int (*start_writeback)(int fd, off_t off, off_t len);
} iqdb_io;

enum iqdb_io_op {
    IQDB_IO_OP_WRITE = 0,
    IQDB_IO_OP_FSYNC = 1, /* fsync, fdatasync, fsync_dir and both
                             write-backs */
    IQDB_IO_OP_FTRUNCATE = 2,
    IQDB_IO_OP_RENAME = 3, /* rename and link (directory entries made;
                              unlink is not injected) */
    IQDB_IO_OP_COUNT = 4
};

/* The table in use (the real one unless a test installed faults). */
const iqdb_io *iqdb__io(void);
/* Make the n-th (0-based, counted from this call) operation of kind op
 * fail with errno err; n < 0 clears it. Process-wide, for tests. */
void iqdb__io_fail_nth(int op, long n, int err);
/* Operations of kind op performed since the last iqdb__io_fail_nth or
 * iqdb__io_reset call. */
long iqdb__io_count(int op);
/* Clear every injected fault and counter. */
void iqdb__io_reset(void);
/* Write all n bytes at off (retrying short writes and EINTR). Returns 0 or
 * -1 with errno. */
int iqdb__io_pwrite_all(int fd, const void *buf, size_t n, off_t off);
/* Read exactly n bytes at off; -1 with errno, or -2 at end of file. */
int iqdb__io_pread_all(int fd, void *buf, size_t n, off_t off);
/* Map an errno from a failed I/O call to a status code: ENOSPC and EDQUOT
 * -> IQDB_ENOSPC, ENOMEM -> IQDB_ENOMEM, EROFS/EACCES/EPERM ->
 * IQDB_EREADONLY, everything else -> IQDB_EIO. */
int iqdb__io_status(int err);

/* ---- CRC32C (crc32c.c) ----------------------------------------------- */
/* CRC-32C (Castagnoli), as in iSCSI and ext4: crc32c(0, "123456789", 9) ==
 * 0xE3069283. Pass the previous result to continue a running checksum.
 * Uses SSE4.2 when the CPU has it, chosen at run time. */
uint32_t iqdb__crc32c(uint32_t crc, const void *buf, size_t n);
/* The same continued over len zero bytes, without reading them (a hole
 * in a snapshot's vector section). */
uint32_t iqdb__crc32c_zeros(uint32_t crc, uint64_t len);

/* ---- directory lock (lockfile.c) ------------------------------------- */
typedef struct iqdb_lock iqdb_lock;
/* Lock the database directory dir through dir/LOCK (created if needed):
 * exclusive for a writer, shared for read-only opens. An OFD lock
 * (F_OFD_SETLK), else flock. A second writer - another process, or this
 * process again through any path naming the same directory (hard link,
 * symlink, relative path): the lock is keyed by device and inode - gets
 * IQDB_ELOCKED with a message naming the directory. Returns 0 or a code
 * (message set on handle NULL). */
int iqdb__lock_acquire(const char *dir, int exclusive, iqdb_lock **out);
void iqdb__lock_release(iqdb_lock *lock);

/* ---- additions: test hooks (fileio.c, crc32c.c) ------------------------ */
/* Like iqdb__io_fail_nth, but every operation of kind op from the n-th on
 * fails (a full disk, a dead device). */
void iqdb__io_fail_from(int op, long n, int err);

/* Power-loss simulation, for tests. After _begin, the current state of
 * every file is taken as durable, and each change made through the table
 * that is not yet durable is recorded: file bytes and sizes until the
 * file's next fsync/fdatasync, creates (open with O_CREAT), renames,
 * links and unlinks until the next fsync_dir of their directory. _crash
 * rolls the files back to their durable state: seed 0 drops every
 * unsynced change; any other seed keeps a random subset of the unsynced
 * writes (some torn to a prefix) and a random oldest prefix of the
 * directory operations, the reordered outcomes a real disk may produce.
 * After _crash every operation through the table but close fails with
 * EIO, as on a dead machine, until _end (stop simulating) or _begin
 * (start a new round). Descriptors opened before _crash keep pointing at
 * the rolled-back files; close them and reopen. Returns 0, or -1 when not
 * armed or a rollback step failed. Backups of replaced entries are kept
 * as hidden files ".iqdb-plbak-*" beside them until synced or rolled
 * back. */
void iqdb__io_powerloss_begin(void);
int iqdb__io_powerloss_crash(uint64_t seed);
void iqdb__io_powerloss_end(void);
/* Crash (as iqdb__io_powerloss_crash(seed)) by itself just before the
 * n-th (0-based) tracked operation from now - a write, sync, open,
 * ftruncate, rename, link, unlink or directory sync, on any thread - which
 * then fails like every later one. n < 0 cancels. */
void iqdb__io_powerloss_crash_at(long n, uint64_t seed);
/* 1 once the simulated machine has crashed. */
int iqdb__io_powerloss_dead(void);

/* The two CRC32C implementations behind iqdb__crc32c, for tests and
 * benchmarks. iqdb__crc32c_hw may be called only when
 * iqdb__crc32c_hw_available() returns 1 (on other CPUs it falls back to
 * the software path). */
uint32_t iqdb__crc32c_sw(uint32_t crc, const void *buf, size_t n);
uint32_t iqdb__crc32c_hw(uint32_t crc, const void *buf, size_t n);
int iqdb__crc32c_hw_available(void);

/* Test hook (durable.c): when set, the thread of an automatic compaction
 * calls it between the compaction's first and second steps - the log
 * rotated, the store pinned, the snapshot not yet written - with the
 * database directory. NULL in normal use. */
extern void (*iqdb__compact_hook)(const char *dir);
/* Non-zero (the default): automatic compactions leave vectors in log
 * segments (durable.c, "segments"). Tests turn it off to have them write
 * every vector, as flush and close do. */
extern atomic_int iqdb__compact_refs;

#endif /* IQDB_DURABLE_INT_H */
