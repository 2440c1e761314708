/*
 * backends/cuda/cuda_attention.cu — multi-head self-attention, forward and
 * backward, as cuBLAS batched GEMMs plus row kernels.
 *
 * This path materialises the score matrices. For a chunk of batch items (as
 * many as fit the `attention_scratch_mib` budget, at least one) the
 * (chunk, nh, t, t) scores live in device scratch. `[backend] attention = fused`
 * takes cuda_attention_fused.cu instead (no (t, t) matrix; head sizes up to
 * CU_FUSED_MAX_HS), fused_bf16/fp16 cuda_attention_tc.cu and cudnn cuda_attention_dnn.c; those
 * dispatch from the two slots below.
 *
 * Layout (timm): qkv (b, t, 3, nh, hs); head h of token i has q at
 * qkv[(bi*t + i)*3C + h*hs], k at +C, v at +2C, with C = nh*hs; out (b, t, C);
 * lse (b, nh, t).
 *
 * Forward, per chunk:   S = scale Q K^T                         (batched GEMM over (bi, h))
 *                       P = softmax(S) in place, lse = max + log(sum)   (one block per row)
 *                       O = P V                                 (batched GEMM, into out)
 * Backward, per chunk:  P = exp(scale Q K^T - lse)              (GEMM + row kernel)
 *                       dP = dO V^T,  D = rowsum(dO * O),  dS = P * (dP - D)
 *                       dQ += scale dS K,  dK += scale dS^T Q,  dV += P^T dO   (beta = 1 GEMMs)
 * The (bi, h) batches use cublasGemmBatchedEx (fp32 tensors; TF32 unless gemm_math = fp32) with pointer arrays built on the
 * device (two strides per operand, which a strided batch cannot express).
 */
#include "cuda_common.cuh"

/* ------------------------------------------------------------------------------
 * Kernels
 * ------------------------------------------------------------------------------ */

/* ptr[bi*nh + h] = base + bi*bs + h*hs for the three operands of a batched GEMM. */
__global__ void k_bh_ptrs(const float **pa, const float **pb, float **pc, const float *a, int64_t a_bs, int64_t a_hs,
                          const float *b, int64_t b_bs, int64_t b_hs, float *c, int64_t c_bs, int64_t c_hs,
                          int64_t nb, int64_t nh) {
    CU_FOR(e, nb * nh) {
        const int64_t bi = e / nh, h = e % nh;
        pa[e] = a + bi * a_bs + h * a_hs;
        pb[e] = b + bi * b_bs + h * b_hs;
        pc[e] = c + bi * c_bs + h * c_hs;
    }
}

/* Rows of S (rows = nb*nh*t, each of length t): P = softmax in place, lse written. */
__global__ void k_attn_softmax(float *S, float *lse, int64_t rows, int64_t t) {
    __shared__ float shf[CU_WARP + 1];
    __shared__ double sh[CU_WARP + 1];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float *s = S + r * t;
        float mx = -INFINITY;
        for (int64_t j = threadIdx.x; j < t; j += blockDim.x) mx = fmaxf(mx, s[j]);
        mx = cu_block_max(mx, shf);
        double sum = 0.0;
        for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
            const float e = expf(s[j] - mx);
            s[j] = e;
            sum += e;
        }
        sum = cu_block_sum_d(sum, sh);
        const float inv = (float)(1.0 / sum);
        for (int64_t j = threadIdx.x; j < t; j += blockDim.x) s[j] *= inv;
        if (threadIdx.x == 0) lse[r] = mx + (float)log(sum);
    }
}

/* Backward row kernel. Row r = (bl, h, i) of the chunk (bl local batch index):
 * P = exp(S - lse) (S holds scale Q K^T), D = dO_i . O_i, then dS = P * (dP - D)
 * where dP is in dS on entry. */
