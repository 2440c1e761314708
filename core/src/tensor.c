/*
 * core/src/tensor.c — dtypes, fp16/bf16 conversion, tensor descriptors and
 * memory arenas (see explora/tensor.h).
 */
#include "explora/tensor.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "explora/backend.h"

/* --- dtypes ----------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} k_dtypes[EX_DTYPE_COUNT] = {
    [EX_F32] = {"F32", 4}, [EX_F16] = {"F16", 2}, [EX_BF16] = {"BF16", 2}, [EX_F64] = {"F64", 8},
    [EX_I64] = {"I64", 8}, [EX_I32] = {"I32", 4}, [EX_I16] = {"I16", 2},   [EX_I8] = {"I8", 1},
    [EX_U8] = {"U8", 1},   [EX_U16] = {"U16", 2}, [EX_U32] = {"U32", 4},   [EX_U64] = {"U64", 8},
    [EX_BOOL] = {"BOOL", 1},
};

size_t ex_dtype_size(ex_dtype dt) { return (unsigned)dt < EX_DTYPE_COUNT ? k_dtypes[dt].size : 0; }

const char *ex_dtype_name(ex_dtype dt) { return (unsigned)dt < EX_DTYPE_COUNT ? k_dtypes[dt].name : "?"; }

ex_status ex_dtype_from_name(const char *name, ex_dtype *out) {
    for (int i = 0; i < EX_DTYPE_COUNT; i++) {
        if (name && strcmp(name, k_dtypes[i].name) == 0) {
            *out = (ex_dtype)i;
            return EX_OK;
        }
    }
    return EX_E_FORMAT;
}

/* --- half precision ------------------------------------------------------------ */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float ex_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t ex_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7FFFu + ((u >> 16) & 1u);                                          /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float ex_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    if (exp == 0x1F) return bits_f32(sign | 0x7F800000u | (man << 13)); /* inf / nan */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        /* subnormal: man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t ex_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u); /* nan */
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                                   /* below the smallest normal 2^-14 */
        /* subnormal or zero: value / 2^-24, rounded to nearest even */
        float v = bits_f32(a) * 16777216.0f;
        uint32_t m = (uint32_t)v;
        float frac = v - (float)m;
        if (frac > 0.5f || (frac == 0.5f && (m & 1u))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t exp = (a >> 23) - 112u;
    uint32_t man = a & 0x7FFFFFu;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* may carry into the exponent: fine */
    return (uint16_t)(sign | h);
}

/* --- tensors ---------------------------------------------------------------------- */

ex_status ex_tensor_init(ex_tensor *t, const char *name, ex_dtype dtype, int ndim, const int64_t *shape,
                         ex_err *err) {
    memset(t, 0, sizeof *t);
    EX_ENSURE(ndim >= 0 && ndim <= EX_MAX_DIMS, err, EX_E_SHAPE, "tensor '%s': %d dimensions (at most %d)",
              name ? name : "", ndim, EX_MAX_DIMS);
    EX_ENSURE((unsigned)dtype < EX_DTYPE_COUNT, err, EX_E_INVALID, "tensor '%s': bad dtype %d", name ? name : "",
              (int)dtype);
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        EX_ENSURE(shape[i] >= 0, err, EX_E_SHAPE, "tensor '%s': dimension %d is %lld", t->name, i,
                  (long long)shape[i]);
        t->shape[i] = shape[i];
    }
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->strides[i] = stride;
        stride *= shape[i];
    }
    return EX_OK;
}

