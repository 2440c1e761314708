/*
 * core/src/image_tiff.c — TIFF / GeoTIFF reading with libtiff 4.5, from
 * memory, into interleaved samples of the stored type (image_internal.h).
 *
 * Handles 1 to EX_IMAGE_MAX_BANDS samples per pixel of 8/16/32-bit unsigned
 * or signed integers or 32/64-bit IEEE floats, contiguous (chunky) or
 * separate planar configuration, strips or tiles, any compression libtiff
 * was built with (none, LZW, Deflate, PackBits, ZSTD, LERC ... incl.
 * predictors). Only the first image (IFD 0) is read; GeoTIFF tags are
 * ignored (their "unknown tag" warnings are dropped).
 *
 * libtiff reports problems through handlers that print to stderr by default.
 * Each call here passes per-handle handlers (TIFFOpenOptionsSet*HandlerExtR)
 * whose user data is a message buffer on this call's stack, so the text of
 * the first libtiff error ends up in the ex_err and nothing is printed; no
 * global state is touched, so concurrent calls are safe.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>

#include "explora/image.h"
#include "image_internal.h"

/* Largest strip or tile libtiff may allocate for us (and its own single allocations). */
#define TIFF_MAX_BLOCK_BYTES ((tmsize_t)1 << 30)

/* The in-memory "file" behind the client procs. */
typedef struct tiff_mem {
    const unsigned char *data;
    toff_t size, pos;
} tiff_mem;

/* Messages captured from libtiff during one call. */
typedef struct tiff_msgs {
    char error[512];
} tiff_msgs;

/* What we need from the directory. */
typedef struct tiff_info {
    uint32_t w, h;
    uint16_t spp, bps, fmt, planar, photo, compression;
    int tiled;
    uint32_t bw, bh; /* block (tile or strip) size in pixels */
    int alpha;
} tiff_info;

/* ---------------------------------------------------------------------------
 * signature, sample types
 * --------------------------------------------------------------------------- */

int exi_is_tiff(const unsigned char *p, size_t n) {
    if (n < 4) return 0;
    if (p[0] == 'I' && p[1] == 'I' && (p[2] == 42 || p[2] == 43) && p[3] == 0) return 1;
    if (p[0] == 'M' && p[1] == 'M' && p[2] == 0 && (p[3] == 42 || p[3] == 43)) return 1;
    return 0;
}

size_t exi_sample_bytes(exi_sample_type t) {
    switch (t) {
    case EXI_U8:
    case EXI_I8: return 1;
    case EXI_U16:
    case EXI_I16: return 2;
    case EXI_U32:
    case EXI_I32:
    case EXI_F32: return 4;
    case EXI_F64: return 8;
    }
    return 1;
}

/* ---------------------------------------------------------------------------
 * libtiff client procs over a memory buffer, and message capture
 * --------------------------------------------------------------------------- */

static tmsize_t mem_read(thandle_t h, void *buf, tmsize_t n) {
    tiff_mem *m = (tiff_mem *)h;
    if (n <= 0 || m->pos >= m->size) return 0;
    toff_t left = m->size - m->pos;
    toff_t k = (toff_t)n < left ? (toff_t)n : left;
    memcpy(buf, m->data + m->pos, (size_t)k);
    m->pos += k;
    return (tmsize_t)k;
}

static tmsize_t mem_write(thandle_t h, void *buf, tmsize_t n) {
    (void)h;
    (void)buf;
    (void)n;
    return -1; /* read-only */
}

static toff_t mem_seek(thandle_t h, toff_t off, int whence) {
    tiff_mem *m = (tiff_mem *)h;
    toff_t base = whence == SEEK_CUR ? m->pos : whence == SEEK_END ? m->size : 0;
    if (off > UINT64_MAX - base) return (toff_t)-1;
    m->pos = base + off; /* reads past the end return 0 bytes */
    return m->pos;
}

static int mem_close(thandle_t h) {
    (void)h;
    return 0;
}

static toff_t mem_size(thandle_t h) { return ((tiff_mem *)h)->size; }

static int mem_map(thandle_t h, void **base, toff_t *size) {
    tiff_mem *m = (tiff_mem *)h;
    *base = (void *)(uintptr_t)m->data; /* opened read-only: libtiff never writes through it */
    *size = m->size;
    return 1;
}

static void mem_unmap(thandle_t h, void *base, toff_t size) {
    (void)h;
    (void)base;
    (void)size;
}

static int on_error(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
    (void)tif;
    tiff_msgs *m = user;
    if (m && !m->error[0]) {
        int n = snprintf(m->error, sizeof m->error, "%s%s", module ? module : "", module ? ": " : "");
        if (n < 0 || (size_t)n >= sizeof m->error) n = 0;
        vsnprintf(m->error + n, sizeof m->error - (size_t)n, fmt, ap);
    }
    return 1; /* handled: do not call libtiff's global (stderr) handler */
}

