/*
 * tests/fuzz/fuzz_readers.c - libFuzzer target for the command-line
 * program's input parsers: the vector file readers (tools/readers.c:
 * fvecs, bvecs, npy, csv, jsonl, idx, each also gzipped) and the JSON
 * reader (tools/json.c).
 *
 * Byte 0 of an input picks the format (mod 6) and, in bit 3, whether the
 * rest is written gzipped; byte 1 an expected dimension (0: any, else
 * 1..255). The rest is the file, read record by record to the end or the
 * first error. Every record must have the reader's dimension (or the one
 * expected) and finite elements; a record's metadata is freed. The same
 * bytes are also given to cli_json_parse and, when they parse as an
 * object, to cli_json_to_meta. Errors must be reported as -1 with a
 * message; anything else, a hang or a sanitizer report is a bug.
 *
 * Seeds: FUZZ_READERS_SEEDS=DIR writes one small valid file per format.
 *
 * The sources are compiled in (they are the command-line program's, not
 * the library's). Build (F a core compiled with coverage, see
 * fuzz_wal.c; S the source tree):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=all -I$S/sdk/include -I$S/core -I$S/tools \
 *       $S/tests/fuzz/fuzz_readers.c $S/tools/readers.c $S/tools/json.c \
 *       $F/core/.libs/libiqdbcore.a -lz -lltdl -fopenmp -lm -lpthread \
 *       -o fuzz_readers
 *
 * Run: see tests/fuzz/README.md. Not built by make.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "cli.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const cli_format formats[6] = {CLI_FMT_FVECS, CLI_FMT_BVECS,
                                      CLI_FMT_NPY,   CLI_FMT_CSV,
                                      CLI_FMT_JSONL, CLI_FMT_IDX};
static char path[256], gzpath[260];

static void die(const char *what)
{
    fprintf(stderr, "fuzz_readers: %s\n", what);
    abort();
}

static void write_file(const char *p, const void *b, size_t n, int gz)
{
    if (gz) {
        gzFile g = gzopen(p, "wb1");
        if (g == NULL || (n > 0 && gzwrite(g, b, (unsigned)n) != (int)n))
            die("writing the gzipped file");
        gzclose(g);
        return;
    }
    FILE *f = fopen(p, "wb");
    if (f == NULL || (n > 0 && fwrite(b, 1, n, f) != n))
        die("writing the file");
    fclose(f);
}

static void read_all(const char *p, cli_format fmt, uint32_t expect)
{
    char err[512] = "";
    cli_reader *r = NULL;
    if (cli_reader_open(p, fmt, expect, &r, err, sizeof err) != 0) {
        if (err[0] == '\0')
            die("cli_reader_open failed without a message");
        return;
    }
    for (;;) {
        cli_record rec;
        err[0] = '\0';
        int k = cli_reader_next(r, &rec, err, sizeof err);
        if (k == 0)
            break;
        if (k < 0) {
            if (err[0] == '\0')
                die("cli_reader_next failed without a message");
            break;
        }
        if (k != 1)
            die("cli_reader_next returned neither 1, 0 nor -1");
        if (rec.dim == 0 || (expect != 0 && rec.dim != expect) ||
            rec.dim != cli_reader_dim(r))
            die("a record of the wrong dimension");
        for (uint32_t j = 0; j < rec.dim; j++)
            if (!isfinite(rec.vec[j]))
                die("a record with a non-finite element");
        iqdb_meta_free(rec.meta);
    }
    cli_reader_close(r);
}

static void seeds(const char *out)
{
    static const unsigned char fvecs[] = {2, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64};
    static const unsigned char bvecs[] = {3, 0, 0, 0, 1, 2, 3};
    static const char npy_hdr[] =
        "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order': False, "
        "'shape': (1, 2), }";
    static const char csv[] = "1,2,3\n4.5,-6,7e-1\n";
    static const char jsonl[] =
        "{\"id\": 7, \"vector\": [1, 2], \"metadata\": {\"k\": \"v\", "
        "\"n\": 3, \"b\": true, \"z\": null}}\n"
        "{\"id\": \"s\", \"vector\": [0.5, -1]}\n";
    static const unsigned char idx[] = {0, 0, 8, 2, 0, 0, 0, 1,
                                        0, 0, 0, 2, 5, 6};
    struct {
        const char *name;
        const void *b;
        size_t n;
    } s[6] = {{"fvecs", fvecs, sizeof fvecs},
              {"bvecs", bvecs, sizeof bvecs},
              {"npy", NULL, 0},
              {"csv", csv, sizeof csv - 1},
              {"jsonl", jsonl, sizeof jsonl - 1},
              {"idx", idx, sizeof idx}};
    /* npy: the header padded with spaces and a newline to 128 bytes. */
    unsigned char npy[128 + 8];
    memset(npy, ' ', 128);
    memcpy(npy, npy_hdr, sizeof npy_hdr - 1);
    npy[127] = '\n';
    float two[2] = {1.5f, -2};
    memcpy(npy + 128, two, 8);
    s[2].b = npy;
    s[2].n = sizeof npy;
    for (int i = 0; i < 6; i++) {
        unsigned char *b = malloc(s[i].n + 2);
        b[0] = (unsigned char)i;
        b[1] = 0;
        memcpy(b + 2, s[i].b, s[i].n);
        char p[512];
        snprintf(p, sizeof p, "%s/seed-%s", out, s[i].name);
        write_file(p, b, s[i].n + 2, 0);
        b[0] |= 8; /* gzipped */
        snprintf(p, sizeof p, "%s/seed-%s-gz", out, s[i].name);
        write_file(p, b, s[i].n + 2, 0);
        free(b);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *out = getenv("FUZZ_READERS_SEEDS");
    if (out != NULL) {
        seeds(out);
        exit(0);
    }
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path, sizeof path, "%s/fuzz_readers.%d", base, (int)getpid());
    snprintf(gzpath, sizeof gzpath, "%s.gz", path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    cli_format fmt = formats[(data[0] & 7) % 6];
    int gz = (data[0] & 8) != 0;
    uint32_t expect = data[1];
    const char *p = gz ? gzpath : path;
    write_file(p, data + 2, size - 2, gz);
    read_all(p, fmt, expect);
    unlink(p);

    char err[256] = "";
    cli_json v;
    if (cli_json_parse((const char *)data + 2, size - 2, &v, err,
                       sizeof err) == 0) {
        if (v.type == CLI_JSON_OBJECT) {
            iqdb_meta *m = NULL;
            if (cli_json_to_meta(&v, &m, err, sizeof err) == 0)
                iqdb_meta_free(m);
            else if (err[0] == '\0')
                die("cli_json_to_meta failed without a message");
        }
        cli_json_free(&v);
    } else if (err[0] == '\0') {
        die("cli_json_parse failed without a message");
    }
    return 0;
}
