/*
 * backends/cpu/cpu_backend.c — the "cpu" backend plugin: descriptor, vtable,
 * lifecycle (init reads the `threads` key), device info, memory and scratch.
 *
 * Device memory is host memory: alloc is a 256-byte aligned malloc and every
 * copy kind is a memcpy.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "cpu_internal.h"
#include "explora/plugin.h"

#define CPU_ALIGN ((size_t)256)

/* ------------------------------------------------------------------------------
 * Threads and scratch
 * ------------------------------------------------------------------------------ */

void cpu_set_blas_threads(const cpu_ctx *ctx) {
    if (omp_get_max_threads() != ctx->threads || openblas_get_num_threads() != ctx->threads) {
        omp_set_num_threads(ctx->threads);
        openblas_set_num_threads(ctx->threads);
    }
}

ex_status cpu_scratch(cpu_ctx *ctx, size_t bytes, void **out) {
    if (bytes > ctx->scratch_bytes) {
        void *p = NULL;
        size_t want = (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
        if (posix_memalign(&p, CPU_ALIGN, want) != 0)
            EX_FAIL(NULL, EX_E_NOMEM, "cpu: cannot allocate %zu bytes of scratch", want);
        free(ctx->scratch);
        ctx->scratch = p;
        ctx->scratch_bytes = want;
    }
    *out = ctx->scratch;
    return EX_OK;
}

ex_status cpu_attn_scratch(cpu_ctx *ctx, size_t floats, float **base) {
    if (floats > ctx->attn_slot) {
        /* round each slot up to a multiple of 64 floats (256 bytes): no false sharing */
        size_t slot = (floats + 63) / 64 * 64;
        void *p = NULL;
        if (posix_memalign(&p, CPU_ALIGN, slot * sizeof(float) * (size_t)ctx->threads) != 0)
            EX_FAIL(NULL, EX_E_NOMEM, "cpu: cannot allocate attention scratch");
        free(ctx->attn_scratch);
        ctx->attn_scratch = p;
        ctx->attn_slot = slot;
    }
    *base = ctx->attn_scratch;
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------------------ */

static const ex_key_spec cpu_keys[] = {
    {"threads", EX_KEY_INT, "0", 0, 4096, NULL,
     "OpenMP (and OpenBLAS) threads for every op; 0 = all cores. Results do not depend on it."},
    EX_KEY_END};

ex_status cpu_init(const ex_cfg_section *cfg, void **out, ex_err *err) {
    EX_ENSURE(out, err, EX_E_INVALID, "cpu backend: init called without a context pointer");
    int64_t threads = 0;
    if (cfg) EX_CHECK(ex_cfg_int(cfg, "threads", &threads, err));
    EX_ENSURE(threads >= 0 && threads <= 4096, err, EX_E_CONFIG,
              "cpu backend: threads = %lld is outside [0, 4096]", (long long)threads);
    if (threads == 0) threads = omp_get_num_procs();
    if (threads < 1) threads = 1;
    cpu_ctx *ctx = calloc(1, sizeof *ctx);
    EX_ENSURE(ctx, err, EX_E_NOMEM, "cpu backend: out of memory creating the context");
    ctx->threads = (int)threads;
    cpu_set_blas_threads(ctx);
    *out = ctx;
    return EX_OK;
}

void cpu_shutdown(void *vctx) {
    cpu_ctx *ctx = vctx;
    if (!ctx) return;
    free(ctx->attn_scratch);
    free(ctx->scratch);
    free(ctx);
}

ex_status cpu_device_info(void *vctx, ex_device_info *out) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(ctx && out, "cpu: device_info needs a context and an output");
    memset(out, 0, sizeof *out);
    /* openblas_get_config() reads e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64" */
    char version[32] = "?";
    const char *cfg = openblas_get_config();
    if (cfg && strncmp(cfg, "OpenBLAS ", 9) == 0) {
        size_t i = 0;
        for (const char *s = cfg + 9; *s && *s != ' ' && i + 1 < sizeof version; s++) version[i++] = *s;
        version[i] = '\0';
    }
    const char *core = openblas_get_corename();
    snprintf(out->name, sizeof out->name, "cpu: %d threads, OpenBLAS %s (%s)", ctx->threads, version,
             core ? core : "?");
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psize > 0) out->total_memory = (uint64_t)pages * (uint64_t)psize;
    if (avail > 0 && psize > 0) out->free_memory = (uint64_t)avail * (uint64_t)psize;
    /* Linux: what can be allocated without swapping counts reclaimable page cache too (MemAvailable), which
     * unused pages alone (above) leave out */
    FILE *mi = fopen("/proc/meminfo", "r");
    if (mi) {
        char line[256];
        unsigned long long kib = 0;
        while (fgets(line, sizeof line, mi))
            if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
                out->free_memory = (uint64_t)kib * 1024u;
                break;
            }
        fclose(mi);
    }
    out->threads = ctx->threads;
    return EX_OK;
}

