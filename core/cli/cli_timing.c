/*
 * core/cli/cli_timing.c — the timing wrapper around a backend (cli_timing.h): one wrapped function per
 * vtable slot, each calling the real slot and charging its time (and, for GEMMs and attention, its
 * model FLOPs) to the timer.
 */
#include "cli_timing.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

const char *const cli_timing_class_names[BC_COUNT] = {"gemm", "attention", "norms", "elementwise", "optimiser",
                                                      "memory"};

double cli_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void timer_add(bench_timer *T, int cls, const char *slot, double t0) {
    if (T->sync_each) T->inner->vt.synchronize(T->inner->ctx); /* an asynchronous op ends when the device is done */
    const double dt = cli_now_s() - t0;
    T->t[T->phase][cls] += dt;
    int i = 0;
    while (i < T->nslots && strcmp(T->slot_name[i], slot) != 0) i++;
    if (i == T->nslots && i < BENCH_SLOTS) T->slot_name[T->nslots++] = slot, T->slot_s[i] = 0.0, T->slot_calls[i] = 0;
    if (i < T->nslots) T->slot_s[i] += dt, T->slot_calls[i]++;
}

/* A wrapped slot: call the real one, charge the time to class `cls`. */
#define WRAP(cls, slot, ...)                                                    \
    bench_timer *T_ = vctx;                                                     \
    const double t0_ = cli_now_s();                                                 \
    const ex_status s_ = T_->inner->vt.slot(T_->inner->ctx, __VA_ARGS__);       \
    timer_add(T_, (cls), #slot, t0_);                                           \
    return s_

static ex_status w_device_info(void *vctx, ex_device_info *out) {
    bench_timer *T = vctx;
    return T->inner->vt.device_info ? T->inner->vt.device_info(T->inner->ctx, out) : EX_E_UNSUPPORTED;
}
static int w_supports_op(void *vctx, ex_op op, ex_dtype dtype) {
    bench_timer *T = vctx;
    return T->inner->vt.supports_op(T->inner->ctx, op, dtype);
}
static ex_status w_alloc(void *vctx, size_t bytes, void **ptr, ex_err *err) { WRAP(BC_MEM, alloc, bytes, ptr, err); }
static void w_free(void *vctx, void *ptr) {
    bench_timer *T = vctx;
    T->inner->vt.free(T->inner->ctx, ptr);
}
static ex_status w_copy(void *vctx, void *dst, const void *src, size_t bytes, ex_copy_kind kind) {
    WRAP(BC_MEM, copy, dst, src, bytes, kind);
}
static ex_status w_fill(void *vctx, float *dst, float value, int64_t n) { WRAP(BC_ELEM, fill, dst, value, n); }
static ex_status w_synchronize(void *vctx) {
    bench_timer *T = vctx;
    const double t0 = cli_now_s();
    const ex_status s = T->inner->vt.synchronize(T->inner->ctx);
    timer_add(T, BC_MEM, "synchronize", t0);
    return s;
}
static ex_status w_gemm(void *vctx, const ex_gemm_desc *d) {
    bench_timer *T = vctx;
    if (d) T->flops[T->phase] += 2.0 * (double)d->m * (double)d->n * (double)d->k * (double)d->batch;
    const double t0 = cli_now_s();
    const ex_status s = T->inner->vt.gemm(T->inner->ctx, d);
    timer_add(T, BC_GEMM, "gemm", t0);
    return s;
}
static ex_status w_bias_add_fwd(void *vctx, float *out, const float *bias, int64_t n, int64_t c) {
    WRAP(BC_ELEM, bias_add_fwd, out, bias, n, c);
}
static ex_status w_bias_add_bwd(void *vctx, float *dbias, const float *dout, int64_t n, int64_t c) {
    WRAP(BC_ELEM, bias_add_bwd, dbias, dout, n, c);
}
static ex_status w_layernorm_fwd(void *vctx, float *out, float *mean, float *rstd, const float *inp, const float *w,
                                 const float *b, int64_t n, int64_t c, float eps) {
    WRAP(BC_NORM, layernorm_fwd, out, mean, rstd, inp, w, b, n, c, eps);
}
static ex_status w_layernorm_bwd(void *vctx, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                 const float *w, const float *mean, const float *rstd, int64_t n, int64_t c) {
    WRAP(BC_NORM, layernorm_bwd, dinp, dw, db, dout, inp, w, mean, rstd, n, c);
}
static ex_status w_gelu_fwd(void *vctx, float *out, const float *inp, int64_t n) { WRAP(BC_ELEM, gelu_fwd, out, inp, n); }
static ex_status w_gelu_bwd(void *vctx, float *dinp, const float *inp, const float *dout, int64_t n) {
    WRAP(BC_ELEM, gelu_bwd, dinp, inp, dout, n);
}
static ex_status w_gelu_bwd_inplace(void *vctx, float *d, const float *inp, int64_t n) {
    WRAP(BC_ELEM, gelu_bwd_inplace, d, inp, n);
}
static ex_status w_layernorm_fwd_bf16(void *vctx, uint16_t *out, float *mean, float *rstd, const float *inp,
                                      const float *w, const float *b, int64_t n, int64_t c, float eps) {
    WRAP(BC_NORM, layernorm_fwd_bf16, out, mean, rstd, inp, w, b, n, c, eps);
}
static ex_status w_gelu_fwd_bf16(void *vctx, uint16_t *out, const float *inp, int64_t n) {
    WRAP(BC_ELEM, gelu_fwd_bf16, out, inp, n);
}
static ex_status w_linear_bias_fwd(void *vctx, float *out, const void *inp, ex_dtype inp_dtype, const void *w,
                                   ex_dtype w_dtype, const float *bias, int64_t n, int64_t ic, int64_t oc) {
    bench_timer *T = vctx;
    const double t0 = cli_now_s();
    const ex_status s = T->inner->vt.linear_bias_fwd(T->inner->ctx, out, inp, inp_dtype, w, w_dtype, bias, n, ic, oc);
    if (s == EX_OK) { /* a GEMM like any other (EX_E_UNSUPPORTED: the fall-back's gemm counts it) */
        T->flops[T->phase] += 2.0 * (double)n * (double)ic * (double)oc;
        timer_add(T, BC_GEMM, "gemm", t0);
    }
    return s;
}
static ex_status w_exp_fwd(void *vctx, float *out, const float *inp, float scale, int64_t n) {
    WRAP(BC_ELEM, exp_fwd, out, inp, scale, n);
}
static ex_status w_row_sum(void *vctx, float *out, const float *inp, int64_t n, int64_t c) {
    WRAP(BC_ELEM, row_sum, out, inp, n, c);
}
static ex_status w_rng_dropout(void *vctx, float *out, int64_t n, float p, ex_rng *rng) {
    WRAP(BC_ELEM, rng_dropout, out, n, p, rng);
}
static ex_status w_silu_fwd(void *vctx, float *out, const float *inp, int64_t n) { WRAP(BC_ELEM, silu_fwd, out, inp, n); }
static ex_status w_silu_bwd(void *vctx, float *dinp, const float *inp, const float *dout, int64_t n) {
    WRAP(BC_ELEM, silu_bwd, dinp, inp, dout, n);
}
static ex_status w_softmax_fwd(void *vctx, float *out, const float *inp, int64_t n, int64_t c, float scale) {
    WRAP(BC_ATTN, softmax_fwd, out, inp, n, c, scale);
}
static ex_status w_softmax_bwd(void *vctx, float *dinp, const float *out, const float *dout, int64_t n, int64_t c,
                               float scale) {
    WRAP(BC_ATTN, softmax_bwd, dinp, out, dout, n, c, scale);
}
static ex_status w_attention_fwd(void *vctx, float *out, float *lse, const float *qkv, int64_t b, int64_t t,
                                 int64_t nh, int64_t hs, float scale) {
    bench_timer *T = vctx;
    T->flops[T->phase] += 4.0 * (double)b * (double)t * (double)t * (double)nh * (double)hs;
    const double t0 = cli_now_s();
    const ex_status s = T->inner->vt.attention_fwd(T->inner->ctx, out, lse, qkv, b, t, nh, hs, scale);
    timer_add(T, BC_ATTN, "attention_fwd", t0);
    return s;
}
static ex_status w_attention_bwd(void *vctx, float *dqkv, const float *dout, const float *out, const float *lse,
                                 const float *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    bench_timer *T = vctx;
    T->flops[T->phase] += 8.0 * (double)b * (double)t * (double)t * (double)nh * (double)hs;
    const double t0 = cli_now_s();
    const ex_status s = T->inner->vt.attention_bwd(T->inner->ctx, dqkv, dout, out, lse, qkv, b, t, nh, hs, scale);
    timer_add(T, BC_ATTN, "attention_bwd", t0);
    return s;
}
static ex_status w_to_bf16(void *vctx, uint16_t *out, const float *inp, int64_t n) {
    WRAP(BC_ELEM, to_bf16, out, inp, n);
}
static ex_status w_attention_fwd_bf16(void *vctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b,
                                      int64_t t, int64_t nh, int64_t hs, float scale) {
    bench_timer *T = vctx;
    T->flops[T->phase] += 4.0 * (double)b * (double)t * (double)t * (double)nh * (double)hs;
    const double t0 = cli_now_s();
    const ex_status s = T->inner->vt.attention_fwd_bf16(T->inner->ctx, out, lse, qkv, b, t, nh, hs, scale);
    timer_add(T, BC_ATTN, "attention_fwd_bf16", t0);
    return s;
}
static ex_status w_attention_bwd_bf16(void *vctx, float *dqkv, const float *dout, const uint16_t *out,
                                      const float *lse, const uint16_t *qkv, int64_t b, int64_t t, int64_t nh,
                                      int64_t hs, float scale) {
    bench_timer *T = vctx;
    T->flops[T->phase] += 8.0 * (double)b * (double)t * (double)t * (double)nh * (double)hs;
    const double t0 = cli_now_s();
    const ex_status s =
        T->inner->vt.attention_bwd_bf16(T->inner->ctx, dqkv, dout, out, lse, qkv, b, t, nh, hs, scale);
    timer_add(T, BC_ATTN, "attention_bwd_bf16", t0);
    return s;
}
static ex_status w_residual_fwd(void *vctx, float *out, const float *resid, const float *branch, const float *ls,
                                const float *drop, int64_t b, int64_t t, int64_t c) {
    WRAP(BC_ELEM, residual_fwd, out, resid, branch, ls, drop, b, t, c);
}
static ex_status w_residual_bwd(void *vctx, float *dbranch, float *dls, const float *dres, const float *branch,
                                const float *ls, const float *drop, int64_t b, int64_t t, int64_t c) {
    WRAP(BC_ELEM, residual_bwd, dbranch, dls, dres, branch, ls, drop, b, t, c);
}
static ex_status w_binary(void *vctx, ex_binary_op op, float *out, const float *a, const float *b, int64_t n) {
    WRAP(BC_ELEM, binary, op, out, a, b, n);
}
static ex_status w_axpby(void *vctx, float *y, float alpha, const float *x, float beta, int64_t n) {
    WRAP(BC_ELEM, axpby, y, alpha, x, beta, n);
}
static ex_status w_channel_scale_fwd(void *vctx, float *out, const float *inp, const float *gamma, int64_t n, int64_t c) {
    WRAP(BC_ELEM, channel_scale_fwd, out, inp, gamma, n, c);
}
static ex_status w_channel_scale_bwd(void *vctx, float *dinp, float *dgamma, const float *dout, const float *inp,
                                     const float *gamma, int64_t n, int64_t c) {
    WRAP(BC_ELEM, channel_scale_bwd, dinp, dgamma, dout, inp, gamma, n, c);
}
static ex_status w_row_scale_fwd(void *vctx, float *out, const float *inp, const float *s, int64_t n, int64_t c) {
    WRAP(BC_ELEM, row_scale_fwd, out, inp, s, n, c);
}
static ex_status w_row_scale_bwd(void *vctx, float *dinp, float *ds, const float *dout, const float *inp,
                                 const float *s, int64_t n, int64_t c) {
    WRAP(BC_ELEM, row_scale_bwd, dinp, ds, dout, inp, s, n, c);
}
static ex_status w_reduce(void *vctx, ex_reduce_op op, float *out, const float *inp, int64_t n) {
    bench_timer *T = vctx;
    const double t0 = cli_now_s();
    const ex_status s = T->inner->vt.reduce(T->inner->ctx, op, out, inp, n);
    timer_add(T, T->phase == BP_OPT ? BC_OPTIM : BC_ELEM, "reduce", t0); /* the optimiser's gradient norm */
    return s;
}
static ex_status w_gather_rows(void *vctx, float *out, const float *inp, const int32_t *idx, int64_t b, int64_t m,
                               int64_t t, int64_t c) {
    WRAP(BC_ELEM, gather_rows, out, inp, idx, b, m, t, c);
}
static ex_status w_scatter_add_rows(void *vctx, float *dinp, const float *dout, const int32_t *idx, int64_t b,
                                    int64_t m, int64_t t, int64_t c) {
    WRAP(BC_ELEM, scatter_add_rows, dinp, dout, idx, b, m, t, c);
}
static ex_status w_mask_rows_fwd(void *vctx, float *out, const float *inp, const uint8_t *mask, const float *token,
                                 int64_t n, int64_t c) {
    WRAP(BC_ELEM, mask_rows_fwd, out, inp, mask, token, n, c);
}
static ex_status w_mask_rows_bwd(void *vctx, float *dinp, float *dtoken, const float *dout, const uint8_t *mask,
                                 int64_t n, int64_t c) {
    WRAP(BC_ELEM, mask_rows_bwd, dinp, dtoken, dout, mask, n, c);
}
static ex_status w_xent_fwd(void *vctx, float *losses, float *probs, const float *logits, const int32_t *labels,
                            const float *targets, int64_t n, int64_t v) {
    WRAP(BC_ELEM, xent_fwd, losses, probs, logits, labels, targets, n, v);
}
static ex_status w_xent_bwd(void *vctx, float *dlogits, const float *dlosses, const float *probs, const int32_t *labels,
                            const float *targets, int64_t n, int64_t v) {
    WRAP(BC_ELEM, xent_bwd, dlogits, dlosses, probs, labels, targets, n, v);
}
static ex_status w_l2norm_fwd(void *vctx, float *out, float *norms, const float *inp, int64_t n, int64_t c, float eps) {
    WRAP(BC_NORM, l2norm_fwd, out, norms, inp, n, c, eps);
}
static ex_status w_l2norm_bwd(void *vctx, float *dinp, const float *dout, const float *inp, const float *norms,
                              int64_t n, int64_t c, float eps) {
    WRAP(BC_NORM, l2norm_bwd, dinp, dout, inp, norms, n, c, eps);
}
static ex_status w_adamw(void *vctx, float *p, const float *g, float *m, float *v, int64_t n, const ex_adamw_params *h) {
    WRAP(BC_OPTIM, adamw, p, g, m, v, n, h);
}
static ex_status w_ema(void *vctx, float *teacher, const float *student, float momentum, int64_t n) {
    WRAP(BC_OPTIM, ema, teacher, student, momentum, n);
}
static ex_status w_rng_uniform(void *vctx, float *out, int64_t n, float lo, float hi, ex_rng *rng) {
    WRAP(BC_ELEM, rng_uniform, out, n, lo, hi, rng);
}
static ex_status w_rng_normal(void *vctx, float *out, int64_t n, float mean, float std, ex_rng *rng) {
    WRAP(BC_ELEM, rng_normal, out, n, mean, std, rng);
}
static ex_status w_rng_permutation(void *vctx, int32_t *out, int64_t n, ex_rng *rng) {
    WRAP(BC_ELEM, rng_permutation, out, n, rng);
}
static ex_status w_patchify_fwd(void *vctx, float *out, const float *img, int64_t b, int64_t ch, int64_t h, int64_t w,
                                int64_t p, ex_patch_order order) {
    WRAP(BC_ELEM, patchify_fwd, out, img, b, ch, h, w, p, order);
}
static ex_status w_patchify_bwd(void *vctx, float *dimg, const float *dout, int64_t b, int64_t ch, int64_t h, int64_t w,
                                int64_t p, ex_patch_order order) {
    WRAP(BC_ELEM, patchify_bwd, dimg, dout, b, ch, h, w, p, order);
}
static ex_status w_copy2d(void *vctx, float *dst, int64_t dst_ld, const float *src, int64_t src_ld, int64_t rows,
                          int64_t cols) {
    WRAP(BC_ELEM, copy2d, dst, dst_ld, src, src_ld, rows, cols);
}

/* out: a backend whose every op runs `inner`'s and is timed into T. Not to be destroyed (no init/shutdown). */
void cli_timing_backend(ex_backend *out, ex_backend *inner, bench_timer *T) {
    memset(out, 0, sizeof *out);
    memset(T, 0, sizeof *T);
    T->inner = inner;
    snprintf(out->name, sizeof out->name, "%s", inner->name);
    out->ctx = T;
    ex_backend_vtable *v = &out->vt;
    v->device_info = w_device_info, v->supports_op = w_supports_op, v->alloc = w_alloc, v->free = w_free;
    v->copy = w_copy, v->fill = w_fill, v->synchronize = w_synchronize, v->gemm = w_gemm;
    v->bias_add_fwd = w_bias_add_fwd, v->bias_add_bwd = w_bias_add_bwd;
    v->layernorm_fwd = w_layernorm_fwd, v->layernorm_bwd = w_layernorm_bwd;
    v->gelu_fwd = w_gelu_fwd, v->gelu_bwd = w_gelu_bwd, v->silu_fwd = w_silu_fwd, v->silu_bwd = w_silu_bwd;
    v->softmax_fwd = w_softmax_fwd, v->softmax_bwd = w_softmax_bwd;
    v->attention_fwd = w_attention_fwd, v->attention_bwd = w_attention_bwd;
    v->binary = w_binary, v->axpby = w_axpby;
    v->channel_scale_fwd = w_channel_scale_fwd, v->channel_scale_bwd = w_channel_scale_bwd;
    v->row_scale_fwd = w_row_scale_fwd, v->row_scale_bwd = w_row_scale_bwd, v->reduce = w_reduce;
    v->gather_rows = w_gather_rows, v->scatter_add_rows = w_scatter_add_rows;
    v->mask_rows_fwd = w_mask_rows_fwd, v->mask_rows_bwd = w_mask_rows_bwd;
    v->xent_fwd = w_xent_fwd, v->xent_bwd = w_xent_bwd, v->l2norm_fwd = w_l2norm_fwd, v->l2norm_bwd = w_l2norm_bwd;
    v->adamw = w_adamw, v->ema = w_ema;
    v->rng_uniform = w_rng_uniform, v->rng_normal = w_rng_normal, v->rng_permutation = w_rng_permutation;
    v->patchify_fwd = w_patchify_fwd, v->patchify_bwd = w_patchify_bwd, v->copy2d = w_copy2d;
    v->rng_dropout = w_rng_dropout, v->gelu_bwd_inplace = w_gelu_bwd_inplace;
    /* optional slots: wrapped where the backend has them, NULL (not supported) where it has not */
    v->layernorm_fwd_bf16 = inner->vt.layernorm_fwd_bf16 ? w_layernorm_fwd_bf16 : NULL;
    v->gelu_fwd_bf16 = inner->vt.gelu_fwd_bf16 ? w_gelu_fwd_bf16 : NULL;
    v->linear_bias_fwd = inner->vt.linear_bias_fwd ? w_linear_bias_fwd : NULL;
    v->exp_fwd = inner->vt.exp_fwd ? w_exp_fwd : NULL;
    v->row_sum = inner->vt.row_sum ? w_row_sum : NULL;
    v->to_bf16 = inner->vt.to_bf16 ? w_to_bf16 : NULL;
    v->attention_fwd_bf16 = inner->vt.attention_fwd_bf16 ? w_attention_fwd_bf16 : NULL;
    v->attention_bwd_bf16 = inner->vt.attention_bwd_bf16 ? w_attention_bwd_bf16 : NULL;
    v->residual_fwd = inner->vt.residual_fwd ? w_residual_fwd : NULL;
    v->residual_bwd = inner->vt.residual_bwd ? w_residual_bwd : NULL;
    /* every mandatory slot but the lifecycle ones is wrapped: a new one that is not would be called as NULL */
    ex_backend_vtable chk = *v;
    chk.init = inner->vt.init, chk.shutdown = inner->vt.shutdown;
    char missing[512];
    if (ex_backend_vtable_missing(&chk, sizeof chk, missing, sizeof missing) > 0)
        fprintf(stderr, "explora: the timing wrapper lacks backend slots: %s\n", missing);
}

void cli_timer_reset(bench_timer *T) {
    memset(T->t, 0, sizeof T->t);
    memset(T->flops, 0, sizeof T->flops);
    T->nslots = 0;
    T->phase = BP_FWD;
}


void cli_print_slots(FILE *out, const char *const *names, const double *secs, const int64_t *calls, int n, int top) {
    int order[BENCH_SLOTS];
    if (n > BENCH_SLOTS) n = BENCH_SLOTS;
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 1; i < n; i++) /* insertion sort, slowest first: n is small */
        for (int j = i; j > 0 && secs[order[j - 1]] < secs[order[j]]; j--) {
            const int x = order[j];
            order[j] = order[j - 1], order[j - 1] = x;
        }
    for (int i = 0; i < n && i < top; i++)
        fprintf(out, "  %-20s %9.2f ms %7lld calls\n", names[order[i]], secs[order[i]] * 1e3, (long long)calls[order[i]]);
}
