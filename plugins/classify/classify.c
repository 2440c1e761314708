/*
 * plugins/classify/classify.c — the `classify` objective: supervised
 * fine-tuning of the backbone (usually with LoRA) and a linear head, as
 * ExPLoRA's finetune/finetune.py (MAE's models_vit + engine_finetune) does it,
 * so that `explora finetune` reuses the generic trainer.
 *
 * One view per image (RandomResizedCrop `scale`, ratio 3/4..4/3, flip `flip`),
 * then per step (B images, D = backbone width, C = classes):
 *   tokens (B, T, D)  = backbone(view, train = 1, drop path)   (after its final norm)
 *   pool = avg:  f = fc_norm(mean of the patch tokens)         (fc_norm: a new LayerNorm, eps 1e-6)
 *   pool = cls:  f = the cls token
 *   logits (B, C)     = f @ head.weight^T + head.bias
 *   targets (B, C)    = (1 - eps) one_hot(label) + eps / C      (label smoothing eps)
 *   loss              = mean_b -sum_j targets_bj log softmax(logits_b)_j
 * and the backward into head, fc_norm and every trainable backbone tensor.
 *
 * Note on pool = avg: MAE's models_vit drops the backbone's final norm and
 * applies fc_norm to the mean of the raw residual stream; the backbone
 * interface hands out normalised tokens only, so here fc_norm follows the
 * mean of the normalised patch tokens (the PyTorch fixture does the same).
 *
 * Drop path (`drop_path` > 0): block i gets rate drop_path * i / (depth - 1)
 * (timm's linspace rule, as MAE's fine-tuning), per-image scales from
 * ex_drop_path_scales drawn from the step's rng.
 *
 * Parameters: head.weight (C, D) ~ N(0, 2e-5^2) (trunc_normal_(std=2e-5):
 * the +-2 truncation never binds), head.bias = 0, fc_norm.weight = 1,
 * fc_norm.bias = 0 (pool = avg only); all trainable. load(path) reads them
 * from a checkpoint ("param.head.weight" of an explora run, or plain names).
 *
 * Loss terms: "ce" (the total) and "train_acc" (top-1 of the batch, %, not
 * part of the total). evaluate(): the same forward with train = 0, top-k.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "explora/nn.h"
#include "explora/objective.h"
#include "explora/plugin.h"
#include "explora/weights.h"

#define F(t) ((float *)(t).data)

#define OP(c, call, what)                                                                                     \
    do {                                                                                                      \
        ex_status op__s = (c)->env.be->vt.call;                                                               \
        if (op__s != EX_OK) EX_FAIL(err, op__s, "classify: %s failed on backend '%s'", what, (c)->env.be->name); \
    } while (0)

enum { POOL_AVG = 0, POOL_CLS = 1 };

static const ex_key_spec cl_keys[] = {
    {"classes", EX_KEY_INT, NULL, 1, 1e7, NULL, "number of classes of the head (required)"},
    {"pool", EX_KEY_ENUM, "avg", EX_NORANGE, "avg|cls",
     "head input: avg = mean of the patch tokens through a new LayerNorm fc_norm (MAE global_pool); cls = the cls token"},
    {"label_smoothing", EX_KEY_FLOAT, "0.1", 0.0, 0.999, NULL,
     "soft targets (1 - eps) one-hot + eps / classes (ExPLoRA fine-tuning: 0.1)"},
    {"image_size", EX_KEY_INT_LIST, "224", 1, 65536, NULL,
     "size of the training view (and of evaluation crops): 'side' or 'height, width'"},
    {"scale", EX_KEY_FLOAT_LIST, "0.08, 1.0", 1e-6, 1.0, NULL,
     "RandomResizedCrop area range 'min, max' (aspect ratio 3/4 .. 4/3)"},
    {"flip", EX_KEY_FLOAT, "0.5", 0.0, 1.0, NULL, "probability of a horizontal flip"},
    {"drop_path", EX_KEY_FLOAT, "0", 0.0, 0.999, NULL,
     "stochastic depth: block i drops with rate drop_path * i / (depth - 1) (ExPLoRA fine-tuning: 0.2)"},
    {"weights", EX_KEY_PATH, "", EX_NORANGE, NULL,
     "checkpoint holding head.* (and fc_norm.*) to start from (an explora finetune checkpoint); empty: initialise"},
    EX_KEY_END,
};

typedef struct classify {
    ex_objective_env env;
    /* config */
    int64_t C;
    int pool;
    double eps, scale_min, scale_max, flip, drop_path;
    int64_t height, width;
    /* derived */
    int64_t Bmax, D, depth, R, L, T, first;
    /* parameters */
    ex_layernorm fc_norm;       /* pool = avg */
    ex_linear head;             /* D -> C */
    ex_param *p_head_w, *p_head_b, *p_norm_w, *p_norm_b;
    /* activations (planned for Bmax) */
    ex_tensor ones;             /* (L) */
    ex_tensor pooled, dpooled;  /* (B, D) */
    ex_tensor normed, dnormed;  /* (B, D) */
    ex_tensor ln_mean, ln_rstd; /* (B) */
    ex_tensor logits, dlogits, probs, targets; /* (B, C) */
    ex_tensor losses, dlosses, loss_d;         /* (B), (B), (1) */
    ex_tensor dtok;             /* (B, T, D) */
    ex_tensor drop_d;           /* (depth, 2, B) */
    int planned, ready;
    /* host buffers (allocated at create) */
    float *h_targets;           /* (B, C) */
    float *h_scores;            /* (B, C) */
    float *h_drop;              /* (depth, 2, B) */
} classify;

