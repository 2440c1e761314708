/*
 * backends/cpu/cpu_attention.c — fused multi-head self-attention, forward and backward.
 *
 * Layout (timm): qkv (b, t, 3, nh, hs); head h of token i has q at
 * qkv[(bi*t + i)*3C + h*hs], k at +C, v at +2C, with C = nh*hs and row stride 3C.
 * out (b, t, C) holds the heads concatenated; lse (b, nh, t) the log-sum-exp of
 * each scaled score row.
 *
 * Forward: one task per (batch, head, block of CPU_ATT_BLOCK query rows). The
 * task computes the block's scores S = scale * Q K^T (rows x t) in per-thread
 * scratch with cblas_sgemm, turns them into probabilities in place (two-pass
 * softmax: max, then exp and sum), writes lse, and multiplies P V straight into
 * out. No (t, t) matrix exists beyond one block.
 *
 * Backward (flash-attention style, probabilities recomputed from lse): one
 * task per (batch, head) walks its query blocks in order:
 *   P  = exp(scale * Q K^T - lse)        dP = dO V^T
 *   D  = rowsum(dO * O)                  dS = P * (dP - D)
 *   dQ += scale * dS K     dK += scale * dS^T Q     dV += P^T dO
 * accumulating into dqkv with beta = 1 GEMMs. Each (batch, head) slice of dqkv
 * is written by one task only, in block order, so results do not depend on the
 * thread count.
 *
 * bf16 storage (attention_fwd_bf16 / attention_bwd_bf16, a block keeping its
 * activations in bf16): one image at a time, its qkv rows are widened exactly
 * into scratch and the fp32 code above runs on them; the forward rounds its
 * output to bf16. The backward writes dqkv (zeroed per image, then the same
 * accumulation) and takes D_i = sum_j P_ij dP_ij from the block's
 * probabilities rather than dO . O: the stored O is rounded, and D from it would
 * not be the gradient at the stored qkv. So the bf16 forward is the fp32
 * forward of the widened qkv, rounded, and the bf16 backward is the exact
 * gradient there (tests/test_backend_ops.c checks both).
 */
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include <cblas.h>

#include "cpu_internal.h"

static ex_status check_args(int64_t b, int64_t t, int64_t nh, int64_t hs) {
    CPU_ARG(b >= 0 && t >= 0 && nh >= 0 && hs >= 0, "cpu: attention: negative size");
    CPU_ARG(t <= INT_MAX && nh * hs <= INT_MAX / 3, "cpu: attention: sizes beyond the BLAS int range");
    return EX_OK;
}

ex_status cpu_attention_fwd(void *vctx, float *out /* (b, t, nh*hs) */, float *lse /* (b, nh, t) */,
                            const float *qkv /* (b, t, 3, nh, hs) */, int64_t b, int64_t t, int64_t nh,
                            int64_t hs, float scale) {
    cpu_ctx *ctx = vctx;
    EX_CHECK(check_args(b, t, nh, hs));
    if (b == 0 || t == 0 || nh == 0) return EX_OK;
    CPU_ARG(out && lse && qkv, "cpu: attention_fwd: NULL pointer");
    const int64_t C = nh * hs, ld = 3 * C;
    const int64_t nqb = (t + CPU_ATT_BLOCK - 1) / CPU_ATT_BLOCK, ntask = b * nh * nqb;
    float *scratch = NULL;
    EX_CHECK(cpu_attn_scratch(ctx, (size_t)(CPU_ATT_BLOCK * t), &scratch));
    cpu_set_blas_threads(ctx);
    const size_t slot = ctx->attn_slot;
    const double work = (double)(b * nh) * (double)t * (double)t * (double)(hs > 0 ? hs : 1);
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (ntask > 1 && work > (double)CPU_PAR_MIN)
    for (int64_t task = 0; task < ntask; task++) {
        const int64_t bi = task / (nh * nqb), h = (task / nqb) % nh, qb = task % nqb;
        const int64_t i0 = qb * CPU_ATT_BLOCK, rows = t - i0 < CPU_ATT_BLOCK ? t - i0 : CPU_ATT_BLOCK;
        float *S = scratch + (size_t)omp_get_thread_num() * slot; /* (rows, t) */
        const float *q = qkv + (bi * t + i0) * ld + h * hs;
        const float *k = qkv + bi * t * ld + C + h * hs;
        const float *v = k + C;
        float *l = lse + (bi * nh + h) * t + i0;
        if (hs > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)t, (blasint)hs, scale, q,
                        (blasint)ld, k, (blasint)ld, 0.0f, S, (blasint)t);
        else
            for (int64_t j = 0; j < rows * t; j++) S[j] = 0.0f;
        for (int64_t r = 0; r < rows; r++) {
            float *s = S + r * t;
            float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
            for (int64_t j = 0; j < t; j++) mx = s[j] > mx ? s[j] : mx;
            double sum = 0.0;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < t; j++) {
                const float e = cpu_expf(s[j] - mx);
                s[j] = e;
                sum += e;
            }
            const float inv = (float)(1.0 / sum);
            for (int64_t j = 0; j < t; j++) s[j] *= inv;
            l[r] = mx + (float)log(sum);
        }
        if (hs > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)rows, (blasint)hs, (blasint)t, 1.0f, S,
                        (blasint)t, v, (blasint)ld, 0.0f, out + (bi * t + i0) * C + h * hs, (blasint)C);
    }
    return EX_OK;
}

