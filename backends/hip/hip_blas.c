/*
 * backends/hip/hip_blas.c — hipBLAS for the hip backend's GEMMs, loaded at run time.
 *
 * Debian ships no hipBLAS or rocBLAS, so the backend cannot link against them; a machine with
 * ROCm installed usually has libhipblas.so. With `[backend] gemm = auto` (the default) init
 * tries to dlopen it and to resolve the four functions below; when that works the linear
 * layers' GEMMs go to hipblasSgemmStridedBatched (fp32, like gemm_math = fp32 on CUDA), and
 * otherwise to the backend's own tiled kernel, which is what `gemm = own` always does.
 * `gemm = hipblas` makes a missing library an error. The attention matmuls stay on the own
 * kernel (their per-(batch, head) operands are not one strided batch).
 *
 * The prototypes are declared here from hipBLAS's documented C API (hipblas.h): a handle is an
 * opaque pointer, status 0 is success, HIPBLAS_OP_N/T are 111/112 (the CBLAS values), strides
 * are 64-bit, pointer mode defaults to host scalars. Only these entry points are used.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hip_blas.h"

typedef int (*fn_create)(void **handle);
typedef int (*fn_destroy)(void *handle);
typedef int (*fn_set_stream)(void *handle, void *stream);
typedef int (*fn_sgemm_sb)(void *handle, int transa, int transb, int m, int n, int k, const float *alpha,
                           const float *a, int lda, int64_t stride_a, const float *b, int ldb, int64_t stride_b,
                           const float *beta, float *c, int ldc, int64_t stride_c, int batch);

struct hip_blas {
    void *lib;
    void *handle;
    fn_create create;
    fn_destroy destroy;
    fn_set_stream set_stream;
    fn_sgemm_sb sgemm;
    char path[64];
};

#define HIPBLAS_OP_N 111
#define HIPBLAS_OP_T 112

int hip_blas_open_path(hip_blas **out, const char *path, void *stream, char *why, size_t cap) {
    *out = NULL;
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(why, cap, "%s", dlerror());
        return -1;
    }
    hip_blas *b = calloc(1, sizeof *b);
    if (!b) {
        dlclose(lib);
        snprintf(why, cap, "out of memory");
        return -1;
    }
    b->lib = lib;
    snprintf(b->path, sizeof b->path, "%s", strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
    static const char *const names[4] = {"hipblasCreate", "hipblasDestroy", "hipblasSetStream",
                                         "hipblasSgemmStridedBatched"};
    void *sym[4];
    for (int i = 0; i < 4; i++)
        if (!(sym[i] = dlsym(lib, names[i]))) {
            snprintf(why, cap, "%s lacks %s", path, names[i]);
            hip_blas_close(b);
            return -1;
        }
    /* dlsym returns void *, and ISO C has no cast from it to a function pointer: copy the bits */
    memcpy(&b->create, &sym[0], sizeof b->create);
    memcpy(&b->destroy, &sym[1], sizeof b->destroy);
    memcpy(&b->set_stream, &sym[2], sizeof b->set_stream);
    memcpy(&b->sgemm, &sym[3], sizeof b->sgemm);
    int s = b->create(&b->handle);
    if (s != 0 || !b->handle) {
        snprintf(why, cap, "hipblasCreate failed (status %d)", s);
        b->handle = NULL;
        hip_blas_close(b);
        return -1;
    }
    if ((s = b->set_stream(b->handle, stream)) != 0) {
        snprintf(why, cap, "hipblasSetStream failed (status %d)", s);
        hip_blas_close(b);
        return -1;
    }
    *out = b;
    return 0;
}

int hip_blas_open(hip_blas **out, void *stream, char *why, size_t cap) {
    /* the development link first, then the sonames of ROCm 7, 6, 5 and older */
    static const char *const names[] = {"libhipblas.so", "libhipblas.so.3", "libhipblas.so.2", "libhipblas.so.1",
                                        "libhipblas.so.0"};
    char first[256] = "";
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (hip_blas_open_path(out, names[i], stream, why, cap) == 0) return 0;
        if (i == 0) snprintf(first, sizeof first, "%s", why);
    }
    snprintf(why, cap, "%s", first); /* the reason for the plain name is the telling one */
    return -1;
}

void hip_blas_close(hip_blas *b) {
    if (!b) return;
    if (b->handle && b->destroy) b->destroy(b->handle);
    if (b->lib) dlclose(b->lib);
    free(b);
}

const char *hip_blas_name(const hip_blas *b) { return b ? b->path : "none"; }

int hip_blas_sgemm(hip_blas *b, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                   int64_t stride_a, const float *bm, int ldb, int64_t stride_b, float beta, float *c, int ldc,
                   int64_t stride_c, int batch) {
    /* row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: B first, m and n exchanged */
    return b->sgemm(b->handle, trans_b ? HIPBLAS_OP_T : HIPBLAS_OP_N, trans_a ? HIPBLAS_OP_T : HIPBLAS_OP_N, n, m, k,
                    &alpha, bm, ldb, stride_b, a, lda, stride_a, &beta, c, ldc, stride_c, batch);
}
