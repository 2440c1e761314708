/*
 * plugins/mae/mae_internal.h — the `mae` objective's private structures.
 *
 * Parameter names are those of the official MAE checkpoints (models_mae.py):
 * mask_token, decoder_embed.*, decoder_pos_embed, decoder_blocks.i.*,
 * decoder_norm.*, decoder_pred.*; decoder LoRA adds
 * decoder_blocks.i.attn.qkv.lora_q.{A,B} and .lora_v.{A,B} (the `lora`
 * plugin's naming for q and v slices of a fused qkv).
 */
#ifndef EXPLORA_MAE_INTERNAL_H
#define EXPLORA_MAE_INTERNAL_H

#include <stdint.h>

#include "explora/nn.h"
#include "explora/objective.h"
#include "explora/params.h"
#include "mae_probe.h"

/* decoder_train */
enum { MAE_TRAIN_ALL = 0, MAE_TRAIN_NORMS = 1, MAE_TRAIN_NONE = 2 };

/* How init() fills a parameter. */
typedef enum mae_init_kind {
    MAE_INIT_XAVIER = 0, /* Linear weight: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) */
    MAE_INIT_ZERO,       /* biases, LoRA B */
    MAE_INIT_ONE,        /* LayerNorm weight */
    MAE_INIT_TOKEN,      /* mask_token: N(0, 0.02^2) */
    MAE_INIT_TABLE,      /* decoder_pos_embed: the fixed 2-D sin-cos table */
    MAE_INIT_LORA_A      /* U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform_(a = sqrt 5), loralib) */
} mae_init_kind;

/* One parameter this plugin registered. */
typedef struct mae_own {
    ex_param *p;
    mae_init_kind init;
    int64_t fan_in, fan_out; /* MAE_INIT_XAVIER, MAE_INIT_LORA_A */
    int required;            /* must be in a decoder checkpoint */
} mae_own;

struct mae;

/* A (value, patch index) pair of the masking argsort. */
typedef struct mae_key {
    float u;
    int32_t i;
} mae_key;

/* LoRA on the q and v row slices of one decoder block's fused qkv:
 *   qkv[:, r0:r0+Dd] += s * (x A^T) B^T,   r0 = 0 (q) or 2*Dd (v),   s = 1/rank. */
typedef struct mae_lora_slice {
    int64_t row0;     /* first output row of the slice */
    float *A, *dA;    /* (rank, Dd); gradient NULL when frozen */
    float *B, *dB;    /* (Dd, rank) */
    ex_tensor h;      /* (rows, rank): x A^T of the last forward, kept for backward */
} mae_lora_slice;

typedef struct mae_lora {
    mae_lora_slice s[2]; /* q, v */
    ex_linear_hook hook; /* chained on the block's qkv */
    struct mae *owner;
} mae_lora;

