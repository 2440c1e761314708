/*
 * explora/backend.h — the compute-backend interface.
 *
 * A backend (cpu, cuda, hip) is a plugin whose vtable implements memory and
 * the op set a ViT needs in forward and backward. Every op works on device
 * pointers with explicit sizes (llm.c style); shapes are written next to each
 * pointer, row-major, innermost dimension last. Conventions:
 *
 *   - Backward ops ACCUMULATE into their gradient outputs (+=), so a tensor
 *     used twice gets the sum of both contributions. Zero gradients first.
 *   - A gradient output that is NULL is not computed (e.g. frozen LayerNorm
 *     weights: pass dw = NULL, db = NULL).
 *   - Unless a slot says otherwise, tensors are fp32 and contiguous; outputs
 *     may alias inputs only where the slot says so.
 *   - Every op returns EX_OK or a status; ops do not allocate per call.
 *     Status codes: EX_E_INVALID for negative sizes, NULL required pointers or
 *     a bad argument (e.g. an AdamW step < 1); EX_E_RANGE for indices out of
 *     range (gathers, scatters, labels >= v); EX_E_SHAPE for sizes that do
 *     not divide (patchify); EX_E_UNSUPPORTED for a dtype the backend lacks.
 *   - Saved statistics (layernorm mean/rstd, l2norm norms, xent probs) may be
 *     NULL when no backward will follow.
 *   - Source and destination of one op must not overlap unless the slot says
 *     they may alias exactly.
 *   - A backend context is used by one host thread at a time (ops share its
 *     scratch buffers).
 *   - Slots marked [opt] may be NULL ("not supported"); supports_op answers
 *     per op and dtype and is what callers and the parity tests consult.
 *
 * Core wraps the vtable in ex_backend, whose ex_be_* helpers (below) check
 * that a slot exists before calling it.
 */
#ifndef EXPLORA_BACKEND_H
#define EXPLORA_BACKEND_H

#include <stdint.h>

#include "explora/config.h"
#include "explora/export.h"
#include "explora/rng.h"
#include "explora/status.h"
#include "explora/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every op of the interface, for supports_op and for the parity suite. */
typedef enum ex_op {
    EX_OP_GEMM = 0,
    EX_OP_BIAS_ADD_FWD,
    EX_OP_BIAS_ADD_BWD,
    EX_OP_LAYERNORM_FWD,
    EX_OP_LAYERNORM_BWD,
    EX_OP_GELU_FWD,
    EX_OP_GELU_BWD,
    EX_OP_SILU_FWD,
    EX_OP_SILU_BWD,
    EX_OP_SOFTMAX_FWD,
    EX_OP_SOFTMAX_BWD,
    EX_OP_ATTENTION_FWD,
    EX_OP_ATTENTION_BWD,
    EX_OP_BINARY,
    EX_OP_AXPBY,
    EX_OP_CHANNEL_SCALE_FWD,
    EX_OP_CHANNEL_SCALE_BWD,
    EX_OP_ROW_SCALE_FWD,
    EX_OP_ROW_SCALE_BWD,
    EX_OP_REDUCE,
    EX_OP_GATHER_ROWS,
    EX_OP_SCATTER_ADD_ROWS,
    EX_OP_MASK_ROWS_FWD,
    EX_OP_MASK_ROWS_BWD,
    EX_OP_XENT_FWD,
    EX_OP_XENT_BWD,
    EX_OP_L2NORM_FWD,
    EX_OP_L2NORM_BWD,
    EX_OP_ADAMW,
    EX_OP_EMA,
    EX_OP_RNG_UNIFORM,
    EX_OP_RNG_NORMAL,
    EX_OP_RNG_PERMUTATION,
    EX_OP_RNG_DROPOUT,
    EX_OP_PATCHIFY_FWD,
    EX_OP_PATCHIFY_BWD,
    EX_OP_COPY2D,
    EX_OP_COUNT
} ex_op;

EX_API const char *ex_op_name(ex_op op);

typedef enum ex_copy_kind {
    EX_COPY_H2D = 0,
    EX_COPY_D2H = 1,
    EX_COPY_D2D = 2
} ex_copy_kind;

