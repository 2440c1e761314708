/*
 * plugins/vit/vit_model.c — the ViT: parameters, activation plan, forward and backward.
 *
 * Forward, for B images (C, H, W), grid nh x nw = (H/p) x (W/p), Np = nh*nw:
 *   patches (B, Np, C*p*p)  = patchify(images)                     (conv weight order)
 *   pemb    (B, Np, D)      = patches @ Wpe^T + bpe
 *   [iBOT]  pemb rows where mask = mask_token
 *   pemb   += pos[1:] (resampled to nh x nw when the table's grid differs)
 *   x0      (B, T, D)       = [cls + pos[0], registers, prompts (no pos), patches]   T = 1 + R + P + Np
 *   [MAE]   only the patches ids_keep (B, keep) are placed, T = 1 + R + keep
 *   x_{i+1} = block_i(x_i);  out = norm(x_depth)
 * Backward walks the same steps in reverse with one residual-gradient buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "explora/augment.h"
#include "vit_internal.h"

#define BE(v) ((v)->be)
#define F(t) ((float *)(t).data)

/* Run a backend op and turn a failure into a message naming it. */
#define OP(v, call, what)                                                                         \
    do {                                                                                          \
        ex_status op__s = (v)->be->vt.call;                                                       \
        if (op__s != EX_OK) EX_FAIL(err, op__s, "vit: %s failed on backend '%s'", what, (v)->be->name); \
    } while (0)

/* --- parameters ---------------------------------------------------------------------- */

static ex_status add(vit *v, const char *name, int ndim, const int64_t *shape, const char *group, float **val,
                     float **grad, ex_err *err) {
    return ex_params_add(v->params, name, ndim, shape, group, val, grad, NULL, err);
}

static ex_status add_linear(vit *v, const char *prefix, ex_linear *l, int64_t in, int64_t out, int bias, const char *group,
                            ex_err *err) {
    char name[EX_NAME_MAX];
    l->in = in;
    l->out = out;
    snprintf(name, sizeof name, "%s.weight", prefix);
    ex_param *w = NULL;
    EX_CHECK(ex_params_add(v->params, name, 2, (int64_t[]){out, in}, group, &l->w, &l->dw, &w, err));
    ex_params_mark_gemm_operand(w, &l->w_dtype); /* read by the GEMM only: may be bf16 while frozen */
    if (bias) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        EX_CHECK(add(v, name, 1, (int64_t[]){out}, "bias", &l->b, &l->db, err));
    }
    return EX_OK;
}

static ex_status add_norm(vit *v, const char *prefix, ex_layernorm *ln, ex_err *err) {
    char name[EX_NAME_MAX];
    ln->dim = v->a.dim;
    ln->eps = v->a.eps;
    snprintf(name, sizeof name, "%s.weight", prefix);
    EX_CHECK(add(v, name, 1, (int64_t[]){v->a.dim}, "norm", &ln->w, &ln->dw, err));
    snprintf(name, sizeof name, "%s.bias", prefix);
    return add(v, name, 1, (int64_t[]){v->a.dim}, "norm", &ln->b, &ln->db, err);
}

