/*
 * tests/test_config.c — the strict INI layer (explora/config.h): typed getters
 * and their error messages, schema validation, unknown sections, syntax
 * errors with line numbers, duplicate and valueless keys (iniparser 4.1's
 * CVE-2023-33461 case), includes (order, nesting, relative directories,
 * cycles, depth, missing files), --set overrides, origins, write/reload round
 * trips, loading from memory, and hostile input (binary, NUL bytes, huge
 * lines, CRLF, BOM).
 *
 * Every failing case checks the status code and that the message names the
 * file and line (or "--set"), the section, the key, the value and what is
 * accepted, so a wrong or vaguer implementation fails.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "explora/config.h"
#include "test_support.h"

/* ---- helpers ------------------------------------------------------------------------- */

#define HAS(err, text)                                                                               \
    do {                                                                                             \
        if (!strstr((err).msg, (text))) fail_msg("message lacks \"%s\":\n  %s", (text), (err).msg); \
    } while (0)

#define LACKS(err, text)                                                                             \
    do {                                                                                             \
        if (strstr((err).msg, (text))) fail_msg("message should not contain \"%s\":\n  %s", (text), (err).msg); \
    } while (0)

/* Load text as "t.ini"; the config must load. */
static ex_config *load_ok(const char *text) {
    ex_err err;
    ex_err_clear(&err);
    ex_config *c = NULL;
    EXT_OK(ex_config_load_string(&c, text, "t.ini", &err), &err);
    assert_non_null(c);
    return c;
}

/* Load text as "t.ini"; it must fail with `code`; the message is left in *err. */
static void load_fails(const char *text, ex_status code, ex_err *err) {
    ex_err_clear(err);
    ex_config *c = (ex_config *)0x1;
    ex_status st = ex_config_load_string(&c, text, "t.ini", err);
    if (st != code) fail_msg("expected status %d, got %d (%s) for:\n%s", code, st, err->msg, text);
    assert_null(c);
}

/* Load a file that must fail with `code`. */
static void load_file_fails(const char *path, ex_status code, ex_err *err) {
    ex_err_clear(err);
    ex_config *c = (ex_config *)0x1;
    ex_status st = ex_config_load(&c, path, err);
    if (st != code) fail_msg("expected status %d, got %d (%s) loading %s", code, st, err->msg, path);
    assert_null(c);
}

static void write_text(const char *path, const char *text) { ext_write_file(path, text, strlen(text)); }

/* A fresh directory under the test tmpdir. */
static void make_dir(char *out, size_t cap, const char *name) {
    ext_tmp_path(out, cap, name);
    if (mkdir(out, 0755) != 0 && errno != EEXIST) fail_msg("mkdir %s: %s", out, strerror(errno));
}

static void path_in(char *out, size_t cap, const char *dir, const char *name) {
    int n = snprintf(out, cap, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < cap);
}

/* ---- the schema used by most tests -------------------------------------------------------- */

static const ex_key_spec lora_keys[] = {
    {"rank", EX_KEY_INT, NULL, 1, 1024, NULL, "adapter rank"},
    {"alpha", EX_KEY_FLOAT, "16", 0, 1e6, NULL, "scale = alpha / rank"},
    {"dropout", EX_KEY_FLOAT, "0", 0, 1, NULL, "dropout on the adapter input"},
    {"targets", EX_KEY_STRING_LIST, "qkv, proj", EX_NORANGE, NULL, "linear layers to adapt"},
    {"init", EX_KEY_ENUM, "kaiming", EX_NORANGE, "kaiming|zeros|gaussian", "initialisation of A"},
    {"merge", EX_KEY_BOOL, "false", EX_NORANGE, NULL, "merge into the base weights at the end"},
    {"layers", EX_KEY_INT_LIST, "", 0, 23, NULL, "blocks to adapt (empty: all)"},
    {"scales", EX_KEY_FLOAT_LIST, "1.0", 0, 10, NULL, "per-layer scales"},
    {"init_from", EX_KEY_PATH, "weights/lora.safetensors", EX_NORANGE, NULL, "adapter weights to start from"},
    {"tag", EX_KEY_STRING, "none", EX_NORANGE, NULL, "free text"},
    EX_KEY_END,
};

static const char *const run_sections[] = {"run", "data", "peft.lora", NULL};

/* One key `k` of the given spec in section [s] of "v.ini" line 3; returns the loaded config. */
static ex_config *one_value(const char *value) {
    char text[4096];
    snprintf(text, sizeof text, "[s]\n# the value under test\nk = %s\n", value);
    ex_err err;
    ex_err_clear(&err);
    ex_config *c = NULL;
    EXT_OK(ex_config_load_string(&c, text, "v.ini", &err), &err);
    return c;
}

/* The message for a bad value on line 3 of v.ini must name all of it. */
static void check_bad_msg(const ex_err *err, const char *written, const char *why, const char *expected) {
    char want[600];
    snprintf(want, sizeof want, "v.ini:3: [s] k = \"%s\" %s", written, why);
    HAS(*err, want);
    HAS(*err, expected);
}

/* ---- typed getters ------------------------------------------------------------------------- */

static void test_int_values(void **state) {
    (void)state;
    const ex_key_spec ranged[] = {{"k", EX_KEY_INT, NULL, 1, 1024, NULL, ""}, EX_KEY_END};
    const ex_key_spec open[] = {{"k", EX_KEY_INT, NULL, EX_NORANGE, NULL, ""}, EX_KEY_END};
    struct { const char *v; int64_t want; const ex_key_spec *spec; } good[] = {
        {"010", 10, ranged},      {"64", 64, ranged},     {"+5", 5, ranged},   {"1024", 1024, ranged},
        {"1", 1, ranged},         {"-42", -42, open},     {"0", 0, open},      {"\" 7 \"", 7, open},
        {"9223372036854775807", INT64_MAX, open},        {"-9223372036854775808", INT64_MIN, open},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ex_config *c = one_value(good[i].v);
        ex_cfg_section s = {c, "s", good[i].spec};
        ex_err err;
        int64_t v = -1;
        EXT_OK(ex_cfg_int(&s, "k", &v, &err), &err);
        if (v != good[i].want) fail_msg("'%s' read as %lld, expected %lld", good[i].v, (long long)v, (long long)good[i].want);
        ex_config_free(c);
    }
    struct { const char *v; const char *why; const ex_key_spec *spec; } bad[] = {
        {"0x10", "is not an integer", ranged},   {"1.5", "is not an integer", ranged},
        {"12abc", "is not an integer", ranged},  {"sixty", "is not an integer", ranged},
        {"1e3", "is not an integer", ranged},    {"- 5", "is not an integer", open},
        {"0", "is out of range", ranged},        {"1025", "is out of range", ranged},
        {"-1", "is out of range", ranged},       {"9223372036854775808", "does not fit in a 64-bit integer", open},
        {"-9223372036854775809", "does not fit in a 64-bit integer", open},
        {"99999999999999999999999", "does not fit in a 64-bit integer", open},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ex_config *c = one_value(bad[i].v);
        ex_cfg_section s = {c, "s", bad[i].spec};
        ex_err err;
        int64_t v = 12345;
        ex_err_clear(&err);
        assert_int_equal(ex_cfg_int(&s, "k", &v, &err), EX_E_CONFIG);
        assert_int_equal(v, 12345); /* untouched on error */
        check_bad_msg(&err, bad[i].v, bad[i].why,
                      bad[i].spec == ranged ? "Expected an integer in [1, 1024]." : "Expected an integer.");
        ex_config_free(c);
    }
    /* a quoted blank is not a number either */
    ex_config *c = one_value("\"  \"");
    ex_cfg_section s = {c, "s", open};
    ex_err err;
    int64_t v;
    assert_int_equal(ex_cfg_int(&s, "k", &v, &err), EX_E_CONFIG);
    HAS(err, "is not an integer");
    ex_config_free(c);
}

