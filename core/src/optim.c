/*
 * core/src/optim.c — AdamW, gradient clipping and schedules (see explora/optim.h).
 */
#include "explora/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const ex_key_spec k_optim_keys[] = {
    {"batch", EX_KEY_INT, "32", 1, 1048576, NULL, "images per micro-batch (per process)"},
    {"accumulate", EX_KEY_INT, "1", 1, 65536, NULL, "micro-batches per optimiser step (gradient accumulation)"},
    {"steps", EX_KEY_INT, "1000", 1, 1e12, NULL, "optimiser steps of the run"},
    {"lr", EX_KEY_FLOAT, "1e-3", 0, 10, NULL, "peak learning rate (after warm-up)"},
    {"min_lr", EX_KEY_FLOAT, "1e-6", 0, 10, NULL, "learning rate at the end of the cosine"},
    {"warmup_steps", EX_KEY_INT, "0", 0, 1e12, NULL, "linear warm-up from 0"},
    {"weight_decay", EX_KEY_FLOAT, "0.05", 0, 10, NULL, "AdamW decoupled weight decay (not on biases, norms, gammas)"},
    {"weight_decay_end", EX_KEY_FLOAT, "-1", -1, 10, NULL,
     "weight decay at the last step, reached by a half-cosine without warm-up from weight_decay (DINOv2: 0.04 -> 0.2); "
     "-1: constant"},
    {"layer_decay", EX_KEY_FLOAT, "1", 1e-6, 1, NULL,
     "layer-wise lr decay (MAE/BEiT fine-tuning, e.g. 0.65): block i of D trains at lr x layer_decay^(D - i), the "
     "embeddings (patch_embed, cls/register/mask tokens, pos_embed) at x layer_decay^(D + 1), everything else "
     "(final norm, heads, decoder) at x 1; 1: off"},
    {"beta1", EX_KEY_FLOAT, "0.9", 0, 0.999999, NULL, "AdamW beta1"},
    {"beta2", EX_KEY_FLOAT, "0.999", 0, 0.999999999, NULL, "AdamW beta2 (MAE uses 0.95)"},
    {"eps", EX_KEY_FLOAT, "1e-8", 0, 1, NULL, "AdamW epsilon"},
    {"clip_grad", EX_KEY_FLOAT, "0", 0, 1e9, NULL, "clip the global gradient L2 norm to this (0: off; DINOv2 uses 3)"},
    {"lr_scaling", EX_KEY_ENUM, "none", EX_NORANGE, "none|linear256|sqrt1024",
     "scale lr by the effective batch (batch x processes x accumulate): linear256 = x eff/256 (MAE), "
     "sqrt1024 = x sqrt(eff/1024) (DINOv2); read by the trainer"},
    {"loss_scale", EX_KEY_ENUM, "none", EX_NORANGE, "none|dynamic",
     "dynamic: scale the gradients by a power of two while they are computed and unscale them before the update, "
     "skipping a step whose gradients overflow (torch.cuda.amp.GradScaler's rule). For gemm_math = fp16, whose "
     "rounded gradients would otherwise lose small values; harmless elsewhere (a run without overflow equals the "
     "unscaled run bit for bit)"},
    {"loss_scale_init", EX_KEY_FLOAT, "65536", 1.0 / 65536.0, 1e30, NULL,
     "initial loss scale of loss_scale = dynamic, a power of two (GradScaler's default 2^16)"},
    {"loss_scale_growth_interval", EX_KEY_INT, "2000", 1, 1e12, NULL,
     "finite steps after which loss_scale = dynamic doubles the scale (GradScaler's default)"},
    {"frozen_dtype", EX_KEY_ENUM, "fp32", EX_NORANGE, "fp32|bf16",
     "storage of the frozen linear weights while training (the base weights under LoRA and of frozen blocks): bf16 "
     "halves their memory and feeds them to the GEMM as they are; trainable tensors (fp32 master weights), "
     "gradients, optimiser state, norms and activations stay fp32. The model then trains against the bf16-rounded "
     "base weights, and its checkpoints hold them so; export and evaluation build fp32 models"},
    {"activation_dtype", EX_KEY_ENUM, "fp32", EX_NORANGE, "fp32|bf16",
     "storage of the backbone blocks' activations while training: the GEMM inputs (the LayerNorm outputs and the "
     "GELU output) and attention's input and output (qkv, after its bias and adapters, and the heads' output). bf16 "
     "halves their memory, lets bf16 GEMMs (a GPU's [backend] gemm_math = bf16) read them without rounding them "
     "afresh, and lets cuDNN or bf16 tensor-core attention read and write them as they are. The block computes in "
     "fp32 and rounds as it writes; attention computes from the rounded qkv; gradients pass the rounding unchanged "
     "and stay fp32. Residual stream, fc1 output and the objective's heads stay fp32; adapter dropout needs fp32"},
    EX_KEY_END,
};

