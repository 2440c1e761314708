/*
 * tests/gpu_emu/emu_nccl.c — an NCCL stand-in for the GPU emulator's build of the whole CUDA backend
 * (gpu_emu_cuda, when the build has MPI): what backends/cuda/cuda_comm.c calls, run over MPI_COMM_WORLD, so
 * that data-parallel training on emulated GPUs takes the backend's NCCL path (one id made by rank 0 and
 * broadcast by the core, a communicator per process, gradients summed in device buffers on the stream).
 *
 * Written from NCCL's documented contract, not from the backend's code, with the checks that make a real
 * NCCL fail (the backend has to cope with these, not the stand-in):
 *   - ncclCommInitRank: nranks >= 1, 0 <= rank < nranks, an id made by ncclGetUniqueId, the same id on every
 *     rank, and one rank per GPU: two ranks whose current devices have one PCI bus id on one host fail with
 *     ncclInvalidUsage ("Duplicate GPU detected", as NCCL says it). The stand-in's own limit: the communicator
 *     must span MPI_COMM_WORLD in its rank order (ncclInvalidUsage otherwise; the backend's always does);
 *   - ncclAllReduce: a live communicator, fp32 sum (the stand-in's limit; others ncclInvalidArgument), send and
 *     receive buffers of count floats inside device allocations (host pointers: ncclInvalidArgument), either
 *     the same buffer or disjoint ones;
 *   - every failure leaves a sentence for ncclGetLastError.
 * The emulator runs a stream's work when it is queued, so the sum is done at the call: device memory is
 * copied to the host inside the emulator's device bracket, MPI sums the copies (MPI never touches the
 * emulated device memory, which is unmapped outside brackets), and the result is copied back. The sums'
 * order is MPI's, not NCCL's ring order: results agree with a real NCCL to rounding, not bit for bit.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>

#include <nccl.h>

struct ncclComm {
    int rank, nranks, device;
    uint32_t magic;       /* kLive while the communicator may be used */
    ncclResult_t async;   /* the error that struck queued work (ncclCommGetAsyncError) */
    long long reduces;    /* all-reduces queued so far */
    long long fail_at;    /* EXPLORA_GPU_EMU_NCCL_FAIL_AT: the all-reduce that fails asynchronously (0: none) */
};

#define ID_MAGIC "explora gpu-emu nccl id"
static const uint32_t kLive = 0x6e63636cu;

/* The last failure's sentence (a process-wide slot, as ncclGetLastError reports the last error of the thread). */
static char last_error[512];

static ncclResult_t fail(ncclResult_t r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    fprintf(stderr, "gpu emulator: NCCL stand-in: %s\n", last_error);
    return r;
}

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    }
    return "unknown result code";
}

const char *ncclGetLastError(ncclComm_t comm) {
    (void)comm;
    return last_error[0] ? last_error : NULL;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    if (!id) return fail(ncclInvalidArgument, "ncclGetUniqueId: id is NULL");
    memset(id, 0, sizeof *id);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(id->internal, sizeof id->internal, "%s pid %ld t %lld.%09ld", ID_MAGIC, (long)getpid(),
             (long long)ts.tv_sec, ts.tv_nsec);
    return ncclSuccess;
}

static uint64_t fnv1a(const void *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
    return h;
}

/* What a rank tells the others at init: its id's hash, and the host and bus id of its current device. */
typedef struct rank_card {
    uint64_t id_hash;
    char host[192];
    char bus[64];
} rank_card;

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    if (!comm) return fail(ncclInvalidArgument, "ncclCommInitRank: comm is NULL");
    *comm = NULL;
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return fail(ncclInvalidArgument, "ncclCommInitRank: rank %d of %d", rank, nranks);
    if (strncmp(id.internal, ID_MAGIC, strlen(ID_MAGIC)) != 0)
        return fail(ncclInvalidArgument, "ncclCommInitRank: the id was not made by ncclGetUniqueId");
    int inited = 0, world = 0, me = 0;
    if (MPI_Initialized(&inited) != MPI_SUCCESS || !inited)
        return fail(ncclSystemError, "ncclCommInitRank: the stand-in runs over MPI, which is not initialised");
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (world != nranks || me != rank)
        return fail(ncclInvalidUsage,
                    "ncclCommInitRank: rank %d of %d, but the stand-in's communicators span MPI_COMM_WORLD in order "
                    "(this process is MPI rank %d of %d)",
                    rank, nranks, me, world);
    int device = -1;
    rank_card mine;
    memset(&mine, 0, sizeof mine);
    if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetPCIBusId(mine.bus, (int)sizeof mine.bus, device) !=
                                                     cudaSuccess)
        return fail(ncclUnhandledCudaError, "ncclCommInitRank: no current CUDA device");
    mine.id_hash = fnv1a(id.internal, sizeof id.internal);
    if (gethostname(mine.host, sizeof mine.host - 1) != 0) snprintf(mine.host, sizeof mine.host, "?");
    rank_card *all = calloc((size_t)nranks, sizeof *all);
    if (!all) return fail(ncclSystemError, "ncclCommInitRank: out of host memory");
    if (MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, MPI_COMM_WORLD) !=
        MPI_SUCCESS) {
        free(all);
        return fail(ncclSystemError, "ncclCommInitRank: MPI_Allgather failed");
    }
    /* every rank sees the same cards, so every rank fails alike */
    ncclResult_t r = ncclSuccess;
    for (int i = 0; i < nranks && r == ncclSuccess; i++) {
        if (all[i].id_hash != all[0].id_hash)
            r = fail(ncclInvalidUsage, "ncclCommInitRank: ranks 0 and %d joined with different unique ids", i);
        for (int j = i + 1; j < nranks && r == ncclSuccess; j++)
            if (strcmp(all[i].host, all[j].host) == 0 && strcmp(all[i].bus, all[j].bus) == 0)
                r = fail(ncclInvalidUsage, "Duplicate GPU detected: rank %d and rank %d both on CUDA device %s", i, j,
                         all[i].bus);
    }
    free(all);
    if (r != ncclSuccess) return r;
    struct ncclComm *c = calloc(1, sizeof *c);
    if (!c) return fail(ncclSystemError, "ncclCommInitRank: out of host memory");
    c->rank = rank;
    c->nranks = nranks;
    c->device = device;
    c->magic = kLive;
    c->async = ncclSuccess;
    const char *fa = getenv("EXPLORA_GPU_EMU_NCCL_FAIL_AT");
    c->fail_at = fa && *fa ? atoll(fa) : 0;
    *comm = c;
    return ncclSuccess;
}

