/*
 * backends/cpu/cpu_norm.c — LayerNorm and row softmax, forward and backward.
 *
 * Row statistics are computed by one thread per row in double (two passes for
 * the variance, as torch: population variance, eps inside the sqrt). The
 * LayerNorm weight/bias gradients are column sums over fixed column blocks,
 * each summed over all rows in row order by one thread.
 */
#include <math.h>

#include "cpu_internal.h"

#define PAR(work) num_threads(ctx->threads) schedule(static) if ((work) > CPU_PAR_MIN)

/* ------------------------------------------------------------------------------
 * LayerNorm
 * ------------------------------------------------------------------------------ */

/* *m = mean of x (c), *r = 1 / sqrt(population variance + eps): in double, two passes, as torch. */
static inline void row_stats(const float *x, int64_t c, float eps, float *m, float *r) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < c; j++) s += x[j];
    double mu = s / (double)c, v = 0.0;
#pragma omp simd reduction(+ : v)
    for (int64_t j = 0; j < c; j++) v += ((double)x[j] - mu) * ((double)x[j] - mu);
    *m = (float)mu;
    *r = (float)(1.0 / sqrt(v / (double)c + (double)eps));
}

ex_status cpu_layernorm_fwd(void *vctx, float *out /* (n, c) */, float *mean /* (n) or NULL */,
                            float *rstd /* (n) or NULL */, const float *inp /* (n, c) */,
                            const float *w /* (c) or NULL */, const float *b /* (c) or NULL */, int64_t n,
                            int64_t c, float eps) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 1 && eps >= 0.0f, "cpu: layernorm_fwd: bad sizes or eps");
    if (n == 0) return EX_OK;
    CPU_ARG(out && inp, "cpu: layernorm_fwd: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *x = inp + i * c;
        float *o = out + i * c;
        float m, r;
        row_stats(x, c, eps, &m, &r);
        if (mean) mean[i] = m;
        if (rstd) rstd[i] = r;
        if (w && b)
            for (int64_t j = 0; j < c; j++) o[j] = (x[j] - m) * r * w[j] + b[j];
        else if (w)
            for (int64_t j = 0; j < c; j++) o[j] = (x[j] - m) * r * w[j];
        else if (b)
            for (int64_t j = 0; j < c; j++) o[j] = (x[j] - m) * r + b[j];
        else
            for (int64_t j = 0; j < c; j++) o[j] = (x[j] - m) * r;
    }
    return EX_OK;
}

/* As cpu_layernorm_fwd, the output rounded to bf16 (nearest even) as it is written: the same
 * statistics and the same per-element expressions, so each value is exactly the fp32 slot's, rounded. */
ex_status cpu_layernorm_fwd_bf16(void *vctx, uint16_t *out /* (n, c) bf16 */, float *mean /* (n) or NULL */,
                                 float *rstd /* (n) or NULL */, const float *inp /* (n, c) */,
                                 const float *w /* (c) or NULL */, const float *b /* (c) or NULL */, int64_t n,
                                 int64_t c, float eps) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 1 && eps >= 0.0f, "cpu: layernorm_fwd_bf16: bad sizes or eps");
    if (n == 0) return EX_OK;
    CPU_ARG(out && inp, "cpu: layernorm_fwd_bf16: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *x = inp + i * c;
        uint16_t *o = out + i * c;
        float m, r;
        row_stats(x, c, eps, &m, &r);
        if (mean) mean[i] = m;
        if (rstd) rstd[i] = r;
        if (w && b)
            for (int64_t j = 0; j < c; j++) o[j] = cpu_to_bf16_bits((x[j] - m) * r * w[j] + b[j]);
        else if (w)
            for (int64_t j = 0; j < c; j++) o[j] = cpu_to_bf16_bits((x[j] - m) * r * w[j]);
        else if (b)
            for (int64_t j = 0; j < c; j++) o[j] = cpu_to_bf16_bits((x[j] - m) * r + b[j]);
        else
            for (int64_t j = 0; j < c; j++) o[j] = cpu_to_bf16_bits((x[j] - m) * r);
    }
    return EX_OK;
}

