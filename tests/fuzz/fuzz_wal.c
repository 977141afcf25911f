/*
 * tests/fuzz/fuzz_wal.c - libFuzzer target for write-ahead logs, through
 * the public API.
 *
 * A scratch database of dim 3 holds a valid empty snapshot; each input
 * becomes its `wal`. Byte 0 of the input is a set of flags:
 *   bit 0  raw: the rest of the input is the whole log file as is
 *          (header, framing, checksums, zero tails all under attack);
 *          otherwise it is a list of payloads, each a u16 length
 *          (little-endian) and that many bytes, which the target frames
 *          as the writer would - header, sequence numbers from 1, both
 *          CRCs good - so every payload reaches the record decoder and
 *          the apply path
 *   bit 1  open with strict recovery
 *   bit 2  after the read-only passes, open writable and close, which
 *          replays, repairs and compacts
 *   bit 3  framed mode: each frame's durable mark says the frame before
 *          it was durable (else none is), which changes how damage after
 *          it is judged
 * The log is opened read-only (dim 0) and on success walked: every record
 * through iqdb_foreach (elements must be finite), a get of each search
 * hit, a top-5 search. Then iqdb_check runs. Every call must return 0 or
 * a code a hostile file may cause (IQDB_ECORRUPT, IQDB_ENOTSUP,
 * IQDB_ENOMEM); anything else aborts, as does any sanitizer report.
 *
 * Seeds: run with FUZZ_WAL_SEEDS=DIR and the target writes framed seeds
 * there (upserts with metadata of every type and byte-string ids, a batch
 * with a repeated id, deletes) and one raw seed, and exits.
 *
 * Needs the flat plugin at run time (IQDB_PLUGIN_PATH=$B/plugins). The
 * core must be compiled with coverage for the fuzzer to see inside it:
 * configure a build tree F with CC=clang
 * CFLAGS="-g -O1 -fsanitize=fuzzer-no-link,address,undefined"
 * LDFLAGS="-fsanitize=address,undefined", `make -C $F core/libiqdbcore.la`,
 * then (S the source tree):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=all -I$S/sdk/include -I$S/core \
 *       $S/tests/fuzz/fuzz_wal.c $F/core/.libs/libiqdbcore.a \
 *       -lltdl -fopenmp -lm -lpthread -o fuzz_wal
 *
 * Run: see tests/fuzz/README.md. Not built by make.
 */
#define FUZZ_NAME "fuzz_wal"

#include "durable_int.h"
#include "fuzz_util.h"
#include "iqdb_int.h"
#include "serial_int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DIM 3
#define SALT 0x0123456789abcdefull

static char dir[256];
static char snap[300], wal[300], wal_old[300], tmp[300];
static uint8_t *snap_bytes;
static size_t snap_len;

/* The log for framed mode, as core/wal.c lays it out. */
static uint8_t *frame_all(const uint8_t *in, size_t n, int durable,
                          size_t *out_len)
{
    size_t cap = 40 + n * 2 + 64, len = 40;
    uint8_t *w = calloc(1, cap);
    if (w == NULL)
        return NULL;
    memcpy(w, "IQDBWAL", 8);
    fz_put32(w + 8, 1);
    fz_put64(w + 16, SALT);
    fz_put64(w + 24, 1);
    fz_put32(w + 32, iqdb__crc32c(0, w, 32));
    uint64_t seq = 1;
    size_t at = 0;
    while (at + 2 <= n) {
        size_t pl = (size_t)in[at] | (size_t)in[at + 1] << 8;
        at += 2;
        if (pl > n - at)
            pl = n - at;
        size_t padded = (pl + 7) & ~(size_t)7;
        if (len + 32 + padded > cap) {
            cap = (len + 32 + padded) * 2;
            uint8_t *g = realloc(w, cap);
            if (g == NULL) {
                free(w);
                return NULL;
            }
            w = g;
        }
        uint8_t *f = w + len;
        memset(f, 0, 32 + padded);
        fz_put32(f, 0x52465149u);
        fz_put32(f + 4, (uint32_t)pl);
        fz_put64(f + 8, seq);
        fz_put64(f + 16, durable ? seq - 1 : 0);
        memcpy(f + 32, in + at, pl);
        fz_put32(f + 24, iqdb__crc32c(0, f + 32, padded));
        uint8_t hc[36];
        fz_put64(hc, SALT);
        memcpy(hc + 8, f, 28);
        fz_put32(f + 28, iqdb__crc32c(0, hc, sizeof hc));
        len += 32 + padded;
        at += pl;
        seq++;
    }
    *out_len = len;
    return w;
}

/* ---- seeds -------------------------------------------------------------- */

static void seed_put(iqdb_buf *s, const iqdb_buf *payload)
{
    uint8_t l[2] = {(uint8_t)payload->len, (uint8_t)(payload->len >> 8)};
    iqdb__buf_put(s, l, 2);
    iqdb__buf_put(s, payload->p, payload->len);
}

