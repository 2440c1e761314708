/*
 * tests/test_optim.c — the optimiser's parameter groups and schedules
 * (core/src/optim.c), against references computed here in double:
 *
 *   - layer-wise lr decay factors by parameter name, from the rule of MAE's
 *     param_groups_lrd / DINOv2's get_vit_lr_decay_rate (embeddings id 0,
 *     blocks.i id i + 1, everything else id D + 1; factor decay^(D + 1 - id));
 *   - three ex_optim_step calls on the CPU backend with layer decay, the
 *     no-decay group, a cosine lr and a cosine weight-decay schedule, against
 *     torch.optim.AdamW's update written out in double (p *= 1 - lr*wd, then the
 *     bias-corrected Adam step), per parameter;
 *   - [optim] key errors: a negative weight_decay_end other than -1, a
 *     layer_decay out of range, layer decay on a model without blocks.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "explora/config.h"
#include "explora/optim.h"
#include "explora/params.h"
#include "test_support.h"

static void test_layer_scale_table(void **state) {
    (void)state;
    const double d = 0.65;
    const int64_t D = 12; /* MAE: num_layers = D + 1, scale = d^(num_layers - id) */
    struct {
        const char *name;
        int id;
    } cases[] = {
        {"cls_token", 0},
        {"pos_embed", 0},
        {"patch_embed.proj.weight", 0},
        {"register_tokens", 0},
        {"mask_token", 0},
        {"blocks.0.attn.qkv.weight", 1},
        {"blocks.0.norm1.bias", 1},
        {"blocks.5.mlp.fc2.weight", 6},
        {"blocks.11.attn.qkv.lora_q.A", 12},
        {"blocks.11.ls2.gamma", 12},
        {"norm.weight", 13},
        {"fc_norm.bias", 13},
        {"head.weight", 13},
        {"decoder_blocks.3.attn.qkv.weight", 13}, /* not a backbone block */
        {"decoder_pos_embed", 13},
        {"cls_tokenizer.weight", 13},             /* only whole name parts count */
        {"blocks.x.attn", 13},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const double want = pow(d, (double)(D + 1 - cases[i].id));
        const double got = ex_optim_layer_scale(cases[i].name, D, d);
        if (fabs(got - want) > 1e-12 * want) fail_msg("%s: scale %.12g, want %.12g (id %d)", cases[i].name, got, want, cases[i].id);
    }
    /* spot values a reader can check by hand */
    assert_true(fabs(ex_optim_layer_scale("blocks.11.attn.proj.weight", D, d) - 0.65) < 1e-12);
    assert_true(fabs(ex_optim_layer_scale("head.bias", D, d) - 1.0) < 1e-12);
    assert_true(fabs(ex_optim_layer_scale("cls_token", 2, 0.5) - 0.125) < 1e-12);
    /* off */
    assert_true(ex_optim_layer_scale("cls_token", D, 1.0) == 1.0);
}

static double cosine(double base, double final, int64_t T, int64_t t) {
    return final + 0.5 * (base - final) * (1.0 + cos(M_PI * (double)t / (double)T));
}

typedef struct spec {
    const char *name;
    int64_t n;
    int trainable;
    double lr_scale, wd_mult; /* the expected groups for depth 3, layer_decay 0.5 */
} spec;

