/*
 * core/src/nn_block.c — the pre-norm transformer block of the nn library
 * (see explora/nn.h for the block's definition and conventions):
 *
 *   mid = inp + drop1 * ls1 * proj(attn(qkv(norm1(inp))))
 *   out = mid + drop2 * ls2 * fc2(act(fc1(norm2(mid))))
 *
 * Activations (ex_block_acts), for n = b*t rows, laid out contiguously from
 * `base` in this order; every field starts at a multiple of 16 floats from
 * base (sizes are rounded up to 16 floats), so a 64-byte aligned base gives
 * 64-byte aligned fields:
 *
 *   ln1 (n, dim) | ln1_mean (n) | ln1_rstd (n) | qkv (n, 3*dim) | att (n, dim) |
 *   lse (b, heads, t) | branch1 (n, dim) | mid (n, dim) | ln2 (n, dim) |
 *   ln2_mean (n) | ln2_rstd (n) | fc1 (n, f) | act (n, hidden) | branch2 (n, dim) |
 *   glu (n, hidden)
 *
 * with f = hidden (GELU) or 2*hidden (SwiGLU). When the block keeps its
 * activations in bf16 (act_dtype), ln1, qkv, att, ln2 and (GELU) act hold bf16
 * values and take half the floats (rounded up to 16 floats as every field).
 * The qkv linear still writes fp32 (its bias and adapter hooks add in fp32),
 * into `qkv32`, which to_bf16 then rounds into qkv: qkv32 is fc1's space when
 * fc1 has at least 3*dim columns (fc1 is written only after attention, and
 * recomputation replays the same order), else (n, 3*dim) floats of its own
 * after glu; NULL under fp32.
 * `glu` is the one buffer beyond
 * what the block's math names: SwiGLU only (0 floats and NULL for GELU), it
 * holds silu(x1), built in forward as the gate (x1 and x2 are strided halves
 * of each fc1 row, gathered with copy2d) and reused by backward for
 * d x2 = d act * silu(x1).
 *
 * Backward scratch (shared by all blocks of one shape), same 16-float
 * rounding, two fixed slots followed by a phase area the MLP and attention
 * halves of backward reuse in turn:
 *
 *   d_branch (n, dim) | d_ln (n, dim) | phase area
 *     MLP half, GELU:   d_act (n, hidden), turned in place into d_fc1 (gelu_bwd_inplace)
 *     MLP half, SwiGLU: d_act (n, hidden) | d_fc1 (n, 2*hidden) | glu_a (n, hidden) | glu_b (n, hidden)
 *     attention half:   d_att (n, dim) | d_qkv (n, 3*dim)
 *
 * d_branch holds dL/d branch (dresid scaled by drop and LayerScale; unused
 * when the branch has neither), d_ln the gradient at a norm output, glu_a /
 * glu_b gathered copies of x1 / x2 and products for the SwiGLU backward.
 *
 * Forward needs no scratch: the scaled branch is composed in `out` before the
 * residual add. Backward updates dresid in place: the branch gradient is read
 * from it before the LayerNorm backward accumulates into it.
 */
