/*
 * backends/cuda/cuda_backend.c — the "cuda" backend plugin (and, built with EXPLORA_HIP by
 * backends/hip, the "hip" one): descriptor, vtable, lifecycle (device selection, stream,
 * cuBLAS handle), device info, memory, scratch buffers and the GEMM slot (cuBLAS, or the own
 * kernel of cuda_gemm_tiled.cu: `[backend] gemm = own`, and always on HIP).
 *
 * Plain C against the CUDA runtime API and cuBLAS (cuda_vendor.h maps the names to HIP); the
 * kernels live in the .cu files. init() never crashes on a machine without a GPU or driver: it
 * returns EX_E_DEVICE saying why and how to fall back to the cpu backend.
 *
 * Copies to or from host memory wait for the stream (the host buffer may be
 * reused as soon as the call returns); device-to-device copies are queued.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/comm.h"
#include "cuda_internal.h"
#include "explora/plugin.h"
#ifdef EXPLORA_HIP
#include "hip_blas.h"
#endif

/* ------------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------------ */

ex_status cu_fail_cuda(cu_ctx *ctx, cudaError_t e, const char *what, const char *file, int line) {
    char msg[512];
    snprintf(msg, sizeof msg, CU_VENDOR ": %s failed: %s (%s) at %s:%d", what, cudaGetErrorString(e),
             cudaGetErrorName(e), file, line);
    if (ctx) {
        if (strcmp(ctx->last_error, msg) != 0) fprintf(stderr, "explora: %s\n", msg);
        snprintf(ctx->last_error, sizeof ctx->last_error, "%s", msg);
    } else {
        fprintf(stderr, "explora: %s\n", msg);
    }
    return ex_err_set(NULL, EX_E_DEVICE, file, line, "%s", msg);
}

#ifndef EXPLORA_HIP
ex_status cu_fail_blas(cu_ctx *ctx, cublasStatus_t s, const char *what, const char *file, int line) {
    char msg[512];
    snprintf(msg, sizeof msg, CU_VENDOR ": %s failed: cuBLAS status %d (%s) at %s:%d", what, (int)s,
             cublasGetStatusString(s), file, line);
    if (ctx) {
        if (strcmp(ctx->last_error, msg) != 0) fprintf(stderr, "explora: %s\n", msg);
        snprintf(ctx->last_error, sizeof ctx->last_error, "%s", msg);
    }
    return s == CUBLAS_STATUS_NOT_SUPPORTED ? EX_E_UNSUPPORTED : EX_E_DEVICE;
}
#endif

/* ------------------------------------------------------------------------------
 * Scratch
 * ------------------------------------------------------------------------------ */

#define CU_ALIGN ((size_t)256)

/* Replace *buf (of *have bytes) by a buffer of at least `want` bytes. */
static ex_status grow(cu_ctx *ctx, void **buf, size_t *have, size_t want) {
    if (want <= *have && *buf) return EX_OK;
    want = (want + CU_ALIGN - 1) / CU_ALIGN * CU_ALIGN;
    if (want == 0) want = CU_ALIGN;
    /* queued kernels may still read the old buffer */
    EX_CHECK(cu_sync(ctx));
    if (*buf) cudaFree(*buf);
    *buf = NULL;
    *have = 0;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, want);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the sticky-free error state of an OOM */
        EX_FAIL(NULL, EX_E_NOMEM, CU_VENDOR ": cannot allocate %zu bytes of scratch", want);
    }
    *buf = p;
    *have = want;
    return EX_OK;
}

ex_status cu_scratch(cu_ctx *ctx, size_t bytes, void **out) {
    EX_CHECK(grow(ctx, &ctx->scratch, &ctx->scratch_bytes, bytes));
    *out = ctx->scratch;
    return EX_OK;
}

ex_status cu_bf16_scratch(cu_ctx *ctx, int which, size_t bytes, void **out) {
    void **p = which ? &ctx->bf16_b : &ctx->bf16_a;
    size_t *have = which ? &ctx->bf16_b_bytes : &ctx->bf16_a_bytes;
    EX_CHECK(grow(ctx, p, have, bytes));
    *out = *p;
    return EX_OK;
}

ex_status cu_attn_io_scratch(cu_ctx *ctx, size_t bytes, void **out) {
    EX_CHECK(grow(ctx, &ctx->attn_io, &ctx->attn_io_bytes, bytes));
    *out = ctx->attn_io;
    return EX_OK;
}

ex_status cu_attn_scratch(cu_ctx *ctx, size_t floats, float **out) {
    size_t bytes = ctx->attn_floats * sizeof(float);
    void *p = ctx->attn;
    EX_CHECK(grow(ctx, &p, &bytes, floats * sizeof(float)));
    ctx->attn = p;
    ctx->attn_floats = bytes / sizeof(float);
    *out = ctx->attn;
    return EX_OK;
}

ex_status cu_ptr_scratch(cu_ctx *ctx, size_t n, void ***out) {
    size_t bytes = ctx->nptrs * 3 * sizeof(void *);
    void *p = ctx->ptrs;
    EX_CHECK(grow(ctx, &p, &bytes, n * 3 * sizeof(void *)));
    ctx->ptrs = p;
    ctx->nptrs = bytes / (3 * sizeof(void *));
    *out = ctx->ptrs;
    return EX_OK;
}

