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

/* For each of the n rows of w (n, m): [lo, hi) holding its non-zero weights (lo = hi: none). */
static void tap_spans(const double *w, int64_t n, int64_t m, int64_t *span) {
    for (int64_t i = 0; i < n; i++) {
        const double *r = w + i * m;
        int64_t lo = 0, hi = m;
        while (lo < m && r[lo] == 0.0) lo++;
        while (hi > lo && r[hi - 1] == 0.0) hi--;
        span[2 * i] = lo;
        span[2 * i + 1] = hi;
    }
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
    double *tmp = malloc(sizeof(double) * (size_t)((box.h + 1) * ow * c)); /* + one row of sums */
    if (!wx || !wy || !tmp) {
        free(wx);
        free(wy);
        free(tmp);
        EX_FAIL(err, EX_E_NOMEM, "resize: out of memory");
    }
    ex_resample_weights(f, box.w, ow, 0.0, (double)box.w, wx);
    ex_resample_weights(f, box.h, oh, 0.0, (double)box.h, wy);
    /* each output sample's non-zero taps lie in [lo, hi) of its weight row: visiting only that range adds
     * the same terms in the same order as the whole row (zeros are skipped either way) */
    int64_t *span = malloc(sizeof(int64_t) * 2 * (size_t)(ow + oh));
    if (!span) {
        free(wx);
        free(wy);
        free(tmp);
        EX_FAIL(err, EX_E_NOMEM, "resize: out of memory");
    }
    tap_spans(wx, ow, box.w, span);
    tap_spans(wy, oh, box.h, span + 2 * ow);
    /* horizontal pass: tmp (box.h, ow, c) */
    for (int64_t y = 0; y < box.h; y++) {
        const float *row = in + ((box.top + y) * w + box.left) * c;
        for (int64_t x = 0; x < ow; x++) {
            const double *wr = wx + x * box.w;
            const int64_t lo = span[2 * x], hi = span[2 * x + 1];
            double *t = tmp + (y * ow + x) * c;
            if (c == 3) { /* the common case, the channels side by side in registers */
                double a0 = 0.0, a1 = 0.0, a2 = 0.0;
                for (int64_t j = lo; j < hi; j++) {
                    const double wj = wr[j];
                    if (wj == 0.0) continue;
                    const float *p = row + j * 3;
                    a0 += wj * p[0], a1 += wj * p[1], a2 += wj * p[2];
                }
                t[0] = settle(a0, quantize), t[1] = settle(a1, quantize), t[2] = settle(a2, quantize);
                continue;
            }
            for (int64_t ch = 0; ch < c; ch++) {
                double acc = 0.0;
                for (int64_t j = lo; j < hi; j++)
                    if (wr[j] != 0.0) acc += wr[j] * row[j * c + ch];
                t[ch] = settle(acc, quantize); /* PIL clips (and rounds) between passes */
            }
        }
    }
    /* vertical pass */
    const int64_t *yspan = span + 2 * ow;
    double *acc = tmp + box.h * ow * c; /* one output row of sums, in tap order per element */
    for (int64_t y = 0; y < oh; y++) {
        const double *wr = wy + y * box.h;
        const int64_t lo = yspan[2 * y], hi = yspan[2 * y + 1];
        for (int64_t x = 0; x < ow * c; x++) acc[x] = 0.0;
        for (int64_t j = lo; j < hi; j++) {
            if (wr[j] == 0.0) continue;
            const double wj = wr[j];
            const double *src = tmp + j * ow * c;
            for (int64_t x = 0; x < ow * c; x++) acc[x] += wj * src[x];
        }
        for (int64_t x = 0; x < ow * c; x++) out[y * ow * c + x] = (float)settle(acc[x], quantize);
    }
    free(span);
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

/* ---------------------------------------------------------------------------
 * colour: torchvision's tensor ops (quantize 0) and its PIL path (quantize 1)
 * --------------------------------------------------------------------------- */

static int level8(float x) { /* the 8-bit level of a value on the grid */
    long v = lrint((double)x * 255.0);
    return v < 0 ? 0 : v > 255 ? 255 : (int)v;
}

static float from_level(int v) { return (float)v / 255.0f; }

/* PIL's Image.blend(in1, in2, alpha) on one 8-bit sample: float arithmetic, clipped, truncated. */
static int pil_blend(int in1, int in2, float alpha) {
    float t = (float)in1 + alpha * (float)(in2 - in1);
    if (t <= 0.0f) return 0;
    if (t >= 255.0f) return 255;
    return (int)t;
}

/* PIL's RGB -> L (Convert.c L24). */
static int pil_luma(int r, int g, int b) { return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16; }

static double tv_luma(const float *px) { return 0.2989 * px[0] + 0.587 * px[1] + 0.114 * px[2]; }

static float clamp01(double v) { return (float)(v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v); }

void ex_grayscale(float *img, int64_t h, int64_t w, int64_t c, int quantize) {
    if (c != 3) return;
    for (int64_t i = 0; i < h * w; i++) {
        float *px = img + i * 3;
        float g = quantize ? from_level(pil_luma(level8(px[0]), level8(px[1]), level8(px[2]))) : (float)tv_luma(px);
        px[0] = px[1] = px[2] = g;
    }
}

void ex_adjust_brightness(float *img, int64_t h, int64_t w, int64_t c, double factor, int quantize) {
    if (quantize) {
        for (int64_t i = 0; i < h * w * c; i++) img[i] = from_level(pil_blend(0, level8(img[i]), (float)factor));
        return;
    }
    for (int64_t i = 0; i < h * w * c; i++) img[i] = clamp01(factor * (double)img[i]);
}

void ex_adjust_contrast(float *img, int64_t h, int64_t w, int64_t c, double factor, int quantize) {
    const int64_t n = h * w;
    if (quantize) {
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++) {
            const float *px = img + i * c;
            sum += c == 3 ? pil_luma(level8(px[0]), level8(px[1]), level8(px[2])) : level8(px[0]);
        }
        const int mean = (int)(sum / (double)n + 0.5); /* ImageEnhance.Contrast: int(mean + 0.5) */
        for (int64_t i = 0; i < n * c; i++) img[i] = from_level(pil_blend(mean, level8(img[i]), (float)factor));
        return;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += c == 3 ? (double)(float)tv_luma(img + i * 3) : (double)img[i * c];
    const double mean = sum / (double)n;
    for (int64_t i = 0; i < n * c; i++) img[i] = clamp01(factor * (double)img[i] + (1.0 - factor) * mean);
}

void ex_adjust_saturation(float *img, int64_t h, int64_t w, int64_t c, double factor, int quantize) {
    if (c != 3) return;
    for (int64_t i = 0; i < h * w; i++) {
        float *px = img + i * 3;
        if (quantize) {
            const int g = pil_luma(level8(px[0]), level8(px[1]), level8(px[2]));
            for (int k = 0; k < 3; k++) px[k] = from_level(pil_blend(g, level8(px[k]), (float)factor));
        } else {
            const double g = (double)(float)tv_luma(px);
            for (int k = 0; k < 3; k++) px[k] = clamp01(factor * (double)px[k] + (1.0 - factor) * g);
        }
    }
}

/* PIL's 8-bit HSV (Convert.c rgb2hsv_row / hsv2rgb), hue shifted by `shift` levels. */
static void pil_hue_shift(float *px, int shift) {
    const int r = level8(px[0]), g = level8(px[1]), b = level8(px[2]);
    const int maxc = r > g ? (r > b ? r : b) : (g > b ? g : b);
    const int minc = r < g ? (r < b ? r : b) : (g < b ? g : b);
    if (minc == maxc) return; /* s = 0: grey stays grey whatever the hue */
    const float cr = (float)(maxc - minc);
    const float s = cr / (float)maxc;
    const float rc = (float)(maxc - r) / cr, gc = (float)(maxc - g) / cr, bc = (float)(maxc - b) / cr;
    float hf; /* PIL adds the double constants 2.0 and 4.0, then stores a float */
    if (r == maxc)
        hf = bc - gc;
    else if (g == maxc)
        hf = (float)(2.0 + (double)rc - (double)bc);
    else
        hf = (float)(4.0 + (double)gc - (double)rc);
    hf = (float)fmod((double)hf / 6.0 + 1.0, 1.0);
    int uh = (int)((double)hf * 255.0), us = (int)((double)s * 255.0);
    uh = uh < 0 ? 0 : uh > 255 ? 255 : uh;
    us = us < 0 ? 0 : us > 255 ? 255 : us;
    const int hh = (uh + shift) & 255, v = maxc;
    if (us == 0) {
        px[0] = px[1] = px[2] = from_level(v);
        return;
    }
    const int i = (int)floor((double)(float)hh * 6.0 / 255.0);
    const float f = (float)((double)(float)hh * 6.0 / 255.0 - (double)(float)i);
    const float fs = (float)((double)(float)us / 255.0);
    int p = (int)round((double)(float)v * (1.0 - (double)fs));
    int q = (int)round((double)(float)v * (1.0 - (double)fs * (double)f));
    int t = (int)round((double)(float)v * (1.0 - (double)fs * (1.0 - (double)f)));
    p = p < 0 ? 0 : p > 255 ? 255 : p;
    q = q < 0 ? 0 : q > 255 ? 255 : q;
    t = t < 0 ? 0 : t > 255 ? 255 : t;
    int o[3];
    switch (i % 6) {
    case 0: o[0] = v, o[1] = t, o[2] = p; break;
    case 1: o[0] = q, o[1] = v, o[2] = p; break;
    case 2: o[0] = p, o[1] = v, o[2] = t; break;
    case 3: o[0] = p, o[1] = q, o[2] = v; break;
    case 4: o[0] = t, o[1] = p, o[2] = v; break;
    default: o[0] = v, o[1] = p, o[2] = q; break;
    }
    for (int k = 0; k < 3; k++) px[k] = from_level(o[k]);
}

/* torchvision's _rgb2hsv, hue shift (h + factor) % 1, _hsv2rgb, in float32 as the tensors are. */
static void tv_hue_shift(float *px, float factor) {
    const float r = px[0], g = px[1], b = px[2];
    const float maxc = fmaxf(r, fmaxf(g, b)), minc = fminf(r, fminf(g, b));
    const int eqc = maxc == minc;
    const float cr = maxc - minc;
    const float s = cr / (eqc ? 1.0f : maxc);
    const float crd = eqc ? 1.0f : cr;
    const float rc = (maxc - r) / crd, gc = (maxc - g) / crd, bc = (maxc - b) / crd;
    float hv;
    if (maxc == r)
        hv = bc - gc;
    else if (maxc == g)
        hv = 2.0f + rc - bc;
    else
        hv = 4.0f + gc - rc;
    hv = hv / 6.0f + 1.0f; /* in [5/6, 11/6]: fmodf(hv, 1) is exactly hv - floorf(hv) */
    hv = hv - floorf(hv);
    hv = hv + factor;
    hv = hv - floorf(hv); /* torch's % (remainder, sign of the divisor) */
    if (hv >= 1.0f) hv = 0.0f;
    const float v = maxc;
    const float fi = floorf(hv * 6.0f);
    const float f = hv * 6.0f - fi;
    const int i = ((int)fi % 6 + 6) % 6;
    const float p = clamp01((double)(v * (1.0f - s)));
    const float q = clamp01((double)(v * (1.0f - s * f)));
    const float t = clamp01((double)(v * (1.0f - s * (1.0f - f))));
    const float a1[6] = {v, q, p, p, t, v}, a2[6] = {t, v, v, q, p, p}, a3[6] = {p, p, t, v, v, q};
    px[0] = a1[i];
    px[1] = a2[i];
    px[2] = a3[i];
}

void ex_adjust_hue(float *img, int64_t h, int64_t w, int64_t c, double hue_factor, int quantize) {
    if (c != 3) return;
    /* F_pil.adjust_hue: np_h += np.uint8(hue_factor * 255) (a float to uint8 cast: truncation, wrapped) */
    const int shift = (((int)(hue_factor * 255.0)) % 256 + 256) % 256;
    for (int64_t i = 0; i < h * w; i++) {
        if (quantize)
            pil_hue_shift(img + i * 3, shift);
        else
            tv_hue_shift(img + i * 3, (float)hue_factor);
    }
}

static int64_t reflect_index(int64_t i, int64_t n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
}

ex_status ex_gaussian_blur(float *img, int64_t h, int64_t w, int64_t c, int kernel, double sigma, int quantize,
                           float *tmp, ex_err *err) {
    EX_ENSURE(kernel >= 1 && kernel % 2 == 1 && kernel <= 63 && sigma > 0.0, err, EX_E_INVALID,
              "gaussian blur: kernel %d, sigma %g (an odd kernel up to 63 and sigma > 0)", kernel, sigma);
    /* torchvision _get_gaussian_kernel1d in float32: x = linspace(-k/2, k/2), exp(-0.5 (x / sigma)^2), normalised */
    float taps[63];
    float sum = 0.0f;
    const int half = kernel / 2;
    for (int k = 0; k < kernel; k++) {
        const float x = (float)(k - half) / (float)sigma;
        taps[k] = expf(-0.5f * x * x);
        sum += taps[k];
    }
    for (int k = 0; k < kernel; k++) taps[k] /= sum;
    const double scale = quantize ? 255.0 : 1.0; /* the PIL path blurs uint8 levels as floats */
    double dtaps[63];
    for (int k = 0; k < kernel; k++) dtaps[k] = (double)taps[k];
    /* Both passes accumulate a whole row at once (acc[i] += tap_k * src[i + k c] for k = 0..kernel-1, per
     * element in tap order): the same sums as one sample at a time, in a loop the compiler vectorises.
     * Reflect padding: a padded copy of the row (horizontal) or the reflected row index (vertical). */
    const int64_t rowlen = w * c;
    double *pad = malloc(sizeof(double) * (size_t)((w + 2 * half) * c));
    double *acc = malloc(sizeof(double) * (size_t)rowlen);
    if (!pad || !acc) {
        free(pad);
        free(acc);
        EX_FAIL(err, EX_E_NOMEM, "gaussian blur: out of memory");
    }
    /* horizontal pass into tmp */
    for (int64_t y = 0; y < h; y++) {
        const float *row = img + y * rowlen;
        for (int64_t x = -half; x < w + half; x++) {
            const int64_t xx = reflect_index(x, w);
            for (int64_t ch = 0; ch < c; ch++)
                pad[(x + half) * c + ch] = quantize ? (double)level8(row[xx * c + ch]) : (double)row[xx * c + ch];
        }
        for (int64_t i = 0; i < rowlen; i++) acc[i] = 0.0;
        for (int k = 0; k < kernel; k++) {
            const double t = dtaps[k];
            const double *src = pad + k * c;
            for (int64_t i = 0; i < rowlen; i++) acc[i] += t * src[i];
        }
        float *dst = tmp + y * rowlen;
        for (int64_t i = 0; i < rowlen; i++) dst[i] = (float)acc[i];
    }
    /* vertical pass back into img */
    for (int64_t y = 0; y < h; y++) {
        for (int64_t i = 0; i < rowlen; i++) acc[i] = 0.0;
        for (int k = 0; k < kernel; k++) {
            const double t = dtaps[k];
            const float *src = tmp + reflect_index(y + k - half, h) * rowlen;
            for (int64_t i = 0; i < rowlen; i++) acc[i] += t * (double)src[i];
        }
        float *dst = img + y * rowlen;
        for (int64_t i = 0; i < rowlen; i++)
            dst[i] = quantize ? from_level((int)nearbyint(fmin(fmax(acc[i], 0.0), scale))) : clamp01(acc[i]);
    }
    free(pad);
    free(acc);
    return EX_OK;
}

void ex_solarize(float *img, int64_t h, int64_t w, int64_t c, double threshold) {
    for (int64_t i = 0; i < h * w * c; i++)
        if ((double)img[i] * 255.0 >= threshold - 1e-3) img[i] = 1.0f - img[i];
}

ex_status ex_colour_apply(ex_rng *rng, const ex_colour_params *p, float *img, int64_t h, int64_t w, int64_t c,
                          int quantize, float *tmp, ex_colour_draws *draws, ex_err *err) {
    ex_colour_draws d;
    memset(&d, 0, sizeof d);
    for (int k = 0; k < 4; k++) d.order[k] = k;
    d.factors[0] = d.factors[1] = d.factors[2] = 1.0;
    const double strength[4] = {p->brightness, p->contrast, p->saturation, p->hue};
    const int any_jitter = strength[0] > 0.0 || strength[1] > 0.0 || strength[2] > 0.0 || strength[3] > 0.0;
    ex_status st = EX_OK;
    if (p->jitter_p > 0.0 && any_jitter && (double)ex_rng_next_uniform(rng) <= p->jitter_p) {
        d.jitter = 1;
        for (int i = 3; i >= 1; i--) {
            const int j = (int)ex_rng_next_below(rng, (uint32_t)(i + 1));
            const int t = d.order[i];
            d.order[i] = d.order[j];
            d.order[j] = t;
        }
        for (int k = 0; k < 4; k++) {
            if (strength[k] <= 0.0) continue;
            const double lo = k == 3 ? -strength[k] : fmax(0.0, 1.0 - strength[k]), hi = k == 3 ? strength[k] : 1.0 + strength[k];
            d.factors[k] = uniform_f32(rng, lo, hi);
        }
        for (int s = 0; s < 4; s++) {
            const int op = d.order[s];
            if (strength[op] <= 0.0) continue;
            if (op == 0) ex_adjust_brightness(img, h, w, c, d.factors[0], quantize);
            if (op == 1) ex_adjust_contrast(img, h, w, c, d.factors[1], quantize);
            if (op == 2) ex_adjust_saturation(img, h, w, c, d.factors[2], quantize);
            if (op == 3) ex_adjust_hue(img, h, w, c, d.factors[3], quantize);
        }
    }
    if (p->grayscale_p > 0.0 && (double)ex_rng_next_uniform(rng) < p->grayscale_p) {
        d.grayscale = 1;
        ex_grayscale(img, h, w, c, quantize);
    }
    if (p->blur_p > 0.0 && (double)ex_rng_next_uniform(rng) <= p->blur_p) {
        d.blur = 1;
        d.sigma = uniform_f32(rng, p->blur_sigma_min, p->blur_sigma_max);
        st = ex_gaussian_blur(img, h, w, c, 9, d.sigma, quantize, tmp, err);
    }
    if (st == EX_OK && p->solarize_p > 0.0 && (double)ex_rng_next_uniform(rng) < p->solarize_p) {
        d.solarize = 1;
        ex_solarize(img, h, w, c, p->solarize_threshold);
    }
    if (draws) *draws = d;
    return st;
}
