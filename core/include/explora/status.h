/*
 * explora/status.h — status codes, error records and the one checking-macro family.
 *
 * Core functions never exit: they return an ex_status and, when the caller
 * passes an ex_err, fill it with a message that says what failed, where (file,
 * line, section, key, tensor ...) and, when there is one, what to do about it.
 * Only the CLI turns an error into an exit code.
 *
 *   ex_status load_thing(const char *path, ex_err *err) {
 *       FILE *f = fopen(path, "rb");
 *       EX_ENSURE(f, err, EX_E_IO, "cannot open '%s': %s", path, strerror(errno));
 *       EX_CHECK(parse(f, err));                 // propagate, message already set
 *       ...
 *   }
 *
 * `err` may be NULL everywhere: the code is still returned, the text is dropped.
 */
#ifndef EXPLORA_STATUS_H
#define EXPLORA_STATUS_H

#include <stddef.h>

#include "explora/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ex_status {
    EX_OK = 0,
    EX_E_INVALID = 1,      /* bad argument from the caller (a programming error or bad user input) */
    EX_E_IO = 2,           /* file system: open, read, write, rename, mmap */
    EX_E_FORMAT = 3,       /* malformed outside data: INI, JSON, safetensors, images ... */
    EX_E_CONFIG = 4,       /* a config value is missing, unknown, of the wrong type or out of range */
    EX_E_PLUGIN = 5,       /* a plugin could not be found, opened or accepted */
    EX_E_NOMEM = 6,        /* an allocation failed (host or device) */
    EX_E_UNSUPPORTED = 7,  /* the request is valid but this backend/plugin does not implement it */
    EX_E_SHAPE = 8,        /* tensor shapes or dtypes do not agree */
    EX_E_RANGE = 9,        /* an index or offset is outside its valid range */
    EX_E_DEVICE = 10,      /* the compute device reported an error or is absent */
    EX_E_INTERNAL = 11     /* an invariant of explora itself was broken: please report it */
} ex_status;

#define EX_ERR_MSG_MAX 2048

/* An error record. `msg` reads as one or more sentences; `src_file`/`src_line`
 * point at the explora source line that raised it (for bug reports). */
typedef struct ex_err {
    ex_status code;
    char msg[EX_ERR_MSG_MAX];
    const char *src_file;
    int src_line;
} ex_err;

/* Reset an error record to EX_OK with an empty message. */
EX_API void ex_err_clear(ex_err *err);

/* Record an error and return `code`. printf-style message. `err` may be NULL. */
EX_API ex_status ex_err_set(ex_err *err, ex_status code, const char *src_file, int src_line,
                            const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Put context in front of an existing message ("while loading x.ini: ..."). */
EX_API void ex_err_prefix(ex_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append a hint sentence to an existing message (" Hint: ..."). */
EX_API void ex_err_hint(ex_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Short stable name of a status code, e.g. "config". */
EX_API const char *ex_status_name(ex_status code);

/* --- the checking-macro family ------------------------------------------------ */

/* Set the error and return its code from the current function. */
#define EX_FAIL(err, code, ...) return ex_err_set((err), (code), __FILE__, __LINE__, __VA_ARGS__)

/* Return early with an error unless `cond` holds. */
#define EX_ENSURE(cond, err, code, ...)                 \
    do {                                                \
        if (!(cond)) EX_FAIL((err), (code), __VA_ARGS__); \
    } while (0)

/* Propagate a non-OK status (the callee has already filled the message). */
#define EX_CHECK(expr)                       \
    do {                                     \
        ex_status ex__s = (expr);            \
        if (ex__s != EX_OK) return ex__s;    \
    } while (0)

/* Like EX_CHECK but store the status in `st` and jump to a cleanup label. */
#define EX_CHECK_GOTO(expr, st, label) \
    do {                               \
        (st) = (expr);                 \
        if ((st) != EX_OK) goto label; \
    } while (0)

/* Set an error, store its code in `st` and jump to a cleanup label. */
#define EX_FAIL_GOTO(err, st, label, code, ...)                           \
    do {                                                                   \
        (st) = ex_err_set((err), (code), __FILE__, __LINE__, __VA_ARGS__); \
        goto label;                                                        \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_STATUS_H */
