/*
 * tests/test_dinov2.c — the `dinov2` objective against PyTorch fixtures
 * (tests/fixtures/dinov2_{step,units}.safetensors, made by
 * tests/fixtures/make_dinov2_fixtures.py following facebookresearch/dinov2).
 *
 * The plugin's sources are compiled into this executable (tests/CMakeLists.txt)
 * so that internal functions and the test hook for fixed masks are reachable;
 * the `vit` backbone comes from the plugin folder as in a run. The student is
 * the tiny DINOv2 ViT of vit_dinov2.safetensors (every tensor trainable except
 * patch_embed.*, so the EMA test sees frozen tensors too); the teacher is a
 * second vit instance built by this file's make_teacher.
 *
 * Checked: head forward/backward (weight norm); DINO loss with centring and
 * with Sinkhorn-Knopp (value and gradient w.r.t. the student logits); the
 * centring lag over three calls; KoLeo value and gradient; one full step from
 * fixed weights, crops and masks (every loss term and every trainable
 * gradient, both target modes; iBOT with an image with no masked patch);
 * the teacher EMA; the block mask generator's invariants; the schedules;
 * the last-layer freeze; a few SGD steps lowering the total loss.
 * Tolerances: losses 1e-4 absolute; gradients 1e-3 relative to the tensor's
 * largest entry.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../plugins/dinov2/dinov2_internal.h"
#include "explora/backbone.h"
#include "explora/config.h"
#include "explora/params.h"
#include "explora/safetensors.h"
#include "test_support.h"

#define F(t) ((float *)(t).data)

typedef struct dn_ctx {
    ex_registry *reg;
    ex_backend be;
    const ex_backbone_vtable *vt;
    const ex_plugin *dnp;
    ex_config *cfg;
    ex_params params, tparams;
    ex_memory_plan plan, tplan;
    void *model, *tmodel;
    dinov2 *d;
    ex_st_file *step, *units;
    int has_teacher;
} dn_ctx;

static const char *k_vit_ini =
    "[backbone]\nname = vit\ndim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\nlayerscale = on\n"
    "pos_interp = dinov2\nmask_token = on\n";

static const ex_st_entry *need(const ex_st_file *f, const char *name) {
    const ex_st_entry *e = ex_st_find(f, name);
    if (!e) fail_msg("fixture %s lacks tensor '%s'", ex_st_path(f), name);
    return e;
}

static int64_t numel(const ex_st_entry *e) {
    int64_t n = 1;
    for (int i = 0; i < e->ndim; i++) n *= e->shape[i];
    return n;
}

static float *fx_f32(const ex_st_file *f, const char *name, int64_t *n) {
    const ex_st_entry *e = need(f, name);
    int64_t k = numel(e);
    float *x = malloc(sizeof(float) * (size_t)(k ? k : 1));
    ex_err err;
    EXT_OK(ex_st_read_f32(f, e, x, k, &err), &err);
    if (n) *n = k;
    return x;
}

static double fx_scalar(const ex_st_file *f, const char *name) {
    float *x = fx_f32(f, name, NULL);
    double v = x[0];
    free(x);
    return v;
}

/* got (n) vs a fixture tensor: grad = 1 -> 1e-3 relative to max |ref|, else 1e-4 absolute. */
static void expect(const ex_st_file *f, const float *got, const char *name, int64_t n, int grad) {
    int64_t m;
    float *ref = fx_f32(f, name, &m);
    if (m != n) fail_msg("%s: fixture has %lld values, test has %lld", name, (long long)m, (long long)n);
    double maxref = 0;
    for (int64_t i = 0; i < n; i++) maxref = fmax(maxref, fabs(ref[i]));
    ext_assert_close(got, ref, (size_t)n, grad ? 1e-3 * fmax(maxref, 1e-6) : 1e-4, 0, name);
    free(ref);
}

static void open_fixture(ex_st_file **f, const char *name) {
    char path[4096];
    ex_err err;
    snprintf(path, sizeof path, "%s/../fixtures/%s", ext_env("EXPLORA_TEST_DATA_DIR"), name);
    EXT_OK(ex_st_open(f, path, &err), &err);
}

static void copy_values(ex_params *dst, const ex_params *src) {
    for (int i = 0; i < dst->count; i++) {
        ex_param *t = dst->items[i];
        const ex_param *s = ex_params_find(src, t->value.name);
        if (!s) fail_msg("teacher tensor %s has no student counterpart", t->value.name);
        memcpy(t->value.data, s->value.data, ex_tensor_nbytes(&t->value));
    }
}

