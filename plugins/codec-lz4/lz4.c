/*
 * plugins/codec-lz4/lz4.c - the LZ4 snapshot codec (id IQDB_CODEC_ID_LZ4).
 *
 * An LZ4 block holds at most LZ4_MAX_INPUT_SIZE (about 2 GiB) and sizes
 * are ints in its API, so input is cut into fixed 64 MiB chunks, each its
 * own raw LZ4 block. Every buffer uses this one layout, small or large;
 * all integers are little-endian:
 *
 *   offset  size  field
 *   0       8     total uncompressed size U (u64)
 *   8       ...   ceil(U / 64 MiB) chunks, in order, each:
 *                   0  4  compressed length C of the block (u32),
 *                         1 <= C <= LZ4_compressBound(chunk size)
 *                   4  C  raw LZ4 block (no frame, no checksum) that
 *                         decodes to exactly the chunk size: 64 MiB for
 *                         every chunk but the last, the rest for the last
 *
 * The buffer ends right after the last chunk; U = 0 is the 8-byte header
 * alone. The chunk sizes follow from U, so they are not stored; U itself
 * is stored so that a wrong expected size is caught before any decoding.
 * Integrity is the snapshot's business (its sections carry CRC32C), so
 * blocks carry no checksum of their own.
 *
 * Levels: 1 (or 0) is LZ4's default speed; a negative level -N trades
 * ratio for speed with acceleration N, like `lz4 --fast=N`. LZ4 needs no
 * heap memory for either direction, so the plugin allocates nothing.
 */
#include <limits.h>
#include <lz4.h>
#include <stdint.h>
#include <string.h>

#include <iqdb/plugin.h>

#define CODEC_VERSION "0.1.0"
#define DEFAULT_LEVEL 1
/* Most negative level: LZ4 caps acceleration at 65537 internally (it is
 * not in lz4.h). */
#define MIN_LEVEL (-65537)
#define HEADER_SIZE 8
#define CHUNK_HEADER_SIZE 4
#define CHUNK_SIZE ((size_t)64 << 20)

_Static_assert(CHUNK_SIZE <= LZ4_MAX_INPUT_SIZE,
               "a chunk must fit in one LZ4 block");

static const iqdb_host *host;

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* Largest stored size of one chunk of n <= CHUNK_SIZE bytes. */
static size_t chunk_bound(size_t n)
{
    return CHUNK_HEADER_SIZE + (size_t)LZ4_compressBound((int)n);
}

static size_t lz4_bound(size_t src_len)
{
    size_t full = src_len / CHUNK_SIZE, rest = src_len % CHUNK_SIZE;
    size_t per = chunk_bound(CHUNK_SIZE);
    size_t tail = rest ? chunk_bound(rest) : 0;
    if (full > (SIZE_MAX - HEADER_SIZE - tail) / per)
        return 0;
    return HEADER_SIZE + full * per + tail;
}

static int check_level(int level, int *accel)
{
    if (level < MIN_LEVEL || level > 1)
        return host->set_error(NULL, IQDB_EINVAL,
                               "lz4: level %d out of range (%d to 1; 0 or 1 "
                               "for the default, -N for acceleration N)",
                               level, MIN_LEVEL);
    *accel = level < 0 ? -level : 1;
    return 0;
}

static int too_small(size_t dst_cap)
{
    return host->set_error(NULL, IQDB_ERANGE,
                           "lz4: output does not fit in %zu bytes (use "
                           "bound() to size it)",
                           dst_cap);
}

