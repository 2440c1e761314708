/*
 * tests/test_backend_ops.c — the cpu backend's forward and non-gradient ops
 * (gemm, bias, LayerNorm, activations, softmax, attention, elementwise,
 * reduce, gathers, masking, losses, optimiser, rng, patchify, copy2d, memory)
 * against naive double-precision references written here, at odd sizes.
 *
 * The backend is loaded three times through the plugin path, with `threads = 1`,
 * `2` and `3`. Every case runs on each and appends everything it produced to a
 * byte buffer; the buffers must be bitwise identical, so no op's
 * result may depend on the thread count (the larger sizes of each case are
 * chosen to make the parallel paths run). The backward ops are covered for
 * this too (their values are checked in test_gradcheck.c).
 */
#include "test_support.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKEND "cpu"

/* ------------------------------------------------------------------------------
 * Fixtures and helpers
 * ------------------------------------------------------------------------------ */

#define NBE 3
typedef struct env {
    ex_backend be[NBE]; /* threads = 1, 2, 3 */
    ex_registry *reg[NBE];
} env;

static int group_setup(void **state) {
    env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    for (int k = 0; k < NBE; k++) {
        char settings[32];
        snprintf(settings, sizeof settings, "threads = %d\n", k + 1);
        ext_backend_open(BACKEND, settings, &e->be[k], &e->reg[k]);
    }
    *state = e;
    return 0;
}

static int group_teardown(void **state) {
    env *e = *state;
    if (!e) return 0;
    for (int k = 0; k < NBE; k++) ext_backend_close(&e->be[k], e->reg[k]);
    free(e);
    return 0;
}

/* Host and device allocations of one case, freed together. */
#define SCOPE_MAX 160
typedef struct scope {
    ex_backend *be;
    void *host[SCOPE_MAX];
    int nh;
    void *dev[SCOPE_MAX];
    int nd;
} scope;

static void *h_alloc(scope *s, size_t bytes) {
    assert_true(s->nh < SCOPE_MAX);
    void *p = calloc(1, bytes ? bytes : 1);
    assert_non_null(p);
    s->host[s->nh++] = p;
    return p;
}
static float *hf(scope *s, size_t n) { return h_alloc(s, n * sizeof(float)); }
static double *hd(scope *s, size_t n) { return h_alloc(s, n * sizeof(double)); }

static void *d_alloc(scope *s, size_t bytes) {
    assert_true(s->nd < SCOPE_MAX);
    void *p = NULL;
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(s->be->vt.alloc(s->be->ctx, bytes ? bytes : 1, &p, &err), &err);
    s->dev[s->nd++] = p;
    return p;
}
/* A device copy of `bytes` bytes of host data. */
static void *up(scope *s, const void *host, size_t bytes) {
    void *d = d_alloc(s, bytes);
    if (bytes) assert_int_equal(s->be->vt.copy(s->be->ctx, d, host, bytes, EX_COPY_H2D), EX_OK);
    return d;
}
static float *upf(scope *s, const float *host, size_t n) { return up(s, host, n * sizeof(float)); }
/* Download into a new host buffer. */
static float *down(scope *s, const void *dev, size_t n) {
    float *h = hf(s, n);
    if (n) assert_int_equal(s->be->vt.copy(s->be->ctx, h, dev, n * sizeof(float), EX_COPY_D2H), EX_OK);
    return h;
}
static void scope_end(scope *s) {
    for (int i = 0; i < s->nd; i++) s->be->vt.free(s->be->ctx, s->dev[i]);
    for (int i = 0; i < s->nh; i++) free(s->host[i]);
    s->nd = s->nh = 0;
}

static float *rnd(scope *s, size_t n, uint64_t seed, float lo, float hi) {
    float *x = hf(s, n);
    ext_fill_uniform(x, n, seed, lo, hi);
    return x;
}

/* |got - ref| <= atol + rtol |ref| with a double reference. */
static void expect_close(const float *got, const double *ref, size_t n, double atol, double rtol, const char *what) {
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= atol + rtol * fabs(ref[i])))
            fail_msg("%s: element %zu: got %.9g, expected %.9g (|diff| %.3g)", what, i, (double)got[i], ref[i], d);
    }
}

/* Output bytes of a case, for the comparison across thread counts. */
typedef struct obuf {
    unsigned char *d;
    size_t len, cap;
} obuf;

static void ob_put(obuf *o, const void *p, size_t bytes) {
    if (o->len + bytes > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + bytes) cap *= 2;
        o->d = realloc(o->d, cap);
        assert_non_null(o->d);
        o->cap = cap;
    }
    memcpy(o->d + o->len, p, bytes);
    o->len += bytes;
}
static void ob_f(obuf *o, const float *p, size_t n) { ob_put(o, p, n * sizeof(float)); }

typedef void (*op_case)(ex_backend *be, obuf *ob);

/* Run a case on the 1-, 2- and 3-thread backends; outputs must match bit for bit. */
static void all_threads(void **state, op_case fn, const char *what) {
    env *e = *state;
    obuf a = {0};
    fn(&e->be[0], &a);
    assert_true(a.len > 0);
    for (int k = 1; k < NBE; k++) {
        obuf b = {0};
        fn(&e->be[k], &b);
        if (a.len != b.len) fail_msg("%s: output sizes differ between threads = 1 and %d", what, k + 1);
        for (size_t i = 0; i < a.len; i++)
            if (a.d[i] != b.d[i]) {
                size_t w = i / 4 * 4;
                float fa, fb;
                memcpy(&fa, a.d + w, 4);
                memcpy(&fb, b.d + w, 4);
                fail_msg("%s: threads = 1 and threads = %d differ at byte %zu (as float: %.9g vs %.9g)", what, k + 1,
                         i, (double)fa, (double)fb);
            }
        free(b.d);
    }
    free(a.d);
}

#define OK(expr) assert_int_equal((expr), EX_OK)
#define CALL(be, op, ...) (be)->vt.op((be)->ctx, __VA_ARGS__)

/* Optional slots that come in groups: a backend plugin that fills some but not all of a group is refused when
 * it starts (ex_backend_create), with a message naming the group; one that fills none of it is accepted. Every
 * proper, non-empty subset of the group is removed in turn from the cpu plugin's vtable. */
static void expect_slots_together(void **state, const size_t *offs, int n, const char *msg) {
    env *e = *state;
    const ex_plugin *cpu = NULL;
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_registry_find(e->reg[0], EX_PLUGIN_BACKEND, BACKEND, &cpu, &err), &err);
    ex_plugin *part = malloc(sizeof *part);
    assert_non_null(part);
    for (int mask = 1; mask < (1 << n); mask++) { /* bit k set: slot k removed */
        memcpy(part, cpu, sizeof *part);
        for (int k = 0; k < n; k++)
            if (mask & (1 << k)) memset((char *)&part->vtable_copy.backend + offs[k], 0, sizeof(void (*)(void)));
        ex_backend be;
        ex_err_clear(&err);
        if (mask == (1 << n) - 1) { /* none of the group: accepted */
            EXT_OK(ex_backend_create(&be, part, NULL, &err), &err);
            ex_backend_destroy(&be);
            continue;
        }
        assert_int_equal(ex_backend_create(&be, part, NULL, &err), EX_E_INVALID);
        if (!strstr(err.msg, msg)) fail_msg("removing slots 0x%x: expected a message with '%s', got: %s", mask, msg, err.msg);
        assert_null(be.ctx);
    }
    free(part);
}


/* ------------------------------------------------------------------------------
 * Lifecycle, capabilities, memory
 * ------------------------------------------------------------------------------ */

static void test_supports_and_info(void **state) {
    env *e = *state;
    for (int k = 0; k < NBE; k++) {
        ex_backend *be = &e->be[k];
        for (int op = 0; op < EX_OP_COUNT; op++) {
            if (be->vt.supports_op(be->ctx, (ex_op)op, EX_F32) != 1)
                fail_msg("supports_op(%s, F32) is not 1", ex_op_name((ex_op)op));
            /* narrow inputs: the GEMM (frozen weights and activations kept in bf16); bf16 outputs: the
             * LayerNorm and GELU forwards (activations kept in bf16) */
            assert_int_equal(be->vt.supports_op(be->ctx, (ex_op)op, EX_BF16),
                             op == EX_OP_GEMM || op == EX_OP_LAYERNORM_FWD || op == EX_OP_GELU_FWD);
            assert_int_equal(be->vt.supports_op(be->ctx, (ex_op)op, EX_F16), op == EX_OP_GEMM);
            assert_int_equal(be->vt.supports_op(be->ctx, (ex_op)op, EX_F64), 0);
        }
        assert_int_equal(be->vt.supports_op(be->ctx, EX_OP_COUNT, EX_F32), 0);
        assert_non_null(be->vt.device_info);
        ex_device_info info;
        OK(be->vt.device_info(be->ctx, &info));
        assert_int_equal(info.threads, k + 1); /* the `threads` key was read */
        assert_true(strncmp(info.name, "cpu: ", 5) == 0);
        assert_non_null(strstr(info.name, "OpenBLAS"));
        assert_true(info.total_memory > 0);
    }
}

static void test_memory(void **state) {
    env *e = *state;
    ex_backend *be = &e->be[1];
    ex_err err;
    ex_err_clear(&err);
    const size_t sizes[] = {0, 1, 3, 256, 1000, 1 << 20};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        void *p = NULL;
        EXT_OK(be->vt.alloc(be->ctx, sizes[s], &p, &err), &err);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 256, 0);
        be->vt.free(be->ctx, p);
    }
    be->vt.free(be->ctx, NULL);

    const int64_t n = 1001;
    float *h = malloc(n * sizeof(float)), *back = malloc(n * sizeof(float));
    assert_non_null(h);
    assert_non_null(back);
    ext_fill_uniform(h, (size_t)n, 5, -1, 1);
    void *d1 = NULL, *d2 = NULL;
    EXT_OK(be->vt.alloc(be->ctx, n * sizeof(float), &d1, &err), &err);
    EXT_OK(be->vt.alloc(be->ctx, n * sizeof(float), &d2, &err), &err);
    OK(be->vt.copy(be->ctx, d1, h, n * sizeof(float), EX_COPY_H2D));
    OK(be->vt.copy(be->ctx, d2, d1, n * sizeof(float), EX_COPY_D2D));
    OK(be->vt.copy(be->ctx, back, d2, n * sizeof(float), EX_COPY_D2H));
    assert_memory_equal(back, h, n * sizeof(float));
    OK(be->vt.copy(be->ctx, back, d2, 0, EX_COPY_D2H));
    OK(be->vt.fill(be->ctx, d1, -2.5f, n - 1));
    OK(be->vt.copy(be->ctx, back, d1, n * sizeof(float), EX_COPY_D2H));
    for (int64_t i = 0; i < n - 1; i++) assert_true(back[i] == -2.5f);
    assert_true(back[n - 1] == h[n - 1]); /* fill wrote exactly n elements */
    OK(be->vt.fill(be->ctx, d1, 1.0f, 0));
    OK(be->vt.synchronize(be->ctx));
    assert_int_equal(be->vt.fill(be->ctx, d1, 1.0f, -1), EX_E_INVALID);
    be->vt.free(be->ctx, d1);
    be->vt.free(be->ctx, d2);
    free(h);
    free(back);
}

/* ------------------------------------------------------------------------------
 * GEMM
 * ------------------------------------------------------------------------------ */

typedef struct gemm_cfg {
    int64_t m, n, k, batch;
    float alpha, beta;
    int64_t pad; /* extra elements per row (lda > cols) and between batch items */
} gemm_cfg;

/* The operand layout of a GEMM test case: rows and columns as stored, leading dimensions padded by
 * `pad`, batch strides with slack, and the element counts of A, B and C. */
typedef struct gemm_layout {
    int64_t arows, acols, brows, bcols, lda, ldb, ldc, sa, sb, sc;
    size_t na, nb, nc;
} gemm_layout;

static gemm_layout layout_of(gemm_cfg g, int ta, int tb) {
    gemm_layout l;
    l.arows = ta ? g.k : g.m, l.acols = ta ? g.m : g.k;
    l.brows = tb ? g.n : g.k, l.bcols = tb ? g.k : g.n;
    l.lda = l.acols + g.pad, l.ldb = l.bcols + 2 * g.pad, l.ldc = g.n + g.pad;
    l.sa = l.arows * l.lda + 3 * g.pad, l.sb = l.brows * l.ldb + g.pad, l.sc = g.m * l.ldc + 5 * g.pad;
    l.na = (size_t)(l.sa * g.batch), l.nb = (size_t)(l.sb * g.batch), l.nc = (size_t)(l.sc * g.batch);
    return l;
}

