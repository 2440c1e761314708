/*
 * core/cli/cli_analyze.c — `explora analyze A.ini [B.ini ...] [--out DIR]`:
 * the paper's per-block analysis of one or more models on target-domain
 * images (what exactly is computed: docs/ANALYSIS.md). For every config:
 * its [backbone] (plus [analyze] checkpoint, adapters merged) runs over
 * [analyze] images images of [eval_data] or [data] through the evaluation
 * transform, and for every block the patch tokens give
 *   - the covariance spectrum: per image the mean of the top-k eigenvalues,
 *     then mean and std over the images (analyze_stats.c, LAPACKE),
 *   - a linear probe from a patch token to its patch index (position),
 *   - a linear probe from a patch token to its image's label (class),
 * and the last block's cls->patch attention (the backbone's `attention`
 * slot) is drawn over the first images, per head and averaged over heads.
 * Written to DIR (default ./analysis): analyze.csv, analyze.md, one line
 * plot per measure (plot_*.png, one curve per model) and attention_*.png.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "analyze.h"
#include "cli.h"
#include "explora/augment.h"
#include "explora/fileio.h"
#include "explora/model.h"

#define AN_MAX_K 8

/* The results of one model. */
typedef struct an_result {
    char name[128];
    int64_t depth, nk, ks[AN_MAX_K];
    double *eig_mean, *eig_std; /* (depth, nk) */
    double *pos_acc, *cls_acc;  /* (depth); NAN when not measured */
    int64_t images, train_images, test_images, patches, classes;
} an_result;

static void result_free(an_result *r) {
    free(r->eig_mean);
    free(r->eig_std);
    free(r->pos_acc);
    free(r->cls_acc);
    memset(r, 0, sizeof *r);
}

/* Settings of one config's [analyze], [transform], [optim] batch and [run] seed. */
typedef struct an_settings {
    char checkpoint[4096];
    const char *section; /* "data" or "eval_data" */
    int64_t images, nk, ks[AN_MAX_K], attention_images, memory_mb, batch, resize;
    double test_fraction, mean[16], std[16];
    int norm;
    an_probe_opts probe;
} an_settings;

static ex_status read_settings(const cli_args *a, const ex_session *s, an_settings *o, ex_err *err) {
    memset(o, 0, sizeof *o);
    const ex_cfg_section an = {s->config, "analyze", ex_core_analyze_keys()};
    const ex_cfg_section run = {s->config, "run", ex_core_run_keys()};
    const ex_cfg_section tf = {s->config, "transform", ex_core_transform_keys()};
    const ex_cfg_section optim = {s->config, "optim", ex_core_optim_keys()};
    int which, feat, nm, ns, nk;
    int64_t seed;
    EX_CHECK(ex_cfg_path(&an, "checkpoint", o->checkpoint, sizeof o->checkpoint, err));
    if (a->checkpoint) snprintf(o->checkpoint, sizeof o->checkpoint, "%s", a->checkpoint);
    EX_CHECK(ex_cfg_enum(&an, "data", &which, err));
    o->section = which == 1 ? "data" : which == 2 ? "eval_data" : ex_config_has_section(s->config, "eval_data") ? "eval_data" : "data";
    EX_ENSURE(ex_config_has_section(s->config, o->section), err, EX_E_CONFIG,
              "[analyze] data = %s, but the config has no [%s] section", o->section, o->section);
    EX_CHECK(ex_cfg_int(&an, "images", &o->images, err));
    EX_CHECK(ex_cfg_float(&an, "test_fraction", &o->test_fraction, err));
    EX_CHECK(ex_cfg_int_list(&an, "topk", o->ks, AN_MAX_K, &nk, err));
    o->nk = nk;
    EX_ENSURE(nk >= 1, err, EX_E_CONFIG, "[analyze] topk needs at least one k");
    EX_CHECK(ex_cfg_enum(&an, "features", &feat, err));
    o->norm = feat == 0;
    EX_CHECK(ex_cfg_float_list(&an, "probe_lrs", o->probe.lrs, 16, &o->probe.nlrs, err));
    EX_ENSURE(o->probe.nlrs >= 1, err, EX_E_CONFIG, "[analyze] probe_lrs needs at least one learning rate");
    EX_CHECK(ex_cfg_int(&an, "probe_epochs", &o->probe.epochs, err));
    EX_CHECK(ex_cfg_int(&an, "probe_batch", &o->probe.batch, err));
    EX_CHECK(ex_cfg_int(&an, "attention_images", &o->attention_images, err));
    EX_CHECK(ex_cfg_int(&an, "memory_mb", &o->memory_mb, err));
    EX_CHECK(ex_cfg_int(&run, "seed", &seed, err));
    o->probe.seed = (uint64_t)seed;
    EX_CHECK(ex_cfg_int(&optim, "batch", &o->batch, err));
    EX_CHECK(ex_cfg_int(&tf, "resize", &o->resize, err));
    EX_CHECK(ex_cfg_float_list(&tf, "mean", o->mean, 16, &nm, err));
    EX_CHECK(ex_cfg_float_list(&tf, "std", o->std, 16, &ns, err));
    EX_ENSURE(nm == ns, err, EX_E_CONFIG, "[transform] mean and std differ in length");
    return EX_OK;
}

