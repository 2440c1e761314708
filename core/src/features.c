/*
 * core/src/features.c — frozen features through a model, cached as
 * safetensors (see explora/features.h).
 */
#include "explora/features.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "explora/eval_input.h"
#include "explora/safetensors.h"

/* Host LayerNorm of one row with the model's final norm (weights downloaded once). */
static void layernorm_row(const float *x, const float *w, const float *b, int64_t d, float eps, float *out) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; i++) mean += x[i];
    mean /= (double)d;
    for (int64_t i = 0; i < d; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
    var /= (double)d;
    const double rstd = 1.0 / sqrt(var + (double)eps);
    for (int64_t i = 0; i < d; i++) out[i] = (float)(((double)x[i] - mean) * rstd * (double)w[i] + (double)b[i]);
}

ex_status ex_features_extract(ex_model *m, const ex_dataset_vtable *vt, void *ds, const ex_feature_opts *o,
                              ex_features *out, FILE *progress, ex_err *err) {
    memset(out, 0, sizeof *out);
    const int64_t D = m->info.dim, C = m->info.channels, H = o->height, W = o->width, depth = m->info.depth;
    const int64_t nb = o->nblocks < 1 ? 1 : o->nblocks > depth ? depth : o->nblocks;
    EX_ENSURE(m->vt->block_output, err, EX_E_UNSUPPORTED, "backbone '%s' does not expose block outputs",
              m->plugin->desc.name);
    const ex_param *nw = ex_params_find(&m->params, "norm.weight"), *nbias = ex_params_find(&m->params, "norm.bias");
    EX_ENSURE(nw && nbias, err, EX_E_UNSUPPORTED, "the backbone has no final norm (norm.weight, norm.bias)");
    ex_eval_input in;
    EX_CHECK(ex_eval_input_init(&in, vt, ds, o->limit, H, W, C, o->resize, o->mean, o->std, o->skip_bad, err));
    const int64_t N = in.n; /* at most; skip_bad may drop some */
    out->dim = D;
    out->nblocks = nb;
    out->cls = malloc(sizeof(float) * (size_t)(N * nb * D));
    out->patch = malloc(sizeof(float) * (size_t)(N * D));
    out->labels = malloc(sizeof(int64_t) * (size_t)N);
    float *images = malloc(sizeof(float) * (size_t)(o->batch * C * H * W));
    ex_eval_row *rows = malloc(sizeof(ex_eval_row) * (size_t)o->batch);
    float *normw = malloc(sizeof(float) * (size_t)(2 * D)), *host = NULL;
    void *dev = NULL;
    ex_status st = EX_OK;
    if (!out->cls || !out->patch || !out->labels || !images || !rows || !normw)
        EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "out of memory for %lld features", (long long)N);
    EX_CHECK_GOTO(ex_be_download(m->be, normw, nw->value.data, sizeof(float) * (size_t)D, err), st, done);
    EX_CHECK_GOTO(ex_be_download(m->be, normw + D, nbias->value.data, sizeof(float) * (size_t)D, err), st, done);
    EX_CHECK_GOTO(ex_be_alloc(m->be, sizeof(float) * (size_t)(o->batch * C * H * W), &dev, err), st, done);
    const float eps = 1e-6f;
    for (;;) {
        int64_t b = 0;
        const int64_t start = out->n;
        EX_CHECK_GOTO(ex_eval_input_next(&in, images, o->batch, rows, &b, err), st, done);
        if (b == 0) break;
        for (int64_t k = 0; k < b; k++) out->labels[start + k] = rows[k].label;
        EX_CHECK_GOTO(ex_be_upload(m->be, dev, images, sizeof(float) * (size_t)(b * C * H * W), err), st, done);
        ex_backbone_io io;
        memset(&io, 0, sizeof io);
        io.batch = b, io.height = H, io.width = W, io.images = dev, io.train = 0;
        EX_CHECK_GOTO(m->vt->forward(m->self, &io, err), st, done);
        const int64_t T = io.num_tokens, first = 1 + m->info.registers;
        float *nh = realloc(host, sizeof(float) * (size_t)(b * T * D));
        if (!nh) EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "out of memory");
        host = nh;
        /* the mean patch token after the final norm */
        EX_CHECK_GOTO(ex_be_download(m->be, host, io.tokens, sizeof(float) * (size_t)(b * T * D), err), st, done);
        for (int64_t k = 0; k < b; k++)
            for (int64_t j = 0; j < D; j++) {
                double acc = 0;
                for (int64_t p = first; p < T; p++) acc += host[(k * T + p) * D + j];
                out->patch[(start + k) * D + j] = (float)(acc / (double)(T - first));
            }
        /* cls of each of the last nb blocks, through the final norm */
        for (int64_t i = 0; i < nb; i++) {
            const float *bo = m->vt->block_output(m->self, depth - nb + i);
            EX_CHECK_GOTO(ex_be_download(m->be, host, bo, sizeof(float) * (size_t)(b * T * D), err), st, done);
            for (int64_t k = 0; k < b; k++)
                layernorm_row(host + k * T * D, normw, normw + D, D, eps, out->cls + ((start + k) * nb + i) * D);
        }
        out->n += b;
        if (progress) fprintf(progress, "\rfeatures %lld/%lld", (long long)in.next, (long long)N);
    }
    if (progress) fprintf(progress, "\n");
    out->skipped = in.skipped;
    out->first_skip = in.first_skip;
