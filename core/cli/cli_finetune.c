/*
 * core/cli/cli_finetune.c — supervised fine-tuning and its evaluation:
 *
 *   explora finetune CONFIG [--resume]
 *       the trainer with [objective] name = classify (a linear head on the
 *       pooled tokens, label-smoothed cross-entropy; usually LoRA r8 on q, v of
 *       every block, configs/peft/finetune_lora_r8.ini), then the evaluation on
 *       [eval_data]; <run>/eval.json, and "finetune_top1" added to
 *       <run>/summary.json for `explora compare`. With [run] eval_every = N
 *       it also evaluates every N steps (<run>/evals.jsonl); eval.json and
 *       summary.json then carry the best top-1 over the run's evaluations
 *       ("best_top1", "finetune_best_top1"), the number the SatMAE/ExPLoRA
 *       fine-tuning scripts report (the maximum over epochs).
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
#include <unistd.h>

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

/* What one evaluation measured. */
typedef struct eval_result {
    ex_cls_metrics mt;
    int64_t skipped, classes;
} eval_result;

/* Evaluate the trainer's model + objective on [eval_data] into r (free r->mt after). */
static ex_status evaluate(ex_trainer *t, eval_result *r, ex_err *err) {
    ex_cls_metrics *mt = &r->mt;
    memset(r, 0, sizeof *r);
    ex_session *s = t->session;
    EX_ENSURE(t->obj->evaluate, err, EX_E_UNSUPPORTED, "objective '%s' cannot evaluate", t->obj_plugin->desc.name);
    const ex_plugin *dp;
    void *ds = NULL;
    EX_CHECK(cli_open_dataset(s, "eval_data", &dp, &ds, err));
    const ex_dataset_vtable *vt = &dp->vtable_copy.dataset;
    ex_status st = EX_OK;
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
    r->skipped = in.skipped;
    r->classes = classes;
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

/* <dir>/eval.json from r, with `extra` (", \"key\": value" pairs or "") inside the object; prints the numbers. */
static ex_status write_eval(const char *dir, const eval_result *r, const char *extra, ex_err *err) {
    const ex_cls_metrics *mt = &r->mt;
    char path[4200];
    snprintf(path, sizeof path, "%s/eval.json", dir);
    ex_atomic_file af;
    EX_CHECK(ex_atomic_open(&af, path, err));
    fprintf(af.fp,
            "{\"top1\": %.4f, \"top5\": %.4f, \"macro_f1\": %.4f, \"samples\": %lld, \"skipped_samples\": %lld, "
            "\"classes\": %lld",
            mt->top1, mt->top5, mt->macro_f1, (long long)mt->n, (long long)r->skipped, (long long)r->classes);
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
    fprintf(af.fp, "%s}\n", extra);
    EX_CHECK(ex_atomic_commit(&af, err));
    printf("evaluation on %lld images: top-1 %.2f%%, top-5 %.2f%%, macro-F1 %.2f%%", (long long)mt->n, mt->top1, mt->top5,
           mt->macro_f1);
    if (mt->ngroups > 0) printf(", worst group top-1 %.2f%% (%lld groups)", mt->worst_group_acc, (long long)mt->ngroups);
    printf("; %s\n", path);
    return EX_OK;
}

/* ---------------------------------------------------------------------------
 * evaluations during fine-tuning ([run] eval_every): <run>/evals.jsonl, one line per evaluation, and the best
 * top-1 over them (the SatMAE / ExPLoRA fine-tuning scripts report the maximum over epochs)
 * --------------------------------------------------------------------------- */

static ex_status append_eval_line(const char *dir, int64_t step, const eval_result *r, ex_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/evals.jsonl", dir);
    FILE *f = fopen(path, "a");
    EX_ENSURE(f, err, EX_E_IO, "cannot append to '%s': %s", path, strerror(errno));
    fprintf(f, "{\"step\": %lld, \"top1\": %.4f, \"top5\": %.4f, \"macro_f1\": %.4f}\n", (long long)step, r->mt.top1,
            r->mt.top5, r->mt.macro_f1);
    const int bad = ferror(f);
    EX_ENSURE(fclose(f) == 0 && !bad, err, EX_E_IO, "cannot write '%s': %s", path, strerror(errno));
    return EX_OK;
}

/* The best top-1 of <dir>/evals.jsonl and its step (*step = -1: no line). */
static ex_status best_eval(const char *dir, double *top1, int64_t *step, ex_err *err) {
    char path[4200], *text = NULL;
    snprintf(path, sizeof path, "%s/evals.jsonl", dir);
    *top1 = 0.0;
    *step = -1;
    EX_CHECK(ex_read_file(path, &text, NULL, err));
    for (char *line = text; line && *line;) {
        char *next = strchr(line, '\n');
        if (next) *next++ = '\0';
        long long s = 0;
        double v = 0.0;
        if (sscanf(line, "{\"step\": %lld, \"top1\": %lf", &s, &v) == 2 && (*step < 0 || v > *top1)) {
            *top1 = v;
            *step = (int64_t)s;
        }
        line = next;
    }
    free(text);
    return EX_OK;
}

typedef struct eval_every {
    int64_t every;
} eval_every;

/* The trainer's after-step callback: every `every` steps but the last (the final evaluation follows the run). */
static ex_status eval_after_step(void *ctx, ex_trainer *t, int64_t step, ex_err *err) {
    const eval_every *e = ctx;
    if (e->every <= 0 || step % e->every != 0 || step >= t->ocfg.steps || t->comm.rank != 0) return EX_OK;
    eval_result r;
    ex_status st = evaluate(t, &r, err);
    if (st == EX_OK) st = append_eval_line(t->out_dir, step, &r, err);
    if (st == EX_OK)
        printf("eval at step %lld: top-1 %.2f%%, top-5 %.2f%%, macro-F1 %.2f%% (%lld images)\n", (long long)step,
               r.mt.top1, r.mt.top5, r.mt.macro_f1, (long long)r.mt.n);
    fflush(stdout);
    ex_cls_metrics_free(&r.mt);
    return st;
}

/* summary.json (written by the trainer) gains "finetune_top1" (the final evaluation) and "finetune_best_top1". */
static ex_status add_to_summary(const char *dir, double top1, double best, ex_err *err) {
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
        fprintf(af.fp, "%s, \"finetune_top1\": %.4f, \"finetune_best_top1\": %.4f}\n", text, top1, best);
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

/* Train (evaluating every [run] eval_every steps), then the final evaluation: eval.json with the best top-1 over
 * every evaluation of the run (resumed ones included), summary.json. */
static ex_status run_finetune(ex_trainer *t, ex_err *err) {
    const ex_cfg_section run = {t->session->config, "run", ex_core_run_keys()};
    eval_every ev = {0};
    EX_CHECK(ex_cfg_int(&run, "eval_every", &ev.every, err));
    char path[4200];
    snprintf(path, sizeof path, "%s/evals.jsonl", t->out_dir);
    if (!t->resume && t->comm.rank == 0 && unlink(path) != 0 && errno != ENOENT)
        EX_FAIL(err, EX_E_IO, "cannot remove the previous run's '%s': %s", path, strerror(errno));
    t->after_step = eval_after_step;
    t->after_step_ctx = &ev;
    EX_CHECK(ex_trainer_run(t, stdout, err));
    t->after_step = NULL;
    eval_result r;
    ex_status st = evaluate(t, &r, err);
    if (st == EX_OK && t->comm.rank == 0) {
        double best = 0.0;
        int64_t best_step = -1;
        char extra[160];
        st = append_eval_line(t->out_dir, t->optim.step, &r, err);
        if (st == EX_OK) st = best_eval(t->out_dir, &best, &best_step, err);
        snprintf(extra, sizeof extra, ", \"step\": %lld, \"best_top1\": %.4f, \"best_step\": %lld", (long long)t->optim.step,
                 best, (long long)best_step);
        if (st == EX_OK) st = write_eval(t->out_dir, &r, extra, err);
        if (st == EX_OK && best_step != t->optim.step)
            printf("best top-1 over the run's evaluations: %.2f%% at step %lld (evals.jsonl)\n", best, (long long)best_step);
        if (st == EX_OK) st = add_to_summary(t->out_dir, r.mt.top1, best, err);
    }
    ex_cls_metrics_free(&r.mt);
    return st;
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
        if (!a->dry_run && run_finetune(&t, &err) != EX_OK) rc = cli_report(a, &err);
    }
    ex_trainer_free(&t);
    ex_backend_destroy(&be);
    ex_session_close(&s);
    return rc;
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
    EX_CHECK(ex_model_load_trained(&t->model, ckpt, "student", &n, err));
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
        eval_result r;
        memset(&r, 0, sizeof r);
        const char *dir = a->out ? a->out : t.out_dir;
        if (ex_mkdir_p(dir, &err) != EX_OK || load_for_eval(&t, a->checkpoint, &err) != EX_OK ||
            evaluate(&t, &r, &err) != EX_OK || write_eval(dir, &r, "", &err) != EX_OK)
            rc = cli_report(a, &err);
        ex_cls_metrics_free(&r.mt);
    }
    ex_trainer_free(&t);
    ex_backend_destroy(&be);
    ex_session_close(&s);
    return rc;
}
