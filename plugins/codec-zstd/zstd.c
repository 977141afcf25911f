/*
 * plugins/codec-zstd/zstd.c - the zstd snapshot codec (id
 * IQDB_CODEC_ID_ZSTD).
 *
 * Format: exactly one standard zstd frame (RFC 8878) per compressed
 * buffer, written with the content size in its header and a content
 * checksum, no dictionary. Nothing else precedes or follows it, so the
 * bytes are what `zstd -d` reads.
 *
 * decompress is fed snapshot bytes straight from disk, so it trusts
 * nothing:
 * - the frame must start with the zstd magic number (this also keeps
 *   skippable frames and legacy formats, whose decoders are older code,
 *   out);
 * - the content size declared in the header must be present and equal to
 *   dst_cap before a single byte is decoded, so a frame claiming terabytes
 *   costs nothing but the header read;
 * - the frame must end exactly at src_len: no trailing bytes, no second
 *   frame;
 * - decoding is one-shot into dst, whose size is the caller's, so zstd
 *   never allocates a window of the frame's choosing; the only allocation
 *   is the fixed-size decoding context, made through the host allocator.
 *
 * The plugin keeps no state besides the host table: a context is created
 * per call (snapshots compress a handful of large sections, so the cost
 * is negligible) and every function is safe to call from any thread.
 */
/* ZSTD_customMem and the *_advanced constructors sit in zstd.h's
 * "experimental" section. They have been unchanged since zstd 1.3 and
 * libzstd exports them; they are the only way to route zstd's allocations
 * through the host, which the plugin contract asks for. */
#define ZSTD_STATIC_LINKING_ONLY
#include <stdint.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <iqdb/plugin.h>

#define CODEC_VERSION "0.1.0"
#define DEFAULT_LEVEL 3

static const iqdb_host *host;

static void *zalloc(void *opaque, size_t size)
{
    (void)opaque;
    return host->alloc(size);
}

static void zfree(void *opaque, void *p)
{
    (void)opaque;
    host->free(p);
}

static const ZSTD_customMem host_mem = {zalloc, zfree, NULL};

static size_t zstd_bound(size_t src_len)
{
    /* ZSTD_compressBound reports inputs too large for its arithmetic as
     * an error code, which is a huge size_t: map it to 0 as the ABI asks. */
    size_t b = ZSTD_compressBound(src_len);
    return ZSTD_isError(b) ? 0 : b;
}

static int check_level(int level, int *out)
{
    if (level == 0) {
        *out = DEFAULT_LEVEL;
        return 0;
    }
    int lo = ZSTD_minCLevel(), hi = ZSTD_maxCLevel();
    /* zstd would silently clamp; an out-of-range level is a caller's
     * mistake worth reporting. */
    if (level < lo || level > hi)
        return host->set_error(NULL, IQDB_EINVAL,
                               "zstd: level %d out of range (%d to %d, 0 "
                               "for the default %d)",
                               level, lo, hi, DEFAULT_LEVEL);
    *out = level;
    return 0;
}

/* An error from a zstd call while compressing, as an IQDB code. */
static int compress_error(size_t r, size_t dst_cap)
{
    switch (ZSTD_getErrorCode(r)) {
    case ZSTD_error_dstSize_tooSmall:
        return host->set_error(NULL, IQDB_ERANGE,
                               "zstd: output does not fit in %zu bytes (use "
                               "bound() to size it)",
                               dst_cap);
    case ZSTD_error_memory_allocation:
        return host->set_error(NULL, IQDB_ENOMEM, "zstd: out of memory");
    default:
        return host->set_error(NULL, IQDB_EINTERNAL, "zstd: compress: %s",
                               ZSTD_getErrorName(r));
    }
}

static int zstd_compress(const void *src, size_t src_len, void *dst,
                         size_t dst_cap, size_t *out_len, int level)
{
    int lvl = DEFAULT_LEVEL, r;
    if ((src == NULL && src_len > 0) || (dst == NULL && dst_cap > 0) ||
        out_len == NULL)
        return host->set_error(NULL, IQDB_EINVAL,
                               "zstd: compress: NULL buffer or out_len");
    if ((r = check_level(level, &lvl)) != 0)
        return r;
    ZSTD_CCtx *cctx = ZSTD_createCCtx_advanced(host_mem);
    if (cctx == NULL)
        return host->set_error(NULL, IQDB_ENOMEM, "zstd: out of memory");
    size_t z = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, lvl);
    /* The content size is on by default; say so anyway, decompress relies
     * on it. The checksum costs 4 bytes and catches damage that still
     * decodes to the right length. */
    if (!ZSTD_isError(z))
        z = ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
    if (!ZSTD_isError(z))
        z = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(z))
        z = ZSTD_compress2(cctx, dst, dst_cap, src, src_len);
    ZSTD_freeCCtx(cctx);
    if (ZSTD_isError(z))
        return compress_error(z, dst_cap);
    *out_len = z;
    return 0;
}

