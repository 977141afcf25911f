/*
 * bench/dataset.c - loaders and generators for the bench programs: MNIST
 * idx files through zlib, a deterministic clustered generator, and TEXMEX
 * .fvecs/.ivecs files. See dataset.h for the contracts.
 *
 * idx layout (http://yann.lecun.com/exdb/mnist/), all integers big-endian:
 *
 *   offset 0  u8  0
 *   offset 1  u8  0
 *   offset 2  u8  element type (0x08 = unsigned byte)
 *   offset 3  u8  number of dimensions (3 for images, 1 for labels)
 *   offset 4  u32 size of dimension 0 (the item count), then one u32 per
 *                 further dimension (rows, cols for images)
 *   then      the items, row-major, one byte per element
 *
 * fvecs/ivecs layout (TEXMEX), little-endian, repeated once per vector:
 *
 *   i32 d, then d values (float32 for fvecs, int32 for ivecs)
 */
#define _POSIX_C_SOURCE 200809L

#include "dataset.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <zlib.h>

/* Bounds that keep a corrupt header from asking for absurd allocations. */
#define DS_MAX_DIM 65536u
#define DS_MAX_BYTES ((size_t)1 << 36)
/* Bytes decoded per gzread call while converting pixels to floats. */
#define DS_CHUNK ((size_t)1 << 20)

