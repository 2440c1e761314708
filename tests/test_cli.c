/*
 * tests/test_cli.c — the explora command as a user runs it: exit codes, what
 * `plugins`, `plugins --keys`, `check`, `data`, `slim` and `bench data` print, and that config
 * errors name the file, line, key and value.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/wait.h>

#include "explora/plugin.h"
#include "explora/safetensors.h"

#include "test_support.h"

/* Run `explora ARGS` (through the shell) with EXPLORA_PLUGIN_PATH set to the
 * test plugin folders; capture stdout+stderr; return the exit code. */
static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(char **out, const char *fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "EXPLORA_PLUGIN_PATH='%s' '%s' %s 2>&1", ext_env("EXPLORA_TEST_ABI_DIR"),
             ext_env("EXPLORA_BIN"), args);
    FILE *p = popen(cmd, "r");
    if (!p) fail_msg("popen failed");
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - 1 - len, p)) > 0) {
        len += got;
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect_contains(const char *out, const char *needle) {
    if (!strstr(out, needle)) fail_msg("output lacks '%s':\n%s", needle, out);
}

static void write_ini(char *path, size_t cap, const char *name, const char *text) {
    ext_tmp_path(path, cap, name);
    ext_write_file(path, text, strlen(text));
}

static void test_plugins_lists_found_and_rejected(void **state) {
    (void)state;
    char *out;
    assert_int_equal(run(&out, "plugins"), 0);
    expect_contains(out, "backend    cpu");
    expect_contains(out, "dataset    abi-good");
    expect_contains(out, "1.2.3");
    expect_contains(out, "rejected (5)");
    char major[64];
    snprintf(major, sizeof major, "major version %d", EX_ABI_MAJOR + 1); /* abi-newer declares the next major */
    expect_contains(out, major);
    expect_contains(out, "undefined symbol: explora_test_symbol_that_does_not_exist");
    free(out);
}

static void test_plugins_keys(void **state) {
    (void)state;
    char *out;
    assert_int_equal(run(&out, "plugins --keys cpu"), 0);
    expect_contains(out, "threads");
    expect_contains(out, "int");
    free(out);
    assert_int_equal(run(&out, "plugins --keys abi-good"), 0);
    expect_contains(out, "count");
    expect_contains(out, "channels");
    expect_contains(out, "number of samples");
    free(out);
    assert_int_equal(run(&out, "plugins --keys core"), 0);
    expect_contains(out, "[run]");
    expect_contains(out, "seed");
    free(out);
    assert_int_equal(run(&out, "plugins --keys no-such-plugin"), 1);
    expect_contains(out, "no plugin named 'no-such-plugin'");
    free(out);
}

static void test_check_good_config(void **state) {
    (void)state;
    char path[4096], *out;
    write_ini(path, sizeof path, "good.ini",
              "[run]\nseed = 3\n[backend]\nname = cpu\nthreads = 1\n[data]\nname = abi-good\ncount = 4\n");
    assert_int_equal(run(&out, "check '%s'", path), 0);
    expect_contains(out, "backend cpu");
    expect_contains(out, "several processes (mpirun) would sum gradients through host memory by MPI");
    expect_contains(out, "is valid");
    expect_contains(out, "count = 4");
    free(out);
    /* --set overrides reach the effective config */
    assert_int_equal(run(&out, "check '%s' --set data.count=9", path), 0);
    expect_contains(out, "count = 9");
    free(out);
}

/* check plans frozen weights as pretrain keeps them: [optim] frozen_dtype = bf16 halves the frozen linear
 * weights (a LoRA model: every block's qkv, proj, fc1, fc2 and the patch embedding, 9 tensors here). */
static void test_check_frozen_bf16(void **state) {
    (void)state;
    char path[4096], *out;
    write_ini(path, sizeof path, "frozen.ini",
              "[run]\nseed = 3\n[backend]\nname = cpu\nthreads = 1\n"
              "[backbone]\nname = vit\npatch = 4\ndim = 16\ndepth = 2\nheads = 2\nchannels = 1\npos_grid = 4\n"
              "image_size = 16\n[peft]\nstack = lora\n[peft.lora]\nrank = 2\ntargets = q, v\n"
              "[optim]\nbatch = 2\nfrozen_dtype = bf16\n");
    assert_int_equal(run(&out, "check '%s'", path), 0);
    /* 2 x (3*16*16 + 16*16 + 64*16 + 16*64) + 16*16 = 6912 weights, 13824 bytes saved */
    expect_contains(out, "frozen weights: 9 tensors kept in bf16 ([optim] frozen_dtype), 0.0 MiB saved");
    free(out);
    assert_int_equal(run(&out, "check '%s' --set optim.frozen_dtype=fp32", path), 0);
    if (strstr(out, "frozen weights:")) fail_msg("fp32 frozen weights reported as narrow:\n%s", out);
    const char *act = strstr(out, "  activation ");
    long long tensors = 0, e32 = 0, e16 = 0;
    assert_true(act && sscanf(act, "  activation %lld %lld", &tensors, &e32) == 2);
    free(out);
    /* [optim] activation_dtype = bf16: said, and each block's ln1, att, ln2 (34 rows x 16), qkv (34 x 48) and GELU
     * output (34 x 64) take half the floats: 2 blocks x (3 x 544 + 1632 + 2176) / 2 = 5440 planned elements fewer
     * (qkv's fp32 staging lies in fc1's space, 64 >= 48 columns, and costs nothing) */
    assert_int_equal(run(&out, "check '%s' --set optim.activation_dtype=bf16", path), 0);
    expect_contains(out, "activations: the blocks' GEMM inputs and attention's input and output kept in bf16 ([optim] activation_dtype)");
    act = strstr(out, "  activation ");
    assert_true(act && sscanf(act, "  activation %lld %lld", &tensors, &e16) == 2);
    assert_int_equal(e32 - e16, 5440);
    free(out);
}

static void test_check_reports_bad_values(void **state) {
    (void)state;
    char path[4096], *out;
    write_ini(path, sizeof path, "bad.ini", "[backend]\nname = cpu\nthreads = many\n");
    assert_int_equal(run(&out, "check '%s'", path), 2);
    expect_contains(out, "bad.ini:3");
    expect_contains(out, "threads");
    expect_contains(out, "many");
    free(out);
    write_ini(path, sizeof path, "typo.ini", "[backend]\nname = cpu\nthread = 2\n");
    assert_int_equal(run(&out, "check '%s'", path), 2);
    expect_contains(out, "typo.ini:3");
    expect_contains(out, "thread");
    expect_contains(out, "threads"); /* the suggestion */
    free(out);
    write_ini(path, sizeof path, "section.ini", "[bakend]\nname = cpu\n");
    assert_int_equal(run(&out, "check '%s'", path), 2);
    expect_contains(out, "bakend");
    free(out);
    write_ini(path, sizeof path, "range.ini", "[data]\nname = abi-good\ncount = 0\n");
    assert_int_equal(run(&out, "check '%s'", path), 2);
    expect_contains(out, "count");
    expect_contains(out, "1000000");
    free(out);
    write_ini(path, sizeof path, "plugin.ini", "[data]\nname = fmoww\n");
    assert_int_equal(run(&out, "check '%s'", path), 1);
    expect_contains(out, "no dataset plugin named 'fmoww'");
    expect_contains(out, "plugin.ini:2");
    free(out);
    write_ini(path, sizeof path, "novalue.ini", "[backend]\nname\n");
    assert_true(run(&out, "check '%s'", path) != 0);
    expect_contains(out, "novalue.ini:2");
    free(out);
    assert_int_equal(run(&out, "check /nonexistent/run.ini"), 1);
    expect_contains(out, "/nonexistent/run.ini");
    free(out);
    write_ini(path, sizeof path, "ok.ini", "[backend]\nname = cpu\n");
    assert_int_equal(run(&out, "check '%s' --set backend.threads=-1", path), 2);
    expect_contains(out, "--set");
    expect_contains(out, "-1");
    free(out);
}

static void test_data_verb(void **state) {
    (void)state;
    char path[4096], *out;
    write_ini(path, sizeof path, "data.ini", "[data]\nname = abi-good\ncount = 7\nchannels = 1\nclasses = 3\n");
    assert_int_equal(run(&out, "data '%s' --show 2", path), 0);
    expect_contains(out, "7 samples, 3 classes");
    expect_contains(out, "#1 synthetic-1: 4x4x1, label 1");
    assert_null(strstr(out, "#2 "));
    free(out);
}

/* A weights-only copy of the DINOv2 ViT fixture (every tensor whose name is a model parameter). */
static void write_vit_weights(char *path, size_t cap) {
    char fx[4096];
    snprintf(fx, sizeof fx, "%s/../fixtures/vit_dinov2.safetensors", ext_env("EXPLORA_TEST_DATA_DIR"));
    ex_err err;
    ex_st_file *f;
    EXT_OK(ex_st_open(&f, fx, &err), &err);
    ex_st_writer *w;
    EXT_OK(ex_st_writer_new(&w, &err), &err);
    static const char *keep[] = {"cls_token", "pos_embed", "mask_token", "patch_embed.", "blocks.", "norm."};
    for (int i = 0; i < ex_st_count(f); i++) {
        const ex_st_entry *e = ex_st_at(f, i);
        for (size_t k = 0; k < sizeof keep / sizeof *keep; k++)
            if (strncmp(e->name, keep[k], strlen(keep[k])) == 0) {
                EXT_OK(ex_st_writer_add(w, e->name, e->dtype, e->ndim, e->shape, ex_st_data(f, e), &err), &err);
                break;
            }
    }
    ext_tmp_path(path, cap, "vit-weights.safetensors");
    EXT_OK(ex_st_writer_finish(w, path, &err), &err);
    ex_st_writer_free(w);
    ex_st_close(f);
}

static float *read_tensor(const char *path, const char *name, int64_t *n) {
    ex_err err;
    ex_st_file *f;
    EXT_OK(ex_st_open(&f, path, &err), &err);
    const ex_st_entry *e = ex_st_find(f, name);
    if (!e) fail_msg("%s lacks %s", path, name);
    *n = 1;
    for (int d = 0; d < e->ndim; d++) *n *= e->shape[d];
    float *x = malloc(sizeof(float) * (size_t)*n);
    EXT_OK(ex_st_read_f32(f, e, x, *n, &err), &err);
    ex_st_close(f);
    return x;
}

static void test_embed(void **state) {
    (void)state;
    char weights[4096], ini[4096], out1[4096], out2[4096], text[8192], *out;
    write_vit_weights(weights, sizeof weights);
    snprintf(text, sizeof text,
             "[data]\nname = abi-good\ncount = 7\nchannels = 3\nclasses = 3\n"
             "[backbone]\nname = vit\ndim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\n"
             "layerscale = on\nimage_size = 4\nweights = %s\n",
             weights);
    write_ini(ini, sizeof ini, "embed.ini", text);
    ext_tmp_path(out1, sizeof out1, "feat1.safetensors");
    ext_tmp_path(out2, sizeof out2, "feat2.safetensors");
    assert_int_equal(run(&out, "embed '%s' --out '%s' --blocks -1,0 --set optim.batch=3", ini, out1), 0);
    expect_contains(out, "wrote 7 x 24 features");
    free(out);
    assert_int_equal(run(&out, "embed '%s' --out '%s' --blocks -1,0 --set optim.batch=7", ini, out2), 0);
    free(out);
    /* features do not depend on the batch size, labels follow the dataset */
    const char *names[] = {"cls", "patch_mean", "block.2", "block.0"};
    for (int k = 0; k < 4; k++) {
        int64_t n1, n2;
        float *a = read_tensor(out1, names[k], &n1), *b = read_tensor(out2, names[k], &n2);
        assert_int_equal(n1, 7 * 24);
        assert_int_equal(n2, n1);
        ext_assert_close(a, b, (size_t)n1, 2e-5, 1e-4, names[k]); /* GEMM blocking differs with the batch size */
        double sum = 0;
        for (int64_t i = 0; i < n1; i++) sum += fabs(a[i]);
        assert_true(sum > 1.0); /* not all zeros */
        free(a);
        free(b);
    }
    int64_t nl;
    float *labels = read_tensor(out1, "labels", &nl);
    assert_int_equal(nl, 7);
    for (int i = 0; i < 7; i++) assert_float_equal(labels[i], (float)(i % 3), 0);
    free(labels);
    /* wrong image size: a clear error naming image_size */
    assert_int_equal(run(&out, "embed '%s' --out '%s' --set backbone.image_size=8", ini, out1), 1);
    expect_contains(out, "image_size");
    expect_contains(out, "4x4");
    free(out);
    assert_int_equal(run(&out, "embed '%s' --out '%s' --blocks 9", ini, out1), 2);
    expect_contains(out, "--blocks '9'");
    free(out);
}

/* embed on a directory of real image files (PNG and JPEG of different sizes), resized and centre-cropped */
static void test_embed_image_folder(void **state) {
    (void)state;
    char weights[4096], root[4096], ini[4096], out[4096], text[12288], *log;
    write_vit_weights(weights, sizeof weights);
    ext_tmp_path(root, sizeof root, "folder");
    const char *data = ext_env("EXPLORA_TEST_DATA_DIR");
    static char cmd[65536];
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s' && mkdir -p '%s/alpha' '%s/beta' && cp '%s/images/rgb8.png' '%s/images/rgb420.jpg' '%s/alpha/' && "
             "cp '%s/images/palette8.png' '%s/images/progressive.jpg' '%s/images/gray8.png' '%s/beta/'",
             root, root, root, data, data, root, data, data, data, root);
    assert_int_equal(system(cmd), 0);
    snprintf(text, sizeof text,
             "[data]\nname = imagefolder\nroot = %s\n"
             "[backbone]\nname = vit\ndim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\n"
             "layerscale = on\nimage_size = 16\nweights = %s\n[transform]\nresize = 18\n",
             root, weights);
    write_ini(ini, sizeof ini, "folder.ini", text);
    ext_tmp_path(out, sizeof out, "folder-features.safetensors");
    assert_int_equal(run(&log, "embed '%s' --out '%s' --set optim.batch=2", ini, out), 0);
    expect_contains(log, "wrote 5 x 24 features");
    free(log);
    int64_t n;
    float *labels = read_tensor(out, "labels", &n);
    const float want[5] = {0, 0, 1, 1, 1};
    assert_int_equal(n, 5);
    assert_memory_equal(labels, want, sizeof want);
    free(labels);
    float *cls = read_tensor(out, "cls", &n);
    for (int64_t i = 0; i < n; i++) assert_true(isfinite(cls[i]));
    assert_true(fabs(cls[0] - cls[24]) > 1e-6); /* different images, different features */
    free(cls);
    /* a corrupt file in the tree: an error naming it; with [run] skip_bad it is dropped and counted */
    snprintf(cmd, sizeof cmd, "head -c 60 '%s/images/rgb420.jpg' > '%s/beta/truncated.jpg'", data, root);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(run(&log, "embed '%s' --out '%s' --set optim.batch=2", ini, out), 1);
    expect_contains(log, "truncated.jpg");
    free(log);
    assert_int_equal(run(&log, "embed '%s' --out '%s' --set optim.batch=2 --set run.skip_bad=true", ini, out), 0);
    expect_contains(log, "1 unreadable samples dropped ([run] skip_bad), 5 kept");
    expect_contains(log, "wrote 5 x 24 features");
    free(log);
    labels = read_tensor(out, "labels", &n);
    assert_int_equal(n, 5);
    assert_memory_equal(labels, want, sizeof want);
    free(labels);
    /* without resize the sizes do not fit: the error says what to set */
    assert_int_equal(run(&log, "embed '%s' --out '%s' --set transform.resize=0", ini, out), 1);
    expect_contains(log, "[transform] resize");
    free(log);
}

