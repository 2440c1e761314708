/*
 * core/src/config_parse.c — reading one INI file: our own line scanner, then
 * iniparser 4.1 for the values.
 *
 * iniparser reports syntax errors only through a process-global callback,
 * without line numbers, silently ignores some broken lines ("[]") and crashes
 * on others in its getters. So every line is first checked here, with
 * messages that name the file and line; only a file that passes is handed to
 * iniparser (as a sanitised copy in an anonymous memfd), and the values are
 * then taken from iniparser so that quoting and inline-comment rules are its
 * own. Finally the two views are cross-checked key by key.
 *
 * Rules (a strict subset of what iniparser accepts):
 *   - blank lines; comments starting with ';' or '#';
 *   - "[name]" headers, name = [A-Za-z0-9_.-] without empty dot parts, optionally
 *     followed by a comment; a header may repeat (the keys merge);
 *   - "key = value", key = [A-Za-z0-9_-]; the value is either quoted with "..."
 *     or '...' (then only a comment may follow the closing quote), or bare, in
 *     which case a ';' or '#' preceded by a blank starts a comment;
 *   - `include = file` only before the first header, at most once.
 * Where we are stricter than iniparser (it would silently do something else):
 *   - a line ending in '\' is an error (iniparser joins it with the next line,
 *     even for comments, swallowing that line);
 *   - a bare value containing ';' or '#' right after a non-blank ("a#b") is an
 *     error: iniparser would cut it to "a"; quote it instead;
 *   - an unterminated quote or text after the closing quote is an error
 *     (iniparser keeps the quoted part and drops the rest);
 *   - "[]" is an error (iniparser keeps adding keys to the previous section);
 *   - an empty value, "" or '' included, is an error;
 *   - lines over EX_INI_LINE_MAX bytes are an error (iniparser stops at 1022).
 * Accepted although iniparser alone would not: a UTF-8 byte order mark, and a
 * comment after a section header (both are removed from the copy iniparser reads).
 * CRLF line endings are accepted by both.
 */
#include "config_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <iniparser.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- small helpers --------------------------------------------------------------- */

static int is_blank(char c) { return c == ' ' || c == '\t'; }

static int is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

int ex__ini_valid_key(const char *s, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char(s[i])) return 0;
    return 1;
}

int ex__ini_valid_section(const char *s, size_t n) {
    if (n == 0 || s[0] == '.' || s[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.') return 0; /* i + 1 < n: the last byte is not '.' */
        } else if (!is_name_char(s[i])) {
            return 0;
        }
    }
    return 1;
}

char *ex__ini_lowdup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    for (size_t i = 0; i < n; i++) d[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
    d[n] = '\0';
    return d;
}

void ex__ini_doc_free(ex_ini_doc *doc) {
    if (!doc) return;
    for (int i = 0; i < doc->n_secs; i++) free(doc->secs[i].name);
    for (int i = 0; i < doc->n_keys; i++) {
        free(doc->keys[i].key);
        free(doc->keys[i].value);
    }
    free(doc->secs);
    free(doc->keys);
    free(doc->include);
    memset(doc, 0, sizeof *doc);
}

/* ---- the scanner ----------------------------------------------------------------- */

typedef struct scanner {
    const char *name; /* for messages */
    ex_ini_doc *doc;
    char *out; /* sanitised text for iniparser */
    size_t out_len;
    int cur_sec; /* index in doc->secs; -1 before the first header */
    ex_err *err;
} scanner;

