/*
 * core/src/config.c — the merged config (see explora/config.h): the entry
 * table, loading with includes, --set overrides, raw access and writing the
 * effective config back out. Line scanning and iniparser live in
 * config_parse.c; typed values, validation and getters in config_schema.c.
 *
 * A config is a flat table of (section, key, value, origin, dir) entries plus
 * the list of sections in order of first appearance. Loading a file first
 * loads its include (recursively), then applies the file's own keys over it,
 * so the including file wins; overrides are applied after that by the caller.
 */
#include "config_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "explora/fileio.h"

/* ---- message helpers (shared with the other config files) --------------------------- */

void ex__sb_init(ex_sb *sb) {
    sb->buf[0] = '\0';
    sb->len = 0;
}

void ex__sb_add(ex_sb *sb, const char *fmt, ...) {
    if (sb->len >= sizeof sb->buf - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sb->buf + sb->len, sizeof sb->buf - sb->len, fmt, ap);
    va_end(ap);
    if (n > 0) sb->len += (size_t)n;
    if (sb->len > sizeof sb->buf - 1) sb->len = sizeof sb->buf - 1;
}

void ex__sb_excerpt(ex_sb *sb, const char *s, size_t n, size_t max) {
    ex__sb_add(sb, "\"");
    size_t shown = n < max ? n : max;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            ex__sb_add(sb, "\\x%02x", c);
        else
            ex__sb_add(sb, "%c", c);
    }
    ex__sb_add(sb, shown < n ? "...\"" : "\"");
}

int ex__edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 255;
    int row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* ---- the entry table ----------------------------------------------------------------- */

ex_status ex_config_new(ex_config **out, ex_err *err) {
    EX_ENSURE(out, err, EX_E_INVALID, "ex_config_new: out is NULL");
    *out = calloc(1, sizeof **out);
    EX_ENSURE(*out, err, EX_E_NOMEM, "out of memory creating a config");
    return EX_OK;
}

void ex_config_free(ex_config *c) {
    if (!c) return;
    for (int i = 0; i < c->n_entries; i++) {
        ex_cfg_entry *e = &c->entries[i];
        free(e->section);
        free(e->key);
        free(e->value);
        free(e->origin);
        free(e->dir);
    }
    for (int i = 0; i < c->n_secs; i++) {
        free(c->secs[i].name);
        free(c->secs[i].origin);
    }
    free(c->entries);
    free(c->secs);
    free(c);
}

static int find_section(const ex_config *c, const char *name) {
    if (!c || !name) return -1;
    for (int i = 0; i < c->n_secs; i++)
        if (strcasecmp(c->secs[i].name, name) == 0) return i;
    return -1;
}

const ex_cfg_entry *ex__config_find(const ex_config *c, const char *section, const char *key) {
    if (!c || !section || !key) return NULL;
    for (int i = 0; i < c->n_entries; i++) {
        const ex_cfg_entry *e = &c->entries[i];
        if (strcasecmp(e->key, key) == 0 && strcasecmp(e->section, section) == 0) return e;
    }
    return NULL;
}

static ex_status add_section(ex_config *c, const char *name, const char *origin, ex_err *err) {
    if (find_section(c, name) >= 0) return EX_OK;
    EX_ENSURE(c->n_secs < EX_INI_MAX_KEYS, err, EX_E_CONFIG, "%s: the config has more than %d sections.", origin,
              EX_INI_MAX_KEYS);
    if (c->n_secs == c->cap_secs) {
        int cap = c->cap_secs ? 2 * c->cap_secs : 16;
        ex_cfg_sec *ns = realloc(c->secs, (size_t)cap * sizeof *ns);
        EX_ENSURE(ns, err, EX_E_NOMEM, "out of memory adding section [%s]", name);
        c->secs = ns;
        c->cap_secs = cap;
    }
    char *n = ex__ini_lowdup(name, strlen(name));
    char *o = strdup(origin);
    if (!n || !o) {
        free(n);
        free(o);
        EX_FAIL(err, EX_E_NOMEM, "out of memory adding section [%s]", name);
    }
    c->secs[c->n_secs++] = (ex_cfg_sec){n, o};
    return EX_OK;
}

