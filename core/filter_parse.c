/*
 * core/filter_parse.c - filter text to filter tree.
 *
 * A hand-written lexer and a recursive-descent parser, one function per
 * rule of the grammar in iqdb.h, building the tree through the public
 * builders. The text is untrusted (it is fuzzed): its length is bounded
 * before anything is allocated, recursion is bounded by counting nested
 * parentheses and NOTs, and every byte is checked against the length, never
 * against a terminator found by luck. Decoded strings and field names go
 * into one scratch buffer sized from the text, so lexing allocates once.
 * Numbers are converted in the C locale, whatever the application set.
 */
#include "config.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter_int.h"
#include "iqdb_int.h"

enum tok {
    T_END, T_ERR, T_FIELD, T_STR, T_INT, T_DBL, T_LP, T_RP, T_COMMA, T_OP,
    T_AND, T_OR, T_NOT, T_IN, T_TRUE, T_FALSE, T_NULL
};

enum op { OP_EQ, OP_NEQ, OP_LT, OP_LTE, OP_GT, OP_GTE };

struct token {
    enum tok type;
    size_t start, end; /* byte offsets of the token in the text */
    enum op op;        /* T_OP */
    const char *s;     /* T_FIELD (NUL-terminated), T_STR: in scratch */
    size_t len;        /* T_STR */
    int64_t i;         /* T_INT */
    double d;          /* T_DBL */
};

struct parser {
    const char *text;
    size_t len;
    size_t pos; /* next byte to lex */
    struct token tok;
    unsigned depth;
    char *scratch;
    size_t used, cap;
    int code; /* first error; 0 while there is none */
    size_t err_off;
    char msg[sizeof ((iqdb_parse_error *)0)->message];
};

/* ---- errors ---------------------------------------------------------- */

/* Record the first error only: later ones are consequences of it. */
static void IQDB_PRINTF(4, 5)
fail(struct parser *p, int code, size_t off, const char *fmt, ...)
{
    if (p->code != 0)
        return;
    char what[sizeof p->msg - 32]; /* room left for the offset */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(p->msg, sizeof p->msg, "%s at offset %zu", what, off);
    p->code = code;
    p->err_off = off;
}

static void fail_nomem(struct parser *p)
{
    fail(p, IQDB_ENOMEM, p->tok.start, "out of memory");
}

/* ---- characters ------------------------------------------------------ */

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_ident_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_ident_char(int c)
{
    return is_ident_start(c) || is_digit(c) || c == '.';
}

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
           c == '\v';
}

/* The byte at i, or -1 past the end. */
static int at(const struct parser *p, size_t i)
{
    return i < p->len ? (unsigned char)p->text[i] : -1;
}

/* Fail on the byte at off, shown as 'x' when printable, else in hex. */
static void fail_unexpected(struct parser *p, size_t off, const char *where)
{
    int c = at(p, off);
    if (c > 0x20 && c < 0x7f)
        fail(p, IQDB_EPARSE, off, "unexpected character '%c'%s", c, where);
    else
        fail(p, IQDB_EPARSE, off, "unexpected byte 0x%02x%s", c & 0xff,
             where);
}

/* ---- scratch --------------------------------------------------------- */

/* Room for n bytes in the scratch buffer. The buffer is sized so that
 * this cannot fail (see iqdb_filter_parse); the check keeps a mistake in
 * that bound from becoming an overflow. */
static char *scratch_take(struct parser *p, size_t n)
{
    if (n > p->cap - p->used) {
        fail(p, IQDB_EINTERNAL, p->tok.start, "scratch buffer exhausted");
        return NULL;
    }
    char *s = p->scratch + p->used;
    p->used += n;
    return s;
}

/* ---- lexer ----------------------------------------------------------- */

/* ASCII case-insensitive match of text[start..end) with lower-case kw. */
static int is_keyword(const struct parser *p, size_t start, size_t end,
                      const char *kw)
{
    size_t n = strlen(kw);
    if (end - start != n)
        return 0;
    for (size_t k = 0; k < n; k++) {
        int c = (unsigned char)p->text[start + k];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != kw[k])
            return 0;
    }
    return 1;
}

