/*
 * core/filter.c - filter trees: building, copying and evaluation.
 *
 * A filter runs once per candidate record on the search path, so each
 * leaf is prepared when it is built: the field's length is kept (lookups
 * need no strlen), the constant's type class is fixed, and the operator
 * is reduced to a bit mask over the three outcomes of one comparison, so
 * evaluation is a lookup, one compare and a shift, with no allocation.
 * An IN list is split by type into sorted arrays searched by bisection;
 * its integral doubles are stored as integers, so a record's number needs
 * one exact search whichever of INT or DOUBLE it is. AND and OR nodes are
 * n-ary: chaining a AND b AND c stays flat, so long chains cost no stack.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "filter_int.h"
#include "iqdb_int.h"

enum fkind { F_CMP, F_IN, F_AND, F_OR, F_NOT };

/* Types that compare with each other share a class. */
enum vclass { C_NULL, C_STR, C_NUM, C_BOOL };

/* Bit (c + 1) of a leaf's mask is set when the comparison outcome
 * c = sign(record - constant) satisfies the operator. */
enum {
    M_LT = 1u << 0,
    M_EQ = 1u << 1,
    M_GT = 1u << 2
};

struct str_ref {
    const char *p; /* into the set's pool */
    size_t len;
};

struct in_set {
    int64_t *ints; /* sorted; integral doubles land here too */
    size_t n_ints;
    double *dbls; /* sorted; non-integral or beyond int64 */
    size_t n_dbls;
    struct str_ref *strs; /* sorted bytewise, then by length */
    size_t n_strs;
    char *pool; /* the bytes of every string */
    size_t pool_len;
    unsigned char has_true, has_false, has_null;
};

struct cmp_leaf {
    unsigned mask;   /* 0: can never hold (ordering a bool or null) */
    enum vclass cls; /* class of c */
    iqdb_value c;    /* STRING: v.s owned by the node */
};

struct iqdb_filter {
    enum fkind kind;
    char *field; /* leaves only */
    size_t field_len;
    union {
        struct cmp_leaf cmp;
        struct in_set in;
        struct {
            iqdb_filter **kids;
            size_t n, cap;
        } list;
        iqdb_filter *child;
    } u;
};

static const unsigned char class_of[] = {
    [IQDB_TYPE_NULL] = C_NULL,
    [IQDB_TYPE_STRING] = C_STR,
    [IQDB_TYPE_INT] = C_NUM,
    [IQDB_TYPE_DOUBLE] = C_NUM,
    [IQDB_TYPE_BOOL] = C_BOOL,
};

/* ---- comparisons ----------------------------------------------------- */

static int cmp_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c < 0 ? -1 : 1;
    return (alen > blen) - (alen < blen);
}

/* sign(i - d), exactly: converting i to double could round and make
 * 2^53 + 1 equal 2^53. d is never NaN. */
static int cmp_int_dbl(int64_t i, double d)
{
    if (d >= 0x1p63)
        return -1;
    if (d < -0x1p63)
        return 1;
    int64_t t = (int64_t)d; /* in range: truncation is exact */
    if (i != t)
        return i < t ? -1 : 1;
    double frac = d - (double)t; /* exact: t is d's integral part */
    return (frac < 0) - (frac > 0);
}

static int cmp_num(const iqdb_value *a, const iqdb_value *b)
{
    if (a->type == IQDB_TYPE_INT) {
        if (b->type == IQDB_TYPE_INT)
            return (a->v.i > b->v.i) - (a->v.i < b->v.i);
        return cmp_int_dbl(a->v.i, b->v.d);
    }
    if (b->type == IQDB_TYPE_INT)
        return -cmp_int_dbl(b->v.i, a->v.d);
    return (a->v.d > b->v.d) - (a->v.d < b->v.d);
}

/* 1 and *out set when d is an integer that int64 holds. */
static int dbl_as_int(double d, int64_t *out)
{
    if (!(d >= -0x1p63 && d < 0x1p63))
        return 0;
    int64_t i = (int64_t)d;
    if ((double)i != d)
        return 0;
    *out = i;
    return 1;
}

/* ---- evaluation ------------------------------------------------------ */

