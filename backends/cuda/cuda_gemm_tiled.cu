/*
 * backends/cuda/cuda_gemm_tiled.cu — the backend's own fp32 GEMM: the HIP backend's only GEMM
 * (Debian has no hipBLAS or rocBLAS), and on NVIDIA the `[backend] gemm = own` alternative to
 * cuBLAS, so that the kernel the HIP build relies on is checked by the parity suite on any GPU.
 *
 * Row-major, batched:  C[z] (m, n) = alpha op(A[z]) op(B[z]) + beta C[z]  for z < batch, with
 *   op(A)(i, p) = trans_a ? A[p * lda + i] : A[i * lda + p]      A[z] = a + z * stride_a
 *   op(B)(p, j) = trans_b ? B[j * ldb + p] : B[p * ldb + j]      (or the z-th entry of a
 *                                                                 pointer array: attention)
 * beta = 0 writes C without reading it (NaN in C does not propagate), as cuBLAS does.
 *
 * Tiling: a block of 256 threads computes a 64 x 64 tile of C, each thread a 4 x 4 patch
 * (rows ty + 16 r, columns tx + 16 c), over k in steps of 16 staged through shared memory;
 * out-of-range elements load as 0. Every output adds its k terms in increasing order in fp32,
 * so results are bitwise reproducible. No tensor cores: correctness and portability first.
 */
#include "cuda_common.cuh"

#define TG_BM 64
#define TG_BN 64
#define TG_BK 16
#define TG_THREADS 256
/* batches per launch in the grid's z dimension (its limit is 65535); more run in a loop */
#define TG_MAX_Z 65535

__global__ void __launch_bounds__(TG_THREADS)
    k_gemm_tiled(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                 int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b, float beta, float *c, int64_t ldc,
                 int64_t stride_c, const float *const *pa, const float *const *pb, float *const *pc, int64_t z0) {
    __shared__ float as[TG_BK][TG_BM + 1];
    __shared__ float bs[TG_BK][TG_BN + 1];
    const int64_t z = z0 + blockIdx.z;
    const float *A = pa ? pa[z] : a + z * stride_a;
    const float *B = pb ? pb[z] : b + z * stride_b;
    float *C = pc ? pc[z] : c + z * stride_c;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int64_t i0 = (int64_t)blockIdx.y * TG_BM, j0 = (int64_t)blockIdx.x * TG_BN;
    float acc[4][4];
    for (int r = 0; r < 4; r++)
        for (int q = 0; q < 4; q++) acc[r][q] = 0.0f;
    for (int64_t p0 = 0; p0 < k; p0 += TG_BK) {
        /* stage op(A)(i0.., p0..) as as[p][i] and op(B)(p0.., j0..) as bs[p][j]: 4 + 4 loads per thread */
        for (int l = threadIdx.x; l < TG_BK * TG_BM; l += TG_THREADS) {
            /* consecutive threads read consecutive addresses: along p for A, along i for A^T */
            const int p = trans_a ? l / TG_BM : l % TG_BK, i = trans_a ? l % TG_BM : l / TG_BK;
            const int64_t gi = i0 + i, gp = p0 + p;
            as[p][i] = gi < m && gp < k ? (trans_a ? A[gp * lda + gi] : A[gi * lda + gp]) : 0.0f;
        }
        for (int l = threadIdx.x; l < TG_BK * TG_BN; l += TG_THREADS) {
            const int p = trans_b ? l % TG_BK : l / TG_BN, j = trans_b ? l / TG_BK : l % TG_BN;
            const int64_t gj = j0 + j, gp = p0 + p;
            bs[p][j] = gj < n && gp < k ? (trans_b ? B[gj * ldb + gp] : B[gp * ldb + gj]) : 0.0f;
        }
        __syncthreads();
        for (int p = 0; p < TG_BK; p++) {
            float av[4], bv[4];
            for (int r = 0; r < 4; r++) av[r] = as[p][ty + 16 * r];
            for (int q = 0; q < 4; q++) bv[q] = bs[p][tx + 16 * q];
            for (int r = 0; r < 4; r++)
                for (int q = 0; q < 4; q++) acc[r][q] = fmaf(av[r], bv[q], acc[r][q]);
        }
        __syncthreads();
    }
    for (int r = 0; r < 4; r++) {
        const int64_t gi = i0 + ty + 16 * r;
        if (gi >= m) continue;
        for (int q = 0; q < 4; q++) {
            const int64_t gj = j0 + tx + 16 * q;
            if (gj >= n) continue;
            float *o = C + gi * ldc + gj;
            *o = beta == 0.0f ? alpha * acc[r][q] : alpha * acc[r][q] + beta * *o;
        }
    }
}

static ex_status launch(cu_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t lda, int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b,
                        float beta, float *c, int64_t ldc, int64_t stride_c, const float *const *pa,
                        const float *const *pb, float *const *pc, int64_t batch) {
    if (m == 0 || n == 0 || batch == 0) return EX_OK;
    CU_ARG(CU_CEIL_DIV(m, TG_BM) <= 65535, "gemm (own kernel): m = %lld is beyond its grid", (long long)m);
    for (int64_t z0 = 0; z0 < batch; z0 += TG_MAX_Z) {
        const int64_t nz = batch - z0 < TG_MAX_Z ? batch - z0 : TG_MAX_Z;
        const dim3 grid((unsigned)CU_CEIL_DIV(n, TG_BN), (unsigned)CU_CEIL_DIV(m, TG_BM), (unsigned)nz);
        k_gemm_tiled<<<grid, TG_THREADS, 0, ctx->stream>>>(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb,
                                                           stride_b, beta, c, ldc, stride_c, pa, pb, pc, z0);
        CU_LAUNCHED(ctx);
    }
    return EX_OK;
}

extern "C" ex_status cu_gemm_own(cu_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                                 float alpha, const float *a, int64_t lda, int64_t stride_a, const float *b,
                                 int64_t ldb, int64_t stride_b, float beta, float *c, int64_t ldc, int64_t stride_c,
                                 int64_t batch) {
    return launch(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c,
                  NULL, NULL, NULL, batch);
}

extern "C" ex_status cu_gemm_own_ptrs(cu_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                                      float alpha, const float *const *a, int64_t lda, const float *const *b,
                                      int64_t ldb, float beta, float *const *c, int64_t ldc, int64_t batch) {
    return launch(ctx, trans_a, trans_b, m, n, k, alpha, NULL, lda, 0, NULL, ldb, 0, beta, NULL, ldc, 0, a, b, c,
                  batch);
}
