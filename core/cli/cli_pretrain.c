/*
 * core/cli/cli_pretrain.c — `explora pretrain CONFIG [--dry-run]`: extended
 * self-supervised pre-training with the configured backbone, PEFT stack,
 * objective, dataset and backend. --dry-run builds everything without
 * weights or data, prints the trainable counts and the memory plan, and exits.
 * --resume continues the run in [run] out from its checkpoint. Ctrl-C (or
 * SIGTERM) stops after the current step and writes a checkpoint.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "explora/trainer.h"

/* Ctrl-C: ask the loop to stop after the current step and write a checkpoint.
 * A second Ctrl-C falls back to the default action. (CLI-only state.) */
static volatile sig_atomic_t g_stop = 0;

static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
    signal(SIGINT, SIG_DFL);
}

int cli_pretrain(const cli_args *a) {
    if (a->npositional != 1) {
        fprintf(stderr, "explora: error: usage: explora pretrain CONFIG.ini [--dry-run] [--resume] [--set section.key=value ...]\n");
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
    ex_trainer t;
    if (ex_trainer_setup(&t, &s, &be, &err) != EX_OK) {
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
            if (ex_trainer_run(&t, stdout, &err) != EX_OK) rc = cli_report(a, &err);
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
        }
    }
    ex_trainer_free(&t);
    ex_backend_destroy(&be);
    ex_session_close(&s);
    return rc;
}