ex_status vit_register_params(vit *v, ex_err *err) {
    const vit_arch *a = &v->a;
    const int64_t D = a->dim, P = a->patch;
    v->blocks = calloc((size_t)a->depth, sizeof *v->blocks);
    EX_ENSURE(v->blocks, err, EX_E_NOMEM, "vit: out of memory");
    EX_CHECK(add(v, "cls_token", 3, (int64_t[]){1, 1, D}, "token", &v->cls, &v->dcls, err));
    if (a->registers > 0)
        EX_CHECK(add(v, "register_tokens", 3, (int64_t[]){1, a->registers, D}, "token", &v->reg, &v->dreg, err));
    if (a->mask_token) EX_CHECK(add(v, "mask_token", 2, (int64_t[]){1, D}, "token", &v->mask_tok, &v->dmask_tok, err));
    EX_CHECK(add(v, "pos_embed", 3, (int64_t[]){1, 1 + a->grid_h * a->grid_w, D}, "pos_embed", &v->pos, &v->dpos, err));
    v->patch_embed.in = a->channels * P * P;
    v->patch_embed.out = D;
    ex_param *pw = NULL;
    EX_CHECK(ex_params_add(v->params, "patch_embed.proj.weight", 4, (int64_t[]){D, a->channels, P, P}, "patch_embed",
                           &v->patch_embed.w, &v->patch_embed.dw, &pw, err));
    ex_params_mark_gemm_operand(pw, &v->patch_embed.w_dtype);
    EX_CHECK(add(v, "patch_embed.proj.bias", 1, (int64_t[]){D}, "bias", &v->patch_embed.b, &v->patch_embed.db, err));
    for (int64_t i = 0; i < a->depth; i++) {
        ex_block *b = &v->blocks[i];
        char pre[64], name[96];
        b->dim = D;
        b->heads = a->heads;
        b->hidden = a->hidden;
        b->mlp = a->mlp;
        snprintf(pre, sizeof pre, "blocks.%lld", (long long)i);
        snprintf(name, sizeof name, "%s.norm1", pre);
        EX_CHECK(add_norm(v, name, &b->norm1, err));
        snprintf(name, sizeof name, "%s.attn.qkv", pre);
        EX_CHECK(add_linear(v, name, &b->qkv, D, 3 * D, a->qkv_bias, "attn", err));
        snprintf(name, sizeof name, "%s.attn.proj", pre);
        EX_CHECK(add_linear(v, name, &b->proj, D, D, 1, "attn", err));
        if (a->layerscale) {
            snprintf(name, sizeof name, "%s.ls1.gamma", pre);
            EX_CHECK(add(v, name, 1, (int64_t[]){D}, "layerscale", &b->ls1, &b->dls1, err));
        }
        snprintf(name, sizeof name, "%s.norm2", pre);
        EX_CHECK(add_norm(v, name, &b->norm2, err));
        int swiglu = a->mlp == EX_MLP_SWIGLU;
        snprintf(name, sizeof name, "%s.mlp.%s", pre, swiglu ? "w12" : "fc1");
        EX_CHECK(add_linear(v, name, &b->fc1, D, swiglu ? 2 * a->hidden : a->hidden, 1, "mlp", err));
        snprintf(name, sizeof name, "%s.mlp.%s", pre, swiglu ? "w3" : "fc2");
        EX_CHECK(add_linear(v, name, &b->fc2, a->hidden, D, 1, "mlp", err));
        if (a->layerscale) {
            snprintf(name, sizeof name, "%s.ls2.gamma", pre);
            EX_CHECK(add(v, name, 1, (int64_t[]){D}, "layerscale", &b->ls2, &b->dls2, err));
        }
    }
    v->norm.dim = D;
    v->norm.eps = a->eps;
    return add_norm(v, "norm", &v->norm, err);
}

/* --- activation plan ------------------------------------------------------------------- */

static ex_status plan_buf(ex_memory_plan *plan, ex_tensor *t, const char *name, int64_t floats, ex_err *err) {
    EX_CHECK(ex_tensor_init(t, name, EX_F32, 1, (int64_t[]){floats > 0 ? floats : 1}, err));
    return ex_arena_add(&plan->arenas[EX_MEM_ACTIVATION], t, err);
}

