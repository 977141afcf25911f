/*
 * bench/bench_hnsw.c - measures the hnsw index plugin against hnswlib and
 * FAISS IndexHNSWFlat in the same run, on Fashion-MNIST (60k x 784, the
 * first --nq test images as queries) and on generated clustered data
 * (200k x 128, fixed seed): recall@k against the flat oracle and single-
 * query QPS over an ef sweep, build time on 1 and 2 threads, and resident
 * memory. The peers run as separate programs (bench/peers/, protocol at
 * the top of each file) on the same vectors, written to a temporary
 * directory as .fvecs; their result ids come back as .ivecs and are
 * scored against the same oracle.
 *
 *   bench_hnsw [--dataset fmnist|generated|both] [--n N] [--nq N] [--k K]
 *              [--ef LIST] [--threads LIST] [--m M] [--ef-construction E]
 *              [--seed S] [--no-peers] [--no-filtered] [--peer-dir DIR]
 *              [--fmnist-dir DIR] [--csv FILE]
 *
 * How each system is measured, the same way for all:
 *   build   one call that adds every base vector (iqdb_upsert_batch;
 *           hnswlib addPoint in an OpenMP loop; FAISS index.add) on T
 *           threads, wall time;
 *   memory  growth of VmRSS from just before the index (iqdb: the
 *           database) is created to just after the build, base vectors
 *           already loaded: the index's own copy of the vectors plus the
 *           graph;
 *   search  every query one at a time on 1 thread at each ef, the whole
 *           loop timed after a 10-query warm-up, the best of up to 5
 *           passes within 0.3 s, on the graph built with the last
 *           --threads count.
 * Then (iqdb only, unless --no-filtered) a second hnsw database whose
 * records carry {"b": hash(id) mod 1000} answers the queries with the
 * filter b < t at selectivity 50%, 10%, 1% and 0.1% at the default
 * ef_search, scored against a flat database holding the same records
 * under the same filter; then a random half of the records is deleted
 * from both, one by one, and unfiltered recall is measured again.
 * The QPS each system reaches at a recall target is read off its Pareto
 * frontier, interpolating linearly in recall between the two sweep points
 * that bracket the target.
 *
 * Exit status: 1 on a library or I/O error, 2 on bad options. A missed
 * target is reported, not failed: the machine may be shared, and bench/
 * measures rather than tests.
 */
#define _POSIX_C_SOURCE 200809L

#include <iqdb/iqdb.h>

#include "benchutil.h"
#include "dataset.h"

#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define PYTHON "/usr/bin/python3"
#define HNSWLIB_HEADER "/usr/include/hnswlib/hnswlib.h"
#define MAX_EF 32
#define MAX_T 8
#define WARMUP_QUERIES 10
#define PATH_LEN 4096

/* Targets from the issue: iqdb against hnswlib. */
#define TARGET_RECALL 0.95
#define TARGET_QPS 1.2   /* QPS at TARGET_RECALL, at least */
#define TARGET_BUILD 1.0 /* build seconds, at most */
#define TARGET_MEM 1.1   /* memory bytes, at most */

static const double recall_targets[] = {0.90, 0.95, 0.99};
#define NTARGETS (sizeof(recall_targets) / sizeof(recall_targets[0]))

enum { SYS_IQDB, SYS_BF16, SYS_HNSWLIB, SYS_FAISS, NSYS };
static const char *const sys_names[NSYS] = {"iqdb", "iqdb-bf16", "hnswlib",
                                            "faiss"};

typedef struct opts {
    int want_fmnist;
    int want_generated;
    size_t n; /* 0: the data set's full size */
    size_t nq;
    size_t k;
    size_t m;
    size_t efc;
    unsigned long long seed;
    size_t ef[MAX_EF];
    size_t nef;
    int threads[MAX_T];
    size_t nthreads;
    int peers;
    int filtered; /* measure filtered recall and recall after deletes */
    const char *peer_dir;
    const char *fmnist_dir;
    const char *csv;
} opts;

/* What one system measured on one data set; negative means not measured. */
typedef struct sysrun {
    int ran;        /* 1 when the search sweep was measured */
    char why[256];  /* why not, when it was not */
    double build_s[MAX_T];
    double mem[MAX_T]; /* bytes */
    double recall[MAX_EF];
    double qps[MAX_EF];
} sysrun;

/* The peers, found once per run. */
typedef struct peers {
    char tmpdir[64];
    char hnswlib_exe[PATH_LEN]; /* "" when unavailable */
    char hnswlib_why[256];
    char faiss_script[PATH_LEN]; /* "" when unavailable */
    char faiss_why[256];
} peers;

/* One run of a peer program, as it reported it. */
typedef struct peer_out {
    double build_s;
    double mem;
    size_t nsearch;
    size_t ef[MAX_EF];
    double qps[MAX_EF];
    char ids[MAX_EF][PATH_LEN];
} peer_out;

const char *bench_prog = "bench_hnsw";

/* ------------------------------------------------------------------ */
/* Small utilities                                                      */

/* Resident set size in bytes (VmRSS of /proc/self/status), as the peers
 * read it; -1 when unknown. */
static double rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1.0;

    if (f == NULL)
        return -1.0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtod(line + 6, NULL);
            break;
        }
    fclose(f);
    return kb < 0 ? -1.0 : kb * 1024.0;
}

static int file_exists(const char *path)
{
    return access(path, R_OK) == 0;
}

/* Mean |ids & truth| / k over nq rows of k ids; -1 never matches. */
static double recall_of(const int32_t *ids, const int32_t *truth, size_t nq,
                        size_t k)
{
    double sum = 0.0;
    size_t q, i, j;

    for (q = 0; q < nq; q++) {
        size_t hit = 0;

        for (i = 0; i < k; i++)
            for (j = 0; j < k; j++)
                if (ids[q * k + i] >= 0 && ids[q * k + i] == truth[q * k + j]) {
                    hit++;
                    break;
                }
        sum += (double)hit / (double)k;
    }
    return nq ? sum / (double)nq : 0.0;
}

/* Copy the hits of res's query rq into out[0..k), -1 padded. */
static void take_ids(const iqdb_results *res, size_t rq, int32_t *out,
                     size_t k)
{
    const iqdb_hit *hits = iqdb_results_hits(res, rq);
    size_t cnt = iqdb_results_count(res, rq), i;

    for (i = 0; i < k; i++)
        out[i] = i < cnt && hits[i].id.kind == IQDB_ID_U64
                     ? (int32_t)hits[i].id.v.u64
                     : -1;
}

