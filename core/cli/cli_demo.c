/*
 * core/cli/cli_demo.c — `explora demo [DIR]`: ExPLoRA in miniature, end to
 * end, from the demo configs in DIR (default configs/demo, run from the
 * repository root). The source domain is Fashion-MNIST as stored; the target
 * domain is the same kind of images re-captured by a simulated low-light
 * camera (configs/demo/common.ini, docs/DOMAIN_SHIFT.md).
 *
 *   1. check quickstart.ini: the D-[L]-r64 plan of DINOv2 ViT-B/14
 *   2. source.ini: the shipped source model (a small DINOv2 ViT pre-trained by
 *      explora on the source domain) linear-probed and LoRA-fine-tuned on the
 *      target domain as it is
 *   3. explora.ini, lora_only.ini, unfreeze_only.ini: extended DINOv2
 *      pre-training of that model on the target images with three PEFT
 *      policies at the same budget; each is exported (adapters merged),
 *      linear-probed, and fine-tuned with finetune.ini into <run>/finetune
 *   4. compare (runs/demo/compare.md), the ExPLoRA run's curves, and the
 *      per-block analysis of the source and ExPLoRA models
 *
 * Each step is the verb a user would run by hand, run in a child process of
 * its own (fork), so that every run's time and peak memory in the compare
 * table are its own; the first failure stops the demo with that verb's exit
 * code.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

typedef int (*verb_fn)(const cli_args *);

/* Run one verb on `npos` positional arguments, with --out / --checkpoint / --format when given. */
static int step(verb_fn fn, const cli_args *base, const char *const *pos, int npos, const char *out,
                const char *checkpoint, const char *format) {
    cli_args b = *base;
    b.copy = NULL; /* DINOv2 runs are evaluated through their EMA teacher (auto) */
    b.npositional = npos;
    for (int i = 0; i < npos; i++) b.positional[i] = pos[i];
    b.out = out;
    b.checkpoint = checkpoint;
    b.format = format;
    b.dry_run = b.resume = 0;
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0) {
        perror("explora: error: demo: fork");
        return CLI_FAILED;
    }
    if (pid == 0) {
        const int rc = fn(&b);
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("explora: error: demo: waitpid");
            return CLI_FAILED;
        }
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    fprintf(stderr, "explora: error: demo: step '%s' ended by signal %d.\n", npos ? pos[0] : "?",
            WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    return CLI_FAILED;
}

#define STEP(...)                                 \
    do {                                          \
        const int step__rc = step(__VA_ARGS__);   \
        if (step__rc != CLI_OK) return step__rc;  \
    } while (0)

/* The fine-tuning of one model: finetune.ini with [backbone] weights = `weights` (NULL: the config's, the
 * shipped source) and [run] out = <run>/finetune, where compare finds it. */
static int finetune_step(const cli_args *a, const char *cfg, const char *weights, const char *run_dir) {
    char set_w[4400], set_o[4400]; /* live until step() has waited for the child */
    cli_args b = *a;
    if (b.session.nsets + 2 > EX_SESSION_MAX_SETS) {
        fprintf(stderr, "explora: error: demo: too many --set options to add the fine-tuning's own.\n");
        return CLI_USAGE;
    }
    if (weights) {
        snprintf(set_w, sizeof set_w, "backbone.weights=%s", weights);
        b.session.sets[b.session.nsets++] = set_w;
    }
    snprintf(set_o, sizeof set_o, "run.out=%s/finetune", run_dir);
    b.session.sets[b.session.nsets++] = set_o;
    return step(cli_finetune, &b, (const char *[]){cfg}, 1, NULL, NULL, NULL);
}

#define FT_STEP(...)                                     \
    do {                                                 \
        const int step__rc = finetune_step(__VA_ARGS__); \
        if (step__rc != CLI_OK) return step__rc;         \
    } while (0)

