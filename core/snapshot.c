/*
 * core/snapshot.c - the snapshot file of a durable database.
 *
 * A snapshot holds every record and, when the index can save itself, the
 * index's state, so a reopen neither replays history nor rebuilds the
 * index. It is replaced atomically: written to "snapshot.tmp", synced,
 * renamed over "snapshot", and the directory synced. A crash at any point
 * leaves the old or the new snapshot, complete.
 *
 * Byte layout (all integers little-endian):
 *
 *   header, 128 bytes at offset 0
 *     0   8  magic "IQDBSNAP"
 *     8   4  format version (1)
 *    12   4  header size (128)
 *    16   4  dim (1..IQDB_MAX_DIM)
 *    20   4  metric (IQDB_METRIC_*)
 *    24   8  live records N
 *    32   8  slot limit S (slots 0..S-1 exist; N of them live)
 *    40   8  next insertion order
 *    48   4  codec id (0 = sections stored raw)
 *    52   4  section count C (1..16)
 *    56   8  section table offset (= 128)
 *    64   8  sequence number of the last WAL frame folded in (0: none;
 *           below 2^63 - 1)
 *    72   8  file id: random, non-zero, new for every file (0 in files
 *           written before it was added); names the file when a later
 *           snapshot keeps it as a segment ("vec.<file id>")
 *    80  40  reserved, zero
 *   120   4  reserved, zero
 *   124   4  CRC32C of bytes 0..123
 *
 *   section table at offset 128: C entries of 48 bytes, then the CRC32C
 *   of those entries; the area is reserved for 16 entries, the unused
 *   part is zero, and the first section starts after it (at 904)
 *     0   4  type (IQDB_SEC_*)
 *     4   4  codec id used for this section (0 = raw)
 *     8   8  offset in the file
 *    16   8  stored length (bytes in the file)
 *    24   8  raw length (after decompression)
 *    32   4  CRC32C of the stored bytes
 *    36   4  reserved, zero
 *    40   8  aux: for INDEX, the plugin's format version
 *
 *   sections, types CONFIG 1, SLOTS 2, IDS 3, ORDER 4, META 5, VECTORS 6,
 *   INDEX 7 (each bounded by the file and by limits derived from N, S
 *   and dim before anything is allocated)
 *     CONFIG  u16 index-name length + name; u32 parameter count P; P x
 *             (u16 key length, key, u16 value length, value); u16 codec
 *             name length + name (empty when raw); i32 codec level (0:
 *             the codec's default; always 0 when raw; absent in files
 *             written before it was added, meaning 0). Always raw, so the
 *             codec can be named before it is needed. Both names are
 *             plugin names (1 to 64 of A-Z a-z 0-9 _ -), never paths:
 *             anything else is damage.
 *     SLOTS   ceil(S/64) u64 words: the live bitmap
 *     IDS     N ids (serial.c encoding), live slots in slot order
 *     ORDER   N u64 insertion orders, same order
 *     META    N x (u8 has-meta, [meta encoding]), same order
 *     VECTORS S x stride f32 (stride = dim rounded up to 8), dead slots
 *             zero. Raw (codec id 0): page-aligned, the arena's own
 *             layout, so it can be memory-mapped. With a codec: one block
 *             per arena chunk, in slot order (chunk i holds slots
 *             i*B .. min((i+1)*B, S) - 1, B = 2^k for the largest k <= 16
 *             with B * stride * 4 <= 1 MiB, or 1): u32 raw length (the
 *             chunk's slots x stride x 4, checked), u32 stored length
 *             (equal to raw: the bytes as they are; else the codec's
 *             output, raw / 1024 .. raw - 1 bytes), the stored bytes. The section's raw length
 *             is S x stride x 4; its CRC covers the blocks' headers too.
 *     INDEX   the index plugin's save() stream (optional)
 *
 *   format version 2: a snapshot that leaves vectors in log segments,
 *   written only by automatic compactions, always raw (codec id 0). It
 *   has every section of version 1, and two more:
 *     SEGMENTS (type 8) u32 count G (1..65535), u32 zero, then G x
 *             (u64 base sequence number, u64 salt, u64 length L): the log
 *             file "seg.<base>.<salt>" (16 lower-case hex digits each) of
 *             the database directory, a log rotated out by a compaction
 *             (header and frames as in wal.c; its header must carry this
 *             base and salt, 1 <= base <= the header's last frame) whose
 *             first L bytes must be its header and intact frames; or, with
 *             base 0, an earlier snapshot file "vec.<salt>" kept for the
 *             vectors it holds raw (its header's file id must be salt, its
 *             size L, every section intact, raw, of this dim)
 *     REFS (type 9) S x u64, one per slot: 0, or the segment's number g
 *             (1..G) in the top 16 bits and the byte offset of the slot's
 *             vector (dim f32 inside a frame's payload, or inside a kept
 *             snapshot's VECTORS section) in that segment in the low 48
 *             (72 <= offset <= L - dim x 4 for a log, the vector section
 *             for a kept snapshot)
 *   VECTORS keeps its layout, but an arena chunk (the geometry of the
 *   compressed blocks above) every live slot of which has a reference is
 *   left as a hole: it reads as zeros, and its vectors are read from the
 *   segments. A chunk with a live slot without a reference is written in
 *   full and none of its slots has a reference; a dead slot never has
 *   one. The section's CRC covers the zeros of the holes.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "durable_int.h"
#include "iqdb_int.h"
#include "serial_int.h"
#include "snapshot_int.h"
#include "wal_int.h"

#define HDR_SIZE 128u
#define ENTRY_SIZE 48u
#define MAX_SECTIONS 16u
#define FIRST_SECTION (HDR_SIZE + MAX_SECTIONS * ENTRY_SIZE + 4u) /* 904 */
#define PAGE 4096u
#define VBLOCK_HDR 8u /* a compressed vector block: u32 raw, u32 stored */
/* The most a compressed section may inflate to: MAX_RATIO times its
 * stored bytes, plus RATIO_SLACK for a whole section (not for a vector
 * block). What a file can make open allocate is bounded by that; the
 * writer stores raw whatever would compress further. */
#define MAX_RATIO 1024u
#define RATIO_SLACK ((uint64_t)1 << 20)

static const char magic[8] = {'I', 'Q', 'D', 'B', 'S', 'N', 'A', 'P'};

/* ---- little-endian helpers on raw memory ------------------------------- */

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
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* ---- writing ------------------------------------------------------------- */

typedef struct section {
    uint32_t type;
    uint32_t codec;
    uint64_t offset;
    uint64_t stored;
    uint64_t raw;
    uint32_t crc;
    uint64_t aux;
} section;

typedef struct writer {
    int fd;
    int dfd; /* the same file opened with O_DIRECT, or -1 (see w_chunk) */
    const void *run_p; /* direct chunks gathered, not yet written */
    size_t run_n;
    uint64_t run_off;
    const char *path;
    uint64_t off;
    int err;      /* first error, status code */
    int err_no;   /* its errno */
    const char *what;
    char detail[256]; /* the codec's message when compress failed */
    uint64_t flushed; /* bytes before this offset were written back */
} writer;

/* A compress failure r: keep the codec's own message. */
static void w_codec_fail(writer *w, int r)
{
    if (w->err == 0) {
        w->err = r;
        w->what = "compress";
        snprintf(w->detail, sizeof w->detail, "%s", iqdb__last_error());
    }
}

static void w_fail(writer *w, int err_no, const char *what)
{
    if (w->err == 0) {
        w->err = iqdb__io_status(err_no);
        w->err_no = err_no;
        w->what = what;
    }
}

/* Write back the file's pages every WRITEBACK_STEP bytes while it is
 * written, rather than leave it all to the final fsync. On ext4 (data=
 * ordered) a journal commit waits for every dirty data block allocated in
 * the transaction it commits, so while a large snapshot sits dirty in the
 * page cache, each fdatasync of the log that commits its size change
 * waits for the whole snapshot's writeback (measured: a 3 MB batch write
 * stalled 37 and 53 ms behind 70 and 140 MB snapshots). Written back in
 * steps, a commit waits for one step at most. Durability still comes
 * from the fsync at the end, but a failure here fails the snapshot: the
 * write-back error it reports is consumed (Linux keeps one per open file)
 * and the final fsync of the same descriptor would then succeed over the
 * lost pages. */
#define WRITEBACK_STEP ((uint64_t)8 << 20)

static void w_writeback(writer *w)
{
    if (w->err == 0 && w->off - w->flushed >= WRITEBACK_STEP) {
        if (iqdb__io()->writeback(w->fd, (off_t)w->flushed,
                                  (off_t)(w->off - w->flushed)) != 0)
            w_fail(w, errno, "write-back");
        w->flushed = w->off;
    }
}


static void w_bytes(writer *w, const void *p, size_t n, uint32_t *crc)
{
    if (w->err != 0 || n == 0)
        return;
    if (crc != NULL)
        *crc = iqdb__crc32c(*crc, p, n);
    if (iqdb__io_pwrite_all(w->fd, p, n, (off_t)w->off) != 0)
        w_fail(w, errno, "write");
    w->off += n;
}

/* Whole raw chunks of vectors go to the file with O_DIRECT where the
 * file system takes it and the chunk is aligned (memory, offset and
 * length all multiples of DIRECT_ALIGN, the largest logical block size in
 * use): straight from the arena to the device, without a copy into the
 * page cache. A compaction runs beside writers under IQDB_FSYNC_ALWAYS,
 * and that copy (and the write-back of the dirty pages) competed with
 * their syncs (measured: 60 batches of 1000 784-d vectors under ALWAYS
 * with automatic compaction, 378 ms per pass against 433 ms through the
 * page cache, medians of 16 and 10 passes; 244-248 ms with compaction
 * off. Forty minutes later on the same machine: 448 against 469 ms,
 * medians of 20; the gain depends on the state of the shared disk).
 * Everything else, and any chunk the file system refuses (EINVAL), is
 * written through the page cache as before; the final fsync makes both
 * durable. */
#define DIRECT_ALIGN 4096u
#define RUN_MAX ((size_t)8 << 20)

atomic_int iqdb__snapshot_direct = 1;

static int direct_ok(const writer *w, const void *p, size_t n)
{
    return w->dfd >= 0 && (uintptr_t)p % DIRECT_ALIGN == 0 &&
           n % DIRECT_ALIGN == 0 && w->off % DIRECT_ALIGN == 0;
}

