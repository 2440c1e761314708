/*
 * tests/test_dataset_fmow.c — the `fmow` (fMoW-RGB CSV) and `fmow-sentinel`
 * (13-band GeoTIFF CSV) dataset plugins, opened through the registry on
 * layouts made here: labels, ids, class names, path_prefix and "//"
 * collapsing, quoted fields; Sentinel row filtering (years 2000-2020),
 * sorting by (category, location_id, timestamp), the rebuilt paths,
 * SentinelNormalize on known inputs (values computed independently, in
 * float64 with truncation to uint8, as SatMAE does) and the band drop order;
 * errors naming "<csv>:<line>:" (bad labels, a header that is data, missing
 * images, unknown categories, bad timestamps), a bad dropped_bands and an
 * image with the wrong number of bands.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

#include "explora/config.h"
#include "test_support.h"
#include "test_tiff.h"

typedef struct fixture {
    ex_registry *reg;
    char dir[4096];
} fixture;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void mkdirs(const char *path) {
    char tmp[8192];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

static void copy_fixture(const char *name, const char *dst) {
    char src[4096];
    snprintf(src, sizeof src, "%s/images/%s", ext_env("EXPLORA_TEST_DATA_DIR"), name);
    FILE *fp = fopen(src, "rb");
    if (!fp) fail_msg("cannot open %s", src);
    unsigned char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    ext_write_file(dst, buf, n);
}

static void put(const fixture *f, const char *rel, const char *text) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", f->dir, rel);
    ext_write_file(p, text, strlen(text));
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    ex_err err;
    if (ex_registry_new(&f->reg, &err) || ex_registry_add_dir(f->reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err) ||
        ex_registry_scan(f->reg, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    ext_tmp_path(f->dir, sizeof f->dir, "fmow");
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    mkdirs(f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    ex_registry_free(f->reg);
    free(f);
    return 0;
}

/* Open plugin `name` on the INI body `keys` ("csv = ...\n..."). */
static ex_status open_ds(fixture *f, const char *name, const char *keys, const ex_dataset_vtable **vt, void **ds,
                         ex_err *err) {
    const ex_plugin *pl = NULL;
    EXT_OK(ex_registry_find(f->reg, EX_PLUGIN_DATASET, name, &pl, err), err);
    *vt = &pl->vtable_copy.dataset;
    char text[16384];
    snprintf(text, sizeof text, "[data]\nname = %s\n%s", name, keys);
    ex_config *cfg;
    EXT_OK(ex_config_load_string(&cfg, text, "fmow-test.ini", err), err);
    ex_status st = ex_config_validate_section(cfg, "data", pl->desc.keys, (const char *const[]){"name", NULL}, err);
    ex_cfg_section view = {cfg, "data", pl->desc.keys};
    *ds = NULL;
    if (st == EX_OK) st = (*vt)->open(&view, ds, err);
    ex_config_free(cfg);
    return st;
}

static void expect_open_error(fixture *f, const char *name, const char *keys, ex_status code, const char *where,
                              const char *needle) {
    const ex_dataset_vtable *vt;
    void *ds = NULL;
    ex_err err;
    ex_err_clear(&err);
    ex_status st = open_ds(f, name, keys, &vt, &ds, &err);
    if (st != code) fail_msg("status %s, expected %s: %s", ex_status_name(st), ex_status_name(code), err.msg);
    if (where && !strstr(err.msg, where)) fail_msg("message lacks '%s': %s", where, err.msg);
    if (needle && !strstr(err.msg, needle)) fail_msg("message lacks '%s': %s", needle, err.msg);
    assert_null(ds);
}

/* ---------------------------------------------------------------------------
 * fmow (RGB)
 * --------------------------------------------------------------------------- */

static void build_rgb(const fixture *f) {
    char p[8192];
    snprintf(p, sizeof p, "%s/fmow/train/zoo", f->dir);
    mkdirs(p);
    snprintf(p, sizeof p, "%s/fmow/train/airport", f->dir);
    mkdirs(p);
    snprintf(p, sizeof p, "%s/fmow/train/zoo/zoo_1_0_rgb.png", f->dir);
    copy_fixture("rgb8.png", p);
    snprintf(p, sizeof p, "%s/fmow/train/airport/a b.jpg", f->dir);
    copy_fixture("rgb420.jpg", p);
    put(f, "train_62classes.csv",
        "category,image_path,timestamp\r\n"
        "61,fmow/train/zoo/zoo_1_0_rgb.png,2016-05-13T10:32:11Z\r\n"
        "\r\n"
        "0,\"fmow//train/airport/a b.jpg\",2017-01-01T00:00:00Z\r\n");
}

