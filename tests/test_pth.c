/*
 * tests/test_pth.c — the PyTorch .pth reader (core/src/pth.c, pth_zip.c, pth_pickle.c).
 *
 * Covers:
 *   - the torch.save fixtures of tests/fixtures/pth (made by tests/fixtures/make_pth_fixtures.py with
 *     torch 1.13): every listed tensor against <name>.safetensors (same names in the same order, shapes,
 *     dtypes, storage keys/offsets/strides from the metadata, fp32 values bit-exact), plus hand-checked
 *     numbers: all ten storage dtypes, 0-dim and zero-size tensors, views sharing a storage (transpose,
 *     row slice with offset, column, expand with stride 0, 3-D permute in fp16, a strided slice saved
 *     without its base), nested names ({"model": ..}, {"teacher": ..}, optimizer state with int keys,
 *     nn.Parameter), non-tensor entries skipped (ints, floats, strings, None, Namespace, lists, tuples,
 *     bool keys), an nn.Module state_dict with _metadata;
 *   - files built here with a small zip + pickle writer: no ZIP64 records and no alignment, protocol-4
 *     opcodes (FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE), _rebuild_parameter, defaultdict-like
 *     objects;
 *   - hostile input, each EX_E_FORMAT naming the file (EX_E_IO for a missing file, EX_E_UNSUPPORTED for
 *     an unknown storage class or a big-endian file): empty, not a zip, truncated central directory,
 *     member beyond EOF, compressed member, missing data.pkl, missing data/<key>, unknown opcode,
 *     truncated pickle, stack underflow, unset memo index, strides past the storage, huge shapes,
 *     cycles, a non-dict top level, duplicate names, wrong storage sizes;
 *   - a mutation loop (every truncation length and thousands of deterministic byte flips in the
 *     pickle, the local headers and the directory) where open must return OK or an error and any
 *     opened file must read back without faults (run it under the Debug build's ASan + UBSan).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "explora/pth.h"
#include "explora/safetensors.h"
#include "test_support.h"

/* --- helpers ----------------------------------------------------------------------------------- */

static void fixture_path(char *out, size_t cap, const char *fname) {
    snprintf(out, cap, "%s/../fixtures/pth/%s", ext_env("EXPLORA_TEST_DATA_DIR"), fname);
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void assert_msg_has(const ex_err *err, const char *word) {
    if (!strstr(err->msg, word)) fail_msg("message lacks '%s': %s", word, err->msg);
}

/* Open must fail with `code`; the message names the file and contains `word`. */
static void expect_open_fails(const char *path, ex_status code, const char *word) {
    ex_err err;
    ex_err_clear(&err);
    ex_pth_file *f = (ex_pth_file *)(uintptr_t)1;
    ex_status st = ex_pth_open(&f, path, &err);
    if (st != code)
        fail_msg("%s: expected status %d (%s), got %d: %s", path, (int)code, ex_status_name(code), (int)st, err.msg);
    assert_null(f);
    assert_msg_has(&err, path);
    if (word) assert_msg_has(&err, word);
}

static ex_pth_file *open_ok(const char *path) {
    ex_err err;
    ex_err_clear(&err);
    ex_pth_file *f = NULL;
    EXT_OK(ex_pth_open(&f, path, &err), &err);
    assert_non_null(f);
    return f;
}

static ex_pth_file *open_fixture(const char *fname) {
    char path[1024];
    fixture_path(path, sizeof path, fname);
    return open_ok(path);
}

static int64_t numel_of(const ex_st_entry *e) {
    int64_t n = 1;
    for (int d = 0; d < e->ndim; d++) n *= e->shape[d];
    return n;
}

/* Read a tensor to a malloc'ed fp32 buffer (at least one element long). */
static float *read_all(const ex_pth_file *f, const char *name, int64_t *n) {
    const ex_st_entry *e = ex_pth_find(f, name);
    if (!e) fail_msg("%s: no tensor '%s'", ex_pth_path(f), name);
    *n = numel_of(e);
    float *v = malloc((size_t)(*n ? *n : 1) * sizeof *v);
    assert_non_null(v);
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_pth_read_f32(f, e, v, *n, &err), &err);
    return v;
}

static void assert_entry(const ex_pth_file *f, const char *name, ex_dtype dt, int ndim, const int64_t *shape) {
    const ex_st_entry *e = ex_pth_find(f, name);
    if (!e) fail_msg("%s: no tensor '%s'", ex_pth_path(f), name);
    assert_string_equal(e->name, name);
    if (e->dtype != dt) fail_msg("%s: dtype %s, expected %s", name, ex_dtype_name(e->dtype), ex_dtype_name(dt));
    assert_int_equal(e->ndim, ndim);
    for (int d = 0; d < ndim; d++) assert_int_equal(e->shape[d], shape[d]);
}

static void assert_layout(const ex_pth_file *f, const char *name, int64_t offset, const int64_t *strides,
                          const char *key, int64_t storage_numel) {
    const ex_st_entry *e = ex_pth_find(f, name);
    assert_non_null(e);
    int64_t off = -1, st[EX_MAX_DIMS], sn = -1;
    const char *k = NULL;
    ex_err err;
    EXT_OK(ex_pth_layout(f, e, &off, st, &k, &sn, &err), &err);
    assert_int_equal(off, offset);
    for (int d = 0; d < e->ndim; d++) assert_int_equal(st[d], strides[d]);
    if (key) assert_string_equal(k, key);
    assert_int_equal(sn, storage_numel);
}

static void assert_values(const ex_pth_file *f, const char *name, const float *want, int64_t n) {
    int64_t got_n;
    float *got = read_all(f, name, &got_n);
    assert_int_equal(got_n, n);
    for (int64_t i = 0; i < n; i++)
        if (!(got[i] == want[i] || (isnan(got[i]) && isnan(want[i]))))
            fail_msg("%s[%" PRId64 "] = %.9g, expected %.9g", name, i, (double)got[i], (double)want[i]);
    free(got);
}

/* --- the torch.save fixtures against their expected safetensors ------------------------------------ */

static void parse_strides(const char *text, int64_t *out, int *n) {
    *n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        out[(*n)++] = strtoll(p, &end, 10);
        p = *end == ',' ? end + 1 : end;
    }
}

