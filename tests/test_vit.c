/*
 * tests/test_vit.c — the `vit` backbone plugin against PyTorch fixtures
 * (the safetensors files in tests/fixtures, made by tests/fixtures/make_fixtures.py with
 * Debian's python3-torch, following the official DINOv2 and MAE code):
 * outputs (cls, registers, patches, every block) and the gradient of a fixed
 * scalar loss with respect to every parameter and the input, for
 *   - a DINOv2-style ViT with LayerScale, with and without registers;
 *   - iBOT masking (masked patches replaced by mask_token before pos-embed);
 *   - the three position-grid resampling variants at a 16x20 input;
 *   - an MAE-style ViT (fixed sin-cos table), full and with dropped patches.
 * Weights go through the plugin's real loading path (a safetensors file in
 * the official naming convention).
 * Tolerances: forward 1e-4 absolute; gradients 1e-3 relative to the tensor's largest entry.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/backbone.h"
#include "explora/config.h"
#include "explora/params.h"
#include "test_support.h"

typedef struct vt_ctx {
    ex_registry *reg;
    ex_backend be;
    const ex_plugin *vitp;
    const ex_backbone_vtable *vt;
    ex_params params;
    ex_memory_plan plan;
    void *model;
    ex_config *cfg;
    ex_st_file *fx;
} vt_ctx;

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

/* A fixture tensor as fp32 host memory (malloc'ed), with its element count. */
static float *fx_f32(const ex_st_file *f, const char *name, int64_t *n) {
    const ex_st_entry *e = need(f, name);
    int64_t k = numel(e);
    float *x = malloc(sizeof(float) * (size_t)(k ? k : 1));
    ex_err err;
    EXT_OK(ex_st_read_f32(f, e, x, k, &err), &err);
    if (n) *n = k;
    return x;
}

/* Compare device data with a fixture tensor. grad = 1: tolerance relative to the tensor's max |ref|. */
static void expect_fixture(vt_ctx *c, const float *dev, const char *name, int grad, int64_t rows, int64_t row_len,
                           int64_t dev_row_stride) {
    int64_t n;
    float *ref = fx_f32(c->fx, name, &n);
    if (rows * row_len != n) fail_msg("%s: fixture has %lld values, test expects %lld", name, (long long)n, (long long)(rows * row_len));
    float *got = malloc(sizeof(float) * (size_t)n);
    for (int64_t r = 0; r < rows; r++) memcpy(got + r * row_len, dev + r * dev_row_stride, sizeof(float) * (size_t)row_len);
    double maxref = 0;
    for (int64_t i = 0; i < n; i++) maxref = fmax(maxref, fabs(ref[i]));
    double atol = grad ? 1e-3 * fmax(maxref, 1e-6) : 1e-4;
    ext_assert_close(got, ref, (size_t)n, atol, grad ? 1e-3 : 0, name);
    free(ref);
    free(got);
}

/* Build the model from INI text, plan for the fixture's shapes (inference = 1: an inference-only plan; 2: one
 * whose caller reads only the final tokens, final_only), load its
 * weights. */
static void open_model_ex(vt_ctx *c, const char *fixture, const char *backbone_ini, int64_t batch, int64_t h, int64_t w,
                          int64_t keep, int inference, ex_dtype act_dtype) {
    memset(c, 0, sizeof *c);
    ex_err err;
    ex_err_clear(&err);
    ext_backend_open("cpu", NULL, &c->be, &c->reg);
    EXT_OK(ex_registry_add_dir(c->reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err), &err);
    EXT_OK(ex_registry_scan(c->reg, &err), &err);
    EXT_OK(ex_registry_find(c->reg, EX_PLUGIN_BACKBONE, "vit", &c->vitp, &err), &err);
    c->vt = &c->vitp->vtable_copy.backbone;
    char text[4096];
    snprintf(text, sizeof text, "[backbone]\nname = vit\n%s", backbone_ini);
    EXT_OK(ex_config_load_string(&c->cfg, text, "test-vit.ini", &err), &err);
    EXT_OK(ex_config_validate_section(c->cfg, "backbone", c->vitp->desc.keys, (const char *const[]){"name", NULL}, &err),
           &err);
    ex_cfg_section view = {c->cfg, "backbone", c->vitp->desc.keys};
    ex_params_init(&c->params);
    EXT_OK(c->vt->create(&view, &c->be, &c->params, &c->model, &err), &err);
    EXT_OK(ex_params_set_trainable(&c->params, "*", 1, NULL, &err), &err);
    ex_memory_plan_init(&c->plan, &c->be);
    EXT_OK(ex_params_plan(&c->params, &c->plan, &err), &err);
    ex_backbone_shape max = {batch, h, w, keep, !inference, inference != 0, inference == 2, act_dtype};
    EXT_OK(c->vt->plan(c->model, &max, &c->plan, &err), &err);
    EXT_OK(ex_memory_plan_commit(&c->plan, &err), &err);
    ex_params_bind(&c->params);
    EXT_OK(c->vt->ready(c->model, &err), &err);

    /* weights-only copy of the fixture: every tensor that names a parameter */
    char path[4096], fxpath[4096];
    snprintf(fxpath, sizeof fxpath, "%s/../fixtures/%s", ext_env("EXPLORA_TEST_DATA_DIR"), fixture);
    EXT_OK(ex_st_open(&c->fx, fxpath, &err), &err);
    ex_st_writer *wr;
    EXT_OK(ex_st_writer_new(&wr, &err), &err);
    int found = 0;
    for (int i = 0; i < ex_st_count(c->fx); i++) {
        const ex_st_entry *e = ex_st_at(c->fx, i);
        if (!ex_params_find(&c->params, e->name)) continue;
        EXT_OK(ex_st_writer_add(wr, e->name, e->dtype, e->ndim, e->shape, ex_st_data(c->fx, e), &err), &err);
        found++;
    }
    assert_int_equal(found, c->params.count); /* the fixture holds every parameter the model registered */
    ext_tmp_path(path, sizeof path, fixture);
    EXT_OK(ex_st_writer_finish(wr, path, &err), &err);
    ex_st_writer_free(wr);
    EXT_OK(c->vt->load(c->model, path, "auto", &err), &err);
}