int64_t ex_tensor_numel(const ex_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t ex_tensor_nbytes(const ex_tensor *t) { return (size_t)ex_tensor_numel(t) * ex_dtype_size(t->dtype); }

const char *ex_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap) {
    size_t len = 0;
    if (cap == 0) return buf;
    buf[0] = '\0';
    len += (size_t)snprintf(buf + len, cap - len, "[");
    for (int i = 0; i < ndim && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
    return buf;
}

/* --- arenas ------------------------------------------------------------------------- */

static const char *k_category_names[EX_MEM_COUNT] = {"frozen", "trainable", "grad", "optim", "activation",
                                                     "scratch"};

const char *ex_mem_category_name(ex_mem_category c) {
    return (unsigned)c < EX_MEM_COUNT ? k_category_names[c] : "?";
}

void ex_arena_init(ex_arena *a, struct ex_backend *be, ex_mem_category category) {
    memset(a, 0, sizeof *a);
    a->backend = be;
    a->category = category;
}

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

ex_status ex_arena_add(ex_arena *a, ex_tensor *t, ex_err *err) {
    EX_ENSURE(!a->committed, err, EX_E_INVALID, "arena '%s' is already allocated; cannot add tensor '%s'",
              ex_mem_category_name(a->category), t->name);
    if (a->count == a->cap) {
        int cap = a->cap ? a->cap * 2 : 64;
        ex_tensor **nt = realloc(a->tensors, (size_t)cap * sizeof *nt);
        EX_ENSURE(nt, err, EX_E_NOMEM, "out of host memory planning arena '%s'", ex_mem_category_name(a->category));
        a->tensors = nt;
        a->cap = cap;
    }
    t->offset = a->planned;
    t->category = a->category;
    t->data = NULL;
    a->planned = align_up(a->planned + ex_tensor_nbytes(t), EX_ARENA_ALIGN);
    a->tensors[a->count++] = t;
    return EX_OK;
}

ex_status ex_arena_commit(ex_arena *a, ex_err *err) {
    EX_ENSURE(!a->committed, err, EX_E_INVALID, "arena '%s' committed twice", ex_mem_category_name(a->category));
    if (a->planned > 0) {
        EX_ENSURE(a->backend, err, EX_E_INVALID, "arena '%s' has no backend", ex_mem_category_name(a->category));
        ex_status st = ex_be_alloc(a->backend, a->planned, &a->base, err);
        if (st != EX_OK) {
            ex_err_prefix(err, "allocating the %s arena (%.1f MiB): ", ex_mem_category_name(a->category),
                          (double)a->planned / 1048576.0);
            return st;
        }
        st = a->backend->vt.fill(a->backend->ctx, (float *)a->base, 0.0f, (int64_t)(a->planned / sizeof(float)));
        if (st != EX_OK) {
            ex_be_free(a->backend, a->base);
            a->base = NULL;
            EX_FAIL(err, st, "zeroing the %s arena failed on backend '%s'", ex_mem_category_name(a->category),
                    a->backend->name);
        }
    }
    for (int i = 0; i < a->count; i++) a->tensors[i]->data = (char *)a->base + a->tensors[i]->offset;
    a->committed = 1;
    return EX_OK;
}

void ex_arena_release(ex_arena *a) {
    for (int i = 0; i < a->count; i++) a->tensors[i]->data = NULL;
    if (a->base && a->backend) ex_be_free(a->backend, a->base);
    free(a->tensors);
    ex_arena_init(a, a->backend, a->category);
}

void ex_memory_plan_init(ex_memory_plan *p, struct ex_backend *be) {
    for (int c = 0; c < EX_MEM_COUNT; c++) ex_arena_init(&p->arenas[c], be, (ex_mem_category)c);
}

ex_status ex_memory_plan_commit(ex_memory_plan *p, ex_err *err) {
    for (int c = 0; c < EX_MEM_COUNT; c++) {
        ex_status st = ex_arena_commit(&p->arenas[c], err);
        if (st != EX_OK) {
            for (int k = 0; k < c; k++) ex_arena_release(&p->arenas[k]);
            return st;
        }
    }
    return EX_OK;
}

void ex_memory_plan_release(ex_memory_plan *p) {
    for (int c = 0; c < EX_MEM_COUNT; c++) ex_arena_release(&p->arenas[c]);
}

size_t ex_memory_plan_total(const ex_memory_plan *p) {
    size_t total = 0;
    for (int c = 0; c < EX_MEM_COUNT; c++) total += p->arenas[c].planned;
    return total;
}

void ex_memory_plan_print(const ex_memory_plan *p, FILE *out) {
    fprintf(out, "memory plan (%s):\n", p->arenas[0].backend ? p->arenas[0].backend->name : "no backend");
    fprintf(out, "  %-11s %8s %14s %10s\n", "category", "tensors", "elements", "MiB");
    for (int c = 0; c < EX_MEM_COUNT; c++) {
        const ex_arena *a = &p->arenas[c];
        int64_t elems = 0;
        for (int i = 0; i < a->count; i++) elems += ex_tensor_numel(a->tensors[i]);
        fprintf(out, "  %-11s %8d %14lld %10.2f\n", ex_mem_category_name(a->category), a->count, (long long)elems,
                (double)a->planned / 1048576.0);
    }
    fprintf(out, "  %-11s %8s %14s %10.2f\n", "total", "", "", (double)ex_memory_plan_total(p) / 1048576.0);
    /* what grows with the batch: the largest activation tensors (several may share memory) */
    const ex_arena *act = &p->arenas[EX_MEM_ACTIVATION];
    enum { TOP = 5 };
    const ex_tensor *top[TOP] = {0};
    for (int i = 0; i < act->count; i++) {
        const ex_tensor *t = act->tensors[i];
        for (int k = 0; k < TOP; k++) {
            if (top[k] && ex_tensor_nbytes(top[k]) >= ex_tensor_nbytes(t)) continue;
            for (int j = TOP - 1; j > k; j--) top[j] = top[j - 1];
            top[k] = t;
            break;
        }
    }
    if (top[0]) {
        fprintf(out, "  largest activations:");
        for (int k = 0; k < TOP && top[k]; k++)
            fprintf(out, "%s %s %.1f MiB", k ? "," : "", top[k]->name, (double)ex_tensor_nbytes(top[k]) / 1048576.0);
        fprintf(out, "\n");
    }
}
