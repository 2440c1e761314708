/*
 * core/src/image.c — JPEG (TurboJPEG 2.x) and PNG (libspng) decoding into
 * float (height, width, channels) pixels in [0, 1], and the conversion of
 * TIFF samples (read by core/src/image_tiff.c) to float, scaled or raw.
 * Conventions, channel conversions and limits are documented in
 * explora/image.h.
 *
 * Every decoder works on a private handle created per call, so nothing here
 * is shared between threads.
 */
#include "explora/image.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spng.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "image_internal.h"

typedef enum img_format { IMG_UNKNOWN = 0, IMG_JPEG, IMG_PNG, IMG_TIFF } img_format;

/* Internal want_channels value: every sample as stored, values not scaled (ex_image_decode_raw). */
#define WANT_RAW (-1)

/* Raw decoded samples before conversion to float. `stride` is the number of
 * samples per pixel in `data`; the first `colors` of them (1 gray, 3 RGB) are used. */
typedef struct raw_pixels {
    const void *data;
    int is16; /* samples are uint16_t (else uint8_t) */
    int stride;
    int colors;
    int keep_raw; /* store the sample values themselves (WANT_RAW), not divided by 255 / 65535 */
} raw_pixels;

/* PIL's convert("L") fixed-point BT.601 weights (sum 65536). */
#define LUMA_R 19595u
#define LUMA_G 38470u
#define LUMA_B 7471u

/* ---------------------------------------------------------------------------
 * helpers
 * --------------------------------------------------------------------------- */

static const char *display_name(const char *name) { return name ? name : "<memory>"; }

static img_format detect_format(const unsigned char *p, size_t n) {
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return IMG_JPEG;
    if (n >= 8 && memcmp(p, png_sig, 8) == 0) return IMG_PNG;
    if (exi_is_tiff(p, n)) return IMG_TIFF;
    return IMG_UNKNOWN;
}

/* The first bytes as hex ("3c 68 74 6d"), for "not an image" messages. */
static void hex_prefix(const unsigned char *p, size_t n, char *out, size_t cap) {
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && i < 8 && len + 4 < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%02x", i ? " " : "", p[i]);
}

static ex_status check_dims(const char *name, const char *fmt, long long w, long long h, ex_err *err) {
    EX_ENSURE(w > 0 && h > 0, err, EX_E_FORMAT, "image '%s': %s header gives an empty size %lldx%lld.", name, fmt,
              w, h);
    EX_ENSURE(w <= EX_IMAGE_MAX_DIM && h <= EX_IMAGE_MAX_DIM, err, EX_E_FORMAT,
              "image '%s': %s of %lldx%lld pixels: a side exceeds the limit of %d; refusing it (corrupt "
              "header or decompression bomb).",
              name, fmt, w, h, EX_IMAGE_MAX_DIM);
    EX_ENSURE(w * h <= EX_IMAGE_MAX_PIXELS, err, EX_E_FORMAT,
              "image '%s': %s of %lldx%lld = %lld pixels exceeds the limit of 2^28 (%lld); refusing it "
              "(decompression bomb?).",
              name, fmt, w, h, w * h, EX_IMAGE_MAX_PIXELS);
    return EX_OK;
}

/* 0 means "as stored". */
static int output_channels(int want, int stored) { return want > 0 ? want : stored; }

static ex_status alloc_image(ex_image *out, int w, int h, int channels, const char *name, ex_err *err) {
    size_t n = (size_t)w * (size_t)h * (size_t)channels;
    out->pixels = malloc(n * sizeof(float));
    EX_ENSURE(out->pixels, err, EX_E_NOMEM, "image '%s': out of memory for %dx%dx%d floats.", name, w, h,
              channels);
    out->width = w;
    out->height = h;
    out->channels = channels;
    return EX_OK;
}

/* ---------------------------------------------------------------------------
 * conversion of raw samples to float
 * --------------------------------------------------------------------------- */

static float luma8(const uint8_t *p) {
    uint32_t l = (LUMA_R * p[0] + LUMA_G * p[1] + LUMA_B * p[2] + 0x8000u) >> 16;
    return (float)l / 255.0f;
}

static float luma16(const uint16_t *p) {
    double l = ((double)LUMA_R * p[0] + (double)LUMA_G * p[1] + (double)LUMA_B * p[2]) / 65536.0;
    return (float)(l / 65535.0);
}

