/*
 * core/src/backend.c — the backend handle: creation from a plugin, the list of
 * mandatory vtable slots, op names, and checked helpers such as the fp32
 * linear layer built on the backend's GEMM (see explora/backend.h).
 */
#include "explora/backend.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "explora/plugin.h"

static const char *k_op_names[EX_OP_COUNT] = {
    [EX_OP_GEMM] = "gemm",
    [EX_OP_BIAS_ADD_FWD] = "bias_add_fwd",
    [EX_OP_BIAS_ADD_BWD] = "bias_add_bwd",
    [EX_OP_LAYERNORM_FWD] = "layernorm_fwd",
    [EX_OP_LAYERNORM_BWD] = "layernorm_bwd",
    [EX_OP_GELU_FWD] = "gelu_fwd",
    [EX_OP_GELU_BWD] = "gelu_bwd",
    [EX_OP_SILU_FWD] = "silu_fwd",
    [EX_OP_SILU_BWD] = "silu_bwd",
    [EX_OP_SOFTMAX_FWD] = "softmax_fwd",
    [EX_OP_SOFTMAX_BWD] = "softmax_bwd",
    [EX_OP_ATTENTION_FWD] = "attention_fwd",
    [EX_OP_ATTENTION_BWD] = "attention_bwd",
    [EX_OP_BINARY] = "binary",
    [EX_OP_AXPBY] = "axpby",
    [EX_OP_CHANNEL_SCALE_FWD] = "channel_scale_fwd",
    [EX_OP_CHANNEL_SCALE_BWD] = "channel_scale_bwd",
    [EX_OP_ROW_SCALE_FWD] = "row_scale_fwd",
    [EX_OP_ROW_SCALE_BWD] = "row_scale_bwd",
    [EX_OP_REDUCE] = "reduce",
    [EX_OP_GATHER_ROWS] = "gather_rows",
    [EX_OP_SCATTER_ADD_ROWS] = "scatter_add_rows",
    [EX_OP_MASK_ROWS_FWD] = "mask_rows_fwd",
    [EX_OP_MASK_ROWS_BWD] = "mask_rows_bwd",
    [EX_OP_XENT_FWD] = "xent_fwd",
    [EX_OP_XENT_BWD] = "xent_bwd",
    [EX_OP_L2NORM_FWD] = "l2norm_fwd",
    [EX_OP_L2NORM_BWD] = "l2norm_bwd",
    [EX_OP_ADAMW] = "adamw",
    [EX_OP_EMA] = "ema",
    [EX_OP_RNG_UNIFORM] = "rng_uniform",
    [EX_OP_RNG_NORMAL] = "rng_normal",
    [EX_OP_RNG_PERMUTATION] = "rng_permutation",
    [EX_OP_RNG_DROPOUT] = "rng_dropout",
    [EX_OP_PATCHIFY_FWD] = "patchify_fwd",
    [EX_OP_PATCHIFY_BWD] = "patchify_bwd",
    [EX_OP_COPY2D] = "copy2d",
};

const char *ex_op_name(ex_op op) { return (unsigned)op < EX_OP_COUNT ? k_op_names[op] : "?"; }

/* Mandatory slots, by name and offset. device_info is the only optional one in ABI 1.0. */
#define SLOT(f) {#f, offsetof(ex_backend_vtable, f)}
static const struct {
    const char *name;
    size_t offset;
} k_mandatory[] = {
    SLOT(init),          SLOT(shutdown),         SLOT(supports_op),       SLOT(alloc),
    SLOT(free),          SLOT(copy),             SLOT(fill),              SLOT(synchronize),
    SLOT(gemm),          SLOT(bias_add_fwd),     SLOT(bias_add_bwd),      SLOT(layernorm_fwd),
    SLOT(layernorm_bwd), SLOT(gelu_fwd),         SLOT(gelu_bwd),          SLOT(silu_fwd),
    SLOT(silu_bwd),      SLOT(softmax_fwd),      SLOT(softmax_bwd),       SLOT(attention_fwd),
    SLOT(attention_bwd), SLOT(binary),           SLOT(axpby),             SLOT(channel_scale_fwd),
    SLOT(channel_scale_bwd), SLOT(row_scale_fwd), SLOT(row_scale_bwd),    SLOT(reduce),
    SLOT(gather_rows),   SLOT(scatter_add_rows), SLOT(mask_rows_fwd),     SLOT(mask_rows_bwd),
    SLOT(xent_fwd),      SLOT(xent_bwd),         SLOT(l2norm_fwd),        SLOT(l2norm_bwd),
    SLOT(adamw),         SLOT(ema),              SLOT(rng_uniform),       SLOT(rng_normal),
    SLOT(rng_permutation), SLOT(rng_dropout),    SLOT(patchify_fwd),      SLOT(patchify_bwd),
    SLOT(copy2d),        SLOT(gelu_bwd_inplace),
};
#undef SLOT

