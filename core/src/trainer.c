/*
 * core/src/trainer.c — the extended pre-training loop (see explora/trainer.h).
 *
 * One optimiser step = `accumulate` micro-batches: each is drawn by the
 * loader, uploaded, and given to the objective's step, which runs forward and
 * backward and accumulates gradients; then gradients are averaged, clipped,
 * and AdamW updates every trainable tensor at the scheduled learning rate;
 * then the objective updates its teachers/centres.
 *
 * Several processes (mpirun, explora/comm.h): after the micro-batches the
 * trainable gradients are summed over ranks and scaled by 1 / (world x
 * accumulate) before clipping: in device memory through the backend's
 * collectives (NCCL) when it has them ([run] collectives = auto), else packed
 * into one host buffer and summed by a single MPI all-reduce. The logged loss
 * terms are averaged over ranks. Rank 0 writes every file; a rank
 * that fails reports itself on stderr and aborts all ranks (report_abort),
 * and a rank in which no step finishes for [run] stall_timeout_s ends itself,
 * and so the job (stall_watch.h): ranks that wait on a hung one cannot.
 */
#include "explora/trainer.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>
#include <sys/stat.h>
#include <time.h>

#include "explora/comm.h"
#include "explora/fileio.h"
#include "explora/safetensors.h"
#include "stall_watch.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* How `mib` of planned memory compares with the backend's device memory (device_info): one line, a warning when
 * it exceeds what is free now (the run would fail to allocate), nothing when the backend does not say. */
static void print_device_fit(const ex_trainer *t, double mib, FILE *out) {
    ex_device_info di;
    memset(&di, 0, sizeof di);
    if (!t->be->vt.device_info || t->be->vt.device_info(t->be->ctx, &di) != EX_OK || di.total_memory == 0) return;
    const double gib = mib / 1024.0, total = (double)di.total_memory / 1073741824.0,
                 avail = (double)di.free_memory / 1073741824.0;
    if (di.free_memory > 0 && gib > avail)
        fprintf(out,
                "warning: the plans take %.2f GiB, more than the %.2f GiB free of backend '%s' (%.1f GiB in all): "
                "allocation will fail. Lower [optim] batch, or set [backbone] recompute = true, [optim] "
                "activation_dtype = bf16 or frozen_dtype = bf16.\n",
                gib, avail, t->be->name, total);
    else if (di.free_memory > 0)
        fprintf(out,
                "device memory: %.1f GiB, %.1f GiB free; the plans take %.2f GiB (%.0f %% of the free memory) before "
                "the backend's own context and library workspaces\n",
                total, avail, gib, 100.0 * gib / avail);
}

/* Build and plan t->teacher (the backbone + PEFT stack again, frozen) for `max`, and print its plan and the
 * total planned memory; nothing is allocated. */
static ex_status plan_teacher(ex_trainer *t, const ex_backbone_shape *max, FILE *out, ex_err *err) {
    EX_ENSURE(!t->has_teacher, err, EX_E_INVALID, "the objective asked for a second teacher");
    EX_CHECK(ex_model_create(&t->teacher, t->session, t->be, err));
    t->has_teacher = 1;
    EX_CHECK(ex_params_set_trainable(&t->teacher.params, "*", 0, NULL, err));
    /* what the student does not train never changes: the teacher reads the student's copy */
    int shared = 0;
    size_t shared_bytes = 0;
    EX_CHECK(ex_params_share_frozen(&t->teacher.params, &t->model.params, &shared, &shared_bytes, err));
    ex_backbone_shape shape = *max;
    EX_CHECK(ex_model_activation_dtype(t->session, &shape.act_dtype, err)); /* as the student keeps them */
    EX_CHECK(ex_model_plan(&t->teacher, &shape, err));
    fprintf(out, "teacher (%d frozen tensors, %.1f MiB, shared with the student):\n", shared,
            (double)shared_bytes / 1048576.0);
    ex_memory_plan_print(&t->teacher.plan, out);
    const double ms = (double)ex_memory_plan_total(&t->model.plan) / 1048576.0,
                 mt = (double)ex_memory_plan_total(&t->teacher.plan) / 1048576.0;
    fprintf(out,
            "planned memory in all: student %.2f + teacher %.2f = %.2f MiB on backend '%s' (its own context, "
            "library workspaces and scratch come on top)\n",
            ms, mt, ms + mt, t->be->name);
    print_device_fit(t, ms + mt, out);
    return EX_OK;
}

/* ex_objective_env.make_teacher: the backbone + PEFT stack again, frozen, with the student's values. */
static ex_status make_teacher(void *owner, const ex_backbone_shape *max, ex_teacher *out, ex_err *err) {
    ex_trainer *t = owner;
    EX_CHECK(plan_teacher(t, max, stdout, err));
    EX_CHECK(ex_model_allocate(&t->teacher, err));
    for (int i = 0; i < t->teacher.params.count; i++) {
        ex_param *tp = t->teacher.params.items[i];
        if (tp->alias) {
            EX_ENSURE(tp->value.data && tp->value.data == tp->alias->value.data, err, EX_E_INTERNAL,
                      "teacher parameter '%s' was to share the student's memory, which is not allocated",
                      tp->value.name);
            continue;
        }
        const ex_param *sp = ex_params_find(&t->model.params, tp->value.name);
        EX_ENSURE(sp && ex_tensor_numel(&sp->value) == ex_tensor_numel(&tp->value) &&
                      sp->value.dtype == tp->value.dtype,
                  err, EX_E_INTERNAL,
                  "teacher parameter '%s' has no student counterpart", tp->value.name);
        ex_status st = t->be->vt.copy(t->be->ctx, tp->value.data, sp->value.data, ex_tensor_nbytes(&tp->value), EX_COPY_D2D);
        EX_ENSURE(st == EX_OK, err, st, "copying '%s' to the teacher failed", tp->value.name);
    }
    out->params = &t->teacher.params;
    out->bb = t->teacher.vt;
    out->bb_self = t->teacher.self;
    return EX_OK;
}