/* Write the pending run of direct chunks (see w_chunk). */
static void w_run_flush(writer *w)
{
    size_t n = w->run_n;
    const void *p = w->run_p;
    w->run_n = 0;
    if (n == 0 || w->err != 0)
        return;
    if (iqdb__io_pwrite_all(w->dfd, p, n, (off_t)w->run_off) == 0)
        return;
    if (errno != EINVAL) {
        w_fail(w, errno, "write");
        return;
    }
    /* Not for this file after all: the page cache from here on,
     * rewriting whatever part of the run went through. */
    iqdb__io()->close(w->dfd);
    w->dfd = -1;
    if (iqdb__io_pwrite_all(w->fd, p, n, (off_t)w->run_off) != 0)
        w_fail(w, errno, "write");
}

/* A raw chunk of vectors. Aligned chunks that follow each other in memory
 * (the arena allocates them side by side) are gathered into one direct
 * write of up to RUN_MAX bytes. */
static void w_chunk(writer *w, const void *p, size_t n, uint32_t *crc)
{
    if (w->err != 0 || n == 0)
        return;
    if (!direct_ok(w, p, n)) {
        w_run_flush(w);
        w_bytes(w, p, n, crc);
        return;
    }
    if (w->run_n > 0 &&
        ((const char *)w->run_p + w->run_n != (const char *)p ||
         w->run_n + n > RUN_MAX))
        w_run_flush(w);
    if (w->run_n == 0) {
        w->run_p = p;
        w->run_off = w->off;
    }
    *crc = iqdb__crc32c(*crc, p, n);
    w->run_n += n;
    w->off += n;
}

static void w_pad_to(writer *w, uint64_t align)
{
    static const unsigned char zero[PAGE];
    uint64_t to = (w->off + align - 1) / align * align;
    while (w->err == 0 && w->off < to) {
        size_t n = to - w->off < PAGE ? (size_t)(to - w->off) : PAGE;
        w_bytes(w, zero, n, NULL);
    }
}

/* Start section s of type at the next multiple of align. */
static void w_open_section(writer *w, section *s, uint32_t type,
                           uint32_t codec_id, uint64_t align)
{
    s->type = type;
    s->codec = codec_id;
    s->crc = 0;
    s->aux = 0;
    w_pad_to(w, align);
    s->offset = w->off;
}

/* Write buf as one section, compressed with codec when that helps. */
static void w_section(writer *w, section *s, uint32_t type, const void *raw,
                      size_t len, const iqdb_codec_ops *codec, int level)
{
    w_open_section(w, s, type, 0, 8);
    s->raw = len;
    if (codec != NULL && len > 0 && w->err == 0) {
        size_t cap = codec->bound(len), out = 0;
        void *dst = cap ? iqdb__malloc(cap) : NULL;
        int r = dst ? codec->compress(raw, len, dst, cap, &out, level)
                    : IQDB_ENOMEM;
        /* Beyond the ratio a reader accepts, raw is the only way. */
        if (r == 0 && out < len &&
            (uint64_t)out * MAX_RATIO + RATIO_SLACK >= len) {
            s->codec = codec->id;
            s->stored = out;
            w_bytes(w, dst, out, &s->crc);
            iqdb__free(dst);
            return;
        }
        iqdb__free(dst);
        if (r != 0) {
            w_codec_fail(w, r);
            return;
        }
    }
    s->stored = len;
    w_bytes(w, raw, len, &s->crc);
}

static void enc_config(iqdb_buf *b, const iqdb *db, const char *codec_name,
                       int level)
{
    /* The stored type, also while flat stands in for its plugin. */
    const char *name = db->stands_in ? db->stands_in : db->ops->name;
    size_t nl = strlen(name);
    iqdb__buf_u16(b, (uint16_t)nl);
    iqdb__buf_put(b, name, nl);
    iqdb__buf_u32(b, (uint32_t)db->nparams);
    for (size_t i = 0; i < db->nparams; i++) {
        size_t kl = strlen(db->params[i].key), vl = strlen(db->params[i].value);
        iqdb__buf_u16(b, (uint16_t)kl);
        iqdb__buf_put(b, db->params[i].key, kl);
        iqdb__buf_u16(b, (uint16_t)vl);
        iqdb__buf_put(b, db->params[i].value, vl);
    }
    size_t cl = codec_name ? strlen(codec_name) : 0;
    iqdb__buf_u16(b, (uint16_t)cl);
    iqdb__buf_put(b, codec_name, cl);
    iqdb__buf_u32(b, (uint32_t)(codec_name ? level : 0));
}

static void enc_records(const iqdb_store *s, iqdb_buf *ids, iqdb_buf *ord,
                        iqdb_buf *meta)
{
    for (uint64_t i = 0; i < s->limit; i++) {
        if (!iqdb__store_is_live(s, i))
            continue;
        iqdb__enc_id(ids, s->ids[i]);
        iqdb__buf_u64(ord, s->order[i]);
        iqdb__buf_u8(meta, s->meta[i] != NULL);
        if (s->meta[i] != NULL)
            iqdb__enc_meta(meta, s->meta[i]);
    }
}

static int index_write_cb(void *ctx, const void *buf, size_t len)
{
    iqdb_buf *b = ctx;
    iqdb__buf_put(b, buf, len);
    return b->oom ? IQDB_ENOMEM : 0;
}

/* Everything a snapshot file holds, taken from the database under its
 * lock (iqdb__snapshot_prepare) and written without it
 * (iqdb__snapshot_commit). The records, the live bitmap and the index
 * state are encoded into buffers of their own; the vectors are not
 * copied: the job keeps the arena's chunk pointers, and the caller
 * guarantees that nothing writes to slots below `limit` until the job is
 * freed (the store's pin). */
struct iqdb_snap_job {
    const iqdb *db; /* for messages only */
    const iqdb_codec_ops *codec;
    int level;
    uint64_t last_seq;
    uint32_t dim;
    int metric;
    uint64_t count, limit, next_order;
    iqdb_buf cfg, slots, ids, ord, meta, idx;
    int have_index;
    uint32_t index_version;
    float **chunks; /* the arena's first ceil(limit / per) chunks */
    uint32_t chunk_shift;
    size_t stride;
    uint64_t *refs; /* format 2 (iqdb__snapshot_set_refs), else NULL */
    iqdb_buf segs;  /* format 2: the SEGMENTS section */
    uint64_t file_id;
    uint64_t vec_off; /* where commit put the VECTORS section */
    uint64_t file_size;
};

/* Whether slot was live when the job was prepared (its SLOTS bitmap,
 * little-endian words: bit i of the section's bytes is slot i). */
static int job_live(const iqdb_snap_job *j, uint64_t slot)
{
    return (((const unsigned char *)j->slots.p)[slot >> 3] >> (slot & 7)) & 1;
}

/* Whether the chunk of n slots from slot is stored in a format 2 file:
 * some live slot of it has no reference. live: the SLOTS bitmap as bytes
 * (bit i of byte i/8). */
static int chunk_stored(const unsigned char *live, const uint64_t *refs,
                        uint64_t slot, uint64_t n)
{
    for (uint64_t i = slot; i < slot + n; i++)
        if (((live[i >> 3] >> (i & 7)) & 1) && refs[i] == 0)
            return 1;
    return 0;
}

/* The vectors, chunk by chunk. A chunk whose slots are all live is
 * written straight from the arena; one with dead slots is staged, the
 * live vectors copied and the dead ones zeroed, so the file holds zeros
 * there and a dead slot is never read: the store may reuse it while a
 * background compaction writes (iqdb_store.pinned). With a codec each
 * chunk becomes one block (VBLOCK_HDR bytes: raw and stored length, then
 * the stored bytes), compressed when that makes it smaller. */
static void w_vectors(writer *w, section *sec, iqdb_snap_job *j)
{
    size_t per = (size_t)1 << j->chunk_shift;
    size_t vbytes = j->stride * 4;
    const iqdb_codec_ops *codec = j->codec;
    float *stage = NULL;
    unsigned char *packed = NULL;
    size_t cap = 0;
    /* Raw, the section is the arena's layout, page-aligned for mapping. */
    w_open_section(w, sec, IQDB_SEC_VECTORS, codec ? codec->id : 0,
                   codec ? 8 : PAGE);
    j->vec_off = w->off;
    if (codec != NULL && j->limit > 0 &&
        ((cap = codec->bound(per * vbytes)) == 0 ||
         (packed = iqdb__malloc(cap)) == NULL)) {
        w->err = IQDB_ENOMEM;
        w->what = "compress";
    }
    for (uint64_t slot = 0; slot < j->limit && w->err == 0; slot += per) {
        uint64_t n = j->limit - slot < per ? j->limit - slot : per;
        const float *src = j->chunks[slot >> j->chunk_shift];
        if (j->refs != NULL &&
            !chunk_stored((const unsigned char *)j->slots.p, j->refs, slot,
                          n)) {
            /* Every live vector of it is in a segment: a hole, which
             * reads as zeros and is checksummed as such. */
            w_run_flush(w);
            w->off += (uint64_t)n * vbytes;
            sec->crc = iqdb__crc32c_zeros(sec->crc, (uint64_t)n * vbytes);
            continue;
        }
        uint64_t live = 0;
        for (uint64_t i = 0; i < n; i++)
            live += (uint64_t)job_live(j, slot + i);
        if (live < n) {
            if (stage == NULL &&
                (stage = iqdb__aligned_alloc(DIRECT_ALIGN, per * vbytes)) ==
                    NULL) {
                w->err = IQDB_ENOMEM;
                w->what = "staging the vectors";
                break;
            }
            w_run_flush(w); /* it may hold the stage's last contents */
            for (uint64_t i = 0; i < n; i++) {
                char *to = (char *)stage + i * vbytes;
                if (job_live(j, slot + i))
                    memcpy(to, (const char *)src + i * vbytes, vbytes);
                else
                    memset(to, 0, vbytes);
            }
            src = stage;
        }
        size_t raw = (size_t)n * vbytes;
        if (codec == NULL) {
            w_chunk(w, src, raw, &sec->crc);
        } else {
            size_t out = 0;
            int r = codec->compress(src, raw, packed, cap, &out, j->level);
            if (r != 0) {
                w_codec_fail(w, r);
                break;
            }
            unsigned char bh[VBLOCK_HDR];
            /* Else stored raw: no gain, or beyond the ratio a reader
             * accepts (chunks of dead slots, all zeros, go raw). */
            int keep = out > 0 && out < raw &&
                       (uint64_t)out * MAX_RATIO >= raw;
            put32(bh, (uint32_t)raw);
            put32(bh + 4, (uint32_t)(keep ? out : raw));
            w_bytes(w, bh, VBLOCK_HDR, &sec->crc);
            w_bytes(w, keep ? (const void *)packed : (const void *)src,
                    keep ? out : raw, &sec->crc);
        }
        w_writeback(w);
    }
    w_run_flush(w);
    iqdb__aligned_free(stage);
    iqdb__free(packed);
    sec->raw = j->limit * vbytes;
    sec->stored = w->off - sec->offset;
}

