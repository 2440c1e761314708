/*
 * tests/test_mae.c — the `mae` objective plugin (with the `vit` backbone) against
 * tests/fixtures/mae_tiny.safetensors, made by tests/fixtures/make_mae_fixtures.py
 * with Debian's python3-torch following facebookresearch/mae models_mae.py:
 * a tiny MAE (encoder D 24, depth 2, heads 3, MLP 48, patch 4, 16x16 images;
 * decoder 16 wide, depth 2, heads 2, MLP 32), batch 2, mask ratio 0.75 (4 of 16
 * patches kept). The Python script draws the masking noise from explora's own
 * Philox stream, so one step of the plugin with the same seed sees the same masks.
 *
 * Checked:
 *   - masks: the noise equals the fixture's bit for bit, exactly len_keep kept per
 *     image, the shuffle is the stable ascending argsort (and the backend's
 *     rng_permutation at offset b*L), mask/ids_restore/ids_keep as MAE's, the stream
 *     advanced by B*L;
 *   - norm_pix_loss on: loss, pred, target (1e-4 abs), the gradient of every encoder
 *     and decoder parameter and of the image (1e-3 relative to the tensor's max);
 *   - norm_pix_loss off: loss, target and a set of gradients;
 *   - decoder_train = none: no decoder gradient is allocated, the encoder's still match;
 *   - decoder LoRA (rank 2 on q, v, decoder_train = norms): loss, pred and the LoRA,
 *     decoder-norm, encoder and image gradients against a torch LoRA model;
 *   - a backbone with register tokens (dropped before the decoder) runs and trains;
 *   - init without a checkpoint (xavier, zeros, ones, mask_token std 0.02, the
 *     sin-cos table equal to MAE's), reproducible from the seed;
 *   - 20 AdamW steps on one batch (fixed masks) bring the loss below 0.7x;
 *   - load errors name the missing and mis-shaped decoder tensors; a .pth checkpoint
 *     ({"model": ...}, float16) loads the decoder and leaves the encoder alone; config errors.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../plugins/mae/mae_probe.h"
#include "explora/backbone.h"
#include "explora/config.h"
#include "explora/objective.h"
#include "explora/params.h"
#include "test_support.h"

#define B 2
#define IMG 16
#define L 16
#define KEEP 4
#define KPIX 48
#define MASK_SEED 1234

typedef struct mt_ctx {
    ex_registry *reg;
    ex_backend be;
    const ex_backbone_vtable *bvt;
    const ex_objective_vtable *ovt;
    ex_params params;
    ex_memory_plan plan;
    void *bb, *obj;
    mae_probe *probe;
    ex_config *cfg;
    ex_st_file *fx;
    float *images; /* (B, 3, IMG, IMG) */
    float *dimg;   /* (B, 3, IMG, IMG) */
    int planned;   /* the memory plan was initialised */
} mt_ctx;

static const char *k_backbone_ini = "[backbone]\nname = vit\ndim = 24\ndepth = 2\nheads = 3\nhidden = 48\npatch = 4\n"
                                    "pos_grid = 4\npos_embed = sincos\nmask_token = off\nlayerscale = off\nimage_size = 16\n";
static const char *k_objective_ini = "[objective]\nname = mae\nimage_size = 16\ndecoder_dim = 16\ndecoder_depth = 2\n"
                                     "decoder_heads = 2\ndecoder_hidden = 32\n";

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

static void open_fixture(ex_st_file **fx) {
    char path[4096];
    ex_err err;
    snprintf(path, sizeof path, "%s/../fixtures/mae_tiny.safetensors", ext_env("EXPLORA_TEST_DATA_DIR"));
    EXT_OK(ex_st_open(fx, path, &err), &err);
}

