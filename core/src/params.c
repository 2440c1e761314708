/*
 * core/src/params.c — named parameters, trainable flags, memory planning,
 * binding and safetensors loading (see explora/params.h).
 */
#include "explora/params.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

void ex_params_init(ex_params *ps) { memset(ps, 0, sizeof *ps); }

void ex_params_free(ex_params *ps) {
    for (int i = 0; i < ps->count; i++) free(ps->items[i]);
    free(ps->items);
    ex_params_init(ps);
}

ex_param *ex_params_find(const ex_params *ps, const char *name) {
    for (int i = 0; i < ps->count; i++)
        if (strcmp(ps->items[i]->value.name, name) == 0) return ps->items[i];
    return NULL;
}

ex_status ex_params_add(ex_params *ps, const char *name, int ndim, const int64_t *shape, const char *group,
                        float **value_slot, float **grad_slot, ex_param **out, ex_err *err) {
    EX_ENSURE(name && strlen(name) < EX_NAME_MAX - 8, err, EX_E_INVALID, "parameter name '%s' is empty or too long",
              name ? name : "");
    EX_ENSURE(!ex_params_find(ps, name), err, EX_E_INVALID, "parameter '%s' registered twice", name);
    if (ps->count == ps->cap) {
        int cap = ps->cap ? ps->cap * 2 : 64;
        ex_param **n = realloc(ps->items, (size_t)cap * sizeof *n);
        EX_ENSURE(n, err, EX_E_NOMEM, "out of memory registering parameters");
        ps->items = n;
        ps->cap = cap;
    }
    ex_param *p = calloc(1, sizeof *p);
    EX_ENSURE(p, err, EX_E_NOMEM, "out of memory registering parameters");
    ex_status st = ex_tensor_init(&p->value, name, EX_F32, ndim, shape, err);
    if (st == EX_OK) {
        char gname[EX_NAME_MAX];
        snprintf(gname, sizeof gname, "%s.grad", name);
        st = ex_tensor_init(&p->grad, gname, EX_F32, ndim, shape, err);
    }
    if (st != EX_OK) {
        free(p);
        return st;
    }
    snprintf(p->group, sizeof p->group, "%s", group ? group : "other");
    p->value_slot = value_slot;
    p->grad_slot = grad_slot;
    ps->items[ps->count++] = p;
    if (out) *out = p;
    return EX_OK;
}

ex_status ex_params_set_trainable(ex_params *ps, const char *pattern, int trainable, int *matched, ex_err *err) {
    EX_ENSURE(pattern && pattern[0], err, EX_E_INVALID, "empty parameter pattern");
    int n = 0;
    for (int i = 0; i < ps->count; i++) {
        if (fnmatch(pattern, ps->items[i]->value.name, 0) == 0) {
            ps->items[i]->trainable = trainable ? 1 : 0;
            n++;
        }
    }
    if (matched) *matched = n;
    return EX_OK;
}

int64_t ex_params_numel(const ex_params *ps, int trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < ps->count; i++)
        if (!trainable_only || ps->items[i]->trainable) n += ex_tensor_numel(&ps->items[i]->value);
    return n;
}

void ex_params_print_summary(const ex_params *ps, FILE *out) {
    /* groups in order of first appearance */
    const char *groups[64];
    int64_t total[64] = {0}, train[64] = {0};
    int ng = 0;
    for (int i = 0; i < ps->count; i++) {
        const ex_param *p = ps->items[i];
        int g = 0;
        while (g < ng && strcmp(groups[g], p->group) != 0) g++;
        if (g == ng) {
            if (ng == 64) continue;
            groups[ng++] = p->group;
        }
        total[g] += ex_tensor_numel(&p->value);
        if (p->trainable) train[g] += ex_tensor_numel(&p->value);
    }
    fprintf(out, "parameters:\n  %-14s %14s %14s\n", "group", "trainable", "total");
    for (int g = 0; g < ng; g++) fprintf(out, "  %-14s %14lld %14lld\n", groups[g], (long long)train[g], (long long)total[g]);
    int64_t all = ex_params_numel(ps, 0), tr = ex_params_numel(ps, 1);
    fprintf(out, "  %-14s %14lld %14lld  (%.2f%% trainable)\n", "total", (long long)tr, (long long)all,
            all ? 100.0 * (double)tr / (double)all : 0.0);
}