static void lex_ident(struct parser *p)
{
    static const struct {
        const char *kw;
        enum tok type;
    } kws[] = {
        {"and", T_AND},   {"or", T_OR},       {"not", T_NOT},
        {"in", T_IN},     {"true", T_TRUE},   {"false", T_FALSE},
        {"null", T_NULL},
    };
    size_t start = p->pos, end = start;
    while (end < p->len && is_ident_char(at(p, end)))
        end++;
    p->pos = end;
    p->tok.end = end;
    for (size_t k = 0; k < sizeof kws / sizeof kws[0]; k++) {
        if (is_keyword(p, start, end, kws[k].kw)) {
            p->tok.type = kws[k].type;
            return;
        }
    }
    char *s = scratch_take(p, end - start + 1);
    if (s == NULL)
        return;
    memcpy(s, p->text + start, end - start);
    s[end - start] = '\0';
    p->tok.type = T_FIELD;
    p->tok.s = s;
}

static void lex_quoted_field(struct parser *p)
{
    size_t start = p->pos;
    const char *close = memchr(p->text + start + 1, '`', p->len - start - 1);
    if (close == NULL) {
        fail(p, IQDB_EPARSE, start, "unterminated `field`");
        return;
    }
    size_t n = (size_t)(close - (p->text + start + 1));
    if (n == 0) {
        fail(p, IQDB_EPARSE, start, "empty field name");
        return;
    }
    char *s = scratch_take(p, n + 1);
    if (s == NULL)
        return;
    memcpy(s, p->text + start + 1, n);
    s[n] = '\0';
    p->pos = start + n + 2;
    p->tok.end = p->pos;
    p->tok.type = T_FIELD;
    p->tok.s = s;
}

static int unescape(int c)
{
    switch (c) {
    case '"':
    case '\'':
    case '\\':
        return c;
    case 'n':
        return '\n';
    case 't':
        return '\t';
    default:
        return -1;
    }
}

