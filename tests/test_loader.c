/*
 * tests/test_loader.c — the batch loader (core/src/loader.c):
 *   - batches bitwise identical with 0, 1, 2 and 3 worker threads over two
 *     epochs (crops, flips and the DINOv2 colour recipe included);
 *   - each epoch's order is a permutation, and epochs differ;
 *   - sharding: ranks 0 and 1 of 2 cover every epoch exactly once together;
 *   - seek to a saved (epoch, pos) gives the same next batch, whatever the
 *     number of workers of either loader;
 *   - an error while decoding a sample stops the pipeline and comes back from
 *     ex_loader_next naming the sample index (a synthetic failing sample, and
 *     a corrupt file in an imagefolder tree), for every number of workers,
 *     without hanging; freeing a loader with batches in flight is clean
 *     (run under ASan in the Debug build);
 *   - skip_bad: unreadable samples are replaced by the next readable one
 *     (labels show which), counted, the first error kept, batches still the
 *     same for every number of workers; 16 unreadable in a row give up with a
 *     clear error; the corrupt imagefolder file is stepped over too.
 * The synthetic dataset is defined here: image i has a size and pixels that
 * are functions of i, and label i.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "explora/config.h"
#include "explora/eval_input.h"
#include "explora/loader.h"
#include "test_support.h"

/* ---------------------------------------------------------------------------
 * a synthetic dataset
 * --------------------------------------------------------------------------- */

typedef struct synth {
    int64_t n;
    int64_t bad;  /* index whose get fails, -1: none */
    int64_t bad2; /* a second one (0 in the initialisers above: set explicitly), -1: none */
    int all_bad;  /* every get fails */
} synth;

static uint32_t mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static ex_status synth_open(const ex_cfg_section *cfg, void **self, ex_err *err) {
    (void)cfg;
    (void)self;
    EX_FAIL(err, EX_E_INVALID, "not opened through a config");
}
static void synth_close(void *self) { (void)self; }
static int64_t synth_length(void *self) { return ((synth *)self)->n; }

static ex_status synth_get(void *self, int64_t index, ex_sample *out, ex_err *err) {
    const synth *s = self;
    memset(out, 0, sizeof *out);
    if (index == s->bad || index == s->bad2 || s->all_bad)
        EX_FAIL(err, EX_E_FORMAT, "synthetic sample %lld is corrupt", (long long)index);
    out->height = 20 + (int)(index % 7);
    out->width = 24 + (int)(index % 5);
    out->channels = 3;
    const size_t np = (size_t)out->height * (size_t)out->width * 3;
    out->pixels = malloc(sizeof(float) * np);
    EX_ENSURE(out->pixels, err, EX_E_NOMEM, "out of memory");
    for (size_t i = 0; i < np; i++) out->pixels[i] = (float)(mix((uint32_t)(index * 100003 + (int64_t)i)) % 256) / 255.0f;
    out->label = index;
    out->group = -1;
    snprintf(out->id, sizeof out->id, "synth-%lld", (long long)index);
    return EX_OK;
}

static const ex_dataset_vtable synth_vt = {synth_open, synth_close, synth_length, synth_get, NULL, NULL};

/* Two views: a 16x16 "global" with DINOv2's colour recipe (global-2: blur and solarize) and a 8x8 "local". */
static ex_view_recipe recipe(void) {
    ex_view_recipe r;
    memset(&r, 0, sizeof r);
    r.count = 2;
    for (int v = 0; v < 2; v++) {
        ex_view_spec *s = &r.views[v];
        s->height = s->width = v == 0 ? 16 : 8;
        s->scale_min = v == 0 ? 0.32 : 0.05;
        s->scale_max = v == 0 ? 1.0 : 0.32;
        s->ratio_min = 3.0 / 4.0;
        s->ratio_max = 4.0 / 3.0;
        s->flip_p = 0.5;
        s->brightness = 0.4;
        s->contrast = 0.4;
        s->saturation = 0.2;
        s->hue = 0.1;
        s->jitter_p = 0.8;
        s->grayscale_p = 0.2;
        s->blur_p = v == 0 ? 0.9 : 0.5;
        s->blur_sigma_min = 0.1;
        s->blur_sigma_max = 2.0;
        s->solarize_p = v == 0 ? 0.2 : 0.0;
        s->solarize_threshold = 128;
    }
    return r;
}

