/*
 * core/snapshot_int.h - reading and writing snapshot files (the layout is
 * at the top of snapshot.c and in docs/FORMAT.md). Private to the core.
 */
#ifndef IQDB_SNAPSHOT_INT_H
#define IQDB_SNAPSHOT_INT_H

#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include "iqdb_int.h"

#define IQDB_SNAPSHOT_VERSION 1u
/* Format 2: format 1 plus SEGMENTS and REFS, some vectors kept in log
 * segments rather than in the file (written by automatic compactions;
 * durable.c, "segments"). */
#define IQDB_SNAPSHOT_VERSION_REFS 2u

enum {
    IQDB_SEC_CONFIG = 1,
    IQDB_SEC_SLOTS = 2,
    IQDB_SEC_IDS = 3,
    IQDB_SEC_ORDER = 4,
    IQDB_SEC_META = 5,
    IQDB_SEC_VECTORS = 6,
    IQDB_SEC_INDEX = 7,
    IQDB_SEC_SEGMENTS = 8, /* format 2 only */
    IQDB_SEC_REFS = 9      /* format 2 only */
};

/* A vector's reference (REFS, and iqdb_store.home in memory): segment
 * number (1-based) in the top 16 bits, the byte offset of the vector in
 * that segment in the low 48; 0 for none. */
#define IQDB_REF_SHIFT 48
#define IQDB_REF_OFF_MASK (((uint64_t)1 << IQDB_REF_SHIFT) - 1)
#define IQDB_MAX_SEGMENTS 65535u

/* A log segment a snapshot refers to: a log file that a compaction
 * rotated out, kept as "seg.<base>.<salt>" (16 hex digits each), and the
 * bytes of it (frames from its start) that must be intact. */
typedef struct iqdb_snap_seg {
    uint64_t base, salt, len;
} iqdb_snap_seg;
/* The segment's file name, into buf (at least 38 bytes). */
void iqdb__segment_name(char *buf, size_t cap, uint64_t base, uint64_t salt);

typedef struct iqdb_snap_section {
    uint32_t type, codec, crc;
    uint64_t offset, stored, raw, aux;
} iqdb_snap_section;

/* An open snapshot: header, section table and configuration checked. */
typedef struct iqdb_snapshot {
    int fd;
    char path[4096];
    uint64_t file_size;
    uint32_t version; /* 1, or 2 (IQDB_SNAPSHOT_VERSION_REFS) */
    uint64_t file_id; /* header; 0 in older files */
    int self_homes;   /* after a load: homes were set into this file, as
                         segment nsegs + 1 (iqdb__snapshot_load) */
    iqdb_snap_seg *segs; /* format 2: its SEGMENTS, after a load */
    uint32_t nsegs;
    uint32_t dim;
    int metric;
    uint64_t count, limit, next_order;
    uint64_t last_seq; /* last WAL frame folded in */
    uint32_t codec_id;
    char codec[65];  /* codec name, "" when raw */
    int level;       /* the codec level it was written with */
    char index[65];  /* index type name */
    iqdb_kv *params; /* index parameters, owned */
    size_t nparams;
    uint32_t nsec;
    iqdb_snap_section sec[16];
} iqdb_snapshot;

/* Write db's records and index state to dir/snapshot atomically (temp
 * file, fsync, rename, directory fsync). Sections other than the
 * configuration are compressed with codec (NULL: raw); the vectors in
 * blocks of one arena chunk. Caller holds db's lock against
 * writers. Returns 0 or a code with the message on db; on failure the
 * previous snapshot is untouched. */
int iqdb__snapshot_write(iqdb *db, const char *dir,
                         const iqdb_codec_ops *codec, int level,
                         uint64_t last_seq);

/* The same in two steps, so the file can be written without the lock:
 * prepare, under db's lock against writers, encodes everything but the
 * vectors and notes where the vectors are; commit, with no lock, writes
 * the file and replaces dir/snapshot as above. Between the two the
 * caller must keep every slot below the store's current limit from being
 * written (iqdb_store.pinned) and the database open. commit may run on
 * another thread; its message is set on db in that thread. */
