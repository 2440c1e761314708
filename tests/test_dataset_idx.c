/*
 * tests/test_dataset_idx.c — the `idx` dataset plugin: good files, labels,
 * class names and limit; hostile files (bad magic, wrong type, truncated,
 * trailing bytes, zero and huge dimensions, corrupt gzip, label mismatch);
 * and, when Debian's dataset-fashion-mnist is installed, real Fashion-MNIST
 * values checked against numbers read independently with Python's gzip module.
 */
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "explora/config.h"
#include "test_support.h"

typedef struct fixture {
    ex_registry *reg;
    const ex_plugin *plugin;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    ex_err err;
    if (ex_registry_new(&f->reg, &err) || ex_registry_add_dir(f->reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err) ||
        ex_registry_scan(f->reg, &err) || ex_registry_find(f->reg, EX_PLUGIN_DATASET, "idx", &f->plugin, &err))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    ex_registry_free(f->reg);
    free(f);
    return 0;
}

/* Open the dataset with the given [data] body; returns the status, fills *ds and err. */
static ex_status open_ds(fixture *f, const char *body, void **ds, ex_err *err) {
    char text[8192];
    snprintf(text, sizeof text, "[data]\nname = idx\n%s", body);
    ex_config *cfg;
    EXT_OK(ex_config_load_string(&cfg, text, "idx-test.ini", err), err);
    ex_err e2;
    ex_err_clear(&e2);
    EXT_OK(ex_config_validate_section(cfg, "data", f->plugin->desc.keys, (const char *const[]){"name", NULL}, &e2), &e2);
    ex_cfg_section view = {cfg, "data", f->plugin->desc.keys};
    ex_status st = f->plugin->vtable_copy.dataset.open(&view, ds, err);
    ex_config_free(cfg);
    return st;
}

/* An IDX header + payload into a temp file. */
static void write_idx(char *path, size_t cap, const char *name, const unsigned char *head, size_t hlen,
                      const unsigned char *data, size_t dlen) {
    ext_tmp_path(path, cap, name);
    unsigned char *buf = malloc(hlen + dlen + 1);
    memcpy(buf, head, hlen);
    if (dlen) memcpy(buf + hlen, data, dlen);
    ext_write_file(path, buf, hlen + dlen);
    free(buf);
}

static void test_reads_images_labels_names(void **state) {
    fixture *f = *state;
    /* 3 images of 2x3, labels 2, 0, 1 */
    const unsigned char ih[] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 3};
    unsigned char px[18];
    for (int i = 0; i < 18; i++) px[i] = (unsigned char)(i * 15);
    const unsigned char lh[] = {0, 0, 8, 1, 0, 0, 0, 3};
    const unsigned char lb[] = {2, 0, 1};
    char ip[4096], lp[4096], body[9000];
    write_idx(ip, sizeof ip, "img.idx", ih, sizeof ih, px, sizeof px);
    write_idx(lp, sizeof lp, "lab.idx", lh, sizeof lh, lb, sizeof lb);
    snprintf(body, sizeof body, "images = %s\nlabels = %s\nclass_names = zero, one, two, three\n", ip, lp);
    ex_err err;
    void *ds;
    EXT_OK(open_ds(f, body, &ds, &err), &err);
    const ex_dataset_vtable *vt = &f->plugin->vtable_copy.dataset;
    assert_int_equal(vt->length(ds), 3);
    assert_int_equal(vt->num_classes(ds), 4); /* from the names, more than the labels used */
    assert_string_equal(vt->class_name(ds, 2), "two");
    assert_null(vt->class_name(ds, 4));
    ex_sample s;
    EXT_OK(vt->get(ds, 1, &s, &err), &err);
    assert_int_equal(s.width, 3);
    assert_int_equal(s.height, 2);
    assert_int_equal(s.channels, 1);
    assert_int_equal(s.label, 0);
    assert_float_equal(s.pixels[0], 90.0f / 255.0f, 1e-7); /* byte 6 */
    assert_float_equal(s.pixels[5], 165.0f / 255.0f, 1e-7);
    ex_sample_clear(&s);
    assert_int_equal(vt->get(ds, 3, &s, &err), EX_E_RANGE);
    vt->close(ds);

    /* unlabeled, limited */
    snprintf(body, sizeof body, "images = %s\nlimit = 2\n", ip);
    EXT_OK(open_ds(f, body, &ds, &err), &err);
    assert_int_equal(vt->length(ds), 2);
    assert_int_equal(vt->num_classes(ds), 0);
    EXT_OK(vt->get(ds, 0, &s, &err), &err);
    assert_int_equal(s.label, -1);
    ex_sample_clear(&s);
    vt->close(ds);
}

