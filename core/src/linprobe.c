/*
 * core/src/linprobe.c — the DINOv2 linear-probe protocol on cached features
 * (see explora/features.h): for every (last n blocks, with/without the mean
 * patch token) input, every learning rate of the grid trains its own linear
 * classifier on the same batches; all run on the backend.
 *
 *   W (classes, F) ~ N(0, 0.01), b = 0
 *   SGD, momentum 0.9 (torch: buf = 0.9 buf + g; p -= lr_t buf), no weight decay
 *   lr_t = lr * (1 + cos(pi t / T)) / 2 per iteration (CosineAnnealingLR to 0)
 *   loss = mean cross-entropy over the batch; batches of `batch` rows in a
 *   per-epoch order drawn from the data stream
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "explora/features.h"
#include "explora/rng.h"

typedef struct keyed_index {
    float k;
    int32_t i;
} keyed_index;

/* Stable order of uniform keys: the epoch's permutation. */
static int cmp_keyed_index(const void *a, const void *b) {
    const keyed_index *x = a, *y = b;
    if (x->k != y->k) return x->k < y->k ? -1 : 1;
    return x->i - y->i;
}

/* X (n, F) = [cls of the last nb blocks, (patch mean)] as the probe's input. */
static float *build_inputs(const ex_features *f, int64_t nb, int avg, int64_t *F) {
    const int64_t D = f->dim;
    *F = nb * D + (avg ? D : 0);
    float *x = malloc(sizeof(float) * (size_t)(f->n * *F));
    if (!x) return NULL;
    for (int64_t i = 0; i < f->n; i++) {
        float *row = x + i * *F;
        memcpy(row, f->cls + (i * f->nblocks + (f->nblocks - nb)) * D, sizeof(float) * (size_t)(nb * D));
        if (avg) memcpy(row + nb * D, f->patch + i * D, sizeof(float) * (size_t)D);
    }
    return x;
}

typedef struct probe_dev {
    float *x, *xv;        /* train (n, F), val (nv, F) */
    int32_t *labels, *vlabels;
    float *xb;            /* (batch, F) */
    int32_t *idx, *yb;    /* (batch) */
    float *logits, *probs, *losses, *dlosses, *dlogits; /* (max(batch, nv), C) / (..) */
    float *w, *b, *vw, *vb, *gw, *gb;                   /* per lr: (C, F), (C) */
} probe_dev;

#define OPC(call, what)                                                                         \
    do {                                                                                        \
        ex_status op__s = be->vt.call;                                                          \
        if (op__s != EX_OK) EX_FAIL_GOTO(err, st, done, op__s, "linear probe: %s failed", what); \
    } while (0)

