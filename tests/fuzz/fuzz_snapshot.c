/*
 * tests/fuzz/fuzz_snapshot.c - libFuzzer target for snapshot files, through
 * the public API.
 *
 * Byte 0 of an input is a set of flags, the rest is a snapshot file:
 *   bit 0  make every checksum good again before use (the header's, the
 *          section table's and each section's whose bytes are inside the
 *          file), so mutations get past the CRCs to the structure checks
 *          and decoders behind them
 *   bit 1  after the read-only passes, open writable too and flush, so the
 *          writer re-encodes whatever a hostile file managed to load
 *   bit 2  the rest is u32 n, n bytes of snapshot, then a log segment,
 *          written under the name the snapshot's first SEGMENTS entry
 *          gives (format 2: vectors read from a segment)
 * The file is written as `snapshot` into a scratch database directory
 * with no log, then opened read-only with dim 0 (whatever is stored), and
 * on success walked: count, stat, every record through iqdb_foreach, a
 * get of each id walked, and a top-5 search. Then iqdb_check runs. Every
 * call must return 0 or one of the codes a hostile file may cause
 * (IQDB_ECORRUPT, IQDB_ENOTSUP, IQDB_ENOPLUGIN, IQDB_ENOMEM); anything
 * else aborts with the message, as does any sanitizer report. A record
 * read back must have finite elements.
 *
 * Seeds: run with FUZZ_SNAPSHOT_SEEDS=DIR and the target writes a few
 * valid snapshots there (raw, zstd, lz4, hnsw; metadata of every type,
 * byte-string ids, deletes) and one of format 2 with its segment, each
 * with both flag values 0 and 1, and exits.
 *
 * Needs the plugins at run time: IQDB_PLUGIN_PATH=$B/plugins (flat, hnsw,
 * zstd, lz4 of a build tree). Build (clang with libFuzzer; B a configured
 * and built non-sanitizer build tree, S the source tree):
 *
 *   make -C $B core/libiqdbcore.la
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=all -I$S/sdk/include -I$S/core \
 *       $S/tests/fuzz/fuzz_snapshot.c $B/core/.libs/libiqdbcore.a \
 *       -lltdl -lgomp -lm -lpthread -o fuzz_snapshot
 *
 * Run: see tests/fuzz/README.md. Not built by make.
 */
#define FUZZ_NAME "fuzz_snapshot"

#include <dirent.h>

#include "durable_int.h"
#include "fuzz_util.h"
#include "iqdb_int.h"
#include "snapshot_int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];
static char snap[300], wal[300], wal_old[300], tmp[300];

/* Layout in core/snapshot.c: 128-byte header (CRC at 124), the section
 * table at 128 (C entries of 48 bytes, C at offset 52, then a CRC). */
static void fix_crcs(uint8_t *b, size_t n)
{
    if (n < 128)
        return;
    uint32_t c = b[52] | (uint32_t)b[53] << 8;
    if (c > 16)
        c = 16;
    if (128 + (size_t)c * 48 + 4 <= n) {
        for (uint32_t i = 0; i < c; i++) {
            uint8_t *e = b + 128 + i * 48;
            uint64_t off = fz_get64(e + 8), len = fz_get64(e + 16);
            if (off <= n && len <= n - off)
                fz_put32(e + 32, iqdb__crc32c(0, b + off, (size_t)len));
        }
        fz_put32(b + 128 + c * 48, iqdb__crc32c(0, b + 128, c * 48));
    }
    fz_put32(b + 124, iqdb__crc32c(0, b, 124));
}

