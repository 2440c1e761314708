/*
 * tests/test_analyze.c — known answers for `explora analyze` (core/cli/analyze_*.c,
 * core/cli/cli_analyze.c, the vit plugin's `attention` slot):
 *   - covariance spectra of tokens with a planted spectrum (random orthogonal basis x chosen
 *     eigenvalues, shifted by a constant) match to 1e-4 relative, in both the n > d (covariance)
 *     and n <= d (Gram matrix) paths;
 *   - per-token probes: tokens that encode their position -> ~100 %, tokens independent of it ->
 *     near chance, class-constant tokens -> 100 %;
 *   - the image selection and train/test split;
 *   - the vit `attention` slot against softmax(q_cls k^T / sqrt(hd)) recomputed on the host from
 *     the last block's input (LayerNorm, qkv weights), with and without recompute;
 *   - PNG writing round-trips through explora's decoder with exact pixel values; plots draw
 *     their curves and legend swatches;
 *   - the CLI end to end on the tiny DINOv2 ViT fixture and synthetic labelled images: two configs,
 *     table, CSV, plots and attention maps.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "analyze.h"
#include "explora/backbone.h"
#include "explora/config.h"
#include "explora/fileio.h"
#include "explora/image.h"
#include "explora/params.h"
#include "explora/safetensors.h"
#include "test_support.h"

/* --- spectra ---------------------------------------------------------------------------------- */

/* Orthonormalise the columns of a (rows, cols) row-major double matrix in place (modified Gram-Schmidt). */
static void orthonormal_columns(double *a, int64_t rows, int64_t cols) {
    for (int64_t j = 0; j < cols; j++) {
        for (int64_t k = 0; k < j; k++) {
            double dot = 0;
            for (int64_t i = 0; i < rows; i++) dot += a[i * cols + j] * a[i * cols + k];
            for (int64_t i = 0; i < rows; i++) a[i * cols + j] -= dot * a[i * cols + k];
        }
        double nrm = 0;
        for (int64_t i = 0; i < rows; i++) nrm += a[i * cols + j] * a[i * cols + j];
        nrm = sqrt(nrm);
        for (int64_t i = 0; i < rows; i++) a[i * cols + j] /= nrm;
    }
}

static void uniform_d(double *x, int64_t n, uint64_t seed) {
    float *f = malloc(sizeof(float) * (size_t)n);
    ext_fill_uniform(f, (size_t)n, seed, -1, 1);
    for (int64_t i = 0; i < n; i++) x[i] = f[i];
    free(f);
}

/* Tokens x (n, d) whose covariance has the eigenvalues lam (r of them, r <= min(n - 1, d)), the others 0:
 * X = Z diag(sqrt(lam)) Q^T + offset, Z (n, r) centred with Z^T Z = (n - 1) I, Q (d, r) orthonormal columns. */
static float *planted(int64_t n, int64_t d, const double *lam, int64_t r, uint64_t seed) {
    double *z = malloc(sizeof(double) * (size_t)(n * r)), *q = malloc(sizeof(double) * (size_t)(d * r));
    uniform_d(z, n * r, seed);
    uniform_d(q, d * r, seed + 1);
    for (int64_t j = 0; j < r; j++) { /* centre the columns of z, then orthonormalise (stays centred) */
        double m = 0;
        for (int64_t i = 0; i < n; i++) m += z[i * r + j];
        for (int64_t i = 0; i < n; i++) z[i * r + j] -= m / (double)n;
    }
    orthonormal_columns(z, n, r);
    orthonormal_columns(q, d, r);
    float *x = malloc(sizeof(float) * (size_t)(n * d));
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < d; c++) {
            double v = 3.0 + 0.25 * (double)c; /* an offset the centring must remove */
            for (int64_t j = 0; j < r; j++) v += z[i * r + j] * sqrt((double)(n - 1) * lam[j]) * q[c * r + j];
            x[i * d + c] = (float)v;
        }
    free(z);
    free(q);
    return x;
}