#include "explora/nn.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Call a backend op and turn a failure into an error naming the backend and op. */
#define NN_BE(be, err, op, ...)                                                                   \
    do {                                                                                          \
        ex_status nn__s = (be)->vt.op((be)->ctx, __VA_ARGS__);                                    \
        EX_ENSURE(nn__s == EX_OK, (err), nn__s, "backend '%s': %s failed", (be)->name, #op);      \
    } while (0)

/* Every buffer starts at a multiple of this many floats from its base. */
#define NN_ALIGN_FLOATS ((size_t)16)

/* ------------------------------------------------------------------------------
 * Layout
 * ------------------------------------------------------------------------------ */

/* Columns of the fc1 output: hidden (GELU) or [x1 | x2] (SwiGLU). */
static int64_t fc1_width(const ex_block *blk) { return blk->mlp == EX_MLP_SWIGLU ? 2 * blk->hidden : blk->hidden; }

/* Hand out the next `count` floats at *off from base (NULL when base is NULL or
 * count is 0, so sizing passes never form a pointer); *off advances by count
 * rounded up to NN_ALIGN_FLOATS. */
static float *take(float *base, size_t *off, size_t count) {
    float *p = (base && count) ? base + *off : NULL;
    *off += (count + NN_ALIGN_FLOATS - 1) / NN_ALIGN_FLOATS * NN_ALIGN_FLOATS;
    return p;
}

/* Whether the sizes are usable for the layout functions (which cannot report errors). */
static int layout_ok(const ex_block *blk, int64_t b, int64_t t) {
    return blk && blk->dim > 0 && blk->heads > 0 && blk->hidden > 0 && b >= 0 && t >= 0;
}

/* Floats that hold `count` values stored as dtype (EX_F32 or EX_BF16). */
static size_t dtype_floats(ex_dtype dtype, size_t count) { return dtype == EX_BF16 ? (count + 1) / 2 : count; }

/* Whether the block keeps act (the fc2 input) as act_dtype: GELU only (SwiGLU builds it in place in fp32). */
static ex_dtype act_out_dtype(const ex_block *blk) { return blk->mlp == EX_MLP_GELU ? blk->act_dtype : EX_F32; }

/* The acts layout (see the file comment); fills acts when base is non-NULL, returns the floats used. */
static size_t acts_layout(const ex_block *blk, int64_t b, int64_t t, float *base, ex_block_acts *a) {
    const size_t n = (size_t)(b * t), d = (size_t)blk->dim, h = (size_t)blk->hidden;
    size_t off = 0;
    ex_block_acts tmp;
    ex_block_acts *o = a ? a : &tmp;
    o->ln1 = take(base, &off, dtype_floats(blk->act_dtype, n * d));
    o->ln1_mean = take(base, &off, n);
    o->ln1_rstd = take(base, &off, n);
    o->qkv = take(base, &off, dtype_floats(blk->act_dtype, n * 3 * d));
    o->att = take(base, &off, dtype_floats(blk->act_dtype, n * d));
    o->lse = take(base, &off, n * (size_t)blk->heads);
    o->branch1 = take(base, &off, n * d);
    o->mid = take(base, &off, n * d);
    o->ln2 = take(base, &off, dtype_floats(blk->act_dtype, n * d));
    o->ln2_mean = take(base, &off, n);
    o->ln2_rstd = take(base, &off, n);
    o->fc1 = take(base, &off, n * (size_t)fc1_width(blk));
    o->act = take(base, &off, dtype_floats(act_out_dtype(blk), n * h));
    o->branch2 = take(base, &off, n * d);
    o->glu = take(base, &off, blk->mlp == EX_MLP_SWIGLU ? n * h : 0);
    o->qkv32 = NULL;
    if (blk->act_dtype == EX_BF16)
        o->qkv32 = fc1_width(blk) >= 3 * blk->dim ? o->fc1 : take(base, &off, n * 3 * d);
    return off;
}

/* Views into the backward scratch (see the file comment). */
typedef struct block_scratch {
    float *d_branch;     /* (n, dim) */
    float *d_ln;         /* (n, dim) */
    float *d_act;        /* (n, hidden)  MLP half */
    float *d_fc1;        /* (n, f)       MLP half (GELU: d_act itself, after gelu_bwd_inplace) */
    float *glu_a, *glu_b; /* (n, hidden) MLP half, SwiGLU only (else NULL) */
    float *d_att;        /* (n, dim)     attention half (aliases the MLP half) */
    float *d_qkv;        /* (n, 3*dim)   attention half */
} block_scratch;

static size_t scratch_layout(const ex_block *blk, int64_t b, int64_t t, float *base, block_scratch *s) {
    const size_t n = (size_t)(b * t), d = (size_t)blk->dim, h = (size_t)blk->hidden;
    const size_t glu = blk->mlp == EX_MLP_SWIGLU ? n * h : 0;
    size_t off = 0;
    s->d_branch = take(base, &off, n * d);
    s->d_ln = take(base, &off, n * d);
    const size_t phase = off;
    size_t mlp_end = phase, att_end = phase;
    s->d_act = take(base, &mlp_end, n * h);
    s->d_fc1 = blk->mlp == EX_MLP_SWIGLU ? take(base, &mlp_end, n * (size_t)fc1_width(blk)) : s->d_act;
    s->glu_a = take(base, &mlp_end, glu);
    s->glu_b = take(base, &mlp_end, glu);
    s->d_att = take(base, &att_end, n * d);
    s->d_qkv = take(base, &att_end, n * 3 * d);
    return mlp_end > att_end ? mlp_end : att_end;
}

ex_status ex_block_set_act_dtype(ex_block *blk, ex_dtype dtype, ex_err *err) {
    EX_ENSURE(blk, err, EX_E_INVALID, "block: NULL block");
    EX_ENSURE(dtype == EX_F32 || dtype == EX_BF16, err, EX_E_INVALID,
              "block: activations can be kept in f32 or bf16, not %s", ex_dtype_name(dtype));
    blk->act_dtype = dtype;
    blk->qkv.in_dtype = dtype;
    blk->fc1.in_dtype = dtype;
    blk->fc2.in_dtype = act_out_dtype(blk);
    blk->proj.in_dtype = dtype;
    return EX_OK;
}

size_t ex_block_acts_floats(const ex_block *blk, int64_t b, int64_t t) {
    if (!layout_ok(blk, b, t)) return 0;
    return acts_layout(blk, b, t, NULL, NULL);
}

void ex_block_acts_bind(ex_block_acts *acts, const ex_block *blk, int64_t b, int64_t t, float *base) {
    if (!acts) return;
    if (!layout_ok(blk, b, t)) base = NULL; /* nothing sensible to bind: every field NULL */
    if (!blk) {
        *acts = (ex_block_acts){0};
        return;
    }
    acts_layout(blk, b, t, base, acts);
}

size_t ex_block_scratch_floats(const ex_block *blk, int64_t b, int64_t t) {
    if (!layout_ok(blk, b, t)) return 0;
    block_scratch s;
    return scratch_layout(blk, b, t, NULL, &s);
}

/* ------------------------------------------------------------------------------
 * Validation
 * ------------------------------------------------------------------------------ */

static ex_status check_linear_shape(const ex_linear *l, int64_t in, int64_t out, const char *name, ex_err *err) {
    EX_ENSURE(l->in == in && l->out == out, err, EX_E_SHAPE,
              "block: %s is %lld -> %lld, the block needs %lld -> %lld", name, (long long)l->in, (long long)l->out,
              (long long)in, (long long)out);
    return EX_OK;
}

static ex_status check_block(const ex_backend *be, const ex_block *blk, int64_t b, int64_t t, ex_err *err) {
    EX_ENSURE(be && blk, err, EX_E_INVALID, "block: NULL backend or block");
    const int64_t d = blk->dim;
    EX_ENSURE(d > 0 && blk->heads > 0 && blk->hidden > 0, err, EX_E_SHAPE,
              "block: bad sizes dim=%lld heads=%lld hidden=%lld", (long long)d, (long long)blk->heads,
              (long long)blk->hidden);
    EX_ENSURE(d % blk->heads == 0, err, EX_E_SHAPE, "block: dim %lld is not a multiple of heads %lld", (long long)d,
              (long long)blk->heads);
    EX_ENSURE(blk->mlp == EX_MLP_GELU || blk->mlp == EX_MLP_SWIGLU, err, EX_E_INVALID, "block: unknown MLP kind %d",
              (int)blk->mlp);
    EX_ENSURE(b >= 0 && t >= 0, err, EX_E_SHAPE, "block: negative batch %lld or tokens %lld", (long long)b,
              (long long)t);
    EX_ENSURE(blk->norm1.dim == d && blk->norm2.dim == d, err, EX_E_SHAPE,
              "block: norm dims %lld/%lld differ from dim %lld", (long long)blk->norm1.dim,
              (long long)blk->norm2.dim, (long long)d);
    EX_CHECK(check_linear_shape(&blk->qkv, d, 3 * d, "qkv", err));
    EX_CHECK(check_linear_shape(&blk->proj, d, d, "proj", err));
    EX_CHECK(check_linear_shape(&blk->fc1, d, fc1_width(blk), "fc1", err));
    EX_CHECK(check_linear_shape(&blk->fc2, blk->hidden, d, "fc2", err));
    EX_ENSURE((!blk->dls1 || blk->ls1) && (!blk->dls2 || blk->ls2), err, EX_E_INVALID,
              "block: a LayerScale gradient is set but the block has no LayerScale there");
    EX_ENSURE(blk->act_dtype == EX_F32 || blk->act_dtype == EX_BF16, err, EX_E_INVALID,
              "block: activations kept as %s (only f32 and bf16 are supported)", ex_dtype_name(blk->act_dtype));
    EX_ENSURE(blk->qkv.in_dtype == blk->act_dtype && blk->fc1.in_dtype == blk->act_dtype &&
                  blk->fc2.in_dtype == act_out_dtype(blk) && blk->proj.in_dtype == blk->act_dtype,
              err, EX_E_INVALID,
              "block: its layers' input dtypes disagree with its activation dtype %s (set it with "
              "ex_block_set_act_dtype)",
              ex_dtype_name(blk->act_dtype));
    if (blk->act_dtype == EX_BF16) {
        const struct {
            int have;
            const char *name;
        } need[] = {{!!be->vt.layernorm_fwd_bf16, "layernorm_fwd_bf16"}, {!!be->vt.gelu_fwd_bf16, "gelu_fwd_bf16"},
                    {!!be->vt.to_bf16, "to_bf16"}, {!!be->vt.attention_fwd_bf16, "attention_fwd_bf16"},
                    {!!be->vt.attention_bwd_bf16, "attention_bwd_bf16"}};
        char missing[160] = "";
        for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
            if (!need[i].have)
                snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%s", missing[0] ? ", " : "",
                         need[i].name);
        EX_ENSURE(!missing[0], err, EX_E_UNSUPPORTED,
                  "block: activations kept in bf16 need backend slots that backend '%s' does not offer (%s); keep "
                  "activations in fp32 ([optim] activation_dtype = fp32)",
                  be->name, missing);
    }
    return EX_OK;
}