static void cl_destroy(void *self) {
    classify *c = self;
    if (!c) return;
    free(c->h_targets);
    free(c->h_scores);
    free(c->h_drop);
    free(c);
}

static ex_status read_config(classify *c, const ex_cfg_section *cfg, const char *sec, ex_err *err) {
    EX_CHECK(ex_cfg_int(cfg, "classes", &c->C, err));
    EX_CHECK(ex_cfg_enum(cfg, "pool", &c->pool, err));
    EX_CHECK(ex_cfg_float(cfg, "label_smoothing", &c->eps, err));
    EX_CHECK(ex_cfg_float(cfg, "flip", &c->flip, err));
    EX_CHECK(ex_cfg_float(cfg, "drop_path", &c->drop_path, err));
    int64_t size[2];
    int n = 0;
    EX_CHECK(ex_cfg_int_list(cfg, "image_size", size, 2, &n, err));
    EX_ENSURE(n == 1 || n == 2, err, EX_E_CONFIG, "[%s] image_size takes 'side' or 'height, width'.", sec);
    c->height = size[0];
    c->width = n == 2 ? size[1] : size[0];
    double sc[2];
    EX_CHECK(ex_cfg_float_list(cfg, "scale", sc, 2, &n, err));
    EX_ENSURE(n == 2 && sc[0] <= sc[1], err, EX_E_CONFIG, "[%s] scale takes 'min, max' with min <= max.", sec);
    c->scale_min = sc[0];
    c->scale_max = sc[1];
    return EX_OK;
}

static ex_status register_params(classify *c, ex_err *err) {
    ex_params *ps = c->env.params;
    const int64_t D = c->D, C = c->C;
    c->head.in = D;
    c->head.out = C;
    EX_CHECK(ex_params_add(ps, "head.weight", 2, (int64_t[]){C, D}, "head", &c->head.w, &c->head.dw, &c->p_head_w, err));
    EX_CHECK(ex_params_add(ps, "head.bias", 1, (int64_t[]){C}, "head", &c->head.b, &c->head.db, &c->p_head_b, err));
    c->p_head_w->trainable = c->p_head_b->trainable = 1;
    if (c->pool == POOL_AVG) {
        c->fc_norm.dim = D;
        c->fc_norm.eps = 1e-6f;
        EX_CHECK(ex_params_add(ps, "fc_norm.weight", 1, (int64_t[]){D}, "norm", &c->fc_norm.w, &c->fc_norm.dw,
                               &c->p_norm_w, err));
        EX_CHECK(ex_params_add(ps, "fc_norm.bias", 1, (int64_t[]){D}, "norm", &c->fc_norm.b, &c->fc_norm.db,
                               &c->p_norm_b, err));
        c->p_norm_w->trainable = c->p_norm_b->trainable = 1;
    }
    return EX_OK;
}

