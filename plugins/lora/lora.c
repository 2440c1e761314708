/*
 * plugins/lora/lora.c — the `lora` PEFT strategy: low-rank adapters on linear
 * sites of a backbone (Hu et al. 2021, as ExPLoRA's LoRALinearLayer adapted
 * from Microsoft's loralib).
 *
 * For an adapted output slice of a linear layer (rows [r0, r0 + m) of its
 * weight W (out, in)):
 *
 *   y[:, r0:r0+m] = x W[r0:r0+m]^T + b[r0:r0+m] + s * (x A^T) B^T
 *   A (rank, in) ~ U(-1/sqrt(in), 1/sqrt(in))   (kaiming_uniform_(a=sqrt(5)), loralib)
 *   B (m, rank)  = 0                            (the adapted model starts as the base model)
 *   s = alpha / rank
 *
 * ExPLoRA never overrides loralib's lora_alpha = 1, so its scale is 1/rank
 * (1/64 in pre-training, 1/8 in LoRA fine-tuning): alpha defaults to 1 here for
 * the same reason. (Hugging Face peft's common alpha = rank or 2*rank would give
 * 64x or 128x larger updates at rank 64.)
 *
 * Targets: q, k, v are the row slices [0, D), [D, 2D), [2D, 3D) of the fused
 * blocks.i.attn.qkv (ExPLoRA splits qkv into q_proj/k_proj/v_proj and adapts q
 * and v; the fused layer with slices is the same function); proj is
 * blocks.i.attn.proj; fc1/fc2 are blocks.i.mlp.fc1/fc2 (w12/w3 for SwiGLU).
 *
 * Parameter names (group "lora", trainable, optional in checkpoints):
 *   <site>.lora_q.A (rank, in), <site>.lora_q.B (D, rank)   likewise lora_k, lora_v   for site = blocks.i.attn.qkv
 *   <site>.lora.A   (rank, in), <site>.lora.B   (out, rank)                        for proj, fc1/w12, fc2/w3
 *
 * Training runs unmerged: one hook per adapted ex_linear adds every slice's
 * term with two GEMMs writing straight into the slice's columns of the
 * layer's output (no copy of W, no materialised B A), caching h = x A^T
 * (rows, rank) per slice for backward. merge folds s * B A into W's rows
 * (export, evaluation) and makes the hook add nothing; unmerge takes it out.
 *
 * Dropout (loralib's lora_dropout, p = dropout; ExPLoRA uses 0): in a training
 * forward each slice sees its own inverted-dropout copy of the input,
 *
 *   y[:, slice] += s * ((x * M) A^T) B^T,   M = keep mask, 0 or 1/(1 - p)
 *
 * (ExPLoRA's q and v are separate layers with a dropout each: one mask per
 * slice). M comes from the backend's rng_dropout on a Philox stream keyed on
 * (the seed, the pass's noise key, the site, the slice), so a recomputed
 * forward (activation checkpointing) and the backward regenerate exactly the
 * mask the forward used: nothing of size (rows, in) is kept per site; two
 * shared scratch buffers (rows, max in) hold M and x * M while a slice is
 * processed. Backward: dA += dh^T (x * M), dinp += (dh A) * M. Inference
 * (train = 0) and merged weights use no dropout.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/plugin.h"

enum { T_Q = 0, T_K, T_V, T_PROJ, T_FC1, T_FC2, T_COUNT };

static const char *const k_target_names[T_COUNT] = {"q", "k", "v", "proj", "fc1", "fc2"};

#define LORA_MAX_SLICES 3

typedef struct lora lora;

/* One adapted row slice of a site. */
typedef struct lora_slice {
    int kind;            /* T_* */
    int64_t row0, rows;  /* output rows [row0, row0 + rows) of the site */
    float *A, *dA;       /* (rank, in) and its gradient (NULL when frozen) */
    float *B, *dB;       /* (rows, rank) and its gradient (NULL when frozen) */
    ex_tensor h;         /* (max_rows, rank) x A^T of the last forward, for backward */
    uint64_t noise;      /* dropout: the noise key of the last forward; 0 = it used no dropout */
} lora_slice;

