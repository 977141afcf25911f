/*
 * core/arena.c - the chunked vector arena.
 *
 * Chunks hold 2^chunk_shift vectors each, sized near 1 MiB, 64-byte
 * aligned, carved from a few large anonymous mappings (extents) that
 * start zeroed and take huge pages where the kernel offers them; a slot's
 * stride is the dimension rounded up to 8 floats so
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

/* Under AddressSanitizer the unused room of an extent is poisoned, so a
 * read or write past the last chunk handed out is reported, as it was
 * when each chunk came from malloc with a redzone. */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_ASAN 1
#endif
#endif
#ifdef ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define CHUNK_TARGET_BYTES (1u << 20)
#define EXTENT_MAX_BYTES ((size_t)256 << 20)

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
    for (size_t i = 0; i < a->n_ext; i++) {
        UNPOISON(a->ext[i].p, a->ext[i].len);
        iqdb__pages_free(a->ext[i].p, a->ext[i].len);
    }
    iqdb__free(a->ext);
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
        a->chunks[i] = (float *)(void *)((char *)m + i * bytes);
    a->map = m;
    a->map_len = len;
    a->nchunks = a->nmapped = full;
    return (uint64_t)full << a->chunk_shift;
}

/* Map the next extent: room for at least `missing` chunks of `bytes`,
 * and for as many chunks as the arena already has (so the number of
 * extents grows with the logarithm of the size), but no more than about
 * EXTENT_MAX_BYTES beyond what is missing. */
static int new_extent(iqdb_arena *a, size_t missing, size_t bytes)
{
    size_t k = a->nchunks > missing ? a->nchunks : missing;
    size_t kmax = EXTENT_MAX_BYTES / bytes;
    if (kmax < missing)
        kmax = missing;
    if (k > kmax)
        k = kmax;
    size_t len;
    if (iqdb__mul_size(k, bytes, &len) != 0)
        return IQDB_ENOMEM;
    /* A region of 2 MiB or more gets whole 2 MiB pages: fill them. */
    if (len >= IQDB_HUGE_BYTES && len % IQDB_HUGE_BYTES != 0 &&
        len <= SIZE_MAX - IQDB_HUGE_BYTES) {
        len = (len / IQDB_HUGE_BYTES + 1) * IQDB_HUGE_BYTES;
        k = len / bytes;
    }
    if (a->n_ext == a->ext_cap) {
        size_t cap = a->ext_cap ? a->ext_cap * 2 : 8;
        struct iqdb_extent *t = iqdb__realloc(a->ext, cap * sizeof *t);
        if (t == NULL)
            return IQDB_ENOMEM;
        a->ext = t;
        a->ext_cap = cap;
    }
    void *p = iqdb__pages_alloc(len);
    if (p == NULL)
        return IQDB_ENOMEM;
    POISON(p, len);
    a->ext[a->n_ext].p = p;
    a->ext[a->n_ext].len = len;
    a->n_ext++;
    a->spare = p;
    a->nspare = k;
    return 0;
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
    /* Chunks start 64-byte aligned, like the mapped ones. */
    bytes = (bytes + 63) & ~(size_t)63;
    while (a->nchunks < need) {
        if (a->nspare == 0 && new_extent(a, need - a->nchunks, bytes) != 0)
            return IQDB_ENOMEM;
        /* Fresh anonymous memory reads as zeros, padding included, so
         * whole strides are well defined without clearing them here. */
        UNPOISON(a->spare, bytes);
        a->chunks[a->nchunks++] = (float *)(void *)a->spare;
        a->spare += bytes;
        a->nspare--;
    }
    return 0;
}

uint64_t iqdb__arena_memory(const iqdb_arena *a)
{
    return (uint64_t)a->nchunks * ((uint64_t)1 << a->chunk_shift) *
               a->stride * sizeof(float) +
           a->chunk_cap * sizeof(float *);
}
