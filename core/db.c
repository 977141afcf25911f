/*
 * core/db.c - the database handle: open, close and record writes.
 *
 * A write validates everything first, reserves every byte it will need,
 * writes vectors into fresh slots, hands those slots to the index, and
 * only when the index accepted them publishes the records and retires
 * the slots they replace. Any failure before publication gives the fresh
 * slots back, so the store and the index are exactly as before.
 */
#include "config.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "iqdb_int.h"
#include "kernels_int.h"

/* ---- store view handed to the index plugin ---------------------------- */

static const float *view_vector(void *ctx, uint64_t slot)
{
    const iqdb *db = ctx;
    return iqdb__arena_at(&db->store.arena, slot);
}

static void view_layout(void *ctx, iqdb_arena_layout *out)
{
    const iqdb *db = ctx;
    out->struct_size = sizeof *out;
    out->chunk_shift = db->store.arena.chunk_shift;
    out->stride = db->store.arena.stride;
    out->nchunks = db->store.arena.nchunks;
    out->chunks = (const float *const *)db->store.arena.chunks;
    out->slot_limit = db->store.limit;
}

static uint64_t view_order(void *ctx, uint64_t slot)
{
    const iqdb *db = ctx;
    return db->store.order[slot];
}

int iqdb__check_vector(const void *handle, const float *v, uint32_t dim,
                       uint32_t want, const char *what)
{
    if (v == NULL)
        return iqdb__set_error(handle, IQDB_EINVAL, "%s: NULL vector", what);
    if (dim == 0)
        return iqdb__set_error(handle, IQDB_EEMPTY, "%s: empty vector",
                               what);
    if (dim != want)
        return iqdb__set_error(handle, IQDB_EDIM,
                               "%s: vector has dimension %u, the database "
                               "has %u",
                               what, dim, want);
    /* A branch-free pass, two elements per 64-bit word: an element is NaN
     * or infinite when its exponent bits are all ones, and exactly then
     * does adding 1 to its exponent carry into its sign bit (no carry
     * crosses into the other element). Only a failing vector pays the
     * search for the element to name. */
    uint64_t bad = 0;
    uint32_t k = 0;
#if defined(__SSE2__)
    /* The same test four lanes at a time (x86-64 always has SSE2; the
     * compiler does not vectorise the loop below at -O2): the caller's
     * vectors are usually cold, and this keeps the pass at memory
     * speed. */
    const __m128i expo = _mm_set1_epi32(0x7f800000);
    const __m128i one = _mm_set1_epi32(0x00800000);
    __m128i acc = _mm_setzero_si128();
    for (; k + 8 <= dim; k += 8) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)&v[k]);
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)&v[k + 4]);
        acc = _mm_or_si128(acc, _mm_add_epi32(_mm_and_si128(a, expo), one));
        acc = _mm_or_si128(acc, _mm_add_epi32(_mm_and_si128(b, expo), one));
    }
    bad = (uint64_t)_mm_movemask_ps(_mm_castsi128_ps(acc));
#endif
    for (; k + 2 <= dim; k += 2) {
        uint64_t u;
        memcpy(&u, &v[k], 8);
        bad |= ((u & 0x7f8000007f800000ull) + 0x0080000000800000ull) &
               0x8000000080000000ull;
    }
    if (k < dim) {
        uint32_t u;
        memcpy(&u, &v[k], 4);
        bad |= ((u & 0x7f800000u) + 0x00800000u) & 0x80000000u;
    }
    if (bad == 0)
        return 0;
    for (uint32_t i = 0; i < dim; i++)
        if (!isfinite(v[i]))
            return iqdb__set_error(handle, IQDB_ENONFINITE,
                                   "%s: element %u is %s", what, i,
                                   isnan(v[i]) ? "NaN" : "infinite");
    return 0;
}

/* ---- open and close ------------------------------------------------- */

