/*
 * plugins/mae/mae_plugin.c — the `mae` objective plugin: config keys,
 * lifecycle and decoder checkpoint loading (facebookresearch/mae
 * models_mae.py semantics; ExPLoRA's MAE variant with decoder_train = norms
 * and decoder_lora_rank = 8).
 *
 * What trains in the decoder (decoder_train):
 *   all    every decoder tensor except decoder_pos_embed (MAE pre-training)
 *   norms  decoder_blocks.i.norm1/norm2 and decoder_norm (ExPLoRA's --unfreeze_norm)
 *   none   nothing
 * LoRA tensors (decoder_lora_rank > 0: q and v of every decoder block, scale
 * 1/rank as ExPLoRA's loralib copy) always train. decoder_pos_embed is MAE's
 * fixed sin-cos table: never trained.
 *
 * init(rng), when no checkpoint provides the decoder (MAE's _init_weights),
 * in registration order, each random tensor one draw of numel values from rng:
 * Linear weights xavier_uniform, biases 0, LayerNorm (1, 0), mask_token
 * N(0, 0.02^2), decoder_pos_embed the sin-cos table, LoRA A
 * U(-1/sqrt(Dd), 1/sqrt(Dd)) and B 0. load() may follow init(): it replaces
 * whatever the checkpoint holds.
 *
 * load(path): safetensors or a PyTorch .pth (e.g. mae_visualize_vit_large.pth, {"model": state_dict});
 * MAE names, optionally under "model." / "module."; encoder tensors are ignored; every decoder tensor
 * but decoder_pos_embed (and LoRA) is required; a decoder_pos_embed for another grid is dropped.
 *
 * Backbones with register tokens: the registers are dropped before the decoder
 * (MAE has none) and get no gradient from it.
 *
 * The self pointer starts with an mae_probe (mae_probe.h) for tests.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "explora/plugin.h"
#include "explora/weights.h"
#include "mae_internal.h"

static const ex_key_spec mae_keys[] = {
    {"mask_ratio", EX_KEY_FLOAT, "0.75", 0.0, 1.0, NULL,
     "fraction of the patches removed per image (kept: int(L * (1 - mask_ratio)), at least 1, fewer than L)"},
    {"norm_pix_loss", EX_KEY_BOOL, "true", EX_NORANGE, NULL,
     "normalise each target patch by its mean and unbiased variance (eps 1e-6)"},
    {"decoder_dim", EX_KEY_INT, "512", 4, 65536, NULL, "decoder width (a multiple of 4 and of decoder_heads)"},
    {"decoder_depth", EX_KEY_INT, "8", 1, 1024, NULL, "decoder blocks"},
    {"decoder_heads", EX_KEY_INT, "16", 1, 1024, NULL, "decoder attention heads"},
    {"decoder_hidden", EX_KEY_INT, "-1", -1, 1048576, NULL, "decoder MLP width (-1: 4 * decoder_dim)"},
    {"decoder_train", EX_KEY_ENUM, "all", EX_NORANGE, "all|norms|none",
     "what trains in the decoder: all (MAE; not decoder_pos_embed), norms (ExPLoRA, with LoRA), none"},
    {"decoder_lora_rank", EX_KEY_INT, "0", 0, 4096, NULL,
     "LoRA rank on q and v of every decoder block (ExPLoRA: 8; scale 1/rank); 0: none"},
    {"image_size", EX_KEY_INT_LIST, "224", 1, 65536, NULL,
     "size of the view: 'side' or 'height, width' (multiples of the backbone's patch)"},
    {"flip", EX_KEY_FLOAT, "0.5", 0.0, 1.0, NULL, "probability of a horizontal flip of the view"},
    {"crop_scale", EX_KEY_FLOAT_LIST, "0.2, 1.0", 1e-6, 1.0, NULL,
     "RandomResizedCrop area range 'min, max' (aspect ratio 3/4 .. 4/3)"},
    {"weights", EX_KEY_PATH, "", EX_NORANGE, NULL,
     "checkpoint holding the decoder (mae_visualize_*, *_full, or a previous explora run); empty: initialise it"},
    EX_KEY_END,
};

static void mae_destroy(void *self) {
    mae *m = self;
    if (!m) return;
    free(m->blocks);
    free(m->lora);
    free(m->own);
    free(m->block_acts);
    free(m->noise);
    free(m->sort_keys);
    free(m->ids_keep);
    free(m->ids_restore);
    free(m->idx_full);
    free(m->maskf);
    free(m->mask);
    free(m->table);
    free(m);
}

static ex_status read_config(mae *m, const ex_cfg_section *cfg, ex_err *err) {
    const char *sec = cfg->section ? cfg->section : "objective";
    EX_CHECK(ex_cfg_float(cfg, "mask_ratio", &m->mask_ratio, err));
    EX_CHECK(ex_cfg_bool(cfg, "norm_pix_loss", &m->norm_pix, err));
    EX_CHECK(ex_cfg_int(cfg, "decoder_dim", &m->ddim, err));
    EX_CHECK(ex_cfg_int(cfg, "decoder_depth", &m->ddepth, err));
    EX_CHECK(ex_cfg_int(cfg, "decoder_heads", &m->dheads, err));
    EX_CHECK(ex_cfg_int(cfg, "decoder_hidden", &m->dhidden, err));
    if (m->dhidden == -1) m->dhidden = 4 * m->ddim;
    EX_ENSURE(m->dhidden >= 1, err, EX_E_CONFIG, "[%s] decoder_hidden must be -1 or at least 1.", sec);
    EX_CHECK(ex_cfg_enum(cfg, "decoder_train", &m->train_mode, err));
    EX_CHECK(ex_cfg_int(cfg, "decoder_lora_rank", &m->lora_rank, err));
    int64_t size[2];
    int n = 0;
    EX_CHECK(ex_cfg_int_list(cfg, "image_size", size, 2, &n, err));
    EX_ENSURE(n == 1 || n == 2, err, EX_E_CONFIG, "[%s] image_size takes 'side' or 'height, width'.", sec);
    m->height = size[0];
    m->width = n == 2 ? size[1] : size[0];
    EX_CHECK(ex_cfg_float(cfg, "flip", &m->flip, err));
    double sc[2];
    EX_CHECK(ex_cfg_float_list(cfg, "crop_scale", sc, 2, &n, err));
    EX_ENSURE(n == 2 && sc[0] <= sc[1], err, EX_E_CONFIG, "[%s] crop_scale takes 'min, max' with min <= max.", sec);
    m->scale_min = sc[0];
    m->scale_max = sc[1];
    EX_ENSURE(m->ddim % m->dheads == 0, err, EX_E_CONFIG, "[%s] decoder_dim = %lld is not a multiple of decoder_heads = %lld.",
              sec, (long long)m->ddim, (long long)m->dheads);
    EX_ENSURE(m->ddim % 4 == 0, err, EX_E_CONFIG,
              "[%s] decoder_dim = %lld must be a multiple of 4 (the 2-D sin-cos position table).", sec, (long long)m->ddim);
    return EX_OK;
}

static ex_status derive(mae *m, const ex_objective_env *env, const char *sec, ex_err *err) {
    const ex_backbone_info *in = &env->info;
    EX_ENSURE(in->has_cls, err, EX_E_CONFIG, "mae: the backbone has no cls token (MAE's decoder needs one).");
    EX_ENSURE(env->batch >= 1, err, EX_E_INVALID, "mae: batch must be at least 1 (got %lld)", (long long)env->batch);
    m->patch = in->patch;
    m->channels = in->channels;
    m->dim = in->dim;
    m->registers = in->registers;
    m->Bmax = env->batch;
    EX_ENSURE(m->patch >= 1 && m->height % m->patch == 0 && m->width % m->patch == 0, err, EX_E_CONFIG,
              "[%s] image_size %lldx%lld is not a multiple of the backbone's patch size %lld.", sec,
              (long long)m->height, (long long)m->width, (long long)m->patch);
    m->gh = m->height / m->patch;
    m->gw = m->width / m->patch;
    m->L = m->gh * m->gw;
    m->K = m->patch * m->patch * m->channels;
    m->keep = (int64_t)((double)m->L * (1.0 - m->mask_ratio)); /* MAE: int(L * (1 - mask_ratio)) */
    EX_ENSURE(m->keep >= 1 && m->keep < m->L, err, EX_E_CONFIG,
              "[%s] mask_ratio = %g keeps %lld of %lld patches: at least one must be kept and one removed.", sec,
              m->mask_ratio, (long long)m->keep, (long long)m->L);
    EX_ENSURE(!m->norm_pix || m->K >= 2, err, EX_E_CONFIG,
              "[%s] norm_pix_loss needs at least 2 values per patch (patch %lld, %lld channels).", sec,
              (long long)m->patch, (long long)m->channels);
    return EX_OK;
}

