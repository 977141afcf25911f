/*
 * tests/unit/check_filter.c - filters: every operator on every type, the
 * closed-world rule, the combinators and their ownership rules, copies,
 * the text parser (valid texts, precedence, every syntax error with its
 * offset, limits, hostile input) and every allocation failure.
 */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iqdb_int.h"

/* Sweeps stop here at the latest: a sweep that never succeeds is a bug. */
#define SWEEP_MAX 100000

/* ---- helpers --------------------------------------------------------- */

/* A map from (key, value) pairs ending with a NULL key. */
static iqdb_meta *meta_of(const char *key, ...)
{
    iqdb_meta *m = iqdb_meta_new();
    ck_assert_ptr_nonnull(m);
    va_list ap;
    va_start(ap, key);
    for (; key != NULL; key = va_arg(ap, const char *))
        ck_assert_int_eq(iqdb_meta_set(m, key, va_arg(ap, iqdb_value)), 0);
    va_end(ap);
    return m;
}

static iqdb_meta *meta1(const char *key, iqdb_value v)
{
    return meta_of(key, v, (const char *)NULL);
}

/* Evaluate f (which must exist) against m and free f. */
static int eval_free(iqdb_filter *f, const iqdb_meta *m)
{
    ck_assert_ptr_nonnull(f);
    int r = iqdb_filter_eval(f, m);
    ck_assert(r == 0 || r == 1);
    iqdb_filter_free(f);
    return r;
}

static iqdb_filter *parse_ok(const char *text)
{
    iqdb_filter *f = NULL;
    iqdb_parse_error err;
    int rc = iqdb_filter_parse(text, &f, &err);
    ck_assert_msg(rc == 0, "parse of [%s] failed: %d %s", text, rc,
                  err.message);
    ck_assert_ptr_nonnull(f);
    return f;
}

static int peval(const char *text, const iqdb_meta *m)
{
    return eval_free(parse_ok(text), m);
}

typedef iqdb_filter *(*builder)(const char *, iqdb_value);

enum { EQ, NEQ, LT, LTE, GT, GTE, NOPS };
static const builder ops[NOPS] = {
    iqdb_filter_eq, iqdb_filter_neq, iqdb_filter_lt,
    iqdb_filter_lte, iqdb_filter_gt, iqdb_filter_gte,
};
static const char *const op_names[NOPS] = {"eq", "neq", "lt",
                                           "lte", "gt", "gte"};

/* What each operator should say when sign(record - constant) is c. */
static int expect_op(int op, int c)
{
    switch (op) {
    case EQ:
        return c == 0;
    case NEQ:
        return c != 0;
    case LT:
        return c < 0;
    case LTE:
        return c <= 0;
    case GT:
        return c > 0;
    default:
        return c >= 0;
    }
}

/* Check all six operators of x=rec against constant k, whose order is c. */
static void assert_ordered(iqdb_value rec, iqdb_value k, int c)
{
    iqdb_meta *m = meta1("x", rec);
    for (int op = 0; op < NOPS; op++)
        ck_assert_msg(eval_free(ops[op]("x", k), m) == expect_op(op, c),
                      "%s with order %d", op_names[op], c);
    iqdb_meta_free(m);
}

/* Check that every operator is false (mismatched or absent field). */
static void assert_all_false(const iqdb_meta *m, const char *field,
                             iqdb_value k)
{
    for (int op = 0; op < NOPS; op++) {
        ck_assert_msg(eval_free(ops[op](field, k), m) == 0, "%s",
                      op_names[op]);
        /* ... so that NOT of any of them holds. */
        ck_assert_msg(eval_free(iqdb_filter_not(ops[op](field, k)), m) == 1,
                      "not %s", op_names[op]);
    }
}

/* Unordered types: only eq and neq can hold. */
static void assert_unordered(iqdb_value rec, iqdb_value k, int equal)
{
    iqdb_meta *m = meta1("x", rec);
    ck_assert_int_eq(eval_free(iqdb_filter_eq("x", k), m), equal);
    ck_assert_int_eq(eval_free(iqdb_filter_neq("x", k), m), !equal);
    for (int op = LT; op < NOPS; op++) {
        ck_assert_msg(eval_free(ops[op]("x", k), m) == 0, "%s",
                      op_names[op]);
        ck_assert_int_eq(eval_free(iqdb_filter_not(ops[op]("x", k)), m), 1);
    }
    iqdb_meta_free(m);
}

/* ---- operators per type ---------------------------------------------- */

START_TEST(test_filter_ops_int)
{
    iqdb_value five = iqdb_value_int(5);
    assert_ordered(five, iqdb_value_int(4), 1);
    assert_ordered(five, iqdb_value_int(5), 0);
    assert_ordered(five, iqdb_value_int(6), -1);
    assert_ordered(iqdb_value_int(INT64_MIN), iqdb_value_int(INT64_MAX), -1);
    assert_ordered(iqdb_value_int(INT64_MAX), iqdb_value_int(INT64_MIN), 1);
    assert_ordered(iqdb_value_int(-1), iqdb_value_int(0), -1);
}
END_TEST

START_TEST(test_filter_ops_double)
{
    iqdb_value x = iqdb_value_double(2.5);
    assert_ordered(x, iqdb_value_double(2.25), 1);
    assert_ordered(x, iqdb_value_double(2.5), 0);
    assert_ordered(x, iqdb_value_double(2.75), -1);
    assert_ordered(iqdb_value_double(-0.0), iqdb_value_double(0.0), 0);
    assert_ordered(iqdb_value_double(INFINITY), iqdb_value_double(1e308), 1);
    assert_ordered(iqdb_value_double(-INFINITY), iqdb_value_double(-1e308),
                   -1);
}
END_TEST

START_TEST(test_filter_ops_string)
{
    assert_ordered(iqdb_value_str("abc"), iqdb_value_str("abd"), -1);
    assert_ordered(iqdb_value_str("abc"), iqdb_value_str("abc"), 0);
    assert_ordered(iqdb_value_str("abd"), iqdb_value_str("abc"), 1);
    /* A prefix orders first. */
    assert_ordered(iqdb_value_str("ab"), iqdb_value_str("abc"), -1);
    assert_ordered(iqdb_value_str(""), iqdb_value_str("a"), -1);
    assert_ordered(iqdb_value_str(""), iqdb_value_str(""), 0);
    /* Bytes compare unsigned; case matters. */
    assert_ordered(iqdb_value_str("\xff"), iqdb_value_str("a"), 1);
    assert_ordered(iqdb_value_str("B"), iqdb_value_str("a"), -1);
    /* Embedded NULs are part of the value. */
    assert_ordered(iqdb_value_strn("a\0b", 3), iqdb_value_strn("a\0c", 3),
                   -1);
    assert_ordered(iqdb_value_strn("a\0", 2), iqdb_value_str("a"), 1);
    assert_ordered(iqdb_value_strn("a\0b", 3), iqdb_value_strn("a\0b", 3),
                   0);
}
END_TEST

