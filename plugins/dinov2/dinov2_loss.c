/*
 * plugins/dinov2/dinov2_loss.c — the loss terms.
 *
 * Soft cross-entropy (DINO CLS terms and iBOT patch terms): for a row r of
 * student logits s (already divided by student_temp by the head's scale) and
 * teacher targets t, CE_r = -sum_k t_k log softmax(s)_k; a loss is a weighted
 * row sum sum_r w_r CE_r and its gradient w_r (softmax(s) - t) (xent ops).
 * The weights carry every normalisation of dinov2/train/ssl_meta_arch.py:
 *   DINO global  w = dino_weight / (B * n_terms)   (2 terms: student crop c vs teacher crop 1-c)
 *   DINO local   w = dino_weight / (B * n_terms)   (each local crop vs both teacher crops)
 *   n_terms = 2 + 2 * local_crops                   (18 for 8 locals)
 *   iBOT         w = ibot_weight / (n_i * 2B)      (n_i: masked patches of the row's image)
 *
 * KoLeo (dinov2/loss/koleo_loss.py), per chunk of B rows (one global crop):
 *   y = x / max(||x||, 1e-8); nn(i) = argmax_{j != i} y_i . y_j;
 *   d_i = ||y_i - y_nn(i) + 1e-8||  (pairwise_distance adds eps to the difference);
 *   L = -mean_i log(d_i + 1e-8). The gradient flows through both y_i and y_nn(i).
 * Computed on the host in double: the CLS rows are small (2B x D).
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

int64_t dn_probs_rows(const dinov2 *d) {
    const int64_t chunk = d->rows < d->ce_chunk ? d->rows : d->ce_chunk;
    return chunk > d->Bg ? chunk : d->Bg;
}

/* The loss rows' weights times the loss scale (a power of two: exact) into rweights, for the gradients. */
static ex_status upload_weights(dinov2 *d, const float *w, int64_t n, ex_err *err) {
    const float gs = d->grad_scale > 0.0f ? d->grad_scale : 1.0f;
    for (int64_t r = 0; r < n; r++) d->hws[r] = w[r] * gs;
    return ex_be_upload(d->env.be, F(d->rweights), d->hws, sizeof(float) * (size_t)n, err);
}

/* Rows [c0, c0 + nc) of a loss of n rows: per-row losses of target set s into losses[s * n + c0 ...], and with
 * backward the gradient over the logits (nc, K), weighted by rweights[c0 ...]. Nothing waits for the device. */
static ex_status soft_ce_rows(dinov2 *d, float *logits /* (nc, K) */, int64_t c0, int64_t nc, int64_t n, int nt,
                              const float *const *targets /* nt x (n, K) */, int backward, ex_err *err) {
    ex_backend *be = d->env.be;
    const int64_t K = d->K;
    /* every op is row by row: chunks of rows give the same numbers with a small probs buffer, and once a
     * chunk's probabilities are known its logits are no longer needed, so they make room for its gradient */
    float *probs = F(d->acts.probs); /* (chunk, K) */
    for (int64_t r0 = 0; r0 < nc; r0 += d->ce_chunk) {
        const int64_t m = nc - r0 < d->ce_chunk ? nc - r0 : d->ce_chunk, row = c0 + r0;
        float *rows = logits + r0 * K; /* (m, K) logits in, gradient out */
        for (int s = 0; s < nt; s++)
            OP(d, xent_fwd(be->ctx, F(d->losses) + s * n + row, probs, rows, NULL, targets[s] + row * K, m, K),
               "xent_fwd");
        if (!backward) continue;
        OP(d, fill(be->ctx, rows, 0.0f, m * K), "fill");
        for (int s = 0; s < nt; s++)
            OP(d, xent_bwd(be->ctx, rows, F(d->rweights) + row, probs, NULL, targets[s] + row * K, m, K), "xent_bwd");
    }
    return EX_OK;
}

/* value[s] = sum_r w_r * loss of row r under target set s, once the device has them (one download). */
static ex_status soft_ce_values(dinov2 *d, const float *w, int64_t n, int nt, double *value, ex_err *err) {
    EX_CHECK(ex_be_download(d->env.be, d->hl, F(d->losses), sizeof(float) * (size_t)(nt * n), err));
    for (int s = 0; s < nt; s++) {
        double v = 0.0;
        for (int64_t r = 0; r < n; r++) v += (double)w[r] * (double)d->hl[s * n + r];
        value[s] = v;
    }
    return EX_OK;
}

static ex_status check_loss_args(const dinov2 *d, int64_t n, int nt, ex_err *err) {
    EX_ENSURE(nt >= 1 && nt <= DN_MAX_TARGETS, err, EX_E_INTERNAL, "dinov2: %d target sets (1..%d)", nt,
              DN_MAX_TARGETS);
    EX_ENSURE(n >= 0 && n <= d->rows, err, EX_E_INTERNAL, "dinov2: %lld loss rows, more than the plan's %lld",
              (long long)n, (long long)d->rows);
    return EX_OK;
}

