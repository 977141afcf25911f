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
