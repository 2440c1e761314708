/*
 * tests/gpu_emu/test_gpu_emu_tc.c — the tensor-core flash attention (backends/cuda/cuda_attention_tc.cu,
 * attention = fused_bf16 | fused_fp16) on the GPU emulator, against attention computed in double.
 *
 * The kernels are NVIDIA-only (WMMA), so the hip build the parity suite runs on the emulator leaves them
 * out; this test compiles cuda_attention_tc.cu as the CUDA build does, against the emulator's CUDA-named
 * headers (include_cuda: WMMA with every lane holding the whole 16x16 tile) and drives its entry points
 * with a hand-made context, as cuda_backend.c would.
 *
 * Checked, for every head size with a kernel and token counts with one, several and partial tiles:
 * - forward out and lse, backward dq, dk, dv, within bf16 (fp16) rounding of the double result by NMSE,
 *   and out and the gradients above 1e-10, so that results computed in fp32 without rounding fail;
 * - the fp32 entry points accumulate into dqkv (+=), the bf16-storage ones overwrite it;
 * - the bf16-storage entry points read bf16 qkv and write bf16 out: compared with the double result on
 *   the same bf16 inputs;
 * - threads run in launch order and reversed (EXPLORA_GPU_EMU_ORDER is read once, so the ctest entry
 *   sets it), and the kernels' shuffles and barriers are checked by the emulator.
 */
#include "test_support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "explora/tensor.h"

/* ---- the two backend functions the kernels' launchers call (cuda_backend.c in the plugin) ---- */

ex_status cu_fail_cuda(cu_ctx *ctx, cudaError_t e, const char *what, const char *file, int line) {
    if (ctx) snprintf(ctx->last_error, sizeof ctx->last_error, "%s failed: %s", what, cudaGetErrorString(e));
    fprintf(stderr, "test_gpu_emu_tc: %s failed: %s at %s:%d\n", what, cudaGetErrorString(e), file, line);
    return EX_E_DEVICE;
}

ex_status cu_scratch(cu_ctx *ctx, size_t bytes, void **out) {
    if (bytes > ctx->scratch_bytes) {
        cudaFree(ctx->scratch);
        ctx->scratch = NULL;
        ctx->scratch_bytes = 0;
        if (cudaMalloc(&ctx->scratch, bytes) != cudaSuccess) return EX_E_NOMEM;
        ctx->scratch_bytes = bytes;
    }
    *out = ctx->scratch;
    return EX_OK;
}

/* ---- reference: attention in double ---- */

/* out (b, t, nh*hs), lse (b, nh, t) from qkv (b, t, 3, nh, hs); grads: dqkv = d(out . dout) / dqkv */
static void ref_attention(const double *qkv, const double *dout, int64_t b, int64_t t, int64_t nh, int64_t hs,
                          double scale, double *out, double *lse, double *dqkv) {
    const int64_t C = nh * hs, ld = 3 * C;
    double *p = malloc((size_t)(t * t) * sizeof *p), *dp = malloc((size_t)t * sizeof *dp);
    memset(dqkv, 0, (size_t)(b * t * ld) * sizeof *dqkv);
    for (int64_t bi = 0; bi < b; bi++)
        for (int64_t h = 0; h < nh; h++) {
            const double *q = qkv + bi * t * ld + h * hs, *k = q + C, *v = q + 2 * C;
            double *dq = dqkv + bi * t * ld + h * hs, *dk = dq + C, *dv = dq + 2 * C;
            for (int64_t i = 0; i < t; i++) {
                double m = -INFINITY, l = 0;
                for (int64_t j = 0; j < t; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < hs; d++) s += q[i * ld + d] * k[j * ld + d];
                    p[i * t + j] = s * scale;
                    if (p[i * t + j] > m) m = p[i * t + j];
                }
                for (int64_t j = 0; j < t; j++) l += exp(p[i * t + j] - m);
                lse[(bi * nh + h) * t + i] = m + log(l);
                for (int64_t j = 0; j < t; j++) p[i * t + j] = exp(p[i * t + j] - m) / l;
                for (int64_t d = 0; d < hs; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < t; j++) o += p[i * t + j] * v[j * ld + d];
                    out[(bi * t + i) * C + h * hs + d] = o;
                }
            }
            for (int64_t i = 0; i < t; i++) {
                const double *g = dout + (bi * t + i) * C + h * hs;
                double D = 0;
                for (int64_t j = 0; j < t; j++) {
                    dp[j] = 0;
                    for (int64_t d = 0; d < hs; d++) dp[j] += g[d] * v[j * ld + d];
                    D += p[i * t + j] * dp[j];
                }
                for (int64_t j = 0; j < t; j++) {
                    const double pij = p[i * t + j], ds = pij * (dp[j] - D) * scale;
                    for (int64_t d = 0; d < hs; d++) {
                        dv[j * ld + d] += pij * g[d];
                        dq[i * ld + d] += ds * k[j * ld + d];
                        dk[j * ld + d] += ds * q[i * ld + d];
                    }
                }
            }
        }
    free(p);
    free(dp);
}

