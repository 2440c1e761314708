/*
 * datasets/fmow/fmow_csv.c — parse the fMoW-RGB CSV (format in fmow_csv.h).
 */
#include "fmow_csv.h"

#include <stdlib.h>
#include <string.h>

#include "dcsv.h"
#include "fmow_classes.h"

void fmow_list_free(fmow_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].path);
        free(l->items[i].id);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

static ex_status append(fmow_list *l, const char *path, const char *id, int64_t label, ex_err *err) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        fmow_entry *ni = realloc(l->items, cap * sizeof *ni);
        EX_ENSURE(ni, err, EX_E_NOMEM, "fmow: out of memory.");
        l->items = ni;
        l->cap = cap;
    }
    fmow_entry *e = &l->items[l->n];
    e->path = strdup(path);
    e->id = strdup(id);
    e->label = label;
    if (!e->path || !e->id) {
        free(e->path);
        free(e->id);
        EX_FAIL(err, EX_E_NOMEM, "fmow: out of memory.");
    }
    l->n++;
    return EX_OK;
}

/* The header row is skipped by position; a first row whose column 0 is an integer is data, not a header. */
static ex_status check_header(const dcsv *c, ex_err *err) {
    int64_t v = 0;
    EX_ENSURE(c->nfields < 1 || dcsv_int(c, 0, "label", &v, NULL) != EX_OK, err, EX_E_FORMAT,
              "%s:%zu: the first row looks like data (label %lld), not a header; the CSV must start with a header "
              "row such as 'category,image_path,timestamp'.",
              c->path, c->record_line, (long long)v);
    return EX_OK;
}

/* path_prefix + written, every "//" collapsed to "/". */
static ex_status prefixed(const dcsv *c, const char *prefix, const char *written, char *out, size_t cap,
                          ex_err *err) {
    size_t len = 0;
    for (const char *parts[2] = {prefix, written}, **pp = parts; pp < parts + 2; pp++) {
        for (const char *s = *pp; *s; s++) {
            if (*s == '/' && len > 0 && out[len - 1] == '/') continue;
            EX_ENSURE(len + 1 < cap, err, EX_E_FORMAT, "%s:%zu: image path '%.200s' is longer than %zu bytes.",
                      c->path, c->record_line, written, cap - 1);
            out[len++] = *s;
        }
    }
    out[len] = '\0';
    return EX_OK;
}

static ex_status parse_row(const fmow_csv_opts *o, const dcsv *c, fmow_list *out, ex_err *err) {
    EX_ENSURE(c->nfields >= 2, err, EX_E_FORMAT,
              "%s:%zu: %d field%s; a row needs the label (column 0) and the image path (column 1).", c->path,
              c->record_line, c->nfields, c->nfields == 1 ? "" : "s");
    int64_t label = 0;
    EX_CHECK(dcsv_int(c, 0, "label (column 0)", &label, err));
    EX_ENSURE(label >= 0 && label < FMOW_NUM_CLASSES, err, EX_E_FORMAT,
              "%s:%zu: label %lld is outside 0..%d (the 62 fMoW categories).", c->path, c->record_line,
              (long long)label, FMOW_NUM_CLASSES - 1);
    const char *written = c->field[1];
    EX_ENSURE(written[0], err, EX_E_FORMAT, "%s:%zu: the image path (column 1) is empty.", c->path, c->record_line);
    char joined[4096], path[4096];
    EX_CHECK(prefixed(c, o->path_prefix ? o->path_prefix : "", written, joined, sizeof joined, err));
    EX_CHECK(dcsv_join(c, o->root, joined, path, sizeof path, err));
    if (o->check_files) EX_CHECK(dcsv_check_image(c, path, err));
    return append(out, path, written, label, err);
}

static ex_status parse_rows(const fmow_csv_opts *o, dcsv *c, fmow_list *out, ex_err *err) {
    int has = 0;
    EX_CHECK(dcsv_next(c, &has, err));
    EX_ENSURE(has, err, EX_E_FORMAT, "%s: the CSV is empty (no header row, no images).", o->csv_path);
    EX_CHECK(check_header(c, err));
    for (;;) {
        EX_CHECK(dcsv_next(c, &has, err));
        if (!has) break;
        EX_CHECK(parse_row(o, c, out, err));
    }
    EX_ENSURE(out->n > 0, err, EX_E_FORMAT, "%s: the CSV has a header row but no images.", o->csv_path);
    return EX_OK;
}

ex_status fmow_csv_parse(const fmow_csv_opts *o, const char *text, size_t size, fmow_list *out, ex_err *err) {
    memset(out, 0, sizeof *out);
    dcsv c;
    dcsv_init(&c, o->csv_path, text, size);
    ex_status st = parse_rows(o, &c, out, err);
    dcsv_free(&c);
    if (st != EX_OK) fmow_list_free(out);
    return st;
}
