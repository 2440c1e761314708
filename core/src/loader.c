/*
 * core/src/loader.c — epoch order, sharding, augmentation, batching and the
 * worker threads (see explora/loader.h).
 *
 * The stream of images is a sequence of items 0, 1, 2, ... since the last
 * init/seek; item i is row i % batch of batch i / batch. A cursor (epoch,
 * position in this rank's share, the epoch's permutation) hands out items
 * strictly in order: under the pipe's lock when threads run, directly
 * otherwise. What an item produces depends only on (seed, epoch, image, view)
 * (the augmentation counter), never on which thread makes it or when.
 *
 * Threads: batch k lives in slot k % nslots (nslots = workers + 1). A worker
 * may claim an item of batch k only when k < released + nslots, where
 * `released` counts the batches the consumer has given back (the batch
 * returned by ex_loader_next is held until the next call). A slot is ready
 * when all its rows are done, successfully or not; the first failing row (by
 * row number) is what the consumer sees, and no item past that batch is
 * claimed, so an error never leaves anyone waiting.
 */
#include "explora/loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "explora/rng.h"

/* Draws one view may use from its own counter range (RandomResizedCrop uses at most ~50, colour ~12). */
#define EX_VIEW_COUNTER_SPAN 4096

typedef struct slot {
    float *views[EX_MAX_VIEWS];
    int64_t *labels;
    int64_t batch_no;        /* the batch this slot holds (-1: none) */
    int64_t filled;          /* rows finished, successfully or not */
    int64_t end_epoch, end_pos; /* the cursor after the batch's last row */
    int64_t err_row;         /* first failing row, -1: none */
    ex_err err;
    int64_t skipped;         /* unreadable samples replaced in this batch (skip_bad) */
    int64_t note_row;        /* row of `note` (-1: none): the first skip of the batch by row */
    ex_err note;
} slot;

typedef struct worker {
    struct ex_loader_pipe *pipe;
    ex_loader *l;
    float *scratch;          /* one resized view (h, w, c) */
    float *tmp;              /* colour/blur scratch of the same size */
    pthread_t thread;
    int started;
} worker;

struct ex_loader_pipe {
    int nslots;
    slot *slots;
    /* the cursor: the next item's (epoch, pos) and the permutation of cur_epoch */
    int64_t cur_epoch, cur_pos, order_epoch;
    int32_t *order;
    int64_t next_item;       /* items handed out since the last reset */
    int64_t delivered;       /* batches returned to the consumer */
    int64_t released;        /* batches given back by the consumer */
    int64_t stop_item;       /* no item at or past this is handed out (after an error) */
    int failed;              /* the consumer got an error; repeated until seek */
    ex_err failure;
    /* threads */
    int nworkers;
    worker *workers;         /* nworkers, or 1 (the caller's scratch) without threads */
    int busy, paused, quit;
    int sync_ok;             /* mutex and condition variables initialised */
    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* workers: an item may be claimable */
    pthread_cond_t ready_cv; /* consumer: a slot may be ready; seek: the workers may be idle */
};

typedef struct keyed {
    float key;
    int32_t index;
} keyed;

static int cmp_keyed(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->index - y->index;
}

/* The permutation of `epoch` into order (stable argsort of uniforms at counter epoch * n). */
static ex_status shuffle_epoch(const ex_loader *l, int64_t epoch, int32_t *order, ex_err *err) {
    keyed *k = malloc(sizeof(keyed) * (size_t)l->n);
    EX_ENSURE(k, err, EX_E_NOMEM, "loader: out of memory");
    ex_rng r = ex_rng_seed(l->seed, EX_RNG_DATA);
    for (int64_t i = 0; i < l->n; i++) {
        k[i].key = ex_rng_uniform_at(r.key, (uint64_t)epoch * (uint64_t)l->n, (uint64_t)i);
        k[i].index = (int32_t)i;
    }
    qsort(k, (size_t)l->n, sizeof(keyed), cmp_keyed);
    for (int64_t i = 0; i < l->n; i++) order[i] = k[i].index;
    free(k);
    return EX_OK;
}

/* Next item of the stream: its epoch and dataset index (caller holds the lock when threads run). */
static ex_status cursor_take(ex_loader *l, int64_t *epoch, int64_t *index, ex_err *err) {
    struct ex_loader_pipe *p = l->pipe;
    if (p->cur_pos == l->shard) {
        p->cur_epoch++;
        p->cur_pos = 0;
    }
    if (p->order_epoch != p->cur_epoch) {
        p->order_epoch = -1;
        EX_CHECK(shuffle_epoch(l, p->cur_epoch, p->order, err));
        p->order_epoch = p->cur_epoch;
    }
    *epoch = p->cur_epoch;
    *index = p->order[l->rank + p->cur_pos * l->world];
    p->cur_pos++;
    return EX_OK;
}

