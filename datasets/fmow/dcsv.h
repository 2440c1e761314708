/*
 * datasets/fmow/dcsv.h — a small strict CSV reader shared by the fmow,
 * fmow-sentinel and wilds dataset plugins (compiled into each of them).
 *
 * RFC 4180 with the usual liberties: fields separated by ',', optionally
 * quoted with '"' ("" inside quotes is a quote; quoted fields may hold commas
 * and newlines, e.g. fMoW-Sentinel's polygon column), records end with LF or
 * CRLF, a UTF-8 BOM is skipped, blank lines are skipped. A NUL byte, text
 * after a closing quote, a quote inside an unquoted field, an unterminated
 * quote, more than DCSV_MAX_FIELDS fields or a record longer than
 * DCSV_MAX_RECORD bytes are errors "<file>:<line>: ...". The reader works on
 * a buffer in memory and keeps its state in the dcsv struct (no globals).
 */
#ifndef EXPLORA_DCSV_H
#define EXPLORA_DCSV_H

#include <stddef.h>
#include <stdint.h>

#include "explora/status.h"

#define DCSV_MAX_FIELDS 64
#define DCSV_MAX_RECORD (1 << 20)

typedef struct dcsv {
    const char *path; /* for messages */
    const char *p, *end;
    size_t line;      /* line of the next record */
    char *buf;        /* the current record's fields, NUL-separated (malloc'ed) */
    size_t cap;
    int nfields;
    const char *field[DCSV_MAX_FIELDS];
    size_t record_line; /* line the current record starts on */
} dcsv;

/* Start reading `text` (size bytes; need not be NUL-terminated). */
void dcsv_init(dcsv *c, const char *path, const char *text, size_t size);
void dcsv_free(dcsv *c);

/* Read the next record into c->field[0 .. nfields-1]; *has_row = 0 at the end. */
ex_status dcsv_next(dcsv *c, int *has_row, ex_err *err);

/* Index of the header field named `name` (exact, after trimming blanks), or -1. */
int dcsv_find(const dcsv *c, const char *name);

/* Parse field `i` of the current record as a decimal integer ("-?[0-9]+", blanks
 * around allowed; "12.0" is accepted as pandas writes floats of integer
 * columns) into *v; an error names file, line and `what`. */
ex_status dcsv_int(const dcsv *c, int i, const char *what, int64_t *v, ex_err *err);

/* Helpers of the CSV-driven dataset plugins: the image `path` named at
 * <csv>:<line> must exist and be a regular file (EX_E_IO otherwise). */
ex_status dcsv_check_image(const dcsv *c, const char *path, ex_err *err);

/* Join `rel` to `root` (unless absolute) into out; EX_E_FORMAT naming <csv>:<line> if too long. */
ex_status dcsv_join(const dcsv *c, const char *root, const char *rel, char *out, size_t cap, ex_err *err);

#endif /* EXPLORA_DCSV_H */
