/*
 * plugins/dinov2/dinov2_center.c — teacher targets: EMA centring or
 * Sinkhorn-Knopp (dinov2/loss/dino_clstoken_loss.py, ibot_patch_loss.py).
 *
 * centering (the default): p = softmax((t - c) / tau). The centre c (K) is
 * updated LAZILY, as DINOv2 does: a step first folds in the batch mean of the
 * PREVIOUS step (c <- m c + (1 - m) mean_prev, m = center_momentum), then
 * computes its targets with c, then records its own batch mean (the mean of
 * its raw teacher logits over the rows given) for the next step. Step 0 uses
 * c = 0. DINO and iBOT keep separate centres (iBOT's is the mean over the
 * masked patch rows). Everything runs on backend ops.
 *
 * sinkhorn_knopp: in fp32 without max-subtraction (as DINOv2):
 *   Q = exp(t / tau)^T (K x n); Q /= sum(Q);
 *   3 x { Q /= row sums (per prototype); Q /= K; Q /= column sums (per sample); Q /= n };
 *   Q *= n; targets = Q^T.
 * n is the number of rows given (DINO: the 2B teacher CLS rows; iBOT: the
 * masked patches of the step). There is no exp or column-sum op in the
 * backend, so this mode downloads the logits, computes on the host (sums in
 * double, values in float) and uploads the targets; the centre is not used.
 *
 * Several ranks (env.comm world > 1), as DINOv2 with several GPUs: the batch
 * mean of the centre is over the GLOBAL rows (local sums all-reduced, divided
 * by the all-reduced row count); Sinkhorn-Knopp all-reduces sum(Q) and the
 * prototype sums and uses the global n. Every rank takes part in these
 * collectives even with no rows of its own (n = 0, e.g. no masked patch).
 */
#include <math.h>
#include <string.h>

#include "dinov2_internal.h"

#define F(t) ((float *)(t).data)

#define OP(d, call, what)                                                                                      \
    do {                                                                                                       \
        ex_status op__s = (d)->env.be->vt.call;                                                                \
        if (op__s != EX_OK) EX_FAIL(err, op__s, "dinov2: %s failed on backend '%s'", what, (d)->env.be->name); \
    } while (0)

ex_status dn_sinkhorn_device(dinov2 *d, float *q /* (n, K) */, int64_t n, float tau, int iters, ex_err *err) {
    ex_backend *be = d->env.be;
    const int64_t K = d->K;
    EX_ENSURE(d->sk_device, err, EX_E_INTERNAL, "dinov2: Sinkhorn-Knopp on a backend without exp_fwd/row_sum");
    const int dist = ex_comm_world(d->env.comm) > 1;
    if (n <= 0 && !dist) return EX_OK;
    int64_t ng = n;
    EX_CHECK(ex_comm_allreduce_sum_i64(d->env.comm, &ng, 1, err));
    if (ng <= 0) return EX_OK;
    /* Q = exp(t / tau) (fp32, no max subtracted, as DINOv2), then Q /= sum(Q) */
    double total = 0.0;
    if (n > 0) {
        float t = 0.0f;
        OP(d, exp_fwd(be->ctx, q, q, 1.0f / tau, n * K), "exp_fwd");
        OP(d, reduce(be->ctx, EX_RED_SUM, F(d->skd_total), q, n * K), "reduce");
        EX_CHECK(ex_be_download(be, &t, F(d->skd_total), sizeof t, err));
        total = t;
    }
    EX_CHECK(ex_comm_allreduce_sum_f64(d->env.comm, &total, 1, err));
    if (n > 0) OP(d, axpby(be->ctx, q, (float)(1.0 / (double)(float)total), q, 0.0f, n * K), "axpby");
    const float fK = (float)K, fB = (float)ng;
    OP(d, fill(be->ctx, F(d->skd_kinv), 1.0f / fK, K), "fill");
    if (n > 0) OP(d, fill(be->ctx, F(d->skd_nfill), 1.0f / fB, n), "fill");
    for (int it = 0; it < iters; it++) {
        /* per prototype: Q /= its sum over the (global) samples, Q /= K */
        OP(d, fill(be->ctx, F(d->skd_row), 0.0f, K), "fill");
        if (n > 0) OP(d, bias_add_bwd(be->ctx, F(d->skd_row), q, n, K), "bias_add_bwd"); /* column sums */
        if (dist) EX_CHECK(ex_comm_allreduce_sum_f32((ex_comm *)d->env.comm, be, F(d->skd_row), K, err));
        if (n == 0) continue;
        OP(d, binary(be->ctx, EX_BIN_DIV, F(d->skd_inv), F(d->skd_kinv), F(d->skd_row), K), "binary");
        OP(d, channel_scale_fwd(be->ctx, q, q, F(d->skd_inv), n, K), "channel_scale_fwd");
        /* per sample: Q /= its sum over the prototypes, Q /= n */
        OP(d, row_sum(be->ctx, F(d->skd_col), q, n, K), "row_sum");
        OP(d, binary(be->ctx, EX_BIN_DIV, F(d->skd_cinv), F(d->skd_nfill), F(d->skd_col), n), "binary");
        OP(d, row_scale_fwd(be->ctx, q, q, F(d->skd_cinv), n, K), "row_scale_fwd");
    }
    if (n > 0) OP(d, axpby(be->ctx, q, fB, q, 0.0f, n * K), "axpby"); /* Q *= n: targets = Q^T */
    return EX_OK;
}