static void colour_from_spec(const ex_view_spec *s, ex_colour_params *c) {
    c->brightness = s->brightness;
    c->contrast = s->contrast;
    c->saturation = s->saturation;
    c->hue = s->hue;
    c->jitter_p = s->jitter_p;
    c->grayscale_p = s->grayscale_p;
    c->blur_p = s->blur_p;
    c->blur_sigma_min = s->blur_sigma_min;
    c->blur_sigma_max = s->blur_sigma_max;
    c->solarize_p = s->solarize_p;
    c->solarize_threshold = s->solarize_threshold;
}

/* One view of one image into out (channels, h, w): crop, flip, colour (ex_colour_apply's draws follow
 * the crop's and the flip's on the view's counter), normalise. */
static ex_status make_view(const ex_loader *l, worker *wk, const ex_sample *s, int64_t epoch, int64_t index, int v,
                           float *out, ex_err *err) {
    const ex_view_spec *spec = &l->recipe.views[v];
    ex_rng r = ex_rng_seed(l->seed, EX_RNG_AUGMENT);
    r.offset = (((uint64_t)epoch * (uint64_t)l->n + (uint64_t)index) * EX_MAX_VIEWS + (uint64_t)v) * EX_VIEW_COUNTER_SPAN;
    ex_box box = ex_rrc_sample(&r, s->height, s->width, spec->scale_min, spec->scale_max, spec->ratio_min, spec->ratio_max);
    if (s->channels > 16) EX_FAIL(err, EX_E_SHAPE, "loader: sample '%s' has %d channels", s->id, s->channels);
    EX_CHECK(ex_resize_crop(s->pixels, s->height, s->width, s->channels, box, l->filter, 0, wk->scratch, spec->height,
                            spec->width, err));
    if (spec->flip_p > 0.0 && ex_rng_next_uniform(&r) < spec->flip_p) ex_flip_h(wk->scratch, spec->height, spec->width, s->channels);
    ex_colour_params cp;
    colour_from_spec(spec, &cp);
    ex_status st = ex_colour_apply(&r, &cp, wk->scratch, spec->height, spec->width, s->channels, 0, wk->tmp, NULL, err);
    if (st == EX_OK)
        st = ex_normalize_chw(wk->scratch, spec->height, spec->width, s->channels, l->channels, l->mean, l->std, out, err);
    if (st != EX_OK) ex_err_prefix(err, "sample '%s': ", s->id);
    return st;
}

/* Decode sample `index` of epoch `epoch` into row `row` of slot `sl`. */
static ex_status make_sample(const ex_loader *l, worker *wk, slot *sl, int64_t row, int64_t epoch, int64_t index,
                             ex_err *err) {
    ex_sample s;
    memset(&s, 0, sizeof s);
    ex_status st = l->vt->get(l->ds, index, &s, err);
    for (int v = 0; v < l->recipe.count && st == EX_OK; v++) {
        const ex_view_spec *spec = &l->recipe.views[v];
        st = make_view(l, wk, &s, epoch, index, v, sl->views[v] + row * l->channels * spec->height * spec->width, err);
    }
    sl->labels[row] = s.label;
    ex_sample_clear(&s);
    if (st != EX_OK) ex_err_prefix(err, "loader, sample %lld (epoch %lld): ", (long long)index, (long long)epoch);
    return st;
}

/* Errors of one sample's data (a missing, truncated or corrupt file, a wrong band count, a bad label) that
 * skip_bad may step over; anything else (memory, a broken plugin) always stops. */
static int skippable(ex_status st) {
    return st == EX_E_IO || st == EX_E_FORMAT || st == EX_E_SHAPE || st == EX_E_RANGE;
}

/* Item (epoch, index) into row `row`. With skip_bad, an unreadable sample is replaced by the next readable one
 * of the dataset (index + 1, index + 2, ... mod n; a function of the index alone, so batches stay the same
 * whatever the threads); *skips counts the replaced samples and *note keeps the first one's error. */
