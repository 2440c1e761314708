/*
 * plugins/unfreeze/unfreeze.c — the `unfreeze` PEFT strategy: make chosen
 * parameters of the (fully frozen) backbone trainable again, by name.
 *
 * Each key is its own switch, applied with ex_params_set_trainable globs over
 * the backbone's internal (official DINOv2) names:
 *
 *   blocks           "blocks.<i>.*" for each listed block (negative: from the end)
 *   norms            "*norm*": every LayerNorm (blocks.i.norm1/norm2 and the final norm),
 *                    ExPLoRA's rule "name contains 'norm'"
 *   cls_token        "cls_token"
 *   pos_embed        "pos_embed" (meaningful for learned tables only: MAE's fixed sin-cos
 *                    table gets no gradient from the backbone)
 *   patch_embed      "patch_embed.*"
 *   register_tokens  "register_tokens"
 *   mask_token       "mask_token"
 *   layerscale       "*.ls1.gamma", "*.ls2.gamma"
 *   biases           "*.bias" (BitFit)
 *   all              "*" (full fine-tuning)
 *
 * ExPLoRA D-[L]: blocks = -1, norms = true, cls_token = true (then `lora` on the
 * other blocks). A switch turned on that matches no parameter of the model
 * (register_tokens on a model without registers, layerscale without
 * LayerScale ...) is an error naming the key: it cannot do what was asked.
 * The strategy adds no parameters, no buffers and no hooks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/plugin.h"

#define UNFREEZE_MAX_BLOCKS 1024

/* A boolean switch and the globs it turns trainable. */
typedef struct unfreeze_switch {
    const char *key;
    const char *globs[3]; /* NULL-terminated */
} unfreeze_switch;

static const unfreeze_switch k_switches[] = {
    {"norms", {"*norm*", NULL, NULL}},
    {"cls_token", {"cls_token", NULL, NULL}},
    {"pos_embed", {"pos_embed", NULL, NULL}},
    {"patch_embed", {"patch_embed.*", NULL, NULL}},
    {"register_tokens", {"register_tokens", NULL, NULL}},
    {"mask_token", {"mask_token", NULL, NULL}},
    {"layerscale", {"*.ls1.gamma", "*.ls2.gamma", NULL}},
    {"biases", {"*.bias", NULL, NULL}},
    {"all", {"*", NULL, NULL}},
};
#define N_SWITCHES ((int)(sizeof k_switches / sizeof k_switches[0]))

typedef struct unfreeze {
    int on[N_SWITCHES];                  /* k_switches[i] requested */
    int64_t blocks[UNFREEZE_MAX_BLOCKS]; /* as given (negative from the end) */
    int nblocks;
    char section[96];
} unfreeze;

static const ex_key_spec unfreeze_keys[] = {
    {"blocks", EX_KEY_INT_LIST, "", -4096, 4095, NULL,
     "blocks made fully trainable, e.g. '-1' (last: ExPLoRA [L]) or '0, -1' ([1,L]); negative counts from the end"},
    {"norms", EX_KEY_BOOL, "false", EX_NORANGE, NULL, "every LayerNorm: norm1/norm2 of all blocks and the final norm"},
    {"cls_token", EX_KEY_BOOL, "false", EX_NORANGE, NULL, "the class token"},
    {"pos_embed", EX_KEY_BOOL, "false", EX_NORANGE, NULL, "the learned position table"},
    {"patch_embed", EX_KEY_BOOL, "false", EX_NORANGE, NULL, "the patch embedding (weight and bias)"},
    {"register_tokens", EX_KEY_BOOL, "false", EX_NORANGE, NULL, "the register tokens (DINOv2 _reg models)"},
    {"mask_token", EX_KEY_BOOL, "false", EX_NORANGE, NULL, "iBOT's mask token"},
    {"layerscale", EX_KEY_BOOL, "false", EX_NORANGE, NULL, "LayerScale gammas (ls1, ls2) of every block"},
    {"biases", EX_KEY_BOOL, "false", EX_NORANGE, NULL, "every bias (BitFit)"},
    {"all", EX_KEY_BOOL, "false", EX_NORANGE, NULL, "everything registered so far (full fine-tuning)"},
    EX_KEY_END,
};

