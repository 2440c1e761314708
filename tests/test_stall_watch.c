/*
 * tests/test_stall_watch.c — the multi-process training watchdog (core/src/stall_watch.c, compiled in).
 *
 * Each case that may end a process runs the watchdog in a forked child and reads its exit status and stderr:
 *   - no beat for the timeout: the child ends with status 3 after about the timeout (not before), and says which
 *     rank, since which step (or since the start), and which key to raise;
 *   - beats more often than the timeout keep it quiet for several timeouts, and a stop ends it;
 *   - a stop returns at once even with a long timeout (the thread waits on a condition, not a sleep);
 *   - a timeout that is not positive is refused.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stall_watch.h"
#include "test_support.h"

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void pause_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Run body(arg) in a child whose stderr goes to a pipe; return its exit status (-1: killed), its stderr in msg
 * and the seconds until it ended. The child is killed after 20 s. */
static int in_child(void (*body)(void), char *msg, size_t cap, double *took) {
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    const double t0 = mono_s();
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        alarm(20);
        body();
        _exit(0);
    }
    close(fd[1]);
    size_t len = 0;
    ssize_t got;
    while (len + 1 < cap && (got = read(fd[0], msg + len, cap - 1 - len)) > 0) len += (size_t)got;
    msg[len] = '\0';
    close(fd[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    *took = mono_s() - t0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void never_beats_after_step_7(void) {
    ex_stall_watch *w = NULL;
    ex_err err;
    if (ex_stall_watch_start(&w, 1.0, 1, 4, &err) != EX_OK) _exit(10);
    ex_stall_watch_beat(w, 7);
    pause_s(10.0); /* a hung rank */
    _exit(11);     /* the watchdog did not fire */
}

static void never_beats(void) {
    ex_stall_watch *w = NULL;
    ex_err err;
    if (ex_stall_watch_start(&w, 1.0, 0, 2, &err) != EX_OK) _exit(10);
    pause_s(10.0);
    _exit(11);
}

static void beats_then_stops(void) {
    ex_stall_watch *w = NULL;
    ex_err err;
    if (ex_stall_watch_start(&w, 1.0, 0, 2, &err) != EX_OK) _exit(10);
    for (int step = 1; step <= 40; step++) { /* 4 s of steps of 0.1 s: four timeouts (0.9 s of slack for a busy CI) */
        pause_s(0.1);
        ex_stall_watch_beat(w, step);
    }
    ex_stall_watch_stop(w);
    pause_s(1.0); /* stopped: nothing may fire now */
    _exit(0);
}

static void test_fires_after_the_timeout(void **state) {
    (void)state;
    char msg[2048];
    double took = 0;
    const int rc = in_child(never_beats_after_step_7, msg, sizeof msg, &took);
    if (rc != 3) fail_msg("exit status %d after %.2f s, stderr: %s", rc, took, msg);
    assert_true(took >= 1.0 && took < 4.0);
    if (!strstr(msg, "explora: error: rank 1 of 4: no training step finished in 1 s (since step 7)") ||
        !strstr(msg, "raise [run] stall_timeout_s"))
        fail_msg("message: %s", msg);
    print_message("fired after %.2f s (timeout 1 s)\n", took);
    assert_int_equal(in_child(never_beats, msg, sizeof msg, &took), 3);
    if (!strstr(msg, "rank 0 of 2: no training step finished in 1 s (since the run started)"))
        fail_msg("message: %s", msg);
}

static void test_beats_keep_it_quiet(void **state) {
    (void)state;
    char msg[2048];
    double took = 0;
    const int rc = in_child(beats_then_stops, msg, sizeof msg, &took);
    if (rc != 0 || msg[0]) fail_msg("exit status %d after %.2f s, stderr: %s", rc, took, msg);
    assert_true(took >= 5.0);
}

static void test_stop_is_prompt(void **state) {
    (void)state;
    ex_stall_watch *w = NULL;
    ex_err err;
    EXT_OK(ex_stall_watch_start(&w, 100.0, 0, 2, &err), &err);
    pause_s(0.05);
    const double t0 = mono_s();
    ex_stall_watch_stop(w);
    assert_true(mono_s() - t0 < 0.5);
    ex_stall_watch_stop(NULL); /* nothing to stop */
    ex_stall_watch_beat(NULL, 3);
}

static void test_refuses_a_timeout_that_is_not_positive(void **state) {
    (void)state;
    ex_stall_watch *w = (ex_stall_watch *)1;
    ex_err err;
    ex_err_clear(&err);
    assert_int_not_equal(ex_stall_watch_start(&w, 0.0, 0, 2, &err), EX_OK);
    assert_null(w);
    assert_non_null(strstr(err.msg, "timeout 0 s"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_after_the_timeout),
        cmocka_unit_test(test_beats_keep_it_quiet),
        cmocka_unit_test(test_stop_is_prompt),
        cmocka_unit_test(test_refuses_a_timeout_that_is_not_positive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