/* The name of a model: [analyze] name, else the config file's name without its extension. */
static void model_name(const ex_session *s, const char *ini, char *out, size_t cap) {
    const char *n = ex_config_raw(s->config, "analyze", "name");
    if (n && *n) {
        snprintf(out, cap, "%s", n);
        return;
    }
    const char *base = strrchr(ini, '/');
    snprintf(out, cap, "%s", base ? base + 1 : ini);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = '\0';
}

/* The images: normalised (C, H, W) each, labels, and the grayscale crops of the first natt. */
typedef struct an_images {
    int64_t n, C, H, W, natt;
    float *chw;    /* (n, C, H, W) */
    int64_t *labels;
    float *gray;   /* (natt, H, W) in [0, 1] */
} an_images;

static void images_free(an_images *im) {
    free(im->chw);
    free(im->labels);
    free(im->gray);
    memset(im, 0, sizeof *im);
}

static ex_status load_images(const ex_dataset_vtable *vt, void *ds, const an_settings *o, int64_t C, int64_t H, int64_t W,
                             an_images *im, ex_err *err) {
    memset(im, 0, sizeof *im);
    const int64_t len = vt->length(ds);
    EX_ENSURE(len >= 2, err, EX_E_INVALID, "the dataset has %lld images; the analysis needs at least 2", (long long)len);
    im->n = o->images < len ? o->images : len;
    im->C = C, im->H = H, im->W = W;
    im->natt = o->attention_images < im->n ? o->attention_images : im->n;
    im->chw = malloc(sizeof(float) * (size_t)(im->n * C * H * W));
    im->labels = malloc(sizeof(int64_t) * (size_t)im->n);
    im->gray = malloc(sizeof(float) * (size_t)((im->natt > 0 ? im->natt : 1) * H * W));
    float *crop = malloc(sizeof(float) * (size_t)(H * W * 16));
    ex_status st = EX_OK;
    if (!im->chw || !im->labels || !im->gray || !crop)
        EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "out of memory for %lld images", (long long)im->n);
    for (int64_t i = 0; i < im->n && st == EX_OK; i++) {
        ex_sample s;
        memset(&s, 0, sizeof s);
        const int64_t idx = an_pick(i, im->n, len);
        st = vt->get(ds, idx, &s, err);
        if (st == EX_OK && (s.channels < 1 || s.channels > 16))
            st = ex_err_set(err, EX_E_SHAPE, __FILE__, __LINE__, "sample has %d channels", s.channels);
        if (st == EX_OK) {
            const float *src = s.pixels;
            if (o->resize > 0) {
                st = ex_resize_center_crop(s.pixels, s.height, s.width, s.channels, o->resize, EX_FILTER_BICUBIC, 0, crop, H,
                                           W, err);
                src = crop;
            } else if (s.height != H || s.width != W) {
                st = ex_err_set(err, EX_E_SHAPE, __FILE__, __LINE__, "sample '%s' is %dx%d, the model takes %lldx%lld.", s.id,
                                s.height, s.width, (long long)H, (long long)W);
                ex_err_hint(err, "set [transform] resize to resize and centre-crop.");
            }
            if (st == EX_OK) st = ex_normalize_chw(src, H, W, s.channels, C, o->mean, o->std, im->chw + i * C * H * W, err);
            if (st == EX_OK && i < im->natt)
                for (int64_t p = 0; p < H * W; p++) {
                    const float *px = src + p * s.channels;
                    im->gray[i * H * W + p] =
                        s.channels >= 3 ? 0.299f * px[0] + 0.587f * px[1] + 0.114f * px[2] : px[0];
                }
        }
        im->labels[i] = s.label;
        ex_sample_clear(&s);
        if (st != EX_OK) ex_err_prefix(err, "image %lld (dataset index %lld): ", (long long)i, (long long)idx);
    }