/* Several ranks: say which one failed and take every rank down (bounded exit for all of them). */
static void report_abort(const ex_trainer *t, const ex_err *err) {
    if (t->comm.world <= 1) return;
    fprintf(stderr, "explora: error: rank %d of %d: %s\n", t->comm.rank, t->comm.world,
            err->msg[0] ? err->msg : ex_status_name(err->code));
    fflush(stderr);
    ex_comm_abort(&t->comm, (err->code == EX_E_CONFIG || err->code == EX_E_INVALID) ? 2 : 1);
}

static ex_status setup(ex_trainer *t, ex_session *s, ex_backend *be, ex_err *err);

ex_status ex_trainer_setup(ex_trainer *t, ex_session *s, ex_backend *be, ex_err *err) {
    memset(t, 0, sizeof *t);
    EX_CHECK(ex_comm_init(&t->comm, err));
    if (t->comm.world > 1) { /* from here on ranks wait on each other: joining NCCL, loading, every step */
        const ex_cfg_section run = {s->config, "run", ex_core_run_keys()};
        double stall_s = 0;
        ex_status st = ex_cfg_float(&run, "stall_timeout_s", &stall_s, err);
        if (st == EX_OK && stall_s > 0) st = ex_stall_watch_start(&t->stall_watch, stall_s, t->comm.rank, t->comm.world, err);
        if (st != EX_OK) {
            report_abort(t, err);
            return st;
        }
    }
    /* ranks other than 0 stay quiet: the setup summary, plans and progress come from rank 0 */
    if (t->comm.rank != 0 && !freopen("/dev/null", "w", stdout))
        EX_FAIL(err, EX_E_IO, "rank %d: cannot silence stdout", t->comm.rank);
    ex_status st = setup(t, s, be, err);
    if (st != EX_OK) report_abort(t, err);
    return st;
}

static ex_status setup(ex_trainer *t, ex_session *s, ex_backend *be, ex_err *err) {
    t->session = s;
    t->be = be;
    const ex_cfg_section optim = {s->config, "optim", ex_optim_keys()};
    const ex_cfg_section run = {s->config, "run", ex_core_run_keys()};
    int collectives = 0, attached = 0;
    EX_CHECK(ex_cfg_enum(&run, "collectives", &collectives, err));
    /* auto: device collectives when every rank's backend has them (all ranks agree, whatever each wants) */
    EX_CHECK(ex_comm_attach_device_if(&t->comm, be, collectives == 0, &attached, err));
    EX_CHECK(ex_cfg_int(&optim, "batch", &t->batch, err));
    EX_CHECK(ex_cfg_int(&optim, "accumulate", &t->accumulate, err));
    EX_CHECK(ex_optim_config_read(&optim, &t->ocfg, err));
    EX_CHECK(ex_loss_scaler_config_read(&optim, &t->scaler, err));
    int scaling = 0;
    EX_CHECK(ex_cfg_enum(&optim, "lr_scaling", &scaling, err));
    t->lr_base = t->ocfg.lr;
    const double eff = (double)t->batch * (double)t->comm.world * (double)t->accumulate;
    if (scaling == 1) t->ocfg.lr *= eff / 256.0;         /* MAE: lr = blr x eff / 256 */
    if (scaling == 2) t->ocfg.lr *= sqrt(eff / 1024.0);  /* DINOv2: lr x sqrt(eff / 1024) */
    EX_CHECK(ex_cfg_int(&run, "log_every", &t->log_every, err));
    EX_CHECK(ex_cfg_int(&run, "checkpoint_every", &t->checkpoint_every, err));
    EX_CHECK(ex_cfg_int(&run, "stop_at", &t->stop_at, err));
    EX_CHECK(ex_cfg_int(&run, "keep_last", &t->keep_last, err));
    EX_CHECK(ex_cfg_path(&run, "out", t->out_dir, sizeof t->out_dir, err));

    EX_CHECK(ex_model_create(&t->model, s, be, err));
    /* before the objective builds a teacher that shares these tensors */
    EX_CHECK(ex_model_apply_frozen_dtype(&t->model, s, &t->frozen_narrow, &t->frozen_saved, err));
    EX_CHECK(ex_session_plugin(s, "objective", EX_PLUGIN_OBJECTIVE, NULL, &t->obj_plugin, &t->obj_view, err));
    t->obj = &t->obj_plugin->vtable_copy.objective;
    ex_objective_env env = {be, &t->model.params, t->model.vt, t->model.self, t->model.info, t->batch, t, make_teacher,
                            &t->comm};
    ex_status st = t->obj->create(&t->obj_view, &env, &t->obj_self, err);
    if (st != EX_OK) {
        ex_err_prefix(err, "objective '%s': ", t->obj_plugin->desc.name);
        return st;
    }
    EX_CHECK(t->obj->views(t->obj_self, &t->recipe));
    ex_backbone_shape shape;
    memset(&shape, 0, sizeof shape);
    EX_CHECK(t->obj->backbone_shape(t->obj_self, &shape));
    EX_CHECK(ex_model_activation_dtype(s, &shape.act_dtype, err));
    t->act_dtype = shape.act_dtype;
    EX_CHECK(ex_model_plan(&t->model, &shape, err));
    if (t->obj->plan) EX_CHECK(t->obj->plan(t->obj_self, &t->model.plan, err));
    EX_CHECK(ex_optim_plan(&t->optim, be, &t->model.params, &t->ocfg, &t->model.plan, err));
    return EX_OK;
}

