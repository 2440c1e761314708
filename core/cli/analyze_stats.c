/*
 * core/cli/analyze_stats.c — numerics of `explora analyze` (see analyze.h and
 * docs/ANALYSIS.md): covariance spectra of a block's patch tokens with
 * OpenBLAS (dsyrk) and LAPACKE (dsyevd, eigenvalues only, in double
 * precision), per-token linear probes on the backend through explora's
 * linear-probe SGD, and the deterministic image selection and split.
 */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analyze.h"
#include "explora/features.h"

ex_status an_cov_eigenvalues(const float *x, int64_t n, int64_t d, double *eig, int64_t *count, ex_err *err) {
    EX_ENSURE(n >= 2 && d >= 1, err, EX_E_INVALID, "spectrum: %lld tokens of %lld features (need at least 2 tokens)",
              (long long)n, (long long)d);
    const int64_t m = n < d ? n : d;
    double *xc = malloc(sizeof(double) * (size_t)(n * d)), *mean = calloc((size_t)d, sizeof(double));
    double *cov = malloc(sizeof(double) * (size_t)(m * m)), *w = malloc(sizeof(double) * (size_t)m);
    ex_status st = EX_OK;
    if (!xc || !mean || !cov || !w) {
        st = ex_err_set(err, EX_E_NOMEM, __FILE__, __LINE__, "spectrum: out of memory for %lld x %lld tokens",
                        (long long)n, (long long)d);
        goto done;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) mean[j] += x[i * d + j];
    for (int64_t j = 0; j < d; j++) mean[j] /= (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) xc[i * d + j] = (double)x[i * d + j] - mean[j];
    const double alpha = 1.0 / (double)(n - 1);
    /* the smaller of Xc Xc^T (n x n) and Xc^T Xc (d x d): the same non-zero eigenvalues */
    if (n <= d)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (blasint)n, (blasint)d, alpha, xc, (blasint)d, 0.0, cov,
                    (blasint)n);
    else
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)d, (blasint)n, alpha, xc, (blasint)d, 0.0, cov,
                    (blasint)d);
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'N', 'U', (lapack_int)m, cov, (lapack_int)m, w);
    if (info != 0) {
        st = ex_err_set(err, EX_E_INTERNAL, __FILE__, __LINE__, "spectrum: LAPACKE_dsyevd failed (info %d)", (int)info);
        goto done;
    }
    for (int64_t i = 0; i < m; i++) eig[i] = w[m - 1 - i]; /* ascending -> descending */
    *count = m;
done:
    free(xc);
    free(mean);
    free(cov);
    free(w);
    return st;
}

ex_status an_spectrum_topk(const float *x, int64_t n, int64_t d, const int64_t *ks, int nk, double *means,
                           ex_err *err) {
    const int64_t cap = n < d ? n : d;
    double *eig = malloc(sizeof(double) * (size_t)(cap > 0 ? cap : 1));
    EX_ENSURE(eig, err, EX_E_NOMEM, "spectrum: out of memory");
    int64_t m = 0;
    ex_status st = an_cov_eigenvalues(x, n, d, eig, &m, err);
    if (st == EX_OK)
        for (int t = 0; t < nk; t++) {
            const int64_t k = ks[t] < 1 ? 1 : ks[t] > m ? m : ks[t];
            double acc = 0;
            for (int64_t i = 0; i < k; i++) acc += eig[i];
            means[t] = acc / (double)k;
        }
    free(eig);
    return st;
}

void an_mean_std(const double *v, int64_t n, double *mean, double *std) {
    double m = 0, s = 0;
    for (int64_t i = 0; i < n; i++) m += v[i];
    m = n > 0 ? m / (double)n : NAN;
    for (int64_t i = 0; i < n; i++) s += (v[i] - m) * (v[i] - m);
    *mean = m;
    *std = n > 0 ? sqrt(s / (double)n) : NAN;
}

