/*
 * tests/test_gradcheck.c — every backward op of the cpu backend (and the core's
 * ex_be_linear_fwd/bwd on top of it) against central finite differences.
 *
 * Method: for an op y = f(theta) (theta packs every differentiable input),
 * a naive double-precision forward is written here; with fixed random r,
 * L = sum(r .* f(theta)) and dL/dtheta is estimated by central differences in
 * double (h = 1e-6). The backend's fp32 backward is called with dout = r on
 * gradient buffers prefilled with a known nonzero pattern, and
 *   got - prefill  must equal the finite difference (atol 1e-5 + rtol 1e-4),
 * which checks the value and the accumulate (+=) contract at once (fp32 backward
 * errors here are ~1e-6 relative, so the tolerance keeps a 10x margin). Optional
 * gradient outputs are also passed as NULL, one at a time, and the remaining
 * outputs checked again.
 */
#include "test_support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKEND "cpu"
#define FD_H 1e-6
#define G_ATOL 1e-5
#define G_RTOL 1e-4

/* ------------------------------------------------------------------------------
 * Fixture and helpers
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

#define SCOPE_MAX 128
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
static void *up(scope *s, const void *host, size_t bytes) {
    void *d = d_alloc(s, bytes);
    if (bytes) assert_int_equal(s->be->vt.copy(s->be->ctx, d, host, bytes, EX_COPY_H2D), EX_OK);
    return d;
}
static float *upf(scope *s, const float *host, size_t n) { return up(s, host, n * sizeof(float)); }
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
/* The known nonzero pattern gradient buffers start from (exact in fp32). */
static float *prefill(scope *s, size_t n, int salt) {
    float *p = hf(s, n);
    for (size_t i = 0; i < n; i++) p[i] = 0.25f * (float)((int)((i * 5 + (size_t)salt) % 7) - 3) + 0.125f;
    return p;
}

#define OK(expr) assert_int_equal((expr), EX_OK)
#define CALL(op, ...) be->vt.op(be->ctx, __VA_ARGS__)

/* A double-precision reference forward: y = f(theta); aux holds sizes and constant inputs. */
typedef void (*ref_fn)(const double *theta, double *y, const void *aux);

/* dL/dtheta for L = sum_k r_k y_k, by central differences in double. */
static void fd_grad(ref_fn f, const void *aux, const float *theta0, size_t nt, const float *r, size_t ny,
                    double *grad) {
    double *th = malloc(nt * sizeof(double)), *y = malloc(ny * sizeof(double));
    assert_non_null(th);
    assert_non_null(y);
    for (size_t i = 0; i < nt; i++) th[i] = theta0[i];
    for (size_t i = 0; i < nt; i++) {
        double lp = 0, lm = 0;
        th[i] = (double)theta0[i] + FD_H;
        f(th, y, aux);
        for (size_t k = 0; k < ny; k++) lp += (double)r[k] * y[k];
        th[i] = (double)theta0[i] - FD_H;
        f(th, y, aux);
        for (size_t k = 0; k < ny; k++) lm += (double)r[k] * y[k];
        th[i] = theta0[i];
        grad[i] = (lp - lm) / (2 * FD_H);
    }
    free(th);
    free(y);
}

/* The reference forward at theta0, in double, for forward checks. */
static void ref_at(ref_fn f, const void *aux, const float *theta0, size_t nt, double *y) {
    double *th = malloc(nt * sizeof(double));
    assert_non_null(th);
    for (size_t i = 0; i < nt; i++) th[i] = theta0[i];
    f(th, y, aux);
    free(th);
}

/* got - pre (pre may be NULL: zero) against the finite-difference gradient. */
static void expect_grad(const float *got, const float *pre, const double *fd, size_t n, const char *what) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) {
        double g = (double)got[i] - (pre ? (double)pre[i] : 0.0);
        if (!(fabs(g - fd[i]) <= G_ATOL + G_RTOL * fabs(fd[i])))
            fail_msg("%s: element %zu: backend gradient %.9g (stored %.9g), finite difference %.9g", what, i, g,
                     (double)got[i], fd[i]);
        mx = fmax(mx, fabs(fd[i]));
    }
    if (!(mx > 1e-3)) fail_msg("%s: the gradient is ~0 everywhere: the check would prove nothing", what);
}

/* Pack float arrays into one theta vector. */
static float *pack(scope *s, size_t *nt, const float *a, size_t na, const float *b, size_t nb, const float *c,
                   size_t nc) {
    float *t = hf(s, na + nb + nc);
    if (na) memcpy(t, a, na * sizeof(float));
    if (nb) memcpy(t + na, b, nb * sizeof(float));
    if (nc) memcpy(t + na + nb, c, nc * sizeof(float));
    *nt = na + nb + nc;
    return t;
}

