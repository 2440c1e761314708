/*
 * plugins/dinov2/dinov2_masks.c — iBOT block masks (dinov2/data/masking.py
 * MaskingGenerator, dinov2/data/collate.py collate_data_and_cast).
 *
 * For the Bg = 2B global crops of a step: n_m = int(Bg * mask_probability)
 * of them get a target of int(N * U(probs[i], probs[i + 1])) patches,
 * probs = linspace(ratio_min, ratio_max, n_m + 1); the others get none; the
 * targets are shuffled over the images (Fisher-Yates). Each mask is built
 * block by block: while count < target, budget = min(target - count,
 * max_patches) and up to 10 tries of area ~ U(4, budget), aspect =
 * exp(U(ln 0.3, ln(1/0.3))), h = round(sqrt(area aspect)), w =
 * round(sqrt(area / aspect)) (round half to even, as Python), box top-left
 * uniform; a box that adds between 1 and budget new patches is marked and
 * ends the tries; a round that adds nothing ends the mask. So count <= target.
 * max_patches = 0.5 * N (train.py: 0.5 * img_size // patch * img_size // patch).
 * Draws come from the step's rng (the mask stream); the sequence is not
 * Python's, the distribution is.
 */
#include <math.h>
#include <string.h>

#include "dinov2_internal.h"

static double uniform(ex_rng *rng, double lo, double hi) { return lo + (hi - lo) * (double)ex_rng_next_uniform(rng); }

/* random.randint(a, b), inclusive */
static int64_t randint(ex_rng *rng, int64_t a, int64_t b) { return a + (int64_t)ex_rng_next_below(rng, (uint32_t)(b - a + 1)); }

int64_t dn_mask_block(uint8_t *mask /* (gh, gw) */, int64_t gh, int64_t gw, int64_t target, int64_t max_patches,
                      ex_rng *rng) {
    const double la = log(0.3), lb = log(1.0 / 0.3);
    int64_t count = 0;
    while (count < target) {
        int64_t budget = target - count;
        if (budget > max_patches) budget = max_patches;
        int64_t delta = 0;
        for (int attempt = 0; attempt < 10; attempt++) {
            const double area = uniform(rng, 4.0, (double)budget);
            const double aspect = exp(uniform(rng, la, lb));
            const int64_t h = (int64_t)nearbyint(sqrt(area * aspect));
            const int64_t w = (int64_t)nearbyint(sqrt(area / aspect));
            if (w < gw && h < gh) {
                const int64_t top = randint(rng, 0, gh - h), left = randint(rng, 0, gw - w);
                int64_t already = 0;
                for (int64_t i = top; i < top + h; i++)
                    for (int64_t j = left; j < left + w; j++) already += mask[i * gw + j];
                const int64_t fresh = h * w - already;
                if (fresh > 0 && fresh <= budget) {
                    for (int64_t i = top; i < top + h; i++)
                        for (int64_t j = left; j < left + w; j++)
                            if (!mask[i * gw + j]) {
                                mask[i * gw + j] = 1;
                                delta++;
                            }
                }
                if (delta > 0) break;
            }
        }
        if (delta == 0) break;
        count += delta;
    }
    return count;
}

static double lin(double a, double b, int64_t i, int64_t steps) {
    return steps > 1 ? a + (b - a) * (double)i / (double)(steps - 1) : a;
}

int64_t dn_masks_max_patches(int64_t size, int64_t patch) {
    const double a = floor(0.5 * (double)size / (double)patch);
    return (int64_t)floor(a * (double)size / (double)patch);
}

int64_t dn_masks_upperbound(int64_t Bg, int64_t N, double ratio_min, double ratio_max, double prob) {
    const int64_t nm = (int64_t)((double)Bg * prob);
    int64_t ub = 0;
    for (int64_t i = 0; i < nm; i++) ub += (int64_t)((double)N * lin(ratio_min, ratio_max, i + 1, nm + 1));
    return ub;
}

void dn_masks_generate(uint8_t *mask /* (Bg, gh*gw) */, int64_t *targets /* (Bg) scratch */, int64_t Bg, int64_t gh,
                       int64_t gw, int64_t max_patches, double ratio_min, double ratio_max, double prob, ex_rng *rng) {
    const int64_t N = gh * gw;
    const int64_t nm = (int64_t)((double)Bg * prob);
    memset(mask, 0, (size_t)(Bg * N));
    for (int64_t i = 0; i < Bg; i++) {
        if (i < nm) {
            const double lo = lin(ratio_min, ratio_max, i, nm + 1), hi = lin(ratio_min, ratio_max, i + 1, nm + 1);
            targets[i] = (int64_t)((double)N * uniform(rng, lo, hi));
        } else {
            targets[i] = 0;
        }
    }
    for (int64_t i = Bg - 1; i > 0; i--) { /* random.shuffle */
        const int64_t j = randint(rng, 0, i);
        const int64_t t = targets[i];
        targets[i] = targets[j];
        targets[j] = t;
    }
    for (int64_t i = 0; i < Bg; i++) dn_mask_block(mask + i * N, gh, gw, targets[i], max_patches, rng);
}