static void test_step_matches_reference(void **state) {
    (void)state;
    const double decay = 0.5;
    /* depth 3: blocks.2 exists only as a frozen tensor and still counts */
    const spec sp[] = {
        {"cls_token", 4, 1, 0.0625, 1.0},
        {"patch_embed.proj.weight", 12, 1, 0.0625, 1.0},
        {"patch_embed.proj.bias", 4, 1, 0.0625, 0.0},
        {"blocks.0.attn.qkv.weight", 24, 1, 0.125, 1.0},
        {"blocks.1.norm1.weight", 4, 1, 0.25, 0.0},
        {"blocks.1.attn.qkv.lora_q.A", 8, 1, 0.25, 1.0},
        {"blocks.2.mlp.fc1.weight", 16, 0, 0.5, 1.0},
        {"norm.weight", 4, 1, 1.0, 0.0},
        {"head.weight", 12, 1, 1.0, 1.0},
    };
    const int np = (int)(sizeof sp / sizeof *sp);
    ex_backend be;
    ex_registry *reg = NULL;
    ext_backend_open("cpu", NULL, &be, &reg);
    ex_err err;
    ex_err_clear(&err);
    ex_params ps;
    ex_params_init(&ps);
    for (int i = 0; i < np; i++) {
        ex_param *p = NULL;
        assert_int_equal(ex_params_add(&ps, sp[i].name, 1, (int64_t[]){sp[i].n}, "test", NULL, NULL, &p, &err), EX_OK);
        p->trainable = sp[i].trainable;
    }
    ex_optim_config cfg = {.lr = 1e-2, .min_lr = 1e-3, .weight_decay = 0.1, .weight_decay_end = 0.3, .layer_decay = decay,
                           .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .clip_grad = 0.0, .warmup_steps = 0, .steps = 3};
    ex_memory_plan plan;
    ex_memory_plan_init(&plan, &be);
    ex_optim o;
    assert_int_equal(ex_params_plan(&ps, &plan, &err), EX_OK);
    if (ex_optim_plan(&o, &be, &ps, &cfg, &plan, &err) != EX_OK) fail_msg("%s", err.msg);
    assert_int_equal(ex_memory_plan_commit(&plan, &err), EX_OK);
    ex_params_bind(&ps);
    for (int i = 0; i < o.count; i++) {
        const ex_optim_slot *sl = &o.slots[i];
        for (int k = 0; k < np; k++)
            if (strcmp(sp[k].name, sl->param->value.name) == 0) {
                assert_true(fabs(sl->lr_mult - sp[k].lr_scale) < 1e-7);
                assert_true(sl->wd_mult == (float)sp[k].wd_mult);
            }
    }

    /* values and (fixed) gradients; reference state in double */
    double ref_p[9][24], ref_m[9][24] = {{0}}, ref_v[9][24] = {{0}};
    float g[9][24];
    for (int i = 0; i < np; i++) {
        ex_param *p = ex_params_find(&ps, sp[i].name);
        float *val = p->value.data;
        ext_fill_uniform(val, (size_t)sp[i].n, 100 + (uint64_t)i, -1.0f, 1.0f);
        ext_fill_uniform(g[i], (size_t)sp[i].n, 200 + (uint64_t)i, -0.5f, 0.5f);
        for (int64_t k = 0; k < sp[i].n; k++) ref_p[i][k] = val[k];
    }
    for (int64_t t = 0; t < 3; t++) {
        for (int i = 0; i < np; i++)
            if (sp[i].trainable) memcpy(ex_params_find(&ps, sp[i].name)->grad.data, g[i], sizeof(float) * (size_t)sp[i].n);
        double lr_used = 0, gn = 0;
        if (ex_optim_step(&o, &lr_used, &gn, &err) != EX_OK) fail_msg("%s", err.msg);
        const double lr = cosine(1e-2, 1e-3, 3, t), wd = cosine(0.1, 0.3, 3, t);
        assert_true(fabs(lr_used - lr) < 1e-12);
        assert_true(fabs(ex_optim_weight_decay_at(&cfg, t) - wd) < 1e-12);
        for (int i = 0; i < np; i++) {
            if (!sp[i].trainable) continue;
            const double glr = lr * sp[i].lr_scale, gwd = wd * sp[i].wd_mult;
            const double bc1 = 1.0 - pow(0.9, (double)(t + 1)), bc2 = 1.0 - pow(0.95, (double)(t + 1));
            for (int64_t k = 0; k < sp[i].n; k++) {
                ref_p[i][k] *= 1.0 - glr * gwd;
                ref_m[i][k] = 0.9 * ref_m[i][k] + 0.1 * g[i][k];
                ref_v[i][k] = 0.95 * ref_v[i][k] + 0.05 * (double)g[i][k] * g[i][k];
                ref_p[i][k] -= glr * (ref_m[i][k] / bc1) / (sqrt(ref_v[i][k] / bc2) + 1e-8);
            }
        }
    }
    for (int i = 0; i < np; i++) {
        const float *val = ex_params_find(&ps, sp[i].name)->value.data;
        for (int64_t k = 0; k < sp[i].n; k++)
            if (fabs(val[k] - ref_p[i][k]) > 2e-6 + 1e-5 * fabs(ref_p[i][k]))
                fail_msg("%s[%lld]: %.9g, reference %.9g", sp[i].name, (long long)k, val[k], ref_p[i][k]);
    }
    /* the frozen tensor did not move */
    {
        const float *val = ex_params_find(&ps, "blocks.2.mlp.fc1.weight")->value.data;
        for (int64_t k = 0; k < 16; k++) assert_true(val[k] == (float)ref_p[6][k]);
    }
    /* the gradient norm (one download for all tensors) and zeroing: one fill over the tensors as planned,
     * or one per tensor when the slots are not in address order (here: the first two swapped) */
    for (int order = 0; order < 2; order++) {
        if (order) {
            const ex_optim_slot t = o.slots[0];
            o.slots[0] = o.slots[1], o.slots[1] = t;
        }
        double ss = 0.0;
        for (int i = 0; i < np; i++) {
            if (!sp[i].trainable) continue;
            memcpy(ex_params_find(&ps, sp[i].name)->grad.data, g[i], sizeof(float) * (size_t)sp[i].n);
            for (int64_t k = 0; k < sp[i].n; k++) ss += (double)g[i][k] * g[i][k];
        }
        double gn = 0.0;
        EXT_OK(ex_optim_grad_norm(&o, &gn, &err), &err);
        assert_true(fabs(gn - sqrt(ss)) < 1e-6 * sqrt(ss));
        EXT_OK(ex_optim_zero_grads(&o, &err), &err);
        for (int i = 0; i < np; i++) {
            if (!sp[i].trainable) continue;
            const float *gd = ex_params_find(&ps, sp[i].name)->grad.data;
            for (int64_t k = 0; k < sp[i].n; k++) assert_true(gd[k] == 0.0f);
        }
    }
    ex_memory_plan_release(&plan); /* before the tensors it points at */
    ex_optim_free(&o);
    ex_params_free(&ps);
    ext_backend_close(&be, reg);
}