/* The REFS section: one little-endian u64 per slot, always raw. */
static void w_refs(writer *w, section *sec, const iqdb_snap_job *j)
{
    unsigned char buf[8192];
    w_open_section(w, sec, IQDB_SEC_REFS, 0, 8);
    for (uint64_t i = 0; i < j->limit && w->err == 0;) {
        size_t k = 0;
        for (; k < sizeof buf / 8 && i < j->limit; k++, i++)
            put64(buf + k * 8, j->refs[i]);
        w_bytes(w, buf, k * 8, &sec->crc);
    }
    sec->raw = sec->stored = j->limit * 8;
}

static void w_header(writer *w, const iqdb_snap_job *j, const section *secs,
                     uint32_t nsec)
{
    unsigned char h[HDR_SIZE] = {0};
    memcpy(h, magic, 8);
    put32(h + 8, j->refs != NULL ? IQDB_SNAPSHOT_VERSION_REFS
                                 : IQDB_SNAPSHOT_VERSION);
    put32(h + 12, HDR_SIZE);
    put32(h + 16, j->dim);
    put32(h + 20, (uint32_t)j->metric);
    put64(h + 24, j->count);
    put64(h + 32, j->limit);
    put64(h + 40, j->next_order);
    put32(h + 48, j->codec ? j->codec->id : 0);
    put32(h + 52, nsec);
    put64(h + 56, HDR_SIZE);
    put64(h + 64, j->last_seq);
    put64(h + 72, j->file_id);
    put32(h + 124, iqdb__crc32c(0, h, 124));
    unsigned char t[MAX_SECTIONS * ENTRY_SIZE + 4] = {0};
    for (uint32_t i = 0; i < nsec; i++) {
        unsigned char *e = t + i * ENTRY_SIZE;
        put32(e, secs[i].type);
        put32(e + 4, secs[i].codec);
        put64(e + 8, secs[i].offset);
        put64(e + 16, secs[i].stored);
        put64(e + 24, secs[i].raw);
        put32(e + 32, secs[i].crc);
        put64(e + 40, secs[i].aux);
    }
    put32(t + nsec * ENTRY_SIZE, iqdb__crc32c(0, t, nsec * ENTRY_SIZE));
    uint64_t end = w->off;
    w->off = 0;
    w_bytes(w, h, HDR_SIZE, NULL);
    w_bytes(w, t, nsec * ENTRY_SIZE + 4, NULL);
    w->off = end;
}

void iqdb__snapshot_job_free(iqdb_snap_job *j)
{
    if (j == NULL)
        return;
    iqdb__buf_free(&j->cfg);
    iqdb__buf_free(&j->slots);
    iqdb__buf_free(&j->ids);
    iqdb__buf_free(&j->ord);
    iqdb__buf_free(&j->meta);
    iqdb__buf_free(&j->idx);
    iqdb__buf_free(&j->segs);
    iqdb__free(j->refs);
    iqdb__free(j->chunks);
    iqdb__free(j);
}

void iqdb__segment_name(char *buf, size_t cap, uint64_t base, uint64_t salt)
{
    if (base == 0) /* a snapshot file kept for its vectors */
        snprintf(buf, cap, "vec.%016llx", (unsigned long long)salt);
    else
        snprintf(buf, cap, "seg.%016llx.%016llx", (unsigned long long)base,
                 (unsigned long long)salt);
}

void iqdb__snapshot_job_file(const iqdb_snap_job *j, uint64_t *file_id,
                             uint64_t *size)
{
    *file_id = j->file_id;
    *size = j->file_size;
}

void iqdb__snapshot_job_homes(const iqdb_snap_job *j, uint32_t entry,
                              uint64_t *home)
{
    const unsigned char *live = (const unsigned char *)j->slots.p;
    size_t per = (size_t)1 << j->chunk_shift;
    uint64_t vb = (uint64_t)j->stride * 4;
    if (j->codec != NULL || entry == 0 ||
        j->vec_off + j->limit * vb > IQDB_REF_OFF_MASK)
        return;
    for (uint64_t slot = 0; slot < j->limit; slot += per) {
        uint64_t n = j->limit - slot < per ? j->limit - slot : per;
        if (j->refs != NULL && !chunk_stored(live, j->refs, slot, n))
            continue;
        for (uint64_t i = slot; i < slot + n; i++)
            if ((live[i >> 3] >> (i & 7)) & 1)
                home[i] = (uint64_t)entry << IQDB_REF_SHIFT |
                          (j->vec_off + i * vb);
    }
}

void iqdb__snapshot_clear_refs(iqdb_snap_job *j)
{
    iqdb__free(j->refs);
    j->refs = NULL;
    iqdb__buf_free(&j->segs);
}

int iqdb__snapshot_set_refs(iqdb_snap_job *j, uint64_t *refs,
                            const iqdb_snap_seg *segs, uint32_t nsegs,
                            uint32_t *kept)
{
    size_t per = (size_t)1 << j->chunk_shift;
    const unsigned char *live = (const unsigned char *)j->slots.p;
    iqdb__snapshot_clear_refs(j);
    j->refs = refs;
    /* Only the references of chunks left out of the file are kept, and
     * only those of live slots; kept[] counts them per segment. */
    memset(kept, 0, nsegs * sizeof *kept);
    for (uint64_t slot = 0; slot < j->limit; slot += per) {
        uint64_t n = j->limit - slot < per ? j->limit - slot : per;
        int stored = chunk_stored(live, refs, slot, n);
        for (uint64_t i = slot; i < slot + n; i++) {
            uint64_t g = refs[i] >> IQDB_REF_SHIFT;
            if (stored || !((live[i >> 3] >> (i & 7)) & 1))
                refs[i] = 0;
            else if (g >= 1 && g <= nsegs)
                kept[g - 1]++;
        }
    }
    /* Segments left without a reference are not named: renumber. */
    uint32_t m = 0;
    for (uint32_t g = 0; g < nsegs; g++)
        kept[g] = kept[g] > 0 ? ++m : 0;
    if (m == 0) {
        iqdb__snapshot_clear_refs(j); /* format 1 after all */
        return 0;
    }
    for (uint64_t i = 0; i < j->limit; i++)
        if (refs[i] != 0)
            refs[i] = (uint64_t)kept[(refs[i] >> IQDB_REF_SHIFT) - 1]
                          << IQDB_REF_SHIFT |
                      (refs[i] & IQDB_REF_OFF_MASK);
    iqdb__buf_u32(&j->segs, m);
    iqdb__buf_u32(&j->segs, 0);
    for (uint32_t g = 0; g < nsegs; g++) {
        if (kept[g] == 0)
            continue;
        iqdb__buf_u64(&j->segs, segs[g].base);
        iqdb__buf_u64(&j->segs, segs[g].salt);
        iqdb__buf_u64(&j->segs, segs[g].len);
    }
    if (j->segs.oom) {
        iqdb__snapshot_clear_refs(j);
        return IQDB_ENOMEM;
    }
    return 0;
}

const unsigned char *iqdb__snapshot_job_live(const iqdb_snap_job *j,
                                             uint64_t *limit)
{
    *limit = j->limit;
    return (const unsigned char *)j->slots.p;
}

int iqdb__snapshot_prepare(iqdb *db, const iqdb_codec_ops *codec, int level,
                           uint64_t last_seq, iqdb_snap_job **out)
{
    const iqdb_store *s = &db->store;
    iqdb_snap_job *j = iqdb__calloc(1, sizeof *j);
    if (j == NULL)
        return iqdb__set_error(db, IQDB_ENOMEM, "snapshot: out of memory");
    j->db = db;
    j->codec = codec;
    j->level = level;
    j->last_seq = last_seq;
    j->dim = db->dim;
    j->metric = db->metric;
    j->count = s->count;
    j->limit = s->limit;
    j->next_order = s->next_order;
    j->chunk_shift = s->arena.chunk_shift;
    j->stride = s->arena.stride;
    j->file_id = iqdb__random_id(0);
    if (j->file_id == 0)
        j->file_id = 1;
    iqdb__buf_init(&j->cfg);
    iqdb__buf_init(&j->slots);
    iqdb__buf_init(&j->ids);
    iqdb__buf_init(&j->ord);
    iqdb__buf_init(&j->meta);
    iqdb__buf_init(&j->idx);
    iqdb__buf_init(&j->segs);
    size_t per = (size_t)1 << j->chunk_shift;
    size_t nchunks = (size_t)((s->limit + per - 1) / per);
    if (nchunks > 0) {
        j->chunks = iqdb__malloc(nchunks * sizeof *j->chunks);
        if (j->chunks == NULL) {
            iqdb__snapshot_job_free(j);
            return iqdb__set_error(db, IQDB_ENOMEM, "snapshot: out of memory");
        }
        memcpy(j->chunks, s->arena.chunks, nchunks * sizeof *j->chunks);
    }
    enc_config(&j->cfg, db, codec ? codec->name : NULL, level);
    enc_records(s, &j->ids, &j->ord, &j->meta);
    if (db->ops->save != NULL && (db->ops->caps & IQDB_CAP_PERSIST) &&
        db->stands_in == NULL) {
        iqdb_writer iw = {sizeof iw, &j->idx, index_write_cb};
        int r = db->ops->save(db->index, &iw);
        if (r != 0) {
            iqdb__snapshot_job_free(j);
            return r;
        }
        j->have_index = 1;
        j->index_version = db->ops->format_version;
    }
    /* The live bitmap, as little-endian words. */
    for (uint64_t w = 0; w < (s->limit + 63) / 64; w++)
        iqdb__buf_u64(&j->slots, s->live[w]);
    if (j->cfg.oom || j->ids.oom || j->ord.oom || j->meta.oom || j->idx.oom ||
        j->slots.oom) {
        iqdb__snapshot_job_free(j);
        return iqdb__set_error(db, IQDB_ENOMEM, "snapshot: out of memory");
    }
    *out = j;
    return 0;
}