static void check_against_expected(const char *stem) {
    char pth_name[256], st_name[256], st_path[1024];
    snprintf(pth_name, sizeof pth_name, "%s.pth", stem);
    snprintf(st_name, sizeof st_name, "%s.safetensors", stem);
    fixture_path(st_path, sizeof st_path, st_name);
    ex_pth_file *f = open_fixture(pth_name);
    ex_st_file *x = NULL;
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_st_open(&x, st_path, &err), &err);

    assert_int_equal(ex_pth_count(f), ex_st_count(x));
    for (int i = 0; i < ex_st_count(x); i++) {
        const ex_st_entry *want = ex_st_at(x, i), *got = ex_pth_at(f, i);
        assert_non_null(got);
        assert_string_equal(got->name, want->name); /* same order: pickle order */
        assert_ptr_equal(ex_pth_find(f, want->name), got);
        assert_int_equal(got->ndim, want->ndim);
        for (int d = 0; d < got->ndim; d++) assert_int_equal(got->shape[d], want->shape[d]);

        char key[EX_NAME_MAX + 16];
        snprintf(key, sizeof key, "dtype.%s", want->name);
        const char *dt = ex_st_metadata(x, key);
        assert_non_null(dt);
        if (strcmp(ex_dtype_name(got->dtype), dt) != 0)
            fail_msg("%s: %s: dtype %s, expected %s", stem, got->name, ex_dtype_name(got->dtype), dt);

        int64_t off, strides[EX_MAX_DIMS], want_strides[EX_MAX_DIMS], sn;
        int nstr;
        const char *skey;
        EXT_OK(ex_pth_layout(f, got, &off, strides, &skey, &sn, &err), &err);
        snprintf(key, sizeof key, "offset.%s", want->name);
        assert_int_equal(off, strtoll(ex_st_metadata(x, key), NULL, 10));
        snprintf(key, sizeof key, "key.%s", want->name);
        assert_string_equal(skey, ex_st_metadata(x, key));
        snprintf(key, sizeof key, "stride.%s", want->name);
        parse_strides(ex_st_metadata(x, key), want_strides, &nstr);
        assert_int_equal(nstr, got->ndim);
        for (int d = 0; d < nstr; d++) assert_int_equal(strides[d], want_strides[d]);
        assert_true(got->begin <= got->end);
        assert_int_equal(got->end - got->begin, (uint64_t)sn * ex_dtype_size(got->dtype));

        int64_t n = numel_of(want);
        float *a = malloc((size_t)(n ? n : 1) * sizeof *a), *b = malloc((size_t)(n ? n : 1) * sizeof *b);
        assert_non_null(a);
        assert_non_null(b);
        EXT_OK(ex_st_read_f32(x, want, a, n, &err), &err);
        EXT_OK(ex_pth_read_f32(f, got, b, n, &err), &err);
        for (int64_t j = 0; j < n; j++)
            if (memcmp(&a[j], &b[j], sizeof(float)) != 0)
                fail_msg("%s: %s[%" PRId64 "] = %.9g, expected %.9g", stem, got->name, j, (double)b[j], (double)a[j]);
        free(a);
        free(b);
    }
    ex_st_close(x);
    ex_pth_close(f);
}

static void test_fixtures_match_expected(void **state) {
    (void)state;
    const char *stems[] = {"plain", "mae_train", "dino_teacher", "views", "module"};
    for (size_t i = 0; i < sizeof stems / sizeof stems[0]; i++) check_against_expected(stems[i]);
}

/* --- hand-checked numbers ---------------------------------------------------------------------------- */

static void test_plain_dtypes(void **state) {
    (void)state;
    ex_pth_file *f = open_fixture("plain.pth");
    assert_int_equal(ex_pth_count(f), 12);
    const char *order[] = {"w_f32", "h_f16", "b_bf16", "i_i64", "scalar", "empty",
                           "d_f64", "i_i32", "i_i16",  "i_i8",  "u_u8",   "flag"};
    for (int i = 0; i < 12; i++) assert_string_equal(ex_pth_at(f, i)->name, order[i]);
    assert_null(ex_pth_at(f, 12));
    assert_null(ex_pth_at(f, -1));
    assert_null(ex_pth_find(f, "nope"));
    assert_string_equal(strrchr(ex_pth_path(f), '/'), "/plain.pth");

    int64_t s34[] = {3, 4}, s5[] = {5}, s23[] = {2, 3}, s4[] = {4}, s03[] = {0, 3}, s2[] = {2}, s3[] = {3};
    assert_entry(f, "w_f32", EX_F32, 2, s34);
    assert_entry(f, "h_f16", EX_F16, 1, s5);
    assert_entry(f, "b_bf16", EX_BF16, 2, s23);
    assert_entry(f, "i_i64", EX_I64, 1, s4);
    assert_entry(f, "scalar", EX_F32, 0, NULL);
    assert_entry(f, "empty", EX_F32, 2, s03);
    assert_entry(f, "d_f64", EX_F64, 1, s2);
    assert_entry(f, "i_i32", EX_I32, 1, s3);
    assert_entry(f, "i_i16", EX_I16, 1, s2);
    assert_entry(f, "i_i8", EX_I8, 1, s3);
    assert_entry(f, "u_u8", EX_U8, 1, s3);
    assert_entry(f, "flag", EX_BOOL, 1, s3);

    float w[12];
    for (int i = 0; i < 12; i++) w[i] = -1.0f + 0.25f * (float)i;
    assert_values(f, "w_f32", w, 12);
    int64_t n;
    float *h = read_all(f, "h_f16", &n);
    assert_true(h[0] == 0.5f && h[1] == -2.0f && h[2] == 65504.0f && h[4] == 3.140625f);
    assert_true(h[3] == ldexpf(1.0f, -23)); /* 1e-7 rounds to the f16 subnormal 2^-23 */
    free(h);
    float *b = read_all(f, "b_bf16", &n);
    assert_true(b[0] == 1.0f && b[1] == -1.5f && b[4] == 0.0078125f && b[5] == -256.0f);
    assert_true(b[2] > 2.9e38f && b[2] < 3.1e38f);
    free(b);
    const float i64[] = {-3, 0, 7, 1099511627776.0f}, sc[] = {2.5f}, i32[] = {-70000, 5, 2147483648.0f},
                i16[] = {-32768, 1234}, i8[] = {-128, 0, 127}, u8[] = {0, 200, 255}, fl[] = {1, 0, 1};
    assert_values(f, "i_i64", i64, 4);
    assert_values(f, "scalar", sc, 1);
    assert_values(f, "i_i32", i32, 3);
    assert_values(f, "i_i16", i16, 2);
    assert_values(f, "i_i8", i8, 3);
    assert_values(f, "u_u8", u8, 3);
    assert_values(f, "flag", fl, 3);
    float *d = read_all(f, "d_f64", &n);
    assert_true(d[0] == (float)0.1 && isinf(d[1]) && d[1] < 0);
    free(d);

    /* zero-size: reads nothing; wrong element counts and foreign entries are refused */
    ex_err err;
    const ex_st_entry *e = ex_pth_find(f, "empty");
    EXT_OK(ex_pth_read_f32(f, e, NULL, 0, &err), &err);
    float buf[16];
    assert_int_equal(ex_pth_read_f32(f, ex_pth_find(f, "w_f32"), buf, 11, &err), EX_E_SHAPE);
    assert_msg_has(&err, "w_f32");
    ex_st_entry copy = *ex_pth_find(f, "w_f32");
    assert_int_equal(ex_pth_read_f32(f, &copy, buf, 12, &err), EX_E_INVALID);
    assert_int_equal(ex_pth_layout(f, &copy, NULL, NULL, NULL, NULL, &err), EX_E_INVALID);
    assert_int_equal(ex_pth_read_f32(NULL, e, buf, 0, &err), EX_E_INVALID);
    ex_pth_close(f);
    ex_pth_close(NULL);
    assert_int_equal(ex_pth_count(NULL), 0);
}