static void open_model(vt_ctx *c, const char *fixture, const char *backbone_ini, int64_t batch, int64_t h, int64_t w,
                       int64_t keep) {
    open_model_ex(c, fixture, backbone_ini, batch, h, w, keep, 0, EX_F32);
}

static void close_model(vt_ctx *c) {
    ex_memory_plan_release(&c->plan); /* before destroy: the plan points at the model's tensors */
    c->vt->destroy(c->model);
    ex_params_free(&c->params);
    ex_config_free(c->cfg);
    ex_st_close(c->fx);
    ext_backend_close(&c->be, c->reg);
}

static void zero_grads(vt_ctx *c) {
    ex_arena *g = &c->plan.arenas[EX_MEM_GRAD];
    memset(g->base, 0, g->planned);
}

/* Run forward + backward for one mode of a DINOv2 fixture and compare everything. */
static void check_dinov2_mode(vt_ctx *c, const char *prefix, const char *input_prefix, int64_t h, int64_t w,
                              ex_mask_mode mode) {
    ex_err err;
    ex_err_clear(&err);
    ex_backbone_info info;
    EXT_OK(c->vt->info(c->model, &info), &err);
    const int64_t B = 2, D = info.dim, R = info.registers, Np = (h / info.patch) * (w / info.patch), T = 1 + R + Np;
    char name[256];
    snprintf(name, sizeof name, "%sinput", input_prefix);
    float *images = fx_f32(c->fx, name, NULL);
    uint8_t mask[64] = {0};
    if (mode == EX_MASK_REPLACE) {
        const ex_st_entry *e = need(c->fx, "mask");
        memcpy(mask, ex_st_data(c->fx, e), (size_t)numel(e));
    }
    ex_backbone_io io = {0};
    io.batch = B, io.height = h, io.width = w, io.images = images, io.mask_mode = mode, io.mask = mask, io.train = 1;
    EXT_OK(c->vt->forward(c->model, &io, &err), &err);
    assert_int_equal(io.num_tokens, T);
    snprintf(name, sizeof name, "%sout.cls", prefix);
    expect_fixture(c, io.tokens, name, 0, B, D, T * D);
    if (R) {
        snprintf(name, sizeof name, "%sout.reg", prefix);
        expect_fixture(c, io.tokens + D, name, 0, B, R * D, T * D);
    }
    snprintf(name, sizeof name, "%sout.patch", prefix);
    expect_fixture(c, io.tokens + (1 + R) * D, name, 0, B, Np * D, T * D);
    for (int64_t i = 0; i < info.depth; i++) {
        snprintf(name, sizeof name, "%sout.block.%lld", prefix, (long long)i);
        if (ex_st_find(c->fx, name)) expect_fixture(c, c->vt->block_output(c->model, i), name, 0, 1, B * T * D, 0);
    }
    /* dL/dtokens from the r tensors */
    float *dtok = calloc((size_t)(B * T * D), sizeof(float));
    const char *parts[3] = {"r_cls", "r_reg", "r_patch"};
    const int64_t off[3] = {0, D, (1 + R) * D}, len[3] = {D, R * D, Np * D};
    for (int k = 0; k < 3; k++) {
        if (len[k] == 0) continue;
        snprintf(name, sizeof name, "%s%s", input_prefix, parts[k]);
        float *r = fx_f32(c->fx, name, NULL);
        for (int64_t b = 0; b < B; b++) memcpy(dtok + b * T * D + off[k], r + b * len[k], sizeof(float) * (size_t)len[k]);
        free(r);
    }
    zero_grads(c);
    float *dimg = calloc((size_t)(B * 3 * h * w), sizeof(float));
    EXT_OK(c->vt->backward(c->model, dtok, dimg, &err), &err);
    for (int i = 0; i < c->params.count; i++) {
        const ex_param *p = c->params.items[i];
        snprintf(name, sizeof name, "%sgrad.%s", prefix, p->value.name);
        if (!ex_st_find(c->fx, name)) fail_msg("fixture lacks %s", name);
        expect_fixture(c, p->grad.data, name, 1, 1, ex_tensor_numel(&p->grad), 0);
    }
    snprintf(name, sizeof name, "%sgrad.input", prefix);
    expect_fixture(c, dimg, name, 1, 1, B * 3 * h * w, 0);
    free(dimg);
    free(dtok);
    free(images);
}

static const char *k_dinov2_ini = "dim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\nlayerscale = on\n";

static void test_dinov2(void **state) {
    (void)state;
    vt_ctx c;
    open_model(&c, "vit_dinov2.safetensors", k_dinov2_ini, 2, 16, 20, 0);
    check_dinov2_mode(&c, "", "", 16, 16, EX_MASK_NONE);
    check_dinov2_mode(&c, "masked.", "", 16, 16, EX_MASK_REPLACE);
    check_dinov2_mode(&c, "interp_dinov2.", "interp_dinov2.", 16, 20, EX_MASK_NONE);
    close_model(&c);
}