/* Compare n device floats with a fixture tensor: grad = 0 -> 1e-4 abs; grad = 1 -> 1e-3 of the tensor's max. */
static void expect(const ex_st_file *fx, const float *got, int64_t n, const char *name, int grad) {
    int64_t m;
    float *ref = fx_f32(fx, name, &m);
    if (m != n) fail_msg("%s: fixture has %lld values, test expects %lld", name, (long long)m, (long long)n);
    double maxref = 0;
    for (int64_t i = 0; i < n; i++) maxref = fmax(maxref, fabs(ref[i]));
    ext_assert_close(got, ref, (size_t)n, grad ? 1e-3 * fmax(maxref, 1e-6) : 1e-4, 0, name);
    free(ref);
}

/* Build vit + mae from INI text; weights from the fixture (load = 1, after init) or init only. */
static ex_status open_model_bb(mt_ctx *c, const char *extra_bb_ini, const char *extra_obj_ini, int load, int input_grad,
                               ex_err *err) {
    memset(c, 0, sizeof *c);
    ext_backend_open("cpu", NULL, &c->be, &c->reg);
    EXT_OK(ex_registry_add_dir(c->reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), err), err);
    EXT_OK(ex_registry_scan(c->reg, err), err);
    const ex_plugin *vitp, *maep;
    EXT_OK(ex_registry_find(c->reg, EX_PLUGIN_BACKBONE, "vit", &vitp, err), err);
    EXT_OK(ex_registry_find(c->reg, EX_PLUGIN_OBJECTIVE, "mae", &maep, err), err);
    c->bvt = &vitp->vtable_copy.backbone;
    c->ovt = &maep->vtable_copy.objective;
    char text[4096];
    snprintf(text, sizeof text, "%s%s%s", k_backbone_ini, extra_bb_ini, k_objective_ini);
    EXT_OK(ex_config_load_string(&c->cfg, text, "test-mae.ini", err), err);
    /* extra "key = value" lines override [objective] (as --set does) */
    char lines[1024];
    snprintf(lines, sizeof lines, "%s", extra_obj_ini);
    for (char *save = NULL, *ln = strtok_r(lines, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        char key[128], val[256], set[512];
        if (sscanf(ln, " %127[^= ] = %255[^\n]", key, val) != 2) fail_msg("bad test ini line '%s'", ln);
        snprintf(set, sizeof set, "objective.%s=%s", key, val);
        EXT_OK(ex_config_set(c->cfg, set, err), err);
    }
    const char *const extra[] = {"name", NULL};
    EXT_OK(ex_config_validate_section(c->cfg, "backbone", vitp->desc.keys, extra, err), err);
    EXT_OK(ex_config_validate_section(c->cfg, "objective", maep->desc.keys, extra, err), err);
    ex_cfg_section bview = {c->cfg, "backbone", vitp->desc.keys};
    ex_cfg_section oview = {c->cfg, "objective", maep->desc.keys};
    ex_params_init(&c->params);
    EXT_OK(c->bvt->create(&bview, &c->be, &c->params, &c->bb, err), err);
    EXT_OK(ex_params_set_trainable(&c->params, "*", 1, NULL, err), err); /* the whole encoder trains */
    ex_objective_env env;
    memset(&env, 0, sizeof env); /* no teacher: MAE has none */
    env.be = &c->be, env.params = &c->params, env.bb = c->bvt, env.bb_self = c->bb, env.batch = B;
    EXT_OK(c->bvt->info(c->bb, &env.info), err);
    ex_status st = c->ovt->create(&oview, &env, &c->obj, err);
    if (st != EX_OK) return st;
    c->probe = c->obj;
    assert_int_equal(c->probe->magic, MAE_PROBE_MAGIC);
    c->probe->input_grad = input_grad;
    ex_backbone_shape shape;
    EXT_OK(c->ovt->backbone_shape(c->obj, &shape), err);
    assert_int_equal(shape.batch, B);
    assert_int_equal(shape.height, IMG);
    assert_int_equal(shape.keep, KEEP);
    ex_memory_plan_init(&c->plan, &c->be);
    c->planned = 1;
    EXT_OK(ex_params_plan(&c->params, &c->plan, err), err);
    EXT_OK(c->bvt->plan(c->bb, &shape, &c->plan, err), err);
    EXT_OK(c->ovt->plan(c->obj, &c->plan, err), err);
    EXT_OK(ex_memory_plan_commit(&c->plan, err), err);
    ex_params_bind(&c->params);
    EXT_OK(c->bvt->ready(c->bb, err), err);
    ex_rng init_rng = ex_rng_seed(7, EX_RNG_INIT);
    EXT_OK(c->ovt->init(c->obj, &init_rng, err), err);
    open_fixture(&c->fx);
    c->images = fx_f32(c->fx, "input", NULL);
    c->dimg = calloc(B * 3 * IMG * IMG, sizeof(float));
    c->probe->dimages = c->dimg;
    if (!load) return EX_OK;
    /* a weights-only copy of the fixture: every tensor that names a registered parameter; both the
     * backbone and the objective read it (each ignores the other's names) */
    ex_st_writer *wr;
    EXT_OK(ex_st_writer_new(&wr, err), err);
    for (int i = 0; i < ex_st_count(c->fx); i++) {
        const ex_st_entry *e = ex_st_at(c->fx, i);
        if (!ex_params_find(&c->params, e->name)) continue;
        EXT_OK(ex_st_writer_add(wr, e->name, e->dtype, e->ndim, e->shape, ex_st_data(c->fx, e), err), err);
    }
    static float reg[4 * 24]; /* register tokens (not in the fixture): random */
    const ex_param *rp = ex_params_find(&c->params, "register_tokens");
    if (rp) {
        assert_true(ex_tensor_numel(&rp->value) <= 4 * 24);
        ext_fill_uniform(reg, (size_t)ex_tensor_numel(&rp->value), 3, -1, 1);
        EXT_OK(ex_st_writer_add(wr, "register_tokens", EX_F32, rp->value.ndim, rp->value.shape, reg, err), err);
    }
    char path[4096];
    ext_tmp_path(path, sizeof path, "mae_weights.safetensors");
    EXT_OK(ex_st_writer_finish(wr, path, err), err);
    ex_st_writer_free(wr);
    EXT_OK(c->bvt->load(c->bb, path, "auto", err), err);
    EXT_OK(c->ovt->load(c->obj, path, err), err);
    return EX_OK;
}

