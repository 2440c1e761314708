/*
 * datasets/imagelist/imagelist_parse.c — the list-file parser of the
 * `imagelist` plugin; the format is documented in imagelist_parse.h.
 */
#include "imagelist_parse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "explora/fileio.h"

#define IML_LINE_MAX 8192
#define IML_LABEL_MAX 2147483647LL

/* One entry of the list, as parsed from its line. */
typedef struct iml_line {
    char text[IML_LINE_MAX]; /* the trimmed line; the path is its first path_len bytes */
    size_t path_len;
    int has_label;
    int64_t label;
} iml_line;

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* "-?[0-9]+" of at most 18 digits into *v. */
static int parse_int(const char *s, int64_t *v) {
    int neg = *s == '-';
    if (neg) s++;
    size_t nd = strspn(s, "0123456789");
    if (nd == 0 || nd > 18 || s[nd] != '\0') return 0;
    int64_t x = 0;
    for (size_t i = 0; i < nd; i++) x = x * 10 + (s[i] - '0');
    *v = neg ? -x : x;
    return 1;
}

/* Copy the trimmed line [begin, end) into ln->text. Returns 0 when it is blank or a comment. */
static int trim_line(const char *begin, const char *end, iml_line *ln) {
    while (begin < end && is_blank(*begin)) begin++;
    while (end > begin && is_blank(end[-1])) end--;
    if (begin == end || *begin == '#') return 0;
    size_t len = (size_t)(end - begin);
    memcpy(ln->text, begin, len);
    ln->text[len] = '\0';
    return 1;
}

/* Split "<path> <label>" when the last field is an integer. */
static void split_label(iml_line *ln) {
    size_t len = strlen(ln->text);
    size_t i = len;
    while (i > 0 && !is_blank(ln->text[i - 1])) i--;
    ln->path_len = len;
    ln->has_label = 0;
    if (i == 0 || !parse_int(ln->text + i, &ln->label)) return;
    ln->has_label = 1;
    while (i > 0 && is_blank(ln->text[i - 1])) i--;
    ln->path_len = i;
    ln->text[i] = '\0';
}

static ex_status parse_line(const char *list, size_t lineno, const char *begin, const char *end, iml_line *ln,
                            int *is_entry, ex_err *err) {
    EX_ENSURE((size_t)(end - begin) < IML_LINE_MAX, err, EX_E_FORMAT, "%s:%zu: line longer than %d bytes.", list,
              lineno, IML_LINE_MAX - 1);
    *is_entry = trim_line(begin, end, ln);
    if (!*is_entry) return EX_OK;
    split_label(ln);
    if (ln->has_label)
        EX_ENSURE(ln->label >= 0 && ln->label <= IML_LABEL_MAX, err, EX_E_FORMAT,
                  "%s:%zu: label %lld of '%s' is outside [0, %lld].", list, lineno, (long long)ln->label, ln->text,
                  IML_LABEL_MAX);
    return EX_OK;
}

/* The first entry decides whether the list is labeled; later entries must agree. */
static ex_status check_labeling(const char *list, size_t lineno, const iml_line *ln, iml_list *out,
                                size_t *first_line, ex_err *err) {
    if (out->n == 0) {
        out->labeled = ln->has_label;
        *first_line = lineno;
        return EX_OK;
    }
    if (ln->has_label == out->labeled) return EX_OK;
    EX_FAIL(err, EX_E_FORMAT,
            "%s:%zu: '%s' %s a label but the first entry (line %zu) %s; give every line a label or none. "
            "(A label is a last whitespace-separated field that is an integer.)",
            list, lineno, ln->text, ln->has_label ? "has" : "lacks", *first_line,
            out->labeled ? "has one" : "has none");
}

static ex_status check_image_file(const char *list, size_t lineno, const char *written, const char *path,
                                  ex_err *err) {
    struct stat sb;
    EX_ENSURE(stat(path, &sb) == 0, err, EX_E_IO, "%s:%zu: image '%s' (%s): %s.", list, lineno, written, path,
              strerror(errno));
    EX_ENSURE(!S_ISDIR(sb.st_mode), err, EX_E_IO, "%s:%zu: image '%s' (%s) is a directory.", list, lineno, written,
              path);
    EX_ENSURE(S_ISREG(sb.st_mode), err, EX_E_IO, "%s:%zu: image '%s' (%s) is not a regular file.", list, lineno,
              written, path);
    return EX_OK;
}

static ex_status append(iml_list *out, const char *path, const char *id, int64_t label, ex_err *err) {
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 256;
        iml_entry *ni = realloc(out->items, cap * sizeof *ni);
        EX_ENSURE(ni, err, EX_E_NOMEM, "imagelist: out of memory.");
        out->items = ni;
        out->cap = cap;
    }
    iml_entry *e = &out->items[out->n];
    e->path = strdup(path);
    e->id = strdup(id);
    e->label = label;
    if (!e->path || !e->id) {
        free(e->path);
        free(e->id);
        EX_FAIL(err, EX_E_NOMEM, "imagelist: out of memory.");
    }
    out->n++;
    if (label > out->max_label) out->max_label = label;
    return EX_OK;
}

static ex_status add_entry(const char *list, size_t lineno, const iml_line *ln, const char *base_dir,
                           iml_list *out, size_t *first_line, ex_err *err) {
    EX_CHECK(check_labeling(list, lineno, ln, out, first_line, err));
    char path[4096];
    if (ex_path_join(base_dir, ln->text, path, sizeof path, NULL) != EX_OK)
        EX_FAIL(err, EX_E_FORMAT, "%s:%zu: the path '%s' joined to '%s' is longer than %zu bytes.", list, lineno,
                ln->text, base_dir, sizeof path - 1);
    EX_CHECK(check_image_file(list, lineno, ln->text, path, err));
    return append(out, path, ln->text, ln->has_label ? ln->label : -1, err);
}

static ex_status parse_lines(const char *list, const char *text, size_t size, const char *base_dir, iml_list *out,
                             iml_line *ln, ex_err *err) {
    const char *p = text, *end = text + size;
    if (size >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3;
    size_t first_line = 0;
    for (size_t lineno = 1; p < end; lineno++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        EX_ENSURE(!memchr(p, '\0', (size_t)(eol - p)), err, EX_E_FORMAT,
                  "%s:%zu: NUL byte: this is not a text file listing images.", list, lineno);
        int is_entry = 0;
        EX_CHECK(parse_line(list, lineno, p, eol, ln, &is_entry, err));
        if (is_entry) EX_CHECK(add_entry(list, lineno, ln, base_dir, out, &first_line, err));
        p = nl ? nl + 1 : end;
    }
    return EX_OK;
}

ex_status iml_parse(const char *list_path, const char *text, size_t size, const char *base_dir, iml_list *out,
                    ex_err *err) {
    memset(out, 0, sizeof *out);
    out->max_label = -1;
    iml_line *ln = malloc(sizeof *ln);
    EX_ENSURE(ln, err, EX_E_NOMEM, "imagelist: out of memory.");
    ex_status st = parse_lines(list_path, text, size, base_dir, out, ln, err);
    free(ln);
    if (st == EX_OK && out->n == 0)
        st = ex_err_set(err, EX_E_FORMAT, __FILE__, __LINE__,
                        "%s lists no images (only blank lines and '#' comments).", list_path);
    if (st != EX_OK) iml_list_free(out);
    return st;
}

void iml_list_free(iml_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].path);
        free(l->items[i].id);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
    l->max_label = -1;
}
