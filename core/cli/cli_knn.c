/*
 * core/cli/cli_knn.c — `explora knn CONFIG [--checkpoint C]`: DINO's
 * weighted kNN evaluation (eval_knn.py / ExPLoRA linprobe/knn.py) on frozen
 * features. The cls token of the last block through the final norm of every
 * sample of [data] (the memory bank) and [eval_data] (the queries), through
 * the frozen [backbone] (a run's trained tensors from --checkpoint, adapters
 * merged) and the evaluation transform, is extracted once and cached in
 * [run] out (named by what made it, as linprobe's caches); then for each k of
 * [knn] k: the k most cosine-similar training features vote with weight
 * exp(similarity / [knn] temperature). Top-1 per k -> knn.json, knn.md.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "explora/evaluate.h"
#include "explora/features.h"
#include "explora/fileio.h"

/* The last block's cls rows (n, dim) of a feature set, labels < 0 dropped for the bank. */
static float *last_cls(const ex_features *f) {
    float *x = malloc(sizeof(float) * (size_t)(f->n * f->dim));
    if (!x) return NULL;
    for (int64_t i = 0; i < f->n; i++)
        memcpy(x + i * f->dim, f->cls + (i * f->nblocks + f->nblocks - 1) * f->dim, sizeof(float) * (size_t)f->dim);
    return x;
}

