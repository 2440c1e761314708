/*
 * explora/objective.h — the SSL objective plugin kind (mae, dinov2, ...).
 *
 * An objective owns everything between the backbone and the loss: heads,
 * decoders, teachers, masks and the views it needs. The trainer stays
 * generic: it builds the backbone and the PEFT stack, creates the objective,
 * plans memory for the largest backbone pass the objective asks for, then per
 * iteration hands it a batch of views and applies the optimiser to whatever
 * gradients `step` accumulated.
 *
 * Life:
 *   create          read [objective]; register heads/decoder parameters in
 *                   env->params (with their trainable flags)
 *   views           the views the loader must produce per image (count, sizes,
 *                   crop scales, flips ...)
 *   backbone_shape  the largest single backbone pass (batch, height, width, keep)
 *   plan            the objective's own activations [opt]
 *   init            after allocation: initialise heads from the seeded stream [opt]
 *   load            heads/decoder from a checkpoint [opt]
 *   step            forward + backward of the whole objective on one batch;
 *                   parameter gradients accumulate (the trainer zeroes them);
 *                   returns the loss terms
 *   update          after the optimiser step: EMA teachers, centres ... [opt]
 *   evaluate        inference on one batch of evaluation images (supervised
 *                   objectives, e.g. classify): the top-k classes per image [opt]
 */
#ifndef EXPLORA_OBJECTIVE_H
#define EXPLORA_OBJECTIVE_H

#include <stdint.h>

#include "explora/backbone.h"
#include "explora/backend.h"
#include "explora/comm.h"
#include "explora/config.h"
#include "explora/params.h"
#include "explora/rng.h"
#include "explora/safetensors.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EX_MAX_VIEWS 16
#define EX_MAX_LOSS_TERMS 8

/* One view of an image: a RandomResizedCrop (scale = fraction of the area,
 * ratio = aspect range), then an optional horizontal flip, then the colour
 * transforms of explora/augment.h (ex_colour_apply: ColorJitter with
 * probability jitter_p in random op order, RandomGrayscale, GaussianBlur
 * kernel 9 with the effective probability blur_p, RandomSolarize at an 8-bit
 * threshold). All colour fields zero: no colour transform, no draws. */
typedef struct ex_view_spec {
    int64_t height, width;
    double scale_min, scale_max;
    double ratio_min, ratio_max;
    double flip_p;
    double brightness, contrast, saturation, hue; /* ColorJitter strengths */
    double jitter_p, grayscale_p, blur_p;
    double blur_sigma_min, blur_sigma_max;
    double solarize_p, solarize_threshold;
} ex_view_spec;

typedef struct ex_view_recipe {
    int count;
    ex_view_spec views[EX_MAX_VIEWS];
} ex_view_recipe;

/* A teacher: a second instance of the student's backbone with the same PEFT
 * adapters, its own parameter values (all frozen) and activations. */
typedef struct ex_teacher {
    ex_params *params;
    const ex_backbone_vtable *bb;
    void *bb_self;
} ex_teacher;

/* What an objective works with. */
typedef struct ex_objective_env {
    ex_backend *be;
    ex_params *params;             /* the student's parameters; the objective adds its own */
    const ex_backbone_vtable *bb;
    void *bb_self;
    ex_backbone_info info;
    int64_t batch;                 /* images per step (per process) */
    /* Build a teacher planned for `max` (call from init: after allocation). Its parameters start
     * as a copy of the student's current values. Owned by the caller of the objective. */
    void *owner;
    ex_status (*make_teacher)(void *owner, const ex_backbone_shape *max, ex_teacher *out, ex_err *err);
    /* The ranks of data-parallel training (explora/comm.h); NULL = one process. Whatever a loss
     * normalises over the batch, it normalises over the GLOBAL batch (all ranks): the trainer sums the
     * ranks' gradients and divides by the world size, so a rank's loss must be world x its share of the
     * global loss (e.g. MAE: local sum / (global removed patches / world)). Per-rank terms (KoLeo) stay local. */
    const ex_comm *comm;
} ex_objective_env;

