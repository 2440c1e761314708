/*
 * tests/gpu_emu/include_cuda/nccl.h — the part of NCCL the CUDA backend calls (backends/cuda/cuda_comm.c), for
 * the GPU emulator's build of the whole CUDA backend (gpu_emu_cuda) when the build has MPI. The stand-in
 * (../emu_nccl.c) runs the collectives over MPI_COMM_WORLD on host copies of the emulated device buffers, and
 * checks what NCCL's documentation asks of its callers: one rank per GPU (two ranks whose current devices have
 * one PCI bus id on one host fail init with ncclInvalidUsage, as NCCL's "Duplicate GPU detected" does), every
 * rank joining with the same unique id, buffers in device memory, communicators used only while alive. A
 * failure that strikes after a collective was queued (a peer that died) is reported as NCCL does, through
 * ncclCommGetAsyncError: EXPLORA_GPU_EMU_NCCL_FAIL_AT=N makes the process's Nth all-reduce fail that way
 * (nothing summed, ncclRemoteError pending). Enum values are NVIDIA's (NCCL 2.x). Valid C and C++.
 */
#ifndef EXPLORA_GPU_EMU_NCCL_H
#define EXPLORA_GPU_EMU_NCCL_H

#include <stddef.h>

#include "cuda_runtime_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* the version this stand-in describes (the CUDA backend prints it in its errors) */
#define NCCL_MAJOR 2
#define NCCL_MINOR 28
#define NCCL_PATCH 0

#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef struct ncclComm *ncclComm_t;

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7
} ncclResult_t;

typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 } ncclRedOp_t;

typedef enum {
    ncclInt8 = 0,
    ncclUint8 = 1,
    ncclInt32 = 2,
    ncclUint32 = 3,
    ncclInt64 = 4,
    ncclUint64 = 5,
    ncclFloat16 = 6,
    ncclFloat32 = 7,
    ncclFloat64 = 8,
    ncclBfloat16 = 9
} ncclDataType_t;

/* Bytes that name a new communicator; made once (by one rank) and handed to every rank out of band. */
ncclResult_t ncclGetUniqueId(ncclUniqueId *id);
/* Collective over the nranks processes: join the communicator `id` as `rank`, on the current CUDA device. */
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
/* End the communicator's work now (its pending collectives too) and free it: after an error, where a destroy
 * could wait forever on a collective that cannot complete. */
ncclResult_t ncclCommAbort(ncclComm_t comm);
/* *async = the error that struck the communicator's queued work since (a peer that died, a network failure), or
 * ncclSuccess; the caller polls it while waiting for the stream, and aborts on an error. */
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async);
/* recvbuff (count) = the element-wise reduction of every rank's sendbuff, queued on `stream` (in place when
 * sendbuff == recvbuff). The stand-in takes fp32 sums only, the backend's one use. */
ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
const char *ncclGetErrorString(ncclResult_t result);
/* A sentence about the last failure (of any communicator in the stand-in), or NULL. */
const char *ncclGetLastError(ncclComm_t comm);

#ifdef __cplusplus
}
#endif

#endif
