/*
 * core/cli/cli_bench.c — `explora bench [--model vits14|vitb14] [--policy explora|lora|full|infer|all]
 * [--batch 8] [--iters N] [--warmup W]`: the CPU performance benchmark (docs/PERFORMANCE.md).
 *
 * The model is built from an in-memory config: [backbone] preset dinov2_vits14 or dinov2_vitb14 at
 * image_size 224, random initialisation from the backbone's own `init` (no weights), the default
 * [backend] (cpu, all cores), and the PEFT stack of the policy, with the contents of the recipe files:
 *
 *   explora  configs/peft/explora_D-L-r64.ini  unfreeze (last block, norms, cls) + LoRA r64 on q, v
 *   lora     configs/peft/lora_r8.ini          LoRA r8 on q, v of every block
 *   full     configs/peft/full_finetune.ini    everything trains
 *   infer    no [peft]: everything frozen, forward only (train = 0)
 *
 * --set section.key=value overrides are applied after these (e.g. --set backend.threads=1).
 *
 * One timed training step, on a fixed synthetic batch (batch, 3, 224, 224) ~ N(0, 1):
 *
 *   forward    backbone forward, train = 1 (activations kept)
 *   loss       L = mean(tokens^2) over the final-norm tokens (batch, 257, dim); dL/dtokens = 2 tokens / numel
 *   backward   backbone backward (PEFT hooks included; no weight-gradient GEMM for frozen tensors)
 *   optimiser  AdamW over the trainable tensors (ex_optim_step as the trainer runs it: global gradient
 *              norm, no clipping, constant lr 1e-4, wd 0.05 on weights) + zeroing the gradients
 *
 * "infer" times the forward (train = 0) only. W warm-up steps (default 2) are not timed; each of the
 * N timed steps is timed as a whole and per phase, and the medians are reported. Every phase ends with
 * the backend's synchronize, so on an asynchronous (device) backend a phase's time is the device's.
 *
 * Per op class, the time inside backend calls is measured by a timing wrapper around the backend: a
 * copy of the ex_backend whose every vtable slot calls the real slot and adds the elapsed time to the
 * class of the op (gemm | attention | norms | elementwise | optimiser | memory) and the current phase.
 * "host" is the phase's wall time not spent inside any backend call. The backend plugin is unchanged.
 * A device backend (any but cpu) returns from a call before the device is done, so there the op-class
 * times come from one extra step, after the timed ones, in which the wrapper synchronizes after every
 * call; its phase times are not used (the synchronisations serialise host and device).
 *
 * FLOPs per step (model FLOPs, 2*M*N*K per GEMM): every GEMM issued through the backend (linear layers,
 * LoRA, patch embedding: counted from each call's sizes, so exactly what runs), plus the attention
 * matmuls, which the fused attention kernel does inside: forward Q K^T and P V = 4 b t^2 nh hs,
 * backward dP, dQ, dK, dV = 8 b t^2 nh hs (the kernel also recomputes Q K^T, 2 b t^2 nh hs more, which
 * is not counted). Non-GEMM work (norms, softmax, GELU, AdamW) is not counted.
 *
 * GEMM peak: the best of 5 square fp32 GEMMs (2048^3, 8192^3 on a device backend; C = A B) through the
 * same backend's gemm slot, each between two synchronizes,
 * measured after the policies ran. Peak RSS: getrusage(RUSAGE_SELF).ru_maxrss, the process's
 * high-water mark, so with --policy all a policy's figure includes those run before it (run one
 * policy per process for a clean figure, as bench/run.sh does).
 *
 * Every result also goes to stdout as one "bench-result" line of key=value pairs (bench/run.sh reads it).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"
#include "cli_timing.h"
#include "explora/model.h"
#include "explora/optim.h"

static const char *const *const k_class_names = cli_timing_class_names;
static const char *const k_phase_names[BP_COUNT] = {"forward", "loss", "backward", "optimiser"};

#define BENCH_MAX_ITERS 1000

/* ------------------------------------------------------------------------------
 * Policies and the in-memory config
 * ------------------------------------------------------------------------------ */

typedef struct bench_policy {
    const char *name;
    const char *sets[8]; /* section.key=value, NULL-terminated */
    int train;
} bench_policy;

