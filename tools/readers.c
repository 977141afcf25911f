/*
 * tools/readers.c - the vector file readers of iqdb import and bench (see
 * cli.h). Every file is read through zlib's gz* functions, which pass a
 * plain file through unchanged, so each format may also be gzipped.
 * Records are streamed: only one record is held at a time.
 *
 * fvecs / bvecs (TEXMEX), little-endian, repeated once per vector:
 *
 *   i32 d       the dimension (equal in every record)
 *   d values    float32 (fvecs) or uint8 (bvecs)
 *
 * npy (NumPy format, versions 1.0, 2.0 and 3.0):
 *
 *   offset 0   "\x93NUMPY"
 *   offset 6   u8 major, u8 minor
 *   offset 8   header length: u16 LE (v1) or u32 LE (v2, v3)
 *   then       the header: a Python dict literal with the keys 'descr'
 *              (dtype string), 'fortran_order' (True/False) and 'shape'
 *              (a tuple of ints), padded with spaces and ending in '\n'
 *   then       the array data, shape[0] x shape[1] elements, C order
 *
 * idx (MNIST), all integers big-endian:
 *
 *   offset 0   u8 0, u8 0
 *   offset 2   u8 element type: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
 *              0x0D float32, 0x0E float64
 *   offset 3   u8 number of dimensions n
 *   offset 4   n x u32: the dimension sizes; the first is the record
 *              count, the product of the others the vector dimension
 *   then       the elements, row-major
 *
 * csv: one vector per line, values separated by commas (spaces and tabs
 * around values allowed); blank lines are skipped. A header line is not
 * supported: a first line with a non-numeric field is an error naming
 * line 1. jsonl: one object per line, {"id": 17 | "text", "vector":
 * [numbers], "metadata": {"key": scalar, ...}}; only "vector" is
 * required; blank lines are skipped.
 *
 * Numbers in text are parsed with strtod, whose decimal point depends on
 * the locale: the program never calls setlocale, so it is always '.'.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* The longest line a text format may have (a 65536-value csv line of
 * long numbers fits many times over). */
#define RD_MAX_LINE ((size_t)256 << 20)
/* The largest npy header accepted; numpy writes under 4 KiB. */
#define RD_NPY_MAX_HEADER ((size_t)1 << 20)
/* The most idx dimensions accepted. */
#define RD_IDX_MAX_DIMS 8
/* zlib's input buffer; bigger than the 8 KiB default for speed. */
#define RD_GZ_BUFFER (1u << 17)

const char *const cli_fmnist_names[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress",   "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",     "Ankle boot",
};

/* How the elements of a binary record are stored. */
typedef enum elem_kind {
    EL_U8,
    EL_I8,
    EL_I16,
    EL_I32,
    EL_F32,
    EL_F64
} elem_kind;

/* A line-at-a-time source over a gzFile. */
typedef struct line_src {
    gzFile gz;
    char *buf; /* the current line, NUL-terminated, without "\n"/"\r\n" */
    size_t len;
    size_t cap;
} line_src;

struct cli_reader {
    char *path;
    cli_format fmt;
    uint32_t dim;        /* 0 until known */
    uint32_t expect_dim; /* 0: any */
    uint64_t hint;       /* for cli_reader_count_hint */
    uint64_t nread;      /* records returned so far */
    uint64_t line;       /* lines consumed (text formats) */
    int failed;          /* an error was reported: stop */
    int done;            /* the clean end was reported */
    line_src src;        /* src.gz is the file for every format */
    /* binary formats */
    elem_kind kind;
    int big_endian;
    int swap;         /* element byte order differs from the host's */
    size_t esize;
    int has_total;    /* npy, idx: the header gives the record count */
    uint64_t total;
    int pending_hdr;  /* fvecs/bvecs: record 1's dimension already read */
    unsigned char *raw;
    /* every format */
    float *vec;
    size_t vec_cap;
    cli_json doc;     /* jsonl: the current record, owning the id bytes */
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

/* "PATH: record N (line L): what" for the record being read. */
__attribute__((format(printf, 4, 5))) static int
rec_err(cli_reader *r, char *err, size_t errlen, const char *fmt, ...)
{
    char what[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (r->line > 0)
        seterr(err, errlen, "%s: record %llu (line %llu): %s", r->path,
               (unsigned long long)r->nread + 1,
               (unsigned long long)r->line, what);
    else
        seterr(err, errlen, "%s: record %llu: %s", r->path,
               (unsigned long long)r->nread + 1, what);
    r->failed = 1;
    return -1;
}

/* ------------------------------------------------------------------ */
/* Format names                                                         */

static const char *const format_names[] = {
    [CLI_FMT_AUTO] = "auto", [CLI_FMT_FVECS] = "fvecs",
    [CLI_FMT_BVECS] = "bvecs", [CLI_FMT_NPY] = "npy",
    [CLI_FMT_CSV] = "csv",   [CLI_FMT_JSONL] = "jsonl",
    [CLI_FMT_IDX] = "idx",
};

int cli_format_parse(const char *name, cli_format *out)
{
    int f;

    if (name == NULL)
        return -1;
    for (f = CLI_FMT_FVECS; f <= CLI_FMT_IDX; f++) {
        if (strcmp(name, format_names[f]) == 0) {
            *out = (cli_format)f;
            return 0;
        }
    }
    return -1;
}

const char *cli_format_name(cli_format f)
{
    if ((int)f < CLI_FMT_AUTO || f > CLI_FMT_IDX)
        return "?";
    return format_names[f];
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix), i;

    if (n < k)
        return 0;
    for (i = 0; i < k; i++) {
        char c = s[n - k + i];

        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != suffix[i])
            return 0;
    }
    return 1;
}

