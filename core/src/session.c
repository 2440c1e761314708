/*
 * core/src/session.c — config + registry + whole-config validation (see explora/session.h).
 */
#include "explora/session.h"

#include <string.h>

#include "explora/fileio.h"
#include "explora/optim.h"

static const ex_key_spec k_run_keys[] = {
    {"seed", EX_KEY_INT, "0", 0, 9.2e18, NULL, "seed of every random stream of the run"},
    {"out", EX_KEY_PATH, "runs/default", EX_NORANGE, NULL, "run directory: effective config, metrics, checkpoints"},
    {"log_every", EX_KEY_INT, "10", 1, 1e12, NULL, "optimiser steps between log lines and metrics records"},
    {"checkpoint_every", EX_KEY_INT, "0", 0, 1e12, NULL, "optimiser steps between checkpoints (0: only at the end)"},
    {"keep_last", EX_KEY_INT, "0", 0, 1e6, NULL,
     "also keep the last k checkpoints as checkpoint-<step>.safetensors (0: only checkpoint.safetensors, the latest)"},
    {"stop_at", EX_KEY_INT, "0", 0, 1e12, NULL,
     "stop this invocation after this optimiser step, writing a checkpoint (continue with --resume; the "
     "schedule still spans [optim] steps); 0: run to the end"},
    {"loader_workers", EX_KEY_INT, "2", 0, 256, NULL,
     "threads decoding and augmenting images ahead of the training step (0: on the main thread); batches are "
     "the same whatever the number"},
    {"stall_timeout_s", EX_KEY_FLOAT, "1800", 0, 1e7, NULL,
     "several processes: end every rank when no training step finishes for this many seconds (a rank that hangs "
     "without dying holds the others in the collectives forever); 0: never"},
    {"collectives", EX_KEY_ENUM, "auto", EX_NORANGE, "auto|host",
     "several processes: how gradients are summed. auto: in device memory by the backend's collectives when it "
     "has them (CUDA built with NCCL), else through host memory by MPI; host: always through host memory by MPI"},
    {"eval_every", EX_KEY_INT, "0", 0, INT64_MAX, NULL,
     "finetune: also evaluate on [eval_data] every N optimiser steps (evals.jsonl; eval.json and summary.json add "
     "the best top-1 over the evaluations, as the SatMAE/ExPLoRA scripts report); 0: only at the end"},
    {"skip_bad", EX_KEY_BOOL, "false", EX_NORANGE, NULL,
     "a sample that cannot be read (missing, truncated or corrupt image, wrong size or band count) does not stop "
     "the run: training replaces it by the next readable one (counted per epoch and in summary.json); feature "
     "extraction (linprobe, knn, embed) and evaluation drop it and report the count"},
    EX_KEY_END,
};

static const ex_key_spec k_plugins_keys[] = {
    {"path", EX_KEY_STRING_LIST, "", EX_NORANGE, NULL,
     "directories searched for plugins before EXPLORA_PLUGIN_PATH and the defaults (comma-separated)"},
    EX_KEY_END,
};

static const ex_key_spec k_transform_keys[] = {
    {"mean", EX_KEY_FLOAT_LIST, "0.485, 0.456, 0.406", EX_NORANGE, NULL,
     "per-channel mean subtracted from [0, 1] pixels (ImageNet by default; fMoW: 0.4182, 0.4215, 0.3991)"},
    {"std", EX_KEY_FLOAT_LIST, "0.229, 0.224, 0.225", 1e-6, 1e6, NULL,
     "per-channel standard deviation (ImageNet by default; fMoW: 0.2877, 0.2754, 0.2764)"},
    {"resize", EX_KEY_INT, "0", 0, 65536, NULL,
     "evaluation transform (embed, probes): resize the shorter side to this, then centre-crop to the backbone's "
     "image_size, bicubic as torchvision (e.g. 256 for 224); 0: images must already have image_size"},
    EX_KEY_END,
};

static const ex_key_spec k_linprobe_keys[] = {
    {"lrs", EX_KEY_FLOAT_LIST, "1e-4, 1e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1", 0, 100, NULL,
     "learning rates trained at once (DINOv2's grid, for batch 256)"},
    {"epochs", EX_KEY_INT, "10", 1, 1e6, NULL, "passes over the cached training features"},
    {"batch", EX_KEY_INT, "256", 1, 1e6, NULL, "features per SGD step"},
    {"blocks", EX_KEY_INT_LIST, "1, 4", 1, 64, NULL, "inputs from the cls tokens of the last n blocks, for each n"},
    {"avgpool", EX_KEY_ENUM, "both", EX_NORANGE, "cls|avg|both",
     "without (cls), with (avg) or both with and without the mean patch token appended"},
    {"limit", EX_KEY_INT, "0", 0, 1e12, NULL, "use at most this many training samples (0: all)"},
    {"eval_limit", EX_KEY_INT, "0", 0, 1e12, NULL, "use at most this many evaluation samples (0: all)"},
    EX_KEY_END,
};

