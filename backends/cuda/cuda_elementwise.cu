/*
 * backends/cuda/cuda_elementwise.cu — fill, matrix scale (GEMM with k = 0 or
 * alpha = 0), bias add, binary, axpby, LayerScale (channel scale), per-row
 * scale, the mask-token backward, column sums and the global reduce.
 *
 * Column sums (bias, LayerScale, LayerNorm weights, mask token) are two
 * kernels: partial sums over fixed chunks of CU_COL_CHUNK rows into scratch
 * (one thread per (chunk, column), rows in order), then one thread per column
 * adding the chunks in order to the output. The global reduce is the same idea
 * in one dimension: a fixed number of partials (depending on n only), each a
 * block sum in fixed order, then one block combining them in order.
 */
#include "cuda_common.cuh"


#define CU_COL_CHUNK ((int64_t)128)
#define CU_RED_PARTIALS ((int64_t)512)
#define CU_RED_CHUNK ((int64_t)16384)

/* ------------------------------------------------------------------------------
 * Kernels
 * ------------------------------------------------------------------------------ */

__global__ void k_fill(float *dst, float value, int64_t n) {
    CU_FOR(i, n) dst[i] = value;
}

__global__ void k_scale_matrix(float *c, int64_t m, int64_t n, int64_t ldc, int64_t stride_c, int64_t batch,
                               float beta) {
    const int64_t total = batch * m * n;
    CU_FOR(e, total) {
        const int64_t bi = e / (m * n), r = (e / n) % m, j = e % n;
        float *p = c + bi * stride_c + r * ldc + j;
        *p = beta == 0.0f ? 0.0f : beta * *p;
    }
}

__global__ void k_to_bf16(cu_bf16 *dst, const float *src, int64_t n) {
    CU_FOR(i, n) dst[i] = cu_float2bf16(src[i]);
}

#ifndef EXPLORA_HIP
__global__ void k_to_f16(__half *dst, const float *src, int64_t n) {
    CU_FOR(i, n) dst[i] = __float2half_rn(src[i]);
}
#endif

/* dst (n) = src (n) widened to fp32, exactly: bf16 bits (bf16 = 1) or IEEE half bits (bf16 = 0). */
/* dst = widen(src), or dst += widen(src) when add */
__global__ void k_widen(float *dst, const uint16_t *src, int64_t n, int bf16, int add) {
    CU_FOR(i, n) {
        const uint32_t h = src[i];
        if (bf16) {
            const float v = __uint_as_float(h << 16);
            dst[i] = add ? dst[i] + v : v;
            continue;
        }
        const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
        float v;
        if (exp == 0x1Fu) v = __uint_as_float(sign | 0x7F800000u | (man << 13)); /* inf, NaN */
        else if (exp != 0) v = __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
        else v = __uint_as_float(sign | __float_as_uint((float)man * (1.0f / 16777216.0f))); /* 0, subnormal */
        dst[i] = add ? dst[i] + v : v;
    }
}

__global__ void k_exp(float *out, const float *inp, float scale, int64_t n) {
    CU_FOR(i, n) out[i] = expf(scale * inp[i]);
}

__global__ void k_bias_add(float *out, const float *bias, int64_t n, int64_t c) {
    CU_FOR(e, n * c) out[e] += bias[e % c];
}

__global__ void k_binary(int op, float *out, const float *a, const float *b, int64_t n) {
    CU_FOR(i, n) {
        const float x = a[i], y = b[i];
        out[i] = op == EX_BIN_ADD ? x + y : op == EX_BIN_SUB ? x - y : op == EX_BIN_MUL ? x * y : x / y;
    }
}

__global__ void k_axpby(float *y, float alpha, const float *x, float beta, int64_t n) {
    CU_FOR(i, n) {
        if (beta == 0.0f)
            y[i] = alpha * x[i];
        else if (beta == 1.0f)
            y[i] = alpha * x[i] + y[i];
        else
            y[i] = alpha * x[i] + beta * y[i];
    }
}