cli_format cli_format_guess(const char *path)
{
    static const struct {
        const char *suffix;
        cli_format fmt;
    } table[] = {
        {".fvecs", CLI_FMT_FVECS}, {".bvecs", CLI_FMT_BVECS},
        {".npy", CLI_FMT_NPY},     {".csv", CLI_FMT_CSV},
        {".jsonl", CLI_FMT_JSONL}, {".ndjson", CLI_FMT_JSONL},
        {".idx", CLI_FMT_IDX},     {"-ubyte", CLI_FMT_IDX},
        {".ubyte", CLI_FMT_IDX},
    };
    size_t n, i;

    if (path == NULL)
        return CLI_FMT_AUTO;
    n = strlen(path);
    if (ends_with(path, n, ".gz"))
        n -= 3;
    for (i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (ends_with(path, n, table[i].suffix))
            return table[i].fmt;
    return CLI_FMT_AUTO;
}

/* ------------------------------------------------------------------ */
/* Bytes through zlib                                                   */

/* zlib's message for the last error, without the "PATH: " it may start
 * with (our messages name the file already). */
static const char *gz_reason(gzFile gz, const char *path, int *zerr)
{
    const char *msg = gzerror(gz, zerr);
    size_t plen = strlen(path);

    if (msg == NULL || *msg == '\0')
        return "unknown zlib error";
    if (strncmp(msg, path, plen) == 0 && msg[plen] == ':' &&
        msg[plen + 1] == ' ')
        msg += plen + 2;
    return msg;
}

/*
 * Read up to len bytes into buf. Returns the number read, short only at
 * the end of the data; or -1 when zlib reports an error (corrupt or cut
 * gzip stream, read error), with its reason in *why.
 */
static long long gz_get(gzFile gz, const char *path, void *buf, size_t len,
                        const char **why)
{
    unsigned char *p = buf;
    size_t done = 0;
    int zerr;

    while (done < len) {
        size_t want = len - done;
        int got;

        if (want > (size_t)1 << 30)
            want = (size_t)1 << 30;
        got = gzread(gz, p + done, (unsigned)want);
        if (got < 0) {
            *why = gz_reason(gz, path, &zerr);
            return -1;
        }
        if (got == 0)
            break;
        done += (size_t)got;
    }
    if (done < len) {
        /* A gzip stream cut short ends with Z_BUF_ERROR, not a clean end:
         * report it as an error so "truncated" names the right layer. */
        const char *msg = gz_reason(gz, path, &zerr);

        if (zerr != Z_OK && zerr != Z_STREAM_END) {
            *why = msg;
            return -1;
        }
    }
    return (long long)done;
}

static gzFile gz_open_read(const char *path, char *err, size_t errlen)
{
    gzFile gz;

    errno = 0;
    gz = gzopen(path, "rb");
    if (gz == NULL) {
        seterr(err, errlen, "%s: cannot open: %s", path,
               errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    gzbuffer(gz, RD_GZ_BUFFER);
    return gz;
}

/* The size of a plain (not gzipped) file, or -1 when it is gzipped or its
 * size is unknown. */
static long long plain_size(gzFile gz, const char *path)
{
    struct stat st;

    if (!gzdirect(gz) || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return -1;
    return (long long)st.st_size;
}

/* Read one line into src->buf. Returns 1, 0 at the end of the data, or
 * -1 with *why set. */
static int line_read(line_src *src, const char *path, const char **why)
{
    int c, zerr;

    src->len = 0;
    for (;;) {
        c = gzgetc(src->gz);
        if (c < 0 || c == '\n')
            break;
        if (src->len + 2 > src->cap) {
            size_t cap = src->cap ? src->cap * 2 : 256;
            char *nb;

            if (src->len + 2 > RD_MAX_LINE) {
                *why = "line longer than 256 MiB";
                return -1;
            }
            nb = realloc(src->buf, cap);
            if (nb == NULL) {
                *why = "out of memory";
                return -1;
            }
            src->buf = nb;
            src->cap = cap;
        }
        src->buf[src->len++] = (char)c;
    }
    if (c < 0) {
        const char *msg = gz_reason(src->gz, path, &zerr);

        if (zerr != Z_OK && zerr != Z_STREAM_END) {
            *why = msg;
            return -1;
        }
        if (src->len == 0)
            return 0;
    }
    if (src->len > 0 && src->buf[src->len - 1] == '\r')
        src->len--;
    if (src->buf == NULL) {
        /* An empty first line: still hand out a valid string. */
        src->buf = malloc(1);
        if (src->buf == NULL) {
            *why = "out of memory";
            return -1;
        }
        src->cap = 1;
    }
    src->buf[src->len] = '\0';
    return 1;
}

static uint32_t get_le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
           (uint32_t)b[3] << 24;
}

static uint32_t get_be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
           (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* ------------------------------------------------------------------ */
/* Binary records                                                       */

static size_t elem_size(elem_kind k)
{
    static const size_t sizes[] = {1, 1, 2, 4, 4, 8};

    return sizes[k];
}

/* Element j of the raw record, widened to double. */
static double elem_at(const cli_reader *r, size_t j)
{
    const unsigned char *b = r->raw + j * r->esize;
    unsigned char t[8];
    size_t i;
    uint16_t u16;
    uint32_t u32;
    float f;
    double d;

    if (r->kind == EL_U8)
        return b[0];
    if (r->kind == EL_I8)
        return (signed char)b[0];
    for (i = 0; i < r->esize; i++)
        t[i] = r->swap ? b[r->esize - 1 - i] : b[i];
    switch (r->kind) {
    case EL_I16:
        memcpy(&u16, t, 2);
        return (int16_t)u16;
    case EL_I32:
        memcpy(&u32, t, 4);
        return (int32_t)u32;
    case EL_F32:
        memcpy(&f, t, 4);
        return f;
    default:
        memcpy(&d, t, 8);
        return d;
    }
}

/* Convert the raw record to r->vec, rejecting NaN, infinities and
 * float64 values beyond the float32 range. */
static int convert_record(cli_reader *r, char *err, size_t errlen)
{
    size_t j;

    for (j = 0; j < r->dim; j++) {
        double x = elem_at(r, j);
        float f = (float)x;

        if (isnan(x))
            return rec_err(r, err, errlen, "value %zu is NaN", j + 1);
        if (isinf(x))
            return rec_err(r, err, errlen, "value %zu is infinite", j + 1);
        if (isinf(f))
            return rec_err(r, err, errlen,
                           "value %zu (%g) overflows float32", j + 1, x);
        r->vec[j] = f;
    }
    return 0;
}

/* Allocate the record buffers once the dimension is known. */
static int alloc_record(cli_reader *r, char *err, size_t errlen)
{
    const uint16_t one = 1;
    int host_le = *(const unsigned char *)&one == 1;

    r->esize = elem_size(r->kind);
    /* Bring multi-byte elements into host order. */
    r->swap = host_le == r->big_endian;
    r->raw = malloc((size_t)r->dim * r->esize);
    r->vec = malloc((size_t)r->dim * sizeof(float));
    if (r->raw == NULL || r->vec == NULL) {
        seterr(err, errlen, "%s: out of memory for a record of %u values",
               r->path, r->dim);
        return -1;
    }
    r->vec_cap = r->dim;
    return 0;
}

static int check_dim(cli_reader *r, long long d, char *err, size_t errlen)
{
    if (d <= 0 || d > (long long)IQDB_MAX_DIM) {
        seterr(err, errlen, "%s: record 1: dimension %lld is out of range "
               "1..%u", r->path, d, IQDB_MAX_DIM);
        return -1;
    }
    if (r->expect_dim != 0 && (uint32_t)d != r->expect_dim) {
        seterr(err, errlen, "%s: record 1: dimension %lld, expected %u",
               r->path, d, r->expect_dim);
        return -1;
    }
    r->dim = (uint32_t)d;
    return 0;
}

static int open_vecs(cli_reader *r, char *err, size_t errlen)
{
    unsigned char hdr[4];
    const char *why;
    long long got = gz_get(r->src.gz, r->path, hdr, 4, &why);
    long long size;

    r->kind = r->fmt == CLI_FMT_FVECS ? EL_F32 : EL_U8;
    r->big_endian = 0;
    if (got < 0) {
        seterr(err, errlen, "%s: %s", r->path, why);
        return -1;
    }
    if (got == 0)
        return 0; /* an empty file: no records */
    if (got < 4) {
        seterr(err, errlen, "%s: record 1: truncated dimension header",
               r->path);
        return -1;
    }
    if (check_dim(r, (int32_t)get_le32(hdr), err, errlen) != 0 ||
        alloc_record(r, err, errlen) != 0)
        return -1;
    r->pending_hdr = 1;
    size = plain_size(r->src.gz, r->path);
    if (size > 0)
        r->hint = (uint64_t)size / (4 + (uint64_t)r->dim * r->esize);
    return 0;
}

/*
 * npy and idx: with the record count and layout known from the header,
 * a plain file's size tells at once whether it is truncated or has
 * trailing data (a gzipped one is checked while reading).
 */
static int check_fixed_size(cli_reader *r, uint64_t data_off, char *err,
                            size_t errlen)
{
    long long size = plain_size(r->src.gz, r->path);
    uint64_t rec = (uint64_t)r->dim * r->esize, need;

    if (size < 0)
        return 0;
    if (r->total > (UINT64_MAX - data_off) / rec) {
        seterr(err, errlen, "%s: the header's %llu records cannot fit in a "
               "file", r->path, (unsigned long long)r->total);
        return -1;
    }
    need = data_off + r->total * rec;
    if ((uint64_t)size < need) {
        seterr(err, errlen, "%s: record %llu: truncated (the file has %lld "
               "bytes, the header's %llu records need %llu)", r->path,
               (unsigned long long)(((uint64_t)size - data_off) / rec + 1),
               size, (unsigned long long)r->total,
               (unsigned long long)need);
        return -1;
    }
    if ((uint64_t)size > need) {
        seterr(err, errlen, "%s: %llu bytes of trailing data after the "
               "header's %llu records", r->path,
               (unsigned long long)((uint64_t)size - need),
               (unsigned long long)r->total);
        return -1;
    }
    return 0;
}

/* ---- npy header ---------------------------------------------------- */

typedef struct npy_cur {
    const char *start;
    const char *p;
    const char *end;
} npy_cur;

static void npy_ws(npy_cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' ||
                             *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int npy_char(npy_cur *c, char ch)
{
    npy_ws(c);
    if (c->p >= c->end || *c->p != ch)
        return 0;
    c->p++;
    return 1;
}

/* A quoted string ('...' or "...", no escapes) into out. */
static int npy_str(npy_cur *c, char *out, size_t outlen)
{
    char q;
    size_t n = 0;

    npy_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return -1;
    q = *c->p++;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= outlen)
            return -1;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return -1;
    c->p++;
    out[n] = '\0';
    return 0;
}

/* A tuple of non-negative ints such as (), (3,), (3, 4) or (3, 4,). */
static int npy_shape(npy_cur *c, uint64_t *dims, int *ndims)
{
    *ndims = 0;
    if (!npy_char(c, '('))
        return -1;
    for (;;) {
        uint64_t v = 0;

        if (npy_char(c, ')'))
            return 0;
        npy_ws(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9' || *ndims >= 8)
            return -1;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (v > (UINT64_MAX - 9) / 10)
                return -1;
            v = v * 10 + (uint64_t)(*c->p++ - '0');
        }
        /* Python 2 numpy wrote longs as "3L". */
        if (c->p < c->end && *c->p == 'L')
            c->p++;
        dims[(*ndims)++] = v;
        if (!npy_char(c, ',')) {
            if (!npy_char(c, ')'))
                return -1;
            return 0;
        }
    }
}

static int npy_descr(cli_reader *r, const char *descr, char *err,
                     size_t errlen)
{
    static const struct {
        const char *name;
        elem_kind kind;
        int big_endian;
    } table[] = {
        {"<f4", EL_F32, 0}, {">f4", EL_F32, 1}, {"<f8", EL_F64, 0},
        {">f8", EL_F64, 1}, {"|u1", EL_U8, 0},  {"<u1", EL_U8, 0},
        {">u1", EL_U8, 0},  {"|i1", EL_I8, 0},  {"<i2", EL_I16, 0},
        {">i2", EL_I16, 1}, {"<i4", EL_I32, 0}, {">i4", EL_I32, 1},
    };
    size_t i;

    for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (strcmp(descr, table[i].name) == 0) {
            r->kind = table[i].kind;
            r->big_endian = table[i].big_endian;
            return 0;
        }
    }
    seterr(err, errlen, "%s: npy dtype '%s' is not supported (float32, "
           "float64, uint8, int8, int16 or int32)", r->path, descr);
    return -1;
}

/* The header dict: {'descr': '<f4', 'fortran_order': False,
 * 'shape': (n, d), } with the keys in any order. */
static int npy_dict(cli_reader *r, npy_cur *c, uint64_t *dims, int *ndims,
                    char *err, size_t errlen)
{
    char key[32], descr[32];
    int seen = 0, fortran = 0;

    if (!npy_char(c, '{'))
        goto bad;
    while (!npy_char(c, '}')) {
        if (npy_str(c, key, sizeof(key)) != 0 || !npy_char(c, ':'))
            goto bad;
        if (strcmp(key, "descr") == 0) {
            npy_ws(c);
            if (c->p < c->end && *c->p == '[') {
                seterr(err, errlen, "%s: npy structured dtypes are not "
                       "supported", r->path);
                return -1;
            }
            if (npy_str(c, descr, sizeof(descr)) != 0)
                goto bad;
            seen |= 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            npy_ws(c);
            if ((size_t)(c->end - c->p) >= 4 &&
                memcmp(c->p, "True", 4) == 0) {
                fortran = 1;
                c->p += 4;
            } else if ((size_t)(c->end - c->p) >= 5 &&
                       memcmp(c->p, "False", 5) == 0) {
                c->p += 5;
            } else {
                goto bad;
            }
            seen |= 2;
        } else if (strcmp(key, "shape") == 0) {
            if (npy_shape(c, dims, ndims) != 0)
                goto bad;
            seen |= 4;
        } else {
            seterr(err, errlen, "%s: npy header has an unknown key '%s'",
                   r->path, key);
            return -1;
        }
        if (!npy_char(c, ',')) {
            if (!npy_char(c, '}'))
                goto bad;
            break;
        }
    }
    if (seen != 7)
        goto bad;
    if (fortran) {
        seterr(err, errlen, "%s: npy array is in Fortran order "
               "(fortran_order True); save it in C order, e.g. with "
               "numpy.ascontiguousarray", r->path);
        return -1;
    }
    return npy_descr(r, descr, err, errlen);

bad:
    seterr(err, errlen, "%s: malformed npy header at header byte %zu",
           r->path, (size_t)(c->p - c->start) + 1);
    return -1;
}

static int npy_shape_check(cli_reader *r, const uint64_t *dims, int ndims,
                           char *err, size_t errlen)
{
    uint64_t n, d;

    if (ndims == 1) {
        n = 1;
        d = dims[0];
    } else if (ndims == 2) {
        n = dims[0];
        d = dims[1];
    } else {
        seterr(err, errlen, "%s: npy array has %d dimensions; need 1 (one "
               "vector) or 2 (one vector per row)", r->path, ndims);
        return -1;
    }
    if (d == 0 || d > IQDB_MAX_DIM) {
        seterr(err, errlen, "%s: npy vectors have dimension %llu, out of "
               "range 1..%u", r->path, (unsigned long long)d, IQDB_MAX_DIM);
        return -1;
    }
    if (r->expect_dim != 0 && d != r->expect_dim) {
        seterr(err, errlen, "%s: npy vectors have dimension %llu, expected "
               "%u", r->path, (unsigned long long)d, r->expect_dim);
        return -1;
    }
    r->dim = (uint32_t)d;
    r->total = n;
    r->has_total = 1;
    r->hint = n;
    return 0;
}

static int open_npy(cli_reader *r, char *err, size_t errlen)
{
    unsigned char pre[12];
    size_t pre_len = 10, hlen;
    char *hdr = NULL;
    const char *why = "truncated";
    uint64_t dims[8];
    int ndims, rc = -1;
    npy_cur c;
    long long got = gz_get(r->src.gz, r->path, pre, 10, &why);

    if (got >= 6 && memcmp(pre, "\x93NUMPY", 6) != 0) {
        seterr(err, errlen, "%s: not an npy file (bad magic)", r->path);
        return -1;
    }
    if (got == 10 && (pre[6] < 1 || pre[6] > 3)) {
        seterr(err, errlen, "%s: npy version %u.%u is not supported",
               r->path, pre[6], pre[7]);
        return -1;
    }
    if (got == 10 && pre[6] >= 2) {
        pre_len = 12;
        got = gz_get(r->src.gz, r->path, pre + 10, 2, &why);
        got = got == 2 ? 12 : -1;
    }
    if (got != (long long)pre_len) {
        seterr(err, errlen, "%s: truncated npy header (%s)", r->path,
               got < 0 ? why : "file too short");
        return -1;
    }
    hlen = pre_len == 10 ? (size_t)pre[8] | (size_t)pre[9] << 8
                         : (size_t)get_le32(pre + 8);
    if (hlen > RD_NPY_MAX_HEADER) {
        seterr(err, errlen, "%s: npy header of %zu bytes is too large",
               r->path, hlen);
        return -1;
    }
    hdr = malloc(hlen + 1);
    if (hdr == NULL) {
        seterr(err, errlen, "%s: out of memory", r->path);
        return -1;
    }
    got = gz_get(r->src.gz, r->path, hdr, hlen, &why);
    if (got != (long long)hlen) {
        seterr(err, errlen, "%s: truncated npy header (%s)", r->path,
               got < 0 ? why : "file too short");
        goto out;
    }
    c.start = hdr;
    c.p = hdr;
    c.end = hdr + hlen;
    if (npy_dict(r, &c, dims, &ndims, err, errlen) != 0 ||
        npy_shape_check(r, dims, ndims, err, errlen) != 0 ||
        alloc_record(r, err, errlen) != 0 ||
        check_fixed_size(r, pre_len + hlen, err, errlen) != 0)
        goto out;
    rc = 0;
out:
    free(hdr);
    return rc;
}

/* ---- idx header ---------------------------------------------------- */

static int idx_kind(cli_reader *r, unsigned code, char *err, size_t errlen)
{
    static const struct {
        unsigned code;
        elem_kind kind;
    } table[] = {
        {0x08, EL_U8},  {0x09, EL_I8},  {0x0b, EL_I16},
        {0x0c, EL_I32}, {0x0d, EL_F32}, {0x0e, EL_F64},
    };
    size_t i;

    for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (table[i].code == code) {
            r->kind = table[i].kind;
            r->big_endian = 1;
            return 0;
        }
    }
    seterr(err, errlen, "%s: idx element type 0x%02x is not supported",
           r->path, code);
    return -1;
}

static int open_idx(cli_reader *r, char *err, size_t errlen)
{
    unsigned char hdr[4 + 4 * RD_IDX_MAX_DIMS];
    const char *why = "file too short";
    long long got = gz_get(r->src.gz, r->path, hdr, 4, &why);
    uint64_t d = 1;
    unsigned nd, i;

    if (got != 4) {
        seterr(err, errlen, "%s: truncated idx header (%s)", r->path,
               got < 0 ? why : "file too short");
        return -1;
    }
    nd = hdr[3];
    if (hdr[0] != 0 || hdr[1] != 0 || nd == 0 || nd > RD_IDX_MAX_DIMS) {
        seterr(err, errlen, "%s: bad magic 0x%08x (not an idx file)",
               r->path, (unsigned)get_be32(hdr));
        return -1;
    }
    if (idx_kind(r, hdr[2], err, errlen) != 0)
        return -1;
    if (nd == 1) {
        seterr(err, errlen, "%s: a 1-dimensional idx file holds labels, "
               "not vectors", r->path);
        return -1;
    }
    got = gz_get(r->src.gz, r->path, hdr + 4, 4 * (size_t)nd, &why);
    if (got != 4 * (long long)nd) {
        seterr(err, errlen, "%s: truncated idx header (%s)", r->path,
               got < 0 ? why : "file too short");
        return -1;
    }
    for (i = 1; i < nd && d <= IQDB_MAX_DIM; i++)
        d *= get_be32(hdr + 4 + 4 * i);
    if (d == 0 || d > IQDB_MAX_DIM) {
        seterr(err, errlen, "%s: idx records have %llu values, out of "
               "range 1..%u", r->path, (unsigned long long)d, IQDB_MAX_DIM);
        return -1;
    }
    if (r->expect_dim != 0 && d != r->expect_dim) {
        seterr(err, errlen, "%s: idx records have %llu values, expected %u",
               r->path, (unsigned long long)d, r->expect_dim);
        return -1;
    }
    r->dim = (uint32_t)d;
    r->total = get_be32(hdr + 4);
    r->has_total = 1;
    r->hint = r->total;
    if (alloc_record(r, err, errlen) != 0)
        return -1;
    return check_fixed_size(r, 4 + 4 * (uint64_t)nd, err, errlen);
}

/* ---- reading binary records ---------------------------------------- */

/* After the header's last record: anything more is an error. */
static int check_trailing(cli_reader *r, char *err, size_t errlen)
{
    unsigned char b;
    const char *why;
    long long got = gz_get(r->src.gz, r->path, &b, 1, &why);

    if (got < 0) {
        r->failed = 1;
        seterr(err, errlen, "%s: after record %llu: %s", r->path,
               (unsigned long long)r->nread, why);
        return -1;
    }
    if (got > 0) {
        r->failed = 1;
        seterr(err, errlen, "%s: trailing data after the header's %llu "
               "records", r->path, (unsigned long long)r->total);
        return -1;
    }
    return 0;
}

/* The dimension header of an fvecs/bvecs record: 1, 0 at the clean end,
 * or -1. */
static int vecs_header(cli_reader *r, char *err, size_t errlen)
{
    unsigned char hdr[4];
    const char *why;
    long long got;
    int32_t d;

    if (r->pending_hdr) {
        r->pending_hdr = 0;
        return 1;
    }
    got = gz_get(r->src.gz, r->path, hdr, 4, &why);
    if (got < 0)
        return rec_err(r, err, errlen, "%s", why);
    if (got == 0)
        return 0;
    if (got < 4)
        return rec_err(r, err, errlen, "truncated dimension header (%lld "
                       "of 4 bytes)", got);
    d = (int32_t)get_le32(hdr);
    if (d != (int32_t)r->dim)
        return rec_err(r, err, errlen, "dimension %ld differs from the "
                       "first record's %u", (long)d, r->dim);
    return 1;
}

static int next_binary(cli_reader *r, char *err, size_t errlen)
{
    size_t want = (size_t)r->dim * r->esize;
    const char *why;
    long long got;
    int rc;

    if (r->dim == 0)
        return 0; /* an empty fvecs/bvecs file */
    if (r->has_total) {
        if (r->nread == r->total)
            return check_trailing(r, err, errlen) == 0 ? 0 : -1;
    } else if ((rc = vecs_header(r, err, errlen)) <= 0) {
        return rc;
    }
    got = gz_get(r->src.gz, r->path, r->raw, want, &why);
    if (got < 0)
        return rec_err(r, err, errlen, "%s", why);
    if ((size_t)got < want)
        return rec_err(r, err, errlen, "truncated (%lld of %zu bytes)",
                       got, want);
    if (convert_record(r, err, errlen) != 0)
        return -1;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Text records                                                         */

static int is_blank(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

/* The next non-blank line: 1, 0 at the end, -1. */
static int next_text_line(cli_reader *r, char *err, size_t errlen)
{
    const char *why;
    int rc;

    for (;;) {
        rc = line_read(&r->src, r->path, &why);
        if (rc < 0) {
            r->line++;
            return rec_err(r, err, errlen, "%s", why);
        }
        if (rc == 0)
            return 0;
        r->line++;
        if (!is_blank(r->src.buf, r->src.len))
            return 1;
    }
}

/* Make room for n floats in r->vec. */
static int vec_reserve(cli_reader *r, size_t n, char *err, size_t errlen)
{
    float *nv;

    if (n <= r->vec_cap)
        return 0;
    nv = realloc(r->vec, n * sizeof(float));
    if (nv == NULL)
        return rec_err(r, err, errlen, "out of memory for %zu values", n);
    r->vec = nv;
    r->vec_cap = n;
    return 0;
}

/* Check a text record's value count against the first record and
 * expect_dim, and size r->vec for it. */
static int text_dim(cli_reader *r, size_t n, char *err, size_t errlen)
{
    if (n > IQDB_MAX_DIM)
        return rec_err(r, err, errlen, "%zu values, more than the limit "
                       "of %u", n, IQDB_MAX_DIM);
    if (r->dim != 0 && n != r->dim)
        return rec_err(r, err, errlen, "%zu values, the first record has "
                       "%u", n, r->dim);
    if (r->dim == 0 && r->expect_dim != 0 && n != r->expect_dim)
        return rec_err(r, err, errlen, "%zu values, expected %u", n,
                       r->expect_dim);
    return vec_reserve(r, n, err, errlen);
}

/* ---- csv ------------------------------------------------------------ */

/* Length of the decimal number at s[0..n): [+-]? (digits [. digits*] |
 * . digits) ([eE] [+-]? digits)?, or 0. Hex floats, "nan" and "inf",
 * which strtod would also take, are excluded. */
static size_t scan_decimal(const char *s, size_t n)
{
    size_t i = 0, digits = 0;

    if (i < n && (s[i] == '+' || s[i] == '-'))
        i++;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        digits++;
    if (i < n && s[i] == '.')
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
    if (digits == 0)
        return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;

        if (j < n && (s[j] == '+' || s[j] == '-'))
            j++;
        if (j >= n || s[j] < '0' || s[j] > '9')
            return i;
        while (j < n && s[j] >= '0' && s[j] <= '9')
            j++;
        i = j;
    }
    return i;
}

static int word_is(const char *s, size_t n, const char *word)
{
    size_t i;

    if (n > 0 && (s[0] == '+' || s[0] == '-'))
        s++, n--;
    if (n != strlen(word))
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];

        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != word[i])
            return 0;
    }
    return 1;
}