static const char *const fmnist_names[DS_FMNIST_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

__attribute__((format(printf, 3, 4))) static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Matrices                                                             */

int ds_matrix_alloc(ds_matrix *m, size_t rows, size_t dim, char *err,
                    size_t errlen)
{
    size_t bytes;

    m->data = NULL;
    m->rows = 0;
    m->dim = 0;
    if (rows == 0 || dim == 0) {
        seterr(err, errlen, "empty matrix (%zu x %zu)", rows, dim);
        return -1;
    }
    if (dim > DS_MAX_DIM || rows > DS_MAX_BYTES / sizeof(float) / dim) {
        seterr(err, errlen, "matrix of %zu x %zu floats is too large", rows,
               dim);
        return -1;
    }
    /* aligned_alloc wants a size that is a multiple of the alignment. */
    bytes = (rows * dim * sizeof(float) + 63) & ~(size_t)63;
    m->data = aligned_alloc(64, bytes);
    if (m->data == NULL) {
        seterr(err, errlen, "out of memory for %zu x %zu floats (%.1f MiB)",
               rows, dim, (double)bytes / (1024.0 * 1024.0));
        return -1;
    }
    m->rows = rows;
    m->dim = dim;
    return 0;
}

void ds_matrix_free(ds_matrix *m)
{
    if (m == NULL)
        return;
    free(m->data);
    m->data = NULL;
    m->rows = 0;
    m->dim = 0;
}

void ds_matrix_truncate(ds_matrix *m, size_t rows)
{
    if (rows < m->rows)
        m->rows = rows;
}

void ds_dataset_free(ds_dataset *d)
{
    if (d == NULL)
        return;
    ds_matrix_free(&d->base);
    ds_matrix_free(&d->queries);
    free(d->base_labels);
    free(d->query_labels);
    memset(d, 0, sizeof(*d));
}

/* ------------------------------------------------------------------ */
/* idx files through zlib                                               */

/*
 * Read up to len bytes. Returns the count read (short only at the end of
 * the data), or -1 after a zlib error, with the message in err. gzread
 * takes an unsigned int, so large reads are split.
 */
/* zlib's gzerror() message starts with "path: "; drop it, since our
 * messages name the file already. */
static const char *gz_reason(gzFile f, const char *path, int *zerr)
{
    const char *msg = gzerror(f, zerr);
    size_t plen = strlen(path);

    if (msg == NULL)
        return "unknown zlib error";
    if (strncmp(msg, path, plen) == 0 && msg[plen] == ':' &&
        msg[plen + 1] == ' ')
        msg += plen + 2;
    return msg;
}

static long long gz_read_full(gzFile f, const char *path, void *buf,
                              size_t len, char *err, size_t errlen)
{
    unsigned char *p = buf;
    size_t done = 0;
    /* Where this read starts in the uncompressed data, for the messages. */
    long long base = (long long)gztell(f);

    while (done < len) {
        size_t want = len - done;
        int got;

        if (want > (size_t)1 << 30)
            want = (size_t)1 << 30;
        got = gzread(f, p + done, (unsigned)want);
        if (got < 0) {
            int zerr;
            const char *msg = gz_reason(f, path, &zerr);

            seterr(err, errlen,
                   "%s: corrupt gzip stream near uncompressed byte %lld: %s",
                   path, base + (long long)done, msg);
            return -1;
        }
        if (got == 0)
            break;
        done += (size_t)got;
    }
    if (done < len) {
        int zerr;
        const char *msg = gz_reason(f, path, &zerr);

        /* A gzip stream cut short ends with Z_BUF_ERROR rather than EOF:
         * say so, since "truncated" alone would hide which layer broke. */
        if (zerr != Z_OK && zerr != Z_STREAM_END) {
            seterr(err, errlen,
                   "%s: truncated or corrupt gzip stream after %lld bytes "
                   "of uncompressed data: %s",
                   path, base + (long long)done, msg);
            return -1;
        }
    }
    return (long long)done;
}

static gzFile gz_open_read(const char *path, char *err, size_t errlen)
{
    gzFile f;

    errno = 0;
    f = gzopen(path, "rb");
    if (f == NULL) {
        seterr(err, errlen, "%s: cannot open: %s", path,
               errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    /* A bigger buffer than zlib's 8 KiB default halves the load time. */
    gzbuffer(f, 1u << 17);
    return f;
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
           (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/*
 * Read and check an idx header of `want_dims` dimensions into dims[].
 * `what` names the expected kind of file for the messages.
 */
static int idx_header(gzFile f, const char *path, unsigned want_dims,
                      const char *what, uint32_t *dims, char *err,
                      size_t errlen)
{
    unsigned char hdr[4 + 4 * 3];
    size_t hlen = 4 + 4 * (size_t)want_dims;
    long long got;
    unsigned i;

    got = gz_read_full(f, path, hdr, 4, err, errlen);
    if (got < 0)
        return -1;
    if (got < 4) {
        seterr(err, errlen,
               "%s: truncated: %lld bytes, shorter than the 4-byte idx magic",
               path, got);
        return -1;
    }
    if (hdr[0] != 0 || hdr[1] != 0) {
        seterr(err, errlen,
               "%s: not an idx file (magic bytes %02x %02x %02x %02x, "
               "expected 00 00 08 %02x)",
               path, hdr[0], hdr[1], hdr[2], hdr[3], want_dims);
        return -1;
    }
    if (hdr[2] != 0x08) {
        seterr(err, errlen,
               "%s: idx element type 0x%02x is not unsigned byte (0x08)",
               path, hdr[2]);
        return -1;
    }
    if (hdr[3] != want_dims) {
        seterr(err, errlen,
               "%s: idx file has %u dimension(s), expected %u (%s)", path,
               hdr[3], want_dims, what);
        return -1;
    }
    got = gz_read_full(f, path, hdr + 4, hlen - 4, err, errlen);
    if (got < 0)
        return -1;
    if ((size_t)got < hlen - 4) {
        seterr(err, errlen,
               "%s: truncated: the file ends inside the idx header (%lld of "
               "%zu bytes)",
               path, got + 4, hlen);
        return -1;
    }
    for (i = 0; i < want_dims; i++) {
        dims[i] = be32(hdr + 4 + 4 * i);
        if (dims[i] == 0) {
            seterr(err, errlen, "%s: idx dimension %u is zero", path, i);
            return -1;
        }
    }
    return 0;
}

/* After the declared payload there must be nothing left. */
static int idx_expect_end(gzFile f, const char *path, size_t items,
                          const char *unit, char *err, size_t errlen)
{
    unsigned char extra;
    long long got = gz_read_full(f, path, &extra, 1, err, errlen);

    if (got < 0)
        return -1;
    if (got > 0) {
        seterr(err, errlen,
               "%s: trailing bytes after the %zu %s the header declares "
               "(wrong file or corrupt header)",
               path, items, unit);
        return -1;
    }
    return 0;
}

int ds_idx3_load(const char *path, ds_matrix *out, char *err, size_t errlen)
{
    uint32_t dims[3];
    unsigned char *chunk = NULL;
    size_t dim, total, done = 0;
    gzFile f;

    memset(out, 0, sizeof(*out));
    f = gz_open_read(path, err, errlen);
    if (f == NULL)
        return -1;
    if (idx_header(f, path, 3, "an idx3 image file", dims, err, errlen) != 0)
        goto fail;
    dim = (size_t)dims[1] * dims[2];
    if (dim > DS_MAX_DIM) {
        seterr(err, errlen,
               "%s: images of %u x %u pixels exceed %u values per vector",
               path, dims[1], dims[2], DS_MAX_DIM);
        goto fail;
    }
    if (ds_matrix_alloc(out, dims[0], dim, err, errlen) != 0) {
        /* Prefix the file name: the matrix message alone lacks it. */
        char why[160];

        snprintf(why, sizeof(why), "%s", err ? err : "");
        seterr(err, errlen, "%s: header claims %u images of %u x %u: %s",
               path, dims[0], dims[1], dims[2], why);
        goto fail;
    }
    chunk = malloc(DS_CHUNK);
    if (chunk == NULL) {
        seterr(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    /* Decode in chunks so the byte image never exists in full next to the
     * float copy. */
    total = out->rows * dim;
    while (done < total) {
        size_t want = total - done < DS_CHUNK ? total - done : DS_CHUNK;
        long long got = gz_read_full(f, path, chunk, want, err, errlen);
        size_t i;

        if (got < 0)
            goto fail;
        for (i = 0; i < (size_t)got; i++)
            out->data[done + i] = (float)chunk[i];
        done += (size_t)got;
        if ((size_t)got < want) {
            seterr(err, errlen,
                   "%s: truncated: the header declares %zu images of %u x %u "
                   "(%zu bytes of pixels) but the file ends after %zu bytes "
                   "(%zu complete images)",
                   path, out->rows, dims[1], dims[2], total, done,
                   done / dim);
            goto fail;
        }
    }
    if (idx_expect_end(f, path, out->rows, "images", err, errlen) != 0)
        goto fail;
    free(chunk);
    gzclose(f);
    return 0;

fail:
    free(chunk);
    ds_matrix_free(out);
    gzclose(f);
    return -1;
}

int ds_idx1_load(const char *path, uint8_t **labels, size_t *n, char *err,
                 size_t errlen)
{
    uint32_t dims[1];
    uint8_t *buf = NULL;
    long long got;
    gzFile f;

    *labels = NULL;
    *n = 0;
    f = gz_open_read(path, err, errlen);
    if (f == NULL)
        return -1;
    if (idx_header(f, path, 1, "an idx1 label file", dims, err, errlen) != 0)
        goto fail;
    /* dims[0] < 2^32 bytes: no overflow check is needed here. */
    buf = malloc(dims[0]);
    if (buf == NULL) {
        seterr(err, errlen, "%s: out of memory for %u labels", path,
               dims[0]);
        goto fail;
    }
    got = gz_read_full(f, path, buf, dims[0], err, errlen);
    if (got < 0)
        goto fail;
    if ((size_t)got < dims[0]) {
        seterr(err, errlen,
               "%s: truncated: the header declares %u labels but the file "
               "holds %lld",
               path, dims[0], got);
        goto fail;
    }
    if (idx_expect_end(f, path, dims[0], "labels", err, errlen) != 0)
        goto fail;
    gzclose(f);
    *labels = buf;
    *n = dims[0];
    return 0;

fail:
    free(buf);
    gzclose(f);
    return -1;
}

/* ------------------------------------------------------------------ */
/* Fashion-MNIST                                                        */

/* Find dir/stem.gz or, failing that, dir/stem (an unpacked copy). */
static int fmnist_path(const char *dir, const char *stem, char *buf,
                       size_t len)
{
    snprintf(buf, len, "%s/%s.gz", dir, stem);
    if (access(buf, R_OK) == 0)
        return 0;
    snprintf(buf, len, "%s/%s", dir, stem);
    if (access(buf, R_OK) == 0)
        return 0;
    snprintf(buf, len, "%s/%s.gz", dir, stem);
    return -1;
}

static const char *const fmnist_stems[4] = {
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",  "t10k-labels-idx1-ubyte",
};

int ds_fmnist_present(const char *dir)
{
    char path[4096];
    size_t i;

    for (i = 0; i < 4; i++)
        if (fmnist_path(dir, fmnist_stems[i], path, sizeof(path)) != 0)
            return 0;
    return 1;
}

/* Load one images + labels pair and check that they belong together. */
static int fmnist_pair(const char *dir, const char *img_stem,
                       const char *lab_stem, ds_matrix *img, uint8_t **lab,
                       char *err, size_t errlen)
{
    char ipath[4096], lpath[4096];
    size_t nlab, i;

    fmnist_path(dir, img_stem, ipath, sizeof(ipath));
    fmnist_path(dir, lab_stem, lpath, sizeof(lpath));
    if (ds_idx3_load(ipath, img, err, errlen) != 0)
        return -1;
    if (ds_idx1_load(lpath, lab, &nlab, err, errlen) != 0)
        goto fail;
    if (nlab != img->rows) {
        seterr(err, errlen, "%s holds %zu labels but %s holds %zu images",
               lpath, nlab, ipath, img->rows);
        goto fail;
    }
    for (i = 0; i < nlab; i++) {
        if ((*lab)[i] >= DS_FMNIST_CLASSES) {
            seterr(err, errlen,
                   "%s: label %zu is %u, outside the classes 0..%d", lpath,
                   i, (*lab)[i], DS_FMNIST_CLASSES - 1);
            goto fail;
        }
    }
    return 0;

fail:
    ds_matrix_free(img);
    free(*lab);
    *lab = NULL;
    return -1;
}

int ds_fmnist_load(const char *dir, ds_dataset *out, char *err,
                   size_t errlen)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "fashion-mnist");
    if (fmnist_pair(dir, fmnist_stems[0], fmnist_stems[1], &out->base,
                    &out->base_labels, err, errlen) != 0)
        return -1;
    if (fmnist_pair(dir, fmnist_stems[2], fmnist_stems[3], &out->queries,
                    &out->query_labels, err, errlen) != 0)
        goto fail;
    if (out->queries.dim != out->base.dim) {
        seterr(err, errlen,
               "%s: test images have %zu pixels but train images have %zu",
               dir, out->queries.dim, out->base.dim);
        goto fail;
    }
    return 0;

fail:
    ds_dataset_free(out);
    return -1;
}

const char *ds_fmnist_class_name(unsigned label)
{
    return label < DS_FMNIST_CLASSES ? fmnist_names[label] : "?";
}

/* ------------------------------------------------------------------ */
/* Generated clustered data                                             */

/*
 * splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
 * generators", 2014): integer-only, so the stream is bit-identical on
 * every platform. Each use (centres, base, queries) gets its own stream
 * whose start is the seed and a stream number run through the mixer.
 */
typedef struct ds_rng {
    uint64_t state;
    double spare; /* second Box-Muller value */
    int has_spare;
} ds_rng;

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rng_next(ds_rng *r)
{
    r->state += 0x9e3779b97f4a7c15ull;
    return mix64(r->state);
}

static void rng_init(ds_rng *r, uint64_t seed, uint64_t stream)
{
    r->state = mix64(seed ^ mix64(stream + 0x632be59bd9b4e019ull));
    r->has_spare = 0;
    r->spare = 0.0;
}

/* Uniform on [0, 1) with 53 random bits. */
static double rng_uniform(ds_rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/*
 * Standard normal by Box-Muller. Caveat: log, sqrt-of-log and sin/cos come
 * from libm, which may differ in the last bit of a double between
 * implementations; after rounding to float that almost never shows, but
 * bit-identity is promised only for the integer stream.
 */
static double rng_gauss(ds_rng *r)
{
    const double two_pi = 6.283185307179586476925286766559;
    double u1, u2, rad;

    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    /* u1 in (0, 1] keeps log() finite. */
    u1 = (double)((rng_next(r) >> 11) + 1) * 0x1.0p-53;
    u2 = rng_uniform(r);
    rad = sqrt(-2.0 * log(u1));
    r->spare = rad * sin(two_pi * u2);
    r->has_spare = 1;
    return rad * cos(two_pi * u2);
}

void ds_gen_spec_default(ds_gen_spec *spec)
{
    spec->n = 200000;
    spec->nq = 1000;
    spec->dim = 128;
    spec->clusters = 1000;
    /* Centres ~9 apart on average in 128-d, points ~4 apart within a
     * cluster: neighbours come mostly from the query's own cluster, but
     * the clusters are not trivially separable. */
    spec->spread = 1.0;
    spec->sigma = 0.25;
    spec->seed = 0x69716462u; /* "iqdb" */
}

static void gen_points(const ds_gen_spec *spec, const float *centres,
                       uint64_t stream, ds_matrix *m, uint8_t *labels)
{
    ds_rng r;
    size_t i, j;

    rng_init(&r, spec->seed, stream);
    for (i = 0; i < m->rows; i++) {
        /* Modulo bias is clusters / 2^64: negligible, and deterministic. */
        size_t c = (size_t)(rng_next(&r) % spec->clusters);
        const float *ctr = centres + c * spec->dim;
        float *row = m->data + i * m->dim;

        for (j = 0; j < spec->dim; j++)
            row[j] = (float)(ctr[j] + spec->sigma * rng_gauss(&r));
        if (labels != NULL)
            labels[i] = (uint8_t)c;
    }
}

int ds_gen_clustered(const ds_gen_spec *spec, ds_dataset *out, char *err,
                     size_t errlen)
{
    ds_matrix centres;
    ds_rng r;
    size_t i;
    int keep_labels = spec->clusters <= 256;

    memset(out, 0, sizeof(*out));
    if (spec->clusters == 0 || spec->n == 0 || spec->nq == 0 ||
        !(spec->sigma >= 0.0) || !(spec->spread > 0.0)) {
        seterr(err, errlen,
               "generated data: bad spec (n %zu, queries %zu, clusters %zu, "
               "spread %g, sigma %g)",
               spec->n, spec->nq, spec->clusters, spec->spread, spec->sigma);
        return -1;
    }
    snprintf(out->name, sizeof(out->name), "generated");
    if (ds_matrix_alloc(&centres, spec->clusters, spec->dim, err, errlen) !=
        0)
        return -1;
    rng_init(&r, spec->seed, 0);
    for (i = 0; i < spec->clusters * spec->dim; i++)
        centres.data[i] =
            (float)(spec->spread * (2.0 * rng_uniform(&r) - 1.0));
    if (ds_matrix_alloc(&out->base, spec->n, spec->dim, err, errlen) != 0 ||
        ds_matrix_alloc(&out->queries, spec->nq, spec->dim, err, errlen) !=
            0)
        goto fail;
    if (keep_labels) {
        out->base_labels = malloc(spec->n);
        out->query_labels = malloc(spec->nq);
        if (out->base_labels == NULL || out->query_labels == NULL) {
            seterr(err, errlen, "generated data: out of memory for labels");
            goto fail;
        }
    }
    gen_points(spec, centres.data, 1, &out->base, out->base_labels);
    gen_points(spec, centres.data, 2, &out->queries, out->query_labels);
    ds_matrix_free(&centres);
    return 0;

fail:
    ds_matrix_free(&centres);
    ds_dataset_free(out);
    return -1;
}

/* ------------------------------------------------------------------ */
/* TEXMEX .fvecs / .ivecs                                               */

static int host_is_le(void)
{
    const uint32_t one = 1;
    unsigned char b;

    memcpy(&b, &one, 1);
    return b == 1;
}

static void swap32_n(void *p, size_t n)
{
    unsigned char *b = p;
    size_t i;

    for (i = 0; i < n; i++, b += 4) {
        unsigned char t0 = b[0], t1 = b[1];

        b[0] = b[3];
        b[1] = b[2];
        b[2] = t1;
        b[3] = t0;
    }
}

int ds_fvecs_write(const char *path, const ds_matrix *m, char *err,
                   size_t errlen)
{
    unsigned char *rec;
    size_t reclen = 4 + 4 * m->dim, i;
    int32_t d = (int32_t)m->dim;
    int le = host_is_le();
    FILE *f;

    if (m->dim == 0 || m->dim > DS_MAX_DIM) {
        seterr(err, errlen, "%s: cannot write vectors of dimension %zu",
               path, m->dim);
        return -1;
    }
    rec = malloc(reclen);
    if (rec == NULL) {
        seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    f = fopen(path, "wb");
    if (f == NULL) {
        seterr(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        free(rec);
        return -1;
    }
    for (i = 0; i < m->rows; i++) {
        memcpy(rec, &d, 4);
        memcpy(rec + 4, m->data + i * m->dim, 4 * m->dim);
        if (!le)
            swap32_n(rec, 1 + m->dim);
        if (fwrite(rec, 1, reclen, f) != reclen) {
            seterr(err, errlen, "%s: write failed at vector %zu: %s", path,
                   i, strerror(errno));
            fclose(f);
            free(rec);
            return -1;
        }
    }
    free(rec);
    if (fclose(f) != 0) {
        seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/*
 * Read a TEXMEX file of 4-byte values into dst, which read_vecs allocates
 * through `alloc` once the shape is known. Shared by fvecs and ivecs.
 */
typedef void *(*vecs_alloc_fn)(void *ctx, size_t rows, size_t dim, char *err,
                               size_t errlen);

static int read_vecs(const char *path, vecs_alloc_fn alloc, void *ctx,
                     char *err, size_t errlen)
{
    unsigned char *dst;
    size_t rows, dim, reclen, i;
    int32_t d0;
    off_t size;
    FILE *f = fopen(path, "rb");

    if (f == NULL) {
        seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (fseeko(f, 0, SEEK_END) != 0 || (size = ftello(f)) < 0 ||
        fseeko(f, 0, SEEK_SET) != 0) {
        seterr(err, errlen, "%s: cannot seek: %s", path, strerror(errno));
        goto fail;
    }
    if (size < 4 || fread(&d0, 4, 1, f) != 1) {
        seterr(err, errlen, "%s: truncated: %lld bytes, no vector header",
               path, (long long)size);
        goto fail;
    }
    if (!host_is_le())
        swap32_n(&d0, 1);
    if (d0 <= 0 || (uint32_t)d0 > DS_MAX_DIM) {
        seterr(err, errlen, "%s: first vector has dimension %ld", path,
               (long)d0);
        goto fail;
    }
    dim = (size_t)d0;
    reclen = 4 + 4 * dim;
    if ((unsigned long long)size % reclen != 0) {
        seterr(err, errlen,
               "%s: size %lld is not a multiple of the %zu-byte record for "
               "dimension %zu (truncated or mixed dimensions)",
               path, (long long)size, reclen, dim);
        goto fail;
    }
    rows = (size_t)((unsigned long long)size / reclen);
    dst = alloc(ctx, rows, dim, err, errlen);
    if (dst == NULL)
        goto fail;
    rewind(f);
    for (i = 0; i < rows; i++) {
        int32_t d;
        unsigned char *row = dst + i * dim * 4;

        if (fread(&d, 4, 1, f) != 1 || fread(row, 4, dim, f) != dim) {
            seterr(err, errlen, "%s: read failed at vector %zu", path, i);
            goto fail;
        }
        if (!host_is_le()) {
            swap32_n(&d, 1);
            swap32_n(row, dim);
        }
        if (d != d0) {
            seterr(err, errlen,
                   "%s: vector %zu has dimension %ld, the first has %zu",
                   path, i, (long)d, dim);
            goto fail;
        }
    }
    fclose(f);
    return 0;

fail:
    fclose(f);
    return -1;
}

static void *fvecs_alloc(void *ctx, size_t rows, size_t dim, char *err,
                         size_t errlen)
{
    ds_matrix *m = ctx;

    if (ds_matrix_alloc(m, rows, dim, err, errlen) != 0)
        return NULL;
    return m->data;
}

int ds_fvecs_read(const char *path, ds_matrix *out, char *err,
                  size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (read_vecs(path, fvecs_alloc, out, err, errlen) != 0) {
        ds_matrix_free(out);
        return -1;
    }
    return 0;
}

typedef struct ivecs_ctx {
    int32_t *data;
    size_t rows;
    size_t dim;
} ivecs_ctx;

static void *ivecs_alloc(void *ctx, size_t rows, size_t dim, char *err,
                         size_t errlen)
{
    ivecs_ctx *c = ctx;

    if (rows > DS_MAX_BYTES / 4 / dim) {
        seterr(err, errlen, "%zu x %zu ints are too many", rows, dim);
        return NULL;
    }
    c->data = malloc(rows * dim * sizeof(int32_t));
    if (c->data == NULL) {
        seterr(err, errlen, "out of memory for %zu x %zu ints", rows, dim);
        return NULL;
    }
    c->rows = rows;
    c->dim = dim;
    return c->data;
}

int ds_ivecs_read(const char *path, int32_t **out, size_t *rows,
                  size_t *dim, char *err, size_t errlen)
{
    ivecs_ctx c = {NULL, 0, 0};

    *out = NULL;
    *rows = 0;
    *dim = 0;
    if (read_vecs(path, ivecs_alloc, &c, err, errlen) != 0) {
        free(c.data);
        return -1;
    }
    *out = c.data;
    *rows = c.rows;
    *dim = c.dim;
    return 0;
}