/* One step's input: `nviews` device tensors (batch, channels, height, width), normalised. */
typedef struct ex_batch {
    int64_t batch;
    int nviews;
    const float *views[EX_MAX_VIEWS];
    int64_t height[EX_MAX_VIEWS], width[EX_MAX_VIEWS];
    const int64_t *labels;         /* host (batch), or NULL */
    uint64_t noise;                /* key of this micro-batch's training noise, a function of (seed, step,
                                    * micro-batch, rank); 0: none. Each forward of the step gets its own key
                                    * ex_noise_derive(noise, k) in ex_backbone_io.noise. */
    float grad_scale;              /* loss scaling: multiply the gradients you seed by this (a power of two)
                                    * and say so in ex_loss_terms.grad_scaled; 0 means 1 */
} ex_batch;

/* The factor an objective's backward seeds its gradients with (1 unless the trainer scales the loss). */
static inline float ex_batch_grad_scale(const ex_batch *b) { return b->grad_scale > 0.0f ? b->grad_scale : 1.0f; }

typedef struct ex_loss_terms {
    int count;
    const char *names[EX_MAX_LOSS_TERMS]; /* static strings, e.g. "mae", "dino_local" */
    double values[EX_MAX_LOSS_TERMS];
    double total;                          /* what the gradients are of (unscaled) */
    int grad_scaled;                       /* 1: the gradients were multiplied by ex_batch.grad_scale; an
                                            * objective that leaves this 0 cannot train with loss scaling */
} ex_loss_terms;

typedef struct ex_objective_vtable {
    ex_status (*create)(const ex_cfg_section *cfg, const ex_objective_env *env, void **self, ex_err *err);
    void (*destroy)(void *self);
    ex_status (*views)(void *self, ex_view_recipe *out);
    ex_status (*backbone_shape)(void *self, ex_backbone_shape *max);
    ex_status (*plan)(void *self, ex_memory_plan *plan, ex_err *err);           /* [opt] */
    ex_status (*init)(void *self, ex_rng *rng, ex_err *err);                     /* [opt] */
    ex_status (*load)(void *self, const char *path, ex_err *err);                /* [opt] */
    /* rng: the masking stream (EX_RNG_MASK), advanced by what the step draws. */
    ex_status (*step)(void *self, const ex_batch *batch, ex_rng *rng, int64_t iteration, ex_loss_terms *out,
                      ex_err *err);
    ex_status (*update)(void *self, int64_t iteration, int64_t total_iterations, ex_err *err); /* [opt] */
    /* Inference (no gradients, no augmentation draws) on batch->views[0] (batch->batch images at the
     * objective's view size, at most the planned batch): predictions (batch, k) host = the k highest-scoring
     * classes per image, best first (-1 past the number of classes). [opt] */
    ex_status (*evaluate)(void *self, const ex_batch *batch, int64_t *predictions, int k, ex_err *err);
    /* What a resumed run needs beyond the trainable tensors (teachers, centres), into the trainer's
     * checkpoint: tensors named "objective.*" added to w from host memory the objective allocates in one
     * block returned in *keep (the caller frees it after the file is written). [opt] */
    ex_status (*save_state)(void *self, ex_st_writer *w, void **keep, ex_err *err);
    /* Restore what save_state wrote (after init; every tensor must be present). [opt] */
    ex_status (*load_state)(void *self, const ex_st_file *f, ex_err *err);
    /* The shape init() will give env.make_teacher, so that a dry run can plan the teacher's memory without
     * building it (*has = 0: no teacher). Callable after create. [opt; ABI 4.0; an objective that makes a
     * teacher should offer it] */
    ex_status (*teacher_shape)(void *self, ex_backbone_shape *max, int *has);
} ex_objective_vtable;

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_OBJECTIVE_H */