static const double k_mean[3] = {0.485, 0.456, 0.406}, k_std[3] = {0.229, 0.224, 0.225};

static void init_loader_skip(ex_loader *l, synth *ds, int64_t batch, int workers, int rank, int world, int skip_bad) {
    ex_view_recipe r = recipe();
    ex_err err;
    EXT_OK(ex_loader_init(l, &synth_vt, ds, &r, batch, 3, k_mean, k_std, 1234, workers, rank, world, skip_bad, &err), &err);
}

static void init_loader(ex_loader *l, synth *ds, int64_t batch, int workers, int rank, int world) {
    init_loader_skip(l, ds, batch, workers, rank, world, 0);
}

/* Floats of one batch: views then labels (as floats of the index). */
static int64_t batch_floats(const ex_loader *l) {
    int64_t total = l->batch;
    for (int v = 0; v < l->recipe.count; v++) total += l->batch * 3 * l->recipe.views[v].height * l->recipe.views[v].width;
    return total;
}

static void copy_batch(const ex_loader *l, float *out) {
    for (int v = 0; v < l->recipe.count; v++) {
        const int64_t m = l->batch * 3 * l->recipe.views[v].height * l->recipe.views[v].width;
        memcpy(out, l->views[v], sizeof(float) * (size_t)m);
        out += m;
    }
    for (int64_t b = 0; b < l->batch; b++) out[b] = (float)l->labels[b];
}

/* `nb` batches from a fresh loader into a (nb * batch_floats) buffer. */
static float *run_batches(synth *ds, int64_t batch, int workers, int nb) {
    ex_loader l;
    init_loader(&l, ds, batch, workers, 0, 1);
    const int64_t per = batch_floats(&l);
    float *all = malloc(sizeof(float) * (size_t)(per * nb));
    for (int k = 0; k < nb; k++) {
        ex_err err;
        EXT_OK(ex_loader_next(&l, &err), &err);
        copy_batch(&l, all + per * k);
    }
    ex_loader_free(&l);
    return all;
}

/* ---------------------------------------------------------------------------
 * tests
 * --------------------------------------------------------------------------- */

static void test_same_batches_whatever_the_workers(void **state) {
    (void)state;
    synth ds = {23, -1, -1, 0};
    const int64_t batch = 5;
    const int nb = 10; /* 50 images: two epochs of 23 and a bit of the third */
    ex_loader probe;
    init_loader(&probe, &ds, batch, 0, 0, 1);
    const int64_t per = batch_floats(&probe);
    ex_loader_free(&probe);
    float *ref = run_batches(&ds, batch, 0, nb);
    for (int workers = 1; workers <= 3; workers++) {
        float *got = run_batches(&ds, batch, workers, nb);
        for (int k = 0; k < nb; k++)
            if (memcmp(ref + per * k, got + per * k, sizeof(float) * (size_t)per) != 0)
                fail_msg("%d workers: batch %d differs from the synchronous loader's", workers, k);
        free(got);
    }
    /* the colour recipe did something: some values leave what crop + normalise alone could give? at least
     * the two views are not constant */
    int varied = 0;
    for (int64_t i = 1; i < per - batch; i++) varied += ref[i] != ref[0];
    assert_true(varied > 0);
    free(ref);
}

