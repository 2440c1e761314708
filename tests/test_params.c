/*
 * tests/test_params.c — named parameters: registration, trainable patterns,
 * memory planning (gradients only for what trains), binding into layer
 * slots, and loading safetensors through a name map (renames, q/k/v slices
 * into a fused qkv, F16 conversion, squeezed shapes) with one error that
 * lists every unexpected, mis-shaped and missing tensor; frozen tensors shared
 * between two copies of a model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/params.h"
#include "test_support.h"

typedef struct toy {
    float *qkv_w, *qkv_dw, *norm_w, *norm_dw, *cls, *dcls;
} toy;

static void register_toy(ex_params *ps, toy *t) {
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_params_add(ps, "blocks.0.attn.qkv.weight", 2, (int64_t[]){6, 2}, "attn", &t->qkv_w, &t->qkv_dw, NULL, &err),
           &err);
    EXT_OK(ex_params_add(ps, "blocks.0.norm1.weight", 1, (int64_t[]){2}, "norm", &t->norm_w, &t->norm_dw, NULL, &err),
           &err);
    EXT_OK(ex_params_add(ps, "cls_token", 3, (int64_t[]){1, 1, 2}, "token", &t->cls, &t->dcls, NULL, &err), &err);
}

static void test_register_and_trainable(void **state) {
    (void)state;
    ex_params ps;
    ex_params_init(&ps);
    toy t = {0};
    register_toy(&ps, &t);
    ex_err err;
    ex_err_clear(&err);
    assert_int_equal(ex_params_add(&ps, "cls_token", 1, (int64_t[]){2}, "x", NULL, NULL, NULL, &err), EX_E_INVALID);
    assert_non_null(strstr(err.msg, "twice"));
    assert_int_equal(ex_params_numel(&ps, 0), 12 + 2 + 2);
    assert_int_equal(ex_params_numel(&ps, 1), 0);
    int matched = 0;
    EXT_OK(ex_params_set_trainable(&ps, "*norm*", 1, &matched, &err), &err);
    assert_int_equal(matched, 1);
    EXT_OK(ex_params_set_trainable(&ps, "cls_token", 1, &matched, &err), &err);
    assert_int_equal(ex_params_numel(&ps, 1), 4);
    EXT_OK(ex_params_set_trainable(&ps, "blocks.0.*", 0, &matched, &err), &err);
    assert_int_equal(matched, 2);
    assert_int_equal(ex_params_numel(&ps, 1), 2);
    char *text = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&text, &len);
    ex_params_print_summary(&ps, mf);
    fclose(mf);
    assert_non_null(strstr(text, "token"));
    assert_non_null(strstr(text, "12.50% trainable"));
    free(text);
    ex_params_free(&ps);
}

/* "Another convention": layer.N.{query,key,value}.weight -> slices of the fused qkv. */
static int map_other(void *user, const char *name, char *out, size_t cap, int64_t *row_offset) {
    (void)user;
    int layer;
    char what[64];
    if (strncmp(name, "teacher.", 8) == 0) return 0;
    if (sscanf(name, "layer.%d.%63[a-z].weight", &layer, what) == 2) {
        int slot = strcmp(what, "query") == 0 ? 0 : strcmp(what, "key") == 0 ? 1 : strcmp(what, "value") == 0 ? 2 : -1;
        if (slot >= 0) {
            snprintf(out, cap, "blocks.%d.attn.qkv.weight", layer);
            *row_offset = 2 * slot;
            return 1;
        }
        if (strcmp(what, "norm") == 0) {
            snprintf(out, cap, "blocks.%d.norm1.weight", layer);
            return 1;
        }
    }
    if (strcmp(name, "cls") == 0) {
        snprintf(out, cap, "cls_token");
        return 1;
    }
    return -1;
}