typedef struct iqdb_snap_job iqdb_snap_job;
int iqdb__snapshot_prepare(iqdb *db, const iqdb_codec_ops *codec, int level,
                           uint64_t last_seq, iqdb_snap_job **out);
int iqdb__snapshot_commit(iqdb_snap_job *j, const char *dir);
/* After a commit: the file's id (header) and size. */
void iqdb__snapshot_job_file(const iqdb_snap_job *j, uint64_t *file_id,
                             uint64_t *size);
/* After a commit without a codec: set home[i] (iqdb_store.home) of every
 * slot live in the job whose vector the file holds (not in a hole) to
 * its place in the file, as entry `entry` of the handle's log table. */
void iqdb__snapshot_job_homes(const iqdb_snap_job *j, uint32_t entry,
                              uint64_t *home);
/* Non-zero (the default): commit writes aligned raw vector chunks with
 * O_DIRECT where the file system allows it. Tests turn it off to compare
 * the two paths; the files are byte-identical either way. */
extern atomic_int iqdb__snapshot_direct;
void iqdb__snapshot_job_free(iqdb_snap_job *j);
/* Make the job write format 2: refs (owned by the job from here, even on
 * failure) holds one reference per slot below the job's limit (0: the
 * vector goes into the file), segs the nsegs segments they name. A chunk
 * of the arena is left out of the file (a hole reading as zeros) when
 * every live slot of it has a reference; in any other chunk the
 * references are cleared and the whole chunk is written. Segments left
 * with no reference are not named: kept[g] (nsegs entries) is set to
 * segment g's new number (1-based), or 0 when it was left out; when
 * none is left the job stays format 1. 0 or IQDB_ENOMEM (the job then
 * stays format 1). */
int iqdb__snapshot_set_refs(iqdb_snap_job *j, uint64_t *refs,
                            const iqdb_snap_seg *segs, uint32_t nsegs,
                            uint32_t *kept);
/* Back to format 1: every vector goes into the file. */
void iqdb__snapshot_clear_refs(iqdb_snap_job *j);
/* The job's slot bitmap (bit i of byte i/8: slot i was live) and the
 * number of slots it covers, for iqdb__store_pin. */
const unsigned char *iqdb__snapshot_job_live(const iqdb_snap_job *j,
                                             uint64_t *limit);

/* Open and check a snapshot's header, section table and configuration.
 * Errors: IQDB_ENOTFOUND (no file), IQDB_ECORRUPT (with file and
 * offset), IQDB_EIO, IQDB_ENOMEM; message on handle NULL. */
int iqdb__snapshot_open(const char *path, iqdb_snapshot *sn);
int iqdb__snapshot_config(iqdb_snapshot *sn);
void iqdb__snapshot_close(iqdb_snapshot *sn);
const iqdb_snap_section *iqdb__snapshot_find(const iqdb_snapshot *sn,
                                             uint32_t type);
/* Load the records (and the index state, or rebuild the index when
 * allowed) of an open snapshot into db, which is empty and was created
 * with the snapshot's dim, metric, index and parameters. */
int iqdb__snapshot_load(iqdb *db, iqdb_snapshot *sn,
                        const iqdb_codec_ops *codec, int allow_rebuild);
/* Read (checksum, decompress) a section whose raw size may be at most
 * max_raw. *out is freed with iqdb__free. */
int iqdb__snapshot_read(iqdb_snapshot *sn, uint32_t type, uint64_t max_raw,
                        const iqdb_codec_ops *codec, void **out, size_t *len);
/* Check section s's checksum and that it decodes (within the ratio a
 * reader accepts), keeping nothing: the vectors are checked a chunk at a
 * time, so memory stays small whatever the database's size. 0, or
 * IQDB_ECORRUPT / another code with the message set. */
int iqdb__snapshot_verify(iqdb_snapshot *sn, const iqdb_snap_section *s,
                          const iqdb_codec_ops *codec);

#endif /* IQDB_SNAPSHOT_INT_H */
