/*
 * tests/test_peft.c — the PEFT strategy plugins `unfreeze` and `lora`:
 *
 *   1. exact trainable-parameter counts of the recipes in configs/peft on the
 *      DINOv2 ViT-B/14 and ViT-L/14 presets (built through the real session
 *      and model path, nothing allocated), and of the stack rules on the tiny
 *      fixture architecture;
 *   2. the LoRA hook on one fused qkv layer (q and v slices, frozen base)
 *      against a double-precision reference of its definition: forward, and
 *      gradients of A, B and the input by central finite differences; merge
 *      gives the same forward, unmerge restores the weight; frozen tensors get
 *      no gradient buffer and stay bit-identical through AdamW steps on the
 *      whole ViT (tests/fixtures/vit_dinov2.safetensors) while LoRA B leaves 0;
 *   3. with B = 0 at init the adapted ViT computes exactly the base ViT;
 *   4. ViT D-[L] backbone gradients of every LoRA A and B against finite
 *      differences of the backbone's loss;
 *   5. config errors name the key and the value;
 *   6. A's initialisation is a function of the seed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/model.h"
#include "explora/peft.h"
#include "explora/safetensors.h"
#include "explora/session.h"
#include "test_support.h"

/* The tiny DINOv2 fixture architecture (depth 3, D 24, 3 heads, patch 4, 4x4 position grid). */
#define TINY_BACKBONE "[backbone]\nname = vit\ndim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\nlayerscale = on\n"

/* ------------------------------------------------------------------------------
 * Building models through the session path
 * ------------------------------------------------------------------------------ */

typedef struct pm {
    ex_session s;
    int have_session;
    ex_backend be;
    int have_be;
    ex_model m;
} pm;

/* Write `ini` to a scratch file, open and validate the session, start its backend and build
 * the model for `shape`. Returns the first failing status with its message in *err. */
static ex_status pm_build(pm *p, const char *ini, ex_backbone_shape shape, ex_err *err) {
    memset(p, 0, sizeof *p);
    ex_err_clear(err);
    char path[4096];
    ext_tmp_path(path, sizeof path, "peft.ini");
    ext_write_file(path, ini, strlen(ini));
    ex_session_options opt;
    memset(&opt, 0, sizeof opt);
    opt.config_path = path;
    opt.plugin_dirs[0] = ext_env("EXPLORA_TEST_PLUGIN_DIR");
    opt.ndirs = 1;
    EX_CHECK(ex_session_open(&p->s, &opt, err));
    p->have_session = 1;
    EX_CHECK(ex_session_validate(&p->s, err));
    EX_CHECK(ex_session_backend(&p->s, &p->be, err));
    p->have_be = 1;
    return ex_model_build(&p->m, &p->s, &p->be, &shape, err);
}

static void pm_free(pm *p) {
    ex_model_free(&p->m);
    if (p->have_be) ex_backend_destroy(&p->be);
    if (p->have_session) ex_session_close(&p->s);
    memset(p, 0, sizeof *p);
}

/* Trainable elements of parameters in `group` (NULL: any group). */
static int64_t trainable(const ex_params *ps, const char *group) {
    int64_t n = 0;
    for (int i = 0; i < ps->count; i++) {
        const ex_param *q = ps->items[i];
        if (q->trainable && (!group || strcmp(q->group, group) == 0)) n += ex_tensor_numel(&q->value);
    }
    return n;
}

/* Build a config that includes configs/peft/<recipe> on top of `backbone` and count. */
static void count_recipe(const char *recipe, const char *backbone, int64_t *n_train, int64_t *n_lora, int64_t *n_all) {
    char ini[4096];
    snprintf(ini, sizeof ini, "include = %s/../../configs/peft/%s\n%s[optim]\nbatch = 1\n",
             ext_env("EXPLORA_TEST_DATA_DIR"), recipe, backbone);
    pm p;
    ex_err err;
    ex_status st = pm_build(&p, ini, (ex_backbone_shape){1, 224, 224, 0, 0, 0, 0, EX_F32}, &err);
    if (st != EX_OK) fail_msg("%s: %s", recipe, err.msg);
    *n_train = ex_params_numel(&p.m.params, 1);
    *n_lora = trainable(&p.m.params, "lora");
    *n_all = ex_params_numel(&p.m.params, 0);
    pm_free(&p);
}

/* ------------------------------------------------------------------------------
 * 1. Trainable counts
 * ------------------------------------------------------------------------------ */

static void test_counts_vitb14(void **state) {
    (void)state;
    const char *b14 = "[backbone]\nname = vit\npreset = dinov2_vitb14\n";
    int64_t n, lora, all;
    /* ExPLoRA D-[L]-r64 on ViT-B/14 (D = 768, 12 blocks, MLP 3072):
     *   block 11 entire:  qkv 768*2304 + 2304 = 1,771,776; proj 768*768 + 768 = 590,592;
     *                     fc1 768*3072 + 3072 = 2,362,368; fc2 3072*768 + 768 = 2,360,064;
     *                     norm1 + norm2 4*768 = 3,072; ls1 + ls2 2*768 = 1,536       -> 7,089,408
     *   LoRA r64 on q, v of blocks 0..10: A (64, 768) + B (768, 64) = 98,304 per slice,
     *                     2 slices * 11 blocks                                     -> 2,162,688
     *   LayerNorms of blocks 0..10: 11 * 3,072 = 33,792; final norm 1,536          ->    35,328
     *   cls token                                                                 ->       768
     *   total                                                                     -> 9,288,192 (the paper's "9M") */
    count_recipe("explora_D-L-r64.ini", b14, &n, &lora, &all);
    assert_int_equal(n, 9288192);
    assert_int_equal(lora, 2162688);
    /* everything: patch embed 768*3*14*14 + 768 = 452,352; cls, mask 2*768; pos (1 + 37*37) * 768 = 1,052,160;
     * 12 blocks * 7,089,408 = 85,072,896; final norm 1,536 -> 86,580,480; + LoRA */
    assert_int_equal(all, 86580480 + 2162688);

    /* M-[1,L]-r32: blocks 0 and 11 (2 * 7,089,408) + LoRA r32 q, v on 10 blocks (10 * 2 * 2*32*768 = 983,040)
     * + norms of 10 blocks and the final norm (30,720 + 1,536) + cls 768 */
    count_recipe("explora_M-1L-r32.ini", b14, &n, &lora, &all);
    assert_int_equal(lora, 983040);
    assert_int_equal(n, 2 * 7089408 + 983040 + 32256 + 768);
    assert_int_equal(n, 15194880);

    /* LoRA only, r8 on q, v of all 12 blocks: 12 * 2 * (8*768 + 768*8) */
    count_recipe("lora_r8.ini", b14, &n, &lora, &all);
    assert_int_equal(n, 294912);
    assert_int_equal(lora, 294912);

    /* unfreeze-only [L]: block 11 + other norms + final norm + cls */
    count_recipe("unfreeze_last.ini", b14, &n, &lora, &all);
    assert_int_equal(n, 7089408 + 35328 + 768);
    assert_int_equal(lora, 0);

    /* BitFit: patch_embed.proj.bias 768; per block qkv 2304 + proj 768 + fc1 3072 + fc2 768 + norm1/norm2 biases
     * 2*768 = 8,448, * 12 = 101,376; final norm bias 768 */
    count_recipe("bitfit.ini", b14, &n, &lora, &all);
    assert_int_equal(n, 768 + 12 * 8448 + 768);
    assert_int_equal(n, 102912);

    count_recipe("full_finetune.ini", b14, &n, &lora, &all);
    assert_int_equal(n, 86580480);
    assert_int_equal(n, all);

    count_recipe("linear_probe.ini", b14, &n, &lora, &all);
    assert_int_equal(n, 0);
    assert_int_equal(all, 86580480);
}

