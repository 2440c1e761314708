/*
 * backends/cuda/cuda_dnn.c — scaled-dot-product attention through cuDNN 9's backend (graph) API,
 * for `[backend] attention = cudnn`. Loaded with dlopen, so the plugin loads, and every other
 * setting works, where cuDNN is not installed; only this setting then reports why it cannot run.
 *
 * Graphs (every tensor 4-D in [b, h, s, d] order; q, k, v and their gradients are strided views of
 * the interleaved (b, t, 3, nh, hs) buffer: strides [t 3C, hs, 3C, 1] with C = nh hs, pointers
 * offset by 0, C and 2C elements; o and do are (b, t, nh, hs): strides [t C, hs, C, 1]):
 *
 * Forward, "unified" (cuDNN >= 9.13.1): one SDPA_FWD operation, Q K V -> O and Stats, with the
 *   scale a by-value fp32 scalar. Where the engines refuse it (heuristics find nothing that builds),
 *   the "composite" graph of the same maths:
 *     S = Q K^T (K^T: K's last two dims and strides swapped)    S1 = scale S
 *     M = rowmax S1    E = exp(S1 - M)    Z = rowsum E    Stats = M + log Z
 *     P = E / Z (stored in the i/o type: the second matmul takes bf16/fp16)    O = P V
 * Backward, always composite (the SDPA_BWD operation has no engines in the releases checked):
 *     D = rowsum(dO * O) (non-virtual fp32, "softmax_sum", in our workspace)
 *     P = exp(scale Q K^T - Stats)    dV = P^T dO    dP = dO V^T
 *     dS = scale P (dP - D)           dK = dS^T Q    dQ = dS K
 *   The transposes of P and dS are RESHAPE views (they also round to the i/o type for the matmul);
 *   K for dQ is a RESHAPE back from K^T. Deterministic (the default): dQ is written by its matmul.
 *   Otherwise dQ is accumulated in an fp32 buffer (in our workspace) and copied out, which lets
 *   cuDNN pick its faster engines that add partial products with atomics.
 * Intermediates are virtual fp32; matmul and pointwise arithmetic is fp32. Stats is the natural-log
 * LSE of the scaled scores, so it is exactly the backend interface's lse (b, nh, t).
 *
 * Plans: heuristics (mode A, then the fallback list) rank engine configurations; the first whose
 * execution plan finalizes is kept, skipping those cuDNN marks non-deterministic unless the
 * deterministic setting is off. Plans are cached per (shape, direction, dtype): building one can
 * take from milliseconds to seconds (runtime-compiled kernels), and a ViT run has a handful of
 * shapes (global and local crops, teacher chunks).
 *
 * Nothing here has run on a GPU yet. On the host the tests build every graph and finalize it against
 * the installed library, which validates the shapes, strides, types and the wiring of the ops; engine
 * choice, plan building and execution need a device (scripts/gpu_check.sh).
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cudnn_graph.h>

#include "cuda_dnn.h"

#define DN_PLANS 16        /* cached execution plans */
#define DN_MAX_OPS CU_DNN_DESC_OPS         /* operations in one graph (the backward has 18) */
#define DN_MAX_TENSORS CU_DNN_DESC_TENSORS /* tensor descriptors in one graph */
#define DN_MAX_CFGS 64     /* engine configurations tried per heuristic mode */
#define DN_ALIGN ((size_t)256)

/* Unique ids: the non-virtual tensors' are cuda_dnn.h's CU_DNN_UID_*; virtual ones count up from here. */
#define DN_UID_VIRTUAL 100

/* The graph kinds (also the plan cache's direction). */

struct dn_graph;

/* A cached plan; it keeps the graph, the heuristics' answers and the chosen configuration alive with it. */
typedef struct dn_plan {
    int used;
    int64_t b, t, nh, hs;
    int half, backward;
    int kind;               /* enum cu_dnn_graph */
    struct dn_graph *graph;
    cudnnBackendDescriptor_t heur, cfgs[DN_MAX_CFGS], plan;
    int ncfgs;
    size_t ws_ours;         /* our buffers in front of cuDNN's workspace (rowsum(dO O), dQ accumulator) */
    size_t ws_total;        /* ws_ours + cuDNN's */
} dn_plan;

struct cu_dnn {
    void *lib;
    size_t version;
    cudnnHandle_t handle;
    int deterministic;
    dn_plan plans[DN_PLANS];
    int next_slot;       /* round-robin replacement when the cache is full */
    /* shapes no engine would plan (under the current determinism rule): refused at once after the first
     * attempt, whose reason is kept, instead of rebuilding graphs and heuristics on every call */
    struct {
        int64_t b, t, nh, hs;
        int half, backward;
        char why[320];
    } failed[DN_PLANS];
    int nfailed, next_failed;
    /* entry points */
    size_t (*get_version)(void);
    const char *(*get_error_string)(cudnnStatus_t);
    void (*get_last_error_string)(char *, size_t);
    cudnnStatus_t (*create)(cudnnHandle_t *);
    cudnnStatus_t (*destroy)(cudnnHandle_t);
    cudnnStatus_t (*set_stream)(cudnnHandle_t, cudaStream_t);
    cudnnStatus_t (*create_desc)(cudnnBackendDescriptorType_t, cudnnBackendDescriptor_t *);
    cudnnStatus_t (*destroy_desc)(cudnnBackendDescriptor_t);
    cudnnStatus_t (*finalize)(cudnnBackendDescriptor_t);
    cudnnStatus_t (*set_attr)(cudnnBackendDescriptor_t, cudnnBackendAttributeName_t, cudnnBackendAttributeType_t,
                              int64_t, const void *);
    cudnnStatus_t (*get_attr)(cudnnBackendDescriptor_t const, cudnnBackendAttributeName_t,
                              cudnnBackendAttributeType_t, int64_t, int64_t *, void *);
    cudnnStatus_t (*execute)(cudnnHandle_t, cudnnBackendDescriptor_t, cudnnBackendDescriptor_t);
};

