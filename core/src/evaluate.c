/*
 * core/src/evaluate.c — classification metrics and the weighted kNN
 * classifier (see explora/evaluate.h).
 */
#include "explora/evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ex_cls_metrics_free(ex_cls_metrics *m) {
    if (!m) return;
    free(m->group_acc);
    free(m->group_n);
    memset(m, 0, sizeof *m);
}

ex_status ex_classification_metrics(const int64_t *predictions, int k, const int64_t *labels, const int64_t *groups,
                                    int64_t n, int64_t classes, ex_cls_metrics *out, ex_err *err) {
    memset(out, 0, sizeof *out);
    out->worst_group_acc = NAN;
    EX_ENSURE(predictions && labels && k >= 1 && n >= 0 && classes >= 1, err, EX_E_INVALID,
              "metrics: bad arguments (k %d, n %lld, classes %lld)", k, (long long)n, (long long)classes);
    int64_t ngroups = 0;
    for (int64_t i = 0; groups && i < n; i++)
        if (labels[i] >= 0 && groups[i] + 1 > ngroups) ngroups = groups[i] + 1;
    /* (classes) TP, FP, FN; then (ngroups) correct, count */
    int64_t *cnt = calloc((size_t)(3 * classes + 2 * ngroups), sizeof(int64_t));
    EX_ENSURE(cnt, err, EX_E_NOMEM, "metrics: out of memory");
    int64_t *tp = cnt, *fp = cnt + classes, *fn = cnt + 2 * classes, *gc = cnt + 3 * classes, *gn = gc + ngroups;
    int64_t c1 = 0, c5 = 0, counted = 0;
    const int k5 = k < 5 ? k : 5;
    for (int64_t i = 0; i < n; i++) {
        const int64_t y = labels[i], p = predictions[i * k];
        if (y < 0) continue;
        if (y >= classes || p >= classes) {
            free(cnt);
            EX_FAIL(err, EX_E_RANGE, "metrics: sample %lld has label %lld / prediction %lld, classes %lld", (long long)i,
                    (long long)y, (long long)p, (long long)classes);
        }
        counted++;
        const int hit = p == y;
        c1 += hit;
        for (int r = 0; r < k5; r++)
            if (predictions[i * k + r] == y) {
                c5++;
                break;
            }
        if (hit) {
            tp[y]++;
        } else {
            fn[y]++;
            if (p >= 0) fp[p]++;
        }
        if (groups && groups[i] >= 0) {
            gn[groups[i]]++;
            gc[groups[i]] += hit;
        }
    }
    double f1 = 0;
    int64_t present = 0;
    for (int64_t c = 0; c < classes; c++) {
        const int64_t den = 2 * tp[c] + fp[c] + fn[c];
        if (den == 0) continue; /* neither a label nor a prediction */
        present++;
        f1 += 2.0 * (double)tp[c] / (double)den;
    }
    out->n = counted;
    out->classes = classes;
    out->top1 = counted ? 100.0 * (double)c1 / (double)counted : NAN;
    out->top5 = counted ? 100.0 * (double)c5 / (double)counted : NAN;
    out->macro_f1 = present ? 100.0 * f1 / (double)present : NAN;
    out->ngroups = ngroups;
    if (ngroups > 0) {
        out->group_acc = malloc(sizeof(double) * (size_t)ngroups);
        out->group_n = malloc(sizeof(int64_t) * (size_t)ngroups);
        if (!out->group_acc || !out->group_n) {
            free(cnt);
            ex_cls_metrics_free(out);
            EX_FAIL(err, EX_E_NOMEM, "metrics: out of memory");
        }
        for (int64_t g = 0; g < ngroups; g++) {
            out->group_n[g] = gn[g];
            out->group_acc[g] = gn[g] ? 100.0 * (double)gc[g] / (double)gn[g] : NAN;
            if (gn[g] && !(out->group_acc[g] >= out->worst_group_acc)) out->worst_group_acc = out->group_acc[g];
        }
    }
    free(cnt);
    return EX_OK;
}

/* Rows of x (n, d) scaled to unit L2 norm (F.normalize, eps 1e-12) into y. */
static void normalize_rows(const float *x, int64_t n, int64_t d, float *y) {
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t j = 0; j < d; j++) s += (double)x[i * d + j] * x[i * d + j];
        const double r = 1.0 / fmax(sqrt(s), 1e-12);
        for (int64_t j = 0; j < d; j++) y[i * d + j] = (float)((double)x[i * d + j] * r);
    }
}