static void check_planted(int64_t n, int64_t d, const double *lam, int64_t r) {
    ex_err err;
    float *x = planted(n, d, lam, r, 42 + (uint64_t)n);
    const int64_t m = n < d ? n : d;
    double *eig = malloc(sizeof(double) * (size_t)m);
    int64_t count = 0;
    EXT_OK(an_cov_eigenvalues(x, n, d, eig, &count, &err), &err);
    assert_int_equal(count, m);
    for (int64_t i = 0; i < m; i++) {
        const double want = i < r ? lam[i] : 0.0;
        if (fabs(eig[i] - want) > 1e-4 * lam[0]) fail_msg("n %lld d %lld: eigenvalue %lld is %g, planted %g", (long long)n, (long long)d,
                                                          (long long)i, eig[i], want);
    }
    const int64_t ks[3] = {1, 5, 1000};
    double means[3];
    EXT_OK(an_spectrum_topk(x, n, d, ks, 3, means, &err), &err);
    double top5 = 0, all = 0;
    for (int64_t i = 0; i < 5; i++) top5 += i < r ? lam[i] : 0;
    for (int64_t i = 0; i < r; i++) all += lam[i];
    assert_true(fabs(means[0] - lam[0]) <= 1e-4 * lam[0]);
    assert_true(fabs(means[1] - top5 / 5) <= 1e-4 * top5 / 5);
    assert_true(fabs(means[2] - all / (double)m) <= 1e-4 * all / (double)m); /* k clipped to min(n, d) */
    free(eig);
    free(x);
}

static void test_planted_spectrum(void **state) {
    (void)state;
    const double lam[9] = {14.0, 9.5, 6.25, 3.0, 2.0, 1.0, 0.5, 0.25, 0.125};
    check_planted(64, 12, lam, 9); /* n > d: the d x d covariance */
    check_planted(10, 24, lam, 9); /* n <= d: the n x n Gram matrix, rank n - 1 */
    check_planted(10, 10, lam, 9);
    ex_err err;
    double e[2];
    int64_t c;
    float one[3] = {1, 2, 3};
    assert_int_equal(an_cov_eigenvalues(one, 1, 3, e, &c, &err), EX_E_INVALID);
    double v[4] = {1, 2, 3, 4}, mean, std;
    an_mean_std(v, 4, &mean, &std);
    assert_true(fabs(mean - 2.5) < 1e-12 && fabs(std - sqrt(1.25)) < 1e-12);
}

/* --- probes ------------------------------------------------------------------------------------- */

typedef enum { TOKENS_POSITION, TOKENS_NOISE, TOKENS_CLASS } token_kind;

/* Tokens of nimg images of np patches (d features) and their position / class labels. */
static void make_tokens(token_kind kind, int64_t nimg, int64_t np, int64_t d, int64_t classes, uint64_t seed, float *x,
                        int64_t *ypos, int64_t *ycls) {
    ext_fill_uniform(x, (size_t)(nimg * np * d), seed, -0.1f, 0.1f);
    for (int64_t i = 0; i < nimg; i++)
        for (int64_t p = 0; p < np; p++) {
            float *t = x + (i * np + p) * d;
            const int64_t cls = (i * 7 + 3) % classes;
            if (kind == TOKENS_POSITION) t[p % d] += 1.0f;
            if (kind == TOKENS_NOISE) ext_fill_uniform(t, (size_t)d, seed * 977 + (uint64_t)(i * np + p), -1, 1);
            if (kind == TOKENS_CLASS) t[cls] += 1.0f;
            ypos[i * np + p] = p;
            ycls[i * np + p] = cls;
        }
}