ex_status dn_sinkhorn_host(float *q /* (n, K) */, int64_t n, int64_t K, float tau, int iters, double *row /* (K) */,
                           double *col /* (n) */) {
    ex_err err;
    return dn_sinkhorn_dist(NULL, q, n, K, tau, iters, row, col, &err);
}

ex_status dn_sinkhorn_dist(const ex_comm *comm, float *q /* (n, K) */, int64_t n, int64_t K, float tau, int iters,
                           double *row /* (K) */, double *col /* (n) */, ex_err *err) {
    const int dist = ex_comm_world(comm) > 1;
    if (n <= 0 && !dist) return EX_OK;
    int64_t ng = n;
    EX_CHECK(ex_comm_allreduce_sum_i64(comm, &ng, 1, err));
    if (ng <= 0) return EX_OK;
    double total = 0.0;
    for (int64_t j = 0; j < n; j++)
        for (int64_t k = 0; k < K; k++) {
            float e = expf(q[j * K + k] / tau);
            q[j * K + k] = e;
            total += e;
        }
    EX_CHECK(ex_comm_allreduce_sum_f64(comm, &total, 1, err));
    const float ft = (float)total;
    for (int64_t i = 0; i < n * K; i++) q[i] /= ft;
    const float fK = (float)K, fB = (float)ng;
    for (int it = 0; it < iters; it++) {
        for (int64_t k = 0; k < K; k++) row[k] = 0.0;
        for (int64_t j = 0; j < n; j++)
            for (int64_t k = 0; k < K; k++) row[k] += q[j * K + k];
        EX_CHECK(ex_comm_allreduce_sum_f64(comm, row, K, err));
        for (int64_t j = 0; j < n; j++)
            for (int64_t k = 0; k < K; k++) {
                float v = q[j * K + k] / (float)row[k];
                q[j * K + k] = v / fK;
            }
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++) s += q[j * K + k];
            col[j] = s;
        }
        for (int64_t j = 0; j < n; j++)
            for (int64_t k = 0; k < K; k++) {
                float v = q[j * K + k] / (float)col[j];
                q[j * K + k] = v / fB;
            }
    }
    for (int64_t i = 0; i < n * K; i++) q[i] *= fB;
    return EX_OK;
}

/* The three parts of the targets of n rows, so that the logits can come one chunk at a time. begin: fold in
 * the previous step's batch mean; chunk: rows [c0, c0 + nc) (t (nc, K), overwritten by t - c when centring)
 * into out (nc, K), adding their share of this step's batch mean (centring) or keeping them on the host
 * (Sinkhorn-Knopp); end: the collectives of several ranks and, for Sinkhorn-Knopp, the targets of all n
 * rows into out_all (n, K). */
static ex_status targets_begin(dinov2 *d, dn_center *c, float tau, ex_err *err) {
    EX_ENSURE(tau > 0.0f, err, EX_E_INVALID, "dinov2: teacher temperature %g must be positive", (double)tau);
    EX_ENSURE(d->centering != DN_SINKHORN || d->sk || d->sk_device, err, EX_E_INTERNAL,
              "dinov2: Sinkhorn-Knopp buffers missing");
    if (d->centering != DN_SINKHORN && c->pending) {
        const float m = (float)d->center_momentum;
        OP(d, axpby(d->env.be->ctx, F(c->c), 1.0f - m, F(c->pend), m, d->K), "axpby");
        c->pending = 0;
    }
    return EX_OK;
}