static void lex_string(struct parser *p)
{
    size_t start = p->pos, i = start + 1;
    int quote = at(p, start);
    /* The decoded string is no longer than the rest of the text: reserve
     * that much, then give back what it did not use. */
    size_t room = p->len - start;
    char *s = scratch_take(p, room), *o = s;
    if (s == NULL)
        return;
    p->used -= room;
    for (;;) {
        int c = at(p, i);
        if (c < 0) {
            fail(p, IQDB_EPARSE, start, "unterminated string");
            return;
        }
        if (c == quote)
            break;
        if (c == '\\') {
            int e = unescape(at(p, i + 1));
            if (e < 0) {
                if (at(p, i + 1) < 0)
                    fail(p, IQDB_EPARSE, start, "unterminated string");
                else
                    fail(p, IQDB_EPARSE, i, "unknown escape");
                return;
            }
            c = e;
            i++;
        }
        *o++ = (char)c;
        i++;
    }
    size_t n = (size_t)(o - s);
    p->used += n;
    p->pos = i + 1;
    p->tok.end = p->pos;
    p->tok.type = T_STR;
    p->tok.s = s;
    p->tok.len = n;
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

/* strtod in the C locale: the application may have chosen one whose
 * decimal point is a comma. */
static double c_strtod(const char *s, char **end)
{
    pthread_once(&c_locale_once, c_locale_init);
    errno = 0;
    if (c_locale == (locale_t)0)
        return strtod(s, end);
    locale_t old = uselocale(c_locale);
    errno = 0;
    double d = strtod(s, end);
    uselocale(old);
    return d;
}

/* Scan digits from i; returns the offset after them, or fails with
 * `what` when there is none. */
static size_t digits(struct parser *p, size_t i, const char *what)
{
    if (!is_digit(at(p, i))) {
        fail(p, IQDB_EPARSE, i, "expected digit %s", what);
        return 0;
    }
    while (is_digit(at(p, i)))
        i++;
    return i;
}

static void number_int(struct parser *p, size_t start, size_t end)
{
    int neg = at(p, start) == '-';
    uint64_t limit = neg ? (uint64_t)1 << 63 : ((uint64_t)1 << 63) - 1;
    uint64_t mag = 0;
    for (size_t k = start + (size_t)neg; k < end; k++) {
        unsigned dgt = (unsigned)(p->text[k] - '0');
        if (mag > (limit - dgt) / 10) {
            fail(p, IQDB_EPARSE, start, "integer out of range");
            return;
        }
        mag = mag * 10 + dgt;
    }
    p->tok.type = T_INT;
    if (!neg)
        p->tok.i = (int64_t)mag;
    else if (mag == (uint64_t)1 << 63)
        p->tok.i = INT64_MIN;
    else
        p->tok.i = -(int64_t)mag;
}

static void number_dbl(struct parser *p, size_t start, size_t end)
{
    char *stop;
    /* The text is NUL-terminated and the lexer has checked the syntax, so
     * strtod stops exactly at end. */
    double d = c_strtod(p->text + start, &stop);
    if (stop != p->text + end) {
        fail(p, IQDB_EINTERNAL, start, "number conversion disagrees");
        return;
    }
    if (errno == ERANGE && isinf(d)) {
        fail(p, IQDB_EPARSE, start, "number out of range");
        return;
    }
    p->tok.type = T_DBL;
    p->tok.d = d;
}

/* number := '-'? digit+ ('.' digit+)? ([eE] [+-]? digit+)? */
static void lex_number(struct parser *p)
{
    size_t start = p->pos, i = start;
    int is_dbl = 0;
    if (at(p, i) == '-')
        i++;
    if ((i = digits(p, i, "after '-'")) == 0)
        return;
    if (at(p, i) == '.') {
        if ((i = digits(p, i + 1, "after '.'")) == 0)
            return;
        is_dbl = 1;
    }
    if (at(p, i) == 'e' || at(p, i) == 'E') {
        i++;
        if (at(p, i) == '+' || at(p, i) == '-')
            i++;
        if ((i = digits(p, i, "in exponent")) == 0)
            return;
        is_dbl = 1;
    }
    if (is_ident_char(at(p, i))) {
        fail_unexpected(p, i, " in number");
        return;
    }
    p->pos = i;
    p->tok.end = i;
    if (is_dbl)
        number_dbl(p, start, i);
    else
        number_int(p, start, i);
}

static void lex_op(struct parser *p, enum op op, size_t n)
{
    p->tok.type = T_OP;
    p->tok.op = op;
    p->pos += n;
    p->tok.end = p->pos;
}

/* Operators and punctuation; 0 when c starts neither. */
static int lex_symbol(struct parser *p, int c)
{
    int c2 = at(p, p->pos + 1);
    switch (c) {
    case '(':
    case ')':
    case ',':
        p->tok.type = c == '(' ? T_LP : c == ')' ? T_RP : T_COMMA;
        p->tok.end = ++p->pos;
        return 1;
    case '=':
        lex_op(p, OP_EQ, c2 == '=' ? 2 : 1);
        return 1;
    case '!':
        if (c2 != '=')
            return 0;
        lex_op(p, OP_NEQ, 2);
        return 1;
    case '<':
        if (c2 == '>')
            lex_op(p, OP_NEQ, 2);
        else
            lex_op(p, c2 == '=' ? OP_LTE : OP_LT, c2 == '=' ? 2 : 1);
        return 1;
    case '>':
        lex_op(p, c2 == '=' ? OP_GTE : OP_GT, c2 == '=' ? 2 : 1);
        return 1;
    }
    return 0;
}

/* Move to the next token; on a lexical error the token is T_ERR. */
static void next(struct parser *p)
{
    while (is_space(at(p, p->pos)))
        p->pos++;
    memset(&p->tok, 0, sizeof p->tok);
    p->tok.start = p->tok.end = p->pos;
    p->tok.type = T_ERR;
    int c = at(p, p->pos);
    if (c < 0)
        p->tok.type = T_END;
    else if (lex_symbol(p, c))
        ;
    else if (c == '"' || c == '\'')
        lex_string(p);
    else if (c == '`')
        lex_quoted_field(p);
    else if (c == '-' || is_digit(c))
        lex_number(p);
    else if (is_ident_start(c))
        lex_ident(p);
    else
        fail_unexpected(p, p->pos, "");
    if (p->code != 0)
        p->tok.type = T_ERR;
}

/* ---- parser ---------------------------------------------------------- */

static iqdb_filter *parse_or(struct parser *p);
static iqdb_filter *parse_unary(struct parser *p);

/* The text of the current token, for messages (at most 40 bytes). */
static int tok_width(const struct parser *p)
{
    size_t n = p->tok.end - p->tok.start;
    return (int)(n > 40 ? 40 : n);
}

/* f, or NULL with ENOMEM recorded when a builder failed on its own. */
static iqdb_filter *built(struct parser *p, iqdb_filter *f)
{
    if (f == NULL)
        fail_nomem(p);
    return f;
}

static int take_value(const struct parser *p, iqdb_value *v)
{
    const struct token *t = &p->tok;
    switch (t->type) {
    case T_STR:
        *v = iqdb_value_strn(t->s, t->len);
        return 1;
    case T_INT:
        *v = iqdb_value_int(t->i);
        return 1;
    case T_DBL:
        *v = iqdb_value_double(t->d);
        return 1;
    case T_TRUE:
    case T_FALSE:
        *v = iqdb_value_bool(t->type == T_TRUE);
        return 1;
    case T_NULL:
        *v = iqdb_value_null();
        return 1;
    default:
        return 0;
    }
}

static iqdb_filter *build_cmp(enum op op, const char *field, iqdb_value v)
{
    switch (op) {
    case OP_EQ:
        return iqdb_filter_eq(field, v);
    case OP_NEQ:
        return iqdb_filter_neq(field, v);
    case OP_LT:
        return iqdb_filter_lt(field, v);
    case OP_LTE:
        return iqdb_filter_lte(field, v);
    case OP_GT:
        return iqdb_filter_gt(field, v);
    case OP_GTE:
        return iqdb_filter_gte(field, v);
    }
    return NULL;
}

/* field op value, with the field already consumed. */
static iqdb_filter *parse_cmp(struct parser *p, const char *field)
{
    enum op op = p->tok.op;
    const char *optext = p->text + p->tok.start;
    int opw = tok_width(p);
    iqdb_value v;
    next(p);
    if (!take_value(p, &v)) {
        fail(p, IQDB_EPARSE, p->tok.start, "expected value after '%.*s'",
             opw, optext);
        return NULL;
    }
    iqdb_filter *f = built(p, build_cmp(op, field, v));
    next(p);
    return f;
}

static int push_value(struct parser *p, iqdb_value **vals, size_t *n,
                      size_t *cap, iqdb_value v)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        iqdb_value *nv = iqdb__realloc(*vals, ncap * sizeof *nv);
        if (nv == NULL) {
            fail_nomem(p);
            return -1;
        }
        *vals = nv;
        *cap = ncap;
    }
    (*vals)[(*n)++] = v;
    return 0;
}

