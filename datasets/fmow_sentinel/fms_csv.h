/*
 * datasets/fmow_sentinel/fms_csv.h — the CSV of the `fmow-sentinel` plugin
 * (fMoW-Sentinel as SatMAE reads it: train.csv, val.csv, test_gt.csv).
 *
 * A header row naming the columns; `category` (one of the 62 fMoW names),
 * `location_id`, `image_id` (integers) and `timestamp` (YYYY-MM-DDThh:mm:ssZ)
 * are required, others (polygon, image_path ...) are ignored: the stored
 * image_path is wrong, so the path is rebuilt as
 *   <root>/<split>/<category>/<category>_<location_id>/<category>_<location_id>_<image_id>.tif
 * Rows whose year (timestamp[0:4]) lies outside [min_year, max_year] are
 * dropped; the rest are sorted by (category, location_id, timestamp), ties
 * kept in file order. label = index of category among the 62 names. Errors
 * name "<csv>:<line>:" (an unknown category, a non-integer id, a bad
 * timestamp, a missing column, a missing image when check_files).
 */
#ifndef EXPLORA_FMS_CSV_H
#define EXPLORA_FMS_CSV_H

#include <stddef.h>
#include <stdint.h>

#include "explora/status.h"

typedef struct fms_entry {
    char *path;     /* rebuilt image path (malloc'ed) */
    char *id;       /* "<category>_<location_id>_<image_id>" (malloc'ed) */
    char *timestamp; /* as written (malloc'ed) */
    int64_t label;  /* 0..61 */
    int64_t location_id;
    int64_t image_id;
    size_t line;    /* CSV line, for messages and as the sort tie-break */
} fms_entry;

typedef struct fms_list {
    fms_entry *items;
    size_t n, cap;
} fms_list;

typedef struct fms_csv_opts {
    const char *csv_path;
    const char *root;
    const char *split; /* folder under root: train, val, test */
    int64_t min_year, max_year;
    int check_files;
} fms_csv_opts;

ex_status fms_csv_parse(const fms_csv_opts *o, const char *text, size_t size, fms_list *out, ex_err *err);
void fms_list_free(fms_list *l);

#endif /* EXPLORA_FMS_CSV_H */