/* Format "<name>:<line>: <message>" and return EX_E_FORMAT. */
static ex_status scan_fail(const scanner *sc, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static ex_status scan_fail(const scanner *sc, int line, const char *fmt, ...) {
    ex_sb sb;
    ex__sb_init(&sb);
    ex__sb_add(&sb, "%s:%d: ", sc->name, line);
    va_list ap;
    va_start(ap, fmt);
    if (sb.len < sizeof sb.buf) vsnprintf(sb.buf + sb.len, sizeof sb.buf - sb.len, fmt, ap);
    va_end(ap);
    EX_FAIL(sc->err, EX_E_FORMAT, "%s", sb.buf);
}

/* A quoted, escaped excerpt of user text, for messages. */
static const char *excerpt(char *buf, size_t cap, const char *s, size_t n) {
    ex_sb sb;
    ex__sb_init(&sb);
    ex__sb_excerpt(&sb, s, n, 80);
    size_t len = sb.len < cap - 1 ? sb.len : cap - 1;
    memcpy(buf, sb.buf, len);
    buf[len] = '\0';
    return buf;
}

static void emit(scanner *sc, const char *s, size_t n) {
    memcpy(sc->out + sc->out_len, s, n);
    sc->out_len += n;
    sc->out[sc->out_len++] = '\n';
}

static ex_status check_bytes(const scanner *sc, const char *s, size_t n, int line) {
    if (n > EX_INI_LINE_MAX)
        return scan_fail(sc, line,
                         "line is %zu bytes long; lines are limited to %d bytes (iniparser cannot read longer "
                         "ones).",
                         n, EX_INI_LINE_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0)
            return scan_fail(sc, line, "NUL byte in column %zu; a config must be a text file.", i + 1);
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return scan_fail(sc, line,
                             "control character 0x%02x in column %zu; a config must be a text file "
                             "(tabs and LF or CRLF line endings are accepted).",
                             c, i + 1);
    }
    return EX_OK;
}

static int find_sec(const ex_ini_doc *doc, const char *name) {
    for (int i = 0; i < doc->n_secs; i++)
        if (strcmp(doc->secs[i].name, name) == 0) return i;
    return -1;
}

static int too_many(const scanner *sc) { return sc->doc->n_keys >= EX_INI_MAX_KEYS || sc->doc->n_secs >= EX_INI_MAX_KEYS; }

/* "[name]" optionally followed by a comment. */
static ex_status scan_section(scanner *sc, const char *s, size_t n, int line) {
    char ex[400]; /* an 80-byte excerpt, escaped */
    const char *close = memchr(s, ']', n);
    if (!close)
        return scan_fail(sc, line, "unterminated section header %s. Expected [name].", excerpt(ex, sizeof ex, s, n));
    size_t rest = n - (size_t)(close + 1 - s);
    const char *r = close + 1;
    while (rest && is_blank(*r)) r++, rest--;
    if (rest && *r != ';' && *r != '#')
        return scan_fail(sc, line, "unexpected text after the section header %s. Expected [name], optionally "
                         "followed by a comment.", excerpt(ex, sizeof ex, s, n));
    const char *b = s + 1, *e = close;
    while (b < e && is_blank(*b)) b++;
    while (e > b && is_blank(e[-1])) e--;
    if (b == e) return scan_fail(sc, line, "empty section name \"[]\". Expected [name], e.g. [peft.lora].");
    if (!ex__ini_valid_section(b, (size_t)(e - b)))
        return scan_fail(sc, line,
                         "invalid section name %s. Section names use letters, digits, '_', '-' and '.' "
                         "(not at the start or end, not twice in a row).",
                         excerpt(ex, sizeof ex, b, (size_t)(e - b)));
    char *name = ex__ini_lowdup(b, (size_t)(e - b));
    EX_ENSURE(name, sc->err, EX_E_NOMEM, "out of memory reading '%s'", sc->name);
    int idx = find_sec(sc->doc, name);
    if (idx < 0) {
        ex_ini_doc *d = sc->doc;
        if (too_many(sc)) {
            free(name);
            return scan_fail(sc, line, "more than %d sections; this is not a config file.", EX_INI_MAX_KEYS);
        }
        if (d->n_secs == d->cap_secs) {
            int cap = d->cap_secs ? 2 * d->cap_secs : 16;
            ex_ini_sec *ns = realloc(d->secs, (size_t)cap * sizeof *ns);
            if (!ns) {
                free(name);
                EX_FAIL(sc->err, EX_E_NOMEM, "out of memory reading '%s'", sc->name);
            }
            d->secs = ns;
            d->cap_secs = cap;
        }
        d->secs[d->n_secs] = (ex_ini_sec){name, line};
        idx = d->n_secs++;
    } else {
        free(name);
    }
    sc->cur_sec = idx;
    /* iniparser gets the bare header: it rejects "[a] ; comment". */
    size_t hl = strlen(sc->doc->secs[idx].name);
    sc->out[sc->out_len++] = '[';
    memcpy(sc->out + sc->out_len, sc->doc->secs[idx].name, hl);
    sc->out_len += hl;
    sc->out[sc->out_len++] = ']';
    sc->out[sc->out_len++] = '\n';
    return EX_OK;
}

