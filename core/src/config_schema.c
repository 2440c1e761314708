/*
 * core/src/config_schema.c — typed values: parsing and range checks, schema
 * validation of a section, the check for unknown sections, the ex_cfg_*
 * getters and the printed key tables (see explora/config.h).
 *
 * Value rules:
 *   int    decimal only, optional sign: "010" is ten; "0x10", "1.5", "12abc",
 *          "" and anything outside int64 are rejected (strtoll + end pointer).
 *   float  digits, sign, '.', 'e'/'E' only, fully consumed by strtod, finite:
 *          "1e-3" is accepted; "nan", "inf", hex floats and overflow are
 *          rejected (a NaN learning rate is never what anyone meant).
 *          strtod follows LC_NUMERIC; explora never changes it from "C".
 *   bool   true/false, yes/no, on/off, 1/0, any case.
 *   enum   one of spec->choices ("a|b|c"), any case; the getter returns the index.
 *   lists  comma-separated, blanks around items trimmed, empty items rejected;
 *          each item is checked like a scalar, and against the range if any.
 * Blanks around numbers, booleans and enum names (possible inside quotes) are
 * ignored; strings and paths are taken as written.
 */
#include "config_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "explora/fileio.h"

/* ---- scalar parsing: each returns NULL when fine, else what is wrong ------------------ */

static int is_blank(char c) { return c == ' ' || c == '\t'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

static void trim(const char **b, const char **e) {
    while (*b < *e && is_blank(**b)) (*b)++;
    while (*e > *b && is_blank((*e)[-1])) (*e)--;
}

static const char *parse_int(const char *b, const char *e, int64_t *out) {
    const char *p = b;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if (p == e) return "is not an integer";
    for (const char *q = p; q < e; q++)
        if (!is_digit(*q)) return "is not an integer";
    char *end = NULL;
    errno = 0;
    long long v = strtoll(b, &end, 10); /* stops at e: what follows is not a digit */
    if (errno == ERANGE) return "does not fit in a 64-bit integer";
    if (end != e) return "is not an integer";
    *out = (int64_t)v;
    return NULL;
}

static const char *parse_float(const char *b, const char *e, double *out) {
    int digits = 0;
    for (const char *q = b; q < e; q++) {
        if (is_digit(*q))
            digits = 1;
        else if (!strchr("+-.eE", *q))
            return "is not a number";
    }
    if (!digits) return "is not a number";
    char tmp[128];
    if ((size_t)(e - b) >= sizeof tmp) return "is not a number (too long)";
    memcpy(tmp, b, (size_t)(e - b));
    tmp[e - b] = '\0';
    char *end = NULL;
    double v = strtod(tmp, &end);
    if (end != tmp + (e - b)) return "is not a number";
    if (!isfinite(v)) return "is outside the range of a double";
    *out = v;
    return NULL;
}

static const char *parse_bool(const char *b, const char *e, int *out) {
    static const char *const t[] = {"true", "yes", "on", "1"}, *const f[] = {"false", "no", "off", "0"};
    size_t n = (size_t)(e - b);
    for (int i = 0; i < 4; i++) {
        if (strlen(t[i]) == n && strncasecmp(b, t[i], n) == 0) return *out = 1, NULL;
        if (strlen(f[i]) == n && strncasecmp(b, f[i], n) == 0) return *out = 0, NULL;
    }
    return "is not a boolean";
}

/* Index of [b, e) among "a|b|c", or -1. */
static int enum_index(const char *choices, const char *b, const char *e) {
    size_t n = (size_t)(e - b);
    int idx = 0;
    for (const char *p = choices;; idx++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && n > 0 && strncasecmp(p, b, n) == 0) return idx;
        if (!bar) return -1;
        p = bar + 1;
    }
}

static int has_range(const ex_key_spec *sp) { return sp->min <= sp->max; }
static int out_of_range(const ex_key_spec *sp, double v) { return has_range(sp) && (v < sp->min || v > sp->max); }

/* ---- describing what a key accepts ------------------------------------------------------ */

