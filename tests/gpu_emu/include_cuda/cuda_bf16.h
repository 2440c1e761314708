/*
 * tests/gpu_emu/include_cuda/cuda_bf16.h — __nv_bfloat16 for the GPU emulator (C++): the 16 stored
 * bits, conversions rounded to nearest even as on the device (NaN stays a quiet NaN).
 */
#ifndef EXPLORA_GPU_EMU_CUDA_BF16_H
#define EXPLORA_GPU_EMU_CUDA_BF16_H

#include <stdint.h>
#include <string.h>

struct __nv_bfloat16 {
    uint16_t bits;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    __nv_bfloat16 h;
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) h.bits = (uint16_t)((u >> 16) | 0x40u);
    else h.bits = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    return h;
}

inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t u = (uint32_t)h.bits << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#endif
