/*
 * backends/cpu/cpu_internal.h — shared declarations of the fp32 CPU backend.
 *
 * The backend is split into one file per family of ops; this header holds the
 * context every op receives, the helpers they share and the prototypes of the
 * op functions that cpu_backend.c puts into the vtable.
 *
 * Determinism rule: no result may depend on the number of threads. Work is
 * split across threads only along dimensions whose elements are computed
 * independently (rows, column blocks, (batch, head) pairs); every reduction is
 * done by one thread in a fixed order, or over fixed chunks whose boundaries
 * depend only on the sizes, combined in index order. No float atomics.
 * Within one thread, `omp simd` reductions use a lane order fixed at compile
 * time; OpenBLAS splits a GEMM over rows/columns of C, never over k.
 */
#ifndef EXPLORA_CPU_INTERNAL_H
#define EXPLORA_CPU_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "explora/backend.h"

/* The backend context (one per ex_backend). Not safe for concurrent calls
 * from several caller threads: ops share the scratch buffers. */
typedef struct cpu_ctx {
    int threads;            /* OpenMP threads used by every op (and OpenBLAS) */
    /* Attention scratch: `threads` slots of attn_slot floats each, grown only
     * when a larger size is needed. */
    float *attn_scratch;
    size_t attn_slot;
    /* General scratch (permutation sort keys), grown only when needed. */
    void *scratch;
    size_t scratch_bytes;
} cpu_ctx;

/* Loops with fewer elements (or multiply-adds) than this run on one thread:
 * starting a team costs more than it saves. Affects speed only, never results. */
#define CPU_PAR_MIN ((int64_t)32768)

/* Width of the column blocks used for column sums (bias, LayerNorm weights,
 * LayerScale, mask token): each block is summed over all rows by one thread. */
#define CPU_COL_BLOCK ((int64_t)64)

/* Query rows per attention block. */
#define CPU_ATT_BLOCK ((int64_t)64)

/* Validation shorthand: ops receive no ex_err, so the message only documents
 * the condition; the status code is what the caller sees. */
#define CPU_ARG(cond, ...) EX_ENSURE((cond), NULL, EX_E_INVALID, __VA_ARGS__)

/* Branch-free select c ? a : b on the bits, so that the compiler can vectorise
 * loops around it (with the default -ftrapping-math it will not if-convert
 * floating-point conditionals). */
static inline float cpu_selectf(int c, float a, float b) {
    union {
        float f;
        uint32_t u;
    } ua = {a}, ub = {b}, r;
    const uint32_t m = (uint32_t)0 - (uint32_t)(c != 0);
    r.u = (ua.u & m) | (ub.u & ~m);
    return r.f;
}

/* bf16 bits <-> float, inlined for the loops that store or read bf16 activations: the same bits as
 * ex_f32_to_bf16 / ex_bf16_to_f32 (round to nearest even; a NaN stays a quiet NaN), without a call per
 * element into the core library. */
static inline uint16_t cpu_to_bf16_bits(float f) {
    union {
        float f;
        uint32_t u;
    } v = {f};
    if ((v.u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((v.u >> 16) | 0x40u);
    return (uint16_t)((v.u + 0x7FFFu + ((v.u >> 16) & 1u)) >> 16);
}
static inline float cpu_from_bf16_bits(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)h << 16};
    return v.f;
}

/* exp(x) for the softmax-style uses (attention, softmax, cross-entropy), written
 * so that loops over it vectorise (libm's expf is an opaque call). Range
 * reduction x = n ln2 + r (Cody-Waite, two-part ln2), |r| <= ln2/2, Cephes'
 * degree-6 polynomial for exp(r), 2^n put into the exponent bits. Relative
 * error <= 8.4e-8 on [-87, 88] (checked against every float there). Below -87
 * it returns 0 (the true value is under 1.7e-38); above 88 it returns +inf
 * (callers pass arguments <= 0 after subtracting a row maximum); NaN propagates. */
static inline float cpu_expf(float x) {
    float xc = cpu_selectf(x < -87.0f, -87.0f, x); /* NaN passes through */
    xc = cpu_selectf(xc > 88.0f, 88.0f, xc);
    /* n = round(x / ln2) by the 1.5*2^23 trick: the integer lands in the low mantissa bits */
    const float shifter = 12582912.0f;
    const float t = xc * 1.44269504088896341f + shifter;
    const float n = t - shifter;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    union {
        float f;
        uint32_t u;
    } tb = {t}, scale;
    scale.u = (tb.u - 0x4B400000u + 127u) << 23; /* 2^n, n in [-126, 127] */
    float e = y * scale.f;
    e = cpu_selectf(x < -87.0f, 0.0f, e);
    return cpu_selectf(x > 88.0f, (float)INFINITY, e);
}