/* ---- helpers ---- */

static float urand(uint64_t *s, float lo, float hi) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((*s >> 40) * (1.0 / 16777216.0));
}

static double nmse(const float *got, const double *want, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)got[i] - want[i];
        num += d * d;
        den += want[i] * want[i];
    }
    return den > 0 ? num / den : num;
}

static void *dev_upload(const void *host, size_t bytes) {
    void *d = NULL;
    assert_int_equal(cudaMalloc(&d, bytes), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, NULL), cudaSuccess);
    return d;
}

static void dev_download(void *host, const void *dev, size_t bytes) {
    assert_int_equal(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, NULL), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(NULL), cudaSuccess); /* the copy lands in host memory only then */
}

static cu_ctx *make_ctx(int attn_fused) {
    cu_ctx *ctx = calloc(1, sizeof *ctx);
    assert_non_null(ctx);
    ctx->warp = 32;
    ctx->cc_major = 9;
    ctx->smem_optin = 232448; /* an sm_90's opt-in shared memory per block */
    ctx->attn_fused = attn_fused;
    ctx->tc_usable = cu_attention_tc_usable(ctx);
    assert_int_equal(ctx->tc_usable, 1);
    return ctx;
}

static void free_ctx(cu_ctx *ctx) {
    cudaFree(ctx->scratch);
    free(ctx);
}

static void check(const char *what, const float *got, const double *want, int64_t n, double max, int lower) {
    const double e = nmse(got, want, n);
    printf("#   %-10s NMSE %.3g\n", what, e);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(got[i])) fail_msg("%s: element %lld is %g", what, (long long)i, (double)got[i]);
    if (!(e <= max)) fail_msg("%s: NMSE %.3g above %.3g", what, e, max);
    if (lower && !(e >= 1e-10)) fail_msg("%s: NMSE %.3g: no bf16/fp16 rounding happened", what, e);
}

typedef struct tc_case {
    int64_t b, t, nh, hs;
} tc_case;

static const tc_case cases[] = {{2, 37, 3, 16}, {1, 33, 2, 32}, {1, 40, 1, 48}, {2, 50, 2, 64}, {1, 97, 1, 64},
                                {1, 1, 1, 64},  {1, 20, 1, 80}, {1, 17, 1, 96}, {1, 35, 1, 128}};

/* The fp32 entry points (cu_attention_tc_fwd / _bwd) with tiles of bf16 (attn_fused 2) or fp16 (3). */
static void run_fp32_io(int attn_fused, double max) {
    cu_ctx *ctx = make_ctx(attn_fused);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const tc_case c = cases[ci];
        const int64_t C = c.nh * c.hs, nq = c.b * c.t * 3 * C, no = c.b * c.t * C, nl = c.b * c.nh * c.t;
        const float scale = 1.0f / sqrtf((float)c.hs);
        printf("# %s tiles, (b, t, nh, hs) = (%lld, %lld, %lld, %lld)\n", attn_fused == 2 ? "bf16" : "fp16",
               (long long)c.b, (long long)c.t, (long long)c.nh, (long long)c.hs);
        assert_int_equal(cu_attention_tc_fits(ctx, c.hs), 1);
        float *qkv = malloc(nq * 4), *go = malloc(no * 4), *dq0 = malloc(nq * 4), *out = malloc(no * 4),
              *lse = malloc(nl * 4), *dq = malloc(nq * 4), *grad = malloc(nq * 4);
        double *qd = malloc(nq * 8), *gd = malloc(no * 8), *od = malloc(no * 8), *ld = malloc(nl * 8),
               *dd = malloc(nq * 8), *want = malloc(nq * 8);
        uint64_t seed = 1234 + ci;
        for (int64_t i = 0; i < nq; i++) qd[i] = qkv[i] = urand(&seed, -2, 2);
        for (int64_t i = 0; i < no; i++) gd[i] = go[i] = urand(&seed, -1, 1);
        for (int64_t i = 0; i < nq; i++) dq0[i] = urand(&seed, -1, 1);
        ref_attention(qd, gd, c.b, c.t, c.nh, c.hs, scale, od, ld, dd);
        float *d_qkv = dev_upload(qkv, nq * 4), *d_go = dev_upload(go, no * 4), *d_dq = dev_upload(dq0, nq * 4);
        float *d_out = dev_upload(out, no * 4), *d_lse = dev_upload(lse, nl * 4);
        assert_int_equal(cu_attention_tc_fwd(ctx, d_out, d_lse, d_qkv, c.b, c.t, c.nh, c.hs, scale), EX_OK);
        assert_int_equal(cu_attention_tc_bwd(ctx, d_dq, d_go, d_out, d_lse, d_qkv, c.b, c.t, c.nh, c.hs, scale),
                         EX_OK);
        dev_download(out, d_out, no * 4);
        dev_download(lse, d_lse, nl * 4);
        dev_download(dq, d_dq, nq * 4);
        for (int64_t i = 0; i < nq; i++) {
            grad[i] = dq[i] - dq0[i]; /* accumulated onto the random values */
            want[i] = dd[i];
        }
        check("out", out, od, no, max, 1);
        check("lse", lse, ld, nl, max, 0);
        check("dqkv", grad, want, nq, 10 * max, 1);
        cudaFree(d_qkv), cudaFree(d_go), cudaFree(d_dq), cudaFree(d_out), cudaFree(d_lse);
        free(qkv), free(go), free(dq0), free(out), free(lse), free(dq), free(grad);
        free(qd), free(gd), free(od), free(ld), free(dd), free(want);
    }
    free_ctx(ctx);
}

