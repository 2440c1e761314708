/*
 * tests/gpu_emu/emu_cublas.c — cuBLAS and cuBLASLt stand-ins for the GPU emulator's build of the whole
 * CUDA backend (the gpu_emu_cuda plugin): the calls backends/cuda makes, computed on the host.
 *
 * They are written from the libraries' documented contracts, not from the backend's code, so that what
 * the backend passes them is checked rather than mirrored:
 *   - column-major operands: op(A) is m x k, op(B) k x n, C m x n; A(i, l) = A[i + l lda] untransposed and
 *     A[l + i lda] transposed, likewise B; lda >= max(1, rows of A as stored), ldb and ldc the same;
 *   - C = alpha op(A) op(B) + beta C, with C not read when beta is 0 (it may hold NaN);
 *   - the (A, B, C) type and compute-type pairs cublasGemmEx accepts; FAST_TF32 / FAST_16BF / FAST_16F
 *     round fp32 inputs to that precision (to nearest) before the products;
 *   - batched forms: strides in elements (GemmStridedBatchedEx), or arrays of pointers that live in device
 *     memory (GemmBatchedEx: the emulator's device memory is host memory, so they are read here);
 *   - cuBLASLt: layouts (type, rows, cols, ld >= rows), a descriptor with TRANSA/TRANSB, the BIAS epilogue
 *     (D = alpha op(A) op(B) + beta C + bias[row], the bias vector's length the rows of D) and its bias
 *     type; a heuristic that returns one algorithm for the shapes and alignments it was asked about.
 * Stricter than the libraries where a device would show the fault less plainly: a cuBLASLt matmul whose
 * pointers are less aligned than the preference promised, or whose shapes differ from the ones its
 * algorithm was chosen for, fails (a device may fault with a misaligned address, or pick a kernel
 * that does not fit). Sums are in double, in order of the inner index. C of a type other than fp32 is
 * not supported (the backend never asks for it). The computations read device memory inside
 * emu_device_enter / emu_device_leave, as the emulator's kernels do (device_memory.cpp).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>
#include <cublas_v2.h>

struct emu_cublas {
    cudaStream_t stream;
    int pointer_mode, atomics;
};
struct emu_cublaslt {
    int unused;
};

static const char *status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasGetStatusString(cublasStatus_t s) { return status_name(s); }

/* A refused call says why on stderr (the backend reports only the status), then returns the status. */
static cublasStatus_t refuse(cublasStatus_t s, const char *fn, const char *why) {
    fprintf(stderr, "gpu emulator: %s: %s (%s)\n", fn, why, status_name(s));
    return s;
}

/* ---- element types and the rounding of the fast compute types ---- */

static float from_bf16(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float from_f16(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
    if (exp == 0x1Fu) {
        const uint32_t u = sign | 0x7F800000u | (man << 13);
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    const float mag = exp ? ldexpf((float)(man | 0x400u), (int)exp - 25) : ldexpf((float)man, -24);
    return sign ? -mag : mag;
}

/* fp32 rounded to `bits` mantissa bits (to nearest, ties to even), kept in an fp32; NaN and infinity as they are */
static float round_mantissa(float f, int bits) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7F800000u) == 0x7F800000u) return f;
    const int drop = 23 - bits;
    const uint32_t half = 1u << (drop - 1), keep_lsb = (u >> drop) & 1u;
    u = (u + half - 1 + keep_lsb) & ~((1u << drop) - 1);
    memcpy(&f, &u, sizeof f);
    return f;
}

/* fp32 to the nearest binary16 value (for FAST_16F), as fp32 */
static float round_f16(float f) {
    if (!isfinite(f)) return f;
    const float a = fabsf(f);
    if (a >= 65520.0f) return copysignf(INFINITY, f);
    if (a < 6.103515625e-05f) return copysignf(nearbyintf(a * 16777216.0f) / 16777216.0f, f); /* subnormal: 2^-24 steps */
    return round_mantissa(f, 10);
}