/* Make the calling thread's OpenMP/OpenBLAS thread count equal ctx->threads
 * before a top-level cblas call (OpenBLAS's OpenMP build follows the calling
 * thread's omp_get_max_threads()). */
void cpu_set_blas_threads(const cpu_ctx *ctx);

/* General scratch of at least `bytes` bytes (grown, never shrunk). */
ex_status cpu_scratch(cpu_ctx *ctx, size_t bytes, void **out);

/* Attention scratch: `floats` per thread; *base points at slot 0, slot i at
 * *base + i * ctx->attn_slot. */
ex_status cpu_attn_scratch(cpu_ctx *ctx, size_t floats, float **base);

/* --- lifecycle and memory (cpu_backend.c) ---------------------------------------- */
ex_status cpu_init(const ex_cfg_section *cfg, void **ctx, ex_err *err);
void cpu_shutdown(void *ctx);
ex_status cpu_device_info(void *ctx, ex_device_info *out);
int cpu_supports_op(void *ctx, ex_op op, ex_dtype dtype);
ex_status cpu_alloc(void *ctx, size_t bytes, void **ptr, ex_err *err);
void cpu_free(void *ctx, void *ptr);
ex_status cpu_copy(void *ctx, void *dst, const void *src, size_t bytes, ex_copy_kind kind);
ex_status cpu_fill(void *ctx, float *dst, float value, int64_t n);
ex_status cpu_synchronize(void *ctx);

/* --- cpu_gemm.c ---------------------------------------------------------------- */
ex_status cpu_gemm(void *ctx, const ex_gemm_desc *d);

/* --- cpu_elementwise.c ------------------------------------------------------------ */
ex_status cpu_bias_add_fwd(void *ctx, float *out, const float *bias, int64_t n, int64_t c);
ex_status cpu_bias_add_bwd(void *ctx, float *dbias, const float *dout, int64_t n, int64_t c);
ex_status cpu_binary(void *ctx, ex_binary_op op, float *out, const float *a, const float *b, int64_t n);
ex_status cpu_axpby(void *ctx, float *y, float alpha, const float *x, float beta, int64_t n);
ex_status cpu_channel_scale_fwd(void *ctx, float *out, const float *inp, const float *gamma, int64_t n,
                                int64_t c);
ex_status cpu_channel_scale_bwd(void *ctx, float *dinp, float *dgamma, const float *dout, const float *inp,
                                const float *gamma, int64_t n, int64_t c);
ex_status cpu_row_scale_fwd(void *ctx, float *out, const float *inp, const float *s, int64_t n, int64_t c);
ex_status cpu_row_scale_bwd(void *ctx, float *dinp, float *ds, const float *dout, const float *inp,
                            const float *s, int64_t n, int64_t c);
ex_status cpu_reduce(void *ctx, ex_reduce_op op, float *out, const float *inp, int64_t n);
ex_status cpu_exp_fwd(void *ctx, float *out, const float *inp, float scale, int64_t n);
ex_status cpu_residual_fwd(void *ctx, float *out, const float *resid, const float *branch, const float *ls,
                           const float *drop, int64_t b, int64_t t, int64_t c);
ex_status cpu_residual_bwd(void *ctx, float *dbranch, float *dls, const float *dres, const float *branch,
                           const float *ls, const float *drop, int64_t b, int64_t t, int64_t c);
ex_status cpu_row_sum(void *ctx, float *out, const float *inp, int64_t n, int64_t c);

/* --- cpu_norm.c ------------------------------------------------------------------ */
ex_status cpu_layernorm_fwd(void *ctx, float *out, float *mean, float *rstd, const float *inp,
                            const float *w, const float *b, int64_t n, int64_t c, float eps);
ex_status cpu_layernorm_fwd_bf16(void *ctx, uint16_t *out, float *mean, float *rstd, const float *inp,
                                 const float *w, const float *b, int64_t n, int64_t c, float eps);
ex_status cpu_layernorm_bwd(void *ctx, float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, const float *mean, const float *rstd,
                            int64_t n, int64_t c);
ex_status cpu_softmax_fwd(void *ctx, float *out, const float *inp, int64_t n, int64_t c, float scale);
ex_status cpu_softmax_bwd(void *ctx, float *dinp, const float *out, const float *dout, int64_t n, int64_t c,
                          float scale);