static ex_status cl_create(const ex_cfg_section *cfg, const ex_objective_env *env, void **self, ex_err *err) {
    EX_ENSURE(env && env->be && env->params && env->bb && env->bb_self, err, EX_E_INVALID,
              "classify: the environment lacks a backend, params or backbone");
    classify *c = calloc(1, sizeof *c);
    EX_ENSURE(c, err, EX_E_NOMEM, "classify: out of memory");
    c->env = *env;
    const char *sec = cfg && cfg->section ? cfg->section : "objective";
    ex_status st = read_config(c, cfg, sec, err);
    const ex_backbone_info *in = &env->info;
    if (st == EX_OK && (env->batch < 1 || in->patch < 1 || c->height % in->patch || c->width % in->patch))
        st = ex_err_set(err, EX_E_CONFIG, __FILE__, __LINE__,
                        "[%s] image_size %lldx%lld must be a multiple of the backbone's patch %lld (batch %lld).", sec,
                        (long long)c->height, (long long)c->width, (long long)in->patch, (long long)env->batch);
    if (st == EX_OK && c->pool == POOL_CLS && !in->has_cls)
        st = ex_err_set(err, EX_E_CONFIG, __FILE__, __LINE__, "[%s] pool = cls, but the backbone has no cls token.", sec);
    if (st == EX_OK) {
        c->Bmax = env->batch;
        c->D = in->dim;
        c->depth = in->depth;
        c->R = in->registers;
        c->L = (c->height / in->patch) * (c->width / in->patch);
        c->first = (in->has_cls ? 1 : 0) + c->R;
        c->T = c->first + c->L;
        c->h_targets = malloc(sizeof(float) * (size_t)(c->Bmax * c->C));
        c->h_scores = malloc(sizeof(float) * (size_t)(c->Bmax * c->C));
        c->h_drop = malloc(sizeof(float) * (size_t)(2 * c->depth * c->Bmax));
        if (!c->h_targets || !c->h_scores || !c->h_drop)
            st = ex_err_set(err, EX_E_NOMEM, __FILE__, __LINE__, "classify: out of memory");
    }
    if (st == EX_OK) st = register_params(c, err);
    if (st != EX_OK) {
        cl_destroy(c);
        return st;
    }
    *self = c;
    return EX_OK;
}

static ex_status cl_views(void *self, ex_view_recipe *out) {
    const classify *c = self;
    memset(out, 0, sizeof *out);
    out->count = 1;
    ex_view_spec *v = &out->views[0];
    v->height = c->height;
    v->width = c->width;
    v->scale_min = c->scale_min;
    v->scale_max = c->scale_max;
    v->ratio_min = 3.0 / 4.0;
    v->ratio_max = 4.0 / 3.0;
    v->flip_p = c->flip;
    return EX_OK;
}

static ex_status cl_backbone_shape(void *self, ex_backbone_shape *max) {
    const classify *c = self;
    memset(max, 0, sizeof *max);
    max->batch = c->Bmax;
    max->height = c->height;
    max->width = c->width;
    return EX_OK;
}

static ex_status plan_t(ex_memory_plan *plan, ex_tensor *t, const char *name, int64_t n, ex_err *err) {
    EX_CHECK(ex_tensor_init(t, name, EX_F32, 1, (int64_t[]){n > 0 ? n : 1}, err));
    return ex_arena_add(&plan->arenas[EX_MEM_ACTIVATION], t, err);
}