ex_status ex_trainer_print_teacher_plan(ex_trainer *t, FILE *out, ex_err *err) {
    ex_backbone_shape shape;
    memset(&shape, 0, sizeof shape);
    int has = 0;
    if (!t->has_teacher && t->obj->teacher_shape) EX_CHECK(t->obj->teacher_shape(t->obj_self, &shape, &has));
    if (!has) { /* the student's plan alone */
        print_device_fit(t, (double)ex_memory_plan_total(&t->model.plan) / 1048576.0, out);
        return EX_OK;
    }
    ex_status st = plan_teacher(t, &shape, out, err);
    ex_model_free(&t->teacher); /* planned only: the run, if one follows, builds its own */
    t->has_teacher = 0;
    return st;
}

void ex_trainer_print(const ex_trainer *t, FILE *out) {
    fprintf(out, "objective %s, %d view%s per image", t->obj_plugin->desc.name, t->recipe.count,
            t->recipe.count > 1 ? "s" : "");
    for (int v = 0; v < t->recipe.count; v++)
        fprintf(out, "%s%lldx%lld", v ? ", " : ": ", (long long)t->recipe.views[v].height, (long long)t->recipe.views[v].width);
    fprintf(out, "\nbatch %lld x accumulate %lld, %lld steps, lr %g (warm-up %lld, cosine to %g)\n", (long long)t->batch,
            (long long)t->accumulate, (long long)t->ocfg.steps, t->ocfg.lr, (long long)t->ocfg.warmup_steps, t->ocfg.min_lr);
    if (t->comm.world > 1 || t->ocfg.lr != t->lr_base)
        fprintf(out, "%d process%s: effective batch %lld (batch x processes x accumulate), base lr %g scaled to %g\n",
                t->comm.world, t->comm.world > 1 ? "es" : "", (long long)(t->batch * t->comm.world * t->accumulate),
                t->lr_base, t->ocfg.lr);
    if (t->comm.world > 1)
        fprintf(out, "gradients summed over processes %s%s%s\n",
                t->comm.device ? "in device memory by the backend's collectives" : "through host memory by MPI",
                t->comm.device_note[0] ? ": " : "", t->comm.device_note);
    if (t->scaler.enabled)
        fprintf(out, "loss scaling: dynamic, from %g, doubled after %lld finite steps, halved on overflow\n",
                t->scaler.scale, (long long)t->scaler.growth_interval);
    if (t->frozen_narrow)
        fprintf(out, "frozen weights: %d tensors kept in bf16 ([optim] frozen_dtype), %.1f MiB saved\n",
                t->frozen_narrow, (double)t->frozen_saved / 1048576.0);
    if (t->act_dtype == EX_BF16)
        fprintf(out, "activations: the blocks' GEMM inputs and attention's input and output kept in bf16 ([optim] activation_dtype)\n");
    ex_model_print(&t->model, out);
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Keep the latest checkpoint also as checkpoint-<step>.safetensors (a hard link: no copy) and delete
 * the numbered ones beyond the last `keep_last`. */
static ex_status rotate_checkpoints(ex_trainer *t, const char *latest, ex_err *err) {
    char numbered[4200];
    snprintf(numbered, sizeof numbered, "%s/checkpoint-%010lld.safetensors", t->out_dir, (long long)t->optim.step);
    unlink(numbered);
    EX_ENSURE(link(latest, numbered) == 0, err, EX_E_IO, "cannot keep '%s': %s", numbered, strerror(errno));
    DIR *d = opendir(t->out_dir);
    EX_ENSURE(d, err, EX_E_IO, "cannot list '%s': %s", t->out_dir, strerror(errno));
    char *names[4096];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 4096) {
        size_t len = strlen(de->d_name);
        if (strncmp(de->d_name, "checkpoint-", 11) == 0 && len > 12 && strcmp(de->d_name + len - 12, ".safetensors") == 0)
            names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_names); /* zero-padded steps: name order is step order */
    for (int i = 0; i < n; i++) {
        if (i < n - t->keep_last) {
            char old[4400];
            snprintf(old, sizeof old, "%s/%s", t->out_dir, names[i]);
            unlink(old);
        }
        free(names[i]);
    }
    return EX_OK;
}

