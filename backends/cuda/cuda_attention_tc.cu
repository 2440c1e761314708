/*
 * backends/cuda/cuda_attention_tc.cu — fused multi-head attention on tensor cores, forward and backward,
 * without any (t, t) matrix in memory: [backend] attention = fused_bf16 (bf16 tiles, NVIDIA sm_80+) or
 * fused_fp16 (fp16 tiles, sm_70+: the GPUs without bf16, with gemm_math = fp16 and loss scaling).
 *
 * Layout and contract as cuda_attention_fused.cu (timm): qkv (b, t, 3, nh, hs) fp32, out (b, t, nh*hs)
 * fp32, lse (b, nh, t) = log-sum-exp of each row of scale * q k^T, dqkv accumulated (+=). With bf16 tiles
 * the kernels also read qkv and write out as bf16 (cu_attention_tc_fwd16/bwd16: the attention slots of a
 * block that keeps its activations in bf16); the staged tiles are then the stored values as they are.
 *
 * The algorithm is FlashAttention-2's, with the tile products on tensor cores through WMMA
 * (16x16x16 bf16 or fp16 fragments, the element type T; fp32 accumulation) and everything between them
 * in shared memory, so
 * no code depends on how a fragment spreads over the lanes:
 *
 * Forward   a block owns FT_BQ query rows of one (image, head); q is rounded to bf16 once. For each
 *           tile of FT_BK keys: S = q k^T (tensor cores, fp32), then per row in fp32
 *           m' = max(m, max_j scale s_j), p_j = exp(scale s_j - m'), l = l e^(m - m') + sum_j p_j,
 *           O = O e^(m - m') (O in shared memory), then O += bf16(p) v (tensor cores).
 *           Finally out = O / l, lse = m + log l.
 * Backward  D_i = dO_i . O_i (fp32, one warp per row), then two kernels that each recompute
 *           p = exp(scale s - lse) and dS = p (dP - D) with dP = dO v^T:
 *           - a block per FT_BK2 keys: dV += bf16(p)^T dO, dK += bf16(dS)^T q (over all query tiles);
 *           - a block per FT_BQ queries: dQ += bf16(dS) k (over all key tiles).
 *           The gradients stay in accumulator fragments until the end; each output element is
 *           written by one thread in a fixed order: no atomics, bitwise reproducible.
 *
 * Numerics are those of bf16 (fp16) flash attention: q, k, v, dO, p and dS enter the products rounded
 * to T; the softmax statistics, the row sums and every accumulation are fp32. The parity suite
 * compares against the fp32 CPU reference with bf16 tolerances. fp16 tiles overflow past 65504: under
 * loss scaling that shows as a non-finite gradient, and the scaler skips the step and halves the scale.
 *
 * Head sizes: the multiples of 16 that cu_attention_tc_fits lists (16 to 128); others take the
 * fp32 fused kernel. Shared memory is dynamic (up to ~74 KB for hs = 128, above the 48 KB default:
 * each launch raises the kernel's limit).
 *
 * Not compiled in the HIP build (WMMA is NVIDIA's); the HIP backend refuses both settings. A kernel's
 * body exists only for the architectures its type runs on (ft_arch_ok), so a build for sm_75 still
 * compiles the bf16 instantiations (as empty kernels the host never launches there).
 */
#include "cuda_common.cuh"

#ifndef EXPLORA_HIP

#include <mma.h>

#include <type_traits>

namespace wmma = nvcuda::wmma;

/* T from fp32, rounded to nearest even. */
__device__ __forceinline__ void ft_set(__nv_bfloat16 &d, float v) { d = __float2bfloat16_rn(v); }
__device__ __forceinline__ void ft_set(__half &d, float v) { d = __float2half_rn(v); }

/* Whether WMMA tiles of T exist on the architecture being compiled (false on the host pass). */
template <typename T> __host__ __device__ constexpr bool ft_arch_ok() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    return true;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    return std::is_same<T, __half>::value;
#else
    return false;
#endif
}

/* A tile kernel run on a device whose code was built without its tiles (the host checks cu_attention_tc_fits,
 * which reads the kernels' PTX architecture, so this is not expected): stop rather than leave the output unwritten. */
__device__ __forceinline__ void ft_no_tiles() {
#if defined(__CUDA_ARCH__)
    __trap();
#endif
}

#define FT_THREADS 128 /* 4 warps */
#define FT_WARPS (FT_THREADS / 32)
#define FT_BQ 32  /* query rows per block (forward, dQ) */
#define FT_BK 64  /* keys per tile in the forward */
#define FT_BK2 32 /* keys per block (dK, dV) and per tile (dQ) in the backward */
#define FT_PADH 8 /* bf16 row padding: WMMA wants a leading dimension that is a multiple of 8 */
#define FT_PADF 4 /* fp32 row padding: a multiple of 4 */

/* Shared-memory carving: each buffer starts at a multiple of 128 bytes (WMMA needs 32). */
__host__ __device__ constexpr int ft_round(int bytes) { return (bytes + 127) / 128 * 128; }

