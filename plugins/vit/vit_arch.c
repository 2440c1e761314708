/*
 * plugins/vit/vit_arch.c — the `vit` plugin's config keys and the presets of
 * the released models (DINOv2 S/B/L/g with and without registers, MAE B/L/H).
 * A key left at -1 / "auto" takes the preset's value; with preset = custom
 * every size must be given.
 */
#include <string.h>

#include "vit_internal.h"

const ex_key_spec vit_keys[] = {
    {"preset", EX_KEY_ENUM, "custom", EX_NORANGE,
     "custom|dinov2_vits14|dinov2_vitb14|dinov2_vitl14|dinov2_vitg14|mae_vitb16|mae_vitl16|mae_vith14|checkpoint",
     "architecture of a released model, or 'checkpoint' to read it from the tensor shapes of [backbone] weights; "
     "sizes below override it"},
    {"patch", EX_KEY_INT, "-1", -1, 1024, NULL, "patch size in pixels (-1: preset)"},
    {"dim", EX_KEY_INT, "-1", -1, 65536, NULL, "embedding width D (-1: preset)"},
    {"depth", EX_KEY_INT, "-1", -1, 1024, NULL, "number of blocks (-1: preset)"},
    {"heads", EX_KEY_INT, "-1", -1, 1024, NULL, "attention heads; dim must be a multiple (-1: preset)"},
    {"hidden", EX_KEY_INT, "-1", -1, 1048576, NULL,
     "MLP width (SwiGLU: width of each half) (-1: preset, or 4*dim for custom)"},
    {"mlp", EX_KEY_ENUM, "auto", EX_NORANGE, "auto|gelu|swiglu", "MLP kind (auto: preset, gelu for custom)"},
    {"layerscale", EX_KEY_ENUM, "auto", EX_NORANGE, "auto|on|off", "LayerScale on both residual branches"},
    {"registers", EX_KEY_INT, "-1", -1, 64, NULL, "register tokens (-1: preset, 0 for custom)"},
    {"channels", EX_KEY_INT, "3", 1, 64, NULL, "input channels"},
    {"pos_grid", EX_KEY_INT, "-1", -1, 4096, NULL,
     "side of the stored position grid (37 for released DINOv2, 14 for MAE /16) (-1: preset)"},
    {"pos_embed", EX_KEY_ENUM, "auto", EX_NORANGE, "auto|learned|sincos",
     "learned table (DINOv2) or MAE's fixed 2-D sin-cos table"},
    {"pos_interp", EX_KEY_ENUM, "auto", EX_NORANGE, "auto|dinov2|size|antialias",
     "how the grid is resampled to other image sizes: dinov2 (original repo, scale (n+0.1)/M), size (HF "
     "Dinov2Model, MAE), antialias (timm, DINOv2 _reg models); auto: as the preset's origin"},
    {"mask_token", EX_KEY_ENUM, "auto", EX_NORANGE, "auto|on|off", "iBOT mask token (DINOv2 has one, MAE's encoder not)"},
    {"qkv_bias", EX_KEY_BOOL, "true", EX_NORANGE, NULL, "bias on the fused qkv projection"},
    {"eps", EX_KEY_FLOAT, "1e-6", 1e-12, 1e-2, NULL, "LayerNorm epsilon"},
    {"weights", EX_KEY_PATH, "", EX_NORANGE, NULL, "checkpoint to load (.safetensors); empty: none"},
    {"format", EX_KEY_ENUM, "auto", EX_NORANGE, "auto|dinov2|timm|hf|mae|hf-mae",
     "naming convention of the checkpoint (auto: detected from its tensor names)"},
    {"checkpoint_copy", EX_KEY_STRING, "auto", EX_NORANGE, NULL,
     "which copy to read from a training export with several (teacher, student, ...), or from an explora run's "
     "checkpoint.safetensors (teacher: the objective's EMA teacher, student: the trained model); auto: teacher if "
     "present, else student; none: read names as they are"},
    {"layerscale_init", EX_KEY_FLOAT, "1e-5", 0, 10, NULL,
     "LayerScale gamma when training from scratch (no weights); DINOv2 uses 1e-5"},
    {"recompute", EX_KEY_BOOL, "false", EX_NORANGE, NULL,
     "activation checkpointing: keep one block's activations and recompute each in backward (less memory, "
     "about a third more compute, identical gradients)"},
    {"recompute_blocks", EX_KEY_INT, "-1", -1, 65536, NULL,
     "with recompute = true: how many blocks, counted from the first, share one activation buffer; all but the "
     "last of them rebuild theirs in backward, the later blocks keep their own (each costs the size of "
     "vit.block_acts that --dry-run prints with recompute on; 1 is the same as recompute off) (-1: all blocks)"},
    {"image_size", EX_KEY_INT_LIST, "224", 1, 65536, NULL,
     "input size the run uses: 'side' or 'height, width' (multiples of the patch size)"},
    EX_KEY_END,
};