static void sysrun_init(sysrun *s)
{
    size_t i;

    memset(s, 0, sizeof(*s));
    for (i = 0; i < MAX_T; i++)
        s->build_s[i] = s->mem[i] = -1.0;
    for (i = 0; i < MAX_EF; i++)
        s->recall[i] = s->qps[i] = -1.0;
}

/* ------------------------------------------------------------------ */
/* iqdb                                                                 */

static iqdb *open_db(size_t dim, const char *index, const opts *o,
                     const char *encoding)
{
    iqdb_config *cfg = iqdb_config_new((uint32_t)dim, IQDB_METRIC_EUCLIDEAN);
    char m[32], efc[32], seed[32];
    iqdb *db = NULL;
    int rc;

    if (cfg == NULL) {
        fprintf(stderr, "%s: iqdb_config_new: out of memory\n", bench_prog);
        exit(1);
    }
    snprintf(m, sizeof(m), "%zu", o->m);
    snprintf(efc, sizeof(efc), "%zu", o->efc);
    snprintf(seed, sizeof(seed), "%llu", o->seed);
    rc = iqdb_config_set_index(cfg, index);
    if (rc == 0 && strcmp(index, "hnsw") == 0) {
        rc = iqdb_config_set_param(cfg, "m", m);
        if (rc == 0)
            rc = iqdb_config_set_param(cfg, "ef_construction", efc);
        if (rc == 0)
            rc = iqdb_config_set_param(cfg, "seed", seed);
        if (rc == 0 && encoding != NULL)
            rc = iqdb_config_set_param(cfg, "encoding", encoding);
    }
    if (rc != 0)
        bench_die_lib(NULL, rc, "iqdb_config_set_*");
    rc = iqdb_open_memory(cfg, &db);
    iqdb_config_free(cfg);
    if (rc != 0)
        bench_die_lib(NULL, rc, "iqdb_open_memory");
    return db;
}

static iqdb_record *make_records(const ds_matrix *base)
{
    iqdb_record *recs = bench_xcalloc(base->rows, sizeof(*recs));
    size_t i;

    for (i = 0; i < base->rows; i++) {
        recs[i].id = iqdb_id_u64(i);
        recs[i].vector = base->data + i * base->dim;
        recs[i].meta = NULL;
    }
    return recs;
}

static void fill(iqdb *db, const ds_matrix *base, const iqdb_record *recs)
{
    int rc = iqdb_upsert_batch(db, recs, base->rows, (uint32_t)base->dim);

    if (rc != 0)
        bench_die_lib(db, rc, "iqdb_upsert_batch");
    if (iqdb_count(db) != base->rows) {
        fprintf(stderr, "%s: iqdb_count is %zu after inserting %zu records\n",
                bench_prog, iqdb_count(db), base->rows);
        exit(1);
    }
}

/* The exact top-k of every query, from the flat index: the oracle. */
static int32_t *oracle(const ds_matrix *base, const ds_matrix *q,
                       const opts *o)
{
    iqdb_record *recs = make_records(base);
    iqdb *db = open_db(base->dim, "flat", o, NULL);
    int32_t *truth = bench_xcalloc(q->rows * o->k, sizeof(*truth));
    iqdb_results *res = NULL;
    double t0 = bench_now();
    size_t i;
    int rc;

    fill(db, base, recs);
    free(recs);
    bench_set_threads(o->threads[o->nthreads - 1]);
    rc = iqdb_search_batch(db, q->data, q->rows, (uint32_t)q->dim, o->k, NULL,
                           NULL, &res);
    if (rc != 0)
        bench_die_lib(db, rc, "iqdb_search_batch (flat oracle)");
    for (i = 0; i < q->rows; i++)
        take_ids(res, i, truth + i * o->k, o->k);
    iqdb_results_free(res);
    iqdb_close(db);
    printf("  oracle: exact top-%zu of %zu queries by the flat index in "
           "%.1f s\n",
           o->k, q->rows, bench_now() - t0);
    return truth;
}

/* Build an hnsw database over base on `threads` threads; records the
 * build time and memory growth in s at thread slot ti. */
static iqdb *build_iqdb(const ds_matrix *base, const opts *o,
                        const char *encoding, size_t ti, sysrun *s)
{
    iqdb_record *recs = make_records(base);
    double rss0, t0;
    iqdb *db;

    /* Give back what earlier databases freed, so that RSS growth counts
     * this one's memory and not reuse of the old one's. */
    malloc_trim(0);
    rss0 = rss_bytes();
    db = open_db(base->dim, "hnsw", o, encoding);
    bench_set_threads(o->threads[ti]);
    t0 = bench_now();
    fill(db, base, recs);
    s->build_s[ti] = bench_now() - t0;
    s->mem[ti] = rss_bytes() - rss0;
    free(recs);
    printf("  %-9s build on %d thread%s: %7.2f s, memory %.1f MiB\n",
           encoding ? "iqdb-bf16" : "iqdb", o->threads[ti],
           o->threads[ti] == 1 ? " " : "s", s->build_s[ti],
           s->mem[ti] / 1048576.0);
    fflush(stdout);
    return db;
}

/* The single-query loop at each ef on 1 thread. */
static void sweep_iqdb(iqdb *db, const ds_matrix *q, const int32_t *truth,
                       const opts *o, sysrun *s)
{
    iqdb_params *p = iqdb_params_new();
    int32_t *ids = bench_xcalloc(q->rows * o->k, sizeof(*ids));
    iqdb_results *res;
    size_t e, i;
    int rc;

    if (p == NULL) {
        fprintf(stderr, "%s: iqdb_params_new: out of memory\n", bench_prog);
        exit(1);
    }
    bench_set_threads(1);
    for (e = 0; e < o->nef; e++) {
        char ef[32];
        double t0;

        snprintf(ef, sizeof(ef), "%zu", o->ef[e]);
        rc = iqdb_params_set(p, "ef_search", ef);
        if (rc != 0)
            bench_die_lib(NULL, rc, "iqdb_params_set(ef_search)");
        for (i = 0; i < q->rows && i < WARMUP_QUERIES; i++) {
            rc = iqdb_search(db, q->data + i * q->dim, (uint32_t)q->dim,
                             o->k, NULL, p, &res);
            if (rc != 0)
                bench_die_lib(db, rc, "iqdb_search");
            iqdb_results_free(res);
        }
        /* The best of up to 5 timed passes, stopping once 0.3 s have
         * gone; the peers time the same way. */
        double best = 0.0, start = bench_now();
        for (int pass = 0; pass < 5 && (pass == 0 || bench_now() - start < 0.3);
             pass++) {
            t0 = bench_now();
            for (i = 0; i < q->rows; i++) {
                rc = iqdb_search(db, q->data + i * q->dim, (uint32_t)q->dim,
                                 o->k, NULL, p, &res);
                if (rc != 0)
                    bench_die_lib(db, rc, "iqdb_search");
                take_ids(res, 0, ids + i * o->k, o->k);
                iqdb_results_free(res);
            }
            double qps = (double)q->rows / (bench_now() - t0);
            if (qps > best)
                best = qps;
        }
        s->qps[e] = best;
        s->recall[e] = recall_of(ids, truth, q->rows, o->k);
    }
    s->ran = 1;
    free(ids);
    iqdb_params_free(p);
}

