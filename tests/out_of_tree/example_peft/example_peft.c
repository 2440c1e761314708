/*
 * example_peft.c — a PEFT strategy written outside explora: "rescale", in the
 * spirit of (IA)^3 (Liu et al., 2022): a learned per-channel rescaling of the
 * output of chosen linear sites, here the value rows of every block's fused
 * qkv and the MLP's first layer. For a site with base output y = x W^T + b:
 *
 *   y' = y + (x W^T) * s        s (out_slice) learned, initialised to 0
 *
 * so the model starts unchanged. It is a hook that recomputes x W^T for its
 * rows (a real implementation would fold the scale in; this one shows that
 * the hook interface takes adapters that are not low-rank). Everything else
 * stays as the earlier strategies of the stack left it.
 */
#include <stdlib.h>
#include <string.h>

#include <explora/plugin.h>

typedef struct rescale_site {
    ex_linear *lin;
    ex_linear_hook hook;
    int64_t row0, rows;      /* output rows scaled */
    float *s, *ds;           /* (rows) and its gradient */
    ex_tensor h;             /* (max_rows, rows) x W^T of the last forward */
    struct rescale *owner;
} rescale_site;

typedef struct rescale {
    int values, fc1;
    rescale_site *sites;
    int nsites;
    ex_backend *be;
} rescale;

static const ex_key_spec rescale_keys[] = {
    {"values", EX_KEY_BOOL, "true", EX_NORANGE, NULL, "rescale the value rows of every attention qkv"},
    {"fc1", EX_KEY_BOOL, "true", EX_NORANGE, NULL, "rescale the output of every MLP fc1"},
    EX_KEY_END,
};

static ex_status rs_create(const ex_cfg_section *cfg, void **self, ex_err *err) {
    rescale *r = calloc(1, sizeof *r);
    EX_ENSURE(r, err, EX_E_NOMEM, "rescale: out of memory");
    ex_status st = ex_cfg_bool(cfg, "values", &r->values, err);
    if (st == EX_OK) st = ex_cfg_bool(cfg, "fc1", &r->fc1, err);
    if (st != EX_OK) {
        free(r);
        return st;
    }
    *self = r;
    return EX_OK;
}

static void rs_destroy(void *self) {
    rescale *r = self;
    for (int i = 0; i < r->nsites; i++) { /* take our hooks off the backbone's layers */
        ex_linear_hook **p = &r->sites[i].lin->hooks;
        while (*p && *p != &r->sites[i].hook) p = &(*p)->next;
        if (*p) *p = r->sites[i].hook.next;
    }
    free(r->sites);
    free(r);
}

/* h (n, rows) = inp (n, in) @ W[row0:row0+rows]^T ; out[:, row0:] += h * s */
static ex_status rs_forward(void *self, ex_backend *be, float *out, const float *inp, int64_t n, int train,
                             uint64_t noise, ex_err *err) {
    (void)train, (void)noise;
    rescale_site *s = self;
    ex_gemm_desc g = {0};
    g.trans_b = 1, g.m = n, g.n = s->rows, g.k = s->lin->in, g.alpha = 1, g.beta = 0;
    g.a = inp, g.a_dtype = EX_F32, g.lda = s->lin->in;
    g.b = s->lin->w + s->row0 * s->lin->in, g.b_dtype = EX_F32, g.ldb = s->lin->in;
    g.c = s->h.data, g.ldc = s->rows, g.batch = 1;
    EX_CHECK(ex_be_gemm(be, &g, err));
    /* out rows are strided (ld = out features): scale h by s per channel, then add into the slice */
    ex_status st0 = be->vt.channel_scale_fwd(be->ctx, s->h.data, s->h.data, s->s, n, s->rows);
    EX_ENSURE(st0 == EX_OK, err, st0, "rescale: channel_scale_fwd failed");
    for (int64_t i = 0; i < n; i++) {
        ex_status st = be->vt.axpby(be->ctx, out + i * s->lin->out + s->row0, 1.0f, (float *)s->h.data + i * s->rows, 1.0f,
                                    s->rows);
        EX_ENSURE(st == EX_OK, err, st, "rescale: axpby failed");
    }
    return EX_OK; /* backward recomputes x W^T: h now holds the scaled values */
}

