/*
 * plugins/dinov2/dinov2_head.c — the DINO / iBOT projection head
 * (dinov2/layers/dino_head.py DINOHead, no BatchNorm, MLP biases on):
 *
 *   h = mlp(x)                 Linear(D, hidden) GELU [Linear(hidden, hidden) GELU]* Linear(hidden, bn)
 *                              (keys mlp.0, mlp.2, mlp.4 ...; one Linear(D, bn) when head_layers = 1)
 *   hn = h / max(||h||, 1e-12) (F.normalize, the fp32 eps)
 *   logits = hn W^T,  W_k = g_k v_k / ||v_k||   (weight_norm(Linear(bn, K, bias=False)), dim 0;
 *                                                 last_layer.weight_g (K, 1), last_layer.weight_v (K, bn))
 *
 * The logits (rows x K: 1.25 GiB at ViT-L batch 32 with 131072 prototypes) are never held for all
 * rows: dn_head_forward runs the trunk (MLP and normalisation, rows x bn) for all rows, then the
 * loss (dn_head_ce) or the teacher's targets (dn_head_targets, dinov2_center.c) take one chunk of
 * rows at a time through dn_head_logits and, for the student, dn_head_logits_backward, which turns
 * the chunk's dlogits into its rows of dzn and adds its share of the last layer's dW. dn_head_backward
 * then finishes: the weight norm's backward from dW, the normalisation and the MLP.
 *
 * Everything runs through backend ops: ex_linear, gelu, l2norm (the norm of
 * v with eps 0: torch's weight_norm has none), row_scale (g), gemm.
 * Initialisation (DINOHead._init_weights, then weight_norm): MLP weights
 * N(0, 0.02^2) (trunc_normal_(std=0.02) truncates at +-2 ABSOLUTE, i.e. at 100
 * standard deviations: a plain normal), biases 0, weight_g 1, weight_v
 * U(-1/sqrt(bn), 1/sqrt(bn)) (nn.Linear's default kaiming_uniform_(a=sqrt 5)),
 * drawn in that order, one draw of numel values per tensor, from the rng.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dinov2_internal.h"
#include "explora/safetensors.h"

#define F(t) ((float *)(t).data)

/* Run a backend op and turn a failure into a message naming it. */
#define OP(d, call, what)                                                                                      \
    do {                                                                                                       \
        ex_status op__s = (d)->env.be->vt.call;                                                                \
        if (op__s != EX_OK) EX_FAIL(err, op__s, "dinov2: %s failed on backend '%s'", what, (d)->env.be->name); \
    } while (0)

static ex_status plan_buf(ex_memory_plan *plan, ex_tensor *t, const char *name, int64_t n, ex_err *err) {
    EX_CHECK(ex_tensor_init(t, name, EX_F32, 1, (int64_t[]){n > 0 ? n : 1}, err));
    return ex_arena_add(&plan->arenas[EX_MEM_ACTIVATION], t, err);
}

static int64_t layer_out(const dinov2 *d, int l) { return l == d->nlayers - 1 ? d->bn : d->hidden; }
static int64_t layer_in(const dinov2 *d, int l) { return l == 0 ? d->D : d->hidden; }

static ex_status add_param(dn_head *h, ex_params *ps, const char *name, int ndim, const int64_t *shape,
                           const char *group, float **val, float **grad, int trainable, ex_err *err) {
    ex_param *p = NULL;
    EX_CHECK(ex_params_add(ps, name, ndim, shape, group, val, grad, &p, err));
    p->optional = 1; /* a backbone checkpoint has no head: it comes from init() or head_weights */
    p->trainable = trainable;
    h->params[h->nparams++] = p;
    return EX_OK;
}