ex_status vit_plan(void *self, const ex_backbone_shape *max, ex_memory_plan *plan, ex_err *err) {
    vit *v = self;
    const vit_arch *a = &v->a;
    EX_ENSURE(max->batch >= 1 && max->height >= a->patch && max->width >= a->patch, err, EX_E_CONFIG,
              "vit: cannot plan for batch %lld of %lldx%lld images (patch %lld).", (long long)max->batch,
              (long long)max->height, (long long)max->width, (long long)a->patch);
    EX_ENSURE(max->height % a->patch == 0 && max->width % a->patch == 0, err, EX_E_CONFIG,
              "vit: image size %lldx%lld is not a multiple of the patch size %lld.", (long long)max->height,
              (long long)max->width, (long long)a->patch);
    v->max = *max;
    const int64_t D = a->dim, nh = max->height / a->patch, nw = max->width / a->patch;
    /* an inference plan that only reads the final tokens runs its forward over chunks of at most
     * VIT_INFER_CHUNK images: everything but the output is planned for one chunk */
    v->pingpong = max->inference && max->final_only;
    v->chunk = v->pingpong && max->batch > VIT_INFER_CHUNK ? VIT_INFER_CHUNK : max->batch;
    const int64_t B = v->chunk, Bout = max->batch;
    const int64_t E = a->registers + v->prompts; /* learned tokens between cls and the patches */
    const int64_t Np = nh * nw, T = 1 + E + Np, K = a->channels * a->patch * a->patch;
    const int64_t side = nh > nw ? nh : nw, gside = a->grid_h > a->grid_w ? a->grid_h : a->grid_w;
    v->max_tokens = T;
    /* inference: nothing for backward (1-float placeholders) and one block's activations for every block */
    const int inf = max->inference != 0;
    EX_CHECK(plan_buf(plan, &v->patches, "vit.patches", B * Np * K * (max->input_grad && !inf ? 2 : 1), err));
    EX_CHECK(plan_buf(plan, &v->pemb, "vit.pemb", B * Np * D, err));
    EX_CHECK(plan_buf(plan, &v->dpemb, "vit.dpemb", inf ? 1 : B * Np * D, err));
    EX_CHECK(plan_buf(plan, &v->dpemb2, "vit.dpemb2", B * Np * D, err)); /* also the kept patches of a drop-mask forward */
    EX_CHECK(plan_buf(plan, &v->pos_rs, "vit.pos_rs", (1 + Np) * D, err));
    EX_CHECK(plan_buf(plan, &v->dpos_rs, "vit.dpos_rs", inf ? 1 : (1 + Np) * D, err));
    EX_CHECK(plan_buf(plan, &v->rh, "vit.rh", side * gside, err));
    EX_CHECK(plan_buf(plan, &v->rw, "vit.rw", side * gside, err));
    EX_CHECK(plan_buf(plan, &v->rtmp, "vit.rtmp", side * gside * D, err));
    EX_CHECK(plan_buf(plan, &v->row, "vit.row", B * (E > 0 ? E : 1) * D, err));
    /* the residual stream after every block (backward and block_output read them), or two buffers used in
     * turn when only the final tokens of an inference forward matter */
    EX_CHECK(plan_buf(plan, &v->xs, "vit.residual", (v->pingpong ? 2 : a->depth + 1) * B * T * D, err));
    /* the blocks' GEMM inputs in fp32 or bf16 (ex_block_set_act_dtype): sizes the acts below */
    if (max->act_dtype == EX_BF16)
        EX_ENSURE(v->be->vt.layernorm_fwd_bf16 && v->be->vt.gelu_fwd_bf16, err, EX_E_UNSUPPORTED,
                  "vit: backend '%s' cannot keep activations in bf16 (no layernorm_fwd_bf16 / gelu_fwd_bf16); set "
                  "[optim] activation_dtype = fp32",
                  v->be->name);
    for (int64_t i = 0; i < a->depth; i++) EX_CHECK(ex_block_set_act_dtype(&v->blocks[i], max->act_dtype, err));
    v->acts_floats = ex_block_acts_floats(&v->blocks[0], B, T);
    /* inference keeps no block's activations past the next block: one buffer for all. Training keeps a buffer
     * per block, except that the first `recompute` blocks share one and rebuild theirs before their backward */
    v->shared_acts = inf;
    const int64_t kept = inf ? 1 : a->recompute > 0 ? a->depth - a->recompute + 1 : a->depth;
    EX_CHECK(plan_buf(plan, &v->acts, "vit.block_acts", kept * (int64_t)v->acts_floats, err));
    EX_CHECK(plan_buf(plan, &v->scratch, "vit.block_scratch",
                      inf ? 1 : (int64_t)ex_block_scratch_floats(&v->blocks[0], B, T), err));
    EX_CHECK(plan_buf(plan, &v->out, "vit.out", Bout * T * D, err));
    EX_CHECK(plan_buf(plan, &v->mean, "vit.norm_mean", Bout * T, err));
    EX_CHECK(plan_buf(plan, &v->rstd, "vit.norm_rstd", Bout * T, err));
    EX_CHECK(plan_buf(plan, &v->dresid, "vit.dresid", inf ? 1 : B * T * D, err));
    return EX_OK;
}

/* Which activation buffer block i binds: 0 for every block of an inference plan and for the recomputed blocks
 * (0 .. recompute-1), a buffer of its own for every other block. */
static int64_t acts_slot(const vit *v, int64_t i) {
    if (v->shared_acts) return 0;
    if (v->a.recompute == 0) return i;
    return i < v->a.recompute ? 0 : i - v->a.recompute + 1;
}

int vit_block_acts_kept(const vit *v, int64_t i) {
    if (!v->shared_acts && (v->a.recompute == 0 || i >= v->a.recompute)) return 1; /* a buffer of its own */
    return i == v->shared_holds;
}