/* ------------------------------------------------------------------------------
 * bias_add
 * ------------------------------------------------------------------------------ */

typedef struct rows_aux {
    int64_t n, c;
    double scale, eps;
    int affine;           /* layernorm: 1 = w and b present */
    const uint8_t *mask;  /* mask_rows */
} rows_aux;

static void ref_bias_add(const double *th, double *y, const void *vaux) {
    const rows_aux *a = vaux;
    const double *x = th, *bias = th + a->n * a->c;
    for (int64_t i = 0; i < a->n; i++)
        for (int64_t j = 0; j < a->c; j++) y[i * a->c + j] = x[i * a->c + j] + bias[j];
}

static void test_bias_add_bwd(void **state) {
    ex_backend *be = &((env *)*state)->be;
    scope s = {.be = be};
    const rows_aux a = {.n = 7, .c = 13};
    const size_t N = (size_t)(a.n * a.c);
    float *x = rnd(&s, N, 1, -1, 1), *bias = rnd(&s, a.c, 2, -1, 1), *r = rnd(&s, N, 3, -1, 1);
    size_t nt;
    float *th = pack(&s, &nt, x, N, bias, a.c, NULL, 0);
    double *fd = hd(&s, nt);
    fd_grad(ref_bias_add, &a, th, nt, r, N, fd);
    float *pre = prefill(&s, a.c, 1);
    float *ddb = upf(&s, pre, a.c), *dr = upf(&s, r, N);
    OK(CALL(bias_add_bwd, ddb, dr, a.n, a.c));
    expect_grad(down(&s, ddb, a.c), pre, fd + N, a.c, "bias_add_bwd dbias");
    scope_end(&s);
}

/* ------------------------------------------------------------------------------
 * LayerNorm
 * ------------------------------------------------------------------------------ */

static void ref_layernorm(const double *th, double *y, const void *vaux) {
    const rows_aux *a = vaux;
    const int64_t n = a->n, c = a->c;
    const double *x = th, *w = th + n * c, *b = w + c;
    for (int64_t i = 0; i < n; i++) {
        double mu = 0, var = 0;
        for (int64_t j = 0; j < c; j++) mu += x[i * c + j];
        mu /= (double)c;
        for (int64_t j = 0; j < c; j++) var += (x[i * c + j] - mu) * (x[i * c + j] - mu);
        var /= (double)c;
        double rs = 1.0 / sqrt(var + a->eps);
        for (int64_t j = 0; j < c; j++) {
            double v = (x[i * c + j] - mu) * rs;
            y[i * c + j] = a->affine ? v * w[j] + b[j] : v;
        }
    }
}

static void test_layernorm_bwd(void **state) {
    ex_backend *be = &((env *)*state)->be;
    for (int affine = 1; affine >= 0; affine--) {
        scope s = {.be = be};
        const rows_aux a = {.n = 7, .c = 13, .eps = 1e-5, .affine = affine};
        const int64_t n = a.n, c = a.c, N = n * c;
        float *x = rnd(&s, N, 11, -1, 3), *w = rnd(&s, c, 12, 0.5f, 1.5f), *b = rnd(&s, c, 13, -1, 1);
        float *r = rnd(&s, N, 14, -1, 1);
        size_t nt;
        float *th = pack(&s, &nt, x, N, affine ? w : NULL, affine ? c : 0, affine ? b : NULL, affine ? c : 0);
        double *fd = hd(&s, nt);
        fd_grad(ref_layernorm, &a, th, nt, r, N, fd);

        float *dx = upf(&s, x, N), *dw = affine ? upf(&s, w, c) : NULL, *db = affine ? upf(&s, b, c) : NULL;
        float *dy = d_alloc(&s, N * sizeof(float)), *mean = d_alloc(&s, n * sizeof(float)),
              *rstd = d_alloc(&s, n * sizeof(float)), *dr = upf(&s, r, N);
        OK(CALL(layernorm_fwd, dy, mean, rstd, dx, dw, db, n, c, (float)a.eps));
        float *pi = prefill(&s, N, 1), *pw = prefill(&s, c, 2), *pb = prefill(&s, c, 3);
        /* variants: all outputs; dinp only; dw/db only (affine case) */
        for (int v = 0; v < (affine ? 3 : 1); v++) {
            float *gi = v != 2 ? upf(&s, pi, N) : NULL;
            float *gw = affine && v != 1 ? upf(&s, pw, c) : NULL;
            float *gb = affine && v != 1 ? upf(&s, pb, c) : NULL;
            OK(CALL(layernorm_bwd, gi, gw, gb, dr, dx, dw, mean, rstd, n, c));
            if (gi) expect_grad(down(&s, gi, N), pi, fd, N, "layernorm_bwd dinp");
            if (gw) expect_grad(down(&s, gw, c), pw, fd + N, c, "layernorm_bwd dw");
            if (gb) expect_grad(down(&s, gb, c), pb, fd + N + c, c, "layernorm_bwd db");
        }
        scope_end(&s);
    }
}

