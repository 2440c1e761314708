/*
 * explora/augment.h — image transforms on host float images (H, W, C) in [0, 1],
 * with torchvision's semantics:
 *
 *   ex_rrc_sample      RandomResizedCrop.get_params: 10 tries of (area scale,
 *                      log-uniform aspect ratio), then the centre-crop fallback
 *   ex_resize_crop     resample a box of the image to (oh, ow) with PIL's
 *                      antialiased bicubic (a = -0.5, support widened when
 *                      shrinking, weights renormalised at the borders) or
 *                      bilinear filter, separable, computed in double
 *   ex_flip_h          horizontal flip
 *   ex_normalize_chw   (x - mean) / std per channel, HWC in -> CHW out
 *   colour             adjust_brightness / contrast / saturation / hue,
 *                      grayscale, gaussian_blur, solarize; ex_colour_apply
 *                      runs ColorJitter (random op order), RandomGrayscale,
 *                      GaussianBlur and RandomSolarize with their probabilities
 *
 * Colour ops take `quantize`: 0 follows torchvision's tensor implementation
 * at full precision (float images); 1 follows what torchvision 0.14 does on
 * PIL uint8 images (the DINOv2 reference pipeline) for inputs on the 8-bit
 * grid: ImageEnhance's Image.blend truncating to uint8, grayscale with PIL's
 * fixed-point luma ((19595 r + 38470 g + 7471 b + 2^15) >> 16), contrast
 * against the rounded mean of that luma, hue through PIL's 8-bit HSV with the
 * shift np.uint8(hue * 255); blur is F.gaussian_blur's tensor path on the
 * uint8 values with torch.round at the end (torchvision converts PIL images
 * to tensors for it). quantize = 1 matches PIL within 1/255 (tested); the
 * float path differs from PIL by at most ~1/255 per op except hue, where
 * PIL's 8-bit hue (1/255 of a turn) moves saturated pixels by up to ~6/255.
 *
 * Random draws come from an ex_rng stream, so a view is a function of
 * (seed, image index, view index) whatever the number of loader threads.
 */
#ifndef EXPLORA_AUGMENT_H
#define EXPLORA_AUGMENT_H

#include <stdint.h>

#include "explora/export.h"
#include "explora/rng.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ex_filter {
    EX_FILTER_BICUBIC = 0,    /* PIL / torchvision antialiased bicubic */
    EX_FILTER_BILINEAR = 1,   /* PIL / torchvision antialiased bilinear (triangle) */
    EX_FILTER_CUBIC_NOAA = 2, /* F.interpolate bicubic to size, no antialias, a = -0.75, clamped taps */
    EX_FILTER_CUBIC_DINOV2 = 3 /* the same with the source step of scale factor (n + 0.1) / m (original DINOv2) */
} ex_filter;

/* 1-D resampling weights from m source samples to n outputs: w (n, m) row-major, in double.
 * For the antialiased filters `in0, in_len` select a sub-range of the source (a crop box
 * [in0, in0 + in_len) in source pixels, fractional allowed); pass 0, m for the whole axis. */
EX_API void ex_resample_weights(ex_filter f, int64_t m, int64_t n, double in0, double in_len, double *w);

/* A crop box in pixels: rows [top, top + h), columns [left, left + w). */
typedef struct ex_box {
    int64_t top, left, h, w;
} ex_box;

/* torchvision RandomResizedCrop.get_params for an (height, width) image. */
EX_API ex_box ex_rrc_sample(ex_rng *rng, int64_t height, int64_t width, double scale_min, double scale_max,
                            double ratio_min, double ratio_max);

/* out (oh, ow, c) = resample of the box of in (h, w, c), values clipped to [0, 1] after each pass as PIL
 * does; quantize = 1 also rounds to the 8-bit grid after each pass (PIL on 8-bit images, within 1/255). */
EX_API ex_status ex_resize_crop(const float *in, int64_t h, int64_t w, int64_t c, ex_box box, ex_filter f,
                                int quantize, float *out, int64_t oh, int64_t ow, ex_err *err);

/* Evaluation transform, torchvision's Resize(resize_short) + CenterCrop((oh, ow)): the shorter side
 * becomes resize_short (the longer int(resize_short * long / short)), then the centred (oh, ow) crop
 * (top = round((h' - oh) / 2), half to even). resize_short = 0 skips the resize. */
