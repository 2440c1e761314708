/*
 * core/cli/cli_finetune.c — supervised fine-tuning and its evaluation:
 *
 *   explora finetune CONFIG [--resume]
 *       the trainer with [objective] name = classify (a linear head on the
 *       pooled tokens, label-smoothed cross-entropy; usually LoRA r8 on q, v of
 *       every block, configs/peft/finetune_lora_r8.ini), then the evaluation on
 *       [eval_data]; <run>/eval.json, and "finetune_top1" added to
 *       <run>/summary.json for `explora compare`.
 *   explora eval CONFIG --checkpoint C [--out DIR]
 *       the same evaluation for a finetune checkpoint (its trained tensors,
 *       the classify head included, over the [backbone] weights); eval.json in
 *       --out (default [run] out).
 *
 * Evaluation: every sample of [eval_data] through the evaluation transform
 * ([transform] resize of the shorter side, bicubic, then the centre crop at
 * the objective's image_size; mean/std), the model in inference mode and the
 * objective's evaluate slot (top-5 classes): top-1, top-5, macro-F1 and, when
 * the samples carry groups (WILDS), top-1 per group and the worst group.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "explora/augment.h"
#include "explora/evaluate.h"
#include "explora/eval_input.h"
#include "explora/fileio.h"
#include "explora/safetensors.h"
#include "explora/trainer.h"

#define EVAL_TOPK 5

/* [objective] must be the classify objective. */
static ex_status need_classify(const ex_session *s, const char *verb, ex_err *err) {
    const char *name = ex_config_raw(s->config, "objective", "name");
    EX_ENSURE(name && strcmp(name, "classify") == 0, err, EX_E_CONFIG,
              "explora %s needs [objective] name = classify (the config has %s%s).", verb, name ? "name = " : "no [objective] name",
              name ? name : "");
    EX_ENSURE(ex_config_has_section(s->config, "eval_data"), err, EX_E_CONFIG,
              "explora %s evaluates on [eval_data]: add that section (a labelled dataset).", verb);
    return EX_OK;
}

