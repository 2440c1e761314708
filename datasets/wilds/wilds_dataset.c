/*
 * datasets/wilds/wilds_dataset.c — the `wilds` dataset plugin: WILDS
 * Camelyon17 (v1.0) and iWildCam2020 (v2.0), and the unlabeled packages
 * camelyon17_unlabeled and iwildcam_unlabeled (v1.0), from <root>/metadata.csv,
 * one split at a time (rules in wilds_csv.h).
 *
 * Keys: root (the dataset folder, e.g. camelyon17_v1.0, holding
 * metadata.csv and the images); dataset; split (camelyon17: train | id_val |
 * val | test; iwildcam: also id_test; val and test are the OOD ones;
 * camelyon17_unlabeled: train_unlabeled | val_unlabeled | test_unlabeled;
 * iwildcam_unlabeled: extra_unlabeled; default: the dataset's training split);
 * unlabeled (hide labels: label -1, for pre-training; the label column is
 * not read; always on for the unlabeled packages); channels (3 RGB or 1
 * gray); limit. Images are checked to exist at open. Samples: pixels in
 * [0, 1], label (tumor 0/1, or y 0..181; -1 unlabeled), group (slide, or
 * location_remapped), id = the image path relative to root. num_classes:
 * 2 / 182 (0 when unlabeled). get is thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/fileio.h"
#include "explora/image.h"
#include "explora/plugin.h"
#include "wilds_csv.h"

typedef struct wilds_ds {
    wilds_list list;
    int channels;
    int64_t classes;
    int64_t n; /* samples exposed (after limit) */
} wilds_ds;

static const ex_key_spec wilds_keys[] = {
    {"root", EX_KEY_PATH, NULL, EX_NORANGE, NULL, "dataset folder with metadata.csv (e.g. camelyon17_v1.0)"},
    {"dataset", EX_KEY_ENUM, NULL, EX_NORANGE, "camelyon17|iwildcam|camelyon17_unlabeled|iwildcam_unlabeled",
     "which WILDS package (the *_unlabeled ones: WILDS' unlabeled data for pre-training, labels -1)"},
    {"split", EX_KEY_ENUM, "default", EX_NORANGE,
     "default|train|id_val|val|test|id_test|train_unlabeled|val_unlabeled|test_unlabeled|extra_unlabeled",
     "WILDS split (val, test: out of distribution); camelyon17: train, id_val, val, test; iwildcam: + id_test; "
     "camelyon17_unlabeled: train_unlabeled, val_unlabeled, test_unlabeled; iwildcam_unlabeled: extra_unlabeled; "
     "default: train, train_unlabeled or extra_unlabeled"},
    {"unlabeled", EX_KEY_BOOL, "false", EX_NORANGE, NULL, "hide labels (label -1), e.g. for pre-training"},
    {"channels", EX_KEY_INT, "3", 1, 3, NULL, "1 (gray, BT.601 luma) or 3 (RGB)"},
    {"limit", EX_KEY_INT, "0", 0, 2147483647.0, NULL, "use only the first N samples (0: all)"},
    EX_KEY_END,
};

static void wilds_close(void *self) {
    wilds_ds *d = self;
    if (!d) return;
    wilds_list_free(&d->list);
    free(d);
}

static ex_status wilds_options(const ex_cfg_section *cfg, char *root, wilds_opts *o, ex_err *err) {
    int dataset = 0, split = 0;
    EX_CHECK(ex_cfg_path(cfg, "root", root, 4096, err));
    EX_CHECK(ex_cfg_enum(cfg, "dataset", &dataset, err));
    EX_CHECK(ex_cfg_enum(cfg, "split", &split, err));
    EX_CHECK(ex_cfg_bool(cfg, "unlabeled", &o->unlabeled, err));
    o->root = root;
    o->dataset = (wilds_dataset)dataset;
    o->split = split == 0 ? wilds_default_split(o->dataset) : (wilds_split)(split - 1);
    if (wilds_is_unlabeled_package(o->dataset)) o->unlabeled = 1;
    o->check_files = 1;
    return EX_OK;
}

