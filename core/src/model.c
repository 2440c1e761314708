/*
 * core/src/model.c — building a backbone from a session (see explora/model.h).
 */
#include "explora/model.h"

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

ex_status ex_model_build(ex_model *m, const ex_session *s, ex_backend *be, const ex_backbone_shape *shape,
                         ex_err *err) {
    memset(m, 0, sizeof *m);
    m->be = be;
    m->shape = *shape;
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
    EX_CHECK(ex_params_plan(&m->params, &m->plan, err));
    return m->vt->plan(m->self, shape, &m->plan, err);
}

ex_status ex_model_allocate(ex_model *m, ex_err *err) {
    EX_CHECK(ex_memory_plan_commit(&m->plan, err));
    m->allocated = 1;
    ex_params_bind(&m->params);
    return m->vt->ready(m->self, err);
}

ex_status ex_model_load(ex_model *m, const char *path, ex_err *err) {
    char buf[4096];
    if (!path) {
        if (!declares(m->view.specs, "weights")) return EX_OK;
        const char *raw = ex_config_raw(m->view.config, m->view.section, "weights");
        if (!raw || !raw[0]) return EX_OK;
        EX_CHECK(ex_cfg_path(&m->view, "weights", buf, sizeof buf, err));
        path = buf;
    }
    const char *format = "auto";
    if (declares(m->view.specs, "format")) EX_CHECK(ex_cfg_string(&m->view, "format", &format, err));
    return m->vt->load(m->self, path, format, err);
}

void ex_model_free(ex_model *m) {
    /* the plan points at tensors owned by the backbone and the params: release it first */
    ex_memory_plan_release(&m->plan);
    if (m->vt && m->self) m->vt->destroy(m->self);
    ex_params_free(&m->params);
    memset(m, 0, sizeof *m);
}

void ex_model_print(const ex_model *m, FILE *out) {
    fprintf(out, "backbone %s: dim %lld, depth %lld, heads %lld, patch %lld, registers %lld\n", m->plugin->desc.name,
            (long long)m->info.dim, (long long)m->info.depth, (long long)m->info.heads, (long long)m->info.patch,
            (long long)m->info.registers);
    ex_params_print_summary(&m->params, out);
    fprintf(out, "for batch %lld at %lldx%lld:\n", (long long)m->shape.batch, (long long)m->shape.height,
            (long long)m->shape.width);
    ex_memory_plan_print(&m->plan, out);
}