/* `explora bench` times a real ExPLoRA step through its timing wrapper of the backend: with fp32 and
 * with bf16 activations (the wrapper must carry every slot the blocks call, optional ones included). */
static void test_bench_step(void **state) {
    (void)state;
    char *out = NULL;
    for (int bf = 0; bf < 2; bf++) {
        assert_int_equal(run(&out, "bench --model vits14 --policy explora --batch 1 --iters 1 --warmup 0%s",
                             bf ? " --set optim.activation_dtype=bf16" : ""),
                         0);
        expect_contains(out, "bench-result impl=explora model=vits14 policy=explora batch=1");
        if (strstr(out, "lacks backend slots")) fail_msg("%s", out);
        free(out);
    }
}

/* `explora bench data` on three real small images: it runs, counts them, and a missing file is named. */
static void test_bench_data(void **state) {
    (void)state;
    char dir[4096], list[4200], *out;
    ext_tmp_path(dir, sizeof dir, "bench-data");
    const char *data = ext_env("EXPLORA_TEST_DATA_DIR");
    static char cmd[16384];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s/images/rgb420.jpg' '%s/images/rgb8.png' '%s/images/gray.jpg' '%s/'",
             dir, dir, data, data, data, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(list, sizeof list, "%s/list.txt", dir);
    ext_write_file(list, "rgb420.jpg\nrgb8.png\ngray.jpg\n", 29);
    assert_int_equal(run(&out, "bench data --list '%s' --iters 2 --warmup 0 --workers 2", list), 0);
    expect_contains(out, "3 images from");
    expect_contains(out, "bench-data-result impl=explora images=3 passes=2 decode_ips=");
    expect_contains(out, "workers=2 multicrop_workers_ips=");
    free(out);
    ext_write_file(list, "rgb420.jpg\nmissing.jpg\n", 23);
    assert_int_equal(run(&out, "bench data --list '%s' --iters 1", list), 1);
    expect_contains(out, "missing.jpg");
    free(out);
    assert_int_equal(run(&out, "bench data"), 2);
    expect_contains(out, "usage: explora bench data --list FILE");
    free(out);
    assert_int_equal(run(&out, "bench --list '%s'", list), 2);
    free(out);
    assert_int_equal(run(&out, "bench data --list '%s' --workers many", list), 2);
    expect_contains(out, "--workers 'many'");
    free(out);
}

