/*
 * datasets/idx/idx_format.c — the IDX reader (see idx_format.h).
 */
#include "idx_format.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const char *type_name(int t) {
    switch (t) {
    case 0x08: return "u8";
    case 0x09: return "i8";
    case 0x0B: return "i16";
    case 0x0C: return "i32";
    case 0x0D: return "f32";
    case 0x0E: return "f64";
    default: return NULL;
    }
}

/* Read exactly n bytes; returns the number read (< n at end of data) or -1 on a zlib error. */
static int64_t read_full(gzFile f, void *buf, int64_t n) {
    int64_t done = 0;
    while (done < n) {
        int64_t want = n - done > (1 << 30) ? (1 << 30) : n - done;
        int got = gzread(f, (char *)buf + done, (unsigned)want);
        if (got < 0) return -1;
        if (got == 0) break;
        done += got;
    }
    return done;
}

ex_status idx_read_u8(const char *path, int expect_ndim, int64_t max_bytes, idx_array *out, ex_err *err) {
    memset(out, 0, sizeof *out);
    gzFile f = gzopen(path, "rb");
    EX_ENSURE(f, err, EX_E_IO, "cannot open IDX file '%s': %s.", path, errno ? strerror(errno) : "zlib error");
    ex_status st = EX_OK;
    unsigned char head[4];
    int64_t got = read_full(f, head, 4);
    if (got != 4) EX_FAIL_GOTO(err, st, done, EX_E_FORMAT, "%s: %s before the 4-byte IDX magic.", path, got < 0 ? "read error" : "file ends");
    if (head[0] != 0 || head[1] != 0)
        EX_FAIL_GOTO(err, st, done, EX_E_FORMAT,
                     "%s: not an IDX file (magic bytes %02x %02x %02x %02x; expected 00 00 <type> <ndim>).", path,
                     head[0], head[1], head[2], head[3]);
    if (head[2] != 0x08)
        EX_FAIL_GOTO(err, st, done, EX_E_FORMAT, "%s: IDX element type 0x%02x (%s); only u8 (0x08) is supported.", path,
                     head[2], type_name(head[2]) ? type_name(head[2]) : "unknown");
    out->ndim = head[3];
    if (out->ndim < 1 || out->ndim > IDX_MAX_DIMS || (expect_ndim > 0 && out->ndim != expect_ndim))
        EX_FAIL_GOTO(err, st, done, EX_E_FORMAT, "%s: IDX file has %d dimensions; expected %d.", path, out->ndim,
                     expect_ndim > 0 ? expect_ndim : IDX_MAX_DIMS);
    out->count = 1;
    for (int i = 0; i < out->ndim; i++) {
        unsigned char d[4];
        if (read_full(f, d, 4) != 4)
            EX_FAIL_GOTO(err, st, done, EX_E_FORMAT, "%s: file ends inside the dimension list.", path);
        out->dims[i] = ((int64_t)d[0] << 24) | ((int64_t)d[1] << 16) | ((int64_t)d[2] << 8) | d[3];
        if (out->dims[i] == 0) EX_FAIL_GOTO(err, st, done, EX_E_FORMAT, "%s: dimension %d is 0.", path, i);
        if (out->count > max_bytes / out->dims[i])
            EX_FAIL_GOTO(err, st, done, EX_E_FORMAT, "%s: dimensions describe more than %lld bytes; refusing.", path,
                         (long long)max_bytes);
        out->count *= out->dims[i];
    }
    out->data = malloc((size_t)out->count);
    if (!out->data) EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "%s: out of memory for %lld bytes.", path, (long long)out->count);
    got = read_full(f, out->data, out->count);
    if (got != out->count)
        EX_FAIL_GOTO(err, st, done, EX_E_FORMAT, "%s: truncated: %lld of %lld data bytes present.", path,
                     (long long)(got < 0 ? 0 : got), (long long)out->count);
    unsigned char extra;
    if (read_full(f, &extra, 1) != 0)
        EX_FAIL_GOTO(err, st, done, EX_E_FORMAT, "%s: trailing bytes after the %lld data bytes the header describes.",
                     path, (long long)out->count);
done:
    gzclose(f);
    if (st != EX_OK) idx_free(out);
    return st;
}

void idx_free(idx_array *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}