static ex_status read_metadata(const ex_cfg_section *cfg, wilds_ds *d, ex_err *err) {
    char root[4096], csv[4200];
    wilds_opts o;
    memset(&o, 0, sizeof o);
    EX_CHECK(wilds_options(cfg, root, &o, err));
    snprintf(csv, sizeof csv, "%s/metadata.csv", root);
    o.csv_path = csv;
    d->classes = o.unlabeled ? 0 : o.dataset == WILDS_CAMELYON17 ? 2 : 182; /* unlabeled packages: o.unlabeled */
    char *text = NULL;
    size_t size = 0;
    ex_status st = ex_read_file(csv, &text, &size, err);
    if (st != EX_OK) {
        ex_err_prefix(err, "wilds: [%s] root: ", cfg->section);
        return st;
    }
    st = wilds_csv_parse(&o, text, size, &d->list, err);
    free(text);
    return st;
}

static ex_status wilds_open(const ex_cfg_section *cfg, void **self, ex_err *err) {
    wilds_ds *d = calloc(1, sizeof *d);
    EX_ENSURE(d, err, EX_E_NOMEM, "wilds: out of memory.");
    ex_status st;
    int64_t channels = 3, limit = 0;
    EX_CHECK_GOTO(ex_cfg_int(cfg, "channels", &channels, err), st, fail);
    if (channels != 1 && channels != 3)
        EX_FAIL_GOTO(err, st, fail, EX_E_CONFIG, "[%s] channels = %lld: use 1 (gray) or 3 (RGB).", cfg->section,
                     (long long)channels);
    d->channels = (int)channels;
    EX_CHECK_GOTO(ex_cfg_int(cfg, "limit", &limit, err), st, fail);
    EX_CHECK_GOTO(read_metadata(cfg, d, err), st, fail);
    d->n = (int64_t)d->list.n;
    if (limit > 0 && limit < d->n) d->n = limit;
    *self = d;
    return EX_OK;
fail:
    wilds_close(d);
    return st;
}

static int64_t wilds_length(void *self) { return ((wilds_ds *)self)->n; }
static int64_t wilds_num_classes(void *self) { return ((wilds_ds *)self)->classes; }

static ex_status wilds_get(void *self, int64_t index, ex_sample *out, ex_err *err) {
    const wilds_ds *d = self;
    EX_ENSURE(index >= 0 && index < d->n, err, EX_E_RANGE, "wilds: sample %lld outside [0, %lld).",
              (long long)index, (long long)d->n);
    memset(out, 0, sizeof *out);
    const wilds_entry *e = &d->list.items[index];
    ex_image img;
    EX_CHECK(ex_image_load(e->path, d->channels, &img, err));
    out->width = img.width;
    out->height = img.height;
    out->channels = img.channels;
    out->pixels = img.pixels;
    out->label = e->label;
    out->group = e->group;
    snprintf(out->id, sizeof out->id, "%s", e->id);
    return EX_OK;
}

static const ex_dataset_vtable wilds_vtable = {
    /* .open        = */ wilds_open,
    /* .close       = */ wilds_close,
    /* .length      = */ wilds_length,
    /* .get         = */ wilds_get,
    /* .num_classes = */ wilds_num_classes,
    /* .class_name  = */ NULL,
};

static const ex_plugin_desc wilds_desc =
    EX_PLUGIN_DESC(EX_PLUGIN_DATASET, "wilds", "0.1.0",
                   "WILDS Camelyon17 / iWildCam (and their unlabeled packages) from metadata.csv, WILDS split rules, "
                   "group = slide / location",
                   wilds_keys, &wilds_vtable);

EX_PLUGIN_ENTRY { return &wilds_desc; }
