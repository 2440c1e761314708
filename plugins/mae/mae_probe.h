/*
 * plugins/mae/mae_probe.h — what the `mae` objective shows of itself to tests
 * and tools, without a second exported symbol.
 *
 * The `self` pointer that the plugin's create() returns points at a struct
 * whose FIRST member is an mae_probe (check `magic`). A caller may:
 *   - before backbone_shape(): set input_grad = 1 to have the image gradient
 *     planned (ex_backbone_shape.input_grad);
 *   - before step(): point dimages at a device buffer (batch, channels,
 *     height, width) that step() then accumulates dL/dimages into (+=);
 *   - after step(): read the prediction, the target and the masks of that step.
 * Everything else about the plugin stays private.
 */
#ifndef EXPLORA_MAE_PROBE_H
#define EXPLORA_MAE_PROBE_H

#include <stdint.h>

#define MAE_PROBE_MAGIC 0x4D414531u /* "MAE1" */

typedef struct mae_probe {
    uint32_t magic;              /* MAE_PROBE_MAGIC */
    /* set by the caller */
    int input_grad;              /* plan the backbone's image gradient (read by backbone_shape) */
    float *dimages;              /* (batch, channels, height, width) device, += dL/dimages; NULL: not computed */
    /* sizes (fixed at create) */
    int64_t max_batch;           /* images per step the activations are planned for */
    int64_t patches;             /* L = (height / patch) * (width / patch) */
    int64_t keep;                /* len_keep = int(L * (1 - mask_ratio)) */
    int64_t pixels;              /* K = patch * patch * channels, values per patch */
    /* written by every step (valid until the next one) */
    int64_t batch;               /* images in the last step */
    const float *pred;           /* (batch, L, K) device: decoder_pred output without the cls row */
    const float *target;         /* (batch, L, K) device: patchified view, per-patch normalised with norm_pix_loss */
    const float *noise;          /* (batch, L) host: the uniforms drawn for masking */
    const int32_t *ids_keep;     /* (batch, keep) host: kept patches, ascending noise (stable) */
    const int32_t *ids_restore;  /* (batch, L) host: rank of each patch in the shuffle */
    const uint8_t *mask;         /* (batch, L) host: 1 = removed (the loss is taken there), original order */
    double loss;                 /* the last loss */
} mae_probe;

#endif /* EXPLORA_MAE_PROBE_H */