static void test_token_probes(void **state) {
    (void)state;
    ex_backend be;
    ex_registry *reg;
    ext_backend_open("cpu", "threads = 1\n", &be, &reg);
    ex_err err;
    const int64_t np = 16, d = 16, classes = 3, ntr = 12, nte = 4;
    float *xtr = malloc(sizeof(float) * (size_t)(ntr * np * d)), *xte = malloc(sizeof(float) * (size_t)(nte * np * d));
    int64_t *ptr = malloc(sizeof(int64_t) * (size_t)(ntr * np)), *pte = malloc(sizeof(int64_t) * (size_t)(nte * np));
    int64_t *ctr = malloc(sizeof(int64_t) * (size_t)(ntr * np)), *cte = malloc(sizeof(int64_t) * (size_t)(nte * np));
    an_probe_opts o;
    memset(&o, 0, sizeof o);
    o.lrs[0] = 1e-2, o.lrs[1] = 0.1, o.nlrs = 2;
    o.epochs = 30, o.batch = 32, o.seed = 5;
    double acc;
    /* position encoded exactly (one-hot + small noise) -> ~100 % */
    make_tokens(TOKENS_POSITION, ntr, np, d, classes, 1, xtr, ptr, ctr);
    make_tokens(TOKENS_POSITION, nte, np, d, classes, 2, xte, pte, cte);
    EXT_OK(an_token_probe(&be, xtr, ptr, ntr * np, xte, pte, nte * np, d, np, &o, &acc, &err), &err);
    printf("position-coded tokens: position probe %.1f%%\n", acc);
    assert_true(acc >= 99.9);
    /* tokens independent of position -> chance (1/16 = 6.25 %) */
    make_tokens(TOKENS_NOISE, ntr, np, d, classes, 3, xtr, ptr, ctr);
    make_tokens(TOKENS_NOISE, nte, np, d, classes, 4, xte, pte, cte);
    EXT_OK(an_token_probe(&be, xtr, ptr, ntr * np, xte, pte, nte * np, d, np, &o, &acc, &err), &err);
    printf("random tokens: position probe %.1f%% (chance 6.25%%)\n", acc);
    assert_true(acc <= 25.0);
    /* class-constant tokens -> 100 % class probe, position at chance */
    make_tokens(TOKENS_CLASS, ntr, np, d, classes, 5, xtr, ptr, ctr);
    make_tokens(TOKENS_CLASS, nte, np, d, classes, 6, xte, pte, cte);
    EXT_OK(an_token_probe(&be, xtr, ctr, ntr * np, xte, cte, nte * np, d, classes, &o, &acc, &err), &err);
    printf("class-constant tokens: class probe %.1f%%\n", acc);
    assert_true(acc >= 99.9);
    EXT_OK(an_token_probe(&be, xtr, ptr, ntr * np, xte, pte, nte * np, d, np, &o, &acc, &err), &err);
    printf("class-constant tokens: position probe %.1f%%\n", acc);
    assert_true(acc <= 25.0);
    /* bad arguments */
    assert_int_equal(an_token_probe(&be, xtr, ptr, ntr * np, xte, pte, nte * np, d, 1, &o, &acc, &err), EX_E_INVALID);
    free(xtr), free(xte), free(ptr), free(pte), free(ctr), free(cte);
    ext_backend_close(&be, reg);
}

static void test_selection_and_split(void **state) {
    (void)state;
    /* evenly spread over the dataset, in order, distinct */
    for (int64_t i = 0; i < 10; i++) assert_int_equal(an_pick(i, 10, 100), 10 * i);
    assert_int_equal(an_pick(2, 3, 3), 2);
    for (int64_t n = 2; n <= 40; n++)
        for (int f = 1; f <= 9; f++) {
            const double frac = f / 10.0;
            int64_t t = 0;
            for (int64_t i = 0; i < n; i++) t += an_is_test(i, n, frac);
            int64_t want = (int64_t)floor((double)n * frac + 0.5);
            if (want < 1) want = 1;
            if (want > n - 1) want = n - 1;
            if (t != want) fail_msg("n %lld frac %.1f: %lld test images, want %lld", (long long)n, frac, (long long)t, (long long)want);
        }
}

