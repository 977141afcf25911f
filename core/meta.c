/*
 * core/meta.c - metadata maps: string key -> typed scalar value.
 *
 * A map is a sorted array of entries, so iqdb_meta_at walks keys in
 * bytewise order and lookups are a binary search with no hashing and no
 * allocation (filters look fields up once per record on the search path).
 * Each entry owns one buffer holding its key, a NUL, and for strings the
 * value bytes, so a set costs one allocation plus the occasional growth of
 * the array. Maps are reference counted: the store hands the same map to
 * any number of search results through iqdb__meta_ref, and a map that is
 * shared that way refuses changes, so readers never see it move.
 */
#include "config.h"

#include <math.h>
#include <string.h>

#include "filter_int.h"
#include "iqdb_int.h"

struct meta_entry {
    char *buf;      /* key, NUL, then string bytes (STRING only), NUL */
    size_t key_len; /* bytes of key in buf */
    iqdb_value val; /* STRING: v.s points into buf */
};

struct iqdb_meta {
    unsigned refs; /* atomic; the map is read-only while above 1 */
    size_t n;
    size_t cap;
    struct meta_entry *e;
};

/* ---- values ---------------------------------------------------------- */

iqdb_value iqdb_value_str(const char *s)
{
    return iqdb_value_strn(s, s ? strlen(s) : 0);
}

iqdb_value iqdb_value_strn(const char *s, size_t len)
{
    iqdb_value x;
    x.type = IQDB_TYPE_STRING;
    x.len = s ? len : 0;
    x.v.s = s ? s : "";
    return x;
}

iqdb_value iqdb_value_int(int64_t i)
{
    iqdb_value x;
    x.type = IQDB_TYPE_INT;
    x.len = 0;
    x.v.i = i;
    return x;
}

iqdb_value iqdb_value_double(double d)
{
    iqdb_value x;
    x.type = IQDB_TYPE_DOUBLE;
    x.len = 0;
    x.v.d = d;
    return x;
}

iqdb_value iqdb_value_bool(int b)
{
    iqdb_value x;
    x.type = IQDB_TYPE_BOOL;
    x.len = 0;
    x.v.b = b != 0;
    return x;
}

/* ---- lookup ---------------------------------------------------------- */

static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Keys are never empty, and most probes differ in their first byte:
     * settle those without a call to memcmp. */
    unsigned char a0 = (unsigned char)a[0], b0 = (unsigned char)b[0];
    if (a0 != b0)
        return a0 < b0 ? -1 : 1;
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return (alen > blen) - (alen < blen);
}

/* Index of key (len > 0), or of where it would be inserted; *found says
 * which. */
static size_t find_slot(const iqdb_meta *m, const char *key, size_t len,
                        int *found)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct meta_entry *e = &m->e[mid];
        int c = key_cmp(e->buf, e->key_len, key, len);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

const iqdb_value *iqdb__meta_find(const iqdb_meta *m, const char *key,
                                  size_t key_len)
{
    int found;
    if (m == NULL || key_len == 0)
        return NULL;
    size_t i = find_slot(m, key, key_len, &found);
    return found ? &m->e[i].val : NULL;
}

/* ---- life cycle ------------------------------------------------------ */

iqdb_meta *iqdb_meta_new(void)
{
    iqdb_meta *m = iqdb__calloc(1, sizeof *m);
    if (m == NULL) {
        iqdb__set_error(NULL, IQDB_ENOMEM, "meta: out of memory");
        return NULL;
    }
    m->refs = 1;
    return m;
}

static void free_entries(struct meta_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        iqdb__free(e[i].buf);
    iqdb__free(e);
}

void iqdb_meta_free(iqdb_meta *m)
{
    if (m == NULL)
        return;
    /* Release pairs with the acquire of the last dropper, so every
     * reader's accesses happen before the memory is freed. */
    if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    free_entries(m->e, m->n);
    iqdb__free(m);
}

iqdb_meta *iqdb__meta_ref(const iqdb_meta *m)
{
    if (m == NULL)
        return NULL;
    /* The count is bookkeeping, not content: a const map may be shared. */
    iqdb_meta *mm = (iqdb_meta *)m;
    __atomic_add_fetch(&mm->refs, 1, __ATOMIC_RELAXED);
    return mm;
}

