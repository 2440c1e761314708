/*
 * tests/test_nn.c — the core nn library (explora/nn.h) on the cpu backend:
 * linear (with adapter hooks), LayerNorm and the pre-norm transformer block.
 *
 * Method: every layer is compared with a naive double-precision reference
 * written here from scratch (loops: LayerNorm, matmuls, per-head softmax
 * attention, erf GELU, SwiGLU). Gradients are checked against central finite
 * differences of L = sum(R .* out) taken on the double reference (h = 1e-5),
 * for every parameter tensor and the input, atol 1e-4 + rtol 1e-3. The block
 * is run in four configurations:
 *   A  GELU MLP, LayerScale, drop scales drop1 = {1.25, 0}, drop2 = {0, 2},
 *      and a rank-1 adapter hook on qkv (the LoRA path)
 *   B  GELU MLP, no LayerScale, no drop (MAE / timm)
 *   C  SwiGLU MLP with LayerScale (DINOv2 giant)
 *   D  SwiGLU MLP, drop scales without LayerScale
 * Activations and scratch are poisoned with NaN before use and followed by
 * guard values that must survive, so reading unwritten memory or writing past
 * the documented sizes fails. Also: accumulate (+=) semantics, frozen weights
 * (no weight-gradient GEMM, same input gradient, nothing else touched),
 * bitwise determinism of two runs, the acts/scratch layout, and argument
 * validation.
 */
#include "test_support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/nn.h"

#define BACKEND "cpu"
#define FWD_ATOL 1e-5
#define FWD_RTOL 1e-5
#define FD_H 1e-5
#define G_ATOL 1e-4
#define G_RTOL 1e-3
#define LN_EPS 1e-6
#define GUARD 64                /* floats of guard after every buffer under test */
#define SENTINEL (-12345.5f)    /* guard value (exact in fp32) */

/* ------------------------------------------------------------------------------
 * Fixture, memory scope and small helpers
 * ------------------------------------------------------------------------------ */

typedef struct env {
    ex_backend be;
    ex_registry *reg;
} env;

static int group_setup(void **state) {
    env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    ext_backend_open(BACKEND, NULL, &e->be, &e->reg);
    *state = e;
    return 0;
}

static int group_teardown(void **state) {
    env *e = *state;
    if (!e) return 0;
    ext_backend_close(&e->be, e->reg);
    free(e);
    return 0;
}

#define SCOPE_MAX 256
/* Host and device allocations of one test, freed together. */
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

/* Device buffer of n floats, every float set to v. */
static float *dfill(scope *s, size_t n, float v) {
    assert_true(s->nd < SCOPE_MAX);
    void *p = NULL;
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_be_alloc(s->be, (n ? n : 1) * sizeof(float), &p, &err), &err);
    s->dev[s->nd++] = p;
    if (n) assert_int_equal(s->be->vt.fill(s->be->ctx, p, v, (int64_t)n), EX_OK);
    return p;
}
/* Device copy of host[0, n). */
static float *dup(scope *s, const float *host, size_t n) {
    float *d = dfill(s, n, 0.0f);
    ex_err err;
    ex_err_clear(&err);
    if (n) EXT_OK(ex_be_upload(s->be, d, host, n * sizeof(float), &err), &err);
    return d;
}
/* Host copy of dev[0, n). */
static float *down(scope *s, const float *dev, size_t n) {
    float *h = hf(s, n);
    ex_err err;
    ex_err_clear(&err);
    if (n) EXT_OK(ex_be_download(s->be, h, dev, n * sizeof(float), &err), &err);
    return h;
}
static void scope_end(scope *s) {
    for (int i = 0; i < s->nd; i++) ex_be_free(s->be, s->dev[i]);
    for (int i = 0; i < s->nh; i++) free(s->host[i]);
    s->nd = s->nh = 0;
}
static float *rnd(scope *s, size_t n, uint64_t seed, float lo, float hi) {
    float *x = hf(s, n);
    ext_fill_uniform(x, n, seed, lo, hi);
    return x;
}
/* A known nonzero pattern that gradient buffers start from (exact in fp32). */
static float *pattern(scope *s, size_t n, int salt) {
    float *p = hf(s, n);
    for (size_t i = 0; i < n; i++) p[i] = 0.25f * (float)((int)((i * 5 + (size_t)salt) % 7) - 3) + 0.125f;
    return p;
}
static float *to_float(scope *s, const double *x, size_t n) {
    float *f = hf(s, n);
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}
static void assert_bitwise(const float *a, const float *b, size_t n, const char *what) {
    if (n && memcmp(a, b, n * sizeof(float)) != 0) {
        for (size_t i = 0; i < n; i++)
            if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
                fail_msg("%s: element %zu differs: %.9g vs %.9g", what, i, (double)a[i], (double)b[i]);
    }
}
/* The GUARD floats after dev[0, n) still hold SENTINEL. */
static void expect_guard(scope *s, const float *dev, size_t n, const char *what) {
    const float *g = down(s, dev + n, GUARD);
    for (size_t i = 0; i < GUARD; i++)
        if (g[i] != SENTINEL)
            fail_msg("%s: guard float %zu after the end was overwritten (%.9g)", what, i, (double)g[i]);
}
/* A device buffer of n floats poisoned with NaN, followed by GUARD sentinel floats. */
static float *dguarded(scope *s, size_t n) {
    float *d = dfill(s, n + GUARD, SENTINEL);
    if (n) assert_int_equal(s->be->vt.fill(s->be->ctx, d, NAN, (int64_t)n), EX_OK);
    return d;
}

#define OK(expr) EXT_OK((expr), &err)

/* ------------------------------------------------------------------------------
 * Finite differences
 * ------------------------------------------------------------------------------ */

/* A double-precision reference forward y = f(theta); aux holds sizes and constants. */
typedef void (*ref_fn)(const double *theta, double *y, const void *aux);

/* dL/dtheta of L = sum_k r_k y_k by central differences in double. */
static void fd_grad(ref_fn f, const void *aux, const float *theta0, size_t nt, const float *r, size_t ny,
                    double *grad) {
    double *th = malloc(nt * sizeof(double)), *y = malloc(ny * sizeof(double));
    assert_non_null(th);
    assert_non_null(y);
    for (size_t i = 0; i < nt; i++) th[i] = theta0[i];
    for (size_t i = 0; i < nt; i++) {
        double lp = 0.0, lm = 0.0;
        th[i] = (double)theta0[i] + FD_H;
        f(th, y, aux);
        for (size_t k = 0; k < ny; k++) lp += (double)r[k] * y[k];
        th[i] = (double)theta0[i] - FD_H;
        f(th, y, aux);
        for (size_t k = 0; k < ny; k++) lm += (double)r[k] * y[k];
        th[i] = theta0[i];
        grad[i] = (lp - lm) / (2.0 * FD_H);
    }
    free(th);
    free(y);
}

/* f at theta0 (float) in double. */
static void ref_at(ref_fn f, const void *aux, const float *theta0, size_t nt, double *y) {
    double *th = malloc(nt * sizeof(double));
    assert_non_null(th);
    for (size_t i = 0; i < nt; i++) th[i] = theta0[i];
    f(th, y, aux);
    free(th);
}

/* got - pre (pre may be NULL) against the finite-difference gradient; the gradient must not be ~0. */
static void expect_grad(const float *got, const float *pre, const double *fd, size_t n, const char *what) {
    double mx = 0.0;
    for (size_t i = 0; i < n; i++) {
        double g = (double)got[i] - (pre ? (double)pre[i] : 0.0);
        if (!(fabs(g - fd[i]) <= G_ATOL + G_RTOL * fabs(fd[i])))
            fail_msg("%s: element %zu: gradient %.9g, finite difference %.9g", what, i, g, fd[i]);
        mx = fmax(mx, fabs(fd[i]));
    }
    if (!(mx > 1e-3)) fail_msg("%s: the gradient is ~0 everywhere: the check would prove nothing", what);
}

/* ------------------------------------------------------------------------------
 * Naive double-precision layers
 * ------------------------------------------------------------------------------ */

/* y (n, out) = x (n, in) @ w^T (out, in) + b (out, or NULL). */
static void ref_linear(const double *x, const double *w, const double *b, int64_t n, int64_t in, int64_t out,
                       double *y) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < out; o++) {
            double acc = b ? b[o] : 0.0;
            for (int64_t k = 0; k < in; k++) acc += x[i * in + k] * w[o * in + k];
            y[i * out + o] = acc;
        }
}

/* y (n, c) = LayerNorm(x) * w + b, population variance, eps LN_EPS. */
static void ref_layernorm(const double *x, const double *w, const double *b, int64_t n, int64_t c, double *y) {
    for (int64_t i = 0; i < n; i++) {
        const double *r = x + i * c;
        double mu = 0.0, var = 0.0;
        for (int64_t j = 0; j < c; j++) mu += r[j];
        mu /= (double)c;
        for (int64_t j = 0; j < c; j++) var += (r[j] - mu) * (r[j] - mu);
        var /= (double)c;
        const double rs = 1.0 / sqrt(var + LN_EPS);
        for (int64_t j = 0; j < c; j++) y[i * c + j] = (r[j] - mu) * rs * w[j] + b[j];
    }
}

/* out (B, T, nh*hs) = softmax(q k^T / sqrt(hs)) v per image and head; qkv (B, T, 3, nh, hs). */
static void ref_attention(const double *qkv, int64_t B, int64_t T, int64_t nh, int64_t hs, double *out) {
    const int64_t C = nh * hs;
    const double scale = 1.0 / sqrt((double)hs);
    double *p = malloc((size_t)T * sizeof(double));
    assert_non_null(p);
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t i = 0; i < T; i++) {
                const double *q = qkv + (bi * T + i) * 3 * C + h * hs;
                double mx = -INFINITY, sum = 0.0;
                for (int64_t j = 0; j < T; j++) {
                    const double *k = qkv + (bi * T + j) * 3 * C + C + h * hs;
                    double sc = 0.0;
                    for (int64_t d = 0; d < hs; d++) sc += q[d] * k[d];
                    p[j] = sc * scale;
                    mx = fmax(mx, p[j]);
                }
                for (int64_t j = 0; j < T; j++) sum += (p[j] = exp(p[j] - mx));
                for (int64_t d = 0; d < hs; d++) {
                    double acc = 0.0;
                    for (int64_t j = 0; j < T; j++) acc += p[j] / sum * qkv[(bi * T + j) * 3 * C + 2 * C + h * hs + d];
                    out[(bi * T + i) * C + h * hs + d] = acc;
                }
            }
    free(p);
}

