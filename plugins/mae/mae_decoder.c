/*
 * plugins/mae/mae_decoder.c — the MAE decoder (models_mae.py forward_decoder):
 * parameters, activation plan, forward, backward, its LoRA hook and its
 * initialisation.
 *
 * Forward, for B images, L patches of which `keep` were encoded, T = 1 + L,
 * Tk = 1 + keep, the encoder's output x_in (B, Tk, D) = [cls, kept patches in
 * ids_keep order]:
 *   emb  (B, Tk, Dd) = decoder_embed(x_in)
 *   cat  (B, T, Dd)  = [emb, mask_token x (L - keep)]        (MAE's torch.cat)
 *   x0   (B, T, Dd)  = cat rows [0, 1 + ids_restore]           (the unshuffle, cls first)
 *                      + decoder_pos_embed
 *   x_{i+1} = decoder_blocks[i](x_i);  ln = decoder_norm(x_depth)
 *   pred (B, L, K)   = decoder_pred(ln without the cls row)
 * The gather with [0, 1 + ids_restore] is exactly MAE's concat + gather + re-prepend;
 * its backward is the scatter-add with the same indices.
 *
 * Backward walks the same steps in reverse. decoder_pos_embed is a fixed table
 * (MAE: requires_grad=False): it never gets a gradient. The gradient of the
 * encoder's tokens always flows (through decoder_embed, frozen or not).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mae_internal.h"

#define F(t) ((float *)(t).data)
#define I32(t) ((int32_t *)(t).data)

/* Run a backend op and turn a failure into a message naming it. */
#define OP(m, call, what)                                                                                   \
    do {                                                                                                    \
        ex_status op__s = (m)->env.be->vt.call;                                                             \
        if (op__s != EX_OK) EX_FAIL(err, op__s, "mae: %s failed on backend '%s'", what, (m)->env.be->name); \
    } while (0)

/* --- parameters ------------------------------------------------------------------------ */

static ex_status add(mae *m, const char *name, int ndim, const int64_t *shape, const char *group, float **val,
                     float **grad, mae_init_kind init, int64_t fan_in, int64_t fan_out, int required, ex_err *err) {
    if (m->nown == m->cap_own) {
        int cap = m->cap_own ? 2 * m->cap_own : 64;
        mae_own *n = realloc(m->own, (size_t)cap * sizeof *n);
        EX_ENSURE(n, err, EX_E_NOMEM, "mae: out of memory");
        m->own = n;
        m->cap_own = cap;
    }
    ex_param *p = NULL;
    EX_CHECK(ex_params_add(m->env.params, name, ndim, shape, group, val, grad, &p, err));
    /* optional for every other loader of the shared parameter set (a backbone checkpoint has no
     * decoder); mae's own load() treats the required ones as required */
    p->optional = 1;
    m->own[m->nown++] = (mae_own){p, init, fan_in, fan_out, required};
    return EX_OK;
}

static ex_status add_linear(mae *m, const char *prefix, ex_linear *l, int64_t in, int64_t out, ex_err *err) {
    char name[EX_NAME_MAX];
    l->in = in;
    l->out = out;
    snprintf(name, sizeof name, "%s.weight", prefix);
    EX_CHECK(add(m, name, 2, (int64_t[]){out, in}, "decoder", &l->w, &l->dw, MAE_INIT_XAVIER, in, out, 1, err));
    snprintf(name, sizeof name, "%s.bias", prefix);
    return add(m, name, 1, (int64_t[]){out}, "bias", &l->b, &l->db, MAE_INIT_ZERO, 0, 0, 1, err);
}

static ex_status add_norm(mae *m, const char *prefix, ex_layernorm *ln, ex_err *err) {
    char name[EX_NAME_MAX];
    ln->dim = m->ddim;
    ln->eps = 1e-6f;
    snprintf(name, sizeof name, "%s.weight", prefix);
    EX_CHECK(add(m, name, 1, (int64_t[]){m->ddim}, "norm", &ln->w, &ln->dw, MAE_INIT_ONE, 0, 0, 1, err));
    snprintf(name, sizeof name, "%s.bias", prefix);
    return add(m, name, 1, (int64_t[]){m->ddim}, "norm", &ln->b, &ln->db, MAE_INIT_ZERO, 0, 0, 1, err);
}