/* ------------------------------------------------------------------------------
 * Loading
 * ------------------------------------------------------------------------------ */

static const char *const dn_names[] = {
    "cudnnGetVersion",         "cudnnGetErrorString",          "cudnnGetLastErrorString",
    "cudnnCreate",             "cudnnDestroy",                 "cudnnSetStream",
    "cudnnBackendCreateDescriptor", "cudnnBackendDestroyDescriptor", "cudnnBackendFinalize",
    "cudnnBackendSetAttribute", "cudnnBackendGetAttribute",     "cudnnBackendExecute"};

int cu_dnn_open(cu_dnn **out, const char *path, char *why, size_t cap) {
    *out = NULL;
    if (!path) path = "libcudnn.so.9";
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(why, cap, "cannot load %s: %s", path, dlerror());
        return -1;
    }
    cu_dnn *d = calloc(1, sizeof *d);
    if (!d) {
        dlclose(lib);
        snprintf(why, cap, "out of memory");
        return -1;
    }
    d->lib = lib;
    d->deterministic = 1;
    void *sym[sizeof dn_names / sizeof dn_names[0]];
    for (size_t i = 0; i < sizeof dn_names / sizeof dn_names[0]; i++)
        if (!(sym[i] = dlsym(lib, dn_names[i]))) {
            snprintf(why, cap, "%s lacks %s (not cuDNN 9?)", path, dn_names[i]);
            cu_dnn_close(d);
            return -1;
        }
    /* dlsym returns void *, and ISO C has no cast from it to a function pointer: copy the bits */
    memcpy(&d->get_version, &sym[0], sizeof(void *));
    memcpy(&d->get_error_string, &sym[1], sizeof(void *));
    memcpy(&d->get_last_error_string, &sym[2], sizeof(void *));
    memcpy(&d->create, &sym[3], sizeof(void *));
    memcpy(&d->destroy, &sym[4], sizeof(void *));
    memcpy(&d->set_stream, &sym[5], sizeof(void *));
    memcpy(&d->create_desc, &sym[6], sizeof(void *));
    memcpy(&d->destroy_desc, &sym[7], sizeof(void *));
    memcpy(&d->finalize, &sym[8], sizeof(void *));
    memcpy(&d->set_attr, &sym[9], sizeof(void *));
    memcpy(&d->get_attr, &sym[10], sizeof(void *));
    memcpy(&d->execute, &sym[11], sizeof(void *));
    d->version = d->get_version();
    if (d->version < 90000) {
        snprintf(why, cap, "%s is cuDNN %zu.%zu; the graph API used here needs cuDNN 9", path, d->version / 10000,
                 d->version / 100 % 100);
        cu_dnn_close(d);
        return -1;
    }
    if (d->version >= 91000 && d->version < 91100) { /* SDPA has known bugs there (NVIDIA's frontend refuses it) */
        snprintf(why, cap, "cuDNN 9.10 has known SDPA bugs; install 9.11 or newer");
        cu_dnn_close(d);
        return -1;
    }
    *out = d;
    return 0;
}

static void dn_plan_release(cu_dnn *d, dn_plan *p);

void cu_dnn_close(cu_dnn *d) {
    if (!d) return;
    for (int i = 0; i < DN_PLANS; i++) dn_plan_release(d, &d->plans[i]);
    if (d->handle) d->destroy(d->handle);
    if (d->lib) dlclose(d->lib);
    free(d);
}

size_t cu_dnn_version(const cu_dnn *d) { return d ? d->version : 0; }

void cu_dnn_set_deterministic(cu_dnn *d, int deterministic) {
    if (d->deterministic == !!deterministic) return;
    d->deterministic = !!deterministic;
    for (int i = 0; i < DN_PLANS; i++) dn_plan_release(d, &d->plans[i]); /* chosen under the other rule */
    d->nfailed = d->next_failed = 0;
}

/* why = "<what>: <status name> (<cuDNN's last message>)" */
static int dn_fail(cu_dnn *d, cudnnStatus_t s, const char *what, char *why, size_t cap) {
    char last[256] = "";
    d->get_last_error_string(last, sizeof last);
    snprintf(why, cap, "cuDNN: %s: %s%s%.200s%s", what, d->get_error_string(s), last[0] ? " (" : "", last,
             last[0] ? ")" : "");
    return -1;
}

int cu_dnn_bind(cu_dnn *d, void *stream, char *why, size_t cap) {
    cudnnStatus_t s;
    if (!d->handle && (s = d->create(&d->handle)) != CUDNN_STATUS_SUCCESS) {
        d->handle = NULL;
        return dn_fail(d, s, "cudnnCreate", why, cap);
    }
    if ((s = d->set_stream(d->handle, (cudaStream_t)stream)) != CUDNN_STATUS_SUCCESS)
        return dn_fail(d, s, "cudnnSetStream", why, cap);
    return 0;
}

int cu_dnn_sdpa_fits(const cu_dnn_sdpa *s) {
    /* head sizes: multiples of 8 (16-byte rows) up to 128, which every sm_80+ backward engine takes;
     * C = nh hs a multiple of 8 keeps the k and v views 16-byte aligned; t = 1 is refused by cuDNN */
    return s->hs >= 8 && s->hs <= 128 && s->hs % 8 == 0 && (s->nh * s->hs) % 8 == 0 && s->t >= 2 && s->b >= 1 &&
           s->nh >= 1;
}

/* ------------------------------------------------------------------------------
 * Graph building: every call is a no-op after the first failure, which the graph keeps.
 * ------------------------------------------------------------------------------ */

typedef struct dn_graph {
    cu_dnn *d;
    cudnnBackendDescriptor_t tensors[DN_MAX_TENSORS], ops[DN_MAX_OPS], other[2 * DN_MAX_OPS];
    int ntensors, nops, nother;
    int64_t next_virtual;
    int failed;
    cu_dnn_graph_desc *desc; /* when describing: every tensor and operation as added */
    char *why;
    size_t cap;
} dn_graph;

