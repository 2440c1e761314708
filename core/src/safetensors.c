/*
 * core/src/safetensors.c — the .safetensors reader and writer (see explora/safetensors.h).
 *
 * Reader: the file is mmapped read-only; the header is copied out, parsed with
 * cJSON and checked completely before ex_st_open returns: every entry's dtype,
 * shape and data_offsets, sizes that agree, offsets inside the data area, the
 * tensors (sorted by offset) tiling the data area exactly as the reference
 * implementation demands (no overlap, no gap, no trailing bytes), unique names
 * and a __metadata__ object of strings. All arithmetic on values from the file
 * is overflow-checked. Names are then sorted once so ex_st_find is a binary
 * search.
 *
 * Writer: entries are collected in insertion order (names and shapes copied,
 * data pointers kept); finish builds the JSON header with cJSON (__metadata__
 * first), pads it with spaces to a multiple of 8 bytes and writes length,
 * header and data through ex_atomic_open/commit, aborting on any error so a
 * failed write never replaces or damages an existing file.
 */
#include "explora/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "explora/fileio.h"

/* The reference implementation refuses headers above 100 MB; so do we. */
#define ST_MAX_HEADER 100000000ull
/* Largest integer a JSON number (a double in cJSON) holds exactly: 2^53. */
#define ST_MAX_EXACT_INT 9007199254740992.0
#define ST_METADATA_KEY "__metadata__"

/* =============================================================================
 * Shared helpers
 * ============================================================================= */

static uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void store_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* numel = prod(shape) with overflow detection; returns 0 on overflow. */
static int shape_numel(int ndim, const int64_t *shape, uint64_t *numel) {
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(n, (uint64_t)shape[i], &n)) return 0;
    }
    *numel = n;
    return 1;
}

static int shape_nbytes(ex_dtype dt, int ndim, const int64_t *shape, uint64_t *nbytes) {
    uint64_t n;
    if (!shape_numel(ndim, shape, &n)) return 0;
    return !__builtin_mul_overflow(n, (uint64_t)ex_dtype_size(dt), nbytes);
}

/* "F32, F16, BF16, ..." into buf. */
static const char *dtype_list(char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < EX_DTYPE_COUNT && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, i ? ", %s" : "%s", ex_dtype_name((ex_dtype)i));
    return buf;
}

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* =============================================================================
 * Reader
 * ============================================================================= */

typedef struct st_meta {
    char *key;
    char *value;
} st_meta;

struct ex_st_file {
    char *path;
    unsigned char *map; /* the whole file, read-only */
    size_t map_size;
    const unsigned char *data; /* start of the data area inside map */
    uint64_t data_size;
    ex_st_entry *entries; /* header order */
    int count;
    const ex_st_entry **by_name; /* sorted by name, for ex_st_find */
    st_meta *meta;               /* header order */
    int meta_count;
};

/* --- small comparators -------------------------------------------------------- */