template <int HS> struct ft_fwd_smem {
    static constexpr int q = 0;                                                    /* bf16 [BQ][HS+PADH] */
    static constexpr int k = q + ft_round(FT_BQ * (HS + FT_PADH) * 2);             /* bf16 [BK][HS+PADH] */
    static constexpr int v = k + ft_round(FT_BK * (HS + FT_PADH) * 2);             /* bf16 [BK][HS+PADH] */
    static constexpr int s = v + ft_round(FT_BK * (HS + FT_PADH) * 2);             /* f32 [BQ][BK+PADF] */
    static constexpr int p = s + ft_round(FT_BQ * (FT_BK + FT_PADF) * 4);          /* bf16 [BQ][BK+PADH] */
    static constexpr int o = p + ft_round(FT_BQ * (FT_BK + FT_PADH) * 2);          /* f32 [BQ][HS+PADF] */
    static constexpr int m = o + ft_round(FT_BQ * (HS + FT_PADF) * 4);             /* f32 [BQ] */
    static constexpr int l = m + ft_round(FT_BQ * 4);                              /* f32 [BQ] */
    static constexpr int bytes = l + ft_round(FT_BQ * 4);
};

/* The backward kernels: R rows of the side the block owns (queries for dQ, keys for dK/dV) and
 * tiles of C rows of the other side; both FT_BQ = FT_BK2 = 32 here. */
template <int HS> struct ft_bwd_smem {
    static constexpr int own0 = 0;                                                 /* bf16 [32][HS+PADH] */
    static constexpr int own1 = own0 + ft_round(32 * (HS + FT_PADH) * 2);          /* bf16 [32][HS+PADH] */
    static constexpr int oth0 = own1 + ft_round(32 * (HS + FT_PADH) * 2);          /* bf16 [32][HS+PADH] */
    static constexpr int oth1 = oth0 + ft_round(32 * (HS + FT_PADH) * 2);          /* bf16 [32][HS+PADH] */
    static constexpr int s = oth1 + ft_round(32 * (HS + FT_PADH) * 2);             /* f32 [32][32+PADF] */
    static constexpr int dp = s + ft_round(32 * (32 + FT_PADF) * 4);               /* f32 [32][32+PADF] */
    static constexpr int p = dp + ft_round(32 * (32 + FT_PADF) * 4);               /* bf16 [32][32+PADH] */
    static constexpr int ds = p + ft_round(32 * (32 + FT_PADH) * 2);               /* bf16 [32][32+PADH] */
    static constexpr int lse = ds + ft_round(32 * (32 + FT_PADH) * 2);             /* f32 [32] */
    static constexpr int dd = lse + ft_round(32 * 4);                              /* f32 [32] */
    static constexpr int loop_bytes = dd + ft_round(32 * 4);
    /* after the loop: two fp32 [32][HS+PADF] staging tiles for the results, over own1 .. */
    static constexpr int stage0 = own1;
    static constexpr int stage1 = stage0 + ft_round(32 * (HS + FT_PADF) * 4);
    static constexpr int stage_end = stage1 + ft_round(32 * (HS + FT_PADF) * 4);
    static constexpr int bytes = loop_bytes > stage_end ? loop_bytes : stage_end;
};

extern __shared__ __align__(128) unsigned char ft_smem[];

