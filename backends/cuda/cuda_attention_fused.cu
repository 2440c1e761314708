/*
 * backends/cuda/cuda_attention_fused.cu — fused multi-head attention, forward and backward,
 * without any (t, t) matrix in memory ([backend] attention = fused): scores live in
 * registers, one key (or query) per lane, with an online softmax in the forward.
 *
 * Layout as cuda_attention.cu (timm): qkv (b, t, 3, nh, hs), out (b, t, nh*hs), lse (b, nh, t).
 * W = CU_WARP (the target's warp), a block = 256 threads = 256/W warps; every warp owns one
 * row, and the block's warps share tiles of W rows of the other side staged in shared memory.
 *
 * Forward   warp = query row i; for each tile of W keys, lane j computes s = scale q_i . k_j;
 *           m' = max(m, max_j s), l = l e^(m - m') + sum_j e^(s - m'),
 *           o = o e^(m - m') + sum_j e^(s - m') v_j   (each lane holds hs/W dims of o);
 *           finally out_i = o / l, lse_i = m + log l.
 * Backward  1. warp = query row i: D_i = dO_i . O_i (kept for pass 2), and over key tiles
 *              p = exp(s - lse_i), dP = dO_i . v_j, dS = p (dP - D_i); dq_i += scale sum_j dS k_j.
 *           2. warp = key row j: over query tiles (lane = query i) the same p and dS;
 *              dk_j += scale sum_i dS q_i, dv_j += sum_i p dO_i.
 * Every output element is written by one lane, summing in a fixed order: no atomics,
 * bitwise reproducible. fp32 arithmetic on CUDA cores (no tensor cores yet).
 *
 * bf16 storage (the attention_fwd/bwd_bf16 slots, a block keeping its activations in bf16): the same kernels
 * read bf16 qkv (and the bf16 output for D) widened exactly, round the forward's output to bf16, and write
 * dqkv instead of adding to it: the fp32 computation of the widened values, without copies.
 *
 * Limits: hs <= CU_FUSED_MAX_HS (128 with 32-wide warps, 64 with 64-wide: the shared memory of
 * one block); larger heads take the GEMM path (cuda_attention.cu).
 */
#include "cuda_common.cuh"

#define FA_THREADS 256
#if CU_WARP == 32
#define FA_HS 128
#else
#define FA_HS 64
#endif
#define FA_ROWS (FA_THREADS / CU_WARP) /* rows (warps) per block */
#define FA_DPL (FA_HS / CU_WARP)       /* head dims per lane, at most */

/* Stage rows r0 .. r0 + W - 1 (clipped to t) of the (t, hs) matrix at src (row stride ld; fp32 or bf16)
 * into dst[W][pitch] as fp32; missing rows are zero. */
template <typename S>
__device__ __forceinline__ void fa_stage(float *dst, int pitch, const S *src, int64_t ld, int64_t r0, int64_t t,
                                         int hs) {
    for (int e = threadIdx.x; e < CU_WARP * hs; e += FA_THREADS) {
        const int r = e / hs, d = e % hs;
        dst[r * pitch + d] = r0 + r < t ? cu_load(src + (r0 + r) * ld + d) : 0.0f;
    }
}

/* A gradient into dqkv: added (the fp32 slot) or written (the bf16 slot). */
template <bool ACC> __device__ __forceinline__ void fa_out(float *p, float v) {
    if (ACC) *p += v;
    else *p = v;
}

