/*
 * core/src/model.c — building a backbone from a session (see explora/model.h).
 */
#include "explora/model.h"

#include "explora/optim.h"
#include "explora/safetensors.h"

#include <stdlib.h>
#include <string.h>

static int declares(const ex_key_spec *specs, const char *key) {
    for (int i = 0; specs && specs[i].name; i++)
        if (strcmp(specs[i].name, key) == 0) return 1;
    return 0;
}

ex_status ex_model_image_size(const ex_session *s, int64_t *height, int64_t *width, ex_err *err) {
    *height = *width = 224;
    if (!ex_config_has_section(s->config, "backbone")) return EX_OK;
    const ex_plugin *p;
    ex_cfg_section view;
    EX_CHECK(ex_session_plugin(s, "backbone", EX_PLUGIN_BACKBONE, "vit", &p, &view, err));
    if (!declares(view.specs, "image_size")) return EX_OK;
    int64_t v[2];
    int n = 0;
    EX_CHECK(ex_cfg_int_list(&view, "image_size", v, 2, &n, err));
    EX_ENSURE(n == 1 || n == 2, err, EX_E_CONFIG, "[backbone] image_size takes 'side' or 'height, width'.");
    *height = v[0];
    *width = n == 2 ? v[1] : v[0];
    return EX_OK;
}

/* Freeze everything, then create and apply each strategy of [peft] stack in order. */
static ex_status apply_peft(ex_model *m, const ex_session *s, ex_err *err) {
    EX_CHECK(ex_params_set_trainable(&m->params, "*", 0, NULL, err));
    if (!ex_config_has_section(s->config, "peft")) return EX_OK;
    const ex_cfg_section peft = {s->config, "peft", ex_core_peft_keys()};
    const char *names[EX_MODEL_MAX_PEFT];
    char buf[1024];
    int n = 0;
    EX_CHECK(ex_cfg_string_list(&peft, "stack", names, EX_MODEL_MAX_PEFT, &n, buf, sizeof buf, err));
    ex_peft_target t = {m->be, &m->params, m->vt, m->self, m->info};
    for (int i = 0; i < n; i++) {
        snprintf(m->peft_section[i], sizeof m->peft_section[i], "peft.%s", names[i]);
        EX_CHECK(ex_registry_find(s->registry, EX_PLUGIN_PEFT, names[i], &m->peft_plugin[i], err));
        m->peft_view[i] = (ex_cfg_section){s->config, m->peft_section[i], m->peft_plugin[i]->desc.keys};
        const ex_peft_vtable *v = &m->peft_plugin[i]->vtable_copy.peft;
        ex_status st = v->create(&m->peft_view[i], &m->peft_self[i], err);
        if (st == EX_OK) {
            m->npeft = i + 1;
            st = v->apply(m->peft_self[i], &t, err);
        }
        if (st != EX_OK) {
            ex_err_prefix(err, "[peft] strategy '%s': ", names[i]);
            return st;
        }
    }
    return EX_OK;
}

ex_status ex_model_create(ex_model *m, const ex_session *s, ex_backend *be, ex_err *err) {
    memset(m, 0, sizeof *m);
    m->be = be;
    ex_params_init(&m->params);
    ex_memory_plan_init(&m->plan, be);
    EX_CHECK(ex_session_plugin(s, "backbone", EX_PLUGIN_BACKBONE, "vit", &m->plugin, &m->view, err));
    m->vt = &m->plugin->vtable_copy.backbone;
    ex_status st = m->vt->create(&m->view, be, &m->params, &m->self, err);
    if (st != EX_OK) {
        ex_err_prefix(err, "backbone '%s': ", m->plugin->desc.name);
        return st;
    }
    EX_CHECK(m->vt->info(m->self, &m->info));
    m->backbone_params = m->params.count;
    const ex_cfg_section run = {s->config, "run", ex_core_run_keys()};
    int64_t seed = 0;
    EX_CHECK(ex_cfg_int(&run, "seed", &seed, err));
    m->seed = (uint64_t)seed;
    EX_CHECK(apply_peft(m, s, err));
    return m->vt->info(m->self, &m->info); /* strategies may change the token layout (prompts) */
}

