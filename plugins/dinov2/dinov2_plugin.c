/*
 * plugins/dinov2/dinov2_plugin.c — the `dinov2` objective plugin: DINO CLS
 * loss + iBOT masked-patch loss + KoLeo with an EMA teacher (ExPLoRA's DinoV2
 * variant, explora-spec.md section 1a).
 *
 * What it owns:
 *   student heads  dino_head.* (and ibot_head.* with separate_ibot_head),
 *                  registered in the student's parameters, trainable, from
 *                  scratch (init) or from head_weights;
 *   teacher        env->make_teacher: the backbone + PEFT stack again with
 *                  the student's values, frozen; plus a private copy of the
 *                  heads. update() EMAs every teacher tensor whose student
 *                  counterpart trains, and the heads;
 *   centres        DINO and iBOT (centering mode).
 *
 * Views: 2 global crops (RandomResizedCrop global_scale, ratio 3/4..4/3,
 * flip 0.5) and local_crops local crops (local_scale), each with DINOv2's
 * colour jitter (p 0.8), grayscale (p 0.2), Gaussian blur (effective p 0 /
 * 0.9 / 0.5) and solarisation (global crop 2, p 0.2), applied by the loader.
 *
 * The self pointer is a struct dinov2 (dinov2_internal.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dinov2_internal.h"
#include "explora/plugin.h"

#define F(t) ((float *)(t).data)

static const ex_key_spec dn_keys[] = {
    {"prototypes", EX_KEY_INT, "65536", 2, 1 << 24, NULL, "K: prototypes of the DINO (and iBOT) head"},
    {"bottleneck", EX_KEY_INT, "256", 1, 65536, NULL, "head bottleneck width (input of the weight-normalised layer)"},
    {"head_hidden", EX_KEY_INT, "2048", 1, 1 << 20, NULL, "head MLP hidden width"},
    {"head_layers", EX_KEY_INT, "3", 1, DN_MAX_LAYERS, NULL, "Linear layers of the head MLP"},
    {"separate_ibot_head", EX_KEY_BOOL, "false", EX_NORANGE, NULL,
     "iBOT patch tokens go through their own head ibot_head.* (same sizes) instead of dino_head"},
    {"global_crops", EX_KEY_INT, "2", 2, 2, NULL, "global crops per image (fixed: 2)"},
    {"local_crops", EX_KEY_INT, "8", 0, EX_MAX_VIEWS - 2, NULL, "local crops per image"},
    {"global_size", EX_KEY_INT, "224", 1, 65536, NULL, "global crop side (a multiple of the patch size)"},
    {"local_size", EX_KEY_INT, "98", 1, 65536, NULL, "local crop side (a multiple of the patch size)"},
    {"global_scale", EX_KEY_FLOAT_LIST, "0.32, 1.0", 1e-6, 1.0, NULL, "global RandomResizedCrop area range"},
    {"local_scale", EX_KEY_FLOAT_LIST, "0.05, 0.32", 1e-6, 1.0, NULL, "local RandomResizedCrop area range"},
    {"student_temp", EX_KEY_FLOAT, "0.1", 1e-6, 100.0, NULL, "student softmax temperature"},
    {"teacher_temp", EX_KEY_FLOAT, "0.07", 1e-6, 100.0, NULL, "teacher temperature after the warm-up"},
    {"warmup_teacher_temp", EX_KEY_FLOAT, "0.04", 1e-6, 100.0, NULL, "teacher temperature at iteration 0"},
    {"warmup_teacher_temp_iters", EX_KEY_INT, "0", 0, INT64_MAX, NULL,
     "iterations of the linear teacher-temperature warm-up (DINOv2: 30 epochs of 1250)"},
    {"centering", EX_KEY_ENUM, "centering", EX_NORANGE, "centering|sinkhorn_knopp",
     "teacher targets: EMA centring + softmax, or Sinkhorn-Knopp (3 iterations, fp32, on the host)"},
    {"center_momentum", EX_KEY_FLOAT, "0.9", 0.0, 1.0, NULL, "EMA momentum of the teacher centres"},
    {"ibot_weight", EX_KEY_FLOAT, "1.0", 0.0, 1e6, NULL, "weight of the iBOT masked-patch loss"},
    {"dino_weight", EX_KEY_FLOAT, "1.0", 0.0, 1e6, NULL, "weight of the DINO CLS loss"},
    {"koleo_weight", EX_KEY_FLOAT, "0.1", 0.0, 1e6, NULL, "weight of the KoLeo regulariser (per global crop, summed)"},
    {"mask_ratio", EX_KEY_FLOAT_LIST, "0.1, 0.5", 0.0, 1.0, NULL, "iBOT mask ratio range 'min, max'"},
    {"mask_probability", EX_KEY_FLOAT, "0.5", 0.0, 1.0, NULL, "fraction of the global crops that are masked"},
    {"momentum_start", EX_KEY_FLOAT, "0.992", 0.0, 1.0, NULL, "teacher EMA momentum at iteration 0 (cosine to 1.0)"},
    {"freeze_last_layer_iters", EX_KEY_INT, "0", 0, INT64_MAX, NULL,
     "iterations during which the heads' last layers get no gradient (ExPLoRA: ~3000)"},
    {"drop_path", EX_KEY_FLOAT, "0", 0.0, 0.999, NULL, "stochastic depth rate of the student backbone (DINOv2 rule)"},
    {"head_weights", EX_KEY_PATH, "", EX_NORANGE, NULL,
     "optional safetensors file to start the heads from: dino_head.* (and ibot_head.*), a training export's "
     "teacher./student. copy, or an explora run's checkpoint (its teacher heads): extended pre-training that "
     "carries the source run's heads"},
    EX_KEY_END,
};

static void dn_destroy(void *self) {
    dinov2 *d = self;
    if (!d) return;
    ex_params_free(&d->tparams);
    free(d->mask);
    free(d->idx);
    free(d->nmask);
    free(d->hw);
    free(d->hws);
    free(d->hl);
    free(d->hk);
    free(d->hkg);
    free(d->hdrop);
    free(d->sk);
    free(d->sk_row);
    free(d->sk_col);
    free(d);
}

static ex_status read_pair(const ex_cfg_section *cfg, const char *key, double out[2], const char *sec, ex_err *err) {
    int n = 0;
    EX_CHECK(ex_cfg_float_list(cfg, key, out, 2, &n, err));
    EX_ENSURE(n == 2 && out[0] <= out[1], err, EX_E_CONFIG, "[%s] %s takes 'min, max' with min <= max.", sec, key);
    return EX_OK;
}

static ex_status read_config(dinov2 *d, const ex_cfg_section *cfg, const char *sec, ex_err *err) {
    int b = 0;
    EX_CHECK(ex_cfg_int(cfg, "prototypes", &d->K, err));
    EX_CHECK(ex_cfg_int(cfg, "bottleneck", &d->bn, err));
    EX_CHECK(ex_cfg_int(cfg, "head_hidden", &d->hidden, err));
    EX_CHECK(ex_cfg_int(cfg, "head_layers", &d->nlayers, err));
    EX_CHECK(ex_cfg_bool(cfg, "separate_ibot_head", &b, err));
    d->separate_ibot = b;
    EX_CHECK(ex_cfg_int(cfg, "global_crops", &d->nglobal, err));
    EX_CHECK(ex_cfg_int(cfg, "local_crops", &d->nlocal, err));
    EX_CHECK(ex_cfg_int(cfg, "global_size", &d->gsize, err));
    EX_CHECK(ex_cfg_int(cfg, "local_size", &d->lsize, err));
    EX_CHECK(read_pair(cfg, "global_scale", d->gscale, sec, err));
    EX_CHECK(read_pair(cfg, "local_scale", d->lscale, sec, err));
    EX_CHECK(ex_cfg_float(cfg, "student_temp", &d->student_temp, err));
    EX_CHECK(ex_cfg_float(cfg, "teacher_temp", &d->teacher_temp, err));
    EX_CHECK(ex_cfg_float(cfg, "warmup_teacher_temp", &d->warmup_temp, err));
    EX_CHECK(ex_cfg_int(cfg, "warmup_teacher_temp_iters", &d->warmup_temp_iters, err));
    EX_CHECK(ex_cfg_enum(cfg, "centering", &d->centering, err));
    EX_CHECK(ex_cfg_float(cfg, "center_momentum", &d->center_momentum, err));
    EX_CHECK(ex_cfg_float(cfg, "ibot_weight", &d->ibot_w, err));
    EX_CHECK(ex_cfg_float(cfg, "dino_weight", &d->dino_w, err));
    EX_CHECK(ex_cfg_float(cfg, "koleo_weight", &d->koleo_w, err));
    EX_CHECK(read_pair(cfg, "mask_ratio", d->mask_ratio, sec, err));
    EX_CHECK(ex_cfg_float(cfg, "mask_probability", &d->mask_prob, err));
    EX_CHECK(ex_cfg_float(cfg, "momentum_start", &d->momentum_start, err));
    EX_CHECK(ex_cfg_int(cfg, "freeze_last_layer_iters", &d->freeze_last_iters, err));
    EX_CHECK(ex_cfg_float(cfg, "drop_path", &d->drop_path, err));
    EX_CHECK(ex_cfg_path(cfg, "head_weights", d->head_weights, sizeof d->head_weights, err));
    return EX_OK;
}

static ex_status derive(dinov2 *d, const ex_objective_env *env, const char *sec, ex_err *err) {
    const ex_backbone_info *in = &env->info;
    EX_ENSURE(in->has_cls, err, EX_E_CONFIG, "dinov2: the backbone has no cls token (DINO needs one).");
    EX_ENSURE(env->batch >= 1, err, EX_E_INVALID, "dinov2: batch must be at least 1 (got %lld)", (long long)env->batch);
    EX_ENSURE(ex_params_find(env->params, "mask_token"), err, EX_E_CONFIG,
              "dinov2: the backbone has no mask_token (iBOT masking needs one). Set [backbone] mask_token = on.");
    d->B = env->batch;
    d->D = in->dim;
    d->C = in->channels;
    d->P = in->patch;
    d->R0 = in->registers;
    d->depth = in->depth;
    EX_ENSURE(d->P >= 1 && d->gsize % d->P == 0 && d->lsize % d->P == 0, err, EX_E_CONFIG,
              "[%s] global_size %lld and local_size %lld must be multiples of the patch size %lld.", sec,
              (long long)d->gsize, (long long)d->lsize, (long long)d->P);
    EX_ENSURE(d->lsize <= d->gsize, err, EX_E_CONFIG, "[%s] local_size %lld exceeds global_size %lld.", sec,
              (long long)d->lsize, (long long)d->gsize);
    d->gh = d->gw = d->gsize / d->P;
    d->Np = d->gh * d->gw;
    d->Tg = 1 + d->R0 + d->Np;
    d->lh = d->lw = d->lsize / d->P;
    d->Tl = 1 + d->R0 + d->lh * d->lw;
    d->Bg = 2 * d->B;
    d->nm_max = dn_masks_upperbound(d->Bg, d->Np, d->mask_ratio[0], d->mask_ratio[1], d->mask_prob);
    d->ce_chunk = DN_CE_CHUNK;
    const int64_t world = ex_comm_world(env->comm);
    if (world > 1) { /* masks are drawn for the global batch: a rank may get the Bg largest of its targets */
        const int64_t nmg = (int64_t)((double)(d->Bg * world) * d->mask_prob), k = nmg < d->Bg ? nmg : d->Bg;
        const double r0 = d->mask_ratio[0], r1 = d->mask_ratio[1];
        d->nm_max = 0;
        for (int64_t i = nmg - k; i < nmg; i++) /* target i < N lin(i + 1), as dn_masks_upperbound */
            d->nm_max += (int64_t)((double)d->Np * (r0 + (r1 - r0) * (double)(i + 1) / (double)nmg));
    }
    d->lchunk = d->nlocal < 2 ? d->nlocal : 2;
    d->rows = d->Bg + d->nm_max;
    if (d->lchunk * d->B > d->rows) d->rows = d->lchunk * d->B;
    return EX_OK;
}

