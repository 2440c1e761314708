/*
 * explora/nn.h — the core nn library: linear, LayerNorm and the pre-norm
 * transformer block, each an explicit forward/backward pair written against
 * the backend interface. Backbones, adapters, heads and the MAE decoder all
 * use these, so there is one implementation of each layer.
 *
 * Conventions (llm.c style):
 *   - N = B*T rows of D features, row-major; shapes are noted on every pointer.
 *   - Backward ACCUMULATES into every gradient (+=). A gradient pointer that is
 *     NULL is not computed: frozen weights cost no weight-gradient GEMM.
 *   - Layers never allocate. Activations a block keeps for its backward live in
 *     an ex_block_acts bound to caller memory (sized by ex_block_acts_floats);
 *     backward scratch is shared by all blocks (ex_block_scratch_floats).
 *   - Activations and gradients are fp32, except a block's GEMM inputs when it
 *     keeps them in bf16 (ex_block.act_dtype): then a linear layer's input is
 *     bf16 (ex_linear.in_dtype) and its hooks receive it as such.
 *
 * The block (DINOv2 / timm / MAE layout):
 *   x_mid = x   + drop1 * ls1 * proj(attn(qkv(norm1(x))))
 *   out   = x_mid + drop2 * ls2 * fc2(act(fc1(norm2(x_mid))))
 * where act is exact GELU, or SwiGLU (fc1 = w12 producing [x1 | x2],
 * act = silu(x1) * x2, fc2 = w3); ls1/ls2 are LayerScale vectors (or absent);
 * drop1/drop2 are per-image stochastic-depth scales (B) (or absent: 1).
 */
#ifndef EXPLORA_NN_H
#define EXPLORA_NN_H

#include <stdint.h>

#include "explora/backend.h"
#include "explora/export.h"
#include "explora/rng.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- adapters attached to a linear site (LoRA and friends) ------------------------- */

/* A hook adds its own term to a linear layer's output: out += delta(inp).
 * It owns its parameters, gradients and whatever it caches between forward and
 * backward (sized for the largest n it will see). Hooks chain through `next`.
 *
 * Noise keys: a training pass carries a 64-bit `noise` key (ex_backbone_io.noise)
 * for its random draws inside layers, such as adapter dropout. 0 means "draw
 * nothing". A hook keys its draws on (noise, its own identity), never on a call
 * count, so a recomputation of the same pass (activation checkpointing) draws the
 * same values, and the draws are a function of the seed, the step and the
 * micro-batch (resumed runs repeat them). */
typedef struct ex_linear_hook ex_linear_hook;
struct ex_linear_hook {
    void *self;
    /* out (n, out_features) += delta(inp (n, in_features)); inp is stored as inp_dtype (EX_F32, or EX_BF16
     * when the layer's input is kept in bf16: a hook that cannot read it returns an error saying so);
     * train = 1 when a backward will follow; noise: the pass's key (0: none). A backward applies to the most
     * recent forward. */
    ex_status (*forward)(void *self, ex_backend *be, float *out, const void *inp, ex_dtype inp_dtype, int64_t n,
                         int train, uint64_t noise, ex_err *err);
    /* dinp (n, in_features) += d delta / d inp applied to dout (n, out_features) (dinp may be NULL; it is
     * fp32 whatever inp_dtype is); the hook's own parameter gradients += ... */
    ex_status (*backward)(void *self, ex_backend *be, float *dinp, const float *dout, const void *inp,
                          ex_dtype inp_dtype, int64_t n, ex_err *err);
    ex_linear_hook *next;
};

/* --- linear ------------------------------------------------------------------------ */

typedef struct ex_linear {
    int64_t in, out;
    float *w;              /* (out, in), torch.nn.Linear layout; stored as w_dtype */
    float *b;              /* (out) or NULL (no bias) */
    float *dw, *db;        /* (out, in), (out): gradients, NULL when frozen */
    ex_linear_hook *hooks; /* adapters at this site, or NULL */
    ex_dtype w_dtype;      /* EX_F32, or EX_BF16 when a frozen weight is kept in bf16 (set at bind) */
    ex_dtype in_dtype;     /* how the input is stored: EX_F32, or EX_BF16 when a block keeps it in bf16
                            * (set by ex_block_set_act_dtype) */
} ex_linear;

