/*
 * bench/bench_flat.c - measures the flat (exact) index: single-query QPS
 * on 1 thread, batch QPS on 2 threads, and the scan rate of the single-
 * query loop beside a memory bandwidth the program measures itself, on
 * Fashion-MNIST and on generated clustered data. Where /usr/bin/python3
 * can import faiss, FAISS IndexFlatL2 runs on the same vectors in the same
 * run (bench/faiss_flat.py) and the table shows ours/FAISS ratios against
 * the targets. Correctness is checked on the side: our top-k against a
 * double-precision oracle, against FAISS, and batch against single.
 *
 *   bench_flat [--dataset fashion-mnist|generated|all] [--queries N]
 *              [--n N] [--dim D] [--k K] [--threads T] [--no-peers]
 *              [--peer-blas-as-is] [--fmnist-dir DIR] [--faiss-script P]
 *
 * Exit status: 1 on a library error or wrong results, 2 on bad options;
 * a missed performance target is reported, not failed (the machine may
 * be shared, and bench/ measures rather than tests).
 */
#define _POSIX_C_SOURCE 200809L

#include <iqdb/iqdb.h>

#include "benchutil.h"
#include "dataset.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#define PYTHON "/usr/bin/python3"
#define INSERT_BATCH 10000
#define WARMUP_QUERIES 10
#define ORACLE_QUERIES 20
/* The batch is short and the machine may be shared: the best of at least
 * BATCH_MIN_RUNS and at most BATCH_MAX_RUNS runs, as many as fit in
 * BATCH_BUDGET_S, so that one run likely finds both cores free.
 * faiss_flat.py applies the same rule. */
#define BATCH_MIN_RUNS 3
#define BATCH_MAX_RUNS 10
#define BATCH_BUDGET_S 10.0
/* Streaming-read buffer: four times the 260 MiB L3 some hosts report,
 * so the figure is DRAM bandwidth, not cache. Halved until it allocates. */
#define BW_BYTES_MAX ((size_t)1 << 30)
#define BW_RUNS 10
/* Two distances count as a tie when they agree to this relative error:
 * float kernels (ours, FAISS's |x|^2 + |y|^2 - 2xy) may order such pairs
 * either way. */
#define TIE_RTOL 1e-5

/* Targets from the issue. */
#define TARGET_SINGLE 1.0 /* ours/FAISS single-query QPS, at least */
#define TARGET_BATCH 0.8  /* ours/FAISS batch QPS, at least */
#define TARGET_SCAN 1.3   /* bandwidth / scan rate, at most */

typedef struct opts {
    int want_fmnist;
    int want_generated;
    size_t nq;
    size_t n;
    size_t dim;
    size_t k;
    int batch_threads;
    int peers;
    int peer_blas_as_is;
    const char *fmnist_dir;
    const char *faiss_script;
} opts;

/* Top-k lists of nq queries: row q is ids[q*k .. q*k+k). */
typedef struct topk {
    int64_t *ids; /* -1 where fewer than k hits came back */
    float *dist;
    size_t nq;
    size_t k;
} topk;

/* How two top-k lists of one query compare. */
typedef struct agreement {
    size_t queries; /* compared */
    size_t same;    /* identical id sets */
    size_t ties;    /* differ only among (near-)equal distances */
    size_t wrong;   /* differ for real */
    double recall;  /* mean |ours & reference| / k */
} agreement;

/* Everything measured on one data set. */
typedef struct report {
    char name[64];
    size_t n, dim, nq, k;
    int threads; /* batch threads */
    double insert_s;
    double bw_big, bw_same; /* GB/s: big buffer, base-sized buffer */
    size_t bw_big_bytes;
    double single_qps, single_cpu; /* cpu: CPU seconds per wall second */
    double batch_qps, batch_cpu;
    double scan_gbs;
    double max_dist_err;
    size_t order_errors; /* not ascending, or ties not in insertion order */
    agreement oracle, batch_vs_single, peer_agree;
    int have_peer;
    double peer_single_qps, peer_batch_qps;
    double peer_single_cpu, peer_batch_cpu; /* -1 when not reported */
    char peer_why[256]; /* why there is no peer figure */
    char peer_version[32];
    char peer_build[128];
    char blas[1024];
    char blas_note[512];
} report;

const char *bench_prog = "bench_flat";

/* ------------------------------------------------------------------ */
/* Small utilities                                                      */

static double cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static void topk_init(topk *t, size_t nq, size_t k)
{
    t->ids = bench_xcalloc(nq * k, sizeof(*t->ids));
    t->dist = bench_xcalloc(nq * k, sizeof(*t->dist));
    t->nq = nq;
    t->k = k;
}

static void topk_free(topk *t)
{
    free(t->ids);
    free(t->dist);
    memset(t, 0, sizeof(*t));
}

/* Copy the hits of res's query rq into row q of t. */
static void topk_take(topk *t, size_t q, const iqdb_results *res, size_t rq)
{
    const iqdb_hit *hits = iqdb_results_hits(res, rq);
    size_t cnt = iqdb_results_count(res, rq), i;

    for (i = 0; i < t->k; i++) {
        int ok = i < cnt && hits[i].id.kind == IQDB_ID_U64;

        t->ids[q * t->k + i] = ok ? (int64_t)hits[i].id.v.u64 : -1;
        t->dist[q * t->k + i] = ok ? hits[i].distance : NAN;
    }
}