static void test_bf16_tiles(void **state) {
    (void)state;
    run_fp32_io(2, 1e-4);
}

static void test_fp16_tiles(void **state) {
    (void)state;
    run_fp32_io(3, 2e-6);
}

/* The bf16-storage entry points (cu_attention_tc_fwd16 / _bwd16): bf16 qkv in, bf16 out, dqkv written. */
static void test_bf16_storage(void **state) {
    (void)state;
    cu_ctx *ctx = make_ctx(2);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const tc_case c = cases[ci];
        const int64_t C = c.nh * c.hs, nq = c.b * c.t * 3 * C, no = c.b * c.t * C, nl = c.b * c.nh * c.t;
        const float scale = 1.0f / sqrtf((float)c.hs);
        printf("# bf16 storage, (b, t, nh, hs) = (%lld, %lld, %lld, %lld)\n", (long long)c.b, (long long)c.t,
               (long long)c.nh, (long long)c.hs);
        uint16_t *qkv = malloc(nq * 2), *out16 = malloc(no * 2);
        float *go = malloc(no * 4), *out = malloc(no * 4), *lse = malloc(nl * 4), *dq = malloc(nq * 4);
        double *qd = malloc(nq * 8), *gd = malloc(no * 8), *od = malloc(no * 8), *ld = malloc(nl * 8),
               *dd = malloc(nq * 8);
        uint64_t seed = 777 + ci;
        for (int64_t i = 0; i < nq; i++) {
            qkv[i] = ex_f32_to_bf16(urand(&seed, -2, 2));
            qd[i] = ex_bf16_to_f32(qkv[i]);
        }
        for (int64_t i = 0; i < no; i++) gd[i] = go[i] = urand(&seed, -1, 1);
        for (int64_t i = 0; i < nq; i++) dq[i] = NAN; /* overwritten, not accumulated */
        ref_attention(qd, gd, c.b, c.t, c.nh, c.hs, scale, od, ld, dd);
        uint16_t *d_qkv = dev_upload(qkv, nq * 2), *d_out = dev_upload(out16, no * 2);
        float *d_go = dev_upload(go, no * 4), *d_dq = dev_upload(dq, nq * 4), *d_lse = dev_upload(lse, nl * 4);
        assert_int_equal(cu_attention_tc_fits16(ctx, c.hs), 1);
        assert_int_equal(cu_attention_tc_fwd16(ctx, d_out, d_lse, d_qkv, c.b, c.t, c.nh, c.hs, scale), EX_OK);
        assert_int_equal(cu_attention_tc_bwd16(ctx, d_dq, d_go, d_out, d_lse, d_qkv, c.b, c.t, c.nh, c.hs, scale),
                         EX_OK);
        dev_download(out16, d_out, no * 2);
        dev_download(lse, d_lse, nl * 4);
        dev_download(dq, d_dq, nq * 4);
        for (int64_t i = 0; i < no; i++) out[i] = ex_bf16_to_f32(out16[i]);
        check("out", out, od, no, 1e-4, c.t > 1); /* one token: out is v, already bf16, so exact */
        check("lse", lse, ld, nl, 1e-4, 0);
        check("dqkv", dq, dd, nq, 1e-3, 1);
        cudaFree(d_qkv), cudaFree(d_out), cudaFree(d_go), cudaFree(d_dq), cudaFree(d_lse);
        free(qkv), free(out16), free(go), free(out), free(lse), free(dq);
        free(qd), free(gd), free(od), free(ld), free(dd);
    }
    free_ctx(ctx);
}

/* Refusals: head sizes without a kernel, and more shared memory than the device lets a block opt into. */
static void test_fits(void **state) {
    (void)state;
    cu_ctx *ctx = make_ctx(2);
    assert_int_equal(cu_attention_tc_fits(ctx, 8), 0);
    assert_int_equal(cu_attention_tc_fits(ctx, 112), 0);
    assert_int_equal(cu_attention_tc_fits(ctx, 64), 1);
    ctx->smem_optin = 48 * 1024; /* hs = 128 needs more than 48 KiB */
    assert_int_equal(cu_attention_tc_fits(ctx, 128), 0);
    ctx->attn_fused = 3;
    assert_int_equal(cu_attention_tc_fits16(ctx, 64), 0); /* bf16 storage needs bf16 tiles */
    free_ctx(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fits),
        cmocka_unit_test(test_bf16_tiles),
        cmocka_unit_test(test_fp16_tiles),
        cmocka_unit_test(test_bf16_storage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