static const bench_policy k_policies[] = {
    {"explora",
     {"peft.stack=unfreeze, lora", "peft.unfreeze.blocks=-1", "peft.unfreeze.norms=true", "peft.unfreeze.cls_token=true",
      "peft.lora.rank=64", "peft.lora.targets=q, v", NULL},
     1},
    {"lora", {"peft.stack=lora", "peft.lora.rank=8", "peft.lora.targets=q, v", NULL}, 1},
    {"full", {"peft.stack=unfreeze", "peft.unfreeze.all=true", NULL}, 1},
    {"infer", {NULL}, 0},
};
#define N_POLICIES ((int)(sizeof k_policies / sizeof k_policies[0]))

typedef struct bench_opts {
    const char *preset; /* dinov2_vits14 | dinov2_vitb14 */
    const char *model;  /* vits14 | vitb14 */
    int64_t batch, iters, warmup;
    int profile_step; /* device backend: op-class times from one extra step synchronised after every call */
} bench_opts;

/* Median of n values (sorts a copy). */
static double median(const double *v, int n) {
    double tmp[BENCH_MAX_ITERS];
    for (int i = 0; i < n; i++) tmp[i] = v[i];
    for (int i = 1; i < n; i++) /* insertion sort: n is small */
        for (int j = i; j > 0 && tmp[j - 1] > tmp[j]; j--) {
            double x = tmp[j];
            tmp[j] = tmp[j - 1];
            tmp[j - 1] = x;
        }
    if (n == 0) return 0.0;
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

static double peak_rss_mib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
    return (double)ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

/* What one policy measured. */
typedef struct bench_result {
    double step_s, phase_s[BP_COUNT];          /* medians */
    double cls_s[BP_COUNT][BC_COUNT];          /* medians per phase and class */
    double flops, flops_phase[BP_COUNT];       /* per step */
    const char *slot_name[BENCH_SLOTS];        /* the profiling step's time per backend slot (device backends) */
    double slot_s[BENCH_SLOTS];
    int64_t slot_calls[BENCH_SLOTS];
    int nslots;
    double rss_mib;
    int64_t trainable, total_params;
    size_t planned_bytes;
} bench_result;

/* Open a session on the in-memory config of `pol` + the user's --set overrides. */
static ex_status open_session(const cli_args *a, const bench_opts *o, const bench_policy *pol, ex_session *s,
                              char store[][96], ex_err *err) {
    ex_session_options opt;
    memset(&opt, 0, sizeof opt);
    opt.ndirs = a->session.ndirs;
    for (int i = 0; i < a->session.ndirs; i++) opt.plugin_dirs[i] = a->session.plugin_dirs[i];
    int n = 0;
    snprintf(store[n], 96, "backbone.name=vit");
    opt.sets[n] = store[n], n++;
    snprintf(store[n], 96, "backbone.preset=%s", o->preset);
    opt.sets[n] = store[n], n++;
    snprintf(store[n], 96, "backbone.image_size=224");
    opt.sets[n] = store[n], n++;
    snprintf(store[n], 96, "run.seed=0");
    opt.sets[n] = store[n], n++;
    for (int i = 0; pol->sets[i]; i++) opt.sets[n++] = pol->sets[i];
    EX_ENSURE(n + a->session.nsets <= EX_SESSION_MAX_SETS, err, EX_E_INVALID, "bench: too many --set options");
    for (int i = 0; i < a->session.nsets; i++) opt.sets[n++] = a->session.sets[i];
    opt.nsets = n;
    EX_CHECK(ex_session_open(s, &opt, err));
    ex_status st = ex_session_validate(s, err);
    if (st != EX_OK) ex_session_close(s);
    return st;
}

/* Build, allocate and time one policy on `wbe` (the timing wrapper of T). */
static ex_status run_policy(const bench_opts *o, const bench_policy *pol, ex_session *s, ex_backend *wbe,
                            bench_timer *T, bench_result *r, ex_err *err) {
    ex_model m;
    ex_optim opt;
    memset(&m, 0, sizeof m);
    memset(&opt, 0, sizeof opt);
    memset(r, 0, sizeof *r);
    ex_backend *be = T->inner;
    float *images = NULL, *dtok = NULL, *lossbuf = NULL;
    double *step = NULL, *ph = NULL, *cl = NULL;
    ex_status st = EX_OK;
    const int64_t iters = o->iters, total = o->warmup + o->iters + (o->profile_step ? 1 : 0);
    ex_backbone_shape shape = {0};
    shape.batch = o->batch, shape.height = 224, shape.width = 224;
    shape.inference = !pol->train; /* the infer policy: an inference plan, as linprobe and embed use */
    EX_CHECK_GOTO(ex_model_activation_dtype(s, &shape.act_dtype, err), st, done); /* as pretrain keeps them */
    EX_CHECK_GOTO(ex_model_create(&m, s, wbe, err), st, done);
    EX_CHECK_GOTO(ex_model_apply_frozen_dtype(&m, s, NULL, NULL, err), st, done); /* as pretrain keeps them */
    EX_CHECK_GOTO(ex_model_plan(&m, &shape, err), st, done);
    ex_optim_config oc = {0};
    oc.lr = 1e-4, oc.min_lr = 1e-4, oc.weight_decay = 0.05, oc.beta1 = 0.9, oc.beta2 = 0.999, oc.eps = 1e-8;
    oc.clip_grad = 0.0, oc.warmup_steps = 0, oc.steps = 1000000000, oc.weight_decay_end = -1.0, oc.layer_decay = 1.0;
    if (pol->train) EX_CHECK_GOTO(ex_optim_plan(&opt, wbe, &m.params, &oc, &m.plan, err), st, done);
    r->planned_bytes = ex_memory_plan_total(&m.plan);
    r->trainable = ex_params_numel(&m.params, 1);
    r->total_params = ex_params_numel(&m.params, 0);
    EX_CHECK_GOTO(ex_model_allocate(&m, err), st, done);
    EX_CHECK_GOTO(ex_model_load(&m, NULL, err), st, done); /* no weights: the backbone's init */
    const int64_t C = m.info.channels, nimg = o->batch * C * 224 * 224;
    EX_CHECK_GOTO(ex_be_alloc(be, sizeof(float) * (size_t)nimg, (void **)&images, err), st, done);
    EX_CHECK_GOTO(ex_be_alloc(be, sizeof(float) * 16, (void **)&lossbuf, err), st, done);
    ex_rng rng = ex_rng_seed(1, EX_RNG_INIT);
    st = be->vt.rng_normal(be->ctx, images, nimg, 0.0f, 1.0f, &rng);
    if (st != EX_OK) EX_FAIL_GOTO(err, st, done, st, "bench: rng_normal failed");
    step = calloc((size_t)iters, sizeof *step);
    ph = calloc((size_t)(iters * BP_COUNT), sizeof *ph);
    cl = calloc((size_t)(iters * BP_COUNT * BC_COUNT), sizeof *cl);
    if (!step || !ph || !cl) EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "bench: out of memory");
    if (pol->train) EX_CHECK_GOTO(ex_optim_zero_grads(&opt, err), st, done);
    for (int64_t it = 0; it < total; it++) {
        double tp[BP_COUNT + 1] = {0};
        cli_timer_reset(T);
        /* a device backend's step is timed from an idle device to an idle device; each phase ends
         * with a synchronize (a no-op on the cpu backend) */
        const int profile = it == total - 1 && o->profile_step;
        T->sync_each = profile;
        be->vt.synchronize(be->ctx);
        tp[0] = cli_now_s();
        T->phase = BP_FWD;
        ex_backbone_io io = {0};
        io.batch = o->batch, io.height = 224, io.width = 224, io.images = images, io.train = pol->train;
        EX_CHECK_GOTO(m.vt->forward(m.self, &io, err), st, done);
        be->vt.synchronize(be->ctx);
        tp[1] = cli_now_s();
        if (pol->train) {
            const int64_t ntok = o->batch * io.num_tokens * m.info.dim;
            if (!dtok) EX_CHECK_GOTO(ex_be_alloc(be, sizeof(float) * (size_t)ntok, (void **)&dtok, err), st, done);
            T->phase = BP_LOSS; /* L = mean(tokens^2); dL/dtokens = 2 tokens / numel */
            float loss = 0.0f;
            st = wbe->vt.reduce(wbe->ctx, EX_RED_SUMSQ, lossbuf, io.tokens, ntok);
            if (st == EX_OK) st = wbe->vt.axpby(wbe->ctx, dtok, 2.0f / (float)ntok, io.tokens, 0.0f, ntok);
            if (st != EX_OK) EX_FAIL_GOTO(err, st, done, st, "bench: loss ops failed");
            EX_CHECK_GOTO(ex_be_download(be, &loss, lossbuf, sizeof loss, err), st, done);
            if (!isfinite(loss)) EX_FAIL_GOTO(err, st, done, EX_E_INVALID, "bench: the loss is %g", (double)loss);
            tp[2] = cli_now_s();
            T->phase = BP_BWD;
            EX_CHECK_GOTO(m.vt->backward(m.self, dtok, NULL, err), st, done);
            be->vt.synchronize(be->ctx);
            tp[3] = cli_now_s();
            T->phase = BP_OPT;
            EX_CHECK_GOTO(ex_optim_step(&opt, NULL, NULL, err), st, done);
            EX_CHECK_GOTO(ex_optim_zero_grads(&opt, err), st, done);
            be->vt.synchronize(be->ctx);
            tp[4] = cli_now_s();
        } else {
            tp[2] = tp[3] = tp[4] = tp[1];
        }
        if (profile) { /* the op-class times of the profiling step replace the medians below */
            for (int p = 0; p < BP_COUNT; p++)
                for (int c = 0; c < BC_COUNT; c++) r->cls_s[p][c] = T->t[p][c];
            r->nslots = T->nslots;
            for (int i = 0; i < T->nslots; i++)
                r->slot_name[i] = T->slot_name[i], r->slot_s[i] = T->slot_s[i], r->slot_calls[i] = T->slot_calls[i];
            continue;
        }
        if (it < o->warmup) continue;
        const int64_t k = it - o->warmup;
        step[k] = tp[4] - tp[0];
        for (int p = 0; p < BP_COUNT; p++) {
            ph[k * BP_COUNT + p] = tp[p + 1] - tp[p];
            for (int c = 0; c < BC_COUNT; c++) cl[(k * BP_COUNT + p) * BC_COUNT + c] = T->t[p][c];
        }
        r->flops = 0.0;
        for (int p = 0; p < BP_COUNT; p++) r->flops += (r->flops_phase[p] = T->flops[p]);
    }
    if (!o->profile_step) { /* the host backend: the slot times of the last timed step */
        r->nslots = T->nslots;
        for (int i = 0; i < T->nslots; i++)
            r->slot_name[i] = T->slot_name[i], r->slot_s[i] = T->slot_s[i], r->slot_calls[i] = T->slot_calls[i];
    }
    r->step_s = median(step, (int)iters);
    for (int p = 0; p < BP_COUNT; p++) {
        double v[BENCH_MAX_ITERS];
        for (int64_t k = 0; k < iters; k++) v[k] = ph[k * BP_COUNT + p];
        r->phase_s[p] = median(v, (int)iters);
        for (int c = 0; c < BC_COUNT && !o->profile_step; c++) {
            for (int64_t k = 0; k < iters; k++) v[k] = cl[(k * BP_COUNT + p) * BC_COUNT + c];
            r->cls_s[p][c] = median(v, (int)iters);
        }
    }
    r->rss_mib = peak_rss_mib();
done:
    free(step);
    free(ph);
    free(cl);
    if (dtok) ex_be_free(be, dtok);
    if (lossbuf) ex_be_free(be, lossbuf);
    if (images) ex_be_free(be, images);
    /* the plan points at the optimiser's tensors too: release it before they go (as ex_trainer_free) */
    ex_memory_plan_release(&m.plan);
    if (pol->train) ex_optim_free(&opt);
    ex_model_free(&m);
    return st;
}