/* Check the text after '=' (already left-trimmed, non-empty line remainder). */
static ex_status scan_value(const scanner *sc, const char *key, const char *v, size_t n, int line) {
    char ex[400]; /* an 80-byte excerpt, escaped */
    if (n == 0 || v[0] == ';' || v[0] == '#')
        return scan_fail(sc, line, "'%s' has an empty value. Give a value after '=', or remove the line.", key);
    if (v[0] == '"' || v[0] == '\'') {
        const char *close = memchr(v + 1, v[0], n - 1);
        if (!close)
            return scan_fail(sc, line, "'%s' = %s: unterminated %s quote.", key, excerpt(ex, sizeof ex, v, n),
                             v[0] == '"' ? "double" : "single");
        if (close == v + 1)
            return scan_fail(sc, line, "'%s' has an empty value (%c%c). Give a value, or remove the line.", key,
                             v[0], v[0]);
        const char *r = close + 1, *end = v + n;
        while (r < end && is_blank(*r)) r++;
        if (r < end && *r != ';' && *r != '#')
            return scan_fail(sc, line,
                             "'%s' = %s: unexpected text after the closing quote. Expected a quoted value, "
                             "optionally followed by a comment.",
                             key, excerpt(ex, sizeof ex, v, n));
        return EX_OK;
    }
    for (size_t i = 1; i < n; i++) {
        if ((v[i] == ';' || v[i] == '#') && !is_blank(v[i - 1]))
            return scan_fail(sc, line,
                             "'%s' = %s: '%c' inside a value starts a comment in INI, so the value would be cut "
                             "there. Quote the value (\"...\") if '%c' is part of it, or put a blank before the "
                             "comment.",
                             key, excerpt(ex, sizeof ex, v, n), v[i], v[i]);
        if (v[i] == ';' || v[i] == '#') break; /* a comment: the rest is not the value */
    }
    return EX_OK;
}

static ex_status add_key(scanner *sc, char *key, int line) {
    ex_ini_doc *d = sc->doc;
    const char *sec = d->secs[sc->cur_sec].name;
    for (int i = 0; i < d->n_keys; i++) {
        if (d->keys[i].section == sec && strcmp(d->keys[i].key, key) == 0) {
            ex_status st = scan_fail(sc, line,
                                     "[%s] key '%s' is given twice (first at line %d). Each key may appear once per "
                                     "file; remove one of them.",
                                     sec, key, d->keys[i].line);
            free(key);
            return st;
        }
    }
    if (too_many(sc)) {
        free(key);
        return scan_fail(sc, line, "more than %d keys; this is not a config file.", EX_INI_MAX_KEYS);
    }
    if (d->n_keys == d->cap_keys) {
        int cap = d->cap_keys ? 2 * d->cap_keys : 32;
        ex_ini_key *nk = realloc(d->keys, (size_t)cap * sizeof *nk);
        if (!nk) {
            free(key);
            EX_FAIL(sc->err, EX_E_NOMEM, "out of memory reading '%s'", sc->name);
        }
        d->keys = nk;
        d->cap_keys = cap;
    }
    d->keys[d->n_keys++] = (ex_ini_key){sec, key, NULL, line};
    return EX_OK;
}

