/*
 * datasets/fmow_sentinel/fmow_sentinel_dataset.c — the `fmow-sentinel`
 * dataset plugin: fMoW-Sentinel (13-band Sentinel-2 GeoTIFFs) as SatMAE's
 * SentinelIndividualImageDataset reads it (CSV rules in fms_csv.h).
 *
 * Keys: csv; root (the folder holding <split>/<category>/...; empty: the
 * CSV's folder); split (that folder's name; empty: from the CSV's file name,
 * "train.csv" -> train, "test_gt.csv" -> test); dropped_bands (band indices
 * 0..12 to remove after normalising, default "0, 9, 10" = B1, B9, B10;
 * "none" keeps all 13); min_year / max_year (2000 / 2020); normalize (true:
 * SentinelNormalize to [0, 1], fms_norm.h; false: the raw band values);
 * limit. Images are checked to exist at open.
 *
 * Samples: 13 - len(dropped_bands) channels (10 by default: B2 B3 B4 B5 B6
 * B7 B8 B8A B11 B12), label 0..61, group -1, id
 * "<category>_<location_id>_<image_id>". An image without exactly 13 bands
 * is an error naming it. get only reads the dataset: thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/fileio.h"
#include "explora/image.h"
#include "explora/plugin.h"
#include "fmow_classes.h"
#include "fms_csv.h"
#include "fms_norm.h"

typedef struct fms_ds {
    fms_list list;
    int keep[FMS_BANDS]; /* source band of each output channel */
    int nkeep;
    int raw;   /* normalize = false */
    int64_t n; /* samples exposed (after limit) */
} fms_ds;

static const ex_key_spec fms_keys[] = {
    {"csv", EX_KEY_PATH, NULL, EX_NORANGE, NULL, "fMoW-Sentinel CSV (train.csv, val.csv, test_gt.csv)"},
    {"root", EX_KEY_PATH, "", EX_NORANGE, NULL, "folder holding <split>/<category>/... (empty: the CSV's folder)"},
    {"split", EX_KEY_STRING, "", EX_NORANGE, NULL,
     "image folder under root: train, val or test (empty: from the CSV name, test_gt.csv -> test)"},
    {"dropped_bands", EX_KEY_STRING, "0, 9, 10", EX_NORANGE, NULL,
     "band indices 0..12 to remove (B1 B2 B3 B4 B5 B6 B7 B8 B8A B9 B10 B11 B12), or none"},
    {"min_year", EX_KEY_INT, "2000", 0, 9999, NULL, "drop images taken before this year"},
    {"max_year", EX_KEY_INT, "2020", 0, 9999, NULL, "drop images taken after this year"},
    {"normalize", EX_KEY_BOOL, "true", EX_NORANGE, NULL,
     "SentinelNormalize to [0, 1] (false: raw band values)"},
    {"limit", EX_KEY_INT, "0", 0, 2147483647.0, NULL, "use only the first N samples (0: all)"},
    EX_KEY_END,
};

static void fms_close(void *self) {
    fms_ds *d = self;
    if (!d) return;
    fms_list_free(&d->list);
    free(d);
}

/* "0, 9, 10" / "none" -> d->keep, d->nkeep. */
static ex_status parse_dropped(const ex_cfg_section *cfg, fms_ds *d, ex_err *err) {
    const char *s = "";
    EX_CHECK(ex_cfg_string(cfg, "dropped_bands", &s, err));
    int drop[FMS_BANDS] = {0};
    const char *p = s;
    while (*p && strcmp(s, "none") != 0) {
        p += strspn(p, " \t,");
        if (!*p) break;
        size_t nd = strspn(p, "0123456789");
        int band = nd > 0 && nd <= 2 ? atoi(p) : -1;
        EX_ENSURE(band >= 0 && band < FMS_BANDS && (p[nd] == '\0' || strchr(" \t,", p[nd])), err, EX_E_CONFIG,
                  "[%s] dropped_bands = '%s': give band indices 0..12 separated by commas, or none.", cfg->section,
                  s);
        EX_ENSURE(!drop[band], err, EX_E_CONFIG, "[%s] dropped_bands = '%s': band %d is listed twice.", cfg->section,
                  s, band);
        drop[band] = 1;
        p += nd;
    }
    d->nkeep = 0;
    for (int b = 0; b < FMS_BANDS; b++)
        if (!drop[b]) d->keep[d->nkeep++] = b;
    EX_ENSURE(d->nkeep > 0, err, EX_E_CONFIG, "[%s] dropped_bands = '%s' removes all 13 bands.", cfg->section, s);
    return EX_OK;
}

/* The split folder: the key, or the CSV's file name without ".csv" and a trailing "_gt". */
static void split_name(const char *key, const char *csv, char *out, size_t cap) {
    if (key[0]) {
        snprintf(out, cap, "%s", key);
        return;
    }
    const char *base = strrchr(csv, '/');
    base = base ? base + 1 : csv;
    size_t n = strlen(base) < cap ? strlen(base) : cap - 1;
    memcpy(out, base, n);
    out[n] = '\0';
    if (n > 4 && strcmp(out + n - 4, ".csv") == 0) out[n -= 4] = '\0';
    if (n > 3 && strcmp(out + n - 3, "_gt") == 0) out[n - 3] = '\0';
}

