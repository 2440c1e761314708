/*
 * plugins/dinov2/dinov2_state.c — what a resumed DINOv2 run needs beyond the
 * student's trainable tensors: the teacher (backbone and heads, which follow
 * the student by EMA and so differ from it) and the centres with their
 * pending batch means. Saved as "objective.teacher.<name>",
 * "objective.teacher_head.<name>", "objective.center.{dino,ibot}.{c,pend,pending}".
 */
#include <stdlib.h>
#include <string.h>

#include "dinov2_internal.h"

typedef struct state_item {
    char name[EX_NAME_MAX];
    const ex_tensor *t; /* device tensor, or NULL for a host scalar */
    float scalar;
} state_item;

/* Every item, in a fixed order; returns the count (items may be NULL to count). */
static int list_items(dinov2 *d, state_item *items) {
    int n = 0;
    const ex_params *sets[2] = {d->have_teacher ? d->teacher.params : NULL, &d->tparams};
    const char *prefix[2] = {"objective.teacher.", "objective.teacher_head."};
    for (int k = 0; k < 2; k++) {
        if (!sets[k]) continue;
        for (int i = 0; i < sets[k]->count; i++, n++)
            if (items) {
                snprintf(items[n].name, EX_NAME_MAX, "%s%.120s", prefix[k], sets[k]->items[i]->value.name);
                items[n].t = &sets[k]->items[i]->value;
            }
    }
    dn_center *cs[2] = {&d->cdino, &d->cibot};
    const char *cn[2] = {"dino", "ibot"};
    for (int k = 0; k < 2; k++) {
        if (!cs[k]->c.data) continue;
        if (items) {
            snprintf(items[n].name, EX_NAME_MAX, "objective.center.%s.c", cn[k]);
            items[n].t = &cs[k]->c;
            snprintf(items[n + 1].name, EX_NAME_MAX, "objective.center.%s.pend", cn[k]);
            items[n + 1].t = &cs[k]->pend;
            snprintf(items[n + 2].name, EX_NAME_MAX, "objective.center.%s.pending", cn[k]);
            items[n + 2].t = NULL;
            items[n + 2].scalar = (float)cs[k]->pending;
        }
        n += 3;
    }
    return n;
}

ex_status dn_save_state(void *self, ex_st_writer *w, void **keep, ex_err *err) {
    dinov2 *d = self;
    *keep = NULL;
    const int n = list_items(d, NULL);
    state_item *items = calloc((size_t)(n ? n : 1), sizeof *items);
    EX_ENSURE(items, err, EX_E_NOMEM, "dinov2: out of memory saving state");
    list_items(d, items);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += items[i].t ? (size_t)ex_tensor_numel(items[i].t) : 1;
    float *host = malloc(sizeof(float) * (total ? total : 1));
    ex_status st = host ? EX_OK : ex_err_set(err, EX_E_NOMEM, __FILE__, __LINE__, "dinov2: out of memory saving state");
    size_t off = 0;
    for (int i = 0; i < n && st == EX_OK; i++) {
        if (items[i].t) {
            /* as stored: a frozen weight kept in bf16 ([optim] frozen_dtype) is written as BF16, exactly
             * (its bytes fit in the float-sized slot) */
            const ex_tensor *t = items[i].t;
            const size_t m = (size_t)ex_tensor_numel(t);
            st = ex_be_download(d->env.be, host + off, t->data, ex_tensor_nbytes(t), err);
            if (st == EX_OK) st = ex_st_writer_add(w, items[i].name, t->dtype, t->ndim, t->shape, host + off, err);
            off += m;
        } else {
            host[off] = items[i].scalar;
            st = ex_st_writer_add(w, items[i].name, EX_F32, 0, NULL, host + off, err);
            off += 1;
        }
    }
    free(items);
    if (st != EX_OK) {
        free(host);
        return st;
    }
    *keep = host;
    return EX_OK;
}

ex_status dn_load_state(void *self, const ex_st_file *f, ex_err *err) {
    dinov2 *d = self;
    const int n = list_items(d, NULL);
    state_item *items = calloc((size_t)(n ? n : 1), sizeof *items);
    EX_ENSURE(items, err, EX_E_NOMEM, "dinov2: out of memory loading state");
    list_items(d, items);
    ex_status st = EX_OK;
    float *host = NULL;
    size_t cap = 0;
    for (int i = 0; i < n && st == EX_OK; i++) {
        const ex_st_entry *e = ex_st_find(f, items[i].name);
        if (!e) {
            st = ex_err_set(err, EX_E_FORMAT, __FILE__, __LINE__,
                            "'%s' is missing: the checkpoint was not written by this objective's configuration",
                            items[i].name);
            break;
        }
        const int64_t m = items[i].t ? ex_tensor_numel(items[i].t) : 1;
        if ((size_t)m > cap) {
            float *nh = realloc(host, sizeof(float) * (size_t)m);
            if (!nh) {
                st = ex_err_set(err, EX_E_NOMEM, __FILE__, __LINE__, "dinov2: out of memory");
                break;
            }
            host = nh;
            cap = (size_t)m;
        }
        st = ex_st_read_f32(f, e, host, m, err);
        if (st != EX_OK) break;
        if (items[i].t) {
            st = ex_be_upload_as(d->env.be, items[i].t->data, items[i].t->dtype, 0, host, m, err);
        } else {
            dn_center *c = strstr(items[i].name, ".dino.") ? &d->cdino : &d->cibot;
            c->pending = host[0] != 0.0f;
        }
    }
    free(host);
    free(items);
    return st;
}