static ex_status make_row(const ex_loader *l, worker *wk, slot *sl, int64_t row, int64_t epoch, int64_t index,
                          int64_t *skips, ex_err *note, ex_err *err) {
    for (int attempt = 0;; attempt++) {
        ex_err e;
        ex_err_clear(&e);
        const ex_status st = make_sample(l, wk, sl, row, epoch, (index + attempt) % l->n, &e);
        if (st == EX_OK) return EX_OK;
        if (!l->skip_bad || !skippable(st)) {
            *err = e;
            if (err->code == EX_OK) err->code = st;
            return st;
        }
        ++*skips;
        if (note->code == EX_OK) {
            *note = e;
            if (note->code == EX_OK) note->code = st;
        }
        if (attempt + 1 == EX_LOADER_SKIP_TRIES || attempt + 1 == l->n) {
            *err = e;
            ex_err_prefix(err, "loader: %d samples in a row from %lld on are unreadable (skip_bad gives up); the last: ",
                          attempt + 1, (long long)index);
            ex_err_hint(err, "check the dataset's paths and files (explora data CONFIG --show N).");
            if (err->code == EX_OK) err->code = st;
            return err->code;
        }
    }
}

/* Start slot `sl` for batch k (its first item was just handed out). */
static void slot_begin(slot *sl, int64_t k) {
    sl->batch_no = k;
    sl->filled = 0;
    sl->err_row = -1;
    ex_err_clear(&sl->err);
    sl->skipped = 0;
    sl->note_row = -1;
    ex_err_clear(&sl->note);
}

/* Under the lock (or single-threaded): record row `row`'s skips in its slot. */
static void slot_note_skips(slot *sl, int64_t row, int64_t skips, const ex_err *note) {
    if (skips == 0) return;
    sl->skipped += skips;
    if (sl->note_row < 0 || row < sl->note_row) {
        sl->note_row = row;
        sl->note = *note;
    }
}

/* ---------------------------------------------------------------------------
 * worker threads
 * --------------------------------------------------------------------------- */

static int claimable(const ex_loader *l, const struct ex_loader_pipe *p) {
    return !p->paused && p->next_item < p->stop_item && p->next_item / l->batch < p->released + p->nslots;
}

static void *worker_main(void *arg) {
    worker *wk = arg;
    ex_loader *l = wk->l;
    struct ex_loader_pipe *p = wk->pipe;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && !claimable(l, p)) pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->quit) break;
        const int64_t item = p->next_item++, k = item / l->batch, row = item % l->batch;
        slot *sl = &p->slots[k % p->nslots];
        if (row == 0) slot_begin(sl, k);
        int64_t epoch = 0, index = 0;
        ex_err err;
        ex_err_clear(&err);
        ex_status st = cursor_take(l, &epoch, &index, &err);
        if (row == l->batch - 1) {
            sl->end_epoch = p->cur_epoch;
            sl->end_pos = p->cur_pos;
        }
        p->busy++;
        pthread_mutex_unlock(&p->mu);
        int64_t skips = 0;
        ex_err note;
        ex_err_clear(&note);
        if (st == EX_OK) st = make_row(l, wk, sl, row, epoch, index, &skips, &note, &err);
        pthread_mutex_lock(&p->mu);
        p->busy--;
        slot_note_skips(sl, row, skips, &note);
        if (st != EX_OK) {
            if (sl->err_row < 0 || row < sl->err_row) {
                sl->err_row = row;
                sl->err = err;
                if (sl->err.code == EX_OK) sl->err.code = st;
            }
            if (p->stop_item > (k + 1) * l->batch) p->stop_item = (k + 1) * l->batch;
        }
        if (++sl->filled == l->batch || (p->paused && p->busy == 0)) pthread_cond_broadcast(&p->ready_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Put the stream at (epoch, pos) with nothing handed out (workers idle or absent). */
static void pipe_reset(ex_loader *l, int64_t epoch, int64_t pos) {
    struct ex_loader_pipe *p = l->pipe;
    p->cur_epoch = epoch;
    p->cur_pos = pos;
    p->next_item = p->delivered = p->released = 0;
    p->stop_item = INT64_MAX;
    p->failed = 0;
    for (int i = 0; i < p->nslots; i++) p->slots[i].batch_no = -1;
    l->epoch = epoch;
    l->pos = pos;
}

static void pipe_free(ex_loader *l) {
    struct ex_loader_pipe *p = l->pipe;
    if (!p) return;
    if (p->sync_ok) {
        pthread_mutex_lock(&p->mu);
        p->quit = 1;
        pthread_cond_broadcast(&p->work_cv);
        pthread_mutex_unlock(&p->mu);
    }
    for (int i = 0; p->workers && i < (p->nworkers > 0 ? p->nworkers : 1); i++) {
        if (p->workers[i].started) pthread_join(p->workers[i].thread, NULL);
        free(p->workers[i].scratch);
        free(p->workers[i].tmp);
    }
    if (p->sync_ok) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->work_cv);
        pthread_cond_destroy(&p->ready_cv);
    }
    for (int i = 0; p->slots && i < p->nslots; i++) {
        for (int v = 0; v < EX_MAX_VIEWS; v++) free(p->slots[i].views[v]);
        free(p->slots[i].labels);
    }
    free(p->slots);
    free(p->workers);
    free(p->order);
    free(p);
    l->pipe = NULL;
}