/* ------------------------------------------------------------------------------
 * GELU, SiLU, softmax
 * ------------------------------------------------------------------------------ */

static void ref_gelu(const double *th, double *y, const void *vaux) {
    const rows_aux *a = vaux;
    for (int64_t i = 0; i < a->n; i++) y[i] = 0.5 * th[i] * (1.0 + erf(th[i] / sqrt(2.0)));
}
static void ref_silu(const double *th, double *y, const void *vaux) {
    const rows_aux *a = vaux;
    for (int64_t i = 0; i < a->n; i++) y[i] = th[i] / (1.0 + exp(-th[i]));
}

static void test_activation_bwd(void **state) {
    ex_backend *be = &((env *)*state)->be;
    for (int f = 0; f < 2; f++) {
        scope s = {.be = be};
        const rows_aux a = {.n = 91};
        float *x = rnd(&s, a.n, 21 + f, -5, 5), *r = rnd(&s, a.n, 23, -1, 1), *pre = prefill(&s, a.n, 4);
        double *fd = hd(&s, a.n);
        fd_grad(f == 0 ? ref_gelu : ref_silu, &a, x, a.n, r, a.n, fd);
        float *dx = upf(&s, x, a.n), *dr = upf(&s, r, a.n), *g = upf(&s, pre, a.n);
        if (f == 0)
            OK(CALL(gelu_bwd, g, dx, dr, a.n));
        else
            OK(CALL(silu_bwd, g, dx, dr, a.n));
        expect_grad(down(&s, g, a.n), pre, fd, a.n, f == 0 ? "gelu_bwd" : "silu_bwd");
        if (f == 0) { /* in place: the incoming gradient becomes the input's (nothing to accumulate into) */
            OK(CALL(gelu_bwd_inplace, dr, dx, a.n));
            expect_grad(down(&s, dr, a.n), NULL, fd, a.n, "gelu_bwd_inplace");
        }
        scope_end(&s);
    }
}

static void ref_softmax(const double *th, double *y, const void *vaux) {
    const rows_aux *a = vaux;
    for (int64_t i = 0; i < a->n; i++) {
        const double *x = th + i * a->c;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < a->c; j++) mx = fmax(mx, a->scale * x[j]);
        for (int64_t j = 0; j < a->c; j++) sum += exp(a->scale * x[j] - mx);
        for (int64_t j = 0; j < a->c; j++) y[i * a->c + j] = exp(a->scale * x[j] - mx) / sum;
    }
}

static void test_softmax_bwd(void **state) {
    ex_backend *be = &((env *)*state)->be;
    const float scales[] = {1.7f, -0.6f};
    for (int k = 0; k < 2; k++) {
        scope s = {.be = be};
        const rows_aux a = {.n = 7, .c = 13, .scale = scales[k]};
        const int64_t N = a.n * a.c;
        float *x = rnd(&s, N, 31, -2, 2), *r = rnd(&s, N, 32, -1, 1), *pre = prefill(&s, N, 5);
        double *fd = hd(&s, N);
        fd_grad(ref_softmax, &a, x, N, r, N, fd);
        float *dx = upf(&s, x, N), *dy = d_alloc(&s, N * sizeof(float)), *dr = upf(&s, r, N), *g = upf(&s, pre, N);
        OK(CALL(softmax_fwd, dy, dx, a.n, a.c, scales[k]));
        OK(CALL(softmax_bwd, g, dy, dr, a.n, a.c, scales[k]));
        expect_grad(down(&s, g, N), pre, fd, N, "softmax_bwd");
        scope_end(&s);
    }
}

/* ------------------------------------------------------------------------------
 * Attention
 * ------------------------------------------------------------------------------ */

typedef struct att_aux {
    int64_t b, t, nh, hs;
    double scale;
} att_aux;