static double l2sq(const float *a, const float *b, size_t dim)
{
    double s = 0.0;
    size_t j;

    for (j = 0; j < dim; j++) {
        double d = (double)a[j] - (double)b[j];

        s += d * d;
    }
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* ------------------------------------------------------------------ */
/* Memory bandwidth                                                     */

/*
 * One streaming pass over buf. The loads are as wide as the CPU allows,
 * like the library's own kernels: with 8-byte loads the out-of-order
 * window covers 8x fewer cache lines, fewer misses are in flight, and a
 * single thread reads DRAM measurably slower than a SIMD scan does. Four
 * independent sums keep the adds off the critical path.
 */
static uint64_t read_pass_scalar(const uint64_t *buf, size_t words)
{
    uint64_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i;

    for (i = 0; i + 8 <= words; i += 8) {
        s[0] += buf[i];
        s[1] += buf[i + 1];
        s[2] += buf[i + 2];
        s[3] += buf[i + 3];
        s[4] += buf[i + 4];
        s[5] += buf[i + 5];
        s[6] += buf[i + 6];
        s[7] += buf[i + 7];
    }
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

#if defined(__x86_64__) && defined(__GNUC__)
/* words is a multiple of 32 and buf 64-byte aligned (measure_bw). */
__attribute__((target("avx512f"))) static uint64_t
read_pass_avx512(const uint64_t *buf, size_t words)
{
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    uint64_t out[8];
    size_t i;

    for (i = 0; i + 32 <= words; i += 32) {
        a = _mm512_add_epi64(a, _mm512_load_si512((const void *)(buf + i)));
        b = _mm512_add_epi64(b,
                             _mm512_load_si512((const void *)(buf + i + 8)));
        c = _mm512_add_epi64(c,
                             _mm512_load_si512((const void *)(buf + i + 16)));
        d = _mm512_add_epi64(d,
                             _mm512_load_si512((const void *)(buf + i + 24)));
    }
    _mm512_storeu_si512((void *)out,
                        _mm512_add_epi64(_mm512_add_epi64(a, b),
                                         _mm512_add_epi64(c, d)));
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] +
           out[7];
}

__attribute__((target("avx2"))) static uint64_t
read_pass_avx2(const uint64_t *buf, size_t words)
{
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    uint64_t out[4];
    size_t i;

    for (i = 0; i + 16 <= words; i += 16) {
        a = _mm256_add_epi64(a, _mm256_load_si256((const void *)(buf + i)));
        b = _mm256_add_epi64(b,
                             _mm256_load_si256((const void *)(buf + i + 4)));
        c = _mm256_add_epi64(c,
                             _mm256_load_si256((const void *)(buf + i + 8)));
        d = _mm256_add_epi64(d,
                             _mm256_load_si256((const void *)(buf + i + 12)));
    }
    _mm256_storeu_si256((void *)out,
                        _mm256_add_epi64(_mm256_add_epi64(a, b),
                                         _mm256_add_epi64(c, d)));
    return out[0] + out[1] + out[2] + out[3];
}
#endif

typedef uint64_t (*read_pass_fn)(const uint64_t *buf, size_t words);

/* The widest read loop this CPU runs, and its name for the report. */
static read_pass_fn pick_read_pass(const char **name)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        *name = "AVX-512 loads";
        return read_pass_avx512;
    }
    if (__builtin_cpu_supports("avx2")) {
        *name = "AVX2 loads";
        return read_pass_avx2;
    }
#endif
    *name = "8-byte loads";
    return read_pass_scalar;
}

/* Best-of-BW_RUNS 1-thread read bandwidth in GB/s over `bytes` (halved
 * until the buffer can be allocated); *used gets the size measured. */
static double measure_bw(size_t bytes, size_t *used)
{
    static volatile uint64_t sink;
    const char *how;
    read_pass_fn read_pass = pick_read_pass(&how);

    (void)how;
    uint64_t *buf = NULL;
    double best = 0.0;
    size_t words, i;
    int run;

    /* Whole 256-byte steps for the unrolled SIMD loops. */
    bytes &= ~(size_t)255;
    while (bytes >= ((size_t)1 << 20) &&
           (buf = aligned_alloc(64, bytes)) == NULL)
        bytes /= 2;
    if (buf == NULL)
        return 0.0;
    words = bytes / sizeof(uint64_t);
    /* Writing every word faults the pages in before the timing. */
    for (i = 0; i < words; i++)
        buf[i] = i;
    for (run = 0; run < BW_RUNS; run++) {
        double t0 = bench_now(), dt;

        sink += read_pass(buf, words);
        dt = bench_now() - t0;
        if (dt > 0 && (double)bytes / dt > best)
            best = (double)bytes / dt;
    }
    free(buf);
    if (used != NULL)
        *used = bytes;
    return best / 1e9;
}

/* ------------------------------------------------------------------ */
/* Correctness                                                          */

/*
 * Compare our list `a` with a reference `b` for one query. Identical id
 * sets are "same"; otherwise both lists' exact distances (double) are
 * sorted and compared rank by rank: equal within TIE_RTOL means the lists
 * differ only by which of several equidistant vectors made the cut.
 */