ex_status cu_read_flag(cu_ctx *ctx, int *value) {
    CU_TRY(ctx, cudaMemcpyAsync(ctx->hflag, ctx->dflag, sizeof(int), cudaMemcpyDeviceToHost, ctx->stream));
    EX_CHECK(cu_sync(ctx));
    *value = *ctx->hflag;
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------------------ */

static const ex_key_spec cu_keys[] = {
#ifdef EXPLORA_HIP
    {"device", EX_KEY_INT, "-1", -1, 1024, NULL,
     "HIP device ordinal (as listed by rocm-smi, after HIP_VISIBLE_DEVICES); -1: the launcher's local rank "
     "modulo the visible devices (device 0 for a single process), one GPU per process under mpirun."},
#else
    {"device", EX_KEY_INT, "-1", -1, 1024, NULL,
     "CUDA device ordinal (as listed by nvidia-smi, after CUDA_VISIBLE_DEVICES); -1: the launcher's local rank "
     "modulo the visible devices (device 0 for a single process), one GPU per process under mpirun."},
#endif
#ifndef EXPLORA_HIP
    {"gemm_math", EX_KEY_ENUM, "fp32", EX_NORANGE, "fp32|tf32|bf16|fp16",
     "Arithmetic of GEMMs on fp32 tensors (linear layers and attention matmuls); storage and accumulation stay fp32. "
     "fp32: plain fp32 (the CPU backend's numbers to ~1e-6); tf32: TF32 tensor cores (inputs rounded to 10 mantissa "
     "bits, ~1e-3 relative error, Ampere and newer); bf16: linear layers on bf16 tensor cores (inputs rounded to bf16 "
     "copies, 7 mantissa bits, ~1e-2 relative error; fp32 accumulation and output; thin products of fp32 operands, "
     "such as LoRA's rank-r GEMMs, in TF32 without copies), attention matmuls in TF32; fp16: "
     "the same on fp16 tensor cores (10 mantissa bits but range +-65504: the gradients need [optim] loss_scale = "
     "dynamic; for GPUs without bf16, e.g. V100/T4)."},
    {"gemm", EX_KEY_ENUM, "cublas", EX_NORANGE, "cublas|own",
     "GEMM implementation. cublas: NVIDIA's library (fast). own: the backend's tiled fp32 kernel, the one the HIP "
     "backend runs (no tensor cores; for checking it, or where cuBLAS misbehaves); gemm_math must then be fp32."},
#else
    {"gemm_math", EX_KEY_ENUM, "fp32", EX_NORANGE, "fp32",
     "Arithmetic of GEMMs: fp32 only on HIP (hipBLAS's sgemm or the backend's own tiled kernel)."},
    {"gemm", EX_KEY_ENUM, "auto", EX_NORANGE, "auto|hipblas|own",
     "GEMM of the linear layers. auto: hipBLAS when libhipblas.so can be loaded (a ROCm install; Debian has none), "
     "else the own tiled kernel; hipblas: hipBLAS or an error; own: the own kernel. Attention matmuls always run "
     "the own kernel."},
#endif
    {"attention", EX_KEY_ENUM, "gemm", EX_NORANGE, "gemm|fused|fused_bf16|fused_fp16|cudnn",
     "Attention kernels. gemm: scores materialised in chunks (attention_scratch_mib) and multiplied by the GEMM "
     "library; fused: one kernel per pass, scores in registers, no (t, t) matrix in memory (head sizes up to 128, "
     "64 on 64-wide wavefronts; larger heads use gemm); fused_bf16: the same without a (t, t) matrix, its products "
     "on bf16 tensor cores with fp32 softmax and accumulation (flash attention; NVIDIA sm_80+, head sizes 16, 32, "
     "48, 64, 80, 96, 128, others as fused); fused_fp16: the same on fp16 tensor cores (sm_70+: GPUs without bf16, "
     "with gemm_math = fp16 and [optim] loss_scale = dynamic); cudnn: NVIDIA's fused attention from cuDNN 9 on bf16 "
     "copies (sm_80+, loaded at start-up; head sizes that are multiples of 8 up to 128, others as fused_bf16)."},
    {"deterministic", EX_KEY_BOOL, "true", EX_NORANGE, NULL,
     "Bitwise repeatable runs on one GPU model and toolkit. Every own kernel and cuBLAS call is deterministic "
     "either way; false lets attention = cudnn use engines that add partial gradients with atomics (faster "
     "backward, last bits vary run to run)."},
    {"attention_scratch_mib", EX_KEY_INT, "1024", 16, 1048576, NULL,
     "Device memory for attention score matrices: batches are processed in chunks that fit it."},
    {"gemm_copy_mib", EX_KEY_INT, "128", 1, 1048576, NULL,
     "Largest copy of one GEMM operand (rounded to bf16/fp16 under gemm_math, or a bf16 weight widened to fp32): "
     "a product whose operand would need more runs in pieces, so the copy buffers stay this small."},
    EX_KEY_END};

void cu_shutdown(void *vctx) {
    cu_ctx *ctx = vctx;
    if (!ctx) return;
    if (ctx->stream) (void)cu_sync(ctx); /* an NCCL failure aborts the communicator rather than wait */
    cu_comm_destroy(ctx);
#ifndef EXPLORA_HIP
    cu_attention_dnn_close(ctx);
    if (ctx->blas) cublasDestroy(ctx->blas);
    if (ctx->lt) cublasLtDestroy(ctx->lt);
    if (ctx->lt_ws) cudaFree(ctx->lt_ws);
#else
    hip_blas_close(ctx->hipblas);
#endif
    if (ctx->scratch) cudaFree(ctx->scratch);
    if (ctx->attn) cudaFree(ctx->attn);
    if (ctx->bf16_a) cudaFree(ctx->bf16_a);
    if (ctx->bf16_b) cudaFree(ctx->bf16_b);
    if (ctx->attn_io) cudaFree(ctx->attn_io);
    if (ctx->ptrs) cudaFree(ctx->ptrs);
    if (ctx->dflag) cudaFree(ctx->dflag);
    if (ctx->hflag) cudaFreeHost(ctx->hflag);
    if (ctx->stream) cudaStreamDestroy(ctx->stream);
    free(ctx);
}

#define INIT_TRY(expr, what)                                                                                  \
    do {                                                                                                      \
        cudaError_t e__ = (expr);                                                                             \
        if (e__ != cudaSuccess) {                                                                             \
            cu_shutdown(ctx);                                                                                 \
            EX_FAIL(err, EX_E_DEVICE, "backend " CU_VENDOR ": %s failed on device %lld: %s", what, (long long)device, \
                    cudaGetErrorString(e__));                                                                 \
        }                                                                                                     \
    } while (0)

ex_status cu_init(const ex_cfg_section *cfg, void **out, ex_err *err) {
    EX_ENSURE(out, err, EX_E_INVALID, CU_VENDOR " backend: init called without a context pointer");
    *out = NULL;
    int64_t device = -1, scratch_mib = 1024, copy_mib = 128;
    int math = 0; /* index into "fp32|tf32|bf16|fp16" */
    int fused = 0; /* index into "gemm|fused|fused_bf16|fused_fp16|cudnn" */
    int deterministic = 1;
#ifdef EXPLORA_HIP
    int own = 1;      /* the attention matmuls' kernel, always */
    int hip_gemm = 0; /* index into "auto|hipblas|own" */
#else
    int own = 0; /* index into "cublas|own" */
#endif
    if (cfg) {
        EX_CHECK(ex_cfg_int(cfg, "device", &device, err));
        EX_CHECK(ex_cfg_enum(cfg, "gemm_math", &math, err));
        EX_CHECK(ex_cfg_enum(cfg, "attention", &fused, err));
        EX_CHECK(ex_cfg_bool(cfg, "deterministic", &deterministic, err));
        (void)deterministic; /* read by the cuDNN attention only (not on HIP) */
#ifdef EXPLORA_HIP
        EX_CHECK(ex_cfg_enum(cfg, "gemm", &hip_gemm, err));
#endif
#ifndef EXPLORA_HIP
        EX_CHECK(ex_cfg_enum(cfg, "gemm", &own, err));
        EX_ENSURE(!own || math == 0, err, EX_E_CONFIG,
                  "[backend] gemm = own runs fp32 only, but gemm_math = %s. Set gemm_math = fp32, or gemm = cublas.",
                  math == 1 ? "tf32" : math == 2 ? "bf16" : "fp16");
#endif
        EX_CHECK(ex_cfg_int(cfg, "attention_scratch_mib", &scratch_mib, err));
        EX_CHECK(ex_cfg_int(cfg, "gemm_copy_mib", &copy_mib, err));
    }
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        const char *why = e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device found";
        (void)cudaGetLastError();
        EX_FAIL(err, EX_E_DEVICE, "backend " CU_VENDOR ": no usable GPU: %s — use [backend] name = cpu", why);
    }
    if (device < 0) device = ex_comm_launched_local_rank() % count;
    EX_ENSURE(device >= 0 && device < count, err, EX_E_CONFIG,
              "backend " CU_VENDOR ": device = %lld but only %d CUDA device(s) are visible", (long long)device, count);
    cu_ctx *ctx = calloc(1, sizeof *ctx);
    EX_ENSURE(ctx, err, EX_E_NOMEM, CU_VENDOR " backend: out of memory creating the context");
    ctx->device = (int)device;
    ctx->attn_fused = fused;
#ifdef EXPLORA_HIP
    if (fused >= 2) {
        free(ctx);
        EX_FAIL(err, EX_E_CONFIG,
                "backend hip: [backend] attention = %s runs on NVIDIA GPUs only; use attention = fused or gemm",
                fused == 2 ? "fused_bf16" : fused == 3 ? "fused_fp16" : "cudnn");
    }
#endif
    ctx->gemm_narrow = math == 2 ? EX_BF16 : math == 3 ? EX_F16 : EX_F32;
    ctx->gemm_own = own;
#ifndef EXPLORA_HIP
    ctx->gemm_compute = math == 1 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    ctx->attn_compute = math >= 1 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
#endif
    ctx->attn_cap_bytes = (size_t)scratch_mib * 1024 * 1024;
    ctx->copy_cap_bytes = copy_mib * 1024 * 1024;
    INIT_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
    struct cudaDeviceProp prop;
    INIT_TRY(cudaGetDeviceProperties(&prop, ctx->device), "cudaGetDeviceProperties");
    ctx->sms = prop.multiProcessorCount;
    ctx->warp = prop.warpSize;
    if (ctx->warp != 32 && ctx->warp != 64) {
        cu_shutdown(ctx);
        EX_FAIL(err, EX_E_DEVICE, "backend " CU_VENDOR ": unsupported warp size %d", prop.warpSize);
    }
#ifdef EXPLORA_HIP
    snprintf(ctx->name, sizeof ctx->name, CU_VENDOR ": %.60s (%.20s, %d CUs)", prop.name, prop.gcnArchName,
             prop.multiProcessorCount);
#else
    snprintf(ctx->name, sizeof ctx->name, CU_VENDOR ": %.80s (sm_%d%d, %d SMs)", prop.name, prop.major, prop.minor,
             prop.multiProcessorCount);
    ctx->cc_major = prop.major;
    if (((fused == 2 || fused == 4) && prop.major < 8) || (fused == 3 && prop.major < 7)) {
        cu_shutdown(ctx);
        EX_FAIL(err, EX_E_CONFIG,
                "backend cuda: [backend] attention = %s needs %s tensor cores (sm_%d0 or newer), but device %lld is "
                "sm_%d%d; use attention = %s",
                fused == 2 ? "fused_bf16" : fused == 4 ? "cudnn" : "fused_fp16", fused == 3 ? "fp16" : "bf16",
                fused == 3 ? 7 : 8, (long long)device, prop.major, prop.minor,
                fused == 3 ? "fused or gemm" : "fused_fp16, fused or gemm");
    }
    ctx->smem_optin = (int)prop.sharedMemPerBlockOptin;
    if (fused == 2 || fused == 3 || fused == 4) {
        ctx->tc_usable = cu_attention_tc_usable(ctx);
        if (!ctx->tc_usable && fused != 4) { /* cudnn: the tiles are only its fallback */
            cu_shutdown(ctx);
            EX_FAIL(err, EX_E_CONFIG,
                    "backend cuda: [backend] attention = %s, but this build has no %s tile kernels for sm_%d%d (its "
                    "code for this device comes from older PTX); rebuild with CMAKE_CUDA_ARCHITECTURES including %d%d, "
                    "or use attention = fused or gemm",
                    fused == 2 ? "fused_bf16" : "fused_fp16", fused == 2 ? "bf16" : "fp16", prop.major, prop.minor,
                    prop.major, prop.minor);
        }
    }
#endif
    INIT_TRY(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    INIT_TRY(cudaMalloc((void **)&ctx->dflag, sizeof(int)), "cudaMalloc");
    INIT_TRY(cudaMallocHost((void **)&ctx->hflag, sizeof(int)), "cudaMallocHost");
#ifdef EXPLORA_HIP
    if (hip_gemm != 2) {
        char why[256] = "";
        if (hip_blas_open(&ctx->hipblas, (void *)ctx->stream, why, sizeof why) != 0) {
            if (hip_gemm == 1) {
                cu_shutdown(ctx);
                EX_FAIL(err, EX_E_CONFIG, "backend hip: [backend] gemm = hipblas, but hipBLAS cannot be used: %s. "
                        "Install ROCm's hipblas, or set gemm = own.", why);
            }
            ctx->hipblas = NULL; /* auto: the own kernel */
        }
    }
    {
        const size_t len = strlen(ctx->name);
        snprintf(ctx->name + len, sizeof ctx->name - len, ", GEMM %s", ctx->hipblas ? hip_blas_name(ctx->hipblas) : "own");
    }
#else
    cublasStatus_t s = cublasCreate(&ctx->blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        ctx->blas = NULL;
        cu_shutdown(ctx);
        EX_FAIL(err, EX_E_DEVICE, "backend " CU_VENDOR ": cublasCreate failed: %s", cublasGetStatusString(s));
    }
    s = cublasSetStream(ctx->blas, ctx->stream);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasSetMathMode(ctx->blas, CUBLAS_DEFAULT_MATH); /* the compute type of each call decides */
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetPointerMode(ctx->blas, CUBLAS_POINTER_MODE_HOST);
    /* no routine may use float atomics (cuBLAS's default, pinned): with one stream, results repeat bit for
     * bit run to run on one GPU model and toolkit, as every own kernel's do (docs/GPU.md, Determinism) */
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetAtomicsMode(ctx->blas, CUBLAS_ATOMICS_NOT_ALLOWED);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cu_shutdown(ctx);
        EX_FAIL(err, EX_E_DEVICE, "backend " CU_VENDOR ": configuring cuBLAS failed: %s", cublasGetStatusString(s));
    }
    /* cuBLASLt for the linear layers' bias epilogue; without it they run GEMM + bias kernel */
    if (cublasLtCreate(&ctx->lt) != CUBLAS_STATUS_SUCCESS) ctx->lt = NULL;
    if (fused == 4) {
        const ex_status st = cu_attention_dnn_open(ctx, deterministic, err);
        if (st != EX_OK) {
            cu_shutdown(ctx);
            return st;
        }
        const size_t len = strlen(ctx->name);
        snprintf(ctx->name + len, sizeof ctx->name - len, ", cuDNN attention");
    }
#endif
    *out = ctx;
    return EX_OK;
}