typedef enum ex_binary_op { EX_BIN_ADD = 0, EX_BIN_SUB = 1, EX_BIN_MUL = 2, EX_BIN_DIV = 3 } ex_binary_op;
typedef enum ex_reduce_op { EX_RED_SUM = 0, EX_RED_MEAN = 1, EX_RED_SUMSQ = 2, EX_RED_MAX_ABS = 3 } ex_reduce_op;
typedef enum ex_patch_order {
    EX_PATCH_CPP = 0,  /* each patch flattened as (C, p, p): Conv2d weight order, the patch embedding */
    EX_PATCH_PPC = 1   /* each patch flattened as (p, p, C): MAE's patchify, the pixel targets */
} ex_patch_order;

/* Batched strided GEMM, row-major: for b in [0, batch):
 *   C_b (m, n) = alpha * op(A_b) (m, k) @ op(B_b) (k, n) + beta * C_b
 * op(X) = X^T when trans_x. A_b starts at a + b*stride_a elements, likewise B, C.
 * A is stored (m, k) when !trans_a, (k, m) when trans_a, with row stride lda;
 * B is stored (k, n) when !trans_b, (n, k) when trans_b, with row stride ldb.
 * a_dtype/b_dtype may be EX_BF16/EX_F16 on backends that say so (supports_op(EX_OP_GEMM, dtype)),
 * and the two may differ (fp32 activations times a bf16 frozen weight); C is fp32.
 * beta = 0 means C is written, not read (NaN in C does not propagate). */
typedef struct ex_gemm_desc {
    int trans_a, trans_b;
    int64_t m, n, k;
    float alpha, beta;
    const void *a;
    ex_dtype a_dtype;
    int64_t lda, stride_a;
    const void *b;
    ex_dtype b_dtype;
    int64_t ldb, stride_b;
    float *c;
    int64_t ldc, stride_c;
    int64_t batch; /* >= 1 */
} ex_gemm_desc;

/* torch.optim.AdamW semantics (decoupled weight decay, bias correction):
 *   p -= lr*wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *   p -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps)        (step >= 1) */
typedef struct ex_adamw_params {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t step;
} ex_adamw_params;

typedef struct ex_device_info {
    char name[128];        /* e.g. "cpu: 2 threads, OpenBLAS 0.3.21 (Haswell)" */
    uint64_t total_memory; /* bytes, 0 if unknown */
    uint64_t free_memory;  /* bytes, 0 if unknown */
    int threads;           /* CPU threads or GPU SMs */
} ex_device_info;

/* The vtable. Grows only at the end (ABI minor). Mandatory: every slot up to and
 * including `copy2d` except those marked [opt]. */