const ex_key_spec *ex_core_linprobe_keys(void) { return k_linprobe_keys; }

static const ex_key_spec k_knn_keys[] = {
    {"k", EX_KEY_INT_LIST, "10, 20, 100, 200", 1, 1e7, NULL, "neighbour counts evaluated (DINO's knn.py)"},
    {"temperature", EX_KEY_FLOAT, "0.07", 1e-6, 1e6, NULL, "votes weighted exp(cosine similarity / temperature)"},
    {"limit", EX_KEY_INT, "0", 0, 1e12, NULL, "use at most this many training samples (0: all)"},
    {"eval_limit", EX_KEY_INT, "0", 0, 1e12, NULL, "use at most this many evaluation samples (0: all)"},
    EX_KEY_END,
};

const ex_key_spec *ex_core_knn_keys(void) { return k_knn_keys; }

/* [analyze]: `explora analyze` (core/cli/cli_analyze.c, docs/ANALYSIS.md). */
static const ex_key_spec k_analyze_keys[] = {
    {"name", EX_KEY_STRING, "", EX_NORANGE, NULL, "the model's name in tables and plot legends (default: the config file's name)"},
    {"checkpoint", EX_KEY_PATH, "", EX_NORANGE, NULL,
     "a pretrain checkpoint whose trained tensors are loaded over [backbone] weights (adapters merged); empty: none"},
    {"data", EX_KEY_ENUM, "auto", EX_NORANGE, "auto|data|eval_data",
     "the target-domain images: [eval_data], [data], or auto ([eval_data] when the config has it, else [data])"},
    {"images", EX_KEY_INT, "64", 2, 1e7, NULL, "images analysed, spread evenly over the dataset"},
    {"test_fraction", EX_KEY_FLOAT, "0.25", 0.01, 0.99, NULL, "share of the images whose tokens evaluate the probes"},
    {"topk", EX_KEY_INT_LIST, "1, 5", 1, 1e6, NULL, "spectrum statistics: mean of the top-k covariance eigenvalues, for each k"},
    {"features", EX_KEY_ENUM, "norm", EX_NORANGE, "norm|raw",
     "tokens analysed: each block's residual stream through the final LayerNorm (norm) or as is (raw)"},
    {"probe_lrs", EX_KEY_FLOAT_LIST, "1e-3, 1e-2, 0.1", 0, 100, NULL, "learning rates of the per-patch linear probes"},
    {"probe_epochs", EX_KEY_INT, "10", 1, 1e6, NULL, "passes over the training tokens of each probe"},
    {"probe_batch", EX_KEY_INT, "256", 1, 1e7, NULL, "tokens per SGD step of the probes"},
    {"attention_images", EX_KEY_INT, "4", 0, 1e6, NULL, "attention maps are drawn for the first n analysed images"},
    {"memory_mb", EX_KEY_INT, "2048", 16, 1e9, NULL, "host memory for cached tokens; blocks are analysed in passes that fit"},
    EX_KEY_END,
};

const ex_key_spec *ex_core_analyze_keys(void) { return k_analyze_keys; }

static const ex_key_spec k_peft_keys[] = {
    {"stack", EX_KEY_STRING_LIST, "", EX_NORANGE, NULL,
     "PEFT strategies applied in order after freezing everything, e.g. 'unfreeze, lora' (ExPLoRA); empty: all frozen "
     "(linear probe). Each is configured by its own section [peft.<name>]"},
    EX_KEY_END,
};

const ex_key_spec *ex_core_transform_keys(void) { return k_transform_keys; }
const ex_key_spec *ex_core_peft_keys(void) { return k_peft_keys; }
const ex_key_spec *ex_core_run_keys(void) { return k_run_keys; }
const ex_key_spec *ex_core_optim_keys(void) { return ex_optim_keys(); }
const ex_key_spec *ex_core_plugins_keys(void) { return k_plugins_keys; }

/* Sections that select a plugin: section name, plugin kind, default plugin name. */
static const struct {
    const char *section;
    ex_plugin_kind kind;
    const char *default_name;
} k_plugin_sections[] = {
    {"backend", EX_PLUGIN_BACKEND, "cpu"},
    {"backbone", EX_PLUGIN_BACKBONE, "vit"},
    {"objective", EX_PLUGIN_OBJECTIVE, NULL},
    {"data", EX_PLUGIN_DATASET, NULL},
    {"eval_data", EX_PLUGIN_DATASET, NULL},
};
#define N_PLUGIN_SECTIONS (sizeof k_plugin_sections / sizeof k_plugin_sections[0])