static int cmp_entry_name(const void *a, const void *b) {
    const ex_st_entry *x = *(const ex_st_entry *const *)a, *y = *(const ex_st_entry *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_key_entry(const void *key, const void *elem) {
    return strcmp((const char *)key, (*(const ex_st_entry *const *)elem)->name);
}

static int cmp_entry_offsets(const void *a, const void *b) {
    const ex_st_entry *x = *(const ex_st_entry *const *)a, *y = *(const ex_st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_meta_key(const void *a, const void *b) {
    const st_meta *x = *(const st_meta *const *)a, *y = *(const st_meta *const *)b;
    return strcmp(x->key, y->key);
}

/* --- opening and mapping ----------------------------------------------------- */

static ex_status map_file(ex_st_file *f, ex_err *err) {
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    EX_ENSURE(fd >= 0, err, EX_E_IO, "cannot open '%s': %s.", f->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        EX_FAIL(err, EX_E_IO, "cannot stat '%s': %s.", f->path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        EX_FAIL(err, EX_E_IO, "'%s' is not a regular file.", f->path);
    }
    if (st.st_size < 8) {
        close(fd);
        EX_FAIL(err, EX_E_FORMAT,
                "%s: file is %lld bytes, too short for a safetensors file (at least 8 bytes of header length, "
                "then the header).",
                f->path, (long long)st.st_size);
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        EX_FAIL(err, EX_E_IO, "'%s' is too large to map (%lld bytes).", f->path, (long long)st.st_size);
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

/* Check the 8-byte header length against the file size; set data/data_size. */
static ex_status check_header_length(ex_st_file *f, uint64_t *hlen_out, ex_err *err) {
    uint64_t hlen = load_le64(f->map);
    uint64_t avail = (uint64_t)f->map_size - 8;
    EX_ENSURE(hlen > 0, err, EX_E_FORMAT, "%s: header length is 0; expected a JSON header of at least 2 bytes.",
              f->path);
    EX_ENSURE(hlen <= ST_MAX_HEADER, err, EX_E_FORMAT,
              "%s: header length %" PRIu64 " exceeds the limit of %llu bytes (is this a safetensors file?).",
              f->path, hlen, ST_MAX_HEADER);
    EX_ENSURE(hlen <= avail, err, EX_E_FORMAT,
              "%s: header length %" PRIu64 " is larger than the %" PRIu64
              " bytes that follow it in the file (truncated file?).",
              f->path, hlen, avail);
    f->data = f->map + 8 + hlen;
    f->data_size = avail - hlen;
    *hlen_out = hlen;
    return EX_OK;
}

/* Parse the header bytes into a cJSON object; only whitespace may follow the JSON. */
static ex_status parse_header_json(const ex_st_file *f, uint64_t hlen, cJSON **out, ex_err *err) {
    const char *text = (const char *)f->map + 8;
    const void *nul = memchr(text, '\0', (size_t)hlen);
    EX_ENSURE(!nul, err, EX_E_FORMAT, "%s: header contains a NUL byte at offset %zu; expected JSON text.", f->path,
              (size_t)((const char *)nul - text));
    /* A private NUL-terminated copy: cJSON never sees the mapping itself. */
    char *buf = malloc((size_t)hlen + 1);
    EX_ENSURE(buf, err, EX_E_NOMEM, "%s: out of memory for a %" PRIu64 "-byte header.", f->path, hlen);
    memcpy(buf, text, (size_t)hlen);
    buf[hlen] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - buf) : 0;
        free(buf);
        EX_FAIL(err, EX_E_FORMAT, "%s: header is not valid JSON (error near byte %zu of %" PRIu64 ").", f->path, at,
                hlen);
    }
    size_t pos = (size_t)(end - buf);
    while (pos < hlen && (buf[pos] == ' ' || buf[pos] == '\t' || buf[pos] == '\n' || buf[pos] == '\r')) pos++;
    free(buf);
    if (pos < hlen) {
        cJSON_Delete(root);
        EX_FAIL(err, EX_E_FORMAT,
                "%s: unexpected bytes after the JSON header at byte %zu of %" PRIu64
                "; expected only space padding.",
                f->path, pos, hlen);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        EX_FAIL(err, EX_E_FORMAT, "%s: header is JSON but not an object; expected {\"name\": {...}, ...}.",
                f->path);
    }
    *out = root;
    return EX_OK;
}

/* --- one header entry --------------------------------------------------------- */

/* A JSON number that is an exact integer in [0, 2^53]. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= ST_MAX_EXACT_INT)) return 0; /* also rejects NaN */
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return 0;
    *out = u;
    return 1;
}

/* Print a JSON value compactly (for messages), truncated to cap. */
static const char *json_text(const cJSON *v, char *buf, size_t cap) {
    char *s = v ? cJSON_PrintUnformatted(v) : NULL;
    snprintf(buf, cap, "%s", s ? s : "(missing)");
    if (s && strlen(s) >= cap && cap > 4) memcpy(buf + cap - 4, "...", 4);
    cJSON_free(s);
    return buf;
}

static ex_status parse_dtype(const char *path, const char *name, const cJSON *obj, ex_dtype *dt, ex_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "dtype");
    char shown[64], list[128];
    EX_ENSURE(v, err, EX_E_FORMAT, "%s: tensor '%s': missing \"dtype\"; expected a string such as \"F32\".", path,
              name);
    EX_ENSURE(cJSON_IsString(v), err, EX_E_FORMAT, "%s: tensor '%s': dtype is %s; expected a string such as \"F32\".",
              path, name, json_text(v, shown, sizeof shown));
    EX_ENSURE(ex_dtype_from_name(v->valuestring, dt) == EX_OK, err, EX_E_FORMAT,
              "%s: tensor '%s': unknown dtype \"%.40s\"; expected one of %s.", path, name, v->valuestring,
              dtype_list(list, sizeof list));
    return EX_OK;
}

static ex_status parse_shape(const char *path, const char *name, const cJSON *obj, ex_st_entry *e, ex_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "shape");
    char shown[96], dim[48];
    EX_ENSURE(v, err, EX_E_FORMAT, "%s: tensor '%s': missing \"shape\"; expected an array of dimensions.", path,
              name);
    EX_ENSURE(cJSON_IsArray(v), err, EX_E_FORMAT, "%s: tensor '%s': shape is %s; expected an array of dimensions.",
              path, name, json_text(v, shown, sizeof shown));
    int n = cJSON_GetArraySize(v);
    EX_ENSURE(n <= EX_MAX_DIMS, err, EX_E_FORMAT, "%s: tensor '%s': shape %s has %d dimensions; at most %d supported.",
              path, name, json_text(v, shown, sizeof shown), n, EX_MAX_DIMS);
    int i = 0;
    for (const cJSON *d = v->child; d; d = d->next, i++) {
        uint64_t u;
        EX_ENSURE(json_uint(d, &u), err, EX_E_FORMAT,
                  "%s: tensor '%s': shape %s: dimension %d is %s; expected a non-negative integer (at most 2^53).",
                  path, name, json_text(v, shown, sizeof shown), i, json_text(d, dim, sizeof dim));
        e->shape[i] = (int64_t)u;
    }
    e->ndim = n;
    return EX_OK;
}

static ex_status parse_offsets(const char *path, const char *name, const cJSON *obj, uint64_t data_size,
                               ex_st_entry *e, ex_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "data_offsets");
    char shown[96];
    EX_ENSURE(v, err, EX_E_FORMAT, "%s: tensor '%s': missing \"data_offsets\"; expected [begin, end].", path, name);
    uint64_t b = 0, en = 0;
    int ok = cJSON_IsArray(v) && cJSON_GetArraySize(v) == 2 && json_uint(v->child, &b) &&
             json_uint(v->child->next, &en);
    EX_ENSURE(ok, err, EX_E_FORMAT,
              "%s: tensor '%s': data_offsets is %s; expected [begin, end] of two non-negative integers.", path, name,
              json_text(v, shown, sizeof shown));
    EX_ENSURE(b <= en, err, EX_E_FORMAT,
              "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] has begin > end; expected begin <= end.",
              path, name, b, en);
    EX_ENSURE(en <= data_size, err, EX_E_FORMAT,
              "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] reach past the end of the data area (%" PRIu64
              " bytes; truncated file?).",
              path, name, b, en, data_size);
    e->begin = b;
    e->end = en;
    return EX_OK;
}

static ex_status parse_entry(const ex_st_file *f, const cJSON *item, ex_st_entry *e, ex_err *err) {
    const char *name = item->string;
    size_t len = strlen(name);
    EX_ENSURE(len < EX_NAME_MAX, err, EX_E_FORMAT,
              "%s: tensor name '%.60s...' is %zu bytes long; names may have at most %d bytes.", f->path, name, len,
              EX_NAME_MAX - 1);
    memcpy(e->name, name, len + 1);
    EX_ENSURE(cJSON_IsObject(item), err, EX_E_FORMAT,
              "%s: tensor '%s': entry is not an object; expected {\"dtype\", \"shape\", \"data_offsets\"}.", f->path,
              name);
    EX_CHECK(parse_dtype(f->path, name, item, &e->dtype, err));
    EX_CHECK(parse_shape(f->path, name, item, e, err));
    EX_CHECK(parse_offsets(f->path, name, item, f->data_size, e, err));

    char shape[160];
    uint64_t need;
    ex_shape_str(e->ndim, e->shape, shape, sizeof shape);
    EX_ENSURE(shape_nbytes(e->dtype, e->ndim, e->shape, &need), err, EX_E_FORMAT,
              "%s: tensor '%s': %s %s has more bytes than 64 bits can count (overflow).", f->path, name,
              ex_dtype_name(e->dtype), shape);
    EX_ENSURE(e->end - e->begin == need, err, EX_E_FORMAT,
              "%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64 " bytes but %s %s needs %" PRIu64
              ".",
              f->path, name, e->begin, e->end, e->end - e->begin, ex_dtype_name(e->dtype), shape, need);
    return EX_OK;
}

/* --- __metadata__ -------------------------------------------------------------- */

static ex_status parse_metadata(ex_st_file *f, const cJSON *md, ex_err *err) {
    char shown[96];
    EX_ENSURE(cJSON_IsObject(md), err, EX_E_FORMAT, "%s: __metadata__ is %s; expected an object of strings.",
              f->path, json_text(md, shown, sizeof shown));
    int n = cJSON_GetArraySize(md);
    if (n == 0) return EX_OK;
    f->meta = calloc((size_t)n, sizeof *f->meta);
    EX_ENSURE(f->meta, err, EX_E_NOMEM, "%s: out of memory for %d metadata entries.", f->path, n);
    for (const cJSON *v = md->child; v; v = v->next) {
        EX_ENSURE(cJSON_IsString(v), err, EX_E_FORMAT,
                  "%s: __metadata__ value of '%.80s' is %s; expected a string (safetensors metadata is "
                  "string-to-string).",
                  f->path, v->string, json_text(v, shown, sizeof shown));
        st_meta m = {dup_string(v->string), dup_string(v->valuestring)};
        if (!m.key || !m.value) {
            free(m.key);
            free(m.value);
            EX_FAIL(err, EX_E_NOMEM, "%s: out of memory for metadata.", f->path);
        }
        f->meta[f->meta_count++] = m;
    }
    /* duplicate keys: sort a temporary pointer array */
    const st_meta **sorted = malloc((size_t)n * sizeof *sorted);
    EX_ENSURE(sorted, err, EX_E_NOMEM, "%s: out of memory for metadata.", f->path);
    for (int i = 0; i < n; i++) sorted[i] = &f->meta[i];
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_meta_key);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (strcmp(sorted[i - 1]->key, sorted[i]->key) == 0) dup = sorted[i]->key;
    free(sorted);
    EX_ENSURE(!dup, err, EX_E_FORMAT, "%s: __metadata__ key '%.80s' appears more than once; keys must be unique.",
              f->path, dup);
    return EX_OK;
}