static ex_status alloc_host(dinov2 *d, ex_err *err) {
    const int64_t Bg = d->Bg, R = d->rows;
    const int64_t world = ex_comm_world(d->env.comm); /* masks are generated for the global batch */
    d->mask = calloc((size_t)(Bg * world * d->Np), 1);
    d->idx = calloc((size_t)(d->nm_max > 0 ? d->nm_max : 1), sizeof(int32_t));
    d->nmask = calloc((size_t)(Bg * world), sizeof(int64_t));
    d->hw = calloc((size_t)R, sizeof(float));
    d->hws = calloc((size_t)R, sizeof(float));
    d->hl = calloc((size_t)(DN_MAX_TARGETS * R), sizeof(float));
    d->hk = calloc((size_t)(Bg * d->D), sizeof(float));
    d->hkg = calloc((size_t)(Bg * d->D), sizeof(float));
    d->hdrop = calloc((size_t)(2 * d->depth * Bg), sizeof(float));
    EX_ENSURE(d->mask && d->idx && d->nmask && d->hw && d->hws && d->hl && d->hk && d->hkg && d->hdrop, err, EX_E_NOMEM,
              "dinov2: out of memory");
    d->sk_device = d->centering == DN_SINKHORN && d->env.be->vt.exp_fwd && d->env.be->vt.row_sum;
    if (d->centering == DN_SINKHORN && !d->sk_device) {
        const int64_t n = Bg > d->nm_max ? Bg : d->nm_max;
        d->sk = malloc(sizeof(float) * (size_t)(n * d->K));
        d->sk_row = malloc(sizeof(double) * (size_t)d->K);
        d->sk_col = malloc(sizeof(double) * (size_t)n);
        EX_ENSURE(d->sk && d->sk_row && d->sk_col, err, EX_E_NOMEM,
                  "dinov2: out of memory for the Sinkhorn-Knopp buffers (%lld x %lld floats)", (long long)n,
                  (long long)d->K);
    }
    return EX_OK;
}