static ex_status unfreeze_create(const ex_cfg_section *cfg, void **self, ex_err *err) {
    unfreeze *u = calloc(1, sizeof *u);
    EX_ENSURE(u, err, EX_E_NOMEM, "unfreeze: out of memory");
    snprintf(u->section, sizeof u->section, "%s", cfg->section ? cfg->section : "peft.unfreeze");
    ex_status st = ex_cfg_int_list(cfg, "blocks", u->blocks, UNFREEZE_MAX_BLOCKS, &u->nblocks, err);
    for (int i = 0; i < N_SWITCHES && st == EX_OK; i++) st = ex_cfg_bool(cfg, k_switches[i].key, &u->on[i], err);
    if (st != EX_OK) {
        free(u);
        return st;
    }
    *self = u;
    return EX_OK;
}

static void unfreeze_destroy(void *self) { free(self); }

static ex_status unfreeze_apply(void *self, ex_peft_target *t, ex_err *err) {
    unfreeze *u = self;
    EX_ENSURE(t && t->params, err, EX_E_INVALID, "unfreeze: no parameters to work on");
    if (u->nblocks > 0) {
        const int64_t depth = t->info.depth;
        EX_ENSURE(depth >= 1, err, EX_E_CONFIG, "[%s] blocks: the backbone has no blocks", u->section);
        uint8_t *mask = malloc((size_t)depth); /* (depth) 1 = unfreeze the block */
        EX_ENSURE(mask, err, EX_E_NOMEM, "unfreeze: out of memory");
        char what[128];
        snprintf(what, sizeof what, "[%s] blocks", u->section);
        ex_status st = ex_peft_block_mask(u->blocks, u->nblocks, depth, mask, what, err);
        for (int64_t b = 0; b < depth && st == EX_OK; b++) {
            if (!mask[b]) continue;
            char glob[64];
            int matched = 0;
            snprintf(glob, sizeof glob, "blocks.%lld.*", (long long)b);
            st = ex_params_set_trainable(t->params, glob, 1, &matched, err);
            if (st == EX_OK && matched == 0)
                st = ex_err_set(err, EX_E_CONFIG, __FILE__, __LINE__,
                                "[%s] blocks: the backbone has no parameters named '%s'.", u->section, glob);
        }
        free(mask);
        EX_CHECK(st);
    }
    for (int i = 0; i < N_SWITCHES; i++) {
        if (!u->on[i]) continue;
        int total = 0;
        for (int g = 0; g < 3 && k_switches[i].globs[g]; g++) {
            int matched = 0;
            EX_CHECK(ex_params_set_trainable(t->params, k_switches[i].globs[g], 1, &matched, err));
            total += matched;
        }
        EX_ENSURE(total > 0, err, EX_E_CONFIG,
                  "[%s] %s = true, but this model has no such parameters (nothing matches '%s'); remove the key.",
                  u->section, k_switches[i].key, k_switches[i].globs[0]);
    }
    return EX_OK;
}

static const ex_peft_vtable unfreeze_vtable = {
    /* .create  = */ unfreeze_create,
    /* .destroy = */ unfreeze_destroy,
    /* .apply   = */ unfreeze_apply,
    /* .plan    = */ NULL,
    /* .init    = */ NULL,
    /* .merge   = */ NULL,
    /* .unmerge = */ NULL,
};

static const ex_plugin_desc unfreeze_desc = EX_PLUGIN_DESC(
    EX_PLUGIN_PEFT, "unfreeze", "0.1.0",
    "make chosen parameters trainable: whole blocks, norms, tokens, embeddings, LayerScale, biases (BitFit), all",
    unfreeze_keys, &unfreeze_vtable);

EX_PLUGIN_ENTRY { return &unfreeze_desc; }