/* out (n, out) = inp (n, in) @ w^T + b, then every hook adds its term. inp is stored as l->in_dtype. */
EX_API ex_status ex_linear_forward(ex_backend *be, const ex_linear *l, float *out, const void *inp, int64_t n,
                                   int train, uint64_t noise, ex_err *err);

/* The key of sub-pass k of a pass keyed `noise` (an objective's several forwards in one micro-batch, a
 * layer's several draws): 0 stays 0, anything else gives a non-zero key. */
static inline uint64_t ex_noise_derive(uint64_t noise, uint64_t k) {
    if (noise == 0) return 0;
    const uint64_t d = ex_splitmix64(noise ^ ex_splitmix64(k + 0x6A09E667F3BCC909ull));
    return d ? d : 1;
}
/* dinp (n, in) += dout @ w (skipped when dinp is NULL); dw += dout^T @ inp; db += colsum(dout);
 * then every hook's backward. */
EX_API ex_status ex_linear_backward(ex_backend *be, const ex_linear *l, float *dinp, const float *dout,
                                    const void *inp, int64_t n, ex_err *err);
/* The same with dinp written (dinp = dout @ w + the hooks' terms): its old contents are not read, so a caller
 * need not zero it first. dinp must not be NULL. Parameter gradients still accumulate. */
EX_API ex_status ex_linear_backward_write(ex_backend *be, const ex_linear *l, float *dinp, const float *dout,
                                          const void *inp, int64_t n, ex_err *err);

/* --- LayerNorm --------------------------------------------------------------------- */

typedef struct ex_layernorm {
    int64_t dim;
    float eps;      /* 1e-6 for DINOv2, MAE and timm ViTs */
    float *w, *b;   /* (dim) each */
    float *dw, *db; /* (dim) gradients, NULL when frozen */
} ex_layernorm;

/* out (n, dim); mean, rstd (n) saved for backward. */
EX_API ex_status ex_layernorm_forward(ex_backend *be, const ex_layernorm *ln, float *out, float *mean, float *rstd,
                                      const float *inp, int64_t n, ex_err *err);
/* dinp (n, dim) +=; dw, db += when non-NULL. */
EX_API ex_status ex_layernorm_backward(ex_backend *be, const ex_layernorm *ln, float *dinp, const float *dout,
                                       const float *inp, const float *mean, const float *rstd, int64_t n,
                                       ex_err *err);

/* --- transformer block ----------------------------------------------------------------- */

typedef enum ex_mlp_kind { EX_MLP_GELU = 0, EX_MLP_SWIGLU = 1 } ex_mlp_kind;

typedef struct ex_block {
    int64_t dim, heads, hidden; /* hidden: MLP width (SwiGLU: width of each half) */
    ex_mlp_kind mlp;
    ex_layernorm norm1, norm2;
    ex_linear qkv;              /* dim -> 3*dim, output laid out (3, heads, dim/heads) */
    ex_linear proj;             /* dim -> dim */
    ex_linear fc1;              /* dim -> hidden (GELU) or 2*hidden (SwiGLU w12) */
    ex_linear fc2;              /* hidden -> dim (SwiGLU w3) */
    float *ls1, *ls2;           /* LayerScale gammas (dim), or NULL for none */
    float *dls1, *dls2;         /* their gradients, NULL when frozen */
    ex_dtype act_dtype;         /* how ln1, ln2 and (GELU) act are kept: EX_F32, or EX_BF16 (half the memory; the
                                 * GEMMs reading them take bf16). Set with ex_block_set_act_dtype. */
} ex_block;

/* What one block keeps from forward for backward, for n = b*t rows. */
typedef struct ex_block_acts {
    void *ln1;             /* (n, dim) norm1 output, stored as act_dtype */
    float *ln1_mean, *ln1_rstd; /* (n) */
    void *qkv;             /* (n, 3*dim), stored as act_dtype */
    void *att;             /* (n, dim) attention output, heads concatenated (input of proj), stored as act_dtype */
    float *lse;            /* (b, heads, t) */
    float *branch1;        /* (n, dim) proj output before LayerScale and drop path */
    float *mid;            /* (n, dim) residual stream after the attention branch */
    void *ln2;             /* (n, dim) norm2 output, stored as act_dtype */
    float *ln2_mean, *ln2_rstd; /* (n) */
    float *fc1;            /* (n, hidden or 2*hidden) fc1 output before the activation */
    void *act;             /* (n, hidden) activation output (input of fc2), stored as act_dtype (GELU) or fp32
                            * (SwiGLU, whose product is built in place) */
    float *branch2;        /* (n, dim) fc2 output before LayerScale and drop path */
    float *glu;            /* (n, hidden) SwiGLU only: silu(x1), the gate kept for backward; NULL for GELU */
    float *qkv32;          /* (n, 3*dim) bf16 acts only: the qkv linear's fp32 output before it is rounded into
                            * qkv, dead once attention ran; fc1's space when fc1 is wide enough, else its own
                            * after glu. NULL under fp32 */
} ex_block_acts;

