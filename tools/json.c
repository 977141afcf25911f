/*
 * tools/json.c - the JSON of the iqdb program: writers for strings,
 * numbers, iqdb values, metadata maps and ids, and a strict RFC 8259
 * reader that builds a small DOM (see cli.h).
 *
 * The reader is stricter than the RFC requires in three places, all of
 * them cases where a lenient reading would silently lose data:
 *   - duplicate object keys are an error (the RFC leaves them undefined);
 *   - object keys may not contain \u0000 (keys are NUL-terminated);
 *   - numbers beyond the double range (1e400) are an error, not infinity.
 * Text must be UTF-8; invalid UTF-8 inside strings is an error.
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

/* ------------------------------------------------------------------ */
/* Writing                                                              */

/*
 * Length of the well-formed UTF-8 sequence at s[0..n), or 0 when it is
 * not one (overlong forms, surrogates and code points above U+10FFFF are
 * rejected, per RFC 3629 section 4).
 */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len, i;
    unsigned char lo = 0x80, hi = 0xbf;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* The two-character escape of c, or NULL when it has none. */
static const char *short_escape(unsigned char c)
{
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    case '\b':
        return "\\b";
    case '\f':
        return "\\f";
    default:
        return NULL;
    }
}

void cli_json_write_str(FILE *f, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    putc('"', f);
    while (i < len) {
        unsigned char c = p[i];
        const char *esc;
        size_t n;

        esc = short_escape(c);
        if (esc != NULL) {
            fputs(esc, f);
            i++;
            continue;
        }
        if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
            i++;
            continue;
        }
        n = utf8_seq_len(p + i, len - i);
        if (n == 0) {
            /* Not UTF-8: the byte as the code point of the same value,
             * so the output stays valid JSON. */
            fprintf(f, "\\u%04x", c);
            i++;
            continue;
        }
        fwrite(p + i, 1, n, f);
        i += n;
    }
    putc('"', f);
}

void cli_json_write_double(FILE *f, double d)
{
    if (!isfinite(d)) {
        fputs("null", f);
        return;
    }
    /* Integral values below 2^53 are exact in a double: print every
     * digit rather than %.9g's rounded exponent form. */
    if (d == trunc(d) && fabs(d) < 9007199254740992.0) {
        fprintf(f, "%.0f", d);
        return;
    }
    fprintf(f, "%.9g", d);
}

void cli_json_write_value(FILE *f, const iqdb_value *v)
{
    switch (v->type) {
    case IQDB_TYPE_STRING:
        cli_json_write_str(f, v->v.s, v->len);
        break;
    case IQDB_TYPE_INT:
        fprintf(f, "%" PRId64, v->v.i);
        break;
    case IQDB_TYPE_DOUBLE:
        cli_json_write_double(f, v->v.d);
        break;
    case IQDB_TYPE_BOOL:
        fputs(v->v.b ? "true" : "false", f);
        break;
    case IQDB_TYPE_NULL:
    default:
        fputs("null", f);
        break;
    }
}

void cli_json_write_meta(FILE *f, const iqdb_meta *m)
{
    size_t i, n = m != NULL ? iqdb_meta_count(m) : 0;

    putc('{', f);
    for (i = 0; i < n; i++) {
        const char *key;
        iqdb_value v;

        if (iqdb_meta_at(m, i, &key, &v) != 0)
            break;
        if (i > 0)
            putc(',', f);
        cli_json_write_str(f, key, strlen(key));
        putc(':', f);
        cli_json_write_value(f, &v);
    }
    putc('}', f);
}

void cli_json_write_id(FILE *f, iqdb_id id)
{
    if (id.kind == IQDB_ID_U64)
        fprintf(f, "%" PRIu64, id.v.u64);
    else
        cli_json_write_str(f, id.v.bytes, id.len);
}

/* ------------------------------------------------------------------ */
/* Reading                                                              */

typedef struct json_parser {
    const char *start;
    const char *p;
    const char *end;
    char *err;
    size_t errlen;
    int depth;
} json_parser;