static ex_status open_model(mt_ctx *c, const char *extra_obj_ini, int load, int input_grad, ex_err *err) {
    return open_model_bb(c, "", extra_obj_ini, load, input_grad, err);
}

static void close_model(mt_ctx *c) {
    if (c->planned) ex_memory_plan_release(&c->plan);
    if (c->obj) c->ovt->destroy(c->obj);
    c->bvt->destroy(c->bb);
    ex_params_free(&c->params);
    ex_config_free(c->cfg);
    if (c->fx) ex_st_close(c->fx);
    free(c->images);
    free(c->dimg);
    ext_backend_close(&c->be, c->reg);
}

static void zero_grads(mt_ctx *c) {
    ex_arena *g = &c->plan.arenas[EX_MEM_GRAD];
    if (g->base) memset(g->base, 0, g->planned);
    memset(c->dimg, 0, sizeof(float) * B * 3 * IMG * IMG);
}

/* One step with the fixture's mask stream; returns the loss. */
static double step(mt_ctx *c, ex_rng *rng_out) {
    ex_err err;
    ex_err_clear(&err);
    ex_batch b;
    memset(&b, 0, sizeof b);
    b.batch = B, b.nviews = 1, b.views[0] = c->images, b.height[0] = IMG, b.width[0] = IMG;
    ex_rng rng = ex_rng_seed(MASK_SEED, EX_RNG_MASK);
    ex_loss_terms terms;
    zero_grads(c);
    EXT_OK(c->ovt->step(c->obj, &b, &rng, 0, &terms, &err), &err);
    assert_int_equal(terms.count, 1);
    assert_string_equal(terms.names[0], "mae");
    assert_true(terms.total == terms.values[0]);
    if (rng_out) *rng_out = rng;
    return terms.total;
}

static void expect_scalar(const ex_st_file *fx, double got, const char *name) {
    float *ref = fx_f32(fx, name, NULL);
    if (fabs(got - (double)ref[0]) > 1e-4) fail_msg("%s: got %.7f, fixture %.7f", name, got, (double)ref[0]);
    free(ref);
}