/* Device data (rows of row_len, dev_row_stride apart) against the bf16acts. expectation `name`: with a value or two
 * rounded the other way near a bf16 tie (a float32 computation does that now and then), it cannot match to
 * float32 noise; it must be far closer to it than the unrounded model's expectation (the base mode's `name`)
 * is. A block that did not round, or rounded elsewhere, lands about as far off as the unrounded model. */
static void expect_bf16acts(vt_ctx *c, const float *dev, const char *name, int64_t rows, int64_t row_len,
                            int64_t dev_row_stride) {
    char bname[300];
    snprintf(bname, sizeof bname, "bf16acts.%s", name);
    int64_t n, n2;
    float *ref = fx_f32(c->fx, bname, &n), *plain = fx_f32(c->fx, name, &n2);
    assert_int_equal(n, rows * row_len);
    assert_int_equal(n2, n);
    double se = 0, sg = 0, sr = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < row_len; j++) {
            const double g = dev[r * dev_row_stride + j], x = ref[r * row_len + j], u = plain[r * row_len + j];
            se += (g - x) * (g - x);
            sg += (u - x) * (u - x);
            sr += x * x;
        }
    free(ref);
    free(plain);
    if (sg == 0.0) { /* the blocks do not enter it (the final norm's bias gradient): float32 noise only */
        if (se > 1e-10 * sr) fail_msg("%s: NMSE %.3g against an expectation the rounding does not change", name, se / sr);
        return;
    }
    const double got = se / sr, gap = sg / sr;
    if (!(got <= 0.01 * gap))
        fail_msg("%s: NMSE %.3g against the bf16-activation expectation, more than 1%% of the unrounded model's %.3g",
                 name, got, gap);
}

/* [optim] activation_dtype = bf16 through the ViT: forward and backward against the bf16acts. mode of the fixture
 * (the same weights and inputs, each block keeping norm1, norm2 and GELU outputs in bf16). */
static void test_dinov2_bf16_activations(void **state) {
    (void)state;
    vt_ctx c;
    open_model_ex(&c, "vit_dinov2.safetensors", k_dinov2_ini, 2, 16, 16, 0, 0, EX_BF16);
    ex_err err;
    ex_err_clear(&err);
    const int64_t B = 2, D = 24, Np = 16, T = 1 + Np;
    float *images = fx_f32(c.fx, "input", NULL);
    ex_backbone_io io = {0};
    io.batch = B, io.height = 16, io.width = 16, io.images = images, io.train = 1;
    EXT_OK(c.vt->forward(c.model, &io, &err), &err);
    expect_bf16acts(&c, io.tokens, "out.cls", B, D, T * D);
    expect_bf16acts(&c, io.tokens + D, "out.patch", B, Np * D, T * D);
    char name[256];
    for (int64_t i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "out.block.%lld", (long long)i);
        expect_bf16acts(&c, c.vt->block_output(c.model, i), name, 1, B * T * D, 0);
    }
    float *dtok = calloc((size_t)(B * T * D), sizeof(float));
    float *rc = fx_f32(c.fx, "r_cls", NULL), *rp = fx_f32(c.fx, "r_patch", NULL);
    for (int64_t b = 0; b < B; b++) {
        memcpy(dtok + b * T * D, rc + b * D, sizeof(float) * (size_t)D);
        memcpy(dtok + b * T * D + D, rp + b * Np * D, sizeof(float) * (size_t)(Np * D));
    }
    zero_grads(&c);
    float *dimg = calloc((size_t)(B * 3 * 16 * 16), sizeof(float));
    EXT_OK(c.vt->backward(c.model, dtok, dimg, &err), &err);
    int checked = 0;
    for (int i = 0; i < c.params.count; i++) {
        const ex_param *p = c.params.items[i];
        if (strcmp(p->value.name, "mask_token") == 0) continue; /* unused without a mask: zero on both sides */
        snprintf(name, sizeof name, "grad.%s", p->value.name);
        expect_bf16acts(&c, p->grad.data, name, 1, ex_tensor_numel(&p->grad), 0);
        checked++;
    }
    assert_true(checked > 30);
    expect_bf16acts(&c, dimg, "grad.input", 1, B * 3 * 16 * 16, 0);
    free(dimg);
    free(dtok);
    free(rc);
    free(rp);
    free(images);
    close_model(&c);
}

static void test_dinov2_resampling_variants(void **state) {
    (void)state;
    const char *modes[2][2] = {{"size", "interp_size."}, {"antialias", "interp_antialias."}};
    for (int k = 0; k < 2; k++) {
        char ini[512];
        snprintf(ini, sizeof ini, "%spos_interp = %s\n", k_dinov2_ini, modes[k][0]);
        vt_ctx c;
        open_model(&c, "vit_dinov2.safetensors", ini, 2, 16, 20, 0);
        check_dinov2_mode(&c, modes[k][1], modes[k][1], 16, 20, EX_MASK_NONE);
        close_model(&c);
    }
}

static void test_dinov2_registers(void **state) {
    (void)state;
    char ini[512];
    snprintf(ini, sizeof ini, "%sregisters = 4\n", k_dinov2_ini);
    vt_ctx c;
    open_model(&c, "vit_dinov2_reg.safetensors", ini, 2, 16, 16, 0);
    check_dinov2_mode(&c, "", "", 16, 16, EX_MASK_NONE);
    check_dinov2_mode(&c, "masked.", "", 16, 16, EX_MASK_REPLACE);
    close_model(&c);
}

