/*
 * tests/hip_blas/fake_hipblas.c — a host-memory stand-in for libhipblas with the four entry points
 * backends/hip/hip_blas.c loads, implementing BLAS's column-major strided-batched sgemm from its
 * definition (C_b = alpha op(A_b) op(B_b) + beta C_b, op by 111 = N / 112 = T, leading dimensions
 * in column-major terms). test_hip_blas checks the backend's row-major wrapper against it.
 * Built without hipblasSgemmStridedBatched when FAKE_NO_SGEMM is defined.
 */
#include <stdint.h>
#include <stdlib.h>

static int g_handle; /* any non-NULL address */

int hipblasCreate(void **handle) {
    *handle = &g_handle;
    return 0;
}
int hipblasDestroy(void *handle) { return handle == &g_handle ? 0 : 3; }
int hipblasSetStream(void *handle, void *stream) {
    (void)stream;
    return handle == &g_handle ? 0 : 3;
}

#ifndef FAKE_NO_SGEMM
/* element (i, j) of op(X), X column-major with leading dimension ld */
static float at(const float *x, int op, int ld, int i, int j) { return op == 112 ? x[j + (int64_t)i * ld] : x[i + (int64_t)j * ld]; }

int hipblasSgemmStridedBatched(void *handle, int ta, int tb, int m, int n, int k, const float *alpha, const float *a,
                               int lda, int64_t sa, const float *b, int ldb, int64_t sb, const float *beta, float *c,
                               int ldc, int64_t sc, int batch) {
    if (handle != &g_handle || (ta != 111 && ta != 112) || (tb != 111 && tb != 112)) return 3;
    for (int q = 0; q < batch; q++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double acc = 0.0;
                for (int l = 0; l < k; l++) acc += (double)at(a + q * sa, ta, lda, i, l) * at(b + q * sb, tb, ldb, l, j);
                float *cij = c + q * sc + i + (int64_t)j * ldc;
                *cij = (float)(*alpha * acc + (*beta == 0.0f ? 0.0 : (double)*beta * *cij));
            }
    return 0;
}
#endif
