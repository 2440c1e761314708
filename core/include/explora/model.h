/*
 * explora/model.h — a backbone built from a session's config: its plugin
 * instance, its named parameters and the memory plan of a run at a given
 * batch and image size. The verbs build on it:
 *
 *   ex_model_build     create the backbone, freeze it, apply the [peft] stack
 *                      (what trains, adapters), plan parameters and activations
 *                      (nothing allocated: what `check` / --dry-run reports)
 *   ex_model_allocate  allocate every arena, bind parameters and activations,
 *                      initialise the strategies' parameters from [run] seed
 *   ex_model_load      read weights (the [backbone] weights key, or a path)
 */
#ifndef EXPLORA_MODEL_H
#define EXPLORA_MODEL_H

#include <stdio.h>

#include "explora/backbone.h"
#include "explora/params.h"
#include "explora/session.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EX_MODEL_MAX_PEFT 8

typedef struct ex_model {
    ex_backend *be;
    const ex_plugin *plugin;
    const ex_backbone_vtable *vt;
    void *self;
    ex_params params;
    ex_memory_plan plan;
    ex_backbone_shape shape;
    ex_backbone_info info;
    ex_cfg_section view;
    int allocated;
    /* PEFT strategies of [peft] stack, in order */
    int npeft;
    const ex_plugin *peft_plugin[EX_MODEL_MAX_PEFT];
    void *peft_self[EX_MODEL_MAX_PEFT];
    ex_cfg_section peft_view[EX_MODEL_MAX_PEFT];
    char peft_section[EX_MODEL_MAX_PEFT][80];
    uint64_t seed;
    int backbone_params;   /* the first parameters are the backbone's (what a backbone checkpoint holds) */
} ex_model;

/* The run's image size from the backbone section's `image_size` ("side" or "h, w"; 224 when absent). */
EX_API ex_status ex_model_image_size(const ex_session *s, int64_t *height, int64_t *width, ex_err *err);

/* The two halves of ex_model_build, for callers that add parameters in between
 * (an objective's heads): create = backbone + frozen + [peft] stack applied;
 * plan = parameters (values, gradients of what trains) + activations. */
EX_API ex_status ex_model_create(ex_model *m, const ex_session *s, ex_backend *be, ex_err *err);
EX_API ex_status ex_model_plan(ex_model *m, const ex_backbone_shape *shape, ex_err *err);

/* [optim] frozen_dtype of the session (fp32 when the section or key is absent): with bf16, the frozen GEMM
 * weights of m are stored in bf16 (ex_params_set_frozen_dtype). Call between create and plan, after
 * everything that decides what trains. *count and *saved (each may be NULL) as ex_params_set_frozen_dtype's. */
EX_API ex_status ex_model_apply_frozen_dtype(ex_model *m, const ex_session *s, int *count, size_t *saved, ex_err *err);
/* [optim] activation_dtype of the session (EX_F32 when the section or key is absent) into *out: what a training
 * run puts in ex_backbone_shape.act_dtype of the student and of a teacher. */
EX_API ex_status ex_model_activation_dtype(const ex_session *s, ex_dtype *out, ex_err *err);

/* Create the backbone of [backbone] and plan memory for `shape` (batch, height, width, keep, input_grad). */
EX_API ex_status ex_model_build(ex_model *m, const ex_session *s, ex_backend *be, const ex_backbone_shape *shape,
                                ex_err *err);
EX_API ex_status ex_model_allocate(ex_model *m, ex_err *err);
/* Load weights from `path`, or from [backbone] weights when path is NULL; when that is empty the backbone
 * initialises its parameters for training from scratch (its `init` slot, seeded by [run] seed). */
EX_API ex_status ex_model_load(ex_model *m, const char *path, ex_err *err);
/* The trained tensors of a pretrain checkpoint into the parameters of that name (tensors of objectives'
 * heads are skipped); *loaded counts them. `copy` picks which copy of the model: "student" (the
 * optimised "param.<name>"), "teacher" (the EMA teacher "objective.teacher.<name>" that DINOv2 keeps;
 * an error when the checkpoint has none), or "auto"/NULL: the teacher when there is one (DINOv2 evaluates
 * and releases its teacher), else the student. */
EX_API ex_status ex_model_load_trained(ex_model *m, const char *path, const char *copy, int *loaded, ex_err *err);
EX_API void ex_model_free(ex_model *m);

/* Parameter counts by group and the memory plan, as printed at the start of a run. */
EX_API void ex_model_print(const ex_model *m, FILE *out);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_MODEL_H */