/* One adapted linear layer and its hook. */
typedef struct lora_site {
    char name[64];          /* e.g. "blocks.3.attn.qkv" */
    ex_linear *lin;         /* the backbone's layer (owned by the backbone) */
    ex_linear_hook hook;    /* appended to lin->hooks */
    lora_slice slices[LORA_MAX_SLICES];
    int nslices;
    lora *owner;
} lora_site;

struct lora {
    /* config */
    int64_t rank;
    double alpha;
    float scale;                 /* alpha / rank */
    uint8_t targets[T_COUNT];    /* 1 = adapt */
    int64_t blocks[1024];        /* [peft.lora] blocks as given (negative from the end) */
    int nblocks;
    int skip_unfrozen;
    char section[96];            /* for messages */
    /* state */
    ex_backend *be;
    ex_params *params;
    lora_site *sites;            /* (nsites), stable: parameter slots point into it */
    int nsites;
    int64_t max_rows;            /* rows planned for the caches, 0 before plan */
    ex_tensor dh;                /* (max_rows, rank) backward scratch shared by every slice */
    float dropout;               /* p of the adapters' input dropout, 0: none */
    uint64_t stream;             /* dropout: the seed's key (from init), mixed with each pass's noise key */
    ex_tensor mask, xd;          /* dropout: (max_rows, max in) keep mask and masked input, shared scratch */
    int merged;
};

static const ex_key_spec lora_keys[] = {
    {"rank", EX_KEY_INT, "8", 1, 4096, NULL, "rank r of every adapter (ExPLoRA pre-training: 64; LoRA fine-tuning: 8)"},
    {"alpha", EX_KEY_FLOAT, "1", 1e-6, 1e6, NULL,
     "scale s = alpha / rank; the default 1 gives ExPLoRA's and loralib's s = 1/rank (peft's habit alpha = rank is s = 1)"},
    {"dropout", EX_KEY_FLOAT, "0", 0, 0.9, NULL,
     "dropout probability on each adapter's input in training (loralib's lora_dropout; ExPLoRA uses 0)"},
    {"targets", EX_KEY_STRING_LIST, "q, v", EX_NORANGE, NULL,
     "sites to adapt in each block: q, k, v (row slices of the fused qkv), proj, fc1, fc2 (w12, w3 for SwiGLU)"},
    {"blocks", EX_KEY_INT_LIST, "", -4096, 4095, NULL,
     "blocks to adapt (negative counts from the end, e.g. '-1'); empty: every block"},
    {"skip_unfrozen", EX_KEY_BOOL, "true", EX_NORANGE, NULL,
     "give no adapter to a layer whose weight is already trainable (unfrozen by an earlier strategy): ExPLoRA's "
     "LoRA on every block outside unfreeze_blocks"},
    EX_KEY_END,
};

/* ------------------------------------------------------------------------------
 * GEMM helpers (row-major, fp32, one matrix)
 * ------------------------------------------------------------------------------ */

/* C (m, n) = alpha * op(A) @ op(B) + beta * C with row strides lda, ldb, ldc; A and B stored as a_dtype and
 * b_dtype (the layer's input may be kept in bf16), C fp32. */
static ex_status gemm_as(ex_backend *be, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                         const void *a /* (m, k), or (k, m) when ta */, ex_dtype a_dtype, int64_t lda,
                         const void *b /* (k, n), or (n, k) when tb */, ex_dtype b_dtype, int64_t ldb, float beta,
                         float *c /* (m, n) */, int64_t ldc, ex_err *err) {
    ex_gemm_desc d;
    memset(&d, 0, sizeof d);
    d.trans_a = ta, d.trans_b = tb;
    d.m = m, d.n = n, d.k = k;
    d.alpha = alpha, d.beta = beta;
    d.a = a, d.a_dtype = a_dtype, d.lda = lda;
    d.b = b, d.b_dtype = b_dtype, d.ldb = ldb;
    d.c = c, d.ldc = ldc;
    d.batch = 1;
    return ex_be_gemm(be, &d, err);
}

