/*
 * tests/unit/check_codec.c - the zstd and lz4 codec plugins, loaded
 * through the core's registry as a snapshot reader would load them.
 *
 * Most cases run once per codec (a Check loop test over `codecs`). Every
 * buffer a codec reads or writes is allocated at its exact size, so an
 * overrun by even one byte is an AddressSanitizer report in the sanitizer
 * build, not a silent pass. decompress is the door hostile snapshot bytes
 * come through: truncations, byte flips, garbage and crafted headers must
 * all end in IQDB_ECORRUPT, never in a crash or a large allocation.
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "iqdb_int.h"
#include "testutil.h"

typedef struct codec_case {
    const char *name;
    uint32_t id;
    int good_levels[8];
    size_t n_good;
    int bad_levels[6];
    size_t n_bad;
    const char *range_hint; /* a bound the bad-level message must name */
} codec_case;

static const codec_case codecs[] = {
    {"zstd", IQDB_CODEC_ID_ZSTD, {0, 1, 3, 9, 19, 22, -1, -5}, 8,
     {23, 100, INT_MAX, INT_MIN, -1000000, 1000}, 6, "22"},
    {"lz4", IQDB_CODEC_ID_LZ4, {0, 1, -1, -2, -10, -1000, -65537, 1}, 8,
     {2, 3, 12, INT_MAX, INT_MIN, -65538}, 6, "-65537"},
};
#define NCODECS (int)(sizeof codecs / sizeof codecs[0])

static const iqdb_codec_ops *load(const char *name)
{
    const iqdb_codec_ops *ops = NULL;
    int r = iqdb__find_codec(name, 0, &ops);
    ck_assert_msg(r == 0, "loading codec %s: %s (%s)", name, iqdb_errname(r),
                  iqdb_errmsg(NULL));
    ck_assert_ptr_nonnull(ops);
    return ops;
}

/* malloc exactly n bytes (at least one, so the pointer is never NULL). */
static uint8_t *xalloc(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(p);
    return p;
}

static uint8_t *xdup(const uint8_t *p, size_t n)
{
    uint8_t *q = xalloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}

enum { D_RANDOM, D_ZEROS, D_TEXT, D_FLOATS, D_PIXELS, D_KINDS };

static const char *const kind_names[] = {"random", "zeros", "text", "floats",
                                         "pixels"};

/* Test data of a kind: incompressible, trivial, repetitive text, float32
 * vectors with random mantissas (barely compressible, like embeddings),
 * and float32 vectors of small quantized values (like image features). */
static void fill(uint8_t *p, size_t n, int kind, uint64_t seed)
{
    static const char text[] = "the quick brown fox jumps over the lazy dog; ";
    uint64_t s = seed;
    size_t i = 0;
    switch (kind) {
    case D_RANDOM:
        for (; i < n; i++)
            p[i] = (uint8_t)(tu_next(&s) >> 56);
        break;
    case D_ZEROS:
        memset(p, 0, n);
        break;
    case D_TEXT:
        for (; i < n; i++)
            p[i] = (uint8_t)text[i % (sizeof text - 1)];
        break;
    case D_FLOATS:
    case D_PIXELS:
        for (; i < n; i += 4) {
            float f = kind == D_FLOATS
                          ? tu_uniform(&s)
                          : (float)(tu_next(&s) % 3 == 0
                                        ? 0
                                        : (tu_next(&s) >> 60)) / 15.0f;
            size_t k = n - i < 4 ? n - i : 4;
            memcpy(p + i, &f, k);
        }
        break;
    default:
        ck_abort_msg("bad kind %d", kind);
    }
}

/* Compress src at level, check the size against bound, decompress into an
 * exact-size buffer and compare. Returns the compressed size. */