static void check_mae_mode(vt_ctx *c, const char *prefix, int drop) {
    ex_err err;
    ex_err_clear(&err);
    const int64_t B = 2, D = 24, Np = 16;
    float *images = fx_f32(c->fx, "input", NULL);
    int32_t ids[64];
    int64_t keep = Np;
    if (drop) {
        float *k = fx_f32(c->fx, "ids_keep", &keep);
        keep /= B;
        for (int64_t i = 0; i < B * keep; i++) ids[i] = (int32_t)k[i];
        free(k);
    }
    const int64_t T = 1 + keep;
    ex_backbone_io io = {0};
    io.batch = B, io.height = 16, io.width = 16, io.images = images, io.train = 1;
    io.mask_mode = drop ? EX_MASK_DROP : EX_MASK_NONE, io.ids_keep = ids, io.keep = keep;
    EXT_OK(c->vt->forward(c->model, &io, &err), &err);
    assert_int_equal(io.num_tokens, T);
    char name[256];
    snprintf(name, sizeof name, "%sout.tokens", prefix);
    expect_fixture(c, io.tokens, name, 0, 1, B * T * D, 0);
    snprintf(name, sizeof name, "%sr", prefix);
    float *r = fx_f32(c->fx, name, NULL);
    zero_grads(c);
    float *dimg = calloc((size_t)(B * 3 * 256), sizeof(float));
    EXT_OK(c->vt->backward(c->model, r, dimg, &err), &err);
    for (int i = 0; i < c->params.count; i++) {
        const ex_param *p = c->params.items[i];
        snprintf(name, sizeof name, "%sgrad.%s", prefix, p->value.name);
        if (strcmp(p->value.name, "pos_embed") == 0) continue; /* the fixed table has no gradient */
        expect_fixture(c, p->grad.data, name, 1, 1, ex_tensor_numel(&p->grad), 0);
    }
    snprintf(name, sizeof name, "%sgrad.input", prefix);
    expect_fixture(c, dimg, name, 1, 1, B * 3 * 256, 0);
    free(dimg);
    free(r);
    free(images);
}

static void test_mae(void **state) {
    (void)state;
    vt_ctx c;
    open_model(&c, "vit_mae.safetensors",
               "dim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\npos_embed = sincos\nmask_token = off\n", 2, 16,
               16, 0);
    /* the fixed table computed by the plugin equals the one in the checkpoint (MAE's get_2d_sincos_pos_embed) */
    ex_param *pos = ex_params_find(&c.params, "pos_embed");
    expect_fixture(&c, pos->value.data, "pos_embed", 0, 1, 17 * 24, 0);
    check_mae_mode(&c, "", 1);
    check_mae_mode(&c, "full.", 0);
    close_model(&c);
}

/* Forward + backward with drop-path scales; returns a copy of every gradient followed by the input gradient. */
static float *grads_after_step(vt_ctx *c, size_t *n) {
    ex_err err;
    ex_err_clear(&err);
    const int64_t B = 2, T = 17, D = 24;
    float *images = fx_f32(c->fx, "input", NULL);
    const float drop[3 * 2 * 2] = {1, 2, 0, 2, 2, 0, 1, 1, 2, 0, 0, 2}; /* (depth, 2, batch) */
    ex_backbone_io io = {0};
    io.batch = B, io.height = 16, io.width = 16, io.images = images, io.train = 1, io.drop = drop;
    EXT_OK(c->vt->forward(c->model, &io, &err), &err);
    float *dtok = malloc(sizeof(float) * (size_t)(B * T * D));
    ext_fill_uniform(dtok, (size_t)(B * T * D), 5, -1, 1);
    zero_grads(c);
    float *dimg = calloc((size_t)(B * 3 * 256), sizeof(float));
    EXT_OK(c->vt->backward(c->model, dtok, dimg, &err), &err);
    ex_arena *g = &c->plan.arenas[EX_MEM_GRAD];
    size_t ng = g->planned / sizeof(float);
    float *out = malloc(sizeof(float) * (ng + (size_t)(B * 3 * 256)));
    memcpy(out, g->base, g->planned);
    memcpy(out + ng, dimg, sizeof(float) * (size_t)(B * 3 * 256));
    *n = ng + (size_t)(B * 3 * 256);
    free(dimg);
    free(dtok);
    free(images);
    return out;
}

/* Activation recomputation, all blocks (recompute = true) or the first N (recompute_blocks): every gradient
 * bitwise the same as without, and the activation plan smaller by exactly one block's activations for each
 * block beyond the first that rebuilds its own (the recomputed blocks share one buffer). */