static ex_status rs_backward(void *self, ex_backend *be, float *dinp, const float *dout, const float *inp, int64_t n,
                             ex_err *err) {
    rescale_site *s = self;
    /* h = x W^T again (the forward overwrote it with h * s) */
    ex_gemm_desc g = {0};
    g.trans_b = 1, g.m = n, g.n = s->rows, g.k = s->lin->in, g.alpha = 1, g.beta = 0;
    g.a = inp, g.a_dtype = EX_F32, g.lda = s->lin->in;
    g.b = s->lin->w + s->row0 * s->lin->in, g.b_dtype = EX_F32, g.ldb = s->lin->in;
    g.c = s->h.data, g.ldc = s->rows, g.batch = 1;
    EX_CHECK(ex_be_gemm(be, &g, err));
    /* dout's slice, contiguous, in the second half of the planned buffer */
    float *dslice = (float *)s->h.data + n * s->rows; /* planned with room for two (n, rows) */
    ex_status st = be->vt.copy2d(be->ctx, dslice, s->rows, dout + s->row0, s->lin->out, n, s->rows);
    EX_ENSURE(st == EX_OK, err, st, "rescale: copy2d failed");
    /* ds += sum_rows dslice * h ; dh = dslice * s */
    if (s->ds) {
        st = be->vt.channel_scale_bwd(be->ctx, NULL, s->ds, dslice, s->h.data, s->s, n, s->rows);
        EX_ENSURE(st == EX_OK, err, st, "rescale: channel_scale_bwd failed");
    }
    if (dinp) { /* dinp += (dslice * s) @ W[rows] */
        st = be->vt.channel_scale_fwd(be->ctx, dslice, dslice, s->s, n, s->rows);
        EX_ENSURE(st == EX_OK, err, st, "rescale: channel_scale_fwd failed");
        ex_gemm_desc b = {0};
        b.m = n, b.n = s->lin->in, b.k = s->rows, b.alpha = 1, b.beta = 1;
        b.a = dslice, b.a_dtype = EX_F32, b.lda = s->rows;
        b.b = s->lin->w + s->row0 * s->lin->in, b.b_dtype = EX_F32, b.ldb = s->lin->in;
        b.c = dinp, b.ldc = s->lin->in, b.batch = 1;
        EX_CHECK(ex_be_gemm(be, &b, err));
    }
    return EX_OK;
}

static ex_status add_site(rescale *r, ex_peft_target *t, const char *site, int64_t row0, int64_t rows, ex_err *err) {
    ex_linear *lin = t->bb->site(t->bb_self, site);
    EX_ENSURE(lin, err, EX_E_INVALID, "rescale: backbone has no site '%s'", site);
    rescale_site *s = &r->sites[r->nsites++];
    memset(s, 0, sizeof *s);
    s->lin = lin;
    s->row0 = row0;
    s->rows = rows;
    s->owner = r;
    char name[128];
    snprintf(name, sizeof name, "%s.rescale", site);
    EX_CHECK(ex_params_add(t->params, name, 1, (int64_t[]){rows}, "rescale", &s->s, &s->ds, NULL, err));
    ex_param *p = ex_params_find(t->params, name);
    p->trainable = 1;
    p->optional = 1; /* not in base checkpoints */
    s->hook.self = s;
    s->hook.forward = rs_forward;
    s->hook.backward = rs_backward;
    s->hook.next = lin->hooks;
    lin->hooks = &s->hook;
    return EX_OK;
}

static ex_status rs_apply(void *self, ex_peft_target *t, ex_err *err) {
    rescale *r = self;
    r->be = t->be;
    r->sites = calloc((size_t)(2 * t->info.depth), sizeof *r->sites);
    EX_ENSURE(r->sites, err, EX_E_NOMEM, "rescale: out of memory");
    for (int64_t b = 0; b < t->info.depth; b++) {
        char site[64];
        if (r->values) {
            snprintf(site, sizeof site, "blocks.%lld.attn.qkv", (long long)b);
            EX_CHECK(add_site(r, t, site, 2 * t->info.dim, t->info.dim, err)); /* the v rows */
        }
        if (r->fc1) {
            snprintf(site, sizeof site, "blocks.%lld.mlp.fc1", (long long)b);
            ex_linear *lin = t->bb->site(t->bb_self, site);
            EX_ENSURE(lin, err, EX_E_INVALID, "rescale: no site %s", site);
            EX_CHECK(add_site(r, t, site, 0, lin->out, err));
        }
    }
    return EX_OK;
}

static ex_status rs_plan(void *self, int64_t max_rows, ex_memory_plan *plan, ex_err *err) {
    rescale *r = self;
    for (int i = 0; i < r->nsites; i++) {
        rescale_site *s = &r->sites[i];
        char name[96];
        snprintf(name, sizeof name, "rescale.h.%d", i);
        EX_CHECK(ex_tensor_init(&s->h, name, EX_F32, 1, (int64_t[]){2 * max_rows * s->rows}, err));
        EX_CHECK(ex_arena_add(&plan->arenas[EX_MEM_ACTIVATION], &s->h, err));
    }
    return EX_OK;
}

static ex_status rs_init(void *self, ex_rng *rng, ex_err *err) {
    (void)rng;
    rescale *r = self;
    for (int i = 0; i < r->nsites; i++) { /* s = 0: the model starts unchanged */
        ex_status st = r->be->vt.fill(r->be->ctx, r->sites[i].s, 0.0f, r->sites[i].rows);
        EX_ENSURE(st == EX_OK, err, st, "rescale: fill failed");
    }
    return EX_OK;
}

static const ex_peft_vtable vt = {
    /* .create  = */ rs_create,
    /* .destroy = */ rs_destroy,
    /* .apply   = */ rs_apply,
    /* .plan    = */ rs_plan,
    /* .init    = */ rs_init,
    /* .merge   = */ NULL,
    /* .unmerge = */ NULL,
};

static const ex_plugin_desc desc =
    EX_PLUGIN_DESC(EX_PLUGIN_PEFT, "example-rescale", "1.0.0", "per-channel output rescaling, built out of tree", rescale_keys, &vt);

EX_PLUGIN_ENTRY { return &desc; }
