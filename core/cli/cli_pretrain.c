/*
 * core/cli/cli_pretrain.c — `explora pretrain CONFIG [--dry-run]`: extended
 * self-supervised pre-training with the configured backbone, PEFT stack,
 * objective, dataset and backend. --dry-run builds everything without
 * weights or data, prints the trainable counts and the memory plan, and exits.
 * --resume continues the run in [run] out from its checkpoint. Ctrl-C (or
 * SIGTERM) stops after the current step and writes a checkpoint.
 * --profile-step N runs on the timing wrapper of the backend (cli_timing.h) and, for step N only,
 * synchronises after every backend call and prints where the step's time went: per op class, the
 * slowest slots, and the model FLOP rate of the GEMMs and attention inside their calls. The wrapper
 * has no collective slots, so several processes sum gradients through MPI on the host while profiling.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_timing.h"
#include "explora/trainer.h"

/* Ctrl-C: ask the loop to stop after the current step and write a checkpoint.
 * A second Ctrl-C falls back to the default action. (CLI-only state.) */
static volatile sig_atomic_t g_stop = 0;

static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
    signal(SIGINT, SIG_DFL);
}

/* --profile-step: the timer and the step to profile. */
typedef struct profile_ctx {
    bench_timer *T;
    int64_t step;
    double t0;
    int started; /* timing began at the end of step N - 1 */
    int said;    /* the profile, or why there is none, was printed */
} profile_ctx;

static void profile_begin(profile_ctx *p) {
    p->T->inner->vt.synchronize(p->T->inner->ctx);
    cli_timer_reset(p->T);
    p->T->sync_each = 1;
    p->t0 = cli_now_s();
    p->started = 1;
}

static void profile_print(const profile_ctx *p, FILE *out) {
    const bench_timer *T = p->T;
    const double wall = cli_now_s() - p->t0;
    double in = 0.0;
    for (int c = 0; c < BC_COUNT; c++) in += T->t[BP_FWD][c];
    fprintf(out,
            "profile of step %lld (synchronised after every backend call: host and device do not overlap, and "
            "each call's launch latency counts):\n",
            (long long)p->step);
    fprintf(out, "  wall %.1f ms: %.1f ms inside backend calls, %.1f ms on the host (data, glue, logging)\n",
            wall * 1e3, in * 1e3, (wall - in > 0 ? wall - in : 0.0) * 1e3);
    fprintf(out, "  by class:");
    for (int c = 0; c < BC_COUNT; c++)
        fprintf(out, " %s %.1f ms (%.0f%%)%s", cli_timing_class_names[c], T->t[BP_FWD][c] * 1e3,
                in > 0 ? 100.0 * T->t[BP_FWD][c] / in : 0.0, c + 1 < BC_COUNT ? "," : "\n");
    const double mm = T->t[BP_FWD][BC_GEMM] + T->t[BP_FWD][BC_ATTN];
    fprintf(out, "  GEMMs and attention: %.4g GFLOP (model FLOPs), %.4g TFLOP/s inside their calls, %.4g TFLOP/s over "
                 "the step\n",
            T->flops[BP_FWD] * 1e-9, mm > 0 ? T->flops[BP_FWD] / mm * 1e-12 : 0.0,
            wall > 0 ? T->flops[BP_FWD] / wall * 1e-12 : 0.0);
    fprintf(out, "  slowest backend slots:\n");
    cli_print_slots(out, T->slot_name, T->slot_s, T->slot_calls, T->nslots, 12);
    fflush(out);
}

/* ex_trainer.after_step: start timing after step N-1, print after step N. The first step of a run (N = 1, or
 * the step a --resume starts at) also does the run's setup and first loads, so it cannot be profiled; a step
 * this run started past is said once, at its first step. */
static ex_status profile_after_step(void *ctx, ex_trainer *t, int64_t step, ex_err *err) {
    (void)t, (void)err;
    profile_ctx *p = ctx;
    if (!p->started && !p->said && step >= p->step) {
        printf("profile: step %d cannot be profiled: this run's first step is %lld, and the step after it is the "
               "first that can be\n",
               (int)p->step, (long long)(step));
        p->said = 1;
    }
    if (step == p->step - 1) profile_begin(p);
    if (step == p->step && p->started) {
        p->T->inner->vt.synchronize(p->T->inner->ctx);
        profile_print(p, stdout);
        p->T->sync_each = 0;
        p->said = 1;
    }
    return EX_OK;
}

int cli_pretrain(const cli_args *a) {
    if (a->npositional != 1) {
        fprintf(stderr, "explora: error: usage: explora pretrain CONFIG.ini [--dry-run] [--resume] [--profile-step N] [--set section.key=value ...]\n");
        return CLI_USAGE;
    }
    ex_session s;
    ex_err err;
    ex_err_clear(&err);
    ex_session_options opt = a->session;
    opt.config_path = a->positional[0];
    if (ex_session_open(&s, &opt, &err) != EX_OK) return cli_report(a, &err);
    int rc = CLI_OK;
    ex_backend be;
    if (ex_session_validate(&s, &err) != EX_OK || ex_session_backend(&s, &be, &err) != EX_OK) {
        rc = cli_report(a, &err);
        ex_session_close(&s);
        return rc;
    }
    /* --profile-step: the trainer runs on the timing wrapper (destroy only the real backend) */
    bench_timer timer;
    ex_backend timed;
    profile_ctx prof = {&timer, a->profile_step, 0.0, 0, 0};
    ex_backend *run_be = &be;
    if (a->profile_step > 0 && !a->dry_run) {
        cli_timing_backend(&timed, &be, &timer);
        run_be = &timed;
    }
    ex_trainer t;
    if (ex_trainer_setup(&t, &s, run_be, &err) != EX_OK) {
        rc = cli_report(a, &err);
    } else {
        ex_trainer_print(&t, stdout);
        fflush(stdout);
        t.resume = a->resume;
        t.stop = &g_stop;
        if (a->dry_run) {
            if (ex_trainer_print_teacher_plan(&t, stdout, &err) != EX_OK) rc = cli_report(a, &err);
        } else {
            signal(SIGINT, on_sigint);
            signal(SIGTERM, on_sigint);
            if (a->profile_step > 0) {
                t.after_step = profile_after_step;
                t.after_step_ctx = &prof;
            }
            if (ex_trainer_run(&t, stdout, &err) != EX_OK) rc = cli_report(a, &err);
            else if (a->profile_step > 0 && !prof.said)
                printf("profile: step %d was not reached (the run ended at step %lld)\n", a->profile_step,
                       (long long)t.optim.step);
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
        }
    }
    ex_trainer_free(&t);
    ex_backend_destroy(&be);
    ex_session_close(&s);
    return rc;
}