static int type_size(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

static float load(const void *base, cudaDataType_t t, int64_t i) {
    if (t == CUDA_R_32F) return ((const float *)base)[i];
    const uint16_t h = ((const uint16_t *)base)[i];
    return t == CUDA_R_16BF ? from_bf16(h) : from_f16(h);
}

static float round_for(float v, cudaDataType_t t, cublasComputeType_t c) {
    if (t != CUDA_R_32F) return v; /* 16-bit inputs go to the tensor cores as they are */
    switch (c) {
    case CUBLAS_COMPUTE_32F_FAST_TF32: return round_mantissa(v, 10);
    case CUBLAS_COMPUTE_32F_FAST_16BF: return round_mantissa(v, 7);
    case CUBLAS_COMPUTE_32F_FAST_16F: return round_f16(v);
    default: return v;
    }
}

static int known_type(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16BF || t == CUDA_R_16F; }

/* cublasGemmEx's table, restricted to fp32 C: 32F with (32F, 32F), (16BF, 16BF) or (16F, 16F); the fast
 * fp32 compute types with (32F, 32F) only. */
static cublasStatus_t check_types(cudaDataType_t ta, cudaDataType_t tb, cudaDataType_t tc, cublasComputeType_t c,
                                  const char *fn) {
    if (!known_type(ta) || !known_type(tb) || !known_type(tc))
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "a data type the emulator does not know");
    if (tc != CUDA_R_32F) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "C other than fp32 (not emulated)");
    if (ta != tb) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "A and B of different types");
    switch (c) {
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC: return CUBLAS_STATUS_SUCCESS;
    case CUBLAS_COMPUTE_32F_FAST_TF32:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_16F:
        if (ta != CUDA_R_32F)
            return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "a fast fp32 compute type with 16-bit inputs");
        return CUBLAS_STATUS_SUCCESS;
    }
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "an unknown compute type");
}

/* One column-major product, C (m x n, ldc) = alpha op(A) op(B) + beta C (+ bias[i] when bias is given). op(A) is
 * gathered row by row and op(B) column by column into fp32 copies (rounded for the compute type), then each
 * element is a double sum over l in order. */
static cublasStatus_t product(int ta_t, int tb_t, int64_t m, int64_t n, int64_t k, float alpha, const void *A,
                              cudaDataType_t ta, int64_t lda, const void *B, cudaDataType_t tb, int64_t ldb,
                              float beta, const float *C, int64_t ldc, float *D, int64_t ldd, const float *bias,
                              cublasComputeType_t compute) {
    float *ra = malloc(sizeof(float) * (size_t)(m * k + 1)), *cb = malloc(sizeof(float) * (size_t)(n * k + 1));
    if (!ra || !cb) {
        free(ra);
        free(cb);
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    for (int64_t i = 0; i < m; i++)
        for (int64_t l = 0; l < k; l++)
            ra[i * k + l] = round_for(load(A, ta, ta_t ? l + i * lda : i + l * lda), ta, compute);
    for (int64_t j = 0; j < n; j++)
        for (int64_t l = 0; l < k; l++)
            cb[j * k + l] = round_for(load(B, tb, tb_t ? j + l * ldb : l + j * ldb), tb, compute);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            double s = 0.0;
            const float *x = ra + i * k, *y = cb + j * k;
            for (int64_t l = 0; l < k; l++) s += (double)x[l] * (double)y[l];
            double v = (double)alpha * s;
            if (beta != 0.0f) v += (double)beta * (double)C[i + j * ldc];
            if (bias) v += (double)bias[i];
            D[i + j * ldd] = (float)v;
        }
    free(ra);
    free(cb);
    return CUBLAS_STATUS_SUCCESS;
}