START_TEST(test_filter_ops_bool)
{
    assert_unordered(iqdb_value_bool(1), iqdb_value_bool(1), 1);
    assert_unordered(iqdb_value_bool(0), iqdb_value_bool(0), 1);
    assert_unordered(iqdb_value_bool(1), iqdb_value_bool(0), 0);
    assert_unordered(iqdb_value_bool(0), iqdb_value_bool(1), 0);
    /* Any non-zero constant means true. */
    assert_unordered(iqdb_value_bool(1), iqdb_value_bool(-7), 1);
}
END_TEST

START_TEST(test_filter_ops_null)
{
    assert_unordered(iqdb_value_null(), iqdb_value_null(), 1);
    /* A null constant against a non-null field is a type mismatch. */
    iqdb_meta *m = meta1("x", iqdb_value_str("a"));
    assert_all_false(m, "x", iqdb_value_null());
    iqdb_meta_free(m);
}
END_TEST

/* INT and DOUBLE are one numeric type, compared exactly. */
START_TEST(test_filter_ops_mixed_numbers)
{
    assert_ordered(iqdb_value_int(3), iqdb_value_double(3.0), 0);
    assert_ordered(iqdb_value_double(3.0), iqdb_value_int(3), 0);
    assert_ordered(iqdb_value_int(3), iqdb_value_double(3.5), -1);
    assert_ordered(iqdb_value_int(4), iqdb_value_double(3.5), 1);
    assert_ordered(iqdb_value_double(2.5), iqdb_value_int(3), -1);
    assert_ordered(iqdb_value_double(-2.5), iqdb_value_int(-3), 1);
    assert_ordered(iqdb_value_int(-3), iqdb_value_double(-2.5), -1);
    assert_ordered(iqdb_value_int(0), iqdb_value_double(-0.0), 0);
    /* 2^53 + 1 is not a double: converting it would round to 2^53. */
    const int64_t p53 = (int64_t)1 << 53;
    assert_ordered(iqdb_value_int(p53 + 1), iqdb_value_double(0x1p53), 1);
    assert_ordered(iqdb_value_double(0x1p53), iqdb_value_int(p53 + 1), -1);
    assert_ordered(iqdb_value_int(p53), iqdb_value_double(0x1p53), 0);
    /* The ends of int64, where (double)INT64_MAX == 2^63. */
    assert_ordered(iqdb_value_int(INT64_MAX), iqdb_value_double(0x1p63), -1);
    assert_ordered(iqdb_value_double(0x1p63), iqdb_value_int(INT64_MAX), 1);
    assert_ordered(iqdb_value_int(INT64_MIN), iqdb_value_double(-0x1p63), 0);
    assert_ordered(iqdb_value_int(INT64_MIN), iqdb_value_double(-0x1p64),
                   1);
    assert_ordered(iqdb_value_int(INT64_MAX), iqdb_value_double(INFINITY),
                   -1);
    assert_ordered(iqdb_value_int(INT64_MIN), iqdb_value_double(-INFINITY),
                   1);
    assert_ordered(iqdb_value_double(1e300), iqdb_value_int(INT64_MAX), 1);
}
END_TEST

/* ---- closed world ---------------------------------------------------- */

START_TEST(test_filter_closed_world)
{
    const iqdb_value consts[] = {
        iqdb_value_int(1), iqdb_value_double(1.5), iqdb_value_str("a"),
        iqdb_value_bool(1), iqdb_value_null(),
    };
    const size_t nc = sizeof consts / sizeof consts[0];
    iqdb_meta *other = meta1("y", iqdb_value_int(1));
    iqdb_meta *empty = meta_of(NULL);
    for (size_t i = 0; i < nc; i++) {
        /* Absent field, empty map, no map at all. */
        assert_all_false(other, "x", consts[i]);
        assert_all_false(empty, "x", consts[i]);
        assert_all_false(NULL, "x", consts[i]);
        ck_assert_int_eq(eval_free(iqdb_filter_in("x", &consts[i], 1), NULL),
                         0);
        ck_assert_int_eq(
            eval_free(iqdb_filter_not(iqdb_filter_in("x", &consts[i], 1)),
                      other),
            1);
    }
    /* Every pair of different type classes is a mismatch. INT and DOUBLE
     * are one class. */
    const iqdb_value recs[] = {
        iqdb_value_int(1), iqdb_value_double(1.5), iqdb_value_str("a"),
        iqdb_value_bool(1), iqdb_value_null(),
    };
    const int cls[] = {0, 0, 1, 2, 3};
    for (size_t r = 0; r < nc; r++) {
        iqdb_meta *m = meta1("x", recs[r]);
        for (size_t k = 0; k < nc; k++) {
            if (cls[r] == cls[k])
                continue;
            assert_all_false(m, "x", consts[k]);
            ck_assert_int_eq(eval_free(iqdb_filter_in("x", &consts[k], 1), m),
                             0);
        }
        iqdb_meta_free(m);
    }
    iqdb_meta_free(other);
    iqdb_meta_free(empty);
}
END_TEST

START_TEST(test_filter_field_match)
{
    iqdb_meta *m = meta_of("year", iqdb_value_int(1), "y", iqdb_value_int(2),
                           "a.b", iqdb_value_int(3), (const char *)NULL);
    ck_assert_int_eq(eval_free(iqdb_filter_eq("y", iqdb_value_int(2)), m), 1);
    ck_assert_int_eq(eval_free(iqdb_filter_eq("ye", iqdb_value_int(1)), m),
                     0);
    ck_assert_int_eq(eval_free(iqdb_filter_eq("yearly", iqdb_value_int(1)),
                               m),
                     0);
    ck_assert_int_eq(eval_free(iqdb_filter_eq("a.b", iqdb_value_int(3)), m),
                     1);
    ck_assert_int_eq(eval_free(iqdb_filter_eq("Year", iqdb_value_int(1)), m),
                     0);
    iqdb_meta_free(m);
}
END_TEST

/* ---- IN -------------------------------------------------------------- */