/* gemm_as with fp32 A and B. */
static ex_status gemm(ex_backend *be, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                      int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc, ex_err *err) {
    return gemm_as(be, ta, tb, m, n, k, alpha, a, EX_F32, lda, b, EX_F32, ldb, beta, c, ldc, err);
}

/* ------------------------------------------------------------------------------
 * The hook
 * ------------------------------------------------------------------------------ */

/* The keep mask of slice k of site `st` for the pass keyed `noise`, into L->mask (n, in): a pure function of
 * (seed, noise, site, slice), so the backward and a recomputed forward regenerate it. */
static ex_status dropout_mask(const lora_site *st, int k, uint64_t noise, int64_t n, ex_err *err) {
    const lora *L = st->owner;
    const uint64_t site = (uint64_t)(st - L->sites);
    ex_rng r;
    r.key = ex_splitmix64(L->stream ^ ex_noise_derive(noise, site * LORA_MAX_SLICES + (uint64_t)k));
    r.offset = 0;
    ex_status s = L->be->vt.rng_dropout(L->be->ctx, L->mask.data, n * st->lin->in, L->dropout, &r);
    EX_ENSURE(s == EX_OK, err, s, "lora: %s: backend '%s': rng_dropout failed", st->name, L->be->name);
    return EX_OK;
}

/* L->xd (n, in) = inp * mask of slice k (after dropout_mask). */
static ex_status masked_input(const lora_site *st, const float *inp, int64_t n, ex_err *err) {
    const lora *L = st->owner;
    ex_status s = L->be->vt.binary(L->be->ctx, EX_BIN_MUL, L->xd.data, inp, L->mask.data, n * st->lin->in);
    EX_ENSURE(s == EX_OK, err, s, "lora: %s: backend '%s': binary failed", st->name, L->be->name);
    return EX_OK;
}

/* Adapter dropout multiplies the input by a mask in fp32: an input kept in bf16 cannot take it (checked at
 * plan time, as a configuration error, and again by the hooks). */
static ex_status check_dropout_input(const lora_site *st, ex_dtype inp_dtype, ex_status code, ex_err *err) {
    const lora *L = st->owner;
    EX_ENSURE(inp_dtype == EX_F32, err, code,
              "lora: %s: [%s] dropout = %g needs the layer's input in fp32, but it is kept in %s ([optim] "
              "activation_dtype = bf16); set dropout = 0 (as ExPLoRA does) or activation_dtype = fp32",
              st->name, L->section, (double)L->dropout, inp_dtype == EX_BF16 ? "bf16" : ex_dtype_name(inp_dtype));
    return EX_OK;
}

/* out (n, lin->out) += scale * (x (n, in) @ A^T) @ B^T in each slice's columns; x = inp, or inp * M in a
 * training forward with dropout. */
static ex_status lora_hook_forward(void *self, ex_backend *be, float *out /* (n, lin->out) */,
                                   const void *inp /* (n, lin->in) as inp_dtype */, ex_dtype inp_dtype, int64_t n,
                                   int train, uint64_t noise, ex_err *err) {
    lora_site *st = self;
    const lora *L = st->owner;
    if (L->merged || n == 0) return EX_OK; /* merged: W already holds s * B A */
    EX_ENSURE(L->max_rows > 0 && L->dh.data, err, EX_E_INVALID,
              "lora: %s: forward before the adapters' buffers were planned and allocated", st->name);
    EX_ENSURE(n <= L->max_rows, err, EX_E_SHAPE, "lora: %s: %lld rows exceed the %lld planned", st->name, (long long)n,
              (long long)L->max_rows);
    const int drop = train && L->dropout > 0.0f;
    EX_ENSURE(!drop || noise != 0, err, EX_E_INVALID,
              "lora: %s: [%s] dropout = %g needs the training pass's noise key (ex_backbone_io.noise), which the "
              "objective did not set",
              st->name, L->section, (double)L->dropout);
    if (drop) EX_CHECK(check_dropout_input(st, inp_dtype, EX_E_UNSUPPORTED, err));
    const int64_t in = st->lin->in, ld = st->lin->out, r = L->rank;
    for (int i = 0; i < st->nslices; i++) {
        lora_slice *sl = &st->slices[i];
        float *h = sl->h.data; /* (n, r) */
        const void *x = inp;
        if (drop) {
            EX_CHECK(dropout_mask(st, i, noise, n, err));
            EX_CHECK(masked_input(st, inp, n, err));
            x = L->xd.data;
        }
        sl->noise = drop ? noise : 0;
        EX_CHECK(gemm_as(be, 0, 1, n, r, in, 1.0f, x, inp_dtype, in, sl->A, EX_F32, in, 0.0f, h, r, err));
        EX_CHECK(gemm(be, 0, 1, n, sl->rows, r, L->scale, h, r, sl->B, r, 1.0f, out + sl->row0, ld, err));
    }
    return EX_OK;
}

