/*
 * core/serial.c - byte encodings of ids, metadata and record batches.
 *
 * These are the payloads of WAL frames and the bodies of snapshot
 * sections. All integers are little-endian; every length is checked
 * against the bytes left and against the API's limits before anything is
 * allocated, so a hostile file costs at most what its size justifies.
 *
 * id:      u8 kind (1 = u64, 2 = bytes)
 *          kind 1: u64 value
 *          kind 2: u32 len (1..IQDB_ID_MAX_BYTES), len bytes
 * value:   u8 type (0 null, 1 string, 2 int, 3 double, 4 bool)
 *          string: u32 len (<= IQDB_META_MAX_STR), bytes
 *          int: i64; double: f64 bits (never NaN); bool: u8 0 or 1
 * meta:    u32 count (<= IQDB_META_MAX_ENTRIES), then count entries of
 *          u16 key len (1..IQDB_META_MAX_KEY), key bytes (no NUL), value;
 *          keys strictly ascending (bytewise), so each map has one
 *          encoding
 * batch:   u8 op (1 = upsert, 2 = delete), u32 dim, u32 n, then n records
 *          upsert: id, u8 has_meta (0/1), [meta], dim f32 (finite)
 *          delete: id
 */
#include "config.h"

#include <math.h>
#include <string.h>

#include "iqdb_int.h"
#include "serial_int.h"

/* ---- writer ------------------------------------------------------------ */

void iqdb__buf_init(iqdb_buf *b)
{
    memset(b, 0, sizeof *b);
}

void iqdb__buf_free(iqdb_buf *b)
{
    iqdb__free(b->p);
    memset(b, 0, sizeof *b);
}

