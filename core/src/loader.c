/*
 * core/src/loader.c — epoch order, augmentation and batching (see explora/loader.h).
 */
#include "explora/loader.h"

#include <stdlib.h>
#include <string.h>

#include "explora/rng.h"

/* Draws one view may use from its own counter range (RandomResizedCrop uses at most ~50). */
#define EX_VIEW_COUNTER_SPAN 4096

typedef struct keyed {
    float key;
    int32_t index;
} keyed;

static int cmp_keyed(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->index - y->index;
}

static ex_status shuffle_epoch(ex_loader *l, ex_err *err) {
    keyed *k = malloc(sizeof(keyed) * (size_t)l->n);
    EX_ENSURE(k, err, EX_E_NOMEM, "loader: out of memory");
    ex_rng r = ex_rng_seed(l->seed, EX_RNG_DATA);
    for (int64_t i = 0; i < l->n; i++) {
        k[i].key = ex_rng_uniform_at(r.key, (uint64_t)l->epoch * (uint64_t)l->n, (uint64_t)i);
        k[i].index = (int32_t)i;
    }
    qsort(k, (size_t)l->n, sizeof(keyed), cmp_keyed);
    for (int64_t i = 0; i < l->n; i++) l->order[i] = k[i].index;
    free(k);
    return EX_OK;
}

ex_status ex_loader_init(ex_loader *l, const ex_dataset_vtable *vt, void *ds, const ex_view_recipe *recipe,
                         int64_t batch, int64_t channels, const double *mean, const double *std, uint64_t seed,
                         ex_err *err) {
    memset(l, 0, sizeof *l);
    l->vt = vt;
    l->ds = ds;
    l->n = vt->length(ds);
    EX_ENSURE(l->n >= 1 && l->n < (int64_t)1 << 31, err, EX_E_INVALID, "loader: the dataset has %lld samples",
              (long long)l->n);
    EX_ENSURE(recipe->count >= 1 && recipe->count <= EX_MAX_VIEWS && channels >= 1 && channels <= 16, err,
              EX_E_INVALID, "loader: %d views, %lld channels", recipe->count, (long long)channels);
    l->recipe = *recipe;
    l->batch = batch;
    l->channels = channels;
    l->seed = seed;
    l->filter = EX_FILTER_BICUBIC;
    memcpy(l->mean, mean, sizeof(double) * (size_t)channels);
    memcpy(l->std, std, sizeof(double) * (size_t)channels);
    l->order = malloc(sizeof(int32_t) * (size_t)l->n);
    l->labels = malloc(sizeof(int64_t) * (size_t)batch);
    int64_t maxhw = 0;
    for (int v = 0; v < recipe->count; v++) {
        const ex_view_spec *s = &recipe->views[v];
        l->views[v] = malloc(sizeof(float) * (size_t)(batch * channels * s->height * s->width));
        if (!l->views[v]) break;
        if (s->height * s->width > maxhw) maxhw = s->height * s->width;
    }
    l->scratch = malloc(sizeof(float) * (size_t)(maxhw * 16));
    int ok = l->order && l->labels && l->scratch;
    for (int v = 0; v < recipe->count; v++) ok = ok && l->views[v];
    if (!ok) {
        ex_loader_free(l);
        EX_FAIL(err, EX_E_NOMEM, "loader: out of memory for batch %lld", (long long)batch);
    }
    return shuffle_epoch(l, err);
}

ex_status ex_loader_seek(ex_loader *l, int64_t epoch, int64_t pos, ex_err *err) {
    EX_ENSURE(epoch >= 0 && pos >= 0 && pos <= l->n, err, EX_E_RANGE, "loader: position (%lld, %lld) out of range",
              (long long)epoch, (long long)pos);
    l->epoch = epoch;
    l->pos = pos;
    return shuffle_epoch(l, err);
}

/* One view of one image into out (channels, h, w). */
static ex_status make_view(ex_loader *l, const ex_sample *s, int64_t index, int v, float *out, ex_err *err) {
    const ex_view_spec *spec = &l->recipe.views[v];
    ex_rng r = ex_rng_seed(l->seed, EX_RNG_AUGMENT);
    r.offset = (((uint64_t)l->epoch * (uint64_t)l->n + (uint64_t)index) * EX_MAX_VIEWS + (uint64_t)v) * EX_VIEW_COUNTER_SPAN;
    ex_box box = ex_rrc_sample(&r, s->height, s->width, spec->scale_min, spec->scale_max, spec->ratio_min, spec->ratio_max);
    if (s->channels > 16) EX_FAIL(err, EX_E_SHAPE, "loader: sample '%s' has %d channels", s->id, s->channels);
    EX_CHECK(ex_resize_crop(s->pixels, s->height, s->width, s->channels, box, l->filter, 0, l->scratch, spec->height,
                            spec->width, err));
    if (spec->flip_p > 0.0 && ex_rng_next_uniform(&r) < spec->flip_p) ex_flip_h(l->scratch, spec->height, spec->width, s->channels);
    ex_status st = ex_normalize_chw(l->scratch, spec->height, spec->width, s->channels, l->channels, l->mean, l->std, out, err);
    if (st != EX_OK) ex_err_prefix(err, "sample '%s': ", s->id);
    return st;
}

ex_status ex_loader_next(ex_loader *l, ex_err *err) {
    for (int64_t b = 0; b < l->batch; b++) {
        if (l->pos == l->n) {
            l->epoch++;
            l->pos = 0;
            EX_CHECK(shuffle_epoch(l, err));
        }
        const int64_t index = l->order[l->pos++];
        ex_sample s;
        memset(&s, 0, sizeof s);
        ex_status st = l->vt->get(l->ds, index, &s, err);
        if (st != EX_OK) {
            ex_err_prefix(err, "loader, sample %lld: ", (long long)index);
            ex_sample_clear(&s);
            return st;
        }
        for (int v = 0; v < l->recipe.count && st == EX_OK; v++) {
            const ex_view_spec *spec = &l->recipe.views[v];
            st = make_view(l, &s, index, v, l->views[v] + b * l->channels * spec->height * spec->width, err);
        }
        l->labels[b] = s.label;
        ex_sample_clear(&s);
        EX_CHECK(st);
    }
    return EX_OK;
}

void ex_loader_free(ex_loader *l) {
    free(l->order);
    free(l->labels);
    free(l->scratch);
    for (int v = 0; v < EX_MAX_VIEWS; v++) free(l->views[v]);
    memset(l, 0, sizeof *l);
}
