/*
 * datasets/imagelist/imagelist_parse.h — parse the list file of the
 * `imagelist` plugin and check that every image it names exists.
 *
 * Format (one rule, no CSV): UTF-8 or plain bytes, one entry per line (LF or
 * CRLF; a UTF-8 BOM is skipped). Blank lines and lines whose first non-blank
 * character is '#' are skipped; there are no inline comments ('#' may occur
 * in file names). An entry is
 *
 *     <path>                  unlabeled
 *     <path> <label>          labeled: whitespace (spaces or tabs), then an integer
 *
 * The label is the last whitespace-separated field when that field is an
 * integer (optional '-' and digits); otherwise the whole trimmed line is the
 * path, so paths may contain spaces. Either every entry has a label or none
 * has (a mix is an error naming the line); labels must lie in [0, 2^31 - 1].
 * Relative paths are joined to `base_dir` (the `root` key, else the list
 * file's folder); absolute paths are kept.
 */
#ifndef EXPLORA_IMAGELIST_PARSE_H
#define EXPLORA_IMAGELIST_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "explora/status.h"

typedef struct iml_entry {
    char *path;    /* resolved path (malloc'ed) */
    char *id;      /* the path as written in the list (malloc'ed) */
    int64_t label; /* -1 when unlabeled */
} iml_entry;

typedef struct iml_list {
    iml_entry *items;
    size_t n, cap;
    int labeled;       /* entries carry labels */
    int64_t max_label; /* -1 when unlabeled */
} iml_list;

/* Parse `text` (size bytes) read from `list_path`. Every image must exist and
 * be a regular file; errors are "<list_path>:<line>: ..." (EX_E_FORMAT for
 * syntax, EX_E_IO for missing images). An empty list is EX_E_FORMAT. */
ex_status iml_parse(const char *list_path, const char *text, size_t size, const char *base_dir, iml_list *out,
                    ex_err *err);
void iml_list_free(iml_list *l);

#endif /* EXPLORA_IMAGELIST_PARSE_H */
