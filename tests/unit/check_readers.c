/*
 * tests/unit/check_readers.c - the command-line program's JSON reader and
 * writers (tools/json.c) and its vector file readers (tools/readers.c):
 * every format plain and gzipped, ids and metadata from jsonl, count
 * hints, labels files, and for each format the malformed input that must
 * fail with a message naming the file, the record and the line.
 */
#define _GNU_SOURCE

#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "cli.h"

#define FMNIST_LABELS "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"

static char tmpdir[256];
static char errbuf[512];

static void setup(void)
{
    const char *base = getenv("TMPDIR");

    if (base == NULL || *base == '\0')
        base = "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/iqdb-readers-XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[512];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

/* ---- building files -------------------------------------------------- */

typedef struct bytes {
    unsigned char *p;
    size_t len;
    size_t cap;
} bytes;

static void put(bytes *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u8(bytes *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    put(b, &c, 1);
}

static void put_le32(bytes *b, uint32_t v)
{
    unsigned char c[4] = {(unsigned char)v, (unsigned char)(v >> 8),
                          (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    put(b, c, 4);
}

static void put_be32(bytes *b, uint32_t v)
{
    unsigned char c[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    put(b, c, 4);
}

static void put_f32le(bytes *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_le32(b, u);
}

static void put_f32be(bytes *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_be32(b, u);
}

static void put_f64le(bytes *b, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    put_le32(b, (uint32_t)u);
    put_le32(b, (uint32_t)(u >> 32));
}

static void put_str(bytes *b, const char *s)
{
    put(b, s, strlen(s));
}

static const char *path_of(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    return buf;
}

/* Write data to tmpdir/name, gzipped when name ends in ".gz". Returns the
 * path (static storage, valid until the next call). */
static const char *write_file(const char *name, const void *data,
                              size_t len)
{
    const char *p = path_of(name);
    size_t n = strlen(name);

    if (n > 3 && strcmp(name + n - 3, ".gz") == 0) {
        gzFile gz = gzopen(p, "wb");
        ck_assert_ptr_nonnull(gz);
        if (len > 0)
            ck_assert_int_eq(gzwrite(gz, data, (unsigned)len), (int)len);
        ck_assert_int_eq(gzclose(gz), Z_OK);
    } else {
        FILE *f = fopen(p, "wb");
        ck_assert_ptr_nonnull(f);
        if (len > 0)
            ck_assert_uint_eq(fwrite(data, 1, len, f), len);
        ck_assert_int_eq(fclose(f), 0);
    }
    return p;
}

static const char *write_bytes(const char *name, bytes *b)
{
    const char *p = write_file(name, b->p, b->len);
    free(b->p);
    memset(b, 0, sizeof *b);
    return p;
}

static const char *write_text(const char *name, const char *text)
{
    return write_file(name, text, strlen(text));
}

/* ---- reading them back ----------------------------------------------- */

static cli_reader *open_ok(const char *path, cli_format fmt,
                           uint32_t expect_dim)
{
    cli_reader *r = NULL;
    errbuf[0] = '\0';
    int rc = cli_reader_open(path, fmt, expect_dim, &r, errbuf,
                             sizeof errbuf);
    ck_assert_msg(rc == 0, "open %s: %s", path, errbuf);
    ck_assert_ptr_nonnull(r);
    return r;
}

static void next_ok(cli_reader *r, cli_record *rec)
{
    errbuf[0] = '\0';
    int rc = cli_reader_next(r, rec, errbuf, sizeof errbuf);
    ck_assert_msg(rc == 1, "next returned %d: %s", rc, errbuf);
}

static void next_end(cli_reader *r)
{
    cli_record rec;
    errbuf[0] = '\0';
    int rc = cli_reader_next(r, &rec, errbuf, sizeof errbuf);
    ck_assert_msg(rc == 0, "expected the end, got %d: %s", rc, errbuf);
    /* The end is sticky. */
    ck_assert_int_eq(cli_reader_next(r, &rec, errbuf, sizeof errbuf), 0);
}

static void assert_has(const char *text, const char *part)
{
    ck_assert_msg(strstr(text, part) != NULL, "'%s' not in '%s'", part,
                  text);
}

static void assert_vec(const cli_record *rec, const float *want,
                       uint32_t dim)
{
    ck_assert_uint_eq(rec->dim, dim);
    ck_assert_ptr_nonnull(rec->vec);
    for (uint32_t j = 0; j < dim; j++)
        ck_assert_msg(rec->vec[j] == want[j], "value %u: %g != %g", j,
                      (double)rec->vec[j], (double)want[j]);
}

/* Open must fail and its message hold each of the NULL-ended parts. */
static void open_fails(const char *path, cli_format fmt, uint32_t dim, ...)
{
    cli_reader *r = (cli_reader *)1;
    va_list ap;
    const char *part;

    errbuf[0] = '\0';
    ck_assert_int_eq(cli_reader_open(path, fmt, dim, &r, errbuf,
                                     sizeof errbuf), -1);
    ck_assert_ptr_null(r);
    assert_has(errbuf, path);
    va_start(ap, dim);
    while ((part = va_arg(ap, const char *)) != NULL)
        assert_has(errbuf, part);
    va_end(ap);
}

/* Open must succeed and a later next fail with every part in err. */
static void read_fails(const char *path, cli_format fmt, uint32_t dim, ...)
{
    cli_reader *r = open_ok(path, fmt, dim);
    cli_record rec;
    va_list ap;
    const char *part;
    int rc;

    while ((rc = cli_reader_next(r, &rec, errbuf, sizeof errbuf)) == 1)
        iqdb_meta_free(rec.meta);
    ck_assert_msg(rc == -1, "%s: no error (rc %d)", path, rc);
    assert_has(errbuf, path);
    va_start(ap, dim);
    while ((part = va_arg(ap, const char *)) != NULL)
        assert_has(errbuf, part);
    va_end(ap);
    /* Once failed, it stays failed. */
    ck_assert_int_eq(cli_reader_next(r, &rec, errbuf, sizeof errbuf), -1);
    assert_has(errbuf, "earlier error");
    cli_reader_close(r);
}

/* ---- JSON: parsing ---------------------------------------------------- */

static void parse_ok(const char *text, cli_json *v)
{
    char err[160] = "";
    ck_assert_msg(cli_json_parse(text, strlen(text), v, err, sizeof err) ==
                      0, "%s: %s", text, err);
}

/* Parsing must fail with `part` in the message. */
static void parse_fails(const char *text, size_t len, const char *part)
{
    cli_json v;
    char err[160] = "";
    ck_assert_msg(cli_json_parse(text, len, &v, err, sizeof err) == -1,
                  "'%s' parsed", text);
    assert_has(err, part);
    /* A failed parse leaves nothing to free, and freeing is harmless. */
    ck_assert_int_eq(v.type, CLI_JSON_NULL);
    cli_json_free(&v);
}

static void parse_fails_s(const char *text, const char *part)
{
    parse_fails(text, strlen(text), part);
}

START_TEST(test_json_values)
{
    cli_json v;
    const cli_json *x;

    parse_ok(" {\"a\": [1, 2.5, \"s\", true, false, null, {}, []],\n"
             "  \"b\": {\"c\": -3}} \t\r\n", &v);
    ck_assert_int_eq(v.type, CLI_JSON_OBJECT);
    ck_assert_uint_eq(v.len, 2);
    ck_assert_str_eq(v.keys[0], "a");
    ck_assert_str_eq(v.keys[1], "b");
    x = cli_json_get(&v, "a");
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(x->type, CLI_JSON_ARRAY);
    ck_assert_uint_eq(x->len, 8);
    ck_assert_int_eq(x->items[0].type, CLI_JSON_NUMBER);
    ck_assert_int_eq(x->items[0].is_int, 1);
    ck_assert(x->items[0].i == 1 && x->items[0].num == 1.0);
    ck_assert_int_eq(x->items[1].is_int, 0);
    ck_assert(x->items[1].num == 2.5);
    ck_assert_int_eq(x->items[2].type, CLI_JSON_STRING);
    ck_assert_str_eq(x->items[2].str, "s");
    ck_assert_uint_eq(x->items[2].len, 1);
    ck_assert_int_eq(x->items[3].type, CLI_JSON_BOOL);
    ck_assert_int_eq(x->items[3].b, 1);
    ck_assert_int_eq(x->items[4].type, CLI_JSON_BOOL);
    ck_assert_int_eq(x->items[4].b, 0);
    ck_assert_int_eq(x->items[5].type, CLI_JSON_NULL);
    ck_assert_int_eq(x->items[6].type, CLI_JSON_OBJECT);
    ck_assert_uint_eq(x->items[6].len, 0);
    ck_assert_int_eq(x->items[7].type, CLI_JSON_ARRAY);
    ck_assert_uint_eq(x->items[7].len, 0);
    x = cli_json_get(cli_json_get(&v, "b"), "c");
    ck_assert_ptr_nonnull(x);
    ck_assert(x->is_int && x->i == -3);
    ck_assert_ptr_null(cli_json_get(&v, "c"));
    ck_assert_ptr_null(cli_json_get(x, "c")); /* not an object */
    cli_json_free(&v);
    cli_json_free(&v); /* freed values are NULL values */

    parse_ok("\"top\"", &v);
    ck_assert_str_eq(v.str, "top");
    cli_json_free(&v);
    parse_ok("  null  ", &v);
    ck_assert_int_eq(v.type, CLI_JSON_NULL);
    cli_json_free(&v);
    cli_json_free(NULL);
    /* Not NUL-terminated: only len bytes are read. */
    ck_assert_int_eq(cli_json_parse("[1]xyz", 3, &v, NULL, 0), 0);
    ck_assert_uint_eq(v.len, 1);
    cli_json_free(&v);
}
END_TEST

START_TEST(test_json_numbers)
{
    static const struct {
        const char *text;
        int is_int;
        int64_t i;
        double num;
    } ok[] = {
        {"0", 1, 0, 0.0},
        {"-0", 1, 0, -0.0},
        {"123", 1, 123, 123.0},
        {"9223372036854775807", 1, INT64_MAX, 9223372036854775807.0},
        {"-9223372036854775808", 1, INT64_MIN, -9223372036854775808.0},
        {"9223372036854775808", 0, 0, 9223372036854775808.0},
        {"-9223372036854775809", 0, 0, -9223372036854775809.0},
        {"123456789012345678901234567890", 0, 0, 1.2345678901234568e29},
        {"1.5", 0, 0, 1.5},
        {"-0.25", 0, 0, -0.25},
        {"1e3", 0, 0, 1000.0},
        {"1E+2", 0, 0, 100.0},
        {"25e-1", 0, 0, 2.5},
        {"1.0", 0, 0, 1.0},
        {"1e-400", 0, 0, 0.0},
    };
    cli_json v;

    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
        parse_ok(ok[k].text, &v);
        ck_assert_int_eq(v.type, CLI_JSON_NUMBER);
        ck_assert_msg(v.is_int == ok[k].is_int, "%s: is_int", ok[k].text);
        if (ok[k].is_int)
            ck_assert_msg(v.i == ok[k].i, "%s: i", ok[k].text);
        ck_assert_msg(v.num == ok[k].num, "%s: num %.17g", ok[k].text,
                      v.num);
        cli_json_free(&v);
    }
    parse_ok("-0", &v);
    ck_assert(signbit(v.num));
    cli_json_free(&v);

    parse_fails_s("01", "column 1: leading zero");
    parse_fails_s("-01", "column 2: leading zero");
    parse_fails_s("-", "column 2: unexpected end of input");
    parse_fails_s("1.", "column 3: unexpected end of input");
    parse_fails_s("1.e5", "column 3: unexpected 'e'");
    parse_fails_s(".5", "column 1: unexpected '.'");
    parse_fails_s("+1", "column 1: unexpected '+'");
    parse_fails_s("1e", "column 3");
    parse_fails_s("1e+", "column 4");
    parse_fails_s("1e400", "column 1: number out of range");
    parse_fails_s("-1e400", "number out of range");
    parse_fails_s("0x10", "column 2: unexpected 'x' after the value");
    parse_fails_s("NaN", "column 1");
    parse_fails_s("Infinity", "column 1");
}
END_TEST

START_TEST(test_json_strings)
{
    cli_json v;

    parse_ok("\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t\"", &v);
    ck_assert_str_eq(v.str, "q\" b\\ s/ \b\f\n\r\t");
    cli_json_free(&v);
    /* \u escapes to UTF-8: 1, 2, 3 and (by a surrogate pair) 4 bytes. */
    parse_ok("\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"", &v);
    ck_assert_str_eq(v.str, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    ck_assert_uint_eq(v.len, 10);
    cli_json_free(&v);
    /* Raw UTF-8 passes through. */
    parse_ok("\"\xc3\xa9\xf0\x9f\x98\x80\"", &v);
    ck_assert_str_eq(v.str, "\xc3\xa9\xf0\x9f\x98\x80");
    cli_json_free(&v);
    /* \u0000 inside a string value: kept, len counts it. */
    parse_ok("\"a\\u0000b\"", &v);
    ck_assert_uint_eq(v.len, 3);
    ck_assert_int_eq(memcmp(v.str, "a\0b", 4), 0);
    cli_json_free(&v);
    parse_ok("\"\"", &v);
    ck_assert_uint_eq(v.len, 0);
    ck_assert_str_eq(v.str, "");
    cli_json_free(&v);

    parse_fails_s("\"\\ud83d\"", "column 2: high surrogate \\ud83d without");
    parse_fails_s("\"\\ud83dx\"", "without a low surrogate");
    parse_fails_s("\"\\ud83d\\u0041\"", "not a low surrogate");
    parse_fails_s("\"\\ude00\"", "column 2: lone low surrogate");
    parse_fails_s("\"\\u12zz\"", "column 6: bad hex digit");
    parse_fails_s("\"\\u12", "truncated \\u escape");
    parse_fails_s("\"\\x\"", "column 2: bad escape \\x");
    parse_fails_s("\"a\tb\"", "column 3: control character 0x09");
    parse_fails_s("\"a\nb\"", "control character 0x0a");
    parse_fails_s("\"abc", "column 1: unterminated string");
    parse_fails_s("\"\xff\"", "column 2: invalid UTF-8");
    parse_fails_s("\"\xc0\xaf\"", "invalid UTF-8");       /* overlong */
    parse_fails_s("\"\xed\xa0\x80\"", "invalid UTF-8");   /* surrogate */
    parse_fails_s("\"\xf4\x90\x80\x80\"", "invalid UTF-8"); /* > 10FFFF */
    parse_fails_s("\"\xe2\x82\"", "invalid UTF-8");       /* cut short */
    parse_fails("\"a\0b\"", 5, "control character 0x00");
    parse_fails_s("{\"a\\u0000\": 1}", "column 2: object key contains");
    parse_fails_s("{\"a\": 1, \"b\": 2, \"a\": 3}",
                  "column 1: duplicate key \"a\"");
}
END_TEST

START_TEST(test_json_depth)
{
    char text[400];
    cli_json v;
    size_t n;

    /* 64 levels parse, 65 do not. */
    for (n = 0; n < 64; n++) {
        text[n] = '[';
        text[64 + n] = ']';
    }
    text[128] = '\0';
    parse_ok(text, &v);
    cli_json_free(&v);
    for (n = 0; n < 65; n++) {
        text[n] = '[';
        text[65 + n] = ']';
    }
    text[130] = '\0';
    parse_fails_s(text, "column 65: nesting deeper than 64");
    /* Objects count too. */
    n = 0;
    for (int d = 0; d < 65; d++)
        n += (size_t)snprintf(text + n, sizeof text - n, "{\"a\":");
    ck_assert_uint_lt(n, sizeof text);
    parse_fails_s(text, "column 321: nesting deeper than 64");
}
END_TEST

START_TEST(test_json_errors)
{
    parse_fails_s("", "column 1: unexpected end of input, expected a value");
    parse_fails_s("   ", "column 4: unexpected end of input");
    parse_fails_s("1 2", "column 3: unexpected '2' after the value");
    parse_fails_s("{} x", "column 4: unexpected 'x' after the value");
    parse_fails_s("[1,]", "column 4: unexpected ']', expected a value");
    parse_fails_s("[1 2]", "column 4: unexpected '2', expected ',' or ']'");
    parse_fails_s("[1", "column 3: unexpected end of input");
    parse_fails_s("{\"a\" 1}", "column 6: unexpected '1', expected ':'");
    parse_fails_s("{,}", "column 2: unexpected ',', expected a string key");
    parse_fails_s("{\"a\":1,}", "column 8: unexpected '}'");
    parse_fails_s("{a:1}", "expected a string key");
    parse_fails_s("tru", "column 1: unexpected 't'");
    parse_fails_s("truex", "column 5: unexpected 'x' after the value");
    parse_fails_s("nul", "column 1");
    parse_fails_s("'a'", "column 1: unexpected ''', expected a value");
    parse_fails_s("\x01", "unexpected byte 0x01");
    parse_fails_s("[1]\n]", "column 5");
    /* A NULL err is allowed. */
    cli_json v;
    ck_assert_int_eq(cli_json_parse("[", 1, &v, NULL, 0), -1);
}
END_TEST

/* ---- JSON: writing ---------------------------------------------------- */

typedef struct capture {
    char *text;
    size_t len;
    FILE *f;
} capture;

static void cap_open(capture *c)
{
    c->text = NULL;
    c->len = 0;
    c->f = open_memstream(&c->text, &c->len);
    ck_assert_ptr_nonnull(c->f);
}

/* Close the stream, compare with want, and free. */
static void cap_check(capture *c, const char *want)
{
    ck_assert_int_eq(fclose(c->f), 0);
    ck_assert_str_eq(c->text, want);
    free(c->text);
}

START_TEST(test_json_write)
{
    capture c;

    cap_open(&c);
    cli_json_write_str(c.f, "a\"b\\c\n\t\x01\x7f\xc3\xa9\xff\xe2\x82", 14);
    cap_check(&c, "\"a\\\"b\\\\c\\n\\t\\u0001\\u007f\xc3\xa9\\u00ff"
                  "\\u00e2\\u0082\"");
    cap_open(&c);
    cli_json_write_str(c.f, "x\0y", 3);
    cap_check(&c, "\"x\\u0000y\"");
    cap_open(&c);
    cli_json_write_str(c.f, NULL, 0);
    cap_check(&c, "\"\"");

    cap_open(&c);
    cli_json_write_double(c.f, 1.0);
    fputc(' ', c.f);
    cli_json_write_double(c.f, -42.0);
    fputc(' ', c.f);
    cli_json_write_double(c.f, 0.1);
    fputc(' ', c.f);
    cli_json_write_double(c.f, 1e300);
    fputc(' ', c.f);
    cli_json_write_double(c.f, NAN);
    fputc(' ', c.f);
    cli_json_write_double(c.f, -INFINITY);
    fputc(' ', c.f);
    cli_json_write_double(c.f, 4503599627370497.0);
    cap_check(&c, "1 -42 0.1 1e+300 null null 4503599627370497");

    iqdb_meta *m = iqdb_meta_new();
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(iqdb_meta_set(m, "s", iqdb_value_str("v\"")), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "i", iqdb_value_int(INT64_MIN)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "d", iqdb_value_double(2.5)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "b", iqdb_value_bool(1)), 0);
    ck_assert_int_eq(iqdb_meta_set(m, "n", iqdb_value_null()), 0);
    cap_open(&c);
    cli_json_write_meta(c.f, m);
    cli_json_write_meta(c.f, NULL);
    cap_check(&c, "{\"b\":true,\"d\":2.5,\"i\":-9223372036854775808,"
                  "\"n\":null,\"s\":\"v\\\"\"}{}");

    iqdb_value bv = iqdb_value_bool(0);
    cap_open(&c);
    cli_json_write_value(c.f, &bv);
    cli_json_write_id(c.f, iqdb_id_u64(UINT64_MAX));
    cli_json_write_id(c.f, iqdb_id_bytes("k\n", 2));
    cap_check(&c, "false18446744073709551615\"k\\n\"");

    /* What the writers produce, the reader reads back. */
    cap_open(&c);
    fputc('[', c.f);
    cli_json_write_meta(c.f, m);
    fputc(',', c.f);
    cli_json_write_str(c.f, "\x1f\xf0\x9f\x98\x80", 5);
    fputc(']', c.f);
    ck_assert_int_eq(fclose(c.f), 0);
    cli_json v;
    parse_ok(c.text, &v);
    free(c.text);
    ck_assert_uint_eq(v.len, 2);
    ck_assert(cli_json_get(&v.items[0], "i")->i == INT64_MIN);
    ck_assert_str_eq(cli_json_get(&v.items[0], "s")->str, "v\"");
    ck_assert_str_eq(v.items[1].str, "\x1f\xf0\x9f\x98\x80");
    cli_json_free(&v);
    iqdb_meta_free(m);
}
END_TEST

/* ---- formats ---------------------------------------------------------- */

START_TEST(test_readers_format)
{
    static const char *const names[] = {"fvecs", "bvecs", "npy",
                                        "csv",   "jsonl", "idx"};
    cli_format f;

    for (int k = 0; k < 6; k++) {
        ck_assert_int_eq(cli_format_parse(names[k], &f), 0);
        ck_assert_str_eq(cli_format_name(f), names[k]);
    }
    ck_assert_int_eq(cli_format_parse("auto", &f), -1);
    ck_assert_int_eq(cli_format_parse("FVECS", &f), -1);
    ck_assert_int_eq(cli_format_parse("", &f), -1);
    ck_assert_str_eq(cli_format_name(CLI_FMT_AUTO), "auto");
    ck_assert_str_eq(cli_format_name((cli_format)99), "?");

    ck_assert_int_eq(cli_format_guess("a/b.fvecs"), CLI_FMT_FVECS);
    ck_assert_int_eq(cli_format_guess("b.fvecs.gz"), CLI_FMT_FVECS);
    ck_assert_int_eq(cli_format_guess("B.BVECS"), CLI_FMT_BVECS);
    ck_assert_int_eq(cli_format_guess("x.npy"), CLI_FMT_NPY);
    ck_assert_int_eq(cli_format_guess("x.csv.gz"), CLI_FMT_CSV);
    ck_assert_int_eq(cli_format_guess("x.jsonl"), CLI_FMT_JSONL);
    ck_assert_int_eq(cli_format_guess("x.ndjson"), CLI_FMT_JSONL);
    ck_assert_int_eq(cli_format_guess("train-images-idx3-ubyte.gz"),
                     CLI_FMT_IDX);
    ck_assert_int_eq(cli_format_guess("x.idx"), CLI_FMT_IDX);
    ck_assert_int_eq(cli_format_guess("x.txt"), CLI_FMT_AUTO);
    ck_assert_int_eq(cli_format_guess("x.gz"), CLI_FMT_AUTO);
    ck_assert_int_eq(cli_format_guess(".gz"), CLI_FMT_AUTO);
    ck_assert_int_eq(cli_format_guess(""), CLI_FMT_AUTO);
}
END_TEST

START_TEST(test_readers_open_errors)
{
    cli_reader *r;

    open_fails(path_of("missing.fvecs"), CLI_FMT_AUTO, 0, "cannot open",
               NULL);
    open_fails(write_text("v.txt", "1,2\n"), CLI_FMT_AUTO, 0,
               "cannot tell the format", NULL);
    /* An explicit format overrides the name. */
    r = open_ok(path_of("v.txt"), CLI_FMT_CSV, 0);
    cli_reader_close(r);
    cli_reader_close(NULL);

    /* A gzip header followed by garbage. */
    unsigned char junk[64] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    for (int k = 10; k < 64; k++)
        junk[k] = (unsigned char)(k * 37);
    read_fails(write_file("junk.csv", junk, sizeof junk), CLI_FMT_CSV, 0,
               "record 1", NULL);
}
END_TEST

/* ---- fvecs / bvecs ---------------------------------------------------- */

static const float fv[3][4] = {
    {1.0f, -2.5f, 3.25f, 0.0f},
    {1e-3f, 4e30f, -7.0f, 8.5f},
    {0.5f, 0.25f, 0.125f, -0.0625f},
};

static void fvecs_build(bytes *b, size_t rows)
{
    for (size_t i = 0; i < rows; i++) {
        put_le32(b, 4);
        for (int j = 0; j < 4; j++)
            put_f32le(b, fv[i][j]);
    }
}

static void check_fvecs(const char *name, uint64_t hint)
{
    bytes b = {0};
    cli_record rec;

    fvecs_build(&b, 3);
    const char *p = write_bytes(name, &b);
    cli_reader *r = open_ok(p, CLI_FMT_AUTO, 4);
    ck_assert_uint_eq(cli_reader_dim(r), 4);
    ck_assert_uint_eq(cli_reader_count_hint(r), hint);
    for (uint64_t i = 0; i < 3; i++) {
        next_ok(r, &rec);
        ck_assert_uint_eq(rec.index, i);
        ck_assert_uint_eq(rec.line, 0);
        ck_assert_int_eq(rec.has_id, 0);
        ck_assert_ptr_null(rec.meta);
        assert_vec(&rec, fv[i], 4);
    }
    next_end(r);
    cli_reader_close(r);
}

START_TEST(test_readers_fvecs)
{
    check_fvecs("a.fvecs", 3);
    check_fvecs("a.fvecs.gz", 0);

    /* An empty file has no records. */
    cli_reader *r = open_ok(write_text("e.fvecs", ""), CLI_FMT_AUTO, 0);
    ck_assert_uint_eq(cli_reader_dim(r), 0);
    next_end(r);
    cli_reader_close(r);
}
END_TEST

START_TEST(test_readers_fvecs_bad)
{
    bytes b = {0};
    const char *p;

    /* Record 3 cut short. */
    fvecs_build(&b, 3);
    b.len -= 3;
    read_fails(write_bytes("t.fvecs", &b), CLI_FMT_AUTO, 0,
               ": record 3: truncated (13 of 16 bytes)", NULL);
    /* ... also gzipped. */
    fvecs_build(&b, 3);
    b.len -= 3;
    read_fails(write_bytes("t.fvecs.gz", &b), CLI_FMT_AUTO, 0,
               ": record 3: truncated", NULL);
    /* A partial dimension header after record 2. */
    fvecs_build(&b, 2);
    put_u8(&b, 4);
    put_u8(&b, 0);
    read_fails(write_bytes("h.fvecs", &b), CLI_FMT_AUTO, 0,
               "record 3: truncated dimension header (2 of 4 bytes)", NULL);
    /* Record 2 of another dimension. */
    fvecs_build(&b, 1);
    put_le32(&b, 5);
    for (int j = 0; j < 5; j++)
        put_f32le(&b, 1.0f);
    read_fails(write_bytes("d.fvecs", &b), CLI_FMT_AUTO, 0,
               "record 2: dimension 5 differs from the first record's 4",
               NULL);
    /* Dimension out of range, at open. */
    put_le32(&b, 0);
    p = write_bytes("z.fvecs", &b);
    open_fails(p, CLI_FMT_AUTO, 0, "record 1: dimension 0 is out of range",
               NULL);
    put_le32(&b, 0xffffffffu);
    put_le32(&b, 0);
    open_fails(write_bytes("n.fvecs", &b), CLI_FMT_AUTO, 0,
               "dimension -1 is out of range", NULL);
    put_le32(&b, 65537);
    open_fails(write_bytes("big.fvecs", &b), CLI_FMT_AUTO, 0,
               "dimension 65537", NULL);
    /* expect_dim disagrees. */
    fvecs_build(&b, 1);
    open_fails(write_bytes("x.fvecs", &b), CLI_FMT_AUTO, 8,
               "record 1: dimension 4, expected 8", NULL);
    /* NaN and infinity. */
    fvecs_build(&b, 1);
    put_le32(&b, 4);
    put_f32le(&b, 1.0f);
    put_f32le(&b, 2.0f);
    put_f32le(&b, NAN);
    put_f32le(&b, 4.0f);
    read_fails(write_bytes("nan.fvecs", &b), CLI_FMT_AUTO, 0,
               "nan.fvecs: record 2: value 3 is NaN", NULL);
    put_le32(&b, 2);
    put_f32le(&b, -INFINITY);
    put_f32le(&b, 0.0f);
    read_fails(write_bytes("inf.fvecs.gz", &b), CLI_FMT_AUTO, 0,
               "record 1: value 1 is infinite", NULL);
}
END_TEST

START_TEST(test_readers_bvecs)
{
    static const char *const names[] = {"a.bvecs", "a.bvecs.gz"};
    cli_record rec;

    for (int k = 0; k < 2; k++) {
        bytes b = {0};
        for (int i = 0; i < 5; i++) {
            put_le32(&b, 3);
            put_u8(&b, (unsigned)(i * 50));
            put_u8(&b, 255);
            put_u8(&b, 0);
        }
        cli_reader *r = open_ok(write_bytes(names[k], &b), CLI_FMT_AUTO, 0);
        ck_assert_uint_eq(cli_reader_dim(r), 3);
        ck_assert_uint_eq(cli_reader_count_hint(r), k == 0 ? 5 : 0);
        for (int i = 0; i < 5; i++) {
            float want[3] = {(float)(i * 50), 255.0f, 0.0f};
            next_ok(r, &rec);
            assert_vec(&rec, want, 3);
        }
        next_end(r);
        cli_reader_close(r);
    }
    bytes b = {0};
    put_le32(&b, 3);
    put_u8(&b, 1);
    put_u8(&b, 2);
    read_fails(write_bytes("t.bvecs", &b), CLI_FMT_AUTO, 0,
               "record 1: truncated (2 of 3 bytes)", NULL);
}
END_TEST

/* ---- npy ---------------------------------------------------------------- */

/* An npy preamble and header for dict text `dict`, padded so the data
 * starts at a multiple of 64, as numpy writes it. */
static void npy_header(bytes *b, int major, const char *dict)
{
    size_t pre = major == 1 ? 10 : 12;
    size_t hlen = strlen(dict) + 1;
    hlen += (64 - (pre + hlen) % 64) % 64;

    put(b, "\x93NUMPY", 6);
    put_u8(b, (unsigned)major);
    put_u8(b, 0);
    if (major == 1) {
        put_u8(b, (unsigned)(hlen & 0xff));
        put_u8(b, (unsigned)(hlen >> 8));
    } else {
        put_le32(b, (uint32_t)hlen);
    }
    put_str(b, dict);
    for (size_t k = strlen(dict) + 1; k < hlen; k++)
        put_u8(b, ' ');
    put_u8(b, '\n');
}

static void npy_f4(bytes *b, int major, size_t rows)
{
    char dict[128];
    snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, "
             "'shape': (%zu, 4), }", rows);
    npy_header(b, major, dict);
    for (size_t i = 0; i < rows; i++)
        for (int j = 0; j < 4; j++)
            put_f32le(b, fv[i][j]);
}

static void read_all_fv(const char *p, uint64_t hint, size_t rows)
{
    cli_record rec;
    cli_reader *r = open_ok(p, CLI_FMT_AUTO, 0);

    ck_assert_uint_eq(cli_reader_dim(r), 4);
    ck_assert_uint_eq(cli_reader_count_hint(r), hint);
    for (size_t i = 0; i < rows; i++) {
        next_ok(r, &rec);
        ck_assert_uint_eq(rec.index, i);
        assert_vec(&rec, fv[i], 4);
    }
    next_end(r);
    cli_reader_close(r);
}

START_TEST(test_readers_npy)
{
    bytes b = {0};
    cli_record rec;
    cli_reader *r;

    npy_f4(&b, 1, 3);
    read_all_fv(write_bytes("a.npy", &b), 3, 3);
    npy_f4(&b, 1, 3);
    read_all_fv(write_bytes("a.npy.gz", &b), 3, 3);
    npy_f4(&b, 2, 2);
    read_all_fv(write_bytes("v2.npy", &b), 2, 2);
    npy_f4(&b, 3, 3);
    read_all_fv(write_bytes("v3.npy.gz", &b), 3, 3);
    npy_f4(&b, 1, 0);
    read_all_fv(write_bytes("empty.npy", &b), 0, 0);

    /* float64, keys in another order, double quotes, no trailing comma. */
    npy_header(&b, 1, "{\"shape\": (3, 4), \"fortran_order\": False, "
               "\"descr\": \"<f8\"}");
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            put_f64le(&b, fv[i][j]);
    read_all_fv(write_bytes("d.npy", &b), 3, 3);

    /* uint8, a 1-D array is one vector. */
    npy_header(&b, 1, "{'descr': '|u1', 'fortran_order': False, "
               "'shape': (5,), }");
    for (int j = 0; j < 5; j++)
        put_u8(&b, (unsigned)(j * 60));
    r = open_ok(write_bytes("u.npy", &b), CLI_FMT_AUTO, 5);
    ck_assert_uint_eq(cli_reader_count_hint(r), 1);
    next_ok(r, &rec);
    float want[5] = {0, 60, 120, 180, 240};
    assert_vec(&rec, want, 5);
    next_end(r);
    cli_reader_close(r);

    /* Big-endian float32. */
    npy_header(&b, 1, "{'descr': '>f4', 'fortran_order': False, "
               "'shape': (1, 2), }");
    put_f32be(&b, 1.5f);
    put_f32be(&b, -3.0f);
    r = open_ok(write_bytes("be.npy", &b), CLI_FMT_NPY, 0);
    next_ok(r, &rec);
    float want2[2] = {1.5f, -3.0f};
    assert_vec(&rec, want2, 2);
    cli_reader_close(r);
}
END_TEST

START_TEST(test_readers_npy_bad)
{
    bytes b = {0};

    npy_header(&b, 1, "{'descr': '<f4', 'fortran_order': True, "
               "'shape': (2, 2), }");
    for (int j = 0; j < 4; j++)
        put_f32le(&b, 1.0f);
    open_fails(write_bytes("f.npy", &b), CLI_FMT_AUTO, 0, "Fortran order",
               NULL);

    /* Truncated: a plain file fails at open, a gzipped one at the record. */
    npy_f4(&b, 1, 3);
    b.len -= 20;
    open_fails(write_bytes("t.npy", &b), CLI_FMT_AUTO, 0,
               "record 2: truncated", NULL);
    npy_f4(&b, 1, 3);
    b.len -= 20;
    read_fails(write_bytes("t.npy.gz", &b), CLI_FMT_AUTO, 0,
               "record 2: truncated (12 of 16 bytes)", NULL);
    /* Trailing data, likewise. */
    npy_f4(&b, 1, 2);
    put_u8(&b, 0);
    open_fails(write_bytes("x.npy", &b), CLI_FMT_AUTO, 0,
               "1 bytes of trailing data", NULL);
    npy_f4(&b, 1, 2);
    put_u8(&b, 0);
    read_fails(write_bytes("x.npy.gz", &b), CLI_FMT_AUTO, 0,
               "trailing data after the header's 2 records", NULL);

    /* float64 beyond float32, NaN. */
    npy_header(&b, 1, "{'descr': '<f8', 'fortran_order': False, "
               "'shape': (2, 2), }");
    put_f64le(&b, 1.0);
    put_f64le(&b, 2.0);
    put_f64le(&b, 3.0);
    put_f64le(&b, 1e300);
    read_fails(write_bytes("o.npy", &b), CLI_FMT_AUTO, 0,
               "record 2: value 2 (1e+300) overflows float32", NULL);
    npy_header(&b, 1, "{'descr': '<f8', 'fortran_order': False, "
               "'shape': (1, 2), }");
    put_f64le(&b, NAN);
    put_f64le(&b, 2.0);
    read_fails(write_bytes("nan.npy", &b), CLI_FMT_AUTO, 0,
               "record 1: value 1 is NaN", NULL);

    put_str(&b, "\x93NUMPX\x01\x00\x10\x00");
    open_fails(write_bytes("m.npy", &b), CLI_FMT_AUTO, 0, "bad magic", NULL);
    put_str(&b, "\x93NUMPY\x04");
    put_u8(&b, 0);
    put_str(&b, "\x10");
    put_u8(&b, 0);
    open_fails(write_bytes("v.npy", &b), CLI_FMT_AUTO, 0, "version 4.0",
               NULL);
    put_str(&b, "\x93NU");
    open_fails(write_bytes("s.npy", &b), CLI_FMT_AUTO, 0,
               "truncated npy header", NULL);
    npy_header(&b, 1, "{'descr': '<c8', 'fortran_order': False, "
               "'shape': (1, 2), }");
    open_fails(write_bytes("c.npy", &b), CLI_FMT_AUTO, 0,
               "dtype '<c8' is not supported", NULL);
    npy_header(&b, 1, "{'descr': '<f4', 'fortran_order': False, "
               "'shape': (1, 2, 2), }");
    open_fails(write_bytes("3d.npy", &b), CLI_FMT_AUTO, 0,
               "3 dimensions", NULL);
    npy_header(&b, 1, "{'descr': '<f4', 'fortran_order': False, "
               "'shape': (), }");
    open_fails(write_bytes("0d.npy", &b), CLI_FMT_AUTO, 0, "0 dimensions",
               NULL);
    npy_header(&b, 1, "{'descr': '<f4', 'fortran_order': False, "
               "'shape': (3, 0), }");
    open_fails(write_bytes("d0.npy", &b), CLI_FMT_AUTO, 0,
               "dimension 0, out of range", NULL);
    npy_header(&b, 1, "{'descr': '<f4', 'fortran_order': False, }");
    open_fails(write_bytes("ns.npy", &b), CLI_FMT_AUTO, 0,
               "malformed npy header", NULL);
    npy_header(&b, 1, "{'descr': '<f4', 'fortran_order': False, "
               "'shape': (1, 2), 'extra': 1}");
    open_fails(write_bytes("k.npy", &b), CLI_FMT_AUTO, 0,
               "unknown key 'extra'", NULL);
    npy_header(&b, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, "
               "'shape': (1,), }");
    open_fails(write_bytes("st.npy", &b), CLI_FMT_AUTO, 0,
               "structured dtypes", NULL);
    npy_f4(&b, 1, 1);
    open_fails(write_bytes("e.npy", &b), CLI_FMT_AUTO, 3,
               "dimension 4, expected 3", NULL);
}
END_TEST

/* ---- csv ---------------------------------------------------------------- */

START_TEST(test_readers_csv)
{
    static const char text[] =
        "1, -2.5,3.25 , 0\r\n"
        "\n"
        "  \t \n"
        "1e-3,4E+30,-7,+8.5\n"
        ".5,0.25,1.25e-1,-0.0625"; /* no final newline */
    static const uint64_t lines[3] = {1, 4, 5};
    static const char *const names[] = {"a.csv", "a.csv.gz"};
    cli_record rec;

    for (int k = 0; k < 2; k++) {
        cli_reader *r = open_ok(write_text(names[k], text), CLI_FMT_AUTO, 0);
        ck_assert_uint_eq(cli_reader_dim(r), 0);
        ck_assert_uint_eq(cli_reader_count_hint(r), 0);
        for (int i = 0; i < 3; i++) {
            next_ok(r, &rec);
            ck_assert_uint_eq(rec.index, (uint64_t)i);
            ck_assert_uint_eq(rec.line, lines[i]);
            assert_vec(&rec, fv[i], 4);
            ck_assert_uint_eq(cli_reader_dim(r), 4);
        }
        next_end(r);
        cli_reader_close(r);
    }
    cli_reader *r = open_ok(write_text("e.csv", "\n\n"), CLI_FMT_AUTO, 0);
    next_end(r);
    cli_reader_close(r);
}
END_TEST

START_TEST(test_readers_csv_bad)
{
    read_fails(write_text("h.csv", "x,y\n1,2\n"), CLI_FMT_AUTO, 0,
               "h.csv: record 1 (line 1): field 1: 'x' is not a number "
               "(csv files may not have a header line)", NULL);
    read_fails(write_text("a.csv", "1,2,3\n\n4,5,6\n7,abc,9\n"),
               CLI_FMT_AUTO, 0,
               "a.csv: record 3 (line 4): field 2: 'abc' is not a number",
               NULL);
    read_fails(write_text("n.csv.gz", "1,2\n3,4\n5, NaN\n"), CLI_FMT_AUTO,
               0, "n.csv.gz: record 3 (line 3): field 2 is NaN", NULL);
    read_fails(write_text("i.csv", "1,-inf\n"), CLI_FMT_AUTO, 0,
               "record 1 (line 1): field 2 is infinite", NULL);
    read_fails(write_text("w.csv", "1,2\n3,4,5\n"), CLI_FMT_AUTO, 0,
               "record 2 (line 2): 3 values, the first record has 2", NULL);
    read_fails(write_text("w2.csv", "1,2\n3\n"), CLI_FMT_AUTO, 0,
               "record 2 (line 2): 1 values, the first record has 2", NULL);
    read_fails(write_text("x.csv", "1,2\n"), CLI_FMT_AUTO, 3,
               "record 1 (line 1): 2 values, expected 3", NULL);
    read_fails(write_text("e.csv", "1,,2\n"), CLI_FMT_AUTO, 0,
               "field 2 is empty", NULL);
    read_fails(write_text("t.csv", "1,2,\n"), CLI_FMT_AUTO, 0,
               "field 3 is empty", NULL);
    read_fails(write_text("o.csv", "1,1e39\n"), CLI_FMT_AUTO, 0,
               "field 2: '1e39' is out of the float32 range", NULL);
    read_fails(write_text("s.csv", "1,2 3\n"), CLI_FMT_AUTO, 0,
               "field 2: '2 3' is not a number", NULL);
    read_fails(write_text("x16.csv", "0x10\n"), CLI_FMT_AUTO, 0,
               "'0x10' is not a number", NULL);
    read_fails(write_text("nul.csv", "1,2\n3,4\n5\0006,7\n"), CLI_FMT_AUTO,
               0, "record 3 (line 3)", NULL);
}
END_TEST

/* ---- jsonl -------------------------------------------------------------- */

static void assert_meta_str(const iqdb_meta *m, const char *key,
                            const char *s)
{
    iqdb_value v;
    ck_assert_int_eq(iqdb_meta_get(m, key, &v), 0);
    ck_assert_int_eq(v.type, IQDB_TYPE_STRING);
    ck_assert_uint_eq(v.len, strlen(s));
    ck_assert_int_eq(memcmp(v.v.s, s, v.len), 0);
}

START_TEST(test_readers_jsonl)
{
    static const char text[] =
        "{\"id\": 17, \"vector\": [1, -2.5, 3.25, 0], \"metadata\": "
        "{\"kind\": \"doc\", \"year\": 2026, \"score\": 0.5, \"ok\": true, "
        "\"none\": null}}\n"
        "\n"
        "{\"vector\": [1e-3, 4e30, -7, 8.5], \"id\": \"abc\\u00e9\"}\r\n"
        "  {\"vector\":[0.5,0.25,0.125,-0.0625],\"metadata\":{}}  \n";
    static const char *const names[] = {"a.jsonl", "a.ndjson.gz"};
    cli_record rec;
    iqdb_value v;

    for (int k = 0; k < 2; k++) {
        cli_reader *r = open_ok(write_text(names[k], text), CLI_FMT_AUTO, 4);
        next_ok(r, &rec);
        ck_assert_uint_eq(rec.line, 1);
        assert_vec(&rec, fv[0], 4);
        ck_assert_int_eq(rec.has_id, 1);
        ck_assert_uint_eq(rec.id.kind, IQDB_ID_U64);
        ck_assert_uint_eq(rec.id.v.u64, 17);
        ck_assert_ptr_nonnull(rec.meta);
        ck_assert_uint_eq(iqdb_meta_count(rec.meta), 5);
        assert_meta_str(rec.meta, "kind", "doc");
        ck_assert_int_eq(iqdb_meta_get(rec.meta, "year", &v), 0);
        ck_assert(v.type == IQDB_TYPE_INT && v.v.i == 2026);
        ck_assert_int_eq(iqdb_meta_get(rec.meta, "score", &v), 0);
        ck_assert(v.type == IQDB_TYPE_DOUBLE && v.v.d == 0.5);
        ck_assert_int_eq(iqdb_meta_get(rec.meta, "ok", &v), 0);
        ck_assert(v.type == IQDB_TYPE_BOOL && v.v.b == 1);
        ck_assert_int_eq(iqdb_meta_get(rec.meta, "none", &v), 0);
        ck_assert_int_eq(v.type, IQDB_TYPE_NULL);
        /* The caller owns the map. */
        iqdb_meta_free(rec.meta);

        next_ok(r, &rec);
        ck_assert_uint_eq(rec.index, 1);
        ck_assert_uint_eq(rec.line, 3);
        assert_vec(&rec, fv[1], 4);
        ck_assert_int_eq(rec.has_id, 1);
        ck_assert_uint_eq(rec.id.kind, IQDB_ID_BYTES);
        ck_assert_uint_eq(rec.id.len, 5);
        ck_assert_int_eq(memcmp(rec.id.v.bytes, "abc\xc3\xa9", 5), 0);
        ck_assert_ptr_null(rec.meta);

        next_ok(r, &rec);
        ck_assert_uint_eq(rec.line, 4);
        assert_vec(&rec, fv[2], 4);
        ck_assert_int_eq(rec.has_id, 0);
        ck_assert_ptr_nonnull(rec.meta);
        ck_assert_uint_eq(iqdb_meta_count(rec.meta), 0);
        iqdb_meta_free(rec.meta);
        next_end(r);
        cli_reader_close(r);
    }

    /* Closing with a record's id still borrowed is fine. */
    cli_reader *r = open_ok(write_text("c.jsonl", "{\"id\":\"x\",\"vector\""
                                       ":[1]}\n"), CLI_FMT_AUTO, 0);
    next_ok(r, &rec);
    ck_assert_uint_eq(cli_reader_dim(r), 1);
    cli_reader_close(r);
}
END_TEST

START_TEST(test_readers_jsonl_bad)
{
    read_fails(write_text("j.jsonl", "{\"vector\": [1, 2]}\n\n"
                                     "{\"vector\": [1, 2}\n"),
               CLI_FMT_AUTO, 0,
               "j.jsonl: record 2 (line 3): bad JSON: column 17: "
               "unexpected '}', expected ',' or ']'", NULL);
    read_fails(write_text("n.jsonl", "{\"vector\": [1], \"metadata\": "
                                     "{\"a\": 1, \"tags\": [\"x\"]}}\n"),
               CLI_FMT_AUTO, 0,
               "record 1 (line 1): metadata \"tags\": nested arrays and "
               "objects are not supported", NULL);
    read_fails(write_text("o.jsonl", "{\"vector\": [1], \"metadata\": "
                                     "{\"o\": {}}}\n"),
               CLI_FMT_AUTO, 0, "metadata \"o\": nested", NULL);
    read_fails(write_text("u.jsonl", "{\"vector\": [1], \"values\": [1]}\n"),
               CLI_FMT_AUTO, 0,
               "unknown member \"values\" (expected id, vector, metadata)",
               NULL);
    read_fails(write_text("m.jsonl", "{\"id\": 1}\n"), CLI_FMT_AUTO, 0,
               "record 1 (line 1): no \"vector\" member", NULL);
    read_fails(write_text("a.jsonl", "[1, 2]\n"), CLI_FMT_AUTO, 0,
               "not a JSON object", NULL);
    read_fails(write_text("v.jsonl", "{\"vector\": \"1,2\"}\n"),
               CLI_FMT_AUTO, 0, "\"vector\" is not an array", NULL);
    read_fails(write_text("v0.jsonl", "{\"vector\": []}\n"), CLI_FMT_AUTO,
               0, "\"vector\" is empty", NULL);
    read_fails(write_text("vs.jsonl", "{\"vector\": [1, \"2\"]}\n"),
               CLI_FMT_AUTO, 0, "\"vector\" value 2 is not a number", NULL);
    read_fails(write_text("vo.jsonl", "{\"vector\": [1, 1e39]}\n"),
               CLI_FMT_AUTO, 0, "\"vector\" value 2 (1e+39) overflows",
               NULL);
    read_fails(write_text("d.jsonl", "{\"vector\": [1, 2]}\n"
                                     "{\"vector\": [1, 2, 3]}\n"),
               CLI_FMT_AUTO, 0,
               "record 2 (line 2): 3 values, the first record has 2", NULL);
    read_fails(write_text("i.jsonl", "{\"id\": -1, \"vector\": [1]}\n"),
               CLI_FMT_AUTO, 0,
               "\"id\" must be a non-negative integer or a string", NULL);
    read_fails(write_text("if.jsonl", "{\"id\": 1.5, \"vector\": [1]}\n"),
               CLI_FMT_AUTO, 0, "\"id\" must be", NULL);
    read_fails(write_text("ie.jsonl", "{\"id\": \"\", \"vector\": [1]}\n"),
               CLI_FMT_AUTO, 0, "string \"id\" has 0 bytes, need 1..1024",
               NULL);
    read_fails(write_text("mo.jsonl", "{\"vector\": [1], \"metadata\": 3}\n"),
               CLI_FMT_AUTO, 0, "\"metadata\" is not an object", NULL);
    read_fails(write_text("dup.jsonl", "{\"vector\": [1], \"vector\": [2]}\n"),
               CLI_FMT_AUTO, 0, "duplicate key \"vector\"", NULL);
    read_fails(write_text("g.jsonl.gz", "{\"vector\": [1]}\n"
                                        "{\"vector\": [2]} x\n"),
               CLI_FMT_AUTO, 0,
               "record 2 (line 2): bad JSON: column 17: unexpected 'x' "
               "after the value", NULL);

    /* A metadata key the library refuses (longer than 255 bytes). */
    char line[400];
    int n = snprintf(line, sizeof line, "{\"vector\": [1], \"metadata\": "
                     "{\"");
    memset(line + n, 'k', 300);
    snprintf(line + n + 300, sizeof line - (size_t)n - 300, "\": 1}}\n");
    read_fails(write_text("lk.jsonl", line), CLI_FMT_AUTO, 0,
               "record 1 (line 1): metadata \"kkkk", NULL);
}
END_TEST

/* ---- idx ---------------------------------------------------------------- */

static void idx_images(bytes *b, uint32_t n, uint32_t rows, uint32_t cols)
{
    put_be32(b, 0x00000803);
    put_be32(b, n);
    put_be32(b, rows);
    put_be32(b, cols);
    for (uint32_t i = 0; i < n * rows * cols; i++)
        put_u8(b, (i * 7) & 0xff);
}

START_TEST(test_readers_idx)
{
    static const char *const names[] = {"im-idx3-ubyte", "im-idx3-ubyte.gz"};
    cli_record rec;
    bytes b = {0};

    for (int k = 0; k < 2; k++) {
        idx_images(&b, 4, 3, 5);
        cli_reader *r = open_ok(write_bytes(names[k], &b), CLI_FMT_AUTO, 15);
        ck_assert_uint_eq(cli_reader_dim(r), 15);
        ck_assert_uint_eq(cli_reader_count_hint(r), 4);
        for (uint32_t i = 0; i < 4; i++) {
            next_ok(r, &rec);
            for (uint32_t j = 0; j < 15; j++)
                ck_assert(rec.vec[j] == (float)(((i * 15 + j) * 7) & 0xff));
        }
        next_end(r);
        cli_reader_close(r);
    }

    /* 2-D float32, big-endian. */
    put_be32(&b, 0x00000d02);
    put_be32(&b, 3);
    put_be32(&b, 4);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            put_f32be(&b, fv[i][j]);
    read_all_fv(write_bytes("f.idx", &b), 3, 3);

    /* 2-D int16 and int8. */
    put_be32(&b, 0x00000b02);
    put_be32(&b, 1);
    put_be32(&b, 2);
    put_u8(&b, 0xff);
    put_u8(&b, 0xfe); /* -2 */
    put_u8(&b, 0x01);
    put_u8(&b, 0x00); /* 256 */
    cli_reader *r = open_ok(write_bytes("s.idx", &b), CLI_FMT_IDX, 0);
    next_ok(r, &rec);
    float want[2] = {-2.0f, 256.0f};
    assert_vec(&rec, want, 2);
    next_end(r);
    cli_reader_close(r);
    put_be32(&b, 0x00000902);
    put_be32(&b, 1);
    put_be32(&b, 1);
    put_u8(&b, 0x80);
    r = open_ok(write_bytes("b.idx", &b), CLI_FMT_IDX, 0);
    next_ok(r, &rec);
    ck_assert(rec.vec[0] == -128.0f);
    cli_reader_close(r);
}
END_TEST

START_TEST(test_readers_idx_bad)
{
    bytes b = {0};

    put_be32(&b, 0x01000803);
    put_be32(&b, 1);
    open_fails(write_bytes("m.idx", &b), CLI_FMT_AUTO, 0,
               "bad magic 0x01000803 (not an idx file)", NULL);
    put_be32(&b, 0x00000801);
    put_be32(&b, 1);
    put_u8(&b, 3);
    open_fails(write_bytes("l-idx1-ubyte", &b), CLI_FMT_AUTO, 0,
               "holds labels, not vectors", NULL);
    put_be32(&b, 0x00000a02);
    open_fails(write_bytes("t.idx", &b), CLI_FMT_AUTO, 0,
               "element type 0x0a is not supported", NULL);
    put_be32(&b, 0x00000803);
    put_be32(&b, 2);
    open_fails(write_bytes("h.idx", &b), CLI_FMT_AUTO, 0,
               "truncated idx header", NULL);
    put_be32(&b, 0x00000803);
    put_be32(&b, 2);
    put_be32(&b, 300);
    put_be32(&b, 300);
    open_fails(write_bytes("big.idx", &b), CLI_FMT_AUTO, 0,
               "90000 values, out of range", NULL);
    idx_images(&b, 4, 2, 2);
    b.len -= 5;
    open_fails(write_bytes("tr.idx", &b), CLI_FMT_AUTO, 0,
               "record 3: truncated", NULL);
    idx_images(&b, 4, 2, 2);
    b.len -= 5;
    read_fails(write_bytes("tr.idx.gz", &b), CLI_FMT_AUTO, 0,
               "tr.idx.gz: record 3: truncated (3 of 4 bytes)", NULL);
    put_be32(&b, 0x00000d02);
    put_be32(&b, 1);
    put_be32(&b, 2);
    put_f32be(&b, 1.0f);
    put_f32be(&b, NAN);
    read_fails(write_bytes("nan.idx", &b), CLI_FMT_AUTO, 0,
               "record 1: value 2 is NaN", NULL);
    idx_images(&b, 2, 2, 2);
    open_fails(write_bytes("e.idx", &b), CLI_FMT_AUTO, 5,
               "4 values, expected 5", NULL);
}
END_TEST

/* ---- whole matrices ----------------------------------------------------- */

START_TEST(test_readers_matrix)
{
    bytes b = {0};
    float *m;
    size_t rows;
    uint32_t dim;

    fvecs_build(&b, 3);
    const char *p = write_bytes("a.fvecs.gz", &b);
    ck_assert_int_eq(cli_read_matrix(p, CLI_FMT_AUTO, &m, &rows, &dim,
                                     errbuf, sizeof errbuf), 0);
    ck_assert_uint_eq(rows, 3);
    ck_assert_uint_eq(dim, 4);
    ck_assert_int_eq(memcmp(m, fv, sizeof fv), 0);
    free(m);

    /* More rows than the first reservation. */
    char *text = malloc(3000 * 16);
    ck_assert_ptr_nonnull(text);
    size_t n = 0;
    for (int i = 0; i < 3000; i++)
        n += (size_t)sprintf(text + n, "%d,%d\n", i, -i);
    p = write_file("big.csv", text, n);
    free(text);
    ck_assert_int_eq(cli_read_matrix(p, CLI_FMT_AUTO, &m, &rows, &dim,
                                     errbuf, sizeof errbuf), 0);
    ck_assert_uint_eq(rows, 3000);
    ck_assert_uint_eq(dim, 2);
    ck_assert(m[2 * 2999] == 2999.0f && m[2 * 2999 + 1] == -2999.0f);
    free(m);

    /* jsonl metadata is dropped, not leaked. */
    p = write_text("m.jsonl", "{\"vector\":[1],\"metadata\":{\"a\":1}}\n");
    ck_assert_int_eq(cli_read_matrix(p, CLI_FMT_AUTO, &m, &rows, &dim,
                                     errbuf, sizeof errbuf), 0);
    ck_assert_uint_eq(rows, 1);
    free(m);

    p = write_text("e.csv", "\n");
    ck_assert_int_eq(cli_read_matrix(p, CLI_FMT_AUTO, &m, &rows, &dim,
                                     errbuf, sizeof errbuf), -1);
    assert_has(errbuf, "e.csv: no vectors");
    ck_assert_ptr_null(m);
    p = write_text("bad.csv", "1,2\n3\n");
    ck_assert_int_eq(cli_read_matrix(p, CLI_FMT_AUTO, &m, &rows, &dim,
                                     errbuf, sizeof errbuf), -1);
    assert_has(errbuf, "bad.csv: record 2 (line 2)");
    ck_assert_ptr_null(m);
    ck_assert_uint_eq(rows, 0);
}
END_TEST

/* ---- labels ------------------------------------------------------------- */

static const char *const abc_names[] = {"zero", "one", "two"};

START_TEST(test_readers_labels)
{
    static const char *const names[] = {"l-idx1-ubyte", "l-idx1-ubyte.gz"};
    cli_labels l;
    bytes b = {0};

    for (int k = 0; k < 2; k++) {
        put_be32(&b, 0x00000801);
        put_be32(&b, 4);
        put_u8(&b, 2);
        put_u8(&b, 0);
        put_u8(&b, 7);
        put_u8(&b, 255);
        const char *p = write_bytes(names[k], &b);
        ck_assert_int_eq(cli_labels_load(p, abc_names, 3, &l, errbuf,
                                         sizeof errbuf), 0);
        ck_assert_uint_eq(l.n, 4);
        ck_assert_ptr_nonnull(l.num);
        ck_assert_str_eq(l.text[0], "two");
        ck_assert_str_eq(l.text[1], "zero");
        ck_assert_str_eq(l.text[2], "7");
        ck_assert_str_eq(l.text[3], "255");
        ck_assert(l.num[0] == 2 && l.num[2] == 7 && l.num[3] == 255);
        cli_labels_free(&l);
        ck_assert_int_eq(cli_labels_load(p, NULL, 0, &l, errbuf,
                                         sizeof errbuf), 0);
        ck_assert_str_eq(l.text[0], "2");
        cli_labels_free(&l);
    }

    /* Text, with CRLF and no final newline. */
    const char *p = write_text("l.txt", "cat\r\ndog house\nbird");
    ck_assert_int_eq(cli_labels_load(p, abc_names, 3, &l, errbuf,
                                     sizeof errbuf), 0);
    ck_assert_uint_eq(l.n, 3);
    ck_assert_ptr_null(l.num);
    ck_assert_str_eq(l.text[0], "cat");
    ck_assert_str_eq(l.text[1], "dog house");
    ck_assert_str_eq(l.text[2], "bird");
    cli_labels_free(&l);
    cli_labels_free(&l);
    cli_labels_free(NULL);
    p = write_text("l.txt.gz", "0\n");
    ck_assert_int_eq(cli_labels_load(p, NULL, 0, &l, errbuf, sizeof errbuf),
                     0);
    ck_assert_uint_eq(l.n, 1);
    ck_assert_str_eq(l.text[0], "0");
    cli_labels_free(&l);
}
END_TEST

static void labels_fail(const char *p, const char *part)
{
    cli_labels l;
    ck_assert_int_eq(cli_labels_load(p, NULL, 0, &l, errbuf, sizeof errbuf),
                     -1);
    assert_has(errbuf, p);
    assert_has(errbuf, part);
    ck_assert_uint_eq(l.n, 0);
    ck_assert_ptr_null(l.text);
}

START_TEST(test_readers_labels_bad)
{
    bytes b = {0};

    labels_fail(write_text("e.txt", "a\nb\n\nc\n"), "line 3: empty label");
    labels_fail(write_text("e2.txt", "a\r\n\r\n"), "line 2: empty label");
    labels_fail(write_file("z.txt", "a\nb\0c\n", 6), "line 2: NUL byte");
    put_be32(&b, 0x00000801);
    put_be32(&b, 5);
    put_u8(&b, 1);
    labels_fail(write_bytes("t-idx1-ubyte.gz", &b),
                "truncated: the header says 5 labels, the file has 1");
    put_be32(&b, 0x00000801);
    put_be32(&b, 1);
    put_u8(&b, 1);
    put_u8(&b, 1);
    labels_fail(write_bytes("x-idx1-ubyte", &b),
                "trailing data: the header says 1 labels, the file has 2");
    put_be32(&b, 0x00000803);
    put_be32(&b, 1);
    labels_fail(write_bytes("i-idx3-ubyte", &b),
                "bad magic 0x00000803 (not an idx1 ubyte labels file)");
    labels_fail(path_of("missing"), "cannot open");
}
END_TEST

START_TEST(test_readers_fmnist)
{
    cli_labels l;
    size_t count[10] = {0};

    ck_assert_str_eq(cli_fmnist_names[0], "T-shirt/top");
    ck_assert_str_eq(cli_fmnist_names[9], "Ankle boot");
    if (access(FMNIST_LABELS, R_OK) != 0)
        return; /* Fashion-MNIST is not installed: nothing more to check */
    ck_assert_int_eq(cli_labels_load(FMNIST_LABELS, cli_fmnist_names, 10, &l,
                                     errbuf, sizeof errbuf), 0);
    ck_assert_uint_eq(l.n, 10000);
    for (size_t i = 0; i < l.n; i++) {
        ck_assert(l.num[i] >= 0 && l.num[i] < 10);
        ck_assert_str_eq(l.text[i], cli_fmnist_names[l.num[i]]);
        count[l.num[i]]++;
    }
    /* The test set is balanced: 1000 of each class. */
    for (int c = 0; c < 10; c++)
        ck_assert_uint_eq(count[c], 1000);
    cli_labels_free(&l);
}
END_TEST

static Suite *readers_suite(void)
{
    Suite *s = suite_create("readers");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"json_values", test_json_values},
        {"json_numbers", test_json_numbers},
        {"json_strings", test_json_strings},
        {"json_depth", test_json_depth},
        {"json_errors", test_json_errors},
        {"json_write", test_json_write},
        {"format", test_readers_format},
        {"open_errors", test_readers_open_errors},
        {"fvecs", test_readers_fvecs},
        {"fvecs_bad", test_readers_fvecs_bad},
        {"bvecs", test_readers_bvecs},
        {"npy", test_readers_npy},
        {"npy_bad", test_readers_npy_bad},
        {"csv", test_readers_csv},
        {"csv_bad", test_readers_csv_bad},
        {"jsonl", test_readers_jsonl},
        {"jsonl_bad", test_readers_jsonl_bad},
        {"idx", test_readers_idx},
        {"idx_bad", test_readers_idx_bad},
        {"matrix", test_readers_matrix},
        {"labels", test_readers_labels},
        {"labels_bad", test_readers_labels_bad},
        {"fmnist", test_readers_fmnist},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(readers_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
