/*
 * plugins/vit/vit_posembed.c — see vit_posembed.h.
 *
 * The three resampling variants follow PyTorch's F.interpolate(mode="bicubic",
 * align_corners=False) in its three uses by the reference code:
 *   DINOV2     scale_factor s = (n + 0.1) / m is passed, so the source step is 1/s, not m/n;
 *   SIZE       size n is passed: step m/n;
 *   ANTIALIAS  antialias=True: a PIL-style filter whose support widens when
 *              downsampling, cubic coefficient -0.5, weights renormalised at the borders.
 * Without antialias the taps outside the grid are clamped to the edge.
 */
#include "vit_posembed.h"

#include <math.h>
#include <string.h>

/* Keys cubic convolution kernel with coefficient a. */
static double cubic(double x, double a) {
    x = fabs(x);
    if (x <= 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

static int64_t clampi(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

void vit_resample_weights(vit_interp mode, int64_t m, int64_t n, double *w) {
    memset(w, 0, sizeof(double) * (size_t)(n * m));
    if (mode == VIT_INTERP_ANTIALIAS) {
        const double r = (double)m / (double)n;
        const double support = 2.0 * (r > 1.0 ? r : 1.0);
        const double inv = r >= 1.0 ? 1.0 / r : 1.0;
        for (int64_t i = 0; i < n; i++) {
            const double c = r * ((double)i + 0.5);
            int64_t lo = (int64_t)(c - support + 0.5), hi = (int64_t)(c + support + 0.5);
            if (lo < 0) lo = 0;
            if (hi > m) hi = m;
            double sum = 0.0;
            for (int64_t j = lo; j < hi; j++) {
                double v = cubic(((double)j - c + 0.5) * inv, -0.5);
                w[i * m + j] = v;
                sum += v;
            }
            if (sum != 0.0)
                for (int64_t j = lo; j < hi; j++) w[i * m + j] /= sum;
        }
        return;
    }
    /* step from output to input coordinates */
    double step;
    if (mode == VIT_INTERP_DINOV2) {
        const double s = ((double)n + 0.1) / (double)m; /* DINOv2's interpolate_offset = 0.1 */
        step = 1.0 / s;
    } else {
        step = (double)m / (double)n;
    }
    for (int64_t i = 0; i < n; i++) {
        double u = step * ((double)i + 0.5) - 0.5;
        double f = floor(u);
        double t = u - f;
        int64_t i0 = (int64_t)f;
        const double k[4] = {cubic(t + 1.0, -0.75), cubic(t, -0.75), cubic(1.0 - t, -0.75), cubic(2.0 - t, -0.75)};
        for (int tap = 0; tap < 4; tap++) w[i * m + clampi(i0 - 1 + tap, 0, m - 1)] += k[tap];
    }
}

void vit_sincos_table(int64_t dim, int64_t gh, int64_t gw, int cls, float *table) {
    const int64_t f = dim / 4;
    float *row = table;
    if (cls) {
        memset(row, 0, sizeof(float) * (size_t)dim);
        row += dim;
    }
    for (int64_t i = 0; i < gh; i++) {
        for (int64_t j = 0; j < gw; j++, row += dim) {
            for (int64_t k = 0; k < f; k++) {
                /* MAE: omega = 1 / 10000**(k / F), computed in float64 */
                double omega = 1.0 / pow(10000.0, (double)k / (double)f);
                double aj = (double)j * omega, ai = (double)i * omega;
                row[k] = (float)sin(aj);
                row[f + k] = (float)cos(aj);
                row[2 * f + k] = (float)sin(ai);
                row[3 * f + k] = (float)cos(ai);
            }
        }
    }
}