done:
    free(crop);
    if (st != EX_OK) images_free(im);
    return st;
}

static void layernorm_row(const float *x, const float *w, const float *b, int64_t d, float *out) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; i++) mean += x[i];
    mean /= (double)d;
    for (int64_t i = 0; i < d; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
    const double rstd = 1.0 / sqrt(var / (double)d + 1e-6);
    for (int64_t i = 0; i < d; i++) out[i] = (float)(((double)x[i] - mean) * rstd * (double)w[i] + (double)b[i]);
}

static void sanitize(const char *in, char *out, size_t cap) {
    size_t k = 0;
    for (; *in && k + 1 < cap; in++)
        out[k++] = ((*in >= 'a' && *in <= 'z') || (*in >= 'A' && *in <= 'Z') || (*in >= '0' && *in <= '9') || *in == '-' ||
                    *in == '_')
                       ? *in
                       : '_';
    out[k] = '\0';
}

/* One PNG per image: [image | mean over heads | head 0 | head 1 | ...], labelled. */
static ex_status write_attention(const char *dir, const char *model, const an_images *im, const float *att, int64_t heads,
                                 int64_t gh, int64_t gw, ex_err *err) {
    const int64_t side = im->H > im->W ? im->H : im->W;
    const int scale = side >= 96 ? 1 : (int)((96 + side - 1) / side);
    const int tw = (int)im->W * scale, th = (int)im->H * scale, pad = 4, top = 16;
    const int ntiles = (int)heads + 2, Wc = ntiles * (tw + pad) + pad, Hc = th + top + pad;
    const int64_t Np = gh * gw;
    float *mean = malloc(sizeof(float) * (size_t)Np);
    EX_ENSURE(mean, err, EX_E_NOMEM, "out of memory");
    char safe[128], path[4400], label[32];
    sanitize(model, safe, sizeof safe);
    static const uint8_t white[3] = {255, 255, 255}, black[3] = {0, 0, 0};
    ex_status st = EX_OK;
    for (int64_t i = 0; i < im->natt && st == EX_OK; i++) {
        const float *a = att + i * heads * Np;
        for (int64_t p = 0; p < Np; p++) {
            double acc = 0;
            for (int64_t h = 0; h < heads; h++) acc += a[h * Np + p];
            mean[p] = (float)(acc / (double)heads);
        }
        an_canvas c;
        st = an_canvas_new(&c, Wc, Hc, white, err);
        if (st != EX_OK) break;
        const float *gray = im->gray + i * im->H * im->W;
        for (int t = 0; t < ntiles; t++) {
            const int x = pad + t * (tw + pad);
            const float *map = t == 0 ? NULL : t == 1 ? mean : a + (t - 2) * Np;
            if (t == 0) snprintf(label, sizeof label, "IMAGE");
            else if (t == 1) snprintf(label, sizeof label, "MEAN");
            else snprintf(label, sizeof label, "H%d", t - 2);
            an_text(&c, x, 4, label, 1, black);
            an_overlay(&c, x, top, tw, th, gray, im->H, im->W, map, gh, gw, 0.5);
        }
        snprintf(path, sizeof path, "%s/attention_%s_%03lld.png", dir, safe, (long long)i);
        st = an_png_write(path, c.px, c.w, c.h, err);
        an_canvas_free(&c);
    }
    free(mean);
    return st;
}

/* Gather the patch tokens of the train or test images of one block: x (rows, D), y (rows). */
static void gather(const float *blk, const an_images *im, int64_t Np, int64_t D, double frac, int want_test, int by_class,
                   float *x, int64_t *y, int64_t *rows) {
    int64_t r = 0;
    for (int64_t i = 0; i < im->n; i++) {
        if (an_is_test(i, im->n, frac) != want_test) continue;
        memcpy(x + r * D, blk + i * Np * D, sizeof(float) * (size_t)(Np * D));
        for (int64_t p = 0; p < Np; p++) y[r + p] = by_class ? im->labels[i] : p;
        r += Np;
    }
    *rows = r;
}

