/*
 * datasets/idx/idx_sensor.h — a simulated camera for the `idx` plugin: each
 * image is "re-captured" by a low-light sensor, so that one labelled dataset
 * gives a second, shifted domain (the demo's target domain).
 *
 * Per image, with v in [0, 1] the stored intensity:
 *   1. optics: Gaussian blur of `blur` pixels (sigma; 0: none), reflect padding;
 *   2. photon shot noise: e ~ Poisson(photons * v) electrons (photons = the
 *      mean count of a white pixel);
 *   3. read noise: e += N(0, read_noise^2) electrons;
 *   4. 8-bit ADC: DN = clamp(round(black + e * (255 - black) / photons), 0, 255),
 *      with a black level of `black` DN; the sample is DN / 255.
 * The noise of image i is a fixed function of (seed, i) — the simulated
 * dataset is one capture, the same in every epoch and on every machine —
 * drawn from Philox (explora/rng.h): one uniform per pixel for the Poisson
 * draw (inverse CDF; a normal approximation above 64 expected electrons) and
 * one normal per pixel for the read noise.
 */
#ifndef EXPLORA_IDX_SENSOR_H
#define EXPLORA_IDX_SENSOR_H

#include <stdint.h>

#include "explora/status.h"

typedef struct idx_sensor {
    double photons;    /* mean electrons of a white pixel; 0: no simulation */
    double blur;       /* optical blur sigma in pixels (0: none) */
    double read_noise; /* electrons (standard deviation) */
    double black;      /* black level in DN (0..254) */
    uint64_t seed;
} idx_sensor;

/* img (h, w) in [0, 1], in place; tmp holds h * w floats. */
ex_status idx_sensor_apply(const idx_sensor *s, int64_t index, float *img, int64_t h, int64_t w, float *tmp,
                           ex_err *err);

#endif /* EXPLORA_IDX_SENSOR_H */