static void test_views_share_storage(void **state) {
    (void)state;
    ex_pth_file *f = open_fixture("views.pth");
    assert_int_equal(ex_pth_count(f), 7);
    const char *key = NULL;
    ex_err err;
    EXT_OK(ex_pth_layout(f, ex_pth_find(f, "base"), NULL, NULL, &key, NULL, &err), &err);
    char base_key[64];
    snprintf(base_key, sizeof base_key, "%s", key);

    int64_t s46[] = {4, 6}, s64[] = {6, 4}, s26[] = {2, 6}, s4[] = {4}, s34[] = {3, 4}, s423[] = {4, 2, 3},
            s44[] = {4, 4};
    int64_t st61[] = {6, 1}, st16[] = {1, 6}, st6[] = {6}, st01[] = {0, 1}, st1124[] = {1, 12, 4}, st82[] = {8, 2};
    assert_entry(f, "base", EX_F32, 2, s46);
    assert_layout(f, "base", 0, st61, base_key, 24);
    assert_entry(f, "transposed", EX_F32, 2, s64);
    assert_layout(f, "transposed", 0, st16, base_key, 24);
    assert_entry(f, "rows", EX_F32, 2, s26);
    assert_layout(f, "rows", 6, st61, base_key, 24);
    assert_entry(f, "column", EX_F32, 1, s4);
    assert_layout(f, "column", 2, st6, base_key, 24);
    assert_entry(f, "expanded", EX_F32, 2, s34);
    assert_layout(f, "expanded", 0, st01, NULL, 4);
    assert_entry(f, "permuted", EX_F16, 3, s423);
    assert_layout(f, "permuted", 0, st1124, NULL, 24);
    assert_entry(f, "strided", EX_F32, 2, s44);
    assert_layout(f, "strided", 8, st82, NULL, 40); /* the whole 5x8 storage was saved */
    /* views of one storage report the same byte range */
    assert_int_equal(ex_pth_find(f, "rows")->begin, ex_pth_find(f, "base")->begin);
    assert_int_equal(ex_pth_find(f, "rows")->end, ex_pth_find(f, "base")->end);
    assert_true(ex_pth_find(f, "strided")->begin != ex_pth_find(f, "base")->begin);

    float want[24];
    for (int i = 0; i < 24; i++) want[i] = (float)i;
    assert_values(f, "base", want, 24);
    for (int r = 0; r < 6; r++)
        for (int c = 0; c < 4; c++) want[r * 4 + c] = (float)(c * 6 + r);
    assert_values(f, "transposed", want, 24);
    for (int i = 0; i < 12; i++) want[i] = (float)(6 + i);
    assert_values(f, "rows", want, 12);
    for (int i = 0; i < 4; i++) want[i] = (float)(i * 6 + 2);
    assert_values(f, "column", want, 4);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) want[r * 4 + c] = (float)(c + 1);
    assert_values(f, "expanded", want, 12);
    for (int a = 0; a < 4; a++) /* cube [2,3,4] = arange(24), permute(2,0,1): out[a][b][c] = cube[b][c][a] */
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 3; c++) want[(a * 2 + b) * 3 + c] = (float)(b * 12 + c * 4 + a);
    assert_values(f, "permuted", want, 24);
    for (int r = 0; r < 4; r++) /* -arange(40).reshape(5,8)[1:, ::2] */
        for (int c = 0; c < 4; c++) want[r * 4 + c] = -(float)((r + 1) * 8 + 2 * c);
    assert_values(f, "strided", want, 16);
    ex_pth_close(f);
}

static void test_nested_names(void **state) {
    (void)state;
    ex_pth_file *f = open_fixture("mae_train.pth");
    const char *names[] = {"model.cls_token",
                           "model.pos_embed",
                           "model.patch_embed.proj.weight",
                           "model.blocks.0.norm1.weight",
                           "model.blocks.0.attn.qkv.weight",
                           "model.blocks.0.attn.qkv.bias",
                           "optimizer.state.0.exp_avg",
                           "optimizer.state.0.exp_avg_sq"};
    assert_int_equal(ex_pth_count(f), 8); /* epoch, args, scaler, history (list), best (tuple) ... skipped */
    for (int i = 0; i < 8; i++) assert_string_equal(ex_pth_at(f, i)->name, names[i]);
    const char *absent[] = {"epoch", "args", "history", "history.0", "best", "best.0", "note", "big",
                            "none", "scaler.scale", "optimizer.param_groups", "True", "1"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) assert_null(ex_pth_find(f, absent[i]));
    int64_t s118[] = {1, 1, 8}, s248[] = {24, 8};
    assert_entry(f, "model.cls_token", EX_F32, 3, s118);
    assert_entry(f, "model.blocks.0.attn.qkv.weight", EX_F32, 2, s248);
    float half[8], quarter[8];
    for (int i = 0; i < 8; i++) half[i] = 0.5f, quarter[i] = 0.25f;
    assert_values(f, "optimizer.state.0.exp_avg", half, 8);
    assert_values(f, "optimizer.state.0.exp_avg_sq", quarter, 8);
    ex_pth_close(f);

    f = open_fixture("dino_teacher.pth");
    assert_int_equal(ex_pth_count(f), 9);
    assert_string_equal(ex_pth_at(f, 0)->name, "teacher.backbone.cls_token");
    assert_entry(f, "teacher.backbone.blocks.0.attn.qkv.bias", EX_F32, 1, (int64_t[]){24});
    assert_entry(f, "teacher.dino_head.last_layer.weight_g", EX_F32, 2, (int64_t[]){16, 1});
    assert_entry(f, "student.backbone.cls_token", EX_F32, 3, s118); /* an nn.Parameter */
    assert_entry(f, "student.backbone.blocks.0.norm1.weight", EX_F16, 1, (int64_t[]){8});
    float q[8];
    for (int i = 0; i < 8; i++) q[i] = 0.75f;
    assert_values(f, "student.backbone.blocks.0.norm1.weight", q, 8);
    assert_null(ex_pth_find(f, "iteration"));
    ex_pth_close(f);

    f = open_fixture("module.pth");
    assert_int_equal(ex_pth_count(f), 11);
    assert_entry(f, "0.weight", EX_F32, 4, (int64_t[]){4, 3, 2, 2});
    assert_entry(f, "1.num_batches_tracked", EX_I64, 0, NULL);
    assert_values(f, "1.num_batches_tracked", (float[]){42.0f}, 1);
    assert_values(f, "1.running_mean", (float[]){0.1f, 0.2f, 0.3f, 0.4f}, 4);
    assert_entry(f, "4.weight", EX_F32, 2, (int64_t[]){5, 16});
    assert_null(ex_pth_find(f, "_metadata"));
    ex_pth_close(f);
}

/* --- a small zip + pickle writer for crafted files ------------------------------------------------------ */

typedef struct bbuf {
    unsigned char *p;
    size_t n, cap;
} bbuf;

static void put(bbuf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_le(bbuf *b, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) {
        unsigned char c = (unsigned char)(v >> (8 * i));
        put(b, &c, 1);
    }
}

static void put_u8(bbuf *b, unsigned v) { put_le(b, v, 1); }

typedef struct zmember {
    const char *name;
    const void *data;
    size_t len;
} zmember;