ex_status dn_head_register(dinov2 *d, dn_head *h, const char *prefix, ex_params *ps, int trainable, ex_err *err) {
    char name[EX_NAME_MAX];
    h->nlayers = (int)d->nlayers;
    h->nparams = 0;
    for (int l = 0; l < h->nlayers; l++) {
        ex_linear *lin = &h->mlp[l];
        lin->in = layer_in(d, l);
        lin->out = layer_out(d, l);
        lin->hooks = NULL;
        snprintf(name, sizeof name, "%s.mlp.%d.weight", prefix, 2 * l);
        EX_CHECK(add_param(h, ps, name, 2, (int64_t[]){lin->out, lin->in}, "head", &lin->w, &lin->dw, trainable, err));
        snprintf(name, sizeof name, "%s.mlp.%d.bias", prefix, 2 * l);
        EX_CHECK(add_param(h, ps, name, 1, (int64_t[]){lin->out}, "bias", &lin->b, &lin->db, trainable, err));
    }
    snprintf(name, sizeof name, "%s.last_layer.weight_g", prefix);
    EX_CHECK(add_param(h, ps, name, 2, (int64_t[]){d->K, 1}, "head", &h->g, &h->dg, trainable, err));
    snprintf(name, sizeof name, "%s.last_layer.weight_v", prefix);
    return add_param(h, ps, name, 2, (int64_t[]){d->K, d->bn}, "head", &h->v, &h->dv, trainable, err);
}

ex_status dn_head_plan(dinov2 *d, dn_head *h, const char *prefix, ex_memory_plan *plan, ex_err *err) {
    char name[EX_NAME_MAX];
    snprintf(name, sizeof name, "dinov2.%s.w", prefix);
    EX_CHECK(plan_buf(plan, &h->w, name, d->K * d->bn, err));
    snprintf(name, sizeof name, "dinov2.%s.vhat", prefix);
    EX_CHECK(plan_buf(plan, &h->vhat, name, d->K * d->bn, err));
    snprintf(name, sizeof name, "dinov2.%s.vnorm", prefix);
    return plan_buf(plan, &h->vnorm, name, d->K, err);
}

ex_status dn_head_acts_plan(dinov2 *d, ex_memory_plan *plan, ex_err *err) {
    dn_head_acts *a = &d->acts;
    const int64_t R = d->rows, K = d->K, bn = d->bn, hid = d->hidden;
    char name[64];
    for (int l = 0; l + 1 < d->nlayers; l++) {
        snprintf(name, sizeof name, "dinov2.head.pre%d", l);
        EX_CHECK(plan_buf(plan, &a->pre[l], name, R * hid, err));
        snprintf(name, sizeof name, "dinov2.head.post%d", l);
        EX_CHECK(plan_buf(plan, &a->post[l], name, R * hid, err));
    }
    EX_CHECK(plan_buf(plan, &a->z, "dinov2.head.z", R * bn, err));
    EX_CHECK(plan_buf(plan, &a->zn, "dinov2.head.zn", R * bn, err));
    EX_CHECK(plan_buf(plan, &a->znorm, "dinov2.head.znorm", R, err));
    /* logits live one chunk of ce_chunk rows at a time (dn_head_ce, dn_head_targets) */
    EX_CHECK(plan_buf(plan, &a->logits, "dinov2.head.logits", (R < d->ce_chunk ? R : d->ce_chunk) * K, err));
    EX_CHECK(plan_buf(plan, &a->probs, "dinov2.head.probs", dn_probs_rows(d) * K, err));
    EX_CHECK(plan_buf(plan, &a->dz, "dinov2.head.dz", R * bn, err));
    EX_CHECK(plan_buf(plan, &a->dzn, "dinov2.head.dzn", R * bn, err));
    EX_CHECK(plan_buf(plan, &a->dh_a, "dinov2.head.dh_a", d->nlayers > 1 ? R * hid : 1, err));
    EX_CHECK(plan_buf(plan, &a->dh_b, "dinov2.head.dh_b", d->nlayers > 1 ? R * hid : 1, err));
    EX_CHECK(plan_buf(plan, &a->dw, "dinov2.head.dw", K * bn, err));
    return plan_buf(plan, &a->dvhat, "dinov2.head.dvhat", K * bn, err);
}

