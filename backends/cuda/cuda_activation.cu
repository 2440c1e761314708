/*
 * backends/cuda/cuda_activation.cu — pointwise ops: GELU (exact erf form) and
 * SiLU forward/backward, the AdamW step and the EMA update. Same formulas and
 * operation order as the CPU reference (backends/cpu/cpu_activation.c,
 * cpu_optim.c); erff/expf/sqrtf are CUDA's accurate versions (no fast math).
 *
 *   gelu(x)  = 0.5 x (1 + erf(x / sqrt 2))
 *   gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x phi(x)
 *   silu(x)  = x / (1 + exp(-x)),   silu'(x) = s (1 + x (1 - s))
 */
#include "cuda_common.cuh"

#define INV_SQRT2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

/* ------------------------------------------------------------------------------
 * Kernels
 * ------------------------------------------------------------------------------ */

/* OutT: float, or cu_bf16 for a block keeping its activations in bf16 (the same value, rounded). */
template <typename OutT>
__global__ void k_gelu_fwd(OutT *out, const float *inp, int64_t n) {
    CU_FOR(i, n) {
        const float x = inp[i];
        cu_store(out + i, 0.5f * x * (1.0f + erff(x * INV_SQRT2)));
    }
}

/* gelu'(x) = cdf + x pdf, shared by both backward forms so that they agree bit for bit. */
__device__ __forceinline__ float cu_gelu_grad(float x) {
    const float cdf = 0.5f * (1.0f + erff(x * INV_SQRT2));
    const float pdf = INV_SQRT_2PI * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

__global__ void k_gelu_bwd(float *dinp, const float *inp, const float *dout, int64_t n) {
    CU_FOR(i, n) {
        dinp[i] += dout[i] * cu_gelu_grad(inp[i]);
    }
}

/* d = d * gelu'(x), the expression of k_gelu_bwd's term */
__global__ void k_gelu_bwd_inplace(float *d, const float *inp, int64_t n) {
    CU_FOR(i, n) {
        d[i] = d[i] * cu_gelu_grad(inp[i]);
    }
}

__global__ void k_silu_fwd(float *out, const float *inp, int64_t n) {
    CU_FOR(i, n) {
        const float x = inp[i];
        out[i] = x / (1.0f + expf(-x));
    }
}

__global__ void k_silu_bwd(float *dinp, const float *inp, const float *dout, int64_t n) {
    CU_FOR(i, n) {
        const float x = inp[i];
        const float s = 1.0f / (1.0f + expf(-x));
        dinp[i] += dout[i] * s * (1.0f + x * (1.0f - s));
    }
}

__global__ void k_adamw(float *p, const float *g, float *m, float *v, int64_t n, float b1, float b2, float omb1,
                        float omb2, float eps, float decay, float step_size, float bc2_sqrt) {
    CU_FOR(i, n) {
        const float gi = g[i];
        const float mi = b1 * m[i] + omb1 * gi;
        const float vi = b2 * v[i] + omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = p[i] * decay - step_size * (mi / denom);
    }
}

__global__ void k_ema(float *teacher, const float *student, float momentum, float a, int64_t n) {
    CU_FOR(i, n) teacher[i] = momentum * teacher[i] + a * student[i];
}

/* ------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------ */

extern "C" {

ex_status cu_gelu_fwd(void *vctx, float *out, const float *inp, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0, CU_VENDOR ": gelu_fwd: negative size");
    if (n == 0) return EX_OK;
    CU_ARG(out && inp, CU_VENDOR ": gelu_fwd: NULL pointer");
    k_gelu_fwd<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(out, inp, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_gelu_fwd_bf16(void *vctx, uint16_t *out, const float *inp, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0, CU_VENDOR ": gelu_fwd_bf16: negative size");
    if (n == 0) return EX_OK;
    CU_ARG(out && inp, CU_VENDOR ": gelu_fwd_bf16: NULL pointer");
    k_gelu_fwd<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>((cu_bf16 *)out, inp, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_gelu_bwd(void *vctx, float *dinp, const float *inp, const float *dout, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0, CU_VENDOR ": gelu_bwd: negative size");
    if (n == 0) return EX_OK;
    CU_ARG(dinp && inp && dout, CU_VENDOR ": gelu_bwd: NULL pointer");
    k_gelu_bwd<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(dinp, inp, dout, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_gelu_bwd_inplace(void *vctx, float *d, const float *inp, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0, CU_VENDOR ": gelu_bwd_inplace: negative size");
    if (n == 0) return EX_OK;
    CU_ARG(d && inp, CU_VENDOR ": gelu_bwd_inplace: NULL pointer");
    k_gelu_bwd_inplace<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(d, inp, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_silu_fwd(void *vctx, float *out, const float *inp, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0, CU_VENDOR ": silu_fwd: negative size");
    if (n == 0) return EX_OK;
    CU_ARG(out && inp, CU_VENDOR ": silu_fwd: NULL pointer");
    k_silu_fwd<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(out, inp, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_silu_bwd(void *vctx, float *dinp, const float *inp, const float *dout, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0, CU_VENDOR ": silu_bwd: negative size");
    if (n == 0) return EX_OK;
    CU_ARG(dinp && inp && dout, CU_VENDOR ": silu_bwd: NULL pointer");
    k_silu_bwd<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(dinp, inp, dout, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_adamw(void *vctx, float *p, const float *g, float *m, float *v, int64_t n, const ex_adamw_params *h) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(h && n >= 0, CU_VENDOR ": adamw: bad arguments");
    CU_ARG(h->step >= 1, CU_VENDOR ": adamw: step must be >= 1 (got %lld)", (long long)h->step);
    if (n == 0) return EX_OK;
    CU_ARG(p && g && m && v, CU_VENDOR ": adamw: NULL pointer");
    /* bias corrections once per call in double, exactly as the CPU backend */
    const double bc1 = 1.0 - pow((double)h->beta1, (double)h->step);
    const double bc2 = 1.0 - pow((double)h->beta2, (double)h->step);
    const float decay = (float)(1.0 - (double)h->lr * (double)h->weight_decay);
    const float step_size = (float)((double)h->lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    k_adamw<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(p, g, m, v, n, h->beta1, h->beta2, 1.0f - h->beta1,
                                                           1.0f - h->beta2, h->eps, decay, step_size, bc2_sqrt);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_ema(void *vctx, float *teacher, const float *student, float momentum, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0, CU_VENDOR ": ema: negative size");
    if (n == 0) return EX_OK;
    CU_ARG(teacher && student, CU_VENDOR ": ema: NULL pointer");
    k_ema<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(teacher, student, momentum, 1.0f - momentum, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

} /* extern "C" */
