/*
 * core/idmap.c - external id -> slot hash map.
 *
 * Linear probing over a power-of-two table of (tag, slot) pairs, at most
 * half full; deletion shifts later entries back (Knuth, TAOCP vol. 3,
 * algorithm R) so no tombstones accumulate. Keys are compared through the
 * store's per-slot id table, so the map holds no copy of any id. A bucket
 * is 8 bytes: the tag is the low 32 bits of the id's hash (0 mapped to
 * 1; 0 marks an empty bucket), which also gives its home bucket, and
 * the slot is 32 bits (the store holds fewer than 2^32 slots). At 200k
 * records that is 21 bytes a record instead of 42.
 */
#include "config.h"

#include <string.h>

#include "iqdb_int.h"

static uint64_t mix64(uint64_t x)
{
    /* splitmix64 finaliser: a cheap, well-distributed bijection. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

uint64_t iqdb__id_hash(iqdb_id id)
{
    uint64_t h;
    if (id.kind == IQDB_ID_U64) {
        h = mix64(id.v.u64 ^ 0x5851f42d4c957f2dull);
    } else {
        /* FNV-1a over the bytes, then mixed; distinct from u64 ids. */
        const unsigned char *p = id.v.bytes;
        h = 0xcbf29ce484222325ull;
        for (uint32_t i = 0; i < id.len; i++) {
            h ^= p[i];
            h *= 0x100000001b3ull;
        }
        h = mix64(h ^ ((uint64_t)id.len << 1) ^ 1);
    }
    return h ? h : 1; /* 0 marks an empty bucket */
}

int iqdb_id_equal(iqdb_id a, iqdb_id b)
{
    if (a.kind != b.kind)
        return 0;
    if (a.kind == IQDB_ID_U64)
        return a.v.u64 == b.v.u64;
    return a.len == b.len && memcmp(a.v.bytes, b.v.bytes, a.len) == 0;
}

int iqdb__idmap_init(iqdb_idmap *m)
{
    memset(m, 0, sizeof *m);
    return 0;
}

void iqdb__idmap_destroy(iqdb_idmap *m)
{
    iqdb__free(m->tags);
    iqdb__free(m->slots);
    memset(m, 0, sizeof *m);
}

static inline uint32_t tag_of(uint64_t h)
{
    uint32_t t = (uint32_t)h;
    return t ? t : 1;
}

static int rehash(iqdb_idmap *m, size_t cap)
{
    uint32_t *t = iqdb__calloc(cap, sizeof *t);
    uint32_t *s = iqdb__malloc(cap * sizeof *s);
    if (t == NULL || s == NULL) {
        iqdb__free(t);
        iqdb__free(s);
        return IQDB_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->tags[i] == 0)
            continue;
        size_t j = m->tags[i] & (cap - 1);
        while (t[j] != 0)
            j = (j + 1) & (cap - 1);
        t[j] = m->tags[i];
        s[j] = m->slots[i];
    }
    iqdb__free(m->tags);
    iqdb__free(m->slots);
    m->tags = t;
    m->slots = s;
    m->cap = cap;
    return 0;
}

int iqdb__idmap_reserve(iqdb_idmap *m, size_t extra)
{
    size_t need = m->count + extra;
    if (need < m->count)
        return IQDB_ENOMEM;
    size_t cap = m->cap ? m->cap : 16;
    while (cap / 2 < need) {
        /* Home buckets come from a 32-bit tag. */
        if (cap >= ((size_t)1 << 32))
            return IQDB_ENOMEM;
        cap *= 2;
    }
    return cap == m->cap ? 0 : rehash(m, cap);
}

static size_t probe(const iqdb_idmap *m, const iqdb_id *ids, iqdb_id id,
                    uint32_t t, int *found)
{
    size_t mask = m->cap - 1;
    size_t i = t & mask;
    while (m->tags[i] != 0) {
        if (m->tags[i] == t && iqdb_id_equal(ids[m->slots[i]], id)) {
            *found = 1;
            return i;
        }
        i = (i + 1) & mask;
    }
    *found = 0;
    return i;
}

int iqdb__idmap_find(const iqdb_idmap *m, const iqdb_id *ids, iqdb_id id,
                     uint64_t h, uint64_t *slot)
{
    int found;
    if (m->cap == 0)
        return 0;
    size_t i = probe(m, ids, id, tag_of(h), &found);
    if (found)
        *slot = m->slots[i];
    return found;
}

void iqdb__idmap_put(iqdb_idmap *m, const iqdb_id *ids, iqdb_id id,
                     uint64_t h, uint64_t slot)
{
    int found;
    uint32_t t = tag_of(h);
    size_t i = probe(m, ids, id, t, &found);
    if (!found) {
        m->tags[i] = t;
        m->count++;
    }
    m->slots[i] = (uint32_t)slot; /* < IQDB_IDMAP_MAX_SLOT: the store
                                     never hands out more slots */
}

void iqdb__idmap_del(iqdb_idmap *m, const iqdb_id *ids, iqdb_id id,
                     uint64_t h)
{
    int found;
    if (m->cap == 0)
        return;
    size_t i = probe(m, ids, id, tag_of(h), &found);
    if (!found)
        return;
    size_t mask = m->cap - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->tags[j] == 0)
            break;
        size_t home = m->tags[j] & mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        int stay = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (stay)
            continue;
        m->tags[i] = m->tags[j];
        m->slots[i] = m->slots[j];
        i = j;
    }
    m->tags[i] = 0;
    m->count--;
}