ex_status dn_head_init(dinov2 *d, dn_head *h, ex_rng *rng, ex_err *err) {
    for (int l = 0; l < h->nlayers; l++) {
        const ex_linear *lin = &h->mlp[l];
        OP(d, rng_normal(d->env.be->ctx, lin->w, lin->in * lin->out, 0.0f, 0.02f, rng), "rng_normal");
        OP(d, fill(d->env.be->ctx, lin->b, 0.0f, lin->out), "fill");
    }
    OP(d, fill(d->env.be->ctx, h->g, 1.0f, d->K), "fill");
    const float bound = (float)(1.0 / sqrt((double)d->bn));
    OP(d, rng_uniform(d->env.be->ctx, h->v, d->K * d->bn, -bound, bound, rng), "rng_uniform");
    return EX_OK;
}

ex_status dn_head_copy(dinov2 *d, dn_head *dst, const dn_head *src, ex_err *err) {
    EX_ENSURE(dst->nparams == src->nparams, err, EX_E_INTERNAL, "dinov2: head copy between different heads");
    for (int i = 0; i < src->nparams; i++) {
        const ex_tensor *s = &src->params[i]->value;
        OP(d, copy(d->env.be->ctx, dst->params[i]->value.data, s->data, ex_tensor_nbytes(s), EX_COPY_D2D), "copy");
    }
    return EX_OK;
}

ex_status dn_head_ema(dinov2 *d, dn_head *teacher, const dn_head *student, float m, ex_err *err) {
    for (int i = 0; i < student->nparams; i++) {
        const ex_tensor *s = &student->params[i]->value;
        OP(d, ema(d->env.be->ctx, teacher->params[i]->value.data, s->data, m, ex_tensor_numel(s)), "ema");
    }
    return EX_OK;
}

ex_status dn_head_forward(dinov2 *d, dn_head *h, const float *x /* (n, D) */, int64_t r0, int64_t n, ex_err *err) {
    ex_backend *be = d->env.be;
    dn_head_acts *a = &d->acts;
    const int64_t K = d->K, bn = d->bn, hid = d->hidden;
    EX_ENSURE(r0 >= 0 && n >= 0 && r0 + n <= d->rows, err, EX_E_INTERNAL, "dinov2: head rows %lld..%lld outside %lld",
              (long long)r0, (long long)(r0 + n), (long long)d->rows);
    if (n == 0) return EX_OK;
    const float *in = x;
    for (int l = 0; l < h->nlayers; l++) {
        const int last = l == h->nlayers - 1;
        float *out = last ? F(a->z) + r0 * bn : F(a->pre[l]) + r0 * hid; /* (n, out) */
        EX_CHECK(ex_linear_forward(be, &h->mlp[l], out, in, n, 1, 0, err));
        if (!last) {
            float *post = F(a->post[l]) + r0 * hid; /* (n, hid) */
            OP(d, gelu_fwd(be->ctx, post, out, n * hid), "gelu_fwd");
            in = post;
        }
    }
    OP(d, l2norm_fwd(be->ctx, F(a->zn) + r0 * bn, F(a->znorm) + r0, F(a->z) + r0 * bn, n, bn, 1e-12f), "l2norm_fwd");
    /* W = g * v / ||v|| (no eps: torch's weight_norm) */
    OP(d, l2norm_fwd(be->ctx, F(h->vhat), F(h->vnorm), h->v, K, bn, 0.0f), "l2norm_fwd");
    OP(d, row_scale_fwd(be->ctx, F(h->w), F(h->vhat), h->g, K, bn), "row_scale_fwd");
    return EX_OK;
}

