/*
 * example_dataset.c — a dataset plugin written outside explora: checkerboard
 * images whose square size is the label (labels 0..classes-1 -> squares of
 * 1..classes pixels). A template for your own plugins.
 */
#include <stdlib.h>
#include <string.h>

#include <explora/plugin.h>

typedef struct checkers {
    int64_t count, size, classes;
} checkers;

static const ex_key_spec keys[] = {
    {"count", EX_KEY_INT, "8", 1, 1e9, NULL, "number of images"},
    {"size", EX_KEY_INT, "16", 2, 4096, NULL, "image side in pixels"},
    {"classes", EX_KEY_INT, "4", 1, 64, NULL, "number of square sizes (= labels)"},
    EX_KEY_END,
};

static ex_status ck_open(const ex_cfg_section *cfg, void **self, ex_err *err) {
    checkers *c = calloc(1, sizeof *c);
    EX_ENSURE(c, err, EX_E_NOMEM, "out of memory");
    ex_status st = ex_cfg_int(cfg, "count", &c->count, err);
    if (st == EX_OK) st = ex_cfg_int(cfg, "size", &c->size, err);
    if (st == EX_OK) st = ex_cfg_int(cfg, "classes", &c->classes, err);
    if (st != EX_OK) {
        free(c);
        return st;
    }
    *self = c;
    return EX_OK;
}

static void ck_close(void *self) { free(self); }
static int64_t ck_length(void *self) { return ((checkers *)self)->count; }
static int64_t ck_classes(void *self) { return ((checkers *)self)->classes; }

static ex_status ck_get(void *self, int64_t index, ex_sample *out, ex_err *err) {
    const checkers *c = self;
    EX_ENSURE(index >= 0 && index < c->count, err, EX_E_RANGE, "index %lld out of range", (long long)index);
    memset(out, 0, sizeof *out);
    out->width = out->height = (int)c->size;
    out->channels = 1;
    out->label = index % c->classes;
    out->group = -1;
    int64_t sq = out->label + 1;
    out->pixels = malloc(sizeof(float) * (size_t)(c->size * c->size));
    EX_ENSURE(out->pixels, err, EX_E_NOMEM, "out of memory");
    for (int64_t y = 0; y < c->size; y++)
        for (int64_t x = 0; x < c->size; x++) out->pixels[y * c->size + x] = (float)(((x / sq) + (y / sq)) % 2);
    snprintf(out->id, sizeof out->id, "checkers-%lld", (long long)index);
    return EX_OK;
}

static const ex_dataset_vtable vt = {
    /* .open        = */ ck_open,
    /* .close       = */ ck_close,
    /* .length      = */ ck_length,
    /* .get         = */ ck_get,
    /* .num_classes = */ ck_classes,
    /* .class_name  = */ NULL,
};

static const ex_plugin_desc desc =
    EX_PLUGIN_DESC(EX_PLUGIN_DATASET, "example-checkers", "1.0.0", "checkerboards, built out of tree", keys, &vt);

EX_PLUGIN_ENTRY { return &desc; }