static ex_status alloc_host(mae *m, ex_err *err) {
    const int64_t B = m->Bmax, L = m->L;
    m->noise = malloc(sizeof(float) * (size_t)(B * L));
    m->sort_keys = malloc(sizeof *m->sort_keys * (size_t)L);
    m->ids_keep = malloc(sizeof(int32_t) * (size_t)(B * m->keep));
    m->ids_restore = malloc(sizeof(int32_t) * (size_t)(B * L));
    m->idx_full = malloc(sizeof(int32_t) * (size_t)(B * (1 + L)));
    m->maskf = malloc(sizeof(float) * (size_t)(B * L));
    m->mask = malloc((size_t)(B * L));
    m->table = malloc(sizeof(float) * (size_t)((1 + L) * m->ddim));
    m->block_acts = calloc((size_t)m->ddepth, sizeof *m->block_acts);
    EX_ENSURE(m->noise && m->sort_keys && m->ids_keep && m->ids_restore && m->idx_full && m->maskf && m->mask && m->table &&
                  m->block_acts,
              err, EX_E_NOMEM, "mae: out of memory");
    mae_sincos_table(m->ddim, m->gh, m->gw, m->table);
    return EX_OK;
}

static ex_status mae_create(const ex_cfg_section *cfg, const ex_objective_env *env, void **self, ex_err *err) {
    mae *m = calloc(1, sizeof *m);
    EX_ENSURE(m, err, EX_E_NOMEM, "mae: out of memory");
    m->env = *env;
    m->probe.magic = MAE_PROBE_MAGIC;
    const char *sec = cfg && cfg->section ? cfg->section : "objective";
    ex_status st = EX_OK;
    if (!env->be || !env->params || !env->bb || !env->bb_self)
        st = ex_err_set(err, EX_E_INVALID, __FILE__, __LINE__, "mae: the environment lacks a backend, params or backbone");
    if (st == EX_OK) st = read_config(m, cfg, err);
    if (st == EX_OK) st = derive(m, env, sec, err);
    if (st == EX_OK) st = alloc_host(m, err);
    if (st == EX_OK) st = mae_register_params(m, err);
    if (st != EX_OK) {
        mae_destroy(m);
        return st;
    }
    m->probe.max_batch = m->Bmax;
    m->probe.patches = m->L;
    m->probe.keep = m->keep;
    m->probe.pixels = m->K;
    m->probe.noise = m->noise;
    m->probe.ids_keep = m->ids_keep;
    m->probe.ids_restore = m->ids_restore;
    m->probe.mask = m->mask;
    *self = m;
    return EX_OK;
}

