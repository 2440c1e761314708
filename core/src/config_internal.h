/*
 * core/src/config_internal.h — shared between config.c (the entry table,
 * loading, includes, overrides, writing), config_parse.c (the line scanner and
 * the iniparser bridge) and config_schema.c (typed values, validation, getters).
 * Not installed; nothing here is part of the ABI.
 */
#ifndef EXPLORA_CONFIG_INTERNAL_H
#define EXPLORA_CONFIG_INTERNAL_H

#include <stddef.h>

#include "explora/config.h"
#include "explora/status.h"

/* Longest accepted line, in bytes, without its line ending. iniparser 4.1 reads
 * lines with fgets into a 1024-byte buffer and fails on anything over 1022;
 * we stop a little earlier, with a message that names the line. */
#define EX_INI_LINE_MAX 1000
/* Number of include hops allowed below the file given by the user. */
#define EX_INI_MAX_INCLUDE_DEPTH 8
/* Keys (and, separately, sections) per file and per merged config. Far above any
 * real config; it bounds the quadratic work iniparser 4.1 and our own lookups do. */
#define EX_INI_MAX_KEYS 4096
/* Largest config file read, in bytes. */
#define EX_INI_MAX_FILE_BYTES (4u << 20)

/* ---- the merged config ---------------------------------------------------- */

typedef struct ex_cfg_entry {
    char *section; /* lowercase */
    char *key;     /* lowercase */
    char *value;   /* as iniparser (or --set) gave it; never empty */
    char *origin;  /* "file:line" or "--set" */
    char *dir;     /* directory relative paths resolve against; NULL = current directory */
} ex_cfg_entry;

typedef struct ex_cfg_sec {
    char *name;   /* lowercase */
    char *origin; /* where it first appeared */
} ex_cfg_sec;

struct ex_config {
    ex_cfg_entry *entries;
    int n_entries, cap_entries;
    ex_cfg_sec *secs;
    int n_secs, cap_secs;
};

/* Entry for (section, key), compared case-insensitively, or NULL. `c` may be NULL. */
const ex_cfg_entry *ex__config_find(const ex_config *c, const char *section, const char *key);

/* ---- one parsed file -------------------------------------------------------- */

typedef struct ex_ini_sec {
    char *name; /* lowercase */
    int line;   /* first header line */
} ex_ini_sec;

typedef struct ex_ini_key {
    const char *section; /* points at the owning ex_ini_sec name */
    char *key;           /* lowercase */
    char *value;         /* taken from iniparser */
    int line;
} ex_ini_key;

typedef struct ex_ini_doc {
    ex_ini_sec *secs; /* order of first appearance, unique */
    int n_secs, cap_secs;
    ex_ini_key *keys; /* file order, unique per (section, key) */
    int n_keys, cap_keys;
    char *include; /* value of `include = ...`, or NULL */
    int include_line;
} ex_ini_doc;

/* Scan `len` bytes of INI text (NUL bytes included, which are an error), then
 * parse the sanitised text with iniparser and take the values from it. `name`
 * prefixes every message. EX_E_FORMAT for anything malformed. */
ex_status ex__ini_parse(const char *text, size_t len, const char *name, ex_ini_doc *doc, ex_err *err);
void ex__ini_doc_free(ex_ini_doc *doc);

/* Name rules shared by files and --set: sections are [A-Za-z0-9_.-]+ without an
 * empty dot-separated part; keys are [A-Za-z0-9_-]+. */
int ex__ini_valid_section(const char *s, size_t n);
int ex__ini_valid_key(const char *s, size_t n);
/* Copy n bytes, lowercasing ASCII, into a new string (NULL when out of memory). */
char *ex__ini_lowdup(const char *s, size_t n);

/* ---- message building -------------------------------------------------------- */

/* A bounded text buffer for error messages; overflowing text is cut. */
typedef struct ex_sb {
    char buf[EX_ERR_MSG_MAX];
    size_t len;
} ex_sb;

void ex__sb_init(ex_sb *sb);
void ex__sb_add(ex_sb *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append user text for a message: at most `max` bytes, control bytes but tab as \xNN,
 * "..." when cut. */
void ex__sb_excerpt(ex_sb *sb, const char *s, size_t n, size_t max);

/* Levenshtein distance of two short strings (capped at 255; longer inputs give 255). */
int ex__edit_distance(const char *a, const char *b);

#endif /* EXPLORA_CONFIG_INTERNAL_H */
