/*
 * backends/cuda/cuda_internal.h — shared declarations of the fp32 CUDA backend.
 *
 * The backend is split into one file per family of ops: cuda_backend.c holds
 * the plugin descriptor, lifecycle, memory and the cuBLAS GEMM (plain C against
 * the CUDA runtime API); every other op is a kernel plus a launcher in a .cu
 * file, exported to the C side with C linkage through the prototypes below.
 * This header is valid C and C++ (nvcc includes it from the .cu files).
 *
 * Conventions:
 *   - Every op runs on the context's one stream; ops return without waiting
 *     except where a result must reach the host (copies to/from host memory,
 *     the index range checks of gathers/scatters/labels, scalar readbacks).
 *   - Device errors become EX_E_DEVICE: CU_TRY returns a status, never exits.
 *     Ops receive no ex_err, so the message of the last device error is kept
 *     in the context (cu_ctx.last_error) and printed once to stderr.
 *   - Determinism: no float atomics. Row reductions run in one block per row
 *     with a fixed block size and a fixed combination order (warp shuffles,
 *     then warps in index order); column sums are done over fixed chunks of
 *     rows into scratch, then summed chunk by chunk in order by one thread per
 *     column. cuBLAS is bitwise reproducible run to run for a given GPU model,
 *     toolkit and stream (its documented guarantee).
 *   - No global mutable state: streams, handles and scratch live in cu_ctx.
 */
#ifndef EXPLORA_CUDA_INTERNAL_H
#define EXPLORA_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cuda_vendor.h" /* the CUDA runtime and cuBLAS, or HIP under the CUDA names */

#include "explora/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef EXPLORA_HIP
/* cuda_linear.c: cuBLASLt algorithms cached per linear shape (heuristic queries cost host time). */
#define CU_LT_CACHE 64
#define CU_LT_WORKSPACE ((size_t)32 << 20)
typedef struct cu_lt_key {
    int64_t n, ic, oc;
    int bf16, compute;
    uint32_t align[4];             /* of w, inp, out (C and D), in bytes (at most 256) */
} cu_lt_key;
typedef struct cu_lt_entry {
    cu_lt_key key;
    cublasLtMatmulAlgo_t algo;
    int found;                     /* 0: cuBLASLt has no algorithm for it (the caller falls back) */
} cu_lt_entry;
#endif

/* Under gemm_math = bf16, products of two fp32 operands with a size at most this run in TF32 without rounding
 * copies (cu_gemm: LoRA's thin GEMMs are memory-bound). */
#define CU_THIN_DIM 128

