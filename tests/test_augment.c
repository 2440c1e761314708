/*
 * tests/test_augment.c — image transforms against torchvision 0.14 / PIL
 * (tests/fixtures/augment.safetensors, made by make_augment_fixtures.py):
 *   - crop + resize with PIL's bicubic and bilinear filters, down- and
 *     up-sampling: within 1/255 of PIL's uint8 output when rounding to the
 *     8-bit grid between passes as PIL does, 1.5/255 at full precision;
 *   - RandomResizedCrop.get_params run by torchvision itself with explora's
 *     Philox stream injected: the same boxes, including the fallback;
 *   - flip and normalisation by hand;
 *   - colour ops at fixed parameters (brightness, contrast, saturation, hue,
 *     grayscale, gaussian blur, solarize): the PIL path (quantize 1) within
 *     1/255 of torchvision on the PIL image, the float path within 1e-4 of
 *     torchvision on the float tensor (hue: PIL's 8-bit HSV emulated by the
 *     quantize path, torchvision's float HSV by the float path);
 *   - ColorJitter.get_params run by torchvision with explora's stream
 *     injected: the same op order and factors;
 *   - the whole colour chain (RandomApply(ColorJitter), RandomGrayscale,
 *     RandomApply(GaussianBlur), RandomSolarize) on the PIL image with every
 *     draw from explora's stream: the same draws, output within 1/255.
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

static float *colour_image(const ex_st_file *f) {
    int64_t n;
    double *img8 = read_f64(f, "colour.image", &n);
    assert_int_equal(n, 8 * 12 * 3);
    float *img = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) img[i] = (float)(img8[i] / 255.0);
    free(img8);
    return img;
}

static void test_colour_ops_match_torchvision(void **state) {
    (void)state;
    ex_st_file *f = open_fixture();
    float *img = colour_image(f);
    int64_t nc;
    double *cases = read_f64(f, "colour.cases", &nc);
    const int64_t H = 8, W = 12, N = H * W * 3;
    float *out = malloc(sizeof(float) * (size_t)N), *tmp = malloc(sizeof(float) * (size_t)N);
    static const char *names[] = {"brightness", "contrast", "saturation", "hue", "blur", "grayscale", "solarize"};
    for (int k = 0; k < (int)(nc / 2); k++) {
        const int op = (int)cases[2 * k];
        const double prm = cases[2 * k + 1];
        for (int quantize = 1; quantize >= 0; quantize--) {
            memcpy(out, img, sizeof(float) * (size_t)N);
            ex_err err;
            switch (op) {
            case 0: ex_adjust_brightness(out, H, W, 3, prm, quantize); break;
            case 1: ex_adjust_contrast(out, H, W, 3, prm, quantize); break;
            case 2: ex_adjust_saturation(out, H, W, 3, prm, quantize); break;
            case 3: ex_adjust_hue(out, H, W, 3, prm, quantize); break;
            case 4: EXT_OK(ex_gaussian_blur(out, H, W, 3, 9, prm, quantize, tmp, &err), &err); break;
            case 5: ex_grayscale(out, H, W, 3, quantize); break;
            default: ex_solarize(out, H, W, 3, 128); break;
            }
            char name[48];
            snprintf(name, sizeof name, "colour.%s.%d", quantize ? "pil" : "float", k);
            int64_t m;
            double *ref = read_f64(f, name, &m);
            assert_int_equal(m, N);
            double worst = 0.0;
            for (int64_t i = 0; i < N; i++) {
                const double d = quantize ? fabs(out[i] * 255.0 - ref[i]) : fabs(out[i] - ref[i]);
                if (d > worst) worst = d;
                if (d > (quantize ? 1.0 + 1e-3 : 1e-4))
                    fail_msg("%s (%s %g): element %lld: %.5f vs torchvision %.5f", name, names[op], prm, (long long)i,
                             quantize ? out[i] * 255.0 : out[i], ref[i]);
            }
            print_message("%-10s %-5g %s: worst %.2g%s\n", names[op], prm, quantize ? "PIL  " : "float", worst,
                          quantize ? "/255" : "");
            free(ref);
        }
    }
    /* 1-channel images: saturation, hue and grayscale leave them alone */
    float g[4] = {0.1f, 0.5f, 0.7f, 1.0f}, g0[4];
    memcpy(g0, g, sizeof g);
    ex_adjust_saturation(g, 2, 2, 1, 0.3, 0);
    ex_adjust_hue(g, 2, 2, 1, 0.3, 0);
    ex_grayscale(g, 2, 2, 1, 0);
    assert_memory_equal(g, g0, sizeof g);
    ex_err err;
    assert_int_equal(ex_gaussian_blur(g, 2, 2, 1, 8, 1.0, 0, tmp, &err), EX_E_INVALID);
    free(out);
    free(tmp);
    free(cases);
    free(img);
    ex_st_close(f);
}

