/*
 * datasets/fmow/fmow_dataset.c — the `fmow` dataset plugin: fMoW-RGB as
 * SatMAE and ExPLoRA read it, from train_62classes.csv / val_62classes.csv
 * (format in fmow_csv.h): label = column 0 (0..61), image = column 1.
 *
 * Keys: csv (the CSV), root (folder relative image paths start from; empty:
 * the CSV's folder), path_prefix (text put in front of every CSV path, "//"
 * collapsed), channels (3 RGB or 1 gray), limit. Every image is checked to
 * exist at open, so a wrong row fails before training, naming the CSV line.
 * Samples: pixels in [0, 1] (JPEG/PNG/TIFF via ex_image_load), label 0..61,
 * group -1, id = the CSV path as written. num_classes 62, class_name the
 * fMoW category names. get only reads the dataset: safe from several threads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/fileio.h"
#include "explora/image.h"
#include "explora/plugin.h"
#include "fmow_classes.h"
#include "fmow_csv.h"

typedef struct fmow_ds {
    fmow_list list;
    int channels;
    int64_t n; /* samples exposed (after limit) */
} fmow_ds;

static const ex_key_spec fmow_keys[] = {
    {"csv", EX_KEY_PATH, NULL, EX_NORANGE, NULL,
     "CSV with a header row; column 0 the label 0..61, column 1 the image path (e.g. train_62classes.csv)"},
    {"root", EX_KEY_PATH, "", EX_NORANGE, NULL, "folder that relative image paths start from (empty: the CSV's folder)"},
    {"path_prefix", EX_KEY_STRING, "", EX_NORANGE, NULL, "text put in front of every image path of the CSV"},
    {"channels", EX_KEY_INT, "3", 1, 3, NULL, "1 (gray, BT.601 luma) or 3 (RGB)"},
    {"limit", EX_KEY_INT, "0", 0, 2147483647.0, NULL, "use only the first N samples (0: all)"},
    EX_KEY_END,
};

static void fmow_close(void *self) {
    fmow_ds *d = self;
    if (!d) return;
    fmow_list_free(&d->list);
    free(d);
}

static ex_status root_dir(const ex_cfg_section *cfg, const char *csv, char *out, size_t cap, ex_err *err) {
    const char *raw = ex_config_raw(cfg->config, cfg->section, "root");
    if (raw && raw[0]) return ex_cfg_path(cfg, "root", out, cap, err);
    ex_path_dirname(csv, out, cap);
    return EX_OK;
}

static ex_status read_csv(const ex_cfg_section *cfg, fmow_ds *d, ex_err *err) {
    char csv[4096], root[4096];
    const char *prefix = "";
    EX_CHECK(ex_cfg_path(cfg, "csv", csv, sizeof csv, err));
    EX_CHECK(root_dir(cfg, csv, root, sizeof root, err));
    EX_CHECK(ex_cfg_string(cfg, "path_prefix", &prefix, err));
    char *text = NULL;
    size_t size = 0;
    ex_status st = ex_read_file(csv, &text, &size, err);
    if (st != EX_OK) {
        ex_err_prefix(err, "fmow: [%s] csv: ", cfg->section);
        return st;
    }
    fmow_csv_opts o = {csv, root, prefix, 1};
    st = fmow_csv_parse(&o, text, size, &d->list, err);
    free(text);
    return st;
}

static ex_status fmow_open(const ex_cfg_section *cfg, void **self, ex_err *err) {
    fmow_ds *d = calloc(1, sizeof *d);
    EX_ENSURE(d, err, EX_E_NOMEM, "fmow: out of memory.");
    ex_status st;
    int64_t channels = 3, limit = 0;
    EX_CHECK_GOTO(ex_cfg_int(cfg, "channels", &channels, err), st, fail);
    if (channels != 1 && channels != 3)
        EX_FAIL_GOTO(err, st, fail, EX_E_CONFIG, "[%s] channels = %lld: use 1 (gray) or 3 (RGB).", cfg->section,
                     (long long)channels);
    d->channels = (int)channels;
    EX_CHECK_GOTO(ex_cfg_int(cfg, "limit", &limit, err), st, fail);
    EX_CHECK_GOTO(read_csv(cfg, d, err), st, fail);
    d->n = (int64_t)d->list.n;
    if (limit > 0 && limit < d->n) d->n = limit;
    *self = d;
    return EX_OK;
fail:
    fmow_close(d);
    return st;
}

static int64_t fmow_length(void *self) { return ((fmow_ds *)self)->n; }
static int64_t fmow_num_classes(void *self) {
    (void)self;
    return FMOW_NUM_CLASSES;
}

static const char *fmow_class_name(void *self, int64_t label) {
    (void)self;
    return label >= 0 && label < FMOW_NUM_CLASSES ? fmow_class_names[label] : NULL;
}

static ex_status fmow_get(void *self, int64_t index, ex_sample *out, ex_err *err) {
    const fmow_ds *d = self;
    EX_ENSURE(index >= 0 && index < d->n, err, EX_E_RANGE, "fmow: sample %lld outside [0, %lld).",
              (long long)index, (long long)d->n);
    memset(out, 0, sizeof *out);
    const fmow_entry *e = &d->list.items[index];
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

static const ex_dataset_vtable fmow_vtable = {
    /* .open        = */ fmow_open,
    /* .close       = */ fmow_close,
    /* .length      = */ fmow_length,
    /* .get         = */ fmow_get,
    /* .num_classes = */ fmow_num_classes,
    /* .class_name  = */ fmow_class_name,
};

static const ex_plugin_desc fmow_desc =
    EX_PLUGIN_DESC(EX_PLUGIN_DATASET, "fmow", "0.1.0",
                   "fMoW-RGB from a SatMAE/ExPLoRA CSV (label 0..61, image path), 62 categories", fmow_keys,
                   &fmow_vtable);

EX_PLUGIN_ENTRY { return &fmow_desc; }
