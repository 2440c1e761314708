/*
 * explora/image.h — decode JPEG, PNG and TIFF files into float pixels in
 * [0, 1] (or, for multispectral data, into the raw sample values), laid out
 * (height, width, channels) row-major, for any dataset plugin.
 *
 *   ex_image img;
 *   EX_CHECK(ex_image_load("a/b.jpg", 3, &img, err));   // RGB whatever the file holds
 *   ... img.pixels[(y * img.width + x) * 3 + c] ...
 *   ex_image_free(&img);
 *
 * Format: detected from the first bytes (JPEG: FF D8 FF, PNG: 89 50 4E 47 0D
 * 0A 1A 0A, TIFF: "II*\0", "MM\0*", BigTIFF "II+\0", "MM\0+"), never from the
 * file name; anything else is EX_E_FORMAT.
 *
 * Decoders: JPEG with libjpeg-turbo's TurboJPEG 2.x API (accurate integer
 * IDCT, fancy upsampling: the same pixels as djpeg and as PIL on the same
 * libjpeg-turbo), strict: a libjpeg warning such as "premature end of data"
 * (a truncated file) is an error, and progressive files with an absurd number
 * of scans are refused (TJFLAG_LIMITSCANS). PNG with libspng, also strict:
 * the file is read up to IEND, CRCs of critical chunks and the zlib Adler-32
 * are checked (a PNG cut anywhere, even after its last row, is an error);
 * gamma, sRGB/iCCP and sBIT are ignored (values are the stored samples, as
 * PIL gives them).
 *
 * Values: 8-bit samples are divided by 255, 16-bit PNG samples by 65535
 * (a correctly rounded float division: v / 255.0f, as numpy computes it);
 * 1/2/4-bit gray PNG samples are first scaled to 8 bits by bit replication
 * (a 4-bit v becomes 17 v), palette PNGs are expanded through PLTE.
 *
 * Channels (want_channels): 1 (gray), 3 (RGB), or 0 (as stored: 1 for gray
 * and gray+alpha images, 3 for RGB, RGBA and palette images).
 *   - Alpha (RGBA, gray+alpha, palette tRNS) is dropped, not composited.
 *   - Gray -> RGB replicates the value into the three channels.
 *   - RGB -> gray is ITU-R BT.601 luma with PIL's convert("L") fixed-point
 *     weights L = (19595 R + 38470 G + 7471 B) / 65536 (0.299, 0.587, 0.114).
 *     For 8-bit sources L is rounded to an integer first exactly like PIL
 *     ((... + 32768) >> 16), so results match PIL byte for byte; 16-bit
 *     sources keep full precision. Colour JPEGs are decoded to RGB first and
 *     then converted the same way (as PIL's open().convert("L") does).
 *   - CMYK and YCCK JPEGs are refused with EX_E_UNSUPPORTED: the
 *     Adobe-inverted vs plain CMYK ambiguity makes any conversion a guess.
 *     Convert them to RGB beforehand.
 *
 * Limits (decompression bombs): an image wider or taller than
 * EX_IMAGE_MAX_DIM or with more than EX_IMAGE_MAX_PIXELS pixels is refused
 * with EX_E_FORMAT before any pixel memory is allocated; files larger than
 * EX_IMAGE_MAX_FILE_BYTES are refused by ex_image_load.
 *
 * TIFF / GeoTIFF (libtiff 4.5, core/src/image_tiff.c): the first image
 * (IFD 0) only; 1 to EX_IMAGE_MAX_BANDS samples per pixel (e.g. the 13
 * Sentinel-2 bands); 8/16/32-bit unsigned and signed integers, 32/64-bit
 * floats; contiguous or separate planes; strips or tiles; any compression
 * libtiff has (none, LZW, Deflate, PackBits, ZSTD ...). Photometric
 * min-is-black and RGB only (palette, CMYK, YCbCr, min-is-white and 1/2/4-bit
 * files are EX_E_UNSUPPORTED). GeoTIFF keys are ignored. libtiff's messages
 * are captured into the ex_err through per-call handlers (never printed).
 *   - ex_image_decode / ex_image_load scale TIFF samples to [0, 1] like the
 *     other formats: uint8 / 255, uint16 / 65535 (float division, as for
 *     PNG), uint32 / (2^32 - 1); signed int8/16/32 by 127 / 32767 /
 *     2^31 - 1 (negative values stay negative); floats are passed through
 *     unchanged (they are taken to be in [0, 1] already). Channels 0 = every
 *     band except a trailing alpha sample declared in ExtraSamples; 1 or 3
 *     only when the file has 1 or 3 non-alpha bands (EX_E_UNSUPPORTED
 *     otherwise), with the rules above (luma for 8/16-bit exactly as for
 *     PNG; in double precision for the other types).
 *   - ex_image_decode_raw / ex_image_load_raw keep the stored values as
 *     floats (a uint16 band of 1370 reads 1370.0f): what multispectral
 *     normalisations such as fMoW-Sentinel's SentinelNormalize need. Every
 *     sample is kept (alpha included: in multispectral files extra samples
 *     are bands). For JPEG and PNG the raw mode gives the stored channels
 *     (gray or RGB, alpha dropped) as 0..255 or 0..65535 integers in floats.
 *   - Limits: besides the side and pixel limits below, width * height *
 *     bands may not exceed EX_IMAGE_MAX_SAMPLES, and one strip or tile may
 *     not exceed 1 GiB.
 *
 * Errors always name the image (`name_for_errors`, or the path). The
 * functions keep no state and are safe to call from several threads at once.
 */