static ex_status dn_create(const ex_cfg_section *cfg, const ex_objective_env *env, void **self, ex_err *err) {
    dinov2 *d = calloc(1, sizeof *d);
    EX_ENSURE(d, err, EX_E_NOMEM, "dinov2: out of memory");
    d->env = *env;
    ex_params_init(&d->tparams);
    const char *sec = cfg && cfg->section ? cfg->section : "objective";
    ex_status st = EX_OK;
    if (!env->be || !env->params || !env->bb || !env->bb_self || !env->make_teacher)
        st = ex_err_set(err, EX_E_INVALID, __FILE__, __LINE__,
                        "dinov2: the environment lacks a backend, params, backbone or make_teacher");
    if (st == EX_OK) st = read_config(d, cfg, sec, err);
    if (st == EX_OK) st = derive(d, env, sec, err);
    if (st == EX_OK) st = alloc_host(d, err);
    if (st == EX_OK) st = dn_head_register(d, &d->sdino, "dino_head", env->params, 1, err);
    if (st == EX_OK && d->separate_ibot) st = dn_head_register(d, &d->sibot, "ibot_head", env->params, 1, err);
    if (st == EX_OK) st = dn_head_register(d, &d->tdino, "dino_head", &d->tparams, 0, err);
    if (st == EX_OK && d->separate_ibot) st = dn_head_register(d, &d->tibot, "ibot_head", &d->tparams, 0, err);
    if (st != EX_OK) {
        dn_destroy(d);
        return st;
    }
    *self = d;
    return EX_OK;
}