int ex_backend_vtable_missing(const ex_backend_vtable *vt, size_t known_size, char *buf, size_t cap) {
    int missing = 0;
    size_t len = 0;
    if (cap) buf[0] = '\0';
    for (size_t i = 0; i < sizeof k_mandatory / sizeof k_mandatory[0]; i++) {
        void *slot = NULL;
        if (k_mandatory[i].offset + sizeof(void *) <= known_size)
            memcpy(&slot, (const char *)vt + k_mandatory[i].offset, sizeof slot);
        if (slot) continue;
        missing++;
        if (len < cap) len += (size_t)snprintf(buf + len, cap - len, "%s%s", missing > 1 ? ", " : "", k_mandatory[i].name);
    }
    return missing;
}

ex_status ex_backend_create(ex_backend *be, const struct ex_plugin *plugin, const ex_cfg_section *cfg, ex_err *err) {
    memset(be, 0, sizeof *be);
    EX_ENSURE(plugin && plugin->desc.kind == EX_PLUGIN_BACKEND, err, EX_E_INVALID,
              "plugin '%s' is not a backend", plugin ? plugin->desc.name : "(null)");
    snprintf(be->name, sizeof be->name, "%s", plugin->desc.name);
    be->vt = plugin->vtable_copy.backend;
    const int ncomm = !!be->vt.comm_unique_id + !!be->vt.comm_init + !!be->vt.comm_allreduce_sum_f32;
    if (ncomm != 0 && ncomm != 3) {
        memset(be, 0, sizeof *be);
        EX_FAIL(err, EX_E_INVALID,
                "backend '%s' (%s) fills %d of the 3 collective slots (comm_unique_id, comm_init, "
                "comm_allreduce_sum_f32): a backend offers all three or none",
                plugin->desc.name, plugin->path, ncomm);
    }
    if (!be->vt.exp_fwd != !be->vt.row_sum) {
        memset(be, 0, sizeof *be);
        EX_FAIL(err, EX_E_INVALID,
                "backend '%s' (%s) fills one of the two slots exp_fwd and row_sum: a backend offers both or none",
                plugin->desc.name, plugin->path);
    }
    const int nbf16 = !!be->vt.to_bf16 + !!be->vt.attention_fwd_bf16 + !!be->vt.attention_bwd_bf16;
    if (nbf16 != 0 && nbf16 != 3) {
        memset(be, 0, sizeof *be);
        EX_FAIL(err, EX_E_INVALID,
                "backend '%s' (%s) fills %d of the 3 slots for attention in bf16 (to_bf16, attention_fwd_bf16, "
                "attention_bwd_bf16): a backend offers all three or none",
                plugin->desc.name, plugin->path, nbf16);
    }
    if (!be->vt.residual_fwd != !be->vt.residual_bwd) {
        memset(be, 0, sizeof *be);
        EX_FAIL(err, EX_E_INVALID,
                "backend '%s' (%s) fills one of the two slots residual_fwd and residual_bwd: a backend offers both or "
                "none",
                plugin->desc.name, plugin->path);
    }
    ex_status st = be->vt.init(cfg, &be->ctx, err);
    if (st != EX_OK) {
        ex_err_prefix(err, "backend '%s' (%s): ", be->name, plugin->path);
        memset(be, 0, sizeof *be);
        return st;
    }
    return EX_OK;
}

void ex_backend_destroy(ex_backend *be) {
    if (be->vt.shutdown && be->ctx) be->vt.shutdown(be->ctx);
    memset(be, 0, sizeof *be);
}

ex_status ex_be_alloc(ex_backend *be, size_t bytes, void **ptr, ex_err *err) {
    ex_status st = be->vt.alloc(be->ctx, bytes, ptr, err);
    if (st != EX_OK && err && !err->msg[0])
        ex_err_set(err, st, __FILE__, __LINE__, "backend '%s' could not allocate %zu bytes", be->name, bytes);
    return st;
}

