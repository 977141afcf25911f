/*
 * core/store.c - the authoritative record store.
 *
 * Records live in dense slots: vector in the arena, id, metadata and
 * insertion order in per-slot arrays, liveness in a bitmap, freed slots
 * on a stack for reuse. Writers reserve room first (store_reserve), so
 * the steps that follow cannot fail; that is what makes batch upserts all
 * or nothing.
 */
#include "config.h"

#include <string.h>

#include "iqdb_int.h"

int iqdb__id_check(iqdb_id id)
{
    if (id.kind == IQDB_ID_U64)
        return 0;
    if (id.kind != IQDB_ID_BYTES)
        return IQDB_EID;
    if (id.len == 0 || id.len > IQDB_ID_MAX_BYTES || id.v.bytes == NULL)
        return IQDB_EID;
    return 0;
}

int iqdb__id_copy(iqdb_id id, iqdb_id *out)
{
    *out = id;
    if (id.kind == IQDB_ID_BYTES) {
        void *b = iqdb__memdup(id.v.bytes, id.len);
        if (b == NULL)
            return IQDB_ENOMEM;
        out->v.bytes = b;
    }
    return 0;
}

void iqdb__id_free(iqdb_id *id)
{
    if (id->kind == IQDB_ID_BYTES)
        iqdb__free((void *)id->v.bytes);
    id->kind = 0;
    id->v.bytes = NULL;
}

int iqdb__store_init(iqdb_store *s, uint32_t dim)
{
    memset(s, 0, sizeof *s);
    s->dim = dim;
    iqdb__arena_init(&s->arena, dim);
    iqdb__idmap_init(&s->map);
    return 0;
}

void iqdb__store_destroy(iqdb_store *s)
{
    for (uint64_t i = 0; i < s->limit; i++) {
        if (iqdb__store_is_live(s, i)) {
            iqdb__id_free(&s->ids[i]);
            iqdb_meta_free(s->meta[i]);
        }
    }
    iqdb__free(s->ids);
    iqdb__free(s->meta);
    iqdb__free(s->order);
    iqdb__free(s->home);
    iqdb__free(s->live);
    iqdb__free(s->free_slots);
    iqdb__arena_destroy(&s->arena);
    iqdb__idmap_destroy(&s->map);
    memset(s, 0, sizeof *s);
}

/* Grow one per-slot array from old_cap to cap entries, zeroing the new
 * part. */
static int grow(void **arr, size_t elem, uint64_t old_cap, uint64_t cap)
{
    size_t bytes;
    if (iqdb__mul_size((size_t)cap, elem, &bytes) != 0)
        return IQDB_ENOMEM;
    void *p = iqdb__realloc(*arr, bytes);
    if (p == NULL)
        return IQDB_ENOMEM;
    memset((char *)p + old_cap * elem, 0, (size_t)(cap - old_cap) * elem);
    *arr = p;
    return 0;
}

static int grow_slots(iqdb_store *s, uint64_t need)
{
    /* Double (amortised growth for one-by-one inserts), or take exactly
     * what a large batch needs rather than round it up to a power of
     * two. */
    uint64_t cap = s->cap ? s->cap * 2 : 64;
    if (cap < need)
        cap = need;
    uint64_t words_old = (s->cap + 63) / 64, words = (cap + 63) / 64;
    /* Each array is grown separately; a failure leaves the larger ones in
     * place, which is harmless: cap only moves once all succeeded. */
    if (grow((void **)&s->ids, sizeof *s->ids, s->cap, cap) ||
        grow((void **)&s->meta, sizeof *s->meta, s->cap, cap) ||
        grow((void **)&s->order, sizeof *s->order, s->cap, cap) ||
        grow((void **)&s->home, sizeof *s->home, s->cap, cap) ||
        grow((void **)&s->free_slots, sizeof *s->free_slots, s->cap, cap) ||
        grow((void **)&s->live, sizeof *s->live, words_old, words))
        return IQDB_ENOMEM;
    /* Slots held during a pin sit at the top of free_slots: move them to
     * the new top. */
    if (s->nheld > 0)
        memmove(s->free_slots + cap - s->nheld,
                s->free_slots + s->cap - s->nheld,
                (size_t)s->nheld * sizeof *s->free_slots);
    s->cap = cap;
    return 0;
}