static double ref_gelu(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double ref_silu(double x) { return x / (1.0 + exp(-x)); }

/* ------------------------------------------------------------------------------
 * A test adapter: rank-1, out += (inp . a) * bv, written on the backend's GEMM
 * ------------------------------------------------------------------------------ */

typedef struct rank1 {
    int64_t in, out, nmax;
    float *a;             /* (in) */
    float *bv;            /* (out) */
    float *da, *dbv;      /* (in), (out): gradients, or NULL */
    float *u, *du;        /* (nmax) each: inp @ a and dout @ bv */
    int fwd_calls, bwd_calls;
    ex_linear_hook hook;
} rank1;

/* c (m, n) = op(a) (m, k) @ b (k, n) + beta * c, fp32, row-major, b not transposed. */
static ex_status gemm32(ex_backend *be, int trans_a, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                        const float *b, int64_t ldb, float *c, int64_t ldc, float beta, ex_err *err) {
    ex_gemm_desc d = {0};
    d.trans_a = trans_a;
    d.m = m;
    d.n = n;
    d.k = k;
    d.alpha = 1.0f;
    d.beta = beta;
    d.a = a;
    d.a_dtype = EX_F32;
    d.lda = lda;
    d.b = b;
    d.b_dtype = EX_F32;
    d.ldb = ldb;
    d.c = c;
    d.ldc = ldc;
    d.batch = 1;
    return ex_be_gemm(be, &d, err);
}

static ex_status rank1_forward(void *self, ex_backend *be, float *out /* (n, out) */, const void *vinp /* (n, in) */,
                               ex_dtype inp_dtype, int64_t n, int train, uint64_t noise, ex_err *err) {
    rank1 *r = self;
    const float *inp = vinp;
    (void)train, (void)noise;
    EX_ENSURE(inp_dtype == EX_F32, err, EX_E_UNSUPPORTED, "rank1: fp32 inputs only");
    EX_ENSURE(n <= r->nmax, err, EX_E_RANGE, "rank1: n %lld > nmax", (long long)n);
    r->fwd_calls++;
    EX_CHECK(gemm32(be, 0, n, 1, r->in, inp, r->in, r->a, 1, r->u, 1, 0.0f, err));         /* u = inp @ a */
    EX_CHECK(gemm32(be, 0, n, r->out, 1, r->u, 1, r->bv, r->out, out, r->out, 1.0f, err)); /* out += u bv^T */
    return EX_OK;
}

static ex_status rank1_backward(void *self, ex_backend *be, float *dinp /* (n, in) or NULL */,
                                const float *dout /* (n, out) */, const void *vinp /* (n, in) */, ex_dtype inp_dtype,
                                int64_t n, ex_err *err) {
    rank1 *r = self;
    const float *inp = vinp;
    EX_ENSURE(inp_dtype == EX_F32, err, EX_E_UNSUPPORTED, "rank1: fp32 inputs only");
    EX_ENSURE(n <= r->nmax, err, EX_E_RANGE, "rank1: n %lld > nmax", (long long)n);
    r->bwd_calls++;
    EX_CHECK(gemm32(be, 0, n, 1, r->in, inp, r->in, r->a, 1, r->u, 1, 0.0f, err));       /* u = inp @ a */
    EX_CHECK(gemm32(be, 0, n, 1, r->out, dout, r->out, r->bv, 1, r->du, 1, 0.0f, err));  /* du = dout @ bv */
    if (dinp) EX_CHECK(gemm32(be, 0, n, r->in, 1, r->du, 1, r->a, r->in, dinp, r->in, 1.0f, err)); /* += du a^T */
    if (r->da) EX_CHECK(gemm32(be, 1, r->in, 1, n, inp, r->in, r->du, 1, r->da, 1, 1.0f, err));   /* += inp^T du */
    if (r->dbv) EX_CHECK(gemm32(be, 1, r->out, 1, n, dout, r->out, r->u, 1, r->dbv, 1, 1.0f, err)); /* += dout^T u */
    return EX_OK;
}

static void rank1_init(scope *s, rank1 *r, int64_t in, int64_t out, int64_t nmax, float *a, float *bv, float *da,
                       float *dbv) {
    memset(r, 0, sizeof *r);
    r->in = in;
    r->out = out;
    r->nmax = nmax;
    r->a = a;
    r->bv = bv;
    r->da = da;
    r->dbv = dbv;
    r->u = dfill(s, (size_t)nmax, 0.0f);
    r->du = dfill(s, (size_t)nmax, 0.0f);
    r->hook.self = r;
    r->hook.forward = rank1_forward;
    r->hook.backward = rank1_backward;
}

/* ------------------------------------------------------------------------------
 * A GEMM counter (to see that frozen weights cost no weight-gradient GEMM):
 * a copy of the backend whose gemm slot counts calls. Weight-gradient GEMMs
 * are the ones with a transposed A (dout^T @ inp).
 * ------------------------------------------------------------------------------ */

static ex_status (*g_real_gemm)(void *ctx, const ex_gemm_desc *d);
static int g_gemms, g_gemms_trans_a;

static ex_status counting_gemm(void *ctx, const ex_gemm_desc *d) {
    g_gemms++;
    if (d->trans_a) g_gemms_trans_a++;
    return g_real_gemm(ctx, d);
}

static ex_backend counting_backend(const ex_backend *be) {
    ex_backend c = *be;
    g_real_gemm = be->vt.gemm;
    g_gemms = g_gemms_trans_a = 0;
    c.vt.gemm = counting_gemm;
    return c;
}

/* ------------------------------------------------------------------------------
 * Linear
 * ------------------------------------------------------------------------------ */

enum { LN_ROWS = 7, LIN_IN = 5, LIN_OUT = 6 };

/* theta = [w (out, in) | b (out) | a1 (in) | bv1 (out) | a2 (in) | bv2 (out) | x (n, in)] */
typedef struct lin_aux {
    int64_t n, in, out;
    int bias, hooks;
} lin_aux;

static size_t lin_theta_size(const lin_aux *a) {
    return (size_t)(a->out * a->in + a->out + 2 * (a->in + a->out) + a->n * a->in);
}

static void ref_lin(const double *th, double *y, const void *vaux) {
    const lin_aux *a = vaux;
    const double *w = th, *b = w + a->out * a->in, *h = b + a->out, *x = h + 2 * (a->in + a->out);
    ref_linear(x, w, a->bias ? b : NULL, a->n, a->in, a->out, y);
    for (int k = 0; k < a->hooks; k++) {
        const double *ha = h + k * (a->in + a->out), *hb = ha + a->in;
        for (int64_t i = 0; i < a->n; i++) {
            double u = 0.0;
            for (int64_t j = 0; j < a->in; j++) u += x[i * a->in + j] * ha[j];
            for (int64_t o = 0; o < a->out; o++) y[i * a->out + o] += u * hb[o];
        }
    }
}

/* Device tensors of one linear test. */
typedef struct dlin {
    float *theta;            /* host theta */
    float *w, *b, *x;        /* device (out, in), (out), (n, in) */
    float *ha[2], *hb[2];    /* device hook vectors (in), (out) */
    ex_linear l;
    rank1 r[2];
} dlin;

static void dlin_init(scope *s, const lin_aux *a, uint64_t seed, dlin *d) {
    memset(d, 0, sizeof *d);
    const size_t nt = lin_theta_size(a);
    d->theta = rnd(s, nt, seed, -1.0f, 1.0f);
    const float *t = d->theta;
    d->w = dup(s, t, (size_t)(a->out * a->in));
    t += a->out * a->in;
    d->b = dup(s, t, (size_t)a->out);
    t += a->out;
    for (int k = 0; k < 2; k++) {
        d->ha[k] = dup(s, t, (size_t)a->in);
        d->hb[k] = dup(s, t + a->in, (size_t)a->out);
        t += a->in + a->out;
    }
    d->x = dup(s, t, (size_t)(a->n * a->in));
    d->l = (ex_linear){.in = a->in, .out = a->out, .w = d->w, .b = a->bias ? d->b : NULL};
    for (int k = 0; k < a->hooks; k++) {
        rank1_init(s, &d->r[k], a->in, a->out, a->n, d->ha[k], d->hb[k], NULL, NULL);
        if (k > 0) d->r[k - 1].hook.next = &d->r[k].hook;
    }
    if (a->hooks) d->l.hooks = &d->r[0].hook;
}

static void test_linear_forward(void **state) {
    ex_backend *be = &((env *)*state)->be;
    ex_err err;
    ex_err_clear(&err);
    for (int bias = 0; bias <= 1; bias++) {
        scope s = {.be = be};
        const lin_aux a = {.n = LN_ROWS, .in = LIN_IN, .out = LIN_OUT, .bias = bias};
        dlin d;
        dlin_init(&s, &a, 100 + (uint64_t)bias, &d);
        float *out = dguarded(&s, (size_t)(a.n * a.out));
        OK(ex_linear_forward(be, &d.l, out, d.x, a.n, 1, 0, &err));
        double *y = hd(&s, (size_t)(a.n * a.out));
        ref_at(ref_lin, &a, d.theta, lin_theta_size(&a), y);
        ext_assert_close(down(&s, out, (size_t)(a.n * a.out)), to_float(&s, y, (size_t)(a.n * a.out)),
                         (size_t)(a.n * a.out), FWD_ATOL, FWD_RTOL, bias ? "linear forward (bias)" : "linear forward");
        expect_guard(&s, out, (size_t)(a.n * a.out), "linear forward out");
        OK(ex_linear_forward(be, &d.l, out, d.x, 0, 1, 0, &err)); /* n = 0: nothing to do */
        scope_end(&s);
    }
}

/* Naive backward: dinp = dout @ w, dw = dout^T @ x, db = colsum(dout). */
static void naive_linear_bwd(const float *w, const float *x, const float *dout, int64_t n, int64_t in, int64_t out,
                             double *dinp, double *dw, double *db) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < in; k++) {
            double acc = 0.0;
            for (int64_t o = 0; o < out; o++) acc += (double)dout[i * out + o] * w[o * in + k];
            dinp[i * in + k] = acc;
        }
    for (int64_t o = 0; o < out; o++) {
        double acc_b = 0.0;
        for (int64_t k = 0; k < in; k++) {
            double acc = 0.0;
            for (int64_t i = 0; i < n; i++) acc += (double)dout[i * out + o] * x[i * in + k];
            dw[o * in + k] = acc;
        }
        for (int64_t i = 0; i < n; i++) acc_b += dout[i * out + o];
        db[o] = acc_b;
    }
}

