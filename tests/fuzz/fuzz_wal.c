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
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "durable_int.h"
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

static void die(const char *what, int r)
{
    fprintf(stderr, "fuzz_wal: %s returned %d (%s): %s\n", what, r,
            iqdb_strerror(r), iqdb_errmsg(NULL));
    abort();
}

static void allowed(const char *what, int r)
{
    if (r != 0 && r != IQDB_ECORRUPT && r != IQDB_ENOTSUP &&
        r != IQDB_ENOMEM)
        die(what, r);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int k = 0; k < 4; k++)
        p[k] = (uint8_t)(v >> (8 * k));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        p[k] = (uint8_t)(v >> (8 * k));
}

static uint8_t *slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    if (f == NULL)
        die("reading a file back", -1);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    if (b == NULL || fread(b, 1, (size_t)len, f) != (size_t)len)
        die("reading a file back", -1);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void spit(const char *p, const void *b, size_t n)
{
    FILE *f = fopen(p, "wb");
    if (f == NULL || (n > 0 && fwrite(b, 1, n, f) != n))
        die("writing a file", -1);
    fclose(f);
}

/* The log for framed mode, as core/wal.c lays it out. */
static uint8_t *frame_all(const uint8_t *in, size_t n, int durable,
                          size_t *out_len)
{
    size_t cap = 40 + n * 2 + 64, len = 40;
    uint8_t *w = calloc(1, cap);
    if (w == NULL)
        return NULL;
    memcpy(w, "IQDBWAL", 8);
    put32(w + 8, 1);
    put64(w + 16, SALT);
    put64(w + 24, 1);
    put32(w + 32, iqdb__crc32c(0, w, 32));
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
        put32(f, 0x52465149u);
        put32(f + 4, (uint32_t)pl);
        put64(f + 8, seq);
        put64(f + 16, durable ? seq - 1 : 0);
        memcpy(f + 32, in + at, pl);
        put32(f + 24, iqdb__crc32c(0, f + 32, padded));
        uint8_t hc[36];
        put64(hc, SALT);
        memcpy(hc + 8, f, 28);
        put32(f + 28, iqdb__crc32c(0, hc, sizeof hc));
        len += 32 + padded;
        at += pl;
        seq++;
    }
    *out_len = len;
    return w;
}

typedef struct walk {
    uint32_t dim;
    size_t n;
} walk;

static int visit(void *ctx, const iqdb_record *rec)
{
    walk *w = ctx;
    for (uint32_t k = 0; k < w->dim; k++)
        if (!isfinite(rec->vector[k]))
            die("a walked record with a non-finite element", -1);
    w->n++;
    return 0;
}

static void exercise(iqdb *db)
{
    walk w = {iqdb_dim(db), 0};
    int r = iqdb_foreach(db, visit, &w);
    if (r != 0)
        die("iqdb_foreach", r);
    if (w.n != iqdb_count(db))
        die("iqdb_foreach visited a count other than iqdb_count", -1);
    float q[DIM] = {0};
    iqdb_results *res = NULL;
    if ((r = iqdb_search(db, q, DIM, 5, NULL, NULL, &res)) != 0)
        die("iqdb_search", r);
    for (size_t i = 0; i < iqdb_results_count(res, 0); i++) {
        int g = iqdb_get(db, iqdb_results_hits(res, 0)[i].id, q, DIM, NULL);
        if (g != 0)
            die("iqdb_get of a search hit", g);
    }
    iqdb_results_free(res);
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
        iqdb__enc_upserts(&p, &recs[i], 1, DIM);
        seed_put(&s, &p);
        iqdb__buf_free(&p);
    }
    iqdb__buf_init(&p);
    iqdb__enc_upserts(&p, recs, 4, DIM);
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
        spit(path, s.p, s.len);
    }
    /* Raw: the same log framed, as a file. */
    size_t wl;
    uint8_t *w = frame_all(s.p + 1, s.len - 1, 1, &wl);
    uint8_t *r = malloc(wl + 1);
    r[0] = 1;
    memcpy(r + 1, w, wl);
    snprintf(path, sizeof path, "%s/seed-raw", out);
    spit(path, r, wl + 1);
    free(w);
    free(r);
    iqdb__buf_free(&s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (getenv("IQDB_LOG") == NULL)
        setenv("IQDB_LOG", "0", 1); /* damage warnings are expected */
    const char *seeds = getenv("FUZZ_WAL_SEEDS");
    if (seeds != NULL) {
        write_seeds(seeds);
        printf("seeds written to %s\n", seeds);
        exit(0);
    }
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/fuzz_wal.XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    snprintf(wal, sizeof wal, "%s/wal", dir);
    snprintf(wal_old, sizeof wal_old, "%s/wal.old", dir);
    snprintf(tmp, sizeof tmp, "%s/snapshot.tmp", dir);
    /* An empty database: its snapshot is the base of every input. */
    iqdb_config *c = iqdb_config_new(DIM, IQDB_METRIC_EUCLIDEAN);
    iqdb *db;
    int r = iqdb_open(dir, c, &db);
    if (r != 0)
        die("creating the scratch database", r);
    iqdb_config_free(c);
    if ((r = iqdb_close(db)) != 0)
        die("closing the scratch database", r);
    snap_bytes = slurp(snap, &snap_len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    unlink(wal_old);
    unlink(tmp);
    spit(snap, snap_bytes, snap_len);
    if (flags & 1) {
        spit(wal, data + 1, size - 1);
    } else {
        size_t wl;
        uint8_t *w = frame_all(data + 1, size - 1, flags & 8, &wl);
        if (w == NULL)
            return 0;
        spit(wal, w, wl);
        free(w);
    }
    iqdb_config *c = iqdb_config_new(0, (iqdb_metric)0);
    iqdb_config_set_readonly(c, 1);
    iqdb_config_set_strict_recovery(c, (flags & 2) != 0);
    iqdb *db = NULL;
    int r = iqdb_open(dir, c, &db);
    allowed("read-only iqdb_open", r);
    if (r == 0) {
        exercise(db);
        if ((r = iqdb_close(db)) != 0)
            die("read-only iqdb_close", r);
    }
    allowed("iqdb_check", iqdb_check(dir, NULL, NULL, NULL));
    if (flags & 4) {
        iqdb_config_set_readonly(c, 0);
        r = iqdb_open(dir, c, &db);
        allowed("writable iqdb_open", r);
        if (r == 0) {
            exercise(db);
            if ((r = iqdb_close(db)) != 0)
                die("writable iqdb_close", r);
        }
    }
    iqdb_config_free(c);
    return 0;
}
