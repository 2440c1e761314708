/*
 * tests/fuzz/fuzz_fmow_csv.c — fuzz the CSV parsing of the fmow,
 * fmow-sentinel and wilds plugins (their sources are compiled in; images are
 * not checked on disk). The first byte picks the parser: '0' fmow, '1'
 * fmow-sentinel, '2' Camelyon17, '3' iWildCam, '4' camelyon17_unlabeled,
 * '5' iwildcam_unlabeled (any byte, modulo 6); the rest is the CSV.
 */
#include "fmow_csv.h"
#include "fms_csv.h"
#include "fuzz_common.h"
#include "wilds_csv.h"

static void run_fmow(const char *text, size_t n) {
    fmow_csv_opts o = {"fuzz.csv", "/nonexistent", "pre/", 0};
    fmow_list l;
    ex_err err;
    if (fmow_csv_parse(&o, text, n, &l, &err) == EX_OK) fmow_list_free(&l);
}

static void run_sentinel(const char *text, size_t n) {
    fms_csv_opts o = {"fuzz.csv", "/nonexistent", "train", 2000, 2020, 0};
    fms_list l;
    ex_err err;
    if (fms_csv_parse(&o, text, n, &l, &err) == EX_OK) fms_list_free(&l);
}

static void run_wilds(const char *text, size_t n, wilds_dataset ds, wilds_split split) {
    wilds_opts o = {"metadata.csv", "/nonexistent", ds, split, 0, 0};
    wilds_list l;
    ex_err err;
    if (wilds_csv_parse(&o, text, n, &l, &err) == EX_OK) wilds_list_free(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 6) {
    case 0: run_fmow(text, n); break;
    case 1: run_sentinel(text, n); break;
    case 2: run_wilds(text, n, WILDS_CAMELYON17, WS_TRAIN); break;
    case 3: run_wilds(text, n, WILDS_IWILDCAM, (wilds_split)(n % WS_COUNT)); break;
    case 4: run_wilds(text, n, WILDS_CAMELYON17_UNLABELED, (wilds_split)(WS_TRAIN_UNLABELED + n % 3)); break;
    default: run_wilds(text, n, WILDS_IWILDCAM_UNLABELED, WS_EXTRA_UNLABELED); break;
    }
    return 0;
}