static const vit_preset k_presets[] = {
    {"dinov2_vits14", 14, 384, 12, 6, 1536, 37, EX_MLP_GELU, 1, 1, VIT_POS_LEARNED, VIT_INTERP_DINOV2, -1, 3},
    {"dinov2_vitb14", 14, 768, 12, 12, 3072, 37, EX_MLP_GELU, 1, 1, VIT_POS_LEARNED, VIT_INTERP_DINOV2, -1, 3},
    {"dinov2_vitl14", 14, 1024, 24, 16, 4096, 37, EX_MLP_GELU, 1, 1, VIT_POS_LEARNED, VIT_INTERP_DINOV2, -1, 3},
    {"dinov2_vitg14", 14, 1536, 40, 24, 4096, 37, EX_MLP_SWIGLU, 1, 1, VIT_POS_LEARNED, VIT_INTERP_DINOV2, -1, 3},
    {"mae_vitb16", 16, 768, 12, 12, 3072, 14, EX_MLP_GELU, 0, 0, VIT_POS_SINCOS, VIT_INTERP_SIZE, -1, 3},
    {"mae_vitl16", 16, 1024, 24, 16, 4096, 14, EX_MLP_GELU, 0, 0, VIT_POS_SINCOS, VIT_INTERP_SIZE, -1, 3},
    {"mae_vith14", 14, 1280, 32, 16, 5120, 16, EX_MLP_GELU, 0, 0, VIT_POS_SINCOS, VIT_INTERP_SIZE, -1, 3},
};

static ex_status get_int(const ex_cfg_section *cfg, const char *key, int64_t preset_value, int64_t *out, ex_err *err) {
    int64_t v;
    EX_CHECK(ex_cfg_int(cfg, key, &v, err));
    if (v == -1) v = preset_value;
    EX_ENSURE(v >= 0, err, EX_E_CONFIG, "[%s] %s must be given when preset = custom.", cfg->section, key);
    *out = v;
    return EX_OK;
}