/* out (b, t, nh*hs) = softmax(scale q k^T) v per head, qkv (b, t, 3, nh, hs). */
static void ref_attention(const double *qkv, double *out, const void *vaux) {
    const att_aux *a = vaux;
    const int64_t b = a->b, t = a->t, nh = a->nh, hs = a->hs, C = nh * hs;
    double *p = malloc((size_t)t * sizeof(double));
    assert_non_null(p);
    for (int64_t bi = 0; bi < b; bi++)
        for (int64_t h = 0; h < nh; h++)
            for (int64_t i = 0; i < t; i++) {
                const double *q = qkv + ((bi * t + i) * 3 + 0) * C + h * hs;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < t; j++) {
                    const double *k = qkv + ((bi * t + j) * 3 + 1) * C + h * hs;
                    double d = 0;
                    for (int64_t x = 0; x < hs; x++) d += q[x] * k[x];
                    p[j] = a->scale * d;
                    mx = fmax(mx, p[j]);
                }
                for (int64_t j = 0; j < t; j++) sum += (p[j] = exp(p[j] - mx));
                for (int64_t x = 0; x < hs; x++) {
                    double acc = 0;
                    for (int64_t j = 0; j < t; j++) acc += p[j] / sum * qkv[((bi * t + j) * 3 + 2) * C + h * hs + x];
                    out[(bi * t + i) * C + h * hs + x] = acc;
                }
            }
    free(p);
}

static void test_attention_bwd(void **state) {
    ex_backend *be = &((env *)*state)->be;
    /* b, t, nh, hs: odd sizes; t = 67 spans several query blocks (the backend's blocks are
     * 32-64 rows), so dK and dV accumulate across blocks */
    const int64_t cfg[3][4] = {{2, 11, 2, 5}, {1, 67, 1, 3}, {2, 1, 1, 4}};
    for (int z = 0; z < 3; z++) {
        scope s = {.be = be};
        const att_aux a = {cfg[z][0], cfg[z][1], cfg[z][2], cfg[z][3], 1.0 / sqrt((double)cfg[z][3]) * 1.3};
        const int64_t C = a.nh * a.hs, NQ = a.b * a.t * 3 * C, NO = a.b * a.t * C;
        float *qkv = rnd(&s, NQ, 41 + z, -1.5f, 1.5f), *r = rnd(&s, NO, 44 + z, -1, 1), *pre = prefill(&s, NQ, 6);
        double *fd = hd(&s, NQ);
        fd_grad(ref_attention, &a, qkv, NQ, r, NO, fd);
        float *dq = upf(&s, qkv, NQ), *dout = d_alloc(&s, NO * sizeof(float)),
              *lse = d_alloc(&s, a.b * a.nh * a.t * sizeof(float));
        float *dr = upf(&s, r, NO), *g = upf(&s, pre, NQ);
        OK(CALL(attention_fwd, dout, lse, dq, a.b, a.t, a.nh, a.hs, (float)a.scale));
        OK(CALL(attention_bwd, g, dr, dout, lse, dq, a.b, a.t, a.nh, a.hs, (float)a.scale));
        expect_grad(down(&s, g, NQ), pre, fd, NQ, "attention_bwd dqkv");
        scope_end(&s);
    }
}

/* The attention slots on bf16 storage (a block keeping its activations in bf16): the gradient that
 * attention_bwd_bf16 writes (over a NaN prefill: it must not read it) is the exact gradient of attention at the
 * stored qkv. qkv is drawn, rounded to
 * bf16 on the host, and the finite differences are taken at those values; the backend rounds the same fp32 values
 * with to_bf16, runs attention_fwd_bf16 (its bf16 output is what backward receives) and attention_bwd_bf16. */