static int on_warning(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
    (void)tif;
    (void)user;
    (void)module;
    (void)fmt;
    (void)ap;
    return 1; /* dropped: GeoTIFF files warn about every GeoKey tag */
}

static const char *msg_or(const tiff_msgs *m, const char *fallback) { return m->error[0] ? m->error : fallback; }

static TIFF *open_mem(tiff_mem *mem, const char *name, tiff_msgs *msgs) {
    TIFFOpenOptions *opts = TIFFOpenOptionsAlloc();
    if (!opts) return NULL;
    TIFFOpenOptionsSetErrorHandlerExtR(opts, on_error, msgs);
    TIFFOpenOptionsSetWarningHandlerExtR(opts, on_warning, msgs);
    TIFFOpenOptionsSetMaxSingleMemAlloc(opts, TIFF_MAX_BLOCK_BYTES);
    TIFF *tif = TIFFClientOpenExt(name, "r", (thandle_t)mem, mem_read, mem_write, mem_seek, mem_close, mem_size,
                                  mem_map, mem_unmap, opts);
    TIFFOpenOptionsFree(opts);
    return tif;
}

/* ---------------------------------------------------------------------------
 * directory
 * --------------------------------------------------------------------------- */

static ex_status sample_type(const char *name, uint16_t fmt, uint16_t bps, exi_sample_type *t, ex_err *err) {
    if (fmt == SAMPLEFORMAT_UINT && (bps == 8 || bps == 16 || bps == 32)) {
        *t = bps == 8 ? EXI_U8 : bps == 16 ? EXI_U16 : EXI_U32;
        return EX_OK;
    }
    if (fmt == SAMPLEFORMAT_INT && (bps == 8 || bps == 16 || bps == 32)) {
        *t = bps == 8 ? EXI_I8 : bps == 16 ? EXI_I16 : EXI_I32;
        return EX_OK;
    }
    if (fmt == SAMPLEFORMAT_IEEEFP && (bps == 32 || bps == 64)) {
        *t = bps == 32 ? EXI_F32 : EXI_F64;
        return EX_OK;
    }
    EX_FAIL(err, EX_E_UNSUPPORTED,
            "image '%s': TIFF with %u-bit samples of format %u (1 unsigned, 2 signed, 3 float); explora reads "
            "8/16/32-bit integers and 32/64-bit floats.",
            name, bps, fmt);
}

static ex_status check_photometric(const char *name, uint16_t photo, ex_err *err) {
    if (photo == PHOTOMETRIC_MINISBLACK || photo == PHOTOMETRIC_RGB) return EX_OK;
    const char *what = photo == PHOTOMETRIC_MINISWHITE ? "min-is-white"
                       : photo == PHOTOMETRIC_PALETTE  ? "palette"
                       : photo == PHOTOMETRIC_SEPARATED ? "CMYK (separated)"
                       : photo == PHOTOMETRIC_YCBCR     ? "YCbCr"
                                                        : "this";
    EX_FAIL(err, EX_E_UNSUPPORTED,
            "image '%s': %s TIFF (photometric %u); explora reads min-is-black (gray or multispectral bands) and "
            "RGB TIFFs. Hint: convert it, e.g. tiffcp -c none or gdal_translate.",
            name, what, photo);
}

/* The last ExtraSample is an alpha channel (associated or not). */
static int has_alpha(TIFF *tif) {
    uint16_t count = 0;
    uint16_t *kinds = NULL;
    if (!TIFFGetField(tif, TIFFTAG_EXTRASAMPLES, &count, &kinds) || count == 0 || !kinds) return 0;
    return kinds[count - 1] == EXTRASAMPLE_ASSOCALPHA || kinds[count - 1] == EXTRASAMPLE_UNASSALPHA;
}

static ex_status block_geometry(TIFF *tif, const char *name, tiff_info *ti, const tiff_msgs *msgs, ex_err *err) {
    ti->tiled = TIFFIsTiled(tif);
    if (ti->tiled) {
        EX_ENSURE(TIFFGetField(tif, TIFFTAG_TILEWIDTH, &ti->bw) && TIFFGetField(tif, TIFFTAG_TILELENGTH, &ti->bh),
                  err, EX_E_FORMAT, "image '%s': tiled TIFF without a tile size: %s.", name,
                  msg_or(msgs, "missing TileWidth/TileLength"));
        EX_ENSURE(ti->bw > 0 && ti->bh > 0, err, EX_E_FORMAT, "image '%s': TIFF tile size %ux%u is empty.", name,
                  ti->bw, ti->bh);
        return EX_OK;
    }
    uint32_t rps = 0;
    TIFFGetFieldDefaulted(tif, TIFFTAG_ROWSPERSTRIP, &rps);
    ti->bw = ti->w;
    ti->bh = rps == 0 || rps > ti->h ? ti->h : rps;
    return EX_OK;
}