static void test_epoch_is_a_permutation(void **state) {
    (void)state;
    synth ds = {23, -1, -1, 0};
    for (int workers = 0; workers <= 2; workers += 2) {
        ex_loader l;
        init_loader(&l, &ds, 1, workers, 0, 1);
        int64_t seen[2][23];
        for (int e = 0; e < 2; e++) {
            int count[23] = {0};
            for (int i = 0; i < 23; i++) {
                ex_err err;
                EXT_OK(ex_loader_next(&l, &err), &err);
                assert_int_equal(l.epoch, e);
                assert_int_equal(l.pos, i + 1);
                assert_true(l.labels[0] >= 0 && l.labels[0] < 23);
                count[l.labels[0]]++;
                seen[e][i] = l.labels[0];
            }
            for (int i = 0; i < 23; i++) assert_int_equal(count[i], 1);
        }
        assert_true(memcmp(seen[0], seen[1], sizeof seen[0]) != 0);
        ex_loader_free(&l);
    }
}

static void test_sharding_covers_each_epoch_once(void **state) {
    (void)state;
    synth ds = {23, -1, -1, 0};
    int count[2][23];
    memset(count, 0, sizeof count);
    const int64_t shard_len[2] = {12, 11};
    for (int rank = 0; rank < 2; rank++) {
        ex_loader l;
        init_loader(&l, &ds, 1, rank == 0 ? 2 : 0, rank, 2);
        assert_int_equal(l.shard, shard_len[rank]);
        for (int e = 0; e < 2; e++)
            for (int64_t i = 0; i < shard_len[rank]; i++) {
                ex_err err;
                EXT_OK(ex_loader_next(&l, &err), &err);
                assert_int_equal(l.epoch, e);
                count[e][l.labels[0]]++;
            }
        ex_loader_free(&l);
    }
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < 23; i++)
            if (count[e][i] != 1) fail_msg("epoch %d: image %d taken %d times by the two ranks", e, i, count[e][i]);
    /* a rank's images are those of the unsharded order at its positions */
    ex_loader all, r1;
    init_loader(&all, &ds, 1, 0, 0, 1);
    init_loader(&r1, &ds, 1, 1, 1, 2);
    for (int i = 0; i < 23; i++) {
        ex_err err;
        EXT_OK(ex_loader_next(&all, &err), &err);
        if (i % 2 == 1) {
            EXT_OK(ex_loader_next(&r1, &err), &err);
            assert_int_equal(all.labels[0], r1.labels[0]);
            assert_memory_equal(all.views[0], r1.views[0], sizeof(float) * 3 * 16 * 16);
        }
    }
    ex_loader_free(&all);
    ex_loader_free(&r1);
    ex_err err;
    ex_loader bad;
    ex_view_recipe r = recipe();
    assert_int_equal(ex_loader_init(&bad, &synth_vt, &ds, &r, 1, 3, k_mean, k_std, 1, 0, 2, 2, 0, &err), EX_E_INVALID);
}

static void test_seek_gives_the_same_next_batch(void **state) {
    (void)state;
    synth ds = {23, -1, -1, 0};
    const int64_t batch = 4;
    for (int wa = 0; wa <= 3; wa += 3)
        for (int wb = 0; wb <= 2; wb += 2) {
            ex_loader a, b;
            init_loader(&a, &ds, batch, wa, 0, 1);
            init_loader(&b, &ds, batch, wb, 0, 1);
            const int64_t per = batch_floats(&a);
            float *want = malloc(sizeof(float) * (size_t)per), *got = malloc(sizeof(float) * (size_t)per);
            ex_err err;
            int64_t epoch = 0, pos = 0;
            for (int k = 0; k < 7; k++) { /* 28 images: past the first epoch's end */
                EXT_OK(ex_loader_next(&a, &err), &err);
                if (k == 4) {
                    epoch = a.epoch;
                    pos = a.pos;
                }
                if (k == 5) copy_batch(&a, want);
            }
            assert_int_equal(epoch, 0);
            assert_int_equal(pos, 20);
            EXT_OK(ex_loader_next(&b, &err), &err); /* b has prefetched and handed out something else */
            EXT_OK(ex_loader_seek(&b, epoch, pos, &err), &err);
            assert_int_equal(b.epoch, epoch);
            assert_int_equal(b.pos, pos);
            EXT_OK(ex_loader_next(&b, &err), &err);
            copy_batch(&b, got);
            if (memcmp(want, got, sizeof(float) * (size_t)per) != 0)
                fail_msg("workers %d / %d: the batch after seek(%lld, %lld) differs", wa, wb, (long long)epoch,
                         (long long)pos);
            assert_int_equal(b.epoch, 1); /* 20 + 4 crosses into epoch 1 */
            assert_int_equal(b.pos, 1);
            /* the end of an epoch is a valid position too */
            EXT_OK(ex_loader_seek(&a, 0, 23, &err), &err);
            EXT_OK(ex_loader_next(&a, &err), &err);
            assert_int_equal(a.epoch, 1);
            assert_int_equal(a.pos, 4);
            assert_int_equal(ex_loader_seek(&a, 0, 24, &err), EX_E_RANGE);
            free(want);
            free(got);
            ex_loader_free(&a);
            ex_loader_free(&b);
        }
}