static void convert_u8(const raw_pixels *raw, size_t npix, int out_ch, float *dst) {
    const uint8_t *src = raw->data;
    const float div = raw->keep_raw ? 1.0f : 255.0f;
    for (size_t i = 0; i < npix; i++, src += raw->stride, dst += out_ch) {
        if (raw->colors == 3 && out_ch == 1) {
            dst[0] = luma8(src);
        } else {
            for (int c = 0; c < out_ch; c++) dst[c] = (float)src[raw->colors == 1 ? 0 : c] / div;
        }
    }
}

static void convert_u16(const raw_pixels *raw, size_t npix, int out_ch, float *dst) {
    const uint16_t *src = raw->data;
    const float div = raw->keep_raw ? 1.0f : 65535.0f;
    for (size_t i = 0; i < npix; i++, src += raw->stride, dst += out_ch) {
        if (raw->colors == 3 && out_ch == 1) {
            dst[0] = luma16(src);
        } else {
            for (int c = 0; c < out_ch; c++) dst[c] = (float)src[raw->colors == 1 ? 0 : c] / div;
        }
    }
}

static void convert_raw(const raw_pixels *raw, ex_image *out) {
    size_t npix = (size_t)out->width * (size_t)out->height;
    if (raw->is16)
        convert_u16(raw, npix, out->channels, out->pixels);
    else
        convert_u8(raw, npix, out->channels, out->pixels);
}

/* ---------------------------------------------------------------------------
 * JPEG
 * --------------------------------------------------------------------------- */

static const char *tj_colorspace_name(int cs) {
    switch (cs) {
    case TJCS_RGB: return "RGB";
    case TJCS_YCbCr: return "YCbCr";
    case TJCS_GRAY: return "gray";
    case TJCS_CMYK: return "CMYK";
    case TJCS_YCCK: return "YCCK";
    default: return "unknown";
    }
}

/* Decompress with an open handle into a malloc'ed 8-bit buffer of `stored` channels. */
static ex_status jpeg_pixels(tjhandle tj, const unsigned char *data, size_t size, const char *name, int w, int h,
                             int stored, unsigned char **buf, ex_err *err) {
    *buf = malloc((size_t)w * (size_t)h * (size_t)stored);
    EX_ENSURE(*buf, err, EX_E_NOMEM, "image '%s': out of memory for a %dx%d JPEG.", name, w, h);
    int pf = stored == 1 ? TJPF_GRAY : TJPF_RGB;
    int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
    if (tjDecompress2(tj, data, (unsigned long)size, *buf, w, 0, h, pf, flags) != 0) {
        EX_FAIL(err, EX_E_FORMAT, "image '%s': corrupt or truncated JPEG: %s.", name, tjGetErrorStr2(tj));
    }
    return EX_OK;
}

static ex_status jpeg_decode_with(tjhandle tj, const unsigned char *data, size_t size, const char *name,
                                  int want, ex_image *out, unsigned char **buf, ex_err *err) {
    int w = 0, h = 0, subsamp = 0, cs = 0;
    if (tjDecompressHeader3(tj, data, (unsigned long)size, &w, &h, &subsamp, &cs) != 0)
        EX_FAIL(err, EX_E_FORMAT, "image '%s': not a valid JPEG: %s.", name, tjGetErrorStr2(tj));
    EX_ENSURE(w > 0 && h > 0, err, EX_E_FORMAT,
              "image '%s': not a valid JPEG: no frame header (a truncated file or a tables-only stream).", name);
    EX_CHECK(check_dims(name, "JPEG", w, h, err));
    if (cs == TJCS_CMYK || cs == TJCS_YCCK)
        EX_FAIL(err, EX_E_UNSUPPORTED,
                "image '%s': %s JPEG; explora decodes gray and RGB/YCbCr JPEGs only. Hint: convert it to RGB, "
                "e.g. with ImageMagick: convert in.jpg -colorspace sRGB out.jpg.",
                name, tj_colorspace_name(cs));
    int stored = cs == TJCS_GRAY ? 1 : 3;
    EX_CHECK(jpeg_pixels(tj, data, size, name, w, h, stored, buf, err));
    EX_CHECK(alloc_image(out, w, h, output_channels(want, stored), name, err));
    raw_pixels raw = {*buf, 0, stored, stored, want == WANT_RAW};
    convert_raw(&raw, out);
    return EX_OK;
}