ex_status ex_params_share_frozen(ex_params *ps, const ex_params *from, int *shared, size_t *bytes, ex_err *err) {
    EX_ENSURE(ps && from && ps != from, err, EX_E_INVALID, "ex_params_share_frozen: two distinct parameter sets needed");
    int n = 0;
    size_t total = 0;
    for (int i = 0; i < ps->count; i++) {
        ex_param *p = ps->items[i];
        if (p->trainable) continue;
        const ex_param *q = ex_params_find(from, p->value.name);
        if (!q || q->trainable || q->alias || ex_tensor_numel(&q->value) != ex_tensor_numel(&p->value)) continue;
        if (q->value.dtype != p->value.dtype && !(p->gemm_operand && q->gemm_operand)) continue;
        p->value.dtype = q->value.dtype;
        p->alias = q;
        n++;
        total += ex_tensor_nbytes(&p->value);
    }
    if (shared) *shared = n;
    if (bytes) *bytes = total;
    return EX_OK;
}

void ex_params_mark_gemm_operand(ex_param *p, ex_dtype *dtype_slot) {
    p->gemm_operand = 1;
    p->dtype_slot = dtype_slot;
}

ex_status ex_params_set_frozen_dtype(ex_params *ps, ex_backend *be, ex_dtype dtype, int *count, size_t *bytes_saved,
                                     ex_err *err) {
    EX_ENSURE(dtype == EX_F32 || dtype == EX_BF16, err, EX_E_INVALID,
              "frozen weights can be stored as fp32 or bf16, not %s", ex_dtype_name(dtype));
    EX_ENSURE(dtype == EX_F32 || be->vt.supports_op(be->ctx, EX_OP_GEMM, dtype), err, EX_E_UNSUPPORTED,
              "backend '%s' has no GEMM with %s inputs, so it cannot keep frozen weights in %s. Hint: set [optim] "
              "frozen_dtype = fp32.",
              be->name, ex_dtype_name(dtype), ex_dtype_name(dtype));
    int n = 0;
    size_t saved = 0;
    for (int i = 0; i < ps->count; i++) {
        ex_param *p = ps->items[i];
        if (!p->gemm_operand || p->trainable || p->alias) continue;
        const size_t before = ex_tensor_nbytes(&p->value);
        p->value.dtype = dtype;
        const size_t after = ex_tensor_nbytes(&p->value);
        saved += before > after ? before - after : 0;
        n++;
    }
    if (count) *count = n;
    if (bytes_saved) *bytes_saved = saved;
    return EX_OK;
}

/* The elements [offset, offset + n) of a bound parameter. */
static ex_status check_range(const ex_param *p, int64_t offset, int64_t n, ex_err *err) {
    EX_ENSURE(p->value.data, err, EX_E_INVALID, "parameter '%s' is not allocated yet (bind before loading)",
              p->value.name);
    EX_ENSURE(offset >= 0 && n >= 0 && offset + n <= ex_tensor_numel(&p->value), err, EX_E_INTERNAL,
              "parameter '%s': elements %lld..%lld outside its %lld", p->value.name, (long long)offset,
              (long long)(offset + n), (long long)ex_tensor_numel(&p->value));
    return EX_OK;
}

ex_status ex_params_upload(ex_backend *be, const ex_param *p, int64_t offset, const float *host, int64_t n,
                           ex_err *err) {
    EX_CHECK(check_range(p, offset, n, err));
    ex_status st = ex_be_upload_as(be, p->value.data, p->value.dtype, offset, host, n, err);
    if (st != EX_OK) ex_err_prefix(err, "parameter '%s': ", p->value.name);
    return st;
}

