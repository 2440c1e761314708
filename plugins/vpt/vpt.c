/*
 * plugins/vpt/vpt.c — the `vpt` PEFT strategy: visual prompt tuning, shallow
 * variant (Jia et al., 2022). `tokens` learned prompt tokens are inserted
 * after the cls (and register) tokens at the input of the first block; they
 * carry no position embedding and are trained, everything else stays as the
 * earlier strategies of the stack left it (usually frozen; add a head for
 * classification). Unlike LoRA this is not an adapter on a linear site: it
 * changes the token sequence, through the backbone's add_prompts slot.
 *
 * Init: uniform(-b, b) with b = sqrt(6 / (3 * patch * patch + dim)), the
 * Xavier-style bound of the reference implementation, from the seeded stream.
 * Prompts cannot be merged into a plain ViT: merge (export) is refused.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "explora/plugin.h"

typedef struct vpt {
    int64_t tokens;
    ex_params *params;
    ex_backend *be;
    ex_backbone_info info;
} vpt;

static const ex_key_spec vpt_keys[] = {
    {"tokens", EX_KEY_INT, "10", 1, 4096, NULL, "prompt tokens inserted before the first block"},
    EX_KEY_END,
};

static ex_status vpt_create(const ex_cfg_section *cfg, void **self, ex_err *err) {
    vpt *p = calloc(1, sizeof *p);
    EX_ENSURE(p, err, EX_E_NOMEM, "vpt: out of memory");
    ex_status st = ex_cfg_int(cfg, "tokens", &p->tokens, err);
    if (st != EX_OK) {
        free(p);
        return st;
    }
    *self = p;
    return EX_OK;
}

static void vpt_destroy(void *self) { free(self); }

static ex_status vpt_apply(void *self, ex_peft_target *t, ex_err *err) {
    vpt *p = self;
    EX_ENSURE(t->bb->add_prompts, err, EX_E_UNSUPPORTED, "vpt: this backbone cannot take prompt tokens");
    p->params = t->params;
    p->be = t->be;
    p->info = t->info;
    return t->bb->add_prompts(t->bb_self, p->tokens, err);
}

static ex_status vpt_init(void *self, ex_rng *rng, ex_err *err) {
    vpt *p = self;
    ex_param *prm = ex_params_find(p->params, "prompt_tokens");
    EX_ENSURE(prm && prm->value.data, err, EX_E_INTERNAL, "vpt: prompt_tokens not allocated");
    const int64_t n = ex_tensor_numel(&prm->value);
    const double b = sqrt(6.0 / (double)(3 * p->info.patch * p->info.patch + p->info.dim));
    float *h = malloc(sizeof(float) * (size_t)n);
    EX_ENSURE(h, err, EX_E_NOMEM, "vpt: out of memory");
    for (int64_t i = 0; i < n; i++) h[i] = (float)(b * (2.0 * ex_rng_next_uniform(rng) - 1.0));
    ex_status st = ex_be_upload(p->be, prm->value.data, h, sizeof(float) * (size_t)n, err);
    free(h);
    return st;
}

static ex_status vpt_merge(void *self, ex_err *err) {
    (void)self;
    EX_FAIL(err, EX_E_UNSUPPORTED,
            "vpt: prompt tokens cannot be merged into a plain ViT, so a VPT model cannot be exported; evaluate it "
            "with its checkpoint (embed/linprobe --checkpoint) instead.");
}

static const ex_peft_vtable vpt_vtable = {
    /* .create  = */ vpt_create,
    /* .destroy = */ vpt_destroy,
    /* .apply   = */ vpt_apply,
    /* .plan    = */ NULL,
    /* .init    = */ vpt_init,
    /* .merge   = */ vpt_merge,
    /* .unmerge = */ NULL,
};

static const ex_plugin_desc vpt_desc = EX_PLUGIN_DESC(EX_PLUGIN_PEFT, "vpt", "0.1.0",
                                                      "visual prompt tuning (shallow): learned tokens before the first block",
                                                      vpt_keys, &vpt_vtable);

EX_PLUGIN_ENTRY { return &vpt_desc; }