/* The best GFLOP/s of 5 square fp32 GEMMs C = A B of side n through the backend's gemm slot. */
static ex_status gemm_peak(ex_backend *be, int64_t n, double *gflops, ex_err *err) {
    float *a = NULL, *b = NULL, *c = NULL;
    ex_status st = EX_OK;
    const size_t bytes = sizeof(float) * (size_t)(n * n);
    *gflops = 0.0;
    EX_CHECK_GOTO(ex_be_alloc(be, bytes, (void **)&a, err), st, done);
    EX_CHECK_GOTO(ex_be_alloc(be, bytes, (void **)&b, err), st, done);
    EX_CHECK_GOTO(ex_be_alloc(be, bytes, (void **)&c, err), st, done);
    ex_rng rng = ex_rng_seed(2, EX_RNG_INIT);
    st = be->vt.rng_normal(be->ctx, a, n * n, 0.0f, 1.0f, &rng);
    if (st == EX_OK) st = be->vt.rng_normal(be->ctx, b, n * n, 0.0f, 1.0f, &rng);
    if (st != EX_OK) EX_FAIL_GOTO(err, st, done, st, "bench: rng_normal failed");
    ex_gemm_desc d;
    memset(&d, 0, sizeof d);
    d.m = d.n = d.k = n, d.alpha = 1.0f, d.beta = 0.0f, d.batch = 1;
    d.a = a, d.a_dtype = EX_F32, d.lda = n, d.b = b, d.b_dtype = EX_F32, d.ldb = n, d.c = c, d.ldc = n;
    for (int rep = 0; rep < 6; rep++) { /* the first is a warm-up */
        be->vt.synchronize(be->ctx);
        const double t0 = cli_now_s();
        EX_CHECK_GOTO(ex_be_gemm(be, &d, err), st, done);
        be->vt.synchronize(be->ctx);
        const double g = 2.0 * (double)n * (double)n * (double)n / (cli_now_s() - t0) * 1e-9;
        if (rep > 0 && g > *gflops) *gflops = g;
    }
done:
    if (a) ex_be_free(be, a);
    if (b) ex_be_free(be, b);
    if (c) ex_be_free(be, c);
    return st;
}