static void agree_one(const ds_matrix *base, const float *query,
                      const int64_t *a, const int64_t *b, size_t k,
                      agreement *ag)
{
    double da[64], db[64];
    size_t i, j, overlap = 0;
    int valid = 1;

    for (i = 0; i < k; i++)
        for (j = 0; j < k; j++)
            if (a[i] >= 0 && a[i] == b[j]) {
                overlap++;
                break;
            }
    ag->queries++;
    ag->recall += (double)overlap / (double)k;
    if (overlap == k) {
        ag->same++;
        return;
    }
    for (i = 0; i < k && i < 64; i++) {
        if (a[i] < 0 || (size_t)a[i] >= base->rows || b[i] < 0 ||
            (size_t)b[i] >= base->rows) {
            valid = 0;
            break;
        }
        da[i] = l2sq(query, base->data + (size_t)a[i] * base->dim,
                     base->dim);
        db[i] = l2sq(query, base->data + (size_t)b[i] * base->dim,
                     base->dim);
    }
    if (valid && k <= 64) {
        qsort(da, k, sizeof(double), cmp_double);
        qsort(db, k, sizeof(double), cmp_double);
        for (i = 0; i < k; i++)
            if (fabs(da[i] - db[i]) > TIE_RTOL * fmax(da[i], db[i]))
                break;
        if (i == k) {
            ag->ties++;
            return;
        }
    }
    ag->wrong++;
}

static void agree_finish(agreement *ag)
{
    if (ag->queries > 0)
        ag->recall /= (double)ag->queries;
}

/* Exact top-k of one query in double precision; on equal distances the
 * lower index (inserted first) wins, as the API promises. */
static void oracle_topk(const ds_matrix *base, const float *query, size_t k,
                        int64_t *ids)
{
    double best[64];
    size_t filled = 0, i;

    for (i = 0; i < base->rows; i++) {
        double d = l2sq(query, base->data + i * base->dim, base->dim);
        size_t pos;

        if (filled == k && d >= best[k - 1])
            continue;
        pos = filled < k ? filled++ : k - 1;
        while (pos > 0 && best[pos - 1] > d) {
            best[pos] = best[pos - 1];
            ids[pos] = ids[pos - 1];
            pos--;
        }
        best[pos] = d;
        ids[pos] = (int64_t)i;
    }
    for (i = filled; i < k; i++)
        ids[i] = -1;
}

/* Check every returned distance against the exact one, and the order:
 * ascending, equal distances in insertion (= id) order. */