/* --- cpu_activation.c -------------------------------------------------------------- */
ex_status cpu_gelu_fwd(void *ctx, float *out, const float *inp, int64_t n);
ex_status cpu_gelu_fwd_bf16(void *ctx, uint16_t *out, const float *inp, int64_t n);
ex_status cpu_gelu_bwd_inplace(void *ctx, float *d, const float *inp, int64_t n);
ex_status cpu_gelu_bwd(void *ctx, float *dinp, const float *inp, const float *dout, int64_t n);
ex_status cpu_silu_fwd(void *ctx, float *out, const float *inp, int64_t n);
ex_status cpu_silu_bwd(void *ctx, float *dinp, const float *inp, const float *dout, int64_t n);

/* --- cpu_attention.c ---------------------------------------------------------------- */
ex_status cpu_attention_fwd(void *ctx, float *out, float *lse, const float *qkv, int64_t b, int64_t t,
                            int64_t nh, int64_t hs, float scale);
ex_status cpu_attention_bwd(void *ctx, float *dqkv, const float *dout, const float *out, const float *lse,
                            const float *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale);
ex_status cpu_to_bf16(void *ctx, uint16_t *out, const float *inp, int64_t n);
ex_status cpu_attention_fwd_bf16(void *ctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b, int64_t t,
                                 int64_t nh, int64_t hs, float scale);
ex_status cpu_attention_bwd_bf16(void *ctx, float *dqkv, const float *dout, const uint16_t *out, const float *lse,
                                 const uint16_t *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale);

/* --- cpu_gather.c ------------------------------------------------------------------- */
ex_status cpu_gather_rows(void *ctx, float *out, const float *inp, const int32_t *idx, int64_t b, int64_t m,
                          int64_t t, int64_t c);
ex_status cpu_scatter_add_rows(void *ctx, float *dinp, const float *dout, const int32_t *idx, int64_t b,
                               int64_t m, int64_t t, int64_t c);
ex_status cpu_mask_rows_fwd(void *ctx, float *out, const float *inp, const uint8_t *mask, const float *token,
                            int64_t n, int64_t c);
ex_status cpu_mask_rows_bwd(void *ctx, float *dinp, float *dtoken, const float *dout, const uint8_t *mask,
                            int64_t n, int64_t c);
ex_status cpu_patchify_fwd(void *ctx, float *out, const float *img, int64_t b, int64_t ch, int64_t h,
                           int64_t w, int64_t p, ex_patch_order order);
ex_status cpu_patchify_bwd(void *ctx, float *dimg, const float *dout, int64_t b, int64_t ch, int64_t h,
                           int64_t w, int64_t p, ex_patch_order order);
ex_status cpu_copy2d(void *ctx, float *dst, int64_t dst_ld, const float *src, int64_t src_ld, int64_t rows,
                     int64_t cols);

/* --- cpu_loss.c --------------------------------------------------------------------- */
ex_status cpu_xent_fwd(void *ctx, float *losses, float *probs, const float *logits, const int32_t *labels,
                       const float *targets, int64_t n, int64_t v);
ex_status cpu_xent_bwd(void *ctx, float *dlogits, const float *dlosses, const float *probs,
                       const int32_t *labels, const float *targets, int64_t n, int64_t v);
ex_status cpu_l2norm_fwd(void *ctx, float *out, float *norms, const float *inp, int64_t n, int64_t c,
                         float eps);
ex_status cpu_l2norm_bwd(void *ctx, float *dinp, const float *dout, const float *inp, const float *norms,
                         int64_t n, int64_t c, float eps);

/* --- cpu_optim.c -------------------------------------------------------------------- */
ex_status cpu_adamw(void *ctx, float *p, const float *g, float *m, float *v, int64_t n,
                    const ex_adamw_params *h);
ex_status cpu_ema(void *ctx, float *teacher, const float *student, float momentum, int64_t n);

/* --- cpu_rng.c ---------------------------------------------------------------------- */
ex_status cpu_rng_uniform(void *ctx, float *out, int64_t n, float lo, float hi, ex_rng *rng);
ex_status cpu_rng_normal(void *ctx, float *out, int64_t n, float mean, float std, ex_rng *rng);
ex_status cpu_rng_permutation(void *ctx, int32_t *out, int64_t n, ex_rng *rng);
ex_status cpu_rng_dropout(void *ctx, float *out, int64_t n, float p, ex_rng *rng);

#endif /* EXPLORA_CPU_INTERNAL_H */