static size_t round_trip(const iqdb_codec_ops *c, const uint8_t *src,
                         size_t n, int level)
{
    size_t cap = c->bound(n);
    ck_assert_msg(cap >= n && cap > 0, "%s: bound(%zu) = %zu", c->name, n,
                  cap);
    uint8_t *z = xalloc(cap);
    size_t zlen = SIZE_MAX;
    int r = c->compress(src, n, z, cap, &zlen, level);
    ck_assert_msg(r == 0, "%s: compress %zu bytes at level %d: %s (%s)",
                  c->name, n, level, iqdb_errname(r), iqdb_errmsg(NULL));
    ck_assert_msg(zlen <= cap, "%s: %zu compressed bytes > bound %zu",
                  c->name, zlen, cap);
    uint8_t *zz = xdup(z, zlen); /* exact size: catches over-reads */
    free(z);
    uint8_t *back = xalloc(n);
    size_t blen = SIZE_MAX;
    r = c->decompress(zz, zlen, back, n, &blen);
    ck_assert_msg(r == 0, "%s: decompress %zu bytes: %s (%s)", c->name, n,
                  iqdb_errname(r), iqdb_errmsg(NULL));
    ck_assert_uint_eq(blen, n);
    ck_assert_msg(n == 0 || memcmp(back, src, n) == 0,
                  "%s: %zu bytes came back different", c->name, n);
    free(back);
    free(zz);
    return zlen;
}

/* Compress src with the codec's default level into a new exact-size
 * buffer (caller frees). */
static uint8_t *compress_new(const iqdb_codec_ops *c, const uint8_t *src,
                             size_t n, size_t *zlen)
{
    size_t cap = c->bound(n);
    uint8_t *z = xalloc(cap);
    int r = c->compress(src, n, z, cap, zlen, c->default_level);
    ck_assert_msg(r == 0, "%s: %s", c->name, iqdb_errmsg(NULL));
    uint8_t *exact = xdup(z, *zlen);
    free(z);
    return exact;
}

/* Decompress a copy of src[0..len) (exact size) into an exact-size dst of
 * dst_cap bytes; returns the code. On success the size must be right and,
 * when `same` is given, *same says whether the output equals expect. */
static int decode_cmp(const iqdb_codec_ops *c, const uint8_t *src, size_t len,
                      size_t dst_cap, const uint8_t *expect, int *same)
{
    uint8_t *in = xdup(src, len);
    uint8_t *out = xalloc(dst_cap);
    size_t out_len = SIZE_MAX;
    int r = c->decompress(in, len, out, dst_cap, &out_len);
    if (r == 0) {
        ck_assert_msg(out_len == dst_cap, "%s: success with %zu bytes, not %zu",
                      c->name, out_len, dst_cap);
        if (same != NULL)
            *same = dst_cap == 0 || memcmp(out, expect, dst_cap) == 0;
    }
    free(out);
    free(in);
    return r;
}

static int decode(const iqdb_codec_ops *c, const uint8_t *src, size_t len,
                  size_t dst_cap)
{
    return decode_cmp(c, src, len, dst_cap, NULL, NULL);
}

#define ASSERT_CORRUPT(c, r, what)                                            \
    ck_assert_msg((r) == IQDB_ECORRUPT, "%s: %s: got %s (%s)", (c)->name,     \
                  what, iqdb_errname(r), iqdb_errmsg(NULL))

/* ------------------------------------------------------------------ */

START_TEST(test_codec_listed)
{
    const codec_case *cc = &codecs[_i];
    const iqdb_codec_ops *c = load(cc->name);
    ck_assert_str_eq(c->name, cc->name);
    ck_assert_uint_eq(c->id, cc->id);
    ck_assert_uint_eq(c->abi_version, IQDB_ABI_VERSION);
    ck_assert_uint_eq(c->struct_size, sizeof(iqdb_codec_ops));
    iqdb_plugin_info *l;
    size_t n, found = 0;
    ck_assert_int_eq(iqdb_plugin_list(&l, &n), 0);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(l[i].name, cc->name) != 0)
            continue;
        found++;
        ck_assert_int_eq(l[i].kind, IQDB_PLUGIN_CODEC);
        ck_assert_str_eq(l[i].module, cc->name);
        ck_assert_ptr_nonnull(strstr(l[i].file, cc->name));
        ck_assert_uint_eq(l[i].abi_major, IQDB_ABI_MAJOR);
        ck_assert_str_ne(l[i].version, "");
        ck_assert_str_ne(l[i].description, "");
        ck_assert_uint_eq(l[i].caps, 0);
    }
    ck_assert_uint_eq(found, 1);
    iqdb_plugin_list_free(l);
}
END_TEST

