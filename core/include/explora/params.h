/*
 * explora/params.h — the named parameters of a model and what trains.
 *
 * A backbone (and later heads, decoders and adapters) registers every tensor
 * it owns here, by name, with a pointer to the slot in its layer structs that
 * must receive the device pointer (e.g. &blk->qkv.w) and, for gradients, the
 * slot for the gradient (e.g. &blk->qkv.dw). The life of a model:
 *
 *   1. register (shapes only, nothing allocated)        ex_params_add
 *   2. decide what trains (PEFT strategies, configs)    ex_params_set_trainable
 *   3. plan memory: values in the frozen or trainable   ex_params_plan
 *      arena, gradients (and later optimiser state)
 *      only for trainable tensors
 *   4. allocate (ex_memory_plan_commit) and bind:       ex_params_bind
 *      value slots get device pointers, gradient slots
 *      get a pointer for trainable tensors and NULL for
 *      frozen ones — which is what makes the layers skip
 *      their weight-gradient work
 *   5. load weights                                     ex_params_load_safetensors
 *
 * A second copy of a model whose frozen tensors never change (DINOv2's EMA
 * teacher under a PEFT policy) can share those tensors with the first:
 * ex_params_share_frozen before step 3 makes them aliases, which are not
 * planned and are bound to the first copy's memory.
 *
 * Groups ("norm", "bias", "token", "lora", ...) are free-form labels used to
 * report trainable counts and to choose weight-decay and lr rules.
 */
#ifndef EXPLORA_PARAMS_H
#define EXPLORA_PARAMS_H

#include <stdint.h>
#include <stdio.h>

#include "explora/backend.h"
#include "explora/export.h"
#include "explora/safetensors.h"
#include "explora/status.h"
#include "explora/tensor.h"
#include "explora/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ex_param {
    ex_tensor value;    /* name, dtype, shape; data after bind */
    ex_tensor grad;     /* same shape, planned only when trainable */
    int trainable;
    char group[32];
    float **value_slot; /* where the owner wants the value pointer, or NULL */
    float **grad_slot;  /* where the owner wants the gradient pointer (NULL when frozen), or NULL */
    int64_t loaded_rows; /* rows of dim 0 filled by the loaders (a 0-dim tensor counts as 1 row) */
    int optional;        /* a checkpoint may lack it: it keeps its initial value (e.g. zeros) */
    const struct ex_param *alias; /* non-NULL: frozen, not planned; bound to alias->value.data (shared memory) */
    int gemm_operand;    /* only ever read as a GEMM operand: may be stored in bf16 while frozen */
    ex_dtype *dtype_slot; /* where the owner wants the storage dtype (gemm operands), or NULL */
} ex_param;

typedef struct ex_params {
    ex_param **items;   /* stable pointers */
    int count, cap;
} ex_params;

EX_API void ex_params_init(ex_params *ps);
EX_API void ex_params_free(ex_params *ps);

/* Register a fp32 tensor. Duplicate names are EX_E_INVALID. Frozen by default. */
EX_API ex_status ex_params_add(ex_params *ps, const char *name, int ndim, const int64_t *shape, const char *group,
                               float **value_slot, float **grad_slot, ex_param **out, ex_err *err);
EX_API ex_param *ex_params_find(const ex_params *ps, const char *name);

/* Mark every parameter whose name matches `pattern` trainable (1) or frozen (0).
 * Patterns are fnmatch(3) globs, e.g. "blocks.11.*", "*norm*.weight", "cls_token".
 * Returns the number of parameters matched in *matched (may be NULL). */
EX_API ex_status ex_params_set_trainable(ex_params *ps, const char *pattern, int trainable, int *matched,
                                         ex_err *err);

/* Element counts: all parameters, or trainable only. */
EX_API int64_t ex_params_numel(const ex_params *ps, int trainable_only);
/* A table of trainable counts by group, then totals, as printed at the start of a run. */
EX_API void ex_params_print_summary(const ex_params *ps, FILE *out);

