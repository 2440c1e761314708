/*
 * example_objective.c — an SSL objective written outside explora: a
 * SimCLR-style contrastive loss (Chen et al., 2020) on the backbone's cls
 * token. Two views of every image go through the backbone as one batch of 2B;
 * z = normalise(cls); logits = z z^T / temperature with the diagonal masked;
 * each view's positive is the other view of the same image (NT-Xent):
 *
 *   loss = mean_i -log softmax(logits_i)[partner(i)]
 *
 * Built only from backend ops (l2norm, gemm, cross-entropy), it shows that a
 * new objective needs no change to explora.
 */
#include <stdlib.h>
#include <string.h>

#include <explora/plugin.h>

typedef struct simclr {
    ex_objective_env env;
    double temperature, scale_min, scale_max;
    int64_t size;
    int64_t n2; /* 2 * batch */
    ex_tensor images, cls, dcls, z, norms, logits, probs, losses, dlosses, dlogits, dz, dtokens, mask, labels;
} simclr;

static const ex_key_spec simclr_keys[] = {
    {"temperature", EX_KEY_FLOAT, "0.2", 1e-4, 100, NULL, "softmax temperature of the similarities"},
    {"image_size", EX_KEY_INT, "224", 1, 65536, NULL, "side of both views"},
    {"crop_scale", EX_KEY_FLOAT_LIST, "0.2, 1.0", 1e-6, 1.0, NULL, "RandomResizedCrop area range"},
    EX_KEY_END,
};

static ex_status sc_create(const ex_cfg_section *cfg, const ex_objective_env *env, void **self, ex_err *err) {
    simclr *s = calloc(1, sizeof *s);
    EX_ENSURE(s, err, EX_E_NOMEM, "simclr: out of memory");
    s->env = *env;
    double sc[2];
    int n = 0;
    ex_status st = ex_cfg_float(cfg, "temperature", &s->temperature, err);
    if (st == EX_OK) st = ex_cfg_int(cfg, "image_size", &s->size, err);
    if (st == EX_OK) st = ex_cfg_float_list(cfg, "crop_scale", sc, 2, &n, err);
    if (st == EX_OK && n != 2) st = ex_err_set(err, EX_E_CONFIG, __FILE__, __LINE__, "[%s] crop_scale takes 'min, max'", cfg->section);
    if (st != EX_OK) {
        free(s);
        return st;
    }
    s->scale_min = sc[0];
    s->scale_max = sc[1];
    s->n2 = 2 * env->batch;
    *self = s;
    return EX_OK;
}

static void sc_destroy(void *self) { free(self); }

static ex_status sc_views(void *self, ex_view_recipe *out) {
    simclr *s = self;
    memset(out, 0, sizeof *out);
    out->count = 2;
    for (int v = 0; v < 2; v++) {
        ex_view_spec *vs = &out->views[v];
        vs->height = vs->width = s->size;
        vs->scale_min = s->scale_min;
        vs->scale_max = s->scale_max;
        vs->ratio_min = 3.0 / 4.0;
        vs->ratio_max = 4.0 / 3.0;
        vs->flip_p = 0.5;
    }
    return EX_OK;
}

static ex_status sc_backbone_shape(void *self, ex_backbone_shape *max) {
    simclr *s = self;
    memset(max, 0, sizeof *max);
    max->batch = s->n2; /* both views in one pass: the loss couples them */
    max->height = max->width = s->size;
    return EX_OK;
}

static ex_status plan_one(ex_memory_plan *plan, ex_tensor *t, const char *name, ex_dtype dt, int64_t n, ex_err *err) {
    EX_CHECK(ex_tensor_init(t, name, dt, 1, (int64_t[]){n}, err));
    return ex_arena_add(&plan->arenas[EX_MEM_ACTIVATION], t, err);
}