/* Global-memory element S (fp32, or bf16 for activations a block keeps in bf16) as fp32, exactly. */
__device__ __forceinline__ float ft_get(const float *p) { return *p; }
__device__ __forceinline__ float ft_get(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
/* Store an fp32 result as the output's element type (bf16: rounded to nearest even). */
__device__ __forceinline__ void ft_put(float *p, float v) { *p = v; }
__device__ __forceinline__ void ft_put(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* dst [rows][HS + PADH] of T = rows r0 .. r0 + rows - 1 of the (t, hs) matrix of S at src (row stride ld),
 * rounded to nearest even (exact when S is T); rows at or past t are zero. */
template <typename T, int HS, typename S>
__device__ __forceinline__ void ft_stage(T *dst, const S *src, int64_t ld, int64_t r0, int64_t t, int rows) {
    for (int e = threadIdx.x; e < rows * HS; e += FT_THREADS) {
        const int r = e / HS, d = e % HS;
        ft_set(dst[r * (HS + FT_PADH) + d], r0 + r < t ? ft_get(src + (r0 + r) * ld + d) : 0.0f);
    }
}

/* acc (16x16 tile) = sum over kk of A[16 x 16] B[16 x 16] with A row-major at a (lda) and B at b (ldb),
 * B column-major when BT (so B = (rows of b)^T), else row-major; kk steps 16 along the inner dimension. */
template <typename LayoutA, typename LayoutB, typename T>
__device__ __forceinline__ void ft_mma(wmma::fragment<wmma::accumulator, 16, 16, 16, float> &acc, const T *a, int lda,
                                       int a_step, const T *b, int ldb, int b_step, int steps) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, LayoutA> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LayoutB> fb;
    for (int kk = 0; kk < steps; kk++) {
        wmma::load_matrix_sync(fa, a + kk * a_step, lda);
        wmma::load_matrix_sync(fb, b + kk * b_step, ldb);
        wmma::mma_sync(acc, fa, fb, acc);
    }
}

/* ------------------------------------------------------------------------------
 * Forward
 * ------------------------------------------------------------------------------ */

template <typename T, int HS, typename S, typename O>
__device__ __forceinline__ void ft_fwd_body(O *out, float *lse, const S *qkv, int64_t t, int nh, float scale) {
    typedef ft_fwd_smem<HS> L;
    constexpr int LH = HS + FT_PADH, LS = FT_BK + FT_PADF, LP = FT_BK + FT_PADH, LO = HS + FT_PADF;
    T *qs = (T *)(ft_smem + L::q), *ks = (T *)(ft_smem + L::k), *vs = (T *)(ft_smem + L::v);
    float *ss = (float *)(ft_smem + L::s), *os = (float *)(ft_smem + L::o);
    T *ps = (T *)(ft_smem + L::p);
    float *mrow = (float *)(ft_smem + L::m), *lrow = (float *)(ft_smem + L::l);
    const int64_t C = (int64_t)nh * HS, ld = 3 * C;
    const int64_t tiles = CU_CEIL_DIV(t, (int64_t)FT_BQ), bh = blockIdx.x / tiles, bi = bh / nh, h = bh % nh,
                  i0 = (int64_t)(blockIdx.x % tiles) * FT_BQ;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const S *q = qkv + bi * t * ld + h * HS, *k = q + C, *v = q + 2 * C;
    ft_stage<T, HS>(qs, q, ld, i0, t, FT_BQ);
    for (int e = threadIdx.x; e < FT_BQ * LO; e += FT_THREADS) os[e] = 0.0f;
    for (int r = threadIdx.x; r < FT_BQ; r += FT_THREADS) {
        mrow[r] = -INFINITY;
        lrow[r] = 0.0f;
    }
    for (int64_t j0 = 0; j0 < t; j0 += FT_BK) {
        __syncthreads(); /* the previous tile's P and V are consumed */
        ft_stage<T, HS>(ks, k, ld, j0, t, FT_BK);
        ft_stage<T, HS>(vs, v, ld, j0, t, FT_BK);
        __syncthreads();
        /* S (BQ x BK) = q k^T: (BQ/16) x (BK/16) tiles over the warps */
        for (int tix = warp; tix < (FT_BQ / 16) * (FT_BK / 16); tix += FT_WARPS) {
            const int ti = tix / (FT_BK / 16), tj = tix % (FT_BK / 16);
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            ft_mma<wmma::row_major, wmma::col_major>(acc, qs + ti * 16 * LH, LH, 16, ks + tj * 16 * LH, LH, 16,
                                                     HS / 16);
            wmma::store_matrix_sync(ss + ti * 16 * LS + tj * 16, acc, LS, wmma::mem_row_major);
        }
        __syncthreads();
        /* online softmax, a warp per row: P = bf16(exp(scale s - m')), O rescaled */
        for (int r = warp; r < FT_BQ; r += FT_WARPS) {
            float mx = -INFINITY;
            for (int j = lane; j < FT_BK; j += 32)
                if (j0 + j < t) mx = fmaxf(mx, ss[r * LS + j] * scale);
            const float mo = mrow[r], mn = fmaxf(mo, cu_warp_max(mx));
            float sum = 0.0f;
            for (int j = lane; j < FT_BK; j += 32) {
                const float pj = j0 + j < t ? expf(ss[r * LS + j] * scale - mn) : 0.0f;
                sum += pj;
                ft_set(ps[r * LP + j], pj);
            }
            sum = cu_warp_sum(sum);
            const float corr = expf(mo - mn); /* 0 on the first tile (mo = -inf) */
            for (int d = lane; d < HS; d += 32) os[r * LO + d] *= corr;
            if (lane == 0) {
                lrow[r] = lrow[r] * corr + sum;
                mrow[r] = mn;
            }
        }
        __syncthreads();
        /* O (BQ x HS) += P V */
        for (int tix = warp; tix < (FT_BQ / 16) * (HS / 16); tix += FT_WARPS) {
            const int ti = tix / (HS / 16), tn = tix % (HS / 16);
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, os + ti * 16 * LO + tn * 16, LO, wmma::mem_row_major);
            ft_mma<wmma::row_major, wmma::row_major>(acc, ps + ti * 16 * LP, LP, 16, vs + tn * 16, LH, 16 * LH,
                                                     FT_BK / 16);
            wmma::store_matrix_sync(os + ti * 16 * LO + tn * 16, acc, LO, wmma::mem_row_major);
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < FT_BQ * HS; e += FT_THREADS) {
        const int r = e / HS, d = e % HS;
        if (i0 + r < t) ft_put(out + (bi * t + i0 + r) * C + h * HS + d, os[r * LO + d] / lrow[r]);
    }
    for (int r = threadIdx.x; r < FT_BQ; r += FT_THREADS)
        if (i0 + r < t) lse[bh * t + i0 + r] = mrow[r] + logf(lrow[r]);
}

template <typename T, int HS, typename S, typename O>
__global__ void __launch_bounds__(FT_THREADS)
    k_attn_tc_fwd(O *out, float *lse, const S *qkv, int64_t t, int nh, float scale) {
    if constexpr (ft_arch_ok<T>()) ft_fwd_body<T, HS, S, O>(out, lse, qkv, t, nh, scale);
    else ft_no_tiles();
}

/* ------------------------------------------------------------------------------
 * Backward
 * ------------------------------------------------------------------------------ */

/* dd (b, nh, t) = dO_i . O_i, a warp per row (O fp32, or the bf16 output a block keeps). */
template <typename O>
__global__ void k_attn_tc_rowdot(float *dd, const float *dout, const O *out, int64_t rows, int64_t t, int nh,
                                 int hs) {
    const int64_t C = (int64_t)nh * hs;
    const int lane = threadIdx.x % 32;
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; r < rows;
         r += (int64_t)gridDim.x * (blockDim.x / 32)) {
        const int64_t bh = r / t, i = r % t, bi = bh / nh, h = bh % nh;
        const float *g = dout + (bi * t + i) * C + h * hs;
        const O *o = out + (bi * t + i) * C + h * hs;
        float acc = 0.0f;
        for (int d = lane; d < hs; d += 32) acc = fmaf(g[d], ft_get(o + d), acc);
        acc = cu_warp_sum(acc);
        if (lane == 0) dd[r] = acc;
    }
}

