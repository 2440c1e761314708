/*
 * backends/cpu/cpu_elementwise.c — elementwise ops, broadcasts and reductions:
 * bias add, binary, axpby, LayerScale (channel scale), per-row scale, reduce.
 *
 * Column sums (dbias, dgamma) are split over fixed blocks of CPU_COL_BLOCK
 * columns, each summed over all rows in row order by one thread, in double;
 * row sums are done by one thread per row. reduce uses fixed chunks whose
 * boundaries depend only on n, combined in chunk order.
 */
#include <math.h>

#include "cpu_internal.h"

#define PAR(work) num_threads(ctx->threads) schedule(static) if ((work) > CPU_PAR_MIN)

/* ------------------------------------------------------------------------------
 * Bias
 * ------------------------------------------------------------------------------ */

ex_status cpu_bias_add_fwd(void *vctx, float *out /* (n, c) */, const float *bias /* (c) */, int64_t n,
                           int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 0, "cpu: bias_add_fwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CPU_ARG(out && bias, "cpu: bias_add_fwd: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        float *row = out + i * c;
        for (int64_t j = 0; j < c; j++) row[j] += bias[j];
    }
    return EX_OK;
}

ex_status cpu_bias_add_bwd(void *vctx, float *dbias /* (c) */, const float *dout /* (n, c) */, int64_t n,
                           int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 0, "cpu: bias_add_bwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CPU_ARG(dbias && dout, "cpu: bias_add_bwd: NULL pointer");
    int64_t nblk = (c + CPU_COL_BLOCK - 1) / CPU_COL_BLOCK;
#pragma omp parallel for PAR(n * c * (nblk > 1))
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t j0 = blk * CPU_COL_BLOCK, w = c - j0 < CPU_COL_BLOCK ? c - j0 : CPU_COL_BLOCK;
        double acc[CPU_COL_BLOCK] = {0};
        for (int64_t i = 0; i < n; i++) {
            const float *row = dout + i * c + j0;
            for (int64_t j = 0; j < w; j++) acc[j] += row[j];
        }
        for (int64_t j = 0; j < w; j++) dbias[j0 + j] = (float)((double)dbias[j0 + j] + acc[j]);
    }
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * Binary and axpby
 * ------------------------------------------------------------------------------ */

ex_status cpu_binary(void *vctx, ex_binary_op op, float *out /* (n) */, const float *a /* (n) */,
                     const float *b /* (n) */, int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0, "cpu: binary: negative size");
    CPU_ARG(op == EX_BIN_ADD || op == EX_BIN_SUB || op == EX_BIN_MUL || op == EX_BIN_DIV,
            "cpu: binary: unknown op %d", (int)op);
    if (n == 0) return EX_OK;
    CPU_ARG(out && a && b, "cpu: binary: NULL pointer");
    switch (op) {
    case EX_BIN_ADD:
#pragma omp parallel for PAR(n)
        for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
        break;
    case EX_BIN_SUB:
#pragma omp parallel for PAR(n)
        for (int64_t i = 0; i < n; i++) out[i] = a[i] - b[i];
        break;
    case EX_BIN_MUL:
#pragma omp parallel for PAR(n)
        for (int64_t i = 0; i < n; i++) out[i] = a[i] * b[i];
        break;
    case EX_BIN_DIV:
#pragma omp parallel for PAR(n)
        for (int64_t i = 0; i < n; i++) out[i] = a[i] / b[i];
        break;
    }
    return EX_OK;
}

ex_status cpu_axpby(void *vctx, float *y /* (n) */, float alpha, const float *x /* (n) */, float beta,
                    int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0, "cpu: axpby: negative size");
    if (n == 0) return EX_OK;
    CPU_ARG(y && x, "cpu: axpby: NULL pointer");
    if (beta == 0.0f) {
#pragma omp parallel for PAR(n)
        for (int64_t i = 0; i < n; i++) y[i] = alpha * x[i];
    } else if (beta == 1.0f) {
#pragma omp parallel for PAR(n)
        for (int64_t i = 0; i < n; i++) y[i] = alpha * x[i] + y[i];
    } else {
#pragma omp parallel for PAR(n)
        for (int64_t i = 0; i < n; i++) y[i] = alpha * x[i] + beta * y[i];
    }
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * LayerScale (per channel) and per-row scale
 * ------------------------------------------------------------------------------ */

/* dgamma (c) += sum over rows i of (g_i * s[i / t]) * x_i (s NULL: g_i * x_i), in double, by fixed blocks of
 * CPU_COL_BLOCK columns, rows in order: LayerScale's gradient, with drop path's per-image scale in the one-pass
 * residual backward. */