typedef struct ex_backend_vtable {
    /* --- lifecycle ---------------------------------------------------------- */
    ex_status (*init)(const ex_cfg_section *cfg, void **ctx, ex_err *err);
    void (*shutdown)(void *ctx);
    ex_status (*device_info)(void *ctx, ex_device_info *out);              /* [opt] */
    int (*supports_op)(void *ctx, ex_op op, ex_dtype dtype);               /* 1 yes, 0 no */

    /* --- memory --------------------------------------------------------------- */
    ex_status (*alloc)(void *ctx, size_t bytes, void **ptr, ex_err *err);  /* 256-byte aligned */
    void (*free)(void *ctx, void *ptr);
    ex_status (*copy)(void *ctx, void *dst, const void *src, size_t bytes, ex_copy_kind kind);
    ex_status (*fill)(void *ctx, float *dst /* (n) */, float value, int64_t n);
    ex_status (*synchronize)(void *ctx);

    /* --- linear algebra --------------------------------------------------------- */
    ex_status (*gemm)(void *ctx, const ex_gemm_desc *d);

    /* out (n, c) += bias (c), broadcast over rows. */
    ex_status (*bias_add_fwd)(void *ctx, float *out, const float *bias, int64_t n, int64_t c);
    /* dbias (c) += sum over rows of dout (n, c). */
    ex_status (*bias_add_bwd)(void *ctx, float *dbias, const float *dout, int64_t n, int64_t c);

    /* --- normalisation and activations ----------------------------------------- */
    /* out (n, c) = (inp - mean) * rstd * w + b per row; saves mean (n), rstd (n).
     * w, b (c) may be NULL (no affine). Population variance, as torch. */
    ex_status (*layernorm_fwd)(void *ctx, float *out, float *mean, float *rstd, const float *inp,
                               const float *w, const float *b, int64_t n, int64_t c, float eps);
    /* dinp (n, c) +=, dw (c) +=, db (c) += ; each may be NULL. */
    ex_status (*layernorm_bwd)(void *ctx, float *dinp, float *dw, float *db, const float *dout,
                               const float *inp, const float *w, const float *mean,
                               const float *rstd, int64_t n, int64_t c);
    /* GELU with the exact erf form: 0.5 x (1 + erf(x / sqrt 2)). out may alias inp. */
    ex_status (*gelu_fwd)(void *ctx, float *out, const float *inp, int64_t n);
    ex_status (*gelu_bwd)(void *ctx, float *dinp, const float *inp, const float *dout, int64_t n);
    /* SiLU: x * sigmoid(x). out may alias inp. */
    ex_status (*silu_fwd)(void *ctx, float *out, const float *inp, int64_t n);
    ex_status (*silu_bwd)(void *ctx, float *dinp, const float *inp, const float *dout, int64_t n);
    /* Row softmax of scale*inp: out (n, c). */
    ex_status (*softmax_fwd)(void *ctx, float *out, const float *inp, int64_t n, int64_t c, float scale);
    /* dinp (n, c) += scale * out * (dout - sum(dout * out)). */
    ex_status (*softmax_bwd)(void *ctx, float *dinp, const float *out, const float *dout, int64_t n,
                             int64_t c, float scale);

    /* --- attention -------------------------------------------------------------- */
    /* Fused multi-head self-attention without an (T, T) matrix kept in memory:
     *   qkv (b, t, 3, nh, hs) as produced by one fused linear (timm layout),
     *   out (b, t, nh*hs) = softmax(scale * q k^T) v per head, heads concatenated,
     *   lse (b, nh, t) = log-sum-exp of each score row, saved for backward. */
    ex_status (*attention_fwd)(void *ctx, float *out, float *lse, const float *qkv, int64_t b,
                               int64_t t, int64_t nh, int64_t hs, float scale);
    /* dqkv (b, t, 3, nh, hs) += gradient of the above given dout (b, t, nh*hs). */
    ex_status (*attention_bwd)(void *ctx, float *dqkv, const float *dout, const float *out,
                               const float *lse, const float *qkv, int64_t b, int64_t t, int64_t nh,
                               int64_t hs, float scale);

    /* --- elementwise ---------------------------------------------------------------- */
    /* out (n) = a op b; out may alias a or b. */
    ex_status (*binary)(void *ctx, ex_binary_op op, float *out, const float *a, const float *b, int64_t n);
    /* y (n) = alpha * x + beta * y (beta = 0: y is written, not read). Residual add and scale. x may be y (a
     * scale in place: the optimiser's unscaling, DINOv2's centring). */
    ex_status (*axpby)(void *ctx, float *y, float alpha, const float *x, float beta, int64_t n);
    /* LayerScale: out (n, c) = inp * gamma (c). out may alias inp. */
    ex_status (*channel_scale_fwd)(void *ctx, float *out, const float *inp, const float *gamma,
                                   int64_t n, int64_t c);
    /* dinp (n, c) += dout * gamma; dgamma (c) += sum_rows dout * inp. Either may be NULL. */
    ex_status (*channel_scale_bwd)(void *ctx, float *dinp, float *dgamma, const float *dout,
                                   const float *inp, const float *gamma, int64_t n, int64_t c);
    /* Per-row scale (drop path, sample weights): out (n, c) = inp * s (n). out may alias inp. */
    ex_status (*row_scale_fwd)(void *ctx, float *out, const float *inp, const float *s, int64_t n, int64_t c);
    /* dinp (n, c) += dout * s; ds (n) += sum_c dout * inp. Either may be NULL. */
    ex_status (*row_scale_bwd)(void *ctx, float *dinp, float *ds, const float *dout, const float *inp,
                               const float *s, int64_t n, int64_t c);
    /* out (1) = sum | mean | sum of squares | max |x| of inp (n), on the device.
     * Fixed summation order (deterministic for a given n and thread count). */
    ex_status (*reduce)(void *ctx, ex_reduce_op op, float *out, const float *inp, int64_t n);

    /* --- token gathers (masking) ------------------------------------------------------ */
    /* out (b, m, c) = inp (b, t, c) rows picked by idx (b, m), values in [0, t). */
    ex_status (*gather_rows)(void *ctx, float *out, const float *inp, const int32_t *idx, int64_t b,
                             int64_t m, int64_t t, int64_t c);
    /* dinp (b, t, c) += dout (b, m, c) scattered to rows idx (b, m); repeated indices add. */
    ex_status (*scatter_add_rows)(void *ctx, float *dinp, const float *dout, const int32_t *idx,
                                  int64_t b, int64_t m, int64_t t, int64_t c);
    /* iBOT masking: out (n, c) = mask[i] ? token (c) : inp row i; mask (n) bytes. out may alias inp. */
    ex_status (*mask_rows_fwd)(void *ctx, float *out, const float *inp, const uint8_t *mask,
                               const float *token, int64_t n, int64_t c);
    /* dinp (n, c) += dout where !mask; dtoken (c) += sum of dout rows where mask. Either may be NULL. */
    ex_status (*mask_rows_bwd)(void *ctx, float *dinp, float *dtoken, const float *dout,
                               const uint8_t *mask, int64_t n, int64_t c);

    /* --- losses and heads --------------------------------------------------------------- */
    /* Cross-entropy of softmax(logits) (n, v) against hard labels (n) (label < 0: ignored,
     * loss 0) or soft targets (n, v) (exactly one of labels/targets non-NULL):
     *   loss_i = -sum_j target_ij * log softmax(logits_i)_j.
     * Writes losses (n) and probs (n, v) (the softmax, saved for backward). */
    ex_status (*xent_fwd)(void *ctx, float *losses, float *probs, const float *logits,
                          const int32_t *labels, const float *targets, int64_t n, int64_t v);
    /* dlogits (n, v) += dlosses_i * (probs_ij * sum_k target_ik - target_ij). */
    ex_status (*xent_bwd)(void *ctx, float *dlogits, const float *dlosses, const float *probs,
                          const int32_t *labels, const float *targets, int64_t n, int64_t v);
    /* F.normalize: out (n, c) = inp / max(||inp_row||, eps); saves norms (n) = ||inp_row||. */
    ex_status (*l2norm_fwd)(void *ctx, float *out, float *norms, const float *inp, int64_t n,
                            int64_t c, float eps);
    /* dinp (n, c) += gradient given dout (n, c). */
    ex_status (*l2norm_bwd)(void *ctx, float *dinp, const float *dout, const float *inp,
                            const float *norms, int64_t n, int64_t c, float eps);

    /* --- optimiser ---------------------------------------------------------------------- */
    /* One AdamW step over n parameters; p, m, v updated in place. */
    ex_status (*adamw)(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                       const ex_adamw_params *h);
    /* teacher (n) = momentum * teacher + (1 - momentum) * student. */
    ex_status (*ema)(void *ctx, float *teacher, const float *student, float momentum, int64_t n);

    /* --- random numbers (Philox-4x32-10, see rng.h; same streams on every backend) ------------ */
    /* out (n) ~ U[lo, hi); advances rng. */
    ex_status (*rng_uniform)(void *ctx, float *out, int64_t n, float lo, float hi, ex_rng *rng);
    /* out (n) ~ N(mean, std^2) by Box-Muller; advances rng. */
    ex_status (*rng_normal)(void *ctx, float *out, int64_t n, float mean, float std, ex_rng *rng);
    /* out (n) = a uniformly random permutation of [0, n): the stable argsort of n uniforms
     * (MAE's masking rule); advances rng. */
    ex_status (*rng_permutation)(void *ctx, int32_t *out, int64_t n, ex_rng *rng);
    /* Inverted-dropout keep mask: out[i] = u_i < p ? 0 : 1 / (1 - p), with u_i the uniform [0, 1) that
     * rng_uniform would draw at element i; 0 <= p < 1; advances rng by n. */
    ex_status (*rng_dropout)(void *ctx, float *out, int64_t n, float p, ex_rng *rng);

    /* --- layout ----------------------------------------------------------------------- */
    /* Non-overlapping patches (convolution with stride = kernel = p as im2col):
     * img (b, ch, h, w) -> out (b, (h/p)*(w/p), ch*p*p), patches in row-major grid order,
     * each flattened in `order`. h and w must be multiples of p. */
    ex_status (*patchify_fwd)(void *ctx, float *out, const float *img, int64_t b, int64_t ch,
                              int64_t h, int64_t w, int64_t p, ex_patch_order order);
    /* dimg (b, ch, h, w) += the inverse scatter of dout (b, np, ch*p*p). */
    ex_status (*patchify_bwd)(void *ctx, float *dimg, const float *dout, int64_t b, int64_t ch,
                              int64_t h, int64_t w, int64_t p, ex_patch_order order);
    /* Strided 2-D copy: dst[r*dst_ld + j] = src[r*src_ld + j] for r < rows, j < cols
     * (concatenating cls/register/patch tokens, slicing fused outputs). src_ld = 0
     * repeats one source row into every destination row (broadcast). */
    ex_status (*copy2d)(void *ctx, float *dst, int64_t dst_ld, const float *src, int64_t src_ld,
                        int64_t rows, int64_t cols);

    /* --- collectives between processes [opt; ABI 2.1; all three or none] ----------------------------- */
    /* A backend whose devices can reduce among themselves (NCCL on CUDA) offers these; the core's
     * communicator (explora/comm.h) then reduces device buffers through them instead of staging through
     * host memory and MPI. The core calls them only when several processes run. */
    /* Rank 0 only: the bytes that identify a new communicator (NCCL's unique id), at most cap. */
    ex_status (*comm_unique_id)(void *ctx, void *id, size_t cap, size_t *len, ex_err *err);
    /* Every rank, with rank 0's bytes (broadcast by the core over MPI): join the communicator of `world`
     * processes as `rank`. Collective: every rank calls it. The backend releases it at shutdown. */
    ex_status (*comm_init)(void *ctx, const void *id, size_t len, int rank, int world, ex_err *err);
    /* In place: buf (n) = the element-wise sum of buf over the ranks, ordered after the backend's queued
     * work like any other op. Collective. */
    ex_status (*comm_allreduce_sum_f32)(void *ctx, float *buf, int64_t n, ex_err *err);

    /* --- activations kept in bf16 [opt; ABI 4.0; both or none] ------------------------------------------ */
    /* A block may keep its GEMM inputs (the LayerNorm outputs and the GELU output) in bf16: half the memory,
     * and a GEMM under bf16 math reads them without rounding them afresh (explora/nn.h, ex_block.act_dtype).
     * These write that output in bf16 directly: the value the fp32 slot computes, rounded to nearest even
     * (a backend must give exactly that rounding of its own fp32 result). mean and rstd stay fp32. NULL:
     * the backend keeps activations in fp32 only, and asking a block for bf16 activations is an error. */
    ex_status (*layernorm_fwd_bf16)(void *ctx, uint16_t *out /* (n, c) bf16 */, float *mean, float *rstd,
                                    const float *inp, const float *w, const float *b, int64_t n, int64_t c,
                                    float eps);
    ex_status (*gelu_fwd_bf16)(void *ctx, uint16_t *out /* (n) bf16 */, const float *inp, int64_t n);

    /* --- [ABI 4.0, mandatory] ------------------------------------------------------------------------- */
    /* d (n) = d * gelu'(inp): the gradient at the GELU's output turned, in place, into the gradient at its
     * input (what gelu_bwd adds into a zeroed buffer, without that buffer: the block's MLP backward). */
    ex_status (*gelu_bwd_inplace)(void *ctx, float *d, const float *inp, int64_t n);

    /* --- fused linear forward [opt; ABI 4.0] ---------------------------------------------------------------- */
    /* out (n, oc) = inp (n, ic, stored as inp_dtype) @ w^T (oc, ic, stored as w_dtype) + bias (oc), the bias
     * added by the GEMM itself (one pass over out). EX_E_UNSUPPORTED for a combination the backend does not
     * fuse, having written nothing: ex_be_linear_fwd then runs gemm and bias_add_fwd. */
    ex_status (*linear_bias_fwd)(void *ctx, float *out, const void *inp, ex_dtype inp_dtype, const void *w,
                                 ex_dtype w_dtype, const float *bias, int64_t n, int64_t ic, int64_t oc);

    /* --- exp and row sums [opt; ABI 4.1; both or none] ------------------------------------------------------- */
    /* DINOv2's Sinkhorn-Knopp teacher targets on the device (with bias_add_bwd's column sums and the scale
     * slots); NULL: the objective computes them on the host. */
    /* out (n) = exp(scale * inp) in fp32, nothing subtracted (overflow gives inf). out may alias inp. */
    ex_status (*exp_fwd)(void *ctx, float *out, const float *inp, float scale, int64_t n);
    /* out (n) = sum of each row of inp (n, c), in a fixed order (deterministic for given n, c). */
    ex_status (*row_sum)(void *ctx, float *out, const float *inp, int64_t n, int64_t c);

    /* --- attention's input and output kept in bf16 [opt; ABI 4.2; all three or none] -------------------------- */
    /* A block that keeps its activations in bf16 also keeps qkv and the attention output in bf16 (explora/nn.h):
     * the qkv linear writes fp32, to_bf16 rounds it once, attention reads the rounded values and writes its
     * output rounded, and proj reads that. NULL: the backend cannot, and asking a block for bf16 activations is
     * an error. */
    /* out (n) bf16 = inp (n) rounded to nearest even. */
    ex_status (*to_bf16)(void *ctx, uint16_t *out, const float *inp, int64_t n);
    /* attention_fwd on bf16 storage: qkv (b, t, 3, nh, hs) bf16 in, out (b, t, nh*hs) bf16 = the attention of the
     * stored values, rounded to nearest even; lse (b, nh, t) fp32. A backend computes the products in fp32 (the
     * CPU: out is exactly its fp32 attention_fwd of the widened qkv, rounded) or on bf16 tensor cores. */
    ex_status (*attention_fwd_bf16)(void *ctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b, int64_t t,
                                    int64_t nh, int64_t hs, float scale);
    /* dqkv (b, t, 3, nh, hs) fp32 = the gradient of attention at the stored qkv, given dout (b, t, nh*hs) fp32:
     * WRITTEN, not accumulated (unlike attention_bwd; its old contents are not read, so the caller need not zero
     * it). out is the stored (rounded) output of the forward: flash-style kernels take D_i = dout_i . out_i from
     * it; the CPU recomputes D_i = sum_j p_ij dp_ij from the probabilities instead, which is the exact gradient
     * at the stored qkv (what autograd gives through a rounding that passes gradients straight). */
    ex_status (*attention_bwd_bf16)(void *ctx, float *dqkv, const float *dout, const uint16_t *out, const float *lse,
                                    const uint16_t *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale);

    /* --- the scaled residual add in one pass [opt; ABI 4.2; both or none] ------------------------------------- */
    /* A block's branch joins the residual stream through LayerScale ls (c) and drop path drop (b), either NULL when
     * absent: one pass instead of three (explora/nn.h). NULL: the block runs channel_scale, row_scale and binary. */
    /* out (b, t, c) = resid + (branch * ls) * drop[image], each product rounded as its own op (the CPU's unfused
     * ops, bit for bit). out may alias resid or branch. */
    ex_status (*residual_fwd)(void *ctx, float *out, const float *resid, const float *branch, const float *ls,
                              const float *drop, int64_t b, int64_t t, int64_t c);
    /* With g = dres * drop[image] (dres where drop is NULL): dls (c) += sum over rows of g * branch (skipped when
     * dls is NULL); dbranch (b, t, c) = g * ls (g where ls is NULL), written. dbranch may alias dres. */
    ex_status (*residual_bwd)(void *ctx, float *dbranch, float *dls, const float *dres, const float *branch,
                              const float *ls, const float *drop, int64_t b, int64_t t, int64_t c);

    /* --- which physical device a context computes on [opt; ABI 4.3] ------------------------------------------ */
    /* key (NUL-terminated, at most cap bytes) = a name of this context's device that two contexts on the same
     * device of one host share and two devices of a host do not (CUDA: "pci " and its PCI bus id). Before joining
     * device collectives the core compares the ranks' keys and host names: NCCL refuses two ranks on one GPU, so
     * such ranks sum through host memory instead (explora/comm.h). Returns 0, or -1 when the device cannot be
     * named (that rank is left out of the comparison). NULL: nothing to compare (cpu). */
    int (*device_key)(void *ctx, char *key, size_t cap);
} ex_backend_vtable;

