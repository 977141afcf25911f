/*
 * bench/dataset.h - data sets shared by the bench programs and the
 * Fashion-MNIST quick-start: MNIST idx files (gzipped or not), generated
 * clustered vectors with a fixed seed, and TEXMEX .fvecs/.ivecs files (the
 * format used to hand the same vectors to the FAISS peer script).
 *
 * Every loader returns 0 on success or -1 with a message naming the file
 * and the problem written to err[0..errlen). Matrices and label arrays are
 * owned by the caller and freed with ds_matrix_free() / free() /
 * ds_dataset_free().
 */
#ifndef IQDB_BENCH_DATASET_H
#define IQDB_BENCH_DATASET_H

#include <stddef.h>
#include <stdint.h>

/* Where the Debian package dataset-fashion-mnist installs its files. */
#define DS_FMNIST_DIR "/usr/share/datasets/fashion-mnist"
/* The number of Fashion-MNIST classes (labels 0..9). */
#define DS_FMNIST_CLASSES 10

/* A dense row-major float32 matrix: row i is data[i*dim .. i*dim+dim). */
typedef struct ds_matrix {
    float *data; /* 64-byte aligned; NULL when empty */
    size_t rows;
    size_t dim;
} ds_matrix;

/* Base vectors and queries drawn from one source, with optional labels. */
typedef struct ds_dataset {
    char name[64];
    ds_matrix base;
    ds_matrix queries;
    uint8_t *base_labels;  /* base.rows entries, or NULL */
    uint8_t *query_labels; /* queries.rows entries, or NULL */
} ds_dataset;

/* Parameters of the generated clustered data set. */
typedef struct ds_gen_spec {
    size_t n;        /* base rows */
    size_t nq;       /* query rows */
    size_t dim;
    size_t clusters; /* Gaussian clusters; labels kept when <= 256 */
    double spread;   /* centres uniform on [-spread, spread)^dim */
    double sigma;    /* per-coordinate noise standard deviation */
    uint64_t seed;
} ds_gen_spec;

/* Allocate a zeroed rows x dim matrix; -1 when too large or out of memory. */
int ds_matrix_alloc(ds_matrix *m, size_t rows, size_t dim, char *err,
                    size_t errlen);
/* Free m's data and reset it; NULL data is fine. */
void ds_matrix_free(ds_matrix *m);
/* Keep only the first `rows` rows (no reallocation). */
void ds_matrix_truncate(ds_matrix *m, size_t rows);

/* Free everything a data set owns and reset it. */
void ds_dataset_free(ds_dataset *d);

/*
 * MNIST idx files. Both accept plain or gzipped files (zlib reads either).
 * An idx3 ubyte file (magic 0x00000803) becomes one row per image of
 * rows*cols float32 pixel values 0..255, not normalised. An idx1 ubyte
 * file (magic 0x00000801) becomes one uint8 label per item. The whole file
 * is validated: magic, non-zero sane dimensions, complete payload, no
 * trailing bytes, gzip stream integrity.
 */
int ds_idx3_load(const char *path, ds_matrix *out, char *err, size_t errlen);
int ds_idx1_load(const char *path, uint8_t **labels, size_t *n, char *err,
                 size_t errlen);

/* 1 when all four Fashion-MNIST files exist under dir, else 0. */
int ds_fmnist_present(const char *dir);
/* Load Fashion-MNIST from dir: the 60k train images as base, the 10k
 * test images as queries, both with labels; checks that image and label
 * counts agree, that train and test share a dimension and that every
 * label is a valid class. */
int ds_fmnist_load(const char *dir, ds_dataset *out, char *err,
                   size_t errlen);
/* The class name of a Fashion-MNIST label ("T-shirt/top" ... "Ankle
 * boot"), or "?" for an out-of-range label. Static storage. */
const char *ds_fmnist_class_name(unsigned label);

/* The default generated set: 200k x 128, 1000 queries, 1000 clusters. */
void ds_gen_spec_default(ds_gen_spec *spec);
/*
 * Generate a clustered data set: cluster centres uniform in a cube, each
 * point a uniformly chosen centre plus Gaussian noise. Base and queries
 * come from the same distribution (the same centres) through separate
 * random streams, so the queries are not copies of base points. The same
 * spec gives the same numbers on every platform (own PRNG; see
 * dataset.c for the one caveat about libm).
 */
int ds_gen_clustered(const ds_gen_spec *spec, ds_dataset *out, char *err,
                     size_t errlen);

/* TEXMEX .fvecs: each vector is a little-endian int32 dimension followed
 * by that many float32 values. All vectors in a file share a dimension. */
int ds_fvecs_write(const char *path, const ds_matrix *m, char *err,
                   size_t errlen);
int ds_fvecs_read(const char *path, ds_matrix *out, char *err,
                  size_t errlen);
/* TEXMEX .ivecs: the same layout with int32 values. *out holds
 * (*rows) * (*dim) values; free it with free(). */
int ds_ivecs_read(const char *path, int32_t **out, size_t *rows,
                  size_t *dim, char *err, size_t errlen);

#endif /* IQDB_BENCH_DATASET_H */