static ex_status analyze_model(const cli_args *a, const char *ini, const char *outdir, an_result *res, ex_err *err) {
    ex_session s;
    ex_session_options opt = a->session;
    opt.config_path = ini;
    EX_CHECK(ex_session_open(&s, &opt, err));
    ex_backend be;
    int have_be = 0, have_ds = 0;
    ex_model m;
    memset(&m, 0, sizeof m);
    an_images im;
    memset(&im, 0, sizeof im);
    an_settings o;
    const ex_dataset_vtable *vt = NULL;
    void *ds = NULL;
    float *cache = NULL, *host = NULL, *normw = NULL, *att = NULL, *probs = NULL, *xtr = NULL, *xte = NULL;
    int64_t *ytr = NULL, *yte = NULL;
    double *vals = NULL, *tk = NULL;
    void *dev = NULL;
    ex_status st = EX_OK;
    EX_CHECK_GOTO(ex_session_validate(&s, err), st, done);
    EX_CHECK_GOTO(ex_session_backend(&s, &be, err), st, done);
    have_be = 1;
    EX_CHECK_GOTO(read_settings(a, &s, &o, err), st, done);
    model_name(&s, ini, res->name, sizeof res->name);

    /* the model */
    int64_t H, W;
    EX_CHECK_GOTO(ex_model_image_size(&s, &H, &W, err), st, done);
    ex_backbone_shape shape = {o.batch, H, W, 0, 0, 0, 0, EX_F32}; /* not inference-only: attention() reads every block */
    EX_CHECK_GOTO(ex_model_build(&m, &s, &be, &shape, err), st, done);
    EX_CHECK_GOTO(ex_model_allocate(&m, err), st, done);
    EX_CHECK_GOTO(ex_model_load(&m, NULL, err), st, done);
    if (o.checkpoint[0]) {
        int n = 0;
        EX_CHECK_GOTO(ex_model_load_trained(&m, o.checkpoint, NULL, &n, err), st, done);
        printf("%s: loaded %d trained tensors from %s\n", res->name, n, o.checkpoint);
    }
    for (int i = 0; i < m.npeft; i++) {
        const ex_peft_vtable *v = &m.peft_plugin[i]->vtable_copy.peft;
        if (v->merge) EX_CHECK_GOTO(v->merge(m.peft_self[i], err), st, done);
    }
    if (!m.vt->block_output)
        EX_FAIL_GOTO(err, st, done, EX_E_UNSUPPORTED, "backbone '%s' does not expose block outputs", m.plugin->desc.name);
    const int64_t D = m.info.dim, C = m.info.channels, depth = m.info.depth, heads = m.info.heads, P = m.info.patch;
    const int64_t first = 1 + m.info.registers, gh = H / P, gw = W / P, Np = gh * gw, T = first + Np;
    const ex_param *nw = ex_params_find(&m.params, "norm.weight"), *nb = ex_params_find(&m.params, "norm.bias");
    if (o.norm && (!nw || !nb))
        EX_FAIL_GOTO(err, st, done, EX_E_UNSUPPORTED, "[analyze] features = norm, but the backbone has no final norm");

    /* the images */
    const ex_plugin *dp;
    ex_cfg_section dview;
    EX_CHECK_GOTO(ex_session_plugin(&s, o.section, EX_PLUGIN_DATASET, NULL, &dp, &dview, err), st, done);
    vt = &dp->vtable_copy.dataset;
    EX_CHECK_GOTO(vt->open(&dview, &ds, err), st, done);
    have_ds = 1;
    int64_t classes = vt->num_classes ? vt->num_classes(ds) : 0;
    EX_CHECK_GOTO(load_images(vt, ds, &o, C, H, W, &im, err), st, done);
    int labelled = 1;
    for (int64_t i = 0; i < im.n; i++) {
        if (im.labels[i] < 0) labelled = 0;
        if (im.labels[i] + 1 > classes) classes = im.labels[i] + 1;
    }
    int64_t ntest_img = 0;
    for (int64_t i = 0; i < im.n; i++) ntest_img += an_is_test(i, im.n, o.test_fraction);
    res->depth = depth;
    res->nk = o.nk;
    memcpy(res->ks, o.ks, sizeof o.ks);
    res->images = im.n;
    res->test_images = ntest_img;
    res->train_images = im.n - ntest_img;
    res->patches = Np;
    res->classes = labelled ? classes : 0;
    res->eig_mean = malloc(sizeof(double) * (size_t)(depth * o.nk));
    res->eig_std = malloc(sizeof(double) * (size_t)(depth * o.nk));
    res->pos_acc = malloc(sizeof(double) * (size_t)depth);
    res->cls_acc = malloc(sizeof(double) * (size_t)depth);
    printf("%s: %lld images of [%s] (%lld train / %lld test for the probes), %lld blocks, %lld patches of %lld features%s\n",
           res->name, (long long)im.n, o.section, (long long)res->train_images, (long long)res->test_images, (long long)depth,
           (long long)Np, (long long)D, o.norm ? " (final norm applied)" : "");

    /* block passes that fit [analyze] memory_mb */
    const double block_bytes = (double)im.n * (double)Np * (double)D * sizeof(float);
    int64_t per_pass = (int64_t)((double)o.memory_mb * 1048576.0 / block_bytes);
    if (per_pass < 1) per_pass = 1;
    if (per_pass > depth) per_pass = depth;
    const int64_t ntr_rows = res->train_images * Np, nte_rows = res->test_images * Np;
    cache = malloc(sizeof(float) * (size_t)(per_pass * im.n * Np * D));
    host = malloc(sizeof(float) * (size_t)(o.batch * T * D));
    normw = malloc(sizeof(float) * (size_t)(2 * D));
    att = malloc(sizeof(float) * (size_t)((im.natt > 0 ? im.natt : 1) * heads * Np));
    probs = malloc(sizeof(float) * (size_t)(o.batch * heads * T));
    xtr = malloc(sizeof(float) * (size_t)(ntr_rows * D));
    xte = malloc(sizeof(float) * (size_t)(nte_rows * D));
    ytr = malloc(sizeof(int64_t) * (size_t)ntr_rows);
    yte = malloc(sizeof(int64_t) * (size_t)nte_rows);
    vals = malloc(sizeof(double) * (size_t)(o.nk * im.n));
    tk = malloc(sizeof(double) * (size_t)o.nk);
    if (!res->eig_mean || !res->eig_std || !res->pos_acc || !res->cls_acc || !cache || !host || !normw || !att || !probs ||
        !xtr || !xte || !ytr || !yte || !vals || !tk)
        EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "out of memory for the tokens of %lld images (lower [analyze] memory_mb or images)",
                     (long long)im.n);
    if (o.norm) {
        EX_CHECK_GOTO(ex_be_download(&be, normw, nw->value.data, sizeof(float) * (size_t)D, err), st, done);
        EX_CHECK_GOTO(ex_be_download(&be, normw + D, nb->value.data, sizeof(float) * (size_t)D, err), st, done);
    }
    EX_CHECK_GOTO(ex_be_alloc(&be, sizeof(float) * (size_t)(o.batch * C * H * W), &dev, err), st, done);
    const int want_att = im.natt > 0 && m.vt->attention;
    if (im.natt > 0 && !m.vt->attention)
        printf("%s: backbone '%s' does not expose attention probabilities; no attention maps\n", res->name, m.plugin->desc.name);

    for (int64_t b0 = 0; b0 < depth; b0 += per_pass) {
        const int64_t nbp = depth - b0 < per_pass ? depth - b0 : per_pass;
        for (int64_t start = 0; start < im.n; start += o.batch) {
            const int64_t bsz = im.n - start < o.batch ? im.n - start : o.batch;
            EX_CHECK_GOTO(ex_be_upload(&be, dev, im.chw + start * C * H * W, sizeof(float) * (size_t)(bsz * C * H * W), err),
                          st, done);
            ex_backbone_io io;
            memset(&io, 0, sizeof io);
            io.batch = bsz, io.height = H, io.width = W, io.images = dev, io.train = 0;
            EX_CHECK_GOTO(m.vt->forward(m.self, &io, err), st, done);
            if (io.num_tokens != T)
                EX_FAIL_GOTO(err, st, done, EX_E_SHAPE, "the backbone gave %lld tokens, expected %lld", (long long)io.num_tokens,
                             (long long)T);
            for (int64_t j = 0; j < nbp; j++) {
                const float *bo = m.vt->block_output(m.self, b0 + j);
                if (!bo) EX_FAIL_GOTO(err, st, done, EX_E_INTERNAL, "no output of block %lld", (long long)(b0 + j));
                EX_CHECK_GOTO(ex_be_download(&be, host, bo, sizeof(float) * (size_t)(bsz * T * D), err), st, done);
                for (int64_t k = 0; k < bsz; k++)
                    for (int64_t p = 0; p < Np; p++) {
                        const float *src = host + (k * T + first + p) * D;
                        float *dst = cache + ((j * im.n + start + k) * Np + p) * D;
                        if (o.norm) layernorm_row(src, normw, normw + D, D, dst);
                        else memcpy(dst, src, sizeof(float) * (size_t)D);
                    }
            }
            if (b0 == 0 && want_att && start < im.natt) {
                EX_CHECK_GOTO(m.vt->attention(m.self, depth - 1, probs, err), st, done);
                for (int64_t k = 0; k < bsz && start + k < im.natt; k++)
                    for (int64_t h = 0; h < heads; h++)
                        for (int64_t p = 0; p < Np; p++)
                            att[((start + k) * heads + h) * Np + p] = probs[(k * heads + h) * T + first + p];
            }
        }
        for (int64_t j = 0; j < nbp; j++) {
            const int64_t blk = b0 + j;
            const float *tok = cache + j * im.n * Np * D;
            /* spectrum: per image, then mean and std over images */
            for (int64_t i = 0; i < im.n; i++) {
                EX_CHECK_GOTO(an_spectrum_topk(tok + i * Np * D, Np, D, o.ks, (int)o.nk, tk, err), st, done);
                for (int64_t k = 0; k < o.nk; k++) vals[k * im.n + i] = tk[k];
            }
            for (int64_t k = 0; k < o.nk; k++)
                an_mean_std(vals + k * im.n, im.n, &res->eig_mean[blk * o.nk + k], &res->eig_std[blk * o.nk + k]);
            /* probes */
            int64_t r1, r2;
            res->pos_acc[blk] = NAN;
            res->cls_acc[blk] = NAN;
            if (Np >= 2) {
                gather(tok, &im, Np, D, o.test_fraction, 0, 0, xtr, ytr, &r1);
                gather(tok, &im, Np, D, o.test_fraction, 1, 0, xte, yte, &r2);
                EX_CHECK_GOTO(an_token_probe(&be, xtr, ytr, r1, xte, yte, r2, D, Np, &o.probe, &res->pos_acc[blk], err), st,
                              done);
            }
            if (labelled && classes >= 2) {
                gather(tok, &im, Np, D, o.test_fraction, 0, 1, xtr, ytr, &r1);
                gather(tok, &im, Np, D, o.test_fraction, 1, 1, xte, yte, &r2);
                EX_CHECK_GOTO(an_token_probe(&be, xtr, ytr, r1, xte, yte, r2, D, classes, &o.probe, &res->cls_acc[blk], err),
                              st, done);
            }
            printf("%s: block %lld/%lld: top-%lld eigenvalue mean %.4g (std %.3g), position %.1f%%, class %.1f%%\n", res->name,
                   (long long)blk, (long long)(depth - 1), (long long)o.ks[0], res->eig_mean[blk * o.nk],
                   res->eig_std[blk * o.nk], res->pos_acc[blk], res->cls_acc[blk]);
            fflush(stdout);
        }
    }
    if (want_att) {
        EX_CHECK_GOTO(write_attention(outdir, res->name, &im, att, heads, gh, gw, err), st, done);
        printf("%s: attention maps of %lld images in %s/attention_*.png\n", res->name, (long long)im.natt, outdir);
    }
