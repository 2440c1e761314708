/*
 * tests/gpu_emu/include_cuda/cublas_v2.h — the cuBLAS types the CUDA backend's context declares, for
 * the GPU emulator's build of its NVIDIA-only kernels; there is no cuBLAS on the emulator.
 */
#ifndef EXPLORA_GPU_EMU_CUBLAS_V2_H
#define EXPLORA_GPU_EMU_CUBLAS_V2_H

typedef struct emu_cublas *cublasHandle_t;
typedef enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_SUPPORTED = 15 } cublasStatus_t;
typedef enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 } cublasComputeType_t;

#endif