static ex_status lora_forward(void *self, ex_backend *be, float *out, const void *inp, ex_dtype inp_dtype,
                              int64_t n, int train, uint64_t noise, ex_err *err);
static ex_status lora_backward(void *self, ex_backend *be, float *dinp, const float *dout, const void *inp,
                               ex_dtype inp_dtype, int64_t n, ex_err *err);

/* Trainable flags per decoder_train (LoRA tensors always train; decoder_pos_embed never does). */
static int trains(const mae *m, const char *name) {
    if (strstr(name, ".lora_")) return 1;
    if (strcmp(name, "decoder_pos_embed") == 0) return 0;
    if (m->train_mode == MAE_TRAIN_ALL) return 1;
    if (m->train_mode == MAE_TRAIN_NORMS) return strstr(name, "norm") != NULL;
    return 0;
}

ex_status mae_register_params(mae *m, ex_err *err) {
    const int64_t Dd = m->ddim, D = m->dim, r = m->lora_rank;
    m->blocks = calloc((size_t)m->ddepth, sizeof *m->blocks);
    EX_ENSURE(m->blocks, err, EX_E_NOMEM, "mae: out of memory");
    if (r > 0) {
        m->lora = calloc((size_t)m->ddepth, sizeof *m->lora);
        EX_ENSURE(m->lora, err, EX_E_NOMEM, "mae: out of memory");
    }
    EX_ENSURE(!ex_params_find(m->env.params, "mask_token"), err, EX_E_CONFIG,
              "mae: the backbone already has a parameter named 'mask_token' (the MAE decoder's name). Set "
              "[backbone] mask_token = off: an MAE encoder has none.");
    EX_CHECK(add(m, "mask_token", 3, (int64_t[]){1, 1, Dd}, "token", &m->mask_token, &m->dmask_token, MAE_INIT_TOKEN,
                 0, 0, 1, err));
    EX_CHECK(add_linear(m, "decoder_embed", &m->embed, D, Dd, err));
    EX_CHECK(add(m, "decoder_pos_embed", 3, (int64_t[]){1, 1 + m->L, Dd}, "pos_embed", &m->pos, &m->dpos,
                 MAE_INIT_TABLE, 0, 0, 0, err));
    for (int64_t i = 0; i < m->ddepth; i++) {
        ex_block *b = &m->blocks[i];
        char pre[64], name[96];
        b->dim = Dd;
        b->heads = m->dheads;
        b->hidden = m->dhidden;
        b->mlp = EX_MLP_GELU;
        snprintf(pre, sizeof pre, "decoder_blocks.%lld", (long long)i);
        snprintf(name, sizeof name, "%s.norm1", pre);
        EX_CHECK(add_norm(m, name, &b->norm1, err));
        snprintf(name, sizeof name, "%s.attn.qkv", pre);
        EX_CHECK(add_linear(m, name, &b->qkv, Dd, 3 * Dd, err));
        if (r > 0) {
            mae_lora *lo = &m->lora[i];
            const char *tag[2] = {"q", "v"};
            for (int k = 0; k < 2; k++) {
                char a[128], bb[128];
                lo->s[k].row0 = k == 0 ? 0 : 2 * Dd;
                snprintf(a, sizeof a, "%s.lora_%s.A", name, tag[k]);
                snprintf(bb, sizeof bb, "%s.lora_%s.B", name, tag[k]);
                EX_CHECK(add(m, a, 2, (int64_t[]){r, Dd}, "lora", &lo->s[k].A, &lo->s[k].dA, MAE_INIT_LORA_A, Dd, r,
                             0, err));
                EX_CHECK(add(m, bb, 2, (int64_t[]){Dd, r}, "lora", &lo->s[k].B, &lo->s[k].dB, MAE_INIT_ZERO, 0, 0, 0,
                             err));
            }
            lo->owner = m;
            lo->hook.self = lo;
            lo->hook.forward = lora_forward;
            lo->hook.backward = lora_backward;
            lo->hook.next = b->qkv.hooks;
            b->qkv.hooks = &lo->hook;
        }
        snprintf(name, sizeof name, "%s.attn.proj", pre);
        EX_CHECK(add_linear(m, name, &b->proj, Dd, Dd, err));
        snprintf(name, sizeof name, "%s.norm2", pre);
        EX_CHECK(add_norm(m, name, &b->norm2, err));
        snprintf(name, sizeof name, "%s.mlp.fc1", pre);
        EX_CHECK(add_linear(m, name, &b->fc1, Dd, m->dhidden, err));
        snprintf(name, sizeof name, "%s.mlp.fc2", pre);
        EX_CHECK(add_linear(m, name, &b->fc2, m->dhidden, Dd, err));
    }
    EX_CHECK(add_norm(m, "decoder_norm", &m->norm, err));
    EX_CHECK(add_linear(m, "decoder_pred", &m->pred, Dd, m->K, err));
    for (int i = 0; i < m->nown; i++) m->own[i].p->trainable = trains(m, m->own[i].p->value.name);
    return EX_OK;
}