/* pre + ref against got. */
static void expect_accumulated(const float *got, const float *pre, const double *ref, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++) {
        double want = (double)pre[i] + ref[i];
        if (!(fabs((double)got[i] - want) <= 1e-5 + 1e-5 * fabs(want)))
            fail_msg("%s: element %zu: got %.9g, want %.9g (= %.9g + %.9g)", what, i, (double)got[i], want,
                     (double)pre[i], ref[i]);
    }
}

static void test_linear_backward(void **state) {
    ex_backend *be = &((env *)*state)->be;
    ex_err err;
    ex_err_clear(&err);
    scope s = {.be = be};
    const lin_aux a = {.n = LN_ROWS, .in = LIN_IN, .out = LIN_OUT, .bias = 1};
    const size_t NI = (size_t)(a.n * a.in), NO = (size_t)(a.n * a.out), NW = (size_t)(a.out * a.in);
    dlin d;
    dlin_init(&s, &a, 200, &d);
    const float *hw = d.theta, *hx = d.theta + lin_theta_size(&a) - NI;
    float *r = rnd(&s, NO, 201, -1.0f, 1.0f), *dr = dup(&s, r, NO);
    double *ri = hd(&s, NI), *rw = hd(&s, NW), *rb = hd(&s, (size_t)a.out);
    naive_linear_bwd(hw, hx, r, a.n, a.in, a.out, ri, rw, rb);
    float *pi = pattern(&s, NI, 1), *pw = pattern(&s, NW, 2), *pb = pattern(&s, (size_t)a.out, 3);
    float *gi = dup(&s, pi, NI);
    d.l.dw = dup(&s, pw, NW);
    d.l.db = dup(&s, pb, (size_t)a.out);
    OK(ex_linear_backward(be, &d.l, gi, dr, d.x, a.n, &err));
    expect_accumulated(down(&s, gi, NI), pi, ri, NI, "linear backward dinp");
    expect_accumulated(down(&s, d.l.dw, NW), pw, rw, NW, "linear backward dw");
    expect_accumulated(down(&s, d.l.db, (size_t)a.out), pb, rb, (size_t)a.out, "linear backward db");
    scope_end(&s);
}

/* Every combination of NULL dinp / dw / db: the non-NULL ones are right, a NULL dw costs no weight-gradient
 * GEMM, and a buffer not handed to the layer is left alone. */
static void test_linear_backward_null_grads(void **state) {
    ex_backend *real = &((env *)*state)->be;
    ex_err err;
    ex_err_clear(&err);
    for (int mask = 0; mask < 8; mask++) {
        const int want_i = mask & 1, want_w = (mask >> 1) & 1, want_b = (mask >> 2) & 1;
        scope s = {.be = real};
        const lin_aux a = {.n = LN_ROWS, .in = LIN_IN, .out = LIN_OUT, .bias = 1};
        const size_t NI = (size_t)(a.n * a.in), NO = (size_t)(a.n * a.out), NW = (size_t)(a.out * a.in);
        dlin d;
        dlin_init(&s, &a, 300, &d);
        const float *hw = d.theta, *hx = d.theta + lin_theta_size(&a) - NI;
        float *r = rnd(&s, NO, 301, -1.0f, 1.0f), *dr = dup(&s, r, NO);
        double *ri = hd(&s, NI), *rw = hd(&s, NW), *rb = hd(&s, (size_t)a.out);
        naive_linear_bwd(hw, hx, r, a.n, a.in, a.out, ri, rw, rb);
        float *pi = pattern(&s, NI, 4), *pw = pattern(&s, NW, 5), *pb = pattern(&s, (size_t)a.out, 6);
        float *gi = dup(&s, pi, NI), *gw = dup(&s, pw, NW), *gb = dup(&s, pb, (size_t)a.out);
        d.l.dw = want_w ? gw : NULL;
        d.l.db = want_b ? gb : NULL;
        ex_backend cb = counting_backend(real);
        OK(ex_linear_backward(&cb, &d.l, want_i ? gi : NULL, dr, d.x, a.n, &err));
        assert_int_equal(g_gemms, want_i + want_w);
        assert_int_equal(g_gemms_trans_a, want_w);
        const float *hi = down(&s, gi, NI), *hwg = down(&s, gw, NW), *hb = down(&s, gb, (size_t)a.out);
        if (want_i) expect_accumulated(hi, pi, ri, NI, "dinp");
        else assert_bitwise(hi, pi, NI, "dinp buffer not handed over");
        if (want_w) expect_accumulated(hwg, pw, rw, NW, "dw");
        else assert_bitwise(hwg, pw, NW, "dw buffer not handed over");
        if (want_b) expect_accumulated(hb, pb, rb, (size_t)a.out, "db");
        else assert_bitwise(hb, pb, (size_t)a.out, "db buffer not handed over");
        scope_end(&s);
    }
}

/* Two chained rank-1 hooks: forward adds both terms; backward calls both, and every gradient
 * (base weights, hook vectors, input) matches finite differences. */
static void test_linear_hooks(void **state) {
    ex_backend *be = &((env *)*state)->be;
    ex_err err;
    ex_err_clear(&err);
    scope s = {.be = be};
    const lin_aux a = {.n = LN_ROWS, .in = LIN_IN, .out = LIN_OUT, .bias = 1, .hooks = 2};
    const size_t NI = (size_t)(a.n * a.in), NO = (size_t)(a.n * a.out), NW = (size_t)(a.out * a.in);
    const size_t nt = lin_theta_size(&a);
    dlin d;
    dlin_init(&s, &a, 400, &d);
    /* forward */
    float *out = dguarded(&s, NO);
    OK(ex_linear_forward(be, &d.l, out, d.x, a.n, 1, 0, &err));
    assert_int_equal(d.r[0].fwd_calls, 1);
    assert_int_equal(d.r[1].fwd_calls, 1);
    double *y = hd(&s, NO);
    ref_at(ref_lin, &a, d.theta, nt, y);
    ext_assert_close(down(&s, out, NO), to_float(&s, y, NO), NO, FWD_ATOL, FWD_RTOL, "linear forward with hooks");
    /* backward, gradients from zero */
    float *r = rnd(&s, NO, 401, -1.0f, 1.0f), *dr = dup(&s, r, NO);
    double *fd = hd(&s, nt);
    fd_grad(ref_lin, &a, d.theta, nt, r, NO, fd);
    d.l.dw = dfill(&s, NW, 0.0f);
    d.l.db = dfill(&s, (size_t)a.out, 0.0f);
    for (int k = 0; k < 2; k++) {
        d.r[k].da = dfill(&s, (size_t)a.in, 0.0f);
        d.r[k].dbv = dfill(&s, (size_t)a.out, 0.0f);
    }
    float *gi = dfill(&s, NI, 0.0f);
    OK(ex_linear_backward(be, &d.l, gi, dr, d.x, a.n, &err));
    assert_int_equal(d.r[0].bwd_calls, 1);
    assert_int_equal(d.r[1].bwd_calls, 1);
    const double *f = fd;
    expect_grad(down(&s, d.l.dw, NW), NULL, f, NW, "hooked linear dw");
    f += NW;
    expect_grad(down(&s, d.l.db, (size_t)a.out), NULL, f, (size_t)a.out, "hooked linear db");
    f += a.out;
    for (int k = 0; k < 2; k++) {
        expect_grad(down(&s, d.r[k].da, (size_t)a.in), NULL, f, (size_t)a.in, k ? "hook 2 da" : "hook 1 da");
        expect_grad(down(&s, d.r[k].dbv, (size_t)a.out), NULL, f + a.in, (size_t)a.out, k ? "hook 2 db" : "hook 1 db");
        f += a.in + a.out;
    }
    expect_grad(down(&s, gi, NI), NULL, f, NI, "hooked linear dinp");
    /* frozen base with dinp NULL: the hooks are still called and still get their gradients */
    d.l.dw = d.l.db = NULL;
    OK(ex_linear_backward(be, &d.l, NULL, dr, d.x, a.n, &err));
    assert_int_equal(d.r[0].bwd_calls, 2);
    assert_int_equal(d.r[1].bwd_calls, 2);
    f = fd + NW + a.out;
    float *pre = to_float(&s, f, (size_t)a.in); /* da now holds 2x the gradient */
    expect_grad(down(&s, d.r[0].da, (size_t)a.in), pre, f, (size_t)a.in, "hook 1 da, second backward");
    scope_end(&s);
}

/* ex_linear_backward_write: dinp is written (its NaN contents never read), bit for bit what the accumulating
 * backward leaves in a zeroed buffer, with the hooks' terms added; parameter gradients still accumulate; a
 * NULL dinp is refused. */
