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

const char *const wilds_split_names[WS_COUNT] = {"train",           "id_val",        "val",
                                                 "test",            "id_test",       "train_unlabeled",
                                                 "val_unlabeled",   "test_unlabeled", "extra_unlabeled"};

static const char *const dataset_names[4] = {"camelyon17", "iwildcam", "camelyon17_unlabeled", "iwildcam_unlabeled"};

wilds_split wilds_default_split(wilds_dataset d) {
    return d == WILDS_CAMELYON17_UNLABELED ? WS_TRAIN_UNLABELED : d == WILDS_IWILDCAM_UNLABELED ? WS_EXTRA_UNLABELED : WS_TRAIN;
}

int wilds_is_unlabeled_package(wilds_dataset d) { return d == WILDS_CAMELYON17_UNLABELED || d == WILDS_IWILDCAM_UNLABELED; }

/* The splits each dataset has, for checks and messages. */
static int has_split(wilds_dataset d, wilds_split s) {
    switch (d) {
    case WILDS_CAMELYON17: return s == WS_TRAIN || s == WS_ID_VAL || s == WS_VAL || s == WS_TEST;
    case WILDS_IWILDCAM: return s <= WS_ID_TEST;
    case WILDS_CAMELYON17_UNLABELED: return s == WS_TRAIN_UNLABELED || s == WS_VAL_UNLABELED || s == WS_TEST_UNLABELED;
    case WILDS_IWILDCAM_UNLABELED: return s == WS_EXTRA_UNLABELED;
    }
    return 0;
}

static const char *split_list(wilds_dataset d) {
    switch (d) {
    case WILDS_CAMELYON17: return "train, id_val, val, test";
    case WILDS_IWILDCAM: return "train, id_val, val, test, id_test";
    case WILDS_CAMELYON17_UNLABELED: return "train_unlabeled, val_unlabeled, test_unlabeled";
    case WILDS_IWILDCAM_UNLABELED: return "extra_unlabeled";
    }
    return "";
}

static const char *const camelyon_names[CAMELYON_COLS] = {"patient", "node",  "x_coord", "y_coord",
                                                          "tumor",   "slide", "center",  "split"};
enum { C_PATIENT, C_NODE, C_X, C_Y, C_TUMOR, C_SLIDE, C_CENTER, C_SPLIT };
static const char *const iwildcam_names[IWILDCAM_COLS] = {"split", "filename", "y", "location_remapped"};
enum { I_SPLIT, I_FILENAME, I_Y, I_LOCATION };
#define CAMELYON_U_COLS 6
static const char *const camelyon_u_names[CAMELYON_U_COLS] = {"patient", "node", "x_coord", "y_coord", "slide", "center"};
enum { CU_PATIENT, CU_NODE, CU_X, CU_Y, CU_SLIDE, CU_CENTER };
#define IWILDCAM_U_COLS 2
static const char *const iwildcam_u_names[IWILDCAM_U_COLS] = {"uid", "location_remapped"};
enum { IU_UID, IU_LOCATION };

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
    for (int s = 0; s <= WS_ID_TEST; s++) {
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
 * the unlabeled packages
 * --------------------------------------------------------------------------- */

/* A file name from the CSV that must stay inside the dataset folder. */
static ex_status safe_name(const dcsv *c, const char *what, const char *v, ex_err *err) {
    EX_ENSURE(v[0] && v[0] != '/' && !strstr(v, ".."), err, EX_E_FORMAT, "%s:%zu: %s '%.200s' is empty, absolute or contains '..'.",
              c->path, c->record_line, what, v);
    return EX_OK;
}

static ex_status camelyon_u_row(const wilds_opts *o, const dcsv *c, const int *cols, wilds_list *out, ex_err *err) {
    EX_CHECK(field_count(c, cols, CAMELYON_U_COLS, err));
    int64_t v[CAMELYON_U_COLS] = {0};
    for (int i = CU_NODE; i < CAMELYON_U_COLS; i++) EX_CHECK(dcsv_int(c, cols[i], camelyon_u_names[i], &v[i], err));
    /* WILDS: hospital 1 is the validation hospital, 2 the test one, as in the labelled package */
    const wilds_split split = v[CU_CENTER] == 1 ? WS_VAL_UNLABELED : v[CU_CENTER] == 2 ? WS_TEST_UNLABELED : WS_TRAIN_UNLABELED;
    if (split != o->split) return EX_OK;
    const char *patient = c->field[cols[CU_PATIENT]];
    EX_CHECK(camelyon_patient(c, patient, err));
    char rel[512];
    snprintf(rel, sizeof rel, "patches/patient_%s_node_%lld/patch_patient_%s_node_%lld_x_%lld_y_%lld.png", patient,
             (long long)v[CU_NODE], patient, (long long)v[CU_NODE], (long long)v[CU_X], (long long)v[CU_Y]);
    return append(o, c, out, rel, -1, v[CU_SLIDE], err);
}

static ex_status iwildcam_u_row(const wilds_opts *o, const dcsv *c, const int *cols, wilds_list *out, ex_err *err) {
    EX_CHECK(field_count(c, cols, IWILDCAM_U_COLS, err));
    int64_t loc = 0;
    EX_CHECK(dcsv_int(c, cols[IU_LOCATION], "location_remapped", &loc, err));
    const char *uid = c->field[cols[IU_UID]];
    EX_CHECK(safe_name(c, "uid", uid, err));
    char rel[1024];
    int n = snprintf(rel, sizeof rel, "images/%s.jpg", uid);
    EX_ENSURE(n > 0 && (size_t)n < sizeof rel, err, EX_E_FORMAT, "%s:%zu: uid too long.", c->path, c->record_line);
    return append(o, c, out, rel, -1, loc, err);
}

/* ---------------------------------------------------------------------------
 * driver
 * --------------------------------------------------------------------------- */

static ex_status parse_rows(const wilds_opts *o, dcsv *c, wilds_list *out, ex_err *err) {
    const wilds_dataset d = o->dataset;
    const char *dname = dataset_names[d];
    EX_ENSURE(has_split(d, o->split), err, EX_E_CONFIG, "wilds: %s has no split '%s' (its splits: %s).", dname,
              wilds_split_names[o->split], split_list(d));
    int has = 0;
    EX_CHECK(dcsv_next(c, &has, err));
    EX_ENSURE(has, err, EX_E_FORMAT, "%s: the CSV is empty (no header row).", c->path);
    static const char *const *const names[4] = {camelyon_names, iwildcam_names, camelyon_u_names, iwildcam_u_names};
    static const int ncols[4] = {CAMELYON_COLS, IWILDCAM_COLS, CAMELYON_U_COLS, IWILDCAM_U_COLS};
    int cols[CAMELYON_COLS];
    EX_CHECK(find_cols(c, names[d], ncols[d], dname, cols, err));
    for (;;) {
        EX_CHECK(dcsv_next(c, &has, err));
        if (!has) break;
        switch (d) {
        case WILDS_CAMELYON17: EX_CHECK(camelyon_row(o, c, cols, out, err)); break;
        case WILDS_IWILDCAM: EX_CHECK(iwildcam_row(o, c, cols, out, err)); break;
        case WILDS_CAMELYON17_UNLABELED: EX_CHECK(camelyon_u_row(o, c, cols, out, err)); break;
        case WILDS_IWILDCAM_UNLABELED: EX_CHECK(iwildcam_u_row(o, c, cols, out, err)); break;
        }
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