static void test_attention_bwd_bf16(void **state) {
    ex_backend *be = &((env *)*state)->be;
    const int64_t cfg[3][4] = {{2, 11, 2, 5}, {1, 67, 1, 3}, {2, 1, 1, 4}};
    for (int z = 0; z < 3; z++) {
        scope s = {.be = be};
        const att_aux a = {cfg[z][0], cfg[z][1], cfg[z][2], cfg[z][3], 1.0 / sqrt((double)cfg[z][3]) * 1.3};
        const int64_t C = a.nh * a.hs, NQ = a.b * a.t * 3 * C, NO = a.b * a.t * C;
        float *qkv = rnd(&s, NQ, 61 + z, -1.5f, 1.5f), *r = rnd(&s, NO, 64 + z, -1, 1), *pre = hf(&s, NQ);
        for (int64_t i = 0; i < NQ; i++) pre[i] = NAN;
        for (int64_t i = 0; i < NQ; i++) qkv[i] = ex_bf16_to_f32(ex_f32_to_bf16(qkv[i])); /* the stored values */
        double *fd = hd(&s, NQ);
        fd_grad(ref_attention, &a, qkv, NQ, r, NO, fd);
        float *dq32 = upf(&s, qkv, NQ), *lse = d_alloc(&s, a.b * a.nh * a.t * sizeof(float));
        uint16_t *dq = d_alloc(&s, NQ * 2), *dout = d_alloc(&s, NO * 2);
        float *dr = upf(&s, r, NO), *g = upf(&s, pre, NQ);
        OK(CALL(to_bf16, dq, dq32, NQ));
        OK(CALL(attention_fwd_bf16, dout, lse, dq, a.b, a.t, a.nh, a.hs, (float)a.scale));
        OK(CALL(attention_bwd_bf16, g, dr, dout, lse, dq, a.b, a.t, a.nh, a.hs, (float)a.scale));
        expect_grad(down(&s, g, NQ), NULL, fd, NQ, "attention_bwd_bf16 dqkv");
        scope_end(&s);
    }
}

/* ------------------------------------------------------------------------------
 * LayerScale, per-row scale, mask rows
 * ------------------------------------------------------------------------------ */

static void ref_channel_scale(const double *th, double *y, const void *vaux) {
    const rows_aux *a = vaux;
    const double *x = th, *g = th + a->n * a->c;
    for (int64_t i = 0; i < a->n; i++)
        for (int64_t j = 0; j < a->c; j++) y[i * a->c + j] = x[i * a->c + j] * g[j];
}
static void ref_row_scale(const double *th, double *y, const void *vaux) {
    const rows_aux *a = vaux;
    const double *x = th, *sc = th + a->n * a->c;
    for (int64_t i = 0; i < a->n; i++)
        for (int64_t j = 0; j < a->c; j++) y[i * a->c + j] = x[i * a->c + j] * sc[i];
}
static void ref_mask_rows(const double *th, double *y, const void *vaux) {
    const rows_aux *a = vaux;
    const double *x = th, *tok = th + a->n * a->c;
    for (int64_t i = 0; i < a->n; i++)
        for (int64_t j = 0; j < a->c; j++) y[i * a->c + j] = a->mask[i] ? tok[j] : x[i * a->c + j];
}

/* The three ops share one shape: y (n, c) from x (n, c) and a second input of size m. */
static void test_two_input_bwd(void **state) {
    ex_backend *be = &((env *)*state)->be;
    for (int op = 0; op < 3; op++) { /* 0 channel_scale, 1 row_scale, 2 mask_rows */
        scope s = {.be = be};
        uint8_t mask[7] = {0, 1, 0, 0, 3, 1, 0};
        rows_aux a = {.n = 7, .c = 13, .mask = mask};
        const int64_t N = a.n * a.c, M = op == 1 ? a.n : a.c;
        const char *name = op == 0 ? "channel_scale_bwd" : op == 1 ? "row_scale_bwd" : "mask_rows_bwd";
        float *x = rnd(&s, N, 51 + op, -2, 2), *q = rnd(&s, M, 54 + op, -1.5f, 1.5f), *r = rnd(&s, N, 57, -1, 1);
        size_t nt;
        float *th = pack(&s, &nt, x, N, q, M, NULL, 0);
        double *fd = hd(&s, nt);
        fd_grad(op == 0 ? ref_channel_scale : op == 1 ? ref_row_scale : ref_mask_rows, &a, th, nt, r, N, fd);
        float *dx = upf(&s, x, N), *dq = upf(&s, q, M), *dr = upf(&s, r, N);
        uint8_t *dm = up(&s, mask, sizeof mask);
        float *pi = prefill(&s, N, 7), *pq = prefill(&s, M, 8);
        for (int v = 0; v < 3; v++) { /* both; dinp only; second input only */
            float *gi = v != 2 ? upf(&s, pi, N) : NULL, *gq = v != 1 ? upf(&s, pq, M) : NULL;
            if (op == 0) OK(CALL(channel_scale_bwd, gi, gq, dr, dx, dq, a.n, a.c));
            if (op == 1) OK(CALL(row_scale_bwd, gi, gq, dr, dx, dq, a.n, a.c));
            if (op == 2) OK(CALL(mask_rows_bwd, gi, gq, dr, dm, a.n, a.c));
            char what[96];
            snprintf(what, sizeof what, "%s dinp", name);
            if (gi) expect_grad(down(&s, gi, N), pi, fd, N, what);
            snprintf(what, sizeof what, "%s %s", name, op == 0 ? "dgamma" : op == 1 ? "ds" : "dtoken");
            if (gq) expect_grad(down(&s, gq, M), pq, fd + N, M, what);
        }
        scope_end(&s);
    }
}