/* A live backend: the vtable (copied into a zeroed struct of the core's size)
 * and the context its init returned. */
typedef struct ex_backend {
    char name[64];
    ex_backend_vtable vt;
    void *ctx;
} ex_backend;

/* Start a backend from a loaded plugin of kind "backend" (calls its init with `cfg`,
 * which may be NULL for all defaults). */
struct ex_plugin;
EX_API ex_status ex_backend_create(ex_backend *be, const struct ex_plugin *plugin, const ex_cfg_section *cfg,
                                   ex_err *err);
EX_API void ex_backend_destroy(ex_backend *be);

/* Names of mandatory slots missing from `vt`, comma-separated into buf; returns
 * the count (0 = complete). Used by the plugin loader. */
EX_API int ex_backend_vtable_missing(const ex_backend_vtable *vt, size_t known_size, char *buf, size_t cap);

/* Checked helpers: EX_E_UNSUPPORTED naming the backend and op when the slot is NULL. */
EX_API ex_status ex_be_alloc(ex_backend *be, size_t bytes, void **ptr, ex_err *err);
EX_API void ex_be_free(ex_backend *be, void *ptr);
EX_API ex_status ex_be_upload(ex_backend *be, void *dst, const void *host, size_t bytes, ex_err *err);
EX_API ex_status ex_be_download(ex_backend *be, void *host, const void *src, size_t bytes, ex_err *err);
/* fp32 host values into / out of a device buffer stored as `dtype` (EX_F32, EX_BF16 or EX_F16), from
 * element `offset` on: converted on the host (round to nearest even), then one copy. */