/* Read [optim] from `text`; return the status and the message in err. */
static ex_status read_optim(const char *text, ex_optim_config *out, ex_err *err) {
    ex_config *c = NULL;
    ex_err_clear(err);
    ex_status st = ex_config_load_string(&c, text, "t.ini", err);
    if (st == EX_OK) st = ex_config_validate_section(c, "optim", ex_optim_keys(), NULL, err);
    const ex_cfg_section s = {c, "optim", ex_optim_keys()};
    if (st == EX_OK) st = ex_optim_config_read(&s, out, err);
    ex_config_free(c);
    return st;
}

static void test_config_keys(void **state) {
    (void)state;
    ex_optim_config o;
    ex_err err;
    assert_int_equal(read_optim("[optim]\nsteps = 10\n", &o, &err), EX_OK);
    assert_true(o.layer_decay == 1.0 && o.weight_decay_end == -1.0);
    assert_true(ex_optim_weight_decay_at(&o, 7) == o.weight_decay); /* constant by default */
    assert_int_equal(read_optim("[optim]\nsteps = 10\nlayer_decay = 0.75\nweight_decay_end = 0.2\n", &o, &err), EX_OK);
    assert_true(o.layer_decay == 0.75 && o.weight_decay_end == 0.2);

    assert_int_not_equal(read_optim("[optim]\nweight_decay_end = -0.5\n", &o, &err), EX_OK);
    assert_non_null(strstr(err.msg, "weight_decay_end"));
    assert_non_null(strstr(err.msg, "-0.5"));
    assert_int_not_equal(read_optim("[optim]\nlayer_decay = 1.5\n", &o, &err), EX_OK);
    assert_non_null(strstr(err.msg, "layer_decay"));
    assert_int_not_equal(read_optim("[optim]\nlayer_decay = 0\n", &o, &err), EX_OK);
    assert_non_null(strstr(err.msg, "layer_decay"));

    /* layer decay needs blocks.<i> parameters */
    ex_backend be;
    ex_registry *reg = NULL;
    ext_backend_open("cpu", NULL, &be, &reg);
    ex_params ps;
    ex_params_init(&ps);
    ex_param *p = NULL;
    assert_int_equal(ex_params_add(&ps, "head.weight", 1, (int64_t[]){3}, "head", NULL, NULL, &p, &err), EX_OK);
    p->trainable = 1;
    ex_memory_plan plan;
    ex_memory_plan_init(&plan, &be);
    ex_optim opt;
    ex_optim_config cfg = {.lr = 1e-3, .layer_decay = 0.65, .weight_decay_end = -1, .steps = 1};
    ex_err_clear(&err);
    assert_int_equal(ex_optim_plan(&opt, &be, &ps, &cfg, &plan, &err), EX_E_CONFIG);
    assert_non_null(strstr(err.msg, "layer_decay = 0.65"));
    ex_memory_plan_release(&plan);
    ex_optim_free(&opt);
    ex_params_free(&ps);
    ext_backend_close(&be, reg);
}