/* Free a live communicator (`fn` names the caller in the failure). Nothing of the stand-in's is ever pending
 * (the emulator runs work as it is queued), so destroying and aborting end it alike. */
static ncclResult_t release(ncclComm_t comm, const char *fn) {
    if (!comm || comm->magic != kLive) return fail(ncclInvalidArgument, "%s: not a live communicator", fn);
    comm->magic = 0;
    free(comm);
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) { return release(comm, "ncclCommAbort"); }

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async) {
    if (!comm || comm->magic != kLive || !async)
        return fail(ncclInvalidArgument, "ncclCommGetAsyncError: not a live communicator, or no output");
    *async = comm->async;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) { return release(comm, "ncclCommDestroy"); }

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    (void)stream; /* the emulator has run everything queued before this call already */
    if (!comm || comm->magic != kLive) return fail(ncclInvalidArgument, "ncclAllReduce: not a live communicator");
    if (datatype != ncclFloat32 || op != ncclSum)
        return fail(ncclInvalidArgument, "ncclAllReduce: the stand-in sums fp32 only (datatype %d, op %d)",
                    (int)datatype, (int)op);
    if (comm->async != ncclSuccess)
        return fail(ncclInvalidUsage, "ncclAllReduce: the communicator failed (%s); abort it",
                    ncclGetErrorString(comm->async));
    if (++comm->reduces == comm->fail_at) { /* as when a peer dies: queued, never completed, the error pending */
        comm->async = ncclRemoteError;
        fail(ncclRemoteError, "all-reduce %lld: a peer is gone (EXPLORA_GPU_EMU_NCCL_FAIL_AT)", comm->reduces);
        return ncclSuccess;
    }
    if (count == 0) return ncclSuccess;
    const size_t bytes = count * sizeof(float);
    if (count > ((size_t)1 << 40) || !sendbuff || !recvbuff)
        return fail(ncclInvalidArgument, "ncclAllReduce: %zu floats at %p -> %p", count, sendbuff, recvbuff);
    if (emu_device_pointer(sendbuff, bytes) == 0 || emu_device_pointer(recvbuff, bytes) == 0)
        return fail(ncclInvalidArgument, "ncclAllReduce: %zu floats at %p -> %p are not inside device allocations",
                    count, sendbuff, recvbuff);
    const uintptr_t s = (uintptr_t)sendbuff, d = (uintptr_t)recvbuff;
    if (s != d && s < d + bytes && d < s + bytes)
        return fail(ncclInvalidArgument, "ncclAllReduce: send and receive buffers overlap without being the same");
    if (count > (size_t)INT32_MAX) return fail(ncclInvalidArgument, "ncclAllReduce: %zu floats", count);
    float *host = malloc(bytes);
    if (!host) return fail(ncclSystemError, "ncclAllReduce: out of host memory for %zu floats", count);
    emu_device_enter();
    memcpy(host, sendbuff, bytes);
    emu_device_leave();
    const int rc = MPI_Allreduce(MPI_IN_PLACE, host, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (rc == MPI_SUCCESS) {
        emu_device_enter();
        memcpy(recvbuff, host, bytes);
        emu_device_leave();
    }
    free(host);
    return rc == MPI_SUCCESS ? ncclSuccess : fail(ncclSystemError, "ncclAllReduce: MPI_Allreduce failed (%d)", rc);
}