static void check_hits(const ds_matrix *base, const ds_matrix *q,
                       const topk *t, report *r)
{
    size_t qi, i;

    for (qi = 0; qi < t->nq; qi++) {
        const float *query = q->data + qi * q->dim;
        const int64_t *ids = t->ids + qi * t->k;
        const float *dist = t->dist + qi * t->k;

        for (i = 0; i < t->k; i++) {
            double exact, err;

            if (ids[i] < 0 || (size_t)ids[i] >= base->rows) {
                r->order_errors++;
                continue;
            }
            exact = sqrt(l2sq(query, base->data + (size_t)ids[i] * base->dim,
                              base->dim));
            err = fabs((double)dist[i] - exact) / fmax(exact, 1e-3);
            if (!(err <= r->max_dist_err))
                r->max_dist_err = err;
            if (i > 0 && (dist[i] < dist[i - 1] ||
                          (dist[i] == dist[i - 1] && ids[i] < ids[i - 1])))
                r->order_errors++;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Our side                                                             */

static iqdb *open_and_fill(const ds_matrix *base, report *r)
{
    iqdb_config *cfg = iqdb_config_new((uint32_t)base->dim,
                                       IQDB_METRIC_EUCLIDEAN);
    iqdb_record *recs;
    iqdb *db = NULL;
    double t0;
    size_t i;
    int rc;

    if (cfg == NULL) {
        fprintf(stderr, "%s: iqdb_config_new: out of memory\n", bench_prog);
        exit(1);
    }
    rc = iqdb_config_set_index(cfg, "flat");
    if (rc != 0)
        bench_die_lib(NULL, rc, "iqdb_config_set_index(\"flat\")");
    rc = iqdb_open_memory(cfg, &db);
    iqdb_config_free(cfg);
    if (rc != 0)
        bench_die_lib(NULL, rc, "iqdb_open_memory");
    recs = bench_xcalloc(INSERT_BATCH, sizeof(*recs));
    t0 = bench_now();
    for (i = 0; i < base->rows; i += INSERT_BATCH) {
        size_t m = base->rows - i < INSERT_BATCH ? base->rows - i
                                                 : INSERT_BATCH;
        size_t j;

        for (j = 0; j < m; j++) {
            recs[j].id = iqdb_id_u64(i + j);
            recs[j].vector = base->data + (i + j) * base->dim;
            recs[j].meta = NULL;
        }
        rc = iqdb_upsert_batch(db, recs, m, (uint32_t)base->dim);
        if (rc != 0)
            bench_die_lib(db, rc, "iqdb_upsert_batch");
    }
    r->insert_s = bench_now() - t0;
    free(recs);
    if (iqdb_count(db) != base->rows) {
        fprintf(stderr, "%s: iqdb_count is %zu after inserting %zu records\n",
                bench_prog, iqdb_count(db), base->rows);
        exit(1);
    }
    return db;
}

static void search_one(iqdb *db, const ds_matrix *q, size_t qi, size_t k,
                       topk *out)
{
    iqdb_results *res = NULL;
    int rc = iqdb_search(db, q->data + qi * q->dim, (uint32_t)q->dim, k,
                         NULL, NULL, &res);

    if (rc != 0)
        bench_die_lib(db, rc, "iqdb_search");
    if (out != NULL)
        topk_take(out, qi, res, 0);
    iqdb_results_free(res);
}

/* The single-query loop, 1 thread; returns QPS. */
static double run_single(iqdb *db, const ds_matrix *q, size_t k, topk *out,
                         double *cpu)
{
    double t0, c0, dt;
    size_t i;

    bench_set_threads(1);
    for (i = 0; i < q->rows && i < WARMUP_QUERIES; i++)
        search_one(db, q, i, k, NULL);
    c0 = cpu_s();
    t0 = bench_now();
    for (i = 0; i < q->rows; i++)
        search_one(db, q, i, k, out);
    dt = bench_now() - t0;
    *cpu = (cpu_s() - c0) / dt;
    return (double)q->rows / dt;
}

/* Batch calls over all queries on `threads` threads, timed by the
 * BATCH_* rule; returns the best QPS. */
static double run_batch(iqdb *db, const ds_matrix *q, size_t k, int threads,
                        topk *out, double *cpu)
{
    iqdb_results *res = NULL;
    size_t warm = q->rows < 50 ? q->rows : 50, i;
    double start, best = 0.0;
    int rc, run;

    bench_set_threads(threads);
    rc = iqdb_search_batch(db, q->data, warm, (uint32_t)q->dim, k, NULL, NULL,
                           &res);
    if (rc != 0)
        bench_die_lib(db, rc, "iqdb_search_batch (warm-up)");
    iqdb_results_free(res);
    res = NULL;
    start = bench_now();
    for (run = 0; run < BATCH_MAX_RUNS; run++) {
        double t0, c0, dt;

        if (run >= BATCH_MIN_RUNS && bench_now() - start > BATCH_BUDGET_S)
            break;
        iqdb_results_free(res);
        res = NULL;
        c0 = cpu_s();
        t0 = bench_now();
        rc = iqdb_search_batch(db, q->data, q->rows, (uint32_t)q->dim, k,
                               NULL, NULL, &res);
        dt = bench_now() - t0;
        if (rc != 0)
            bench_die_lib(db, rc, "iqdb_search_batch");
        if (best == 0.0 || dt < best) {
            best = dt;
            *cpu = (cpu_s() - c0) / dt;
        }
    }
    if (iqdb_results_nqueries(res) != q->rows) {
        fprintf(stderr, "%s: iqdb_search_batch answered %zu of %zu queries\n",
                bench_prog, iqdb_results_nqueries(res), q->rows);
        exit(1);
    }
    for (i = 0; i < q->rows; i++)
        topk_take(out, i, res, i);
    iqdb_results_free(res);
    bench_set_threads(1);
    return (double)q->rows / best;
}

/* ------------------------------------------------------------------ */
/* The FAISS peer                                                       */

static int file_exists(const char *path)
{
    return access(path, R_OK) == 0;
}

/* Find faiss_flat.py: the option, then beside this source file (right
 * for VPATH builds), then the source tree seen from the working
 * directory, then near the executable (libtool puts it in .libs/). */
static const char *find_script(const opts *o, char *buf, size_t len)
{
    const char *env = getenv("IQDB_FAISS_SCRIPT");
    const char *slash;
    char exe[4096];
    ssize_t n;

    if (o->faiss_script != NULL)
        return file_exists(o->faiss_script) ? o->faiss_script : NULL;
    if (env != NULL && *env != '\0')
        return file_exists(env) ? env : NULL;
    slash = strrchr(__FILE__, '/');
    if (slash != NULL) {
        if (bench_fmt(buf, len, "%.*s/faiss_flat.py", (int)(slash - __FILE__),
                __FILE__) == 0 &&
            file_exists(buf))
            return buf;
    }
    if (bench_fmt(buf, len, "bench/faiss_flat.py") == 0 && file_exists(buf))
        return buf;
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        char *s;

        exe[n] = '\0';
        s = strrchr(exe, '/');
        if (s != NULL) {
            *s = '\0';
            if (bench_fmt(buf, len, "%s/faiss_flat.py", exe) == 0 &&
                file_exists(buf))
                return buf;
            if (bench_fmt(buf, len, "%s/../faiss_flat.py", exe) == 0 &&
                file_exists(buf))
                return buf;
        }
    }
    return NULL;
}

/* 1 when /usr/bin/python3 can import faiss (checked once). */
static int faiss_available(void)
{
    static int known = -1;

    if (known < 0)
        known = access(PYTHON, X_OK) == 0 &&
                system(PYTHON " -c 'import faiss' >/dev/null 2>&1") == 0;
    return known;
}

/* The number after "key": in a one-line JSON object. */
static int json_num(const char *line, const char *key, double *out)
{
    char pat[64];
    const char *p;
    char *end;

    snprintf(pat, sizeof(pat), "\"%s\":", key);
    p = strstr(line, pat);
    if (p == NULL)
        return -1;
    *out = strtod(p + strlen(pat), &end);
    return end == p + strlen(pat) ? -1 : 0;
}

/* The string after "key": in a one-line JSON object (escapes kept
 * simple: \x becomes x). */
static int json_str(const char *line, const char *key, char *out, size_t len)
{
    char pat[64];
    const char *p;
    size_t o = 0;

    snprintf(pat, sizeof(pat), "\"%s\":", key);
    p = strstr(line, pat);
    if (p == NULL || len == 0)
        return -1;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    if (*p++ != '"')
        return -1;
    while (*p != '\0' && *p != '"' && o + 1 < len) {
        if (*p == '\\' && p[1] != '\0')
            p++;
        out[o++] = *p++;
    }
    out[o] = '\0';
    return 0;
}

static void remove_tmp(const char *dir)
{
    static const char *const files[] = {"base.fvecs", "queries.fvecs",
                                        "ids.ivecs"};
    char path[4200];
    size_t i;

    for (i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* Run faiss_flat.py on the same data; fills the peer fields of r and
 * *ids (nq x k), or says in r->peer_why why not. */
static void run_peer(const opts *o, const ds_matrix *base,
                     const ds_matrix *q, report *r, topk *ids)
{
    char dir[4096], bpath[4200], qpath[4200], ipath[4200], sbuf[4096];
    char err[512], cmd[16384], line[16384], last[16384];
    const char *tmp = getenv("TMPDIR");
    const char *script;
    int32_t *iv = NULL;
    size_t rows, dim, i;
    FILE *p;
    int status;

    if (!faiss_available()) {
        bench_fmt(r->peer_why, sizeof(r->peer_why),
                 "%s cannot import faiss (Debian package python3-faiss)",
                 PYTHON);
        return;
    }
    script = find_script(o, sbuf, sizeof(sbuf));
    if (script == NULL) {
        bench_fmt(r->peer_why, sizeof(r->peer_why),
                 "bench/faiss_flat.py not found (use --faiss-script)");
        return;
    }
    if (bench_fmt(dir, sizeof(dir), "%s/iqdb-bench-XXXXXX",
            tmp != NULL && *tmp != '\0' ? tmp : "/tmp") != 0 ||
        strchr(dir, '\'') != NULL || strchr(script, '\'') != NULL ||
        mkdtemp(dir) == NULL) {
        bench_fmt(r->peer_why, sizeof(r->peer_why),
                 "cannot make a temporary directory in %s: %s",
                 tmp != NULL ? tmp : "/tmp", strerror(errno));
        return;
    }
    snprintf(bpath, sizeof(bpath), "%s/base.fvecs", dir);
    snprintf(qpath, sizeof(qpath), "%s/queries.fvecs", dir);
    snprintf(ipath, sizeof(ipath), "%s/ids.ivecs", dir);
    if (ds_fvecs_write(bpath, base, err, sizeof(err)) != 0 ||
        ds_fvecs_write(qpath, q, err, sizeof(err)) != 0) {
        bench_fmt(r->peer_why, sizeof(r->peer_why), "%s", err);
        goto done;
    }
    if (bench_fmt(cmd, sizeof(cmd),
            PYTHON " '%s' --base '%s' --queries '%s' --k %zu --threads %d "
                   "--ids-out '%s'%s",
            script, bpath, qpath, o->k, o->batch_threads, ipath,
            o->peer_blas_as_is ? " --blas-as-is" : "") != 0) {
        bench_fmt(r->peer_why, sizeof(r->peer_why), "paths too long");
        goto done;
    }
    fflush(stdout);
    p = popen(cmd, "r");
    if (p == NULL) {
        bench_fmt(r->peer_why, sizeof(r->peer_why), "cannot run %s: %s",
                 PYTHON, strerror(errno));
        goto done;
    }
    last[0] = '\0';
    while (fgets(line, sizeof(line), p) != NULL)
        if (line[0] == '{')
            memcpy(last, line, sizeof(last));
    status = pclose(p);
    if (status != 0 || last[0] == '\0') {
        bench_fmt(r->peer_why, sizeof(r->peer_why),
                 "%s failed (exit status %d); its messages are above",
                 script, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        goto done;
    }
    if (json_num(last, "single_qps", &r->peer_single_qps) != 0 ||
        json_num(last, "batch_qps", &r->peer_batch_qps) != 0) {
        bench_fmt(r->peer_why, sizeof(r->peer_why),
                 "%s printed no QPS figures", script);
        goto done;
    }
    if (json_num(last, "single_cpu", &r->peer_single_cpu) != 0)
        r->peer_single_cpu = -1.0;
    if (json_num(last, "batch_cpu", &r->peer_batch_cpu) != 0)
        r->peer_batch_cpu = -1.0;
    json_str(last, "version", r->peer_version, sizeof(r->peer_version));
    json_str(last, "build", r->peer_build, sizeof(r->peer_build));
    json_str(last, "blas", r->blas, sizeof(r->blas));
    json_str(last, "blas_note", r->blas_note, sizeof(r->blas_note));
    if (ds_ivecs_read(ipath, &iv, &rows, &dim, err, sizeof(err)) != 0) {
        bench_fmt(r->peer_why, sizeof(r->peer_why), "%s", err);
        goto done;
    }
    if (rows != q->rows || dim != o->k) {
        bench_fmt(r->peer_why, sizeof(r->peer_why),
                 "%s: %zu x %zu ids, expected %zu x %zu", ipath, rows, dim,
                 q->rows, o->k);
        goto done;
    }
    topk_init(ids, rows, dim);
    for (i = 0; i < rows * dim; i++)
        ids->ids[i] = iv[i];
    r->have_peer = 1;

done:
    free(iv);
    remove_tmp(dir);
}

/* ------------------------------------------------------------------ */
/* One data set                                                         */

static const char *verdict(int ok)
{
    return ok ? "ok" : "MISSED";
}

/* A phase that got clearly fewer CPUs than it asked for shared the
 * machine; its figure (and any ratio built on it) is then too low, and
 * OpenMP threads spinning at barriers for a descheduled partner can make
 * it far too low. cpu < 0: not reported. */
static void warn_starved(const char *what, double cpu, int threads)
{
    if (cpu >= 0 && cpu < 0.85 * threads)
        printf("  WARNING: %s used %.2f of %d CPUs: the machine was shared "
               "and this figure is unreliable; rerun when it is idle\n",
               what, cpu, threads);
}

static void print_agreement(const char *what, const agreement *ag)
{
    printf("  %-30s recall %.4f over %zu queries: %zu identical, %zu differ "
           "only by ties, %zu differ\n",
           what, ag->recall, ag->queries, ag->same, ag->ties, ag->wrong);
}

static void print_report(const report *r)
{
    double mb = (double)r->n * (double)r->dim * 4.0 / 1e6;
    double scan_ceiling = fmax(r->bw_big, r->bw_same);
    const char *how;
    char blabel[48];

    bench_fmt(blabel, sizeof(blabel), "batch QPS, %d thread%s", r->threads,
        r->threads == 1 ? "" : "s");

    printf("\n== %s: %zu x %zu base (%.1f MB), %zu queries, k = %zu, "
           "euclidean, flat index ==\n",
           r->name, r->n, r->dim, mb, r->nq, r->k);
    printf("  insert %.2f s (%.0f vectors/s, iqdb_upsert_batch of %d)\n",
           r->insert_s, (double)r->n / r->insert_s, INSERT_BATCH);
    pick_read_pass(&how);
    printf("  1-thread read bandwidth (%s, best of %d): %.2f GB/s over %zu "
           "MiB, %.2f GB/s over %.0f MB (the base's size)\n",
           how, BW_RUNS, r->bw_big, r->bw_big_bytes >> 20, r->bw_same, mb);
    printf("\n  %-28s %12s %12s %9s %10s\n", "measure", "iqdb", "FAISS",
           "ratio", "target");
    if (r->have_peer) {
        double rs = r->single_qps / r->peer_single_qps;
        double rb = r->batch_qps / r->peer_batch_qps;

        printf("  %-28s %12.1f %12.1f %8.2fx %7s%.2fx  %s\n",
               "single-query QPS, 1 thread", r->single_qps,
               r->peer_single_qps, rs, ">= ", TARGET_SINGLE,
               verdict(rs >= TARGET_SINGLE));
        printf("  %-28s %12.1f %12.1f %8.2fx %7s%.2fx  %s\n",
               blabel, r->batch_qps, r->peer_batch_qps, rb,
               ">= ", TARGET_BATCH, verdict(rb >= TARGET_BATCH));
        printf("  %-28s %12.2f %12.2f\n", "scan rate GB/s, 1 thread",
               r->scan_gbs,
               (double)r->n * (double)r->dim * 4.0 * r->peer_single_qps /
                   1e9);
    } else {
        printf("  %-28s %12.1f %12s\n", "single-query QPS, 1 thread",
               r->single_qps, "-");
        printf("  %-28s %12.1f %12s\n", blabel, r->batch_qps, "-");
        printf("  %-28s %12.2f %12s\n", "scan rate GB/s, 1 thread",
               r->scan_gbs, "-");
    }
    /* The target holds against the higher read figure: a base that fits
     * the last-level cache is scanned from there, and a scan should keep
     * up with plain reads of the same working set too. */
    printf("  %-28s %12.2f %12s %8.2fx\n", "read GB/s, 1 GiB buffer",
           r->bw_big, "", r->bw_big / r->scan_gbs);
    printf("  %-28s %12.2f %12s %8.2fx %7s%.2fx  %s\n",
           "read GB/s, base-size buffer", r->bw_same, "",
           r->bw_same / r->scan_gbs, "<= ", TARGET_SCAN,
           verdict(scan_ceiling / r->scan_gbs <= TARGET_SCAN));
    printf("  (read rows: 1-thread streaming read / our scan rate; the target "
           "applies to the higher read figure)\n");
    printf("  CPU threads busy (CPU time / wall time): iqdb single-query "
           "%.2f, batch %.2f",
           r->single_cpu, r->batch_cpu);
    if (r->have_peer && r->peer_single_cpu >= 0 && r->peer_batch_cpu >= 0)
        printf("; FAISS %.2f, %.2f", r->peer_single_cpu, r->peer_batch_cpu);
    printf(" (expected 1 and %d)\n", r->threads);
    warn_starved("iqdb single-query", r->single_cpu, 1);
    warn_starved("iqdb batch", r->batch_cpu, r->threads);
    if (r->have_peer) {
        warn_starved("FAISS single-query", r->peer_single_cpu, 1);
        warn_starved("FAISS batch", r->peer_batch_cpu, r->threads);
    }
    if (!r->have_peer)
        printf("  FAISS: not run: %s\n", r->peer_why);
    else {
        printf("  FAISS %s IndexFlatL2, module %s\n", r->peer_version,
               r->peer_build);
        printf("  FAISS BLAS: %s\n", r->blas);
        if (r->blas_note[0] != '\0')
            printf("  note: %s\n", r->blas_note);
    }
    printf("\n  correctness (tie = equal distance within %.0e relative)\n",
           TIE_RTOL);
    print_agreement("vs double-precision oracle:", &r->oracle);
    print_agreement("batch vs single-query:", &r->batch_vs_single);
    if (r->have_peer)
        print_agreement("vs FAISS IndexFlatL2:", &r->peer_agree);
    printf("  %-30s max relative error %.2e; %zu order errors\n",
           "returned distances:", r->max_dist_err, r->order_errors);
    fflush(stdout);
}

/* Measure one data set; returns 1 when our results are wrong. */
static int bench_dataset(const opts *o, const ds_dataset *d, report *r)
{
    const ds_matrix *base = &d->base, *q = &d->queries;
    topk single, batch, peer = {NULL, NULL, 0, 0};
    size_t i, noracle = q->rows < ORACLE_QUERIES ? q->rows : ORACLE_QUERIES;
    int64_t oracle_ids[64];
    iqdb *db;

    memset(r, 0, sizeof(*r));
    snprintf(r->name, sizeof(r->name), "%s", d->name);
    r->n = base->rows;
    r->dim = base->dim;
    r->nq = q->rows;
    r->k = o->k;
    r->threads = o->batch_threads;
    printf("\n[%s] inserting %zu vectors...\n", d->name, base->rows);
    fflush(stdout);
    db = open_and_fill(base, r);

    r->bw_big = measure_bw(BW_BYTES_MAX, &r->bw_big_bytes);
    r->bw_same = measure_bw(base->rows * base->dim * sizeof(float), NULL);

    printf("[%s] single-query loop, %zu queries, 1 thread...\n", d->name,
           q->rows);
    fflush(stdout);
    topk_init(&single, q->rows, o->k);
    r->single_qps = run_single(db, q, o->k, &single, &r->single_cpu);
    r->scan_gbs = (double)base->rows * (double)base->dim * sizeof(float) *
                  r->single_qps / 1e9;

    printf("[%s] batch, %d threads...\n", d->name, o->batch_threads);
    fflush(stdout);
    topk_init(&batch, q->rows, o->k);
    r->batch_qps = run_batch(db, q, o->k, o->batch_threads, &batch,
                             &r->batch_cpu);
    iqdb_close(db);

    printf("[%s] checking results...\n", d->name);
    fflush(stdout);
    for (i = 0; i < noracle; i++) {
        oracle_topk(base, q->data + i * q->dim, o->k, oracle_ids);
        agree_one(base, q->data + i * q->dim, single.ids + i * o->k,
                  oracle_ids, o->k, &r->oracle);
    }
    agree_finish(&r->oracle);
    for (i = 0; i < q->rows; i++)
        agree_one(base, q->data + i * q->dim, batch.ids + i * o->k,
                  single.ids + i * o->k, o->k, &r->batch_vs_single);
    agree_finish(&r->batch_vs_single);
    check_hits(base, q, &single, r);
    check_hits(base, q, &batch, r);

    if (o->peers) {
        printf("[%s] FAISS IndexFlatL2 on the same data...\n", d->name);
        fflush(stdout);
        run_peer(o, base, q, r, &peer);
        if (r->have_peer) {
            for (i = 0; i < q->rows; i++)
                agree_one(base, q->data + i * q->dim, single.ids + i * o->k,
                          peer.ids + i * o->k, o->k, &r->peer_agree);
            agree_finish(&r->peer_agree);
        }
    } else {
        bench_fmt(r->peer_why, sizeof(r->peer_why), "--no-peers");
    }
    print_report(r);
    topk_free(&single);
    topk_free(&batch);
    topk_free(&peer);
    return r->oracle.wrong > 0 || r->batch_vs_single.wrong > 0 ||
           r->order_errors > 0 || r->max_dist_err > 1e-3;
}

/* ------------------------------------------------------------------ */
/* Options and main                                                     */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [options]\n"
            "  --dataset fashion-mnist|generated|all   (default all)\n"
            "  --queries N      queries per data set (default 1000)\n"
            "  --n N            generated base vectors (default 200000)\n"
            "  --dim D          generated dimension (default 128)\n"
            "  --k K            neighbours per query (default 10)\n"
            "  --threads T      batch threads (default 2)\n"
            "  --no-peers       skip FAISS\n"
            "  --peer-blas-as-is  keep OpenBLAS's own kernel choice\n"
            "  --fmnist-dir DIR Fashion-MNIST files (default %s)\n"
            "  --faiss-script P path of bench/faiss_flat.py\n",
            bench_prog, DS_FMNIST_DIR);
}

static size_t parse_size(const char *opt, const char *s, size_t lo, size_t hi)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < lo ||
        v > hi) {
        fprintf(stderr, "%s: %s wants a number from %zu to %zu, not '%s'\n",
                bench_prog, opt, lo, hi, s);
        exit(2);
    }
    return (size_t)v;
}

static void parse_opts(int argc, char **argv, opts *o)
{
    int i;

    o->want_fmnist = o->want_generated = 1;
    o->nq = 1000;
    o->n = 200000;
    o->dim = 128;
    o->k = 10;
    o->batch_threads = 2;
    o->peers = 1;
    o->peer_blas_as_is = 0;
    o->fmnist_dir = DS_FMNIST_DIR;
    o->faiss_script = NULL;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = strcmp(a, "--dataset") == 0 ||
                    strcmp(a, "--queries") == 0 || strcmp(a, "--n") == 0 ||
                    strcmp(a, "--dim") == 0 || strcmp(a, "--k") == 0 ||
                    strcmp(a, "--threads") == 0 ||
                    strcmp(a, "--fmnist-dir") == 0 ||
                    strcmp(a, "--faiss-script") == 0;

        if (takes && v == NULL) {
            fprintf(stderr, "%s: %s needs a value\n", bench_prog, a);
            exit(2);
        }
        if (strcmp(a, "--dataset") == 0) {
            o->want_fmnist = strcmp(v, "fashion-mnist") == 0 ||
                             strcmp(v, "all") == 0;
            o->want_generated = strcmp(v, "generated") == 0 ||
                                strcmp(v, "all") == 0;
            if (!o->want_fmnist && !o->want_generated) {
                fprintf(stderr,
                        "%s: --dataset is fashion-mnist, generated or all, "
                        "not '%s'\n",
                        bench_prog, v);
                exit(2);
            }
        } else if (strcmp(a, "--queries") == 0) {
            o->nq = parse_size(a, v, 1, 10000000);
        } else if (strcmp(a, "--n") == 0) {
            o->n = parse_size(a, v, 1, 100000000);
        } else if (strcmp(a, "--dim") == 0) {
            o->dim = parse_size(a, v, 1, IQDB_MAX_DIM);
        } else if (strcmp(a, "--k") == 0) {
            o->k = parse_size(a, v, 1, 64);
        } else if (strcmp(a, "--threads") == 0) {
            o->batch_threads = (int)parse_size(a, v, 1, 1024);
        } else if (strcmp(a, "--fmnist-dir") == 0) {
            o->fmnist_dir = v;
        } else if (strcmp(a, "--faiss-script") == 0) {
            o->faiss_script = v;
        } else if (strcmp(a, "--no-peers") == 0) {
            o->peers = 0;
        } else if (strcmp(a, "--peer-blas-as-is") == 0) {
            o->peer_blas_as_is = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "%s: unknown option '%s'\n", bench_prog, a);
            usage(stderr);
            exit(2);
        }
        if (takes)
            i++;
    }
}