/* The scale rule of torch.cuda.amp.GradScaler (growth 2, backoff 0.5, growth_interval), replayed on a
 * fixed sequence of overflow flags; and the [optim] keys. */
static void test_loss_scaler_rule(void **state) {
    (void)state;
    ex_loss_scaler s = {1, 65536.0, 0, 3, 0};
    const int inf[] = {0, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0};
    /* after each step: good_steps resets on overflow and on growth */
    const double want_scale[] = {65536, 65536, 131072, 131072, 65536, 65536, 32768, 16384, 16384, 16384, 32768, 32768};
    const int64_t want_good[] = {1, 2, 0, 1, 0, 1, 0, 0, 1, 2, 0, 1};
    for (size_t i = 0; i < sizeof inf / sizeof *inf; i++) {
        assert_int_equal(ex_loss_scaler_update(&s, inf[i]), 0);
        if (s.scale != want_scale[i] || s.good_steps != want_good[i])
            fail_msg("after step %zu: scale %g good %lld, expected %g and %lld", i + 1, s.scale, (long long)s.good_steps,
                     want_scale[i], (long long)want_good[i]);
    }
    assert_int_equal(s.skipped, 3);
    ex_loss_scaler off = {0, 1.0, 0, 3, 0};
    assert_int_equal(ex_loss_scaler_update(&off, 1), 0);
    assert_true(off.scale == 1.0 && off.skipped == 0); /* disabled: nothing moves */
    ex_loss_scaler tiny = {1, 0x1p-24, 0, 3, 0};
    assert_int_equal(ex_loss_scaler_update(&tiny, 1), -1); /* non-finite at the smallest scale: stop */

    ex_config *c = NULL;
    ex_err err;
    ex_err_clear(&err);
    ex_loss_scaler r;
    const char *texts[3] = {"[optim]\n", "[optim]\nloss_scale = dynamic\n",
                            "[optim]\nloss_scale = dynamic\nloss_scale_init = 1000\n"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ex_config_load_string(&c, texts[i], "t.ini", &err), EX_OK);
        const ex_cfg_section sec = {c, "optim", ex_optim_keys()};
        EXT_OK(ex_config_validate_section(c, "optim", ex_optim_keys(), NULL, &err), &err);
        ex_status st = ex_loss_scaler_config_read(&sec, &r, &err);
        if (i == 0) assert_true(st == EX_OK && !r.enabled && r.scale == 1.0);
        if (i == 1) assert_true(st == EX_OK && r.enabled && r.scale == 65536.0 && r.growth_interval == 2000);
        if (i == 2) {
            assert_int_equal(st, EX_E_CONFIG);
            assert_non_null(strstr(err.msg, "loss_scale_init = 1000"));
            assert_non_null(strstr(err.msg, "power of two"));
        }
        ex_config_free(c);
    }
}

/* ex_optim_step_scaled on the CPU: gradients seeded times 2^k give, after the unscale, the very update of
 * ex_optim_step on the unscaled gradients (bit for bit), with adam_step counting it; a gradient with an inf
 * skips the step: no parameter or moment moves, the schedule advances, adam_step does not, the scale halves,
 * and the next update uses bias correction step 2, not 3. */
