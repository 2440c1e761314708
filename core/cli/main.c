/*
 * core/cli/main.c — `explora VERB [options]`: argument parsing and dispatch.
 *
 * Options every verb accepts:
 *   --set section.key=value   override a config value (repeatable)
 *   --plugin-path DIR         search DIR for plugins first (repeatable)
 *   -v, --verbose             show where in explora an error was raised
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *out) {
    fprintf(out,
            "explora %s — parameter-efficient extended pre-training of vision transformers\n"
            "\n"
            "usage: explora VERB [CONFIG.ini] [options]\n"
            "\n"
            "verbs:\n"
            "  plugins [--keys NAME]   list the plugins found (kind, name, version, path) and every\n"
            "                          rejected file with the reason; --keys NAME documents the\n"
            "                          config keys of plugin NAME ('core' for the core sections)\n"
            "  check CONFIG            validate a whole config: sections, keys, values, plugins;\n"
            "                          start its backend; build its backbone without weights or\n"
            "                          data and print trainable counts and the memory plan\n"
            "  data CONFIG [--show N]  open the dataset of [data] and describe it and N samples\n"
            "  embed CONFIG --out F [--blocks i,j]\n"
            "                          features (cls, mean patch token, chosen blocks) of every\n"
            "                          sample of [data] through [backbone], as safetensors\n"
            "  pretrain CONFIG [--dry-run] [--resume] [--profile-step N]\n"
            "                          extended self-supervised pre-training ([backbone], [peft],\n"
            "                          [objective], [data], [optim]); --dry-run prints the\n"
            "                          trainable counts and memory plan without loading anything;\n"
            "                          --profile-step N times every backend call of step N\n"
            "                          (synchronised after each) and prints where the step went\n"
            "  export CONFIG --out F [--format dinov2|timm|hf|mae|hf-mae] [--checkpoint C]\n"
            "                          the run's backbone with its adapters merged, as a plain ViT\n"
            "  slim CKPT --out F [--keep PREFIX,...]\n"
            "                          the tensors of a run checkpoint that start a later run (by\n"
            "                          default the EMA teacher and its heads), without optimiser state\n"
            "  linprobe CONFIG [--checkpoint C]\n"
            "                          DINOv2 linear-probe protocol: features of [data] and\n"
            "                          [eval_data] cached once, a grid of linear classifiers\n"
            "  finetune CONFIG [--resume]\n"
            "                          supervised fine-tuning ([objective] name = classify: a linear\n"
            "                          head, usually LoRA r8 on q,v), then top-1/top-5/macro-F1 on\n"
            "                          [eval_data] (eval.json)\n"
            "  eval CONFIG --checkpoint C [--out DIR]\n"
            "                          the same evaluation for a finetune checkpoint\n"
            "  knn CONFIG [--checkpoint C]\n"
            "                          DINO's weighted kNN on cached cls features ([data] bank,\n"
            "                          [eval_data] queries, [knn] k and temperature)\n"
            "  compare A.ini B.ini ... [--out DIR]\n"
            "                          a Markdown/CSV table of the runs: trainable parameters, time,\n"
            "                          memory, SSL loss, linear-probe top-1\n"
            "  analyze A.ini [B.ini ...] [--out DIR] [--checkpoint C]\n"
            "                          per-block analysis on target images: covariance spectra,\n"
            "                          patch-position and patch-class probes, cls attention maps\n"
            "                          (table, plots; see docs/ANALYSIS.md)\n"
            "  plot RUN_DIR [--out DIR]\n"
            "                          loss, lr and gradient-norm curves of a run as PNG\n"
            "  bench [--model vits14|vitb14] [--policy explora|lora|full|infer|all] [--batch 8]\n"
            "        [--iters N] [--warmup W]\n"
            "                          CPU performance benchmark on synthetic data: images/s, time per\n"
            "                          phase and op class, FLOPs, GEMM-peak fraction, peak RSS\n"
            "                          (docs/PERFORMANCE.md)\n"
            "  bench data --list FILE [--iters P] [--warmup W] [--workers N]\n"
            "                          data-pipeline benchmark: JPEG decoding and DINOv2's multi-crop\n"
            "                          augmentation, images/s per thread (bench/data.sh: beside Pillow)\n"
            "  demo [DIR]              ExPLoRA in miniature, from the demo configs in DIR (default\n"
            "                          configs/demo): a shipped Fashion-MNIST source model moved to a\n"
            "                          sensor-shifted target by three PEFT policies; linear probes,\n"
            "                          fine-tuning, compare table, plots, analysis\n"
            "  version                 print the version and ABI\n"
            "  help                    this text\n"
            "\n"
            "options:\n"
            "  --set section.key=value  override a config value (repeatable)\n"
            "  --plugin-path DIR        search DIR for plugins first (repeatable); see also\n"
            "                           EXPLORA_PLUGIN_PATH (':'-separated)\n"
            "  --copy auto|student|teacher\n"
            "                           which model of a --checkpoint export, linprobe, knn and embed\n"
            "                           read: the EMA teacher (DINOv2 keeps one) or the optimised\n"
            "                           student; auto (default): the teacher when there is one\n"
            "  -v, --verbose            more detail in errors\n",
            EXPLORA_VERSION);
}

int cli_report(const cli_args *a, const ex_err *err) {
    fprintf(stderr, "explora: error: %s\n", err->msg[0] ? err->msg : ex_status_name(err->code));
    if (a && a->verbose && err->src_file) fprintf(stderr, "  (raised at %s:%d)\n", err->src_file, err->src_line);
    return (err->code == EX_E_CONFIG || err->code == EX_E_INVALID) ? CLI_USAGE : CLI_FAILED;
}

int cli_run_session(const cli_args *a, cli_session_fn fn) {
    ex_session s;
    ex_err err;
    ex_err_clear(&err);
    ex_session_options opt = a->session;
    opt.config_path = a->positional[0];
    if (ex_session_open(&s, &opt, &err) != EX_OK) return cli_report(a, &err);
    ex_backend be;
    int rc = CLI_OK;
    if (ex_session_validate(&s, &err) != EX_OK || ex_session_backend(&s, &be, &err) != EX_OK) {
        rc = cli_report(a, &err);
    } else {
        if (fn(a, &s, &be, &err) != EX_OK) rc = cli_report(a, &err);
        ex_backend_destroy(&be);
    }
    ex_session_close(&s);
    return rc;
}

static int need_value(int argc, char **argv, int i) {
    if (i + 1 >= argc || argv[i + 1][0] == '\0') {
        fprintf(stderr, "explora: error: option %s needs a value. Run 'explora help'.\n", argv[i]);
        return 0;
    }
    return 1;
}

static int parse_args(int argc, char **argv, cli_args *a) {
    memset(a, 0, sizeof *a);
    a->show = 3;
    a->bench_warmup = -1;
    if (argc < 2) return 0;
    a->verb = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--set") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            if (a->session.nsets == EX_SESSION_MAX_SETS) {
                fprintf(stderr, "explora: error: more than %d --set options.\n", EX_SESSION_MAX_SETS);
                return 0;
            }
            a->session.sets[a->session.nsets++] = argv[++i];
        } else if (strncmp(s, "--set=", 6) == 0) {
            if (a->session.nsets == EX_SESSION_MAX_SETS) return 0;
            a->session.sets[a->session.nsets++] = s + 6;
        } else if (strcmp(s, "--plugin-path") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            if (a->session.ndirs == EX_SESSION_MAX_DIRS) {
                fprintf(stderr, "explora: error: more than %d --plugin-path options.\n", EX_SESSION_MAX_DIRS);
                return 0;
            }
            a->session.plugin_dirs[a->session.ndirs++] = argv[++i];
        } else if (strcmp(s, "--keys") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            a->keys_of = argv[++i];
        } else if (strcmp(s, "--out") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            a->out = argv[++i];
        } else if (strcmp(s, "--format") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            a->format = argv[++i];
        } else if (strcmp(s, "--checkpoint") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            a->checkpoint = argv[++i];
        } else if (strcmp(s, "--blocks") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            a->blocks = argv[++i];
        } else if (strcmp(s, "--show") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > 1000000) {
                fprintf(stderr, "explora: error: --show '%s' is not a count between 0 and 1000000.\n", argv[i]);
                return 0;
            }
            a->show = (int)v;
        } else if (strcmp(s, "--model") == 0 || strcmp(s, "--policy") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            *(s[2] == 'm' ? &a->bench_model : &a->bench_policy) = argv[++i];
        } else if (strcmp(s, "--copy") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            a->copy = argv[++i];
            if (strcmp(a->copy, "auto") && strcmp(a->copy, "student") && strcmp(a->copy, "teacher")) {
                fprintf(stderr, "explora: error: --copy '%s' is not auto, student or teacher.\n", a->copy);
                return 0;
            }
        } else if (strcmp(s, "--keep") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            a->keep = argv[++i];
        } else if (strcmp(s, "--list") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            a->bench_list = argv[++i];
        } else if (strcmp(s, "--workers") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > 256) {
                fprintf(stderr, "explora: error: --workers '%s' is not a thread count between 0 and 256.\n", argv[i]);
                return 0;
            }
            a->bench_workers = (int)v;
        } else if (strcmp(s, "--batch") == 0 || strcmp(s, "--iters") == 0 || strcmp(s, "--warmup") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            char *end;
            long v = strtol(argv[i + 1], &end, 10);
            if (*end || v < (s[2] == 'w' ? 0 : 1) || v > 100000) {
                fprintf(stderr, "explora: error: %s '%s' is not a count between %d and 100000.\n", s, argv[i + 1],
                        s[2] == 'w' ? 0 : 1);
                return 0;
            }
            i++;
            *(s[2] == 'b' ? &a->bench_batch : s[2] == 'i' ? &a->bench_iters : &a->bench_warmup) = (int)v;
        } else if (strcmp(s, "--profile-step") == 0) {
            if (!need_value(argc, argv, i)) return 0;
            char *end;
            long v = strtol(argv[i + 1], &end, 10);
            if (*end || v < 2 || v > 100000000) {
                fprintf(stderr,
                        "explora: error: --profile-step '%s' is not a step number of 2 or more (step 1 also does the "
                        "run's setup and first loads).\n",
                        argv[i + 1]);
                return 0;
            }
            i++;
            a->profile_step = (int)v;
        } else if (strcmp(s, "--dry-run") == 0) {
            a->dry_run = 1;
        } else if (strcmp(s, "--resume") == 0) {
            a->resume = 1;
        } else if (strcmp(s, "-v") == 0 || strcmp(s, "--verbose") == 0) {
            a->verbose = 1;
        } else if (s[0] == '-' && s[1] != '\0') {
            fprintf(stderr, "explora: error: unknown option '%s'. Run 'explora help'.\n", s);
            return 0;
        } else {
            if (a->npositional == 16) return 0;
            a->positional[a->npositional++] = s;
        }
    }
    return 1;
}

int main(int argc, char **argv) {
    cli_args a;
    if (!parse_args(argc, argv, &a)) {
        if (argc < 2) usage(stderr);
        return CLI_USAGE;
    }
    const char *v = a.verb;
    if (strcmp(v, "help") == 0 || strcmp(v, "--help") == 0 || strcmp(v, "-h") == 0) {
        usage(stdout);
        return CLI_OK;
    }
    if (strcmp(v, "version") == 0 || strcmp(v, "--version") == 0) {
        printf("explora %s (plugin ABI %d.%d)\n", EXPLORA_VERSION, EX_ABI_MAJOR, EX_ABI_MINOR);
        return CLI_OK;
    }
    if (strcmp(v, "plugins") == 0) return cli_plugins(&a);
    if (strcmp(v, "check") == 0) return cli_check(&a);
    if (strcmp(v, "data") == 0) return cli_data(&a);
    if (strcmp(v, "embed") == 0) return cli_embed(&a);
    if (strcmp(v, "pretrain") == 0) return cli_pretrain(&a);
    if (strcmp(v, "export") == 0) return cli_export(&a);
    if (strcmp(v, "linprobe") == 0) return cli_linprobe(&a);
    if (strcmp(v, "compare") == 0) return cli_compare(&a);
    if (strcmp(v, "plot") == 0) return cli_plot(&a);
    if (strcmp(v, "analyze") == 0) return cli_analyze(&a);
    if (strcmp(v, "finetune") == 0) return cli_finetune(&a);
    if (strcmp(v, "eval") == 0) return cli_eval(&a);
    if (strcmp(v, "knn") == 0) return cli_knn(&a);
    if (strcmp(v, "bench") == 0)
        return a.npositional >= 1 && strcmp(a.positional[0], "data") == 0 ? cli_bench_data(&a) : cli_bench(&a);
    if (strcmp(v, "demo") == 0) return cli_demo(&a);
    if (strcmp(v, "slim") == 0) return cli_slim(&a);
    fprintf(stderr, "explora: error: unknown verb '%s'. Run 'explora help' for the list.\n", v);
    return CLI_USAGE;
}
