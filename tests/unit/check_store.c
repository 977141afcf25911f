/*
 * tests/unit/check_store.c - the id map, the vector arena and the slot
 * store, against naive references.
 */
#include "config.h"

#include <string.h>

#include "iqdb_int.h"

#if defined(__SANITIZE_ADDRESS__)
#define STORE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STORE_ASAN 1
#endif
#endif
#ifdef STORE_ASAN
#include <sanitizer/asan_interface.h>
#endif
#include "testutil.h"

START_TEST(test_store_idmap_random_ops)
{
    enum { N = 20000 };
    iqdb_idmap m;
    iqdb_id *ids = calloc(N, sizeof *ids);
    unsigned char *present = calloc(N, 1);
    iqdb__idmap_init(&m);
    for (int i = 0; i < N; i++)
        ids[i] = iqdb_id_u64((uint64_t)i * 7919u);
    uint64_t seed = 3;
    for (int op = 0; op < 200000; op++) {
        int i = (int)(tu_next(&seed) % N);
        uint64_t h = iqdb__id_hash(ids[i]), slot;
        switch (tu_next(&seed) % 3) {
        case 0:
            ck_assert_int_eq(iqdb__idmap_reserve(&m, 1), 0);
            iqdb__idmap_put(&m, ids, ids[i], h, (uint64_t)i);
            present[i] = 1;
            break;
        case 1:
            iqdb__idmap_del(&m, ids, ids[i], h);
            present[i] = 0;
            break;
        default:
            ck_assert_int_eq(iqdb__idmap_find(&m, ids, ids[i], h, &slot),
                             present[i]);
            if (present[i])
                ck_assert_uint_eq(slot, (uint64_t)i);
        }
    }
    size_t count = 0;
    for (int i = 0; i < N; i++)
        count += present[i];
    ck_assert_uint_eq(m.count, count);
    for (int i = 0; i < N; i++) {
        uint64_t slot;
        ck_assert_int_eq(
            iqdb__idmap_find(&m, ids, ids[i], iqdb__id_hash(ids[i]), &slot),
            present[i]);
    }
    iqdb__idmap_destroy(&m);
    free(ids);
    free(present);
}
END_TEST

START_TEST(test_store_id_hash_distinguishes_kinds)
{
    uint64_t x = 5;
    iqdb_id a = iqdb_id_u64(5), b = iqdb_id_bytes(&x, 8);
    ck_assert(!iqdb_id_equal(a, b));
    ck_assert(iqdb_id_equal(a, iqdb_id_u64(5)));
    ck_assert(iqdb_id_equal(b, iqdb_id_bytes(&x, 8)));
    ck_assert(!iqdb_id_equal(b, iqdb_id_bytes(&x, 7)));
    ck_assert_uint_ne(iqdb__id_hash(a), 0);
}
END_TEST

START_TEST(test_store_arena_stable_addresses)
{
    iqdb_arena a;
    for (uint32_t dim = 1; dim <= 1100; dim = dim * 3 + 1) {
        iqdb__arena_init(&a, dim);
        ck_assert_uint_eq(a.stride % 8, 0);
        ck_assert_uint_ge(a.stride, dim);
        ck_assert_int_eq(iqdb__arena_reserve(&a, 10), 0);
        float *first = iqdb__arena_at(&a, 3);
        first[0] = 42.0f;
        ck_assert_int_eq(iqdb__arena_reserve(&a, 20000), 0);
        ck_assert_ptr_eq(iqdb__arena_at(&a, 3), first);
        ck_assert_float_eq(first[0], 42.0f);
        for (uint64_t s = 0; s < 20000; s += 997)
            ck_assert_uint_eq((uintptr_t)iqdb__arena_at(&a, s) % 32, 0);
        /* Consecutive slots in a chunk are one stride apart. */
        ck_assert_ptr_eq(iqdb__arena_at(&a, 1), iqdb__arena_at(&a, 0) + a.stride);
        iqdb__arena_destroy(&a);
    }
}
END_TEST

/* Chunks are carved from a few extents: every new slot's whole stride
 * (padding included) reads as zeros with nothing cleared by hand, chunks
 * start 64-byte aligned and never overlap, the number of extents grows
 * with the logarithm of the size, and a failed allocation part-way leaves
 * the arena usable with every earlier slot intact. */
