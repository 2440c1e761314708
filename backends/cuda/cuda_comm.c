/*
 * backends/cuda/cuda_comm.c — the CUDA backend's collectives between
 * processes: NCCL, one communicator per backend context, the optional
 * comm_* slots of explora/backend.h.
 *
 * Built when CMake finds NCCL (nccl.h and libnccl, shipped with the CUDA
 * toolkit or as libnccl-dev); without it the slots stay NULL and data-parallel
 * training reduces through host memory by MPI. The core makes the unique id
 * on rank 0 (comm_unique_id), broadcasts it over MPI, and every rank joins
 * (comm_init); all-reduces are queued on the backend's stream, so they order
 * after the backward pass that produced the gradients without a host sync.
 *
 * Device choice with several processes on one machine: the `device` key's
 * default (-1) takes the launcher's local rank modulo the visible devices
 * (ex_comm_launched_local_rank), so `mpirun -np 4` on a 4-GPU machine gives each rank its
 * own GPU without per-rank configs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_internal.h"

#ifdef EXPLORA_HAVE_NCCL
#include <nccl.h>

#define NCCL_TRY(ctx, expr, what)                                                                                    \
    do {                                                                                                             \
        ncclResult_t r__ = (expr);                                                                                   \
        if (r__ != ncclSuccess) {                                                                                    \
            snprintf((ctx)->last_error, sizeof (ctx)->last_error, "%s: %s", what, ncclGetErrorString(r__));          \
            EX_FAIL(err, EX_E_DEVICE, "backend " CU_VENDOR " (NCCL %d.%d.%d) on device %d: %s failed: %s%s%s", NCCL_MAJOR, \
                    NCCL_MINOR, NCCL_PATCH, (ctx)->device, what, ncclGetErrorString(r__),                            \
                    ncclGetLastError(NULL) ? " — " : "", ncclGetLastError(NULL) ? ncclGetLastError(NULL) : "");     \
        }                                                                                                            \
    } while (0)

ex_status cu_comm_unique_id(void *vctx, void *id, size_t cap, size_t *len, ex_err *err) {
    cu_ctx *ctx = vctx;
    EX_ENSURE(ctx && id && len && cap >= sizeof(ncclUniqueId), err, EX_E_INVALID,
              CU_VENDOR ": comm_unique_id needs %zu bytes of room", sizeof(ncclUniqueId));
    ncclUniqueId u;
    NCCL_TRY(ctx, ncclGetUniqueId(&u), "ncclGetUniqueId");
    memcpy(id, &u, sizeof u);
    *len = sizeof u;
    return EX_OK;
}

ex_status cu_comm_init(void *vctx, const void *id, size_t len, int rank, int world, ex_err *err) {
    cu_ctx *ctx = vctx;
    EX_ENSURE(ctx && id && len == sizeof(ncclUniqueId), err, EX_E_INVALID,
              CU_VENDOR ": comm_init got a %zu-byte id; NCCL's is %zu bytes (ranks built against different NCCLs?)", len,
              sizeof(ncclUniqueId));
    EX_ENSURE(world >= 1 && rank >= 0 && rank < world, err, EX_E_INVALID, CU_VENDOR ": comm_init of rank %d of %d", rank,
              world);
    EX_ENSURE(!ctx->nccl, err, EX_E_INVALID, CU_VENDOR ": this backend already joined a communicator");
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    if (cudaSetDevice(ctx->device) != cudaSuccess)
        EX_FAIL(err, EX_E_DEVICE, CU_VENDOR ": cudaSetDevice(%d) before ncclCommInitRank failed", ctx->device);
    ncclComm_t comm = NULL;
    NCCL_TRY(ctx, ncclCommInitRank(&comm, world, u, rank), "ncclCommInitRank");
    ctx->nccl = comm;
    return EX_OK;
}

ex_status cu_comm_allreduce_sum_f32(void *vctx, float *buf, int64_t n, ex_err *err) {
    cu_ctx *ctx = vctx;
    EX_ENSURE(ctx && ctx->nccl, err, EX_E_INVALID, CU_VENDOR ": all-reduce before comm_init");
    EX_ENSURE(n >= 0 && (n == 0 || buf), err, EX_E_INVALID, CU_VENDOR ": all-reduce of %lld values", (long long)n);
    if (n == 0) return EX_OK;
    NCCL_TRY(ctx, ncclAllReduce(buf, buf, (size_t)n, ncclFloat32, ncclSum, (ncclComm_t)ctx->nccl, ctx->stream),
             "ncclAllReduce");
    return EX_OK;
}

void cu_comm_destroy(cu_ctx *ctx) {
    if (ctx && ctx->nccl) {
        ncclCommDestroy((ncclComm_t)ctx->nccl);
        ctx->nccl = NULL;
    }
}

/* NCCL's asynchronous error of the communicator, if one struck: then abort the communicator (which also ends its
 * kernels still waiting on a peer), report, and return EX_E_DEVICE; EX_OK otherwise. */
static ex_status async_error(cu_ctx *ctx) {
    ncclResult_t async = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError((ncclComm_t)ctx->nccl, &async);
    if (r == ncclSuccess && (async == ncclSuccess || async == ncclInProgress)) return EX_OK;
    const ncclResult_t bad = r != ncclSuccess ? r : async;
    const char *last = ncclGetLastError((ncclComm_t)ctx->nccl);
    snprintf(ctx->last_error, sizeof ctx->last_error,
             CU_VENDOR " (NCCL %d.%d.%d) on device %d: a collective failed: %s%s%s. The communicator is aborted; "
             "another rank may have died (see its messages)",
             NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH, ctx->device, ncclGetErrorString(bad), last ? " — " : "",
             last ? last : "");
    fprintf(stderr, "explora: %s\n", ctx->last_error);
    ncclCommAbort((ncclComm_t)ctx->nccl);
    ctx->nccl = NULL;
    return ex_err_set(NULL, EX_E_DEVICE, __FILE__, __LINE__, "%s", ctx->last_error);
}

ex_status cu_sync(cu_ctx *ctx) {
    if (!ctx->nccl) {
        CU_TRY(ctx, cudaStreamSynchronize(ctx->stream));
        return EX_OK;
    }
    for (;;) {
        const cudaError_t e = cudaStreamQuery(ctx->stream);
        EX_CHECK(async_error(ctx)); /* before success too: work queued after a failed collective is not valid */
        if (e == cudaSuccess) return EX_OK;
        if (e != cudaErrorNotReady) CU_TRY(ctx, e);
        const struct timespec pause = {0, 20000}; /* 20 us between polls */
        nanosleep(&pause, NULL);
    }
}
#else
void cu_comm_destroy(cu_ctx *ctx) { (void)ctx; }

ex_status cu_sync(cu_ctx *ctx) {
    CU_TRY(ctx, cudaStreamSynchronize(ctx->stream));
    return EX_OK;
}
#endif
