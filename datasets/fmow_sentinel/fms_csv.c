/*
 * datasets/fmow_sentinel/fms_csv.c — parse, filter and sort the
 * fMoW-Sentinel CSV (format in fms_csv.h).
 */
#include "fms_csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcsv.h"
#include "fmow_classes.h"

/* Column indices of the required fields. */
typedef struct fms_cols {
    int category, location_id, image_id, timestamp;
} fms_cols;

void fms_list_free(fms_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].path);
        free(l->items[i].id);
        free(l->items[i].timestamp);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

static ex_status find_col(const dcsv *c, const char *name, int *col, ex_err *err) {
    *col = dcsv_find(c, name);
    EX_ENSURE(*col >= 0, err, EX_E_FORMAT,
              "%s:%zu: the header has no column '%s'; fMoW-Sentinel CSVs have category, location_id, image_id, "
              "timestamp (and polygon, image_path).",
              c->path, c->record_line, name);
    return EX_OK;
}

static ex_status read_header(dcsv *c, fms_cols *cols, ex_err *err) {
    int has = 0;
    EX_CHECK(dcsv_next(c, &has, err));
    EX_ENSURE(has, err, EX_E_FORMAT, "%s: the CSV is empty (no header row).", c->path);
    EX_CHECK(find_col(c, "category", &cols->category, err));
    EX_CHECK(find_col(c, "location_id", &cols->location_id, err));
    EX_CHECK(find_col(c, "image_id", &cols->image_id, err));
    return find_col(c, "timestamp", &cols->timestamp, err);
}

/* Year of "YYYY-..." (four digits first). */
static ex_status timestamp_year(const dcsv *c, const char *ts, int64_t *year, ex_err *err) {
    EX_ENSURE(strspn(ts, "0123456789") >= 4, err, EX_E_FORMAT,
              "%s:%zu: timestamp '%.64s' does not start with a 4-digit year (expected YYYY-MM-DDThh:mm:ssZ).",
              c->path, c->record_line, ts);
    *year = (ts[0] - '0') * 1000 + (ts[1] - '0') * 100 + (ts[2] - '0') * 10 + (ts[3] - '0');
    return EX_OK;
}

static ex_status grow(fms_list *l, ex_err *err) {
    if (l->n < l->cap) return EX_OK;
    size_t cap = l->cap ? l->cap * 2 : 256;
    fms_entry *ni = realloc(l->items, cap * sizeof *ni);
    EX_ENSURE(ni, err, EX_E_NOMEM, "fmow-sentinel: out of memory.");
    l->items = ni;
    l->cap = cap;
    return EX_OK;
}

/* Build the path and id of entry e (label, ids set) under o->root/o->split. */
static ex_status name_entry(const fms_csv_opts *o, const dcsv *c, fms_entry *e, ex_err *err) {
    const char *cat = fmow_class_names[e->label];
    char rel[1024], path[4096];
    int n = snprintf(rel, sizeof rel, "%s/%s/%s_%lld/%s_%lld_%lld.tif", o->split, cat, cat,
                     (long long)e->location_id, cat, (long long)e->location_id, (long long)e->image_id);
    EX_ENSURE(n > 0 && (size_t)n < sizeof rel, err, EX_E_FORMAT, "%s:%zu: image path too long.", c->path,
              c->record_line);
    EX_CHECK(dcsv_join(c, o->root, rel, path, sizeof path, err));
    char id[256];
    snprintf(id, sizeof id, "%s_%lld_%lld", cat, (long long)e->location_id, (long long)e->image_id);
    e->path = strdup(path);
    e->id = strdup(id);
    EX_ENSURE(e->path && e->id, err, EX_E_NOMEM, "fmow-sentinel: out of memory.");
    return EX_OK;
}

static ex_status parse_row(const fms_csv_opts *o, const dcsv *c, const fms_cols *cols, fms_list *out,
                           ex_err *err) {
    EX_ENSURE(cols->category < c->nfields && cols->timestamp < c->nfields, err, EX_E_FORMAT,
              "%s:%zu: %d fields, fewer than the header names.", c->path, c->record_line, c->nfields);
    const char *cat = c->field[cols->category];
    int label = fmow_class_index(cat);
    EX_ENSURE(label >= 0, err, EX_E_FORMAT, "%s:%zu: category '%.64s' is not one of the 62 fMoW categories.",
              c->path, c->record_line, cat);
    const char *ts = c->field[cols->timestamp];
    int64_t year = 0, loc = 0, img = 0;
    EX_CHECK(timestamp_year(c, ts, &year, err));
    EX_CHECK(dcsv_int(c, cols->location_id, "location_id", &loc, err));
    EX_CHECK(dcsv_int(c, cols->image_id, "image_id", &img, err));
    EX_ENSURE(loc >= 0 && img >= 0, err, EX_E_FORMAT, "%s:%zu: negative location_id or image_id.", c->path,
              c->record_line);
    if (year < o->min_year || year > o->max_year) return EX_OK;
    EX_CHECK(grow(out, err));
    fms_entry *e = &out->items[out->n];
    memset(e, 0, sizeof *e);
    out->n++; /* counted now so that fms_list_free releases what name_entry allocated */
    e->label = label;
    e->location_id = loc;
    e->image_id = img;
    e->line = c->record_line;
    e->timestamp = strdup(ts);
    EX_ENSURE(e->timestamp, err, EX_E_NOMEM, "fmow-sentinel: out of memory.");
    EX_CHECK(name_entry(o, c, e, err));
    if (o->check_files) EX_CHECK(dcsv_check_image(c, e->path, err));
    return EX_OK;
}

static int cmp_entry(const void *pa, const void *pb) {
    const fms_entry *a = pa, *b = pb;
    int r = strcmp(fmow_class_names[a->label], fmow_class_names[b->label]);
    if (r) return r;
    if (a->location_id != b->location_id) return a->location_id < b->location_id ? -1 : 1;
    r = strcmp(a->timestamp, b->timestamp);
    if (r) return r;
    return a->line < b->line ? -1 : a->line > b->line;
}

static ex_status parse_rows(const fms_csv_opts *o, dcsv *c, fms_list *out, ex_err *err) {
    fms_cols cols = {-1, -1, -1, -1};
    EX_CHECK(read_header(c, &cols, err));
    size_t rows = 0;
    for (;;) {
        int has = 0;
        EX_CHECK(dcsv_next(c, &has, err));
        if (!has) break;
        rows++;
        EX_CHECK(parse_row(o, c, &cols, out, err));
    }
    EX_ENSURE(out->n > 0, err, EX_E_FORMAT, "%s: no images: %zu rows, none with a year in [%lld, %lld].", o->csv_path,
              rows, (long long)o->min_year, (long long)o->max_year);
    qsort(out->items, out->n, sizeof *out->items, cmp_entry);
    return EX_OK;
}

ex_status fms_csv_parse(const fms_csv_opts *o, const char *text, size_t size, fms_list *out, ex_err *err) {
    memset(out, 0, sizeof *out);
    dcsv c;
    dcsv_init(&c, o->csv_path, text, size);
    ex_status st = parse_rows(o, &c, out, err);
    dcsv_free(&c);
    if (st != EX_OK) fms_list_free(out);
    return st;
}
