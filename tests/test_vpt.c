/*
 * tests/test_vpt.c — the `vpt` strategy (visual prompt tuning, shallow): a PEFT
 * method that changes the token sequence instead of adapting a linear site.
 * Checks the trainable count, the token layout (prompts sit between the cls
 * and the patches, excluded from the patches), that prompts change the
 * patches' outputs, the prompts' gradient against finite differences, and
 * that export refuses to merge them.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "explora/model.h"
#include "explora/safetensors.h"
#include "explora/session.h"
#include "test_support.h"

typedef struct vm {
    ex_session s;
    ex_backend be;
    ex_model m;
} vm;

static void build(vm *v, const char *stack_ini) {
    char path[4096], text[4096], wpath[4096];
    snprintf(wpath, sizeof wpath, "%s/../fixtures/vit_dinov2.safetensors", ext_env("EXPLORA_TEST_DATA_DIR"));
    snprintf(text, sizeof text,
             "[backbone]\nname = vit\ndim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\nlayerscale = on\n"
             "image_size = 16\n%s",
             stack_ini);
    ext_tmp_path(path, sizeof path, "vpt.ini");
    ext_write_file(path, text, strlen(text));
    ex_session_options opt;
    memset(&opt, 0, sizeof opt);
    opt.config_path = path;
    opt.plugin_dirs[0] = ext_env("EXPLORA_TEST_PLUGIN_DIR");
    opt.ndirs = 1;
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_session_open(&v->s, &opt, &err), &err);
    EXT_OK(ex_session_validate(&v->s, &err), &err);
    EXT_OK(ex_session_backend(&v->s, &v->be, &err), &err);
    ex_backbone_shape shape = {2, 16, 16, 0, 0, 0, 0, EX_F32};
    EXT_OK(ex_model_build(&v->m, &v->s, &v->be, &shape, &err), &err);
    EXT_OK(ex_model_allocate(&v->m, &err), &err);
    /* the fixture holds more than weights: keep only what names a parameter */
    ex_st_file *f;
    EXT_OK(ex_st_open(&f, wpath, &err), &err);
    for (int i = 0; i < v->m.params.count; i++) {
        ex_param *p = v->m.params.items[i];
        const ex_st_entry *e = ex_st_find(f, p->value.name);
        if (!e) continue;
        EXT_OK(ex_st_read_f32(f, e, p->value.data, ex_tensor_numel(&p->value), &err), &err);
    }
    ex_st_close(f);
}

static void unbuild(vm *v) {
    ex_model_free(&v->m);
    ex_backend_destroy(&v->be);
    ex_session_close(&v->s);
}

static double loss_of(vm *v, const float *images, const float *r, float *tokens_out, int64_t *T) {
    ex_backbone_io io;
    memset(&io, 0, sizeof io);
    io.batch = 2, io.height = 16, io.width = 16, io.images = images, io.train = 1;
    ex_err err;
    EXT_OK(v->m.vt->forward(v->m.self, &io, &err), &err);
    *T = io.num_tokens;
    double l = 0;
    for (int64_t i = 0; i < 2 * io.num_tokens * 24; i++) l += (double)r[i] * io.tokens[i];
    if (tokens_out) memcpy(tokens_out, io.tokens, sizeof(float) * (size_t)(2 * io.num_tokens * 24));
    return l;
}

static void test_prompts(void **state) {
    (void)state;
    vm base, v;
    build(&base, "");
    build(&v, "[peft]\nstack = vpt\n[peft.vpt]\ntokens = 3\n");
    assert_int_equal(ex_params_numel(&v.m.params, 1), 3 * 24); /* only the prompts train */
    assert_int_equal(v.m.info.registers, 3);                   /* counted with the registers, not the patches */
    float images[2 * 3 * 256], r[2 * 20 * 24], tb[2 * 17 * 24], tv[2 * 20 * 24];
    ext_fill_uniform(images, sizeof images / sizeof *images, 1, -1, 1);
    ext_fill_uniform(r, sizeof r / sizeof *r, 2, -1, 1);
    int64_t Tb, Tv;
    loss_of(&base, images, r, tb, &Tb);
    loss_of(&v, images, r, tv, &Tv);
    assert_int_equal(Tb, 17);
    assert_int_equal(Tv, 20); /* cls + 3 prompts + 16 patches */
    /* the prompts take part in attention: the patch outputs differ from the base model's */
    double diff = 0;
    for (int64_t b = 0; b < 2; b++)
        for (int64_t k = 0; k < 16 * 24; k++) diff = fmax(diff, fabs(tv[(b * 20 + 4) * 24 + k] - tb[(b * 17 + 1) * 24 + k]));
    assert_true(diff > 1e-3);
    /* gradient of sum(r * tokens) w.r.t. the prompts, against central finite differences */
    ex_param *p = ex_params_find(&v.m.params, "prompt_tokens");
    assert_non_null(p);
    ex_err err;
    loss_of(&v, images, r, NULL, &Tv);
    memset(p->grad.data, 0, ex_tensor_nbytes(&p->grad));
    EXT_OK(v.m.vt->backward(v.m.self, r, NULL, &err), &err);
    float *g = p->grad.data, *x = p->value.data;
    for (int k = 0; k < 72; k += 7) {
        const float h = 1e-2f, keep = x[k];
        x[k] = keep + h;
        double lp = loss_of(&v, images, r, NULL, &Tv);
        x[k] = keep - h;
        double lm = loss_of(&v, images, r, NULL, &Tv);
        x[k] = keep;
        double fd = (lp - lm) / (2.0 * h);
        if (fabs(fd - g[k]) > 2e-2 * fmax(1.0, fabs(fd))) fail_msg("prompt %d: gradient %g, finite differences %g", k, g[k], fd);
    }
    /* prompts cannot be folded into a plain ViT */
    const ex_peft_vtable *pv = &v.m.peft_plugin[0]->vtable_copy.peft;
    assert_int_equal(pv->merge(v.m.peft_self[0], &err), EX_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "cannot be merged"));
    unbuild(&v);
    unbuild(&base);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_prompts)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