EX_API ex_status ex_be_upload_as(ex_backend *be, void *dst, ex_dtype dtype, int64_t offset, const float *host,
                                 int64_t n, ex_err *err);
EX_API ex_status ex_be_download_as(ex_backend *be, float *host, const void *src, ex_dtype dtype, int64_t offset,
                                   int64_t n, ex_err *err);
EX_API ex_status ex_be_gemm(ex_backend *be, const ex_gemm_desc *d, ex_err *err);
/* Elements an operand of d occupies, from its first to the last one the product reads (which: 0 = A,
 * 1 = B; strides and leading dimensions kept). 0 when k = 0 or alpha = 0 (nothing is read). */
EX_API int64_t ex_gemm_span(const ex_gemm_desc *d, int which);
/* Split d into two GEMMs that together compute it and each read about half of operand `which`, for a
 * backend that copies operands (rounding to bf16) into bounded scratch: along the batch when batch > 1,
 * else along the operand's stored rows (m or n of C, or k, the second half then accumulating with
 * beta = 1). Returns 1 with out[0], out[1] to run in order, 0 when that operand cannot shrink (one row). */
EX_API int ex_gemm_halve(const ex_gemm_desc *d, int which, ex_gemm_desc out[2]);
/* Linear layer: out (n, oc) = inp (n, ic) @ w^T (oc, ic) (+ bias (oc) if non-NULL). The weight is
 * stored as w_dtype: EX_F32, or EX_BF16 for a frozen weight kept in bf16; the input as inp_dtype: EX_F32,
 * or EX_BF16 for an activation a block keeps in bf16 (the GEMM then takes mixed inputs: see the
 * backend's supports_op). */