/* Field f (1-based) at s[0..n), already trimmed, into *out. */
static int csv_value(cli_reader *r, const char *s, size_t n, size_t f,
                     float *out, char *err, size_t errlen)
{
    double x;

    if (n == 0)
        return rec_err(r, err, errlen, "field %zu is empty", f);
    if (word_is(s, n, "nan"))
        return rec_err(r, err, errlen, "field %zu is NaN", f);
    if (word_is(s, n, "inf") || word_is(s, n, "infinity"))
        return rec_err(r, err, errlen, "field %zu is infinite", f);
    if (scan_decimal(s, n) != n)
        return rec_err(r, err, errlen, "field %zu: '%.*s' is not a "
                       "number%s", f, n > 40 ? 40 : (int)n, s,
                       r->nread == 0 ? " (csv files may not have a "
                                       "header line)" : "");
    /* s[n] is ',', a blank or the line's NUL: strtod stops there. */
    x = strtod(s, NULL);
    *out = (float)x;
    if (isinf(*out))
        return rec_err(r, err, errlen, "field %zu: '%.*s' is out of the "
                       "float32 range", f, n > 40 ? 40 : (int)n, s);
    return 0;
}

static int next_csv(cli_reader *r, char *err, size_t errlen)
{
    const char *p, *end;
    size_t nfields = 1, f, i;
    int rc = next_text_line(r, err, errlen);

    if (rc <= 0)
        return rc;
    p = r->src.buf;
    end = p + r->src.len;
    for (i = 0; i < r->src.len; i++)
        nfields += p[i] == ',';
    if (text_dim(r, nfields, err, errlen) != 0)
        return -1;
    for (f = 0; f < nfields; f++) {
        const char *q = p, *e;

        while (q < end && *q != ',')
            q++;
        e = q;
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        if (csv_value(r, p, (size_t)(e - p), f + 1, &r->vec[f], err,
                      errlen) != 0)
            return -1;
        p = q + 1;
    }
    r->dim = (uint32_t)nfields;
    return 1;
}