ex_status cpu_layernorm_bwd(void *vctx, float *dinp /* (n, c) or NULL */, float *dw /* (c) or NULL */,
                            float *db /* (c) or NULL */, const float *dout /* (n, c) */,
                            const float *inp /* (n, c) */, const float *w /* (c) or NULL */,
                            const float *mean /* (n) */, const float *rstd /* (n) */, int64_t n, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 1, "cpu: layernorm_bwd: bad sizes");
    if (n == 0) return EX_OK;
    CPU_ARG(dout && inp && mean && rstd, "cpu: layernorm_bwd: NULL pointer");
    if (dinp) {
        /* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dout * w */
#pragma omp parallel for PAR(n * c)
        for (int64_t i = 0; i < n; i++) {
            const float *x = inp + i * c, *go = dout + i * c;
            float *d = dinp + i * c;
            const float m = mean[i], r = rstd[i];
            double sg = 0.0, sgx = 0.0;
            if (w) {
#pragma omp simd reduction(+ : sg, sgx)
                for (int64_t j = 0; j < c; j++) {
                    double g = (double)go[j] * (double)w[j];
                    sg += g;
                    sgx += g * (double)((x[j] - m) * r);
                }
            } else {
#pragma omp simd reduction(+ : sg, sgx)
                for (int64_t j = 0; j < c; j++) {
                    sg += go[j];
                    sgx += (double)go[j] * (double)((x[j] - m) * r);
                }
            }
            const float mg = (float)(sg / (double)c), mgx = (float)(sgx / (double)c);
            if (w)
                for (int64_t j = 0; j < c; j++) d[j] += r * (go[j] * w[j] - mg - (x[j] - m) * r * mgx);
            else
                for (int64_t j = 0; j < c; j++) d[j] += r * (go[j] - mg - (x[j] - m) * r * mgx);
        }
    }
    if (dw || db) {
        int64_t nblk = (c + CPU_COL_BLOCK - 1) / CPU_COL_BLOCK;
#pragma omp parallel for PAR(n * c * (nblk > 1))
        for (int64_t blk = 0; blk < nblk; blk++) {
            int64_t j0 = blk * CPU_COL_BLOCK, wd = c - j0 < CPU_COL_BLOCK ? c - j0 : CPU_COL_BLOCK;
            double aw[CPU_COL_BLOCK] = {0}, ab[CPU_COL_BLOCK] = {0};
            for (int64_t i = 0; i < n; i++) {
                const float *x = inp + i * c + j0, *go = dout + i * c + j0;
                const float m = mean[i], r = rstd[i];
                for (int64_t j = 0; j < wd; j++) {
                    aw[j] += (double)go[j] * (double)((x[j] - m) * r);
                    ab[j] += go[j];
                }
            }
            if (dw)
                for (int64_t j = 0; j < wd; j++) dw[j0 + j] = (float)((double)dw[j0 + j] + aw[j]);
            if (db)
                for (int64_t j = 0; j < wd; j++) db[j0 + j] = (float)((double)db[j0 + j] + ab[j]);
        }
    }
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * Softmax
 * ------------------------------------------------------------------------------ */

ex_status cpu_softmax_fwd(void *vctx, float *out /* (n, c) */, const float *inp /* (n, c) */, int64_t n,
                          int64_t c, float scale) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 1, "cpu: softmax_fwd: bad sizes");
    if (n == 0) return EX_OK;
    CPU_ARG(out && inp, "cpu: softmax_fwd: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *x = inp + i * c;
        float *o = out + i * c;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < c; j++) {
            const float z = scale * x[j];
            mx = z > mx ? z : mx;
        }
        if (mx == -INFINITY) mx = 0.0f; /* all -inf: exp gives 0s, sum 0, result NaN as torch */
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < c; j++) {
            const float e = cpu_expf(scale * x[j] - mx);
            o[j] = e;
            s += e;
        }
        const float inv = (float)(1.0 / s);
        for (int64_t j = 0; j < c; j++) o[j] *= inv;
    }
    return EX_OK;
}

ex_status cpu_softmax_bwd(void *vctx, float *dinp /* (n, c) */, const float *out /* (n, c) */,
                          const float *dout /* (n, c) */, int64_t n, int64_t c, float scale) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 1, "cpu: softmax_bwd: bad sizes");
    if (n == 0) return EX_OK;
    CPU_ARG(dinp && out && dout, "cpu: softmax_bwd: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *y = out + i * c, *g = dout + i * c;
        float *d = dinp + i * c;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < c; j++) s += (double)g[j] * (double)y[j];
        const float sf = (float)s;
        for (int64_t j = 0; j < c; j++) d[j] += scale * y[j] * (g[j] - sf);
    }
    return EX_OK;
}
