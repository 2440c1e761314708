/*
 * datasets/imagefolder/imagefolder_dataset.c — the `imagefolder` dataset
 * plugin: root/<class>/<image> trees as torchvision's ImageFolder reads them
 * (EuroSAT, RESISC-45, most classification sets), JPEG and PNG decoded by
 * ex_image_load (explora/image.h) into (H, W, channels) floats in [0, 1].
 *
 * Order and labels, as torchvision.datasets.ImageFolder:
 *   - classes are the subfolders of root sorted byte-wise; label = index;
 *     class_name(label) is the folder name;
 *   - the images of a class are found recursively (symbolic links followed)
 *     and sorted by (folder, file name) byte-wise; samples run class by class;
 *   - extensions (default jpg, jpeg, png) match the end of the name
 *     case-insensitively. The content decides how a file is decoded.
 * Deliberate differences: names starting with '.' (hidden folders such as
 * .ipynb_checkpoints, macOS "._x.jpg" files) are skipped; a class folder
 * without images is an error (torchvision's default too), naming the folder.
 * Folders nested deeper than 32 levels are an error (a symbolic link loop).
 *
 * Splits, for datasets without an official one (RESISC-45: 60/20/20): with
 * split = train|val|test, each class's sorted file list is shuffled
 * (Fisher-Yates, explora's Philox stream ex_rng_seed(splitmix64(split_seed)
 * XOR fnv1a64(class name), EX_RNG_DATA)) and cut at round(n * f_train),
 * round(n * (f_train + f_val)), round(n * (f_train + f_val + f_test)); the
 * chosen files keep their sorted order. The split of a class depends only on
 * the seed, its name and its files, so the three splits are disjoint and,
 * when the fractions sum to 1, cover the class. An empty split is an error.
 * `limit` then keeps the first N samples of the (split) list.
 *
 * The tree is scanned once in open; get only reads the dataset and decodes
 * one file, so it is safe to call from several threads at once.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/image.h"
#include "explora/plugin.h"
#include "explora/rng.h"
#include "imagefolder_scan.h"

#define IMF_MAX_EXTS 32

enum { SPLIT_ALL = 0, SPLIT_TRAIN = 1, SPLIT_VAL = 2, SPLIT_TEST = 3 };
static const char *const SPLIT_NAMES[] = {"all", "train", "val", "test"};

typedef struct imagefolder {
    char root[4096];
    int channels;
    imf_strlist classes; /* folder names, label order */
    imf_strlist paths;   /* "<class>/<relative path>", dataset order */
    int64_t *labels;     /* per sample */
    size_t labels_cap;
    int64_t n;           /* samples exposed (after limit) */
} imagefolder;

/* Settings read from the config section. */
typedef struct imf_opts {
    char ext_buf[1024];
    const char *ext_items[IMF_MAX_EXTS];
    imf_exts exts;
    int64_t limit, seed;
    int split;
    double fractions[3];
} imf_opts;

static const ex_key_spec imf_keys[] = {
    {"root", EX_KEY_PATH, NULL, EX_NORANGE, NULL, "dataset folder laid out root/<class>/<image>"},
    {"extensions", EX_KEY_STRING_LIST, "jpg, jpeg, png", EX_NORANGE, NULL,
     "file name endings to take, case-insensitive (the content decides JPEG or PNG)"},
    {"channels", EX_KEY_INT, "3", 1, 3, NULL, "1 (gray, BT.601 luma) or 3 (RGB)"},
    {"limit", EX_KEY_INT, "0", 0, 2147483647.0, NULL, "use only the first N samples (0: all)"},
    {"split", EX_KEY_ENUM, "all", EX_NORANGE, "all|train|val|test",
     "all images, or a seeded per-class split by split_fractions"},
    {"split_seed", EX_KEY_INT, "0", EX_NORANGE, NULL, "seed of the per-class shuffle behind split"},
    {"split_fractions", EX_KEY_FLOAT_LIST, "0.6, 0.2, 0.2", 0, 1, NULL,
     "train, val, test fractions of each class (sum <= 1)"},
    EX_KEY_END,
};