done:
    if (st != EX_OK) ex_err_prefix(err, "%s: ", ini);
    if (dev) ex_be_free(&be, dev);
    free(cache);
    free(host);
    free(normw);
    free(att);
    free(probs);
    free(xtr);
    free(xte);
    free(ytr);
    free(yte);
    free(vals);
    free(tk);
    images_free(&im);
    if (have_ds) vt->close(ds);
    ex_model_free(&m);
    if (have_be) ex_backend_destroy(&be);
    ex_session_close(&s);
    return st;
}

static void fmt_num(char *buf, size_t cap, double v, const char *f) {
    if (!isfinite(v)) snprintf(buf, cap, "-");
    else snprintf(buf, cap, f, v);
}

static ex_status write_tables(const char *dir, const an_result *r, int nr, ex_err *err) {
    char path[4400], b1[64];
    ex_atomic_file f;
    snprintf(path, sizeof path, "%s/analyze.csv", dir);
    EX_CHECK(ex_atomic_open(&f, path, err));
    fprintf(f.fp, "model,block");
    for (int64_t k = 0; k < r[0].nk; k++) fprintf(f.fp, ",eig_top%lld_mean,eig_top%lld_std", (long long)r[0].ks[k], (long long)r[0].ks[k]);
    fprintf(f.fp, ",position_acc,class_acc\n");
    for (int i = 0; i < nr; i++)
        for (int64_t b = 0; b < r[i].depth; b++) {
            fprintf(f.fp, "%s,%lld", r[i].name, (long long)b);
            for (int64_t k = 0; k < r[i].nk; k++)
                fprintf(f.fp, ",%.6g,%.6g", r[i].eig_mean[b * r[i].nk + k], r[i].eig_std[b * r[i].nk + k]);
            fmt_num(b1, sizeof b1, r[i].pos_acc[b], "%.2f");
            fprintf(f.fp, ",%s", isfinite(r[i].pos_acc[b]) ? b1 : "");
            fmt_num(b1, sizeof b1, r[i].cls_acc[b], "%.2f");
            fprintf(f.fp, ",%s\n", isfinite(r[i].cls_acc[b]) ? b1 : "");
        }
    EX_CHECK(ex_atomic_commit(&f, err));
    snprintf(path, sizeof path, "%s/analyze.md", dir);
    EX_CHECK(ex_atomic_open(&f, path, err));
    fprintf(f.fp, "# Per-block analysis\n\nWhat is computed: docs/ANALYSIS.md. Eigenvalues: covariance of a block's patch tokens "
                  "per image, mean of the top-k, then mean and std over images. Probe accuracies: top-1 (%%) on the test "
                  "images' patch tokens.\n");
    for (int i = 0; i < nr; i++) {
        fprintf(f.fp, "\n## %s\n\n%lld images (%lld train / %lld test for the probes), %lld patches per image, %lld classes\n\n",
                r[i].name, (long long)r[i].images, (long long)r[i].train_images, (long long)r[i].test_images,
                (long long)r[i].patches, (long long)r[i].classes);
        fprintf(f.fp, "| block |");
        for (int64_t k = 0; k < r[i].nk; k++)
            fprintf(f.fp, " eig top-%lld mean | eig top-%lld std |", (long long)r[i].ks[k], (long long)r[i].ks[k]);
        fprintf(f.fp, " position acc (%%) | class acc (%%) |\n|---|");
        for (int64_t k = 0; k < r[i].nk; k++) fprintf(f.fp, "---|---|");
        fprintf(f.fp, "---|---|\n");
        for (int64_t b = 0; b < r[i].depth; b++) {
            fprintf(f.fp, "| %lld |", (long long)b);
            for (int64_t k = 0; k < r[i].nk; k++)
                fprintf(f.fp, " %.4g | %.3g |", r[i].eig_mean[b * r[i].nk + k], r[i].eig_std[b * r[i].nk + k]);
            fmt_num(b1, sizeof b1, r[i].pos_acc[b], "%.2f");
            fprintf(f.fp, " %s |", b1);
            fmt_num(b1, sizeof b1, r[i].cls_acc[b], "%.2f");
            fprintf(f.fp, " %s |\n", b1);
        }
    }
    return ex_atomic_commit(&f, err);
}

