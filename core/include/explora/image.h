/*
 * explora/image.h — decode JPEG and PNG files into float pixels in [0, 1],
 * laid out (height, width, channels) row-major, for any dataset plugin.
 *
 *   ex_image img;
 *   EX_CHECK(ex_image_load("a/b.jpg", 3, &img, err));   // RGB whatever the file holds
 *   ... img.pixels[(y * img.width + x) * 3 + c] ...
 *   ex_image_free(&img);
 *
 * Format: detected from the first bytes (JPEG: FF D8 FF, PNG: 89 50 4E 47 0D
 * 0A 1A 0A), never from the file name; anything else is EX_E_FORMAT.
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

/* A decoded image: pixels (height, width, channels) row-major, values in [0, 1], malloc'ed. */
typedef struct ex_image {
    int width, height, channels;
    float *pixels;
} ex_image;

/* Decode an in-memory JPEG or PNG. `name_for_errors` (may be NULL) names it in
 * messages. want_channels: 1, 3, or 0 for as stored. On failure *out is zeroed.
 * Errors: EX_E_INVALID (bad want_channels or arguments), EX_E_FORMAT (not a
 * JPEG/PNG, corrupt, truncated, too large), EX_E_UNSUPPORTED (CMYK JPEG),
 * EX_E_NOMEM. */
EX_API ex_status ex_image_decode(const void *data, size_t size, const char *name_for_errors, int want_channels,
                                 ex_image *out, ex_err *err);

/* Read the file at `path` and decode it. Adds EX_E_IO (missing, unreadable,
 * a directory, not a regular file) to the errors of ex_image_decode. */
EX_API ex_status ex_image_load(const char *path, int want_channels, ex_image *out, ex_err *err);

/* Free the pixels and zero the struct (NULL and zeroed images are fine). */
EX_API void ex_image_free(ex_image *img);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_IMAGE_H */