START_TEST(test_filter_in_mixed)
{
    const iqdb_value vals[] = {
        iqdb_value_str("b"),      iqdb_value_int(7),
        iqdb_value_double(2.5),   iqdb_value_double(3.0),
        iqdb_value_bool(0),       iqdb_value_str(""),
        iqdb_value_strn("a\0", 2), iqdb_value_double(0x1p70),
        iqdb_value_str("b"),
    };
    iqdb_filter *f = iqdb_filter_in("x", vals, sizeof vals / sizeof vals[0]);
    ck_assert_ptr_nonnull(f);
    struct {
        iqdb_value rec;
        int expect;
    } cases[] = {
        {iqdb_value_str("b"), 1},        {iqdb_value_str("a"), 0},
        {iqdb_value_str(""), 1},         {iqdb_value_strn("a\0", 2), 1},
        {iqdb_value_str("bb"), 0},       {iqdb_value_int(7), 1},
        {iqdb_value_double(7.0), 1},     {iqdb_value_int(3), 1},
        {iqdb_value_double(3.0), 1},     {iqdb_value_double(2.5), 1},
        {iqdb_value_int(2), 0},          {iqdb_value_double(2.0), 0},
        {iqdb_value_double(7.5), 0},     {iqdb_value_double(0x1p70), 1},
        {iqdb_value_double(0x1p71), 0},  {iqdb_value_int(INT64_MAX), 0},
        {iqdb_value_bool(0), 1},         {iqdb_value_bool(1), 0},
        {iqdb_value_null(), 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iqdb_meta *m = meta1("x", cases[i].rec);
        ck_assert_msg(iqdb_filter_eval(f, m) == cases[i].expect, "case %zu",
                      i);
        iqdb_meta_free(m);
    }
    iqdb_filter_free(f);

    const iqdb_value bn[] = {iqdb_value_bool(5), iqdb_value_null()};
    f = iqdb_filter_in("x", bn, 2);
    iqdb_meta *m = meta1("x", iqdb_value_bool(1));
    ck_assert_int_eq(iqdb_filter_eval(f, m), 1);
    iqdb_meta_free(m);
    m = meta1("x", iqdb_value_null());
    ck_assert_int_eq(iqdb_filter_eval(f, m), 1);
    iqdb_meta_free(m);
    m = meta1("x", iqdb_value_bool(0));
    ck_assert_int_eq(iqdb_filter_eval(f, m), 0);
    iqdb_meta_free(m);
    iqdb_filter_free(f);
}
END_TEST

static uint64_t rng_state;

static uint64_t rng(void)
{
    /* xorshift64*: fixed seed, same sequence everywhere. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

START_TEST(test_filter_in_many)
{
    enum { N = 2000 };
    rng_state = 0x9e3779b97f4a7c15ULL;
    static iqdb_value vals[N];
    static char strs[N][12];
    /* Even numbers as ints and strings "s<even>", shuffled. */
    for (int i = 0; i < N; i++) {
        int v = 2 * (int)(rng() % 100000);
        if (i % 2 == 0) {
            vals[i] = iqdb_value_int(v);
        } else {
            snprintf(strs[i], sizeof strs[i], "s%d", v);
            vals[i] = iqdb_value_str(strs[i]);
        }
    }
    iqdb_filter *f = iqdb_filter_in("x", vals, N);
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < N; i++) {
        iqdb_meta *m = meta1("x", vals[i]);
        ck_assert_int_eq(iqdb_filter_eval(f, m), 1);
        iqdb_meta_free(m);
        /* Odd neighbours are never members. */
        char s[16];
        iqdb_value miss;
        if (i % 2 == 0) {
            miss = iqdb_value_int(vals[i].v.i + 1);
        } else {
            snprintf(s, sizeof s, "%.11s1", strs[i]);
            miss = iqdb_value_str(s);
        }
        m = meta1("x", miss);
        ck_assert_int_eq(iqdb_filter_eval(f, m), 0);
        iqdb_meta_free(m);
    }
    /* The filter keeps copies of the strings. */
    char saved[sizeof strs[1]];
    memcpy(saved, strs[1], sizeof saved);
    memset(strs[1], 'z', sizeof strs[1] - 1);
    iqdb_meta *m = meta1("x", iqdb_value_str(saved));
    ck_assert_int_eq(iqdb_filter_eval(f, m), 1);
    iqdb_meta_free(m);
    m = meta1("x", iqdb_value_str(strs[1]));
    ck_assert_int_eq(iqdb_filter_eval(f, m), 0);
    iqdb_meta_free(m);
    iqdb_filter_free(f);
}
END_TEST

/* ---- combinators ----------------------------------------------------- */

static iqdb_filter *is1(const char *field)
{
    return iqdb_filter_eq(field, iqdb_value_int(1));
}

START_TEST(test_filter_and_or_not)
{
    for (int bits = 0; bits < 8; bits++) {
        int a = bits & 1, b = (bits >> 1) & 1, c = (bits >> 2) & 1;
        iqdb_meta *m = meta_of("a", iqdb_value_int(a), "b", iqdb_value_int(b),
                               "c", iqdb_value_int(c), (const char *)NULL);
        ck_assert_int_eq(eval_free(iqdb_filter_and(is1("a"), is1("b")), m),
                         a && b);
        ck_assert_int_eq(eval_free(iqdb_filter_or(is1("a"), is1("b")), m),
                         a || b);
        ck_assert_int_eq(eval_free(iqdb_filter_not(is1("a")), m), !a);
        ck_assert_int_eq(
            eval_free(iqdb_filter_not(iqdb_filter_not(is1("a"))), m), a);
        ck_assert_int_eq(
            eval_free(iqdb_filter_or(iqdb_filter_and(is1("a"), is1("b")),
                                     is1("c")),
                      m),
            (a && b) || c);
        ck_assert_int_eq(
            eval_free(iqdb_filter_and(is1("a"),
                                      iqdb_filter_or(is1("b"), is1("c"))),
                      m),
            a && (b || c));
        ck_assert_int_eq(
            eval_free(iqdb_filter_not(iqdb_filter_and(
                          is1("a"), iqdb_filter_not(is1("b")))),
                      m),
            !(a && !b));
        /* and/or of and/or nodes on both sides (they are spliced). */
        ck_assert_int_eq(
            eval_free(iqdb_filter_and(iqdb_filter_and(is1("a"), is1("b")),
                                      iqdb_filter_and(is1("c"), is1("a"))),
                      m),
            a && b && c);
        ck_assert_int_eq(
            eval_free(iqdb_filter_or(is1("a"),
                                     iqdb_filter_or(is1("b"), is1("c"))),
                      m),
            a || b || c);
        ck_assert_int_eq(
            eval_free(iqdb_filter_and(iqdb_filter_or(is1("a"), is1("b")),
                                      iqdb_filter_or(is1("c"), is1("c"))),
                      m),
            (a || b) && c);
        iqdb_meta_free(m);
    }
}
END_TEST

START_TEST(test_filter_long_chain)
{
    enum { N = 5000 };
    iqdb_meta *m = meta_of("a", iqdb_value_int(1), "b", iqdb_value_int(2),
                           (const char *)NULL);
    iqdb_filter *all = is1("a"), *any = is1("b");
    for (int i = 1; i < N; i++) {
        all = iqdb_filter_and(all, is1("a"));
        any = iqdb_filter_or(is1("b"), any);
    }
    ck_assert_int_eq(iqdb_filter_eval(all, m), 1);
    ck_assert_int_eq(iqdb_filter_eval(any, m), 0);
    all = iqdb_filter_and(all, is1("b"));
    any = iqdb_filter_or(any, is1("a"));
    ck_assert_int_eq(iqdb_filter_eval(all, m), 0);
    ck_assert_int_eq(iqdb_filter_eval(any, m), 1);
    iqdb_filter_free(all);
    iqdb_filter_free(any);
    iqdb_meta_free(m);
}
END_TEST

/* ---- invalid arguments and NULL propagation -------------------------- */