void ex_be_free(ex_backend *be, void *ptr) {
    if (ptr) be->vt.free(be->ctx, ptr);
}

ex_status ex_be_upload(ex_backend *be, void *dst, const void *host, size_t bytes, ex_err *err) {
    ex_status st = be->vt.copy(be->ctx, dst, host, bytes, EX_COPY_H2D);
    EX_ENSURE(st == EX_OK, err, st, "backend '%s': host-to-device copy of %zu bytes failed", be->name, bytes);
    return EX_OK;
}

ex_status ex_be_download(ex_backend *be, void *host, const void *src, size_t bytes, ex_err *err) {
    ex_status st = be->vt.copy(be->ctx, host, src, bytes, EX_COPY_D2H);
    EX_ENSURE(st == EX_OK, err, st, "backend '%s': device-to-host copy of %zu bytes failed", be->name, bytes);
    return EX_OK;
}

/* Host staging for the converting copies: bounded chunks, so a large tensor needs no second full copy. */
#define EX_STAGE_ELEMS ((int64_t)1 << 20)

ex_status ex_be_upload_as(ex_backend *be, void *dst, ex_dtype dtype, int64_t offset, const float *host, int64_t n,
                          ex_err *err) {
    EX_ENSURE(dst && (host || n == 0) && offset >= 0 && n >= 0, err, EX_E_INVALID, "upload: bad arguments");
    if (dtype == EX_F32) return ex_be_upload(be, (float *)dst + offset, host, sizeof(float) * (size_t)n, err);
    EX_ENSURE(dtype == EX_BF16 || dtype == EX_F16, err, EX_E_UNSUPPORTED, "upload: fp32 values cannot be stored as %s",
              ex_dtype_name(dtype));
    uint16_t *stage = malloc(sizeof(uint16_t) * (size_t)(n < EX_STAGE_ELEMS ? (n ? n : 1) : EX_STAGE_ELEMS));
    EX_ENSURE(stage, err, EX_E_NOMEM, "upload: out of memory converting %lld values to %s", (long long)n,
              ex_dtype_name(dtype));
    ex_status st = EX_OK;
    for (int64_t i0 = 0; i0 < n && st == EX_OK; i0 += EX_STAGE_ELEMS) {
        const int64_t m = n - i0 < EX_STAGE_ELEMS ? n - i0 : EX_STAGE_ELEMS;
        for (int64_t i = 0; i < m; i++)
            stage[i] = dtype == EX_BF16 ? ex_f32_to_bf16(host[i0 + i]) : ex_f32_to_f16(host[i0 + i]);
        st = ex_be_upload(be, (uint16_t *)dst + offset + i0, stage, sizeof(uint16_t) * (size_t)m, err);
    }
    free(stage);
    return st;
}

ex_status ex_be_download_as(ex_backend *be, float *host, const void *src, ex_dtype dtype, int64_t offset, int64_t n,
                            ex_err *err) {
    EX_ENSURE(src && (host || n == 0) && offset >= 0 && n >= 0, err, EX_E_INVALID, "download: bad arguments");
    if (dtype == EX_F32) return ex_be_download(be, host, (const float *)src + offset, sizeof(float) * (size_t)n, err);
    EX_ENSURE(dtype == EX_BF16 || dtype == EX_F16, err, EX_E_UNSUPPORTED, "download: %s values cannot be read as fp32",
              ex_dtype_name(dtype));
    uint16_t *stage = malloc(sizeof(uint16_t) * (size_t)(n < EX_STAGE_ELEMS ? (n ? n : 1) : EX_STAGE_ELEMS));
    EX_ENSURE(stage, err, EX_E_NOMEM, "download: out of memory converting %lld %s values", (long long)n,
              ex_dtype_name(dtype));
    ex_status st = EX_OK;
    for (int64_t i0 = 0; i0 < n && st == EX_OK; i0 += EX_STAGE_ELEMS) {
        const int64_t m = n - i0 < EX_STAGE_ELEMS ? n - i0 : EX_STAGE_ELEMS;
        st = ex_be_download(be, stage, (const uint16_t *)src + offset + i0, sizeof(uint16_t) * (size_t)m, err);
        for (int64_t i = 0; i < m && st == EX_OK; i++)
            host[i0 + i] = dtype == EX_BF16 ? ex_bf16_to_f32(stage[i]) : ex_f16_to_f32(stage[i]);
    }
    free(stage);
    return st;
}