__global__ void k_attn_bwd_rows(float *S, float *dS, const float *lse, const float *dout, const float *out,
                                int64_t rows, int64_t t, int64_t nh, int64_t hs) {
    __shared__ double sh[CU_WARP + 1];
    const int64_t C = nh * hs;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const int64_t i = r % t, h = (r / t) % nh, bl = r / (t * nh);
        const float *o = out + (bl * t + i) * C + h * hs, *g = dout + (bl * t + i) * C + h * hs;
        double d = 0.0;
        for (int64_t k = threadIdx.x; k < hs; k += blockDim.x) d += (double)g[k] * (double)o[k];
        const float D = (float)cu_block_sum_d(d, sh);
        const float l = lse[r];
        float *p = S + r * t, *ds = dS + r * t;
        for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
            const float pj = expf(p[j] - l);
            p[j] = pj;
            ds[j] = pj * (ds[j] - D);
        }
    }
}

/* ------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------ */

extern "C" {

ex_status cu_gemm_bh(cu_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, int64_t a_bs, int64_t a_hs, const float *b, int64_t ldb,
                     int64_t b_bs, int64_t b_hs, float beta, float *c, int64_t ldc, int64_t c_bs, int64_t c_hs,
                     int64_t nb, int64_t nh) {
    const int64_t count = nb * nh;
    CU_ARG(m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX && count <= INT32_MAX && lda <= INT32_MAX &&
               ldb <= INT32_MAX && ldc <= INT32_MAX,
           CU_VENDOR ": attention: sizes beyond the int range");
    void **ptrs = NULL;
    EX_CHECK(cu_ptr_scratch(ctx, (size_t)count, &ptrs));
    const float **pa = (const float **)ptrs, **pb = (const float **)(ptrs + count);
    float **pc = (float **)(ptrs + 2 * count);
    k_bh_ptrs<<<cu_blocks(count), CU_THREADS, 0, ctx->stream>>>(pa, pb, pc, a, a_bs, a_hs, b, b_bs, b_hs, c, c_bs,
                                                                c_hs, nb, nh);
    CU_LAUNCHED(ctx);
    if (ctx->gemm_own)
        return cu_gemm_own_ptrs(ctx, trans_a, trans_b, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc, count);
#ifdef EXPLORA_HIP
    return EX_E_INTERNAL; /* gemm_own is always set on HIP */
#else
    /* row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T */
    CU_BLAS(ctx, cublasGemmBatchedEx(ctx->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                     (int)n, (int)m, (int)k, &alpha, (const void *const *)pb, CUDA_R_32F, (int)ldb,
                                     (const void *const *)pa, CUDA_R_32F, (int)lda, &beta, (void *const *)pc,
                                     CUDA_R_32F, (int)ldc, (int)count, ctx->attn_compute, CUBLAS_GEMM_DEFAULT));
    return EX_OK;
#endif
}

static ex_status check_args(int64_t b, int64_t t, int64_t nh, int64_t hs) {
    CU_ARG(b >= 0 && t >= 0 && nh >= 0 && hs >= 0, CU_VENDOR ": attention: negative size");
    CU_ARG(t <= INT32_MAX && nh * hs <= INT32_MAX / 3, CU_VENDOR ": attention: sizes beyond the int range");
    return EX_OK;
}

/* Batch items per chunk so that `mats` (nh, t, t) score matrices per item fit the budget. */
static int64_t chunk_items(const cu_ctx *ctx, int64_t b, int64_t nh, int64_t t, int64_t mats) {
    const double per = (double)mats * (double)nh * (double)t * (double)t * sizeof(float);
    int64_t n = (int64_t)((double)ctx->attn_cap_bytes / per);
    if (n < 1) n = 1;
    return n < b ? n : b;
}

static unsigned int row_grid(int64_t n) { return (unsigned int)(n < CU_MAX_BLOCKS ? n : CU_MAX_BLOCKS); }

ex_status cu_attention_fwd(void *vctx, float *out, float *lse, const float *qkv, int64_t b, int64_t t, int64_t nh,
                           int64_t hs, float scale) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    EX_CHECK(check_args(b, t, nh, hs));
    if (b == 0 || t == 0 || nh == 0) return EX_OK;
    CU_ARG(out && lse && qkv, CU_VENDOR ": attention_fwd: NULL pointer");
#ifndef EXPLORA_HIP
    if (ctx->attn_fused == 4 && cu_attention_dnn_fits(ctx, b, t, nh, hs)) {
        const ex_status st = cu_attention_dnn_fwd(ctx, out, lse, qkv, b, t, nh, hs, scale);
        if (st != EX_E_UNSUPPORTED) return st; /* no cuDNN plan for the shape: its fallback below */
    }
    if (ctx->attn_fused >= 2 && cu_attention_tc_fits(ctx, hs))
        return cu_attention_tc_fwd(ctx, out, lse, qkv, b, t, nh, hs, scale);
#endif
    if (ctx->attn_fused && cu_attention_fused_fits(hs))
        return cu_attention_fused_fwd(ctx, out, lse, qkv, b, t, nh, hs, scale);
    const int64_t C = nh * hs, ld = 3 * C, tt = t * t;
    const int64_t cb = chunk_items(ctx, b, nh, t, 1);
    float *S = NULL;
    EX_CHECK(cu_attn_scratch(ctx, (size_t)(cb * nh * tt), &S));
    for (int64_t b0 = 0; b0 < b; b0 += cb) {
        const int64_t nb = b - b0 < cb ? b - b0 : cb;
        const float *q = qkv + b0 * t * ld, *k = q + C, *v = q + 2 * C;
        if (hs > 0) {
            /* S[bl,h] (t, t) = scale * Q (t, hs; ld) K^T */
            EX_CHECK(cu_gemm_bh(ctx, 0, 1, t, t, hs, scale, q, ld, t * ld, hs, k, ld, t * ld, hs, 0.0f, S, t,
                                nh * tt, tt, nb, nh));
        } else {
            EX_CHECK(cu_fill(ctx, S, 0.0f, nb * nh * tt));
        }
        k_attn_softmax<<<row_grid(nb * nh * t), CU_ROW_THREADS, 0, ctx->stream>>>(S, lse + b0 * nh * t, nb * nh * t,
                                                                                   t);
        CU_LAUNCHED(ctx);
        if (hs > 0) {
            /* O[bl,h] (t, hs; ld C) = P (t, t) V (t, hs; ld) */
            EX_CHECK(cu_gemm_bh(ctx, 0, 0, t, hs, t, 1.0f, S, t, nh * tt, tt, v, ld, t * ld, hs, 0.0f,
                                out + b0 * t * C, C, t * C, hs, nb, nh));
        }
    }
    return EX_OK;
}