/* --- activation plan --------------------------------------------------------------------- */

static ex_status plan_buf(ex_memory_plan *plan, ex_tensor *t, const char *name, ex_dtype dt, int64_t n, ex_err *err) {
    EX_CHECK(ex_tensor_init(t, name, dt, 1, (int64_t[]){n > 0 ? n : 1}, err));
    return ex_arena_add(&plan->arenas[EX_MEM_ACTIVATION], t, err);
}

ex_status mae_plan_decoder(mae *m, ex_memory_plan *plan, ex_err *err) {
    const int64_t B = m->Bmax, L = m->L, T = 1 + L, Tk = 1 + m->keep, Dd = m->ddim, D = m->dim, K = m->K;
    const int64_t removed = L - m->keep;
    EX_CHECK(plan_buf(plan, &m->ids_keep_d, "mae.ids_keep", EX_I32, B * m->keep, err));
    EX_CHECK(plan_buf(plan, &m->idx_full_d, "mae.idx_full", EX_I32, B * T, err));
    EX_CHECK(plan_buf(plan, &m->maskf_d, "mae.mask", EX_F32, B * L, err));
    EX_CHECK(plan_buf(plan, &m->x_in, "mae.x_in", EX_F32, m->registers > 0 ? B * Tk * D : 1, err));
    EX_CHECK(plan_buf(plan, &m->emb, "mae.emb", EX_F32, B * Tk * Dd, err));
    EX_CHECK(plan_buf(plan, &m->cat, "mae.cat", EX_F32, B * T * Dd, err));
    EX_CHECK(plan_buf(plan, &m->mask_rep, "mae.mask_rep", EX_F32, removed * Dd, err));
    EX_CHECK(plan_buf(plan, &m->xs, "mae.residual", EX_F32, (m->ddepth + 1) * B * T * Dd, err));
    m->acts_floats = ex_block_acts_floats(&m->blocks[0], B, T);
    EX_CHECK(plan_buf(plan, &m->acts, "mae.block_acts", EX_F32, m->ddepth * (int64_t)m->acts_floats, err));
    EX_CHECK(plan_buf(plan, &m->scratch, "mae.block_scratch", EX_F32,
                      (int64_t)ex_block_scratch_floats(&m->blocks[0], B, T), err));
    EX_CHECK(plan_buf(plan, &m->ln_out, "mae.norm_out", EX_F32, B * T * Dd, err));
    EX_CHECK(plan_buf(plan, &m->ln_mean, "mae.norm_mean", EX_F32, B * T, err));
    EX_CHECK(plan_buf(plan, &m->ln_rstd, "mae.norm_rstd", EX_F32, B * T, err));
    EX_CHECK(plan_buf(plan, &m->npatch, "mae.norm_patches", EX_F32, B * L * Dd, err));
    EX_CHECK(plan_buf(plan, &m->predb, "mae.pred", EX_F32, B * L * K, err));
    EX_CHECK(plan_buf(plan, &m->patches, "mae.patches", EX_F32, B * L * K, err));
    EX_CHECK(plan_buf(plan, &m->target, "mae.target", EX_F32, m->norm_pix ? B * L * K : 1, err));
    EX_CHECK(plan_buf(plan, &m->t_mean, "mae.target_mean", EX_F32, B * L, err));
    EX_CHECK(plan_buf(plan, &m->t_rstd, "mae.target_rstd", EX_F32, B * L, err));
    EX_CHECK(plan_buf(plan, &m->t_w, "mae.target_w", EX_F32, K, err));
    EX_CHECK(plan_buf(plan, &m->t_b, "mae.target_b", EX_F32, K, err));
    EX_CHECK(plan_buf(plan, &m->diff, "mae.diff", EX_F32, B * L * K, err));
    EX_CHECK(plan_buf(plan, &m->dpred, "mae.dpred", EX_F32, B * L * K, err));
    EX_CHECK(plan_buf(plan, &m->loss_d, "mae.loss", EX_F32, 1, err));
    EX_CHECK(plan_buf(plan, &m->dnp, "mae.dnorm_patches", EX_F32, B * L * Dd, err));
    EX_CHECK(plan_buf(plan, &m->dln, "mae.dnorm_out", EX_F32, B * T * Dd, err));
    EX_CHECK(plan_buf(plan, &m->dres, "mae.dresid", EX_F32, B * T * Dd, err));
    EX_CHECK(plan_buf(plan, &m->dcat, "mae.dcat", EX_F32, B * T * Dd, err));
    EX_CHECK(plan_buf(plan, &m->dmask_rows, "mae.dmask_rows", EX_F32, B * removed * Dd, err));
    EX_CHECK(plan_buf(plan, &m->demb, "mae.demb", EX_F32, B * Tk * Dd, err));
    EX_CHECK(plan_buf(plan, &m->dx_in, "mae.dx_in", EX_F32, B * Tk * D, err));
    EX_CHECK(plan_buf(plan, &m->dtok, "mae.dtokens", EX_F32, m->registers > 0 ? B * (Tk + m->registers) * D : 1, err));
    if (m->lora) {
        EX_CHECK(plan_buf(plan, &m->lora_dh, "mae.lora_dh", EX_F32, B * T * m->lora_rank, err));
        for (int64_t i = 0; i < m->ddepth; i++)
            for (int k = 0; k < 2; k++) {
                char name[64];
                snprintf(name, sizeof name, "mae.lora.%lld.%s.h", (long long)i, k ? "v" : "q");
                EX_CHECK(plan_buf(plan, &m->lora[i].s[k].h, name, EX_F32, B * T * m->lora_rank, err));
            }
    }
    m->planned = 1;
    return EX_OK;
}