static void test_counts_vitl14(void **state) {
    (void)state;
    const char *l14 = "[backbone]\nname = vit\npreset = dinov2_vitl14\n";
    int64_t n, lora, all;
    /* ViT-L/14 (D = 1024, 24 blocks, MLP 4096):
     *   block 23: qkv 1024*3072 + 3072 = 3,148,800; proj 1,049,600; fc1 1024*4096 + 4096 = 4,198,400;
     *             fc2 4096*1024 + 1024 = 4,195,328; norms 4,096; LayerScale 2,048          -> 12,598,272
     *   LoRA r64 q, v on 23 blocks: 23 * 2 * (64*1024 + 1024*64)                          ->  6,029,312
     *   norms of 23 blocks 23 * 4,096 = 94,208 + final norm 2,048                          ->     96,256
     *   cls                                                                               ->      1,024
     *   total 18,724,864: the paper's 18.7M */
    count_recipe("explora_D-L-r64.ini", l14, &n, &lora, &all);
    assert_int_equal(lora, 6029312);
    assert_int_equal(n, 12598272 + 6029312 + 96256 + 1024);
    assert_int_equal(n, 18724864);
    /* "unfreeze [L], no LoRA": the paper's 12.7M */
    count_recipe("unfreeze_last.ini", l14, &n, &lora, &all);
    assert_int_equal(n, 12598272 + 96256 + 1024);
    assert_int_equal(n, 12695552);
    count_recipe("lora_r8.ini", l14, &n, &lora, &all);
    assert_int_equal(n, 24 * 2 * 2 * 8 * 1024);
    assert_int_equal(n, 786432);
}