/* A growable byte buffer for decoded strings. */
typedef struct json_buf {
    char *data;
    size_t len;
    size_t cap;
} json_buf;

__attribute__((format(printf, 3, 4))) static int
fail_at(json_parser *ps, const char *at, const char *fmt, ...)
{
    char what[160];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (ps->err != NULL && ps->errlen > 0)
        snprintf(ps->err, ps->errlen, "column %zu: %s",
                 (size_t)(at - ps->start) + 1, what);
    return -1;
}

/* "'x'" for a printable byte, else "byte 0xNN", for the messages. */
static const char *describe(const char *at, const char *end, char *buf,
                            size_t buflen)
{
    unsigned char c;

    if (at >= end)
        return "end of input";
    c = (unsigned char)*at;
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, buflen, "'%c'", c);
    else
        snprintf(buf, buflen, "byte 0x%02x", c);
    return buf;
}

static int fail_unexpected(json_parser *ps, const char *expected)
{
    char b[16];

    return fail_at(ps, ps->p, "unexpected %s, expected %s",
                   describe(ps->p, ps->end, b, sizeof(b)), expected);
}

static int fail_nomem(json_parser *ps)
{
    return fail_at(ps, ps->p, "out of memory");
}

static void skip_ws(json_parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' ||
                               *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int buf_reserve(json_buf *b, size_t extra)
{
    size_t cap;
    char *nd;

    if (b->len + extra + 1 <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 32;
    while (cap < b->len + extra + 1)
        cap *= 2;
    nd = realloc(b->data, cap);
    if (nd == NULL)
        return -1;
    b->data = nd;
    b->cap = cap;
    return 0;
}

static void buf_put_utf8(json_buf *b, uint32_t cp)
{
    char *o = b->data + b->len;

    if (cp < 0x80) {
        o[0] = (char)cp;
        b->len += 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        b->len += 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        b->len += 3;
    } else {
        o[0] = (char)(0xf0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[3] = (char)(0x80 | (cp & 0x3f));
        b->len += 4;
    }
}

/* Four hex digits at ps->p (just after "\u"). */
static int parse_hex4(json_parser *ps, uint32_t *out)
{
    uint32_t v = 0;
    int i;

    if (ps->end - ps->p < 4)
        return fail_at(ps, ps->p, "truncated \\u escape");
    for (i = 0; i < 4; i++) {
        char c = ps->p[i];
        uint32_t d;

        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            return fail_at(ps, ps->p + i, "bad hex digit in \\u escape");
        v = v << 4 | d;
    }
    ps->p += 4;
    *out = v;
    return 0;
}

/* A \uXXXX escape, with ps->p just after the "\u"; a high surrogate must
 * be followed by an escaped low surrogate (RFC 8259 section 7). */
static int parse_u_escape(json_parser *ps, json_buf *b)
{
    const char *esc = ps->p - 2;
    uint32_t cp, lo;

    if (parse_hex4(ps, &cp) != 0)
        return -1;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return fail_at(ps, esc, "lone low surrogate \\u%04x", (unsigned)cp);
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
            return fail_at(ps, esc, "high surrogate \\u%04x without a low "
                           "surrogate", (unsigned)cp);
        ps->p += 2;
        if (parse_hex4(ps, &lo) != 0)
            return -1;
        if (lo < 0xdc00 || lo > 0xdfff)
            return fail_at(ps, esc, "high surrogate \\u%04x followed by "
                           "\\u%04x, not a low surrogate", (unsigned)cp,
                           (unsigned)lo);
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    if (buf_reserve(b, 4) != 0)
        return fail_nomem(ps);
    buf_put_utf8(b, cp);
    return 0;
}

static int parse_escape(json_parser *ps, json_buf *b)
{
    char c, out;

    ps->p++; /* the backslash */
    if (ps->p >= ps->end)
        return fail_at(ps, ps->p, "unterminated string");
    c = *ps->p++;
    switch (c) {
    case '"': out = '"'; break;
    case '\\': out = '\\'; break;
    case '/': out = '/'; break;
    case 'b': out = '\b'; break;
    case 'f': out = '\f'; break;
    case 'n': out = '\n'; break;
    case 'r': out = '\r'; break;
    case 't': out = '\t'; break;
    case 'u': return parse_u_escape(ps, b);
    default:
        return fail_at(ps, ps->p - 2, "bad escape \\%c", c >= 0x20 &&
                       c < 0x7f ? c : '?');
    }
    if (buf_reserve(b, 1) != 0)
        return fail_nomem(ps);
    b->data[b->len++] = out;
    return 0;
}

/* A string with ps->p on its opening quote; the result is NUL-terminated
 * in *out (malloc'd) with its length in *len. */
static int parse_string(json_parser *ps, char **out, size_t *len)
{
    json_buf b = {NULL, 0, 0};
    const char *open = ps->p;

    ps->p++;
    if (buf_reserve(&b, 0) != 0)
        return fail_nomem(ps);
    for (;;) {
        unsigned char c;
        size_t n;

        if (ps->p >= ps->end) {
            fail_at(ps, open, "unterminated string");
            goto fail;
        }
        c = (unsigned char)*ps->p;
        if (c == '"')
            break;
        if (c == '\\') {
            if (parse_escape(ps, &b) != 0)
                goto fail;
            continue;
        }
        if (c < 0x20) {
            fail_at(ps, ps->p, "control character 0x%02x in string", c);
            goto fail;
        }
        n = utf8_seq_len((const unsigned char *)ps->p,
                         (size_t)(ps->end - ps->p));
        if (n == 0) {
            fail_at(ps, ps->p, "invalid UTF-8 in string");
            goto fail;
        }
        if (buf_reserve(&b, n) != 0) {
            fail_nomem(ps);
            goto fail;
        }
        memcpy(b.data + b.len, ps->p, n);
        b.len += n;
        ps->p += n;
    }
    ps->p++;
    b.data[b.len] = '\0';
    *out = b.data;
    *len = b.len;
    return 0;

fail:
    free(b.data);
    return -1;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A number by the RFC 8259 grammar:
 *   -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static int parse_number(json_parser *ps, cli_json *v)
{
    const char *s = ps->p, *q = ps->p;
    char small[64], *copy = small;
    int integral = 1, neg = 0;
    size_t n;
    uint64_t mag = 0;
    int fits = 1;

    if (*q == '-') {
        neg = 1;
        q++;
    }
    if (q >= ps->end || !is_digit(*q)) {
        ps->p = q;
        return fail_unexpected(ps, "a digit");
    }
    if (*q == '0' && q + 1 < ps->end && is_digit(q[1]))
        return fail_at(ps, q, "leading zero in number");
    for (; q < ps->end && is_digit(*q); q++) {
        unsigned d = (unsigned)(*q - '0');

        if (mag > (UINT64_MAX - d) / 10)
            fits = 0;
        else
            mag = mag * 10 + d;
    }
    if (q < ps->end && *q == '.') {
        integral = 0;
        q++;
        if (q >= ps->end || !is_digit(*q)) {
            ps->p = q;
            return fail_unexpected(ps, "a digit after '.'");
        }
        while (q < ps->end && is_digit(*q))
            q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        integral = 0;
        q++;
        if (q < ps->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= ps->end || !is_digit(*q)) {
            ps->p = q;
            return fail_unexpected(ps, "a digit in the exponent");
        }
        while (q < ps->end && is_digit(*q))
            q++;
    }
    /* strtod wants a NUL-terminated copy; the grammar above already
     * excluded everything strtod would accept beyond JSON (hex, inf). */
    n = (size_t)(q - s);
    if (n >= sizeof(small)) {
        copy = malloc(n + 1);
        if (copy == NULL)
            return fail_nomem(ps);
    }
    memcpy(copy, s, n);
    copy[n] = '\0';
    errno = 0;
    v->num = strtod(copy, NULL);
    if (copy != small)
        free(copy);
    if (errno == ERANGE && isinf(v->num))
        return fail_at(ps, s, "number out of range");
    v->type = CLI_JSON_NUMBER;
    if (integral && fits &&
        mag <= (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) {
        v->is_int = 1;
        if (!neg)
            v->i = (int64_t)mag;
        else if (mag > (uint64_t)INT64_MAX)
            v->i = INT64_MIN;
        else
            v->i = -(int64_t)mag;
    }
    ps->p = q;
    return 0;
}

static int match_word(json_parser *ps, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return 0;
    ps->p += n;
    return 1;
}

static int parse_value(json_parser *ps, cli_json *v);

/* Room for one more member in an array or object of *cap slots. */
static int grow_members(json_parser *ps, cli_json *v, size_t *cap,
                        int with_keys)
{
    size_t ncap;
    cli_json *items;

    if (v->len < *cap)
        return 0;
    ncap = *cap ? *cap * 2 : 4;
    items = realloc(v->items, ncap * sizeof(*items));
    if (items == NULL)
        return fail_nomem(ps);
    v->items = items;
    if (with_keys) {
        char **keys = realloc(v->keys, ncap * sizeof(*keys));

        if (keys == NULL)
            return fail_nomem(ps);
        v->keys = keys;
    }
    *cap = ncap;
    return 0;
}

static int parse_array(json_parser *ps, cli_json *v)
{
    size_t cap = 0;

    v->type = CLI_JSON_ARRAY;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return 0;
    }
    for (;;) {
        if (grow_members(ps, v, &cap, 0) != 0)
            return -1;
        memset(&v->items[v->len], 0, sizeof(v->items[0]));
        v->len++;
        if (parse_value(ps, &v->items[v->len - 1]) != 0)
            return -1;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return 0;
        }
        return fail_unexpected(ps, "',' or ']'");
    }
}

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Duplicate keys by sorting a copy of the key list: O(n log n), so a
 * hostile object of many keys stays cheap. */
static int check_duplicates(json_parser *ps, const cli_json *v,
                            const char *open)
{
    char **sorted;
    size_t i;
    int rc = 0;

    if (v->len < 2)
        return 0;
    sorted = malloc(v->len * sizeof(*sorted));
    if (sorted == NULL)
        return fail_nomem(ps);
    memcpy(sorted, v->keys, v->len * sizeof(*sorted));
    qsort(sorted, v->len, sizeof(*sorted), cmp_keys);
    for (i = 1; i < v->len; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            rc = fail_at(ps, open, "duplicate key \"%.64s\" in object",
                         sorted[i]);
            break;
        }
    }
    free(sorted);
    return rc;
}

static int parse_member(json_parser *ps, cli_json *v)
{
    size_t klen;
    char *key;
    const char *kat;

    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != '"')
        return fail_unexpected(ps, "a string key");
    kat = ps->p;
    if (parse_string(ps, &key, &klen) != 0)
        return -1;
    if (strlen(key) != klen) {
        free(key);
        return fail_at(ps, kat, "object key contains \\u0000");
    }
    /* Count the member before parsing its value, so cli_json_free
     * releases the key and the partial value on failure. */
    v->keys[v->len] = key;
    memset(&v->items[v->len], 0, sizeof(v->items[0]));
    v->len++;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':')
        return fail_unexpected(ps, "':'");
    ps->p++;
    return parse_value(ps, &v->items[v->len - 1]);
}