void mae_bind_activations(mae *m) {
    for (int64_t i = 0; i < m->ddepth; i++)
        ex_block_acts_bind(&m->block_acts[i], &m->blocks[i], m->Bmax, 1 + m->L, F(m->acts) + (size_t)i * m->acts_floats);
}

/* --- LoRA hook on a decoder qkv ------------------------------------------------------------ */

/* C (m, n) (row stride ldc) = alpha * op(A) op(B) + beta * C, one fp32 GEMM. */
static ex_status gemm(ex_backend *be, int ta, int tb, int64_t mm, int64_t nn, int64_t kk, float alpha, const float *a,
                      int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc, ex_err *err) {
    ex_gemm_desc g = {0};
    g.trans_a = ta, g.trans_b = tb, g.m = mm, g.n = nn, g.k = kk, g.alpha = alpha, g.beta = beta;
    g.a = a, g.a_dtype = EX_F32, g.lda = lda;
    g.b = b, g.b_dtype = EX_F32, g.ldb = ldb;
    g.c = c, g.ldc = ldc, g.batch = 1;
    return ex_be_gemm(be, &g, err);
}

/* out (n, 3Dd) slice columns += s * (inp (n, Dd) A^T) B^T; h (n, r) kept. */
/* The decoder's blocks keep their activations in fp32 (only the backbone's may be kept in bf16). */
static ex_status check_lora_input(ex_dtype inp_dtype, ex_err *err) {
    EX_ENSURE(inp_dtype == EX_F32, err, EX_E_UNSUPPORTED,
              "mae: the decoder's LoRA reads fp32 inputs, got %s (the decoder keeps its activations in fp32)",
              ex_dtype_name(inp_dtype));
    return EX_OK;
}