ex_status ex_knn_classify(ex_backend *be, const float *train, const int64_t *train_labels, int64_t n, const float *test,
                          const int64_t *test_labels, int64_t m, int64_t d, const ex_knn_opts *o, double *top1,
                          ex_err *err) {
    EX_ENSURE(be && train && train_labels && test && test_labels && o && top1, err, EX_E_INVALID, "knn: NULL argument");
    EX_ENSURE(n >= 1 && m >= 0 && d >= 1 && o->nk >= 1 && o->nk <= EX_KNN_MAX_K && o->temperature > 0 && o->classes >= 1,
              err, EX_E_INVALID, "knn: bad arguments (n %lld, m %lld, d %lld, %d k values, T %g, classes %lld)",
              (long long)n, (long long)m, (long long)d, o->nk, o->temperature, (long long)o->classes);
    int64_t K = 0;
    for (int i = 0; i < o->nk; i++) {
        EX_ENSURE(o->ks[i] >= 1, err, EX_E_INVALID, "knn: k = %lld", (long long)o->ks[i]);
        if (o->ks[i] > K) K = o->ks[i];
    }
    if (K > n) K = n;
    for (int64_t i = 0; i < n; i++)
        EX_ENSURE(train_labels[i] >= 0 && train_labels[i] < o->classes, err, EX_E_RANGE,
                  "knn: training sample %lld has label %lld (classes %lld)", (long long)i, (long long)train_labels[i],
                  (long long)o->classes);
    const int64_t C = o->classes;
    int64_t q = ((int64_t)1 << 24) / n;
    if (q < 1) q = 1;
    if (q > m) q = m > 0 ? m : 1;
    if (q > 1024) q = 1024;
    ex_status st = EX_OK;
    float *tn = malloc(sizeof(float) * (size_t)(n * d)), *qn = malloc(sizeof(float) * (size_t)(q * d));
    float *sims = malloc(sizeof(float) * (size_t)(q * n));
    float *best_s = malloc(sizeof(float) * (size_t)K);
    int64_t *best_i = malloc(sizeof(int64_t) * (size_t)K);
    double *votes = malloc(sizeof(double) * (size_t)C);
    int64_t *correct = calloc((size_t)o->nk, sizeof(int64_t));
    void *dtrain = NULL, *dq = NULL, *dsims = NULL;
    int64_t counted = 0;
    if (!tn || !qn || !sims || !best_s || !best_i || !votes || !correct)
        EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "knn: out of memory");
    normalize_rows(train, n, d, tn);
    EX_CHECK_GOTO(ex_be_alloc(be, sizeof(float) * (size_t)(n * d), &dtrain, err), st, done);
    EX_CHECK_GOTO(ex_be_alloc(be, sizeof(float) * (size_t)(q * d), &dq, err), st, done);
    EX_CHECK_GOTO(ex_be_alloc(be, sizeof(float) * (size_t)(q * n), &dsims, err), st, done);
    EX_CHECK_GOTO(ex_be_upload(be, dtrain, tn, sizeof(float) * (size_t)(n * d), err), st, done);
    for (int64_t s0 = 0; s0 < m; s0 += q) {
        const int64_t rows = m - s0 < q ? m - s0 : q;
        normalize_rows(test + s0 * d, rows, d, qn);
        EX_CHECK_GOTO(ex_be_upload(be, dq, qn, sizeof(float) * (size_t)(rows * d), err), st, done);
        ex_gemm_desc g;
        memset(&g, 0, sizeof g);
        g.trans_b = 1, g.m = rows, g.n = n, g.k = d, g.alpha = 1.0f, g.beta = 0.0f;
        g.a = dq, g.a_dtype = EX_F32, g.lda = d, g.b = dtrain, g.b_dtype = EX_F32, g.ldb = d;
        g.c = dsims, g.ldc = n, g.batch = 1;
        EX_CHECK_GOTO(ex_be_gemm(be, &g, err), st, done);
        EX_CHECK_GOTO(ex_be_download(be, sims, dsims, sizeof(float) * (size_t)(rows * n), err), st, done);
        for (int64_t r = 0; r < rows; r++) {
            const int64_t y = test_labels[s0 + r];
            if (y < 0) continue;
            counted++;
            /* the K most similar, sorted descending (ties: the lower training index first) */
            const float *srow = sims + r * n;
            int64_t have = 0;
            for (int64_t j = 0; j < n; j++) {
                const float v = srow[j];
                if (have == K && !(v > best_s[K - 1])) continue;
                int64_t p = have < K ? have++ : K - 1;
                while (p > 0 && v > best_s[p - 1]) {
                    best_s[p] = best_s[p - 1];
                    best_i[p] = best_i[p - 1];
                    p--;
                }
                best_s[p] = v;
                best_i[p] = j;
            }
            for (int ki = 0; ki < o->nk; ki++) {
                const int64_t k = o->ks[ki] < have ? o->ks[ki] : have;
                memset(votes, 0, sizeof(double) * (size_t)C);
                for (int64_t j = 0; j < k; j++) votes[train_labels[best_i[j]]] += exp((double)best_s[j] / o->temperature);
                int64_t arg = 0;
                for (int64_t c = 1; c < C; c++)
                    if (votes[c] > votes[arg]) arg = c;
                correct[ki] += arg == y;
            }
        }
    }
    for (int ki = 0; ki < o->nk; ki++) top1[ki] = counted ? 100.0 * (double)correct[ki] / (double)counted : NAN;
done:
    if (dtrain) ex_be_free(be, dtrain);
    if (dq) ex_be_free(be, dq);
    if (dsims) ex_be_free(be, dsims);
    free(tn);
    free(qn);
    free(sims);
    free(best_s);
    free(best_i);
    free(votes);
    free(correct);
    return st;
}
