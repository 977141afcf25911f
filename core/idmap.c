/*
 * core/idmap.c - external id -> slot hash map.
 *
 * Linear probing over a power-of-two table of (hash, slot) pairs, at most
 * half full; deletion shifts later entries back (Knuth, TAOCP vol. 3,
 * algorithm R) so no tombstones accumulate. Keys are compared through the
 * store's per-slot id table, so the map holds no copy of any id.
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
    iqdb__free(m->hashes);
    iqdb__free(m->slots);
    memset(m, 0, sizeof *m);
}

static int rehash(iqdb_idmap *m, size_t cap)
{
    uint64_t *h = iqdb__calloc(cap, sizeof *h);
    uint64_t *s = iqdb__malloc(cap * sizeof *s);
    if (h == NULL || s == NULL) {
        iqdb__free(h);
        iqdb__free(s);
        return IQDB_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->hashes[i] == 0)
            continue;
        size_t j = m->hashes[i] & (cap - 1);
        while (h[j] != 0)
            j = (j + 1) & (cap - 1);
        h[j] = m->hashes[i];
        s[j] = m->slots[i];
    }
    iqdb__free(m->hashes);
    iqdb__free(m->slots);
    m->hashes = h;
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
        if (cap > SIZE_MAX / 4)
            return IQDB_ENOMEM;
        cap *= 2;
    }
    return cap == m->cap ? 0 : rehash(m, cap);
}

static size_t probe(const iqdb_idmap *m, const iqdb_id *ids, iqdb_id id,
                    uint64_t h, int *found)
{
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->hashes[i] != 0) {
        if (m->hashes[i] == h && iqdb_id_equal(ids[m->slots[i]], id)) {
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
    size_t i = probe(m, ids, id, h, &found);
    if (found)
        *slot = m->slots[i];
    return found;
}

void iqdb__idmap_put(iqdb_idmap *m, const iqdb_id *ids, iqdb_id id,
                     uint64_t h, uint64_t slot)
{
    int found;
    size_t i = probe(m, ids, id, h, &found);
    if (!found) {
        m->hashes[i] = h;
        m->count++;
    }
    m->slots[i] = slot;
}

void iqdb__idmap_del(iqdb_idmap *m, const iqdb_id *ids, iqdb_id id,
                     uint64_t h)
{
    int found;
    if (m->cap == 0)
        return;
    size_t i = probe(m, ids, id, h, &found);
    if (!found)
        return;
    size_t mask = m->cap - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->hashes[j] == 0)
            break;
        size_t home = m->hashes[j] & mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        int stay = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (stay)
            continue;
        m->hashes[i] = m->hashes[j];
        m->slots[i] = m->slots[j];
        i = j;
    }
    m->hashes[i] = 0;
    m->count--;
}