/* Trainable tensors, optimiser moments and the run position, atomically. */
static ex_status save_checkpoint(ex_trainer *t, ex_err *err) {
    char path[4200], meta[64];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", t->out_dir);
    ex_params *ps = &t->model.params;
    size_t total = 0;
    for (int i = 0; i < ps->count; i++)
        if (ps->items[i]->trainable) total += (size_t)ex_tensor_numel(&ps->items[i]->value) * 3;
    float *host = malloc(sizeof(float) * (total ? total : 1));
    EX_ENSURE(host, err, EX_E_NOMEM, "checkpoint: out of memory");
    ex_st_writer *w = NULL;
    ex_status st = ex_st_writer_new(&w, err);
    size_t off = 0;
    for (int i = 0; i < t->optim.count && st == EX_OK; i++) {
        const ex_optim_slot *sl = &t->optim.slots[i];
        const ex_tensor *parts[3] = {&sl->param->value, &sl->m, &sl->v};
        const char *prefix[3] = {"param.", "optim.m.", "optim.v."};
        for (int k = 0; k < 3 && st == EX_OK; k++) {
            size_t n = (size_t)ex_tensor_numel(parts[k]);
            st = ex_be_download(t->be, host + off, parts[k]->data, n * sizeof(float), err);
            char name[EX_NAME_MAX];
            snprintf(name, sizeof name, "%s%.140s", prefix[k], sl->param->value.name);
            if (st == EX_OK) st = ex_st_writer_add(w, name, EX_F32, parts[k]->ndim, parts[k]->shape, host + off, err);
            off += n;
        }
    }
    void *keep = NULL;
    if (st == EX_OK && t->obj->save_state) st = t->obj->save_state(t->obj_self, w, &keep, err);
    const struct {
        const char *key;
        long long value;
    } m[] = {{"step", (long long)t->optim.step}, {"epoch", (long long)t->loader.epoch},
             {"position", (long long)t->loader.pos}, {"mask_rng_offset", (long long)t->mask_rng.offset},
             {"seed", (long long)t->model.seed}, {"world", (long long)t->comm.world},
             {"adam_step", (long long)t->optim.adam_step}, {"loss_scale_good_steps", (long long)t->scaler.good_steps},
             {"skipped_steps", (long long)t->scaler.skipped}};
    for (size_t k = 0; k < sizeof m / sizeof *m && st == EX_OK; k++) {
        snprintf(meta, sizeof meta, "%lld", m[k].value);
        st = ex_st_writer_metadata(w, m[k].key, meta, err);
    }
    if (st == EX_OK) { /* exact: a power of two in %a */
        snprintf(meta, sizeof meta, "%a", t->scaler.scale);
        st = ex_st_writer_metadata(w, "loss_scale", meta, err);
    }
    if (st == EX_OK) st = ex_st_writer_finish(w, path, err);
    ex_st_writer_free(w);
    free(keep);
    free(host);
    if (st == EX_OK && t->keep_last > 0) st = rotate_checkpoints(t, path, err);
    return st;
}

static ex_status write_config(ex_trainer *t, ex_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.ini", t->out_dir);
    ex_atomic_file af;
    EX_CHECK(ex_atomic_open(&af, path, err));
    ex_status st = ex_config_write(t->session->config, af.fp, err);
    if (st != EX_OK) {
        ex_atomic_abort(&af);
        return st;
    }
    return ex_atomic_commit(&af, err);
}

static int64_t meta_int(const ex_st_file *f, const char *key, ex_err *err, ex_status *st) {
    const char *v = ex_st_metadata(f, key);
    char *end = NULL;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || *end) *st = ex_err_set(err, EX_E_FORMAT, __FILE__, __LINE__, "%s: metadata '%s' missing or not an integer",
                                    ex_st_path(f), key);
    return (int64_t)x;
}

/* Restore what save_checkpoint wrote. */
static ex_status load_checkpoint(ex_trainer *t, ex_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", t->out_dir);
    ex_st_file *f;
    ex_status st = ex_st_open(&f, path, err);
    if (st != EX_OK) {
        ex_err_hint(err, "--resume continues the run in [run] out; start it without --resume first.");
        return st;
    }
    const int64_t step = meta_int(f, "step", err, &st), epoch = meta_int(f, "epoch", err, &st);
    const int64_t pos = meta_int(f, "position", err, &st), moff = meta_int(f, "mask_rng_offset", err, &st);
    const int64_t seed = meta_int(f, "seed", err, &st);
    const int64_t saved_world = ex_st_metadata(f, "world") ? meta_int(f, "world", err, &st) : 1;
    /* written before loss scaling existed: every step was an update, at the configured initial scale */
    const int64_t adam_step = ex_st_metadata(f, "adam_step") ? meta_int(f, "adam_step", err, &st) : step;
    if (ex_st_metadata(f, "loss_scale_good_steps")) t->scaler.good_steps = meta_int(f, "loss_scale_good_steps", err, &st);
    if (ex_st_metadata(f, "skipped_steps")) t->scaler.skipped = meta_int(f, "skipped_steps", err, &st);
    const char *ls = ex_st_metadata(f, "loss_scale");
    if (ls && t->scaler.enabled && st == EX_OK) {
        char *end = NULL;
        const double v = strtod(ls, &end);
        if (*end || !(v > 0.0) || !isfinite(v))
            st = ex_err_set(err, EX_E_FORMAT, __FILE__, __LINE__,
                            "%s: metadata 'loss_scale' = '%s' is not a positive number", path, ls);
        else
            t->scaler.scale = v;
    }
    if (st == EX_OK && (uint64_t)seed != t->model.seed)
        st = ex_err_set(err, EX_E_CONFIG, __FILE__, __LINE__, "%s was written with [run] seed = %lld, this run has %llu.", path,
                        (long long)seed, (unsigned long long)t->model.seed);
    float *host = NULL;
    size_t cap = 0;
    for (int i = 0; i < t->optim.count && st == EX_OK; i++) {
        const ex_optim_slot *sl = &t->optim.slots[i];
        const ex_tensor *parts[3] = {&sl->param->value, &sl->m, &sl->v};
        const char *prefix[3] = {"param.", "optim.m.", "optim.v."};
        for (int k = 0; k < 3 && st == EX_OK; k++) {
            char name[EX_NAME_MAX];
            snprintf(name, sizeof name, "%s%.140s", prefix[k], sl->param->value.name);
            const ex_st_entry *e = ex_st_find(f, name);
            const int64_t n = ex_tensor_numel(parts[k]);
            if (!e) {
                st = ex_err_set(err, EX_E_FORMAT, __FILE__, __LINE__,
                                "%s lacks '%s': the checkpoint was written by a different configuration.", path, name);
                break;
            }
            if ((size_t)n > cap) {
                float *nh = realloc(host, sizeof(float) * (size_t)n);
                if (!nh) {
                    st = ex_err_set(err, EX_E_NOMEM, __FILE__, __LINE__, "out of memory");
                    break;
                }
                host = nh;
                cap = (size_t)n;
            }
            st = ex_st_read_f32(f, e, host, n, err);
            if (st == EX_OK) st = ex_be_upload(t->be, parts[k]->data, host, sizeof(float) * (size_t)n, err);
        }
    }
    free(host);
    if (st == EX_OK && t->obj->load_state) {
        st = t->obj->load_state(t->obj_self, f, err);
        if (st != EX_OK) ex_err_prefix(err, "%s: objective state: ", path);
    }
    ex_st_close(f);
    EX_CHECK(st);
    t->optim.step = step;
    t->optim.adam_step = adam_step;
    t->mask_rng.offset = (uint64_t)moff;
    /* written by a different number of processes: the same place in the epoch, counted in this world */
    int64_t here = pos;
    if (saved_world != t->comm.world) {
        const int64_t global = pos * saved_world;
        EX_ENSURE(saved_world >= 1 && global % t->comm.world == 0, err, EX_E_CONFIG,
                  "%s was written by %lld processes at epoch position %lld, which %d processes cannot continue from.",
                  path, (long long)saved_world, (long long)global, t->comm.world);
        here = global / t->comm.world;
    }
    return ex_loader_seek(&t->loader, epoch, here, err);
}

