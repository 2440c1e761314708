/*
 * backends/cuda/cuda_norm.cu — row-wise ops, one block of CU_ROW_THREADS per row:
 * LayerNorm, softmax, cross-entropy (hard labels or soft targets) and L2
 * normalisation, forward and backward. Formulas and the order of operations
 * follow the CPU reference (backends/cpu/cpu_norm.c, cpu_loss.c); row sums are
 * fixed-order block reductions (cuda_common.cuh), in double where the CPU sums
 * in double. LayerNorm weight/bias gradients are column sums (cu_colsum).
 */
#include "cuda_common.cuh"

/* Grid for one block per row (the kernels loop if n exceeds it). */
static inline unsigned int row_grid(int64_t n) { return (unsigned int)(n < CU_MAX_BLOCKS ? n : CU_MAX_BLOCKS); }

#define FOR_ROWS(i, n) for (int64_t i = blockIdx.x; i < (n); i += gridDim.x)
#define FOR_COLS(j, c) for (int64_t j = threadIdx.x; j < (c); j += blockDim.x)

/* ------------------------------------------------------------------------------
 * Kernels
 * ------------------------------------------------------------------------------ */

/* OutT: float, or cu_bf16 for a block keeping its activations in bf16 (the same value, rounded). */
template <typename OutT>
__global__ void k_layernorm_fwd(OutT *out, float *mean, float *rstd, const float *inp, const float *w,
                                const float *b, int64_t n, int64_t c, float eps) {
    __shared__ double sh[CU_WARP + 1];
    FOR_ROWS(i, n) {
        const float *x = inp + i * c;
        OutT *o = out + i * c;
        double s = 0.0;
        FOR_COLS(j, c) s += x[j];
        const double mu = cu_block_sum_d(s, sh) / (double)c;
        double v = 0.0;
        FOR_COLS(j, c) v += ((double)x[j] - mu) * ((double)x[j] - mu);
        v = cu_block_sum_d(v, sh);
        const float m = (float)mu, r = (float)(1.0 / sqrt(v / (double)c + (double)eps));
        if (threadIdx.x == 0) {
            if (mean) mean[i] = m;
            if (rstd) rstd[i] = r;
        }
        FOR_COLS(j, c) {
            float y = (x[j] - m) * r;
            if (w) y = y * w[j];
            if (b) y = y + b[j];
            cu_store(o + j, y);
        }
    }
}

/* dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dout * w */
__global__ void k_layernorm_bwd_dinp(float *dinp, const float *dout, const float *inp, const float *w,
                                     const float *mean, const float *rstd, int64_t n, int64_t c) {
    __shared__ double sh[CU_WARP + 1];
    FOR_ROWS(i, n) {
        const float *x = inp + i * c, *go = dout + i * c;
        float *d = dinp + i * c;
        const float m = mean[i], r = rstd[i];
        double sg = 0.0, sgx = 0.0;
        FOR_COLS(j, c) {
            const double g = w ? (double)go[j] * (double)w[j] : (double)go[j];
            sg += g;
            sgx += g * (double)((x[j] - m) * r);
        }
        sg = cu_block_sum_d(sg, sh);
        sgx = cu_block_sum_d(sgx, sh);
        const float mg = (float)(sg / (double)c), mgx = (float)(sgx / (double)c);
        FOR_COLS(j, c) {
            const float g = w ? go[j] * w[j] : go[j];
            d[j] += r * (g - mg - (x[j] - m) * r * mgx);
        }
    }
}

