/*
 * bench/fmnist_topk.c - the README's quick-start job, until the CLI
 * exists: load the 60k Fashion-MNIST training images into an in-memory
 * iqdb database (flat index, euclidean) with their class as metadata, run
 * the first 1000 test images as queries, and show the top-10 of a few,
 * the queries per second, the 1-NN label accuracy, and a filtered query.
 * Without the data set it says so and runs the same steps on generated
 * clustered data. Exits non-zero on any library error.
 *
 *   fmnist_topk [--fmnist-dir DIR] [--queries N]
 */
#define _POSIX_C_SOURCE 200809L

#include <iqdb/iqdb.h>

#include "dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define K 10
#define BATCH 5000
#define SHOWN_QUERIES 3
/* Classes of the generated stand-in: few enough for uint8 labels and a
 * readable filter. */
#define GEN_CLASSES 10

static const char *prog = "fmnist_topk";

/* Class names: Fashion-MNIST's, or "cluster N" for generated data. */
static char gen_names[GEN_CLASSES][16];
static int use_gen_names;

static const char *class_name(unsigned label)
{
    if (use_gen_names)
        return label < GEN_CLASSES ? gen_names[label] : "?";
    return ds_fmnist_class_name(label);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check(const iqdb *db, int rc, const char *what)
{
    if (rc == 0)
        return;
    fprintf(stderr, "%s: %s failed: %s: %s\n", prog, what, iqdb_errname(rc),
            iqdb_errmsg(db));
    exit(1);
}

/* Load Fashion-MNIST, or fall back to generated data with 10 classes. */
static void load_data(const char *dir, size_t nq, ds_dataset *d)
{
    char err[1024];

    if (ds_fmnist_present(dir)) {
        if (ds_fmnist_load(dir, d, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: %s\n", prog, err);
            exit(1);
        }
    } else {
        ds_gen_spec spec;
        unsigned i;

        printf("Fashion-MNIST not found in %s (install the Debian package "
               "dataset-fashion-mnist);\nusing generated data instead: "
               "60000 + %zu vectors of dimension 128 in %d clusters.\n\n",
               dir, nq, GEN_CLASSES);
        ds_gen_spec_default(&spec);
        spec.n = 60000;
        spec.nq = nq;
        spec.clusters = GEN_CLASSES;
        if (ds_gen_clustered(&spec, d, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s: %s\n", prog, err);
            exit(1);
        }
        for (i = 0; i < GEN_CLASSES; i++)
            snprintf(gen_names[i], sizeof(gen_names[i]), "cluster %u", i);
        use_gen_names = 1;
    }
    ds_matrix_truncate(&d->queries, nq);
}

/* One metadata map per class, shared by all records of that class: the
 * library copies what it keeps. */
static void make_metas(iqdb_meta **metas)
{
    unsigned c;

    for (c = 0; c < GEN_CLASSES; c++) {
        metas[c] = iqdb_meta_new();
        if (metas[c] == NULL) {
            fprintf(stderr, "%s: iqdb_meta_new: out of memory\n", prog);
            exit(1);
        }
        check(NULL, iqdb_meta_set(metas[c], "label",
                                  iqdb_value_str(class_name(c))),
              "iqdb_meta_set(label)");
        check(NULL, iqdb_meta_set(metas[c], "label_id", iqdb_value_int(c)),
              "iqdb_meta_set(label_id)");
    }
}

static iqdb *open_db(size_t dim)
{
    iqdb_config *cfg = iqdb_config_new((uint32_t)dim, IQDB_METRIC_EUCLIDEAN);
    iqdb *db = NULL;
    int rc;

    if (cfg == NULL) {
        fprintf(stderr, "%s: iqdb_config_new: out of memory\n", prog);
        exit(1);
    }
    rc = iqdb_config_set_index(cfg, "flat");
    if (rc == 0)
        rc = iqdb_open_memory(cfg, &db);
    iqdb_config_free(cfg);
    check(NULL, rc, "opening the in-memory database");
    return db;
}

static void insert_all(iqdb *db, const ds_dataset *d, iqdb_meta **metas)
{
    iqdb_record *recs = calloc(BATCH, sizeof(*recs));
    double t0 = now_s();
    size_t i, j;

    if (recs == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit(1);
    }
    for (i = 0; i < d->base.rows; i += BATCH) {
        size_t m = d->base.rows - i < BATCH ? d->base.rows - i : BATCH;

        for (j = 0; j < m; j++) {
            recs[j].id = iqdb_id_u64(i + j);
            recs[j].vector = d->base.data + (i + j) * d->base.dim;
            recs[j].meta = metas[d->base_labels[i + j]];
        }
        check(db, iqdb_upsert_batch(db, recs, m, (uint32_t)d->base.dim),
              "iqdb_upsert_batch");
    }
    free(recs);
    printf("loaded %zu vectors of dimension %zu into an in-memory database "
           "(%s index, euclidean) in %.2f s\n\n",
           iqdb_count(db), d->base.dim, iqdb_index_name(db), now_s() - t0);
}

/* The string value of key in m, or "-" when absent. */
static void meta_str(const iqdb_meta *m, const char *key, const char **s,
                     int *len)
{
    iqdb_value v;

    if (m != NULL && iqdb_meta_get(m, key, &v) == 0 &&
        v.type == IQDB_TYPE_STRING) {
        *s = v.v.s;
        *len = (int)v.len;
    } else {
        *s = "-";
        *len = 1;
    }
}

static void print_hits(const iqdb_results *res)
{
    const iqdb_hit *hits = iqdb_results_hits(res, 0);
    size_t n = iqdb_results_count(res, 0), i;

    printf("  %4s  %8s  %10s  %s\n", "rank", "id", "distance", "label");
    for (i = 0; i < n; i++) {
        const char *s;
        int len;

        meta_str(hits[i].meta, "label", &s, &len);
        printf("  %4zu  %8llu  %10.2f  %.*s\n", i + 1,
               (unsigned long long)hits[i].id.v.u64, hits[i].distance, len,
               s);
    }
}

/* The label_id of the nearest hit, or -1. */
static long long top_label(const iqdb_results *res)
{
    const iqdb_hit *hits = iqdb_results_hits(res, 0);
    iqdb_value v;

    if (iqdb_results_count(res, 0) == 0 || hits[0].meta == NULL ||
        iqdb_meta_get(hits[0].meta, "label_id", &v) != 0 ||
        v.type != IQDB_TYPE_INT)
        return -1;
    return (long long)v.v.i;
}

static void run_queries(iqdb *db, const ds_dataset *d)
{
    const ds_matrix *q = &d->queries;
    size_t i, correct = 0;
    double t0, dt;

    t0 = now_s();
    for (i = 0; i < q->rows; i++) {
        iqdb_results *res = NULL;

        check(db,
              iqdb_search(db, q->data + i * q->dim, (uint32_t)q->dim, K, NULL,
                          NULL, &res),
              "iqdb_search");
        if (top_label(res) == (long long)d->query_labels[i])
            correct++;
        if (i < SHOWN_QUERIES) {
            printf("query %zu (%s %zu), true label: %s\n", i,
                   use_gen_names ? "generated query" : "test image", i,
                   class_name(d->query_labels[i]));
            print_hits(res);
            printf("\n");
        }
        iqdb_results_free(res);
    }
    dt = now_s() - t0;
    printf("%zu queries (exact top-%d, one at a time) in %.2f s: %.1f "
           "queries per second\n",
           q->rows, K, dt, (double)q->rows / dt);
    printf("1-NN label accuracy: %.2f%% (%zu of %zu queries)\n\n",
           100.0 * (double)correct / (double)q->rows, correct, q->rows);
}

/* Query 0 again, restricted to one class through a parsed filter. */
static void run_filtered(iqdb *db, const ds_dataset *d)
{
    unsigned want = 7; /* "Sneaker", or "cluster 7" for generated data */
    char text[128];
    iqdb_filter *f = NULL;
    iqdb_parse_error perr;
    iqdb_results *res = NULL;
    const iqdb_hit *hits;
    size_t i, n, off = 0;
    int rc;

    snprintf(text, sizeof(text), "label = \"%s\"", class_name(want));
    rc = iqdb_filter_parse(text, &f, &perr);
    if (rc == IQDB_EPARSE) {
        fprintf(stderr, "%s: filter %s: at byte %zu: %s\n", prog, text,
                perr.offset, perr.message);
        exit(1);
    }
    check(NULL, rc, "iqdb_filter_parse");
    rc = iqdb_search(db, d->queries.data, (uint32_t)d->queries.dim, K, f,
                     NULL, &res);
    iqdb_filter_free(f);
    check(db, rc, "iqdb_search (filtered)");
    printf("filtered query: %s 0 (true label: %s), filter: %s\n",
           use_gen_names ? "generated query" : "test image",
           class_name(d->query_labels[0]), text);
    print_hits(res);
    hits = iqdb_results_hits(res, 0);
    n = iqdb_results_count(res, 0);
    for (i = 0; i < n; i++) {
        const char *s;
        int len;

        meta_str(hits[i].meta, "label", &s, &len);
        if ((size_t)len != strlen(class_name(want)) ||
            memcmp(s, class_name(want), (size_t)len) != 0)
            off++;
    }
    iqdb_results_free(res);
    if (n != K || off != 0) {
        fprintf(stderr,
                "%s: the filtered query returned %zu hits, %zu of them "
                "outside the filter\n",
                prog, n, off);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    const char *dir = DS_FMNIST_DIR;
    size_t nq = 1000;
    iqdb_meta *metas[GEN_CLASSES];
    ds_dataset d;
    iqdb *db;
    int i;

#ifdef IQDB_BUILD_PLUGINS
    /* Built, not installed: find the plugins of this build tree first. */
    iqdb_plugin_add_dir(IQDB_BUILD_PLUGINS);
#endif
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fmnist-dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--queries") == 0 && i + 1 < argc) {
            char *end;

            errno = 0;
            nq = strtoul(argv[++i], &end, 10);
            if (errno != 0 || *end != '\0' || nq == 0 || nq > 10000) {
                fprintf(stderr, "%s: --queries wants 1..10000\n", prog);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [--fmnist-dir DIR] [--queries N]\n",
                    prog);
            return 2;
        }
    }
    load_data(dir, nq, &d);
    make_metas(metas);
    db = open_db(d.base.dim);
    insert_all(db, &d, metas);
    run_queries(db, &d);
    run_filtered(db, &d);
    iqdb_close(db);
    for (i = 0; i < GEN_CLASSES; i++)
        iqdb_meta_free(metas[i]);
    ds_dataset_free(&d);
    return 0;
}
