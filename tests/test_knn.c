/*
 * tests/test_knn.c — the weighted kNN classifier (DINO's knn.py rule) and the
 * classification metrics of explora/evaluate.h on known answers:
 *   - two well-separated clusters: 100% top-1 for k in {10, 20, 100, 200};
 *   - a 2-D case computed by hand: with T = 1 the two class-1 neighbours
 *     outvote the nearest class-0 one at k = 3 (e^0.98058 = 2.666 <
 *     e^0.83205 + e^0.19612 = 3.515) but not at k = 2, with T = 0.07 class 0
 *     wins at every k; features are normalised (scaled inputs change nothing);
 *   - macro-F1, top-1, top-5 and per-group accuracy on a hand-computed
 *     confusion matrix (sklearn's f1_score(average="macro") semantics: classes
 *     absent from labels and predictions do not count).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "explora/evaluate.h"
#include "test_support.h"

static void test_two_clusters_are_perfect(void **state) {
    (void)state;
    ex_backend be;
    ex_registry *reg;
    ext_backend_open("cpu", NULL, &be, &reg);
    enum { N = 200, M = 100, D = 16 };
    float *tr = malloc(sizeof(float) * N * D), *te = malloc(sizeof(float) * M * D);
    int64_t ltr[N], lte[M];
    ext_fill_uniform(tr, N * D, 3, -0.5f, 0.5f);
    ext_fill_uniform(te, M * D, 4, -0.5f, 0.5f);
    for (int i = 0; i < N; i++) {
        ltr[i] = i % 2;
        tr[i * D] += ltr[i] ? 5.0f : -5.0f;
    }
    for (int i = 0; i < M; i++) {
        lte[i] = (i / 3) % 2;
        te[i * D] += lte[i] ? 5.0f : -5.0f;
    }
    ex_knn_opts o;
    memset(&o, 0, sizeof o);
    o.ks[0] = 10, o.ks[1] = 20, o.ks[2] = 100, o.ks[3] = 200, o.nk = 4;
    o.temperature = 0.07, o.classes = 2;
    double top1[4];
    ex_err err;
    EXT_OK(ex_knn_classify(&be, tr, ltr, N, te, lte, M, D, &o, top1, &err), &err);
    for (int i = 0; i < 4; i++) assert_true(top1[i] == 100.0);
    /* swapped labels: 0% */
    for (int i = 0; i < M; i++) lte[i] = 1 - lte[i];
    EXT_OK(ex_knn_classify(&be, tr, ltr, N, te, lte, M, D, &o, top1, &err), &err);
    for (int i = 0; i < 4; i++) assert_true(top1[i] == 0.0);
    /* a training label outside classes */
    ltr[5] = 2;
    assert_int_equal(ex_knn_classify(&be, tr, ltr, N, te, lte, M, D, &o, top1, &err), EX_E_RANGE);
    free(tr);
    free(te);
    ext_backend_close(&be, reg);
}