static int parse_object(json_parser *ps, cli_json *v)
{
    const char *open = ps->p;
    size_t cap = 0;

    v->type = CLI_JSON_OBJECT;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return 0;
    }
    for (;;) {
        if (grow_members(ps, v, &cap, 1) != 0)
            return -1;
        if (parse_member(ps, v) != 0)
            return -1;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            return check_duplicates(ps, v, open);
        }
        return fail_unexpected(ps, "',' or '}'");
    }
}

static int parse_value(json_parser *ps, cli_json *v)
{
    const char *start;
    int rc;

    skip_ws(ps);
    start = ps->p;
    if (ps->p >= ps->end)
        return fail_unexpected(ps, "a value");
    switch (*ps->p) {
    case '{':
    case '[':
        if (ps->depth >= JSON_MAX_DEPTH)
            return fail_at(ps, ps->p, "nesting deeper than %d",
                           JSON_MAX_DEPTH);
        ps->depth++;
        rc = *ps->p == '{' ? parse_object(ps, v) : parse_array(ps, v);
        ps->depth--;
        return rc;
    case '"':
        v->type = CLI_JSON_STRING;
        return parse_string(ps, &v->str, &v->len);
    case 't':
    case 'f':
    case 'n':
        if (match_word(ps, "true") || match_word(ps, "false")) {
            v->type = CLI_JSON_BOOL;
            v->b = *start == 't';
            return 0;
        }
        if (match_word(ps, "null")) {
            v->type = CLI_JSON_NULL;
            return 0;
        }
        return fail_unexpected(ps, "a value");
    default:
        if (*ps->p == '-' || is_digit(*ps->p))
            return parse_number(ps, v);
        return fail_unexpected(ps, "a value");
    }
}