/* Set (section, key) to value; replaces an existing entry's value, origin and dir. */
static ex_status put_entry(ex_config *c, const char *section, const char *key, const char *value, const char *origin,
                           const char *dir, ex_err *err) {
    EX_CHECK(add_section(c, section, origin, err));
    ex_cfg_entry *e = (ex_cfg_entry *)ex__config_find(c, section, key);
    char *v = strdup(value), *o = strdup(origin), *d = dir ? strdup(dir) : NULL;
    if (!v || !o || (dir && !d)) {
        free(v), free(o), free(d);
        EX_FAIL(err, EX_E_NOMEM, "out of memory setting [%s] %s", section, key);
    }
    if (e) {
        free(e->value), free(e->origin), free(e->dir);
        e->value = v, e->origin = o, e->dir = d;
        return EX_OK;
    }
    if (c->n_entries >= EX_INI_MAX_KEYS) {
        free(v), free(o), free(d);
        EX_FAIL(err, EX_E_CONFIG, "%s: the config has more than %d keys.", origin, EX_INI_MAX_KEYS);
    }
    if (c->n_entries == c->cap_entries) {
        int cap = c->cap_entries ? 2 * c->cap_entries : 32;
        ex_cfg_entry *ne = realloc(c->entries, (size_t)cap * sizeof *ne);
        if (!ne) {
            free(v), free(o), free(d);
            EX_FAIL(err, EX_E_NOMEM, "out of memory setting [%s] %s", section, key);
        }
        c->entries = ne;
        c->cap_entries = cap;
    }
    char *s = ex__ini_lowdup(section, strlen(section)), *k = ex__ini_lowdup(key, strlen(key));
    if (!s || !k) {
        free(v), free(o), free(d), free(s), free(k);
        EX_FAIL(err, EX_E_NOMEM, "out of memory setting [%s] %s", section, key);
    }
    c->entries[c->n_entries++] = (ex_cfg_entry){s, k, v, o, d};
    return EX_OK;
}

/* ---- loading ----------------------------------------------------------------------------- */

/* One file in the include chain. */
typedef struct frame {
    char path[4096];  /* as opened (the include value joined to the includer's directory) */
    dev_t dev;
    ino_t ino;
    int has_id;       /* 0 for text given in memory */
    int include_line; /* line of this file's `include`, once known */
} frame;

/* "a.ini:1 -> b.ini:3 -> c.ini" for frames 0..last (the last one without a line). */
static void chain_text(ex_sb *sb, const frame *chain, int last) {
    for (int i = 0; i <= last; i++) {
        if (i < last)
            ex__sb_add(sb, "%s:%d -> ", chain[i].path, chain[i].include_line);
        else
            ex__sb_add(sb, "%s", chain[i].path);
    }
}

/* Append " (included from a.ini:1 -> b.ini:2)" to an error raised inside frame `depth`. */
static void add_include_context(ex_err *err, const frame *chain, int depth) {
    if (!err || depth == 0) return;
    ex_sb sb;
    ex__sb_init(&sb);
    ex__sb_add(&sb, " (include chain: ");
    chain_text(&sb, chain, depth);
    ex__sb_add(&sb, ")");
    size_t ml = strlen(err->msg);
    snprintf(err->msg + ml, sizeof err->msg - ml, "%s", sb.buf);
}

/* Read a config file: regular files only (a FIFO or /dev/zero would never end), bounded size. */
static ex_status read_config_file(const char *path, struct stat *st, char **data, size_t *size, ex_err *err) {
    EX_ENSURE(!S_ISDIR(st->st_mode), err, EX_E_IO, "cannot read config '%s': it is a directory.", path);
    EX_ENSURE(S_ISREG(st->st_mode), err, EX_E_IO, "cannot read config '%s': not a regular file.", path);
    EX_ENSURE((unsigned long long)st->st_size <= EX_INI_MAX_FILE_BYTES, err, EX_E_FORMAT,
              "config '%s' is %lld bytes; config files are limited to %u bytes.", path, (long long)st->st_size,
              EX_INI_MAX_FILE_BYTES);
    EX_CHECK(ex_read_file(path, data, size, err));
    if (*size > EX_INI_MAX_FILE_BYTES) {
        free(*data);
        *data = NULL;
        EX_FAIL(err, EX_E_FORMAT, "config '%s' grew past %u bytes while being read.", path, EX_INI_MAX_FILE_BYTES);
    }
    return EX_OK;
}

static ex_status load_text(ex_config *c, const char *text, size_t len, frame *chain, int depth, ex_err *err);

