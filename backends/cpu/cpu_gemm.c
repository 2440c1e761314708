/*
 * backends/cpu/cpu_gemm.c — batched strided fp32 GEMM on OpenBLAS (cblas_sgemm).
 *
 * OpenBLAS splits a GEMM over rows/columns of C, never over k, so its result
 * does not depend on the thread count. Large matrices are multiplied one after
 * the other with OpenBLAS threading inside; batches of small matrices whose C
 * blocks do not overlap run one matrix per thread (OpenBLAS is single-threaded
 * inside an active OpenMP region).
 *
 * bf16/fp16 inputs (a frozen weight kept narrow, [optim] frozen_dtype): the
 * span such an operand occupies is widened to fp32 in scratch, which is exact,
 * and the product runs as above. That makes this the oracle of a device GEMM
 * with the same inputs: fp32 products of the stored values.
 */
#include <limits.h>
#include <string.h>

#include <cblas.h>

#include "cpu_internal.h"

/* Below this many multiply-adds per matrix a batch is split across threads. */
#define CPU_GEMM_SMALL ((int64_t)1 << 20)

/* C (m, n) with row stride ldc: C = beta * C (beta == 0 writes zeros). */
static void scale_c(float *c, int64_t m, int64_t n, int64_t ldc, float beta) {
    for (int64_t i = 0; i < m; i++) {
        float *row = c + i * ldc;
        if (beta == 0.0f)
            for (int64_t j = 0; j < n; j++) row[j] = 0.0f;
        else if (beta != 1.0f)
            for (int64_t j = 0; j < n; j++) row[j] *= beta;
    }
}

/* One product C_b = alpha op(A_b) op(B_b) + beta C_b of the batch. */
static void gemm_one(const ex_gemm_desc *d, int64_t bi) {
    float *c = d->c + bi * d->stride_c;
    if (d->k == 0 || d->alpha == 0.0f) {
        scale_c(c, d->m, d->n, d->ldc, d->beta);
        return;
    }
    const float *a = (const float *)d->a + bi * d->stride_a;
    const float *b = (const float *)d->b + bi * d->stride_b;
    cblas_sgemm(CblasRowMajor, d->trans_a ? CblasTrans : CblasNoTrans, d->trans_b ? CblasTrans : CblasNoTrans,
                (blasint)d->m, (blasint)d->n, (blasint)d->k, d->alpha, a, (blasint)d->lda, b, (blasint)d->ldb,
                d->beta, c, (blasint)d->ldc);
}

static int narrow(ex_dtype t) { return t == EX_BF16 || t == EX_F16; }

/* dst (n) = src (n) of dtype t (bf16 or fp16) as floats; exact. */
static void widen(const cpu_ctx *ctx, float *dst, const uint16_t *src, ex_dtype t, int64_t n) {
    if (t == EX_BF16) {
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= CPU_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            const uint32_t u = (uint32_t)src[i] << 16;
            float f;
            memcpy(&f, &u, sizeof f);
            dst[i] = f;
        }
    } else {
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n >= CPU_PAR_MIN)
        for (int64_t i = 0; i < n; i++) dst[i] = ex_f16_to_f32(src[i]);
    }
}

/* Elements from an operand's first to the last one the product reads (strides and leading dimension kept). */
static int64_t operand_span(int64_t batch, int64_t stride, int64_t rows, int64_t ld, int64_t cols) {
    return (batch - 1) * stride + (rows - 1) * ld + cols;
}

ex_status cpu_gemm(void *vctx, const ex_gemm_desc *d) {
    cpu_ctx *ctx = vctx;
    CPU_ARG(d, "cpu: gemm without a descriptor");
    if ((d->a_dtype != EX_F32 && !narrow(d->a_dtype)) || (d->b_dtype != EX_F32 && !narrow(d->b_dtype)))
        EX_FAIL(NULL, EX_E_UNSUPPORTED, "cpu: gemm takes fp32, bf16 or fp16 inputs");
    CPU_ARG(d->m >= 0 && d->n >= 0 && d->k >= 0 && d->batch >= 1, "cpu: gemm: negative size or batch < 1");
    CPU_ARG(d->m <= INT_MAX && d->n <= INT_MAX && d->k <= INT_MAX, "cpu: gemm: size beyond the BLAS int range");
    if (d->m == 0 || d->n == 0) return EX_OK;
    CPU_ARG(d->c && d->ldc >= d->n && d->ldc <= INT_MAX && d->stride_c >= 0, "cpu: gemm: bad C");
    if (d->k > 0 && d->alpha != 0.0f) {
        int64_t acols = d->trans_a ? d->m : d->k, bcols = d->trans_b ? d->k : d->n;
        CPU_ARG(d->a && d->lda >= acols && d->lda <= INT_MAX && d->stride_a >= 0, "cpu: gemm: bad A");
        CPU_ARG(d->b && d->ldb >= bcols && d->ldb <= INT_MAX && d->stride_b >= 0, "cpu: gemm: bad B");
        if (narrow(d->a_dtype) || narrow(d->b_dtype)) {
            const int64_t na = narrow(d->a_dtype)
                                   ? operand_span(d->batch, d->stride_a, d->trans_a ? d->k : d->m, d->lda, acols) : 0;
            const int64_t nb = narrow(d->b_dtype)
                                   ? operand_span(d->batch, d->stride_b, d->trans_b ? d->n : d->k, d->ldb, bcols) : 0;
            void *buf = NULL;
            EX_CHECK(cpu_scratch(ctx, sizeof(float) * (size_t)(na + nb), &buf));
            ex_gemm_desc w = *d; /* the same product on widened copies */
            float *wa = buf, *wb = wa + na;
            if (na) widen(ctx, wa, d->a, d->a_dtype, na), w.a = wa, w.a_dtype = EX_F32;
            if (nb) widen(ctx, wb, d->b, d->b_dtype, nb), w.b = wb, w.b_dtype = EX_F32;
            return cpu_gemm(vctx, &w);
        }
    }
    cpu_set_blas_threads(ctx);
    const double work = (double)d->m * (double)d->n * (double)d->k;
    int disjoint_c = d->stride_c >= (d->m - 1) * d->ldc + d->n;
    if (d->batch > 1 && ctx->threads > 1 && disjoint_c && work < (double)CPU_GEMM_SMALL) {
#pragma omp parallel for num_threads(ctx->threads) schedule(static)
        for (int64_t bi = 0; bi < d->batch; bi++) gemm_one(d, bi);
    } else {
        for (int64_t bi = 0; bi < d->batch; bi++) gemm_one(d, bi);
    }
    return EX_OK;
}