static ex_status decode_jpeg(const unsigned char *data, size_t size, const char *name, int want, ex_image *out,
                             ex_err *err) {
    EX_ENSURE(size <= ULONG_MAX, err, EX_E_FORMAT, "image '%s': JPEG too large.", name);
    tjhandle tj = tjInitDecompress();
    EX_ENSURE(tj, err, EX_E_NOMEM, "image '%s': cannot start the JPEG decoder: %s.", name, tjGetErrorStr2(NULL));
    unsigned char *buf = NULL;
    ex_status st = jpeg_decode_with(tj, data, size, name, want, out, &buf, err);
    free(buf);
    tjDestroy(tj);
    return st;
}

/* ---------------------------------------------------------------------------
 * PNG
 * --------------------------------------------------------------------------- */

static const char *png_color_type_name(int t) {
    switch (t) {
    case SPNG_COLOR_TYPE_GRAYSCALE: return "gray";
    case SPNG_COLOR_TYPE_TRUECOLOR: return "RGB";
    case SPNG_COLOR_TYPE_INDEXED: return "palette";
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: return "gray+alpha";
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA: return "RGBA";
    default: return "unknown";
    }
}

static int png_stored_channels(int color_type) {
    return (color_type == SPNG_COLOR_TYPE_GRAYSCALE || color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA) ? 1 : 3;
}

/* Open the context on the buffer and read and check the header. */
static ex_status png_header(spng_ctx *ctx, const unsigned char *data, size_t size, const char *name,
                            struct spng_ihdr *ihdr, ex_err *err) {
    /* Ancillary chunks (text, ICC profiles) may not inflate to more than 16 MiB each, 64 MiB in all. */
    spng_set_chunk_limits(ctx, (size_t)16 << 20, (size_t)64 << 20);
    int r = spng_set_png_buffer(ctx, data, size);
    EX_ENSURE(r == 0, err, EX_E_FORMAT, "image '%s': %s.", name, spng_strerror(r));
    r = spng_get_ihdr(ctx, ihdr);
    EX_ENSURE(r == 0, err, EX_E_FORMAT, "image '%s': not a valid PNG: %s.", name, spng_strerror(r));
    return check_dims(name, "PNG", ihdr->width, ihdr->height, err);
}

static ex_status png_decode_with(spng_ctx *ctx, const unsigned char *data, size_t size, const char *name, int want,
                                 ex_image *out, void **buf, ex_err *err) {
    struct spng_ihdr ihdr;
    EX_CHECK(png_header(ctx, data, size, name, &ihdr, err));
    int is16 = ihdr.bit_depth == 16;
    int fmt = is16 ? SPNG_FMT_RGBA16 : SPNG_FMT_RGBA8;
    size_t len = 0;
    int r = spng_decoded_image_size(ctx, fmt, &len);
    EX_ENSURE(r == 0, err, EX_E_FORMAT, "image '%s': %s PNG: %s.", name, png_color_type_name(ihdr.color_type),
              spng_strerror(r));
    *buf = malloc(len);
    EX_ENSURE(*buf, err, EX_E_NOMEM, "image '%s': out of memory for a %ux%u PNG.", name, ihdr.width, ihdr.height);
    r = spng_decode_image(ctx, *buf, len, fmt, 0);
    EX_ENSURE(r == 0, err, EX_E_FORMAT, "image '%s': corrupt or truncated PNG: %s.", name, spng_strerror(r));
    /* Read on to IEND: libspng stops inflating once it has the last row, so the
     * CRC of the last IDAT chunk is only checked here. */
    r = spng_decode_chunks(ctx);
    EX_ENSURE(r == 0, err, EX_E_FORMAT, "image '%s': corrupt or truncated PNG after the image data: %s.", name,
              spng_strerror(r));
    int stored = png_stored_channels(ihdr.color_type);
    EX_CHECK(alloc_image(out, (int)ihdr.width, (int)ihdr.height, output_channels(want, stored), name, err));
    raw_pixels raw = {*buf, is16, 4, stored, want == WANT_RAW}; /* RGBA: gray images have R = G = B */
    convert_raw(&raw, out);
    return EX_OK;
}

static ex_status decode_png(const unsigned char *data, size_t size, const char *name, int want, ex_image *out,
                            ex_err *err) {
    spng_ctx *ctx = spng_ctx_new(0);
    EX_ENSURE(ctx, err, EX_E_NOMEM, "image '%s': cannot start the PNG decoder (out of memory).", name);
    void *buf = NULL;
    ex_status st = png_decode_with(ctx, data, size, name, want, out, &buf, err);
    free(buf);
    spng_ctx_free(ctx);
    return st;
}

