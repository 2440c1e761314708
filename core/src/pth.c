/*
 * core/src/pth.c — the public .pth reader (see explora/pth.h): mapping, flattening, tensor checks,
 * fp32 conversion.
 *
 * ex_pth_open maps the file, lets pth_zip.c parse the zip directory and pth_pickle.c run data.pkl,
 * then walks the resulting object graph from the top-level dict: nested dicts are followed (bounded
 * depth and a bounded number of visited items, so cyclic or exponentially shared graphs from a hostile
 * pickle end in an error, not a hang), str/int keys are joined with '.', and every tensor found is
 * checked completely against its storage member (dtype, sizes, strides, reachable elements) and
 * recorded with its layout. The zip directory and the object graph are freed before open returns; an
 * open file is the mapping plus one record per tensor, sorted by name once for ex_pth_find.
 */
#include "explora/pth.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pth_internal.h"

/* Longest storage key (torch writes decimal numbers). */
#define PTH_KEY_MAX 64
/* Most dict items visited while flattening (bounds shared/cyclic graphs). */
#define PTH_MAX_VISITS (1u << 24)

typedef struct pth_tensor {
    ex_st_entry e; /* first: ex_pth_at hands out &e */
    int64_t offset;
    int64_t stride[EX_MAX_DIMS];
    int64_t numel;
    int64_t storage_numel;
    const unsigned char *data; /* storage bytes inside the mapping */
    char key[PTH_KEY_MAX];
} pth_tensor;

struct ex_pth_file {
    char *path;
    unsigned char *map;
    size_t map_size;
    pth_tensor *tensors; /* pickle order */
    int count, cap;
    const pth_tensor **by_name;
};

/* --- storage classes ---------------------------------------------------------------------- */

static const struct {
    const char *cls;
    ex_dtype dtype;
} k_storages[] = {
    {"FloatStorage", EX_F32}, {"HalfStorage", EX_F16},  {"BFloat16Storage", EX_BF16}, {"DoubleStorage", EX_F64},
    {"LongStorage", EX_I64},  {"IntStorage", EX_I32},   {"ShortStorage", EX_I16},     {"CharStorage", EX_I8},
    {"ByteStorage", EX_U8},   {"BoolStorage", EX_BOOL},
};

static int storage_dtype(const pk_obj *g, ex_dtype *out) {
    if (g->kind != PK_GLOBAL || !pk_str_eq(g->u.global.module, "torch")) return 0;
    for (size_t i = 0; i < sizeof k_storages / sizeof k_storages[0]; i++)
        if (pk_str_eq(g->u.global.name, k_storages[i].cls)) {
            *out = k_storages[i].dtype;
            return 1;
        }
    return 0;
}

/* --- mapping ---------------------------------------------------------------------------------- */

