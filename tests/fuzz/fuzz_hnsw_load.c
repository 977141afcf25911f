/*
 * tests/fuzz/fuzz_hnsw_load.c - libFuzzer target for the hnsw plugin's
 * load(): the saved graph is untrusted input (a snapshot's INDEX
 * section; its checksum protects against damage, not against a crafted
 * file).
 *
 * A database of 200 records (dim 8, some deleted, so there are dead
 * slots) is built once; each input is the bytes of a saved graph, given
 * to load() of a fresh hnsw instance over that database's store, with
 * the plugin's format version or, when byte 0 of the input is odd, every
 * older version in turn. load() must return 0, IQDB_ECORRUPT,
 * IQDB_ENOTSUP or IQDB_ENOMEM. A graph it accepts is then searched (three
 * queries, k = 10, with ef raised): every neighbour must be a live slot,
 * once, with a finite distance, in order; then a live slot is removed and
 * searched again, where it must not come back. Anything else, or a sanitizer report, aborts.
 *
 * Seeds: FUZZ_HNSW_SEEDS=DIR writes the saved graph of that database
 * (built with m = 4 and m = 16).
 *
 * The plugin's sources are compiled in (as fuzz_codec.c does for the
 * codecs) so that coverage reaches them. Build against a core compiled
 * with coverage (see fuzz_wal.c; F that tree, S the source tree):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=all -I$S/sdk/include -I$S/core \
 *       -I$S/plugins/hnsw $S/tests/fuzz/fuzz_hnsw_load.c \
 *       $S/plugins/hnsw/hnsw.c $S/plugins/hnsw/hnsw_build.c \
 *       $S/plugins/hnsw/hnsw_search.c $S/plugins/hnsw/hnsw_persist.c \
 *       $F/core/.libs/libiqdbcore.a -lltdl -fopenmp -lm -lpthread \
 *       -o fuzz_hnsw_load
 *
 * Needs no plugin directory (flat is not used: the store is the core's).
 * Run: see tests/fuzz/README.md. Not built by make.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iqdb_int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

const iqdb_module *hnsw_LTX_iqdb_module(void);

#define DIM 8
#define NREC 200
#define K 10

static const iqdb_index_ops *ops;
static iqdb *db;
static iqdb_kv ef_param = {"ef_search", "64"};

static void die(const char *what, int r)
{
    fprintf(stderr, "fuzz_hnsw_load: %s (%d, %s): %s\n", what, r,
            iqdb_strerror(r), iqdb__last_error());
    abort();
}

static int grab_index(void *ctx, const iqdb_index_ops *o)
{
    *(const iqdb_index_ops **)ctx = o;
    return 0;
}

static int grab_codec(void *ctx, const iqdb_codec_ops *o)
{
    (void)ctx, (void)o;
    return IQDB_EPLUGIN;
}

static void *instance(const char *m)
{
    iqdb_kv p = {"m", m};
    iqdb_index_init init = {IQDB_ABI_VERSION, sizeof init, iqdb__host(),
                            db,               &db->view,   DIM,
                            db->metric,       &p,          1};
    void *h = NULL;
    int r = ops->create(&init, &h);
    if (r != 0)
        die("create", r);
    return h;
}

typedef struct buf {
    uint8_t *p;
    size_t len, cap, off;
} buf;

static int buf_write(void *ctx, const void *src, size_t len)
{
    buf *b = ctx;
    if (b->len + len > b->cap) {
        size_t cap = (b->len + len) * 2;
        uint8_t *g = realloc(b->p, cap);
        if (g == NULL)
            return IQDB_ENOMEM;
        b->p = g;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, len);
    b->len += len;
    return 0;
}

static int buf_read(void *ctx, void *dst, size_t len)
{
    buf *b = ctx;
    if (len > b->len - b->off)
        return IQDB_ECORRUPT;
    memcpy(dst, b->p + b->off, len);
    b->off += len;
    return 0;
}

/* excluded: a slot removed from the graph, never to be returned (or
 * UINT64_MAX). */