/* Stack rules on the tiny architecture (D 24, hidden 96, depth 3), rank 4. */
static void test_stack_rules(void **state) {
    (void)state;
    /* block 2: qkv 24*72 + 72 = 1800, proj 600, fc1 2400, fc2 2328, norms 96, LayerScale 48 = 7272;
     * LoRA r4 q, v on blocks 0, 1: 2 * 2 * (4*24 + 24*4) = 768; norms of blocks 0, 1 (192) + final (48); cls 24 */
    const char *base = "[peft]\nstack = %s\n[peft.unfreeze]\nblocks = -1\nnorms = true\ncls_token = true\n"
                       "[peft.lora]\nrank = 4\n%s" TINY_BACKBONE;
    struct {
        const char *stack, *lora_extra;
        int64_t expect, expect_lora;
    } cases[] = {
        {"unfreeze, lora", "", 7272 + 768 + 240 + 24, 768},
        /* skip_unfrozen = false: block 2 gets adapters too */
        {"unfreeze, lora", "skip_unfrozen = false\n", 7272 + 1152 + 240 + 24, 1152},
        /* lora first: nothing is unfrozen yet, every block is adapted */
        {"lora, unfreeze", "", 7272 + 1152 + 240 + 24, 1152},
        /* explicit blocks and targets: q, k, v, proj and fc1 of block 0 only:
         * 3 * 192 + (4*24 + 24*4) + (4*24 + 96*4) = 576 + 192 + 480 */
        {"lora", "blocks = 0\ntargets = q, k, v, proj, fc1\n", 1248, 1248},
        /* fc2: A (4, 96) + B (24, 4) per block on the last block only */
        {"lora", "blocks = -1\ntargets = fc2\n", 4 * 96 + 24 * 4, 4 * 96 + 24 * 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char ini[2048];
        snprintf(ini, sizeof ini, base, cases[i].stack, cases[i].lora_extra);
        if (strcmp(cases[i].stack, "lora") == 0) { /* no [peft.unfreeze] section for a stack without it */
            snprintf(ini, sizeof ini, "[peft]\nstack = lora\n[peft.lora]\nrank = 4\n%s" TINY_BACKBONE,
                     cases[i].lora_extra);
        }
        pm p;
        ex_err err;
        if (pm_build(&p, ini, (ex_backbone_shape){2, 16, 16, 0, 0, 0, 0, EX_F32}, &err) != EX_OK) fail_msg("case %zu: %s", i, err.msg);
        assert_int_equal(ex_params_numel(&p.m.params, 1), cases[i].expect);
        assert_int_equal(trainable(&p.m.params, "lora"), cases[i].expect_lora);
        if (i == 0) {
            /* names, shapes and what trains */
            const ex_param *a = ex_params_find(&p.m.params, "blocks.0.attn.qkv.lora_q.A");
            const ex_param *b = ex_params_find(&p.m.params, "blocks.1.attn.qkv.lora_v.B");
            assert_non_null(a);
            assert_non_null(b);
            assert_int_equal(a->value.shape[0], 4);
            assert_int_equal(a->value.shape[1], 24);
            assert_int_equal(b->value.shape[0], 24);
            assert_int_equal(b->value.shape[1], 4);
            assert_true(a->trainable && b->trainable);
            assert_null(ex_params_find(&p.m.params, "blocks.0.attn.qkv.lora_k.A"));
            assert_null(ex_params_find(&p.m.params, "blocks.2.attn.qkv.lora_q.A")); /* unfrozen block: no LoRA */
            assert_true(ex_params_find(&p.m.params, "blocks.2.mlp.fc1.weight")->trainable);
            assert_false(ex_params_find(&p.m.params, "blocks.1.attn.qkv.weight")->trainable);
            assert_false(ex_params_find(&p.m.params, "blocks.1.ls1.gamma")->trainable);
            assert_false(ex_params_find(&p.m.params, "pos_embed")->trainable);
            assert_false(ex_params_find(&p.m.params, "mask_token")->trainable);
            assert_false(ex_params_find(&p.m.params, "patch_embed.proj.weight")->trainable);
            assert_true(ex_params_find(&p.m.params, "blocks.0.norm2.bias")->trainable);
            assert_true(ex_params_find(&p.m.params, "norm.weight")->trainable);
            assert_true(ex_params_find(&p.m.params, "cls_token")->trainable);
        }
        pm_free(&p);
    }
    /* the remaining unfreeze switches, each alone */
    struct {
        const char *key;
        int64_t expect;
    } sw[] = {
        {"pos_embed", 17 * 24},
        {"patch_embed", 24 * 3 * 16 + 24},
        {"mask_token", 24},
        {"layerscale", 3 * 48},
        {"cls_token", 24},
    };
    for (size_t i = 0; i < sizeof sw / sizeof sw[0]; i++) {
        char ini[1024];
        snprintf(ini, sizeof ini, "[peft]\nstack = unfreeze\n[peft.unfreeze]\n%s = true\n" TINY_BACKBONE, sw[i].key);
        pm p;
        ex_err err;
        if (pm_build(&p, ini, (ex_backbone_shape){2, 16, 16, 0, 0, 0, 0, EX_F32}, &err) != EX_OK) fail_msg("%s: %s", sw[i].key, err.msg);
        assert_int_equal(ex_params_numel(&p.m.params, 1), sw[i].expect);
        pm_free(&p);
    }
}

/* ------------------------------------------------------------------------------
 * 2. The hook on one layer, against a double reference
 * ------------------------------------------------------------------------------ */

typedef struct one_layer {
    ex_linear qkv; /* (3D, D) */
} one_layer;

static ex_linear *one_layer_site(void *self, const char *name) {
    one_layer *o = self;
    return strcmp(name, "blocks.0.attn.qkv") == 0 ? &o->qkv : NULL;
}

#define OD 8     /* dim */
#define ON 5     /* rows */
#define ORANK 3
#define OSCALE 0.5 /* alpha 1.5 / rank 3 */

/* y (n, 3D) = x W^T + b + s (x Aq^T) Bq^T in the q rows and s (x Av^T) Bv^T in the v rows, in double. */
static void ref_forward(const double *W, const double *b, const double *Aq, const double *Bq, const double *Av,
                        const double *Bv, const double *x, double *y) {
    for (int i = 0; i < ON; i++) {
        double hq[ORANK], hv[ORANK];
        for (int k = 0; k < ORANK; k++) {
            hq[k] = hv[k] = 0;
            for (int j = 0; j < OD; j++) {
                hq[k] += x[i * OD + j] * Aq[k * OD + j];
                hv[k] += x[i * OD + j] * Av[k * OD + j];
            }
        }
        for (int o = 0; o < 3 * OD; o++) {
            double v = b[o];
            for (int j = 0; j < OD; j++) v += x[i * OD + j] * W[o * OD + j];
            for (int k = 0; k < ORANK; k++) {
                if (o < OD) v += OSCALE * hq[k] * Bq[o * ORANK + k];
                if (o >= 2 * OD) v += OSCALE * hv[k] * Bv[(o - 2 * OD) * ORANK + k];
            }
            y[i * 3 * OD + o] = v;
        }
    }
}

/* The tensors of the reference, in double. */
typedef struct ref_state {
    double W[3 * OD * OD], b[3 * OD], Aq[ORANK * OD], Bq[OD * ORANK], Av[ORANK * OD], Bv[OD * ORANK], x[ON * OD];
    double r[ON * 3 * OD];
} ref_state;

static double ref_loss(const ref_state *s) {
    double y[ON * 3 * OD], L = 0;
    ref_forward(s->W, s->b, s->Aq, s->Bq, s->Av, s->Bv, s->x, y);
    for (int i = 0; i < ON * 3 * OD; i++) L += s->r[i] * y[i];
    return L;
}

/* Central differences of ref_loss over every entry of `v` (n), compared with `got`. */
static void fd_check(ref_state *s, double *v, int n, const float *got, const char *what) {
    double maxg = 0;
    for (int i = 0; i < n; i++) maxg = fmax(maxg, fabs(got[i]));
    assert_true(maxg > 1e-3); /* a gradient to check */
    for (int i = 0; i < n; i++) {
        const double h = 1e-5, keep = v[i];
        v[i] = keep + h;
        double lp = ref_loss(s);
        v[i] = keep - h;
        double lm = ref_loss(s);
        v[i] = keep;
        double fd = (lp - lm) / (2 * h);
        if (fabs(fd - got[i]) > 1e-5 * maxg + 1e-4 * fabs(fd))
            fail_msg("%s[%d]: gradient %.9g, finite differences %.9g", what, i, (double)got[i], fd);
    }
}

static void to_f32(const double *d, float *f, int n) {
    for (int i = 0; i < n; i++) f[i] = (float)d[i];
}

static void rand_d(double *d, int n, uint64_t seed, double lo, double hi) {
    float *f = malloc(sizeof(float) * (size_t)n);
    ext_fill_uniform(f, (size_t)n, seed, (float)lo, (float)hi);
    for (int i = 0; i < n; i++) d[i] = f[i]; /* exactly representable in fp32 */
    free(f);
}

/* One fused qkv layer (OD -> 3 OD, frozen, with bias) adapted by the lora plugin from `ini`, planned for ON
 * rows and initialised from seed 3. */
typedef struct lora1 {
    ex_backend be;
    ex_registry *reg;
    const ex_peft_vtable *vt;
    ex_config *cfg;
    one_layer o;
    ex_params ps;
    ex_memory_plan plan;
    void *self;
} lora1;

static void lora1_open(lora1 *t, const char *ini) {
    memset(t, 0, sizeof *t);
    ex_err err;
    ex_err_clear(&err);
    ext_backend_open("cpu", NULL, &t->be, &t->reg);
    const ex_plugin *lp;
    EXT_OK(ex_registry_find(t->reg, EX_PLUGIN_PEFT, "lora", &lp, &err), &err);
    t->vt = &lp->vtable_copy.peft;
    EXT_OK(ex_config_load_string(&t->cfg, ini, "one.ini", &err), &err);
    EXT_OK(ex_config_validate_section(t->cfg, "peft.lora", lp->desc.keys, NULL, &err), &err);
    ex_cfg_section view = {t->cfg, "peft.lora", lp->desc.keys};
    one_layer *o = &t->o;
    o->qkv.in = OD;
    o->qkv.out = 3 * OD;
    ex_params_init(&t->ps);
    EXT_OK(ex_params_add(&t->ps, "blocks.0.attn.qkv.weight", 2, (int64_t[]){3 * OD, OD}, "attn", &o->qkv.w, &o->qkv.dw,
                         NULL, &err),
           &err);
    EXT_OK(ex_params_add(&t->ps, "blocks.0.attn.qkv.bias", 1, (int64_t[]){3 * OD}, "bias", &o->qkv.b, &o->qkv.db, NULL,
                         &err),
           &err);
    const ex_backbone_vtable bbvt = {.site = one_layer_site};
    ex_peft_target tg = {&t->be, &t->ps, &bbvt, o, {0}};
    tg.info.dim = OD, tg.info.depth = 1, tg.info.heads = 2;
    EXT_OK(t->vt->create(&view, &t->self, &err), &err);
    EXT_OK(t->vt->apply(t->self, &tg, &err), &err);
    ex_memory_plan_init(&t->plan, &t->be);
    EXT_OK(ex_params_plan(&t->ps, &t->plan, &err), &err);
    EXT_OK(t->vt->plan(t->self, ON, &t->plan, &err), &err);
    EXT_OK(ex_memory_plan_commit(&t->plan, &err), &err);
    ex_params_bind(&t->ps);
    ex_rng rng = ex_rng_seed(3, EX_RNG_INIT);
    EXT_OK(t->vt->init(t->self, &rng, &err), &err);
}

static void lora1_close(lora1 *t) {
    ex_memory_plan_release(&t->plan);
    t->vt->destroy(t->self);
    assert_null(t->o.qkv.hooks); /* destroy takes the hook out of the layer */
    ex_params_free(&t->ps);
    ex_config_free(t->cfg);
    ext_backend_close(&t->be, t->reg);
}

static void test_lora_layer(void **state) {
    (void)state;
    ex_err err;
    ex_err_clear(&err);
    lora1 t;
    lora1_open(&t, "[peft.lora]\nrank = 3\nalpha = 1.5\ntargets = q, v\n");
    ex_backend *be = &t.be;
    const ex_peft_vtable *vt = t.vt;
    one_layer *o = &t.o;
    ex_params *ps = &t.ps;
    ex_memory_plan *plan = &t.plan;
    void *self = t.self;
    assert_int_equal(ps->count, 6);
    assert_non_null(ex_params_find(ps, "blocks.0.attn.qkv.lora_q.A"));
    assert_non_null(ex_params_find(ps, "blocks.0.attn.qkv.lora_v.B"));
    assert_null(ex_params_find(ps, "blocks.0.attn.qkv.lora_k.A"));
    assert_non_null(o->qkv.hooks);

    /* the frozen base has no gradient buffers */
    assert_null(o->qkv.dw);
    assert_null(o->qkv.db);
    ex_param *pAq = ex_params_find(ps, "blocks.0.attn.qkv.lora_q.A"), *pBq = ex_params_find(ps, "blocks.0.attn.qkv.lora_q.B");
    ex_param *pAv = ex_params_find(ps, "blocks.0.attn.qkv.lora_v.A"), *pBv = ex_params_find(ps, "blocks.0.attn.qkv.lora_v.B");
    assert_non_null(pAq->grad.data);
    assert_non_null(pBv->grad.data);
    /* init: B = 0, A in U(-1/sqrt(8), 1/sqrt(8)) */
    const float *bq = pBq->value.data, *aq = pAq->value.data;
    float amax = 0;
    for (int i = 0; i < OD * ORANK; i++) {
        assert_true(bq[i] == 0.0f);
        amax = fmaxf(amax, fabsf(aq[i]));
    }
    assert_true(amax <= (float)(1.0 / sqrt(8.0)) && amax > 0.15f);

    /* reference state: random W, b, x, r, and random B (B = 0 would hide the A gradients) */
    ref_state s;
    rand_d(s.W, 3 * OD * OD, 11, -0.5, 0.5);
    rand_d(s.b, 3 * OD, 12, -0.1, 0.1);
    rand_d(s.Bq, OD * ORANK, 13, -1, 1);
    rand_d(s.Bv, OD * ORANK, 14, -1, 1);
    rand_d(s.x, ON * OD, 15, -1, 1);
    rand_d(s.r, ON * 3 * OD, 16, -1, 1);
    for (int i = 0; i < ORANK * OD; i++) s.Aq[i] = ((const float *)pAq->value.data)[i];
    for (int i = 0; i < ORANK * OD; i++) s.Av[i] = ((const float *)pAv->value.data)[i];
    float W[3 * OD * OD], x[ON * OD], r[ON * 3 * OD];
    to_f32(s.W, W, 3 * OD * OD);
    to_f32(s.b, o->qkv.b, 3 * OD);
    to_f32(s.Bq, pBq->value.data, OD * ORANK);
    to_f32(s.Bv, pBv->value.data, OD * ORANK);
    to_f32(s.x, x, ON * OD);
    to_f32(s.r, r, ON * 3 * OD);
    memcpy(o->qkv.w, W, sizeof W);

    /* forward against the reference */
    float out[ON * 3 * OD], out2[ON * 3 * OD], dinp[ON * OD];
    double yref[ON * 3 * OD];
    EXT_OK(ex_linear_forward(be, &o->qkv, out, x, ON, 1, 0, &err), &err);
    ref_forward(s.W, s.b, s.Aq, s.Bq, s.Av, s.Bv, s.x, yref);
    for (int i = 0; i < ON * 3 * OD; i++)
        if (fabs(out[i] - yref[i]) > 1e-5) fail_msg("forward[%d]: %.9g vs reference %.9g", i, (double)out[i], yref[i]);

    /* backward: L = sum(r * y); every gradient against finite differences of the reference */
    memset(plan->arenas[EX_MEM_GRAD].base, 0, plan->arenas[EX_MEM_GRAD].planned);
    memset(dinp, 0, sizeof dinp);
    EXT_OK(ex_linear_backward(be, &o->qkv, dinp, r, x, ON, &err), &err);
    fd_check(&s, s.Aq, ORANK * OD, pAq->grad.data, "dA_q");
    fd_check(&s, s.Bq, OD * ORANK, pBq->grad.data, "dB_q");
    fd_check(&s, s.Av, ORANK * OD, pAv->grad.data, "dA_v");
    fd_check(&s, s.Bv, OD * ORANK, pBv->grad.data, "dB_v");
    fd_check(&s, s.x, ON * OD, dinp, "dinp");
    /* backward accumulates: a second call doubles every gradient */
    float gAq[ORANK * OD];
    memcpy(gAq, pAq->grad.data, sizeof gAq);
    memset(dinp, 0, sizeof dinp);
    EXT_OK(ex_linear_backward(be, &o->qkv, dinp, r, x, ON, &err), &err);
    for (int i = 0; i < ORANK * OD; i++) assert_float_equal(((float *)pAq->grad.data)[i], 2 * gAq[i], 1e-6);
    /* without an input gradient or a trainable A only B's gradient is computed (no crash, same dB) */
    memset(plan->arenas[EX_MEM_GRAD].base, 0, plan->arenas[EX_MEM_GRAD].planned);
    EXT_OK(ex_linear_backward(be, &o->qkv, NULL, r, x, ON, &err), &err);
    fd_check(&s, s.Bv, OD * ORANK, pBv->grad.data, "dB_v (no dinp)");

    /* merge: same forward, k rows untouched, the hook adds nothing; unmerge restores W */
    EXT_OK(vt->merge(self, &err), &err);
    EXT_OK(vt->merge(self, &err), &err); /* idempotent */
    const float *wm = o->qkv.w;
    assert_memory_equal(wm + OD * OD, W + OD * OD, sizeof(float) * OD * OD); /* k rows */
    assert_memory_not_equal(wm, W, sizeof(float) * OD * OD);                 /* q rows changed */
    assert_memory_not_equal(wm + 2 * OD * OD, W + 2 * OD * OD, sizeof(float) * OD * OD);
    EXT_OK(ex_linear_forward(be, &o->qkv, out2, x, ON, 0, 0, &err), &err);
    ext_assert_close(out2, out, ON * 3 * OD, 1e-5, 0, "merged forward");
    /* training while merged is refused */
    assert_int_equal(ex_linear_backward(be, &o->qkv, dinp, r, x, ON, &err), EX_E_INVALID);
    assert_non_null(strstr(err.msg, "merged"));
    EXT_OK(vt->unmerge(self, &err), &err);
    ext_assert_close(o->qkv.w, W, 3 * OD * OD, 1e-6, 0, "unmerged weight");
    EXT_OK(ex_linear_forward(be, &o->qkv, out2, x, ON, 1, 0, &err), &err);
    ext_assert_close(out2, out, ON * 3 * OD, 1e-5, 0, "unmerged forward");

    /* more rows than planned is an error, not an overflow */
    float big[(ON + 1) * 3 * OD], bx[(ON + 1) * OD];
    memset(bx, 0, sizeof bx);
    assert_int_equal(ex_linear_forward(be, &o->qkv, big, bx, ON + 1, 1, 0, &err), EX_E_SHAPE);

    lora1_close(&t);
}

/* LoRA dropout on one layer whose base weight and bias are 0, so the output and the input gradient are the
 * adapters' alone: the training output is a function of the noise key; its gradients (input, A, B) match
 * central differences of the dropped-out forward (it is linear in each, so the differences are exact up to
 * rounding); averaged over many keys the output is the no-dropout output (inverted-dropout scaling). */
static void test_lora_dropout_layer(void **state) {
    (void)state;
    ex_err err;
    ex_err_clear(&err);
    lora1 t;
    lora1_open(&t, "[peft.lora]\nrank = 3\nalpha = 1.5\ntargets = q, v\ndropout = 0.5\n");
    ex_linear *l = &t.o.qkv;
    memset(l->w, 0, sizeof(float) * 3 * OD * OD);
    memset(l->b, 0, sizeof(float) * 3 * OD);
    ex_param *pAq = ex_params_find(&t.ps, "blocks.0.attn.qkv.lora_q.A"), *pBq = ex_params_find(&t.ps, "blocks.0.attn.qkv.lora_q.B");
    ex_param *pBv = ex_params_find(&t.ps, "blocks.0.attn.qkv.lora_v.B");
    ext_fill_uniform(pBq->value.data, OD * ORANK, 21, -1, 1);
    ext_fill_uniform(pBv->value.data, OD * ORANK, 22, -1, 1);
    enum { NY = ON * 3 * OD, NX = ON * OD };
    float x[NX], r[NY], y0[NY], y1[NY], y2[NY], dinp[NX];
    ext_fill_uniform(x, NX, 23, -1, 1);
    ext_fill_uniform(r, NY, 24, -1, 1);
    EXT_OK(ex_linear_forward(&t.be, l, y0, x, ON, 0, 0, &err), &err); /* inference: no dropout */
    EXT_OK(ex_linear_forward(&t.be, l, y1, x, ON, 1, 0xABC, &err), &err);
    EXT_OK(ex_linear_forward(&t.be, l, y2, x, ON, 1, 0xABC, &err), &err);
    assert_memory_equal(y1, y2, sizeof y1);
    int changed = 0;
    for (int i = 0; i < NY; i++) changed += y1[i] != y0[i];
    assert_true(changed > NY / 2);
    for (int i = 0; i < ON; i++) /* k columns: not adapted, the base's 0 */
        for (int j = OD; j < 2 * OD; j++) assert_true(y1[i * 3 * OD + j] == 0.0f);
    /* a training forward without a noise key is refused */
    assert_int_equal(ex_linear_forward(&t.be, l, y2, x, ON, 1, 0, &err), EX_E_INVALID);

    /* gradients of L = sum(r * y) at key 0xABC against central differences of that forward */
    memset(t.plan.arenas[EX_MEM_GRAD].base, 0, t.plan.arenas[EX_MEM_GRAD].planned);
    memset(dinp, 0, sizeof dinp);
    EXT_OK(ex_linear_forward(&t.be, l, y1, x, ON, 1, 0xABC, &err), &err);
    EXT_OK(ex_linear_backward(&t.be, l, dinp, r, x, ON, &err), &err);
    struct { float *v, *g; int n; const char *what; } checks[3] = {
        {x, dinp, NX, "dinp"}, {pAq->value.data, pAq->grad.data, ORANK * OD, "dA_q"}, {pBq->value.data, pBq->grad.data, OD * ORANK, "dB_q"}};
    for (int c = 0; c < 3; c++) {
        double gmax = 0;
        int zeros = 0;
        for (int i = 0; i < checks[c].n; i++) gmax = fmax(gmax, fabs(checks[c].g[i]));
        assert_true(gmax > 1e-2);
        for (int i = 0; i < checks[c].n; i++) {
            float *v = &checks[c].v[i];
            const float keep = *v, h = 0.25f;
            double L[2];
            for (int e = 0; e < 2; e++) {
                *v = keep + (e ? -h : h);
                EXT_OK(ex_linear_forward(&t.be, l, y2, x, ON, 1, 0xABC, &err), &err);
                L[e] = 0;
                for (int k = 0; k < NY; k++) L[e] += (double)r[k] * (double)y2[k];
            }
            *v = keep;
            const double fd = (L[0] - L[1]) / (2.0 * h);
            if (fabs(fd - checks[c].g[i]) > 1e-4 * gmax + 1e-4 * fabs(fd))
                fail_msg("%s[%d]: gradient %.7g, finite differences %.7g", checks[c].what, i, (double)checks[c].g[i], fd);
            zeros += checks[c].g[i] == 0.0f;
        }
        /* input entries dropped for both q and v (p = 0.25 each) get no gradient at all */
        if (c == 0) assert_true(zeros >= 1 && zeros < NX / 2);
    }

    /* the mean over many keys is the no-dropout output */
    static double mean[NY];
    const int K = 4000;
    for (int k = 0; k < K; k++) {
        EXT_OK(ex_linear_forward(&t.be, l, y2, x, ON, 1, 1000 + (uint64_t)k, &err), &err);
        for (int i = 0; i < NY; i++) mean[i] += (double)y2[i] / K;
    }
    double num = 0, den = 0;
    for (int i = 0; i < NY; i++) num += fabs(mean[i] - y0[i]), den += fabs(y0[i]);
    if (num / den > 0.04) fail_msg("mean over %d keys is %.3g (relative L1) from the no-dropout output", K, num / den);
    lora1_close(&t);
}

/* ------------------------------------------------------------------------------
 * The whole ViT from the fixture
 * ------------------------------------------------------------------------------ */

typedef struct vit_fx {
    pm p;
    ex_st_file *fx;
    float *images; /* (2, 3, 16, 16) */
    float *r;      /* (2, 17, 24) loss weights on every output token */
    uint64_t noise; /* the noise key of training forwards (adapter dropout), 0: none */
    int fd_train;   /* train flag of the finite-difference forwards (1 when dropout must stay on) */
} vit_fx;

#define FX_B 2
#define FX_T 17
#define FX_D 24

/* Build the tiny ViT with `peft_ini` (and `backbone_extra` keys in [backbone]), allocate (seed 5), load the
 * fixture's weights. */
static void vit_open_ex(vit_fx *v, const char *peft_ini, const char *backbone_extra) {
    memset(v, 0, sizeof *v);
    ex_err err;
    char ini[4096];
    snprintf(ini, sizeof ini, "[run]\nseed = 5\n%s" TINY_BACKBONE "%s", peft_ini, backbone_extra);
    if (pm_build(&v->p, ini, (ex_backbone_shape){FX_B, 16, 16, 0, 0, 0, 0, EX_F32}, &err) != EX_OK) fail_msg("%s", err.msg);
    EXT_OK(ex_model_allocate(&v->p.m, &err), &err);
    char fxpath[4096], path[4096];
    snprintf(fxpath, sizeof fxpath, "%s/../fixtures/vit_dinov2.safetensors", ext_env("EXPLORA_TEST_DATA_DIR"));
    EXT_OK(ex_st_open(&v->fx, fxpath, &err), &err);
    /* a weights-only copy: every fixture tensor that names a parameter */
    ex_st_writer *wr;
    EXT_OK(ex_st_writer_new(&wr, &err), &err);
    for (int i = 0; i < ex_st_count(v->fx); i++) {
        const ex_st_entry *e = ex_st_at(v->fx, i);
        if (!ex_params_find(&v->p.m.params, e->name)) continue;
        EXT_OK(ex_st_writer_add(wr, e->name, e->dtype, e->ndim, e->shape, ex_st_data(v->fx, e), &err), &err);
    }
    ext_tmp_path(path, sizeof path, "vit_weights.safetensors");
    EXT_OK(ex_st_writer_finish(wr, path, &err), &err);
    ex_st_writer_free(wr);
    EXT_OK(ex_model_load(&v->p.m, path, &err), &err);
    const ex_st_entry *e = ex_st_find(v->fx, "input");
    assert_non_null(e);
    v->images = malloc(sizeof(float) * FX_B * 3 * 16 * 16);
    EXT_OK(ex_st_read_f32(v->fx, e, v->images, FX_B * 3 * 16 * 16, &err), &err);
    v->r = malloc(sizeof(float) * FX_B * FX_T * FX_D);
    ext_fill_uniform(v->r, FX_B * FX_T * FX_D, 77, -1, 1);
}

static void vit_open(vit_fx *v, const char *peft_ini) { vit_open_ex(v, peft_ini, ""); }

static void vit_close(vit_fx *v) {
    free(v->images);
    free(v->r);
    ex_st_close(v->fx);
    pm_free(&v->p);
}

/* Forward; tokens copied to `tokens` (B*T*D) if non-NULL; returns L = sum(r * tokens) in double. */
static double vit_loss(vit_fx *v, int train, float *tokens) {
    ex_err err;
    ex_backbone_io io;
    memset(&io, 0, sizeof io);
    io.batch = FX_B, io.height = 16, io.width = 16, io.images = v->images, io.train = train;
    io.noise = train ? v->noise : 0;
    EXT_OK(v->p.m.vt->forward(v->p.m.self, &io, &err), &err);
    assert_int_equal(io.num_tokens, FX_T);
    double L = 0;
    for (int i = 0; i < FX_B * FX_T * FX_D; i++) L += (double)v->r[i] * (double)io.tokens[i];
    if (tokens) memcpy(tokens, io.tokens, sizeof(float) * FX_B * FX_T * FX_D);
    return L;
}

/* Forward (train) and backward of L into freshly zeroed gradients. */
static double vit_step_grads(vit_fx *v) {
    ex_err err;
    ex_arena *g = &v->p.m.plan.arenas[EX_MEM_GRAD];
    memset(g->base, 0, g->planned);
    double L = vit_loss(v, 1, NULL);
    EXT_OK(v->p.m.vt->backward(v->p.m.self, v->r, NULL, &err), &err);
    return L;
}

static const char *k_explora_tiny = "[peft]\nstack = unfreeze, lora\n[peft.unfreeze]\nblocks = -1\nnorms = true\n"
                                    "cls_token = true\n[peft.lora]\nrank = 4\n";

/* 3. LoRA starts as the identity: B = 0 gives exactly the base model's tokens. */
static void test_identity_at_init(void **state) {
    (void)state;
    float base[FX_B * FX_T * FX_D], adapted[FX_B * FX_T * FX_D], merged[FX_B * FX_T * FX_D];
    vit_fx v;
    vit_open(&v, "[peft]\nstack = unfreeze\n[peft.unfreeze]\nblocks = -1\nnorms = true\ncls_token = true\n");
    vit_loss(&v, 0, base);
    vit_close(&v);
    vit_open(&v, k_explora_tiny);
    vit_loss(&v, 1, adapted);
    for (int i = 0; i < FX_B * FX_T * FX_D; i++)
        if (adapted[i] != base[i]) fail_msg("token value %d: %.9g with LoRA at init, %.9g without", i, (double)adapted[i], (double)base[i]);
    /* the base forward is the fixture's (the backbone itself is tested in test_vit) */
    const ex_st_entry *e = ex_st_find(v.fx, "out.cls");
    float cls[FX_B * FX_D];
    ex_err err;
    EXT_OK(ex_st_read_f32(v.fx, e, cls, FX_B * FX_D, &err), &err);
    for (int b = 0; b < FX_B; b++) ext_assert_close(adapted + b * FX_T * FX_D, cls + b * FX_D, FX_D, 1e-4, 0, "cls token");
    /* merging zero adapters changes nothing */
    int li = 1; /* stack index of lora */
    const ex_peft_vtable *lv = &v.p.m.peft_plugin[li]->vtable_copy.peft;
    assert_string_equal(v.p.m.peft_plugin[li]->desc.name, "lora");
    EXT_OK(lv->merge(v.p.m.peft_self[li], &err), &err);
    vit_loss(&v, 0, merged);
    assert_memory_equal(merged, base, sizeof merged);
    EXT_OK(lv->unmerge(v.p.m.peft_self[li], &err), &err);
    vit_close(&v);
}

/* Download a parameter's values. */
static float *param_copy(const ex_param *p) {
    size_t n = (size_t)ex_tensor_numel(&p->value);
    float *c = malloc(sizeof(float) * n);
    memcpy(c, p->value.data, sizeof(float) * n);
    return c;
}

/* 2 (end). AdamW steps on the trainable parameters: frozen bytes never change, B leaves 0. */
static void test_adamw_steps_keep_frozen(void **state) {
    (void)state;
    vit_fx v;
    vit_open(&v, k_explora_tiny);
    ex_params *ps = &v.p.m.params;
    ex_backend *be = &v.p.be;
    ex_err err;
    /* frozen tensors: no gradient buffer; trainable ones: one */
    int nfrozen = 0, ntrain = 0;
    float **frozen_copy = calloc((size_t)ps->count, sizeof *frozen_copy);
    float **m = calloc((size_t)ps->count, sizeof *m), **vv = calloc((size_t)ps->count, sizeof *vv);
    for (int i = 0; i < ps->count; i++) {
        ex_param *p = ps->items[i];
        if (p->trainable) {
            ntrain++;
            assert_non_null(p->grad.data);
            if (p->grad_slot) assert_ptr_equal(*p->grad_slot, p->grad.data);
            size_t n = (size_t)ex_tensor_numel(&p->value);
            m[i] = calloc(n, sizeof(float));
            vv[i] = calloc(n, sizeof(float));
        } else {
            nfrozen++;
            assert_null(p->grad.data);
            if (p->grad_slot) assert_null(*p->grad_slot);
            frozen_copy[i] = param_copy(p);
        }
    }
    assert_true(nfrozen > 20 && ntrain > 20);
    /* the layers see it too */
    ex_linear *q0 = v.p.m.vt->site(v.p.m.self, "blocks.0.attn.qkv"), *q2 = v.p.m.vt->site(v.p.m.self, "blocks.2.attn.qkv");
    assert_null(q0->dw);
    assert_non_null(q2->dw);
    assert_non_null(q0->hooks);
    assert_null(q2->hooks);

    ex_adamw_params h = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.05f, 0};
    double first = 0, last = 0;
    for (int step = 1; step <= 3; step++) {
        double L = vit_step_grads(&v);
        if (step == 1) first = L;
        last = L;
        h.step = step;
        for (int i = 0; i < ps->count; i++) {
            ex_param *p = ps->items[i];
            if (!p->trainable) continue;
            assert_int_equal(be->vt.adamw(be->ctx, p->value.data, p->grad.data, m[i], vv[i], ex_tensor_numel(&p->value), &h),
                             EX_OK);
        }
    }
    double after = vit_loss(&v, 0, NULL);
    assert_true(fabs(after - first) > 1e-3 && fabs(last - first) > 1e-3);
    assert_true(after < first); /* descending sum(r * tokens) */
    for (int i = 0; i < ps->count; i++) {
        ex_param *p = ps->items[i];
        if (p->trainable) continue;
        if (memcmp(frozen_copy[i], p->value.data, sizeof(float) * (size_t)ex_tensor_numel(&p->value)) != 0)
            fail_msg("frozen parameter %s changed", p->value.name);
    }
    /* every LoRA B moved away from 0 */
    int nb = 0;
    for (int i = 0; i < ps->count; i++) {
        ex_param *p = ps->items[i];
        size_t len = strlen(p->value.name);
        if (strcmp(p->group, "lora") != 0 || p->value.name[len - 1] != 'B') continue;
        nb++;
        double s = 0;
        for (int64_t k = 0; k < ex_tensor_numel(&p->value); k++) s += fabs(((float *)p->value.data)[k]);
        if (!(s > 1e-3)) fail_msg("%s is still zero after 3 steps", p->value.name);
    }
    assert_int_equal(nb, 4); /* q and v of blocks 0 and 1 */
    (void)err;
    for (int i = 0; i < ps->count; i++) {
        free(frozen_copy[i]);
        free(m[i]);
        free(vv[i]);
    }
    free(frozen_copy);
    free(m);
    free(vv);
    vit_close(&v);
}