/* ---------------------------------------------------------------------------
 * options
 * --------------------------------------------------------------------------- */

/* Strip leading dots from the extensions ("".png" -> "png"); refuse empty ones. */
static ex_status normalise_exts(const ex_cfg_section *cfg, imf_opts *o, int n, ex_err *err) {
    EX_ENSURE(n > 0, err, EX_E_CONFIG, "[%s] extensions is empty; give e.g. \"jpg, jpeg, png\".", cfg->section);
    for (int i = 0; i < n; i++) {
        while (o->ext_items[i][0] == '.') o->ext_items[i]++;
        EX_ENSURE(o->ext_items[i][0], err, EX_E_CONFIG, "[%s] extensions: item %d is empty.", cfg->section, i + 1);
    }
    o->exts.items = o->ext_items;
    o->exts.n = n;
    return EX_OK;
}

static ex_status read_fractions(const ex_cfg_section *cfg, imf_opts *o, ex_err *err) {
    int n = 0;
    EX_CHECK(ex_cfg_float_list(cfg, "split_fractions", o->fractions, 3, &n, err));
    EX_ENSURE(n == 3, err, EX_E_CONFIG, "[%s] split_fractions has %d values; give three: train, val, test.",
              cfg->section, n);
    double sum = o->fractions[0] + o->fractions[1] + o->fractions[2];
    EX_ENSURE(sum <= 1.0 + 1e-9, err, EX_E_CONFIG, "[%s] split_fractions %g, %g, %g sum to %g, more than 1.",
              cfg->section, o->fractions[0], o->fractions[1], o->fractions[2], sum);
    return EX_OK;
}

static ex_status read_opts(const ex_cfg_section *cfg, imagefolder *d, imf_opts *o, ex_err *err) {
    int64_t channels = 3;
    int next = 0;
    EX_CHECK(ex_cfg_path(cfg, "root", d->root, sizeof d->root, err));
    EX_CHECK(ex_cfg_int(cfg, "channels", &channels, err));
    EX_ENSURE(channels == 1 || channels == 3, err, EX_E_CONFIG,
              "[%s] channels = %lld: use 1 (gray) or 3 (RGB).", cfg->section, (long long)channels);
    d->channels = (int)channels;
    EX_CHECK(ex_cfg_string_list(cfg, "extensions", o->ext_items, IMF_MAX_EXTS, &next, o->ext_buf,
                                sizeof o->ext_buf, err));
    EX_CHECK(normalise_exts(cfg, o, next, err));
    EX_CHECK(ex_cfg_int(cfg, "limit", &o->limit, err));
    EX_CHECK(ex_cfg_enum(cfg, "split", &o->split, err));
    EX_CHECK(ex_cfg_int(cfg, "split_seed", &o->seed, err));
    EX_CHECK(read_fractions(cfg, o, err));
    size_t rl = strlen(d->root);
    while (rl > 1 && d->root[rl - 1] == '/') d->root[--rl] = '\0';
    return EX_OK;
}

/* ---------------------------------------------------------------------------
 * splits
 * --------------------------------------------------------------------------- */

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* keep[i] = 1 when the i-th sorted file of class `cls` falls in `split`. */
static ex_status split_select(const char *cls, size_t n, const imf_opts *o, unsigned char *keep, ex_err *err) {
    if (o->split == SPLIT_ALL) {
        memset(keep, 1, n);
        return EX_OK;
    }
    EX_ENSURE(n < UINT32_MAX, err, EX_E_RANGE, "imagefolder: class '%s' has too many files to split.", cls);
    size_t *perm = malloc(n * sizeof *perm);
    EX_ENSURE(perm, err, EX_E_NOMEM, "imagefolder: out of memory splitting class '%s'.", cls);
    for (size_t i = 0; i < n; i++) perm[i] = i;
    ex_rng r = ex_rng_seed(ex_splitmix64((uint64_t)o->seed) ^ fnv1a64(cls), EX_RNG_DATA);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = ex_rng_next_below(&r, (uint32_t)(i + 1));
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    double lo_f = 0.0;
    for (int k = 1; k < o->split; k++) lo_f += o->fractions[k - 1];
    size_t lo = (size_t)llround((double)n * lo_f);
    size_t hi = (size_t)llround((double)n * (lo_f + o->fractions[o->split - 1]));
    if (hi > n) hi = n;
    memset(keep, 0, n);
    for (size_t p = lo; p < hi; p++) keep[perm[p]] = 1;
    free(perm);
    return EX_OK;
}

