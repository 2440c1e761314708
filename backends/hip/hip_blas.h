/*
 * backends/hip/hip_blas.h — hipBLAS loaded at run time (hip_blas.c): open, close, one fp32
 * strided-batched GEMM in the row-major convention of ex_gemm_desc. Statuses are hipBLAS's
 * (0 = success).
 */
#ifndef EXPLORA_HIP_BLAS_H
#define EXPLORA_HIP_BLAS_H

#include <stddef.h>
#include <stdint.h>

typedef struct hip_blas hip_blas;

/* Load libhipblas, create a handle bound to `stream` (a hipStream_t). 0 on success; -1 with the
 * reason in why. */
int hip_blas_open(hip_blas **out, void *stream, char *why, size_t cap);
/* The same from one library file (a path or a soname for dlopen); the tests load stand-ins with it. */
int hip_blas_open_path(hip_blas **out, const char *path, void *stream, char *why, size_t cap);
void hip_blas_close(hip_blas *b);
/* The library's file name, for the device description. */
const char *hip_blas_name(const hip_blas *b);
/* C_b (m, n) = alpha op(A_b) op(B_b) + beta C_b, row-major, as ex_gemm_desc. */
int hip_blas_sgemm(hip_blas *b, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                   int64_t stride_a, const float *bm, int ldb, int64_t stride_b, float beta, float *c, int ldc,
                   int64_t stride_c, int batch);

#endif /* EXPLORA_HIP_BLAS_H */