#ifndef EXPLORA_IMAGE_H
#define EXPLORA_IMAGE_H

#include <stddef.h>

#include "explora/export.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EX_IMAGE_MAX_DIM 65535
#define EX_IMAGE_MAX_PIXELS ((long long)1 << 28)
#define EX_IMAGE_MAX_FILE_BYTES ((size_t)1 << 30)
#define EX_IMAGE_MAX_BANDS 1024                    /* TIFF samples per pixel */
#define EX_IMAGE_MAX_SAMPLES ((long long)1 << 30) /* TIFF width * height * bands */

/* A decoded image: pixels (height, width, channels) row-major, values in [0, 1]
 * (raw sample values after the *_raw functions), malloc'ed. */
typedef struct ex_image {
    int width, height, channels;
    float *pixels;
} ex_image;

/* Decode an in-memory JPEG or PNG. `name_for_errors` (may be NULL) names it in
 * messages. want_channels: 1, 3, or 0 for as stored. On failure *out is zeroed.
 * Errors: EX_E_INVALID (bad want_channels or arguments), EX_E_FORMAT (not a
 * JPEG/PNG/TIFF, corrupt, truncated, too large), EX_E_UNSUPPORTED (CMYK JPEG,
 * a TIFF kind listed above, 1 or 3 channels asked of a multispectral TIFF),
 * EX_E_NOMEM. */
EX_API ex_status ex_image_decode(const void *data, size_t size, const char *name_for_errors, int want_channels,
                                 ex_image *out, ex_err *err);

/* Read the file at `path` and decode it. Adds EX_E_IO (missing, unreadable,
 * a directory, not a regular file) to the errors of ex_image_decode. */
EX_API ex_status ex_image_load(const char *path, int want_channels, ex_image *out, ex_err *err);

/* Decode keeping the stored sample values (not scaled to [0, 1]) and every
 * stored band, e.g. the 13 uint16 bands of a Sentinel-2 GeoTIFF. Same errors
 * as ex_image_decode. */
EX_API ex_status ex_image_decode_raw(const void *data, size_t size, const char *name_for_errors, ex_image *out,
                                     ex_err *err);

/* Read the file at `path` and decode it with ex_image_decode_raw. */
EX_API ex_status ex_image_load_raw(const char *path, ex_image *out, ex_err *err);

/* Free the pixels and zero the struct (NULL and zeroed images are fine). */
EX_API void ex_image_free(ex_image *img);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_IMAGE_H */