ex_status dn_head_logits(dinov2 *d, dn_head *h, int64_t r0, int64_t n, float scale, float *out /* (n, K) */,
                         ex_err *err) {
    const int64_t K = d->K, bn = d->bn;
    if (n == 0) return EX_OK;
    ex_gemm_desc g = {0};
    g.trans_a = 0, g.trans_b = 1, g.m = n, g.n = K, g.k = bn, g.alpha = scale, g.beta = 0.0f;
    g.a = F(d->acts.zn) + r0 * bn, g.a_dtype = EX_F32, g.lda = bn;
    g.b = F(h->w), g.b_dtype = EX_F32, g.ldb = bn;
    g.c = out, g.ldc = K, g.batch = 1;
    return ex_be_gemm(d->env.be, &g, err);
}

ex_status dn_head_logits_backward(dinov2 *d, dn_head *h, const float *dlog /* (n, K) */, int64_t r0, int64_t n,
                                  float scale, int accumulate, int freeze_last, ex_err *err) {
    ex_backend *be = d->env.be;
    dn_head_acts *a = &d->acts;
    const int64_t K = d->K, bn = d->bn;
    if (n == 0) return EX_OK;
    /* dzn (n, bn) = scale * dlogits @ W */
    ex_gemm_desc g = {0};
    g.m = n, g.n = bn, g.k = K, g.alpha = scale, g.beta = 0.0f;
    g.a = dlog, g.a_dtype = EX_F32, g.lda = K;
    g.b = F(h->w), g.b_dtype = EX_F32, g.ldb = bn;
    g.c = F(a->dzn) + r0 * bn, g.ldc = bn, g.batch = 1;
    EX_CHECK(ex_be_gemm(be, &g, err));
    if (freeze_last || !(h->dg || h->dv)) return EX_OK;
    /* dW (K, bn) (+)= scale * dlogits^T @ zn */
    ex_gemm_desc gw = {0};
    gw.trans_a = 1, gw.m = K, gw.n = bn, gw.k = n, gw.alpha = scale, gw.beta = accumulate ? 1.0f : 0.0f;
    gw.a = dlog, gw.a_dtype = EX_F32, gw.lda = K;
    gw.b = F(a->zn) + r0 * bn, gw.b_dtype = EX_F32, gw.ldb = bn;
    gw.c = F(a->dw), gw.ldc = bn, gw.batch = 1;
    return ex_be_gemm(be, &gw, err);
}

ex_status dn_head_backward(dinov2 *d, dn_head *h, const float *x /* (n, D) */, float *dx /* (n, D) */, int64_t r0,
                           int64_t n, int freeze_last, ex_err *err) {
    ex_backend *be = d->env.be;
    dn_head_acts *a = &d->acts;
    const int64_t K = d->K, bn = d->bn, hid = d->hidden;
    if (n == 0) return EX_OK;
    float *dzn = F(a->dzn) + r0 * bn, *dz = F(a->dz) + r0 * bn;
    if (!freeze_last && (h->dg || h->dv)) {
        /* the last layer's dW (dn_head_logits_backward) through W = g * vhat and vhat = v / ||v|| */
        OP(d, fill(be->ctx, F(a->dvhat), 0.0f, K * bn), "fill");
        OP(d, row_scale_bwd(be->ctx, F(a->dvhat), h->dg, F(a->dw), F(h->vhat), h->g, K, bn), "row_scale_bwd");
        if (h->dv) OP(d, l2norm_bwd(be->ctx, h->dv, F(a->dvhat), h->v, F(h->vnorm), K, bn, 0.0f), "l2norm_bwd");
    }
    OP(d, fill(be->ctx, dz, 0.0f, n * bn), "fill");
    OP(d, l2norm_bwd(be->ctx, dz, dzn, F(a->z) + r0 * bn, F(a->znorm) + r0, n, bn, 1e-12f), "l2norm_bwd");
    const float *dout = dz;
    for (int l = h->nlayers - 1; l >= 0; l--) {
        const float *inp = l == 0 ? x : F(a->post[l - 1]) + r0 * hid;
        if (l == 0) {
            EX_CHECK(ex_linear_backward(be, &h->mlp[l], dx, dout, inp, n, err));
            break;
        }
        float *dpost = F(a->dh_a) + r0 * hid, *dpre = F(a->dh_b) + r0 * hid; /* (n, hid) */
        OP(d, fill(be->ctx, dpost, 0.0f, n * hid), "fill");
        EX_CHECK(ex_linear_backward(be, &h->mlp[l], dpost, dout, inp, n, err));
        OP(d, fill(be->ctx, dpre, 0.0f, n * hid), "fill");
        OP(d, gelu_bwd(be->ctx, dpre, F(a->pre[l - 1]) + r0 * hid, dpost, n * hid), "gelu_bwd");
        dout = dpre;
    }
    return EX_OK;
}

