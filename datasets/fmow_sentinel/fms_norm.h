/*
 * datasets/fmow_sentinel/fms_norm.h — SatMAE's SentinelNormalize and the band
 * drop of the `fmow-sentinel` plugin.
 *
 * For band b with the fMoW-Sentinel mean m_b and std s_b (13 bands, B1 B2 B3
 * B4 B5 B6 B7 B8 B8A B9 B10 B11 B12):
 *   u = clip((x - (m_b - 2 s_b)) / ((m_b + 2 s_b) - (m_b - 2 s_b)) * 255, 0, 255)   in double, as numpy
 *   v = (float)(uint8_t)u / 255.0f                      astype(uint8) truncates; ToTensor divides by 255
 * NaN inputs give 0. Bands listed in `dropped` are removed afterwards; the
 * others keep their order.
 */
#ifndef EXPLORA_FMS_NORM_H
#define EXPLORA_FMS_NORM_H

#include <stddef.h>

#define FMS_BANDS 13

extern const double fms_band_mean[FMS_BANDS];
extern const double fms_band_std[FMS_BANDS];

/* SentinelNormalize of one value of band b. */
float fms_normalize_value(float x, int band);

/* src: npix pixels of 13 raw bands; dst: npix pixels of nkeep bands, band keep[k]
 * of the source going to channel k; normalised unless `raw`. */
void fms_select_bands(const float *src, size_t npix, const int *keep, int nkeep, int raw, float *dst);

#endif /* EXPLORA_FMS_NORM_H */