static void test_recompute_gives_identical_gradients(void **state) {
    (void)state;
    vt_ctx c;
    size_t n1;
    open_model(&c, "vit_dinov2.safetensors", k_dinov2_ini, 2, 16, 16, 0);
    const size_t full_acts = c.plan.arenas[EX_MEM_ACTIVATION].planned;
    float *g1 = grads_after_step(&c, &n1);
    close_model(&c);
    double sum = 0;
    for (size_t i = 0; i < n1; i++) sum += fabs(g1[i]);
    assert_true(sum > 1.0);
    /* (extra ini, blocks that share one buffer: the model has 3) */
    static const struct {
        const char *ini;
        int shared;
    } cases[] = {
        {"recompute = true\n", 3},
        {"recompute = true\nrecompute_blocks = 3\n", 3},
        {"recompute = true\nrecompute_blocks = 2\n", 2},
        {"recompute = true\nrecompute_blocks = 1\n", 1},
        {"recompute = true\nrecompute_blocks = 0\n", 0},
    };
    size_t per_block = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char ini[512];
        snprintf(ini, sizeof ini, "%s%s", k_dinov2_ini, cases[k].ini);
        open_model(&c, "vit_dinov2.safetensors", ini, 2, 16, 16, 0);
        const size_t acts = c.plan.arenas[EX_MEM_ACTIVATION].planned;
        size_t n2;
        float *g2 = grads_after_step(&c, &n2);
        if (cases[k].shared == 2) { /* after the backward the shared buffer holds block 0 (rebuilt), not block 1 */
            float probs[2 * 3 * 17];
            ex_err err;
            assert_int_equal(c.vt->attention(c.model, 2, probs, &err), EX_OK); /* its own buffer */
            assert_int_equal(c.vt->attention(c.model, 1, probs, &err), EX_E_UNSUPPORTED);
            assert_int_equal(c.vt->attention(c.model, 0, probs, &err), EX_OK);
        }
        close_model(&c);
        assert_int_equal(n1, n2);
        if (memcmp(g1, g2, n1 * sizeof(float)) != 0) fail_msg("gradients differ with %s", cases[k].ini);
        free(g2);
        const int saved = cases[k].shared > 1 ? cases[k].shared - 1 : 0;
        if (k == 0) { /* all three share: two blocks' activations are not kept */
            assert_true(acts < full_acts);
            per_block = (full_acts - acts) / 2;
        }
        /* each planned tensor is padded to EX_ARENA_ALIGN: the sizes agree to within that */
        const size_t want = full_acts - (size_t)saved * per_block;
        if (acts + EX_ARENA_ALIGN < want || acts > want + EX_ARENA_ALIGN)
            fail_msg("%s: activation plan %zu bytes, expected %zu - %d x %zu", cases[k].ini, acts, full_acts, saved,
                     per_block);
    }
    free(g1);

    /* recompute_blocks without recompute, or beyond the depth: refused by name */
    static const char *const bad[] = {"recompute_blocks = 2\n", "recompute = true\nrecompute_blocks = 4\n"};
    for (int k = 0; k < 2; k++) {
        ex_backend be;
        ex_registry *reg;
        ex_err err;
        ex_err_clear(&err);
        ext_backend_open("cpu", NULL, &be, &reg);
        EXT_OK(ex_registry_add_dir(reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err), &err);
        EXT_OK(ex_registry_scan(reg, &err), &err);
        const ex_plugin *vitp;
        EXT_OK(ex_registry_find(reg, EX_PLUGIN_BACKBONE, "vit", &vitp, &err), &err);
        char text[1024];
        snprintf(text, sizeof text, "[backbone]\nname = vit\n%s%s", k_dinov2_ini, bad[k]);
        ex_config *cfg;
        EXT_OK(ex_config_load_string(&cfg, text, "test-vit.ini", &err), &err);
        ex_cfg_section view = {cfg, "backbone", vitp->desc.keys};
        ex_params params;
        ex_params_init(&params);
        void *model = NULL;
        assert_int_equal(vitp->vtable_copy.backbone.create(&view, &be, &params, &model, &err), EX_E_CONFIG);
        if (!strstr(err.msg, "recompute_blocks")) fail_msg("unexpected message: %s", err.msg);
        ex_params_free(&params);
        ex_config_free(cfg);
        ext_backend_close(&be, reg);
    }
}

/* An inference-only plan: the same tokens and block outputs, bitwise, as a training plan's train = 0 forward, in
 * less than half the activation memory; a training forward and the attention of an early block are refused.
 * With final_only as well (DINOv2's teacher): the same tokens again, from two residual buffers instead of
 * depth + 1 (exactly that much less memory), and no block outputs. */
static void test_inference_plan(void **state) {
    (void)state;
    vt_ctx c;
    ex_err err;
    const int64_t B = 2, T = 17, D = 24, depth = 3;
    float *tok[3], *blk[2];
    size_t acts[3];
    for (int inf = 0; inf < 3; inf++) {
        open_model_ex(&c, "vit_dinov2.safetensors", k_dinov2_ini, B, 16, 16, 0, inf, EX_F32);
        acts[inf] = c.plan.arenas[EX_MEM_ACTIVATION].planned;
        float *images = fx_f32(c.fx, "input", NULL);
        ex_backbone_io io = {0};
        io.batch = B, io.height = 16, io.width = 16, io.images = images, io.train = 0;
        EXT_OK(c.vt->forward(c.model, &io, &err), &err);
        assert_int_equal(io.num_tokens, T);
        tok[inf] = malloc(sizeof(float) * B * T * D);
        memcpy(tok[inf], io.tokens, sizeof(float) * B * T * D);
        if (inf == 2) {
            for (int64_t i = 0; i < depth; i++) assert_null(c.vt->block_output(c.model, i));
            free(images);
            close_model(&c);
            continue;
        }
        blk[inf] = malloc(sizeof(float) * depth * B * T * D);
        for (int64_t i = 0; i < depth; i++)
            memcpy(blk[inf] + i * B * T * D, c.vt->block_output(c.model, i), sizeof(float) * B * T * D);
        if (inf) {
            io.train = 1;
            assert_int_equal(c.vt->forward(c.model, &io, &err), EX_E_INVALID);
            assert_non_null(strstr(err.msg, "inference"));
            io.train = 0;
            EXT_OK(c.vt->forward(c.model, &io, &err), &err);
            float probs[2 * 3 * 17];
            assert_int_equal(c.vt->attention(c.model, 0, probs, &err), EX_E_UNSUPPORTED);
            EXT_OK(c.vt->attention(c.model, depth - 1, probs, &err), &err);
        }
        free(images);
        close_model(&c);
    }
    assert_memory_equal(tok[0], tok[1], sizeof(float) * B * T * D);
    assert_memory_equal(tok[0], tok[2], sizeof(float) * B * T * D);
    assert_memory_equal(blk[0], blk[1], sizeof(float) * depth * B * T * D);
    if (!(acts[1] * 2 < acts[0])) fail_msg("inference plan %zu bytes of activations, training plan %zu", acts[1], acts[0]);
    /* depth + 1 residual streams became 2; the arena rounds every tensor up to 256 bytes (B T D floats are 3264 B) */
    const size_t stream = (sizeof(float) * B * T * D + 255) / 256 * 256;
    if (acts[1] - acts[2] < (size_t)(depth - 1) * stream - 256 || acts[1] - acts[2] > (size_t)(depth - 1) * stream + 256)
        fail_msg("final_only saved %zu bytes, expected about %zu", acts[1] - acts[2], (size_t)(depth - 1) * stream);
    for (int k = 0; k < 3; k++) free(tok[k]);
    for (int k = 0; k < 2; k++) free(blk[k]);
}