static void test_sample_error_stops_the_pipeline(void **state) {
    (void)state;
    synth ds = {23, -1, -1, 0};
    /* find where image 9 falls in epoch 0 */
    ex_loader probe;
    init_loader(&probe, &ds, 1, 0, 0, 1);
    int at = -1;
    for (int i = 0; i < 23; i++) {
        ex_err err;
        EXT_OK(ex_loader_next(&probe, &err), &err);
        if (probe.labels[0] == 9) at = i;
    }
    ex_loader_free(&probe);
    assert_true(at >= 0);
    ds.bad = 9;
    const int64_t batch = 3;
    for (int workers = 0; workers <= 3; workers++) {
        ex_loader l;
        init_loader(&l, &ds, batch, workers, 0, 1);
        ex_err err;
        ex_status st = EX_OK;
        int k = 0;
        for (; k < 20 && st == EX_OK; k++) st = ex_loader_next(&l, &err);
        assert_int_equal(st, EX_E_FORMAT);
        assert_int_equal(k - 1, at / batch); /* the batch that holds the bad image */
        if (!strstr(err.msg, "sample 9") || !strstr(err.msg, "corrupt"))
            fail_msg("%d workers: the message lacks the sample: %s", workers, err.msg);
        ex_err again;
        assert_int_equal(ex_loader_next(&l, &again), EX_E_FORMAT); /* stays stopped */
        assert_string_equal(again.msg, err.msg);
        /* seek restarts the pipeline; freeing it with batches in flight is clean */
        EXT_OK(ex_loader_seek(&l, 1, 0, &err), &err);
        ex_loader_free(&l);
    }
}

/* ---------------------------------------------------------------------------
 * the evaluation input path (explora/eval_input.h)
 * --------------------------------------------------------------------------- */