/* --- whole-header checks -------------------------------------------------------- */

/* Names must be unique; leaves f->by_name sorted for ex_st_find. */
static ex_status check_names(ex_st_file *f, ex_err *err) {
    if (f->count == 0) return EX_OK;
    f->by_name = malloc((size_t)f->count * sizeof *f->by_name);
    EX_ENSURE(f->by_name, err, EX_E_NOMEM, "%s: out of memory for %d tensors.", f->path, f->count);
    for (int i = 0; i < f->count; i++) f->by_name[i] = &f->entries[i];
    qsort(f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_entry_name);
    for (int i = 1; i < f->count; i++)
        EX_ENSURE(strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) != 0, err, EX_E_FORMAT,
                  "%s: tensor '%s' appears more than once in the header (duplicate name); names must be unique.",
                  f->path, f->by_name[i]->name);
    return EX_OK;
}

/* Sorted by offset, tensors must tile [0, data_size) exactly (like the reference implementation). */
static ex_status check_tiling(const ex_st_file *f, ex_err *err) {
    const ex_st_entry **order = NULL;
    if (f->count > 0) {
        order = malloc((size_t)f->count * sizeof *order);
        EX_ENSURE(order, err, EX_E_NOMEM, "%s: out of memory for %d tensors.", f->path, f->count);
        for (int i = 0; i < f->count; i++) order[i] = &f->entries[i];
        qsort(order, (size_t)f->count, sizeof *order, cmp_entry_offsets);
    }
    ex_status st = EX_OK;
    uint64_t pos = 0;
    const ex_st_entry *prev = NULL;
    for (int i = 0; i < f->count; i++) {
        const ex_st_entry *e = order[i];
        if (e->begin < pos)
            EX_FAIL_GOTO(err, st, done, EX_E_FORMAT,
                         "%s: tensor '%s' at data_offsets [%" PRIu64 ", %" PRIu64 "] overlaps tensor '%s' at [%" PRIu64
                         ", %" PRIu64 "]; tensors must not share bytes.",
                         f->path, e->name, e->begin, e->end, prev->name, prev->begin, prev->end);
        if (e->begin > pos && !prev)
            EX_FAIL_GOTO(err, st, done, EX_E_FORMAT,
                         "%s: the first tensor '%s' starts at byte %" PRIu64 " of the data area; expected 0 (a gap of "
                         "%" PRIu64 " unused bytes; tensors must be contiguous).",
                         f->path, e->name, e->begin, e->begin);
        if (e->begin > pos)
            EX_FAIL_GOTO(err, st, done, EX_E_FORMAT,
                         "%s: tensor '%s' starts at byte %" PRIu64 " of the data area but the previous tensor '%s' "
                         "ends at %" PRIu64 "; a gap of %" PRIu64 " unused bytes (tensors must be contiguous).",
                         f->path, e->name, e->begin, prev->name, pos, e->begin - pos);
        pos = e->end;
        prev = e;
    }
    if (pos != f->data_size)
        EX_FAIL_GOTO(err, st, done, EX_E_FORMAT,
                     "%s: %" PRIu64 " trailing bytes after the last tensor (tensors cover %" PRIu64
                     " of %" PRIu64 " data bytes); expected the data area to end with the last tensor.",
                     f->path, f->data_size - pos, pos, f->data_size);
done:
    free(order);
    return st;
}