static ex_status probe_variant(ex_backend *be, const ex_features *tr, const ex_features *va, int64_t C, int64_t nb,
                               int avg, const ex_probe_opts *o, ex_probe_result *res, FILE *progress, ex_err *err) {
    ex_status st = EX_OK;
    int64_t F = 0, Fv = 0;
    float *hx = build_inputs(tr, nb, avg, &F), *hxv = build_inputs(va, nb, avg, &Fv);
    const int64_t n = tr->n, nv = va->n, B = o->batch < n ? o->batch : n, L = o->nlrs;
    const int64_t rows = B > nv ? B : nv;
    int32_t *hl = malloc(sizeof(int32_t) * (size_t)n), *hvl = malloc(sizeof(int32_t) * (size_t)nv);
    int32_t *hidx = malloc(sizeof(int32_t) * (size_t)n);
    float *hw = malloc(sizeof(float) * (size_t)(C * F)), *hlog = malloc(sizeof(float) * (size_t)(nv * C));
    float *keys = malloc(sizeof(float) * (size_t)n);
    probe_dev d;
    memset(&d, 0, sizeof d);
    void **bufs[] = {(void **)&d.x,      (void **)&d.xv,      (void **)&d.labels, (void **)&d.vlabels,
                     (void **)&d.xb,     (void **)&d.idx,     (void **)&d.yb,     (void **)&d.logits,
                     (void **)&d.probs,  (void **)&d.losses,  (void **)&d.dlosses, (void **)&d.dlogits,
                     (void **)&d.w,      (void **)&d.b,       (void **)&d.vw,     (void **)&d.vb,
                     (void **)&d.gw,     (void **)&d.gb};
    const size_t sizes[] = {sizeof(float) * (size_t)(n * F), sizeof(float) * (size_t)(nv * F), sizeof(int32_t) * (size_t)n,
                            sizeof(int32_t) * (size_t)nv, sizeof(float) * (size_t)(B * F), sizeof(int32_t) * (size_t)B,
                            sizeof(int32_t) * (size_t)B, sizeof(float) * (size_t)(rows * C), sizeof(float) * (size_t)(rows * C),
                            sizeof(float) * (size_t)rows, sizeof(float) * (size_t)rows, sizeof(float) * (size_t)(rows * C),
                            sizeof(float) * (size_t)(L * C * F), sizeof(float) * (size_t)(L * C), sizeof(float) * (size_t)(L * C * F),
                            sizeof(float) * (size_t)(L * C), sizeof(float) * (size_t)(C * F), sizeof(float) * (size_t)C};
    if (!hx || !hxv || !hl || !hvl || !hidx || !hw || !hlog || !keys)
        EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "linear probe: out of memory");
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) EX_CHECK_GOTO(ex_be_alloc(be, sizes[k], bufs[k], err), st, done);
    for (int64_t i = 0; i < n; i++) hl[i] = (int32_t)tr->labels[i];
    for (int64_t i = 0; i < nv; i++) hvl[i] = (int32_t)va->labels[i];
    EX_CHECK_GOTO(ex_be_upload(be, d.x, hx, sizes[0], err), st, done);
    EX_CHECK_GOTO(ex_be_upload(be, d.xv, hxv, sizes[1], err), st, done);
    EX_CHECK_GOTO(ex_be_upload(be, d.labels, hl, sizes[2], err), st, done);
    EX_CHECK_GOTO(ex_be_upload(be, d.vlabels, hvl, sizes[3], err), st, done);
    /* init: N(0, 0.01) per classifier, from the init stream */
    ex_rng r = ex_rng_seed(o->seed, EX_RNG_INIT);
    for (int64_t l = 0; l < L; l++) {
        for (int64_t i = 0; i < C * F; i++) hw[i] = 0.01f * ex_rng_normal_at(r.key, r.offset++, 0);
        EX_CHECK_GOTO(ex_be_upload(be, d.w + l * C * F, hw, sizeof(float) * (size_t)(C * F), err), st, done);
    }
    OPC(fill(be->ctx, d.b, 0.0f, L * C), "fill");
    OPC(fill(be->ctx, d.vw, 0.0f, L * C * F), "fill");
    OPC(fill(be->ctx, d.vb, 0.0f, L * C), "fill");
    OPC(fill(be->ctx, d.dlosses, 1.0f / (float)B, B), "fill");
    const int64_t iters_per_epoch = n / B, T = iters_per_epoch * o->epochs;
    ex_rng data = ex_rng_seed(o->seed, EX_RNG_DATA);
    int64_t t = 0;
    for (int64_t e = 0; e < o->epochs; e++) {
        /* per-epoch order: stable argsort of uniforms (drop the last partial batch, as drop_last) */
        for (int64_t i = 0; i < n; i++) {
            keys[i] = ex_rng_uniform_at(data.key, (uint64_t)e * (uint64_t)n, (uint64_t)i);
            hidx[i] = (int32_t)i;
        }
        keyed_index *pairs = malloc(sizeof(keyed_index) * (size_t)n);
        if (!pairs) EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "out of memory");
        for (int64_t i = 0; i < n; i++) pairs[i] = (keyed_index){keys[i], (int32_t)i};
        qsort(pairs, (size_t)n, sizeof(keyed_index), cmp_keyed_index);
        for (int64_t i = 0; i < n; i++) hidx[i] = pairs[i].i;
        free(pairs);
        for (int64_t it = 0; it < iters_per_epoch; it++, t++) {
            EX_CHECK_GOTO(ex_be_upload(be, d.idx, hidx + it * B, sizeof(int32_t) * (size_t)B, err), st, done);
            OPC(gather_rows(be->ctx, d.xb, d.x, d.idx, 1, B, n, F), "gather_rows");
            OPC(gather_rows(be->ctx, (float *)d.yb, (const float *)d.labels, d.idx, 1, B, n, 1), "gather_rows"); /* labels: 4-byte rows */
            const double cosf = 0.5 * (1.0 + cos(M_PI * (double)t / (double)T));
            for (int64_t l = 0; l < L; l++) {
                float *w = d.w + l * C * F, *b = d.b + l * C, *vw = d.vw + l * C * F, *vb = d.vb + l * C;
                EX_CHECK_GOTO(ex_be_linear_fwd(be, d.logits, d.xb, EX_F32, w, EX_F32, b, B, F, C, err), st, done);
                OPC(xent_fwd(be->ctx, d.losses, d.probs, d.logits, d.yb, NULL, B, C), "xent_fwd");
                OPC(fill(be->ctx, d.dlogits, 0.0f, B * C), "fill");
                OPC(xent_bwd(be->ctx, d.dlogits, d.dlosses, d.probs, d.yb, NULL, B, C), "xent_bwd");
                OPC(fill(be->ctx, d.gw, 0.0f, C * F), "fill");
                OPC(fill(be->ctx, d.gb, 0.0f, C), "fill");
                EX_CHECK_GOTO(ex_be_linear_bwd(be, NULL, d.gw, d.gb, d.dlogits, d.xb, EX_F32, w, EX_F32, B, F, C, err), st, done);
                const float lr = (float)(o->lrs[l] * cosf);
                OPC(axpby(be->ctx, vw, 1.0f, d.gw, 0.9f, C * F), "axpby"); /* buf = 0.9 buf + g */
                OPC(axpby(be->ctx, vb, 1.0f, d.gb, 0.9f, C), "axpby");
                OPC(axpby(be->ctx, w, -lr, vw, 1.0f, C * F), "axpby"); /* w -= lr buf */
                OPC(axpby(be->ctx, b, -lr, vb, 1.0f, C), "axpby");
            }
        }
        if (progress) fprintf(progress, "\rlinear probe: %lld blocks%s, epoch %lld/%lld", (long long)nb, avg ? " + avgpool" : "",
                              (long long)(e + 1), (long long)o->epochs);
    }
    if (progress) fprintf(progress, "\n");
    for (int64_t l = 0; l < L; l++) {
        EX_CHECK_GOTO(ex_be_linear_fwd(be, d.logits, d.xv, EX_F32, d.w + l * C * F, EX_F32, d.b + l * C, nv, F, C, err), st, done);
        EX_CHECK_GOTO(ex_be_download(be, hlog, d.logits, sizeof(float) * (size_t)(nv * C), err), st, done);
        int64_t correct = 0;
        for (int64_t i = 0; i < nv; i++) {
            int64_t arg = 0;
            for (int64_t c = 1; c < C; c++)
                if (hlog[i * C + c] > hlog[i * C + arg]) arg = c;
            correct += arg == hvl[i];
        }
        res[l].nblocks = nb;
        res[l].avgpool = avg;
        res[l].lr = o->lrs[l];
        res[l].top1 = 100.0 * (double)correct / (double)nv;
    }
