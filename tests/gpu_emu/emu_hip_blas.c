/*
 * tests/gpu_emu/emu_hip_blas.c — the GPU emulator's backends/hip/hip_blas.c: hipBLAS never opens.
 *
 * The emulator's "device" memory is host memory, so a real libhipblas (present on a ROCm machine)
 * must never be handed its pointers: with `gemm = auto` the backend takes its own GEMM kernel, as
 * on any machine without hipBLAS, and `gemm = hipblas` is the usual configuration error.
 */
#include <stdio.h>

#include "hip_blas.h"

int hip_blas_open(hip_blas **out, void *stream, char *why, size_t cap) {
    return hip_blas_open_path(out, "libhipblas.so", stream, why, cap);
}

int hip_blas_open_path(hip_blas **out, const char *path, void *stream, char *why, size_t cap) {
    (void)stream;
    *out = NULL;
    snprintf(why, cap, "%s is not loaded on the GPU emulator (its memory is host memory)", path);
    return -1;
}

void hip_blas_close(hip_blas *b) { (void)b; }

const char *hip_blas_name(const hip_blas *b) {
    (void)b;
    return "none";
}

int hip_blas_sgemm(hip_blas *b, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                   int64_t stride_a, const float *bm, int ldb, int64_t stride_b, float beta, float *c, int ldc,
                   int64_t stride_c, int batch) {
    (void)b, (void)trans_a, (void)trans_b, (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda;
    (void)stride_a, (void)bm, (void)ldb, (void)stride_b, (void)beta, (void)c, (void)ldc, (void)stride_c, (void)batch;
    return -1; /* never reached: no handle is ever opened */
}
