/*
 * core/alloc.c - the allocator shared by the core and every plugin.
 *
 * All allocations go through here so that a test can make the N-th one
 * fail (libuv test-loop-oom style) and check that every failure path
 * unwinds cleanly, in the core and in plugins alike.
 */
#include "config.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iqdb_int.h"

/* Allocations left before injected failure; < 0: never fail. */
static atomic_long fail_budget = -1;
static atomic_long alloc_count = 0;

static int should_fail(void)
{
    atomic_fetch_add_explicit(&alloc_count, 1, memory_order_relaxed);
    long b = atomic_load_explicit(&fail_budget, memory_order_relaxed);
    if (IQDB__LIKELY(b < 0))
        return 0;
    while (b > 0) {
        if (atomic_compare_exchange_weak(&fail_budget, &b, b - 1))
            return 0;
        if (b < 0)
            return 0;
    }
    return 1;
}

long iqdb__alloc_fail_after(long n)
{
    atomic_store(&fail_budget, n);
    return atomic_exchange(&alloc_count, 0);
}

void *iqdb__malloc(size_t size)
{
    if (should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *iqdb__calloc(size_t n, size_t size)
{
    if (should_fail())
        return NULL;
    if (n == 0 || size == 0)
        n = size = 1;
    return calloc(n, size);
}

void *iqdb__realloc(void *p, size_t size)
{
    if (should_fail())
        return NULL;
    return realloc(p, size ? size : 1);
}

void iqdb__free(void *p)
{
    free(p);
}

void *iqdb__aligned_alloc(size_t alignment, size_t size)
{
    void *p = NULL;
    if (should_fail())
        return NULL;
    if (alignment < sizeof(void *))
        alignment = sizeof(void *);
    if (posix_memalign(&p, alignment, size ? size : 1) != 0)
        return NULL;
    return p;
}

void iqdb__aligned_free(void *p)
{
    free(p);
}

static size_t page_round(size_t size)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t page = pg > 0 ? (size_t)pg : 4096;
    if (size == 0)
        size = 1;
    return size > SIZE_MAX - page ? 0 : (size + page - 1) / page * page;
}

void *iqdb__pages_alloc(size_t size)
{
    if (should_fail())
        return NULL;
    size_t len = page_round(size);
    int huge = len >= IQDB_HUGE_BYTES;
    /* Map 2 MiB more than asked and trim both ends to a 2 MiB boundary
     * (a huge page needs an aligned 2 MiB of the mapping). */
    size_t want = huge ? len + IQDB_HUGE_BYTES : len;
    if (len == 0 || want < len)
        return NULL;
    char *m = mmap(NULL, want, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    if (!huge)
        return m;
    uintptr_t at = ((uintptr_t)m + IQDB_HUGE_BYTES - 1) &
                   ~(uintptr_t)(IQDB_HUGE_BYTES - 1);
    char *p = (char *)at;
    if (p > m)
        munmap(m, (size_t)(p - m));
    if (p + len < m + want)
        munmap(p + len, (size_t)(m + want - (p + len)));
#ifdef MADV_HUGEPAGE
    /* Advice only: where huge pages are off, the region just stays in
     * small pages. */
    madvise(p, len, MADV_HUGEPAGE);
#endif
    return p;
}

void iqdb__pages_free(void *p, size_t size)
{
    if (p != NULL)
        munmap(p, page_round(size));
}

char *iqdb__strdup(const char *s)
{
    return s ? iqdb__memdup(s, strlen(s) + 1) : NULL;
}

void *iqdb__memdup(const void *p, size_t len)
{
    void *q = iqdb__malloc(len);
    if (q != NULL && len > 0)
        memcpy(q, p, len);
    return q;
}

int iqdb__mul_size(size_t a, size_t b, size_t *out)
{
    if (b != 0 && a > SIZE_MAX / b)
        return -1;
    *out = a * b;
    return 0;
}