/* ---------------------------------------------------------------------------
 * TIFF: samples of any supported type to float
 * --------------------------------------------------------------------------- */

static double wide_sample(const void *data, exi_sample_type t, size_t i) {
    switch (t) {
    case EXI_U8: return ((const uint8_t *)data)[i];
    case EXI_U16: return ((const uint16_t *)data)[i];
    case EXI_U32: return ((const uint32_t *)data)[i];
    case EXI_I8: return ((const int8_t *)data)[i];
    case EXI_I16: return ((const int16_t *)data)[i];
    case EXI_I32: return ((const int32_t *)data)[i];
    case EXI_F32: return ((const float *)data)[i];
    case EXI_F64: return ((const double *)data)[i];
    }
    return 0.0;
}

/* What ex_image_decode divides a sample by: the type's largest value for integers, 1 for floats. */
static double wide_divisor(exi_sample_type t) {
    switch (t) {
    case EXI_U8: return 255.0;
    case EXI_U16: return 65535.0;
    case EXI_U32: return 4294967295.0;
    case EXI_I8: return 127.0;
    case EXI_I16: return 32767.0;
    case EXI_I32: return 2147483647.0;
    case EXI_F32:
    case EXI_F64: return 1.0;
    }
    return 1.0;
}

/* 32-bit integer, signed and float samples (8/16-bit unsigned go through convert_raw). */
static void convert_wide(const exi_samples *s, int colors, int keep_raw, ex_image *out) {
    double div = keep_raw ? 1.0 : wide_divisor(s->type);
    size_t npix = (size_t)out->width * (size_t)out->height;
    float *dst = out->pixels;
    for (size_t i = 0; i < npix; i++, dst += out->channels) {
        size_t base = i * (size_t)s->spp;
        if (colors == 3 && out->channels == 1) {
            double l = (double)LUMA_R * wide_sample(s->data, s->type, base) +
                       (double)LUMA_G * wide_sample(s->data, s->type, base + 1) +
                       (double)LUMA_B * wide_sample(s->data, s->type, base + 2);
            dst[0] = (float)(l / 65536.0 / div);
            continue;
        }
        for (int c = 0; c < out->channels; c++)
            dst[c] = (float)(wide_sample(s->data, s->type, base + (colors == 1 ? 0 : (size_t)c)) / div);
    }
}

static ex_status tiff_to_float(const exi_samples *s, const char *name, int want, ex_image *out, ex_err *err) {
    int colors = want == WANT_RAW ? s->spp : s->spp - s->alpha;
    EX_ENSURE(want <= 0 || colors == 1 || colors == 3, err, EX_E_UNSUPPORTED,
              "image '%s': TIFF with %d bands cannot be decoded to %d channel%s; ask for 0 channels (every band, "
              "as stored) or read the raw values with ex_image_load_raw.",
              name, colors, want, want == 1 ? "" : "s");
    EX_CHECK(alloc_image(out, s->width, s->height, output_channels(want, colors), name, err));
    if (s->type == EXI_U8 || s->type == EXI_U16) {
        raw_pixels raw = {s->data, s->type == EXI_U16, s->spp, colors, want == WANT_RAW};
        convert_raw(&raw, out);
    } else {
        convert_wide(s, colors, want == WANT_RAW, out);
    }
    return EX_OK;
}

static ex_status decode_tiff(const unsigned char *data, size_t size, const char *name, int want, ex_image *out,
                             ex_err *err) {
    exi_samples s;
    EX_CHECK(exi_tiff_read(data, size, name, &s, err));
    ex_status st = tiff_to_float(&s, name, want, out, err);
    free(s.data);
    return st;
}

/* ---------------------------------------------------------------------------
 * public API
 * --------------------------------------------------------------------------- */