START_TEST(test_codec_find_by_id)
{
    /* Load every codec, then each id must lead to its own table. */
    const iqdb_codec_ops *byname[NCODECS];
    for (int i = 0; i < NCODECS; i++)
        byname[i] = load(codecs[i].name);
    const iqdb_codec_ops *c = NULL;
    int r = iqdb__find_codec(NULL, codecs[_i].id, &c);
    ck_assert_msg(r == 0, "%s", iqdb_errmsg(NULL));
    ck_assert_ptr_eq(c, byname[_i]);
    ck_assert_int_eq(iqdb__find_codec(NULL, IQDB_CODEC_ID_PRIVATE + 77, &c),
                     IQDB_ENOPLUGIN);
}
END_TEST

START_TEST(test_codec_round_trip)
{
    const iqdb_codec_ops *c = load(codecs[_i].name);
    static const size_t sizes[] = {0, 1, 2, 3, 4, 7, 64, 255, 1000, 4096,
                                   65536 + 5, (1u << 20) + 13};
    for (int k = 0; k < D_KINDS; k++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t n = sizes[s];
            uint8_t *src = xalloc(n);
            fill(src, n, k, 1000 + s);
            size_t zlen = round_trip(c, src, n, c->default_level);
            /* A codec that stored everything raw would pass the rest. */
            if ((k == D_ZEROS || k == D_TEXT) && n >= 4096)
                ck_assert_msg(zlen < n / 16, "%s: %s data of %zu bytes "
                              "only shrank to %zu", c->name, kind_names[k],
                              n, zlen);
            if (k == D_PIXELS && n >= 65536)
                ck_assert_msg(zlen < n / 4 * 3, "%s: pixels %zu -> %zu",
                              c->name, n, zlen);
            free(src);
        }
    }
}
END_TEST

START_TEST(test_codec_levels)
{
    const codec_case *cc = &codecs[_i];
    const iqdb_codec_ops *c = load(cc->name);
    size_t n = 65536 + 17;
    uint8_t *src = xalloc(n);
    fill(src, n, D_PIXELS, 7);
    for (size_t i = 0; i < cc->n_good; i++)
        round_trip(c, src, n, cc->good_levels[i]);
    round_trip(c, src, n, c->default_level);
    free(src);
}
END_TEST

START_TEST(test_codec_bad_level)
{
    const codec_case *cc = &codecs[_i];
    const iqdb_codec_ops *c = load(cc->name);
    uint8_t src[100], dst[1000];
    fill(src, sizeof src, D_TEXT, 1);
    for (size_t i = 0; i < cc->n_bad; i++) {
        size_t out = 12345;
        int r = c->compress(src, sizeof src, dst, sizeof dst, &out,
                            cc->bad_levels[i]);
        ck_assert_msg(r == IQDB_EINVAL, "%s: level %d: got %s", cc->name,
                      cc->bad_levels[i], iqdb_errname(r));
        const char *msg = iqdb_errmsg(NULL);
        ck_assert_msg(strstr(msg, "level") && strstr(msg, cc->name) &&
                          strstr(msg, cc->range_hint),
                      "%s: message '%s' does not name the range", cc->name,
                      msg);
        ck_assert_uint_eq(out, 12345);
    }
}
END_TEST

START_TEST(test_codec_bound)
{
    const iqdb_codec_ops *c = load(codecs[_i].name);
    size_t prev = 0;
    for (size_t n = 0; n < 100000; n = n * 3 + 1) {
        size_t b = c->bound(n);
        ck_assert_msg(b >= n && b >= prev, "%s: bound(%zu) = %zu", c->name,
                      n, b);
        prev = b;
    }
    ck_assert_uint_ge(c->bound((size_t)1 << 31), (size_t)1 << 31);
    /* Sizes whose bound does not fit a size_t. */
    ck_assert_uint_eq(c->bound(SIZE_MAX), 0);
    ck_assert_uint_eq(c->bound(SIZE_MAX - 1), 0);
    ck_assert_uint_eq(c->bound(SIZE_MAX - 4096), 0);
}
END_TEST