/* The exact message promised in the interface's documentation. */
static void test_message_format(void **state) {
    (void)state;
    char text[1024] = "";
    for (int i = 1; i <= 12; i++) strcat(text, "# padding\n");
    strcat(text, "[peft.lora]\nrank = sixty\n"); /* line 14 */
    ex_config *c = NULL;
    ex_err err;
    EXT_OK(ex_config_load_string(&c, text, "run.ini", &err), &err);
    ex_cfg_section s = {c, "peft.lora", lora_keys};
    int64_t v;
    assert_int_equal(ex_cfg_int(&s, "rank", &v, &err), EX_E_CONFIG);
    assert_string_equal(err.msg,
                        "run.ini:14: [peft.lora] rank = \"sixty\" is not an integer. Expected an integer in [1, 1024].");
    ex_config_free(c);
}

static void test_float_values(void **state) {
    (void)state;
    const ex_key_spec unit[] = {{"k", EX_KEY_FLOAT, NULL, 0, 1, NULL, ""}, EX_KEY_END};
    const ex_key_spec open[] = {{"k", EX_KEY_FLOAT, NULL, EX_NORANGE, NULL, ""}, EX_KEY_END};
    struct { const char *v; double want; const ex_key_spec *spec; } good[] = {
        {"0.5", 0.5, unit},    {"1e-3", 1e-3, unit},   {".25", 0.25, unit},  {"1", 1.0, unit},
        {"0", 0.0, unit},      {"-2.5E+2", -250.0, open}, {"1e-400", 0.0, open}, {"+3.", 3.0, open},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ex_config *c = one_value(good[i].v);
        ex_cfg_section s = {c, "s", good[i].spec};
        ex_err err;
        double v = -1;
        EXT_OK(ex_cfg_float(&s, "k", &v, &err), &err);
        if (v != good[i].want) fail_msg("'%s' read as %.17g, expected %.17g", good[i].v, v, good[i].want);
        ex_config_free(c);
    }
    struct { const char *v; const char *why; const ex_key_spec *spec; } bad[] = {
        {"nan", "is not a number", open},       {"inf", "is not a number", open},
        {"-inf", "is not a number", open},      {"0x1p3", "is not a number", open},
        {"1.5.2", "is not a number", open},     {"abc", "is not a number", open},
        {"1e", "is not a number", open},        {"e5", "is not a number", open},
        {"1e999", "is outside the range of a double", open},
        {"1.5", "is out of range", unit},       {"-0.1", "is out of range", unit},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ex_config *c = one_value(bad[i].v);
        ex_cfg_section s = {c, "s", bad[i].spec};
        ex_err err;
        double v = 7;
        assert_int_equal(ex_cfg_float(&s, "k", &v, &err), EX_E_CONFIG);
        assert_true(v == 7);
        check_bad_msg(&err, bad[i].v, bad[i].why, bad[i].spec == unit ? "Expected a number in [0, 1]." : "Expected a number.");
        ex_config_free(c);
    }
}

static void test_bool_values(void **state) {
    (void)state;
    const ex_key_spec spec[] = {{"k", EX_KEY_BOOL, NULL, EX_NORANGE, NULL, ""}, EX_KEY_END};
    const char *yes[] = {"true", "TRUE", "yes", "Yes", "on", "ON", "1"};
    const char *no[] = {"false", "False", "no", "NO", "off", "Off", "0"};
    for (int t = 0; t < 2; t++) {
        const char **list = t ? yes : no;
        for (int i = 0; i < 7; i++) {
            ex_config *c = one_value(list[i]);
            ex_cfg_section s = {c, "s", spec};
            ex_err err;
            int v = -1;
            EXT_OK(ex_cfg_bool(&s, "k", &v, &err), &err);
            if (v != t) fail_msg("'%s' read as %d", list[i], v);
            ex_config_free(c);
        }
    }
    const char *bad[] = {"maybe", "2", "y", "t", "truee", "nope"};
    for (int i = 0; i < 6; i++) {
        ex_config *c = one_value(bad[i]);
        ex_cfg_section s = {c, "s", spec};
        ex_err err;
        int v = 5;
        assert_int_equal(ex_cfg_bool(&s, "k", &v, &err), EX_E_CONFIG);
        assert_int_equal(v, 5);
        check_bad_msg(&err, bad[i], "is not a boolean", "Expected a boolean (true/false, yes/no, on/off, 1/0).");
        ex_config_free(c);
    }
}

static void test_enum_values(void **state) {
    (void)state;
    const ex_key_spec spec[] = {{"k", EX_KEY_ENUM, NULL, EX_NORANGE, "adamw|sgd|lion", ""}, EX_KEY_END};
    struct { const char *v; int idx; } good[] = {{"adamw", 0}, {"SGD", 1}, {"Lion", 2}};
    for (int i = 0; i < 3; i++) {
        ex_config *c = one_value(good[i].v);
        ex_cfg_section s = {c, "s", spec};
        ex_err err;
        int v = -1;
        EXT_OK(ex_cfg_enum(&s, "k", &v, &err), &err);
        assert_int_equal(v, good[i].idx);
        const char *txt = NULL;
        EXT_OK(ex_cfg_string(&s, "k", &txt, &err), &err); /* an enum read as text keeps its case */
        assert_string_equal(txt, good[i].v);
        ex_config_free(c);
    }
    const char *bad[] = {"adam", "sgd|lion", "adamwx", "1"};
    for (int i = 0; i < 4; i++) {
        ex_config *c = one_value(bad[i]);
        ex_cfg_section s = {c, "s", spec};
        ex_err err;
        int v = 9;
        assert_int_equal(ex_cfg_enum(&s, "k", &v, &err), EX_E_CONFIG);
        assert_int_equal(v, 9);
        check_bad_msg(&err, bad[i], "is not one of the choices", "Expected one of: adamw, sgd, lion.");
        /* reading it as text still checks it */
        const char *txt = NULL;
        assert_int_equal(ex_cfg_string(&s, "k", &txt, &err), EX_E_CONFIG);
        ex_config_free(c);
    }
}

