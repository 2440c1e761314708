/*
 * tests/gpu_emu/include/hip/hip_runtime.h — the device side of the GPU emulator (C++ only): what the
 * backend's .cu files use of HIP's kernel language, on the CPU.
 *
 * Execution model (tests/gpu_emu/gpu_emu.cpp): a launch runs its blocks one after another; the
 * threads of a block are fibers on one OS thread, switched only at __syncthreads(), warp shuffles
 * and warp-collective operations, so a run is deterministic. The first thread that can go on runs
 * next, so each warp runs as far as it can before the next one starts. A barrier waits for every thread of the block that has not
 * returned; a shuffle for every lane of the warp (EMU_WARP wide, __AMDGCN_WAVEFRONT_SIZE: 64 or 32),
 * and reading a lane that has returned or is not at the same shuffle stops the run with a message.
 * EXPLORA_GPU_EMU_ORDER=reverse runs the blocks and the threads in reverse order, so results that
 * depend on the order (a missing barrier, two blocks writing one element) change.
 *
 * __shared__ variables are function statics: one copy, which the blocks use in turn, as each SM's
 * shared memory is used by the blocks resident on it.
 */
#ifndef EXPLORA_GPU_EMU_HIP_RUNTIME_H
#define EXPLORA_GPU_EMU_HIP_RUNTIME_H

#ifndef __cplusplus
#error "hip/hip_runtime.h (GPU emulator) is C++ only"
#endif

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#include "hip_runtime_api.h"

#ifndef __AMDGCN_WAVEFRONT_SIZE
#error "the GPU emulator needs __AMDGCN_WAVEFRONT_SIZE (64 or 32) at compile time"
#endif
#define EMU_WARP __AMDGCN_WAVEFRONT_SIZE

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

/* The running thread's coordinates (set by the scheduler at every switch). */
extern dim3 emu_thread_idx, emu_block_idx, emu_block_dim, emu_grid_dim;
/* The launch's dynamic shared memory (extern __shared__ arrays). */
extern unsigned char *emu_dynamic_smem;
#define threadIdx emu_thread_idx
#define blockIdx emu_block_idx
#define blockDim emu_block_dim
#define gridDim emu_grid_dim

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

void emu_syncthreads(void);
#define __syncthreads() emu_syncthreads()
/* Wait for every lane of the calling warp. */
void emu_warp_sync(void);
/* A warp-collective operation: when the last lane of the warp arrives, fn(arg, scratch) runs once, with
 * the memory as the whole warp finds it; every lane then gets the warp's scratch (EMU_COLLECTIVE_BYTES,
 * valid until the warp's next collective). The emulated WMMA loads and stores tiles through it. */
#define EMU_COLLECTIVE_BYTES 1024
const void *emu_warp_collective(void (*fn)(void *arg, void *scratch), void *arg);
/* The most dynamic shared memory a launch may have (EMU_MAX_DYNAMIC_SMEM at build time). */
size_t emu_max_dynamic_smem(void);

[[noreturn]] void emu_trap(const char *file, int line);
#define __trap() emu_trap(__FILE__, __LINE__)

/* The calling lane's value exchanged with lane src (0 .. EMU_WARP-1) of its warp; every lane of the
 * warp takes part. */
uint64_t emu_shfl_bits(uint64_t bits, int src);
int emu_lane(void);

template <typename T> inline T emu_shfl(T v, int src) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = emu_shfl_bits(bits, src);
    T r;
    memcpy(&r, &bits, sizeof r);
    return r;
}
/* HIP's semantics: lanes in segments of `width`; a source outside the caller's segment gives its own value. */
template <typename T> inline T __shfl_xor(T v, int mask, int width = EMU_WARP) {
    const int lane = emu_lane();
    int src = lane ^ mask;
    if (src >= ((lane + width) & ~(width - 1))) src = lane;
    return emu_shfl(v, src);
}
template <typename T> inline T __shfl(T v, int src, int width = EMU_WARP) {
    const int lane = emu_lane();
    return emu_shfl(v, (lane & ~(width - 1)) + (src & (width - 1)));
}

inline float __uint_as_float(unsigned int u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    memcpy(&u, &f, sizeof u);
    return u;
}
/* Separately rounded product and sum (never contracted into an fma: the emulator builds with
 * -ffp-contract=off). */
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

/* Launches, as launch_rewrite.c writes them: the body calls the kernel with its arguments. */
typedef void (*emu_body_fn)(void *);
void emu_run(dim3 grid, dim3 block, size_t smem, hipStream_t stream, emu_body_fn fn, void *body, const char *file,
             int line);
template <typename F> void emu_call(void *body) { (*(F *)body)(); }
template <typename F>
inline void emu_launch(dim3 grid, dim3 block, size_t smem, hipStream_t stream, F &&body,
                       const char *file = __builtin_FILE(), int line = __builtin_LINE()) {
    emu_run(grid, block, smem, stream, &emu_call<typename std::remove_reference<F>::type>, (void *)&body, file, line);
}
template <typename F>
inline void emu_launch(dim3 grid, dim3 block, size_t smem, F &&body, const char *file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
    emu_run(grid, block, smem, NULL, &emu_call<typename std::remove_reference<F>::type>, (void *)&body, file, line);
}
template <typename F>
inline void emu_launch(dim3 grid, dim3 block, F &&body, const char *file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
    emu_run(grid, block, 0, NULL, &emu_call<typename std::remove_reference<F>::type>, (void *)&body, file, line);
}

#endif