START_TEST(test_codec_dst_too_small)
{
    const iqdb_codec_ops *c = load(codecs[_i].name);
    static const int kinds[] = {D_RANDOM, D_TEXT};
    for (size_t k = 0; k < 2; k++) {
        size_t n = 5000;
        uint8_t *src = xalloc(n);
        fill(src, n, kinds[k], 3);
        size_t zlen;
        uint8_t *z = compress_new(c, src, n, &zlen);
        size_t caps[] = {0, 1, 4, zlen / 2, zlen - 1, zlen};
        for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
            uint8_t *dst = xalloc(caps[i]);
            size_t out = 777;
            int r = c->compress(src, n, dst, caps[i], &out, c->default_level);
            if (caps[i] < zlen) {
                ck_assert_msg(r == IQDB_ERANGE, "%s: cap %zu of %zu: got %s",
                              c->name, caps[i], zlen, iqdb_errname(r));
                ck_assert_uint_eq(out, 777);
                ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "fit"));
            } else if (r == 0 || c->id != IQDB_CODEC_ID_ZSTD) {
                /* Exactly enough room is enough for lz4. zstd's encoder
                 * wants some slack beyond the final size, so for it an
                 * exact fit may also be refused, with the same code. */
                ck_assert_msg(r == 0, "%s: %s", c->name, iqdb_errmsg(NULL));
                ck_assert_uint_eq(out, zlen);
                ck_assert(memcmp(dst, z, zlen) == 0);
            } else {
                ck_assert_int_eq(r, IQDB_ERANGE);
            }
            free(dst);
        }
        free(z);
        free(src);
    }
}
END_TEST

START_TEST(test_codec_wrong_size)
{
    const iqdb_codec_ops *c = load(codecs[_i].name);
    static const size_t sizes[] = {0, 1, 1000, 100000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s], zlen;
        uint8_t *src = xalloc(n);
        fill(src, n, D_FLOATS, s);
        uint8_t *z = compress_new(c, src, n, &zlen);
        ck_assert_int_eq(decode(c, z, zlen, n), 0);
        ASSERT_CORRUPT(c, decode(c, z, zlen, n + 1), "one byte more");
        ASSERT_CORRUPT(c, decode(c, z, zlen, n * 2 + 10), "more");
        if (n > 0) {
            ASSERT_CORRUPT(c, decode(c, z, zlen, n - 1), "one byte less");
            ASSERT_CORRUPT(c, decode(c, z, zlen, 0), "nothing");
        }
        free(z);
        free(src);
    }
}
END_TEST

START_TEST(test_codec_trailing_bytes)
{
    const iqdb_codec_ops *c = load(codecs[_i].name);
    static const size_t sizes[] = {0, 1, 3000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s], zlen;
        uint8_t *src = xalloc(n);
        fill(src, n, D_TEXT, s);
        uint8_t *z = compress_new(c, src, n, &zlen);
        uint8_t *longer = xalloc(zlen + 8);
        memcpy(longer, z, zlen);
        memset(longer + zlen, 0, 8);
        for (size_t extra = 1; extra <= 8; extra++)
            ASSERT_CORRUPT(c, decode(c, longer, zlen + extra, n),
                           "bytes after the data");
        /* The same data twice is not the data. */
        uint8_t *twice = xalloc(2 * zlen);
        memcpy(twice, z, zlen);
        memcpy(twice + zlen, z, zlen);
        ASSERT_CORRUPT(c, decode(c, twice, 2 * zlen, n), "twice, as once");
        ASSERT_CORRUPT(c, decode(c, twice, 2 * zlen, 2 * n), "twice");
        free(twice);
        free(longer);
        free(z);
        free(src);
    }
}
END_TEST

/* Small inputs whose compressed forms cover both compressed and stored
 * (incompressible) paths of each codec. */
static uint8_t *small_sample(int which, size_t *n)
{
    *n = which == 0 ? 512 : 48;
    uint8_t *src = xalloc(*n);
    fill(src, *n, which == 0 ? D_PIXELS : D_RANDOM, 99);
    return src;
}

START_TEST(test_codec_truncated)
{
    const iqdb_codec_ops *c = load(codecs[_i].name);
    for (int w = 0; w < 2; w++) {
        size_t n, zlen;
        uint8_t *src = small_sample(w, &n);
        uint8_t *z = compress_new(c, src, n, &zlen);
        for (size_t len = 0; len < zlen; len++) {
            char what[64];
            snprintf(what, sizeof what, "cut to %zu of %zu", len, zlen);
            ASSERT_CORRUPT(c, decode(c, z, len, n), what);
        }
        free(z);
        free(src);
    }
}
END_TEST