/* ---------------------------------------------------------------------------
 * scanning
 * --------------------------------------------------------------------------- */

static ex_status push_sample(imagefolder *d, const char *cls, const char *rel, int64_t label, ex_err *err) {
    char path[4096];
    int len = snprintf(path, sizeof path, "%s/%s", cls, rel);
    EX_ENSURE(len >= 0 && (size_t)len < sizeof path, err, EX_E_RANGE, "imagefolder: path too long: '%s/%s/%s'.",
              d->root, cls, rel);
    EX_CHECK(imf_strlist_push(&d->paths, path, err));
    if (d->paths.n > d->labels_cap) {
        size_t cap = d->labels_cap ? d->labels_cap * 2 : 1024;
        int64_t *nl = realloc(d->labels, cap * sizeof *nl);
        EX_ENSURE(nl, err, EX_E_NOMEM, "imagefolder: out of memory listing '%s'.", d->root);
        d->labels = nl;
        d->labels_cap = cap;
    }
    d->labels[d->paths.n - 1] = label;
    return EX_OK;
}

static void format_exts(const imf_exts *e, char *out, size_t cap) {
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < e->n && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? ", " : "", e->items[i]);
}

/* The sorted files of a class, split-selected, appended as samples. */
static ex_status add_files(imagefolder *d, const char *cls, int64_t label, const imf_strlist *files,
                           const imf_opts *o, ex_err *err) {
    const char **sorted = NULL;
    unsigned char *keep = malloc(files->n);
    EX_ENSURE(keep, err, EX_E_NOMEM, "imagefolder: out of memory listing class '%s'.", cls);
    ex_status st;
    EX_CHECK_GOTO(imf_sorted_view(files, &sorted, err), st, done);
    EX_CHECK_GOTO(split_select(cls, files->n, o, keep, err), st, done);
    for (size_t i = 0; i < files->n; i++)
        if (keep[i]) EX_CHECK_GOTO(push_sample(d, cls, sorted[i], label, err), st, done);
done:
    free(sorted);
    free(keep);
    return st;
}

static ex_status add_class(imagefolder *d, const char *cls, int64_t label, const imf_opts *o, ex_err *err) {
    char dir[4096];
    int len = snprintf(dir, sizeof dir, "%s/%s", d->root, cls);
    EX_ENSURE(len >= 0 && (size_t)len < sizeof dir, err, EX_E_RANGE, "imagefolder: path too long: '%s/%s'.",
              d->root, cls);
    imf_strlist files = {0};
    ex_status st;
    EX_CHECK_GOTO(imf_list_files(dir, &o->exts, &files, err), st, done);
    if (files.n == 0) {
        char exts[512];
        format_exts(&o->exts, exts, sizeof exts);
        EX_FAIL_GOTO(err, st, done, EX_E_FORMAT,
                     "imagefolder: the class folder '%s' holds no image files (extensions: %s). Remove it or "
                     "put its images in it: every class folder must hold at least one image.",
                     dir, exts);
    }
    st = add_files(d, cls, label, &files, o, err);
done:
    imf_strlist_free(&files);
    return st;
}

