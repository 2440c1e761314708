/*
 * backends/cuda/cuda_attention_dnn.c — the attention_fwd/bwd slots through cuDNN's fused
 * scaled-dot-product attention: `[backend] attention = cudnn` (NVIDIA sm_80+, cuDNN 9).
 *
 * The fp32 attention slots keep attention's tensors in fp32; cuDNN's fused engines take bf16. So:
 *   forward   qkv (b, t, 3, nh, hs) fp32 -> bf16 copy; cuDNN writes o (b, t, nh, hs) in bf16 and
 *             lse (b, nh, t) in fp32 straight into the caller's buffer; o is widened into `out`.
 *   backward  bf16 copies of qkv, out (exact: out holds widened bf16 values) and dout; cuDNN writes
 *             bf16 dq, dk, dv into one (b, t, 3, nh, hs) buffer; dqkv += its widened values.
 * The bf16 slots (a block keeping its activations in bf16) hand cuDNN the stored qkv and o as they are;
 * only dout is rounded into a copy, and dq, dk, dv are widened back (written: that slot's dqkv is not
 * accumulated).
 * Numerics are those of bf16 flash attention (the inputs of every product rounded to bf16, fp32
 * softmax and accumulation), the same class as attention = fused_bf16, and the parity suite holds
 * it to the same tolerances. The copies cost 2 bytes per element: the backward of a ViT-L/14
 * global-crop batch of 64 takes 8 x 64 x 257 x 1024 x 2 B = 269 MB of bf16 scratch, in place of the
 * gemm path's score chunks.
 *
 * Shapes cuDNN cannot take (cu_dnn_sdpa_fits: head size not a multiple of 8, or above 128) run what
 * attention = fused_bf16 runs for them, as documented for the setting. So does a shape cuDNN
 * accepts in principle but for which no engine builds a plan: the slot returns EX_E_UNSUPPORTED
 * before writing anything, the dispatcher (cuda_attention.cu) takes the fused_bf16 route, and the
 * first such failure of a shape is said on stderr with cuDNN's reason. A failure while running a
 * plan is an error.
 *
 * Built when CMake finds cuDNN's headers (EXPLORA_HAVE_CUDNN); without them the setting reports
 * that the build lacks cuDNN.
 */
#include <stdio.h>
#include <string.h>

#include "cuda_internal.h"

#ifdef EXPLORA_HAVE_CUDNN

#include "cuda_dnn.h"

/* Record cuDNN's reason like a device error (printed once, kept in last_error). */
static ex_status dnn_fail(cu_ctx *ctx, ex_status code, const char *why) {
    char msg[512];
    snprintf(msg, sizeof msg, "cuda: attention = cudnn: %.400s", why);
    if (strcmp(ctx->last_error, msg) != 0) fprintf(stderr, "explora: %s\n", msg);
    snprintf(ctx->last_error, sizeof ctx->last_error, "%s", msg);
    return ex_err_set(NULL, code, __FILE__, __LINE__, "%s", msg);
}

ex_status cu_attention_dnn_open(cu_ctx *ctx, int deterministic, ex_err *err) {
    char why[512] = "";
    if (cu_dnn_open(&ctx->dnn, NULL, why, sizeof why) != 0 ||
        cu_dnn_bind(ctx->dnn, (void *)ctx->stream, why, sizeof why) != 0) {
        cu_dnn_close(ctx->dnn);
        ctx->dnn = NULL;
        EX_FAIL(err, EX_E_CONFIG,
                "backend cuda: [backend] attention = cudnn, but cuDNN cannot be used: %s. Install cuDNN 9 for this "
                "CUDA (NVIDIA's libcudnn9 package, or put its lib directory on LD_LIBRARY_PATH), or set attention "
                "= fused_bf16",
                why);
    }
    cu_dnn_set_deterministic(ctx->dnn, deterministic);
    return EX_OK;
}

void cu_attention_dnn_close(cu_ctx *ctx) {
    cu_dnn_close(ctx->dnn);
    ctx->dnn = NULL;
}

int cu_attention_dnn_fits(const cu_ctx *ctx, int64_t b, int64_t t, int64_t nh, int64_t hs) {
    const cu_dnn_sdpa s = {b, t, nh, hs, 1.0f, 0};
    return ctx->dnn && ctx->cc_major >= 8 && cu_dnn_sdpa_fits(&s);
}

static size_t round256(size_t bytes) { return (bytes + 255) / 256 * 256; }

