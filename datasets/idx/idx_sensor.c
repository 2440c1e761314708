/*
 * datasets/idx/idx_sensor.c — the simulated low-light camera of the `idx`
 * plugin (see idx_sensor.h).
 */
#include "idx_sensor.h"

#include <math.h>

#include "explora/augment.h"
#include "explora/rng.h"

/* Poisson(lambda) by the inverse CDF at u in [0, 1): the smallest k with P(X <= k) > u. */
static double poisson_inv(double lambda, double u) {
    double p = exp(-lambda), cdf = p;
    int k = 0;
    while (u >= cdf && k < 1000) {
        k++;
        p *= lambda / (double)k;
        cdf += p;
    }
    return (double)k;
}

ex_status idx_sensor_apply(const idx_sensor *s, int64_t index, float *img, int64_t h, int64_t w, float *tmp,
                           ex_err *err) {
    if (s->photons <= 0.0) return EX_OK;
    if (s->blur > 0.0) {
        int kernel = 2 * (int)ceil(3.0 * s->blur) + 1;
        if (kernel > 63) kernel = 63;
        EX_CHECK(ex_gaussian_blur(img, h, w, 1, kernel, s->blur, 0, tmp, err));
    }
    const ex_rng r = ex_rng_seed(ex_splitmix64(s->seed) ^ (uint64_t)index, EX_RNG_DATA);
    const int64_t n = h * w;
    const double gain = (255.0 - s->black) / s->photons;
    for (int64_t i = 0; i < n; i++) {
        const double lambda = s->photons * (double)(img[i] < 0.0f ? 0.0f : img[i]);
        const double u = (double)ex_rng_uniform_at(r.key, 0, (uint64_t)i);
        double e = lambda > 64.0 ? lambda + sqrt(lambda) * (double)ex_rng_normal_at(r.key, (uint64_t)n, (uint64_t)i)
                                 : poisson_inv(lambda, u);
        e += s->read_noise * (double)ex_rng_normal_at(r.key, 2 * (uint64_t)n, (uint64_t)i);
        double dn = nearbyint(s->black + e * gain);
        dn = dn < 0.0 ? 0.0 : dn > 255.0 ? 255.0 : dn;
        img[i] = (float)(dn / 255.0);
    }
    return EX_OK;
}