/* Evaluate the trainer's model + objective on [eval_data]; write <dir>/eval.json and print the numbers. */
static ex_status evaluate(ex_trainer *t, const char *dir, ex_cls_metrics *mt, ex_err *err) {
    ex_session *s = t->session;
    EX_ENSURE(t->obj->evaluate, err, EX_E_UNSUPPORTED, "objective '%s' cannot evaluate", t->obj_plugin->desc.name);
    const ex_plugin *dp;
    ex_cfg_section dview;
    EX_CHECK(ex_session_plugin(s, "eval_data", EX_PLUGIN_DATASET, NULL, &dp, &dview, err));
    const ex_dataset_vtable *vt = &dp->vtable_copy.dataset;
    void *ds = NULL;
    ex_status st = vt->open(&dview, &ds, err);
    if (st != EX_OK) {
        ex_err_prefix(err, "[eval_data] %s: ", dp->desc.name);
        return st;
    }
    const ex_cfg_section tf = {s->config, "transform", ex_core_transform_keys()};
    const ex_cfg_section oview = t->obj_view;
    double mean[16], std[16];
    int nm = 0, ns = 0;
    int64_t resize = 0, classes = 0;
    const int64_t C = t->model.info.channels, H = t->recipe.views[0].height, W = t->recipe.views[0].width;
    const int64_t B = t->batch;
    int64_t N = 0;
    float *images = NULL;
    int64_t *pred = NULL, *labels = NULL, *groups = NULL;
    ex_eval_row *rows = NULL;
    void *dev = NULL;
    int has_groups = 0, skip_bad = 0;
    ex_eval_input in;
    memset(&in, 0, sizeof in);
    const ex_cfg_section run = {s->config, "run", ex_core_run_keys()};
    EX_CHECK_GOTO(ex_cfg_bool(&run, "skip_bad", &skip_bad, err), st, done);
    EX_CHECK_GOTO(ex_cfg_float_list(&tf, "mean", mean, 16, &nm, err), st, done);
    EX_CHECK_GOTO(ex_cfg_float_list(&tf, "std", std, 16, &ns, err), st, done);
    EX_CHECK_GOTO(ex_cfg_int(&tf, "resize", &resize, err), st, done);
    EX_CHECK_GOTO(ex_cfg_int(&oview, "classes", &classes, err), st, done);
    if (nm != C || ns != C)
        EX_FAIL_GOTO(err, st, done, EX_E_CONFIG, "[transform] mean and std need %lld values (one per channel).", (long long)C);
    st = ex_eval_input_init(&in, vt, ds, 0, H, W, C, resize, mean, std, skip_bad, err);
    if (st != EX_OK) {
        ex_err_prefix(err, "[eval_data]: ");
        goto done;
    }
    const int64_t cap = in.n;
    images = malloc(sizeof(float) * (size_t)(B * C * H * W));
    rows = malloc(sizeof(ex_eval_row) * (size_t)B);
    pred = malloc(sizeof(int64_t) * (size_t)(cap * EVAL_TOPK));
    labels = malloc(sizeof(int64_t) * (size_t)cap);
    groups = malloc(sizeof(int64_t) * (size_t)cap);
    if (!images || !rows || !pred || !labels || !groups)
        EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "out of memory for %lld evaluation samples", (long long)cap);
    EX_CHECK_GOTO(ex_be_alloc(t->be, sizeof(float) * (size_t)(B * C * H * W), &dev, err), st, done);
    for (;;) {
        int64_t b = 0;
        st = ex_eval_input_next(&in, images, B, rows, &b, err);
        if (st != EX_OK) {
            ex_err_prefix(err, "[eval_data] ");
            goto done;
        }
        if (b == 0) break;
        for (int64_t k = 0; k < b; k++) {
            if (rows[k].label >= classes) /* unlabeled samples (-1) are left out of the metrics */
                EX_FAIL_GOTO(err, st, done, EX_E_RANGE, "[eval_data] sample %lld (%s) has label %lld, [objective] classes = %lld",
                             (long long)rows[k].index, rows[k].id, (long long)rows[k].label, (long long)classes);
            labels[N + k] = rows[k].label;
            groups[N + k] = rows[k].group;
            has_groups |= rows[k].group >= 0;
        }
        EX_CHECK_GOTO(ex_be_upload(t->be, dev, images, sizeof(float) * (size_t)(b * C * H * W), err), st, done);
        ex_batch batch;
        memset(&batch, 0, sizeof batch);
        batch.batch = b, batch.nviews = 1, batch.views[0] = dev, batch.height[0] = H, batch.width[0] = W;
        EX_CHECK_GOTO(t->obj->evaluate(t->obj_self, &batch, pred + N * EVAL_TOPK, EVAL_TOPK, err), st, done);
        N += b;
    }
    if (in.skipped > 0)
        printf("evaluation: %lld unreadable samples dropped ([run] skip_bad); the first: %s\n", (long long)in.skipped,
               in.first_skip.msg);
    EX_CHECK_GOTO(ex_classification_metrics(pred, EVAL_TOPK, labels, has_groups ? groups : NULL, N, classes, mt, err), st,
                  done);
    {
        char path[4200];
        snprintf(path, sizeof path, "%s/eval.json", dir);
        ex_atomic_file af;
        EX_CHECK_GOTO(ex_atomic_open(&af, path, err), st, done);
        fprintf(af.fp,
                "{\"top1\": %.4f, \"top5\": %.4f, \"macro_f1\": %.4f, \"samples\": %lld, \"skipped_samples\": %lld, "
                "\"classes\": %lld",
                mt->top1, mt->top5, mt->macro_f1, (long long)mt->n, (long long)in.skipped, (long long)classes);
        if (mt->ngroups > 0) {
            fprintf(af.fp, ", \"worst_group_top1\": %.4f, \"group_top1\": [", mt->worst_group_acc);
            for (int64_t g = 0; g < mt->ngroups; g++) {
                if (mt->group_n[g]) fprintf(af.fp, "%s%.4f", g ? ", " : "", mt->group_acc[g]);
                else fprintf(af.fp, "%snull", g ? ", " : "");
            }
            fprintf(af.fp, "], \"group_samples\": [");
            for (int64_t g = 0; g < mt->ngroups; g++) fprintf(af.fp, "%s%lld", g ? ", " : "", (long long)mt->group_n[g]);
            fprintf(af.fp, "]");
        }
        fprintf(af.fp, "}\n");
        EX_CHECK_GOTO(ex_atomic_commit(&af, err), st, done);
        printf("evaluation on %lld images: top-1 %.2f%%, top-5 %.2f%%, macro-F1 %.2f%%", (long long)mt->n, mt->top1, mt->top5,
               mt->macro_f1);
        if (mt->ngroups > 0) printf(", worst group top-1 %.2f%% (%lld groups)", mt->worst_group_acc, (long long)mt->ngroups);
        printf("; %s\n", path);
    }
done:
    if (dev) ex_be_free(t->be, dev);
    ex_eval_input_free(&in);
    free(images);
    free(rows);
    free(pred);
    free(labels);
    free(groups);
    vt->close(ds);
    return st;
}

/* summary.json (written by the trainer) gains "finetune_top1". */
static ex_status add_to_summary(const char *dir, double top1, ex_err *err) {
    char path[4200], *text = NULL;
    snprintf(path, sizeof path, "%s/summary.json", dir);
    EX_CHECK(ex_read_file(path, &text, NULL, err));
    char *end = strrchr(text, '}');
    if (!end) {
        free(text);
        EX_FAIL(err, EX_E_FORMAT, "%s is not a JSON object", path);
    }
    *end = '\0';
    ex_atomic_file af;
    ex_status st = ex_atomic_open(&af, path, err);
    if (st == EX_OK) {
        fprintf(af.fp, "%s, \"finetune_top1\": %.4f}\n", text, top1);
        st = ex_atomic_commit(&af, err);
    }
    free(text);
    return st;
}