static void dn_graph_free(dn_graph *g) {
    for (int i = 0; i < g->nops; i++) g->d->destroy_desc(g->ops[i]);
    for (int i = 0; i < g->nother; i++) g->d->destroy_desc(g->other[i]);
    for (int i = 0; i < g->ntensors; i++) g->d->destroy_desc(g->tensors[i]);
    g->nops = g->nother = g->ntensors = 0;
}

static void dn_check(dn_graph *g, cudnnStatus_t s, const char *what) {
    if (s != CUDNN_STATUS_SUCCESS && !g->failed) {
        g->failed = 1;
        dn_fail(g->d, s, what, g->why, g->cap);
    }
}

/* A new descriptor kept in `list` (freed with the graph); NULL after a failure. */
static cudnnBackendDescriptor_t dn_new(dn_graph *g, cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *list,
                                       int *count, int max, const char *what) {
    if (g->failed) return NULL;
    if (*count >= max) {
        g->failed = 1;
        snprintf(g->why, g->cap, "cuDNN graph: more than %d %s", max, what);
        return NULL;
    }
    cudnnBackendDescriptor_t desc = NULL;
    dn_check(g, g->d->create_desc(type, &desc), what);
    if (g->failed) return NULL;
    list[(*count)++] = desc;
    return desc;
}

static void dn_set(dn_graph *g, cudnnBackendDescriptor_t desc, cudnnBackendAttributeName_t name,
                   cudnnBackendAttributeType_t type, int64_t count, const void *value, const char *what) {
    if (g->failed) return;
    dn_check(g, g->d->set_attr(desc, name, type, count, value), what);
}

/* Attribute `name` of desc = the descriptor `to` (an operation's tensor or sub-descriptor). */
static void dn_link(dn_graph *g, cudnnBackendDescriptor_t desc, cudnnBackendAttributeName_t name,
                    cudnnBackendDescriptor_t to, const char *what) {
    dn_set(g, desc, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &to, what);
}

static void dn_done(dn_graph *g, cudnnBackendDescriptor_t desc, const char *what) {
    if (g->failed) return;
    dn_check(g, g->d->finalize(desc), what);
}

/* A finalized 4-D tensor (uid 0: the next virtual one). */
static cudnnBackendDescriptor_t dn_tensor(dn_graph *g, int64_t uid, cudnnDataType_t type, const int64_t dims[4],
                                          const int64_t strides[4], int by_value, const char *what) {
    cudnnBackendDescriptor_t t =
        dn_new(g, CUDNN_BACKEND_TENSOR_DESCRIPTOR, g->tensors, &g->ntensors, DN_MAX_TENSORS, "tensors");
    const int virt = uid == 0;
    if (virt) uid = g->next_virtual++;
    const int64_t align = 16;
    const bool is_virtual = virt, is_by_value = by_value;
    dn_set(g, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, what);
    dn_set(g, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims, what);
    dn_set(g, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides, what);
    dn_set(g, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, what);
    dn_set(g, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, what);
    if (is_virtual) dn_set(g, t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, what);
    if (is_by_value) dn_set(g, t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &is_by_value, what);
    dn_done(g, t, what);
    if (g->desc && !g->failed) {
        cu_dnn_tensor_desc *td = &g->desc->tensors[g->ntensors - 1];
        td->uid = uid, td->is_virtual = virt, td->by_value = by_value;
        td->dtype = type == CUDNN_DATA_BFLOAT16 ? 1 : type == CUDNN_DATA_HALF ? 2 : 0;
        memcpy(td->dims, dims, sizeof td->dims), memcpy(td->strides, strides, sizeof td->strides);
        g->desc->ntensors = g->ntensors;
    }
    return t;
}

/* When describing: the operation just added (the last of g->ops) with its tensors' indices. */
static void dn_record(dn_graph *g, int type, int mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                      cudnnBackendDescriptor_t y) {
    if (!g->desc || g->failed) return;
    cudnnBackendDescriptor_t io[3] = {x, b, y};
    int idx[3] = {-1, -1, -1};
    for (int k = 0; k < 3; k++)
        for (int i = 0; io[k] && i < g->ntensors; i++)
            if (g->tensors[i] == io[k]) idx[k] = i;
    cu_dnn_op_desc *od = &g->desc->ops[g->nops - 1];
    od->type = type, od->mode = mode, od->x = idx[0], od->b = idx[1], od->y = idx[2];
    g->desc->nops = g->nops;
}

static cudnnBackendDescriptor_t dn_op_new(dn_graph *g, cudnnBackendDescriptorType_t type) {
    return dn_new(g, type, g->ops, &g->nops, DN_MAX_OPS, "operations");
}

static cudnnBackendDescriptor_t dn_other_new(dn_graph *g, cudnnBackendDescriptorType_t type) {
    return dn_new(g, type, g->other, &g->nother, 2 * DN_MAX_OPS, "descriptors");
}

