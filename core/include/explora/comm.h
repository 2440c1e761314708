/*
 * explora/comm.h — the communicator of data-parallel training: one process
 * per device, launched by `mpirun -np N explora pretrain run.ini`.
 *
 * ex_comm_init decides how the process runs:
 *   - launched by an MPI launcher (Open MPI's OMPI_COMM_WORLD_SIZE, or the
 *     PMI_SIZE / PMIX_RANK variables of MPICH, Slurm and PMIx) and built with
 *     MPI (EXPLORA_HAVE_MPI): MPI is initialised (once per process; finalised
 *     at exit) and rank/world come from MPI_COMM_WORLD;
 *   - otherwise: a single process, rank 0 of 1, and every collective is the
 *     identity (no copies, no arithmetic: single-process results are
 *     bit-identical to a build without MPI).
 * A launcher that asks for more than one process from a build without MPI is
 * an error (the ranks would silently train N independent models).
 *
 * Collectives must be called by every rank in the same order with the same
 * sizes. Device buffers go through the backend's copy ops (download, reduce
 * on the host, upload): on the CPU backend that is a memcpy each way. A
 * backend with collective slots (CUDA built with NCCL) reduces them in device
 * memory instead, once ex_comm_attach_device has joined every rank's backend
 * into one device communicator (rank 0's id broadcast over MPI).
 *
 * Failure: ex_comm_abort reports nothing itself; the caller prints
 * "rank N of W: <message>" on stderr first. Under MPI it calls MPI_Abort, which
 * makes the launcher terminate every other rank (they exit non-zero, within
 * seconds), so no rank waits forever in a collective for a rank that died.
 */
#ifndef EXPLORA_COMM_H
#define EXPLORA_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "explora/backend.h"
#include "explora/export.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ex_comm_kind {
    EX_COMM_SINGLE = 0, /* one process: collectives are identities */
    EX_COMM_MPI = 1     /* MPI_COMM_WORLD */
} ex_comm_kind;

typedef struct ex_comm {
    ex_comm_kind kind;
    int rank, world;
    /* host staging for device all-reduces (grown on demand, freed by ex_comm_free) */
    float *scratch;
    size_t scratch_cap;
    /* the backend whose collective slots reduce device buffers (ex_comm_attach_device); NULL: staging */
    ex_backend *device;
    /* why a backend that has collective slots was not attached, for the run's summary ("" otherwise) */
    char device_note[400];
} ex_comm;

/* The environment of a launcher that started several processes? Returns the world size it announces
 * (0: no launcher variables found). */
EX_API int ex_comm_launched_world(void);
/* The process's rank among those of its machine, from the launcher's environment (Open MPI, MPICH, Slurm,
 * LOCAL_RANK); 0 when there is none. GPU backends pick their device with it. */
EX_API int ex_comm_launched_local_rank(void);
/* Initialise (see above). A NULL comm pointer elsewhere in this API means a single process. */
EX_API ex_status ex_comm_init(ex_comm *c, ex_err *err);
/* Release the staging buffer (MPI itself is finalised at process exit). */
EX_API void ex_comm_free(ex_comm *c);
/* Whether this build can run several processes (was compiled with MPI). */
EX_API int ex_comm_have_mpi(void);

EX_API int ex_comm_rank(const ex_comm *c);
EX_API int ex_comm_world(const ex_comm *c);

/* With several ranks and a backend that has collective slots: rank 0 creates the device communicator's id,
 * MPI broadcasts it, every rank joins; later device all-reduces on `be` go through the backend (NCCL).
 * Otherwise (one rank, or a backend without the slots) nothing changes and *attached = 0. Collective: every
 * rank calls it, and the ranks first agree (an all-reduce) to attach only if every one of them wants to
 * (`want`) and its backend can, so ranks that differ (a per-rank setting, a backend without the slots) all
 * stay on the host path instead of waiting on each other. A backend that names its device (the device_key
 * slot) is also not attached when two ranks of one host share a device (NCCL refuses that): c->device_note then
 * says which ranks and which device. */
EX_API ex_status ex_comm_attach_device_if(ex_comm *c, ex_backend *be, int want, int *attached, ex_err *err);
/* ex_comm_attach_device_if with want = 1. */
EX_API ex_status ex_comm_attach_device(ex_comm *c, ex_backend *be, int *attached, ex_err *err);
/* In place, element-wise sum over ranks of n fp32 values in DEVICE memory of `be`. */
EX_API ex_status ex_comm_allreduce_sum_f32(ex_comm *c, ex_backend *be, float *dev, int64_t n, ex_err *err);
/* In place sums of host values. */
EX_API ex_status ex_comm_allreduce_sum_f32_host(const ex_comm *c, float *host, int64_t n, ex_err *err);
EX_API ex_status ex_comm_allreduce_sum_f64(const ex_comm *c, double *host, int64_t n, ex_err *err);
EX_API ex_status ex_comm_allreduce_sum_i64(const ex_comm *c, int64_t *host, int64_t n, ex_err *err);
/* In place maximum of host int64 values (e.g. "did any rank fail"). */
EX_API ex_status ex_comm_allreduce_max_i64(const ex_comm *c, int64_t *host, int64_t n, ex_err *err);
/* Rank `root`'s bytes to every rank. */
EX_API ex_status ex_comm_broadcast(const ex_comm *c, void *host, size_t bytes, int root, ex_err *err);
/* Wait for every rank; gives up with EX_E_IO after timeout_s seconds (<= 0: wait forever). */
EX_API ex_status ex_comm_barrier(const ex_comm *c, double timeout_s, ex_err *err);
/* Terminate every rank with exit code `code` (single process: exit(code)). Does not return. */
EX_API void ex_comm_abort(const ex_comm *c, int code) __attribute__((noreturn));

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_COMM_H */