/* The values of "(" value ("," value)* ")", with "(" current. Returns
 * the count, or 0 after recording an error. The list is bounded by the
 * text length, so the array cannot overflow before memory runs out. */
static size_t parse_list(struct parser *p, iqdb_value **vals)
{
    size_t n = 0, cap = 0;
    const char *after = "(";
    *vals = NULL;
    for (;;) {
        iqdb_value v;
        next(p);
        if (!take_value(p, &v)) {
            fail(p, IQDB_EPARSE, p->tok.start, "expected value after '%s'",
                 after);
            return 0;
        }
        if (push_value(p, vals, &n, &cap, v) != 0)
            return 0;
        next(p);
        if (p->tok.type == T_RP)
            return n;
        if (p->tok.type != T_COMMA) {
            fail(p, IQDB_EPARSE, p->tok.start,
                 "expected ',' or ')' in IN list");
            return 0;
        }
        after = ",";
    }
}

/* field [NOT] IN (...), with the field consumed and IN current. */
static iqdb_filter *parse_in(struct parser *p, const char *field, int neg)
{
    next(p);
    if (p->tok.type != T_LP) {
        fail(p, IQDB_EPARSE, p->tok.start, "expected '(' after IN");
        return NULL;
    }
    iqdb_value *vals;
    size_t n = parse_list(p, &vals);
    iqdb_filter *f = NULL;
    if (n > 0) {
        f = built(p, iqdb_filter_in(field, vals, n));
        if (neg)
            f = built(p, iqdb_filter_not(f));
        next(p);
    }
    iqdb__free(vals);
    return f;
}