static ex_status parse_header(ex_st_file *f, const cJSON *root, ex_err *err) {
    int n = 0, have_meta = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, ST_METADATA_KEY) != 0) {
            n++;
            continue;
        }
        EX_ENSURE(!have_meta, err, EX_E_FORMAT, "%s: __metadata__ appears more than once in the header.", f->path);
        have_meta = 1;
        EX_CHECK(parse_metadata(f, c, err));
    }
    if (n > 0) {
        f->entries = calloc((size_t)n, sizeof *f->entries);
        EX_ENSURE(f->entries, err, EX_E_NOMEM, "%s: out of memory for %d tensors.", f->path, n);
    }
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, ST_METADATA_KEY) == 0) continue;
        EX_CHECK(parse_entry(f, c, &f->entries[f->count], err));
        f->count++;
    }
    EX_CHECK(check_names(f, err));
    EX_CHECK(check_tiling(f, err));
    return EX_OK;
}

ex_status ex_st_open(ex_st_file **out, const char *path, ex_err *err) {
    EX_ENSURE(out && path, err, EX_E_INVALID, "ex_st_open: out and path must not be NULL.");
    *out = NULL;
    ex_st_file *f = calloc(1, sizeof *f);
    EX_ENSURE(f, err, EX_E_NOMEM, "out of memory opening '%s'.", path);
    ex_status st = EX_OK;
    cJSON *root = NULL;
    f->path = dup_string(path);
    if (!f->path) EX_FAIL_GOTO(err, st, fail, EX_E_NOMEM, "out of memory opening '%s'.", path);
    uint64_t hlen = 0;
    EX_CHECK_GOTO(map_file(f, err), st, fail);
    EX_CHECK_GOTO(check_header_length(f, &hlen, err), st, fail);
    EX_CHECK_GOTO(parse_header_json(f, hlen, &root, err), st, fail);
    EX_CHECK_GOTO(parse_header(f, root, err), st, fail);
    cJSON_Delete(root);
    *out = f;
    return EX_OK;
fail:
    cJSON_Delete(root);
    ex_st_close(f);
    return st;
}