/* iqdb (float) on every thread count, sweeping the last build; then the
 * bf16 encoding, built on the last thread count only (to keep the run
 * short: its build does the same work plus the encoding). */
static void bench_iqdb(const ds_matrix *base, const ds_matrix *q,
                       const int32_t *truth, const opts *o, sysrun *fl,
                       sysrun *bf)
{
    size_t last = o->nthreads - 1, ti;
    iqdb *db;

    for (ti = 0; ti < o->nthreads; ti++) {
        db = build_iqdb(base, o, NULL, ti, fl);
        if (ti == last)
            sweep_iqdb(db, q, truth, o, fl);
        iqdb_close(db);
    }
    db = build_iqdb(base, o, "bf16", last, bf);
    sweep_iqdb(db, q, truth, o, bf);
    iqdb_close(db);
}

/* ------------------------------------------------------------------ */
/* The peers                                                            */

/* Where the peer sources live: --peer-dir, else the build's macro, else
 * peers/ beside this source file. */
static const char *peer_dir(const opts *o, char *buf, size_t len)
{
    const char *slash;

    if (o->peer_dir != NULL)
        return o->peer_dir;
#ifdef IQDB_BENCH_PEER_DIR
    (void)buf;
    (void)len;
    (void)slash;
    return IQDB_BENCH_PEER_DIR;
#else
    slash = strrchr(__FILE__, '/');
    if (slash != NULL &&
        bench_fmt(buf, len, "%.*s/peers", (int)(slash - __FILE__), __FILE__) == 0)
        return buf;
    return "bench/peers";
#endif
}

/* Make the temporary directory, compile hnswlib_peer.cpp into it and
 * check that python3 can import faiss. A missing peer gets a reason. */
static void peers_setup(const opts *o, peers *pe)
{
    char dirbuf[PATH_LEN], src[PATH_LEN], cmd[3 * PATH_LEN];
    const char *dir = peer_dir(o, dirbuf, sizeof(dirbuf));

    memset(pe, 0, sizeof(*pe));
    snprintf(pe->tmpdir, sizeof(pe->tmpdir), "/tmp/bench_hnsw.XXXXXX");
    if (mkdtemp(pe->tmpdir) == NULL) {
        perror("bench_hnsw: mkdtemp");
        exit(1);
    }
    if (strchr(dir, '\'') != NULL) {
        fprintf(stderr, "%s: peer directory '%s' has a quote\n", bench_prog, dir);
        exit(2);
    }
    if (bench_fmt(src, sizeof(src), "%s/hnswlib_peer.cpp", dir) != 0 ||
        !file_exists(src))
        (void)bench_fmt(pe->hnswlib_why, sizeof(pe->hnswlib_why),
                 "%s/hnswlib_peer.cpp not found (use --peer-dir)", dir);
    else if (!file_exists(HNSWLIB_HEADER))
        (void)bench_fmt(pe->hnswlib_why, sizeof(pe->hnswlib_why),
                 "%s missing: install libhnswlib-dev "
                 "(bench/install-peers.sh)",
                 HNSWLIB_HEADER);
    else {
        double t0 = bench_now();

        if (bench_fmt(pe->hnswlib_exe, sizeof(pe->hnswlib_exe), "%s/hnswlib_peer",
                pe->tmpdir) != 0 ||
            bench_fmt(cmd, sizeof(cmd),
                "c++ -O3 -march=native -fopenmp -o '%s' '%s' "
                ">'%s/cc.log' 2>&1",
                pe->hnswlib_exe, src, pe->tmpdir) != 0 ||
            system(cmd) != 0) {
            (void)bench_fmt(pe->hnswlib_why, sizeof(pe->hnswlib_why),
                     "compiling %s failed (c++ -O3 -march=native -fopenmp; "
                     "log in %s/cc.log)",
                     src, pe->tmpdir);
            pe->hnswlib_exe[0] = '\0';
        } else {
            printf("hnswlib peer: compiled %s in %.1f s\n", src,
                   bench_now() - t0);
        }
    }
    if (bench_fmt(pe->faiss_script, sizeof(pe->faiss_script), "%s/faiss_peer.py",
            dir) != 0 ||
        !file_exists(pe->faiss_script)) {
        (void)bench_fmt(pe->faiss_why, sizeof(pe->faiss_why),
                 "%s/faiss_peer.py not found (use --peer-dir)", dir);
        pe->faiss_script[0] = '\0';
    } else if (access(PYTHON, X_OK) != 0 ||
               system(PYTHON " -c 'import faiss' >/dev/null 2>&1") != 0) {
        (void)bench_fmt(pe->faiss_why, sizeof(pe->faiss_why),
                 "%s cannot import faiss: install python3-faiss "
                 "(bench/install-peers.sh)",
                 PYTHON);
        pe->faiss_script[0] = '\0';
    }
    if (pe->hnswlib_exe[0] == '\0')
        printf("hnswlib peer: skipped: %s\n", pe->hnswlib_why);
    if (pe->faiss_script[0] == '\0')
        printf("faiss peer: skipped: %s\n", pe->faiss_why);
}

static void peers_cleanup(const peers *pe)
{
    char cmd[PATH_LEN + 32];

    if (pe->tmpdir[0] != '\0' &&
        bench_fmt(cmd, sizeof(cmd), "rm -rf '%s'", pe->tmpdir) == 0 &&
        system(cmd) != 0)
        fprintf(stderr, "%s: could not remove %s\n", bench_prog, pe->tmpdir);
}

