/*
 * tests/test_trainer.c — `explora pretrain` end to end on real data
 * (Fashion-MNIST from Debian's dataset-fashion-mnist; skipped when absent):
 *   - MAE pre-training of a tiny ViT from scratch lowers the loss;
 *   - 8 steps in one go and 4 + --resume + 4 give bit-identical parameters,
 *     optimiser state and losses;
 *   - a diverging run stops with the step and a hint, leaving the previous
 *     checkpoint intact;
 *   - --dry-run allocates nothing and writes nothing.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "explora/fileio.h"
#include "explora/image.h"
#include "explora/safetensors.h"
#include "test_support.h"

#define FMNIST "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"

/* The pieces of the small DINOv2 runs below: a 2-block ViT on 16 px Fashion-MNIST, ExPLoRA's PEFT stack (last
 * block unfrozen, LoRA r4 on q and v elsewhere, norms and cls token), a DINOv2 objective with tiny heads. */
#define TINY_VIT "[backbone]\nname = vit\npatch = 4\ndim = 16\ndepth = 2\nheads = 2\nchannels = 1\npos_grid = 4\nimage_size = 16\n"
#define EXPLORA_PEFT                                                                                                   \
    "[peft]\nstack = unfreeze, lora\n[peft.unfreeze]\nblocks = -1\nnorms = true\ncls_token = true\n"                     \
    "[peft.lora]\nrank = 4\ntargets = q, v\n"
#define TINY_DINOV2                                                                                                    \
    "[objective]\nname = dinov2\nprototypes = 32\nbottleneck = 8\nhead_hidden = 16\nglobal_size = 16\n"                 \
    "local_size = 8\nlocal_crops = 2\n"
#define FMNIST_DATA "[data]\nname = idx\nimages = " FMNIST "\nlimit = 256\n[transform]\nmean = 0.286\nstd = 0.353\n"

