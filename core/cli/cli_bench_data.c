/*
 * core/cli/cli_bench_data.c — `explora bench data --list FILE [--iters P] [--warmup W] [--workers N]`:
 * the data-pipeline benchmark (docs/PERFORMANCE.md, "Data pipeline"; bench/data.sh runs it beside
 * bench/bench_data_torch.py, Pillow + torchvision, on the same files).
 *
 * FILE is an `imagelist` dataset list (one image path per line). Two figures, each over P passes through
 * the list after W untimed passes, all on the calling thread:
 *
 *   decode      the dataset's `get`: read the file, decode it to RGB floats in [0, 1] (ex_image_load)
 *   multi-crop  the whole training input path, ex_loader with workers = 0: decode, then DINOv2's
 *               multi-crop recipe — 2 global views 224 x 224 (RandomResizedCrop scale 0.32..1, bicubic)
 *               and 8 local views 98 x 98 (scale 0.05..0.32), each with horizontal flip 0.5,
 *               ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8, RandomGrayscale 0.2, GaussianBlur(9, sigma 0.1..2)
 *               with the released code's effective probabilities (0, 0.9, 0.5 for locals), RandomSolarize
 *               p 0.2 on the second global view, then ImageNet normalisation into (3, h, w) floats —
 *               the recipe the dinov2 objective declares with its default keys (plugins/dinov2).
 *
 * With --workers N > 0 a third figure runs the loader with N decoding threads (the rate a training run
 * gets; it counts threads, not cores). Rates are images per second; "per thread" divides by the threads
 * that decode. One "bench-data-result" line of key=value pairs goes to stdout for scripts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "explora/loader.h"

#define BD_LOCAL_VIEWS 8

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* DINOv2's default multi-crop recipe (the dinov2 objective's `views` with its default keys). */
static void dinov2_recipe(ex_view_recipe *r) {
    memset(r, 0, sizeof *r);
    r->count = 2 + BD_LOCAL_VIEWS;
    for (int v = 0; v < r->count; v++) {
        ex_view_spec *s = &r->views[v];
        const int global = v < 2;
        s->height = s->width = global ? 224 : 98;
        s->scale_min = global ? 0.32 : 0.05;
        s->scale_max = global ? 1.0 : 0.32;
        s->ratio_min = 3.0 / 4.0;
        s->ratio_max = 4.0 / 3.0;
        s->flip_p = 0.5;
        s->brightness = 0.4, s->contrast = 0.4, s->saturation = 0.2, s->hue = 0.1;
        s->jitter_p = 0.8;
        s->grayscale_p = 0.2;
        s->blur_p = v == 0 ? 0.0 : v == 1 ? 0.9 : 0.5;
        s->blur_sigma_min = 0.1, s->blur_sigma_max = 2.0;
        s->solarize_p = v == 1 ? 0.2 : 0.0;
        s->solarize_threshold = 128.0;
    }
}

/* Decode every image `passes` times through the dataset's get; returns the seconds taken. */
static ex_status time_decode(const ex_dataset_vtable *vt, void *ds, int64_t n, int passes, double *secs, ex_err *err) {
    const double t0 = now_s();
    for (int p = 0; p < passes; p++) {
        for (int64_t i = 0; i < n; i++) {
            ex_sample smp = {0};
            ex_status st = vt->get(ds, i, &smp, err);
            ex_sample_clear(&smp);
            if (st != EX_OK) {
                ex_err_prefix(err, "bench data, image %lld: ", (long long)i);
                return st;
            }
        }
    }
    *secs = now_s() - t0;
    return EX_OK;
}

/* Run the loader (workers threads, 0: the caller) over `passes` epochs after `warmup` untimed ones. */
static ex_status time_loader(const ex_dataset_vtable *vt, void *ds, int64_t n, int workers, int warmup, int passes,
                             double *secs, ex_err *err) {
    static const double mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};
    ex_view_recipe recipe;
    dinov2_recipe(&recipe);
    ex_loader l;
    /* one batch = one pass over the list, so every timed image is a different file of the list */
    EX_CHECK(ex_loader_init(&l, vt, ds, &recipe, n, 3, mean, std, 0, workers, 0, 1, 0, err));
    ex_status st = EX_OK;
    for (int p = 0; p < warmup && st == EX_OK; p++) st = ex_loader_next(&l, err);
    const double t0 = now_s();
    for (int p = 0; p < passes && st == EX_OK; p++) st = ex_loader_next(&l, err);
    *secs = now_s() - t0;
    ex_loader_free(&l);
    return st;
}

