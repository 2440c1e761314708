/*
 * tests/test_core.c — small core modules: error records, dtypes and half
 * precision, tensor descriptors, arenas on the CPU backend, Philox streams,
 * atomic files and path helpers.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "explora/fileio.h"
#include "explora/tensor.h"
#include "test_support.h"

static ex_status fail_here(ex_err *err) { EX_FAIL(err, EX_E_CONFIG, "bad value %d", 42); }
static ex_status ensure_here(int v, ex_err *err) {
    EX_ENSURE(v > 0, err, EX_E_RANGE, "v=%d must be positive", v);
    return EX_OK;
}
static ex_status propagate(ex_err *err) {
    EX_CHECK(ensure_here(1, err));
    EX_CHECK(fail_here(err));
    return EX_OK;
}

static void test_errors(void **state) {
    (void)state;
    ex_err err;
    ex_err_clear(&err);
    assert_int_equal(propagate(&err), EX_E_CONFIG);
    assert_string_equal(err.msg, "bad value 42");
    assert_non_null(err.src_file);
    assert_true(err.src_line > 0);
    ex_err_prefix(&err, "while reading %s: ", "x.ini");
    assert_string_equal(err.msg, "while reading x.ini: bad value 42");
    ex_err_hint(&err, "use %d", 7);
    assert_string_equal(err.msg, "while reading x.ini: bad value 42 Hint: use 7");
    assert_int_equal(ensure_here(-3, NULL), EX_E_RANGE); /* NULL err is allowed */
    assert_string_equal(ex_status_name(EX_E_PLUGIN), "plugin");
    /* prefix on a full message truncates the tail, never overflows */
    memset(err.msg, 'x', sizeof err.msg - 1);
    err.msg[sizeof err.msg - 1] = '\0';
    ex_err_prefix(&err, "ctx: ");
    assert_int_equal(strlen(err.msg), sizeof err.msg - 1);
    assert_memory_equal(err.msg, "ctx: xxx", 8);
}

static void test_dtypes(void **state) {
    (void)state;
    assert_int_equal(ex_dtype_size(EX_F32), 4);
    assert_int_equal(ex_dtype_size(EX_BF16), 2);
    assert_int_equal(ex_dtype_size(EX_I64), 8);
    assert_int_equal(ex_dtype_size(EX_BOOL), 1);
    ex_dtype dt;
    for (int i = 0; i < EX_DTYPE_COUNT; i++) {
        assert_int_equal(ex_dtype_from_name(ex_dtype_name((ex_dtype)i), &dt), EX_OK);
        assert_int_equal(dt, i);
    }
    assert_int_equal(ex_dtype_from_name("F12", &dt), EX_E_FORMAT);
    assert_int_equal(ex_dtype_from_name("f32", &dt), EX_E_FORMAT); /* safetensors names are upper case */
}

static void test_half_conversions(void **state) {
    (void)state;
    assert_float_equal(ex_f16_to_f32(0x3C00), 1.0f, 0);
    assert_float_equal(ex_f16_to_f32(0xC000), -2.0f, 0);
    assert_float_equal(ex_f16_to_f32(0x7BFF), 65504.0f, 0);
    assert_float_equal(ex_f16_to_f32(0x0001), 5.9604644775390625e-08f, 0); /* smallest subnormal */
    assert_true(isinf(ex_f16_to_f32(0x7C00)));
    assert_true(isnan(ex_f16_to_f32(0x7E00)));
    assert_int_equal(ex_f32_to_f16(1.0f), 0x3C00);
    assert_int_equal(ex_f32_to_f16(65520.0f), 0x7C00); /* rounds up to inf */
    assert_int_equal(ex_f32_to_f16(65519.0f), 0x7BFF);
    assert_int_equal(ex_f32_to_f16(1.0f + 1.0f / 2048.0f), 0x3C00); /* tie -> even */
    assert_int_equal(ex_f32_to_f16(1.0f + 3.0f / 2048.0f), 0x3C02); /* tie -> even (up) */
    /* every finite f16 survives f16 -> f32 -> f16 exactly */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7C00u) == 0x7C00u) continue;
        uint16_t back = ex_f32_to_f16(ex_f16_to_f32((uint16_t)h));
        if (back != h) fail_msg("f16 0x%04x round-trips to 0x%04x", h, back);
    }
    assert_float_equal(ex_bf16_to_f32(0x3F80), 1.0f, 0);
    assert_int_equal(ex_f32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(ex_f32_to_bf16(1.00390625f), 0x3F80);  /* 1 + 2^-8: tie -> even */
    assert_int_equal(ex_f32_to_bf16(1.01171875f), 0x3F82);  /* 1 + 3*2^-8: tie -> even (up) */
    assert_int_equal(ex_f32_to_bf16(1.005f), 0x3F81);       /* above the tie: up */
    assert_true(isnan(ex_bf16_to_f32(ex_f32_to_bf16(NAN))));
    for (uint32_t b = 0; b < 65536; b++) {
        if ((b & 0x7F80u) == 0x7F80u) continue;
        if (ex_f32_to_bf16(ex_bf16_to_f32((uint16_t)b)) != b) fail_msg("bf16 0x%04x does not round-trip", b);
    }
}