static ex_status sc_plan(void *self, ex_memory_plan *plan, ex_err *err) {
    simclr *s = self;
    const int64_t N = s->n2, D = s->env.info.dim, C = s->env.info.channels, HW = s->size * s->size;
    const int64_t T = 1 + s->env.info.registers + HW / (s->env.info.patch * s->env.info.patch);
    EX_CHECK(plan_one(plan, &s->images, "simclr.images", EX_F32, N * C * HW, err));
    EX_CHECK(plan_one(plan, &s->cls, "simclr.cls", EX_F32, N * D, err));
    EX_CHECK(plan_one(plan, &s->dcls, "simclr.dcls", EX_F32, N * D, err));
    EX_CHECK(plan_one(plan, &s->z, "simclr.z", EX_F32, N * D, err));
    EX_CHECK(plan_one(plan, &s->norms, "simclr.norms", EX_F32, N, err));
    EX_CHECK(plan_one(plan, &s->logits, "simclr.logits", EX_F32, N * N, err));
    EX_CHECK(plan_one(plan, &s->probs, "simclr.probs", EX_F32, N * N, err));
    EX_CHECK(plan_one(plan, &s->losses, "simclr.losses", EX_F32, N, err));
    EX_CHECK(plan_one(plan, &s->dlosses, "simclr.dlosses", EX_F32, N, err));
    EX_CHECK(plan_one(plan, &s->dlogits, "simclr.dlogits", EX_F32, N * N, err));
    EX_CHECK(plan_one(plan, &s->dz, "simclr.dz", EX_F32, N * D, err));
    EX_CHECK(plan_one(plan, &s->dtokens, "simclr.dtokens", EX_F32, N * T * D, err));
    EX_CHECK(plan_one(plan, &s->mask, "simclr.mask", EX_F32, N * N, err));
    return plan_one(plan, &s->labels, "simclr.labels", EX_I32, N, err);
}

static ex_status sc_init(void *self, ex_rng *rng, ex_err *err) {
    (void)rng;
    simclr *s = self;
    const int64_t N = s->n2, B = N / 2;
    float *mask = calloc((size_t)(N * N), sizeof(float));
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)N);
    EX_ENSURE(mask && labels, err, EX_E_NOMEM, "simclr: out of memory");
    for (int64_t i = 0; i < N; i++) {
        mask[i * N + i] = -1e9f; /* a view is not its own positive */
        labels[i] = (int32_t)(i < B ? i + B : i - B);
    }
    ex_backend *be = s->env.be;
    ex_status st = ex_be_upload(be, s->mask.data, mask, sizeof(float) * (size_t)(N * N), err);
    if (st == EX_OK) st = ex_be_upload(be, s->labels.data, labels, sizeof(int32_t) * (size_t)N, err);
    free(mask);
    free(labels);
    return st;
}