__global__ void k_channel_scale(float *out, const float *inp, const float *gamma, int64_t n, int64_t c) {
    CU_FOR(e, n * c) out[e] = inp[e] * gamma[e % c];
}

/* dinp += dout * gamma */
__global__ void k_channel_scale_dinp(float *dinp, const float *dout, const float *gamma, int64_t n, int64_t c) {
    CU_FOR(e, n * c) dinp[e] += dout[e] * gamma[e % c];
}

__global__ void k_row_scale(float *out, const float *inp, const float *s, int64_t n, int64_t c) {
    CU_FOR(e, n * c) out[e] = inp[e] * s[e / c];
}

__global__ void k_row_scale_dinp(float *dinp, const float *dout, const float *s, int64_t n, int64_t c) {
    CU_FOR(e, n * c) dinp[e] += dout[e] * s[e / c];
}

/* ds[i] += sum_j dout[i,j] inp[i,j], one block per row. */
__global__ void k_row_dot(float *ds, const float *dout, const float *inp, int64_t n, int64_t c) {
    __shared__ double sh[CU_WARP + 1];
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        const float *g = dout + i * c, *x = inp + i * c;
        double acc = 0.0;
        for (int64_t j = threadIdx.x; j < c; j += blockDim.x) acc += (double)g[j] * (double)x[j];
        acc = cu_block_sum_d(acc, sh);
        if (threadIdx.x == 0) ds[i] = (float)((double)ds[i] + acc);
    }
}

/* out = resid + (branch * ls[j]) * drop[image]: separate roundings (no contraction into an FMA), so the CPU's
 * unfused ops give the same bits. t rows per image. */
__global__ void k_residual_fwd(float *out, const float *resid, const float *branch, const float *ls, const float *drop,
                               int64_t n, int64_t c, int64_t t) {
    CU_FOR(e, n * c) {
        float v = branch[e];
        if (ls) v = __fmul_rn(v, ls[e % c]);
        if (drop) v = __fmul_rn(v, drop[e / c / t]);
        out[e] = __fadd_rn(resid[e], v);
    }
}

/* dbranch = (dres * drop[image]) * ls[j], written. */
__global__ void k_residual_dbranch(float *dbranch, const float *dres, const float *ls, const float *drop, int64_t n,
                                   int64_t c, int64_t t) {
    CU_FOR(e, n * c) {
        float v = dres[e];
        if (drop) v = __fmul_rn(v, drop[e / c / t]);
        if (ls) v = __fmul_rn(v, ls[e % c]);
        dbranch[e] = v;
    }
}

/* dinp += dout on rows where !mask */
__global__ void k_mask_rows_dinp(float *dinp, const float *dout, const uint8_t *mask, int64_t n, int64_t c) {
    CU_FOR(e, n * c) {
        if (!mask[e / c]) dinp[e] += dout[e];
    }
}

/* Column-sum partials: part0/part1 (nchunk, c). */
__global__ void k_colsum_partial(int mode, float *part0, float *part1, const float *a, const float *b,
                                 const uint8_t *mask, const float *mean, const float *rstd, int64_t n, int64_t c,
                                 int64_t rows_per_scale) {
    const int64_t nchunk = CU_CEIL_DIV(n, CU_COL_CHUNK);
    CU_FOR(e, nchunk * c) {
        const int64_t ch = e / c, j = e % c;
        const int64_t i0 = ch * CU_COL_CHUNK, i1 = i0 + CU_COL_CHUNK < n ? i0 + CU_COL_CHUNK : n;
        double s0 = 0.0, s1 = 0.0;
        for (int64_t i = i0; i < i1; i++) {
            const float av = a[i * c + j];
            switch (mode) {
            case CU_COLSUM_PLAIN: s0 += av; break;
            case CU_COLSUM_PROD: s0 += (double)av * (double)b[i * c + j]; break;
            case CU_COLSUM_MASKED:
                if (mask[i]) s0 += av;
                break;
            case CU_COLSUM_SCALED_PROD: s0 += (double)__fmul_rn(av, mean[i / rows_per_scale]) * (double)b[i * c + j]; break;
            default: /* CU_COLSUM_LNORM */
                s0 += (double)av * (double)((b[i * c + j] - mean[i]) * rstd[i]);
                s1 += av;
                break;
            }
        }
        part0[e] = (float)s0;
        if (part1) part1[e] = (float)s1;
    }
}