static void add_num(ex_sb *sb, double v) {
    if (v == floor(v) && fabs(v) < 1e15)
        ex__sb_add(sb, "%.0f", v);
    else
        ex__sb_add(sb, "%.10g", v);
}

static void add_range(ex_sb *sb, const ex_key_spec *sp, const char *lead) {
    if (!has_range(sp)) return;
    ex__sb_add(sb, "%s[", lead);
    add_num(sb, sp->min);
    ex__sb_add(sb, ", ");
    add_num(sb, sp->max);
    ex__sb_add(sb, "]");
}

static void add_choices(ex_sb *sb, const char *choices) {
    for (const char *p = choices ? choices : ""; *p; p++) {
        if (*p == '|')
            ex__sb_add(sb, ", ");
        else
            ex__sb_add(sb, "%c", *p);
    }
}

/* "an integer in [1, 1024]", "one of: a, b, c" ... */
static void describe(ex_sb *sb, const ex_key_spec *sp) {
    switch (sp->type) {
    case EX_KEY_INT: ex__sb_add(sb, "an integer"), add_range(sb, sp, " in "); break;
    case EX_KEY_FLOAT: ex__sb_add(sb, "a number"), add_range(sb, sp, " in "); break;
    case EX_KEY_BOOL: ex__sb_add(sb, "a boolean (true/false, yes/no, on/off, 1/0)"); break;
    case EX_KEY_STRING: ex__sb_add(sb, "a string"); break;
    case EX_KEY_ENUM: ex__sb_add(sb, "one of: "), add_choices(sb, sp->choices); break;
    case EX_KEY_INT_LIST:
        ex__sb_add(sb, "a comma-separated list of integers"), add_range(sb, sp, ", each in ");
        break;
    case EX_KEY_FLOAT_LIST:
        ex__sb_add(sb, "a comma-separated list of numbers"), add_range(sb, sp, ", each in ");
        break;
    case EX_KEY_STRING_LIST: ex__sb_add(sb, "a comma-separated list of non-empty strings"); break;
    case EX_KEY_PATH: ex__sb_add(sb, "a file or directory path"); break;
    }
}

const char *ex_key_type_name(ex_key_type t) {
    switch (t) {
    case EX_KEY_INT: return "int";
    case EX_KEY_FLOAT: return "float";
    case EX_KEY_BOOL: return "bool";
    case EX_KEY_STRING: return "string";
    case EX_KEY_ENUM: return "enum";
    case EX_KEY_INT_LIST: return "int-list";
    case EX_KEY_FLOAT_LIST: return "float-list";
    case EX_KEY_STRING_LIST: return "string-list";
    case EX_KEY_PATH: return "path";
    }
    return "unknown";
}

/* A spec that cannot work at all (a plugin bug), or NULL. */
static const char *spec_problem(const ex_key_spec *sp) {
    if ((unsigned)sp->type > (unsigned)EX_KEY_PATH) return "has an unknown type";
    if (sp->type == EX_KEY_ENUM && (!sp->choices || !sp->choices[0])) return "is an enum without choices";
    return NULL;
}

/* ---- checking one value against its spec ------------------------------------------------- */

/* Where typed results go; every pointer may be NULL (validation only). */
typedef struct typed_out {
    int64_t i;
    double f;
    int b, idx;
    int64_t *ints;     /* int lists */
    double *floats;    /* float lists */
    const char **items; /* string lists, pointing into buf */
    char *buf;
    size_t buf_cap, buf_len;
    int cap;   /* list capacity; -1: unlimited (validation) */
    int count; /* list items seen */
} typed_out;

/* Check one scalar item [b, e) of type `t` (a list's item type for lists). */
static const char *check_scalar(const ex_key_spec *sp, ex_key_type t, const char *b, const char *e, typed_out *o) {
    const char *why = NULL;
    switch (t) {
    case EX_KEY_INT:
        if (!(why = parse_int(b, e, &o->i)) && out_of_range(sp, (double)o->i)) why = "is out of range";
        break;
    case EX_KEY_FLOAT:
        if (!(why = parse_float(b, e, &o->f)) && out_of_range(sp, o->f)) why = "is out of range";
        break;
    case EX_KEY_BOOL: why = parse_bool(b, e, &o->b); break;
    case EX_KEY_ENUM:
        o->idx = enum_index(sp->choices, b, e);
        if (o->idx < 0) why = "is not one of the choices";
        break;
    default: break; /* strings and paths: anything non-empty */
    }
    return why;
}

