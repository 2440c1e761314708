/*
 * backends/cuda/cuda_linear.c — the linear layer's forward with its bias added in the GEMM's epilogue
 * (cuBLASLt, CUBLASLT_EPILOGUE_BIAS): out (n, oc) = inp (n, ic) @ w^T (oc, ic) + bias (oc), one pass over
 * out instead of a GEMM and a bias_add_fwd kernel (the bias add took 9.4 ms of a profiled ViT-L step on
 * the H200). CUDA only; the HIP build leaves the slot NULL.
 *
 * It fuses the combinations whose product the gemm slot would run unchanged:
 *   - fp32 x fp32 under gemm_math = fp32 | tf32 (the same compute type as the gemm slot);
 *   - bf16 x bf16 (an activation kept in bf16 times a frozen weight kept in bf16): bf16 tensor cores with
 *     fp32 accumulation, as the gemm slot's direct path.
 * Anything else (mixed inputs, gemm_math = bf16 | fp16 rounding fp32 operands, the own kernel) returns
 * EX_E_UNSUPPORTED, and the core runs gemm + bias_add_fwd instead (ex_be_linear_fwd).
 *
 * Row-major to cuBLASLt's column-major: out^T (oc x n, ld oc) = w (stored ic x oc column-major, ld ic,
 * transposed) x inp^T (ic x n, ld ic); the bias is a vector over the rows of out^T, which is what the
 * BIAS epilogue broadcasts. The heuristic's choice depends on the shape and on the alignment of the
 * pointers (declared through the preference, since cuBLASLt otherwise assumes 256 bytes); it is cached per
 * (shape, types, alignments) in the context. No atomics: the reduction order is fixed per algorithm.
 */
#include <stdint.h>
#include <string.h>

#include "cuda_internal.h"

#ifndef EXPLORA_HIP

#include <cublasLt.h>

/* Largest power of two dividing the address, at most 256 (cuBLASLt's alignment preference). */
static uint32_t alignment_of(const void *p) {
    const uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

/* The heuristic's algorithm for key k, from the cache or a new query. *found = 0 when cuBLASLt has none for
 * this case or refuses the query (a combination this version does not take): remembered too, so the
 * caller falls back at once next time. */
static void lt_algo(cu_ctx *ctx, const cu_lt_key *k, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la,
                    cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc, cublasLtMatmulAlgo_t *algo, int *found) {
    for (int i = 0; i < ctx->lt_cached; i++)
        if (memcmp(&ctx->lt_cache[i].key, k, sizeof *k) == 0) {
            *algo = ctx->lt_cache[i].algo;
            *found = ctx->lt_cache[i].found;
            return;
        }
    cublasLtMatmulPreference_t pref = NULL;
    cublasStatus_t s = cublasLtMatmulPreferenceCreate(&pref);
    const uint64_t ws = CU_LT_WORKSPACE;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    const uint32_t al[4] = {k->align[0], k->align[1], k->align[2], k->align[3]};
    const cublasLtMatmulPreferenceAttributes_t which[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; i++)
        s = cublasLtMatmulPreferenceSetAttribute(pref, which[i], &al[i], sizeof al[i]);
    cublasLtMatmulHeuristicResult_t res;
    int returned = 0;
    memset(&res, 0, sizeof res);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulAlgoGetHeuristic(ctx->lt, op, la, lb, lc, lc, pref, 1, &res, &returned);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    *found = s == CUBLAS_STATUS_SUCCESS && returned > 0 && res.state == CUBLAS_STATUS_SUCCESS;
    *algo = res.algo;
    if (ctx->lt_cached < CU_LT_CACHE) { /* a full cache keeps its entries: later shapes query each time */
        ctx->lt_cache[ctx->lt_cached].key = *k;
        ctx->lt_cache[ctx->lt_cached].algo = res.algo;
        ctx->lt_cache[ctx->lt_cached].found = *found;
        ctx->lt_cached++;
    }
}

ex_status cu_linear_bias_fwd(void *vctx, float *out, const void *inp, ex_dtype inp_dtype, const void *w,
                             ex_dtype w_dtype, const float *bias, int64_t n, int64_t ic, int64_t oc) {
    cu_ctx *ctx = vctx;
    CU_ARG(n >= 0 && ic >= 0 && oc >= 1, CU_VENDOR ": linear_bias_fwd: bad sizes");
    if (n == 0) return EX_OK;
    if (ic == 0) return EX_E_UNSUPPORTED; /* out = bias alone: the gemm + bias_add path writes it */
    CU_ARG(out && inp && w && bias, CU_VENDOR ": linear_bias_fwd: NULL pointer");
    const int both32 = inp_dtype == EX_F32 && w_dtype == EX_F32 && ctx->gemm_narrow == EX_F32;
    const int both16 = inp_dtype == EX_BF16 && w_dtype == EX_BF16;
    if (ctx->gemm_own || !ctx->lt || !(both32 || both16) || n > INT32_MAX || ic > INT32_MAX || oc > INT32_MAX)
        return EX_E_UNSUPPORTED;
    const cudaDataType_t ab = both16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t compute = both16 ? CUBLAS_COMPUTE_32F : ctx->gemm_compute;
    if (((uintptr_t)bias & 15u) != 0) return EX_E_UNSUPPORTED; /* the epilogue reads the bias vectorised */
    cu_lt_key key;
    memset(&key, 0, sizeof key);
    key.n = n, key.ic = ic, key.oc = oc, key.bf16 = both16, key.compute = (int)compute;
    key.align[0] = alignment_of(w), key.align[1] = alignment_of(inp), key.align[2] = key.align[3] = alignment_of(out);

    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    ex_status st = EX_OK;
    cublasStatus_t s = cublasLtMatmulDescCreate(&op, compute, CUDA_R_32F);
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bias_type = CUDA_R_32F;
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type);
    /* A = w: ic x oc column-major (ld ic), transposed; B = inp^T: ic x n (ld ic); C = D = out^T: oc x n (ld oc) */
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&la, ab, (uint64_t)ic, (uint64_t)oc, ic);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&lb, ab, (uint64_t)ic, (uint64_t)n, ic);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, (uint64_t)oc, (uint64_t)n, oc);
    if (s != CUBLAS_STATUS_SUCCESS) { /* a description this cuBLASLt refuses: GEMM + bias kernel instead */
        st = EX_E_UNSUPPORTED;
        goto done;
    }
    cublasLtMatmulAlgo_t algo;
    int found = 0;
    lt_algo(ctx, &key, op, la, lb, lc, &algo, &found);
    if (!found) { /* no kernel for this case: the core adds the bias separately */
        st = EX_E_UNSUPPORTED;
        goto done;
    }
    void *ws = NULL;
    if (!ctx->lt_ws) {
        cudaError_t e = cudaMalloc(&ctx->lt_ws, CU_LT_WORKSPACE);
        if (e != cudaSuccess) {
            ctx->lt_ws = NULL;
            st = cu_fail_cuda(ctx, e, "cudaMalloc (cuBLASLt workspace)", __FILE__, __LINE__);
            goto done;
        }
    }
    ws = ctx->lt_ws;
    const float alpha = 1.0f, beta = 0.0f;
    s = cublasLtMatmul(ctx->lt, op, &alpha, w, la, inp, lb, &beta, out, lc, out, lc, &algo, ws, CU_LT_WORKSPACE,
                       ctx->stream);
    if (s != CUBLAS_STATUS_SUCCESS) st = cu_fail_blas(ctx, s, "cublasLtMatmul (bias epilogue)", __FILE__, __LINE__);
done:
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return st;
}

#endif /* !EXPLORA_HIP */