/* The plan of s and a workspace for it. */
static ex_status dnn_prepare(cu_ctx *ctx, const cu_dnn_sdpa *s, int backward, void **ws) {
    size_t bytes = 0;
    int kind = 0;
    char why[768] = "";
    const int rc = cu_dnn_sdpa_plan(ctx->dnn, s, backward, &bytes, &kind, why, sizeof why);
    if (rc == -2) return EX_E_UNSUPPORTED; /* said once, when the shape first failed */
    if (rc != 0) {
        /* not an error: the caller falls back; said once per shape (later calls return -2 above) */
        fprintf(stderr,
                "explora: cuda: attention = cudnn: %.700s (b %lld, t %lld, %lld heads of %lld); this shape's %s runs "
                "as attention = fused_bf16 would run it\n",
                why, (long long)s->b, (long long)s->t, (long long)s->nh, (long long)s->hs,
                backward ? "backward" : "forward");
        return EX_E_UNSUPPORTED;
    }
    *ws = NULL;
    EX_CHECK(cu_scratch(ctx, bytes ? bytes : 256, ws));
    if (kind == CU_DNN_BWD_ACCUM) { /* cuDNN before 9.6 adds into the dQ accumulator without clearing it */
        size_t off = 0, n = 0;
        cu_dnn_sdpa_accum_region(s, &off, &n);
        CU_TRY(ctx, cudaMemsetAsync((char *)*ws + off, 0, n, ctx->stream));
    }
    return EX_OK;
}

/* Forward on bf16 tensors: qkv16 (b, t, 3, nh, hs), o16 (b, t, nh*hs); lse (b, nh, t) fp32. */
static ex_status dnn_fwd(cu_ctx *ctx, void *o16, float *lse, const void *qkv16, int64_t b, int64_t t, int64_t nh,
                         int64_t hs, float scale) {
    const cu_dnn_sdpa s = {b, t, nh, hs, scale, 0};
    void *ws = NULL;
    EX_CHECK(dnn_prepare(ctx, &s, 0, &ws));
    cu_dnn_sdpa_io io;
    memset(&io, 0, sizeof io);
    io.qkv = (void *)qkv16, io.o = o16, io.stats = lse, io.workspace = ws;
    char why[512] = "";
    if (cu_dnn_sdpa_run(ctx->dnn, &s, 0, &io, why, sizeof why) != 0) return dnn_fail(ctx, EX_E_DEVICE, why);
    return EX_OK;
}

/* Backward on bf16 qkv16 and o16 with an fp32 dout: dout is rounded into bf16 scratch (slot 1, so that the fp32
 * slot's copies in slot 0 stay), cuDNN writes dq, dk, dv in bf16 after it, and dqkv (fp32) gets their widened
 * values: added (accumulate = 1, the fp32 slot) or written (0, the bf16 slot). */
static ex_status dnn_bwd(cu_ctx *ctx, float *dqkv, const float *dout, const void *o16, const float *lse,
                         const void *qkv16, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale, int accumulate) {
    const cu_dnn_sdpa s = {b, t, nh, hs, scale, 0};
    void *ws = NULL;
    EX_CHECK(dnn_prepare(ctx, &s, 1, &ws));
    const int64_t C = nh * hs, n_qkv = b * t * 3 * C, n_o = b * t * C;
    const size_t sz_o = round256((size_t)n_o * 2);
    void *buf = NULL;
    EX_CHECK(cu_bf16_scratch(ctx, 1, sz_o + (size_t)n_qkv * 2, &buf));
    char *do16 = buf, *dqkv16 = (char *)buf + sz_o;
    EX_CHECK(cu_to_narrow(ctx, do16, dout, 1, n_o));
    cu_dnn_sdpa_io io;
    memset(&io, 0, sizeof io);
    io.qkv = (void *)qkv16, io.o = (void *)o16, io.stats = (float *)lse, io.dout = do16, io.dqkv = dqkv16;
    io.workspace = ws;
    char why[512] = "";
    if (cu_dnn_sdpa_run(ctx->dnn, &s, 1, &io, why, sizeof why) != 0) return dnn_fail(ctx, EX_E_DEVICE, why);
    return accumulate ? cu_widen_add(ctx, dqkv, dqkv16, 1, n_qkv) : cu_widen(ctx, dqkv, dqkv16, 1, n_qkv);
}

ex_status cu_attention_dnn_fwd16(cu_ctx *ctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b, int64_t t,
                                 int64_t nh, int64_t hs, float scale) {
    return dnn_fwd(ctx, out, lse, qkv, b, t, nh, hs, scale);
}