static ex_status dn_views(void *self, ex_view_recipe *out) {
    const dinov2 *d = self;
    memset(out, 0, sizeof *out);
    out->count = (int)(2 + d->nlocal);
    for (int v = 0; v < out->count; v++) {
        ex_view_spec *s = &out->views[v];
        const int global = v < 2;
        s->height = s->width = global ? d->gsize : d->lsize;
        s->scale_min = global ? d->gscale[0] : d->lscale[0];
        s->scale_max = global ? d->gscale[1] : d->lscale[1];
        s->ratio_min = 3.0 / 4.0;
        s->ratio_max = 4.0 / 3.0;
        s->flip_p = 0.5;
        /* DINOv2's colour recipe (data/augmentations.py): ColorJitter(0.4, 0.4, 0.2, 0.1) with p 0.8,
         * RandomGrayscale 0.2; GaussianBlur(9, sigma 0.1..2.0) with the effective probabilities of the
         * released code (its wrapper passes 1 - p): global-1 0.0, global-2 0.9, locals 0.5;
         * RandomSolarize(128) with p 0.2 on global-2 only */
        s->brightness = 0.4;
        s->contrast = 0.4;
        s->saturation = 0.2;
        s->hue = 0.1;
        s->jitter_p = 0.8;
        s->grayscale_p = 0.2;
        s->blur_p = v == 0 ? 0.0 : v == 1 ? 0.9 : 0.5;
        s->blur_sigma_min = 0.1;
        s->blur_sigma_max = 2.0;
        s->solarize_p = v == 1 ? 0.2 : 0.0;
        s->solarize_threshold = 128.0;
    }
    return EX_OK;
}