ex_status ex_model_apply_frozen_dtype(ex_model *m, const ex_session *s, int *count, size_t *saved, ex_err *err) {
    if (count) *count = 0;
    if (saved) *saved = 0;
    if (!ex_config_has_section(s->config, "optim")) return EX_OK;
    const ex_cfg_section optim = {s->config, "optim", ex_optim_keys()};
    int dtype = 0; /* fp32|bf16 */
    EX_CHECK(ex_cfg_enum(&optim, "frozen_dtype", &dtype, err));
    if (dtype == 0) return EX_OK;
    ex_status st = ex_params_set_frozen_dtype(&m->params, m->be, EX_BF16, count, saved, err);
    if (st != EX_OK) ex_err_prefix(err, "[optim] frozen_dtype = bf16: ");
    return st;
}

ex_status ex_model_activation_dtype(const ex_session *s, ex_dtype *out, ex_err *err) {
    *out = EX_F32;
    if (!ex_config_has_section(s->config, "optim")) return EX_OK;
    const ex_cfg_section optim = {s->config, "optim", ex_optim_keys()};
    int dtype = 0; /* fp32|bf16 */
    EX_CHECK(ex_cfg_enum(&optim, "activation_dtype", &dtype, err));
    *out = dtype ? EX_BF16 : EX_F32;
    return EX_OK;
}

ex_status ex_model_plan(ex_model *m, const ex_backbone_shape *shape, ex_err *err) {
    m->shape = *shape;
    EX_CHECK(ex_params_plan(&m->params, &m->plan, err));
    EX_CHECK(m->vt->plan(m->self, shape, &m->plan, err));
    const int64_t p = m->info.patch;
    const int64_t max_rows = shape->batch * (1 + m->info.registers + (shape->height / p) * (shape->width / p));
    for (int i = 0; i < m->npeft; i++) {
        const ex_peft_vtable *v = &m->peft_plugin[i]->vtable_copy.peft;
        if (v->plan) EX_CHECK(v->plan(m->peft_self[i], max_rows, &m->plan, err));
    }
    return EX_OK;
}

ex_status ex_model_build(ex_model *m, const ex_session *s, ex_backend *be, const ex_backbone_shape *shape,
                         ex_err *err) {
    EX_CHECK(ex_model_create(m, s, be, err));
    return ex_model_plan(m, shape, err);
}

ex_status ex_model_allocate(ex_model *m, ex_err *err) {
    EX_CHECK(ex_memory_plan_commit(&m->plan, err));
    m->allocated = 1;
    ex_params_bind(&m->params);
    EX_CHECK(m->vt->ready(m->self, err));
    ex_rng rng = ex_rng_seed(m->seed, EX_RNG_INIT);
    for (int i = 0; i < m->npeft; i++) {
        const ex_peft_vtable *v = &m->peft_plugin[i]->vtable_copy.peft;
        if (v->init) EX_CHECK(v->init(m->peft_self[i], &rng, err));
    }
    return EX_OK;
}

ex_status ex_model_load(ex_model *m, const char *path, ex_err *err) {
    char buf[4096];
    if (!path) {
        const char *raw = declares(m->view.specs, "weights") ? ex_config_raw(m->view.config, m->view.section, "weights") : NULL;
        if (!raw || !raw[0]) { /* no checkpoint: train from scratch */
            if (!m->vt->init) return EX_OK;
            ex_rng rng = ex_rng_seed(m->seed, EX_RNG_INIT);
            rng.offset = (uint64_t)1 << 41; /* clear of the PEFT strategies' and objectives' draws */
            return m->vt->init(m->self, &rng, err);
        }
        EX_CHECK(ex_cfg_path(&m->view, "weights", buf, sizeof buf, err));
        path = buf;
    }
    const char *format = "auto";
    if (declares(m->view.specs, "format")) EX_CHECK(ex_cfg_string(&m->view, "format", &format, err));
    /* adapters and heads added after the backbone are not in a backbone checkpoint */
    uint8_t saved[4096];
    const int extra = m->params.count - m->backbone_params;
    EX_ENSURE(extra <= (int)sizeof saved, err, EX_E_INTERNAL, "too many non-backbone parameters");
    for (int i = 0; i < extra; i++) {
        saved[i] = (uint8_t)m->params.items[m->backbone_params + i]->optional;
        m->params.items[m->backbone_params + i]->optional = 1;
    }
    ex_status st = m->vt->load(m->self, path, format, err);
    for (int i = 0; i < extra; i++) m->params.items[m->backbone_params + i]->optional = saved[i];
    return st;
}