static void scrub(void)
{
    unlink(wal);
    unlink(wal_old);
    unlink(tmp);
    DIR *dh = opendir(dir);
    struct dirent *de;
    char p[600];
    while (dh != NULL && (de = readdir(dh)) != NULL)
        if (strncmp(de->d_name, "seg.", 4) == 0 ||
            strncmp(de->d_name, "vec.", 4) == 0) {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    if (dh != NULL)
        closedir(dh);
}

/* The name of the first segment a snapshot's SEGMENTS section (type 8)
 * lists, or a fixed one. */
static void seg_name(const uint8_t *b, size_t n, char *name, size_t cap)
{
    uint64_t base = 1, salt = 0;
    uint32_t c = n >= 128 ? (b[52] | (uint32_t)b[53] << 8) : 0;
    for (uint32_t i = 0; i < c && i < 16 && 128 + (size_t)(i + 1) * 48 <= n;
         i++) {
        const uint8_t *e = b + 128 + i * 48;
        uint64_t off = fz_get64(e + 8);
        if (e[0] == 8 && off <= n && n - off >= 32) {
            base = fz_get64(b + off + 8);
            salt = fz_get64(b + off + 16);
            break;
        }
    }
    char seg[64];
    iqdb__segment_name(seg, sizeof seg, base, salt);
    snprintf(name, cap, "%s/%s", dir, seg);
}

/* ---- seeds -------------------------------------------------------------- */

static void seed_db(const char *out, const char *name, const char *codec,
                    const char *index, uint32_t dim)
{
    char d[400];
    snprintf(d, sizeof d, "%s/db-%s", out, name);
    iqdb_config *c = iqdb_config_new(dim, IQDB_METRIC_EUCLIDEAN);
    iqdb_config_set_compression(c, codec, 0);
    if (index != NULL)
        iqdb_config_set_index(c, index);
    iqdb *db;
    int r = iqdb_open(d, c, &db);
    if (r != 0)
        fz_die("seed iqdb_open", r);
    iqdb_config_free(c);
    float *v = calloc(dim, sizeof *v);
    for (uint64_t i = 0; i < 40; i++) {
        for (uint32_t k = 0; k < dim; k++)
            v[k] = (float)((i * 31 + k * 7) % 13) - 6.0f;
        iqdb_meta *m = iqdb_meta_new();
        iqdb_meta_set(m, "s", iqdb_value_str(i % 2 ? "odd" : "even"));
        iqdb_meta_set(m, "i", iqdb_value_int((int64_t)i - 20));
        iqdb_meta_set(m, "d", iqdb_value_double((double)i / 3));
        iqdb_meta_set(m, "b", iqdb_value_bool(i % 3 == 0));
        iqdb_meta_set(m, "n", iqdb_value_null());
        char bid[16];
        int bl = snprintf(bid, sizeof bid, "key-%llu", (unsigned long long)i);
        iqdb_id id = i % 4 ? iqdb_id_u64(i) : iqdb_id_bytes(bid, (uint32_t)bl);
        if ((r = iqdb_upsert(db, id, v, dim, i % 5 ? m : NULL)) != 0)
            fz_die("seed iqdb_upsert", r);
        iqdb_meta_free(m);
    }
    iqdb_delete(db, iqdb_id_u64(3), NULL);
    iqdb_delete(db, iqdb_id_u64(7), NULL);
    free(v);
    if ((r = iqdb_close(db)) != 0)
        fz_die("seed iqdb_close", r);
    char sp[500];
    snprintf(sp, sizeof sp, "%s/snapshot", d);
    size_t n;
    uint8_t *file = fz_slurp(sp, &n);
    uint8_t *b = malloc(n + 1); /* the flags byte, then the file */
    if (b == NULL)
        fz_die("seed read", -1);
    memcpy(b + 1, file, n);
    free(file);
    for (int flags = 0; flags < 2; flags++) {
        char op[500];
        snprintf(op, sizeof op, "%s/seed-%s-%d", out, name, flags);
        b[0] = (uint8_t)flags;
        fz_spit(op, b, n + 1);
    }
    free(b);
}

/* A format 2 snapshot and its first segment, taken while the database
 * that an automatic compaction made them for is still open (a close
 * would write format 1). With `kept`, the database was closed with a
 * few records first, so the first segment is likely the kept snapshot
 * ("vec.*") rather than a log. */
static void seed_segments(const char *out, int kept)
{
    char d[400], sp[500], gp[600];
    snprintf(d, sizeof d, "%s/db-segments%s", out, kept ? "-kept" : "");
    iqdb_config *c = iqdb_config_new(16, IQDB_METRIC_EUCLIDEAN);
    iqdb_config_set_compact_bytes(c, 2048);
    iqdb *db;
    int r = iqdb_open(d, c, &db);
    if (r != 0)
        fz_die("seed iqdb_open", r);
    if (kept) {
        float w[16] = {1, 2, 3};
        for (uint64_t i = 1000; i < 1010; i++)
            if ((r = iqdb_upsert(db, iqdb_id_u64(i), w, 16, NULL)) != 0)
                fz_die("seed iqdb_upsert", r);
        if ((r = iqdb_close(db)) != 0 || (r = iqdb_open(d, c, &db)) != 0)
            fz_die("seed reopen", r);
    }
    iqdb_config_free(c);
    snprintf(sp, sizeof sp, "%s/snapshot", d);
    float v[16];
    size_t n = 0;
    uint8_t *file = NULL;
    for (uint64_t i = 0; i < 400; i++) {
        for (int k = 0; k < 16; k++)
            v[k] = (float)((i * 7 + (uint64_t)k * 3) % 11) - 5.0f;
        iqdb_meta *m = iqdb_meta_new();
        iqdb_meta_set(m, "i", iqdb_value_int((int64_t)i));
        r = iqdb_upsert(db, iqdb_id_u64(i), v, 16, i % 3 ? m : NULL);
        iqdb_meta_free(m);
        if (r != 0)
            fz_die("seed iqdb_upsert", r);
        snprintf(gp, sizeof gp, "%s/wal.old", d);
        for (int t = 0; t < 2000 && access(gp, F_OK) == 0; t++)
            usleep(1000);
        free(file);
        file = fz_slurp(sp, &n);
        if (n > 12 && file[8] == 2)
            break;
    }
    if (n <= 12 || file[8] != 2)
        fz_die("seed: no format 2 snapshot", -1);
    seg_name(file, n, gp, sizeof gp);
    /* seg_name names it in the scratch dir: the same name in d. */
    const char *base = strrchr(gp, '/');
    char real[700];
    snprintf(real, sizeof real, "%s%s", d, base);
    size_t gn;
    uint8_t *seg = fz_slurp(real, &gn);
    uint8_t *b = malloc(1 + 4 + n + gn);
    if (b == NULL)
        fz_die("seed read", -1);
    fz_put32(b + 1, (uint32_t)n);
    memcpy(b + 5, file, n);
    memcpy(b + 5 + n, seg, gn);
    for (int flags = 4; flags < 6; flags++) {
        char op[500];
        snprintf(op, sizeof op, "%s/seed-segments%s-%d", out,
                 kept ? "-kept" : "", flags);
        b[0] = (uint8_t)flags;
        fz_spit(op, b, 1 + 4 + n + gn);
    }
    free(b);
    free(seg);
    free(file);
    iqdb_close(db);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *seeds = getenv("FUZZ_SNAPSHOT_SEEDS");
    if (seeds != NULL) {
        seed_db(seeds, "raw", NULL, NULL, 3);
        seed_db(seeds, "zstd", "zstd", NULL, 3);
        seed_db(seeds, "lz4", "lz4", NULL, 20);
        seed_db(seeds, "hnsw", NULL, "hnsw", 4);
        seed_segments(seeds, 0);
        seed_segments(seeds, 1);
        printf("seeds written to %s\n", seeds);
        exit(0);
    }
    fz_scratch(dir, sizeof dir);
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    snprintf(wal, sizeof wal, "%s/wal", dir);
    snprintf(wal_old, sizeof wal_old, "%s/wal.old", dir);
    snprintf(tmp, sizeof tmp, "%s/snapshot.tmp", dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    uint8_t *b = malloc(size);
    if (b == NULL)
        return 0;
    memcpy(b, data + 1, size - 1);
    size_t n = size - 1, segn = 0;
    uint8_t *seg = NULL;
    if (flags & 4) {
        uint32_t sn = n >= 4 ? (uint32_t)b[0] | (uint32_t)b[1] << 8 |
                                   (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24
                             : 0;
        if (n < 4 || sn > n - 4) {
            free(b);
            return 0;
        }
        seg = b + 4 + sn;
        segn = n - 4 - sn;
        memmove(b, b + 4, sn);
        n = sn;
    }
    if (flags & 1)
        fix_crcs(b, n);
    scrub();
    fz_spit(snap, b, n);
    if (seg != NULL) {
        char sp[600];
        seg_name(b, n, sp, sizeof sp);
        /* seg lies after b's first n bytes: memmove left it in place. */
        fz_spit(sp, seg, segn);
    }
    free(b);

    iqdb_config *c = iqdb_config_new(0, (iqdb_metric)0);
    iqdb_config_set_readonly(c, 1);
    iqdb *db = NULL;
    int r = iqdb_open(dir, c, &db);
    fz_allowed("read-only iqdb_open", r, 1);
    if (r == 0) {
        fz_walk(db, 0);
        if ((r = iqdb_close(db)) != 0)
            fz_die("read-only iqdb_close", r);
    }
    fz_allowed("iqdb_check", iqdb_check(dir, NULL, NULL, NULL), 1);
    if (flags & 2) {
        iqdb_config_set_readonly(c, 0);
        r = iqdb_open(dir, c, &db);
        fz_allowed("writable iqdb_open", r, 1);
        if (r == 0) {
            fz_walk(db, 0);
            fz_allowed("iqdb_flush", iqdb_flush(db), 1);
            fz_allowed("iqdb_close", iqdb_close(db), 1);
        }
    }
    iqdb_config_free(c);
    return 0;
}
