/*
 * core/wal_int.h - the write-ahead log of a database directory.
 * Internal to the core. The byte layout is documented in core/wal.c.
 *
 * A WAL is one file, <dir>/wal (while a compaction runs, the previous
 * file may also be there as <dir>/wal.old: iqdb__wal_rotate). Each acknowledged write of the database
 * is one frame: an opaque payload (the db layer serialises a record batch
 * into it) with a sequence number and CRC32C checksums. Sequence numbers
 * increase by one per frame and keep increasing across iqdb__wal_reset,
 * so a snapshot can record the last sequence number it contains and the
 * db layer can skip frames at or below it when it replays (a crash
 * between "snapshot renamed" and "WAL reset" then replays nothing twice).
 *
 * Life cycle:
 *   iqdb__wal_open -> iqdb__wal_replay (required before the first append
 *   unless the WAL was just created) -> iqdb__wal_append ... ->
 *   iqdb__wal_reset (after a snapshot) -> ... -> iqdb__wal_close.
 *
 * Durability (iqdb_wal_options.sync):
 *  - IQDB_WAL_ALWAYS: iqdb__wal_append returns only once the frame is on
 *    stable storage (fdatasync). Concurrent appenders share syncs (group
 *    commit): one of them, the leader, syncs every frame written before
 *    it started; the others wait for that sync instead of issuing their
 *    own.
 *  - IQDB_WAL_PERIODIC: append returns once the frame is written; a
 *    background thread syncs at most every period_ms milliseconds when
 *    there is something to sync, bounding the window a power loss can
 *    take. close syncs.
 *  - IQDB_WAL_NEVER: syncs only on iqdb__wal_sync, iqdb__wal_wait,
 *    iqdb__wal_reset and at replay.
 *
 * Failures: when a write, fdatasync, ftruncate or rename of the WAL fails,
 * the handle enters a failed state for good (until reopened): the call
 * that hit the failure and every append that was waiting on it report
 * the I/O code (IQDB_EIO, IQDB_ENOSPC, ...), later appends and resets
 * report IQDB_EREADONLY, and the message names the operation and the
 * errno text. A failed fsync is never retried (the kernel may already
 * have dropped the dirty pages and would report success the second time)
 * and a frame whose sync failed is never acknowledged. The file is cut
 * back so a reopen without a crash in between replays exactly the
 * acknowledged frames: to the end of the last durable frame under ALWAYS
 * (every later frame is unacknowledged), to the end of the last complete
 * frame otherwise. If that cut fails too, an unacknowledged frame may
 * replay, exactly as after a crash.
 *
 * Messages of failing calls are set on the handle w (on NULL for
 * iqdb__wal_open); the db layer moves them to its own handle with
 * iqdb__retag_error(w, db).
 *
 * Threads: append, write, wait, sync, size, next_seq and failed may be
 * called from any number of threads at once. open, replay, reset and
 * close must not run concurrently with any other call on the same handle
 * (reset does cope with appenders still waiting for their sync).
 */
#ifndef IQDB_WAL_INT_H
#define IQDB_WAL_INT_H

#include <stddef.h>
#include <stdint.h>

/* File names inside the database directory. */
#define IQDB_WAL_FILE "wal"
#define IQDB_WAL_TMP_FILE "wal.tmp" /* creation and reset; removed at open */
#define IQDB_WAL_OLD_FILE "wal.old" /* the log rotated out by a compaction
                                       still writing its snapshot */

/* Largest payload of one frame (1 GiB). A record batch larger than this
 * must be split by the caller. Part of the format: replay rejects a frame
 * claiming more. */
#define IQDB_WAL_MAX_PAYLOAD ((size_t)1 << 30)

enum iqdb_wal_sync {
    IQDB_WAL_ALWAYS = 0,
    IQDB_WAL_PERIODIC = 1,
    IQDB_WAL_NEVER = 2
};