static void test_int_lists(void **state) {
    (void)state;
    const ex_key_spec spec[] = {{"k", EX_KEY_INT_LIST, NULL, 0, 23, NULL, ""}, EX_KEY_END};
    ex_config *c = one_value("1, 2 ,010,\t23");
    ex_cfg_section s = {c, "s", spec};
    ex_err err;
    int64_t v[8];
    int n = -1;
    EXT_OK(ex_cfg_int_list(&s, "k", v, 8, &n, &err), &err);
    assert_int_equal(n, 4);
    assert_int_equal(v[0], 1);
    assert_int_equal(v[1], 2);
    assert_int_equal(v[2], 10);
    assert_int_equal(v[3], 23);
    /* more items than the caller's capacity */
    assert_int_equal(ex_cfg_int_list(&s, "k", v, 3, &n, &err), EX_E_CONFIG);
    check_bad_msg(&err, "1, 2 ,010,\t23", "has more than 3 items", "Expected a comma-separated list of integers, each in [0, 23].");
    ex_config_free(c);

    struct { const char *v; const char *why; } bad[] = {
        {"1,,2", "has an empty item (item 2)"},
        {"1,2,", "has an empty item (item 3)"},
        {",1", "has an empty item (item 1)"},
        {"1, x, 3", "item 2 (\"x\") is not an integer"},
        {"1, 24", "item 2 (\"24\") is out of range"},
        {"0x1", "item 1 (\"0x1\") is not an integer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = one_value(bad[i].v);
        s.config = c;
        assert_int_equal(ex_cfg_int_list(&s, "k", v, 8, &n, &err), EX_E_CONFIG);
        assert_int_equal(n, 0);
        check_bad_msg(&err, bad[i].v, bad[i].why, "Expected a comma-separated list of integers, each in [0, 23].");
        ex_config_free(c);
    }
}

static void test_float_and_string_lists(void **state) {
    (void)state;
    const ex_key_spec fspec[] = {{"k", EX_KEY_FLOAT_LIST, NULL, 0, 1, NULL, ""}, EX_KEY_END};
    ex_config *c = one_value("0.485, 0.456,0.406");
    ex_cfg_section s = {c, "s", fspec};
    ex_err err;
    double f[4];
    int n = -1;
    EXT_OK(ex_cfg_float_list(&s, "k", f, 4, &n, &err), &err);
    assert_int_equal(n, 3);
    assert_true(f[0] == 0.485 && f[1] == 0.456 && f[2] == 0.406);
    ex_config_free(c);
    c = one_value("0.5, nan");
    s.config = c;
    assert_int_equal(ex_cfg_float_list(&s, "k", f, 4, &n, &err), EX_E_CONFIG);
    check_bad_msg(&err, "0.5, nan", "item 2 (\"nan\") is not a number", "Expected a comma-separated list of numbers, each in [0, 1].");
    ex_config_free(c);
    c = one_value("0.5, 2");
    s.config = c;
    assert_int_equal(ex_cfg_float_list(&s, "k", f, 4, &n, &err), EX_E_CONFIG);
    HAS(err, "item 2 (\"2\") is out of range");
    ex_config_free(c);

    const ex_key_spec sspec[] = {{"k", EX_KEY_STRING_LIST, NULL, EX_NORANGE, NULL, ""}, EX_KEY_END};
    c = one_value("qkv,  fc 1 ,Proj");
    s = (ex_cfg_section){c, "s", sspec};
    const char *items[4];
    char buf[64];
    EXT_OK(ex_cfg_string_list(&s, "k", items, 4, &n, buf, sizeof buf, &err), &err);
    assert_int_equal(n, 3);
    assert_string_equal(items[0], "qkv");
    assert_string_equal(items[1], "fc 1");
    assert_string_equal(items[2], "Proj");
    /* too few slots, too small a buffer */
    assert_int_equal(ex_cfg_string_list(&s, "k", items, 2, &n, buf, sizeof buf, &err), EX_E_CONFIG);
    HAS(err, "has more than 2 items");
    assert_int_equal(ex_cfg_string_list(&s, "k", items, 4, &n, buf, 6, &err), EX_E_CONFIG);
    HAS(err, "v.ini:3: [s] k = ");
    HAS(err, "more than the 6 bytes");
    ex_config_free(c);
    c = one_value("a, , b");
    s.config = c;
    assert_int_equal(ex_cfg_string_list(&s, "k", items, 4, &n, buf, sizeof buf, &err), EX_E_CONFIG);
    check_bad_msg(&err, "a, , b", "has an empty item (item 2)", "Expected a comma-separated list of non-empty strings.");
    ex_config_free(c);
}

static void test_strings_and_paths(void **state) {
    (void)state;
    char dir[1024], path[1100];
    make_dir(dir, sizeof dir, "paths");
    path_in(path, sizeof path, dir, "run.ini");
    write_text(path, "[peft.lora]\nrank = 8\ninit_from = ckpt/a.safetensors\ntag = \"  spaced; out \"\n"
                     "[data]\nroot = /abs/data\n");
    ex_config *c = NULL;
    ex_err err;
    EXT_OK(ex_config_load(&c, path, &err), &err);
    ex_cfg_section s = {c, "peft.lora", lora_keys};
    char out[2048], want[8192];
    EXT_OK(ex_cfg_path(&s, "init_from", out, sizeof out, &err), &err);
    snprintf(want, sizeof want, "%s/ckpt/a.safetensors", dir);
    assert_string_equal(out, want); /* relative to the file's directory */
    const char *tag = NULL;
    EXT_OK(ex_cfg_string(&s, "tag", &tag, &err), &err);
    assert_string_equal(tag, "  spaced; out "); /* quotes keep blanks and ';' */
    /* absolute paths are unchanged */
    const ex_key_spec dkeys[] = {{"root", EX_KEY_PATH, NULL, EX_NORANGE, NULL, ""}, EX_KEY_END};
    ex_cfg_section d = {c, "data", dkeys};
    EXT_OK(ex_cfg_path(&d, "root", out, sizeof out, &err), &err);
    assert_string_equal(out, "/abs/data");
    /* too small a buffer is an error naming the key, not a truncated path */
    assert_int_equal(ex_cfg_path(&s, "init_from", out, 8, &err), EX_E_CONFIG);
    HAS(err, "init_from");
    HAS(err, "run.ini:3");
    /* an override resolves against the current directory (unchanged) */
    EXT_OK(ex_config_set(c, "peft.lora.init_from=other/b.bin", &err), &err);
    EXT_OK(ex_cfg_path(&s, "init_from", out, sizeof out, &err), &err);
    assert_string_equal(out, "other/b.bin");
    ex_config_free(c);
    /* a default resolves against the current directory (unchanged) */
    c = load_ok("[peft.lora]\nrank = 1\n");
    s.config = c;
    EXT_OK(ex_cfg_path(&s, "init_from", out, sizeof out, &err), &err);
    assert_string_equal(out, "weights/lora.safetensors");
    ex_config_free(c);
}

static void test_defaults_and_required(void **state) {
    (void)state;
    ex_config *c = load_ok("[peft.lora]\nrank = 8\n");
    ex_cfg_section s = {c, "peft.lora", lora_keys};
    ex_err err;
    int64_t i = 0;
    double f = 0;
    int b = -1, e = -1, n = -1;
    EXT_OK(ex_cfg_int(&s, "rank", &i, &err), &err);
    assert_int_equal(i, 8);
    EXT_OK(ex_cfg_float(&s, "alpha", &f, &err), &err);
    assert_true(f == 16.0);
    EXT_OK(ex_cfg_bool(&s, "merge", &b, &err), &err);
    assert_int_equal(b, 0);
    EXT_OK(ex_cfg_enum(&s, "init", &e, &err), &err);
    assert_int_equal(e, 0);
    int64_t layers[4];
    EXT_OK(ex_cfg_int_list(&s, "layers", layers, 4, &n, &err), &err);
    assert_int_equal(n, 0); /* an empty default list */
    const char *items[4];
    char buf[64];
    EXT_OK(ex_cfg_string_list(&s, "targets", items, 4, &n, buf, sizeof buf, &err), &err);
    assert_int_equal(n, 2);
    assert_string_equal(items[1], "proj");
    /* keys are case-insensitive for getters too */
    EXT_OK(ex_cfg_int(&s, "RANK", &i, &err), &err);
    assert_int_equal(i, 8);
    ex_config_free(c);

    /* required and missing */
    c = load_ok("[peft.lora]\nalpha = 4\n");
    s.config = c;
    assert_int_equal(ex_cfg_int(&s, "rank", &i, &err), EX_E_CONFIG);
    HAS(err, "[peft.lora] required key 'rank' is missing. Expected an integer in [1, 1024].");
    HAS(err, "--set peft.lora.rank=");
    /* the same through an empty config and no config at all */
    ex_config *empty = NULL;
    EXT_OK(ex_config_new(&empty, &err), &err);
    s.config = empty;
    assert_int_equal(ex_cfg_int(&s, "rank", &i, &err), EX_E_CONFIG);
    EXT_OK(ex_cfg_float(&s, "dropout", &f, &err), &err);
    assert_true(f == 0.0);
    s.config = NULL;
    EXT_OK(ex_cfg_float(&s, "alpha", &f, &err), &err);
    assert_true(f == 16.0);
    ex_config_free(empty);

    /* a key the plugin did not declare is a plugin bug */
    s.config = c;
    assert_int_equal(ex_cfg_int(&s, "rnk", &i, &err), EX_E_INTERNAL);
    HAS(err, "'rnk'");
    HAS(err, "[peft.lora]");
    HAS(err, "not declared");
    /* so is reading a key with the wrong getter */
    assert_int_equal(ex_cfg_int(&s, "alpha", &i, &err), EX_E_INTERNAL);
    HAS(err, "'alpha' is declared as float");
    /* and a default that does not parse */
    const ex_key_spec broken[] = {{"k", EX_KEY_INT, "ten", EX_NORANGE, NULL, ""},
                                  {"e", EX_KEY_ENUM, "a", EX_NORANGE, NULL, ""}, EX_KEY_END};
    ex_cfg_section bs = {c, "peft.lora", broken};
    assert_int_equal(ex_cfg_int(&bs, "k", &i, &err), EX_E_INTERNAL);
    HAS(err, "default \"ten\" is not an integer");
    assert_int_equal(ex_cfg_enum(&bs, "e", &e, &err), EX_E_INTERNAL);
    HAS(err, "enum without choices");
    assert_int_equal(ex_config_validate_section(c, "x", broken, NULL, &err), EX_E_INTERNAL);
    /* NULL specs: every key is undeclared */
    ex_cfg_section ns = {c, "peft.lora", NULL};
    assert_int_equal(ex_cfg_int(&ns, "rank", &i, &err), EX_E_INTERNAL);
    HAS(err, "declared: none");
    ex_config_free(c);
}

/* ---- schema validation ------------------------------------------------------------------------- */

static void test_validate_section(void **state) {
    (void)state;
    const char *const extra[] = {"name", NULL};
    ex_err err;
    ex_config *c = load_ok("[peft.lora]\nname = lora\nrank = 16\nalpha = 32\ninit = ZEROS\n"
                           "layers = 0, 5, 11\ntargets = qkv\n");
    EXT_OK(ex_config_validate_section(c, "peft.lora", lora_keys, extra, &err), &err);
    /* "name" is only accepted when allowed */
    assert_int_equal(ex_config_validate_section(c, "peft.lora", lora_keys, NULL, &err), EX_E_CONFIG);
    HAS(err, "t.ini:2: [peft.lora] unknown key 'name' (= \"lora\").");
    ex_config_free(c);

    /* a typo: suggestion plus the accepted keys */
    c = load_ok("[peft.lora]\nrank = 4\nrnak = 8\n");
    assert_int_equal(ex_config_validate_section(c, "peft.lora", lora_keys, extra, &err), EX_E_CONFIG);
    HAS(err, "t.ini:3: [peft.lora] unknown key 'rnak' (= \"8\"). Did you mean 'rank'?");
    HAS(err, "Accepted keys in [peft.lora]: rank, alpha, dropout, targets, init, merge, layers, scales, init_from, tag, name.");
    ex_config_free(c);
    /* nothing close: no suggestion */
    c = load_ok("[peft.lora]\nrank = 4\nbatch_size = 8\n");
    assert_int_equal(ex_config_validate_section(c, "peft.lora", lora_keys, NULL, &err), EX_E_CONFIG);
    HAS(err, "unknown key 'batch_size'");
    LACKS(err, "Did you mean");
    ex_config_free(c);

    /* bad values are found before any getter runs */
    c = load_ok("[peft.lora]\nrank = 4\ndropout = 1.5\n");
    assert_int_equal(ex_config_validate_section(c, "peft.lora", lora_keys, NULL, &err), EX_E_CONFIG);
    HAS(err, "t.ini:3: [peft.lora] dropout = \"1.5\" is out of range. Expected a number in [0, 1].");
    ex_config_free(c);
    c = load_ok("[peft.lora]\nrank = 4\ninit = orthogonal\n");
    assert_int_equal(ex_config_validate_section(c, "peft.lora", lora_keys, NULL, &err), EX_E_CONFIG);
    HAS(err, "t.ini:3: [peft.lora] init = \"orthogonal\" is not one of the choices. Expected one of: kaiming, zeros, gaussian.");
    ex_config_free(c);
    c = load_ok("[peft.lora]\nrank = 4\nlayers = 1, 30\n");
    assert_int_equal(ex_config_validate_section(c, "peft.lora", lora_keys, NULL, &err), EX_E_CONFIG);
    HAS(err, "t.ini:3: [peft.lora] layers = \"1, 30\" item 2 (\"30\") is out of range");
    ex_config_free(c);

    /* required keys: missing in the file, and the section entirely absent */
    c = load_ok("[peft.lora]\nalpha = 2\n[run]\nx = 1\n");
    assert_int_equal(ex_config_validate_section(c, "peft.lora", lora_keys, NULL, &err), EX_E_CONFIG);
    HAS(err, "[peft.lora] required key 'rank' is missing");
    const ex_key_spec optional[] = {{"x", EX_KEY_INT, "1", EX_NORANGE, NULL, ""}, EX_KEY_END};
    EXT_OK(ex_config_validate_section(c, "absent", optional, NULL, &err), &err);
    assert_int_equal(ex_config_validate_section(c, "absent", lora_keys, NULL, &err), EX_E_CONFIG);
    HAS(err, "[absent] required key 'rank' is missing");
    /* a section with no declared keys */
    assert_int_equal(ex_config_validate_section(c, "run", NULL, NULL, &err), EX_E_CONFIG);
    HAS(err, "t.ini:4: [run] unknown key 'x' (= \"1\"). [run] accepts no keys.");
    ex_config_free(c);
}

static void test_check_sections(void **state) {
    (void)state;
    ex_err err;
    ex_config *c = load_ok("[run]\nx = 1\n[Data]\ny = 2\n");
    EXT_OK(ex_config_check_sections(c, run_sections, &err), &err);
    ex_config_free(c);
    c = load_ok("[run]\nx = 1\n[pef.lora]\nrank = 2\n[optimizer]\nlr = 1\n");
    EXT_OK(ex_config_set(c, "extra.k=1", &err), &err);
    assert_int_equal(ex_config_check_sections(c, run_sections, &err), EX_E_CONFIG);
    HAS(err, "t.ini:3: unknown section [pef.lora] (did you mean [peft.lora]?)");
    HAS(err, "t.ini:5: unknown section [optimizer]");
    HAS(err, "--set: unknown section [extra]");
    HAS(err, "Known sections: [run], [data], [peft.lora].");
    LACKS(err, "[optimizer] (did you mean");
    ex_config_free(c);
}

/* ---- file syntax --------------------------------------------------------------------------------- */

static void test_duplicate_keys(void **state) {
    (void)state;
    ex_err err;
    load_fails("[s]\na = 1\nb = 2\nA = 3\n", EX_E_FORMAT, &err);
    HAS(err, "t.ini:4: [s] key 'a' is given twice (first at line 2).");
    /* also across two blocks of the same section */
    load_fails("[s]\na = 1\n[t]\nb = 1\n[S]\na = 2\n", EX_E_FORMAT, &err);
    HAS(err, "t.ini:6: [s] key 'a' is given twice (first at line 2)");
    /* the same key in different sections is fine, and repeated blocks merge */
    ex_config *c = load_ok("[s]\na = 1\n[t]\na = 2\n[s]\nb = 3\n");
    assert_int_equal(ex_config_section_count(c), 2);
    assert_string_equal(ex_config_section_name(c, 0), "s");
    assert_string_equal(ex_config_section_name(c, 1), "t");
    assert_null(ex_config_section_name(c, 2));
    assert_null(ex_config_section_name(c, -1));
    assert_string_equal(ex_config_raw(c, "s", "b"), "3");
    assert_string_equal(ex_config_raw(c, "t", "a"), "2");
    assert_string_equal(ex_config_origin(c, "s", "b"), "t.ini:6");
    ex_config_free(c);
}

/* iniparser 4.1 crashes in its getters on valueless keys (CVE-2023-33461); we reject them. */
static void test_valueless_keys(void **state) {
    (void)state;
    ex_err err;
    load_fails("[peft.lora]\nrank\n", EX_E_FORMAT, &err);
    HAS(err, "t.ini:2: \"rank\" has no '='.");
    load_fails("[peft.lora]\nalpha = 1\nrank =\n", EX_E_FORMAT, &err);
    HAS(err, "t.ini:3: 'rank' has an empty value");
    load_fails("[s]\nrank =    ; comment\n", EX_E_FORMAT, &err);
    HAS(err, "t.ini:2: 'rank' has an empty value");
    load_fails("[s]\nrank = #\n", EX_E_FORMAT, &err);
    HAS(err, "'rank' has an empty value");
    load_fails("[s]\nrank = \"\"\n", EX_E_FORMAT, &err);
    HAS(err, "t.ini:2: 'rank' has an empty value (\"\")");
    load_fails("[s]\nrank = ''\n", EX_E_FORMAT, &err);
    HAS(err, "'rank' has an empty value ('')");
}

static void test_key_before_section(void **state) {
    (void)state;
    ex_err err;
    load_fails("# header\nrank = 4\n[s]\n", EX_E_FORMAT, &err);
    HAS(err, "t.ini:2: key 'rank' comes before the first [section] header");
    load_fails("[s]\ninclude = base.ini\n", EX_E_FORMAT, &err);
    HAS(err, "t.ini:2: 'include' inside [s]");
    load_fails("include = a.ini\ninclude = b.ini\n[s]\n", EX_E_FORMAT, &err);
    HAS(err, "t.ini:2: 'include' is given twice (first at line 1)");
    load_fails("include =\n[s]\n", EX_E_FORMAT, &err);
    HAS(err, "t.ini:1: 'include' has an empty value");
}

static void test_syntax_errors(void **state) {
    (void)state;
    struct { const char *text; const char *msg; } cases[] = {
        {"[s]\nk = 1\n[abc\n", "t.ini:3: unterminated section header \"[abc\""},
        {"[s]\n[]\nk = 1\n", "t.ini:2: empty section name"},
        {"[s]\n[   ]\n", "t.ini:2: empty section name"},
        {"[s]\n=value\n", "t.ini:2: \"=value\": '=' without a key name"},
        {"[s]\n    = value\n", "t.ini:2: \"= value\": '=' without a key name"},
        {"[a b]\n", "t.ini:1: invalid section name \"a b\""},
        {"[.a]\n", "t.ini:1: invalid section name \".a\""},
        {"[a..b]\n", "t.ini:1: invalid section name \"a..b\""},
        {"[a:b]\n", "t.ini:1: invalid section name \"a:b\""},
        {"[a]x\n", "t.ini:1: unexpected text after the section header \"[a]x\""},
        {"[s]\nk y = 1\n", "t.ini:2: invalid key name \"k y\""},
        {"[s]\na.b = 1\n", "t.ini:2: invalid key name \"a.b\""},
        {"[s]\nurl = http://x/#frag\n", "t.ini:2: 'url' = \"http://x/#frag\": '#' inside a value starts a comment"},
        {"[s]\nk = 5;6\n", "t.ini:2: 'k' = \"5;6\": ';' inside a value"},
        {"[s]\nk = \"abc\n", "t.ini:2: 'k' = \"\"abc\": unterminated double quote"},
        {"[s]\nk = 'abc\n", "unterminated single quote"},
        {"[s]\nk = \"a\" b\n", "t.ini:2: 'k' = \"\"a\" b\": unexpected text after the closing quote"},
        {"[s]\nk = a \\\nj = 2\n", "t.ini:2: line ends with '\\'"},
        {"[s]\n# comment \\\nj = 2\n", "t.ini:2: line ends with '\\'"},
        {"[s]\nk = a\x01" "b\n", "t.ini:2: control character 0x01 in column 6"},
        {"[s]\nk = a\rb\n", "t.ini:2: control character 0x0d"},
        {"[s]\nk = a\x7f\n", "control character 0x7f"},
        {"[s]\n\x1b[31m\n", "t.ini:2: control character 0x1b"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ex_err err;
        load_fails(cases[i].text, EX_E_FORMAT, &err);
        HAS(err, cases[i].msg);
    }
}

static void test_comments_quotes_whitespace(void **state) {
    (void)state;
    ex_config *c = load_ok("; leading comment\n"
                           "# another\n"
                           "[peft.lora]   ; a comment after a header\n"
                           "  a = \"x;y#z\"   ; comment after quotes\n"
                           "b = 'say \"hi\"'\n"
                           "c = plain ; comment\n"
                           "d = two words # comment\n"
                           "e = k=v\n"
                           "f\t=\ttabbed\t\n"
                           "g = \"  padded  \"\n"
                           "h = caf\xc3\xa9\n"
                           "i = a\"b'c\n"
                           "j = \"it's\"# direct comment\n"
                           "   \t  \n");
    assert_string_equal(ex_config_raw(c, "peft.lora", "a"), "x;y#z");
    assert_string_equal(ex_config_raw(c, "peft.lora", "b"), "say \"hi\"");
    assert_string_equal(ex_config_raw(c, "peft.lora", "c"), "plain");
    assert_string_equal(ex_config_raw(c, "peft.lora", "d"), "two words");
    assert_string_equal(ex_config_raw(c, "peft.lora", "e"), "k=v");
    assert_string_equal(ex_config_raw(c, "peft.lora", "f"), "tabbed");
    assert_string_equal(ex_config_raw(c, "peft.lora", "g"), "  padded  ");
    assert_string_equal(ex_config_raw(c, "peft.lora", "h"), "caf\xc3\xa9");
    assert_string_equal(ex_config_raw(c, "peft.lora", "i"), "a\"b'c");
    assert_string_equal(ex_config_raw(c, "peft.lora", "j"), "it's");
    assert_string_equal(ex_config_origin(c, "peft.lora", "j"), "t.ini:13");
    assert_null(ex_config_raw(c, "peft.lora", "zz"));
    assert_null(ex_config_raw(c, "nope", "a"));
    assert_null(ex_config_origin(c, "peft.lora", "zz"));
    ex_config_free(c);
}

static void test_case_insensitive(void **state) {
    (void)state;
    ex_config *c = load_ok("[PEFT.Lora]\nRank = ABC\n");
    assert_true(ex_config_has_section(c, "peft.lora"));
    assert_true(ex_config_has_section(c, "PEFT.LORA"));
    assert_false(ex_config_has_section(c, "peft"));
    assert_string_equal(ex_config_section_name(c, 0), "peft.lora");
    assert_string_equal(ex_config_raw(c, "peft.lora", "rank"), "ABC"); /* values keep their case */
    assert_string_equal(ex_config_raw(c, "Peft.LORA", "RANK"), "ABC");
    ex_config_free(c);
}

static void test_crlf_bom_trailing(void **state) {
    (void)state;
    ex_config *c = load_ok("\xEF\xBB\xBF[s]\r\nk = v  \r\n; c\r\n# c\r\n  j =  w x \t\r\n\r\nq = \"a b\" \r\nlast = 1");
    assert_string_equal(ex_config_raw(c, "s", "k"), "v");
    assert_string_equal(ex_config_raw(c, "s", "j"), "w x");
    assert_string_equal(ex_config_raw(c, "s", "q"), "a b");
    assert_string_equal(ex_config_raw(c, "s", "last"), "1"); /* no final newline */
    assert_string_equal(ex_config_origin(c, "s", "j"), "t.ini:5");
    assert_string_equal(ex_config_origin(c, "s", "last"), "t.ini:8");
    ex_config_free(c);
    /* a single-character last line without newline is still seen (and rejected) */
    ex_err err;
    load_fails("[s]\nx", EX_E_FORMAT, &err);
    HAS(err, "t.ini:2: \"x\" has no '='");
    /* empty and comment-only texts are empty configs */
    c = load_ok("");
    assert_int_equal(ex_config_section_count(c), 0);
    ex_config_free(c);
    c = load_ok("\xEF\xBB\xBF# nothing\n\n");
    assert_int_equal(ex_config_section_count(c), 0);
    ex_config_free(c);
}

/* ---- hostile input ---------------------------------------------------------------------------------- */

static void test_long_lines(void **state) {
    (void)state;
    ex_err err;
    size_t big = 1u << 20;
    char *text = malloc(big + 64);
    assert_non_null(text);
    /* exactly the limit: accepted, value intact (iniparser's own limit is 1022) */
    int n = sprintf(text, "[s]\nk = ");
    memset(text + n, 'v', 1000 - 4);
    strcpy(text + n + 996, "\nz = 1\n");
    ex_config *c = load_ok(text);
    assert_int_equal(strlen(ex_config_raw(c, "s", "k")), 996);
    assert_string_equal(ex_config_raw(c, "s", "z"), "1");
    ex_config_free(c);
    /* one over, iniparser's limit, and a 1 MB line */
    size_t lens[] = {1001, 1023, 1024, 1025, big};
    for (int i = 0; i < 5; i++) {
        n = sprintf(text, "[s]\na = 1\nk = ");
        memset(text + n, 'v', lens[i] - 4);
        strcpy(text + n + lens[i] - 4, "\nz = 1\n");
        load_fails(text, EX_E_FORMAT, &err);
        char want[128];
        snprintf(want, sizeof want, "t.ini:3: line is %zu bytes long; lines are limited to 1000 bytes", lens[i]);
        HAS(err, want);
    }
    /* a long comment line is rejected too: iniparser would split it */
    n = sprintf(text, "[s]\n#");
    memset(text + n, 'c', 1500);
    strcpy(text + n + 1500, "\n");
    load_fails(text, EX_E_FORMAT, &err);
    HAS(err, "t.ini:2: line is 1501 bytes long");
    free(text);
}

static void test_binary_and_nul(void **state) {
    (void)state;
    char path[1024];
    ex_err err;
    /* a NUL byte in an otherwise fine file */
    ext_tmp_path(path, sizeof path, "nul.ini");
    static const char nul[] = "[s]\na = 1\nb = x\0y\n";
    ext_write_file(path, nul, sizeof nul - 1);
    load_file_fails(path, EX_E_FORMAT, &err);
    HAS(err, path);
    HAS(err, ":3: NUL byte in column 6");
    /* a NUL at the very start */
    ext_write_file(path, "\0[s]\n", 5);
    load_file_fails(path, EX_E_FORMAT, &err);
    HAS(err, ":1: NUL byte in column 1");
    /* deterministic garbage: several seeds, all rejected cleanly */
    unsigned char junk[8192];
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int seed = 0; seed < 8; seed++) {
        for (size_t i = 0; i < sizeof junk; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            junk[i] = (unsigned char)(x >> 24);
        }
        ext_write_file(path, junk, sizeof junk);
        load_file_fails(path, EX_E_FORMAT, &err);
        HAS(err, path);
    }
    /* printable garbage without control bytes: still a syntax error, never a crash */
    ext_write_file(path, "\xff\xfe\xfd\x80[[[]]]===\n", 14);
    load_file_fails(path, EX_E_FORMAT, &err);
    HAS(err, ":1:");
    unlink(path);
}

static void test_too_many_keys(void **state) {
    (void)state;
    size_t cap = 5000 * 16 + 16;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t len = (size_t)sprintf(text, "[s]\n");
    for (int i = 0; i < 5000; i++) len += (size_t)sprintf(text + len, "k%d = %d\n", i, i);
    ex_err err;
    load_fails(text, EX_E_FORMAT, &err);
    HAS(err, "t.ini:4098: more than 4096 keys");
    len = 0;
    for (int i = 0; i < 5000; i++) len += (size_t)sprintf(text + len, "[s%d]\n", i);
    load_fails(text, EX_E_FORMAT, &err);
    HAS(err, "t.ini:4097: more than 4096 sections");
    free(text);
}

/* ---- files, includes ------------------------------------------------------------------------------------ */

static void test_missing_file(void **state) {
    (void)state;
    ex_err err;
    load_file_fails("/nonexistent-dir/run.ini", EX_E_IO, &err);
    HAS(err, "cannot open config '/nonexistent-dir/run.ini': No such file or directory.");
    HAS(err, "Hint:");
    char dir[1024];
    make_dir(dir, sizeof dir, "adir");
    load_file_fails(dir, EX_E_IO, &err);
    HAS(err, "it is a directory");
    load_file_fails("", EX_E_IO, &err);
}

static void test_includes(void **state) {
    (void)state;
    char dir[1024], run[1100], base[1100];
    make_dir(dir, sizeof dir, "inc");
    path_in(base, sizeof base, dir, "base.ini");
    path_in(run, sizeof run, dir, "run.ini");
    write_text(base, "[s]\na = 1\nb = 2\n[t]\nx = base\n");
    write_text(run, "# run\ninclude = base.ini\n[u]\ny = 1\n[s]\nb = 20\nc = 30\n");
    ex_config *c = NULL;
    ex_err err;
    EXT_OK(ex_config_load(&c, run, &err), &err);
    /* the including file wins; the rest comes from the base */
    assert_string_equal(ex_config_raw(c, "s", "a"), "1");
    assert_string_equal(ex_config_raw(c, "s", "b"), "20");
    assert_string_equal(ex_config_raw(c, "s", "c"), "30");
    assert_string_equal(ex_config_raw(c, "t", "x"), "base");
    char want[1200];
    snprintf(want, sizeof want, "%s:2", base);
    assert_string_equal(ex_config_origin(c, "s", "a"), want);
    snprintf(want, sizeof want, "%s:6", run);
    assert_string_equal(ex_config_origin(c, "s", "b"), want);
    /* sections in order of first appearance, the base's first */
    assert_int_equal(ex_config_section_count(c), 3);
    assert_string_equal(ex_config_section_name(c, 0), "s");
    assert_string_equal(ex_config_section_name(c, 1), "t");
    assert_string_equal(ex_config_section_name(c, 2), "u");
    /* an error in an included value names the included file */
    const ex_key_spec tk[] = {{"x", EX_KEY_INT, NULL, EX_NORANGE, NULL, ""}, EX_KEY_END};
    ex_cfg_section ts = {c, "t", tk};
    int64_t v;
    assert_int_equal(ex_cfg_int(&ts, "x", &v, &err), EX_E_CONFIG);
    snprintf(want, sizeof want, "%s:5: [t] x = \"base\" is not an integer", base);
    HAS(err, want);
    /* an override beats both files */
    EXT_OK(ex_config_set(c, "t.x=7", &err), &err);
    EXT_OK(ex_cfg_int(&ts, "x", &v, &err), &err);
    assert_int_equal(v, 7);
    assert_string_equal(ex_config_origin(c, "t", "x"), "--set");
    ex_config_free(c);
}

static void test_includes_nested_relative(void **state) {
    (void)state;
    char dir[1024], sub[1100], basedir[1100], run[1200], mid[1200], base[1200];
    make_dir(dir, sizeof dir, "nest");
    path_in(sub, sizeof sub, dir, "sub");
    path_in(basedir, sizeof basedir, dir, "common");
    mkdir(sub, 0755);
    mkdir(basedir, 0755);
    path_in(run, sizeof run, dir, "run.ini");
    path_in(mid, sizeof mid, sub, "mid.ini");
    path_in(base, sizeof base, basedir, "base.ini");
    write_text(base, "[peft.lora]\nrank = 4\ninit_from = w/base.bin\nalpha = 1\n");
    write_text(mid, "include = ../common/base.ini  ; relative to sub/\n[peft.lora]\nrank = 8\n");
    write_text(run, "include = sub/mid.ini\n[peft.lora]\nalpha = 3\n");
    ex_config *c = NULL;
    ex_err err;
    EXT_OK(ex_config_load(&c, run, &err), &err);
    ex_cfg_section s = {c, "peft.lora", lora_keys};
    int64_t rank;
    double alpha;
    EXT_OK(ex_cfg_int(&s, "rank", &rank, &err), &err);
    EXT_OK(ex_cfg_float(&s, "alpha", &alpha, &err), &err);
    assert_int_equal(rank, 8);
    assert_true(alpha == 3.0);
    char out[2048], want[8192];
    EXT_OK(ex_cfg_path(&s, "init_from", out, sizeof out, &err), &err);
    snprintf(want, sizeof want, "%s/sub/../common/w/base.bin", dir); /* the base file's directory */
    assert_string_equal(out, want);
    snprintf(want, sizeof want, "%s/sub/mid.ini:3", dir);
    assert_string_equal(ex_config_origin(c, "peft.lora", "rank"), want);
    ex_config_free(c);

    /* a syntax error deep down names the file, the line and the chain */
    write_text(base, "[peft.lora]\nrank\n");
    load_file_fails(run, EX_E_FORMAT, &err);
    snprintf(want, sizeof want, "%s/sub/../common/base.ini:2: \"rank\" has no '='", dir);
    HAS(err, want);
    snprintf(want, sizeof want, "include chain: %s:1 -> %s/sub/mid.ini:1 -> %s/sub/../common/base.ini)", run, dir, dir);
    HAS(err, want);
}

static void test_include_cycle(void **state) {
    (void)state;
    char dir[1024], a[1100], b[1100], self[1100], want[8192];
    make_dir(dir, sizeof dir, "cycle");
    path_in(a, sizeof a, dir, "a.ini");
    path_in(b, sizeof b, dir, "b.ini");
    path_in(self, sizeof self, dir, "self.ini");
    write_text(a, "include = b.ini\n[s]\nx = 1\n");
    write_text(b, "; b\ninclude = ./a.ini\n[s]\ny = 1\n");
    write_text(self, "include = self.ini\n");
    ex_err err;
    load_file_fails(a, EX_E_CONFIG, &err);
    snprintf(want, sizeof want, "%s/b.ini:2: include cycle: %s:1 -> %s/b.ini:2 -> %s/./a.ini.", dir, a, dir, dir);
    HAS(err, want);
    load_file_fails(self, EX_E_CONFIG, &err);
    snprintf(want, sizeof want, "include cycle: %s:1 -> %s/self.ini.", self, dir);
    HAS(err, want);
}

static void test_include_depth(void **state) {
    (void)state;
    char dir[1024], p[1100], want[8192];
    make_dir(dir, sizeof dir, "depth");
    /* f0 -> f1 -> ... -> f8: eight include levels are fine */
    for (int i = 0; i <= 9; i++) {
        char name[32], text[128];
        snprintf(name, sizeof name, "f%d.ini", i);
        path_in(p, sizeof p, dir, name);
        if (i < 8)
            snprintf(text, sizeof text, "include = f%d.ini\n[s]\nk%d = %d\n", i + 1, i, i);
        else
            snprintf(text, sizeof text, "[s]\nk%d = %d\n", i, i);
        write_text(p, text);
    }
    path_in(p, sizeof p, dir, "f0.ini");
    ex_config *c = NULL;
    ex_err err;
    EXT_OK(ex_config_load(&c, p, &err), &err);
    assert_string_equal(ex_config_raw(c, "s", "k8"), "8");
    assert_string_equal(ex_config_raw(c, "s", "k0"), "0");
    ex_config_free(c);
    /* one more level is too deep */
    char f8[1100];
    path_in(f8, sizeof f8, dir, "f8.ini");
    write_text(f8, "include = f9.ini\n[s]\nk8 = 8\n");
    load_file_fails(p, EX_E_CONFIG, &err);
    snprintf(want, sizeof want, "%s/f8.ini:1: includes nest deeper than 8 levels: %s/f0.ini:1 -> ", dir, dir);
    HAS(err, want);
    snprintf(want, sizeof want, "%s/f8.ini:1 -> %s/f9.ini.", dir, dir);
    HAS(err, want);
}

static void test_include_missing(void **state) {
    (void)state;
    char dir[1024], run[1100], mid[1100], want[8192];
    make_dir(dir, sizeof dir, "missing");
    path_in(run, sizeof run, dir, "run.ini");
    path_in(mid, sizeof mid, dir, "mid.ini");
    write_text(run, "include = mid.ini\n[s]\nx = 1\n");
    write_text(mid, "\ninclude = nope.ini\n[s]\ny = 1\n");
    ex_err err;
    load_file_fails(run, EX_E_IO, &err);
    snprintf(want, sizeof want, "%s:2: cannot open included file '%s/nope.ini': No such file or directory.", mid, dir);
    HAS(err, want);
    snprintf(want, sizeof want, "Include chain: %s:1 -> %s:2 -> %s/nope.ini.", run, mid, dir);
    HAS(err, want);
    HAS(err, "Hint: include paths are relative");
}

/* ---- overrides ------------------------------------------------------------------------------------------- */

static void test_overrides(void **state) {
    (void)state;
    ex_config *c = load_ok("[peft.lora]\nrank = 8\n");
    ex_err err;
    EXT_OK(ex_config_set(c, "peft.lora.rank=64", &err), &err);
    assert_string_equal(ex_config_raw(c, "peft.lora", "rank"), "64");
    assert_string_equal(ex_config_origin(c, "peft.lora", "rank"), "--set");
    EXT_OK(ex_config_set(c, "  Run.Name =  my run \t", &err), &err);
    assert_string_equal(ex_config_raw(c, "run", "name"), "my run"); /* blanks trimmed, case kept */
    EXT_OK(ex_config_set(c, "data.filter=a=b;c#d", &err), &err); /* '=' after the first is the value's */
    assert_string_equal(ex_config_raw(c, "data", "filter"), "a=b;c#d");
    assert_int_equal(ex_config_section_count(c), 3);
    assert_string_equal(ex_config_section_name(c, 1), "run");
    /* the override is checked against the schema later, and named as such */
    EXT_OK(ex_config_set(c, "peft.lora.rnk=4", &err), &err);
    assert_int_equal(ex_config_validate_section(c, "peft.lora", lora_keys, NULL, &err), EX_E_CONFIG);
    HAS(err, "--set: [peft.lora] unknown key 'rnk' (= \"4\"). Did you mean 'rank'?");
    EXT_OK(ex_config_set(c, "peft.lora.rnk=x", &err), &err); /* a second --set replaces the first */
    assert_string_equal(ex_config_raw(c, "peft.lora", "rnk"), "x");
    EXT_OK(ex_config_set(c, "peft.lora.rank=0", &err), &err);
    ex_cfg_section s = {c, "peft.lora", lora_keys};
    int64_t v;
    assert_int_equal(ex_cfg_int(&s, "rank", &v, &err), EX_E_CONFIG);
    HAS(err, "--set: [peft.lora] rank = \"0\" is out of range. Expected an integer in [1, 1024].");

    struct { const char *a; const char *msg; } bad[] = {
        {"rank=4", "--set 'rank=4' names no section."},
        {"a.=1", "'' is not a valid key name"},
        {".k=1", "'' is not a valid section name"},
        {"a.b", "--set 'a.b' has no '='."},
        {"a.b=", "--set 'a.b=' has an empty value."},
        {"a.b=   ", "has an empty value"},
        {"a..b.c=1", "'a..b' is not a valid section name"},
        {"a.b c=1", "'b c' is not a valid key name"},
        {"=1", "names no section"},
        {"a.b=x\ny", "contains a control character"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ex_err_clear(&err);
        assert_int_equal(ex_config_set(c, bad[i].a, &err), EX_E_CONFIG);
        HAS(err, bad[i].msg);
        HAS(err, "Expected section.key=value, e.g. --set peft.lora.rank=64");
    }
    assert_null(ex_config_raw(c, "a", "b"));
    assert_int_equal(ex_config_set(c, "a.include=x", &err), EX_E_CONFIG);
    HAS(err, "--set 'a.include=x': 'include' can only be given in a file, before its first section.");
    /* too long to ever be written back as one INI line */
    char longset[1200];
    memset(longset, 'x', sizeof longset - 1);
    longset[sizeof longset - 1] = '\0';
    memcpy(longset, "a.b=", 4);
    assert_int_equal(ex_config_set(c, longset, &err), EX_E_CONFIG);
    HAS(err, "too long");
    ex_config_free(c);
}

/* ---- writing ---------------------------------------------------------------------------------------------- */

/* Written lines without the "  ; origin" comments. */
static char *written_body(const ex_config *c) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    ex_err err;
    EXT_OK(ex_config_write(c, f, &err), &err);
    fclose(f);
    char *out = calloc(len + 1, 1), *o = out;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char *cm = strstr(line, "  ; ");
        size_t n = cm ? (size_t)(cm - line) : strlen(line);
        memcpy(o, line, n);
        o += n;
        *o++ = '\n';
    }
    free(buf);
    return out;
}

