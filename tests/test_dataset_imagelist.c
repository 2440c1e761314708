/*
 * tests/test_dataset_imagelist.c — the `imagelist` dataset plugin, opened
 * through the registry: unlabeled and labeled lists (space or tab before the
 * label), '#' comments, blank lines, CRLF, a UTF-8 BOM, paths with spaces,
 * relative paths (against the list's folder, or against `root`), absolute
 * paths, limit, 1 or 3 channels; and errors with the list's name and line
 * number: a missing image, a directory, mixed labeled and unlabeled lines, a
 * negative label, a NUL byte, an over-long line, an empty list, a missing
 * list file, and a corrupt image (reported at get, naming the file).
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
    const ex_plugin *plugin;
    const ex_dataset_vtable *vt;
    char dir[4096]; /* scratch folder with the images */
} fixture;

/* ---------------------------------------------------------------------------
 * files
 * --------------------------------------------------------------------------- */

static void fixture_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/images/%s", ext_env("EXPLORA_TEST_DATA_DIR"), name);
}

static void copy_fixture(const char *name, const char *dst) {
    char src[4096];
    fixture_path(src, sizeof src, name);
    FILE *fp = fopen(src, "rb");
    if (!fp) fail_msg("cannot open %s", src);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    ext_write_file(dst, buf, n);
}