ex_status vit_ready(void *self, ex_err *err) {
    vit *v = self;
    EX_ENSURE(v->acts.data, err, EX_E_INVALID, "vit: ready() before the memory plan was committed");
    v->block_acts = calloc((size_t)v->a.depth, sizeof *v->block_acts);
    EX_ENSURE(v->block_acts, err, EX_E_NOMEM, "vit: out of memory");
    for (int64_t i = 0; i < v->a.depth; i++)
        ex_block_acts_bind(&v->block_acts[i], &v->blocks[i], v->chunk, v->max_tokens,
                           F(v->acts) + (size_t)acts_slot(v, i) * v->acts_floats);
    if (v->a.pos == VIT_POS_SINCOS) {
        const int64_t rows = 1 + v->a.grid_h * v->a.grid_w;
        float *table = malloc(sizeof(float) * (size_t)(rows * v->a.dim));
        EX_ENSURE(table, err, EX_E_NOMEM, "vit: out of memory");
        vit_sincos_table(v->a.dim, v->a.grid_h, v->a.grid_w, 1, table);
        ex_status st = ex_be_upload(v->be, v->pos, table, sizeof(float) * (size_t)(rows * v->a.dim), err);
        free(table);
        EX_CHECK(st);
    }
    v->cur_nh = v->cur_nw = 0;
    v->shared_holds = -1;
    return EX_OK;
}

/* --- position table at the current grid ------------------------------------------------------ */

static int pos_identity(const vit *v, int64_t nh, int64_t nw) { return nh == v->a.grid_h && nw == v->a.grid_w; }

static ex_status upload_weights(vit *v, ex_tensor *dst, int64_t m, int64_t n, ex_err *err) {
    double *w = malloc(sizeof(double) * (size_t)(m * n));
    float *f = malloc(sizeof(float) * (size_t)(m * n));
    if (!w || !f) {
        free(w);
        free(f);
        EX_FAIL(err, EX_E_NOMEM, "vit: out of memory");
    }
    static const ex_filter filters[3] = {EX_FILTER_CUBIC_DINOV2, EX_FILTER_CUBIC_NOAA, EX_FILTER_BICUBIC};
    ex_resample_weights(filters[v->a.interp], m, n, 0.0, (double)m, w);
    for (int64_t i = 0; i < m * n; i++) f[i] = (float)w[i];
    ex_status st = ex_be_upload(v->be, dst->data, f, sizeof(float) * (size_t)(m * n), err);
    free(w);
    free(f);
    return st;
}

/* pos_rs (1 + nh*nw, D) = [pos row 0, R_h . grid . R_w^T]; returns the table to use. */
static ex_status position_table(vit *v, int64_t nh, int64_t nw, const float **table, ex_err *err) {
    const int64_t D = v->a.dim, gh = v->a.grid_h, gw = v->a.grid_w;
    if (pos_identity(v, nh, nw)) {
        *table = v->pos;
        return EX_OK;
    }
    if (nh != v->cur_nh || nw != v->cur_nw) {
        EX_CHECK(upload_weights(v, &v->rh, gh, nh, err));
        EX_CHECK(upload_weights(v, &v->rw, gw, nw, err));
        v->cur_nh = nh;
        v->cur_nw = nw;
    }
    float *rs = F(v->pos_rs);
    OP(v, copy2d(v->be->ctx, rs, D, v->pos, D, 1, D), "copy2d");
    /* rtmp (nh, gw*D) = R_h (nh, gh) @ grid (gh, gw*D) */
    ex_gemm_desc g = {0};
    g.m = nh, g.n = gw * D, g.k = gh, g.alpha = 1, g.beta = 0;
    g.a = F(v->rh), g.a_dtype = EX_F32, g.lda = gh;
    g.b = v->pos + D, g.b_dtype = EX_F32, g.ldb = gw * D;
    g.c = F(v->rtmp), g.ldc = gw * D, g.batch = 1;
    EX_CHECK(ex_be_gemm(v->be, &g, err));
    /* for each output row i: rs_i (nw, D) = R_w (nw, gw) @ rtmp_i (gw, D) */
    ex_gemm_desc h = {0};
    h.m = nw, h.n = D, h.k = gw, h.alpha = 1, h.beta = 0;
    h.a = F(v->rw), h.a_dtype = EX_F32, h.lda = gw, h.stride_a = 0;
    h.b = F(v->rtmp), h.b_dtype = EX_F32, h.ldb = D, h.stride_b = gw * D;
    h.c = rs + D, h.ldc = D, h.stride_c = nw * D, h.batch = nh;
    EX_CHECK(ex_be_gemm(v->be, &h, err));
    *table = rs;
    return EX_OK;
}