static ex_status test_make_teacher(void *owner, const ex_backbone_shape *max, ex_teacher *out, ex_err *err) {
    dn_ctx *c = owner;
    ex_cfg_section view = {c->cfg, "backbone", NULL};
    const ex_plugin *vitp;
    EX_CHECK(ex_registry_find(c->reg, EX_PLUGIN_BACKBONE, "vit", &vitp, err));
    view.specs = vitp->desc.keys;
    ex_params_init(&c->tparams);
    EX_CHECK(c->vt->create(&view, &c->be, &c->tparams, &c->tmodel, err));
    c->has_teacher = 1;
    EX_CHECK(ex_params_set_trainable(&c->tparams, "*", 0, NULL, err));
    ex_memory_plan_init(&c->tplan, &c->be);
    EX_CHECK(ex_params_plan(&c->tparams, &c->tplan, err));
    EX_CHECK(c->vt->plan(c->tmodel, max, &c->tplan, err));
    EX_CHECK(ex_memory_plan_commit(&c->tplan, err));
    ex_params_bind(&c->tparams);
    EX_CHECK(c->vt->ready(c->tmodel, err));
    copy_values(&c->tparams, &c->params);
    out->params = &c->tparams;
    out->bb = c->vt;
    out->bb_self = c->tmodel;
    return EX_OK;
}

/* Build student + objective from INI text for [objective]; load the backbone weights; init (teacher). */
/* ce_chunk: rows per chunk of the head's logits and cross-entropy (set before the plan) */
static void open_ctx_chunk(dn_ctx *c, const char *obj_ini, int64_t ce_chunk) {
    memset(c, 0, sizeof *c);
    ex_err err;
    ex_err_clear(&err);
    const ex_plugin *vitp;
    ext_backend_open("cpu", NULL, &c->be, &c->reg);
    EXT_OK(ex_registry_add_dir(c->reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err), &err);
    EXT_OK(ex_registry_scan(c->reg, &err), &err);
    EXT_OK(ex_registry_find(c->reg, EX_PLUGIN_BACKBONE, "vit", &vitp, &err), &err);
    EXT_OK(ex_registry_find(c->reg, EX_PLUGIN_OBJECTIVE, "dinov2", &c->dnp, &err), &err);
    c->vt = &vitp->vtable_copy.backbone;
    char text[8192];
    snprintf(text, sizeof text, "%s[objective]\nname = dinov2\nprototypes = 64\nbottleneck = 16\nhead_hidden = 32\n"
                                "local_crops = 2\nglobal_size = 16\nlocal_size = 8\nteacher_temp = 0.05\n%s",
             k_vit_ini, obj_ini);
    EXT_OK(ex_config_load_string(&c->cfg, text, "test-dinov2.ini", &err), &err);
    EXT_OK(ex_config_validate_section(c->cfg, "objective", c->dnp->desc.keys, (const char *const[]){"name", NULL}, &err),
           &err);
    ex_cfg_section bview = {c->cfg, "backbone", vitp->desc.keys};
    ex_params_init(&c->params);
    EXT_OK(c->vt->create(&bview, &c->be, &c->params, &c->model, &err), &err);
    EXT_OK(ex_params_set_trainable(&c->params, "*", 1, NULL, &err), &err);
    EXT_OK(ex_params_set_trainable(&c->params, "patch_embed.*", 0, NULL, &err), &err);
    ex_objective_env env;
    memset(&env, 0, sizeof env);
    env.be = &c->be, env.params = &c->params, env.bb = c->vt, env.bb_self = c->model;
    EXT_OK(c->vt->info(c->model, &env.info), &err);
    env.batch = 2, env.owner = c, env.make_teacher = test_make_teacher;
    ex_cfg_section oview = {c->cfg, "objective", c->dnp->desc.keys};
    void *self = NULL;
    EXT_OK(dn_vtable()->create(&oview, &env, &self, &err), &err);
    c->d = self;
    c->d->ce_chunk = ce_chunk;
    ex_backbone_shape shape;
    EXT_OK(dn_vtable()->backbone_shape(self, &shape), &err);
    ex_memory_plan_init(&c->plan, &c->be);
    EXT_OK(ex_params_plan(&c->params, &c->plan, &err), &err);
    EXT_OK(c->vt->plan(c->model, &shape, &c->plan, &err), &err);
    EXT_OK(dn_vtable()->plan(self, &c->plan, &err), &err);
    EXT_OK(ex_memory_plan_commit(&c->plan, &err), &err);
    ex_params_bind(&c->params);
    EXT_OK(c->vt->ready(c->model, &err), &err);
    /* backbone weights: a weights-only copy of vit_dinov2.safetensors */
    ex_st_file *fx;
    open_fixture(&fx, "vit_dinov2.safetensors");
    ex_st_writer *wr;
    EXT_OK(ex_st_writer_new(&wr, &err), &err);
    for (int i = 0; i < ex_st_count(fx); i++) {
        const ex_st_entry *e = ex_st_at(fx, i);
        if (!ex_params_find(&c->params, e->name)) continue;
        EXT_OK(ex_st_writer_add(wr, e->name, e->dtype, e->ndim, e->shape, ex_st_data(fx, e), &err), &err);
    }
    char path[4096];
    ext_tmp_path(path, sizeof path, "dinov2_backbone.safetensors");
    EXT_OK(ex_st_writer_finish(wr, path, &err), &err);
    ex_st_writer_free(wr);
    ex_st_close(fx);
    EXT_OK(c->vt->load(c->model, path, "auto", &err), &err);
    ex_rng rng = ex_rng_seed(7, EX_RNG_INIT);
    EXT_OK(dn_vtable()->init(self, &rng, &err), &err);
    open_fixture(&c->step, "dinov2_step.safetensors");
    open_fixture(&c->units, "dinov2_units.safetensors");
}

