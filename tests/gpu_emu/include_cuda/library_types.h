/*
 * tests/gpu_emu/include_cuda/library_types.h — CUDA's data-type tags for the GPU emulator's cuBLAS and
 * cuBLASLt stand-ins (emu_cublas.c). The values are NVIDIA's, so a tag means the same on both sides.
 */
#ifndef EXPLORA_GPU_EMU_LIBRARY_TYPES_H
#define EXPLORA_GPU_EMU_LIBRARY_TYPES_H

typedef enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType_t;

#endif