START_TEST(test_filter_bad_args)
{
    iqdb_value nan = iqdb_value_double(NAN);
    for (int op = 0; op < NOPS; op++) {
        ck_assert_ptr_null(ops[op](NULL, iqdb_value_int(1)));
        ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "field"));
        ck_assert_ptr_null(ops[op]("", iqdb_value_int(1)));
        ck_assert_ptr_null(ops[op]("x", nan));
        ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "NaN"));
    }
    iqdb_value bad = iqdb_value_int(0);
    bad.type = (iqdb_type)42;
    ck_assert_ptr_null(iqdb_filter_eq("x", bad));
    bad.type = IQDB_TYPE_STRING;
    bad.v.s = NULL;
    bad.len = 2;
    ck_assert_ptr_null(iqdb_filter_eq("x", bad));

    const iqdb_value one = iqdb_value_int(1);
    const iqdb_value with_nan[] = {iqdb_value_int(1), nan};
    ck_assert_ptr_null(iqdb_filter_in("x", &one, 0));
    ck_assert_ptr_null(iqdb_filter_in("x", NULL, 1));
    ck_assert_ptr_null(iqdb_filter_in(NULL, &one, 1));
    ck_assert_ptr_null(iqdb_filter_in("", &one, 1));
    ck_assert_ptr_null(iqdb_filter_in("x", with_nan, 2));

    /* An empty string constant with a NULL pointer is fine. */
    bad.len = 0;
    iqdb_meta *m = meta1("x", iqdb_value_str(""));
    ck_assert_int_eq(eval_free(iqdb_filter_eq("x", bad), m), 1);

    /* No filter lets everything through, as in iqdb_search. */
    ck_assert_int_eq(iqdb_filter_eval(NULL, NULL), 1);
    ck_assert_int_eq(iqdb_filter_eval(NULL, m), 1);
    iqdb_filter_free(NULL);
    iqdb_meta_free(m);
}
END_TEST

/* Combinators free what they are given when they fail; ASan's leak check
 * catches a combinator that drops its other argument. */
START_TEST(test_filter_null_propagation)
{
    ck_assert_ptr_null(iqdb_filter_and(NULL, is1("a")));
    ck_assert_ptr_null(iqdb_filter_and(is1("a"), NULL));
    ck_assert_ptr_null(iqdb_filter_or(NULL, is1("a")));
    ck_assert_ptr_null(iqdb_filter_or(is1("a"), NULL));
    ck_assert_ptr_null(iqdb_filter_and(NULL, NULL));
    ck_assert_ptr_null(iqdb_filter_not(NULL));
    /* One bad leaf deep inside an inline expression. */
    iqdb_filter *f = iqdb_filter_or(
        iqdb_filter_and(is1("a"), iqdb_filter_not(iqdb_filter_eq(
                                      "b", iqdb_value_double(NAN)))),
        iqdb_filter_in("c", NULL, 0));
    ck_assert_ptr_null(f);
    f = iqdb_filter_and(is1("a"),
                        iqdb_filter_not(iqdb_filter_eq("", iqdb_value_int(1))));
    ck_assert_ptr_null(f);
    /* The first failure's message survives the combinators. */
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "empty field"));
}
END_TEST

START_TEST(test_filter_copies_constant)
{
    char buf[] = "doc";
    iqdb_filter *f = iqdb_filter_eq("kind", iqdb_value_str(buf));
    char field[] = "kind";
    iqdb_filter *g = iqdb_filter_eq(field, iqdb_value_int(1));
    buf[0] = 'X';
    field[0] = 'X';
    iqdb_meta *m = meta_of("kind", iqdb_value_str("doc"), (const char *)NULL);
    ck_assert_int_eq(eval_free(f, m), 1);
    iqdb_meta_free(m);
    m = meta_of("kind", iqdb_value_int(1), (const char *)NULL);
    ck_assert_int_eq(eval_free(g, m), 1);
    iqdb_meta_free(m);
}
END_TEST

/* ---- clone ----------------------------------------------------------- */

static iqdb_filter *sample_tree(void)
{
    const iqdb_value tags[] = {iqdb_value_str("a"), iqdb_value_str("b"),
                               iqdb_value_int(4), iqdb_value_double(0.5)};
    return iqdb_filter_and(
        iqdb_filter_or(iqdb_filter_eq("kind", iqdb_value_str("doc")),
                       iqdb_filter_gte("year", iqdb_value_double(2026.5))),
        iqdb_filter_and(
            iqdb_filter_not(iqdb_filter_in("tag", tags, 4)),
            iqdb_filter_neq("flag", iqdb_value_bool(1))));
}

static iqdb_meta *sample_meta(int i)
{
    static const char *const kinds[] = {"doc", "img", "do"};
    static const char *const tags[] = {"a", "c", "b", ""};
    iqdb_meta *m = meta_of("kind", iqdb_value_str(kinds[i % 3]), "year",
                           iqdb_value_int(2025 + i % 4), (const char *)NULL);
    iqdb_value tag = i % 7 == 0 ? iqdb_value_int(4)
                                : iqdb_value_str(tags[i % 4]);
    if (i % 5 != 0)
        ck_assert_int_eq(iqdb_meta_set(m, "tag", tag), 0);
    if (i % 2 == 0)
        ck_assert_int_eq(iqdb_meta_set(m, "flag", iqdb_value_bool(i % 3)), 0);
    return m;
}

START_TEST(test_filter_clone)
{
    enum { N = 60 };
    iqdb_filter *f = sample_tree();
    ck_assert_ptr_nonnull(f);
    int expect[N], trues = 0;
    for (int i = 0; i < N; i++) {
        iqdb_meta *m = sample_meta(i);
        expect[i] = iqdb_filter_eval(f, m);
        trues += expect[i];
        iqdb_meta_free(m);
    }
    /* The sample must exercise both outcomes to mean anything. */
    ck_assert_int_gt(trues, 0);
    ck_assert_int_lt(trues, N);
    iqdb_filter *c = iqdb_filter_clone(f);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_ne(c, f);
    iqdb_filter_free(f);
    for (int i = 0; i < N; i++) {
        iqdb_meta *m = sample_meta(i);
        ck_assert_int_eq(iqdb_filter_eval(c, m), expect[i]);
        iqdb_meta_free(m);
    }
    iqdb_filter *cc = iqdb_filter_clone(c);
    iqdb_filter_free(c);
    iqdb_meta *m = sample_meta(1);
    ck_assert_int_eq(eval_free(cc, m), expect[1]);
    iqdb_meta_free(m);
    ck_assert_ptr_null(iqdb_filter_clone(NULL));
}
END_TEST

/* Evaluation is on the search path: it must not allocate. */
START_TEST(test_filter_eval_no_alloc)
{
    iqdb_filter *f = sample_tree();
    iqdb_meta *m = sample_meta(3);
    int r = iqdb_filter_eval(f, m);
    iqdb__alloc_fail_after(-1);
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(iqdb_filter_eval(f, m), r);
    ck_assert_int_eq(iqdb__alloc_fail_after(-1), 0);
    iqdb_meta_free(m);
    iqdb_filter_free(f);
}
END_TEST

/* ---- parser: valid texts --------------------------------------------- */