/* 4. Backbone gradients of every LoRA A and B against finite differences of the loss. */
/* Random B of every LoRA adapter (B = 0 would hide the gradients of A), from `seed` on. */
static void randomise_lora_b(vit_fx *v, uint64_t seed) {
    ex_params *ps = &v->p.m.params;
    for (int i = 0; i < ps->count; i++) {
        ex_param *p = ps->items[i];
        size_t len = strlen(p->value.name);
        if (strcmp(p->group, "lora") == 0 && p->value.name[len - 1] == 'B')
            ext_fill_uniform(p->value.data, (size_t)ex_tensor_numel(&p->value), seed++, -0.5f, 0.5f);
    }
}

/* Random B (else dL/dA = 0), then every LoRA tensor's gradient (its 3 largest entries and one fixed one)
 * against finite differences of the forward; plus, when `extra` names a parameter, that one too (a
 * gradient that flows back through the adapters' input). Returns the number of entries checked. */
static int check_lora_grads(vit_fx *v, const char *extra, int expect_params) {
    ex_params *ps = &v->p.m.params;
    randomise_lora_b(v, 100);
    vit_step_grads(v);
    int checked = 0, nparams = 0;
    for (int i = 0; i < ps->count; i++) {
        ex_param *p = ps->items[i];
        if (strcmp(p->group, "lora") != 0 && !(extra && strcmp(p->value.name, extra) == 0)) continue;
        nparams++;
        const int64_t n = ex_tensor_numel(&p->value);
        float *g = param_copy(p); /* the value array has the gradient's size */
        memcpy(g, p->grad.data, sizeof(float) * (size_t)n);
        float *w = p->value.data;
        /* the three largest gradient entries and one fixed entry */
        int64_t pick[4] = {-1, -1, -1, n / 2};
        for (int k = 0; k < 3; k++) {
            float best = -1;
            for (int64_t j = 0; j < n; j++) {
                int used = 0;
                for (int q = 0; q < k; q++) used |= pick[q] == j;
                if (!used && fabsf(g[j]) > best) best = fabsf(g[j]), pick[k] = j;
            }
        }
        double gmax = fabs(g[pick[0]]);
        assert_true(gmax > 1e-2);
        for (int k = 0; k < 4; k++) {
            const int64_t j = pick[k];
            const float keep = w[j];
            double d[2];
            const double hs[2] = {8e-2, 4e-2};
            for (int e = 0; e < 2; e++) {
                w[j] = keep + (float)hs[e];
                double lp = vit_loss(v, v->fd_train, NULL);
                w[j] = keep - (float)hs[e];
                double lm = vit_loss(v, v->fd_train, NULL);
                /* the step actually taken in fp32 */
                d[e] = (lp - lm) / ((double)(keep + (float)hs[e]) - (double)(keep - (float)hs[e]));
            }
            w[j] = keep;
            double fd = (4 * d[1] - d[0]) / 3; /* Richardson: O(h^4) */
            double rel = fabs(fd - g[j]) / fmax(fabs(fd), 1e-2 * gmax);
            if (rel > 1e-2)
                fail_msg("%s[%lld]: backbone gradient %.7g, finite differences %.7g (rel. error %.3g)", p->value.name,
                         (long long)j, (double)g[j], fd, rel);
            checked++;
        }
        free(g);
    }
    assert_int_equal(nparams, expect_params);
    return checked;
}

