/*
 * explora/weights.h — a checkpoint file of either format behind one interface:
 * safetensors, or a PyTorch .pth (torch.save zip), chosen by the file's first
 * bytes (a .pth is a ZIP: "PK\3\4"). Loaders (ex_params_load) and format
 * detection work on this, so every backbone reads both.
 */
#ifndef EXPLORA_WEIGHTS_H
#define EXPLORA_WEIGHTS_H

#include "explora/export.h"
#include "explora/pth.h"
#include "explora/safetensors.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ex_weights {
    ex_st_file *st;   /* exactly one of st, pth is set */
    ex_pth_file *pth;
} ex_weights;

EX_API ex_status ex_weights_open(ex_weights *w, const char *path, ex_err *err);
EX_API void ex_weights_close(ex_weights *w);
EX_API int ex_weights_count(const ex_weights *w);
EX_API const ex_st_entry *ex_weights_at(const ex_weights *w, int i);
EX_API const char *ex_weights_path(const ex_weights *w);
EX_API ex_status ex_weights_read_f32(const ex_weights *w, const ex_st_entry *e, float *dst, int64_t n, ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_WEIGHTS_H */