static ex_status map_file(ex_pth_file *f, ex_err *err) {
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    EX_ENSURE(fd >= 0, err, EX_E_IO, "cannot open '%s': %s.", f->path, strerror(errno));
    struct stat st;
    ex_status s = EX_OK;
    if (fstat(fd, &st) != 0)
        s = ex_err_set(err, EX_E_IO, __FILE__, __LINE__, "cannot stat '%s': %s.", f->path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        s = ex_err_set(err, EX_E_IO, __FILE__, __LINE__, "'%s' is not a regular file.", f->path);
    else if (st.st_size == 0)
        s = ex_err_set(err, EX_E_FORMAT, __FILE__, __LINE__,
                       "%s: the file is empty; expected a torch.save checkpoint (a zip archive).", f->path);
    else if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX)
        s = ex_err_set(err, EX_E_IO, __FILE__, __LINE__, "'%s' is too large to map (%lld bytes).", f->path,
                       (long long)st.st_size);
    if (s != EX_OK) {
        close(fd);
        return s;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    EX_ENSURE(m != MAP_FAILED, err, EX_E_IO, "cannot mmap '%s' (%lld bytes): %s.", f->path, (long long)st.st_size,
              strerror(e));
    f->map = m;
    f->map_size = (size_t)st.st_size;
    return EX_OK;
}

/* --- per-tensor checks -------------------------------------------------------------------------- */

typedef struct flat_ctx {
    ex_pth_file *f;
    const pth_zip *z;
    const char *prefix; /* "<prefix>" of "<prefix>/data.pkl" */
    size_t prefix_len;
    uint64_t visits;
    int max_tensors; /* EX_PTH_MAX_TENSORS, lowered for small pickles (see load) */
    size_t pickle_len;
    char name[EX_NAME_MAX]; /* the name being built; NUL-terminated */
    ex_err *err;
} flat_ctx;

/* A tuple of up to EX_MAX_DIMS non-negative ints (torch.Size pickles as a tuple); `what` names it. */
static ex_status int_tuple(const flat_ctx *c, const pk_obj *t, const char *what, int64_t *out, int *n) {
    const char *path = c->f->path, *name = c->name;
    ex_err *err = c->err;
    EX_ENSURE(t->kind == PK_TUPLE, err, EX_E_FORMAT, "%s: tensor '%s': %s is %s; expected a tuple of ints.", path,
              name, what, pk_kind_text(t->kind));
    EX_ENSURE(t->u.seq.n <= EX_MAX_DIMS, err, EX_E_FORMAT,
              "%s: tensor '%s': %s has %zu dimensions; at most %d are supported.", path, name, what, t->u.seq.n,
              EX_MAX_DIMS);
    for (size_t i = 0; i < t->u.seq.n; i++) {
        const pk_obj *v = t->u.seq.items[i];
        EX_ENSURE(v->kind == PK_INT, err, EX_E_FORMAT, "%s: tensor '%s': %s[%zu] is %s; expected an int.", path,
                  name, what, i, pk_kind_text(v->kind));
        EX_ENSURE(v->u.i >= 0, err, EX_E_FORMAT, "%s: tensor '%s': %s[%zu] is %" PRId64 "; expected >= 0.", path,
                  name, what, i, v->u.i);
        out[i] = v->u.i;
    }
    *n = (int)t->u.seq.n;
    return EX_OK;
}

/* The persistent id ('storage', torch.XStorage, key, location, numel): dtype, key, numel. */
static ex_status read_storage_id(const flat_ctx *c, const pk_obj *storage, pth_tensor *t) {
    const char *path = c->f->path, *name = c->name;
    ex_err *err = c->err;
    EX_ENSURE(storage->kind == PK_STORAGE, err, EX_E_FORMAT,
              "%s: tensor '%s': the storage argument is %s; expected a storage (a BINPERSID persistent id).", path,
              name, pk_kind_text(storage->kind));
    const pk_obj *pid = storage->u.ref;
    EX_ENSURE(pid->kind == PK_TUPLE && pid->u.seq.n >= 5, err, EX_E_FORMAT,
              "%s: tensor '%s': the storage's persistent id is %s of %zu items; expected ('storage', class, key, "
              "location, numel).",
              path, name, pk_kind_text(pid->kind), pid->kind == PK_TUPLE ? pid->u.seq.n : 0);
    const pk_obj *const *it = (const pk_obj *const *)pid->u.seq.items;
    EX_ENSURE(it[0]->kind == PK_STR && pk_str_eq(it[0]->u.str, "storage"), err, EX_E_FORMAT,
              "%s: tensor '%s': the persistent id does not start with 'storage'.", path, name);
    if (!storage_dtype(it[1], &t->e.dtype)) {
        char cls[160] = "(not a global)";
        if (it[1]->kind == PK_GLOBAL)
            snprintf(cls, sizeof cls, "%.*s.%.*s", (int)(it[1]->u.global.module.n > 60 ? 60 : it[1]->u.global.module.n),
                     it[1]->u.global.module.s, (int)(it[1]->u.global.name.n > 60 ? 60 : it[1]->u.global.name.n),
                     it[1]->u.global.name.s);
        EX_FAIL(err, it[1]->kind == PK_GLOBAL ? EX_E_UNSUPPORTED : EX_E_FORMAT,
                "%s: tensor '%s': storage class %s is not supported; expected torch.FloatStorage, HalfStorage, "
                "BFloat16Storage, DoubleStorage, LongStorage, IntStorage, ShortStorage, CharStorage, ByteStorage "
                "or BoolStorage.",
                path, name, cls);
    }
    const pk_obj *key = it[2], *numel = it[4];
    EX_ENSURE(key->kind == PK_STR && key->u.str.n > 0 && key->u.str.n < PTH_KEY_MAX &&
                  !memchr(key->u.str.s, '\0', key->u.str.n),
              err, EX_E_FORMAT, "%s: tensor '%s': the storage key is %s; expected a short non-empty str.", path, name,
              key->kind == PK_STR ? "an over-long or empty str" : pk_kind_text(key->kind));
    memcpy(t->key, key->u.str.s, key->u.str.n);
    t->key[key->u.str.n] = '\0';
    EX_ENSURE(numel->kind == PK_INT && numel->u.i >= 0, err, EX_E_FORMAT,
              "%s: tensor '%s': storage '%s' has element count %s%" PRId64 "; expected an int >= 0.", path, name,
              t->key, numel->kind == PK_INT ? "" : "(not an int) ", numel->kind == PK_INT ? numel->u.i : 0);
    t->storage_numel = numel->u.i;
    return EX_OK;
}

/* Find "<prefix>/data/<key>", check it is stored and holds exactly storage_numel elements. */
static ex_status bind_storage(const flat_ctx *c, pth_tensor *t) {
    const char *path = c->f->path, *name = c->name;
    ex_err *err = c->err;
    char member[PTH_KEY_MAX + 1024];
    int len = snprintf(member, sizeof member, "%.*s/data/%s", (int)(c->prefix_len > 1000 ? 1000 : c->prefix_len),
                       c->prefix, t->key);
    const pth_member *m = len > 0 && (size_t)len < sizeof member ? pth_zip_find(c->z, member, (size_t)len) : NULL;
    EX_ENSURE(m, err, EX_E_FORMAT, "%s: tensor '%s': its storage member '%s' is missing from the archive.", path, name,
              member);
    EX_CHECK(pth_zip_check_stored(c->z, m, err));
    uint64_t esize = ex_dtype_size(t->e.dtype), need;
    EX_ENSURE(!__builtin_mul_overflow((uint64_t)t->storage_numel, esize, &need) && need == m->size, err, EX_E_FORMAT,
              "%s: tensor '%s': storage '%s' should hold %" PRId64 " %s elements but its member has %" PRIu64
              " bytes.",
              path, name, t->key, t->storage_numel, ex_dtype_name(t->e.dtype), m->size);
    t->data = c->z->map + m->data;
    t->e.begin = m->data;
    t->e.end = m->data + m->size;
    return EX_OK;
}

/* numel fits int64 (and its fp32 and storage byte counts fit 64 bits); the highest reachable element
 * offset + sum (size_d - 1) * stride_d lies inside the storage. */
static ex_status check_extent(const flat_ctx *c, pth_tensor *t) {
    const char *path = c->f->path, *name = c->name;
    ex_err *err = c->err;
    char shape[160], stride[160];
    ex_shape_str(t->e.ndim, t->e.shape, shape, sizeof shape);
    ex_shape_str(t->e.ndim, t->stride, stride, sizeof stride);
    int64_t numel = 1, bytes;
    for (int d = 0; d < t->e.ndim; d++)
        EX_ENSURE(!__builtin_mul_overflow(numel, t->e.shape[d], &numel), err, EX_E_FORMAT,
                  "%s: tensor '%s': size %s has more elements than 64 bits can count.", path, name, shape);
    EX_ENSURE(!__builtin_mul_overflow(numel, (int64_t)sizeof(float), &bytes), err, EX_E_FORMAT,
              "%s: tensor '%s': size %s is too large.", path, name, shape);
    t->numel = numel;
    if (numel == 0) return EX_OK; /* nothing is read: any offset is harmless */
    int64_t reach = t->offset, step;
    for (int d = 0; d < t->e.ndim; d++)
        EX_ENSURE(!__builtin_mul_overflow(t->e.shape[d] - 1, t->stride[d], &step) &&
                      !__builtin_add_overflow(reach, step, &reach),
                  err, EX_E_FORMAT,
                  "%s: tensor '%s': size %s with stride %s and storage offset %" PRId64
                  " reaches past what 64 bits can count.",
                  path, name, shape, stride, t->offset);
    EX_ENSURE(reach < t->storage_numel, err, EX_E_FORMAT,
              "%s: tensor '%s': size %s with stride %s and storage offset %" PRId64 " reaches element %" PRId64
              " but storage '%s' holds only %" PRId64 " elements (corrupt file).",
              path, name, shape, stride, t->offset, reach, t->key, t->storage_numel);
    return EX_OK;
}

/* Check the arguments of _rebuild_tensor_v2(storage, offset, size, stride, ...) and fill t. */
static ex_status build_tensor(const flat_ctx *c, const pk_obj *args, pth_tensor *t) {
    const char *path = c->f->path, *name = c->name;
    ex_err *err = c->err;
    memset(t, 0, sizeof *t);
    snprintf(t->e.name, sizeof t->e.name, "%s", name);
    EX_ENSURE(args->kind == PK_TUPLE && args->u.seq.n >= 4, err, EX_E_FORMAT,
              "%s: tensor '%s': _rebuild_tensor_v2 has %zu arguments; expected at least 4 (storage, storage_offset, "
              "size, stride).",
              path, name, args->kind == PK_TUPLE ? args->u.seq.n : 0);
    const pk_obj *const *a = (const pk_obj *const *)args->u.seq.items;
    EX_CHECK(read_storage_id(c, a[0], t));
    EX_ENSURE(a[1]->kind == PK_INT && a[1]->u.i >= 0, err, EX_E_FORMAT,
              "%s: tensor '%s': storage offset is %s%s; expected an int >= 0.", path, name, pk_kind_text(a[1]->kind),
              a[1]->kind == PK_INT ? " < 0" : "");
    t->offset = a[1]->u.i;
    int nstride = 0;
    EX_CHECK(int_tuple(c, a[2], "size", t->e.shape, &t->e.ndim));
    EX_CHECK(int_tuple(c, a[3], "stride", t->stride, &nstride));
    EX_ENSURE(nstride == t->e.ndim, err, EX_E_FORMAT,
              "%s: tensor '%s': size has %d dimensions but stride has %d.", path, name, t->e.ndim, nstride);
    EX_CHECK(bind_storage(c, t));
    return check_extent(c, t);
}

/* --- flattening ---------------------------------------------------------------------------------- */

/* Append text to c->name at len; returns the new length, or EX_NAME_MAX once the name no longer fits. */
static size_t name_append(flat_ctx *c, size_t len, const char *s, size_t n) {
    if (len >= EX_NAME_MAX || n >= EX_NAME_MAX - len) {
        if (len < EX_NAME_MAX - 1) {
            size_t room = EX_NAME_MAX - 1 - len;
            memcpy(c->name + len, s, room);
            c->name[EX_NAME_MAX - 1] = '\0';
        }
        return EX_NAME_MAX;
    }
    memcpy(c->name + len, s, n);
    c->name[len + n] = '\0';
    return len + n;
}

/* The text of a str or int key; 0 for other keys (skipped). */
static int key_text(const pk_obj *k, const char **s, size_t *n, char *buf, size_t cap) {
    if (k->kind == PK_STR) {
        *s = k->u.str.s;
        *n = k->u.str.n;
        return !memchr(k->u.str.s, '\0', k->u.str.n);
    }
    if (k->kind == PK_INT) {
        *n = (size_t)snprintf(buf, cap, "%" PRId64, k->u.i);
        *s = buf;
        return 1;
    }
    return 0;
}

static ex_status add_tensor(flat_ctx *c, const pk_obj *tensor, size_t len) {
    ex_pth_file *f = c->f;
    ex_err *err = c->err;
    EX_ENSURE(len < EX_NAME_MAX, err, EX_E_FORMAT, "%s: tensor name '%s...' is longer than %d bytes.", f->path,
              c->name, EX_NAME_MAX - 1);
    EX_ENSURE(f->count < c->max_tensors, err, EX_E_FORMAT,
              "%s: more than %d tensors for a %zu-byte data.pkl (dicts shared many times over: a hostile pickle?).",
              f->path, c->max_tensors, c->pickle_len);
    if (f->count == f->cap) {
        int cap = f->cap ? f->cap * 2 : 64;
        pth_tensor *t = realloc(f->tensors, (size_t)cap * sizeof *t);
        EX_ENSURE(t, err, EX_E_NOMEM, "%s: out of memory for %d tensors.", f->path, cap);
        f->tensors = t;
        f->cap = cap;
    }
    EX_CHECK(build_tensor(c, tensor->u.ref, &f->tensors[f->count]));
    f->count++;
    return EX_OK;
}

/* List the tensors of dict d, whose name prefix (with its trailing '.') is c->name[0..len). */
static ex_status flatten_dict(flat_ctx *c, const pk_obj *d, size_t len, int depth) {
    ex_err *err = c->err;
    for (size_t i = 0; i + 1 < d->u.seq.n; i += 2) {
        EX_ENSURE(++c->visits <= PTH_MAX_VISITS, err, EX_E_FORMAT,
                  "%s: data.pkl: more than %u dict items to visit (a cyclic or hostile pickle).", c->f->path,
                  PTH_MAX_VISITS);
        const pk_obj *k = d->u.seq.items[i], *v = d->u.seq.items[i + 1];
        if (v->kind != PK_TENSOR && v->kind != PK_DICT) continue;
        char num[32];
        const char *ks;
        size_t kn;
        if (!key_text(k, &ks, &kn, num, sizeof num)) continue;
        size_t sub = name_append(c, len, ks, kn);
        if (v->kind == PK_TENSOR) {
            EX_CHECK(add_tensor(c, v, sub));
            continue;
        }
        EX_ENSURE(depth < EX_PTH_MAX_DEPTH, err, EX_E_FORMAT,
                  "%s: data.pkl: dicts nested deeper than %d levels at '%s' (a cyclic or hostile pickle).", c->f->path,
                  EX_PTH_MAX_DEPTH, c->name);
        EX_CHECK(flatten_dict(c, v, name_append(c, sub, ".", 1), depth + 1));
    }
    return EX_OK;
}

/* --- names ---------------------------------------------------------------------------------------- */

static int cmp_tensor_name(const void *a, const void *b) {
    const pth_tensor *x = *(const pth_tensor *const *)a, *y = *(const pth_tensor *const *)b;
    return strcmp(x->e.name, y->e.name);
}

static ex_status index_names(ex_pth_file *f, ex_err *err) {
    if (f->count == 0) return EX_OK;
    f->by_name = malloc((size_t)f->count * sizeof *f->by_name);
    EX_ENSURE(f->by_name, err, EX_E_NOMEM, "%s: out of memory for %d tensors.", f->path, f->count);
    for (int i = 0; i < f->count; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_tensor_name);
    for (int i = 1; i < f->count; i++)
        EX_ENSURE(strcmp(f->by_name[i - 1]->e.name, f->by_name[i]->e.name) != 0, err, EX_E_FORMAT,
                  "%s: two tensors flatten to the name '%s' (e.g. {\"a\": {\"b\": x}} and {\"a.b\": y}); names must be "
                  "unique.",
                  f->path, f->by_name[i]->e.name);
    return EX_OK;
}

/* --- open ------------------------------------------------------------------------------------------ */

/* torch >= 2.1 records the byte order in "<prefix>/byteorder"; only "little" is supported. */
static ex_status check_byteorder(const pth_zip *z, const char *prefix, size_t plen, const char *path, ex_err *err) {
    char name[1100];
    int n = snprintf(name, sizeof name, "%.*s/byteorder", (int)(plen > 1000 ? 1000 : plen), prefix);
    const pth_member *m = n > 0 && (size_t)n < sizeof name ? pth_zip_find(z, name, (size_t)n) : NULL;
    if (!m) return EX_OK;
    EX_CHECK(pth_zip_check_stored(z, m, err));
    const char *text = (const char *)z->map + m->data;
    if (m->size == 6 && memcmp(text, "little", 6) == 0) return EX_OK;
    EX_ENSURE(!(m->size == 3 && memcmp(text, "big", 3) == 0), err, EX_E_UNSUPPORTED,
              "%s: the checkpoint was saved on a big-endian machine (byteorder 'big'); only little-endian is "
              "supported.",
              path);
    EX_FAIL(err, EX_E_FORMAT, "%s: member '%s' holds neither 'little' nor 'big'.", path, name);
}

static ex_status load(ex_pth_file *f, ex_err *err) {
    EX_CHECK(map_file(f, err));
    flat_ctx *c = calloc(1, sizeof *c);
    EX_ENSURE(c, err, EX_E_NOMEM, "%s: out of memory.", f->path);
    pth_zip z;
    pk_result pk = {0};
    const pth_member *pkl;
    ex_status st = pth_zip_parse(&z, f->path, f->map, f->map_size, err);
    if (st != EX_OK) {
        free(c);
        return st;
    }
    c->f = f;
    c->z = &z;
    c->err = err;
    EX_CHECK_GOTO(pth_zip_find_pickle(&z, &pkl, &c->prefix, &c->prefix_len, err), st, done);
    /* A tensor takes ~80 pickle bytes; sharing one dict under several keys (legal) multiplies that, but a
     * tiny pickle must not make us allocate records for a million names. */
    c->pickle_len = (size_t)pkl->size;
    c->max_tensors = pkl->size < (EX_PTH_MAX_TENSORS - 4096) / 16 ? (int)(pkl->size * 16 + 4096) : EX_PTH_MAX_TENSORS;
    EX_CHECK_GOTO(pth_zip_check_stored(&z, pkl, err), st, done);
    EX_CHECK_GOTO(check_byteorder(&z, c->prefix, c->prefix_len, f->path, err), st, done);
    EX_CHECK_GOTO(pk_run(f->path, z.map + pkl->data, (size_t)pkl->size, &pk, err), st, done);
    if (pk.root->kind != PK_DICT)
        EX_FAIL_GOTO(err, st, done, EX_E_FORMAT,
                     "%s: data.pkl holds %s at the top level; expected a dict (a state dict or a checkpoint dict).",
                     f->path, pk_kind_text(pk.root->kind));
    EX_CHECK_GOTO(flatten_dict(c, pk.root, 0, 0), st, done);
    EX_CHECK_GOTO(index_names(f, err), st, done);
done:
    pk_free(&pk);
    pth_zip_free(&z);
    free(c);
    return st;
}

ex_status ex_pth_open(ex_pth_file **out, const char *path, ex_err *err) {
    EX_ENSURE(out && path, err, EX_E_INVALID, "ex_pth_open: out and path must not be NULL.");
    *out = NULL;
    ex_pth_file *f = calloc(1, sizeof *f);
    EX_ENSURE(f, err, EX_E_NOMEM, "out of memory opening '%s'.", path);
    f->path = strdup(path);
    if (!f->path) {
        free(f);
        EX_FAIL(err, EX_E_NOMEM, "out of memory opening '%s'.", path);
    }
    ex_status st = load(f, err);
    if (st != EX_OK) {
        ex_pth_close(f);
        return st;
    }
    *out = f;
    return EX_OK;
}

void ex_pth_close(ex_pth_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_size);
    free(f->by_name);
    free(f->tensors);
    free(f->path);
    free(f);
}