/* slim keeps exactly the tensors under the chosen prefixes, byte for byte, with
 * their dtypes and the metadata; refuses a prefix that matches nothing (naming
 * what the file holds) and leaves no output behind then. */
static void test_slim(void **state) {
    (void)state;
    char in[4096], out_path[4096], *out;
    ext_tmp_path(in, sizeof in, "slim-in.safetensors");
    ext_tmp_path(out_path, sizeof out_path, "slim-out.safetensors");
    remove(out_path);
    static const float teacher[6] = {1, 2, 3, 4, 5, 6}, head[2] = {-1.5f, 0.25f}, moment[6] = {9, 9, 9, 9, 9, 9};
    static const uint16_t half[3] = {0x3c00, 0x4000, 0xc000};
    ex_err err;
    ex_err_clear(&err);
    ex_st_writer *w;
    assert_int_equal(ex_st_writer_new(&w, &err), EX_OK);
    assert_int_equal(ex_st_writer_add(w, "param.blocks.0.w", EX_F32, 2, (int64_t[]){2, 3}, moment, &err), EX_OK);
    assert_int_equal(ex_st_writer_add(w, "optim.m.blocks.0.w", EX_F32, 2, (int64_t[]){2, 3}, moment, &err), EX_OK);
    assert_int_equal(ex_st_writer_add(w, "objective.teacher.blocks.0.w", EX_F32, 2, (int64_t[]){2, 3}, teacher, &err), EX_OK);
    assert_int_equal(ex_st_writer_add(w, "objective.teacher.norm.b", EX_F16, 1, (int64_t[]){3}, half, &err), EX_OK);
    assert_int_equal(ex_st_writer_add(w, "objective.teacher_head.dino_head.w", EX_F32, 1, (int64_t[]){2}, head, &err), EX_OK);
    assert_int_equal(ex_st_writer_metadata(w, "step", "4000", &err), EX_OK);
    assert_int_equal(ex_st_writer_finish(w, in, &err), EX_OK);
    ex_st_writer_free(w);

    assert_int_equal(run(&out, "slim '%s' --out '%s' --keep nothing.", in, out_path), 2);
    expect_contains(out, "starts with 'nothing.'");
    expect_contains(out, "'objective.teacher.'");
    expect_contains(out, "'optim.'");
    free(out);
    FILE *none = fopen(out_path, "rb");
    assert_null(none);

    assert_int_equal(run(&out, "slim '%s' --out '%s'", in, out_path), 0);
    expect_contains(out, "3 tensors");
    free(out);
    ex_st_file *f;
    assert_int_equal(ex_st_open(&f, out_path, &err), EX_OK);
    assert_int_equal(ex_st_count(f), 3);
    assert_null(ex_st_find(f, "param.blocks.0.w"));
    assert_null(ex_st_find(f, "optim.m.blocks.0.w"));
    const ex_st_entry *e = ex_st_find(f, "objective.teacher.blocks.0.w");
    assert_non_null(e);
    assert_int_equal(e->ndim, 2);
    assert_int_equal(e->shape[1], 3);
    assert_memory_equal(ex_st_data(f, e), teacher, sizeof teacher);
    e = ex_st_find(f, "objective.teacher.norm.b");
    assert_non_null(e);
    assert_int_equal(e->dtype, EX_F16);
    assert_memory_equal(ex_st_data(f, e), half, sizeof half);
    e = ex_st_find(f, "objective.teacher_head.dino_head.w");
    assert_non_null(e);
    assert_memory_equal(ex_st_data(f, e), head, sizeof head);
    assert_string_equal(ex_st_metadata(f, "step"), "4000");
    ex_st_close(f);

    assert_int_equal(run(&out, "slim '%s' --out '%s' --keep ' param. , optim.m.'", in, out_path), 0);
    expect_contains(out, "2 tensors");
    free(out);
    assert_int_equal(ex_st_open(&f, out_path, &err), EX_OK);
    assert_int_equal(ex_st_count(f), 2);
    assert_non_null(ex_st_find(f, "optim.m.blocks.0.w"));
    ex_st_close(f);

    assert_int_equal(run(&out, "slim '%s'", in), 2);
    expect_contains(out, "usage: explora slim");
    free(out);
    assert_int_equal(run(&out, "slim '%s' --out '%s'", in, in), 2);
    free(out);
    assert_int_equal(run(&out, "slim /nonexistent/ck.safetensors --out '%s'", out_path), 1);
    expect_contains(out, "/nonexistent/ck.safetensors");
    free(out);
}

