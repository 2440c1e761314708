/*
 * core/cli/cli_demo.c — `explora demo [DIR]`: the ExPLoRA pipeline in
 * miniature, end to end, from the demo configs in DIR (default configs/demo,
 * run from the repository root):
 *
 *   1. check quickstart.ini: the D-[L]-r64 plan of DINOv2 ViT-B/14
 *   2. source.ini: a small ViT pre-trained with MAE (the source model),
 *      exported in MAE naming and linear-probed
 *   3. explora.ini, lora_only.ini, unfreeze_only.ini: extended pre-training of
 *      that source with three PEFT policies at the same budget, each probed
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

int cli_demo(const cli_args *a) {
    if (a->npositional > 1) {
        fprintf(stderr, "explora: error: usage: explora demo [DIR]   (DIR: the demo configs, default configs/demo)\n");
        return CLI_USAGE;
    }
    const char *dir = a->npositional ? a->positional[0] : "configs/demo";
    static const char *const names[] = {"quickstart", "source", "explora", "lora_only", "unfreeze_only"};
    char cfg[5][4200], ckpt[5][4200];
    for (int i = 0; i < 5; i++) {
        snprintf(cfg[i], sizeof cfg[i], "%s/%s.ini", dir, names[i]);
        /* the demo configs write to ../../runs/demo/<name> (relative to themselves) */
        snprintf(ckpt[i], sizeof ckpt[i], "%s/../../runs/demo/%s/checkpoint.safetensors", dir, names[i]);
        if (access(cfg[i], R_OK) != 0) {
            fprintf(stderr,
                    "explora: error: the demo config '%s' is missing. Hint: run `explora demo` from the repository "
                    "root, or pass the folder that holds the demo configs (configs/demo).\n",
                    cfg[i]);
            return CLI_USAGE;
        }
    }
    char runs[4200], source_export[4300], analyze_out[4300], explora_run[4300];
    snprintf(runs, sizeof runs, "%s/../../runs/demo", dir);
    snprintf(source_export, sizeof source_export, "%s/source.safetensors", runs);
    snprintf(analyze_out, sizeof analyze_out, "%s/analyze", runs);
    snprintf(explora_run, sizeof explora_run, "%s/explora", runs);

    printf("\n=== 1. explora check %s (ExPLoRA D-[L]-r64 on DINOv2 ViT-B/14)\n", cfg[0]);
    STEP(cli_check, a, (const char *[]){cfg[0]}, 1, NULL, NULL, NULL);
    printf("\n=== 2. source model: MAE from scratch on Fashion-MNIST\n");
    STEP(cli_pretrain, a, (const char *[]){cfg[1]}, 1, NULL, NULL, NULL);
    STEP(cli_export, a, (const char *[]){cfg[1]}, 1, source_export, NULL, "mae");
    STEP(cli_linprobe, a, (const char *[]){cfg[1]}, 1, NULL, ckpt[1], NULL);
    for (int v = 2; v < 5; v++) {
        printf("\n=== 3. extended pre-training: %s\n", names[v]);
        STEP(cli_pretrain, a, (const char *[]){cfg[v]}, 1, NULL, NULL, NULL);
        STEP(cli_linprobe, a, (const char *[]){cfg[v]}, 1, NULL, ckpt[v], NULL);
    }
    STEP(cli_plot, a, (const char *[]){explora_run}, 1, NULL, NULL, NULL);
    printf("\n=== 4. comparison\n");
    STEP(cli_compare, a, (const char *[]){cfg[1], cfg[2], cfg[3], cfg[4]}, 4, runs, NULL, NULL);
    printf("\n=== 5. per-block analysis of the source and ExPLoRA models\n");
    STEP(cli_analyze, a, (const char *[]){cfg[1], cfg[2]}, 2, analyze_out, NULL, NULL);

    char table[4300];
    snprintf(table, sizeof table, "%s/compare.md", runs);
    FILE *f = fopen(table, "a+");
    if (!f) {
        fprintf(stderr, "explora: error: cannot open '%s' to print it.\n", table);
        return CLI_FAILED;
    }
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
