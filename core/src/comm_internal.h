/*
 * core/src/comm_internal.h — the MPI half of the communicator (comm_mpi.c,
 * compiled only when CMake found MPI: EXPLORA_HAVE_MPI). core/src/comm.c
 * dispatches to these for EX_COMM_MPI communicators.
 */
#ifndef EXPLORA_COMM_INTERNAL_H
#define EXPLORA_COMM_INTERNAL_H

#include "explora/comm.h"

#ifdef EXPLORA_HAVE_MPI
ex_status ex_comm_mpi_init(ex_comm *c, ex_err *err);
ex_status ex_comm_mpi_allreduce_f32(const ex_comm *c, float *host, int64_t n, ex_err *err);
ex_status ex_comm_mpi_allreduce_f64(const ex_comm *c, double *host, int64_t n, ex_err *err);
ex_status ex_comm_mpi_allreduce_i64(const ex_comm *c, int64_t *host, int64_t n, int max, ex_err *err);
ex_status ex_comm_mpi_broadcast(const ex_comm *c, void *host, size_t bytes, int root, ex_err *err);
ex_status ex_comm_mpi_barrier(const ex_comm *c, double timeout_s, ex_err *err);
void ex_comm_mpi_abort(const ex_comm *c, int code) __attribute__((noreturn));
#endif

#endif /* EXPLORA_COMM_INTERNAL_H */