START_TEST(test_filter_parse_example)
{
    const char *text =
        "kind = \"doc\" AND year >= 2026 AND NOT tag IN (\"a\", \"b\")";
    struct {
        const char *kind;
        iqdb_value year;
        const char *tag; /* NULL: absent */
        int expect;
    } cases[] = {
        {"doc", iqdb_value_int(2026), "c", 1},
        {"doc", iqdb_value_int(2030), "c", 1},
        {"doc", iqdb_value_double(2026.0), "c", 1},
        {"doc", iqdb_value_double(2025.9), "c", 0},
        {"doc", iqdb_value_int(2025), "c", 0},
        {"doc", iqdb_value_int(2026), "a", 0},
        {"doc", iqdb_value_int(2026), "b", 0},
        {"doc", iqdb_value_int(2026), NULL, 1},
        {"Doc", iqdb_value_int(2026), "c", 0},
        {"doc", iqdb_value_str("2026"), "c", 0},
    };
    iqdb_filter *f = parse_ok(text);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        iqdb_meta *m = meta_of("kind", iqdb_value_str(cases[i].kind), "year",
                               cases[i].year, (const char *)NULL);
        if (cases[i].tag)
            ck_assert_int_eq(
                iqdb_meta_set(m, "tag", iqdb_value_str(cases[i].tag)), 0);
        ck_assert_msg(iqdb_filter_eval(f, m) == cases[i].expect, "case %zu",
                      i);
        iqdb_meta_free(m);
    }
    ck_assert_int_eq(iqdb_filter_eval(f, NULL), 0);
    iqdb_filter_free(f);
}
END_TEST