/* the leading-dimension rules of the gemm family */
static cublasStatus_t check_gemm(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                                 int k, int lda, int ldb, int ldc, int batch, const char *fn) {
    if (!h) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, fn, "no handle");
    if ((transa != CUBLAS_OP_N && transa != CUBLAS_OP_T) || (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "a transpose flag other than N or T");
    if (m < 0 || n < 0 || k < 0 || batch < 0) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "a negative size");
    const int arows = transa == CUBLAS_OP_N ? m : k, brows = transb == CUBLAS_OP_N ? k : n;
    if (lda < (arows > 1 ? arows : 1)) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "lda below the rows of A");
    if (ldb < (brows > 1 ? brows : 1)) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "ldb below the rows of B");
    if (ldc < (m > 1 ? m : 1)) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "ldc below m");
    if (h->pointer_mode != CUBLAS_POINTER_MODE_HOST)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "alpha and beta in device memory (not emulated)");
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = calloc(1, sizeof **handle);
    return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    return mode == CUBLAS_DEFAULT_MATH ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE) return CUBLAS_STATUS_INVALID_VALUE;
    handle->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetAtomicsMode(cublasHandle_t handle, cublasAtomicsMode_t mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != CUBLAS_ATOMICS_NOT_ALLOWED && mode != CUBLAS_ATOMICS_ALLOWED) return CUBLAS_STATUS_INVALID_VALUE;
    handle->atomics = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                          int m, int n, int k, const void *alpha, const void *A, cudaDataType_t Atype,
                                          int lda, long long strideA, const void *B, cudaDataType_t Btype, int ldb,
                                          long long strideB, const void *beta, void *C, cudaDataType_t Ctype, int ldc,
                                          long long strideC, int batchCount, cublasComputeType_t computeType,
                                          cublasGemmAlgo_t algo) {
    static const char fn[] = "cublasGemmStridedBatchedEx";
    (void)algo;
    cublasStatus_t s = check_gemm(handle, transa, transb, m, n, k, lda, ldb, ldc, batchCount, fn);
    if (s == CUBLAS_STATUS_SUCCESS) s = check_types(Atype, Btype, Ctype, computeType, fn);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
    if (!alpha || !beta || !C || (k > 0 && (!A || !B))) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "a NULL pointer");
    const float al = *(const float *)alpha, be = *(const float *)beta;
    emu_device_enter();
    for (int z = 0; z < batchCount && s == CUBLAS_STATUS_SUCCESS; z++) {
        float *c = (float *)C + (int64_t)z * strideC;
        s = product(transa == CUBLAS_OP_T, transb == CUBLAS_OP_T, m, n, k, al,
                    (const char *)A + (int64_t)z * strideA * type_size(Atype), Atype, lda,
                    (const char *)B + (int64_t)z * strideB * type_size(Btype), Btype, ldb, be, c, ldc, c, ldc, NULL,
                    computeType);
    }
    emu_device_leave();
    return s;
}

cublasStatus_t cublasGemmBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                                   int n, int k, const void *alpha, const void *const Aarray[], cudaDataType_t Atype,
                                   int lda, const void *const Barray[], cudaDataType_t Btype, int ldb,
                                   const void *beta, void *const Carray[], cudaDataType_t Ctype, int ldc,
                                   int batchCount, cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    static const char fn[] = "cublasGemmBatchedEx";
    (void)algo;
    cublasStatus_t s = check_gemm(handle, transa, transb, m, n, k, lda, ldb, ldc, batchCount, fn);
    if (s == CUBLAS_STATUS_SUCCESS) s = check_types(Atype, Btype, Ctype, computeType, fn);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
    if (!alpha || !beta || !Carray || (k > 0 && (!Aarray || !Barray)))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "a NULL pointer");
    const float al = *(const float *)alpha, be = *(const float *)beta;
    emu_device_enter(); /* the pointer arrays are in device memory too */
    for (int z = 0; z < batchCount && s == CUBLAS_STATUS_SUCCESS; z++) {
        if (!Carray[z] || (k > 0 && (!Aarray[z] || !Barray[z]))) {
            emu_device_leave();
            return refuse(CUBLAS_STATUS_EXECUTION_FAILED, fn, "a NULL matrix pointer in the batch's arrays");
        }
        float *c = (float *)Carray[z];
        s = product(transa == CUBLAS_OP_T, transb == CUBLAS_OP_T, m, n, k, al, Aarray[z], Atype, lda, Barray[z], Btype,
                    ldb, be, c, ldc, c, ldc, NULL, computeType);
    }
    emu_device_leave();
    return s;
}

/* ---- cuBLASLt ---- */

struct emu_lt_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t transa, transb;
    uint32_t epilogue;
    const void *bias;
    int32_t bias_type; /* -1: unset (the type of D) */
};
struct emu_lt_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
};
struct emu_lt_pref {
    uint64_t max_workspace;
    uint32_t align[4];
};

