/*
 * backends/cuda/cuda_rng.cu — uniform, normal and permutation draws on the
 * shared Philox-4x32-10 streams of explora/rng.h, compiled for the device
 * through EX_RNG_HD (cuda_common.cuh).
 *
 * Element i of a draw of n values uses the block at counter rng->offset + i,
 * exactly as the CPU backend, so both produce the same numbers (uniforms bit
 * for bit; normals up to the last bit of the device's double log/cos).
 *
 * A permutation is the stable argsort of n uniforms, i.e. indices sorted by
 * (value, index). The uniform is (w0 >> 8) / 2^24, so sorting the 24-bit
 * integers w0 >> 8 is the same order; CUB's radix sort is stable, and the
 * values enter in index order, which gives the (value, index) tie-break.
 */
#include "cuda_common.cuh"

#ifdef EXPLORA_HIP
#include <stdlib.h>
#else
#include <cub/device/device_radix_sort.cuh>
#endif

/* ------------------------------------------------------------------------------
 * Kernels
 * ------------------------------------------------------------------------------ */

__global__ void k_rng_uniform(float *out, int64_t n, float lo, float hi, uint64_t key, uint64_t off) {
    const float range = hi - lo;
    CU_FOR(i, n) {
        /* separately rounded multiply and add, as the CPU backend computes it: a fused
         * multiply-add (nvcc contracts by default) differs in the last bit */
        const float x = __fadd_rn(lo, __fmul_rn(range, ex_rng_uniform_at(key, off, (uint64_t)i)));
        out[i] = x < hi || lo == hi ? x : nextafterf(hi, lo); /* keep [lo, hi) half-open */
    }
}

__global__ void k_rng_dropout(float *out, int64_t n, float p, float keep, uint64_t key, uint64_t off) {
    CU_FOR(i, n) out[i] = ex_rng_uniform_at(key, off, (uint64_t)i) < p ? 0.0f : keep;
}

__global__ void k_rng_normal(float *out, int64_t n, float mean, float std, uint64_t key, uint64_t off) {
    CU_FOR(i, n) out[i] = mean + std * ex_rng_normal_at(key, off, (uint64_t)i);
}

/* The sort key of element i of a permutation draw: the 24-bit integer behind its uniform (the
 * CPU backend's stable (key, index) argsort order). Host and device share it. */
__host__ __device__ static inline uint32_t cu_perm_key(uint64_t key, uint64_t off, uint64_t i) {
    uint32_t w[4];
    ex_philox4x32(key, off + i, w);
    return w[0] >> 8;
}

#ifndef EXPLORA_HIP
__global__ void k_rng_sort_keys(uint32_t *keys, int32_t *vals, int64_t n, uint64_t key, uint64_t off) {
    CU_FOR(i, n) {
        keys[i] = cu_perm_key(key, off, (uint64_t)i);
        vals[i] = (int32_t)i;
    }
}
#endif

/* ------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------ */

extern "C" {

ex_status cu_rng_uniform(void *vctx, float *out, int64_t n, float lo, float hi, ex_rng *rng) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && rng, CU_VENDOR ": rng_uniform: bad arguments");
    CU_ARG(lo <= hi, CU_VENDOR ": rng_uniform: lo > hi");
    if (n == 0) return EX_OK;
    CU_ARG(out, CU_VENDOR ": rng_uniform: NULL output");
    k_rng_uniform<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(out, n, lo, hi, rng->key, rng->offset);
    CU_LAUNCHED(ctx);
    rng->offset += (uint64_t)n;
    return EX_OK;
}

ex_status cu_rng_dropout(void *vctx, float *out, int64_t n, float p, ex_rng *rng) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && rng, CU_VENDOR ": rng_dropout: bad arguments");
    CU_ARG(p >= 0.0f && p < 1.0f, CU_VENDOR ": rng_dropout: p = %g is outside [0, 1)", (double)p);
    if (n == 0) return EX_OK;
    CU_ARG(out, CU_VENDOR ": rng_dropout: NULL output");
    k_rng_dropout<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(out, n, p, 1.0f / (1.0f - p), rng->key, rng->offset);
    CU_LAUNCHED(ctx);
    rng->offset += (uint64_t)n;
    return EX_OK;
}

