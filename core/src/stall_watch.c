/*
 * core/src/stall_watch.c — the watchdog of multi-process training (see stall_watch.h).
 *
 * One thread waits on a condition variable with a deadline: a beat moves the deadline on, a stop wakes it
 * to leave. Past the deadline it reports and calls _exit: the training thread may be blocked inside a
 * collective that never returns, so an error cannot be handed back, and exit handlers (MPI's among them)
 * could block the same way.
 */
#include "stall_watch.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct ex_stall_watch {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_condattr_t attr;
    double timeout_s;
    int rank, world;
    int stop;               /* under lock */
    int64_t step;           /* under lock: the last step reached (-1: none yet) */
    struct timespec beaten; /* under lock: when (CLOCK_MONOTONIC) */
};

static struct timespec mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

static double seconds_between(struct timespec a, struct timespec b) {
    return (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
}

static struct timespec plus(struct timespec t, double s) {
    const long long ns = (long long)(s * 1e9);
    t.tv_sec += (time_t)(ns / 1000000000LL);
    t.tv_nsec += (long)(ns % 1000000000LL);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static void *watch(void *arg) {
    ex_stall_watch *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        const struct timespec deadline = plus(w->beaten, w->timeout_s);
        pthread_cond_timedwait(&w->wake, &w->lock, &deadline); /* a beat, a stop, the deadline or a spurious wake */
        if (w->stop || seconds_between(w->beaten, mono_now()) < w->timeout_s) continue;
        char since[64];
        if (w->step < 0) snprintf(since, sizeof since, "since the run started");
        else snprintf(since, sizeof since, "since step %lld", (long long)w->step);
        fprintf(stderr,
                "explora: error: rank %d of %d: no training step finished in %.0f s (%s). A rank is stuck: "
                "its data source or device hangs, or it no longer takes part in the collectives, and the other "
                "ranks wait on it. Stopping every rank; checkpoints already written are intact (--resume). If a "
                "step can take this long, raise [run] stall_timeout_s (0 turns the watchdog off).\n",
                w->rank, w->world, w->timeout_s, since);
        fflush(stderr);
        _exit(3);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

ex_status ex_stall_watch_start(ex_stall_watch **out, double timeout_s, int rank, int world, ex_err *err) {
    *out = NULL;
    EX_ENSURE(timeout_s > 0, err, EX_E_INVALID, "stall watch: timeout %g s", timeout_s);
    ex_stall_watch *w = calloc(1, sizeof *w);
    EX_ENSURE(w, err, EX_E_NOMEM, "out of memory starting the stall watchdog");
    w->timeout_s = timeout_s;
    w->rank = rank;
    w->world = world;
    w->step = -1; /* setting up */
    w->beaten = mono_now();
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_init(&w->attr);
    pthread_condattr_setclock(&w->attr, CLOCK_MONOTONIC); /* deadlines immune to wall-clock changes */
    pthread_cond_init(&w->wake, &w->attr);
    if (pthread_create(&w->thread, NULL, watch, w) != 0) {
        pthread_cond_destroy(&w->wake);
        pthread_condattr_destroy(&w->attr);
        pthread_mutex_destroy(&w->lock);
        free(w);
        EX_FAIL(err, EX_E_INTERNAL, "cannot start the stall watchdog thread");
    }
    *out = w;
    return EX_OK;
}

void ex_stall_watch_beat(ex_stall_watch *w, int64_t step) {
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->step = step;
    w->beaten = mono_now();
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

void ex_stall_watch_stop(ex_stall_watch *w) {
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_condattr_destroy(&w->attr);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
