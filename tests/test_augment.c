/*
 * tests/test_augment.c — image transforms against torchvision 0.14 / PIL
 * (tests/fixtures/augment.safetensors, made by make_augment_fixtures.py):
 *   - crop + resize with PIL's bicubic and bilinear filters, down- and
 *     up-sampling: within 1/255 of PIL's uint8 output when rounding to the
 *     8-bit grid between passes as PIL does, 1.5/255 at full precision;
 *   - RandomResizedCrop.get_params run by torchvision itself with explora's
 *     Philox stream injected: the same boxes, including the fallback;
 *   - flip and normalisation by hand.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "explora/augment.h"
#include "explora/safetensors.h"
#include "test_support.h"

static ex_st_file *open_fixture(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/../fixtures/augment.safetensors", ext_env("EXPLORA_TEST_DATA_DIR"));
    ex_st_file *f;
    ex_err err;
    EXT_OK(ex_st_open(&f, path, &err), &err);
    return f;
}

static double *read_f64(const ex_st_file *f, const char *name, int64_t *n) {
    const ex_st_entry *e = ex_st_find(f, name);
    if (!e) fail_msg("fixture lacks %s", name);
    *n = 1;
    for (int i = 0; i < e->ndim; i++) *n *= e->shape[i];
    float *tmp = malloc(sizeof(float) * (size_t)*n);
    double *out = malloc(sizeof(double) * (size_t)*n);
    if (e->dtype == EX_F64) {
        memcpy(out, ex_st_data(f, e), sizeof(double) * (size_t)*n);
    } else {
        ex_err err;
        EXT_OK(ex_st_read_f32(f, e, tmp, *n, &err), &err);
        for (int64_t i = 0; i < *n; i++) out[i] = tmp[i];
    }
    free(tmp);
    return out;
}

static void test_resize_matches_pil(void **state) {
    (void)state;
    ex_st_file *f = open_fixture();
    int64_t n;
    double *img8 = read_f64(f, "image", &n);
    assert_int_equal(n, 37 * 53 * 3);
    float *img = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) img[i] = (float)(img8[i] / 255.0);
    int64_t nc;
    double *cases = read_f64(f, "resize.cases", &nc);
    const int ncase = (int)(nc / 7);
    assert_int_equal(ncase, 6);
    for (int quantize = 1; quantize >= 0; quantize--) {
    const double limit = (quantize ? 1.0 : 1.5) + 1e-3; /* float rounding of k/255 */
    double worst = 0;
    for (int k = 0; k < ncase; k++) {
        const double *c = cases + 7 * k;
        ex_box box = {(int64_t)c[0], (int64_t)c[1], (int64_t)c[2], (int64_t)c[3]};
        int64_t oh = (int64_t)c[4], ow = (int64_t)c[5];
        float *out = malloc(sizeof(float) * (size_t)(oh * ow * 3));
        ex_err err;
        EXT_OK(ex_resize_crop(img, 37, 53, 3, box, c[6] == 0 ? EX_FILTER_BICUBIC : EX_FILTER_BILINEAR, quantize, out, oh,
                              ow, &err),
               &err);
        char name[32];
        snprintf(name, sizeof name, "resize.%d", k);
        int64_t m;
        double *ref = read_f64(f, name, &m);
        assert_int_equal(m, oh * ow * 3);
        for (int64_t i = 0; i < m; i++) {
            /* PIL rounds to uint8 between its two passes and at the end; we stay in float */
            double got = fmin(fmax(out[i] * 255.0, 0.0), 255.0);
            double d = fabs(got - ref[i]);
            if (d > worst) worst = d;
            if (d > limit)
                fail_msg("%s (quantize %d): element %lld: %.3f vs PIL %g (more than %.1f/255 apart)", name, quantize,
                         (long long)i, got, ref[i], limit);
        }
        free(ref);
        free(out);
    }
    print_message("quantize %d: worst difference from PIL %.3f / 255\n", quantize, worst);
    }
    free(cases);
    free(img);
    free(img8);
    ex_st_close(f);
}

