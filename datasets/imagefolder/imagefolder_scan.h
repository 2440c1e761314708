/*
 * datasets/imagefolder/imagefolder_scan.h — directory scanning for the
 * `imagefolder` plugin: a compact string list, the class folders of a root,
 * and the image files of one class in torchvision's order.
 */
#ifndef EXPLORA_IMAGEFOLDER_SCAN_H
#define EXPLORA_IMAGEFOLDER_SCAN_H

#include <stddef.h>

#include "explora/status.h"

/* Strings packed in one buffer; item i starts at buf + offs[i]. */
typedef struct imf_strlist {
    char *buf;
    size_t len, cap;
    size_t *offs;
    size_t n, ncap;
} imf_strlist;

ex_status imf_strlist_push(imf_strlist *l, const char *s, ex_err *err);
const char *imf_strlist_at(const imf_strlist *l, size_t i);
void imf_strlist_free(imf_strlist *l);

/* Accepted extensions (without the dot), matched case-insensitively at the end of a name. */
typedef struct imf_exts {
    const char *const *items;
    int n;
} imf_exts;

/* The class folders of `root`: subdirectories (symlinks followed) whose names
 * do not start with '.', sorted byte-wise. *loose_images counts image files
 * sitting directly in root (for the hint when there are no classes). */
ex_status imf_list_classes(const char *root, const imf_exts *exts, imf_strlist *classes, size_t *loose_images,
                           ex_err *err);

/* The image files under `class_dir`, recursively (symlinks followed, at most
 * 32 levels, names starting with '.' skipped), as paths relative to
 * class_dir, in torchvision's order: sorted by (folder, file name) byte-wise,
 * i.e. the order of `for root, _, files in sorted(os.walk(d)): for f in sorted(files)`. */
ex_status imf_list_files(const char *class_dir, const imf_exts *exts, imf_strlist *files, ex_err *err);

/* A malloc'ed array of the l->n items of `l` (pointers into it, valid until
 * the next push) sorted in torchvision order (see imf_list_files). */
ex_status imf_sorted_view(const imf_strlist *l, const char ***out, ex_err *err);

#endif /* EXPLORA_IMAGEFOLDER_SCAN_H */
