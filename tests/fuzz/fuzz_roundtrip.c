/*
 * tests/fuzz/fuzz_roundtrip.c - libFuzzer target: whatever the writer
 * logs, replay must read back exactly.
 *
 * The input drives writes to a durable database (dim 3, NEVER, no
 * automatic compaction): each step takes an op byte (upsert, batch of up
 * to 4 upserts, delete), an id (a u64, or a byte string of 1 to 40 bytes
 * taken from the input, NULs and all) and, for upserts, metadata (up to 3
 * entries of every value type, keys and strings from the input) and a
 * vector (small integers and halves, always finite). Every write the API
 * refuses is simply skipped. Then the log and snapshot are copied as they
 * are on disk (no close: as after a crash) into a second directory, which
 * is opened read-only: it must open, and hold exactly what the writing
 * handle holds - the same ids, vectors and metadata (compared through
 * iqdb_foreach and iqdb_get). A mismatch, an open that fails, or a
 * sanitizer report aborts. This is what caught (by hand, before the
 * target existed) deletes of 1- to 3-byte string ids that replay refused.
 *
 * Needs the flat plugin at run time (IQDB_PLUGIN_PATH=$B/plugins). Build
 * against a core compiled with coverage (see fuzz_wal.c):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=all -I$S/sdk/include -I$S/core \
 *       $S/tests/fuzz/fuzz_roundtrip.c $F/core/.libs/libiqdbcore.a \
 *       -lltdl -fopenmp -lm -lpthread -o fuzz_roundtrip
 *
 * Any input is a seed; run it on an empty corpus directory. Not built by
 * make.
 */
#include <sys/stat.h>

#define FUZZ_NAME "fuzz_roundtrip"

#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DIM 3

static char dir_a[256], dir_b[300];

typedef struct in {
    const uint8_t *p;
    size_t n, off;
} in;

static uint8_t take(in *s)
{
    return s->off < s->n ? s->p[s->off++] : 0;
}

/* An id: u64, or a string of 1..40 bytes from the input. */
static iqdb_id take_id(in *s, char *store)
{
    uint8_t k = take(s);
    if (k < 128)
        return iqdb_id_u64(k % 16);
    size_t len = 1 + k % 40;
    for (size_t i = 0; i < len; i++)
        store[i] = (char)take(s);
    return iqdb_id_bytes(store, len);
}

static iqdb_meta *take_meta(in *s)
{
    uint8_t n = take(s) % 4;
    if (n == 0)
        return NULL;
    iqdb_meta *m = iqdb_meta_new();
    for (uint8_t i = 0; i < n && m != NULL; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%u", take(s) % 5);
        uint8_t t = take(s);
        char str[24];
        size_t sl = t % 24;
        for (size_t j = 0; j < sl; j++)
            str[j] = (char)take(s);
        iqdb_value v;
        switch (t % 5) {
        case 0: v = iqdb_value_null(); break;
        case 1: v = iqdb_value_strn(str, sl); break;
        case 2: v = iqdb_value_int((int64_t)(((uint64_t)take(s) << 56) - 7)); break;
        case 3: v = iqdb_value_double((double)(int8_t)take(s) / 4); break;
        default: v = iqdb_value_bool(take(s) & 1); break;
        }
        iqdb_meta_set(m, key, v); /* a refused value is just left out */
    }
    return m;
}

static void take_vec(in *s, float *v)
{
    for (int k = 0; k < DIM; k++)
        v[k] = (float)(int8_t)take(s) / 2;
}

static void run_writes(iqdb *db, in *s)
{
    while (s->off < s->n) {
        uint8_t op = take(s) % 3;
        if (op == 2) {
            char store[40];
            iqdb_delete(db, take_id(s, store), NULL);
            continue;
        }
        size_t nrec = op == 0 ? 1 : 1 + take(s) % 4;
        iqdb_record recs[4];
        char store[4][40];
        float v[4][DIM];
        for (size_t i = 0; i < nrec; i++) {
            recs[i].id = take_id(s, store[i]);
            recs[i].meta = take_meta(s);
            take_vec(s, v[i]);
            recs[i].vector = v[i];
        }
        iqdb_upsert_batch(db, recs, nrec, DIM);
        for (size_t i = 0; i < nrec; i++)
            iqdb_meta_free((iqdb_meta *)recs[i].meta);
    }
}