void iqdb__buf_put(iqdb_buf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (n > SIZE_MAX - b->len) {
        b->oom = 1;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        unsigned char *p = iqdb__realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

void iqdb__buf_u8(iqdb_buf *b, uint8_t v)
{
    iqdb__buf_put(b, &v, 1);
}

void iqdb__buf_u16(iqdb_buf *b, uint16_t v)
{
    unsigned char x[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    iqdb__buf_put(b, x, 2);
}

void iqdb__buf_u32(iqdb_buf *b, uint32_t v)
{
    unsigned char x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    iqdb__buf_put(b, x, 4);
}

void iqdb__buf_u64(iqdb_buf *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    iqdb__buf_put(b, x, 8);
}

void iqdb__buf_f32s(iqdb_buf *b, const float *v, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* The file order is the memory order: one copy per vector. */
    if (n <= SIZE_MAX / 4)
        iqdb__buf_put(b, v, n * 4);
    else
        b->oom = 1;
#else
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        iqdb__buf_u32(b, u);
    }
#endif
}

/* ---- reader ------------------------------------------------------------ */

void iqdb__rd_init(iqdb_rd *r, const void *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->off = 0;
}

int iqdb__rd_get(iqdb_rd *r, void *dst, size_t n)
{
    if (n > r->len - r->off)
        return -1;
    memcpy(dst, r->p + r->off, n);
    r->off += n;
    return 0;
}

int iqdb__rd_u8(iqdb_rd *r, uint8_t *v)
{
    return iqdb__rd_get(r, v, 1);
}

int iqdb__rd_u16(iqdb_rd *r, uint16_t *v)
{
    unsigned char x[2];
    if (iqdb__rd_get(r, x, 2) != 0)
        return -1;
    *v = (uint16_t)(x[0] | (x[1] << 8));
    return 0;
}

int iqdb__rd_u32(iqdb_rd *r, uint32_t *v)
{
    unsigned char x[4];
    if (iqdb__rd_get(r, x, 4) != 0)
        return -1;
    *v = (uint32_t)x[0] | (uint32_t)x[1] << 8 | (uint32_t)x[2] << 16 |
         (uint32_t)x[3] << 24;
    return 0;
}

int iqdb__rd_u64(iqdb_rd *r, uint64_t *v)
{
    uint32_t lo, hi;
    if (iqdb__rd_u32(r, &lo) != 0 || iqdb__rd_u32(r, &hi) != 0)
        return -1;
    *v = (uint64_t)hi << 32 | lo;
    return 0;
}

/* ---- ids and metadata ---------------------------------------------------- */

void iqdb__enc_id(iqdb_buf *b, iqdb_id id)
{
    iqdb__buf_u8(b, (uint8_t)id.kind);
    if (id.kind == IQDB_ID_U64) {
        iqdb__buf_u64(b, id.v.u64);
    } else {
        iqdb__buf_u32(b, id.len);
        iqdb__buf_put(b, id.v.bytes, id.len);
    }
}

/* Decodes an id borrowing its bytes from the reader's buffer. */
static int dec_id_view(iqdb_rd *r, iqdb_id *id, const char **why)
{
    uint8_t kind;
    if (iqdb__rd_u8(r, &kind) != 0)
        return *why = "truncated id", -1;
    if (kind == IQDB_ID_U64) {
        uint64_t v;
        if (iqdb__rd_u64(r, &v) != 0)
            return *why = "truncated id", -1;
        *id = iqdb_id_u64(v);
        return 0;
    }
    uint32_t len;
    if (kind != IQDB_ID_BYTES)
        return *why = "bad id kind", -1;
    if (iqdb__rd_u32(r, &len) != 0)
        return *why = "truncated id", -1;
    if (len == 0 || len > IQDB_ID_MAX_BYTES)
        return *why = "id length out of range", -1;
    if (len > r->len - r->off)
        return *why = "truncated id", -1;
    *id = iqdb_id_bytes(r->p + r->off, len);
    r->off += len;
    return 0;
}

void iqdb__enc_meta(iqdb_buf *b, const iqdb_meta *m)
{
    size_t n = iqdb_meta_count(m);
    iqdb__buf_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        const char *key;
        iqdb_value v;
        iqdb_meta_at(m, i, &key, &v);
        size_t kl = strlen(key);
        iqdb__buf_u16(b, (uint16_t)kl);
        iqdb__buf_put(b, key, kl);
        iqdb__buf_u8(b, (uint8_t)v.type);
        switch (v.type) {
        case IQDB_TYPE_STRING:
            iqdb__buf_u32(b, (uint32_t)v.len);
            iqdb__buf_put(b, v.v.s, v.len);
            break;
        case IQDB_TYPE_INT:
            iqdb__buf_u64(b, (uint64_t)v.v.i);
            break;
        case IQDB_TYPE_DOUBLE: {
            uint64_t u;
            memcpy(&u, &v.v.d, 8);
            iqdb__buf_u64(b, u);
            break;
        }
        case IQDB_TYPE_BOOL:
            iqdb__buf_u8(b, v.v.b ? 1 : 0);
            break;
        default:
            break;
        }
    }
}

static int dec_value(iqdb_rd *r, iqdb_value *v, const char **why)
{
    uint8_t type;
    if (iqdb__rd_u8(r, &type) != 0)
        return *why = "truncated value", -1;
    switch (type) {
    case IQDB_TYPE_NULL:
        *v = iqdb_value_null();
        return 0;
    case IQDB_TYPE_STRING: {
        uint32_t len;
        if (iqdb__rd_u32(r, &len) != 0 || len > r->len - r->off)
            return *why = "truncated string", -1;
        if (len > IQDB_META_MAX_STR)
            return *why = "string too long", -1;
        *v = iqdb_value_strn((const char *)r->p + r->off, len);
        r->off += len;
        return 0;
    }
    case IQDB_TYPE_INT: {
        uint64_t u;
        if (iqdb__rd_u64(r, &u) != 0)
            return *why = "truncated int", -1;
        *v = iqdb_value_int((int64_t)u);
        return 0;
    }
    case IQDB_TYPE_DOUBLE: {
        uint64_t u;
        double d;
        if (iqdb__rd_u64(r, &u) != 0)
            return *why = "truncated double", -1;
        memcpy(&d, &u, 8);
        if (isnan(d))
            return *why = "NaN double", -1;
        *v = iqdb_value_double(d);
        return 0;
    }
    case IQDB_TYPE_BOOL: {
        uint8_t x;
        if (iqdb__rd_u8(r, &x) != 0 || x > 1)
            return *why = "bad bool", -1;
        *v = iqdb_value_bool(x);
        return 0;
    }
    default:
        return *why = "bad value type", -1;
    }
}

int iqdb__dec_meta(iqdb_rd *r, iqdb_meta **out, const char **why)
{
    uint32_t n;
    char key[IQDB_META_MAX_KEY + 1], prev[IQDB_META_MAX_KEY + 1];
    size_t prev_len = 0;
    *out = NULL;
    if (iqdb__rd_u32(r, &n) != 0)
        return *why = "truncated metadata", IQDB_ECORRUPT;
    /* Each entry takes at least 4 bytes: bound n by what is left. */
    if (n > IQDB_META_MAX_ENTRIES || n > (r->len - r->off) / 4)
        return *why = "metadata count out of range", IQDB_ECORRUPT;
    iqdb_meta *m = iqdb_meta_new();
    if (m == NULL)
        return *why = "out of memory", IQDB_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        uint16_t kl;
        iqdb_value v;
        if (iqdb__rd_u16(r, &kl) != 0 || kl == 0 || kl > IQDB_META_MAX_KEY ||
            iqdb__rd_get(r, key, kl) != 0) {
            *why = "bad metadata key";
            goto corrupt;
        }
        key[kl] = '\0';
        if (memchr(key, '\0', kl) != NULL) {
            *why = "metadata key holds NUL";
            goto corrupt;
        }
        if (i > 0) {
            size_t c = kl < prev_len ? kl : prev_len;
            int d = memcmp(prev, key, c);
            if (d > 0 || (d == 0 && prev_len >= kl)) {
                *why = "metadata keys out of order";
                goto corrupt;
            }
        }
        memcpy(prev, key, kl);
        prev_len = kl;
        if (dec_value(r, &v, why) != 0)
            goto corrupt;
        int rc = iqdb_meta_set(m, key, v);
        if (rc != 0) {
            iqdb_meta_free(m);
            *why = rc == IQDB_ENOMEM ? "out of memory" : "bad metadata";
            return rc == IQDB_ENOMEM ? IQDB_ENOMEM : IQDB_ECORRUPT;
        }
    }
    *out = m;
    return 0;
corrupt:
    iqdb_meta_free(m);
    return IQDB_ECORRUPT;
}