/* Stored members; torch_like = data 64-byte aligned via an "FB" extra field plus ZIP64 end records. */
static bbuf build_zip(const zmember *m, int n, int torch_like) {
    bbuf z = {0}, cd = {0};
    for (int i = 0; i < n; i++) {
        size_t off = z.n, nlen = strlen(m[i].name), xlen = 0;
        if (torch_like) {
            xlen = 4;
            while ((off + 30 + nlen + xlen) % 64) xlen++;
        }
        put_le(&z, 0x04034b50u, 4);
        put_le(&z, 20, 2), put_le(&z, 0, 2), put_le(&z, 0, 2), put_le(&z, 0, 4), put_le(&z, 0, 4);
        put_le(&z, m[i].len, 4), put_le(&z, m[i].len, 4), put_le(&z, nlen, 2), put_le(&z, xlen, 2);
        put(&z, m[i].name, nlen);
        if (xlen) {
            put(&z, "FB", 2);
            put_le(&z, xlen - 4, 2);
            for (size_t k = 4; k < xlen; k++) put_u8(&z, 'Z');
        }
        put(&z, m[i].data, m[i].len);
        put_le(&cd, 0x02014b50u, 4);
        put_le(&cd, 20, 2), put_le(&cd, 20, 2), put_le(&cd, 0, 2), put_le(&cd, 0, 2), put_le(&cd, 0, 4);
        put_le(&cd, 0, 4), put_le(&cd, m[i].len, 4), put_le(&cd, m[i].len, 4), put_le(&cd, nlen, 2);
        put_le(&cd, 0, 2), put_le(&cd, 0, 2), put_le(&cd, 0, 2), put_le(&cd, 0, 2), put_le(&cd, 0, 4);
        put_le(&cd, off, 4);
        put(&cd, m[i].name, nlen);
    }
    size_t cd_off = z.n;
    put(&z, cd.p, cd.n);
    if (torch_like) {
        size_t rec = z.n;
        put_le(&z, 0x06064b50u, 4), put_le(&z, 44, 8), put_le(&z, 45, 2), put_le(&z, 45, 2);
        put_le(&z, 0, 4), put_le(&z, 0, 4), put_le(&z, (uint64_t)n, 8), put_le(&z, (uint64_t)n, 8);
        put_le(&z, cd.n, 8), put_le(&z, cd_off, 8);
        put_le(&z, 0x07064b50u, 4), put_le(&z, 0, 4), put_le(&z, rec, 8), put_le(&z, 1, 4);
    }
    put_le(&z, 0x06054b50u, 4), put_le(&z, 0, 2), put_le(&z, 0, 2), put_le(&z, (uint64_t)n, 2);
    put_le(&z, (uint64_t)n, 2), put_le(&z, cd.n, 4), put_le(&z, cd_off, 4), put_le(&z, 0, 2);
    free(cd.p);
    return z;
}

/* pickle pieces */
static void pk_ustr(bbuf *b, const char *s) {
    put_u8(b, 'X');
    put_le(b, strlen(s), 4);
    put(b, s, strlen(s));
}

static void pk_int(bbuf *b, int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
        put_u8(b, 'J');
        put_le(b, (uint64_t)v, 4);
    } else {
        put_u8(b, 0x8a), put_u8(b, 8);
        put_le(b, (uint64_t)v, 8);
    }
}

static void pk_global(bbuf *b, const char *module, const char *name) {
    put_u8(b, 'c');
    put(b, module, strlen(module)), put_u8(b, '\n');
    put(b, name, strlen(name)), put_u8(b, '\n');
}

static void pk_int_tuple(bbuf *b, int n, const int64_t *v) {
    put_u8(b, '(');
    for (int i = 0; i < n; i++) pk_int(b, v[i]);
    put_u8(b, 't');
}

/* _rebuild_tensor_v2(('storage', torch.<cls>, key, 'cpu', numel), offset, size, stride, False, OrderedDict()) */
static void pk_tensor(bbuf *b, const char *cls, const char *key, int64_t numel, int64_t offset, int nd,
                      const int64_t *size, const int64_t *stride) {
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    put_u8(b, '(');
    put_u8(b, '(');
    pk_ustr(b, "storage");
    pk_global(b, "torch", cls);
    pk_ustr(b, key);
    pk_ustr(b, "cpu");
    pk_int(b, numel);
    put_u8(b, 't');
    put_u8(b, 'Q');
    pk_int(b, offset);
    pk_int_tuple(b, nd, size);
    pk_int_tuple(b, nd, stride);
    put_u8(b, 0x89);
    pk_global(b, "collections", "OrderedDict");
    put_u8(b, ')');
    put_u8(b, 'R');
    put_u8(b, 't');
    put_u8(b, 'R');
}

/* "archive/data.pkl" + one "archive/data/<key>" per storage + "archive/version". */
static void write_archive(const char *path, const bbuf *pickle, int nstorages, const char *const *keys,
                          const void *const *data, const size_t *lens, int torch_like) {
    zmember m[8];
    char names[8][64];
    int n = 0;
    m[n++] = (zmember){"archive/data.pkl", pickle->p, pickle->n};
    for (int i = 0; i < nstorages; i++) {
        snprintf(names[i], sizeof names[i], "archive/data/%s", keys[i]);
        m[n++] = (zmember){names[i], data[i], lens[i]};
    }
    m[n++] = (zmember){"archive/version", "3\n", 2};
    bbuf z = build_zip(m, n, torch_like);
    ext_write_file(path, z.p, z.n);
    free(z.p);
}

/* {"w": tensor over a float storage "0" of `numel` elements 0, 1, 2, ...}. */
static void write_one_tensor(const char *path, const char *cls, int64_t numel, int64_t storage_bytes, int64_t offset,
                             int nd, const int64_t *size, const int64_t *stride) {
    bbuf p = {0};
    put_u8(&p, 0x80), put_u8(&p, 2);
    put_u8(&p, '}');
    pk_ustr(&p, "w");
    pk_tensor(&p, cls, "0", numel, offset, nd, size, stride);
    put_u8(&p, 's');
    put_u8(&p, '.');
    float *vals = calloc((size_t)storage_bytes / 4 + 1, sizeof *vals);
    assert_non_null(vals);
    for (int64_t i = 0; i < storage_bytes / 4; i++) vals[i] = (float)i;
    const char *keys[] = {"0"};
    const void *data[] = {vals};
    size_t lens[] = {(size_t)storage_bytes};
    write_archive(path, &p, 1, keys, data, lens, 1);
    free(vals);
    free(p.p);
}

static void write_pickle_only(const char *path, const unsigned char *pk, size_t len) {
    bbuf p = {0};
    put(&p, pk, len);
    write_archive(path, &p, 0, NULL, NULL, NULL, 1);
    free(p.p);
}

static void tmp(char *out, size_t cap, const char *fname) { ext_tmp_path(out, cap, fname); }

/* --- crafted valid files ---------------------------------------------------------------------------------- */