static void test_vit_lora_gradients(void **state) {
    (void)state;
    vit_fx v;
    vit_open(&v, k_explora_tiny);
    /* A and B of q and v in blocks 0 and 1 */
    assert_int_equal(check_lora_grads(&v, NULL, 8), 32);
    vit_close(&v);
}

/* LoRA dropout in a ViT: a training forward is a function of its noise key (same key, same tokens; another key,
 * other tokens; inference: no dropout), gradients match finite differences of the dropped-out forward (the
 * backward regenerates the forward's masks), and activation checkpointing recomputes the same masks. */
static const char *k_dropout_tiny = "[peft]\nstack = unfreeze, lora\n[peft.unfreeze]\nblocks = -1\nnorms = true\n"
                                    "cls_token = true\n[peft.lora]\nrank = 4\ndropout = 0.25\n";

static void test_vit_lora_dropout(void **state) {
    (void)state;
    enum { N = FX_B * FX_T * FX_D };
    static float plain[N], inf[N], a[N], b[N], c[N];
    vit_fx v;
    vit_open(&v, k_explora_tiny);
    randomise_lora_b(&v, 300);
    vit_loss(&v, 0, plain);
    vit_close(&v);

    vit_open(&v, k_dropout_tiny);
    randomise_lora_b(&v, 300);
    vit_loss(&v, 0, inf); /* inference: no dropout, whatever the key */
    assert_memory_equal(inf, plain, sizeof inf);
    ex_err err;
    ex_backbone_io io;
    memset(&io, 0, sizeof io);
    io.batch = FX_B, io.height = 16, io.width = 16, io.images = v.images, io.train = 1; /* no noise key */
    assert_int_equal(v.p.m.vt->forward(v.p.m.self, &io, &err), EX_E_INVALID);
    if (!strstr(err.msg, "dropout") || !strstr(err.msg, "noise")) fail_msg("%s", err.msg);
    v.noise = 0x1234;
    vit_loss(&v, 1, a);
    vit_loss(&v, 1, b);
    assert_memory_equal(a, b, sizeof a);
    v.noise = 0x1235;
    vit_loss(&v, 1, c);
    int differ = 0;
    for (int i = 0; i < N; i++) differ += c[i] != a[i];
    assert_true(differ > N / 2);
    double dev = 0;
    for (int i = 0; i < N; i++) dev = fmax(dev, fabs(a[i] - plain[i]));
    assert_true(dev > 1e-3); /* dropout did change the training forward */

    /* gradients of the dropped-out forward: every LoRA tensor, and the trainable norm1 of block 0, whose
     * gradient flows back through the adapters' masked input gradient */
    v.noise = 0x777;
    v.fd_train = 1;
    assert_int_equal(check_lora_grads(&v, "blocks.0.norm1.weight", 9), 36);
    vit_close(&v);

    /* activation checkpointing: the recomputed blocks draw the same masks, so every gradient is bitwise the same */
    vit_fx r;
    vit_open(&v, k_dropout_tiny);
    vit_open_ex(&r, k_dropout_tiny, "recompute = true\n");
    randomise_lora_b(&v, 300);
    randomise_lora_b(&r, 300);
    v.noise = r.noise = 0x99;
    vit_step_grads(&v);
    vit_step_grads(&r);
    int compared = 0;
    for (int i = 0; i < v.p.m.params.count; i++) {
        const ex_param *p = v.p.m.params.items[i], *q = r.p.m.params.items[i];
        assert_string_equal(p->value.name, q->value.name);
        if (!p->trainable) continue;
        if (memcmp(p->grad.data, q->grad.data, sizeof(float) * (size_t)ex_tensor_numel(&p->grad)) != 0)
            fail_msg("%s: gradients differ with recompute = true", p->value.name);
        compared++;
    }
    assert_true(compared > 20);
    vit_close(&v);
    vit_close(&r);
}