/* ---- record batches ------------------------------------------------------- */

void iqdb__enc_upserts(iqdb_buf *b, const iqdb_record *recs, size_t n,
                       uint32_t dim, uint64_t *at)
{
    iqdb__buf_u8(b, IQDB_OP_UPSERT);
    iqdb__buf_u32(b, dim);
    iqdb__buf_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        iqdb__enc_id(b, recs[i].id);
        iqdb__buf_u8(b, recs[i].meta != NULL);
        if (recs[i].meta != NULL)
            iqdb__enc_meta(b, recs[i].meta);
        if (at != NULL)
            at[i] = b->len;
        iqdb__buf_f32s(b, recs[i].vector, dim);
    }
}

void iqdb__enc_delete(iqdb_buf *b, iqdb_id id)
{
    iqdb__buf_u8(b, IQDB_OP_DELETE);
    iqdb__buf_u32(b, 0);
    iqdb__buf_u32(b, 1);
    iqdb__enc_id(b, id);
}

void iqdb__batch_free(iqdb_batch *bt)
{
    for (size_t i = 0; i < bt->n; i++)
        iqdb_meta_free((iqdb_meta *)bt->recs[i].meta);
    iqdb__free(bt->recs);
    iqdb__free(bt->vecs);
    iqdb__free(bt->vec_at);
    memset(bt, 0, sizeof *bt);
}