static int store_item(const ex_key_spec *sp, const char *b, const char *e, typed_out *o, ex_sb *why) {
    if (o->cap >= 0 && o->count >= o->cap) {
        ex__sb_add(why, "has more than %d items, the most this key takes", o->cap);
        return 1;
    }
    if (sp->type == EX_KEY_INT_LIST && o->ints) o->ints[o->count] = o->i;
    if (sp->type == EX_KEY_FLOAT_LIST && o->floats) o->floats[o->count] = o->f;
    if (sp->type == EX_KEY_STRING_LIST && o->buf) {
        size_t n = (size_t)(e - b);
        if (o->buf_len + n + 1 > o->buf_cap) {
            ex__sb_add(why, "is too long: the items take more than the %zu bytes this key allows", o->buf_cap);
            return 1;
        }
        memcpy(o->buf + o->buf_len, b, n);
        o->buf[o->buf_len + n] = '\0';
        if (o->items) o->items[o->count] = o->buf + o->buf_len;
        o->buf_len += n + 1;
    }
    o->count++;
    return 0;
}

static int check_list(const ex_key_spec *sp, const char *v, typed_out *o, ex_sb *why) {
    ex_key_type item = sp->type == EX_KEY_INT_LIST ? EX_KEY_INT
                       : sp->type == EX_KEY_FLOAT_LIST ? EX_KEY_FLOAT : EX_KEY_STRING;
    o->count = 0;
    const char *end = v + strlen(v), *b0 = v, *e0 = end;
    trim(&b0, &e0);
    if (b0 == e0) return 0; /* an empty list (only a default can be empty) */
    for (const char *p = v;;) {
        const char *comma = strchr(p, ',');
        const char *b = p, *e = comma ? comma : end;
        trim(&b, &e);
        if (b == e) {
            ex__sb_add(why, "has an empty item (item %d)", o->count + 1);
            return 1;
        }
        const char *w = check_scalar(sp, item, b, e, o);
        if (w) {
            ex__sb_add(why, "item %d (", o->count + 1);
            ex__sb_excerpt(why, b, (size_t)(e - b), 60);
            ex__sb_add(why, ") %s", w);
            return 1;
        }
        if (store_item(sp, b, e, o, why)) return 1;
        if (!comma) return 0;
        p = comma + 1;
    }
}

/* Check `v` against `sp`, filling `o`; on a problem describe it in `why` and return nonzero. */
static int check_value(const ex_key_spec *sp, const char *v, typed_out *o, ex_sb *why) {
    if (sp->type == EX_KEY_INT_LIST || sp->type == EX_KEY_FLOAT_LIST || sp->type == EX_KEY_STRING_LIST)
        return check_list(sp, v, o, why);
    const char *b = v, *e = v + strlen(v);
    if (sp->type != EX_KEY_STRING && sp->type != EX_KEY_PATH) trim(&b, &e);
    const char *w = check_scalar(sp, sp->type, b, e, o);
    if (w) ex__sb_add(why, "%s", w);
    return w != NULL;
}

/* ---- messages -------------------------------------------------------------------------------- */

/* `<origin>: [sec] key = "value" <why>. Expected <what>.` (EX_E_CONFIG), or, for a
 * bad default, EX_E_INTERNAL naming the plugin bug. */