#define LT_ALGO_TAG 0x454d554c54414c47ull /* "EMULTALG": an algorithm from this heuristic */

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = calloc(1, sizeof **handle);
    return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute,
                                        cudaDataType_t scale_type) {
    if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
    *desc = NULL;
    if (scale_type != CUDA_R_32F)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescCreate", "a scale type other than fp32 with an fp32 compute type");
    struct emu_lt_desc *d = calloc(1, sizeof *d);
    if (!d) return CUBLAS_STATUS_ALLOC_FAILED;
    d->compute = compute, d->scale = scale_type, d->transa = d->transb = CUBLAS_OP_N;
    d->epilogue = CUBLASLT_EPILOGUE_DEFAULT, d->bias_type = -1;
    *desc = d;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    free(desc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size) {
    static const char fn[] = "cublasLtMatmulDescSetAttribute";
    if (!desc || !buf) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "no descriptor or value");
    /* each attribute has one type, and its size must be that type's */
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB: {
        int32_t v;
        if (size != sizeof v) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "a transpose given with the wrong size");
        memcpy(&v, buf, sizeof v);
        if (v != CUBLAS_OP_N && v != CUBLAS_OP_T) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "a transpose other than N or T");
        if (attr == CUBLASLT_MATMUL_DESC_TRANSA) desc->transa = v;
        else desc->transb = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
        if (size != sizeof(uint32_t)) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "the epilogue given with the wrong size");
        memcpy(&desc->epilogue, buf, sizeof desc->epilogue);
        if (desc->epilogue != CUBLASLT_EPILOGUE_DEFAULT && desc->epilogue != CUBLASLT_EPILOGUE_BIAS)
            return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "an epilogue the emulator does not have");
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (size != sizeof(void *)) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "the bias pointer given with the wrong size");
        memcpy(&desc->bias, buf, sizeof desc->bias);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
        if (size != sizeof(int32_t)) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "the bias type given with the wrong size");
        memcpy(&desc->bias_type, buf, sizeof desc->bias_type);
        return CUBLAS_STATUS_SUCCESS;
    }
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "an attribute the emulator does not have");
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
    static const char fn[] = "cublasLtMatrixLayoutCreate";
    if (!layout) return CUBLAS_STATUS_INVALID_VALUE;
    *layout = NULL;
    if (!known_type(type)) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "a data type the emulator does not know");
    if (rows > INT32_MAX || cols > INT32_MAX || ld < (int64_t)(rows > 1 ? rows : 1))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "ld below the rows of a column-major matrix, or a size past int32");
    struct emu_lt_layout *l = calloc(1, sizeof *l);
    if (!l) return CUBLAS_STATUS_ALLOC_FAILED;
    l->type = type, l->rows = rows, l->cols = cols, l->ld = ld;
    *layout = l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    free(layout);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
    if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
    struct emu_lt_pref *p = calloc(1, sizeof *p);
    if (!p) return CUBLAS_STATUS_ALLOC_FAILED;
    for (int i = 0; i < 4; i++) p->align[i] = 256; /* cuBLASLt assumes 256-byte alignment unless told less */
    *pref = p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    free(pref);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t size) {
    static const char fn[] = "cublasLtMatmulPreferenceSetAttribute";
    if (!pref || !buf) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "no preference or value");
    if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
        if (size != sizeof(uint64_t)) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "the workspace size given with the wrong size");
        memcpy(&pref->max_workspace, buf, sizeof pref->max_workspace);
        return CUBLAS_STATUS_SUCCESS;
    }
    if (attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
        uint32_t v;
        if (size != sizeof v) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "an alignment given with the wrong size");
        memcpy(&v, buf, sizeof v);
        if (v == 0 || (v & (v - 1))) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "an alignment that is not a power of two");
        pref->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "an attribute the emulator does not have");
}