static int lz4_compress(const void *src, size_t src_len, void *dst,
                        size_t dst_cap, size_t *out_len, int level)
{
    int accel = 1, r;
    if ((src == NULL && src_len > 0) || (dst == NULL && dst_cap > 0) ||
        out_len == NULL)
        return host->set_error(NULL, IQDB_EINVAL,
                               "lz4: compress: NULL buffer or out_len");
    if ((r = check_level(level, &accel)) != 0)
        return r;
    const uint8_t *in = src;
    uint8_t *out = dst;
    if (dst_cap < HEADER_SIZE)
        return too_small(dst_cap);
    put_le64(out, (uint64_t)src_len);
    size_t pos = HEADER_SIZE;
    for (size_t done = 0; done < src_len;) {
        size_t n = src_len - done < CHUNK_SIZE ? src_len - done : CHUNK_SIZE;
        if (dst_cap - pos <= CHUNK_HEADER_SIZE)
            return too_small(dst_cap);
        size_t room = dst_cap - pos - CHUNK_HEADER_SIZE;
        /* More room than the block can need is no use, and LZ4 takes an
         * int. */
        if (room > chunk_bound(n) - CHUNK_HEADER_SIZE)
            room = chunk_bound(n) - CHUNK_HEADER_SIZE;
        int c = LZ4_compress_fast((const char *)in + done,
                                  (char *)out + pos + CHUNK_HEADER_SIZE,
                                  (int)n, (int)room, accel);
        if (c <= 0) /* 0: it did not fit in room */
            return too_small(dst_cap);
        put_le32(out + pos, (uint32_t)c);
        pos += CHUNK_HEADER_SIZE + (size_t)c;
        done += n;
    }
    *out_len = pos;
    return 0;
}

static int corrupt_at(size_t offset, const char *what)
{
    return host->set_error(NULL, IQDB_ECORRUPT, "lz4: %s at byte %zu", what,
                           offset);
}

static int lz4_decompress(const void *src, size_t src_len, void *dst,
                          size_t dst_cap, size_t *out_len)
{
    if ((src == NULL && src_len > 0) || (dst == NULL && dst_cap > 0) ||
        out_len == NULL)
        return host->set_error(NULL, IQDB_EINVAL,
                               "lz4: decompress: NULL buffer or out_len");
    const uint8_t *in = src;
    uint8_t *out = dst;
    if (src_len < HEADER_SIZE)
        return corrupt_at(0, "truncated header");
    uint64_t total = get_le64(in);
    if (total != (uint64_t)dst_cap)
        return host->set_error(NULL, IQDB_ECORRUPT,
                               "lz4: data holds %llu bytes, expected %zu",
                               (unsigned long long)total, dst_cap);
    size_t pos = HEADER_SIZE;
    for (size_t done = 0; done < dst_cap;) {
        size_t n = dst_cap - done < CHUNK_SIZE ? dst_cap - done : CHUNK_SIZE;
        if (src_len - pos < CHUNK_HEADER_SIZE)
            return corrupt_at(pos, "truncated chunk header");
        uint32_t c = get_le32(in + pos);
        /* No encoder writes more than the bound; checking it also keeps
         * c within LZ4's int. */
        if (c == 0 || c > chunk_bound(n) - CHUNK_HEADER_SIZE)
            return corrupt_at(pos, "impossible chunk length");
        pos += CHUNK_HEADER_SIZE;
        if (c > src_len - pos)
            return corrupt_at(pos, "truncated chunk");
        /* LZ4_decompress_safe never reads past c bytes nor writes past n,
         * whatever the block holds. */
        int d = LZ4_decompress_safe((const char *)in + pos, (char *)out + done,
                                    (int)c, (int)n);
        if (d < 0 || (size_t)d != n)
            return corrupt_at(pos, "malformed block");
        pos += c;
        done += n;
    }
    if (pos != src_len)
        return corrupt_at(pos, "trailing bytes");
    *out_len = dst_cap;
    return 0;
}

static const iqdb_codec_ops lz4_ops = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_codec_ops),
    .name = "lz4",
    .description = "LZ4 raw blocks in 64 MiB chunks (fast)",
    .id = IQDB_CODEC_ID_LZ4,
    .default_level = DEFAULT_LEVEL,
    .bound = lz4_bound,
    .compress = lz4_compress,
    .decompress = lz4_decompress,
};

static int lz4_init(const iqdb_host *h, const iqdb_registrar *reg)
{
    host = h;
    return reg->register_codec(reg->ctx, &lz4_ops);
}

static const iqdb_module lz4_module = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_module),
    .name = "lz4",
    .version = CODEC_VERSION,
    .init = lz4_init,
};

IQDB_PLUGIN_EXPORT const iqdb_module *lz4_LTX_iqdb_module(void);

const iqdb_module *lz4_LTX_iqdb_module(void)
{
    return &lz4_module;
}