static void expect_open_error(fixture *f, const char *name, const unsigned char *head, size_t hlen,
                              const unsigned char *data, size_t dlen, ex_status code, const char *needle) {
    char ip[4096], body[8192];
    write_idx(ip, sizeof ip, name, head, hlen, data, dlen);
    snprintf(body, sizeof body, "images = %s\n", ip);
    ex_err err;
    ex_err_clear(&err);
    void *ds = NULL;
    assert_int_equal(open_ds(f, body, &ds, &err), code);
    if (!strstr(err.msg, ip)) fail_msg("%s: message does not name the file: %s", name, err.msg);
    if (!strstr(err.msg, needle)) fail_msg("%s: message lacks '%s': %s", name, needle, err.msg);
    unlink(ip);
}

static void test_hostile_files(void **state) {
    fixture *f = *state;
    unsigned char px[64] = {0};
    const unsigned char ok[] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2};
    expect_open_error(f, "empty", ok, 0, NULL, 0, EX_E_FORMAT, "4-byte IDX magic");
    expect_open_error(f, "magic", (const unsigned char[]){1, 2, 8, 3}, 4, NULL, 0, EX_E_FORMAT, "not an IDX file");
    expect_open_error(f, "type", (const unsigned char[]){0, 0, 0x0D, 3}, 4, NULL, 0, EX_E_FORMAT, "f32");
    expect_open_error(f, "ndim", (const unsigned char[]){0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 1}, 12, px, 1, EX_E_FORMAT,
                      "2 dimensions; expected 3");
    expect_open_error(f, "dims", ok, 10, NULL, 0, EX_E_FORMAT, "inside the dimension list");
    expect_open_error(f, "zero", (const unsigned char[]){0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2}, 16, NULL, 0,
                      EX_E_FORMAT, "dimension 0 is 0");
    expect_open_error(f, "huge", (const unsigned char[]){0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                         0xff, 0xff, 0xff, 0xff},
                      16, NULL, 0, EX_E_FORMAT, "refusing");
    expect_open_error(f, "short", ok, sizeof ok, px, 3, EX_E_FORMAT, "truncated: 3 of 4");
    expect_open_error(f, "long", ok, sizeof ok, px, 5, EX_E_FORMAT, "trailing bytes");
    /* a gzip header followed by garbage */
    const unsigned char gz[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6};
    char ip[4096], body[9000];
    write_idx(ip, sizeof ip, "badgz", gz, sizeof gz, NULL, 0);
    snprintf(body, sizeof body, "images = %s\n", ip);
    ex_err err;
    void *ds = NULL;
    assert_int_equal(open_ds(f, body, &ds, &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, ip));
    /* missing file */
    assert_int_equal(open_ds(f, "images = /nonexistent/x.idx\n", &ds, &err), EX_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.idx"));
    /* labels that do not match the images */
    char lp[512];
    write_idx(ip, sizeof ip, "img2", ok, sizeof ok, px, 4);
    write_idx(lp, sizeof lp, "lab2", (const unsigned char[]){0, 0, 8, 1, 0, 0, 0, 2}, 8, px, 2);
    snprintf(body, sizeof body, "images = %s\nlabels = %s\n", ip, lp);
    assert_int_equal(open_ds(f, body, &ds, &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "holds 2 labels"));
    /* more labels used than names given */
    write_idx(lp, sizeof lp, "lab3", (const unsigned char[]){0, 0, 8, 1, 0, 0, 0, 1}, 8, (const unsigned char[]){5}, 1);
    snprintf(body, sizeof body, "images = %s\nlabels = %s\nclass_names = a, b\n", ip, lp);
    assert_int_equal(open_ds(f, body, &ds, &err), EX_E_CONFIG);
    assert_non_null(strstr(err.msg, "labels up to 5"));
}