/* d grid (gh, gw*D) += R_h^T . (R_w^T . d rs_i)_i : the transpose of position_table. */
static ex_status position_table_backward(vit *v, int64_t nh, int64_t nw, ex_err *err) {
    const int64_t D = v->a.dim, gh = v->a.grid_h, gw = v->a.grid_w;
    ex_gemm_desc h = {0}; /* rtmp_i (gw, D) = R_w^T (gw, nw) @ drs_i (nw, D) */
    h.trans_a = 1, h.m = gw, h.n = D, h.k = nw, h.alpha = 1, h.beta = 0;
    h.a = F(v->rw), h.a_dtype = EX_F32, h.lda = gw, h.stride_a = 0;
    h.b = F(v->dpos_rs) + D, h.b_dtype = EX_F32, h.ldb = D, h.stride_b = nw * D;
    h.c = F(v->rtmp), h.ldc = D, h.stride_c = gw * D, h.batch = nh;
    EX_CHECK(ex_be_gemm(v->be, &h, err));
    ex_gemm_desc g = {0}; /* dgrid (gh, gw*D) += R_h^T (gh, nh) @ rtmp (nh, gw*D) */
    g.trans_a = 1, g.m = gh, g.n = gw * D, g.k = nh, g.alpha = 1, g.beta = 1;
    g.a = F(v->rh), g.a_dtype = EX_F32, g.lda = gh;
    g.b = F(v->rtmp), g.b_dtype = EX_F32, g.ldb = gw * D;
    g.c = v->dpos + D, g.ldc = gw * D, g.batch = 1;
    return ex_be_gemm(v->be, &g, err);
}

/* --- forward ---------------------------------------------------------------------------- */

static ex_status forward_images(vit *v, const ex_backbone_io *io, float *out, float *mean, float *rstd, ex_err *err);

ex_status vit_forward(void *self, ex_backbone_io *io, ex_err *err) {
    vit *v = self;
    const vit_arch *a = &v->a;
    const int64_t B = io->batch, D = a->dim, P = a->patch, R = a->registers, Q = v->prompts, E = R + Q;
    EX_ENSURE(v->block_acts, err, EX_E_INVALID, "vit: forward() before ready()");
    EX_ENSURE(!io->train || !v->max.inference, err, EX_E_INVALID,
              "vit: a training forward (train = 1) on a model planned for inference only");
    EX_ENSURE(B >= 1 && B <= v->max.batch, err, EX_E_SHAPE, "vit: batch %lld outside the planned 1..%lld",
              (long long)B, (long long)v->max.batch);
    EX_ENSURE(io->height % P == 0 && io->width % P == 0 && io->height > 0 && io->width > 0, err, EX_E_SHAPE,
              "vit: image %lldx%lld is not a multiple of the patch size %lld", (long long)io->height,
              (long long)io->width, (long long)P);
    const int64_t nh = io->height / P, nw = io->width / P, Np = nh * nw;
    const int64_t keep = io->mask_mode == EX_MASK_DROP ? io->keep : Np;
    const int64_t T = 1 + E + keep;
    EX_ENSURE((B < v->chunk ? B : v->chunk) * Np * D <= ex_tensor_numel(&v->pemb) && T <= v->max_tokens &&
                  (1 + Np) * D <= ex_tensor_numel(&v->pos_rs),
              err, EX_E_SHAPE, "vit: %lldx%lld images need more memory than planned for %lldx%lld",
              (long long)io->height, (long long)io->width, (long long)v->max.height, (long long)v->max.width);
    int64_t side = nh > nw ? nh : nw;
    EX_ENSURE(side * (a->grid_h > a->grid_w ? a->grid_h : a->grid_w) <= ex_tensor_numel(&v->rh), err, EX_E_SHAPE,
              "vit: grid %lldx%lld exceeds the planned resampling size", (long long)nh, (long long)nw);
    EX_ENSURE(io->mask_mode != EX_MASK_REPLACE || (io->mask && v->mask_tok), err, EX_E_INVALID,
              "vit: mask mode 'replace' needs a mask and a model with a mask_token");
    EX_ENSURE(io->mask_mode != EX_MASK_DROP || (io->ids_keep && keep >= 1 && keep <= Np), err, EX_E_INVALID,
              "vit: mask mode 'drop' needs ids_keep with 1..%lld patches per image (got %lld)", (long long)Np,
              (long long)keep);

    if (v->pingpong && B > v->chunk) { /* chunks of images; no drop path in an inference forward */
        EX_ENSURE(!io->drop, err, EX_E_INVALID, "vit: drop-path scales in an inference forward");
        const int64_t C = a->channels;
        for (int64_t b0 = 0; b0 < B; b0 += v->chunk) {
            ex_backbone_io sub = *io;
            sub.batch = B - b0 < v->chunk ? B - b0 : v->chunk;
            sub.images = io->images + (size_t)(b0 * C * io->height * io->width);
            if (io->mask) sub.mask = io->mask + (size_t)(b0 * Np);
            if (io->ids_keep) sub.ids_keep = io->ids_keep + (size_t)(b0 * keep);
            EX_CHECK(forward_images(v, &sub, F(v->out) + (size_t)(b0 * T * D), F(v->mean) + (size_t)(b0 * T),
                                    F(v->rstd) + (size_t)(b0 * T), err));
        }
    } else {
        EX_CHECK(forward_images(v, io, F(v->out), F(v->mean), F(v->rstd), err));
    }
    io->tokens = F(v->out);
    io->num_tokens = T;
    v->last = *io;
    v->np = Np;
    v->ntok = T;
    return EX_OK;
}