int cli_json_parse(const char *text, size_t len, cli_json *out, char *err,
                   size_t errlen)
{
    json_parser ps;

    memset(out, 0, sizeof(*out));
    ps.start = text;
    ps.p = text;
    ps.end = text + len;
    ps.err = err;
    ps.errlen = errlen;
    ps.depth = 0;
    if (parse_value(&ps, out) != 0)
        goto fail;
    skip_ws(&ps);
    if (ps.p < ps.end) {
        char b[16];

        fail_at(&ps, ps.p, "unexpected %s after the value",
                describe(ps.p, ps.end, b, sizeof(b)));
        goto fail;
    }
    return 0;

fail:
    cli_json_free(out);
    return -1;
}

void cli_json_free(cli_json *v)
{
    size_t i;

    if (v == NULL)
        return;
    if (v->type == CLI_JSON_ARRAY || v->type == CLI_JSON_OBJECT) {
        for (i = 0; i < v->len; i++) {
            cli_json_free(&v->items[i]);
            if (v->keys != NULL)
                free(v->keys[i]);
        }
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    memset(v, 0, sizeof(*v));
}

const cli_json *cli_json_get(const cli_json *obj, const char *key)
{
    size_t i;

    if (obj == NULL || obj->type != CLI_JSON_OBJECT)
        return NULL;
    for (i = 0; i < obj->len; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return &obj->items[i];
    return NULL;
}

/* ---- JSON to metadata ----------------------------------------------------- */

int cli_json_to_meta(const cli_json *obj, iqdb_meta **out, char *err,
                     size_t errlen)
{
    iqdb_meta *m;
    size_t i;

    *out = NULL;
    if (obj->type != CLI_JSON_OBJECT) {
        snprintf(err, errlen, "\"metadata\" is not an object");
        return -1;
    }
    if ((m = iqdb_meta_new()) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (i = 0; i < obj->len; i++) {
        const cli_json *v = &obj->items[i];
        iqdb_value x;

        switch (v->type) {
        case CLI_JSON_STRING:
            x = iqdb_value_strn(v->str, v->len);
            break;
        case CLI_JSON_NUMBER:
            x = v->is_int ? iqdb_value_int(v->i) : iqdb_value_double(v->num);
            break;
        case CLI_JSON_BOOL:
            x = iqdb_value_bool(v->b);
            break;
        case CLI_JSON_NULL:
            x = iqdb_value_null();
            break;
        default:
            snprintf(err, errlen, "metadata \"%.64s\": nested arrays and "
                     "objects are not supported", obj->keys[i]);
            iqdb_meta_free(m);
            return -1;
        }
        if (iqdb_meta_set(m, obj->keys[i], x) != 0) {
            snprintf(err, errlen, "metadata \"%.64s\": %s", obj->keys[i],
                     iqdb_errmsg(NULL));
            iqdb_meta_free(m);
            return -1;
        }
    }
    *out = m;
    return 0;
}
