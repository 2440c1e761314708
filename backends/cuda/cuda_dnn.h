/*
 * backends/cuda/cuda_dnn.h — cuDNN's fused scaled-dot-product attention, loaded at run time
 * (cuda_dnn.c), for `[backend] attention = cudnn`.
 *
 * Host-only C with no dependency on the backend context, so a test can compile it in and check the
 * graphs it builds against the real library without a GPU (cuDNN validates and finalizes tensor,
 * operation and operation-graph descriptors on the host; only engine plans and execution need a
 * device). Functions return 0 on success, or -1 with a one-line reason in why.
 *
 * Attention here is the backend interface's (timm layout), in bf16 or fp16 storage:
 *   qkv   (b, t, 3, nh, hs)  q, k and v of each token side by side, one fused linear's output
 *   o     (b, t, nh, hs)     the heads' outputs, concatenated per token
 *   stats (b, nh, t) fp32    log-sum-exp of each row of scale * q k^T (natural log)
 *   do    (b, t, nh, hs)     the gradient at o;  dqkv (b, t, 3, nh, hs) the gradients at q, k, v
 * No mask, no dropout, no bias: a ViT's full attention.
 */
#ifndef EXPLORA_CUDA_DNN_H
#define EXPLORA_CUDA_DNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cu_dnn cu_dnn;

/* One attention problem. half: 0 bf16, 1 fp16 storage of qkv, o, do and dqkv. */
typedef struct cu_dnn_sdpa {
    int64_t b, t, nh, hs;
    float scale;
    int half;
} cu_dnn_sdpa;

/* Device pointers of one call (the ones a direction does not use are ignored). */
typedef struct cu_dnn_sdpa_io {
    const void *qkv;  /* (b, t, 3, nh, hs) bf16/fp16 */
    void *o;          /* (b, t, nh, hs): written by forward, read by backward */
    float *stats;     /* (b, nh, t) fp32: written by forward, read by backward */
    const void *dout; /* (b, t, nh, hs): backward */
    void *dqkv;       /* (b, t, 3, nh, hs): written (not accumulated) by backward */
    void *workspace;  /* cu_dnn_sdpa_plan's bytes */
} cu_dnn_sdpa_io;

/* Load cuDNN (path NULL: "libcudnn.so.9" through the loader's search path) and resolve the entry points.
 * Checks the library's version (9.0 or newer). Needs no GPU. */
int cu_dnn_open(cu_dnn **out, const char *path, char *why, size_t cap);
void cu_dnn_close(cu_dnn *d);
/* cudnnGetVersion() of the loaded library, e.g. 91900 for 9.19.0. */
size_t cu_dnn_version(const cu_dnn *d);
/* Create a cuDNN handle on the current CUDA device and bind it to `stream` (a cudaStream_t). */
int cu_dnn_bind(cu_dnn *d, void *stream, char *why, size_t cap);
/* deterministic != 0 (the default): engines cuDNN marks non-deterministic are never chosen. */
void cu_dnn_set_deterministic(cu_dnn *d, int deterministic);

/* The graphs (cuda_dnn.c describes each). */
enum cu_dnn_graph {
    CU_DNN_FWD_UNIFIED = 0,   /* forward: cuDNN's one SDPA_FWD operation (cuDNN 9.13.1 and newer) */
    CU_DNN_FWD_COMPOSITE = 1, /* forward: matmuls, pointwise ops and reductions */
    CU_DNN_BWD = 2,           /* backward, deterministic: dQ written by its matmul */
    CU_DNN_BWD_ACCUM = 3      /* backward with an fp32 dQ accumulator: admits non-deterministic engines */
};

/* Whether the fused engines can take the shape at all (head size a multiple of 8 up to 128 here, 16-byte
 * aligned rows); the caller runs its own kernel otherwise. */
int cu_dnn_sdpa_fits(const cu_dnn_sdpa *s);
/* Build the operation graph `kind` (enum cu_dnn_graph) of `s` and finalize it, without a handle: the check
 * the tests run on machines without a GPU. */
