/*
 * tools/cmd_bench.c - `iqdb bench`: ann-benchmarks in the box.
 *
 * One run loads a data set (Fashion-MNIST, generated clusters or a pair
 * of .fvecs files), computes or reuses the exact top-k (an in-memory flat
 * database), then for each index configuration builds an in-memory
 * database and, for each point of its parameter sweep, measures recall@k,
 * the QPS of one thread answering one query at a time, and the QPS of one
 * batch over all queries on --threads threads. With --peers, hnswlib and
 * FAISS HNSWFlat run on the same vectors through the scripts in the peer
 * directory (protocol below). The results go to a table on stdout and to
 * DIR/results.csv, DIR/results.json and DIR/plot.svg.
 *
 * Peer protocol. A peer is run as
 *
 *   PEER --base B.fvecs --queries Q.fvecs --k K --m M --ef-construction EFC
 *        --threads T --ef E1,E2,... --out PREFIX [--metric l2|ip] [--batch]
 *
 * and prints lines of space-separated key=value pairs after a keyword:
 *
 *   build seconds=S threads=T n=N dim=D
 *   memory bytes=B
 *   search ef=E mode=single|batch qps=Q ids=PATH
 *
 * where PATH is an .ivecs file of k int32 ids per query (-1 padding). Any
 * other line is ignored. Recall is computed here from the ids, against
 * the same ground truth as ours.
 *
 * The ground truth is cached in DIR as gt-HASH-kK-METRIC.ivecs, HASH a
 * 64-bit hash of the base and query bytes and shapes; a file of the
 * right shape is reused.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"
#include "dataset.h"
#include "svg.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define MAX_SPECS 32
#define MAX_PARAMS 16
#define MAX_SWEEP 64
#define MAX_SERIES (MAX_SPECS + 2)
#define MAX_K 1000
#define DEFAULT_OUT "iqdb-bench"
#define DEFAULT_GEN_N 20000
#define DEFAULT_GEN_NQ 1000
#define DEFAULT_GEN_DIM 128
#define DEFAULT_K 10
#define GEN_CLUSTER_SIZE 200
/* Queries run untimed before each single-thread loop (caches, pages). */
#define WARMUP 10
/* A short single-thread loop is repeated for up to SINGLE_BUDGET_S
 * seconds (at most SINGLE_PASSES passes) and the best pass counts: one
 * pass over a few queries is too short to time against a busy machine. */
#define SINGLE_PASSES 20
#define SINGLE_BUDGET_S 0.25
/* The batch is short: the best of up to BATCH_RUNS runs, stopping once
 * BATCH_BUDGET_S seconds have gone, so one run likely has the cores
 * to itself. */
#define BATCH_RUNS 5
#define BATCH_BUDGET_S 1.0
/* Queries per ground-truth batch: small enough for a live progress bar,
 * big enough to keep every thread busy. */
#define GT_CHUNK 256
#define PYTHON "/usr/bin/python3"
#define HNSWLIB_HEADER "/usr/include/hnswlib/hnswlib.h"
#define PEER_HNSWLIB "hnswlib (native)"
#define PEER_FAISS "faiss HNSWFlat"

/* A parameter sweep: KEY takes each of vals[0..n) in turn. */
typedef struct sweep {
    char *buf; /* owned storage of key and vals (user sweeps) */
    const char *key;
    const char *vals[MAX_SWEEP];
    size_t n;
} sweep;

/* One --index NAME[:KEY=VAL,...]. */
typedef struct index_spec {
    const char *text;   /* as given (argv, borrowed) */
    char *buf;          /* owned copy, split in place */
    const char *name;
    const char *params; /* the text after ':', or "" */
    const char *keys[MAX_PARAMS];
    const char *vals[MAX_PARAMS];
    size_t nparams;
    const sweep *sw;    /* NULL: one point with the index's defaults */
} index_spec;

typedef struct opts {
    const char *dataset; /* NULL: fashion-mnist when present */
    const char *queries;
    size_t n, nq, dim, k; /* 0: not given */
    iqdb_metric metric;
    index_spec specs[MAX_SPECS];
    size_t nspecs;
    sweep user_sweep; /* key NULL: no --sweep */
    sweep hnsw_sweep;
    int threads;
    const char *out;
    int peers;
} opts;

/* One measured point of a series. */
typedef struct point {
    char sweep[96];    /* "ef_search=40", or "" */
    double recall;
    double qps_single; /* 1 thread, one query at a time */
    double qps_batch;  /* one batch on the bench's threads; < 0: none */
    int pareto;
} point;

typedef struct series {
    char name[160];
    char index[48];
    char params[160];
    double build_s;
    int64_t mem_bytes; /* < 0: unknown */
    size_t npts;
    point pts[MAX_SWEEP];
} series;

typedef struct bench {
    opts o;
    ds_dataset d;
    char desc[192];      /* the data set in words */
    iqdb_record *recs;   /* base rows with ids 0..n-1 */
    int32_t *gt;         /* nq x k exact ids, -1 padding */
    char gt_path[4096];
    int gt_cached;
    double gt_s;
    int32_t *ids;        /* nq x k scratch for measured results */
    series *ser;
    size_t nser;
} bench;

/* ------------------------------------------------------------------ */
/* Small utilities                                                      */

__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...)
{
    va_list ap;

    if (cli_quiet)
        return;
    va_start(ap, fmt);
    fputs("iqdb bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* The library runs its OpenMP regions on the calling thread's team size:
 * this governs iqdb_upsert_batch and iqdb_search_batch. */
static void set_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static int all_cores(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n < 1 ? 1 : (int)n;
#endif
}

/* Resident set size in bytes from /proc/self/status, or -1. */
static int64_t rss_bytes(void)
{
    char line[256];
    long long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
            break;
    fclose(f);
    return kb < 0 ? -1 : (int64_t)kb * 1024;
}

/* mkdir -p: 0, or -1 with errno set. */
static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = strlen(path), i;

    if (len == 0 || len >= sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return -1;
        buf[i] = i < len ? '/' : '\0';
    }
    return 0;
}

/* snprintf into a path buffer; -1 when it does not fit. */
__attribute__((format(printf, 3, 4))) static int
path_fmt(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len) {
        cli_err("bench: path too long: %s", buf);
        return -1;
    }
    return 0;
}

/* A hash of the bytes for the ground-truth cache name: FNV-1a over 64-bit
 * words, then a final avalanche. Not cryptographic; a collision would
 * need two data sets of the same shape. */