START_TEST(test_filter_parse_values)
{
    iqdb_meta *m = meta_of(
        "i", iqdb_value_int(42), "neg", iqdb_value_int(-7), "d",
        iqdb_value_double(0.1), "big", iqdb_value_int((int64_t)1 << 53),
        "s", iqdb_value_str("it's \"q\"\t\\\n"), "e", iqdb_value_str(""),
        "t", iqdb_value_bool(1), "f", iqdb_value_bool(0), "n",
        iqdb_value_null(), "weird key!", iqdb_value_int(1), "a.b_c",
        iqdb_value_int(2), "and", iqdb_value_int(3), "min",
        iqdb_value_int(INT64_MIN), "max", iqdb_value_int(INT64_MAX),
        (const char *)NULL);
    struct {
        const char *text;
        int expect;
    } cases[] = {
        {"i = 42", 1},
        {"i == 42", 1},
        {"i != 42", 0},
        {"i <> 41", 1},
        {"i < 43", 1},
        {"i <= 42", 1},
        {"i > 42", 0},
        {"i >= 42.0", 1},
        {"i = 4.2e1", 1},
        {"i = 420E-1", 1},
        {"i = 0.042e+3", 1},
        {"i = 0042", 1},
        {"neg = -7", 1},
        {"neg > -7.5", 1},
        {"neg < -6e0", 1},
        {"d = 0.1", 1},
        {"d = 1e-1", 1},
        {"d > 0.09999", 1},
        /* An integer literal stays exact: 2^53 + 1 is not 2^53. */
        {"big = 9007199254740993", 0},
        {"big = 9007199254740992", 1},
        {"min = -9223372036854775808", 1},
        {"max = 9223372036854775807", 1},
        {"max < 9223372036854775808.0", 1},
        {"s = 'it\\'s \"q\"\\t\\\\\\n'", 1},
        {"s = \"it's \\\"q\\\"\\t\\\\\\n\"", 1},
        {"s > 'it'", 1},
        {"e = ''", 1},
        {"e = \"\"", 1},
        {"t = TRUE", 1},
        {"t = true", 1},
        {"t != False", 1},
        {"f = false", 1},
        {"f = tRuE", 0},
        {"n = NULL", 1},
        {"n = null", 1},
        {"n != null", 0},
        {"i = null", 0},
        {"`weird key!` = 1", 1},
        {"`a.b_c` = 2", 1},
        {"a.b_c = 2", 1},
        {"`and` = 3", 1},
        {"i IN (1, 42)", 1},
        {"i in (1,2,3)", 0},
        {"i IN (42.0)", 1},
        {"t IN (null, true)", 1},
        {"i NOT IN (1, 2)", 1},
        {"i not in (42)", 0},
        {"missing NOT IN (1)", 1},
        {"missing != 1", 0},
        {"NOT missing = 1", 1},
        {" \t\ni\r\n=\f42\v ", 1},
        {"(i=42)AND(t=true)", 1},
        {"i=42 AND(t=true)", 1},
        {"s='x'OR i=42", 1},
        {"i IN(42)", 1},
        {"i NOT IN(42)OR t=true", 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        iqdb_filter *f = NULL;
        iqdb_parse_error err;
        int rc = iqdb_filter_parse(cases[k].text, &f, &err);
        ck_assert_msg(rc == 0, "[%s]: %s", cases[k].text, err.message);
        ck_assert_msg(iqdb_filter_eval(f, m) == cases[k].expect, "[%s]",
                      cases[k].text);
        iqdb_filter_free(f);
    }
    iqdb_meta_free(m);
}
END_TEST

START_TEST(test_filter_parse_keywords)
{
    iqdb_meta *m = meta_of("a", iqdb_value_int(1), "b", iqdb_value_int(0),
                           "c", iqdb_value_int(2), (const char *)NULL);
    ck_assert_int_eq(peval("a = 1 aNd b = 0 oR c = 9", m), 1);
    ck_assert_int_eq(peval("nOt a = 1 AnD c iN (2)", m), 0);
    ck_assert_int_eq(peval("a NoT In (5) and NOT NOT b = 0", m), 1);
    /* Names that merely start with a keyword are fields. */
    iqdb_meta *k = meta_of("order", iqdb_value_int(1), "notes",
                           iqdb_value_int(2), "inx", iqdb_value_int(3),
                           "nullable", iqdb_value_bool(1), "true_",
                           iqdb_value_int(4), (const char *)NULL);
    ck_assert_int_eq(peval("order = 1 AND notes = 2 AND inx = 3", k), 1);
    ck_assert_int_eq(peval("nullable = true AND true_ = 4", k), 1);
    iqdb_meta_free(k);
    iqdb_meta_free(m);
}
END_TEST

START_TEST(test_filter_parse_precedence)
{
    /* a=1, b=0, c=0 tells "a OR (b AND c)" from "(a OR b) AND c". */
    iqdb_meta *m100 = meta_of("a", iqdb_value_int(1), "b", iqdb_value_int(0),
                              "c", iqdb_value_int(0), (const char *)NULL);
    iqdb_meta *m000 = meta_of("a", iqdb_value_int(0), "b", iqdb_value_int(0),
                              "c", iqdb_value_int(0), (const char *)NULL);
    iqdb_meta *m110 = meta_of("a", iqdb_value_int(1), "b", iqdb_value_int(1),
                              "c", iqdb_value_int(0), (const char *)NULL);
    ck_assert_int_eq(peval("a = 1 OR b = 1 AND c = 1", m100), 1);
    ck_assert_int_eq(peval("b = 1 AND c = 1 OR a = 1", m100), 1);
    ck_assert_int_eq(peval("(a = 1 OR b = 1) AND c = 1", m100), 0);
    ck_assert_int_eq(peval("b = 1 AND (c = 1 OR a = 1)", m100), 0);
    /* NOT binds tighter than AND: "(NOT a) AND b", not "NOT (a AND b)". */
    ck_assert_int_eq(peval("NOT a = 1 AND b = 1", m000), 0);
    ck_assert_int_eq(peval("NOT (a = 1 AND b = 1)", m000), 1);
    /* ... and tighter than OR. */
    ck_assert_int_eq(peval("NOT a = 1 OR b = 1", m110), 1);
    ck_assert_int_eq(peval("NOT (a = 1 OR b = 1)", m110), 0);
    ck_assert_int_eq(peval("NOT NOT a = 1", m100), 1);
    ck_assert_int_eq(peval("((((a = 1))))", m100), 1);
    ck_assert_int_eq(peval("NOT (NOT (a = 1) OR NOT (b = 1))", m110), 1);
    /* Left to right within one level is the same whichever way. */
    ck_assert_int_eq(peval("a = 1 AND b = 1 AND c = 0", m110), 1);
    ck_assert_int_eq(peval("a = 0 OR b = 0 OR c = 1", m110), 0);
    iqdb_meta_free(m100);
    iqdb_meta_free(m000);
    iqdb_meta_free(m110);
}
END_TEST

/* ---- parser: errors -------------------------------------------------- */

struct bad_text {
    const char *text;
    int code;
    size_t offset;
    const char *message; /* the whole message, before " at offset N" */
};

static void assert_bad(const struct bad_text *b)
{
    iqdb_filter *f = (iqdb_filter *)&f; /* must be reset to NULL */
    iqdb_parse_error err;
    int rc = iqdb_filter_parse(b->text, &f, &err);
    ck_assert_msg(rc == b->code, "[%s]: rc %d, want %d (%s)", b->text, rc,
                  b->code, err.message);
    ck_assert_ptr_null(f);
    ck_assert_msg(err.offset == b->offset, "[%s]: offset %zu, want %zu (%s)",
                  b->text, err.offset, b->offset, err.message);
    char want[256];
    snprintf(want, sizeof want, "%s at offset %zu", b->message, b->offset);
    ck_assert_str_eq(err.message, want);
    char full[300];
    snprintf(full, sizeof full, "filter: %s", want);
    ck_assert_str_eq(iqdb_errmsg(NULL), full);
}

START_TEST(test_filter_parse_errors)
{
    static const struct bad_text cases[] = {
        {"", IQDB_EPARSE, 0, "expected field, '(' or NOT"},
        {"   ", IQDB_EPARSE, 3, "expected field, '(' or NOT"},
        {"a", IQDB_EPARSE, 1, "expected operator or IN after field"},
        {"a 1", IQDB_EPARSE, 2, "expected operator or IN after field"},
        {"a >=", IQDB_EPARSE, 4, "expected value after '>='"},
        {"year >= AND x = 1", IQDB_EPARSE, 8, "expected value after '>='"},
        {"a = b", IQDB_EPARSE, 4, "expected value after '='"},
        {"a == = 1", IQDB_EPARSE, 5, "expected value after '=='"},
        {"a <> )", IQDB_EPARSE, 5, "expected value after '<>'"},
        {"a = 1 b = 2", IQDB_EPARSE, 6, "expected AND, OR or end of text"},
        {"a = 1)", IQDB_EPARSE, 5, "expected AND, OR or end of text"},
        {"(a = 1", IQDB_EPARSE, 6, "expected ')'"},
        {"(a = 1 b", IQDB_EPARSE, 7, "expected ')'"},
        {"()", IQDB_EPARSE, 1, "expected field, '(' or NOT"},
        {"NOT", IQDB_EPARSE, 3, "expected field, '(' or NOT"},
        {"a = 1 AND", IQDB_EPARSE, 9, "expected field, '(' or NOT"},
        {"a = 1 OR (", IQDB_EPARSE, 10, "expected field, '(' or NOT"},
        {"a IN 1", IQDB_EPARSE, 5, "expected '(' after IN"},
        {"a IN", IQDB_EPARSE, 4, "expected '(' after IN"},
        {"a IN ()", IQDB_EPARSE, 6, "expected value after '('"},
        {"a IN (1,)", IQDB_EPARSE, 8, "expected value after ','"},
        {"a IN (1 2)", IQDB_EPARSE, 8, "expected ',' or ')' in IN list"},
        {"a IN (1", IQDB_EPARSE, 7, "expected ',' or ')' in IN list"},
        {"a IN (1, b)", IQDB_EPARSE, 9, "expected value after ','"},
        /* Adjacent strings are not a concatenation. */
        {"s IN ('x', 'it''s')", IQDB_EPARSE, 15,
         "expected ',' or ')' in IN list"},
        {"a NOT = 1", IQDB_EPARSE, 6, "expected IN after NOT"},
        {"a NOT", IQDB_EPARSE, 5, "expected IN after NOT"},
        {"a = 'abc", IQDB_EPARSE, 4, "unterminated string"},
        {"a = \"abc'", IQDB_EPARSE, 4, "unterminated string"},
        {"a = \"ab\\q\"", IQDB_EPARSE, 7, "unknown escape"},
        {"a = 'ab\\", IQDB_EPARSE, 4, "unterminated string"},
        {"`abc = 1", IQDB_EPARSE, 0, "unterminated `field`"},
        {"`` = 1", IQDB_EPARSE, 0, "empty field name"},
        {"a = 99999999999999999999", IQDB_EPARSE, 4, "integer out of range"},
        {"a = 9223372036854775808", IQDB_EPARSE, 4, "integer out of range"},
        {"a = -9223372036854775809", IQDB_EPARSE, 4, "integer out of range"},
        {"a = 1 OR b = 1e999", IQDB_EPARSE, 13, "number out of range"},
        {"a = -1e999", IQDB_EPARSE, 4, "number out of range"},
        {"a = 1.", IQDB_EPARSE, 6, "expected digit after '.'"},
        {"a = 1.x", IQDB_EPARSE, 6, "expected digit after '.'"},
        {"a = 1e", IQDB_EPARSE, 6, "expected digit in exponent"},
        {"a = 1e+", IQDB_EPARSE, 7, "expected digit in exponent"},
        {"a = -", IQDB_EPARSE, 5, "expected digit after '-'"},
        {"a = - 1", IQDB_EPARSE, 5, "expected digit after '-'"},
        {"a = 12abc", IQDB_EPARSE, 6, "unexpected character 'a' in number"},
        {"a = 1.2.3", IQDB_EPARSE, 7, "unexpected character '.' in number"},
        {"a = 1AND b = 1", IQDB_EPARSE, 5,
         "unexpected character 'A' in number"},
        {"a ! 1", IQDB_EPARSE, 2, "unexpected character '!'"},
        {"a = 1 AND $", IQDB_EPARSE, 10, "unexpected character '$'"},
        {"a = \x01", IQDB_EPARSE, 4, "unexpected byte 0x01"},
        {"a\xff = 1", IQDB_EPARSE, 1, "unexpected byte 0xff"},
        {"true = 1", IQDB_EPARSE, 0,
         "keyword 'true' cannot be a field (quote it in backquotes)"},
        {"a = 1 AND or = 2", IQDB_EPARSE, 10,
         "keyword 'or' cannot be a field (quote it in backquotes)"},
        {"a = 1 OR OR b = 1", IQDB_EPARSE, 9,
         "keyword 'OR' cannot be a field (quote it in backquotes)"},
        {"IN (1)", IQDB_EPARSE, 0,
         "keyword 'IN' cannot be a field (quote it in backquotes)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_bad(&cases[i]);
}
END_TEST

START_TEST(test_filter_parse_bad_args)
{
    iqdb_filter *f = (iqdb_filter *)&f;
    iqdb_parse_error err;
    ck_assert_int_eq(iqdb_filter_parse(NULL, &f, &err), IQDB_EINVAL);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(iqdb_filter_parse("a = 1", NULL, &err), IQDB_EINVAL);
    ck_assert_int_eq(iqdb_filter_parse("a = 1", NULL, NULL), IQDB_EINVAL);
    /* err is optional. */
    ck_assert_int_eq(iqdb_filter_parse("a = ", &f, NULL), IQDB_EPARSE);
    ck_assert_ptr_null(f);
    ck_assert_str_eq(iqdb_errmsg(NULL),
                     "filter: expected value after '=' at offset 4");
    ck_assert_int_eq(iqdb_filter_parse("a = 1", &f, NULL), 0);
    ck_assert_ptr_nonnull(f);
    iqdb_filter_free(f);
}
END_TEST

/* ---- parser: limits -------------------------------------------------- */

/* "(" x n, "a=1", ")" x n, in a heap buffer of exactly that size. */
static char *nested(size_t n, const char *open, const char *close)
{
    size_t lo = strlen(open), lc = strlen(close);
    char *s = malloc(n * (lo + lc) + 4);
    ck_assert_ptr_nonnull(s);
    char *p = s;
    for (size_t i = 0; i < n; i++, p += lo)
        memcpy(p, open, lo);
    memcpy(p, "a=1", 3);
    p += 3;
    for (size_t i = 0; i < n; i++, p += lc)
        memcpy(p, close, lc);
    *p = '\0';
    return s;
}

static void assert_depth(const char *open, const char *close, size_t per)
{
    iqdb_meta *m = meta1("a", iqdb_value_int(1));
    size_t max = IQDB_FILTER_MAX_DEPTH / per;
    char *ok = nested(max, open, close);
    iqdb_filter *f = parse_ok(ok);
    /* Even count of NOTs: the result is that of the leaf. */
    ck_assert_int_eq(iqdb_filter_eval(f, m), 1);
    iqdb_filter_free(f);
    free(ok);
    char *deep = nested(max + 1, open, close);
    iqdb_parse_error err;
    f = (iqdb_filter *)&f;
    ck_assert_int_eq(iqdb_filter_parse(deep, &f, &err), IQDB_ERANGE);
    ck_assert_ptr_null(f);
    ck_assert_uint_eq(err.offset, max * strlen(open));
    ck_assert_ptr_nonnull(strstr(err.message, "nesting deeper than 64"));
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "filter: nesting"));
    free(deep);
    iqdb_meta_free(m);
}

START_TEST(test_filter_parse_depth)
{
    assert_depth("(", ")", 1);
    assert_depth("NOT ", "", 1);
    assert_depth("NOT (", ")", 2);
    assert_depth("(NOT ", ")", 2);
    assert_depth("(a=1 OR ", ")", 1);
}
END_TEST

START_TEST(test_filter_parse_length)
{
    /* "a=1 OR a=1 OR ..." padded with spaces to exactly the limit. */
    size_t max = IQDB_FILTER_MAX_TEXT;
    char *s = malloc(max + 2);
    ck_assert_ptr_nonnull(s);
    memset(s, ' ', max + 1);
    size_t n = 0;
    memcpy(s, "b=1", 3);
    for (n = 3; n + 10 <= max; n += 9)
        memcpy(s + n, " OR a=1  ", 9);
    s[max] = '\0';
    iqdb_meta *m = meta1("a", iqdb_value_int(1));
    ck_assert_int_eq(peval(s, m), 1);
    /* One byte more is refused before it is looked at. */
    s[max] = 'x';
    s[max + 1] = '\0';
    iqdb_filter *f = (iqdb_filter *)&f;
    iqdb_parse_error err;
    ck_assert_int_eq(iqdb_filter_parse(s, &f, &err), IQDB_ERANGE);
    ck_assert_ptr_null(f);
    ck_assert_uint_eq(err.offset, IQDB_FILTER_MAX_TEXT);
    ck_assert_ptr_nonnull(strstr(err.message, "longer than 65536"));
    free(s);

    /* The longest possible field name and string. */
    s = malloc(max + 1);
    ck_assert_ptr_nonnull(s);
    memset(s, 'k', max);
    s[max] = '\0';
    memcpy(s + max - 4, " = 1", 4);
    iqdb_meta_free(m);
    m = meta1("k", iqdb_value_int(1));
    ck_assert_int_eq(peval(s, m), 0);
    memcpy(s, "k = '", 5);
    s[max - 1] = '\'';
    ck_assert_int_eq(peval(s, m), 0);
    free(s);
    iqdb_meta_free(m);
}
END_TEST

/* ---- parser: hostile input ------------------------------------------- */

static void parse_hostile(const char *text, const iqdb_meta *m)
{
    iqdb_filter *f = (iqdb_filter *)&f;
    iqdb_parse_error err;
    int rc = iqdb_filter_parse(text, &f, &err);
    if (rc == 0) {
        ck_assert_ptr_nonnull(f);
        int r = iqdb_filter_eval(f, m);
        ck_assert(r == 0 || r == 1);
        iqdb_filter *c = iqdb_filter_clone(f);
        ck_assert_ptr_nonnull(c);
        ck_assert_int_eq(iqdb_filter_eval(c, m), r);
        iqdb_filter_free(c);
        iqdb_filter_free(f);
        return;
    }
    ck_assert_msg(rc == IQDB_EPARSE || rc == IQDB_ERANGE, "rc %d", rc);
    ck_assert_ptr_null(f);
    ck_assert_uint_le(err.offset, strlen(text));
    ck_assert_uint_gt(strlen(err.message), 0);
    ck_assert_ptr_nonnull(strstr(err.message, " at offset "));
    ck_assert_int_eq(strncmp(iqdb_errmsg(NULL), "filter: ", 8), 0);
}

static const char *const pieces[] = {
    "a", "`b c`", "x.y", "=", "==", "!=", "<>", "<", "<=", ">", ">=",
    "(", ")", ",", "AND", "or", "NOT", "in", "1", "-2", "3.5e1", "0.",
    "'s'", "\"t\\n\"", "'", "\"", "\\", "`", "true", "NULL", "false",
    " ", " ", " ", "\t", "99999999999999999999", "1e999", "-", "e", "!",
};

START_TEST(test_filter_parse_fuzz)
{
    enum { ITER = 5000, MAXLEN = 160 };
    rng_state = 0x0123456789abcdefULL;
    iqdb_meta *m = meta_of("a", iqdb_value_int(1), "b c", iqdb_value_str("s"),
                           "x.y", iqdb_value_double(3.5), (const char *)NULL);
    for (int it = 0; it < ITER; it++) {
        char buf[MAXLEN + 64];
        size_t n = 0, want = rng() % MAXLEN;
        int raw = it % 3 == 0;
        while (n < want) {
            if (raw) {
                buf[n++] = (char)(1 + rng() % 255);
                continue;
            }
            const char *p = pieces[rng() % (sizeof pieces / sizeof *pieces)];
            size_t l = strlen(p);
            memcpy(buf + n, p, l);
            n += l;
            if (rng() % 2)
                buf[n++] = ' ';
        }
        /* An exact-size heap copy, so ASan sees any read past the end. */
        char *text = malloc(n + 1);
        ck_assert_ptr_nonnull(text);
        memcpy(text, buf, n);
        text[n] = '\0';
        parse_hostile(text, m);
        free(text);
    }
    iqdb_meta_free(m);
}
END_TEST

/* Every prefix and every one-byte change of a text using every feature. */
START_TEST(test_filter_parse_mutations)
{
    const char *base = "(kind = \"d\\\"oc\" OR `x y` <> 'q\\n') AND "
                       "NOT year >= -2026.5e0 AND tag NOT IN (1, 'a', "
                       "TRUE, null, 2.5) OR NOT (z IN (-3))";
    size_t n = strlen(base);
    iqdb_meta *m = meta_of("kind", iqdb_value_str("d\"oc"), "year",
                           iqdb_value_int(1), (const char *)NULL);
    const char subst[] = {'(', ')', '"', '\'', '\\', '`', '=', ' ', 'A',
                          '1', '-', '.', ',', '\x80', '!', '<'};
    for (size_t i = 0; i <= n; i++) {
        char *text = malloc(n + 1);
        ck_assert_ptr_nonnull(text);
        memcpy(text, base, i);
        text[i] = '\0';
        parse_hostile(text, m);
        memcpy(text, base, n + 1);
        for (size_t k = 0; i < n && k < sizeof subst; k++) {
            text[i] = subst[k];
            parse_hostile(text, m);
        }
        free(text);
    }
    ck_assert_int_eq(peval(base, m), 1);
    iqdb_meta_free(m);
}
END_TEST

/* ---- allocation failures --------------------------------------------- */

/* Run make() with the n-th allocation failing, n = 0, 1, ... until it
 * succeeds. Every failure must be a clean NULL (ASan checks for leaks).
 * Returns the number of failing runs. */
static long sweep_build(iqdb_filter *(*make)(void), const iqdb_meta *m,
                        int expect)
{
    long n;
    for (n = 0; n < SWEEP_MAX; n++) {
        iqdb__alloc_fail_after(n);
        iqdb_filter *f = make();
        iqdb__alloc_fail_after(-1);
        if (f != NULL) {
            ck_assert_int_eq(iqdb_filter_eval(f, m), expect);
            iqdb_filter_free(f);
            break;
        }
    }
    ck_assert_int_lt(n, SWEEP_MAX);
    return n;
}

static iqdb_filter *make_eq_str(void)
{
    return iqdb_filter_eq("kind", iqdb_value_str("doc"));
}

static iqdb_filter *make_in(void)
{
    const iqdb_value v[] = {iqdb_value_str("doc"), iqdb_value_int(1),
                            iqdb_value_double(0.5), iqdb_value_null()};
    return iqdb_filter_in("kind", v, 4);
}

static iqdb_filter *make_tree(void)
{
    return iqdb_filter_or(iqdb_filter_and(make_eq_str(), make_in()),
                          iqdb_filter_not(iqdb_filter_and(
                              iqdb_filter_and(is1("a"), is1("b")),
                              iqdb_filter_and(is1("c"), is1("d")))));
}

static const iqdb_filter *clone_src;

static iqdb_filter *make_clone(void)
{
    return iqdb_filter_clone(clone_src);
}

START_TEST(test_filter_oom_build)
{
    iqdb_meta *m = meta1("kind", iqdb_value_str("doc"));
    /* node, field, string */
    ck_assert_int_eq(sweep_build(make_eq_str, m, 1), 3);
    /* node, field, ints, doubles, string refs, string pool */
    ck_assert_int_eq(sweep_build(make_in, m, 1), 6);
    ck_assert_int_gt(sweep_build(make_tree, m, 1), 20);
    iqdb_meta_free(m);
}
END_TEST

START_TEST(test_filter_oom_clone)
{
    iqdb_filter *src = make_tree();
    ck_assert_ptr_nonnull(src);
    clone_src = src;
    iqdb_meta *m = meta1("a", iqdb_value_int(1));
    ck_assert_int_gt(sweep_build(make_clone, m, 1), 20);
    iqdb_meta_free(m);
    iqdb_filter_free(src);
}
END_TEST

START_TEST(test_filter_oom_parse)
{
    const char *texts[] = {
        "a = 1",
        "kind = \"doc\" AND year >= 2026 AND NOT tag IN (\"a\", \"b\")",
        ("(a = 1 OR b = 'x') AND c NOT IN (1, 2.5, 'z', true, null) OR "
         "NOT (`d e` <> 3 AND f = 1 AND g = 1 AND h = 1 AND i = 1)"),
        "x IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)",
    };
    iqdb_meta *m = meta_of("kind", iqdb_value_str("doc"), "year",
                           iqdb_value_int(2026), "a", iqdb_value_int(1),
                           "x", iqdb_value_int(17), (const char *)NULL);
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        long n;
        int rc = -1;
        iqdb_filter *f = NULL;
        for (n = 0; n < SWEEP_MAX; n++) {
            iqdb_parse_error err;
            f = (iqdb_filter *)&f;
            iqdb__alloc_fail_after(n);
            rc = iqdb_filter_parse(texts[t], &f, &err);
            iqdb__alloc_fail_after(-1);
            if (rc == 0)
                break;
            ck_assert_int_eq(rc, IQDB_ENOMEM);
            ck_assert_ptr_null(f);
            ck_assert_ptr_nonnull(strstr(err.message, "out of memory"));
            ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "out of memory"));
        }
        ck_assert_int_eq(rc, 0);
        /* scratch, node, field: at least three chances to fail. */
        ck_assert_int_ge(n, 3);
        ck_assert_int_eq(iqdb_filter_eval(f, m), 1);
        iqdb_filter_free(f);
    }
    iqdb_meta_free(m);
}
END_TEST