/* summary.json: what `compare` tabulates (this invocation's time; peak resident memory of the process). */
static ex_status write_summary(ex_trainer *t, double seconds, ex_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/summary.json", t->out_dir);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    ex_atomic_file af;
    EX_CHECK(ex_atomic_open(&af, path, err));
    fprintf(af.fp,
            "{\"trainable_params\": %lld, \"total_params\": %lld, \"steps\": %lld, \"seconds\": %.3f, "
            "\"final_loss\": %.6g, \"peak_rss_mib\": %.1f, \"objective\": \"%s\", \"skipped_samples\": %lld}\n",
            (long long)ex_params_numel(&t->model.params, 1), (long long)ex_params_numel(&t->model.params, 0),
            (long long)t->optim.step, seconds, t->last_loss, (double)ru.ru_maxrss / 1024.0, t->obj_plugin->desc.name,
            (long long)t->loader.skipped);
    return ex_atomic_commit(&af, err);
}

/* Temporary files of checkpoints a killed run was writing ("*.tmp.<pid>"): never valid, so removed. */
static void remove_stale_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "checkpoint", 10) == 0 && strstr(de->d_name, ".safetensors.tmp.")) {
            char p[4400];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    }
    closedir(d);
}

/* On a terminal: one line redrawn every step with a bar, the loss terms, lr, speed, ETA and memory. */
static void progress_bar(const ex_trainer *t, FILE *log, int64_t step, const ex_loss_terms *sum, double t0) {
    const double el = now_s() - t0, frac = (double)step / (double)t->ocfg.steps;
    const double eta = step > 0 ? el / (double)step * (double)(t->ocfg.steps - step) : 0;
    char bar[25];
    const int filled = (int)(frac * 24.0);
    for (int i = 0; i < 24; i++) bar[i] = i < filled ? '#' : '.';
    bar[24] = '\0';
    long rss_pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        long size = 0;
        if (fscanf(f, "%ld %ld", &size, &rss_pages) != 2) rss_pages = 0;
        fclose(f);
    }
    fprintf(log, "\r\033[K[%s] %lld/%lld  loss %.4f", bar, (long long)step, (long long)t->ocfg.steps, sum->total);
    for (int k = 0; k < sum->count && k < 4; k++) fprintf(log, " %s %.3f", sum->names[k], sum->values[k]);
    fprintf(log, "  %.1f img/s  eta %.0fs  %.0f MiB", (double)(step * t->batch * t->accumulate) / (el > 0 ? el : 1), eta,
            (double)rss_pages * (double)sysconf(_SC_PAGESIZE) / 1048576.0);
    fflush(log);
}