int cpu_supports_op(void *ctx, ex_op op, ex_dtype dtype) {
    (void)ctx;
    if ((int)op < 0 || op >= EX_OP_COUNT) return 0;
    /* the GEMM also takes bf16/fp16 inputs (widened to fp32: the oracle of the devices' mixed GEMMs);
     * LayerNorm and GELU forwards also write bf16 (layernorm_fwd_bf16, gelu_fwd_bf16) */
    return dtype == EX_F32 || (op == EX_OP_GEMM && (dtype == EX_BF16 || dtype == EX_F16)) ||
           ((op == EX_OP_LAYERNORM_FWD || op == EX_OP_GELU_FWD) && dtype == EX_BF16);
}

/* ------------------------------------------------------------------------------
 * Memory
 * ------------------------------------------------------------------------------ */

ex_status cpu_alloc(void *ctx, size_t bytes, void **ptr, ex_err *err) {
    (void)ctx;
    EX_ENSURE(ptr, err, EX_E_INVALID, "cpu: alloc without an output pointer");
    *ptr = NULL;
    EX_ENSURE(bytes <= SIZE_MAX - CPU_ALIGN, err, EX_E_NOMEM, "cpu: cannot allocate %zu bytes", bytes);
    size_t want = bytes == 0 ? CPU_ALIGN : (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    void *p = NULL;
    if (posix_memalign(&p, CPU_ALIGN, want) != 0)
        EX_FAIL(err, EX_E_NOMEM, "cpu: cannot allocate %zu bytes (%.1f MiB) of host memory", bytes,
                (double)bytes / (1024.0 * 1024.0));
    *ptr = p;
    return EX_OK;
}

void cpu_free(void *ctx, void *ptr) {
    (void)ctx;
    free(ptr);
}

ex_status cpu_copy(void *ctx, void *dst, const void *src, size_t bytes, ex_copy_kind kind) {
    (void)ctx;
    CPU_ARG(kind == EX_COPY_H2D || kind == EX_COPY_D2H || kind == EX_COPY_D2D, "cpu: bad copy kind %d",
            (int)kind);
    if (bytes == 0) return EX_OK;
    CPU_ARG(dst && src, "cpu: copy with a NULL pointer");
    if (dst != src) memmove(dst, src, bytes);
    return EX_OK;
}

ex_status cpu_fill(void *vctx, float *dst /* (n) */, float value, int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && (dst || n == 0), "cpu: fill: bad arguments");
#pragma omp parallel for num_threads(ctx->threads) schedule(static) if (n > 4 * CPU_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dst[i] = value;
    return EX_OK;
}

