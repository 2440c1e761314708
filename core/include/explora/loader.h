/*
 * explora/loader.h — batches of augmented views from a dataset plugin.
 *
 * Each epoch visits the dataset in the order of a permutation drawn from the
 * data stream (stable argsort of uniforms at counter epoch * N), so the order
 * is a function of (seed, epoch). Each view of each image is cropped,
 * resized, flipped and normalised with draws from the augmentation stream at
 * a counter fixed by (epoch, image, view): results do not depend on the batch
 * size or on how many threads decode. The position (epoch, index into the
 * permutation) is what a checkpoint saves to resume on the same images.
 *
 * Decoding runs on the calling thread for now (one image after another).
 */
#ifndef EXPLORA_LOADER_H
#define EXPLORA_LOADER_H

#include <stdint.h>

#include "explora/augment.h"
#include "explora/objective.h"
#include "explora/plugin.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ex_loader {
    const ex_dataset_vtable *vt;
    void *ds;
    int64_t n;                       /* dataset length */
    ex_view_recipe recipe;
    int64_t channels;                /* channels the backbone takes */
    double mean[16], std[16];
    ex_filter filter;
    uint64_t seed;
    int64_t epoch, pos;              /* next image: order[pos] of epoch `epoch` */
    int32_t *order;                  /* (n) permutation of the current epoch */
    int64_t batch;
    float *views[EX_MAX_VIEWS];      /* host (batch, channels, h, w) per view */
    int64_t *labels;                 /* (batch) */
    float *scratch;                  /* one resized view (h, w, c) */
} ex_loader;

EX_API ex_status ex_loader_init(ex_loader *l, const ex_dataset_vtable *vt, void *ds, const ex_view_recipe *recipe,
                                int64_t batch, int64_t channels, const double *mean, const double *std, uint64_t seed,
                                ex_err *err);
/* Fill views and labels with the next `batch` images (crossing epoch boundaries as needed). */
EX_API ex_status ex_loader_next(ex_loader *l, ex_err *err);
/* Jump to a saved position (epoch, pos). */
EX_API ex_status ex_loader_seek(ex_loader *l, int64_t epoch, int64_t pos, ex_err *err);
EX_API void ex_loader_free(ex_loader *l);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_LOADER_H */