/* The head's logits and cross-entropy in chunks of 3 rows (a remainder in every call): the fixtures must
 * still match, as with the default single chunk of the small runs elsewhere. */
static void open_ctx(dn_ctx *c, const char *obj_ini) { open_ctx_chunk(c, obj_ini, 3); }

static void close_ctx(dn_ctx *c) {
    ex_memory_plan_release(&c->plan);
    if (c->has_teacher) ex_memory_plan_release(&c->tplan);
    dn_vtable()->destroy(c->d);
    c->vt->destroy(c->model);
    if (c->has_teacher) {
        c->vt->destroy(c->tmodel);
        ex_params_free(&c->tparams);
    }
    ex_params_free(&c->params);
    ex_config_free(c->cfg);
    ex_st_close(c->step);
    ex_st_close(c->units);
    ext_backend_close(&c->be, c->reg);
}

/* The fixture's head weights into the student head, copied to the teacher head. */
static void set_heads(dn_ctx *c) {
    ex_err err;
    for (int i = 0; i < c->d->sdino.nparams; i++) {
        ex_param *p = c->d->sdino.params[i];
        int64_t n;
        float *x = fx_f32(c->step, p->value.name, &n);
        assert_int_equal(n, ex_tensor_numel(&p->value));
        memcpy(p->value.data, x, sizeof(float) * (size_t)n);
        free(x);
    }
    EXT_OK(dn_head_copy(c->d, &c->d->tdino, &c->d->sdino, &err), &err);
}

static void zero_grads(dn_ctx *c) {
    ex_arena *g = &c->plan.arenas[EX_MEM_GRAD];
    memset(g->base, 0, g->planned);
}

/* --- units ------------------------------------------------------------------------------------- */

static void test_schedules(void **state) {
    (void)state;
    ex_st_file *u;
    open_fixture(&u, "dinov2_units.safetensors");
    dinov2 d;
    memset(&d, 0, sizeof d);
    d.warmup_temp = 0.04, d.teacher_temp = 0.07, d.warmup_temp_iters = 10;
    const ex_st_entry *e = need(u, "sched.temp_iters");
    const int64_t *its = ex_st_data(u, e);
    float *temps = fx_f32(u, "sched.temp", NULL);
    for (int64_t i = 0; i < numel(e); i++) assert_true(fabs(dn_teacher_temp(&d, its[i]) - temps[i]) < 1e-7);
    e = need(u, "sched.mom_iters");
    its = ex_st_data(u, e);
    float *mom = fx_f32(u, "sched.mom", NULL);
    for (int64_t i = 0; i < numel(e); i++) assert_true(fabs(dn_momentum(0.992, its[i], 100) - mom[i]) < 1e-7);
    assert_true(fabs(dn_momentum(0.992, 0, 100) - 0.992) < 1e-12);
    assert_true(dn_momentum(0.992, 100, 100) == 1.0);
    d.warmup_temp_iters = 0;
    assert_true(dn_teacher_temp(&d, 0) == 0.07);
    free(temps);
    free(mom);
    ex_st_close(u);
}

static void test_koleo(void **state) {
    (void)state;
    ex_st_file *u;
    open_fixture(&u, "dinov2_units.safetensors");
    int64_t n;
    float *x = fx_f32(u, "koleo.x", &n);
    float g[6 * 24];
    assert_int_equal(n, 6 * 24);
    double v = dn_koleo_host(x, 6, 3, 24, 0.1, g);
    assert_true(fabs(v - fx_scalar(u, "koleo.loss")) < 1e-4);
    expect(u, g, "koleo.grad", n, 1);
    free(x);
    ex_st_close(u);
}

