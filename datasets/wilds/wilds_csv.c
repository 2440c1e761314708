/*
 * datasets/wilds/wilds_csv.c — parse WILDS metadata.csv and apply the split
 * rules (see wilds_csv.h).
 */
#include "wilds_csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcsv.h"

#define CAMELYON_COLS 8
#define IWILDCAM_COLS 4
#define IWILDCAM_CLASSES 182

const char *const wilds_split_names[WS_COUNT] = {"train", "id_val", "val", "test", "id_test"};

static const char *const camelyon_names[CAMELYON_COLS] = {"patient", "node",  "x_coord", "y_coord",
                                                          "tumor",   "slide", "center",  "split"};
enum { C_PATIENT, C_NODE, C_X, C_Y, C_TUMOR, C_SLIDE, C_CENTER, C_SPLIT };
static const char *const iwildcam_names[IWILDCAM_COLS] = {"split", "filename", "y", "location_remapped"};
enum { I_SPLIT, I_FILENAME, I_Y, I_LOCATION };

void wilds_list_free(wilds_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].path);
        free(l->items[i].id);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

static ex_status append(const wilds_opts *o, const dcsv *c, wilds_list *l, const char *rel, int64_t label,
                        int64_t group, ex_err *err) {
    char path[4096];
    EX_CHECK(dcsv_join(c, o->root, rel, path, sizeof path, err));
    if (o->check_files) EX_CHECK(dcsv_check_image(c, path, err));
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        wilds_entry *ni = realloc(l->items, cap * sizeof *ni);
        EX_ENSURE(ni, err, EX_E_NOMEM, "wilds: out of memory.");
        l->items = ni;
        l->cap = cap;
    }
    wilds_entry *e = &l->items[l->n];
    e->path = strdup(path);
    e->id = strdup(rel);
    e->label = o->unlabeled ? -1 : label;
    e->group = group;
    if (!e->path || !e->id) {
        free(e->path);
        free(e->id);
        EX_FAIL(err, EX_E_NOMEM, "wilds: out of memory.");
    }
    l->n++;
    return EX_OK;
}

/* Header columns by name into cols[]. */
static ex_status find_cols(const dcsv *c, const char *const *names, int n, const char *dataset, int *cols,
                           ex_err *err) {
    for (int i = 0; i < n; i++) {
        cols[i] = dcsv_find(c, names[i]);
        EX_ENSURE(cols[i] >= 0, err, EX_E_FORMAT, "%s:%zu: the header has no column '%s' (is this %s's metadata.csv?).",
                  c->path, c->record_line, names[i], dataset);
    }
    return EX_OK;
}

static ex_status field_count(const dcsv *c, const int *cols, int n, ex_err *err) {
    for (int i = 0; i < n; i++)
        EX_ENSURE(cols[i] < c->nfields, err, EX_E_FORMAT, "%s:%zu: %d fields, fewer than the header names.", c->path,
                  c->record_line, c->nfields);
    return EX_OK;
}

/* ---------------------------------------------------------------------------
 * Camelyon17
 * --------------------------------------------------------------------------- */

/* WILDS: CSV split 0 train, 1 id_val, 2 test, 3 val; then center 1 -> val, center 2 -> test. */
static ex_status camelyon_split(const dcsv *c, int64_t csv_split, int64_t center, wilds_split *out, ex_err *err) {
    static const wilds_split by_id[4] = {WS_TRAIN, WS_ID_VAL, WS_TEST, WS_VAL};
    EX_ENSURE(csv_split >= 0 && csv_split <= 3, err, EX_E_FORMAT,
              "%s:%zu: split %lld is not a Camelyon17 split id (0 train, 1 id_val, 2 test, 3 val).", c->path,
              c->record_line, (long long)csv_split);
    *out = center == 1 ? WS_VAL : center == 2 ? WS_TEST : by_id[csv_split];
    return EX_OK;
}

static ex_status camelyon_patient(const dcsv *c, const char *p, ex_err *err) {
    EX_ENSURE(p[0] && strspn(p, "0123456789") == strlen(p) && strlen(p) < 32, err, EX_E_FORMAT,
              "%s:%zu: patient '%.64s' is not a (zero-padded) number.", c->path, c->record_line, p);
    return EX_OK;
}