/* --- head_weights ---------------------------------------------------------------------------- */

typedef struct map_ctx {
    const char *prefix; /* "teacher." / "student." / "" */
    int ibot;           /* take ibot_head.* (separate_ibot_head) */
} map_ctx;

static int map_name(void *user, const char *ckpt_name, char *out, size_t cap, int64_t *row_offset) {
    const map_ctx *m = user;
    (void)row_offset;
    const char *n = ckpt_name;
    if (strncmp(n, "module.", 7) == 0) n += 7;
    size_t lp = strlen(m->prefix);
    if (lp && strncmp(n, m->prefix, lp) != 0) return 0;
    n += lp;
    if (strncmp(n, "dino_head.", 10) != 0 && (!m->ibot || strncmp(n, "ibot_head.", 10) != 0)) return 0;
    snprintf(out, cap, "%s", n);
    return 1;
}

ex_status dn_head_load(dinov2 *d, const char *path, ex_err *err) {
    ex_st_file *f = NULL;
    EX_CHECK(ex_st_open(&f, path, err));
    /* which copy: a training export's teacher (else student); an explora run checkpoint's teacher heads
     * ("objective.teacher_head.", else the trained "param." ones); else the names as they are */
    map_ctx m = {"", d->separate_ibot};
    int rank = 0; /* 4 teacher > 3 run teacher > 2 student > 1 run param */
    for (int i = 0; i < ex_st_count(f); i++) {
        const char *n = ex_st_at(f, i)->name;
        if (strncmp(n, "module.", 7) == 0) n += 7;
        if (strncmp(n, "teacher.dino_head.", 18) == 0 && rank < 4) m.prefix = "teacher.", rank = 4;
        else if (strncmp(n, "objective.teacher_head.dino_head.", 33) == 0 && rank < 3)
            m.prefix = "objective.teacher_head.", rank = 3;
        else if (strncmp(n, "student.dino_head.", 18) == 0 && rank < 2) m.prefix = "student.", rank = 2;
        else if (strncmp(n, "param.dino_head.", 16) == 0 && rank < 1) m.prefix = "param.", rank = 1;
    }
    ex_param *items[2 * (2 * DN_MAX_LAYERS + 2)];
    int count = 0;
    for (int i = 0; i < d->sdino.nparams; i++) items[count++] = d->sdino.params[i];
    if (d->separate_ibot)
        for (int i = 0; i < d->sibot.nparams; i++) items[count++] = d->sibot.params[i];
    for (int i = 0; i < count; i++) items[i]->optional = strncmp(items[i]->value.name, "ibot_head.", 10) == 0;
    ex_params mine = {items, count, count};
    ex_status st = ex_params_load_safetensors(&mine, d->env.be, f, map_name, &m, 1, err);
    for (int i = 0; i < count; i++) items[i]->optional = 1;
    ex_st_close(f);
    if (st != EX_OK) ex_err_prefix(err, "dinov2 head_weights '%s': ", path);
    return st;
}