static ex_status mae_views(void *self, ex_view_recipe *out) {
    const mae *m = self;
    memset(out, 0, sizeof *out);
    out->count = 1;
    ex_view_spec *v = &out->views[0];
    v->height = m->height;
    v->width = m->width;
    v->scale_min = m->scale_min;
    v->scale_max = m->scale_max;
    v->ratio_min = 3.0 / 4.0;
    v->ratio_max = 4.0 / 3.0;
    v->flip_p = m->flip;
    return EX_OK;
}

static ex_status mae_backbone_shape(void *self, ex_backbone_shape *max) {
    const mae *m = self;
    memset(max, 0, sizeof *max);
    max->batch = m->Bmax;
    max->height = m->height;
    max->width = m->width;
    max->keep = m->keep;
    max->input_grad = m->probe.input_grad ? 1 : 0;
    return EX_OK;
}

static ex_status mae_plan(void *self, ex_memory_plan *plan, ex_err *err) { return mae_plan_decoder(self, plan, err); }

static ex_status mae_init(void *self, ex_rng *rng, ex_err *err) {
    mae *m = self;
    EX_ENSURE(rng, err, EX_E_INVALID, "mae: init() needs an rng");
    EX_CHECK(mae_init_params(m, rng, err));
    m->weights_ready = 1;
    m->lora_ready = 1;
    return EX_OK;
}

/* --- loading -------------------------------------------------------------------------------- */

