/*
 * datasets/idx/idx_format.h — reading one IDX file (the MNIST format):
 *
 *   bytes 0-1  zero
 *   byte  2    element type: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64
 *   byte  3    number of dimensions (1..4 accepted here)
 *   then one big-endian u32 per dimension, then the elements, big-endian, row-major.
 *
 * Files may be gzip-compressed (zlib reads plain files unchanged). Only u8
 * elements are supported, which is what image and label files use.
 */
#ifndef EXPLORA_IDX_FORMAT_H
#define EXPLORA_IDX_FORMAT_H

#include <stdint.h>

#include "explora/status.h"

#define IDX_MAX_DIMS 4

typedef struct idx_array {
    int ndim;
    int64_t dims[IDX_MAX_DIMS];
    int64_t count;  /* product of dims */
    uint8_t *data;  /* count bytes, malloc'ed */
} idx_array;

/* Read a whole u8 IDX file; `expect_ndim` (> 0) is checked. Truncated data,
 * trailing bytes, a bad magic, a non-u8 type, a zero or huge dimension: EX_E_FORMAT naming the file. */
ex_status idx_read_u8(const char *path, int expect_ndim, int64_t max_bytes, idx_array *out, ex_err *err);
void idx_free(idx_array *a);

#endif