int iqdb__snapshot_commit(iqdb_snap_job *j, const char *dir)
{
    char tmp[4096], final[4096];
    const iqdb_io *io = iqdb__io();
    const iqdb_codec_ops *codec = j->codec;
    int level = j->level;
    if (snprintf(tmp, sizeof tmp, "%s/snapshot.tmp", dir) >= (int)sizeof tmp ||
        snprintf(final, sizeof final, "%s/snapshot", dir) >= (int)sizeof final)
        return iqdb__set_error(j->db, IQDB_EINVAL, "snapshot: path too long");
    writer w = {.fd = -1, .dfd = -1, .path = tmp};
    w.fd = io->open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w.fd < 0) {
        int e = errno;
        return iqdb__set_error(j->db, iqdb__io_status(e),
                               "snapshot: cannot create %s: %s", tmp,
                               strerror(e));
    }
#ifdef O_DIRECT
    /* Raw vectors only (compressed blocks are not aligned); where the
     * file system refuses O_DIRECT, everything takes the page cache. */
    if (codec == NULL && j->limit > 0 &&
        atomic_load(&iqdb__snapshot_direct))
        w.dfd = io->open(tmp, O_WRONLY | O_DIRECT | O_CLOEXEC, 0);
#endif
    section secs[MAX_SECTIONS];
    uint32_t n = 0;
    w.off = HDR_SIZE + MAX_SECTIONS * ENTRY_SIZE + 4;
    w_section(&w, &secs[n++], IQDB_SEC_CONFIG, j->cfg.p, j->cfg.len, NULL, 0);
    w_section(&w, &secs[n++], IQDB_SEC_SLOTS, j->slots.p, j->slots.len, codec,
              level);
    w_section(&w, &secs[n++], IQDB_SEC_IDS, j->ids.p, j->ids.len, codec, level);
    w_section(&w, &secs[n++], IQDB_SEC_ORDER, j->ord.p, j->ord.len, codec,
              level);
    w_section(&w, &secs[n++], IQDB_SEC_META, j->meta.p, j->meta.len, codec,
              level);
    if (j->refs != NULL) {
        w_section(&w, &secs[n++], IQDB_SEC_SEGMENTS, j->segs.p, j->segs.len,
                  NULL, 0);
        w_refs(&w, &secs[n++], j);
    }
    w_vectors(&w, &secs[n++], j);
    if (j->have_index) {
        w_section(&w, &secs[n], IQDB_SEC_INDEX, j->idx.p, j->idx.len, codec,
                  level);
        secs[n++].aux = j->index_version;
    }
    w_header(&w, j, secs, n);
    /* Chunks left out at the end of the vectors, with no section after
     * them, still belong to the file. */
    if (j->refs != NULL && w.err == 0 && io->ftruncate(w.fd, (off_t)w.off) != 0)
        w_fail(&w, errno, "ftruncate");
    j->file_size = w.off;
    if (w.dfd >= 0 && io->close(w.dfd) != 0 && w.err == 0)
        w_fail(&w, errno, "close");
    if (w.err == 0 && io->fsync(w.fd) != 0)
        w_fail(&w, errno, "fsync");
    if (io->close(w.fd) != 0 && w.err == 0)
        w_fail(&w, errno, "close");
    if (w.err == 0 && io->rename(tmp, final) != 0)
        w_fail(&w, errno, "rename");
    if (w.err == 0 && io->fsync_dir(dir) != 0)
        w_fail(&w, errno, "directory fsync");
    if (w.err != 0) {
        /* The old snapshot was never touched before the rename. */
        if (w.what == NULL || strcmp(w.what, "directory fsync") != 0)
            io->unlink(tmp);
        return iqdb__set_error(j->db, w.err, "snapshot: %s of %s failed: %s",
                               w.what ? w.what : "write", tmp,
                               w.err_no      ? strerror(w.err_no)
                               : w.detail[0] ? w.detail
                                             : iqdb_strerror(w.err));
    }
    return 0;
}

int iqdb__snapshot_write(iqdb *db, const char *dir,
                         const iqdb_codec_ops *codec, int level,
                         uint64_t last_seq)
{
    iqdb_snap_job *j;
    int r = iqdb__snapshot_prepare(db, codec, level, last_seq, &j);
    if (r == 0) {
        r = iqdb__snapshot_commit(j, dir);
        iqdb__snapshot_job_free(j);
    }
    return r;
}

/* ---- reading ------------------------------------------------------------- */

static uint64_t sec_off(const iqdb_snapshot *sn, uint32_t type);

static int corrupt(const void *h, const char *path, uint64_t off,
                   const char *why)
{
    return iqdb__set_error(h, IQDB_ECORRUPT,
                           "snapshot %s: corrupt at offset %llu: %s", path,
                           (unsigned long long)off, why);
}

static int read_exact(int fd, void *buf, size_t n, uint64_t off,
                      const char *path, const void *h)
{
    int r = iqdb__io_pread_all(fd, buf, n, (off_t)off);
    if (r == -2)
        return corrupt(h, path, off, "file ends early");
    if (r != 0)
        return iqdb__set_error(h, iqdb__io_status(errno),
                               "snapshot %s: read failed: %s", path,
                               strerror(errno));
    return 0;
}

void iqdb__snapshot_close(iqdb_snapshot *sn)
{
    if (sn->fd >= 0)
        iqdb__io()->close(sn->fd);
    iqdb__free(sn->segs);
    iqdb__kv_free(sn->params, sn->nparams);
    memset(sn, 0, sizeof *sn);
    sn->fd = -1;
}

static int parse_header(iqdb_snapshot *sn, const unsigned char *h,
                        const char *path)
{
    if (memcmp(h, magic, 8) != 0)
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "snapshot %s: not an iqdb snapshot (bad magic)",
                               path);
    if (get32(h + 124) != iqdb__crc32c(0, h, 124))
        return corrupt(NULL, path, 124, "header checksum mismatch");
    uint32_t version = get32(h + 8);
    /* Past the checksum, a higher version is a newer writer's file, not
     * damage (as for the log). */
    if (version != IQDB_SNAPSHOT_VERSION &&
        version != IQDB_SNAPSHOT_VERSION_REFS)
        return iqdb__set_error(NULL,
                               version > IQDB_SNAPSHOT_VERSION_REFS
                                   ? IQDB_ENOTSUP
                                   : IQDB_ECORRUPT,
                               "snapshot %s: format version %u, this "
                               "library reads versions %u and %u",
                               path, version, IQDB_SNAPSHOT_VERSION,
                               IQDB_SNAPSHOT_VERSION_REFS);
    sn->version = version;
    sn->dim = get32(h + 16);
    sn->metric = (int)get32(h + 20);
    sn->count = get64(h + 24);
    sn->limit = get64(h + 32);
    sn->next_order = get64(h + 40);
    sn->codec_id = get32(h + 48);
    sn->nsec = get32(h + 52);
    sn->last_seq = get64(h + 64);
    sn->file_id = get64(h + 72);
    if (get32(h + 12) != HDR_SIZE || get64(h + 56) != HDR_SIZE)
        return corrupt(NULL, path, 12, "bad header size");
    if (sn->dim == 0 || sn->dim > IQDB_MAX_DIM)
        return corrupt(NULL, path, 16, "dimension out of range");
    if (iqdb_metric_name((iqdb_metric)sn->metric) == NULL)
        return corrupt(NULL, path, 20, "unknown metric");
    if (sn->count > sn->limit || sn->limit > ((uint64_t)1 << 40))
        return corrupt(NULL, path, 24, "record counts out of range");
    if (sn->nsec == 0 || sn->nsec > MAX_SECTIONS)
        return corrupt(NULL, path, 52, "section count out of range");
    /* The log after it must start below 2^63 (core/wal.c). */
    if (sn->last_seq >= (UINT64_MAX >> 1))
        return corrupt(NULL, path, 64, "sequence number out of range");
    return 0;
}

static int parse_table(iqdb_snapshot *sn, const unsigned char *t,
                       const char *path, uint64_t file_size)
{
    uint64_t toff = HDR_SIZE;
    if (get32(t + sn->nsec * ENTRY_SIZE) !=
        iqdb__crc32c(0, t, sn->nsec * ENTRY_SIZE))
        return corrupt(NULL, path, toff, "section table checksum mismatch");
    for (uint32_t i = 0; i < sn->nsec; i++) {
        const unsigned char *e = t + i * ENTRY_SIZE;
        iqdb_snap_section *s = &sn->sec[i];
        s->type = get32(e);
        s->codec = get32(e + 4);
        s->offset = get64(e + 8);
        s->stored = get64(e + 16);
        s->raw = get64(e + 24);
        s->crc = get32(e + 32);
        s->aux = get64(e + 40);
        uint64_t eoff = toff + i * ENTRY_SIZE;
        if (s->type == 0 || s->type > IQDB_SEC_REFS ||
            (s->type > IQDB_SEC_INDEX &&
             sn->version != IQDB_SNAPSHOT_VERSION_REFS))
            return corrupt(NULL, path, eoff, "unknown section type");
        if (s->type > IQDB_SEC_INDEX && s->codec != 0)
            return corrupt(NULL, path, eoff, "compressed segment section");
        if (s->offset > file_size || s->stored > file_size - s->offset)
            return corrupt(NULL, path, eoff, "section beyond the end of file");
        if (s->codec != 0 && s->codec != sn->codec_id)
            return corrupt(NULL, path, eoff, "section codec differs from header");
        if (s->codec == 0 && s->stored != s->raw)
            return corrupt(NULL, path, eoff, "raw section length mismatch");
        for (uint32_t j = 0; j < i; j++)
            if (sn->sec[j].type == s->type)
                return corrupt(NULL, path, eoff, "duplicate section");
    }
    return 0;
}

/* Every byte of the file belongs to the header, the table or a section;
 * the alignment padding between them must be zero. So a flipped byte
 * anywhere is caught: by a checksum, or here. */
