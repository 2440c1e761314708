/*
 * tests/gpu_emu/include_cuda/cuda_fp16.h — __half for the GPU emulator (C++): IEEE binary16 bits,
 * conversions from fp32 rounded to nearest even (subnormals, overflow to infinity past 65504).
 */
#ifndef EXPLORA_GPU_EMU_CUDA_FP16_H
#define EXPLORA_GPU_EMU_CUDA_FP16_H

#include <stdint.h>
#include <string.h>

struct __half {
    uint16_t bits;
};

inline __half __float2half_rn(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7FFFFFFFu;
    uint32_t h;
    if (ax >= 0x7F800000u) h = 0x7C00u | (ax > 0x7F800000u ? 0x200u : 0u); /* inf, NaN */
    else if (ax >= 0x477FF000u) h = 0x7C00u;                                /* rounds past 65504 */
    else if (ax < 0x38800000u) {                                            /* below 2^-14: subnormal */
        if (ax < 0x33000000u) h = 0;
        else {
            const int shift = 126 - (int)(ax >> 23); /* value / 2^-24 = m 2^(e - 126) */
            const uint32_t m = (ax & 0x7FFFFFu) | 0x800000u, half = 1u << (shift - 1);
            const uint32_t rem = m & ((1u << shift) - 1);
            h = m >> shift;
            if (rem > half || (rem == half && (h & 1u))) h++;
        }
    } else {
        const uint32_t r = ax - 0x38000000u; /* exponent rebiased from 127 to 15 */
        const uint32_t rem = r & 0x1FFFu;
        h = r >> 13;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    }
    __half out;
    out.bits = (uint16_t)(sign | h);
    return out;
}

inline float __half2float(__half v) {
    const uint32_t sign = (uint32_t)(v.bits & 0x8000u) << 16, e = (v.bits >> 10) & 0x1Fu, m = v.bits & 0x3FFu;
    uint32_t u;
    if (e == 0x1F) u = sign | 0x7F800000u | (m << 13);
    else if (e) u = sign | ((e + 112u) << 23) | (m << 13);
    else if (!m) u = sign;
    else { /* subnormal: m 2^-24, exact in fp32 */
        float f = (float)m * (1.0f / 16777216.0f);
        memcpy(&u, &f, sizeof u);
        u |= sign;
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#endif