static void test_fmow_rgb(void **state) {
    fixture *f = *state;
    build_rgb(f);
    char keys[16384];
    snprintf(keys, sizeof keys, "csv = %s/train_62classes.csv\n", f->dir);
    const ex_dataset_vtable *vt;
    void *ds;
    ex_err err;
    EXT_OK(open_ds(f, "fmow", keys, &vt, &ds, &err), &err);
    assert_int_equal(vt->length(ds), 2);
    assert_int_equal(vt->num_classes(ds), 62);
    assert_string_equal(vt->class_name(ds, 61), "zoo");
    assert_string_equal(vt->class_name(ds, 30), "multi-unit_residential");
    assert_null(vt->class_name(ds, 62));
    ex_sample s;
    EXT_OK(vt->get(ds, 0, &s, &err), &err);
    assert_int_equal(s.label, 61);
    assert_int_equal(s.group, -1);
    assert_int_equal(s.channels, 3);
    assert_string_equal(s.id, "fmow/train/zoo/zoo_1_0_rgb.png");
    ex_sample_clear(&s);
    EXT_OK(vt->get(ds, 1, &s, &err), &err); /* "//" collapsed, quoted path with a space */
    assert_int_equal(s.label, 0);
    assert_string_equal(s.id, "fmow//train/airport/a b.jpg");
    ex_sample_clear(&s);
    vt->close(ds);
    /* root + path_prefix: CSV paths relative to <root>/fmow/ */
    put(f, "sub.csv", "a,b\n61,train/zoo/zoo_1_0_rgb.png\n");
    snprintf(keys, sizeof keys, "csv = %s/sub.csv\nroot = %s\npath_prefix = fmow/\n", f->dir, f->dir);
    EXT_OK(open_ds(f, "fmow", keys, &vt, &ds, &err), &err);
    assert_int_equal(vt->length(ds), 1);
    vt->close(ds);
}

static void test_fmow_errors(void **state) {
    fixture *f = *state;
    build_rgb(f);
    char keys[8192], where[8192];
    snprintf(keys, sizeof keys, "csv = %s/bad.csv\n", f->dir);
    snprintf(where, sizeof where, "%s/bad.csv:3:", f->dir);
    put(f, "bad.csv", "category,image_path\n61,fmow/train/zoo/zoo_1_0_rgb.png\n62,fmow/train/zoo/zoo_1_0_rgb.png\n");
    expect_open_error(f, "fmow", keys, EX_E_FORMAT, where, "outside 0..61");
    put(f, "bad.csv", "category,image_path\n61,fmow/train/zoo/zoo_1_0_rgb.png\n-1,x.png\n");
    expect_open_error(f, "fmow", keys, EX_E_FORMAT, where, "outside 0..61");
    put(f, "bad.csv", "category,image_path\n61,fmow/train/zoo/zoo_1_0_rgb.png\nzoo,x.png\n");
    expect_open_error(f, "fmow", keys, EX_E_FORMAT, where, "not an integer");
    put(f, "bad.csv", "category,image_path\n61,fmow/train/zoo/zoo_1_0_rgb.png\n5,fmow/missing.png\n");
    expect_open_error(f, "fmow", keys, EX_E_IO, where, "missing.png");
    put(f, "bad.csv", "category,image_path\n61,fmow/train/zoo/zoo_1_0_rgb.png\n\"5,x.png\n");
    expect_open_error(f, "fmow", keys, EX_E_FORMAT, where, "unterminated");
    snprintf(where, sizeof where, "%s/bad.csv:1:", f->dir);
    put(f, "bad.csv", "3,fmow/train/zoo/zoo_1_0_rgb.png\n");
    expect_open_error(f, "fmow", keys, EX_E_FORMAT, where, "header");
    put(f, "bad.csv", "category,image_path\n");
    expect_open_error(f, "fmow", keys, EX_E_FORMAT, "bad.csv", "no images");
}

/* ---------------------------------------------------------------------------
 * fmow-sentinel
 * --------------------------------------------------------------------------- */