START_TEST(test_codec_byte_flip)
{
    const iqdb_codec_ops *c = load(codecs[_i].name);
    for (int w = 0; w < 2; w++) {
        size_t n, zlen, ok = 0, total = 0;
        uint8_t *src = small_sample(w, &n);
        uint8_t *z = compress_new(c, src, n, &zlen);
        uint8_t *bad = xdup(z, zlen);
        size_t hdr = c->id == IQDB_CODEC_ID_ZSTD ? 4 : 12;
        /* Every byte replaced by every other value. */
        for (size_t pos = 0; pos < zlen; pos++) {
            for (unsigned x = 1; x < 256; x++) {
                bad[pos] = (uint8_t)(z[pos] ^ x);
                int same = 0;
                int r = decode_cmp(c, bad, zlen, n, src, &same);
                ck_assert_msg(r == IQDB_ECORRUPT || r == 0,
                              "%s: byte %zu ^ 0x%02x: got %s", c->name, pos,
                              x, iqdb_errname(r));
                /* zstd's magic; lz4's size and (sole) chunk length:
                 * never accepted damaged. */
                ck_assert_msg(!(r == 0 && pos < hdr),
                              "%s: damaged header byte %zu accepted",
                              c->name, pos);
                /* zstd frames carry a checksum, so what it accepts is
                 * the original: the flip hit a bit the format ignores
                 * (an unused header flag, slack in a table description).
                 * lz4 blocks have none (the snapshot's CRC covers them),
                 * so a flipped literal decodes to other bytes. */
                ck_assert_msg(!(r == 0 && !same &&
                                c->id == IQDB_CODEC_ID_ZSTD),
                              "%s: byte %zu ^ 0x%02x decoded to other data",
                              c->name, pos, x);
                ok += r == 0;
                total++;
            }
            bad[pos] = z[pos];
        }
        ck_assert_msg(ok < total, "%s: every flip accepted", c->name);
        free(bad);
        free(z);
        free(src);
    }
}
END_TEST

START_TEST(test_codec_garbage)
{
    const iqdb_codec_ops *c = load(codecs[_i].name);
    uint64_t s = 4242 + (uint64_t)_i;
    for (int t = 0; t < 3000; t++) {
        size_t len = (size_t)(tu_next(&s) % 600);
        size_t cap = t % 4 == 0 ? 0 : (size_t)(tu_next(&s) % 5000);
        uint8_t *g = xalloc(len);
        fill(g, len, D_RANDOM, tu_next(&s));
        ASSERT_CORRUPT(c, decode(c, g, len, cap), "random bytes");
        /* A plausible header followed by garbage: must fail or, very
         * rarely, decode to exactly cap bytes. */
        if (len >= 8) {
            if (c->id == IQDB_CODEC_ID_ZSTD) {
                g[0] = 0x28, g[1] = 0xb5, g[2] = 0x2f, g[3] = 0xfd;
            } else {
                for (int b = 0; b < 8; b++)
                    g[b] = (uint8_t)((uint64_t)cap >> (8 * b));
            }
            int r = decode(c, g, len, cap);
            ck_assert_msg(r == IQDB_ECORRUPT || r == 0, "%s: got %s",
                          c->name, iqdb_errname(r));
        }
        free(g);
    }
}
END_TEST