__global__ void k_softmax_fwd(float *out, const float *inp, int64_t n, int64_t c, float scale) {
    __shared__ float shf[CU_WARP + 1];
    __shared__ double sh[CU_WARP + 1];
    FOR_ROWS(i, n) {
        const float *x = inp + i * c;
        float *o = out + i * c;
        float mx = -INFINITY;
        FOR_COLS(j, c) mx = fmaxf(mx, scale * x[j]);
        mx = cu_block_max(mx, shf);
        if (mx == -INFINITY) mx = 0.0f; /* all -inf: NaN result, as torch */
        double s = 0.0;
        FOR_COLS(j, c) {
            const float e = expf(scale * x[j] - mx);
            o[j] = e;
            s += e;
        }
        const float inv = (float)(1.0 / cu_block_sum_d(s, sh));
        FOR_COLS(j, c) o[j] *= inv;
    }
}

/* out[i] = sum_j inp[i, j], in double, fixed order */
__global__ void k_row_sum(float *out, const float *inp, int64_t n, int64_t c) {
    __shared__ double sh[CU_WARP + 1];
    FOR_ROWS(i, n) {
        const float *x = inp + i * c;
        double s = 0.0;
        FOR_COLS(j, c) s += (double)x[j];
        s = cu_block_sum_d(s, sh);
        if (threadIdx.x == 0) out[i] = (float)s;
    }
}

__global__ void k_softmax_bwd(float *dinp, const float *out, const float *dout, int64_t n, int64_t c, float scale) {
    __shared__ double sh[CU_WARP + 1];
    FOR_ROWS(i, n) {
        const float *y = out + i * c, *g = dout + i * c;
        float *d = dinp + i * c;
        double s = 0.0;
        FOR_COLS(j, c) s += (double)g[j] * (double)y[j];
        const float sf = (float)cu_block_sum_d(s, sh);
        FOR_COLS(j, c) d[j] += scale * y[j] * (g[j] - sf);
    }
}

__global__ void k_xent_fwd(float *losses, float *probs, const float *logits, const int32_t *labels,
                           const float *targets, int64_t n, int64_t v) {
    __shared__ float shf[CU_WARP + 1];
    __shared__ double sh[CU_WARP + 1];
    FOR_ROWS(i, n) {
        const float *l = logits + i * v;
        float mx = -INFINITY;
        FOR_COLS(j, v) mx = fmaxf(mx, l[j]);
        mx = cu_block_max(mx, shf);
        double s = 0.0;
        FOR_COLS(j, v) {
            const float e = expf(l[j] - mx);
            if (probs) probs[i * v + j] = e;
            s += e;
        }
        s = cu_block_sum_d(s, sh);
        if (probs) {
            const float inv = (float)(1.0 / s);
            FOR_COLS(j, v) probs[i * v + j] *= inv;
        }
        const double lse = (double)mx + log(s);
        if (labels) {
            if (threadIdx.x == 0) losses[i] = labels[i] < 0 ? 0.0f : (float)(lse - (double)l[labels[i]]);
        } else {
            const float *t = targets + i * v;
            double st = 0.0, stl = 0.0;
            FOR_COLS(j, v) {
                st += t[j];
                stl += (double)t[j] * (double)l[j];
            }
            st = cu_block_sum_d(st, sh);
            stl = cu_block_sum_d(stl, sh);
            if (threadIdx.x == 0) losses[i] = (float)(lse * st - stl);
        }
    }
}

__global__ void k_xent_bwd(float *dlogits, const float *dlosses, const float *probs, const int32_t *labels,
                           const float *targets, int64_t n, int64_t v) {
    __shared__ double sh[CU_WARP + 1];
    FOR_ROWS(i, n) {
        const float *p = probs + i * v;
        float *d = dlogits + i * v;
        const float g = dlosses[i];
        if (labels) {
            const int32_t y = labels[i];
            if (y < 0) continue; /* uniform over the block: no barrier is skipped by part of it */
            FOR_COLS(j, v) {
                float r = d[j] + g * p[j];
                if (j == y) r -= g;
                d[j] = r;
            }
        } else {
            const float *t = targets + i * v;
            double st = 0.0;
            FOR_COLS(j, v) st += t[j];
            const float s = (float)cu_block_sum_d(st, sh);
            FOR_COLS(j, v) d[j] += g * (p[j] * s - t[j]);
        }
    }
}