/* Gradient of every parameter the fixture has one for under prefix (and that trains here). */
static int expect_grads(mt_ctx *c, const char *prefix) {
    int checked = 0;
    char name[256];
    for (int i = 0; i < c->params.count; i++) {
        const ex_param *p = c->params.items[i];
        snprintf(name, sizeof name, "%sgrad.%s", prefix, p->value.name);
        if (!ex_st_find(c->fx, name)) continue;
        if (!p->trainable) continue;
        expect(c->fx, p->grad.data, ex_tensor_numel(&p->grad), name, 1);
        checked++;
    }
    snprintf(name, sizeof name, "%sgrad.input", prefix);
    expect(c->fx, c->dimg, B * 3 * IMG * IMG, name, 1);
    return checked;
}

/* --- tests ------------------------------------------------------------------------------- */

static void test_masks(void **state) {
    (void)state;
    mt_ctx c;
    ex_err err;
    open_model(&c, "", 1, 1, &err);
    ex_rng after;
    step(&c, &after);
    assert_int_equal(after.offset, B * L); /* one uniform per patch */
    const mae_probe *p = c.probe;
    assert_int_equal(p->batch, B);
    assert_int_equal(p->keep, KEEP);
    assert_int_equal(p->patches, L);
    assert_int_equal(p->pixels, KPIX);
    /* the Python re-implementation of the stream gives the same noise, bit for bit */
    float *noise = fx_f32(c.fx, "noise", NULL);
    assert_memory_equal(noise, p->noise, sizeof(float) * B * L);
    float *keep = fx_f32(c.fx, "ids_keep", NULL), *restore = fx_f32(c.fx, "ids_restore", NULL);
    float *mask = fx_f32(c.fx, "mask", NULL);
    for (int b = 0; b < B; b++) {
        int kept = 0;
        int32_t shuffle[L];
        for (int l = 0; l < L; l++) {
            assert_int_equal(p->ids_restore[b * L + l], (int32_t)restore[b * L + l]);
            assert_int_equal(p->mask[b * L + l], (uint8_t)mask[b * L + l]);
            kept += p->mask[b * L + l] == 0;
            shuffle[p->ids_restore[b * L + l]] = l;
        }
        assert_int_equal(kept, KEEP);
        for (int j = 0; j < KEEP; j++) {
            assert_int_equal(p->ids_keep[b * KEEP + j], (int32_t)keep[b * KEEP + j]);
            assert_int_equal(p->ids_keep[b * KEEP + j], shuffle[j]);
            assert_int_equal(p->mask[b * L + shuffle[j]], 0);
        }
        /* ascending noise, ties by patch index (stable) */
        for (int j = 0; j + 1 < L; j++) {
            float u0 = p->noise[b * L + shuffle[j]], u1 = p->noise[b * L + shuffle[j + 1]];
            assert_true(u0 < u1 || (u0 == u1 && shuffle[j] < shuffle[j + 1]));
        }
        /* the backend's permutation op at the same stream position draws the same shuffle */
        ex_rng r = ex_rng_seed(MASK_SEED, EX_RNG_MASK);
        r.offset = (uint64_t)(b * L);
        int32_t perm[L];
        assert_int_equal(c.be.vt.rng_permutation(c.be.ctx, perm, L, &r), EX_OK);
        assert_memory_equal(perm, shuffle, sizeof perm);
    }
    free(noise);
    free(keep);
    free(restore);
    free(mask);
    close_model(&c);
}

static void test_norm_pix_loss(void **state) {
    (void)state;
    mt_ctx c;
    ex_err err;
    open_model(&c, "", 1, 1, &err);
    double loss = step(&c, NULL);
    expect_scalar(c.fx, loss, "npl.loss");
    expect(c.fx, c.probe->pred, B * L * KPIX, "npl.pred", 0);
    expect(c.fx, c.probe->target, B * L * KPIX, "npl.target", 0);
    int n = expect_grads(&c, "npl.");
    /* encoder: cls, patch_embed (2), 2 blocks x 12, norm (2) = 29 (pos_embed is fixed);
     * decoder: mask_token, embed (2), 2 blocks x 12, norm (2), pred (2) = 31 */
    assert_int_equal(n, 29 + 31);
    close_model(&c);
}