/* A final-tokens-only inference plan for more images than VIT_INFER_CHUNK (16) runs its forward in chunks
 * (16 + 5 here): the tokens equal a training plan's train = 0 forward of the 21 images at once to rounding
 * (every op is per image or per row, but OpenBLAS picks its kernels by the row count, so GEMMs of 272 and
 * 357 rows may round a row differently); a drop-path forward and attention maps are refused. */
static void test_inference_chunks(void **state) {
    (void)state;
    vt_ctx c;
    ex_err err;
    const int64_t B = 21, T = 17, D = 24;
    float *images = malloc(sizeof(float) * B * 3 * 16 * 16), *tok[2];
    ext_fill_uniform(images, (size_t)(B * 3 * 16 * 16), 77, -2.0f, 2.0f);
    for (int k = 0; k < 2; k++) {
        open_model_ex(&c, "vit_dinov2.safetensors", k_dinov2_ini, B, 16, 16, 0, k ? 2 : 0, EX_F32);
        ex_backbone_io io = {0};
        io.batch = B, io.height = 16, io.width = 16, io.images = images, io.train = 0;
        EXT_OK(c.vt->forward(c.model, &io, &err), &err);
        assert_int_equal(io.num_tokens, T);
        tok[k] = malloc(sizeof(float) * B * T * D);
        memcpy(tok[k], io.tokens, sizeof(float) * B * T * D);
        if (k) {
            float probs[21 * 3 * 17];
            assert_int_equal(c.vt->attention(c.model, 2, probs, &err), EX_E_UNSUPPORTED);
            float drop[2 * 3 * 21];
            for (int i = 0; i < 2 * 3 * 21; i++) drop[i] = 1.0f;
            io.drop = drop;
            assert_int_equal(c.vt->forward(c.model, &io, &err), EX_E_INVALID);
        }
        close_model(&c);
    }
    double worst = 0.0;
    for (int64_t i = 0; i < B * T * D; i++) {
        const double d = fabs((double)tok[0][i] - tok[1][i]) / (1.0 + fabs((double)tok[0][i]));
        if (d > worst) worst = d;
    }
    print_message("chunked inference: worst relative difference %.3g\n", worst);
    if (!(worst <= 1e-5)) fail_msg("chunked inference differs by %.3g from the whole batch", worst);
    free(tok[0]);
    free(tok[1]);
    free(images);
}

/* Parameters (values of every tensor, in registration order) after loading names/<file>. */
static float *load_named(const char *ini, const char *file, size_t *n, const char *skip) {
    vt_ctx c;
    memset(&c, 0, sizeof c);
    ex_err err;
    ex_err_clear(&err);
    ext_backend_open("cpu", NULL, &c.be, &c.reg);
    EXT_OK(ex_registry_add_dir(c.reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err), &err);
    EXT_OK(ex_registry_scan(c.reg, &err), &err);
    EXT_OK(ex_registry_find(c.reg, EX_PLUGIN_BACKBONE, "vit", &c.vitp, &err), &err);
    c.vt = &c.vitp->vtable_copy.backbone;
    char text[1024];
    snprintf(text, sizeof text, "[backbone]\nname = vit\n%s", ini);
    EXT_OK(ex_config_load_string(&c.cfg, text, "names.ini", &err), &err);
    ex_cfg_section view = {c.cfg, "backbone", c.vitp->desc.keys};
    ex_params_init(&c.params);
    EXT_OK(c.vt->create(&view, &c.be, &c.params, &c.model, &err), &err);
    ex_memory_plan_init(&c.plan, &c.be);
    EXT_OK(ex_params_plan(&c.params, &c.plan, &err), &err);
    ex_backbone_shape max = {1, 4, 4, 0, 0, 0, 0, EX_F32};
    EXT_OK(c.vt->plan(c.model, &max, &c.plan, &err), &err);
    EXT_OK(ex_memory_plan_commit(&c.plan, &err), &err);
    ex_params_bind(&c.params);
    EXT_OK(c.vt->ready(c.model, &err), &err);
    char path[4096];
    if (file[0] == '/')
        snprintf(path, sizeof path, "%s", file);
    else
        snprintf(path, sizeof path, "%s/../fixtures/names/%s", ext_env("EXPLORA_TEST_DATA_DIR"), file);
    EXT_OK(c.vt->load(c.model, path, "auto", &err), &err);
    size_t total = (size_t)ex_params_numel(&c.params, 0), k = 0;
    float *out = malloc(sizeof(float) * total);
    for (int i = 0; i < c.params.count; i++) {
        const ex_param *p = c.params.items[i];
        size_t m = (size_t)ex_tensor_numel(&p->value);
        if (skip && strcmp(p->value.name, skip) == 0)
            memset(out + k, 0, m * sizeof(float));
        else
            memcpy(out + k, p->value.data, m * sizeof(float));
        k += m;
    }
    *n = total;
    ex_memory_plan_release(&c.plan);
    c.vt->destroy(c.model);
    ex_params_free(&c.params);
    ex_config_free(c.cfg);
    ext_backend_close(&c.be, c.reg);
    return out;
}

