/*
 * datasets/fmow/dcsv.c — the strict CSV reader of dcsv.h.
 */
#include "dcsv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "explora/fileio.h"

void dcsv_init(dcsv *c, const char *path, const char *text, size_t size) {
    memset(c, 0, sizeof *c);
    c->path = path;
    c->p = text;
    c->end = text + size;
    c->line = 1;
    if (size >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) c->p += 3;
}

void dcsv_free(dcsv *c) {
    free(c->buf);
    c->buf = NULL;
    c->cap = 0;
    c->nfields = 0;
}

static ex_status push(dcsv *c, size_t *len, char ch, ex_err *err) {
    EX_ENSURE(*len < DCSV_MAX_RECORD, err, EX_E_FORMAT, "%s:%zu: record longer than %d bytes.", c->path,
              c->record_line, DCSV_MAX_RECORD);
    if (*len == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        char *nb = realloc(c->buf, cap);
        EX_ENSURE(nb, err, EX_E_NOMEM, "%s: out of memory reading the CSV.", c->path);
        c->buf = nb;
        c->cap = cap;
    }
    c->buf[(*len)++] = ch;
    return EX_OK;
}

static int at_eol(const dcsv *c) {
    const char *p = c->p;
    return p >= c->end || *p == '\n' || (*p == '\r' && (p + 1 == c->end || p[1] == '\n'));
}

static void skip_blank_lines(dcsv *c) {
    while (c->p < c->end && at_eol(c)) {
        if (*c->p == '\r') c->p++;
        if (c->p < c->end && *c->p == '\n') c->p++;
        c->line++;
    }
}

static ex_status quoted_field(dcsv *c, size_t *len, ex_err *err) {
    c->p++; /* opening quote */
    for (;;) {
        EX_ENSURE(c->p < c->end, err, EX_E_FORMAT, "%s:%zu: unterminated quoted field (no closing '\"').", c->path,
                  c->record_line);
        char ch = *c->p;
        EX_ENSURE(ch != '\0', err, EX_E_FORMAT, "%s:%zu: NUL byte: this is not a text CSV file.", c->path, c->line);
        if (ch == '"' && c->p + 1 < c->end && c->p[1] == '"') {
            EX_CHECK(push(c, len, '"', err));
            c->p += 2;
            continue;
        }
        c->p++;
        if (ch == '"') break;
        if (ch == '\n') c->line++;
        EX_CHECK(push(c, len, ch, err));
    }
    EX_ENSURE(at_eol(c) || *c->p == ',', err, EX_E_FORMAT,
              "%s:%zu: text after the closing quote of a quoted field (a quote inside a field must be doubled).",
              c->path, c->line);
    return EX_OK;
}

static ex_status plain_field(dcsv *c, size_t *len, ex_err *err) {
    while (!at_eol(c) && *c->p != ',') {
        char ch = *c->p;
        EX_ENSURE(ch != '\0', err, EX_E_FORMAT, "%s:%zu: NUL byte: this is not a text CSV file.", c->path, c->line);
        EX_ENSURE(ch != '"', err, EX_E_FORMAT,
                  "%s:%zu: a '\"' inside an unquoted field (quote the whole field and double the quote).", c->path,
                  c->line);
        EX_CHECK(push(c, len, ch, err));
        c->p++;
    }
    return EX_OK;
}

/* Fields of one record into c->buf; offsets of their starts into `starts`. */
static ex_status read_record(dcsv *c, size_t *starts, ex_err *err) {
    size_t len = 0;
    c->nfields = 0;
    for (;;) {
        EX_ENSURE(c->nfields < DCSV_MAX_FIELDS, err, EX_E_FORMAT, "%s:%zu: more than %d fields.", c->path,
                  c->record_line, DCSV_MAX_FIELDS);
        starts[c->nfields] = len;
        if (c->p < c->end && *c->p == '"')
            EX_CHECK(quoted_field(c, &len, err));
        else
            EX_CHECK(plain_field(c, &len, err));
        EX_CHECK(push(c, &len, '\0', err));
        c->nfields++;
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        break;
    }
    if (c->p < c->end && *c->p == '\r') c->p++;
    if (c->p < c->end && *c->p == '\n') c->p++;
    c->line++;
    return EX_OK;
}

ex_status dcsv_next(dcsv *c, int *has_row, ex_err *err) {
    *has_row = 0;
    skip_blank_lines(c);
    if (c->p >= c->end) return EX_OK;
    c->record_line = c->line;
    size_t starts[DCSV_MAX_FIELDS];
    EX_CHECK(read_record(c, starts, err));
    for (int i = 0; i < c->nfields; i++) c->field[i] = c->buf + starts[i];
    *has_row = 1;
    return EX_OK;
}

static int is_blank(char ch) { return ch == ' ' || ch == '\t'; }

int dcsv_find(const dcsv *c, const char *name) {
    size_t n = strlen(name);
    for (int i = 0; i < c->nfields; i++) {
        const char *f = c->field[i];
        while (is_blank(*f)) f++;
        if (strncmp(f, name, n) != 0) continue;
        const char *rest = f + n;
        while (is_blank(*rest)) rest++;
        if (*rest == '\0') return i;
    }
    return -1;
}

/* "-?[0-9]{1,18}" optionally followed by ".0*", blanks around. */
static int parse_int(const char *s, int64_t *v) {
    while (is_blank(*s)) s++;
    int neg = *s == '-';
    if (neg) s++;
    size_t nd = strspn(s, "0123456789");
    if (nd == 0 || nd > 18) return 0;
    int64_t x = 0;
    for (size_t i = 0; i < nd; i++) x = x * 10 + (s[i] - '0');
    s += nd;
    if (*s == '.') s += 1 + strspn(s + 1, "0");
    while (is_blank(*s)) s++;
    if (*s != '\0') return 0;
    *v = neg ? -x : x;
    return 1;
}

ex_status dcsv_int(const dcsv *c, int i, const char *what, int64_t *v, ex_err *err) {
    EX_ENSURE(i >= 0 && i < c->nfields, err, EX_E_FORMAT, "%s:%zu: the record has %d field%s; %s is missing.",
              c->path, c->record_line, c->nfields, c->nfields == 1 ? "" : "s", what);
    EX_ENSURE(parse_int(c->field[i], v), err, EX_E_FORMAT, "%s:%zu: %s '%.64s' is not an integer.", c->path,
              c->record_line, what, c->field[i]);
    return EX_OK;
}

ex_status dcsv_check_image(const dcsv *c, const char *path, ex_err *err) {
    struct stat sb;
    EX_ENSURE(stat(path, &sb) == 0, err, EX_E_IO, "%s:%zu: image '%s': %s.", c->path, c->record_line, path,
              strerror(errno));
    EX_ENSURE(!S_ISDIR(sb.st_mode), err, EX_E_IO, "%s:%zu: image '%s' is a directory.", c->path, c->record_line,
              path);
    EX_ENSURE(S_ISREG(sb.st_mode), err, EX_E_IO, "%s:%zu: image '%s' is not a regular file.", c->path,
              c->record_line, path);
    return EX_OK;
}

ex_status dcsv_join(const dcsv *c, const char *root, const char *rel, char *out, size_t cap, ex_err *err) {
    if (ex_path_join(root, rel, out, cap, NULL) != EX_OK)
        EX_FAIL(err, EX_E_FORMAT, "%s:%zu: the path '%.200s' joined to '%.200s' is longer than %zu bytes.", c->path,
                c->record_line, rel, root, cap - 1);
    return EX_OK;
}