typedef struct iqdb_wal_options {
    int sync;           /* enum iqdb_wal_sync */
    uint32_t period_ms; /* PERIODIC: most milliseconds between syncs, >= 1 */
    int create;         /* create <dir>/wal when it does not exist? */
    int readonly;       /* open O_RDONLY: replay never truncates nor syncs,
                           appends and resets get IQDB_EREADONLY */
    uint64_t first_seq; /* creating: sequence number of the first frame
                           (0 means 1); e.g. the snapshot's last + 1 */
    const char *name;   /* file name in dir; NULL means IQDB_WAL_FILE
                           (another name: opening a rotated-out log) */
} iqdb_wal_options;

typedef struct iqdb_wal iqdb_wal;

/* Open the WAL of directory dir (which must exist), creating it when
 * absent and opt->create is set. opt NULL means {IQDB_WAL_ALWAYS, 0,
 * create 1, readonly 0, first_seq 1}. A new WAL is written under a
 * temporary name, synced, renamed into place and the directory synced, so
 * after a crash <dir>/wal either does not exist or has a complete header.
 * A leftover wal.tmp is removed (unless read-only).
 * Returns 0 and sets *out, or:
 *   IQDB_EINVAL      bad argument (sync policy, period 0, NULL);
 *   IQDB_ENOTFOUND   no WAL and create not set (or read-only);
 *   IQDB_ECORRUPT    not a WAL, short or damaged header (message: path
 *                    and reason);
 *   IQDB_ENOTSUP     a newer format version;
 *   IQDB_EIO, IQDB_ENOSPC, IQDB_EREADONLY, IQDB_ENOMEM  creating or
 *                    reading failed (message: operation and errno text).
 * The handle is freed with iqdb__wal_close. */
int iqdb__wal_open(const char *dir, const iqdb_wal_options *opt,
                   iqdb_wal **out);

/* ---- replay ---- */

/* Called once per good frame, in order. payload is borrowed: valid only
 * until the callback returns. A non-zero return stops the replay, which
 * then returns that value and leaves the file untouched. */
typedef int (*iqdb_wal_frame_fn)(void *arg, uint64_t seq,
                                 const void *payload, size_t len);

/* Replay flag: when frames after the first bad one prove that it had been
 * durable (see the policy below), truncate anyway instead of failing. */
#define IQDB_WAL_REPLAY_SALVAGE 1u

typedef struct iqdb_wal_replay_info {
    uint64_t frames;          /* good frames delivered */
    uint64_t first_seq;       /* sequence number of this WAL's first frame */
    uint64_t next_seq;        /* the sequence number the next append gets */
    uint64_t file_size;       /* bytes of log before any truncation: the
                                 file size less the zero-filled tail the
                                 file is preallocated with, if any */
    uint64_t valid_end;       /* offset just past the last good frame */
    uint64_t truncated_bytes; /* file_size - valid_end: the damaged tail
                                 cut off (left in place when read-only or
                                 when IQDB_ECORRUPT is returned); 0 when
                                 only zeros follow the last good frame */
    const char *damage;       /* why the frame at valid_end was rejected
                                 (a static string), NULL for a clean end */
    uint64_t later_frames;    /* intact frames found after the damage (and
                                 discarded with it) */
    uint64_t later_durable;   /* of those, frames proving the damaged frame
                                 had been made durable (counting 1 when
                                 scan_cut is set: not provably torn) */
    uint64_t scan_cut;        /* non-zero: the scan after the damage
                                 stopped at this offset, having spent its
                                 checksum budget (twice the file plus 1 MiB)
                                 on frame headers claiming overlapping
                                 payloads, which only a crafted file has */
} iqdb_wal_replay_info;

/* Preallocation (off after open): when on, appends extend the file with
 * zeros ahead of the frames, so the syncs of frames written into that
 * space commit no size change, and replay takes zeros after the last good
 * frame as the clean end of the log, keeping them (core/wal.c,
 * PREALLOCATION). Off, the file ends where the log does and a zero tail
 * is damage, as it always was. Set it before the replay; not thread-safe
 * with other calls on the handle. */