static ex_status lora_forward(void *self, ex_backend *be, float *out, const void *vinp, ex_dtype inp_dtype,
                              int64_t n, int train, uint64_t noise, ex_err *err) {
    (void)noise; /* the decoder's adapters have no dropout */
    EX_CHECK(check_lora_input(inp_dtype, err));
    const float *inp = vinp; /* (n, Dd) */
    mae_lora *lo = self;
    const mae *m = lo->owner;
    const int64_t Dd = m->ddim, r = m->lora_rank;
    (void)train;
    EX_ENSURE(n * r <= ex_tensor_numel(&lo->s[0].h), err, EX_E_SHAPE, "mae: LoRA hook called with %lld rows, planned %lld",
              (long long)n, (long long)(ex_tensor_numel(&lo->s[0].h) / r));
    const float s = 1.0f / (float)r;
    for (int k = 0; k < 2; k++) {
        const mae_lora_slice *sl = &lo->s[k];
        EX_CHECK(gemm(be, 0, 1, n, r, Dd, 1.0f, inp, Dd, sl->A, Dd, 0.0f, F(sl->h), r, err));
        EX_CHECK(gemm(be, 0, 1, n, Dd, r, s, F(sl->h), r, sl->B, r, 1.0f, out + sl->row0, 3 * Dd, err));
    }
    return EX_OK;
}

/* dB += s dout_s^T h; dh = s dout_s B; dA += dh^T inp; dinp += dh A. */
static ex_status lora_backward(void *self, ex_backend *be, float *dinp, const float *dout, const void *vinp,
                               ex_dtype inp_dtype, int64_t n, ex_err *err) {
    EX_CHECK(check_lora_input(inp_dtype, err));
    const float *inp = vinp; /* (n, Dd) */
    mae_lora *lo = self;
    const mae *m = lo->owner;
    const int64_t Dd = m->ddim, r = m->lora_rank;
    const float s = 1.0f / (float)r;
    float *dh = F(m->lora_dh);
    for (int k = 0; k < 2; k++) {
        const mae_lora_slice *sl = &lo->s[k];
        const float *ds = dout + sl->row0; /* (n, Dd), row stride 3Dd */
        if (sl->dB) EX_CHECK(gemm(be, 1, 0, Dd, r, n, s, ds, 3 * Dd, F(sl->h), r, 1.0f, sl->dB, r, err));
        if (!sl->dA && !dinp) continue;
        EX_CHECK(gemm(be, 0, 0, n, r, Dd, s, ds, 3 * Dd, sl->B, r, 0.0f, dh, r, err));
        if (sl->dA) EX_CHECK(gemm(be, 1, 0, r, Dd, n, 1.0f, dh, r, inp, Dd, 1.0f, sl->dA, Dd, err));
        if (dinp) EX_CHECK(gemm(be, 0, 0, n, Dd, r, 1.0f, dh, r, sl->A, Dd, 1.0f, dinp, Dd, err));
    }
    return EX_OK;
}

/* --- forward ------------------------------------------------------------------------------ */