/* ss (32 x 32) = A B^T and dps (32 x 32) = A2 B2^T for [32][HS+PADH] bf16 row-major operands: (queries q, dO)
 * against (keys k, v); a 16x16 tile of each per warp. */
template <typename T, int HS>
__device__ __forceinline__ void ft_scores(float *ss, float *dps, const T *qs, const T *gs, const T *ks, const T *vs) {
    constexpr int LH = HS + FT_PADH, LS = 32 + FT_PADF;
    const int warp = threadIdx.x / 32, ti = warp / 2, tj = warp % 2; /* 4 warps: the 2 x 2 tiles */
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    ft_mma<wmma::row_major, wmma::col_major>(acc, qs + ti * 16 * LH, LH, 16, ks + tj * 16 * LH, LH, 16, HS / 16);
    wmma::store_matrix_sync(ss + ti * 16 * LS + tj * 16, acc, LS, wmma::mem_row_major);
    wmma::fill_fragment(acc, 0.0f);
    ft_mma<wmma::row_major, wmma::col_major>(acc, gs + ti * 16 * LH, LH, 16, vs + tj * 16 * LH, LH, 16, HS / 16);
    wmma::store_matrix_sync(dps + ti * 16 * LS + tj * 16, acc, LS, wmma::mem_row_major);
}

/* p = exp(scale s - lse_i) (0 outside t), dS = p (dP - D_i), both rounded to T, for the 32 x 32 tile of
 * queries i0.. and keys j0.. (ss, dps indexed [query][key]). */
template <typename T>
__device__ __forceinline__ void ft_probs(T *ps, T *dss, const float *ss, const float *dps, const float *lse_s,
                                         const float *dd_s, int64_t i0, int64_t j0, int64_t t, float scale) {
    constexpr int LS = 32 + FT_PADF, LP = 32 + FT_PADH;
    for (int e = threadIdx.x; e < 32 * 32; e += FT_THREADS) {
        const int i = e / 32, j = e % 32;
        const float p = (i0 + i < t && j0 + j < t) ? expf(ss[i * LS + j] * scale - lse_s[i]) : 0.0f;
        const float ds = p * (dps[i * LS + j] - dd_s[i]);
        if (ps) ft_set(ps[i * LP + j], p);
        ft_set(dss[i * LP + j], ds);
    }
}

/* Stage 32 rows of lse and D (b, nh, t) from r0 (zero past t). */
__device__ __forceinline__ void ft_stage_rows(float *lse_s, float *dd_s, const float *lse, const float *dd, int64_t bh,
                                              int64_t r0, int64_t t) {
    for (int r = threadIdx.x; r < 32; r += FT_THREADS) {
        lse_s[r] = r0 + r < t ? lse[bh * t + r0 + r] : 0.0f;
        dd_s[r] = r0 + r < t ? dd[bh * t + r0 + r] : 0.0f;
    }
}

/* Store a result into dqkv: accumulate (the fp32 slot) or write (the bf16 slot). */
template <bool ACC> __device__ __forceinline__ void ft_out(float *p, float v) {
    if (ACC) *p += v;
    else *p = v;
}

