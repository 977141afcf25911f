/*
 * tools/demo.c - iqdb demo: the README's main job. Creates a durable HNSW
 * database of Fashion-MNIST (the 60k training images, class names as
 * metadata) or, when the data set is not installed, of generated
 * clustered data (and says so); runs the test images as queries; prints
 * recall@10 against exact search and queries per second; then shows a
 * filtered query. A second run reopens the database instead of
 * rebuilding it.
 */
#define _GNU_SOURCE

#include "cli.h"
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEMO_K 10
#define DEMO_BATCH 10000
#define GEN_CLASSES 10

static const char demo_usage[] =
    "iqdb demo [DIR] [--queries N] [--n N] [--fresh] [--fmnist-dir DIR]\n"
    "Create (or reopen) a durable HNSW database at DIR (default ./iqdb-demo)\n"
    "holding Fashion-MNIST with class labels as metadata (generated data\n"
    "when /usr/share/datasets/fashion-mnist is absent), run the test images\n"
    "as queries (default all 10000), print recall@10 against exact search\n"
    "and queries per second, then a filtered query. --fresh rebuilds;\n"
    "--n uses only the first N base vectors.\n";

static char gen_names[GEN_CLASSES][16];

static const char *label_name(int generated, unsigned c)
{
    if (generated)
        return c < GEN_CLASSES ? gen_names[c] : "?";
    return c < 10 ? cli_fmnist_names[c] : "?";
}

/* Remove a database directory made by an earlier demo (its known files
 * only: a killed run may leave wal.old and segments, seg.* and vec.*;
 * anything else stops the removal). */