static ex_status value_error(const char *section, const ex_key_spec *sp, const char *value, const char *origin,
                             const ex_sb *why, ex_err *err) {
    ex_sb sb;
    ex__sb_init(&sb);
    if (origin)
        ex__sb_add(&sb, "%s: [%s] %s = ", origin, section, sp->name);
    else
        ex__sb_add(&sb, "[%s] %s: the declared default ", section, sp->name);
    ex__sb_excerpt(&sb, value, strlen(value), 200);
    ex__sb_add(&sb, " %s. Expected ", why->buf);
    describe(&sb, sp);
    ex__sb_add(&sb, origin ? "." : ". This is a bug in the code that declares the key.");
    EX_FAIL(err, origin ? EX_E_CONFIG : EX_E_INTERNAL, "%s", sb.buf);
}

static ex_status missing_error(const char *section, const ex_key_spec *sp, ex_err *err) {
    ex_sb sb;
    ex__sb_init(&sb);
    ex__sb_add(&sb, "[%s] required key '%s' is missing. Expected ", section, sp->name);
    describe(&sb, sp);
    ex__sb_add(&sb, ".");
    ex_err_set(err, EX_E_CONFIG, __FILE__, __LINE__, "%s", sb.buf);
    ex_err_hint(err, "add \"%s = ...\" under [%s], or pass --set %s.%s=...", sp->name, section, section, sp->name);
    return EX_E_CONFIG;
}

/* The closest candidate to `name` when it is an obvious typo (edit distance <= 2). */
static const char *closest(const char *name, const ex_key_spec *specs, const char *const *extra) {
    const char *best = NULL;
    int best_d = 3, limit = (int)strlen(name);
    for (int i = 0; specs && specs[i].name; i++) {
        int d = ex__edit_distance(name, specs[i].name);
        if (d < best_d && d < limit) best = specs[i].name, best_d = d;
    }
    for (int i = 0; extra && extra[i]; i++) {
        int d = ex__edit_distance(name, extra[i]);
        if (d < best_d && d < limit) best = extra[i], best_d = d;
    }
    return best;
}

static ex_status unknown_key_error(const ex_cfg_entry *e, const ex_key_spec *specs, const char *const *extra,
                                   ex_err *err) {
    ex_sb sb;
    ex__sb_init(&sb);
    ex__sb_add(&sb, "%s: [%s] unknown key '%s' (= ", e->origin, e->section, e->key);
    ex__sb_excerpt(&sb, e->value, strlen(e->value), 80);
    ex__sb_add(&sb, ").");
    const char *near = closest(e->key, specs, extra);
    if (near) ex__sb_add(&sb, " Did you mean '%s'?", near);
    int n = 0;
    for (int i = 0; specs && specs[i].name; i++, n++) {
        if (!n) ex__sb_add(&sb, " Accepted keys in [%s]: ", e->section);
        ex__sb_add(&sb, "%s%s", n ? ", " : "", specs[i].name);
    }
    for (int i = 0; extra && extra[i]; i++, n++) {
        if (!n) ex__sb_add(&sb, " Accepted keys in [%s]: ", e->section);
        ex__sb_add(&sb, "%s%s", n ? ", " : "", extra[i]);
    }
    if (n)
        ex__sb_add(&sb, ".");
    else
        ex__sb_add(&sb, " [%s] accepts no keys.", e->section);
    EX_FAIL(err, EX_E_CONFIG, "%s", sb.buf);
}

/* ---- validation --------------------------------------------------------------------------------- */

static const ex_key_spec *find_spec(const ex_key_spec *specs, const char *key) {
    for (int i = 0; specs && specs[i].name; i++)
        if (strcasecmp(specs[i].name, key) == 0) return &specs[i];
    return NULL;
}

static int in_list(const char *const *list, const char *key) {
    for (int i = 0; list && list[i]; i++)
        if (strcasecmp(list[i], key) == 0) return 1;
    return 0;
}

/* Every spec is usable and every default is a valid value (plugin bugs show up early). */
static ex_status check_specs(const char *section, const ex_key_spec *specs, ex_err *err) {
    for (int i = 0; specs && specs[i].name; i++) {
        const ex_key_spec *sp = &specs[i];
        const char *bad = spec_problem(sp);
        EX_ENSURE(!bad, err, EX_E_INTERNAL, "[%s] key '%s' %s. This is a bug in the code that declares the key.",
                  section, sp->name, bad);
        if (!sp->default_value) continue;
        typed_out o = {.cap = -1};
        ex_sb why;
        ex__sb_init(&why);
        if (check_value(sp, sp->default_value, &o, &why)) return value_error(section, sp, sp->default_value, NULL, &why, err);
    }
    return EX_OK;
}