static void gemm_one_case(ex_backend *be, obuf *ob, int ta, int tb, gemm_cfg g, uint64_t seed) {
    scope s = {.be = be};
    const gemm_layout L = layout_of(g, ta, tb);
    const int64_t lda = L.lda, ldb = L.ldb, ldc = L.ldc, sa = L.sa, sb = L.sb, sc = L.sc;
    const size_t na = L.na, nb = L.nb, nc = L.nc;
    float *A = rnd(&s, na, seed, -1, 1), *B = rnd(&s, nb, seed + 1, -1, 1), *C0 = rnd(&s, nc, seed + 2, -1, 1);
    if (g.beta == 0.0f)
        for (size_t i = 0; i < nc; i++) C0[i] = NAN; /* beta = 0: C must be written, not read */
    float *dA = upf(&s, A, na), *dB = upf(&s, B, nb), *dC = upf(&s, C0, nc);
    ex_gemm_desc d = {0};
    d.trans_a = ta;
    d.trans_b = tb;
    d.m = g.m;
    d.n = g.n;
    d.k = g.k;
    d.alpha = g.alpha;
    d.beta = g.beta;
    d.a = dA;
    d.a_dtype = EX_F32;
    d.lda = lda;
    d.stride_a = sa;
    d.b = dB;
    d.b_dtype = EX_F32;
    d.ldb = ldb;
    d.stride_b = sb;
    d.c = dC;
    d.ldc = ldc;
    d.stride_c = sc;
    d.batch = g.batch;
    OK(be->vt.gemm(be->ctx, &d));
    float *C = down(&s, dC, nc);
    char what[256];
    for (int64_t bi = 0; bi < g.batch; bi++) {
        const float *a = A + bi * sa, *b = B + bi * sb;
        for (int64_t i = 0; i < g.m; i++)
            for (int64_t j = 0; j < g.n; j++) {
                double acc = 0.0;
                for (int64_t l = 0; l < g.k; l++) {
                    double av = ta ? a[l * lda + i] : a[i * lda + l];
                    double bv = tb ? b[j * ldb + l] : b[l * ldb + j];
                    acc += av * bv;
                }
                double ref = (double)g.alpha * acc;
                if (g.beta != 0.0f) ref += (double)g.beta * C0[bi * sc + i * ldc + j];
                snprintf(what, sizeof what, "gemm ta=%d tb=%d m=%lld n=%lld k=%lld batch %lld (%lld,%lld)", ta, tb,
                         (long long)g.m, (long long)g.n, (long long)g.k, (long long)bi, (long long)i, (long long)j);
                expect_close(&C[bi * sc + i * ldc + j], &ref, 1, 2e-5 * (1.0 + sqrt((double)g.k)), 1e-5, what);
            }
    }
    /* nothing outside the m x n blocks was touched (compare bits: NaN != NaN) */
    for (int64_t bi = 0; bi < g.batch; bi++)
        for (int64_t x = 0; x < sc; x++) {
            int64_t i = x / ldc, j = x % ldc;
            if (i < g.m && j < g.n) continue;
            if (memcmp(&C[bi * sc + x], &C0[bi * sc + x], sizeof(float)) != 0)
                fail_msg("gemm wrote outside C at batch %lld offset %lld", (long long)bi, (long long)x);
        }
    ob_f(ob, C, nc);
    scope_end(&s);
}

static const gemm_cfg k_gemm_cfgs[] = {
    {7, 13, 11, 1, 1.0f, 0.0f, 0},       /* plain, beta = 0 over NaN */
    {7, 13, 11, 3, 0.75f, 0.5f, 3},      /* batch, strides, lda > cols, alpha and beta */
    {5, 9, 1, 2, -2.0f, 1.0f, 1},        /* k = 1, accumulate */
    {1, 17, 5, 2, 1.0f, 0.25f, 2},       /* a single row */
    {97, 131, 67, 2, 1.25f, 0.0f, 2},    /* large enough for OpenBLAS to use threads */
    {40, 24, 300, 4, 0.5f, -1.0f, 1},    /* long k */
    {4, 6, 0, 2, 1.0f, 0.5f, 1},         /* k = 0: C = beta C */
    {4, 6, 0, 2, 1.0f, 0.0f, 1},         /* k = 0, beta = 0: zeros */
    {3, 5, 4, 2, 0.0f, 2.0f, 0},         /* alpha = 0 */
};

static void gemm_cases(ex_backend *be, obuf *ob) {
    uint64_t seed = 100;
    for (size_t c = 0; c < sizeof k_gemm_cfgs / sizeof *k_gemm_cfgs; c++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) gemm_one_case(be, ob, ta, tb, k_gemm_cfgs[c], seed += 3);
}

static void test_gemm(void **state) { all_threads(state, gemm_cases, "gemm"); }

/* bf16/fp16 operands (frozen weights kept narrow): the product must equal, bit for bit, the fp32 GEMM of
 * the same values widened, for every layout of k_gemm_cfgs and each operand narrow or not. */
static void gemm_narrow_one(ex_backend *be, obuf *ob, int ta, int tb, gemm_cfg g, ex_dtype at, ex_dtype bt,
                            uint64_t seed) {
    scope s = {.be = be};
    const gemm_layout L = layout_of(g, ta, tb);
    const int64_t lda = L.lda, ldb = L.ldb, ldc = L.ldc, sa = L.sa, sb = L.sb, sc = L.sc;
    const size_t na = L.na, nb = L.nb, nc = L.nc;
    float *A = rnd(&s, na, seed, -1, 1), *B = rnd(&s, nb, seed + 1, -1, 1), *C0 = rnd(&s, nc, seed + 2, -1, 1);
    uint16_t *A16 = h_alloc(&s, 2 * na), *B16 = h_alloc(&s, 2 * nb);
    for (size_t i = 0; i < na; i++) { /* the fp32 copy holds exactly the narrow values */
        A16[i] = at == EX_BF16 ? ex_f32_to_bf16(A[i]) : ex_f32_to_f16(A[i]);
        if (at != EX_F32) A[i] = at == EX_BF16 ? ex_bf16_to_f32(A16[i]) : ex_f16_to_f32(A16[i]);
    }
    for (size_t i = 0; i < nb; i++) {
        B16[i] = bt == EX_BF16 ? ex_f32_to_bf16(B[i]) : ex_f32_to_f16(B[i]);
        if (bt != EX_F32) B[i] = bt == EX_BF16 ? ex_bf16_to_f32(B16[i]) : ex_f16_to_f32(B16[i]);
    }
    float *dC32 = upf(&s, C0, nc), *dC = upf(&s, C0, nc);
    ex_gemm_desc d = {0};
    d.trans_a = ta, d.trans_b = tb, d.m = g.m, d.n = g.n, d.k = g.k, d.alpha = g.alpha, d.beta = g.beta;
    d.a = upf(&s, A, na), d.a_dtype = EX_F32, d.lda = lda, d.stride_a = sa;
    d.b = upf(&s, B, nb), d.b_dtype = EX_F32, d.ldb = ldb, d.stride_b = sb;
    d.c = dC32, d.ldc = ldc, d.stride_c = sc, d.batch = g.batch;
    OK(be->vt.gemm(be->ctx, &d));
    if (at != EX_F32) d.a = up(&s, A16, 2 * na), d.a_dtype = at;
    if (bt != EX_F32) d.b = up(&s, B16, 2 * nb), d.b_dtype = bt;
    d.c = dC;
    OK(be->vt.gemm(be->ctx, &d));
    float *want = down(&s, dC32, nc), *got = down(&s, dC, nc);
    if (memcmp(want, got, nc * sizeof(float)) != 0)
        fail_msg("gemm %s x %s ta=%d tb=%d m=%lld n=%lld k=%lld: differs from the fp32 product of the same values",
                 ex_dtype_name(at), ex_dtype_name(bt), ta, tb, (long long)g.m, (long long)g.n, (long long)g.k);
    ob_f(ob, got, nc);
    scope_end(&s);
}

static void gemm_narrow_cases(ex_backend *be, obuf *ob) {
    static const ex_dtype k_types[][2] = {{EX_F32, EX_BF16}, {EX_BF16, EX_F32}, {EX_BF16, EX_BF16}, {EX_F16, EX_F16}};
    uint64_t seed = 900;
    for (size_t c = 0; c < sizeof k_gemm_cfgs / sizeof *k_gemm_cfgs; c++)
        for (size_t t = 0; t < sizeof k_types / sizeof *k_types; t++)
            for (int tr = 0; tr < 4; tr++)
                gemm_narrow_one(be, ob, tr & 1, tr >> 1, k_gemm_cfgs[c], k_types[t][0], k_types[t][1], seed += 3);
}

/* Run d on the backend as pieces whose operand spans are at most `cap` elements (ex_gemm_halve, A first),
 * as a backend with bounded operand scratch does; *pieces counts them. */
static void gemm_in_pieces(ex_backend *be, const ex_gemm_desc *d, int64_t cap, int *pieces) {
    ex_gemm_desc half[2];
    for (int w = 0; w < 2; w++)
        if (ex_gemm_span(d, w) > cap && ex_gemm_halve(d, w, half)) {
            gemm_in_pieces(be, &half[0], cap, pieces);
            gemm_in_pieces(be, &half[1], cap, pieces);
            return;
        }
    OK(be->vt.gemm(be->ctx, d));
    (*pieces)++;
}

/* ex_gemm_halve: every layout of k_gemm_cfgs split until each operand span is under 8 elements (or its
 * stored rows are single) gives the product of the whole GEMM (k splits change the summation order only)
 * and writes nothing outside C's blocks; spans are what the operands really occupy. */
static void test_gemm_halve(void **state) {
    env *e = *state;
    ex_backend *be = &e->be[0];
    uint64_t seed = 700;
    for (size_t ci = 0; ci < sizeof k_gemm_cfgs / sizeof *k_gemm_cfgs; ci++)
        for (int tr = 0; tr < 4; tr++) {
            const gemm_cfg g = k_gemm_cfgs[ci];
            const int ta = tr & 1, tb = tr >> 1;
            scope s = {.be = be};
            const gemm_layout L = layout_of(g, ta, tb);
                    const int64_t lda = L.lda, ldb = L.ldb, ldc = L.ldc, sa = L.sa, sb = L.sb, sc = L.sc;
            const size_t na = L.na, nb = L.nb, nc = L.nc;
            float *A = rnd(&s, na, seed += 3, -1, 1), *B = rnd(&s, nb, seed + 1, -1, 1), *C0 = rnd(&s, nc, seed + 2, -1, 1);
            if (g.beta == 0.0f)
                for (size_t i = 0; i < nc; i++) C0[i] = NAN;
            float *dC1 = upf(&s, C0, nc), *dC2 = upf(&s, C0, nc);
            ex_gemm_desc d = {0};
            d.trans_a = ta, d.trans_b = tb, d.m = g.m, d.n = g.n, d.k = g.k, d.alpha = g.alpha, d.beta = g.beta;
            d.a = upf(&s, A, na), d.a_dtype = EX_F32, d.lda = lda, d.stride_a = sa;
            d.b = upf(&s, B, nb), d.b_dtype = EX_F32, d.ldb = ldb, d.stride_b = sb;
            d.c = dC1, d.ldc = ldc, d.stride_c = sc, d.batch = g.batch;
            if (g.k > 0 && g.alpha != 0.0f) {
                assert_int_equal(ex_gemm_span(&d, 0), (g.batch - 1) * sa + (L.arows - 1) * lda + L.acols);
                assert_int_equal(ex_gemm_span(&d, 1), (g.batch - 1) * sb + (L.brows - 1) * ldb + L.bcols);
            }
            OK(be->vt.gemm(be->ctx, &d));
            d.c = dC2;
            int pieces = 0;
            gemm_in_pieces(be, &d, 8, &pieces);
            if (g.k > 0 && g.alpha != 0.0f && g.m * g.k > 8) assert_true(pieces > 1);
            const float *want = down(&s, dC1, nc), *got = down(&s, dC2, nc);
            for (size_t i = 0; i < nc; i++) {
                if (isnan(want[i]) && isnan(got[i])) continue; /* padding of a beta = 0 case, untouched */
                if (!(fabsf(want[i] - got[i]) <= 1e-5f * (1.0f + fabsf(want[i]))))
                    fail_msg("config %zu ta=%d tb=%d: element %zu: %g in pieces, %g whole", ci, ta, tb, i, (double)got[i],
                             (double)want[i]);
            }
            scope_end(&s);
        }
}

static void test_gemm_narrow_inputs(void **state) { all_threads(state, gemm_narrow_cases, "gemm with bf16/fp16 inputs"); }

static void test_gemm_errors(void **state) {
    env *e = *state;
    ex_backend *be = &e->be[1];
    float a[64] = {0}, b[64] = {0}, c[64] = {0};
    ex_gemm_desc d = {0};
    d.m = 4;
    d.n = 4;
    d.k = 4;
    d.alpha = 1.0f;
    d.a = a;
    d.lda = 4;
    d.b = b;
    d.ldb = 4;
    d.c = c;
    d.ldc = 4;
    d.batch = 1;
    d.a_dtype = d.b_dtype = EX_F32;
    OK(be->vt.gemm(be->ctx, &d));
    d.a_dtype = EX_F64;
    assert_int_equal(be->vt.gemm(be->ctx, &d), EX_E_UNSUPPORTED);
    d.a_dtype = EX_F32;
    d.b_dtype = EX_I32;
    assert_int_equal(be->vt.gemm(be->ctx, &d), EX_E_UNSUPPORTED);
    d.b_dtype = EX_F32;
    d.lda = 3; /* < k */
    assert_int_equal(be->vt.gemm(be->ctx, &d), EX_E_INVALID);
    d.lda = 4;
    d.batch = 0;
    assert_int_equal(be->vt.gemm(be->ctx, &d), EX_E_INVALID);
    d.batch = 1;
    d.m = -1;
    assert_int_equal(be->vt.gemm(be->ctx, &d), EX_E_INVALID);
    assert_int_equal(be->vt.gemm(be->ctx, NULL), EX_E_INVALID);
}