static void test_real_fashion_mnist(void **state) {
    fixture *f = *state;
    const char *dir = "/usr/share/datasets/fashion-mnist";
    char img[512], lab[512];
    snprintf(img, sizeof img, "%s/t10k-images-idx3-ubyte.gz", dir);
    snprintf(lab, sizeof lab, "%s/t10k-labels-idx1-ubyte.gz", dir);
    if (access(img, R_OK) != 0 || access(lab, R_OK) != 0) {
        print_message("Fashion-MNIST not installed (package dataset-fashion-mnist); skipping\n");
        skip();
    }
    char body[2048];
    snprintf(body, sizeof body, "images = %s\nlabels = %s\n", img, lab);
    ex_err err;
    void *ds;
    EXT_OK(open_ds(f, body, &ds, &err), &err);
    const ex_dataset_vtable *vt = &f->plugin->vtable_copy.dataset;
    assert_int_equal(vt->length(ds), 10000);
    assert_int_equal(vt->num_classes(ds), 10);
    /* reference values read with Python's gzip module from the same files:
     * image 0 byte sum 33456, label 9; image 9999 byte sum 24390, label 5; image 5 pixel (14,14) = 2 */
    ex_sample s;
    EXT_OK(vt->get(ds, 0, &s, &err), &err);
    double sum = 0;
    for (int i = 0; i < 784; i++) sum += s.pixels[i] * 255.0;
    assert_float_equal(sum, 33456.0, 0.05);
    assert_int_equal(s.label, 9);
    ex_sample_clear(&s);
    EXT_OK(vt->get(ds, 9999, &s, &err), &err);
    sum = 0;
    for (int i = 0; i < 784; i++) sum += s.pixels[i] * 255.0;
    assert_float_equal(sum, 24390.0, 0.05);
    assert_int_equal(s.label, 5);
    ex_sample_clear(&s);
    EXT_OK(vt->get(ds, 5, &s, &err), &err);
    assert_float_equal(s.pixels[14 * 28 + 14], 2.0f / 255.0f, 1e-7);
    ex_sample_clear(&s);
    vt->close(ds);
}

/* The simulated camera: photons = 0 leaves the images alone; otherwise a grey 0.5 image gets the Poisson shot
 * noise, read noise and ADC of idx_sensor.h (mean and standard deviation of the DN over many pixels), fixed per
 * (seed, index), different for another index or seed; blur spreads a bright dot. */
