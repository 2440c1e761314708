/*
 * core/src/eval_input.c — samples of a dataset through the evaluation
 * transform, in order, in batches; unreadable ones dropped under skip_bad
 * (see explora/eval_input.h).
 */
#include "explora/eval_input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/augment.h"

ex_status ex_eval_transform(const ex_sample *s, int64_t H, int64_t W, int64_t C, int64_t resize, const double *mean,
                            const double *std, float *scratch, float *out, ex_err *err) {
    EX_ENSURE(s->channels >= 1 && s->channels <= 16 && (s->channels == C || (s->channels == 1 && C == 3)), err,
              EX_E_SHAPE, "'%s' has %d channels; the model takes %lld.", s->id, s->channels, (long long)C);
    const float *src = s->pixels;
    if (resize > 0) {
        EX_CHECK(ex_resize_center_crop(s->pixels, s->height, s->width, s->channels, resize, EX_FILTER_BICUBIC, 0, scratch,
                                       H, W, err));
        src = scratch;
    } else if (s->height != H || s->width != W) {
        ex_err_set(err, EX_E_SHAPE, __FILE__, __LINE__, "'%s' is %dx%d, the model takes %lldx%lld ([backbone] image_size).",
                   s->id, s->height, s->width, (long long)H, (long long)W);
        ex_err_hint(err, "set [transform] resize (e.g. 256 for 224) to resize and centre-crop, or set [backbone] image_size "
                         "to their size (a multiple of the patch size).");
        return EX_E_SHAPE;
    }
    return ex_normalize_chw(src, H, W, s->channels, C, mean, std, out, err);
}

ex_status ex_eval_input_init(ex_eval_input *r, const ex_dataset_vtable *vt, void *ds, int64_t limit, int64_t height,
                             int64_t width, int64_t channels, int64_t resize, const double *mean, const double *std,
                             int skip_bad, ex_err *err) {
    memset(r, 0, sizeof *r);
    EX_ENSURE(height >= 1 && width >= 1 && channels >= 1 && channels <= 16 && resize >= 0 && limit >= 0, err, EX_E_INVALID,
              "evaluation input: bad sizes (%lldx%lld, %lld channels, resize %lld)", (long long)height, (long long)width,
              (long long)channels, (long long)resize);
    r->vt = vt;
    r->ds = ds;
    r->n = vt->length(ds);
    if (limit > 0 && limit < r->n) r->n = limit;
    EX_ENSURE(r->n >= 1, err, EX_E_INVALID, "the dataset is empty");
    r->height = height, r->width = width, r->channels = channels, r->resize = resize;
    for (int64_t c = 0; c < channels; c++) r->mean[c] = mean[c], r->std[c] = std[c];
    r->skip_bad = skip_bad != 0;
    r->scratch = malloc(sizeof(float) * (size_t)(height * width * 16));
    EX_ENSURE(r->scratch, err, EX_E_NOMEM, "evaluation input: out of memory");
    return EX_OK;
}

/* The errors of one sample's data that skip_bad drops (as the training loader does); anything else stops. */
static int skippable(ex_status st) {
    return st == EX_E_IO || st == EX_E_FORMAT || st == EX_E_SHAPE || st == EX_E_RANGE;
}

ex_status ex_eval_input_next(ex_eval_input *r, float *images, int64_t cap, ex_eval_row *rows, int64_t *got, ex_err *err) {
    *got = 0;
    const int64_t per = r->channels * r->height * r->width;
    while (*got < cap && r->next < r->n) {
        const int64_t i = r->next++;
        ex_sample s;
        memset(&s, 0, sizeof s);
        ex_err e;
        ex_err_clear(&e);
        ex_status st = r->vt->get(r->ds, i, &s, &e);
        if (st == EX_OK)
            st = ex_eval_transform(&s, r->height, r->width, r->channels, r->resize, r->mean, r->std, r->scratch,
                                   images + *got * per, &e);
        if (st == EX_OK && rows) {
            ex_eval_row *row = &rows[*got];
            row->index = i, row->label = s.label, row->group = s.group;
            snprintf(row->id, sizeof row->id, "%s", s.id);
        }
        ex_sample_clear(&s);
        if (st == EX_OK) {
            ++*got;
            r->read++;
            continue;
        }
        if (e.code == EX_OK) e.code = st;
        ex_err_prefix(&e, "sample %lld: ", (long long)i);
        if (!r->skip_bad || !skippable(st)) {
            *err = e;
            return st;
        }
        if (r->skipped++ == 0) r->first_skip = e;
    }
    if (r->next == r->n && r->read == 0 && r->skipped > 0) {
        *err = r->first_skip;
        ex_err_prefix(err, "all %lld samples are unreadable (skip_bad); the first: ", (long long)r->skipped);
        ex_err_hint(err, "check the dataset's paths and files (explora data CONFIG --show N).");
        return err->code;
    }
    return EX_OK;
}

void ex_eval_input_free(ex_eval_input *r) {
    if (!r) return;
    free(r->scratch);
    r->scratch = NULL;
}