static void test_write_roundtrip(void **state) {
    (void)state;
    char dir[1024], base[1100], run[1100], out[1100];
    make_dir(dir, sizeof dir, "write");
    path_in(base, sizeof base, dir, "base.ini");
    path_in(run, sizeof run, dir, "run.ini");
    path_in(out, sizeof out, dir, "effective.ini");
    write_text(base, "[data]\nmean = 0.485, 0.456, 0.406\nroot = /data/fmow\n[Empty]\n");
    write_text(run, "include = base.ini\n[peft.lora]\nrank = 16\nnote = \"a;b # c\"\nquote = 'say \"hi\"'\n"
                    "pad = \" x \"\nmixed = a\"b'c\n[data]\nroot = /data/other\n");
    ex_config *c = NULL;
    ex_err err;
    EXT_OK(ex_config_load(&c, run, &err), &err);
    EXT_OK(ex_config_set(c, "peft.lora.rank=64", &err), &err);
    EXT_OK(ex_config_set(c, "run.dir=C:\\runs\\", &err), &err); /* ends in a backslash */
    EXT_OK(ex_config_set(c, "run.q=\"quoted\"", &err), &err);   /* starts with a quote */
    EXT_OK(ex_config_set(c, "run.hash=#1", &err), &err);

    FILE *f = fopen(out, "w");
    assert_non_null(f);
    EXT_OK(ex_config_write(c, f, &err), &err);
    fclose(f);
    ex_config *r = NULL;
    EXT_OK(ex_config_load(&r, out, &err), &err);

    /* same sections in the same order, same keys and values */
    assert_int_equal(ex_config_section_count(r), ex_config_section_count(c));
    for (int i = 0; i < ex_config_section_count(c); i++)
        assert_string_equal(ex_config_section_name(r, i), ex_config_section_name(c, i));
    const char *keys[][2] = {{"data", "mean"},      {"data", "root"},      {"peft.lora", "rank"},
                             {"peft.lora", "note"}, {"peft.lora", "quote"}, {"peft.lora", "pad"},
                             {"peft.lora", "mixed"}, {"run", "dir"},       {"run", "q"}, {"run", "hash"}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *a = ex_config_raw(c, keys[i][0], keys[i][1]), *b = ex_config_raw(r, keys[i][0], keys[i][1]);
        assert_non_null(a);
        assert_non_null(b);
        assert_string_equal(a, b);
    }
    assert_string_equal(ex_config_raw(r, "peft.lora", "rank"), "64");
    assert_string_equal(ex_config_raw(r, "run", "dir"), "C:\\runs\\");
    assert_string_equal(ex_config_raw(r, "peft.lora", "pad"), " x ");
    assert_true(ex_config_has_section(r, "empty"));
    /* nothing else: the written bodies are identical */
    char *wa = written_body(c), *wb = written_body(r);
    assert_string_equal(wa, wb);
    assert_non_null(strstr(wa, "[peft.lora]\nrank = 64\nnote = \"a;b # c\"\n"));
    free(wa);
    free(wb);
    /* origins are kept as comments */
    char *buf = NULL;
    size_t len = 0;
    f = open_memstream(&buf, &len);
    EXT_OK(ex_config_write(c, f, &err), &err);
    fclose(f);
    assert_non_null(strstr(buf, "rank = 64  ; --set\n"));
    char want[1200];
    snprintf(want, sizeof want, "mean = 0.485, 0.456, 0.406  ; %s:2\n", base);
    assert_non_null(strstr(buf, want));
    free(buf);
    ex_config_free(r);

    /* a value that INI cannot hold */
    EXT_OK(ex_config_set(c, "run.bad=a;\"'", &err), &err);
    f = fopen(out, "w");
    assert_int_equal(ex_config_write(c, f, &err), EX_E_CONFIG);
    fclose(f);
    HAS(err, "--set: [run] bad");
    HAS(err, "cannot be written as INI");
    ex_config_free(c);

    /* an empty config writes and reads back as empty */
    EXT_OK(ex_config_new(&c, &err), &err);
    f = fopen(out, "w");
    EXT_OK(ex_config_write(c, f, &err), &err);
    fclose(f);
    EXT_OK(ex_config_load(&r, out, &err), &err);
    assert_int_equal(ex_config_section_count(r), 0);
    ex_config_free(r);
    ex_config_free(c);
}