static ex_status run_knn(const cli_args *a, ex_session *s, ex_backend *be, ex_err *err) {
    const ex_cfg_section kc = {s->config, "knn", ex_core_knn_keys()};
    const ex_cfg_section run = {s->config, "run", ex_core_run_keys()};
    const ex_cfg_section tf = {s->config, "transform", ex_core_transform_keys()};
    const ex_cfg_section optim = {s->config, "optim", ex_core_optim_keys()};
    ex_knn_opts ko;
    memset(&ko, 0, sizeof ko);
    ex_feature_opts fo;
    memset(&fo, 0, sizeof fo);
    int64_t limit, eval_limit;
    int nm, ns;
    char out[4096], path_tr[4200], path_ev[4200];
    EX_CHECK(ex_cfg_int_list(&kc, "k", ko.ks, EX_KNN_MAX_K, &ko.nk, err));
    EX_CHECK(ex_cfg_float(&kc, "temperature", &ko.temperature, err));
    EX_CHECK(ex_cfg_int(&kc, "limit", &limit, err));
    EX_CHECK(ex_cfg_int(&kc, "eval_limit", &eval_limit, err));
    EX_CHECK(ex_cfg_path(&run, "out", out, sizeof out, err));
    EX_CHECK(ex_cfg_int(&optim, "batch", &fo.batch, err));
    EX_CHECK(ex_cfg_int(&tf, "resize", &fo.resize, err));
    EX_CHECK(ex_cfg_bool(&run, "skip_bad", &fo.skip_bad, err));
    EX_CHECK(ex_cfg_float_list(&tf, "mean", fo.mean, 16, &nm, err));
    EX_CHECK(ex_cfg_float_list(&tf, "std", fo.std, 16, &ns, err));
    EX_ENSURE(ex_config_has_section(s->config, "eval_data"), err, EX_E_CONFIG,
              "explora knn needs [data] (the labelled memory bank) and [eval_data] (the queries).");
    fo.nblocks = 1;
    EX_CHECK(ex_model_image_size(s, &fo.height, &fo.width, err));
    EX_CHECK(ex_mkdir_p(out, err));
    static const char *const extra[][2] = {{"knn", "limit"}, {"knn", "eval_limit"}};
    uint64_t key = 0;
    EX_CHECK(cli_feature_cache_key(s, a->checkpoint, a->copy, extra, (int)(sizeof extra / sizeof *extra), &key, err));
    snprintf(path_tr, sizeof path_tr, "%s/features_knn_train_%016llx.safetensors", out, (unsigned long long)key);
    snprintf(path_ev, sizeof path_ev, "%s/features_knn_eval_%016llx.safetensors", out, (unsigned long long)key);

    ex_model m;
    memset(&m, 0, sizeof m);
    ex_features tr, ev;
    memset(&tr, 0, sizeof tr);
    memset(&ev, 0, sizeof ev);
    float *xtr = NULL, *xev = NULL;
    ex_status st = EX_OK;
    if (access(path_tr, R_OK) != 0 || access(path_ev, R_OK) != 0) {
        ex_backbone_shape shape = {fo.batch, fo.height, fo.width, 0, 0, 1, 0, EX_F32}; /* inference only; block outputs read */
        EX_CHECK_GOTO(ex_model_build(&m, s, be, &shape, err), st, done);
        if (nm != m.info.channels || ns != m.info.channels)
            EX_FAIL_GOTO(err, st, done, EX_E_CONFIG, "[transform] mean and std need %lld values", (long long)m.info.channels);
        EX_CHECK_GOTO(ex_model_allocate(&m, err), st, done);
        EX_CHECK_GOTO(ex_model_load(&m, NULL, err), st, done);
        if (a->checkpoint) {
            int n = 0;
            EX_CHECK_GOTO(ex_model_load_trained(&m, a->checkpoint, a->copy, &n, err), st, done);
            printf("loaded %d trained tensors from %s\n", n, a->checkpoint);
        }
        for (int i = 0; i < m.npeft; i++) {
            const ex_peft_vtable *v = &m.peft_plugin[i]->vtable_copy.peft;
            if (v->merge) EX_CHECK_GOTO(v->merge(m.peft_self[i], err), st, done);
        }
    }
    fo.limit = limit;
    EX_CHECK_GOTO(cli_features_for(&m, s, "data", path_tr, &fo, &tr, NULL, err), st, done);
    fo.limit = eval_limit;
    EX_CHECK_GOTO(cli_features_for(&m, s, "eval_data", path_ev, &fo, &ev, NULL, err), st, done);
    {
        /* the memory bank: labelled training samples only */
        int64_t nb = 0;
        for (int64_t i = 0; i < tr.n; i++) {
            if (tr.labels[i] < 0) continue;
            if (i != nb) {
                memmove(tr.cls + nb * tr.nblocks * tr.dim, tr.cls + i * tr.nblocks * tr.dim,
                        sizeof(float) * (size_t)(tr.nblocks * tr.dim));
                tr.labels[nb] = tr.labels[i];
            }
            nb++;
        }
        if (nb == 0) EX_FAIL_GOTO(err, st, done, EX_E_CONFIG, "[data] has no labelled samples: kNN needs a labelled bank.");
        tr.n = nb;
    }
    for (int64_t i = 0; i < tr.n; i++)
        if (tr.labels[i] + 1 > ko.classes) ko.classes = tr.labels[i] + 1;
    for (int64_t i = 0; i < ev.n; i++)
        if (ev.labels[i] + 1 > ko.classes) ko.classes = ev.labels[i] + 1;
    xtr = last_cls(&tr);
    xev = last_cls(&ev);
    if (!xtr || !xev) EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "out of memory");
    double top1[EX_KNN_MAX_K];
    EX_CHECK_GOTO(ex_knn_classify(be, xtr, tr.labels, tr.n, xev, ev.labels, ev.n, tr.dim, &ko, top1, err), st, done);
    {
        char md[4200], js[4200];
        snprintf(md, sizeof md, "%s/knn.md", out);
        snprintf(js, sizeof js, "%s/knn.json", out);
        ex_atomic_file fm, fj;
        int best = 0;
        for (int i = 1; i < ko.nk; i++)
            if (top1[i] > top1[best]) best = i;
        EX_CHECK_GOTO(ex_atomic_open(&fm, md, err), st, done);
        fprintf(fm.fp, "| k | top-1 (%%) |\n|---|---|\n");
        for (int i = 0; i < ko.nk; i++) fprintf(fm.fp, "| %lld | %.2f%s |\n", (long long)ko.ks[i], top1[i], i == best ? " (best)" : "");
        fprintf(fm.fp, "\nT = %g, %lld training / %lld evaluation samples, %lld classes\n", ko.temperature, (long long)tr.n,
                (long long)ev.n, (long long)ko.classes);
        EX_CHECK_GOTO(ex_atomic_commit(&fm, err), st, done);
        EX_CHECK_GOTO(ex_atomic_open(&fj, js, err), st, done);
        fprintf(fj.fp, "{\"best_top1\": %.4f, \"best_k\": %lld, \"temperature\": %g, \"train\": %lld, \"eval\": %lld, "
                       "\"classes\": %lld, \"top1\": {",
                top1[best], (long long)ko.ks[best], ko.temperature, (long long)tr.n, (long long)ev.n, (long long)ko.classes);
        for (int i = 0; i < ko.nk; i++) fprintf(fj.fp, "%s\"%lld\": %.4f", i ? ", " : "", (long long)ko.ks[i], top1[i]);
        fprintf(fj.fp, "}}\n");
        EX_CHECK_GOTO(ex_atomic_commit(&fj, err), st, done);
        printf("kNN (T = %g):", ko.temperature);
        for (int i = 0; i < ko.nk; i++) printf(" k=%lld %.2f%%", (long long)ko.ks[i], top1[i]);
        printf(" on %lld evaluation images; %s\n", (long long)ev.n, md);
    }
done:
    free(xtr);
    free(xev);
    ex_features_free(&tr);
    ex_features_free(&ev);
    ex_model_free(&m);
    return st;
}

int cli_knn(const cli_args *a) {
    if (a->npositional != 1) {
        fprintf(stderr, "explora: error: usage: explora knn CONFIG.ini [--checkpoint CKPT] [--set section.key=value ...]\n");
        return CLI_USAGE;
    }
    return cli_run_session(a, run_knn);
}
