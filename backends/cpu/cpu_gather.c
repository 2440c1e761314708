/*
 * backends/cpu/cpu_gather.c — row gathers and scatters (token masking), iBOT
 * mask-token substitution, patchify (im2col for stride = kernel = p) and the
 * strided 2-D copy.
 *
 * Scatters that may hit one row several times (scatter_add_rows) are split over
 * (batch, column block) so that each output element is accumulated by one
 * thread in index order; patchify is a bijection, so its backward writes
 * disjoint elements.
 */
#include <string.h>

#include "cpu_internal.h"

#define PAR(work) num_threads(ctx->threads) schedule(static) if ((work) > CPU_PAR_MIN)

/* Columns per scatter task. */
#define SCATTER_COLS ((int64_t)256)

static ex_status check_idx(const int32_t *idx, int64_t count, int64_t t, const char *op) {
    for (int64_t i = 0; i < count; i++)
        EX_ENSURE(idx[i] >= 0 && idx[i] < t, NULL, EX_E_RANGE, "cpu: %s: index %d at %lld is outside [0, %lld)",
                  op, (int)idx[i], (long long)i, (long long)t);
    return EX_OK;
}

ex_status cpu_gather_rows(void *vctx, float *out /* (b, m, c) */, const float *inp /* (b, t, c) */,
                          const int32_t *idx /* (b, m) */, int64_t b, int64_t m, int64_t t, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(b >= 0 && m >= 0 && t >= 0 && c >= 0, "cpu: gather_rows: negative size");
    if (b == 0 || m == 0 || c == 0) return EX_OK;
    CPU_ARG(out && inp && idx, "cpu: gather_rows: NULL pointer");
    EX_CHECK(check_idx(idx, b * m, t, "gather_rows"));
#pragma omp parallel for PAR(b * m * c)
    for (int64_t r = 0; r < b * m; r++) {
        const int64_t bi = r / m;
        memcpy(out + r * c, inp + (bi * t + idx[r]) * c, (size_t)c * sizeof(float));
    }
    return EX_OK;
}

ex_status cpu_scatter_add_rows(void *vctx, float *dinp /* (b, t, c) */, const float *dout /* (b, m, c) */,
                               const int32_t *idx /* (b, m) */, int64_t b, int64_t m, int64_t t, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(b >= 0 && m >= 0 && t >= 0 && c >= 0, "cpu: scatter_add_rows: negative size");
    if (b == 0 || m == 0 || c == 0) return EX_OK;
    CPU_ARG(dinp && dout && idx, "cpu: scatter_add_rows: NULL pointer");
    EX_CHECK(check_idx(idx, b * m, t, "scatter_add_rows"));
    const int64_t ncb = (c + SCATTER_COLS - 1) / SCATTER_COLS, ntask = b * ncb;
#pragma omp parallel for PAR(b * m * c * (ntask > 1))
    for (int64_t task = 0; task < ntask; task++) {
        const int64_t bi = task / ncb, j0 = (task % ncb) * SCATTER_COLS;
        const int64_t w = c - j0 < SCATTER_COLS ? c - j0 : SCATTER_COLS;
        for (int64_t r = 0; r < m; r++) {
            const float *src = dout + (bi * m + r) * c + j0;
            float *dst = dinp + (bi * t + idx[bi * m + r]) * c + j0;
            for (int64_t j = 0; j < w; j++) dst[j] += src[j];
        }
    }
    return EX_OK;
}

ex_status cpu_mask_rows_fwd(void *vctx, float *out /* (n, c) */, const float *inp /* (n, c) */,
                            const uint8_t *mask /* (n) */, const float *token /* (c) */, int64_t n, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 0, "cpu: mask_rows_fwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CPU_ARG(out && inp && mask && token, "cpu: mask_rows_fwd: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        if (mask[i])
            memcpy(out + i * c, token, (size_t)c * sizeof(float));
        else if (out != inp)
            memcpy(out + i * c, inp + i * c, (size_t)c * sizeof(float));
    }
    return EX_OK;
}

ex_status cpu_mask_rows_bwd(void *vctx, float *dinp /* (n, c) or NULL */, float *dtoken /* (c) or NULL */,
                            const float *dout /* (n, c) */, const uint8_t *mask /* (n) */, int64_t n, int64_t c) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 0, "cpu: mask_rows_bwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CPU_ARG(dout && mask, "cpu: mask_rows_bwd: NULL pointer");
    if (dinp) {
#pragma omp parallel for PAR(n * c)
        for (int64_t i = 0; i < n; i++) {
            if (mask[i]) continue;
            const float *g = dout + i * c;
            float *d = dinp + i * c;
            for (int64_t j = 0; j < c; j++) d[j] += g[j];
        }
    }
    if (dtoken) {
        int64_t nblk = (c + CPU_COL_BLOCK - 1) / CPU_COL_BLOCK;
#pragma omp parallel for PAR(n * c * (nblk > 1))
        for (int64_t blk = 0; blk < nblk; blk++) {
            int64_t j0 = blk * CPU_COL_BLOCK, w = c - j0 < CPU_COL_BLOCK ? c - j0 : CPU_COL_BLOCK;
            double acc[CPU_COL_BLOCK] = {0};
            for (int64_t i = 0; i < n; i++) {
                if (!mask[i]) continue;
                const float *g = dout + i * c + j0;
                for (int64_t j = 0; j < w; j++) acc[j] += g[j];
            }
            for (int64_t j = 0; j < w; j++) dtoken[j0 + j] = (float)((double)dtoken[j0 + j] + acc[j]);
        }
    }
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * Patchify
 * ------------------------------------------------------------------------------ */