/* tokens (B, 1 + R + keep, D): the backbone's output; writes m->predb (B, L, K). */
ex_status mae_decoder_forward(mae *m, const float *tokens, int64_t B, ex_err *err) {
    void *c = m->env.be->ctx;
    const int64_t L = m->L, T = 1 + L, keep = m->keep, Tk = 1 + keep, Dd = m->ddim, D = m->dim, R = m->registers;
    const int64_t removed = L - keep;
    const float *x_in = tokens;
    if (R > 0) { /* drop the registers: [cls, kept] */
        float *x = F(m->x_in);
        const int64_t Tb = 1 + R + keep;
        OP(m, copy2d(c, x, Tk * D, tokens, Tb * D, B, D), "copy2d");
        OP(m, copy2d(c, x + D, Tk * D, tokens + (1 + R) * D, Tb * D, B, keep * D), "copy2d");
        x_in = x;
    }
    m->last_x_in = x_in;
    float *emb = F(m->emb), *cat = F(m->cat), *rep = F(m->mask_rep), *x0 = F(m->xs);
    EX_CHECK(ex_linear_forward(m->env.be, &m->embed, emb, x_in, B * Tk, 1, 0, err));
    OP(m, copy2d(c, cat, T * Dd, emb, Tk * Dd, B, Tk * Dd), "copy2d");
    OP(m, copy2d(c, rep, Dd, m->mask_token, 0, removed, Dd), "copy2d");
    OP(m, copy2d(c, cat + Tk * Dd, T * Dd, rep, 0, B, removed * Dd), "copy2d");
    OP(m, gather_rows(c, x0, cat, I32(m->idx_full_d), B, T, T, Dd), "gather_rows");
    OP(m, bias_add_fwd(c, x0, m->pos, B, T * Dd), "bias_add_fwd");
    const size_t stream = (size_t)(B * T * Dd);
    for (int64_t i = 0; i < m->ddepth; i++)
        EX_CHECK(ex_block_forward(m->env.be, &m->blocks[i], &m->block_acts[i], x0 + (size_t)(i + 1) * stream,
                                  x0 + (size_t)i * stream, NULL, NULL, B, T, 1, 0, err)); /* no noisy layers */
    EX_CHECK(ex_layernorm_forward(m->env.be, &m->norm, F(m->ln_out), F(m->ln_mean), F(m->ln_rstd),
                                  x0 + (size_t)m->ddepth * stream, B * T, err));
    OP(m, copy2d(c, F(m->npatch), L * Dd, F(m->ln_out) + Dd, T * Dd, B, L * Dd), "copy2d");
    return ex_linear_forward(m->env.be, &m->pred, F(m->predb), F(m->npatch), B * L, 1, 0, err);
}

/* --- backward ------------------------------------------------------------------------------- */

/* From m->dpred (B, L, K) to *dtokens (B, 1 + R + keep, D), the gradient of the backbone's output. */
ex_status mae_decoder_backward(mae *m, int64_t B, const float **dtokens, ex_err *err) {
    ex_backend *be = m->env.be;
    void *c = be->ctx;
    const int64_t L = m->L, T = 1 + L, keep = m->keep, Tk = 1 + keep, Dd = m->ddim, D = m->dim, R = m->registers;
    const int64_t removed = L - keep;
    const size_t stream = (size_t)(B * T * Dd);
    float *x0 = F(m->xs), *dnp = F(m->dnp), *dln = F(m->dln), *dres = F(m->dres), *dcat = F(m->dcat);

    OP(m, fill(c, dnp, 0.0f, B * L * Dd), "fill");
    EX_CHECK(ex_linear_backward(be, &m->pred, dnp, F(m->dpred), F(m->npatch), B * L, err));
    OP(m, fill(c, dln, 0.0f, B * T * Dd), "fill");
    OP(m, copy2d(c, dln + Dd, T * Dd, dnp, L * Dd, B, L * Dd), "copy2d");
    OP(m, fill(c, dres, 0.0f, B * T * Dd), "fill");
    EX_CHECK(ex_layernorm_backward(be, &m->norm, dres, dln, x0 + (size_t)m->ddepth * stream, F(m->ln_mean),
                                   F(m->ln_rstd), B * T, err));
    for (int64_t i = m->ddepth - 1; i >= 0; i--)
        EX_CHECK(ex_block_backward(be, &m->blocks[i], &m->block_acts[i], dres, x0 + (size_t)i * stream, NULL, NULL,
                                   F(m->scratch), B, T, err));
    /* dres = dL/dx0; the position table is fixed. Undo the unshuffle. */
    OP(m, fill(c, dcat, 0.0f, B * T * Dd), "fill");
    OP(m, scatter_add_rows(c, dcat, dres, I32(m->idx_full_d), B, T, T, Dd), "scatter_add_rows");
    if (m->dmask_token) {
        float *rows = F(m->dmask_rows);
        OP(m, copy2d(c, rows, removed * Dd, dcat + Tk * Dd, T * Dd, B, removed * Dd), "copy2d");
        OP(m, bias_add_bwd(c, m->dmask_token, rows, B * removed, Dd), "bias_add_bwd");
    }
    float *demb = F(m->demb), *dx = F(m->dx_in);
    OP(m, copy2d(c, demb, Tk * Dd, dcat, T * Dd, B, Tk * Dd), "copy2d");
    OP(m, fill(c, dx, 0.0f, B * Tk * D), "fill");
    EX_CHECK(ex_linear_backward(be, &m->embed, dx, demb, m->last_x_in, B * Tk, err));
    if (R == 0) {
        *dtokens = dx;
        return EX_OK;
    }
    /* registers get no gradient from the decoder */
    float *dt = F(m->dtok);
    const int64_t Tb = 1 + R + keep;
    OP(m, fill(c, dt, 0.0f, B * Tb * D), "fill");
    OP(m, copy2d(c, dt, Tb * D, dx, Tk * D, B, D), "copy2d");
    OP(m, copy2d(c, dt + (1 + R) * D, Tb * D, dx + D, Tk * D, B, keep * D), "copy2d");
    *dtokens = dt;
    return EX_OK;
}