int cli_bench_data(const cli_args *a) {
    if (!a->bench_list || a->npositional != 1 || a->bench_model || a->bench_policy || a->bench_batch) {
        fprintf(stderr, "explora: error: usage: explora bench data --list FILE [--iters P] [--warmup W] "
                        "[--workers N]\n");
        return CLI_USAGE;
    }
    const int passes = a->bench_iters > 0 ? a->bench_iters : 3;
    const int warmup = a->bench_warmup >= 0 ? a->bench_warmup : 1;
    const int workers = a->bench_workers;
    char set_name[64], set_list[4200];
    snprintf(set_name, sizeof set_name, "data.name=imagelist");
    if ((size_t)snprintf(set_list, sizeof set_list, "data.list=%s", a->bench_list) >= sizeof set_list) {
        fprintf(stderr, "explora: error: bench data --list: the path is longer than 4096 bytes.\n");
        return CLI_USAGE;
    }
    ex_session_options opt;
    memset(&opt, 0, sizeof opt);
    opt.ndirs = a->session.ndirs;
    for (int i = 0; i < a->session.ndirs; i++) opt.plugin_dirs[i] = a->session.plugin_dirs[i];
    opt.sets[0] = set_name, opt.sets[1] = set_list, opt.nsets = 2;
    ex_session s;
    ex_err err;
    ex_err_clear(&err);
    if (ex_session_open(&s, &opt, &err) != EX_OK) return cli_report(a, &err);
    const ex_plugin *p = NULL;
    void *ds = NULL;
    int rc = CLI_OK;
    if (ex_session_validate(&s, &err) != EX_OK || cli_open_dataset(&s, "data", &p, &ds, &err) != EX_OK) {
        rc = cli_report(a, &err);
        ex_session_close(&s);
        return rc;
    }
    const ex_dataset_vtable *vt = &p->vtable_copy.dataset;
    const int64_t n = vt->length(ds);
    double t_dec = 0, t_mc = 0, t_mt = 0;
    ex_status st = EX_OK;
    if (n < 1) {
        ex_err_set(&err, EX_E_INVALID, __FILE__, __LINE__, "bench data: the list '%s' has no images", a->bench_list);
        st = EX_E_INVALID;
    }
    if (st == EX_OK) st = time_decode(vt, ds, n, warmup, &t_dec, &err);
    if (st == EX_OK) st = time_decode(vt, ds, n, passes, &t_dec, &err);
    if (st == EX_OK) st = time_loader(vt, ds, n, 0, warmup, passes, &t_mc, &err);
    if (st == EX_OK && workers > 0) st = time_loader(vt, ds, n, workers, warmup, passes, &t_mt, &err);
    if (st != EX_OK) {
        rc = cli_report(a, &err);
    } else {
        const double imgs = (double)n * passes;
        const double r_dec = imgs / t_dec, r_mc = imgs / t_mc;
        printf("bench data: %lld images from %s, %d timed passes (%d warm-up)\n", (long long)n, a->bench_list, passes,
               warmup);
        printf("  decode                       %8.1f images/s  (1 thread)\n", r_dec);
        printf("  decode + DINOv2 multi-crop   %8.1f images/s  (1 thread; 2 x 224 + %d x 98 views)\n", r_mc,
               BD_LOCAL_VIEWS);
        if (workers > 0)
            printf("  the same, %2d loader threads  %8.1f images/s  (%.1f per thread)\n", workers, imgs / t_mt,
                   imgs / t_mt / workers);
        printf("bench-data-result impl=explora images=%lld passes=%d decode_ips=%.3f multicrop_ips=%.3f workers=%d "
               "multicrop_workers_ips=%.3f\n",
               (long long)n, passes, r_dec, r_mc, workers, workers > 0 ? imgs / t_mt : 0.0);
    }
    vt->close(ds);
    ex_session_close(&s);
    return rc;
}