static int check_layout(iqdb_snapshot *sn)
{
    uint32_t idx[MAX_SECTIONS];
    for (uint32_t i = 0; i < sn->nsec; i++)
        idx[i] = i;
    for (uint32_t i = 1; i < sn->nsec; i++) /* insertion sort by offset */
        for (uint32_t j = i; j > 0 && sn->sec[idx[j - 1]].offset >
                                          sn->sec[idx[j]].offset; j--) {
            uint32_t t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    uint64_t pos = HDR_SIZE + (uint64_t)MAX_SECTIONS * ENTRY_SIZE + 4;
    unsigned char gap[PAGE];
    for (uint32_t i = 0; i <= sn->nsec; i++) {
        uint64_t next = i < sn->nsec ? sn->sec[idx[i]].offset : sn->file_size;
        if (next < pos)
            return corrupt(NULL, sn->path, next, "sections overlap");
        if (next - pos > PAGE)
            return corrupt(NULL, sn->path, pos, "unexplained bytes");
        /* The unused table entries and the gaps are zero. */
        if (next > pos) {
            int r = read_exact(sn->fd, gap, (size_t)(next - pos), pos, sn->path,
                               NULL);
            if (r != 0)
                return r;
            for (size_t k = 0; k < next - pos; k++)
                if (gap[k] != 0)
                    return corrupt(NULL, sn->path, pos + k,
                                   "non-zero padding");
        }
        if (i < sn->nsec)
            pos = next + sn->sec[idx[i]].stored;
    }
    /* Unused section-table slots after the table's checksum. */
    uint64_t used = HDR_SIZE + (uint64_t)sn->nsec * ENTRY_SIZE + 4;
    uint64_t tend = HDR_SIZE + (uint64_t)MAX_SECTIONS * ENTRY_SIZE + 4;
    int r = read_exact(sn->fd, gap, (size_t)(tend - used), used, sn->path, NULL);
    if (r != 0)
        return r;
    for (size_t k = 0; k < tend - used; k++)
        if (gap[k] != 0)
            return corrupt(NULL, sn->path, used + k, "non-zero padding");
    return 0;
}

int iqdb__snapshot_open(const char *path, iqdb_snapshot *sn)
{
    const iqdb_io *io = iqdb__io();
    memset(sn, 0, sizeof *sn);
    sn->fd = -1;
    snprintf(sn->path, sizeof sn->path, "%s", path);
    sn->fd = io->open(path, O_RDONLY | O_CLOEXEC, 0);
    if (sn->fd < 0)
        return iqdb__set_error(NULL, errno == ENOENT ? IQDB_ENOTFOUND
                                                     : iqdb__io_status(errno),
                               "snapshot %s: cannot open: %s", path,
                               strerror(errno));
    off_t size = lseek(sn->fd, 0, SEEK_END);
    if (size < 0)
        size = 0;
    sn->file_size = (uint64_t)size;
    unsigned char h[HDR_SIZE];
    unsigned char t[MAX_SECTIONS * ENTRY_SIZE + 4];
    int r;
    if (sn->file_size < HDR_SIZE)
        r = iqdb__set_error(NULL, IQDB_ECORRUPT,
                            "snapshot %s: not an iqdb snapshot (%llu bytes)",
                            path, (unsigned long long)sn->file_size);
    else if ((r = read_exact(sn->fd, h, HDR_SIZE, 0, path, NULL)) == 0 &&
             (r = parse_header(sn, h, path)) == 0 &&
             (r = read_exact(sn->fd, t, sn->nsec * ENTRY_SIZE + 4, HDR_SIZE,
                             path, NULL)) == 0)
        r = parse_table(sn, t, path, sn->file_size);
    if (r == 0)
        r = check_layout(sn);
    if (r == 0 && sn->version == IQDB_SNAPSHOT_VERSION_REFS &&
        (sn->codec_id != 0 || iqdb__snapshot_find(sn, IQDB_SEC_SEGMENTS) ==
                                  NULL ||
         iqdb__snapshot_find(sn, IQDB_SEC_REFS) == NULL))
        r = corrupt(NULL, path, 8, "a format 2 snapshot needs its segment "
                                   "and reference sections, raw");
    if (r == 0)
        r = iqdb__snapshot_config(sn);
    if (r != 0)
        iqdb__snapshot_close(sn);
    return r;
}

const iqdb_snap_section *iqdb__snapshot_find(const iqdb_snapshot *sn,
                                             uint32_t type)
{
    for (uint32_t i = 0; i < sn->nsec; i++)
        if (sn->sec[i].type == type)
            return &sn->sec[i];
    return NULL;
}

static uint64_t sec_off(const iqdb_snapshot *sn, uint32_t type)
{
    const iqdb_snap_section *s = iqdb__snapshot_find(sn, type);
    return s ? s->offset : HDR_SIZE;
}

/* Walk the blocks of a compressed vector section, whose stored bytes p
 * have passed their checksum: block i holds the slots of arena chunk i
 * (2^shift slots of stride floats, fewer in the last), so its raw length
 * is known before its header is read. With dst NULL only the framing is
 * checked (what open does before it allocates the arena: every block
 * claims exactly its chunk, and the blocks fill the section); otherwise
 * each block is decoded into dst(ctx, first slot of the block). */
typedef float *(*vec_dst_fn)(void *ctx, uint64_t slot);

static int vec_walk(const iqdb_snapshot *sn, const iqdb_snap_section *s,
                    const iqdb_codec_ops *codec, const unsigned char *p,
                    vec_dst_fn dst, void *ctx)
{
    iqdb_arena geo; /* the chunk geometry of this dim, nothing allocated */
    iqdb__arena_init(&geo, sn->dim);
    size_t per = (size_t)1 << geo.chunk_shift, vbytes = geo.stride * 4;
    if (s->raw != sn->limit * vbytes)
        return corrupt(NULL, sn->path, s->offset,
                       "vector section size does not match the header");
    /* Each block takes at least its header and one byte (and with the
     * ratio limit far more; checked per block below). */
    uint64_t blocks = (sn->limit + per - 1) / per;
    if (blocks > s->stored / (VBLOCK_HDR + 1))
        return corrupt(NULL, sn->path, s->offset,
                       "vector section too short for its blocks");
    uint64_t off = 0;
    for (uint64_t slot = 0; slot < sn->limit; slot += per) {
        uint64_t n = sn->limit - slot < per ? sn->limit - slot : per;
        size_t raw = (size_t)n * vbytes;
        if (s->stored - off < VBLOCK_HDR)
            return corrupt(NULL, sn->path, s->offset + off,
                           "vector block beyond the section");
        uint32_t braw = get32(p + off), bst = get32(p + off + 4);
        if (braw != raw || bst == 0 || bst > raw ||
            bst > s->stored - off - VBLOCK_HDR)
            return corrupt(NULL, sn->path, s->offset + off,
                           "bad vector block header");
        if (bst < raw && (uint64_t)bst * MAX_RATIO < raw)
            return corrupt(NULL, sn->path, s->offset + off,
                           "vector block claims more than the compression "
                           "ratio limit");
        const unsigned char *src = p + off + VBLOCK_HDR;
        if (dst != NULL) {
            float *d = dst(ctx, slot);
            if (bst == raw) {
                memcpy(d, src, raw);
            } else {
                size_t got = 0;
                int r = codec->decompress(src, bst, d, raw, &got);
                if (r == IQDB_ENOMEM)
                    return iqdb__set_error(NULL, r, "snapshot: out of memory");
                if (r != 0 || got != raw)
                    return corrupt(NULL, sn->path, s->offset + off,
                                   "vector block does not decompress");
            }
        }
        off += VBLOCK_HDR + bst;
    }
    if (off != s->stored)
        return corrupt(NULL, sn->path, s->offset + off,
                       "trailing bytes in the vector section");
    return 0;
}

/* Read section s's stored bytes and check their checksum. */
static int read_stored(iqdb_snapshot *sn, const iqdb_snap_section *s,
                       void **out)
{
    void *stored = iqdb__malloc(s->stored ? (size_t)s->stored : 1);
    *out = NULL;
    if (stored == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "snapshot: out of memory");
    int r = read_exact(sn->fd, stored, (size_t)s->stored, s->offset, sn->path,
                       NULL);
    if (r == 0 && iqdb__crc32c(0, stored, (size_t)s->stored) != s->crc)
        r = corrupt(NULL, sn->path, s->offset, "section checksum mismatch");
    if (r != 0) {
        iqdb__free(stored);
        return r;
    }
    *out = stored;
    return 0;
}

int iqdb__snapshot_read(iqdb_snapshot *sn, uint32_t type, uint64_t max_raw,
                        const iqdb_codec_ops *codec, void **out, size_t *len)
{
    const iqdb_snap_section *s = iqdb__snapshot_find(sn, type);
    *out = NULL;
    *len = 0;
    if (s == NULL)
        return corrupt(NULL, sn->path, HDR_SIZE, "a required section is missing");
    if (s->raw > max_raw || s->raw > SIZE_MAX || s->stored > SIZE_MAX)
        return corrupt(NULL, sn->path, s->offset, "section larger than its "
                                                  "record counts allow");
    if (s->codec != 0 && codec == NULL)
        return iqdb__set_error(NULL, IQDB_ENOPLUGIN,
                               "snapshot %s: compressed with codec id %u, "
                               "which is not loaded",
                               sn->path, s->codec);
    void *stored;
    int r = read_stored(sn, s, &stored);
    if (r != 0)
        return r;
    if (s->codec == 0) {
        *out = stored;
        *len = (size_t)s->stored;
        return 0;
    }
    void *raw = iqdb__malloc(s->raw ? (size_t)s->raw : 1);
    size_t got = 0;
    r = raw ? codec->decompress(stored, (size_t)s->stored, raw, (size_t)s->raw,
                                &got)
            : IQDB_ENOMEM;
    iqdb__free(stored);
    if (r != 0 || got != s->raw) {
        iqdb__free(raw);
        if (r == IQDB_ENOMEM)
            return iqdb__set_error(NULL, r, "snapshot: out of memory");
        return corrupt(NULL, sn->path, s->offset,
                       "section does not decompress");
    }
    *out = raw;
    *len = (size_t)s->raw;
    return 0;
}

static int rd_str(iqdb_rd *r, char **out)
{
    uint16_t n;
    if (iqdb__rd_u16(r, &n) != 0 || n > r->len - r->off)
        return -1;
    char *s = iqdb__malloc((size_t)n + 1);
    if (s == NULL)
        return -2;
    memcpy(s, r->p + r->off, n);
    s[n] = '\0';
    r->off += n;
    if (memchr(s, '\0', n) != NULL) {
        iqdb__free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int iqdb__snapshot_config(iqdb_snapshot *sn)
{
    void *p;
    size_t len;
    int r = iqdb__snapshot_read(sn, IQDB_SEC_CONFIG, 1 << 20, NULL, &p, &len);
    if (r != 0)
        return r;
    iqdb_rd rd;
    iqdb__rd_init(&rd, p, len);
    char *name = NULL, *codec = NULL;
    uint32_t np = 0;
    int bad = rd_str(&rd, &name);
    if (bad == 0 && (iqdb__rd_u32(&rd, &np) != 0 || np > 1024))
        bad = -1;
    for (uint32_t i = 0; bad == 0 && i < np; i++) {
        char *k = NULL, *v = NULL;
        bad = rd_str(&rd, &k);
        if (bad == 0)
            bad = rd_str(&rd, &v);
        if (bad == 0 && iqdb__kv_set(&sn->params, &sn->nparams, k, v) != 0)
            bad = -2;
        iqdb__free(k);
        iqdb__free(v);
    }
    if (bad == 0)
        bad = rd_str(&rd, &codec);
    /* The level came later: a section that ends after the codec name
     * means the codec's default (0). */
    uint32_t level = 0;
    if (bad == 0 && rd.off != len && iqdb__rd_u32(&rd, &level) != 0)
        bad = -1;
    sn->level = (int32_t)level;
    if (bad == 0 && (rd.off != len || (codec[0] == '\0' && level != 0)))
        bad = -1;
    /* Names go to the plugin loader, which opens a name with a '/' as a
     * path: only plugin names may come from a file, never paths. */
    if (bad == 0 && (!iqdb__plugin_name_valid(name) ||
                     strlen(name) >= sizeof sn->index ||
                     strlen(codec) >= sizeof sn->codec ||
                     (codec[0] != '\0' && !iqdb__plugin_name_valid(codec))))
        bad = -3;
    if (bad == 0) {
        snprintf(sn->index, sizeof sn->index, "%s", name);
        snprintf(sn->codec, sizeof sn->codec, "%s", codec);
        if ((sn->codec_id == 0) != (codec[0] == '\0'))
            bad = -1;
    }
    iqdb__free(name);
    iqdb__free(codec);
    iqdb__free(p);
    if (bad == -2)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "snapshot: out of memory");
    if (bad != 0)
        return corrupt(NULL, sn->path, sec_off(sn, IQDB_SEC_CONFIG),
                       bad == -3 ? "an index or codec name that is not a "
                                   "plugin name"
                                 : "bad configuration section");
    return 0;
}

/* ---- loading into a database ------------------------------------------ */

/* The most a section may inflate to: what the file holds for raw
 * sections, a generous but finite ratio for compressed ones. */
static uint64_t inflate_cap(const iqdb_snap_section *s)
{
    if (s->codec == 0)
        return s->stored;
    return s->stored > (UINT64_MAX >> 11) ? UINT64_MAX
                                          : s->stored * MAX_RATIO + RATIO_SLACK;
}

static float *arena_dst(void *ctx, uint64_t slot)
{
    return iqdb__arena_at(ctx, slot);
}

static float *scratch_at(void *ctx, uint64_t slot)
{
    (void)slot;
    return ctx;
}

/* chunk_stored over the live bitmap as words (as loaded). */
static int chunk_stored_w(const uint64_t *live, const uint64_t *refs,
                          uint64_t slot, uint64_t n)
{
    for (uint64_t i = slot; i < slot + n; i++)
        if (((live[i >> 6] >> (i & 63)) & 1) && refs[i] == 0)
            return 1;
    return 0;
}

/* Format 2: the SEGMENTS section into sn->segs, and the references, one
 * per slot, into *out, each checked: a reference only for a live slot of
 * a chunk left out of the file (every live slot of such a chunk has one,
 * no slot of a stored chunk has one), naming a listed segment, and
 * inside the bytes of it the snapshot requires. */
static int load_refs(iqdb_snapshot *sn, const uint64_t *live, uint64_t **out)
{
    void *p = NULL;
    size_t len = 0;
    *out = NULL;
    int r = iqdb__snapshot_read(sn, IQDB_SEC_SEGMENTS,
                                8 + (uint64_t)IQDB_MAX_SEGMENTS * 24, NULL, &p,
                                &len);
    if (r != 0)
        return r;
    const unsigned char *b = p;
    uint64_t soff = sec_off(sn, IQDB_SEC_SEGMENTS);
    uint32_t g = len >= 8 ? get32(b) : 0;
    if (len < 8 || g == 0 || g > IQDB_MAX_SEGMENTS || get32(b + 4) != 0 ||
        len != 8 + (size_t)g * 24) {
        iqdb__free(p);
        return corrupt(NULL, sn->path, soff, "bad segment list");
    }
    iqdb__free(sn->segs);
    sn->nsegs = 0;
    if ((sn->segs = iqdb__malloc(g * sizeof *sn->segs)) == NULL) {
        iqdb__free(p);
        return iqdb__set_error(NULL, IQDB_ENOMEM, "snapshot: out of memory");
    }
    for (uint32_t i = 0; i < g; i++) {
        iqdb_snap_seg *sg = &sn->segs[i];
        sg->base = get64(b + 8 + i * 24);
        sg->salt = get64(b + 16 + i * 24);
        sg->len = get64(b + 24 + i * 24);
        /* base 0: an older snapshot file kept for its vectors. */
        int bad = sg->base == 0
                      ? sg->salt == 0 || sg->len <= FIRST_SECTION
                      : sg->base > sn->last_seq ||
                            sg->len <= IQDB_WAL_HDR_SIZE;
        if (bad || sg->len > IQDB_REF_OFF_MASK) {
            iqdb__free(p);
            return corrupt(NULL, sn->path, soff + 8 + i * 24,
                           "segment out of range");
        }
    }
    sn->nsegs = g;
    iqdb__free(p);
    p = NULL;
    r = iqdb__snapshot_read(sn, IQDB_SEC_REFS, sn->limit * 8, NULL, &p, &len);
    if (r != 0)
        return r;
    uint64_t roff = sec_off(sn, IQDB_SEC_REFS);
    uint64_t *refs = iqdb__malloc(sn->limit ? (size_t)sn->limit * 8 : 8);
    if (refs == NULL) {
        iqdb__free(p);
        return iqdb__set_error(NULL, IQDB_ENOMEM, "snapshot: out of memory");
    }
    if (len != sn->limit * 8) {
        iqdb__free(p);
        iqdb__free(refs);
        return corrupt(NULL, sn->path, roff,
                       "reference section size does not match the header");
    }
    for (uint64_t i = 0; i < sn->limit; i++)
        refs[i] = get64((const unsigned char *)p + i * 8);
    iqdb__free(p);
    iqdb_arena geo;
    iqdb__arena_init(&geo, sn->dim);
    uint64_t per = (uint64_t)1 << geo.chunk_shift, vbytes = (uint64_t)sn->dim * 4;
    for (uint64_t slot = 0; slot < sn->limit; slot += per) {
        uint64_t n = sn->limit - slot < per ? sn->limit - slot : per;
        int stored = chunk_stored_w(live, refs, slot, n);
        for (uint64_t i = slot; i < slot + n; i++) {
            uint64_t ref = refs[i], ord = ref >> IQDB_REF_SHIFT,
                     off = ref & IQDB_REF_OFF_MASK;
            if (ref == 0)
                continue;
            const char *why = NULL;
            if (stored || !((live[i >> 6] >> (i & 63)) & 1))
                why = "a reference for a slot whose vector is not in a "
                      "segment";
            else if (ord == 0 || ord > g)
                why = "a reference to an unlisted segment";
            else if (off < (sn->segs[ord - 1].base == 0
                                ? FIRST_SECTION
                                : IQDB_WAL_HDR_SIZE + IQDB_WAL_FRAME_HDR) ||
                     off + vbytes > sn->segs[ord - 1].len)
                why = "a reference outside its segment";
            if (why != NULL) {
                iqdb__free(refs);
                return corrupt(NULL, sn->path, roff + i * 8, why);
            }
        }
    }
    *out = refs;
    return 0;
}

/* Check one segment a snapshot names (every frame in the bytes it needs
 * intact, and the file the one it names); *fd_out: the segment opened
 * for reading. */
/* The checksum of section s's stored bytes, read a megabyte at a time
 * (a kept snapshot's sections are only checked, never decoded). */
static int stored_crc_ok(iqdb_snapshot *sn, const iqdb_snap_section *s,
                         const char *why)
{
    size_t cap = (size_t)1 << 20;
    unsigned char *buf = iqdb__malloc(cap);
    if (buf == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
    uint32_t crc = 0;
    int r = 0;
    for (uint64_t at = 0; r == 0 && at < s->stored;) {
        size_t n = s->stored - at < cap ? (size_t)(s->stored - at) : cap;
        r = read_exact(sn->fd, buf, n, s->offset + at, sn->path, NULL);
        crc = iqdb__crc32c(crc, buf, n);
        at += n;
    }
    iqdb__free(buf);
    if (r == 0 && crc != s->crc)
        r = corrupt(NULL, sn->path, s->offset, why);
    return r;
}

/* An older snapshot file kept for its vectors ("vec.<id>"): every
 * section of it intact, its id, dimension and size the ones sg and sn
 * give, raw; [*lo, *hi): its vector section. */
static int check_vec_file(const iqdb_snapshot *sn, const char *path,
                          const iqdb_snap_seg *sg, uint64_t *lo, uint64_t *hi)
{
    iqdb_snapshot *v = iqdb__malloc(sizeof *v);
    if (v == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
    int r = iqdb__snapshot_open(path, v), opened = r == 0;
    if (r == IQDB_ENOTFOUND) {
        iqdb__free(v);
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "snapshot %s: its log segment %s is missing",
                               sn->path, path);
    }
    const char *why = NULL;
    const iqdb_snap_section *vs = NULL;
    if (r == 0) {
        vs = iqdb__snapshot_find(v, IQDB_SEC_VECTORS);
        if (v->file_id != sg->salt || v->file_size != sg->len)
            why = "is not the file the snapshot names (its id or size "
                  "differs)";
        else if (v->dim != sn->dim || v->codec_id != 0 || vs == NULL)
            why = "does not hold raw vectors of this dimension";
    }
    for (uint32_t i = 0; r == 0 && why == NULL && i < v->nsec; i++)
        r = stored_crc_ok(v, &v->sec[i], "section checksum mismatch");
    if (r == 0 && why == NULL) {
        *lo = vs->offset;
        *hi = vs->offset + vs->stored;
    }
    if (opened)
        iqdb__snapshot_close(v);
    iqdb__free(v);
    if (r == IQDB_ECORRUPT || r == IQDB_ENOTSUP || r == IQDB_ENOPLUGIN)
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "snapshot %s: log segment %s: %s", sn->path,
                               path, iqdb__last_error());
    if (r != 0)
        return r;
    if (why != NULL)
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "snapshot %s: log segment %s %s", sn->path,
                               path, why);
    return 0;
}

static int open_segment(const iqdb_snapshot *sn, const char *dir,
                        const iqdb_snap_seg *sg, int *fd_out, uint64_t *lo,
                        uint64_t *hi)
{
    char name[64], path[4200];
    iqdb__segment_name(name, sizeof name, sg->base, sg->salt);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *fd_out = -1;
    *lo = IQDB_WAL_HDR_SIZE + IQDB_WAL_FRAME_HDR;
    *hi = sg->len;
    if (sg->base == 0) {
        int r = check_vec_file(sn, path, sg, lo, hi);
        if (r != 0)
            return r;
        goto open_fd;
    }
    iqdb_wal_options o = {IQDB_WAL_NEVER, 100, 0, 1, 0, name};
    iqdb_wal *w = NULL;
    int r = iqdb__wal_open(dir, &o, &w);
    if (r == IQDB_ENOTFOUND)
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "snapshot %s: its log segment %s is missing",
                               sn->path, path);
    if (r == IQDB_ECORRUPT || r == IQDB_ENOTSUP)
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "snapshot %s: log segment %s: %s", sn->path,
                               path, iqdb__last_error());
    if (r != 0)
        return r;
    uint64_t salt, base;
    iqdb__wal_ident(w, &salt, &base);
    iqdb_wal_replay_info info;
    memset(&info, 0, sizeof info);
    if (salt != sg->salt || base != sg->base) {
        iqdb__wal_close(w);
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "snapshot %s: log segment %s is not the log "
                               "the snapshot names (its header differs)",
                               sn->path, path);
    }
    iqdb__wal_set_prealloc(w, 1);
    r = iqdb__wal_replay(w, IQDB_WAL_REPLAY_SALVAGE, NULL, NULL, &info);
    iqdb__wal_close(w);
    if (r == IQDB_ECORRUPT || (r == 0 && info.valid_end < sg->len))
        return iqdb__set_error(NULL, IQDB_ECORRUPT,
                               "snapshot %s: log segment %s is damaged at "
                               "offset %llu (%s); the snapshot needs its "
                               "first %llu bytes",
                               sn->path, path,
                               (unsigned long long)info.valid_end,
                               info.damage ? info.damage : "it ends early",
                               (unsigned long long)sg->len);
    if (r != 0)
        return r;
