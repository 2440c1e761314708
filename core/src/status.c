/*
 * core/src/status.c — error records (see explora/status.h).
 */
#include "explora/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void ex_err_clear(ex_err *err) {
    if (!err) return;
    err->code = EX_OK;
    err->msg[0] = '\0';
    err->src_file = NULL;
    err->src_line = 0;
}

ex_status ex_err_set(ex_err *err, ex_status code, const char *src_file, int src_line, const char *fmt, ...) {
    if (!err) return code;
    err->code = code;
    err->src_file = src_file;
    err->src_line = src_line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

void ex_err_prefix(ex_err *err, const char *fmt, ...) {
    if (!err) return;
    char head[EX_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    size_t hl = strnlen(head, sizeof head - 1);
    size_t ml = strnlen(err->msg, sizeof err->msg - 1);
    if (hl + ml > sizeof err->msg - 1) ml = sizeof err->msg - 1 - hl; /* truncate the tail */
    memmove(err->msg + hl, err->msg, ml);
    memcpy(err->msg, head, hl);
    err->msg[hl + ml] = '\0';
}

void ex_err_hint(ex_err *err, const char *fmt, ...) {
    if (!err) return;
    size_t len = strlen(err->msg);
    if (len + 8 >= sizeof err->msg) return;
    len += (size_t)snprintf(err->msg + len, sizeof err->msg - len, " Hint: ");
    if (len >= sizeof err->msg) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg + len, sizeof err->msg - len, fmt, ap);
    va_end(ap);
}

const char *ex_status_name(ex_status code) {
    switch (code) {
    case EX_OK: return "ok";
    case EX_E_INVALID: return "invalid argument";
    case EX_E_IO: return "i/o";
    case EX_E_FORMAT: return "format";
    case EX_E_CONFIG: return "config";
    case EX_E_PLUGIN: return "plugin";
    case EX_E_NOMEM: return "out of memory";
    case EX_E_UNSUPPORTED: return "unsupported";
    case EX_E_SHAPE: return "shape";
    case EX_E_RANGE: return "range";
    case EX_E_DEVICE: return "device";
    case EX_E_INTERNAL: return "internal";
    }
    return "unknown";
}