static void print_result(const bench_opts *o, const bench_policy *pol, const bench_result *r, double peak) {
    const double ips = (double)o->batch / r->step_s, gfs = r->flops / r->step_s * 1e-9;
    printf("\n== %s / %s: batch %lld, %lld timed steps (median) after %lld warm-up ==\n", o->model, pol->name,
           (long long)o->batch, (long long)o->iters, (long long)o->warmup);
    printf("trainable %lld of %lld parameters; planned memory %.1f MiB; peak RSS %.1f MiB\n", (long long)r->trainable,
           (long long)r->total_params, (double)r->planned_bytes / 1048576.0, r->rss_mib);
    printf("step %.1f ms = %.2f images/s; %.1f GFLOP per step = %.1f GFLOP/s", r->step_s * 1e3, ips, r->flops * 1e-9,
           gfs);
    if (peak > 0) printf(" = %.0f%% of the measured GEMM peak (%.1f GFLOP/s)", 100.0 * gfs / peak, peak);
    printf("\n%-12s %10s", "ms", "wall");
    for (int c = 0; c < BC_COUNT; c++) printf(" %11s", k_class_names[c]);
    printf(" %9s %8s\n", "host", "GFLOP");
    for (int p = 0; p < BP_COUNT; p++) {
        if (!pol->train && p != BP_FWD) continue;
        double in = 0.0;
        printf("%-12s %10.1f", k_phase_names[p], r->phase_s[p] * 1e3);
        for (int c = 0; c < BC_COUNT; c++) {
            printf(" %11.1f", r->cls_s[p][c] * 1e3);
            in += r->cls_s[p][c];
        }
        const double host = r->phase_s[p] - in;
        printf(" %9.1f %8.1f\n", (host > 0 ? host : 0.0) * 1e3, r->flops_phase[p] * 1e-9);
    }
    if (r->nslots > 0) { /* the ten slowest slots: a device backend's profiling step, or the last timed step */
        printf(o->profile_step ? "slowest backend slots in the profiled step (synchronised after every call):\n"
                               : "slowest backend slots in the last timed step:\n");
        cli_print_slots(stdout, r->slot_name, r->slot_s, r->slot_calls, r->nslots, 10);
    }
    /* the machine-readable line bench/run.sh reads */
    printf("bench-result impl=explora model=%s policy=%s batch=%lld iters=%lld img_s=%.4f step_ms=%.2f fwd_ms=%.2f "
           "loss_ms=%.2f bwd_ms=%.2f opt_ms=%.2f gflop=%.2f gflops=%.2f peak_gflops=%.2f peak_frac=%.4f rss_mib=%.1f "
           "trainable=%lld",
           o->model, pol->name, (long long)o->batch, (long long)o->iters, ips, r->step_s * 1e3, r->phase_s[BP_FWD] * 1e3,
           r->phase_s[BP_LOSS] * 1e3, r->phase_s[BP_BWD] * 1e3, r->phase_s[BP_OPT] * 1e3, r->flops * 1e-9, gfs, peak,
           peak > 0 ? gfs / peak : 0.0, r->rss_mib, (long long)r->trainable);
    for (int c = 0; c < BC_COUNT; c++) {
        double sum = 0.0;
        for (int p = 0; p < BP_COUNT; p++) sum += r->cls_s[p][c];
        printf(" %s_ms=%.2f", k_class_names[c], sum * 1e3);
    }
    printf("\n");
    fflush(stdout);
}