static ex_status read_info(TIFF *tif, const char *name, tiff_info *ti, exi_sample_type *type,
                           const tiff_msgs *msgs, ex_err *err) {
    memset(ti, 0, sizeof *ti);
    EX_ENSURE(TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &ti->w) && TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &ti->h), err,
              EX_E_FORMAT, "image '%s': TIFF without an image size: %s.", name,
              msg_or(msgs, "missing ImageWidth/ImageLength"));
    EX_ENSURE(ti->w > 0 && ti->h > 0, err, EX_E_FORMAT, "image '%s': TIFF header gives an empty size %ux%u.", name,
              ti->w, ti->h);
    EX_ENSURE(ti->w <= EX_IMAGE_MAX_DIM && ti->h <= EX_IMAGE_MAX_DIM, err, EX_E_FORMAT,
              "image '%s': TIFF of %ux%u pixels: a side exceeds the limit of %d; refusing it (corrupt header or "
              "decompression bomb).",
              name, ti->w, ti->h, EX_IMAGE_MAX_DIM);
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &ti->spp);
    TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &ti->bps);
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &ti->fmt);
    TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &ti->planar);
    TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &ti->compression);
    if (!TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &ti->photo)) ti->photo = PHOTOMETRIC_MINISBLACK;
    EX_ENSURE(ti->spp >= 1 && ti->spp <= EX_IMAGE_MAX_BANDS, err, EX_E_FORMAT,
              "image '%s': TIFF with %u samples per pixel; explora reads 1 to %d.", name, ti->spp,
              EX_IMAGE_MAX_BANDS);
    long long samples = (long long)ti->w * ti->h * ti->spp;
    EX_ENSURE((long long)ti->w * ti->h <= EX_IMAGE_MAX_PIXELS && samples <= EX_IMAGE_MAX_SAMPLES, err, EX_E_FORMAT,
              "image '%s': TIFF of %ux%u pixels x %u bands = %lld samples exceeds the limits (2^28 pixels, 2^30 "
              "samples); refusing it (decompression bomb?).",
              name, ti->w, ti->h, ti->spp, samples);
    EX_CHECK(sample_type(name, ti->fmt, ti->bps, type, err));
    EX_CHECK(check_photometric(name, ti->photo, err));
    EX_ENSURE(ti->planar == PLANARCONFIG_CONTIG || ti->planar == PLANARCONFIG_SEPARATE, err, EX_E_FORMAT,
              "image '%s': TIFF planar configuration %u is neither 1 (contiguous) nor 2 (separate).", name,
              ti->planar);
    ti->alpha = ti->spp > 1 && has_alpha(tif);
    return block_geometry(tif, name, ti, msgs, err);
}

/* ---------------------------------------------------------------------------
 * pixel data
 * --------------------------------------------------------------------------- */

/* One strip or tile, decoded, to be placed at (x0, y0); plane < 0 means all samples interleaved. */
typedef struct tiff_block {
    const unsigned char *data;
    uint32_t x0, y0;
    int plane;
} tiff_block;

static void place_block(const tiff_info *ti, size_t sb, const tiff_block *b, unsigned char *dst) {
    uint32_t rows = ti->bh < ti->h - b->y0 ? ti->bh : ti->h - b->y0;
    uint32_t cols = ti->bw < ti->w - b->x0 ? ti->bw : ti->w - b->x0;
    size_t block_spp = b->plane < 0 ? ti->spp : 1;
    size_t pix = (size_t)ti->spp * sb; /* bytes per destination pixel */
    for (uint32_t r = 0; r < rows; r++) {
        const unsigned char *src = b->data + (size_t)r * ti->bw * block_spp * sb;
        unsigned char *row = dst + ((size_t)(b->y0 + r) * ti->w + b->x0) * pix;
        if (b->plane < 0) {
            memcpy(row, src, (size_t)cols * pix);
            continue;
        }
        for (uint32_t c = 0; c < cols; c++) memcpy(row + c * pix + (size_t)b->plane * sb, src + c * sb, sb);
    }
}

/* Decode block `index` into buf; libtiff's message goes into the error. */
static ex_status read_block(TIFF *tif, const tiff_info *ti, uint32_t index, void *buf, tmsize_t cap,
                            const char *name, const tiff_msgs *msgs, ex_err *err) {
    tmsize_t got = ti->tiled ? TIFFReadEncodedTile(tif, index, buf, cap) : TIFFReadEncodedStrip(tif, index, buf, cap);
    EX_ENSURE(got >= 0, err, EX_E_FORMAT, "image '%s': corrupt or truncated TIFF %s %u: %s.", name,
              ti->tiled ? "tile" : "strip", index, msg_or(msgs, "libtiff could not decode it"));
    return EX_OK;
}