static ex_status cl_plan(void *self, ex_memory_plan *plan, ex_err *err) {
    classify *c = self;
    EX_ENSURE(!c->planned, err, EX_E_INVALID, "classify: plan() called twice");
    const int64_t B = c->Bmax, D = c->D, C = c->C;
    EX_CHECK(plan_t(plan, &c->ones, "classify.ones", c->L, err));
    EX_CHECK(plan_t(plan, &c->pooled, "classify.pooled", B * D, err));
    EX_CHECK(plan_t(plan, &c->dpooled, "classify.dpooled", B * D, err));
    EX_CHECK(plan_t(plan, &c->normed, "classify.fc_norm_out", B * D, err));
    EX_CHECK(plan_t(plan, &c->dnormed, "classify.dfc_norm_out", B * D, err));
    EX_CHECK(plan_t(plan, &c->ln_mean, "classify.fc_norm_mean", B, err));
    EX_CHECK(plan_t(plan, &c->ln_rstd, "classify.fc_norm_rstd", B, err));
    EX_CHECK(plan_t(plan, &c->logits, "classify.logits", B * C, err));
    EX_CHECK(plan_t(plan, &c->dlogits, "classify.dlogits", B * C, err));
    EX_CHECK(plan_t(plan, &c->probs, "classify.probs", B * C, err));
    EX_CHECK(plan_t(plan, &c->targets, "classify.targets", B * C, err));
    EX_CHECK(plan_t(plan, &c->losses, "classify.losses", B, err));
    EX_CHECK(plan_t(plan, &c->dlosses, "classify.dlosses", B, err));
    EX_CHECK(plan_t(plan, &c->loss_d, "classify.loss", 1, err));
    EX_CHECK(plan_t(plan, &c->dtok, "classify.dtokens", B * c->T * D, err));
    EX_CHECK(plan_t(plan, &c->drop_d, "classify.drop_path", 2 * c->depth * B, err));
    c->planned = 1;
    return EX_OK;
}

static ex_status need_ready(classify *c, ex_err *err) {
    EX_ENSURE(c->planned && c->ones.data && c->head.w, err, EX_E_INVALID,
              "classify: used before the memory plan was committed");
    if (c->ready) return EX_OK;
    OP(c, fill(c->env.be->ctx, F(c->ones), 1.0f, c->L), "fill");
    c->ready = 1;
    return EX_OK;
}

static ex_status cl_init(void *self, ex_rng *rng, ex_err *err) {
    classify *c = self;
    EX_ENSURE(rng, err, EX_E_INVALID, "classify: init() needs an rng");
    EX_CHECK(need_ready(c, err));
    void *ctx = c->env.be->ctx;
    OP(c, rng_normal(ctx, c->head.w, c->C * c->D, 0.0f, 2e-5f, rng), "rng_normal");
    OP(c, fill(ctx, c->head.b, 0.0f, c->C), "fill");
    if (c->pool == POOL_AVG) {
        OP(c, fill(ctx, c->fc_norm.w, 1.0f, c->D), "fill");
        OP(c, fill(ctx, c->fc_norm.b, 0.0f, c->D), "fill");
    }
    return EX_OK;
}

/* Checkpoint name -> ours: head.* and fc_norm.*, plain or under "param." / "model." / "module.". */
static int cl_map_name(void *user, const char *ckpt_name, char *out, size_t cap, int64_t *row_offset) {
    (void)user;
    (void)row_offset;
    const char *n = ckpt_name;
    if (strncmp(n, "module.", 7) == 0) n += 7;
    if (strncmp(n, "model.", 6) == 0) n += 6;
    if (strncmp(n, "param.", 6) == 0) n += 6;
    if (strncmp(n, "head.", 5) != 0 && strncmp(n, "fc_norm.", 8) != 0) return 0;
    snprintf(out, cap, "%s", n);
    return 1;
}