/* The value of key=VALUE among the whitespace-separated words of line. */
static const char *kv(const char *line, const char *key, char *out,
                      size_t len)
{
    size_t kl = strlen(key);
    const char *p = line;

    while (*p != '\0') {
        size_t w;

        while (*p == ' ' || *p == '\t')
            p++;
        w = strcspn(p, " \t\r\n");
        if (w > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            if (w - kl - 1 >= len)
                return NULL;
            memcpy(out, p + kl + 1, w - kl - 1);
            out[w - kl - 1] = '\0';
            return out;
        }
        if (w == 0)
            break;
        p += w;
    }
    return NULL;
}

static int parse_peer_line(const char *line, peer_out *po)
{
    char v[PATH_LEN], mode[32];

    if (strncmp(line, "build ", 6) == 0) {
        if (kv(line, "seconds", v, sizeof(v)) == NULL)
            return -1;
        po->build_s = strtod(v, NULL);
    } else if (strncmp(line, "memory ", 7) == 0) {
        if (kv(line, "bytes", v, sizeof(v)) == NULL)
            return -1;
        po->mem = strtod(v, NULL);
    } else if (strncmp(line, "search ", 7) == 0) {
        size_t i = po->nsearch;

        if (kv(line, "mode", mode, sizeof(mode)) == NULL)
            return -1;
        if (strcmp(mode, "single") != 0)
            return 0;
        if (i >= MAX_EF || kv(line, "ef", v, sizeof(v)) == NULL)
            return -1;
        po->ef[i] = strtoul(v, NULL, 10);
        if (kv(line, "qps", v, sizeof(v)) == NULL)
            return -1;
        po->qps[i] = strtod(v, NULL);
        if (kv(line, "ids", po->ids[i], sizeof(po->ids[i])) == NULL)
            return -1;
        po->nsearch++;
    } else {
        return -1;
    }
    return 0;
}

/* Run one peer command and parse what it printed; 0 or -1 (said why). */
static int run_peer(const char *name, const char *cmd, peer_out *po)
{
    char line[2 * PATH_LEN];
    FILE *f;
    int st;

    memset(po, 0, sizeof(*po));
    po->build_s = po->mem = -1.0;
    fflush(stdout);
    f = popen(cmd, "r");
    if (f == NULL) {
        perror("bench_hnsw: popen");
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL)
        if (parse_peer_line(line, po) != 0)
            fprintf(stderr, "%s: %s peer: unexpected line: %s", bench_prog, name,
                    line);
    st = pclose(f);
    if (st != 0 || po->build_s < 0 || po->mem < 0) {
        printf("  %s peer failed (status %d): %s\n", name, st, cmd);
        return -1;
    }
    return 0;
}

/* The ef list as text ("10,16,..."); only the first entry when `one`. */
static void ef_text(const opts *o, int one, char *buf, size_t len)
{
    size_t e, used = 0;

    buf[0] = '\0';
    for (e = 0; e < (one ? 1 : o->nef) && used < len; e++)
        used += (size_t)snprintf(buf + used, len - used, "%s%zu",
                                 e ? "," : "", o->ef[e]);
}

/* Score a peer's sweep: match each reported ef with ours, read its ids. */
static void score_peer(const peer_out *po, const int32_t *truth, size_t nq,
                       const opts *o, sysrun *s)
{
    char err[1024];
    size_t i, e, rows, dim;
    int32_t *ids;

    for (i = 0; i < po->nsearch; i++) {
        for (e = 0; e < o->nef && o->ef[e] != po->ef[i]; e++)
            ;
        if (e == o->nef)
            continue;
        if (ds_ivecs_read(po->ids[i], &ids, &rows, &dim, err, sizeof(err)) !=
            0) {
            fprintf(stderr, "%s: %s\n", bench_prog, err);
            exit(1);
        }
        if (rows != nq || dim != o->k) {
            fprintf(stderr, "%s: %s: %zu x %zu ids, expected %zu x %zu\n",
                    bench_prog, po->ids[i], rows, dim, nq, o->k);
            exit(1);
        }
        s->recall[e] = recall_of(ids, truth, nq, o->k);
        s->qps[e] = po->qps[i];
        s->ran = 1;
        free(ids);
    }
}

/* Run one peer on every thread count (the full ef sweep on the last, one
 * ef before that: those runs are for build time and memory). */
static void bench_peer(const char *name, const char *launcher,
                       const peers *pe, const int32_t *truth, size_t nq,
                       const opts *o, sysrun *s)
{
    char cmd[4 * PATH_LEN], efs[MAX_EF * 12];
    size_t ti;
    peer_out *po = bench_xcalloc(1, sizeof(*po));

    for (ti = 0; ti < o->nthreads; ti++) {
        int last = ti + 1 == o->nthreads;

        ef_text(o, !last, efs, sizeof(efs));
        if (bench_fmt(cmd, sizeof(cmd),
                "%s --base '%s/base.fvecs' --queries '%s/queries.fvecs' "
                "--k %zu --m %zu --ef-construction %zu --threads %d "
                "--ef %s --out '%s/%s' --metric l2 --seed %llu",
                launcher, pe->tmpdir, pe->tmpdir, o->k, o->m, o->efc,
                o->threads[ti], efs, pe->tmpdir, name, o->seed) != 0) {
            fprintf(stderr, "%s: peer command too long\n", bench_prog);
            exit(1);
        }
        if (run_peer(name, cmd, po) != 0) {
            (void)bench_fmt(s->why, sizeof(s->why), "the peer program failed");
            break;
        }
        s->build_s[ti] = po->build_s;
        s->mem[ti] = po->mem;
        printf("  %-9s build on %d thread%s: %7.2f s, memory %.1f MiB\n",
               name, o->threads[ti], o->threads[ti] == 1 ? " " : "s",
               po->build_s, po->mem / 1048576.0);
        if (last)
            score_peer(po, truth, nq, o, s);
    }
    free(po);
}