const ex_key_spec *ex_optim_keys(void) { return k_optim_keys; }

ex_status ex_optim_config_read(const ex_cfg_section *s, ex_optim_config *o, ex_err *err) {
    memset(o, 0, sizeof *o);
    EX_CHECK(ex_cfg_int(s, "steps", &o->steps, err));
    EX_CHECK(ex_cfg_int(s, "warmup_steps", &o->warmup_steps, err));
    EX_CHECK(ex_cfg_float(s, "lr", &o->lr, err));
    EX_CHECK(ex_cfg_float(s, "min_lr", &o->min_lr, err));
    EX_CHECK(ex_cfg_float(s, "weight_decay", &o->weight_decay, err));
    EX_CHECK(ex_cfg_float(s, "beta1", &o->beta1, err));
    EX_CHECK(ex_cfg_float(s, "beta2", &o->beta2, err));
    EX_CHECK(ex_cfg_float(s, "eps", &o->eps, err));
    EX_CHECK(ex_cfg_float(s, "clip_grad", &o->clip_grad, err));
    EX_CHECK(ex_cfg_float(s, "weight_decay_end", &o->weight_decay_end, err));
    EX_CHECK(ex_cfg_float(s, "layer_decay", &o->layer_decay, err));
    EX_ENSURE(o->weight_decay_end >= 0 || o->weight_decay_end == -1, err, EX_E_CONFIG,
              "[optim] weight_decay_end = %g: give a decay >= 0, or -1 to keep weight_decay constant.",
              o->weight_decay_end);
    EX_ENSURE(o->warmup_steps <= o->steps, err, EX_E_CONFIG, "[optim] warmup_steps = %lld exceeds steps = %lld.",
              (long long)o->warmup_steps, (long long)o->steps);
    return EX_OK;
}

/* DINOv2's rule: no decay for names ending in ".bias" or containing "norm" or "gamma". */
static float wd_mult_for(const char *name) {
    size_t n = strlen(name);
    if (n >= 5 && strcmp(name + n - 5, ".bias") == 0) return 0.0f;
    if (strstr(name, "norm") || strstr(name, "gamma")) return 0.0f;
    return 1.0f;
}

/* The leading "blocks.<i>." of a backbone parameter name: i, or -1. */
static int64_t block_index(const char *name) {
    if (strncmp(name, "blocks.", 7) != 0) return -1;
    char *end;
    long long i = strtoll(name + 7, &end, 10);
    return end != name + 7 && *end == '.' && i >= 0 ? (int64_t)i : -1;
}

double ex_optim_layer_scale(const char *name, int64_t depth, double layer_decay) {
    if (!(layer_decay > 0.0 && layer_decay < 1.0)) return 1.0; /* 1 (and a zeroed config): off */
    static const char *const embed[] = {"cls_token", "pos_embed", "patch_embed", "register_tokens", "mask_token"};
    int64_t id = depth + 1; /* final norm, heads, decoders, objective parameters */
    const int64_t b = block_index(name);
    if (b >= 0) id = b + 1;
    for (size_t k = 0; k < sizeof embed / sizeof *embed; k++) {
        const size_t n = strlen(embed[k]);
        if (strncmp(name, embed[k], n) == 0 && (name[n] == '\0' || name[n] == '.')) id = 0;
    }
    return pow(layer_decay, (double)(depth + 1 - id));
}