EX_API ex_status ex_resize_center_crop(const float *in, int64_t h, int64_t w, int64_t c, int64_t resize_short,
                                       ex_filter f, int quantize, float *out, int64_t oh, int64_t ow, ex_err *err);

EX_API void ex_flip_h(float *img, int64_t h, int64_t w, int64_t c);

/* out (c_out, h, w) = (in (h, w, c_in) - mean) / std; c_in 1 -> c_out 3 repeats the channel. */
EX_API ex_status ex_normalize_chw(const float *in, int64_t h, int64_t w, int64_t c_in, int64_t c_out,
                                  const double *mean, const double *std, float *out, ex_err *err);

/* ---- colour (see the top of this file for `quantize`); img (h, w, c), c = 1 or 3 ---- */

/* torchvision's rgb_to_grayscale: 0.2989 r + 0.587 g + 0.114 b into all 3 channels (c = 1: unchanged). */
EX_API void ex_grayscale(float *img, int64_t h, int64_t w, int64_t c, int quantize);
EX_API void ex_adjust_brightness(float *img, int64_t h, int64_t w, int64_t c, double factor, int quantize);
EX_API void ex_adjust_contrast(float *img, int64_t h, int64_t w, int64_t c, double factor, int quantize);
EX_API void ex_adjust_saturation(float *img, int64_t h, int64_t w, int64_t c, double factor, int quantize);
/* hue_factor in [-0.5, 0.5]; c = 1: unchanged. */
EX_API void ex_adjust_hue(float *img, int64_t h, int64_t w, int64_t c, double hue_factor, int quantize);
/* F.gaussian_blur(kernel (k, k), sigma (s, s)): normalised float32 Gaussian taps, reflect padding,
 * separable; tmp holds h * w * c floats. */
EX_API ex_status ex_gaussian_blur(float *img, int64_t h, int64_t w, int64_t c, int kernel, double sigma, int quantize,
                                  float *tmp, ex_err *err);
/* values >= threshold / 255 become 1 - value (PIL ImageOps.solarize on 8-bit levels). */
EX_API void ex_solarize(float *img, int64_t h, int64_t w, int64_t c, double threshold);

/* The colour part of a view (all zero: nothing happens and nothing is drawn). Strengths as
 * ColorJitter's arguments: brightness b draws a factor in [max(0, 1 - b), 1 + b], hue h in [-h, h]. */
typedef struct ex_colour_params {
    double brightness, contrast, saturation, hue;
    double jitter_p;          /* RandomApply([ColorJitter], p) */
    double grayscale_p;       /* RandomGrayscale(p) */
    double blur_p;            /* the effective probability of GaussianBlur(kernel 9) */
    double blur_sigma_min, blur_sigma_max;
    double solarize_p, solarize_threshold; /* RandomSolarize(threshold (8-bit level), p) */
} ex_colour_params;

/* What ex_colour_apply drew (for tests and logs). order: op ids, 0 brightness, 1 contrast,
 * 2 saturation, 3 hue; factors by op id (neutral when the op is off). */
typedef struct ex_colour_draws {
    int jitter, grayscale, blur, solarize;
    int order[4];
    double factors[4];
    double sigma;
} ex_colour_draws;

/* Draw order (each step only when enabled: its probability and, for the jitter, a strength > 0):
 *   1. u; ColorJitter applies when u <= jitter_p (RandomApply: `if p < rand: skip`); when it
 *      applies: the op order, torch.randperm(4) as Fisher-Yates (for i = 3..1: j = below(i + 1),
 *      swap i, j), then one float32 uniform factor for each op with a strength > 0 in the order
 *      brightness, contrast, saturation, hue (ColorJitter.get_params); ops run in that order;
 *   2. u; grayscale when u < grayscale_p (RandomGrayscale);
 *   3. u; blur when u <= blur_p (DINOv2's RandomApply with keep_p), then sigma, a float32 uniform
 *      in [blur_sigma_min, blur_sigma_max] (GaussianBlur.get_params), kernel 9;
 *   4. u; solarize when u < solarize_p (RandomSolarize).
 * tmp: h * w * c floats; draws may be NULL. */
EX_API ex_status ex_colour_apply(ex_rng *rng, const ex_colour_params *p, float *img, int64_t h, int64_t w, int64_t c,
                                 int quantize, float *tmp, ex_colour_draws *draws, ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_AUGMENT_H */