/* The problem a descriptor and four layouts describe: m, n, k from D and op(A), checked against op(B) and C. */
static cublasStatus_t lt_problem(const struct emu_lt_desc *d, const struct emu_lt_layout *a,
                                 const struct emu_lt_layout *b, const struct emu_lt_layout *c,
                                 const struct emu_lt_layout *dd, int64_t *m, int64_t *n, int64_t *k, const char *fn) {
    if (!d || !a || !b || !c || !dd) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "a missing descriptor or layout");
    const int64_t am = d->transa == CUBLAS_OP_T ? (int64_t)a->cols : (int64_t)a->rows;
    const int64_t ak = d->transa == CUBLAS_OP_T ? (int64_t)a->rows : (int64_t)a->cols;
    const int64_t bk = d->transb == CUBLAS_OP_T ? (int64_t)b->cols : (int64_t)b->rows;
    const int64_t bn = d->transb == CUBLAS_OP_T ? (int64_t)b->rows : (int64_t)b->cols;
    if (am != (int64_t)dd->rows || bn != (int64_t)dd->cols || ak != bk)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "op(A), op(B) and D do not have matching shapes");
    if (c->rows != dd->rows || c->cols != dd->cols || c->type != dd->type)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "C and D differ in shape or type");
    cublasStatus_t s = check_types(a->type, b->type, dd->type, d->compute, fn);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (d->epilogue == CUBLASLT_EPILOGUE_BIAS && d->bias_type != -1 && d->bias_type != CUDA_R_32F)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "a bias type other than fp32 with fp32 D");
    *m = am, *n = bn, *k = ak;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int *returned) {
    static const char fn[] = "cublasLtMatmulAlgoGetHeuristic";
    if (!handle) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, fn, "no handle");
    if (!pref || requested < 1 || !results || !returned) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "bad arguments");
    *returned = 0;
    int64_t m, n, k;
    const cublasStatus_t s = lt_problem(desc, a, b, c, d, &m, &n, &k, fn);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    memset(&results[0], 0, sizeof results[0]);
    uint64_t *w = results[0].algo.data;
    w[0] = LT_ALGO_TAG;
    w[1] = (uint64_t)m, w[2] = (uint64_t)n, w[3] = (uint64_t)k;
    w[4] = ((uint64_t)pref->align[0] << 32) | pref->align[1];
    w[5] = ((uint64_t)pref->align[2] << 32) | pref->align[3];
    results[0].workspaceSize = 0;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

static int aligned_to(const void *p, uint64_t align) { return ((uintptr_t)p & (uintptr_t)(align - 1)) == 0; }

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t Adesc, const void *B, cublasLtMatrixLayout_t Bdesc,
                              const void *beta, const void *C, cublasLtMatrixLayout_t Cdesc, void *D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspaceSize, cudaStream_t stream) {
    static const char fn[] = "cublasLtMatmul";
    (void)workspace, (void)workspaceSize, (void)stream; /* the emulated algorithms need no workspace */
    if (!handle) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, fn, "no handle");
    int64_t m, n, k;
    cublasStatus_t s = lt_problem(desc, Adesc, Bdesc, Cdesc, Ddesc, &m, &n, &k, fn);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (!alpha || !beta || !D || (k > 0 && (!A || !B))) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "a NULL pointer");
    if (algo) {
        const uint64_t *w = algo->data;
        if (w[0] != LT_ALGO_TAG) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "an algorithm no heuristic returned");
        if (w[1] != (uint64_t)m || w[2] != (uint64_t)n || w[3] != (uint64_t)k)
            return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "an algorithm chosen for other shapes");
        const void *ptr[4] = {A, B, C, D};
        const uint64_t al[4] = {w[4] >> 32, w[4] & 0xFFFFFFFFu, w[5] >> 32, w[5] & 0xFFFFFFFFu};
        for (int i = 0; i < 4; i++)
            if (!aligned_to(ptr[i], al[i]))
                return refuse(CUBLAS_STATUS_EXECUTION_FAILED, fn,
                              "a matrix less aligned than the heuristic was told (a misaligned address on a device)");
    }
    const float *bias = NULL;
    if (desc->epilogue == CUBLASLT_EPILOGUE_BIAS) {
        if (!desc->bias) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "the BIAS epilogue without a bias pointer");
        bias = desc->bias;
    }
    const float al = *(const float *)alpha, be = *(const float *)beta;
    if (be != 0.0f && !C) return refuse(CUBLAS_STATUS_INVALID_VALUE, fn, "beta != 0 without C");
    if (C != D && be != 0.0f && Cdesc->ld != Ddesc->ld)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED, fn, "out-of-place C and D with different leading dimensions (not emulated)");
    emu_device_enter();
    s = product(desc->transa == CUBLAS_OP_T, desc->transb == CUBLAS_OP_T, m, n, k, al, A, Adesc->type, Adesc->ld, B,
                Bdesc->type, Bdesc->ld, be, (const float *)C, Cdesc->ld, (float *)D, Ddesc->ld, bias, desc->compute);
    emu_device_leave();
    return s;
}