static void search_checked(void *h, uint64_t excluded)
{
    const iqdb_store *s = &db->store;
    for (int q = 0; q < 3; q++) {
        float v[DIM];
        for (int k = 0; k < DIM; k++)
            v[k] = (float)((q * 5 + k * 3) % 7) - 3;
        iqdb_neighbor out[K];
        iqdb_search_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.query = v;
        a.k = K;
        a.params = &ef_param;
        a.nparams = 1;
        a.out = out;
        int r = ops->search(h, &a);
        if (r != 0 && r != IQDB_ENOMEM)
            die("search of a loaded graph", r);
        if (r != 0)
            continue;
        if (a.out_count > K)
            die("more neighbours than asked for", -1);
        for (size_t i = 0; i < a.out_count; i++) {
            if (out[i].slot >= s->limit ||
                !iqdb__store_is_live(s, out[i].slot))
                die("a neighbour that is not a live slot", -1);
            if (out[i].slot == excluded)
                die("a removed slot returned", -1);
            if (!isfinite(out[i].dist) ||
                (i > 0 && out[i].dist < out[i - 1].dist))
                die("distances not finite and ascending", -1);
            for (size_t j = 0; j < i; j++)
                if (out[j].slot == out[i].slot)
                    die("a neighbour twice", -1);
        }
    }
}

static void save_seed(const char *dir, const char *m)
{
    void *h = instance(m);
    uint64_t *slots = malloc(NREC * sizeof *slots);
    size_t n = 0;
    for (uint64_t i = 0; i < db->store.limit; i++)
        if (iqdb__store_is_live(&db->store, i))
            slots[n++] = i;
    int r = ops->add(h, slots, n);
    if (r != 0)
        die("add", r);
    free(slots);
    buf b = {NULL, 0, 0, 0};
    uint8_t zero = 0;
    buf_write(&b, &zero, 1); /* byte 0: the current version only */
    iqdb_writer w = {sizeof w, &b, buf_write};
    if ((r = ops->save(h, &w)) != 0)
        die("save", r);
    char p[512];
    snprintf(p, sizeof p, "%s/seed-m%s", dir, m);
    FILE *f = fopen(p, "wb");
    if (f == NULL || fwrite(b.p, 1, b.len, f) != b.len)
        die("writing a seed", -1);
    fclose(f);
    free(b.p);
    ops->destroy(h);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (getenv("IQDB_LOG") == NULL)
        setenv("IQDB_LOG", "0", 1);
    const iqdb_module *mod = hnsw_LTX_iqdb_module();
    iqdb_registrar reg = {IQDB_ABI_VERSION, sizeof reg, &ops, grab_index,
                          grab_codec};
    if (mod->init(iqdb__host(), &reg) != 0 || ops == NULL)
        die("hnsw init", -1);
    iqdb_config *c = iqdb_config_new(DIM, IQDB_METRIC_EUCLIDEAN);
    /* The database's own index is flat when a plugin directory has it;
     * only its store matters here, so fall back to whatever loads. */
    int r = iqdb_open_memory(c, &db);
    if (r != 0)
        die("iqdb_open_memory (set IQDB_PLUGIN_PATH for flat)", r);
    iqdb_config_free(c);
    for (uint64_t i = 0; i < NREC; i++) {
        float v[DIM];
        for (int k = 0; k < DIM; k++)
            v[k] = (float)((i * 7 + (uint64_t)k * 13) % 17) - 8;
        if ((r = iqdb_upsert(db, iqdb_id_u64(i), v, DIM, NULL)) != 0)
            die("upsert", r);
    }
    for (uint64_t i = 0; i < NREC; i += 9)
        iqdb_delete(db, iqdb_id_u64(i), NULL);
    const char *seeds = getenv("FUZZ_HNSW_SEEDS");
    if (seeds != NULL) {
        save_seed(seeds, "4");
        save_seed(seeds, "16");
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t lo = (data[0] & 1) ? 1 : ops->format_version;
    for (uint32_t version = lo; version <= ops->format_version; version++) {
        void *h = instance("16");
        buf b = {(uint8_t *)data + 1, size - 1, size - 1, 0};
        iqdb_reader rd = {sizeof rd, &b, buf_read, size - 1};
        int r = ops->load(h, &rd, version);
        if (r != 0 && r != IQDB_ECORRUPT && r != IQDB_ENOTSUP &&
            r != IQDB_ENOMEM)
            die("load", r);
        if (r == 0) {
            search_checked(h, UINT64_MAX);
            /* A live slot leaves the graph; the rest must still hold. */
            uint64_t victim = 1 + data[0] % 8;
            if (ops->remove != NULL &&
                iqdb__store_is_live(&db->store, victim)) {
                int rr = ops->remove(h, &victim, 1);
                if (rr != 0 && rr != IQDB_ENOMEM)
                    die("remove from a loaded graph", rr);
                search_checked(h, rr == 0 ? victim : UINT64_MAX);
            }
        }
        ops->destroy(h);
    }
    return 0;
}