/* Directory of the file that set section.key ("." for --set overrides). */
static void origin_dir(const ex_config *c, const char *section, const char *key, char *out, size_t cap) {
    const char *o = ex_config_origin(c, section, key);
    if (!o || strcmp(o, "--set") == 0) {
        snprintf(out, cap, ".");
        return;
    }
    char file[4096];
    snprintf(file, sizeof file, "%s", o);
    char *colon = strrchr(file, ':'); /* "file:line" */
    if (colon) *colon = '\0';
    ex_path_dirname(file, out, cap);
}

ex_status ex_session_open(ex_session *s, const ex_session_options *opt, ex_err *err) {
    memset(s, 0, sizeof *s);
    ex_status st;
    if (opt->config_path)
        EX_CHECK_GOTO(ex_config_load(&s->config, opt->config_path, err), st, fail);
    else
        EX_CHECK_GOTO(ex_config_new(&s->config, err), st, fail);
    for (int i = 0; i < opt->nsets; i++) EX_CHECK_GOTO(ex_config_set(s->config, opt->sets[i], err), st, fail);

    EX_CHECK_GOTO(ex_registry_new(&s->registry, err), st, fail);
    for (int i = 0; i < opt->ndirs; i++) EX_CHECK_GOTO(ex_registry_add_dir(s->registry, opt->plugin_dirs[i], err), st, fail);
    if (ex_config_has_section(s->config, "plugins")) {
        EX_CHECK_GOTO(ex_config_validate_section(s->config, "plugins", k_plugins_keys, NULL, err), st, fail);
        ex_cfg_section view = {s->config, "plugins", k_plugins_keys};
        const char *items[EX_SESSION_MAX_DIRS];
        char buf[8192];
        int n = 0;
        EX_CHECK_GOTO(ex_cfg_string_list(&view, "path", items, EX_SESSION_MAX_DIRS, &n, buf, sizeof buf, err), st, fail);
        char base[4096], dir[4096];
        origin_dir(s->config, "plugins", "path", base, sizeof base);
        for (int i = 0; i < n; i++) { /* relative to the config file, like every other path */
            EX_CHECK_GOTO(ex_path_join(base, items[i], dir, sizeof dir, err), st, fail);
            EX_CHECK_GOTO(ex_registry_add_dir(s->registry, dir, err), st, fail);
        }
    }
    EX_CHECK_GOTO(ex_registry_add_default_dirs(s->registry, err), st, fail);
    EX_CHECK_GOTO(ex_registry_scan(s->registry, err), st, fail);
    return EX_OK;
fail:
    ex_session_close(s);
    return st;
}

void ex_session_close(ex_session *s) {
    if (s->config) ex_config_free(s->config);
    if (s->registry) ex_registry_free(s->registry);
    memset(s, 0, sizeof *s);
}

ex_status ex_session_plugin(const ex_session *s, const char *section, ex_plugin_kind kind, const char *default_name,
                            const ex_plugin **plugin, ex_cfg_section *view, ex_err *err) {
    const char *name = ex_config_raw(s->config, section, "name");
    if (!name) {
        EX_ENSURE(default_name, err, EX_E_CONFIG,
                  "[%s] needs 'name = <%s plugin>'. Run 'explora plugins' to list the %s plugins available.", section,
                  ex_plugin_kind_name(kind), ex_plugin_kind_name(kind));
        name = default_name;
    }
    ex_status st = ex_registry_find(s->registry, kind, name, plugin, err);
    if (st != EX_OK) {
        const char *origin = ex_config_origin(s->config, section, "name");
        ex_err_prefix(err, "%s%s[%s] name = %s: ", origin ? origin : "", origin ? ": " : "", section, name);
        return st;
    }
    view->config = s->config;
    view->section = section;
    view->specs = (*plugin)->desc.keys;
    return EX_OK;
}

static const ex_key_spec k_no_keys[] = {EX_KEY_END};

/* [peft] stack names PEFT plugins; every [peft.<name>] section belongs to one of them
 * and passes that plugin's schema. */