/* --- the vit attention slot ----------------------------------------------------------------------- */

typedef struct vit_ctx {
    ex_registry *reg;
    ex_backend be;
    const ex_backbone_vtable *vt;
    ex_params params;
    ex_memory_plan plan;
    void *model;
    ex_config *cfg;
} vit_ctx;

static void write_vit_weights(char *path, size_t cap) {
    char fx[4096];
    snprintf(fx, sizeof fx, "%s/../fixtures/vit_dinov2.safetensors", ext_env("EXPLORA_TEST_DATA_DIR"));
    ex_err err;
    ex_st_file *f;
    EXT_OK(ex_st_open(&f, fx, &err), &err);
    ex_st_writer *w;
    EXT_OK(ex_st_writer_new(&w, &err), &err);
    static const char *keep[] = {"cls_token", "pos_embed", "mask_token", "patch_embed.", "blocks.", "norm."};
    for (int i = 0; i < ex_st_count(f); i++) {
        const ex_st_entry *e = ex_st_at(f, i);
        for (size_t k = 0; k < sizeof keep / sizeof *keep; k++)
            if (strncmp(e->name, keep[k], strlen(keep[k])) == 0) {
                EXT_OK(ex_st_writer_add(w, e->name, e->dtype, e->ndim, e->shape, ex_st_data(f, e), &err), &err);
                break;
            }
    }
    ext_tmp_path(path, cap, "analyze-vit-weights.safetensors");
    EXT_OK(ex_st_writer_finish(w, path, &err), &err);
    ex_st_writer_free(w);
    ex_st_close(f);
}

static void open_vit(vit_ctx *c, const char *extra, int64_t batch, int64_t side) {
    memset(c, 0, sizeof *c);
    ex_err err;
    ex_err_clear(&err);
    ext_backend_open("cpu", "threads = 1\n", &c->be, &c->reg);
    EXT_OK(ex_registry_add_dir(c->reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err), &err);
    EXT_OK(ex_registry_scan(c->reg, &err), &err);
    const ex_plugin *p;
    EXT_OK(ex_registry_find(c->reg, EX_PLUGIN_BACKBONE, "vit", &p, &err), &err);
    c->vt = &p->vtable_copy.backbone;
    assert_non_null(c->vt->attention);
    char text[1024];
    snprintf(text, sizeof text, "[backbone]\nname = vit\ndim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\nlayerscale = on\n%s",
             extra);
    EXT_OK(ex_config_load_string(&c->cfg, text, "test-analyze.ini", &err), &err);
    ex_cfg_section view = {c->cfg, "backbone", p->desc.keys};
    ex_params_init(&c->params);
    EXT_OK(c->vt->create(&view, &c->be, &c->params, &c->model, &err), &err);
    ex_memory_plan_init(&c->plan, &c->be);
    EXT_OK(ex_params_plan(&c->params, &c->plan, &err), &err);
    ex_backbone_shape max = {batch, side, side, 0, 0, 0, 0, EX_F32};
    EXT_OK(c->vt->plan(c->model, &max, &c->plan, &err), &err);
    EXT_OK(ex_memory_plan_commit(&c->plan, &err), &err);
    ex_params_bind(&c->params);
    EXT_OK(c->vt->ready(c->model, &err), &err);
    char w[4096];
    write_vit_weights(w, sizeof w);
    EXT_OK(c->vt->load(c->model, w, "auto", &err), &err);
}

static void close_vit(vit_ctx *c) {
    ex_memory_plan_release(&c->plan);
    c->vt->destroy(c->model);
    ex_params_free(&c->params);
    ex_config_free(c->cfg);
    ext_backend_close(&c->be, c->reg);
}

static float *param_host(vit_ctx *c, const char *name, int64_t n) {
    const ex_param *p = ex_params_find(&c->params, name);
    if (!p) fail_msg("no parameter %s", name);
    float *h = malloc(sizeof(float) * (size_t)n);
    ex_err err;
    EXT_OK(ex_be_download(&c->be, h, p->value.data, sizeof(float) * (size_t)n, &err), &err);
    return h;
}

