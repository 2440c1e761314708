/*
 * plugins/vit/vit_plugin.c — the `vit` backbone plugin: descriptor, lifecycle
 * and weight loading. DINOv2-style (LayerScale, registers, SwiGLU, learned
 * position grid) and MAE/timm-style (fixed sin-cos table) ViTs.
 */
#include <stdlib.h>
#include <string.h>

#include "explora/plugin.h"
#include "vit_internal.h"

static ex_status vit_create(const ex_cfg_section *cfg, ex_backend *be, ex_params *params, void **self, ex_err *err) {
    vit *v = calloc(1, sizeof *v);
    EX_ENSURE(v, err, EX_E_NOMEM, "vit: out of memory");
    v->be = be;
    v->params = params;
    ex_status st = vit_arch_from_config(cfg, &v->a, v->format, sizeof v->format, err);
    const char *copy = "auto";
    if (st == EX_OK) st = ex_cfg_string(cfg, "checkpoint_copy", &copy, err);
    snprintf(v->copy, sizeof v->copy, "%s", copy);
    if (st == EX_OK) st = vit_register_params(v, err);
    if (st == EX_OK && v->a.mask_token) {
        ex_param *p = ex_params_find(params, "mask_token");
        if (p) p->optional = 1; /* timm drops it; DINOv2 initialises it to zeros */
    }
    if (st != EX_OK) {
        free(v->blocks);
        free(v);
        return st;
    }
    *self = v;
    return EX_OK;
}

static void vit_destroy(void *self) {
    vit *v = self;
    if (!v) return;
    free(v->blocks);
    free(v->block_acts);
    free(v);
}

static ex_status vit_info(void *self, ex_backbone_info *out) {
    const vit *v = self;
    memset(out, 0, sizeof *out);
    out->dim = v->a.dim;
    out->depth = v->a.depth;
    out->heads = v->a.heads;
    out->patch = v->a.patch;
    out->channels = v->a.channels;
    out->registers = v->a.registers + v->prompts; /* prompts sit with the registers: learned, not patches */
    out->grid_h = v->a.grid_h;
    out->grid_w = v->a.grid_w;
    out->has_cls = 1;
    return EX_OK;
}

static ex_status vit_load(void *self, const char *path, const char *format, ex_err *err) {
    vit *v = self;
    ex_weights f;
    EX_CHECK(ex_weights_open(&f, path, err));
    char saved[32];
    snprintf(saved, sizeof saved, "%s", v->format);
    const char *fmt = format && format[0] && strcmp(format, "auto") != 0 ? format : v->format;
    if (strcmp(fmt, "auto") == 0) fmt = vit_detect_format(&f);
    if (!fmt[0]) {
        ex_weights_close(&f);
        EX_FAIL(err, EX_E_FORMAT, "%s: cannot tell which naming convention this checkpoint uses. Set [backbone] format.",
                path);
    }
    snprintf(v->format, sizeof v->format, "%s", fmt);
    /* a training export holds several copies: read the selected one (teacher by default) */
    vit_select_copy(&f, v->copy, v->select, sizeof v->select);
    ex_status st = ex_params_load(v->params, v->be, &f, vit_map_name, v, 1, err);
    if (st != EX_OK && v->select[0]) ex_err_prefix(err, "copy '%.*s': ", (int)strlen(v->select) - 1, v->select);
    if (st != EX_OK) ex_err_prefix(err, "vit (format %s): ", v->format);
    snprintf(v->format, sizeof v->format, "%s", saved);
    ex_weights_close(&f);
    return st;
}

static const ex_backbone_vtable vit_vtable = {
    /* .create       = */ vit_create,
    /* .destroy      = */ vit_destroy,
    /* .info         = */ vit_info,
    /* .plan         = */ vit_plan,
    /* .ready        = */ vit_ready,
    /* .load         = */ vit_load,
    /* .forward      = */ vit_forward,
    /* .backward     = */ vit_backward,
    /* .site         = */ vit_site,
    /* .block_output = */ vit_block_output,
    /* .init         = */ vit_init,
    /* .save         = */ vit_save,
    /* .add_prompts  = */ vit_add_prompts,
    /* .attention    = */ vit_attention,
};

static const ex_plugin_desc vit_desc =
    EX_PLUGIN_DESC(EX_PLUGIN_BACKBONE, "vit", "0.1.0", "Vision Transformer: DINOv2 (LayerScale, registers, SwiGLU) and MAE/timm",
                   vit_keys, &vit_vtable);

EX_PLUGIN_ENTRY { return &vit_desc; }
