/*
 * tests/test_dataset_wilds.c — the `wilds` dataset plugin on small
 * Camelyon17 and iWildCam layouts made here: split membership by the WILDS
 * rules (Camelyon17: CSV split 0/1, then center 1 -> val, center 2 -> test;
 * iWildCam: split names), labels, groups (slide, location_remapped), ids
 * (zero-padded patients kept), unlabeled, and errors naming
 * "<metadata.csv>:<line>:" (bad split ids or names, bad labels, missing
 * images) plus Camelyon17's missing id_test.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "explora/config.h"
#include "test_support.h"

typedef struct fixture {
    ex_registry *reg;
    const ex_dataset_vtable *vt;
    const ex_plugin *plugin;
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

/* Copy tests/data/images/rgb8.png to <dir>/<rel>, making folders. */
static void put_image(const fixture *f, const char *rel) {
    char dst[8192], src[4096];
    snprintf(dst, sizeof dst, "%s/%s", f->dir, rel);
    char *slash = strrchr(dst, '/');
    *slash = '\0';
    mkdirs(dst);
    *slash = '/';
    snprintf(src, sizeof src, "%s/images/rgb8.png", ext_env("EXPLORA_TEST_DATA_DIR"));
    FILE *fp = fopen(src, "rb");
    if (!fp) fail_msg("cannot open %s", src);
    unsigned char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    ext_write_file(dst, buf, n);
}

