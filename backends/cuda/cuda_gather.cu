/*
 * backends/cuda/cuda_gather.cu — index range checks, row gathers and scatters
 * (token masking), iBOT mask-token substitution, patchify (im2col for
 * stride = kernel = p) and the strided 2-D copy.
 *
 * scatter_add_rows is computed by output row, not by input row: the thread of
 * output element (bi, row r, column j) walks the m indices of its batch item
 * in order and adds every dout row that maps to r. No atomics, a fixed order,
 * O(b t m c) index comparisons (fine for masking, where m and t are a few
 * hundred). patchify is a bijection, so its backward writes disjoint elements.
 *
 * Index checks (gathers, scatters, labels) run a small kernel that raises a
 * device flag, then read the flag back: EX_E_RANGE as on the CPU, at the cost
 * of one stream synchronisation per checked call.
 */
#include "cuda_common.cuh"

/* ------------------------------------------------------------------------------
 * Kernels
 * ------------------------------------------------------------------------------ */

__global__ void k_check_index(int *flag, const int32_t *idx, int64_t count, int64_t lo, int64_t hi) {
    CU_FOR(i, count) {
        const int64_t v = idx[i];
        if (v < lo || v >= hi) *flag = 1; /* a plain store: every writer writes the same value */
    }
}

__global__ void k_gather_rows(float *out, const float *inp, const int32_t *idx, int64_t b, int64_t m, int64_t t,
                              int64_t c) {
    CU_FOR(e, b * m * c) {
        const int64_t r = e / c, j = e % c, bi = r / m;
        out[e] = inp[(bi * t + idx[r]) * c + j];
    }
}

__global__ void k_scatter_add_rows(float *dinp, const float *dout, const int32_t *idx, int64_t b, int64_t m, int64_t t,
                                   int64_t c) {
    CU_FOR(e, b * t * c) {
        const int64_t row = e / c, j = e % c, bi = row / t, r = row % t;
        const int32_t *ix = idx + bi * m;
        float acc = dinp[e];
        for (int64_t q = 0; q < m; q++)
            if (ix[q] == r) acc += dout[(bi * m + q) * c + j];
        dinp[e] = acc;
    }
}

__global__ void k_mask_rows_fwd(float *out, const float *inp, const uint8_t *mask, const float *token, int64_t n,
                                int64_t c) {
    CU_FOR(e, n * c) {
        const int64_t i = e / c, j = e % c;
        out[e] = mask[i] ? token[j] : inp[e];
    }
}

/* Offset of element (c, i, j) inside a flattened patch. */
__device__ __forceinline__ int64_t patch_off(int order, int64_t ch, int64_t p, int64_t c, int64_t i, int64_t j) {
    return order == EX_PATCH_CPP ? (c * p + i) * p + j : (i * p + j) * ch + c;
}

/* One thread per output element: out (b, gh*gw, ch*p*p). */
__global__ void k_patchify_fwd(float *out, const float *img, int64_t b, int64_t ch, int64_t h, int64_t w, int64_t p,
                               int order) {
    const int64_t gh = h / p, gw = w / p, pd = ch * p * p, total = b * gh * gw * pd;
    CU_FOR(e, total) {
        const int64_t off = e % pd, patch = (e / pd) % (gh * gw), bi = e / (pd * gh * gw);
        const int64_t py = patch / gw, px = patch % gw;
        int64_t c, i, j;
        if (order == EX_PATCH_CPP) {
            c = off / (p * p);
            i = (off / p) % p;
            j = off % p;
        } else {
            c = off % ch;
            j = (off / ch) % p;
            i = off / (ch * p);
        }
        out[e] = img[((bi * ch + c) * h + py * p + i) * w + px * p + j];
    }
}

/* One thread per image element: dimg (b, ch, h, w) += its patch element. */
__global__ void k_patchify_bwd(float *dimg, const float *dout, int64_t b, int64_t ch, int64_t h, int64_t w, int64_t p,
                               int order) {
    const int64_t gh = h / p, gw = w / p, pd = ch * p * p, total = b * ch * h * w;
    CU_FOR(e, total) {
        const int64_t x = e % w, y = (e / w) % h, c = (e / (w * h)) % ch, bi = e / (w * h * ch);
        const int64_t py = y / p, i = y % p, px = x / p, j = x % p;
        dimg[e] += dout[((bi * gh + py) * gw + px) * pd + patch_off(order, ch, p, c, i, j)];
    }
}

__global__ void k_copy2d(float *dst, int64_t dst_ld, const float *src, int64_t src_ld, int64_t rows, int64_t cols) {
    CU_FOR(e, rows * cols) {
        const int64_t r = e / cols, j = e % cols;
        dst[r * dst_ld + j] = src[r * src_ld + j];
    }
}

/* ------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------ */