static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(char **out, const char *fmt, ...) {
    char args[8192], cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", ext_env("EXPLORA_BIN"), args);
    FILE *p = popen(cmd, "r");
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + len, 1, cap - 1 - len, p)) > 0) {
        len += got;
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect_in(const char *out, const char *needle) {
    if (!strstr(out, needle)) fail_msg("output lacks '%s':\n%s", needle, out);
}

/* Run and require exit code `rc`, printing the output when it differs. */
#define RUN_EXPECT(rc, out, ...)                                                                 \
    do {                                                                                         \
        int run__rc = run(out, __VA_ARGS__);                                                     \
        if (run__rc != (rc)) fail_msg("exit code %d (expected %d); output:\n%s", run__rc, (rc), *(out)); \
    } while (0)

static void need_data(void) {
    if (access(FMNIST, R_OK) != 0) {
        print_message("Fashion-MNIST not installed (package dataset-fashion-mnist); skipping\n");
        skip();
    }
}

/* A tiny MAE run config into path; run directory `out`. */
static void write_config_peft(char *path, size_t cap, const char *name, const char *out, int steps, const char *peft) {
    char text[8192];
    snprintf(text, sizeof text,
             "[run]\nseed = 3\nout = %s\nlog_every = 1\n"
             "[backend]\nname = cpu\n"
             "[backbone]\nname = vit\npatch = 4\ndim = 32\ndepth = 2\nheads = 2\nchannels = 1\npos_grid = 7\n"
             "pos_embed = sincos\nmask_token = off\nlayerscale = off\nimage_size = 28\n"
             "%s"
             "[objective]\nname = mae\nimage_size = 28\ndecoder_dim = 16\ndecoder_depth = 1\ndecoder_heads = 2\n"
             "[data]\nname = idx\nimages = %s\nlimit = 512\n"
             "[transform]\nmean = 0.286\nstd = 0.353\n"
             "[optim]\nbatch = 16\naccumulate = 2\nsteps = %d\nlr = 2e-3\nwarmup_steps = 2\nclip_grad = 3\n",
             out, peft, FMNIST, steps);
    ext_tmp_path(path, cap, name);
    ext_write_file(path, text, strlen(text));
}

static void write_config(char *path, size_t cap, const char *name, const char *out, int steps) {
    write_config_peft(path, cap, name, out, steps, "[peft]\nstack = unfreeze\n[peft.unfreeze]\nall = true\n");
}

static double *losses(const char *run_dir, int *n) {
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("no %s", path);
    double *v = calloc(4096, sizeof(double));
    char line[4096];
    *n = 0;
    while (fgets(line, sizeof line, f) && *n < 4096) {
        const char *p = strstr(line, "\"loss\": ");
        if (p) v[(*n)++] = strtod(p + 8, NULL);
    }
    fclose(f);
    return v;
}

static void test_mae_pretraining_lowers_the_loss(void **state) {
    (void)state;
    need_data();
    char ini[4096], dir[4096], *out;
    ext_tmp_path(dir, sizeof dir, "run-long");
    write_config(ini, sizeof ini, "long.ini", dir, 60);
    RUN_EXPECT(0, &out, "pretrain '%s' --set optim.lr=3e-3", ini);
    free(out);
    int n;
    double *l = losses(dir, &n);
    assert_int_equal(n, 60);
    double first = (l[0] + l[1] + l[2]) / 3, last = (l[57] + l[58] + l[59]) / 3;
    print_message("MAE loss: first 3 steps %.4f, last 3 steps %.4f\n", first, last);
    assert_true(last < 0.8 * first);
    free(l);
    /* the run's curves as PNG, drawn by explora */
    RUN_EXPECT(0, &out, "plot '%s'", dir);
    free(out);
    char png[4200];
    snprintf(png, sizeof png, "%s/loss.png", dir);
    ex_image img;
    ex_err err;
    EXT_OK(ex_image_load(png, 3, &img, &err), &err);
    assert_true(img.width >= 300 && img.height >= 200);
    double ink = 0; /* the plot is not blank: some pixels are far from white */
    for (int64_t i = 0; i < (int64_t)img.width * img.height * 3; i++) ink += img.pixels[i] < 0.5f;
    assert_true(ink > 1000);
    ex_image_free(&img);
    RUN_EXPECT(1, &out, "plot /nonexistent/run");
    expect_in(out, "metrics.jsonl");
    free(out);
}

static void compare_checkpoints(const char *a, const char *b) {
    ex_err err;
    ex_st_file *fa, *fb;
    EXT_OK(ex_st_open(&fa, a, &err), &err);
    EXT_OK(ex_st_open(&fb, b, &err), &err);
    assert_int_equal(ex_st_count(fa), ex_st_count(fb));
    assert_true(ex_st_count(fa) > 10);
    for (int i = 0; i < ex_st_count(fa); i++) {
        const ex_st_entry *e = ex_st_at(fa, i), *g = ex_st_find(fb, e->name);
        if (!g) fail_msg("%s lacks %s", b, e->name);
        assert_int_equal(e->end - e->begin, g->end - g->begin);
        if (memcmp(ex_st_data(fa, e), ex_st_data(fb, g), e->end - e->begin) != 0)
            fail_msg("tensor %s differs between %s and %s", e->name, a, b);
    }
    assert_string_equal(ex_st_metadata(fa, "step"), ex_st_metadata(fb, "step"));
    assert_string_equal(ex_st_metadata(fa, "position"), ex_st_metadata(fb, "position"));
    assert_string_equal(ex_st_metadata(fa, "mask_rng_offset"), ex_st_metadata(fb, "mask_rng_offset"));
    ex_st_close(fa);
    ex_st_close(fb);
}

/* Run `ini_a` to the end, and `ini_b` (the same schedule in another folder) stopped after `stop_at` steps and
 * resumed to the end; `extra` (may be "") is added to every command. */
static void straight_and_resumed(const char *ini_a, const char *ini_b, int stop_at, const char *extra) {
    char *out, want[64];
    RUN_EXPECT(0, &out, "pretrain '%s' %s", ini_a, extra);
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' %s --set run.stop_at=%d", ini_b, extra, stop_at);
    snprintf(want, sizeof want, "stopping at step %d", stop_at);
    expect_in(out, want);
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' %s --resume", ini_b, extra);
    free(out);
}

static void test_resume_is_bit_identical(void **state) {
    (void)state;
    need_data();
    char ini_a[4096], ini_b[4096], dir_a[4096], dir_b[4096], ck_a[4200], ck_b[4200], *out;
    ext_tmp_path(dir_a, sizeof dir_a, "run-straight");
    ext_tmp_path(dir_b, sizeof dir_b, "run-resumed");
    write_config(ini_a, sizeof ini_a, "straight.ini", dir_a, 8);
    write_config(ini_b, sizeof ini_b, "resumed.ini", dir_b, 8);
    /* the same 8-step schedule, stopped after step 4, then resumed to the end */
    straight_and_resumed(ini_a, ini_b, 4, "");
    snprintf(ck_a, sizeof ck_a, "%s/checkpoint.safetensors", dir_a);
    snprintf(ck_b, sizeof ck_b, "%s/checkpoint.safetensors", dir_b);
    compare_checkpoints(ck_a, ck_b);
    int na, nb;
    double *la = losses(dir_a, &na), *lb = losses(dir_b, &nb);
    assert_int_equal(na, 8);
    assert_int_equal(nb, 8); /* the resumed run appends to the same metrics file */
    for (int i = 0; i < 8; i++)
        if (la[i] != lb[i]) fail_msg("step %d: loss %.9g straight, %.9g resumed", i + 1, la[i], lb[i]);
    free(la);
    free(lb);
    /* resuming a run that has no checkpoint says how to start it */
    char dir_c[4096], ini_c[4096];
    ext_tmp_path(dir_c, sizeof dir_c, "run-none");
    write_config(ini_c, sizeof ini_c, "none.ini", dir_c, 8);
    RUN_EXPECT(1, &out, "pretrain '%s' --resume", ini_c);
    expect_in(out, "without --resume");
    free(out);
}

/* LoRA dropout draws its masks from the step, the micro-batch and the seed: a resumed run (with gradient
 * accumulation and activation checkpointing) ends bit-identical to the uninterrupted one, and the dropout
 * really changes training (the adapters differ from a run without it). */
static void test_lora_dropout_resume_is_bit_identical(void **state) {
    (void)state;
    need_data();
    static const char *peft = "[peft]\nstack = unfreeze, lora\n[peft.unfreeze]\nblocks = -1\nnorms = true\n"
                              "[peft.lora]\nrank = 4\ndropout = 0.2\n";
    char ini_a[4096], ini_b[4096], ini_c[4096], dir_a[4096], dir_b[4096], dir_c[4096], ck_a[4200], ck_b[4200], ck_c[4200];
    char *out;
    ext_tmp_path(dir_a, sizeof dir_a, "run-dropout-straight");
    ext_tmp_path(dir_b, sizeof dir_b, "run-dropout-resumed");
    ext_tmp_path(dir_c, sizeof dir_c, "run-no-dropout");
    write_config_peft(ini_a, sizeof ini_a, "dropout-a.ini", dir_a, 6, peft);
    write_config_peft(ini_b, sizeof ini_b, "dropout-b.ini", dir_b, 6, peft);
    write_config_peft(ini_c, sizeof ini_c, "dropout-c.ini", dir_c, 6, peft);
    straight_and_resumed(ini_a, ini_b, 3, "--set backbone.recompute=true");
    RUN_EXPECT(0, &out, "pretrain '%s' --set backbone.recompute=true --set peft.lora.dropout=0", ini_c);
    free(out);
    snprintf(ck_a, sizeof ck_a, "%s/checkpoint.safetensors", dir_a);
    snprintf(ck_b, sizeof ck_b, "%s/checkpoint.safetensors", dir_b);
    snprintf(ck_c, sizeof ck_c, "%s/checkpoint.safetensors", dir_c);
    compare_checkpoints(ck_a, ck_b);
    ex_err err;
    ex_st_file *fa, *fc;
    EXT_OK(ex_st_open(&fa, ck_a, &err), &err);
    EXT_OK(ex_st_open(&fc, ck_c, &err), &err);
    const ex_st_entry *ea = ex_st_find(fa, "param.blocks.0.attn.qkv.lora_q.A"),
                      *ec = ex_st_find(fc, "param.blocks.0.attn.qkv.lora_q.A");
    assert_non_null(ea);
    assert_non_null(ec);
    assert_true(memcmp(ex_st_data(fa, ea), ex_st_data(fc, ec), ea->end - ea->begin) != 0);
    ex_st_close(fa);
    ex_st_close(fc);
}

/* A NaN in the data makes the loss NaN: the run stops with the step, the last finite loss and a hint,
 * and the checkpoint of the earlier run stays as it was. */
/* The DINOv2 objective keeps a teacher and centres: resuming restores them too (bit-identical run). */
static void test_dinov2_resume_is_bit_identical(void **state) {
    (void)state;
    need_data();
    static char text[16384];
    char ini_a[4096], ini_b[4096], dir_a[4096], dir_b[4096], ck_a[4200], ck_b[4200], *out;
    const char *body =
        TINY_VIT "layerscale = on\nlayerscale_init = 0.1\n"
        "[peft]\nstack = unfreeze\n[peft.unfreeze]\nall = true\n"
        TINY_DINOV2 "warmup_teacher_temp_iters = 4\n" FMNIST_DATA
        "[optim]\nbatch = 8\nsteps = 6\nlr = 1e-3\n";
    ext_tmp_path(dir_a, sizeof dir_a, "dino-straight");
    ext_tmp_path(dir_b, sizeof dir_b, "dino-resumed");
    snprintf(text, sizeof text, "[run]\nseed = 4\nout = %s\nlog_every = 1\n%s", dir_a, body);
    ext_tmp_path(ini_a, sizeof ini_a, "dino-a.ini");
    ext_write_file(ini_a, text, strlen(text));
    snprintf(text, sizeof text, "[run]\nseed = 4\nout = %s\nlog_every = 1\n%s", dir_b, body);
    ext_tmp_path(ini_b, sizeof ini_b, "dino-b.ini");
    ext_write_file(ini_b, text, strlen(text));
    straight_and_resumed(ini_a, ini_b, 3, "");
    snprintf(ck_a, sizeof ck_a, "%s/checkpoint.safetensors", dir_a);
    snprintf(ck_b, sizeof ck_b, "%s/checkpoint.safetensors", dir_b);
    compare_checkpoints(ck_a, ck_b); /* includes objective.teacher.*, teacher heads and centres */
    ex_err err;
    ex_st_file *f;
    EXT_OK(ex_st_open(&f, ck_a, &err), &err);
    assert_non_null(ex_st_find(f, "objective.center.dino.c"));
    assert_non_null(ex_st_find(f, "objective.teacher.blocks.0.attn.qkv.weight"));
    ex_st_close(f);
    int na, nb;
    double *la = losses(dir_a, &na), *lb = losses(dir_b, &nb);
    assert_int_equal(na, 6);
    assert_int_equal(nb, 6);
    for (int i = 0; i < 6; i++)
        if (la[i] != lb[i]) fail_msg("step %d: loss %.9g straight, %.9g resumed", i + 1, la[i], lb[i]);
    free(la);
    free(lb);

    /* extended pre-training from run A's checkpoint: the backbone reads A's EMA teacher and the heads start as
     * A's teacher heads (one step at lr 0 keeps every value, so C's trained tensors equal A's teacher) */
    char dir_c[4096], ini_c[4096], ck_c[4200];
    ext_tmp_path(dir_c, sizeof dir_c, "dino-extended");
    snprintf(text, sizeof text, "[run]\nseed = 5\nout = %s\n%s", dir_c, body);
    ext_tmp_path(ini_c, sizeof ini_c, "dino-c.ini");
    ext_write_file(ini_c, text, strlen(text));
    RUN_EXPECT(0, &out, "pretrain '%s' --set backbone.weights=%s --set objective.head_weights=%s --set optim.steps=1 "
                        "--set optim.lr=0 --set optim.min_lr=0 --set optim.warmup_steps=0",
               ini_c, ck_a, ck_a);
    free(out);
    snprintf(ck_c, sizeof ck_c, "%s/checkpoint.safetensors", dir_c);
    ex_st_file *fa, *fc;
    EXT_OK(ex_st_open(&fa, ck_a, &err), &err);
    EXT_OK(ex_st_open(&fc, ck_c, &err), &err);
    static const char *const pairs[][2] = {
        {"objective.teacher.blocks.1.mlp.fc2.weight", "param.blocks.1.mlp.fc2.weight"},
        {"objective.teacher.cls_token", "param.cls_token"},
        {"objective.teacher_head.dino_head.mlp.0.weight", "param.dino_head.mlp.0.weight"},
        {"objective.teacher_head.dino_head.last_layer.weight_v", "param.dino_head.last_layer.weight_v"}};
    for (int i = 0; i < 4; i++) {
        const ex_st_entry *ea = ex_st_find(fa, pairs[i][0]), *ec = ex_st_find(fc, pairs[i][1]);
        if (!ea || !ec) fail_msg("missing %s or %s", pairs[i][0], pairs[i][1]);
        assert_int_equal(ea->end - ea->begin, ec->end - ec->begin);
        if (memcmp(ex_st_data(fa, ea), ex_st_data(fc, ec), ea->end - ea->begin) != 0)
            fail_msg("%s of the extended run is not %s of the source run", pairs[i][1], pairs[i][0]);
    }
    ex_st_close(fa);
    ex_st_close(fc);

    /* which copy evaluation reads: export --copy teacher (the default for a checkpoint with a teacher) writes
     * A's EMA teacher, --copy student its optimised student (they differ after 6 steps); `slim` keeps the
     * teacher and its heads, and reads back as the teacher; a slim file has no student to read */
    char ck_s[4200], ex_t[4200], ex_a[4200], ex_st[4200], ex_sl[4200];
    snprintf(ck_s, sizeof ck_s, "%s/slim.safetensors", dir_a);
    snprintf(ex_t, sizeof ex_t, "%s/export-teacher.safetensors", dir_a);
    snprintf(ex_a, sizeof ex_a, "%s/export-auto.safetensors", dir_a);
    snprintf(ex_st, sizeof ex_st, "%s/export-student.safetensors", dir_a);
    snprintf(ex_sl, sizeof ex_sl, "%s/export-slim.safetensors", dir_a);
    RUN_EXPECT(0, &out, "slim '%s' --out '%s'", ck_a, ck_s);
    free(out);
    RUN_EXPECT(0, &out, "export '%s' --checkpoint '%s' --copy teacher --out '%s'", ini_a, ck_a, ex_t);
    free(out);
    RUN_EXPECT(0, &out, "export '%s' --checkpoint '%s' --out '%s'", ini_a, ck_a, ex_a);
    free(out);
    RUN_EXPECT(0, &out, "export '%s' --checkpoint '%s' --copy student --out '%s'", ini_a, ck_a, ex_st);
    free(out);
    RUN_EXPECT(0, &out, "export '%s' --checkpoint '%s' --out '%s'", ini_a, ck_s, ex_sl);
    free(out);
    RUN_EXPECT(2, &out, "export '%s' --checkpoint '%s' --copy student --out '%s'", ini_a, ck_s, ex_st);
    if (!strstr(out, "no 'param.*' tensors")) fail_msg("student copy of a slim file: %s", out);
    free(out);
    EXT_OK(ex_st_open(&fa, ck_a, &err), &err);
    static const char *const names[] = {"blocks.1.mlp.fc2.weight", "blocks.0.attn.qkv.weight", "cls_token", "norm.weight"};
    const char *files[4] = {ex_t, ex_a, ex_sl, ex_st};
    for (int k = 0; k < 4; k++) {
        ex_st_file *fe;
        EXT_OK(ex_st_open(&fe, files[k], &err), &err);
        for (int i = 0; i < 4; i++) {
            char tn[256], sn[256];
            snprintf(tn, sizeof tn, "objective.teacher.%s", names[i]);
            snprintf(sn, sizeof sn, "param.%s", names[i]);
            const ex_st_entry *et = ex_st_find(fa, tn), *es = ex_st_find(fa, sn), *ee = ex_st_find(fe, names[i]);
            if (!et || !es || !ee) fail_msg("%s: missing %s", files[k], names[i]);
            const size_t bytes = et->end - et->begin;
            assert_int_equal(ee->end - ee->begin, bytes);
            const int is_teacher = memcmp(ex_st_data(fe, ee), ex_st_data(fa, et), bytes) == 0;
            const int is_student = memcmp(ex_st_data(fe, ee), ex_st_data(fa, es), bytes) == 0;
            if (k < 3 && (!is_teacher || is_student)) fail_msg("%s: %s is not the teacher's", files[k], names[i]);
            if (k == 3 && (!is_student || is_teacher)) fail_msg("%s: %s is not the student's", files[k], names[i]);
        }
        ex_st_close(fe);
    }
    ex_st_close(fa);
}

/* kill -9 during training with a checkpoint every step: whatever moment the kill lands, the checkpoint on
 * disk opens and resumes (the atomic rename leaves the old or the new file, never half of one). Also keeps
 * the last k numbered checkpoints. */
/* One run of a family: a config <prefix>-<tag>.ini with [run] seed and out = <tmp>/<prefix>-<tag> before `body`,
 * and the path its final checkpoint will have. */
typedef struct run_files {
    char dir[4096], ini[4096], ckpt[4200];
} run_files;

static void write_run(run_files *r, const char *prefix, const char *tag, int seed, const char *body) {
    static char text[16384];
    char name[128];
    snprintf(name, sizeof name, "%s-%s", prefix, tag);
    ext_tmp_path(r->dir, sizeof r->dir, name);
    snprintf(text, sizeof text, "[run]\nseed = %d\nout = %s\nlog_every = 1\n%s", seed, r->dir, body);
    snprintf(name, sizeof name, "%s-%s.ini", prefix, tag);
    ext_tmp_path(r->ini, sizeof r->ini, name);
    ext_write_file(r->ini, text, strlen(text));
    snprintf(r->ckpt, sizeof r->ckpt, "%s/checkpoint.safetensors", r->dir);
}

/* The tensors of checkpoint a whose names start with `prefix` equal b's, byte for byte. */
static void compare_prefix(const char *a, const char *b, const char *prefix) {
    ex_err err;
    ex_st_file *fa, *fb;
    EXT_OK(ex_st_open(&fa, a, &err), &err);
    EXT_OK(ex_st_open(&fb, b, &err), &err);
    int n = 0;
    for (int i = 0; i < ex_st_count(fa); i++) {
        const ex_st_entry *e = ex_st_at(fa, i), *g;
        if (strncmp(e->name, prefix, strlen(prefix)) != 0) continue;
        if (!(g = ex_st_find(fb, e->name))) fail_msg("%s lacks %s", b, e->name);
        if (e->end - e->begin != g->end - g->begin || memcmp(ex_st_data(fa, e), ex_st_data(fb, g), e->end - e->begin))
            fail_msg("tensor %s differs between %s and %s", e->name, a, b);
        n++;
    }
    assert_true(n > 0);
    ex_st_close(fa);
    ex_st_close(fb);
}

/* [optim] frozen_dtype = bf16 keeps the frozen linear weights in bf16. The CPU widens them exactly for
 * its GEMM, so an ExPLoRA DINOv2 run must equal, bit for bit, an fp32 run whose frozen weights were rounded
 * to bf16 beforehand (losses, trained tensors, optimiser state), and differ from the fp32 run on the
 * unrounded weights. Its checkpoint keeps the teacher's shared frozen weights as BF16, and a stopped and
 * resumed bf16 run ends bit-identical to an uninterrupted one. */
static void test_frozen_bf16_equals_rounded_fp32(void **state) {
    (void)state;
    need_data();
    const char *body =
        TINY_VIT "layerscale = on\nlayerscale_init = 0.1\n" EXPLORA_PEFT TINY_DINOV2 FMNIST_DATA
        "[optim]\nbatch = 8\nsteps = 4\nlr = 1e-3\n";
    const char *tags[5] = {"base", "a", "b", "c", "a2"};
    static run_files r[5];
    char *out;
    for (int i = 0; i < 5; i++) write_run(&r[i], "fbf16", tags[i], 7, body);
    /* base weights (the backbone's init), and a copy with the frozen linear weights rounded to bf16 */
    char base[4200], rounded[4200];
    ext_tmp_path(base, sizeof base, "fbf16-base.safetensors");
    ext_tmp_path(rounded, sizeof rounded, "fbf16-rounded.safetensors");
    RUN_EXPECT(0, &out, "export '%s' --out '%s'", r[0].ini, base);
    free(out);
    ex_err err;
    ex_st_file *f;
    ex_st_writer *w;
    EXT_OK(ex_st_open(&f, base, &err), &err);
    EXT_OK(ex_st_writer_new(&w, &err), &err);
    float *vals[64];
    int nv = 0, nrounded = 0;
    for (int i = 0; i < ex_st_count(f); i++) {
        const ex_st_entry *e = ex_st_at(f, i);
        int64_t n = 1;
        for (int d = 0; d < e->ndim; d++) n *= e->shape[d];
        assert_true(nv < 64);
        float *v = vals[nv++] = malloc(sizeof(float) * (size_t)n);
        EXT_OK(ex_st_read_f32(f, e, v, n, &err), &err);
        /* frozen under this [peft]: the linear weights of block 0 and the patch embedding */
        const int frozen_linear = (strncmp(e->name, "blocks.0.", 9) == 0 && e->ndim == 2 && strstr(e->name, ".weight") &&
                                   !strstr(e->name, "norm")) ||
                                  strcmp(e->name, "patch_embed.proj.weight") == 0;
        if (frozen_linear) {
            for (int64_t j = 0; j < n; j++) v[j] = ex_bf16_to_f32(ex_f32_to_bf16(v[j]));
            nrounded++;
        }
        EXT_OK(ex_st_writer_add(w, e->name, EX_F32, e->ndim, e->shape, v, &err), &err);
    }
    assert_int_equal(nrounded, 5); /* qkv, proj, fc1, fc2, patch embedding */
    EXT_OK(ex_st_writer_finish(w, rounded, &err), &err);
    ex_st_writer_free(w);
    ex_st_close(f);
    for (int i = 0; i < nv; i++) free(vals[i]);

    RUN_EXPECT(0, &out, "pretrain '%s' --set backbone.weights=%s --set optim.frozen_dtype=bf16", r[1].ini, base);
    expect_in(out, "frozen weights: 5 tensors kept in bf16");
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' --set backbone.weights=%s", r[2].ini, rounded);
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' --set backbone.weights=%s", r[3].ini, base);
    free(out);
    int na, nb, nc;
    double *la = losses(r[1].dir, &na), *lb = losses(r[2].dir, &nb), *lc = losses(r[3].dir, &nc);
    assert_int_equal(na, 4);
    assert_int_equal(nb, 4);
    assert_int_equal(nc, 4);
    int differs = 0;
    for (int i = 0; i < 4; i++) {
        if (la[i] != lb[i]) fail_msg("step %d: loss %.9g with bf16 storage, %.9g on pre-rounded fp32", i + 1, la[i], lb[i]);
        differs |= la[i] != lc[i];
    }
    assert_true(differs); /* the rounding is real: the unrounded fp32 run takes another path */
    free(la);
    free(lb);
    free(lc);
    compare_prefix(r[1].ckpt, r[2].ckpt, "param.");
    compare_prefix(r[1].ckpt, r[2].ckpt, "optim.");
    compare_prefix(r[1].ckpt, r[2].ckpt, "objective.teacher_head.");
    compare_prefix(r[1].ckpt, r[2].ckpt, "objective.teacher.blocks.1.");
    EXT_OK(ex_st_open(&f, r[1].ckpt, &err), &err);
    const ex_st_entry *q0 = ex_st_find(f, "objective.teacher.blocks.0.attn.qkv.weight");
    const ex_st_entry *q1 = ex_st_find(f, "objective.teacher.blocks.1.attn.qkv.weight");
    assert_true(q0 && q1);
    assert_int_equal(q0->dtype, EX_BF16); /* shared with the student, stored as it is */
    assert_int_equal(q1->dtype, EX_F32);  /* trained by the student: its own EMA copy */
    ex_st_close(f);

    /* stopped after 2 steps and resumed: the same end as the uninterrupted bf16 run */
    char *o2;
    RUN_EXPECT(0, &o2, "pretrain '%s' --set backbone.weights=%s --set optim.frozen_dtype=bf16 --set run.stop_at=2",
               r[4].ini, base);
    free(o2);
    RUN_EXPECT(0, &o2, "pretrain '%s' --set backbone.weights=%s --set optim.frozen_dtype=bf16 --resume", r[4].ini, base);
    free(o2);
    compare_checkpoints(r[1].ckpt, r[4].ckpt);
}

/* --profile-step N: the run is the same bit for bit (the timing wrapper only times), the profile of step N is
 * printed with GEMM calls and model FLOPs in it, and bad step numbers are usage errors. */
static void test_profile_step_changes_nothing(void **state) {
    (void)state;
    need_data();
    const char *body = TINY_VIT EXPLORA_PEFT TINY_DINOV2 FMNIST_DATA "[optim]\nbatch = 8\nsteps = 4\n";
    static run_files r[2];
    char *out;
    write_run(&r[0], "profile", "plain", 5, body);
    write_run(&r[1], "profile", "profiled", 5, body);
    const char *ini_b = r[1].ini;
    RUN_EXPECT(0, &out, "pretrain '%s'", r[0].ini);
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' --profile-step 3", ini_b);
    expect_in(out, "profile of step 3 ");
    expect_in(out, "inside backend calls");
    expect_in(out, "slowest backend slots:");
    const char *g = strstr(out, "\n  gemm ");
    if (!g) fail_msg("no gemm line in the profile:\n%s", out);
    double ms = 0;
    long long calls = 0;
    assert_int_equal(sscanf(g, "\n  gemm %lf ms %lld calls", &ms, &calls), 2);
    assert_true(ms > 0.0 && calls > 10);
    const char *tf = strstr(out, "GEMMs and attention: ");
    assert_non_null(tf);
    double gflop = 0;
    assert_int_equal(sscanf(tf, "GEMMs and attention: %lf GFLOP", &gflop), 1);
    assert_true(gflop > 0.0);
    /* printed after step 3, before step 4's line */
    assert_true(strstr(out, "profile of step 3") < strstr(out, "step 4/4"));
    free(out);
    compare_checkpoints(r[0].ckpt, r[1].ckpt);
    RUN_EXPECT(0, &out, "pretrain '%s' --profile-step 9", ini_b); /* beyond the run: said, not silent */
    expect_in(out, "profile: step 9 was not reached (the run ended at step 4)");
    free(out);
    /* a resumed run's first step does its setup: the step after it is the first it can profile */
    RUN_EXPECT(0, &out, "pretrain '%s' --set run.stop_at=2", ini_b);
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' --resume --profile-step 3", ini_b);
    expect_in(out, "profile: step 3 cannot be profiled: this run's first step is 3");
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' --set run.stop_at=2", ini_b);
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' --resume --profile-step 4", ini_b);
    expect_in(out, "profile of step 4 ");
    free(out);
    RUN_EXPECT(2, &out, "pretrain '%s' --profile-step 0", ini_b);
    expect_in(out, "--profile-step '0'");
    free(out);
    RUN_EXPECT(2, &out, "pretrain '%s' --profile-step 1", ini_b);
    expect_in(out, "step 1 also does the run's setup");
    free(out);
    RUN_EXPECT(2, &out, "pretrain '%s' --profile-step x", ini_b);
    free(out);
}

/* Activation recomputation in a whole ExPLoRA DINOv2 run (3 blocks, LayerScale, drop path, LoRA, two crop
 * sizes): off, on for every block, and on for the first one or two (recompute_blocks) all write the same
 * checkpoint, byte for byte. */
static void test_recompute_blocks_train_identically(void **state) {
    (void)state;
    need_data();
    const char *body = "[backbone]\nname = vit\npatch = 4\ndim = 16\ndepth = 3\nheads = 2\nchannels = 1\npos_grid = 4\n"
                       "image_size = 16\nlayerscale = on\nlayerscale_init = 0.1\n" EXPLORA_PEFT TINY_DINOV2
                       "drop_path = 0.3\n" FMNIST_DATA "[optim]\nbatch = 8\nsteps = 3\nlr = 1e-3\n";
    const char *sets[4] = {"", "--set backbone.recompute=true",
                           "--set backbone.recompute=true --set backbone.recompute_blocks=1",
                           "--set backbone.recompute=true --set backbone.recompute_blocks=2"};
    const char *tags[4] = {"off", "all", "first1", "first2"};
    static run_files r[4];
    char *out;
    for (int i = 0; i < 4; i++) {
        write_run(&r[i], "recompute", tags[i], 13, body);
        RUN_EXPECT(0, &out, "pretrain '%s' %s", r[i].ini, sets[i]);
        free(out);
    }
    for (int i = 1; i < 4; i++) compare_checkpoints(r[0].ckpt, r[i].ckpt);
}

/* [optim] activation_dtype = bf16 on an ExPLoRA DINOv2 run with recomputation (the blocks' activations are
 * rebuilt for backward, in bf16 too): it trains (another path than fp32, close to it), says so, resumes bit for
 * bit; LoRA dropout, which needs fp32 inputs, is refused by name. */
static void test_bf16_activations_train(void **state) {
    (void)state;
    need_data();
    const char *body =
        TINY_VIT "layerscale = on\nlayerscale_init = 0.1\nrecompute = on\n" EXPLORA_PEFT TINY_DINOV2 FMNIST_DATA
        "[optim]\nbatch = 8\nsteps = 4\nlr = 1e-3\n";
    const char *tags[4] = {"fp32", "bf16", "bf16-resumed", "dropout"};
    static run_files r[4];
    char *out;
    for (int i = 0; i < 4; i++) write_run(&r[i], "abf16", tags[i], 11, body);
    RUN_EXPECT(0, &out, "pretrain '%s'", r[0].ini);
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' --set optim.activation_dtype=bf16", r[1].ini);
    expect_in(out, "activations: the blocks' GEMM inputs and attention's input and output kept in bf16");
    free(out);
    int na, nb;
    double *la = losses(r[0].dir, &na), *lb = losses(r[1].dir, &nb);
    assert_int_equal(na, 4);
    assert_int_equal(nb, 4);
    int differs = 0;
    for (int i = 0; i < 4; i++) {
        differs |= la[i] != lb[i];
        if (!(fabs(la[i] - lb[i]) <= 0.02 * fabs(la[i])))
            fail_msg("step %d: loss %.9g with bf16 activations, %.9g in fp32: more than 2%% apart", i + 1, lb[i], la[i]);
    }
    assert_true(differs); /* the activations were rounded */
    free(la);
    free(lb);
    RUN_EXPECT(0, &out, "pretrain '%s' --set optim.activation_dtype=bf16 --set run.stop_at=2", r[2].ini);
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' --set optim.activation_dtype=bf16 --resume", r[2].ini);
    free(out);
    compare_checkpoints(r[1].ckpt, r[2].ckpt);
    RUN_EXPECT(2, &out, "pretrain '%s' --set optim.activation_dtype=bf16 --set peft.lora.dropout=0.1", r[3].ini);
    expect_in(out, "dropout = 0.1 needs the layer's input in fp32, but it is kept in bf16");
    expect_in(out, "activation_dtype");
    free(out);
}

/* [optim] loss_scale = dynamic with growth every step (the scale goes 2^16, 2^17, ...): an ExPLoRA DINOv2 run
 * whose gradients stay finite equals the unscaled run bit for bit (every tensor of the checkpoint), the
 * metrics show the scale used at each step, and a stopped and resumed scaled run ends as the straight one
 * (the scale and its counters travel in the checkpoint). */
static void test_loss_scale_is_exact(void **state) {
    (void)state;
    need_data();
    const char *body =
        TINY_VIT EXPLORA_PEFT TINY_DINOV2 FMNIST_DATA
        "[optim]\nbatch = 8\nsteps = 4\nlr = 1e-3\nclip_grad = 3\n";
    const char *tags[3] = {"none", "dyn", "dyn-resumed"};
    static run_files r[3];
    char *out;
    for (int i = 0; i < 3; i++) write_run(&r[i], "lscale", tags[i], 9, body);
    const char *dyn = "--set optim.loss_scale=dynamic --set optim.loss_scale_growth_interval=1";
    RUN_EXPECT(0, &out, "pretrain '%s'", r[0].ini);
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' %s", r[1].ini, dyn);
    expect_in(out, "loss scaling: dynamic, from 65536");
    free(out);
    int na, nb;
    double *la = losses(r[0].dir, &na), *lb = losses(r[1].dir, &nb);
    assert_int_equal(na, 4);
    assert_int_equal(nb, 4);
    for (int i = 0; i < 4; i++)
        if (la[i] != lb[i]) fail_msg("step %d: loss %.9g unscaled, %.9g scaled", i + 1, la[i], lb[i]);
    free(la);
    free(lb);
    compare_prefix(r[0].ckpt, r[1].ckpt, "param.");
    compare_prefix(r[0].ckpt, r[1].ckpt, "optim.");
    compare_prefix(r[0].ckpt, r[1].ckpt, "objective.");
    /* the scale of each step, doubled after every finite one */
    char path[4200], line[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", r[1].dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    for (int i = 0; i < 4; i++) {
        assert_non_null(fgets(line, sizeof line, f));
        const char *p = strstr(line, "\"loss_scale\": ");
        assert_non_null(p);
        assert_true(strtod(p + 14, NULL) == ldexp(1.0, 16 + i));
        assert_non_null(strstr(line, "\"skipped\": 0"));
    }
    fclose(f);
    /* stopped after 2 steps and resumed */
    RUN_EXPECT(0, &out, "pretrain '%s' %s --set run.stop_at=2", r[2].ini, dyn);
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' %s --resume", r[2].ini, dyn);
    free(out);
    compare_checkpoints(r[1].ckpt, r[2].ckpt);
    ex_err err;
    ex_st_file *cf;
    EXT_OK(ex_st_open(&cf, r[2].ckpt, &err), &err);
    assert_string_equal(ex_st_metadata(cf, "loss_scale"), "0x1p+20"); /* 2^16 doubled after each of 4 steps */
    assert_string_equal(ex_st_metadata(cf, "adam_step"), "4");

    /* a checkpoint whose loss scale is not a positive number: --resume refuses it by name and writes nothing */
    static const char *const bad[] = {"nan", "-4", "0", "12abc", "inf"};
    for (size_t b = 0; b < sizeof bad / sizeof *bad; b++) {
        ex_st_writer *w;
        EXT_OK(ex_st_writer_new(&w, &err), &err);
        for (int i = 0; i < ex_st_count(cf); i++) {
            const ex_st_entry *e = ex_st_at(cf, i);
            EXT_OK(ex_st_writer_add(w, e->name, e->dtype, e->ndim, e->shape, ex_st_data(cf, e), &err), &err);
        }
        for (int i = 0; i < ex_st_metadata_count(cf); i++) {
            const char *k = ex_st_metadata_key_at(cf, i);
            EXT_OK(ex_st_writer_metadata(w, k, strcmp(k, "loss_scale") ? ex_st_metadata(cf, k) : bad[b], &err), &err);
        }
        run_files rb;
        write_run(&rb, "lscale-bad", bad[b], 9, body);
        RUN_EXPECT(0, &out, "pretrain '%s' %s --set run.stop_at=1", rb.ini, dyn); /* makes the run folder */
        free(out);
        EXT_OK(ex_st_writer_finish(w, rb.ckpt, &err), &err);
        ex_st_writer_free(w);
        struct stat before, after;
        assert_int_equal(stat(rb.ckpt, &before), 0);
        int rc = run(&out, "pretrain '%s' %s --resume", rb.ini, dyn);
        if (rc == 0) fail_msg("loss_scale = %s was accepted:\n%s", bad[b], out);
        expect_in(out, "loss_scale");
        expect_in(out, bad[b]);
        free(out);
        assert_int_equal(stat(rb.ckpt, &after), 0);
        assert_true(before.st_mtime == after.st_mtime && before.st_size == after.st_size);
    }
    ex_st_close(cf);
}

static void test_kill_9_leaves_a_valid_checkpoint(void **state) {
    (void)state;
    need_data();
    char ini[4096], dir[4096], ck[4200], cmd[16384], *out;
    ext_tmp_path(dir, sizeof dir, "run-kill");
    write_config(ini, sizeof ini, "kill.ini", dir, 100000);
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", dir);
    /* the first kill waits for the first checkpoint (a loaded machine starts slowly); the others land at
     * varied moments of a run that writes a checkpoint every step */
    const int delays_ms[5] = {150, 230, 310, 390, 470};
    int valid = 0;
    for (int k = 0; k < 5; k++) {
        snprintf(cmd, sizeof cmd,
                 "'%s' pretrain '%s' %s --set run.checkpoint_every=1 --set run.keep_last=3 --set run.log_every=1000 "
                 "> /dev/null 2>&1 & pid=$!; for i in $(seq 1200); do [ -f '%s' ] && break; sleep 0.05; done; "
                 "sleep 0.%03d; kill -9 $pid; wait $pid 2>/dev/null; exit 0",
                 ext_env("EXPLORA_BIN"), ini, k ? "--resume" : "", ck, delays_ms[k]);
        assert_int_equal(system(cmd), 0);
        ex_err err;
        ex_st_file *f;
        EXT_OK(ex_st_open(&f, ck, &err), &err); /* never half-written */
        assert_non_null(ex_st_metadata(f, "step"));
        ex_st_close(f);
        valid++;
    }
    assert_int_equal(valid, 5);
    /* the killed run resumes to a clean stop */
    RUN_EXPECT(0, &out, "pretrain '%s' --resume --set run.keep_last=3 --set run.checkpoint_every=1 --set run.stop_at=1", ini);
    free(out);
    /* keep_last = 3: at most three numbered checkpoints remain */
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | grep -c '^checkpoint-') -le 3 && test $(ls '%s' | grep -c '^checkpoint-') -ge 1 "
                              "&& ! ls '%s' | grep -q '\\.tmp\\.'", dir, dir, dir);
    assert_int_equal(system(cmd), 0);
}