static ex_status cl_load(void *self, const char *path, ex_err *err) {
    classify *c = self;
    EX_CHECK(need_ready(c, err));
    ex_weights f;
    EX_CHECK(ex_weights_open(&f, path, err));
    ex_param *items[4] = {c->p_head_w, c->p_head_b, c->p_norm_w, c->p_norm_b};
    const int n = c->pool == POOL_AVG ? 4 : 2;
    for (int i = 0; i < n; i++) items[i]->optional = i >= 2; /* a cls-pooled checkpoint has no fc_norm */
    ex_params mine = {items, n, n};
    ex_status st = ex_params_load(&mine, c->env.be, &f, cl_map_name, c, 1, err);
    for (int i = 0; i < n; i++) items[i]->optional = 0;
    ex_weights_close(&f);
    if (st != EX_OK) ex_err_prefix(err, "classify head: ");
    return st;
}

/* Forward through pool, fc_norm and head: logits (B, C); *feat = the head's input (B, D). */
static ex_status head_forward(classify *c, const ex_batch *batch, int train, ex_rng *rng, const float **feat,
                              ex_err *err) {
    ex_backend *be = c->env.be;
    void *ctx = be->ctx;
    const int64_t B = batch->batch, D = c->D, T = c->T;
    const float *drop = NULL;
    if (train && c->drop_path > 0.0) {
        for (int64_t i = 0; i < c->depth; i++) {
            const double rate = c->depth > 1 ? c->drop_path * (double)i / (double)(c->depth - 1) : 0.0;
            EX_CHECK(ex_drop_path_scales(rng, rate, B, 2, c->h_drop + i * 2 * B, err));
        }
        EX_CHECK(ex_be_upload(be, F(c->drop_d), c->h_drop, sizeof(float) * (size_t)(2 * c->depth * B), err));
        drop = F(c->drop_d);
    }
    ex_backbone_io io;
    memset(&io, 0, sizeof io);
    io.batch = B, io.height = c->height, io.width = c->width, io.images = batch->views[0];
    io.mask_mode = EX_MASK_NONE, io.drop = drop, io.train = train;
    io.noise = train ? ex_noise_derive(batch->noise, 1) : 0;
    EX_CHECK(c->env.bb->forward(c->env.bb_self, &io, err));
    EX_ENSURE(io.tokens && io.num_tokens == T, err, EX_E_INTERNAL, "classify: the backbone returned %lld tokens, expected %lld",
              (long long)io.num_tokens, (long long)T);
    if (c->pool == POOL_CLS) {
        OP(c, copy2d(ctx, F(c->pooled), D, io.tokens, T * D, B, D), "copy2d");
        *feat = F(c->pooled);
    } else {
        /* pooled_b (1, D) = (1/L) ones (1, L) @ tokens_b[first:] (L, D) */
        ex_gemm_desc g;
        memset(&g, 0, sizeof g);
        g.m = 1, g.n = D, g.k = c->L, g.alpha = 1.0f / (float)c->L, g.beta = 0.0f;
        g.a = F(c->ones), g.a_dtype = EX_F32, g.lda = c->L, g.stride_a = 0;
        g.b = io.tokens + c->first * D, g.b_dtype = EX_F32, g.ldb = D, g.stride_b = T * D;
        g.c = F(c->pooled), g.ldc = D, g.stride_c = D, g.batch = B;
        EX_CHECK(ex_be_gemm(be, &g, err));
        EX_CHECK(ex_layernorm_forward(be, &c->fc_norm, F(c->normed), F(c->ln_mean), F(c->ln_rstd), F(c->pooled), B, err));
        *feat = F(c->normed);
    }
    EX_CHECK(ex_be_linear_fwd(be, F(c->logits), *feat, EX_F32, c->head.w, EX_F32, c->head.b, B, D, c->C, err));
    return EX_OK;
}

