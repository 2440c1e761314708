/*
 * datasets/wilds/wilds_csv.h — metadata.csv of the WILDS datasets the `wilds`
 * plugin reads, and their split rules (WILDS v1.0 Camelyon17, v2.0 iWildCam).
 *
 * Camelyon17: an unnamed index column, then patient,node,x_coord,y_coord,
 *   tumor,slide,center,split (columns found by header name). `patient` is a
 *   string ("004", zero padding kept); the image is
 *   patches/patient_{patient}_node_{node}/patch_patient_{patient}_node_{node}_x_{x}_y_{y}.png.
 *   Split, as WILDS computes it: the CSV value (0 train, 1 id_val, 2 test,
 *   3 val), then every center-1 row becomes val and every center-2 row test.
 *   There is no id_test. label = tumor (0/1), group = slide.
 * iWildCam: columns split (a name: train, val, test, id_val, id_test),
 *   filename, y (0..181), location_remapped; image train/<filename>.
 *   label = y, group = location_remapped.
 * `unlabeled` hides labels (label -1) and does not read the label column.
 *
 * The unlabeled packages WILDS ships for pre-training (labels always -1):
 * camelyon17_unlabeled (v1.0): the Camelyon17 columns without split and
 *   tumor (patient,node,x_coord,y_coord,slide,center), the same patch paths;
 *   split by hospital as WILDS does: center 1 -> val_unlabeled, center 2 ->
 *   test_unlabeled, the others train_unlabeled. group = slide.
 * iwildcam_unlabeled (v1.0): columns uid and location_remapped; image
 *   images/<uid>.jpg; one split, extra_unlabeled. group = location_remapped.
 * Rows keep file order. Errors name "<csv>:<line>:".
 */
#ifndef EXPLORA_WILDS_CSV_H
#define EXPLORA_WILDS_CSV_H

#include <stddef.h>
#include <stdint.h>

#include "explora/status.h"

/* In the order of the plugin's `dataset` enum. */
typedef enum wilds_dataset {
    WILDS_CAMELYON17 = 0,
    WILDS_IWILDCAM = 1,
    WILDS_CAMELYON17_UNLABELED = 2,
    WILDS_IWILDCAM_UNLABELED = 3
} wilds_dataset;

/* In the order of the plugin's `split` enum (after its "default"). */
typedef enum wilds_split {
    WS_TRAIN = 0, WS_ID_VAL, WS_VAL, WS_TEST, WS_ID_TEST,                    /* the labelled packages */
    WS_TRAIN_UNLABELED, WS_VAL_UNLABELED, WS_TEST_UNLABELED, WS_EXTRA_UNLABELED, /* the unlabeled ones */
    WS_COUNT
} wilds_split;

/* The split a dataset reads when the config does not name one: train, train_unlabeled, extra_unlabeled. */
wilds_split wilds_default_split(wilds_dataset d);
/* Whether the dataset is one of the unlabeled packages. */
int wilds_is_unlabeled_package(wilds_dataset d);

extern const char *const wilds_split_names[WS_COUNT];

typedef struct wilds_entry {
    char *path;    /* malloc'ed */
    char *id;      /* path relative to root (malloc'ed) */
    int64_t label; /* -1 when unlabeled */
    int64_t group; /* slide / location_remapped */
} wilds_entry;

typedef struct wilds_list {
    wilds_entry *items;
    size_t n, cap;
} wilds_list;

typedef struct wilds_opts {
    const char *csv_path;
    const char *root;
    wilds_dataset dataset;
    wilds_split split;
    int unlabeled;
    int check_files;
} wilds_opts;

ex_status wilds_csv_parse(const wilds_opts *o, const char *text, size_t size, wilds_list *out, ex_err *err);
void wilds_list_free(wilds_list *l);

#endif /* EXPLORA_WILDS_CSV_H */