/* ------------------------------------------------------------------------------
 * Cross-entropy and L2 normalisation
 * ------------------------------------------------------------------------------ */

typedef struct xent_aux {
    int64_t n, v;
    const int32_t *labels;
    const float *targets;
} xent_aux;

static void ref_xent(const double *logits, double *loss, const void *vaux) {
    const xent_aux *a = vaux;
    for (int64_t i = 0; i < a->n; i++) {
        const double *l = logits + i * a->v;
        double mx = -INFINITY, sum = 0, acc = 0;
        for (int64_t j = 0; j < a->v; j++) mx = fmax(mx, l[j]);
        for (int64_t j = 0; j < a->v; j++) sum += exp(l[j] - mx);
        double lse = mx + log(sum);
        for (int64_t j = 0; j < a->v; j++) {
            double t = a->targets ? a->targets[i * a->v + j] : (a->labels[i] == j ? 1.0 : 0.0);
            acc -= t * (l[j] - lse);
        }
        loss[i] = acc;
    }
}

static void test_xent_bwd(void **state) {
    ex_backend *be = &((env *)*state)->be;
    for (int soft = 0; soft < 2; soft++) {
        scope s = {.be = be};
        const int64_t n = 7, v = 13;
        int32_t labels[7] = {3, -1, 12, 0, 5, 5, -1}; /* -1: ignored */
        /* soft targets with row sums != 1, so the p * sum(t) term matters */
        float *tg = soft ? rnd(&s, n * v, 61, 0, 0.2f) : NULL;
        const xent_aux a = {n, v, soft ? NULL : labels, tg};
        float *logits = rnd(&s, n * v, 62, -3, 3), *r = rnd(&s, n, 63, -1, 1), *pre = prefill(&s, n * v, 9);
        double *fd = hd(&s, n * v);
        fd_grad(ref_xent, &a, logits, n * v, r, n, fd);
        float *dl = upf(&s, logits, n * v), *dr = upf(&s, r, n), *g = upf(&s, pre, n * v);
        float *dt = soft ? upf(&s, tg, n * v) : NULL;
        int32_t *dlab = soft ? NULL : up(&s, labels, sizeof labels);
        float *loss = d_alloc(&s, n * sizeof(float)), *probs = d_alloc(&s, n * v * sizeof(float));
        OK(CALL(xent_fwd, loss, probs, dl, dlab, dt, n, v));
        double *rl = hd(&s, n);
        ref_at(ref_xent, &a, logits, n * v, rl);
        float *got = down(&s, loss, n);
        for (int64_t i = 0; i < n; i++)
            if (fabs(got[i] - rl[i]) > 1e-5 * (1 + fabs(rl[i]))) fail_msg("xent_fwd loss %lld", (long long)i);
        OK(CALL(xent_bwd, g, dr, probs, dlab, dt, n, v));
        float *gh = down(&s, g, n * v);
        expect_grad(gh, pre, fd, n * v, soft ? "xent_bwd (soft targets)" : "xent_bwd (hard labels)");
        if (!soft) /* ignored rows get exactly nothing */
            for (int64_t j = 0; j < v; j++) assert_true(gh[1 * v + j] == pre[1 * v + j]);
        scope_end(&s);
    }
}

static void ref_l2norm(const double *th, double *y, const void *vaux) {
    const rows_aux *a = vaux;
    for (int64_t i = 0; i < a->n; i++) {
        const double *x = th + i * a->c;
        double ss = 0;
        for (int64_t j = 0; j < a->c; j++) ss += x[j] * x[j];
        double d = fmax(sqrt(ss), a->eps);
        for (int64_t j = 0; j < a->c; j++) y[i * a->c + j] = x[j] / d;
    }
}

