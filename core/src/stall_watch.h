/*
 * core/src/stall_watch.h — the watchdog of multi-process training (stall_watch.c).
 *
 * Ranks wait on each other in every collective, so one rank that hangs without dying (a data source that
 * never answers, a wedged device) holds every other rank forever, and none of them can return an error:
 * they are blocked inside MPI or NCCL. The watchdog is a thread that the training loop feeds once per step;
 * when no step finishes for `timeout_s` seconds it says so on stderr (rank, step, what to do) and ends the
 * process with exit status 3. An MPI launcher then ends the other ranks (a rank that exits without
 * finalising MPI fails the job). Checkpoints are written atomically, so no file is left half-written.
 */
#ifndef EXPLORA_STALL_WATCH_H
#define EXPLORA_STALL_WATCH_H

#include <stdint.h>

#include "explora/status.h"

typedef struct ex_stall_watch ex_stall_watch; /* (named in explora/trainer.h) */

/* Start watching (timeout_s > 0); `rank` of `world` name the process in the message. */
ex_status ex_stall_watch_start(ex_stall_watch **out, double timeout_s, int rank, int world, ex_err *err);
/* A step finished: `step` is the optimiser step now reached. */
void ex_stall_watch_beat(ex_stall_watch *w, int64_t step);
/* Stop the thread and free the watchdog (NULL: nothing). */
void ex_stall_watch_stop(ex_stall_watch *w);

#endif