static void test_naming_conventions(void **state) {
    (void)state;
    const char *dino = "dim = 8\ndepth = 2\nheads = 2\nhidden = 16\npatch = 2\npos_grid = 2\nregisters = 4\n"
                       "layerscale = on\nimage_size = 4\n";
    size_t n0, n;
    float *ref = load_named(dino, "dinov2_official.safetensors", &n0, NULL);
    const char *files[] = {"dinov2_hf.safetensors", "dinov2_training.safetensors"};
    for (int k = 0; k < 2; k++) {
        float *got = load_named(dino, files[k], &n, NULL);
        assert_int_equal(n, n0);
        if (memcmp(got, ref, n * sizeof(float)) != 0) fail_msg("%s loads different parameters", files[k]);
        free(got);
    }
    /* the same weights written by torch.save */
    float *pth = load_named(dino, "dinov2_official.pth", &n, NULL);
    assert_memory_equal(pth, ref, n * sizeof(float));
    free(pth);
    /* a training checkpoint {"teacher": {"backbone.*": fp16}} against the fp16-rounded reference */
    float *half_ref = load_named(dino, "dinov2_official_fp16.safetensors", &n0, NULL);
    float *teacher = load_named(dino, "dinov2_teacher.pth", &n, NULL);
    assert_memory_equal(teacher, half_ref, n * sizeof(float));
    free(teacher);
    free(half_ref);
    /* timm drops the mask token: it keeps its zero initialisation */
    float *ref_nomask = load_named(dino, "dinov2_official.safetensors", &n0, "mask_token");
    float *timm = load_named(dino, "dinov2_timm.safetensors", &n, NULL);
    assert_memory_equal(timm, ref_nomask, n * sizeof(float));
    free(timm);
    free(ref_nomask);
    /* the student copy of the training export is a different model (+1 everywhere) */
    char ini[512];
    snprintf(ini, sizeof ini, "%scheckpoint_copy = student\n", dino);
    float *student = load_named(ini, "dinov2_training.safetensors", &n, NULL);
    assert_float_equal(student[0], ref[0] + 1.0f, 1e-6);
    free(student);

    /* an explora run's checkpoint.safetensors: param.* (the trained model, here +2), optim.m.* (moments),
     * objective.teacher.* (the EMA teacher, here the reference) and the teacher's heads: auto reads the teacher,
     * checkpoint_copy = student the trained model */
    {
        char src[4096], run[4096];
        snprintf(src, sizeof src, "%s/../fixtures/names/dinov2_official.safetensors", ext_env("EXPLORA_TEST_DATA_DIR"));
        ext_tmp_path(run, sizeof run, "run_checkpoint.safetensors");
        ex_err err;
        ex_st_file *f;
        ex_st_writer *w;
        EXT_OK(ex_st_open(&f, src, &err), &err);
        EXT_OK(ex_st_writer_new(&w, &err), &err);
        float *keep[3 * 64]; /* the writer reads the buffers at finish */
        int nkeep = 0;
        for (int i = 0; i < ex_st_count(f); i++) {
            const ex_st_entry *e = ex_st_at(f, i);
            const int64_t m = numel(e);
            float *v = malloc(sizeof(float) * (size_t)m), *z = calloc((size_t)m, sizeof(float));
            float *p = malloc(sizeof(float) * (size_t)m);
            assert_true(nkeep + 3 <= 3 * 64);
            keep[nkeep++] = v, keep[nkeep++] = z, keep[nkeep++] = p;
            EXT_OK(ex_st_read_f32(f, e, v, m, &err), &err);
            for (int64_t j = 0; j < m; j++) p[j] = v[j] + 2.0f;
            char name[EX_NAME_MAX + 32];
            snprintf(name, sizeof name, "objective.teacher.%s", e->name);
            EXT_OK(ex_st_writer_add(w, name, EX_F32, e->ndim, e->shape, v, &err), &err);
            snprintf(name, sizeof name, "optim.m.%s", e->name);
            EXT_OK(ex_st_writer_add(w, name, EX_F32, e->ndim, e->shape, z, &err), &err);
            snprintf(name, sizeof name, "param.%s", e->name);
            EXT_OK(ex_st_writer_add(w, name, EX_F32, e->ndim, e->shape, p, &err), &err);
        }
        const float head[4] = {1, 2, 3, 4};
        EXT_OK(ex_st_writer_add(w, "objective.teacher_head.dino_head.mlp.0.weight", EX_F32, 2, (int64_t[]){2, 2}, head, &err),
               &err);
        EXT_OK(ex_st_writer_finish(w, run, &err), &err);
        ex_st_writer_free(w);
        ex_st_close(f);
        for (int i = 0; i < nkeep; i++) free(keep[i]);
        float *t = load_named(dino, run, &n, NULL);
        assert_int_equal(n, n0);
        assert_memory_equal(t, ref, n * sizeof(float));
        free(t);
        snprintf(ini, sizeof ini, "%scheckpoint_copy = student\n", dino);
        float *s = load_named(ini, run, &n, NULL);
        for (size_t j = 0; j < n; j++)
            if (fabsf(s[j] - (ref[j] + 2.0f)) > 1e-5f) fail_msg("student copy of a run checkpoint: value %zu", j);
        free(s);
    }

    /* the architecture read from the checkpoint itself (.pth, training layout): same parameters */
    char ckpt_ini[1024];
    snprintf(ckpt_ini, sizeof ckpt_ini, "preset = checkpoint\nheads = 2\nimage_size = 4\nweights = %s/../fixtures/names/dinov2_official.pth\n",
             ext_env("EXPLORA_TEST_DATA_DIR"));
    float *inferred = load_named(ckpt_ini, "dinov2_official.pth", &n, NULL);
    assert_int_equal(n, n0);
    assert_memory_equal(inferred, ref, n * sizeof(float));
    free(inferred);
    free(ref);

    const char *mae = "dim = 8\ndepth = 2\nheads = 2\nhidden = 16\npatch = 2\npos_grid = 2\nmask_token = off\n"
                      "layerscale = off\nimage_size = 4\n";
    ref = load_named(mae, "mae_official.safetensors", &n0, NULL);
    float *hf = load_named(mae, "mae_hf.safetensors", &n, NULL);
    assert_int_equal(n, n0);
    assert_memory_equal(hf, ref, n * sizeof(float));
    free(hf);
    float *mpth = load_named(mae, "mae_model.pth", &n, NULL); /* {"model": ..., "epoch": 3} with a decoder */
    assert_memory_equal(mpth, ref, n * sizeof(float));
    free(mpth);
    snprintf(ckpt_ini, sizeof ckpt_ini,
             "preset = checkpoint\nheads = 2\nimage_size = 4\npos_embed = learned\nweights = %s/../fixtures/names/mae_model.pth\n",
             ext_env("EXPLORA_TEST_DATA_DIR"));
    mpth = load_named(ckpt_ini, "mae_model.pth", &n, NULL); /* MAE layout: no LayerScale, no mask token inferred */
    assert_int_equal(n, n0);
    assert_memory_equal(mpth, ref, n * sizeof(float));
    free(mpth);
    free(ref);
}

