/*
 * tests/unit/check_serial.c - record batch and metadata encodings: round
 * trips, and hostile bytes (every truncation, every byte flip, crafted
 * counts) rejected with IQDB_ECORRUPT and never a crash or a large
 * allocation.
 */
#include "config.h"

#include <math.h>
#include <string.h>

#include "iqdb_int.h"
#include "serial_int.h"
#include "testutil.h"

#define DIM 5

static iqdb_buf sample(void)
{
    static float v[3][DIM] = {{1, 2, 3, 4, 5}, {-1, 0, 0.5f, 1e30f, -1e-30f},
                              {0, 0, 0, 0, 0}};
    iqdb_meta *m = iqdb_meta_new();
    iqdb_meta_set(m, "s", iqdb_value_strn("a\0b", 3));
    iqdb_meta_set(m, "i", iqdb_value_int(-42));
    iqdb_meta_set(m, "d", iqdb_value_double(2.5));
    iqdb_meta_set(m, "b", iqdb_value_bool(1));
    iqdb_meta_set(m, "n", iqdb_value_null());
    iqdb_record recs[3] = {{iqdb_id_u64(7), v[0], m},
                           {iqdb_id_bytes("key", 3), v[1], NULL},
                           {iqdb_id_u64(UINT64_MAX), v[2], m}};
    iqdb_buf b;
    iqdb__buf_init(&b);
    iqdb__enc_upserts(&b, recs, 3, DIM, NULL);
    iqdb_meta_free(m);
    ck_assert(!b.oom);
    return b;
}

START_TEST(test_serial_round_trip)
{
    iqdb_buf b = sample();
    iqdb_batch bt;
    const char *why = NULL;
    ck_assert_int_eq(iqdb__dec_batch(b.p, b.len, DIM, &bt, &why), 0);
    ck_assert_int_eq(bt.op, IQDB_OP_UPSERT);
    ck_assert_uint_eq(bt.n, 3);
    ck_assert_uint_eq(bt.recs[0].id.v.u64, 7);
    ck_assert_uint_eq(bt.recs[1].id.kind, IQDB_ID_BYTES);
    ck_assert_mem_eq(bt.recs[1].id.v.bytes, "key", 3);
    ck_assert_uint_eq(bt.recs[2].id.v.u64, UINT64_MAX);
    ck_assert_ptr_null(bt.recs[1].meta);
    ck_assert_float_eq(bt.recs[1].vector[3], 1e30f);
    iqdb_value v;
    ck_assert_int_eq(iqdb_meta_get(bt.recs[0].meta, "s", &v), 0);
    ck_assert_uint_eq(v.len, 3);
    ck_assert_mem_eq(v.v.s, "a\0b", 3);
    ck_assert_int_eq(iqdb_meta_get(bt.recs[2].meta, "i", &v), 0);
    ck_assert_int_eq(v.v.i, -42);
    ck_assert_int_eq(iqdb_meta_get(bt.recs[2].meta, "n", &v), 0);
    ck_assert_int_eq(v.type, IQDB_TYPE_NULL);
    ck_assert_uint_eq(iqdb_meta_count(bt.recs[0].meta), 5);
    /* Re-encoding the decoded batch gives the same bytes. */
    iqdb_buf b2;
    iqdb__buf_init(&b2);
    iqdb__enc_upserts(&b2, bt.recs, bt.n, DIM, NULL);
    ck_assert_uint_eq(b2.len, b.len);
    ck_assert_mem_eq(b2.p, b.p, b.len);
    iqdb__buf_free(&b2);
    iqdb__batch_free(&bt);
    /* Deletes. */
    iqdb__buf_free(&b);
    iqdb__buf_init(&b);
    iqdb__enc_delete(&b, iqdb_id_bytes("gone", 4));
    ck_assert_int_eq(iqdb__dec_batch(b.p, b.len, DIM, &bt, &why), 0);
    ck_assert_int_eq(bt.op, IQDB_OP_DELETE);
    ck_assert_mem_eq(bt.recs[0].id.v.bytes, "gone", 4);
    iqdb__batch_free(&bt);
    iqdb__buf_free(&b);
}
END_TEST

START_TEST(test_serial_every_truncation)
{
    iqdb_buf b = sample();
    for (size_t n = 0; n < b.len; n++) {
        iqdb_batch bt;
        const char *why = NULL;
        unsigned char *copy = malloc(n ? n : 1);
        memcpy(copy, b.p, n);
        ck_assert_int_eq(iqdb__dec_batch(copy, n, DIM, &bt, &why),
                         IQDB_ECORRUPT);
        ck_assert_ptr_nonnull(why);
        free(copy);
    }
    iqdb__buf_free(&b);
}
END_TEST

START_TEST(test_serial_every_byte_flip)
{
    iqdb_buf b = sample();
    unsigned char *copy = malloc(b.len);
    int rejected = 0;
    for (size_t i = 0; i < b.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, b.p, b.len);
            copy[i] ^= (unsigned char)(1u << bit);
            iqdb_batch bt;
            const char *why = NULL;
            int r = iqdb__dec_batch(copy, b.len, DIM, &bt, &why);
            ck_assert(r == 0 || r == IQDB_ECORRUPT);
            if (r == 0)
                iqdb__batch_free(&bt);
            else
                rejected++;
        }
    }
    /* Flips in the framing are caught; flips inside values may decode. */
    ck_assert_int_gt(rejected, (int)b.len);
    free(copy);
    iqdb__buf_free(&b);
}
END_TEST