static void test_non_finite_loss_stops_cleanly(void **state) {
    (void)state;
    char ini[4096], dir[4096], ck[4200], text[8192], *out;
    ext_tmp_path(dir, sizeof dir, "run-nan");
    snprintf(text, sizeof text,
             "[run]\nseed = 1\nout = %s\nlog_every = 1\n"
             "[backbone]\nname = vit\npatch = 2\ndim = 8\ndepth = 1\nheads = 2\nchannels = 1\npos_grid = 2\n"
             "pos_embed = sincos\nmask_token = off\nimage_size = 4\n"
             "[peft]\nstack = unfreeze\n[peft.unfreeze]\nall = true\n"
             "[objective]\nname = mae\nimage_size = 4\ndecoder_dim = 8\ndecoder_depth = 1\ndecoder_heads = 2\n"
             "crop_scale = 1.0, 1.0\n"
             "[data]\nname = abi-good\ncount = 8\nchannels = 1\n"
             "[transform]\nmean = 0.5\nstd = 0.5\n"
             "[optim]\nbatch = 4\nsteps = 2\n",
             dir);
    ext_tmp_path(ini, sizeof ini, "nan.ini");
    ext_write_file(ini, text, strlen(text));
    const char *abi = ext_env("EXPLORA_TEST_ABI_DIR");
    RUN_EXPECT(0, &out, "pretrain '%s' --plugin-path '%s'", ini, abi); /* clean data: a checkpoint */
    free(out);
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", dir);
    FILE *f = fopen(ck, "rb");
    assert_non_null(f);
    static char good[1 << 20], now[1 << 20];
    size_t good_len = fread(good, 1, sizeof good, f);
    fclose(f);
    RUN_EXPECT(2, &out, "pretrain '%s' --plugin-path '%s' --set data.poison=5 --set optim.steps=4", ini, abi);
    expect_in(out, "the loss is nan at step");
    expect_in(out, "last finite value");
    expect_in(out, "Hint:");
    free(out);
    f = fopen(ck, "rb");
    size_t now_len = fread(now, 1, sizeof now, f);
    fclose(f);
    assert_int_equal(now_len, good_len);
    assert_memory_equal(now, good, good_len);
}