static uint64_t hash_bytes(uint64_t h, const void *p, size_t len)
{
    const unsigned char *b = p;
    size_t i;

    for (i = 0; i + 8 <= len; i += 8) {
        uint64_t w;

        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < len; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t hash_final(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* ------------------------------------------------------------------ */
/* Options                                                              */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: iqdb bench [options]\n"
        "Build indexes on a data set and measure recall@k against speed,\n"
        "ann-benchmarks style; write a table, CSV, JSON and an SVG plot.\n"
        "\n"
        "  --dataset NAME    fashion-mnist, generated, or a BASE.fvecs file\n"
        "                    (default fashion-mnist when installed in\n"
        "                    %s, else generated)\n"
        "  --queries FILE    query .fvecs (required with a BASE.fvecs)\n"
        "  --n N             base vectors: generated size (default %d) or\n"
        "                    keep the first N\n"
        "  --nq N            queries: generated count (default %d) or keep\n"
        "                    the first N (default all)\n"
        "  --dim D           generated dimension (default %d)\n"
        "  --k K             neighbours per query, 1..%d (default %d)\n"
        "  --metric M        euclidean, cosine, dot, manhattan, hamming\n"
        "                    (default euclidean)\n"
        "  --index SPEC      NAME[:KEY=VAL,...], e.g. flat or\n"
        "                    hnsw:m=16,ef_construction=200; repeatable\n"
        "                    (default hnsw)\n"
        "  --sweep KEY=V1,V2,...  per-query parameter values to measure, for\n"
        "                    every index but flat (default for hnsw:\n"
        "                    ef_search=10,20,40,80,160,320)\n"
        "  --threads T       build and batch-search threads (default all\n"
        "                    cores)\n"
        "  --out DIR         output directory (default ./%s)\n"
        "  --peers           also run hnswlib and FAISS HNSWFlat when found\n"
        "                    (peer directory: $IQDB_PEER_DIR, else %s)\n"
        "  --quiet           no progress bars or notices\n"
        "  --help            this text\n",
        DS_FMNIST_DIR, DEFAULT_GEN_N, DEFAULT_GEN_NQ, DEFAULT_GEN_DIM, MAX_K,
        DEFAULT_K, DEFAULT_OUT,
#ifdef IQDB_PEER_DIR
        IQDB_PEER_DIR
#else
        "(none built in)"
#endif
    );
}

static int parse_count(const char *opt, const char *s, size_t lo, size_t hi,
                       size_t *out)
{
    unsigned long long v;
    char *end;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < lo ||
        v > hi) {
        cli_err("bench: %s wants a number from %zu to %zu, not '%s'", opt, lo,
                hi, s);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

/* Split "KEY=VAL" in place. */
static int split_kv(char *s, const char **key, const char **val)
{
    char *eq = strchr(s, '=');

    if (eq == NULL || eq == s || eq[1] == '\0')
        return -1;
    *eq = '\0';
    *key = s;
    *val = eq + 1;
    return 0;
}

static int spec_parse(index_spec *sp, const char *text)
{
    char *colon, *tok, *save = NULL;

    memset(sp, 0, sizeof(*sp));
    sp->text = text;
    sp->buf = strdup(text);
    if (sp->buf == NULL) {
        cli_err("bench: out of memory");
        return -1;
    }
    sp->name = sp->buf;
    sp->params = "";
    colon = strchr(sp->buf, ':');
    if (colon != NULL) {
        *colon = '\0';
        sp->params = text + (colon - sp->buf) + 1;
        for (tok = strtok_r(colon + 1, ",", &save); tok != NULL;
             tok = strtok_r(NULL, ",", &save)) {
            if (sp->nparams == MAX_PARAMS) {
                cli_err("bench: --index '%s': more than %d parameters", text,
                        MAX_PARAMS);
                return -1;
            }
            if (split_kv(tok, &sp->keys[sp->nparams],
                         &sp->vals[sp->nparams]) != 0) {
                cli_err("bench: --index '%s': '%s' is not KEY=VALUE", text,
                        tok);
                return -1;
            }
            sp->nparams++;
        }
    }
    if (sp->name[0] == '\0') {
        cli_err("bench: --index '%s': no index name (NAME[:KEY=VAL,...])",
                text);
        return -1;
    }
    return 0;
}

static int sweep_parse(sweep *sw, const char *text)
{
    char *vals, *tok, *save = NULL;
    char *eq;

    sw->buf = strdup(text);
    if (sw->buf == NULL) {
        cli_err("bench: out of memory");
        return -1;
    }
    eq = strchr(sw->buf, '=');
    if (eq == NULL || eq == sw->buf) {
        cli_err("bench: --sweep '%s' is not KEY=V1,V2,...", text);
        return -1;
    }
    *eq = '\0';
    sw->key = sw->buf;
    vals = eq + 1;
    /* strtok_r would skip empty values silently: refuse them instead. */
    if (vals[0] == '\0' || vals[0] == ',' || vals[strlen(vals) - 1] == ',' ||
        strstr(vals, ",,") != NULL) {
        cli_err("bench: --sweep '%s': empty value", text);
        return -1;
    }
    for (tok = strtok_r(vals, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (sw->n == MAX_SWEEP) {
            cli_err("bench: --sweep: more than %d values", MAX_SWEEP);
            return -1;
        }
        sw->vals[sw->n++] = tok;
    }
    return 0;
}

static void opts_free(opts *o)
{
    size_t i;

    for (i = 0; i < o->nspecs; i++)
        free(o->specs[i].buf);
    free(o->user_sweep.buf);
}

/* Which sweep applies to an index: --sweep for all but flat, else the
 * built-in one of hnsw, else none. */
static void assign_sweeps(opts *o)
{
    static const char *const ef[] = {"10", "20", "40", "80", "160", "320"};
    size_t i;

    o->hnsw_sweep.key = "ef_search";
    for (i = 0; i < sizeof(ef) / sizeof(ef[0]); i++)
        o->hnsw_sweep.vals[i] = ef[i];
    o->hnsw_sweep.n = i;
    for (i = 0; i < o->nspecs; i++) {
        index_spec *sp = &o->specs[i];

        if (strcmp(sp->name, "flat") == 0)
            sp->sw = NULL;
        else if (o->user_sweep.key != NULL)
            sp->sw = &o->user_sweep;
        else if (strcmp(sp->name, "hnsw") == 0)
            sp->sw = &o->hnsw_sweep;
        else
            sp->sw = NULL;
    }
}

/* Choose the default data set and check the options that go together. */
static int check_dataset(opts *o)
{
    int named;

    if (o->dataset == NULL) {
        o->dataset = ds_fmnist_present(DS_FMNIST_DIR) ? "fashion-mnist"
                                                      : "generated";
        note("data set: %s%s", o->dataset,
             strcmp(o->dataset, "generated") == 0
                 ? " (Fashion-MNIST is not installed; --dataset to choose)"
                 : " (--dataset to choose)");
    }
    named = strcmp(o->dataset, "fashion-mnist") == 0 ||
            strcmp(o->dataset, "generated") == 0;
    if (strcmp(o->dataset, "generated") != 0 && o->dim != 0) {
        cli_err("bench: --dim applies to --dataset generated only");
        return -1;
    }
    if (named && o->queries != NULL) {
        cli_err("bench: --queries goes with a BASE.fvecs --dataset");
        return -1;
    }
    if (!named && o->queries == NULL) {
        cli_err("bench: --dataset %s needs --queries FILE.fvecs",
                o->dataset);
        return -1;
    }
    return 0;
}

/* Returns 0 to run, 1 after --help, -1 on a bad command line (reported). */
static int parse_args(int argc, char **argv, opts *o)
{
    int i;

    memset(o, 0, sizeof(*o));
    o->metric = IQDB_METRIC_EUCLIDEAN;
    o->out = DEFAULT_OUT;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = strcmp(a, "--dataset") == 0 ||
                    strcmp(a, "--queries") == 0 || strcmp(a, "--n") == 0 ||
                    strcmp(a, "--nq") == 0 || strcmp(a, "--dim") == 0 ||
                    strcmp(a, "--k") == 0 || strcmp(a, "--metric") == 0 ||
                    strcmp(a, "--index") == 0 || strcmp(a, "--sweep") == 0 ||
                    strcmp(a, "--threads") == 0 || strcmp(a, "--out") == 0;
        size_t t;

        if (takes && v == NULL) {
            cli_err("bench: %s needs a value", a);
            return -1;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--dataset") == 0) {
            o->dataset = v;
        } else if (strcmp(a, "--queries") == 0) {
            o->queries = v;
        } else if (strcmp(a, "--n") == 0) {
            if (parse_count(a, v, 1, INT32_MAX, &o->n) != 0)
                return -1;
        } else if (strcmp(a, "--nq") == 0) {
            if (parse_count(a, v, 1, INT32_MAX, &o->nq) != 0)
                return -1;
        } else if (strcmp(a, "--dim") == 0) {
            if (parse_count(a, v, 1, IQDB_MAX_DIM, &o->dim) != 0)
                return -1;
        } else if (strcmp(a, "--k") == 0) {
            if (parse_count(a, v, 1, MAX_K, &o->k) != 0)
                return -1;
        } else if (strcmp(a, "--threads") == 0) {
            if (parse_count(a, v, 1, 1024, &t) != 0)
                return -1;
            o->threads = (int)t;
        } else if (strcmp(a, "--metric") == 0) {
            if (iqdb_metric_parse(v, &o->metric) != 0) {
                cli_err("bench: unknown metric '%s'", v);
                return -1;
            }
        } else if (strcmp(a, "--index") == 0) {
            if (o->nspecs == MAX_SPECS) {
                cli_err("bench: more than %d --index options", MAX_SPECS);
                return -1;
            }
            if (spec_parse(&o->specs[o->nspecs++], v) != 0)
                return -1;
        } else if (strcmp(a, "--sweep") == 0) {
            if (o->user_sweep.key != NULL) {
                cli_err("bench: --sweep given twice");
                return -1;
            }
            if (sweep_parse(&o->user_sweep, v) != 0)
                return -1;
        } else if (strcmp(a, "--out") == 0) {
            o->out = v;
        } else if (strcmp(a, "--peers") == 0) {
            o->peers = 1;
        } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            cli_quiet = 1;
        } else {
            cli_err("bench: unknown option '%s'", a);
            return -1;
        }
        if (takes)
            i++;
    }
    if (o->nspecs == 0 && spec_parse(&o->specs[o->nspecs++], "hnsw") != 0)
        return -1;
    if (o->k == 0)
        o->k = DEFAULT_K;
    if (o->threads == 0)
        o->threads = all_cores();
    if (o->out[0] == '\0') {
        cli_err("bench: --out wants a directory");
        return -1;
    }
    assign_sweeps(o);
    return check_dataset(o);
}

/* ------------------------------------------------------------------ */
/* Data                                                                 */

static int load_generated(bench *b)
{
    opts *o = &b->o;
    ds_gen_spec spec;
    char err[512];

    ds_gen_spec_default(&spec);
    spec.n = o->n ? o->n : DEFAULT_GEN_N;
    spec.nq = o->nq ? o->nq : DEFAULT_GEN_NQ;
    spec.dim = o->dim ? o->dim : DEFAULT_GEN_DIM;
    /* Keep the default set's 200 points per cluster: with the default
     * 1000 clusters a small set has a handful of points per cluster, its
     * neighbours are trivial to find, and every index scores recall 1. */
    spec.clusters = spec.n / GEN_CLUSTER_SIZE ? spec.n / GEN_CLUSTER_SIZE : 1;
    if (ds_gen_clustered(&spec, &b->d, err, sizeof(err)) != 0) {
        cli_err("bench: %s", err);
        return CLI_EXIT_FAIL;
    }
    snprintf(b->desc, sizeof(b->desc),
             "generated (%zu clusters, seed %#llx)", spec.clusters,
             (unsigned long long)spec.seed);
    return 0;
}

static int load_fvecs(bench *b)
{
    opts *o = &b->o;
    const char *slash = strrchr(o->dataset, '/');
    char err[512];

    if (ds_fvecs_read(o->dataset, &b->d.base, err, sizeof(err)) != 0 ||
        ds_fvecs_read(o->queries, &b->d.queries, err, sizeof(err)) != 0) {
        cli_err("bench: %s", err);
        return CLI_EXIT_FAIL;
    }
    if (b->d.base.dim != b->d.queries.dim) {
        cli_err("bench: %s has dimension %zu but %s has %zu", o->dataset,
                b->d.base.dim, o->queries, b->d.queries.dim);
        return CLI_EXIT_FAIL;
    }
    snprintf(b->d.name, sizeof(b->d.name), "%s",
             slash != NULL ? slash + 1 : o->dataset);
    snprintf(b->desc, sizeof(b->desc), "%s + %s", o->dataset, o->queries);
    return 0;
}

/* Load the data set the options name; returns 0 or an exit code. */
static int load_data(bench *b)
{
    opts *o = &b->o;
    char err[512];
    int rc;

    if (strcmp(o->dataset, "generated") == 0) {
        rc = load_generated(b);
    } else if (strcmp(o->dataset, "fashion-mnist") == 0) {
        if (!ds_fmnist_present(DS_FMNIST_DIR)) {
            cli_err("bench: Fashion-MNIST is not installed in %s (Debian "
                    "package dataset-fashion-mnist); try --dataset "
                    "generated",
                    DS_FMNIST_DIR);
            return CLI_EXIT_FAIL;
        }
        rc = ds_fmnist_load(DS_FMNIST_DIR, &b->d, err, sizeof(err));
        if (rc != 0)
            cli_err("bench: %s", err);
        rc = rc != 0 ? CLI_EXIT_FAIL : 0;
        snprintf(b->desc, sizeof(b->desc), "fashion-mnist (%s)",
                 DS_FMNIST_DIR);
    } else {
        rc = load_fvecs(b);
    }
    if (rc != 0)
        return rc;
    if (o->n != 0 && o->n < b->d.base.rows)
        ds_matrix_truncate(&b->d.base, o->n);
    if (o->nq != 0 && o->nq < b->d.queries.rows)
        ds_matrix_truncate(&b->d.queries, o->nq);
    if (b->d.base.rows > INT32_MAX) {
        cli_err("bench: %zu base vectors: at most %d (--n)", b->d.base.rows,
                INT32_MAX);
        return CLI_EXIT_FAIL;
    }
    if (o->k > b->d.base.rows) {
        cli_err("bench: --k %zu exceeds the %zu base vectors", o->k,
                b->d.base.rows);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

/* Records with ids 0..n-1 over the base rows, shared by every build. */
static int make_records(bench *b)
{
    const ds_matrix *m = &b->d.base;
    size_t i;

    b->recs = calloc(m->rows, sizeof(*b->recs));
    b->ids = calloc(b->d.queries.rows * b->o.k, sizeof(*b->ids));
    if (b->recs == NULL || b->ids == NULL) {
        cli_err("bench: out of memory");
        return -1;
    }
    for (i = 0; i < m->rows; i++) {
        b->recs[i].id = iqdb_id_u64(i);
        b->recs[i].vector = m->data + i * m->dim;
    }
    return 0;
}

/* Row rq of res as k int32 ids, -1 padded. */
static void take_ids(const iqdb_results *res, size_t rq, int32_t *row,
                     size_t k)
{
    const iqdb_hit *hits = iqdb_results_hits(res, rq);
    size_t cnt = iqdb_results_count(res, rq), i;

    for (i = 0; i < k; i++)
        row[i] = i < cnt && hits[i].id.kind == IQDB_ID_U64
                     ? (int32_t)hits[i].id.v.u64
                     : -1;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

    return (x > y) - (x < y);
}

/* The distinct valid ids of row[0..k) in ascending order, into out;
 * returns how many (an index that returns an id twice gets no credit
 * for the second). */
static size_t sorted_ids(const int32_t *row, size_t k, int32_t *out)
{
    size_t i, n = 0, m = 0;

    for (i = 0; i < k; i++)
        if (row[i] >= 0)
            out[n++] = row[i];
    qsort(out, n, sizeof(int32_t), cmp_i32);
    for (i = 0; i < n; i++)
        if (m == 0 || out[m - 1] != out[i])
            out[m++] = out[i];
    return m;
}

/*
 * Mean recall@k of got (nq x k ids) against the exact gt (nq x k): the
 * share of each query's true neighbours found, over the true neighbours
 * there are (fewer than k only when the base is smaller than k).
 */
static double recall_of(const int32_t *got, const int32_t *gt, size_t nq,
                        size_t k)
{
    int32_t truth[MAX_K], mine[MAX_K];
    double sum = 0.0;
    size_t q, counted = 0;

    for (q = 0; q < nq; q++) {
        size_t nt = sorted_ids(gt + q * k, k, truth);
        size_t nm = sorted_ids(got + q * k, k, mine), i = 0, j = 0, found = 0;

        if (nt == 0)
            continue;
        while (i < nt && j < nm) {
            if (truth[i] == mine[j]) {
                found++;
                i++;
                j++;
            } else if (truth[i] < mine[j]) {
                i++;
            } else {
                j++;
            }
        }
        sum += (double)found / (double)nt;
        counted++;
    }
    return counted ? sum / (double)counted : 0.0;
}

/* ------------------------------------------------------------------ */
/* Ground truth                                                         */

/* Write nq x k int32 rows as .ivecs (little-endian), through a
 * temporary file renamed into place. */
static int ivecs_write(const char *path, const int32_t *v, size_t rows,
                       size_t k)
{
    char tmp[4096 + 32];
    unsigned char word[4];
    size_t r, i;
    FILE *f;
    int ok;

    snprintf(tmp, sizeof(tmp), "%s.tmp%ld", path, (long)getpid());
    f = fopen(tmp, "wb");
    if (f == NULL) {
        cli_err("bench: %s: %s", tmp, strerror(errno));
        return -1;
    }
    for (r = 0; r < rows; r++)
        for (i = 0; i <= k; i++) {
            uint32_t x = i == 0 ? (uint32_t)k : (uint32_t)v[r * k + i - 1];

            word[0] = (unsigned char)x;
            word[1] = (unsigned char)(x >> 8);
            word[2] = (unsigned char)(x >> 16);
            word[3] = (unsigned char)(x >> 24);
            fwrite(word, 1, 4, f);
        }
    ok = !ferror(f);
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        cli_err("bench: %s: %s", ok ? path : tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Read a cached ground truth; 0 when it exists and has the right shape. */
static int gt_load(bench *b)
{
    size_t nq = b->d.queries.rows, k = b->o.k, rows, dim, i;
    int32_t *v;
    char err[512];

    if (access(b->gt_path, R_OK) != 0)
        return -1;
    if (ds_ivecs_read(b->gt_path, &v, &rows, &dim, err, sizeof(err)) != 0) {
        note("ignoring the cached ground truth: %s", err);
        return -1;
    }
    for (i = 0; rows == nq && dim == k && i < rows * dim; i++)
        if (v[i] < -1 || v[i] >= (int64_t)b->d.base.rows)
            break;
    if (rows != nq || dim != k || i < rows * dim) {
        note("ignoring the cached ground truth %s: it does not fit this "
             "data set",
             b->gt_path);
        free(v);
        return -1;
    }
    b->gt = v;
    return 0;
}

/* Insert the base into db on the bench's threads; returns 0 or an exit
 * code (reported). */
static int fill(bench *b, iqdb *db, const char *what)
{
    int rc;

    set_threads(b->o.threads);
    rc = iqdb_upsert_batch(db, b->recs, b->d.base.rows,
                           (uint32_t)b->d.base.dim);
    return rc != 0 ? cli_lib_err(db, rc, what) : 0;
}

/* The exact top-k by a flat database, in chunks for the progress bar. */
static int gt_compute(bench *b)
{
    const ds_matrix *q = &b->d.queries;
    size_t k = b->o.k, i;
    iqdb_config *cfg = iqdb_config_new((uint32_t)q->dim, b->o.metric);
    cli_progress *bar;
    iqdb *db = NULL;
    int rc;

    b->gt = calloc(q->rows * k, sizeof(int32_t));
    if (cfg == NULL || b->gt == NULL) {
        iqdb_config_free(cfg);
        cli_err("bench: out of memory");
        return CLI_EXIT_FAIL;
    }
    rc = iqdb_open_memory(cfg, &db);
    iqdb_config_free(cfg);
    if (rc != 0)
        return cli_lib_err(NULL, rc, "ground truth: open flat");
    bar = cli_progress_start("ground truth", q->rows);
    rc = fill(b, db, "ground truth: insert");
    for (i = 0; rc == 0 && i < q->rows; i += GT_CHUNK) {
        size_t n = q->rows - i < GT_CHUNK ? q->rows - i : GT_CHUNK, j;
        iqdb_results *res;
        int lrc = iqdb_search_batch(db, q->data + i * q->dim, n,
                                    (uint32_t)q->dim, k, NULL, NULL, &res);

        if (lrc != 0) {
            rc = cli_lib_err(db, lrc, "ground truth: search");
            break;
        }
        for (j = 0; j < n; j++)
            take_ids(res, j, b->gt + (i + j) * k, k);
        iqdb_results_free(res);
        cli_progress_update(bar, i + n);
    }
    cli_progress_end(bar);
    iqdb_close(db);
    return rc;
}

static int ground_truth(bench *b)
{
    const ds_matrix *base = &b->d.base, *q = &b->d.queries;
    uint64_t shape[5] = {base->rows, q->rows, base->dim, b->o.k,
                         (uint64_t)b->o.metric};
    uint64_t h = 0xcbf29ce484222325ull;
    double t0;
    int rc;

    h = hash_bytes(h, shape, sizeof(shape));
    h = hash_bytes(h, base->data, base->rows * base->dim * sizeof(float));
    h = hash_bytes(h, q->data, q->rows * q->dim * sizeof(float));
    if (path_fmt(b->gt_path, sizeof(b->gt_path), "%s/gt-%016llx-k%zu-%s.ivecs",
                 b->o.out, (unsigned long long)hash_final(h), b->o.k,
                 iqdb_metric_name(b->o.metric)) != 0)
        return CLI_EXIT_FAIL;
    t0 = cli_now();
    if (gt_load(b) == 0) {
        b->gt_cached = 1;
        b->gt_s = cli_now() - t0;
        note("ground truth: reusing %s", b->gt_path);
        return 0;
    }
    rc = gt_compute(b);
    if (rc != 0)
        return rc;
    b->gt_s = cli_now() - t0;
    /* A cache that cannot be written costs a recomputation next time,
     * nothing more. */
    if (ivecs_write(b->gt_path, b->gt, q->rows, b->o.k) != 0)
        note("ground truth not cached");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Our indexes                                                          */

/* Open an empty in-memory database for spec; 0 or an exit code. */
static int open_spec(const bench *b, const index_spec *sp, iqdb **db)
{
    iqdb_config *cfg = iqdb_config_new((uint32_t)b->d.base.dim, b->o.metric);
    char what[256];
    size_t i;
    int rc;

    if (cfg == NULL) {
        cli_err("bench: out of memory");
        return CLI_EXIT_FAIL;
    }
    rc = iqdb_config_set_index(cfg, sp->name);
    for (i = 0; rc == 0 && i < sp->nparams; i++)
        rc = iqdb_config_set_param(cfg, sp->keys[i], sp->vals[i]);
    if (rc == 0)
        rc = iqdb_open_memory(cfg, db);
    iqdb_config_free(cfg);
    if (rc != 0) {
        snprintf(what, sizeof(what), "--index %s", sp->text);
        return cli_lib_err(NULL, rc, what);
    }
    return 0;
}

/* params for sweep point i (NULL when the spec has no sweep). */
static int sweep_params(const index_spec *sp, size_t i, iqdb_params **out)
{
    *out = NULL;
    if (sp->sw == NULL)
        return 0;
    *out = iqdb_params_new();
    if (*out == NULL)
        return IQDB_ENOMEM;
    return iqdb_params_set(*out, sp->sw->key, sp->sw->vals[i]);
}

/*
 * Fail fast, before the ground truth and the long builds: open every
 * spec and run one search with every sweep value on a one-vector
 * database, so an unknown index, parameter or value is reported now.
 * Only parameter errors count here: an index may well refuse to insert
 * or search one vector (one that must be trained, say), and the real
 * build reports whatever is left.
 */
static int check_spec(const bench *b, const index_spec *sp)
{
    size_t npts = sp->sw != NULL ? sp->sw->n : 1, i;
    const float *v = b->d.base.data;
    uint32_t dim = (uint32_t)b->d.base.dim;
    char what[256];
    iqdb *db;
    int rc = open_spec(b, sp, &db);

    if (rc != 0)
        return rc;
    if (iqdb_upsert(db, iqdb_id_u64(0), v, dim, NULL) != 0)
        npts = 0;
    for (i = 0; i < npts; i++) {
        iqdb_params *p;
        iqdb_results *res = NULL;

        rc = sweep_params(sp, i, &p);
        if (rc == 0)
            rc = iqdb_search(db, v, dim, b->o.k, NULL, p, &res);
        iqdb_results_free(res);
        iqdb_params_free(p);
        if (rc == IQDB_EPARAM || rc == IQDB_ENOMEM) {
            snprintf(what, sizeof(what), "--index %s with --sweep %s=%s",
                     sp->text, sp->sw != NULL ? sp->sw->key : "",
                     sp->sw != NULL ? sp->sw->vals[i] : "");
            rc = cli_lib_err(db, rc, what);
            iqdb_close(db);
            return rc;
        }
    }
    iqdb_close(db);
    return 0;
}

/* One query at a time on one thread, ids into b->ids; the QPS. */
static int run_single(bench *b, iqdb *db, const iqdb_params *p,
                      cli_progress *bar, uint64_t done, double *qps)
{
    const ds_matrix *q = &b->d.queries;
    uint32_t dim = (uint32_t)q->dim;
    size_t k = b->o.k, i;
    double start, best = 0.0;
    iqdb_results *res;
    int rc, pass;

    set_threads(1);
    for (i = 0; i < WARMUP && i < q->rows; i++) {
        rc = iqdb_search(db, q->data + i * q->dim, dim, k, NULL, p, &res);
        if (rc != 0)
            return cli_lib_err(db, rc, "search");
        iqdb_results_free(res);
    }
    start = cli_now();
    for (pass = 0; pass < SINGLE_PASSES; pass++) {
        double t0 = cli_now();

        for (i = 0; i < q->rows; i++) {
            rc = iqdb_search(db, q->data + i * q->dim, dim, k, NULL, p, &res);
            if (rc != 0)
                return cli_lib_err(db, rc, "search");
            take_ids(res, 0, b->ids + i * k, k);
            iqdb_results_free(res);
            if (pass == 0 && (i & 15) == 15)
                cli_progress_update(bar, done + i + 1);
        }
        best = fmax(best, (double)q->rows / fmax(cli_now() - t0, 1e-9));
        if (cli_now() - start > SINGLE_BUDGET_S)
            break;
    }
    *qps = best;
    cli_progress_update(bar, done + q->rows);
    return 0;
}

/* All queries in one batch on the bench's threads; the best QPS. */
static int run_batch(bench *b, iqdb *db, const iqdb_params *p, double *qps)
{
    const ds_matrix *q = &b->d.queries;
    double start = cli_now(), best = 0.0;
    int run;

    set_threads(b->o.threads);
    for (run = 0; run < BATCH_RUNS; run++) {
        double t0 = cli_now(), dt;
        iqdb_results *res;
        int rc = iqdb_search_batch(db, q->data, q->rows, (uint32_t)q->dim,
                                   b->o.k, NULL, p, &res);

        if (rc != 0)
            return cli_lib_err(db, rc, "batch search");
        dt = cli_now() - t0;
        iqdb_results_free(res);
        best = fmax(best, (double)q->rows / fmax(dt, 1e-9));
        if (cli_now() - start > BATCH_BUDGET_S)
            break;
    }
    *qps = best;
    return 0;
}

static int run_spec(bench *b, const index_spec *sp, series *s)
{
    size_t npts = sp->sw != NULL ? sp->sw->n : 1, nq = b->d.queries.rows, i;
    char label[96];
    cli_progress *bar;
    int64_t rss0, rss1;
    double t0;
    iqdb *db;
    int rc;

    snprintf(s->index, sizeof(s->index), "%s", sp->name);
    snprintf(s->params, sizeof(s->params), "%s", sp->params);
    snprintf(label, sizeof(label), "build %.60s", sp->text);
#ifdef __GLIBC__
    /* Hand memory freed by earlier builds back to the kernel, or this
     * build would reuse it and the RSS would not show its size. */
    malloc_trim(0);
#endif
    rss0 = rss_bytes();
    t0 = cli_now();
    rc = open_spec(b, sp, &db);
    if (rc != 0)
        return rc;
    bar = cli_progress_start(label, b->d.base.rows);
    rc = fill(b, db, sp->text);
    cli_progress_update(bar, rc == 0 ? b->d.base.rows : 0);
    cli_progress_end(bar);
    s->build_s = cli_now() - t0;
    rss1 = rss_bytes();
    s->mem_bytes = rss0 >= 0 && rss1 >= rss0 ? rss1 - rss0 : -1;

    snprintf(label, sizeof(label), "search %.60s", sp->text);
    bar = rc == 0 ? cli_progress_start(label, (uint64_t)npts * nq) : NULL;
    for (i = 0; rc == 0 && i < npts; i++) {
        point *pt = &s->pts[s->npts];
        iqdb_params *p;

        rc = sweep_params(sp, i, &p);
        if (rc != 0) {
            rc = cli_lib_err(db, rc, "sweep parameter");
            break;
        }
        if (sp->sw != NULL)
            snprintf(pt->sweep, sizeof(pt->sweep), "%s=%s", sp->sw->key,
                     sp->sw->vals[i]);
        rc = run_single(b, db, p, bar, (uint64_t)i * nq, &pt->qps_single);
        if (rc == 0)
            rc = run_batch(b, db, p, &pt->qps_batch);
        iqdb_params_free(p);
        pt->recall = recall_of(b->ids, b->gt, nq, b->o.k);
        s->npts += rc == 0;
    }
    cli_progress_end(bar);
    iqdb_close(db);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Peers                                                                */

/* The peer directory, or NULL. */
static const char *peer_dir(void)
{
    const char *d = getenv("IQDB_PEER_DIR");

    if (d != NULL && d[0] != '\0')
        return d;
#ifdef IQDB_PEER_DIR
    return IQDB_PEER_DIR;
#else
    return NULL;
#endif
}

/* 1 when an executable `name` is on $PATH. */
static int on_path(const char *name)
{
    const char *path = getenv("PATH"), *p;
    char buf[4096];

    for (p = path; p != NULL && *p != '\0';) {
        const char *end = strchr(p, ':');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);

        if (len > 0 && len + strlen(name) + 2 < sizeof(buf)) {
            memcpy(buf, p, len);
            snprintf(buf + len, sizeof(buf) - len, "/%s", name);
            if (access(buf, X_OK) == 0)
                return 1;
        }
        p = end != NULL ? end + 1 : NULL;
    }
    return 0;
}

/*
 * Run argv[0] (searched on $PATH) and wait. When out is not NULL the
 * child's stdout (and, with merge_err, its stderr) is collected into a
 * malloc'd NUL-terminated *out. Otherwise stdout goes to /dev/null. A
 * child's stderr goes to ours unless quiet or merged. Returns the exit
 * status, or -1 when the child could not be run or was killed.
 */
static int run_child(char *const argv[], char **out, int merge_err)
{
    int fds[2] = {-1, -1}, status;
    size_t len = 0, cap = 0;
    char *buf = NULL;
    pid_t pid;

    if (out != NULL) {
        *out = NULL;
        if (pipe(fds) != 0)
            return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        if (out != NULL) {
            close(fds[0]);
            close(fds[1]);
        }
        return -1;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);

        dup2(out != NULL ? fds[1] : null, 1);
        if (out != NULL && merge_err)
            dup2(fds[1], 2);
        else if (cli_quiet || out == NULL)
            dup2(null, 2);
        if (out != NULL) {
            close(fds[0]);
            close(fds[1]);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    if (out != NULL) {
        close(fds[1]);
        for (;;) {
            ssize_t r;

            if (len + 4096 + 1 > cap) {
                char *nb = realloc(buf, cap = cap ? 2 * cap : 8192);

                if (nb == NULL)
                    break;
                buf = nb;
            }
            r = read(fds[0], buf + len, cap - len - 1);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            len += (size_t)r;
        }
        close(fds[0]);
        if (buf != NULL)
            buf[len] = '\0';
        *out = buf;
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The value of key= in a line of key=value words, copied into val. */
static int kv_get(const char *line, const char *key, char *val, size_t len)
{
    size_t klen = strlen(key);
    const char *p = line;

    while ((p = strstr(p, key)) != NULL) {
        if ((p == line || p[-1] == ' ' || p[-1] == '\t') && p[klen] == '=') {
            size_t n = strcspn(p + klen + 1, " \t\r\n");

            if (n >= len)
                return -1;
            memcpy(val, p + klen + 1, n);
            val[n] = '\0';
            return 0;
        }
        p += klen;
    }
    return -1;
}

static double kv_num(const char *line, const char *key)
{
    char v[64], *end;
    double d;

    if (kv_get(line, key, v, sizeof(v)) != 0)
        return NAN;
    d = strtod(v, &end);
    return end != v && *end == '\0' ? d : NAN;
}

/* The point of s for ef, created when new. */
static point *peer_point(series *s, const char *ef)
{
    char name[96];
    point *pt;
    size_t i;

    snprintf(name, sizeof(name), "ef_search=%s", ef);
    for (i = 0; i < s->npts; i++)
        if (strcmp(s->pts[i].sweep, name) == 0)
            return &s->pts[i];
    if (s->npts == MAX_SWEEP)
        return NULL;
    pt = &s->pts[s->npts++];
    memset(pt, 0, sizeof(*pt));
    snprintf(pt->sweep, sizeof(pt->sweep), "%s", name);
    pt->recall = -1;
    pt->qps_single = -1;
    pt->qps_batch = -1;
    return pt;
}

/* Recall of the ids a peer wrote to path; -1 with a notice on failure. */
static double peer_recall(const bench *b, const char *path)
{
    size_t rows, dim;
    int32_t *v;
    char err[512];
    double r;

    if (ds_ivecs_read(path, &v, &rows, &dim, err, sizeof(err)) != 0) {
        note("%s", err);
        return -1;
    }
    if (rows != b->d.queries.rows || dim != b->o.k) {
        note("%s: %zu rows of %zu ids, expected %zu of %zu", path, rows, dim,
             b->d.queries.rows, b->o.k);
        free(v);
        return -1;
    }
    r = recall_of(v, b->gt, rows, dim);
    free(v);
    return r;
}

/* Parse one line of a peer's output into s. */
static void peer_line(const bench *b, const char *prefix, const char *line,
                      series *s)
{
    char ef[32], mode[16], ids[4096];
    point *pt;
    double qps;

    if (strncmp(line, "build ", 6) == 0) {
        s->build_s = kv_num(line, "seconds");
    } else if (strncmp(line, "memory ", 7) == 0) {
        double m = kv_num(line, "bytes");

        s->mem_bytes = isfinite(m) && m >= 0 ? (int64_t)m : -1;
    } else if (strncmp(line, "search ", 7) == 0) {
        qps = kv_num(line, "qps");
        if (kv_get(line, "ef", ef, sizeof(ef)) != 0 ||
            kv_get(line, "mode", mode, sizeof(mode)) != 0 ||
            kv_get(line, "ids", ids, sizeof(ids)) != 0 || !(qps > 0)) {
            note("%s: cannot read the line '%s'", s->name, line);
            return;
        }
        pt = peer_point(s, ef);
        if (pt == NULL)
            return;
        if (strcmp(mode, "batch") == 0) {
            pt->qps_batch = qps;
        } else {
            pt->qps_single = qps;
            pt->recall = peer_recall(b, ids);
        }
        /* Ours to tidy: only files under the prefix we handed out. */
        if (strncmp(ids, prefix, strlen(prefix)) == 0)
            unlink(ids);
    }
}

/* Keep the points measured one query at a time with a known recall. */
static void peer_prune(series *s)
{
    size_t i, n = 0;

    for (i = 0; i < s->npts; i++)
        if (s->pts[i].qps_single > 0 && s->pts[i].recall >= 0)
            s->pts[n++] = s->pts[i];
    s->npts = n;
}

/* The hnsw build parameters and ef list for the peers: from the first
 * hnsw --index and its sweep, else hnsw's defaults. seed stays empty
 * unless that spec sets one. */
#define PEER_ARG 32
static void peer_params(const bench *b, char m[PEER_ARG], char efc[PEER_ARG],
                        char seed[PEER_ARG], char *efs, size_t len)
{
    const sweep *sw = &b->o.hnsw_sweep;
    size_t i, j, used = 0;

    snprintf(m, PEER_ARG, "16");
    snprintf(efc, PEER_ARG, "200");
    seed[0] = '\0';
    for (i = 0; i < b->o.nspecs; i++) {
        const index_spec *sp = &b->o.specs[i];

        if (strcmp(sp->name, "hnsw") != 0)
            continue;
        for (j = 0; j < sp->nparams; j++) {
            if (strcmp(sp->keys[j], "m") == 0)
                snprintf(m, PEER_ARG, "%s", sp->vals[j]);
            else if (strcmp(sp->keys[j], "ef_construction") == 0)
                snprintf(efc, PEER_ARG, "%s", sp->vals[j]);
            else if (strcmp(sp->keys[j], "seed") == 0)
                snprintf(seed, PEER_ARG, "%s", sp->vals[j]);
        }
        if (sp->sw != NULL && strcmp(sp->sw->key, "ef_search") == 0)
            sw = sp->sw;
        break;
    }
    efs[0] = '\0';
    for (i = 0; i < sw->n && used + strlen(sw->vals[i]) + 2 < len; i++)
        used += (size_t)snprintf(efs + used, len - used, "%s%s",
                                 i ? "," : "", sw->vals[i]);
}

/* Run one peer program (argv0 [argv1]) with the protocol's arguments. */
static void peer_run(bench *b, const char *name, const char *prog,
                     const char *script, const char *base,
                     const char *queries)
{
    char m[PEER_ARG], efc[PEER_ARG], seed[PEER_ARG], efs[1024], k[32];
    char threads[32];
    char prefix[4096];
    const char *metric = b->o.metric == IQDB_METRIC_DOT ? "ip" : "l2";
    char *argv[32], *out = NULL, *line, *save = NULL;
    series *s = &b->ser[b->nser];
    double t0 = cli_now();
    int n = 0, rc;

    peer_params(b, m, efc, seed, efs, sizeof(efs));
    snprintf(k, sizeof(k), "%zu", b->o.k);
    snprintf(threads, sizeof(threads), "%d", b->o.threads);
    if (path_fmt(prefix, sizeof(prefix), "%s/peer-%s", b->o.out,
                 strcmp(name, PEER_FAISS) == 0 ? "faiss" : "hnswlib") != 0)
        return;
    argv[n++] = (char *)prog;
    if (script != NULL)
        argv[n++] = (char *)script;
    argv[n++] = (char *)"--base";
    argv[n++] = (char *)base;
    argv[n++] = (char *)"--queries";
    argv[n++] = (char *)queries;
    argv[n++] = (char *)"--k";
    argv[n++] = k;
    argv[n++] = (char *)"--m";
    argv[n++] = m;
    argv[n++] = (char *)"--ef-construction";
    argv[n++] = efc;
    argv[n++] = (char *)"--threads";
    argv[n++] = threads;
    argv[n++] = (char *)"--ef";
    argv[n++] = efs;
    argv[n++] = (char *)"--out";
    argv[n++] = prefix;
    argv[n++] = (char *)"--metric";
    argv[n++] = (char *)metric;
    argv[n++] = (char *)"--batch";
    if (seed[0] != '\0') {
        argv[n++] = (char *)"--seed";
        argv[n++] = seed;
    }
    argv[n] = NULL;

    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    snprintf(s->index, sizeof(s->index), "%s",
             strcmp(name, PEER_FAISS) == 0 ? "faiss" : "hnswlib");
    snprintf(s->params, sizeof(s->params), "m=%s,ef_construction=%s", m,
             efc);
    s->build_s = -1;
    s->mem_bytes = -1;
    note("running %s (m=%s, ef_construction=%s, ef %s)...", name, m, efc,
         efs);
    rc = run_child(argv, &out, 0);
    for (line = out != NULL ? strtok_r(out, "\n", &save) : NULL;
         line != NULL; line = strtok_r(NULL, "\n", &save))
        peer_line(b, prefix, line, s);
    free(out);
    peer_prune(s);
    if (rc != 0 || s->npts == 0) {
        note("%s failed (exit status %d, %zu points): left out", name, rc,
             s->npts);
        return;
    }
    if (!isfinite(s->build_s))
        s->build_s = -1;
    note("%s done in %.1f s", name, cli_now() - t0);
    b->nser++;
}

/* Compile the hnswlib peer into the out dir unless a newer build is
 * there; the path of the program, or NULL (noticed). */
static int peer_compile(const bench *b, const char *src, char *exe,
                        size_t len)
{
    char *argv[] = {(char *)"c++", (char *)"-O3", (char *)"-march=native",
                    (char *)"-fopenmp", (char *)"-o", exe, (char *)src, NULL};
    struct stat ss, es;
    char *out = NULL;
    int rc;

    if (path_fmt(exe, len, "%s/hnswlib_peer", b->o.out) != 0)
        return -1;
    if (stat(src, &ss) == 0 && stat(exe, &es) == 0 &&
        es.st_mtime >= ss.st_mtime)
        return 0;
    note("compiling the hnswlib peer (c++ -O3 -march=native)...");
    rc = run_child(argv, &out, 1);
    if (rc != 0) {
        note("%s: compilation failed (status %d): hnswlib left out%s%s", src,
             rc, out != NULL && out[0] != '\0' ? "\n" : "",
             out != NULL ? out : "");
        free(out);
        unlink(exe);
        return -1;
    }
    free(out);
    return 0;
}

static int faiss_importable(void)
{
    char *argv[] = {(char *)PYTHON, (char *)"-c", (char *)"import faiss",
                    NULL};

    return access(PYTHON, X_OK) == 0 && run_child(argv, NULL, 0) == 0;
}

static void run_peers(bench *b)
{
    char src[4096], exe[4096], script[4096], base[4096], queries[4096];
    const char *dir = peer_dir();
    int hnswlib_ok, faiss_ok;
    char err[512];

    if (b->o.metric != IQDB_METRIC_EUCLIDEAN &&
        b->o.metric != IQDB_METRIC_DOT) {
        note("peers left out: they support euclidean (l2) and dot (ip), not "
             "%s",
             iqdb_metric_name(b->o.metric));
        return;
    }
    if (dir == NULL) {
        note("peers left out: no peer directory (set IQDB_PEER_DIR)");
        return;
    }
    if (path_fmt(src, sizeof(src), "%s/hnswlib_peer.cpp", dir) != 0 ||
        path_fmt(script, sizeof(script), "%s/faiss_peer.py", dir) != 0 ||
        path_fmt(base, sizeof(base), "%s/peer-base.fvecs", b->o.out) != 0 ||
        path_fmt(queries, sizeof(queries), "%s/peer-queries.fvecs",
                 b->o.out) != 0)
        return;

    hnswlib_ok = access(src, R_OK) == 0 && access(HNSWLIB_HEADER, R_OK) == 0 &&
                 on_path("c++");
    if (!hnswlib_ok)
        note("%s left out: needs %s, %s and a C++ compiler (c++)",
             PEER_HNSWLIB, src, HNSWLIB_HEADER);
    faiss_ok = access(script, R_OK) == 0 && faiss_importable();
    if (!faiss_ok)
        note("%s left out: needs %s and %s able to import faiss", PEER_FAISS,
             script, PYTHON);
    if (!hnswlib_ok && !faiss_ok)
        return;
    if (ds_fvecs_write(base, &b->d.base, err, sizeof(err)) != 0 ||
        ds_fvecs_write(queries, &b->d.queries, err, sizeof(err)) != 0) {
        note("peers left out: %s", err);
        goto done;
    }
    if (hnswlib_ok && peer_compile(b, src, exe, sizeof(exe)) == 0)
        peer_run(b, PEER_HNSWLIB, exe, NULL, base, queries);
    if (faiss_ok)
        peer_run(b, PEER_FAISS, PYTHON, script, base, queries);
done:
    unlink(base);
    unlink(queries);
}

/* ------------------------------------------------------------------ */
/* Output                                                               */

static void mark_pareto(series *s)
{
    double recall[MAX_SWEEP], qps[MAX_SWEEP];
    size_t idx[MAX_SWEEP], i, n;

    for (i = 0; i < s->npts; i++) {
        recall[i] = s->pts[i].recall;
        qps[i] = s->pts[i].qps_single;
        s->pts[i].pareto = 0;
    }
    n = svg_pareto(recall, qps, s->npts, idx);
    for (i = 0; i < n; i++)
        s->pts[idx[i]].pareto = 1;
}

/* A CSV field, quoted when it holds a comma, quote or line break. */
static void csv_field(FILE *f, const char *s)
{
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s != '\0'; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int close_checked(FILE *f, const char *path)
{
    int bad = ferror(f);

    if (fclose(f) != 0 || bad) {
        cli_err("bench: %s: write error", path);
        return -1;
    }
    return 0;
}

static int write_csv(const bench *b, const char *path)
{
    FILE *f = fopen(path, "w");
    size_t i, j;

    if (f == NULL) {
        cli_err("bench: %s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "series,index,params,sweep,k,recall,qps_single,qps_batch,"
               "build_seconds,memory_bytes,pareto\n");
    for (i = 0; i < b->nser; i++) {
        const series *s = &b->ser[i];

        for (j = 0; j < s->npts; j++) {
            const point *p = &s->pts[j];

            csv_field(f, s->name);
            fputc(',', f);
            csv_field(f, s->index);
            fputc(',', f);
            csv_field(f, s->params);
            fputc(',', f);
            csv_field(f, p->sweep);
            fprintf(f, ",%zu,%.6f,%.3f,", b->o.k, p->recall, p->qps_single);
            if (p->qps_batch > 0)
                fprintf(f, "%.3f", p->qps_batch);
            fputc(',', f);
            if (s->build_s >= 0)
                fprintf(f, "%.4f", s->build_s);
            fputc(',', f);
            if (s->mem_bytes >= 0)
                fprintf(f, "%lld", (long long)s->mem_bytes);
            fprintf(f, ",%d\n", p->pareto);
        }
    }
    return close_checked(f, path);
}

static void json_str(FILE *f, const char *s)
{
    cli_json_write_str(f, s, strlen(s));
}

/* A number, or null when negative (not measured). */
static void json_opt(FILE *f, double d)
{
    if (d >= 0)
        cli_json_write_double(f, d);
    else
        fputs("null", f);
}

static void json_header(const bench *b, FILE *f)
{
    fputs("{\n  \"tool\": \"iqdb bench\",\n  \"iqdb_version\": ", f);
    json_str(f, iqdb_version());
    fputs(",\n  \"dataset\": {\"name\": ", f);
    json_str(f, b->d.name);
    fputs(", \"description\": ", f);
    json_str(f, b->desc);
    fprintf(f, ", \"n\": %zu, \"dim\": %zu, \"nq\": %zu, \"metric\": ",
            b->d.base.rows, b->d.base.dim, b->d.queries.rows);
    json_str(f, iqdb_metric_name(b->o.metric));
    fprintf(f, "},\n  \"k\": %zu,\n  \"threads\": %d,\n", b->o.k,
            b->o.threads);
    fputs("  \"ground_truth\": {\"file\": ", f);
    json_str(f, b->gt_path);
    fprintf(f, ", \"cached\": %s, \"seconds\": ",
            b->gt_cached ? "true" : "false");
    cli_json_write_double(f, b->gt_s);
    fputs("},\n", f);
}

static void json_series(const series *s, FILE *f)
{
    fputs("{\"name\": ", f);
    json_str(f, s->name);
    fputs(", \"index\": ", f);
    json_str(f, s->index);
    fputs(", \"params\": ", f);
    json_str(f, s->params);
    fputs(", \"build_seconds\": ", f);
    json_opt(f, s->build_s);
    fputs(", \"memory_bytes\": ", f);
    json_opt(f, (double)s->mem_bytes);
    fprintf(f, ", \"points\": %zu}", s->npts);
}

static void json_row(const bench *b, const series *s, const point *p,
                     FILE *f)
{
    fputs("    {\"series\": ", f);
    json_str(f, s->name);
    fputs(", \"index\": ", f);
    json_str(f, s->index);
    fputs(", \"params\": ", f);
    json_str(f, s->params);
    fputs(", \"sweep\": ", f);
    json_str(f, p->sweep);
    fprintf(f, ", \"k\": %zu, \"recall\": ", b->o.k);
    cli_json_write_double(f, p->recall);
    fputs(", \"qps_single\": ", f);
    cli_json_write_double(f, p->qps_single);
    fputs(", \"qps_batch\": ", f);
    json_opt(f, p->qps_batch);
    fputs(", \"build_seconds\": ", f);
    json_opt(f, s->build_s);
    fputs(", \"memory_bytes\": ", f);
    json_opt(f, (double)s->mem_bytes);
    fprintf(f, ", \"pareto\": %s}", p->pareto ? "true" : "false");
}

static int write_json(const bench *b, const char *path)
{
    FILE *f = fopen(path, "w");
    size_t i, j, rows = 0;

    if (f == NULL) {
        cli_err("bench: %s: %s", path, strerror(errno));
        return -1;
    }
    json_header(b, f);
    fputs("  \"series\": [", f);
    for (i = 0; i < b->nser; i++) {
        fputs(i ? ",\n    " : "\n    ", f);
        json_series(&b->ser[i], f);
    }
    fputs(b->nser ? "\n  ],\n  \"results\": [" : "],\n  \"results\": [", f);
    for (i = 0; i < b->nser; i++)
        for (j = 0; j < b->ser[i].npts; j++) {
            fputs(rows++ ? ",\n" : "\n", f);
            json_row(b, &b->ser[i], &b->ser[i].pts[j], f);
        }
    fputs(rows ? "\n  ]\n}\n" : "]\n}\n", f);
    return close_checked(f, path);
}

static int write_svg(const bench *b, const char *path)
{
    double recall[MAX_SERIES][MAX_SWEEP], qps[MAX_SERIES][MAX_SWEEP];
    svg_series ss[MAX_SERIES];
    char title[320], err[512];
    size_t i, j;

    for (i = 0; i < b->nser; i++) {
        for (j = 0; j < b->ser[i].npts; j++) {
            recall[i][j] = b->ser[i].pts[j].recall;
            qps[i][j] = b->ser[i].pts[j].qps_single;
        }
        ss[i].name = b->ser[i].name;
        ss[i].recall = recall[i];
        ss[i].qps = qps[i];
        ss[i].n = b->ser[i].npts;
    }
    snprintf(title, sizeof(title),
             "%.60s: %zu x %zu, %zu queries, k=%zu, %s; 1 thread, one "
             "query at a time",
             b->d.name, b->d.base.rows, b->d.base.dim, b->d.queries.rows,
             b->o.k, iqdb_metric_name(b->o.metric));
    if (svg_plot_write(path, title, ss, b->nser, err, sizeof(err)) != 0) {
        cli_err("bench: %s", err);
        return -1;
    }
    return 0;
}

static void print_mem(int64_t bytes)
{
    if (bytes >= 0)
        printf(" %9.1f", (double)bytes / (1024.0 * 1024.0));
    else
        printf(" %9s", "?");
}

/* The Pareto frontier of every series; the dominated points are in the
 * files. */
static void print_summary(const bench *b)
{
    size_t i, j, w = 6, hidden = 0;
    char qb[32];

    for (i = 0; i < b->nser; i++)
        if (strlen(b->ser[i].name) > w)
            w = strlen(b->ser[i].name) > 40 ? 40 : strlen(b->ser[i].name);
    printf("\n%-*s %-18s %9s %12s %12s %9s %9s\n", (int)w, "series", "sweep",
           "recall", "QPS 1 thr", "QPS batch", "build s", "mem MiB");
    for (i = 0; i < b->nser; i++) {
        const series *s = &b->ser[i];
        int first = 1;

        for (j = 0; j < s->npts; j++) {
            const point *p = &s->pts[j];

            if (!p->pareto) {
                hidden++;
                continue;
            }
            if (p->qps_batch > 0)
                snprintf(qb, sizeof(qb), "%.1f", p->qps_batch);
            else
                snprintf(qb, sizeof(qb), "-");
            printf("%-*.*s %-18.18s %9.4f %12.1f %12s", (int)w, (int)w,
                   first ? s->name : "", p->sweep[0] ? p->sweep : "-",
                   p->recall, p->qps_single, qb);
            if (first && s->build_s >= 0)
                printf(" %9.2f", s->build_s);
            else
                printf(" %9s", "");
            if (first)
                print_mem(s->mem_bytes);
            printf("\n");
            first = 0;
        }
    }
    printf("(recall@%zu; QPS batch on %d threads; build on %d threads; "
           "memory = RSS growth",
           b->o.k, b->o.threads, b->o.threads);
    if (hidden)
        printf("; %zu dominated point%s not shown", hidden,
               hidden == 1 ? "" : "s");
    printf(")\n");
}

static int write_outputs(const bench *b)
{
    char csv[4096], json[4096], svg[4096];

    if (path_fmt(csv, sizeof(csv), "%s/results.csv", b->o.out) != 0 ||
        path_fmt(json, sizeof(json), "%s/results.json", b->o.out) != 0 ||
        path_fmt(svg, sizeof(svg), "%s/plot.svg", b->o.out) != 0)
        return CLI_EXIT_FAIL;
    if (write_csv(b, csv) != 0 || write_json(b, json) != 0 ||
        write_svg(b, svg) != 0)
        return CLI_EXIT_FAIL;
    printf("\nwrote %s\n      %s\n      %s\n", csv, json, svg);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The command                                                          */

static int run(bench *b)
{
    size_t i, j;
    int rc;

    rc = load_data(b);
    if (rc != 0)
        return rc;
    printf("iqdb bench: %s: %zu x %zu, %zu queries, %s, k=%zu, %d "
           "threads\n",
           b->desc, b->d.base.rows, b->d.base.dim, b->d.queries.rows,
           iqdb_metric_name(b->o.metric), b->o.k, b->o.threads);
    fflush(stdout);
    for (i = 0; i < b->o.nspecs; i++) {
        rc = check_spec(b, &b->o.specs[i]);
        if (rc != 0)
            return rc;
    }
    if (mkdir_p(b->o.out) != 0) {
        cli_err("bench: %s: %s", b->o.out, strerror(errno));
        return CLI_EXIT_FAIL;
    }
    if (make_records(b) != 0)
        return CLI_EXIT_FAIL;
    rc = ground_truth(b);
    if (rc != 0)
        return rc;
    for (i = 0; i < b->o.nspecs; i++) {
        series *s = &b->ser[b->nser];

        snprintf(s->name, sizeof(s->name), "%s", b->o.specs[i].text);
        for (j = 0; j < b->nser; j++)
            if (strcmp(b->ser[j].name, s->name) == 0)
                snprintf(s->name, sizeof(s->name), "%s #%zu",
                         b->o.specs[i].text, i + 1);
        rc = run_spec(b, &b->o.specs[i], s);
        if (rc != 0)
            return rc;
        b->nser++;
    }
    if (b->o.peers)
        run_peers(b);
    for (i = 0; i < b->nser; i++)
        mark_pareto(&b->ser[i]);
    print_summary(b);
    return write_outputs(b);
}

int cli_cmd_bench(int argc, char **argv)
{
    bench *b = calloc(1, sizeof(*b));
    int rc;

    if (b == NULL) {
        cli_err("bench: out of memory");
        return CLI_EXIT_FAIL;
    }
    rc = parse_args(argc, argv, &b->o);
    if (rc != 0) {
        if (rc < 0)
            usage(stderr);
        opts_free(&b->o);
        free(b);
        return rc < 0 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    b->ser = calloc(MAX_SERIES, sizeof(*b->ser));
    if (b->ser == NULL) {
        cli_err("bench: out of memory");
        rc = CLI_EXIT_FAIL;
    } else {
        rc = run(b);
    }
    free(b->ser);
    free(b->ids);
    free(b->gt);
    free(b->recs);
    ds_dataset_free(&b->d);
    opts_free(&b->o);
    free(b);
    return rc;
}
