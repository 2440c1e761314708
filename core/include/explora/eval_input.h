/*
 * explora/eval_input.h — the evaluation input path: the samples of a dataset
 * in dataset order, each through the evaluation transform, in batches. Feature
 * extraction (linprobe, knn), embed and fine-tune evaluation all read their
 * images through it, so they agree on what an evaluated image is.
 *
 * Evaluation transform (torchvision's Resize + CenterCrop + Normalize):
 *   resize > 0   the shorter side becomes `resize` (antialiased bicubic, full
 *                precision), then the centred (height, width) crop
 *   resize = 0   the sample must already be (height, width)
 *   then (x - mean) / std per channel into (channels, height, width); a gray
 *   sample feeds a 3-channel model by repeating its channel.
 *
 * Bad samples: by default the first sample that cannot be read or does not fit
 * (missing, truncated or corrupt file, wrong size or band count) is an error
 * naming its index and id. With skip_bad the sample is dropped instead — never
 * replaced, so an evaluation set never counts an image twice — and counted in
 * `skipped`, with the first one's error kept in `first_skip`. If every sample
 * is dropped, that is an error.
 */
#ifndef EXPLORA_EVAL_INPUT_H
#define EXPLORA_EVAL_INPUT_H

#include <stdint.h>

#include "explora/export.h"
#include "explora/plugin.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ex_eval_input {
    const ex_dataset_vtable *vt;
    void *ds;
    int64_t n;                     /* dataset indices visited: [0, n) (the length, or the limit) */
    int64_t height, width, channels, resize;
    double mean[16], std[16];
    int skip_bad;
    int64_t next;                  /* the next dataset index */
    int64_t read;                  /* samples delivered so far */
    int64_t skipped;               /* samples dropped so far (skip_bad) */
    ex_err first_skip;             /* the first dropped sample's error (code EX_OK: none) */
    float *scratch;                /* (height, width, 16) */
} ex_eval_input;

/* What each delivered row was. */
typedef struct ex_eval_row {
    int64_t index;                 /* dataset index */
    int64_t label, group;          /* as the dataset gave them (-1: none) */
    char id[256];
} ex_eval_row;

/* limit: visit at most that many dataset indices (0: all). mean/std: `channels` values. */
EX_API ex_status ex_eval_input_init(ex_eval_input *r, const ex_dataset_vtable *vt, void *ds, int64_t limit,
                                    int64_t height, int64_t width, int64_t channels, int64_t resize, const double *mean,
                                    const double *std, int skip_bad, ex_err *err);
/* Fill up to `cap` rows: images (cap, channels, height, width) host, rows[cap] (may be NULL). *got = the rows
 * filled; 0 when every index has been visited. */
EX_API ex_status ex_eval_input_next(ex_eval_input *r, float *images, int64_t cap, ex_eval_row *rows, int64_t *got,
                                    ex_err *err);
EX_API void ex_eval_input_free(ex_eval_input *r);

/* One sample through the evaluation transform into out (channels, height, width); scratch holds
 * height * width * sample channels floats. */
EX_API ex_status ex_eval_transform(const ex_sample *s, int64_t height, int64_t width, int64_t channels, int64_t resize,
                                   const double *mean, const double *std, float *scratch, float *out, ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_EVAL_INPUT_H */