static void test_l2norm_bwd(void **state) {
    ex_backend *be = &((env *)*state)->be;
    scope s = {.be = be};
    const rows_aux a = {.n = 7, .c = 13, .eps = 0.05};
    const int64_t N = a.n * a.c;
    float *x = rnd(&s, N, 71, -1, 1), *r = rnd(&s, N, 72, -1, 1), *pre = prefill(&s, N, 10);
    for (int64_t j = 0; j < a.c; j++) x[2 * a.c + j] *= 2e-3f; /* norm below eps: the denominator is eps */
    double nrm2 = 0;
    for (int64_t j = 0; j < a.c; j++) nrm2 += (double)x[2 * a.c + j] * x[2 * a.c + j];
    assert_true(sqrt(nrm2) < 0.5 * a.eps);
    double *fd = hd(&s, N);
    fd_grad(ref_l2norm, &a, x, N, r, N, fd);
    float *dx = upf(&s, x, N), *dy = d_alloc(&s, N * sizeof(float)), *dn = d_alloc(&s, a.n * sizeof(float));
    float *dr = upf(&s, r, N), *g = upf(&s, pre, N);
    OK(CALL(l2norm_fwd, dy, dn, dx, a.n, a.c, (float)a.eps));
    OK(CALL(l2norm_bwd, g, dr, dx, dn, a.n, a.c, (float)a.eps));
    expect_grad(down(&s, g, N), pre, fd, N, "l2norm_bwd");
    scope_end(&s);
}

/* ------------------------------------------------------------------------------
 * Patchify, gather/scatter
 * ------------------------------------------------------------------------------ */

typedef struct patch_aux {
    int64_t b, ch, h, w, p;
    ex_patch_order order;
} patch_aux;

static void ref_patchify(const double *img, double *out, const void *vaux) {
    const patch_aux *a = vaux;
    const int64_t gw = a->w / a->p, np = (a->h / a->p) * gw, pd = a->ch * a->p * a->p;
    for (int64_t bi = 0; bi < a->b; bi++)
        for (int64_t c = 0; c < a->ch; c++)
            for (int64_t y = 0; y < a->h; y++)
                for (int64_t x = 0; x < a->w; x++) {
                    int64_t patch = (y / a->p) * gw + x / a->p, i = y % a->p, j = x % a->p;
                    int64_t off = a->order == EX_PATCH_CPP ? (c * a->p + i) * a->p + j : (i * a->p + j) * a->ch + c;
                    out[(bi * np + patch) * pd + off] = img[((bi * a->ch + c) * a->h + y) * a->w + x];
                }
}

static void test_patchify_bwd(void **state) {
    ex_backend *be = &((env *)*state)->be;
    for (int order = 0; order < 2; order++) {
        scope s = {.be = be};
        const patch_aux a = {2, 3, 8, 12, 4, (ex_patch_order)order}; /* h != w */
        const int64_t n = a.b * a.ch * a.h * a.w;
        float *img = rnd(&s, n, 81, -1, 1), *r = rnd(&s, n, 82 + order, -1, 1), *pre = prefill(&s, n, 11);
        double *fd = hd(&s, n);
        fd_grad(ref_patchify, &a, img, n, r, n, fd);
        float *dr = upf(&s, r, n), *g = upf(&s, pre, n);
        OK(CALL(patchify_bwd, g, dr, a.b, a.ch, a.h, a.w, a.p, a.order));
        expect_grad(down(&s, g, n), pre, fd, n, order == EX_PATCH_CPP ? "patchify_bwd (C,p,p)" : "patchify_bwd (p,p,C)");
        scope_end(&s);
    }
}

typedef struct gather_aux {
    int64_t b, m, t, c;
    const int32_t *idx;
} gather_aux;

static void ref_gather(const double *inp, double *out, const void *vaux) {
    const gather_aux *a = vaux;
    for (int64_t bi = 0; bi < a->b; bi++)
        for (int64_t j = 0; j < a->m; j++)
            for (int64_t k = 0; k < a->c; k++)
                out[(bi * a->m + j) * a->c + k] = inp[(bi * a->t + a->idx[bi * a->m + j]) * a->c + k];
}

static void test_scatter_add_rows_bwd(void **state) {
    ex_backend *be = &((env *)*state)->be;
    scope s = {.be = be};
    int32_t idx[2 * 7] = {3, 0, 3, 10, 5, 3, 9, /* */ 1, 1, 1, 0, 10, 2, 4}; /* repeated indices */
    const gather_aux a = {2, 7, 11, 13, idx};
    const int64_t NI = a.b * a.t * a.c, NO = a.b * a.m * a.c;
    float *x = rnd(&s, NI, 91, -1, 1), *r = rnd(&s, NO, 92, -1, 1), *pre = prefill(&s, NI, 12);
    double *fd = hd(&s, NI);
    fd_grad(ref_gather, &a, x, NI, r, NO, fd);
    float *dr = upf(&s, r, NO), *g = upf(&s, pre, NI);
    int32_t *di = up(&s, idx, sizeof idx);
    OK(CALL(scatter_add_rows, g, dr, di, a.b, a.m, a.t, a.c));
    expect_grad(down(&s, g, NI), pre, fd, NI, "scatter_add_rows (backward of gather_rows)");
    scope_end(&s);
}