/* ---- jsonl ---------------------------------------------------------- */

static int jsonl_vector(cli_reader *r, const cli_json *v, char *err,
                        size_t errlen)
{
    size_t j;

    if (v == NULL)
        return rec_err(r, err, errlen, "no \"vector\" member");
    if (v->type != CLI_JSON_ARRAY)
        return rec_err(r, err, errlen, "\"vector\" is not an array");
    if (v->len == 0)
        return rec_err(r, err, errlen, "\"vector\" is empty");
    if (text_dim(r, v->len, err, errlen) != 0)
        return -1;
    for (j = 0; j < v->len; j++) {
        const cli_json *x = &v->items[j];

        if (x->type != CLI_JSON_NUMBER)
            return rec_err(r, err, errlen, "\"vector\" value %zu is not a "
                           "number", j + 1);
        r->vec[j] = (float)x->num;
        if (isinf(r->vec[j]))
            return rec_err(r, err, errlen, "\"vector\" value %zu (%g) "
                           "overflows float32", j + 1, x->num);
    }
    r->dim = (uint32_t)v->len;
    return 0;
}

static int jsonl_id(cli_reader *r, const cli_json *v, cli_record *rec,
                    char *err, size_t errlen)
{
    if (v == NULL)
        return 0;
    if (v->type == CLI_JSON_NUMBER && v->is_int && v->i >= 0) {
        rec->id = iqdb_id_u64((uint64_t)v->i);
    } else if (v->type == CLI_JSON_STRING) {
        if (v->len == 0 || v->len > IQDB_ID_MAX_BYTES)
            return rec_err(r, err, errlen, "string \"id\" has %zu bytes, "
                           "need 1..%u", v->len, IQDB_ID_MAX_BYTES);
        rec->id = iqdb_id_bytes(v->str, v->len);
    } else {
        return rec_err(r, err, errlen, "\"id\" must be a non-negative "
                       "integer or a string");
    }
    rec->has_id = 1;
    return 0;
}