__global__ void k_l2norm_fwd(float *out, float *norms, const float *inp, int64_t n, int64_t c, float eps) {
    __shared__ double sh[CU_WARP + 1];
    FOR_ROWS(i, n) {
        const float *x = inp + i * c;
        float *o = out + i * c;
        double ss = 0.0;
        FOR_COLS(j, c) ss += (double)x[j] * (double)x[j];
        const double nrm = sqrt(cu_block_sum_d(ss, sh));
        if (norms && threadIdx.x == 0) norms[i] = (float)nrm;
        const float inv = (float)(1.0 / (nrm > (double)eps ? nrm : (double)eps));
        FOR_COLS(j, c) o[j] = x[j] * inv;
    }
}

__global__ void k_l2norm_bwd(float *dinp, const float *dout, const float *inp, const float *norms, int64_t n,
                             int64_t c, float eps) {
    __shared__ double sh[CU_WARP + 1];
    FOR_ROWS(i, n) {
        const float *x = inp + i * c, *g = dout + i * c;
        float *d = dinp + i * c;
        const double nrm = norms[i];
        if (nrm >= (double)eps && nrm > 0.0) { /* uniform over the block */
            double xg = 0.0;
            FOR_COLS(j, c) xg += (double)x[j] * (double)g[j];
            xg = cu_block_sum_d(xg, sh);
            const float inv = (float)(1.0 / nrm), k = (float)(xg / (nrm * nrm));
            FOR_COLS(j, c) d[j] += (g[j] - x[j] * k) * inv;
        } else {
            const float inv = 1.0f / eps;
            FOR_COLS(j, c) d[j] += g[j] * inv;
        }
    }
}

/* ------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------ */

extern "C" {

ex_status cu_layernorm_fwd(void *vctx, float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int64_t n, int64_t c, float eps) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 1 && eps >= 0.0f, CU_VENDOR ": layernorm_fwd: bad sizes or eps");
    if (n == 0) return EX_OK;
    CU_ARG(out && inp, CU_VENDOR ": layernorm_fwd: NULL pointer");
    k_layernorm_fwd<<<row_grid(n), CU_ROW_THREADS, 0, ctx->stream>>>(out, mean, rstd, inp, w, b, n, c, eps);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_layernorm_fwd_bf16(void *vctx, uint16_t *out, float *mean, float *rstd, const float *inp,
                                const float *w, const float *b, int64_t n, int64_t c, float eps) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 1 && eps >= 0.0f, CU_VENDOR ": layernorm_fwd_bf16: bad sizes or eps");
    if (n == 0) return EX_OK;
    CU_ARG(out && inp, CU_VENDOR ": layernorm_fwd_bf16: NULL pointer");
    k_layernorm_fwd<<<row_grid(n), CU_ROW_THREADS, 0, ctx->stream>>>((cu_bf16 *)out, mean, rstd, inp, w, b, n, c,
                                                                     eps);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_layernorm_bwd(void *vctx, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                           const float *w, const float *mean, const float *rstd, int64_t n, int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 1, CU_VENDOR ": layernorm_bwd: bad sizes");
    if (n == 0) return EX_OK;
    CU_ARG(dout && inp && mean && rstd, CU_VENDOR ": layernorm_bwd: NULL pointer");
    if (dinp) {
        k_layernorm_bwd_dinp<<<row_grid(n), CU_ROW_THREADS, 0, ctx->stream>>>(dinp, dout, inp, w, mean, rstd, n, c);
        CU_LAUNCHED(ctx);
    }
    if (dw || db) EX_CHECK(cu_colsum(ctx, CU_COLSUM_LNORM, dw, db, dout, inp, NULL, mean, rstd, n, c));
    return EX_OK;
}