static void test_masks(void **state) {
    (void)state;
    enum { BG = 8, GH = 16, GW = 16, N = GH * GW };
    static uint8_t mask[BG * N];
    int64_t targets[BG];
    ex_rng rng = ex_rng_seed(3, EX_RNG_MASK);
    const int64_t maxp = dn_masks_max_patches(224, 14);
    assert_int_equal(maxp, 128);
    assert_int_equal(dn_masks_max_patches(98, 14), 21); /* 0.5*98//14 = 3; 3*98//14 = 21 */
    const int64_t ub = dn_masks_upperbound(BG, N, 0.1, 0.5, 0.5);
    double filled = 0, wanted = 0;
    for (int trial = 0; trial < 200; trial++) {
        dn_masks_generate(mask, targets, BG, GH, GW, maxp, 0.1, 0.5, 0.5, &rng);
        int64_t total = 0, with_target = 0;
        for (int i = 0; i < BG; i++) {
            int64_t cnt = 0;
            for (int p = 0; p < N; p++) cnt += mask[i * N + p];
            assert_true(cnt <= targets[i]);            /* never more than the target */
            if (targets[i] == 0) assert_int_equal(cnt, 0);
            if (targets[i] > 0) {
                with_target++;
                assert_true(targets[i] >= (int64_t)(N * 0.1) && targets[i] <= (int64_t)(N * 0.5));
                assert_true(cnt >= 4 || cnt == targets[i]); /* the first block has area >= 4 (rounded) */
            }
            total += cnt;
            filled += (double)cnt;
            wanted += (double)targets[i];
        }
        assert_int_equal(with_target, BG / 2); /* mask_probability 0.5 */
        assert_true(total <= ub);
    }
    assert_true(filled / wanted > 0.9); /* block filling reaches (nearly) every target */
    /* one block: an empty 16x16 grid and target 4 gives between 1 and 4 patches */
    memset(mask, 0, N);
    int64_t c = dn_mask_block(mask, GH, GW, 4, maxp, &rng);
    assert_true(c >= 1 && c <= 4);
}

static void test_head(void **state) {
    (void)state;
    dn_ctx c;
    open_ctx(&c, "");
    set_heads(&c);
    dinov2 *d = c.d;
    ex_err err;
    int64_t n;
    float *x = fx_f32(c.units, "head.x", &n);
    memcpy(F(d->xin), x, sizeof(float) * (size_t)n);
    EXT_OK(dn_head_forward(d, &d->sdino, F(d->xin), 0, 5, &err), &err);
    /* the logits one chunk at a time through the (ce_chunk = 3 rows, K) buffer: rows 0-2, then 3-4 */
    float logits[5 * 64];
    for (int64_t c0 = 0; c0 < 5; c0 += 3) {
        const int64_t nc = 5 - c0 < 3 ? 5 - c0 : 3;
        EXT_OK(dn_head_logits(d, &d->sdino, c0, nc, 1.0f, F(d->acts.logits), &err), &err);
        memcpy(logits + c0 * 64, F(d->acts.logits), sizeof(float) * (size_t)(nc * 64));
    }
    expect(c.units, logits, "head.logits", 5 * 64, 0);
    float *r = fx_f32(c.units, "head.r", NULL);
    for (int freeze = 0; freeze < 2; freeze++) {
        memset(F(d->dxin), 0, sizeof(float) * 5 * 24);
        zero_grads(&c);
        for (int64_t c0 = 0; c0 < 5; c0 += 3) { /* dlogits chunk by chunk; dW summed over the chunks */
            const int64_t nc = 5 - c0 < 3 ? 5 - c0 : 3;
            memcpy(F(d->acts.logits), r + c0 * 64, sizeof(float) * (size_t)(nc * 64));
            EXT_OK(dn_head_logits_backward(d, &d->sdino, F(d->acts.logits), c0, nc, 1.0f, c0 > 0, freeze, &err), &err);
        }
        EXT_OK(dn_head_backward(d, &d->sdino, F(d->xin), F(d->dxin), 0, 5, freeze, &err), &err);
        expect(c.units, F(d->dxin), "head.grad.x", 5 * 24, 1); /* the input's gradient either way */
        if (freeze) break;
        for (int i = 0; i < d->sdino.nparams; i++) {
            char name[256];
            const ex_param *p = d->sdino.params[i];
            snprintf(name, sizeof name, "head.grad.%s", p->value.name + strlen("dino_head."));
            expect(c.units, p->grad.data, name, ex_tensor_numel(&p->grad), 1);
        }
    }
    /* the last-layer freeze: no gradient for weight_g / weight_v */
    for (int64_t i = 0; i < 64; i++) assert_true(d->sdino.dg[i] == 0.0f);
    for (int64_t i = 0; i < 64 * 16; i++) assert_true(d->sdino.dv[i] == 0.0f);
    free(x);
    free(r);
    close_ctx(&c);
}