/* Forward B (at most 2) random 16x16 images through the model; returns the device copy of the images (the
 * caller frees it) and the forward's token count. */
static void *forward_random(vit_ctx *c, int64_t B, int64_t *tokens) {
    ex_err err;
    float img[2 * 3 * 16 * 16];
    assert_true(B >= 1 && B <= 2);
    const size_t bytes = sizeof(float) * (size_t)(B * 3 * 16 * 16);
    ext_fill_uniform(img, (size_t)(B * 3 * 16 * 16), 11, -2, 2);
    void *dev;
    EXT_OK(ex_be_alloc(&c->be, bytes, &dev, &err), &err);
    EXT_OK(ex_be_upload(&c->be, dev, img, bytes, &err), &err);
    ex_backbone_io io;
    memset(&io, 0, sizeof io);
    io.batch = B, io.height = 16, io.width = 16, io.images = dev;
    EXT_OK(c->vt->forward(c->model, &io, &err), &err);
    *tokens = io.num_tokens;
    return dev;
}

/* Forward two 16x16 images; return the attention slot's probabilities of `block` and the host recomputation. */
static void attention_case(const char *extra, int64_t block, float **got, float **want, int64_t *count) {
    vit_ctx c;
    open_vit(&c, extra, 2, 16);
    ex_err err;
    const int64_t B = 2, D = 24, H = 3, hs = 8, T = 17;
    int64_t tokens = 0;
    void *dev = forward_random(&c, B, &tokens);
    assert_int_equal(tokens, T);
    *count = B * H * T;
    *got = malloc(sizeof(float) * (size_t)*count);
    EXT_OK(c.vt->attention(c.model, block, *got, &err), &err);
    /* host: x = input of the block, ln1(x), qkv = ln1 W^T + b, softmax(q_cls k^T / sqrt(hs)) */
    float *x = malloc(sizeof(float) * (size_t)(B * T * D));
    EXT_OK(ex_be_download(&c.be, x, c.vt->block_output(c.model, block - 1), sizeof(float) * (size_t)(B * T * D), &err), &err);
    char name[64];
    snprintf(name, sizeof name, "blocks.%lld.norm1.weight", (long long)block);
    float *lw = param_host(&c, name, D);
    snprintf(name, sizeof name, "blocks.%lld.norm1.bias", (long long)block);
    float *lb = param_host(&c, name, D);
    snprintf(name, sizeof name, "blocks.%lld.attn.qkv.weight", (long long)block);
    float *qw = param_host(&c, name, 3 * D * D);
    snprintf(name, sizeof name, "blocks.%lld.attn.qkv.bias", (long long)block);
    float *qb = param_host(&c, name, 3 * D);
    *want = malloc(sizeof(float) * (size_t)*count);
    for (int64_t b = 0; b < B; b++) {
        double qkv[17][72];
        for (int64_t t = 0; t < T; t++) {
            const float *r = x + (b * T + t) * D;
            double m = 0, v = 0, ln[24];
            for (int64_t i = 0; i < D; i++) m += r[i];
            m /= D;
            for (int64_t i = 0; i < D; i++) v += (r[i] - m) * (r[i] - m);
            v /= D;
            for (int64_t i = 0; i < D; i++) ln[i] = (r[i] - m) / sqrt(v + 1e-6) * lw[i] + lb[i];
            for (int64_t o = 0; o < 3 * D; o++) {
                double acc = qb[o];
                for (int64_t i = 0; i < D; i++) acc += ln[i] * qw[o * D + i];
                qkv[t][o] = acc;
            }
        }
        for (int64_t h = 0; h < H; h++) {
            double s[17], mx = -1e300, sum = 0;
            for (int64_t j = 0; j < T; j++) {
                s[j] = 0;
                for (int64_t i = 0; i < hs; i++) s[j] += qkv[0][h * hs + i] * qkv[j][D + h * hs + i];
                s[j] /= sqrt((double)hs);
                mx = fmax(mx, s[j]);
            }
            for (int64_t j = 0; j < T; j++) sum += exp(s[j] - mx);
            for (int64_t j = 0; j < T; j++) (*want)[(b * H + h) * T + j] = (float)(exp(s[j] - mx) / sum);
        }
    }
    free(x), free(lw), free(lb), free(qw), free(qb);
    ex_be_free(&c.be, dev);
    close_vit(&c);
}

