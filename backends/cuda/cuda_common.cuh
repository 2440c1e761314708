/*
 * backends/cuda/cuda_common.cuh — device helpers shared by the .cu files of the
 * CUDA backend: thread-geometry constants, grid-stride loop bounds and the
 * fixed-order warp and block reductions.
 *
 * Included first by every .cu file: it defines EX_RNG_HD so that explora/rng.h
 * (pulled in through backend.h) compiles its Philox functions for host and
 * device alike.
 *
 * Block reductions combine lanes with xor-butterfly shuffles (every lane ends
 * with the same value: each step adds the same two operands, in either order,
 * and float addition is commutative), then the per-warp results in warp order.
 * For a fixed block size the result is therefore a fixed function of the
 * inputs: bitwise reproducible.
 */
#ifndef EXPLORA_CUDA_COMMON_CUH
#define EXPLORA_CUDA_COMMON_CUH

#define EX_RNG_HD __host__ __device__

#ifdef EXPLORA_HIP
#include <hip/hip_runtime.h>
#endif

#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"

/* bf16 storage: cu_bf16 and cu_float2bf16 (round to nearest even, as ex_f32_to_bf16 on the host). */
#ifdef EXPLORA_HIP
typedef uint16_t cu_bf16; /* bf16 bits */
/* round to nearest even; NaN stays a quiet NaN */
__device__ __forceinline__ cu_bf16 cu_float2bf16(float f) {
    const uint32_t u = __float_as_uint(f);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return (cu_bf16)((u >> 16) | 0x40u);
    return (cu_bf16)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
typedef __nv_bfloat16 cu_bf16;
#define cu_float2bf16 __float2bfloat16_rn
#endif

/* Store an fp32 result as the output's type: kernels templated on their output write through these. */
__device__ __forceinline__ void cu_store(float *p, float v) { *p = v; }
__device__ __forceinline__ void cu_store(cu_bf16 *p, float v) { *p = cu_float2bf16(v); }
/* Load a stored value as fp32 (exact): kernels templated on their input read through these. */
__device__ __forceinline__ float cu_load(const float *p) { return *p; }
#ifdef EXPLORA_HIP
__device__ __forceinline__ float cu_load(const cu_bf16 *p) { return __uint_as_float((uint32_t)*p << 16); }
#else
__device__ __forceinline__ float cu_load(const cu_bf16 *p) { return __bfloat162float(*p); }
#endif

/* Warp width CU_WARP: cuda_vendor.h (32 on NVIDIA, 64 in the HIP build). */

/* Threads per block for elementwise kernels and for one-block-per-row kernels. */
#define CU_THREADS 256
#define CU_ROW_THREADS 256
/* Upper bound on blocks of a grid-stride elementwise launch. */
#define CU_MAX_BLOCKS ((int64_t)65535 * 8)

/* Blocks for an elementwise launch over n items (grid-stride loops cover the rest). */
static inline unsigned int cu_blocks(int64_t n) {
    int64_t b = CU_CEIL_DIV(n, (int64_t)CU_THREADS);
    if (b < 1) b = 1;
    if (b > CU_MAX_BLOCKS) b = CU_MAX_BLOCKS;
    return (unsigned int)b;
}

/* Grid-stride loop over [0, n). */
#define CU_FOR(i, n)                                                                         \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                 \
         i += (int64_t)blockDim.x * gridDim.x)

__device__ __forceinline__ float cu_warp_sum(float v) {
    for (int o = CU_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double cu_warp_sum_d(double v) {
    for (int o = CU_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* max that lets NaN through (nothing compares greater than NaN). */
__device__ __forceinline__ float cu_nanmax(float a, float b) { return (a > b || a != a) ? a : b; }

__device__ __forceinline__ float cu_warp_max(float v) {
    for (int o = CU_WARP / 2; o > 0; o >>= 1) v = cu_nanmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of CU_WARP, <= 1024); every thread gets
 * the result. `sh` holds at least CU_WARP + 1 floats of shared memory. */
__device__ __forceinline__ float cu_block_sum(float v, float *sh) {
    const int lane = threadIdx.x % CU_WARP, wid = threadIdx.x / CU_WARP, nw = blockDim.x / CU_WARP;
    v = cu_warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous reduction */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float w = lane < nw ? sh[lane] : 0.0f;
        w = cu_warp_sum(w);
        if (lane == 0) sh[CU_WARP] = w;
    }
    __syncthreads();
    return sh[CU_WARP];
}

__device__ __forceinline__ double cu_block_sum_d(double v, double *sh) {
    const int lane = threadIdx.x % CU_WARP, wid = threadIdx.x / CU_WARP, nw = blockDim.x / CU_WARP;
    v = cu_warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        double w = lane < nw ? sh[lane] : 0.0;
        w = cu_warp_sum_d(w);
        if (lane == 0) sh[CU_WARP] = w;
    }
    __syncthreads();
    return sh[CU_WARP];
}

__device__ __forceinline__ float cu_block_max(float v, float *sh) {
    const int lane = threadIdx.x % CU_WARP, wid = threadIdx.x / CU_WARP, nw = blockDim.x / CU_WARP;
    v = cu_warp_max(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float w = lane < nw ? sh[lane] : -INFINITY;
        w = cu_warp_max(w);
        if (lane == 0) sh[CU_WARP] = w;
    }
    __syncthreads();
    return sh[CU_WARP];
}

#endif /* EXPLORA_CUDA_COMMON_CUH */
