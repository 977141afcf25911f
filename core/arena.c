/*
 * core/arena.c - the chunked vector arena.
 *
 * Chunks hold 2^chunk_shift vectors each, sized near 1 MiB, 64-byte
 * aligned; a slot's stride is the dimension rounded up to 8 floats so
 * every vector starts on a 32-byte boundary. Chunks never move, so
 * pointers handed to index plugins stay valid while the arena grows.
 * After a reopen the whole chunks may lie in a private mapping of the
 * snapshot's vector section, which has the same layout.
 */
#include "config.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iqdb_int.h"

#define CHUNK_TARGET_BYTES (1u << 20)

int iqdb__arena_init(iqdb_arena *a, uint32_t dim)
{
    memset(a, 0, sizeof *a);
    a->dim = dim;
    a->stride = ((size_t)dim + 7) & ~(size_t)7;
    size_t bytes = a->stride * sizeof(float);
    uint32_t shift = 0;
    while (shift < 16 && (bytes << (shift + 1)) <= CHUNK_TARGET_BYTES)
        shift++;
    a->chunk_shift = shift;
    return 0;
}

void iqdb__arena_destroy(iqdb_arena *a)
{
    for (size_t i = a->nmapped; i < a->nchunks; i++)
        iqdb__aligned_free(a->chunks[i]);
    if (a->map != NULL)
        munmap(a->map, a->map_len);
    iqdb__free(a->chunks);
    memset(a, 0, sizeof *a);
}

uint64_t iqdb__arena_map(iqdb_arena *a, int fd, uint64_t off, uint64_t limit)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t full = (size_t)(limit >> a->chunk_shift), bytes, len;
    if (a->nchunks != 0 || full == 0 || page <= 0 || off % (uint64_t)page ||
        iqdb__mul_size(((size_t)1 << a->chunk_shift) * sizeof(float),
                       a->stride, &bytes) != 0 ||
        iqdb__mul_size(full, bytes, &len) != 0)
        return 0;
    size_t cap = a->chunk_cap ? a->chunk_cap : 16;
    while (cap < full)
        cap *= 2;
    float **t = iqdb__realloc(a->chunks, cap * sizeof *t);
    if (t == NULL)
        return 0;
    a->chunks = t;
    a->chunk_cap = cap;
    /* No MAP_POPULATE: on a writable private mapping it faults every
     * page for writing, copying the whole section into anonymous memory.
     * Read ahead instead; the loader's checksum pass then maps the page
     * cache's own pages. */
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd,
                   (off_t)off);
    if (m == MAP_FAILED)
        return 0;
    madvise(m, len, MADV_WILLNEED);
    for (size_t i = 0; i < full; i++)
        a->chunks[i] = (float *)((char *)m + i * bytes);
    a->map = m;
    a->map_len = len;
    a->nchunks = a->nmapped = full;
    return (uint64_t)full << a->chunk_shift;
}

int iqdb__arena_reserve(iqdb_arena *a, uint64_t limit)
{
    size_t per = (size_t)1 << a->chunk_shift;
    size_t need = (size_t)((limit + per - 1) >> a->chunk_shift);
    if (need <= a->nchunks)
        return 0;
    if (need > a->chunk_cap) {
        size_t cap = a->chunk_cap ? a->chunk_cap : 16;
        while (cap < need)
            cap *= 2;
        float **t = iqdb__realloc(a->chunks, cap * sizeof *t);
        if (t == NULL)
            return IQDB_ENOMEM;
        a->chunks = t;
        a->chunk_cap = cap;
    }
    size_t bytes;
    if (iqdb__mul_size(per * sizeof(float), a->stride, &bytes) != 0)
        return IQDB_ENOMEM;
    while (a->nchunks < need) {
        float *c = iqdb__aligned_alloc(64, bytes);
        if (c == NULL)
            return IQDB_ENOMEM;
        /* Zero the padding so whole strides are well defined. */
        memset(c, 0, bytes);
        a->chunks[a->nchunks++] = c;
    }
    return 0;
}

uint64_t iqdb__arena_memory(const iqdb_arena *a)
{
    return (uint64_t)a->nchunks * ((uint64_t)1 << a->chunk_shift) *
               a->stride * sizeof(float) +
           a->chunk_cap * sizeof(float *);
}