/* The forward of io->batch (<= the planned chunk) images into out (batch, T, D) with the final norm's statistics
 * mean, rstd (batch, T). */
static ex_status forward_images(vit *v, const ex_backbone_io *io, float *out, float *mean, float *rstd, ex_err *err) {
    v->shared_holds = -1; /* until this forward is through */
    const vit_arch *a = &v->a;
    void *c = v->be->ctx;
    const int64_t B = io->batch, D = a->dim, P = a->patch, R = a->registers, Q = v->prompts, E = R + Q;
    const int64_t nh = io->height / P, nw = io->width / P, Np = nh * nw;
    const int64_t keep = io->mask_mode == EX_MASK_DROP ? io->keep : Np;
    const int64_t T = 1 + E + keep;
    float *patches = F(v->patches), *pemb = F(v->pemb);
    OP(v, patchify_fwd(c, patches, io->images, B, a->channels, io->height, io->width, P, EX_PATCH_CPP), "patchify_fwd");
    EX_CHECK(ex_linear_forward(v->be, &v->patch_embed, pemb, patches, B * Np, io->train, io->noise, err));
    if (io->mask_mode == EX_MASK_REPLACE) OP(v, mask_rows_fwd(c, pemb, pemb, io->mask, v->mask_tok, B * Np, D), "mask_rows_fwd");
    const float *pos = NULL;
    EX_CHECK(position_table(v, nh, nw, &pos, err));
    OP(v, bias_add_fwd(c, pemb, pos + D, B, Np * D), "bias_add_fwd");

    float *x0 = F(v->xs), *row = F(v->row);
    OP(v, binary(c, EX_BIN_ADD, row, v->cls, pos, D), "binary");
    OP(v, copy2d(c, x0, T * D, row, 0, B, D), "copy2d");
    if (R > 0) OP(v, copy2d(c, x0 + D, T * D, v->reg, 0, B, R * D), "copy2d");
    if (Q > 0) OP(v, copy2d(c, x0 + (1 + R) * D, T * D, v->prompt, 0, B, Q * D), "copy2d");
    if (io->mask_mode == EX_MASK_DROP) {
        float *kept = F(v->dpemb2); /* (B, keep, D) */
        OP(v, gather_rows(c, kept, pemb, io->ids_keep, B, keep, Np, D), "gather_rows");
        OP(v, copy2d(c, x0 + (1 + E) * D, T * D, kept, keep * D, B, keep * D), "copy2d");
    } else {
        OP(v, copy2d(c, x0 + (1 + E) * D, T * D, pemb, Np * D, B, Np * D), "copy2d");
    }
    const size_t stream = (size_t)(B * T * D);
    /* residual stream i: its own buffer, or (pingpong) buffer i mod 2 */
#define XS(i) (x0 + (size_t)(v->pingpong ? (i) % 2 : (i)) * stream)
    for (int64_t i = 0; i < a->depth; i++) {
        const float *d1 = io->drop ? io->drop + (2 * i) * B : NULL, *d2 = io->drop ? io->drop + (2 * i + 1) * B : NULL;
        EX_CHECK(ex_block_forward(v->be, &v->blocks[i], &v->block_acts[i], XS(i + 1), XS(i), d1, d2, B, T, io->train,
                                  io->noise, err));
    }
    EX_CHECK(ex_layernorm_forward(v->be, &v->norm, out, mean, rstd, XS(a->depth), B * T, err));
#undef XS
    /* the shared buffer holds the last block that used it: every block of an inference plan, else the last of the
     * recomputed ones */
    v->shared_holds = v->shared_acts ? a->depth - 1 : a->recompute > 0 ? a->recompute - 1 : -1;
    return EX_OK;
}