/* ------------------------------------------------------------------------------
 * Bias, LayerNorm, activations, softmax
 * ------------------------------------------------------------------------------ */

static const int64_t k_rows[2][2] = {{7, 13}, {300, 257}}; /* odd (n, c), and large enough for threads */

static void bias_cases(ex_backend *be, obuf *ob) {
    for (int z = 0; z < 2; z++) {
        scope s = {.be = be};
        const int64_t n = k_rows[z][0], c = k_rows[z][1];
        float *x = rnd(&s, n * c, 11 + z, -1, 1), *bias = rnd(&s, c, 12 + z, -1, 1);
        float *dx = upf(&s, x, n * c), *db = upf(&s, bias, c);
        OK(CALL(be, bias_add_fwd, dx, db, n, c));
        float *y = down(&s, dx, n * c);
        double *ref = hd(&s, n * c);
        for (int64_t i = 0; i < n * c; i++) ref[i] = (double)x[i] + bias[i % c];
        expect_close(y, ref, n * c, 1e-6, 1e-6, "bias_add_fwd");
        ob_f(ob, y, n * c);
        scope_end(&s);
    }
}
static void test_bias_add(void **state) { all_threads(state, bias_cases, "bias_add_fwd"); }

static void layernorm_cases(ex_backend *be, obuf *ob) {
    for (int z = 0; z < 2; z++)
        for (int affine = 0; affine < 4; affine++) { /* bit 0: w, bit 1: b */
            scope s = {.be = be};
            const int64_t n = k_rows[z][0], c = k_rows[z][1];
            const float eps = 1e-5f;
            float *x = rnd(&s, n * c, 21 + z, -1, 3), *w = rnd(&s, c, 22, 0.5f, 1.5f), *b = rnd(&s, c, 23, -1, 1);
            float *dx = upf(&s, x, n * c), *dw = upf(&s, w, c), *db = upf(&s, b, c);
            float *dy = d_alloc(&s, n * c * sizeof(float)), *dm = d_alloc(&s, n * sizeof(float)),
                  *dr = d_alloc(&s, n * sizeof(float));
            OK(CALL(be, layernorm_fwd, dy, dm, dr, dx, (affine & 1) ? dw : NULL, (affine & 2) ? db : NULL, n, c, eps));
            float *y = down(&s, dy, n * c), *mean = down(&s, dm, n), *rstd = down(&s, dr, n);
            double *ry = hd(&s, n * c), *rm = hd(&s, n), *rr = hd(&s, n);
            for (int64_t i = 0; i < n; i++) {
                double mu = 0, var = 0;
                for (int64_t j = 0; j < c; j++) mu += x[i * c + j];
                mu /= (double)c;
                for (int64_t j = 0; j < c; j++) var += (x[i * c + j] - mu) * (x[i * c + j] - mu);
                var /= (double)c; /* population variance */
                double rs = 1.0 / sqrt(var + eps);
                rm[i] = mu;
                rr[i] = rs;
                for (int64_t j = 0; j < c; j++) {
                    double v = (x[i * c + j] - mu) * rs;
                    if (affine & 1) v *= w[j];
                    if (affine & 2) v += b[j];
                    ry[i * c + j] = v;
                }
            }
            expect_close(y, ry, n * c, 1e-5, 1e-5, "layernorm_fwd out");
            expect_close(mean, rm, n, 1e-6, 1e-6, "layernorm_fwd mean");
            expect_close(rstd, rr, n, 1e-6, 1e-6, "layernorm_fwd rstd");
            ob_f(ob, y, n * c);
            ob_f(ob, mean, n);
            ob_f(ob, rstd, n);
            scope_end(&s);
        }
}
static void test_layernorm(void **state) { all_threads(state, layernorm_cases, "layernorm_fwd"); }

static double gelu_ref(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double silu_ref(double x) { return x / (1.0 + exp(-x)); }

static void activation_cases(ex_backend *be, obuf *ob) {
    const int64_t sizes[] = {91, 100003};
    for (int z = 0; z < 2; z++)
        for (int f = 0; f < 2; f++)
            for (int inplace = 0; inplace < 2; inplace++) {
                scope s = {.be = be};
                const int64_t n = sizes[z];
                float *x = rnd(&s, n, 31 + z, -6, 6);
                float *dx = upf(&s, x, n), *dy = inplace ? dx : d_alloc(&s, n * sizeof(float));
                if (f == 0)
                    OK(CALL(be, gelu_fwd, dy, dx, n));
                else
                    OK(CALL(be, silu_fwd, dy, dx, n));
                float *y = down(&s, dy, n);
                double *ref = hd(&s, n);
                for (int64_t i = 0; i < n; i++) ref[i] = f == 0 ? gelu_ref(x[i]) : silu_ref(x[i]);
                expect_close(y, ref, n, 1e-6, 1e-5, f == 0 ? "gelu_fwd" : "silu_fwd");
                ob_f(ob, y, n);
                scope_end(&s);
            }
}
static void test_activations(void **state) { all_threads(state, activation_cases, "gelu/silu fwd"); }

/* layernorm_fwd_bf16 and gelu_fwd_bf16 write, bit for bit, the fp32 slot's value rounded to nearest even
 * (ex_f32_to_bf16), with the same mean and rstd; the inputs include values on bf16 rounding ties. */
static void bf16_output_cases(ex_backend *be, obuf *ob) {
    for (int z = 0; z < 2; z++) {
        const int64_t n = k_rows[z][0], c = k_rows[z][1];
        for (int affine = 0; affine < 4; affine++) {
            scope s = {.be = be};
            float *x = rnd(&s, n * c, 41 + z, -1, 3), *w = rnd(&s, c, 42, 0.5f, 1.5f), *b = rnd(&s, c, 43, -1, 1);
            float *dx = upf(&s, x, n * c), *dw = upf(&s, w, c), *db = upf(&s, b, c);
            const float *pw = (affine & 1) ? dw : NULL, *pb = (affine & 2) ? db : NULL;
            float *dy = d_alloc(&s, n * c * sizeof(float)), *dm = d_alloc(&s, n * sizeof(float)),
                  *dr = d_alloc(&s, n * sizeof(float)), *dm2 = d_alloc(&s, n * sizeof(float)),
                  *dr2 = d_alloc(&s, n * sizeof(float));
            uint16_t *dh = d_alloc(&s, n * c * sizeof(uint16_t));
            OK(CALL(be, layernorm_fwd, dy, dm, dr, dx, pw, pb, n, c, 1e-6f));
            OK(CALL(be, layernorm_fwd_bf16, dh, dm2, dr2, dx, pw, pb, n, c, 1e-6f));
            float *y = down(&s, dy, n * c), *m = down(&s, dm, n), *r = down(&s, dr, n), *m2 = down(&s, dm2, n),
                  *r2 = down(&s, dr2, n);
            uint16_t *h = h_alloc(&s, n * c * sizeof(uint16_t));
            OK(be->vt.copy(be->ctx, h, dh, n * c * sizeof(uint16_t), EX_COPY_D2H));
            int changed = 0;
            for (int64_t i = 0; i < n * c; i++) {
                if (h[i] != ex_f32_to_bf16(y[i]))
                    fail_msg("layernorm_fwd_bf16 (affine %d): element %lld is 0x%04x, the fp32 value %.9g rounds to "
                             "0x%04x", affine, (long long)i, h[i], (double)y[i], ex_f32_to_bf16(y[i]));
                changed += ex_bf16_to_f32(h[i]) != y[i];
            }
            assert_true(changed > n * c / 2); /* it did round */
            assert_memory_equal(m, m2, n * sizeof(float));
            assert_memory_equal(r, r2, n * sizeof(float));
            ob_put(ob, h, n * c * sizeof(uint16_t));
            scope_end(&s);
        }
        scope s = {.be = be};
        const int64_t ng = n * c + 7;
        float *x = rnd(&s, ng, 44 + z, -6, 6);
        /* a few inputs whose GELU is exactly a bf16 tie: x large, gelu(x) = x to fp32 precision */
        const float ties[] = {8.03125f, 8.09375f, 12.03125f, -0.0f, 0.0f, 1e-30f, -1e-30f};
        for (int k = 0; k < 7; k++) x[k] = ties[k];
        float *dx = upf(&s, x, ng), *dy = d_alloc(&s, ng * sizeof(float));
        uint16_t *dh = d_alloc(&s, ng * sizeof(uint16_t));
        OK(CALL(be, gelu_fwd, dy, dx, ng));
        OK(CALL(be, gelu_fwd_bf16, dh, dx, ng));
        float *y = down(&s, dy, ng);
        uint16_t *h = h_alloc(&s, ng * sizeof(uint16_t));
        OK(be->vt.copy(be->ctx, h, dh, ng * sizeof(uint16_t), EX_COPY_D2H));
        for (int64_t i = 0; i < ng; i++)
            if (h[i] != ex_f32_to_bf16(y[i]))
                fail_msg("gelu_fwd_bf16: element %lld is 0x%04x, the fp32 value %.9g rounds to 0x%04x", (long long)i,
                         h[i], (double)y[i], ex_f32_to_bf16(y[i]));
        /* ties round to even: 8.03125 is 0x41008000 -> 0x4100, 8.09375 is 0x41018000 -> 0x4102 */
        assert_int_equal(h[0], 0x4100);
        assert_int_equal(h[1], 0x4102);
        assert_int_equal(h[2], 0x4140);
        ob_put(ob, h, ng * sizeof(uint16_t));
        scope_end(&s);
    }
}
static void test_bf16_outputs(void **state) { all_threads(state, bf16_output_cases, "layernorm/gelu fwd bf16"); }

/* GELU to float precision over a dense grid of [-10, 10]: the forward within 2 float ulps plus
 * 0.5 |x| 6e-8 (erf's own error) of the double-precision formula, the backward (gradient of 1)
 * within 3e-7 of the exact derivative. Tighter than activation_cases' bounds: an approximate
 * erf (tanh form, a short polynomial) fails it. */
static void gelu_accuracy_cases(ex_backend *be, obuf *ob) {
    scope s = {.be = be};
    const int64_t n = 400001;
    float *x = hf(&s, n), *ones = hf(&s, n);
    for (int64_t i = 0; i < n; i++) x[i] = -10.0f + 20.0f * (float)i / (float)(n - 1), ones[i] = 1.0f;
    float *dx = upf(&s, x, n), *dy = d_alloc(&s, n * sizeof(float)), *dg = upf(&s, ones, n);
    float *dd = d_alloc(&s, n * sizeof(float));
    OK(be->vt.fill(be->ctx, dd, 0.0f, n));
    OK(CALL(be, gelu_fwd, dy, dx, n));
    OK(CALL(be, gelu_bwd, dd, dx, dg, n));
    const float *y = down(&s, dy, n), *g = down(&s, dd, n);
    double worst_f = 0.0, worst_b = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double xi = x[i], ref = gelu_ref(xi);
        const double tol = 2.0 * fabs((double)nextafterf((float)ref, INFINITY) - (float)ref) + 0.5 * fabs(xi) * 6e-8 + 1e-30;
        const double ef = fabs((double)y[i] - ref) / tol;
        if (ef > worst_f) worst_f = ef;
        const double dref = 0.5 * (1.0 + erf(xi / sqrt(2.0))) + xi * exp(-0.5 * xi * xi) / sqrt(2.0 * M_PI);
        const double eb = fabs((double)g[i] - dref);
        if (eb > worst_b) worst_b = eb;
    }
    if (!(worst_f <= 1.0)) fail_msg("gelu_fwd: error %.3g times its bound", worst_f);
    if (!(worst_b <= 3e-7)) fail_msg("gelu_bwd: error %.3g > 3e-7", worst_b);
    /* gelu_bwd_inplace on a random incoming gradient: bit for bit what gelu_bwd adds into zeros */
    float *r = rnd(&s, n, 77, -2, 2);
    float *dr = upf(&s, r, n), *dz = d_alloc(&s, n * sizeof(float));
    OK(be->vt.fill(be->ctx, dz, 0.0f, n));
    OK(CALL(be, gelu_bwd, dz, dx, dr, n));
    OK(CALL(be, gelu_bwd_inplace, dr, dx, n));
    const float *gz = down(&s, dz, n), *gi = down(&s, dr, n);
    for (int64_t i = 0; i < n; i++)
        if (gi[i] != gz[i])
            fail_msg("gelu_bwd_inplace: element %lld is %.9g, gelu_bwd into zeros gives %.9g", (long long)i, (double)gi[i],
                     (double)gz[i]);
    ob_f(ob, y, n);
    ob_f(ob, g, n);
    ob_f(ob, gi, n);
    scope_end(&s);
}
static void test_gelu_accuracy(void **state) { all_threads(state, gelu_accuracy_cases, "gelu accuracy"); }

