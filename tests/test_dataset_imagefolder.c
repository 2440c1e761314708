/*
 * tests/test_dataset_imagefolder.c — the `imagefolder` dataset plugin, opened
 * through the registry: class order and labels (byte-wise, as torchvision's
 * ImageFolder), the recursive (folder, name) file order, extension matching,
 * hidden entries, decoding into 1 or 3 channels, limit; seeded splits
 * (deterministic, disjoint, covering every file, per-class proportions,
 * independent of other classes); and errors, each naming the folder or file:
 * a missing root, a root that is a file, no class folders, images directly in
 * root, an empty class folder, a dangling link, a symbolic-link loop, bad
 * channels/extensions/fractions, an empty split, a corrupt image at get.
 * The trees are built at run time in the test's scratch folder from the
 * fixtures of tests/data/images/.
 */
#include <ftw.h>
#include <pthread.h>
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
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    ex_err err;
    if (ex_registry_new(&f->reg, &err) || ex_registry_add_dir(f->reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err) ||
        ex_registry_scan(f->reg, &err) ||
        ex_registry_find(f->reg, EX_PLUGIN_DATASET, "imagefolder", &f->plugin, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    f->vt = &f->plugin->vtable_copy.dataset;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    ex_registry_free(f->reg);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------------------
 * building trees
 * --------------------------------------------------------------------------- */

static unsigned char *read_fixture(const char *name, size_t *size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/images/%s", ext_env("EXPLORA_TEST_DATA_DIR"), name);
    FILE *fp = fopen(path, "rb");
    if (!fp) fail_msg("cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n);
    if (fread(buf, 1, (size_t)n, fp) != (size_t)n) fail_msg("cannot read %s", path);
    fclose(fp);
    *size = (size_t)n;
    return buf;
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

/* Write `root/rel` (folders created), with the bytes of fixture `fixture_name` or with `text`. */
static void put(const char *root, const char *rel, const char *fixture_name, const char *text) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    char dir[8192];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    mkdirs(dir);
    if (fixture_name) {
        size_t n;
        unsigned char *data = read_fixture(fixture_name, &n);
        ext_write_file(path, data, n);
        free(data);
    } else {
        ext_write_file(path, text, strlen(text));
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void fresh_root(char *root, size_t cap, const char *name) {
    ext_tmp_path(root, cap, name);
    rm_rf(root);
    mkdirs(root);
}

/* ---------------------------------------------------------------------------
 * opening
 * --------------------------------------------------------------------------- */

/* Open the dataset with root = `root` and further [data] lines `extra`. */
static ex_status open_ds(fixture *f, const char *root, const char *extra, void **ds, ex_err *err) {
    char text[8192];
    snprintf(text, sizeof text, "[data]\nname = imagefolder\nroot = %s\n%s", root, extra ? extra : "");
    ex_config *cfg;
    EXT_OK(ex_config_load_string(&cfg, text, "imagefolder-test.ini", err), err);
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

static void *open_ok(fixture *f, const char *root, const char *extra) {
    ex_err err;
    void *ds;
    EXT_OK(open_ds(f, root, extra, &ds, &err), &err);
    return ds;
}

static void expect_open_error(fixture *f, const char *root, const char *extra, ex_status code, const char *needle1,
                              const char *needle2) {
    ex_err err;
    void *ds = NULL;
    ex_status st = open_ds(f, root, extra, &ds, &err);
    if (st != code) fail_msg("status %s, expected %s: %s", ex_status_name(st), ex_status_name(code), err.msg);
    if (needle1 && !strstr(err.msg, needle1)) fail_msg("message lacks '%s': %s", needle1, err.msg);
    if (needle2 && !strstr(err.msg, needle2)) fail_msg("message lacks '%s': %s", needle2, err.msg);
    assert_null(ds);
}

/* The id of every sample, in order, into ids (cap entries of 256). Returns the length. */
static int64_t collect_ids(fixture *f, void *ds, char (*ids)[256], int64_t *labels, int64_t cap) {
    int64_t n = f->vt->length(ds);
    assert_true(n <= cap);
    for (int64_t i = 0; i < n; i++) {
        ex_sample s;
        ex_err err;
        EXT_OK(f->vt->get(ds, i, &s, &err), &err);
        memcpy(ids[i], s.id, 256);
        if (labels) labels[i] = s.label;
        ex_sample_clear(&s);
    }
    return n;
}

/* ---------------------------------------------------------------------------
 * order, labels, decoding
 * --------------------------------------------------------------------------- */

static void build_order_tree(const char *root) {
    put(root, "b_class/z.png", "rgb8.png", NULL);
    put(root, "b_class/a.PNG", "gray8.png", NULL); /* upper-case extension */
    put(root, "b_class/sub/m.png", "rgb8.png", NULL);
    put(root, "b_class/sub/deeper/x.jpg", "rgb420.jpg", NULL);
    put(root, "b_class/notes.txt", NULL, "not an image\n");
    put(root, "b_class/.hidden.png", NULL, "hidden files are skipped\n");
    put(root, "b_class/._z.jpg", NULL, "macOS AppleDouble junk\n");
    put(root, "A_class/1.jpg", "rgb420.jpg", NULL);
    put(root, "a_class/img_1.png", "gray8.png", NULL);
    put(root, "a_class/img-2.png", "gray8.png", NULL);
    put(root, "a_class/img-10.png", "rgb8.png", NULL);
    put(root, ".ipynb_checkpoints/x.png", "gray8.png", NULL);
    put(root, "readme.md", NULL, "files in root are ignored\n");
}

static void test_order_labels_decode(void **state) {
    fixture *f = *state;
    char root[4096];
    fresh_root(root, sizeof root, "order");
    build_order_tree(root);
    void *ds = open_ok(f, root, NULL);
    const ex_dataset_vtable *vt = f->vt;
    /* byte-wise: 'A' (0x41) < 'a' (0x61) < 'b'; hidden folders are not classes */
    assert_int_equal(vt->num_classes(ds), 3);
    assert_string_equal(vt->class_name(ds, 0), "A_class");
    assert_string_equal(vt->class_name(ds, 1), "a_class");
    assert_string_equal(vt->class_name(ds, 2), "b_class");
    assert_null(vt->class_name(ds, 3));
    assert_null(vt->class_name(ds, -1));
    /* '-' (0x2d) < '_' (0x5f) and "10" < "2"; files of a folder before those of its subfolders */
    const char *want_ids[] = {"A_class/1.jpg",     "a_class/img-10.png", "a_class/img-2.png",
                              "a_class/img_1.png", "b_class/a.PNG",      "b_class/z.png",
                              "b_class/sub/m.png", "b_class/sub/deeper/x.jpg"};
    const int64_t want_labels[] = {0, 1, 1, 1, 2, 2, 2, 2};
    char ids[16][256];
    int64_t labels[16];
    assert_int_equal(collect_ids(f, ds, ids, labels, 16), 8);
    for (int i = 0; i < 8; i++) {
        assert_string_equal(ids[i], want_ids[i]);
        assert_int_equal(labels[i], want_labels[i]);
    }
    /* decoding: b_class/a.PNG is gray8.png replicated to RGB; gray8(3, 2) = 42 */
    ex_sample s;
    ex_err err;
    EXT_OK(vt->get(ds, 4, &s, &err), &err);
    assert_int_equal(s.width, 5);
    assert_int_equal(s.height, 4);
    assert_int_equal(s.channels, 3);
    assert_int_equal(s.group, -1);
    for (int c = 0; c < 3; c++) assert_float_equal(s.pixels[(2 * 5 + 3) * 3 + c], 42.0f / 255.0f, 0.0);
    ex_sample_clear(&s);
    EXT_OK(vt->get(ds, 0, &s, &err), &err); /* the 17x13 JPEG */
    assert_int_equal(s.width, 17);
    assert_int_equal(s.height, 13);
    ex_sample_clear(&s);
    assert_int_equal(vt->get(ds, 8, &s, &err), EX_E_RANGE);
    assert_int_equal(vt->get(ds, -1, &s, &err), EX_E_RANGE);
    vt->close(ds);

    /* one channel: rgb8(4, 3) = (209, 254, 249) -> luma 240 */
    ds = open_ok(f, root, "channels = 1\n");
    EXT_OK(vt->get(ds, 5, &s, &err), &err);
    assert_string_equal(s.id, "b_class/z.png");
    assert_int_equal(s.channels, 1);
    assert_float_equal(s.pixels[3 * 5 + 4], 240.0f / 255.0f, 0.0);
    ex_sample_clear(&s);
    vt->close(ds);

    /* limit; extensions with dots and any case, jpeg dropped */
    ds = open_ok(f, root, "limit = 3\n");
    assert_int_equal(vt->length(ds), 3);
    vt->close(ds);
    ds = open_ok(f, root, "extensions = .PNG, Jpg\n");
    assert_int_equal(vt->length(ds), 8);
    vt->close(ds);
    rm_rf(root);
}

/* ---------------------------------------------------------------------------
 * splits
 * --------------------------------------------------------------------------- */

static const int SPLIT_COUNTS[4] = {10, 7, 1, 100}; /* files of classes c0..c3 */

static void build_split_tree(const char *root, int extra_class) {
    char rel[256];
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < SPLIT_COUNTS[c]; i++) {
            snprintf(rel, sizeof rel, "c%d/img%03d.png", c, i);
            put(root, rel, "gray8.png", NULL);
        }
    if (extra_class)
        for (int i = 0; i < 5; i++) {
            snprintf(rel, sizeof rel, "c1b/img%03d.png", i); /* sorts between c1 and c2 */
            put(root, rel, "gray8.png", NULL);
        }
}

typedef struct split_ids {
    char ids[128][256];
    int64_t labels[128];
    int64_t n;
} split_ids;

static void open_split(fixture *f, const char *root, const char *split, int seed, const char *fractions,
                       split_ids *out) {
    char extra[512];
    snprintf(extra, sizeof extra, "split = %s\nsplit_seed = %d\n%s%s%s", split, seed,
             fractions ? "split_fractions = " : "", fractions ? fractions : "", fractions ? "\n" : "");
    void *ds = open_ok(f, root, extra);
    out->n = collect_ids(f, ds, out->ids, out->labels, 128);
    f->vt->close(ds);
}

static int64_t count_class(const split_ids *s, int64_t label) {
    int64_t k = 0;
    for (int64_t i = 0; i < s->n; i++) k += s->labels[i] == label;
    return k;
}

static int contains(const split_ids *s, const char *id) {
    for (int64_t i = 0; i < s->n; i++)
        if (strcmp(s->ids[i], id) == 0) return 1;
    return 0;
}

static int same_ids(const split_ids *a, const split_ids *b) {
    if (a->n != b->n) return 0;
    for (int64_t i = 0; i < a->n; i++)
        if (strcmp(a->ids[i], b->ids[i]) != 0) return 0;
    return 1;
}

static void test_splits(void **state) {
    fixture *f = *state;
    char root[4096];
    fresh_root(root, sizeof root, "split");
    build_split_tree(root, 0);
    static split_ids all, tr, va, te, again, other;
    open_split(f, root, "all", 0, NULL, &all);
    assert_int_equal(all.n, 118);
    open_split(f, root, "train", 5, NULL, &tr);
    open_split(f, root, "val", 5, NULL, &va);
    open_split(f, root, "test", 5, NULL, &te);
    /* per class: cuts at round(0.6 n), round(0.8 n), n */
    const int want[4][3] = {{6, 2, 2}, {4, 2, 1}, {1, 0, 0}, {60, 20, 20}};
    for (int c = 0; c < 4; c++) {
        assert_int_equal(count_class(&tr, c), want[c][0]);
        assert_int_equal(count_class(&va, c), want[c][1]);
        assert_int_equal(count_class(&te, c), want[c][2]);
    }
    /* disjoint and covering: every file in exactly one split */
    assert_int_equal(tr.n + va.n + te.n, all.n);
    for (int64_t i = 0; i < all.n; i++) {
        int k = contains(&tr, all.ids[i]) + contains(&va, all.ids[i]) + contains(&te, all.ids[i]);
        if (k != 1) fail_msg("%s is in %d splits", all.ids[i], k);
    }
    /* within a split: class by class, sorted names */
    for (int64_t i = 1; i < tr.n; i++) assert_true(strcmp(tr.ids[i - 1], tr.ids[i]) < 0);
    /* deterministic, and seed-dependent */
    open_split(f, root, "train", 5, NULL, &again);
    assert_true(same_ids(&tr, &again));
    open_split(f, root, "train", 6, NULL, &other);
    assert_false(same_ids(&tr, &other));
    /* a class's split does not depend on the other classes */
    char root2[4096];
    fresh_root(root2, sizeof root2, "split2");
    build_split_tree(root2, 1);
    open_split(f, root2, "train", 5, NULL, &other);
    assert_int_equal(other.n, tr.n + 3); /* + round(0.6 * 5) of the new class */
    for (int64_t i = 0; i < tr.n; i++) assert_true(contains(&other, tr.ids[i]));
    /* other fractions: 0.5 / 0.25 / 0.25 of 100 */
    open_split(f, root, "val", 1, "0.5, 0.25, 0.25", &va);
    assert_int_equal(count_class(&va, 3), 25);
    assert_int_equal(count_class(&va, 0), 3); /* round(7.5) - round(5) = 8 - 5 */
    /* fractions below 1 leave files out of every split */
    open_split(f, root, "test", 1, "0.5, 0.2, 0.1", &te);
    assert_int_equal(count_class(&te, 3), 10);
    rm_rf(root);
    rm_rf(root2);
}

static void test_split_errors(void **state) {
    fixture *f = *state;
    char root[4096];
    fresh_root(root, sizeof root, "split-err");
    put(root, "c0/a.png", "gray8.png", NULL);
    put(root, "c1/b.png", "gray8.png", NULL);
    /* one file per class: round(0.6) = 1 goes to train, val and test are empty */
    expect_open_error(f, root, "split = val\n", EX_E_CONFIG, "split 'val'", "is empty");
    expect_open_error(f, root, "split = train\nsplit_fractions = 0.7, 0.2, 0.2\n", EX_E_CONFIG, "sum to", NULL);
    expect_open_error(f, root, "split = train\nsplit_fractions = 0.7, 0.3\n", EX_E_CONFIG, "give three", NULL);
    rm_rf(root);
}

/* ---------------------------------------------------------------------------
 * errors
 * --------------------------------------------------------------------------- */

static void test_layout_errors(void **state) {
    fixture *f = *state;
    char root[4096], path[8192];
    expect_open_error(f, "/nonexistent/imagefolder-root", NULL, EX_E_IO, "/nonexistent/imagefolder-root", NULL);

    fresh_root(root, sizeof root, "err-empty-root");
    expect_open_error(f, root, NULL, EX_E_FORMAT, root, "no class folders");
    put(root, "loose.jpg", "rgb420.jpg", NULL);
    expect_open_error(f, root, NULL, EX_E_FORMAT, "1 images directly inside", "imagelist");

    snprintf(path, sizeof path, "%s/loose.jpg", root); /* root is a file */
    expect_open_error(f, path, NULL, EX_E_IO, path, NULL);
    rm_rf(root);

    fresh_root(root, sizeof root, "err-empty-class");
    put(root, "good/a.png", "gray8.png", NULL);
    put(root, "textonly/readme.txt", NULL, "no images here\n");
    snprintf(path, sizeof path, "%s/textonly", root);
    expect_open_error(f, root, NULL, EX_E_FORMAT, path, "holds no image files");
    rm_rf(root);

    fresh_root(root, sizeof root, "err-empty-dir");
    put(root, "good/a.png", "gray8.png", NULL);
    snprintf(path, sizeof path, "%s/zempty", root);
    mkdirs(path);
    expect_open_error(f, root, NULL, EX_E_FORMAT, path, "jpg, jpeg, png");
    rm_rf(root);

    fresh_root(root, sizeof root, "err-dangling");
    put(root, "c/a.png", "gray8.png", NULL);
    snprintf(path, sizeof path, "%s/c/gone.jpg", root);
    assert_int_equal(symlink("/nonexistent/target.jpg", path), 0);
    expect_open_error(f, root, NULL, EX_E_IO, path, "No such file");
    rm_rf(root);

    fresh_root(root, sizeof root, "err-loop");
    put(root, "c/a.png", "gray8.png", NULL);
    snprintf(path, sizeof path, "%s/c/loop", root);
    assert_int_equal(symlink(".", path), 0);
    expect_open_error(f, root, NULL, EX_E_FORMAT, "nested deeper than 32", "link loop");
    rm_rf(root);
}

static void test_option_errors_and_bad_image(void **state) {
    fixture *f = *state;
    char root[4096];
    fresh_root(root, sizeof root, "err-opts");
    put(root, "c/a.png", "gray8.png", NULL);
    put(root, "c/b.jpg", NULL, "<html>a text file named .jpg</html>\n");
    expect_open_error(f, root, "channels = 2\n", EX_E_CONFIG, "channels = 2", "1 (gray) or 3");
    expect_open_error(f, root, "extensions = png, .\n", EX_E_CONFIG, "extensions", "empty");
    /* the bad file is found at open but only decoded at get: a clear error naming it */
    void *ds = open_ok(f, root, NULL);
    assert_int_equal(f->vt->length(ds), 2);
    ex_sample s;
    ex_err err;
    EXT_OK(f->vt->get(ds, 0, &s, &err), &err);
    ex_sample_clear(&s);
    assert_int_equal(f->vt->get(ds, 1, &s, &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "c/b.jpg"));
    assert_non_null(strstr(err.msg, "not a JPEG or PNG"));
    assert_null(s.pixels);
    f->vt->close(ds);
    rm_rf(root);
}

/* ---------------------------------------------------------------------------
 * concurrent get
 * --------------------------------------------------------------------------- */

typedef struct worker {
    fixture *f;
    void *ds;
    int failures;
    double sum;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    int64_t n = w->f->vt->length(w->ds);
    for (int rep = 0; rep < 20; rep++)
        for (int64_t i = 0; i < n; i++) {
            ex_sample s;
            ex_err err;
            if (w->f->vt->get(w->ds, i, &s, &err) != EX_OK) {
                w->failures++;
                continue;
            }
            w->sum += s.pixels[0];
            ex_sample_clear(&s);
        }
    return NULL;
}

static void test_concurrent_get(void **state) {
    fixture *f = *state;
    char root[4096];
    fresh_root(root, sizeof root, "threads");
    build_order_tree(root);
    void *ds = open_ok(f, root, NULL);
    worker w[2] = {{f, ds, 0, 0.0}, {f, ds, 0, 0.0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    assert_int_equal(w[0].failures + w[1].failures, 0);
    assert_float_equal(w[0].sum, w[1].sum, 0.0);
    f->vt->close(ds);
    rm_rf(root);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_labels_decode),
        cmocka_unit_test(test_splits),
        cmocka_unit_test(test_split_errors),
        cmocka_unit_test(test_layout_errors),
        cmocka_unit_test(test_option_errors_and_bad_image),
        cmocka_unit_test(test_concurrent_get),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