static ex_status scan(imagefolder *d, const imf_opts *o, ex_err *err) {
    size_t loose = 0;
    EX_CHECK(imf_list_classes(d->root, &o->exts, &d->classes, &loose, err));
    if (d->classes.n == 0) {
        if (loose)
            EX_FAIL(err, EX_E_FORMAT,
                    "imagefolder: '%s' has no class folders but %zu images directly inside; the layout must be "
                    "root/<class>/<image>. Hint: for unlabeled images use the imagelist dataset.",
                    d->root, loose);
        EX_FAIL(err, EX_E_FORMAT, "imagefolder: '%s' has no class folders; the layout must be root/<class>/<image>.",
                d->root);
    }
    for (size_t c = 0; c < d->classes.n; c++)
        EX_CHECK(add_class(d, imf_strlist_at(&d->classes, c), (int64_t)c, o, err));
    EX_ENSURE(d->paths.n > 0, err, EX_E_CONFIG,
              "imagefolder: split '%s' of '%s' is empty (split_fractions %g, %g, %g); choose larger fractions.",
              SPLIT_NAMES[o->split], d->root, o->fractions[0], o->fractions[1], o->fractions[2]);
    d->n = (int64_t)d->paths.n;
    if (o->limit > 0 && o->limit < d->n) d->n = o->limit;
    return EX_OK;
}

/* ---------------------------------------------------------------------------
 * plugin slots
 * --------------------------------------------------------------------------- */

static void imf_close(void *self) {
    imagefolder *d = self;
    if (!d) return;
    imf_strlist_free(&d->classes);
    imf_strlist_free(&d->paths);
    free(d->labels);
    free(d);
}

static ex_status imf_open(const ex_cfg_section *cfg, void **self, ex_err *err) {
    imagefolder *d = calloc(1, sizeof *d);
    imf_opts *o = calloc(1, sizeof *o);
    ex_status st = EX_OK;
    if (!d || !o) EX_FAIL_GOTO(err, st, fail, EX_E_NOMEM, "imagefolder: out of memory.");
    EX_CHECK_GOTO(read_opts(cfg, d, o, err), st, fail);
    EX_CHECK_GOTO(scan(d, o, err), st, fail);
    free(o);
    *self = d;
    return EX_OK;
fail:
    free(o);
    imf_close(d);
    return st;
}

static int64_t imf_length(void *self) { return ((imagefolder *)self)->n; }
static int64_t imf_num_classes(void *self) { return (int64_t)((imagefolder *)self)->classes.n; }

static const char *imf_class_name(void *self, int64_t label) {
    const imagefolder *d = self;
    if (label < 0) return NULL;
    return imf_strlist_at(&d->classes, (size_t)label);
}

static ex_status imf_get(void *self, int64_t index, ex_sample *out, ex_err *err) {
    const imagefolder *d = self;
    EX_ENSURE(index >= 0 && index < d->n, err, EX_E_RANGE, "imagefolder: sample %lld outside [0, %lld).",
              (long long)index, (long long)d->n);
    memset(out, 0, sizeof *out);
    const char *rel = imf_strlist_at(&d->paths, (size_t)index);
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", d->root, rel);
    ex_image img;
    EX_CHECK(ex_image_load(path, d->channels, &img, err));
    out->width = img.width;
    out->height = img.height;
    out->channels = img.channels;
    out->pixels = img.pixels;
    out->label = d->labels[index];
    out->group = -1;
    snprintf(out->id, sizeof out->id, "%s", rel);
    return EX_OK;
}

static const ex_dataset_vtable imf_vtable = {
    /* .open        = */ imf_open,
    /* .close       = */ imf_close,
    /* .length      = */ imf_length,
    /* .get         = */ imf_get,
    /* .num_classes = */ imf_num_classes,
    /* .class_name  = */ imf_class_name,
};

static const ex_plugin_desc imf_desc =
    EX_PLUGIN_DESC(EX_PLUGIN_DATASET, "imagefolder", "0.1.0",
                   "root/<class>/<image> JPEG/PNG trees (torchvision ImageFolder order), optional seeded split",
                   imf_keys, &imf_vtable);

EX_PLUGIN_ENTRY { return &imf_desc; }