static void softmax_cases(ex_backend *be, obuf *ob) {
    const float scales[] = {0.37f, -1.3f, 2.0f};
    for (int z = 0; z < 2; z++)
        for (int sc = 0; sc < 3; sc++) {
            scope s = {.be = be};
            const int64_t n = k_rows[z][0], c = k_rows[z][1];
            float *x = rnd(&s, n * c, 41 + z, -100, 100); /* exp(scale*x - max x) overflows: max of scale*x needed */
            float *dx = upf(&s, x, n * c), *dy = d_alloc(&s, n * c * sizeof(float));
            OK(CALL(be, softmax_fwd, dy, dx, n, c, scales[sc]));
            float *y = down(&s, dy, n * c);
            double *ref = hd(&s, n * c);
            for (int64_t i = 0; i < n; i++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < c; j++) mx = fmax(mx, (double)scales[sc] * x[i * c + j]);
                for (int64_t j = 0; j < c; j++) sum += exp((double)scales[sc] * x[i * c + j] - mx);
                for (int64_t j = 0; j < c; j++) ref[i * c + j] = exp((double)scales[sc] * x[i * c + j] - mx) / sum;
            }
            expect_close(y, ref, n * c, 1e-7, 2e-5, "softmax_fwd");
            ob_f(ob, y, n * c);
            scope_end(&s);
        }
}
static void test_softmax(void **state) { all_threads(state, softmax_cases, "softmax_fwd"); }

/* ------------------------------------------------------------------------------
 * Attention
 * ------------------------------------------------------------------------------ */

/* Naive attention in double: qkv (b, t, 3, nh, hs) -> out (b, t, nh*hs), lse (b, nh, t). */
static void ref_attention(const float *qkv, double *out, double *lse, int64_t b, int64_t t, int64_t nh, int64_t hs,
                          double scale) {
    const int64_t C = nh * hs;
    double *srow = malloc((size_t)t * sizeof(double));
    assert_non_null(srow);
    for (int64_t bi = 0; bi < b; bi++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t i = 0; i < t; i++) {
                const float *q = qkv + ((bi * t + i) * 3 + 0) * C + h * hs;
                double mx = -INFINITY;
                for (int64_t j = 0; j < t; j++) {
                    const float *k = qkv + ((bi * t + j) * 3 + 1) * C + h * hs;
                    double d = 0;
                    for (int64_t x = 0; x < hs; x++) d += (double)q[x] * k[x];
                    srow[j] = scale * d;
                    mx = fmax(mx, srow[j]);
                }
                double sum = 0;
                for (int64_t j = 0; j < t; j++) sum += exp(srow[j] - mx);
                double l = mx + log(sum);
                lse[(bi * nh + h) * t + i] = l;
                for (int64_t x = 0; x < hs; x++) {
                    double acc = 0;
                    for (int64_t j = 0; j < t; j++) acc += exp(srow[j] - l) * qkv[((bi * t + j) * 3 + 2) * C + h * hs + x];
                    out[(bi * t + i) * C + h * hs + x] = acc;
                }
            }
    free(srow);
}

static const int64_t k_att[][4] = {{2, 11, 3, 5}, {2, 70, 2, 8}, {1, 1, 1, 4}, {3, 33, 2, 7}, {1, 130, 2, 4}}; /* b, t, nh, hs */

static void attention_cases(ex_backend *be, obuf *ob) {
    for (size_t z = 0; z < sizeof k_att / sizeof *k_att; z++) {
        scope s = {.be = be};
        const int64_t b = k_att[z][0], t = k_att[z][1], nh = k_att[z][2], hs = k_att[z][3], C = nh * hs;
        const float scale = 1.0f / sqrtf((float)hs);
        float *qkv = rnd(&s, b * t * 3 * C, 51 + z, -2, 2);
        float *dq = upf(&s, qkv, b * t * 3 * C), *dout = d_alloc(&s, b * t * C * sizeof(float)),
              *dl = d_alloc(&s, b * nh * t * sizeof(float));
        OK(CALL(be, attention_fwd, dout, dl, dq, b, t, nh, hs, scale));
        float *out = down(&s, dout, b * t * C), *lse = down(&s, dl, b * nh * t);
        double *rout = hd(&s, b * t * C), *rlse = hd(&s, b * nh * t);
        ref_attention(qkv, rout, rlse, b, t, nh, hs, scale);
        expect_close(out, rout, b * t * C, 1e-5, 1e-5, "attention_fwd out");
        expect_close(lse, rlse, b * nh * t, 1e-5, 1e-5, "attention_fwd lse");
        ob_f(ob, out, b * t * C);
        ob_f(ob, lse, b * nh * t);
        scope_end(&s);
    }
}
static void test_attention(void **state) { all_threads(state, attention_cases, "attention_fwd"); }

/* to_bf16 rounds to nearest even, bit for bit as ex_f32_to_bf16 (ties, the largest finite values, inf, NaN). */
static void to_bf16_cases(ex_backend *be, obuf *ob) {
    scope s = {.be = be};
    const int64_t n = 70001; /* past the parallel threshold */
    float *x = rnd(&s, (size_t)n, 71, -3e4f, 3e4f);
    const uint32_t special[] = {0x3f808000u /* tie, even below */, 0x3f818000u /* tie, odd below: up */,
                                0x3f808001u, 0x7f7fffffu /* max: rounds to inf */, 0x7f800000u, 0xff800000u,
                                0x7fc00001u /* NaN stays NaN */, 0x00000001u, 0x80000000u};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) memcpy(&x[i], &special[i], 4);
    float *dx = upf(&s, x, (size_t)n);
    uint16_t *dy = d_alloc(&s, (size_t)n * 2);
    OK(CALL(be, to_bf16, dy, dx, n));
    uint16_t *y = h_alloc(&s, (size_t)n * 2);
    assert_int_equal(be->vt.copy(be->ctx, y, dy, (size_t)n * 2, EX_COPY_D2H), EX_OK);
    for (int64_t i = 0; i < n; i++) {
        const uint16_t want = ex_f32_to_bf16(x[i]);
        if (y[i] != want && !(isnan(x[i]) && (y[i] & 0x7f80) == 0x7f80 && (y[i] & 0x7f)))
            fail_msg("to_bf16: element %lld (%.9g) is 0x%04x, expected 0x%04x", (long long)i, (double)x[i], y[i], want);
    }
    ob_put(ob, y, (size_t)n * 2);
    scope_end(&s);
}
static void test_to_bf16(void **state) { all_threads(state, to_bf16_cases, "to_bf16"); }

/* attention_fwd_bf16 on the CPU: its bf16 output is the fp32 slot's output on the widened qkv, rounded, and its
 * lse is the fp32 slot's, bit for bit; both near the double reference. */
static void attention_bf16_cases(ex_backend *be, obuf *ob) {
    for (size_t z = 0; z < sizeof k_att / sizeof *k_att; z++) {
        scope s = {.be = be};
        const int64_t b = k_att[z][0], t = k_att[z][1], nh = k_att[z][2], hs = k_att[z][3], C = nh * hs;
        const int64_t NQ = b * t * 3 * C, NO = b * t * C;
        const float scale = 1.0f / sqrtf((float)hs);
        float *qkv = rnd(&s, (size_t)NQ, 81 + z, -2, 2);
        uint16_t *q16 = h_alloc(&s, (size_t)NQ * 2);
        for (int64_t i = 0; i < NQ; i++) q16[i] = ex_f32_to_bf16(qkv[i]), qkv[i] = ex_bf16_to_f32(q16[i]);
        uint16_t *dq16 = up(&s, q16, (size_t)NQ * 2), *do16 = d_alloc(&s, (size_t)NO * 2);
        float *dq = upf(&s, qkv, (size_t)NQ), *dout = d_alloc(&s, (size_t)NO * sizeof(float));
        float *dl16 = d_alloc(&s, (size_t)(b * nh * t) * sizeof(float)), *dl = d_alloc(&s, (size_t)(b * nh * t) * sizeof(float));
        OK(CALL(be, attention_fwd_bf16, do16, dl16, dq16, b, t, nh, hs, scale));
        OK(CALL(be, attention_fwd, dout, dl, dq, b, t, nh, hs, scale));
        uint16_t *o16 = h_alloc(&s, (size_t)NO * 2);
        assert_int_equal(be->vt.copy(be->ctx, o16, do16, (size_t)NO * 2, EX_COPY_D2H), EX_OK);
        float *o32 = down(&s, dout, (size_t)NO), *l16 = down(&s, dl16, (size_t)(b * nh * t)),
              *l32 = down(&s, dl, (size_t)(b * nh * t));
        for (int64_t i = 0; i < NO; i++)
            if (o16[i] != ex_f32_to_bf16(o32[i]))
                fail_msg("attention_fwd_bf16: out[%lld] is 0x%04x, the fp32 slot's %.9g rounds to 0x%04x", (long long)i,
                         o16[i], (double)o32[i], ex_f32_to_bf16(o32[i]));
        assert_memory_equal(l16, l32, (size_t)(b * nh * t) * sizeof(float));
        double *rout = hd(&s, (size_t)NO), *rlse = hd(&s, (size_t)(b * nh * t));
        ref_attention(qkv, rout, rlse, b, t, nh, hs, scale);
        float *ow = hf(&s, (size_t)NO);
        for (int64_t i = 0; i < NO; i++) ow[i] = ex_bf16_to_f32(o16[i]);
        expect_close(ow, rout, (size_t)NO, 1e-5, 1.0 / 256, "attention_fwd_bf16 out (within bf16 rounding)");
        ob_put(ob, o16, (size_t)NO * 2);
        ob_f(ob, l16, (size_t)(b * nh * t));
        scope_end(&s);
    }
}
static void test_attention_bf16(void **state) { all_threads(state, attention_bf16_cases, "attention_fwd_bf16"); }

/* attention_bwd_bf16 on the CPU: the fp32 backward's gradient at the widened qkv (D from the probabilities, not
 * from the rounded output), written over whatever dqkv held (NaN here), the same for every thread count. The
 * finite-difference check is in test_gradcheck. */
static void attention_bwd_bf16_cases(ex_backend *be, obuf *ob) {
    for (size_t z = 0; z < sizeof k_att / sizeof *k_att; z++) {
        scope s = {.be = be};
        const int64_t b = k_att[z][0], t = k_att[z][1], nh = k_att[z][2], hs = k_att[z][3], C = nh * hs;
        const int64_t NQ = b * t * 3 * C, NO = b * t * C, NL = b * nh * t;
        const float scale = 1.0f / sqrtf((float)hs);
        float *qkv = rnd(&s, (size_t)NQ, 91 + z, -2, 2), *g = rnd(&s, (size_t)NO, 95 + z, -1, 1);
        float *zero = hf(&s, (size_t)NQ), *nan = hf(&s, (size_t)NQ);
        for (int64_t i = 0; i < NQ; i++) nan[i] = NAN;
        for (int64_t i = 0; i < NQ; i++) qkv[i] = ex_bf16_to_f32(ex_f32_to_bf16(qkv[i]));
        float *dq = upf(&s, qkv, (size_t)NQ), *dout = d_alloc(&s, (size_t)NO * sizeof(float));
        float *dl = d_alloc(&s, (size_t)NL * sizeof(float)), *dl16 = d_alloc(&s, (size_t)NL * sizeof(float));
        uint16_t *dq16 = d_alloc(&s, (size_t)NQ * 2), *do16 = d_alloc(&s, (size_t)NO * 2);
        float *dg = upf(&s, g, (size_t)NO), *acc32 = upf(&s, zero, (size_t)NQ), *acc16 = upf(&s, nan, (size_t)NQ);
        OK(CALL(be, to_bf16, dq16, dq, NQ));
        OK(CALL(be, attention_fwd, dout, dl, dq, b, t, nh, hs, scale));
        OK(CALL(be, attention_fwd_bf16, do16, dl16, dq16, b, t, nh, hs, scale));
        OK(CALL(be, attention_bwd, acc32, dg, dout, dl, dq, b, t, nh, hs, scale));
        OK(CALL(be, attention_bwd_bf16, acc16, dg, do16, dl16, dq16, b, t, nh, hs, scale));
        float *r32 = down(&s, acc32, (size_t)NQ), *r16 = down(&s, acc16, (size_t)NQ);
        double *ref = hd(&s, (size_t)NQ);
        for (int64_t i = 0; i < NQ; i++) ref[i] = r32[i];
        /* the fp32 slot had the unrounded output for D; the two agree to float32 rounding */
        expect_close(r16, ref, (size_t)NQ, 2e-6, 2e-5, "attention_bwd_bf16 against attention_bwd");
        double mx = 0;
        for (int64_t i = 0; i < NQ; i++) mx = fmax(mx, fabs((double)r16[i]));
        if (!(mx > 1e-3)) fail_msg("attention_bwd_bf16 wrote ~0 (max %.3g): the check would prove nothing", mx);
        ob_f(ob, r16, (size_t)NQ);
        scope_end(&s);
    }
}
static void test_attention_bwd_bf16(void **state) {
    all_threads(state, attention_bwd_bf16_cases, "attention_bwd_bf16");
}

