/*
 * explora/config.h — strict INI configuration.
 *
 * Files are parsed with iniparser; everything a user can get wrong is checked
 * here, with an error naming the file, line, section, key, the bad value and
 * what is accepted. Rules:
 *
 *   - Sections are "[name]" or "[name.sub]" (e.g. [peft.lora]) of
 *     [A-Za-z0-9_.-]; keys are [A-Za-z0-9_-]; both case-insensitive (stored
 *     lowercase, as iniparser does). Lines are at most 1000 bytes.
 *   - Stricter than iniparser: a trailing backslash, an unquoted ';' or '#'
 *     inside a value, an unterminated quote and "[]" are errors rather than
 *     silently reinterpreted; CRLF and a UTF-8 BOM are accepted.
 *   - `include = base.ini` before the first section pulls in a base file
 *     (relative to the including file; one include per file). Values from
 *     the including file win. Includes nest up to 8 deep; a cycle is an
 *     error naming the chain.
 *   - A key given twice in one file is an error; a key without "=" or with
 *     an empty value is an error (iniparser 4.1 crashes on those, we don't).
 *   - Overrides "section.key=value" (the CLI's --set) are applied last; a
 *     key the section's schema does not declare is reported by
 *     ex_config_validate_section with the origin "--set".
 *   - Integers are decimal only ("010" is ten, not octal eight); floats must
 *     parse completely; booleans are true/false/yes/no/on/off/1/0.
 *
 * Validation is by schema: every section that is used has a list of
 * ex_key_spec (core sections declare theirs, each plugin declares its own),
 * and ex_config_validate_section rejects unknown keys and bad values before
 * any heavy work starts. Getters then read typed values through an
 * ex_cfg_section, falling back to the declared default.
 *
 * Errors: syntax (including duplicate and valueless keys) is EX_E_FORMAT; a
 * missing or unreadable file EX_E_IO; bad values, unknown keys or sections,
 * include cycles and depth EX_E_CONFIG; a plugin asking for a key it did not
 * declare EX_E_INTERNAL. Number ranges are doubles (exact up to 2^53).
 */
#ifndef EXPLORA_CONFIG_H
#define EXPLORA_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "explora/export.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ex_key_type {
    EX_KEY_INT = 0,         /* int64, decimal, optional range [min, max] */
    EX_KEY_FLOAT = 1,       /* double, optional range [min, max] */
    EX_KEY_BOOL = 2,
    EX_KEY_STRING = 3,
    EX_KEY_ENUM = 4,        /* one of `choices`, written "a|b|c" */
    EX_KEY_INT_LIST = 5,    /* comma-separated ints, each in [min, max] when a range is set */
    EX_KEY_FLOAT_LIST = 6,  /* comma-separated floats */
    EX_KEY_STRING_LIST = 7, /* comma-separated strings, surrounding blanks trimmed */
    EX_KEY_PATH = 8         /* a string; relative paths resolve against the file that set them */
} ex_key_type;

/* One accepted key of a section. Arrays of specs end with an entry whose name is NULL. */
typedef struct ex_key_spec {
    const char *name;
    ex_key_type type;
    const char *default_value; /* text form; NULL means the key is required */
    double min, max;           /* range for numbers and list items; ignored when min > max */
    const char *choices;       /* EX_KEY_ENUM: "a|b|c" */
    const char *help;          /* one line for `explora plugins --keys` */
} ex_key_spec;

/* Convenience initialisers for spec tables. EX_NORANGE disables the range check. */
#define EX_NORANGE 1.0, 0.0
#define EX_KEY_END { NULL, EX_KEY_INT, NULL, EX_NORANGE, NULL, NULL }

typedef struct ex_config ex_config;

/* Load `path` (and its includes). Error on a missing file, a syntax error, a
 * duplicate key, a valueless key, an include cycle. */