static Suite *filter_suite(void)
{
    Suite *s = suite_create("filter");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"ops_int", test_filter_ops_int},
        {"ops_double", test_filter_ops_double},
        {"ops_string", test_filter_ops_string},
        {"ops_bool", test_filter_ops_bool},
        {"ops_null", test_filter_ops_null},
        {"ops_mixed_numbers", test_filter_ops_mixed_numbers},
        {"closed_world", test_filter_closed_world},
        {"field_match", test_filter_field_match},
        {"in_mixed", test_filter_in_mixed},
        {"in_many", test_filter_in_many},
        {"and_or_not", test_filter_and_or_not},
        {"long_chain", test_filter_long_chain},
        {"bad_args", test_filter_bad_args},
        {"null_propagation", test_filter_null_propagation},
        {"copies_constant", test_filter_copies_constant},
        {"clone", test_filter_clone},
        {"eval_no_alloc", test_filter_eval_no_alloc},
        {"parse_example", test_filter_parse_example},
        {"parse_values", test_filter_parse_values},
        {"parse_keywords", test_filter_parse_keywords},
        {"parse_precedence", test_filter_parse_precedence},
        {"parse_errors", test_filter_parse_errors},
        {"parse_bad_args", test_filter_parse_bad_args},
        {"parse_depth", test_filter_parse_depth},
        {"parse_length", test_filter_parse_length},
        {"parse_fuzz", test_filter_parse_fuzz},
        {"parse_mutations", test_filter_parse_mutations},
        {"oom_build", test_filter_oom_build},
        {"oom_clone", test_filter_oom_clone},
        {"oom_parse", test_filter_oom_parse},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(filter_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