static void test_usage_errors(void **state) {
    (void)state;
    char *out;
    assert_int_equal(run(&out, "frobnicate"), 2);
    expect_contains(out, "unknown verb 'frobnicate'");
    free(out);
    assert_int_equal(run(&out, "check"), 2);
    free(out);
    assert_int_equal(run(&out, "plugins --bogus"), 2);
    expect_contains(out, "unknown option '--bogus'");
    free(out);
    assert_int_equal(run(&out, "check x.ini --set"), 2);
    expect_contains(out, "needs a value");
    free(out);
    assert_int_equal(run(&out, "demo /nonexistent/demo-configs"), 2);
    expect_contains(out, "/nonexistent/demo-configs/quickstart.ini' is missing");
    free(out);
    /* every config present but not the shipped source model: named, with where to get it */
    char demo_dir[4096];
    static char cmd[16384];
    ext_tmp_path(demo_dir, sizeof demo_dir, "demo-configs");
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cd '%s' && touch quickstart.ini source.ini explora.ini "
                              "lora_only.ini unfreeze_only.ini finetune.ini", demo_dir, demo_dir, demo_dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(run(&out, "demo '%s'", demo_dir), 2);
    expect_contains(out, "source-fashion-mnist.safetensors' is missing");
    expect_contains(out, "docs/DOMAIN_SHIFT.md");
    free(out);
    assert_int_equal(run(&out, "demo a b"), 2);
    expect_contains(out, "usage: explora demo");
    free(out);
    assert_int_equal(run(&out, "version"), 0);
    char abi[64];
    snprintf(abi, sizeof abi, "plugin ABI %d.%d", EX_ABI_MAJOR, EX_ABI_MINOR);
    expect_contains(out, abi);
    free(out);
    assert_int_equal(run(&out, "help"), 0);
    expect_contains(out, "usage: explora");
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plugins_lists_found_and_rejected),
        cmocka_unit_test(test_plugins_keys),
        cmocka_unit_test(test_check_good_config),
        cmocka_unit_test(test_check_frozen_bf16),
        cmocka_unit_test(test_check_reports_bad_values),
        cmocka_unit_test(test_data_verb),
        cmocka_unit_test(test_embed),
        cmocka_unit_test(test_embed_image_folder),
        cmocka_unit_test(test_bench_step),
        cmocka_unit_test(test_bench_data),
        cmocka_unit_test(test_slim),
        cmocka_unit_test(test_usage_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
