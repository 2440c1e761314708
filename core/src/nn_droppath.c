/*
 * core/src/nn_droppath.c — stochastic-depth scales (see ex_drop_path_scales in explora/nn.h).
 *
 * DINOv2 (layers/block.py) uses two estimators. Above a rate of 0.1 it runs a
 * branch on a random subset of the batch and scales the result by
 * batch/subset ("drop_add_residual_stochastic_depth"), which is exactly a
 * per-image scale of batch/subset on the subset and 0 elsewhere. At or below
 * 0.1 it uses per-sample Bernoulli masks scaled by 1/keep (timm's DropPath).
 */
#include <stdlib.h>

#include "explora/nn.h"

ex_status ex_drop_path_scales(ex_rng *rng, double rate, int64_t batch, int64_t branches, float *out, ex_err *err) {
    EX_ENSURE(rate >= 0.0 && rate < 1.0, err, EX_E_INVALID, "drop path rate %g outside [0, 1)", rate);
    EX_ENSURE(batch >= 1 && branches >= 0 && batch <= (1 << 24), err, EX_E_INVALID,
              "drop path: batch %lld, branches %lld", (long long)batch, (long long)branches);
    if (rate == 0.0) {
        for (int64_t i = 0; i < branches * batch; i++) out[i] = 1.0f;
        return EX_OK;
    }
    if (rate <= 0.1) {
        const float keep = (float)(1.0 - rate), scale = 1.0f / keep;
        for (int64_t i = 0; i < branches * batch; i++) out[i] = ex_rng_next_uniform(rng) < keep ? scale : 0.0f;
        return EX_OK;
    }
    int64_t subset = (int64_t)((double)batch * (1.0 - rate));
    if (subset < 1) subset = 1;
    const float scale = (float)batch / (float)subset;
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)batch);
    EX_ENSURE(perm, err, EX_E_NOMEM, "out of memory");
    for (int64_t br = 0; br < branches; br++) {
        /* the first `subset` entries of a Fisher-Yates shuffle are a uniform random subset */
        for (int64_t i = 0; i < batch; i++) perm[i] = (int32_t)i;
        for (int64_t i = 0; i < subset; i++) {
            int64_t j = i + (int64_t)ex_rng_next_below(rng, (uint32_t)(batch - i));
            int32_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        float *s = out + br * batch;
        for (int64_t i = 0; i < batch; i++) s[i] = 0.0f;
        for (int64_t i = 0; i < subset; i++) s[perm[i]] = scale;
    }
    free(perm);
    return EX_OK;
}
