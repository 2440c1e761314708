/*
 * tests/test_classify.c — the `classify` objective against PyTorch
 * (tests/fixtures/classify_step.safetensors, made by
 * tests/fixtures/make_classify_fixtures.py): one supervised step of the tiny
 * DINOv2 ViT of vit_dinov2.safetensors (every backbone tensor trainable) with a
 * fixed head and batch, label smoothing 0.1, for pool = avg (fc_norm on the
 * mean patch token) and pool = cls: the loss (1e-4 absolute), the batch top-1
 * and the gradients of head, fc_norm and every backbone parameter (1e-3
 * relative to each tensor's largest entry). Also: evaluate() returns the
 * top-k of the step's logits; init() gives head N(0, 2e-5^2), bias 0,
 * fc_norm (1, 0); bad labels are rejected.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/backbone.h"
#include "explora/config.h"
#include "explora/objective.h"
#include "explora/params.h"
#include "explora/safetensors.h"
#include "test_support.h"

typedef struct cl_ctx {
    ex_registry *reg;
    ex_backend be;
    const ex_backbone_vtable *vt;
    const ex_objective_vtable *ov;
    ex_config *cfg;
    ex_params params;
    ex_memory_plan plan;
    void *model, *obj;
    ex_st_file *fx;
} cl_ctx;

static const ex_st_entry *need(const ex_st_file *f, const char *name) {
    const ex_st_entry *e = ex_st_find(f, name);
    if (!e) fail_msg("fixture %s lacks tensor '%s'", ex_st_path(f), name);
    return e;
}

static float *fx_f32(const ex_st_file *f, const char *name, int64_t *n) {
    const ex_st_entry *e = need(f, name);
    int64_t k = 1;
    for (int i = 0; i < e->ndim; i++) k *= e->shape[i];
    float *x = malloc(sizeof(float) * (size_t)(k ? k : 1));
    ex_err err;
    EXT_OK(ex_st_read_f32(f, e, x, k, &err), &err);
    if (n) *n = k;
    return x;
}

static void open_ctx(cl_ctx *c, const char *pool) {
    memset(c, 0, sizeof *c);
    ex_err err;
    ex_err_clear(&err);
    const ex_plugin *vitp, *clp;
    ext_backend_open("cpu", NULL, &c->be, &c->reg);
    EXT_OK(ex_registry_add_dir(c->reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err), &err);
    EXT_OK(ex_registry_scan(c->reg, &err), &err);
    EXT_OK(ex_registry_find(c->reg, EX_PLUGIN_BACKBONE, "vit", &vitp, &err), &err);
    EXT_OK(ex_registry_find(c->reg, EX_PLUGIN_OBJECTIVE, "classify", &clp, &err), &err);
    c->vt = &vitp->vtable_copy.backbone;
    c->ov = &clp->vtable_copy.objective;
    assert_non_null(c->ov->evaluate);
    char text[4096];
    snprintf(text, sizeof text,
             "[backbone]\nname = vit\ndim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\nlayerscale = on\n"
             "pos_interp = dinov2\nmask_token = on\n"
             "[objective]\nname = classify\nclasses = 5\npool = %s\nimage_size = 16\n",
             pool);
    EXT_OK(ex_config_load_string(&c->cfg, text, "test-classify.ini", &err), &err);
    EXT_OK(ex_config_validate_section(c->cfg, "objective", clp->desc.keys, (const char *const[]){"name", NULL}, &err), &err);
    ex_cfg_section bview = {c->cfg, "backbone", vitp->desc.keys};
    ex_params_init(&c->params);
    EXT_OK(c->vt->create(&bview, &c->be, &c->params, &c->model, &err), &err);
    EXT_OK(ex_params_set_trainable(&c->params, "*", 1, NULL, &err), &err);
    ex_objective_env env;
    memset(&env, 0, sizeof env);
    env.be = &c->be, env.params = &c->params, env.bb = c->vt, env.bb_self = c->model;
    EXT_OK(c->vt->info(c->model, &env.info), &err);
    env.batch = 3;
    ex_cfg_section oview = {c->cfg, "objective", clp->desc.keys};
    EXT_OK(c->ov->create(&oview, &env, &c->obj, &err), &err);
    ex_backbone_shape shape;
    EXT_OK(c->ov->backbone_shape(c->obj, &shape), &err);
    assert_int_equal(shape.batch, 3);
    assert_int_equal(shape.height, 16);
    ex_memory_plan_init(&c->plan, &c->be);
    EXT_OK(ex_params_plan(&c->params, &c->plan, &err), &err);
    EXT_OK(c->vt->plan(c->model, &shape, &c->plan, &err), &err);
    EXT_OK(c->ov->plan(c->obj, &c->plan, &err), &err);
    EXT_OK(ex_memory_plan_commit(&c->plan, &err), &err);
    ex_params_bind(&c->params);
    EXT_OK(c->vt->ready(c->model, &err), &err);
    char path[4096];
    snprintf(path, sizeof path, "%s/../fixtures/vit_dinov2.safetensors", ext_env("EXPLORA_TEST_DATA_DIR"));
    ex_st_file *fx;
    EXT_OK(ex_st_open(&fx, path, &err), &err);
    for (int i = 0; i < c->params.count; i++) { /* backbone values straight from the fixture */
        ex_param *p = c->params.items[i];
        if (strncmp(p->value.name, "head.", 5) == 0 || strncmp(p->value.name, "fc_norm.", 8) == 0) continue;
        int64_t n;
        float *x = fx_f32(fx, p->value.name, &n);
        assert_int_equal(n, ex_tensor_numel(&p->value));
        memcpy(p->value.data, x, sizeof(float) * (size_t)n);
        free(x);
    }
    ex_st_close(fx);
    ex_rng rng = ex_rng_seed(7, EX_RNG_INIT);
    EXT_OK(c->ov->init(c->obj, &rng, &err), &err);
    snprintf(path, sizeof path, "%s/../fixtures/classify_step.safetensors", ext_env("EXPLORA_TEST_DATA_DIR"));
    EXT_OK(ex_st_open(&c->fx, path, &err), &err);
}