static ex_status block_size(TIFF *tif, const tiff_info *ti, size_t sb, const char *name, tmsize_t *cap,
                            ex_err *err) {
    uint64_t want = (uint64_t)ti->bw * ti->bh * (ti->planar == PLANARCONFIG_SEPARATE ? 1u : ti->spp) * sb;
    uint64_t lib = ti->tiled ? TIFFTileSize64(tif) : TIFFStripSize64(tif);
    EX_ENSURE(want > 0 && want <= (uint64_t)TIFF_MAX_BLOCK_BYTES, err, EX_E_FORMAT,
              "image '%s': TIFF %s of %ux%u pixels is larger than the limit of %lld bytes (corrupt header or "
              "decompression bomb?).",
              name, ti->tiled ? "tile" : "strip", ti->bw, ti->bh, (long long)TIFF_MAX_BLOCK_BYTES);
    EX_ENSURE(lib >= want, err, EX_E_FORMAT,
              "image '%s': TIFF %s size %llu bytes disagrees with its %ux%u pixels (corrupt header).", name,
              ti->tiled ? "tile" : "strip", (unsigned long long)lib, ti->bw, ti->bh);
    *cap = (tmsize_t)want;
    return EX_OK;
}

static ex_status read_blocks(TIFF *tif, const tiff_info *ti, size_t sb, unsigned char *dst, void *buf,
                             tmsize_t cap, const char *name, const tiff_msgs *msgs, ex_err *err) {
    int planes = ti->planar == PLANARCONFIG_SEPARATE ? ti->spp : 1;
    for (int p = 0; p < planes; p++) {
        for (uint32_t y = 0; y < ti->h; y += ti->bh) {
            for (uint32_t x = 0; x < ti->w; x += ti->bw) {
                uint16_t s = (uint16_t)p;
                uint32_t idx = ti->tiled ? TIFFComputeTile(tif, x, y, 0, s) : TIFFComputeStrip(tif, y, s);
                EX_CHECK(read_block(tif, ti, idx, buf, cap, name, msgs, err));
                tiff_block b = {buf, x, y, planes > 1 ? p : -1};
                place_block(ti, sb, &b, dst);
            }
        }
    }
    return EX_OK;
}

static ex_status read_pixels(TIFF *tif, const tiff_info *ti, const char *name, exi_samples *out,
                             const tiff_msgs *msgs, ex_err *err) {
    size_t sb = exi_sample_bytes(out->type);
    tmsize_t cap = 0;
    EX_CHECK(block_size(tif, ti, sb, name, &cap, err));
    size_t total = (size_t)ti->w * ti->h * ti->spp * sb;
    out->data = malloc(total);
    EX_ENSURE(out->data, err, EX_E_NOMEM, "image '%s': out of memory for a %ux%ux%u TIFF.", name, ti->w, ti->h,
              ti->spp);
    void *buf = malloc((size_t)cap);
    EX_ENSURE(buf, err, EX_E_NOMEM, "image '%s': out of memory for a TIFF block of %lld bytes.", name,
              (long long)cap);
    ex_status st = read_blocks(tif, ti, sb, out->data, buf, cap, name, msgs, err);
    free(buf);
    return st;
}

static ex_status tiff_read_open(TIFF *tif, const char *name, exi_samples *out, const tiff_msgs *msgs,
                                ex_err *err) {
    tiff_info ti;
    EX_CHECK(read_info(tif, name, &ti, &out->type, msgs, err));
    out->width = (int)ti.w;
    out->height = (int)ti.h;
    out->spp = ti.spp;
    out->alpha = ti.alpha;
    return read_pixels(tif, &ti, name, out, msgs, err);
}

ex_status exi_tiff_read(const unsigned char *data, size_t size, const char *name, exi_samples *out, ex_err *err) {
    memset(out, 0, sizeof *out);
    tiff_mem mem = {data, (toff_t)size, 0};
    tiff_msgs msgs;
    memset(&msgs, 0, sizeof msgs);
    TIFF *tif = open_mem(&mem, name, &msgs);
    EX_ENSURE(tif, err, EX_E_FORMAT, "image '%s': not a valid TIFF: %s.", name,
              msg_or(&msgs, "libtiff could not open it"));
    ex_status st = tiff_read_open(tif, name, out, &msgs, err);
    TIFFClose(tif);
    if (st != EX_OK) {
        free(out->data);
        out->data = NULL;
    }
    return st;
}