void iqdb__wal_set_prealloc(iqdb_wal *w, int on);

/* Read every frame from the start, calling fn (may be NULL) for each good
 * one, and leave the handle ready to append after the last good frame.
 *
 * A frame is good when it is complete, its marker, header checksum,
 * length bound, sequence number (previous + 1) and payload checksum all
 * check. Replay stops at the first frame that is not good. With
 * preallocation on (iqdb__wal_set_prealloc), when only zero bytes follow,
 * that is the clean end of the log (the file is preallocated with zeros,
 * see core/wal.c) and they stay in place. Otherwise replay decides what
 * the bytes from there to the end of the file are:
 *
 *  - No intact frame follows (the common case: a write torn by a crash):
 *    the tail is truncated (and the truncation synced), everything
 *    before it survives. Returns 0.
 *  - Intact frames follow, but none of them had seen the bad frame
 *    durable (each frame records the highest sequence number that was
 *    durable when it was written; here all are below the bad frame's):
 *    the damage lies in writes that were never synced, which a power
 *    loss may persist out of order. Nothing acknowledged under ALWAYS is
 *    lost by dropping them, so the tail is truncated and the intact
 *    frames after the damage are reported in info->later_frames (never
 *    silently). Returns 0.
 *  - Some intact frame after the damage was written after the bad frame
 *    had been made durable (info->later_durable > 0): the bad frame is
 *    corruption of acknowledged data, not a torn write. Returns
 *    IQDB_ECORRUPT naming the file, the damaged frame's sequence number
 *    and offset, and the later frame that proves it; the file is left
 *    untouched and the handle refuses appends. With
 *    IQDB_WAL_REPLAY_SALVAGE the tail is truncated instead, info reports
 *    what was discarded, and 0 is returned.
 *
 * Limits of the policy: damage to the last frames of a WAL that nothing
 * was written after is indistinguishable from a torn write and is
 * truncated; under NEVER and PERIODIC fewer frames carry proof, so more
 * damage is classified as torn.
 *
 * Frames before the damage have been delivered to fn even when
 * IQDB_ECORRUPT is returned. May be called again (say with SALVAGE after
 * IQDB_ECORRUPT, delivering the frames again) as long as no append was
 * made. info may be NULL. Returns 0, the callback's non-zero value, IQDB_ECORRUPT,
 * IQDB_EINVAL (appends already made), IQDB_ENOMEM, or an I/O code (the
 * handle then refuses appends). */
int iqdb__wal_replay(iqdb_wal *w, unsigned flags, iqdb_wal_frame_fn fn,
                     void *arg, iqdb_wal_replay_info *info);

/* ---- appending ---- */

/* Append one frame holding payload[0..len) and make it as durable as the
 * sync policy says (ALWAYS: on stable storage before returning). On
 * success sets *seq (may be NULL) to the frame's sequence number. On
 * failure nothing was acknowledged. Returns 0, IQDB_EINVAL (NULL payload
 * with len > 0, replay not done), IQDB_ERANGE (len above
 * IQDB_WAL_MAX_PAYLOAD), IQDB_ENOMEM, IQDB_EREADONLY (read-only or failed
 * handle) or the I/O code of the failure. */
int iqdb__wal_append(iqdb_wal *w, const void *payload, size_t len,
                     uint64_t *seq);

/* The two halves of iqdb__wal_append under ALWAYS, for a caller that must
 * order frames under its own lock but wants to wait for durability
 * outside it (so concurrent writers can share a sync):
 * iqdb__wal_write writes the frame and returns without syncing, whatever
 * the policy; iqdb__wal_wait(w, seq) returns once every frame up to seq
 * is durable (taking part in group commit), or with the failure code. */
int iqdb__wal_write(iqdb_wal *w, const void *payload, size_t len,
                    uint64_t *seq);
int iqdb__wal_wait(iqdb_wal *w, uint64_t seq);