static ex_status check_batch(classify *c, const ex_batch *batch, ex_err *err) {
    EX_ENSURE(batch && batch->nviews >= 1 && batch->views[0], err, EX_E_INVALID, "classify: a batch needs one view");
    EX_ENSURE(batch->batch >= 1 && batch->batch <= c->Bmax, err, EX_E_SHAPE, "classify: batch %lld outside the planned 1..%lld",
              (long long)batch->batch, (long long)c->Bmax);
    EX_ENSURE(batch->height[0] == c->height && batch->width[0] == c->width, err, EX_E_SHAPE,
              "classify: the view is %lldx%lld, [objective] image_size is %lldx%lld", (long long)batch->height[0],
              (long long)batch->width[0], (long long)c->height, (long long)c->width);
    return EX_OK;
}

static ex_status cl_step(void *self, const ex_batch *batch, ex_rng *rng, int64_t iteration, ex_loss_terms *out,
                         ex_err *err) {
    classify *c = self;
    (void)iteration;
    EX_CHECK(need_ready(c, err));
    EX_CHECK(check_batch(c, batch, err));
    EX_ENSURE(batch->labels && rng && out, err, EX_E_INVALID,
              "classify: step() needs labelled data ([data] labels), an rng and an output");
    ex_backend *be = c->env.be;
    void *ctx = be->ctx;
    const int64_t B = batch->batch, D = c->D, C = c->C, T = c->T;
    /* soft targets */
    const float off = (float)(c->eps / (double)C), on = (float)(1.0 - c->eps) + off;
    for (int64_t b = 0; b < B; b++) {
        const int64_t y = batch->labels[b];
        EX_ENSURE(y >= 0 && y < C, err, EX_E_RANGE, "classify: label %lld of image %lld outside 0..%lld ([objective] classes = %lld)",
                  (long long)y, (long long)b, (long long)(C - 1), (long long)C);
        for (int64_t j = 0; j < C; j++) c->h_targets[b * C + j] = j == y ? on : off;
    }
    EX_CHECK(ex_be_upload(be, F(c->targets), c->h_targets, sizeof(float) * (size_t)(B * C), err));

    const float *feat = NULL;
    EX_CHECK(head_forward(c, batch, 1, rng, &feat, err));
    OP(c, xent_fwd(ctx, F(c->losses), F(c->probs), F(c->logits), NULL, F(c->targets), B, C), "xent_fwd");
    OP(c, reduce(ctx, EX_RED_MEAN, F(c->loss_d), F(c->losses), B), "reduce");
    float loss = 0.0f;
    EX_CHECK(ex_be_download(be, &loss, F(c->loss_d), sizeof loss, err));
    EX_CHECK(ex_be_download(be, c->h_scores, F(c->probs), sizeof(float) * (size_t)(B * C), err));
    int64_t correct = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t best = 0;
        for (int64_t j = 1; j < C; j++)
            if (c->h_scores[b * C + j] > c->h_scores[b * C + best]) best = j;
        correct += best == batch->labels[b];
    }

    /* backward */
    OP(c, fill(ctx, F(c->dlosses), ex_batch_grad_scale(batch) * (1.0f / (float)B), B), "fill"); /* exact: 2^k */
    OP(c, fill(ctx, F(c->dlogits), 0.0f, B * C), "fill");
    OP(c, xent_bwd(ctx, F(c->dlogits), F(c->dlosses), F(c->probs), NULL, F(c->targets), B, C), "xent_bwd");
    float *dfeat = c->pool == POOL_AVG ? F(c->dnormed) : F(c->dpooled);
    OP(c, fill(ctx, dfeat, 0.0f, B * D), "fill");
    EX_CHECK(ex_be_linear_bwd(be, dfeat, c->head.dw, c->head.db, F(c->dlogits), feat, EX_F32, c->head.w, EX_F32, B, D, C, err));
    OP(c, fill(ctx, F(c->dtok), 0.0f, B * T * D), "fill");
    if (c->pool == POOL_CLS) {
        OP(c, copy2d(ctx, F(c->dtok), T * D, F(c->dpooled), D, B, D), "copy2d");
    } else {
        OP(c, fill(ctx, F(c->dpooled), 0.0f, B * D), "fill");
        EX_CHECK(ex_layernorm_backward(be, &c->fc_norm, F(c->dpooled), F(c->dnormed), F(c->pooled), F(c->ln_mean),
                                       F(c->ln_rstd), B, err));
        /* dtokens_b[first:] (L, D) = (1/L) ones (L, 1) @ dpooled_b (1, D) */
        ex_gemm_desc g;
        memset(&g, 0, sizeof g);
        g.m = c->L, g.n = D, g.k = 1, g.alpha = 1.0f / (float)c->L, g.beta = 0.0f;
        g.a = F(c->ones), g.a_dtype = EX_F32, g.lda = 1, g.stride_a = 0;
        g.b = F(c->dpooled), g.b_dtype = EX_F32, g.ldb = D, g.stride_b = D;
        g.c = F(c->dtok) + c->first * D, g.ldc = D, g.stride_c = T * D, g.batch = B;
        EX_CHECK(ex_be_gemm(be, &g, err));
    }
    EX_CHECK(c->env.bb->backward(c->env.bb_self, F(c->dtok), NULL, err));

    memset(out, 0, sizeof *out);
    out->count = 2;
    out->names[0] = "ce";
    out->values[0] = (double)loss;
    out->names[1] = "train_acc";
    out->values[1] = 100.0 * (double)correct / (double)B;
    out->total = (double)loss;
    out->grad_scaled = 1;
    return EX_OK;
}