/* --- queries ----------------------------------------------------------------------------------------- */

int ex_pth_count(const ex_pth_file *f) { return f ? f->count : 0; }

const ex_st_entry *ex_pth_at(const ex_pth_file *f, int i) {
    return f && i >= 0 && i < f->count ? &f->tensors[i].e : NULL;
}

static int cmp_key_tensor(const void *key, const void *elem) {
    return strcmp((const char *)key, (*(const pth_tensor *const *)elem)->e.name);
}

const ex_st_entry *ex_pth_find(const ex_pth_file *f, const char *name) {
    if (!f || !name || f->count == 0) return NULL;
    const pth_tensor *const *hit = bsearch(name, f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_key_tensor);
    return hit ? &(*hit)->e : NULL;
}

const char *ex_pth_path(const ex_pth_file *f) { return f ? f->path : NULL; }

/* The record behind an entry handed out by this file, or NULL. */
static const pth_tensor *own(const ex_pth_file *f, const ex_st_entry *e) {
    uintptr_t base = (uintptr_t)f->tensors, p = (uintptr_t)e;
    if (!f->tensors || p < base || p >= base + (uintptr_t)f->count * sizeof(pth_tensor)) return NULL;
    if ((p - base) % sizeof(pth_tensor)) return NULL;
    return &f->tensors[(p - base) / sizeof(pth_tensor)];
}