open_fd:
    *fd_out = iqdb__io()->open(path, O_RDONLY | O_CLOEXEC, 0);
    if (*fd_out < 0)
        return iqdb__set_error(NULL, iqdb__io_status(errno),
                               "snapshot %s: cannot open %s: %s", sn->path,
                               path, strerror(errno));
    return 0;
}

/* Format 2: copy every referenced vector from its segment into the
 * arena. Segments are mapped for the copy where mmap works, else read. */
static int fill_from_segments(iqdb *db, iqdb_snapshot *sn,
                              const uint64_t *refs)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", sn->path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    uint32_t g = sn->nsegs;
    int *fds = iqdb__malloc(g * sizeof *fds);
    const unsigned char **maps = iqdb__calloc(g, sizeof *maps);
    uint64_t *lo = iqdb__malloc(g * sizeof *lo), *hi = iqdb__malloc(g * sizeof *hi);
    if (fds == NULL || maps == NULL || lo == NULL || hi == NULL) {
        iqdb__free(fds);
        iqdb__free(maps);
        iqdb__free(lo);
        iqdb__free(hi);
        return iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
    }
    int r = 0;
    uint32_t opened = 0;
    for (; opened < g && r == 0; opened++) {
        r = open_segment(sn, dir, &sn->segs[opened], &fds[opened],
                         &lo[opened], &hi[opened]);
        if (r != 0)
            break;
        void *m = mmap(NULL, (size_t)sn->segs[opened].len, PROT_READ,
                       MAP_PRIVATE, fds[opened], 0);
        maps[opened] = m == MAP_FAILED ? NULL : m;
    }
    size_t vb = (size_t)db->dim * 4;
    for (uint64_t slot = 0; r == 0 && slot < sn->limit; slot++) {
        uint64_t ref = refs[slot];
        if (ref == 0)
            continue;
        uint32_t i = (uint32_t)(ref >> IQDB_REF_SHIFT) - 1;
        uint64_t off = ref & IQDB_REF_OFF_MASK;
        float *dst = iqdb__arena_at(&db->store.arena, slot);
        if (off < lo[i] || off + vb > hi[i]) {
            r = corrupt(NULL, sn->path, sec_off(sn, IQDB_SEC_REFS) + slot * 8,
                        "a reference outside its segment's vectors");
            break;
        }
        if (maps[i] != NULL)
            memcpy(dst, maps[i] + off, vb);
        else
            r = read_exact(fds[i], dst, vb, off, sn->path, NULL);
    }
    for (uint32_t i = 0; i < opened; i++) {
        if (maps[i] != NULL)
            munmap((void *)maps[i], (size_t)sn->segs[i].len);
        iqdb__io()->close(fds[i]);
    }
    iqdb__free(fds);
    iqdb__free(maps);
    iqdb__free(lo);
    iqdb__free(hi);
    return r;
}

