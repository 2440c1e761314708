/*
 * tests/gpu_emu/include_cuda/cuda_runtime_api.h — the GPU emulator under CUDA's names, for the
 * CUDA build of backends/cuda it runs (the gpu_emu_cuda plugin, and test_gpu_emu_tc): the emulator's
 * HIP-named runtime (../include/hip) with the CUDA names mapped onto it, and, in C++, its device
 * side with CUDA's warp intrinsics. Only what those sources use is here.
 */
#ifndef EXPLORA_GPU_EMU_CUDA_RUNTIME_API_H
#define EXPLORA_GPU_EMU_CUDA_RUNTIME_API_H

#include "hip/hip_runtime_api.h"

#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaGetLastError hipGetLastError
#define cudaGetErrorString hipGetErrorString
#define cudaGetErrorName hipGetErrorName
#define cudaStream_t hipStream_t
#define cudaMalloc hipMalloc
#define cudaFree hipFree
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaMemsetAsync hipMemsetAsync
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaStreamQuery hipStreamQuery
#define cudaErrorNotReady hipErrorNotReady
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaSetDevice hipSetDevice
#define cudaGetDevice hipGetDevice
#define cudaDeviceProp hipDeviceProp_t
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaDeviceGetPCIBusId hipDeviceGetPCIBusId
#define cudaMallocHost(p, n) hipHostMalloc((p), (n), 0)
#define cudaFreeHost hipHostFree
#define cudaMemGetInfo hipMemGetInfo
#define cudaMemcpy2DAsync hipMemcpy2DAsync
#define cudaMemcpyKind hipMemcpyKind
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define cudaErrorInvalidValue hipErrorInvalidValue
#define cudaStreamCreateWithFlags hipStreamCreateWithFlags
#define cudaStreamNonBlocking hipStreamNonBlocking
#define cudaStreamDestroy hipStreamDestroy

typedef enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;
struct cudaFuncAttributes {
    int ptxVersion, binaryVersion, maxThreadsPerBlock;
    size_t sharedSizeBytes, maxDynamicSharedSizeBytes;
};

#ifdef __cplusplus
#include "hip/hip_runtime.h"

#define __shfl_xor_sync(mask, v, lane) __shfl_xor((v), (lane))
#define __shfl_sync(mask, v, lane) __shfl((v), (lane))

/* A kernel's dynamic shared memory may be raised up to the emulator's limit (an sm_90's 227 KiB). */
template <typename K> inline hipError_t cudaFuncSetAttribute(K *kernel, cudaFuncAttribute attr, int value) {
    (void)kernel;
    return attr == cudaFuncAttributeMaxDynamicSharedMemorySize && value >= 0 && (size_t)value <= emu_max_dynamic_smem()
               ? hipSuccess
               : hipErrorInvalidValue;
}
/* The kernels are "compiled" for the __CUDA_ARCH__ the emulator build defines. */
template <typename K> inline hipError_t cudaFuncGetAttributes(struct cudaFuncAttributes *fa, K *kernel) {
    (void)kernel;
    *fa = cudaFuncAttributes();
    fa->ptxVersion = fa->binaryVersion = __CUDA_ARCH__ / 10;
    fa->maxThreadsPerBlock = 1024;
    return hipSuccess;
}
#endif

#endif