/* DINO loss pieces: targets from raw teacher logits, CE with the objective's weights. */
static void check_dino_loss(const char *mode_ini, const char *pre) {
    dn_ctx c;
    open_ctx(&c, mode_ini);
    dinov2 *d = c.d;
    ex_err err;
    const int64_t B = 2, K = 64, nterms = 6;
    const float Ts = 0.1f;
    float *t = fx_f32(c.units, "dino.t", NULL);
    memcpy(F(d->tprob_patch), t, sizeof(float) * 4 * 64); /* device scratch for the raw teacher logits */
    EXT_OK(dn_teacher_targets(d, &d->cdino, F(d->tprob_patch), 4, 0.05f, F(d->acts.probs), &err), &err);
    memcpy(F(d->tprob_cls), F(d->acts.probs) + B * K, sizeof(float) * (size_t)(B * K));
    memcpy(F(d->tprob_cls) + B * K, F(d->acts.probs), sizeof(float) * (size_t)(B * K));
    char name[128];
    snprintf(name, sizeof name, "dino.%s.targets", pre);
    expect(c.units, F(d->tprob_cls), name, 4 * 64, 0);
    float w[4];
    for (int i = 0; i < 4; i++) w[i] = (float)(1.0 / (double)(B * nterms));
    /* global: s_global / Ts against the swapped targets */
    float *sg = fx_f32(c.units, "dino.s_global", NULL), *sl = fx_f32(c.units, "dino.s_local", NULL);
    float lg[4 * 64]; /* host memory is device memory on the cpu backend */
    for (int i = 0; i < 4 * 64; i++) lg[i] = sg[i] / Ts;
    double vg = 0, vl = 0, v[2];
    const float *tcls = F(d->tprob_cls), *both[2] = {tcls, tcls + B * K};
    EXT_OK(dn_soft_ce(d, lg, 4, 1, &tcls, w, 1, &vg, &err), &err);
    snprintf(name, sizeof name, "dino.%s.global", pre);
    assert_true(fabs(vg - fx_scalar(c.units, name)) < 1e-4);
    float grad[4 * 64];
    for (int i = 0; i < 4 * 64; i++) grad[i] = lg[i] / Ts; /* the gradient replaced the logits */
    snprintf(name, sizeof name, "dino.%s.grad.s_global", pre);
    expect(c.units, grad, name, 4 * 64, 1);
    /* locals: each local chunk against both teacher crops */
    for (int i = 0; i < 4 * 64; i++) lg[i] = sl[i] / Ts;
    for (int j = 0; j < 2; j++) {
        EXT_OK(dn_soft_ce(d, lg + j * B * K, B, 2, both, w, 1, v, &err), &err);
        vl += v[0] + v[1];
    }
    snprintf(name, sizeof name, "dino.%s.local", pre);
    assert_true(fabs(vl - fx_scalar(c.units, name)) < 1e-4);
    for (int i = 0; i < 4 * 64; i++) grad[i] = lg[i] / Ts; /* the gradient replaced the logits */
    snprintf(name, sizeof name, "dino.%s.grad.s_local", pre);
    expect(c.units, grad, name, 4 * 64, 1);
    free(t);
    free(sg);
    free(sl);
    close_ctx(&c);
}

static void test_dino_loss_centering(void **state) {
    (void)state;
    check_dino_loss("", "c");
}

static void test_dino_loss_sinkhorn(void **state) {
    (void)state;
    check_dino_loss("centering = sinkhorn_knopp\n", "sk");
}

static void test_centering_lag(void **state) {
    (void)state;
    dn_ctx c;
    open_ctx(&c, "");
    dinov2 *d = c.d;
    ex_err err;
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "center.t%d", i);
        float *t = fx_f32(c.units, name, NULL);
        memcpy(F(d->tprob_patch), t, sizeof(float) * 4 * 64);
        EXT_OK(dn_teacher_targets(d, &d->cdino, F(d->tprob_patch), 4, 0.05f, F(d->acts.probs), &err), &err);
        snprintf(name, sizeof name, "center.probs%d", i);
        expect(c.units, F(d->acts.probs), name, 4 * 64, 0);
        free(t);
    }
    expect(c.units, F(d->cdino.c), "center.c_used2", 64, 0);
    close_ctx(&c);
}

/* Sinkhorn-Knopp on the device (backend ops; the cpu backend has exp_fwd and row_sum) against the host
 * version, on every row the plan allows and teacher-like logits (cosines over a small temperature). */
static void test_sinkhorn_device_matches_host(void **state) {
    (void)state;
    dn_ctx c;
    open_ctx(&c, "centering = sinkhorn_knopp\n");
    dinov2 *d = c.d;
    assert_true(d->sk_device);
    assert_null(d->sk); /* no host copy of the targets */
    ex_err err;
    const int64_t K = d->K, n = d->nm_max;
    float *q = malloc(sizeof(float) * (size_t)(n * K)), *h = malloc(sizeof(float) * (size_t)(n * K));
    double *row = malloc(sizeof(double) * (size_t)K), *col = malloc(sizeof(double) * (size_t)n);
    assert_true(q && h && row && col);
    ext_fill_uniform(q, (size_t)(n * K), 77, -1, 1);
    memcpy(h, q, sizeof(float) * (size_t)(n * K));
    memcpy(F(d->tprob_patch), q, sizeof(float) * (size_t)(n * K));
    EXT_OK(dn_sinkhorn_device(d, F(d->tprob_patch), n, 0.05f, 3, &err), &err);
    EXT_OK(dn_sinkhorn_host(h, n, K, 0.05f, 3, row, col), &err);
    double worst = 0.0, rs = 0.0;
    for (int64_t i = 0; i < n * K; i++) worst = fmax(worst, fabs(F(d->tprob_patch)[i] - h[i]) / fmax(fabs(h[i]), 1e-30));
    for (int64_t k = 0; k < K; k++) rs += h[k]; /* a target row sums to 1 */
    printf("# Sinkhorn-Knopp, %lld x %lld: device vs host, largest relative difference %.2e\n", (long long)n,
           (long long)K, worst);
    assert_true(fabs(rs - 1.0) < 1e-5);
    assert_true(worst < 1e-5);
    free(q), free(h), free(row), free(col);
    close_ctx(&c);
}