/* dB += s * dout_slice^T @ h; dh = s * dout_slice @ B; dA += dh^T @ x; dinp += (dh @ A) [* M]. */
static ex_status lora_hook_backward(void *self, ex_backend *be, float *dinp /* (n, lin->in) or NULL */,
                                    const float *dout /* (n, lin->out) */,
                                    const void *inp /* (n, lin->in) as inp_dtype */, ex_dtype inp_dtype, int64_t n,
                                    ex_err *err) {
    lora_site *st = self;
    const lora *L = st->owner;
    EX_ENSURE(!L->merged, err, EX_E_INVALID,
              "lora: %s: backward while the adapters are merged into the base weights (unmerge before training)",
              st->name);
    if (n == 0) return EX_OK;
    EX_ENSURE(n <= L->max_rows && L->dh.data, err, EX_E_SHAPE, "lora: %s: %lld rows exceed the %lld planned",
              st->name, (long long)n, (long long)L->max_rows);
    const int64_t in = st->lin->in, ld = st->lin->out, r = L->rank;
    float *dh = L->dh.data; /* (n, r) */
    for (int i = 0; i < st->nslices; i++) {
        const lora_slice *sl = &st->slices[i];
        const float *ds = dout + sl->row0; /* (n, rows) with row stride ld */
        const float *h = sl->h.data;       /* (n, r) */
        if (sl->dB) EX_CHECK(gemm(be, 1, 0, sl->rows, r, n, L->scale, ds, ld, h, r, 1.0f, sl->dB, r, err));
        if (!sl->dA && !dinp) continue;
        EX_CHECK(gemm(be, 0, 0, n, r, sl->rows, L->scale, ds, ld, sl->B, r, 0.0f, dh, r, err));
        if (!sl->noise) {
            if (sl->dA)
                EX_CHECK(gemm_as(be, 1, 0, r, in, n, 1.0f, dh, EX_F32, r, inp, inp_dtype, in, 1.0f, sl->dA, in, err));
            if (dinp) EX_CHECK(gemm(be, 0, 0, n, in, r, 1.0f, dh, r, sl->A, in, 1.0f, dinp, in, err));
            continue;
        }
        /* dropout: the forward's mask again, then x * M for dA and (dh A) * M for dinp */
        EX_CHECK(check_dropout_input(st, inp_dtype, EX_E_UNSUPPORTED, err));
        EX_CHECK(dropout_mask(st, i, sl->noise, n, err));
        float *xd = L->xd.data; /* (n, in) */
        if (sl->dA) {
            EX_CHECK(masked_input(st, inp, n, err));
            EX_CHECK(gemm(be, 1, 0, r, in, n, 1.0f, dh, r, xd, in, 1.0f, sl->dA, in, err));
        }
        if (dinp) {
            EX_CHECK(gemm(be, 0, 0, n, in, r, 1.0f, dh, r, sl->A, in, 0.0f, xd, in, err));
            ex_status s = be->vt.binary(be->ctx, EX_BIN_MUL, xd, xd, L->mask.data, n * in);
            if (s == EX_OK) s = be->vt.axpby(be->ctx, dinp, 1.0f, xd, 1.0f, n * in);
            EX_ENSURE(s == EX_OK, err, s, "lora: %s: backend '%s': elementwise op failed", st->name, be->name);
        }
    }
    return EX_OK;
}

/* ------------------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------------------ */