ex_status ex_params_download(ex_backend *be, const ex_param *p, int64_t offset, float *host, int64_t n,
                             ex_err *err) {
    EX_CHECK(check_range(p, offset, n, err));
    ex_status st = ex_be_download_as(be, host, p->value.data, p->value.dtype, offset, n, err);
    if (st != EX_OK) ex_err_prefix(err, "parameter '%s': ", p->value.name);
    return st;
}

ex_status ex_params_plan(ex_params *ps, ex_memory_plan *plan, ex_err *err) {
    for (int i = 0; i < ps->count; i++) {
        ex_param *p = ps->items[i];
        EX_ENSURE(!p->trainable || p->value.dtype == EX_F32, err, EX_E_INVALID,
                  "parameter '%s' trains but is stored as %s: trainable tensors are fp32 master weights (set the "
                  "frozen dtype after the trainable flags)",
                  p->value.name, ex_dtype_name(p->value.dtype));
        if (p->alias) {
            EX_ENSURE(!p->trainable, err, EX_E_INVALID, "parameter '%s' shares memory but is marked trainable",
                      p->value.name);
            continue;
        }
        EX_CHECK(ex_arena_add(&plan->arenas[p->trainable ? EX_MEM_TRAINABLE : EX_MEM_FROZEN], &p->value, err));
        if (p->trainable) EX_CHECK(ex_arena_add(&plan->arenas[EX_MEM_GRAD], &p->grad, err));
    }
    return EX_OK;
}

void ex_params_bind(ex_params *ps) {
    for (int i = 0; i < ps->count; i++) {
        ex_param *p = ps->items[i];
        if (p->alias) p->value.data = p->alias->value.data;
        if (p->value_slot) *p->value_slot = (float *)p->value.data;
        if (p->dtype_slot) *p->dtype_slot = p->value.dtype;
        if (p->grad_slot) *p->grad_slot = p->trainable ? (float *)p->grad.data : NULL;
    }
}

/* --- loading ------------------------------------------------------------------------- */

/* Shapes without leading 1-dims. */
static int squeeze_leading(int ndim, const int64_t *shape, const int64_t **out) {
    int k = 0;
    while (k < ndim - 1 && shape[k] == 1) k++;
    *out = shape + k;
    return ndim - k;
}

static int shapes_compatible(const ex_tensor *dst, const ex_st_entry *e, int64_t row_offset, int64_t *rows) {
    const int64_t *a, *b;
    if (row_offset == 0) {
        int na = squeeze_leading(dst->ndim, dst->shape, &a), nb = squeeze_leading(e->ndim, e->shape, &b);
        if (na == nb && memcmp(a, b, sizeof(int64_t) * (size_t)na) == 0) {
            *rows = dst->ndim ? dst->shape[0] : 1;
            return 1;
        }
    }
    /* a slice of rows: same rank, same trailing dims, fits */
    if (dst->ndim < 1 || e->ndim != dst->ndim) return 0;
    for (int i = 1; i < dst->ndim; i++)
        if (dst->shape[i] != e->shape[i]) return 0;
    if (row_offset < 0 || row_offset + e->shape[0] > dst->shape[0]) return 0;
    *rows = e->shape[0];
    return 1;
}

/* Append to a bounded list of names for the error message. */
static void list_add(char *buf, size_t cap, int *count, const char *fmt, const char *a, const char *b, const char *c) {
    size_t len = strlen(buf);
    if (*count < 12 && len < cap) {
        snprintf(buf + len, cap - len, fmt, *count ? "; " : "", a, b, c);
    } else if (*count == 12 && len < cap) {
        snprintf(buf + len, cap - len, "; ...");
    }
    (*count)++;
}