static ex_status csv_options(const ex_cfg_section *cfg, char *csv, char *root, char *split, fms_csv_opts *o,
                             ex_err *err) {
    const char *split_key = "";
    EX_CHECK(ex_cfg_path(cfg, "csv", csv, 4096, err));
    const char *raw = ex_config_raw(cfg->config, cfg->section, "root");
    if (raw && raw[0])
        EX_CHECK(ex_cfg_path(cfg, "root", root, 4096, err));
    else
        ex_path_dirname(csv, root, 4096);
    EX_CHECK(ex_cfg_string(cfg, "split", &split_key, err));
    split_name(split_key, csv, split, 256);
    EX_CHECK(ex_cfg_int(cfg, "min_year", &o->min_year, err));
    EX_CHECK(ex_cfg_int(cfg, "max_year", &o->max_year, err));
    EX_ENSURE(o->min_year <= o->max_year, err, EX_E_CONFIG, "[%s] min_year %lld is after max_year %lld.",
              cfg->section, (long long)o->min_year, (long long)o->max_year);
    o->csv_path = csv;
    o->root = root;
    o->split = split;
    o->check_files = 1;
    return EX_OK;
}

static ex_status read_csv(const ex_cfg_section *cfg, fms_ds *d, ex_err *err) {
    char csv[4096], root[4096], split[256];
    fms_csv_opts o;
    EX_CHECK(csv_options(cfg, csv, root, split, &o, err));
    char *text = NULL;
    size_t size = 0;
    ex_status st = ex_read_file(csv, &text, &size, err);
    if (st != EX_OK) {
        ex_err_prefix(err, "fmow-sentinel: [%s] csv: ", cfg->section);
        return st;
    }
    st = fms_csv_parse(&o, text, size, &d->list, err);
    free(text);
    return st;
}

static ex_status fms_open(const ex_cfg_section *cfg, void **self, ex_err *err) {
    fms_ds *d = calloc(1, sizeof *d);
    EX_ENSURE(d, err, EX_E_NOMEM, "fmow-sentinel: out of memory.");
    ex_status st;
    int64_t limit = 0;
    int normalize = 1;
    EX_CHECK_GOTO(parse_dropped(cfg, d, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_bool(cfg, "normalize", &normalize, err), st, fail);
    d->raw = !normalize;
    EX_CHECK_GOTO(ex_cfg_int(cfg, "limit", &limit, err), st, fail);
    EX_CHECK_GOTO(read_csv(cfg, d, err), st, fail);
    d->n = (int64_t)d->list.n;
    if (limit > 0 && limit < d->n) d->n = limit;
    *self = d;
    return EX_OK;
fail:
    fms_close(d);
    return st;
}

static int64_t fms_length(void *self) { return ((fms_ds *)self)->n; }

static int64_t fms_num_classes(void *self) {
    (void)self;
    return FMOW_NUM_CLASSES;
}

static const char *fms_class_name(void *self, int64_t label) {
    (void)self;
    return label >= 0 && label < FMOW_NUM_CLASSES ? fmow_class_names[label] : NULL;
}

/* Raw 13-band image -> normalised selected bands in out. */
static ex_status to_sample(const fms_ds *d, const fms_entry *e, const ex_image *img, ex_sample *out, ex_err *err) {
    EX_ENSURE(img->channels == FMS_BANDS, err, EX_E_FORMAT,
              "image '%s': fmow-sentinel expects %d Sentinel-2 bands (B1..B12 with B8A), the file has %d.", e->path,
              FMS_BANDS, img->channels);
    size_t npix = (size_t)img->width * (size_t)img->height;
    out->pixels = malloc(npix * (size_t)d->nkeep * sizeof(float));
    EX_ENSURE(out->pixels, err, EX_E_NOMEM, "image '%s': out of memory.", e->path);
    fms_select_bands(img->pixels, npix, d->keep, d->nkeep, d->raw, out->pixels);
    out->width = img->width;
    out->height = img->height;
    out->channels = d->nkeep;
    return EX_OK;
}

static ex_status fms_get(void *self, int64_t index, ex_sample *out, ex_err *err) {
    const fms_ds *d = self;
    EX_ENSURE(index >= 0 && index < d->n, err, EX_E_RANGE, "fmow-sentinel: sample %lld outside [0, %lld).",
              (long long)index, (long long)d->n);
    memset(out, 0, sizeof *out);
    const fms_entry *e = &d->list.items[index];
    ex_image img;
    EX_CHECK(ex_image_load_raw(e->path, &img, err));
    ex_status st = to_sample(d, e, &img, out, err);
    ex_image_free(&img);
    if (st != EX_OK) return st;
    out->label = e->label;
    out->group = -1;
    snprintf(out->id, sizeof out->id, "%s", e->id);
    return EX_OK;
}

static const ex_dataset_vtable fms_vtable = {
    /* .open        = */ fms_open,
    /* .close       = */ fms_close,
    /* .length      = */ fms_length,
    /* .get         = */ fms_get,
    /* .num_classes = */ fms_num_classes,
    /* .class_name  = */ fms_class_name,
};

static const ex_plugin_desc fms_desc =
    EX_PLUGIN_DESC(EX_PLUGIN_DATASET, "fmow-sentinel", "0.1.0",
                   "fMoW-Sentinel 13-band GeoTIFFs from the SatMAE CSV, SentinelNormalize, band drop", fms_keys,
                   &fms_vtable);

EX_PLUGIN_ENTRY { return &fms_desc; }