EX_API ex_status ex_be_linear_fwd(ex_backend *be, float *out, const void *inp, ex_dtype inp_dtype, const void *w,
                                  ex_dtype w_dtype, const float *bias, int64_t n, int64_t ic, int64_t oc, ex_err *err);
/* Its backward: dinp (n, ic) += dout @ w, dw (oc, ic) += dout^T @ inp, dbias (oc) += colsum(dout).
 * Any of dinp, dw, dbias may be NULL (frozen weights get no weight-gradient GEMM); dw needs an fp32 w. */
EX_API ex_status ex_be_linear_bwd(ex_backend *be, float *dinp, float *dw, float *dbias, const float *dout,
                                  const void *inp, ex_dtype inp_dtype, const void *w, ex_dtype w_dtype, int64_t n,
                                  int64_t ic, int64_t oc, ex_err *err);
/* The same, but dinp (n, ic) = dout @ w is written, not accumulated: its old contents are not read (a GEMM
 * with beta = 0), which saves zeroing it first. */
EX_API ex_status ex_be_linear_bwd_write(ex_backend *be, float *dinp, float *dw, float *dbias, const float *dout,
                                        const void *inp, ex_dtype inp_dtype, const void *w, ex_dtype w_dtype,
                                        int64_t n, int64_t ic, int64_t oc, ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_BACKEND_H */