static ex_status dn_backbone_shape(void *self, ex_backbone_shape *max) {
    const dinov2 *d = self;
    memset(max, 0, sizeof *max);
    max->batch = d->Bg; /* the global pass; local passes use at most 2 crops = 2B images */
    max->height = d->gsize;
    max->width = d->gsize;
    return EX_OK;
}

/* The EMA teacher: the global crops, forwards with train = 0 only (no activations kept for backward),
 * reading only the final tokens. */
static ex_status dn_teacher_shape(void *self, ex_backbone_shape *max, int *has) {
    EX_CHECK(dn_backbone_shape(self, max));
    max->inference = 1;
    max->final_only = 1;
    *has = 1;
    return EX_OK;
}

static ex_status plan_t(ex_memory_plan *plan, ex_tensor *t, const char *name, ex_dtype dt, int64_t n, ex_err *err) {
    EX_CHECK(ex_tensor_init(t, name, dt, 1, (int64_t[]){n > 0 ? n : 1}, err));
    return ex_arena_add(&plan->arenas[EX_MEM_ACTIVATION], t, err);
}

static ex_status dn_plan(void *self, ex_memory_plan *plan, ex_err *err) {
    dinov2 *d = self;
    EX_ENSURE(!d->planned, err, EX_E_INVALID, "dinov2: plan() called twice");
    const int64_t Bg = d->Bg, R = d->rows, K = d->K, D = d->D;
    EX_CHECK(dn_head_plan(d, &d->sdino, "s_dino", plan, err));
    EX_CHECK(dn_head_plan(d, &d->tdino, "t_dino", plan, err));
    if (d->separate_ibot) {
        EX_CHECK(dn_head_plan(d, &d->sibot, "s_ibot", plan, err));
        EX_CHECK(dn_head_plan(d, &d->tibot, "t_ibot", plan, err));
    }
    EX_CHECK(dn_head_acts_plan(d, plan, err));
    EX_CHECK(plan_t(plan, &d->gimg, "dinov2.global_images", EX_F32, Bg * d->C * d->gsize * d->gsize, err));
    EX_CHECK(plan_t(plan, &d->limg, "dinov2.local_images", EX_F32, d->lchunk * d->B * d->C * d->lsize * d->lsize, err));
    EX_CHECK(plan_t(plan, &d->mask_d, "dinov2.mask", EX_U8, Bg * d->Np, err));
    EX_CHECK(plan_t(plan, &d->idx_s, "dinov2.mask_rows", EX_I32, d->nm_max, err));
    EX_CHECK(plan_t(plan, &d->xin, "dinov2.head_in", EX_F32, R * D, err));
    EX_CHECK(plan_t(plan, &d->dxin, "dinov2.dhead_in", EX_F32, R * D, err));
    EX_CHECK(plan_t(plan, &d->dtok, "dinov2.dtokens", EX_F32, Bg * d->Tg * D, err));
    EX_CHECK(plan_t(plan, &d->tprob_cls, "dinov2.teacher_cls", EX_F32, Bg * K, err));
    EX_CHECK(plan_t(plan, &d->tprob_patch, "dinov2.teacher_patch", EX_F32, d->nm_max * K, err));
    EX_CHECK(plan_t(plan, &d->losses, "dinov2.losses", EX_F32, DN_MAX_TARGETS * R, err));
    EX_CHECK(plan_t(plan, &d->rweights, "dinov2.row_weights", EX_F32, R, err));
    EX_CHECK(plan_t(plan, &d->ones, "dinov2.ones", EX_F32, R, err));
    EX_CHECK(plan_t(plan, &d->kgrad, "dinov2.koleo_grad", EX_F32, Bg * D, err));
    EX_CHECK(plan_t(plan, &d->drop_d, "dinov2.drop_path", EX_F32, 2 * d->depth * Bg, err));
    EX_CHECK(plan_t(plan, &d->cdino.c, "dinov2.center_dino", EX_F32, K, err));
    EX_CHECK(plan_t(plan, &d->cdino.pend, "dinov2.center_dino_batch", EX_F32, K, err));
    EX_CHECK(plan_t(plan, &d->cibot.c, "dinov2.center_ibot", EX_F32, K, err));
    EX_CHECK(plan_t(plan, &d->cibot.pend, "dinov2.center_ibot_batch", EX_F32, K, err));
    if (d->sk_device) {
        const int64_t nsk = Bg > d->nm_max ? Bg : d->nm_max;
        EX_CHECK(plan_t(plan, &d->skd_kinv, "dinov2.sk_kinv", EX_F32, K, err));
        EX_CHECK(plan_t(plan, &d->skd_row, "dinov2.sk_row", EX_F32, K, err));
        EX_CHECK(plan_t(plan, &d->skd_inv, "dinov2.sk_inv", EX_F32, K, err));
        EX_CHECK(plan_t(plan, &d->skd_nfill, "dinov2.sk_nfill", EX_F32, nsk, err));
        EX_CHECK(plan_t(plan, &d->skd_col, "dinov2.sk_col", EX_F32, nsk, err));
        EX_CHECK(plan_t(plan, &d->skd_cinv, "dinov2.sk_cinv", EX_F32, nsk, err));
        EX_CHECK(plan_t(plan, &d->skd_total, "dinov2.sk_total", EX_F32, 1, err));
    }
    EX_CHECK(ex_params_plan(&d->tparams, plan, err)); /* teacher heads: frozen arena */
    d->planned = 1;
    return EX_OK;
}