static void bench_peers(const ds_dataset *d, const int32_t *truth,
                        const opts *o, const peers *pe, sysrun *runs)
{
    char path[PATH_LEN], err[1024], launcher[PATH_LEN + 32];

    if (bench_fmt(path, sizeof(path), "%s/base.fvecs", pe->tmpdir) != 0 ||
        ds_fvecs_write(path, &d->base, err, sizeof(err)) != 0 ||
        bench_fmt(path, sizeof(path), "%s/queries.fvecs", pe->tmpdir) != 0 ||
        ds_fvecs_write(path, &d->queries, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: writing the peers' input: %s\n", bench_prog, err);
        exit(1);
    }
    if (pe->hnswlib_exe[0] != '\0') {
        snprintf(launcher, sizeof(launcher), "'%s'", pe->hnswlib_exe);
        bench_peer("hnswlib", launcher, pe, truth, d->queries.rows, o,
                   &runs[SYS_HNSWLIB]);
    } else {
        (void)bench_fmt(runs[SYS_HNSWLIB].why, sizeof(runs[SYS_HNSWLIB].why), "%s",
                 pe->hnswlib_why);
    }
    if (pe->faiss_script[0] != '\0') {
        snprintf(launcher, sizeof(launcher), PYTHON " '%s'",
                 pe->faiss_script);
        bench_peer("faiss", launcher, pe, truth, d->queries.rows, o,
                   &runs[SYS_FAISS]);
    } else {
        (void)bench_fmt(runs[SYS_FAISS].why, sizeof(runs[SYS_FAISS].why), "%s",
                 pe->faiss_why);
    }
}

/* ------------------------------------------------------------------ */
/* Reading the results                                                  */

/*
 * QPS at recall `target` on s's Pareto frontier (the sweep points no
 * other point beats on both recall and QPS), interpolated linearly in
 * recall between the two frontier points around the target. -1 when the
 * target is never reached; *lower = 1 when even the lowest-recall point
 * is above the target, so the figure is a lower bound.
 */
static double qps_at(const sysrun *s, size_t nef, double target, int *lower)
{
    size_t idx[MAX_EF], nf = 0, i, j;

    *lower = 0;
    if (!s->ran)
        return -1.0;
    for (i = 0; i < nef; i++) {
        int dominated = s->recall[i] < 0;

        for (j = 0; j < nef && !dominated; j++)
            if (j != i && s->recall[j] >= 0 &&
                s->recall[j] >= s->recall[i] && s->qps[j] >= s->qps[i] &&
                (s->recall[j] > s->recall[i] || s->qps[j] > s->qps[i] ||
                 j < i))
                dominated = 1;
        if (!dominated)
            idx[nf++] = i;
    }
    /* Ascending recall (insertion sort; a handful of points). */
    for (i = 1; i < nf; i++)
        for (j = i; j > 0 && s->recall[idx[j]] < s->recall[idx[j - 1]]; j--) {
            size_t t = idx[j];

            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    for (i = 0; i < nf && s->recall[idx[i]] < target; i++)
        ;
    if (i == nf)
        return -1.0;
    if (i == 0) {
        *lower = 1;
        return s->qps[idx[0]];
    }
    {
        double r0 = s->recall[idx[i - 1]], r1 = s->recall[idx[i]];
        double q0 = s->qps[idx[i - 1]], q1 = s->qps[idx[i]];

        return q0 + (q1 - q0) * (target - r0) / (r1 - r0);
    }
}

static void print_sweep(const sysrun *runs, const opts *o)
{
    size_t e, si;

    printf("\n  %5s", "ef");
    for (si = 0; si < NSYS; si++)
        printf(" | %-9s %7s %9s", sys_names[si], "recall", "QPS");
    printf("\n");
    for (e = 0; e < o->nef; e++) {
        printf("  %5zu", o->ef[e]);
        for (si = 0; si < NSYS; si++) {
            if (runs[si].recall[e] < 0)
                printf(" | %-9s %7s %9s", "", "-", "-");
            else
                printf(" | %-9s %7.4f %9.0f", "", runs[si].recall[e],
                       runs[si].qps[e]);
        }
        printf("\n");
    }
    for (si = 0; si < NSYS; si++)
        if (!runs[si].ran)
            printf("  %s: not measured: %s\n", sys_names[si],
                   runs[si].why[0] ? runs[si].why : "no figures");
}

static void ratio_str(char *buf, size_t len, double a, double b)
{
    if (a > 0 && b > 0)
        snprintf(buf, len, "%.2fx", a / b);
    else
        snprintf(buf, len, "n/a");
}

static void print_at_recall(const sysrun *runs, const opts *o)
{
    size_t t, si;

    printf("\n  QPS at recall@%zu (linear on each Pareto frontier; "
           ">= : lowest ef already above)\n",
           o->k);
    printf("  %6s", "recall");
    for (si = 0; si < NSYS; si++)
        printf(" %11s", sys_names[si]);
    printf(" %13s %13s %15s\n", "iqdb/hnswlib", "iqdb/faiss",
           "bf16/hnswlib");
    for (t = 0; t < NTARGETS; t++) {
        double q[NSYS];
        char r1[16], r2[16], r3[16];

        printf("  %6.2f", recall_targets[t]);
        for (si = 0; si < NSYS; si++) {
            int lower;
            char b[32];

            q[si] = qps_at(&runs[si], o->nef, recall_targets[t], &lower);
            if (q[si] < 0)
                snprintf(b, sizeof(b), "n/a");
            else
                snprintf(b, sizeof(b), "%s%.0f", lower ? ">=" : "", q[si]);
            printf(" %11s", b);
        }
        ratio_str(r1, sizeof(r1), q[SYS_IQDB], q[SYS_HNSWLIB]);
        ratio_str(r2, sizeof(r2), q[SYS_IQDB], q[SYS_FAISS]);
        ratio_str(r3, sizeof(r3), q[SYS_BF16], q[SYS_HNSWLIB]);
        printf(" %13s %13s %15s\n", r1, r2, r3);
    }
}

static void print_build_mem(const sysrun *runs, const opts *o, size_t n,
                            size_t dim)
{
    size_t ti, si, last = o->nthreads - 1;
    char r1[16], r2[16];

    printf("\n  build seconds (one add of all %zu vectors)\n  %-13s", n,
           "threads");
    for (ti = 0; ti < o->nthreads; ti++)
        printf(" %9d", o->threads[ti]);
    printf("\n");
    for (si = 0; si < NSYS; si++) {
        printf("  %-13s", sys_names[si]);
        for (ti = 0; ti < o->nthreads; ti++)
            if (runs[si].build_s[ti] < 0)
                printf(" %9s", "-");
            else
                printf(" %9.2f", runs[si].build_s[ti]);
        printf("\n");
    }
    printf("  %-13s", "iqdb/hnswlib");
    for (ti = 0; ti < o->nthreads; ti++) {
        ratio_str(r1, sizeof(r1), runs[SYS_IQDB].build_s[ti],
                  runs[SYS_HNSWLIB].build_s[ti]);
        printf(" %9s", r1);
    }
    printf("\n  %-13s", "iqdb/faiss");
    for (ti = 0; ti < o->nthreads; ti++) {
        ratio_str(r1, sizeof(r1), runs[SYS_IQDB].build_s[ti],
                  runs[SYS_FAISS].build_s[ti]);
        printf(" %9s", r1);
    }
    printf("\n\n  memory (VmRSS growth over the build; the raw float "
           "vectors alone are %zu bytes, %zu per vector)\n",
           n * dim * sizeof(float), dim * sizeof(float));
    printf("  %-13s %14s %14s %12s\n", "", "bytes", "bytes/vector",
           "vs hnswlib");
    for (si = 0; si < NSYS; si++) {
        double mem = runs[si].mem[last];

        if (mem < 0) {
            printf("  %-13s %14s %14s %12s\n", sys_names[si], "-", "-", "-");
            continue;
        }
        ratio_str(r2, sizeof(r2), mem, runs[SYS_HNSWLIB].mem[last]);
        printf("  %-13s %14.0f %14.1f %12s\n", sys_names[si], mem,
               mem / (double)n, r2);
    }
    if (last == 0)
        return;
    printf("  (the builds on %d threads; on %d thread%s:", o->threads[last],
           o->threads[0], o->threads[0] == 1 ? "" : "s");
    for (si = 0; si < NSYS; si++)
        if (runs[si].mem[0] >= 0)
            printf(" %s %.0f", sys_names[si], runs[si].mem[0]);
    printf(")\n");
}

/* The target lines; returns how many were missed. */
static int print_targets(const char *name, const sysrun *runs,
                         const opts *o)
{
    const sysrun *a = &runs[SYS_IQDB], *h = &runs[SYS_HNSWLIB];
    size_t ti, last = o->nthreads - 1;
    int lower, missed = 0, ok = 1, have = 1;
    double qa = qps_at(a, o->nef, TARGET_RECALL, &lower);
    double qh = qps_at(h, o->nef, TARGET_RECALL, &lower);
    double r;

    printf("\n  targets (%s, iqdb float vs hnswlib, same run):\n", name);
    if (qa > 0 && qh > 0) {
        r = qa / qh;
        missed += r < TARGET_QPS;
        printf("  target QPS@%.2f  >= %.1fx hnswlib: %.0f / %.0f = %.2fx "
               "%s\n",
               TARGET_RECALL, TARGET_QPS, qa, qh, r,
               r >= TARGET_QPS ? "ok" : "MISSED");
    } else {
        missed++;
        printf("  target QPS@%.2f  >= %.1fx hnswlib: n/a (%s) MISSED\n",
               TARGET_RECALL, TARGET_QPS,
               qa <= 0 ? "iqdb never reached it" : "no hnswlib figure");
    }
    printf("  target build     <= %.1fx hnswlib:", TARGET_BUILD);
    for (ti = 0; ti < o->nthreads; ti++) {
        if (a->build_s[ti] <= 0 || h->build_s[ti] <= 0) {
            have = 0;
            printf(" T=%d n/a", o->threads[ti]);
            continue;
        }
        r = a->build_s[ti] / h->build_s[ti];
        ok &= r <= TARGET_BUILD;
        printf(" T=%d %.2fx", o->threads[ti], r);
    }
    missed += !(ok && have);
    printf(" %s\n", ok && have ? "ok" : "MISSED");
    if (a->mem[last] > 0 && h->mem[last] > 0) {
        r = a->mem[last] / h->mem[last];
        missed += r > TARGET_MEM;
        printf("  target memory    <= %.1fx hnswlib: %.0f / %.0f = %.2fx "
               "%s\n",
               TARGET_MEM, a->mem[last], h->mem[last], r,
               r <= TARGET_MEM ? "ok" : "MISSED");
    } else {
        missed++;
        printf("  target memory    <= %.1fx hnswlib: n/a MISSED\n",
               TARGET_MEM);
    }
    return missed;
}

static void write_csv(FILE *f, const char *name, const sysrun *runs,
                      const opts *o)
{
    size_t si, e, ti;

    for (si = 0; si < NSYS; si++) {
        for (e = 0; e < o->nef; e++)
            if (runs[si].recall[e] >= 0)
                fprintf(f, "%s,%s,search,1,%zu,%.6f,%.3f,,\n", name,
                        sys_names[si], o->ef[e], runs[si].recall[e],
                        runs[si].qps[e]);
        for (ti = 0; ti < o->nthreads; ti++)
            if (runs[si].build_s[ti] >= 0)
                fprintf(f, "%s,%s,build,%d,,,,%.4f,%.0f\n", name,
                        sys_names[si], o->threads[ti], runs[si].build_s[ti],
                        runs[si].mem[ti]);
    }
    fflush(f);
}

/* ------------------------------------------------------------------ */
/* One data set                                                         */

static void bench_filtered(const ds_dataset *d, const opts *o);

static int bench_dataset(const ds_dataset *d, const opts *o, const peers *pe,
                         FILE *csv)
{
    sysrun runs[NSYS];
    int32_t *truth;
    size_t si;
    int missed;

    printf("\n== %s: %zu base x %zu, %zu queries, k=%zu, L2; m=%zu "
           "ef_construction=%zu seed=%llu ==\n",
           d->name, d->base.rows, d->base.dim, d->queries.rows, o->k, o->m,
           o->efc, o->seed);
    fflush(stdout);
    for (si = 0; si < NSYS; si++)
        sysrun_init(&runs[si]);
    truth = oracle(&d->base, &d->queries, o);
    bench_iqdb(&d->base, &d->queries, truth, o, &runs[SYS_IQDB],
               &runs[SYS_BF16]);
    if (o->peers)
        bench_peers(d, truth, o, pe, runs);
    else
        for (si = SYS_HNSWLIB; si < NSYS; si++)
            (void)bench_fmt(runs[si].why, sizeof(runs[si].why), "--no-peers");
    print_sweep(runs, o);
    print_at_recall(runs, o);
    print_build_mem(runs, o, d->base.rows, d->base.dim);
    missed = print_targets(d->name, runs, o);
    if (csv != NULL)
        write_csv(csv, d->name, runs, o);
    if (o->filtered)
        bench_filtered(d, o);
    free(truth);
    fflush(stdout);
    return missed;
}

/* ------------------------------------------------------------------ */
/* Filtered search and deletes (iqdb)                                    */

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Recall and single-thread QPS of hn against fl, both under filter f
 * (NULL: none), at the default ef_search. */
static double filtered_pass(iqdb *hn, iqdb *fl, const ds_matrix *q,
                            const iqdb_filter *f, const opts *o,
                            double *qps)
{
    size_t nq = q->rows, k = o->k, i;
    int32_t *truth = bench_xcalloc(nq * k, sizeof(*truth));
    int32_t *got = bench_xcalloc(nq * k, sizeof(*got));
    iqdb_results *res = NULL;
    double t0, r;
    int rc;

    bench_set_threads(o->threads[o->nthreads - 1]);
    rc = iqdb_search_batch(fl, q->data, nq, (uint32_t)q->dim, k, f, NULL,
                           &res);
    if (rc != 0)
        bench_die_lib(fl, rc, "iqdb_search_batch (filtered oracle)");
    for (i = 0; i < nq; i++)
        take_ids(res, i, truth + i * k, k);
    iqdb_results_free(res);
    bench_set_threads(1);
    t0 = bench_now();
    for (i = 0; i < nq; i++) {
        rc = iqdb_search(hn, q->data + i * q->dim, (uint32_t)q->dim, k, f,
                         NULL, &res);
        if (rc != 0)
            bench_die_lib(hn, rc, "iqdb_search (filtered)");
        take_ids(res, 0, got + i * k, k);
        iqdb_results_free(res);
    }
    *qps = (double)nq / (bench_now() - t0);
    r = recall_of(got, truth, nq, k);
    free(truth);
    free(got);
    return r;
}

static void bench_filtered(const ds_dataset *d, const opts *o)
{
    static const int64_t below[] = {500, 100, 10, 1};
    size_t n = d->base.rows, i, j, deleted = 0;
    iqdb_record *recs = make_records(&d->base);
    iqdb *hn, *fl;
    double t0, qps, r;

    printf("\n  filtered search and deletes (iqdb, default ef_search; "
           "records carry b = hash(id) mod 1000):\n");
    for (i = 0; i < n; i++) {
        iqdb_meta *m = iqdb_meta_new();
        if (m == NULL || iqdb_meta_set(m, "b", iqdb_value_int((int64_t)(
                                                   mix64(i) % 1000))) != 0) {
            fprintf(stderr, "%s: out of memory for metadata\n", bench_prog);
            exit(1);
        }
        recs[i].meta = m;
    }
    hn = open_db(d->base.dim, "hnsw", o, NULL);
    fl = open_db(d->base.dim, "flat", o, NULL);
    bench_set_threads(o->threads[o->nthreads - 1]);
    fill(hn, &d->base, recs);
    fill(fl, &d->base, recs);
    for (i = 0; i < n; i++)
        iqdb_meta_free((iqdb_meta *)recs[i].meta);
    free(recs);
    for (j = 0; j < sizeof(below) / sizeof(below[0]); j++) {
        iqdb_filter *f = iqdb_filter_lt("b", iqdb_value_int(below[j]));
        if (f == NULL) {
            fprintf(stderr, "%s: out of memory for a filter\n", bench_prog);
            exit(1);
        }
        r = filtered_pass(hn, fl, &d->queries, f, o, &qps);
        printf("    filter b < %-3lld (selectivity %5.1f%%): recall@%zu "
               "%.4f, %8.0f QPS%s\n",
               (long long)below[j], (double)below[j] / 10.0, o->k, r, qps,
               r >= 0.95 ? "" : "   (below 0.95)");
        iqdb_filter_free(f);
    }
    r = filtered_pass(hn, fl, &d->queries, NULL, o, &qps);
    printf("    no filter:                         recall@%zu %.4f, %8.0f "
           "QPS\n", o->k, r, qps);
    t0 = bench_now();
    for (i = 0; i < n; i++) {
        int rc;
        if (mix64(i ^ 0x5bd1e995u) & 1)
            continue;
        if ((rc = iqdb_delete(hn, iqdb_id_u64(i), NULL)) != 0)
            bench_die_lib(hn, rc, "iqdb_delete");
        if ((rc = iqdb_delete(fl, iqdb_id_u64(i), NULL)) != 0)
            bench_die_lib(fl, rc, "iqdb_delete (flat)");
        deleted++;
    }
    t0 = bench_now() - t0;
    r = filtered_pass(hn, fl, &d->queries, NULL, o, &qps);
    printf("    after deleting %zu of %zu at random (one by one, %.1f s "
           "with the flat copy's): recall@%zu %.4f, %8.0f QPS\n",
           deleted, n, t0, o->k, r, qps);
    fflush(stdout);
    iqdb_close(hn);
    iqdb_close(fl);
}

/* ------------------------------------------------------------------ */
/* Options and main                                                     */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [options]\n"
            "  --dataset fmnist|generated|both  (default both)\n"
            "  --n N               base vectors (default: all of "
            "Fashion-MNIST, 200000 generated)\n"
            "  --nq N              queries (default 1000)\n"
            "  --k K               neighbours scored (default 10)\n"
            "  --ef LIST           ef sweep (default "
            "10,16,24,32,48,64,96,128,192,256,384,512)\n"
            "  --threads LIST      build thread counts (default 1,2)\n"
            "  --m M               (default 16)\n"
            "  --ef-construction E (default 200)\n"
            "  --seed S            level seed for iqdb and hnswlib "
            "(default 42)\n"
            "  --no-peers          iqdb only\n"
            "  --no-filtered       skip filtered recall and recall after "
            "deleting half\n"
            "  --peer-dir DIR      where hnswlib_peer.cpp and "
            "faiss_peer.py are\n"
            "  --fmnist-dir DIR    (default " DS_FMNIST_DIR ")\n"
            "  --csv FILE          also write the figures as CSV\n",
            bench_prog);
}