/* ------------------------------------------------------------------------------
 * The core's linear layer on the backend
 * ------------------------------------------------------------------------------ */

typedef struct linear_aux {
    int64_t n, ic, oc;
} linear_aux;

static void ref_linear(const double *th, double *y, const void *vaux) {
    const linear_aux *a = vaux;
    const double *x = th, *w = th + a->n * a->ic, *bias = w + a->oc * a->ic;
    for (int64_t i = 0; i < a->n; i++)
        for (int64_t o = 0; o < a->oc; o++) {
            double acc = bias[o];
            for (int64_t k = 0; k < a->ic; k++) acc += x[i * a->ic + k] * w[o * a->ic + k];
            y[i * a->oc + o] = acc;
        }
}

static void test_linear(void **state) {
    ex_backend *be = &((env *)*state)->be;
    scope s = {.be = be};
    ex_err err;
    ex_err_clear(&err);
    const linear_aux a = {7, 13, 11};
    const int64_t NX = a.n * a.ic, NW = a.oc * a.ic, NY = a.n * a.oc;
    float *x = rnd(&s, NX, 101, -1, 1), *w = rnd(&s, NW, 102, -1, 1), *bias = rnd(&s, a.oc, 103, -1, 1);
    float *r = rnd(&s, NY, 104, -1, 1);
    size_t nt;
    float *th = pack(&s, &nt, x, NX, w, NW, bias, a.oc);
    double *fd = hd(&s, nt), *ry = hd(&s, NY);
    fd_grad(ref_linear, &a, th, nt, r, NY, fd);
    ref_at(ref_linear, &a, th, nt, ry);
    float *dx = upf(&s, x, NX), *dw = upf(&s, w, NW), *db = upf(&s, bias, a.oc), *dr = upf(&s, r, NY);
    float *dy = d_alloc(&s, NY * sizeof(float));

    /* forward, with and without bias */
    EXT_OK(ex_be_linear_fwd(be, dy, dx, EX_F32, dw, EX_F32, db, a.n, a.ic, a.oc, &err), &err);
    float *y = down(&s, dy, NY);
    for (int64_t i = 0; i < NY; i++)
        if (fabs(y[i] - ry[i]) > 1e-5 * (1 + fabs(ry[i]))) fail_msg("ex_be_linear_fwd: element %lld", (long long)i);
    EXT_OK(ex_be_linear_fwd(be, dy, dx, EX_F32, dw, EX_F32, NULL, a.n, a.ic, a.oc, &err), &err);
    y = down(&s, dy, NY);
    for (int64_t i = 0; i < NY; i++)
        if (fabs(y[i] + bias[i % a.oc] - ry[i]) > 1e-5 * (1 + fabs(ry[i])))
            fail_msg("ex_be_linear_fwd without bias: element %lld", (long long)i);

    /* backward: all outputs, then each one left out */
    float *pi = prefill(&s, NX, 13), *pw = prefill(&s, NW, 14), *pb = prefill(&s, a.oc, 15);
    for (int v = 0; v < 4; v++) {
        float *gi = v != 1 ? upf(&s, pi, NX) : NULL;
        float *gw = v != 2 ? upf(&s, pw, NW) : NULL;
        float *gb = v != 3 ? upf(&s, pb, a.oc) : NULL;
        EXT_OK(ex_be_linear_bwd(be, gi, gw, gb, dr, dx, EX_F32, dw, EX_F32, a.n, a.ic, a.oc, &err), &err);
        if (gi) expect_grad(down(&s, gi, NX), pi, fd, NX, "ex_be_linear_bwd dinp");
        if (gw) expect_grad(down(&s, gw, NW), pw, fd + NX, NW, "ex_be_linear_bwd dw");
        if (gb) expect_grad(down(&s, gb, a.oc), pb, fd + NX + NW, a.oc, "ex_be_linear_bwd dbias");
    }
    scope_end(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bias_add_bwd),
        cmocka_unit_test(test_layernorm_bwd),
        cmocka_unit_test(test_activation_bwd),
        cmocka_unit_test(test_softmax_bwd),
        cmocka_unit_test(test_attention_bwd),
        cmocka_unit_test(test_attention_bwd_bf16),
        cmocka_unit_test(test_two_input_bwd),
        cmocka_unit_test(test_xent_bwd),
        cmocka_unit_test(test_l2norm_bwd),
        cmocka_unit_test(test_patchify_bwd),
        cmocka_unit_test(test_scatter_add_rows_bwd),
        cmocka_unit_test(test_linear),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