static int jsonl_meta(cli_reader *r, const cli_json *v, cli_record *rec,
                      char *err, size_t errlen)
{
    char why[192];

    if (v == NULL)
        return 0;
    if (cli_json_to_meta(v, &rec->meta, why, sizeof why) != 0)
        return rec_err(r, err, errlen, "%s", why);
    return 0;
}

static int next_jsonl(cli_reader *r, cli_record *rec, char *err,
                      size_t errlen)
{
    char jerr[160];
    const cli_json *doc = &r->doc;
    size_t i;
    int rc;

    cli_json_free(&r->doc);
    rc = next_text_line(r, err, errlen);
    if (rc <= 0)
        return rc;
    if (cli_json_parse(r->src.buf, r->src.len, &r->doc, jerr,
                       sizeof(jerr)) != 0)
        return rec_err(r, err, errlen, "bad JSON: %s", jerr);
    if (doc->type != CLI_JSON_OBJECT)
        return rec_err(r, err, errlen, "not a JSON object");
    for (i = 0; i < doc->len; i++)
        if (strcmp(doc->keys[i], "id") != 0 &&
            strcmp(doc->keys[i], "vector") != 0 &&
            strcmp(doc->keys[i], "metadata") != 0)
            return rec_err(r, err, errlen, "unknown member \"%.64s\" "
                           "(expected id, vector, metadata)", doc->keys[i]);
    if (jsonl_vector(r, cli_json_get(doc, "vector"), err, errlen) != 0 ||
        jsonl_id(r, cli_json_get(doc, "id"), rec, err, errlen) != 0)
        return -1;
    /* Last, so no later check can fail with the map built. */
    return jsonl_meta(r, cli_json_get(doc, "metadata"), rec, err, errlen)
               == 0 ? 1 : -1;
}