static void test_linear_backward_write(void **state) {
    ex_backend *be = &((env *)*state)->be;
    ex_err err;
    ex_err_clear(&err);
    scope s = {.be = be};
    const lin_aux a = {.n = LN_ROWS, .in = LIN_IN, .out = LIN_OUT, .bias = 1, .hooks = 2};
    const size_t NI = (size_t)(a.n * a.in), NO = (size_t)(a.n * a.out), NW = (size_t)(a.out * a.in);
    dlin d;
    dlin_init(&s, &a, 450, &d);
    float *out = dguarded(&s, NO);
    OK(ex_linear_forward(be, &d.l, out, d.x, a.n, 1, 0, &err));
    float *dr = dup(&s, rnd(&s, NO, 451, -1.0f, 1.0f), NO);
    float *pw = pattern(&s, NW, 7);
    float *gw[2] = {NULL, NULL}, *gi[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        gw[k] = dup(&s, pw, NW);
        d.l.dw = gw[k];
        gi[k] = k ? dguarded(&s, NI) : dfill(&s, NI, 0.0f); /* k = 1: NaN before the write */
        OK((k ? ex_linear_backward_write : ex_linear_backward)(be, &d.l, gi[k], dr, d.x, a.n, &err));
    }
    assert_bitwise(down(&s, gi[1], NI), down(&s, gi[0], NI), NI, "dinp written = dinp accumulated into zeros");
    assert_bitwise(down(&s, gw[1], NW), down(&s, gw[0], NW), NW, "dw accumulates in both");
    expect_guard(&s, gi[1], NI, "written dinp");
    assert_int_equal(d.r[0].bwd_calls, 2);
    assert_int_equal(ex_linear_backward_write(be, &d.l, NULL, dr, d.x, a.n, &err), EX_E_INVALID);
    assert_non_null(strstr(err.msg, "NULL input gradient"));
    scope_end(&s);
}

/* A backend's optional linear_bias_fwd (GEMM with the bias in its epilogue; CUDA): ex_be_linear_fwd uses its
 * result when it returns EX_OK, falls back to gemm + bias_add_fwd on EX_E_UNSUPPORTED (bit for bit the plain
 * path), passes any other status on with a message, and does not call it without a bias. */
static int g_fused_calls;
static ex_status g_fused_status;
static ex_status stub_linear_bias_fwd(void *ctx, float *out, const void *inp, ex_dtype inp_dtype, const void *w,
                                      ex_dtype w_dtype, const float *bias, int64_t n, int64_t ic, int64_t oc) {
    (void)inp, (void)inp_dtype, (void)w, (void)w_dtype, (void)bias, (void)ic;
    g_fused_calls++;
    if (g_fused_status != EX_OK) return g_fused_status;
    for (int64_t i = 0; i < n * oc; i++) out[i] = 7.0f; /* a result the plain path cannot give */
    (void)ctx;
    return EX_OK;
}

static void test_linear_bias_fused_slot(void **state) {
    ex_backend *real = &((env *)*state)->be;
    ex_err err;
    ex_err_clear(&err);
    scope s = {.be = real};
    const lin_aux a = {.n = LN_ROWS, .in = LIN_IN, .out = LIN_OUT, .bias = 1};
    const size_t NO = (size_t)(a.n * a.out);
    dlin d;
    dlin_init(&s, &a, 500, &d);
    float *plain = dguarded(&s, NO), *got = dguarded(&s, NO);
    OK(ex_linear_forward(real, &d.l, plain, d.x, a.n, 0, 0, &err));
    ex_backend fb = *real;
    fb.vt.linear_bias_fwd = stub_linear_bias_fwd;
    g_fused_calls = 0;
    g_fused_status = EX_E_UNSUPPORTED; /* falls back */
    OK(ex_linear_forward(&fb, &d.l, got, d.x, a.n, 0, 0, &err));
    assert_int_equal(g_fused_calls, 1);
    assert_bitwise(down(&s, got, NO), down(&s, plain, NO), NO, "fallback after EX_E_UNSUPPORTED");
    g_fused_status = EX_OK; /* the fused result is the layer's */
    OK(ex_linear_forward(&fb, &d.l, got, d.x, a.n, 0, 0, &err));
    assert_int_equal(g_fused_calls, 2);
    const float *h = down(&s, got, NO);
    for (size_t i = 0; i < NO; i++) assert_true(h[i] == 7.0f);
    expect_guard(&s, got, NO, "fused output");
    g_fused_status = EX_E_DEVICE; /* a failure is reported */
    assert_int_equal(ex_linear_forward(&fb, &d.l, got, d.x, a.n, 0, 0, &err), EX_E_DEVICE);
    assert_non_null(strstr(err.msg, "linear_bias_fwd failed"));
    ex_linear nobias = d.l; /* no bias: the plain GEMM, the slot is not asked */
    nobias.b = NULL;
    g_fused_status = EX_OK;
    OK(ex_linear_forward(&fb, &nobias, got, d.x, a.n, 0, 0, &err));
    assert_int_equal(g_fused_calls, 3);
    scope_end(&s);
}

/* ------------------------------------------------------------------------------
 * LayerNorm
 * ------------------------------------------------------------------------------ */

typedef struct ln_aux {
    int64_t n, c;
} ln_aux;

/* theta = [w (c) | b (c) | x (n, c)] */
static void ref_ln(const double *th, double *y, const void *vaux) {
    const ln_aux *a = vaux;
    ref_layernorm(th + 2 * a->c, th, th + a->c, a->n, a->c, y);
}

static void test_layernorm(void **state) {
    ex_backend *be = &((env *)*state)->be;
    ex_err err;
    ex_err_clear(&err);
    scope s = {.be = be};
    const ln_aux a = {.n = 6, .c = 11};
    const size_t N = (size_t)(a.n * a.c), C = (size_t)a.c, nt = 2 * C + N;
    float *th = hf(&s, nt);
    ext_fill_uniform(th, C, 500, 0.5f, 1.5f);
    ext_fill_uniform(th + C, C, 501, -0.5f, 0.5f);
    ext_fill_uniform(th + 2 * C, N, 502, -2.0f, 3.0f);
    float *w = dup(&s, th, C), *b = dup(&s, th + C, C), *x = dup(&s, th + 2 * C, N);
    float *out = dguarded(&s, N), *mean = dguarded(&s, (size_t)a.n), *rstd = dguarded(&s, (size_t)a.n);
    ex_layernorm ln = {.dim = a.c, .eps = (float)LN_EPS, .w = w, .b = b};
    OK(ex_layernorm_forward(be, &ln, out, mean, rstd, x, a.n, &err));
    double *y = hd(&s, N);
    ref_at(ref_ln, &a, th, nt, y);
    ext_assert_close(down(&s, out, N), to_float(&s, y, N), N, FWD_ATOL, FWD_RTOL, "layernorm forward");
    expect_guard(&s, out, N, "layernorm out");
    float *r = rnd(&s, N, 503, -1.0f, 1.0f), *dr = dup(&s, r, N);
    double *fd = hd(&s, nt);
    fd_grad(ref_ln, &a, th, nt, r, N, fd);
    float *pw = pattern(&s, C, 1), *pb = pattern(&s, C, 2), *pi = pattern(&s, N, 3);
    ln.dw = dup(&s, pw, C);
    ln.db = dup(&s, pb, C);
    float *gi = dup(&s, pi, N);
    OK(ex_layernorm_backward(be, &ln, gi, dr, x, mean, rstd, a.n, &err));
    expect_grad(down(&s, ln.dw, C), pw, fd, C, "layernorm dw");
    expect_grad(down(&s, ln.db, C), pb, fd + C, C, "layernorm db");
    expect_grad(down(&s, gi, N), pi, fd + 2 * C, N, "layernorm dinp");
    /* no dinp: dw, db still accumulate */
    ex_layernorm ln2 = ln;
    ln2.dw = dup(&s, pw, C);
    ln2.db = dup(&s, pb, C);
    OK(ex_layernorm_backward(be, &ln2, NULL, dr, x, mean, rstd, a.n, &err));
    expect_grad(down(&s, ln2.dw, C), pw, fd, C, "layernorm dw without dinp");
    expect_grad(down(&s, ln2.db, C), pb, fd + C, C, "layernorm db without dinp");
    /* frozen: dw, db NULL; only dinp changes */
    float *gw = ln.dw;
    ln.dw = ln.db = NULL;
    gi = dup(&s, pi, N);
    OK(ex_layernorm_backward(be, &ln, gi, dr, x, mean, rstd, a.n, &err));
    expect_grad(down(&s, gi, N), pi, fd + 2 * C, N, "frozen layernorm dinp");
    expect_grad(down(&s, gw, C), pw, fd, C, "layernorm dw untouched by the frozen call");
    scope_end(&s);
}

/* ------------------------------------------------------------------------------
 * Block: configuration, parameter packing, double reference
 * ------------------------------------------------------------------------------ */

enum {
    P_N1W, P_N1B, P_QKVW, P_QKVB, P_PROJW, P_PROJB, P_N2W, P_N2B,
    P_FC1W, P_FC1B, P_FC2W, P_FC2B, P_LS1, P_LS2, P_HA, P_HB, P_X, NP
};
static const char *const k_pname[NP] = {
    "norm1.w", "norm1.b", "qkv.w", "qkv.b", "proj.w", "proj.b", "norm2.w", "norm2.b",
    "fc1.w", "fc1.b", "fc2.w", "fc2.b", "ls1", "ls2", "qkv hook a", "qkv hook b", "input"};
/* Initial value ranges (kept moderate so that attention and the activations are far from linear). */
static const float k_plo[NP] = {0.6f, -0.3f, -0.5f, -0.2f, -0.5f, -0.2f, 0.6f, -0.3f,
                                -0.5f, -0.3f, -0.4f, -0.2f, 0.5f, 0.5f, -0.4f, -0.4f, -1.5f};
static const float k_phi[NP] = {1.4f, 0.3f, 0.5f, 0.2f, 0.5f, 0.2f, 1.4f, 0.3f,
                                0.5f, 0.3f, 0.4f, 0.2f, 1.5f, 1.5f, 0.4f, 0.4f, 1.5f};

typedef struct bcfg {
    const char *name;
    int64_t b, t, dim, heads, hidden;
    ex_mlp_kind mlp;
    int ls;                    /* LayerScale present */
    int hook;                  /* rank-1 adapter on qkv */
    const float *drop1, *drop2; /* (b) host, or NULL */
    uint64_t seed;
} bcfg;