int iqdb__store_reserve(iqdb_store *s, size_t n)
{
    uint64_t fresh = n > s->nfree ? n - s->nfree : 0;
    uint64_t need = s->limit + fresh;
    /* The id map keeps 32-bit slots. */
    if (need < s->limit || need >= IQDB_IDMAP_MAX_SLOT)
        return IQDB_ENOMEM;
    if (need > s->cap && grow_slots(s, need) != 0)
        return IQDB_ENOMEM;
    if (iqdb__arena_reserve(&s->arena, need) != 0)
        return IQDB_ENOMEM;
    return iqdb__idmap_reserve(&s->map, n);
}

uint64_t iqdb__store_take(iqdb_store *s)
{
    if (s->nfree > 0)
        return s->free_slots[--s->nfree];
    return s->limit++;
}

void iqdb__store_untake(iqdb_store *s, uint64_t slot)
{
    s->free_slots[s->nfree++] = slot;
}

void iqdb__store_publish(iqdb_store *s, uint64_t slot, iqdb_id owned_id,
                         uint64_t h, iqdb_meta *meta)
{
    s->ids[slot] = owned_id;
    s->meta[slot] = meta;
    s->order[slot] = s->next_order++;
    s->live[slot >> 6] |= (uint64_t)1 << (slot & 63);
    iqdb__idmap_put(&s->map, s->ids, owned_id, h, slot);
    s->count++;
}

void iqdb__store_release(iqdb_store *s, uint64_t slot)
{
    uint64_t h = iqdb__id_hash(s->ids[slot]);
    uint64_t cur;
    /* A replaced record's id already maps to its new slot: keep that. */
    if (iqdb__idmap_find(&s->map, s->ids, s->ids[slot], h, &cur) &&
        cur == slot)
        iqdb__idmap_del(&s->map, s->ids, s->ids[slot], h);
    iqdb__id_free(&s->ids[slot]);
    iqdb_meta_free(s->meta[slot]);
    s->meta[slot] = NULL;
    s->live[slot >> 6] &= ~((uint64_t)1 << (slot & 63));
    if (s->pinned && slot < s->pin_limit &&
        ((s->pin_live[slot >> 3] >> (slot & 7)) & 1))
        s->free_slots[s->cap - 1 - s->nheld++] = slot;
    else
        s->free_slots[s->nfree++] = slot;
    s->count--;
}

void iqdb__store_pin(iqdb_store *s, const unsigned char *live,
                     uint64_t limit)
{
    s->pinned = 1;
    s->pin_live = live;
    s->pin_limit = limit;
}

void iqdb__store_unpin(iqdb_store *s)
{
    s->pinned = 0;
    s->pin_live = NULL;
    s->pin_limit = 0;
    /* nfree + nheld never exceeds cap, so moving one entry at a time
     * from the top region to the stack never overwrites another. */
    while (s->nheld > 0)
        s->free_slots[s->nfree++] = s->free_slots[s->cap - s->nheld--];
}

int iqdb__store_find(const iqdb_store *s, iqdb_id id, uint64_t h,
                     uint64_t *slot)
{
    return iqdb__idmap_find(&s->map, s->ids, id, h, slot);
}

void iqdb__store_restore(iqdb_store *s, uint64_t slot, iqdb_id owned_id,
                         uint64_t h, iqdb_meta *meta, uint64_t order)
{
    if (slot >= s->limit)
        s->limit = slot + 1;
    s->ids[slot] = owned_id;
    s->meta[slot] = meta;
    s->order[slot] = order;
    s->live[slot >> 6] |= (uint64_t)1 << (slot & 63);
    iqdb__idmap_put(&s->map, s->ids, owned_id, h, slot);
    s->count++;
}

void iqdb__store_finish_restore(iqdb_store *s, uint64_t limit,
                                uint64_t next_order)
{
    s->limit = limit;
    s->nfree = 0;
    s->nheld = 0;
    /* Highest first on the stack, so the lowest free slot is reused first. */
    for (uint64_t i = limit; i-- > 0;)
        if (!iqdb__store_is_live(s, i))
            s->free_slots[s->nfree++] = i;
    s->next_order = next_order;
}