/* One plot per measure; `which`: 0 eigen mean of k index kk, 1 its std, 2 position, 3 class. */
static ex_status write_plot(const char *dir, const char *file, const char *title, const an_result *r, int nr, int which,
                            int64_t kk, ex_err *err) {
    an_series s[64];
    double *ys[64];
    int ns = 0;
    ex_status st = EX_OK;
    for (int i = 0; i < nr && ns < 64; i++) {
        ys[ns] = malloc(sizeof(double) * (size_t)r[i].depth);
        if (!ys[ns]) {
            st = ex_err_set(err, EX_E_NOMEM, __FILE__, __LINE__, "out of memory");
            break;
        }
        for (int64_t b = 0; b < r[i].depth; b++)
            ys[ns][b] = which == 0 ? r[i].eig_mean[b * r[i].nk + kk] : which == 1 ? r[i].eig_std[b * r[i].nk + kk]
                      : which == 2 ? r[i].pos_acc[b] : r[i].cls_acc[b];
        s[ns] = (an_series){r[i].name, ys[ns], r[i].depth};
        ns++;
    }
    an_canvas c;
    memset(&c, 0, sizeof c);
    if (st == EX_OK) st = an_plot_render(&c, title, "BLOCK INDEX", s, ns, err);
    if (st == EX_OK) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, file);
        st = an_png_write(path, c.px, c.w, c.h, err);
    }
    an_canvas_free(&c);
    for (int i = 0; i < ns; i++) free(ys[i]);
    return st;
}