int64_t ex_gemm_span(const ex_gemm_desc *d, int which) {
    if (d->k == 0 || d->alpha == 0.0f || d->m == 0 || d->n == 0) return 0;
    if (which == 0) {
        const int64_t rows = d->trans_a ? d->k : d->m, cols = d->trans_a ? d->m : d->k;
        return (d->batch - 1) * d->stride_a + (rows - 1) * d->lda + cols;
    }
    const int64_t rows = d->trans_b ? d->n : d->k, cols = d->trans_b ? d->k : d->n;
    return (d->batch - 1) * d->stride_b + (rows - 1) * d->ldb + cols;
}

static const void *offset_ptr(const void *p, ex_dtype t, int64_t elems) {
    return (const char *)p + (size_t)elems * ex_dtype_size(t);
}

int ex_gemm_halve(const ex_gemm_desc *d, int which, ex_gemm_desc out[2]) {
    out[0] = out[1] = *d;
    ex_gemm_desc *lo = &out[0], *hi = &out[1];
    if (d->batch > 1) { /* whole batch items */
        const int64_t h = d->batch / 2;
        lo->batch = h, hi->batch = d->batch - h;
        hi->a = offset_ptr(d->a, d->a_dtype, h * d->stride_a);
        hi->b = offset_ptr(d->b, d->b_dtype, h * d->stride_b);
        hi->c = d->c + h * d->stride_c;
        return 1;
    }
    /* which dimension holds the operand's stored rows: C's rows (A), C's columns (B^T), or k */
    const int by_m = which == 0 && !d->trans_a, by_n = which == 1 && d->trans_b;
    const int64_t size = by_m ? d->m : by_n ? d->n : d->k;
    if (size < 2) return 0;
    const int64_t h = size / 2;
    if (by_m) {
        lo->m = h, hi->m = d->m - h;
        hi->a = offset_ptr(d->a, d->a_dtype, h * d->lda);
        hi->c = d->c + h * d->ldc;
    } else if (by_n) {
        lo->n = h, hi->n = d->n - h;
        hi->b = offset_ptr(d->b, d->b_dtype, h * d->ldb);
        hi->c = d->c + h;
    } else { /* k: A's columns (rows when transposed), B's rows (columns when transposed); sum the halves */
        lo->k = h, hi->k = d->k - h;
        hi->a = offset_ptr(d->a, d->a_dtype, d->trans_a ? h * d->lda : h);
        hi->b = offset_ptr(d->b, d->b_dtype, d->trans_b ? h : h * d->ldb);
        hi->beta = 1.0f;
    }
    return 1;
}

ex_status ex_be_gemm(ex_backend *be, const ex_gemm_desc *d, ex_err *err) {
    EX_ENSURE(d->m >= 0 && d->n >= 0 && d->k >= 0 && d->batch >= 1, err, EX_E_SHAPE,
              "gemm: bad sizes m=%lld n=%lld k=%lld batch=%lld", (long long)d->m, (long long)d->n,
              (long long)d->k, (long long)d->batch);
    EX_ENSURE(be->vt.supports_op(be->ctx, EX_OP_GEMM, d->a_dtype) && be->vt.supports_op(be->ctx, EX_OP_GEMM, d->b_dtype),
              err, EX_E_UNSUPPORTED, "backend '%s' has no GEMM for %s x %s inputs", be->name,
              ex_dtype_name(d->a_dtype), ex_dtype_name(d->b_dtype));
    ex_status st = be->vt.gemm(be->ctx, d);
    EX_ENSURE(st == EX_OK, err, st, "backend '%s': gemm (m=%lld n=%lld k=%lld batch=%lld) failed", be->name,
              (long long)d->m, (long long)d->n, (long long)d->k, (long long)d->batch);
    return EX_OK;
}