static void test_hand_computed_votes(void **state) {
    (void)state;
    ex_backend be;
    ex_registry *reg;
    ext_backend_open("cpu", NULL, &be, &reg);
    /* train: (1,0) class 0, (0,1) class 1, (1,1) class 1, each scaled (normalisation must undo it);
     * query (1, 0.2) of class 0: cosine 0.98058, 0.19612, 0.83205 */
    const float tr[] = {3.0f, 0.0f, 0.0f, 0.5f, 2.0f, 2.0f};
    const int64_t ltr[] = {0, 1, 1};
    const float q[] = {5.0f, 1.0f, 1.0f, 0.2f}; /* the same query twice, at two scales */
    int64_t lq[] = {0, 0};
    ex_knn_opts o;
    memset(&o, 0, sizeof o);
    o.ks[0] = 1, o.ks[1] = 2, o.ks[2] = 3, o.ks[3] = 50, o.nk = 4; /* 50 > n: all 3 */
    o.temperature = 1.0, o.classes = 2;
    double top1[4];
    ex_err err;
    EXT_OK(ex_knn_classify(&be, tr, ltr, 3, q, lq, 2, 2, &o, top1, &err), &err);
    assert_true(top1[0] == 100.0); /* nearest: class 0 */
    assert_true(top1[1] == 100.0); /* 2.666 (class 0) > 2.298 (class 1) */
    assert_true(top1[2] == 0.0);   /* 2.666 < 2.298 + 1.217 = 3.515 */
    assert_true(top1[3] == 0.0);
    o.temperature = 0.07; /* e^14.008 dominates */
    EXT_OK(ex_knn_classify(&be, tr, ltr, 3, q, lq, 2, 2, &o, top1, &err), &err);
    for (int i = 0; i < 4; i++) assert_true(top1[i] == 100.0);
    /* unlabelled queries are not counted */
    lq[1] = -1;
    o.temperature = 1.0;
    EXT_OK(ex_knn_classify(&be, tr, ltr, 3, q, lq, 2, 2, &o, top1, &err), &err);
    assert_true(top1[0] == 100.0 && top1[2] == 0.0);
    ext_backend_close(&be, reg);
}

static void test_metrics_on_a_confusion_matrix(void **state) {
    (void)state;
    /* labels 0 0 0 1 1 2 (and one unlabelled), top-1 predictions 0 0 1 1 2 2:
     *   class 0: TP 2 FP 0 FN 1 -> F1 4/5;  class 1: TP 1 FP 1 FN 1 -> 1/2;  class 2: TP 1 FP 1 FN 0 -> 2/3
     *   macro-F1 = (0.8 + 0.5 + 0.6667) / 3 = 65.556%; classes 3, 4 never occur and do not count */
    const int64_t labels[] = {0, 0, 0, 1, 1, 2, -1};
    const int64_t pred[] = {0, 1, 0, 2, 1, 0, 1, 3, 2, 1, 2, 0, 4, 4}; /* (7, 2): best first */
    const int64_t groups[] = {0, 0, 1, 1, 1, -1, 0};
    ex_cls_metrics m;
    ex_err err;
    EXT_OK(ex_classification_metrics(pred, 2, labels, groups, 7, 5, &m, &err), &err);
    assert_int_equal(m.n, 6);
    assert_true(fabs(m.top1 - 400.0 / 6.0) < 1e-9);
    assert_true(fabs(m.top5 - 600.0 / 6.0) < 1e-9); /* every label is among the two best */
    assert_true(fabs(m.macro_f1 - 100.0 * (0.8 + 0.5 + 2.0 / 3.0) / 3.0) < 1e-9);
    assert_int_equal(m.ngroups, 2);
    assert_int_equal(m.group_n[0], 2);
    assert_int_equal(m.group_n[1], 3);
    assert_true(m.group_acc[0] == 100.0);
    assert_true(fabs(m.group_acc[1] - 100.0 / 3.0) < 1e-9);
    assert_true(fabs(m.worst_group_acc - 100.0 / 3.0) < 1e-9);
    ex_cls_metrics_free(&m);
    /* no groups; a perfect classifier */
    const int64_t perfect[] = {0, 0, 0, 1, 1, 2, 0};
    EXT_OK(ex_classification_metrics(perfect, 1, labels, NULL, 7, 3, &m, &err), &err);
    assert_true(m.top1 == 100.0 && m.macro_f1 == 100.0 && m.ngroups == 0 && isnan(m.worst_group_acc));
    ex_cls_metrics_free(&m);
    /* a label beyond classes */
    assert_int_equal(ex_classification_metrics(perfect, 1, labels, NULL, 7, 2, &m, &err), EX_E_RANGE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_clusters_are_perfect),
        cmocka_unit_test(test_hand_computed_votes),
        cmocka_unit_test(test_metrics_on_a_confusion_matrix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
