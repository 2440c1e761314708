/*
 * datasets/fmow/fmow_csv.h — the CSV of the `fmow` plugin (fMoW-RGB as
 * SatMAE and ExPLoRA read it: train_62classes.csv, val_62classes.csv).
 *
 * A header row (its names are not used), then one row per image, read by
 * position: column 0 the integer label 0..61 (index into the 62 fMoW
 * categories), column 1 the image path, optional column 2 the timestamp
 * (ISO, e.g. 2016-05-13T10:32:11Z; not used here) and any further columns
 * (ignored). The image path is `path_prefix` + column 1 with every "//"
 * collapsed to "/" (ExPLoRA's prefix rule); a relative result is joined to
 * `root`. Errors name "<csv>:<line>:": a header that looks like data, fewer
 * than 2 columns, a non-integer label, a label outside 0..61, an empty path,
 * and (check_files) an image that does not exist.
 */
#ifndef EXPLORA_FMOW_CSV_H
#define EXPLORA_FMOW_CSV_H

#include <stddef.h>
#include <stdint.h>

#include "explora/status.h"

typedef struct fmow_entry {
    char *path;    /* resolved (malloc'ed) */
    char *id;      /* column 1 as written (malloc'ed) */
    int64_t label; /* 0..61 */
} fmow_entry;

typedef struct fmow_list {
    fmow_entry *items;
    size_t n, cap;
} fmow_list;

typedef struct fmow_csv_opts {
    const char *csv_path;    /* for messages */
    const char *root;        /* folder relative paths start from */
    const char *path_prefix; /* put in front of column 1, may be "" */
    int check_files;         /* stat every image (the plugin does; the fuzzer does not) */
} fmow_csv_opts;

ex_status fmow_csv_parse(const fmow_csv_opts *o, const char *text, size_t size, fmow_list *out, ex_err *err);
void fmow_list_free(fmow_list *l);

#endif /* EXPLORA_FMOW_CSV_H */