/* acc[j] += sum over chunks of part[ch, j], chunks in order. */
__global__ void k_colsum_final(float *acc0, float *acc1, const float *part0, const float *part1, int64_t nchunk,
                               int64_t c) {
    CU_FOR(j, c) {
        if (acc0) {
            double s = 0.0;
            for (int64_t ch = 0; ch < nchunk; ch++) s += part0[ch * c + j];
            acc0[j] = (float)((double)acc0[j] + s);
        }
        if (acc1) {
            double s = 0.0;
            for (int64_t ch = 0; ch < nchunk; ch++) s += part1[ch * c + j];
            acc1[j] = (float)((double)acc1[j] + s);
        }
    }
}

/* Reduce pass 1: partial p covers [p*chunk, min((p+1)*chunk, n)). One block per partial. */
__global__ void k_reduce_partial(int op, double *part, const float *inp, int64_t n, int64_t chunk) {
    __shared__ double sh[CU_WARP + 1];
    __shared__ float shf[CU_WARP + 1];
    const int64_t i0 = (int64_t)blockIdx.x * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
    if (op == EX_RED_MAX_ABS) {
        float mx = 0.0f;
        for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) mx = cu_nanmax(fabsf(inp[i]), mx);
        mx = cu_block_max(mx, shf);
        if (threadIdx.x == 0) part[blockIdx.x] = mx;
    } else {
        double acc = 0.0;
        for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
            const double x = inp[i];
            acc += op == EX_RED_SUMSQ ? x * x : x;
        }
        acc = cu_block_sum_d(acc, sh);
        if (threadIdx.x == 0) part[blockIdx.x] = acc;
    }
}

/* Reduce pass 2: one thread combines the partials in order. */
__global__ void k_reduce_final(int op, float *out, const double *part, int64_t np, int64_t n) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double r = 0.0;
    if (op == EX_RED_MAX_ABS) {
        for (int64_t p = 0; p < np; p++)
            if (part[p] > r || part[p] != part[p]) r = part[p];
    } else {
        for (int64_t p = 0; p < np; p++) r += part[p];
        if (op == EX_RED_MEAN) r /= (double)n;
    }
    *out = (float)r;
}

/* ------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------ */