/* A block per FT_BK2 keys: dk_j += scale sum_i dS_ij q_i, dv_j += sum_i p_ij dO_i (or = when !ACC). */
template <typename T, int HS, typename S, bool ACC>
__device__ __forceinline__ void ft_bwd_kv_body(float *dqkv, const float *dd, const float *dout, const float *lse,
                                               const S *qkv, int64_t t, int nh, float scale) {
    typedef ft_bwd_smem<HS> L;
    constexpr int LH = HS + FT_PADH, LP = 32 + FT_PADH, LO = HS + FT_PADF;
    constexpr int TILES = 2 * (HS / 16), PER_WARP = (TILES + FT_WARPS - 1) / FT_WARPS;
    T *ks = (T *)(ft_smem + L::own0), *vs = (T *)(ft_smem + L::own1);
    T *qs = (T *)(ft_smem + L::oth0), *gs = (T *)(ft_smem + L::oth1);
    float *ss = (float *)(ft_smem + L::s), *dps = (float *)(ft_smem + L::dp);
    T *ps = (T *)(ft_smem + L::p), *dss = (T *)(ft_smem + L::ds);
    float *lse_s = (float *)(ft_smem + L::lse), *dd_s = (float *)(ft_smem + L::dd);
    const int64_t C = (int64_t)nh * HS, ld = 3 * C;
    const int64_t tiles = CU_CEIL_DIV(t, (int64_t)FT_BK2), bh = blockIdx.x / tiles, bi = bh / nh, h = bh % nh,
                  j0 = (int64_t)(blockIdx.x % tiles) * FT_BK2;
    const int warp = threadIdx.x / 32;
    const S *q = qkv + bi * t * ld + h * HS, *k = q + C, *v = q + 2 * C;
    const float *g = dout + bi * t * C + h * HS;
    ft_stage<T, HS>(ks, k, ld, j0, t, 32);
    ft_stage<T, HS>(vs, v, ld, j0, t, 32);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> dk[PER_WARP], dv[PER_WARP];
    for (int c = 0; c < PER_WARP; c++) {
        wmma::fill_fragment(dk[c], 0.0f);
        wmma::fill_fragment(dv[c], 0.0f);
    }
    for (int64_t i0 = 0; i0 < t; i0 += 32) {
        __syncthreads(); /* the previous query tile is consumed */
        ft_stage<T, HS>(qs, q, ld, i0, t, 32);
        ft_stage<T, HS>(gs, g, C, i0, t, 32);
        ft_stage_rows(lse_s, dd_s, lse, dd, bh, i0, t);
        __syncthreads();
        ft_scores<T, HS>(ss, dps, qs, gs, ks, vs);
        __syncthreads();
        ft_probs(ps, dss, ss, dps, lse_s, dd_s, i0, j0, t, scale);
        __syncthreads();
        /* dV (keys x HS) += P^T dO, dK += dS^T q: A = (queries x keys)^T read column-major */
        for (int c = 0; c < PER_WARP; c++) {
            const int tix = warp + c * FT_WARPS;
            if (tix >= TILES) break;
            const int ti = tix / (HS / 16), tn = tix % (HS / 16);
            ft_mma<wmma::col_major, wmma::row_major>(dv[c], ps + ti * 16, LP, 16 * LP, gs + tn * 16, LH, 16 * LH, 2);
            ft_mma<wmma::col_major, wmma::row_major>(dk[c], dss + ti * 16, LP, 16 * LP, qs + tn * 16, LH, 16 * LH, 2);
        }
    }
    __syncthreads(); /* the staging tiles overlay the loop's buffers */
    float *sk = (float *)(ft_smem + L::stage0), *sv = (float *)(ft_smem + L::stage1);
    for (int c = 0; c < PER_WARP; c++) {
        const int tix = warp + c * FT_WARPS;
        if (tix >= TILES) break;
        const int ti = tix / (HS / 16), tn = tix % (HS / 16);
        wmma::store_matrix_sync(sk + ti * 16 * LO + tn * 16, dk[c], LO, wmma::mem_row_major);
        wmma::store_matrix_sync(sv + ti * 16 * LO + tn * 16, dv[c], LO, wmma::mem_row_major);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < 32 * HS; e += FT_THREADS) {
        const int r = e / HS, d = e % HS;
        if (j0 + r >= t) continue;
        float *row = dqkv + (bi * t + j0 + r) * ld + h * HS + d;
        ft_out<ACC>(row + C, scale * sk[r * LO + d]);
        ft_out<ACC>(row + 2 * C, sv[r * LO + d]);
    }
}

template <typename T, int HS, typename S, bool ACC>
__global__ void __launch_bounds__(FT_THREADS)
    k_attn_tc_bwd_kv(float *dqkv, const float *dd, const float *dout, const float *lse, const S *qkv, int64_t t,
                     int nh, float scale) {
    if constexpr (ft_arch_ok<T>()) ft_bwd_kv_body<T, HS, S, ACC>(dqkv, dd, dout, lse, qkv, t, nh, scale);
    else ft_no_tiles();
}