static void test_plain_pixel_loss(void **state) {
    (void)state;
    mt_ctx c;
    ex_err err;
    open_model(&c, "norm_pix_loss = false\n", 1, 1, &err);
    double loss = step(&c, NULL);
    expect_scalar(c.fx, loss, "raw.loss");
    expect(c.fx, c.probe->pred, B * L * KPIX, "npl.pred", 0); /* the prediction does not depend on the loss */
    expect(c.fx, c.probe->target, B * L * KPIX, "raw.target", 0);
    assert_int_equal(expect_grads(&c, "raw."), 5);
    close_model(&c);
}

static void test_frozen_decoder(void **state) {
    (void)state;
    mt_ctx c;
    ex_err err;
    open_model(&c, "decoder_train = none\n", 1, 1, &err);
    int frozen = 0;
    for (int i = 0; i < c.params.count; i++) {
        const ex_param *p = c.params.items[i];
        if (strncmp(p->value.name, "decoder_", 8) == 0 || strcmp(p->value.name, "mask_token") == 0) {
            assert_false(p->trainable);
            assert_null(p->grad.data); /* no gradient memory */
            frozen++;
        }
    }
    assert_int_equal(frozen, 32);
    double loss = step(&c, NULL);
    expect_scalar(c.fx, loss, "npl.loss");
    assert_int_equal(expect_grads(&c, "npl."), 29); /* the encoder's, through the frozen decoder */
    close_model(&c);
}

static void test_decoder_lora(void **state) {
    (void)state;
    mt_ctx c;
    ex_err err;
    open_model(&c, "decoder_train = norms\ndecoder_lora_rank = 2\n", 1, 1, &err);
    int lora = 0, trainable = 0;
    for (int i = 0; i < c.params.count; i++) {
        const ex_param *p = c.params.items[i];
        int dec = strncmp(p->value.name, "decoder_", 8) == 0 || strcmp(p->value.name, "mask_token") == 0;
        if (!dec) continue;
        int want = strstr(p->value.name, ".lora_") || strstr(p->value.name, "norm");
        assert_int_equal(p->trainable, want);
        assert_true((p->grad.data != NULL) == want);
        lora += strstr(p->value.name, ".lora_") != NULL;
        trainable += want;
    }
    assert_int_equal(lora, 8);       /* 2 blocks x {q, v} x {A, B} */
    assert_int_equal(trainable, 18); /* + 2 blocks x (norm1, norm2) x 2 + decoder_norm x 2 */
    double loss = step(&c, NULL);
    expect_scalar(c.fx, loss, "lora.loss");
    expect(c.fx, c.probe->pred, B * L * KPIX, "lora.pred", 0);
    assert_int_equal(expect_grads(&c, "lora."), 8 + 10 + 1);
    close_model(&c);
}

/* Registers are dropped before the decoder: the step runs and the encoder (registers included) trains. */
static void test_backbone_with_registers(void **state) {
    (void)state;
    mt_ctx c;
    ex_err err;
    open_model_bb(&c, "registers = 2\n", "", 1, 1, &err);
    double loss = step(&c, NULL);
    assert_true(isfinite(loss) && loss > 0 && fabs(loss - 1.7204) > 1e-3); /* registers change the encoder */
    const ex_param *rp = ex_params_find(&c.params, "register_tokens");
    double g = 0;
    for (int64_t j = 0; j < ex_tensor_numel(&rp->grad); j++) g += fabs(((const float *)rp->grad.data)[j]);
    assert_true(g > 1e-6 && isfinite(g));
    /* removed patches still get no image gradient */
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++) {
            double s = 0;
            for (int ch = 0; ch < 3; ch++)
                for (int y = 0; y < 4; y++)
                    for (int x = 0; x < 4; x++)
                        s += fabs(c.dimg[((b * 3 + ch) * IMG + (l / 4) * 4 + y) * IMG + (l % 4) * 4 + x]);
            assert_true((s == 0) == (c.probe->mask[b * L + l] == 1));
        }
    close_model(&c);
}