static iqdb_filter *parse_leaf(struct parser *p)
{
    if (p->tok.type != T_FIELD) {
        if (p->tok.type >= T_AND)
            fail(p, IQDB_EPARSE, p->tok.start,
                 "keyword '%.*s' cannot be a field (quote it in backquotes)",
                 tok_width(p), p->text + p->tok.start);
        else
            fail(p, IQDB_EPARSE, p->tok.start,
                 "expected field, '(' or NOT");
        return NULL;
    }
    const char *field = p->tok.s;
    next(p);
    switch (p->tok.type) {
    case T_OP:
        return parse_cmp(p, field);
    case T_IN:
        return parse_in(p, field, 0);
    case T_NOT:
        next(p);
        if (p->tok.type != T_IN) {
            fail(p, IQDB_EPARSE, p->tok.start, "expected IN after NOT");
            return NULL;
        }
        return parse_in(p, field, 1);
    default:
        fail(p, IQDB_EPARSE, p->tok.start,
             "expected operator or IN after field");
        return NULL;
    }
}

static iqdb_filter *parse_group(struct parser *p)
{
    iqdb_filter *f = parse_or(p);
    if (f != NULL && p->tok.type != T_RP) {
        fail(p, IQDB_EPARSE, p->tok.start, "expected ')'");
        iqdb_filter_free(f);
        return NULL;
    }
    if (f != NULL)
        next(p);
    return f;
}

static iqdb_filter *parse_unary(struct parser *p)
{
    enum tok t = p->tok.type;
    if (t != T_NOT && t != T_LP)
        return parse_leaf(p);
    if (p->depth >= IQDB_FILTER_MAX_DEPTH) {
        fail(p, IQDB_ERANGE, p->tok.start, "nesting deeper than %u",
             IQDB_FILTER_MAX_DEPTH);
        return NULL;
    }
    p->depth++;
    next(p);
    iqdb_filter *f;
    if (t == T_NOT)
        f = built(p, iqdb_filter_not(parse_unary(p)));
    else
        f = parse_group(p);
    p->depth--;
    return f;
}

static iqdb_filter *parse_and(struct parser *p)
{
    iqdb_filter *f = parse_unary(p);
    while (f != NULL && p->tok.type == T_AND) {
        next(p);
        f = built(p, iqdb_filter_and(f, parse_unary(p)));
    }
    return f;
}

static iqdb_filter *parse_or(struct parser *p)
{
    iqdb_filter *f = parse_and(p);
    while (f != NULL && p->tok.type == T_OR) {
        next(p);
        f = built(p, iqdb_filter_or(f, parse_and(p)));
    }
    return f;
}

/* ---- entry point ----------------------------------------------------- */

static int report(const struct parser *p, iqdb_parse_error *err)
{
    if (err != NULL) {
        err->offset = p->err_off;
        snprintf(err->message, sizeof err->message, "%s", p->msg);
    }
    return iqdb__set_error(NULL, p->code, "filter: %s", p->msg);
}

static iqdb_filter *parse_all(struct parser *p)
{
    next(p);
    iqdb_filter *f = parse_or(p);
    if (f != NULL && p->tok.type != T_END)
        fail(p, IQDB_EPARSE, p->tok.start,
             "expected AND, OR or end of text");
    if (p->code != 0) {
        iqdb_filter_free(f);
        return NULL;
    }
    return f;
}

int iqdb_filter_parse(const char *text, iqdb_filter **out,
                      iqdb_parse_error *err)
{
    struct parser p;
    memset(&p, 0, sizeof p);
    if (err != NULL) {
        err->offset = 0;
        err->message[0] = '\0';
    }
    if (out != NULL)
        *out = NULL;
    if (text == NULL || out == NULL) {
        fail(&p, IQDB_EINVAL, 0, "NULL argument");
        return report(&p, err);
    }
    p.text = text;
    p.len = strnlen(text, IQDB_FILTER_MAX_TEXT + 1);
    if (p.len > IQDB_FILTER_MAX_TEXT) {
        fail(&p, IQDB_ERANGE, IQDB_FILTER_MAX_TEXT,
             "text longer than %u bytes", IQDB_FILTER_MAX_TEXT);
        return report(&p, err);
    }
    /* Scratch use after lexing n bytes is at most 2n: a bare field of k
     * bytes takes k + 1 <= 2k (its NUL), a quoted field or a string takes
     * less than its raw length. lex_string reserves the whole rest of the
     * text, len - n <= 2 * len + 2 - 2n. */
    p.cap = 2 * p.len + 2;
    p.scratch = iqdb__malloc(p.cap);
    if (p.scratch == NULL) {
        fail_nomem(&p);
        return report(&p, err);
    }
    *out = parse_all(&p);
    iqdb__free(p.scratch);
    return *out != NULL ? 0 : report(&p, err);
}