static void test_bad_checkpoint_lists_problems(void **state) {
    (void)state;
    vt_ctx c;
    /* depth 2 and dim 24: the fixture's block 2 is unexpected */
    memset(&c, 0, sizeof c);
    ex_err err;
    ex_err_clear(&err);
    ext_backend_open("cpu", NULL, &c.be, &c.reg);
    EXT_OK(ex_registry_add_dir(c.reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err), &err);
    EXT_OK(ex_registry_scan(c.reg, &err), &err);
    EXT_OK(ex_registry_find(c.reg, EX_PLUGIN_BACKBONE, "vit", &c.vitp, &err), &err);
    c.vt = &c.vitp->vtable_copy.backbone;
    EXT_OK(ex_config_load_string(&c.cfg, "[backbone]\nname = vit\ndim = 24\ndepth = 2\nheads = 3\npatch = 4\npos_grid = 5\n",
                                 "bad.ini", &err),
           &err);
    ex_cfg_section view = {c.cfg, "backbone", c.vitp->desc.keys};
    ex_params_init(&c.params);
    EXT_OK(c.vt->create(&view, &c.be, &c.params, &c.model, &err), &err);
    ex_memory_plan_init(&c.plan, &c.be);
    EXT_OK(ex_params_plan(&c.params, &c.plan, &err), &err);
    ex_backbone_shape max = {1, 16, 16, 0, 0, 0, 0, EX_F32};
    EXT_OK(c.vt->plan(c.model, &max, &c.plan, &err), &err);
    EXT_OK(ex_memory_plan_commit(&c.plan, &err), &err);
    ex_params_bind(&c.params);
    char fxpath[4096];
    snprintf(fxpath, sizeof fxpath, "%s/../fixtures/block_gelu.safetensors", ext_env("EXPLORA_TEST_DATA_DIR"));
    assert_int_equal(c.vt->load(c.model, fxpath, "dinov2", &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "unexpected"));
    assert_non_null(strstr(err.msg, "missing"));
    assert_non_null(strstr(err.msg, "cls_token"));
    /* the real fixture with a 4x4 table against a 5x5 model: pos_embed is mis-shaped */
    snprintf(fxpath, sizeof fxpath, "%s/../fixtures/vit_dinov2.safetensors", ext_env("EXPLORA_TEST_DATA_DIR"));
    assert_int_equal(c.vt->load(c.model, fxpath, "dinov2", &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "pos_embed [1, 17, 24] -> pos_embed expects [1, 26, 24]"));
    assert_int_equal(c.vt->load(c.model, "/nonexistent/model.pth", "auto", &err), EX_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/model.pth"));
    ex_memory_plan_release(&c.plan);
    c.vt->destroy(c.model);
    ex_params_free(&c.params);
    ex_config_free(c.cfg);
    ext_backend_close(&c.be, c.reg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dinov2),
        cmocka_unit_test(test_dinov2_bf16_activations),
        cmocka_unit_test(test_dinov2_resampling_variants),
        cmocka_unit_test(test_dinov2_registers),
        cmocka_unit_test(test_mae),
        cmocka_unit_test(test_recompute_gives_identical_gradients),
        cmocka_unit_test(test_inference_plan),
        cmocka_unit_test(test_inference_chunks),
        cmocka_unit_test(test_naming_conventions),
        cmocka_unit_test(test_bad_checkpoint_lists_problems),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
