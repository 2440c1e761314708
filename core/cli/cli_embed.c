/*
 * core/cli/cli_embed.c — `explora embed CONFIG --out FILE [--blocks i,j,...]`:
 * features of every sample of the [data] dataset through the [backbone]
 * (weights required), written as safetensors:
 *
 *   cls          (N, D)  the cls token after the final norm
 *   patch_mean   (N, D)  the mean of the patch tokens after the final norm
 *   block.<i>    (N, D)  the cls token of the residual stream after block i
 *                        (before the final norm), for each requested block
 *   labels       (N)     I64, -1 when unlabeled
 *   __metadata__ "ids":  the sample ids, one per line, in row order
 *
 * --checkpoint adds a pretrain run's trained tensors (adapters unmerged).
 * Images are resized (shorter side to [transform] resize) and centre-cropped
 * to the [backbone] image_size as torchvision's evaluation transform does, or,
 * with resize = 0, must already have that size; grayscale images are repeated
 * to three channels when the backbone wants three. Pixels are normalised with
 * [transform] mean and std.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "explora/eval_input.h"
#include "explora/model.h"
#include "explora/safetensors.h"

typedef struct embed_out {
    int64_t n, d;
    float *cls, *patch_mean, *blocks; /* (n, d), (n, d), (nblocks, n, d) */
    int64_t *labels;
    char *ids;
    size_t ids_len, ids_cap;
} embed_out;

static int parse_blocks(const char *s, int64_t depth, int64_t *out, int cap, int *n) {
    *n = 0;
    if (!s || !*s) return 1;
    const char *p = s;
    while (*p) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || *n == cap) return 0;
        if (v < 0) v += depth;
        if (v < 0 || v >= depth) return 0;
        out[(*n)++] = v;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    return 1;
}

static ex_status append_id(embed_out *o, const char *id, ex_err *err) {
    size_t need = o->ids_len + strlen(id) + 2;
    if (need > o->ids_cap) {
        size_t cap = o->ids_cap ? o->ids_cap * 2 : 4096;
        while (cap < need) cap *= 2;
        char *n = realloc(o->ids, cap);
        EX_ENSURE(n, err, EX_E_NOMEM, "out of memory");
        o->ids = n;
        o->ids_cap = cap;
    }
    o->ids_len += (size_t)snprintf(o->ids + o->ids_len, o->ids_cap - o->ids_len, "%s%s", o->ids_len ? "\n" : "", id);
    return EX_OK;
}