ex_status cu_device_info(void *vctx, ex_device_info *out) {
    cu_ctx *ctx = vctx;
    CU_ARG(ctx && out, CU_VENDOR ": device_info needs a context and an output");
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", ctx->name);
    size_t free_b = 0, total_b = 0;
    CU_TRY(ctx, cudaSetDevice(ctx->device));
    CU_TRY(ctx, cudaMemGetInfo(&free_b, &total_b));
    out->total_memory = total_b;
    out->free_memory = free_b;
    out->threads = ctx->sms;
    return EX_OK;
}

/* The GPU's PCI bus id ("0000:3b:00.0"), which two processes on one GPU share: NCCL takes one rank per GPU, so
 * the core compares the ranks' keys before joining them (explora/comm.h). */
int cu_device_key(void *vctx, char *key, size_t cap) {
    cu_ctx *ctx = vctx;
    char bus[64] = "";
    if (!ctx || !key || cap < 8 || cudaDeviceGetPCIBusId(bus, (int)sizeof bus, ctx->device) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    bus[sizeof bus - 1] = '\0';
    snprintf(key, cap, "pci %s", bus);
    return 0;
}

int cu_supports_op(void *vctx, ex_op op, ex_dtype dtype) {
    (void)vctx;
    if ((int)op < 0 || op >= EX_OP_COUNT) return 0;
    if (dtype == EX_F32) return 1;
    /* the GEMM takes bf16/fp16 inputs, also mixed with fp32 ones (cu_gemm says how), fp32 output;
     * LayerNorm and GELU forwards also write bf16 (activations kept in bf16) */
    return (op == EX_OP_GEMM && (dtype == EX_BF16 || dtype == EX_F16)) ||
           ((op == EX_OP_LAYERNORM_FWD || op == EX_OP_GELU_FWD) && dtype == EX_BF16);
}

/* ------------------------------------------------------------------------------
 * Memory
 * ------------------------------------------------------------------------------ */

ex_status cu_alloc(void *vctx, size_t bytes, void **ptr, ex_err *err) {
    cu_ctx *ctx = vctx;
    EX_ENSURE(ptr, err, EX_E_INVALID, CU_VENDOR ": alloc without an output pointer");
    *ptr = NULL;
    EX_ENSURE(bytes <= SIZE_MAX - CU_ALIGN, err, EX_E_NOMEM, CU_VENDOR ": cannot allocate %zu bytes", bytes);
    size_t want = bytes == 0 ? CU_ALIGN : (bytes + CU_ALIGN - 1) / CU_ALIGN * CU_ALIGN;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, want); /* cudaMalloc returns 256-byte aligned memory */
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        EX_FAIL(err, EX_E_NOMEM,
                CU_VENDOR ": cannot allocate %zu bytes (%.1f MiB) on device %d: %s (%.1f of %.1f MiB free). To need less: "
                "[backbone] recompute = true (recompute_blocks = N for part of the blocks), [optim] frozen_dtype = bf16 "
                "and activation_dtype = bf16, or a smaller [optim] batch; `explora pretrain --dry-run` prints the plan.",
                bytes, (double)bytes / (1024.0 * 1024.0), ctx->device, cudaGetErrorString(e),
                (double)free_b / (1024.0 * 1024.0), (double)total_b / (1024.0 * 1024.0));
    }
    *ptr = p;
    return EX_OK;
}

