/*
 * core/cli/cli_export.c — `explora export CONFIG --out FILE [--format F] [--checkpoint C]`:
 * the backbone of a run with its adapters merged into the base weights, as a
 * plain ViT in a chosen naming convention (dinov2, timm, hf, mae, hf-mae),
 * loadable by the reference implementations and by explora itself.
 *
 * The base weights come from [backbone] weights (or the backbone's init);
 * the trained tensors from C, by default [run] out/checkpoint.safetensors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "explora/model.h"
#include "explora/safetensors.h"

static ex_status run_export(const cli_args *a, ex_session *s, ex_backend *be, ex_err *err) {
    ex_model m;
    memset(&m, 0, sizeof m);
    ex_status st;
    ex_backbone_shape shape = {1, 0, 0, 0, 0, 1, 1, EX_F32}; /* export runs no training step */
    EX_CHECK(ex_model_image_size(s, &shape.height, &shape.width, err));
    EX_CHECK_GOTO(ex_model_build(&m, s, be, &shape, err), st, done);
    EX_CHECK_GOTO(ex_model_allocate(&m, err), st, done);
    EX_CHECK_GOTO(ex_model_load(&m, NULL, err), st, done);
    char ckpt[4200];
    if (a->checkpoint) {
        snprintf(ckpt, sizeof ckpt, "%s", a->checkpoint);
    } else {
        char out[4096];
        const ex_cfg_section run = {s->config, "run", ex_core_run_keys()};
        EX_CHECK_GOTO(ex_cfg_path(&run, "out", out, sizeof out, err), st, done);
        snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", out);
    }
    if (access(ckpt, R_OK) == 0) {
        int n = 0;
        EX_CHECK_GOTO(ex_model_load_trained(&m, ckpt, a->copy, &n, err), st, done);
        printf("loaded %d trained tensors from %s\n", n, ckpt);
    } else if (a->checkpoint) {
        EX_FAIL_GOTO(err, st, done, EX_E_IO, "cannot read checkpoint '%s'.", ckpt);
    } else {
        printf("no checkpoint at %s: exporting the base weights\n", ckpt);
    }
    for (int i = 0; i < m.npeft; i++) {
        const ex_peft_vtable *v = &m.peft_plugin[i]->vtable_copy.peft;
        if (v->merge) EX_CHECK_GOTO(v->merge(m.peft_self[i], err), st, done);
    }
    if (!m.vt->save)
        EX_FAIL_GOTO(err, st, done, EX_E_UNSUPPORTED, "backbone '%s' cannot export its weights", m.plugin->desc.name);
    EX_CHECK_GOTO(m.vt->save(m.self, a->out, a->format ? a->format : "auto", err), st, done);
    printf("wrote %s (%s names)\n", a->out, a->format ? a->format : "native");
done:
    ex_model_free(&m);
    return st;
}

int cli_export(const cli_args *a) {
    if (a->npositional != 1 || !a->out) {
        fprintf(stderr, "explora: error: usage: explora export CONFIG.ini --out FILE.safetensors "
                        "[--format dinov2|timm|hf|mae|hf-mae] [--checkpoint CKPT]\n");
        return CLI_USAGE;
    }
    return cli_run_session(a, run_export);
}