static ex_status validate_peft(const ex_session *s, ex_err *err) {
    const char *names[16];
    char buf[1024];
    int n = 0;
    if (ex_config_has_section(s->config, "peft")) {
        EX_CHECK(ex_config_validate_section(s->config, "peft", k_peft_keys, NULL, err));
        const ex_cfg_section peft = {s->config, "peft", k_peft_keys};
        EX_CHECK(ex_cfg_string_list(&peft, "stack", names, 16, &n, buf, sizeof buf, err));
    }
    for (int i = 0; i < n; i++) {
        const ex_plugin *p;
        ex_status st = ex_registry_find(s->registry, EX_PLUGIN_PEFT, names[i], &p, err);
        if (st != EX_OK) {
            const char *origin = ex_config_origin(s->config, "peft", "stack");
            ex_err_prefix(err, "%s: [peft] stack: ", origin ? origin : "config");
            return st;
        }
        char sec[96];
        snprintf(sec, sizeof sec, "peft.%s", names[i]);
        if (ex_config_has_section(s->config, sec))
            EX_CHECK(ex_config_validate_section(s->config, sec, p->desc.keys ? p->desc.keys : k_no_keys, NULL, err));
    }
    for (int i = 0; i < ex_config_section_count(s->config); i++) {
        const char *sec = ex_config_section_name(s->config, i);
        if (strncmp(sec, "peft.", 5) != 0) continue;
        int listed = 0;
        for (int k = 0; k < n; k++) listed |= strcmp(sec + 5, names[k]) == 0;
        EX_ENSURE(listed, err, EX_E_CONFIG,
                  "section [%s] configures a PEFT strategy that [peft] stack does not list (stack: %s).", sec,
                  n ? buf : "empty");
    }
    return EX_OK;
}

ex_status ex_session_validate(const ex_session *s, ex_err *err) {
    const char *known[N_PLUGIN_SECTIONS + 8];
    int nk = 0;
    known[nk++] = "run";
    known[nk++] = "plugins";
    known[nk++] = "optim";
    known[nk++] = "transform";
    known[nk++] = "linprobe";
    known[nk++] = "knn";
    known[nk++] = "analyze";
    for (size_t i = 0; i < N_PLUGIN_SECTIONS; i++) known[nk++] = k_plugin_sections[i].section;
    known[nk] = NULL;
    EX_CHECK(validate_peft(s, err));
    /* [peft.<name>] sections were checked above; let check_sections skip them */
    const char *all_known[64];
    int na = 0;
    for (int i = 0; i < nk; i++) all_known[na++] = known[i];
    all_known[na++] = "peft";
    for (int i = 0; i < ex_config_section_count(s->config) && na < 63; i++) {
        const char *sec = ex_config_section_name(s->config, i);
        if (strncmp(sec, "peft.", 5) == 0) all_known[na++] = sec;
    }
    all_known[na] = NULL;
    EX_CHECK(ex_config_check_sections(s->config, all_known, err));
    if (ex_config_has_section(s->config, "run"))
        EX_CHECK(ex_config_validate_section(s->config, "run", k_run_keys, NULL, err));
    if (ex_config_has_section(s->config, "linprobe"))
        EX_CHECK(ex_config_validate_section(s->config, "linprobe", k_linprobe_keys, NULL, err));
    if (ex_config_has_section(s->config, "analyze"))
        EX_CHECK(ex_config_validate_section(s->config, "analyze", k_analyze_keys, NULL, err));
    if (ex_config_has_section(s->config, "knn"))
        EX_CHECK(ex_config_validate_section(s->config, "knn", k_knn_keys, NULL, err));
    if (ex_config_has_section(s->config, "transform"))
        EX_CHECK(ex_config_validate_section(s->config, "transform", k_transform_keys, NULL, err));
    if (ex_config_has_section(s->config, "optim"))
        EX_CHECK(ex_config_validate_section(s->config, "optim", ex_optim_keys(), NULL, err));
    static const char *const name_key[] = {"name", NULL};
    for (size_t i = 0; i < N_PLUGIN_SECTIONS; i++) {
        const char *sec = k_plugin_sections[i].section;
        if (!ex_config_has_section(s->config, sec)) continue;
        const ex_plugin *p = NULL;
        ex_cfg_section view;
        EX_CHECK(ex_session_plugin(s, sec, k_plugin_sections[i].kind, k_plugin_sections[i].default_name, &p, &view, err));
        EX_CHECK(ex_config_validate_section(s->config, sec, p->desc.keys ? p->desc.keys : k_no_keys, name_key, err));
    }
    return EX_OK;
}

ex_status ex_session_backend(const ex_session *s, ex_backend *be, ex_err *err) {
    const ex_plugin *p = NULL;
    ex_cfg_section view;
    EX_CHECK(ex_session_plugin(s, "backend", EX_PLUGIN_BACKEND, "cpu", &p, &view, err));
    if (!view.specs) view.specs = k_no_keys;
    return ex_backend_create(be, p, &view, err);
}
