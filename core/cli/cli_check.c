/*
 * core/cli/cli_check.c — `explora check CONFIG`: validate the whole config
 * (unknown sections and keys, types, ranges, plugins), start its backend, and
 * build its backbone without weights or data to report the trainable
 * parameters and the memory plan of a step (nothing is allocated). Also says
 * which device the backend took and how several processes would reduce.
 */
#include <stdio.h>

#include "cli.h"
#include "explora/model.h"

/* Build the backbone without weights or data and print its counts and memory plan. */
static int report_model(const cli_args *a, const ex_session *s, ex_backend *be) {
    ex_err err;
    ex_err_clear(&err);
    ex_backbone_shape shape = {0};
    const ex_cfg_section optim = {s->config, "optim", ex_core_optim_keys()};
    if (ex_cfg_int(&optim, "batch", &shape.batch, &err) != EX_OK ||
        ex_model_image_size(s, &shape.height, &shape.width, &err) != EX_OK ||
        ex_model_activation_dtype(s, &shape.act_dtype, &err) != EX_OK)
        return cli_report(a, &err);
    ex_model m;
    int rc = CLI_OK;
    int narrow = 0;
    size_t saved = 0;
    if (ex_model_create(&m, s, be, &err) != EX_OK || ex_model_apply_frozen_dtype(&m, s, &narrow, &saved, &err) != EX_OK ||
        ex_model_plan(&m, &shape, &err) != EX_OK) {
        rc = cli_report(a, &err);
    } else {
        if (narrow)
            printf("frozen weights: %d tensors kept in bf16 ([optim] frozen_dtype), %.1f MiB saved\n", narrow,
                   (double)saved / 1048576.0);
        if (shape.act_dtype == EX_BF16)
            printf("activations: the blocks' GEMM inputs and attention's input and output kept in bf16 ([optim] activation_dtype)\n");
        ex_model_print(&m, stdout);
    }
    ex_model_free(&m);
    return rc;
}

int cli_check(const cli_args *a) {
    if (a->npositional != 1) {
        fprintf(stderr, "explora: error: usage: explora check CONFIG.ini [--set section.key=value ...]\n");
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
    } else {
        ex_device_info info = {0};
        if (be.vt.device_info && be.vt.device_info(be.ctx, &info) == EX_OK)
            printf("backend %s: %s\n", be.name, info.name);
        else
            printf("backend %s\n", be.name);
        char key[128] = "";
        if (be.vt.device_key && be.vt.device_key(be.ctx, key, sizeof key) == 0 && key[0]) {
            key[sizeof key - 1] = '\0';
            printf("device: %s\n", key);
        }
        printf("several processes (mpirun) would sum gradients %s\n",
               be.vt.comm_init ? "in device memory by the backend's collectives, each process on its own device"
                               : "through host memory by MPI");
        if (ex_config_has_section(s.config, "backbone")) rc = report_model(a, &s, &be);
        printf("effective config:\n");
        if (ex_config_write(s.config, stdout, &err) != EX_OK) rc = cli_report(a, &err);
        ex_backend_destroy(&be);
        if (rc == CLI_OK) printf("config %s is valid.\n", a->positional[0]);
    }
    ex_session_close(&s);
    return rc;
}