static int eval_cmp(const iqdb_filter *f, const iqdb_meta *m)
{
    const struct cmp_leaf *l = &f->u.cmp;
    if (l->mask == 0)
        return 0;
    const iqdb_value *v = iqdb__meta_find(m, f->field, f->field_len);
    if (v == NULL || class_of[v->type] != l->cls)
        return 0;
    int c = 0;
    switch (l->cls) {
    case C_STR:
        c = cmp_bytes(v->v.s, v->len, l->c.v.s, l->c.len);
        break;
    case C_NUM:
        c = cmp_num(v, &l->c);
        break;
    case C_BOOL:
        c = (v->v.b > l->c.v.b) - (v->v.b < l->c.v.b);
        break;
    case C_NULL:
        break;
    }
    return (int)((l->mask >> (c + 1)) & 1u);
}

static int has_int(const int64_t *a, size_t n, int64_t x)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] == x)
            return 1;
        if (a[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int has_dbl(const double *a, size_t n, double x)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] == x)
            return 1;
        if (a[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int has_str(const struct str_ref *a, size_t n, const char *s,
                   size_t len)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_bytes(a[mid].p, a[mid].len, s, len);
        if (c == 0)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int eval_in(const iqdb_filter *f, const iqdb_meta *m)
{
    const iqdb_value *v = iqdb__meta_find(m, f->field, f->field_len);
    if (v == NULL)
        return 0;
    const struct in_set *s = &f->u.in;
    int64_t i;
    switch (v->type) {
    case IQDB_TYPE_STRING:
        return has_str(s->strs, s->n_strs, v->v.s, v->len);
    case IQDB_TYPE_INT:
        return has_int(s->ints, s->n_ints, v->v.i);
    case IQDB_TYPE_DOUBLE:
        if (dbl_as_int(v->v.d, &i))
            return has_int(s->ints, s->n_ints, i);
        return has_dbl(s->dbls, s->n_dbls, v->v.d);
    case IQDB_TYPE_BOOL:
        return v->v.b ? s->has_true : s->has_false;
    case IQDB_TYPE_NULL:
        return s->has_null;
    }
    return 0;
}

static int eval_node(const iqdb_filter *f, const iqdb_meta *m)
{
    switch (f->kind) {
    case F_CMP:
        return eval_cmp(f, m);
    case F_IN:
        return eval_in(f, m);
    case F_AND:
        for (size_t i = 0; i < f->u.list.n; i++)
            if (!eval_node(f->u.list.kids[i], m))
                return 0;
        return 1;
    case F_OR:
        for (size_t i = 0; i < f->u.list.n; i++)
            if (eval_node(f->u.list.kids[i], m))
                return 1;
        return 0;
    case F_NOT:
        return !eval_node(f->u.child, m);
    }
    return 0;
}

/* No filter matches every record, as a NULL filter does in iqdb_search. */
int iqdb_filter_eval(const iqdb_filter *f, const iqdb_meta *m)
{
    return f ? eval_node(f, m) : 1;
}

/* ---- freeing --------------------------------------------------------- */

static void in_set_clear(struct in_set *s)
{
    iqdb__free(s->ints);
    iqdb__free(s->dbls);
    iqdb__free(s->strs);
    iqdb__free(s->pool);
}

void iqdb_filter_free(iqdb_filter *f)
{
    if (f == NULL)
        return;
    switch (f->kind) {
    case F_CMP:
        if (f->u.cmp.c.type == IQDB_TYPE_STRING)
            iqdb__free((char *)f->u.cmp.c.v.s);
        break;
    case F_IN:
        in_set_clear(&f->u.in);
        break;
    case F_AND:
    case F_OR:
        for (size_t i = 0; i < f->u.list.n; i++)
            iqdb_filter_free(f->u.list.kids[i]);
        iqdb__free(f->u.list.kids);
        break;
    case F_NOT:
        iqdb_filter_free(f->u.child);
        break;
    }
    iqdb__free(f->field);
    iqdb__free(f);
}

/* ---- leaves ---------------------------------------------------------- */

static iqdb_filter *nomem(void)
{
    iqdb__set_error(NULL, IQDB_ENOMEM, "filter: out of memory");
    return NULL;
}

static int check_const(const char *field, iqdb_value v)
{
    switch (v.type) {
    case IQDB_TYPE_NULL:
    case IQDB_TYPE_INT:
    case IQDB_TYPE_BOOL:
        return 0;
    case IQDB_TYPE_DOUBLE:
        if (isnan(v.v.d))
            return iqdb__set_error(NULL, IQDB_EINVAL,
                                   "filter: NaN constant for field '%s'",
                                   field);
        return 0;
    case IQDB_TYPE_STRING:
        if (v.v.s == NULL && v.len > 0)
            return iqdb__set_error(NULL, IQDB_EINVAL,
                                   "filter: NULL string constant for field "
                                   "'%s'", field);
        return 0;
    }
    return iqdb__set_error(NULL, IQDB_EINVAL,
                           "filter: constant for field '%s' has bad type %d",
                           field, (int)v.type);
}

static int check_field(const char *field)
{
    if (field == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "filter: NULL field");
    if (field[0] == '\0')
        return iqdb__set_error(NULL, IQDB_EINVAL, "filter: empty field");
    return 0;
}

static iqdb_filter *leaf_new(enum fkind kind, const char *field)
{
    iqdb_filter *f = iqdb__calloc(1, sizeof *f);
    if (f == NULL)
        return nomem();
    f->kind = kind;
    f->field_len = strlen(field);
    f->field = iqdb__memdup(field, f->field_len + 1);
    if (f->field == NULL) {
        iqdb__free(f);
        return nomem();
    }
    return f;
}

static iqdb_filter *cmp_new(const char *field, iqdb_value v, unsigned mask)
{
    if (check_field(field) != 0 || check_const(field, v) != 0)
        return NULL;
    iqdb_filter *f = leaf_new(F_CMP, field);
    if (f == NULL)
        return NULL;
    struct cmp_leaf *l = &f->u.cmp;
    l->cls = class_of[v.type];
    l->c = v;
    if (v.type == IQDB_TYPE_STRING) {
        l->c.v.s = iqdb__memdup(v.v.s, v.len);
        if (l->c.v.s == NULL) {
            l->c.type = IQDB_TYPE_NULL;
            iqdb_filter_free(f);
            return nomem();
        }
    }
    if (v.type == IQDB_TYPE_BOOL)
        l->c.v.b = v.v.b != 0;
    /* Booleans and null have no order: an ordering leaf never holds. */
    if ((l->cls == C_BOOL || l->cls == C_NULL) && mask != M_EQ &&
        mask != (M_LT | M_GT))
        mask = 0;
    l->mask = mask;
    return f;
}

iqdb_filter *iqdb_filter_eq(const char *field, iqdb_value v)
{
    return cmp_new(field, v, M_EQ);
}

iqdb_filter *iqdb_filter_neq(const char *field, iqdb_value v)
{
    return cmp_new(field, v, M_LT | M_GT);
}

iqdb_filter *iqdb_filter_lt(const char *field, iqdb_value v)
{
    return cmp_new(field, v, M_LT);
}

iqdb_filter *iqdb_filter_lte(const char *field, iqdb_value v)
{
    return cmp_new(field, v, M_LT | M_EQ);
}

iqdb_filter *iqdb_filter_gt(const char *field, iqdb_value v)
{
    return cmp_new(field, v, M_GT);
}

iqdb_filter *iqdb_filter_gte(const char *field, iqdb_value v)
{
    return cmp_new(field, v, M_GT | M_EQ);
}

/* ---- IN sets --------------------------------------------------------- */

static int order_int(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int order_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int order_str(const void *a, const void *b)
{
    const struct str_ref *x = a, *y = b;
    return cmp_bytes(x->p, x->len, y->p, y->len);
}

/* Count what goes where; -1 when the strings' total size overflows. */
static int in_count(struct in_set *s, const iqdb_value *vals, size_t n)
{
    int64_t i;
    for (size_t k = 0; k < n; k++) {
        const iqdb_value *v = &vals[k];
        switch (v->type) {
        case IQDB_TYPE_STRING:
            if (v->len > SIZE_MAX - s->pool_len)
                return -1;
            s->pool_len += v->len;
            s->n_strs++;
            break;
        case IQDB_TYPE_INT:
            s->n_ints++;
            break;
        case IQDB_TYPE_DOUBLE:
            if (dbl_as_int(v->v.d, &i))
                s->n_ints++;
            else
                s->n_dbls++;
            break;
        default:
            break;
        }
    }
    return 0;
}

static void *alloc_array(size_t n, size_t size)
{
    size_t bytes;
    if (n == 0 || iqdb__mul_size(n, size, &bytes) != 0)
        return NULL;
    return iqdb__malloc(bytes);
}

static int in_alloc(struct in_set *s)
{
    if (s->n_ints > 0 &&
        (s->ints = alloc_array(s->n_ints, sizeof *s->ints)) == NULL)
        return -1;
    if (s->n_dbls > 0 &&
        (s->dbls = alloc_array(s->n_dbls, sizeof *s->dbls)) == NULL)
        return -1;
    if (s->n_strs > 0) {
        s->strs = alloc_array(s->n_strs, sizeof *s->strs);
        s->pool = iqdb__malloc(s->pool_len);
        if (s->strs == NULL || s->pool == NULL)
            return -1;
    }
    return 0;
}

/* Fill the arrays (sized by in_count) and sort them. Strings are sorted
 * while they still point at the caller's bytes, then packed into the
 * pool in that order. */
static void in_fill(struct in_set *s, const iqdb_value *vals, size_t n)
{
    size_t ni = 0, nd = 0, ns = 0;
    int64_t i;
    for (size_t k = 0; k < n; k++) {
        const iqdb_value *v = &vals[k];
        switch (v->type) {
        case IQDB_TYPE_STRING:
            s->strs[ns].p = v->len ? v->v.s : "";
            s->strs[ns++].len = v->len;
            break;
        case IQDB_TYPE_INT:
            s->ints[ni++] = v->v.i;
            break;
        case IQDB_TYPE_DOUBLE:
            if (dbl_as_int(v->v.d, &i))
                s->ints[ni++] = i;
            else
                s->dbls[nd++] = v->v.d;
            break;
        case IQDB_TYPE_BOOL:
            if (v->v.b)
                s->has_true = 1;
            else
                s->has_false = 1;
            break;
        case IQDB_TYPE_NULL:
            s->has_null = 1;
            break;
        }
    }
    if (ni > 1)
        qsort(s->ints, ni, sizeof *s->ints, order_int);
    if (nd > 1)
        qsort(s->dbls, nd, sizeof *s->dbls, order_dbl);
    if (ns > 1)
        qsort(s->strs, ns, sizeof *s->strs, order_str);
    size_t off = 0;
    for (size_t k = 0; k < ns; k++) {
        if (s->strs[k].len > 0)
            memcpy(s->pool + off, s->strs[k].p, s->strs[k].len);
        s->strs[k].p = s->pool + off;
        off += s->strs[k].len;
    }
}

iqdb_filter *iqdb_filter_in(const char *field, const iqdb_value *vals,
                            size_t n)
{
    if (check_field(field) != 0)
        return NULL;
    if (vals == NULL || n == 0) {
        iqdb__set_error(NULL, IQDB_EINVAL,
                        "filter: IN on '%s' needs at least one value", field);
        return NULL;
    }
    for (size_t k = 0; k < n; k++)
        if (check_const(field, vals[k]) != 0)
            return NULL;
    iqdb_filter *f = leaf_new(F_IN, field);
    if (f == NULL)
        return NULL;
    if (in_count(&f->u.in, vals, n) != 0 || in_alloc(&f->u.in) != 0) {
        iqdb_filter_free(f);
        return nomem();
    }
    in_fill(&f->u.in, vals, n);
    return f;
}

/* ---- combinators ----------------------------------------------------- */

/* Make room for `need` children in list node f. */
static int list_reserve(iqdb_filter *f, size_t need)
{
    if (need <= f->u.list.cap)
        return 0;
    size_t cap = f->u.list.cap * 2;
    if (cap < need)
        cap = need;
    size_t bytes;
    if (iqdb__mul_size(cap, sizeof *f->u.list.kids, &bytes) != 0)
        return -1;
    iqdb_filter **kids = iqdb__realloc(f->u.list.kids, bytes);
    if (kids == NULL)
        return -1;
    f->u.list.kids = kids;
    f->u.list.cap = cap;
    return 0;
}

/* Append x to list node dst, splicing x's children when it is a list of
 * the same kind (the shell of x is then freed). */
static int list_append(iqdb_filter *dst, iqdb_filter *x)
{
    if (x->kind != dst->kind) {
        if (list_reserve(dst, dst->u.list.n + 1) != 0)
            return -1;
        dst->u.list.kids[dst->u.list.n++] = x;
        return 0;
    }
    if (list_reserve(dst, dst->u.list.n + x->u.list.n) != 0)
        return -1;
    memcpy(dst->u.list.kids + dst->u.list.n, x->u.list.kids,
           x->u.list.n * sizeof *x->u.list.kids);
    dst->u.list.n += x->u.list.n;
    iqdb__free(x->u.list.kids);
    iqdb__free(x);
    return 0;
}

static iqdb_filter *combine(enum fkind kind, iqdb_filter *a, iqdb_filter *b)
{
    /* A NULL operand is an earlier failure whose message stands. */
    if (a == NULL || b == NULL) {
        iqdb_filter_free(a);
        iqdb_filter_free(b);
        return NULL;
    }
    iqdb_filter *dst = a;
    if (a->kind != kind) {
        dst = iqdb__calloc(1, sizeof *dst);
        if (dst == NULL)
            goto fail;
        dst->kind = kind;
        if (list_append(dst, a) != 0) {
            iqdb__free(dst);
            goto fail;
        }
    }
    /* From here dst owns a; on failure freeing dst frees a. */
    if (list_append(dst, b) != 0) {
        iqdb_filter_free(dst);
        iqdb_filter_free(b);
        return nomem();
    }
    return dst;
fail:
    iqdb_filter_free(a);
    iqdb_filter_free(b);
    return nomem();
}

iqdb_filter *iqdb_filter_and(iqdb_filter *a, iqdb_filter *b)
{
    return combine(F_AND, a, b);
}

iqdb_filter *iqdb_filter_or(iqdb_filter *a, iqdb_filter *b)
{
    return combine(F_OR, a, b);
}

iqdb_filter *iqdb_filter_not(iqdb_filter *a)
{
    if (a == NULL)
        return NULL;
    iqdb_filter *f = iqdb__calloc(1, sizeof *f);
    if (f == NULL) {
        iqdb_filter_free(a);
        return nomem();
    }
    f->kind = F_NOT;
    f->u.child = a;
    return f;
}

/* ---- copying --------------------------------------------------------- */

static int in_copy(struct in_set *d, const struct in_set *s)
{
    *d = *s;
    d->ints = NULL;
    d->dbls = NULL;
    d->strs = NULL;
    d->pool = NULL;
    if (s->n_ints > 0 && (d->ints = iqdb__memdup(s->ints, s->n_ints *
                                                 sizeof *s->ints)) == NULL)
        return -1;
    if (s->n_dbls > 0 && (d->dbls = iqdb__memdup(s->dbls, s->n_dbls *
                                                 sizeof *s->dbls)) == NULL)
        return -1;
    if (s->n_strs == 0)
        return 0;
    d->strs = iqdb__memdup(s->strs, s->n_strs * sizeof *s->strs);
    d->pool = iqdb__memdup(s->pool, s->pool_len);
    if (d->strs == NULL || d->pool == NULL)
        return -1;
    for (size_t k = 0; k < s->n_strs; k++)
        d->strs[k].p = d->pool + (s->strs[k].p - s->pool);
    return 0;
}

static iqdb_filter *clone_node(const iqdb_filter *f);

/* Copy the payload of f into c (already holding kind and field). */
static int copy_payload(iqdb_filter *c, const iqdb_filter *f)
{
    switch (f->kind) {
    case F_CMP:
        c->u.cmp = f->u.cmp;
        if (f->u.cmp.c.type != IQDB_TYPE_STRING)
            return 0;
        c->u.cmp.c.v.s = iqdb__memdup(f->u.cmp.c.v.s, f->u.cmp.c.len);
        if (c->u.cmp.c.v.s != NULL)
            return 0;
        c->u.cmp.c.type = IQDB_TYPE_NULL; /* nothing to free */
        return -1;
    case F_IN:
        return in_copy(&c->u.in, &f->u.in);
    case F_AND:
    case F_OR:
        if (list_reserve(c, f->u.list.n) != 0)
            return -1;
        while (c->u.list.n < f->u.list.n) {
            iqdb_filter *kid = clone_node(f->u.list.kids[c->u.list.n]);
            if (kid == NULL)
                return -1;
            c->u.list.kids[c->u.list.n++] = kid;
        }
        return 0;
    case F_NOT:
        c->u.child = clone_node(f->u.child);
        return c->u.child ? 0 : -1;
    }
    return -1;
}

static iqdb_filter *clone_node(const iqdb_filter *f)
{
    iqdb_filter *c = iqdb__calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->kind = f->kind;
    if (f->field != NULL) {
        c->field = iqdb__memdup(f->field, f->field_len + 1);
        if (c->field == NULL) {
            iqdb__free(c);
            return NULL;
        }
        c->field_len = f->field_len;
    }
    if (copy_payload(c, f) != 0) {
        iqdb_filter_free(c);
        return NULL;
    }
    return c;
}

iqdb_filter *iqdb_filter_clone(const iqdb_filter *f)
{
    if (f == NULL) {
        iqdb__set_error(NULL, IQDB_EINVAL, "filter: clone of NULL filter");
        return NULL;
    }
    iqdb_filter *c = clone_node(f);
    return c ? c : nomem();
}