int cli_demo(const cli_args *a) {
    if (a->npositional > 1) {
        fprintf(stderr, "explora: error: usage: explora demo [DIR]   (DIR: the demo configs, default configs/demo)\n");
        return CLI_USAGE;
    }
    const char *dir = a->npositional ? a->positional[0] : "configs/demo";
    enum { QUICKSTART, SOURCE, EXPLORA, LORA_ONLY, UNFREEZE_ONLY, FINETUNE, NCFG };
    static const char *const names[NCFG] = {"quickstart", "source", "explora", "lora_only", "unfreeze_only", "finetune"};
    char cfg[NCFG][4200], run[NCFG][4300], ckpt[NCFG][4400], model[NCFG][4400];
    for (int i = 0; i < NCFG; i++) {
        snprintf(cfg[i], sizeof cfg[i], "%s/%s.ini", dir, names[i]);
        /* the demo configs write to ../../runs/demo/<name> (relative to themselves) */
        snprintf(run[i], sizeof run[i], "%s/../../runs/demo/%s", dir, names[i]);
        snprintf(ckpt[i], sizeof ckpt[i], "%.4300s/checkpoint.safetensors", run[i]);
        snprintf(model[i], sizeof model[i], "%s/../../runs/demo/%s.safetensors", dir, names[i]);
        if (access(cfg[i], R_OK) != 0) {
            fprintf(stderr,
                    "explora: error: the demo config '%s' is missing. Hint: run `explora demo` from the repository "
                    "root, or pass the folder that holds the demo configs (configs/demo).\n",
                    cfg[i]);
            return CLI_USAGE;
        }
    }
    char runs[4200], analyze_out[4300], shipped[4300];
    snprintf(runs, sizeof runs, "%s/../../runs/demo", dir);
    snprintf(analyze_out, sizeof analyze_out, "%s/analyze", runs);
    snprintf(shipped, sizeof shipped, "%s/source-fashion-mnist.safetensors", dir);
    if (access(shipped, R_OK) != 0) {
        fprintf(stderr,
                "explora: error: the demo's source model '%s' is missing. It ships with the repository; "
                "docs/DOMAIN_SHIFT.md says how to rebuild it.\n",
                shipped);
        return CLI_USAGE;
    }

    printf("\n=== 1. explora check %s (ExPLoRA D-[L]-r64 on DINOv2 ViT-B/14)\n", cfg[QUICKSTART]);
    STEP(cli_check, a, (const char *[]){cfg[QUICKSTART]}, 1, NULL, NULL, NULL);
    printf("\n=== 2. the source model (%s) on the target domain, as it is\n", shipped);
    STEP(cli_linprobe, a, (const char *[]){cfg[SOURCE]}, 1, NULL, NULL, NULL);
    FT_STEP(a, cfg[FINETUNE], NULL, run[SOURCE]);
    for (int v = EXPLORA; v <= UNFREEZE_ONLY; v++) {
        printf("\n=== 3. extended pre-training on the target domain: %s\n", names[v]);
        STEP(cli_pretrain, a, (const char *[]){cfg[v]}, 1, NULL, NULL, NULL);
        STEP(cli_export, a, (const char *[]){cfg[v]}, 1, model[v], NULL, NULL);
        STEP(cli_linprobe, a, (const char *[]){cfg[v]}, 1, NULL, ckpt[v], NULL);
        FT_STEP(a, cfg[FINETUNE], model[v], run[v]);
    }
    STEP(cli_plot, a, (const char *[]){run[EXPLORA]}, 1, NULL, NULL, NULL);
    printf("\n=== 4. comparison\n");
    STEP(cli_compare, a, (const char *[]){cfg[SOURCE], cfg[EXPLORA], cfg[LORA_ONLY], cfg[UNFREEZE_ONLY]}, 4, runs,
         NULL, NULL);
    printf("\n=== 5. per-block analysis of the source and ExPLoRA models\n");
    STEP(cli_analyze, a, (const char *[]){cfg[SOURCE], cfg[EXPLORA]}, 2, analyze_out, NULL, NULL);

    char table[4300];
    snprintf(table, sizeof table, "%s/compare.md", runs);
    FILE *f = fopen(table, "a+");
    if (!f) {
        fprintf(stderr, "explora: error: cannot open '%s' to print it.\n", table);
        return CLI_FAILED;
    }
    fprintf(f, "\nSource domain: Fashion-MNIST as stored. Target domain: the same images through a simulated "
               "low-light camera (configs/demo/common.ini). Linear probe: 10000 labelled target images, 5000 test "
               "images; fine-tuning: LoRA r8 on q, v for 300 steps on the same 10000 images.\n");
    fprintf(f, "\nPer-block analysis of the source and ExPLoRA models (spectra, position and class probes, attention "
               "maps): [analyze/analyze.md](analyze/analyze.md)\n");
    fflush(f);
    rewind(f);
    printf("\n");
    char line[4096];
    while (fgets(line, sizeof line, f)) fputs(line, stdout);
    fclose(f);
    return CLI_OK;
}
