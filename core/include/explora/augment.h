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

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_AUGMENT_H */