template <typename S, typename O>
__global__ void __launch_bounds__(FA_THREADS)
    k_attn_fused_fwd(O *out, float *lse, const S *qkv, int64_t t, int nh, int hs, float scale) {
    __shared__ float ks[CU_WARP][FA_HS + 1];
    __shared__ float vs[CU_WARP][FA_HS];
    __shared__ float qrow[FA_ROWS][FA_HS];
    const int64_t C = (int64_t)nh * hs, ld = 3 * C;
    const int64_t tiles = CU_CEIL_DIV(t, (int64_t)FA_ROWS), bh = blockIdx.x / tiles, bi = bh / nh, h = bh % nh;
    const int w = threadIdx.x / CU_WARP, lane = threadIdx.x % CU_WARP;
    const int64_t i = (int64_t)(blockIdx.x % tiles) * FA_ROWS + w;
    const S *q = qkv + bi * t * ld + h * hs, *k = q + C, *v = q + 2 * C;
    if (i < t)
        for (int d = lane; d < hs; d += CU_WARP) qrow[w][d] = cu_load(q + i * ld + d);
    float m = -INFINITY, l = 0.0f, o[FA_DPL];
    for (int c = 0; c < FA_DPL; c++) o[c] = 0.0f;
    for (int64_t j0 = 0; j0 < t; j0 += CU_WARP) {
        __syncthreads(); /* the previous tile is consumed (and qrow written, on the first pass) */
        fa_stage(&ks[0][0], FA_HS + 1, k, ld, j0, t, hs);
        fa_stage(&vs[0][0], FA_HS, v, ld, j0, t, hs);
        __syncthreads();
        if (i >= t) continue;
        float s = 0.0f;
        for (int d = 0; d < hs; d++) s = fmaf(qrow[w][d], ks[lane][d], s);
        s = j0 + lane < t ? s * scale : -INFINITY;
        const float mn = fmaxf(m, cu_warp_max(s));
        const float p = expf(s - mn), corr = expf(m - mn);
        l = l * corr + cu_warp_sum(p);
        for (int c = 0; c < FA_DPL; c++) o[c] *= corr;
        for (int j = 0; j < CU_WARP; j++) {
            const float pj = __shfl_sync(0xffffffffu, p, j);
            for (int c = 0; c < FA_DPL; c++) {
                const int d = lane + c * CU_WARP;
                if (d < hs) o[c] = fmaf(pj, vs[j][d], o[c]);
            }
        }
        m = mn;
    }
    if (i >= t) return;
    O *oi = out + (bi * t + i) * C + h * hs;
    const float inv = 1.0f / l;
    for (int c = 0; c < FA_DPL; c++) {
        const int d = lane + c * CU_WARP;
        if (d < hs) cu_store(oi + d, o[c] * inv);
    }
    if (lane == 0) lse[bh * t + i] = m + logf(l);
}

/* Pass 1: dq_i, and D_i = dO_i . O_i into dd (b, nh, t). */
template <typename S, bool ACC>
__global__ void __launch_bounds__(FA_THREADS)
    k_attn_fused_bwd_q(float *dqkv, float *dd, const float *dout, const S *out, const float *lse, const S *qkv,
                       int64_t t, int nh, int hs, float scale) {
    __shared__ float ks[CU_WARP][FA_HS + 1];
    __shared__ float vs[CU_WARP][FA_HS + 1];
    __shared__ float qrow[FA_ROWS][FA_HS];
    __shared__ float grow[FA_ROWS][FA_HS];
    const int64_t C = (int64_t)nh * hs, ld = 3 * C;
    const int64_t tiles = CU_CEIL_DIV(t, (int64_t)FA_ROWS), bh = blockIdx.x / tiles, bi = bh / nh, h = bh % nh;
    const int w = threadIdx.x / CU_WARP, lane = threadIdx.x % CU_WARP;
    const int64_t i = (int64_t)(blockIdx.x % tiles) * FA_ROWS + w;
    const S *q = qkv + bi * t * ld + h * hs, *k = q + C, *v = q + 2 * C;
    float D = 0.0f, li = 0.0f;
    if (i < t) {
        const float *gi = dout + (bi * t + i) * C + h * hs;
        const S *oi = out + (bi * t + i) * C + h * hs;
        float acc = 0.0f;
        for (int d = lane; d < hs; d += CU_WARP) {
            qrow[w][d] = cu_load(q + i * ld + d);
            grow[w][d] = gi[d];
            acc = fmaf(gi[d], cu_load(oi + d), acc);
        }
        D = cu_warp_sum(acc);
        li = lse[bh * t + i];
        if (lane == 0) dd[bh * t + i] = D;
    }
    float dq[FA_DPL];
    for (int c = 0; c < FA_DPL; c++) dq[c] = 0.0f;
    for (int64_t j0 = 0; j0 < t; j0 += CU_WARP) {
        __syncthreads();
        fa_stage(&ks[0][0], FA_HS + 1, k, ld, j0, t, hs);
        fa_stage(&vs[0][0], FA_HS + 1, v, ld, j0, t, hs);
        __syncthreads();
        if (i >= t) continue;
        float s = 0.0f, dp = 0.0f;
        for (int d = 0; d < hs; d++) {
            s = fmaf(qrow[w][d], ks[lane][d], s);
            dp = fmaf(grow[w][d], vs[lane][d], dp);
        }
        const float p = j0 + lane < t ? expf(s * scale - li) : 0.0f;
        const float ds = p * (dp - D);
        for (int j = 0; j < CU_WARP; j++) {
            const float dsj = __shfl_sync(0xffffffffu, ds, j);
            for (int c = 0; c < FA_DPL; c++) {
                const int d = lane + c * CU_WARP;
                if (d < hs) dq[c] = fmaf(dsj, ks[j][d], dq[c]);
            }
        }
    }
    if (i >= t) return;
    float *dqi = dqkv + (bi * t + i) * ld + h * hs;
    for (int c = 0; c < FA_DPL; c++) {
        const int d = lane + c * CU_WARP;
        if (d < hs) fa_out<ACC>(dqi + d, scale * dq[c]);
    }
}