/* residual_fwd / residual_bwd: the bits of the unfused ops they replace (channel_scale_fwd, row_scale_fwd, binary
 * add; row_scale_fwd, channel_scale_bwd, channel_scale_fwd), for LayerScale and drop path each present or absent,
 * dls NULL or not, dbranch aliasing dres, and out aliasing resid. */
static void residual_cases(ex_backend *be, obuf *ob) {
    const int64_t b = 3, t = 70, c = 200, n = b * t, N = n * c; /* past the parallel thresholds */
    for (int mode = 0; mode < 4; mode++) {
        const int has_ls = mode & 1, has_drop = mode & 2;
        scope s = {.be = be};
        float *res = rnd(&s, (size_t)N, 111 + mode, -2, 2), *br = rnd(&s, (size_t)N, 115 + mode, -3, 3);
        float *g = rnd(&s, (size_t)N, 119 + mode, -1, 1), *ls = rnd(&s, (size_t)c, 123 + mode, -0.5f, 1.5f);
        float *dls0 = rnd(&s, (size_t)c, 127 + mode, -1, 1);
        const float drop[3] = {0.0f, 1.25f, 0.8f};
        float *dres = upf(&s, res, (size_t)N), *dbr = upf(&s, br, (size_t)N), *dg = upf(&s, g, (size_t)N);
        float *dls = has_ls ? upf(&s, ls, (size_t)c) : NULL, *ddrop = has_drop ? upf(&s, drop, 3) : NULL;
        float *o1 = d_alloc(&s, (size_t)N * 4), *o2 = d_alloc(&s, (size_t)N * 4), *tmp = d_alloc(&s, (size_t)N * 4);
        /* forward: fused, and the unfused chain (as the block ran it) */
        OK(CALL(be, residual_fwd, o1, dres, dbr, dls, ddrop, b, t, c));
        const float *src = dbr;
        if (dls) OK(CALL(be, channel_scale_fwd, tmp, src, dls, n, c)), src = tmp;
        if (ddrop) OK(CALL(be, row_scale_fwd, tmp, src, ddrop, b, t * c)), src = tmp;
        OK(CALL(be, binary, EX_BIN_ADD, o2, dres, src, N));
        float *h1 = down(&s, o1, (size_t)N), *h2 = down(&s, o2, (size_t)N);
        assert_memory_equal(h1, h2, (size_t)N * 4);
        ob_f(ob, h1, (size_t)N);
        float *ra = upf(&s, res, (size_t)N); /* out aliasing resid */
        OK(CALL(be, residual_fwd, ra, ra, dbr, dls, ddrop, b, t, c));
        assert_memory_equal(down(&s, ra, (size_t)N), h2, (size_t)N * 4);
        /* backward: fused (dls accumulating into a prefilled buffer), unfused, and fused in place over dres */
        float *acc1 = upf(&s, dls0, (size_t)c), *acc2 = upf(&s, dls0, (size_t)c);
        OK(CALL(be, residual_bwd, o1, has_ls ? acc1 : NULL, dg, dbr, dls, ddrop, b, t, c));
        const float *gg = dg;
        if (ddrop) OK(CALL(be, row_scale_fwd, o2, dg, ddrop, b, t * c)), gg = o2;
        if (dls) {
            OK(CALL(be, channel_scale_bwd, NULL, acc2, gg, dbr, dls, n, c));
            OK(CALL(be, channel_scale_fwd, o2, gg, dls, n, c));
        } else if (!ddrop) {
            OK(CALL(be, copy2d, o2, c, dg, c, n, c));
        }
        h1 = down(&s, o1, (size_t)N), h2 = down(&s, o2, (size_t)N);
        assert_memory_equal(h1, h2, (size_t)N * 4);
        assert_memory_equal(down(&s, acc1, (size_t)c), down(&s, acc2, (size_t)c), (size_t)c * 4);
        float *gi = upf(&s, g, (size_t)N); /* dbranch aliasing dres */
        float *acc3 = upf(&s, dls0, (size_t)c);
        OK(CALL(be, residual_bwd, gi, has_ls ? acc3 : NULL, gi, dbr, dls, ddrop, b, t, c));
        assert_memory_equal(down(&s, gi, (size_t)N), h2, (size_t)N * 4);
        assert_memory_equal(down(&s, acc3, (size_t)c), down(&s, acc2, (size_t)c), (size_t)c * 4);
        /* and the values: dbranch = g * drop * ls, dls moved from its prefill when LayerScale is there */
        double *want = hd(&s, (size_t)N);
        for (int64_t i = 0; i < N; i++)
            want[i] = (double)g[i] * (has_drop ? drop[i / (t * c)] : 1.0) * (has_ls ? ls[i % c] : 1.0);
        expect_close(h1, want, (size_t)N, 1e-6, 1e-6, "residual_bwd dbranch");
        ob_f(ob, h1, (size_t)N);
        ob_f(ob, down(&s, acc1, (size_t)c), (size_t)c);
        scope_end(&s);
    }
}
static void test_residual(void **state) { all_threads(state, residual_cases, "residual_fwd/bwd"); }

/* residual_fwd and residual_bwd: a block uses the pair together. */
static void test_residual_pair_required(void **state) {
    const size_t offs[2] = {offsetof(ex_backend_vtable, residual_fwd), offsetof(ex_backend_vtable, residual_bwd)};
    expect_slots_together(state, offs, 2, "residual_fwd and residual_bwd");
}

/* to_bf16, attention_fwd_bf16 and attention_bwd_bf16: a block keeping activations in bf16 uses the three. */
static void test_attention_bf16_slots_together(void **state) {
    const size_t offs[3] = {offsetof(ex_backend_vtable, to_bf16), offsetof(ex_backend_vtable, attention_fwd_bf16),
                            offsetof(ex_backend_vtable, attention_bwd_bf16)};
    expect_slots_together(state, offs, 3, "attention in bf16");
}


/* ------------------------------------------------------------------------------
 * Elementwise and reduce
 * ------------------------------------------------------------------------------ */

static void binary_cases(ex_backend *be, obuf *ob) {
    const int64_t sizes[] = {91, 100003};
    for (int z = 0; z < 2; z++)
        for (int op = 0; op < 4; op++)
            for (int alias = 0; alias < 3; alias++) { /* 0: separate out, 1: out = a, 2: out = b */
                scope s = {.be = be};
                const int64_t n = sizes[z];
                float *a = rnd(&s, n, 61 + z, -2, 2), *b = rnd(&s, n, 62 + z, 0.5f, 2.5f);
                float *da = upf(&s, a, n), *db = upf(&s, b, n);
                float *dy = alias == 1 ? da : alias == 2 ? db : d_alloc(&s, n * sizeof(float));
                OK(CALL(be, binary, (ex_binary_op)op, dy, da, db, n));
                float *y = down(&s, dy, n);
                double *ref = hd(&s, n);
                for (int64_t i = 0; i < n; i++) {
                    double x = a[i], w = b[i];
                    ref[i] = op == EX_BIN_ADD ? x + w : op == EX_BIN_SUB ? x - w : op == EX_BIN_MUL ? x * w : x / w;
                }
                expect_close(y, ref, n, 1e-7, 1e-6, "binary");
                ob_f(ob, y, n);
                scope_end(&s);
            }
}
static void test_binary(void **state) { all_threads(state, binary_cases, "binary"); }

static void axpby_cases(ex_backend *be, obuf *ob) {
    const int64_t sizes[] = {91, 100003};
    const float betas[] = {0.0f, 1.0f, 0.3f};
    for (int z = 0; z < 2; z++)
        for (int k = 0; k < 3; k++) {
            scope s = {.be = be};
            const int64_t n = sizes[z];
            const float alpha = -0.7f, beta = betas[k];
            float *x = rnd(&s, n, 71 + z, -2, 2), *y0 = rnd(&s, n, 72 + z, -2, 2);
            if (beta == 0.0f)
                for (int64_t i = 0; i < n; i++) y0[i] = NAN; /* not read */
            float *dx = upf(&s, x, n), *dy = upf(&s, y0, n);
            OK(CALL(be, axpby, dy, alpha, dx, beta, n));
            float *y = down(&s, dy, n);
            double *ref = hd(&s, n);
            for (int64_t i = 0; i < n; i++) ref[i] = (double)alpha * x[i] + (beta != 0.0f ? (double)beta * y0[i] : 0.0);
            expect_close(y, ref, n, 1e-6, 1e-6, "axpby");
            ob_f(ob, y, n);
            scope_end(&s);
        }
}
static void test_axpby(void **state) { all_threads(state, axpby_cases, "axpby"); }

static void scale_cases(ex_backend *be, obuf *ob) {
    for (int z = 0; z < 2; z++)
        for (int per_row = 0; per_row < 2; per_row++)
            for (int inplace = 0; inplace < 2; inplace++) {
                scope s = {.be = be};
                const int64_t n = k_rows[z][0], c = k_rows[z][1];
                float *x = rnd(&s, n * c, 81 + z, -2, 2), *g = rnd(&s, per_row ? n : c, 82 + z, -1, 1);
                float *dx = upf(&s, x, n * c), *dg = upf(&s, g, per_row ? n : c);
                float *dy = inplace ? dx : d_alloc(&s, n * c * sizeof(float));
                if (per_row)
                    OK(CALL(be, row_scale_fwd, dy, dx, dg, n, c));
                else
                    OK(CALL(be, channel_scale_fwd, dy, dx, dg, n, c));
                float *y = down(&s, dy, n * c);
                double *ref = hd(&s, n * c);
                for (int64_t i = 0; i < n; i++)
                    for (int64_t j = 0; j < c; j++) ref[i * c + j] = (double)x[i * c + j] * g[per_row ? i : j];
                expect_close(y, ref, n * c, 1e-7, 1e-6, per_row ? "row_scale_fwd" : "channel_scale_fwd");
                ob_f(ob, y, n * c);
                scope_end(&s);
            }
}
static void test_scales(void **state) { all_threads(state, scale_cases, "channel/row scale"); }

static void reduce_cases(ex_backend *be, obuf *ob) {
    const int64_t sizes[] = {7, 8193, 100003, 3000017};
    for (int z = 0; z < 4; z++)
        for (int op = 0; op < 4; op++) {
            scope s = {.be = be};
            const int64_t n = sizes[z];
            float *x = rnd(&s, n, 91 + z, -1, 3);
            float *dx = upf(&s, x, n), *dy = d_alloc(&s, sizeof(float));
            OK(CALL(be, reduce, (ex_reduce_op)op, dy, dx, n));
            float *y = down(&s, dy, 1);
            double ref = 0;
            for (int64_t i = 0; i < n; i++) {
                double v = x[i];
                if (op == EX_RED_SUM || op == EX_RED_MEAN) ref += v;
                if (op == EX_RED_SUMSQ) ref += v * v;
                if (op == EX_RED_MAX_ABS) ref = fmax(ref, fabs(v));
            }
            if (op == EX_RED_MEAN) ref /= (double)n;
            expect_close(y, &ref, 1, 0, op == EX_RED_MAX_ABS ? 0 : 1e-6, "reduce");
            ob_f(ob, y, 1);
            scope_end(&s);
        }
    /* max |x| propagates NaN (a NaN gradient must not be hidden from clipping) */
    scope s = {.be = be};
    const int64_t n = 100003;
    float *x = rnd(&s, n, 99, -1, 1);
    x[77777] = NAN;
    float *dx = upf(&s, x, n), *dy = d_alloc(&s, sizeof(float));
    OK(CALL(be, reduce, EX_RED_MAX_ABS, dy, dx, n));
    float *y = down(&s, dy, 1);
    assert_true(isnan(y[0]));
    OK(CALL(be, reduce, EX_RED_SUM, dy, dx, 0));
    y = down(&s, dy, 1);
    assert_true(y[0] == 0.0f);
    scope_end(&s);
}
static void test_reduce(void **state) { all_threads(state, reduce_cases, "reduce"); }

/* exp_fwd (exp of a scaled input, nothing subtracted; in place too) and row_sum (in double, so a float
 * accumulator over 131072 columns would miss the tolerance). */