done:
    if (dev) ex_be_free(m->be, dev);
    ex_eval_input_free(&in);
    free(images);
    free(rows);
    free(normw);
    free(host);
    if (st != EX_OK) ex_features_free(out);
    return st;
}

ex_status ex_features_save(const ex_features *f, const char *path, ex_err *err) {
    ex_st_writer *w;
    EX_CHECK(ex_st_writer_new(&w, err));
    ex_status st = ex_st_writer_add(w, "cls", EX_F32, 3, (int64_t[]){f->n, f->nblocks, f->dim}, f->cls, err);
    if (st == EX_OK) st = ex_st_writer_add(w, "patch_mean", EX_F32, 2, (int64_t[]){f->n, f->dim}, f->patch, err);
    if (st == EX_OK) st = ex_st_writer_add(w, "labels", EX_I64, 1, (int64_t[]){f->n}, f->labels, err);
    if (st == EX_OK) st = ex_st_writer_finish(w, path, err);
    ex_st_writer_free(w);
    return st;
}

ex_status ex_features_load(ex_features *f, const char *path, ex_err *err) {
    memset(f, 0, sizeof *f);
    ex_st_file *sf;
    EX_CHECK(ex_st_open(&sf, path, err));
    const ex_st_entry *c = ex_st_find(sf, "cls"), *p = ex_st_find(sf, "patch_mean"), *l = ex_st_find(sf, "labels");
    ex_status st = EX_OK;
    if (!c || !p || !l || c->ndim != 3 || p->ndim != 2 || l->ndim != 1 || l->dtype != EX_I64 || p->shape[0] != c->shape[0] ||
        l->shape[0] != c->shape[0] || p->shape[1] != c->shape[2]) {
        st = ex_err_set(err, EX_E_FORMAT, __FILE__, __LINE__, "%s is not an explora feature cache", path);
    } else {
        f->n = c->shape[0];
        f->nblocks = c->shape[1];
        f->dim = c->shape[2];
        f->cls = malloc(sizeof(float) * (size_t)(f->n * f->nblocks * f->dim));
        f->patch = malloc(sizeof(float) * (size_t)(f->n * f->dim));
        f->labels = malloc(sizeof(int64_t) * (size_t)f->n);
        if (!f->cls || !f->patch || !f->labels) st = ex_err_set(err, EX_E_NOMEM, __FILE__, __LINE__, "out of memory");
        if (st == EX_OK) st = ex_st_read_f32(sf, c, f->cls, f->n * f->nblocks * f->dim, err);
        if (st == EX_OK) st = ex_st_read_f32(sf, p, f->patch, f->n * f->dim, err);
        if (st == EX_OK) memcpy(f->labels, ex_st_data(sf, l), sizeof(int64_t) * (size_t)f->n);
    }
    ex_st_close(sf);
    if (st != EX_OK) ex_features_free(f);
    return st;
}

void ex_features_free(ex_features *f) {
    free(f->cls);
    free(f->patch);
    free(f->labels);
    memset(f, 0, sizeof *f);
}
