/*
 * tests/fuzz/fuzz_safetensors.c — fuzz the safetensors reader: the bytes go
 * to a memfd, ex_st_open parses the header, and every tensor of at most
 * FUZZ_MAX_READ elements is read back as float32.
 */
#include <stdlib.h>

#include "explora/safetensors.h"
#include "fuzz_common.h"

static int64_t numel(const ex_st_entry *e) {
    int64_t n = 1;
    for (int d = 0; d < e->ndim; d++) {
        if (e->shape[d] < 0 || (e->shape[d] > 0 && n > FUZZ_MAX_READ / e->shape[d])) return -1;
        n *= e->shape[d];
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    ex_st_file *f = NULL;
    ex_err err;
    if (ex_st_open(&f, path, &err) == EX_OK) {
        for (int i = 0; i < ex_st_count(f); i++) {
            const ex_st_entry *e = ex_st_at(f, i);
            int64_t n = numel(e);
            if (n < 0 || n > FUZZ_MAX_READ) continue;
            float *dst = malloc((size_t)(n ? n : 1) * sizeof(float));
            if (dst) ex_st_read_f32(f, e, dst, n, &err);
            free(dst);
        }
        ex_st_close(f);
    }
    close(fd);
    return 0;
}