/* ---- loading from memory ------------------------------------------------------------------------------------ */

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

static void test_load_string(void **state) {
    (void)state;
    char dir[1024], base[1100], name[1100];
    make_dir(dir, sizeof dir, "mem");
    path_in(base, sizeof base, dir, "base.ini");
    path_in(name, sizeof name, dir, "virtual.ini"); /* never created */
    write_text(base, "[s]\na = 1\nb = 2\n");
    int fds = count_fds();
    for (int i = 0; i < 20; i++) {
        ex_config *c = NULL;
        ex_err err;
        EXT_OK(ex_config_load_string(&c, "include = base.ini\n[s]\nb = 3\n", name, &err), &err);
        assert_string_equal(ex_config_raw(c, "s", "a"), "1");
        assert_string_equal(ex_config_raw(c, "s", "b"), "3");
        char want[1200];
        snprintf(want, sizeof want, "%s:3", name);
        assert_string_equal(ex_config_origin(c, "s", "b"), want);
        ex_config_free(c);
    }
    assert_int_equal(count_fds(), fds); /* no descriptor left open */
    /* the memory text may not include itself by name: it is not a file */
    ex_config *c = NULL;
    ex_err err;
    assert_int_equal(ex_config_load_string(&c, "include = virtual.ini\n", name, &err), EX_E_IO);
    HAS(err, "virtual.ini");
    /* no name: messages say <string> */
    assert_int_equal(ex_config_load_string(&c, "[s]\nx\n", NULL, &err), EX_E_FORMAT);
    HAS(err, "<string>:2:");
    /* NULL arguments */
    assert_int_equal(ex_config_load_string(&c, NULL, "x", &err), EX_E_INVALID);
    assert_int_equal(ex_config_load(NULL, "x", &err), EX_E_INVALID);
    assert_int_equal(ex_config_set(NULL, "a.b=1", &err), EX_E_INVALID);
    /* NULL configs are empty for the read-only accessors */
    assert_int_equal(ex_config_section_count(NULL), 0);
    assert_false(ex_config_has_section(NULL, "s"));
    assert_null(ex_config_raw(NULL, "s", "a"));
    ex_config_free(NULL);
}