static size_t parse_size(const char *opt, const char *v, size_t lo,
                         size_t hi)
{
    char *end;
    unsigned long long x = strtoull(v, &end, 10);

    if (end == v || *end != '\0' || v[0] == '-' || x < lo || x > hi) {
        fprintf(stderr, "%s: %s wants an integer in [%zu, %zu], not '%s'\n",
                bench_prog, opt, lo, hi, v);
        exit(2);
    }
    return (size_t)x;
}

/* A comma-separated list of integers in [lo, hi]; returns the count. */
static size_t parse_list(const char *opt, const char *v, size_t lo,
                         size_t hi, size_t *out, size_t max)
{
    char item[32];
    size_t n = 0;

    while (*v != '\0') {
        size_t w = strcspn(v, ",");

        if (w == 0 || w >= sizeof(item) || n == max) {
            fprintf(stderr, "%s: bad %s list (at most %zu items)\n", bench_prog,
                    opt, max);
            exit(2);
        }
        memcpy(item, v, w);
        item[w] = '\0';
        out[n++] = parse_size(opt, item, lo, hi);
        v += w + (v[w] == ',');
    }
    if (n == 0) {
        fprintf(stderr, "%s: empty %s list\n", bench_prog, opt);
        exit(2);
    }
    return n;
}

