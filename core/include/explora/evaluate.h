/*
 * explora/evaluate.h — classification metrics of a fine-tuned model and the
 * kNN classifier on frozen features (DINO's eval_knn.py protocol).
 *
 * Metrics (ex_classification_metrics), over the n samples with a label >= 0:
 *   top1, top5   % of samples whose label is the best / among the 5 best predictions
 *   macro_f1     % — sklearn f1_score(average = "macro"): the mean over the classes that
 *                occur among the labels or the top-1 predictions of 2 TP / (2 TP + FP + FN)
 *   per group    (samples with group >= 0, WILDS style) top-1 per group, the worst group
 *
 * kNN (ex_knn_classify): train and test features are L2-normalised, the
 * similarity is their dot product (cosine), each test sample takes its k most
 * similar training samples (k in opts.ks; one pass with the largest k, the
 * neighbours sorted by similarity) and each neighbour votes for its label
 * with weight exp(similarity / T); the class with the most weight is the
 * prediction (ties: the lower class index). Similarities run on the backend
 * (GEMM), in chunks of test rows.
 */
#ifndef EXPLORA_EVALUATE_H
#define EXPLORA_EVALUATE_H

#include <stdint.h>

#include "explora/backend.h"
#include "explora/export.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ex_cls_metrics {
    int64_t n;              /* labelled samples counted */
    int64_t classes;
    double top1, top5, macro_f1; /* % */
    int64_t ngroups;        /* max group id + 1 (0: no groups) */
    double *group_acc;      /* (ngroups) top-1 % per group, NAN for an empty group; owned */
    int64_t *group_n;       /* (ngroups) samples per group; owned */
    double worst_group_acc; /* %, NAN without groups */
} ex_cls_metrics;

/* predictions (n, k): class indices best first (k >= 1; top5 uses the first min(k, 5));
 * labels (n) (< 0: not counted); groups (n) or NULL; classes > every label and prediction. */
EX_API ex_status ex_classification_metrics(const int64_t *predictions, int k, const int64_t *labels,
                                           const int64_t *groups, int64_t n, int64_t classes, ex_cls_metrics *out,
                                           ex_err *err);
EX_API void ex_cls_metrics_free(ex_cls_metrics *m);

#define EX_KNN_MAX_K 16

typedef struct ex_knn_opts {
    int64_t ks[EX_KNN_MAX_K]; /* neighbour counts, e.g. {10, 20, 100, 200} */
    int nk;
    double temperature;       /* 0.07 */
    int64_t classes;          /* > every label */
} ex_knn_opts;

/* train (n, d) with train_labels (n); test (m, d) with test_labels (m) (< 0: not counted);
 * top1 (nk): % of correct test samples for each k (a k above n uses all n neighbours). */
EX_API ex_status ex_knn_classify(ex_backend *be, const float *train, const int64_t *train_labels, int64_t n,
                                 const float *test, const int64_t *test_labels, int64_t m, int64_t d,
                                 const ex_knn_opts *o, double *top1, ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_EVALUATE_H */