static const float k_drop1_a[2] = {1.25f, 0.0f}, k_drop2_a[2] = {0.0f, 2.0f};
static const float k_drop1_d[2] = {0.5f, 1.5f}, k_drop2_d[2] = {2.0f, 0.75f};

static const bcfg k_cfg_a = {"A: GELU + LayerScale + drop + qkv hook", 2, 5, 12, 3, 20, EX_MLP_GELU, 1, 1,
                             k_drop1_a, k_drop2_a, 1000};
static const bcfg k_cfg_b = {"B: GELU, no LayerScale, no drop", 2, 5, 12, 3, 20, EX_MLP_GELU, 0, 0, NULL, NULL, 2000};
static const bcfg k_cfg_c = {"C: SwiGLU + LayerScale", 2, 5, 12, 3, 20, EX_MLP_SWIGLU, 1, 0, NULL, NULL, 3000};
static const bcfg k_cfg_d = {"D: SwiGLU + drop, no LayerScale", 2, 5, 12, 3, 20, EX_MLP_SWIGLU, 0, 0, k_drop1_d,
                             k_drop2_d, 4000};

/* Where each tensor sits in theta (len 0: absent in this configuration). */
typedef struct layout {
    size_t off[NP], len[NP], total;
} layout;

static int64_t cfg_fc1(const bcfg *c) { return c->mlp == EX_MLP_SWIGLU ? 2 * c->hidden : c->hidden; }

static void make_layout(const bcfg *c, layout *L) {
    const size_t d = (size_t)c->dim, f = (size_t)cfg_fc1(c), h = (size_t)c->hidden, n = (size_t)(c->b * c->t);
    const size_t len[NP] = {d, d, 3 * d * d, 3 * d, d * d, d, d, d, f * d, f, d * h, d,
                            c->ls ? d : 0, c->ls ? d : 0, c->hook ? d : 0, c->hook ? 3 * d : 0, n * d};
    L->total = 0;
    for (int p = 0; p < NP; p++) {
        L->off[p] = L->total;
        L->len[p] = len[p];
        L->total += len[p];
    }
}

static float *make_theta(scope *s, const bcfg *c, const layout *L) {
    float *th = hf(s, L->total);
    for (int p = 0; p < NP; p++) ext_fill_uniform(th + L->off[p], L->len[p], c->seed + (uint64_t)p, k_plo[p], k_phi[p]);
    return th;
}

/* dst (b, t, d) = res + drop (b) * ls (d) * br; ls/drop may be NULL. */
static void ref_residual(double *dst, const double *res, const double *br, const double *ls, const float *drop,
                         int64_t B, int64_t T, int64_t D) {
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t i = 0; i < T * D; i++) {
            const int64_t k = bi * T * D + i;
            dst[k] = res[k] + (drop ? (double)drop[bi] : 1.0) * (ls ? ls[i % D] : 1.0) * br[k];
        }
}

/* The block in double: y (b, t, dim) = block(x) with every tensor taken from theta. */
static void ref_block(const double *th, double *y, const void *vaux) {
    const bcfg *c = vaux;
    layout L;
    make_layout(c, &L);
    const int64_t n = c->b * c->t, D = c->dim, H = c->hidden, F = cfg_fc1(c);
#define TP(p) (L.len[p] ? th + L.off[p] : NULL)
    double *ln = malloc((size_t)(n * D) * sizeof(double)), *qkv = malloc((size_t)(n * 3 * D) * sizeof(double));
    double *att = malloc((size_t)(n * D) * sizeof(double)), *br = malloc((size_t)(n * D) * sizeof(double));
    double *mid = malloc((size_t)(n * D) * sizeof(double)), *fc1 = malloc((size_t)(n * F) * sizeof(double));
    double *act = malloc((size_t)(n * H) * sizeof(double));
    assert_true(ln && qkv && att && br && mid && fc1 && act);
    const double *x = TP(P_X);
    /* attention branch */
    ref_layernorm(x, TP(P_N1W), TP(P_N1B), n, D, ln);
    ref_linear(ln, TP(P_QKVW), TP(P_QKVB), n, D, 3 * D, qkv);
    if (c->hook) {
        const double *ha = TP(P_HA), *hb = TP(P_HB);
        for (int64_t i = 0; i < n; i++) {
            double u = 0.0;
            for (int64_t k = 0; k < D; k++) u += ln[i * D + k] * ha[k];
            for (int64_t o = 0; o < 3 * D; o++) qkv[i * 3 * D + o] += u * hb[o];
        }
    }
    ref_attention(qkv, c->b, c->t, c->heads, D / c->heads, att);
    ref_linear(att, TP(P_PROJW), TP(P_PROJB), n, D, D, br);
    ref_residual(mid, x, br, TP(P_LS1), c->drop1, c->b, c->t, D);
    /* MLP branch */
    ref_layernorm(mid, TP(P_N2W), TP(P_N2B), n, D, ln);
    ref_linear(ln, TP(P_FC1W), TP(P_FC1B), n, D, F, fc1);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < H; j++)
            act[i * H + j] = c->mlp == EX_MLP_GELU ? ref_gelu(fc1[i * F + j])
                                                   : ref_silu(fc1[i * F + j]) * fc1[i * F + H + j];
    ref_linear(act, TP(P_FC2W), TP(P_FC2B), n, H, D, br);
    ref_residual(y, mid, br, TP(P_LS2), c->drop2, c->b, c->t, D);
#undef TP
    free(ln);
    free(qkv);
    free(att);
    free(br);
    free(mid);
    free(fc1);
    free(act);
}

/* ------------------------------------------------------------------------------
 * Block on the device
 * ------------------------------------------------------------------------------ */

typedef struct dblock {
    layout L;
    float *p[NP];         /* device tensors (p[P_X] is the input), NULL when absent */
    float *g[NP];         /* device gradients, NULL when not requested (g[P_X] unused) */
    rank1 hook;
    ex_block blk;
    size_t acts_n, scratch_n, n_out;
    float *acts_buf;      /* (acts_n + GUARD) */
    ex_block_acts acts;
    float *scratch;       /* (scratch_n + GUARD) */
    float *out;           /* (n, dim) + GUARD */
    float *dresid;        /* (n, dim) */
    float *drop1, *drop2; /* (b) device, or NULL */
} dblock;

/* grads: 0 none, 1 zeroed, 2 prefilled with pattern(salt = tensor index). Hook gradients follow `hook_grads`. */
static void dblock_init(scope *s, const bcfg *c, const float *theta, int grads, int hook_grads, dblock *d) {
    memset(d, 0, sizeof *d);
    make_layout(c, &d->L);
    for (int p = 0; p < NP; p++) {
        if (!d->L.len[p]) continue;
        d->p[p] = dup(s, theta + d->L.off[p], d->L.len[p]);
        const int want = (p == P_HA || p == P_HB) ? hook_grads : grads;
        if (p != P_X && want == 1) d->g[p] = dfill(s, d->L.len[p], 0.0f);
        if (p != P_X && want == 2) d->g[p] = dup(s, pattern(s, d->L.len[p], p), d->L.len[p]);
    }
    const int64_t D = c->dim, n = c->b * c->t;
    ex_block *b = &d->blk;
    b->dim = D;
    b->heads = c->heads;
    b->hidden = c->hidden;
    b->mlp = c->mlp;
    b->norm1 = (ex_layernorm){D, (float)LN_EPS, d->p[P_N1W], d->p[P_N1B], d->g[P_N1W], d->g[P_N1B]};
    b->norm2 = (ex_layernorm){D, (float)LN_EPS, d->p[P_N2W], d->p[P_N2B], d->g[P_N2W], d->g[P_N2B]};
    b->qkv = (ex_linear){D, 3 * D, d->p[P_QKVW], d->p[P_QKVB], d->g[P_QKVW], d->g[P_QKVB], NULL, EX_F32, EX_F32};
    b->proj = (ex_linear){D, D, d->p[P_PROJW], d->p[P_PROJB], d->g[P_PROJW], d->g[P_PROJB], NULL, EX_F32, EX_F32};
    b->fc1 = (ex_linear){D, cfg_fc1(c), d->p[P_FC1W], d->p[P_FC1B], d->g[P_FC1W], d->g[P_FC1B], NULL, EX_F32, EX_F32};
    b->fc2 = (ex_linear){c->hidden, D, d->p[P_FC2W], d->p[P_FC2B], d->g[P_FC2W], d->g[P_FC2B], NULL, EX_F32, EX_F32};
    b->ls1 = d->p[P_LS1];
    b->ls2 = d->p[P_LS2];
    b->dls1 = d->g[P_LS1];
    b->dls2 = d->g[P_LS2];
    if (c->hook) {
        rank1_init(s, &d->hook, D, 3 * D, n, d->p[P_HA], d->p[P_HB], d->g[P_HA], d->g[P_HB]);
        b->qkv.hooks = &d->hook.hook;
    }
    d->acts_n = ex_block_acts_floats(b, c->b, c->t);
    d->scratch_n = ex_block_scratch_floats(b, c->b, c->t);
    assert_true(d->acts_n > 0 && d->scratch_n > 0);
    d->acts_buf = dguarded(s, d->acts_n);
    ex_block_acts_bind(&d->acts, b, c->b, c->t, d->acts_buf);
    d->scratch = dguarded(s, d->scratch_n);
    d->n_out = (size_t)(n * D);
    d->out = dguarded(s, d->n_out);
    d->dresid = dfill(s, d->n_out, 0.0f);
    d->drop1 = c->drop1 ? dup(s, c->drop1, (size_t)c->b) : NULL;
    d->drop2 = c->drop2 ? dup(s, c->drop2, (size_t)c->b) : NULL;
}

static void dblock_forward(ex_backend *be, const bcfg *c, dblock *d) {
    ex_err err;
    ex_err_clear(&err);
    OK(ex_block_forward(be, &d->blk, &d->acts, d->out, d->p[P_X], d->drop1, d->drop2, c->b, c->t, 1, 0, &err));
}