START_TEST(test_codec_alloc_fail)
{
    const iqdb_codec_ops *c = load(codecs[_i].name);
    size_t n = 100000, zlen = 0, out = 0;
    uint8_t *src = xalloc(n), *back = xalloc(n);
    fill(src, n, D_PIXELS, 5);
    size_t cap = c->bound(n);
    uint8_t *z = xalloc(cap);

    iqdb__alloc_fail_after(-1);
    ck_assert_int_eq(c->compress(src, n, z, cap, &zlen, c->default_level), 0);
    long nc = iqdb__alloc_fail_after(-1);
    ck_assert_int_eq(c->decompress(z, zlen, back, n, &out), 0);
    long nd = iqdb__alloc_fail_after(-1);
    if (c->id == IQDB_CODEC_ID_ZSTD) {
        /* zstd's contexts come from the host allocator. */
        ck_assert_int_ge(nc, 1);
        ck_assert_int_ge(nd, 1);
    } else {
        /* lz4 promises to allocate nothing. */
        ck_assert_int_eq(nc, 0);
        ck_assert_int_eq(nd, 0);
    }
    for (long k = 0; k < nc; k++) {
        iqdb__alloc_fail_after(k);
        int r = c->compress(src, n, z, cap, &zlen, c->default_level);
        iqdb__alloc_fail_after(-1);
        ck_assert_msg(r == IQDB_ENOMEM, "%s: compress, allocation %ld "
                      "failing: got %s", c->name, k, iqdb_errname(r));
    }
    for (long k = 0; k < nd; k++) {
        iqdb__alloc_fail_after(k);
        int r = c->decompress(z, zlen, back, n, &out);
        iqdb__alloc_fail_after(-1);
        ck_assert_msg(r == IQDB_ENOMEM, "%s: decompress, allocation %ld "
                      "failing: got %s", c->name, k, iqdb_errname(r));
    }
    /* With exactly enough allocations both work again. */
    iqdb__alloc_fail_after(nc);
    ck_assert_int_eq(c->compress(src, n, z, cap, &zlen, c->default_level), 0);
    iqdb__alloc_fail_after(nd);
    memset(back, 0, n);
    ck_assert_int_eq(c->decompress(z, zlen, back, n, &out), 0);
    iqdb__alloc_fail_after(-1);
    ck_assert(memcmp(back, src, n) == 0);
    free(z);
    free(back);
    free(src);
}
END_TEST

/* ---- zstd only: hand-made frames (RFC 8878, section 3.1.1) ---------- */

/* A frame of one RLE block of `n` copies of 'A' (n < 2^21), with the
 * content size field fcs (8 bytes) in a single-segment header when
 * with_fcs, else with no size and a 1 KiB window. Returns its length. */
static size_t rle_frame(uint8_t *f, uint64_t fcs, int with_fcs, uint32_t n)
{
    size_t p = 0;
    f[p++] = 0x28, f[p++] = 0xb5, f[p++] = 0x2f, f[p++] = 0xfd;
    if (with_fcs) {
        f[p++] = 0xe0; /* 8-byte content size, single segment */
        for (int b = 0; b < 8; b++)
            f[p++] = (uint8_t)(fcs >> (8 * b));
    } else {
        f[p++] = 0x00; /* no content size */
        f[p++] = 0x00; /* window 2^10 */
    }
    uint32_t bh = n << 3 | 1u << 1 | 1u; /* size, RLE, last block */
    f[p++] = (uint8_t)bh, f[p++] = (uint8_t)(bh >> 8);
    f[p++] = (uint8_t)(bh >> 16);
    f[p++] = 'A';
    return p;
}

START_TEST(test_codec_zstd_crafted_frames)
{
    const iqdb_codec_ops *c = load("zstd");
    uint8_t f[64];
    uint8_t *out = xalloc(100);
    size_t len, got = 0;

    /* The hand-made frame is valid when it tells the truth... */
    len = rle_frame(f, 100, 1, 100);
    ck_assert_msg(c->decompress(f, len, out, 100, &got) == 0, "%s",
                  iqdb_errmsg(NULL));
    ck_assert_uint_eq(got, 100);
    ck_assert(out[0] == 'A' && out[99] == 'A');

    /* ...and refused, before any allocation, when it claims a terabyte. */
    len = rle_frame(f, (uint64_t)1 << 40, 1, 100);
    iqdb__alloc_fail_after(0);
    int r = c->decompress(f, len, out, 100, &got);
    long allocs = iqdb__alloc_fail_after(-1);
    ASSERT_CORRUPT(c, r, "1 TiB content size");
    ck_assert_ptr_nonnull(strstr(iqdb_errmsg(NULL), "1099511627776"));
    ck_assert_int_eq(allocs, 0);

    /* No declared size. */
    len = rle_frame(f, 0, 0, 100);
    ASSERT_CORRUPT(c, decode(c, f, len, 100), "unknown content size");

    /* Two frames, and a frame followed by a skippable frame. */
    uint8_t two[64];
    size_t one = rle_frame(two, 50, 1, 50);
    memcpy(two + one, two, one);
    ASSERT_CORRUPT(c, decode(c, two, 2 * one, 50), "two frames as one");
    ASSERT_CORRUPT(c, decode(c, two, 2 * one, 100), "two frames as both");
    static const uint8_t skip[] = {0x50, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 9, 9};
    memcpy(two + one, skip, sizeof skip);
    ASSERT_CORRUPT(c, decode(c, two, one + sizeof skip, 50),
                   "trailing skippable frame");
    ASSERT_CORRUPT(c, decode(c, skip, sizeof skip, 0), "skippable frame");
    free(out);
}
END_TEST