/* c = a b (batched over the first two dims), fp32 arithmetic. */
static void dn_matmul(dn_graph *g, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c,
                      const char *what) {
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t mm = dn_other_new(g, CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    dn_set(g, mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, what);
    dn_done(g, mm, what);
    cudnnBackendDescriptor_t op = dn_op_new(g, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    dn_link(g, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm, what);
    dn_done(g, op, what);
    dn_record(g, CU_DNN_OP_MATMUL, 0, a, b, c);
}

/* y = x op b (b NULL: a unary mode), broadcasting size-1 dims, fp32 arithmetic. */
static void dn_pointwise(dn_graph *g, cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x,
                         cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t y, const char *what) {
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    const float one = 1.0f;
    cudnnBackendDescriptor_t pw = dn_other_new(g, CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    dn_set(g, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, what);
    dn_set(g, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &f32, what);
    dn_done(g, pw, what);
    cudnnBackendDescriptor_t op = dn_op_new(g, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    dn_link(g, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x, what);
    if (b) dn_link(g, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y, what);
    dn_set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one, what);
    if (b) dn_set(g, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one, what);
    dn_done(g, op, what);
    dn_record(g, CU_DNN_OP_POINTWISE, (int)mode, x, b, y);
}

/* y = reduction of x over the dims where y has size 1, fp32. */
static void dn_reduce(dn_graph *g, cudnnReduceTensorOp_t red, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y,
                      const char *what) {
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t rd = dn_other_new(g, CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    dn_set(g, rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, what);
    dn_set(g, rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &red, what);
    dn_done(g, rd, what);
    cudnnBackendDescriptor_t op = dn_op_new(g, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    dn_link(g, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y, what);
    dn_done(g, op, what);
    dn_record(g, CU_DNN_OP_REDUCTION, (int)red, x, NULL, y);
}

/* y = x seen through y's dims and strides (a transpose view). */
static void dn_reshape(dn_graph *g, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y, const char *what) {
    cudnnBackendDescriptor_t op = dn_op_new(g, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    dn_link(g, op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y, what);
    dn_done(g, op, what);
    dn_record(g, CU_DNN_OP_RESHAPE, 0, x, NULL, y);
}

/* The operation graph of everything added so far (with the handle when bound). */
static cudnnBackendDescriptor_t dn_op_graph(dn_graph *g) {
    cudnnBackendDescriptor_t og = dn_other_new(g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    dn_set(g, og, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, g->nops, g->ops, "operation graph");
    if (g->d->handle) {
        /* deprecated in 9.x but still how the heuristics learn the device (NVIDIA's frontend sets it too) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        dn_set(g, og, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &g->d->handle, "operation graph");
#pragma GCC diagnostic pop
    }
    dn_done(g, og, "operation graph");
    return og;
}

/* The tensors both directions share. */
typedef struct dn_io_tensors {
    cudnnBackendDescriptor_t q, k, kt, v, vt, o, stats, scale;
} dn_io_tensors;

static void dn_shapes(const cu_dnn_sdpa *s, int64_t qkv_dims[4], int64_t qkv_strides[4], int64_t o_strides[4],
                      int64_t row_dims[4], int64_t row_strides[4]) {
    const int64_t C = s->nh * s->hs;
    const int64_t qd[4] = {s->b, s->nh, s->t, s->hs}, qs[4] = {s->t * 3 * C, s->hs, 3 * C, 1};
    const int64_t os[4] = {s->t * C, s->hs, C, 1};
    const int64_t rd[4] = {s->b, s->nh, s->t, 1}, rs[4] = {s->nh * s->t, s->t, 1, 1};
    memcpy(qkv_dims, qd, sizeof qd), memcpy(qkv_strides, qs, sizeof qs), memcpy(o_strides, os, sizeof os);
    memcpy(row_dims, rd, sizeof rd), memcpy(row_strides, rs, sizeof rs);
}

/* k_t, v_t: K, V as the transposed views (the composite graphs' matmuls take K^T and V^T). */
static void dn_io(dn_graph *g, const cu_dnn_sdpa *s, int k_t, int v_t, dn_io_tensors *io) {
    const cudnnDataType_t io_t = s->half ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
    int64_t qd[4], qs[4], os[4], rd[4], rs[4];
    dn_shapes(s, qd, qs, os, rd, rs);
    /* K^T and V^T: the last two dims and strides swapped, same memory */
    const int64_t td[4] = {qd[0], qd[1], qd[3], qd[2]}, ts[4] = {qs[0], qs[1], qs[3], qs[2]};
    const int64_t one[4] = {1, 1, 1, 1};
    memset(io, 0, sizeof *io);
    io->q = dn_tensor(g, CU_DNN_UID_Q, io_t, qd, qs, 0, "tensor Q");
    if (k_t)
        io->kt = dn_tensor(g, CU_DNN_UID_K, io_t, td, ts, 0, "tensor K^T");
    else
        io->k = dn_tensor(g, CU_DNN_UID_K, io_t, qd, qs, 0, "tensor K");
    if (v_t)
        io->vt = dn_tensor(g, CU_DNN_UID_V, io_t, td, ts, 0, "tensor V^T");
    else
        io->v = dn_tensor(g, CU_DNN_UID_V, io_t, qd, qs, 0, "tensor V");
    io->o = dn_tensor(g, CU_DNN_UID_O, io_t, qd, os, 0, "tensor O");
    io->stats = dn_tensor(g, CU_DNN_UID_STATS, f32, rd, rs, 0, "tensor Stats");
    io->scale = dn_tensor(g, CU_DNN_UID_SCALE, f32, one, one, 1, "tensor scale");
}

/* The single SDPA_FWD operation. */
static void dn_build_fwd_unified(dn_graph *g, const cu_dnn_sdpa *s) {
    dn_io_tensors t;
    dn_io(g, s, 0, 0, &t);
    const char *what = "SDPA forward operation";
    cudnnBackendDescriptor_t op = dn_op_new(g, CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
    dn_link(g, op, CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, t.q, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, t.k, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, t.v, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, t.o, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, t.stats, what);
    dn_link(g, op, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, t.scale, what);
    dn_done(g, op, what);
    dn_record(g, CU_DNN_OP_SDPA_FWD, 0, t.q, NULL, t.o);
}

/* The forward as matmuls, pointwise ops and reductions. */
static void dn_build_fwd_composite(dn_graph *g, const cu_dnn_sdpa *s) {
    const cudnnDataType_t io_t = s->half ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
    dn_io_tensors t;
    dn_io(g, s, 1, 0, &t);
    int64_t qd[4], qs[4], os[4], rd[4], rs[4];
    dn_shapes(s, qd, qs, os, rd, rs);
    const int64_t T = s->t;
    const int64_t sd[4] = {s->b, s->nh, T, T}, ss[4] = {s->nh * T * T, T * T, T, 1};
    cudnnBackendDescriptor_t S = dn_tensor(g, 0, f32, sd, ss, 0, "S");
    dn_matmul(g, t.q, t.kt, S, "Q K^T");
    cudnnBackendDescriptor_t S1 = dn_tensor(g, 0, f32, sd, ss, 0, "scale S");
    dn_pointwise(g, CUDNN_POINTWISE_MUL, S, t.scale, S1, "scale S");
    cudnnBackendDescriptor_t M = dn_tensor(g, 0, f32, rd, rs, 0, "row max");
    dn_reduce(g, CUDNN_REDUCE_TENSOR_MAX, S1, M, "row max");
    cudnnBackendDescriptor_t X = dn_tensor(g, 0, f32, sd, ss, 0, "S - max");
    dn_pointwise(g, CUDNN_POINTWISE_SUB, S1, M, X, "S - max");
    cudnnBackendDescriptor_t E = dn_tensor(g, 0, f32, sd, ss, 0, "exp");
    dn_pointwise(g, CUDNN_POINTWISE_EXP, X, NULL, E, "exp");
    cudnnBackendDescriptor_t Z = dn_tensor(g, 0, f32, rd, rs, 0, "row sum");
    dn_reduce(g, CUDNN_REDUCE_TENSOR_ADD, E, Z, "row sum");
    cudnnBackendDescriptor_t L = dn_tensor(g, 0, f32, rd, rs, 0, "log sum");
    dn_pointwise(g, CUDNN_POINTWISE_LOG, Z, NULL, L, "log sum");
    dn_pointwise(g, CUDNN_POINTWISE_ADD, M, L, t.stats, "stats");
    cudnnBackendDescriptor_t P = dn_tensor(g, 0, io_t, sd, ss, 0, "P"); /* the second matmul's A: i/o type */
    dn_pointwise(g, CUDNN_POINTWISE_DIV, E, Z, P, "softmax");
    dn_matmul(g, P, t.v, t.o, "P V");
}

/* The backward (accum: dQ through an fp32 accumulator, which admits non-deterministic engines). */
static void dn_build_bwd(dn_graph *g, const cu_dnn_sdpa *s, int accum) {
    const cudnnDataType_t io_t = s->half ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
    dn_io_tensors t;
    dn_io(g, s, 1, 1, &t);
    int64_t qd[4], qs[4], os[4], rd[4], rs[4];
    dn_shapes(s, qd, qs, os, rd, rs);
    const int64_t T = s->t, hs = s->hs;
    const int64_t one4[4] = {1, 1, 1, 1};
    cudnnBackendDescriptor_t dO = dn_tensor(g, CU_DNN_UID_DO, io_t, qd, os, 0, "tensor dO");
    cudnnBackendDescriptor_t dQ = dn_tensor(g, CU_DNN_UID_DQ, io_t, qd, qs, 0, "tensor dQ");
    cudnnBackendDescriptor_t dK = dn_tensor(g, CU_DNN_UID_DK, io_t, qd, qs, 0, "tensor dK");
    cudnnBackendDescriptor_t dV = dn_tensor(g, CU_DNN_UID_DV, io_t, qd, qs, 0, "tensor dV");
    cudnnBackendDescriptor_t one = dn_tensor(g, CU_DNN_UID_ONE, f32, one4, one4, 1, "tensor one");
    cudnnBackendDescriptor_t dsum = dn_tensor(g, CU_DNN_UID_DSUM, f32, rd, rs, 0, "tensor rowsum(dO O)");
    /* D = rowsum(dO * O) */
    const int64_t hd[4] = {s->b, s->nh, T, hs}, hstr[4] = {s->nh * T * hs, T * hs, hs, 1};
    cudnnBackendDescriptor_t dOO = dn_tensor(g, 0, f32, hd, hstr, 0, "dO O");
    dn_pointwise(g, CUDNN_POINTWISE_MUL, dO, t.o, dOO, "dO O");
    cudnnBackendDescriptor_t dsv = dn_tensor(g, 0, f32, rd, rs, 0, "rowsum(dO O)");
    dn_reduce(g, CUDNN_REDUCE_TENSOR_ADD, dOO, dsv, "rowsum(dO O)");
    dn_pointwise(g, CUDNN_POINTWISE_MUL, dsv, one, dsum, "store rowsum(dO O)");
    /* P = exp(scale Q K^T - Stats) */
    const int64_t sd[4] = {s->b, s->nh, T, T}, ss[4] = {s->nh * T * T, T * T, T, 1};
    const int64_t sdt[4] = {s->b, s->nh, T, T}, sst[4] = {s->nh * T * T, T * T, 1, T}; /* the transpose view */
    cudnnBackendDescriptor_t S = dn_tensor(g, 0, f32, sd, ss, 0, "S");
    dn_matmul(g, t.q, t.kt, S, "Q K^T");
    cudnnBackendDescriptor_t S1 = dn_tensor(g, 0, f32, sd, ss, 0, "scale S");
    dn_pointwise(g, CUDNN_POINTWISE_MUL, S, t.scale, S1, "scale S");
    cudnnBackendDescriptor_t X = dn_tensor(g, 0, f32, sd, ss, 0, "S - lse");
    dn_pointwise(g, CUDNN_POINTWISE_SUB, S1, t.stats, X, "S - lse");
    cudnnBackendDescriptor_t P = dn_tensor(g, 0, f32, sd, ss, 0, "P");
    dn_pointwise(g, CUDNN_POINTWISE_EXP, X, NULL, P, "P");
    /* dV = P^T dO */
    cudnnBackendDescriptor_t Pt = dn_tensor(g, 0, io_t, sdt, sst, 0, "P^T");
    dn_reshape(g, P, Pt, "P^T");
    dn_matmul(g, Pt, dO, dV, "P^T dO");
    /* dS = scale P (dO V^T - D) */
    cudnnBackendDescriptor_t dP = dn_tensor(g, 0, f32, sd, ss, 0, "dP");
    dn_matmul(g, dO, t.vt, dP, "dO V^T");
    cudnnBackendDescriptor_t dPD = dn_tensor(g, 0, f32, sd, ss, 0, "dP - D");
    dn_pointwise(g, CUDNN_POINTWISE_SUB, dP, dsum, dPD, "dP - D");
    cudnnBackendDescriptor_t dSu = dn_tensor(g, 0, f32, sd, ss, 0, "P (dP - D)");
    dn_pointwise(g, CUDNN_POINTWISE_MUL, dPD, P, dSu, "P (dP - D)");
    cudnnBackendDescriptor_t dS = dn_tensor(g, 0, f32, sd, ss, 0, "dS");
    dn_pointwise(g, CUDNN_POINTWISE_MUL, dSu, t.scale, dS, "dS");
    /* dK = dS^T Q */
    cudnnBackendDescriptor_t dSt = dn_tensor(g, 0, io_t, sdt, sst, 0, "dS^T");
    dn_reshape(g, dS, dSt, "dS^T");
    dn_matmul(g, dSt, t.q, dK, "dS^T Q");
    /* dQ = dS K, K as a view back from K^T */
    cudnnBackendDescriptor_t K = dn_tensor(g, 0, f32, qd, qs, 0, "K");
    dn_reshape(g, t.kt, K, "K from K^T");
    if (accum) {
        cudnnBackendDescriptor_t acc = dn_tensor(g, CU_DNN_UID_DQACC, f32, hd, hstr, 0, "tensor dQ accumulator");
        dn_matmul(g, dS, K, acc, "dS K");
        dn_pointwise(g, CUDNN_POINTWISE_IDENTITY, acc, NULL, dQ, "dQ");
    } else {
        dn_matmul(g, dS, K, dQ, "dS K");
    }
}

/* Build the graph of `kind` into g and return its operation graph (NULL after a failure, reason in g). */
static cudnnBackendDescriptor_t dn_build(dn_graph *g, cu_dnn *d, const cu_dnn_sdpa *s, int kind, char *why,
                                         size_t cap, cu_dnn_graph_desc *desc) {
    memset(g, 0, sizeof *g);
    g->d = d, g->why = why, g->cap = cap, g->next_virtual = DN_UID_VIRTUAL, g->desc = desc;
    if (desc) memset(desc, 0, sizeof *desc);
    if (kind == CU_DNN_FWD_UNIFIED && d->version < 91301) {
        g->failed = 1;
        snprintf(why, cap, "cuDNN %zu.%zu has no SDPA forward operation (9.13.1 or newer)", d->version / 10000,
                 d->version / 100 % 100);
        return NULL;
    }
    switch (kind) {
    case CU_DNN_FWD_UNIFIED: dn_build_fwd_unified(g, s); break;
    case CU_DNN_FWD_COMPOSITE: dn_build_fwd_composite(g, s); break;
    default: dn_build_bwd(g, s, kind == CU_DNN_BWD_ACCUM); break;
    }
    cudnnBackendDescriptor_t og = dn_op_graph(g);
    return g->failed ? NULL : og;
}

static int dn_graph_check(cu_dnn *d, const cu_dnn_sdpa *s, int kind, cu_dnn_graph_desc *desc, char *why, size_t cap) {
    if (kind < CU_DNN_FWD_UNIFIED || kind > CU_DNN_BWD_ACCUM) {
        snprintf(why, cap, "no graph kind %d", kind);
        return -1;
    }
    if (!cu_dnn_sdpa_fits(s)) {
        snprintf(why, cap, "cuDNN attention does not take b %lld t %lld heads %lld of size %lld", (long long)s->b,
                 (long long)s->t, (long long)s->nh, (long long)s->hs);
        return -1;
    }
    dn_graph g;
    cudnnBackendDescriptor_t og = dn_build(&g, d, s, kind, why, cap, desc);
    dn_graph_free(&g);
    return og ? 0 : -1;
}

int cu_dnn_sdpa_graph_check(cu_dnn *d, const cu_dnn_sdpa *s, int kind, char *why, size_t cap) {
    return dn_graph_check(d, s, kind, NULL, why, cap);
}

int cu_dnn_sdpa_graph_describe(cu_dnn *d, const cu_dnn_sdpa *s, int kind, cu_dnn_graph_desc *out, char *why,
                               size_t cap) {
    return dn_graph_check(d, s, kind, out, why, cap);
}

/* ------------------------------------------------------------------------------
 * Plans
 * ------------------------------------------------------------------------------ */

static void dn_plan_release(cu_dnn *d, dn_plan *p) {
    if (!p->used) return;
    if (p->plan) d->destroy_desc(p->plan);
    for (int i = 0; i < p->ncfgs; i++) d->destroy_desc(p->cfgs[i]);
    if (p->heur) d->destroy_desc(p->heur);
    if (p->graph) {
        dn_graph_free(p->graph);
        free(p->graph);
    }
    memset(p, 0, sizeof *p);
}

static size_t dn_round(size_t bytes) { return (bytes + DN_ALIGN - 1) / DN_ALIGN * DN_ALIGN; }

/* Whether cuDNN notes the engine of cfg as non-deterministic (an unreadable note counts as such). */
static int dn_cfg_nondeterministic(cu_dnn *d, cudnnBackendDescriptor_t cfg) {
    cudnnBackendDescriptor_t eng = NULL;
    if (d->create_desc(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng) != CUDNN_STATUS_SUCCESS) return 1;
    int64_t n = 0;
    int nondet = 1;
    if (d->get_attr(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &eng) ==
        CUDNN_STATUS_SUCCESS) {
        cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
        int64_t count = 0;
        if (d->get_attr(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                        CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &count, notes) == CUDNN_STATUS_SUCCESS) {
            nondet = 0;
            for (int64_t i = 0; i < count && i < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; i++)
                if (notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) nondet = 1;
        }
    }
    d->destroy_desc(eng);
    return nondet;
}

/* Heuristics for og (mode A, then the fallback list), then the first configuration whose plan finalizes.
 * Fills p->heur, cfgs, plan. */
static int dn_choose_plan(cu_dnn *d, cudnnBackendDescriptor_t og, dn_plan *p, char *why, size_t cap) {
    static const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    int tried = 0, skipped = 0;
    char last[256] = "no engine configuration";
    for (int m = 0; m < 2; m++) {
        cudnnStatus_t st;
        cudnnBackendDescriptor_t heur = NULL;
        if ((st = d->create_desc(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur)) != CUDNN_STATUS_SUCCESS)
            return dn_fail(d, st, "engine heuristics", why, cap);
        if ((st = d->set_attr(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &og)) !=
                CUDNN_STATUS_SUCCESS ||
            (st = d->set_attr(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &modes[m])) !=
                CUDNN_STATUS_SUCCESS ||
            (st = d->finalize(heur)) != CUDNN_STATUS_SUCCESS) {
            d->destroy_desc(heur);
            dn_fail(d, st, m == 0 ? "engine heuristics (mode A)" : "engine heuristics (fallback)", last, sizeof last);
            continue;
        }
        int64_t count = 0;
        d->get_attr(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, NULL);
        if (count > DN_MAX_CFGS) count = DN_MAX_CFGS;
        int ncfgs = 0;
        for (int64_t i = 0; i < count; i++, ncfgs++)
            if (d->create_desc(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &p->cfgs[i]) != CUDNN_STATUS_SUCCESS) break;
        int64_t got = 0;
        if (ncfgs > 0 && d->get_attr(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, ncfgs, &got,
                                     p->cfgs) != CUDNN_STATUS_SUCCESS)
            got = 0;
        for (int64_t i = 0; i < got && i < ncfgs; i++) {
            if (d->deterministic && dn_cfg_nondeterministic(d, p->cfgs[i])) {
                skipped++;
                continue;
            }
            tried++;
            cudnnBackendDescriptor_t plan = NULL;
            if ((st = d->create_desc(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan)) != CUDNN_STATUS_SUCCESS) break;
            st = d->set_attr(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                             &p->cfgs[i]);
            if (st == CUDNN_STATUS_SUCCESS) {
                /* required before 9.13, deprecated since (the plan takes the device from the graph) but still
                 * accepted; cudnn-frontend sets it on every version, and so do we */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
                st = d->set_attr(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &d->handle);
#pragma GCC diagnostic pop
            }
            if (st == CUDNN_STATUS_SUCCESS) st = d->finalize(plan);
            if (st == CUDNN_STATUS_SUCCESS) {
                int64_t ws = 0, n = 0;
                st = d->get_attr(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws);
                if (st == CUDNN_STATUS_SUCCESS && ws >= 0) {
                    p->heur = heur, p->plan = plan, p->ncfgs = ncfgs;
                    p->ws_total = p->ws_ours + dn_round((size_t)ws);
                    return 0;
                }
            }
            dn_fail(d, st, "execution plan", last, sizeof last);
            d->destroy_desc(plan);
        }
        for (int i = 0; i < ncfgs; i++) d->destroy_desc(p->cfgs[i]);
        d->destroy_desc(heur);
    }
    char skip[128] = "";
    if (skipped)
        snprintf(skip, sizeof skip, ", %d skipped as non-deterministic: [backend] deterministic = false allows them",
                 skipped);
    snprintf(why, cap, "no cuDNN engine runs this graph (%d configurations tried%s; last: %.200s)", tried, skip, last);
    return -1;
}

static dn_plan *dn_find(cu_dnn *d, const cu_dnn_sdpa *s, int backward) {
    for (int i = 0; i < DN_PLANS; i++) {
        dn_plan *p = &d->plans[i];
        if (p->used && p->b == s->b && p->t == s->t && p->nh == s->nh && p->hs == s->hs && p->half == s->half &&
            p->backward == backward)
            return p;
    }
    return NULL;
}

static int dn_failed_find(const cu_dnn *d, const cu_dnn_sdpa *s, int backward) {
    for (int i = 0; i < d->nfailed; i++)
        if (d->failed[i].b == s->b && d->failed[i].t == s->t && d->failed[i].nh == s->nh && d->failed[i].hs == s->hs &&
            d->failed[i].half == s->half && d->failed[i].backward == backward)
            return i;
    return -1;
}

static void dn_failed_add(cu_dnn *d, const cu_dnn_sdpa *s, int backward, const char *why) {
    const int i = d->nfailed < DN_PLANS ? d->nfailed++ : d->next_failed;
    d->next_failed = (d->next_failed + 1) % DN_PLANS;
    d->failed[i].b = s->b, d->failed[i].t = s->t, d->failed[i].nh = s->nh, d->failed[i].hs = s->hs;
    d->failed[i].half = s->half, d->failed[i].backward = backward;
    snprintf(d->failed[i].why, sizeof d->failed[i].why, "%s", why);
}

int cu_dnn_sdpa_plan(cu_dnn *d, const cu_dnn_sdpa *s, int backward, size_t *workspace, int *kind, char *why,
                     size_t cap) {
    *workspace = 0;
    const dn_plan *have = dn_find(d, s, backward);
    if (have) {
        *workspace = have->ws_total;
        if (kind) *kind = have->kind;
        return 0;
    }
    const int bad = dn_failed_find(d, s, backward);
    if (bad >= 0) {
        snprintf(why, cap, "%s", d->failed[bad].why);
        return -2;
    }
    if (!d->handle) {
        snprintf(why, cap, "cuDNN: no handle (cu_dnn_bind was not called)");
        return -1;
    }
    if (!cu_dnn_sdpa_fits(s)) {
        snprintf(why, cap, "cuDNN attention does not take b %lld t %lld heads %lld of size %lld", (long long)s->b,
                 (long long)s->t, (long long)s->nh, (long long)s->hs);
        return -1;
    }
    int kinds[2], nk = 0;
    if (!backward) {
        if (d->version >= 91301) kinds[nk++] = CU_DNN_FWD_UNIFIED;
        kinds[nk++] = CU_DNN_FWD_COMPOSITE;
    } else {
        if (!d->deterministic) kinds[nk++] = CU_DNN_BWD_ACCUM;
        kinds[nk++] = CU_DNN_BWD;
    }
    /* planned into a spare slot, which replaces the oldest cached plan only once it succeeded: a shape cuDNN
     * cannot plan does not evict a good plan */
    dn_plan fresh, *p = &fresh;
    memset(p, 0, sizeof *p);
    char reason[2][320] = {"", ""};
    for (int k = 0; k < nk; k++) {
        dn_graph *g = malloc(sizeof *g);
        if (!g) {
            snprintf(why, cap, "out of memory");
            return -1;
        }
        cudnnBackendDescriptor_t og = dn_build(g, d, s, kinds[k], reason[k], sizeof reason[k], NULL);
        p->ws_ours = 0;
        if (backward) {
            p->ws_ours = dn_round((size_t)(s->b * s->nh * s->t) * sizeof(float));
            if (kinds[k] == CU_DNN_BWD_ACCUM) p->ws_ours += dn_round((size_t)(s->b * s->nh * s->t * s->hs) * sizeof(float));
        }
        if (og && dn_choose_plan(d, og, p, reason[k], sizeof reason[k]) == 0) {
            p->used = 1, p->graph = g, p->kind = kinds[k], p->backward = backward;
            p->b = s->b, p->t = s->t, p->nh = s->nh, p->hs = s->hs, p->half = s->half;
            *workspace = p->ws_total;
            if (kind) *kind = kinds[k];
            dn_plan *slot = &d->plans[d->next_slot];
            d->next_slot = (d->next_slot + 1) % DN_PLANS;
            dn_plan_release(d, slot);
            *slot = fresh;
            return 0;
        }
        dn_graph_free(g);
        free(g);
        memset(p, 0, sizeof *p);
    }
    snprintf(why, cap, "%.300s%s%.300s", reason[0], nk > 1 ? "; then: " : "", nk > 1 ? reason[1] : "");
    dn_failed_add(d, s, backward, why);
    return -1;
}

void cu_dnn_sdpa_accum_region(const cu_dnn_sdpa *s, size_t *offset, size_t *bytes) {
    *offset = dn_round((size_t)(s->b * s->nh * s->t) * sizeof(float)); /* after the dO . O row sums */
    *bytes = (size_t)(s->b * s->nh * s->t * s->hs) * sizeof(float);
}

int cu_dnn_sdpa_run(cu_dnn *d, const cu_dnn_sdpa *s, int backward, const cu_dnn_sdpa_io *io, char *why, size_t cap) {
    const dn_plan *p = dn_find(d, s, backward);
    if (!p) {
        snprintf(why, cap, "cuDNN attention: no plan for this shape (cu_dnn_sdpa_plan first)");
        return -1;
    }
    const size_t C = (size_t)(s->nh * s->hs), esz = 2; /* bf16 / fp16 */
    const char *qkv = io->qkv;
    float scale = s->scale, one = 1.0f;
    void *ptrs[16];
    int64_t uids[16];
    int n = 0;
#define DN_PTR(uid, ptr) (uids[n] = (uid), ptrs[n] = (void *)(ptr), n++)
    DN_PTR(CU_DNN_UID_Q, qkv);
    DN_PTR(CU_DNN_UID_K, qkv + C * esz);
    DN_PTR(CU_DNN_UID_V, qkv + 2 * C * esz);
    DN_PTR(CU_DNN_UID_O, io->o);
    DN_PTR(CU_DNN_UID_STATS, io->stats);
    DN_PTR(CU_DNN_UID_SCALE, &scale); /* by value: a host pointer, read during the call */
    char *ws = io->workspace;
    if (backward) {
        char *dqkv = io->dqkv;
        DN_PTR(CU_DNN_UID_DO, io->dout);
        DN_PTR(CU_DNN_UID_DQ, dqkv);
        DN_PTR(CU_DNN_UID_DK, dqkv + C * esz);
        DN_PTR(CU_DNN_UID_DV, dqkv + 2 * C * esz);
        DN_PTR(CU_DNN_UID_ONE, &one);
        DN_PTR(CU_DNN_UID_DSUM, ws);
        size_t acc_off, acc_bytes;
        cu_dnn_sdpa_accum_region(s, &acc_off, &acc_bytes);
        if (p->kind == CU_DNN_BWD_ACCUM) DN_PTR(CU_DNN_UID_DQACC, ws + acc_off);
    }
#undef DN_PTR
    void *cudnn_ws = ws + p->ws_ours;
    cudnnBackendDescriptor_t vp = NULL;
    cudnnStatus_t st = d->create_desc(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    if (st != CUDNN_STATUS_SUCCESS) return dn_fail(d, st, "variant pack", why, cap);
    if ((st = d->set_attr(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs)) ==
            CUDNN_STATUS_SUCCESS &&
        (st = d->set_attr(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids)) ==
            CUDNN_STATUS_SUCCESS &&
        (st = d->set_attr(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &cudnn_ws)) ==
            CUDNN_STATUS_SUCCESS &&
        (st = d->finalize(vp)) == CUDNN_STATUS_SUCCESS)
        st = d->execute(d->handle, p->plan, vp);
    int rc = st == CUDNN_STATUS_SUCCESS ? 0 : dn_fail(d, st, backward ? "attention backward" : "attention forward",
                                                      why, cap);
    d->destroy_desc(vp);
    return rc;
}