static ex_status targets_chunk(dinov2 *d, dn_center *c, float *t, int64_t c0, int64_t nc, int64_t n, float tau,
                               float *out, ex_err *err) {
    ex_backend *be = d->env.be;
    const int64_t K = d->K;
    if (nc == 0) return EX_OK;
    if (d->centering == DN_SINKHORN) { /* gathered: into the targets (device) or on the host */
        if (d->sk_device && t != out) OP(d, copy(be->ctx, out, t, sizeof(float) * (size_t)(nc * K), EX_COPY_D2D), "copy");
        if (d->sk_device) return EX_OK;
        return ex_be_download(be, d->sk + c0 * K, t, sizeof(float) * (size_t)(nc * K), err);
    }
    /* this step's batch mean of the raw logits (before t changes), folded in by the next step; with several
     * ranks a sum, all-reduced and divided at the end */
    const int dist = ex_comm_world(d->env.comm) > 1;
    ex_gemm_desc g = {0};
    g.m = 1, g.n = K, g.k = nc, g.alpha = dist ? 1.0f : 1.0f / (float)n, g.beta = c0 == 0 ? 0.0f : 1.0f;
    g.a = F(d->ones), g.a_dtype = EX_F32, g.lda = nc;
    g.b = t, g.b_dtype = EX_F32, g.ldb = K;
    g.c = F(c->pend), g.ldc = K, g.batch = 1;
    EX_CHECK(ex_be_gemm(be, &g, err));
    /* t - c in place (the centre broadcast into out first), then the softmax into out */
    OP(d, copy2d(be->ctx, out, K, F(c->c), 0, nc, K), "copy2d");
    OP(d, binary(be->ctx, EX_BIN_SUB, t, t, out, nc * K), "binary");
    OP(d, softmax_fwd(be->ctx, out, t, nc, K, 1.0f / tau), "softmax_fwd");
    return EX_OK;
}

static ex_status targets_end(dinov2 *d, dn_center *c, int64_t n, float tau, float *out_all, ex_err *err) {
    ex_backend *be = d->env.be;
    const int64_t K = d->K;
    if (d->centering == DN_SINKHORN && d->sk_device) return dn_sinkhorn_device(d, out_all, n, tau, 3, err);
    if (d->centering == DN_SINKHORN) {
        EX_CHECK(dn_sinkhorn_dist(d->env.comm, d->sk, n, K, tau, 3, d->sk_row, d->sk_col, err));
        return n > 0 ? ex_be_upload(be, out_all, d->sk, sizeof(float) * (size_t)(n * K), err) : EX_OK;
    }
    if (ex_comm_world(d->env.comm) > 1) { /* global mean: all-reduced sums over all-reduced rows */
        int64_t ng = n;
        EX_CHECK(ex_comm_allreduce_sum_i64(d->env.comm, &ng, 1, err));
        if (n == 0) OP(d, fill(be->ctx, F(c->pend), 0.0f, K), "fill");
        EX_CHECK(ex_comm_allreduce_sum_f32((ex_comm *)d->env.comm, be, F(c->pend), K, err));
        if (ng > 0) OP(d, axpby(be->ctx, F(c->pend), 0.0f, F(c->pend), 1.0f / (float)ng, K), "axpby");
    }
    c->pending = 1;
    return EX_OK;
}

ex_status dn_teacher_targets(dinov2 *d, dn_center *c, float *t /* (n, K) */, int64_t n, float tau,
                             float *out /* (n, K) */, ex_err *err) {
    if (n == 0 && ex_comm_world(d->env.comm) <= 1) return EX_OK;
    EX_CHECK(targets_begin(d, c, tau, err));
    EX_CHECK(targets_chunk(d, c, t, 0, n, n, tau, out, err));
    return targets_end(d, c, n, tau, out, err);
}

ex_status dn_head_targets(dinov2 *d, dn_head *h, dn_center *c, int64_t r0, int64_t n, float tau,
                          float *out /* (n, K) */, ex_err *err) {
    if (n == 0 && ex_comm_world(d->env.comm) <= 1) return EX_OK;
    EX_CHECK(targets_begin(d, c, tau, err));
    float *lg = F(d->acts.logits); /* (ce_chunk, K) */
    for (int64_t c0 = 0; c0 < n; c0 += d->ce_chunk) {
        const int64_t nc = n - c0 < d->ce_chunk ? n - c0 : d->ce_chunk;
        EX_CHECK(dn_head_logits(d, h, r0 + c0, nc, 1.0f, lg, err));
        EX_CHECK(targets_chunk(d, c, lg, c0, nc, n, tau, out + c0 * d->K, err));
    }
    return targets_end(d, c, n, tau, out, err);
}
