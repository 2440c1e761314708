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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer_scale_table),
        cmocka_unit_test(test_step_matches_reference),
        cmocka_unit_test(test_config_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