/* Follow `include` of chain[depth]: resolve, check depth, existence and cycles, then load. */
static ex_status load_include(ex_config *c, const char *inc, frame *chain, int depth, ex_err *err) {
    char dir[4096];
    ex_sb sb;
    ex__sb_init(&sb);
    ex_path_dirname(chain[depth].path, dir, sizeof dir);
    frame *next = &chain[depth + 1];
    memset(next, 0, sizeof *next);
    if (ex_path_join(dir, inc, next->path, sizeof next->path, NULL) != EX_OK)
        EX_FAIL(err, EX_E_CONFIG, "%s:%d: include path '%.200s' is too long.", chain[depth].path,
                chain[depth].include_line, inc);
    if (depth + 1 > EX_INI_MAX_INCLUDE_DEPTH) {
        chain_text(&sb, chain, depth + 1);
        EX_FAIL(err, EX_E_CONFIG, "%s:%d: includes nest deeper than %d levels: %s.", chain[depth].path,
                chain[depth].include_line, EX_INI_MAX_INCLUDE_DEPTH, sb.buf);
    }
    struct stat st;
    if (stat(next->path, &st) != 0) {
        int e = errno;
        chain_text(&sb, chain, depth + 1);
        ex_err_set(err, EX_E_IO, __FILE__, __LINE__, "%s:%d: cannot open included file '%s': %s. Include chain: %s.",
                   chain[depth].path, chain[depth].include_line, next->path, strerror(e), sb.buf);
        ex_err_hint(err, "include paths are relative to the directory of the file that includes them ('%s').", dir);
        return EX_E_IO;
    }
    next->dev = st.st_dev, next->ino = st.st_ino, next->has_id = 1;
    for (int i = 0; i <= depth; i++) {
        if (chain[i].has_id && chain[i].dev == st.st_dev && chain[i].ino == st.st_ino) {
            chain_text(&sb, chain, depth + 1);
            EX_FAIL(err, EX_E_CONFIG, "%s:%d: include cycle: %s.", chain[depth].path, chain[depth].include_line,
                    sb.buf);
        }
    }
    char *data = NULL;
    size_t size = 0;
    ex_status s = read_config_file(next->path, &st, &data, &size, err);
    if (s != EX_OK) {
        add_include_context(err, chain, depth + 1);
        return s;
    }
    s = load_text(c, data, size, chain, depth + 1, err);
    free(data);
    return s;
}

/* Parse the text of chain[depth], load its include first, then apply its keys. */
static ex_status load_text(ex_config *c, const char *text, size_t len, frame *chain, int depth, ex_err *err) {
    const frame *f = &chain[depth];
    ex_ini_doc doc;
    ex_status st = ex__ini_parse(text, len, f->path, &doc, err);
    if (st != EX_OK) {
        add_include_context(err, chain, depth);
        return st;
    }
    if (doc.include) {
        chain[depth].include_line = doc.include_line;
        st = load_include(c, doc.include, chain, depth, err);
    }
    char dir[4096], origin[4200];
    ex_path_dirname(f->path, dir, sizeof dir);
    for (int i = 0; st == EX_OK && i < doc.n_secs; i++) {
        snprintf(origin, sizeof origin, "%s:%d", f->path, doc.secs[i].line);
        st = add_section(c, doc.secs[i].name, origin, err);
    }
    for (int i = 0; st == EX_OK && i < doc.n_keys; i++) {
        const ex_ini_key *k = &doc.keys[i];
        snprintf(origin, sizeof origin, "%s:%d", f->path, k->line);
        st = put_entry(c, k->section, k->key, k->value, origin, dir, err);
    }
    ex__ini_doc_free(&doc);
    return st;
}

/* chain has room for the top file plus EX_INI_MAX_INCLUDE_DEPTH includes plus the one that is too deep. */
#define CHAIN_LEN (EX_INI_MAX_INCLUDE_DEPTH + 2)