ex_status cpu_synchronize(void *ctx) {
    (void)ctx;
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * The plugin
 * ------------------------------------------------------------------------------ */

static const ex_backend_vtable cpu_vtable = {
    /* .init = */ cpu_init,
    /* .shutdown = */ cpu_shutdown,
    /* .device_info = */ cpu_device_info,
    /* .supports_op = */ cpu_supports_op,
    /* .alloc = */ cpu_alloc,
    /* .free = */ cpu_free,
    /* .copy = */ cpu_copy,
    /* .fill = */ cpu_fill,
    /* .synchronize = */ cpu_synchronize,
    /* .gemm = */ cpu_gemm,
    /* .bias_add_fwd = */ cpu_bias_add_fwd,
    /* .bias_add_bwd = */ cpu_bias_add_bwd,
    /* .layernorm_fwd = */ cpu_layernorm_fwd,
    /* .layernorm_bwd = */ cpu_layernorm_bwd,
    /* .gelu_fwd = */ cpu_gelu_fwd,
    /* .gelu_bwd = */ cpu_gelu_bwd,
    /* .silu_fwd = */ cpu_silu_fwd,
    /* .silu_bwd = */ cpu_silu_bwd,
    /* .softmax_fwd = */ cpu_softmax_fwd,
    /* .softmax_bwd = */ cpu_softmax_bwd,
    /* .attention_fwd = */ cpu_attention_fwd,
    /* .attention_bwd = */ cpu_attention_bwd,
    /* .binary = */ cpu_binary,
    /* .axpby = */ cpu_axpby,
    /* .channel_scale_fwd = */ cpu_channel_scale_fwd,
    /* .channel_scale_bwd = */ cpu_channel_scale_bwd,
    /* .row_scale_fwd = */ cpu_row_scale_fwd,
    /* .row_scale_bwd = */ cpu_row_scale_bwd,
    /* .reduce = */ cpu_reduce,
    /* .gather_rows = */ cpu_gather_rows,
    /* .scatter_add_rows = */ cpu_scatter_add_rows,
    /* .mask_rows_fwd = */ cpu_mask_rows_fwd,
    /* .mask_rows_bwd = */ cpu_mask_rows_bwd,
    /* .xent_fwd = */ cpu_xent_fwd,
    /* .xent_bwd = */ cpu_xent_bwd,
    /* .l2norm_fwd = */ cpu_l2norm_fwd,
    /* .l2norm_bwd = */ cpu_l2norm_bwd,
    /* .adamw = */ cpu_adamw,
    /* .ema = */ cpu_ema,
    /* .rng_uniform = */ cpu_rng_uniform,
    /* .rng_normal = */ cpu_rng_normal,
    /* .rng_permutation = */ cpu_rng_permutation,
    /* .rng_dropout = */ cpu_rng_dropout,
    /* .patchify_fwd = */ cpu_patchify_fwd,
    /* .patchify_bwd = */ cpu_patchify_bwd,
    /* .copy2d = */ cpu_copy2d,
    /* collectives: none; several processes reduce CPU memory by MPI directly (explora/comm.h) */
    /* .comm_unique_id = */ NULL,
    /* .comm_init = */ NULL,
    /* .comm_allreduce_sum_f32 = */ NULL,
    /* .layernorm_fwd_bf16 = */ cpu_layernorm_fwd_bf16,
    /* .gelu_fwd_bf16 = */ cpu_gelu_fwd_bf16,
    /* .gelu_bwd_inplace = */ cpu_gelu_bwd_inplace,
    /* .linear_bias_fwd = */ NULL, /* GEMM then bias_add_fwd: the oracle's order */
    /* .exp_fwd = */ cpu_exp_fwd,
    /* .row_sum = */ cpu_row_sum,
    /* .to_bf16 = */ cpu_to_bf16,
    /* .attention_fwd_bf16 = */ cpu_attention_fwd_bf16,
    /* .attention_bwd_bf16 = */ cpu_attention_bwd_bf16,
    /* .residual_fwd = */ cpu_residual_fwd,
    /* .residual_bwd = */ cpu_residual_bwd,
    /* .device_key = */ NULL, /* processes on one host share nothing that collectives mind */
};

static const ex_plugin_desc desc = EX_PLUGIN_DESC(EX_PLUGIN_BACKEND, "cpu", "0.1.0",
                                                  "fp32 reference backend: OpenBLAS GEMM, OpenMP loops",
                                                  cpu_keys, &cpu_vtable);

EX_PLUGIN_ENTRY { return &desc; }