static void print_summary(const report *rs, size_t nr)
{
    size_t i;

    printf("\n== summary (ratios ours/FAISS; targets: single >= %.1fx, "
           "batch >= %.1fx, bandwidth/scan <= %.1fx) ==\n",
           TARGET_SINGLE, TARGET_BATCH, TARGET_SCAN);
    printf("  %-14s %14s %14s %16s %12s\n", "data set", "single QPS",
           "batch QPS", "bandwidth/scan", "recall@k");
    for (i = 0; i < nr; i++) {
        const report *r = &rs[i];
        double bw = fmax(r->bw_big, r->bw_same) / r->scan_gbs;
        char s[32], b[32], rec[32];

        int starved = r->batch_cpu < 0.85 * r->threads ||
                      (r->have_peer && r->peer_batch_cpu >= 0 &&
                       r->peer_batch_cpu < 0.85 * r->threads);

        if (r->have_peer) {
            snprintf(s, sizeof(s), "%.2fx %s",
                     r->single_qps / r->peer_single_qps,
                     r->single_qps / r->peer_single_qps >= TARGET_SINGLE
                         ? "ok"
                         : "MISS");
            snprintf(b, sizeof(b), "%.2fx %s%s",
                     r->batch_qps / r->peer_batch_qps,
                     r->batch_qps / r->peer_batch_qps >= TARGET_BATCH
                         ? "ok"
                         : "MISS",
                     starved ? "!" : "");
            snprintf(rec, sizeof(rec), "%.4f", r->peer_agree.recall);
        } else {
            snprintf(s, sizeof(s), "%.1f q/s", r->single_qps);
            snprintf(b, sizeof(b), "%.1f q/s", r->batch_qps);
            snprintf(rec, sizeof(rec), "%.4f*", r->oracle.recall);
        }
        printf("  %-14s %14s %14s %11.2fx %s %12s\n", r->name, s, b, bw,
               bw <= TARGET_SCAN ? "ok  " : "MISS", rec);
    }
    printf("  (recall@k vs FAISS; * = vs the bench's own oracle on %d "
           "queries; ! = a batch run got too few CPUs, see the warnings)\n",
           ORACLE_QUERIES);
}