/* SentinelNormalize of the three test pixels (0, 1000 + 100 b, 65535) per band b, as uint8. */
static const int expected_u8[3][13] = {
    {0, 11, 27, 52, 42, 32, 33, 36, 35, 48, 61, 43, 54},
    {90, 119, 134, 138, 136, 119, 114, 124, 119, 255, 255, 145, 183},
    {255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255},
};

/* A 3x1 13-band uint16 image with the pixels above. */
static void write_s2(const fixture *f, const char *cat, int loc, int img, int bands) {
    char d[8192], p[8300];
    snprintf(d, sizeof d, "%s/s2/train/%s/%s_%d", f->dir, cat, cat, loc);
    mkdirs(d);
    snprintf(p, sizeof p, "%s/%s_%d_%d.tif", d, cat, loc, img);
    ttf_spec s = ttf_default(3, 1, bands);
    double v[3 * 13];
    for (int x = 0; x < 3; x++)
        for (int b = 0; b < bands; b++) v[x * bands + b] = x == 0 ? 0 : x == 1 ? 1000 + 100 * b : 65535;
    ttf_write_values(p, &s, v);
}

static void build_sentinel(const fixture *f) {
    write_s2(f, "airport", 2, 0, 13);
    write_s2(f, "airport", 7, 0, 13);
    write_s2(f, "airport", 7, 3, 13);
    write_s2(f, "zoo", 5, 1, 13);
    write_s2(f, "zoo", 6, 0, 12); /* wrong band count, only in bad12.csv */
    char p[8192];
    snprintf(p, sizeof p, "%s/s2", f->dir);
    mkdirs(p);
    put(f, "s2/train.csv",
        "category,location_id,image_id,timestamp,polygon,image_path\n"
        "zoo,5,1,2018-03-01T00:00:00Z,\"POLYGON ((1 2, 3 4))\",wrong/path.tif\n"
        "airport,7,0,2017-06-01T00:00:00Z,\"POLYGON ((1 2, 3 4))\",wrong\n"
        "airport,7,3,2016-01-01T00:00:00Z,\"POLYGON ((1 2, 3 4))\",wrong\n"
        "airport,2,0,2019-01-01T00:00:00Z,\"POLYGON ((1 2, 3 4))\",wrong\n"
        "barn,1,0,1999-12-31T23:59:59Z,\"POLYGON ((1 2, 3 4))\",wrong\n"
        "barn,1,1,2021-01-01T00:00:00Z,\"POLYGON ((1 2, 3 4))\",wrong\n");
}

static void expect_pixels(const ex_sample *s, const int *bands, int nbands, int raw) {
    assert_int_equal(s->width, 3);
    assert_int_equal(s->height, 1);
    assert_int_equal(s->channels, nbands);
    for (int x = 0; x < 3; x++)
        for (int k = 0; k < nbands; k++) {
            int b = bands[k];
            float want = raw ? (float)(x == 0 ? 0 : x == 1 ? 1000 + 100 * b : 65535)
                             : (float)expected_u8[x][b] / 255.0f;
            float got = s->pixels[x * nbands + k];
            if (got != want) fail_msg("pixel %d channel %d (band %d): %.9g, expected %.9g", x, k, b, got, want);
        }
}

static void test_sentinel_order_and_normalise(void **state) {
    fixture *f = *state;
    build_sentinel(f);
    char keys[8192];
    snprintf(keys, sizeof keys, "csv = %s/s2/train.csv\n", f->dir);
    const ex_dataset_vtable *vt;
    void *ds;
    ex_err err;
    EXT_OK(open_ds(f, "fmow-sentinel", keys, &vt, &ds, &err), &err);
    assert_int_equal(vt->length(ds), 4); /* the two barn rows fall outside 2000-2020 */
    static const char *ids[4] = {"airport_2_0", "airport_7_3", "airport_7_0", "zoo_5_1"};
    static const int labels[4] = {0, 0, 0, 61};
    static const int kept[10] = {1, 2, 3, 4, 5, 6, 7, 8, 11, 12}; /* B2..B8, B8A, B11, B12 */
    for (int i = 0; i < 4; i++) {
        ex_sample s;
        EXT_OK(vt->get(ds, i, &s, &err), &err);
        assert_string_equal(s.id, ids[i]);
        assert_int_equal(s.label, labels[i]);
        expect_pixels(&s, kept, 10, 0);
        ex_sample_clear(&s);
    }
    assert_string_equal(vt->class_name(ds, 0), "airport");
    vt->close(ds);
}