/* Pass 2: dk_j and dv_j, with D from pass 1. */
template <typename S, bool ACC>
__global__ void __launch_bounds__(FA_THREADS)
    k_attn_fused_bwd_kv(float *dqkv, const float *dd, const float *dout, const float *lse, const S *qkv, int64_t t,
                        int nh, int hs, float scale) {
    __shared__ float qs[CU_WARP][FA_HS + 1];
    __shared__ float gs[CU_WARP][FA_HS + 1];
    __shared__ float krow[FA_ROWS][FA_HS];
    __shared__ float vrow[FA_ROWS][FA_HS];
    __shared__ float tl[CU_WARP], td[CU_WARP];
    const int64_t C = (int64_t)nh * hs, ld = 3 * C;
    const int64_t tiles = CU_CEIL_DIV(t, (int64_t)FA_ROWS), bh = blockIdx.x / tiles, bi = bh / nh, h = bh % nh;
    const int w = threadIdx.x / CU_WARP, lane = threadIdx.x % CU_WARP;
    const int64_t j = (int64_t)(blockIdx.x % tiles) * FA_ROWS + w;
    const S *q = qkv + bi * t * ld + h * hs, *k = q + C, *v = q + 2 * C;
    const float *g = dout + bi * t * C + h * hs;
    if (j < t)
        for (int d = lane; d < hs; d += CU_WARP) {
            krow[w][d] = cu_load(k + j * ld + d);
            vrow[w][d] = cu_load(v + j * ld + d);
        }
    float dk[FA_DPL], dv[FA_DPL];
    for (int c = 0; c < FA_DPL; c++) dk[c] = dv[c] = 0.0f;
    for (int64_t i0 = 0; i0 < t; i0 += CU_WARP) {
        __syncthreads();
        fa_stage(&qs[0][0], FA_HS + 1, q, ld, i0, t, hs);
        fa_stage(&gs[0][0], FA_HS + 1, g, C, i0, t, hs);
        if (threadIdx.x < CU_WARP) {
            const int64_t r = i0 + threadIdx.x;
            tl[threadIdx.x] = r < t ? lse[bh * t + r] : 0.0f;
            td[threadIdx.x] = r < t ? dd[bh * t + r] : 0.0f;
        }
        __syncthreads();
        if (j >= t) continue;
        float s = 0.0f, dp = 0.0f;
        for (int d = 0; d < hs; d++) {
            s = fmaf(qs[lane][d], krow[w][d], s);
            dp = fmaf(gs[lane][d], vrow[w][d], dp);
        }
        const float p = i0 + lane < t ? expf(s * scale - tl[lane]) : 0.0f;
        const float ds = p * (dp - td[lane]);
        for (int r = 0; r < CU_WARP; r++) {
            const float pr = __shfl_sync(0xffffffffu, p, r), dsr = __shfl_sync(0xffffffffu, ds, r);
            for (int c = 0; c < FA_DPL; c++) {
                const int d = lane + c * CU_WARP;
                if (d < hs) {
                    dv[c] = fmaf(pr, gs[r][d], dv[c]);
                    dk[c] = fmaf(dsr, qs[r][d], dk[c]);
                }
            }
        }
    }
    if (j >= t) return;
    float *dkj = dqkv + (bi * t + j) * ld + C + h * hs, *dvj = dkj + C;
    for (int c = 0; c < FA_DPL; c++) {
        const int d = lane + c * CU_WARP;
        if (d < hs) {
            fa_out<ACC>(dkj + d, scale * dk[c]);
            fa_out<ACC>(dvj + d, dv[c]);
        }
    }
}