/* ------------------------------------------------------------------------------
 * 5. Config errors
 * ------------------------------------------------------------------------------ */

static void expect_error(const char *peft_ini, ex_status code, const char *s1, const char *s2) {
    char ini[4096];
    snprintf(ini, sizeof ini, "%s" TINY_BACKBONE, peft_ini);
    pm p;
    ex_err err;
    ex_status st = pm_build(&p, ini, (ex_backbone_shape){2, 16, 16, 0, 0, 0, 0, EX_F32}, &err);
    if (st == EX_OK) fail_msg("expected an error for:\n%s", peft_ini);
    if (st != code) fail_msg("status %s instead of %s: %s", ex_status_name(st), ex_status_name(code), err.msg);
    if (!strstr(err.msg, s1) || (s2 && !strstr(err.msg, s2)))
        fail_msg("message lacks '%s'%s%s: %s", s1, s2 ? " or " : "", s2 ? s2 : "", err.msg);
    pm_free(&p);
}

static void test_config_errors(void **state) {
    (void)state;
    expect_error("[peft]\nstack = lora\n[peft.lora]\ntargets = q, qq\n", EX_E_CONFIG, "targets", "'qq'");
    expect_error("[peft]\nstack = lora\n[peft.lora]\nrank = 0\n", EX_E_CONFIG, "rank", "0");
    expect_error("[peft]\nstack = lora\n[peft.lora]\nrank = 5000\n", EX_E_CONFIG, "rank", "5000");
    expect_error("[peft]\nstack = lora\n[peft.lora]\nblocks = 0, 3\n", EX_E_CONFIG, "[peft.lora] blocks", "block 3");
    expect_error("[peft]\nstack = lora\n[peft.lora]\nblocks = -4\n", EX_E_CONFIG, "blocks", "-4");
    expect_error("[peft]\nstack = unfreeze\n[peft.unfreeze]\nblocks = 7\n", EX_E_CONFIG, "[peft.unfreeze] blocks",
                 "block 7");
    expect_error("[peft]\nstack = lora\n[peft.lora]\nalpha = 0\n", EX_E_CONFIG, "alpha", NULL);
    expect_error("[peft]\nstack = lora\n[peft.lora]\ndropout = 0.95\n", EX_E_CONFIG, "dropout", "0.95");
    expect_error("[peft]\nstack = lora\n[peft.lora]\nranks = 4\n", EX_E_CONFIG, "ranks", NULL);
    expect_error("[peft]\nstack = unfreeze\n[peft.unfreeze]\nregister_tokens = true\n", EX_E_CONFIG,
                 "register_tokens = true", NULL);
    expect_error("[peft]\nstack = unfreeze, lora\n[peft.unfreeze]\nall = true\n", EX_E_CONFIG, "adapts nothing", NULL);
    expect_error("[peft]\nstack = lorax\n", EX_E_PLUGIN, "lorax", NULL);
    /* a model without LayerScale has nothing for layerscale = true */
    pm p;
    ex_err err;
    const char *ini = "[peft]\nstack = unfreeze\n[peft.unfreeze]\nlayerscale = true\n"
                      "[backbone]\nname = vit\ndim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\nlayerscale = off\n";
    assert_int_equal(pm_build(&p, ini, (ex_backbone_shape){2, 16, 16, 0, 0, 0, 0, EX_F32}, &err), EX_E_CONFIG);
    assert_non_null(strstr(err.msg, "layerscale = true"));
    pm_free(&p);
}