ex_status ex_loader_init(ex_loader *l, const ex_dataset_vtable *vt, void *ds, const ex_view_recipe *recipe,
                         int64_t batch, int64_t channels, const double *mean, const double *std, uint64_t seed,
                         int workers, int rank, int world, int skip_bad, ex_err *err) {
    memset(l, 0, sizeof *l);
    l->vt = vt;
    l->ds = ds;
    l->n = vt->length(ds);
    EX_ENSURE(l->n >= 1 && l->n < (int64_t)1 << 31, err, EX_E_INVALID, "loader: the dataset has %lld samples",
              (long long)l->n);
    EX_ENSURE(recipe->count >= 1 && recipe->count <= EX_MAX_VIEWS && channels >= 1 && channels <= 16, err,
              EX_E_INVALID, "loader: %d views, %lld channels", recipe->count, (long long)channels);
    EX_ENSURE(batch >= 1 && workers >= 0 && workers <= 256, err, EX_E_INVALID, "loader: batch %lld, %d workers",
              (long long)batch, workers);
    EX_ENSURE(world >= 1 && rank >= 0 && rank < world && world <= l->n, err, EX_E_INVALID,
              "loader: rank %d of %d over %lld samples", rank, world, (long long)l->n);
    l->recipe = *recipe;
    l->batch = batch;
    l->channels = channels;
    l->seed = seed;
    l->filter = EX_FILTER_BICUBIC;
    l->rank = rank;
    l->world = world;
    l->workers = workers;
    l->skip_bad = skip_bad != 0;
    l->shard = (l->n - rank + world - 1) / world;
    memcpy(l->mean, mean, sizeof(double) * (size_t)channels);
    memcpy(l->std, std, sizeof(double) * (size_t)channels);

    struct ex_loader_pipe *p = calloc(1, sizeof *p);
    EX_ENSURE(p, err, EX_E_NOMEM, "loader: out of memory");
    l->pipe = p;
    p->nworkers = workers;
    p->nslots = workers > 0 ? workers + 1 : 1;
    p->order_epoch = -1;
    p->order = malloc(sizeof(int32_t) * (size_t)l->n);
    p->slots = calloc((size_t)p->nslots, sizeof(slot));
    p->workers = calloc((size_t)(workers > 0 ? workers : 1), sizeof(worker));
    int ok = p->order && p->slots && p->workers;
    int64_t maxhw = 0;
    for (int v = 0; v < recipe->count; v++) {
        const ex_view_spec *s = &recipe->views[v];
        if (s->height * s->width > maxhw) maxhw = s->height * s->width;
    }
    for (int i = 0; ok && i < p->nslots; i++) {
        slot *sl = &p->slots[i];
        sl->labels = malloc(sizeof(int64_t) * (size_t)batch);
        ok = ok && sl->labels;
        for (int v = 0; ok && v < recipe->count; v++) {
            const ex_view_spec *s = &recipe->views[v];
            sl->views[v] = malloc(sizeof(float) * (size_t)(batch * channels * s->height * s->width));
            ok = ok && sl->views[v];
        }
    }
    for (int i = 0; ok && i < (workers > 0 ? workers : 1); i++) {
        p->workers[i].pipe = p;
        p->workers[i].l = l;
        p->workers[i].scratch = malloc(sizeof(float) * (size_t)(maxhw * 16));
        p->workers[i].tmp = malloc(sizeof(float) * (size_t)(maxhw * 16));
        ok = ok && p->workers[i].scratch && p->workers[i].tmp;
    }
    if (!ok) {
        ex_loader_free(l);
        EX_FAIL(err, EX_E_NOMEM, "loader: out of memory for batch %lld", (long long)batch);
    }
    pipe_reset(l, 0, 0);
    if (workers > 0) {
        if (pthread_mutex_init(&p->mu, NULL) != 0) {
            ex_loader_free(l);
            EX_FAIL(err, EX_E_INTERNAL, "loader: cannot create a mutex");
        }
        if (pthread_cond_init(&p->work_cv, NULL) != 0) {
            pthread_mutex_destroy(&p->mu);
            ex_loader_free(l);
            EX_FAIL(err, EX_E_INTERNAL, "loader: cannot create a condition variable");
        }
        if (pthread_cond_init(&p->ready_cv, NULL) != 0) {
            pthread_cond_destroy(&p->work_cv);
            pthread_mutex_destroy(&p->mu);
            ex_loader_free(l);
            EX_FAIL(err, EX_E_INTERNAL, "loader: cannot create a condition variable");
        }
        p->sync_ok = 1;
        for (int i = 0; i < workers; i++) {
            if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
                ex_loader_free(l);
                EX_FAIL(err, EX_E_INTERNAL, "loader: cannot start worker thread %d of %d", i + 1, workers);
            }
            p->workers[i].started = 1;
        }
    }
    return EX_OK;
}

