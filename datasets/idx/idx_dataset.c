/*
 * datasets/idx/idx_dataset.c — the `idx` dataset plugin: an images file
 * (N, H, W) u8 and an optional labels file (N) u8, as MNIST and
 * Fashion-MNIST ship them (gzipped or not). Debian's dataset-fashion-mnist
 * package puts them under /usr/share/datasets/fashion-mnist/.
 *
 * Samples are H x W x 1 with values in [0, 1] (byte / 255).
 *
 * sensor_photons > 0 re-captures every image with a simulated low-light
 * camera (blur, shot and read noise, 8-bit ADC; idx_sensor.h): the same
 * labelled images as a second, shifted domain, fixed per (sensor_seed, index).
 */
#include <stdlib.h>
#include <string.h>

#include "explora/plugin.h"
#include "idx_format.h"
#include "idx_sensor.h"

#define IDX_MAX_CLASSES 256

typedef struct idx_dataset {
    idx_array images; /* (n, h, w) */
    idx_array labels; /* (n), or count 0 when unlabeled */
    int64_t n, h, w;
    int64_t num_classes;
    idx_sensor sensor;
    char *class_names[IDX_MAX_CLASSES];
    char names_buf[8192];
} idx_dataset;

static const ex_key_spec idx_keys[] = {
    {"images", EX_KEY_PATH, NULL, EX_NORANGE, NULL, "IDX file of images (N, H, W), u8, optionally gzipped"},
    {"labels", EX_KEY_PATH, "", EX_NORANGE, NULL, "IDX file of labels (N), u8; empty: unlabeled"},
    {"limit", EX_KEY_INT, "0", 0, 2147483647.0, NULL, "use only the first N samples (0: all)"},
    {"class_names", EX_KEY_STRING_LIST, "", EX_NORANGE, NULL,
     "names of the classes in label order (comma-separated); empty: numbers"},
    {"sensor_photons", EX_KEY_FLOAT, "0", 0.0, 1e6, NULL,
     "re-capture each image with a simulated low-light camera: mean photo-electrons of a white pixel (shot noise); "
     "0: the images as stored"},
    {"sensor_blur", EX_KEY_FLOAT, "0", 0.0, 10.0, NULL, "simulated camera: optical blur sigma in pixels"},
    {"sensor_read_noise", EX_KEY_FLOAT, "2", 0.0, 1e4, NULL, "simulated camera: read noise in electrons"},
    {"sensor_black", EX_KEY_FLOAT, "16", 0.0, 254.0, NULL, "simulated camera: black level of the 8-bit ADC in DN"},
    {"sensor_seed", EX_KEY_INT, "0", 0, INT64_MAX, NULL, "simulated camera: seed of the noise (a fixed capture)"},
    EX_KEY_END,
};

static void idx_close(void *self) {
    idx_dataset *d = self;
    if (!d) return;
    idx_free(&d->images);
    idx_free(&d->labels);
    free(d);
}