/* --- fixed table and initialisation ------------------------------------------------------------ */

void mae_sincos_table(int64_t dim, int64_t gh, int64_t gw, float *table) {
    const int64_t f = dim / 4;
    memset(table, 0, sizeof(float) * (size_t)dim); /* cls row */
    float *row = table + dim;
    for (int64_t i = 0; i < gh; i++) {
        for (int64_t j = 0; j < gw; j++, row += dim) {
            for (int64_t k = 0; k < f; k++) {
                /* MAE get_2d_sincos_pos_embed: omega = 1 / 10000**(k / F) in float64; first half = column */
                double omega = 1.0 / pow(10000.0, (double)k / (double)f);
                double aj = (double)j * omega, ai = (double)i * omega;
                row[k] = (float)sin(aj);
                row[f + k] = (float)cos(aj);
                row[2 * f + k] = (float)sin(ai);
                row[3 * f + k] = (float)cos(ai);
            }
        }
    }
}

/* Every parameter in registration order; each random tensor is one draw of numel values from rng. */
ex_status mae_init_params(mae *m, ex_rng *rng, ex_err *err) {
    void *c = m->env.be->ctx;
    for (int i = 0; i < m->nown; i++) {
        const mae_own *o = &m->own[i];
        float *v = (float *)o->p->value.data;
        const int64_t n = ex_tensor_numel(&o->p->value);
        EX_ENSURE(v, err, EX_E_INVALID, "mae: init() before the parameters were bound");
        switch (o->init) {
        case MAE_INIT_XAVIER: {
            const float a = (float)sqrt(6.0 / (double)(o->fan_in + o->fan_out));
            OP(m, rng_uniform(c, v, n, -a, a, rng), "rng_uniform");
            break;
        }
        case MAE_INIT_LORA_A: {
            const float a = (float)(1.0 / sqrt((double)o->fan_in));
            OP(m, rng_uniform(c, v, n, -a, a, rng), "rng_uniform");
            break;
        }
        case MAE_INIT_TOKEN:
            OP(m, rng_normal(c, v, n, 0.0f, 0.02f, rng), "rng_normal");
            break;
        case MAE_INIT_ONE:
            OP(m, fill(c, v, 1.0f, n), "fill");
            break;
        case MAE_INIT_ZERO:
            OP(m, fill(c, v, 0.0f, n), "fill");
            break;
        case MAE_INIT_TABLE:
            EX_CHECK(ex_be_upload(m->env.be, v, m->table, sizeof(float) * (size_t)n, err));
            break;
        }
    }
    return EX_OK;
}