/* Every sample in dataset order, each exactly what ex_eval_transform makes of it; limit honoured. */
static void test_eval_input_order_and_transform(void **state) {
    (void)state;
    synth ds = {11, -1, -1, 0};
    ex_eval_input in;
    ex_err err;
    EXT_OK(ex_eval_input_init(&in, &synth_vt, &ds, 0, 16, 16, 3, 20, k_mean, k_std, 0, &err), &err);
    float images[4 * 3 * 16 * 16], want[3 * 16 * 16], scratch[16 * 16 * 16];
    ex_eval_row rows[4];
    int64_t got = 0, seen = 0;
    do {
        EXT_OK(ex_eval_input_next(&in, images, 4, rows, &got, &err), &err);
        for (int64_t k = 0; k < got; k++, seen++) {
            assert_int_equal(rows[k].index, seen);
            assert_int_equal(rows[k].label, seen);
            ex_sample smp;
            EXT_OK(synth_get(&ds, seen, &smp, &err), &err);
            assert_string_equal(rows[k].id, smp.id);
            EXT_OK(ex_eval_transform(&smp, 16, 16, 3, 20, k_mean, k_std, scratch, want, &err), &err);
            ex_sample_clear(&smp);
            assert_memory_equal(images + k * 3 * 16 * 16, want, sizeof want);
        }
    } while (got > 0);
    assert_int_equal(seen, 11);
    assert_int_equal(in.skipped, 0);
    ex_eval_input_free(&in);
    /* limit 5: five rows, then the end */
    EXT_OK(ex_eval_input_init(&in, &synth_vt, &ds, 5, 16, 16, 3, 20, k_mean, k_std, 0, &err), &err);
    EXT_OK(ex_eval_input_next(&in, images, 4, rows, &got, &err), &err);
    assert_int_equal(got, 4);
    EXT_OK(ex_eval_input_next(&in, images, 4, rows, &got, &err), &err);
    assert_int_equal(got, 1);
    EXT_OK(ex_eval_input_next(&in, images, 4, rows, &got, &err), &err);
    assert_int_equal(got, 0);
    ex_eval_input_free(&in);
    /* without resize the sizes must match: an error naming the sample and what to set */
    EXT_OK(ex_eval_input_init(&in, &synth_vt, &ds, 0, 16, 16, 3, 0, k_mean, k_std, 0, &err), &err);
    assert_int_equal(ex_eval_input_next(&in, images, 4, rows, &got, &err), EX_E_SHAPE);
    if (!strstr(err.msg, "sample 0: 'synth-0' is 20x24") || !strstr(err.msg, "[transform] resize")) fail_msg("%s", err.msg);
    ex_eval_input_free(&in);
}

/* skip_bad drops (never repeats) unreadable samples and counts them; without it the first is an error. */
static void test_eval_input_skip_bad_drops(void **state) {
    (void)state;
    synth ds = {23, 9, 10, 0};
    ex_eval_input in;
    ex_err err;
    float images[4 * 3 * 16 * 16];
    ex_eval_row rows[4];
    int64_t got = 0;
    EXT_OK(ex_eval_input_init(&in, &synth_vt, &ds, 0, 16, 16, 3, 20, k_mean, k_std, 0, &err), &err);
    ex_status st = EX_OK;
    for (int i = 0; i < 10 && st == EX_OK; i++) st = ex_eval_input_next(&in, images, 4, rows, &got, &err);
    assert_int_equal(st, EX_E_FORMAT);
    if (!strstr(err.msg, "sample 9: ") || !strstr(err.msg, "corrupt")) fail_msg("%s", err.msg);
    ex_eval_input_free(&in);

    EXT_OK(ex_eval_input_init(&in, &synth_vt, &ds, 0, 16, 16, 3, 20, k_mean, k_std, 1, &err), &err);
    int64_t seen[32], n = 0;
    do {
        EXT_OK(ex_eval_input_next(&in, images, 4, rows, &got, &err), &err);
        for (int64_t k = 0; k < got; k++) seen[n++] = rows[k].index;
    } while (got > 0);
    assert_int_equal(n, 21);
    for (int64_t i = 0, j = 0; i < 23; i++)
        if (i != 9 && i != 10) assert_int_equal(seen[j++], i);
    assert_int_equal(in.skipped, 2);
    assert_int_equal(in.first_skip.code, EX_E_FORMAT);
    if (!strstr(in.first_skip.msg, "sample 9: ")) fail_msg("first skip: %s", in.first_skip.msg);
    ex_eval_input_free(&in);

    /* nothing readable: an error even with skip_bad */
    ds.all_bad = 1;
    EXT_OK(ex_eval_input_init(&in, &synth_vt, &ds, 0, 16, 16, 3, 20, k_mean, k_std, 1, &err), &err);
    st = EX_OK;
    for (int i = 0; i < 10 && st == EX_OK; i++) st = ex_eval_input_next(&in, images, 4, rows, &got, &err);
    assert_int_equal(st, EX_E_FORMAT);
    if (!strstr(err.msg, "all 23 samples are unreadable")) fail_msg("%s", err.msg);
    ex_eval_input_free(&in);
}