static int dec_record(iqdb_rd *r, iqdb_batch *bt, size_t i, uint32_t dim,
                      const char **why)
{
    iqdb_record *rec = &bt->recs[i];
    if (dec_id_view(r, &rec->id, why) != 0)
        return IQDB_ECORRUPT;
    if (bt->op == IQDB_OP_DELETE)
        return 0;
    uint8_t has_meta;
    if (iqdb__rd_u8(r, &has_meta) != 0 || has_meta > 1)
        return *why = "bad metadata flag", IQDB_ECORRUPT;
    if (has_meta) {
        iqdb_meta *m;
        int rc = iqdb__dec_meta(r, &m, why);
        if (rc != 0)
            return rc;
        rec->meta = m;
    }
    float *v = bt->vecs + i * (size_t)dim;
    bt->vec_at[i] = r->off;
    for (uint32_t j = 0; j < dim; j++) {
        uint32_t u;
        if (iqdb__rd_u32(r, &u) != 0)
            return *why = "truncated vector", IQDB_ECORRUPT;
        memcpy(&v[j], &u, 4);
        if (!isfinite(v[j]))
            return *why = "non-finite vector element", IQDB_ECORRUPT;
    }
    rec->vector = v;
    return 0;
}

int iqdb__dec_batch(const void *p, size_t len, uint32_t want_dim,
                    iqdb_batch *bt, const char **why)
{
    iqdb_rd r;
    uint8_t op;
    uint32_t dim, n;
    memset(bt, 0, sizeof *bt);
    iqdb__rd_init(&r, p, len);
    if (iqdb__rd_u8(&r, &op) != 0 || iqdb__rd_u32(&r, &dim) != 0 ||
        iqdb__rd_u32(&r, &n) != 0)
        return *why = "truncated batch header", IQDB_ECORRUPT;
    if (op != IQDB_OP_UPSERT && op != IQDB_OP_DELETE)
        return *why = "unknown operation", IQDB_ECORRUPT;
    if (op == IQDB_OP_UPSERT && dim != want_dim)
        return *why = "batch dimension differs from the database's",
               IQDB_ECORRUPT;
    if (op == IQDB_OP_DELETE && (dim != 0 || n != 1))
        return *why = "a delete frame holds one id and dimension 0",
               IQDB_ECORRUPT;
    /* Bound n by the bytes left over the smallest record: an id takes 6
     * bytes at least (a 1-byte string: kind, u32 length, the byte), an
     * upsert adds its metadata flag and dim floats (dim is the
     * database's, at most IQDB_MAX_DIM: no overflow). So records are
     * allocated only as far as the frame's bytes could hold them. */
    size_t left = len - r.off;
    size_t minrec = 6 + (op == IQDB_OP_UPSERT ? 1 + (size_t)dim * 4 : 0);
    if (n == 0 || n > left / minrec)
        return *why = "record count out of range", IQDB_ECORRUPT;
    size_t vbytes = 0;
    if (op == IQDB_OP_UPSERT &&
        (iqdb__mul_size(n, (size_t)dim * 4, &vbytes) != 0 || vbytes > left))
        return *why = "vector block larger than the frame", IQDB_ECORRUPT;
    bt->op = op;
    bt->dim = dim;
    bt->recs = iqdb__calloc(n, sizeof *bt->recs);
    bt->vecs = vbytes ? iqdb__malloc(vbytes) : NULL;
    bt->vec_at = vbytes ? iqdb__malloc(n * sizeof *bt->vec_at) : NULL;
    if (bt->recs == NULL || (vbytes && (bt->vecs == NULL || bt->vec_at == NULL))) {
        iqdb__batch_free(bt);
        return *why = "out of memory", IQDB_ENOMEM;
    }
    bt->n = n;
    for (size_t i = 0; i < n; i++) {
        int rc = dec_record(&r, bt, i, dim, why);
        if (rc != 0) {
            iqdb__batch_free(bt);
            return rc;
        }
    }
    if (r.off != len) {
        iqdb__batch_free(bt);
        return *why = "trailing bytes after the batch", IQDB_ECORRUPT;
    }
    return 0;
}