static void test_dry_run_writes_nothing(void **state) {
    (void)state;
    need_data();
    char ini[4096], dir[4096], *out;
    ext_tmp_path(dir, sizeof dir, "run-dry");
    write_config(ini, sizeof ini, "dry.ini", dir, 4);
    RUN_EXPECT(0, &out, "pretrain '%s' --dry-run", ini);
    expect_in(out, "memory plan");
    expect_in(out, "trainable");
    expect_in(out, "largest activations: "); /* what grows with the batch, by name */
    expect_in(out, " MiB, ");
    /* the plan against the device's memory (the cpu backend's: the machine's RAM) */
    const char *mp = strstr(out, "memory plan ("), *tot = mp ? strstr(mp, "  total ") : NULL,
               *fit = strstr(out, "device memory: ");
    if (!tot || !fit) fail_msg("no plan total or device memory line in:\n%s", out);
    double total_mib = 0, dev_gib = 0, free_gib = 0, plan_gib = 0;
    assert_int_equal(sscanf(tot, "  total %lf", &total_mib), 1);
    assert_int_equal(sscanf(fit, "device memory: %lf GiB, %lf GiB free; the plans take %lf GiB", &dev_gib, &free_gib,
                            &plan_gib),
                     3);
    assert_true(dev_gib > 0.1 && free_gib > 0.0 && free_gib <= dev_gib);
    assert_true(fabs(plan_gib - total_mib / 1024.0) < 0.006);
    free(out);
    assert_int_equal(access(dir, F_OK), -1);
    /* a batch whose plan the machine cannot hold (here 2^20 images: hundreds of GiB): a warning that says what to
     * change, still before anything is allocated */
    RUN_EXPECT(0, &out, "pretrain '%s' --dry-run --set optim.batch=1048576", ini);
    const char *w = strstr(out, "warning: the plans take ");
    if (!w) fail_msg("no warning for a plan beyond the machine's memory:\n%s", out);
    assert_int_equal(sscanf(w, "warning: the plans take %lf GiB, more than the %lf GiB free", &plan_gib, &free_gib), 2);
    assert_true(plan_gib > free_gib && plan_gib > 100.0);
    expect_in(out, "allocation will fail. Lower [optim] batch, or set [backbone] recompute = true");
    free(out);
    assert_int_equal(access(dir, F_OK), -1);
}