int iqdb__snapshot_verify(iqdb_snapshot *sn, const iqdb_snap_section *s,
                          const iqdb_codec_ops *codec)
{
    if (s->codec != 0 && codec == NULL)
        return iqdb__set_error(NULL, IQDB_ENOPLUGIN,
                               "snapshot %s: compressed with codec id %u, "
                               "which is not loaded",
                               sn->path, s->codec);
    if (s->type != IQDB_SEC_VECTORS) {
        /* Compressed: no more than the ratio allows, whatever it claims. */
        uint64_t cap = s->codec ? inflate_cap(s) : s->raw;
        void *p = NULL;
        size_t len;
        if (s->raw > cap)
            return corrupt(NULL, sn->path, s->offset,
                           "section claims more than the compression ratio "
                           "limit");
        int r = iqdb__snapshot_read(sn, s->type, s->raw, codec, &p, &len);
        iqdb__free(p);
        return r;
    }
    iqdb_arena geo;
    iqdb__arena_init(&geo, sn->dim);
    size_t per = (size_t)1 << geo.chunk_shift, vbytes = geo.stride * 4;
    if (s->raw != sn->limit * vbytes)
        return corrupt(NULL, sn->path, s->offset,
                       "vector section size does not match the header");
    void *buf = iqdb__malloc(per * vbytes);
    if (buf == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "snapshot: out of memory");
    int r = 0;
    if (s->codec == 0) {
        r = stored_crc_ok(sn, s, "vector section checksum mismatch");
    } else {
        void *packed = NULL;
        r = read_stored(sn, s, &packed);
        if (r == 0) /* every block decoded into the one scratch chunk */
            r = vec_walk(sn, s, codec, packed, scratch_at, buf);
        iqdb__free(packed);
    }
    iqdb__free(buf);
    return r;
}

/* The vector section s, its size checked by iqdb__snapshot_load; packed:
 * a compressed section's stored bytes, checked (vec_walk). */
static int load_vectors(iqdb *db, iqdb_snapshot *sn,
                        const iqdb_snap_section *s, uint64_t mapped,
                        const iqdb_codec_ops *codec, const void *packed)
{
    const iqdb_arena *a = &db->store.arena;
    if (packed != NULL)
        return vec_walk(sn, s, codec, packed, arena_dst, (void *)a);
    size_t per = (size_t)1 << a->chunk_shift;
    uint32_t crc = 0;
    uint64_t off = s->offset;
    for (uint64_t slot = 0; slot < sn->limit; slot += per) {
        uint64_t n = sn->limit - slot < per ? sn->limit - slot : per;
        size_t bytes = (size_t)n * a->stride * 4;
        float *dst = iqdb__arena_at(a, slot);
        /* Mapped chunks are already in place: only checked. */
        if (slot >= mapped) {
            int r = read_exact(sn->fd, dst, bytes, off, sn->path, NULL);
            if (r != 0)
                return r;
        }
        crc = iqdb__crc32c(crc, dst, bytes);
        off += bytes;
    }
    if (crc != s->crc)
        return corrupt(NULL, sn->path, s->offset, "vector section checksum mismatch");
    return 0;
}

typedef struct mem_reader {
    const unsigned char *p;
    size_t len, off;
} mem_reader;

static int mem_read(void *ctx, void *buf, size_t len)
{
    mem_reader *m = ctx;
    if (len > m->len - m->off)
        return IQDB_ECORRUPT;
    memcpy(buf, m->p + m->off, len);
    m->off += len;
    return 0;
}