ex_status cu_rng_normal(void *vctx, float *out, int64_t n, float mean, float std, ex_rng *rng) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && rng, CU_VENDOR ": rng_normal: bad arguments");
    if (n == 0) return EX_OK;
    CU_ARG(out, CU_VENDOR ": rng_normal: NULL output");
    k_rng_normal<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(out, n, mean, std, rng->key, rng->offset);
    CU_LAUNCHED(ctx);
    rng->offset += (uint64_t)n;
    return EX_OK;
}

#ifdef EXPLORA_HIP
static int cmp_u64(const void *x, const void *y) {
    const uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}
#endif

ex_status cu_rng_permutation(void *vctx, int32_t *out, int64_t n, ex_rng *rng) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && rng, CU_VENDOR ": rng_permutation: bad arguments");
    CU_ARG(n <= INT32_MAX, CU_VENDOR ": rng_permutation: n = %lld does not fit int32 indices", (long long)n);
    if (n == 0) return EX_OK;
    CU_ARG(out, CU_VENDOR ": rng_permutation: NULL output");
#ifdef EXPLORA_HIP
    /* no CUB on Debian's HIP: the same stable (key, index) sort on the host, then one upload */
    uint64_t *kv = (uint64_t *)malloc((size_t)n * sizeof *kv);
    int32_t *perm = (int32_t *)malloc((size_t)n * sizeof *perm);
    if (!kv || !perm) {
        free(kv);
        free(perm);
        EX_FAIL(NULL, EX_E_NOMEM, CU_VENDOR ": rng_permutation: out of host memory for n = %lld", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) /* key, then index: unique, so any sort is stable */
        kv[i] = ((uint64_t)cu_perm_key(rng->key, rng->offset, (uint64_t)i) << 32) | (uint64_t)i;
    qsort(kv, (size_t)n, sizeof *kv, cmp_u64);
    for (int64_t i = 0; i < n; i++) perm[i] = (int32_t)(kv[i] & 0xFFFFFFFFu);
    free(kv);
    const cudaError_t e = cudaMemcpyAsync(out, perm, (size_t)n * sizeof *perm, cudaMemcpyHostToDevice, ctx->stream);
    const cudaError_t e2 = e == cudaSuccess ? cudaStreamSynchronize(ctx->stream) : e;
    free(perm);
    CU_TRY(ctx, e2);
    rng->offset += (uint64_t)n;
    return EX_OK;
#else
    /* scratch: keys in, keys out, values in (n each, 256-byte aligned), then CUB's temporary storage */
    const size_t arr = ((size_t)n * 4 + 255) / 256 * 256;
    size_t temp_bytes = 0;
    CU_TRY(ctx, cub::DeviceRadixSort::SortPairs(NULL, temp_bytes, (const uint32_t *)NULL, (uint32_t *)NULL,
                                                (const int32_t *)NULL, (int32_t *)NULL, (int)n, 0, 24, ctx->stream));
    void *scr = NULL;
    EX_CHECK(cu_scratch(ctx, 3 * arr + temp_bytes, &scr));
    char *base = (char *)scr;
    uint32_t *keys_in = (uint32_t *)base, *keys_out = (uint32_t *)(base + arr);
    int32_t *vals_in = (int32_t *)(base + 2 * arr);
    void *temp = base + 3 * arr;
    k_rng_sort_keys<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(keys_in, vals_in, n, rng->key, rng->offset);
    CU_LAUNCHED(ctx);
    CU_TRY(ctx, cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, vals_in, out, (int)n, 0, 24,
                                                ctx->stream));
    rng->offset += (uint64_t)n;
    return EX_OK;
#endif
}

} /* extern "C" */