static void parse_opts(int argc, char **argv, opts *o)
{
    static const size_t def_ef[] = {10, 16, 24, 32, 48, 64, 96, 128, 192,
                                    256, 384, 512};
    size_t tmp[MAX_T], i;
    int a;

    memset(o, 0, sizeof(*o));
    o->want_fmnist = o->want_generated = 1;
    o->filtered = 1;
    o->nq = 1000;
    o->k = 10;
    o->m = 16;
    o->efc = 200;
    o->seed = 42;
    o->nef = sizeof(def_ef) / sizeof(def_ef[0]);
    memcpy(o->ef, def_ef, sizeof(def_ef));
    o->threads[0] = 1;
    o->threads[1] = 2;
    o->nthreads = 2;
    o->peers = 1;
    o->fmnist_dir = DS_FMNIST_DIR;
    for (a = 1; a < argc; a++) {
        const char *s = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
        int takes = strcmp(s, "--no-peers") != 0 &&
                    strcmp(s, "--no-filtered") != 0 &&
                    strcmp(s, "--help") != 0 &&
                    strcmp(s, "-h") != 0;

        if (takes && v == NULL) {
            fprintf(stderr, "%s: %s needs a value\n", bench_prog, s);
            exit(2);
        }
        if (strcmp(s, "--dataset") == 0) {
            o->want_fmnist = strcmp(v, "fmnist") == 0 ||
                             strcmp(v, "both") == 0;
            o->want_generated = strcmp(v, "generated") == 0 ||
                                strcmp(v, "both") == 0;
            if (!o->want_fmnist && !o->want_generated) {
                fprintf(stderr, "%s: --dataset wants fmnist, generated or "
                        "both, not '%s'\n", bench_prog, v);
                exit(2);
            }
        } else if (strcmp(s, "--n") == 0) {
            o->n = parse_size(s, v, 1, (size_t)INT32_MAX);
        } else if (strcmp(s, "--nq") == 0) {
            o->nq = parse_size(s, v, 1, 1000000);
        } else if (strcmp(s, "--k") == 0) {
            o->k = parse_size(s, v, 1, 1024);
        } else if (strcmp(s, "--m") == 0) {
            o->m = parse_size(s, v, 2, 256);
        } else if (strcmp(s, "--ef-construction") == 0) {
            o->efc = parse_size(s, v, 1, 1000000);
        } else if (strcmp(s, "--seed") == 0) {
            o->seed = parse_size(s, v, 0, SIZE_MAX);
        } else if (strcmp(s, "--ef") == 0) {
            o->nef = parse_list(s, v, 1, 1000000, o->ef, MAX_EF);
        } else if (strcmp(s, "--threads") == 0) {
            o->nthreads = parse_list(s, v, 1, 1024, tmp, MAX_T);
            for (i = 0; i < o->nthreads; i++)
                o->threads[i] = (int)tmp[i];
        } else if (strcmp(s, "--no-peers") == 0) {
            o->peers = 0;
        } else if (strcmp(s, "--no-filtered") == 0) {
            o->filtered = 0;
        } else if (strcmp(s, "--peer-dir") == 0) {
            o->peer_dir = v;
        } else if (strcmp(s, "--fmnist-dir") == 0) {
            o->fmnist_dir = v;
        } else if (strcmp(s, "--csv") == 0) {
            o->csv = v;
        } else if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "%s: unknown option '%s'\n", bench_prog, s);
            usage(stderr);
            exit(2);
        }
        if (takes)
            a++;
    }
}