/* --- the full step ------------------------------------------------------------------------------ */

static void make_batch(dn_ctx *c, ex_batch *b, float **bufs) {
    memset(b, 0, sizeof *b);
    const char *names[4] = {"global0", "global1", "local0", "local1"};
    b->batch = 2;
    b->nviews = 4;
    for (int v = 0; v < 4; v++) {
        bufs[v] = fx_f32(c->step, names[v], NULL);
        b->views[v] = bufs[v];
        b->height[v] = b->width[v] = v < 2 ? 16 : 8;
    }
    c->d->test_masks = ex_st_data(c->step, need(c->step, "masks"));
}

static void check_step(const char *mode_ini, const char *pre, int backbone_grads) {
    dn_ctx c;
    open_ctx(&c, mode_ini);
    set_heads(&c);
    ex_err err;
    ex_batch b;
    float *bufs[4];
    make_batch(&c, &b, bufs);
    zero_grads(&c);
    ex_loss_terms terms;
    ex_rng rng = ex_rng_seed(1, EX_RNG_MASK);
    EXT_OK(dn_vtable()->step(c.d, &b, &rng, 0, &terms, &err), &err);
    char name[256];
    assert_int_equal(terms.count, 4);
    for (int k = 0; k < terms.count; k++) {
        snprintf(name, sizeof name, "%s%s", pre, terms.names[k]);
        double ref = fx_scalar(c.step, name);
        if (fabs(terms.values[k] - ref) >= 1e-4) fail_msg("%s: %.7f vs %.7f", name, terms.values[k], ref);
    }
    snprintf(name, sizeof name, "%stotal", pre);
    assert_true(fabs(terms.total - fx_scalar(c.step, name)) < 1e-4);
    int checked = 0;
    for (int i = 0; i < c.params.count; i++) {
        const ex_param *p = c.params.items[i];
        if (!p->trainable) continue;
        const int head = strncmp(p->value.name, "dino_head.", 10) == 0;
        if (!head && !backbone_grads) continue;
        snprintf(name, sizeof name, "%sgrad.%s", pre, p->value.name);
        expect(c.step, p->grad.data, name, ex_tensor_numel(&p->grad), 1);
        checked++;
    }
    assert_true(checked >= (backbone_grads ? 50 : 8));
    for (int v = 0; v < 4; v++) free(bufs[v]);
    close_ctx(&c);
}

static void test_step_centering(void **state) {
    (void)state;
    check_step("", "c.", 1);
}

static void test_step_sinkhorn(void **state) {
    (void)state;
    check_step("centering = sinkhorn_knopp\n", "sk.", 0);
}

/* The head in chunks of 3 rows and in one chunk (the default's behaviour at these sizes) give the same step:
 * losses to 1e-6 and every gradient to 1e-5 of its largest value, with one DINO/iBOT head and with a
 * separate iBOT head (whose dW is summed over its own chunks and consumed before the DINO head's loss). */