ex_status ex_optim_plan(ex_optim *o, ex_backend *be, ex_params *ps, const ex_optim_config *cfg, ex_memory_plan *plan,
                        ex_err *err) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->be = be;
    int n = 0;
    for (int i = 0; i < ps->count; i++) n += ps->items[i]->trainable;
    o->slots = calloc((size_t)(n ? n : 1), sizeof *o->slots);
    EX_ENSURE(o->slots, err, EX_E_NOMEM, "out of memory planning the optimiser");
    int64_t depth = 0; /* backbone blocks, from the names of all parameters (frozen ones included) */
    for (int i = 0; i < ps->count; i++) {
        const int64_t b = block_index(ps->items[i]->value.name);
        if (b + 1 > depth) depth = b + 1;
    }
    EX_ENSURE(!(cfg->layer_decay > 0.0 && cfg->layer_decay < 1.0) || depth > 0, err, EX_E_CONFIG,
              "[optim] layer_decay = %g needs a backbone with blocks.<i>.* parameters; this model has none. Set "
              "layer_decay = 1.",
              cfg->layer_decay);
    for (int i = 0; i < ps->count; i++) {
        ex_param *p = ps->items[i];
        if (!p->trainable) continue;
        ex_optim_slot *sl = &o->slots[o->count++];
        sl->param = p;
        sl->wd_mult = wd_mult_for(p->value.name);
        sl->lr_mult = (float)ex_optim_layer_scale(p->value.name, depth, cfg->layer_decay);
        char name[EX_NAME_MAX];
        snprintf(name, sizeof name, "%.140s.adam_m", p->value.name);
        EX_CHECK(ex_tensor_init(&sl->m, name, EX_F32, p->value.ndim, p->value.shape, err));
        snprintf(name, sizeof name, "%.140s.adam_v", p->value.name);
        EX_CHECK(ex_tensor_init(&sl->v, name, EX_F32, p->value.ndim, p->value.shape, err));
        EX_CHECK(ex_arena_add(&plan->arenas[EX_MEM_OPTIM], &sl->m, err));
        EX_CHECK(ex_arena_add(&plan->arenas[EX_MEM_OPTIM], &sl->v, err));
    }
    return EX_OK;
}

double ex_schedule_cosine(double base, double final, int64_t warmup, int64_t total, int64_t t) {
    if (t < warmup) return base * (double)t / (double)warmup;
    if (t >= total) return final;
    double progress = (double)(t - warmup) / (double)(total - warmup);
    return final + 0.5 * (base - final) * (1.0 + cos(M_PI * progress));
}

double ex_optim_weight_decay_at(const ex_optim_config *c, int64_t t) {
    if (c->weight_decay_end < 0) return c->weight_decay;
    return ex_schedule_cosine(c->weight_decay, c->weight_decay_end, 0, c->steps, t);
}

/* norm_buf: one device float per parameter (the per-tensor sums of squares) */
static ex_status ensure_norm_buf(ex_optim *o, ex_err *err) {
    if (!o->norm_buf) {
        const size_t n = (size_t)(o->count > 0 ? o->count : 1);
        EX_CHECK(ex_be_alloc(o->be, sizeof(float) * n, (void **)&o->norm_buf, err));
        o->norm_host = calloc(n, sizeof(float));
        EX_ENSURE(o->norm_host, err, EX_E_NOMEM, "optim: out of memory for %zu gradient norms", n);
    }
    return EX_OK;
}