ex_status ex_config_load(ex_config **out, const char *path, ex_err *err) {
    EX_ENSURE(out && path, err, EX_E_INVALID, "ex_config_load: out and path must not be NULL");
    *out = NULL;
    EX_ENSURE(path[0], err, EX_E_IO, "cannot open config '': empty path.");
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        ex_err_set(err, EX_E_IO, __FILE__, __LINE__, "cannot open config '%s': %s.", path, strerror(e));
        ex_err_hint(err, "relative paths are relative to the current directory; check the config path you passed.");
        return EX_E_IO;
    }
    frame *chain = calloc(CHAIN_LEN, sizeof *chain);
    EX_ENSURE(chain, err, EX_E_NOMEM, "out of memory loading '%s'", path);
    ex_config *c = NULL;
    char *data = NULL;
    size_t size = 0;
    ex_status s;
    if (strlen(path) >= sizeof chain[0].path) EX_FAIL_GOTO(err, s, done, EX_E_IO, "config path too long: '%.200s...'", path);
    snprintf(chain[0].path, sizeof chain[0].path, "%s", path);
    chain[0].dev = st.st_dev, chain[0].ino = st.st_ino, chain[0].has_id = 1;
    EX_CHECK_GOTO(read_config_file(path, &st, &data, &size, err), s, done);
    EX_CHECK_GOTO(ex_config_new(&c, err), s, done);
    EX_CHECK_GOTO(load_text(c, data, size, chain, 0, err), s, done);
    *out = c;
    c = NULL;
done:
    ex_config_free(c);
    free(data);
    free(chain);
    return s;
}

ex_status ex_config_load_string(ex_config **out, const char *text, const char *name, ex_err *err) {
    EX_ENSURE(out && text, err, EX_E_INVALID, "ex_config_load_string: out and text must not be NULL");
    *out = NULL;
    if (!name || !name[0]) name = "<string>";
    frame *chain = calloc(CHAIN_LEN, sizeof *chain);
    EX_ENSURE(chain, err, EX_E_NOMEM, "out of memory loading '%s'", name);
    snprintf(chain[0].path, sizeof chain[0].path, "%s", name);
    ex_config *c = NULL;
    ex_status s;
    EX_CHECK_GOTO(ex_config_new(&c, err), s, done);
    EX_CHECK_GOTO(load_text(c, text, strlen(text), chain, 0, err), s, done);
    *out = c;
    c = NULL;
done:
    ex_config_free(c);
    free(chain);
    return s;
}

/* ---- overrides ------------------------------------------------------------------------------- */

static int has_control(const char *s) {
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f) return 1;
    return 0;
}

#define SET_FORM "Expected section.key=value, e.g. --set peft.lora.rank=64 (the key follows the last '.' before '=')."