static void colsum_prod(const cpu_ctx *ctx, float *dgamma, const float *g, const float *s, int64_t t, const float *x,
                        int64_t n, int64_t c) {
    int64_t nblk = (c + CPU_COL_BLOCK - 1) / CPU_COL_BLOCK;
#pragma omp parallel for PAR(n * c * (nblk > 1))
    for (int64_t blk = 0; blk < nblk; blk++) {
        int64_t j0 = blk * CPU_COL_BLOCK, w = c - j0 < CPU_COL_BLOCK ? c - j0 : CPU_COL_BLOCK;
        double acc[CPU_COL_BLOCK] = {0};
        for (int64_t i = 0; i < n; i++) {
            const float *gi = g + i * c + j0, *xi = x + i * c + j0;
            if (s) {
                const float si = s[i / t];
                for (int64_t j = 0; j < w; j++) acc[j] += (double)(gi[j] * si) * (double)xi[j];
            } else {
                for (int64_t j = 0; j < w; j++) acc[j] += (double)gi[j] * (double)xi[j];
            }
        }
        for (int64_t j = 0; j < w; j++) dgamma[j0 + j] = (float)((double)dgamma[j0 + j] + acc[j]);
    }
}

ex_status cpu_channel_scale_fwd(void *vctx, float *out /* (n, c) */, const float *inp /* (n, c) */,
                                const float *gamma /* (c) */, int64_t n, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 0, "cpu: channel_scale_fwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CPU_ARG(out && inp && gamma, "cpu: channel_scale_fwd: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *x = inp + i * c;
        float *o = out + i * c;
        for (int64_t j = 0; j < c; j++) o[j] = x[j] * gamma[j];
    }
    return EX_OK;
}

ex_status cpu_channel_scale_bwd(void *vctx, float *dinp /* (n, c) */, float *dgamma /* (c) */,
                                const float *dout /* (n, c) */, const float *inp /* (n, c) */,
                                const float *gamma /* (c) */, int64_t n, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 0, "cpu: channel_scale_bwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CPU_ARG(dout, "cpu: channel_scale_bwd: NULL dout");
    if (dinp) {
        CPU_ARG(gamma, "cpu: channel_scale_bwd: dinp needs gamma");
#pragma omp parallel for PAR(n * c)
        for (int64_t i = 0; i < n; i++) {
            const float *g = dout + i * c;
            float *d = dinp + i * c;
            for (int64_t j = 0; j < c; j++) d[j] += g[j] * gamma[j];
        }
    }
    if (dgamma) {
        CPU_ARG(inp, "cpu: channel_scale_bwd: dgamma needs inp");
        colsum_prod(ctx, dgamma, dout, NULL, 1, inp, n, c);
    }
    return EX_OK;
}

ex_status cpu_row_scale_fwd(void *vctx, float *out /* (n, c) */, const float *inp /* (n, c) */,
                            const float *s /* (n) */, int64_t n, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 0, "cpu: row_scale_fwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CPU_ARG(out && inp && s, "cpu: row_scale_fwd: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *x = inp + i * c;
        float *o = out + i * c, si = s[i];
        for (int64_t j = 0; j < c; j++) o[j] = x[j] * si;
    }
    return EX_OK;
}

ex_status cpu_row_scale_bwd(void *vctx, float *dinp /* (n, c) */, float *ds /* (n) */,
                            const float *dout /* (n, c) */, const float *inp /* (n, c) */,
                            const float *s /* (n) */, int64_t n, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 0, "cpu: row_scale_bwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CPU_ARG(dout, "cpu: row_scale_bwd: NULL dout");
    CPU_ARG(!dinp || s, "cpu: row_scale_bwd: dinp needs s");
    CPU_ARG(!ds || inp, "cpu: row_scale_bwd: ds needs inp");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *g = dout + i * c;
        if (dinp) {
            float *d = dinp + i * c, si = s[i];
            for (int64_t j = 0; j < c; j++) d[j] += g[j] * si;
        }
        if (ds) {
            const float *x = inp + i * c;
            double acc = 0.0;
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < c; j++) acc += (double)g[j] * (double)x[j];
            ds[i] = (float)((double)ds[i] + acc);
        }
    }
    return EX_OK;
}

ex_status cpu_exp_fwd(void *vctx, float *out /* (n) */, const float *inp /* (n) */, float scale, int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0, "cpu: exp_fwd: negative size");
    if (n == 0) return EX_OK;
    CPU_ARG(out && inp, "cpu: exp_fwd: NULL pointer");
#pragma omp parallel for PAR(n)
    for (int64_t i = 0; i < n; i++) out[i] = expf(scale * inp[i]);
    return EX_OK;
}

ex_status cpu_row_sum(void *vctx, float *out /* (n) */, const float *inp /* (n, c) */, int64_t n, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 0, "cpu: row_sum: negative size");
    if (n == 0) return EX_OK;
    CPU_ARG(out && (inp || c == 0), "cpu: row_sum: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *x = inp + i * c;
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < c; j++) acc += (double)x[j];
        out[i] = (float)acc;
    }
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * Reduce
 * ------------------------------------------------------------------------------ */

