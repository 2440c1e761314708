/*
 * backends/cpu/cpu_loss.c — cross-entropy (hard labels or soft targets) and
 * L2 normalisation (F.normalize), forward and backward.
 *
 * Every row is handled by one thread; row sums are taken in double.
 *   xent:    loss_i = -sum_j t_ij log softmax(l_i)_j = lse_i * sum_j t_ij - sum_j t_ij l_ij
 *            dl_ij += dloss_i (p_ij sum_k t_ik - t_ij)        (label < 0: no loss, no gradient)
 *   l2norm:  y = x / max(||x||, eps);  dx = (g - y (y . g)) / ||x|| when ||x|| >= eps, else g / eps
 */
#include <math.h>

#include "cpu_internal.h"

#define PAR(work) num_threads(ctx->threads) schedule(static) if ((work) > CPU_PAR_MIN)

ex_status cpu_xent_fwd(void *vctx, float *losses /* (n) */, float *probs /* (n, v) or NULL */,
                       const float *logits /* (n, v) */, const int32_t *labels /* (n) or NULL */,
                       const float *targets /* (n, v) or NULL */, int64_t n, int64_t v) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && v >= 1, "cpu: xent_fwd: bad sizes");
    CPU_ARG((labels != NULL) != (targets != NULL), "cpu: xent_fwd: give exactly one of labels and targets");
    if (n == 0) return EX_OK;
    CPU_ARG(losses && logits, "cpu: xent_fwd: NULL pointer");
    if (labels)
        for (int64_t i = 0; i < n; i++)
            EX_ENSURE(labels[i] < v, NULL, EX_E_RANGE, "cpu: xent_fwd: label %d of row %lld is >= %lld classes",
                      (int)labels[i], (long long)i, (long long)v);
#pragma omp parallel for PAR(n * v)
    for (int64_t i = 0; i < n; i++) {
        const float *l = logits + i * v;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < v; j++) mx = l[j] > mx ? l[j] : mx;
        double sum = 0.0;
        if (probs) { /* exponentials into probs, then normalised */
            float *p = probs + i * v;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < v; j++) {
                const float e = cpu_expf(l[j] - mx);
                p[j] = e;
                sum += e;
            }
            const float inv = (float)(1.0 / sum);
            for (int64_t j = 0; j < v; j++) p[j] *= inv;
        } else {
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < v; j++) sum += cpu_expf(l[j] - mx);
        }
        const double lse = (double)mx + log(sum);
        if (labels) {
            losses[i] = labels[i] < 0 ? 0.0f : (float)(lse - (double)l[labels[i]]);
        } else {
            const float *t = targets + i * v;
            double st = 0.0, stl = 0.0;
            for (int64_t j = 0; j < v; j++) {
                st += t[j];
                stl += (double)t[j] * (double)l[j];
            }
            losses[i] = (float)(lse * st - stl);
        }
    }
    return EX_OK;
}

ex_status cpu_xent_bwd(void *vctx, float *dlogits /* (n, v) */, const float *dlosses /* (n) */,
                       const float *probs /* (n, v) */, const int32_t *labels /* (n) or NULL */,
                       const float *targets /* (n, v) or NULL */, int64_t n, int64_t v) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && v >= 1, "cpu: xent_bwd: bad sizes");
    CPU_ARG((labels != NULL) != (targets != NULL), "cpu: xent_bwd: give exactly one of labels and targets");
    if (n == 0) return EX_OK;
    CPU_ARG(dlogits && dlosses && probs, "cpu: xent_bwd: NULL pointer");
    if (labels)
        for (int64_t i = 0; i < n; i++)
            EX_ENSURE(labels[i] < v, NULL, EX_E_RANGE, "cpu: xent_bwd: label %d of row %lld is >= %lld classes",
                      (int)labels[i], (long long)i, (long long)v);
#pragma omp parallel for PAR(n * v)
    for (int64_t i = 0; i < n; i++) {
        const float *p = probs + i * v;
        float *d = dlogits + i * v;
        const float g = dlosses[i];
        if (labels) {
            const int32_t y = labels[i];
            if (y < 0) continue;
            for (int64_t j = 0; j < v; j++) d[j] += g * p[j];
            d[y] -= g;
        } else {
            const float *t = targets + i * v;
            double st = 0.0;
#pragma omp simd reduction(+ : st)
            for (int64_t j = 0; j < v; j++) st += t[j];
            const float s = (float)st;
            for (int64_t j = 0; j < v; j++) d[j] += g * (p[j] * s - t[j]);
        }
    }
    return EX_OK;
}

ex_status cpu_l2norm_fwd(void *vctx, float *out /* (n, c) */, float *norms /* (n) or NULL */,
                         const float *inp /* (n, c) */, int64_t n, int64_t c, float eps) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 0 && eps >= 0.0f, "cpu: l2norm_fwd: bad sizes or eps");
    if (n == 0) return EX_OK;
    CPU_ARG(out && inp, "cpu: l2norm_fwd: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *x = inp + i * c;
        float *o = out + i * c;
        double ss = 0.0;
#pragma omp simd reduction(+ : ss)
        for (int64_t j = 0; j < c; j++) ss += (double)x[j] * (double)x[j];
        const double nrm = sqrt(ss);
        if (norms) norms[i] = (float)nrm;
        const float inv = (float)(1.0 / (nrm > (double)eps ? nrm : (double)eps));
        for (int64_t j = 0; j < c; j++) o[j] = x[j] * inv;
    }
    return EX_OK;
}

ex_status cpu_l2norm_bwd(void *vctx, float *dinp /* (n, c) */, const float *dout /* (n, c) */,
                         const float *inp /* (n, c) */, const float *norms /* (n) */, int64_t n, int64_t c,
                         float eps) {
    const cpu_ctx *ctx = vctx;
    CPU_ARG(n >= 0 && c >= 0 && eps >= 0.0f, "cpu: l2norm_bwd: bad sizes or eps");
    if (n == 0) return EX_OK;
    CPU_ARG(dinp && dout && inp && norms, "cpu: l2norm_bwd: NULL pointer");
#pragma omp parallel for PAR(n * c)
    for (int64_t i = 0; i < n; i++) {
        const float *x = inp + i * c, *g = dout + i * c;
        float *d = dinp + i * c;
        const double nrm = norms[i];
        if (nrm >= (double)eps && nrm > 0.0) {
            /* d/dx (x / ||x||) applied to g: (g - x (x . g) / ||x||^2) / ||x|| */
            double xg = 0.0;
#pragma omp simd reduction(+ : xg)
            for (int64_t j = 0; j < c; j++) xg += (double)x[j] * (double)g[j];
            const float inv = (float)(1.0 / nrm), k = (float)(xg / (nrm * nrm));
            for (int64_t j = 0; j < c; j++) d[j] += (g[j] - x[j] * k) * inv;
        } else {
            /* the denominator is the constant eps */
            const float inv = 1.0f / eps;
            for (int64_t j = 0; j < c; j++) d[j] += g[j] * inv;
        }
    }
    return EX_OK;
}