/* ---- printing ----------------------------------------------------------------------------------------------- */

static void test_specs_print(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ex_key_specs_print(lora_keys, f);
    fclose(f);
    /* header + one row per key, the type column aligned */
    int rows = 0;
    long type_col = -1;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"), rows++) {
        const char *word = rows == 0 ? "type" : NULL;
        if (rows > 0) word = ex_key_type_name(lora_keys[rows - 1].type);
        char *at = strstr(line, word);
        assert_non_null(at);
        if (type_col < 0) type_col = at - line;
        assert_int_equal(at - line, type_col);
        if (rows == 1) {
            assert_non_null(strstr(line, "rank"));
            assert_non_null(strstr(line, "required"));
            assert_non_null(strstr(line, "[1, 1024]"));
            assert_non_null(strstr(line, "adapter rank"));
        }
        if (rows == 5) assert_non_null(strstr(line, "kaiming|zeros|gaussian"));
        if (rows == 7) assert_non_null(strstr(line, "\"\"")); /* an empty default is shown */
    }
    assert_int_equal(rows, 11);
    free(buf);
    f = open_memstream(&buf, &len);
    ex_key_specs_print(NULL, f);
    fclose(f);
    assert_string_equal(buf, "  (no keys)\n");
    free(buf);
    assert_string_equal(ex_key_type_name(EX_KEY_INT), "int");
    assert_string_equal(ex_key_type_name(EX_KEY_FLOAT_LIST), "float-list");
    assert_string_equal(ex_key_type_name(EX_KEY_PATH), "path");
    assert_string_equal(ex_key_type_name((ex_key_type)99), "unknown");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int_values),
        cmocka_unit_test(test_message_format),
        cmocka_unit_test(test_float_values),
        cmocka_unit_test(test_bool_values),
        cmocka_unit_test(test_enum_values),
        cmocka_unit_test(test_int_lists),
        cmocka_unit_test(test_float_and_string_lists),
        cmocka_unit_test(test_strings_and_paths),
        cmocka_unit_test(test_defaults_and_required),
        cmocka_unit_test(test_validate_section),
        cmocka_unit_test(test_check_sections),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_valueless_keys),
        cmocka_unit_test(test_key_before_section),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_comments_quotes_whitespace),
        cmocka_unit_test(test_case_insensitive),
        cmocka_unit_test(test_crlf_bom_trailing),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_binary_and_nul),
        cmocka_unit_test(test_too_many_keys),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_includes),
        cmocka_unit_test(test_includes_nested_relative),
        cmocka_unit_test(test_include_cycle),
        cmocka_unit_test(test_include_depth),
        cmocka_unit_test(test_include_missing),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_write_roundtrip),
        cmocka_unit_test(test_load_string),
        cmocka_unit_test(test_specs_print),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