ex_status dn_soft_ce(dinov2 *d, float *logits /* (n, K) */, int64_t n, int nt,
                     const float *const *targets /* nt x (n, K) */, const float *w /* (n) host */, int backward,
                     double *value /* (nt) */, ex_err *err) {
    EX_CHECK(check_loss_args(d, n, nt, err));
    for (int s = 0; s < nt; s++) value[s] = 0.0;
    if (n == 0) return EX_OK;
    if (backward) EX_CHECK(upload_weights(d, w, n, err));
    EX_CHECK(soft_ce_rows(d, logits, 0, n, n, nt, targets, backward, err));
    return soft_ce_values(d, w, n, nt, value, err);
}

ex_status dn_head_ce(dinov2 *d, dn_head *h, int64_t r0, int64_t n, float scale, int nt,
                     const float *const *targets /* nt x (n, K) */, const float *w /* (n) host */, int first,
                     int freeze_last, double *value /* (nt) */, ex_err *err) {
    EX_CHECK(check_loss_args(d, n, nt, err));
    for (int s = 0; s < nt; s++) value[s] = 0.0;
    if (n == 0) return EX_OK;
    /* weights up once and losses down once per call, not per chunk: no device sync inside the loop */
    EX_CHECK(upload_weights(d, w, n, err));
    float *lg = F(d->acts.logits); /* (ce_chunk, K) */
    for (int64_t c0 = 0; c0 < n; c0 += d->ce_chunk) {
        const int64_t nc = n - c0 < d->ce_chunk ? n - c0 : d->ce_chunk;
        EX_CHECK(dn_head_logits(d, h, r0 + c0, nc, scale, lg, err));
        EX_CHECK(soft_ce_rows(d, lg, c0, nc, n, nt, targets, 1, err));
        EX_CHECK(dn_head_logits_backward(d, h, lg, r0 + c0, nc, scale, !(first && c0 == 0), freeze_last, err));
    }
    return soft_ce_values(d, w, n, nt, value, err);
}

static double koleo_chunk(const float *x /* (n, D) */, int64_t n, int64_t D, double weight, float *grad /* (n, D) */) {
    /* y rows and norms; then nearest neighbours; then the loss and its gradient, all in double */
    double loss = 0.0;
    for (int64_t i = 0; i < n * D; i++) grad[i] = 0.0f;
    if (n < 2) return 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * D;
        double ni = 0.0;
        for (int64_t c = 0; c < D; c++) ni += (double)xi[c] * xi[c];
        ni = sqrt(ni);
        const double di_ = ni > 1e-8 ? ni : 1e-8;
        /* nearest neighbour by cosine */
        int64_t best = -1;
        double bestdot = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            if (j == i) continue;
            const float *xj = x + j * D;
            double nj = 0.0, dot = 0.0;
            for (int64_t c = 0; c < D; c++) {
                nj += (double)xj[c] * xj[c];
                dot += (double)xi[c] * xj[c];
            }
            nj = sqrt(nj);
            dot /= di_ * (nj > 1e-8 ? nj : 1e-8);
            if (dot > bestdot) { /* first maximum wins, as torch.max */
                bestdot = dot;
                best = j;
            }
        }
        (void)bestdot;
        const float *xj = x + best * D;
        double nj = 0.0;
        for (int64_t c = 0; c < D; c++) nj += (double)xj[c] * xj[c];
        nj = sqrt(nj);
        const double dj_ = nj > 1e-8 ? nj : 1e-8;
        double dist2 = 0.0;
        for (int64_t c = 0; c < D; c++) {
            double diff = xi[c] / di_ - xj[c] / dj_ + 1e-8;
            dist2 += diff * diff;
        }
        const double dist = sqrt(dist2);
        loss += -log(dist + 1e-8) / (double)n;
        /* dL/d dist = -1 / (n (dist + eps)); d dist / d y_i = diff / dist = -d dist / d y_nn */
        const double gd = -weight / ((double)n * (dist + 1e-8) * (dist > 0 ? dist : 1.0));
        /* through y = x / ||x||: dx = (dy - y (y . dy)) / ||x|| (||x|| > eps) */
        double dyi_dot = 0.0, dyj_dot = 0.0;
        for (int64_t c = 0; c < D; c++) {
            double diff = xi[c] / di_ - xj[c] / dj_ + 1e-8;
            dyi_dot += (xi[c] / di_) * (gd * diff);
            dyj_dot += (xj[c] / dj_) * (-gd * diff);
        }
        for (int64_t c = 0; c < D; c++) {
            double diff = xi[c] / di_ - xj[c] / dj_ + 1e-8;
            double dyi = gd * diff, dyj = -gd * diff;
            double gi = ni > 1e-8 ? (dyi - (xi[c] / di_) * dyi_dot) / ni : dyi / 1e-8;
            double gj = nj > 1e-8 ? (dyj - (xj[c] / dj_) * dyj_dot) / nj : dyj / 1e-8;
            grad[i * D + c] += (float)gi;
            grad[best * D + c] += (float)gj;
        }
    }
    return weight * loss;
}

double dn_koleo_host(const float *x /* (n, D) */, int64_t n, int64_t chunk, int64_t D, double weight,
                     float *grad /* (n, D) */) {
    double total = 0.0;
    for (int64_t r = 0; r < n; r += chunk) {
        int64_t m = n - r < chunk ? n - r : chunk;
        total += koleo_chunk(x + r * D, m, D, weight, grad + r * D);
    }
    return total;
}
