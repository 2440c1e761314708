/*
 * datasets/imagelist/imagelist_dataset.c — the `imagelist` dataset plugin:
 * images named in a text file, one per line, unlabeled (for pre-training on
 * any collection) or with integer labels ("<path> <label>"; the format is
 * documented in imagelist_parse.h). JPEG and PNG are decoded by
 * ex_image_load (explora/image.h) into (H, W, channels) floats in [0, 1].
 *
 * Relative paths resolve against `root` when it is set, else against the
 * folder of the list file. Every image is checked to exist at open, so a
 * wrong line fails the run before training, naming the line. The sample id
 * is the path as written in the list; num_classes is the largest label + 1
 * (0 when unlabeled). get only reads the dataset: safe from several threads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/fileio.h"
#include "explora/image.h"
#include "explora/plugin.h"
#include "imagelist_parse.h"

typedef struct imagelist {
    iml_list list;
    int channels;
    int64_t n; /* samples exposed (after limit) */
} imagelist;

static const ex_key_spec iml_keys[] = {
    {"list", EX_KEY_PATH, NULL, EX_NORANGE, NULL,
     "text file: one image path per line, optionally followed by an integer label; '#' comments"},
    {"root", EX_KEY_PATH, "", EX_NORANGE, NULL, "folder that relative paths start from (empty: the list's folder)"},
    {"channels", EX_KEY_INT, "3", 1, 3, NULL, "1 (gray, BT.601 luma) or 3 (RGB)"},
    {"limit", EX_KEY_INT, "0", 0, 2147483647.0, NULL, "use only the first N samples (0: all)"},
    EX_KEY_END,
};

static void iml_close(void *self) {
    imagelist *d = self;
    if (!d) return;
    iml_list_free(&d->list);
    free(d);
}

/* The folder relative paths start from: `root` if given, else the list's folder. */
static ex_status base_dir(const ex_cfg_section *cfg, const char *list, char *out, size_t cap, ex_err *err) {
    const char *raw = ex_config_raw(cfg->config, cfg->section, "root");
    if (raw && raw[0]) return ex_cfg_path(cfg, "root", out, cap, err);
    ex_path_dirname(list, out, cap);
    return EX_OK;
}

static ex_status read_list(const ex_cfg_section *cfg, imagelist *d, ex_err *err) {
    char list[4096], base[4096];
    EX_CHECK(ex_cfg_path(cfg, "list", list, sizeof list, err));
    EX_CHECK(base_dir(cfg, list, base, sizeof base, err));
    char *text = NULL;
    size_t size = 0;
    ex_status st = ex_read_file(list, &text, &size, err);
    if (st != EX_OK) {
        ex_err_prefix(err, "imagelist: [%s] list: ", cfg->section);
        return st;
    }
    st = iml_parse(list, text, size, base, &d->list, err);
    free(text);
    return st;
}

static ex_status iml_open(const ex_cfg_section *cfg, void **self, ex_err *err) {
    imagelist *d = calloc(1, sizeof *d);
    EX_ENSURE(d, err, EX_E_NOMEM, "imagelist: out of memory.");
    d->list.max_label = -1;
    ex_status st;
    int64_t channels = 3, limit = 0;
    EX_CHECK_GOTO(ex_cfg_int(cfg, "channels", &channels, err), st, fail);
    if (channels != 1 && channels != 3)
        EX_FAIL_GOTO(err, st, fail, EX_E_CONFIG, "[%s] channels = %lld: use 1 (gray) or 3 (RGB).", cfg->section,
                     (long long)channels);
    d->channels = (int)channels;
    EX_CHECK_GOTO(ex_cfg_int(cfg, "limit", &limit, err), st, fail);
    EX_CHECK_GOTO(read_list(cfg, d, err), st, fail);
    d->n = (int64_t)d->list.n;
    if (limit > 0 && limit < d->n) d->n = limit;
    *self = d;
    return EX_OK;
fail:
    iml_close(d);
    return st;
}

static int64_t iml_length(void *self) { return ((imagelist *)self)->n; }
static int64_t iml_num_classes(void *self) { return ((imagelist *)self)->list.max_label + 1; }

static ex_status iml_get(void *self, int64_t index, ex_sample *out, ex_err *err) {
    const imagelist *d = self;
    EX_ENSURE(index >= 0 && index < d->n, err, EX_E_RANGE, "imagelist: sample %lld outside [0, %lld).",
              (long long)index, (long long)d->n);
    memset(out, 0, sizeof *out);
    const iml_entry *e = &d->list.items[index];
    ex_image img;
    EX_CHECK(ex_image_load(e->path, d->channels, &img, err));
    out->width = img.width;
    out->height = img.height;
    out->channels = img.channels;
    out->pixels = img.pixels;
    out->label = e->label;
    out->group = -1;
    snprintf(out->id, sizeof out->id, "%s", e->id);
    return EX_OK;
}

static const ex_dataset_vtable iml_vtable = {
    /* .open        = */ iml_open,
    /* .close       = */ iml_close,
    /* .length      = */ iml_length,
    /* .get         = */ iml_get,
    /* .num_classes = */ iml_num_classes,
    /* .class_name  = */ NULL,
};

static const ex_plugin_desc iml_desc =
    EX_PLUGIN_DESC(EX_PLUGIN_DATASET, "imagelist", "0.1.0",
                   "JPEG/PNG images listed in a text file, one per line, optional integer labels", iml_keys,
                   &iml_vtable);

EX_PLUGIN_ENTRY { return &iml_desc; }
