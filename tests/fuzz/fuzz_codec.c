/*
 * tests/fuzz/fuzz_codec.c - libFuzzer target for the zstd and lz4 codec
 * plugins.
 *
 * Each input is used two ways:
 * 1. As hostile snapshot bytes: input[4..] goes to both codecs'
 *    decompress with dst_cap = (little-endian u32 of input[0..4)) mod
 *    (1 MiB + 1), into a buffer of exactly dst_cap bytes. Anything but
 *    IQDB_ECORRUPT, or success with exactly dst_cap bytes, is a bug; so is
 *    any sanitizer report. When input[4] has its top bit set, the host
 *    allocator is made to fail after (input[4] & 3) allocations, which
 *    adds IQDB_ENOMEM to the allowed answers and walks the unwinding code.
 * 2. As data: the whole input is compressed by each codec (level picked
 *    from input[4]) into bound() bytes and decompressed again; it must
 *    come back equal, at most bound() bytes long, and must be refused
 *    (IQDB_ECORRUPT) when asked for one byte more or one byte less. Then
 *    one byte of the compressed form, chosen by the input, is damaged and
 *    it is decoded again as in 1 (with the same allocation failure):
 *    random bytes seldom get past the headers, damaged valid streams
 *    reach the block decoders.
 *
 * The plugin sources are compiled into the target (their internals are
 * static and their entry points have distinct names, so both fit in one
 * program) so that libFuzzer's coverage and comparison tracing see inside
 * them; they get the real host table and fault-injecting allocator from
 * the core's convenience library, through their entry points and init,
 * exactly as the loader would call them. Not built by make.
 *
 * Build (clang with libFuzzer; B is a configured and built, non-sanitizer
 * build tree - the core objects must not carry gcc's ASan, clang's runtime
 * differs - and S the source tree):
 *
 *   S=/work/main B=/tmp/build-codec
 *   make -C $B core/libiqdbcore.la
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=all -I$S/sdk/include -I$S/core \
 *       $S/tests/fuzz/fuzz_codec.c $S/plugins/codec-zstd/zstd.c \
 *       $S/plugins/codec-lz4/lz4.c $B/core/.libs/libiqdbcore.a \
 *       -lzstd -llz4 -lltdl -lgomp -lm -lpthread -o fuzz_codec
 *
 * Run: see tests/fuzz/README.md.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iqdb_int.h"

#define MAX_DST ((size_t)1 << 20)

/* The plugins' entry points, compiled in from their sources. */
const iqdb_module *zstd_LTX_iqdb_module(void);
const iqdb_module *lz4_LTX_iqdb_module(void);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { ZSTD, LZ4, NCODECS };
static const iqdb_codec_ops *codecs[NCODECS];

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz_codec: " __VA_ARGS__);                      \
            fprintf(stderr, " [%s]\n", iqdb__last_error());                   \
            abort();                                                          \
        }                                                                     \
    } while (0)

static int grab_index(void *ctx, const iqdb_index_ops *ops)
{
    (void)ctx, (void)ops;
    return IQDB_EPLUGIN; /* a codec module registers no index */
}

static int grab_codec(void *ctx, const iqdb_codec_ops *ops)
{
    *(const iqdb_codec_ops **)ctx = ops;
    return 0;
}

static const iqdb_codec_ops *init_codec(const iqdb_module *m)
{
    const iqdb_codec_ops *ops = NULL;
    iqdb_registrar reg = {IQDB_ABI_VERSION, sizeof reg, &ops, grab_index,
                          grab_codec};
    if (m->init(iqdb__host(), &reg) != 0 || ops == NULL) {
        fprintf(stderr, "fuzz_codec: init of %s failed\n", m->name);
        abort();
    }
    return ops;
}

/* Decompress src into an exact-size buffer; check the answer is allowed. */
static void decode_hostile(const iqdb_codec_ops *c, const uint8_t *src,
                           size_t len, size_t dst_cap, int fail_after)
{
    uint8_t *dst = malloc(dst_cap ? dst_cap : 1);
    if (dst == NULL)
        return;
    size_t out = SIZE_MAX;
    if (fail_after >= 0)
        iqdb__alloc_fail_after(fail_after);
    int r = c->decompress(src, len, dst, dst_cap, &out);
    iqdb__alloc_fail_after(-1);
    CHECK(r == 0 || r == IQDB_ECORRUPT ||
              (r == IQDB_ENOMEM && fail_after >= 0),
          "%s: decompress returned %s", c->name, iqdb_errname(r));
    CHECK(r != 0 || out == dst_cap, "%s: decoded %zu bytes, not %zu",
          c->name, out, dst_cap);
    free(dst);
}

static int level_for(const iqdb_codec_ops *c, uint8_t sel)
{
    /* zstd: -3 to 19 (20 and up need far more memory than they are worth
     * here); lz4: 1 down to -14. */
    return c == codecs[ZSTD] ? (int)(sel % 23) - 3 : 1 - (int)(sel % 16);
}

static void round_trip(const iqdb_codec_ops *c, const uint8_t *src,
                       size_t n, int level, int fail_after)
{
    size_t cap = c->bound(n);
    CHECK(cap > 0, "%s: bound(%zu) = 0", c->name, n);
    uint8_t *z = malloc(cap), *back = malloc(n + 1);
    CHECK(z != NULL && back != NULL, "out of memory");
    size_t zlen = SIZE_MAX, blen = SIZE_MAX;
    int r = c->compress(src, n, z, cap, &zlen, level);
    CHECK(r == 0, "%s: compress %zu bytes at level %d: %s", c->name, n,
          level, iqdb_errname(r));
    CHECK(zlen <= cap, "%s: %zu bytes > bound %zu", c->name, zlen, cap);
    r = c->decompress(z, zlen, back, n, &blen);
    CHECK(r == 0 && blen == n, "%s: decompress: %s", c->name,
          iqdb_errname(r));
    CHECK(n == 0 || memcmp(back, src, n) == 0, "%s: data differs", c->name);
    r = c->decompress(z, zlen, back, n + 1, &blen);
    CHECK(r == IQDB_ECORRUPT, "%s: accepted n + 1: %s", c->name,
          iqdb_errname(r));
    if (n > 0) {
        r = c->decompress(z, zlen, back, n - 1, &blen);
        CHECK(r == IQDB_ECORRUPT, "%s: accepted n - 1: %s", c->name,
              iqdb_errname(r));
    }
    /* Position and mask come from the data, so they vary with it. */
    if (n >= 3 && zlen > 0) {
        z[(size_t)(src[1] | src[2] << 8) % zlen] ^= (uint8_t)(src[0] | 1);
        decode_hostile(c, z, zlen, n, fail_after);
    }
    free(back);
    free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (codecs[ZSTD] == NULL) {
        codecs[ZSTD] = init_codec(zstd_LTX_iqdb_module());
        codecs[LZ4] = init_codec(lz4_LTX_iqdb_module());
    }
    uint8_t sel = size > 4 ? data[4] : 0;
    int fail_after = sel & 0x80 ? sel & 3 : -1;
    if (size >= 4) {
        uint32_t v = (uint32_t)data[0] | (uint32_t)data[1] << 8 |
                     (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
        size_t dst_cap = (size_t)v % (MAX_DST + 1);
        for (int i = 0; i < NCODECS; i++)
            decode_hostile(codecs[i], data + 4, size - 4, dst_cap,
                           fail_after);
    }
    for (int i = 0; i < NCODECS; i++)
        round_trip(codecs[i], data, size, level_for(codecs[i], sel),
                   fail_after);
    return 0;
}