ex_status cu_attention_bwd(void *vctx, float *dqkv, const float *dout, const float *out, const float *lse,
                           const float *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    EX_CHECK(check_args(b, t, nh, hs));
    if (b == 0 || t == 0 || nh == 0 || hs == 0) return EX_OK;
    CU_ARG(dqkv && dout && out && lse && qkv, CU_VENDOR ": attention_bwd: NULL pointer");
#ifndef EXPLORA_HIP
    if (ctx->attn_fused == 4 && cu_attention_dnn_fits(ctx, b, t, nh, hs)) {
        const ex_status st = cu_attention_dnn_bwd(ctx, dqkv, dout, out, lse, qkv, b, t, nh, hs, scale);
        if (st != EX_E_UNSUPPORTED) return st; /* the same log-sum-exp convention: any forward pairs with it */
    }
    if (ctx->attn_fused >= 2 && cu_attention_tc_fits(ctx, hs))
        return cu_attention_tc_bwd(ctx, dqkv, dout, out, lse, qkv, b, t, nh, hs, scale);
#endif
    if (ctx->attn_fused && cu_attention_fused_fits(hs))
        return cu_attention_fused_bwd(ctx, dqkv, dout, out, lse, qkv, b, t, nh, hs, scale);
    const int64_t C = nh * hs, ld = 3 * C, tt = t * t;
    const int64_t cb = chunk_items(ctx, b, nh, t, 2);
    float *S = NULL;
    EX_CHECK(cu_attn_scratch(ctx, (size_t)(2 * cb * nh * tt), &S));
    float *dS = S + cb * nh * tt;
    for (int64_t b0 = 0; b0 < b; b0 += cb) {
        const int64_t nb = b - b0 < cb ? b - b0 : cb;
        const float *q = qkv + b0 * t * ld, *k = q + C, *v = q + 2 * C;
        float *dq = dqkv + b0 * t * ld, *dk = dq + C, *dv = dq + 2 * C;
        const float *o = out + b0 * t * C, *dO = dout + b0 * t * C;
        /* S = scale Q K^T;  dP = dO V^T (into dS) */
        EX_CHECK(cu_gemm_bh(ctx, 0, 1, t, t, hs, scale, q, ld, t * ld, hs, k, ld, t * ld, hs, 0.0f, S, t, nh * tt, tt,
                            nb, nh));
        EX_CHECK(cu_gemm_bh(ctx, 0, 1, t, t, hs, 1.0f, dO, C, t * C, hs, v, ld, t * ld, hs, 0.0f, dS, t, nh * tt, tt,
                            nb, nh));
        /* P = exp(S - lse), dS = P * (dP - D) */
        k_attn_bwd_rows<<<row_grid(nb * nh * t), CU_ROW_THREADS, 0, ctx->stream>>>(S, dS, lse + b0 * nh * t, dO, o,
                                                                                    nb * nh * t, t, nh, hs);
        CU_LAUNCHED(ctx);
        /* dQ (t, hs; ld) += scale dS (t, t) K (t, hs; ld) */
        EX_CHECK(cu_gemm_bh(ctx, 0, 0, t, hs, t, scale, dS, t, nh * tt, tt, k, ld, t * ld, hs, 1.0f, dq, ld, t * ld,
                            hs, nb, nh));
        /* dK += scale dS^T Q */
        EX_CHECK(cu_gemm_bh(ctx, 1, 0, t, hs, t, scale, dS, t, nh * tt, tt, q, ld, t * ld, hs, 1.0f, dk, ld, t * ld,
                            hs, nb, nh));
        /* dV += P^T dO */
        EX_CHECK(cu_gemm_bh(ctx, 1, 0, t, hs, t, 1.0f, S, t, nh * tt, tt, dO, C, t * C, hs, 1.0f, dv, ld, t * ld, hs,
                            nb, nh));
    }
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * bf16 storage (a block keeping its activations in bf16)
 * ------------------------------------------------------------------------------ */

ex_status cu_to_bf16(void *vctx, uint16_t *out, const float *inp, int64_t n) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0, CU_VENDOR ": to_bf16: negative size");
    if (n == 0) return EX_OK;
    CU_ARG(out && inp, CU_VENDOR ": to_bf16: NULL pointer");
    return cu_to_narrow(ctx, out, inp, 1, n);
}