/* ---- lz4 only: the chunked layout across a chunk boundary ----------- */

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

START_TEST(test_codec_lz4_chunk_boundary)
{
    const iqdb_codec_ops *c = load("lz4");
    const size_t chunk = (size_t)64 << 20, n = chunk + 3;
    uint8_t *src = xalloc(n);
    fill(src, n, D_PIXELS, 11);
    size_t zlen;
    uint8_t *z = compress_new(c, src, n, &zlen);
    ck_assert_uint_le(zlen, c->bound(n));
    uint8_t *out = xalloc(n);
    size_t got = 0;
    ck_assert_int_eq(c->decompress(z, zlen, out, n, &got), 0);
    ck_assert_uint_eq(got, n);
    ck_assert(memcmp(out, src, n) == 0);

    /* The layout at the top of lz4.c: size, then two length-prefixed
     * blocks, the second of the 3 bytes past the first chunk. */
    uint64_t total = (uint64_t)le32(z) | (uint64_t)le32(z + 4) << 32;
    ck_assert_uint_eq(total, n);
    size_t c1 = le32(z + 8);
    ck_assert_uint_lt(12 + c1 + 4, zlen);
    size_t c2 = le32(z + 12 + c1);
    ck_assert_uint_eq(16 + c1 + c2, zlen);

    ASSERT_CORRUPT(c, c->decompress(z, zlen, out, n - 1, &got), "n - 1");
    ASSERT_CORRUPT(c, c->decompress(z, zlen, out, chunk, &got), "one chunk");
    /* Cut inside the second chunk, and inside its length. */
    ASSERT_CORRUPT(c, c->decompress(z, zlen - 1, out, n, &got), "cut");
    ASSERT_CORRUPT(c, c->decompress(z, 12 + c1 + 2, out, n, &got), "cut len");
    ASSERT_CORRUPT(c, c->decompress(z, 12 + c1, out, n, &got), "one block");
    /* An impossible length for the 3-byte chunk. */
    z[12 + c1] = 0xff;
    ASSERT_CORRUPT(c, c->decompress(z, zlen, out, n, &got), "long chunk");
    z[12 + c1] = 0;
    ASSERT_CORRUPT(c, c->decompress(z, zlen, out, n, &got), "empty chunk");
    free(out);

    /* Room for the first chunk only. */
    uint8_t *small = xalloc(12 + c1 + 2);
    ck_assert_int_eq(c->compress(src, n, small, 12 + c1 + 2, &got, 1),
                     IQDB_ERANGE);
    free(small);
    free(z);
    free(src);
}
END_TEST

static Suite *codec_suite(void)
{
    Suite *s = suite_create("codec");
    struct {
        const char *name;
        const TTest *t;
        int per_codec;
    } cases[] = {
        {"listed", test_codec_listed, 1},
        {"find_by_id", test_codec_find_by_id, 1},
        {"round_trip", test_codec_round_trip, 1},
        {"levels", test_codec_levels, 1},
        {"bad_level", test_codec_bad_level, 1},
        {"bound", test_codec_bound, 1},
        {"dst_too_small", test_codec_dst_too_small, 1},
        {"wrong_size", test_codec_wrong_size, 1},
        {"trailing_bytes", test_codec_trailing_bytes, 1},
        {"truncated", test_codec_truncated, 1},
        {"byte_flip", test_codec_byte_flip, 1},
        {"garbage", test_codec_garbage, 1},
        {"alloc_fail", test_codec_alloc_fail, 1},
        {"zstd_crafted_frames", test_codec_zstd_crafted_frames, 0},
        {"lz4_chunk_boundary", test_codec_lz4_chunk_boundary, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        /* The flip sweep and the 64 MiB case take a few seconds under
         * ASan, close to Check's 4 s default when run by hand. */
        tcase_set_timeout(tc, 120);
        if (cases[i].per_codec)
            tcase_add_loop_test(tc, cases[i].t, 0, NCODECS);
        else
            tcase_add_test(tc, cases[i].t);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return tu_run(codec_suite());
}