static void test_init_without_checkpoint(void **state) {
    (void)state;
    mt_ctx c;
    ex_err err;
    open_model(&c, "decoder_lora_rank = 2\n", 0, 0, &err);
    size_t total = 0;
    for (int i = 0; i < c.params.count; i++) {
        const ex_param *p = c.params.items[i];
        const char *n = p->value.name;
        if (strncmp(n, "decoder_", 8) != 0 && strcmp(n, "mask_token") != 0) continue;
        const float *v = p->value.data;
        const int64_t k = ex_tensor_numel(&p->value);
        total += (size_t)k;
        double mx = 0, ss = 0;
        for (int64_t j = 0; j < k; j++) mx = fmax(mx, fabs(v[j])), ss += (double)v[j] * v[j];
        size_t len = strlen(n);
        if (strcmp(n, "decoder_pos_embed") == 0) {
            expect(c.fx, v, k, "decoder_pos_embed", 0); /* MAE's get_2d_sincos_pos_embed, from the fixture */
            float *ref = fx_f32(c.fx, "decoder_pos_embed", NULL);
            assert_memory_equal(ref, v, sizeof(float) * (size_t)k);
            free(ref);
        } else if (strcmp(n, "mask_token") == 0) {
            assert_true(mx > 0 && mx < 0.1 && sqrt(ss / (double)k) > 0.005 && sqrt(ss / (double)k) < 0.05);
        } else if (strstr(n, ".lora_") && n[len - 1] == 'B') {
            assert_true(mx == 0);
        } else if (strstr(n, ".lora_")) {
            assert_true(mx > 0 && mx <= 0.25); /* U(-1/sqrt(16), 1/sqrt(16)) */
        } else if (strstr(n, "norm") && strstr(n, ".weight")) {
            for (int64_t j = 0; j < k; j++) assert_true(v[j] == 1.0f);
        } else if (len > 5 && strcmp(n + len - 5, ".bias") == 0) {
            assert_true(mx == 0);
        } else { /* xavier_uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) */
            const double a = sqrt(6.0 / (double)(p->value.shape[0] + p->value.shape[1]));
            assert_true(mx > 0.5 * a && mx <= a);
            assert_true(fabs(sqrt(ss / (double)k) - a / sqrt(3.0)) < 0.25 * a); /* std of U(-a, a) */
        }
    }
    assert_true(total > 6000);
    /* the same seed gives the same decoder */
    float *first = malloc(sizeof(float) * total);
    size_t off = 0;
    for (int i = 0; i < c.params.count; i++) {
        const ex_param *p = c.params.items[i];
        if (strncmp(p->value.name, "decoder_", 8) && strcmp(p->value.name, "mask_token")) continue;
        memcpy(first + off, p->value.data, ex_tensor_nbytes(&p->value));
        off += (size_t)ex_tensor_numel(&p->value);
    }
    ex_rng again = ex_rng_seed(7, EX_RNG_INIT);
    EXT_OK(c.ovt->init(c.obj, &again, &err), &err);
    off = 0;
    for (int i = 0; i < c.params.count; i++) {
        const ex_param *p = c.params.items[i];
        if (strncmp(p->value.name, "decoder_", 8) && strcmp(p->value.name, "mask_token")) continue;
        assert_memory_equal(first + off, p->value.data, ex_tensor_nbytes(&p->value));
        off += (size_t)ex_tensor_numel(&p->value);
    }
    free(first);
    /* a step runs on the initialised decoder (the encoder is all zeros: a finite loss is what counts) */
    double loss = step(&c, NULL);
    assert_true(isfinite(loss) && loss > 0);
    close_model(&c);
}