static int load_fmnist(const opts *o, ds_dataset *d)
{
    char err[1024];

    if (!ds_fmnist_present(o->fmnist_dir)) {
        printf("\nFashion-MNIST not found in %s (Debian package "
               "dataset-fashion-mnist): skipped\n",
               o->fmnist_dir);
        return -1;
    }
    if (ds_fmnist_load(o->fmnist_dir, d, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", bench_prog, err);
        exit(1);
    }
    snprintf(d->name, sizeof(d->name), "fashion-mnist");
    if (o->n > 0 && o->n < d->base.rows)
        ds_matrix_truncate(&d->base, o->n);
    ds_matrix_truncate(&d->queries, o->nq);
    return 0;
}

static void load_generated(const opts *o, ds_dataset *d)
{
    char err[1024];
    ds_gen_spec spec;

    ds_gen_spec_default(&spec);
    if (o->n > 0)
        spec.n = o->n;
    spec.nq = o->nq;
    printf("\ngenerating %zu + %zu vectors of dimension %zu (%zu clusters, "
           "seed %#llx)\n",
           spec.n, spec.nq, spec.dim, spec.clusters,
           (unsigned long long)spec.seed);
    fflush(stdout);
    if (ds_gen_clustered(&spec, d, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", bench_prog, err);
        exit(1);
    }
    snprintf(d->name, sizeof(d->name), "generated");
}

int main(int argc, char **argv)
{
    FILE *csv = NULL;
    ds_dataset d;
    peers pe;
    opts o;
    int missed = 0;
#ifdef IQDB_BUILD_PLUGINS
    /* Built, not installed: find the plugins of this build tree first. */
    iqdb_plugin_add_dir(IQDB_BUILD_PLUGINS);
#endif

    parse_opts(argc, argv, &o);
    printf("bench_hnsw: iqdb %s; %ld CPUs online", iqdb_version(),
           sysconf(_SC_NPROCESSORS_ONLN));
#ifdef _OPENMP
    printf(", OpenMP max threads %d", omp_get_max_threads());
#endif
    printf("\n");
    memset(&pe, 0, sizeof(pe));
    if (o.peers)
        peers_setup(&o, &pe);
    if (o.csv != NULL) {
        csv = fopen(o.csv, "w");
        if (csv == NULL) {
            perror(o.csv);
            return 1;
        }
        fprintf(csv, "dataset,index,kind,threads,ef,recall,qps,build_s,"
                     "memory_bytes\n");
    }
    if (o.want_fmnist && load_fmnist(&o, &d) == 0) {
        missed += bench_dataset(&d, &o, &pe, csv);
        ds_dataset_free(&d);
    }
    if (o.want_generated) {
        load_generated(&o, &d);
        missed += bench_dataset(&d, &o, &pe, csv);
        ds_dataset_free(&d);
    }
    if (csv != NULL && fclose(csv) != 0)
        perror(o.csv);
    if (o.peers)
        peers_cleanup(&pe);
    printf("\n%d target%s missed (reported, not failed)\n", missed,
           missed == 1 ? "" : "s");
    return 0;
}