static void write_seeds(const char *out)
{
    iqdb_buf s, p;
    iqdb__buf_init(&s);
    uint8_t flags = 0;
    iqdb__buf_put(&s, &flags, 1);
    float v[4][DIM] = {{1, 2, 3}, {-1, 0.5f, 2}, {0, 0, 0}, {3, 3, -3}};
    iqdb_meta *m = iqdb_meta_new();
    iqdb_meta_set(m, "s", iqdb_value_str("text"));
    iqdb_meta_set(m, "i", iqdb_value_int(-7));
    iqdb_meta_set(m, "d", iqdb_value_double(0.25));
    iqdb_meta_set(m, "b", iqdb_value_bool(1));
    iqdb_meta_set(m, "n", iqdb_value_null());
    iqdb_record recs[4] = {
        {iqdb_id_u64(1), v[0], m},
        {iqdb_id_bytes("abc", 3), v[1], NULL},
        {iqdb_id_u64(2), v[2], m},
        {iqdb_id_u64(1), v[3], NULL}, /* repeated id: the last wins */
    };
    for (int i = 0; i < 2; i++) {
        iqdb__buf_init(&p);
        iqdb__enc_upserts(&p, &recs[i], 1, DIM, NULL);
        seed_put(&s, &p);
        iqdb__buf_free(&p);
    }
    iqdb__buf_init(&p);
    iqdb__enc_upserts(&p, recs, 4, DIM, NULL);
    seed_put(&s, &p);
    iqdb__buf_free(&p);
    iqdb__buf_init(&p);
    iqdb__enc_delete(&p, iqdb_id_bytes("abc", 3));
    seed_put(&s, &p);
    iqdb__buf_free(&p);
    iqdb_meta_free(m);
    char path[400];
    for (int f = 0; f < 16; f += 2) { /* every flag but raw */
        s.p[0] = (uint8_t)f;
        snprintf(path, sizeof path, "%s/seed-framed-%d", out, f);
        fz_spit(path, s.p, s.len);
    }
    /* Raw: the same log framed, as a file. */
    size_t wl;
    uint8_t *w = frame_all(s.p + 1, s.len - 1, 1, &wl);
    uint8_t *r = malloc(wl + 1);
    r[0] = 1;
    memcpy(r + 1, w, wl);
    snprintf(path, sizeof path, "%s/seed-raw", out);
    fz_spit(path, r, wl + 1);
    free(w);
    free(r);
    iqdb__buf_free(&s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *seeds = getenv("FUZZ_WAL_SEEDS");
    if (seeds != NULL) {
        write_seeds(seeds);
        printf("seeds written to %s\n", seeds);
        exit(0);
    }
    fz_scratch(dir, sizeof dir);
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    snprintf(wal, sizeof wal, "%s/wal", dir);
    snprintf(wal_old, sizeof wal_old, "%s/wal.old", dir);
    snprintf(tmp, sizeof tmp, "%s/snapshot.tmp", dir);
    /* An empty database: its snapshot is the base of every input. */
    iqdb_config *c = iqdb_config_new(DIM, IQDB_METRIC_EUCLIDEAN);
    iqdb *db;
    int r = iqdb_open(dir, c, &db);
    if (r != 0)
        fz_die("creating the scratch database", r);
    iqdb_config_free(c);
    if ((r = iqdb_close(db)) != 0)
        fz_die("closing the scratch database", r);
    snap_bytes = fz_slurp(snap, &snap_len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    unlink(wal_old);
    unlink(tmp);
    fz_spit(snap, snap_bytes, snap_len);
    if (flags & 1) {
        fz_spit(wal, data + 1, size - 1);
    } else {
        size_t wl;
        uint8_t *w = frame_all(data + 1, size - 1, flags & 8, &wl);
        if (w == NULL)
            return 0;
        fz_spit(wal, w, wl);
        free(w);
    }
    iqdb_config *c = iqdb_config_new(0, (iqdb_metric)0);
    iqdb_config_set_readonly(c, 1);
    iqdb_config_set_strict_recovery(c, (flags & 2) != 0);
    iqdb *db = NULL;
    int r = iqdb_open(dir, c, &db);
    fz_allowed("read-only iqdb_open", r, 0);
    if (r == 0) {
        fz_walk(db, 1);
        if ((r = iqdb_close(db)) != 0)
            fz_die("read-only iqdb_close", r);
    }
    fz_allowed("iqdb_check", iqdb_check(dir, NULL, NULL, NULL), 0);
    if (flags & 4) {
        iqdb_config_set_readonly(c, 0);
        r = iqdb_open(dir, c, &db);
        fz_allowed("writable iqdb_open", r, 0);
        if (r == 0) {
            fz_walk(db, 1);
            if ((r = iqdb_close(db)) != 0)
                fz_die("writable iqdb_close", r);
        }
    }
    iqdb_config_free(c);
    return 0;
}