static int target_index(const char *name) {
    for (int t = 0; t < T_COUNT; t++)
        if (strcmp(name, k_target_names[t]) == 0) return t;
    if (strcmp(name, "w12") == 0) return T_FC1; /* SwiGLU spellings */
    if (strcmp(name, "w3") == 0) return T_FC2;
    return -1;
}

static ex_status lora_create(const ex_cfg_section *cfg, void **self, ex_err *err) {
    lora *L = calloc(1, sizeof *L);
    EX_ENSURE(L, err, EX_E_NOMEM, "lora: out of memory");
    ex_status st = EX_OK;
    snprintf(L->section, sizeof L->section, "%s", cfg->section ? cfg->section : "peft.lora");
    double dropout = 0;
    const char *items[16];
    char buf[512];
    int n = 0;
    EX_CHECK_GOTO(ex_cfg_int(cfg, "rank", &L->rank, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_float(cfg, "alpha", &L->alpha, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_float(cfg, "dropout", &dropout, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_bool(cfg, "skip_unfrozen", &L->skip_unfrozen, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_int_list(cfg, "blocks", L->blocks, 1024, &L->nblocks, err), st, fail);
    EX_CHECK_GOTO(ex_cfg_string_list(cfg, "targets", items, 16, &n, buf, sizeof buf, err), st, fail);
    if (L->rank < 1)
        EX_FAIL_GOTO(err, st, fail, EX_E_CONFIG, "[%s] rank = %lld: the rank must be at least 1.", L->section,
                     (long long)L->rank);
    L->dropout = (float)dropout;
    if (n == 0)
        EX_FAIL_GOTO(err, st, fail, EX_E_CONFIG, "[%s] targets is empty: name at least one of q, k, v, proj, fc1, fc2.",
                     L->section);
    for (int i = 0; i < n; i++) {
        int t = target_index(items[i]);
        if (t < 0)
            EX_FAIL_GOTO(err, st, fail, EX_E_CONFIG,
                         "[%s] targets: unknown target '%s' (accepted: q, k, v, proj, fc1, fc2; w12, w3 for SwiGLU).",
                         L->section, items[i]);
        L->targets[t] = 1;
    }
    L->scale = (float)(L->alpha / (double)L->rank);
    *self = L;
    return EX_OK;
fail:
    free(L);
    return st;
}

/* Take this strategy's hooks out of the backbone's layers (the backbone must still exist). */
static void detach(lora *L) {
    for (int i = 0; i < L->nsites; i++) {
        lora_site *s = &L->sites[i];
        if (!s->lin) continue;
        for (ex_linear_hook **p = &s->lin->hooks; *p; p = &(*p)->next) {
            if (*p == &s->hook) {
                *p = s->hook.next;
                break;
            }
        }
        s->lin = NULL;
    }
}

static void lora_destroy(void *self) {
    lora *L = self;
    if (!L) return;
    detach(L);
    free(L->sites);
    free(L);
}

/* Resolve the site name of target group `g` (0 = qkv, 1 = proj, 2 = fc1, 3 = fc2) in block b;
 * fc1/fc2 are spelled w12/w3 in SwiGLU models. */
static void site_name(const ex_params *ps, int64_t b, int g, char *out, size_t cap) {
    static const char *const base[4] = {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"};
    static const char *const alt[4] = {NULL, NULL, "mlp.w12", "mlp.w3"};
    char w[128];
    snprintf(out, cap, "blocks.%lld.%s", (long long)b, base[g]);
    snprintf(w, sizeof w, "%s.weight", out);
    if (!ex_params_find(ps, w) && alt[g]) {
        char a[64];
        snprintf(a, sizeof a, "blocks.%lld.%s", (long long)b, alt[g]);
        snprintf(w, sizeof w, "%s.weight", a);
        if (ex_params_find(ps, w)) snprintf(out, cap, "%s", a);
    }
}

/* Which target kinds of group g are requested. */
static int group_kinds(const lora *L, int g, int kinds[LORA_MAX_SLICES]) {
    int n = 0;
    if (g == 0) {
        for (int t = T_Q; t <= T_V; t++)
            if (L->targets[t]) kinds[n++] = t;
    } else if (L->targets[T_PROJ + g - 1]) {
        kinds[n++] = T_PROJ + g - 1;
    }
    return n;
}

/* Should block b's site of group g be adapted? (config, skip_unfrozen) */
static int wants_site(const lora *L, const ex_params *ps, const char *name, int g) {
    int kinds[LORA_MAX_SLICES];
    if (group_kinds(L, g, kinds) == 0) return 0;
    if (!L->skip_unfrozen) return 1;
    char w[128];
    snprintf(w, sizeof w, "%s.weight", name);
    const ex_param *p = ex_params_find(ps, w);
    return !(p && p->trainable);
}

/* Register one trainable adapter tensor (d0, d1); val/grad: the slots ex_params_bind fills. */
static ex_status add_param(lora *L, const char *name, int64_t d0, int64_t d1, float **val, float **grad, ex_err *err) {
    ex_param *p = NULL;
    EX_CHECK(ex_params_add(L->params, name, 2, (int64_t[]){d0, d1}, "lora", val, grad, &p, err));
    p->trainable = 1;
    p->optional = 1; /* checkpoints of the base model have no adapters: they keep their initialisation */
    return EX_OK;
}

static ex_status lora_apply(void *self, ex_peft_target *t, ex_err *err) {
    lora *L = self;
    EX_ENSURE(!L->sites, err, EX_E_INVALID, "lora: apply() called twice");
    EX_ENSURE(t && t->bb && t->bb->site && t->params, err, EX_E_INVALID, "lora: the backbone offers no linear sites");
    L->be = t->be;
    L->params = t->params;
    const int64_t depth = t->info.depth;
    EX_ENSURE(depth >= 1, err, EX_E_INVALID, "lora: the backbone reports %lld blocks", (long long)depth);
    uint8_t *mask = malloc((size_t)depth); /* (depth) 1 = selected block */
    EX_ENSURE(mask, err, EX_E_NOMEM, "lora: out of memory");
    char what[128];
    snprintf(what, sizeof what, "[%s] blocks", L->section);
    ex_status st = ex_peft_block_mask(L->blocks, L->nblocks, depth, mask, what, err);
    if (st != EX_OK) {
        free(mask);
        return st;
    }
    if (L->nblocks == 0) memset(mask, 1, (size_t)depth);

    /* count, then register (the sites array must not move once slots point into it) */
    char name[64];
    int count = 0;
    for (int64_t b = 0; b < depth; b++)
        for (int g = 0; g < 4 && mask[b]; g++) {
            site_name(t->params, b, g, name, sizeof name);
            count += wants_site(L, t->params, name, g);
        }
    if (count == 0) {
        free(mask);
        EX_FAIL(err, EX_E_CONFIG,
                "[%s] adapts nothing: every targeted layer of the selected blocks is already trainable "
                "(skip_unfrozen = true skips layers an earlier strategy unfroze).",
                L->section);
    }
    L->sites = calloc((size_t)count, sizeof *L->sites);
    if (!L->sites) {
        free(mask);
        EX_FAIL(err, EX_E_NOMEM, "lora: out of memory");
    }
    for (int64_t b = 0; b < depth && st == EX_OK; b++) {
        for (int g = 0; g < 4 && mask[b] && st == EX_OK; g++) {
            site_name(t->params, b, g, name, sizeof name);
            if (!wants_site(L, t->params, name, g)) continue;
            ex_linear *lin = t->bb->site(t->bb_self, name);
            if (!lin) {
                st = ex_err_set(err, EX_E_CONFIG, __FILE__, __LINE__,
                                "[%s] targets: the backbone has no linear layer '%s' to adapt.", L->section, name);
                break;
            }
            lora_site *s = &L->sites[L->nsites];
            snprintf(s->name, sizeof s->name, "%s", name);
            s->owner = L;
            int kinds[LORA_MAX_SLICES];
            int nk = group_kinds(L, g, kinds);
            if (g == 0 && lin->out % 3 != 0) {
                st = ex_err_set(err, EX_E_SHAPE, __FILE__, __LINE__,
                                "lora: %s has %lld outputs, not the 3 x dim of a fused q, k, v projection", name,
                                (long long)lin->out);
                break;
            }
            for (int k = 0; k < nk && st == EX_OK; k++) {
                lora_slice *sl = &s->slices[k];
                char pa[EX_NAME_MAX], pb[EX_NAME_MAX];
                sl->kind = kinds[k];
                if (g == 0) {
                    sl->rows = lin->out / 3;
                    sl->row0 = (kinds[k] - T_Q) * sl->rows;
                    snprintf(pa, sizeof pa, "%s.lora_%s.A", name, k_target_names[kinds[k]]);
                    snprintf(pb, sizeof pb, "%s.lora_%s.B", name, k_target_names[kinds[k]]);
                } else {
                    sl->rows = lin->out;
                    sl->row0 = 0;
                    snprintf(pa, sizeof pa, "%s.lora.A", name);
                    snprintf(pb, sizeof pb, "%s.lora.B", name);
                }
                st = add_param(L, pa, L->rank, lin->in, &sl->A, &sl->dA, err);
                if (st == EX_OK) st = add_param(L, pb, sl->rows, L->rank, &sl->B, &sl->dB, err);
            }
            if (st != EX_OK) break;
            s->nslices = nk;
            /* attach at the end of the layer's chain */
            s->hook.self = s;
            s->hook.forward = lora_hook_forward;
            s->hook.backward = lora_hook_backward;
            s->hook.next = NULL;
            ex_linear_hook **p = &lin->hooks;
            while (*p) p = &(*p)->next;
            *p = &s->hook;
            s->lin = lin;
            L->nsites++;
        }
    }
    free(mask);
    return st;
}

static ex_status lora_plan(void *self, int64_t max_rows, ex_memory_plan *plan, ex_err *err) {
    lora *L = self;
    EX_ENSURE(max_rows >= 1, err, EX_E_INVALID, "lora: cannot plan for %lld rows", (long long)max_rows);
    EX_ENSURE(L->max_rows == 0, err, EX_E_INVALID, "lora: plan() called twice");
    if (L->dropout > 0.0f) /* the backbone has planned: its layers' input dtypes are known */
        for (int i = 0; i < L->nsites; i++) EX_CHECK(check_dropout_input(&L->sites[i], L->sites[i].lin->in_dtype, EX_E_CONFIG, err));
    ex_arena *acts = &plan->arenas[EX_MEM_ACTIVATION];
    const int64_t shape[2] = {max_rows, L->rank};
    for (int i = 0; i < L->nsites; i++) {
        lora_site *s = &L->sites[i];
        for (int k = 0; k < s->nslices; k++) {
            char name[EX_NAME_MAX];
            snprintf(name, sizeof name, "lora.%s.%s.h", s->name, k_target_names[s->slices[k].kind]);
            EX_CHECK(ex_tensor_init(&s->slices[k].h, name, EX_F32, 2, shape, err));
            EX_CHECK(ex_arena_add(acts, &s->slices[k].h, err));
        }
    }
    EX_CHECK(ex_tensor_init(&L->dh, "lora.dh", EX_F32, 2, shape, err));
    EX_CHECK(ex_arena_add(acts, &L->dh, err));
    if (L->dropout > 0.0f) { /* the mask and the masked input of one slice at a time */
        int64_t max_in = 1;
        for (int i = 0; i < L->nsites; i++)
            if (L->sites[i].lin->in > max_in) max_in = L->sites[i].lin->in;
        const int64_t wide[2] = {max_rows, max_in};
        EX_CHECK(ex_tensor_init(&L->mask, "lora.dropout_mask", EX_F32, 2, wide, err));
        EX_CHECK(ex_arena_add(acts, &L->mask, err));
        EX_CHECK(ex_tensor_init(&L->xd, "lora.dropout_input", EX_F32, 2, wide, err));
        EX_CHECK(ex_arena_add(acts, &L->xd, err));
    }
    L->max_rows = max_rows;
    return EX_OK;
}

/* A: U(-1/sqrt(in), 1/sqrt(in)) drawn on the host in site, slice, row-major order; B: zeros. */
static ex_status lora_init(void *self, ex_rng *rng, ex_err *err) {
    lora *L = self;
    EX_ENSURE(!L->merged, err, EX_E_INVALID, "lora: init() while merged");
    L->stream = ex_splitmix64(rng->key ^ 0x4C6F5241u); /* the dropout masks' seed: the run's, not the draw position */
    for (int i = 0; i < L->nsites; i++) {
        lora_site *s = &L->sites[i];
        const int64_t in = s->lin->in, na = L->rank * in;
        const float bound = (float)(1.0 / sqrt((double)in));
        float *host = malloc(sizeof(float) * (size_t)na); /* (rank, in) */
        EX_ENSURE(host, err, EX_E_NOMEM, "lora: out of memory");
        for (int k = 0; k < s->nslices; k++) {
            lora_slice *sl = &s->slices[k];
            if (!sl->A || !sl->B) {
                free(host);
                EX_FAIL(err, EX_E_INVALID, "lora: init() before the parameters of %s were allocated", s->name);
            }
            for (int64_t j = 0; j < na; j++) host[j] = bound * (2.0f * ex_rng_next_uniform(rng) - 1.0f);
            ex_status st = ex_be_upload(L->be, sl->A, host, sizeof(float) * (size_t)na, err);
            if (st == EX_OK) {
                st = L->be->vt.fill(L->be->ctx, sl->B, 0.0f, sl->rows * L->rank);
                if (st != EX_OK) ex_err_set(err, st, __FILE__, __LINE__, "lora: backend '%s': fill failed", L->be->name);
            }
            if (st != EX_OK) {
                free(host);
                return st;
            }
        }
        free(host);
    }
    return EX_OK;
}

/* W[slice rows] (rows, in) += sign * s * B (rows, r) @ A (r, in) for every slice. */
static ex_status fold(lora *L, float sign, ex_err *err) {
    for (int i = 0; i < L->nsites; i++) {
        lora_site *s = &L->sites[i];
        EX_ENSURE(s->lin && s->lin->w, err, EX_E_INVALID, "lora: %s has no weight to merge into", s->name);
        EX_ENSURE(s->lin->w_dtype == EX_F32, err, EX_E_UNSUPPORTED,
                  "lora: cannot merge into %s: its frozen weight is stored in %s ([optim] frozen_dtype, a training "
                  "setting). Export and evaluation build the model with fp32 weights; merge there.",
                  s->name, ex_dtype_name(s->lin->w_dtype));
        const int64_t in = s->lin->in;
        for (int k = 0; k < s->nslices; k++) {
            const lora_slice *sl = &s->slices[k];
            EX_CHECK(gemm(L->be, 0, 0, sl->rows, in, L->rank, sign * L->scale, sl->B, L->rank, sl->A, in, 1.0f,
                          s->lin->w + sl->row0 * in, in, err));
        }
    }
    return EX_OK;
}

static ex_status lora_merge(void *self, ex_err *err) {
    lora *L = self;
    if (L->merged) return EX_OK;
    EX_CHECK(fold(L, 1.0f, err));
    L->merged = 1;
    return EX_OK;
}

static ex_status lora_unmerge(void *self, ex_err *err) {
    lora *L = self;
    if (!L->merged) return EX_OK;
    EX_CHECK(fold(L, -1.0f, err));
    L->merged = 0;
    return EX_OK;
}

static const ex_peft_vtable lora_vtable = {
    /* .create  = */ lora_create,
    /* .destroy = */ lora_destroy,
    /* .apply   = */ lora_apply,
    /* .plan    = */ lora_plan,
    /* .init    = */ lora_init,
    /* .merge   = */ lora_merge,
    /* .unmerge = */ lora_unmerge,
};

static const ex_plugin_desc lora_desc =
    EX_PLUGIN_DESC(EX_PLUGIN_PEFT, "lora", "0.1.0",
                   "LoRA adapters (ExPLoRA/loralib: s = alpha/rank, A Kaiming-uniform, B zero) on q, k, v slices of "
                   "the fused qkv, proj, fc1, fc2",
                   lora_keys, &lora_vtable);

EX_PLUGIN_ENTRY { return &lora_desc; }