/* ------------------------------------------------------------------------------
 * 6. Deterministic initialisation
 * ------------------------------------------------------------------------------ */

/* Every LoRA A, concatenated in registration order (n floats); B must be zero. */
static float *lora_A_after_init(uint64_t seed, size_t *n) {
    char ini[1024];
    snprintf(ini, sizeof ini, "[run]\nseed = %llu\n[peft]\nstack = lora\n[peft.lora]\nrank = 4\ntargets = q, v, fc2\n" TINY_BACKBONE,
             (unsigned long long)seed);
    pm p;
    ex_err err;
    if (pm_build(&p, ini, (ex_backbone_shape){1, 16, 16, 0, 0, 0, 0, EX_F32}, &err) != EX_OK) fail_msg("%s", err.msg);
    EXT_OK(ex_model_allocate(&p.m, &err), &err);
    size_t total = 0;
    for (int i = 0; i < p.m.params.count; i++)
        if (strcmp(p.m.params.items[i]->group, "lora") == 0) total += (size_t)ex_tensor_numel(&p.m.params.items[i]->value);
    float *out = malloc(sizeof(float) * total);
    size_t k = 0;
    for (int i = 0; i < p.m.params.count; i++) {
        const ex_param *q = p.m.params.items[i];
        if (strcmp(q->group, "lora") != 0) continue;
        const size_t len = strlen(q->value.name), m = (size_t)ex_tensor_numel(&q->value);
        const float *d = q->value.data;
        if (q->value.name[len - 1] == 'B') {
            for (size_t j = 0; j < m; j++) assert_true(d[j] == 0.0f);
            continue;
        }
        /* A (4, in): bound 1/sqrt(in), in = 24 (q, v) or 96 (fc2) */
        const double bound = 1.0 / sqrt((double)q->value.shape[1]);
        double mx = 0, mean = 0;
        for (size_t j = 0; j < m; j++) {
            mx = fmax(mx, fabs(d[j]));
            mean += d[j];
        }
        assert_true(mx <= bound && mx > 0.9 * bound);
        assert_true(fabs(mean / (double)m) < 0.25 * bound);
        memcpy(out + k, d, sizeof(float) * m);
        k += m;
    }
    *n = k;
    pm_free(&p);
    return out;
}

static void test_init_determinism(void **state) {
    (void)state;
    size_t n1, n2, n3;
    float *a = lora_A_after_init(7, &n1), *b = lora_A_after_init(7, &n2), *c = lora_A_after_init(8, &n3);
    assert_int_equal(n1, 3 * 2 * 4 * 24 + 3 * 4 * 96);
    assert_int_equal(n1, n2);
    assert_int_equal(n1, n3);
    assert_memory_equal(a, b, n1 * sizeof(float));
    size_t same = 0;
    for (size_t i = 0; i < n1; i++) same += a[i] == c[i];
    assert_true(same < n1 / 100);
    free(a);
    free(b);
    free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_vitb14),
        cmocka_unit_test(test_counts_vitl14),
        cmocka_unit_test(test_stack_rules),
        cmocka_unit_test(test_lora_layer),
        cmocka_unit_test(test_lora_dropout_layer),
        cmocka_unit_test(test_identity_at_init),
        cmocka_unit_test(test_adamw_steps_keep_frozen),
        cmocka_unit_test(test_vit_lora_gradients),
        cmocka_unit_test(test_vit_lora_dropout),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_init_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