static void test_scaled_step(void **state) {
    (void)state;
    ex_backend be;
    ex_registry *reg = NULL;
    ext_backend_open("cpu", NULL, &be, &reg);
    ex_err err;
    ex_err_clear(&err);
    ex_params ps[2];
    ex_optim o[2];
    ex_memory_plan plan[2];
    ex_optim_config cfg = {.lr = 1e-2, .min_lr = 1e-3, .weight_decay = 0.1, .weight_decay_end = -1, .beta1 = 0.9,
                           .beta2 = 0.95, .eps = 1e-8, .clip_grad = 1.0, .warmup_steps = 0, .steps = 5};
    float g[32];
    ext_fill_uniform(g, 32, 5, -0.5f, 0.5f);
    for (int k = 0; k < 2; k++) {
        ex_params_init(&ps[k]);
        ex_param *p = NULL;
        EXT_OK(ex_params_add(&ps[k], "blocks.0.w", 1, (int64_t[]){32}, "test", NULL, NULL, &p, &err), &err);
        p->trainable = 1;
        ex_memory_plan_init(&plan[k], &be);
        EXT_OK(ex_params_plan(&ps[k], &plan[k], &err), &err);
        EXT_OK(ex_optim_plan(&o[k], &be, &ps[k], &cfg, &plan[k], &err), &err);
        EXT_OK(ex_memory_plan_commit(&plan[k], &err), &err);
        ex_params_bind(&ps[k]);
        ext_fill_uniform(p->value.data, 32, 9, -1.0f, 1.0f);
    }
    float *w0 = ps[0].items[0]->value.data, *w1 = ps[1].items[0]->value.data;
    float *g0 = ps[0].items[0]->grad.data, *g1 = ps[1].items[0]->grad.data;
    ex_loss_scaler s = {1, 0x1p20, 0, 1000, 0};
    double lr0, lr1, n0, n1;
    int skipped = -1;
    /* step 1: both update */
    memcpy(g0, g, sizeof g);
    for (int i = 0; i < 32; i++) g1[i] = g[i] * 0x1p20f;
    EXT_OK(ex_optim_step(&o[0], &lr0, &n0, &err), &err);
    EXT_OK(ex_optim_step_scaled(&o[1], &s, &lr1, &n1, &skipped, &err), &err);
    assert_int_equal(skipped, 0);
    assert_true(n0 == n1 && lr0 == lr1);
    assert_memory_equal(w0, w1, sizeof g);
    assert_int_equal(o[1].adam_step, 1);
    /* step 2: an overflow in the scaled run; the reference run takes no step at all here */
    float before[32], m_before[32];
    memcpy(before, w1, sizeof before);
    memcpy(m_before, o[1].slots[0].m.data, sizeof m_before);
    for (int i = 0; i < 32; i++) g1[i] = g[i] * 0x1p20f;
    g1[7] = INFINITY;
    EXT_OK(ex_optim_step_scaled(&o[1], &s, &lr1, &n1, &skipped, &err), &err);
    assert_int_equal(skipped, 1);
    assert_false(isfinite(n1));
    assert_memory_equal(before, w1, sizeof before);
    assert_memory_equal(m_before, o[1].slots[0].m.data, sizeof m_before);
    assert_true(s.scale == 0x1p19 && s.skipped == 1);
    assert_int_equal(o[1].step, 2);
    assert_int_equal(o[1].adam_step, 1);
    /* step 3: the scaled run updates with AdamW's step 2 at the schedule's step 3; the reference does the same by
     * hand (step counter moved past the skipped step) */
    ex_optim_skip(&o[0], NULL);
    memcpy(g0, g, sizeof g);
    for (int i = 0; i < 32; i++) g1[i] = g[i] * 0x1p19f;
    EXT_OK(ex_optim_step(&o[0], &lr0, &n0, &err), &err);
    EXT_OK(ex_optim_step_scaled(&o[1], &s, &lr1, &n1, &skipped, &err), &err);
    assert_int_equal(skipped, 0);
    assert_true(lr0 == lr1 && n0 == n1);
    assert_int_equal(o[0].adam_step, 2);
    assert_int_equal(o[1].adam_step, 2);
    assert_memory_equal(w0, w1, sizeof g);
    for (int k = 0; k < 2; k++) {
        ex_memory_plan_release(&plan[k]);
        ex_optim_free(&o[k]);
        ex_params_free(&ps[k]);
    }
    ext_backend_close(&be, reg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer_scale_table),
        cmocka_unit_test(test_step_matches_reference),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_loss_scaler_rule),
        cmocka_unit_test(test_scaled_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
