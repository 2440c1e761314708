/*
 * tests/test_export.c — `explora export` against PyTorch
 * (tests/fixtures/make_export_fixtures.py): LoRA adapters on q and v of a tiny
 * DINOv2 ViT are merged by explora and written in the official names; the file
 * must hold exactly the tensor names of the reference model's strict state
 * dict, the values torch's own merge gives, and reproduce the reference
 * model's outputs on a fixed batch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "explora/model.h"
#include "explora/safetensors.h"
#include "explora/session.h"
#include "test_support.h"

#define TINY "[backbone]\nname = vit\ndim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\nlayerscale = on\nimage_size = 16\n"

static ex_st_file *fixture(const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/../fixtures/%s", ext_env("EXPLORA_TEST_DATA_DIR"), name);
    ex_st_file *f;
    ex_err err;
    EXT_OK(ex_st_open(&f, path, &err), &err);
    return f;
}

/* Copy the tensors of `f` whose names start with `prefix` (prefix removed, `add` prepended), or that appear in
 * `only` (comma list, NULL: all), into a new safetensors file. */
static void write_subset(const ex_st_file *f, const char *prefix, const char *add, const char *only, const char *path) {
    ex_err err;
    ex_st_writer *w;
    EXT_OK(ex_st_writer_new(&w, &err), &err);
    for (int i = 0; i < ex_st_count(f); i++) {
        const ex_st_entry *e = ex_st_at(f, i);
        if (strncmp(e->name, prefix, strlen(prefix)) != 0) continue;
        const char *rest = e->name + strlen(prefix);
        if (only) {
            char key[EX_NAME_MAX + 2];
            snprintf(key, sizeof key, ",%s,", rest);
            if (!strstr(only, key)) continue;
        }
        char name[EX_NAME_MAX];
        snprintf(name, sizeof name, "%s%s", add, rest);
        EXT_OK(ex_st_writer_add(w, name, e->dtype, e->ndim, e->shape, ex_st_data(f, e), &err), &err);
    }
    EXT_OK(ex_st_writer_finish(w, path, &err), &err);
    ex_st_writer_free(w);
}

static float *read_all(const ex_st_file *f, const char *name, int64_t *n) {
    const ex_st_entry *e = ex_st_find(f, name);
    if (!e) fail_msg("%s lacks %s", ex_st_path(f), name);
    *n = 1;
    for (int d = 0; d < e->ndim; d++) *n *= e->shape[d];
    float *x = malloc(sizeof(float) * (size_t)*n);
    ex_err err;
    EXT_OK(ex_st_read_f32(f, e, x, *n, &err), &err);
    return x;
}

static void test_export_matches_pytorch_merge(void **state) {
    (void)state;
    ex_st_file *fx = fixture("export_lora.safetensors"), *base = fixture("vit_dinov2.safetensors");
    const char *names = ex_st_metadata(fx, "names");
    assert_non_null(names);
    char only[8192];
    snprintf(only, sizeof only, ",%s,", names);
    char base_path[4096], ckpt[4096], ini[4096], out[4096], text[8192], cmd[16384];
    ext_tmp_path(base_path, sizeof base_path, "base.safetensors");
    ext_tmp_path(ckpt, sizeof ckpt, "trained.safetensors");
    ext_tmp_path(out, sizeof out, "export.safetensors");
    write_subset(base, "", "", only, base_path);      /* the base weights only */
    write_subset(fx, "ckpt.", "", NULL, ckpt);         /* the "trained" adapters: param.* */
    snprintf(text, sizeof text, TINY "weights = %s\n[peft]\nstack = lora\n[peft.lora]\nrank = 2\nalpha = 2\ntargets = q, v\n",
             base_path);
    ext_tmp_path(ini, sizeof ini, "export.ini");
    ext_write_file(ini, text, strlen(text));
    snprintf(cmd, sizeof cmd, "'%s' export '%s' --checkpoint '%s' --out '%s' --format dinov2 > /dev/null", ext_env("EXPLORA_BIN"),
             ini, ckpt, out);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);

    /* exactly the names of the reference model's strict state dict, with torch's merged values */
    ex_err err;
    ex_st_file *ex;
    EXT_OK(ex_st_open(&ex, out, &err), &err);
    int expected_count = 1;
    for (const char *p = names; *p; p++) expected_count += *p == ',';
    assert_int_equal(ex_st_count(ex), expected_count);
    for (int i = 0; i < ex_st_count(ex); i++) {
        const ex_st_entry *e = ex_st_at(ex, i);
        char key[EX_NAME_MAX + 2], ref_name[EX_NAME_MAX + 16];
        snprintf(key, sizeof key, ",%s,", e->name);
        if (!strstr(only, key)) fail_msg("export holds '%s', which the reference model does not have", e->name);
        snprintf(ref_name, sizeof ref_name, "expected.%s", e->name);
        int64_t n, m;
        float *got = read_all(ex, e->name, &n), *want = read_all(fx, ref_name, &m);
        assert_int_equal(n, m);
        ext_assert_close(got, want, (size_t)n, 1e-6, 1e-5, e->name);
        free(got);
        free(want);
    }
    ex_st_close(ex);

    /* the export as a plain ViT reproduces the reference model's outputs */
    ex_session s;
    ex_session_options opt;
    memset(&opt, 0, sizeof opt);
    snprintf(text, sizeof text, TINY "weights = %s\nformat = dinov2\n", out);
    ext_tmp_path(ini, sizeof ini, "plain.ini");
    ext_write_file(ini, text, strlen(text));
    opt.config_path = ini;
    opt.plugin_dirs[0] = ext_env("EXPLORA_TEST_PLUGIN_DIR");
    opt.ndirs = 1;
    EXT_OK(ex_session_open(&s, &opt, &err), &err);
    ex_backend be;
    EXT_OK(ex_session_backend(&s, &be, &err), &err);
    ex_model mdl;
    ex_backbone_shape shape = {2, 16, 16, 0, 0, 0, 0, EX_F32};
    EXT_OK(ex_model_build(&mdl, &s, &be, &shape, &err), &err);
    EXT_OK(ex_model_allocate(&mdl, &err), &err);
    EXT_OK(ex_model_load(&mdl, NULL, &err), &err);
    int64_t n;
    float *img = read_all(fx, "input", &n);
    ex_backbone_io io;
    memset(&io, 0, sizeof io);
    io.batch = 2, io.height = 16, io.width = 16, io.images = img;
    EXT_OK(mdl.vt->forward(mdl.self, &io, &err), &err);
    int64_t nc, np;
    float *cls = read_all(fx, "expected.out.cls", &nc), *patch = read_all(fx, "expected.out.patch", &np);
    float got_cls[48], got_patch[2 * 16 * 24];
    for (int b = 0; b < 2; b++) {
        memcpy(got_cls + b * 24, io.tokens + b * 17 * 24, sizeof(float) * 24);
        memcpy(got_patch + b * 16 * 24, io.tokens + (b * 17 + 1) * 24, sizeof(float) * 16 * 24);
    }
    ext_assert_close(got_cls, cls, 48, 1e-4, 0, "cls");
    ext_assert_close(got_patch, patch, 2 * 16 * 24, 1e-4, 0, "patch");
    free(cls);
    free(patch);
    free(img);
    ex_model_free(&mdl);
    ex_backend_destroy(&be);
    ex_session_close(&s);
    ex_st_close(fx);
    ex_st_close(base);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_export_matches_pytorch_merge)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
