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
 * byte-string ids, deletes), each with both flag values 0 and 1, and
 * exits.
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

#include "durable_int.h"
#include "fuzz_util.h"
#include "iqdb_int.h"

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
    size_t n = size - 1;
    if (flags & 1)
        fix_crcs(b, n);
    scrub();
    fz_spit(snap, b, n);
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
