/*
 * tests/gpu_emu/include_cuda/mma.h — nvcuda::wmma on the GPU emulator (C++): 16x16x16 tiles of
 * __nv_bfloat16 or __half with fp32 accumulators, as the tensor-core attention uses them.
 *
 * A device spreads a fragment over the 32 lanes in an unspecified way; here every lane holds the
 * whole tile (row-major in x) and computes the whole product, the same in each lane. The kernels
 * that use these never read a fragment's elements (they go through shared memory), so that is
 * indistinguishable to them. Products are summed in k order in fp32, the operands widened
 * exactly; a tensor core's order of summation is unspecified.
 */
#ifndef EXPLORA_GPU_EMU_MMA_H
#define EXPLORA_GPU_EMU_MMA_H

#include <string.h>

#include <type_traits>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "hip/hip_runtime.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

inline float emu_widen(float v) { return v; }
inline float emu_widen(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float emu_widen(__half v) { return __half2float(v); }
inline void emu_narrow(float &d, float v) { d = v; }
inline void emu_narrow(__nv_bfloat16 &d, float v) { d = __float2bfloat16_rn(v); }
inline void emu_narrow(__half &d, float v) { d = __float2half_rn(v); }

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulator has 16x16x16 tiles only");
    static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
    static constexpr int num_elements = rows * cols;
    T x[num_elements];
};

template <typename Use, int M, int N, int K, typename T, typename Layout, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout> &f, V v) {
    for (int e = 0; e < f.num_elements; e++) emu_narrow(f.x[e], (float)v);
}

/* Loads and stores are warp-collective (emu_warp_collective): the tile moves once, when the last lane of
 * the warp arrives, so every lane gets the memory as the whole warp found it, as on a device. */
template <typename T> struct emu_tile_io {
    T *p; /* the tile's element (0, 0) */
    unsigned ld;
    bool col; /* element (r, c) at p[c ld + r], else p[r ld + c] */
    int rows, cols;
    const T *x; /* stores: the fragment (row-major) */
};

template <typename T> void emu_tile_load(void *arg, void *scratch) {
    const emu_tile_io<T> *a = (const emu_tile_io<T> *)arg;
    T *x = (T *)scratch;
    for (int r = 0; r < a->rows; r++)
        for (int c = 0; c < a->cols; c++)
            x[r * a->cols + c] = a->col ? a->p[(size_t)c * a->ld + r] : a->p[(size_t)r * a->ld + c];
}

template <typename T> void emu_tile_store(void *arg, void *scratch) {
    (void)scratch;
    const emu_tile_io<T> *a = (const emu_tile_io<T> *)arg;
    for (int r = 0; r < a->rows; r++)
        for (int c = 0; c < a->cols; c++)
            (a->col ? a->p[(size_t)c * a->ld + r] : a->p[(size_t)r * a->ld + c]) = a->x[r * a->cols + c];
}

template <typename T, int N> inline void emu_load(T (&x)[N], const T *p, unsigned ld, bool col, int rows, int cols) {
    static_assert(sizeof(T) * N <= EMU_COLLECTIVE_BYTES, "a tile larger than the collective buffer");
    emu_tile_io<T> a = {(T *)p, ld, col, rows, cols, nullptr};
    memcpy(x, emu_warp_collective(&emu_tile_load<T>, &a), sizeof x);
}

/* matrix_a / matrix_b: element (r, c) of the tile at p[r ld + c] (row_major) or p[c ld + r] (col_major). */
template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout> &f, const T *p, unsigned ld) {
    typedef fragment<Use, M, N, K, T, Layout> F;
    emu_load(f.x, p, ld, std::is_same<Layout, col_major>::value, F::rows, F::cols);
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p, unsigned ld, layout_t layout) {
    emu_load(f.x, p, ld, layout == mem_col_major, M, N);
}

template <int M, int N, int K>
inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f, unsigned ld, layout_t layout) {
    emu_tile_io<float> a = {p, ld, layout == mem_col_major, M, N, f.x};
    emu_warp_collective(&emu_tile_store<float>, &a);
}

/* d = a b + c, fp32 accumulation (d may be c). */
template <int M, int N, int K, typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float> &d, const fragment<matrix_a, M, N, K, T, LA> &a,
                     const fragment<matrix_b, M, N, K, T, LB> &b, const fragment<accumulator, M, N, K, float> &c) {
    float wa[M * K], wbt[N * K], out[M * N]; /* the operands widened once; b transposed, so sums run along rows */
    for (int e = 0; e < M * K; e++) wa[e] = emu_widen(a.x[e]);
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++) wbt[j * K + k] = emu_widen(b.x[k * N + j]);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = c.x[i * N + j];
            for (int k = 0; k < K; k++) s += wa[i * K + k] * wbt[j * K + k];
            out[i * N + j] = s;
        }
    for (int e = 0; e < M * N; e++) d.x[e] = out[e];
}

} // namespace wmma
} // namespace nvcuda

#endif