/* "key = value" (also `include = file` before the first header). */
static ex_status scan_key_line(scanner *sc, const char *s, size_t n, int line) {
    char ex[400]; /* an 80-byte excerpt, escaped */
    const char *eq = memchr(s, '=', n);
    if (!eq)
        return scan_fail(sc, line,
                         "%s has no '='. Expected \"key = value\", a [section] header or a comment (';' or '#').",
                         excerpt(ex, sizeof ex, s, n));
    const char *ke = eq;
    while (ke > s && is_blank(ke[-1])) ke--;
    if (ke == s)
        return scan_fail(sc, line, "%s: '=' without a key name. Expected \"key = value\".",
                         excerpt(ex, sizeof ex, s, n));
    if (!ex__ini_valid_key(s, (size_t)(ke - s)))
        return scan_fail(sc, line, "invalid key name %s. Keys use letters, digits, '_' and '-'.",
                         excerpt(ex, sizeof ex, s, (size_t)(ke - s)));
    char *key = ex__ini_lowdup(s, (size_t)(ke - s));
    EX_ENSURE(key, sc->err, EX_E_NOMEM, "out of memory reading '%s'", sc->name);
    const char *v = eq + 1, *end = s + n;
    while (v < end && is_blank(*v)) v++;
    ex_status st = scan_value(sc, key, v, (size_t)(end - v), line);
    if (st == EX_OK && strcmp(key, "include") == 0) {
        if (sc->cur_sec >= 0)
            st = scan_fail(sc, line,
                           "'include' inside [%s]. An include must come before the first section header.",
                           sc->doc->secs[sc->cur_sec].name);
        else if (sc->doc->include_line)
            st = scan_fail(sc, line,
                           "'include' is given twice (first at line %d). A file includes at most one other "
                           "file; chain includes instead.",
                           sc->doc->include_line);
        else
            sc->doc->include_line = line;
        free(key);
    } else if (st == EX_OK && sc->cur_sec < 0) {
        st = scan_fail(sc, line,
                       "key '%s' comes before the first [section] header; only 'include = file' may appear "
                       "there.",
                       key);
        free(key);
    } else if (st == EX_OK) {
        st = add_key(sc, key, line); /* takes key */
    } else {
        free(key);
    }
    if (st == EX_OK) emit(sc, s, n);
    return st;
}

static ex_status scan_line(scanner *sc, const char *s, size_t n, int line) {
    EX_CHECK(check_bytes(sc, s, n, line));
    while (n && is_blank(*s)) s++, n--;
    while (n && is_blank(s[n - 1])) n--;
    if (n == 0) {
        sc->out[sc->out_len++] = '\n';
        return EX_OK;
    }
    if (s[n - 1] == '\\')
        return scan_fail(sc, line,
                         "line ends with '\\'. Line continuation is not supported (iniparser would join the "
                         "next line to this one); remove the backslash or quote the value.");
    if (s[0] == ';' || s[0] == '#') {
        sc->out[sc->out_len++] = '\n';
        return EX_OK;
    }
    if (s[0] == '[') return scan_section(sc, s, n, line);
    return scan_key_line(sc, s, n, line);
}

static ex_status scan_text(scanner *sc, const char *text, size_t len) {
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) text += 3, len -= 3; /* UTF-8 BOM */
    size_t pos = 0;
    int line = 0;
    while (pos < len) {
        line++;
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n && s[n - 1] == '\r') n--; /* CRLF */
        EX_CHECK(scan_line(sc, s, n, line));
    }
    return EX_OK;
}

/* ---- iniparser ---------------------------------------------------------------------- */

/* iniparser's error callback is process-global and has no user pointer; every
 * line it could complain about has already been rejected above, so its output
 * is dropped. Setting the same function again is harmless (idempotent). */
static int ini_quiet(const char *fmt, ...) {
    (void)fmt;
    return 0;
}

/* iniparser 4.1 can only load from a path: hand it an anonymous memfd through
 * /proc/self/fd, or, where that is unavailable, an unlinked-after-use temp file. */
static dictionary *ini_load_text(const char *text, size_t len, int *saved_errno) {
    char path[64];
    char tmpl[4096];
    int fd = memfd_create("explora-config", MFD_CLOEXEC);
    int is_tmp = 0;
    if (fd >= 0) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (access(path, R_OK) != 0) {
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0) {
        const char *dir = getenv("TMPDIR");
        snprintf(tmpl, sizeof tmpl, "%s/explora-config-XXXXXX", dir && dir[0] ? dir : "/tmp");
        fd = mkstemp(tmpl);
        if (fd < 0) {
            *saved_errno = errno;
            return NULL;
        }
        is_tmp = 1;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            *saved_errno = errno;
            close(fd);
            if (is_tmp) unlink(tmpl);
            return NULL;
        }
        done += (size_t)w;
    }
    iniparser_set_error_callback(ini_quiet);
    dictionary *d = iniparser_load(is_tmp ? tmpl : path);
    *saved_errno = errno;
    close(fd);
    if (is_tmp) unlink(tmpl);
    return d;
}

