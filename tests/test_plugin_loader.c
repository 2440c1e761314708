/*
 * tests/test_plugin_loader.c — the plugin loader and registry: a good plugin,
 * an older plugin (smaller descriptor and vtable), and each way a plugin can be
 * rejected (ABI major, newer minor, missing mandatory slot, missing entry
 * symbol, unresolved symbol at dlopen, missing file, bad descriptors), each
 * with a message that names the file and the reason.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/config.h"
#include "test_support.h"

static void abi_path(char *out, size_t cap, const char *variant) {
    snprintf(out, cap, "%s/explora-dataset-abi-%s.so", ext_env("EXPLORA_TEST_ABI_DIR"), variant);
}

static void expect_reject(const char *variant, const char *needle1, const char *needle2) {
    ex_registry *r;
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_registry_new(&r, &err), &err);
    char path[4096];
    abi_path(path, sizeof path, variant);
    const ex_plugin *p = (const ex_plugin *)0x1;
    ex_status st = ex_registry_load_file(r, path, &p, &err);
    assert_int_equal(st, EX_E_PLUGIN);
    assert_null(p);
    assert_int_equal(ex_registry_count(r), 0);
    if (!strstr(err.msg, path)) fail_msg("message does not name the file: %s", err.msg);
    if (needle1 && !strstr(err.msg, needle1)) fail_msg("message lacks '%s': %s", needle1, err.msg);
    if (needle2 && !strstr(err.msg, needle2)) fail_msg("message lacks '%s': %s", needle2, err.msg);
    ex_registry_free(r);
}

static void test_good_plugin_loads_and_works(void **state) {
    (void)state;
    ex_registry *r;
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_registry_new(&r, &err), &err);
    char path[4096];
    abi_path(path, sizeof path, "good");
    const ex_plugin *p = NULL;
    EXT_OK(ex_registry_load_file(r, path, &p, &err), &err);
    assert_non_null(p);
    assert_int_equal(p->desc.kind, EX_PLUGIN_DATASET);
    assert_string_equal(p->desc.name, "abi-good");
    assert_string_equal(p->desc.version, "1.2.3");
    assert_int_equal(p->desc.abi_major, EX_ABI_MAJOR);
    assert_string_equal(p->path, path);
    assert_string_equal(p->desc.keys[0].name, "count");

    /* open it through a config section, as the CLI does */
    ex_config *cfg;
    EXT_OK(ex_config_load_string(&cfg, "[data]\nname = abi-good\ncount = 5\nchannels = 2\nclasses = 3\n", "t.ini", &err),
           &err);
    ex_cfg_section view = {cfg, "data", p->desc.keys};
    const ex_dataset_vtable *vt = &p->vtable_copy.dataset;
    void *ds = NULL;
    EXT_OK(vt->open(&view, &ds, &err), &err);
    assert_int_equal(vt->length(ds), 5);
    assert_non_null(vt->num_classes);
    assert_int_equal(vt->num_classes(ds), 3);
    assert_null(vt->class_name);
    ex_sample smp = {0};
    EXT_OK(vt->get(ds, 4, &smp, &err), &err);
    assert_int_equal(smp.channels, 2);
    assert_int_equal(smp.label, 4 % 3);
    assert_float_equal(smp.pixels[0], 4.0f / 16.0f, 1e-7);
    assert_float_equal(smp.pixels[20], (float)((4 + 20) % 17) / 16.0f, 1e-7);
    assert_string_equal(smp.id, "synthetic-4");
    ex_sample_clear(&smp);
    assert_int_equal(vt->get(ds, 5, &smp, &err), EX_E_RANGE);
    vt->close(ds);
    ex_config_free(cfg);

    /* loading the same plugin again is reported as shadowed, naming the first */
    assert_int_equal(ex_registry_load_file(r, path, &p, &err), EX_E_PLUGIN);
    assert_non_null(strstr(err.msg, "shadowed"));
    assert_int_equal(ex_registry_count(r), 1);
    ex_registry_free(r);
}

static void test_older_plugin_is_accepted_with_null_optional_slots(void **state) {
    (void)state;
    ex_registry *r;
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_registry_new(&r, &err), &err);
    char path[4096];
    abi_path(path, sizeof path, "old");
    const ex_plugin *p = NULL;
    EXT_OK(ex_registry_load_file(r, path, &p, &err), &err);
    assert_string_equal(p->desc.name, "abi-old");
    assert_int_equal(p->desc.abi_minor, 0);
    assert_non_null(p->vtable_copy.dataset.get);
    assert_null(p->vtable_copy.dataset.num_classes); /* beyond its vtable_size: zeroed, not garbage */
    assert_null(p->vtable_copy.dataset.class_name);
    ex_registry_free(r);
}