/* Keep the block's GEMM inputs and attention's input and output as `dtype` (EX_F32 or EX_BF16): ln1, qkv,
 * att, ln2, and for a GELU MLP act; sets act_dtype and the in_dtype of qkv, proj, fc1 and (GELU) fc2. The
 * block computes in fp32 and rounds these outputs to nearest even as it writes them (qkv after its bias and
 * hooks have added in fp32); attention computes from the rounded qkv. Backward passes gradients through
 * the rounding unchanged (straight through), as mixed-precision training does; gradients stay fp32. Call
 * before sizing or binding acts. With bf16 the backend must offer layernorm_fwd_bf16, gelu_fwd_bf16,
 * to_bf16, attention_fwd_bf16 and attention_bwd_bf16, and every hook at those sites must read bf16
 * inputs; the forward reports otherwise. */
EX_API ex_status ex_block_set_act_dtype(ex_block *blk, ex_dtype dtype, ex_err *err);

/* Floats needed by one block's acts for b images of t tokens (0 for unusable sizes).
 * Every field is sized by n = b*t, so acts (and scratch) sized and bound for (b, t)
 * serve any call with b'*t' <= b*t. */
EX_API size_t ex_block_acts_floats(const ex_block *blk, int64_t b, int64_t t);
/* Point every field of acts into `base` (ex_block_acts_floats(...) floats), in
 * declaration order, each starting at a multiple of 16 floats from base. */
EX_API void ex_block_acts_bind(ex_block_acts *acts, const ex_block *blk, int64_t b, int64_t t, float *base);
/* Floats of backward scratch shared by all blocks of the same shape. */
EX_API size_t ex_block_scratch_floats(const ex_block *blk, int64_t b, int64_t t);

/* out (b, t, dim) = block(inp (b, t, dim)). out must not alias inp (inp is the
 * residual input that backward needs). drop1/drop2 (b): per-image scales of
 * the two branches, or NULL. noise: the pass's key, handed to the linear layers' hooks. */
EX_API ex_status ex_block_forward(ex_backend *be, const ex_block *blk, ex_block_acts *acts, float *out,
                                  const float *inp, const float *drop1, const float *drop2, int64_t b, int64_t t,
                                  int train, uint64_t noise, ex_err *err);

/* Backward through one block. On entry dresid (b, t, dim) holds dL/d out; on
 * return it holds dL/d inp (updated in place). Parameter gradients that are
 * non-NULL are accumulated. `inp` is the block input given to forward,
 * `scratch` has ex_block_scratch_floats(...) floats. */
EX_API ex_status ex_block_backward(ex_backend *be, const ex_block *blk, const ex_block_acts *acts, float *dresid,
                                   const float *inp, const float *drop1, const float *drop2, float *scratch,
                                   int64_t b, int64_t t, ex_err *err);

/* --- stochastic depth ---------------------------------------------------------------- */

/* Per-image scales for `branches` residual branches (a ViT has 2 per block,
 * laid out (depth, 2, batch)), drawn from `rng` as DINOv2 does:
 *   rate > 0.1:  for each branch a random subset of max(int(batch*(1-rate)), 1)
 *                images keeps the branch, scaled by batch/subset; the others get 0;
 *   0 < rate <= 0.1: each image keeps it with probability 1-rate, scaled by 1/(1-rate);
 *   rate = 0:    every scale is 1.
 * out has branches * batch floats (host memory). */
EX_API ex_status ex_drop_path_scales(ex_rng *rng, double rate, int64_t batch, int64_t branches, float *out,
                                     ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_NN_H */