static void test_vit_attention_slot(void **state) {
    (void)state;
    float *got, *want;
    int64_t n;
    for (int64_t block = 1; block <= 2; block++) {
        attention_case("", block, &got, &want, &n);
        ext_assert_close(got, want, (size_t)n, 2e-5, 1e-4, "cls attention");
        for (int64_t r = 0; r < n / 17; r++) {
            double sum = 0;
            for (int64_t j = 0; j < 17; j++) sum += got[r * 17 + j];
            assert_true(fabs(sum - 1.0) < 1e-5);
        }
        free(got);
        free(want);
    }
    /* with recompute only the last block's activations survive: the same answer there */
    attention_case("recompute = true\n", 2, &got, &want, &n);
    ext_assert_close(got, want, (size_t)n, 2e-5, 1e-4, "cls attention (recompute)");
    free(got);
    free(want);
    /* recomputing the first two of three blocks: the second one's activations are the last in their shared
     * buffer, so its attention is still there */
    attention_case("recompute = true\nrecompute_blocks = 2\n", 1, &got, &want, &n);
    ext_assert_close(got, want, (size_t)n, 2e-5, 1e-4, "cls attention (recompute_blocks = 2)");
    free(got);
    free(want);
    /* ... and a clear refusal for an earlier block, or before any forward */
    vit_ctx c;
    open_vit(&c, "recompute = true\n", 1, 16);
    ex_err err;
    float probs[64];
    assert_int_equal(c.vt->attention(c.model, 2, probs, &err), EX_E_INVALID);
    close_vit(&c);
    /* after a forward that recomputes the first two blocks, block 0's activations are gone */
    open_vit(&c, "recompute = true\nrecompute_blocks = 2\n", 1, 16);
    int64_t tokens = 0;
    void *dev = forward_random(&c, 1, &tokens);
    float many[3 * 17];
    assert_int_equal(c.vt->attention(c.model, 0, many, &err), EX_E_UNSUPPORTED);
    if (!strstr(err.msg, "block 0") || !strstr(err.msg, "from 2 on") || !strstr(err.msg, "block 1's are in the shared"))
        fail_msg("unexpected message: %s", err.msg);
    EXT_OK(c.vt->attention(c.model, 1, many, &err), &err);
    ex_be_free(&c.be, dev);
    close_vit(&c);
}

/* --- drawing and PNG ------------------------------------------------------------------------------- */

static void test_png_round_trip(void **state) {
    (void)state;
    const int w = 13, h = 7;
    uint8_t px[13 * 7 * 3];
    for (int i = 0; i < w * h * 3; i++) px[i] = (uint8_t)((i * 37 + 11) % 256);
    px[0] = 0, px[1] = 255;
    char path[4096];
    ext_tmp_path(path, sizeof path, "roundtrip.png");
    ex_err err;
    EXT_OK(an_png_write(path, px, w, h, &err), &err);
    ex_image im;
    EXT_OK(ex_image_load(path, 3, &im, &err), &err);
    assert_int_equal(im.width, w);
    assert_int_equal(im.height, h);
    assert_int_equal(im.channels, 3);
    for (int i = 0; i < w * h * 3; i++) {
        const int v = (int)lroundf(im.pixels[i] * 255.0f);
        if (v != px[i]) fail_msg("pixel value %d: wrote %d, read %d", i, px[i], v);
    }
    ex_image_free(&im);
}

