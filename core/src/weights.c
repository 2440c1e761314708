/*
 * core/src/weights.c — safetensors or .pth behind one interface (see explora/weights.h).
 */
#include "explora/weights.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

ex_status ex_weights_open(ex_weights *w, const char *path, ex_err *err) {
    memset(w, 0, sizeof *w);
    FILE *f = fopen(path, "rb");
    EX_ENSURE(f, err, EX_E_IO, "cannot open checkpoint '%s': %s.", path, strerror(errno));
    unsigned char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4)
        return ex_pth_open(&w->pth, path, err);
    return ex_st_open(&w->st, path, err);
}

void ex_weights_close(ex_weights *w) {
    if (w->st) ex_st_close(w->st);
    if (w->pth) ex_pth_close(w->pth);
    memset(w, 0, sizeof *w);
}

int ex_weights_count(const ex_weights *w) { return w->st ? ex_st_count(w->st) : ex_pth_count(w->pth); }

const ex_st_entry *ex_weights_at(const ex_weights *w, int i) { return w->st ? ex_st_at(w->st, i) : ex_pth_at(w->pth, i); }

const char *ex_weights_path(const ex_weights *w) { return w->st ? ex_st_path(w->st) : ex_pth_path(w->pth); }

ex_status ex_weights_read_f32(const ex_weights *w, const ex_st_entry *e, float *dst, int64_t n, ex_err *err) {
    return w->st ? ex_st_read_f32(w->st, e, dst, n, err) : ex_pth_read_f32(w->pth, e, dst, n, err);
}