/* The backend context (one per ex_backend). One host thread at a time. */
typedef struct cu_ctx {
    int device;              /* CUDA device ordinal */
    int sms;                 /* multiprocessors */
    /* [backend] gemm_math. fp32: CUBLAS_COMPUTE_32F everywhere. tf32: CUBLAS_COMPUTE_32F_FAST_TF32.
     * bf16: the gemm slot rounds fp32 A and B to bf16 copies (bf16_a, bf16_b) and multiplies those on
     * bf16 tensor cores with fp32 accumulation; the attention matmuls use TF32 (attn_compute). */
    int warp;                /* the device's warp (wavefront) width */
    int cc_major;            /* compute capability major (8: A100, 9: H100/H200); 0 on HIP */
    int smem_optin;          /* shared memory one block may opt into, bytes */
    int tc_usable;           /* the tensor-core attention kernels of the configured tile type run on this device
                              * (cu_attention_tc_usable; 0 when attention is not fused_bf16/fp16/cudnn, and on HIP) */
    int attn_fused;          /* [backend] attention: 0 gemm; 1 fused (cuda_attention_fused.cu where the head size
                              * fits); 2 fused_bf16, 3 fused_fp16 (cuda_attention_tc.cu where the head size fits,
                              * else as 1); 4 cudnn (cuda_attention_dnn.c where cuDNN takes the shape, else as 2) */
    struct cu_dnn *dnn;      /* cuDNN, loaded at init for attention = cudnn (cuda_dnn.c); NULL otherwise */
    ex_dtype gemm_narrow;    /* gemm_math = bf16 | fp16: EX_BF16 | EX_F16 (operands rounded to it); else EX_F32 */
    int gemm_own;            /* 1: GEMMs by the own kernel (cuda_gemm_tiled.cu): [backend] gemm = own, and always on HIP */
#ifndef EXPLORA_HIP
    cublasComputeType_t gemm_compute; /* the gemm slot's fp32 inputs (not used when gemm_narrow) */
    cublasComputeType_t attn_compute; /* the attention matmuls */
#endif
    cudaStream_t stream;     /* every op runs here */
#ifndef EXPLORA_HIP
    cublasHandle_t blas;     /* bound to `stream` */
    cublasLtHandle_t lt;     /* the linear layers' GEMM with a bias epilogue (cuda_linear.c); NULL: not available */
    void *lt_ws;             /* its workspace, CU_LT_WORKSPACE bytes, allocated at first use */
    cu_lt_entry lt_cache[CU_LT_CACHE];
    int lt_cached;
#endif
    char name[128];          /* "cuda: NVIDIA H200 (sm_90, 132 SMs)" */
    /* General device scratch (column-sum partials, reduce partials, sort keys),
     * grown only when a larger size is needed (after a stream sync). */
    void *scratch;
    size_t scratch_bytes;
    /* bf16 copies of GEMM operands under gemm_math = bf16, grown like `scratch`. (Narrow operands
     * widened to fp32 for the fp32 paths go to `scratch`, which no GEMM path uses.) */
    void *bf16_a, *bf16_b;
    size_t bf16_a_bytes, bf16_b_bytes;
    /* fp32 copies of bf16 attention inputs and outputs for the attention paths that compute from fp32
     * (attention_fwd_bf16/bwd_bf16 outside cuDNN and bf16 tiles), a chunk of images at a time. */
    void *attn_io;
    size_t attn_io_bytes;
    /* Attention score scratch (P and dS of a chunk of batch items). */
    float *attn;
    size_t attn_floats;
    size_t attn_cap_bytes;   /* the chunking target from the `attention_scratch_mib` key */
    int64_t copy_cap_bytes;  /* the `gemm_copy_mib` key: largest GEMM operand copy (larger products run in halves) */
    /* Pointer arrays for the (batch, head) batched GEMMs of attention: 3 arrays. */
    void **ptrs;
    size_t nptrs;            /* entries per array */
    /* Range-check flag: one device int, and a pinned host int to read it into. */
    int *dflag;
    int *hflag;
    char last_error[512];    /* the last device error, for messages */
    void *nccl;              /* ncclComm_t after comm_init (cuda_comm.c); NULL: no communicator */
#ifdef EXPLORA_HIP
    struct hip_blas *hipblas; /* hipBLAS loaded at init (backends/hip/hip_blas.c) for the linear GEMMs, or NULL */
#endif
} cu_ctx;

/* cuda_comm.c: NCCL collectives when built with EXPLORA_HAVE_NCCL; cu_comm_destroy releases the communicator. */
void cu_comm_destroy(cu_ctx *ctx);
/* Wait for the backend's stream (cuda_comm.c). With an NCCL communicator the wait polls NCCL's asynchronous error,
 * so a collective that can never complete (a peer died) ends in an error, with the communicator aborted, rather than
 * a wait forever. */
ex_status cu_sync(cu_ctx *ctx);
#ifdef EXPLORA_HAVE_NCCL
ex_status cu_comm_unique_id(void *ctx, void *id, size_t cap, size_t *len, ex_err *err);
ex_status cu_comm_init(void *ctx, const void *id, size_t len, int rank, int world, ex_err *err);
ex_status cu_comm_allreduce_sum_f32(void *ctx, float *buf, int64_t n, ex_err *err);
#endif