void ex_model_free(ex_model *m) {
    /* the plan points at tensors owned by the backbone and the params: release it first */
    ex_memory_plan_release(&m->plan);
    for (int i = 0; i < m->npeft; i++) m->peft_plugin[i]->vtable_copy.peft.destroy(m->peft_self[i]);
    if (m->vt && m->self) m->vt->destroy(m->self);
    ex_params_free(&m->params);
    memset(m, 0, sizeof *m);
}

void ex_model_print(const ex_model *m, FILE *out) {
    if (m->npeft) {
        fprintf(out, "peft stack:");
        for (int i = 0; i < m->npeft; i++) fprintf(out, " %s", m->peft_plugin[i]->desc.name);
        fprintf(out, "\n");
    }
    fprintf(out, "backbone %s: dim %lld, depth %lld, heads %lld, patch %lld, registers %lld\n", m->plugin->desc.name,
            (long long)m->info.dim, (long long)m->info.depth, (long long)m->info.heads, (long long)m->info.patch,
            (long long)m->info.registers);
    ex_params_print_summary(&m->params, out);
    fprintf(out, "for batch %lld at %lldx%lld:\n", (long long)m->shape.batch, (long long)m->shape.height,
            (long long)m->shape.width);
    ex_memory_plan_print(&m->plan, out);
}

ex_status ex_model_load_trained(ex_model *m, const char *path, const char *copy, int *loaded, ex_err *err) {
    if (!copy) copy = "auto";
    EX_ENSURE(strcmp(copy, "auto") == 0 || strcmp(copy, "student") == 0 || strcmp(copy, "teacher") == 0, err,
              EX_E_INVALID, "copy '%s' of checkpoint '%s' is not one of auto, student, teacher", copy, path);
    ex_st_file *f;
    EX_CHECK(ex_st_open(&f, path, err));
    static const char k_teacher[] = "objective.teacher.", k_student[] = "param.";
    int has_teacher = 0;
    for (int i = 0; i < ex_st_count(f) && !has_teacher; i++)
        has_teacher = strncmp(ex_st_at(f, i)->name, k_teacher, sizeof k_teacher - 1) == 0;
    if (strcmp(copy, "teacher") == 0 && !has_teacher) {
        ex_st_close(f);
        EX_FAIL(err, EX_E_INVALID,
                "checkpoint '%s' has no EMA teacher (no 'objective.teacher.*' tensors: its objective keeps none); "
                "use the student copy (copy auto or student)",
                path);
    }
    const char *prefix = strcmp(copy, "student") == 0 ? k_student : has_teacher ? k_teacher : k_student;
    const size_t plen = strlen(prefix);
    int has_prefix = 0;
    for (int i = 0; i < ex_st_count(f) && !has_prefix; i++) has_prefix = strncmp(ex_st_at(f, i)->name, prefix, plen) == 0;
    if (!has_prefix) {
        ex_st_close(f);
        EX_FAIL(err, EX_E_INVALID,
                "'%s' holds no '%s*' tensors: it is not an explora run checkpoint%s. Pass a run's checkpoint.safetensors, "
                "or load plain weights through [backbone] weights",
                path, prefix, has_teacher ? " with a student copy (slim keeps only the teacher: use copy auto)" : "");
    }
    ex_status st = EX_OK;
    float *host = NULL;
    size_t cap = 0;
    *loaded = 0;
    for (int i = 0; i < ex_st_count(f) && st == EX_OK; i++) {
        const ex_st_entry *e = ex_st_at(f, i);
        if (strncmp(e->name, prefix, plen) != 0) continue;
        ex_param *p = ex_params_find(&m->params, e->name + plen);
        if (!p) continue; /* an objective's head: not part of this model */
        const int64_t n = ex_tensor_numel(&p->value);
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
        if (st != EX_OK) ex_err_prefix(err, "%s: tensor '%s' does not fit the model: ", path, e->name);
        if (st == EX_OK) st = ex_params_upload(m->be, p, 0, host, n, err);
        (*loaded)++;
    }
    free(host);
    ex_st_close(f);
    return st;
}