static void test_crafted_files(void **state) {
    (void)state;
    char path[1024];
    int64_t size[] = {2, 3}, stride[] = {1, 2};

    /* plain zip (no ZIP64, no alignment), a transposed view */
    tmp(path, sizeof path, "crafted-plain.pth");
    bbuf p = {0};
    put_u8(&p, 0x80), put_u8(&p, 2), put_u8(&p, '}');
    pk_ustr(&p, "t");
    pk_tensor(&p, "FloatStorage", "7", 6, 0, 2, size, stride);
    put_u8(&p, 's'), put_u8(&p, '.');
    float vals[6] = {0, 1, 2, 3, 4, 5};
    const char *keys[] = {"7"};
    const void *data[] = {vals};
    size_t lens[] = {sizeof vals};
    write_archive(path, &p, 1, keys, data, lens, 0);
    free(p.p);
    ex_pth_file *f = open_ok(path);
    assert_int_equal(ex_pth_count(f), 1);
    assert_values(f, "t", (float[]){0, 2, 4, 1, 3, 5}, 6);
    ex_pth_close(f);
    unlink(path);

    /* protocol 4: FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE, BINGET of a memoized global, a nested dict
     * built by DICT, a defaultdict-like object filled by SETITEMS, an nn.Parameter, lists and sets skipped */
    tmp(path, sizeof path, "crafted-proto4.pth");
    p = (bbuf){0};
    put_u8(&p, 0x80), put_u8(&p, 4);
    put_u8(&p, 0x95), put_le(&p, 0, 8);                               /* FRAME (length ignored) */
    put_u8(&p, '}'), put_u8(&p, 0x94);                                /* root, memo 0 */
    put_u8(&p, '(');                                                  /* MARK for SETITEMS */
    put_u8(&p, 0x8c), put_u8(&p, 1), put(&p, "a", 1);                 /* key "a" */
    put_u8(&p, 0x8c), put_u8(&p, 12), put(&p, "torch._utils", 12);    /* STACK_GLOBAL module */
    put_u8(&p, 0x8c), put_u8(&p, 18), put(&p, "_rebuild_tensor_v2", 18);
    put_u8(&p, 0x93), put_u8(&p, 0x94);                               /* memo 1 = the global */
    put_u8(&p, '('), put_u8(&p, '(');
    put_u8(&p, 0x8c), put_u8(&p, 7), put(&p, "storage", 7);
    pk_global(&p, "torch", "FloatStorage");
    put_u8(&p, 0x8c), put_u8(&p, 1), put(&p, "0", 1);
    put_u8(&p, 0x8c), put_u8(&p, 6), put(&p, "cuda:0", 6);
    put_u8(&p, 'K'), put_u8(&p, 6);
    put_u8(&p, 't'), put_u8(&p, 'Q'), put_u8(&p, 0x94);               /* memo 2 = the storage */
    put_u8(&p, 'K'), put_u8(&p, 3);                                   /* offset 3 */
    put_u8(&p, 'K'), put_u8(&p, 3), put_u8(&p, 0x85);                 /* size (3,) TUPLE1 */
    put_u8(&p, 'K'), put_u8(&p, 1), put_u8(&p, 0x85);                 /* stride (1,) */
    put_u8(&p, 0x89), put_u8(&p, 'N'), put_u8(&p, 't'), put_u8(&p, 'R');
    put_u8(&p, 0x8c), put_u8(&p, 3), put(&p, "sub", 3);               /* key "sub": DICT of {7: param} */
    put_u8(&p, '(');
    put_u8(&p, 'K'), put_u8(&p, 7);
    pk_global(&p, "torch._utils", "_rebuild_parameter");
    put_u8(&p, 'h'), put_u8(&p, 1), put_u8(&p, '(');                  /* BINGET the memoized global */
    put_u8(&p, 'h'), put_u8(&p, 2);                                   /* same storage, offset 0 */
    put_u8(&p, 'K'), put_u8(&p, 0);
    put_u8(&p, 'K'), put_u8(&p, 2), put_u8(&p, 'K'), put_u8(&p, 2), put_u8(&p, 0x86);
    put_u8(&p, 'K'), put_u8(&p, 1), put_u8(&p, 'K'), put_u8(&p, 2), put_u8(&p, 0x86);
    put_u8(&p, 0x89), put_u8(&p, ')'), put_u8(&p, 't'), put_u8(&p, 'R');
    put_u8(&p, 0x88), put_u8(&p, ')'), put_u8(&p, 0x87), put_u8(&p, 'R'); /* _rebuild_parameter(t, True, ()) */
    put_u8(&p, 'd');
    put_u8(&p, 0x8c), put_u8(&p, 2), put(&p, "dd", 2);                /* key "dd": defaultdict(list) + items */
    pk_global(&p, "collections", "defaultdict");
    pk_global(&p, "builtins", "list");
    put_u8(&p, 0x85), put_u8(&p, 'R');
    put_u8(&p, '(');
    put_u8(&p, 0x8c), put_u8(&p, 1), put(&p, "x", 1), put_u8(&p, 'h'), put_u8(&p, 1); /* a global: skipped */
    put_u8(&p, 0x8c), put_u8(&p, 1), put(&p, "y", 1);
    put_u8(&p, 'h'), put_u8(&p, 1), put_u8(&p, '('), put_u8(&p, 'h'), put_u8(&p, 2);
    put_u8(&p, 'K'), put_u8(&p, 5), put_u8(&p, ')'), put_u8(&p, ')'), put_u8(&p, 0x89), put_u8(&p, 't'),
        put_u8(&p, 'R');                                              /* 0-dim view of element 5 */
    put_u8(&p, 'u');
    put_u8(&p, 0x8c), put_u8(&p, 1), put(&p, "l", 1);                 /* a list with a tensor: skipped */
    put_u8(&p, ']'), put_u8(&p, 'h'), put_u8(&p, 2), put_u8(&p, 'a');
    put_u8(&p, 0x8c), put_u8(&p, 1), put(&p, "s", 1);                 /* a set: skipped */
    put_u8(&p, 0x8f), put_u8(&p, '('), put_u8(&p, 'K'), put_u8(&p, 1), put_u8(&p, 0x90);
    put_u8(&p, 0x8c), put_u8(&p, 1), put(&p, "f", 1);                 /* a float, a bytes, a big int */
    put_u8(&p, 'G'), put_le(&p, 0, 8);
    put_u8(&p, 'C'), put_u8(&p, 2), put(&p, "ab", 2), put_u8(&p, '0'); /* POP the bytes */
    put_u8(&p, 0x8c), put_u8(&p, 1), put(&p, "g", 1);
    put_u8(&p, 0x8a), put_u8(&p, 9), put_le(&p, 0, 8), put_u8(&p, 1);
    put_u8(&p, 'u');                                                  /* SETITEMS into the root */
    put_u8(&p, '.');
    float v6[6] = {10, 11, 12, 13, 14, 15};
    const char *k0[] = {"0"};
    const void *d0[] = {v6};
    size_t l0[] = {sizeof v6};
    write_archive(path, &p, 1, k0, d0, l0, 1);
    free(p.p);
    f = open_ok(path);
    assert_int_equal(ex_pth_count(f), 3);
    assert_string_equal(ex_pth_at(f, 0)->name, "a");
    assert_string_equal(ex_pth_at(f, 1)->name, "sub.7");
    assert_string_equal(ex_pth_at(f, 2)->name, "dd.y");
    assert_values(f, "a", (float[]){13, 14, 15}, 3);
    assert_values(f, "sub.7", (float[]){10, 12, 11, 13}, 4);
    assert_entry(f, "dd.y", EX_F32, 0, NULL);
    assert_values(f, "dd.y", (float[]){15}, 1);
    ex_pth_close(f);
    unlink(path);
}

/* --- hostile files --------------------------------------------------------------------------------------- */

/* Offset of the central directory entry (or local header) of member `name` in a zip image. */
static size_t find_header(const unsigned char *z, size_t len, uint32_t sig, size_t name_at, const char *name) {
    size_t nlen = strlen(name);
    for (size_t i = 0; i + name_at + nlen <= len; i++) {
        uint32_t s = (uint32_t)z[i] | (uint32_t)z[i + 1] << 8 | (uint32_t)z[i + 2] << 16 | (uint32_t)z[i + 3] << 24;
        size_t nl = (size_t)z[i + name_at - (sig == 0x02014b50u ? 18 : 4)] |
                    (size_t)z[i + name_at - (sig == 0x02014b50u ? 17 : 3)] << 8;
        if (s == sig && nl == nlen && memcmp(z + i + name_at, name, nlen) == 0) return i;
    }
    fail_msg("member %s not found", name);
    return 0;
}

static size_t central_of(const unsigned char *z, size_t len, const char *name) {
    return find_header(z, len, 0x02014b50u, 46, name);
}

