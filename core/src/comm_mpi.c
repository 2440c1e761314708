/*
 * core/src/comm_mpi.c — the MPI communicator (see explora/comm.h). Compiled
 * only when CMake finds MPI (EXPLORA_HAVE_MPI); libexplora then links
 * MPI::MPI_C.
 *
 * MPI is initialised on the first ex_comm_init of a launched process
 * (MPI_THREAD_FUNNELED: the loader's decoding threads never call MPI) and
 * finalised by an atexit handler, so several trainers in one process (e.g.
 * finetune then evaluate) share one MPI session. MPI_COMM_WORLD returns
 * errors instead of aborting, so they surface as ex_err messages naming the
 * call; counts above INT_MAX are split into chunks. Sanitizer builds check
 * for leaks just before MPI_Finalize (finalize_at_exit).
 */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "comm_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

static ex_status mpi_fail(int rc, const char *what, ex_err *err) {
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    EX_FAIL(err, EX_E_IO, "MPI: %s failed: %s", what, msg);
}

#define MPI_DO(call, what)                                   \
    do {                                                     \
        int mpi__rc = (call);                                \
        if (mpi__rc != MPI_SUCCESS) return mpi_fail(mpi__rc, what, err); \
    } while (0)

/* At exit. Sanitizer builds run the leak check first, while MPI's own state is still reachable:
 * after MPI_Finalize Open MPI has unloaded its components and what they keep until exit shows up
 * as unattributable leaks ("<unknown module>") that no suppression can name. */
static void finalize_at_exit(void) {
#if defined(__SANITIZE_ADDRESS__)
    __lsan_do_leak_check();
#endif
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

ex_status ex_comm_mpi_init(ex_comm *c, ex_err *err) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Init_thread", err);
        atexit(finalize_at_exit);
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    }
    MPI_DO(MPI_Comm_rank(MPI_COMM_WORLD, &c->rank), "MPI_Comm_rank");
    MPI_DO(MPI_Comm_size(MPI_COMM_WORLD, &c->world), "MPI_Comm_size");
    c->kind = EX_COMM_MPI;
    return EX_OK;
}

static ex_status allreduce(void *buf, int64_t n, size_t elem, MPI_Datatype type, MPI_Op op, ex_err *err) {
    char *p = buf;
    while (n > 0) {
        const int chunk = n > INT_MAX / 2 ? INT_MAX / 2 : (int)n;
        MPI_DO(MPI_Allreduce(MPI_IN_PLACE, p, chunk, type, op, MPI_COMM_WORLD), "MPI_Allreduce");
        p += (size_t)chunk * elem;
        n -= chunk;
    }
    return EX_OK;
}

ex_status ex_comm_mpi_allreduce_f32(const ex_comm *c, float *host, int64_t n, ex_err *err) {
    (void)c;
    return allreduce(host, n, sizeof(float), MPI_FLOAT, MPI_SUM, err);
}

ex_status ex_comm_mpi_allreduce_f64(const ex_comm *c, double *host, int64_t n, ex_err *err) {
    (void)c;
    return allreduce(host, n, sizeof(double), MPI_DOUBLE, MPI_SUM, err);
}

ex_status ex_comm_mpi_allreduce_i64(const ex_comm *c, int64_t *host, int64_t n, int max, ex_err *err) {
    (void)c;
    return allreduce(host, n, sizeof(int64_t), MPI_INT64_T, max ? MPI_MAX : MPI_SUM, err);
}

ex_status ex_comm_mpi_broadcast(const ex_comm *c, void *host, size_t bytes, int root, ex_err *err) {
    (void)c;
    char *p = host;
    while (bytes > 0) {
        const int chunk = bytes > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)bytes;
        MPI_DO(MPI_Bcast(p, chunk, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
        p += chunk;
        bytes -= (size_t)chunk;
    }
    return EX_OK;
}

/* A non-blocking barrier polled every millisecond: a watchdog for ranks that hang without dying. */
ex_status ex_comm_mpi_barrier(const ex_comm *c, double timeout_s, ex_err *err) {
    MPI_Request req;
    MPI_DO(MPI_Ibarrier(MPI_COMM_WORLD, &req), "MPI_Ibarrier");
    const double t0 = MPI_Wtime();
    for (;;) {
        int done = 0;
        MPI_DO(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
        if (done) return EX_OK;
        if (timeout_s > 0 && MPI_Wtime() - t0 > timeout_s)
            EX_FAIL(err, EX_E_IO, "rank %d of %d: the other ranks did not reach the barrier within %.0f s", c->rank,
                    c->world, timeout_s);
        const struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}

void ex_comm_mpi_abort(const ex_comm *c, int code) {
    (void)c;
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code); /* MPI_Abort does not return; this keeps the compiler (and noreturn) honest */
}
