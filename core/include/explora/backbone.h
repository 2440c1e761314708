/*
 * explora/backbone.h — the backbone plugin kind (e.g. `vit`).
 *
 * A backbone turns a batch of images into tokens and back-propagates
 * gradients of those tokens into its parameters (and optionally the images).
 * Its life, driven by the trainer or a verb such as `embed`:
 *
 *   create      read the architecture from the config (and checkpoint
 *               metadata), register every parameter in the caller's ex_params
 *   (PEFT)      strategies flip trainable flags and attach hooks to sites
 *   plan        add the activation buffers for the largest batch and image
 *               size it will see to the memory plan (printed before allocation)
 *   (commit, ex_params_bind)
 *   ready       bind activations; compute fixed tables (sin-cos, resampled
 *               position grids)
 *   load        read weights (safetensors or PyTorch .pth, any supported
 *               naming convention) into the bound parameters — or `init`
 *               them for training from scratch
 *   forward / backward, any number of times
 *
 * Token layout of the output: [cls, registers..., patches...] after the final
 * norm, (batch, tokens, dim). In EX_MASK_DROP mode the patches are the kept
 * ones, in the order of ids_keep.
 */
#ifndef EXPLORA_BACKBONE_H
#define EXPLORA_BACKBONE_H

#include <stdint.h>

#include "explora/backend.h"
#include "explora/config.h"
#include "explora/nn.h"
#include "explora/params.h"
#include "explora/rng.h"
#include "explora/status.h"
#include "explora/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ex_mask_mode {
    EX_MASK_NONE = 0,
    EX_MASK_REPLACE = 1, /* iBOT: masked patch embeddings are replaced by mask_token before position embeddings */
    EX_MASK_DROP = 2     /* MAE encoder: only the patches in ids_keep are processed */
} ex_mask_mode;

typedef struct ex_backbone_info {
    int64_t dim, depth, heads, patch, channels, registers;
    int64_t grid_h, grid_w; /* the position table's grid (as stored in the checkpoint) */
    int has_cls;
} ex_backbone_info;

/* The largest shapes a run will use; activations are planned for them once. */
typedef struct ex_backbone_shape {
    int64_t batch, height, width;
    int64_t keep;    /* EX_MASK_DROP: patches kept per image (0 when not used) */
    int input_grad;  /* 1 if backward will be asked for the gradient of the images */
    int inference;   /* 1: only forwards with train = 0 will run (features, embeddings, benchmarks): the
                      * backbone may plan much less memory (no backward buffers; the blocks' activations
                      * shared). Training forwards and backward are then errors. */
    int final_only;  /* with inference: only the final tokens will be read, never block_output(), so the
                      * backbone may recycle its per-block buffers (a ViT keeps 2 residual streams, not
                      * depth + 1: 1.5 GiB less for DINOv2's ViT-L/14 teacher at batch 32) */
    ex_dtype act_dtype; /* how the blocks keep their GEMM inputs (LayerNorm and GELU outputs): EX_F32 (0, the
                         * default), or EX_BF16 ([optim] activation_dtype = bf16: half their memory; GEMMs under
                         * bf16 math read them without a rounding pass). A backbone that cannot refuses. */
} ex_backbone_shape;

typedef struct ex_backbone_io {
    /* inputs (device pointers) */
    int64_t batch, height, width;
    const float *images;     /* (batch, channels, height, width), normalised */
    ex_mask_mode mask_mode;
    const uint8_t *mask;     /* EX_MASK_REPLACE: (batch, patches), 1 = masked */
    const int32_t *ids_keep; /* EX_MASK_DROP: (batch, keep) patch indices */
    int64_t keep;
    const float *drop;       /* (depth, 2, batch) stochastic-depth scales, or NULL (no drop path) */
    int train;               /* keep activations for backward */
    uint64_t noise;          /* key of this pass's random draws inside layers (adapter dropout; explora/nn.h);
                              * 0: none. Objectives derive it from ex_batch.noise, one key per forward. */
    /* outputs (device pointers into the backbone's activations; valid until the next forward) */
    float *tokens;           /* (batch, num_tokens, dim) after the final norm */
    int64_t num_tokens;
} ex_backbone_io;

typedef struct ex_backbone_vtable {
    ex_status (*create)(const ex_cfg_section *cfg, ex_backend *be, ex_params *params, void **self, ex_err *err);
    void (*destroy)(void *self);
    ex_status (*info)(void *self, ex_backbone_info *out);
    ex_status (*plan)(void *self, const ex_backbone_shape *max, ex_memory_plan *plan, ex_err *err);
    ex_status (*ready)(void *self, ex_err *err);
    /* Load weights from a file; `format` names the naming convention ("auto" detects it). */
    ex_status (*load)(void *self, const char *path, const char *format, ex_err *err);
    ex_status (*forward)(void *self, ex_backbone_io *io, ex_err *err);
    /* dtokens (batch, num_tokens, dim) of the last forward (train = 1); gradients accumulate into the
     * parameters' gradient buffers; dimages (batch, channels, height, width) += when non-NULL. */
    ex_status (*backward)(void *self, const float *dtokens, float *dimages, ex_err *err);
    /* A linear site for adapters, by name ("blocks.3.attn.qkv", "blocks.3.mlp.fc1", ...); NULL if none. */
    ex_linear *(*site)(void *self, const char *name);
    /* The residual stream after block i (before the final norm) of the last forward: (batch, num_tokens, dim). [opt] */
    const float *(*block_output)(void *self, int64_t i);
    /* Initialise every parameter for training from scratch (when no weights are given), from `rng`. [opt] */
    ex_status (*init)(void *self, ex_rng *rng, ex_err *err);
    /* Write the backbone's own parameters (current values: merge adapters first) as safetensors in the
     * naming convention `format` (the names load accepts). [opt] */
    ex_status (*save)(void *self, const char *path, const char *format, ex_err *err);
    /* Insert `count` learned prompt tokens after the cls and register tokens, before the patches
     * (VPT-shallow), registered as the trainable parameter "prompt_tokens" (1, count, dim). Call before
     * planning; afterwards info() counts them among the registers (no position embedding, not patches). [opt] */
    ex_status (*add_prompts)(void *self, int64_t count, ex_err *err);
    /* Attention probabilities of the cls token (query row 0) over every token of block i in the last forward:
     * probs (host memory, batch * heads * num_tokens floats) = softmax_j(q_cls . k_j / sqrt(head_dim)), computed
     * from the block's cached qkv activations (adapters included). The analysis verb uses it. [opt] */
    ex_status (*attention)(void *self, int64_t i, float *probs, ex_err *err);
} ex_backbone_vtable;

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_BACKBONE_H */