/* The backward; out NULL: D_i = sum_j P_ij dP_ij from the probabilities (the bf16 path), else dO . O. */
static ex_status attention_bwd(cpu_ctx *ctx, float *dqkv /* (b, t, 3, nh, hs) */, const float *dout /* (b, t, nh*hs) */,
                               const float *out /* (b, t, nh*hs) or NULL */, const float *lse /* (b, nh, t) */,
                               const float *qkv /* (b, t, 3, nh, hs) */, int64_t b, int64_t t, int64_t nh, int64_t hs,
                               float scale) {
    const int64_t C = nh * hs, ld = 3 * C;
    const int64_t nqb = (t + CPU_ATT_BLOCK - 1) / CPU_ATT_BLOCK, ntask = b * nh;
    float *scratch = NULL;
    EX_CHECK(cpu_attn_scratch(ctx, (size_t)(2 * CPU_ATT_BLOCK * t + CPU_ATT_BLOCK), &scratch));
    cpu_set_blas_threads(ctx);
    const size_t slot = ctx->attn_slot;
    const double work = (double)(b * nh) * (double)t * (double)t * (double)hs;
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (ntask > 1 && work > (double)CPU_PAR_MIN)
    for (int64_t task = 0; task < ntask; task++) {
        const int64_t bi = task / nh, h = task % nh;
        float *P = scratch + (size_t)omp_get_thread_num() * slot; /* (rows, t) */
        float *dS = P + CPU_ATT_BLOCK * t;                        /* (rows, t) */
        float *D = dS + CPU_ATT_BLOCK * t;                        /* (rows) */
        const float *k = qkv + bi * t * ld + C + h * hs, *v = k + C;
        float *dk = dqkv + bi * t * ld + C + h * hs, *dv = dk + C;
        for (int64_t qb = 0; qb < nqb; qb++) {
            const int64_t i0 = qb * CPU_ATT_BLOCK, rows = t - i0 < CPU_ATT_BLOCK ? t - i0 : CPU_ATT_BLOCK;
            const float *q = qkv + (bi * t + i0) * ld + h * hs;
            const float *o = out ? out + (bi * t + i0) * C + h * hs : NULL, *dO = dout + (bi * t + i0) * C + h * hs;
            const float *l = lse + (bi * nh + h) * t + i0;
            float *dq = dqkv + (bi * t + i0) * ld + h * hs;
            /* P = exp(scale q k^T - lse) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)t, (blasint)hs, scale, q,
                        (blasint)ld, k, (blasint)ld, 0.0f, P, (blasint)t);
            for (int64_t r = 0; r < rows; r++) {
                float *p = P + r * t;
                const float lr = l[r];
#pragma omp simd
                for (int64_t j = 0; j < t; j++) p[j] = cpu_expf(p[j] - lr);
                if (!out) continue;
                double dsum = 0.0;
#pragma omp simd reduction(+ : dsum)
                for (int64_t d = 0; d < hs; d++) dsum += (double)dO[r * C + d] * (double)o[r * C + d];
                D[r] = (float)dsum;
            }
            /* dP = dO v^T, then dS = P * (dP - D) in place */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)t, (blasint)hs, 1.0f, dO,
                        (blasint)C, v, (blasint)ld, 0.0f, dS, (blasint)t);
            if (!out)
                for (int64_t r = 0; r < rows; r++) {
                    const float *p = P + r * t, *dp = dS + r * t;
                    double dsum = 0.0;
#pragma omp simd reduction(+ : dsum)
                    for (int64_t j = 0; j < t; j++) dsum += (double)p[j] * (double)dp[j];
                    D[r] = (float)dsum;
                }
            for (int64_t r = 0; r < rows; r++) {
                const float *p = P + r * t;
                float *ds = dS + r * t;
                const float dr = D[r];
                for (int64_t j = 0; j < t; j++) ds[j] = p[j] * (ds[j] - dr);
            }
            /* dq += scale dS k;  dk += scale dS^T q;  dv += P^T dO */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)rows, (blasint)hs, (blasint)t, scale, dS,
                        (blasint)t, k, (blasint)ld, 1.0f, dq, (blasint)ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)t, (blasint)hs, (blasint)rows, scale, dS,
                        (blasint)t, q, (blasint)ld, 1.0f, dk, (blasint)ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)t, (blasint)hs, (blasint)rows, 1.0f, P,
                        (blasint)t, dO, (blasint)C, 1.0f, dv, (blasint)ld);
        }
    }
    return EX_OK;
}