static void test_sensor_simulation(void **state) {
    fixture *f = *state;
    enum { N = 8, H = 28, W = 28 };
    const unsigned char ih[] = {0, 0, 8, 3, 0, 0, 0, N, 0, 0, 0, H, 0, 0, 0, W};
    static unsigned char px[N * H * W];
    for (int i = 0; i < N * H * W; i++) px[i] = i < (N - 1) * H * W ? 128 : 0; /* 7 grey images, then black */
    px[(N - 1) * H * W + 14 * W + 14] = 255;                                     /* one bright dot in the last */
    char ip[4096], body[9000];
    write_idx(ip, sizeof ip, "grey.idx", ih, sizeof ih, px, sizeof px);
    const ex_dataset_vtable *vt = &f->plugin->vtable_copy.dataset;
    ex_err err;
    void *ds;
    ex_sample a, b;
    /* photons 50, read noise 2 e-, black 16 DN: gain (255 - 16) / 50 DN per electron; grey 128 gives
     * 25.1 electrons on average (the Poisson inverse-CDF path), DN 136 +- 26, far from the ADC's limits */
    snprintf(body, sizeof body, "images = %s\nsensor_photons = 50\nsensor_read_noise = 2\nsensor_black = 16\n", ip);
    EXT_OK(open_ds(f, body, &ds, &err), &err);
    double s1 = 0, s2 = 0;
    const int n = (N - 1) * H * W;
    for (int i = 0; i < N - 1; i++) {
        EXT_OK(vt->get(ds, i, &a, &err), &err);
        for (int k = 0; k < H * W; k++) {
            const double dn = (double)a.pixels[k] * 255.0;
            assert_true(fabs(dn - nearbyint(dn)) < 1e-3); /* on the ADC's 8-bit grid */
            s1 += dn, s2 += dn * dn;
        }
        ex_sample_clear(&a);
    }
    const double gain = 239.0 / 50.0, lambda = 50.0 * 128.0 / 255.0;
    const double mean = s1 / n, sd = sqrt(s2 / n - mean * mean);
    const double want_mean = 16.0 + gain * lambda, want_sd = gain * sqrt(lambda + 4.0);
    if (fabs(mean - want_mean) > 2.0 || fabs(sd - want_sd) > 0.04 * want_sd)
        fail_msg("DN mean %.2f (want %.2f), sd %.2f (want %.2f)", mean, want_mean, sd, want_sd);
    EXT_OK(vt->get(ds, 2, &a, &err), &err);
    EXT_OK(vt->get(ds, 2, &b, &err), &err);
    assert_memory_equal(a.pixels, b.pixels, sizeof(float) * H * W); /* one capture */
    ex_sample_clear(&b);
    EXT_OK(vt->get(ds, 3, &b, &err), &err);
    assert_memory_not_equal(a.pixels, b.pixels, sizeof(float) * H * W);
    ex_sample_clear(&b);
    vt->close(ds);
    snprintf(body, sizeof body, "images = %s\nsensor_photons = 6\nsensor_seed = 1\n", ip);
    EXT_OK(open_ds(f, body, &ds, &err), &err);
    EXT_OK(vt->get(ds, 2, &b, &err), &err);
    assert_memory_not_equal(a.pixels, b.pixels, sizeof(float) * H * W);
    ex_sample_clear(&a);
    ex_sample_clear(&b);
    vt->close(ds);
    /* blur without noise (a very bright sensor): the dot spreads to its neighbours */
    snprintf(body, sizeof body, "images = %s\nsensor_photons = 1e6\nsensor_read_noise = 0\nsensor_black = 0\nsensor_blur = 1\n", ip);
    EXT_OK(open_ds(f, body, &ds, &err), &err);
    EXT_OK(vt->get(ds, N - 1, &a, &err), &err);
    const float c = a.pixels[14 * W + 14], r1 = a.pixels[14 * W + 15], r3 = a.pixels[14 * W + 17];
    assert_true(c < 0.5f && r1 > 0.02f && r1 < c && r3 < r1); /* Gaussian sigma 1: centre 0.16, 1 px 0.10 of 255 */
    ex_sample_clear(&a);
    vt->close(ds);
    /* no simulation: the stored bytes */
    snprintf(body, sizeof body, "images = %s\n", ip);
    EXT_OK(open_ds(f, body, &ds, &err), &err);
    EXT_OK(vt->get(ds, 0, &a, &err), &err);
    assert_true(a.pixels[0] == 128.0f / 255.0f);
    ex_sample_clear(&a);
    vt->close(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_images_labels_names),
        cmocka_unit_test(test_hostile_files),
        cmocka_unit_test(test_real_fashion_mnist),
        cmocka_unit_test(test_sensor_simulation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