ex_status ex_optim_grad_norm(ex_optim *o, double *norm, ex_err *err) {
    EX_CHECK(ensure_norm_buf(o, err));
    /* every tensor's sum of squares into its own device float, then one download (one device sync per step,
     * not one per tensor), summed on the host in double in parameter order */
    for (int i = 0; i < o->count; i++) {
        const ex_param *p = o->slots[i].param;
        ex_status st = o->be->vt.reduce(o->be->ctx, EX_RED_SUMSQ, o->norm_buf + i, p->grad.data, ex_tensor_numel(&p->grad));
        EX_ENSURE(st == EX_OK, err, st, "optim: reduce failed on '%s'", p->grad.name);
    }
    if (o->count > 0) EX_CHECK(ex_be_download(o->be, o->norm_host, o->norm_buf, sizeof(float) * (size_t)o->count, err));
    double sumsq = 0.0;
    for (int i = 0; i < o->count; i++) sumsq += (double)o->norm_host[i];
    *norm = sqrt(sumsq);
    return EX_OK;
}

ex_status ex_optim_scale_grads(ex_optim *o, float s, ex_err *err) {
    float *start = NULL;
    int64_t n = 0;
    if (ex_optim_grad_span(o, &start, &n)) { /* one call; the padding between the gradients is zero and stays so */
        ex_status st = o->be->vt.axpby(o->be->ctx, start, 0.0f, start, s, n);
        EX_ENSURE(st == EX_OK, err, st, "optim: scaling the gradients (%lld floats) failed", (long long)n);
        return EX_OK;
    }
    for (int i = 0; i < o->count; i++) {
        const ex_param *p = o->slots[i].param;
        ex_status st = o->be->vt.axpby(o->be->ctx, p->grad.data, 0.0f, p->grad.data, s, ex_tensor_numel(&p->grad));
        EX_ENSURE(st == EX_OK, err, st, "optim: scaling '%s' failed", p->grad.name);
    }
    return EX_OK;
}

/* A gap shorter than EX_ARENA_ALIGN bytes between two gradients has no room for another tensor. */
int ex_optim_grad_span(const ex_optim *o, float **start, int64_t *n) {
    if (o->count < 2) return 0;
    const char *first = o->slots[0].param->grad.data, *end = first;
    for (int i = 0; i < o->count; i++) {
        const ex_tensor *g = &o->slots[i].param->grad;
        const char *p = g->data;
        if (!p || g->dtype != EX_F32 || p < end || (size_t)(p - end) >= EX_ARENA_ALIGN) return 0;
        end = p + ex_tensor_nbytes(g);
    }
    *start = (float *)first;
    *n = (int64_t)((size_t)(end - first) / sizeof(float));
    return 1;
}

ex_status ex_optim_zero_grads(ex_optim *o, ex_err *err) {
    float *start = NULL;
    int64_t n = 0;
    if (ex_optim_grad_span(o, &start, &n)) { /* one fill (padding included) instead of one per tensor */
        ex_status st = o->be->vt.fill(o->be->ctx, start, 0.0f, n);
        EX_ENSURE(st == EX_OK, err, st, "optim: zeroing the gradients (%lld floats) failed", (long long)n);
        return EX_OK;
    }
    for (int i = 0; i < o->count; i++) {
        const ex_param *p = o->slots[i].param;
        ex_status st = o->be->vt.fill(o->be->ctx, p->grad.data, 0.0f, ex_tensor_numel(&p->grad));
        EX_ENSURE(st == EX_OK, err, st, "optim: zeroing '%s' failed", p->grad.name);
    }
    return EX_OK;
}