START_TEST(test_serial_hostile_counts)
{
    /* op upsert, dim 5, n = 0xffffffff, then a few bytes. */
    unsigned char evil[32] = {1, DIM, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    iqdb_batch bt;
    const char *why = NULL;
    iqdb__alloc_fail_after(0); /* nothing may be allocated */
    ck_assert_int_eq(iqdb__dec_batch(evil, sizeof evil, DIM, &bt, &why),
                     IQDB_ECORRUPT);
    iqdb__alloc_fail_after(-1);
    ck_assert_str_eq(why, "record count out of range");
    /* Wrong dimension and unknown op. */
    evil[5] = 1;
    evil[6] = evil[7] = evil[8] = 0;
    ck_assert_int_eq(iqdb__dec_batch(evil, sizeof evil, DIM + 1, &bt, &why),
                     IQDB_ECORRUPT);
    evil[0] = 9;
    ck_assert_int_eq(iqdb__dec_batch(evil, sizeof evil, DIM, &bt, &why),
                     IQDB_ECORRUPT);
    /* A metadata count larger than the bytes left. */
    unsigned char m[8] = {0xff, 0xff, 0, 0, 1, 'k', 0, 0};
    iqdb_rd r;
    iqdb_meta *meta;
    iqdb__rd_init(&r, m, sizeof m);
    ck_assert_int_eq(iqdb__dec_meta(&r, &meta, &why), IQDB_ECORRUPT);
    /* Keys out of order are not the canonical encoding. */
    unsigned char ooo[] = {2, 0, 0, 0, 1, 0, 'b', 0, 1, 0, 'a', 0};
    iqdb__rd_init(&r, ooo, sizeof ooo);
    ck_assert_int_eq(iqdb__dec_meta(&r, &meta, &why), IQDB_ECORRUPT);
    ck_assert_str_eq(why, "metadata keys out of order");
    /* The delete of a 1-byte string id is a 6-byte record: it decodes
     * (a bound on the record count once assumed 9 bytes at least, so
     * replay refused the frame and the database could not be opened). */
    for (uint32_t l = 1; l <= 9; l++) {
        iqdb_buf d;
        iqdb__buf_init(&d);
        iqdb__enc_delete(&d, iqdb_id_bytes("abcdefghi", l));
        ck_assert_int_eq(iqdb__dec_batch(d.p, d.len, DIM, &bt, &why), 0);
        ck_assert_uint_eq(bt.n, 1);
        ck_assert_uint_eq(bt.recs[0].id.len, l);
        iqdb__batch_free(&bt);
        iqdb__buf_free(&d);
    }
    /* A delete frame holds one id and dimension 0: what the writer
     * makes decodes, two ids or a dimension do not. */
    unsigned char del[] = {2, 0, 0, 0, 0, 1, 0, 0, 0,
                           1, 7, 0, 0, 0, 0, 0, 0, 0,
                           1, 8, 0, 0, 0, 0, 0, 0, 0};
    ck_assert_int_eq(iqdb__dec_batch(del, 18, DIM, &bt, &why), 0);
    ck_assert_uint_eq(bt.n, 1);
    iqdb__batch_free(&bt);
    del[5] = 2;
    ck_assert_int_eq(iqdb__dec_batch(del, sizeof del, DIM, &bt, &why),
                     IQDB_ECORRUPT);
    ck_assert_str_eq(why, "a delete frame holds one id and dimension 0");
    del[5] = 1;
    del[1] = DIM;
    ck_assert_int_eq(iqdb__dec_batch(del, 18, DIM, &bt, &why),
                     IQDB_ECORRUPT);
    /* A NaN vector element. */
    float nanv[DIM] = {0, 0, NAN, 0, 0};
    iqdb_record rec = {iqdb_id_u64(1), nanv, NULL};
    iqdb_buf b;
    iqdb__buf_init(&b);
    iqdb__enc_upserts(&b, &rec, 1, DIM, NULL);
    ck_assert_int_eq(iqdb__dec_batch(b.p, b.len, DIM, &bt, &why),
                     IQDB_ECORRUPT);
    iqdb__buf_free(&b);
}
END_TEST

START_TEST(test_serial_alloc_failures)
{
    iqdb_buf b = sample();
    int r = IQDB_ENOMEM;
    for (long n = 0; r != 0; n++) {
        iqdb_batch bt;
        const char *why;
        iqdb__alloc_fail_after(n);
        r = iqdb__dec_batch(b.p, b.len, DIM, &bt, &why);
        iqdb__alloc_fail_after(-1);
        if (r == 0)
            iqdb__batch_free(&bt);
        else
            ck_assert_int_eq(r, IQDB_ENOMEM);
    }
    iqdb__buf_free(&b);
    /* Encoding into a buffer that cannot grow sets oom. */
    iqdb_buf e;
    iqdb__buf_init(&e);
    iqdb__alloc_fail_after(0);
    iqdb__buf_u64(&e, 1);
    iqdb__alloc_fail_after(-1);
    ck_assert(e.oom);
    iqdb__buf_free(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("serial");
    TCase *tc = tcase_create("round_trip");
    tcase_add_test(tc, test_serial_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("hostile");
    tcase_add_test(tc, test_serial_every_truncation);
    tcase_add_test(tc, test_serial_every_byte_flip);
    tcase_add_test(tc, test_serial_hostile_counts);
    suite_add_tcase(s, tc);
    tc = tcase_create("alloc");
    tcase_add_test(tc, test_serial_alloc_failures);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