static void test_wrong_major_rejected(void **state) {
    (void)state;
    char want[64];
    snprintf(want, sizeof want, "major version %d", EX_ABI_MAJOR + 1);
    expect_reject("major", want, "rebuild");
}

static void test_newer_minor_rejected(void **state) {
    (void)state;
    char want[64];
    snprintf(want, sizeof want, "needs ABI %d.%d", EX_ABI_MAJOR, EX_ABI_MINOR + 1);
    expect_reject("minor", want, "upgrade explora");
}

static void test_missing_mandatory_slot_rejected(void **state) {
    (void)state;
    expect_reject("noslot", "mandatory slot", ": get.");
}

static void test_missing_entry_symbol_rejected(void **state) {
    (void)state;
    expect_reject("noentry", "symbol 'explora_plugin_entry' not found", "undefined symbol");
}

static void test_unresolved_symbol_reports_dlerror(void **state) {
    (void)state;
    expect_reject("undefined", "dlopen failed", "explora_test_symbol_that_does_not_exist");
}

static void test_missing_file_rejected(void **state) {
    (void)state;
    ex_registry *r;
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_registry_new(&r, &err), &err);
    const ex_plugin *p;
    assert_int_equal(ex_registry_load_file(r, "/nonexistent/explora-dataset-x.so", &p, &err), EX_E_PLUGIN);
    assert_non_null(strstr(err.msg, "/nonexistent/explora-dataset-x.so"));
    assert_non_null(strstr(err.msg, "No such file"));
    ex_registry_free(r);
}

static void test_scan_lists_loaded_and_rejected(void **state) {
    (void)state;
    ex_registry *r;
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_registry_new(&r, &err), &err);
    EXT_OK(ex_registry_add_dir(r, ext_env("EXPLORA_TEST_ABI_DIR"), &err), &err);
    EXT_OK(ex_registry_add_dir(r, ext_env("EXPLORA_TEST_ABI_DIR"), &err), &err); /* duplicates ignored */
    EXT_OK(ex_registry_add_dir(r, "/nonexistent/dir", &err), &err);              /* absent dirs skipped */
    EXT_OK(ex_registry_add_dir(r, ext_env("EXPLORA_TEST_TMPDIR"), &err), &err);   /* no candidates in it */
    assert_int_equal(ex_registry_dir_count(r), 3);
    EXT_OK(ex_registry_scan(r, &err), &err);
    assert_int_equal(ex_registry_count(r), 2); /* good, old */
    assert_int_equal(ex_registry_rejected_count(r), 5);
    const char *want[] = {"abi-major.so", "abi-minor.so", "abi-noentry.so", "abi-noslot.so", "abi-undefined.so"};
    for (int i = 0; i < 5; i++) { /* scanned in name order */
        const ex_plugin_rejection *rj = ex_registry_rejected_at(r, i);
        if (!strstr(rj->path, want[i])) fail_msg("rejection %d is %s, expected %s", i, rj->path, want[i]);
        assert_true(strlen(rj->reason) > 20);
    }
    const ex_plugin *p;
    EXT_OK(ex_registry_find(r, EX_PLUGIN_DATASET, "abi-good", &p, &err), &err);
    assert_string_equal(p->desc.name, "abi-good");
    /* not found: the message lists what exists */
    assert_int_equal(ex_registry_find(r, EX_PLUGIN_DATASET, "fmow", &p, &err), EX_E_PLUGIN);
    assert_non_null(strstr(err.msg, "no dataset plugin named 'fmow'"));
    assert_non_null(strstr(err.msg, "abi-good, abi-old"));
    /* a rejected file of that name: the message carries the reason */
    assert_int_equal(ex_registry_find(r, EX_PLUGIN_DATASET, "abi-major", &p, &err), EX_E_PLUGIN);
    assert_non_null(strstr(err.msg, "was rejected"));
    assert_non_null(strstr(err.msg, "major version"));
    /* wrong kind */
    assert_int_equal(ex_registry_find(r, EX_PLUGIN_BACKEND, "abi-good", &p, &err), EX_E_PLUGIN);
    ex_registry_free(r);
}

static void test_env_path_comes_first(void **state) {
    (void)state;
    setenv("EXPLORA_PLUGIN_PATH", "/tmp/explora-a::/tmp/explora-b", 1);
    ex_registry *r;
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_registry_new(&r, &err), &err);
    EXT_OK(ex_registry_add_dir(r, "/tmp/explicit", &err), &err);
    EXT_OK(ex_registry_add_default_dirs(r, &err), &err);
    assert_string_equal(ex_registry_dir_at(r, 0), "/tmp/explicit");
    assert_string_equal(ex_registry_dir_at(r, 1), "/tmp/explora-a");
    assert_string_equal(ex_registry_dir_at(r, 2), "/tmp/explora-b");
    assert_non_null(strstr(ex_registry_dir_at(r, 3), "explora/plugins")); /* the install directory */
    assert_true(ex_registry_dir_count(r) >= 6);                            /* + lib-relative, exe dir, exe/plugins */
    unsetenv("EXPLORA_PLUGIN_PATH");
    ex_registry_free(r);
}