/* ------------------------------------------------------------------ */
/* The reader                                                           */

int cli_reader_open(const char *path, cli_format fmt, uint32_t expect_dim,
                    cli_reader **out, char *err, size_t errlen)
{
    cli_reader *r;
    int rc = 0;

    *out = NULL;
    if (fmt == CLI_FMT_AUTO)
        fmt = cli_format_guess(path);
    if (fmt == CLI_FMT_AUTO) {
        seterr(err, errlen, "%s: cannot tell the format from the file name "
               "(fvecs, bvecs, npy, csv, jsonl or idx)", path);
        return -1;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->path = strdup(path)) == NULL) {
        seterr(err, errlen, "%s: out of memory", path);
        free(r);
        return -1;
    }
    r->fmt = fmt;
    r->expect_dim = expect_dim;
    r->src.gz = gz_open_read(path, err, errlen);
    if (r->src.gz == NULL) {
        cli_reader_close(r);
        return -1;
    }
    if (fmt == CLI_FMT_FVECS || fmt == CLI_FMT_BVECS)
        rc = open_vecs(r, err, errlen);
    else if (fmt == CLI_FMT_NPY)
        rc = open_npy(r, err, errlen);
    else if (fmt == CLI_FMT_IDX)
        rc = open_idx(r, err, errlen);
    if (rc != 0) {
        cli_reader_close(r);
        return -1;
    }
    *out = r;
    return 0;
}

