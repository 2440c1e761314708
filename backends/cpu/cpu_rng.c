/*
 * backends/cpu/cpu_rng.c — uniform, normal, dropout-mask and permutation draws on the shared
 * Philox-4x32-10 streams of explora/rng.h.
 *
 * Element i of a draw of n values uses the block at counter rng->offset + i;
 * afterwards rng->offset += n. Every element is a pure function of (key,
 * counter), so the values do not depend on the thread count (or backend).
 * A permutation is the stable argsort of n such uniforms (MAE's rule): indices
 * sorted by (value, index).
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "cpu_internal.h"

#define PAR(work) num_threads(ctx->threads) schedule(static) if ((work) > CPU_PAR_MIN / 16)

ex_status cpu_rng_uniform(void *vctx, float *out /* (n) */, int64_t n, float lo, float hi, ex_rng *rng) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && rng, "cpu: rng_uniform: bad arguments");
    CPU_ARG(lo <= hi, "cpu: rng_uniform: lo > hi");
    if (n == 0) return EX_OK;
    CPU_ARG(out, "cpu: rng_uniform: NULL output");
    const uint64_t key = rng->key, off = rng->offset;
    const float range = hi - lo;
#pragma omp parallel for PAR(n)
    for (int64_t i = 0; i < n; i++) {
        float x = lo + range * ex_rng_uniform_at(key, off, (uint64_t)i);
        /* rounding may reach hi; keep the interval half-open */
        out[i] = x < hi || lo == hi ? x : nextafterf(hi, lo);
    }
    rng->offset += (uint64_t)n;
    return EX_OK;
}

ex_status cpu_rng_dropout(void *vctx, float *out /* (n) */, int64_t n, float p, ex_rng *rng) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && rng, "cpu: rng_dropout: bad arguments");
    CPU_ARG(p >= 0.0f && p < 1.0f, "cpu: rng_dropout: p = %g is outside [0, 1)", (double)p);
    if (n == 0) return EX_OK;
    CPU_ARG(out, "cpu: rng_dropout: NULL output");
    const uint64_t key = rng->key, off = rng->offset;
    const float keep = 1.0f / (1.0f - p);
#pragma omp parallel for PAR(n)
    for (int64_t i = 0; i < n; i++) out[i] = ex_rng_uniform_at(key, off, (uint64_t)i) < p ? 0.0f : keep;
    rng->offset += (uint64_t)n;
    return EX_OK;
}

ex_status cpu_rng_normal(void *vctx, float *out /* (n) */, int64_t n, float mean, float std, ex_rng *rng) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && rng, "cpu: rng_normal: bad arguments");
    if (n == 0) return EX_OK;
    CPU_ARG(out, "cpu: rng_normal: NULL output");
    const uint64_t key = rng->key, off = rng->offset;
#pragma omp parallel for PAR(n)
    for (int64_t i = 0; i < n; i++) out[i] = mean + std * ex_rng_normal_at(key, off, (uint64_t)i);
    rng->offset += (uint64_t)n;
    return EX_OK;
}

typedef struct rng_key_idx {
    float u;
    int32_t i;
} rng_key_idx;

static int cmp_key_idx(const void *pa, const void *pb) {
    const rng_key_idx *a = pa, *b = pb;
    if (a->u != b->u) return a->u < b->u ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

ex_status cpu_rng_permutation(void *vctx, int32_t *out /* (n) */, int64_t n, ex_rng *rng) {
    cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && rng, "cpu: rng_permutation: bad arguments");
    CPU_ARG(n <= INT32_MAX, "cpu: rng_permutation: n = %lld does not fit int32 indices", (long long)n);
    if (n == 0) return EX_OK;
    CPU_ARG(out, "cpu: rng_permutation: NULL output");
    rng_key_idx *keys = NULL;
    EX_CHECK(cpu_scratch(ctx, (size_t)n * sizeof *keys, (void **)&keys));
    const uint64_t key = rng->key, off = rng->offset;
#pragma omp parallel for PAR(n)
    for (int64_t i = 0; i < n; i++) {
        keys[i].u = ex_rng_uniform_at(key, off, (uint64_t)i);
        keys[i].i = (int32_t)i;
    }
    qsort(keys, (size_t)n, sizeof *keys, cmp_key_idx);
    for (int64_t i = 0; i < n; i++) out[i] = keys[i].i;
    rng->offset += (uint64_t)n;
    return EX_OK;
}