/* --- backward ------------------------------------------------------------------------------ */

static int patch_grads_needed(const vit *v, const float *dimages) {
    return dimages || v->patch_embed.dw || v->patch_embed.db || v->patch_embed.hooks || v->dmask_tok ||
           (v->dpos && v->a.pos == VIT_POS_LEARNED);
}

ex_status vit_backward(void *self, const float *dtokens, float *dimages, ex_err *err) {
    vit *v = self;
    const vit_arch *a = &v->a;
    const ex_backbone_io *io = &v->last;
    void *c = v->be->ctx;
    EX_ENSURE(io->train && io->tokens, err, EX_E_INVALID, "vit: backward() needs a forward with train = 1 before it");
    const int64_t B = io->batch, D = a->dim, P = a->patch, R = a->registers, Q = v->prompts, E = R + Q;
    const int64_t T = v->ntok, Np = v->np;
    const int64_t nh = io->height / P, nw = io->width / P, keep = T - 1 - E;
    const size_t stream = (size_t)(B * T * D);
    float *x0 = F(v->xs), *dres = F(v->dresid), *row = F(v->row);
    const int pos_trainable = v->dpos && a->pos == VIT_POS_LEARNED;

    OP(v, fill(c, dres, 0.0f, B * T * D), "fill");
    EX_CHECK(ex_layernorm_backward(v->be, &v->norm, dres, dtokens, x0 + (size_t)a->depth * stream, F(v->mean),
                                   F(v->rstd), B * T, err));
    for (int64_t i = a->depth - 1; i >= 0; i--) {
        const float *d1 = io->drop ? io->drop + (2 * i) * B : NULL, *d2 = io->drop ? io->drop + (2 * i + 1) * B : NULL;
        /* rebuild block i's activations (bitwise the same: the ops are deterministic and the adapters' random
         * draws are keyed on the pass's noise key, not on a call count). The last block to share the buffer still
         * has its own there from the forward. */
        if (!vit_block_acts_kept(v, i)) {
            v->shared_holds = -1; /* overwritten from here: the rebuild below may fail half way */
            EX_CHECK(ex_block_forward(v->be, &v->blocks[i], &v->block_acts[i], x0 + (size_t)(i + 1) * stream,
                                      x0 + (size_t)i * stream, d1, d2, B, T, 1, io->noise, err));
            v->shared_holds = i;
        }
        EX_CHECK(ex_block_backward(v->be, &v->blocks[i], &v->block_acts[i], dres, x0 + (size_t)i * stream, d1, d2,
                                   F(v->scratch), B, T, err));
    }
    /* dres now holds dL/dx0 (B, T, D). cls row: cls_token and pos[0]. */
    if (v->dcls || pos_trainable) {
        OP(v, copy2d(c, row, D, dres, T * D, B, D), "copy2d");
        if (v->dcls) OP(v, bias_add_bwd(c, v->dcls, row, B, D), "bias_add_bwd");
        if (pos_trainable) OP(v, bias_add_bwd(c, v->dpos, row, B, D), "bias_add_bwd");
    }
    if (R > 0 && v->dreg) {
        OP(v, copy2d(c, row, R * D, dres + D, T * D, B, R * D), "copy2d");
        OP(v, bias_add_bwd(c, v->dreg, row, B, R * D), "bias_add_bwd");
    }
    if (Q > 0 && v->dprompt) {
        OP(v, copy2d(c, row, Q * D, dres + (1 + R) * D, T * D, B, Q * D), "copy2d");
        OP(v, bias_add_bwd(c, v->dprompt, row, B, Q * D), "bias_add_bwd");
    }
    if (!patch_grads_needed(v, dimages)) return EX_OK;

    float *dpemb = F(v->dpemb), *tmp = F(v->dpemb2);
    if (io->mask_mode == EX_MASK_DROP) {
        OP(v, copy2d(c, tmp, keep * D, dres + (1 + E) * D, T * D, B, keep * D), "copy2d");
        OP(v, fill(c, dpemb, 0.0f, B * Np * D), "fill");
        OP(v, scatter_add_rows(c, dpemb, tmp, io->ids_keep, B, keep, Np, D), "scatter_add_rows");
    } else {
        OP(v, copy2d(c, dpemb, Np * D, dres + (1 + E) * D, T * D, B, Np * D), "copy2d");
    }
    if (pos_trainable) {
        if (pos_identity(v, nh, nw)) {
            OP(v, bias_add_bwd(c, v->dpos + D, dpemb, B, Np * D), "bias_add_bwd");
        } else {
            OP(v, fill(c, F(v->dpos_rs), 0.0f, (1 + Np) * D), "fill");
            OP(v, bias_add_bwd(c, F(v->dpos_rs) + D, dpemb, B, Np * D), "bias_add_bwd");
            EX_CHECK(position_table_backward(v, nh, nw, err));
        }
    }
    const float *dpatch_out = dpemb;
    if (io->mask_mode == EX_MASK_REPLACE) {
        OP(v, fill(c, tmp, 0.0f, B * Np * D), "fill");
        OP(v, mask_rows_bwd(c, tmp, v->dmask_tok, dpemb, io->mask, B * Np, D), "mask_rows_bwd");
        dpatch_out = tmp;
    }
    const int64_t K = a->channels * P * P;
    float *dpatches = dimages ? F(v->patches) + B * Np * K : NULL; /* second half, planned with input_grad */
    EX_ENSURE(!dimages || v->max.input_grad, err, EX_E_INVALID,
              "vit: the image gradient was not planned (ex_backbone_shape.input_grad = 0)");
    if (dpatches) OP(v, fill(c, dpatches, 0.0f, B * Np * K), "fill");
    EX_CHECK(ex_linear_backward(v->be, &v->patch_embed, dpatches, dpatch_out, F(v->patches), B * Np, err));
    if (dimages) OP(v, patchify_bwd(c, dimages, dpatches, B, a->channels, io->height, io->width, P, EX_PATCH_CPP), "patchify_bwd");
    return EX_OK;
}