static ex_status cl_evaluate(void *self, const ex_batch *batch, int64_t *predictions, int k, ex_err *err) {
    classify *c = self;
    EX_CHECK(need_ready(c, err));
    EX_CHECK(check_batch(c, batch, err));
    EX_ENSURE(predictions && k >= 1, err, EX_E_INVALID, "classify: evaluate() needs an output for k >= 1 classes");
    const int64_t B = batch->batch, C = c->C;
    const float *feat = NULL;
    EX_CHECK(head_forward(c, batch, 0, NULL, &feat, err));
    EX_CHECK(ex_be_download(c->env.be, c->h_scores, F(c->logits), sizeof(float) * (size_t)(B * C), err));
    for (int64_t b = 0; b < B; b++) {
        const float *s = c->h_scores + b * C;
        int64_t *p = predictions + b * k;
        for (int r = 0; r < k; r++) {
            int64_t best = -1;
            for (int64_t j = 0; j < C; j++) {
                int taken = 0;
                for (int q = 0; q < r && !taken; q++) taken = p[q] == j;
                if (taken) continue;
                if (best < 0 || s[j] > s[best]) best = j; /* ties: the lower class index first */
            }
            p[r] = best;
        }
    }
    return EX_OK;
}

static const ex_objective_vtable cl_vtable = {
    /* .create         = */ cl_create,
    /* .destroy        = */ cl_destroy,
    /* .views          = */ cl_views,
    /* .backbone_shape = */ cl_backbone_shape,
    /* .plan           = */ cl_plan,
    /* .init           = */ cl_init,
    /* .load           = */ cl_load,
    /* .step           = */ cl_step,
    /* .update         = */ NULL,
    /* .evaluate       = */ cl_evaluate,
    /* .save_state     = */ NULL,
    /* .load_state     = */ NULL,
    /* .teacher_shape  = */ NULL, /* no teacher */
};

static const ex_plugin_desc cl_desc =
    EX_PLUGIN_DESC(EX_PLUGIN_OBJECTIVE, "classify", "0.1.0",
                   "Supervised fine-tuning: linear head on pooled tokens, label-smoothed cross-entropy (LoRA fine-tuning)",
                   cl_keys, &cl_vtable);

EX_PLUGIN_ENTRY { return &cl_desc; }