template <typename S, typename O>
static ex_status fa_fwd(cu_ctx *ctx, O *out, float *lse, const S *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs,
                        float scale) {
    const int64_t rows = FA_THREADS / ctx->warp;
    CU_ARG(CU_CEIL_DIV(t, rows) * b * nh <= INT32_MAX,
           CU_VENDOR ": fused attention: batch x heads x row tiles = %lld x %lld is beyond its grid",
           (long long)(b * nh), (long long)CU_CEIL_DIV(t, rows));
    const unsigned grid = (unsigned)(CU_CEIL_DIV(t, rows) * b * nh); /* tiles fastest, then image x head */
    k_attn_fused_fwd<S, O><<<grid, FA_THREADS, 0, ctx->stream>>>(out, lse, qkv, t, (int)nh, (int)hs, scale);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

template <typename S, bool ACC>
static ex_status fa_bwd(cu_ctx *ctx, float *dqkv, const float *dout, const S *out, const float *lse, const S *qkv,
                        int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    const int64_t rows = FA_THREADS / ctx->warp;
    CU_ARG(CU_CEIL_DIV(t, rows) * b * nh <= INT32_MAX,
           CU_VENDOR ": fused attention: batch x heads x row tiles = %lld x %lld is beyond its grid",
           (long long)(b * nh), (long long)CU_CEIL_DIV(t, rows));
    void *scr = NULL;
    EX_CHECK(cu_scratch(ctx, (size_t)(b * nh * t) * sizeof(float), &scr));
    float *dd = (float *)scr;
    const unsigned grid = (unsigned)(CU_CEIL_DIV(t, rows) * b * nh); /* tiles fastest, then image x head */
    k_attn_fused_bwd_q<S, ACC>
        <<<grid, FA_THREADS, 0, ctx->stream>>>(dqkv, dd, dout, out, lse, qkv, t, (int)nh, (int)hs, scale);
    CU_LAUNCHED(ctx);
    k_attn_fused_bwd_kv<S, ACC>
        <<<grid, FA_THREADS, 0, ctx->stream>>>(dqkv, dd, dout, lse, qkv, t, (int)nh, (int)hs, scale);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

extern "C" {

int cu_attention_fused_fits(int64_t hs) { return hs >= 1 && hs <= CU_FUSED_MAX_HS; }

ex_status cu_attention_fused_fwd(cu_ctx *ctx, float *out, float *lse, const float *qkv, int64_t b, int64_t t,
                                 int64_t nh, int64_t hs, float scale) {
    return fa_fwd(ctx, out, lse, qkv, b, t, nh, hs, scale);
}

ex_status cu_attention_fused_bwd(cu_ctx *ctx, float *dqkv, const float *dout, const float *out, const float *lse,
                                 const float *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    return fa_bwd<float, true>(ctx, dqkv, dout, out, lse, qkv, b, t, nh, hs, scale);
}

ex_status cu_attention_fused_fwd16(cu_ctx *ctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b, int64_t t,
                                   int64_t nh, int64_t hs, float scale) {
    return fa_fwd(ctx, (cu_bf16 *)out, lse, (const cu_bf16 *)qkv, b, t, nh, hs, scale);
}

ex_status cu_attention_fused_bwd16(cu_ctx *ctx, float *dqkv, const float *dout, const uint16_t *out,
                                   const float *lse, const uint16_t *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs,
                                   float scale) {
    return fa_bwd<cu_bf16, false>(ctx, dqkv, dout, (const cu_bf16 *)out, lse, (const cu_bf16 *)qkv, b, t, nh, hs,
                                  scale);
}

} /* extern "C" */