static void test_color_jitter_params_match_torchvision(void **state) {
    (void)state;
    ex_st_file *f = open_fixture();
    int64_t nc, nd;
    double *cases = read_f64(f, "cj.cases", &nc);
    double *draws = read_f64(f, "cj.draws", &nd);
    const int n = (int)(nc / 5);
    assert_int_equal(n, 16);
    float img[3] = {0.2f, 0.4f, 0.6f}, tmp[3];
    for (int k = 0; k < n; k++) {
        const double *c = cases + 5 * k, *e = draws + 8 * k;
        ex_colour_params p;
        memset(&p, 0, sizeof p);
        p.brightness = c[0];
        p.contrast = c[1];
        p.saturation = c[2];
        p.hue = c[3];
        p.jitter_p = 1.0;
        ex_rng r = ex_rng_seed(11, EX_RNG_AUGMENT);
        r.offset = (uint64_t)c[4] - 1; /* jitter_p 1: the apply draw comes first and always passes */
        ex_colour_draws d;
        ex_err err;
        EXT_OK(ex_colour_apply(&r, &p, img, 1, 1, 3, 0, tmp, &d, &err), &err);
        assert_true(d.jitter);
        for (int i = 0; i < 4; i++)
            if (d.order[i] != (int)e[i])
                fail_msg("case %d: order %d %d %d %d, torchvision %g %g %g %g", k, d.order[0], d.order[1], d.order[2],
                         d.order[3], e[0], e[1], e[2], e[3]);
        for (int i = 0; i < 4; i++)
            if (d.factors[i] != e[4 + i]) fail_msg("case %d: factor %d %.9g, torchvision %.9g", k, i, d.factors[i], e[4 + i]);
    }
    free(cases);
    free(draws);
    ex_st_close(f);
}

static void test_colour_chain_matches_torchvision(void **state) {
    (void)state;
    ex_st_file *f = open_fixture();
    float *img = colour_image(f);
    int64_t nc, nd;
    double *cases = read_f64(f, "chain.cases", &nc);
    double *draws = read_f64(f, "chain.draws", &nd);
    const int n = (int)(nc / 11);
    assert_int_equal(n, 24);
    const int64_t H = 8, W = 12, N = H * W * 3;
    float *out = malloc(sizeof(float) * (size_t)N), *tmp = malloc(sizeof(float) * (size_t)N);
    int applied[4] = {0, 0, 0, 0};
    for (int k = 0; k < n; k++) {
        const double *c = cases + 11 * k, *e = draws + 9 * k;
        ex_colour_params p = {c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], 128.0};
        ex_rng r = ex_rng_seed(11, EX_RNG_AUGMENT);
        r.offset = (uint64_t)c[10];
        memcpy(out, img, sizeof(float) * (size_t)N);
        ex_colour_draws d;
        ex_err err;
        EXT_OK(ex_colour_apply(&r, &p, out, H, W, 3, 1, tmp, &d, &err), &err);
        if (d.jitter != (e[0] >= 0)) fail_msg("chain %d: jitter %d, torchvision %d", k, d.jitter, e[0] >= 0);
        if (d.jitter)
            for (int i = 0; i < 4; i++)
                if (d.order[i] != (int)e[i] || d.factors[i] != e[4 + i])
                    fail_msg("chain %d: op %d: order %d factor %.9g, torchvision %g %.9g", k, i, d.order[i],
                             d.factors[i], e[i], e[4 + i]);
        if (d.blur != (e[8] >= 0) || (d.blur && d.sigma != e[8]))
            fail_msg("chain %d: blur %d sigma %.9g, torchvision %.9g", k, d.blur, d.sigma, e[8]);
        applied[0] += d.jitter;
        applied[1] += d.grayscale;
        applied[2] += d.blur;
        applied[3] += d.solarize;
        char name[32];
        snprintf(name, sizeof name, "chain.%d", k);
        int64_t m;
        double *ref = read_f64(f, name, &m);
        assert_int_equal(m, N);
        for (int64_t i = 0; i < N; i++)
            if (fabs(out[i] * 255.0 - ref[i]) > 1.0 + 1e-3)
                fail_msg("%s (jitter %d gray %d blur %d solarize %d): element %lld: %.3f vs torchvision %g", name,
                         d.jitter, d.grayscale, d.blur, d.solarize, (long long)i, out[i] * 255.0, ref[i]);
        free(ref);
    }
    print_message("applied over %d chains: jitter %d, grayscale %d, blur %d, solarize %d\n", n, applied[0], applied[1],
                  applied[2], applied[3]);
    for (int i = 0; i < 4; i++) assert_true(applied[i] >= 2);
    /* all zero: nothing drawn, nothing changed */
    ex_colour_params none;
    memset(&none, 0, sizeof none);
    ex_rng r = ex_rng_seed(1, EX_RNG_AUGMENT);
    memcpy(out, img, sizeof(float) * (size_t)N);
    ex_err err;
    EXT_OK(ex_colour_apply(&r, &none, out, H, W, 3, 0, tmp, NULL, &err), &err);
    assert_int_equal(r.offset, 0);
    assert_memory_equal(out, img, sizeof(float) * (size_t)N);
    free(out);
    free(tmp);
    free(cases);
    free(draws);
    free(img);
    ex_st_close(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_matches_pil),
        cmocka_unit_test(test_eval_transform_matches_torchvision),
        cmocka_unit_test(test_random_resized_crop_matches_torchvision),
        cmocka_unit_test(test_flip_and_normalize),
        cmocka_unit_test(test_colour_ops_match_torchvision),
        cmocka_unit_test(test_color_jitter_params_match_torchvision),
        cmocka_unit_test(test_colour_chain_matches_torchvision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