static ex_status prepare(ex_trainer *t, ex_err *err) {
    const int writer = t->comm.rank == 0; /* rank 0 alone writes files */
    if (writer) EX_CHECK(ex_mkdir_p(t->out_dir, err));
    if (writer) remove_stale_temporaries(t->out_dir);
    if (writer && !t->resume) EX_CHECK(write_config(t, err));
    EX_CHECK(ex_model_allocate(&t->model, err));
    EX_CHECK(ex_model_load(&t->model, NULL, err));
    ex_rng init_rng = ex_rng_seed(t->model.seed, EX_RNG_INIT);
    init_rng.offset = (uint64_t)1 << 40; /* after what the PEFT strategies drew */
    if (t->obj->init) EX_CHECK(t->obj->init(t->obj_self, &init_rng, err));
    /* objectives that declare `weights` load their heads/decoder from it */
    const char *ow = ex_config_raw(t->session->config, "objective", "weights");
    if (ow && ow[0] && t->obj->load) {
        char path[4096];
        EX_CHECK(ex_cfg_path(&t->obj_view, "weights", path, sizeof path, err));
        ex_status st = t->obj->load(t->obj_self, path, err);
        if (st != EX_OK) {
            ex_err_prefix(err, "[objective] weights: ");
            return st;
        }
    }
    const ex_plugin *dp;
    ex_cfg_section dview;
    EX_CHECK(ex_session_plugin(t->session, "data", EX_PLUGIN_DATASET, NULL, &dp, &dview, err));
    t->ds_vt = &dp->vtable_copy.dataset;
    EX_CHECK(t->ds_vt->open(&dview, &t->ds, err));
    const ex_cfg_section tf = {t->session->config, "transform", ex_core_transform_keys()};
    double mean[16], std[16];
    int nm = 0, ns = 0;
    EX_CHECK(ex_cfg_float_list(&tf, "mean", mean, 16, &nm, err));
    EX_CHECK(ex_cfg_float_list(&tf, "std", std, 16, &ns, err));
    const int64_t C = t->model.info.channels;
    EX_ENSURE(nm == C && ns == C, err, EX_E_CONFIG, "[transform] mean and std need %lld values (one per channel).",
              (long long)C);
    const ex_cfg_section run = {t->session->config, "run", ex_core_run_keys()};
    int64_t workers = 0;
    EX_CHECK(ex_cfg_int(&run, "loader_workers", &workers, err));
    int skip_bad = 0;
    EX_CHECK(ex_cfg_bool(&run, "skip_bad", &skip_bad, err));
    EX_CHECK(ex_loader_init(&t->loader, t->ds_vt, t->ds, &t->recipe, t->batch, C, mean, std, t->model.seed,
                            (int)workers, t->comm.rank, t->comm.world, skip_bad, err));
    for (int v = 0; v < t->recipe.count; v++)
        EX_CHECK(ex_be_alloc(t->be,
                             sizeof(float) * (size_t)(t->batch * C * t->recipe.views[v].height * t->recipe.views[v].width),
                             (void **)&t->dev_views[v], err));
    t->mask_rng = ex_rng_seed(t->model.seed, EX_RNG_MASK);
    if (t->resume) EX_CHECK(load_checkpoint(t, err));
    return EX_OK;
}

/* The noise key of micro-batch `micro` of the current step (adapter dropout): a function of the seed, the
 * step, the micro-batch and the rank, so a resumed run draws what the uninterrupted one drew. Never 0. */
static uint64_t noise_key(const ex_trainer *t, int64_t micro) {
    const ex_rng base = ex_rng_seed(t->model.seed, EX_RNG_DROPPATH);
    uint64_t k = ex_splitmix64(base.key ^ ex_splitmix64((uint64_t)t->optim.step * (uint64_t)t->accumulate + (uint64_t)micro));
    k = ex_splitmix64(k ^ (uint64_t)t->comm.rank);
    return k ? k : 1;
}

/* The gradient regions an all-reduce covers: the whole span of the gradient arena when the gradients lie in one
 * (ex_optim_grad_span: one region, padding included, which is zero and sums to zero), else each tensor. */
static int64_t grad_region(const ex_trainer *t, int spanned, float *span, int64_t span_n, int i, float **p) {
    if (spanned) {
        *p = span;
        return span_n;
    }
    const ex_tensor *g = &t->optim.slots[i].param->grad;
    *p = (float *)g->data;
    return ex_tensor_numel(g);
}

/* Sum the trainable gradients over ranks (device collectives, or one packed host all-reduce) and scale by
 * 1 / (world x accumulate); one process: the accumulation average alone. */
static ex_status reduce_grads(ex_trainer *t, ex_err *err) {
    const int world = t->comm.world;
    if (world <= 1) {
        if (t->accumulate > 1) EX_CHECK(ex_optim_scale_grads(&t->optim, 1.0f / (float)t->accumulate, err));
        return EX_OK;
    }
    float *span = NULL, *p = NULL;
    int64_t span_n = 0;
    const int spanned = ex_optim_grad_span(&t->optim, &span, &span_n); /* the usual case: one gradient arena */
    const int regions = spanned ? 1 : t->optim.count;
    if (t->comm.device) { /* in device memory (NCCL queues its work on the backend's stream) */
        for (int i = 0; i < regions; i++) {
            const int64_t n = grad_region(t, spanned, span, span_n, i, &p);
            EX_CHECK(ex_comm_allreduce_sum_f32(&t->comm, t->be, p, n, err));
        }
    } else { /* packed into one host buffer (the layout is fixed for the run, so is its size), one MPI all-reduce */
        size_t total = 0;
        for (int i = 0; i < regions; i++) total += (size_t)grad_region(t, spanned, span, span_n, i, &p);
        if (!t->grad_host) {
            t->grad_host = malloc(sizeof(float) * (total ? total : 1));
            EX_ENSURE(t->grad_host, err, EX_E_NOMEM, "out of memory staging %zu gradients", total);
        }
        size_t off = 0;
        for (int i = 0; i < regions; i++) {
            const size_t n = (size_t)grad_region(t, spanned, span, span_n, i, &p);
            EX_CHECK(ex_be_download(t->be, t->grad_host + off, p, sizeof(float) * n, err));
            off += n;
        }
        EX_CHECK(ex_comm_allreduce_sum_f32_host(&t->comm, t->grad_host, (int64_t)total, err));
        off = 0;
        for (int i = 0; i < regions; i++) {
            const size_t n = (size_t)grad_region(t, spanned, span, span_n, i, &p);
            EX_CHECK(ex_be_upload(t->be, p, t->grad_host + off, sizeof(float) * n, err));
            off += n;
        }
    }
    return ex_optim_scale_grads(&t->optim, (float)(1.0 / ((double)world * (double)t->accumulate)), err);
}

