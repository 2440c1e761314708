/*
 * datasets/imagefolder/imagefolder_scan.c — directory scanning for the
 * `imagefolder` plugin (see imagefolder_scan.h): string lists, class folders,
 * recursive image listing, and torchvision's (folder, name) sort order.
 */
#include "imagefolder_scan.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define IMF_MAX_DEPTH 32
#define IMF_PATH_MAX 4096

/* ---------------------------------------------------------------------------
 * string list
 * --------------------------------------------------------------------------- */

static ex_status grow(void **p, size_t *cap, size_t need, size_t elem, ex_err *err) {
    if (need <= *cap) return EX_OK;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * elem);
    EX_ENSURE(np, err, EX_E_NOMEM, "imagefolder: out of memory listing files.");
    *p = np;
    *cap = nc;
    return EX_OK;
}

ex_status imf_strlist_push(imf_strlist *l, const char *s, ex_err *err) {
    size_t sl = strlen(s) + 1;
    EX_CHECK(grow((void **)&l->buf, &l->cap, l->len + sl, 1, err));
    EX_CHECK(grow((void **)&l->offs, &l->ncap, l->n + 1, sizeof(size_t), err));
    memcpy(l->buf + l->len, s, sl);
    l->offs[l->n++] = l->len;
    l->len += sl;
    return EX_OK;
}

const char *imf_strlist_at(const imf_strlist *l, size_t i) { return i < l->n ? l->buf + l->offs[i] : NULL; }

void imf_strlist_free(imf_strlist *l) {
    free(l->buf);
    free(l->offs);
    memset(l, 0, sizeof *l);
}

/* ---------------------------------------------------------------------------
 * names
 * --------------------------------------------------------------------------- */

/* "<name>" ends with ".<ext>" for one of the extensions, ignoring case. */
static int has_image_ext(const char *name, const imf_exts *exts) {
    size_t nl = strlen(name);
    for (int i = 0; i < exts->n; i++) {
        size_t el = strlen(exts->items[i]);
        if (nl > el + 1 && name[nl - el - 1] == '.' && strcasecmp(name + nl - el, exts->items[i]) == 0) return 1;
    }
    return 0;
}

static int skip_name(const char *name) { return name[0] == '.'; /* ".", "..", hidden files and folders */ }

static ex_status join(char *out, const char *a, const char *b, ex_err *err) {
    int n = !a[0]   ? snprintf(out, IMF_PATH_MAX, "%s", b)
            : !b[0] ? snprintf(out, IMF_PATH_MAX, "%s", a)
                    : snprintf(out, IMF_PATH_MAX, "%s/%s", a, b);
    EX_ENSURE(n >= 0 && n < IMF_PATH_MAX, err, EX_E_RANGE, "imagefolder: path too long: '%s/%s'.", a, b);
    return EX_OK;
}

typedef ex_status (*entry_fn)(void *ctx, const char *name, ex_err *err);

/* Call fn for every entry of the folder `path` whose name does not start with '.'. */
static ex_status for_each_entry(const char *path, entry_fn fn, void *ctx, ex_err *err) {
    DIR *d = opendir(path);
    EX_ENSURE(d, err, EX_E_IO, "imagefolder: cannot open the folder '%s': %s.", path, strerror(errno));
    ex_status st = EX_OK;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno != 0)
                st = ex_err_set(err, EX_E_IO, __FILE__, __LINE__, "imagefolder: cannot read the folder '%s': %s.",
                                path, strerror(errno));
            break;
        }
        if (skip_name(e->d_name)) continue;
        st = fn(ctx, e->d_name, err);
        if (st != EX_OK) break;
    }
    closedir(d);
    return st;
}

/* ---------------------------------------------------------------------------
 * class folders
 * --------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Re-pack `l` in byte-wise order. */
static ex_status sort_bytewise(imf_strlist *l, ex_err *err) {
    const char **v = malloc((l->n ? l->n : 1) * sizeof *v);
    EX_ENSURE(v, err, EX_E_NOMEM, "imagefolder: out of memory sorting names.");
    for (size_t i = 0; i < l->n; i++) v[i] = imf_strlist_at(l, i);
    qsort(v, l->n, sizeof *v, cmp_str);
    imf_strlist sorted = {0};
    ex_status st = EX_OK;
    for (size_t i = 0; i < l->n && st == EX_OK; i++) st = imf_strlist_push(&sorted, v[i], err);
    free(v);
    if (st != EX_OK) {
        imf_strlist_free(&sorted);
        return st;
    }
    imf_strlist_free(l);
    *l = sorted;
    return EX_OK;
}