ex_status ex_params_load_safetensors(ex_params *ps, ex_backend *be, const ex_st_file *f, ex_name_map_fn map,
                                     void *user, int require_all, ex_err *err) {
    ex_weights w = {(ex_st_file *)f, NULL};
    return ex_params_load(ps, be, &w, map, user, require_all, err);
}

ex_status ex_params_load(ex_params *ps, ex_backend *be, const ex_weights *f, ex_name_map_fn map, void *user,
                         int require_all, ex_err *err) {
    char unexpected[1024] = "", mismatched[1536] = "", missing[1024] = "";
    int nun = 0, nmis = 0, nmiss = 0;
    float *host = NULL;
    size_t host_cap = 0;
    ex_status st = EX_OK;
    for (int i = 0; i < ps->count; i++) ps->items[i]->loaded_rows = 0;
    for (int i = 0; i < ex_weights_count(f); i++) {
        const ex_st_entry *e = ex_weights_at(f, i);
        char name[EX_NAME_MAX];
        int64_t row_offset = 0;
        int r = map ? map(user, e->name, name, sizeof name, &row_offset) : (snprintf(name, sizeof name, "%s", e->name), 1);
        if (r == 0) continue;
        ex_param *p = r > 0 ? ex_params_find(ps, name) : NULL;
        if (!p) {
            list_add(unexpected, sizeof unexpected, &nun, "%s%s%s%s", e->name, "", "");
            continue;
        }
        int64_t rows = 0;
        if (!shapes_compatible(&p->value, e, row_offset, &rows)) {
            char sa[96], sb[96], what[2 * EX_NAME_MAX + 256];
            ex_shape_str(e->ndim, e->shape, sa, sizeof sa);
            ex_shape_str(p->value.ndim, p->value.shape, sb, sizeof sb);
            snprintf(what, sizeof what, "%s %s -> %s", e->name, sa, name);
            list_add(mismatched, sizeof mismatched, &nmis, "%s%s expects %s%s", what, sb, "");
            continue;
        }
        int64_t n = 1;
        for (int d = 0; d < e->ndim; d++) n *= e->shape[d];
        if ((size_t)n > host_cap) {
            float *nh = realloc(host, (size_t)n * sizeof(float));
            if (!nh) EX_FAIL_GOTO(err, st, done, EX_E_NOMEM, "out of memory loading '%s'", e->name);
            host = nh;
            host_cap = (size_t)n;
        }
        EX_CHECK_GOTO(ex_weights_read_f32(f, e, host, n, err), st, done);
        int64_t row_elems = p->value.ndim ? ex_tensor_numel(&p->value) / (p->value.shape[0] ? p->value.shape[0] : 1) : 1;
        EX_CHECK_GOTO(ex_params_upload(be, p, row_offset * row_elems, host, n, err), st, done);
        p->loaded_rows += rows;
    }
    for (int i = 0; i < ps->count && require_all; i++) {
        const ex_param *p = ps->items[i];
        int64_t want = p->value.ndim ? p->value.shape[0] : 1;
        if (p->loaded_rows != want && !(p->optional && p->loaded_rows == 0)) list_add(missing, sizeof missing, &nmiss, "%s%s%s%s", p->value.name, "", "");
    }
    if (nun || nmis || nmiss) {
        ex_err_set(err, EX_E_FORMAT, __FILE__, __LINE__, "%s does not fit the model: %d unexpected%s%s%s, %d mis-shaped%s%s%s, %d missing%s%s%s.",
                   ex_weights_path(f), nun, nun ? " (" : "", unexpected, nun ? ")" : "", nmis, nmis ? " (" : "", mismatched,
                   nmis ? ")" : "", nmiss, nmiss ? " (" : "", missing, nmiss ? ")" : "");
        ex_err_hint(err, "check that the config's architecture and checkpoint format match the file.");
        st = EX_E_FORMAT;
    }
done:
    free(host);
    return st;
}