static void test_adamw_reduces_loss(void **state) {
    (void)state;
    mt_ctx c;
    ex_err err;
    open_model(&c, "", 1, 0, &err);
    float *mv[2][256] = {{0}};
    assert_true(c.params.count <= 256);
    for (int i = 0; i < c.params.count; i++)
        if (c.params.items[i]->trainable)
            for (int k = 0; k < 2; k++) mv[k][i] = calloc((size_t)ex_tensor_numel(&c.params.items[i]->value), sizeof(float));
    double first = 0, last = 0;
    for (int s = 1; s <= 21; s++) {
        double loss = step(&c, NULL); /* the same masks every step: one fixed batch */
        if (s == 1) first = loss;
        last = loss;
        if (s == 21) break;
        ex_adamw_params h = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f, s};
        for (int i = 0; i < c.params.count; i++) {
            ex_param *p = c.params.items[i];
            if (!p->trainable) continue;
            assert_int_equal(c.be.vt.adamw(c.be.ctx, p->value.data, p->grad.data, mv[0][i], mv[1][i],
                                           ex_tensor_numel(&p->value), &h),
                             EX_OK);
        }
    }
    print_message("mae: loss %.4f -> %.4f after 20 AdamW steps\n", first, last);
    assert_true(last < 0.7 * first);
    for (int i = 0; i < c.params.count; i++) free(mv[0][i]), free(mv[1][i]);
    close_model(&c);
}

/* Write `fixture` tensors named by the decoder (minus `drop`, with `reshape` given a wrong shape) to path. */
static void write_decoder_ckpt(const ex_st_file *fx, const char *path, const char *drop, const char *reshape,
                               const char *pos_other_grid) {
    ex_err err;
    ex_st_writer *wr;
    EXT_OK(ex_st_writer_new(&wr, &err), &err);
    static float big[4096];
    for (int i = 0; i < ex_st_count(fx); i++) {
        const ex_st_entry *e = ex_st_at(fx, i);
        if (strcmp(e->name, "mask_token") && strncmp(e->name, "decoder_", 8) && strncmp(e->name, "blocks.", 7)) continue;
        if (strstr(e->name, ".lora_") || (drop && strcmp(e->name, drop) == 0)) continue;
        if (reshape && strcmp(e->name, reshape) == 0) {
            int64_t shape[2] = {e->shape[0], e->shape[1] - 1};
            EXT_OK(ex_st_writer_add(wr, e->name, e->dtype, 2, shape, ex_st_data(fx, e), &err), &err);
        } else if (pos_other_grid && strcmp(e->name, "decoder_pos_embed") == 0) {
            int64_t shape[3] = {1, 26, 16}; /* a 5x5 grid */
            EXT_OK(ex_st_writer_add(wr, e->name, EX_F32, 3, shape, big, &err), &err);
        } else {
            EXT_OK(ex_st_writer_add(wr, e->name, e->dtype, e->ndim, e->shape, ex_st_data(fx, e), &err), &err);
        }
    }
    EXT_OK(ex_st_writer_finish(wr, path, &err), &err);
    ex_st_writer_free(wr);
}

static void test_load_errors(void **state) {
    (void)state;
    mt_ctx c;
    ex_err err;
    open_model(&c, "", 0, 0, &err);
    char path[4096];
    ext_tmp_path(path, sizeof path, "bad_decoder.safetensors");
    write_decoder_ckpt(c.fx, path, "decoder_pred.bias", "decoder_embed.weight", NULL);
    assert_int_equal(c.ovt->load(c.obj, path, &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "decoder_embed.weight [16, 23] -> decoder_embed.weight expects [16, 24]"));
    assert_non_null(strstr(err.msg, "missing (decoder_embed.weight; decoder_pred.bias)"));
    assert_null(strstr(err.msg, "unexpected (")); /* the encoder's tensors are not ours: ignored */
    /* a checkpoint for another grid: its decoder_pos_embed is dropped, the table for 16x16 stays */
    write_decoder_ckpt(c.fx, path, NULL, NULL, "other grid");
    EXT_OK(c.ovt->load(c.obj, path, &err), &err);
    ex_param *pos = ex_params_find(&c.params, "decoder_pos_embed");
    expect(c.fx, pos->value.data, 17 * 16, "decoder_pos_embed", 0);
    ex_param *pred = ex_params_find(&c.params, "decoder_pred.weight");
    expect(c.fx, pred->value.data, KPIX * 16, "decoder_pred.weight", 0);
    assert_int_equal(c.ovt->load(c.obj, "no_such_mae_visualize_vit_large.pth", &err), EX_E_IO);
    close_model(&c);
}

