/*
 * explora/peft.h — the PEFT strategy plugin kind (lora, unfreeze, ...).
 *
 * A strategy decides what trains in a model and may add adapters. Strategies
 * stack: `[peft] stack = unfreeze, lora` applies them in order, each
 * configured by its own section [peft.<name>] (all keys optional when the
 * plugin's defaults fit). Everything is frozen before the first strategy runs,
 * so an empty stack is a linear probe's frozen backbone.
 *
 * Life, driven by ex_model:
 *   create   read [peft.<name>]
 *   apply    before memory planning: flip trainable flags on the model's
 *            parameters (by name), register the strategy's own parameters
 *            (trainable, in the same ex_params), attach ex_linear_hook's to
 *            backbone sites (bb->site(bb_self, "blocks.3.attn.qkv"))
 *   plan     add the strategy's activation buffers, sized for max_rows rows
 *            through any one site
 *   init     after allocation and binding: initialise its own parameters from
 *            the seeded stream (LoRA: A Kaiming-uniform, B zeros)
 *   merge / unmerge  fold adapters into the base weights (export, evaluation)
 *            and take them out again (training continues unmerged)
 */
#ifndef EXPLORA_PEFT_H
#define EXPLORA_PEFT_H

#include <stdint.h>

#include "explora/backbone.h"
#include "explora/backend.h"
#include "explora/config.h"
#include "explora/params.h"
#include "explora/rng.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a strategy works on. */
typedef struct ex_peft_target {
    ex_backend *be;
    ex_params *params;             /* the model's parameters */
    const ex_backbone_vtable *bb;  /* the backbone, for sites */
    void *bb_self;
    ex_backbone_info info;         /* depth, dim, heads ... */
} ex_peft_target;

typedef struct ex_peft_vtable {
    ex_status (*create)(const ex_cfg_section *cfg, void **self, ex_err *err);
    void (*destroy)(void *self);
    ex_status (*apply)(void *self, ex_peft_target *t, ex_err *err);
    ex_status (*plan)(void *self, int64_t max_rows, ex_memory_plan *plan, ex_err *err); /* [opt] */
    ex_status (*init)(void *self, ex_rng *rng, ex_err *err);                            /* [opt] */
    ex_status (*merge)(void *self, ex_err *err);                                        /* [opt] */
    ex_status (*unmerge)(void *self, ex_err *err);                                      /* [opt] */
} ex_peft_vtable;

/* Block list helper for strategies: parse indices like "-1" or "0, -1" against a
 * depth (negative counts from the end) into a 0/1 mask of `depth` entries. */
EX_API ex_status ex_peft_block_mask(const int64_t *items, int n, int64_t depth, uint8_t *mask, const char *what,
                                    ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_PEFT_H */