void ex_st_close(ex_st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_size);
    for (int i = 0; i < f->meta_count; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    free(f->by_name);
    free(f->entries);
    free(f->path);
    free(f);
}

/* --- queries -------------------------------------------------------------------- */

int ex_st_count(const ex_st_file *f) { return f ? f->count : 0; }

const ex_st_entry *ex_st_at(const ex_st_file *f, int i) {
    return f && i >= 0 && i < f->count ? &f->entries[i] : NULL;
}

const ex_st_entry *ex_st_find(const ex_st_file *f, const char *name) {
    if (!f || !name || f->count == 0) return NULL;
    const ex_st_entry *const *hit = bsearch(name, f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_key_entry);
    return hit ? *hit : NULL;
}

const char *ex_st_path(const ex_st_file *f) { return f ? f->path : NULL; }

const char *ex_st_metadata(const ex_st_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

int ex_st_metadata_count(const ex_st_file *f) { return f ? f->meta_count : 0; }

const char *ex_st_metadata_key_at(const ex_st_file *f, int i) {
    return f && i >= 0 && i < f->meta_count ? f->meta[i].key : NULL;
}

const void *ex_st_data(const ex_st_file *f, const ex_st_entry *e) {
    if (!f || !e || e->begin > e->end || e->end > f->data_size) return NULL;
    return f->data + e->begin;
}

/* --- conversion to fp32 ------------------------------------------------------------ */

/* Loads of one element at a possibly unaligned address (little-endian host). */
#define ST_DEFINE_LOAD(fn, T)                                   \
    static T fn(const unsigned char *p, size_t i) {             \
        T v;                                                    \
        memcpy(&v, p + i * sizeof(T), sizeof(T));               \
        return v;                                               \
    }
ST_DEFINE_LOAD(load_u16, uint16_t)
ST_DEFINE_LOAD(load_i16, int16_t)
ST_DEFINE_LOAD(load_u32, uint32_t)
ST_DEFINE_LOAD(load_i32, int32_t)
ST_DEFINE_LOAD(load_u64, uint64_t)
ST_DEFINE_LOAD(load_i64, int64_t)
ST_DEFINE_LOAD(load_f64, double)
#undef ST_DEFINE_LOAD

static void convert_to_f32(ex_dtype dt, const unsigned char *src, float *dst, size_t n) {
    switch (dt) {
    case EX_F32: memcpy(dst, src, n * sizeof(float)); break;
    case EX_F16: for (size_t i = 0; i < n; i++) dst[i] = ex_f16_to_f32(load_u16(src, i)); break;
    case EX_BF16: for (size_t i = 0; i < n; i++) dst[i] = ex_bf16_to_f32(load_u16(src, i)); break;
    case EX_F64: for (size_t i = 0; i < n; i++) dst[i] = (float)load_f64(src, i); break;
    case EX_I64: for (size_t i = 0; i < n; i++) dst[i] = (float)load_i64(src, i); break;
    case EX_I32: for (size_t i = 0; i < n; i++) dst[i] = (float)load_i32(src, i); break;
    case EX_I16: for (size_t i = 0; i < n; i++) dst[i] = (float)load_i16(src, i); break;
    case EX_I8: for (size_t i = 0; i < n; i++) dst[i] = (float)(int8_t)src[i]; break;
    case EX_U8: for (size_t i = 0; i < n; i++) dst[i] = (float)src[i]; break;
    case EX_U16: for (size_t i = 0; i < n; i++) dst[i] = (float)load_u16(src, i); break;
    case EX_U32: for (size_t i = 0; i < n; i++) dst[i] = (float)load_u32(src, i); break;
    case EX_U64: for (size_t i = 0; i < n; i++) dst[i] = (float)load_u64(src, i); break;
    case EX_BOOL: for (size_t i = 0; i < n; i++) dst[i] = src[i] ? 1.0f : 0.0f; break;
    default: break;
    }
}

ex_status ex_st_read_f32(const ex_st_file *f, const ex_st_entry *e, float *dst, int64_t n, ex_err *err) {
    EX_ENSURE(f && e, err, EX_E_INVALID, "ex_st_read_f32: file and entry must not be NULL.");
    EX_ENSURE((unsigned)e->dtype < EX_DTYPE_COUNT, err, EX_E_INVALID, "%s: tensor '%s': bad dtype %d.", f->path,
              e->name, (int)e->dtype);
    uint64_t numel = 0, nbytes = 0;
    char shape[160];
    ex_shape_str(e->ndim >= 0 && e->ndim <= EX_MAX_DIMS ? e->ndim : 0, e->shape, shape, sizeof shape);
    int ok = e->ndim >= 0 && e->ndim <= EX_MAX_DIMS && shape_numel(e->ndim, e->shape, &numel) &&
             shape_nbytes(e->dtype, e->ndim, e->shape, &nbytes);
    const unsigned char *src = ex_st_data(f, e);
    EX_ENSURE(ok && src && e->end - e->begin == nbytes, err, EX_E_INVALID,
              "%s: tensor '%s': entry does not describe bytes of this file.", f->path, e->name);
    EX_ENSURE(n >= 0 && (uint64_t)n == numel, err, EX_E_SHAPE,
              "%s: tensor '%s': %s %s has %" PRIu64 " elements but the destination holds %lld.", f->path, e->name,
              ex_dtype_name(e->dtype), shape, numel, (long long)n);
    EX_ENSURE(dst || numel == 0, err, EX_E_INVALID, "%s: tensor '%s': destination is NULL.", f->path, e->name);
    if (numel > 0) convert_to_f32(e->dtype, src, dst, (size_t)numel);
    return EX_OK;
}

/* =============================================================================
 * Writer
 * ============================================================================= */

typedef struct st_witem {
    char name[EX_NAME_MAX];
    ex_dtype dtype;
    int ndim;
    int64_t shape[EX_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
} st_witem;

struct ex_st_writer {
    st_witem *items; /* insertion order */
    int count, cap;
    st_meta *meta; /* insertion order */
    int meta_count, meta_cap;
};

ex_status ex_st_writer_new(ex_st_writer **out, ex_err *err) {
    EX_ENSURE(out, err, EX_E_INVALID, "ex_st_writer_new: out must not be NULL.");
    *out = calloc(1, sizeof **out);
    EX_ENSURE(*out, err, EX_E_NOMEM, "out of memory for a safetensors writer.");
    return EX_OK;
}

void ex_st_writer_free(ex_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->meta_count; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->meta);
    free(w->items);
    free(w);
}

/* Grow an array to hold at least count + 1 elements. */
static int grow(void **arr, int *cap, int count, size_t elem) {
    if (count < *cap) return 1;
    if (*cap > (1 << 29)) return 0;
    int ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)ncap * elem);
    if (!p) return 0;
    *arr = p;
    *cap = ncap;
    return 1;
}

