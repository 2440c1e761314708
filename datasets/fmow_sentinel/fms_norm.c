/*
 * datasets/fmow_sentinel/fms_norm.c — SentinelNormalize and the band drop
 * (see fms_norm.h). The statistics are SatMAE's fMoW-Sentinel ones.
 */
#include "fms_norm.h"

#include <math.h>
#include <stdint.h>

const double fms_band_mean[FMS_BANDS] = {
    1370.19151926, 1184.3824625,  1120.77120066, 1136.26026392, 1263.73947144, 1645.40315151, 1846.87040806,
    1762.59530783, 1972.62420416, 582.72633433,  14.77112979,   1732.16362238, 1247.91870117,
};

const double fms_band_std[FMS_BANDS] = {
    633.15169573, 650.2842772,   712.12507725, 965.23119807, 948.9819932, 1108.06650639, 1258.36394548,
    1233.1492281, 1364.38688993, 472.37967789, 14.3114637,   1310.36996126, 1087.6020813,
};

float fms_normalize_value(float x, int band) {
    double m = fms_band_mean[band], s = fms_band_std[band];
    double lo = m - 2.0 * s, hi = m + 2.0 * s;
    double u = ((double)x - lo) / (hi - lo) * 255.0;
    if (isnan(u) || u < 0.0) u = 0.0;
    if (u > 255.0) u = 255.0;
    uint8_t q = (uint8_t)u; /* truncation, as numpy's astype(np.uint8) */
    return (float)q / 255.0f;
}

void fms_select_bands(const float *src, size_t npix, const int *keep, int nkeep, int raw, float *dst) {
    for (size_t i = 0; i < npix; i++) {
        const float *px = src + i * FMS_BANDS;
        float *out = dst + i * (size_t)nkeep;
        for (int k = 0; k < nkeep; k++) out[k] = raw ? px[keep[k]] : fms_normalize_value(px[keep[k]], keep[k]);
    }
}