static int parse_opts(const cli_args *a, bench_opts *o) {
    o->profile_step = 0;
    o->model = a->bench_model ? a->bench_model : "vits14";
    if (strcmp(o->model, "vits14") == 0) o->preset = "dinov2_vits14";
    else if (strcmp(o->model, "vitb14") == 0) o->preset = "dinov2_vitb14";
    else {
        fprintf(stderr, "explora: error: bench --model '%s': expected vits14 or vitb14.\n", o->model);
        return 0;
    }
    o->batch = a->bench_batch > 0 ? a->bench_batch : 8;
    o->iters = a->bench_iters > 0 ? a->bench_iters : 5;
    o->warmup = a->bench_warmup >= 0 ? a->bench_warmup : 2;
    if (o->iters > BENCH_MAX_ITERS) {
        fprintf(stderr, "explora: error: bench --iters %lld: at most %d.\n", (long long)o->iters, BENCH_MAX_ITERS);
        return 0;
    }
    return 1;
}

int cli_bench(const cli_args *a) {
    bench_opts o;
    if (a->npositional != 0 || a->bench_list || a->bench_workers || !parse_opts(a, &o)) {
        fprintf(stderr, "explora: error: usage: explora bench [--model vits14|vitb14] "
                        "[--policy explora|lora|full|infer|all] [--batch 8] [--iters N] [--warmup W] "
                        "[--set section.key=value ...]\n");
        return CLI_USAGE;
    }
    const char *pname = a->bench_policy ? a->bench_policy : "all";
    int first = -1, last = -1;
    for (int i = 0; i < N_POLICIES; i++)
        if (strcmp(pname, k_policies[i].name) == 0) first = last = i;
    if (strcmp(pname, "all") == 0) first = 0, last = N_POLICIES - 1;
    if (first < 0) {
        fprintf(stderr, "explora: error: bench --policy '%s': expected explora, lora, full, infer or all.\n", pname);
        return CLI_USAGE;
    }
    bench_result res[N_POLICIES];
    double peak = 0.0;
    int64_t peak_n = 2048;
    int rc = CLI_OK;
    ex_err err;
    ex_err_clear(&err);
    for (int i = first; i <= last && rc == CLI_OK; i++) {
        ex_session s;
        ex_backend be, wbe;
        bench_timer T;
        char store[8][96];
        if (open_session(a, &o, &k_policies[i], &s, store, &err) != EX_OK) return cli_report(a, &err);
        if (ex_session_backend(&s, &be, &err) != EX_OK) {
            rc = cli_report(a, &err);
        } else {
            if (i == first) {
                ex_device_info di;
                memset(&di, 0, sizeof di);
                if (be.vt.device_info && be.vt.device_info(be.ctx, &di) == EX_OK) printf("device: %s\n", di.name);
            }
            cli_timing_backend(&wbe, &be, &T);
            o.profile_step = strcmp(be.name, "cpu") != 0; /* asynchronous backends: see run_policy */
            peak_n = o.profile_step ? 8192 : 2048;
            if (run_policy(&o, &k_policies[i], &s, &wbe, &T, &res[i], &err) != EX_OK) rc = cli_report(a, &err);
            if (rc == CLI_OK && i == last && gemm_peak(&be, peak_n, &peak, &err) != EX_OK) rc = cli_report(a, &err);
            ex_backend_destroy(&be);
        }
        ex_session_close(&s);
    }
    if (rc != CLI_OK) return rc;
    printf("measured GEMM peak (best of 5, %lld^3 fp32 through the backend): %.1f GFLOP/s\n", (long long)peak_n, peak);
    for (int i = first; i <= last; i++) print_result(&o, &k_policies[i], &res[i], peak);
    return CLI_OK;
}