static size_t local_of(const unsigned char *z, size_t len, const char *name) {
    return find_header(z, len, 0x04034b50u, 30, name);
}

static size_t find_sig(const unsigned char *z, size_t len, uint32_t sig) {
    for (size_t i = len - 4; i-- > 0;)
        if (((uint32_t)z[i] | (uint32_t)z[i + 1] << 8 | (uint32_t)z[i + 2] << 16 | (uint32_t)z[i + 3] << 24) == sig)
            return i;
    fail_msg("signature %08x not found", sig);
    return 0;
}

static void le_store(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* plain.pth patched by `patch`, then expect_open_fails. */
typedef void (*patch_fn)(unsigned char *z, size_t *len);

static void expect_patched_fails(const char *tag, patch_fn patch, ex_status code, const char *word) {
    char src[1024], path[1024], fname[128];
    fixture_path(src, sizeof src, "plain.pth");
    size_t len;
    unsigned char *z = slurp(src, &len);
    patch(z, &len);
    snprintf(fname, sizeof fname, "hostile-%s.pth", tag);
    tmp(path, sizeof path, fname);
    ext_write_file(path, z, len);
    free(z);
    expect_open_fails(path, code, word);
    unlink(path);
}

static void patch_cd_size(unsigned char *z, size_t *len) {
    size_t rec = find_sig(z, *len, 0x06064b50u);
    uint64_t size = 0;
    for (int i = 7; i >= 0; i--) size = size << 8 | z[rec + 40 + i];
    le_store(z + rec + 40, size - 10, 8); /* directory 10 bytes short: the last entry is cut */
}

static void patch_entry_count(unsigned char *z, size_t *len) {
    size_t rec = find_sig(z, *len, 0x06064b50u);
    le_store(z + rec + 24, 15, 8), le_store(z + rec + 32, 15, 8); /* one more than there are */
}

static void patch_offset_beyond_eof(unsigned char *z, size_t *len) {
    le_store(z + central_of(z, *len, "plain/data/3") + 42, 0x7fffff00u, 4);
}

static void patch_size_beyond_eof(unsigned char *z, size_t *len) {
    size_t c = central_of(z, *len, "plain/data/3");
    le_store(z + c + 20, 100000, 4), le_store(z + c + 24, 100000, 4);
}

static void patch_compress_pickle(unsigned char *z, size_t *len) {
    le_store(z + central_of(z, *len, "plain/data.pkl") + 10, 8, 2);
}

static void patch_compress_storage(unsigned char *z, size_t *len) {
    le_store(z + central_of(z, *len, "plain/data/2") + 10, 8, 2);
}

static void rename_member(unsigned char *z, size_t len, const char *from, char last) {
    size_t c = central_of(z, len, from), l = local_of(z, len, from), n = strlen(from);
    z[c + 46 + n - 1] = (unsigned char)last;
    z[l + 30 + n - 1] = (unsigned char)last;
}

static void patch_no_pickle(unsigned char *z, size_t *len) { rename_member(z, *len, "plain/data.pkl", 'X'); }

static void patch_no_storage(unsigned char *z, size_t *len) { rename_member(z, *len, "plain/data/0", 'Z'); }

static void patch_local_name(unsigned char *z, size_t *len) {
    size_t l = local_of(z, *len, "plain/data/4");
    z[l + 30 + 11] = 'Q';
}

static void patch_cut_end(unsigned char *z, size_t *len) {
    (void)z;
    *len -= 5;
}

static void patch_cut_directory(unsigned char *z, size_t *len) { *len = central_of(z, *len, "plain/data/7"); }

static void patch_storage_bytes(unsigned char *z, size_t *len) {
    size_t c = central_of(z, *len, "plain/data/0");
    le_store(z + c + 20, 44, 4), le_store(z + c + 24, 44, 4); /* the [3,4] float storage needs 48 */
}

static void test_hostile_zip(void **state) {
    (void)state;
    char path[1024];
    tmp(path, sizeof path, "does-not-exist.pth");
    expect_open_fails(path, EX_E_IO, "cannot open");

    tmp(path, sizeof path, "empty.pth");
    ext_write_file(path, "", 0);
    expect_open_fails(path, EX_E_FORMAT, "empty");
    unlink(path);

    tmp(path, sizeof path, "tiny.pth");
    ext_write_file(path, "PK\x05\x06", 4);
    expect_open_fails(path, EX_E_FORMAT, "too short");
    unlink(path);

    tmp(path, sizeof path, "text.pth");
    const char *text = "this is a text file and certainly not a zip archive of any kind.\n";
    ext_write_file(path, text, strlen(text));
    expect_open_fails(path, EX_E_FORMAT, "not a zip");
    unlink(path);

    tmp(path, sizeof path, "legacy.pth");
    const unsigned char legacy[40] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20};
    ext_write_file(path, legacy, sizeof legacy);
    expect_open_fails(path, EX_E_FORMAT, "legacy");
    unlink(path);

    expect_patched_fails("cd-size", patch_cd_size, EX_E_FORMAT, "truncated directory");
    expect_patched_fails("cd-count", patch_entry_count, EX_E_FORMAT, "directory");
    expect_patched_fails("offset-eof", patch_offset_beyond_eof, EX_E_FORMAT, "beyond the end");
    expect_patched_fails("size-eof", patch_size_beyond_eof, EX_E_FORMAT, "reach past the end");
    expect_patched_fails("compressed-pkl", patch_compress_pickle, EX_E_FORMAT, "compressed");
    expect_patched_fails("compressed-data", patch_compress_storage, EX_E_FORMAT, "compressed");
    expect_patched_fails("no-pickle", patch_no_pickle, EX_E_FORMAT, "data.pkl");
    expect_patched_fails("no-storage", patch_no_storage, EX_E_FORMAT, "plain/data/0' is missing");
    expect_patched_fails("local-name", patch_local_name, EX_E_FORMAT, "different member");
    expect_patched_fails("cut-end", patch_cut_end, EX_E_FORMAT, "not a zip");
    expect_patched_fails("cut-directory", patch_cut_directory, EX_E_FORMAT, NULL);
    expect_patched_fails("storage-bytes", patch_storage_bytes, EX_E_FORMAT, "w_f32");
}

static void expect_pickle_fails(const char *tag, const void *pk, size_t len, const char *word1, const char *word2) {
    char path[1024], fname[128];
    snprintf(fname, sizeof fname, "pickle-%s.pth", tag);
    tmp(path, sizeof path, fname);
    write_pickle_only(path, pk, len);
    ex_err err;
    ex_pth_file *f = NULL;
    ex_status st = ex_pth_open(&f, path, &err);
    if (st != EX_E_FORMAT) fail_msg("%s: expected EX_E_FORMAT, got %d: %s", tag, (int)st, err.msg);
    assert_null(f);
    assert_msg_has(&err, path);
    assert_msg_has(&err, word1);
    if (word2) assert_msg_has(&err, word2);
    unlink(path);
}

#define PK(tag, bytes, w1, w2) expect_pickle_fails(tag, bytes, sizeof(bytes) - 1, w1, w2)

