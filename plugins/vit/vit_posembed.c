/*
 * plugins/vit/vit_posembed.c — see vit_posembed.h.
 *
 * The resampling weights themselves are the core's (ex_resample_weights in
 * explora/augment.h): DINOV2 -> EX_FILTER_CUBIC_DINOV2 (scale factor (n+0.1)/m),
 * SIZE -> EX_FILTER_CUBIC_NOAA, ANTIALIAS -> EX_FILTER_BICUBIC (PIL-style).
 */
#include "vit_posembed.h"

#include <math.h>
#include <string.h>

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