extern "C" {

ex_status cu_check_index(cu_ctx *ctx, const int32_t *idx, int64_t count, int64_t lo, int64_t hi) {
    if (count == 0) return EX_OK;
    CU_TRY(ctx, cudaMemsetAsync(ctx->dflag, 0, sizeof(int), ctx->stream));
    k_check_index<<<cu_blocks(count), CU_THREADS, 0, ctx->stream>>>(ctx->dflag, idx, count, lo, hi);
    CU_LAUNCHED(ctx);
    int bad = 0;
    EX_CHECK(cu_read_flag(ctx, &bad));
    EX_ENSURE(!bad, NULL, EX_E_RANGE, CU_VENDOR ": an index is outside [%lld, %lld)", (long long)lo, (long long)hi);
    return EX_OK;
}

ex_status cu_gather_rows(void *vctx, float *out, const float *inp, const int32_t *idx, int64_t b, int64_t m, int64_t t,
                         int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(b >= 0 && m >= 0 && t >= 0 && c >= 0, CU_VENDOR ": gather_rows: negative size");
    if (b == 0 || m == 0 || c == 0) return EX_OK;
    CU_ARG(out && inp && idx, CU_VENDOR ": gather_rows: NULL pointer");
    EX_CHECK(cu_check_index(ctx, idx, b * m, 0, t));
    k_gather_rows<<<cu_blocks(b * m * c), CU_THREADS, 0, ctx->stream>>>(out, inp, idx, b, m, t, c);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_scatter_add_rows(void *vctx, float *dinp, const float *dout, const int32_t *idx, int64_t b, int64_t m,
                              int64_t t, int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(b >= 0 && m >= 0 && t >= 0 && c >= 0, CU_VENDOR ": scatter_add_rows: negative size");
    if (b == 0 || m == 0 || c == 0) return EX_OK;
    CU_ARG(dinp && dout && idx, CU_VENDOR ": scatter_add_rows: NULL pointer");
    EX_CHECK(cu_check_index(ctx, idx, b * m, 0, t));
    if (t == 0) return EX_OK;
    k_scatter_add_rows<<<cu_blocks(b * t * c), CU_THREADS, 0, ctx->stream>>>(dinp, dout, idx, b, m, t, c);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_mask_rows_fwd(void *vctx, float *out, const float *inp, const uint8_t *mask, const float *token, int64_t n,
                           int64_t c) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(n >= 0 && c >= 0, CU_VENDOR ": mask_rows_fwd: negative size");
    if (n == 0 || c == 0) return EX_OK;
    CU_ARG(out && inp && mask && token, CU_VENDOR ": mask_rows_fwd: NULL pointer");
    k_mask_rows_fwd<<<cu_blocks(n * c), CU_THREADS, 0, ctx->stream>>>(out, inp, mask, token, n, c);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

static ex_status check_patch(const void *a, const void *b, int64_t bt, int64_t ch, int64_t h, int64_t w, int64_t p,
                             ex_patch_order order) {
    CU_ARG(bt >= 0 && ch >= 0 && h >= 0 && w >= 0 && p >= 1, CU_VENDOR ": patchify: bad sizes");
    CU_ARG(order == EX_PATCH_CPP || order == EX_PATCH_PPC, CU_VENDOR ": patchify: unknown order %d", (int)order);
    EX_ENSURE(h % p == 0 && w % p == 0, NULL, EX_E_SHAPE,
              CU_VENDOR ": patchify: image %lldx%lld is not a multiple of the patch size %lld", (long long)h, (long long)w,
              (long long)p);
    CU_ARG((a && b) || bt * ch * h * w == 0, CU_VENDOR ": patchify: NULL pointer");
    return EX_OK;
}

ex_status cu_patchify_fwd(void *vctx, float *out, const float *img, int64_t b, int64_t ch, int64_t h, int64_t w,
                          int64_t p, ex_patch_order order) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    EX_CHECK(check_patch(out, img, b, ch, h, w, p, order));
    if (b * ch * h * w == 0) return EX_OK;
    k_patchify_fwd<<<cu_blocks(b * ch * h * w), CU_THREADS, 0, ctx->stream>>>(out, img, b, ch, h, w, p, (int)order);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_patchify_bwd(void *vctx, float *dimg, const float *dout, int64_t b, int64_t ch, int64_t h, int64_t w,
                          int64_t p, ex_patch_order order) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    EX_CHECK(check_patch(dimg, dout, b, ch, h, w, p, order));
    if (b * ch * h * w == 0) return EX_OK;
    k_patchify_bwd<<<cu_blocks(b * ch * h * w), CU_THREADS, 0, ctx->stream>>>(dimg, dout, b, ch, h, w, p, (int)order);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

ex_status cu_copy2d(void *vctx, float *dst, int64_t dst_ld, const float *src, int64_t src_ld, int64_t rows,
                    int64_t cols) {
    cu_ctx *ctx = (cu_ctx *)vctx;
    CU_ARG(rows >= 0 && cols >= 0, CU_VENDOR ": copy2d: negative size");
    if (rows == 0 || cols == 0) return EX_OK;
    CU_ARG(dst && src, CU_VENDOR ": copy2d: NULL pointer");
    CU_ARG(dst_ld >= cols && (src_ld >= cols || src_ld == 0),
           CU_VENDOR ": copy2d: leading dimension smaller than cols (src_ld may be 0 to repeat one row)");
    if (dst == src && dst_ld == src_ld) return EX_OK;
    if (src_ld > 0) { /* the copy engine handles pitched copies */
        CU_TRY(ctx, cudaMemcpy2DAsync(dst, (size_t)dst_ld * sizeof(float), src, (size_t)src_ld * sizeof(float),
                                      (size_t)cols * sizeof(float), (size_t)rows, cudaMemcpyDeviceToDevice,
                                      ctx->stream));
        return EX_OK;
    }
    k_copy2d<<<cu_blocks(rows * cols), CU_THREADS, 0, ctx->stream>>>(dst, dst_ld, src, src_ld, rows, cols);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

} /* extern "C" */