static void test_sentinel_band_options(void **state) {
    fixture *f = *state;
    build_sentinel(f);
    char keys[8192];
    const ex_dataset_vtable *vt;
    void *ds;
    ex_err err;
    ex_sample s;
    static const int all[13] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    snprintf(keys, sizeof keys, "csv = %s/s2/train.csv\ndropped_bands = none\n", f->dir);
    EXT_OK(open_ds(f, "fmow-sentinel", keys, &vt, &ds, &err), &err);
    EXT_OK(vt->get(ds, 0, &s, &err), &err);
    expect_pixels(&s, all, 13, 0);
    ex_sample_clear(&s);
    vt->close(ds);
    static const int some[11] = {1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    snprintf(keys, sizeof keys, "csv = %s/s2/train.csv\ndropped_bands = 2,0\nnormalize = false\n", f->dir);
    EXT_OK(open_ds(f, "fmow-sentinel", keys, &vt, &ds, &err), &err);
    EXT_OK(vt->get(ds, 3, &s, &err), &err);
    expect_pixels(&s, some, 11, 1);
    ex_sample_clear(&s);
    vt->close(ds);
    /* years: 1999 only */
    snprintf(keys, sizeof keys, "csv = %s/s2/train.csv\nmin_year = 1990\nmax_year = 1999\n", f->dir);
    expect_open_error(f, "fmow-sentinel", keys, EX_E_IO, ":6:", "barn_1/barn_1_0.tif");
    snprintf(keys, sizeof keys, "csv = %s/s2/train.csv\ndropped_bands = 0, 13\n", f->dir);
    expect_open_error(f, "fmow-sentinel", keys, EX_E_CONFIG, "dropped_bands", "0..12");
    snprintf(keys, sizeof keys, "csv = %s/s2/train.csv\ndropped_bands = 4, 4\n", f->dir);
    expect_open_error(f, "fmow-sentinel", keys, EX_E_CONFIG, "dropped_bands", "twice");
}

static void test_sentinel_errors(void **state) {
    fixture *f = *state;
    build_sentinel(f);
    char keys[8192];
    snprintf(keys, sizeof keys, "csv = %s/s2/bad.csv\nsplit = train\n", f->dir);
    const char *hdr = "category,location_id,image_id,timestamp\n";
    char text[1024];
    snprintf(text, sizeof text, "%szoo,5,1,2018-03-01T00:00:00Z\nzebra,5,1,2018-03-01T00:00:00Z\n", hdr);
    put(f, "s2/bad.csv", text);
    expect_open_error(f, "fmow-sentinel", keys, EX_E_FORMAT, "bad.csv:3:", "'zebra'");
    snprintf(text, sizeof text, "%szoo,5,1,18-03-01\n", hdr);
    put(f, "s2/bad.csv", text);
    expect_open_error(f, "fmow-sentinel", keys, EX_E_FORMAT, "bad.csv:2:", "4-digit year");
    snprintf(text, sizeof text, "%szoo,five,1,2018-03-01T00:00:00Z\n", hdr);
    put(f, "s2/bad.csv", text);
    expect_open_error(f, "fmow-sentinel", keys, EX_E_FORMAT, "bad.csv:2:", "location_id");
    put(f, "s2/bad.csv", "category,location,image_id,timestamp\n");
    expect_open_error(f, "fmow-sentinel", keys, EX_E_FORMAT, "bad.csv:1:", "'location_id'");
    /* 12 bands: refused at get, naming the image */
    snprintf(text, sizeof text, "%szoo,6,0,2018-03-01T00:00:00Z\n", hdr);
    put(f, "s2/bad.csv", text);
    const ex_dataset_vtable *vt;
    void *ds;
    ex_err err;
    EXT_OK(open_ds(f, "fmow-sentinel", keys, &vt, &ds, &err), &err);
    ex_sample s;
    assert_int_equal(vt->get(ds, 0, &s, &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "zoo_6_0.tif"));
    assert_non_null(strstr(err.msg, "has 12"));
    assert_null(s.pixels);
    vt->close(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fmow_rgb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fmow_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sentinel_order_and_normalise, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sentinel_band_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sentinel_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