static ex_status check_acts(const ex_block *blk, const ex_block_acts *a, ex_err *err) {
    EX_ENSURE(a, err, EX_E_INVALID, "block: NULL acts");
    EX_ENSURE(a->ln1 && a->ln1_mean && a->ln1_rstd && a->qkv && a->att && a->lse && a->branch1 && a->mid &&
                  a->ln2 && a->ln2_mean && a->ln2_rstd && a->fc1 && a->act && a->branch2,
              err, EX_E_INVALID, "block: acts not bound (use ex_block_acts_bind)");
    EX_ENSURE(blk->mlp != EX_MLP_SWIGLU || a->glu, err, EX_E_INVALID,
              "block: SwiGLU acts need the glu buffer (bind acts with the SwiGLU block)");
    EX_ENSURE(blk->act_dtype != EX_BF16 || a->qkv32, err, EX_E_INVALID,
              "block: bf16 acts need the qkv32 staging buffer (bind acts after ex_block_set_act_dtype)");
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * Forward
 * ------------------------------------------------------------------------------ */

/* dst (b, t, dim) = resid + drop (b) * ls (dim) * branch; tmp (b, t, dim) holds the
 * scaled branch when ls or drop is given (tmp may be dst, must not be resid). */
static ex_status residual_add(ex_backend *be, float *dst, const float *resid, const float *branch, float *tmp,
                              const float *ls, const float *drop, int64_t b, int64_t t, int64_t dim, ex_err *err) {
    const int64_t n = b * t;
    if ((ls || drop) && be->vt.residual_fwd) { /* one pass, the same values */
        NN_BE(be, err, residual_fwd, dst, resid, branch, ls, drop, b, t, dim);
        return EX_OK;
    }
    if (!ls && !drop) {
        NN_BE(be, err, binary, EX_BIN_ADD, dst, resid, branch, n * dim);
        return EX_OK;
    }
    const float *src = branch;
    if (ls) {
        NN_BE(be, err, channel_scale_fwd, tmp, src, ls, n, dim);
        src = tmp;
    }
    if (drop) NN_BE(be, err, row_scale_fwd, tmp, src, drop, b, t * dim);
    NN_BE(be, err, binary, EX_BIN_ADD, dst, resid, tmp, n * dim);
    return EX_OK;
}

/* act (n, hidden) = gelu(fc1) or silu(x1) * x2 with fc1 rows [x1 | x2]; SwiGLU keeps silu(x1) in glu. */
static ex_status activation_fwd(ex_backend *be, const ex_block *blk, const ex_block_acts *a, int64_t n,
                                ex_err *err) {
    const int64_t h = blk->hidden;
    if (blk->mlp == EX_MLP_GELU) {
        if (blk->act_dtype == EX_BF16)
            NN_BE(be, err, gelu_fwd_bf16, a->act, a->fc1, n * h);
        else
            NN_BE(be, err, gelu_fwd, a->act, a->fc1, n * h);
        return EX_OK;
    }
    NN_BE(be, err, copy2d, a->glu, h, a->fc1, 2 * h, n, h);     /* glu = x1 */
    NN_BE(be, err, silu_fwd, a->glu, a->glu, n * h);             /* glu = silu(x1) */
    NN_BE(be, err, copy2d, a->act, h, a->fc1 + h, 2 * h, n, h); /* act = x2 */
    NN_BE(be, err, binary, EX_BIN_MUL, a->act, a->act, a->glu, n * h);
    return EX_OK;
}

/* out (n, dim) as blk->act_dtype = ln(inp); mean, rstd (n). */
static ex_status norm_fwd(ex_backend *be, const ex_block *blk, const ex_layernorm *ln, void *out, float *mean,
                          float *rstd, const float *inp, int64_t n, ex_err *err) {
    if (blk->act_dtype == EX_F32) return ex_layernorm_forward(be, ln, out, mean, rstd, inp, n, err);
    NN_BE(be, err, layernorm_fwd_bf16, out, mean, rstd, inp, ln->w, ln->b, n, ln->dim, ln->eps);
    return EX_OK;
}

/* acts->branch1 (n, dim) = proj(attn(qkv(norm1(inp)))), filling ln1, qkv, att, lse on the way (bf16: qkv is
 * computed in qkv32, rounded once; attention reads the rounded values and writes att rounded). */
static ex_status attention_branch_fwd(ex_backend *be, const ex_block *blk, const ex_block_acts *a,
                                      const float *inp /* (n, dim) */, int64_t b, int64_t t, int train,
                                      uint64_t noise, ex_err *err) {
    const int64_t n = b * t, hs = blk->dim / blk->heads;
    const float scale = (float)(1.0 / sqrt((double)hs));
    EX_CHECK(norm_fwd(be, blk, &blk->norm1, a->ln1, a->ln1_mean, a->ln1_rstd, inp, n, err));
    if (blk->act_dtype == EX_BF16) {
        EX_CHECK(ex_linear_forward(be, &blk->qkv, a->qkv32, a->ln1, n, train, noise, err));
        NN_BE(be, err, to_bf16, a->qkv, a->qkv32, n * 3 * blk->dim);
        NN_BE(be, err, attention_fwd_bf16, a->att, a->lse, a->qkv, b, t, blk->heads, hs, scale);
    } else {
        EX_CHECK(ex_linear_forward(be, &blk->qkv, a->qkv, a->ln1, n, train, noise, err));
        NN_BE(be, err, attention_fwd, a->att, a->lse, a->qkv, b, t, blk->heads, hs, scale);
    }
    EX_CHECK(ex_linear_forward(be, &blk->proj, a->branch1, a->att, n, train, noise, err));
    return EX_OK;
}

/* acts->branch2 (n, dim) = fc2(act(fc1(norm2(mid)))), filling ln2, fc1, act (, glu). */
static ex_status mlp_branch_fwd(ex_backend *be, const ex_block *blk, const ex_block_acts *a, int64_t n, int train,
                                uint64_t noise, ex_err *err) {
    EX_CHECK(norm_fwd(be, blk, &blk->norm2, a->ln2, a->ln2_mean, a->ln2_rstd, a->mid, n, err));
    EX_CHECK(ex_linear_forward(be, &blk->fc1, a->fc1, a->ln2, n, train, noise, err));
    EX_CHECK(activation_fwd(be, blk, a, n, err));
    EX_CHECK(ex_linear_forward(be, &blk->fc2, a->branch2, a->act, n, train, noise, err));
    return EX_OK;
}

ex_status ex_block_forward(ex_backend *be, const ex_block *blk, ex_block_acts *acts, float *out /* (b, t, dim) */,
                           const float *inp /* (b, t, dim) */, const float *drop1 /* (b) or NULL */,
                           const float *drop2 /* (b) or NULL */, int64_t b, int64_t t, int train, uint64_t noise,
                           ex_err *err) {
    EX_CHECK(check_block(be, blk, b, t, err));
    if (b * t == 0) return EX_OK;
    EX_CHECK(check_acts(blk, acts, err));
    EX_ENSURE(out && inp, err, EX_E_INVALID, "block forward: NULL input or output");
    EX_ENSURE(out != inp, err, EX_E_INVALID, "block forward: out must not alias inp");
    const int64_t d = blk->dim;
    EX_CHECK(attention_branch_fwd(be, blk, acts, inp, b, t, train, noise, err));
    EX_CHECK(residual_add(be, acts->mid, inp, acts->branch1, out, blk->ls1, drop1, b, t, d, err));
    EX_CHECK(mlp_branch_fwd(be, blk, acts, b * t, train, noise, err));
    EX_CHECK(residual_add(be, out, acts->mid, acts->branch2, out, blk->ls2, drop2, b, t, d, err));
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * Backward
 * ------------------------------------------------------------------------------ */

/* The gradient at a branch output given dres = dL/d (resid + drop * ls * branch):
 * dL/d branch = dres * drop * ls, written into tmp (n, dim) and returned, or dres
 * itself when the branch has neither scale; dls (dim) += colsum(dres * drop * branch). */
static ex_status branch_grad(ex_backend *be, const float **dbranch, float *tmp, const float *dres,
                             const float *branch, const float *ls, float *dls, const float *drop, int64_t b,
                             int64_t t, int64_t dim, ex_err *err) {
    const int64_t n = b * t;
    if (!ls && !drop) {
        *dbranch = dres;
        return EX_OK;
    }
    if (be->vt.residual_bwd) { /* one pass, the same values */
        NN_BE(be, err, residual_bwd, tmp, dls, dres, branch, ls, drop, b, t, dim);
        *dbranch = tmp;
        return EX_OK;
    }
    const float *g = dres; /* dres * drop once drop is applied */
    if (drop) {
        NN_BE(be, err, row_scale_fwd, tmp, dres, drop, b, t * dim);
        g = tmp;
    }
    if (ls) {
        if (dls) NN_BE(be, err, channel_scale_bwd, NULL, dls, g, branch, ls, n, dim);
        NN_BE(be, err, channel_scale_fwd, tmp, g, ls, n, dim);
    }
    *dbranch = tmp;
    return EX_OK;
}

/* Zero a buffer of n floats (the targets of the accumulating backward ops). */
static ex_status zero(ex_backend *be, float *p, int64_t n, ex_err *err) {
    NN_BE(be, err, fill, p, 0.0f, n);
    return EX_OK;
}

/* s->d_fc1 (n, f) = dL/d fc1 given s->d_act (n, hidden) = dL/d act; clobbers d_act (GELU: d_fc1 is d_act, turned
 * in place; SwiGLU: glu_a, glu_b too). */
static ex_status activation_bwd(ex_backend *be, const ex_block *blk, const ex_block_acts *a,
                                const block_scratch *s, int64_t n, ex_err *err) {
    const int64_t h = blk->hidden;
    if (blk->mlp == EX_MLP_GELU) { /* d_fc1 is d_act */
        NN_BE(be, err, gelu_bwd_inplace, s->d_act, a->fc1, n * h);
        return EX_OK;
    }
    /* d x2 = d act * silu(x1), into the right half of each d_fc1 row */
    NN_BE(be, err, binary, EX_BIN_MUL, s->glu_a, s->d_act, a->glu, n * h);
    NN_BE(be, err, copy2d, s->d_fc1 + h, 2 * h, s->glu_a, h, n, h);
    /* d silu(x1) = d act * x2; d x1 = silu'(x1) * that, built in d_act, into the left half */
    NN_BE(be, err, copy2d, s->glu_a, h, a->fc1 + h, 2 * h, n, h);
    NN_BE(be, err, binary, EX_BIN_MUL, s->glu_a, s->glu_a, s->d_act, n * h);
    NN_BE(be, err, copy2d, s->glu_b, h, a->fc1, 2 * h, n, h);
    EX_CHECK(zero(be, s->d_act, n * h, err));
    NN_BE(be, err, silu_bwd, s->d_act, s->glu_b, s->glu_a, n * h);
    NN_BE(be, err, copy2d, s->d_fc1, 2 * h, s->d_act, h, n, h);
    return EX_OK;
}

/* dresid (n, dim): dL/d out on entry, dL/d mid on return; MLP parameter gradients accumulated. */
static ex_status mlp_branch_bwd(ex_backend *be, const ex_block *blk, const ex_block_acts *a, const block_scratch *s,
                                float *dresid, const float *drop2, int64_t b, int64_t t, ex_err *err) {
    const int64_t n = b * t, d = blk->dim;
    const float *d_branch = NULL;
    EX_CHECK(branch_grad(be, &d_branch, s->d_branch, dresid, a->branch2, blk->ls2, blk->dls2, drop2, b, t, d, err));
    EX_CHECK(ex_linear_backward_write(be, &blk->fc2, s->d_act, d_branch, a->act, n, err));
    EX_CHECK(activation_bwd(be, blk, a, s, n, err));
    EX_CHECK(ex_linear_backward_write(be, &blk->fc1, s->d_ln, s->d_fc1, a->ln2, n, err));
    EX_CHECK(ex_layernorm_backward(be, &blk->norm2, dresid, s->d_ln, a->mid, a->ln2_mean, a->ln2_rstd, n, err));
    return EX_OK;
}

/* dresid (n, dim): dL/d mid on entry, dL/d inp on return; attention parameter gradients accumulated. */
static ex_status attention_branch_bwd(ex_backend *be, const ex_block *blk, const ex_block_acts *a,
                                      const block_scratch *s, float *dresid, const float *inp, const float *drop1,
                                      int64_t b, int64_t t, ex_err *err) {
    const int64_t n = b * t, d = blk->dim, hs = d / blk->heads;
    const float *d_branch = NULL;
    EX_CHECK(branch_grad(be, &d_branch, s->d_branch, dresid, a->branch1, blk->ls1, blk->dls1, drop1, b, t, d, err));
    EX_CHECK(ex_linear_backward_write(be, &blk->proj, s->d_att, d_branch, a->att, n, err));
    const float scale = (float)(1.0 / sqrt((double)hs));
    if (blk->act_dtype == EX_BF16) { /* writes d_qkv */
        NN_BE(be, err, attention_bwd_bf16, s->d_qkv, s->d_att, a->att, a->lse, a->qkv, b, t, blk->heads, hs, scale);
    } else { /* accumulates */
        EX_CHECK(zero(be, s->d_qkv, n * 3 * d, err));
        NN_BE(be, err, attention_bwd, s->d_qkv, s->d_att, a->att, a->lse, a->qkv, b, t, blk->heads, hs, scale);
    }
    EX_CHECK(ex_linear_backward_write(be, &blk->qkv, s->d_ln, s->d_qkv, a->ln1, n, err));
    EX_CHECK(ex_layernorm_backward(be, &blk->norm1, dresid, s->d_ln, inp, a->ln1_mean, a->ln1_rstd, n, err));
    return EX_OK;
}

ex_status ex_block_backward(ex_backend *be, const ex_block *blk, const ex_block_acts *acts,
                            float *dresid /* (b, t, dim) */, const float *inp /* (b, t, dim) */,
                            const float *drop1 /* (b) or NULL */, const float *drop2 /* (b) or NULL */,
                            float *scratch /* (ex_block_scratch_floats) */, int64_t b, int64_t t, ex_err *err) {
    EX_CHECK(check_block(be, blk, b, t, err));
    if (b * t == 0) return EX_OK;
    EX_CHECK(check_acts(blk, acts, err));
    EX_ENSURE(dresid && inp && scratch, err, EX_E_INVALID, "block backward: NULL dresid, inp or scratch");
    block_scratch s;
    scratch_layout(blk, b, t, scratch, &s);
    EX_CHECK(mlp_branch_bwd(be, blk, acts, &s, dresid, drop2, b, t, err));
    EX_CHECK(attention_branch_bwd(be, blk, acts, &s, dresid, inp, drop1, b, t, err));
    return EX_OK;
}