void ex_image_free(ex_image *img) {
    if (!img) return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

/* Decode with want_channels 0, 1, 3 or WANT_RAW (checked by the callers). */
static ex_status decode_any(const void *data, size_t size, const char *name, int want_channels, ex_image *out,
                            ex_err *err) {
    EX_ENSURE(data || size == 0, err, EX_E_INVALID, "ex_image_decode: data is NULL (image '%s').", name);
    EX_ENSURE(size > 0, err, EX_E_FORMAT, "image '%s': the file is empty (0 bytes).", name);
    const unsigned char *p = data;
    ex_status st;
    switch (detect_format(p, size)) {
    case IMG_JPEG: st = decode_jpeg(p, size, name, want_channels, out, err); break;
    case IMG_PNG: st = decode_png(p, size, name, want_channels, out, err); break;
    case IMG_TIFF: st = decode_tiff(p, size, name, want_channels, out, err); break;
    default: {
        char hex[40];
        hex_prefix(p, size, hex, sizeof hex);
        EX_FAIL(err, EX_E_FORMAT,
                "image '%s': not a JPEG or PNG file (first bytes: %s), nor a TIFF; the format is detected "
                "from the content, not the file name.",
                name, hex);
    }
    }
    if (st != EX_OK) ex_image_free(out);
    return st;
}

ex_status ex_image_decode(const void *data, size_t size, const char *name_for_errors, int want_channels,
                          ex_image *out, ex_err *err) {
    const char *name = display_name(name_for_errors);
    EX_ENSURE(out, err, EX_E_INVALID, "ex_image_decode: output is NULL (image '%s').", name);
    memset(out, 0, sizeof *out);
    EX_ENSURE(want_channels == 0 || want_channels == 1 || want_channels == 3, err, EX_E_INVALID,
              "image '%s': cannot decode to %d channels; use 1 (gray), 3 (RGB) or 0 (as stored).", name,
              want_channels);
    return decode_any(data, size, name, want_channels, out, err);
}

ex_status ex_image_decode_raw(const void *data, size_t size, const char *name_for_errors, ex_image *out,
                              ex_err *err) {
    const char *name = display_name(name_for_errors);
    EX_ENSURE(out, err, EX_E_INVALID, "ex_image_decode_raw: output is NULL (image '%s').", name);
    memset(out, 0, sizeof *out);
    return decode_any(data, size, name, WANT_RAW, out, err);
}

/* Read a whole regular file of at most EX_IMAGE_MAX_FILE_BYTES into a malloc'ed buffer. */
static ex_status read_image_file(const char *path, unsigned char **data, size_t *size, ex_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    EX_ENSURE(fd >= 0, err, EX_E_IO, "image '%s': cannot open: %s.", path, strerror(errno));
    struct stat sb;
    ex_status st = EX_OK;
    if (fstat(fd, &sb) != 0) EX_FAIL_GOTO(err, st, done, EX_E_IO, "image '%s': cannot stat: %s.", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) EX_FAIL_GOTO(err, st, done, EX_E_IO, "image '%s': is a directory, not a file.", path);
    if (!S_ISREG(sb.st_mode)) EX_FAIL_GOTO(err, st, done, EX_E_IO, "image '%s': not a regular file.", path);
    if ((unsigned long long)sb.st_size > EX_IMAGE_MAX_FILE_BYTES)
        EX_FAIL_GOTO(err, st, done, EX_E_FORMAT, "image '%s': %lld bytes is larger than the limit of %zu bytes.", path,
                     (long long)sb.st_size, EX_IMAGE_MAX_FILE_BYTES);
    size_t n = (size_t)sb.st_size;
    *data = malloc(n ? n : 1);
    if (!*data) EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "image '%s': out of memory for %zu bytes.", path, n);
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, *data + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) EX_FAIL_GOTO(err, st, done, EX_E_IO, "image '%s': read error: %s.", path, strerror(errno));
        if (r == 0) break; /* the file shrank while we read it: decode what is there */
        got += (size_t)r;
    }
    *size = got;
done:
    close(fd);
    if (st != EX_OK) {
        free(*data);
        *data = NULL;
    }
    return st;
}

/* Read `path` and decode it with ex_image_decode (raw == 0) or ex_image_decode_raw. */
static ex_status load_file(const char *path, int want_channels, int raw, ex_image *out, ex_err *err) {
    EX_ENSURE(path && out, err, EX_E_INVALID, "ex_image_load: path or output is NULL.");
    memset(out, 0, sizeof *out);
    unsigned char *data = NULL;
    size_t size = 0;
    EX_CHECK(read_image_file(path, &data, &size, err));
    ex_status st = raw ? ex_image_decode_raw(data, size, path, out, err)
                       : ex_image_decode(data, size, path, want_channels, out, err);
    free(data);
    return st;
}

ex_status ex_image_load(const char *path, int want_channels, ex_image *out, ex_err *err) {
    return load_file(path, want_channels, 0, out, err);
}

ex_status ex_image_load_raw(const char *path, ex_image *out, ex_err *err) { return load_file(path, 0, 1, out, err); }
