/*
 * core/cli/cli_linprobe.c — `explora linprobe CONFIG [--checkpoint C]`: the
 * DINOv2 linear-probe protocol. Features of [data] (training) and [eval_data]
 * (evaluation) through the frozen [backbone] (a pretrain run's trained
 * tensors from --checkpoint, adapters merged) are extracted once and cached
 * in [run] out, under a name derived from what made them (checkpoint path,
 * size and time, base weights, data, limits), so a changed input is never
 * served stale features; then one linear classifier per (last n blocks, mean patch
 * token or not, learning rate) is trained on them and the best top-1 on the
 * evaluation features is reported, with the whole grid, in linprobe.md and
 * linprobe.json.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "explora/features.h"
#include "explora/fileio.h"

static ex_status run_linprobe(const cli_args *a, ex_session *s, ex_backend *be, ex_err *err) {
    const ex_cfg_section lp = {s->config, "linprobe", ex_core_linprobe_keys()};
    const ex_cfg_section run = {s->config, "run", ex_core_run_keys()};
    const ex_cfg_section tf = {s->config, "transform", ex_core_transform_keys()};
    const ex_cfg_section optim = {s->config, "optim", ex_core_optim_keys()};
    ex_probe_opts po;
    memset(&po, 0, sizeof po);
    ex_feature_opts fo;
    memset(&fo, 0, sizeof fo);
    int64_t seed, limit, eval_limit;
    int nm, ns, avg;
    char out[4096], path_tr[4200], path_ev[4200];
    EX_CHECK(ex_cfg_float_list(&lp, "lrs", po.lrs, 16, &po.nlrs, err));
    EX_CHECK(ex_cfg_int(&lp, "epochs", &po.epochs, err));
    EX_CHECK(ex_cfg_int(&lp, "batch", &po.batch, err));
    EX_CHECK(ex_cfg_int_list(&lp, "blocks", po.nblocks, 4, &po.nnb, err));
    EX_CHECK(ex_cfg_enum(&lp, "avgpool", &avg, err));
    po.avgpool = avg; /* cls=0, avg=1, both=2 */
    EX_CHECK(ex_cfg_int(&lp, "limit", &limit, err));
    EX_CHECK(ex_cfg_int(&lp, "eval_limit", &eval_limit, err));
    EX_CHECK(ex_cfg_int(&run, "seed", &seed, err));
    po.seed = (uint64_t)seed;
    EX_CHECK(ex_cfg_path(&run, "out", out, sizeof out, err));
    EX_CHECK(ex_cfg_int(&optim, "batch", &fo.batch, err));
    EX_CHECK(ex_cfg_int(&tf, "resize", &fo.resize, err));
    EX_CHECK(ex_cfg_bool(&run, "skip_bad", &fo.skip_bad, err));
    EX_CHECK(ex_cfg_float_list(&tf, "mean", fo.mean, 16, &nm, err));
    EX_CHECK(ex_cfg_float_list(&tf, "std", fo.std, 16, &ns, err));
    fo.nblocks = 0;
    for (int i = 0; i < po.nnb; i++)
        if (po.nblocks[i] > fo.nblocks) fo.nblocks = po.nblocks[i];
    EX_CHECK(ex_model_image_size(s, &fo.height, &fo.width, err));
    EX_CHECK(ex_mkdir_p(out, err));
    /* caches are named by what made them: the checkpoint (path, size, time), the base weights, the data */
    static const char *const extra[][2] = {{"linprobe", "limit"}, {"linprobe", "eval_limit"}, {"linprobe", "blocks"}};
    uint64_t key = 0;
    EX_CHECK(cli_feature_cache_key(s, a->checkpoint, a->copy, extra, (int)(sizeof extra / sizeof *extra), &key, err));
    snprintf(path_tr, sizeof path_tr, "%s/features_train_%016llx.safetensors", out, (unsigned long long)key);
    snprintf(path_ev, sizeof path_ev, "%s/features_eval_%016llx.safetensors", out, (unsigned long long)key);

    ex_model m;
    memset(&m, 0, sizeof m);
    ex_features tr, ev;
    memset(&tr, 0, sizeof tr);
    memset(&ev, 0, sizeof ev);
    ex_status st = EX_OK;
    int64_t classes = 0, eclasses = 0;
    const int need_model = access(path_tr, R_OK) != 0 || access(path_ev, R_OK) != 0;
    if (need_model) {
        ex_backbone_shape shape = {fo.batch, fo.height, fo.width, 0, 0, 1, 0, EX_F32}; /* inference only; block outputs read */
        EX_CHECK_GOTO(ex_model_build(&m, s, be, &shape, err), st, done);
        EX_ENSURE(nm == m.info.channels && ns == m.info.channels, err, EX_E_CONFIG,
                  "[transform] mean and std need %lld values", (long long)m.info.channels);
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
    EX_CHECK_GOTO(cli_features_for(&m, s, "data", path_tr, &fo, &tr, &classes, err), st, done);
    fo.limit = eval_limit;
    EX_CHECK_GOTO(cli_features_for(&m, s, "eval_data", path_ev, &fo, &ev, &eclasses, err), st, done);
    if (classes < eclasses) classes = eclasses;
    for (int64_t i = 0; i < tr.n; i++)
        if (tr.labels[i] + 1 > classes) classes = tr.labels[i] + 1;
    ex_probe_result res[256];
    int count = 0, best = 0;
    EX_CHECK_GOTO(ex_linear_probe(be, &tr, &ev, classes, &po, res, 256, &count, &best,
                                  isatty(fileno(stdout)) ? stdout : NULL, err),
                  st, done);
    char md[4200], js[4200];
    snprintf(md, sizeof md, "%s/linprobe.md", out);
    snprintf(js, sizeof js, "%s/linprobe.json", out);
    ex_atomic_file fm, fj;
    EX_CHECK_GOTO(ex_atomic_open(&fm, md, err), st, done);
    fprintf(fm.fp, "| last blocks | mean patch token | lr | top-1 (%%) |\n|---|---|---|---|\n");
    for (int i = 0; i < count; i++)
        fprintf(fm.fp, "| %lld | %s | %g | %.2f%s |\n", (long long)res[i].nblocks, res[i].avgpool ? "yes" : "no", res[i].lr,
                res[i].top1, i == best ? " (best)" : "");
    EX_CHECK_GOTO(ex_atomic_commit(&fm, err), st, done);
    EX_CHECK_GOTO(ex_atomic_open(&fj, js, err), st, done);
    fprintf(fj.fp, "{\"best_top1\": %.4f, \"best\": {\"blocks\": %lld, \"avgpool\": %s, \"lr\": %g}, \"train\": %lld, "
                   "\"eval\": %lld, \"classes\": %lld}\n",
            res[best].top1, (long long)res[best].nblocks, res[best].avgpool ? "true" : "false", res[best].lr, (long long)tr.n,
            (long long)ev.n, (long long)classes);
    EX_CHECK_GOTO(ex_atomic_commit(&fj, err), st, done);
    printf("linear probe: best top-1 %.2f%% (last %lld block%s%s, lr %g) on %lld evaluation images; grid in %s\n",
           res[best].top1, (long long)res[best].nblocks, res[best].nblocks > 1 ? "s" : "",
           res[best].avgpool ? " + mean patch token" : "", res[best].lr, (long long)ev.n, md);
done:
    ex_features_free(&tr);
    ex_features_free(&ev);
    ex_model_free(&m);
    return st;
}

int cli_linprobe(const cli_args *a) {
    if (a->npositional != 1) {
        fprintf(stderr, "explora: error: usage: explora linprobe CONFIG.ini [--checkpoint CKPT] [--set section.key=value ...]\n");
        return CLI_USAGE;
    }
    return cli_run_session(a, run_linprobe);
}