ex_status cu_attention_dnn_bwd16(cu_ctx *ctx, float *dqkv, const float *dout, const uint16_t *out, const float *lse,
                                 const uint16_t *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    return dnn_bwd(ctx, dqkv, dout, out, lse, qkv, b, t, nh, hs, scale, 0);
}

/* The fp32 slots: bf16 copies of qkv (and o) in scratch slot 0, then the same graphs. */
ex_status cu_attention_dnn_fwd(cu_ctx *ctx, float *out, float *lse, const float *qkv, int64_t b, int64_t t,
                               int64_t nh, int64_t hs, float scale) {
    const int64_t C = nh * hs, n_qkv = b * t * 3 * C, n_o = b * t * C;
    const size_t off_o = round256((size_t)n_qkv * 2);
    void *buf = NULL;
    EX_CHECK(cu_bf16_scratch(ctx, 0, off_o + (size_t)n_o * 2, &buf));
    char *qkv16 = buf, *o16 = (char *)buf + off_o;
    EX_CHECK(cu_to_narrow(ctx, qkv16, qkv, 1, n_qkv));
    EX_CHECK(dnn_fwd(ctx, o16, lse, qkv16, b, t, nh, hs, scale));
    return cu_widen(ctx, out, o16, 1, n_o);
}

ex_status cu_attention_dnn_bwd(cu_ctx *ctx, float *dqkv, const float *dout, const float *out, const float *lse,
                               const float *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    const int64_t C = nh * hs, n_qkv = b * t * 3 * C, n_o = b * t * C;
    const size_t sz_qkv = round256((size_t)n_qkv * 2);
    void *buf = NULL;
    EX_CHECK(cu_bf16_scratch(ctx, 0, sz_qkv + (size_t)n_o * 2, &buf));
    char *qkv16 = buf, *o16 = qkv16 + sz_qkv;
    EX_CHECK(cu_to_narrow(ctx, qkv16, qkv, 1, n_qkv));
    EX_CHECK(cu_to_narrow(ctx, o16, out, 1, n_o));
    return dnn_bwd(ctx, dqkv, dout, o16, lse, qkv16, b, t, nh, hs, scale, 1);
}

#else /* built without cuDNN's headers */

ex_status cu_attention_dnn_open(cu_ctx *ctx, int deterministic, ex_err *err) {
    (void)ctx, (void)deterministic;
    EX_FAIL(err, EX_E_CONFIG,
            "backend cuda: [backend] attention = cudnn, but this build has no cuDNN support (cudnn_graph.h was not "
            "found when it was configured). Install cuDNN 9 and rebuild, or set attention = fused_bf16");
}

void cu_attention_dnn_close(cu_ctx *ctx) { (void)ctx; }

int cu_attention_dnn_fits(const cu_ctx *ctx, int64_t b, int64_t t, int64_t nh, int64_t hs) {
    (void)ctx, (void)b, (void)t, (void)nh, (void)hs;
    return 0;
}

ex_status cu_attention_dnn_fwd(cu_ctx *ctx, float *out, float *lse, const float *qkv, int64_t b, int64_t t,
                               int64_t nh, int64_t hs, float scale) {
    (void)ctx, (void)out, (void)lse, (void)qkv, (void)b, (void)t, (void)nh, (void)hs, (void)scale;
    return EX_E_INTERNAL;
}

ex_status cu_attention_dnn_bwd(cu_ctx *ctx, float *dqkv, const float *dout, const float *out, const float *lse,
                               const float *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    (void)ctx, (void)dqkv, (void)dout, (void)out, (void)lse, (void)qkv, (void)b, (void)t, (void)nh, (void)hs,
        (void)scale;
    return EX_E_INTERNAL;
}

ex_status cu_attention_dnn_fwd16(cu_ctx *ctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b, int64_t t,
                                 int64_t nh, int64_t hs, float scale) {
    (void)ctx, (void)out, (void)lse, (void)qkv, (void)b, (void)t, (void)nh, (void)hs, (void)scale;
    return EX_E_INTERNAL;
}

ex_status cu_attention_dnn_bwd16(cu_ctx *ctx, float *dqkv, const float *dout, const uint16_t *out, const float *lse,
                                 const uint16_t *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    (void)ctx, (void)dqkv, (void)dout, (void)out, (void)lse, (void)qkv, (void)b, (void)t, (void)nh, (void)hs,
        (void)scale;
    return EX_E_INTERNAL;
}

#endif