int main(int argc, char **argv)
{
    report reports[2];
    size_t nr = 0;
    char err[1024];
    ds_dataset d;
    opts o;
    int wrong = 0;
#ifdef IQDB_BUILD_PLUGINS
    /* Built, not installed: find the plugins of this build tree first. */
    iqdb_plugin_add_dir(IQDB_BUILD_PLUGINS);
#endif

    parse_opts(argc, argv, &o);
    printf("bench_flat: iqdb %s, flat index; %ld CPUs online", iqdb_version(),
           sysconf(_SC_NPROCESSORS_ONLN));
#ifdef _OPENMP
    printf(", OpenMP max threads %d", omp_get_max_threads());
#else
    printf(", built without OpenMP: thread counts cannot be set");
#endif
    printf("\n");

    if (o.want_fmnist) {
        if (!ds_fmnist_present(o.fmnist_dir)) {
            printf("Fashion-MNIST not found in %s (Debian package "
                   "dataset-fashion-mnist): running generated data only\n",
                   o.fmnist_dir);
            o.want_generated = 1;
        } else {
            if (ds_fmnist_load(o.fmnist_dir, &d, err, sizeof(err)) != 0) {
                fprintf(stderr, "%s: %s\n", bench_prog, err);
                return 1;
            }
            ds_matrix_truncate(&d.queries, o.nq);
            wrong |= bench_dataset(&o, &d, &reports[nr++]);
            ds_dataset_free(&d);
        }
    }
    if (o.want_generated) {
        ds_gen_spec spec;

        ds_gen_spec_default(&spec);
        spec.n = o.n;
        spec.nq = o.nq;
        spec.dim = o.dim;
        printf("\ngenerating %zu + %zu vectors of dimension %zu (%zu "
               "clusters, seed %#llx)...\n",
               spec.n, spec.nq, spec.dim, spec.clusters,
               (unsigned long long)spec.seed);
        fflush(stdout);
        if (ds_gen_clustered(&spec, &d, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: %s\n", bench_prog, err);
            return 1;
        }
        wrong |= bench_dataset(&o, &d, &reports[nr++]);
        ds_dataset_free(&d);
    }
    print_summary(reports, nr);
    if (wrong) {
        printf("\nFAILED: the flat index returned wrong results (see the "
               "correctness lines above)\n");
        return 1;
    }
    return 0;
}