/* A released-style .pth ({"model": state_dict, ...}, decoder in float16, some encoder tensors). */
static void test_load_pth(void **state) {
    (void)state;
    mt_ctx c;
    ex_err err;
    open_model(&c, "", 0, 0, &err);
    char path[4096];
    snprintf(path, sizeof path, "%s/../fixtures/mae_decoder.pth", ext_env("EXPLORA_TEST_DATA_DIR"));
    EXT_OK(c.ovt->load(c.obj, path, &err), &err);
    int checked = 0;
    for (int i = 0; i < c.params.count; i++) {
        const ex_param *p = c.params.items[i];
        if (strncmp(p->value.name, "decoder_", 8) && strcmp(p->value.name, "mask_token")) continue;
        int64_t n;
        float *ref = fx_f32(c.fx, p->value.name, &n);
        assert_int_equal(n, ex_tensor_numel(&p->value));
        const float *v = p->value.data;
        for (int64_t j = 0; j < n; j++) assert_true(v[j] == ex_f16_to_f32(ex_f32_to_f16(ref[j])));
        free(ref);
        checked++;
    }
    assert_int_equal(checked, 32);
    /* the encoder's tensors in the file were left alone */
    const float *cls = ex_params_find(&c.params, "cls_token")->value.data;
    for (int j = 0; j < 24; j++) assert_true(cls[j] == 0.0f);
    close_model(&c);
}

static void expect_config_error(const char *ini, const char *needle) {
    mt_ctx c;
    ex_err err;
    ex_err_clear(&err);
    assert_int_equal(open_model(&c, ini, 0, 0, &err), EX_E_CONFIG);
    if (!strstr(err.msg, needle)) fail_msg("'%s' not in: %s", needle, err.msg);
    c.obj = NULL;
    close_model(&c);
}

static void test_config_errors(void **state) {
    (void)state;
    expect_config_error("mask_ratio = 0.95\n", "keeps 0 of 16 patches");
    expect_config_error("decoder_heads = 3\n", "decoder_dim = 16 is not a multiple of decoder_heads = 3");
    expect_config_error("decoder_dim = 18\n", "must be a multiple of 4");
    expect_config_error("image_size = 18\n", "image_size 18x18 is not a multiple of the backbone's patch size 4");
}

static void test_views(void **state) {
    (void)state;
    mt_ctx c;
    ex_err err;
    open_model(&c, "flip = 0.25\ncrop_scale = 0.3, 0.9\n", 0, 0, &err);
    ex_view_recipe r;
    assert_int_equal(c.ovt->views(c.obj, &r), EX_OK);
    assert_int_equal(r.count, 1);
    assert_int_equal(r.views[0].height, IMG);
    assert_int_equal(r.views[0].width, IMG);
    assert_float_equal(r.views[0].scale_min, 0.3, 1e-12);
    assert_float_equal(r.views[0].scale_max, 0.9, 1e-12);
    assert_float_equal(r.views[0].ratio_min, 0.75, 1e-12);
    assert_float_equal(r.views[0].ratio_max, 4.0 / 3.0, 1e-12);
    assert_float_equal(r.views[0].flip_p, 0.25, 1e-12);
    close_model(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_masks),
        cmocka_unit_test(test_norm_pix_loss),
        cmocka_unit_test(test_plain_pixel_loss),
        cmocka_unit_test(test_frozen_decoder),
        cmocka_unit_test(test_decoder_lora),
        cmocka_unit_test(test_backbone_with_registers),
        cmocka_unit_test(test_init_without_checkpoint),
        cmocka_unit_test(test_adamw_reduces_loss),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_pth),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_views),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