static int rebuild_index(iqdb *db)
{
    db->index_unsaved = db->stands_in == NULL && db->ops->save != NULL &&
                        (db->ops->caps & IQDB_CAP_PERSIST);
    const iqdb_store *s = &db->store;
    uint64_t *slots = iqdb__malloc((size_t)(s->count ? s->count : 1) * sizeof *slots);
    if (slots == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
    size_t n = 0;
    for (uint64_t i = 0; i < s->limit; i++)
        if (iqdb__store_is_live(s, i))
            slots[n++] = i;
    int r = n ? db->ops->add(db->index, slots, n) : 0;
    iqdb__free(slots);
    if (r != 0) {
        iqdb__retag_error(db, NULL);
        return r > 0 ? IQDB_EINTERNAL : r;
    }
    return 0;
}

static int load_index(iqdb *db, iqdb_snapshot *sn, const iqdb_codec_ops *codec,
                      int allow_rebuild)
{
    const iqdb_snap_section *s = iqdb__snapshot_find(sn, IQDB_SEC_INDEX);
    if (s == NULL || db->stands_in != NULL)
        return rebuild_index(db); /* never saved, or not flat's state */
    int can = db->ops->load != NULL && (db->ops->caps & IQDB_CAP_PERSIST) &&
              s->aux <= db->ops->format_version;
    if (!can) {
        if (!allow_rebuild)
            return iqdb__set_error(NULL, IQDB_ENOTSUP,
                                   "snapshot %s: index '%s' cannot load its "
                                   "saved state (format %llu, plugin reads "
                                   "up to %u) and rebuilding is not allowed",
                                   sn->path, db->ops->name,
                                   (unsigned long long)s->aux,
                                   db->ops->format_version);
        return rebuild_index(db);
    }
    void *p;
    size_t len;
    int r = iqdb__snapshot_read(sn, IQDB_SEC_INDEX, inflate_cap(s), codec, &p, &len);
    if (r != 0)
        return r;
    mem_reader m = {p, len, 0};
    iqdb_reader rd = {sizeof rd, &m, mem_read, len};
    r = db->ops->load(db->index, &rd, (uint32_t)s->aux);
    iqdb__free(p);
    if (r != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", iqdb_errmsg(db));
        if (r == IQDB_ECORRUPT)
            return iqdb__set_error(NULL, r, "snapshot %s: index section at "
                                   "offset %llu is corrupt: %s", sn->path,
                                   (unsigned long long)s->offset, msg);
        return iqdb__set_error(NULL, r > 0 ? IQDB_EINTERNAL : r,
                               "snapshot %s: index '%s' failed to load: %s",
                               sn->path, db->ops->name, msg);
    }
    return 0;
}

static int load_records(iqdb *db, iqdb_snapshot *sn, const iqdb_codec_ops *codec,
                        const uint64_t *live)
{
    iqdb_store *st = &db->store;
    void *ids = NULL, *ord = NULL, *meta = NULL;
    size_t nids = 0, nord = 0, nmeta = 0;
    const iqdb_snap_section *si = iqdb__snapshot_find(sn, IQDB_SEC_IDS);
    const iqdb_snap_section *sm = iqdb__snapshot_find(sn, IQDB_SEC_META);
    if (si == NULL || sm == NULL)
        return corrupt(NULL, sn->path, HDR_SIZE, "a record section is missing");
    uint64_t id_cap = sn->count * (1 + 4 + IQDB_ID_MAX_BYTES);
    int r = iqdb__snapshot_read(sn, IQDB_SEC_IDS,
                                id_cap < inflate_cap(si) ? id_cap : inflate_cap(si),
                                codec, &ids, &nids);
    if (r == 0)
        r = iqdb__snapshot_read(sn, IQDB_SEC_ORDER, sn->count * 8, codec, &ord, &nord);
    if (r == 0)
        r = iqdb__snapshot_read(sn, IQDB_SEC_META, inflate_cap(sm), codec, &meta,
                                &nmeta);
    if (r == 0 && nord != sn->count * 8)
        r = corrupt(NULL, sn->path, sec_off(sn, IQDB_SEC_ORDER),
                    "order section size does not match the record count");
    iqdb_rd ri, ro, rm;
    iqdb__rd_init(&ri, ids, nids);
    iqdb__rd_init(&ro, ord, nord);
    iqdb__rd_init(&rm, meta, nmeta);
    uint64_t max_order = 0;
    for (uint64_t slot = 0; r == 0 && slot < sn->limit; slot++) {
        if (!((live[slot >> 6] >> (slot & 63)) & 1))
            continue;
        const char *why = NULL;
        uint8_t kind, has;
        uint64_t order;
        iqdb_id id = iqdb_id_u64(0), owned;
        iqdb_meta *m = NULL;
        /* Ids: same encoding as serial.c, decoded with its reader. */
        if (iqdb__rd_u8(&ri, &kind) != 0)
            why = "truncated id";
        else if (kind == IQDB_ID_U64) {
            if (iqdb__rd_u64(&ri, &id.v.u64) != 0)
                why = "truncated id";
        } else if (kind == IQDB_ID_BYTES) {
            uint32_t len;
            if (iqdb__rd_u32(&ri, &len) != 0 || len == 0 ||
                len > IQDB_ID_MAX_BYTES || len > ri.len - ri.off)
                why = "bad byte-string id";
            else {
                id = iqdb_id_bytes(ri.p + ri.off, len);
                ri.off += len;
            }
        } else
            why = "bad id kind";
        if (why == NULL && iqdb__rd_u64(&ro, &order) != 0)
            why = "truncated order";
        if (why == NULL && (iqdb__rd_u8(&rm, &has) != 0 || has > 1))
            why = "bad metadata flag";
        if (why == NULL && has) {
            r = iqdb__dec_meta(&rm, &m, &why);
            if (r == IQDB_ENOMEM)
                break;
            r = 0;
        }
        uint64_t h = iqdb__id_hash(id), dup;
        if (why == NULL && iqdb__store_find(st, id, h, &dup))
            why = "duplicate id";
        const float *v = iqdb__arena_at(&st->arena, slot);
        for (uint32_t j = 0; why == NULL && j < db->dim; j++)
            if (!isfinite(v[j]))
                why = "non-finite vector element";
        if (why != NULL) {
            iqdb_meta_free(m);
            r = corrupt(NULL, sn->path, si->offset, why);
            break;
        }
        if (iqdb__id_copy(id, &owned) != 0) {
            iqdb_meta_free(m);
            r = iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
            break;
        }
        if (order > max_order)
            max_order = order;
        iqdb__store_restore(st, slot, owned, h, m, order);
    }
    if (r == 0 && (ri.off != ri.len || rm.off != rm.len))
        r = corrupt(NULL, sn->path, si->offset, "trailing bytes in a record section");
    if (r == 0 && sn->count > 0 && sn->next_order <= max_order)
        r = corrupt(NULL, sn->path, 40, "next insertion order too small");
    iqdb__free(ids);
    iqdb__free(ord);
    iqdb__free(meta);
    return r;
}

int iqdb__snapshot_load(iqdb *db, iqdb_snapshot *sn,
                        const iqdb_codec_ops *codec, int allow_rebuild)
{
    size_t words = (size_t)((sn->limit + 63) / 64);
    void *p = NULL, *packed = NULL;
    size_t len;
    int r = 0;
    /* The vector section first: it is what justifies the slot count S
     * (raw, S x stride x 4 bytes of the file; compressed, a checked block
     * of at least 9 bytes per chunk), so nothing sized by S is allocated
     * before it has been checked. */
    const iqdb_snap_section *vs = iqdb__snapshot_find(sn, IQDB_SEC_VECTORS);
    if (vs == NULL)
        return corrupt(NULL, sn->path, HDR_SIZE, "vector section missing");
    if (vs->codec == 0) {
        if (vs->raw != sn->limit * db->store.arena.stride * 4)
            return corrupt(NULL, sn->path, vs->offset,
                           "vector section size does not match the header");
    } else if (codec == NULL) {
        return iqdb__set_error(NULL, IQDB_ENOPLUGIN,
                               "snapshot %s: compressed with codec id %u, "
                               "which is not loaded",
                               sn->path, vs->codec);
    } else if ((r = read_stored(sn, vs, &packed)) != 0 ||
               (r = vec_walk(sn, vs, codec, packed, NULL, NULL)) != 0) {
        iqdb__free(packed);
        return r;
    }
    r = iqdb__snapshot_read(sn, IQDB_SEC_SLOTS, (uint64_t)words * 8, codec,
                            &p, &len);
    uint64_t *live = r == 0 ? iqdb__malloc(words ? words * 8 : 8) : NULL;
    uint64_t pop = 0;
    if (r == 0 && live == NULL)
        r = iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
    if (r == 0 && len != words * 8)
        r = corrupt(NULL, sn->path, sec_off(sn, IQDB_SEC_SLOTS),
                    "slot bitmap size does not match the header");
    for (size_t w = 0; r == 0 && w < words; w++) {
        live[w] = get64((const unsigned char *)p + w * 8);
        pop += (uint64_t)__builtin_popcountll(live[w]);
    }
    iqdb__free(p);
    if (r == 0 && (pop != sn->count ||
                   (sn->limit % 64 && words &&
                    (live[words - 1] >> (sn->limit % 64)) != 0)))
        r = corrupt(NULL, sn->path, 24, "slot bitmap disagrees with the record count");
    /* A raw vector section is laid out as the arena is: map its whole
     * chunks rather than read them (checked like read ones below). */
    uint64_t mapped = 0;
    if (r == 0 && vs->codec == 0)
        mapped = iqdb__arena_map(&db->store.arena, sn->fd, vs->offset,
                                 sn->limit);
    if (r == 0 && iqdb__store_reserve(&db->store, (size_t)sn->limit) != 0)
        r = iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory for %llu records",
                            (unsigned long long)sn->count);
    uint64_t *refs = NULL;
    if (r == 0 && sn->version == IQDB_SNAPSHOT_VERSION_REFS)
        r = load_refs(sn, live, &refs);
    if (r == 0)
        r = load_vectors(db, sn, vs, mapped, codec, packed);
    iqdb__free(packed);
    if (r == 0 && refs != NULL)
        r = fill_from_segments(db, sn, refs);
    if (r == 0)
        r = load_records(db, sn, codec, live);
    /* A vector still in its segment stays there for the next
     * compaction; so does one this file holds raw, as the segment after
     * the listed ones, when the file has an id to be kept under. */
    for (uint64_t i = 0; r == 0 && refs != NULL && i < sn->limit; i++)
        db->store.home[i] = refs[i];
    uint64_t vb = db->store.arena.stride * 4;
    if (r == 0 && sn->file_id != 0 && vs->codec == 0 &&
        sn->nsegs < IQDB_MAX_SEGMENTS &&
        vs->offset + sn->limit * vb <= IQDB_REF_OFF_MASK) {
        size_t per = (size_t)1 << db->store.arena.chunk_shift;
        uint64_t self = (uint64_t)sn->nsegs + 1;
        for (uint64_t slot = 0; slot < sn->limit; slot += per) {
            uint64_t n = sn->limit - slot < per ? sn->limit - slot : per;
            if (refs != NULL && !chunk_stored_w(live, refs, slot, n))
                continue;
            for (uint64_t i = slot; i < slot + n; i++)
                if ((live[i >> 6] >> (i & 63)) & 1)
                    db->store.home[i] = self << IQDB_REF_SHIFT |
                                        (vs->offset + i * vb);
        }
        sn->self_homes = 1;
    }
    iqdb__free(live);
    iqdb__free(refs);
    if (r != 0)
        return r;
    iqdb__store_finish_restore(&db->store, sn->limit, sn->next_order);
    return load_index(db, sn, codec, allow_rebuild);
}