/* Declare `p` a GEMM operand (a linear layer's weight): nothing but the GEMM reads it on the device,
 * so it may be stored in a narrower dtype while frozen. *dtype_slot receives its storage dtype at bind. */
EX_API void ex_params_mark_gemm_operand(ex_param *p, ex_dtype *dtype_slot);

/* Mixed precision for frozen weights: store every frozen GEMM operand of `ps` (not trainable, not an
 * alias) as `dtype` (EX_F32 or EX_BF16), halving their memory in bf16; trainable tensors, gradients
 * and optimiser state stay fp32. The backend must take such GEMM inputs (supports_op), else
 * EX_E_UNSUPPORTED naming it. Call after the trainable flags are final and before ex_params_plan.
 * *count and *bytes_saved (each may be NULL) receive how many tensors changed and the bytes saved. */
EX_API ex_status ex_params_set_frozen_dtype(ex_params *ps, ex_backend *be, ex_dtype dtype, int *count,
                                            size_t *bytes_saved, ex_err *err);

/* fp32 host values into / out of a bound parameter, whatever its storage dtype (rounded to nearest
 * even on the way in), from element `offset` on. */
EX_API ex_status ex_params_upload(ex_backend *be, const ex_param *p, int64_t offset, const float *host, int64_t n,
                                  ex_err *err);
EX_API ex_status ex_params_download(ex_backend *be, const ex_param *p, int64_t offset, float *host, int64_t n,
                                    ex_err *err);

/* Make every frozen parameter of `ps` whose namesake in `from` is frozen too, with the same dtype
 * and element count, an alias of it: not planned, bound to its memory (which must be allocated
 * before `ps` is bound). A GEMM operand also takes its namesake's storage dtype (a bf16 frozen
 * weight is shared as bf16). Call before ex_params_plan; `from` must outlive `ps`. The caller
 * guarantees that neither side writes the shared tensors. *shared (may be NULL) receives the
 * number of aliases and *bytes (may be NULL) their size. */
EX_API ex_status ex_params_share_frozen(ex_params *ps, const ex_params *from, int *shared, size_t *bytes,
                                        ex_err *err);

/* Plan values (frozen or trainable arena) and gradients (grad arena, trainable only); aliases
 * are not planned. */
EX_API ex_status ex_params_plan(ex_params *ps, ex_memory_plan *plan, ex_err *err);
/* After commit: write value and gradient pointers into the owners' slots (an alias gets its
 * target's value pointer). */
EX_API void ex_params_bind(ex_params *ps);

/* How checkpoint names map to ours. Return 1 and write the internal name into
 * `out` to take a tensor, 0 to ignore it silently (e.g. a teacher copy or a
 * head the backbone does not use), -1 to report it as unexpected. A checkpoint
 * tensor may fill a slice of rows of ours (Hugging Face stores q, k and v
 * apart; we keep one fused qkv): set *row_offset to its first row along dim 0
 * (it is 0 on entry). Shapes must match after dropping leading 1-dims
 * (e.g. [1, 1, D] and [D]), or, for a slice, in every dim but the first. */
typedef int (*ex_name_map_fn)(void *user, const char *ckpt_name, char *out, size_t cap, int64_t *row_offset);

/* Load every mapped tensor of a checkpoint (safetensors or .pth) into the bound
 * parameters (converted from F16/BF16/F64 as needed, uploaded to the backend).
 * Errors list every unexpected, mis-shaped and (when require_all) missing
 * tensor by name, with both shapes, in one message. */
EX_API ex_status ex_params_load(ex_params *ps, ex_backend *be, const ex_weights *w, ex_name_map_fn map, void *user,
                                int require_all, ex_err *err);
/* The same for an open safetensors file. */
EX_API ex_status ex_params_load_safetensors(ex_params *ps, ex_backend *be, const ex_st_file *f, ex_name_map_fn map,
                                            void *user, int require_all, ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_PARAMS_H */