static void test_step_chunks_agree(void **state) {
    (void)state;
    for (int sep = 0; sep < 2; sep++) {
        dn_ctx c[2];
        ex_loss_terms terms[2];
        ex_batch b[2];
        float *bufs[2][4];
        for (int k = 0; k < 2; k++) {
            open_ctx_chunk(&c[k], sep ? "separate_ibot_head = true\n" : "", k == 0 ? 3 : 1000);
            set_heads(&c[k]);
            make_batch(&c[k], &b[k], bufs[k]);
            zero_grads(&c[k]);
            ex_err err;
            ex_rng rng = ex_rng_seed(1, EX_RNG_MASK);
            EXT_OK(dn_vtable()->step(c[k].d, &b[k], &rng, 0, &terms[k], &err), &err);
        }
        assert_true(c[0].d->rows > 3 && c[1].d->ce_chunk >= c[1].d->rows); /* chunked, and not */
        for (int t = 0; t < terms[0].count; t++)
            if (fabs(terms[0].values[t] - terms[1].values[t]) > 1e-6 * (1.0 + fabs(terms[1].values[t])))
                fail_msg("separate %d, %s: %.9f (chunks of 3) vs %.9f", sep, terms[0].names[t], terms[0].values[t],
                         terms[1].values[t]);
        int heads = 0;
        for (int i = 0; i < c[0].params.count; i++) {
            const ex_param *p0 = c[0].params.items[i], *p1 = c[1].params.items[i];
            if (!p0->trainable) continue;
            const float *g0 = p0->grad.data, *g1 = p1->grad.data;
            double mx = 0.0, diff = 0.0;
            for (int64_t j = 0; j < ex_tensor_numel(&p0->grad); j++) {
                mx = fmax(mx, fabs(g1[j]));
                diff = fmax(diff, fabs((double)g0[j] - g1[j]));
            }
            if (diff > 1e-5 * mx) fail_msg("separate %d, gradient of %s: differs by %.3g (largest %.3g)", sep,
                                           p0->value.name, diff, mx);
            heads += strstr(p0->value.name, "last_layer") != NULL && mx > 0.0;
        }
        assert_int_equal(heads, sep ? 4 : 2); /* weight_g and weight_v of each head got gradients */
        for (int k = 0; k < 2; k++) {
            for (int v = 0; v < 4; v++) free(bufs[k][v]);
            close_ctx(&c[k]);
        }
    }
}

/* A separate iBOT head holding the same weights as the DINO head is the shared head split in two: the same
 * losses, the same backbone gradients, and each shared-head gradient the sum of the two heads'. (Catches
 * one head's last-layer gradient leaking into the other's through the buffer they share.) */
static void test_separate_ibot_head_splits_gradient(void **state) {
    (void)state;
    dn_ctx c[2];
    ex_loss_terms terms[2];
    ex_batch b[2];
    float *bufs[2][4];
    for (int k = 0; k < 2; k++) {
        open_ctx(&c[k], k ? "separate_ibot_head = true\n" : "");
        set_heads(&c[k]);
        ex_err err;
        if (k) {
            EXT_OK(dn_head_copy(c[k].d, &c[k].d->sibot, &c[k].d->sdino, &err), &err);
            EXT_OK(dn_head_copy(c[k].d, &c[k].d->tibot, &c[k].d->tdino, &err), &err);
        }
        make_batch(&c[k], &b[k], bufs[k]);
        zero_grads(&c[k]);
        ex_rng rng = ex_rng_seed(1, EX_RNG_MASK);
        EXT_OK(dn_vtable()->step(c[k].d, &b[k], &rng, 0, &terms[k], &err), &err);
    }
    for (int t = 0; t < terms[0].count; t++)
        if (fabs(terms[0].values[t] - terms[1].values[t]) > 1e-6 * (1.0 + fabs(terms[0].values[t])))
            fail_msg("%s: %.9f (one head) vs %.9f (two)", terms[0].names[t], terms[0].values[t], terms[1].values[t]);
    int checked = 0;
    for (int i = 0; i < c[0].params.count; i++) {
        const ex_param *p = c[0].params.items[i];
        if (!p->trainable) continue;
        const ex_param *q = ex_params_find(&c[1].params, p->value.name), *qi = NULL;
        assert_non_null(q);
        if (strncmp(p->value.name, "dino_head.", 10) == 0) {
            char name[256];
            snprintf(name, sizeof name, "ibot_head.%s", p->value.name + 10);
            qi = ex_params_find(&c[1].params, name);
            assert_non_null(qi);
        }
        const float *g = p->grad.data, *g1 = q->grad.data, *g2 = qi ? qi->grad.data : NULL;
        double mx = 0.0, diff = 0.0;
        for (int64_t j = 0; j < ex_tensor_numel(&p->grad); j++) {
            const double split = (double)g1[j] + (g2 ? g2[j] : 0.0);
            mx = fmax(mx, fabs(g[j]));
            diff = fmax(diff, fabs(g[j] - split));
        }
        if (diff > 1e-5 * mx) fail_msg("gradient of %s: one head vs two differ by %.3g (largest %.3g)", p->value.name, diff, mx);
        checked++;
    }
    assert_true(checked > 10);
    for (int k = 0; k < 2; k++) {
        for (int v = 0; v < 4; v++) free(bufs[k][v]);
        close_ctx(&c[k]);
    }
}

/* --- teacher EMA -------------------------------------------------------------------------------- */