static ex_status check_patch(const void *a, const void *b, int64_t bt, int64_t ch, int64_t h, int64_t w, int64_t p,
                             ex_patch_order order) {
    CPU_ARG(bt >= 0 && ch >= 0 && h >= 0 && w >= 0 && p >= 1, "cpu: patchify: bad sizes");
    CPU_ARG(order == EX_PATCH_CPP || order == EX_PATCH_PPC, "cpu: patchify: unknown order %d", (int)order);
    EX_ENSURE(h % p == 0 && w % p == 0, NULL, EX_E_SHAPE,
              "cpu: patchify: image %lldx%lld is not a multiple of the patch size %lld", (long long)h, (long long)w,
              (long long)p);
    CPU_ARG((a && b) || bt * ch * h * w == 0, "cpu: patchify: NULL pointer");
    return EX_OK;
}

/* Element (c, i, j) of patch (py, px): its offset inside the flattened patch. */
static inline int64_t patch_off(ex_patch_order order, int64_t ch, int64_t p, int64_t c, int64_t i, int64_t j) {
    return order == EX_PATCH_CPP ? (c * p + i) * p + j : (i * p + j) * ch + c;
}

ex_status cpu_patchify_fwd(void *vctx, float *out /* (b, (h/p)*(w/p), ch*p*p) */, const float *img /* (b, ch, h, w) */,
                           int64_t b, int64_t ch, int64_t h, int64_t w, int64_t p, ex_patch_order order) {
    const cpu_ctx *ctx = vctx;
    EX_CHECK(check_patch(out, img, b, ch, h, w, p, order));
    if (b * ch * h * w == 0) return EX_OK;
    const int64_t gh = h / p, gw = w / p, pd = ch * p * p;
    /* one task per (image, patch row); inner loop over the p pixels of a patch row */
#pragma omp parallel for PAR(b * ch * h * w)
    for (int64_t task = 0; task < b * gh; task++) {
        const int64_t bi = task / gh, py = task % gh;
        for (int64_t px = 0; px < gw; px++) {
            float *dst = out + ((bi * gh + py) * gw + px) * pd;
            for (int64_t c = 0; c < ch; c++)
                for (int64_t i = 0; i < p; i++) {
                    const float *src = img + ((bi * ch + c) * h + py * p + i) * w + px * p;
                    if (order == EX_PATCH_CPP) {
                        memcpy(dst + (c * p + i) * p, src, (size_t)p * sizeof(float));
                    } else {
                        for (int64_t j = 0; j < p; j++) dst[patch_off(order, ch, p, c, i, j)] = src[j];
                    }
                }
        }
    }
    return EX_OK;
}

ex_status cpu_patchify_bwd(void *vctx, float *dimg /* (b, ch, h, w) */, const float *dout /* (b, np, ch*p*p) */,
                           int64_t b, int64_t ch, int64_t h, int64_t w, int64_t p, ex_patch_order order) {
    const cpu_ctx *ctx = vctx;
    EX_CHECK(check_patch(dimg, dout, b, ch, h, w, p, order));
    if (b * ch * h * w == 0) return EX_OK;
    const int64_t gh = h / p, gw = w / p, pd = ch * p * p;
#pragma omp parallel for PAR(b * ch * h * w)
    for (int64_t task = 0; task < b * gh; task++) {
        const int64_t bi = task / gh, py = task % gh;
        for (int64_t px = 0; px < gw; px++) {
            const float *src = dout + ((bi * gh + py) * gw + px) * pd;
            for (int64_t c = 0; c < ch; c++)
                for (int64_t i = 0; i < p; i++) {
                    float *dst = dimg + ((bi * ch + c) * h + py * p + i) * w + px * p;
                    for (int64_t j = 0; j < p; j++) dst[j] += src[patch_off(order, ch, p, c, i, j)];
                }
        }
    }
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * Strided copy
 * ------------------------------------------------------------------------------ */

ex_status cpu_copy2d(void *vctx, float *dst /* (rows, dst_ld) */, int64_t dst_ld, const float *src /* (rows, src_ld) */,
                     int64_t src_ld, int64_t rows, int64_t cols) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(rows >= 0 && cols >= 0, "cpu: copy2d: negative size");
    if (rows == 0 || cols == 0) return EX_OK;
    CPU_ARG(dst && src, "cpu: copy2d: NULL pointer");
    CPU_ARG(dst_ld >= cols && (src_ld >= cols || src_ld == 0),
            "cpu: copy2d: leading dimension smaller than cols (src_ld may be 0 to repeat one row)");
    if (dst == src && dst_ld == src_ld) return EX_OK;
    if (dst_ld == cols && src_ld == cols && rows * cols <= CPU_PAR_MIN * 4) {
        memmove(dst, src, (size_t)(rows * cols) * sizeof(float));
        return EX_OK;
    }
#pragma omp parallel for PAR(rows * cols / 4)
    for (int64_t r = 0; r < rows; r++) memcpy(dst + r * dst_ld, src + r * src_ld, (size_t)cols * sizeof(float));
    return EX_OK;
}