ex_status ex_optim_step(ex_optim *o, double *lr_used, double *grad_norm, ex_err *err) {
    const ex_optim_config *c = &o->cfg;
    double norm = 0.0;
    EX_CHECK(ex_optim_grad_norm(o, &norm, err));
    EX_ENSURE(isfinite(norm), err, EX_E_INVALID, "optim: the gradient norm is %g at step %lld", norm,
              (long long)o->step);
    if (c->clip_grad > 0.0 && norm > c->clip_grad) EX_CHECK(ex_optim_scale_grads(o, (float)(c->clip_grad / (norm + 1e-6)), err));
    const double lr = ex_schedule_cosine(c->lr, c->min_lr, c->warmup_steps, c->steps, o->step);
    const double wd = ex_optim_weight_decay_at(c, o->step);
    o->step++;
    o->adam_step++;
    for (int i = 0; i < o->count; i++) {
        ex_optim_slot *sl = &o->slots[i];
        ex_adamw_params h = {(float)(lr * sl->lr_mult), (float)c->beta1, (float)c->beta2, (float)c->eps,
                             (float)(wd * sl->wd_mult), o->adam_step};
        ex_status st = o->be->vt.adamw(o->be->ctx, sl->param->value.data, sl->param->grad.data, sl->m.data, sl->v.data,
                                       ex_tensor_numel(&sl->param->value), &h);
        EX_ENSURE(st == EX_OK, err, st, "optim: AdamW failed on '%s'", sl->param->value.name);
    }
    if (lr_used) *lr_used = lr;
    if (grad_norm) *grad_norm = norm;
    return EX_OK;
}

void ex_optim_skip(ex_optim *o, double *lr_used) {
    const ex_optim_config *c = &o->cfg;
    if (lr_used) *lr_used = ex_schedule_cosine(c->lr, c->min_lr, c->warmup_steps, c->steps, o->step);
    o->step++;
}

ex_status ex_loss_scaler_config_read(const ex_cfg_section *s, ex_loss_scaler *out, ex_err *err) {
    memset(out, 0, sizeof *out);
    out->scale = 1.0;
    int mode = 0;
    EX_CHECK(ex_cfg_enum(s, "loss_scale", &mode, err));
    if (mode == 0) return EX_OK;
    double init = 0;
    EX_CHECK(ex_cfg_float(s, "loss_scale_init", &init, err));
    int e = 0;
    EX_ENSURE(frexp(init, &e) == 0.5, err, EX_E_CONFIG,
              "[optim] loss_scale_init = %g is not a power of two; give one (e.g. 65536), so that scaling and "
              "unscaling the gradients are exact.",
              init);
    EX_CHECK(ex_cfg_int(s, "loss_scale_growth_interval", &out->growth_interval, err));
    out->enabled = 1;
    out->scale = init;
    return EX_OK;
}

int ex_loss_scaler_update(ex_loss_scaler *s, int found_inf) {
    if (!s->enabled) return 0;
    if (found_inf) {
        s->skipped++;
        s->good_steps = 0;
        if (s->scale <= 0x1p-24) return -1;
        s->scale *= 0.5;
        return 0;
    }
    if (++s->good_steps >= s->growth_interval) {
        s->good_steps = 0;
        if (s->scale * 2.0 <= 0x1p100) s->scale *= 2.0; /* stays finite in float, as GradScaler's check */
    }
    return 0;
}

ex_status ex_optim_step_scaled(ex_optim *o, ex_loss_scaler *s, double *lr_used, double *grad_norm, int *skipped,
                               ex_err *err) {
    *skipped = 0;
    if (!s || !s->enabled) return ex_optim_step(o, lr_used, grad_norm, err);
    const double scale = s->scale;
    EX_CHECK(ex_optim_scale_grads(o, (float)(1.0 / scale), err)); /* exact: 1/scale is a power of two */
    double norm = 0.0;
    EX_CHECK(ex_optim_grad_norm(o, &norm, err));
    *skipped = !isfinite(norm);
    EX_ENSURE(ex_loss_scaler_update(s, *skipped) == 0, err, EX_E_INVALID,
              "the gradients are not finite at step %lld even at loss scale %g: stopping without saving.",
              (long long)o->step, scale);
    if (*skipped) {
        ex_optim_skip(o, lr_used);
        if (grad_norm) *grad_norm = norm;
        return EX_OK;
    }
    return ex_optim_step(o, lr_used, grad_norm, err);
}

void ex_optim_free(ex_optim *o) {
    if (o->norm_buf) ex_be_free(o->be, o->norm_buf);
    free(o->norm_host);
    free(o->slots);
    memset(o, 0, sizeof *o);
}