/* Fill *out with a new buffer holding key and v: 0 or IQDB_ENOMEM. */
static int entry_make(struct meta_entry *out, const char *key, size_t klen,
                      iqdb_value v)
{
    size_t slen = v.type == IQDB_TYPE_STRING ? v.len : 0;
    char *buf = iqdb__malloc(klen + 1 + slen + 1);
    if (buf == NULL)
        return IQDB_ENOMEM;
    memcpy(buf, key, klen);
    buf[klen] = '\0';
    if (slen > 0)
        memcpy(buf + klen + 1, v.v.s, slen);
    buf[klen + 1 + slen] = '\0';
    out->buf = buf;
    out->key_len = klen;
    out->val = v;
    if (v.type == IQDB_TYPE_STRING)
        out->val.v.s = buf + klen + 1;
    else
        out->val.len = 0;
    if (v.type == IQDB_TYPE_BOOL)
        out->val.v.b = v.v.b != 0;
    if (v.type == IQDB_TYPE_NULL)
        out->val.v.i = 0;
    return 0;
}

static size_t entry_size(const struct meta_entry *e)
{
    size_t slen = e->val.type == IQDB_TYPE_STRING ? e->val.len : 0;
    return e->key_len + 1 + slen + 1;
}

iqdb_meta *iqdb_meta_clone(const iqdb_meta *m)
{
    if (m == NULL) {
        iqdb__set_error(NULL, IQDB_EINVAL, "meta: clone of NULL map");
        return NULL;
    }
    iqdb_meta *c = iqdb_meta_new();
    if (c == NULL)
        return NULL;
    if (m->n == 0)
        return c;
    c->e = iqdb__malloc(m->n * sizeof *c->e);
    if (c->e == NULL)
        goto fail;
    c->cap = m->n;
    for (; c->n < m->n; c->n++) {
        const struct meta_entry *src = &m->e[c->n];
        c->e[c->n].buf = iqdb__memdup(src->buf, entry_size(src));
        if (c->e[c->n].buf == NULL)
            goto fail;
        c->e[c->n].key_len = src->key_len;
        c->e[c->n].val = src->val;
        if (src->val.type == IQDB_TYPE_STRING)
            c->e[c->n].val.v.s = c->e[c->n].buf + src->key_len + 1;
    }
    return c;
fail:
    iqdb_meta_free(c);
    iqdb__set_error(NULL, IQDB_ENOMEM, "meta: out of memory");
    return NULL;
}

/* ---- changes --------------------------------------------------------- */

static int check_writable(const iqdb_meta *m)
{
    if (m == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "meta: NULL map");
    if (__atomic_load_n(&m->refs, __ATOMIC_ACQUIRE) > 1)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "meta: map is shared and read-only");
    return 0;
}

/* Key length, or 0 after recording why the key is unusable. */
static size_t check_key(const char *key)
{
    if (key == NULL) {
        iqdb__set_error(NULL, IQDB_EINVAL, "meta: NULL key");
        return 0;
    }
    size_t len = strnlen(key, IQDB_META_MAX_KEY + 1);
    if (len == 0) {
        iqdb__set_error(NULL, IQDB_EINVAL, "meta: empty key");
        return 0;
    }
    if (len > IQDB_META_MAX_KEY) {
        iqdb__set_error(NULL, IQDB_EINVAL, "meta: key longer than %u bytes",
                        IQDB_META_MAX_KEY);
        return 0;
    }
    return len;
}