static ex_status check_new_item(const ex_st_writer *w, const char *name, ex_dtype dtype, int ndim,
                                const int64_t *shape, const void *data, uint64_t *nbytes, ex_err *err) {
    EX_ENSURE(name, err, EX_E_INVALID, "ex_st_writer_add: tensor name is NULL.");
    size_t len = strlen(name);
    EX_ENSURE(len > 0 && len < EX_NAME_MAX, err, EX_E_INVALID,
              "ex_st_writer_add: tensor name '%.60s' has %zu bytes; expected 1 to %d.", name, len, EX_NAME_MAX - 1);
    EX_ENSURE(strcmp(name, ST_METADATA_KEY) != 0, err, EX_E_INVALID,
              "ex_st_writer_add: '__metadata__' is reserved and cannot name a tensor.");
    EX_ENSURE((unsigned)dtype < EX_DTYPE_COUNT, err, EX_E_INVALID, "ex_st_writer_add: tensor '%s': bad dtype %d.",
              name, (int)dtype);
    EX_ENSURE(ndim >= 0 && ndim <= EX_MAX_DIMS, err, EX_E_INVALID,
              "ex_st_writer_add: tensor '%s': %d dimensions; expected 0 to %d.", name, ndim, EX_MAX_DIMS);
    EX_ENSURE(ndim == 0 || shape, err, EX_E_INVALID, "ex_st_writer_add: tensor '%s': shape is NULL.", name);
    for (int i = 0; i < ndim; i++)
        EX_ENSURE(shape[i] >= 0, err, EX_E_INVALID, "ex_st_writer_add: tensor '%s': dimension %d is %lld.", name, i,
                  (long long)shape[i]);
    EX_ENSURE(shape_nbytes(dtype, ndim, shape, nbytes), err, EX_E_INVALID,
              "ex_st_writer_add: tensor '%s': byte size overflows 64 bits.", name);
    EX_ENSURE(data || *nbytes == 0, err, EX_E_INVALID, "ex_st_writer_add: tensor '%s': data is NULL.", name);
    for (int i = 0; i < w->count; i++)
        EX_ENSURE(strcmp(w->items[i].name, name) != 0, err, EX_E_INVALID,
                  "ex_st_writer_add: tensor '%s' was already added (duplicate name).", name);
    return EX_OK;
}