static void test_teacher_ema(void **state) {
    (void)state;
    dn_ctx c;
    open_ctx(&c, "momentum_start = 0.9\n");
    dinov2 *d = c.d;
    ex_err err;
    /* student values: a pattern; teacher: another; frozen student tensors must stay equal in both */
    for (int i = 0; i < c.params.count; i++) {
        ex_param *p = c.params.items[i];
        if (!p->trainable) continue;
        float *x = p->value.data;
        for (int64_t j = 0; j < ex_tensor_numel(&p->value); j++) x[j] = (float)sin(0.1 * (double)j + i);
    }
    for (int i = 0; i < c.tparams.count; i++) {
        ex_param *p = c.tparams.items[i];
        float *x = p->value.data;
        for (int64_t j = 0; j < ex_tensor_numel(&p->value); j++) x[j] = (float)cos(0.3 * (double)j - i);
    }
    for (int i = 0; i < d->tdino.nparams; i++) {
        float *x = d->tdino.params[i]->value.data;
        for (int64_t j = 0; j < ex_tensor_numel(&d->tdino.params[i]->value); j++) x[j] = 0.5f;
    }
    /* update after the first of 10 steps: momentum at schedule index 0 = momentum_start */
    EXT_OK(dn_vtable()->update(d, 1, 10, &err), &err);
    const double m = 0.9;
    int frozen_seen = 0;
    for (int i = 0; i < c.tparams.count; i++) {
        const ex_param *t = c.tparams.items[i];
        const ex_param *s = ex_params_find(&c.params, t->value.name);
        const float *tv = t->value.data, *sv = s->value.data;
        for (int64_t j = 0; j < ex_tensor_numel(&t->value); j++) {
            double before = (float)cos(0.3 * (double)j - i);
            double want = s->trainable ? m * before + (1 - m) * sv[j] : before;
            if (fabs(tv[j] - want) > 1e-6) fail_msg("%s[%lld]: %g vs %g", t->value.name, (long long)j, tv[j], want);
        }
        frozen_seen += !s->trainable;
    }
    assert_true(frozen_seen >= 2); /* patch_embed.proj.weight and .bias */
    for (int i = 0; i < d->tdino.nparams; i++) {
        const float *tv = d->tdino.params[i]->value.data, *sv = d->sdino.params[i]->value.data;
        for (int64_t j = 0; j < ex_tensor_numel(&d->tdino.params[i]->value); j++)
            assert_true(fabs(tv[j] - (m * 0.5 + (1 - m) * sv[j])) < 1e-6);
    }
    close_ctx(&c);
}

/* --- a few steps lower the loss ------------------------------------------------------------------ */

static void test_loss_decreases(void **state) {
    (void)state;
    dn_ctx c;
    open_ctx(&c, "freeze_last_layer_iters = 1\n");
    set_heads(&c);
    dinov2 *d = c.d;
    ex_err err;
    ex_batch b;
    float *bufs[4];
    make_batch(&c, &b, bufs);
    ex_rng rng = ex_rng_seed(1, EX_RNG_MASK);
    double first = 0, last = 0;
    const int steps = 6;
    for (int it = 0; it < steps; it++) {
        zero_grads(&c);
        ex_loss_terms terms;
        EXT_OK(dn_vtable()->step(d, &b, &rng, it, &terms, &err), &err);
        if (it == 0) {
            first = terms.total;
            for (int64_t i = 0; i < 64; i++) assert_true(d->sdino.dg[i] == 0.0f); /* frozen at iteration 0 */
        }
        if (it == 1) {
            double s = 0;
            for (int64_t i = 0; i < 64; i++) s += fabs(d->sdino.dg[i]);
            assert_true(s > 0); /* released at iteration 1 */
        }
        last = terms.total;
        print_message("dinov2 step %d: total %.5f (dino_global %.5f, dino_local %.5f, ibot %.5f, koleo %.5f)\n", it,
                      terms.total, terms.values[0], terms.values[1], terms.values[2], terms.values[3]);
        /* plain SGD on every trainable tensor */
        for (int i = 0; i < c.params.count; i++) {
            ex_param *p = c.params.items[i];
            if (!p->trainable) continue;
            float *x = p->value.data;
            const float *g = p->grad.data;
            for (int64_t j = 0; j < ex_tensor_numel(&p->value); j++) x[j] -= 0.05f * g[j];
        }
        EXT_OK(dn_vtable()->update(d, it + 1, steps, &err), &err);
    }
    /* measured: 6.017 at step 0 (the fixture's c.total) */
    assert_true(fabs(first - fx_scalar(c.step, "c.total")) < 1e-4);
    assert_true(last < first - 0.05);
    for (int v = 0; v < 4; v++) free(bufs[v]);
    close_ctx(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_koleo),
        cmocka_unit_test(test_masks),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_dino_loss_centering),
        cmocka_unit_test(test_dino_loss_sinkhorn),
        cmocka_unit_test(test_centering_lag),
        cmocka_unit_test(test_step_centering),
        cmocka_unit_test(test_step_sinkhorn),
        cmocka_unit_test(test_sinkhorn_device_matches_host),
        cmocka_unit_test(test_step_chunks_agree),
        cmocka_unit_test(test_separate_ibot_head_splits_gradient),
        cmocka_unit_test(test_teacher_ema),
        cmocka_unit_test(test_loss_decreases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