static int check_config(const iqdb_config *cfg)
{
    if (cfg->dim == 0 || cfg->dim > IQDB_MAX_DIM)
        return iqdb__set_error(NULL, IQDB_EINVAL,
                               "config: dim %u out of range (1 to %u)",
                               cfg->dim, IQDB_MAX_DIM);
    if (iqdb_metric_name((iqdb_metric)cfg->metric) == NULL)
        return iqdb__set_error(NULL, IQDB_EMETRIC,
                               "config: unknown metric value %d",
                               cfg->metric);
    return 0;
}

static int copy_params(iqdb *db, const iqdb_config *cfg)
{
    size_t len = 1;
    for (size_t i = 0; i < cfg->nparams; i++) {
        if (iqdb__kv_set(&db->params, &db->nparams, cfg->params[i].key,
                         cfg->params[i].value) != 0)
            return iqdb__set_error(NULL, IQDB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < db->nparams; i++)
        len += strlen(db->params[i].key) + strlen(db->params[i].value) + 2;
    if ((db->params_text = iqdb__malloc(len)) == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "out of memory");
    char *p = db->params_text;
    *p = '\0';
    for (size_t i = 0; i < db->nparams; i++)
        p += sprintf(p, "%s%s=%s", i ? "," : "", db->params[i].key,
                     db->params[i].value);
    return 0;
}

/* What an index instance of db is created with: the construction
 * parameters, none for flat standing in for an absent plugin. */
static iqdb_index_init index_init(iqdb *db)
{
    iqdb_index_init init = {IQDB_ABI_VERSION,
                            sizeof init,
                            iqdb__host(),
                            db,
                            &db->view,
                            db->dim,
                            db->metric,
                            db->stands_in ? NULL : db->params,
                            db->stands_in ? 0 : db->nparams};
    return init;
}

/* The index plugin cfg names; when it is absent and cfg->stand_in allows,
 * flat, which every installation has, searching exactly meanwhile. */
static int find_index(iqdb *db, const iqdb_config *cfg)
{
    int r = iqdb__find_index(cfg->index, cfg->dirs, cfg->ndirs, &db->ops);
    if (r != IQDB_ENOPLUGIN || !cfg->stand_in || cfg->index == NULL ||
        strcmp(cfg->index, "flat") == 0)
        return r;
    char why[512];
    snprintf(why, sizeof why, "%s", iqdb__last_error());
    if (iqdb__find_index("flat", cfg->dirs, cfg->ndirs, &db->ops) != 0)
        return iqdb__set_error(NULL, IQDB_ENOPLUGIN,
                               "%s (and the flat index, which would stand "
                               "in for it, is missing too)",
                               why);
    if ((db->stands_in = iqdb__strdup(cfg->index)) == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
    iqdb__host()->log(IQDB_LOG_WARN, NULL,
                      "%s: the flat index stands in, searching exactly, "
                      "until the plugin is installed; the database keeps "
                      "its index type '%s' and parameters",
                      why, cfg->index);
    return 0;
}

static int create_index(iqdb *db, const iqdb_config *cfg)
{
    int r = find_index(db, cfg);
    if (r != 0)
        return r;
    db->view = (iqdb_store_view){IQDB_ABI_VERSION, sizeof db->view, db,
                                 db->dim,          db->metric,      view_vector,
                                 view_layout,      view_order};
    iqdb_index_init init = index_init(db);
    r = db->ops->create(&init, &db->index);
    if (r != 0) {
        /* The plugin's message was tagged with db; open errors go on NULL. */
        iqdb__retag_error(db, NULL);
        if (r > 0)
            r = IQDB_EINTERNAL;
        return r;
    }
    return 0;
}

int iqdb_open_memory(const iqdb_config *cfg, iqdb **out)
{
    if (cfg == NULL || out == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "open: NULL argument");
    return iqdb__db_new(cfg, out);
}

int iqdb__db_new(const iqdb_config *cfg, iqdb **out)
{
    int r;
    if ((r = check_config(cfg)) != 0)
        return r;
    iqdb *db = iqdb__calloc(1, sizeof *db);
    if (db == NULL)
        return iqdb__set_error(NULL, IQDB_ENOMEM, "open: out of memory");
    db->dim = cfg->dim;
    db->metric = cfg->metric;
    db->kernels = iqdb__host()->kernels;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* Writers must not starve behind a steady stream of searches. */
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    r = pthread_rwlock_init(&db->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (r != 0) {
        iqdb__free(db);
        return iqdb__set_error(NULL, IQDB_ENOMEM, "open: no lock");
    }
    iqdb__store_init(&db->store, db->dim);
    if ((r = copy_params(db, cfg)) != 0 || (r = create_index(db, cfg)) != 0)
        goto fail;
    *out = db;
    return 0;
fail:
    iqdb__kv_free(db->params, db->nparams);
    iqdb__free(db->params_text);
    iqdb__free(db->stands_in);
    iqdb__store_destroy(&db->store);
    pthread_rwlock_destroy(&db->lock);
    iqdb__free(db);
    return r;
}

int iqdb_close(iqdb *db)
{
    int r = 0;
    if (db == NULL)
        return 0;
    if (db->dur != NULL)
        r = iqdb__durable_close(db);
    if (db->index != NULL)
        db->ops->destroy(db->index);
    iqdb__kv_free(db->params, db->nparams);
    iqdb__free(db->params_text);
    iqdb__free(db->stands_in);
    iqdb__store_destroy(&db->store);
    pthread_rwlock_destroy(&db->lock);
    iqdb__free(db);
    return r;
}

uint32_t iqdb_dim(const iqdb *db)
{
    return db ? db->dim : 0;
}

iqdb_metric iqdb_metric_of(const iqdb *db)
{
    return db ? (iqdb_metric)db->metric : (iqdb_metric)0;
}

size_t iqdb_count(const iqdb *db)
{
    if (db == NULL)
        return 0;
    iqdb *w = (iqdb *)db;
    pthread_rwlock_rdlock(&w->lock);
    size_t n = (size_t)db->store.count;
    pthread_rwlock_unlock(&w->lock);
    return n;
}

const char *iqdb_index_name(const iqdb *db)
{
    return db ? db->ops->name : NULL;
}

int iqdb_stat(iqdb *db, iqdb_stats *out)
{
    if (db == NULL || out == NULL)
        return iqdb__set_error(db, IQDB_EINVAL, "stat: NULL argument");
    memset(out, 0, sizeof *out);
    out->dim = db->dim;
    out->metric = (iqdb_metric)db->metric;
    out->index = db->ops->name;
    out->index_params = db->stands_in ? "" : db->params_text;
    pthread_rwlock_rdlock(&db->lock);
    out->count = db->store.count;
    out->vector_bytes = iqdb__arena_memory(&db->store.arena);
    if (db->ops->stats != NULL) {
        iqdb_index_stats st;
        memset(&st, 0, sizeof st);
        st.struct_size = sizeof st;
        if (db->ops->stats(db->index, &st) == 0)
            out->index_bytes = st.memory_bytes;
    }
    pthread_rwlock_unlock(&db->lock);
    if (db->dur == NULL)
        return 0;
    out->durable = 1;
    return iqdb__durable_stat(db, out);
}

int iqdb_foreach(iqdb *db, iqdb_foreach_fn fn, void *ctx)
{
    if (db == NULL || fn == NULL)
        return iqdb__set_error(db, IQDB_EINVAL, "foreach: NULL argument");
    int r = 0;
    pthread_rwlock_rdlock(&db->lock);
    const iqdb_store *s = &db->store;
    for (uint64_t slot = 0; slot < s->limit && r == 0; slot++) {
        if (!iqdb__store_is_live(s, slot))
            continue;
        iqdb_record rec = {s->ids[slot], iqdb__arena_at(&s->arena, slot),
                           s->meta[slot]};
        r = fn(ctx, &rec);
    }
    pthread_rwlock_unlock(&db->lock);
    return r;
}

/* ---- writes ----------------------------------------------------------- */

/* One record prepared for publication: its own copies of id and meta. */
typedef struct prepared {
    iqdb_id id;
    uint64_t hash;
    iqdb_meta *meta;
    uint64_t slot; /* fresh slot */
    const float *vec;
    size_t src;    /* index in the caller's batch */
} prepared;

static void free_prepared(prepared *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        iqdb__id_free(&p[i].id);
        iqdb_meta_free(p[i].meta);
    }
}

/* Drop earlier duplicates of an id within a batch: the last one wins. */
static size_t dedupe(prepared *p, size_t n)
{
    if (n < 2)
        return n;
    iqdb_idmap m;
    iqdb_id *ids = iqdb__malloc(n * sizeof *ids);
    iqdb__idmap_init(&m);
    if (ids == NULL || iqdb__idmap_reserve(&m, n) != 0) {
        /* Quadratic fallback when memory is short. */
        iqdb__free(ids);
        iqdb__idmap_destroy(&m);
        size_t out = 0;
        for (size_t i = 0; i < n; i++) {
            size_t j = i + 1;
            while (j < n && !iqdb_id_equal(p[i].id, p[j].id))
                j++;
            if (j < n)
                free_prepared(&p[i], 1);
            else
                p[out++] = p[i];
        }
        return out;
    }
    /* Walk backwards: the first sighting is the last occurrence. */
    size_t kept = 0;
    for (size_t i = n; i-- > 0;) {
        uint64_t dummy;
        ids[i] = p[i].id;
        if (iqdb__idmap_find(&m, ids, p[i].id, p[i].hash, &dummy)) {
            free_prepared(&p[i], 1);
            p[i].id.kind = 0;
            continue;
        }
        iqdb__idmap_put(&m, ids, p[i].id, p[i].hash, i);
        kept++;
    }
    size_t out = 0;
    for (size_t i = 0; i < n; i++)
        if (p[i].id.kind != 0)
            p[out++] = p[i];
    iqdb__free(ids);
    iqdb__idmap_destroy(&m);
    return out;
}

static int validate_record(iqdb *db, const iqdb_record *r, uint32_t dim,
                           size_t i, size_t n)
{
    char what[64];
    if (n > 1)
        snprintf(what, sizeof what, "upsert: record %zu", i);
    else
        snprintf(what, sizeof what, "upsert");
    int rc = iqdb__id_check(r->id);
    if (rc != 0)
        return iqdb__set_error(db, rc,
                               "%s: byte-string id must be 1 to %u bytes "
                               "(got kind %u, %u bytes)",
                               what, IQDB_ID_MAX_BYTES, r->id.kind, r->id.len);
    return iqdb__check_vector(db, r->vector, dim, db->dim, what);
}

static int prepare(iqdb *db, const iqdb_record *recs, size_t n, prepared *p)
{
    for (size_t i = 0; i < n; i++) {
        p[i].vec = recs[i].vector;
        p[i].src = i;
        if (iqdb__id_copy(recs[i].id, &p[i].id) != 0)
            goto oom;
        p[i].hash = iqdb__id_hash(p[i].id);
        if (recs[i].meta != NULL &&
            (p[i].meta = iqdb_meta_clone(recs[i].meta)) == NULL) {
            iqdb__id_free(&p[i].id);
            goto oom;
        }
        continue;
oom:
        free_prepared(p, i);
        return iqdb__set_error(db, IQDB_ENOMEM,
                               "upsert: out of memory copying record %zu", i);
    }
    return 0;
}

/* Remove slots from the index. An index without remove (IQDB_CAP_REMOVE
 * unset) is rebuilt instead: a fresh instance gets every live slot but
 * the removed ones, plus `extra` (fresh slots not yet published). The old
 * instance is kept if the rebuild fails. */
static int index_remove(iqdb *db, const uint64_t *slots, size_t n,
                        const uint64_t *extra, size_t nextra)
{
    if (db->ops->remove != NULL)
        return db->ops->remove(db->index, slots, n);
    const iqdb_store *s = &db->store;
    uint64_t *keep = iqdb__malloc(((size_t)s->count + nextra + 1) *
                                  sizeof *keep);
    if (keep == NULL)
        return IQDB_ENOMEM;
    size_t nk = 0;
    for (uint64_t i = 0; i < s->limit; i++) {
        if (!iqdb__store_is_live(s, i))
            continue;
        size_t j = 0;
        while (j < n && slots[j] != i)
            j++;
        if (j == n)
            keep[nk++] = i;
    }
    for (size_t i = 0; i < nextra; i++)
        keep[nk++] = extra[i];
    iqdb_index_init init = index_init(db);
    void *fresh = NULL;
    int r = db->ops->create(&init, &fresh);
    if (r == 0 && nk > 0)
        r = db->ops->add(fresh, keep, nk);
    iqdb__free(keep);
    if (r != 0) {
        if (fresh != NULL)
            db->ops->destroy(fresh);
        return r;
    }
    db->ops->destroy(db->index);
    db->index = fresh;
    return 0;
}

/* The write itself, under the write lock. */
static int apply(iqdb *db, prepared *p, size_t n, const uint64_t *homes)
{
    iqdb_store *s = &db->store;
    int r;
    uint64_t *fresh = iqdb__malloc(n * sizeof *fresh);
    uint64_t *old = iqdb__malloc(n * sizeof *old);
    if (fresh == NULL || old == NULL || iqdb__store_reserve(s, n) != 0) {
        r = iqdb__set_error(db, IQDB_ENOMEM, "upsert: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        p[i].slot = fresh[i] = iqdb__store_take(s);
        memcpy(iqdb__arena_at(&s->arena, p[i].slot), p[i].vec,
               (size_t)db->dim * sizeof(float));
        s->order[p[i].slot] = s->next_order + i;
        s->home[p[i].slot] = homes != NULL ? homes[p[i].src] : 0;
    }
    if ((r = db->ops->add(db->index, fresh, n)) != 0)
        goto fail_add;
    size_t nold = 0;
    for (size_t i = 0; i < n; i++)
        if (iqdb__store_find(s, p[i].id, p[i].hash, &old[nold]))
            nold++;
    if (nold > 0 && (r = index_remove(db, old, nold, fresh, n)) != 0) {
        index_remove(db, fresh, n, NULL, 0);
        goto fail_add;
    }
    for (size_t i = 0; i < n; i++) {
        iqdb__store_publish(s, p[i].slot, p[i].id, p[i].hash, p[i].meta);
        p[i].id.kind = 0;
        p[i].meta = NULL;
    }
    for (size_t i = 0; i < nold; i++)
        iqdb__store_release(s, old[i]);
    goto out;
fail_add:
    for (size_t i = n; i-- > 0;)
        iqdb__store_untake(s, fresh[i]);
    if (r > 0)
        r = IQDB_EINTERNAL;
    if (iqdb_errmsg(db)[0] == '\0')
        iqdb__set_error(db, r, "upsert: index '%s' failed: %s",
                        db->ops->name, iqdb_strerror(r));
out:
    iqdb__free(fresh);
    iqdb__free(old);
    return r;
}

int iqdb__apply_upserts(iqdb *db, const iqdb_record *recs, size_t n,
                        const uint64_t *homes)
{
    int r;
    if (n > SIZE_MAX / sizeof(prepared))
        return iqdb__set_error(db, IQDB_ENOMEM, "upsert: batch too large");
    prepared *p = iqdb__calloc(n, sizeof *p);
    if (p == NULL)
        return iqdb__set_error(db, IQDB_ENOMEM, "upsert: out of memory");
    if ((r = prepare(db, recs, n, p)) != 0) {
        iqdb__free(p);
        return r;
    }
    size_t m = dedupe(p, n);
    iqdb__set_error(db, 0, "%s", "");
    pthread_rwlock_wrlock(&db->lock);
    r = apply(db, p, m, homes);
    pthread_rwlock_unlock(&db->lock);
    free_prepared(p, m);
    iqdb__free(p);
    return r;
}

int iqdb_upsert_batch(iqdb *db, const iqdb_record *recs, size_t n,
                      uint32_t dim)
{
    int r;
    if (db == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "upsert: NULL database");
    if (n == 0)
        return 0;
    if (recs == NULL)
        return iqdb__set_error(db, IQDB_EINVAL, "upsert: NULL records");
    for (size_t i = 0; i < n; i++)
        if ((r = validate_record(db, &recs[i], dim, i, n)) != 0)
            return r;
    if (db->dur != NULL)
        return iqdb__durable_upsert(db, recs, n, dim);
    return iqdb__apply_upserts(db, recs, n, NULL);
}

int iqdb_upsert(iqdb *db, iqdb_id id, const float *vec, uint32_t dim,
                const iqdb_meta *meta)
{
    iqdb_record rec = {id, vec, meta};
    return iqdb_upsert_batch(db, &rec, 1, dim);
}

int iqdb_get(iqdb *db, iqdb_id id, float *vec_out, uint32_t dim,
             iqdb_meta **meta_out)
{
    if (db == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "get: NULL database");
    if (iqdb__id_check(id) != 0)
        return iqdb__set_error(db, IQDB_EID, "get: invalid id");
    if (vec_out != NULL && dim != db->dim)
        return iqdb__set_error(db, IQDB_EDIM,
                               "get: buffer has dimension %u, the database "
                               "has %u", dim, db->dim);
    uint64_t slot;
    int r = 0;
    pthread_rwlock_rdlock(&db->lock);
    if (!iqdb__store_find(&db->store, id, iqdb__id_hash(id), &slot)) {
        r = iqdb__set_error(db, IQDB_ENOTFOUND, "get: no such record");
        goto out;
    }
    if (meta_out != NULL) {
        const iqdb_meta *m = db->store.meta[slot];
        *meta_out = NULL;
        if (m != NULL && (*meta_out = iqdb_meta_clone(m)) == NULL) {
            r = iqdb__set_error(db, IQDB_ENOMEM, "get: out of memory");
            goto out;
        }
    }
    if (vec_out != NULL)
        memcpy(vec_out, iqdb__arena_at(&db->store.arena, slot),
               (size_t)db->dim * sizeof(float));
out:
    pthread_rwlock_unlock(&db->lock);
    return r;
}

int iqdb__apply_delete(iqdb *db, iqdb_id id, int *was_present)
{
    uint64_t slot;
    int r = 0, present = 0;
    pthread_rwlock_wrlock(&db->lock);
    if (iqdb__store_find(&db->store, id, iqdb__id_hash(id), &slot)) {
        r = index_remove(db, &slot, 1, NULL, 0);
        if (r == 0) {
            iqdb__store_release(&db->store, slot);
            present = 1;
        } else if (r > 0) {
            r = IQDB_EINTERNAL;
        }
    }
    pthread_rwlock_unlock(&db->lock);
    if (r != 0)
        return r;
    if (was_present != NULL)
        *was_present = present;
    return 0;
}

int iqdb_delete(iqdb *db, iqdb_id id, int *was_present)
{
    if (db == NULL)
        return iqdb__set_error(NULL, IQDB_EINVAL, "delete: NULL database");
    if (iqdb__id_check(id) != 0)
        return iqdb__set_error(db, IQDB_EID, "delete: invalid id");
    if (db->dur != NULL)
        return iqdb__durable_delete(db, id, was_present);
    return iqdb__apply_delete(db, id, was_present);
}