ex_status vit_arch_from_config(const ex_cfg_section *cfg, vit_arch *a, char *format, size_t format_cap, ex_err *err) {
    memset(a, 0, sizeof *a);
    int ip;
    EX_CHECK(ex_cfg_enum(cfg, "preset", &ip, err));
    vit_preset p = {"custom", -1, -1, -1, -1, -1, -1, EX_MLP_GELU, 0, 1, VIT_POS_LEARNED, VIT_INTERP_DINOV2, -1, 3};
    const int n_named = (int)(sizeof k_presets / sizeof k_presets[0]);
    if (ip > 0 && ip <= n_named) p = k_presets[ip - 1];
    if (ip == n_named + 1) { /* "checkpoint" */
        char path[4096];
        const char *raw = ex_config_raw(cfg->config, cfg->section, "weights");
        EX_ENSURE(raw && raw[0], err, EX_E_CONFIG, "[%s] preset = checkpoint needs weights = <checkpoint file>.",
                  cfg->section);
        const char *fmt = "auto", *copy = "auto";
        EX_CHECK(ex_cfg_path(cfg, "weights", path, sizeof path, err));
        EX_CHECK(ex_cfg_string(cfg, "format", &fmt, err));
        EX_CHECK(ex_cfg_string(cfg, "checkpoint_copy", &copy, err));
        EX_CHECK(vit_preset_from_checkpoint(path, fmt, copy, &p, err));
    }
    EX_CHECK(get_int(cfg, "patch", p.patch, &a->patch, err));
    EX_CHECK(get_int(cfg, "dim", p.dim, &a->dim, err));
    EX_CHECK(get_int(cfg, "depth", p.depth, &a->depth, err));
    EX_CHECK(get_int(cfg, "heads", p.heads, &a->heads, err));
    EX_CHECK(get_int(cfg, "registers", p.registers > 0 ? p.registers : 0, &a->registers, err));
    EX_CHECK(get_int(cfg, "pos_grid", p.grid, &a->grid_h, err));
    a->grid_w = a->grid_h;
    EX_CHECK(ex_cfg_int(cfg, "channels", &a->channels, err));
    if (ip == n_named + 1 && ex_config_raw(cfg->config, cfg->section, "channels") == NULL) a->channels = p.channels;
    int mlp, ls, pos, interp, mt, bias;
    EX_CHECK(ex_cfg_enum(cfg, "mlp", &mlp, err));
    a->mlp = mlp == 0 ? p.mlp : mlp == 1 ? EX_MLP_GELU : EX_MLP_SWIGLU;
    int64_t hidden_default = p.hidden > 0 ? p.hidden : 4 * a->dim;
    if (ip == 0 && a->mlp == EX_MLP_SWIGLU) hidden_default = ((8 * a->dim / 3 + 7) / 8) * 8; /* DINOv2's rule */
    EX_CHECK(get_int(cfg, "hidden", hidden_default, &a->hidden, err));
    EX_CHECK(ex_cfg_enum(cfg, "layerscale", &ls, err));
    a->layerscale = ls == 0 ? p.layerscale : ls == 1;
    EX_CHECK(ex_cfg_enum(cfg, "mask_token", &mt, err));
    a->mask_token = mt == 0 ? p.mask_token : mt == 1;
    EX_CHECK(ex_cfg_enum(cfg, "pos_embed", &pos, err));
    a->pos = pos == 0 ? p.pos : pos == 1 ? VIT_POS_LEARNED : VIT_POS_SINCOS;
    EX_CHECK(ex_cfg_enum(cfg, "pos_interp", &interp, err));
    /* released DINOv2 models with registers resample with antialiasing */
    vit_interp auto_interp = (p.interp == VIT_INTERP_DINOV2 && a->registers > 0) ? VIT_INTERP_ANTIALIAS : p.interp;
    a->interp = interp == 0 ? auto_interp : (vit_interp)(interp - 1);
    int recompute;
    int64_t recompute_blocks;
    EX_CHECK(ex_cfg_bool(cfg, "recompute", &recompute, err));
    EX_CHECK(ex_cfg_int(cfg, "recompute_blocks", &recompute_blocks, err));
    EX_CHECK(ex_cfg_float(cfg, "layerscale_init", &a->layerscale_init, err));
    EX_CHECK(ex_cfg_bool(cfg, "qkv_bias", &bias, err));
    a->qkv_bias = bias;
    double eps;
    EX_CHECK(ex_cfg_float(cfg, "eps", &eps, err));
    a->eps = (float)eps;
    const char *fmt;
    EX_CHECK(ex_cfg_string(cfg, "format", &fmt, err));
    snprintf(format, format_cap, "%s", fmt);

    EX_ENSURE(a->patch >= 1 && a->dim >= 1 && a->depth >= 1 && a->heads >= 1 && a->hidden >= 1 && a->grid_h >= 1, err,
              EX_E_CONFIG, "[%s] patch, dim, depth, heads, hidden and pos_grid must be at least 1.", cfg->section);
    EX_ENSURE(a->dim % a->heads == 0, err, EX_E_CONFIG, "[%s] dim = %lld is not a multiple of heads = %lld.",
              cfg->section, (long long)a->dim, (long long)a->heads);
    EX_ENSURE(a->pos != VIT_POS_SINCOS || a->dim % 4 == 0, err, EX_E_CONFIG,
              "[%s] pos_embed = sincos needs dim to be a multiple of 4 (dim = %lld).", cfg->section, (long long)a->dim);
    EX_ENSURE(recompute || recompute_blocks == -1, err, EX_E_CONFIG,
              "[%s] recompute_blocks = %lld needs recompute = true (or remove recompute_blocks).", cfg->section,
              (long long)recompute_blocks);
    EX_ENSURE(recompute_blocks <= a->depth, err, EX_E_CONFIG,
              "[%s] recompute_blocks = %lld is more than the model's %lld blocks (-1: all of them).", cfg->section,
              (long long)recompute_blocks, (long long)a->depth);
    a->recompute = !recompute ? 0 : recompute_blocks == -1 ? a->depth : recompute_blocks;
    return EX_OK;
}