void cu_free(void *vctx, void *ptr) {
    (void)vctx;
    if (ptr) cudaFree(ptr); /* cudaFree waits for work that may use ptr */
}

ex_status cu_copy(void *vctx, void *dst, const void *src, size_t bytes, ex_copy_kind kind) {
    cu_ctx *ctx = vctx;
    CU_ARG(kind == EX_COPY_H2D || kind == EX_COPY_D2H || kind == EX_COPY_D2D, CU_VENDOR ": bad copy kind %d", (int)kind);
    if (bytes == 0) return EX_OK;
    CU_ARG(dst && src, CU_VENDOR ": copy with a NULL pointer");
    if (kind == EX_COPY_D2D) {
        if (dst == src) return EX_OK;
        CU_TRY(ctx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
        return EX_OK;
    }
    enum cudaMemcpyKind k = kind == EX_COPY_H2D ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
    CU_TRY(ctx, cudaMemcpyAsync(dst, src, bytes, k, ctx->stream));
    EX_CHECK(cu_sync(ctx));
    return EX_OK;
}

ex_status cu_synchronize(void *vctx) {
    cu_ctx *ctx = vctx;
    EX_CHECK(cu_sync(ctx));
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * GEMM: row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so cuBLAS
 * gets (B, A) swapped with m and n exchanged; the transpose flags carry over.
 * ------------------------------------------------------------------------------ */

#ifndef EXPLORA_HIP
static cudaDataType_t cu_dtype(ex_dtype t) {
    return t == EX_BF16 ? CUDA_R_16BF : t == EX_F16 ? CUDA_R_16F : CUDA_R_32F;
}
#endif

static int cu_narrow(ex_dtype t) { return t == EX_BF16 || t == EX_F16; }

/* Elements from an operand's first to the last one the product reads (strides and leading dimension kept). */
static int64_t cu_span(int64_t batch, int64_t stride, int64_t rows, int64_t ld, int64_t cols) {
    return (batch - 1) * stride + (rows - 1) * ld + cols;
}

ex_status cu_gemm(void *vctx, const ex_gemm_desc *d) {
    cu_ctx *ctx = vctx;
    CU_ARG(d, CU_VENDOR ": gemm without a descriptor");
    if ((d->a_dtype != EX_F32 && !cu_narrow(d->a_dtype)) || (d->b_dtype != EX_F32 && !cu_narrow(d->b_dtype)))
        EX_FAIL(NULL, EX_E_UNSUPPORTED, CU_VENDOR ": gemm takes fp32, bf16 or fp16 inputs");
    CU_ARG(d->m >= 0 && d->n >= 0 && d->k >= 0 && d->batch >= 1, CU_VENDOR ": gemm: negative size or batch < 1");
    CU_ARG(d->m <= INT32_MAX && d->n <= INT32_MAX && d->k <= INT32_MAX, CU_VENDOR ": gemm: size beyond the int range");
    if (d->m == 0 || d->n == 0) return EX_OK;
    CU_ARG(d->c && d->ldc >= d->n && d->ldc <= INT32_MAX && d->stride_c >= 0, CU_VENDOR ": gemm: bad C");
    if (d->k == 0 || d->alpha == 0.0f)
        return cu_scale_matrix(ctx, d->c, d->m, d->n, d->ldc, d->stride_c, d->batch, d->beta);
    int64_t acols = d->trans_a ? d->m : d->k, bcols = d->trans_b ? d->k : d->n;
    CU_ARG(d->a && d->lda >= acols && d->lda <= INT32_MAX && d->stride_a >= 0, CU_VENDOR ": gemm: bad A");
    CU_ARG(d->b && d->ldb >= bcols && d->ldb <= INT32_MAX && d->stride_b >= 0, CU_VENDOR ": gemm: bad B");
    CU_ARG(d->batch <= INT32_MAX, CU_VENDOR ": gemm: batch beyond the int range");
    const ex_dtype nm = ctx->gemm_narrow; /* gemm_math = bf16 | fp16: that type, else EX_F32 */
    const int narrow = cu_narrow(d->a_dtype) || cu_narrow(d->b_dtype);
#ifndef EXPLORA_HIP
    /* gemm_math = bf16, two fp32 operands and a thin product (an inner or outer size <= CU_THIN_DIM: LoRA's
     * rank-r GEMMs, whose backward reads the (rows, dim) output gradient twice per slice): the rounding copies
     * would move more bytes than the product, which is memory-bound, so it runs in TF32 on the fp32 values as
     * they are (no copy; closer to fp32 than bf16 would be). */
    if (!narrow && nm == EX_BF16 && !ctx->gemm_own &&
        (d->m <= CU_THIN_DIM || d->n <= CU_THIN_DIM || d->k <= CU_THIN_DIM)) {
        const float alpha = d->alpha, beta = d->beta;
        CU_BLAS(ctx, cublasGemmStridedBatchedEx(ctx->blas, d->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                d->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)d->n, (int)d->m,
                                                (int)d->k, &alpha, d->b, CUDA_R_32F, (int)d->ldb,
                                                (long long)d->stride_b, d->a, CUDA_R_32F, (int)d->lda,
                                                (long long)d->stride_a, &beta, d->c, CUDA_R_32F, (int)d->ldc,
                                                (long long)d->stride_c, (int)d->batch, CUBLAS_COMPUTE_32F_FAST_TF32,
                                                CUBLAS_GEMM_DEFAULT));
        return EX_OK;
    }
#endif
    /* Narrow inputs (a frozen weight kept in bf16, [optim] frozen_dtype). Tensor cores take them as they are
     * when both are one narrow type, or when gemm_math rounds the fp32 one to the other's type anyway;
     * otherwise the narrow operands are widened to fp32 (exact) and the product follows gemm_math (fp32,
     * tf32; bf16/fp16 then round the widened values again) or the own kernel: in the fp32 cases the CPU
     * oracle's numbers, up to summation order. */
    const int direct = narrow && !ctx->gemm_own &&
                       (d->a_dtype == d->b_dtype || (nm != EX_F32 && (d->a_dtype == nm || d->b_dtype == nm) &&
                                                     (d->a_dtype == EX_F32 || d->b_dtype == EX_F32)));
    /* Which operands this call copies (widened to fp32, or rounded to gemm_math's 2-byte type). A copy larger
     * than [backend] gemm_copy_mib would keep a scratch buffer of its size for the rest of the run (the DINOv2
     * head's (rows, 131072) gradient: 2 GiB in bf16), so such a product runs as halves (ex_gemm_halve). */
    int copies[2];
    for (int w = 0; w < 2; w++) {
        const ex_dtype t = w ? d->b_dtype : d->a_dtype;
        copies[w] = narrow ? (direct ? t == EX_F32 : cu_narrow(t)) : (nm != EX_F32 && !ctx->gemm_own);
    }
    const int64_t copy_bytes = narrow && !direct ? 4 : 2; /* per element of the copy */
    for (int w = 0; w < 2; w++) {
        ex_gemm_desc half[2];
        if (copies[w] && ex_gemm_span(d, w) * copy_bytes > ctx->copy_cap_bytes && ex_gemm_halve(d, w, half)) {
            EX_CHECK(cu_gemm(vctx, &half[0]));
            return cu_gemm(vctx, &half[1]);
        }
    }
    if (narrow) {
        if (!direct) {
            const int64_t na = cu_narrow(d->a_dtype) ? cu_span(d->batch, d->stride_a, d->trans_a ? d->k : d->m, d->lda, acols) : 0;
            const int64_t nb = cu_narrow(d->b_dtype) ? cu_span(d->batch, d->stride_b, d->trans_b ? d->n : d->k, d->ldb, bcols) : 0;
            void *buf = NULL; /* the general scratch: no fp32 GEMM path below uses it */
            EX_CHECK(cu_scratch(ctx, sizeof(float) * (size_t)(na + nb), &buf));
            ex_gemm_desc w = *d;
            float *wa = buf, *wb = wa + na;
            if (na) {
                EX_CHECK(cu_widen(ctx, wa, d->a, d->a_dtype == EX_BF16, na));
                w.a = wa, w.a_dtype = EX_F32;
            }
            if (nb) {
                EX_CHECK(cu_widen(ctx, wb, d->b, d->b_dtype == EX_BF16, nb));
                w.b = wb, w.b_dtype = EX_F32;
            }
            return cu_gemm(vctx, &w);
        }
    }
#ifdef EXPLORA_HIP
    if (ctx->hipblas) { /* fp32 operands here: narrow ones were widened above (gemm_own keeps `direct` off) */
        const int s = hip_blas_sgemm(ctx->hipblas, d->trans_a, d->trans_b, (int)d->m, (int)d->n, (int)d->k, d->alpha,
                                     (const float *)d->a, (int)d->lda, d->stride_a, (const float *)d->b, (int)d->ldb,
                                     d->stride_b, d->beta, d->c, (int)d->ldc, d->stride_c, (int)d->batch);
        if (s != 0) {
            snprintf(ctx->last_error, sizeof ctx->last_error, "hip: hipblasSgemmStridedBatched failed: status %d", s);
            fprintf(stderr, "explora: %s\n", ctx->last_error);
            return EX_E_DEVICE;
        }
        return EX_OK;
    }
#endif
    if (ctx->gemm_own) {
        if (d->a_dtype != EX_F32)
            EX_FAIL(NULL, EX_E_UNSUPPORTED, CU_VENDOR ": gemm: the own kernel takes fp32 inputs only");
        return cu_gemm_own(ctx, d->trans_a, d->trans_b, d->m, d->n, d->k, d->alpha, (const float *)d->a, d->lda,
                           d->stride_a, (const float *)d->b, d->ldb, d->stride_b, d->beta, d->c, d->ldc, d->stride_c,
                           d->batch);
    }
#ifdef EXPLORA_HIP
    return EX_E_INTERNAL; /* gemm_own is always set on HIP */
#else
    const cublasOperation_t opa = d->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opb = d->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const float alpha = d->alpha, beta = d->beta;
    /* fp32 inputs: the configured arithmetic (gemm_math); bf16/fp16 inputs: their tensor cores, fp32 accumulation.
     * Under gemm_math = bf16 | fp16 every fp32 operand is first rounded to that type: a copy of the span it
     * occupies, from the first element to the last one read (strides and leading dimension kept; a view into a
     * wider matrix ends at its last row's last column), in the operand's scratch buffer. */
    ex_dtype ta = d->a_dtype, tb = d->b_dtype;
    const void *a = d->a, *b = d->b;
    if (nm != EX_F32 && ta == EX_F32) {
        const int64_t n = cu_span(d->batch, d->stride_a, d->trans_a ? d->k : d->m, d->lda, acols);
        void *r = NULL;
        EX_CHECK(cu_bf16_scratch(ctx, 0, (size_t)n * 2, &r));
        EX_CHECK(cu_to_narrow(ctx, r, (const float *)d->a, nm == EX_BF16, n));
        a = r, ta = nm;
    }
    if (nm != EX_F32 && tb == EX_F32) {
        const int64_t n = cu_span(d->batch, d->stride_b, d->trans_b ? d->n : d->k, d->ldb, bcols);
        void *r = NULL;
        EX_CHECK(cu_bf16_scratch(ctx, 1, (size_t)n * 2, &r));
        EX_CHECK(cu_to_narrow(ctx, r, (const float *)d->b, nm == EX_BF16, n));
        b = r, tb = nm;
    }
    if (ta != tb) return EX_E_INTERNAL; /* the mixed cases were widened or rounded above */
    const cudaDataType_t t = cu_dtype(ta);
    const cublasComputeType_t compute = ta == EX_F32 ? ctx->gemm_compute : CUBLAS_COMPUTE_32F;
    CU_BLAS(ctx, cublasGemmStridedBatchedEx(ctx->blas, opb, opa, (int)d->n, (int)d->m, (int)d->k, &alpha, b, t,
                                            (int)d->ldb, (long long)d->stride_b, a, t, (int)d->lda,
                                            (long long)d->stride_a, &beta, d->c, CUDA_R_32F, (int)d->ldc,
                                            (long long)d->stride_c, (int)d->batch, compute, CUBLAS_GEMM_DEFAULT));
    return EX_OK;
#endif
}

/* ------------------------------------------------------------------------------
 * The plugin
 * ------------------------------------------------------------------------------ */

static const ex_backend_vtable cu_vtable = {
    /* .init = */ cu_init,
    /* .shutdown = */ cu_shutdown,
    /* .device_info = */ cu_device_info,
    /* .supports_op = */ cu_supports_op,
    /* .alloc = */ cu_alloc,
    /* .free = */ cu_free,
    /* .copy = */ cu_copy,
    /* .fill = */ cu_fill,
    /* .synchronize = */ cu_synchronize,
    /* .gemm = */ cu_gemm,
    /* .bias_add_fwd = */ cu_bias_add_fwd,
    /* .bias_add_bwd = */ cu_bias_add_bwd,
    /* .layernorm_fwd = */ cu_layernorm_fwd,
    /* .layernorm_bwd = */ cu_layernorm_bwd,
    /* .gelu_fwd = */ cu_gelu_fwd,
    /* .gelu_bwd = */ cu_gelu_bwd,
    /* .silu_fwd = */ cu_silu_fwd,
    /* .silu_bwd = */ cu_silu_bwd,
    /* .softmax_fwd = */ cu_softmax_fwd,
    /* .softmax_bwd = */ cu_softmax_bwd,
    /* .attention_fwd = */ cu_attention_fwd,
    /* .attention_bwd = */ cu_attention_bwd,
    /* .binary = */ cu_binary,
    /* .axpby = */ cu_axpby,
    /* .channel_scale_fwd = */ cu_channel_scale_fwd,
    /* .channel_scale_bwd = */ cu_channel_scale_bwd,
    /* .row_scale_fwd = */ cu_row_scale_fwd,
    /* .row_scale_bwd = */ cu_row_scale_bwd,
    /* .reduce = */ cu_reduce,
    /* .gather_rows = */ cu_gather_rows,
    /* .scatter_add_rows = */ cu_scatter_add_rows,
    /* .mask_rows_fwd = */ cu_mask_rows_fwd,
    /* .mask_rows_bwd = */ cu_mask_rows_bwd,
    /* .xent_fwd = */ cu_xent_fwd,
    /* .xent_bwd = */ cu_xent_bwd,
    /* .l2norm_fwd = */ cu_l2norm_fwd,
    /* .l2norm_bwd = */ cu_l2norm_bwd,
    /* .adamw = */ cu_adamw,
    /* .ema = */ cu_ema,
    /* .rng_uniform = */ cu_rng_uniform,
    /* .rng_normal = */ cu_rng_normal,
    /* .rng_permutation = */ cu_rng_permutation,
    /* .rng_dropout = */ cu_rng_dropout,
    /* .patchify_fwd = */ cu_patchify_fwd,
    /* .patchify_bwd = */ cu_patchify_bwd,
    /* .copy2d = */ cu_copy2d,
#ifdef EXPLORA_HAVE_NCCL
    /* .comm_unique_id = */ cu_comm_unique_id,
    /* .comm_init = */ cu_comm_init,
    /* .comm_allreduce_sum_f32 = */ cu_comm_allreduce_sum_f32,
#else /* built without NCCL: several processes reduce through host memory (MPI) */
    /* .comm_unique_id = */ NULL,
    /* .comm_init = */ NULL,
    /* .comm_allreduce_sum_f32 = */ NULL,
#endif
    /* .layernorm_fwd_bf16 = */ cu_layernorm_fwd_bf16,
    /* .gelu_fwd_bf16 = */ cu_gelu_fwd_bf16,
    /* .gelu_bwd_inplace = */ cu_gelu_bwd_inplace,
#ifdef EXPLORA_HIP
    /* .linear_bias_fwd = */ NULL,
#else
    /* .linear_bias_fwd = */ cu_linear_bias_fwd,
#endif
    /* .exp_fwd = */ cu_exp_fwd,
    /* .row_sum = */ cu_row_sum,
    /* .to_bf16 = */ cu_to_bf16,
    /* .attention_fwd_bf16 = */ cu_attention_fwd_bf16,
    /* .attention_bwd_bf16 = */ cu_attention_bwd_bf16,
    /* .residual_fwd = */ cu_residual_fwd,
    /* .residual_bwd = */ cu_residual_bwd,
    /* .device_key = */ cu_device_key,
};

#if defined(EXPLORA_GPU_EMU)
/* tests/gpu_emu: the HIP or the CUDA build run by the host GPU emulator; EXPLORA_GPU_EMU is the plugin's name */
static const ex_plugin_desc desc = EX_PLUGIN_DESC(EX_PLUGIN_BACKEND, EXPLORA_GPU_EMU, "0.1.0",
#ifdef EXPLORA_HIP
                                                  "the hip backend's kernels on the host GPU emulator (tests only: "
                                                  "slow, no GPU)",
#else
                                                  "the cuda backend on the host GPU emulator, cuBLAS/cuBLASLt/CUB "
                                                  "as host stand-ins (tests only: slow, no GPU)",
#endif
                                                  cu_keys, &cu_vtable);
#elif defined(EXPLORA_HIP)
static const ex_plugin_desc desc = EX_PLUGIN_DESC(EX_PLUGIN_BACKEND, "hip", "0.1.0",
                                                  "fp32 HIP backend (AMD): the CUDA backend's kernels through hipcc, "
                                                  "own tiled GEMM, deterministic",
                                                  cu_keys, &cu_vtable);
#else
static const ex_plugin_desc desc = EX_PLUGIN_DESC(EX_PLUGIN_BACKEND, "cuda", "0.1.0",
                                                  "fp32 CUDA backend: cuBLAS GEMM, plain kernels, deterministic",
                                                  cu_keys, &cu_vtable);
#endif

EX_PLUGIN_ENTRY { return &desc; }