static int remove_db(const char *dir)
{
    static const char *const files[] = {"snapshot", "wal", "wal.old",
                                        "LOCK", "snapshot.tmp", "wal.tmp"};
    char p[PATH_MAX];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (unlink(p) != 0 && errno != ENOENT) {
            cli_err("demo: cannot remove %s: %s", p, strerror(errno));
            return -1;
        }
    }
    DIR *dh = opendir(dir);
    struct dirent *de;
    while (dh != NULL && (de = readdir(dh)) != NULL) {
        if (strncmp(de->d_name, "seg.", 4) != 0 &&
            strncmp(de->d_name, "vec.", 4) != 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (unlink(p) != 0 && errno != ENOENT) {
            cli_err("demo: cannot remove %s: %s", p, strerror(errno));
            closedir(dh);
            return -1;
        }
    }
    if (dh != NULL)
        closedir(dh);
    if (rmdir(dir) != 0 && errno != ENOENT) {
        cli_err("demo: cannot remove %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int build(const char *dir, const ds_dataset *ds, int generated,
                 iqdb **out)
{
    iqdb_config *cfg = iqdb_config_new((uint32_t)ds->base.dim,
                                       IQDB_METRIC_EUCLIDEAN);
    if (cfg == NULL)
        return CLI_EXIT_FAIL;
    iqdb_config_set_index(cfg, "hnsw");
    iqdb_config_set_param(cfg, "m", "16");
    iqdb_config_set_param(cfg, "ef_construction", "200");
    /* Bulk load without a sync per batch; the flush below makes it
     * durable in one snapshot. */
    iqdb_config_set_fsync(cfg, IQDB_FSYNC_NEVER, 0);
    iqdb *db;
    int r = iqdb_open(dir, cfg, &db);
    iqdb_config_free(cfg);
    if (r != 0)
        return cli_lib_err(NULL, r, "demo: create");
    size_t n = ds->base.rows, dim = ds->base.dim;
    iqdb_record *recs = calloc(DEMO_BATCH, sizeof *recs);
    iqdb_meta **metas = calloc(DEMO_BATCH, sizeof *metas);
    if (recs == NULL || metas == NULL) {
        free(recs);
        free(metas);
        iqdb_close(db);
        return CLI_EXIT_FAIL;
    }
    printf("building: %zu vectors of dim %zu, HNSW m=16 ef_construction=200, "
           "%d threads\n", n, dim, omp_get_max_threads());
    fflush(stdout);
    double t0 = cli_now();
    cli_progress *pg = cli_progress_start("import+build", n);
    for (size_t s = 0; s < n && r == 0; s += DEMO_BATCH) {
        size_t m = n - s < DEMO_BATCH ? n - s : DEMO_BATCH;
        for (size_t i = 0; i < m; i++) {
            unsigned c = ds->base_labels ? ds->base_labels[s + i] : 0;
            metas[i] = iqdb_meta_new();
            if (metas[i] == NULL) {
                r = IQDB_ENOMEM;
                m = i;
                break;
            }
            iqdb_meta_set(metas[i], "label",
                          iqdb_value_str(label_name(generated, c)));
            iqdb_meta_set(metas[i], "class", iqdb_value_int((int64_t)c));
            recs[i].id = iqdb_id_u64(s + i);
            recs[i].vector = ds->base.data + (s + i) * dim;
            recs[i].meta = metas[i];
        }
        if (r == 0)
            r = iqdb_upsert_batch(db, recs, m, (uint32_t)dim);
        for (size_t i = 0; i < m; i++)
            iqdb_meta_free(metas[i]);
        cli_progress_update(pg, s + m);
    }
    cli_progress_end(pg);
    free(recs);
    free(metas);
    if (r == 0)
        r = iqdb_flush(db);
    if (r != 0) {
        int rc = cli_lib_err(db, r, "demo: build");
        iqdb_close(db);
        return rc;
    }
    iqdb_stats st;
    iqdb_stat(db, &st);
    printf("built %s in %.1f s: snapshot %.1f MB, index %.1f MB in memory "
           "(%.0f bytes per vector)\n", dir, cli_now() - t0,
           (double)st.snapshot_bytes / 1e6, (double)st.index_bytes / 1e6,
           n ? (double)st.index_bytes / (double)n : 0.0);
    *out = db;
    return 0;
}

/* Copy every record into an in-memory exact (flat) database: the oracle
 * recall is measured against. */
typedef struct oracle_fill {
    iqdb *flat;
    int err;
} oracle_fill;

static int fill_cb(void *arg, const iqdb_record *rec)
{
    oracle_fill *o = arg;
    int r = iqdb_upsert(o->flat, rec->id, rec->vector, iqdb_dim(o->flat),
                        NULL);
    if (r != 0)
        o->err = r;
    return r;
}

int cli_cmd_demo(int argc, char **argv)
{
    static const struct option lo[] = {
        {"queries", required_argument, 0, 'n'},
        {"n", required_argument, 0, 'N'},
        {"fresh", no_argument, 0, 'f'},
        {"fmnist-dir", required_argument, 0, 'D'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *fmdir = DS_FMNIST_DIR;
    long nq_want = 10000, n_want = 0;
    int fresh = 0, c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'n': {
            char *end;
            nq_want = strtol(optarg, &end, 10);
            if (*end != '\0' || nq_want < 1 || nq_want > 10000000) {
                cli_err("--queries: '%s' is not a count >= 1", optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        }
        case 'N': {
            char *end;
            n_want = strtol(optarg, &end, 10);
            if (*end != '\0' || n_want < 1) {
                cli_err("--n: '%s' is not a count >= 1", optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        }
        case 'f': fresh = 1; break;
        case 'D': fmdir = optarg; break;
        case 'h': fputs(demo_usage, stdout); return 0;
        default: fprintf(stderr, "usage: %s", demo_usage);
            return CLI_EXIT_USAGE;
        }
    }
    if (optind < argc - 1) {
        fprintf(stderr, "usage: %s", demo_usage);
        return CLI_EXIT_USAGE;
    }
    const char *dir = optind < argc ? argv[optind] : "./iqdb-demo";
    char err[512];
    ds_dataset ds;
    int generated = 0;
    memset(&ds, 0, sizeof ds);
    if (ds_fmnist_present(fmdir)) {
        if (ds_fmnist_load(fmdir, &ds, err, sizeof err) != 0) {
            cli_err("demo: %s", err);
            return CLI_EXIT_FAIL;
        }
        printf("data: Fashion-MNIST from %s: %zu training images, %zu test "
               "images, 784 pixels each\n", fmdir, ds.base.rows,
               ds.queries.rows);
    } else {
        ds_gen_spec spec;
        ds_gen_spec_default(&spec);
        spec.n = 60000;
        spec.nq = 10000;
        spec.dim = 128;
        spec.clusters = GEN_CLASSES;
        if (ds_gen_clustered(&spec, &ds, err, sizeof err) != 0) {
            cli_err("demo: %s", err);
            return CLI_EXIT_FAIL;
        }
        generated = 1;
        for (int i = 0; i < GEN_CLASSES; i++)
            snprintf(gen_names[i], sizeof gen_names[i], "cluster %d", i);
        printf("data: Fashion-MNIST is not installed in %s (Debian package "
               "dataset-fashion-mnist); using GENERATED clustered data "
               "instead: %zu vectors of dim %zu in %d clusters, %zu "
               "queries\n", fmdir, ds.base.rows, ds.base.dim, GEN_CLASSES,
               ds.queries.rows);
    }
    if ((size_t)nq_want < ds.queries.rows)
        ds_matrix_truncate(&ds.queries, (size_t)nq_want);
    if (n_want > 0 && (size_t)n_want < ds.base.rows) {
        ds_matrix_truncate(&ds.base, (size_t)n_want);
        printf("using the first %zu base vectors (--n)\n", ds.base.rows);
    }
    size_t nq = ds.queries.rows, dim = ds.base.dim;

    char snap[PATH_MAX];
    struct stat st;
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    if (fresh && stat(snap, &st) == 0 && remove_db(dir) != 0) {
        ds_dataset_free(&ds);
        return CLI_EXIT_FAIL;
    }
    iqdb *db = NULL;
    int rc = 0, r;
    if (stat(snap, &st) == 0) {
        double t0 = cli_now();
        iqdb_config *cfg = iqdb_config_new(0, (iqdb_metric)0);
        r = cfg ? iqdb_open(dir, cfg, &db) : IQDB_ENOMEM;
        iqdb_config_free(cfg);
        if (r != 0) {
            rc = cli_lib_err(NULL, r, "demo: reopen");
            goto out;
        }
        if (iqdb_dim(db) != dim || iqdb_count(db) != ds.base.rows) {
            cli_err("demo: %s holds %zu vectors of dim %u, not this data "
                    "set; use --fresh or another DIR", dir, iqdb_count(db),
                    iqdb_dim(db));
            rc = CLI_EXIT_FAIL;
            goto out;
        }
        printf("reopened %s: %zu records, index %s, in %.2f s (no rebuild; "
               "--fresh rebuilds)\n", dir, iqdb_count(db),
               iqdb_index_name(db), cli_now() - t0);
    } else if ((rc = build(dir, &ds, generated, &db)) != 0) {
        goto out;
    }

    /* Exact answers from an in-memory flat copy of what is stored. */
    iqdb_config *fc = iqdb_config_new((uint32_t)dim, IQDB_METRIC_EUCLIDEAN);
    iqdb *flat = NULL;
    r = fc ? iqdb_open_memory(fc, &flat) : IQDB_ENOMEM;
    iqdb_config_free(fc);
    if (r != 0) {
        rc = cli_lib_err(NULL, r, "demo: exact index");
        goto out;
    }
    oracle_fill of = {flat, 0};
    iqdb_foreach(db, fill_cb, &of);
    iqdb_results *exact = NULL, *approx = NULL;
    double t0 = cli_now();
    r = of.err ? of.err
               : iqdb_search_batch(flat, ds.queries.data, nq, (uint32_t)dim,
                                   DEMO_K, NULL, NULL, &exact);
    double t_exact = cli_now() - t0;
    iqdb_close(flat);
    if (r != 0) {
        rc = cli_lib_err(NULL, r, "demo: exact search");
        goto out;
    }

    /* HNSW, one query at a time on one thread. */
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    double hits = 0;
    cli_progress *pg = cli_progress_start("queries", nq);
    t0 = cli_now();
    for (size_t q = 0; q < nq; q++) {
        iqdb_results *one;
        r = iqdb_search(db, ds.queries.data + q * dim, (uint32_t)dim,
                        DEMO_K, NULL, NULL, &one);
        if (r != 0)
            break;
        const iqdb_hit *a = iqdb_results_hits(one, 0);
        const iqdb_hit *e = iqdb_results_hits(exact, q);
        size_t na = iqdb_results_count(one, 0), ne = iqdb_results_count(exact, q);
        for (size_t i = 0; i < na; i++)
            for (size_t j = 0; j < ne; j++)
                if (iqdb_id_equal(a[i].id, e[j].id)) {
                    hits++;
                    break;
                }
        iqdb_results_free(one);
        if ((q & 255) == 0)
            cli_progress_update(pg, q);
    }
    double t_single = cli_now() - t0;
    cli_progress_end(pg);
    omp_set_num_threads(threads);
    if (r != 0) {
        iqdb_results_free(exact);
        rc = cli_lib_err(db, r, "demo: search");
        goto out;
    }
    t0 = cli_now();
    r = iqdb_search_batch(db, ds.queries.data, nq, (uint32_t)dim, DEMO_K,
                          NULL, NULL, &approx);
    double t_batch = cli_now() - t0;
    iqdb_results_free(approx);
    iqdb_results_free(exact);
    if (r != 0) {
        rc = cli_lib_err(db, r, "demo: batch search");
        goto out;
    }
    printf("\n%zu queries, k = %d, metric euclidean\n", nq, DEMO_K);
    printf("  recall@10 of HNSW against exact search: %.4f\n",
           hits / (double)(nq * DEMO_K));
    printf("  HNSW, one query at a time, 1 thread:   %8.0f queries/s\n",
           (double)nq / t_single);
    printf("  HNSW, batch, %d threads:                %8.0f queries/s\n",
           threads, (double)nq / t_batch);
    printf("  exact (flat), batch, %d threads:        %8.0f queries/s "
           "(HNSW batch / exact: %.1fx)\n", threads, (double)nq / t_exact,
           t_exact / t_batch);

    /* A filtered query: the nearest sneakers to the first test image. */
    const char *want = label_name(generated, 7);
    char ftext[64];
    snprintf(ftext, sizeof ftext, "label = \"%s\"", want);
    iqdb_filter *f = NULL;
    iqdb_parse_error pe;
    if ((r = iqdb_filter_parse(ftext, &f, &pe)) != 0) {
        rc = cli_lib_err(NULL, r, "demo: filter");
        goto out;
    }
    iqdb_results *fr = NULL;
    r = iqdb_search(db, ds.queries.data, (uint32_t)dim, DEMO_K, f, NULL, &fr);
    iqdb_filter_free(f);
    if (r != 0) {
        rc = cli_lib_err(db, r, "demo: filtered search");
        goto out;
    }
    unsigned ql = ds.query_labels ? ds.query_labels[0] : 0;
    printf("\nfiltered query: %s 0 (a \"%s\"), top %d with filter %s\n",
           generated ? "query" : "test image", label_name(generated, ql),
           DEMO_K, ftext);
    printf("  %4s  %8s  %12s  %s\n", "rank", "id", "distance", "label");
    const iqdb_hit *h = iqdb_results_hits(fr, 0);
    for (size_t i = 0; i < iqdb_results_count(fr, 0); i++) {
        iqdb_value v;
        const char *lab = "?";
        size_t len = 1;
        if (h[i].meta && iqdb_meta_get(h[i].meta, "label", &v) == 0 &&
            v.type == IQDB_TYPE_STRING) {
            lab = v.v.s;
            len = v.len;
        }
        printf("  %4zu  %8llu  %12.2f  %.*s\n", i + 1,
               (unsigned long long)h[i].id.v.u64, (double)h[i].distance,
               (int)len, lab);
    }
    iqdb_results_free(fr);
    printf("\nthe database stays in %s; try:\n"
           "  %s info %s\n"
           "  %s search %s --vector \"$(%s get %s 0 | sed -n "
           "'s/^vector: //p')\" -k 5 --filter 'label = \"%s\"'\n",
           dir, cli_self, dir, cli_self, dir, cli_self, dir, want);
out:
    if (db != NULL) {
        int cr = iqdb_close(db);
        if (cr != 0 && rc == 0)
            rc = cli_lib_err(NULL, cr, "demo: close");
    }
    ds_dataset_free(&ds);
    return rc;
}
