/*
 * explora/tensor.h — dtypes, tensor descriptors and memory arenas.
 *
 * A tensor is a descriptor (name, dtype, shape, element strides) plus a
 * pointer into device memory owned by an arena. Arenas group memory by what
 * it is for, so that gradients and optimiser state exist only for what trains:
 *
 *   frozen      base weights that never change (may be bf16 on GPU)
 *   trainable   parameters the optimiser updates (fp32 master copies)
 *   grad        one gradient per trainable tensor
 *   optim       optimiser moments (AdamW m and v) per trainable tensor
 *   activation  forward caches and backward scratch, sized once from B and T
 *   scratch     anything else a run needs
 *
 * Use: plan every tensor with ex_arena_add (offsets are assigned, nothing is
 * allocated), then ex_arena_commit allocates one zeroed buffer per arena on
 * the backend and binds every planned tensor to it. Printing the plan before
 * committing is how a run reports its memory before it allocates it.
 */
#ifndef EXPLORA_TENSOR_H
#define EXPLORA_TENSOR_H

#include <stdint.h>
#include <stdio.h>

#include "explora/export.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ex_dtype {
    EX_F32 = 0,
    EX_F16 = 1,
    EX_BF16 = 2,
    EX_F64 = 3,
    EX_I64 = 4,
    EX_I32 = 5,
    EX_I16 = 6,
    EX_I8 = 7,
    EX_U8 = 8,
    EX_U16 = 9,
    EX_U32 = 10,
    EX_U64 = 11,
    EX_BOOL = 12,
    EX_DTYPE_COUNT
} ex_dtype;

/* Bytes per element. */
EX_API size_t ex_dtype_size(ex_dtype dt);
/* safetensors spelling: "F32", "BF16", "I64", "BOOL" ... */
EX_API const char *ex_dtype_name(ex_dtype dt);
/* Parse a safetensors dtype name; EX_E_FORMAT if unknown. */
EX_API ex_status ex_dtype_from_name(const char *name, ex_dtype *out);

/* Scalar conversions, round-to-nearest-even, NaN and Inf preserved. */
EX_API float ex_f16_to_f32(uint16_t h);
EX_API uint16_t ex_f32_to_f16(float f);
EX_API float ex_bf16_to_f32(uint16_t b);
EX_API uint16_t ex_f32_to_bf16(float f);

#define EX_MAX_DIMS 8
#define EX_NAME_MAX 160

typedef enum ex_mem_category {
    EX_MEM_FROZEN = 0,
    EX_MEM_TRAINABLE = 1,
    EX_MEM_GRAD = 2,
    EX_MEM_OPTIM = 3,
    EX_MEM_ACTIVATION = 4,
    EX_MEM_SCRATCH = 5,
    EX_MEM_COUNT
} ex_mem_category;

EX_API const char *ex_mem_category_name(ex_mem_category c);

typedef struct ex_tensor {
    char name[EX_NAME_MAX];       /* e.g. "blocks.3.attn.qkv.weight" */
    ex_dtype dtype;
    int ndim;
    int64_t shape[EX_MAX_DIMS];
    int64_t strides[EX_MAX_DIMS]; /* in elements, row-major when contiguous */
    void *data;                   /* device pointer, NULL until its arena is committed */
    size_t offset;                /* byte offset inside its arena */
    ex_mem_category category;
} ex_tensor;

/* Fill a contiguous descriptor. EX_E_SHAPE for ndim outside [0, EX_MAX_DIMS] or a negative dim. */
EX_API ex_status ex_tensor_init(ex_tensor *t, const char *name, ex_dtype dtype, int ndim,
                                const int64_t *shape, ex_err *err);
EX_API int64_t ex_tensor_numel(const ex_tensor *t);
EX_API size_t ex_tensor_nbytes(const ex_tensor *t);
/* "[3, 224, 224]" into buf; returns buf. */
EX_API const char *ex_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap);

struct ex_backend;

#define EX_ARENA_ALIGN 256

typedef struct ex_arena {
    ex_mem_category category;
    struct ex_backend *backend;   /* where the memory lives */
    void *base;                   /* device pointer after commit */
    size_t planned;               /* bytes planned so far (aligned) */
    int committed;
    ex_tensor **tensors;          /* planned tensors (not owned) */
    int count, cap;
} ex_arena;

EX_API void ex_arena_init(ex_arena *a, struct ex_backend *be, ex_mem_category category);
/* Plan a tensor: assigns t->offset and t->category. Fails after commit. */
EX_API ex_status ex_arena_add(ex_arena *a, ex_tensor *t, ex_err *err);
/* Allocate and zero one buffer for everything planned, then bind t->data. */
EX_API ex_status ex_arena_commit(ex_arena *a, ex_err *err);
/* Free the device buffer and the plan; tensors keep their descriptors, data becomes NULL. */
EX_API void ex_arena_release(ex_arena *a);

/* One arena per category, printed together at the start of a run. */
typedef struct ex_memory_plan {
    ex_arena arenas[EX_MEM_COUNT];
} ex_memory_plan;

EX_API void ex_memory_plan_init(ex_memory_plan *p, struct ex_backend *be);
EX_API ex_status ex_memory_plan_commit(ex_memory_plan *p, ex_err *err);
EX_API void ex_memory_plan_release(ex_memory_plan *p);
EX_API size_t ex_memory_plan_total(const ex_memory_plan *p);
/* A table: category, tensors, MiB; then the total. */
EX_API void ex_memory_plan_print(const ex_memory_plan *p, FILE *out);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_TENSOR_H */