ex_status cu_softmax_fwd(void *vctx, float *out, const float *inp, int64_t n, int64_t c, float scale) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 1, CU_VENDOR ": softmax_fwd: bad sizes");
    if (n == 0) return EX_OK;
    CU_ARG(out && inp, CU_VENDOR ": softmax_fwd: NULL pointer");
    k_softmax_fwd<<<row_grid(n), CU_ROW_THREADS, 0, ctx->stream>>>(out, inp, n, c, scale);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_row_sum(void *vctx, float *out, const float *inp, int64_t n, int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 0, CU_VENDOR ": row_sum: bad sizes");
    if (n == 0) return EX_OK;
    CU_ARG(out && (inp || c == 0), CU_VENDOR ": row_sum: NULL pointer");
    k_row_sum<<<row_grid(n), CU_ROW_THREADS, 0, ctx->stream>>>(out, inp, n, c);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_softmax_bwd(void *vctx, float *dinp, const float *out, const float *dout, int64_t n, int64_t c,
                         float scale) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 1, CU_VENDOR ": softmax_bwd: bad sizes");
    if (n == 0) return EX_OK;
    CU_ARG(dinp && out && dout, CU_VENDOR ": softmax_bwd: NULL pointer");
    k_softmax_bwd<<<row_grid(n), CU_ROW_THREADS, 0, ctx->stream>>>(dinp, out, dout, n, c, scale);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_xent_fwd(void *vctx, float *losses, float *probs, const float *logits, const int32_t *labels,
                      const float *targets, int64_t n, int64_t v) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && v >= 1, CU_VENDOR ": xent_fwd: bad sizes");
    CU_ARG((labels != NULL) != (targets != NULL), CU_VENDOR ": xent_fwd: give exactly one of labels and targets");
    if (n == 0) return EX_OK;
    CU_ARG(losses && logits, CU_VENDOR ": xent_fwd: NULL pointer");
    if (labels) EX_CHECK(cu_check_index(ctx, labels, n, INT32_MIN, v));
    k_xent_fwd<<<row_grid(n), CU_ROW_THREADS, 0, ctx->stream>>>(losses, probs, logits, labels, targets, n, v);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_xent_bwd(void *vctx, float *dlogits, const float *dlosses, const float *probs, const int32_t *labels,
                      const float *targets, int64_t n, int64_t v) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && v >= 1, CU_VENDOR ": xent_bwd: bad sizes");
    CU_ARG((labels != NULL) != (targets != NULL), CU_VENDOR ": xent_bwd: give exactly one of labels and targets");
    if (n == 0) return EX_OK;
    CU_ARG(dlogits && dlosses && probs, CU_VENDOR ": xent_bwd: NULL pointer");
    if (labels) EX_CHECK(cu_check_index(ctx, labels, n, INT32_MIN, v));
    k_xent_bwd<<<row_grid(n), CU_ROW_THREADS, 0, ctx->stream>>>(dlogits, dlosses, probs, labels, targets, n, v);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_l2norm_fwd(void *vctx, float *out, float *norms, const float *inp, int64_t n, int64_t c, float eps) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 0 && eps >= 0.0f, CU_VENDOR ": l2norm_fwd: bad sizes or eps");
    if (n == 0) return EX_OK;
    CU_ARG(out && inp, CU_VENDOR ": l2norm_fwd: NULL pointer");
    k_l2norm_fwd<<<row_grid(n), CU_ROW_THREADS, 0, ctx->stream>>>(out, norms, inp, n, c, eps);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_l2norm_bwd(void *vctx, float *dinp, const float *dout, const float *inp, const float *norms, int64_t n,
                        int64_t c, float eps) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 0 && eps >= 0.0f, CU_VENDOR ": l2norm_bwd: bad sizes or eps");
    if (n == 0) return EX_OK;
    CU_ARG(dinp && dout && inp && norms, CU_VENDOR ": l2norm_bwd: NULL pointer");
    k_l2norm_bwd<<<row_grid(n), CU_ROW_THREADS, 0, ctx->stream>>>(dinp, dout, inp, norms, n, c, eps);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

} /* extern "C" */
