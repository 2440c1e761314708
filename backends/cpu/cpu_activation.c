/*
 * backends/cpu/cpu_activation.c — GELU (exact erf form) and SiLU, forward and backward.
 *
 *   gelu(x)  = 0.5 x (1 + erf(x / sqrt 2))
 *   gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
 *   silu(x)  = x s(x),  s = sigmoid
 *   silu'(x) = s(x) (1 + x (1 - s(x)))
 */
#include <math.h>

#include "cpu_internal.h"

#define PAR(work) num_threads(ctx->threads) schedule(static) if ((work) > CPU_PAR_MIN / 8)

#define INV_SQRT2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

ex_status cpu_gelu_fwd(void *vctx, float *out /* (n) */, const float *inp /* (n) */, int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0, "cpu: gelu_fwd: negative size");
    if (n == 0) return EX_OK;
    CPU_ARG(out && inp, "cpu: gelu_fwd: NULL pointer");
#pragma omp parallel for PAR(n)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erff(x * INV_SQRT2));
    }
    return EX_OK;
}

/* As cpu_gelu_fwd, each value rounded to bf16 (nearest even) as it is written. */
ex_status cpu_gelu_fwd_bf16(void *vctx, uint16_t *out /* (n) bf16 */, const float *inp /* (n) */, int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0, "cpu: gelu_fwd_bf16: negative size");
    if (n == 0) return EX_OK;
    CPU_ARG(out && inp, "cpu: gelu_fwd_bf16: NULL pointer");
#pragma omp parallel for PAR(n)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = cpu_to_bf16_bits(0.5f * x * (1.0f + erff(x * INV_SQRT2)));
    }
    return EX_OK;
}

/* gelu'(x) = cdf + x pdf, shared by both backward forms so that they agree bit for bit. */
static inline float gelu_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * INV_SQRT2));
    float pdf = INV_SQRT_2PI * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

/* d = d * gelu'(x): the same expression as cpu_gelu_bwd's term, so the result equals gelu_bwd into zeros. */
ex_status cpu_gelu_bwd_inplace(void *vctx, float *d /* (n) */, const float *inp /* (n) */, int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0, "cpu: gelu_bwd_inplace: negative size");
    if (n == 0) return EX_OK;
    CPU_ARG(d && inp, "cpu: gelu_bwd_inplace: NULL pointer");
#pragma omp parallel for PAR(n)
    for (int64_t i = 0; i < n; i++) {
        d[i] = d[i] * gelu_grad(inp[i]);
    }
    return EX_OK;
}

ex_status cpu_gelu_bwd(void *vctx, float *dinp /* (n) */, const float *inp /* (n) */, const float *dout /* (n) */,
                       int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0, "cpu: gelu_bwd: negative size");
    if (n == 0) return EX_OK;
    CPU_ARG(dinp && inp && dout, "cpu: gelu_bwd: NULL pointer");
#pragma omp parallel for PAR(n)
    for (int64_t i = 0; i < n; i++) {
        dinp[i] += dout[i] * gelu_grad(inp[i]);
    }
    return EX_OK;
}

ex_status cpu_silu_fwd(void *vctx, float *out /* (n) */, const float *inp /* (n) */, int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0, "cpu: silu_fwd: negative size");
    if (n == 0) return EX_OK;
    CPU_ARG(out && inp, "cpu: silu_fwd: NULL pointer");
#pragma omp parallel for PAR(n)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = x / (1.0f + expf(-x));
    }
    return EX_OK;
}

ex_status cpu_silu_bwd(void *vctx, float *dinp /* (n) */, const float *inp /* (n) */, const float *dout /* (n) */,
                       int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0, "cpu: silu_bwd: negative size");
    if (n == 0) return EX_OK;
    CPU_ARG(dinp && inp && dout, "cpu: silu_bwd: NULL pointer");
#pragma omp parallel for PAR(n)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float s = 1.0f / (1.0f + expf(-x));
        dinp[i] += dout[i] * s * (1.0f + x * (1.0f - s));
    }
    return EX_OK;
}