ex_status ex_config_validate_section(const ex_config *c, const char *section, const ex_key_spec *specs,
                                     const char *const *extra_allowed, ex_err *err) {
    EX_ENSURE(section, err, EX_E_INVALID, "ex_config_validate_section: section is NULL");
    EX_CHECK(check_specs(section, specs, err));
    for (int i = 0; c && i < c->n_entries; i++) {
        const ex_cfg_entry *e = &c->entries[i];
        if (strcasecmp(e->section, section) != 0 || in_list(extra_allowed, e->key)) continue;
        const ex_key_spec *sp = find_spec(specs, e->key);
        if (!sp) return unknown_key_error(e, specs, extra_allowed, err);
        typed_out o = {.cap = -1};
        ex_sb why;
        ex__sb_init(&why);
        if (check_value(sp, e->value, &o, &why)) return value_error(section, sp, e->value, e->origin, &why, err);
    }
    for (int i = 0; specs && specs[i].name; i++)
        if (!specs[i].default_value && !ex__config_find(c, section, specs[i].name))
            return missing_error(section, &specs[i], err);
    return EX_OK;
}

ex_status ex_config_check_sections(const ex_config *c, const char *const *known, ex_err *err) {
    ex_sb sb;
    ex__sb_init(&sb);
    int bad = 0;
    for (int i = 0; c && i < c->n_secs; i++) {
        const char *name = c->secs[i].name;
        if (in_list(known, name)) continue;
        ex__sb_add(&sb, "%s%s: unknown section [%s]", bad++ ? "; " : "", c->secs[i].origin, name);
        const char *near = NULL;
        int best_d = 3;
        for (int k = 0; known && known[k]; k++) {
            int d = ex__edit_distance(name, known[k]);
            if (d < best_d && d < (int)strlen(name)) near = known[k], best_d = d;
        }
        if (near) ex__sb_add(&sb, " (did you mean [%s]?)", near);
    }
    if (!bad) return EX_OK;
    ex__sb_add(&sb, ". Known sections:");
    for (int k = 0; known && known[k]; k++) ex__sb_add(&sb, "%s [%s]", k ? "," : "", known[k]);
    ex__sb_add(&sb, (known && known[0]) ? "." : " none.");
    EX_FAIL(err, EX_E_CONFIG, "%s", sb.buf);
}

/* ---- getters ----------------------------------------------------------------------------------------- */

/* The value a getter works on: the config's, or the default. */
typedef struct lookup {
    const ex_key_spec *spec;
    const char *value;
    const ex_cfg_entry *entry; /* NULL when the default is used */
} lookup;

#define TYPE_BIT(t) (1u << (unsigned)(t))

static ex_status get_value(const ex_cfg_section *s, const char *key, const char *getter, unsigned types,
                           lookup *lk, ex_err *err) {
    EX_ENSURE(s && key, err, EX_E_INVALID, "%s: section view and key must not be NULL", getter);
    const char *sec = s->section ? s->section : "";
    lk->spec = find_spec(s->specs, key);
    if (!lk->spec) {
        ex_sb sb;
        ex__sb_init(&sb);
        for (int i = 0; s->specs && s->specs[i].name; i++) ex__sb_add(&sb, i ? ", %s" : "%s", s->specs[i].name);
        EX_FAIL(err, EX_E_INTERNAL,
                "%s: [%s] key '%s' is read but not declared in the section's key specs (declared: %s). This is a "
                "bug in the plugin or core module that owns [%s].",
                getter, sec, key, sb.len ? sb.buf : "none", sec);
    }
    const char *bad = spec_problem(lk->spec);
    EX_ENSURE(!bad, err, EX_E_INTERNAL, "[%s] key '%s' %s. This is a bug in the code that declares the key.", sec,
              key, bad);
    EX_ENSURE(types & TYPE_BIT(lk->spec->type), err, EX_E_INTERNAL,
              "%s: [%s] key '%s' is declared as %s. This is a bug in the code that reads the key.", getter, sec, key,
              ex_key_type_name(lk->spec->type));
    lk->entry = ex__config_find(s->config, sec, key);
    lk->value = lk->entry ? lk->entry->value : lk->spec->default_value;
    if (!lk->value) return missing_error(sec, lk->spec, err);
    return EX_OK;
}