ex_status ex_st_writer_add(ex_st_writer *w, const char *name, ex_dtype dtype, int ndim, const int64_t *shape,
                           const void *data, ex_err *err) {
    EX_ENSURE(w, err, EX_E_INVALID, "ex_st_writer_add: writer is NULL.");
    uint64_t nbytes = 0;
    EX_CHECK(check_new_item(w, name, dtype, ndim, shape, data, &nbytes, err));
    EX_ENSURE(grow((void **)&w->items, &w->cap, w->count, sizeof *w->items), err, EX_E_NOMEM,
              "ex_st_writer_add: out of memory adding tensor '%s'.", name);
    st_witem *it = &w->items[w->count++];
    memset(it, 0, sizeof *it);
    memcpy(it->name, name, strlen(name) + 1);
    it->dtype = dtype;
    it->ndim = ndim;
    for (int i = 0; i < ndim; i++) it->shape[i] = shape[i];
    it->data = data;
    it->nbytes = nbytes;
    return EX_OK;
}

ex_status ex_st_writer_metadata(ex_st_writer *w, const char *key, const char *value, ex_err *err) {
    EX_ENSURE(w && key && value, err, EX_E_INVALID, "ex_st_writer_metadata: writer, key and value must not be NULL.");
    for (int i = 0; i < w->meta_count; i++)
        EX_ENSURE(strcmp(w->meta[i].key, key) != 0, err, EX_E_INVALID,
                  "ex_st_writer_metadata: key '%.80s' was already set (duplicate key).", key);
    EX_ENSURE(grow((void **)&w->meta, &w->meta_cap, w->meta_count, sizeof *w->meta), err, EX_E_NOMEM,
              "ex_st_writer_metadata: out of memory.");
    st_meta m = {dup_string(key), dup_string(value)};
    if (!m.key || !m.value) {
        free(m.key);
        free(m.value);
        EX_FAIL(err, EX_E_NOMEM, "ex_st_writer_metadata: out of memory.");
    }
    w->meta[w->meta_count++] = m;
    return EX_OK;
}