/* dresid = r, then backward (dresid becomes dL/d inp). */
static void dblock_backward(ex_backend *be, const bcfg *c, dblock *d, const float *r) {
    ex_err err;
    ex_err_clear(&err);
    OK(ex_be_upload(be, d->dresid, r, d->n_out * sizeof(float), &err));
    OK(ex_block_backward(be, &d->blk, &d->acts, d->dresid, d->p[P_X], d->drop1, d->drop2, d->scratch, c->b, c->t,
                         &err));
}

static void dblock_expect_guards(scope *s, const dblock *d) {
    expect_guard(s, d->acts_buf, d->acts_n, "acts");
    expect_guard(s, d->scratch, d->scratch_n, "scratch");
    expect_guard(s, d->out, d->n_out, "out");
}

/* ------------------------------------------------------------------------------
 * Block: forward and backward against the reference
 * ------------------------------------------------------------------------------ */

static void check_block_forward(ex_backend *be, const bcfg *c) {
    scope s = {.be = be};
    layout L;
    make_layout(c, &L);
    const float *th = make_theta(&s, c, &L);
    dblock d;
    dblock_init(&s, c, th, 0, 0, &d);
    dblock_forward(be, c, &d);
    double *y = hd(&s, d.n_out);
    ref_at(ref_block, c, th, L.total, y);
    char what[160];
    snprintf(what, sizeof what, "block forward, config %s", c->name);
    ext_assert_close(down(&s, d.out, d.n_out), to_float(&s, y, d.n_out), d.n_out, FWD_ATOL, FWD_RTOL, what);
    dblock_expect_guards(&s, &d);
    if (c->hook) assert_int_equal(d.hook.fwd_calls, 1);
    scope_end(&s);
}

static void check_block_backward(ex_backend *be, const bcfg *c) {
    scope s = {.be = be};
    layout L;
    make_layout(c, &L);
    const float *th = make_theta(&s, c, &L);
    dblock d;
    dblock_init(&s, c, th, 1, 1, &d);
    dblock_forward(be, c, &d);
    float *r = rnd(&s, d.n_out, c->seed + 99, -1.0f, 1.0f);
    dblock_backward(be, c, &d, r);
    dblock_expect_guards(&s, &d);
    if (c->hook) assert_int_equal(d.hook.bwd_calls, 1);
    double *fd = hd(&s, L.total);
    fd_grad(ref_block, c, th, L.total, r, d.n_out, fd);
    char what[200];
    for (int p = 0; p < NP; p++) {
        if (!L.len[p]) continue;
        snprintf(what, sizeof what, "config %s: gradient of %s", c->name, k_pname[p]);
        const float *got = down(&s, p == P_X ? d.dresid : d.g[p], L.len[p]);
        expect_grad(got, NULL, fd + L.off[p], L.len[p], what);
    }
    scope_end(&s);
}

static void test_block_forward_gelu_ls_drop_hook(void **state) { check_block_forward(&((env *)*state)->be, &k_cfg_a); }
static void test_block_forward_gelu_plain(void **state) { check_block_forward(&((env *)*state)->be, &k_cfg_b); }
static void test_block_forward_swiglu_ls(void **state) { check_block_forward(&((env *)*state)->be, &k_cfg_c); }
static void test_block_forward_swiglu_drop(void **state) { check_block_forward(&((env *)*state)->be, &k_cfg_d); }
static void test_block_backward_gelu_ls_drop_hook(void **state) {
    check_block_backward(&((env *)*state)->be, &k_cfg_a);
}
static void test_block_backward_gelu_plain(void **state) { check_block_backward(&((env *)*state)->be, &k_cfg_b); }
static void test_block_backward_swiglu_ls(void **state) { check_block_backward(&((env *)*state)->be, &k_cfg_c); }
static void test_block_backward_swiglu_drop(void **state) { check_block_backward(&((env *)*state)->be, &k_cfg_d); }

/* Gradients prefilled with a pattern end as pattern + the gradient from zero. */
static void test_block_accumulates(void **state) {
    ex_backend *be = &((env *)*state)->be;
    const bcfg *cfgs[2] = {&k_cfg_a, &k_cfg_c};
    for (int ci = 0; ci < 2; ci++) {
        const bcfg *c = cfgs[ci];
        scope s = {.be = be};
        layout L;
        make_layout(c, &L);
        const float *th = make_theta(&s, c, &L);
        float *r = rnd(&s, (size_t)(c->b * c->t * c->dim), c->seed + 7, -1.0f, 1.0f);
        dblock z, p;
        dblock_init(&s, c, th, 1, 1, &z);
        dblock_init(&s, c, th, 2, 2, &p);
        dblock_forward(be, c, &z);
        dblock_backward(be, c, &z, r);
        dblock_forward(be, c, &p);
        dblock_backward(be, c, &p, r);
        for (int k = 0; k < NP; k++) {
            if (!L.len[k] || k == P_X) continue;
            const float *g0 = down(&s, z.g[k], L.len[k]), *gp = down(&s, p.g[k], L.len[k]);
            const float *pre = pattern(&s, L.len[k], k);
            double *g0d = hd(&s, L.len[k]);
            for (size_t i = 0; i < L.len[k]; i++) g0d[i] = g0[i];
            expect_accumulated(gp, pre, g0d, L.len[k], k_pname[k]);
        }
        /* dresid is replaced (dL/d inp), not accumulated into */
        assert_bitwise(down(&s, p.dresid, p.n_out), down(&s, z.dresid, z.n_out), p.n_out, "input gradient");
        scope_end(&s);
    }
}

/* Frozen base weights (every gradient pointer NULL): no weight-gradient GEMM, the same input
 * gradient bit for bit, parameters and activations untouched. With the qkv hook, the hook's
 * gradients are still produced and equal those of the unfrozen run. */
static void test_block_frozen(void **state) {
    ex_backend *real = &((env *)*state)->be;
    const bcfg *cfgs[3] = {&k_cfg_a, &k_cfg_c, &k_cfg_d};
    for (int ci = 0; ci < 3; ci++) {
        const bcfg *c = cfgs[ci];
        scope s = {.be = real};
        layout L;
        make_layout(c, &L);
        const float *th = make_theta(&s, c, &L);
        float *r = rnd(&s, (size_t)(c->b * c->t * c->dim), c->seed + 8, -1.0f, 1.0f);
        dblock full, fz;
        dblock_init(&s, c, th, 1, 1, &full);
        dblock_init(&s, c, th, 0, 1, &fz);
        dblock_forward(real, c, &full);
        dblock_backward(real, c, &full, r);
        dblock_forward(real, c, &fz);
        const float *acts_before = down(&s, fz.acts_buf, fz.acts_n);
        ex_backend cb = counting_backend(real);
        dblock_backward(&cb, c, &fz, r);
        /* the only transposed-A GEMMs allowed are the hook's two (da, db) */
        assert_int_equal(g_gemms_trans_a, c->hook ? 2 : 0);
        assert_bitwise(down(&s, fz.dresid, fz.n_out), down(&s, full.dresid, full.n_out), fz.n_out,
                       "frozen input gradient");
        assert_bitwise(down(&s, fz.acts_buf, fz.acts_n), acts_before, fz.acts_n, "acts after backward");
        for (int k = 0; k < NP; k++) {
            if (!L.len[k]) continue;
            assert_bitwise(down(&s, fz.p[k], L.len[k]), th + L.off[k], L.len[k], k_pname[k]);
            if (k == P_HA || k == P_HB)
                assert_bitwise(down(&s, fz.g[k], L.len[k]), down(&s, full.g[k], L.len[k]), L.len[k], k_pname[k]);
        }
        dblock_expect_guards(&s, &fz);
        scope_end(&s);
    }
}

/* Two forward+backward runs on fresh buffers agree bit for bit. */
/* Two runs of a block (forward and backward) gave the same bits: output, every activation, the input gradient
 * and every parameter gradient. */
static void expect_runs_bitwise(scope *s, const layout *L, const dblock run[2]) {
    assert_bitwise(down(s, run[0].out, run[0].n_out), down(s, run[1].out, run[1].n_out), run[0].n_out, "out");
    assert_bitwise(down(s, run[0].acts_buf, run[0].acts_n), down(s, run[1].acts_buf, run[1].acts_n), run[0].acts_n,
                   "acts");
    assert_bitwise(down(s, run[0].dresid, run[0].n_out), down(s, run[1].dresid, run[1].n_out), run[0].n_out,
                   "input gradient");
    for (int k = 0; k < NP; k++)
        if (L->len[k] && k != P_X)
            assert_bitwise(down(s, run[0].g[k], L->len[k]), down(s, run[1].g[k], L->len[k]), L->len[k], k_pname[k]);
}

/* Forward and backward of config c, twice from the same parameters and output gradient (seed + seed_off): run k
 * on backend use[k]; the two must agree bit for bit (expect_runs_bitwise). */
static void expect_two_runs_bitwise(ex_backend *be, const bcfg *c, ex_backend *const use[2], uint64_t seed_off) {
    scope s = {.be = be};
    layout L;
    make_layout(c, &L);
    const float *th = make_theta(&s, c, &L);
    float *r = rnd(&s, (size_t)(c->b * c->t * c->dim), c->seed + seed_off, -1.0f, 1.0f);
    dblock run[2];
    for (int k = 0; k < 2; k++) {
        dblock_init(&s, c, th, 1, 1, &run[k]);
        dblock_forward(use[k], c, &run[k]);
        dblock_backward(use[k], c, &run[k], r);
    }
    expect_runs_bitwise(&s, &L, run);
    scope_end(&s);
}

static void test_block_deterministic(void **state) {
    ex_backend *be = &((env *)*state)->be;
    ex_backend *const use[2] = {be, be};
    expect_two_runs_bitwise(be, &k_cfg_a, use, 9);
    expect_two_runs_bitwise(be, &k_cfg_c, use, 9);
}

/* The one-pass residual slots (residual_fwd / residual_bwd) give the block the bits of the unfused ops
 * (channel_scale, row_scale, binary) on every configuration: LayerScale and drop path, either, neither. The
 * slots are wrapped to count calls, so a block that ignored them would fail. */
