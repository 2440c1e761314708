/*
 * tests/test_finetune.c — `explora finetune`, `eval` and `knn` end to end on
 * real data (Fashion-MNIST from Debian's dataset-fashion-mnist; skipped when
 * absent), with a tiny ViT (patch 4, dim 32, depth 2, 28x28 grey) initialised
 * from the run's seed:
 *   - LoRA r8 on q, v + the classify head (pool avg), 100 steps of batch 32
 *     (lr 3e-2) on 640 training images: the evaluation on 300 test images
 *     (Resize 32 + CenterCrop 28) is above chance (> 30% top-1 on 10 classes;
 *     37.3% when written — the randomly initialised frozen backbone makes it
 *     slow; full fine-tuning reaches 47%), top-5 >=
 *     top-1, eval.json and summary.json's finetune_top1 agree, compare shows it;
 *   - `explora eval --checkpoint` of that run reproduces its numbers exactly;
 *   - a config whose objective is not classify is refused;
 *   - `explora knn` on the same data reports top-1 per k into knn.json.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "explora/fileio.h"
#include "test_support.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

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

#define RUN_EXPECT(rc, out, ...)                                                                         \
    do {                                                                                                 \
        int run__rc = run(out, __VA_ARGS__);                                                             \
        if (run__rc != (rc)) fail_msg("exit code %d (expected %d); output:\n%s", run__rc, (rc), *(out)); \
    } while (0)

static void need_data(void) {
    if (access(FMNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0 ||
        access(FMNIST_DIR "/t10k-images-idx3-ubyte.gz", R_OK) != 0) {
        print_message("Fashion-MNIST not installed (package dataset-fashion-mnist); skipping\n");
        skip();
    }
}

__attribute__((noinline)) static double json_number(const char *text, const char *key) {
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(text, pat);
    if (!p) fail_msg("no \"%s\" in %s", key, text);
    const size_t off = (size_t)(p - text) + strlen(pat);
    return strtod(text + off, NULL);
}

static char *read_text(const char *dir, const char *name) {
    char path[8400], *text = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ex_err err;
    EXT_OK(ex_read_file(path, &text, NULL, &err), &err);
    return text;
}

static void write_config(char *ini, size_t cap, const char *dir) {
    char text[8192];
    snprintf(text, sizeof text,
             "[run]\nseed = 5\nout = %s\nlog_every = 10\n"
             "[backbone]\nname = vit\npatch = 4\ndim = 32\ndepth = 2\nheads = 2\nchannels = 1\npos_grid = 7\n"
             "pos_embed = sincos\nmask_token = off\nlayerscale = off\nimage_size = 28\n"
             "[peft]\nstack = lora\n[peft.lora]\nrank = 8\ntargets = q, v\n"
             "[objective]\nname = classify\nclasses = 10\nimage_size = 28\nscale = 0.8, 1.0\n"
             "[data]\nname = idx\nimages = " FMNIST_DIR "/train-images-idx3-ubyte.gz\n"
             "labels = " FMNIST_DIR "/train-labels-idx1-ubyte.gz\nlimit = 640\n"
             "[eval_data]\nname = idx\nimages = " FMNIST_DIR "/t10k-images-idx3-ubyte.gz\n"
             "labels = " FMNIST_DIR "/t10k-labels-idx1-ubyte.gz\nlimit = 300\n"
             "[transform]\nmean = 0.286\nstd = 0.353\nresize = 32\n"
             "[optim]\nbatch = 32\nsteps = 100\nlr = 3e-2\nmin_lr = 1e-5\nwarmup_steps = 4\nweight_decay = 0\n",
             dir);
    ext_tmp_path(ini, cap, "finetune.ini");
    ext_write_file(ini, text, strlen(text));
}

static void test_finetune_eval_knn(void **state) {
    (void)state;
    need_data();
    char ini[4096], dir[4096], ck[4200], evdir[4200], *out;
    ext_tmp_path(dir, sizeof dir, "run-finetune");
    write_config(ini, sizeof ini, dir);
    RUN_EXPECT(0, &out, "finetune '%s' --set run.eval_every=40", ini);
    if (!strstr(out, "evaluation on 300 images")) fail_msg("no evaluation line:\n%s", out);
    if (!strstr(out, "eval at step 40: top-1") || !strstr(out, "eval at step 80: top-1")) fail_msg("no evaluations at steps 40, 80:\n%s", out);
    free(out);
    char *ev = read_text(dir, "eval.json"), *sum = read_text(dir, "summary.json");
    const double top1 = json_number(ev, "top1"), top5 = json_number(ev, "top5"), f1 = json_number(ev, "macro_f1");
    print_message("finetune: top-1 %.2f%%, top-5 %.2f%%, macro-F1 %.2f%%\n", top1, top5, f1);
    assert_true(top1 > 30.0); /* chance: 10% */
    assert_true(top5 >= top1 && top5 <= 100.0);
    assert_true(f1 > 0.0 && f1 <= 100.0);
    assert_true(fabs(json_number(sum, "finetune_top1") - top1) < 1e-3);
    assert_true(json_number(ev, "samples") == 300);
    /* three evaluations (steps 40, 80 and the final 100); the best is their maximum */
    char *evals = read_text(dir, "evals.jsonl");
    double best = -1, best_step = -1;
    int lines = 0;
    for (char *l = evals; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const double st = json_number(l, "step"), v = json_number(l, "top1");
        if (v > best) best = v, best_step = st;
        lines++;
    }
    assert_int_equal(lines, 3);
    assert_true(strstr(evals, "\"step\": 40,") && strstr(evals, "\"step\": 80,") && strstr(evals, "\"step\": 100,"));
    assert_true(best >= top1);
    assert_true(fabs(json_number(ev, "best_top1") - best) < 1e-3);
    assert_true(json_number(ev, "best_step") == best_step);
    assert_true(fabs(json_number(sum, "finetune_best_top1") - best) < 1e-3);
    free(evals);
    /* metrics carry the batch accuracy next to the loss */
    char *metrics = read_text(dir, "metrics.jsonl");
    assert_non_null(strstr(metrics, "\"ce\": "));
    assert_non_null(strstr(metrics, "\"train_acc\": "));
    free(metrics);

    /* eval --checkpoint reproduces the run's own numbers */
    snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", dir);
    snprintf(evdir, sizeof evdir, "%s/re-eval", dir);
    RUN_EXPECT(0, &out, "eval '%s' --checkpoint '%s' --out '%s'", ini, ck, evdir);
    free(out);
    char *ev2 = read_text(evdir, "eval.json");
    static const char *const same[] = {"top1", "top5", "macro_f1", "samples"};
    for (int i = 0; i < 4; i++)
        if (json_number(ev, same[i]) != json_number(ev2, same[i])) fail_msg("eval differs from the run's evaluation:\n%s\n%s", ev, ev2);
    free(ev2);

    /* compare shows the fine-tuning column */
    RUN_EXPECT(0, &out, "compare '%s' --out '%s'", ini, dir);
    free(out);
    char *table = read_text(dir, "compare.md");
    assert_non_null(strstr(table, "fine-tuning top-1"));
    char want[64];
    snprintf(want, sizeof want, "| %.2f |", top1);
    if (!strstr(table, want)) fail_msg("compare.md lacks '%s':\n%s", want, table);
    free(table);

    /* another objective is refused */
    RUN_EXPECT(2, &out, "finetune '%s' --set objective.name=mae", ini);
    assert_non_null(strstr(out, "classify"));
    free(out);
    RUN_EXPECT(2, &out, "eval '%s'", ini); /* no --checkpoint */
    free(out);

    /* kNN on the same (fine-tuned) backbone: one top-1 per k */
    RUN_EXPECT(0, &out, "knn '%s' --checkpoint '%s' --set 'knn.k=10, 20' --set knn.limit=500 --set knn.eval_limit=200", ini,
               ck);
    free(out);
    char *kj = read_text(dir, "knn.json");
    const double k10 = json_number(kj, "10"), k20 = json_number(kj, "20");
    print_message("kNN: k=10 %.2f%%, k=20 %.2f%%\n", k10, k20);
    assert_true(k10 > 20.0 && k20 > 20.0); /* 33.5% each when written; chance 10% */
    assert_true(json_number(kj, "eval") == 200);
    free(kj);
    free(ev);
    free(sum);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_finetune_eval_knn)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
