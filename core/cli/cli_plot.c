/*
 * core/cli/cli_plot.c — `explora plot RUN_DIR [--out DIR]`: the curves of a
 * pretrain/finetune run from its metrics.jsonl as PNG line plots, drawn by
 * explora itself (no Python): loss.png (the total and every loss term),
 * lr.png and grad_norm.png, one point per logged step (x = log entry).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze.h"
#include "cli.h"
#include "explora/fileio.h"

#define MAX_SERIES 16

typedef struct curves {
    char names[MAX_SERIES][48];
    double *y[MAX_SERIES];
    int count;
    int64_t n, cap;
} curves;

static int series_index(curves *c, const char *name) {
    for (int i = 0; i < c->count; i++)
        if (strcmp(c->names[i], name) == 0) return i;
    if (c->count == MAX_SERIES) return -1;
    snprintf(c->names[c->count], sizeof c->names[0], "%s", name);
    c->y[c->count] = malloc(sizeof(double) * (size_t)c->cap);
    for (int64_t k = 0; c->y[c->count] && k < c->cap; k++) c->y[c->count][k] = NAN;
    return c->y[c->count] ? c->count++ : -1;
}

/* Every "key": number pair of one line of our own JSONL. */
static void parse_line(curves *c, const char *line) {
    const char *p = line;
    while ((p = strchr(p, '"')) != NULL) {
        const char *q = strchr(p + 1, '"');
        if (!q || q[1] != ':') break;
        char key[48];
        snprintf(key, sizeof key, "%.*s", (int)(q - p - 1), p + 1);
        char *end;
        double v = strtod(q + 2, &end);
        if (end != q + 2) {
            int i = series_index(c, key);
            if (i >= 0) c->y[i][c->n] = v;
        }
        p = end > q + 2 ? end : q + 1;
    }
}

static ex_status render(const char *path, const char *title, const curves *c, const char *const *keys, int nkeys,
                        int prefix_terms, ex_err *err) {
    an_series s[MAX_SERIES];
    int ns = 0;
    for (int i = 0; i < c->count && ns < MAX_SERIES; i++) {
        int take = 0;
        for (int k = 0; k < nkeys; k++) take |= strcmp(c->names[i], keys[k]) == 0;
        if (prefix_terms) { /* loss terms: everything that is not bookkeeping */
            static const char *const skip[] = {"step", "lr", "grad_norm", "images_per_s", "epoch", "elapsed_s", "train_acc"};
            take = 1;
            for (size_t k = 0; k < sizeof skip / sizeof *skip; k++) take &= strcmp(c->names[i], skip[k]) != 0;
        }
        if (take) s[ns++] = (an_series){c->names[i], c->y[i], c->n};
    }
    if (ns == 0) return EX_OK;
    an_canvas cv = {0}; /* an_plot_render allocates the pixels */
    ex_status st = an_plot_render(&cv, title, "LOG ENTRY", s, ns, err);
    if (st == EX_OK) st = an_png_write(path, cv.px, cv.w, cv.h, err);
    an_canvas_free(&cv);
    if (st == EX_OK) printf("wrote %s\n", path);
    return st;
}

int cli_plot(const cli_args *a) {
    if (a->npositional != 1) {
        fprintf(stderr, "explora: error: usage: explora plot RUN_DIR [--out DIR]\n");
        return CLI_USAGE;
    }
    const char *dir = a->positional[0], *out = a->out ? a->out : dir;
    char path[4200], *text = NULL;
    ex_err err;
    ex_err_clear(&err);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    if (ex_read_file(path, &text, NULL, &err) != EX_OK) {
        ex_err_hint(&err, "plot takes the run directory of a pretrain or finetune run ([run] out).");
        return cli_report(a, &err);
    }
    curves c;
    memset(&c, 0, sizeof c);
    for (const char *p = text; *p; p++) c.cap += *p == '\n';
    c.cap += 1;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] != '{') continue;
        parse_line(&c, line);
        c.n++;
    }
    free(text);
    int rc = CLI_OK;
    if (c.n == 0) {
        fprintf(stderr, "explora: error: %s holds no records.\n", path);
        rc = CLI_FAILED;
    } else {
        static const char *const lr[] = {"lr"}, *const gn[] = {"grad_norm"};
        char p1[4200], p2[4200], p3[4200];
        snprintf(p1, sizeof p1, "%s/loss.png", out);
        snprintf(p2, sizeof p2, "%s/lr.png", out);
        snprintf(p3, sizeof p3, "%s/grad_norm.png", out);
        if (render(p1, "LOSS", &c, NULL, 0, 1, &err) != EX_OK || render(p2, "LEARNING RATE", &c, lr, 1, 0, &err) != EX_OK ||
            render(p3, "GRADIENT NORM", &c, gn, 1, 0, &err) != EX_OK)
            rc = cli_report(a, &err);
    }
    for (int i = 0; i < c.count; i++) free(c.y[i]);
    return rc;
}