static void test_skip_bad_replaces_and_counts(void **state) {
    (void)state;
    synth ds = {23, 9, 10, 0}; /* 9 and 10 unreadable: both become 11 */
    const int64_t batch = 5;
    float *ref = NULL;
    for (int workers = 0; workers <= 3; workers++) {
        ex_loader l;
        init_loader_skip(&l, &ds, batch, workers, 0, 1, 1);
        ex_err err;
        int count[23] = {0};
        const int64_t nf = batch_floats(&l);
        float *buf = malloc(sizeof(float) * (size_t)(nf * 4));
        assert_non_null(buf);
        for (int k = 0; k < 4; k++) { /* 20 of epoch 0's 23 images */
            EXT_OK(ex_loader_next(&l, &err), &err);
            copy_batch(&l, buf + k * nf);
            for (int64_t r = 0; r < batch; r++) count[l.labels[r]]++;
        }
        /* the rest of epoch 0: 3 images, then 2 of epoch 1 */
        EXT_OK(ex_loader_next(&l, &err), &err);
        int seen9 = 0, seen10 = 0;
        for (int k = 0; k < 23; k++) {
            seen9 += k == 9 ? count[k] : 0;
            seen10 += k == 10 ? count[k] : 0;
        }
        assert_int_equal(seen9 + seen10, 0);
        assert_true(l.skipped >= 3); /* epoch 0: 9 (tries 9, 10) and 10 */
        assert_int_equal(l.first_skip.code, EX_E_FORMAT);
        if (!strstr(l.first_skip.msg, "corrupt") || (!strstr(l.first_skip.msg, "sample 9 ") && !strstr(l.first_skip.msg, "sample 10 ")))
            fail_msg("first skip: %s", l.first_skip.msg);
        if (!ref) {
            ref = buf;
        } else {
            if (memcmp(ref, buf, sizeof(float) * (size_t)(nf * 4)) != 0)
                fail_msg("%d workers: batches with skipped samples differ from 0 workers'", workers);
            free(buf);
        }
        ex_loader_free(&l);
    }
    free(ref);
    /* one batch of exactly epoch 0: sample 11 stands in for 9 and for 10, so it appears three times */
    {
        ex_loader l;
        init_loader_skip(&l, &ds, 23, 0, 0, 1, 1);
        ex_err err;
        EXT_OK(ex_loader_next(&l, &err), &err); /* exactly epoch 0 */
        int c11 = 0;
        for (int r = 0; r < 23; r++) c11 += l.labels[r] == 11;
        assert_int_equal(c11, 3);
        assert_int_equal(l.skipped, 3); /* 9's row: 9 and 10 fail; 10's row: 10 fails */
        ex_loader_free(&l);
    }
}

static void test_skip_bad_gives_up(void **state) {
    (void)state;
    synth ds = {40, -1, -1, 1};
    for (int workers = 0; workers <= 2; workers++) {
        ex_loader l;
        init_loader_skip(&l, &ds, 2, workers, 0, 1, 1);
        ex_err err;
        assert_int_equal(ex_loader_next(&l, &err), EX_E_FORMAT);
        if (!strstr(err.msg, "16 samples in a row") || !strstr(err.msg, "skip_bad gives up") || !strstr(err.msg, "corrupt"))
            fail_msg("%d workers: %s", workers, err.msg);
        ex_loader_free(&l);
    }
}

