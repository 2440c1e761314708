/*
 * explora/optim.h — AdamW over the trainable parameters, parameter groups and
 * per-iteration schedules.
 *
 * State (fp32 m and v) exists only for trainable tensors, in the optim arena.
 * Groups follow the references: no weight decay on biases, norms and
 * LayerScale gammas (DINOv2's rule: names ending ".bias", containing "norm" or
 * "gamma"), 1-D tensors (MAE's rule) and LoRA-free tokens are decayed like
 * DINOv2 does unless `wd_tokens = false`.
 *
 * Schedules, per optimiser step t of T: linear warm-up from 0 over W steps,
 * then half-cosine from the base value to the final one (DINOv2's
 * CosineScheduler / MAE's adjust_learning_rate). The weight decay follows the
 * same half-cosine without warm-up when weight_decay_end >= 0 (DINOv2).
 *
 * Layer-wise lr decay (MAE's param_groups_lrd, DINOv2's get_vit_lr_decay_rate):
 * with D backbone blocks, a parameter of layer id k trains at
 * lr x layer_decay^(D + 1 - k), where k = 0 for the embeddings, i + 1 for
 * blocks.i.* and D + 1 for everything else. The weight decay is applied at the
 * scaled rate too, as torch's AdamW does with a group lr.
 */
#ifndef EXPLORA_OPTIM_H
#define EXPLORA_OPTIM_H

#include <stdint.h>

#include "explora/backend.h"
#include "explora/config.h"
#include "explora/params.h"
#include "explora/status.h"
#include "explora/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ex_optim_config {
    double lr, min_lr, weight_decay, beta1, beta2, eps, clip_grad;
    double weight_decay_end; /* < 0: constant weight_decay */
    double layer_decay;      /* in (0, 1); anything else (1, or 0 in a zeroed struct): off */
    int64_t warmup_steps, steps;
} ex_optim_config;

typedef struct ex_optim_slot {
    ex_param *param;
    ex_tensor m, v;  /* (same shape), optim arena */
    float wd_mult;   /* 0 or 1 */
    float lr_mult;   /* layer-wise lr decay factor (1 when off) */
} ex_optim_slot;

typedef struct ex_optim {
    ex_optim_config cfg;
    ex_optim_slot *slots;
    int count;
    int64_t step;    /* optimiser steps taken (the schedules' t), skipped ones included */
    int64_t adam_step; /* AdamW updates applied (its bias correction): step minus the skipped steps */
    ex_backend *be;
    float *norm_buf;  /* device: one float per parameter (gradient sums of squares) */
    float *norm_host; /* host copy of norm_buf */
} ex_optim;

/* The [optim] keys of the trainer (lr, min_lr, weight_decay, betas, eps, clip_grad, warmup, steps ...). */
EX_API const ex_key_spec *ex_optim_keys(void);
EX_API ex_status ex_optim_config_read(const ex_cfg_section *s, ex_optim_config *out, ex_err *err);

/* Plan m and v for every trainable parameter. */
EX_API ex_status ex_optim_plan(ex_optim *o, ex_backend *be, ex_params *ps, const ex_optim_config *cfg,
                               ex_memory_plan *plan, ex_err *err);
/* Value of a warm-up + cosine schedule at step t. */
EX_API double ex_schedule_cosine(double base, double final, int64_t warmup, int64_t total, int64_t t);
/* The weight decay used at optimiser step t. */
EX_API double ex_optim_weight_decay_at(const ex_optim_config *c, int64_t t);
/* The lr factor of parameter `name` in a backbone of `depth` blocks (see above); 1 when layer_decay = 1. */
EX_API double ex_optim_layer_scale(const char *name, int64_t depth, double layer_decay);
/* Global L2 norm of all trainable gradients (fixed order, computed on the device). */
EX_API ex_status ex_optim_grad_norm(ex_optim *o, double *norm, ex_err *err);
/* Scale every trainable gradient by s (accumulation averaging, clipping). */
EX_API ex_status ex_optim_scale_grads(ex_optim *o, float s, ex_err *err);
/* Zero every trainable gradient (over the span below, padding included, when there is one). */
EX_API ex_status ex_optim_zero_grads(ex_optim *o, ex_err *err);
/* The trainable gradients as one run of floats *start (n), when they lie in slot order with nothing between
 * them but the arena's alignment padding, which ex_optim_zero_grads keeps at zero: 1; else 0. One call over
 * the span (a fill, a scale, an all-reduce) then does what one call per tensor would. */
EX_API int ex_optim_grad_span(const ex_optim *o, float **start, int64_t *n);
/* Clip (when clip_grad > 0) and take one AdamW step at the scheduled lr; returns the lr used and the norm. */
EX_API ex_status ex_optim_step(ex_optim *o, double *lr_used, double *grad_norm, ex_err *err);
EX_API void ex_optim_free(ex_optim *o);
/* A step without an update (non-finite gradients under loss scaling): the schedules move on, AdamW's
 * state and count do not. *lr_used receives the learning rate the step would have used. */
EX_API void ex_optim_skip(ex_optim *o, double *lr_used);

/* Dynamic loss scaling ([optim] loss_scale = dynamic) for fp16 GEMMs, whose rounded gradients would
 * flush small values to zero: torch.cuda.amp.GradScaler's rule. Objectives multiply the gradients they
 * seed by `scale` (ex_batch.grad_scale); the trainer multiplies the summed gradients by 1 / scale. The
 * scale is a power of two, so both are exact and a run whose gradients stay finite equals the unscaled
 * run bit for bit. After the unscale:
 *   - some gradient inf or NaN: the step is skipped (ex_optim_skip), scale /= 2, good_steps = 0;
 *   - else: the update is applied, good_steps += 1, and at growth_interval: scale *= 2, good_steps = 0. */
typedef struct ex_loss_scaler {
    int enabled;
    double scale;            /* power of two; 1 when disabled */
    int64_t good_steps;      /* finite steps since the scale last changed */
    int64_t growth_interval; /* finite steps before the scale doubles */
    int64_t skipped;         /* steps skipped so far */
} ex_loss_scaler;

/* The [optim] keys loss_scale, loss_scale_init (a power of two) and loss_scale_growth_interval. */
EX_API ex_status ex_loss_scaler_config_read(const ex_cfg_section *s, ex_loss_scaler *out, ex_err *err);
/* One step's outcome. Returns 0, or -1 when found_inf came at a scale of 2^-24 or less (the gradients are
 * not finite at any scale: the caller stops the run). */
EX_API int ex_loss_scaler_update(ex_loss_scaler *s, int found_inf);
/* The end of a training step: with s enabled, unscale the gradients, then skip the step (non-finite
 * gradient norm; *skipped = 1) or apply it (ex_optim_step), and update s; EX_E_INVALID when the gradients
 * stay non-finite at the smallest scale. With s disabled (or NULL) it is ex_optim_step. *grad_norm is the
 * unscaled norm (inf or NaN for a skipped step). */
EX_API ex_status ex_optim_step_scaled(ex_optim *o, ex_loss_scaler *s, double *lr_used, double *grad_norm, int *skipped,
                                      ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_OPTIM_H */