static int same_meta(const iqdb_meta *a, const iqdb_meta *b)
{
    size_t n = a ? iqdb_meta_count(a) : 0;
    if (n != (b ? iqdb_meta_count(b) : 0))
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *ka, *kb;
        iqdb_value va, vb;
        if (iqdb_meta_at(a, i, &ka, &va) != 0 ||
            iqdb_meta_at(b, i, &kb, &vb) != 0 || strcmp(ka, kb) != 0 ||
            va.type != vb.type || va.len != vb.len)
            return 0;
        int same = va.type == IQDB_TYPE_STRING
                       ? memcmp(va.v.s, vb.v.s, va.len) == 0
                   : va.type == IQDB_TYPE_INT
                       ? va.v.i == vb.v.i
                   : va.type == IQDB_TYPE_DOUBLE
                       ? memcmp(&va.v.d, &vb.v.d, sizeof va.v.d) == 0
                   : va.type == IQDB_TYPE_BOOL ? va.v.b == vb.v.b
                                               : 1;
        if (!same)
            return 0;
    }
    return 1;
}

typedef struct cmp {
    iqdb *other;
    size_t n;
} cmp;

/* Every record of one handle is in the other, equal. */
static int compare_one(void *ctx, const iqdb_record *rec)
{
    cmp *c = ctx;
    float v[DIM];
    iqdb_meta *m = NULL;
    int r = iqdb_get(c->other, rec->id, v, DIM, &m);
    if (r != 0)
        fz_die("a record written is missing after replay", r);
    if (memcmp(v, rec->vector, sizeof v) != 0)
        fz_die("a vector differs after replay", -1);
    if (!same_meta(m, rec->meta))
        fz_die("metadata differs after replay", -1);
    iqdb_meta_free(m);
    c->n++;
    return 0;
}

static void copy_file(const char *from_dir, const char *to_dir,
                      const char *name)
{
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/%s", from_dir, name);
    snprintf(b, sizeof b, "%s/%s", to_dir, name);
    size_t n;
    uint8_t *bytes = fz_slurp(a, &n);
    fz_spit(b, bytes, n);
    free(bytes);
}

static void rm_db(const char *d)
{
    static const char *names[] = {"snapshot", "wal", "wal.old",
                                  "snapshot.tmp", "LOCK", "wal.tmp"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[400];
        snprintf(p, sizeof p, "%s/%s", d, names[i]);
        unlink(p);
    }
    rmdir(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char top[200];
    fz_scratch(top, sizeof top);
    snprintf(dir_a, sizeof dir_a, "%s/a", top);
    snprintf(dir_b, sizeof dir_b, "%s/b", top);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rm_db(dir_a);
    rm_db(dir_b);
    iqdb_config *c = iqdb_config_new(DIM, IQDB_METRIC_EUCLIDEAN);
    iqdb_config_set_fsync(c, IQDB_FSYNC_NEVER, 0);
    iqdb_config_set_compact_bytes(c, 0);
    iqdb *db;
    int r = iqdb_open(dir_a, c, &db);
    if (r != 0)
        fz_die("creating the database", r);
    in s = {data, size, 0};
    run_writes(db, &s);
    /* The files as a crash would leave them: nothing was closed. */
    if (mkdir(dir_b, 0755) != 0)
        fz_die("mkdir", -1);
    copy_file(dir_a, dir_b, "snapshot");
    copy_file(dir_a, dir_b, "wal");
    iqdb_config *ro = iqdb_config_new(0, (iqdb_metric)0);
    iqdb_config_set_readonly(ro, 1);
    iqdb_config_set_strict_recovery(ro, 1);
    iqdb *back;
    if ((r = iqdb_open(dir_b, ro, &back)) != 0)
        fz_die("replaying what the writer logged", r);
    if (iqdb_count(back) != iqdb_count(db))
        fz_die("record counts differ after replay", -1);
    cmp one = {back, 0};
    if ((r = iqdb_foreach(db, compare_one, &one)) != 0)
        fz_die("iqdb_foreach", r);
    iqdb_close(back);
    iqdb_close(db);
    iqdb_config_free(ro);
    iqdb_config_free(c);
    return 0;
}