/* Smallest w with 2^w >= n, within the bounds zstd accepts for
 * ZSTD_d_windowLogMax. */
static int window_log_for(size_t n)
{
    ZSTD_bounds b = ZSTD_dParam_getBounds(ZSTD_d_windowLogMax);
    int w = 0;
    while (w < b.upperBound && ((size_t)1 << w) < n)
        w++;
    return w < b.lowerBound ? b.lowerBound : w;
}

static int corrupt(const char *what, size_t a, size_t b)
{
    return host->set_error(NULL, IQDB_ECORRUPT, "zstd: %s (%zu, expected %zu)",
                           what, a, b);
}

/* The checks that need no decoding: see the top of the file. */
static int check_frame(const uint8_t *src, size_t src_len, size_t dst_cap)
{
    if (src_len < 4)
        return corrupt("input shorter than a frame header", src_len, 4);
    uint32_t magic = (uint32_t)src[0] | (uint32_t)src[1] << 8 |
                     (uint32_t)src[2] << 16 | (uint32_t)src[3] << 24;
    if (magic != ZSTD_MAGICNUMBER)
        return host->set_error(NULL, IQDB_ECORRUPT,
                               "zstd: not a zstd frame (magic 0x%08x)",
                               (unsigned)magic);
    unsigned long long fcs = ZSTD_getFrameContentSize(src, src_len);
    if (fcs == ZSTD_CONTENTSIZE_ERROR)
        return host->set_error(NULL, IQDB_ECORRUPT,
                               "zstd: malformed or truncated frame header");
    if (fcs == ZSTD_CONTENTSIZE_UNKNOWN)
        return host->set_error(NULL, IQDB_ECORRUPT,
                               "zstd: frame does not declare its content "
                               "size");
    if (fcs != (unsigned long long)dst_cap)
        return host->set_error(NULL, IQDB_ECORRUPT,
                               "zstd: frame holds %llu bytes, expected %zu",
                               fcs, dst_cap);
    /* Walks the block headers only; fails on a truncated frame. */
    size_t csize = ZSTD_findFrameCompressedSize(src, src_len);
    if (ZSTD_isError(csize))
        return host->set_error(NULL, IQDB_ECORRUPT, "zstd: %s",
                               ZSTD_getErrorName(csize));
    if (csize != src_len)
        return corrupt("bytes after the end of the frame", src_len - csize,
                       0);
    return 0;
}

static int zstd_decompress(const void *src, size_t src_len, void *dst,
                           size_t dst_cap, size_t *out_len)
{
    int r;
    if ((src == NULL && src_len > 0) || (dst == NULL && dst_cap > 0) ||
        out_len == NULL)
        return host->set_error(NULL, IQDB_EINVAL,
                               "zstd: decompress: NULL buffer or out_len");
    if ((r = check_frame(src, src_len, dst_cap)) != 0)
        return r;
    ZSTD_DCtx *dctx = ZSTD_createDCtx_advanced(host_mem);
    if (dctx == NULL)
        return host->set_error(NULL, IQDB_ENOMEM, "zstd: out of memory");
    /* zstd enforces this only when it decodes in streaming mode, where it
     * would allocate a window of the frame's size; the one-shot decode
     * below writes into dst and allocates no window at all. The limit is
     * set so that the bound holds even if this ever becomes a streaming
     * decode: no legitimate frame of dst_cap bytes needs a larger window. */
    size_t z = ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax,
                                      window_log_for(dst_cap));
    if (!ZSTD_isError(z))
        z = ZSTD_decompressDCtx(dctx, dst, dst_cap, src, src_len);
    ZSTD_freeDCtx(dctx);
    if (ZSTD_isError(z)) {
        if (ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation)
            return host->set_error(NULL, IQDB_ENOMEM, "zstd: out of memory");
        return host->set_error(NULL, IQDB_ECORRUPT, "zstd: %s",
                               ZSTD_getErrorName(z));
    }
    if (z != dst_cap)
        return corrupt("frame decoded to the wrong size", z, dst_cap);
    *out_len = z;
    return 0;
}

static const iqdb_codec_ops zstd_ops = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_codec_ops),
    .name = "zstd",
    .description = "Zstandard: one frame with content size and checksum",
    .id = IQDB_CODEC_ID_ZSTD,
    .default_level = DEFAULT_LEVEL,
    .bound = zstd_bound,
    .compress = zstd_compress,
    .decompress = zstd_decompress,
};

static int zstd_init(const iqdb_host *h, const iqdb_registrar *reg)
{
    host = h;
    return reg->register_codec(reg->ctx, &zstd_ops);
}

static const iqdb_module zstd_module = {
    .abi_version = IQDB_ABI_VERSION,
    .struct_size = sizeof(iqdb_module),
    .name = "zstd",
    .version = CODEC_VERSION,
    .init = zstd_init,
};

IQDB_PLUGIN_EXPORT const iqdb_module *zstd_LTX_iqdb_module(void);

const iqdb_module *zstd_LTX_iqdb_module(void)
{
    return &zstd_module;
}