/* Checkpoint name -> ours: decoder tensors and mask_token; encoder names are ignored. */
static int mae_map_name(void *user, const char *ckpt_name, char *out, size_t cap, int64_t *row_offset) {
    const mae *m = user;
    (void)row_offset;
    const char *n = ckpt_name;
    if (strncmp(n, "module.", 7) == 0) n += 7; /* DistributedDataParallel */
    if (strncmp(n, "model.", 6) == 0) n += 6;  /* a flattened {"model": state_dict} */
    if (strncmp(n, "optim.", 6) == 0) return 0; /* an explora pretrain checkpoint: AdamW moments */
    if (strncmp(n, "param.", 6) == 0) n += 6;  /* ... and its trained tensors */
    if (strcmp(n, "mask_token") != 0 && strncmp(n, "decoder_", 8) != 0) return 0;
    /* ExPLoRA exports hold merged q_proj/k_proj/v_proj (and LoRA) next to the rebuilt qkv: take the qkv */
    if (strstr(n, ".q_proj.") || strstr(n, ".k_proj.") || strstr(n, ".v_proj.")) return 0;
    if (strcmp(n, "decoder_pos_embed") == 0 && m->skip_ckpt_pos) return 0;
    snprintf(out, cap, "%s", n);
    return 1;
}

static ex_status mae_load(void *self, const char *path, ex_err *err) {
    mae *m = self;
    ex_weights f;
    EX_CHECK(ex_weights_open(&f, path, err));
    /* a decoder_pos_embed for another grid is dropped (ExPLoRA drops mis-shaped position tables): the
     * fixed table computed for this image size stays */
    m->skip_ckpt_pos = 0;
    for (int i = 0; i < ex_weights_count(&f); i++) {
        const ex_st_entry *e = ex_weights_at(&f, i);
        const char *n = e->name;
        if (strncmp(n, "module.", 7) == 0) n += 7;
        if (strncmp(n, "model.", 6) == 0) n += 6;
        if (strcmp(n, "decoder_pos_embed") != 0) continue;
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= e->shape[d];
        if (numel != (1 + m->L) * m->ddim || e->ndim < 1 || e->shape[e->ndim - 1] != m->ddim) m->skip_ckpt_pos = 1;
    }
    /* only our tensors, with the required ones required */
    ex_param **items = malloc(sizeof *items * (size_t)m->nown);
    if (!items) {
        ex_weights_close(&f);
        EX_FAIL(err, EX_E_NOMEM, "mae: out of memory");
    }
    for (int i = 0; i < m->nown; i++) {
        items[i] = m->own[i].p;
        items[i]->optional = !m->own[i].required;
    }
    ex_params mine = {items, m->nown, m->nown};
    ex_status st = EX_OK;
    for (int i = 0; i < m->nown && st == EX_OK; i++)
        if (!m->own[i].p->value.data)
            st = ex_err_set(err, EX_E_INVALID, __FILE__, __LINE__, "mae: load() before the parameters were bound");
    if (st == EX_OK) st = ex_params_load(&mine, m->env.be, &f, mae_map_name, m, 1, err);
    int lora_loaded = 1, pos_loaded = 0;
    for (int i = 0; i < m->nown; i++) {
        ex_param *p = m->own[i].p;
        if (strstr(p->value.name, ".lora_") && p->loaded_rows == 0) lora_loaded = 0;
        if (m->own[i].init == MAE_INIT_TABLE) pos_loaded = p->loaded_rows > 0;
        p->optional = 1;
    }
    free(items);
    ex_weights_close(&f);
    if (st != EX_OK) {
        ex_err_prefix(err, "mae decoder: ");
        return st;
    }
    if (!pos_loaded) { /* the checkpoint has none (or one for another grid): the fixed table */
        ex_param *p = ex_params_find(m->env.params, "decoder_pos_embed");
        EX_CHECK(ex_be_upload(m->env.be, p->value.data, m->table, sizeof(float) * (size_t)((1 + m->L) * m->ddim), err));
    }
    if (m->lora && lora_loaded) m->lora_ready = 1;
    m->weights_ready = 1;
    return EX_OK;
}

static const ex_objective_vtable mae_vtable = {
    /* .create         = */ mae_create,
    /* .destroy        = */ mae_destroy,
    /* .views          = */ mae_views,
    /* .backbone_shape = */ mae_backbone_shape,
    /* .plan           = */ mae_plan,
    /* .init           = */ mae_init,
    /* .load           = */ mae_load,
    /* .step           = */ mae_step,
    /* .update         = */ NULL,
    /* .evaluate       = */ NULL,
    /* .save_state     = */ NULL,
    /* .load_state     = */ NULL,
    /* .teacher_shape  = */ NULL, /* no teacher */
};

static const ex_plugin_desc mae_desc =
    EX_PLUGIN_DESC(EX_PLUGIN_OBJECTIVE, "mae", "0.1.0",
                   "Masked autoencoder (MAE): random masking, pixel decoder, norm_pix loss; decoder LoRA for ExPLoRA",
                   mae_keys, &mae_vtable);

EX_PLUGIN_ENTRY { return &mae_desc; }