static ex_status camelyon_row(const wilds_opts *o, const dcsv *c, const int *cols, wilds_list *out, ex_err *err) {
    EX_CHECK(field_count(c, cols, CAMELYON_COLS, err));
    int64_t v[CAMELYON_COLS] = {0};
    for (int i = C_NODE; i < CAMELYON_COLS; i++) {
        if (i == C_TUMOR && o->unlabeled) continue;
        EX_CHECK(dcsv_int(c, cols[i], camelyon_names[i], &v[i], err));
    }
    wilds_split split = WS_TRAIN;
    EX_CHECK(camelyon_split(c, v[C_SPLIT], v[C_CENTER], &split, err));
    if (split != o->split) return EX_OK;
    const char *patient = c->field[cols[C_PATIENT]];
    EX_CHECK(camelyon_patient(c, patient, err));
    EX_ENSURE(o->unlabeled || v[C_TUMOR] == 0 || v[C_TUMOR] == 1, err, EX_E_FORMAT,
              "%s:%zu: tumor %lld is not 0 or 1.", c->path, c->record_line, (long long)v[C_TUMOR]);
    char rel[512];
    snprintf(rel, sizeof rel, "patches/patient_%s_node_%lld/patch_patient_%s_node_%lld_x_%lld_y_%lld.png", patient,
             (long long)v[C_NODE], patient, (long long)v[C_NODE], (long long)v[C_X], (long long)v[C_Y]);
    return append(o, c, out, rel, v[C_TUMOR], v[C_SLIDE], err);
}

/* ---------------------------------------------------------------------------
 * iWildCam
 * --------------------------------------------------------------------------- */

static ex_status iwildcam_split(const dcsv *c, const char *name, wilds_split *out, ex_err *err) {
    for (int s = 0; s < WS_COUNT; s++) {
        if (strcmp(name, wilds_split_names[s]) == 0) {
            *out = (wilds_split)s;
            return EX_OK;
        }
    }
    EX_FAIL(err, EX_E_FORMAT, "%s:%zu: split '%.64s' is not one of train, val, test, id_val, id_test.", c->path,
            c->record_line, name);
}

static ex_status iwildcam_row(const wilds_opts *o, const dcsv *c, const int *cols, wilds_list *out, ex_err *err) {
    EX_CHECK(field_count(c, cols, IWILDCAM_COLS, err));
    wilds_split split = WS_TRAIN;
    EX_CHECK(iwildcam_split(c, c->field[cols[I_SPLIT]], &split, err));
    if (split != o->split) return EX_OK;
    int64_t y = -1, loc = 0;
    if (!o->unlabeled) EX_CHECK(dcsv_int(c, cols[I_Y], "y", &y, err));
    EX_ENSURE(o->unlabeled || (y >= 0 && y < IWILDCAM_CLASSES), err, EX_E_FORMAT,
              "%s:%zu: label y = %lld is outside 0..%d.", c->path, c->record_line, (long long)y, IWILDCAM_CLASSES - 1);
    EX_CHECK(dcsv_int(c, cols[I_LOCATION], "location_remapped", &loc, err));
    const char *file = c->field[cols[I_FILENAME]];
    EX_ENSURE(file[0] && file[0] != '/' && !strstr(file, ".."), err, EX_E_FORMAT,
              "%s:%zu: filename '%.200s' is empty, absolute or contains '..'.", c->path, c->record_line, file);
    char rel[1024];
    int n = snprintf(rel, sizeof rel, "train/%s", file);
    EX_ENSURE(n > 0 && (size_t)n < sizeof rel, err, EX_E_FORMAT, "%s:%zu: filename too long.", c->path,
              c->record_line);
    return append(o, c, out, rel, y, loc, err);
}

/* ---------------------------------------------------------------------------
 * driver
 * --------------------------------------------------------------------------- */

static ex_status parse_rows(const wilds_opts *o, dcsv *c, wilds_list *out, ex_err *err) {
    int camelyon = o->dataset == WILDS_CAMELYON17;
    const char *dname = camelyon ? "camelyon17" : "iwildcam";
    EX_ENSURE(!(camelyon && o->split == WS_ID_TEST), err, EX_E_CONFIG,
              "wilds: camelyon17 has no id_test split (its splits: train, id_val, val, test).");
    int has = 0;
    EX_CHECK(dcsv_next(c, &has, err));
    EX_ENSURE(has, err, EX_E_FORMAT, "%s: the CSV is empty (no header row).", c->path);
    int cols[CAMELYON_COLS];
    EX_CHECK(find_cols(c, camelyon ? camelyon_names : iwildcam_names, camelyon ? CAMELYON_COLS : IWILDCAM_COLS,
                       dname, cols, err));
    for (;;) {
        EX_CHECK(dcsv_next(c, &has, err));
        if (!has) break;
        EX_CHECK(camelyon ? camelyon_row(o, c, cols, out, err) : iwildcam_row(o, c, cols, out, err));
    }
    EX_ENSURE(out->n > 0, err, EX_E_FORMAT, "%s: no rows of %s's split '%s'.", c->path, dname,
              wilds_split_names[o->split]);
    return EX_OK;
}

ex_status wilds_csv_parse(const wilds_opts *o, const char *text, size_t size, wilds_list *out, ex_err *err) {
    memset(out, 0, sizeof *out);
    dcsv c;
    dcsv_init(&c, o->csv_path, text, size);
    ex_status st = parse_rows(o, &c, out, err);
    dcsv_free(&c);
    if (st != EX_OK) wilds_list_free(out);
    return st;
}