ex_status ex_loader_seek(ex_loader *l, int64_t epoch, int64_t pos, ex_err *err) {
    EX_ENSURE(epoch >= 0 && pos >= 0 && pos <= l->shard, err, EX_E_RANGE,
              "loader: position (%lld, %lld) out of range (%lld images per epoch)", (long long)epoch, (long long)pos,
              (long long)l->shard);
    struct ex_loader_pipe *p = l->pipe;
    if (!p->sync_ok) {
        pipe_reset(l, epoch, pos);
        return EX_OK;
    }
    pthread_mutex_lock(&p->mu);
    p->paused = 1;
    while (p->busy > 0) pthread_cond_wait(&p->ready_cv, &p->mu);
    pipe_reset(l, epoch, pos);
    p->paused = 0;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    return EX_OK;
}

/* Hand batch `delivered` of a ready slot to the consumer, or its error. */
static ex_status deliver(ex_loader *l, slot *sl, ex_err *err) {
    struct ex_loader_pipe *p = l->pipe;
    p->delivered++;
    if (sl->err_row >= 0) {
        p->failed = 1;
        p->failure = sl->err;
        if (err) *err = sl->err;
        return sl->err.code;
    }
    for (int v = 0; v < EX_MAX_VIEWS; v++) l->views[v] = sl->views[v];
    l->labels = sl->labels;
    if (sl->skipped > 0) {
        if (l->skipped == 0) l->first_skip = sl->note;
        l->skipped += sl->skipped;
    }
    l->epoch = sl->end_epoch;
    l->pos = sl->end_pos;
    return EX_OK;
}

ex_status ex_loader_next(ex_loader *l, ex_err *err) {
    struct ex_loader_pipe *p = l->pipe;
    if (p->failed) {
        if (err) *err = p->failure;
        return p->failure.code;
    }
    if (!p->sync_ok) {
        slot *sl = &p->slots[0];
        slot_begin(sl, p->delivered);
        ex_status st = EX_OK;
        for (int64_t row = 0; row < l->batch && st == EX_OK; row++) {
            int64_t epoch = 0, index = 0;
            ex_err e;
            ex_err_clear(&e);
            st = cursor_take(l, &epoch, &index, &e);
            int64_t skips = 0;
            ex_err note;
            ex_err_clear(&note);
            if (st == EX_OK) st = make_row(l, &p->workers[0], sl, row, epoch, index, &skips, &note, &e);
            slot_note_skips(sl, row, skips, &note);
            if (st != EX_OK) {
                sl->err_row = row;
                sl->err = e;
                if (sl->err.code == EX_OK) sl->err.code = st;
            }
        }
        sl->end_epoch = p->cur_epoch;
        sl->end_pos = p->cur_pos;
        return deliver(l, sl, err);
    }
    pthread_mutex_lock(&p->mu);
    if (p->released < p->delivered) { /* give back the batch returned last time */
        p->released = p->delivered;
        pthread_cond_broadcast(&p->work_cv);
    }
    slot *sl = &p->slots[p->delivered % p->nslots];
    while (sl->batch_no != p->delivered || sl->filled < l->batch) pthread_cond_wait(&p->ready_cv, &p->mu);
    ex_status st = deliver(l, sl, err);
    pthread_mutex_unlock(&p->mu);
    return st;
}

void ex_loader_free(ex_loader *l) {
    pipe_free(l);
    memset(l, 0, sizeof *l);
}