int cu_dnn_sdpa_graph_check(cu_dnn *d, const cu_dnn_sdpa *s, int kind, char *why, size_t cap);
/* A graph as built, for inspection: the tests evaluate it on the host to check its maths. */
#define CU_DNN_DESC_TENSORS 48
#define CU_DNN_DESC_OPS 24
typedef struct cu_dnn_tensor_desc {
    int64_t uid;                 /* non-virtual: the CU_DNN_UID_* below; virtual: 100 and up */
    int dtype;                   /* 0 fp32, 1 bf16, 2 fp16 */
    int is_virtual, by_value;
    int64_t dims[4], strides[4];
} cu_dnn_tensor_desc;
enum cu_dnn_op_type { CU_DNN_OP_MATMUL, CU_DNN_OP_POINTWISE, CU_DNN_OP_REDUCTION, CU_DNN_OP_RESHAPE, CU_DNN_OP_SDPA_FWD };
typedef struct cu_dnn_op_desc {
    int type;                    /* enum cu_dnn_op_type */
    int mode;                    /* pointwise: cudnnPointwiseMode_t; reduction: cudnnReduceTensorOp_t */
    int x, b, y;                 /* tensor indices (matmul: a, b, c); -1: none */
} cu_dnn_op_desc;
typedef struct cu_dnn_graph_desc {
    int ntensors, nops;
    cu_dnn_tensor_desc tensors[CU_DNN_DESC_TENSORS];
    cu_dnn_op_desc ops[CU_DNN_DESC_OPS];
} cu_dnn_graph_desc;
/* Unique ids of the graphs' non-virtual tensors (the data pointers of a run). */
enum cu_dnn_uid {
    CU_DNN_UID_Q = 1, CU_DNN_UID_K, CU_DNN_UID_V, CU_DNN_UID_O, CU_DNN_UID_STATS, CU_DNN_UID_SCALE, CU_DNN_UID_DO,
    CU_DNN_UID_DQ, CU_DNN_UID_DK, CU_DNN_UID_DV, CU_DNN_UID_ONE,
    CU_DNN_UID_DSUM,             /* rowsum(dO * O), fp32 (b, nh, t), in the workspace */
    CU_DNN_UID_DQACC             /* the dQ accumulator, fp32 (b, nh, t, hs), CU_DNN_BWD_ACCUM only */
};
/* Build graph `kind` of `s` like cu_dnn_sdpa_graph_check and describe its tensors and operations in order. */
int cu_dnn_sdpa_graph_describe(cu_dnn *d, const cu_dnn_sdpa *s, int kind, cu_dnn_graph_desc *out, char *why,
                               size_t cap);

/* The execution plan of `s` (built at the first call per shape and direction, then cached), and the
 * workspace bytes it needs (256-byte aligned). Needs cu_dnn_bind. The forward tries the unified graph, then
 * the composite one; the backward is CU_DNN_BWD when deterministic, else CU_DNN_BWD_ACCUM, then CU_DNN_BWD.
 * *kind (may be NULL) receives the graph that was planned. 0: planned (or cached); -1: not planned, why says
 * why; -2: a shape that failed before, refused at once (its first reason in why) until the determinism rule
 * changes. */
/* Where a CU_DNN_BWD_ACCUM plan keeps its fp32 dQ accumulator in the workspace. cuDNN before 9.6 adds into it
 * without clearing it first (cudnn-frontend clears it for those versions), so the caller zeroes it before
 * every backward run of such a plan. */
void cu_dnn_sdpa_accum_region(const cu_dnn_sdpa *s, size_t *offset, size_t *bytes);

int cu_dnn_sdpa_plan(cu_dnn *d, const cu_dnn_sdpa *s, int backward, size_t *workspace, int *kind, char *why,
                     size_t cap);
/* Run a planned forward or backward on the bound stream (asynchronous). */
int cu_dnn_sdpa_run(cu_dnn *d, const cu_dnn_sdpa *s, int backward, const cu_dnn_sdpa_io *io, char *why, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_CUDA_DNN_H */