static ex_ini_key *find_key(ex_ini_doc *doc, const char *sec, const char *key) {
    for (int i = 0; i < doc->n_keys; i++)
        if (strcmp(doc->keys[i].section, sec) == 0 && strcmp(doc->keys[i].key, key) == 0) return &doc->keys[i];
    return NULL;
}

static ex_status mismatch(const char *name, const char *what, ex_err *err) {
    EX_FAIL(err, EX_E_INTERNAL,
            "'%s': iniparser and explora's INI scanner disagree (%s). Please report this with the file.", name,
            what);
}

/* Take every value from iniparser, checking that it sees exactly our keys. */
static ex_status take_values(dictionary *d, const char *name, ex_ini_doc *doc, ex_err *err) {
    int nsec = iniparser_getnsec(d);
    if (nsec != doc->n_secs) return mismatch(name, "number of sections", err);
    int seen = 0;
    for (int i = 0; i < nsec; i++) {
        const char *sec = iniparser_getsecname(d, i);
        if (!sec || find_sec(doc, sec) < 0) return mismatch(name, "section names", err);
        int nk = iniparser_getsecnkeys(d, sec);
        if (nk <= 0) continue;
        const char **keys = calloc((size_t)nk, sizeof *keys);
        EX_ENSURE(keys, err, EX_E_NOMEM, "out of memory reading '%s'", name);
        iniparser_getseckeys(d, sec, keys);
        size_t sl = strlen(sec);
        for (int j = 0; j < nk; j++) {
            ex_ini_key *k = keys[j] ? find_key(doc, sec, keys[j] + sl + 1) : NULL;
            const char *v = keys[j] ? iniparser_getstring(d, keys[j], NULL) : NULL;
            if (!k || !v || k->value) {
                free(keys);
                return mismatch(name, "key names", err);
            }
            if (!v[0]) {
                free(keys);
                EX_FAIL(err, EX_E_FORMAT, "%s:%d: [%s] '%s' has an empty value. Give a value after '='.", name,
                        k->line, sec, k->key);
            }
            k->value = strdup(v);
            if (!k->value) {
                free(keys);
                EX_FAIL(err, EX_E_NOMEM, "out of memory reading '%s'", name);
            }
            seen++;
        }
        free(keys);
    }
    if (seen != doc->n_keys) return mismatch(name, "number of keys", err);
    if (doc->include_line) {
        const char *inc = iniparser_getstring(d, ":include", NULL);
        if (!inc) return mismatch(name, "include", err);
        if (!inc[0])
            EX_FAIL(err, EX_E_FORMAT, "%s:%d: 'include' has an empty value. Expected a file name.", name,
                    doc->include_line);
        doc->include = strdup(inc);
        EX_ENSURE(doc->include, err, EX_E_NOMEM, "out of memory reading '%s'", name);
    }
    return EX_OK;
}

ex_status ex__ini_parse(const char *text, size_t len, const char *name, ex_ini_doc *doc, ex_err *err) {
    memset(doc, 0, sizeof *doc);
    /* Every emitted line is at most its input line plus '\n'. */
    scanner sc = {name, doc, malloc(len + 2), 0, -1, err};
    EX_ENSURE(sc.out, err, EX_E_NOMEM, "out of memory reading '%s'", name);
    ex_status st = scan_text(&sc, text, len);
    if (st == EX_OK) {
        int e = 0;
        dictionary *d = ini_load_text(sc.out, sc.out_len, &e);
        if (!d) {
            st = ex_err_set(err, EX_E_INTERNAL, __FILE__, __LINE__,
                            "'%s': iniparser could not read the checked copy of the file (%s). Please report "
                            "this with the file.",
                            name, e ? strerror(e) : "no reason given");
        } else {
            st = take_values(d, name, doc, err);
            iniparser_freedict(d);
        }
    }
    free(sc.out);
    if (st != EX_OK) ex__ini_doc_free(doc);
    return st;
}