static ex_backend_vtable g_inner_vt;
static int g_res_fwd_calls, g_res_bwd_calls;
static ex_status counting_residual_fwd(void *ctx, float *out, const float *resid, const float *branch, const float *ls,
                                       const float *drop, int64_t b, int64_t t, int64_t c) {
    g_res_fwd_calls++;
    return g_inner_vt.residual_fwd(ctx, out, resid, branch, ls, drop, b, t, c);
}
static ex_status counting_residual_bwd(void *ctx, float *dbranch, float *dls, const float *dres, const float *branch,
                                       const float *ls, const float *drop, int64_t b, int64_t t, int64_t c) {
    g_res_bwd_calls++;
    return g_inner_vt.residual_bwd(ctx, dbranch, dls, dres, branch, ls, drop, b, t, c);
}

static void test_block_residual_slots(void **state) {
    ex_backend *be = &((env *)*state)->be;
    assert_non_null(be->vt.residual_fwd);
    assert_non_null(be->vt.residual_bwd);
    g_inner_vt = be->vt;
    ex_backend fused = *be, plain = *be;
    fused.vt.residual_fwd = counting_residual_fwd;
    fused.vt.residual_bwd = counting_residual_bwd;
    plain.vt.residual_fwd = NULL;
    plain.vt.residual_bwd = NULL;
    ex_backend *const use[2] = {&fused, &plain};
    const bcfg *cfgs[4] = {&k_cfg_a, &k_cfg_b, &k_cfg_c, &k_cfg_d};
    for (int ci = 0; ci < 4; ci++) {
        const bcfg *c = cfgs[ci];
        g_res_fwd_calls = g_res_bwd_calls = 0;
        expect_two_runs_bitwise(be, c, use, 19);
        const int scaled = c->drop1 || c->ls; /* the branches have LayerScale or drop path */
        assert_int_equal(g_res_fwd_calls, scaled ? 2 : 0);
        assert_int_equal(g_res_bwd_calls, scaled ? 2 : 0);
    }
}

/* Acts and scratch sized and bound for more rows (3 x 7) serve a smaller call (2 x 5) with the
 * same results as buffers sized exactly (backbones bind once for their largest batch). */
static void test_block_acts_bound_larger(void **state) {
    ex_backend *be = &((env *)*state)->be;
    const bcfg *cfgs[2] = {&k_cfg_a, &k_cfg_c};
    for (int ci = 0; ci < 2; ci++) {
        const bcfg *c = cfgs[ci];
        scope s = {.be = be};
        layout L;
        make_layout(c, &L);
        const float *th = make_theta(&s, c, &L);
        float *r = rnd(&s, (size_t)(c->b * c->t * c->dim), c->seed + 10, -1.0f, 1.0f);
        dblock exact, big;
        dblock_init(&s, c, th, 1, 1, &exact);
        dblock_init(&s, c, th, 1, 1, &big);
        big.acts_n = ex_block_acts_floats(&big.blk, 3, 7);
        big.scratch_n = ex_block_scratch_floats(&big.blk, 3, 7);
        assert_true(big.acts_n > exact.acts_n && big.scratch_n > exact.scratch_n);
        big.acts_buf = dguarded(&s, big.acts_n);
        big.scratch = dguarded(&s, big.scratch_n);
        ex_block_acts_bind(&big.acts, &big.blk, 3, 7, big.acts_buf);
        for (int k = 0; k < 2; k++) {
            dblock *d = k ? &big : &exact;
            dblock_forward(be, c, d);
            dblock_backward(be, c, d, r);
            dblock_expect_guards(&s, d);
        }
        assert_bitwise(down(&s, big.out, big.n_out), down(&s, exact.out, exact.n_out), big.n_out, "out");
        assert_bitwise(down(&s, big.dresid, big.n_out), down(&s, exact.dresid, exact.n_out), big.n_out,
                       "input gradient");
        for (int k = 0; k < NP; k++)
            if (L.len[k] && k != P_X)
                assert_bitwise(down(&s, big.g[k], L.len[k]), down(&s, exact.g[k], L.len[k]), L.len[k], k_pname[k]);
        scope_end(&s);
    }
}

/* ------------------------------------------------------------------------------
 * Block: sizes and layout
 * ------------------------------------------------------------------------------ */

static size_t r16(size_t n) { return (n + 15) / 16 * 16; }

/* Binding acts then writing every field's full extent stays inside ex_block_acts_floats floats,
 * fields do not overlap and start 16-float aligned; the sizes are exactly the documented sums. */
static void test_block_sizes(void **state) {
    (void)state;
    const struct {
        int64_t b, t, dim, heads, hidden;
        ex_mlp_kind mlp;
    } shapes[] = {
        {2, 5, 12, 3, 20, EX_MLP_GELU}, {2, 5, 12, 3, 20, EX_MLP_SWIGLU}, {3, 257, 24, 4, 96, EX_MLP_GELU},
        {1, 7, 10, 5, 17, EX_MLP_SWIGLU}, {4, 1, 6, 2, 16, EX_MLP_GELU},
    };
    for (size_t si = 0; si < 2 * sizeof shapes / sizeof shapes[0]; si++) {
        const size_t sh = si / 2;
        const int bf16 = (int)(si % 2); /* activations in bf16: ln1, qkv, att, ln2 and (GELU) act take half */
        ex_block blk = {.dim = shapes[sh].dim, .heads = shapes[sh].heads, .hidden = shapes[sh].hidden,
                        .mlp = shapes[sh].mlp};
        ex_err err;
        assert_int_equal(ex_block_set_act_dtype(&blk, bf16 ? EX_BF16 : EX_F32, &err), EX_OK);
        const int64_t b = shapes[sh].b, t = shapes[sh].t;
        const size_t n = (size_t)(b * t), d = (size_t)blk.dim, h = (size_t)blk.hidden;
        const int swiglu = blk.mlp == EX_MLP_SWIGLU;
        const size_t f = swiglu ? 2 * h : h;
        const size_t nd_in = bf16 ? (n * d + 1) / 2 : n * d, act = bf16 && !swiglu ? (n * h + 1) / 2 : n * h;
        const size_t nqkv = bf16 ? (3 * n * d + 1) / 2 : 3 * n * d;
        /* bf16: the qkv linear's fp32 output is staged in fc1's space when fc1 has >= 3*dim columns, else in
         * (n, 3*dim) floats of its own after glu */
        const int own32 = bf16 && f < 3 * d;
        ex_block_acts a;
        void **field[15] = {&a.ln1, (void **)&a.ln1_mean, (void **)&a.ln1_rstd, (void **)&a.qkv, (void **)&a.att,
                            (void **)&a.lse, (void **)&a.branch1, (void **)&a.mid, &a.ln2, (void **)&a.ln2_mean,
                            (void **)&a.ln2_rstd, (void **)&a.fc1, &a.act, (void **)&a.branch2, (void **)&a.glu};
        const size_t len[15] = {nd_in, n, n, nqkv, nd_in, n * (size_t)blk.heads, n * d, n * d,
                                nd_in, n, n, n * f, act, n * d, swiglu ? n * h : 0};
        size_t want = own32 ? r16(3 * n * d) : 0;
        for (int k = 0; k < 15; k++) want += r16(len[k]);
        const size_t total = ex_block_acts_floats(&blk, b, t);
        assert_int_equal(total, want);
        /* GELU turns d_act into d_fc1 in place; SwiGLU needs d_fc1 and two gathered halves besides */
        const size_t big = r16(n * h) + (swiglu ? r16(n * f) + 2 * r16(n * h) : 0), att = r16(n * d) + r16(3 * n * d);
        assert_int_equal(ex_block_scratch_floats(&blk, b, t), 2 * r16(n * d) + (big > att ? big : att));

        float *buf = malloc((total + GUARD) * sizeof(float));
        assert_non_null(buf);
        for (size_t i = 0; i < total + GUARD; i++) buf[i] = SENTINEL;
        ex_block_acts_bind(&a, &blk, b, t, buf);
        for (int k = 0; k < 15; k++) {
            float *p = *field[k];
            if (!len[k]) {
                assert_null(p);
                continue;
            }
            assert_non_null(p);
            assert_true(p >= buf && p + len[k] <= buf + total);
            assert_int_equal((size_t)(p - buf) % 16, 0);
            for (size_t i = 0; i < len[k]; i++) p[i] = (float)(k + 1);
        }
        for (int k = 0; k < 15; k++)
            for (size_t i = 0; i < len[k]; i++)
                if (((float *)*field[k])[i] != (float)(k + 1))
                    fail_msg("acts field %d overlaps another (shape %zu, bf16 %d)", k, sh, bf16);
        if (!bf16)
            assert_null(a.qkv32);
        else if (!own32)
            assert_ptr_equal(a.qkv32, a.fc1);
        else { /* its own space, after every other field */
            assert_true(a.qkv32 + 3 * n * d <= buf + total);
            assert_true(a.branch2 + r16(n * d) <= a.qkv32 && (!a.glu || a.glu + r16(n * h) <= a.qkv32));
            assert_int_equal((size_t)(a.qkv32 - buf) % 16, 0);
        }
        for (size_t i = 0; i < GUARD; i++)
            if (buf[total + i] != SENTINEL) fail_msg("acts guard %zu overwritten (shape %zu, bf16 %d)", i, sh, bf16);
        free(buf);
    }
    /* unusable sizes give 0 */
    ex_block bad = {.dim = 12, .heads = 3, .hidden = 20};
    assert_int_equal(ex_block_acts_floats(&bad, -1, 5), 0);
    assert_int_equal(ex_block_scratch_floats(NULL, 1, 5), 0);
}

/* ------------------------------------------------------------------------------
 * Argument validation
 * ------------------------------------------------------------------------------ */