/* Turn a CUDA runtime / cuBLAS failure into EX_E_DEVICE, recording where it happened. */
/* gemm_math = bf16 | fp16: dst (n) = src rounded to bf16 (bf16 = 1) or fp16 (bf16 = 0), to nearest even;
 * fp16 overflows to inf beyond +-65504. */
ex_status cu_to_narrow(cu_ctx *ctx, void *dst, const float *src, int bf16, int64_t n);
ex_status cu_bf16_scratch(cu_ctx *ctx, int which, size_t bytes, void **out);
/* dst (n) fp32 = src (n) bf16 (bf16 = 1) or fp16 (bf16 = 0) bits, exactly: narrow GEMM operands for the
 * fp32 paths (gemm_math = fp32/tf32, the own kernel). */
ex_status cu_widen(cu_ctx *ctx, float *dst, const void *src, int bf16, int64_t n);
/* dst (n) fp32 += the same widened values (gradients computed in bf16, accumulated into fp32). */
ex_status cu_widen_add(cu_ctx *ctx, float *dst, const void *src, int bf16, int64_t n);

ex_status cu_fail_cuda(cu_ctx *ctx, cudaError_t e, const char *what, const char *file, int line);
#ifndef EXPLORA_HIP
ex_status cu_fail_blas(cu_ctx *ctx, cublasStatus_t s, const char *what, const char *file, int line);
#endif

#ifndef EXPLORA_HIP
/* The linear_bias_fwd slot (cuda_linear.c): out (n, oc) = inp @ w^T + bias in one cuBLASLt call with a bias
 * epilogue, for fp32 x fp32 (gemm_math fp32 | tf32) and bf16 x bf16; EX_E_UNSUPPORTED otherwise. */
ex_status cu_linear_bias_fwd(void *ctx, float *out, const void *inp, ex_dtype inp_dtype, const void *w,
                             ex_dtype w_dtype, const float *bias, int64_t n, int64_t ic, int64_t oc);
#endif

/* The own GEMM kernel (cuda_gemm_tiled.cu), row-major, batched by strides or by pointer arrays:
 * C[z] = alpha op(A[z]) op(B[z]) + beta C[z], z < batch (beta = 0: C is not read). */
ex_status cu_gemm_own(cu_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                      const float *a, int64_t lda, int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b,
                      float beta, float *c, int64_t ldc, int64_t stride_c, int64_t batch);
ex_status cu_gemm_own_ptrs(cu_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                           const float *const *a, int64_t lda, const float *const *b, int64_t ldb, float beta,
                           float *const *c, int64_t ldc, int64_t batch);