ex_status ex_config_set(ex_config *c, const char *assignment, ex_err *err) {
    EX_ENSURE(c && assignment, err, EX_E_INVALID, "ex_config_set: config and assignment must not be NULL");
    const char *a = assignment;
    EX_ENSURE(!has_control(a), err, EX_E_CONFIG, "--set '%.200s' contains a control character. " SET_FORM, a);
    const char *eq = strchr(a, '=');
    EX_ENSURE(eq, err, EX_E_CONFIG, "--set '%.200s' has no '='. " SET_FORM, a);
    const char *lb = a, *le = eq;
    while (lb < le && (*lb == ' ' || *lb == '\t')) lb++;
    while (le > lb && (le[-1] == ' ' || le[-1] == '\t')) le--;
    const char *dot = NULL;
    for (const char *p = lb; p < le; p++)
        if (*p == '.') dot = p;
    EX_ENSURE(dot, err, EX_E_CONFIG, "--set '%.200s' names no section. " SET_FORM, a);
    size_t sl = (size_t)(dot - lb), kl = (size_t)(le - dot - 1);
    EX_ENSURE(ex__ini_valid_section(lb, sl), err, EX_E_CONFIG,
              "--set '%.200s': '%.*s' is not a valid section name (letters, digits, '_', '-', '.'). " SET_FORM, a,
              (int)sl, lb);
    EX_ENSURE(ex__ini_valid_key(dot + 1, kl), err, EX_E_CONFIG,
              "--set '%.200s': '%.*s' is not a valid key name (letters, digits, '_', '-'). " SET_FORM, a, (int)kl,
              dot + 1);
    const char *vb = eq + 1, *ve = eq + strlen(eq);
    while (vb < ve && (*vb == ' ' || *vb == '\t')) vb++;
    while (ve > vb && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    EX_ENSURE(ve > vb, err, EX_E_CONFIG, "--set '%.200s' has an empty value. " SET_FORM, a);
    EX_ENSURE(sl + 2 <= EX_INI_LINE_MAX && kl + (size_t)(ve - vb) + 5 <= EX_INI_LINE_MAX, err, EX_E_CONFIG,
              "--set '%.200s...' is too long: section, key and value must fit in one %d-byte INI line.", a,
              EX_INI_LINE_MAX);
    EX_ENSURE(!(kl == 7 && strncasecmp(dot + 1, "include", 7) == 0), err, EX_E_CONFIG,
              "--set '%.200s': 'include' can only be given in a file, before its first section.", a);
    char *sec = ex__ini_lowdup(lb, sl), *key = ex__ini_lowdup(dot + 1, kl), *val = strndup(vb, (size_t)(ve - vb));
    ex_status s = (sec && key && val) ? put_entry(c, sec, key, val, "--set", NULL, err)
                                      : ex_err_set(err, EX_E_NOMEM, __FILE__, __LINE__, "out of memory in --set");
    free(sec), free(key), free(val);
    return s;
}

/* ---- raw access ---------------------------------------------------------------------------------- */

int ex_config_has_section(const ex_config *c, const char *section) { return find_section(c, section) >= 0; }

int ex_config_section_count(const ex_config *c) { return c ? c->n_secs : 0; }

const char *ex_config_section_name(const ex_config *c, int i) {
    return (c && i >= 0 && i < c->n_secs) ? c->secs[i].name : NULL;
}

const char *ex_config_raw(const ex_config *c, const char *section, const char *key) {
    const ex_cfg_entry *e = ex__config_find(c, section, key);
    return e ? e->value : NULL;
}

const char *ex_config_origin(const ex_config *c, const char *section, const char *key) {
    const ex_cfg_entry *e = ex__config_find(c, section, key);
    return e ? e->origin : NULL;
}

/* ---- writing --------------------------------------------------------------------------------------- */

/* How a value must be written for iniparser 4.1 to read it back unchanged:
 * 0 bare, '"' or '\'' quoted, -1 impossible (it contains both quote kinds and
 * needs quoting). 4.1 has no escapes. */
static int quote_for(const char *v) {
    size_t n = strlen(v);
    int needs = n == 0 || v[0] == ' ' || v[0] == '\t' || v[n - 1] == ' ' || v[n - 1] == '\t' || v[0] == '"' ||
                v[0] == '\'' || v[n - 1] == '\\' || strpbrk(v, ";#") != NULL;
    if (!needs) return 0; /* (a trailing backslash needs quotes: a line may not end in one) */
    if (!strchr(v, '"')) return '"';
    if (!strchr(v, '\'')) return '\'';
    return -1;
}

static int printable(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 0;
    return 1;
}

ex_status ex_config_write(const ex_config *c, FILE *out, ex_err *err) {
    EX_ENSURE(c && out, err, EX_E_INVALID, "ex_config_write: config and stream must not be NULL");
    fprintf(out, "# explora effective configuration (after includes and --set overrides).\n"
                 "# The comment after each value says where it came from.\n");
    for (int i = 0; i < c->n_secs; i++) {
        const char *sec = c->secs[i].name;
        fprintf(out, "\n[%s]\n", sec);
        for (int j = 0; j < c->n_entries; j++) {
            const ex_cfg_entry *e = &c->entries[j];
            if (strcmp(e->section, sec) != 0) continue;
            int q = quote_for(e->value);
            EX_ENSURE(q >= 0, err, EX_E_CONFIG,
                      "%s: [%s] %s = %.200s cannot be written as INI: it needs quoting but contains both ' and \".",
                      e->origin, sec, e->key, e->value);
            size_t line = strlen(e->key) + 3 + strlen(e->value) + (q ? 2 : 0);
            EX_ENSURE(line <= EX_INI_LINE_MAX, err, EX_E_CONFIG,
                      "%s: [%s] %s: the value is too long to write as one %d-byte INI line.", e->origin, sec, e->key,
                      EX_INI_LINE_MAX);
            if (q)
                fprintf(out, "%s = %c%s%c", e->key, q, e->value, q);
            else
                fprintf(out, "%s = %s", e->key, e->value);
            if (printable(e->origin) && line + 8 + strlen(e->origin) <= EX_INI_LINE_MAX)
                fprintf(out, "  ; %s", e->origin);
            fputc('\n', out);
        }
    }
    EX_ENSURE(!ferror(out), err, EX_E_IO, "writing the config failed: %s.", strerror(errno));
    return EX_OK;
}
