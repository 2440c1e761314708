/*
 * explora/trainer.h — extended pre-training: the loop that ties a backbone, its
 * PEFT stack, an SSL objective, a dataset and the optimiser together.
 *
 *   ex_trainer_setup   validate, build everything, print trainable counts and
 *                      the memory plan (a dry run stops here)
 *   ex_trainer_run     allocate, load weights (or resume from the run's
 *                      checkpoint), train to `steps` optimiser steps, write
 *                      metrics.jsonl, config.ini and checkpoint.safetensors
 *                      (atomically: a kill during a save leaves the previous one)
 *
 * Data parallelism: under mpirun every rank runs this loop on its shard of
 * each epoch (ex_loader rank/world); after the micro-batches the gradients are
 * summed over ranks and divided by world x accumulate, so N ranks at batch B
 * take the same steps as one rank at batch N B (the objectives normalise over
 * the global batch). Rank 0 alone logs and writes metrics, config and
 * checkpoints; every rank reads the checkpoint on --resume. A rank that fails
 * prints "rank N of W: <error>" on stderr and aborts every rank.
 * Effective batch = batch x world x accumulate; [optim] lr_scaling scales lr
 * with it (linear256: MAE's blr x eff / 256; sqrt1024: DINOv2's lr x sqrt(eff / 1024)).
 *
 * Resuming restores the trainable tensors, the AdamW moments, the step, the
 * loader position and the masking stream, so a resumed run continues
 * bit-identically to an uninterrupted one.
 */
#ifndef EXPLORA_TRAINER_H
#define EXPLORA_TRAINER_H

#include <signal.h>
#include <stdio.h>

#include "explora/comm.h"
#include "explora/loader.h"
#include "explora/model.h"
#include "explora/objective.h"
#include "explora/optim.h"
#include "explora/session.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ex_trainer {
    ex_session *session;
    ex_backend *be;
    ex_model model;
    const ex_plugin *obj_plugin;
    const ex_objective_vtable *obj;
    void *obj_self;
    ex_cfg_section obj_view;
    ex_view_recipe recipe;
    ex_optim optim;
    ex_optim_config ocfg;
    int64_t batch, accumulate, log_every, checkpoint_every, stop_at, keep_last;
    char out_dir[4096];
    /* run state */
    ex_loader loader;
    void *ds;
    const ex_dataset_vtable *ds_vt;
    float *dev_views[EX_MAX_VIEWS];
    ex_rng mask_rng;
    double last_loss;
    /* set by the caller: resume from <out>/checkpoint.safetensors; a flag that asks the loop to stop
     * (Ctrl-C) after the current step, writing a checkpoint first */
    int resume;
    volatile sig_atomic_t *stop;
    /* set by the caller, or NULL: called after every optimiser step (after that step's checkpoint), on every
     * rank; an error stops the run. finetune evaluates through it ([run] eval_every). */
    ex_status (*after_step)(void *ctx, struct ex_trainer *t, int64_t step, ex_err *err);
    void *after_step_ctx;
    /* the teacher an objective asked for (ex_objective_env.make_teacher) */
    int has_teacher;
    ex_model teacher;
    /* data parallelism (explora/comm.h): rank 0 logs and writes files; gradients are averaged over ranks */
    ex_comm comm;
    float *grad_host;               /* staging of the packed gradients for the all-reduce */
    double lr_base;                 /* [optim] lr before lr_scaling */
    ex_dtype act_dtype;             /* how the backbone's blocks keep their GEMM inputs ([optim] activation_dtype) */
    int frozen_narrow;              /* frozen weights kept in bf16 ([optim] frozen_dtype): how many tensors */
    size_t frozen_saved;            /* and the bytes that saves */
    ex_loss_scaler scaler;          /* [optim] loss_scale (disabled: scale 1) */
    /* several processes: the watchdog that ends a rank in which nothing progresses for [run] stall_timeout_s,
     * from setup to the end of the run (core/src/stall_watch.h); NULL otherwise */
    struct ex_stall_watch *stall_watch;
} ex_trainer;

EX_API ex_status ex_trainer_setup(ex_trainer *t, ex_session *s, ex_backend *be, ex_err *err);
EX_API void ex_trainer_print(const ex_trainer *t, FILE *out);
/* For a dry run: when the objective makes a teacher (its teacher_shape slot), plan it as the run would,
 * print its plan and the planned total of student and teacher, and free it again. */
EX_API ex_status ex_trainer_print_teacher_plan(ex_trainer *t, FILE *out, ex_err *err);
EX_API ex_status ex_trainer_run(ex_trainer *t, FILE *log, ex_err *err);
EX_API void ex_trainer_free(ex_trainer *t);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_TRAINER_H */