/* A block per FT_BQ queries: dq_i += scale sum_j dS_ij k_j (or = when !ACC). */
template <typename T, int HS, typename S, bool ACC>
__device__ __forceinline__ void ft_bwd_q_body(float *dqkv, const float *dd, const float *dout, const float *lse,
                                              const S *qkv, int64_t t, int nh, float scale) {
    typedef ft_bwd_smem<HS> L;
    constexpr int LH = HS + FT_PADH, LP = 32 + FT_PADH, LO = HS + FT_PADF;
    constexpr int TILES = 2 * (HS / 16), PER_WARP = (TILES + FT_WARPS - 1) / FT_WARPS;
    T *qs = (T *)(ft_smem + L::own0), *gs = (T *)(ft_smem + L::own1);
    T *ks = (T *)(ft_smem + L::oth0), *vs = (T *)(ft_smem + L::oth1);
    float *ss = (float *)(ft_smem + L::s), *dps = (float *)(ft_smem + L::dp);
    T *dss = (T *)(ft_smem + L::ds);
    float *lse_s = (float *)(ft_smem + L::lse), *dd_s = (float *)(ft_smem + L::dd);
    const int64_t C = (int64_t)nh * HS, ld = 3 * C;
    const int64_t tiles = CU_CEIL_DIV(t, (int64_t)FT_BQ), bh = blockIdx.x / tiles, bi = bh / nh, h = bh % nh,
                  i0 = (int64_t)(blockIdx.x % tiles) * FT_BQ;
    const int warp = threadIdx.x / 32;
    const S *q = qkv + bi * t * ld + h * HS, *k = q + C, *v = q + 2 * C;
    const float *g = dout + bi * t * C + h * HS;
    ft_stage<T, HS>(qs, q, ld, i0, t, 32);
    ft_stage<T, HS>(gs, g, C, i0, t, 32);
    ft_stage_rows(lse_s, dd_s, lse, dd, bh, i0, t);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> dq[PER_WARP];
    for (int c = 0; c < PER_WARP; c++) wmma::fill_fragment(dq[c], 0.0f);
    for (int64_t j0 = 0; j0 < t; j0 += FT_BK2) {
        __syncthreads(); /* the previous key tile is consumed (and the block's rows staged, on the first pass) */
        ft_stage<T, HS>(ks, k, ld, j0, t, 32);
        ft_stage<T, HS>(vs, v, ld, j0, t, 32);
        __syncthreads();
        ft_scores<T, HS>(ss, dps, qs, gs, ks, vs);
        __syncthreads();
        ft_probs<T>(NULL, dss, ss, dps, lse_s, dd_s, i0, j0, t, scale);
        __syncthreads();
        /* dQ (queries x HS) += dS K */
        for (int c = 0; c < PER_WARP; c++) {
            const int tix = warp + c * FT_WARPS;
            if (tix >= TILES) break;
            const int ti = tix / (HS / 16), tn = tix % (HS / 16);
            ft_mma<wmma::row_major, wmma::row_major>(dq[c], dss + ti * 16 * LP, LP, 16, ks + tn * 16, LH, 16 * LH, 2);
        }
    }
    __syncthreads();
    float *sq = (float *)(ft_smem + L::stage0);
    for (int c = 0; c < PER_WARP; c++) {
        const int tix = warp + c * FT_WARPS;
        if (tix >= TILES) break;
        const int ti = tix / (HS / 16), tn = tix % (HS / 16);
        wmma::store_matrix_sync(sq + ti * 16 * LO + tn * 16, dq[c], LO, wmma::mem_row_major);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < 32 * HS; e += FT_THREADS) {
        const int r = e / HS, d = e % HS;
        if (i0 + r < t) ft_out<ACC>(dqkv + (bi * t + i0 + r) * ld + h * HS + d, scale * sq[r * LO + d]);
    }
}

template <typename T, int HS, typename S, bool ACC>
__global__ void __launch_bounds__(FT_THREADS)
    k_attn_tc_bwd_q(float *dqkv, const float *dd, const float *dout, const float *lse, const S *qkv, int64_t t,
                    int nh, float scale) {
    if constexpr (ft_arch_ok<T>()) ft_bwd_q_body<T, HS, S, ACC>(dqkv, dd, dout, lse, qkv, t, nh, scale);
    else ft_no_tiles();
}

/* ------------------------------------------------------------------------------
 * Launchers
 * ------------------------------------------------------------------------------ */