/* get_value + check_value, with the error message on a bad value. */
static ex_status get_typed(const ex_cfg_section *s, const char *key, const char *getter, unsigned types, lookup *lk,
                           typed_out *o, ex_err *err) {
    EX_CHECK(get_value(s, key, getter, types, lk, err));
    ex_sb why;
    ex__sb_init(&why);
    if (check_value(lk->spec, lk->value, o, &why))
        return value_error(s->section ? s->section : "", lk->spec, lk->value, lk->entry ? lk->entry->origin : NULL,
                           &why, err);
    return EX_OK;
}

ex_status ex_cfg_int(const ex_cfg_section *s, const char *key, int64_t *out, ex_err *err) {
    lookup lk;
    typed_out o = {.cap = -1};
    EX_CHECK(get_typed(s, key, "ex_cfg_int", TYPE_BIT(EX_KEY_INT), &lk, &o, err));
    *out = o.i;
    return EX_OK;
}

ex_status ex_cfg_float(const ex_cfg_section *s, const char *key, double *out, ex_err *err) {
    lookup lk;
    typed_out o = {.cap = -1};
    EX_CHECK(get_typed(s, key, "ex_cfg_float", TYPE_BIT(EX_KEY_FLOAT), &lk, &o, err));
    *out = o.f;
    return EX_OK;
}

ex_status ex_cfg_bool(const ex_cfg_section *s, const char *key, int *out, ex_err *err) {
    lookup lk;
    typed_out o = {.cap = -1};
    EX_CHECK(get_typed(s, key, "ex_cfg_bool", TYPE_BIT(EX_KEY_BOOL), &lk, &o, err));
    *out = o.b;
    return EX_OK;
}

/* Any declared type may be read as its text; the value is still checked against its type. */
ex_status ex_cfg_string(const ex_cfg_section *s, const char *key, const char **out, ex_err *err) {
    lookup lk;
    typed_out o = {.cap = -1};
    EX_CHECK(get_typed(s, key, "ex_cfg_string", ~0u, &lk, &o, err));
    *out = lk.value;
    return EX_OK;
}

ex_status ex_cfg_enum(const ex_cfg_section *s, const char *key, int *out, ex_err *err) {
    lookup lk;
    typed_out o = {.cap = -1};
    EX_CHECK(get_typed(s, key, "ex_cfg_enum", TYPE_BIT(EX_KEY_ENUM), &lk, &o, err));
    *out = o.idx;
    return EX_OK;
}

ex_status ex_cfg_int_list(const ex_cfg_section *s, const char *key, int64_t *out, int cap, int *count, ex_err *err) {
    EX_ENSURE(out && count && cap >= 0, err, EX_E_INVALID, "ex_cfg_int_list: bad output arguments");
    lookup lk;
    typed_out o = {.ints = out, .cap = cap};
    *count = 0;
    EX_CHECK(get_typed(s, key, "ex_cfg_int_list", TYPE_BIT(EX_KEY_INT_LIST), &lk, &o, err));
    *count = o.count;
    return EX_OK;
}

ex_status ex_cfg_float_list(const ex_cfg_section *s, const char *key, double *out, int cap, int *count,
                            ex_err *err) {
    EX_ENSURE(out && count && cap >= 0, err, EX_E_INVALID, "ex_cfg_float_list: bad output arguments");
    lookup lk;
    typed_out o = {.floats = out, .cap = cap};
    *count = 0;
    EX_CHECK(get_typed(s, key, "ex_cfg_float_list", TYPE_BIT(EX_KEY_FLOAT_LIST), &lk, &o, err));
    *count = o.count;
    return EX_OK;
}