/* The logged loss terms averaged over ranks, and *stop: whether any rank was asked to stop (Ctrl-C, SIGTERM)
 * by now. With several ranks every rank stops after the same step, the one whose reduction first saw a
 * request (a rank that stopped alone would leave the others waiting in the next step's all-reduce). */
static ex_status reduce_terms(ex_trainer *t, ex_loss_terms *sum, int *stop, ex_err *err) {
    *stop = t->stop && *t->stop;
    if (t->comm.world <= 1) return EX_OK;
    double v[EX_MAX_LOSS_TERMS + 2];
    for (int k = 0; k < sum->count; k++) v[k] = sum->values[k];
    v[sum->count] = sum->total;
    v[sum->count + 1] = *stop ? 1.0 : 0.0;
    EX_CHECK(ex_comm_allreduce_sum_f64(&t->comm, v, sum->count + 2, err));
    for (int k = 0; k < sum->count; k++) sum->values[k] = v[k] / t->comm.world;
    sum->total = v[sum->count] / t->comm.world;
    *stop = v[sum->count + 1] > 0.0;
    return EX_OK;
}

static ex_status run_loop(ex_trainer *t, FILE *log, ex_err *err);

ex_status ex_trainer_run(ex_trainer *t, FILE *log, ex_err *err) {
    ex_status st = run_loop(t, log, err);
    if (st != EX_OK) report_abort(t, err);
    return st;
}

/* skip_bad: one line for the unreadable samples replaced since the last report, when the batch that finishes
 * an epoch arrives (its count runs to the end of that batch) and at the end of the run (epoch < 0). */
static void report_skips(const ex_trainer *t, FILE *log, int64_t epoch, int64_t *reported) {
    const int64_t n = t->loader.skipped - *reported;
    if (n <= 0) return;
    if (epoch >= 0)
        fprintf(log, "epoch %lld finished: %lld unreadable samples replaced since the last report (%lld in this run); the "
                "first: %s\n",
                (long long)epoch, (long long)n, (long long)t->loader.skipped, t->loader.first_skip.msg);
    else
        fprintf(log, "%lld unreadable samples replaced since the last report (%lld in this run); the first: %s\n",
                (long long)n, (long long)t->loader.skipped, t->loader.first_skip.msg);
    fflush(log);
    *reported = t->loader.skipped;
}