static void test_block_validation(void **state) {
    ex_backend *be = &((env *)*state)->be;
    ex_err err;
    ex_err_clear(&err);
    scope s = {.be = be};
    const bcfg *c = &k_cfg_a;
    layout L;
    make_layout(c, &L);
    const float *th = make_theta(&s, c, &L);
    dblock d;
    dblock_init(&s, c, th, 1, 1, &d);
    ex_block blk = d.blk;
    /* a good call first */
    assert_int_equal(ex_block_forward(be, &blk, &d.acts, d.out, d.p[P_X], NULL, NULL, c->b, c->t, 1, 0, &err), EX_OK);
    blk.heads = 5; /* 12 % 5 != 0 */
    assert_int_equal(ex_block_forward(be, &blk, &d.acts, d.out, d.p[P_X], NULL, NULL, c->b, c->t, 1, 0, &err),
                     EX_E_SHAPE);
    assert_non_null(strstr(err.msg, "heads"));
    assert_int_equal(ex_block_backward(be, &blk, &d.acts, d.dresid, d.p[P_X], NULL, NULL, d.scratch, c->b, c->t, &err),
                     EX_E_SHAPE);
    blk = d.blk;
    assert_int_equal(ex_block_forward(be, &blk, &d.acts, d.out, d.p[P_X], NULL, NULL, -1, c->t, 1, 0, &err), EX_E_SHAPE);
    assert_int_equal(ex_block_forward(be, &blk, &d.acts, d.out, NULL, NULL, NULL, c->b, c->t, 1, 0, &err), EX_E_INVALID);
    assert_int_equal(ex_block_forward(be, &blk, &d.acts, d.p[P_X], d.p[P_X], NULL, NULL, c->b, c->t, 1, 0, &err),
                     EX_E_INVALID);
    assert_int_equal(ex_block_backward(be, &blk, &d.acts, d.dresid, d.p[P_X], NULL, NULL, NULL, c->b, c->t, &err),
                     EX_E_INVALID);
    blk.fc2.in = 7; /* wrong MLP width */
    assert_int_equal(ex_block_forward(be, &blk, &d.acts, d.out, d.p[P_X], NULL, NULL, c->b, c->t, 1, 0, &err),
                     EX_E_SHAPE);
    blk = d.blk;
    blk.ls1 = NULL; /* a LayerScale gradient without a LayerScale */
    assert_int_equal(ex_block_backward(be, &blk, &d.acts, d.dresid, d.p[P_X], NULL, NULL, d.scratch, c->b, c->t, &err),
                     EX_E_INVALID);
    blk = d.blk;
    blk.mlp = EX_MLP_SWIGLU; /* acts bound for GELU have no glu buffer (and fc1 is too narrow) */
    assert_int_not_equal(ex_block_forward(be, &blk, &d.acts, d.out, d.p[P_X], NULL, NULL, c->b, c->t, 1, 0, &err), EX_OK);
    ex_block_acts unbound = {0};
    assert_int_equal(ex_block_forward(be, &d.blk, &unbound, d.out, d.p[P_X], NULL, NULL, c->b, c->t, 1, 0, &err),
                     EX_E_INVALID);
    /* activation dtypes: only f32 and bf16; the layers' input dtypes must follow the block's (set together by
     * ex_block_set_act_dtype); bf16 needs the backend's bf16 slots */
    blk = d.blk;
    assert_int_equal(ex_block_set_act_dtype(&blk, EX_F16, &err), EX_E_INVALID);
    assert_non_null(strstr(err.msg, "f32 or bf16"));
    blk.act_dtype = EX_BF16; /* set by hand: qkv, fc1, fc2 still read fp32 */
    assert_int_equal(ex_block_forward(be, &blk, &d.acts, d.out, d.p[P_X], NULL, NULL, c->b, c->t, 1, 0, &err),
                     EX_E_INVALID);
    assert_non_null(strstr(err.msg, "ex_block_set_act_dtype"));
    assert_int_equal(ex_block_set_act_dtype(&blk, EX_BF16, &err), EX_OK);
    assert_true(blk.qkv.in_dtype == EX_BF16 && blk.fc1.in_dtype == EX_BF16 && blk.fc2.in_dtype == EX_BF16 &&
                blk.proj.in_dtype == EX_BF16);
    for (int k = 0; k < 5; k++) { /* a backend without one of the bf16 slots */
        ex_backend nobf = *be;
        const char *slot[5] = {"layernorm_fwd_bf16", "gelu_fwd_bf16", "to_bf16", "attention_fwd_bf16",
                               "attention_bwd_bf16"};
        if (k == 0) nobf.vt.layernorm_fwd_bf16 = NULL;
        if (k == 1) nobf.vt.gelu_fwd_bf16 = NULL;
        if (k == 2) nobf.vt.to_bf16 = NULL;
        if (k == 3) nobf.vt.attention_fwd_bf16 = NULL;
        if (k == 4) nobf.vt.attention_bwd_bf16 = NULL;
        assert_int_equal(ex_block_forward(&nobf, &blk, &d.acts, d.out, d.p[P_X], NULL, NULL, c->b, c->t, 1, 0, &err),
                         EX_E_UNSUPPORTED);
        assert_non_null(strstr(err.msg, "activation_dtype = fp32"));
        if (!strstr(err.msg, slot[k])) fail_msg("the error does not name the missing %s: %s", slot[k], err.msg);
        for (int j = 0; j < 5; j++) /* and names only what is missing */
            if (j != k && strstr(err.msg, slot[j])) fail_msg("the error names %s, which is there: %s", slot[j], err.msg);
    }
    assert_int_equal(ex_block_set_act_dtype(&blk, EX_F32, &err), EX_OK); /* and back */
    assert_int_equal(ex_block_forward(be, &blk, &d.acts, d.out, d.p[P_X], NULL, NULL, c->b, c->t, 1, 0, &err), EX_OK);
    /* empty batch: nothing to do */
    assert_int_equal(ex_block_forward(be, &d.blk, &d.acts, d.out, d.p[P_X], NULL, NULL, 0, c->t, 1, 0, &err), EX_OK);
    /* linear and LayerNorm */
    assert_int_equal(ex_linear_forward(be, &d.blk.proj, d.out, d.p[P_X], -1, 1, 0, &err), EX_E_SHAPE);
    ex_linear now = d.blk.proj;
    now.w = NULL;
    assert_int_equal(ex_linear_forward(be, &now, d.out, d.p[P_X], 3, 1, 0, &err), EX_E_INVALID);
    assert_int_equal(ex_linear_backward(be, &d.blk.proj, d.out, NULL, d.p[P_X], 3, &err), EX_E_INVALID);
    assert_int_equal(ex_layernorm_forward(be, &d.blk.norm1, d.out, NULL, NULL, d.p[P_X], 3, &err), EX_E_INVALID);
    scope_end(&s);
}

/* Stochastic-depth scales: exact subset sizes and scales, Bernoulli rates, determinism. */
static void test_drop_path_scales(void **state) {
    (void)state;
    ex_err err;
    ex_err_clear(&err);
    float s[64 * 200];
    ex_rng r = ex_rng_seed(3, EX_RNG_DROPPATH);
    /* batch-subset form: rate 0.3, batch 10 -> 7 images scaled by 10/7, 3 zeros, in every branch */
    EXT_OK(ex_drop_path_scales(&r, 0.3, 10, 200, s, &err), &err);
    int hits[10] = {0};
    for (int br = 0; br < 200; br++) {
        int kept = 0;
        for (int i = 0; i < 10; i++) {
            float v = s[br * 10 + i];
            if (v != 0.0f) {
                assert_float_equal(v, 10.0f / 7.0f, 1e-7);
                kept++;
                hits[i]++;
            }
        }
        assert_int_equal(kept, 7);
    }
    for (int i = 0; i < 10; i++) assert_in_range(hits[i], 110, 170); /* each image kept ~140 times of 200 */
    /* same seed, same scales */
    ex_rng r2 = ex_rng_seed(3, EX_RNG_DROPPATH);
    float s2[2000];
    EXT_OK(ex_drop_path_scales(&r2, 0.3, 10, 200, s2, &err), &err);
    assert_memory_equal(s, s2, sizeof s2);
    /* tiny batch: at least one image keeps the branch */
    EXT_OK(ex_drop_path_scales(&r, 0.9, 2, 4, s, &err), &err);
    for (int br = 0; br < 4; br++) assert_float_equal(s[br * 2] + s[br * 2 + 1], 2.0f, 1e-7);
    /* Bernoulli form: rate 0.1, scale 1/0.9, about 10% zeros */
    EXT_OK(ex_drop_path_scales(&r, 0.1, 64, 200, s, &err), &err);
    int zeros = 0;
    for (int i = 0; i < 64 * 200; i++) {
        if (s[i] == 0.0f) zeros++;
        else assert_float_equal(s[i], 1.0f / 0.9f, 1e-6);
    }
    assert_in_range(zeros, 1180, 1380); /* 1280 expected, ~3.5 sigma */
    EXT_OK(ex_drop_path_scales(&r, 0.0, 4, 3, s, &err), &err);
    for (int i = 0; i < 12; i++) assert_float_equal(s[i], 1.0f, 0);
    assert_int_equal(ex_drop_path_scales(&r, 1.0, 4, 3, s, &err), EX_E_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_forward),
        cmocka_unit_test(test_linear_backward),
        cmocka_unit_test(test_linear_backward_null_grads),
        cmocka_unit_test(test_linear_hooks),
        cmocka_unit_test(test_linear_backward_write),
        cmocka_unit_test(test_linear_bias_fused_slot),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_block_forward_gelu_ls_drop_hook),
        cmocka_unit_test(test_block_forward_gelu_plain),
        cmocka_unit_test(test_block_forward_swiglu_ls),
        cmocka_unit_test(test_block_forward_swiglu_drop),
        cmocka_unit_test(test_block_backward_gelu_ls_drop_hook),
        cmocka_unit_test(test_block_backward_gelu_plain),
        cmocka_unit_test(test_block_backward_swiglu_ls),
        cmocka_unit_test(test_block_backward_swiglu_drop),
        cmocka_unit_test(test_block_accumulates),
        cmocka_unit_test(test_block_frozen),
        cmocka_unit_test(test_block_deterministic),
        cmocka_unit_test(test_block_residual_slots),
        cmocka_unit_test(test_block_acts_bound_larger),
        cmocka_unit_test(test_block_sizes),
        cmocka_unit_test(test_block_validation),
        cmocka_unit_test(test_drop_path_scales),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