ex_status ex_pth_layout(const ex_pth_file *f, const ex_st_entry *e, int64_t *storage_offset,
                        int64_t strides[EX_MAX_DIMS], const char **storage_key, int64_t *storage_numel, ex_err *err) {
    EX_ENSURE(f && e, err, EX_E_INVALID, "ex_pth_layout: file and entry must not be NULL.");
    const pth_tensor *t = own(f, e);
    EX_ENSURE(t, err, EX_E_INVALID, "%s: ex_pth_layout: entry '%.100s' does not belong to this file.", f->path,
              e->name);
    if (storage_offset) *storage_offset = t->offset;
    if (strides) memcpy(strides, t->stride, sizeof t->stride);
    if (storage_key) *storage_key = t->key;
    if (storage_numel) *storage_numel = t->storage_numel;
    return EX_OK;
}

/* --- fp32 conversion ------------------------------------------------------------------------------------ */

static uint64_t load_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static float load_f32(const unsigned char *p) {
    uint32_t u = (uint32_t)load_le(p, 4);
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static float load_f64(const unsigned char *p) {
    uint64_t u = load_le(p, 8);
    double v;
    memcpy(&v, &u, sizeof v);
    return (float)v;
}

/* count elements, `step` bytes apart (step may be 0 for an expanded dimension), into dst. */
static void convert_run(ex_dtype dt, const unsigned char *src, size_t step, int64_t count, float *dst) {
#define PTH_RUN(expr)                                                      \
    for (int64_t i = 0; i < count; i++, src += step) dst[i] = (expr); \
    break
    switch (dt) {
    case EX_F32: PTH_RUN(load_f32(src));
    case EX_F16: PTH_RUN(ex_f16_to_f32((uint16_t)load_le(src, 2)));
    case EX_BF16: PTH_RUN(ex_bf16_to_f32((uint16_t)load_le(src, 2)));
    case EX_F64: PTH_RUN(load_f64(src));
    case EX_I64: PTH_RUN((float)(int64_t)load_le(src, 8));
    case EX_I32: PTH_RUN((float)(int32_t)(uint32_t)load_le(src, 4));
    case EX_I16: PTH_RUN((float)(int16_t)(uint16_t)load_le(src, 2));
    case EX_I8: PTH_RUN((float)(int8_t)*src);
    case EX_U8: PTH_RUN((float)*src);
    case EX_BOOL: PTH_RUN(*src ? 1.0f : 0.0f);
    default: break; /* no other storage dtype is ever listed */
    }
#undef PTH_RUN
}

static int is_contiguous(const pth_tensor *t) {
    int64_t expect = 1;
    for (int d = t->e.ndim - 1; d >= 0; d--) {
        if (t->e.shape[d] != 1 && t->stride[d] != expect) return 0;
        expect *= t->e.shape[d];
    }
    return 1;
}

/* Row-major walk: one convert_run per innermost row, an odometer over the outer dimensions. */
static void gather(const pth_tensor *t, float *dst) {
    size_t es = ex_dtype_size(t->e.dtype);
    int nd = t->e.ndim;
    if (nd == 0 || is_contiguous(t)) {
        convert_run(t->e.dtype, t->data + (size_t)t->offset * es, es, t->numel, dst);
        return;
    }
    int inner = nd - 1;
    int64_t idx[EX_MAX_DIMS] = {0};
    int64_t rows = t->numel / t->e.shape[inner];
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = t->offset;
        for (int d = 0; d < inner; d++) off += idx[d] * t->stride[d];
        convert_run(t->e.dtype, t->data + (size_t)off * es, (size_t)t->stride[inner] * es, t->e.shape[inner], dst);
        dst += t->e.shape[inner];
        for (int d = inner - 1; d >= 0; d--) {
            if (++idx[d] < t->e.shape[d]) break;
            idx[d] = 0;
        }
    }
}

ex_status ex_pth_read_f32(const ex_pth_file *f, const ex_st_entry *e, float *dst, int64_t n, ex_err *err) {
    EX_ENSURE(f && e, err, EX_E_INVALID, "ex_pth_read_f32: file and entry must not be NULL.");
    const pth_tensor *t = own(f, e);
    EX_ENSURE(t, err, EX_E_INVALID, "%s: ex_pth_read_f32: entry '%.100s' does not belong to this file.", f->path,
              e->name);
    char shape[160];
    EX_ENSURE(n == t->numel, err, EX_E_SHAPE,
              "%s: tensor '%s': %s %s has %" PRId64 " elements but the destination holds %" PRId64 ".", f->path,
              e->name, ex_dtype_name(e->dtype), ex_shape_str(e->ndim, e->shape, shape, sizeof shape), t->numel, n);
    EX_ENSURE(dst || n == 0, err, EX_E_INVALID, "%s: tensor '%s': destination is NULL.", f->path, e->name);
    if (n > 0) gather(t, dst);
    return EX_OK;
}