static void put_text(const fixture *f, const char *rel, const char *text) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", f->dir, rel);
    ext_write_file(p, text, strlen(text));
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    ex_err err;
    if (ex_registry_new(&f->reg, &err) || ex_registry_add_dir(f->reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err) ||
        ex_registry_scan(f->reg, &err) || ex_registry_find(f->reg, EX_PLUGIN_DATASET, "wilds", &f->plugin, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    f->vt = &f->plugin->vtable_copy.dataset;
    ext_tmp_path(f->dir, sizeof f->dir, "wilds");
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

static ex_status open_ds(fixture *f, const char *keys, void **ds, ex_err *err) {
    char text[16384];
    snprintf(text, sizeof text, "[data]\nname = wilds\nroot = %s\n%s", f->dir, keys);
    ex_config *cfg;
    EXT_OK(ex_config_load_string(&cfg, text, "wilds-test.ini", err), err);
    ex_status st = ex_config_validate_section(cfg, "data", f->plugin->desc.keys, (const char *const[]){"name", NULL},
                                              err);
    ex_cfg_section view = {cfg, "data", f->plugin->desc.keys};
    *ds = NULL;
    if (st == EX_OK) st = f->vt->open(&view, ds, err);
    ex_config_free(cfg);
    return st;
}

/* Open `keys` and check every sample's id, label and group. */
static void expect_split(fixture *f, const char *keys, int n, const char *const *ids, const int *labels,
                         const int *groups) {
    void *ds;
    ex_err err;
    EXT_OK(open_ds(f, keys, &ds, &err), &err);
    assert_int_equal(f->vt->length(ds), n);
    for (int i = 0; i < n; i++) {
        ex_sample s;
        EXT_OK(f->vt->get(ds, i, &s, &err), &err);
        assert_string_equal(s.id, ids[i]);
        assert_int_equal(s.label, labels[i]);
        assert_int_equal(s.group, groups[i]);
        assert_int_equal(s.channels, 3);
        ex_sample_clear(&s);
    }
    f->vt->close(ds);
}

static void expect_error(fixture *f, const char *keys, ex_status code, const char *where, const char *needle) {
    void *ds = NULL;
    ex_err err;
    ex_err_clear(&err);
    ex_status st = open_ds(f, keys, &ds, &err);
    if (st != code) fail_msg("status %s, expected %s: %s", ex_status_name(st), ex_status_name(code), err.msg);
    if (where && !strstr(err.msg, where)) fail_msg("message lacks '%s': %s", where, err.msg);
    if (needle && !strstr(err.msg, needle)) fail_msg("message lacks '%s': %s", needle, err.msg);
    assert_null(ds);
}

/* ---------------------------------------------------------------------------
 * Camelyon17
 * --------------------------------------------------------------------------- */

#define P4A "patches/patient_004_node_4/patch_patient_004_node_4_x_3328_y_21792.png"
#define P4B "patches/patient_004_node_4/patch_patient_004_node_4_x_3200_y_21792.png"
#define P10 "patches/patient_010_node_1/patch_patient_010_node_1_x_100_y_200.png"
#define P20 "patches/patient_020_node_2/patch_patient_020_node_2_x_300_y_400.png"
#define P30 "patches/patient_030_node_3/patch_patient_030_node_3_x_500_y_600.png"

static void build_camelyon(fixture *f) {
    put_image(f, P4A);
    put_image(f, P4B);
    put_image(f, P10);
    put_image(f, P20);
    put_image(f, P30);
    put_text(f, "metadata.csv",
             ",patient,node,x_coord,y_coord,tumor,slide,center,split\n"
             "0,004,4,3328,21792,1,0,0,0\n"
             "1,004,4,3200,21792,0,0,0,1\n"
             "2,010,1,100,200,1,5,1,0\n"
             "3,020,2,300,400,0,9,2,0\n"
             "4,030,3,500,600,1,12,3,0\n");
}

static void test_camelyon_splits(void **state) {
    fixture *f = *state;
    build_camelyon(f);
    expect_split(f, "dataset = camelyon17\nsplit = train\n", 2, (const char *const[]){P4A, P30}, (const int[]){1, 1},
                 (const int[]){0, 12});
    expect_split(f, "dataset = camelyon17\nsplit = id_val\n", 1, (const char *const[]){P4B}, (const int[]){0},
                 (const int[]){0});
    expect_split(f, "dataset = camelyon17\nsplit = val\n", 1, (const char *const[]){P10}, (const int[]){1},
                 (const int[]){5});
    expect_split(f, "dataset = camelyon17\nsplit = test\n", 1, (const char *const[]){P20}, (const int[]){0},
                 (const int[]){9});
    expect_split(f, "dataset = camelyon17\nsplit = train\nunlabeled = true\n", 2, (const char *const[]){P4A, P30},
                 (const int[]){-1, -1}, (const int[]){0, 12});
    void *ds;
    ex_err err;
    EXT_OK(open_ds(f, "dataset = camelyon17\n", &ds, &err), &err);
    assert_int_equal(f->vt->num_classes(ds), 2);
    f->vt->close(ds);
    expect_error(f, "dataset = camelyon17\nsplit = id_test\n", EX_E_CONFIG, "camelyon17", "no split 'id_test'");
}

static void test_camelyon_errors(void **state) {
    fixture *f = *state;
    build_camelyon(f);
    const char *hdr = ",patient,node,x_coord,y_coord,tumor,slide,center,split\n0,004,4,3328,21792,1,0,0,0\n";
    char text[1024];
    snprintf(text, sizeof text, "%s1,004,4,3200,21792,0,0,0,7\n", hdr);
    put_text(f, "metadata.csv", text);
    expect_error(f, "dataset = camelyon17\n", EX_E_FORMAT, "metadata.csv:3:", "split 7");
    snprintf(text, sizeof text, "%s1,004,4,3200,21792,2,0,0,0\n", hdr);
    put_text(f, "metadata.csv", text);
    expect_error(f, "dataset = camelyon17\n", EX_E_FORMAT, "metadata.csv:3:", "tumor 2");
    snprintf(text, sizeof text, "%s1,004,4,1,1,0,0,0,0\n", hdr);
    put_text(f, "metadata.csv", text);
    expect_error(f, "dataset = camelyon17\n", EX_E_IO, "metadata.csv:3:", "x_1_y_1.png");
    put_text(f, "metadata.csv", ",patient,node,x_coord,y_coord,tumor,slide,split\n");
    expect_error(f, "dataset = camelyon17\n", EX_E_FORMAT, "metadata.csv:1:", "'center'");
}

/* ---------------------------------------------------------------------------
 * iWildCam
 * --------------------------------------------------------------------------- */

static void build_iwildcam(fixture *f) {
    static const char *files[6] = {"a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"};
    char rel[64];
    for (int i = 0; i < 6; i++) {
        snprintf(rel, sizeof rel, "train/%s", files[i]);
        put_image(f, rel);
    }
    put_text(f, "metadata.csv",
             "split,location,filename,y,location_remapped,sequence_remapped,datetime\n"
             "train,10,a.jpg,3,0,1,2013-06-01 10:00:00.000\n"
             "id_val,11,b.jpg,181,4,2,2013-06-01 10:00:00.000\n"
             "val,12,c.jpg,0,7,3,2013-06-01 10:00:00.000\n"
             "test,13,d.jpg,5,8,4,2013-06-01 10:00:00.000\n"
             "id_test,14,e.jpg,2,9,5,2013-06-01 10:00:00.000\n"
             "train,15,f.jpg,4,0,6,2013-06-01 10:00:00.000\n");
}

static void test_iwildcam_splits(void **state) {
    fixture *f = *state;
    build_iwildcam(f);
    expect_split(f, "dataset = iwildcam\n", 2, (const char *const[]){"train/a.jpg", "train/f.jpg"},
                 (const int[]){3, 4}, (const int[]){0, 0});
    expect_split(f, "dataset = iwildcam\nsplit = id_val\n", 1, (const char *const[]){"train/b.jpg"},
                 (const int[]){181}, (const int[]){4});
    expect_split(f, "dataset = iwildcam\nsplit = val\n", 1, (const char *const[]){"train/c.jpg"}, (const int[]){0},
                 (const int[]){7});
    expect_split(f, "dataset = iwildcam\nsplit = test\n", 1, (const char *const[]){"train/d.jpg"}, (const int[]){5},
                 (const int[]){8});
    expect_split(f, "dataset = iwildcam\nsplit = id_test\n", 1, (const char *const[]){"train/e.jpg"},
                 (const int[]){2}, (const int[]){9});
    void *ds;
    ex_err err;
    EXT_OK(open_ds(f, "dataset = iwildcam\n", &ds, &err), &err);
    assert_int_equal(f->vt->num_classes(ds), 182);
    f->vt->close(ds);
}

static void test_iwildcam_errors(void **state) {
    fixture *f = *state;
    build_iwildcam(f);
    const char *hdr = "split,filename,y,location_remapped\ntrain,a.jpg,3,0\n";
    char text[1024];
    snprintf(text, sizeof text, "%sdev,b.jpg,1,1\n", hdr);
    put_text(f, "metadata.csv", text);
    expect_error(f, "dataset = iwildcam\n", EX_E_FORMAT, "metadata.csv:3:", "'dev'");
    snprintf(text, sizeof text, "%strain,b.jpg,182,1\n", hdr);
    put_text(f, "metadata.csv", text);
    expect_error(f, "dataset = iwildcam\n", EX_E_FORMAT, "metadata.csv:3:", "182");
    snprintf(text, sizeof text, "%strain,nope.jpg,1,1\n", hdr);
    put_text(f, "metadata.csv", text);
    expect_error(f, "dataset = iwildcam\n", EX_E_IO, "metadata.csv:3:", "nope.jpg");
    snprintf(text, sizeof text, "%strain,../x.jpg,1,1\n", hdr);
    put_text(f, "metadata.csv", text);
    expect_error(f, "dataset = iwildcam\n", EX_E_FORMAT, "metadata.csv:3:", "..");
    expect_error(f, "dataset = imagenet\n", EX_E_CONFIG, "dataset", NULL);
}

/* ---------------------------------------------------------------------------
 * the unlabeled packages
 * --------------------------------------------------------------------------- */

static void test_camelyon_unlabeled(void **state) {
    fixture *f = *state;
    put_image(f, P4A);
    put_image(f, P10);
    put_image(f, P20);
    put_image(f, P30);
    /* no split or tumor column: WILDS splits the unlabeled package by hospital */
    put_text(f, "metadata.csv",
             ",patient,node,x_coord,y_coord,slide,center\n"
             "0,004,4,3328,21792,0,0\n"
             "1,010,1,100,200,5,1\n"
             "2,020,2,300,400,9,2\n"
             "3,030,3,500,600,12,3\n");
    expect_split(f, "dataset = camelyon17_unlabeled\n", 2, (const char *const[]){P4A, P30}, (const int[]){-1, -1},
                 (const int[]){0, 12});
    expect_split(f, "dataset = camelyon17_unlabeled\nsplit = train_unlabeled\n", 2, (const char *const[]){P4A, P30},
                 (const int[]){-1, -1}, (const int[]){0, 12});
    expect_split(f, "dataset = camelyon17_unlabeled\nsplit = val_unlabeled\n", 1, (const char *const[]){P10},
                 (const int[]){-1}, (const int[]){5});
    expect_split(f, "dataset = camelyon17_unlabeled\nsplit = test_unlabeled\n", 1, (const char *const[]){P20},
                 (const int[]){-1}, (const int[]){9});
    void *ds;
    ex_err err;
    EXT_OK(open_ds(f, "dataset = camelyon17_unlabeled\n", &ds, &err), &err);
    assert_int_equal(f->vt->num_classes(ds), 0);
    f->vt->close(ds);
    /* a labelled split name on the unlabeled package, and the other way round, say which splits exist */
    expect_error(f, "dataset = camelyon17_unlabeled\nsplit = train\n", EX_E_CONFIG, "camelyon17_unlabeled has no split 'train'",
                 "train_unlabeled, val_unlabeled, test_unlabeled");
    expect_error(f, "dataset = camelyon17\nsplit = train_unlabeled\n", EX_E_CONFIG, "camelyon17 has no split", "id_val");
    put_text(f, "metadata.csv", ",patient,node,x_coord,y_coord,slide\n0,004,4,3328,21792,0\n");
    expect_error(f, "dataset = camelyon17_unlabeled\n", EX_E_FORMAT, "metadata.csv:1:", "'center'");
}

static void test_iwildcam_unlabeled(void **state) {
    fixture *f = *state;
    put_image(f, "images/u1.jpg");
    put_image(f, "images/u2.jpg");
    put_text(f, "metadata.csv",
             "uid,location_remapped,sequence_remapped,datetime,y,category_id\n"
             "u1,3,1,2013-06-01 10:00:00.000,-1,-1\n"
             "u2,7,2,2013-06-01 10:00:00.000,12,40\n");
    expect_split(f, "dataset = iwildcam_unlabeled\n", 2, (const char *const[]){"images/u1.jpg", "images/u2.jpg"},
                 (const int[]){-1, -1}, (const int[]){3, 7});
    expect_split(f, "dataset = iwildcam_unlabeled\nsplit = extra_unlabeled\n", 2,
                 (const char *const[]){"images/u1.jpg", "images/u2.jpg"}, (const int[]){-1, -1}, (const int[]){3, 7});
    expect_error(f, "dataset = iwildcam_unlabeled\nsplit = test\n", EX_E_CONFIG, "no split 'test'", "extra_unlabeled");
    put_text(f, "metadata.csv", "uid,location_remapped\n../../etc/passwd,1\n");
    expect_error(f, "dataset = iwildcam_unlabeled\n", EX_E_FORMAT, "metadata.csv:2:", "..");
    put_text(f, "metadata.csv", "uid,location_remapped\nmissing,1\n");
    expect_error(f, "dataset = iwildcam_unlabeled\n", EX_E_IO, "metadata.csv:2:", "missing.jpg");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_camelyon_splits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_camelyon_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iwildcam_splits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iwildcam_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_camelyon_unlabeled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iwildcam_unlabeled, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