static void put_text(const char *dir, const char *name, const char *text, size_t len, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", dir, name);
    ext_write_file(path, text, len);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* dir/imgs/a.png (gray8), dir/imgs/sub/b.jpg (rgb420), dir/c d.png (rgb8), dir/bad.jpg (text), dir/folder.png/ */
static void build_images(const char *dir) {
    char p[8192];
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/imgs", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/imgs/sub", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/folder.png", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/lists", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/imgs/a.png", dir);
    copy_fixture("gray8.png", p);
    snprintf(p, sizeof p, "%s/imgs/sub/b.jpg", dir);
    copy_fixture("rgb420.jpg", p);
    snprintf(p, sizeof p, "%s/c d.png", dir);
    copy_fixture("rgb8.png", p);
    snprintf(p, sizeof p, "%s/bad.jpg", dir);
    ext_write_file(p, "just text\n", 10);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    ex_err err;
    if (ex_registry_new(&f->reg, &err) || ex_registry_add_dir(f->reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err) ||
        ex_registry_scan(f->reg, &err) || ex_registry_find(f->reg, EX_PLUGIN_DATASET, "imagelist", &f->plugin, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    f->vt = &f->plugin->vtable_copy.dataset;
    ext_tmp_path(f->dir, sizeof f->dir, "lists");
    build_images(f->dir);
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

/* ---------------------------------------------------------------------------
 * opening
 * --------------------------------------------------------------------------- */

static ex_status open_ds(fixture *f, const char *list, const char *extra, void **ds, ex_err *err) {
    char text[16384];
    snprintf(text, sizeof text, "[data]\nname = imagelist\nlist = %s\n%s", list, extra ? extra : "");
    ex_config *cfg;
    EXT_OK(ex_config_load_string(&cfg, text, "imagelist-test.ini", err), err);
    ex_err e2;
    ex_err_clear(&e2);
    EXT_OK(ex_config_validate_section(cfg, "data", f->plugin->desc.keys, (const char *const[]){"name", NULL}, &e2), &e2);
    ex_cfg_section view = {cfg, "data", f->plugin->desc.keys};
    *ds = NULL;
    ex_err_clear(err);
    ex_status st = f->vt->open(&view, ds, err);
    ex_config_free(cfg);
    return st;
}

/* Write `text` as <dir>/<name> and open it; the list's path goes to list_out. */
static void *open_text(fixture *f, const char *name, const char *text, const char *extra) {
    char list[8192];
    put_text(f->dir, name, text, strlen(text), list, sizeof list);
    ex_err err;
    void *ds;
    EXT_OK(open_ds(f, list, extra, &ds, &err), &err);
    return ds;
}

/* The list must fail to open with `code`, naming "<list>:<line>:" and holding `needle`. */
static void expect_list_error(fixture *f, const char *text, size_t len, int line, ex_status code,
                              const char *needle) {
    char list[8192], where[8300];
    put_text(f->dir, "bad-list.txt", text, len, list, sizeof list);
    ex_err err;
    void *ds = NULL;
    ex_status st = open_ds(f, list, NULL, &ds, &err);
    if (st != code) fail_msg("status %s, expected %s: %s", ex_status_name(st), ex_status_name(code), err.msg);
    if (line > 0)
        snprintf(where, sizeof where, "%s:%d:", list, line);
    else
        snprintf(where, sizeof where, "%s", list);
    if (!strstr(err.msg, where)) fail_msg("message lacks '%s': %s", where, err.msg);
    if (needle && !strstr(err.msg, needle)) fail_msg("message lacks '%s': %s", needle, err.msg);
    assert_null(ds);
}

static void get_ok(fixture *f, void *ds, int64_t i, ex_sample *s) {
    ex_err err;
    EXT_OK(f->vt->get(ds, i, s, &err), &err);
}

/* ---------------------------------------------------------------------------
 * tests
 * --------------------------------------------------------------------------- */

static void test_unlabeled(void **state) {
    fixture *f = *state;
    char abs_png[4096], text[8192];
    fixture_path(abs_png, sizeof abs_png, "rgb8.png");
    snprintf(text, sizeof text,
             "\xEF\xBB\xBF# images for pre-training\n"
             "\n"
             "imgs/a.png\r\n"
             "   \t\n"
             "  imgs/sub/b.jpg  \n"
             "    # an indented comment\n"
             "c d.png\n"
             "%s", /* absolute, and no newline at the end */
             abs_png);
    void *ds = open_text(f, "plain.txt", text, NULL);
    const ex_dataset_vtable *vt = f->vt;
    assert_int_equal(vt->length(ds), 4);
    assert_int_equal(vt->num_classes(ds), 0);
    assert_null(vt->class_name);
    ex_sample s;
    get_ok(f, ds, 0, &s);
    assert_string_equal(s.id, "imgs/a.png");
    assert_int_equal(s.label, -1);
    assert_int_equal(s.group, -1);
    assert_int_equal(s.channels, 3);
    assert_float_equal(s.pixels[(2 * 5 + 3) * 3 + 1], 42.0f / 255.0f, 0.0); /* gray8(3, 2), replicated */
    ex_sample_clear(&s);
    get_ok(f, ds, 1, &s);
    assert_string_equal(s.id, "imgs/sub/b.jpg");
    assert_int_equal(s.width, 17);
    assert_int_equal(s.height, 13);
    ex_sample_clear(&s);
    get_ok(f, ds, 2, &s);
    assert_string_equal(s.id, "c d.png"); /* a path with a space */
    assert_float_equal(s.pixels[(3 * 5 + 4) * 3], 209.0f / 255.0f, 0.0);
    ex_sample_clear(&s);
    get_ok(f, ds, 3, &s);
    assert_string_equal(s.id, abs_png);
    ex_sample_clear(&s);
    ex_err err;
    assert_int_equal(vt->get(ds, 4, &s, &err), EX_E_RANGE);
    vt->close(ds);

    ds = open_text(f, "plain.txt", text, "limit = 2\nchannels = 1\n");
    assert_int_equal(vt->length(ds), 2);
    get_ok(f, ds, 0, &s);
    assert_int_equal(s.channels, 1);
    assert_float_equal(s.pixels[2 * 5 + 3], 42.0f / 255.0f, 0.0);
    ex_sample_clear(&s);
    vt->close(ds);
}

static void test_labeled_and_root(void **state) {
    fixture *f = *state;
    void *ds = open_text(f, "labeled.txt", "imgs/a.png 3\nimgs/sub/b.jpg\t0\n# comment 7\nc d.png   1\n", NULL);
    const ex_dataset_vtable *vt = f->vt;
    assert_int_equal(vt->length(ds), 3);
    assert_int_equal(vt->num_classes(ds), 4);
    ex_sample s;
    const int64_t want[] = {3, 0, 1};
    const char *ids[] = {"imgs/a.png", "imgs/sub/b.jpg", "c d.png"};
    for (int i = 0; i < 3; i++) {
        get_ok(f, ds, i, &s);
        assert_int_equal(s.label, want[i]);
        assert_string_equal(s.id, ids[i]);
        ex_sample_clear(&s);
    }
    vt->close(ds);

    /* the list in lists/, paths relative to its folder ... */
    ds = open_text(f, "lists/rel.txt", "../imgs/a.png\n", NULL);
    assert_int_equal(vt->length(ds), 1);
    vt->close(ds);
    /* ... or to root */
    char extra[4200];
    snprintf(extra, sizeof extra, "root = %s/imgs\n", f->dir);
    ds = open_text(f, "lists/rooted.txt", "a.png\nsub/b.jpg\n", extra);
    assert_int_equal(vt->length(ds), 2);
    get_ok(f, ds, 1, &s);
    assert_string_equal(s.id, "sub/b.jpg");
    ex_sample_clear(&s);
    vt->close(ds);
}

static void test_errors_name_the_line(void **state) {
    fixture *f = *state;
    const char missing[] = "# header\nimgs/a.png\n\nimgs/nope.png\n";
    expect_list_error(f, missing, sizeof missing - 1, 4, EX_E_IO, "imgs/nope.png");
    expect_list_error(f, missing, sizeof missing - 1, 4, EX_E_IO, "No such file");
    const char dir[] = "imgs/a.png\nfolder.png\n";
    expect_list_error(f, dir, sizeof dir - 1, 2, EX_E_IO, "is a directory");
    const char mixed[] = "imgs/a.png 1\nimgs/sub/b.jpg 0\nc d.png\n";
    expect_list_error(f, mixed, sizeof mixed - 1, 3, EX_E_FORMAT, "first entry (line 1)");
    const char mixed2[] = "imgs/a.png\nimgs/sub/b.jpg 0\n";
    expect_list_error(f, mixed2, sizeof mixed2 - 1, 2, EX_E_FORMAT, "has a label");
    const char neg[] = "imgs/a.png 1\nimgs/sub/b.jpg -2\n";
    expect_list_error(f, neg, sizeof neg - 1, 2, EX_E_FORMAT, "label -2");
    const char nul[] = "imgs/a.png\nimgs/\0b.jpg\n";
    expect_list_error(f, nul, sizeof nul - 1, 2, EX_E_FORMAT, "NUL byte");
    const char empty[] = "# nothing\n\n   \n";
    expect_list_error(f, empty, sizeof empty - 1, 0, EX_E_FORMAT, "lists no images");
    expect_list_error(f, "", 0, 0, EX_E_FORMAT, "lists no images");
    size_t n = 9000;
    char *longline = malloc(n + 2);
    memset(longline, 'x', n);
    memcpy(longline, "imgs/a.png\n", 11);
    longline[n] = '\n';
    longline[n + 1] = '\0';
    expect_list_error(f, longline, n + 1, 2, EX_E_FORMAT, "line longer than");
    free(longline);
    /* a list file that does not exist */
    ex_err err;
    void *ds = NULL;
    assert_int_equal(open_ds(f, "/nonexistent/list.txt", NULL, &ds, &err), EX_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/list.txt"));
    assert_null(ds);
    /* bad channels */
    char list[8192];
    put_text(f->dir, "ok.txt", "imgs/a.png\n", 11, list, sizeof list);
    assert_int_equal(open_ds(f, list, "channels = 2\n", &ds, &err), EX_E_CONFIG);
    assert_non_null(strstr(err.msg, "1 (gray) or 3"));
}

static void test_corrupt_image_at_get(void **state) {
    fixture *f = *state;
    void *ds = open_text(f, "with-bad.txt", "imgs/a.png\nbad.jpg\n", NULL);
    ex_sample s;
    ex_err err;
    get_ok(f, ds, 0, &s);
    ex_sample_clear(&s);
    assert_int_equal(f->vt->get(ds, 1, &s, &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "bad.jpg"));
    assert_non_null(strstr(err.msg, "not a JPEG or PNG"));
    assert_null(s.pixels);
    f->vt->close(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unlabeled),
        cmocka_unit_test(test_labeled_and_root),
        cmocka_unit_test(test_errors_name_the_line),
        cmocka_unit_test(test_corrupt_image_at_get),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