static int count_colour(const an_canvas *c, const uint8_t rgb[3]) {
    int n = 0;
    for (int i = 0; i < c->w * c->h; i++) n += memcmp(c->px + 3 * i, rgb, 3) == 0;
    return n;
}

static void test_plot_and_overlay(void **state) {
    (void)state;
    ex_err err;
    const double a[5] = {3, 14, 10, 0.6, 0.1}, b[5] = {1, 2, NAN, 4, 5};
    const an_series s[2] = {{"model-A", a, 5}, {"model-B", b, 5}};
    an_canvas c;
    EXT_OK(an_plot_render(&c, "MEAN TOP-1 EIGENVALUE", "BLOCK INDEX", s, 2, &err), &err);
    uint8_t c0[3], c1[3];
    an_palette(0, c0);
    an_palette(1, c1);
    assert_true(count_colour(&c, c0) > 200); /* the curve, markers and swatch */
    assert_true(count_colour(&c, c1) > 100);
    /* the legend swatch of series 0 sits right of the plot area */
    assert_memory_equal(c.px + 3 * ((size_t)(40 + 4 + 4) * (size_t)c.w + 540 + 20), c0, 3);
    char path[4096];
    ext_tmp_path(path, sizeof path, "plot.png");
    EXT_OK(an_png_write(path, c.px, c.w, c.h, &err), &err);
    an_canvas_free(&c);
    /* overlay: a map hot at the top-left patch colours that corner red-ish, the opposite one blue-ish */
    const uint8_t white[3] = {255, 255, 255};
    EXT_OK(an_canvas_new(&c, 32, 32, white, &err), &err);
    float gray[16 * 16], map[4] = {1, 0, 0, 0};
    for (int i = 0; i < 256; i++) gray[i] = 0.5f;
    an_overlay(&c, 0, 0, 32, 32, gray, 16, 16, map, 2, 2, 0.5);
    const uint8_t *tl = c.px, *br = c.px + 3 * (31 * 32 + 31);
    assert_true(tl[0] > tl[2] + 40); /* jet's red end (dark red: 128) over 50 % gray */
    assert_true(br[2] > br[0] + 40); /* jet's blue end */
    uint8_t lo[3], hi[3];
    an_colormap(0, lo);
    an_colormap(1, hi);
    assert_true(lo[2] > 100 && lo[0] == 0 && hi[0] > 100 && hi[2] == 0);
    an_canvas_free(&c);
}

/* --- the CLI end to end --------------------------------------------------------------------------- */

static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(char **out, const char *fmt, ...) {
    char args[8192], cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "EXPLORA_PLUGIN_PATH='%s' '%s' %s 2>&1", ext_env("EXPLORA_TEST_ABI_DIR"), ext_env("EXPLORA_BIN"), args);
    FILE *p = popen(cmd, "r");
    if (!p) fail_msg("popen failed");
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + len, 1, cap - 1 - len, p)) > 0) {
        len += got;
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    const int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect_contains(const char *text, const char *needle) {
    if (!strstr(text, needle)) fail_msg("output lacks '%s':\n%s", needle, text);
}

static void expect_png(const char *dir, const char *name) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ex_image im;
    ex_err err;
    EXT_OK(ex_image_load(path, 3, &im, &err), &err);
    assert_true(im.width > 16 && im.height > 16);
    ex_image_free(&im);
}