uint32_t cli_reader_dim(const cli_reader *r)
{
    return r->dim;
}

uint64_t cli_reader_count_hint(const cli_reader *r)
{
    return r->hint;
}

int cli_reader_next(cli_reader *r, cli_record *rec, char *err,
                    size_t errlen)
{
    int rc;

    memset(rec, 0, sizeof(*rec));
    if (r->failed) {
        seterr(err, errlen, "%s: reading stopped at an earlier error",
               r->path);
        return -1;
    }
    if (r->done)
        return 0;
    switch (r->fmt) {
    case CLI_FMT_CSV:
        rc = next_csv(r, err, errlen);
        break;
    case CLI_FMT_JSONL:
        rc = next_jsonl(r, rec, err, errlen);
        break;
    default:
        rc = next_binary(r, err, errlen);
        break;
    }
    if (rc < 0) {
        r->failed = 1;
        memset(rec, 0, sizeof(*rec));
        return -1;
    }
    if (rc == 0) {
        r->done = 1;
        return 0;
    }
    rec->index = r->nread++;
    rec->line = r->line;
    rec->dim = r->dim;
    rec->vec = r->vec;
    return 1;
}

void cli_reader_close(cli_reader *r)
{
    if (r == NULL)
        return;
    if (r->src.gz != NULL)
        gzclose(r->src.gz);
    cli_json_free(&r->doc);
    free(r->src.buf);
    free(r->raw);
    free(r->vec);
    free(r->path);
    free(r);
}

/* ------------------------------------------------------------------ */
/* Whole matrices                                                       */

static int matrix_grow(float **data, size_t *cap, size_t want, uint32_t dim)
{
    size_t ncap = *cap ? *cap : 1024;
    float *nd;

    while (ncap < want)
        ncap *= 2;
    if (ncap > SIZE_MAX / sizeof(float) / dim)
        return -1;
    nd = realloc(*data, ncap * dim * sizeof(float));
    if (nd == NULL)
        return -1;
    *data = nd;
    *cap = ncap;
    return 0;
}

