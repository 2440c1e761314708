/*
 * explora/features.h — frozen features of a dataset through a model, as the
 * DINOv2 linear-probe protocol takes them, and the linear probe itself.
 *
 * Features (per image, host memory):
 *   cls    (nblocks, D)  the cls token of each of the last `nblocks` blocks,
 *                        passed through the final LayerNorm (DINOv2's
 *                        get_intermediate_layers(norm=True)); row nblocks-1 is the last block
 *   patch  (D)           the mean of the last block's patch tokens after the final norm
 * Images go through the evaluation transform ([transform] resize + centre
 * crop, mean/std; explora/eval_input.h) and the model in inference mode.
 * With skip_bad, unreadable samples are dropped: n counts the kept ones.
 *
 * Linear probe: one linear classifier per (last n blocks, with/without the
 * patch mean, learning rate), all trained on the same cached features with
 * SGD (momentum 0.9, no weight decay, cosine to 0), batch 256, weights
 * N(0, 0.01), bias 0, cross-entropy; the best top-1 on the evaluation
 * features is the result.
 */
#ifndef EXPLORA_FEATURES_H
#define EXPLORA_FEATURES_H

#include <stdint.h>
#include <stdio.h>

#include "explora/model.h"
#include "explora/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ex_features {
    int64_t n, dim, nblocks;
    float *cls;     /* (n, nblocks, dim) */
    float *patch;   /* (n, dim) */
    int64_t *labels; /* (n), -1 unlabeled */
    int64_t skipped; /* samples dropped by skip_bad while extracting (not stored in the cache) */
    ex_err first_skip; /* the first dropped sample's error */
} ex_features;

typedef struct ex_feature_opts {
    int64_t batch, height, width, resize; /* image size; resize: shorter side before the centre crop (0: none) */
    int64_t nblocks;                      /* last blocks whose cls tokens are kept */
    double mean[16], std[16];
    int64_t limit;                        /* use at most this many samples (0: all) */
    int skip_bad;                         /* drop unreadable samples instead of failing (explora/eval_input.h) */
} ex_feature_opts;

/* Run the model over every sample of an open dataset. The model must be allocated and loaded. */
EX_API ex_status ex_features_extract(ex_model *m, const ex_dataset_vtable *vt, void *ds, const ex_feature_opts *o,
                                     ex_features *out, FILE *progress, ex_err *err);
EX_API ex_status ex_features_save(const ex_features *f, const char *path, ex_err *err);
EX_API ex_status ex_features_load(ex_features *f, const char *path, ex_err *err);
EX_API void ex_features_free(ex_features *f);

typedef struct ex_probe_opts {
    double lrs[16];
    int nlrs;
    int64_t nblocks[4]; /* e.g. {1, 4} */
    int nnb;
    int avgpool;        /* 0: cls only, 1: cls + patch mean, 2: both variants */
    int64_t epochs, batch;
    uint64_t seed;
} ex_probe_opts;

typedef struct ex_probe_result {
    int64_t nblocks;
    int avgpool;
    double lr;
    double top1;        /* on the evaluation features, in % */
} ex_probe_result;

/* Train the grid on `train` and evaluate on `val`; results[] gets one entry per classifier
 * (at most cap), *best the index of the best. */
EX_API ex_status ex_linear_probe(ex_backend *be, const ex_features *train, const ex_features *val, int64_t classes,
                                 const ex_probe_opts *o, ex_probe_result *results, int cap, int *count, int *best,
                                 FILE *progress, ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_FEATURES_H */