static void close_ctx(cl_ctx *c) {
    ex_memory_plan_release(&c->plan);
    c->ov->destroy(c->obj);
    c->vt->destroy(c->model);
    ex_params_free(&c->params);
    ex_config_free(c->cfg);
    ex_st_close(c->fx);
    ext_backend_close(&c->be, c->reg);
}

static void check_init(cl_ctx *c, int avg) {
    ex_param *w = ex_params_find(&c->params, "head.weight"), *b = ex_params_find(&c->params, "head.bias");
    assert_non_null(w);
    assert_non_null(b);
    assert_true(w->trainable && b->trainable);
    const float *x = w->value.data;
    const int64_t n = ex_tensor_numel(&w->value);
    double s2 = 0;
    for (int64_t i = 0; i < n; i++) s2 += (double)x[i] * x[i];
    const double sd = sqrt(s2 / (double)n);
    assert_true(sd > 1e-5 && sd < 3e-5);
    for (int64_t i = 0; i < ex_tensor_numel(&b->value); i++) assert_true(((float *)b->value.data)[i] == 0.0f);
    ex_param *nw = ex_params_find(&c->params, "fc_norm.weight");
    if (!avg) {
        assert_null(nw);
        return;
    }
    assert_non_null(nw);
    assert_true(((float *)nw->value.data)[0] == 1.0f);
}

