/*
 * tests/gpu_emu/include_cuda/cublasLt.h — the cuBLASLt types the CUDA backend's context declares, for
 * the GPU emulator's build of its NVIDIA-only kernels; there is no cuBLASLt on the emulator.
 */
#ifndef EXPLORA_GPU_EMU_CUBLASLT_H
#define EXPLORA_GPU_EMU_CUBLASLT_H

#include <stdint.h>

typedef struct emu_cublaslt *cublasLtHandle_t;
typedef struct cublasLtMatmulAlgo_t {
    uint64_t data[8];
} cublasLtMatmulAlgo_t;

#endif
