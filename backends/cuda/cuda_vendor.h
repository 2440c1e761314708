/*
 * backends/cuda/cuda_vendor.h — the GPU vendor's runtime API under the CUDA names the backend's
 * sources use, so that one set of sources builds two plugins:
 *
 *   explora-backend-cuda  nvcc + the CUDA runtime + cuBLAS (EXPLORA_HIP undefined)
 *   explora-backend-hip   hipcc + the HIP runtime (EXPLORA_HIP defined, backends/hip): every
 *                         cuda* name below maps to its hip* twin; no cuBLAS (GEMMs run the own
 *                         kernel of cuda_gemm_tiled.cu), no NCCL, no CUB (the permutation sort
 *                         runs on the host)
 *
 * Valid C and C++: the plugin's .c files include it through cuda_internal.h, compiled by the C
 * compiler against the runtime's C API; the .cu files through cuda_common.cuh, compiled by nvcc
 * or by hipcc -x hip.
 *
 * Warp width CU_WARP: 32 on NVIDIA. On AMD it is the target's wavefront, fixed per target at
 * compile time (__AMDGCN_WAVEFRONT_SIZE: 64 on CDNA such as gfx90a, 32 on RDNA such as gfx1030;
 * HIP does not run GFX10+ in wave64). Only device code depends on it (the shuffle reductions of
 * cuda_common.cuh, with blocks of 256 threads: a multiple of either); the host pass sees 64,
 * which it uses only as the width of one-thread kernels' launches.
 */
#ifndef EXPLORA_CUDA_VENDOR_H
#define EXPLORA_CUDA_VENDOR_H

#ifdef EXPLORA_HIP

#ifndef __HIP_PLATFORM_AMD__
#define __HIP_PLATFORM_AMD__
#endif
#include <hip/hip_runtime_api.h>

#ifndef CU_VENDOR /* the GPU emulator's build (tests/gpu_emu) names itself */
#define CU_VENDOR "hip"
#endif
#if defined(__HIP_DEVICE_COMPILE__) && defined(__AMDGCN_WAVEFRONT_SIZE)
#define CU_WARP __AMDGCN_WAVEFRONT_SIZE
#else
#define CU_WARP 64
#endif

#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaGetLastError hipGetLastError
#define cudaGetErrorString hipGetErrorString
#define cudaGetErrorName hipGetErrorName
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaSetDevice hipSetDevice
#define cudaDeviceProp hipDeviceProp_t
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaDeviceGetPCIBusId hipDeviceGetPCIBusId
#define cudaMalloc hipMalloc
#define cudaFree hipFree
#define cudaMallocHost(p, n) hipHostMalloc((p), (n), 0)
#define cudaFreeHost hipHostFree
#define cudaMemGetInfo hipMemGetInfo
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaMemcpy2DAsync hipMemcpy2DAsync
#define cudaMemsetAsync hipMemsetAsync
#define cudaMemcpyKind hipMemcpyKind
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define cudaStream_t hipStream_t
#define cudaStreamCreateWithFlags hipStreamCreateWithFlags
#define cudaStreamNonBlocking hipStreamNonBlocking
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaStreamDestroy hipStreamDestroy

/* HIP's shuffles take no mask: a wave runs in lockstep */
#define __shfl_xor_sync(mask, v, lane) __shfl_xor((v), (lane))
#define __shfl_sync(mask, v, lane) __shfl((v), (lane))

#else /* CUDA */

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#ifndef CU_VENDOR /* the GPU emulator's build (tests/gpu_emu) names itself */
#define CU_VENDOR "cuda"
#endif
#define CU_WARP 32

#endif

/* Largest head size of the fused attention kernels (their shared memory per block). */
#define CU_FUSED_MAX_HS (CU_WARP == 32 ? 128 : 64)

#endif
