/*
 * explora/loader.h — batches of augmented views from a dataset plugin.
 *
 * Each epoch visits the dataset in the order of a permutation drawn from the
 * data stream (stable argsort of uniforms at counter epoch * N), so the order
 * is a function of (seed, epoch). Each view of each image is cropped,
 * resized, flipped and normalised with draws from the augmentation stream at
 * a counter fixed by (epoch, image, view): results do not depend on the batch
 * size or on how many threads decode. The position (epoch, index into this
 * rank's share of the permutation) is what a checkpoint saves to resume on the
 * same images.
 *
 * Threads: with workers = 0, ex_loader_next decodes on the calling thread,
 * one image after another. With workers >= 1, that many pthreads decode and
 * augment ahead of the consumer into a bounded ring of batch slots (workers + 1
 * batches in flight at most). Images are claimed in stream order under a lock
 * and each lands at its own (batch, row) place, so batch k is bitwise the same
 * whatever the number of workers. An error while making an image stops the
 * pipeline after that image's batch: ex_loader_next returns it (naming the
 * sample index) for that batch and keeps returning it until ex_loader_seek.
 *
 * Bad samples: by default a sample that cannot be read (missing, truncated or
 * corrupt file, wrong band count) is an error as above. With skip_bad (an
 * ex_loader_init argument: workers start decoding at init), it is replaced by the next readable
 * sample of the dataset (index + 1, + 2, ... mod n, at most
 * EX_LOADER_SKIP_TRIES in a row), so batches keep their size and stay a
 * function of (seed, epoch); `skipped` counts the replaced samples of the
 * batches delivered so far and `first_skip` holds the first one's error.
 *
 * Sharding: rank r of `world` takes positions r, r + world, r + 2 world, ...
 * of each epoch's permutation (so the ranks together cover every epoch exactly
 * once; when n is not a multiple of world, the lower ranks take one image more
 * per epoch). `pos` counts within the rank's share.
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

struct ex_loader_pipe; /* threads, locks and batch slots (core/src/loader.c) */

#define EX_LOADER_SKIP_TRIES 16 /* skip_bad: unreadable samples in a row before giving up */

typedef struct ex_loader {
    const ex_dataset_vtable *vt;
    void *ds;
    int64_t n;                       /* dataset length */
    ex_view_recipe recipe;
    int64_t channels;                /* channels the backbone takes */
    double mean[16], std[16];
    ex_filter filter;
    uint64_t seed;
    int rank, world, workers;
    int64_t shard;                   /* images of this rank per epoch */
    /* consumer's position: the next image after the last batch returned is
     * order[rank + pos * world] of epoch `epoch` (pos == shard: the epoch is done) */
    int64_t epoch, pos;
    int64_t batch;
    /* the current batch, valid until the next ex_loader_next / seek / free:
     * host (batch, channels, h, w) per view, and (batch) labels */
    float *views[EX_MAX_VIEWS];
    int64_t *labels;
    int skip_bad;                    /* replace unreadable samples instead of failing (fixed at init) */
    int64_t skipped;                 /* samples replaced in the batches delivered so far */
    ex_err first_skip;               /* the first replaced sample's error (code EX_OK: none yet) */
    struct ex_loader_pipe *pipe;     /* private */
} ex_loader;

/* workers: decoding threads (0: on the caller's thread); rank in [0, world): this process's share;
 * skip_bad: replace unreadable samples (see above) instead of failing.
 * The dataset's `get` must be thread-safe (explora/plugin.h) when workers >= 1. */
EX_API ex_status ex_loader_init(ex_loader *l, const ex_dataset_vtable *vt, void *ds, const ex_view_recipe *recipe,
                                int64_t batch, int64_t channels, const double *mean, const double *std, uint64_t seed,
                                int workers, int rank, int world, int skip_bad, ex_err *err);
/* Point views and labels at the next `batch` images (crossing epoch boundaries as needed). */
EX_API ex_status ex_loader_next(ex_loader *l, ex_err *err);
/* Jump to a saved position (epoch, pos): the next batch starts there. Drops what was prefetched. */
EX_API ex_status ex_loader_seek(ex_loader *l, int64_t epoch, int64_t pos, ex_err *err);
EX_API void ex_loader_free(ex_loader *l);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_LOADER_H */