static ex_status run_loop(ex_trainer *t, FILE *log, ex_err *err) {
    EX_CHECK(prepare(t, err));
    const int writer = t->comm.rank == 0;
    char mpath[4200];
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", t->out_dir);
    FILE *metrics = writer ? fopen(mpath, t->resume ? "a" : "w") : fopen("/dev/null", "w");
    EX_ENSURE(metrics, err, EX_E_IO, "cannot create '%s': %s", mpath, strerror(errno));
    if (!writer) log = metrics; /* progress lines from rank 0 only */
    const int64_t C = t->model.info.channels;
    ex_status st = EX_OK;
    double t0 = now_s(), tlast = t0;
    const int tty = isatty(fileno(log));
    int64_t images_since = 0, seen_epoch = t->loader.epoch, reported_skips = 0;
    while (t->optim.step < t->ocfg.steps && st == EX_OK) {
        EX_CHECK_GOTO(ex_optim_zero_grads(&t->optim, err), st, done);
        ex_loss_terms sum;
        memset(&sum, 0, sizeof sum);
        for (int64_t micro = 0; micro < t->accumulate; micro++) {
            EX_CHECK_GOTO(ex_loader_next(&t->loader, err), st, done);
            if (t->loader.epoch != seen_epoch) { /* skip_bad: what the finished epoch stepped over */
                report_skips(t, log, seen_epoch, &reported_skips);
                seen_epoch = t->loader.epoch;
            }
            ex_batch b;
            memset(&b, 0, sizeof b);
            b.batch = t->batch;
            b.nviews = t->recipe.count;
            b.labels = t->loader.labels;
            b.noise = noise_key(t, micro);
            b.grad_scale = (float)t->scaler.scale;
            for (int v = 0; v < b.nviews; v++) {
                const ex_view_spec *sp = &t->recipe.views[v];
                EX_CHECK_GOTO(ex_be_upload(t->be, t->dev_views[v], t->loader.views[v],
                                           sizeof(float) * (size_t)(t->batch * C * sp->height * sp->width), err),
                              st, done);
                b.views[v] = t->dev_views[v];
                b.height[v] = sp->height;
                b.width[v] = sp->width;
            }
            ex_loss_terms terms;
            memset(&terms, 0, sizeof terms);
            EX_CHECK_GOTO(t->obj->step(t->obj_self, &b, &t->mask_rng, t->optim.step, &terms, err), st, done);
            if (t->scaler.enabled && !terms.grad_scaled)
                EX_FAIL_GOTO(err, st, done, EX_E_CONFIG,
                             "objective '%s' does not apply the loss scale to its gradients, so it cannot train with "
                             "[optim] loss_scale = dynamic; set loss_scale = none.",
                             t->obj_plugin->desc.name);
            if (!isfinite(terms.total)) {
                st = ex_err_set(err, EX_E_INVALID, __FILE__, __LINE__,
                                "the loss is %g at step %lld (last finite value %g); stopping without saving.",
                                terms.total, (long long)t->optim.step, t->last_loss);
                ex_err_hint(err, t->scaler.enabled
                                     ? "lower [optim] lr, raise warmup_steps, or set clip_grad = 3. With fp16 GEMMs "
                                       "([backend] gemm_math = fp16) a forward activation beyond fp16's 65504 gives "
                                       "this too, which loss scaling cannot skip past: use gemm_math = bf16 where the "
                                       "GPU has bf16."
                                     : "lower [optim] lr, raise warmup_steps, or set clip_grad = 3.");
                goto done;
            }
            sum.count = terms.count;
            for (int k = 0; k < terms.count; k++) {
                sum.names[k] = terms.names[k];
                sum.values[k] += terms.values[k] / (double)t->accumulate;
            }
            sum.total += terms.total / (double)t->accumulate;
            images_since += t->batch * t->comm.world;
        }
        EX_CHECK_GOTO(reduce_grads(t, err), st, done);
        int stop_now = 0;
        EX_CHECK_GOTO(reduce_terms(t, &sum, &stop_now, err), st, done);
        double lr = 0, gnorm = 0;
        const double scale_used = t->scaler.scale;
        int skipped = 0;
        EX_CHECK_GOTO(ex_optim_step_scaled(&t->optim, &t->scaler, &lr, &gnorm, &skipped, err), st, done);
        if (t->obj->update) EX_CHECK_GOTO(t->obj->update(t->obj_self, t->optim.step, t->ocfg.steps, err), st, done);
        t->last_loss = sum.total;
        const int64_t step = t->optim.step;
        if (step % t->log_every == 0 || step == t->ocfg.steps || step == 1) {
            double now = now_s(), ips = images_since / (now - tlast);
            fprintf(metrics, "{\"step\": %lld, \"loss\": %.6g", (long long)step, sum.total);
            for (int k = 0; k < sum.count; k++) fprintf(metrics, ", \"%s\": %.6g", sum.names[k], sum.values[k]);
            if (t->scaler.enabled)
                fprintf(metrics, ", \"loss_scale\": %.17g, \"skipped\": %d, \"skipped_total\": %lld", scale_used, skipped,
                        (long long)t->scaler.skipped);
            fprintf(metrics, ", \"lr\": %.6g, \"grad_norm\": %.6g, \"images_per_s\": %.4g, \"epoch\": %lld, \"elapsed_s\": %.3f}\n",
                    lr, gnorm, ips, (long long)t->loader.epoch, now - t0);
            fflush(metrics);
            double eta = (now - t0) / (double)step * (double)(t->ocfg.steps - step);
            if (tty) fprintf(log, "\r\033[K"); /* replace the progress bar by the log line */
            fprintf(log, "step %lld/%lld  loss %.5f  lr %.3g  |g| %.3g  %.1f img/s  epoch %lld  eta %.0fs%s\n", (long long)step,
                    (long long)t->ocfg.steps, sum.total, lr, gnorm, ips, (long long)t->loader.epoch, eta,
                    skipped ? "  (skipped: gradients overflowed; loss scale halved)" : "");
            fflush(log);
            tlast = now;
            images_since = 0;
        }
        if (tty && step % t->log_every != 0 && step != t->ocfg.steps) progress_bar(t, log, step, &sum, t0);
        if (writer && t->checkpoint_every > 0 && step % t->checkpoint_every == 0)
            EX_CHECK_GOTO(save_checkpoint(t, err), st, done);
        if (t->after_step) EX_CHECK_GOTO(t->after_step(t->after_step_ctx, t, step, err), st, done);
        ex_stall_watch_beat(t->stall_watch, step);
        if (t->stop_at > 0 && step >= t->stop_at) {
            fprintf(log, "stopping at step %lld ([run] stop_at); continue with --resume\n", (long long)step);
            break;
        }
        /* one process: the request as it stands now; several: as all ranks agreed in this step's reduction */
        if (t->comm.world <= 1 ? (t->stop && *t->stop) : stop_now) {
            fprintf(log, "interrupted at step %lld: writing a checkpoint; continue with --resume\n", (long long)step);
            break;
        }
    }
    report_skips(t, log, -1, &reported_skips);
    if (st == EX_OK && writer) EX_CHECK_GOTO(save_checkpoint(t, err), st, done);
    if (st == EX_OK && writer) EX_CHECK_GOTO(write_summary(t, now_s() - t0, err), st, done);
    /* every rank leaves together, after rank 0's files are complete; a rank stuck elsewhere is an error */
    if (st == EX_OK) EX_CHECK_GOTO(ex_comm_barrier(&t->comm, 600.0, err), st, done);
    fprintf(log, "done: %lld steps in %.1f s, final loss %.5f; run directory %s\n", (long long)t->optim.step, now_s() - t0,
            t->last_loss, t->out_dir);
done:
    ex_stall_watch_stop(t->stall_watch); /* the ranks are done waiting on each other */
    t->stall_watch = NULL;
    fclose(metrics);
    return st;
}

void ex_trainer_free(ex_trainer *t) {
    ex_stall_watch_stop(t->stall_watch);
    t->stall_watch = NULL;
    /* the memory plan points at tensors owned by the model, the objective and the optimiser: release it first */
    ex_memory_plan_release(&t->model.plan);
    for (int v = 0; v < EX_MAX_VIEWS; v++)
        if (t->dev_views[v]) ex_be_free(t->be, t->dev_views[v]);
    ex_loader_free(&t->loader);
    if (t->ds) t->ds_vt->close(t->ds);
    ex_optim_free(&t->optim);
    if (t->obj && t->obj_self) t->obj->destroy(t->obj_self);
    if (t->has_teacher) ex_model_free(&t->teacher);
    ex_model_free(&t->model);
    free(t->grad_host);
    ex_comm_free(&t->comm);
    memset(t, 0, sizeof *t);
}