/* A DINOv2 dry run also plans the EMA teacher (objective slot teacher_shape) and prints the total: the student's
 * printed plan total plus the teacher's, and the teacher's plan matches the one a real start prints. */
static void test_dry_run_plans_the_teacher(void **state) {
    (void)state;
    need_data();
    const char *body =
        TINY_VIT EXPLORA_PEFT TINY_DINOV2 FMNIST_DATA
        "[optim]\nbatch = 8\nsteps = 1\nlr = 1e-3\n";
    static run_files r[2];
    for (int i = 0; i < 2; i++) write_run(&r[i], "dryteacher", i ? "real" : "dry", 3, body);
    char *dry, *real;
    RUN_EXPECT(0, &dry, "pretrain '%s' --dry-run", r[0].ini);
    assert_int_equal(access(r[0].dir, F_OK), -1); /* still nothing written */
    const char *tl = strstr(dry, "planned memory in all: student ");
    if (!tl) fail_msg("no total line in:\n%s", dry);
    double ms = 0, mt = 0, mall = 0;
    assert_int_equal(sscanf(tl, "planned memory in all: student %lf + teacher %lf = %lf MiB", &ms, &mt, &mall), 3);
    assert_true(mt > 0.0 && ms > mt);
    assert_true(fabs(ms + mt - mall) < 0.015);
    const char *mp = strstr(dry, "memory plan (");
    assert_non_null(mp);
    const char *st = strstr(mp, "  total ");
    assert_true(st && st < tl);
    double printed = 0;
    assert_int_equal(sscanf(st, "  total %lf", &printed), 1);
    assert_true(fabs(printed - ms) < 0.006); /* the student's plan as printed above */
    const char *fit = strstr(tl, "the plans take "); /* both plans against the device's memory */
    double fit_gib = 0;
    assert_true(fit && sscanf(fit, "the plans take %lf GiB", &fit_gib) == 1);
    assert_true(fabs(fit_gib - mall / 1024.0) < 0.006);
    /* a real start plans the same teacher */
    RUN_EXPECT(0, &real, "pretrain '%s'", r[1].ini);
    const char *td = strstr(dry, "teacher ("), *tr = strstr(real, "teacher (");
    assert_true(td && tr);
    const char *ed = strstr(td, "planned memory in all"), *er = strstr(tr, "planned memory in all");
    assert_true(ed && er);
    assert_int_equal(ed - td, er - tr);
    assert_memory_equal(td, tr, (size_t)(ed - td));
    free(dry);
    free(real);
}