static void exp_rowsum_cases(ex_backend *be, obuf *ob) {
    assert_non_null(be->vt.exp_fwd);
    assert_non_null(be->vt.row_sum);
    const int64_t shapes[3][2] = {{7, 13}, {3, 131072}, {300, 1}};
    for (int z = 0; z < 3; z++) {
        scope s = {.be = be};
        const int64_t n = shapes[z][0], c = shapes[z][1];
        float *x = rnd(&s, n * c, 120 + z, -1, 1);
        if (z == 1) x[5] = 1.0f, x[6] = 3.0f; /* exp(25 * 3) = 3.7e32: fp32 range, no max subtracted */
        float *dx = upf(&s, x, n * c), *dy = d_alloc(&s, (size_t)(n * c) * sizeof(float));
        const float scale = 25.0f;
        OK(CALL(be, exp_fwd, dy, dx, scale, n * c));
        float *y = down(&s, dy, n * c);
        double *ref = hd(&s, n * c), *rs = hd(&s, n);
        for (int64_t i = 0; i < n * c; i++) ref[i] = exp((double)(scale * x[i]));
        expect_close(y, ref, (size_t)(n * c), 0, 2e-6, "exp_fwd");
        OK(CALL(be, exp_fwd, dx, dx, scale, n * c)); /* in place */
        expect_close(down(&s, dx, n * c), ref, (size_t)(n * c), 0, 2e-6, "exp_fwd in place");
        /* row sums of the exp values: wide dynamic range */
        float *dr = d_alloc(&s, (size_t)n * sizeof(float));
        OK(CALL(be, row_sum, dr, dy, n, c));
        for (int64_t i = 0; i < n; i++) {
            rs[i] = 0.0;
            for (int64_t j = 0; j < c; j++) rs[i] += (double)y[i * c + j];
        }
        float *r = down(&s, dr, n);
        expect_close(r, rs, (size_t)n, 0, 1e-6, "row_sum");
        ob_f(ob, y, n * c);
        ob_f(ob, r, n);
        scope_end(&s);
    }
    /* overflow is inf (as DINOv2's fp32 exp), not a clamp */
    scope s = {.be = be};
    float big = 100.0f;
    float *dx = upf(&s, &big, 1), *dy = d_alloc(&s, sizeof(float));
    OK(CALL(be, exp_fwd, dy, dx, 1.0f, 1));
    assert_true(isinf(down(&s, dy, 1)[0]));
    scope_end(&s);
}
static void test_exp_row_sum(void **state) { all_threads(state, exp_rowsum_cases, "exp_fwd/row_sum"); }

/* exp_fwd and row_sum: the objectives use the pair together. */
static void test_exp_row_sum_pair_required(void **state) {
    const size_t offs[2] = {offsetof(ex_backend_vtable, exp_fwd), offsetof(ex_backend_vtable, row_sum)};
    expect_slots_together(state, offs, 2, "exp_fwd and row_sum");
}

/* ------------------------------------------------------------------------------
 * Gathers, masking, patchify, copy2d
 * ------------------------------------------------------------------------------ */

static void gather_cases(ex_backend *be, obuf *ob) {
    const int64_t cfg[2][4] = {{2, 5, 11, 13}, {3, 150, 197, 129}}; /* b, m, t, c */
    for (int z = 0; z < 2; z++) {
        scope s = {.be = be};
        const int64_t b = cfg[z][0], m = cfg[z][1], t = cfg[z][2], c = cfg[z][3];
        float *x = rnd(&s, b * t * c, 101 + z, -1, 1);
        int32_t *idx = h_alloc(&s, b * m * sizeof(int32_t));
        ex_rng r = ex_rng_seed(102 + z, EX_RNG_TEST);
        for (int64_t i = 0; i < b * m; i++) idx[i] = (int32_t)ex_rng_next_below(&r, (uint32_t)t);
        idx[1] = idx[0]; /* a repeat */
        float *dx = upf(&s, x, b * t * c), *dy = d_alloc(&s, b * m * c * sizeof(float));
        int32_t *di = up(&s, idx, b * m * sizeof(int32_t));
        OK(CALL(be, gather_rows, dy, dx, di, b, m, t, c));
        float *y = down(&s, dy, b * m * c);
        double *ref = hd(&s, b * m * c);
        for (int64_t bi = 0; bi < b; bi++)
            for (int64_t j = 0; j < m; j++)
                for (int64_t k = 0; k < c; k++) ref[(bi * m + j) * c + k] = x[(bi * t + idx[bi * m + j]) * c + k];
        expect_close(y, ref, b * m * c, 0, 0, "gather_rows");
        ob_f(ob, y, b * m * c);

        /* scatter_add_rows with repeated indices: prefill + sum of the rows sent to each target */
        float *g = rnd(&s, b * m * c, 103 + z, -1, 1), *pre = rnd(&s, b * t * c, 104 + z, -1, 1);
        float *dg = upf(&s, g, b * m * c), *dd = upf(&s, pre, b * t * c);
        OK(CALL(be, scatter_add_rows, dd, dg, di, b, m, t, c));
        float *d = down(&s, dd, b * t * c);
        double *rd = hd(&s, b * t * c);
        for (int64_t i = 0; i < b * t * c; i++) rd[i] = pre[i];
        for (int64_t bi = 0; bi < b; bi++)
            for (int64_t j = 0; j < m; j++)
                for (int64_t k = 0; k < c; k++) rd[(bi * t + idx[bi * m + j]) * c + k] += g[(bi * m + j) * c + k];
        expect_close(d, rd, b * t * c, 1e-6, 1e-6, "scatter_add_rows");
        ob_f(ob, d, b * t * c);

        /* out-of-range index */
        idx[b * m - 1] = (int32_t)t;
        int32_t *bad = up(&s, idx, b * m * sizeof(int32_t));
        assert_int_equal(CALL(be, gather_rows, dy, dx, bad, b, m, t, c), EX_E_RANGE);
        idx[b * m - 1] = -1;
        bad = up(&s, idx, b * m * sizeof(int32_t));
        assert_int_equal(CALL(be, scatter_add_rows, dd, dg, bad, b, m, t, c), EX_E_RANGE);
        scope_end(&s);
    }
}
static void test_gather(void **state) { all_threads(state, gather_cases, "gather/scatter rows"); }

static void mask_cases(ex_backend *be, obuf *ob) {
    for (int z = 0; z < 2; z++)
        for (int inplace = 0; inplace < 2; inplace++) {
            scope s = {.be = be};
            const int64_t n = k_rows[z][0], c = k_rows[z][1];
            float *x = rnd(&s, n * c, 111 + z, -1, 1), *tok = rnd(&s, c, 112, -1, 1);
            uint8_t *mask = h_alloc(&s, n);
            for (int64_t i = 0; i < n; i++) mask[i] = (uint8_t)((i * 7 + 3) % 5 < 2 ? 1 + (i % 3) : 0);
            float *dx = upf(&s, x, n * c), *dt = upf(&s, tok, c), *dy = inplace ? dx : d_alloc(&s, n * c * sizeof(float));
            uint8_t *dm = up(&s, mask, n);
            OK(CALL(be, mask_rows_fwd, dy, dx, dm, dt, n, c));
            float *y = down(&s, dy, n * c);
            double *ref = hd(&s, n * c);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < c; j++) ref[i * c + j] = mask[i] ? tok[j] : x[i * c + j];
            expect_close(y, ref, n * c, 0, 0, "mask_rows_fwd");
            ob_f(ob, y, n * c);
            scope_end(&s);
        }
}
static void test_mask_rows(void **state) { all_threads(state, mask_cases, "mask_rows_fwd"); }

static void patchify_ref(const float *img, double *out, int64_t b, int64_t ch, int64_t h, int64_t w, int64_t p,
                         ex_patch_order order) {
    const int64_t gh = h / p, gw = w / p, pd = ch * p * p;
    for (int64_t bi = 0; bi < b; bi++)
        for (int64_t c = 0; c < ch; c++)
            for (int64_t y = 0; y < h; y++)
                for (int64_t x = 0; x < w; x++) {
                    int64_t patch = (y / p) * gw + x / p, i = y % p, j = x % p;
                    int64_t off = order == EX_PATCH_CPP ? (c * p + i) * p + j : (i * p + j) * ch + c;
                    out[(bi * gh * gw + patch) * pd + off] = img[((bi * ch + c) * h + y) * w + x];
                }
}

static void patchify_cases(ex_backend *be, obuf *ob) {
    const int64_t cfg[3][5] = {{2, 3, 8, 12, 4}, {1, 1, 6, 9, 3}, {2, 3, 64, 96, 16}}; /* b, ch, h, w, p */
    for (int z = 0; z < 3; z++)
        for (int order = 0; order < 2; order++) {
            scope s = {.be = be};
            const int64_t b = cfg[z][0], ch = cfg[z][1], h = cfg[z][2], w = cfg[z][3], p = cfg[z][4];
            const int64_t n = b * ch * h * w;
            float *img = rnd(&s, n, 121 + z, -1, 1);
            float *di = upf(&s, img, n), *dy = d_alloc(&s, n * sizeof(float));
            OK(CALL(be, patchify_fwd, dy, di, b, ch, h, w, p, (ex_patch_order)order));
            float *y = down(&s, dy, n);
            double *ref = hd(&s, n);
            patchify_ref(img, ref, b, ch, h, w, p, (ex_patch_order)order);
            expect_close(y, ref, n, 0, 0, order == EX_PATCH_CPP ? "patchify_fwd (C,p,p)" : "patchify_fwd (p,p,C)");
            ob_f(ob, y, n);
            /* sizes that are not multiples of p */
            assert_int_equal(CALL(be, patchify_fwd, dy, di, b, ch, h - 1, w, p, (ex_patch_order)order), EX_E_SHAPE);
            assert_int_equal(CALL(be, patchify_bwd, di, dy, b, ch, h, w + 1, p, (ex_patch_order)order), EX_E_SHAPE);
            scope_end(&s);
        }
}
static void test_patchify(void **state) { all_threads(state, patchify_cases, "patchify_fwd"); }

static void copy2d_cases(ex_backend *be, obuf *ob) {
    const int64_t cfg[3][4] = {{7, 5, 9, 11}, {1, 13, 13, 13}, {400, 197, 200, 260}}; /* rows, cols, src_ld, dst_ld */
    for (int z = 0; z < 3; z++) {
        scope s = {.be = be};
        const int64_t rows = cfg[z][0], cols = cfg[z][1], sld = cfg[z][2], dld = cfg[z][3];
        float *src = rnd(&s, rows * sld, 131 + z, -1, 1), *dst0 = rnd(&s, rows * dld, 132 + z, -1, 1);
        float *ds = upf(&s, src, rows * sld), *dd = upf(&s, dst0, rows * dld);
        OK(CALL(be, copy2d, dd, dld, ds, sld, rows, cols));
        float *d = down(&s, dd, rows * dld);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < dld; j++) {
                float want = j < cols ? src[r * sld + j] : dst0[r * dld + j]; /* padding untouched */
                if (d[r * dld + j] != want) fail_msg("copy2d: (%lld, %lld) wrong", (long long)r, (long long)j);
            }
        ob_f(ob, d, rows * dld);
        assert_int_equal(CALL(be, copy2d, dd, cols - 1, ds, sld, rows, cols), EX_E_INVALID);
        scope_end(&s);
    }
}
static void test_copy2d(void **state) { all_threads(state, copy2d_cases, "copy2d"); }

/* ------------------------------------------------------------------------------
 * Losses and heads
 * ------------------------------------------------------------------------------ */

static void xent_cases(ex_backend *be, obuf *ob) {
    for (int z = 0; z < 2; z++)
        for (int soft = 0; soft < 2; soft++) {
            scope s = {.be = be};
            const int64_t n = k_rows[z][0], v = k_rows[z][1];
            float *logits = rnd(&s, n * v, 141 + z, -8, 8), *tg = NULL;
            int32_t *lab = NULL;
            if (soft) {
                tg = rnd(&s, n * v, 142 + z, 0, 1);
                for (int64_t i = 0; i < n; i++) {
                    double st = 0;
                    for (int64_t j = 0; j < v; j++) st += tg[i * v + j];
                    for (int64_t j = 0; j < v; j++) tg[i * v + j] = (float)(tg[i * v + j] / st);
                }
            } else {
                lab = h_alloc(&s, n * sizeof(int32_t));
                for (int64_t i = 0; i < n; i++) lab[i] = (int32_t)((i * 5 + 2) % v);
                lab[1] = -1; /* ignored */
            }
            float *dlg = upf(&s, logits, n * v), *dtg = soft ? upf(&s, tg, n * v) : NULL;
            int32_t *dlab = soft ? NULL : up(&s, lab, n * sizeof(int32_t));
            float *dloss = d_alloc(&s, n * sizeof(float)), *dprob = d_alloc(&s, n * v * sizeof(float));
            OK(CALL(be, xent_fwd, dloss, dprob, dlg, dlab, dtg, n, v));
            float *loss = down(&s, dloss, n), *prob = down(&s, dprob, n * v);
            double *rl = hd(&s, n), *rp = hd(&s, n * v);
            for (int64_t i = 0; i < n; i++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < v; j++) mx = fmax(mx, logits[i * v + j]);
                for (int64_t j = 0; j < v; j++) sum += exp(logits[i * v + j] - mx);
                double lse = mx + log(sum), l = 0;
                for (int64_t j = 0; j < v; j++) {
                    rp[i * v + j] = exp(logits[i * v + j] - lse);
                    double t = soft ? tg[i * v + j] : (lab[i] == j ? 1.0 : 0.0);
                    l -= t * (logits[i * v + j] - lse);
                }
                rl[i] = l;
            }
            expect_close(loss, rl, n, 1e-5, 1e-5, soft ? "xent_fwd soft loss" : "xent_fwd hard loss");
            expect_close(prob, rp, n * v, 1e-7, 1e-5, "xent_fwd probs");
            if (!soft) assert_true(loss[1] == 0.0f);
            ob_f(ob, loss, n);
            ob_f(ob, prob, n * v);
            if (!soft) { /* a label >= v is a range error; both labels and targets is invalid */
                lab[0] = (int32_t)v;
                int32_t *bad = up(&s, lab, n * sizeof(int32_t));
                assert_int_equal(CALL(be, xent_fwd, dloss, dprob, dlg, bad, NULL, n, v), EX_E_RANGE);
                assert_int_equal(CALL(be, xent_fwd, dloss, dprob, dlg, bad, dlg, n, v), EX_E_INVALID);
                assert_int_equal(CALL(be, xent_fwd, dloss, dprob, dlg, NULL, NULL, n, v), EX_E_INVALID);
            }
            scope_end(&s);
        }
}
static void test_xent(void **state) { all_threads(state, xent_cases, "xent_fwd"); }