static ex_status write_plots(const char *dir, const an_result *r, int nr, ex_err *err) {
    char file[128], title[128];
    for (int64_t k = 0; k < r[0].nk; k++) {
        snprintf(file, sizeof file, "plot_eig_top%lld_mean.png", (long long)r[0].ks[k]);
        snprintf(title, sizeof title, "MEAN TOP-%lld EIGENVALUE", (long long)r[0].ks[k]);
        EX_CHECK(write_plot(dir, file, title, r, nr, 0, k, err));
        snprintf(file, sizeof file, "plot_eig_top%lld_std.png", (long long)r[0].ks[k]);
        snprintf(title, sizeof title, "STD TOP-%lld EIGENVALUE", (long long)r[0].ks[k]);
        EX_CHECK(write_plot(dir, file, title, r, nr, 1, k, err));
    }
    EX_CHECK(write_plot(dir, "plot_position_acc.png", "PATCH POSITION PROBE ACC (%)", r, nr, 2, 0, err));
    return write_plot(dir, "plot_class_acc.png", "PATCH CLASS PROBE ACC (%)", r, nr, 3, 0, err);
}

int cli_analyze(const cli_args *a) {
    if (a->npositional < 1) {
        fprintf(stderr, "explora: error: usage: explora analyze A.ini [B.ini ...] [--out DIR] [--checkpoint CKPT (one config)] "
                        "[--set section.key=value ...]\n");
        return CLI_USAGE;
    }
    if (a->checkpoint && a->npositional > 1) {
        fprintf(stderr, "explora: error: --checkpoint applies to one config; with several, set [analyze] checkpoint in each.\n");
        return CLI_USAGE;
    }
    const char *dir = a->out ? a->out : "analysis";
    ex_err err;
    ex_err_clear(&err);
    if (ex_mkdir_p(dir, &err) != EX_OK) return cli_report(a, &err);
    an_result res[16];
    memset(res, 0, sizeof res);
    int nr = 0, rc = CLI_OK;
    for (int i = 0; i < a->npositional; i++) {
        if (analyze_model(a, a->positional[i], dir, &res[nr], &err) != EX_OK) {
            rc = cli_report(a, &err);
            break;
        }
        nr++;
        for (int k = 0; k < nr - 1; k++)
            if (res[k].nk != res[nr - 1].nk || memcmp(res[k].ks, res[nr - 1].ks, sizeof res[k].ks) != 0) {
                fprintf(stderr, "explora: error: %s: [analyze] topk differs from the first config's; the table needs the same k\n",
                        a->positional[i]);
                rc = CLI_USAGE;
            }
        if (rc != CLI_OK) break;
    }
    if (rc == CLI_OK) {
        if (write_tables(dir, res, nr, &err) != EX_OK || write_plots(dir, res, nr, &err) != EX_OK) rc = cli_report(a, &err);
        else printf("analysis of %d model%s: %s/analyze.md, %s/analyze.csv, %s/plot_*.png\n", nr, nr > 1 ? "s" : "", dir, dir,
                    dir);
    }
    for (int i = 0; i < nr; i++) result_free(&res[i]);
    return rc;
}