EX_API ex_status ex_config_load(ex_config **out, const char *path, ex_err *err);
/* Parse INI text held in memory; `name` is used in messages and for relative includes. */
EX_API ex_status ex_config_load_string(ex_config **out, const char *text, const char *name, ex_err *err);
/* An empty config (for verbs that need none). */
EX_API ex_status ex_config_new(ex_config **out, ex_err *err);
EX_API void ex_config_free(ex_config *c);

/* Apply one override "section.key=value" (section names may contain dots: the
 * key is what follows the last dot before '='). */
EX_API ex_status ex_config_set(ex_config *c, const char *assignment, ex_err *err);

EX_API int ex_config_has_section(const ex_config *c, const char *section);
EX_API int ex_config_section_count(const ex_config *c);
EX_API const char *ex_config_section_name(const ex_config *c, int i);
/* Raw string value or NULL; no schema involved. */
EX_API const char *ex_config_raw(const ex_config *c, const char *section, const char *key);
/* Where a value came from, for messages: "run.ini:12" or "--set". NULL if absent. */
EX_API const char *ex_config_origin(const ex_config *c, const char *section, const char *key);

/* Check every key present in `section` against `specs`: unknown keys, type,
 * range and choices; required keys that are missing. `extra_allowed` is a
 * NULL-terminated list of further key names accepted without checking (e.g.
 * "name" in a plugin section), or NULL. */
EX_API ex_status ex_config_validate_section(const ex_config *c, const char *section,
                                            const ex_key_spec *specs,
                                            const char *const *extra_allowed, ex_err *err);
/* Error naming every section of the file that is not in `known` (NULL-terminated). */
EX_API ex_status ex_config_check_sections(const ex_config *c, const char *const *known, ex_err *err);

/* Write the effective config (after includes and overrides) as INI. */
EX_API ex_status ex_config_write(const ex_config *c, FILE *out, ex_err *err);

/* A view of one section through its schema: what plugins receive. */
typedef struct ex_cfg_section {
    const ex_config *config;
    const char *section;
    const ex_key_spec *specs;
} ex_cfg_section;

/* Typed getters. The key must be declared in `specs` (else EX_E_INTERNAL: a
 * plugin asked for a key it did not declare). The value is the config's, or the
 * default; a required key that is absent is EX_E_CONFIG. */
EX_API ex_status ex_cfg_int(const ex_cfg_section *s, const char *key, int64_t *out, ex_err *err);
EX_API ex_status ex_cfg_float(const ex_cfg_section *s, const char *key, double *out, ex_err *err);
EX_API ex_status ex_cfg_bool(const ex_cfg_section *s, const char *key, int *out, ex_err *err);
/* The returned string lives until the key is set again or the config is freed. */
EX_API ex_status ex_cfg_string(const ex_cfg_section *s, const char *key, const char **out, ex_err *err);
/* Index of the value in the spec's choices. */
EX_API ex_status ex_cfg_enum(const ex_cfg_section *s, const char *key, int *out, ex_err *err);
/* Lists: fills up to `cap` items and sets *count; more than `cap` items is EX_E_CONFIG. */
EX_API ex_status ex_cfg_int_list(const ex_cfg_section *s, const char *key, int64_t *out, int cap,
                                 int *count, ex_err *err);
EX_API ex_status ex_cfg_float_list(const ex_cfg_section *s, const char *key, double *out, int cap,
                                   int *count, ex_err *err);
/* String lists: items are copied into `buf` (cap bytes), NUL-separated; `items` points into it. */
EX_API ex_status ex_cfg_string_list(const ex_cfg_section *s, const char *key, const char **items,
                                    int cap, int *count, char *buf, size_t buf_cap, ex_err *err);
/* A path, resolved against the directory of the file that set it (absolute paths unchanged). */
EX_API ex_status ex_cfg_path(const ex_cfg_section *s, const char *key, char *out, size_t cap, ex_err *err);

/* Print a spec table (name, type, default, range/choices, help) for `explora plugins --keys`. */
EX_API void ex_key_specs_print(const ex_key_spec *specs, FILE *out);
EX_API const char *ex_key_type_name(ex_key_type t);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_CONFIG_H */