ex_status ex_cfg_string_list(const ex_cfg_section *s, const char *key, const char **items, int cap, int *count,
                             char *buf, size_t buf_cap, ex_err *err) {
    EX_ENSURE(items && count && buf && cap >= 0, err, EX_E_INVALID, "ex_cfg_string_list: bad output arguments");
    lookup lk;
    typed_out o = {.items = items, .buf = buf, .buf_cap = buf_cap, .cap = cap};
    *count = 0;
    EX_CHECK(get_typed(s, key, "ex_cfg_string_list", TYPE_BIT(EX_KEY_STRING_LIST), &lk, &o, err));
    *count = o.count;
    return EX_OK;
}

/* Relative values from a file resolve against that file's directory; values
 * from --set and defaults against the current directory (returned unchanged). */
ex_status ex_cfg_path(const ex_cfg_section *s, const char *key, char *out, size_t cap, ex_err *err) {
    EX_ENSURE(out && cap > 0, err, EX_E_INVALID, "ex_cfg_path: bad output buffer");
    lookup lk;
    typed_out o = {.cap = -1};
    EX_CHECK(get_typed(s, key, "ex_cfg_path", TYPE_BIT(EX_KEY_PATH) | TYPE_BIT(EX_KEY_STRING), &lk, &o, err));
    const char *dir = lk.entry ? lk.entry->dir : NULL;
    if (ex_path_join(dir, lk.value, out, cap, NULL) != EX_OK) {
        out[0] = '\0';
        EX_FAIL(err, EX_E_CONFIG, "%s: [%s] %s = \"%.200s\": the resolved path is longer than %zu bytes.",
                lk.entry ? lk.entry->origin : "default", s->section ? s->section : "", key, lk.value, cap - 1);
    }
    return EX_OK;
}

/* ---- printing ------------------------------------------------------------------------------------------ */

static void range_text(const ex_key_spec *sp, ex_sb *sb) {
    ex__sb_init(sb);
    if (sp->type == EX_KEY_ENUM)
        ex__sb_add(sb, "%s", sp->choices ? sp->choices : "");
    else if (sp->type == EX_KEY_INT || sp->type == EX_KEY_FLOAT || sp->type == EX_KEY_INT_LIST ||
             sp->type == EX_KEY_FLOAT_LIST)
        add_range(sb, sp, "");
    if (!sb->len) ex__sb_add(sb, "-");
}

static const char *default_text(const ex_key_spec *sp) {
    if (!sp->default_value) return "required";
    return sp->default_value[0] ? sp->default_value : "\"\"";
}

void ex_key_specs_print(const ex_key_spec *specs, FILE *out) {
    if (!out) return;
    if (!specs || !specs[0].name) {
        fprintf(out, "  (no keys)\n");
        return;
    }
    int wk = 3, wt = 4, wd = 7, wr = 13;
    ex_sb r;
    for (int i = 0; specs[i].name; i++) {
        range_text(&specs[i], &r);
        int lk = (int)strlen(specs[i].name), lt = (int)strlen(ex_key_type_name(specs[i].type));
        int ld = (int)strlen(default_text(&specs[i])), lr = (int)r.len;
        wk = lk > wk ? lk : wk, wt = lt > wt ? lt : wt, wd = ld > wd ? ld : wd, wr = lr > wr ? lr : wr;
    }
    fprintf(out, "  %-*s  %-*s  %-*s  %-*s  %s\n", wk, "key", wt, "type", wd, "default", wr, "range/choices", "help");
    for (int i = 0; specs[i].name; i++) {
        range_text(&specs[i], &r);
        fprintf(out, "  %-*s  %-*s  %-*s  %-*s  %s\n", wk, specs[i].name, wt, ex_key_type_name(specs[i].type), wd,
                default_text(&specs[i]), wr, r.buf, specs[i].help ? specs[i].help : "");
    }
}