static void l2norm_cases(ex_backend *be, obuf *ob) {
    for (int z = 0; z < 2; z++) {
        scope s = {.be = be};
        const int64_t n = k_rows[z][0], c = k_rows[z][1];
        const float eps = 0.05f;
        float *x = rnd(&s, n * c, 151 + z, -1, 1);
        for (int64_t j = 0; j < c; j++) x[2 * c + j] *= 1e-3f; /* a row with norm below eps */
        for (int64_t j = 0; j < c; j++) x[3 * c + j] = 0.0f;   /* and an all-zero row */
        float *dx = upf(&s, x, n * c), *dy = d_alloc(&s, n * c * sizeof(float)), *dn = d_alloc(&s, n * sizeof(float));
        OK(CALL(be, l2norm_fwd, dy, dn, dx, n, c, eps));
        float *y = down(&s, dy, n * c), *nr = down(&s, dn, n);
        double *ry = hd(&s, n * c), *rn = hd(&s, n);
        for (int64_t i = 0; i < n; i++) {
            double ss = 0;
            for (int64_t j = 0; j < c; j++) ss += (double)x[i * c + j] * x[i * c + j];
            rn[i] = sqrt(ss);
            for (int64_t j = 0; j < c; j++) ry[i * c + j] = x[i * c + j] / fmax(rn[i], eps);
        }
        assert_true(rn[2] < eps);
        expect_close(y, ry, n * c, 1e-7, 1e-5, "l2norm_fwd out");
        expect_close(nr, rn, n, 1e-7, 1e-5, "l2norm_fwd norms");
        ob_f(ob, y, n * c);
        ob_f(ob, nr, n);
        scope_end(&s);
    }
}
static void test_l2norm(void **state) { all_threads(state, l2norm_cases, "l2norm_fwd"); }

/* ------------------------------------------------------------------------------
 * Optimiser
 * ------------------------------------------------------------------------------ */

static void adamw_cases(ex_backend *be, obuf *ob) {
    const int64_t sizes[] = {91, 100003};
    for (int z = 0; z < 2; z++) {
        scope s = {.be = be};
        const int64_t n = sizes[z];
        const ex_adamw_params base = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-6f, .weight_decay = 0.05f};
        float *p0 = rnd(&s, n, 161 + z, -1, 1);
        float *dp = upf(&s, p0, n), *dm = d_alloc(&s, n * sizeof(float)), *dv = d_alloc(&s, n * sizeof(float));
        OK(CALL(be, fill, dm, 0.0f, n));
        OK(CALL(be, fill, dv, 0.0f, n));
        /* naive torch.optim.AdamW in double */
        double *p = hd(&s, n), *m = hd(&s, n), *v = hd(&s, n);
        for (int64_t i = 0; i < n; i++) p[i] = p0[i];
        for (int64_t step = 1; step <= 6; step++) {
            ex_adamw_params hp = base;
            hp.step = step;
            if (step == 4) hp.lr = 3e-3f; /* a schedule changes lr between steps */
            float *g = rnd(&s, n, 170 + z * 10 + step, -0.5f, 0.5f);
            float *dg = upf(&s, g, n);
            OK(CALL(be, adamw, dp, dg, dm, dv, n, &hp));
            const double lr = hp.lr, b1 = hp.beta1, b2 = hp.beta2, eps = hp.eps, wd = hp.weight_decay;
            for (int64_t i = 0; i < n; i++) {
                p[i] -= lr * wd * p[i];
                m[i] = b1 * m[i] + (1 - b1) * g[i];
                v[i] = b2 * v[i] + (1 - b2) * (double)g[i] * g[i];
                double mh = m[i] / (1 - pow(b1, (double)step)), vh = v[i] / (1 - pow(b2, (double)step));
                p[i] -= lr * mh / (sqrt(vh) + eps);
            }
        }
        float *P = down(&s, dp, n), *M = down(&s, dm, n), *V = down(&s, dv, n);
        expect_close(P, p, n, 1e-6, 1e-5, "adamw p");
        expect_close(M, m, n, 1e-7, 1e-5, "adamw m");
        expect_close(V, v, n, 1e-9, 1e-5, "adamw v");
        ob_f(ob, P, n);
        ob_f(ob, M, n);
        ob_f(ob, V, n);
        ex_adamw_params bad = base;
        bad.step = 0;
        assert_int_equal(CALL(be, adamw, dp, dp, dm, dv, n, &bad), EX_E_INVALID);
        scope_end(&s);
    }
}
static void test_adamw(void **state) { all_threads(state, adamw_cases, "adamw"); }

static void ema_cases(ex_backend *be, obuf *ob) {
    const int64_t sizes[] = {91, 100003};
    for (int z = 0; z < 2; z++) {
        scope s = {.be = be};
        const int64_t n = sizes[z];
        const float mom = 0.996f;
        float *t = rnd(&s, n, 181 + z, -1, 1), *st = rnd(&s, n, 182 + z, -1, 1);
        float *dt = upf(&s, t, n), *ds = upf(&s, st, n);
        OK(CALL(be, ema, dt, ds, mom, n));
        OK(CALL(be, ema, dt, ds, mom, n));
        float *y = down(&s, dt, n);
        double *ref = hd(&s, n);
        for (int64_t i = 0; i < n; i++) {
            double r = t[i];
            for (int k = 0; k < 2; k++) r = (double)mom * r + (1.0 - (double)mom) * st[i];
            ref[i] = r;
        }
        expect_close(y, ref, n, 1e-7, 1e-6, "ema");
        ob_f(ob, y, n);
        scope_end(&s);
    }
}
static void test_ema(void **state) { all_threads(state, ema_cases, "ema"); }

/* ------------------------------------------------------------------------------
 * Random numbers
 * ------------------------------------------------------------------------------ */

static void moments(const float *x, int64_t n, double *mean, double *var) {
    double s = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++) ss += (x[i] - *mean) * (x[i] - *mean);
    *var = ss / (double)n;
}

static void rng_cases(ex_backend *be, obuf *ob) {
    scope s = {.be = be};
    const int64_t n = 100000;
    const uint64_t off0 = 77;
    ex_rng r = ex_rng_seed(1234, EX_RNG_TEST);
    r.offset = off0;
    const ex_rng start = r;
    float *d1 = d_alloc(&s, n * sizeof(float)), *d2 = d_alloc(&s, n * sizeof(float));

    /* uniform: the shared stream, range, moments, determinism, advance */
    const float lo = -2.0f, hi = 3.0f;
    OK(CALL(be, rng_uniform, d1, n, lo, hi, &r));
    assert_true(r.key == start.key);
    assert_true(r.offset == off0 + (uint64_t)n);
    float *u = down(&s, d1, n);
    for (int64_t i = 0; i < n; i++) {
        if (!(u[i] >= lo && u[i] < hi)) fail_msg("rng_uniform: %g outside [%g, %g)", (double)u[i], lo, hi);
        double want = lo + (double)(hi - lo) * ex_rng_uniform_at(start.key, off0, (uint64_t)i);
        if (fabs(u[i] - want) > 1e-6) fail_msg("rng_uniform: element %lld is not the stream's value", (long long)i);
    }
    double mean, var;
    moments(u, n, &mean, &var);
    if (fabs(mean - 0.5) > 0.025 || fabs(var - 25.0 / 12.0) > 0.04)
        fail_msg("rng_uniform: mean %g (want 0.5), var %g (want %g)", mean, var, 25.0 / 12.0);
    ex_rng again = start;
    OK(CALL(be, rng_uniform, d2, n, lo, hi, &again));
    float *u2 = down(&s, d2, n);
    assert_memory_equal(u, u2, n * sizeof(float)); /* same state, same numbers */
    OK(CALL(be, rng_uniform, d2, n, lo, hi, &r)); /* the advanced stream gives new numbers */
    u2 = down(&s, d2, n);
    int64_t same = 0;
    for (int64_t i = 0; i < n; i++) same += u[i] == u2[i];
    assert_true(same < n / 1000);
    ob_f(ob, u, n);
    ob_f(ob, u2, n);

    /* normal */
    ex_rng rn = start;
    const float mu = 1.5f, sd = 2.0f;
    OK(CALL(be, rng_normal, d1, n, mu, sd, &rn));
    assert_true(rn.offset == off0 + (uint64_t)n);
    float *g = down(&s, d1, n);
    for (int64_t i = 0; i < n; i++) {
        double want = mu + (double)sd * ex_rng_normal_at(start.key, off0, (uint64_t)i);
        if (fabs(g[i] - want) > 1e-5 * (1 + fabs(want))) fail_msg("rng_normal: element %lld differs", (long long)i);
    }
    moments(g, n, &mean, &var);
    if (fabs(mean - mu) > 0.035 || fabs(sqrt(var) - sd) > 0.03)
        fail_msg("rng_normal: mean %g (want %g), std %g (want %g)", mean, (double)mu, sqrt(var), (double)sd);
    ex_rng rn2 = start;
    OK(CALL(be, rng_normal, d2, n, mu, sd, &rn2));
    float *g2 = down(&s, d2, n);
    assert_memory_equal(g, g2, n * sizeof(float));
    ob_f(ob, g, n);

    /* permutation = stable argsort of the uniforms of the same state */
    ex_rng rp = start;
    int32_t *dperm = d_alloc(&s, n * sizeof(int32_t));
    OK(CALL(be, rng_permutation, dperm, n, &rp));
    assert_true(rp.offset == off0 + (uint64_t)n);
    int32_t *perm = h_alloc(&s, n * sizeof(int32_t));
    OK(CALL(be, copy, perm, dperm, n * sizeof(int32_t), EX_COPY_D2H));
    unsigned char *seen = h_alloc(&s, n);
    for (int64_t i = 0; i < n; i++) {
        if (perm[i] < 0 || perm[i] >= n || seen[perm[i]]) fail_msg("rng_permutation: not a permutation at %lld", (long long)i);
        seen[perm[i]] = 1;
    }
    int64_t ties = 0;
    for (int64_t i = 0; i + 1 < n; i++) {
        float a = ex_rng_uniform_at(start.key, off0, (uint64_t)perm[i]);
        float b = ex_rng_uniform_at(start.key, off0, (uint64_t)perm[i + 1]);
        if (a > b || (a == b && perm[i] > perm[i + 1]))
            fail_msg("rng_permutation: not the stable argsort of the uniforms at %lld", (long long)i);
        ties += a == b;
    }
    assert_true(ties > 0); /* 24-bit uniforms: ties occur, so stability was exercised */
    ob_put(ob, perm, n * sizeof(int32_t));
    ex_rng rp2 = start;
    int32_t one = -1;
    int32_t *done = d_alloc(&s, sizeof(int32_t));
    OK(CALL(be, rng_permutation, done, 1, &rp2));
    OK(CALL(be, copy, &one, done, sizeof one, EX_COPY_D2H));
    assert_int_equal(one, 0);
    assert_true(rp2.offset == off0 + 1);
    OK(CALL(be, rng_permutation, done, 0, &rp2));
    assert_true(rp2.offset == off0 + 1);

    /* dropout keep mask: 0 where the stream's uniform is below p, else exactly 1 / (1 - p) */
    const float p = 0.3f;
    ex_rng rd = start;
    OK(CALL(be, rng_dropout, d1, n, p, &rd));
    assert_true(rd.offset == off0 + (uint64_t)n);
    float *m = down(&s, d1, n);
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; i++) {
        const float want = ex_rng_uniform_at(start.key, off0, (uint64_t)i) < p ? 0.0f : 1.0f / (1.0f - p);
        if (m[i] != want) fail_msg("rng_dropout: element %lld is %g, want %g", (long long)i, (double)m[i], (double)want);
        dropped += m[i] == 0.0f;
    }
    if (fabs((double)dropped / (double)n - p) > 0.005) fail_msg("rng_dropout: dropped %lld of %lld", (long long)dropped, (long long)n);
    ob_f(ob, m, n);
    ex_rng rd0 = start; /* p = 0 keeps everything at scale 1 */
    OK(CALL(be, rng_dropout, d1, n, 0.0f, &rd0));
    m = down(&s, d1, n);
    for (int64_t i = 0; i < n; i++) assert_true(m[i] == 1.0f);
    assert_int_equal(be->vt.rng_dropout(be->ctx, d1, n, 1.0f, &rd0), EX_E_INVALID);
    scope_end(&s);
}
static void test_rng(void **state) { all_threads(state, rng_cases, "rng"); }