/* iqdb__wal_write for a payload the caller built in place, so a large
 * batch is neither copied nor held twice: buf holds IQDB_WAL_FRAME_HDR
 * bytes of room for the frame header (contents ignored), then the
 * payload, len bytes, and has room for pad bytes after it up to
 * IQDB_WAL_FRAME_HDR + iqdb__wal_frame_size(len) bytes in all. The header
 * and the zero padding are written into buf, so it must be writable; the
 * caller keeps ownership. Same results as iqdb__wal_write. */
#define IQDB_WAL_FRAME_HDR 32u
/* Bytes of the file header: an empty log is exactly this long. */
#define IQDB_WAL_HDR_SIZE 40u
size_t iqdb__wal_frame_size(size_t len); /* padded payload: len to 8 */
int iqdb__wal_write_framed(iqdb_wal *w, unsigned char *buf, size_t len,
                           uint64_t *seq);

/* The file's identity: its salt and the sequence number of its first
 * frame (header fields; both change at a reset or rotation). */
void iqdb__wal_ident(iqdb_wal *w, uint64_t *salt, uint64_t *base);
/* A random 64-bit value different from old (getrandom, or a mix of
 * clock, pid and a counter when it has no entropy yet): log salts and
 * snapshot file ids. */
uint64_t iqdb__random_id(uint64_t old);
/* Make every frame written so far durable. 0 or an error code. */
int iqdb__wal_sync(iqdb_wal *w);

/* Start an empty WAL after a snapshot: sync what was written, then write
 * a new WAL (new salt, first sequence number = the next one) under the
 * temporary name, sync it, rename it over the old one and sync the
 * directory. Frames of the old WAL can never be mistaken for frames of
 * the new one (each frame's checksum covers the WAL's salt). Returns 0 or
 * an error code (the handle then refuses appends). */
int iqdb__wal_reset(iqdb_wal *w);

/* Like iqdb__wal_reset, but the old file is first renamed to keep (a
 * name inside the same directory, replacing any file of that name), so
 * its frames stay readable until a snapshot holding them is in place:
 * what lets a compaction write its snapshot while appends go on into the
 * new file. Every frame written so far is made durable first, whatever
 * the policy, so the log stays a prefix across the two files. Failures
 * put the handle in the failed state like a reset's; after a failed
 * rename of the new file the directory may hold keep and no IQDB_WAL_FILE
 * (the db layer's open handles that). */
int iqdb__wal_rotate(iqdb_wal *w, const char *keep);

/* Bytes of log in the WAL file, header included (the end of the last
 * complete frame; the file itself may be longer, preallocated); 0 for
 * NULL. What the db layer compares with its compaction
 * threshold. */
uint64_t iqdb__wal_size(iqdb_wal *w);

/* The sequence number the next frame will get (0 for NULL). */
uint64_t iqdb__wal_next_seq(iqdb_wal *w);

/* During a replay, from inside its callback: the file offset of the frame
 * being delivered (the start of its frame header). */
uint64_t iqdb__wal_frame_offset(const iqdb_wal *w);

/* The file's path, for messages. */
const char *iqdb__wal_path(const iqdb_wal *w);

/* The highest sequence number known durable (every frame up to it is on
 * stable storage); below the first frame's when none is. It stays valid
 * after a failure: a failed handle cuts back only what follows it. */
uint64_t iqdb__wal_synced_seq(iqdb_wal *w);

/* 0 while the handle accepts appends; otherwise the code of the failure
 * that stopped it (IQDB_EREADONLY for a read-only handle, IQDB_EINVAL for
 * NULL). */
int iqdb__wal_failed(iqdb_wal *w);

/* Stop the periodic flusher, sync under PERIODIC (not under NEVER: the
 * caller asked for no syncs; nothing is pending under ALWAYS), close and
 * free. Accepts NULL. Returns 0 or the code of that last sync; the
 * handle is freed either way. */
int iqdb__wal_close(iqdb_wal *w);

#endif /* IQDB_WAL_INT_H */