static ex_status copy_heads(dinov2 *d, ex_err *err) {
    EX_CHECK(dn_head_copy(d, &d->tdino, &d->sdino, err));
    if (d->separate_ibot) EX_CHECK(dn_head_copy(d, &d->tibot, &d->sibot, err));
    return EX_OK;
}

static ex_status dn_init(void *self, ex_rng *rng, ex_err *err) {
    dinov2 *d = self;
    EX_ENSURE(d->planned && d->xin.data, err, EX_E_INVALID, "dinov2: init() before the memory plan was committed");
    EX_ENSURE(rng, err, EX_E_INVALID, "dinov2: init() needs an rng");
    ex_params_bind(&d->tparams);
    ex_status st = d->env.be->vt.fill(d->env.be->ctx, F(d->ones), 1.0f, d->rows);
    EX_ENSURE(st == EX_OK, err, st, "dinov2: fill failed");
    if (!d->have_teacher) {
        ex_backbone_shape shape;
        int has = 0;
        EX_CHECK(dn_teacher_shape(d, &shape, &has));
        EX_CHECK(d->env.make_teacher(d->env.owner, &shape, &d->teacher, err));
        d->have_teacher = 1;
    }
    if (d->head_weights[0]) {
        EX_CHECK(dn_head_load(d, d->head_weights, err));
    } else {
        EX_CHECK(dn_head_init(d, &d->sdino, rng, err));
        if (d->separate_ibot) EX_CHECK(dn_head_init(d, &d->sibot, rng, err));
    }
    EX_CHECK(copy_heads(d, err));
    d->weights_ready = 1;
    return EX_OK;
}

static ex_status dn_load(void *self, const char *path, ex_err *err) {
    dinov2 *d = self;
    EX_ENSURE(d->planned && d->xin.data, err, EX_E_INVALID, "dinov2: load() before the memory plan was committed");
    ex_params_bind(&d->tparams);
    EX_CHECK(dn_head_load(d, path, err));
    EX_CHECK(copy_heads(d, err));
    return EX_OK;
}

static const ex_objective_vtable dn_vtable_def = {
    /* .create         = */ dn_create,
    /* .destroy        = */ dn_destroy,
    /* .views          = */ dn_views,
    /* .backbone_shape = */ dn_backbone_shape,
    /* .plan           = */ dn_plan,
    /* .init           = */ dn_init,
    /* .load           = */ dn_load,
    /* .step           = */ dn_step,
    /* .update         = */ dn_update,
    /* .evaluate       = */ NULL,
    /* .save_state     = */ dn_save_state,
    /* .load_state     = */ dn_load_state,
    /* .teacher_shape  = */ dn_teacher_shape,
};

const ex_objective_vtable *dn_vtable(void) { return &dn_vtable_def; }

static const ex_plugin_desc dn_desc =
    EX_PLUGIN_DESC(EX_PLUGIN_OBJECTIVE, "dinov2", "0.1.0",
                   "DINOv2 self-distillation: DINO CLS + iBOT masked-patch + KoLeo losses, EMA teacher (ExPLoRA)",
                   dn_keys, &dn_vtable_def);

EX_PLUGIN_ENTRY { return &dn_desc; }