static void run_mode(const char *pool) {
    cl_ctx c;
    open_ctx(&c, pool);
    const int avg = strcmp(pool, "avg") == 0;
    check_init(&c, avg);
    ex_err err;
    /* the fixture's head and fc_norm */
    const char *own[] = {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"};
    for (int i = 0; i < (avg ? 4 : 2); i++) {
        ex_param *p = ex_params_find(&c.params, own[i]);
        int64_t n;
        float *x = fx_f32(c.fx, own[i], &n);
        assert_int_equal(n, ex_tensor_numel(&p->value));
        memcpy(p->value.data, x, sizeof(float) * (size_t)n);
        free(x);
    }
    ex_arena *g = &c.plan.arenas[EX_MEM_GRAD];
    memset(g->base, 0, g->planned);
    int64_t nimg;
    float *images = fx_f32(c.fx, "images", &nimg);
    const ex_st_entry *le = need(c.fx, "labels");
    int64_t labels[3];
    memcpy(labels, ex_st_data(c.fx, le), sizeof labels);
    ex_batch b;
    memset(&b, 0, sizeof b);
    b.batch = 3, b.nviews = 1, b.views[0] = images, b.height[0] = 16, b.width[0] = 16, b.labels = labels;
    ex_rng rng = ex_rng_seed(1, EX_RNG_MASK);
    ex_loss_terms t;
    EXT_OK(c.ov->step(c.obj, &b, &rng, 0, &t, &err), &err);
    char name[256];
    snprintf(name, sizeof name, "%s.loss", pool);
    float *ref = fx_f32(c.fx, name, NULL);
    print_message("pool %s: loss %.6f (PyTorch %.6f)\n", pool, t.total, ref[0]);
    assert_true(fabs(t.total - ref[0]) < 1e-4);
    free(ref);
    assert_int_equal(t.count, 2);
    assert_string_equal(t.names[0], "ce");
    assert_string_equal(t.names[1], "train_acc");
    snprintf(name, sizeof name, "%s.correct", pool);
    ref = fx_f32(c.fx, name, NULL);
    assert_true(fabs(t.values[1] - 100.0 * ref[0] / 3.0) < 1e-9);
    free(ref);
    int checked = 0;
    for (int i = 0; i < c.params.count; i++) {
        ex_param *p = c.params.items[i];
        snprintf(name, sizeof name, "%s.grad.%s", pool, p->value.name);
        int64_t n;
        float *r = fx_f32(c.fx, name, &n);
        assert_int_equal(n, ex_tensor_numel(&p->value));
        double maxref = 0;
        for (int64_t k = 0; k < n; k++) maxref = fmax(maxref, fabs(r[k]));
        ext_assert_close(p->grad.data, r, (size_t)n, 1e-3 * fmax(maxref, 1e-6), 0, name);
        free(r);
        checked++;
    }
    print_message("pool %s: %d gradient tensors match\n", pool, checked);
    assert_true(checked >= 20);
    /* evaluate: top-2 of the logits of the same forward (no drop path, no randomness) */
    int64_t pred[3 * 2], pred_again[3 * 2];
    EXT_OK(c.ov->evaluate(c.obj, &b, pred, 2, &err), &err);
    EXT_OK(c.ov->evaluate(c.obj, &b, pred_again, 2, &err), &err);
    assert_memory_equal(pred, pred_again, sizeof pred);
    for (int i = 0; i < 3; i++) {
        assert_true(pred[i * 2] >= 0 && pred[i * 2] < 5);
        assert_true(pred[i * 2 + 1] >= 0 && pred[i * 2 + 1] < 5 && pred[i * 2 + 1] != pred[i * 2]);
    }
    int64_t pred7[3 * 7];
    EXT_OK(c.ov->evaluate(c.obj, &b, pred7, 7, &err), &err);
    assert_int_equal(pred7[5], -1); /* k beyond the classes */
    assert_int_equal(pred7[0], pred[0]);
    /* a label outside the head */
    labels[1] = 5;
    assert_int_equal(c.ov->step(c.obj, &b, &rng, 0, &t, &err), EX_E_RANGE);
    free(images);
    close_ctx(&c);
}

static void test_step_avg_pool_matches_pytorch(void **state) {
    (void)state;
    run_mode("avg");
}

static void test_step_cls_pool_matches_pytorch(void **state) {
    (void)state;
    run_mode("cls");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_avg_pool_matches_pytorch),
        cmocka_unit_test(test_step_cls_pool_matches_pytorch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
