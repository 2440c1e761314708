/*
 * core/cli/cli.h — shared pieces of the explora command-line interface.
 * The CLI is the only part of explora that prints errors and exits.
 */
#ifndef EXPLORA_CLI_H
#define EXPLORA_CLI_H

#include "explora/features.h"
#include "explora/session.h"

/* Exit codes. */
enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

typedef struct cli_args {
    const char *verb;
    ex_session_options session;
    const char *positional[16];
    int npositional;
    const char *keys_of;  /* plugins --keys NAME */
    int show;             /* data --show N */
    const char *out;      /* embed --out FILE, compare / analyze --out DIR */
    const char *blocks;   /* embed --blocks i,j */
    const char *format;   /* export --format NAME */
    const char *checkpoint; /* export / linprobe / analyze --checkpoint FILE */
    const char *copy;       /* export / linprobe / knn / embed --copy auto|student|teacher */
    int verbose;
    int dry_run;          /* pretrain --dry-run */
    int resume;           /* pretrain --resume */
    int profile_step;     /* pretrain --profile-step N: time every backend call of step N (0: none) */
    const char *bench_model;  /* bench --model vits14|vitb14 */
    const char *bench_policy; /* bench --policy explora|lora|full|infer|all */
    int bench_batch, bench_iters, bench_warmup; /* bench --batch, --iters, --warmup (0 / -1: defaults) */
    const char *bench_list;   /* bench data --list FILE */
    int bench_workers;        /* bench data --workers N */
    const char *keep;         /* slim --keep PREFIX,... */
} cli_args;

/* Print "explora: error: <msg>" (and the source location with -v); return the exit code for it. */
int cli_report(const cli_args *a, const ex_err *err);

/* The body of a verb on one config (a->positional[0]) with a started backend. */
typedef ex_status (*cli_session_fn)(const cli_args *a, ex_session *s, ex_backend *be, ex_err *err);
/* Open a->positional[0] with the command line's session options, validate it, start its backend, run fn,
 * then stop the backend and close the session; every error goes through cli_report. Returns the exit code. */
int cli_run_session(const cli_args *a, cli_session_fn fn);

/* The key of linprobe's and knn's feature caches (core/cli/cli_cache_key.c): the checkpoint, the resolved
 * config outside [run], [optim], [objective], [analyze], [linprobe] and [knn], and the `extra` keys given as
 * {section, key} pairs. */
ex_status cli_feature_cache_key(const ex_session *s, const char *checkpoint, const char *copy, const char *const (*extra)[2], int nextra,
                                uint64_t *key, ex_err *err);

/* Open the dataset plugin that [section] names (core/cli/cli_dataset.c); errors name the section and plugin. */
ex_status cli_open_dataset(const ex_session *s, const char *section, const ex_plugin **plugin, void **ds, ex_err *err);

/* Features of a dataset section (core/cli/cli_features.c): from `cache` when the file exists, else extracted
 * through m and written there; *classes (may be NULL) = the dataset's class count (0 when cached or unknown). */
ex_status cli_features_for(ex_model *m, ex_session *s, const char *section, const char *cache, const ex_feature_opts *o,
                           ex_features *f, int64_t *classes, ex_err *err);

int cli_plugins(const cli_args *a);
int cli_check(const cli_args *a);
int cli_data(const cli_args *a);
int cli_embed(const cli_args *a);
int cli_pretrain(const cli_args *a);
int cli_export(const cli_args *a);
int cli_linprobe(const cli_args *a);
int cli_compare(const cli_args *a);
int cli_plot(const cli_args *a);
int cli_analyze(const cli_args *a);
int cli_finetune(const cli_args *a);
int cli_eval(const cli_args *a);
int cli_knn(const cli_args *a);
int cli_bench(const cli_args *a);
int cli_bench_data(const cli_args *a);
int cli_demo(const cli_args *a);
int cli_slim(const cli_args *a);

#endif