/* --- descriptor checks without files ----------------------------------------------------- */

static ex_status dummy_open(const ex_cfg_section *c, void **s, ex_err *e) {
    (void)c, (void)e;
    *s = NULL;
    return EX_OK;
}
static void dummy_close(void *s) { (void)s; }
static int64_t dummy_length(void *s) {
    (void)s;
    return 0;
}
static ex_status dummy_get(void *s, int64_t i, ex_sample *o, ex_err *e) {
    (void)s, (void)i, (void)o, (void)e;
    return EX_OK;
}
static const ex_dataset_vtable dummy_vt = {dummy_open, dummy_close, dummy_length, dummy_get, NULL, NULL};

static void accept_fails_with(const ex_plugin_desc *d, const char *needle) {
    ex_plugin p;
    ex_err err;
    ex_err_clear(&err);
    assert_int_equal(ex_plugin_accept(d, "mem.so", &p, &err), EX_E_PLUGIN);
    if (!strstr(err.msg, needle)) fail_msg("message lacks '%s': %s", needle, err.msg);
    assert_non_null(strstr(err.msg, "mem.so"));
}

static void test_descriptor_validation(void **state) {
    (void)state;
    ex_plugin p;
    ex_err err;
    ex_err_clear(&err);
    ex_plugin_desc ok = EX_PLUGIN_DESC(EX_PLUGIN_DATASET, "dummy", "1.0", "d", NULL, &dummy_vt);
    EXT_OK(ex_plugin_accept(&ok, "mem.so", &p, &err), &err);

    accept_fails_with(NULL, "returned NULL");
    ex_plugin_desc d = ok;
    d.struct_size = 8;
    accept_fails_with(&d, "struct_size 8");
    d = ok;
    d.name = "Bad Name";
    accept_fails_with(&d, "'Bad Name' is invalid");
    d = ok;
    d.kind = (ex_plugin_kind)42;
    accept_fails_with(&d, "unknown plugin kind 42");
    d = ok;
    d.version = NULL;
    accept_fails_with(&d, "no version");
    d = ok;
    d.vtable = NULL;
    accept_fails_with(&d, "no vtable");

    static const ex_key_spec enum_no_choices[] = {{"mode", EX_KEY_ENUM, "a", EX_NORANGE, NULL, "x"}, EX_KEY_END};
    d = ok;
    d.keys = enum_no_choices;
    accept_fails_with(&d, "without choices");
    static const ex_key_spec dup[] = {{"a", EX_KEY_INT, "1", EX_NORANGE, NULL, "x"},
                                      {"a", EX_KEY_INT, "1", EX_NORANGE, NULL, "x"},
                                      EX_KEY_END};
    d = ok;
    d.keys = dup;
    accept_fails_with(&d, "declares key 'a' twice");
    static const ex_key_spec reserved[] = {{"name", EX_KEY_STRING, "x", EX_NORANGE, NULL, "x"}, EX_KEY_END};
    d = ok;
    d.keys = reserved;
    accept_fails_with(&d, "reserved");

    /* a vtable shorter than the mandatory slots (an older plugin that predates them) */
    d = ok;
    d.vtable_size = 2 * sizeof(void *);
    accept_fails_with(&d, "length, get");
}

static void test_backend_missing_slots_are_named(void **state) {
    (void)state;
    ex_backend_vtable vt;
    memset(&vt, 0, sizeof vt);
    char buf[2048];
    int n = ex_backend_vtable_missing(&vt, sizeof vt, buf, sizeof buf);
    assert_true(n >= 40);
    assert_non_null(strstr(buf, "gemm"));
    assert_non_null(strstr(buf, "attention_bwd"));
    assert_null(strstr(buf, "device_info")); /* optional */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_plugin_loads_and_works),
        cmocka_unit_test(test_older_plugin_is_accepted_with_null_optional_slots),
        cmocka_unit_test(test_wrong_major_rejected),
        cmocka_unit_test(test_newer_minor_rejected),
        cmocka_unit_test(test_missing_mandatory_slot_rejected),
        cmocka_unit_test(test_missing_entry_symbol_rejected),
        cmocka_unit_test(test_unresolved_symbol_reports_dlerror),
        cmocka_unit_test(test_missing_file_rejected),
        cmocka_unit_test(test_scan_lists_loaded_and_rejected),
        cmocka_unit_test(test_env_path_comes_first),
        cmocka_unit_test(test_descriptor_validation),
        cmocka_unit_test(test_backend_missing_slots_are_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