/* --- finish ------------------------------------------------------------------------ */

/* An exact integer as a raw JSON number (cJSON numbers are doubles). */
static cJSON *json_u64(uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_CreateRaw(buf);
}

static int add_u64(cJSON *arr, uint64_t v) {
    cJSON *x = json_u64(v);
    if (x && cJSON_AddItemToArray(arr, x)) return 1;
    cJSON_Delete(x);
    return 0;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [begin, end]} added to root under the item's name. */
static int add_item_json(cJSON *root, const st_witem *it, uint64_t begin) {
    cJSON *o = cJSON_AddObjectToObject(root, it->name);
    if (!o || !cJSON_AddStringToObject(o, "dtype", ex_dtype_name(it->dtype))) return 0;
    cJSON *shape = cJSON_AddArrayToObject(o, "shape");
    if (!shape) return 0;
    for (int i = 0; i < it->ndim; i++)
        if (!add_u64(shape, (uint64_t)it->shape[i])) return 0;
    cJSON *offs = cJSON_AddArrayToObject(o, "data_offsets");
    return offs && add_u64(offs, begin) && add_u64(offs, begin + it->nbytes);
}

/* The JSON header text (unpadded, malloc'ed by cJSON), or NULL when out of memory. */
static char *build_header(const ex_st_writer *w) {
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok && w->meta_count > 0) {
        cJSON *md = cJSON_AddObjectToObject(root, ST_METADATA_KEY);
        ok = md != NULL;
        for (int i = 0; ok && i < w->meta_count; i++)
            ok = cJSON_AddStringToObject(md, w->meta[i].key, w->meta[i].value) != NULL;
    }
    uint64_t pos = 0;
    for (int i = 0; ok && i < w->count; i++) {
        ok = add_item_json(root, &w->items[i], pos);
        pos += w->items[i].nbytes;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

static ex_status write_all(ex_atomic_file *af, const void *p, size_t n, ex_err *err) {
    EX_ENSURE(n == 0 || fwrite(p, 1, n, af->fp) == n, err, EX_E_IO, "writing '%s' failed: %s.", af->tmp_path,
              strerror(errno));
    return EX_OK;
}

static ex_status write_file(const ex_st_writer *w, const char *header, size_t hlen, ex_atomic_file *af,
                            ex_err *err) {
    uint64_t padded = ((uint64_t)hlen + 7u) & ~(uint64_t)7u;
    unsigned char len8[8];
    static const char spaces[9] = "        ";
    store_le64(len8, padded);
    EX_CHECK(write_all(af, len8, sizeof len8, err));
    EX_CHECK(write_all(af, header, hlen, err));
    EX_CHECK(write_all(af, spaces, (size_t)(padded - hlen), err));
    for (int i = 0; i < w->count; i++) EX_CHECK(write_all(af, w->items[i].data, (size_t)w->items[i].nbytes, err));
    return EX_OK;
}

static ex_status check_total_size(const ex_st_writer *w, const char *path, ex_err *err) {
    uint64_t total = 0;
    for (int i = 0; i < w->count; i++)
        EX_ENSURE(!__builtin_add_overflow(total, w->items[i].nbytes, &total) && total <= (uint64_t)SIZE_MAX, err,
                  EX_E_INVALID, "%s: tensors add up to more bytes than can be addressed.", path);
    return EX_OK;
}

ex_status ex_st_writer_finish(ex_st_writer *w, const char *path, ex_err *err) {
    EX_ENSURE(w && path, err, EX_E_INVALID, "ex_st_writer_finish: writer and path must not be NULL.");
    EX_CHECK(check_total_size(w, path, err));
    char *header = build_header(w);
    EX_ENSURE(header, err, EX_E_NOMEM, "%s: out of memory building the safetensors header.", path);
    ex_atomic_file af;
    ex_status st = ex_atomic_open(&af, path, err);
    if (st == EX_OK) {
        st = write_file(w, header, strlen(header), &af, err);
        if (st == EX_OK)
            st = ex_atomic_commit(&af, err); /* removes the temporary file itself on failure */
        else
            ex_atomic_abort(&af);
    }
    cJSON_free(header);
    return st;
}