/* Copy rows into ex_features (one "block" of d features) standardised with mu, sd. */
static ex_status standardised(const float *x, const int64_t *y, int64_t n, int64_t d, const double *mu, const double *sd,
                              ex_features *f, ex_err *err) {
    memset(f, 0, sizeof *f);
    f->n = n;
    f->dim = d;
    f->nblocks = 1;
    f->cls = malloc(sizeof(float) * (size_t)(n * d));
    f->labels = malloc(sizeof(int64_t) * (size_t)n);
    if (!f->cls || !f->labels) {
        ex_features_free(f);
        EX_FAIL(err, EX_E_NOMEM, "probe: out of memory for %lld tokens", (long long)n);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) f->cls[i * d + j] = (float)(((double)x[i * d + j] - mu[j]) / sd[j]);
    memcpy(f->labels, y, sizeof(int64_t) * (size_t)n);
    return EX_OK;
}

ex_status an_token_probe(ex_backend *be, const float *xtr, const int64_t *ytr, int64_t ntr, const float *xte,
                         const int64_t *yte, int64_t nte, int64_t d, int64_t classes, const an_probe_opts *o,
                         double *acc, ex_err *err) {
    EX_ENSURE(ntr >= 1 && nte >= 1 && d >= 1 && classes >= 2 && o->nlrs >= 1 && o->nlrs <= 16, err, EX_E_INVALID,
              "probe: %lld training and %lld test tokens, %lld classes, %d learning rates", (long long)ntr,
              (long long)nte, (long long)classes, o->nlrs);
    double *mu = calloc((size_t)d, sizeof(double)), *sd = calloc((size_t)d, sizeof(double));
    ex_features tr, te;
    memset(&tr, 0, sizeof tr);
    memset(&te, 0, sizeof te);
    ex_status st = EX_OK;
    if (!mu || !sd) {
        st = ex_err_set(err, EX_E_NOMEM, __FILE__, __LINE__, "probe: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < ntr; i++)
        for (int64_t j = 0; j < d; j++) mu[j] += xtr[i * d + j];
    for (int64_t j = 0; j < d; j++) mu[j] /= (double)ntr;
    for (int64_t i = 0; i < ntr; i++)
        for (int64_t j = 0; j < d; j++) sd[j] += ((double)xtr[i * d + j] - mu[j]) * ((double)xtr[i * d + j] - mu[j]);
    for (int64_t j = 0; j < d; j++) sd[j] = sqrt(sd[j] / (double)ntr) + 1e-6;
    EX_CHECK_GOTO(standardised(xtr, ytr, ntr, d, mu, sd, &tr, err), st, done);
    EX_CHECK_GOTO(standardised(xte, yte, nte, d, mu, sd, &te, err), st, done);
    ex_probe_opts po;
    memset(&po, 0, sizeof po);
    memcpy(po.lrs, o->lrs, sizeof(double) * (size_t)o->nlrs);
    po.nlrs = o->nlrs;
    po.nblocks[0] = 1;
    po.nnb = 1;
    po.avgpool = 0;
    po.epochs = o->epochs;
    po.batch = o->batch;
    po.seed = o->seed;
    ex_probe_result res[16];
    int count = 0, best = 0;
    EX_CHECK_GOTO(ex_linear_probe(be, &tr, &te, classes, &po, res, 16, &count, &best, NULL, err), st, done);
    *acc = res[best].top1;
done:
    ex_features_free(&tr);
    ex_features_free(&te);
    free(mu);
    free(sd);
    return st;
}

int64_t an_pick(int64_t i, int64_t n, int64_t len) {
    if (n <= 0 || len <= 0) return 0;
    return i * len / n; /* i < n <= 1e7 and len < 1e11: no overflow */
}

static int64_t test_rank(int64_t i, double frac) { return (int64_t)floor((double)i * frac + 0.5); }

int an_is_test(int64_t i, int64_t n, double frac) {
    if (n < 2) return 0;
    const int64_t ntest = test_rank(n, frac);
    if (ntest < 1) return i == n - 1;          /* at least one test image */
    if (ntest >= n) return i != 0;            /* at least one training image */
    return test_rank(i + 1, frac) > test_rank(i, frac);
}