typedef struct mae {
    mae_probe probe;           /* FIRST member (see mae_probe.h) */
    ex_objective_env env;

    /* config */
    double mask_ratio;
    int norm_pix;
    int64_t ddim, ddepth, dheads, dhidden;
    int train_mode;            /* MAE_TRAIN_* */
    int64_t lora_rank;
    int64_t height, width;
    double flip, scale_min, scale_max;

    /* derived */
    int64_t patch, channels, dim, registers;
    int64_t gh, gw, L, keep, K, Bmax;

    /* parameters (pointers bound by ex_params_bind) */
    float *mask_token, *dmask_token; /* (Dd) */
    ex_linear embed;                 /* D -> Dd */
    float *pos, *dpos;               /* (1 + L, Dd) fixed table; dpos stays unused */
    ex_block *blocks;                /* (depth) */
    ex_layernorm norm;
    ex_linear pred;                  /* Dd -> K */
    mae_lora *lora;                  /* (depth) when lora_rank > 0, else NULL */
    mae_own *own;                    /* every parameter registered here, in order */
    int nown, cap_own;

    /* activations, planned for Bmax images (T = 1 + L, Tk = 1 + keep) */
    ex_tensor ids_keep_d;  /* (B, keep) int32 */
    ex_tensor idx_full_d;  /* (B, T) int32: [0, 1 + ids_restore] */
    ex_tensor maskf_d;     /* (B, L) 1 = removed */
    ex_tensor x_in;        /* (B, Tk, D) [cls, kept] tokens when the backbone has registers */
    ex_tensor emb;         /* (B, Tk, Dd) decoder_embed output */
    ex_tensor cat;         /* (B, T, Dd) [cls, kept..., mask tokens...] before the unshuffle */
    ex_tensor mask_rep;    /* (L - keep, Dd) mask_token repeated */
    ex_tensor xs;          /* (depth + 1, B, T, Dd) residual streams */
    ex_tensor acts;        /* (depth, block acts) */
    ex_tensor scratch;     /* block backward scratch */
    ex_tensor ln_out;      /* (B, T, Dd) decoder_norm output */
    ex_tensor ln_mean, ln_rstd; /* (B, T) */
    ex_tensor npatch;      /* (B, L, Dd) decoder_norm output without the cls row */
    ex_tensor predb;       /* (B, L, K) */
    ex_tensor patches;     /* (B, L, K) patchify(view) */
    ex_tensor target;      /* (B, L, K) normalised target (norm_pix_loss) */
    ex_tensor t_mean, t_rstd; /* (B, L) */
    ex_tensor t_w, t_b;    /* (K) affine of the target normalisation (see mae_step.c) */
    ex_tensor diff;        /* (B, L, K) (pred - target) * mask */
    ex_tensor dpred;       /* (B, L, K) */
    ex_tensor loss_d;      /* (1) */
    ex_tensor dnp;         /* (B, L, Dd) */
    ex_tensor dln;         /* (B, T, Dd) */
    ex_tensor dres;        /* (B, T, Dd) */
    ex_tensor dcat;        /* (B, T, Dd) */
    ex_tensor dmask_rows;  /* (B, L - keep, Dd) */
    ex_tensor demb;        /* (B, Tk, Dd) */
    ex_tensor dx_in;       /* (B, Tk, D) */
    ex_tensor dtok;        /* (B, 1 + R + keep, D) when the backbone has registers */
    ex_tensor lora_dh;     /* (B * T, rank) LoRA backward scratch, shared by every slice */
    ex_block_acts *block_acts; /* (depth), bound into acts */
    size_t acts_floats;
    int planned;

    /* host buffers (allocated at create for Bmax images) */
    float *noise;          /* (B, L) */
    mae_key *sort_keys;    /* (L) */
    int32_t *ids_keep;     /* (B, keep) */
    int32_t *ids_restore;  /* (B, L) */
    int32_t *idx_full;     /* (B, T) */
    float *maskf;          /* (B, L) */
    uint8_t *mask;         /* (B, L) */
    float *table;          /* (1 + L, Dd) the sin-cos table */

    /* state */
    int weights_ready;     /* init() or load() ran */
    int lora_ready;        /* init() ran, or the LoRA tensors came from a checkpoint */
    const float *last_x_in; /* (B, 1 + keep, D) decoder input of the last forward (device) */
    int skip_ckpt_pos;     /* load(): the checkpoint's decoder_pos_embed has another grid (ignored) */
} mae;

/* mae_decoder.c */
ex_status mae_register_params(mae *m, ex_err *err);
ex_status mae_plan_decoder(mae *m, ex_memory_plan *plan, ex_err *err);
void mae_bind_activations(mae *m);
ex_status mae_decoder_forward(mae *m, const float *tokens, int64_t B, ex_err *err);
ex_status mae_decoder_backward(mae *m, int64_t B, const float **dtokens, ex_err *err);
void mae_sincos_table(int64_t dim, int64_t gh, int64_t gw, float *table);
ex_status mae_init_params(mae *m, ex_rng *rng, ex_err *err);

/* mae_step.c */
ex_status mae_step(void *self, const ex_batch *batch, ex_rng *rng, int64_t iteration, ex_loss_terms *out,
                   ex_err *err);
void mae_draw_masks(mae *m, int64_t B, ex_rng *rng);

#endif /* EXPLORA_MAE_INTERNAL_H */