static void test_tensor_descriptors(void **state) {
    (void)state;
    ex_tensor t;
    ex_err err;
    ex_err_clear(&err);
    int64_t shape[3] = {2, 3, 4};
    EXT_OK(ex_tensor_init(&t, "blocks.0.w", EX_F32, 3, shape, &err), &err);
    assert_int_equal(ex_tensor_numel(&t), 24);
    assert_int_equal(ex_tensor_nbytes(&t), 96);
    assert_int_equal(t.strides[0], 12);
    assert_int_equal(t.strides[1], 4);
    assert_int_equal(t.strides[2], 1);
    char buf[64];
    assert_string_equal(ex_shape_str(3, shape, buf, sizeof buf), "[2, 3, 4]");
    assert_string_equal(ex_shape_str(0, shape, buf, sizeof buf), "[]");
    EXT_OK(ex_tensor_init(&t, "scalar", EX_BF16, 0, NULL, &err), &err);
    assert_int_equal(ex_tensor_numel(&t), 1);
    int64_t bad[1] = {-1};
    assert_int_equal(ex_tensor_init(&t, "neg", EX_F32, 1, bad, &err), EX_E_SHAPE);
    assert_non_null(strstr(err.msg, "neg"));
    assert_int_equal(ex_tensor_init(&t, "deep", EX_F32, EX_MAX_DIMS + 1, shape, &err), EX_E_SHAPE);
}

static void test_arenas_on_cpu(void **state) {
    (void)state;
    ex_backend be;
    ex_registry *reg;
    ext_backend_open("cpu", NULL, &be, &reg);
    ex_err err;
    ex_err_clear(&err);
    ex_memory_plan plan;
    ex_memory_plan_init(&plan, &be);
    ex_tensor w, b, g;
    int64_t sw[2] = {3, 5}, sb[1] = {3};
    EXT_OK(ex_tensor_init(&w, "w", EX_F32, 2, sw, &err), &err);
    EXT_OK(ex_tensor_init(&b, "b", EX_F32, 1, sb, &err), &err);
    EXT_OK(ex_tensor_init(&g, "w.grad", EX_F32, 2, sw, &err), &err);
    EXT_OK(ex_arena_add(&plan.arenas[EX_MEM_TRAINABLE], &w, &err), &err);
    EXT_OK(ex_arena_add(&plan.arenas[EX_MEM_TRAINABLE], &b, &err), &err);
    EXT_OK(ex_arena_add(&plan.arenas[EX_MEM_GRAD], &g, &err), &err);
    assert_int_equal(w.offset, 0);
    assert_int_equal(b.offset, EX_ARENA_ALIGN); /* 60 bytes rounded up */
    assert_int_equal(plan.arenas[EX_MEM_TRAINABLE].planned, 2 * EX_ARENA_ALIGN);
    assert_int_equal(ex_memory_plan_total(&plan), 3 * EX_ARENA_ALIGN);
    assert_null(w.data);
    EXT_OK(ex_memory_plan_commit(&plan, &err), &err);
    assert_non_null(w.data);
    assert_int_equal((uintptr_t)w.data % EX_ARENA_ALIGN, 0);
    assert_ptr_equal((char *)b.data, (char *)w.data + EX_ARENA_ALIGN);
    assert_null(plan.arenas[EX_MEM_OPTIM].base); /* nothing planned, nothing allocated */
    for (int i = 0; i < 15; i++) assert_float_equal(((float *)w.data)[i], 0.0f, 0); /* zeroed */
    ex_tensor late;
    EXT_OK(ex_tensor_init(&late, "late", EX_F32, 1, sb, &err), &err);
    assert_int_equal(ex_arena_add(&plan.arenas[EX_MEM_TRAINABLE], &late, &err), EX_E_INVALID);
    char *text = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&text, &len);
    ex_memory_plan_print(&plan, mf);
    fclose(mf);
    assert_non_null(strstr(text, "trainable"));
    assert_non_null(strstr(text, "total"));
    free(text);
    ex_memory_plan_release(&plan);
    assert_null(w.data);
    ext_backend_close(&be, reg);
}

