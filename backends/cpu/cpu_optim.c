/*
 * backends/cpu/cpu_optim.c — the AdamW step and the EMA (teacher) update.
 *
 * AdamW follows torch.optim.AdamW (single-tensor path, fp32 state):
 *   p *= 1 - lr*wd
 *   m = b1*m + (1-b1)*g;   v = b2*v + (1-b2)*g^2
 *   p -= (lr / (1 - b1^step)) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)
 * with the bias corrections computed once per call in double.
 */
#include <math.h>

#include "cpu_internal.h"

#define PAR(work) num_threads(ctx->threads) schedule(static) if ((work) > CPU_PAR_MIN)

ex_status cpu_adamw(void *vctx, float *p /* (n) */, const float *g /* (n) */, float *m /* (n) */,
                    float *v /* (n) */, int64_t n, const ex_adamw_params *h) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(h && n >= 0, "cpu: adamw: bad arguments");
    CPU_ARG(h->step >= 1, "cpu: adamw: step must be >= 1 (got %lld)", (long long)h->step);
    if (n == 0) return EX_OK;
    CPU_ARG(p && g && m && v, "cpu: adamw: NULL pointer");
    const double bc1 = 1.0 - pow((double)h->beta1, (double)h->step);
    const double bc2 = 1.0 - pow((double)h->beta2, (double)h->step);
    const float decay = (float)(1.0 - (double)h->lr * (double)h->weight_decay);
    const float step_size = (float)((double)h->lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float b1 = h->beta1, b2 = h->beta2, eps = h->eps;
    const float omb1 = 1.0f - b1, omb2 = 1.0f - b2;
#pragma omp parallel for PAR(n / 4)
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i];
        const float mi = b1 * m[i] + omb1 * gi;
        const float vi = b2 * v[i] + omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = p[i] * decay - step_size * (mi / denom);
    }
    return EX_OK;
}

ex_status cpu_ema(void *vctx, float *teacher /* (n) */, const float *student /* (n) */, float momentum,
                  int64_t n) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0, "cpu: ema: negative size");
    if (n == 0) return EX_OK;
    CPU_ARG(teacher && student, "cpu: ema: NULL pointer");
    const float a = 1.0f - momentum;
#pragma omp parallel for PAR(n / 2)
    for (int64_t i = 0; i < n; i++) teacher[i] = momentum * teacher[i] + a * student[i];
    return EX_OK;
}