/* --- sites and outputs --------------------------------------------------------------------- */

ex_linear *vit_site(void *self, const char *name) {
    vit *v = self;
    if (strcmp(name, "patch_embed") == 0) return &v->patch_embed;
    long long i;
    char rest[64];
    if (sscanf(name, "blocks.%lld.%63s", &i, rest) != 2 || i < 0 || i >= v->a.depth) return NULL;
    ex_block *b = &v->blocks[i];
    if (strcmp(rest, "attn.qkv") == 0) return &b->qkv;
    if (strcmp(rest, "attn.proj") == 0) return &b->proj;
    if (strcmp(rest, "mlp.fc1") == 0 || strcmp(rest, "mlp.w12") == 0) return &b->fc1;
    if (strcmp(rest, "mlp.fc2") == 0 || strcmp(rest, "mlp.w3") == 0) return &b->fc2;
    return NULL;
}

const float *vit_block_output(void *self, int64_t i) {
    vit *v = self;
    if (i < 0 || i >= v->a.depth || !v->last.tokens || v->pingpong) return NULL; /* planned final_only */
    return F(v->xs) + (size_t)(i + 1) * (size_t)(v->last.batch * v->ntok * v->a.dim);
}

/* --- VPT-shallow prompts ---------------------------------------------------------------------- */

ex_status vit_add_prompts(void *self, int64_t count, ex_err *err) {
    vit *v = self;
    EX_ENSURE(count >= 1 && count <= 4096, err, EX_E_CONFIG, "vit: %lld prompt tokens (1..4096)", (long long)count);
    EX_ENSURE(v->prompts == 0, err, EX_E_INVALID, "vit: prompt tokens were already added");
    EX_ENSURE(!v->acts.data && v->max.batch == 0, err, EX_E_INVALID, "vit: prompts must be added before planning");
    ex_param *p = NULL;
    EX_CHECK(ex_params_add(v->params, "prompt_tokens", 3, (int64_t[]){1, count, v->a.dim}, "prompt", &v->prompt,
                           &v->dprompt, &p, err));
    p->trainable = 1;
    p->optional = 1; /* never in a base checkpoint */
    v->prompts = count;
    return EX_OK;
}