extern "C" {

ex_status cu_fill(void *vctx, float *dst, float value, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && (dst || n == 0), CU_VENDOR ": fill: bad arguments");
    if (n == 0) return EX_OK;
    k_fill<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(dst, value, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_exp_fwd(void *vctx, float *out, const float *inp, float scale, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0, CU_VENDOR ": exp_fwd: negative size");
    if (n == 0) return EX_OK;
    CU_ARG(out && inp, CU_VENDOR ": exp_fwd: NULL pointer");
    k_exp<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(out, inp, scale, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_to_narrow(cu_ctx *ctx, void *dst, const float *src, int bf16, int64_t n) {
    if (n <= 0) return EX_OK;
    if (bf16) {
        k_to_bf16<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>((cu_bf16 *)dst, src, n);
    } else {
#ifdef EXPLORA_HIP
        return EX_E_UNSUPPORTED; /* HIP's GEMM is the own fp32 kernel: nothing is rounded to fp16 */
#else
        k_to_f16<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>((__half *)dst, src, n);
#endif
    }
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_widen(cu_ctx *ctx, float *dst, const void *src, int bf16, int64_t n) {
    if (n <= 0) return EX_OK;
    k_widen<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(dst, (const uint16_t *)src, n, bf16, 0);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_widen_add(cu_ctx *ctx, float *dst, const void *src, int bf16, int64_t n) {
    if (n <= 0) return EX_OK;
    k_widen<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(dst, (const uint16_t *)src, n, bf16, 1);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_scale_matrix(cu_ctx *ctx, float *c, int64_t m, int64_t n, int64_t ldc, int64_t stride_c,
                          int64_t batch, float beta) {
    if (beta == 1.0f || m == 0 || n == 0) return EX_OK;
    const int64_t total = batch * m * n;
    k_scale_matrix<<<cu_blocks(total), CU_THREADS, 0, ctx->stream>>>(c, m, n, ldc, stride_c, batch, beta);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

static ex_status colsum(cu_ctx *ctx, cu_colsum_mode mode, float *acc0, float *acc1, const float *a, const float *b,
                        const uint8_t *mask, const float *mean, const float *rstd, int64_t n, int64_t c,
                        int64_t rows_per_scale) {
    if (n == 0 || c == 0 || (!acc0 && !acc1)) return EX_OK;
    const int64_t nchunk = CU_CEIL_DIV(n, CU_COL_CHUNK);
    const int two = mode == CU_COLSUM_LNORM;
    void *scr = NULL;
    EX_CHECK(cu_scratch(ctx, (size_t)(nchunk * c) * sizeof(float) * (size_t)(two ? 2 : 1), &scr));
    float *part0 = (float *)scr, *part1 = two ? part0 + nchunk * c : NULL;
    k_colsum_partial<<<cu_blocks(nchunk * c), CU_THREADS, 0, ctx->stream>>>((int)mode, part0, part1, a, b, mask,
                                                                              mean, rstd, n, c, rows_per_scale);
    CU_LAUNCHED(ctx);
    k_colsum_final<<<cu_blocks(c), CU_THREADS, 0, ctx->stream>>>(acc0, two ? acc1 : NULL, part0, part1, nchunk, c);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_colsum(cu_ctx *ctx, cu_colsum_mode mode, float *acc0, float *acc1, const float *a, const float *b,
                    const uint8_t *mask, const float *mean, const float *rstd, int64_t n, int64_t c) {
    return colsum(ctx, mode, acc0, acc1, a, b, mask, mean, rstd, n, c, 1);
}

ex_status cu_colsum_scaled(cu_ctx *ctx, float *acc0, const float *a, const float *b, const float *scale,
                           int64_t rows_per_scale, int64_t n, int64_t c) {
    return colsum(ctx, CU_COLSUM_SCALED_PROD, acc0, NULL, a, b, NULL, scale, NULL, n, c, rows_per_scale);
}

ex_status cu_bias_add_fwd(void *vctx, float *out, const float *bias, int64_t n, int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 0, CU_VENDOR ": bias_add_fwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CU_ARG(out && bias, CU_VENDOR ": bias_add_fwd: NULL pointer");
    k_bias_add<<<cu_blocks(n * c), CU_THREADS, 0, ctx->stream>>>(out, bias, n, c);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_bias_add_bwd(void *vctx, float *dbias, const float *dout, int64_t n, int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 0, CU_VENDOR ": bias_add_bwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CU_ARG(dbias && dout, CU_VENDOR ": bias_add_bwd: NULL pointer");
    return cu_colsum(ctx, CU_COLSUM_PLAIN, dbias, NULL, dout, NULL, NULL, NULL, NULL, n, c);
}

ex_status cu_binary(void *vctx, ex_binary_op op, float *out, const float *a, const float *b, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0, CU_VENDOR ": binary: negative size");
    CU_ARG(op == EX_BIN_ADD || op == EX_BIN_SUB || op == EX_BIN_MUL || op == EX_BIN_DIV, CU_VENDOR ": binary: unknown op %d",
           (int)op);
    if (n == 0) return EX_OK;
    CU_ARG(out && a && b, CU_VENDOR ": binary: NULL pointer");
    k_binary<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>((int)op, out, a, b, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_axpby(void *vctx, float *y, float alpha, const float *x, float beta, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0, CU_VENDOR ": axpby: negative size");
    if (n == 0) return EX_OK;
    CU_ARG(y && x, CU_VENDOR ": axpby: NULL pointer");
    k_axpby<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(y, alpha, x, beta, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_channel_scale_fwd(void *vctx, float *out, const float *inp, const float *gamma, int64_t n, int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 0, CU_VENDOR ": channel_scale_fwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CU_ARG(out && inp && gamma, CU_VENDOR ": channel_scale_fwd: NULL pointer");
    k_channel_scale<<<cu_blocks(n * c), CU_THREADS, 0, ctx->stream>>>(out, inp, gamma, n, c);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_channel_scale_bwd(void *vctx, float *dinp, float *dgamma, const float *dout, const float *inp,
                               const float *gamma, int64_t n, int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 0, CU_VENDOR ": channel_scale_bwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CU_ARG(dout, CU_VENDOR ": channel_scale_bwd: NULL dout");
    if (dinp) {
        CU_ARG(gamma, CU_VENDOR ": channel_scale_bwd: dinp needs gamma");
        k_channel_scale_dinp<<<cu_blocks(n * c), CU_THREADS, 0, ctx->stream>>>(dinp, dout, gamma, n, c);
        CU_LAUNCHED(ctx);
    }
    if (dgamma) {
        CU_ARG(inp, CU_VENDOR ": channel_scale_bwd: dgamma needs inp");
        EX_CHECK(cu_colsum(ctx, CU_COLSUM_PROD, dgamma, NULL, dout, inp, NULL, NULL, NULL, n, c));
    }
    return EX_OK;
}

ex_status cu_row_scale_fwd(void *vctx, float *out, const float *inp, const float *s, int64_t n, int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 0, CU_VENDOR ": row_scale_fwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CU_ARG(out && inp && s, CU_VENDOR ": row_scale_fwd: NULL pointer");
    k_row_scale<<<cu_blocks(n * c), CU_THREADS, 0, ctx->stream>>>(out, inp, s, n, c);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_row_scale_bwd(void *vctx, float *dinp, float *ds, const float *dout, const float *inp, const float *s,
                           int64_t n, int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 0, CU_VENDOR ": row_scale_bwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CU_ARG(dout, CU_VENDOR ": row_scale_bwd: NULL dout");
    CU_ARG(!dinp || s, CU_VENDOR ": row_scale_bwd: dinp needs s");
    CU_ARG(!ds || inp, CU_VENDOR ": row_scale_bwd: ds needs inp");
    if (ds) { /* before dinp: dinp may not alias inp, but keep the order of the CPU reference anyway */
        k_row_dot<<<(unsigned)(n < CU_MAX_BLOCKS ? n : CU_MAX_BLOCKS), CU_ROW_THREADS, 0, ctx->stream>>>(ds, dout, inp,
                                                                                                       n, c);
        CU_LAUNCHED(ctx);
    }
    if (dinp) {
        k_row_scale_dinp<<<cu_blocks(n * c), CU_THREADS, 0, ctx->stream>>>(dinp, dout, s, n, c);
        CU_LAUNCHED(ctx);
    }
    return EX_OK;
}

ex_status cu_mask_rows_bwd(void *vctx, float *dinp, float *dtoken, const float *dout, const uint8_t *mask, int64_t n,
                           int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 0, CU_VENDOR ": mask_rows_bwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CU_ARG(dout && mask, CU_VENDOR ": mask_rows_bwd: NULL pointer");
    if (dinp) {
        k_mask_rows_dinp<<<cu_blocks(n * c), CU_THREADS, 0, ctx->stream>>>(dinp, dout, mask, n, c);
        CU_LAUNCHED(ctx);
    }
    if (dtoken) EX_CHECK(cu_colsum(ctx, CU_COLSUM_MASKED, dtoken, NULL, dout, NULL, mask, NULL, NULL, n, c));
    return EX_OK;
}

ex_status cu_reduce(void *vctx, ex_reduce_op op, float *out, const float *inp, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && out, CU_VENDOR ": reduce: bad arguments");
    CU_ARG(op == EX_RED_SUM || op == EX_RED_MEAN || op == EX_RED_SUMSQ || op == EX_RED_MAX_ABS,
           CU_VENDOR ": reduce: unknown op %d", (int)op);
    if (n == 0) {
        k_fill<<<1, 1, 0, ctx->stream>>>(out, op == EX_RED_MEAN ? NAN : 0.0f, 1);
        CU_LAUNCHED(ctx);
        return EX_OK;
    }
    CU_ARG(inp, CU_VENDOR ": reduce: NULL input");
    /* partition depends on n only */
    int64_t np = CU_CEIL_DIV(n, CU_RED_CHUNK);
    if (np > CU_RED_PARTIALS) np = CU_RED_PARTIALS;
    const int64_t chunk = CU_CEIL_DIV(n, np);
    void *scr = NULL;
    EX_CHECK(cu_scratch(ctx, (size_t)np * sizeof(double), &scr));
    k_reduce_partial<<<(unsigned)np, CU_ROW_THREADS, 0, ctx->stream>>>((int)op, (double *)scr, inp, n, chunk);
    CU_LAUNCHED(ctx);
    k_reduce_final<<<1, CU_WARP, 0, ctx->stream>>>((int)op, out, (const double *)scr, np, n);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

} /* extern "C" */

/* ------------------------------------------------------------------------------
 * The scaled residual add (LayerScale and drop path), in one pass
 * ------------------------------------------------------------------------------ */

ex_status cu_residual_fwd(void *vctx, float *out, const float *resid, const float *branch, const float *ls,
                          const float *drop, int64_t b, int64_t t, int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(b >= 0 && t >= 0 && c >= 0, CU_VENDOR ": residual_fwd: negative size");
    const int64_t n = b * t;
    if (n == 0 || c == 0) return EX_OK;
    CU_ARG(out && resid && branch, CU_VENDOR ": residual_fwd: NULL pointer");
    k_residual_fwd<<<cu_blocks(n * c), CU_THREADS, 0, ctx->stream>>>(out, resid, branch, ls, drop, n, c, t);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_residual_bwd(void *vctx, float *dbranch, float *dls, const float *dres, const float *branch,
                          const float *ls, const float *drop, int64_t b, int64_t t, int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(b >= 0 && t >= 0 && c >= 0, CU_VENDOR ": residual_bwd: negative size");
    const int64_t n = b * t;
    if (n == 0 || c == 0) return EX_OK;
    CU_ARG(dbranch && dres, CU_VENDOR ": residual_bwd: NULL pointer");
    CU_ARG(!dls || branch, CU_VENDOR ": residual_bwd: dls needs branch");
    if (dls) { /* before dbranch, which may alias dres */
        if (drop)
            EX_CHECK(cu_colsum_scaled(ctx, dls, dres, branch, drop, t, n, c));
        else
            EX_CHECK(cu_colsum(ctx, CU_COLSUM_PROD, dls, NULL, dres, branch, NULL, NULL, NULL, n, c));
    }
    k_residual_dbranch<<<cu_blocks(n * c), CU_THREADS, 0, ctx->stream>>>(dbranch, dres, ls, drop, n, c, t);
    CU_LAUNCHED(ctx);
    return EX_OK;
}
