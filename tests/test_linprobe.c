/*
 * tests/test_linprobe.c — the linear-probe protocol on features with known
 * answers: classes that a linear map separates are learned (top-1 near 100%
 * on held-out points, for the right input variant), random labels stay near
 * chance, the grid reports every (blocks, avgpool, lr), and the feature cache
 * round-trips.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "explora/features.h"
#include "test_support.h"

/* n points; the class is decided by the patch-mean part only (argmax of a fixed map), unless random. */
static void make_features(ex_features *f, int64_t n, int64_t nb, int64_t d, int64_t classes, uint64_t seed, int random) {
    f->n = n;
    f->nblocks = nb;
    f->dim = d;
    f->cls = malloc(sizeof(float) * (size_t)(n * nb * d));
    f->patch = malloc(sizeof(float) * (size_t)(n * d));
    f->labels = malloc(sizeof(int64_t) * (size_t)n);
    ext_fill_uniform(f->cls, (size_t)(n * nb * d), seed, -1, 1);
    ext_fill_uniform(f->patch, (size_t)(n * d), seed + 1, -1, 1);
    ex_rng r = ex_rng_seed(seed, EX_RNG_TEST);
    for (int64_t i = 0; i < n; i++) {
        if (random) {
            f->labels[i] = ex_rng_next_below(&r, (uint32_t)classes);
            continue;
        }
        int64_t best = 0;
        double bv = -1e9;
        for (int64_t c = 0; c < classes; c++) {
            double v = 0;
            for (int64_t j = 0; j < d; j++) v += f->patch[i * d + j] * sin((double)(c * 7 + j) * 0.9); /* a fixed map */
            if (v > bv) bv = v, best = c;
        }
        f->labels[i] = best;
    }
}

static void test_separable_classes_are_learned(void **state) {
    (void)state;
    ex_backend be;
    ex_registry *reg;
    ext_backend_open("cpu", NULL, &be, &reg);
    ex_features tr, va;
    make_features(&tr, 2048, 2, 8, 3, 11, 0);
    make_features(&va, 512, 2, 8, 3, 99, 0);
    ex_probe_opts o;
    memset(&o, 0, sizeof o);
    o.lrs[0] = 1e-3, o.lrs[1] = 0.1, o.nlrs = 2;
    o.nblocks[0] = 1, o.nblocks[1] = 2, o.nnb = 2;
    o.avgpool = 2, o.epochs = 30, o.batch = 64, o.seed = 5;
    ex_probe_result res[16];
    int count = 0, best = -1;
    ex_err err;
    EXT_OK(ex_linear_probe(&be, &tr, &va, 3, &o, res, 16, &count, &best, NULL, &err), &err);
    assert_int_equal(count, 8); /* 2 block counts x 2 avgpool x 2 lrs */
    /* the classes live in the patch mean: only avgpool inputs can learn them */
    assert_int_equal(res[best].avgpool, 1);
    assert_true(res[best].top1 > 95.0);
    for (int i = 0; i < count; i++)
        if (!res[i].avgpool) assert_true(res[i].top1 < 60.0);
    /* random labels: chance level */
    ex_features rtr, rva;
    make_features(&rtr, 2048, 2, 8, 3, 21, 1);
    make_features(&rva, 600, 2, 8, 3, 22, 1);
    EXT_OK(ex_linear_probe(&be, &rtr, &rva, 3, &o, res, 16, &count, &best, NULL, &err), &err);
    assert_true(res[best].top1 < 45.0);
    /* bad input */
    o.nblocks[0] = 3;
    assert_int_equal(ex_linear_probe(&be, &tr, &va, 3, &o, res, 16, &count, &best, NULL, &err), EX_E_CONFIG);
    tr.labels[0] = 7;
    o.nblocks[0] = 1;
    assert_int_equal(ex_linear_probe(&be, &tr, &va, 3, &o, res, 16, &count, &best, NULL, &err), EX_E_RANGE);
    /* cache round trip */
    char path[4096];
    ext_tmp_path(path, sizeof path, "features.safetensors");
    EXT_OK(ex_features_save(&va, path, &err), &err);
    ex_features back;
    EXT_OK(ex_features_load(&back, path, &err), &err);
    assert_int_equal(back.n, va.n);
    assert_int_equal(back.nblocks, 2);
    assert_memory_equal(back.cls, va.cls, sizeof(float) * (size_t)(va.n * 2 * 8));
    assert_memory_equal(back.patch, va.patch, sizeof(float) * (size_t)(va.n * 8));
    assert_memory_equal(back.labels, va.labels, sizeof(int64_t) * (size_t)va.n);
    ex_features_free(&back);
    ex_features_free(&tr);
    ex_features_free(&va);
    ex_features_free(&rtr);
    ex_features_free(&rva);
    ext_backend_close(&be, reg);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_separable_classes_are_learned)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