typedef struct root_ctx {
    const char *root;
    const imf_exts *exts;
    imf_strlist *classes;
    size_t *loose;
} root_ctx;

/* One entry of root: a class folder, a loose image, or something to ignore. */
static ex_status root_entry(void *ctx, const char *name, ex_err *err) {
    root_ctx *r = ctx;
    char path[IMF_PATH_MAX];
    EX_CHECK(join(path, r->root, name, err));
    struct stat sb;
    if (stat(path, &sb) != 0) return EX_OK; /* dangling link: not a class folder */
    if (S_ISDIR(sb.st_mode)) return imf_strlist_push(r->classes, name, err);
    if (S_ISREG(sb.st_mode) && has_image_ext(name, r->exts)) (*r->loose)++;
    return EX_OK;
}

ex_status imf_list_classes(const char *root, const imf_exts *exts, imf_strlist *classes, size_t *loose_images,
                           ex_err *err) {
    *loose_images = 0;
    root_ctx r = {root, exts, classes, loose_images};
    EX_CHECK(for_each_entry(root, root_entry, &r, err));
    return sort_bytewise(classes, err);
}

/* ---------------------------------------------------------------------------
 * image files of one class
 * --------------------------------------------------------------------------- */

typedef struct walk_ctx {
    const char *class_dir;
    const imf_exts *exts;
    imf_strlist *files;
    const char *rel_dir; /* folder being listed, relative to class_dir ("" at the top) */
    int depth;
} walk_ctx;

static ex_status walk_dir(const walk_ctx *w, ex_err *err);

/* One directory entry: recurse into folders, keep image files. */
static ex_status walk_entry(void *ctx, const char *name, ex_err *err) {
    const walk_ctx *w = ctx;
    char rel[IMF_PATH_MAX], path[IMF_PATH_MAX];
    EX_CHECK(join(rel, w->rel_dir, name, err));
    EX_CHECK(join(path, w->class_dir, rel, err));
    struct stat sb;
    int is_image = has_image_ext(name, w->exts);
    if (stat(path, &sb) != 0) {
        if (!is_image) return EX_OK;
        EX_FAIL(err, EX_E_IO, "imagefolder: cannot read the image '%s': %s.", path, strerror(errno));
    }
    if (S_ISDIR(sb.st_mode)) {
        walk_ctx sub = *w;
        sub.rel_dir = rel;
        sub.depth = w->depth + 1;
        return walk_dir(&sub, err);
    }
    if (is_image && S_ISREG(sb.st_mode)) return imf_strlist_push(w->files, rel, err);
    return EX_OK;
}

static ex_status walk_dir(const walk_ctx *w, ex_err *err) {
    char path[IMF_PATH_MAX];
    EX_CHECK(join(path, w->class_dir, w->rel_dir, err));
    EX_ENSURE(w->depth <= IMF_MAX_DEPTH, err, EX_E_FORMAT,
              "imagefolder: folders nested deeper than %d levels at '%s' (a symbolic link loop?).", IMF_MAX_DEPTH,
              path);
    return for_each_entry(path, walk_entry, (void *)w, err);
}

ex_status imf_list_files(const char *class_dir, const imf_exts *exts, imf_strlist *files, ex_err *err) {
    walk_ctx w = {class_dir, exts, files, "", 0};
    return walk_dir(&w, err);
}

/* ---------------------------------------------------------------------------
 * torchvision order
 * --------------------------------------------------------------------------- */

/* Compare "dir/name" paths by (dir, name): a file directly in the class folder (dir "")
 * comes before any subfolder's files, as sorted(os.walk()) gives them. */
static int cmp_torchvision(const void *pa, const void *pb) {
    const char *a = *(const char *const *)pa, *b = *(const char *const *)pb;
    const char *sa = strrchr(a, '/'), *sb = strrchr(b, '/');
    size_t da = sa ? (size_t)(sa - a) : 0, db = sb ? (size_t)(sb - b) : 0;
    size_t m = da < db ? da : db;
    int c = memcmp(a, b, m);
    if (c) return c;
    if (da != db) return da < db ? -1 : 1;
    return strcmp(sa ? sa + 1 : a, sb ? sb + 1 : b);
}

ex_status imf_sorted_view(const imf_strlist *l, const char ***out, ex_err *err) {
    const char **v = malloc((l->n ? l->n : 1) * sizeof *v);
    EX_ENSURE(v, err, EX_E_NOMEM, "imagefolder: out of memory sorting file names.");
    for (size_t i = 0; i < l->n; i++) v[i] = imf_strlist_at(l, i);
    qsort(v, l->n, sizeof *v, cmp_torchvision);
    *out = v;
    return EX_OK;
}