done:
    for (size_t k = 0; k < sizeof bufs / sizeof *bufs; k++)
        if (*bufs[k]) ex_be_free(be, *bufs[k]);
    free(hx);
    free(hxv);
    free(hl);
    free(hvl);
    free(hidx);
    free(hw);
    free(hlog);
    free(keys);
    return st;
}

ex_status ex_linear_probe(ex_backend *be, const ex_features *train, const ex_features *val, int64_t classes,
                          const ex_probe_opts *o, ex_probe_result *results, int cap, int *count, int *best, FILE *progress,
                          ex_err *err) {
    EX_ENSURE(train->dim == val->dim && train->nblocks == val->nblocks, err, EX_E_SHAPE,
              "linear probe: train and evaluation features differ in shape");
    EX_ENSURE(classes >= 2 && o->nlrs >= 1 && o->batch >= 1 && o->epochs >= 1, err, EX_E_INVALID,
              "linear probe: %lld classes, %d learning rates", (long long)classes, o->nlrs);
    for (int64_t i = 0; i < train->n; i++)
        EX_ENSURE(train->labels[i] >= 0 && train->labels[i] < classes, err, EX_E_RANGE,
                  "linear probe: training sample %lld has label %lld (classes: %lld)", (long long)i,
                  (long long)train->labels[i], (long long)classes);
    *count = 0;
    *best = 0;
    for (int k = 0; k < o->nnb; k++) {
        const int64_t nb = o->nblocks[k];
        EX_ENSURE(nb >= 1 && nb <= train->nblocks, err, EX_E_CONFIG,
                  "linear probe: %lld blocks asked for, features hold %lld", (long long)nb, (long long)train->nblocks);
        for (int avg = 0; avg <= 1; avg++) {
            if ((o->avgpool == 0 && avg) || (o->avgpool == 1 && !avg)) continue;
            EX_ENSURE(*count + o->nlrs <= cap, err, EX_E_RANGE, "linear probe: too many classifiers");
            EX_CHECK(probe_variant(be, train, val, classes, nb, avg, o, results + *count, progress, err));
            *count += o->nlrs;
        }
    }
    for (int i = 0; i < *count; i++)
        if (results[i].top1 > results[*best].top1) *best = i;
    return EX_OK;
}