static void test_plan_bind_and_load(void **state) {
    (void)state;
    ex_backend be;
    ex_registry *reg;
    ext_backend_open("cpu", NULL, &be, &reg);
    ex_err err;
    ex_err_clear(&err);
    ex_params ps;
    ex_params_init(&ps);
    toy t = {0};
    t.norm_dw = (float *)0x1; /* must be overwritten with NULL: frozen */
    register_toy(&ps, &t);
    EXT_OK(ex_params_set_trainable(&ps, "blocks.0.attn.qkv.weight", 1, NULL, &err), &err);
    ex_memory_plan plan;
    ex_memory_plan_init(&plan, &be);
    EXT_OK(ex_params_plan(&ps, &plan, &err), &err);
    assert_int_equal(plan.arenas[EX_MEM_TRAINABLE].count, 1);
    assert_int_equal(plan.arenas[EX_MEM_FROZEN].count, 2);
    assert_int_equal(plan.arenas[EX_MEM_GRAD].count, 1); /* gradients only for what trains */
    EXT_OK(ex_memory_plan_commit(&plan, &err), &err);
    ex_params_bind(&ps);
    assert_non_null(t.qkv_w);
    assert_non_null(t.qkv_dw);
    assert_null(t.norm_dw);
    assert_null(t.dcls);
    assert_non_null(t.cls);

    /* A checkpoint in "another convention": q, k, v apart (F16 for k), a [2] cls token, one extra tensor. */
    float q[4] = {1, 2, 3, 4}, v[4] = {9, 10, 11, 12}, nw[2] = {0.5f, 0.25f}, cls[2] = {-1, -2}, extra[1] = {0};
    uint16_t k16[4];
    for (int i = 0; i < 4; i++) k16[i] = ex_f32_to_f16((float)(5 + i));
    char path[4096];
    ext_tmp_path(path, sizeof path, "ckpt.safetensors");
    ex_st_writer *w;
    EXT_OK(ex_st_writer_new(&w, &err), &err);
    EXT_OK(ex_st_writer_add(w, "layer.0.query.weight", EX_F32, 2, (int64_t[]){2, 2}, q, &err), &err);
    EXT_OK(ex_st_writer_add(w, "layer.0.key.weight", EX_F16, 2, (int64_t[]){2, 2}, k16, &err), &err);
    EXT_OK(ex_st_writer_add(w, "layer.0.value.weight", EX_F32, 2, (int64_t[]){2, 2}, v, &err), &err);
    EXT_OK(ex_st_writer_add(w, "layer.0.norm.weight", EX_F32, 1, (int64_t[]){2}, nw, &err), &err);
    EXT_OK(ex_st_writer_add(w, "cls", EX_F32, 1, (int64_t[]){2}, cls, &err), &err);
    EXT_OK(ex_st_writer_add(w, "teacher.ignored", EX_F32, 1, (int64_t[]){1}, extra, &err), &err);
    EXT_OK(ex_st_writer_finish(w, path, &err), &err);
    ex_st_writer_free(w);

    ex_st_file *f;
    EXT_OK(ex_st_open(&f, path, &err), &err);
    EXT_OK(ex_params_load_safetensors(&ps, &be, f, map_other, NULL, 1, &err), &err);
    float got[12];
    memcpy(got, t.qkv_w, sizeof got);
    const float want[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    ext_assert_close(got, want, 12, 0, 0, "fused qkv from q, k (f16), v");
    assert_float_equal(t.norm_w[1], 0.25f, 0);
    assert_float_equal(t.cls[0], -1.0f, 0);
    assert_float_equal(t.cls[1], -2.0f, 0);
    ex_st_close(f);

    /* Now a file that does not fit: one unexpected, one mis-shaped, the rest missing. */
    float bad[6] = {0};
    EXT_OK(ex_st_writer_new(&w, &err), &err);
    EXT_OK(ex_st_writer_add(w, "layer.0.norm.weight", EX_F32, 1, (int64_t[]){3}, bad, &err), &err);
    EXT_OK(ex_st_writer_add(w, "head.weight", EX_F32, 1, (int64_t[]){6}, bad, &err), &err);
    EXT_OK(ex_st_writer_finish(w, path, &err), &err);
    ex_st_writer_free(w);
    EXT_OK(ex_st_open(&f, path, &err), &err);
    assert_int_equal(ex_params_load_safetensors(&ps, &be, f, map_other, NULL, 1, &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "1 unexpected (head.weight)"));
    assert_non_null(strstr(err.msg, "layer.0.norm.weight [3] -> blocks.0.norm1.weight expects [2]"));
    assert_non_null(strstr(err.msg, "3 missing"));
    assert_non_null(strstr(err.msg, "blocks.0.attn.qkv.weight"));
    assert_non_null(strstr(err.msg, "cls_token"));
    assert_non_null(strstr(err.msg, path));
    ex_st_close(f);

    ex_memory_plan_release(&plan);
    ex_params_free(&ps);
    ext_backend_close(&be, reg);
}

/* A second copy (a teacher) shares what both copies keep frozen: those tensors are not planned
 * and bind to the first copy's memory; a tensor the first copy trains, or one of another size,
 * keeps its own memory. */
static void test_share_frozen(void **state) {
    (void)state;
    ex_backend be;
    ex_registry *reg;
    ext_backend_open("cpu", NULL, &be, &reg);
    ex_err err;
    ex_err_clear(&err);
    ex_params student, teacher;
    ex_params_init(&student);
    ex_params_init(&teacher);
    toy s = {0}, t = {0};
    register_toy(&student, &s);
    float *extra_s = NULL, *extra_t = NULL;
    EXT_OK(ex_params_add(&student, "head.weight", 1, (int64_t[]){4}, "head", &extra_s, NULL, NULL, &err), &err);
    register_toy(&teacher, &t);
    EXT_OK(ex_params_add(&teacher, "head.weight", 1, (int64_t[]){5}, "head", &extra_t, NULL, NULL, &err), &err);
    EXT_OK(ex_params_set_trainable(&student, "blocks.0.attn.qkv.weight", 1, NULL, &err), &err);

    int shared = -1;
    size_t bytes = 0;
    EXT_OK(ex_params_share_frozen(&teacher, &student, &shared, &bytes, &err), &err);
    assert_int_equal(shared, 2); /* norm1.weight and cls_token; not the trained qkv, not the resized head */
    assert_int_equal(bytes, 4 * (2 + 2));

    ex_memory_plan ps, pt;
    ex_memory_plan_init(&ps, &be);
    ex_memory_plan_init(&pt, &be);
    EXT_OK(ex_params_plan(&student, &ps, &err), &err);
    EXT_OK(ex_params_plan(&teacher, &pt, &err), &err);
    assert_int_equal(pt.arenas[EX_MEM_FROZEN].count, 2); /* qkv and head.weight of its own */
    assert_int_equal(pt.arenas[EX_MEM_TRAINABLE].count, 0);
    EXT_OK(ex_memory_plan_commit(&ps, &err), &err);
    EXT_OK(ex_memory_plan_commit(&pt, &err), &err);
    ex_params_bind(&student);
    ex_params_bind(&teacher);
    assert_ptr_equal(t.norm_w, s.norm_w);
    assert_ptr_equal(t.cls, s.cls);
    assert_true(t.qkv_w && t.qkv_w != s.qkv_w);
    assert_true(extra_t && extra_t != extra_s);
    assert_null(t.norm_dw);

    /* an alias may not train: planning it is refused with its name */
    ex_params again;
    ex_params_init(&again);
    toy a = {0};
    register_toy(&again, &a);
    EXT_OK(ex_params_share_frozen(&again, &student, NULL, NULL, &err), &err);
    EXT_OK(ex_params_set_trainable(&again, "cls_token", 1, NULL, &err), &err);
    ex_memory_plan pa;
    ex_memory_plan_init(&pa, &be);
    assert_int_equal(ex_params_plan(&again, &pa, &err), EX_E_INVALID);
    assert_non_null(strstr(err.msg, "cls_token"));
    assert_int_equal(ex_params_share_frozen(&again, &again, NULL, NULL, &err), EX_E_INVALID);

    ex_memory_plan_release(&pa);
    ex_params_free(&again);
    ex_memory_plan_release(&pt);
    ex_memory_plan_release(&ps);
    ex_params_free(&teacher);
    ex_params_free(&student);
    ext_backend_close(&be, reg);
}

/* [optim] frozen_dtype = bf16: frozen GEMM operands (and only those) are stored in bf16 at half the
 * memory; values go in rounded to nearest even and come out exactly; a teacher's alias takes the bf16
 * storage it shares; a tensor that trains cannot be bf16. */
static void test_frozen_bf16(void **state) {
    (void)state;
    ex_backend be;
    ex_registry *reg;
    ext_backend_open("cpu", NULL, &be, &reg);
    ex_err err;
    ex_err_clear(&err);
    ex_params student, teacher;
    ex_params_init(&student);
    ex_params_init(&teacher);
    toy s = {0}, t = {0};
    ex_dtype s_dt = EX_F64, t_dt = EX_F64, h_dt = EX_F64; /* bind must overwrite these */
    float *sh = NULL, *dsh = NULL, *th = NULL;
    register_toy(&student, &s);
    register_toy(&teacher, &t);
    ex_param *p;
    EXT_OK(ex_params_add(&student, "head.weight", 2, (int64_t[]){3, 2}, "head", &sh, &dsh, &p, &err), &err);
    ex_params_mark_gemm_operand(p, &h_dt);
    EXT_OK(ex_params_add(&teacher, "head.weight", 2, (int64_t[]){3, 2}, "head", &th, NULL, &p, &err), &err);
    ex_params_mark_gemm_operand(p, NULL);
    ex_params_mark_gemm_operand(ex_params_find(&student, "blocks.0.attn.qkv.weight"), &s_dt);
    ex_params_mark_gemm_operand(ex_params_find(&teacher, "blocks.0.attn.qkv.weight"), &t_dt);
    EXT_OK(ex_params_set_trainable(&student, "head.weight", 1, NULL, &err), &err);

    int n = -1;
    size_t saved = 0;
    EXT_OK(ex_params_set_frozen_dtype(&student, &be, EX_BF16, &n, &saved, &err), &err);
    assert_int_equal(n, 1); /* the frozen qkv weight; not the trainable head, not the norm or the token */
    assert_int_equal(saved, 12 * 2);
    assert_int_equal(ex_params_find(&student, "blocks.0.attn.qkv.weight")->value.dtype, EX_BF16);
    assert_int_equal(ex_params_find(&student, "head.weight")->value.dtype, EX_F32);
    assert_int_equal(ex_params_find(&student, "blocks.0.norm1.weight")->value.dtype, EX_F32);
    assert_int_equal(ex_params_set_frozen_dtype(&student, &be, EX_F16, NULL, NULL, &err), EX_E_INVALID);
    /* the teacher: the qkv alias becomes bf16; the head (trained by the student) keeps its own fp32 copy */
    int shared = 0;
    EXT_OK(ex_params_share_frozen(&teacher, &student, &shared, NULL, &err), &err);
    assert_int_equal(shared, 3);
    assert_int_equal(ex_params_find(&teacher, "blocks.0.attn.qkv.weight")->value.dtype, EX_BF16);
    assert_int_equal(ex_params_find(&teacher, "head.weight")->value.dtype, EX_F32);

    ex_memory_plan ps, pt;
    ex_memory_plan_init(&ps, &be);
    ex_memory_plan_init(&pt, &be);
    EXT_OK(ex_params_plan(&student, &ps, &err), &err);
    EXT_OK(ex_params_plan(&teacher, &pt, &err), &err);
    assert_int_equal(ex_tensor_nbytes(&ex_params_find(&student, "blocks.0.attn.qkv.weight")->value), 24);
    EXT_OK(ex_memory_plan_commit(&ps, &err), &err);
    EXT_OK(ex_memory_plan_commit(&pt, &err), &err);
    ex_params_bind(&student);
    ex_params_bind(&teacher);
    assert_int_equal(s_dt, EX_BF16);
    assert_int_equal(t_dt, EX_BF16);
    assert_int_equal(h_dt, EX_F32);
    assert_ptr_equal(t.qkv_w, s.qkv_w);

    /* round to nearest even on the way in, exact on the way out; offsets in elements */
    const ex_param *q = ex_params_find(&student, "blocks.0.attn.qkv.weight");
    const float in[4] = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f, -3.140625f, 0x1p-130f}; /* two ties (ulp 2^-7): to even 1 and 1 + 2^-6 */
    const float want[4] = {1.0f, 1.0f + 0x1p-6f, -3.140625f, 0x1p-130f};
    EXT_OK(ex_params_upload(&be, q, 8, in, 4, &err), &err);
    float out[4] = {0};
    EXT_OK(ex_params_download(&be, q, 8, out, 4, &err), &err);
    for (int i = 0; i < 4; i++) assert_true(out[i] == want[i]);
    const uint16_t *raw = (const uint16_t *)s.qkv_w; /* the cpu backend's memory is the host's */
    assert_int_equal(raw[8], 0x3F80);
    assert_int_equal(raw[9], 0x3F82); /* 1 + 2^-6: the even neighbour of the tie */
    assert_int_equal(ex_params_upload(&be, q, 10, in, 4, &err), EX_E_INTERNAL); /* past the end */

    /* a tensor that trains must stay fp32 */
    EXT_OK(ex_params_set_trainable(&teacher, "blocks.0.attn.qkv.weight", 1, NULL, &err), &err);
    ex_params_find(&teacher, "blocks.0.attn.qkv.weight")->alias = NULL;
    ex_memory_plan pa;
    ex_memory_plan_init(&pa, &be);
    assert_int_equal(ex_params_plan(&teacher, &pa, &err), EX_E_INVALID);
    assert_non_null(strstr(err.msg, "blocks.0.attn.qkv.weight"));
    assert_non_null(strstr(err.msg, "BF16"));

    ex_memory_plan_release(&pa);
    ex_memory_plan_release(&pt);
    ex_memory_plan_release(&ps);
    ex_params_free(&teacher);
    ex_params_free(&student);
    ext_backend_close(&be, reg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_and_trainable),
        cmocka_unit_test(test_plan_bind_and_load),
        cmocka_unit_test(test_share_frozen),
        cmocka_unit_test(test_frozen_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