static void test_hostile_pickle(void **state) {
    (void)state;
    PK("unknown-op", "\x80\x02}\xff.", "unknown", "0xff at byte 3");
    PK("unknown-op2", "\x80\x02}I12\n.", "opcode 0x49 ('I') at byte 3", NULL);
    PK("no-stop", "\x80\x02}", "without a STOP", NULL);
    PK("cut-string", "\x80\x02}X\x10\x00\x00\x00" "abc", "truncated", "BINUNICODE");
    PK("cut-int", "\x80\x02J\x01\x02", "truncated", "BININT");
    PK("cut-global", "\x80\x02\x63torch", "no newline", NULL);
    PK("underflow", "\x80\x02s.", "underflow", "SETITEM");
    PK("underflow-reduce", "\x80\x02)R.", "underflow", "REDUCE");
    PK("underflow-mark", "\x80\x02(00.", "no open MARK", NULL); /* POP on an empty frame pops the MARK, then none */
    PK("underflow-frame", "\x80\x02}(u0.", "underflow", NULL);
    PK("no-mark", "\x80\x02}t.", "no open MARK", NULL);
    PK("stop-empty", "\x80\x02.", "underflow", "STOP");
    PK("memo-unset", "\x80\x02}q\x00h\x05.", "memo index 5 was never set", NULL);
    PK("memo-huge", "\x80\x02}r\xff\xff\xff\x7f.", "memo index", "out of range");
    PK("bad-proto", "\x80\x09}.", "protocol 9", NULL);
    PK("odd-items", "\x80\x02}(K\x01u.", "odd number", NULL);
    PK("setitem-list", "\x80\x02]K\x01K\x02s.", "cannot set items in a list", NULL);
    PK("append-dict", "\x80\x02}K\x01\x61.", "cannot append to a dict", NULL);
    PK("reduce-args", "\x80\x02\x63x\ny\nK\x01R.", "arguments are an int", NULL);
    PK("neg-string", "\x80\x02T\xff\xff\xff\xff.", "negative", NULL);
    PK("top-list", "\x80\x02].", "top level", "a list");
    PK("cycle", "\x80\x02}q\x00X\x01\x00\x00\x00\x61h\x00s.", "nested deeper", NULL);
    PK("stack-global", "\x80\x04K\x01K\x02\x93.", "two str", NULL);

    /* a stack deeper than the limit (DUP is one byte per push) */
    size_t n = (1u << 20) + 16;
    unsigned char *deep = malloc(n + 8);
    assert_non_null(deep);
    memcpy(deep, "\x80\x02}", 3);
    memset(deep + 3, '2', n);
    deep[n + 3] = '.';
    expect_pickle_fails("deep-stack", deep, n + 4, "stack exceeds", NULL);
    memset(deep + 3, '(', n); /* marks */
    expect_pickle_fails("many-marks", deep, n + 4, "open MARKs", NULL);
    free(deep);
}

static void test_hostile_tensors(void **state) {
    (void)state;
    char path[1024];
    ex_err err;
    int64_t s23[] = {2, 3}, st31[] = {3, 1};
    tmp(path, sizeof path, "tensor.pth");

    write_one_tensor(path, "FloatStorage", 6, 24, 0, 2, s23, st31); /* the good one */
    ex_pth_file *f = open_ok(path);
    assert_values(f, "w", (float[]){0, 1, 2, 3, 4, 5}, 6);
    ex_pth_close(f);

    write_one_tensor(path, "FloatStorage", 6, 24, 1, 2, s23, st31); /* offset 1: reaches element 6 */
    expect_open_fails(path, EX_E_FORMAT, "tensor 'w'");
    ex_pth_open(&f, path, &err);
    assert_msg_has(&err, "reaches element 6");
    assert_msg_has(&err, "holds only 6");

    int64_t st41[] = {4, 1};
    write_one_tensor(path, "FloatStorage", 6, 24, 0, 2, s23, st41); /* strides past the storage */
    expect_open_fails(path, EX_E_FORMAT, "reaches element 6");

    int64_t huge[] = {(int64_t)1 << 40, (int64_t)1 << 40}, st00[] = {0, 0};
    write_one_tensor(path, "FloatStorage", 6, 24, 0, 2, huge, st00); /* 2^80 elements */
    expect_open_fails(path, EX_E_FORMAT, "64 bits");
    int64_t big1[] = {(int64_t)1 << 60}, st1[] = {1};
    write_one_tensor(path, "FloatStorage", 6, 24, 0, 1, big1, st1);
    expect_open_fails(path, EX_E_FORMAT, "reaches element");
    int64_t big2[] = {3, 1}, st2[] = {(int64_t)1 << 62, 1};
    write_one_tensor(path, "FloatStorage", 6, 24, 0, 2, big2, st2); /* (size - 1) * stride overflows */
    expect_open_fails(path, EX_E_FORMAT, "64 bits");

    int64_t neg[] = {-2, 3};
    write_one_tensor(path, "FloatStorage", 6, 24, 0, 2, neg, st31);
    expect_open_fails(path, EX_E_FORMAT, "size[0] is -2");
    int64_t negs[] = {3, -1};
    write_one_tensor(path, "FloatStorage", 6, 24, 0, 2, s23, negs);
    expect_open_fails(path, EX_E_FORMAT, "stride[1] is -1");
    write_one_tensor(path, "FloatStorage", 6, 24, -1, 2, s23, st31);
    expect_open_fails(path, EX_E_FORMAT, "storage offset");

    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    write_one_tensor(path, "FloatStorage", 6, 24, 0, 9, nine, nine);
    expect_open_fails(path, EX_E_FORMAT, "9 dimensions");

    write_one_tensor(path, "FloatStorage", 6, 20, 0, 2, s23, st31); /* member too short for numel */
    expect_open_fails(path, EX_E_FORMAT, "20 bytes");
    write_one_tensor(path, "FloatStorage", -1, 24, 0, 2, s23, st31);
    expect_open_fails(path, EX_E_FORMAT, "element count");

    write_one_tensor(path, "ComplexFloatStorage", 6, 24, 0, 2, s23, st31);
    expect_open_fails(path, EX_E_UNSUPPORTED, "torch.ComplexFloatStorage");

    int64_t e0[] = {0, 3};
    write_one_tensor(path, "FloatStorage", 0, 0, 5, 2, e0, st31); /* empty: any offset is fine */
    f = open_ok(path);
    assert_int_equal(ex_pth_find(f, "w")->shape[0], 0);
    ex_pth_close(f);

    /* duplicate flattened names: {"a.b": T, "a": {"b": T}} */
    bbuf p = {0};
    put_u8(&p, 0x80), put_u8(&p, 2), put_u8(&p, '}'), put_u8(&p, '(');
    pk_ustr(&p, "a.b");
    pk_tensor(&p, "FloatStorage", "0", 6, 0, 2, s23, st31);
    pk_ustr(&p, "a");
    put_u8(&p, '}'), pk_ustr(&p, "b");
    pk_tensor(&p, "FloatStorage", "0", 6, 0, 2, s23, st31);
    put_u8(&p, 's'), put_u8(&p, 'u'), put_u8(&p, '.');
    float v[6] = {0};
    const char *keys[] = {"0"};
    const void *data[] = {v};
    size_t lens[] = {sizeof v};
    write_archive(path, &p, 1, keys, data, lens, 1);
    free(p.p);
    expect_open_fails(path, EX_E_FORMAT, "'a.b'");

    /* a name longer than EX_NAME_MAX - 1 */
    char longkey[EX_NAME_MAX + 8];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    p = (bbuf){0};
    put_u8(&p, 0x80), put_u8(&p, 2), put_u8(&p, '}');
    pk_ustr(&p, longkey);
    pk_tensor(&p, "FloatStorage", "0", 6, 0, 2, s23, st31);
    put_u8(&p, 's'), put_u8(&p, '.');
    write_archive(path, &p, 1, keys, data, lens, 1);
    free(p.p);
    expect_open_fails(path, EX_E_FORMAT, "longer than");

    /* a storage id that is not ('storage', ...) and a tensor with too few arguments */
    p = (bbuf){0};
    put_u8(&p, 0x80), put_u8(&p, 2), put_u8(&p, '}');
    pk_ustr(&p, "w");
    pk_global(&p, "torch._utils", "_rebuild_tensor_v2");
    put_u8(&p, '('), pk_ustr(&p, "oops"), put_u8(&p, 'Q'), put_u8(&p, 'K'), put_u8(&p, 0), put_u8(&p, ')');
    put_u8(&p, ')'), put_u8(&p, 't'), put_u8(&p, 'R'), put_u8(&p, 's'), put_u8(&p, '.');
    write_archive(path, &p, 1, keys, data, lens, 1);
    free(p.p);
    expect_open_fails(path, EX_E_FORMAT, "persistent id");
    p = (bbuf){0};
    put_u8(&p, 0x80), put_u8(&p, 2), put_u8(&p, '}');
    pk_ustr(&p, "w");
    pk_global(&p, "torch._utils", "_rebuild_tensor_v2");
    put_u8(&p, ')'), put_u8(&p, 'R'), put_u8(&p, 's'), put_u8(&p, '.');
    write_archive(path, &p, 1, keys, data, lens, 1);
    free(p.p);
    expect_open_fails(path, EX_E_FORMAT, "0 arguments");

    /* a dict shared twice per level, 20 levels deep: 2^20 names from a tiny pickle */
    p = (bbuf){0};
    put_u8(&p, 0x80), put_u8(&p, 2), put_u8(&p, '}'), put_u8(&p, 'q'), put_u8(&p, 0);
    pk_ustr(&p, "t");
    pk_tensor(&p, "FloatStorage", "0", 6, 0, 2, s23, st31);
    put_u8(&p, 's');
    for (int i = 0; i < 20; i++) {
        put_u8(&p, '}'), put_u8(&p, '(');
        pk_ustr(&p, "a"), put_u8(&p, 'h'), put_u8(&p, (unsigned)i);
        pk_ustr(&p, "b"), put_u8(&p, 'h'), put_u8(&p, (unsigned)i);
        put_u8(&p, 'u'), put_u8(&p, 'q'), put_u8(&p, (unsigned)i + 1);
    }
    put_u8(&p, '.');
    write_archive(path, &p, 1, keys, data, lens, 1);
    free(p.p);
    expect_open_fails(path, EX_E_FORMAT, "more than");
    unlink(path);
}