static int check_value(const char *key, iqdb_value v)
{
    switch (v.type) {
    case IQDB_TYPE_NULL:
    case IQDB_TYPE_INT:
    case IQDB_TYPE_BOOL:
        return 0;
    case IQDB_TYPE_DOUBLE:
        if (isnan(v.v.d))
            return iqdb__set_error(NULL, IQDB_EINVAL,
                                   "meta: value of '%s' is NaN", key);
        return 0;
    case IQDB_TYPE_STRING:
        if (v.len > IQDB_META_MAX_STR)
            return iqdb__set_error(NULL, IQDB_EINVAL,
                                   "meta: value of '%s' longer than %u bytes",
                                   key, IQDB_META_MAX_STR);
        if (v.v.s == NULL && v.len > 0)
            return iqdb__set_error(NULL, IQDB_EINVAL,
                                   "meta: value of '%s' is a NULL string",
                                   key);
        return 0;
    }
    return iqdb__set_error(NULL, IQDB_EINVAL, "meta: value of '%s' has bad "
                           "type %d", key, (int)v.type);
}

/* Room for one more entry; the map is unchanged on failure. */
static int reserve_one(iqdb_meta *m, const char *key)
{
    if (m->n >= IQDB_META_MAX_ENTRIES)
        return iqdb__set_error(NULL, IQDB_EINVAL, "meta: map full (%u "
                               "entries), cannot add '%s'",
                               IQDB_META_MAX_ENTRIES, key);
    if (m->n < m->cap)
        return 0;
    size_t cap = m->cap ? m->cap * 2 : 4;
    if (cap > IQDB_META_MAX_ENTRIES)
        cap = IQDB_META_MAX_ENTRIES;
    struct meta_entry *e = iqdb__realloc(m->e, cap * sizeof *e);
    if (e == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "meta: out of memory");
    m->e = e;
    m->cap = cap;
    return 0;
}

int iqdb_meta_set(iqdb_meta *m, const char *key, iqdb_value v)
{
    int rc = check_writable(m);
    if (rc != 0)
        return rc;
    size_t klen = check_key(key);
    if (klen == 0)
        return IQDB_EINVAL;
    rc = check_value(key, v);
    if (rc != 0)
        return rc;

    int found;
    size_t i = find_slot(m, key, klen, &found);
    if (!found && (rc = reserve_one(m, key)) != 0)
        return rc;
    struct meta_entry ne;
    if (entry_make(&ne, key, klen, v) != 0)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "meta: out of memory");
    if (found) {
        iqdb__free(m->e[i].buf);
    } else {
        memmove(&m->e[i + 1], &m->e[i], (m->n - i) * sizeof *m->e);
        m->n++;
    }
    m->e[i] = ne;
    return 0;
}

int iqdb_meta_unset(iqdb_meta *m, const char *key)
{
    int rc = check_writable(m);
    if (rc != 0)
        return rc;
    if (key == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "meta: NULL key");
    int found = 0;
    size_t len = strlen(key);
    size_t i = len > 0 ? find_slot(m, key, len, &found) : 0;
    if (!found)
        return 0;
    iqdb__free(m->e[i].buf);
    m->n--;
    memmove(&m->e[i], &m->e[i + 1], (m->n - i) * sizeof *m->e);
    return 0;
}

/* ---- reading --------------------------------------------------------- */

size_t iqdb_meta_count(const iqdb_meta *m)
{
    return m ? m->n : 0;
}

int iqdb_meta_get(const iqdb_meta *m, const char *key, iqdb_value *out)
{
    if (m == NULL || key == NULL || out == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "meta: NULL argument to iqdb_meta_get");
    const iqdb_value *v = iqdb__meta_find(m, key, strlen(key));
    if (v == NULL)
        return iqdb__set_error(NULL, IQDB_ENOTFOUND, "meta: no key '%s'",
                               key);
    *out = *v;
    return 0;
}

int iqdb_meta_at(const iqdb_meta *m, size_t i, const char **key,
                 iqdb_value *out)
{
    if (m == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "meta: NULL map");
    if (i >= m->n)
        return iqdb__set_error(NULL, IQDB_ERANGE,
                               "meta: index %zu out of range (count %zu)", i,
                               m->n);
    if (key != NULL)
        *key = m->e[i].buf;
    if (out != NULL)
        *out = m->e[i].val;
    return 0;
}

size_t iqdb__meta_memory(const iqdb_meta *m)
{
    if (m == NULL)
        return 0;
    size_t total = sizeof *m + m->cap * sizeof *m->e;
    for (size_t i = 0; i < m->n; i++)
        total += entry_size(&m->e[i]);
    return total;
}