/* ---------------------------------------------------------------------------
 * a corrupt file in an imagefolder tree
 * --------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void copy_fixture(const char *name, const char *dst) {
    char path[4096];
    snprintf(path, sizeof path, "%s/images/%s", ext_env("EXPLORA_TEST_DATA_DIR"), name);
    FILE *fp = fopen(path, "rb");
    if (!fp) fail_msg("cannot open %s", path);
    unsigned char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    ext_write_file(dst, buf, n);
}

static void test_corrupt_image_in_imagefolder(void **state) {
    (void)state;
    char root[4096], path[8192];
    ext_tmp_path(root, sizeof root, "loader_imagefolder");
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(root, 0755);
    snprintf(path, sizeof path, "%s/a", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/b", root);
    mkdir(path, 0755);
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/a/%d.png", root, i);
        copy_fixture(i % 2 ? "rgb8.png" : "rgb420.jpg", path);
    }
    snprintf(path, sizeof path, "%s/b/broken.png", root);
    ext_write_file(path, "this is not a PNG file at all", 29); /* index 5: classes a, b in order */

    ex_registry *reg;
    const ex_plugin *plugin;
    ex_err err;
    EXT_OK(ex_registry_new(&reg, &err), &err);
    EXT_OK(ex_registry_add_dir(reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err), &err);
    EXT_OK(ex_registry_scan(reg, &err), &err);
    EXT_OK(ex_registry_find(reg, EX_PLUGIN_DATASET, "imagefolder", &plugin, &err), &err);
    const ex_dataset_vtable *vt = &plugin->vtable_copy.dataset;
    char text[8192];
    snprintf(text, sizeof text, "[data]\nname = imagefolder\nroot = %s\n", root);
    ex_config *cfg;
    EXT_OK(ex_config_load_string(&cfg, text, "loader-test.ini", &err), &err);
    ex_cfg_section view = {cfg, "data", plugin->desc.keys};
    void *ds = NULL;
    EXT_OK(vt->open(&view, &ds, &err), &err);
    assert_int_equal(vt->length(ds), 6);
    ex_view_recipe r = recipe();
    for (int workers = 0; workers <= 2; workers++) {
        ex_loader l;
        EXT_OK(ex_loader_init(&l, vt, ds, &r, 2, 3, k_mean, k_std, 5, workers, 0, 1, 0, &err), &err);
        ex_status st = EX_OK;
        int k = 0;
        for (; k < 3 && st == EX_OK; k++) st = ex_loader_next(&l, &err); /* one epoch */
        if (st == EX_OK) fail_msg("%d workers: an epoch over a corrupt image went through", workers);
        if (!strstr(err.msg, "sample 5") || !strstr(err.msg, "broken.png"))
            fail_msg("%d workers: the message lacks the sample index or the file: %s", workers, err.msg);
        ex_loader_free(&l);
        /* with skip_bad the epoch goes through, sample 0 stands in for it (5 + 1 mod 6), counted once */
        EXT_OK(ex_loader_init(&l, vt, ds, &r, 2, 3, k_mean, k_std, 5, workers, 0, 1, 1, &err), &err);
        int c0 = 0;
        for (int b = 0; b < 3; b++) {
            EXT_OK(ex_loader_next(&l, &err), &err);
            for (int j = 0; j < 2; j++) c0 += l.labels[j] == 0;
        }
        assert_int_equal(l.skipped, 1);
        if (!strstr(l.first_skip.msg, "broken.png")) fail_msg("first skip: %s", l.first_skip.msg);
        assert_int_equal(c0, 6); /* class a (label 0): its 5 images and the stand-in */
        ex_loader_free(&l);
    }
    vt->close(ds);
    ex_config_free(cfg);
    ex_registry_free(reg);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_batches_whatever_the_workers),
        cmocka_unit_test(test_epoch_is_a_permutation),
        cmocka_unit_test(test_sharding_covers_each_epoch_once),
        cmocka_unit_test(test_seek_gives_the_same_next_batch),
        cmocka_unit_test(test_sample_error_stops_the_pipeline),
        cmocka_unit_test(test_eval_input_order_and_transform),
        cmocka_unit_test(test_eval_input_skip_bad_drops),
        cmocka_unit_test(test_skip_bad_replaces_and_counts),
        cmocka_unit_test(test_skip_bad_gives_up),
        cmocka_unit_test(test_corrupt_image_in_imagefolder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
