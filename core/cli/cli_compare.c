/*
 * core/cli/cli_compare.c — `explora compare A.ini B.ini ... [--out DIR]`:
 * one row per run configuration, collected from its run directory ([run] out):
 * the PEFT stack and trainable parameters of its extended pre-training
 * (summary.json, written by pretrain), pre-training time and peak memory, the
 * final SSL loss, the best linear-probe top-1 (linprobe.json), and the top-1
 * and time of its fine-tuning. The fine-tuning of a run is looked for in the
 * run's own summary.json (a config that is itself a `finetune` run) or in
 * <run>/finetune/summary.json (a fine-tune of that run's model, as `explora
 * demo` writes it). Written as Markdown and CSV (compare.md, compare.csv in
 * --out, default the current directory) and printed. A run that has not
 * produced a file shows "-".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "explora/fileio.h"

/* The number after "key": in a small JSON object (our own files); NAN when absent. */
static double json_number(const char *text, const char *key) {
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = text ? strstr(text, pat) : NULL;
    return p ? strtod(p + strlen(pat), NULL) : __builtin_nan("");
}

typedef struct row {
    char name[256], stack[256];
    double trainable, seconds, peak, loss, top1, ft1, ftsec;
} row;

static void fmt(char *buf, size_t cap, double v, const char *f) {
    if (v != v) snprintf(buf, cap, "-");
    else snprintf(buf, cap, f, v);
}

static int collect(const cli_args *a, const char *ini, row *r, ex_err *err) {
    memset(r, 0, sizeof *r);
    const char *base = strrchr(ini, '/');
    snprintf(r->name, sizeof r->name, "%s", base ? base + 1 : ini);
    char *dot = strrchr(r->name, '.');
    if (dot) *dot = '\0';
    ex_session s;
    ex_session_options opt = a->session;
    opt.config_path = ini;
    if (ex_session_open(&s, &opt, err) != EX_OK) return 0;
    const ex_cfg_section run = {s.config, "run", ex_core_run_keys()};
    char out[4096], path[4200];
    int ok = ex_cfg_path(&run, "out", out, sizeof out, err) == EX_OK;
    const char *stack = ex_config_raw(s.config, "peft", "stack");
    snprintf(r->stack, sizeof r->stack, "%s", stack && stack[0] ? stack : "(frozen)");
    if (!ex_config_has_section(s.config, "objective")) snprintf(r->stack, sizeof r->stack, "none (source model)");
    ex_session_close(&s);
    if (!ok) return 0;
    char *text = NULL;
    snprintf(path, sizeof path, "%s/summary.json", out);
    if (ex_read_file(path, &text, NULL, NULL) != EX_OK) text = NULL;
    r->trainable = json_number(text, "trainable_params");
    r->seconds = json_number(text, "seconds");
    r->peak = json_number(text, "peak_rss_mib");
    r->loss = json_number(text, "final_loss");
    r->ft1 = json_number(text, "finetune_top1"); /* the row is itself a finetune run */
    r->ftsec = __builtin_nan("");
    if (r->ft1 == r->ft1) {
        r->ftsec = r->seconds;
        r->seconds = __builtin_nan("");
    }
    free(text);
    text = NULL;
    if (r->ft1 != r->ft1) { /* a fine-tune of this run's model, in <run>/finetune */
        snprintf(path, sizeof path, "%s/finetune/summary.json", out);
        if (ex_read_file(path, &text, NULL, NULL) != EX_OK) text = NULL;
        r->ft1 = json_number(text, "finetune_top1");
        r->ftsec = json_number(text, "seconds");
        free(text);
        text = NULL;
    }
    snprintf(path, sizeof path, "%s/linprobe.json", out);
    if (ex_read_file(path, &text, NULL, NULL) != EX_OK) text = NULL;
    r->top1 = json_number(text, "best_top1");
    free(text);
    return 1;
}

int cli_compare(const cli_args *a) {
    if (a->npositional < 1) {
        fprintf(stderr, "explora: error: usage: explora compare A.ini [B.ini ...] [--out DIR]\n");
        return CLI_USAGE;
    }
    row rows[16];
    ex_err err;
    ex_err_clear(&err);
    for (int i = 0; i < a->npositional; i++)
        if (!collect(a, a->positional[i], &rows[i], &err)) return cli_report(a, &err);
    const char *dir = a->out ? a->out : ".";
    char md[4200], csv[4200];
    snprintf(md, sizeof md, "%s/compare.md", dir);
    snprintf(csv, sizeof csv, "%s/compare.csv", dir);
    ex_atomic_file fm, fc;
    if (ex_atomic_open(&fm, md, &err) != EX_OK || ex_atomic_open(&fc, csv, &err) != EX_OK) return cli_report(a, &err);
    fprintf(fm.fp, "| run | PEFT stack | trainable params (with SSL head/decoder) | pre-training time (s) | peak memory (MiB) | "
                   "final SSL loss | linear probe top-1 (%%) | fine-tuning top-1 (%%) | fine-tuning time (s) |\n"
                   "|---|---|---|---|---|---|---|---|---|\n");
    fprintf(fc.fp, "run,stack,trainable_params,pretrain_seconds,peak_rss_mib,final_loss,linprobe_top1,finetune_top1,"
                   "finetune_seconds\n");
    printf("%-24s %-22s %12s %10s %10s %10s %10s %10s %10s\n", "run", "stack", "trainable", "time (s)", "peak MiB",
           "SSL loss", "top-1 %", "FT top-1", "FT time");
    for (int i = 0; i < a->npositional; i++) {
        const row *r = &rows[i];
        char t[32], s[32], p[32], l[32], acc[32], ft[32], fs[32];
        fmt(t, sizeof t, r->trainable, "%.0f");
        fmt(s, sizeof s, r->seconds, "%.1f");
        fmt(p, sizeof p, r->peak, "%.0f");
        fmt(l, sizeof l, r->loss, "%.4f");
        fmt(acc, sizeof acc, r->top1, "%.2f");
        fmt(ft, sizeof ft, r->ft1, "%.2f");
        fmt(fs, sizeof fs, r->ftsec, "%.1f");
        fprintf(fm.fp, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r->name, r->stack, t, s, p, l, acc, ft, fs);
        fprintf(fc.fp, "%s,\"%s\",%s,%s,%s,%s,%s,%s,%s\n", r->name, r->stack, t, s, p, l, acc, ft, fs);
        printf("%-24s %-22s %12s %10s %10s %10s %10s %10s %10s\n", r->name, r->stack, t, s, p, l, acc, ft, fs);
    }
    if (ex_atomic_commit(&fm, &err) != EX_OK || ex_atomic_commit(&fc, &err) != EX_OK) return cli_report(a, &err);
    printf("\nwrote %s and %s\n", md, csv);
    return CLI_OK;
}