static float *read_f32(const char *path, const char *name, int64_t *n) {
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

/* Train ExPLoRA-style (last block unfrozen, LoRA elsewhere), export with the adapters merged in every
 * naming convention, load each export as a plain ViT: its features equal the unmerged trained model's. */
static void test_export_merges_and_round_trips(void **state) {
    (void)state;
    char dir[4096], ini[4096], text[8192], feat_run[4200], *out;
    const char *abi = ext_env("EXPLORA_TEST_ABI_DIR");
    const char *arch = "name = vit\npatch = 2\ndim = 8\ndepth = 3\nheads = 2\nchannels = 3\npos_grid = 2\n"
                       "pos_embed = sincos\nmask_token = off\nlayerscale = on\nlayerscale_init = 0.5\nimage_size = 4\n";
    ext_tmp_path(dir, sizeof dir, "run-export");
    snprintf(text, sizeof text,
             "[run]\nseed = 2\nout = %s\n[backbone]\n%s"
             "[peft]\nstack = unfreeze, lora\n[peft.unfreeze]\nblocks = -1\nnorms = true\ncls_token = true\n"
             "[peft.lora]\nrank = 2\nalpha = 4\ntargets = q, v\n"
             "[objective]\nname = mae\nimage_size = 4\ndecoder_dim = 8\ndecoder_depth = 1\ndecoder_heads = 2\n"
             "[data]\nname = abi-good\ncount = 16\nchannels = 3\n[transform]\nmean = 0.5, 0.5, 0.5\nstd = 0.5, 0.5, 0.5\n"
             "[optim]\nbatch = 4\nsteps = 6\nlr = 0.05\nweight_decay = 0\n",
             dir, arch);
    ext_tmp_path(ini, sizeof ini, "export-run.ini");
    ext_write_file(ini, text, strlen(text));
    RUN_EXPECT(0, &out, "pretrain '%s' --plugin-path '%s'", ini, abi);
    free(out);
    char ckpt[4200];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", dir);
    snprintf(feat_run, sizeof feat_run, "%s/features-unmerged.safetensors", dir);
    RUN_EXPECT(0, &out, "embed '%s' --plugin-path '%s' --checkpoint '%s' --out '%s' --blocks 0,1", ini, abi, ckpt, feat_run);
    free(out);
    int64_t n;
    float *ref = read_f32(feat_run, "cls", &n);
    float *ref_b0 = read_f32(feat_run, "block.0", &n);
    const char *formats[] = {"dinov2", "timm", "hf", "mae"};
    for (int k = 0; k < 4; k++) {
        char exp[4200], plain_ini[4096], feat[4200];
        snprintf(exp, sizeof exp, "%s/export-%s.safetensors", dir, formats[k]);
        RUN_EXPECT(0, &out, "export '%s' --plugin-path '%s' --out '%s' --format %s", ini, abi, exp, formats[k]);
        expect_in(out, "loaded");
        free(out);
        snprintf(text, sizeof text,
                 "[backbone]\n%sweights = %s\nformat = %s\n[data]\nname = abi-good\ncount = 16\nchannels = 3\n"
                 "[transform]\nmean = 0.5, 0.5, 0.5\nstd = 0.5, 0.5, 0.5\n",
                 arch, exp, formats[k]);
        char name[64];
        snprintf(name, sizeof name, "plain-%s.ini", formats[k]);
        ext_tmp_path(plain_ini, sizeof plain_ini, name);
        ext_write_file(plain_ini, text, strlen(text));
        snprintf(feat, sizeof feat, "%s/features-%s.safetensors", dir, formats[k]);
        RUN_EXPECT(0, &out, "embed '%s' --plugin-path '%s' --out '%s' --blocks 0,1", plain_ini, abi, feat);
        free(out);
        int64_t m;
        float *got = read_f32(feat, "cls", &m), *got_b0 = read_f32(feat, "block.0", &m);
        assert_int_equal(m, n);
        ext_assert_close(got, ref, (size_t)n, 1e-5, 1e-4, formats[k]);
        ext_assert_close(got_b0, ref_b0, (size_t)n, 1e-5, 1e-4, formats[k]);
        free(got);
        free(got_b0);
    }
    /* the adapters really trained (B left zero would make the merge trivial) */
    int64_t nb;
    float *B = read_f32(ckpt, "param.blocks.0.attn.qkv.lora_q.B", &nb);
    double maxb = 0;
    for (int64_t i = 0; i < nb; i++) maxb = fmax(maxb, fabs(B[i]));
    assert_true(maxb > 1e-3);
    free(B);
    free(ref);
    free(ref_b0);
}

/* pretrain -> export -> linprobe -> finetune -> compare on a tiny model and real images; the table holds every
 * run's numbers. */
static void test_pipeline_end_to_end(void **state) {
    (void)state;
    need_data();
    char a_ini[4096], b_ini[4096], dir_a[4096], dir_b[4096], cmp_dir[4096], *out;
    static char text[32768];
    ext_tmp_path(dir_a, sizeof dir_a, "pipe-a");
    ext_tmp_path(dir_b, sizeof dir_b, "pipe-b");
    ext_tmp_path(cmp_dir, sizeof cmp_dir, "pipe-compare");
    mkdir(cmp_dir, 0755);
    write_config(a_ini, sizeof a_ini, "pipe-a.ini", dir_a, 6);
    RUN_EXPECT(0, &out, "pretrain '%s'", a_ini);
    free(out);
    char exp[4200], ck[4200];
    snprintf(exp, sizeof exp, "%s/model.safetensors", dir_a);
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", dir_a);
    RUN_EXPECT(0, &out, "export '%s' --out '%s' --format mae", a_ini, exp);
    free(out);
    /* the data needs labels for the probe */
#define PROBE_ARGS                                                                                                    \
    "--set data.labels=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz "                                  \
    "--set eval_data.name=idx --set eval_data.images=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz "    \
    "--set eval_data.labels=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz "                             \
    "--set linprobe.limit=300 --set linprobe.eval_limit=200 --set linprobe.epochs=2 "                                 \
    "--set 'linprobe.lrs=0.01, 0.1' --set 'linprobe.blocks=1, 2'"
    RUN_EXPECT(0, &out, "linprobe '%s' --checkpoint '%s' " PROBE_ARGS, a_ini, ck);
    expect_in(out, "best top-1");
    if (strstr(out, "(cached)")) fail_msg("a first linprobe found cached features:\n%s", out);
    free(out);
    /* the feature cache: reused when only the probe's training changes, not when the preprocessing does */
    RUN_EXPECT(0, &out, "linprobe '%s' --checkpoint '%s' " PROBE_ARGS " --set linprobe.epochs=1", a_ini, ck);
    expect_in(out, "(cached)");
    free(out);
    RUN_EXPECT(0, &out, "linprobe '%s' --checkpoint '%s' " PROBE_ARGS " --set transform.mean=0.3", a_ini, ck);
    if (strstr(out, "(cached)")) fail_msg("features cached under another [transform] mean were reused:\n%s", out);
    free(out);
#undef PROBE_ARGS
    /* run a's exported model (MAE names; the %s is its path) under LoRA rank 2: the second run and the
     * fine-tuning both start from it */
#define EXPORTED_LORA_BACKBONE                                                                            \
    "[backbone]\nname = vit\npatch = 4\ndim = 32\ndepth = 2\nheads = 2\nchannels = 1\npos_grid = 7\n"         \
    "pos_embed = sincos\nmask_token = off\nlayerscale = off\nimage_size = 28\nweights = %s\nformat = mae\n"    \
    "[peft]\nstack = lora\n[peft.lora]\nrank = 2\n"
    /* a second run from the exported model, with a LoRA-only stack, no probe: its row shows "-" */
    snprintf(text, sizeof text,
             "[run]\nseed = 3\nout = %s\n" EXPORTED_LORA_BACKBONE
             "[objective]\nname = mae\nimage_size = 28\ndecoder_dim = 16\ndecoder_depth = 1\ndecoder_heads = 2\n"
             "weights = %s\n[data]\nname = idx\nimages = %s\nlimit = 256\n[transform]\nmean = 0.286\nstd = 0.353\n"
             "[optim]\nbatch = 16\nsteps = 3\n",
             dir_b, exp, ck, FMNIST);
    ext_tmp_path(b_ini, sizeof b_ini, "pipe-b.ini");
    ext_write_file(b_ini, text, strlen(text));
    RUN_EXPECT(0, &out, "pretrain '%s'", b_ini);
    free(out);
    /* fine-tuning of run a's exported model, written where compare looks for it (<run a>/finetune) */
    char ft_ini[4096], ft_dir[4200], md[4400];
    snprintf(ft_dir, sizeof ft_dir, "%s/finetune", dir_a);
    snprintf(text, sizeof text,
             "[run]\nseed = 3\nout = %s\n" EXPORTED_LORA_BACKBONE "targets = q, v\n"
             "[objective]\nname = classify\nclasses = 10\nimage_size = 28\n"
             "[data]\nname = idx\nimages = %s\nlabels = /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz\n"
             "limit = 256\n[eval_data]\nname = idx\nimages = %s\n"
             "labels = /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz\nlimit = 128\n"
             "[transform]\nresize = 28\nmean = 0.286\nstd = 0.353\n[optim]\nbatch = 16\nsteps = 4\nlr = 1e-3\n",
             ft_dir, exp, FMNIST, FMNIST);
    ext_tmp_path(ft_ini, sizeof ft_ini, "pipe-ft.ini");
    ext_write_file(ft_ini, text, strlen(text));
    RUN_EXPECT(0, &out, "finetune '%s'", ft_ini);
    free(out);
#undef EXPORTED_LORA_BACKBONE
    char *ft_sum = NULL;
    snprintf(md, sizeof md, "%s/summary.json", ft_dir);
    ex_err err;
    EXT_OK(ex_read_file(md, &ft_sum, NULL, &err), &err);
    const char *k = strstr(ft_sum, "\"finetune_top1\": ");
    assert_non_null(k);
    const double ft_top1 = strtod(k + 16, NULL);
    free(ft_sum);
    RUN_EXPECT(0, &out, "compare '%s' '%s' --out '%s'", a_ini, b_ini, cmp_dir);
    free(out);
    char *table = NULL;
    snprintf(md, sizeof md, "%s/compare.md", cmp_dir);
    EXT_OK(ex_read_file(md, &table, NULL, &err), &err);
    expect_in(table, "-pipe-a | unfreeze | ");
    expect_in(table, "-pipe-b | lora | ");
    const char *row_a = strstr(table, "-pipe-a |"), *row_b = strstr(table, "-pipe-b |");
    assert_non_null(row_a);
    assert_non_null(row_b);
    /* run a's row ends with its fine-tune's top-1 and time; run b has neither a probe nor a fine-tune */
    char want[64];
    snprintf(want, sizeof want, "| %.2f | ", ft_top1);
    const char *eol = strchr(row_a, '\n');
    const char *hit = strstr(row_a, want);
    if (!hit || hit > eol) fail_msg("run a's row lacks its fine-tuning top-1 '%s':\n%s", want, table);
    assert_non_null(strstr(row_b, " - | - | - |\n"));
    free(table);
}

/* [run] skip_bad: a corrupt image in an imagefolder tree stops a run by default (naming the file) and is
 * stepped over, counted per epoch and in summary.json, with skip_bad = true. */
static void test_skip_bad_images(void **state) {
    (void)state;
    char root[4096], path[8400], dir[4096], ini[4096], *out;
    ext_tmp_path(root, sizeof root, "skipbad-data");
    ext_tmp_path(dir, sizeof dir, "skipbad-run");
    snprintf(path, sizeof path, "rm -rf '%s' '%s'", root, dir);
    assert_int_equal(system(path), 0);
    mkdir(root, 0755);
    snprintf(path, sizeof path, "%s/a", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/b", root);
    mkdir(path, 0755);
    for (int i = 0; i < 6; i++) {
        char src[4200], *data = NULL;
        size_t len = 0;
        ex_err err;
        snprintf(src, sizeof src, "%s/images/%s", ext_env("EXPLORA_TEST_DATA_DIR"), i % 2 ? "rgb8.png" : "rgb420.jpg");
        EXT_OK(ex_read_file(src, &data, &len, &err), &err);
        snprintf(path, sizeof path, "%s/a/%d.%s", root, i, i % 2 ? "png" : "jpg");
        ext_write_file(path, data, len);
        free(data);
    }
    snprintf(path, sizeof path, "%s/b/broken.png", root);
    ext_write_file(path, "\x89PNG\r\n\x1a\n truncated", 18);
    char text[16384];
    snprintf(text, sizeof text,
             "[run]\nseed = 3\nout = %s\nlog_every = 2\n"
             "[backend]\nname = cpu\n"
             "[backbone]\nname = vit\npatch = 4\ndim = 16\ndepth = 1\nheads = 2\nchannels = 3\npos_grid = 4\n"
             "pos_embed = sincos\nmask_token = off\nlayerscale = off\nimage_size = 16\n"
             "[peft]\nstack = unfreeze\n[peft.unfreeze]\nall = true\n"
             "[objective]\nname = mae\nimage_size = 16\ndecoder_dim = 8\ndecoder_depth = 1\ndecoder_heads = 2\n"
             "[data]\nname = imagefolder\nroot = %s\n"
             "[optim]\nbatch = 4\nsteps = 6\nlr = 1e-3\n",
             dir, root);
    ext_tmp_path(ini, sizeof ini, "skipbad.ini");
    ext_write_file(ini, text, strlen(text));
    RUN_EXPECT(1, &out, "pretrain '%s'", ini);
    expect_in(out, "broken.png");
    free(out);
    RUN_EXPECT(0, &out, "pretrain '%s' --set run.skip_bad=true", ini);
    expect_in(out, "epoch 0 finished: ");
    expect_in(out, "unreadable samples replaced since the last report");
    expect_in(out, "broken.png");
    free(out);
    char *summary = NULL;
    ex_err err;
    snprintf(path, sizeof path, "%s/summary.json", dir);
    EXT_OK(ex_read_file(path, &summary, NULL, &err), &err);
    const char *k = strstr(summary, "\"skipped_samples\": ");
    if (!k) fail_msg("summary.json lacks skipped_samples: %s", summary);
    const long skipped = strtol(k + 19, NULL, 10);
    assert_true(skipped >= 3 && skipped <= 4); /* 24 images: epochs 0-2 (7 each) and 3 of epoch 3 */
    free(summary);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mae_pretraining_lowers_the_loss),
        cmocka_unit_test(test_resume_is_bit_identical),
        cmocka_unit_test(test_profile_step_changes_nothing),
        cmocka_unit_test(test_lora_dropout_resume_is_bit_identical),
        cmocka_unit_test(test_dinov2_resume_is_bit_identical),
        cmocka_unit_test(test_frozen_bf16_equals_rounded_fp32),
        cmocka_unit_test(test_bf16_activations_train),
        cmocka_unit_test(test_recompute_blocks_train_identically),
        cmocka_unit_test(test_loss_scale_is_exact),
        cmocka_unit_test(test_kill_9_leaves_a_valid_checkpoint),
        cmocka_unit_test(test_non_finite_loss_stops_cleanly),
        cmocka_unit_test(test_dry_run_writes_nothing),
        cmocka_unit_test(test_dry_run_plans_the_teacher),
        cmocka_unit_test(test_export_merges_and_round_trips),
        cmocka_unit_test(test_pipeline_end_to_end),
        cmocka_unit_test(test_skip_bad_images),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