/* Images per chunk of the widening path: fp32 copies of `per` bytes per image, within the gemm_copy_mib
 * budget (at least one image). */
static int64_t io_chunk(const cu_ctx *ctx, int64_t b, size_t per) {
    int64_t n = (int64_t)((size_t)ctx->copy_cap_bytes / (per ? per : 1));
    if (n < 1) n = 1;
    return n < b ? n : b;
}

/* The widening path's scratch: nb images of fp32 qkv (t, 3C), then of fp32 out (t, C). */
static ex_status io_scratch(cu_ctx *ctx, int64_t b, int64_t t, int64_t C, int64_t *cb, float **q32, float **o32) {
    const size_t per_q = (size_t)(t * 3 * C) * sizeof(float), per_o = (size_t)(t * C) * sizeof(float);
    *cb = io_chunk(ctx, b, per_q + per_o);
    const size_t off_o = ((size_t)*cb * per_q + 255) / 256 * 256;
    void *buf = NULL;
    EX_CHECK(cu_attn_io_scratch(ctx, off_o + (size_t)*cb * per_o, &buf));
    *q32 = (float *)buf;
    *o32 = (float *)((char *)buf + off_o);
    return EX_OK;
}

/* cuDNN, the bf16 tensor-core kernels and the fp32 fused kernel read and write the bf16 tensors as they are. The
 * other paths (the GEMM path, fp16 tiles, head sizes the fused kernels lack) widen a chunk of images into fp32
 * scratch, run the fp32 slot, and round the output. */
static int fused16(const cu_ctx *ctx, int64_t hs) {
#ifndef EXPLORA_HIP
    if (ctx->attn_fused == 3 && cu_attention_tc_fits(ctx, hs)) return 0; /* fp16 tiles: through the widening */
#endif
    return ctx->attn_fused && cu_attention_fused_fits(hs);
}