static ex_status idx_open(const ex_cfg_section *cfg, void **self, ex_err *err) {
    idx_dataset *d = calloc(1, sizeof *d);
    EX_ENSURE(d, err, EX_E_NOMEM, "out of memory");
    ex_status st;
    char images[4096], labels[4096];
    int64_t limit = 0;
    int nnames = 0;
    EX_CHECK_GOTO(ex_cfg_path(cfg, "images", images, sizeof images, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_path(cfg, "labels", labels, sizeof labels, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_int(cfg, "limit", &limit, err), st, fail);
    int64_t sensor_seed = 0;
    EX_CHECK_GOTO(ex_cfg_float(cfg, "sensor_photons", &d->sensor.photons, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_float(cfg, "sensor_blur", &d->sensor.blur, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_float(cfg, "sensor_read_noise", &d->sensor.read_noise, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_float(cfg, "sensor_black", &d->sensor.black, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_int(cfg, "sensor_seed", &sensor_seed, err), st, fail);
    d->sensor.seed = (uint64_t)sensor_seed;
    EX_CHECK_GOTO(ex_cfg_string_list(cfg, "class_names", (const char **)d->class_names, IDX_MAX_CLASSES, &nnames,
                                     d->names_buf, sizeof d->names_buf, err),
                  st, fail);
    const int64_t max_bytes = (int64_t)1 << 34; /* 16 GiB: far beyond any IDX dataset */
    EX_CHECK_GOTO(idx_read_u8(images, 3, max_bytes, &d->images, err), st, fail);
    d->n = d->images.dims[0];
    d->h = d->images.dims[1];
    d->w = d->images.dims[2];
    const char *raw_labels = ex_config_raw(cfg->config, cfg->section, "labels");
    if (raw_labels && raw_labels[0]) {
        EX_CHECK_GOTO(idx_read_u8(labels, 1, max_bytes, &d->labels, err), st, fail);
        if (d->labels.count != d->n)
            EX_FAIL_GOTO(err, st, fail, EX_E_FORMAT, "%s holds %lld labels but %s holds %lld images.", labels,
                         (long long)d->labels.count, images, (long long)d->n);
        for (int64_t i = 0; i < d->n; i++)
            if (d->labels.data[i] + 1 > d->num_classes) d->num_classes = d->labels.data[i] + 1;
        if (nnames > 0 && nnames < d->num_classes)
            EX_FAIL_GOTO(err, st, fail, EX_E_CONFIG, "[%s] class_names lists %d names but %s has labels up to %lld.",
                         cfg->section, nnames, labels, (long long)d->num_classes - 1);
        if (nnames > d->num_classes) d->num_classes = nnames;
    }
    if (limit > 0 && limit < d->n) d->n = limit;
    *self = d;
    return EX_OK;
fail:
    idx_close(d);
    return st;
}

static int64_t idx_length(void *self) { return ((idx_dataset *)self)->n; }
static int64_t idx_num_classes(void *self) { return ((idx_dataset *)self)->num_classes; }

static const char *idx_class_name(void *self, int64_t label) {
    idx_dataset *d = self;
    if (label < 0 || label >= IDX_MAX_CLASSES || label >= d->num_classes) return NULL;
    return d->class_names[label];
}

static ex_status idx_get(void *self, int64_t index, ex_sample *out, ex_err *err) {
    const idx_dataset *d = self;
    EX_ENSURE(index >= 0 && index < d->n, err, EX_E_RANGE, "idx: sample %lld outside [0, %lld)", (long long)index,
              (long long)d->n);
    memset(out, 0, sizeof *out);
    size_t np = (size_t)(d->h * d->w);
    out->pixels = malloc(np * sizeof(float));
    EX_ENSURE(out->pixels, err, EX_E_NOMEM, "out of memory");
    const uint8_t *src = d->images.data + (size_t)index * np;
    for (size_t i = 0; i < np; i++) out->pixels[i] = (float)src[i] * (1.0f / 255.0f);
    if (d->sensor.photons > 0.0) {
        float *tmp = malloc(np * sizeof(float));
        ex_status st = tmp ? idx_sensor_apply(&d->sensor, index, out->pixels, d->h, d->w, tmp, err)
                           : ex_err_set(err, EX_E_NOMEM, __FILE__, __LINE__, "out of memory");
        free(tmp);
        if (st != EX_OK) {
            ex_sample_clear(out);
            return st;
        }
    }
    out->width = (int)d->w;
    out->height = (int)d->h;
    out->channels = 1;
    out->label = d->labels.count ? d->labels.data[index] : -1;
    out->group = -1;
    snprintf(out->id, sizeof out->id, "%lld", (long long)index);
    return EX_OK;
}

static const ex_dataset_vtable idx_vtable = {
    /* .open        = */ idx_open,
    /* .close       = */ idx_close,
    /* .length      = */ idx_length,
    /* .get         = */ idx_get,
    /* .num_classes = */ idx_num_classes,
    /* .class_name  = */ idx_class_name,
};

static const ex_plugin_desc idx_desc = EX_PLUGIN_DESC(EX_PLUGIN_DATASET, "idx", "0.1.0",
                                                      "MNIST-style IDX image/label files (plain or gzipped)",
                                                      idx_keys, &idx_vtable);

EX_PLUGIN_ENTRY { return &idx_desc; }