static void test_byteorder(void **state) {
    (void)state;
    char path[1024];
    tmp(path, sizeof path, "byteorder.pth");
    const unsigned char pk[] = "\x80\x02}.";
    zmember m[] = {{"archive/data.pkl", pk, 4}, {"archive/byteorder", "big", 3}};
    bbuf z = build_zip(m, 2, 1);
    ext_write_file(path, z.p, z.n);
    free(z.p);
    expect_open_fails(path, EX_E_UNSUPPORTED, "big-endian");
    m[1] = (zmember){"archive/byteorder", "little", 6};
    z = build_zip(m, 2, 1);
    ext_write_file(path, z.p, z.n);
    free(z.p);
    ex_pth_file *f = open_ok(path);
    assert_int_equal(ex_pth_count(f), 0);
    ex_pth_close(f);
    unlink(path);
}

/* --- mutations ------------------------------------------------------------------------------------------- */

/* Open the image; if it opens, read every tensor (the reads must stay inside the mapping). */
static int open_and_read(const char *path, const unsigned char *z, size_t len) {
    ext_write_file(path, z, len);
    ex_err err;
    ex_pth_file *f = NULL;
    ex_status st = ex_pth_open(&f, path, &err);
    if (st != EX_OK) {
        assert_null(f);
        assert_msg_has(&err, path);
        return 0;
    }
    for (int i = 0; i < ex_pth_count(f); i++) {
        const ex_st_entry *e = ex_pth_at(f, i);
        int64_t n = numel_of(e);
        assert_true(n >= 0 && n <= (1 << 20));
        float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
        assert_non_null(v);
        EXT_OK(ex_pth_read_f32(f, e, v, n, &err), &err);
        free(v);
    }
    ex_pth_close(f);
    return 1;
}

static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static void mutate_fixture(const char *fname, const char *pkl_name, int flips, uint64_t seed) {
    char src[1024], path[1024];
    fixture_path(src, sizeof src, fname);
    size_t len;
    unsigned char *orig = slurp(src, &len);
    unsigned char *z = malloc(len);
    assert_non_null(z);
    tmp(path, sizeof path, "mutant.pth");

    /* the areas: the pickle, the central directory and end records, the local headers */
    size_t cd = central_of(orig, len, pkl_name);
    size_t pk_local = local_of(orig, len, pkl_name);
    size_t pk_begin = pk_local + 30 + (orig[pk_local + 26] | orig[pk_local + 27] << 8) +
                      (orig[pk_local + 28] | orig[pk_local + 29] << 8);
    size_t pk_len = (size_t)orig[cd + 24] | (size_t)orig[cd + 25] << 8;
    size_t cd_start = cd; /* torch writes data.pkl first, so its entry starts the directory */

    int opened = 0;
    if (flips < 0) { /* every truncation length */
        for (size_t cut = 0; cut < len; cut++) opened += open_and_read(path, orig, cut);
        assert_int_equal(opened, 0); /* the end records are at the end: every cut loses them */
    } else {
        uint64_t s = seed;
        for (int i = 0; i < flips; i++) {
            memcpy(z, orig, len);
            size_t at;
            int area = (int)(lcg(&s) % 8);
            if (area < 4)
                at = pk_begin + lcg(&s) % pk_len;
            else if (area < 7)
                at = cd_start + lcg(&s) % (len - cd_start);
            else
                at = local_of(orig, len, pkl_name) + lcg(&s) % 30;
            unsigned char x = (unsigned char)(lcg(&s) % 255 + 1);
            if (lcg(&s) % 4 == 0) x = (unsigned char)(1u << (lcg(&s) % 8)); /* single-bit flips too */
            z[at] ^= x;
            opened += open_and_read(path, z, len);
        }
        print_message("%s: %d of %d mutants still open (values may differ, bounds hold)\n", fname, opened, flips);
    }
    unlink(path);
    free(z);
    free(orig);
}

static void test_mutations_never_crash(void **state) {
    (void)state;
    mutate_fixture("plain.pth", "plain/data.pkl", -1, 0);
    mutate_fixture("plain.pth", "plain/data.pkl", 3000, 12345);
    mutate_fixture("views.pth", "views/data.pkl", 1500, 777);
    mutate_fixture("mae_train.pth", "mae_train/data.pkl", 1500, 4242);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_match_expected),
        cmocka_unit_test(test_plain_dtypes),
        cmocka_unit_test(test_views_share_storage),
        cmocka_unit_test(test_nested_names),
        cmocka_unit_test(test_crafted_files),
        cmocka_unit_test(test_hostile_zip),
        cmocka_unit_test(test_hostile_pickle),
        cmocka_unit_test(test_hostile_tensors),
        cmocka_unit_test(test_byteorder),
        cmocka_unit_test(test_mutations_never_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