static void test_philox_known_answers(void **state) {
    (void)state;
    /* Known-answer vectors of Philox-4x32-10 (Random123 distribution, kat_vectors). */
    struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        ex_philox4x32_10(kat[i].ctr, kat[i].key, out);
        for (int j = 0; j < 4; j++)
            if (out[j] != kat[i].out[j]) fail_msg("KAT %d word %d: 0x%08x != 0x%08x", i, j, out[j], kat[i].out[j]);
    }
}

static void test_rng_streams(void **state) {
    (void)state;
    ex_rng a = ex_rng_seed(7, EX_RNG_MASK), b = ex_rng_seed(7, EX_RNG_MASK), c = ex_rng_seed(7, EX_RNG_AUGMENT);
    assert_int_equal(a.key, b.key);
    assert_true(a.key != c.key);
    double sum = 0, sumsq = 0;
    int counts[10] = {0};
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        float u = ex_rng_next_uniform(&a);
        assert_true(u >= 0.0f && u < 1.0f);
        sum += u;
        sumsq += (double)u * u;
        counts[ex_rng_next_below(&b, 10)]++;
    }
    assert_int_equal(a.offset, (uint64_t)n);
    double mean = sum / n, var = sumsq / n - mean * mean;
    assert_true(fabs(mean - 0.5) < 0.005);
    assert_true(fabs(var - 1.0 / 12.0) < 0.002);
    for (int k = 0; k < 10; k++) assert_true(abs(counts[k] - n / 10) < 800); /* ~4.5 sigma */
    /* position-addressable: the i-th value does not depend on how the draw is split */
    ex_rng d = ex_rng_seed(7, EX_RNG_MASK);
    d.offset = 1234;
    assert_float_equal(ex_rng_next_uniform(&d), ex_rng_uniform_at(d.key, 1000, 234), 0);
    double ns = 0, nss = 0;
    for (int i = 0; i < n; i++) {
        float z = ex_rng_normal_at(c.key, 0, (uint64_t)i);
        ns += z;
        nss += (double)z * z;
    }
    assert_true(fabs(ns / n) < 0.01);
    assert_true(fabs(nss / n - 1.0) < 0.015);
}

static void test_atomic_file(void **state) {
    (void)state;
    char path[4096];
    ext_tmp_path(path, sizeof path, "atomic.txt");
    ext_write_file(path, "old", 3);
    ex_err err;
    ex_err_clear(&err);
    ex_atomic_file af;
    EXT_OK(ex_atomic_open(&af, path, &err), &err);
    fputs("half-written", af.fp);
    fflush(af.fp);
    char *data;
    size_t size;
    EXT_OK(ex_read_file(path, &data, &size, &err), &err); /* before commit the old file is intact */
    assert_string_equal(data, "old");
    free(data);
    ex_atomic_abort(&af);
    assert_int_equal(access(af.tmp_path, F_OK), -1); /* temporary removed */
    EXT_OK(ex_read_file(path, &data, &size, &err), &err);
    assert_string_equal(data, "old");
    free(data);
    EXT_OK(ex_atomic_open(&af, path, &err), &err);
    fputs("new contents", af.fp);
    EXT_OK(ex_atomic_commit(&af, &err), &err);
    EXT_OK(ex_read_file(path, &data, &size, &err), &err);
    assert_string_equal(data, "new contents");
    assert_int_equal(size, 12);
    free(data);
    assert_int_equal(ex_atomic_open(&af, "/nonexistent/dir/x", &err), EX_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/x"));
    assert_int_equal(ex_read_file("/nonexistent/file", &data, &size, &err), EX_E_IO);
    unlink(path);
}

static void test_paths(void **state) {
    (void)state;
    char out[64];
    ex_path_dirname("a/b/c.ini", out, sizeof out);
    assert_string_equal(out, "a/b");
    ex_path_dirname("c.ini", out, sizeof out);
    assert_string_equal(out, ".");
    ex_path_dirname("/c.ini", out, sizeof out);
    assert_string_equal(out, "/");
    ex_err err;
    EXT_OK(ex_path_join("a/b", "x.ini", out, sizeof out, &err), &err);
    assert_string_equal(out, "a/b/x.ini");
    EXT_OK(ex_path_join("a/b", "/abs.ini", out, sizeof out, &err), &err);
    assert_string_equal(out, "/abs.ini");
    char tiny[8];
    assert_int_equal(ex_path_join("abcdef", "ghijk", tiny, sizeof tiny, &err), EX_E_RANGE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),         cmocka_unit_test(test_dtypes),
        cmocka_unit_test(test_half_conversions), cmocka_unit_test(test_tensor_descriptors),
        cmocka_unit_test(test_arenas_on_cpu),  cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_rng_streams),    cmocka_unit_test(test_atomic_file),
        cmocka_unit_test(test_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