/* ------------------------------------------------------------------------------
 * Backward ops: thread-count independence (values are checked in test_gradcheck.c)
 * ------------------------------------------------------------------------------ */

static void bwd_cases(ex_backend *be, obuf *ob) {
    scope s = {.be = be};
    const int64_t n = 300, c = 257, N = n * c;
    float *x = rnd(&s, N, 201, -2, 2), *g = rnd(&s, N, 202, -1, 1), *pre = rnd(&s, N, 203, -1, 1);
    float *w = rnd(&s, c, 204, 0.5f, 1.5f), *rs = rnd(&s, n, 205, -1, 1);
    float *dx = upf(&s, x, N), *dg = upf(&s, g, N), *dw = upf(&s, w, c), *drs = upf(&s, rs, n);
    float *o1 = d_alloc(&s, N * sizeof(float)), *mean = d_alloc(&s, n * sizeof(float)),
          *rstd = d_alloc(&s, n * sizeof(float));
    float *gn = upf(&s, pre, N), *gc = upf(&s, pre, c), *gc2 = upf(&s, pre + c, c), *gr = upf(&s, pre, n);

    OK(CALL(be, bias_add_bwd, gc, dg, n, c));
    ob_f(ob, down(&s, gc, c), c);

    OK(CALL(be, layernorm_fwd, o1, mean, rstd, dx, dw, NULL, n, c, 1e-5f));
    OK(CALL(be, copy, gc, pre, c * sizeof(float), EX_COPY_H2D));
    OK(CALL(be, layernorm_bwd, gn, gc, gc2, dg, dx, dw, mean, rstd, n, c));
    ob_f(ob, down(&s, gn, N), N);
    ob_f(ob, down(&s, gc, c), c);
    ob_f(ob, down(&s, gc2, c), c);

    OK(CALL(be, gelu_bwd, gn, dx, dg, N));
    OK(CALL(be, silu_bwd, gn, dx, dg, N));
    ob_f(ob, down(&s, gn, N), N);

    OK(CALL(be, softmax_fwd, o1, dx, n, c, 0.7f));
    OK(CALL(be, softmax_bwd, gn, o1, dg, n, c, 0.7f));
    ob_f(ob, down(&s, gn, N), N);

    OK(CALL(be, channel_scale_bwd, gn, gc, dg, dx, dw, n, c));
    OK(CALL(be, row_scale_bwd, gn, gr, dg, dx, drs, n, c));
    ob_f(ob, down(&s, gn, N), N);
    ob_f(ob, down(&s, gc, c), c);
    ob_f(ob, down(&s, gr, n), n);

    uint8_t *mask = h_alloc(&s, n);
    for (int64_t i = 0; i < n; i++) mask[i] = (uint8_t)(i % 3 == 0);
    uint8_t *dm = up(&s, mask, n);
    OK(CALL(be, mask_rows_bwd, gn, gc, dg, dm, n, c));
    ob_f(ob, down(&s, gn, N), N);
    ob_f(ob, down(&s, gc, c), c);

    int32_t *lab = h_alloc(&s, n * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++) lab[i] = (int32_t)(i % 11) - 1;
    int32_t *dl = up(&s, lab, n * sizeof(int32_t));
    float *loss = d_alloc(&s, n * sizeof(float));
    OK(CALL(be, xent_fwd, loss, o1, dx, dl, NULL, n, c));
    OK(CALL(be, xent_bwd, gn, drs, o1, dl, NULL, n, c));
    OK(CALL(be, softmax_fwd, o1, dg, n, c, 1.0f)); /* soft targets */
    float *probs = d_alloc(&s, N * sizeof(float));
    OK(CALL(be, xent_fwd, loss, probs, dx, NULL, o1, n, c));
    OK(CALL(be, xent_bwd, gn, drs, probs, NULL, o1, n, c));
    ob_f(ob, down(&s, gn, N), N);
    ob_f(ob, down(&s, loss, n), n);

    OK(CALL(be, l2norm_fwd, o1, gr, dx, n, c, 1e-6f));
    OK(CALL(be, l2norm_bwd, gn, dg, dx, gr, n, c, 1e-6f));
    ob_f(ob, down(&s, gn, N), N);

    const int64_t b = 3, m = 100, t = 100; /* scatter rows of width c: b*m*c = b*t*c = N */
    int32_t *idx = h_alloc(&s, b * m * sizeof(int32_t));
    for (int64_t i = 0; i < b * m; i++) idx[i] = (int32_t)((i * 37) % 61); /* repeats */
    int32_t *di = up(&s, idx, b * m * sizeof(int32_t));
    OK(CALL(be, scatter_add_rows, gn, dg, di, b, m, t, c));
    ob_f(ob, down(&s, gn, N), N);

    const int64_t pb = 2, ch = 3, ph = 64, pw = 96, pp = 16, pn = pb * ch * ph * pw;
    float *dimg = upf(&s, x, pn), *dpat = upf(&s, g, pn);
    OK(CALL(be, patchify_bwd, dimg, dpat, pb, ch, ph, pw, pp, EX_PATCH_CPP));
    OK(CALL(be, patchify_bwd, dimg, dpat, pb, ch, ph, pw, pp, EX_PATCH_PPC));
    ob_f(ob, down(&s, dimg, pn), pn);

    const int64_t ab = 2, at = 77, anh = 3, ahs = 16, aC = anh * ahs;
    float *qkv = rnd(&s, ab * at * 3 * aC, 206, -2, 2), *gout = rnd(&s, ab * at * aC, 207, -1, 1);
    float *dqkv_in = upf(&s, qkv, ab * at * 3 * aC), *dgo = upf(&s, gout, ab * at * aC);
    float *aout = d_alloc(&s, ab * at * aC * sizeof(float)), *alse = d_alloc(&s, ab * anh * at * sizeof(float));
    float *dq = upf(&s, x, ab * at * 3 * aC);
    OK(CALL(be, attention_fwd, aout, alse, dqkv_in, ab, at, anh, ahs, 0.25f));
    OK(CALL(be, attention_bwd, dq, dgo, aout, alse, dqkv_in, ab, at, anh, ahs, 0.25f));
    ob_f(ob, down(&s, dq, ab * at * 3 * aC), ab * at * 3 * aC);
    scope_end(&s);
}
static void test_backward_determinism(void **state) { all_threads(state, bwd_cases, "backward ops"); }

/* Inputs whose sums depend strongly on the summation order: large values that cancel
 * exactly, far apart, with ordinary values between them. In double, 1e17 + 1 == 1e17,
 * so a sum that is split differently (e.g. into one chunk per thread) gives a visibly
 * different result. Covers reduce and every column sum (dbias, dw/db, dgamma, dtoken). */
static void sum_order_cases(ex_backend *be, obuf *ob) {
    scope s = {.be = be};
    const int64_t n = 300, c = 257, N = n * c, nr = 100003;
    float *x = rnd(&s, nr, 221, 0.5f, 1.5f);
    x[0] = 1e17f;
    x[nr - 1] = -1e17f;
    float *dx = upf(&s, x, nr), *dy = d_alloc(&s, sizeof(float));
    for (int op = 0; op < 2; op++) { /* sum, mean (sumsq shares their chunking; max |x| is order-free) */
        OK(CALL(be, reduce, (ex_reduce_op)op, dy, dx, nr));
        ob_f(ob, down(&s, dy, 1), 1);
    }

    float *g = rnd(&s, N, 222, 0.5f, 1.5f), *inp = rnd(&s, N, 223, -1, 1), *w = rnd(&s, c, 224, 0.5f, 1.5f);
    for (int64_t j = 0; j < c; j++) {
        g[j] = 1e17f;
        g[(n - 1) * c + j] = -1e17f;
        inp[(n - 1) * c + j] = inp[j]; /* same row: dout * inp cancels too */
    }
    float *dg = upf(&s, g, N), *di = upf(&s, inp, N), *dw = upf(&s, w, c);
    float *gc = d_alloc(&s, c * sizeof(float)), *gc2 = d_alloc(&s, c * sizeof(float));
    float *mean = d_alloc(&s, n * sizeof(float)), *rstd = d_alloc(&s, n * sizeof(float)),
          *o = d_alloc(&s, N * sizeof(float));
    OK(CALL(be, fill, gc, 0.0f, c));
    OK(CALL(be, bias_add_bwd, gc, dg, n, c));
    ob_f(ob, down(&s, gc, c), c);
    OK(CALL(be, fill, gc, 0.0f, c));
    OK(CALL(be, channel_scale_bwd, NULL, gc, dg, di, dw, n, c));
    ob_f(ob, down(&s, gc, c), c);
    OK(CALL(be, layernorm_fwd, o, mean, rstd, di, dw, NULL, n, c, 1e-5f));
    OK(CALL(be, fill, gc, 0.0f, c));
    OK(CALL(be, fill, gc2, 0.0f, c));
    OK(CALL(be, layernorm_bwd, NULL, gc, gc2, dg, di, dw, mean, rstd, n, c));
    ob_f(ob, down(&s, gc, c), c);
    ob_f(ob, down(&s, gc2, c), c);
    uint8_t *mask = h_alloc(&s, n);
    for (int64_t i = 0; i < n; i++) mask[i] = (uint8_t)(i % 2 == 0 || i == n - 1);
    uint8_t *dm = up(&s, mask, n);
    OK(CALL(be, fill, gc, 0.0f, c));
    OK(CALL(be, mask_rows_bwd, NULL, gc, dg, dm, n, c));
    ob_f(ob, down(&s, gc, c), c);
    scope_end(&s);
}
static void test_sum_order_determinism(void **state) { all_threads(state, sum_order_cases, "sums over many rows"); }

/* ------------------------------------------------------------------------------
 * Argument validation
 * ------------------------------------------------------------------------------ */

static void test_invalid_args(void **state) {
    env *e = *state;
    ex_backend *be = &e->be[1];
    float buf[64] = {0};
    assert_int_equal(CALL(be, bias_add_fwd, buf, NULL, 2, 3), EX_E_INVALID);
    assert_int_equal(CALL(be, bias_add_fwd, buf, buf, -1, 3), EX_E_INVALID);
    assert_int_equal(CALL(be, layernorm_fwd, NULL, buf, buf, buf, NULL, NULL, 2, 3, 1e-5f), EX_E_INVALID);
    assert_int_equal(CALL(be, gelu_fwd, buf, buf, -5), EX_E_INVALID);
    assert_int_equal(CALL(be, attention_fwd, buf, buf, NULL, 1, 2, 1, 2, 1.0f), EX_E_INVALID);
    assert_int_equal(CALL(be, binary, (ex_binary_op)9, buf, buf, buf, 4), EX_E_INVALID);
    assert_int_equal(CALL(be, reduce, (ex_reduce_op)9, buf, buf, 4), EX_E_INVALID);
    assert_int_equal(CALL(be, patchify_fwd, buf, buf, 1, 1, 4, 4, 0, EX_PATCH_CPP), EX_E_INVALID);
    assert_int_equal(CALL(be, rng_uniform, buf, 4, 0.0f, 1.0f, NULL), EX_E_INVALID);
    /* n = 0 is a valid no-op everywhere */
    OK(CALL(be, bias_add_fwd, NULL, NULL, 0, 3));
    OK(CALL(be, gelu_fwd, NULL, NULL, 0));
    OK(CALL(be, copy2d, NULL, 1, NULL, 1, 0, 1));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_supports_and_info),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_gemm_errors),
        cmocka_unit_test(test_gemm_narrow_inputs),
        cmocka_unit_test(test_gemm_halve),
        cmocka_unit_test(test_bias_add),
        cmocka_unit_test(test_gelu_accuracy),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_bf16_outputs),
        cmocka_unit_test(test_exp_row_sum),
        cmocka_unit_test(test_exp_row_sum_pair_required),
        cmocka_unit_test(test_to_bf16),
        cmocka_unit_test(test_attention_bf16),
        cmocka_unit_test(test_attention_bwd_bf16),
        cmocka_unit_test(test_attention_bf16_slots_together),
        cmocka_unit_test(test_residual),
        cmocka_unit_test(test_residual_pair_required),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_binary),
        cmocka_unit_test(test_axpby),
        cmocka_unit_test(test_scales),
        cmocka_unit_test(test_reduce),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_mask_rows),
        cmocka_unit_test(test_patchify),
        cmocka_unit_test(test_copy2d),
        cmocka_unit_test(test_xent),
        cmocka_unit_test(test_l2norm),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_ema),
        cmocka_unit_test(test_rng),
        cmocka_unit_test(test_backward_determinism),
        cmocka_unit_test(test_sum_order_determinism),
        cmocka_unit_test(test_invalid_args),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