#define RED_MAX_CHUNKS 256
#define RED_MIN_CHUNK ((int64_t)8192)

ex_status cpu_reduce(void *vctx, ex_reduce_op op, float *out /* (1) */, const float *inp /* (n) */,
                     int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && out, "cpu: reduce: bad arguments");
    CPU_ARG(op == EX_RED_SUM || op == EX_RED_MEAN || op == EX_RED_SUMSQ || op == EX_RED_MAX_ABS,
            "cpu: reduce: unknown op %d", (int)op);
    if (n == 0) {
        *out = op == EX_RED_MEAN ? NAN : 0.0f;
        return EX_OK;
    }
    CPU_ARG(inp, "cpu: reduce: NULL input");
    /* chunk boundaries depend on n only */
    int64_t nch = (n + RED_MIN_CHUNK - 1) / RED_MIN_CHUNK;
    if (nch > RED_MAX_CHUNKS) nch = RED_MAX_CHUNKS;
    int64_t chunk = (n + nch - 1) / nch;
    double part[RED_MAX_CHUNKS];
#pragma omp parallel for PAR(n)
    for (int64_t ch = 0; ch < nch; ch++) {
        int64_t i0 = ch * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
        double acc = 0.0;
        if (op == EX_RED_MAX_ABS) {
            float mx = 0.0f;
            for (int64_t i = i0; i < i1; i++) {
                float a = fabsf(inp[i]);
                if (a > mx || a != a) mx = a; /* NaN propagates: nothing compares greater than it */
                if (mx != mx) break;
            }
            acc = mx;
        } else if (op == EX_RED_SUMSQ) {
#pragma omp simd reduction(+ : acc)
            for (int64_t i = i0; i < i1; i++) acc += (double)inp[i] * (double)inp[i];
        } else {
#pragma omp simd reduction(+ : acc)
            for (int64_t i = i0; i < i1; i++) acc += (double)inp[i];
        }
        part[ch] = i1 > i0 ? acc : 0.0;
    }
    double r = 0.0;
    if (op == EX_RED_MAX_ABS) {
        for (int64_t ch = 0; ch < nch; ch++)
            if (part[ch] > r || part[ch] != part[ch]) {
                r = part[ch];
                if (r != r) break;
            }
    } else {
        for (int64_t ch = 0; ch < nch; ch++) r += part[ch];
        if (op == EX_RED_MEAN) r /= (double)n;
    }
    *out = (float)r;
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * The scaled residual add (LayerScale and drop path), in one pass
 * ------------------------------------------------------------------------------ */

/* out = resid + (branch * ls) * drop[image]: the products in the order and rounding of channel_scale_fwd,
 * row_scale_fwd and binary add, so the result is theirs bit for bit. */
ex_status cpu_residual_fwd(void *vctx, float *out /* (b, t, c) */, const float *resid /* (b, t, c) */,
                           const float *branch /* (b, t, c) */, const float *ls /* (c) or NULL */,
                           const float *drop /* (b) or NULL */, int64_t b, int64_t t, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(b >= 0 && t >= 0 && c >= 0, "cpu: residual_fwd: negative size");
    const int64_t n = b * t;
    if (n == 0 || c == 0) return EX_OK;
    CPU_ARG(out && resid && branch, "cpu: residual_fwd: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *x = branch + i * c, *r = resid + i * c;
        float *o = out + i * c;
        const float s = drop ? drop[i / t] : 1.0f;
        for (int64_t j = 0; j < c; j++) {
            float v = x[j];
            if (ls) v = v * ls[j];
            if (drop) v = v * s;
            o[j] = r[j] + v;
        }
    }
    return EX_OK;
}

/* g = dres * drop[image]; dls += colsum(g * branch) in the order of channel_scale_bwd; dbranch = g * ls. */
ex_status cpu_residual_bwd(void *vctx, float *dbranch /* (b, t, c) */, float *dls /* (c) or NULL */,
                           const float *dres /* (b, t, c) */, const float *branch /* (b, t, c) */,
                           const float *ls /* (c) or NULL */, const float *drop /* (b) or NULL */, int64_t b,
                           int64_t t, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(b >= 0 && t >= 0 && c >= 0, "cpu: residual_bwd: negative size");
    const int64_t n = b * t;
    if (n == 0 || c == 0) return EX_OK;
    CPU_ARG(dbranch && dres, "cpu: residual_bwd: NULL pointer");
    CPU_ARG(!dls || branch, "cpu: residual_bwd: dls needs branch");
    if (dls) colsum_prod(ctx, dls, dres, drop, t, branch, n, c); /* before dbranch, which may alias dres */
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *g = dres + i * c;
        float *d = dbranch + i * c;
        const float s = drop ? drop[i / t] : 1.0f;
        for (int64_t j = 0; j < c; j++) {
            float v = g[j];
            if (drop) v = v * s;
            if (ls) v = v * ls[j];
            d[j] = v;
        }
    }
    return EX_OK;
}