/* Open the session, validate, start the backend, set up the trainer (model + classify objective). */
static int open_all(const cli_args *a, const char *verb, ex_session *s, ex_backend *be, ex_trainer *t, int *have_t) {
    ex_err err;
    ex_err_clear(&err);
    *have_t = 0;
    ex_session_options opt = a->session;
    opt.config_path = a->positional[0];
    if (ex_session_open(s, &opt, &err) != EX_OK) return cli_report(a, &err);
    if (need_classify(s, verb, &err) != EX_OK || ex_session_validate(s, &err) != EX_OK ||
        ex_session_backend(s, be, &err) != EX_OK) {
        int rc = cli_report(a, &err);
        ex_session_close(s);
        return rc;
    }
    *have_t = 1;
    if (ex_trainer_setup(t, s, be, &err) != EX_OK) return cli_report(a, &err);
    return CLI_OK;
}

int cli_finetune(const cli_args *a) {
    if (a->npositional != 1) {
        fprintf(stderr, "explora: error: usage: explora finetune CONFIG.ini [--resume] [--set section.key=value ...]\n");
        return CLI_USAGE;
    }
    ex_session s;
    ex_backend be;
    ex_trainer t;
    int have_t = 0;
    int rc = open_all(a, "finetune", &s, &be, &t, &have_t);
    if (!have_t) return rc;
    ex_err err;
    ex_err_clear(&err);
    if (rc == CLI_OK) {
        ex_trainer_print(&t, stdout);
        fflush(stdout);
        t.resume = a->resume;
        if (!a->dry_run) {
            ex_cls_metrics mt;
            memset(&mt, 0, sizeof mt);
            if (ex_trainer_run(&t, stdout, &err) != EX_OK || evaluate(&t, t.out_dir, &mt, &err) != EX_OK ||
                add_to_summary(t.out_dir, mt.top1, &err) != EX_OK)
                rc = cli_report(a, &err);
            ex_cls_metrics_free(&mt);
        }
    }
    ex_trainer_free(&t);
    ex_backend_destroy(&be);
    ex_session_close(&s);
    return rc;
}

/* mkdir -p */
static ex_status make_dirs(const char *path, ex_err *err) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) EX_FAIL(err, EX_E_IO, "cannot create directory '%s': %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) EX_FAIL(err, EX_E_IO, "cannot create directory '%s': %s", buf, strerror(errno));
    return EX_OK;
}

/* The finetune run's state from a checkpoint: [backbone] weights (or the seeded initialisation), the
 * objective's initialisation, then every trained tensor (adapters, unfrozen blocks, head, fc_norm). */
static ex_status load_for_eval(ex_trainer *t, const char *ckpt, ex_err *err) {
    ex_st_file *f;
    EX_CHECK(ex_st_open(&f, ckpt, err));
    const int has_head = ex_st_find(f, "param.head.weight") != NULL;
    ex_st_close(f);
    EX_ENSURE(has_head, err, EX_E_FORMAT, "%s has no classify head (param.head.weight): not a finetune checkpoint.", ckpt);
    EX_CHECK(ex_model_allocate(&t->model, err));
    EX_CHECK(ex_model_load(&t->model, NULL, err));
    ex_rng init_rng = ex_rng_seed(t->model.seed, EX_RNG_INIT);
    init_rng.offset = (uint64_t)1 << 40;
    if (t->obj->init) EX_CHECK(t->obj->init(t->obj_self, &init_rng, err));
    int n = 0;
    EX_CHECK(ex_model_load_trained(&t->model, ckpt, &n, err));
    printf("loaded %d trained tensors from %s\n", n, ckpt);
    return EX_OK;
}

int cli_eval(const cli_args *a) {
    if (a->npositional != 1 || !a->checkpoint) {
        fprintf(stderr, "explora: error: usage: explora eval CONFIG.ini --checkpoint CKPT [--out DIR] [--set section.key=value ...]\n");
        return CLI_USAGE;
    }
    ex_session s;
    ex_backend be;
    ex_trainer t;
    int have_t = 0;
    int rc = open_all(a, "eval", &s, &be, &t, &have_t);
    if (!have_t) return rc;
    ex_err err;
    ex_err_clear(&err);
    if (rc == CLI_OK) {
        ex_cls_metrics mt;
        memset(&mt, 0, sizeof mt);
        const char *dir = a->out ? a->out : t.out_dir;
        if (make_dirs(dir, &err) != EX_OK || load_for_eval(&t, a->checkpoint, &err) != EX_OK ||
            evaluate(&t, dir, &mt, &err) != EX_OK)
            rc = cli_report(a, &err);
        ex_cls_metrics_free(&mt);
    }
    ex_trainer_free(&t);
    ex_backend_destroy(&be);
    ex_session_close(&s);
    return rc;
}