#define CU_TRY(ctx, expr)                                                                   \
    do {                                                                                    \
        cudaError_t cu__e = (expr);                                                         \
        if (cu__e != cudaSuccess) return cu_fail_cuda((ctx), cu__e, #expr, __FILE__, __LINE__); \
    } while (0)

#ifndef EXPLORA_HIP
#define CU_BLAS(ctx, expr)                                                                          \
    do {                                                                                            \
        cublasStatus_t cu__s = (expr);                                                              \
        if (cu__s != CUBLAS_STATUS_SUCCESS) return cu_fail_blas((ctx), cu__s, #expr, __FILE__, __LINE__); \
    } while (0)
#endif

/* After a kernel launch: a launch error (bad configuration) becomes EX_E_DEVICE. */
#define CU_LAUNCHED(ctx) CU_TRY((ctx), cudaGetLastError())

/* Validation shorthand (ops receive no ex_err; the code is what the caller sees). */
#define CU_ARG(cond, ...) EX_ENSURE((cond), NULL, EX_E_INVALID, __VA_ARGS__)

#define CU_CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

/* General scratch of at least `bytes` bytes. */
ex_status cu_scratch(cu_ctx *ctx, size_t bytes, void **out);
/* Scratch for widened attention inputs and outputs (cuda_attention.cu) of at least `bytes` bytes. */
ex_status cu_attn_io_scratch(cu_ctx *ctx, size_t bytes, void **out);
/* Attention scratch of at least `floats` floats. */
ex_status cu_attn_scratch(cu_ctx *ctx, size_t floats, float **out);
/* Pointer-array scratch: 3 arrays of at least `n` entries each (ptrs, ptrs + n, ptrs + 2n). */
ex_status cu_ptr_scratch(cu_ctx *ctx, size_t n, void ***out);
/* EX_E_RANGE unless every idx[i] (count, on the device) lies in [lo, hi). Synchronises. */
ex_status cu_check_index(cu_ctx *ctx, const int32_t *idx, int64_t count, int64_t lo, int64_t hi);
/* Read the device flag set by a kernel (synchronises) into *value. */
ex_status cu_read_flag(cu_ctx *ctx, int *value);

/* --- lifecycle and memory (cuda_backend.c) ----------------------------------------- */
ex_status cu_init(const ex_cfg_section *cfg, void **ctx, ex_err *err);
void cu_shutdown(void *ctx);
ex_status cu_device_info(void *ctx, ex_device_info *out);
int cu_device_key(void *ctx, char *key, size_t cap);
int cu_supports_op(void *ctx, ex_op op, ex_dtype dtype);
ex_status cu_alloc(void *ctx, size_t bytes, void **ptr, ex_err *err);
void cu_free(void *ctx, void *ptr);
ex_status cu_copy(void *ctx, void *dst, const void *src, size_t bytes, ex_copy_kind kind);
ex_status cu_synchronize(void *ctx);
ex_status cu_gemm(void *ctx, const ex_gemm_desc *d);

/* Row-major GEMM batched over (batch, head) with two strides per operand, for
 * attention: for bi < nb, h < nh: C[bi,h] = alpha op(A[bi,h]) op(B[bi,h]) + beta C[bi,h],
 * X[bi,h] = x + bi * x_bs + h * x_hs. (cuda_attention.cu) */
ex_status cu_gemm_bh(cu_ctx *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, int64_t a_bs, int64_t a_hs, const float *b, int64_t ldb,
                     int64_t b_bs, int64_t b_hs, float beta, float *c, int64_t ldc, int64_t c_bs, int64_t c_hs,
                     int64_t nb, int64_t nh);

/* Fused attention (cuda_attention_fused.cu): no (t, t) matrix in memory; for head sizes
 * cu_attention_fused_fits accepts. Same contract as the attention_fwd/bwd slots. */
int cu_attention_fused_fits(int64_t hs);
ex_status cu_attention_fused_fwd(cu_ctx *ctx, float *out, float *lse, const float *qkv, int64_t b, int64_t t,
                                 int64_t nh, int64_t hs, float scale);
ex_status cu_attention_fused_bwd(cu_ctx *ctx, float *dqkv, const float *dout, const float *out, const float *lse,
                                 const float *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale);
/* The same kernels on bf16 storage (the bf16 attention slots): bf16 qkv and out, read widened and written
 * rounded; the backward writes dqkv. */
ex_status cu_attention_fused_fwd16(cu_ctx *ctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b, int64_t t,
                                   int64_t nh, int64_t hs, float scale);
ex_status cu_attention_fused_bwd16(cu_ctx *ctx, float *dqkv, const float *dout, const uint16_t *out,
                                   const float *lse, const uint16_t *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs,
                                   float scale);

/* Fused attention on tensor cores (cuda_attention_tc.cu; not in the HIP build): bf16 tiles when attn_fused is 2
 * (sm_80+), fp16 when 3 (sm_70+), for head sizes cu_attention_tc_fits accepts. Same contract as the
 * attention_fwd/bwd slots. */
int cu_attention_tc_fits(const cu_ctx *ctx, int64_t hs);
/* At init: whether the device runs the tile kernels of the configured type (ctx->tc_usable). */
int cu_attention_tc_usable(const cu_ctx *ctx);
ex_status cu_attention_tc_fwd(cu_ctx *ctx, float *out, float *lse, const float *qkv, int64_t b, int64_t t, int64_t nh,
                              int64_t hs, float scale);
ex_status cu_attention_tc_bwd(cu_ctx *ctx, float *dqkv, const float *dout, const float *out, const float *lse,
                              const float *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale);

/* The same kernels reading qkv and writing out in bf16 (the bf16 attention slots; bf16 tiles only, so where
 * cu_attention_tc_fits16: attention = fused_bf16, or cudnn's fallback, and a head size with a kernel); the
 * backward writes dqkv. */
int cu_attention_tc_fits16(const cu_ctx *ctx, int64_t hs);
ex_status cu_attention_tc_fwd16(cu_ctx *ctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b, int64_t t,
                                int64_t nh, int64_t hs, float scale);
ex_status cu_attention_tc_bwd16(cu_ctx *ctx, float *dqkv, const float *dout, const uint16_t *out, const float *lse,
                                const uint16_t *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale);

/* Attention through cuDNN's fused SDPA (cuda_attention_dnn.c; builds with cuDNN's headers, not HIP): where
 * cu_attention_dnn_fits, bf16 copies of qkv (and o, do) go through cuDNN; the results are widened back. */
int cu_attention_dnn_fits(const cu_ctx *ctx, int64_t b, int64_t t, int64_t nh, int64_t hs);
ex_status cu_attention_dnn_fwd(cu_ctx *ctx, float *out, float *lse, const float *qkv, int64_t b, int64_t t,
                               int64_t nh, int64_t hs, float scale);
ex_status cu_attention_dnn_bwd(cu_ctx *ctx, float *dqkv, const float *dout, const float *out, const float *lse,
                               const float *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale);
/* The same on bf16 storage: qkv and o as they are (no copies), dout rounded to a bf16 copy, dq/dk/dv widened into
 * dqkv (written, as the bf16 slot's contract says). */
ex_status cu_attention_dnn_fwd16(cu_ctx *ctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b, int64_t t,
                                 int64_t nh, int64_t hs, float scale);
ex_status cu_attention_dnn_bwd16(cu_ctx *ctx, float *dqkv, const float *dout, const uint16_t *out, const float *lse,
                                 const uint16_t *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale);
/* Load cuDNN and bind it to the context's stream (init, attention = cudnn): EX_E_CONFIG with the reason. */
ex_status cu_attention_dnn_open(cu_ctx *ctx, int deterministic, ex_err *err);
void cu_attention_dnn_close(cu_ctx *ctx);

/* --- cuda_elementwise.cu ----------------------------------------------------------- */
ex_status cu_fill(void *ctx, float *dst, float value, int64_t n);
/* C (m, n) with row stride ldc, batch of `batch` at stride_c: C *= beta (beta == 0 writes zeros). */
ex_status cu_scale_matrix(cu_ctx *ctx, float *c, int64_t m, int64_t n, int64_t ldc, int64_t stride_c,
                          int64_t batch, float beta);
ex_status cu_bias_add_fwd(void *ctx, float *out, const float *bias, int64_t n, int64_t c);
ex_status cu_bias_add_bwd(void *ctx, float *dbias, const float *dout, int64_t n, int64_t c);
ex_status cu_binary(void *ctx, ex_binary_op op, float *out, const float *a, const float *b, int64_t n);
ex_status cu_axpby(void *ctx, float *y, float alpha, const float *x, float beta, int64_t n);
ex_status cu_channel_scale_fwd(void *ctx, float *out, const float *inp, const float *gamma, int64_t n, int64_t c);
ex_status cu_channel_scale_bwd(void *ctx, float *dinp, float *dgamma, const float *dout, const float *inp,
                               const float *gamma, int64_t n, int64_t c);
ex_status cu_row_scale_fwd(void *ctx, float *out, const float *inp, const float *s, int64_t n, int64_t c);
ex_status cu_row_scale_bwd(void *ctx, float *dinp, float *ds, const float *dout, const float *inp,
                           const float *s, int64_t n, int64_t c);
ex_status cu_reduce(void *ctx, ex_reduce_op op, float *out, const float *inp, int64_t n);
ex_status cu_exp_fwd(void *ctx, float *out, const float *inp, float scale, int64_t n);
ex_status cu_residual_fwd(void *ctx, float *out, const float *resid, const float *branch, const float *ls,
                          const float *drop, int64_t b, int64_t t, int64_t c);
ex_status cu_residual_bwd(void *ctx, float *dbranch, float *dls, const float *dres, const float *branch,
                          const float *ls, const float *drop, int64_t b, int64_t t, int64_t c);
ex_status cu_row_sum(void *ctx, float *out, const float *inp, int64_t n, int64_t c); /* cuda_norm.cu */
ex_status cu_mask_rows_bwd(void *ctx, float *dinp, float *dtoken, const float *dout, const uint8_t *mask,
                           int64_t n, int64_t c);

/* Column sums (cuda_elementwise.cu), shared by bias, LayerScale, LayerNorm and mask-token
 * gradients: acc0[j] += sum_i term0(i, j), acc1[j] += sum_i term1(i, j) over rows i, by
 * fixed chunks of rows, in order. Modes: */
typedef enum cu_colsum_mode {
    CU_COLSUM_PLAIN = 0,   /* term0 = a[i,j]                          (acc1 unused) */
    CU_COLSUM_PROD = 1,    /* term0 = a[i,j] * b[i,j]                 (acc1 unused) */
    CU_COLSUM_MASKED = 2,  /* term0 = mask[i] ? a[i,j] : 0            (acc1 unused) */
    CU_COLSUM_LNORM = 3,   /* term0 = a (b - mean_i) rstd_i, term1 = a  (either acc may be NULL) */
    CU_COLSUM_SCALED_PROD = 4 /* term0 = (a[i,j] * mean[i / rows_per_scale]) * b[i,j]: mean holds one scale
                               * per group of rows (drop path's per-image scale)  (acc1 unused) */
} cu_colsum_mode;
ex_status cu_colsum(cu_ctx *ctx, cu_colsum_mode mode, float *acc0, float *acc1, const float *a, const float *b,
                    const uint8_t *mask, const float *mean, const float *rstd, int64_t n, int64_t c);
/* The same for CU_COLSUM_SCALED_PROD, with `scale` (n / rows_per_scale) in place of mean. */
ex_status cu_colsum_scaled(cu_ctx *ctx, float *acc0, const float *a, const float *b, const float *scale,
                           int64_t rows_per_scale, int64_t n, int64_t c);

/* --- cuda_activation.cu ------------------------------------------------------------ */
ex_status cu_gelu_fwd(void *ctx, float *out, const float *inp, int64_t n);
ex_status cu_gelu_fwd_bf16(void *ctx, uint16_t *out, const float *inp, int64_t n);
ex_status cu_gelu_bwd_inplace(void *ctx, float *d, const float *inp, int64_t n);
ex_status cu_gelu_bwd(void *ctx, float *dinp, const float *inp, const float *dout, int64_t n);
ex_status cu_silu_fwd(void *ctx, float *out, const float *inp, int64_t n);
ex_status cu_silu_bwd(void *ctx, float *dinp, const float *inp, const float *dout, int64_t n);
ex_status cu_adamw(void *ctx, float *p, const float *g, float *m, float *v, int64_t n, const ex_adamw_params *h);
ex_status cu_ema(void *ctx, float *teacher, const float *student, float momentum, int64_t n);

/* --- cuda_norm.cu ------------------------------------------------------------------ */
ex_status cu_layernorm_fwd(void *ctx, float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int64_t n, int64_t c, float eps);
ex_status cu_layernorm_fwd_bf16(void *ctx, uint16_t *out, float *mean, float *rstd, const float *inp, const float *w,
                                const float *b, int64_t n, int64_t c, float eps);
ex_status cu_layernorm_bwd(void *ctx, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                           const float *w, const float *mean, const float *rstd, int64_t n, int64_t c);
ex_status cu_softmax_fwd(void *ctx, float *out, const float *inp, int64_t n, int64_t c, float scale);
ex_status cu_softmax_bwd(void *ctx, float *dinp, const float *out, const float *dout, int64_t n, int64_t c,
                         float scale);
ex_status cu_xent_fwd(void *ctx, float *losses, float *probs, const float *logits, const int32_t *labels,
                      const float *targets, int64_t n, int64_t v);
ex_status cu_xent_bwd(void *ctx, float *dlogits, const float *dlosses, const float *probs, const int32_t *labels,
                      const float *targets, int64_t n, int64_t v);
ex_status cu_l2norm_fwd(void *ctx, float *out, float *norms, const float *inp, int64_t n, int64_t c, float eps);
ex_status cu_l2norm_bwd(void *ctx, float *dinp, const float *dout, const float *inp, const float *norms,
                        int64_t n, int64_t c, float eps);

/* --- cuda_attention.cu --------------------------------------------------------------- */
ex_status cu_attention_fwd(void *ctx, float *out, float *lse, const float *qkv, int64_t b, int64_t t, int64_t nh,
                           int64_t hs, float scale);
ex_status cu_attention_bwd(void *ctx, float *dqkv, const float *dout, const float *out, const float *lse,
                           const float *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale);
ex_status cu_to_bf16(void *ctx, uint16_t *out, const float *inp, int64_t n);
ex_status cu_attention_fwd_bf16(void *ctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b, int64_t t,
                                int64_t nh, int64_t hs, float scale);
ex_status cu_attention_bwd_bf16(void *ctx, float *dqkv, const float *dout, const uint16_t *out, const float *lse,
                                const uint16_t *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale);

/* --- cuda_gather.cu ---------------------------------------------------------------- */
ex_status cu_gather_rows(void *ctx, float *out, const float *inp, const int32_t *idx, int64_t b, int64_t m,
                         int64_t t, int64_t c);
ex_status cu_scatter_add_rows(void *ctx, float *dinp, const float *dout, const int32_t *idx, int64_t b, int64_t m,
                              int64_t t, int64_t c);
ex_status cu_mask_rows_fwd(void *ctx, float *out, const float *inp, const uint8_t *mask, const float *token,
                           int64_t n, int64_t c);
ex_status cu_patchify_fwd(void *ctx, float *out, const float *img, int64_t b, int64_t ch, int64_t h, int64_t w,
                          int64_t p, ex_patch_order order);
ex_status cu_patchify_bwd(void *ctx, float *dimg, const float *dout, int64_t b, int64_t ch, int64_t h, int64_t w,
                          int64_t p, ex_patch_order order);
ex_status cu_copy2d(void *ctx, float *dst, int64_t dst_ld, const float *src, int64_t src_ld, int64_t rows,
                    int64_t cols);

/* --- cuda_rng.cu ------------------------------------------------------------------- */
ex_status cu_rng_uniform(void *ctx, float *out, int64_t n, float lo, float hi, ex_rng *rng);
ex_status cu_rng_normal(void *ctx, float *out, int64_t n, float mean, float std, ex_rng *rng);
ex_status cu_rng_permutation(void *ctx, int32_t *out, int64_t n, ex_rng *rng);
ex_status cu_rng_dropout(void *ctx, float *out, int64_t n, float p, ex_rng *rng);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_CUDA_INTERNAL_H */