static ex_status run_embed(const cli_args *a, ex_session *s, ex_backend *be, embed_out *o, ex_err *err) {
    ex_model m;
    memset(&m, 0, sizeof m);
    void *ds = NULL;
    const ex_plugin *dp = NULL;
    ex_cfg_section dview;
    float *images = NULL, *tokens = NULL;
    ex_eval_row *rows = NULL;
    ex_eval_input in;
    memset(&in, 0, sizeof in);
    int64_t kept = 0; /* rows embedded so far (skip_bad may drop samples) */
    ex_status st = EX_OK;
    ex_backbone_shape shape = {0};
    const ex_cfg_section optim = {s->config, "optim", ex_core_optim_keys()};
    const ex_cfg_section tf = {s->config, "transform", ex_core_transform_keys()};
    double mean[16], std[16];
    int nm = 0, ns = 0;
    int64_t resize = 0;
    EX_CHECK(ex_cfg_int(&tf, "resize", &resize, err));
    EX_CHECK(ex_cfg_int(&optim, "batch", &shape.batch, err));
    EX_CHECK(ex_model_image_size(s, &shape.height, &shape.width, err));
    shape.inference = 1;
    EX_CHECK(ex_cfg_float_list(&tf, "mean", mean, 16, &nm, err));
    EX_CHECK(ex_cfg_float_list(&tf, "std", std, 16, &ns, err));
    EX_CHECK(ex_session_plugin(s, "data", EX_PLUGIN_DATASET, NULL, &dp, &dview, err));
    const ex_dataset_vtable *dvt = &dp->vtable_copy.dataset;
    EX_CHECK_GOTO(ex_model_build(&m, s, be, &shape, err), st, done);
    const int64_t C = m.info.channels, D = m.info.dim, H = shape.height, W = shape.width;
    if (nm != C || ns != C)
        EX_FAIL_GOTO(err, st, done, EX_E_CONFIG, "[transform] mean and std need %lld values (one per channel); got %d and %d.",
                     (long long)C, nm, ns);
    int64_t blocks[64];
    int nb = 0;
    if (!parse_blocks(a->blocks, m.info.depth, blocks, 64, &nb))
        EX_FAIL_GOTO(err, st, done, EX_E_INVALID, "--blocks '%s': expected block indices in [-%lld, %lld), comma-separated.",
                     a->blocks, (long long)m.info.depth, (long long)m.info.depth);
    const char *wraw = ex_config_raw(s->config, "backbone", "weights");
    if ((!wraw || !wraw[0]) && !a->checkpoint)
        EX_FAIL_GOTO(err, st, done, EX_E_CONFIG,
                     "embed needs trained weights: set [backbone] weights = <checkpoint>, or pass --checkpoint.");
    ex_model_print(&m, stdout);
    EX_CHECK_GOTO(ex_model_allocate(&m, err), st, done);
    EX_CHECK_GOTO(ex_model_load(&m, NULL, err), st, done);
    if (a->checkpoint) { /* a pretrain run's trained tensors, adapters left unmerged */
        int n = 0;
        EX_CHECK_GOTO(ex_model_load_trained(&m, a->checkpoint, a->copy, &n, err), st, done);
        printf("loaded %d trained tensors from %s\n", n, a->checkpoint);
    }
    EX_CHECK_GOTO(dvt->open(&dview, &ds, err), st, done);
    const int64_t N = dvt->length(ds);
    o->n = N;
    o->d = D;
    o->cls = calloc((size_t)(N * D), sizeof(float));
    o->patch_mean = calloc((size_t)(N * D), sizeof(float));
    o->blocks = calloc((size_t)((nb ? nb : 1) * N * D), sizeof(float));
    o->labels = calloc((size_t)(N ? N : 1), sizeof(int64_t));
    images = malloc(sizeof(float) * (size_t)(shape.batch * C * H * W));
    rows = malloc(sizeof(ex_eval_row) * (size_t)shape.batch);
    if (!o->cls || !o->patch_mean || !o->blocks || !o->labels || !images || !rows)
        EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "out of memory for %lld features", (long long)N);
    void *dimg = NULL;
    EX_CHECK_GOTO(ex_be_alloc(be, sizeof(float) * (size_t)(shape.batch * C * H * W), &dimg, err), st, done);
    int skip_bad = 0;
    const ex_cfg_section run = {s->config, "run", ex_core_run_keys()};
    EX_CHECK_GOTO(ex_cfg_bool(&run, "skip_bad", &skip_bad, err), st, free_dev);
    EX_CHECK_GOTO(ex_eval_input_init(&in, dvt, ds, 0, H, W, C, resize, mean, std, skip_bad, err), st, free_dev);
    for (;;) {
        const int64_t start = kept;
        int64_t b = 0;
        EX_CHECK_GOTO(ex_eval_input_next(&in, images, shape.batch, rows, &b, err), st, free_dev);
        if (b == 0) break;
        for (int64_t k = 0; k < b; k++) {
            o->labels[start + k] = rows[k].label;
            EX_CHECK_GOTO(append_id(o, rows[k].id, err), st, free_dev);
        }
        EX_CHECK_GOTO(ex_be_upload(be, dimg, images, sizeof(float) * (size_t)(b * C * H * W), err), st, free_dev);
        ex_backbone_io io = {0};
        io.batch = b, io.height = H, io.width = W, io.images = dimg, io.train = 0;
        EX_CHECK_GOTO(m.vt->forward(m.self, &io, err), st, free_dev);
        const int64_t T = io.num_tokens, first = 1 + m.info.registers, np = T - first;
        float *nt = realloc(tokens, sizeof(float) * (size_t)(b * T * D));
        if (!nt) EX_FAIL_GOTO(err, st, free_dev, EX_E_NOMEM, "out of memory");
        tokens = nt;
        EX_CHECK_GOTO(ex_be_download(be, tokens, io.tokens, sizeof(float) * (size_t)(b * T * D), err), st, free_dev);
        for (int64_t k = 0; k < b; k++) {
            const float *t = tokens + k * T * D;
            memcpy(o->cls + (start + k) * D, t, sizeof(float) * (size_t)D);
            for (int64_t j = 0; j < D; j++) {
                double acc = 0;
                for (int64_t p = 0; p < np; p++) acc += t[(first + p) * D + j];
                o->patch_mean[(start + k) * D + j] = (float)(acc / (double)np);
            }
        }
        for (int i = 0; i < nb; i++) {
            const float *bo = m.vt->block_output ? m.vt->block_output(m.self, blocks[i]) : NULL;
            if (!bo) EX_FAIL_GOTO(err, st, free_dev, EX_E_UNSUPPORTED, "backbone '%s' does not expose block outputs",
                                  m.plugin->desc.name);
            EX_CHECK_GOTO(ex_be_download(be, tokens, bo, sizeof(float) * (size_t)(b * T * D), err), st, free_dev);
            for (int64_t k = 0; k < b; k++)
                memcpy(o->blocks + ((int64_t)i * N + start + k) * D, tokens + k * T * D, sizeof(float) * (size_t)D);
        }
        kept += b;
        fprintf(stderr, "\rembedded %lld/%lld", (long long)in.next, (long long)N);
    }
    fprintf(stderr, "\n");
    if (in.skipped > 0)
        printf("embed: %lld unreadable samples dropped ([run] skip_bad), %lld kept; the first: %s\n", (long long)in.skipped,
               (long long)kept, in.first_skip.msg);
    if (st == EX_OK) {
        ex_st_writer *w;
        EX_CHECK_GOTO(ex_st_writer_new(&w, err), st, free_dev);
        st = ex_st_writer_add(w, "cls", EX_F32, 2, (int64_t[]){kept, D}, o->cls, err);
        if (st == EX_OK) st = ex_st_writer_add(w, "patch_mean", EX_F32, 2, (int64_t[]){kept, D}, o->patch_mean, err);
        for (int i = 0; i < nb && st == EX_OK; i++) {
            char name[64];
            snprintf(name, sizeof name, "block.%lld", (long long)blocks[i]);
            st = ex_st_writer_add(w, name, EX_F32, 2, (int64_t[]){kept, D}, o->blocks + (int64_t)i * N * D, err);
        }
        if (st == EX_OK) st = ex_st_writer_add(w, "labels", EX_I64, 1, (int64_t[]){kept}, o->labels, err);
        if (st == EX_OK) st = ex_st_writer_metadata(w, "ids", o->ids ? o->ids : "", err);
        if (st == EX_OK) st = ex_st_writer_metadata(w, "backbone", m.plugin->desc.name, err);
        if (st == EX_OK) st = ex_st_writer_finish(w, a->out, err);
        ex_st_writer_free(w);
        if (st == EX_OK) printf("wrote %lld x %lld features to %s\n", (long long)kept, (long long)D, a->out);
    }
free_dev:
    ex_be_free(be, dimg);
done:
    ex_eval_input_free(&in);
    free(rows);
    if (ds) dvt->close(ds);
    free(images);
    free(tokens);
    ex_model_free(&m);
    return st;
}

/* run_embed with its host buffers, freed whatever happened. */
static ex_status embed_session(const cli_args *a, ex_session *s, ex_backend *be, ex_err *err) {
    embed_out o;
    memset(&o, 0, sizeof o);
    const ex_status st = run_embed(a, s, be, &o, err);
    free(o.cls);
    free(o.patch_mean);
    free(o.blocks);
    free(o.labels);
    free(o.ids);
    return st;
}

int cli_embed(const cli_args *a) {
    if (a->npositional != 1 || !a->out) {
        fprintf(stderr, "explora: error: usage: explora embed CONFIG.ini --out FEATURES.safetensors [--blocks i,j] "
                        "[--set section.key=value ...]\n");
        return CLI_USAGE;
    }
    return cli_run_session(a, embed_session);
}