template <typename T, int HS, typename S, typename O>
static ex_status ft_fwd(cu_ctx *ctx, O *out, float *lse, const S *qkv, int64_t b, int64_t t, int64_t nh,
                        float scale) {
    const int smem = ft_fwd_smem<HS>::bytes;
    CU_TRY(ctx,
           cudaFuncSetAttribute(k_attn_tc_fwd<T, HS, S, O>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    const unsigned grid = (unsigned)(CU_CEIL_DIV(t, (int64_t)FT_BQ) * b * nh);
    k_attn_tc_fwd<T, HS, S, O><<<grid, FT_THREADS, smem, ctx->stream>>>(out, lse, qkv, t, (int)nh, scale);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

template <typename T, int HS, typename S, bool ACC = true>
static ex_status ft_bwd(cu_ctx *ctx, float *dqkv, const float *dd, const float *dout, const float *lse,
                        const S *qkv, int64_t b, int64_t t, int64_t nh, float scale) {
    const int smem = ft_bwd_smem<HS>::bytes;
    const cudaFuncAttribute attr = cudaFuncAttributeMaxDynamicSharedMemorySize;
    CU_TRY(ctx, cudaFuncSetAttribute(k_attn_tc_bwd_kv<T, HS, S, ACC>, attr, smem));
    CU_TRY(ctx, cudaFuncSetAttribute(k_attn_tc_bwd_q<T, HS, S, ACC>, attr, smem));
    const unsigned gk = (unsigned)(CU_CEIL_DIV(t, (int64_t)FT_BK2) * b * nh);
    k_attn_tc_bwd_kv<T, HS, S, ACC>
        <<<gk, FT_THREADS, smem, ctx->stream>>>(dqkv, dd, dout, lse, qkv, t, (int)nh, scale);
    CU_LAUNCHED(ctx);
    const unsigned gq = (unsigned)(CU_CEIL_DIV(t, (int64_t)FT_BQ) * b * nh);
    k_attn_tc_bwd_q<T, HS, S, ACC>
        <<<gq, FT_THREADS, smem, ctx->stream>>>(dqkv, dd, dout, lse, qkv, t, (int)nh, scale);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

/* One block per (image, head, tile), tiles fastest, on the grid's x axis (2^31 - 1 blocks). */
static inline int ft_grid_ok(int64_t b, int64_t t, int64_t nh) {
    const int64_t tq = CU_CEIL_DIV(t, (int64_t)FT_BQ), tk = CU_CEIL_DIV(t, (int64_t)FT_BK2);
    return (tq > tk ? tq : tk) * b * nh <= INT32_MAX; /* the forward and dQ grids, and the dK/dV grid */
}

/* The head sizes with a compiled kernel. */
#define FT_HEAD_SIZES(X) X(16) X(32) X(48) X(64) X(80) X(96) X(128)

/* dd (b, nh, t) = dO . O into the general scratch. */
template <typename O>
static ex_status ft_rowdot(cu_ctx *ctx, float **dd, const float *dout, const O *out, int64_t b, int64_t t, int64_t nh,
                           int64_t hs) {
    void *scr = NULL;
    EX_CHECK(cu_scratch(ctx, (size_t)(b * nh * t) * sizeof(float), &scr));
    *dd = (float *)scr;
    const int64_t rows = b * nh * t;
    const int64_t blocks = CU_CEIL_DIV(rows, (int64_t)(CU_THREADS / 32));
    k_attn_tc_rowdot<O><<<(unsigned)(blocks < CU_MAX_BLOCKS ? blocks : CU_MAX_BLOCKS), CU_THREADS, 0, ctx->stream>>>(
        *dd, dout, out, rows, t, (int)nh, (int)hs);
    CU_LAUNCHED(ctx);
    return EX_OK;
}

extern "C" {

int cu_attention_tc_usable(const cu_ctx *ctx) {
    const int fp16 = ctx->attn_fused == 3;
    if (ctx->cc_major < (fp16 ? 7 : 8)) return 0;
    /* the code the device runs was compiled from PTX of this architecture: below sm_80 (sm_70 for fp16) the
     * kernels have no tiles (ft_arch_ok), e.g. an sm_75-only build JIT-compiled on an A100 */
    struct cudaFuncAttributes fa;
    const cudaError_t e = fp16 ? cudaFuncGetAttributes(&fa, k_attn_tc_fwd<__half, 64, float, float>)
                               : cudaFuncGetAttributes(&fa, k_attn_tc_fwd<__nv_bfloat16, 64, float, float>);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    /* 0: not reported (trust the device's compute capability; a kernel without tiles traps, ft_no_tiles) */
    return fa.ptxVersion == 0 || fa.ptxVersion >= (fp16 ? 70 : 80);
}

int cu_attention_tc_fits(const cu_ctx *ctx, int64_t hs) {
    if (!ctx->tc_usable) return 0;
    int bytes = 0;
    switch (hs) {
#define FT_CASE(H)                                                                                                     \
    case H:                                                                                                            \
        bytes = ft_fwd_smem<H>::bytes > ft_bwd_smem<H>::bytes ? ft_fwd_smem<H>::bytes : ft_bwd_smem<H>::bytes;         \
        break;
        FT_HEAD_SIZES(FT_CASE)
#undef FT_CASE
    default:
        return 0;
    }
    /* the shared memory a block may opt into (64 KiB on sm_75, 163 KiB on sm_80, 227 KiB on sm_90): hs = 128 in
     * fp16 needs 72 KiB, so a T4 takes the fp32 kernel for it */
    return bytes <= ctx->smem_optin;
}

ex_status cu_attention_tc_fwd(cu_ctx *ctx, float *out, float *lse, const float *qkv, int64_t b, int64_t t, int64_t nh,
                              int64_t hs, float scale) {
    CU_ARG(ft_grid_ok(b, t, nh), CU_VENDOR ": tensor-core attention: batch x heads x tiles = %lld x %lld is beyond its grid",
           (long long)(b * nh), (long long)CU_CEIL_DIV(t, (int64_t)FT_BK2));
    switch (hs) {
#define FT_CASE(H)                                                                                                     \
    case H:                                                                                                            \
        return ctx->attn_fused == 3 ? ft_fwd<__half, H>(ctx, out, lse, qkv, b, t, nh, scale)                           \
                                    : ft_fwd<__nv_bfloat16, H>(ctx, out, lse, qkv, b, t, nh, scale);
        FT_HEAD_SIZES(FT_CASE)
#undef FT_CASE
    default:
        return EX_E_INTERNAL;
    }
}

ex_status cu_attention_tc_bwd(cu_ctx *ctx, float *dqkv, const float *dout, const float *out, const float *lse,
                              const float *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    CU_ARG(ft_grid_ok(b, t, nh), CU_VENDOR ": tensor-core attention: batch x heads x tiles = %lld x %lld is beyond its grid",
           (long long)(b * nh), (long long)CU_CEIL_DIV(t, (int64_t)FT_BK2));
    float *dd = NULL;
    EX_CHECK(ft_rowdot(ctx, &dd, dout, out, b, t, nh, hs));
    switch (hs) {
#define FT_CASE(H)                                                                                                     \
    case H:                                                                                                            \
        return ctx->attn_fused == 3 ? ft_bwd<__half, H>(ctx, dqkv, dd, dout, lse, qkv, b, t, nh, scale)                \
                                    : ft_bwd<__nv_bfloat16, H>(ctx, dqkv, dd, dout, lse, qkv, b, t, nh, scale);
        FT_HEAD_SIZES(FT_CASE)
#undef FT_CASE
    default:
        return EX_E_INTERNAL;
    }
}

/* bf16 tiles: attention = fused_bf16, and cudnn for the shapes cuDNN does not take (its documented fallback). */
int cu_attention_tc_fits16(const cu_ctx *ctx, int64_t hs) {
    return (ctx->attn_fused == 2 || ctx->attn_fused == 4) && cu_attention_tc_fits(ctx, hs);
}

ex_status cu_attention_tc_fwd16(cu_ctx *ctx, uint16_t *out, float *lse, const uint16_t *qkv, int64_t b, int64_t t,
                                int64_t nh, int64_t hs, float scale) {
    CU_ARG(ft_grid_ok(b, t, nh), CU_VENDOR ": tensor-core attention: batch x heads x tiles = %lld x %lld is beyond its grid",
           (long long)(b * nh), (long long)CU_CEIL_DIV(t, (int64_t)FT_BK2));
    __nv_bfloat16 *o = (__nv_bfloat16 *)out;
    const __nv_bfloat16 *q = (const __nv_bfloat16 *)qkv;
    switch (hs) {
#define FT_CASE(H)                                                                                                     \
    case H:                                                                                                            \
        return ft_fwd<__nv_bfloat16, H>(ctx, o, lse, q, b, t, nh, scale);
        FT_HEAD_SIZES(FT_CASE)
#undef FT_CASE
    default:
        return EX_E_INTERNAL;
    }
}

ex_status cu_attention_tc_bwd16(cu_ctx *ctx, float *dqkv, const float *dout, const uint16_t *out, const float *lse,
                                const uint16_t *qkv, int64_t b, int64_t t, int64_t nh, int64_t hs, float scale) {
    CU_ARG(ft_grid_ok(b, t, nh), CU_VENDOR ": tensor-core attention: batch x heads x tiles = %lld x %lld is beyond its grid",
           (long long)(b * nh), (long long)CU_CEIL_DIV(t, (int64_t)FT_BK2));
    float *dd = NULL;
    EX_CHECK(ft_rowdot(ctx, &dd, dout, (const __nv_bfloat16 *)out, b, t, nh, hs));
    const __nv_bfloat16 *q = (const __nv_bfloat16 *)qkv;
    switch (hs) {
#define FT_CASE(H)                                                                                                     \
    case H:                                                                                                            \
        return ft_bwd<__nv_bfloat16, H, __nv_bfloat16, false>(ctx, dqkv, dd, dout, lse, q, b, t, nh, scale);
        FT_HEAD_SIZES(FT_CASE)
#undef FT_CASE
    default:
        return EX_E_INTERNAL;
    }
}

} /* extern "C" */

#endif /* !EXPLORA_HIP */
