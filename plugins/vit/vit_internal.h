/*
 * plugins/vit/vit_internal.h — the ViT backbone's private structures.
 *
 * Internal parameter names are those of the official DINOv2 checkpoints
 * (cls_token, register_tokens, mask_token, pos_embed, patch_embed.proj.*,
 * blocks.i.*, norm.*); vit_names.c maps the other conventions onto them.
 */
#ifndef EXPLORA_VIT_INTERNAL_H
#define EXPLORA_VIT_INTERNAL_H

#include "explora/backbone.h"
#include "explora/nn.h"
#include "explora/params.h"
#include "vit_posembed.h"

typedef enum vit_pos_kind { VIT_POS_LEARNED = 0, VIT_POS_SINCOS = 1 } vit_pos_kind;

typedef struct vit_arch {
    int64_t patch, channels, dim, depth, heads, hidden, registers;
    int64_t grid_h, grid_w; /* the position table's grid */
    ex_mlp_kind mlp;
    int layerscale, qkv_bias, mask_token;
    int64_t recompute;      /* activation checkpointing: blocks 0 .. recompute-1 keep only their input (the
                             * residual stream) and rebuild their activations in backward; 0: none */
    double layerscale_init; /* LayerScale gamma when initialising from scratch */
    float eps;
    vit_pos_kind pos;
    vit_interp interp;
} vit_arch;

/* One activation buffer: a planned tensor plus its typed pointer. */
typedef struct vit_buf {
    ex_tensor t;
} vit_buf;

/* Images per forward pass of an inference plan that reads only the final tokens (DINOv2's teacher): the
 * block activations and residual streams are planned for this many, the output for the whole batch. */
#define VIT_INFER_CHUNK ((int64_t)16)

typedef struct vit {
    vit_arch a;
    ex_backend *be;
    ex_params *params;
    char format[32];       /* default checkpoint naming convention */
    char copy[48];         /* [backbone] checkpoint_copy */
    char select[64];       /* prefix of the copy to read from a training export ("teacher."), or "" */

    /* parameters (pointers bound by ex_params_bind) */
    float *cls, *dcls;             /* (dim) */
    float *reg, *dreg;             /* (registers, dim) */
    int64_t prompts;               /* VPT prompt tokens after the registers (0: none) */
    float *prompt, *dprompt;       /* (prompts, dim) */
    float *pos, *dpos;             /* (1 + grid_h*grid_w, dim) */
    float *mask_tok, *dmask_tok;   /* (dim) */
    ex_linear patch_embed;         /* (dim, channels*patch*patch) */
    ex_block *blocks;              /* (depth) */
    ex_layernorm norm;

    /* activations, planned for `max` */
    ex_backbone_shape max;
    int64_t max_tokens;
    ex_tensor patches;   /* (B, Np, C*p*p) */
    ex_tensor pemb;      /* (B, Np, D) patch embeddings (+ mask, + pos) */
    ex_tensor dpemb;     /* (B, Np, D) */
    ex_tensor dpemb2;    /* (B, Np, D) */
    ex_tensor pos_rs;    /* (1 + Np, D) position table at the current grid */
    ex_tensor dpos_rs;   /* (1 + Np, D) */
    ex_tensor rh, rw;    /* (n_h, grid_h), (n_w, grid_w) resampling weights */
    ex_tensor rtmp;      /* (n_h, grid_w * D) */
    ex_tensor row;       /* (B, max(R,1) * D) cls row / register rows scratch */
    ex_tensor xs;        /* (depth + 1, B, T, D) residual streams */
    ex_tensor acts;      /* (depth, block acts) */
    ex_tensor scratch;   /* block backward scratch */
    ex_tensor out;       /* (B, T, D) after the final norm */
    ex_tensor mean, rstd; /* (B, T) */
    ex_tensor dresid;    /* (B, T, D) */
    ex_block_acts *block_acts; /* (depth), bound into acts */
    int shared_acts;           /* every block binds the same activations (an inference plan) */
    int64_t shared_holds;      /* the block whose activations the shared buffer (slot 0 under recompute, the only
                                * one of an inference plan) holds now: the last forward's last block to use it, or
                                * the block a backward rebuilt last; -1 before any forward */
    int pingpong;              /* inference with final_only: two residual buffers used in turn (no block_output),
                                * and the forward runs over chunks of `chunk` images */
    int64_t chunk;             /* images per forward pass: the planned batch, or VIT_INFER_CHUNK (pingpong) */
    size_t acts_floats;

    /* state of the last forward */
    int64_t cur_nh, cur_nw; /* grid of pos_rs (0 = not computed) */
    ex_backbone_io last;
    int64_t np, ntok;
} vit;

/* An architecture as a preset table row, or as read from a checkpoint. */
typedef struct vit_preset {
    const char *name;
    int64_t patch, dim, depth, heads, hidden, grid;
    ex_mlp_kind mlp;
    int layerscale, mask_token;
    vit_pos_kind pos;
    vit_interp interp;
    int64_t registers, channels;
} vit_preset;

/* vit_names.c: the architecture from a checkpoint's tensor shapes (format and copy as the config's keys). */
ex_status vit_preset_from_checkpoint(const char *path, const char *format, const char *copy, vit_preset *p,
                                     ex_err *err);

/* vit_arch.c */
extern const ex_key_spec vit_keys[];
ex_status vit_arch_from_config(const ex_cfg_section *cfg, vit_arch *a, char *format, size_t format_cap,
                               ex_err *err);

/* vit_model.c */
/* Whether block i's activations from the last forward (or the backward's rebuild) are in memory (the attention
 * slot reads them): a block with its own buffer, or the block the shared one holds now. */
int vit_block_acts_kept(const vit *v, int64_t i);
ex_status vit_register_params(vit *v, ex_err *err);
ex_status vit_plan(void *self, const ex_backbone_shape *max, ex_memory_plan *plan, ex_err *err);
ex_status vit_ready(void *self, ex_err *err);
ex_status vit_forward(void *self, ex_backbone_io *io, ex_err *err);
ex_status vit_backward(void *self, const float *dtokens, float *dimages, ex_err *err);
ex_linear *vit_site(void *self, const char *name);
const float *vit_block_output(void *self, int64_t i);

/* vit_attention.c: cls -> token attention probabilities of block i in the last forward (host, (B, heads, T)). */
ex_status vit_attention(void *self, int64_t i, float *probs, ex_err *err);

ex_status vit_add_prompts(void *self, int64_t count, ex_err *err);

/* vit_export.c */
ex_status vit_save(void *self, const char *path, const char *format, ex_err *err);

/* vit_init.c */
ex_status vit_init(void *self, ex_rng *rng, ex_err *err);

/* vit_names.c: map a checkpoint name in `format` to the internal one (see ex_name_map_fn). */
int vit_map_name(void *user, const char *ckpt_name, char *out, size_t cap, int64_t *row_offset);
/* Guess the convention of a file from its tensor names; "" if unknown. */
const char *vit_detect_format(const ex_weights *f);
/* The name prefix of the copy to read from a file that holds several (select, cap >= 32): copy "auto" takes the
 * teacher when there is one, else the student; "none" reads names as they are; other values name a copy.
 * Training exports name them "teacher." / "student."; explora's own run checkpoints "objective.teacher." (the
 * teacher an objective keeps) and "param." (the trained model). */
void vit_select_copy(const ex_weights *f, const char *copy, char *select, size_t cap);

#endif