ex_status ex_be_linear_fwd(ex_backend *be, float *out, const void *inp, ex_dtype inp_dtype, const void *w,
                           ex_dtype w_dtype, const float *bias, int64_t n, int64_t ic, int64_t oc, ex_err *err) {
    /* out (n, oc) = inp (n, ic) @ w^T, w stored (oc, ic) as in torch.nn.Linear */
    if (bias && be->vt.linear_bias_fwd) { /* the bias in the GEMM's epilogue, where the backend fuses it */
        ex_status st = be->vt.linear_bias_fwd(be->ctx, out, inp, inp_dtype, w, w_dtype, bias, n, ic, oc);
        if (st == EX_OK) return EX_OK;
        EX_ENSURE(st == EX_E_UNSUPPORTED, err, st, "backend '%s': linear_bias_fwd failed (%lld x %lld -> %lld)",
                  be->name, (long long)n, (long long)ic, (long long)oc);
    }
    ex_gemm_desc d = {0};
    d.trans_a = 0;
    d.trans_b = 1;
    d.m = n;
    d.n = oc;
    d.k = ic;
    d.alpha = 1.0f;
    d.beta = 0.0f;
    d.a = inp;
    d.a_dtype = inp_dtype;
    d.lda = ic;
    d.b = w;
    d.b_dtype = w_dtype;
    d.ldb = ic;
    d.c = out;
    d.ldc = oc;
    d.batch = 1;
    EX_CHECK(ex_be_gemm(be, &d, err));
    if (bias) {
        ex_status st = be->vt.bias_add_fwd(be->ctx, out, bias, n, oc);
        EX_ENSURE(st == EX_OK, err, st, "backend '%s': bias_add_fwd failed", be->name);
    }
    return EX_OK;
}

/* ex_be_linear_bwd with dinp = dinp_beta * dinp + dout @ w: 1 accumulates, 0 writes (dinp not read). */
static ex_status linear_bwd(ex_backend *be, float *dinp, float dinp_beta, float *dw, float *dbias, const float *dout,
                            const void *inp, ex_dtype inp_dtype, const void *w, ex_dtype w_dtype, int64_t n, int64_t ic,
                            int64_t oc, ex_err *err) {
    EX_ENSURE(!dw || w_dtype == EX_F32, err, EX_E_INVALID,
              "linear backward: a weight gradient was asked of a %s weight (only frozen weights are kept in %s)",
              ex_dtype_name(w_dtype), ex_dtype_name(w_dtype));
    if (dinp) { /* dinp (n, ic) = dinp_beta * dinp + dout (n, oc) @ w (oc, ic) */
        ex_gemm_desc d = {0};
        d.m = n;
        d.n = ic;
        d.k = oc;
        d.alpha = 1.0f;
        d.beta = dinp_beta;
        d.a = dout;
        d.a_dtype = EX_F32;
        d.lda = oc;
        d.b = w;
        d.b_dtype = w_dtype;
        d.ldb = ic;
        d.c = dinp;
        d.ldc = ic;
        d.batch = 1;
        EX_CHECK(ex_be_gemm(be, &d, err));
    }
    if (dw) { /* dw (oc, ic) += dout^T (oc, n) @ inp (n, ic) */
        ex_gemm_desc d = {0};
        d.trans_a = 1;
        d.m = oc;
        d.n = ic;
        d.k = n;
        d.alpha = 1.0f;
        d.beta = 1.0f;
        d.a = dout;
        d.a_dtype = EX_F32;
        d.lda = oc;
        d.b = inp;
        d.b_dtype = inp_dtype;
        d.ldb = ic;
        d.c = dw;
        d.ldc = ic;
        d.batch = 1;
        EX_CHECK(ex_be_gemm(be, &d, err));
    }
    if (dbias) {
        ex_status st = be->vt.bias_add_bwd(be->ctx, dbias, dout, n, oc);
        EX_ENSURE(st == EX_OK, err, st, "backend '%s': bias_add_bwd failed", be->name);
    }
    return EX_OK;
}

ex_status ex_be_linear_bwd(ex_backend *be, float *dinp, float *dw, float *dbias, const float *dout, const void *inp,
                           ex_dtype inp_dtype, const void *w, ex_dtype w_dtype, int64_t n, int64_t ic, int64_t oc,
                           ex_err *err) {
    return linear_bwd(be, dinp, 1.0f, dw, dbias, dout, inp, inp_dtype, w, w_dtype, n, ic, oc, err);
}

ex_status ex_be_linear_bwd_write(ex_backend *be, float *dinp, float *dw, float *dbias, const float *dout,
                                 const void *inp, ex_dtype inp_dtype, const void *w, ex_dtype w_dtype, int64_t n,
                                 int64_t ic, int64_t oc, ex_err *err) {
    return linear_bwd(be, dinp, 0.0f, dw, dbias, dout, inp, inp_dtype, w, w_dtype, n, ic, oc, err);
}