static void test_eval_transform_matches_torchvision(void **state) {
    (void)state;
    ex_st_file *f = open_fixture();
    int64_t n, nc;
    double *img8 = read_f64(f, "image", &n);
    float *img = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) img[i] = (float)(img8[i] / 255.0);
    double *cases = read_f64(f, "eval.cases", &nc);
    for (int k = 0; k < (int)(nc / 3); k++) {
        const int64_t shortside = (int64_t)cases[3 * k], oh = (int64_t)cases[3 * k + 1], ow = (int64_t)cases[3 * k + 2];
        float *out = malloc(sizeof(float) * (size_t)(oh * ow * 3));
        ex_err err;
        EXT_OK(ex_resize_center_crop(img, 37, 53, 3, shortside, EX_FILTER_BICUBIC, 1, out, oh, ow, &err), &err);
        char name[32];
        snprintf(name, sizeof name, "eval.%d", k);
        int64_t m;
        double *ref = read_f64(f, name, &m);
        assert_int_equal(m, oh * ow * 3);
        for (int64_t i = 0; i < m; i++)
            if (fabs(out[i] * 255.0 - ref[i]) > 1.0 + 1e-3)
                fail_msg("%s: element %lld: %.3f vs torchvision %g", name, (long long)i, out[i] * 255.0, ref[i]);
        free(ref);
        free(out);
    }
    free(cases);
    free(img);
    free(img8);
    ex_st_close(f);
}

static void test_random_resized_crop_matches_torchvision(void **state) {
    (void)state;
    ex_st_file *f = open_fixture();
    int64_t nc, nb;
    double *cases = read_f64(f, "rrc.cases", &nc);
    double *boxes = read_f64(f, "rrc.boxes", &nb);
    const int n = (int)(nc / 7);
    assert_int_equal(n, 40);
    int fallbacks = 0;
    for (int k = 0; k < n; k++) {
        const double *c = cases + 7 * k;
        ex_rng r = ex_rng_seed(11, EX_RNG_AUGMENT);
        r.offset = (uint64_t)c[6];
        ex_box b = ex_rrc_sample(&r, (int64_t)c[0], (int64_t)c[1], c[2], c[3], c[4], c[5]);
        const double *e = boxes + 4 * k;
        if (b.top != (int64_t)e[0] || b.left != (int64_t)e[1] || b.h != (int64_t)e[2] || b.w != (int64_t)e[3])
            fail_msg("case %d (%gx%g): box (%lld, %lld, %lld, %lld), torchvision (%g, %g, %g, %g)", k, c[0], c[1],
                     (long long)b.top, (long long)b.left, (long long)b.h, (long long)b.w, e[0], e[1], e[2], e[3]);
        if (c[4] == 0.2) fallbacks++;
    }
    assert_true(fallbacks >= 5);
    free(cases);
    free(boxes);
    ex_st_close(f);
}

static void test_flip_and_normalize(void **state) {
    (void)state;
    float img[2 * 3 * 2] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}; /* (2, 3, 2) */
    ex_flip_h(img, 2, 3, 2);
    const float flipped[12] = {4, 5, 2, 3, 0, 1, 10, 11, 8, 9, 6, 7};
    assert_memory_equal(img, flipped, sizeof img);
    float gray[4] = {0.0f, 0.5f, 1.0f, 0.25f}, out[12];
    const double mean[3] = {0.5, 0.25, 0.0}, std[3] = {0.5, 0.25, 2.0};
    ex_err err;
    EXT_OK(ex_normalize_chw(gray, 2, 2, 1, 3, mean, std, out, &err), &err);
    assert_float_equal(out[0], -1.0f, 1e-7);     /* channel 0, pixel 0 */
    assert_float_equal(out[4 + 1], 1.0f, 1e-7);  /* channel 1, pixel 1: (0.5-0.25)/0.25 */
    assert_float_equal(out[8 + 2], 0.5f, 1e-7);  /* channel 2, pixel 2: 1/2 */
    assert_int_equal(ex_normalize_chw(gray, 2, 2, 2, 3, mean, std, out, &err), EX_E_SHAPE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_matches_pil),
        cmocka_unit_test(test_eval_transform_matches_torchvision),
        cmocka_unit_test(test_random_resized_crop_matches_torchvision),
        cmocka_unit_test(test_flip_and_normalize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
