/*
 * core/src/nn_linear.c — the linear layer (with its adapter hooks) and
 * LayerNorm of the nn library (see explora/nn.h).
 *
 * Both are thin, validated wrappers over the backend: the linear layer is
 * ex_be_linear_fwd/bwd (one GEMM, a bias broadcast) followed by every hook in
 * chain order; LayerNorm is the backend's layernorm_fwd/bwd. Backward
 * accumulates (+=) and skips every NULL gradient, so a frozen weight costs no
 * weight-gradient GEMM.
 */
#include "explora/nn.h"

#include <stddef.h>

/* Call a backend op and turn a failure into an error naming the backend and op. */
#define NN_BE(be, err, op, ...)                                                                   \
    do {                                                                                          \
        ex_status nn__s = (be)->vt.op((be)->ctx, __VA_ARGS__);                                    \
        EX_ENSURE(nn__s == EX_OK, (err), nn__s, "backend '%s': %s failed", (be)->name, #op);      \
    } while (0)

/* ------------------------------------------------------------------------------
 * Linear
 * ------------------------------------------------------------------------------ */

static ex_status check_linear(const ex_backend *be, const ex_linear *l, int64_t n, const char *what, ex_err *err) {
    EX_ENSURE(be && l, err, EX_E_INVALID, "%s: NULL backend or layer", what);
    EX_ENSURE(l->in > 0 && l->out > 0, err, EX_E_SHAPE, "%s: bad layer size in=%lld out=%lld", what,
              (long long)l->in, (long long)l->out);
    EX_ENSURE(n >= 0, err, EX_E_SHAPE, "%s: negative row count %lld", what, (long long)n);
    EX_ENSURE(l->w, err, EX_E_INVALID, "%s: the layer (%lld -> %lld) has no weight", what, (long long)l->in,
              (long long)l->out);
    return EX_OK;
}

ex_status ex_linear_forward(ex_backend *be, const ex_linear *l, float *out /* (n, out) */,
                            const void *inp /* (n, in) as l->in_dtype */, int64_t n, int train, uint64_t noise,
                            ex_err *err) {
    EX_CHECK(check_linear(be, l, n, "linear forward", err));
    if (n == 0) return EX_OK;
    EX_ENSURE(out && inp, err, EX_E_INVALID, "linear forward: NULL input or output");
    EX_CHECK(ex_be_linear_fwd(be, out, inp, l->in_dtype, l->w, l->w_dtype, l->b, n, l->in, l->out, err));
    for (const ex_linear_hook *h = l->hooks; h; h = h->next) {
        EX_ENSURE(h->forward, err, EX_E_INVALID, "linear forward: a hook has no forward function");
        EX_CHECK(h->forward(h->self, be, out, inp, l->in_dtype, n, train, noise, err));
    }
    return EX_OK;
}

/* Backward with dinp accumulated (write = 0) or written by the base GEMM, then accumulated by the hooks. */
static ex_status linear_backward(ex_backend *be, const ex_linear *l, float *dinp /* (n, in) or NULL */, int write,
                                 const float *dout /* (n, out) */, const void *inp /* (n, in) as l->in_dtype */,
                                 int64_t n, ex_err *err) {
    EX_CHECK(check_linear(be, l, n, "linear backward", err));
    EX_ENSURE(!write || dinp, err, EX_E_INVALID, "linear backward: asked to write a NULL input gradient");
    if (n == 0) return EX_OK;
    EX_ENSURE(dout && inp, err, EX_E_INVALID, "linear backward: NULL dout or inp");
    if (dinp || l->dw || l->db)
        EX_CHECK((write ? ex_be_linear_bwd_write : ex_be_linear_bwd)(be, dinp, l->dw, l->db, dout, inp, l->in_dtype,
                                                                     l->w, l->w_dtype, n, l->in, l->out, err));
    for (const ex_linear_hook *h = l->hooks; h; h = h->next) {
        EX_ENSURE(h->backward, err, EX_E_INVALID, "linear backward: a hook has no backward function");
        EX_CHECK(h->backward(h->self, be, dinp, dout, inp, l->in_dtype, n, err));
    }
    return EX_OK;
}

ex_status ex_linear_backward(ex_backend *be, const ex_linear *l, float *dinp, const float *dout, const void *inp,
                             int64_t n, ex_err *err) {
    return linear_backward(be, l, dinp, 0, dout, inp, n, err);
}

ex_status ex_linear_backward_write(ex_backend *be, const ex_linear *l, float *dinp, const float *dout,
                                   const void *inp, int64_t n, ex_err *err) {
    return linear_backward(be, l, dinp, 1, dout, inp, n, err);
}

/* ------------------------------------------------------------------------------
 * LayerNorm
 * ------------------------------------------------------------------------------ */

static ex_status check_layernorm(const ex_backend *be, const ex_layernorm *ln, int64_t n, const char *what,
                                 ex_err *err) {
    EX_ENSURE(be && ln, err, EX_E_INVALID, "%s: NULL backend or layer", what);
    EX_ENSURE(ln->dim > 0, err, EX_E_SHAPE, "%s: bad dim %lld", what, (long long)ln->dim);
    EX_ENSURE(n >= 0, err, EX_E_SHAPE, "%s: negative row count %lld", what, (long long)n);
    EX_ENSURE(ln->eps > 0.0f, err, EX_E_INVALID, "%s: eps must be > 0 (got %g)", what, (double)ln->eps);
    return EX_OK;
}

ex_status ex_layernorm_forward(ex_backend *be, const ex_layernorm *ln, float *out /* (n, dim) */,
                               float *mean /* (n) */, float *rstd /* (n) */, const float *inp /* (n, dim) */,
                               int64_t n, ex_err *err) {
    EX_CHECK(check_layernorm(be, ln, n, "layernorm forward", err));
    if (n == 0) return EX_OK;
    EX_ENSURE(out && mean && rstd && inp, err, EX_E_INVALID, "layernorm forward: NULL pointer");
    NN_BE(be, err, layernorm_fwd, out, mean, rstd, inp, ln->w, ln->b, n, ln->dim, ln->eps);
    return EX_OK;
}

ex_status ex_layernorm_backward(ex_backend *be, const ex_layernorm *ln, float *dinp /* (n, dim) or NULL */,
                                const float *dout /* (n, dim) */, const float *inp /* (n, dim) */,
                                const float *mean /* (n) */, const float *rstd /* (n) */, int64_t n,
                                ex_err *err) {
    EX_CHECK(check_layernorm(be, ln, n, "layernorm backward", err));
    if (n == 0 || (!dinp && !ln->dw && !ln->db)) return EX_OK;
    EX_ENSURE(dout && inp && mean && rstd, err, EX_E_INVALID, "layernorm backward: NULL pointer");
    NN_BE(be, err, layernorm_bwd, dinp, ln->dw, ln->db, dout, inp, ln->w, mean, rstd, n, ln->dim);
    return EX_OK;
}
