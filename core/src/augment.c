/*
 * core/src/augment.c — crops, resampling, flips and normalisation on host
 * images (see explora/augment.h).
 *
 * Resampling follows PIL's ImagingResample (which torchvision uses for PIL
 * images and imitates with antialias=True on tensors): for output sample i
 * the centre in source coordinates is in0 + (i + 0.5) * scale with
 * scale = in_len / n; the filter support is widened by max(scale, 1) and its
 * argument shrunk by the same factor, taps outside the image are dropped and
 * the weights renormalised. The non-antialiased cubic variants are
 * F.interpolate(mode="bicubic", align_corners=False): a = -0.75, four taps,
 * indices clamped to the edge.
 *
 * Like PIL on 8-bit images, ex_resize_crop clips to [0, 1] after each pass
 * (bicubic overshoots at sharp edges). With quantize = 1 it also rounds to
 * the 8-bit grid after each pass, as PIL does, and matches PIL's output to
 * within 1/255; with quantize = 0 it keeps full precision (16-bit and float
 * sources lose nothing) and stays within 1.5/255 of PIL.
 */
#include "explora/augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double cubic(double x, double a) {
    x = fabs(x);
    if (x <= 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

static double triangle(double x) {
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

static int64_t clampi(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

void ex_resample_weights(ex_filter f, int64_t m, int64_t n, double in0, double in_len, double *w) {
    memset(w, 0, sizeof(double) * (size_t)(n * m));
    if (f == EX_FILTER_BICUBIC || f == EX_FILTER_BILINEAR) {
        const double scale = in_len / (double)n;
        const double base = f == EX_FILTER_BICUBIC ? 2.0 : 1.0;
        const double support = base * (scale > 1.0 ? scale : 1.0);
        const double ss = scale > 1.0 ? 1.0 / scale : 1.0;
        for (int64_t i = 0; i < n; i++) {
            const double c = in0 + ((double)i + 0.5) * scale;
            int64_t lo = (int64_t)(c - support + 0.5), hi = (int64_t)(c + support + 0.5);
            if (lo < 0) lo = 0;
            if (hi > m) hi = m;
            double sum = 0.0;
            for (int64_t j = lo; j < hi; j++) {
                double x = ((double)j - c + 0.5) * ss;
                double v = f == EX_FILTER_BICUBIC ? cubic(x, -0.5) : triangle(x);
                w[i * m + j] = v;
                sum += v;
            }
            if (sum != 0.0)
                for (int64_t j = lo; j < hi; j++) w[i * m + j] /= sum;
        }
        return;
    }
    /* F.interpolate bicubic without antialias over the whole axis */
    const double step = f == EX_FILTER_CUBIC_DINOV2 ? 1.0 / (((double)n + 0.1) / (double)m) : (double)m / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double u = step * ((double)i + 0.5) - 0.5;
        double fl = floor(u), t = u - fl;
        int64_t i0 = (int64_t)fl;
        const double k[4] = {cubic(t + 1.0, -0.75), cubic(t, -0.75), cubic(1.0 - t, -0.75), cubic(2.0 - t, -0.75)};
        for (int tap = 0; tap < 4; tap++) w[i * m + clampi(i0 - 1 + tap, 0, m - 1)] += k[tap];
    }
}

/* torch.empty(1).uniform_(lo, hi).item() with our stream: a float32 result. */
static double uniform_f32(ex_rng *r, double lo, double hi) {
    float u = ex_rng_next_uniform(r);
    return (double)(float)(lo + (hi - lo) * (double)u);
}

ex_box ex_rrc_sample(ex_rng *rng, int64_t height, int64_t width, double scale_min, double scale_max, double ratio_min,
                     double ratio_max) {
    /* torchvision 0.14 RandomResizedCrop.get_params, draw for draw (its tensors are float32) */
    const double area = (double)height * (double)width;
    const double lr0 = (double)logf((float)ratio_min), lr1 = (double)logf((float)ratio_max);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * uniform_f32(rng, scale_min, scale_max);
        double aspect = (double)expf((float)uniform_f32(rng, lr0, lr1));
        int64_t w = (int64_t)nearbyint(sqrt(target * aspect)); /* Python round(): half to even */
        int64_t h = (int64_t)nearbyint(sqrt(target / aspect));
        if (w > 0 && w <= width && h > 0 && h <= height) {
            ex_box b;
            b.top = (int64_t)ex_rng_next_below(rng, (uint32_t)(height - h + 1));
            b.left = (int64_t)ex_rng_next_below(rng, (uint32_t)(width - w + 1));
            b.h = h;
            b.w = w;
            return b;
        }
    }
    /* torchvision's fallback: the largest centred crop within the ratio range */
    double in_ratio = (double)width / (double)height;
    int64_t w = width, h = height;
    if (in_ratio < ratio_min) {
        h = (int64_t)nearbyint((double)w / ratio_min);
    } else if (in_ratio > ratio_max) {
        w = (int64_t)nearbyint((double)h * ratio_max);
    }
    ex_box b = {(height - h) / 2, (width - w) / 2, h, w};
    return b;
}

/* Clip to [0, 1]; with quantize, round to the 8-bit grid as PIL does between and after its passes. */
static double settle(double v, int quantize) {
    v = v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v;
    return quantize ? floor(v * 255.0 + 0.5) / 255.0 : v;
}

ex_status ex_resize_crop(const float *in, int64_t h, int64_t w, int64_t c, ex_box box, ex_filter f, int quantize,
                         float *out, int64_t oh, int64_t ow, ex_err *err) {
    EX_ENSURE(box.h >= 1 && box.w >= 1 && box.top >= 0 && box.left >= 0 && box.top + box.h <= h &&
                  box.left + box.w <= w && oh >= 1 && ow >= 1 && c >= 1,
              err, EX_E_INVALID, "resize: box (%lld, %lld, %lld, %lld) outside a %lldx%lld image or empty output",
              (long long)box.top, (long long)box.left, (long long)box.h, (long long)box.w, (long long)h, (long long)w);
    /* PIL resizes the cropped image: weights over the box's own pixels */
    double *wx = malloc(sizeof(double) * (size_t)(ow * box.w));
    double *wy = malloc(sizeof(double) * (size_t)(oh * box.h));
    double *tmp = malloc(sizeof(double) * (size_t)(box.h * ow * c));
    if (!wx || !wy || !tmp) {
        free(wx);
        free(wy);
        free(tmp);
        EX_FAIL(err, EX_E_NOMEM, "resize: out of memory");
    }
    ex_resample_weights(f, box.w, ow, 0.0, (double)box.w, wx);
    ex_resample_weights(f, box.h, oh, 0.0, (double)box.h, wy);
    /* horizontal pass: tmp (box.h, ow, c) */
    for (int64_t y = 0; y < box.h; y++) {
        const float *row = in + ((box.top + y) * w + box.left) * c;
        for (int64_t x = 0; x < ow; x++) {
            const double *wr = wx + x * box.w;
            for (int64_t ch = 0; ch < c; ch++) {
                double acc = 0.0;
                for (int64_t j = 0; j < box.w; j++)
                    if (wr[j] != 0.0) acc += wr[j] * row[j * c + ch];
                tmp[(y * ow + x) * c + ch] = settle(acc, quantize); /* PIL clips (and rounds) between passes */
            }
        }
    }
    /* vertical pass */
    for (int64_t y = 0; y < oh; y++) {
        const double *wr = wy + y * box.h;
        for (int64_t x = 0; x < ow * c; x++) {
            double acc = 0.0;
            for (int64_t j = 0; j < box.h; j++)
                if (wr[j] != 0.0) acc += wr[j] * tmp[j * ow * c + x];
            out[y * ow * c + x] = (float)settle(acc, quantize);
        }
    }
    free(wx);
    free(wy);
    free(tmp);
    return EX_OK;
}

ex_status ex_resize_center_crop(const float *in, int64_t h, int64_t w, int64_t c, int64_t resize_short, ex_filter f,
                                int quantize, float *out, int64_t oh, int64_t ow, ex_err *err) {
    int64_t rh = h, rw = w;
    float *resized = NULL;
    const float *src = in;
    if (resize_short > 0) {
        if (h <= w) {
            rh = resize_short;
            rw = (int64_t)((double)resize_short * (double)w / (double)h);
        } else {
            rw = resize_short;
            rh = (int64_t)((double)resize_short * (double)h / (double)w);
        }
        resized = malloc(sizeof(float) * (size_t)(rh * rw * c));
        EX_ENSURE(resized, err, EX_E_NOMEM, "resize: out of memory");
        ex_box all = {0, 0, h, w};
        ex_status st = ex_resize_crop(in, h, w, c, all, f, quantize, resized, rh, rw, err);
        if (st != EX_OK) {
            free(resized);
            return st;
        }
        src = resized;
    }
    if (oh > rh || ow > rw) {
        free(resized);
        EX_FAIL(err, EX_E_SHAPE, "center crop %lldx%lld is larger than the %lldx%lld image (after resizing)",
                (long long)oh, (long long)ow, (long long)rh, (long long)rw);
    }
    const int64_t top = (int64_t)nearbyint((double)(rh - oh) / 2.0), left = (int64_t)nearbyint((double)(rw - ow) / 2.0);
    for (int64_t y = 0; y < oh; y++) memcpy(out + y * ow * c, src + ((top + y) * rw + left) * c, sizeof(float) * (size_t)(ow * c));
    free(resized);
    return EX_OK;
}

void ex_flip_h(float *img, int64_t h, int64_t w, int64_t c) {
    for (int64_t y = 0; y < h; y++) {
        float *row = img + y * w * c;
        for (int64_t x = 0; x < w / 2; x++)
            for (int64_t ch = 0; ch < c; ch++) {
                float t = row[x * c + ch];
                row[x * c + ch] = row[(w - 1 - x) * c + ch];
                row[(w - 1 - x) * c + ch] = t;
            }
    }
}

ex_status ex_normalize_chw(const float *in, int64_t h, int64_t w, int64_t c_in, int64_t c_out, const double *mean,
                           const double *std, float *out, ex_err *err) {
    EX_ENSURE(c_in == c_out || (c_in == 1 && c_out == 3), err, EX_E_SHAPE,
              "normalise: %lld input channels cannot become %lld", (long long)c_in, (long long)c_out);
    for (int64_t ch = 0; ch < c_out; ch++) {
        const int64_t src = c_in == 1 ? 0 : ch;
        const double m = mean[ch], s = std[ch];
        for (int64_t i = 0; i < h * w; i++) out[ch * h * w + i] = (float)(((double)in[i * c_in + src] - m) / s);
    }
    return EX_OK;
}
