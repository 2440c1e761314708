/*
 * plugins/vit/vit_init.c — initialisation for training a ViT from scratch,
 * as DINOv2 and timm do it:
 *   Linear weights      truncated normal, std 0.02 (cut at +-2, i.e. plain normal in practice), biases 0
 *   patch embedding     uniform +-1/sqrt(fan_in) (PyTorch's Conv2d default), bias 0
 *   LayerNorm           weight 1, bias 0
 *   LayerScale gammas   [backbone] layerscale_init (DINOv2 trains from 1e-5)
 *   cls / registers     normal, std 1e-6 (DINOv2); mask token 0
 *   position table      truncated normal std 0.02 (learned) or MAE's sin-cos table (fixed)
 * All draws come from the given stream on the host, in registration order.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vit_internal.h"

typedef enum { FILL_NORMAL, FILL_UNIFORM, FILL_CONST } fill_kind;

static ex_status fill(vit *v, const ex_param *dst, int64_t n, fill_kind kind, double a, ex_rng *rng, ex_err *err) {
    float *h = malloc(sizeof(float) * (size_t)(n ? n : 1));
    EX_ENSURE(h, err, EX_E_NOMEM, "vit: out of memory initialising");
    for (int64_t i = 0; i < n; i++) {
        if (kind == FILL_CONST) {
            h[i] = (float)a;
        } else if (kind == FILL_UNIFORM) {
            h[i] = (float)(a * (2.0 * ex_rng_next_uniform(rng) - 1.0));
        } else {
            double x;
            do {
                x = a * ex_rng_normal_at(rng->key, rng->offset++, 0);
            } while (fabs(x) > 2.0);
            h[i] = (float)x;
        }
    }
    ex_status st = ex_params_upload(v->be, dst, 0, h, n, err); /* in the parameter's storage dtype */
    free(h);
    return st;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

ex_status vit_init(void *self, ex_rng *rng, ex_err *err) {
    vit *v = self;
    for (int i = 0; i < v->params->count; i++) {
        ex_param *p = v->params->items[i];
        const char *n = p->value.name;
        const ex_param *d = p;
        const int64_t numel = ex_tensor_numel(&p->value);
        if (strncmp(n, "blocks.", 7) != 0 && strncmp(n, "norm.", 5) != 0 && strcmp(n, "cls_token") != 0 &&
            strcmp(n, "register_tokens") != 0 && strcmp(n, "mask_token") != 0 && strcmp(n, "pos_embed") != 0 &&
            strncmp(n, "patch_embed.", 12) != 0)
            continue; /* not the backbone's (an adapter or a head registered later) */
        ex_status st;
        if (strcmp(n, "pos_embed") == 0) {
            if (v->a.pos == VIT_POS_SINCOS) continue; /* the fixed table, written by ready() */
            st = fill(v, d, numel, FILL_NORMAL, 0.02, rng, err);
        } else if (strcmp(n, "cls_token") == 0 || strcmp(n, "register_tokens") == 0) {
            st = fill(v, d, numel, FILL_NORMAL, 1e-6, rng, err);
        } else if (strcmp(n, "mask_token") == 0 || ends_with(n, ".bias")) {
            st = fill(v, d, numel, FILL_CONST, 0.0, rng, err);
        } else if (strstr(n, "norm") && ends_with(n, ".weight")) {
            st = fill(v, d, numel, FILL_CONST, 1.0, rng, err);
        } else if (ends_with(n, ".gamma")) {
            st = fill(v, d, numel, FILL_CONST, v->a.layerscale_init, rng, err);
        } else if (strcmp(n, "patch_embed.proj.weight") == 0) {
            st = fill(v, d, numel, FILL_UNIFORM, 1.0 / sqrt((double)v->patch_embed.in), rng, err);
        } else {
            st = fill(v, d, numel, FILL_NORMAL, 0.02, rng, err);
        }
        EX_CHECK(st);
    }
    return EX_OK;
}