int cli_read_matrix(const char *path, cli_format fmt, float **data,
                    size_t *rows, uint32_t *dim, char *err, size_t errlen)
{
    cli_reader *r;
    cli_record rec;
    float *m = NULL;
    size_t n = 0, cap = 0;
    int rc;

    *data = NULL;
    *rows = 0;
    *dim = 0;
    if (cli_reader_open(path, fmt, 0, &r, err, errlen) != 0)
        return -1;
    /* Trust the header's count only so far: a corrupt one must not
     * reserve memory the data never fills. */
    if (r->hint > 0 && r->hint <= ((size_t)1 << 24))
        cap = (size_t)r->hint;
    while ((rc = cli_reader_next(r, &rec, err, errlen)) == 1) {
        iqdb_meta_free(rec.meta);
        if (n == cap || m == NULL) {
            if (matrix_grow(&m, &cap, n + 1, rec.dim) != 0) {
                seterr(err, errlen, "%s: out of memory after %zu vectors",
                       path, n);
                rc = -1;
                break;
            }
        }
        memcpy(m + n * rec.dim, rec.vec, rec.dim * sizeof(float));
        n++;
    }
    if (rc == 0 && n == 0) {
        seterr(err, errlen, "%s: no vectors", path);
        rc = -1;
    }
    if (rc != 0) {
        free(m);
        cli_reader_close(r);
        return -1;
    }
    *dim = r->dim;
    cli_reader_close(r);
    *data = m;
    *rows = n;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Labels                                                               */

/* Append s (n bytes) to l as a new label; cap is the slots allocated. */
static int labels_push(cli_labels *l, size_t *cap, const char *s, size_t n)
{
    char *copy;

    if (l->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        char **nt = realloc(l->text, ncap * sizeof(*nt));

        if (nt == NULL)
            return -1;
        l->text = nt;
        *cap = ncap;
    }
    copy = malloc(n + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, s, n);
    copy[n] = '\0';
    l->text[l->n++] = copy;
    return 0;
}

static int labels_idx(gzFile gz, const char *path, const char *const *names,
                      size_t nnames, cli_labels *out, char *err,
                      size_t errlen)
{
    unsigned char cnt[4], *bytes = NULL;
    const char *why;
    uint64_t want;
    size_t have = 0, cap = 0, slots = 0, i;
    long long got = gz_get(gz, path, cnt, 4, &why);

    if (got != 4) {
        seterr(err, errlen, "%s: truncated idx header (%s)", path,
               got < 0 ? why : "file too short");
        return -1;
    }
    want = get_be32(cnt);
    /* Read by chunks and let the data, not the header, size the buffer. */
    for (;;) {
        if (have == cap) {
            unsigned char *nb = realloc(bytes, cap ? cap * 2 : 65536);

            if (nb == NULL) {
                seterr(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            bytes = nb;
            cap = cap ? cap * 2 : 65536;
        }
        got = gz_get(gz, path, bytes + have, cap - have, &why);
        if (got < 0) {
            seterr(err, errlen, "%s: after label %zu: %s", path, have, why);
            goto fail;
        }
        have += (size_t)got;
        if (have < cap || have > want)
            break;
    }
    if (have != want) {
        seterr(err, errlen, have < want ? "%s: truncated: the header says "
               "%llu labels, the file has %zu" : "%s: trailing data: the "
               "header says %llu labels, the file has %zu", path,
               (unsigned long long)want, have);
        goto fail;
    }
    out->num = malloc((have ? have : 1) * sizeof(int64_t));
    if (out->num == NULL) {
        seterr(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    for (i = 0; i < have; i++) {
        char dec[12];
        const char *s = dec;
        size_t lab = bytes[i];

        if (lab < nnames && names != NULL && names[lab] != NULL)
            s = names[lab];
        else
            snprintf(dec, sizeof(dec), "%u", (unsigned)lab);
        out->num[i] = (int64_t)lab;
        if (labels_push(out, &slots, s, strlen(s)) != 0) {
            seterr(err, errlen, "%s: out of memory", path);
            goto fail;
        }
    }
    free(bytes);
    return 0;

fail:
    free(bytes);
    return -1;
}

static int labels_text(gzFile gz, const char *path, cli_labels *out,
                       char *err, size_t errlen)
{
    line_src src = {gz, NULL, 0, 0};
    const char *why;
    size_t cap = 0;
    unsigned long long line = 0;
    int rc;

    while ((rc = line_read(&src, path, &why)) == 1) {
        line++;
        if (src.len == 0) {
            seterr(err, errlen, "%s: line %llu: empty label", path, line);
            goto fail;
        }
        if (memchr(src.buf, '\0', src.len) != NULL) {
            seterr(err, errlen, "%s: line %llu: NUL byte in label", path,
                   line);
            goto fail;
        }
        if (labels_push(out, &cap, src.buf, src.len) != 0) {
            seterr(err, errlen, "%s: line %llu: out of memory", path, line);
            goto fail;
        }
    }
    if (rc < 0) {
        seterr(err, errlen, "%s: line %llu: %s", path, line + 1, why);
        goto fail;
    }
    free(src.buf);
    return 0;

fail:
    free(src.buf);
    return -1;
}

int cli_labels_load(const char *path, const char *const *names,
                    size_t nnames, cli_labels *out, char *err,
                    size_t errlen)
{
    unsigned char magic[4];
    const char *why;
    long long got;
    gzFile gz;
    int rc;

    memset(out, 0, sizeof(*out));
    gz = gz_open_read(path, err, errlen);
    if (gz == NULL)
        return -1;
    got = gz_get(gz, path, magic, 4, &why);
    if (got < 0) {
        seterr(err, errlen, "%s: %s", path, why);
        gzclose(gz);
        return -1;
    }
    if (got == 4 && magic[0] == 0 && magic[1] == 0) {
        if (magic[2] == 0x08 && magic[3] == 0x01)
            rc = labels_idx(gz, path, names, nnames, out, err, errlen);
        else {
            seterr(err, errlen, "%s: bad magic 0x%08x (not an idx1 ubyte "
                   "labels file)", path, (unsigned)get_be32(magic));
            rc = -1;
        }
    } else if (gzrewind(gz) != 0) {
        seterr(err, errlen, "%s: cannot rewind", path);
        rc = -1;
    } else {
        rc = labels_text(gz, path, out, err, errlen);
    }
    gzclose(gz);
    if (rc != 0)
        cli_labels_free(out);
    return rc;
}

void cli_labels_free(cli_labels *l)
{
    size_t i;

    if (l == NULL)
        return;
    for (i = 0; i < l->n; i++)
        free(l->text[i]);
    free(l->text);
    free(l->num);
    memset(l, 0, sizeof(*l));
}