ex_status cu_attention_fwd_bf16(void *vctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b, int64_t t,
                                int64_t nh, int64_t hs, float scale) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    EX_CHECK(check_args(b, t, nh, hs));
    if (b == 0 || t == 0 || nh == 0) return EX_OK;
    CU_ARG(out && lse && qkv, CU_VENDOR ": attention_fwd_bf16: NULL pointer");
#ifndef EXPLORA_HIP
    if (ctx->attn_fused == 4 && cu_attention_dnn_fits(ctx, b, t, nh, hs)) {
        const ex_status st = cu_attention_dnn_fwd16(ctx, out, lse, qkv, b, t, nh, hs, scale);
        if (st != EX_E_UNSUPPORTED) return st;
    }
    if (ctx->attn_fused >= 2 && cu_attention_tc_fits16(ctx, hs))
        return cu_attention_tc_fwd16(ctx, out, lse, qkv, b, t, nh, hs, scale);
#endif
    if (fused16(ctx, hs)) return cu_attention_fused_fwd16(ctx, out, lse, qkv, b, t, nh, hs, scale);
    const int64_t C = nh * hs, nq = t * 3 * C, no = t * C;
    int64_t cb = 1;
    float *q32 = NULL, *o32 = NULL;
    EX_CHECK(io_scratch(ctx, b, t, C, &cb, &q32, &o32));
    for (int64_t b0 = 0; b0 < b; b0 += cb) {
        const int64_t nb = b - b0 < cb ? b - b0 : cb;
        EX_CHECK(cu_widen(ctx, q32, qkv + b0 * nq, 1, nb * nq));
        EX_CHECK(cu_attention_fwd(ctx, o32, lse + b0 * nh * t, q32, nb, t, nh, hs, scale));
        EX_CHECK(cu_to_narrow(ctx, out + b0 * no, o32, 1, nb * no));
    }
    return EX_OK;
}

ex_status cu_attention_bwd_bf16(void *vctx, float *dqkv, const float *dout, const uint16_t *out, const float *lse,
                                const uint16_t *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    EX_CHECK(check_args(b, t, nh, hs));
    if (b == 0 || t == 0 || nh == 0 || hs == 0) return EX_OK;
    CU_ARG(dqkv && dout && out && lse && qkv, CU_VENDOR ": attention_bwd_bf16: NULL pointer");
#ifndef EXPLORA_HIP
    if (ctx->attn_fused == 4 && cu_attention_dnn_fits(ctx, b, t, nh, hs)) {
        const ex_status st = cu_attention_dnn_bwd16(ctx, dqkv, dout, out, lse, qkv, b, t, nh, hs, scale);
        if (st != EX_E_UNSUPPORTED) return st;
    }
    if (ctx->attn_fused >= 2 && cu_attention_tc_fits16(ctx, hs))
        return cu_attention_tc_bwd16(ctx, dqkv, dout, out, lse, qkv, b, t, nh, hs, scale);
#endif
    if (fused16(ctx, hs)) return cu_attention_fused_bwd16(ctx, dqkv, dout, out, lse, qkv, b, t, nh, hs, scale);
    const int64_t C = nh * hs, nq = t * 3 * C, no = t * C;
    int64_t cb = 1;
    float *q32 = NULL, *o32 = NULL;
    EX_CHECK(io_scratch(ctx, b, t, C, &cb, &q32, &o32));
    for (int64_t b0 = 0; b0 < b; b0 += cb) {
        const int64_t nb = b - b0 < cb ? b - b0 : cb;
        EX_CHECK(cu_widen(ctx, q32, qkv + b0 * nq, 1, nb * nq));
        EX_CHECK(cu_widen(ctx, o32, out + b0 * no, 1, nb * no));
        EX_CHECK(cu_fill(ctx, dqkv + b0 * nq, 0.0f, nb * nq)); /* the bf16 slot writes dqkv */
        EX_CHECK(cu_attention_bwd(ctx, dqkv + b0 * nq, dout + b0 * no, o32, lse + b0 * nh * t, q32, nb, t, nh, hs,
                                  scale));
    }
    return EX_OK;
}

} /* extern "C" */