static void test_cli_end_to_end(void **state) {
    (void)state;
    char weights[4096], ini_a[4096], ini_b[4096], out[4096], text[8192], *log;
    write_vit_weights(weights, sizeof weights);
    const char *body = "[data]\nname = abi-good\ncount = 30\nchannels = 3\nclasses = 3\n"
                       "[backbone]\nname = vit\ndim = 24\ndepth = 3\nheads = 3\npatch = 4\npos_grid = 4\n"
                       "layerscale = on\nimage_size = 16\nweights = %s\n[transform]\nresize = 16\n[optim]\nbatch = 7\n"
                       "[analyze]\nimages = 12\nprobe_epochs = 3\nprobe_batch = 32\nattention_images = 2\n%s";
    snprintf(text, sizeof text, body, weights, "name = tiny-A\n");
    ext_tmp_path(ini_a, sizeof ini_a, "analyze-a.ini");
    ext_write_file(ini_a, text, strlen(text));
    snprintf(text, sizeof text, body, weights, "features = raw\nmemory_mb = 16\n");
    ext_tmp_path(ini_b, sizeof ini_b, "analyze-b.ini");
    ext_write_file(ini_b, text, strlen(text));
    ext_tmp_path(out, sizeof out, "analysis");
    /* B has no [analyze] name: the config file's name without .ini */
    char name_b[512], att_b[600];
    snprintf(name_b, sizeof name_b, "%s", strrchr(ini_b, '/') + 1);
    *strrchr(name_b, '.') = '\0';
    snprintf(att_b, sizeof att_b, "attention_%s_001.png", name_b);
    assert_int_equal(run(&log, "analyze '%s' '%s' --out '%s'", ini_a, ini_b, out), 0);
    expect_contains(log, "tiny-A: 12 images of [data] (9 train / 3 test for the probes), 3 blocks, 16 patches of 24 features");
    expect_contains(log, "block 2/2");
    free(log);
    /* the CSV: a header and one row per (model, block) with numbers */
    char path[8192];
    snprintf(path, sizeof path, "%s/analyze.csv", out);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "model,block,eig_top1_mean,eig_top1_std,eig_top5_mean,eig_top5_std,position_acc,class_acc\n");
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        char model[64];
        int block;
        double e1, s1, e5, s5, pos, cls;
        assert_int_equal(sscanf(line, "%63[^,],%d,%lf,%lf,%lf,%lf,%lf,%lf", model, &block, &e1, &s1, &e5, &s5, &pos, &cls), 8);
        assert_string_equal(model, rows < 3 ? "tiny-A" : name_b);
        assert_int_equal(block, rows % 3);
        assert_true(e1 > 0 && e1 >= e5 && s1 >= 0 && pos >= 0 && pos <= 100 && cls >= 0 && cls <= 100);
        rows++;
    }
    fclose(f);
    assert_int_equal(rows, 6);
    snprintf(path, sizeof path, "%s/analyze.md", out);
    char *md;
    size_t n;
    ex_err err;
    EXT_OK(ex_read_file(path, &md, &n, &err), &err);
    expect_contains(md, "## tiny-A");
    expect_contains(md, "| block | eig top-1 mean | eig top-1 std | eig top-5 mean | eig top-5 std | position acc (%) | class acc (%) |");
    free(md);
    const char *pngs[] = {"plot_eig_top1_mean.png", "plot_eig_top1_std.png", "plot_eig_top5_mean.png", "plot_position_acc.png",
                          "plot_class_acc.png",     "attention_tiny-A_000.png", "attention_tiny-A_001.png",
                          att_b};
    for (size_t k = 0; k < sizeof pngs / sizeof *pngs; k++) expect_png(out, pngs[k]);
    /* usage errors */
    assert_int_equal(run(&log, "analyze"), 2);
    free(log);
    assert_int_equal(run(&log, "analyze '%s' '%s' --checkpoint x.pt", ini_a, ini_b), 2);
    expect_contains(log, "[analyze] checkpoint");
    free(log);
    assert_int_equal(run(&log, "analyze '%s' --out '%s' --set analyze.data=eval_data", ini_a, out), 2);
    expect_contains(log, "no [eval_data] section");
    free(log);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_planted_spectrum),    cmocka_unit_test(test_token_probes),
        cmocka_unit_test(test_selection_and_split), cmocka_unit_test(test_vit_attention_slot),
        cmocka_unit_test(test_png_round_trip),      cmocka_unit_test(test_plot_and_overlay),
        cmocka_unit_test(test_cli_end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