ex_status cpu_attention_bwd(void *vctx, float *dqkv /* (b, t, 3, nh, hs) */, const float *dout /* (b, t, nh*hs) */,
                            const float *out /* (b, t, nh*hs) */, const float *lse /* (b, nh, t) */,
                            const float *qkv /* (b, t, 3, nh, hs) */, int64_t b, int64_t t, int64_t nh,
                            int64_t hs, float scale) {
    EX_CHECK(check_args(b, t, nh, hs));
    if (b == 0 || t == 0 || nh == 0 || hs == 0) return EX_OK;
    CPU_ARG(dqkv && dout && out && lse && qkv, "cpu: attention_bwd: NULL pointer");
    return attention_bwd(vctx, dqkv, dout, out, lse, qkv, b, t, nh, hs, scale);
}

/* ------------------------------------------------------------------------------
 * bf16 storage
 * ------------------------------------------------------------------------------ */

ex_status cpu_to_bf16(void *vctx, uint16_t *out /* (n) bf16 */, const float *inp /* (n) */, int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0, "cpu: to_bf16: negative size");
    if (n == 0) return EX_OK;
    CPU_ARG(out && inp, "cpu: to_bf16: NULL pointer");
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n > CPU_PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = cpu_to_bf16_bits(inp[i]);
    return EX_OK;
}

static void widen(const cpu_ctx *ctx, float *dst, const uint16_t *src, int64_t n) {
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n > CPU_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dst[i] = cpu_from_bf16_bits(src[i]);
}

ex_status cpu_attention_fwd_bf16(void *vctx, uint16_t *out /* (b, t, nh*hs) bf16 */, float *lse /* (b, nh, t) */,
                                 const uint16_t *qkv /* (b, t, 3, nh, hs) bf16 */, int64_t b, int64_t t, int64_t nh,
                                 int64_t hs, float scale) {
    cpu_ctx *ctx = vctx;
    EX_CHECK(check_args(b, t, nh, hs));
    if (b == 0 || t == 0 || nh == 0) return EX_OK;
    CPU_ARG(out && lse && qkv, "cpu: attention_fwd_bf16: NULL pointer");
    const int64_t C = nh * hs, nq = t * 3 * C, no = t * C;
    void *buf = NULL;
    EX_CHECK(cpu_scratch(ctx, sizeof(float) * (size_t)(nq + no), &buf));
    float *q32 = buf, *o32 = q32 + nq; /* one image: (t, 3, nh, hs) and (t, nh*hs) */
    for (int64_t bi = 0; bi < b; bi++) {
        widen(ctx, q32, qkv + bi * nq, nq);
        EX_CHECK(cpu_attention_fwd(ctx, o32, lse + bi * nh * t, q32, 1, t, nh, hs, scale));
        EX_CHECK(cpu_to_bf16(ctx, out + bi * no, o32, no));
    }
    return EX_OK;
}

ex_status cpu_attention_bwd_bf16(void *vctx, float *dqkv /* (b, t, 3, nh, hs) */,
                                 const float *dout /* (b, t, nh*hs) */, const uint16_t *out /* (b, t, nh*hs) bf16 */,
                                 const float *lse /* (b, nh, t) */, const uint16_t *qkv /* (b, t, 3, nh, hs) bf16 */,
                                 int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    cpu_ctx *ctx = vctx;
    EX_CHECK(check_args(b, t, nh, hs));
    if (b == 0 || t == 0 || nh == 0 || hs == 0) return EX_OK;
    CPU_ARG(dqkv && dout && out && lse && qkv, "cpu: attention_bwd_bf16: NULL pointer");
    const int64_t C = nh * hs, nq = t * 3 * C, no = t * C;
    void *buf = NULL;
    EX_CHECK(cpu_scratch(ctx, sizeof(float) * (size_t)nq, &buf));
    float *q32 = buf;
    for (int64_t bi = 0; bi < b; bi++) {
        widen(ctx, q32, qkv + bi * nq, nq);
        memset(dqkv + bi * nq, 0, sizeof(float) * (size_t)nq); /* written, not accumulated */
        EX_CHECK(attention_bwd(ctx, dqkv + bi * nq, dout + bi * no, NULL, lse + bi * nh * t, q32, 1, t, nh, hs,
                               scale));
    }
    return EX_OK;
}