START_TEST(test_store_arena_extents)
{
    const uint32_t dims[3] = {5, 256, 3000};
    for (int k = 0; k < 3; k++) {
        iqdb_arena a;
        iqdb__arena_init(&a, dims[k]);
        uint64_t per = (uint64_t)1 << a.chunk_shift, limit = 0;
        /* Grow one slot at a time at first, then by large steps. */
        for (int step = 0; step < 28; step++) {
            uint64_t next = limit + (step < 20 ? 1 : per * 3 + 1);
            ck_assert_int_eq(iqdb__arena_reserve(&a, next), 0);
            for (uint64_t slot = limit; slot < next; slot++) {
                float *v = iqdb__arena_at(&a, slot);
                uint32_t any = 0;
                for (size_t j = 0; j < a.stride; j++)
                    any |= ((const uint32_t *)(void *)v)[j];
                ck_assert_uint_eq(any, 0);
                for (size_t j = 0; j < dims[k]; j++)
                    v[j] = (float)(slot * 7 + j);
            }
            limit = next;
        }
        for (size_t c = 0; c < a.nchunks; c++)
            ck_assert_uint_eq((uintptr_t)a.chunks[c] % 64, 0);
#ifdef STORE_ASAN
        /* Chunks handed out are addressable; the room after them is not. */
        ck_assert(!__asan_address_is_poisoned(a.chunks[a.nchunks - 1]));
        if (a.nspare > 0)
            ck_assert(__asan_address_is_poisoned(a.spare));
#endif
        ck_assert_uint_le(a.n_ext, 2 + 64 - (size_t)__builtin_clzll(a.nchunks) +
                                       a.nchunks * per * a.stride * 4 /
                                           ((size_t)256 << 20));
        /* Allocation failures while growing: the n-th allocation of a
         * reserve that needs a new extent fails, for every n up to the
         * reserve's success (the chunk table, the extent table, the
         * extent itself): ENOMEM, and nothing lost. Ten times over, so
         * the extent table grows too. */
        int failures = 0;
        for (int round = 0; round < 10; round++) {
            uint64_t full = (uint64_t)(a.nchunks + a.nspare) * per;
            ck_assert_int_eq(iqdb__arena_reserve(&a, full), 0);
            ck_assert_uint_eq(a.nspare, 0);
            size_t ext = a.n_ext;
            for (long n = 0;; n++) {
                iqdb__alloc_fail_after(n);
                int r = iqdb__arena_reserve(&a, full + 1);
                iqdb__alloc_fail_after(-1);
                if (r == 0)
                    break;
                ck_assert_int_eq(r, IQDB_ENOMEM);
                ck_assert_uint_eq(a.nchunks, full / per);
                failures++;
            }
            ck_assert_uint_eq(a.n_ext, ext + 1);
        }
        ck_assert_int_ge(failures, 10);
        ck_assert_uint_ge(a.ext_cap, 16); /* the extent table grew */
        for (uint64_t slot = 0; slot < limit; slot++) {
            const float *v = iqdb__arena_at(&a, slot);
            for (size_t j = 0; j < dims[k]; j += 97)
                ck_assert_float_eq(v[j], (float)(slot * 7 + j));
        }
        iqdb__arena_destroy(&a);
    }
    /* A full chunk table and a full extent: growing needs the table
     * first, then the mapping; each failure leaves the arena as it was. */
    iqdb_arena a;
    iqdb__arena_init(&a, 256);
    uint64_t per = (uint64_t)1 << a.chunk_shift;
    ck_assert_int_eq(iqdb__arena_reserve(&a, 16 * per), 0);
    ck_assert_uint_eq(a.nchunks, a.chunk_cap);
    ck_assert_uint_eq(a.nspare, 0);
    long n;
    for (n = 0;; n++) {
        iqdb__alloc_fail_after(n);
        int r = iqdb__arena_reserve(&a, 16 * per + 1);
        iqdb__alloc_fail_after(-1);
        if (r == 0)
            break;
        ck_assert_int_eq(r, IQDB_ENOMEM);
        ck_assert_uint_eq(a.nchunks, 16);
        ck_assert_uint_eq(a.n_ext, 1);
    }
    ck_assert_int_eq(n, 2); /* the chunk table, then the mapping */
    ck_assert_uint_eq(a.nchunks, 17);
    iqdb__arena_destroy(&a);
}
END_TEST

START_TEST(test_store_reserve_then_infallible)
{
    iqdb_store s;
    iqdb__store_init(&s, 4);
    ck_assert_int_eq(iqdb__store_reserve(&s, 100), 0);
    uint64_t slots[100];
    for (int i = 0; i < 100; i++) {
        slots[i] = iqdb__store_take(&s);
        iqdb_id id;
        iqdb__id_copy(iqdb_id_u64((uint64_t)i), &id);
        iqdb__store_publish(&s, slots[i], id, iqdb__id_hash(id), NULL);
    }
    ck_assert_uint_eq(s.count, 100);
    iqdb__store_release(&s, slots[10]);
    ck_assert(!iqdb__store_is_live(&s, slots[10]));
    uint64_t found;
    ck_assert_int_eq(iqdb__store_find(&s, iqdb_id_u64(10),
                                      iqdb__id_hash(iqdb_id_u64(10)), &found),
                     0);
    ck_assert_int_eq(iqdb__store_reserve(&s, 1), 0);
    ck_assert_uint_eq(iqdb__store_take(&s), slots[10]);
    iqdb__store_destroy(&s);
}
END_TEST

START_TEST(test_store_reserve_fails_cleanly)
{
    iqdb_store s;
    iqdb__store_init(&s, 8);
    int r = IQDB_ENOMEM;
    for (long n = 0; r != 0; n++) {
        iqdb__alloc_fail_after(n);
        r = iqdb__store_reserve(&s, 5000);
        iqdb__alloc_fail_after(-1);
        if (r != 0)
            ck_assert_int_eq(r, IQDB_ENOMEM);
    }
    ck_assert_uint_ge(s.cap, 5000);
    iqdb__store_destroy(&s);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("idmap");
    tcase_add_test(tc, test_store_idmap_random_ops);
    tcase_add_test(tc, test_store_id_hash_distinguishes_kinds);
    suite_add_tcase(s, tc);
    tc = tcase_create("arena");
    tcase_add_test(tc, test_store_arena_stable_addresses);
    tcase_add_test(tc, test_store_arena_extents);
    suite_add_tcase(s, tc);
    tc = tcase_create("slots");
    tcase_add_test(tc, test_store_reserve_then_infallible);
    tcase_add_test(tc, test_store_reserve_fails_cleanly);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(store_suite());
}