#define OP(call)                                                                     \
    do {                                                                             \
        ex_status op__s = be->vt.call;                                               \
        EX_ENSURE(op__s == EX_OK, err, op__s, "simclr: %s failed", #call);           \
    } while (0)

static ex_status sc_step(void *self, const ex_batch *b, ex_rng *rng, int64_t iteration, ex_loss_terms *out, ex_err *err) {
    (void)rng, (void)iteration;
    simclr *s = self;
    ex_backend *be = s->env.be;
    const int64_t B = b->batch, N = 2 * B, D = s->env.info.dim, C = s->env.info.channels, HW = s->size * s->size;
    EX_ENSURE(N == s->n2 && b->nviews == 2, err, EX_E_SHAPE, "simclr: expected 2 views of %lld images", (long long)(s->n2 / 2));
    float *img = s->images.data;
    OP(copy(be->ctx, img, b->views[0], sizeof(float) * (size_t)(B * C * HW), EX_COPY_D2D));
    OP(copy(be->ctx, img + B * C * HW, b->views[1], sizeof(float) * (size_t)(B * C * HW), EX_COPY_D2D));
    ex_backbone_io io;
    memset(&io, 0, sizeof io);
    io.batch = N, io.height = s->size, io.width = s->size, io.images = img, io.train = 1;
    EX_CHECK(s->env.bb->forward(s->env.bb_self, &io, err));
    const int64_t T = io.num_tokens;
    OP(copy2d(be->ctx, s->cls.data, D, io.tokens, T * D, N, D)); /* the cls rows */
    OP(l2norm_fwd(be->ctx, s->z.data, s->norms.data, s->cls.data, N, D, 1e-12f));
    ex_gemm_desc g = {0};
    g.trans_b = 1, g.m = N, g.n = N, g.k = D, g.alpha = (float)(1.0 / s->temperature), g.beta = 0;
    g.a = s->z.data, g.a_dtype = EX_F32, g.lda = D, g.b = s->z.data, g.b_dtype = EX_F32, g.ldb = D;
    g.c = s->logits.data, g.ldc = N, g.batch = 1;
    EX_CHECK(ex_be_gemm(be, &g, err));
    OP(binary(be->ctx, EX_BIN_ADD, s->logits.data, s->logits.data, s->mask.data, N * N));
    OP(xent_fwd(be->ctx, s->losses.data, s->probs.data, s->logits.data, s->labels.data, NULL, N, N));
    float *one = s->dlosses.data;
    OP(reduce(be->ctx, EX_RED_MEAN, one, s->losses.data, N));
    float loss = 0;
    EX_CHECK(ex_be_download(be, &loss, one, sizeof loss, err));
    /* backward: mean over rows */
    OP(fill(be->ctx, s->dlosses.data, 1.0f / (float)N, N));
    OP(fill(be->ctx, s->dlogits.data, 0.0f, N * N));
    OP(xent_bwd(be->ctx, s->dlogits.data, s->dlosses.data, s->probs.data, s->labels.data, NULL, N, N));
    /* logits = z z^T / t: dz = (dL + dL^T) z / t */
    ex_gemm_desc d1 = {0};
    d1.m = N, d1.n = D, d1.k = N, d1.alpha = (float)(1.0 / s->temperature), d1.beta = 0;
    d1.a = s->dlogits.data, d1.a_dtype = EX_F32, d1.lda = N, d1.b = s->z.data, d1.b_dtype = EX_F32, d1.ldb = D;
    d1.c = s->dz.data, d1.ldc = D, d1.batch = 1;
    EX_CHECK(ex_be_gemm(be, &d1, err));
    d1.trans_a = 1, d1.beta = 1;
    EX_CHECK(ex_be_gemm(be, &d1, err));
    OP(fill(be->ctx, s->dtokens.data, 0.0f, N * T * D));
    OP(fill(be->ctx, s->dcls.data, 0.0f, N * D));
    OP(l2norm_bwd(be->ctx, s->dcls.data, s->dz.data, s->cls.data, s->norms.data, N, D, 1e-12f));
    OP(copy2d(be->ctx, s->dtokens.data, T * D, s->dcls.data, D, N, D));
    EX_CHECK(s->env.bb->backward(s->env.bb_self, s->dtokens.data, NULL, err));
    out->count = 1;
    out->names[0] = "nt_xent";
    out->values[0] = loss;
    out->total = loss;
    return EX_OK;
}

static const ex_objective_vtable vt = {
    /* .create         = */ sc_create,
    /* .destroy        = */ sc_destroy,
    /* .views          = */ sc_views,
    /* .backbone_shape = */ sc_backbone_shape,
    /* .plan           = */ sc_plan,
    /* .init           = */ sc_init,
    /* .load           = */ NULL,
    /* .step           = */ sc_step,
    /* .update         = */ NULL,
    /* .evaluate       = */ NULL,
    /* .save_state     = */ NULL,
    /* .load_state     = */ NULL,
    /* .teacher_shape  = */ NULL, /* no teacher */
};

static const ex_plugin_desc desc = EX_PLUGIN_DESC(EX_PLUGIN_OBJECTIVE, "example-simclr", "1.0.0",
                                                  "SimCLR-style contrastive loss, built out of tree", simclr_keys, &vt);

EX_PLUGIN_ENTRY { return &desc; }
