/*
 * core/cli/cli_timing.h — the timing wrapper around a backend, shared by `explora bench` and
 * `explora pretrain --profile-step`: a copy of an ex_backend whose every vtable slot calls the real
 * slot and adds the time spent inside it to an op class (gemm | attention | norms | elementwise |
 * optimiser | memory), to the current phase, and to the slot's own total; GEMM and attention calls
 * also add their model FLOPs (2 m n k per product; attention 4 b t^2 nh hs forward, 8 backward).
 * A device backend returns before its work is done, so set sync_each to synchronise after every
 * call: the times are then the device's, launch latency included, and host and device no longer
 * overlap. The collective slots (comm_*) are not wrapped: a wrapped backend has none.
 */
#ifndef EXPLORA_CLI_TIMING_H
#define EXPLORA_CLI_TIMING_H

#include <stdint.h>
#include <stdio.h>

#include "explora/backend.h"

enum { BC_GEMM = 0, BC_ATTN, BC_NORM, BC_ELEM, BC_OPTIM, BC_MEM, BC_COUNT };
enum { BP_FWD = 0, BP_LOSS, BP_BWD, BP_OPT, BP_COUNT };

extern const char *const cli_timing_class_names[BC_COUNT];

#define BENCH_SLOTS 48 /* distinct backend slots timed per step (the vtable has fewer) */

/* The timing wrapper's context: the real backend and what was measured since the last reset. */
typedef struct bench_timer {
    ex_backend *inner;
    int phase;                    /* BP_*: where the time goes (bench sets it; one phase for pretrain) */
    int sync_each;                /* synchronize after every call before reading the clock (device backends) */
    double t[BP_COUNT][BC_COUNT]; /* seconds inside backend calls */
    double flops[BP_COUNT];       /* model FLOPs of GEMMs and attention matmuls */
    /* per backend slot, over the whole step: name (a string literal), seconds, calls */
    const char *slot_name[BENCH_SLOTS];
    double slot_s[BENCH_SLOTS];
    int64_t slot_calls[BENCH_SLOTS];
    int nslots;
} bench_timer;

/* Monotonic seconds. */
double cli_now_s(void);
/* out: a backend whose every op runs `inner`'s and is timed into T (reset). Not to be destroyed (no
 * init/shutdown): destroy `inner`. */
void cli_timing_backend(ex_backend *out, ex_backend *inner, bench_timer *T);
/* Forget what was measured (phase back to BP_FWD; sync_each unchanged). */
void cli_timer_reset(bench_timer *T);
/* The `top` slowest of n slots, one line each: name, milliseconds, calls. */
void cli_print_slots(FILE *out, const char *const *names, const double *secs, const int64_t *calls, int n, int top);

#endif
