/*
 * core/src/plugin.c — the plugin registry: search directories, dlopen, descriptor
 * validation, lookup by kind and name (see explora/plugin.h for the rules).
 */
#include "explora/plugin.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "explora/fileio.h"

#ifndef EXPLORA_INSTALL_PLUGIN_DIR
#define EXPLORA_INSTALL_PLUGIN_DIR "/usr/local/lib/explora/plugins"
#endif

_Static_assert(sizeof(ex_backend_vtable) <= sizeof(((ex_plugin *)0)->vtable_copy.bytes),
               "vtable_copy too small for the backend vtable");
_Static_assert(sizeof(ex_backbone_vtable) <= sizeof(((ex_plugin *)0)->vtable_copy.bytes),
               "vtable_copy too small for the backbone vtable");
_Static_assert(sizeof(ex_peft_vtable) <= sizeof(((ex_plugin *)0)->vtable_copy.bytes),
               "vtable_copy too small for the peft vtable");
_Static_assert(sizeof(ex_objective_vtable) <= sizeof(((ex_plugin *)0)->vtable_copy.bytes),
               "vtable_copy too small for the objective vtable");
_Static_assert(sizeof(ex_dataset_vtable) <= sizeof(((ex_plugin *)0)->vtable_copy.bytes),
               "vtable_copy too small for the dataset vtable");

/* The descriptor as ABI 1.0 defined it ends with vtable_size. */
#define EX_DESC_MIN_SIZE (offsetof(ex_plugin_desc, vtable_size) + sizeof(uint32_t))

struct ex_registry {
    char **dirs;
    int ndirs, capdirs;
    ex_plugin **plugins;
    int nplugins, capplugins;
    ex_plugin_rejection *rejected;
    int nrejected, caprejected;
};

static const char *k_kind_names[] = {NULL, "backend", "backbone", "peft", "objective", "dataset"};

const char *ex_plugin_kind_name(ex_plugin_kind k) {
    return (k >= EX_PLUGIN_BACKEND && k <= EX_PLUGIN_DATASET) ? k_kind_names[k] : "unknown";
}

ex_status ex_plugin_kind_from_name(const char *name, ex_plugin_kind *out) {
    for (int k = EX_PLUGIN_BACKEND; k <= EX_PLUGIN_DATASET; k++) {
        if (name && strcmp(name, k_kind_names[k]) == 0) {
            *out = (ex_plugin_kind)k;
            return EX_OK;
        }
    }
    return EX_E_INVALID;
}

void ex_sample_clear(ex_sample *s) {
    free(s->pixels);
    memset(s, 0, sizeof *s);
    s->label = -1;
    s->group = -1;
}

/* --- descriptor validation ---------------------------------------------------------- */

static int valid_plugin_name(const char *name) {
    if (!name || !name[0] || strlen(name) > 63) return 0;
    for (const char *p = name; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return 0;
    }
    return 1;
}

static ex_status check_keys(const ex_plugin_desc *d, const char *path, ex_err *err) {
    if (!d->keys) return EX_OK;
    for (int i = 0; d->keys[i].name; i++) {
        const ex_key_spec *k = &d->keys[i];
        EX_ENSURE((unsigned)k->type <= EX_KEY_PATH, err, EX_E_PLUGIN,
                  "%s: plugin '%s' declares key '%s' with unknown type %d.", path, d->name, k->name, (int)k->type);
        EX_ENSURE(k->type != EX_KEY_ENUM || (k->choices && k->choices[0]), err, EX_E_PLUGIN,
                  "%s: plugin '%s' declares enum key '%s' without choices.", path, d->name, k->name);
        EX_ENSURE(strcmp(k->name, "name") != 0, err, EX_E_PLUGIN,
                  "%s: plugin '%s' declares the key 'name', which is reserved for choosing the plugin.", path, d->name);
        for (int j = 0; j < i; j++)
            EX_ENSURE(strcmp(d->keys[j].name, k->name) != 0, err, EX_E_PLUGIN,
                      "%s: plugin '%s' declares key '%s' twice.", path, d->name, k->name);
    }
    return EX_OK;
}

typedef struct slot_req {
    const char *name;
    const void *slot;
} slot_req;

/* Comma-separated names of the NULL slots into buf; returns their count. */
static int missing_slots(const slot_req *req, size_t n, char *buf, size_t cap) {
    int missing = 0;
    size_t len = strlen(buf);
    for (size_t i = 0; i < n; i++) {
        if (req[i].slot) continue;
        if (len < cap) len += (size_t)snprintf(buf + len, cap - len, "%s%s", missing ? ", " : "", req[i].name);
        missing++;
    }
    return missing;
}

static ex_status check_mandatory(const ex_plugin_desc *d, const ex_plugin *p, const char *path, ex_err *err) {
    char missing[512] = "";
    int n = 0;
    size_t known = d->vtable_size;
    switch (d->kind) {
    case EX_PLUGIN_BACKEND:
        n = ex_backend_vtable_missing(&p->vtable_copy.backend, known, missing, sizeof missing);
        break;
    case EX_PLUGIN_DATASET: {
        const ex_dataset_vtable *v = &p->vtable_copy.dataset;
        const slot_req req[] = {{"open", (const void *)v->open},
                                {"close", (const void *)v->close},
                                {"length", (const void *)v->length},
                                {"get", (const void *)v->get}};
        n = missing_slots(req, sizeof req / sizeof req[0], missing, sizeof missing);
        break;
    }
    case EX_PLUGIN_PEFT: {
        const ex_peft_vtable *v = &p->vtable_copy.peft;
        const slot_req req[] = {{"create", (const void *)v->create},
                                {"destroy", (const void *)v->destroy},
                                {"apply", (const void *)v->apply}};
        n = missing_slots(req, sizeof req / sizeof req[0], missing, sizeof missing);
        break;
    }
    case EX_PLUGIN_OBJECTIVE: {
        const ex_objective_vtable *v = &p->vtable_copy.objective;
        const slot_req req[] = {{"create", (const void *)v->create},
                                {"destroy", (const void *)v->destroy},
                                {"views", (const void *)v->views},
                                {"backbone_shape", (const void *)v->backbone_shape},
                                {"step", (const void *)v->step}};
        n = missing_slots(req, sizeof req / sizeof req[0], missing, sizeof missing);
        break;
    }
    case EX_PLUGIN_BACKBONE: {
        const ex_backbone_vtable *v = &p->vtable_copy.backbone;
        const slot_req req[] = {{"create", (const void *)v->create},   {"destroy", (const void *)v->destroy},
                                {"info", (const void *)v->info},       {"plan", (const void *)v->plan},
                                {"ready", (const void *)v->ready},     {"load", (const void *)v->load},
                                {"forward", (const void *)v->forward}, {"backward", (const void *)v->backward},
                                {"site", (const void *)v->site}};
        n = missing_slots(req, sizeof req / sizeof req[0], missing, sizeof missing);
        break;
    }
    default:
        EX_FAIL(err, EX_E_PLUGIN,
                "%s: plugin '%s' is of kind '%s', which has no interface in this core (ABI %d.%d) yet.", path,
                d->name, ex_plugin_kind_name(d->kind), EX_ABI_MAJOR, EX_ABI_MINOR);
    }
    EX_ENSURE(n == 0, err, EX_E_PLUGIN, "%s: %s plugin '%s' leaves mandatory slot%s empty: %s.", path,
              ex_plugin_kind_name(d->kind), d->name, n > 1 ? "s" : "", missing);
    return EX_OK;
}

static size_t kind_vtable_size(ex_plugin_kind k) {
    switch (k) {
    case EX_PLUGIN_BACKEND: return sizeof(ex_backend_vtable);
    case EX_PLUGIN_DATASET: return sizeof(ex_dataset_vtable);
    case EX_PLUGIN_BACKBONE: return sizeof(ex_backbone_vtable);
    case EX_PLUGIN_PEFT: return sizeof(ex_peft_vtable);
    case EX_PLUGIN_OBJECTIVE: return sizeof(ex_objective_vtable);
    default: return 0;
    }
}

ex_status ex_plugin_accept(const ex_plugin_desc *desc, const char *path, ex_plugin *out, ex_err *err) {
    memset(out, 0, sizeof *out);
    EX_ENSURE(desc, err, EX_E_PLUGIN, "%s: %s() returned NULL instead of a descriptor.", path, EX_PLUGIN_ENTRY_NAME);
    EX_ENSURE(desc->struct_size >= EX_DESC_MIN_SIZE, err, EX_E_PLUGIN,
              "%s: descriptor struct_size %u is smaller than the %zu bytes of ABI 1.0; the plugin is corrupt or "
              "was built for another program.",
              path, desc->struct_size, (size_t)EX_DESC_MIN_SIZE);
    if (desc->abi_major != EX_ABI_MAJOR) {
        ex_err_set(err, EX_E_PLUGIN, __FILE__, __LINE__,
                   "%s: plugin ABI major version %u, but this explora speaks major %d.", path, desc->abi_major,
                   EX_ABI_MAJOR);
        ex_err_hint(err, "rebuild the plugin against this explora's headers (explora %s).", EXPLORA_VERSION);
        return EX_E_PLUGIN;
    }
    if (desc->abi_minor > EX_ABI_MINOR) {
        ex_err_set(err, EX_E_PLUGIN, __FILE__, __LINE__,
                   "%s: plugin needs ABI %u.%u, newer than this explora's %d.%d.", path, desc->abi_major,
                   desc->abi_minor, EX_ABI_MAJOR, EX_ABI_MINOR);
        ex_err_hint(err, "upgrade explora, or rebuild the plugin against this explora's headers.");
        return EX_E_PLUGIN;
    }
    /* Copy what both sides know; fields the plugin predates stay zero. */
    size_t n = desc->struct_size < sizeof *desc ? desc->struct_size : sizeof *desc;
    memcpy(&out->desc, desc, n);
    const ex_plugin_desc *d = &out->desc;
    EX_ENSURE(d->kind >= EX_PLUGIN_BACKEND && d->kind <= EX_PLUGIN_DATASET, err, EX_E_PLUGIN,
              "%s: unknown plugin kind %d.", path, (int)d->kind);
    EX_ENSURE(valid_plugin_name(d->name), err, EX_E_PLUGIN,
              "%s: plugin name '%s' is invalid (1-63 characters of a-z, 0-9, '_' and '-').", path,
              d->name ? d->name : "(null)");
    EX_ENSURE(d->version && d->version[0], err, EX_E_PLUGIN, "%s: plugin '%s' has no version string.", path, d->name);
    if (!d->description) out->desc.description = "";
    EX_ENSURE(d->vtable && d->vtable_size > 0, err, EX_E_PLUGIN, "%s: plugin '%s' has no vtable.", path, d->name);
    size_t known = kind_vtable_size(d->kind);
    size_t copy = d->vtable_size < known ? d->vtable_size : known;
    memcpy(out->vtable_copy.bytes, d->vtable, copy);
    out->vtable = out->vtable_copy.bytes;
    EX_CHECK(check_mandatory(d, out, path, err));
    EX_CHECK(check_keys(d, path, err));
    snprintf(out->path, sizeof out->path, "%s", path);
    return EX_OK;
}

/* --- registry ----------------------------------------------------------------------- */

ex_status ex_registry_new(ex_registry **out, ex_err *err) {
    *out = calloc(1, sizeof **out);
    EX_ENSURE(*out, err, EX_E_NOMEM, "out of memory creating the plugin registry");
    return EX_OK;
}

void ex_registry_free(ex_registry *r) {
    if (!r) return;
    for (int i = 0; i < r->ndirs; i++) free(r->dirs[i]);
    free(r->dirs);
    /* dlopen handles are deliberately never closed: GPU runtimes may still own threads. */
    for (int i = 0; i < r->nplugins; i++) free(r->plugins[i]);
    free(r->plugins);
    free(r->rejected);
    free(r);
}

static int grow(void **arr, int *cap, int need, size_t elem) {
    if (need <= *cap) return 1;
    int nc = *cap ? *cap * 2 : 8;
    while (nc < need) nc *= 2;
    void *n = realloc(*arr, (size_t)nc * elem);
    if (!n) return 0;
    *arr = n;
    *cap = nc;
    return 1;
}

ex_status ex_registry_add_dir(ex_registry *r, const char *dir, ex_err *err) {
    EX_ENSURE(dir && dir[0], err, EX_E_INVALID, "empty plugin directory name");
    for (int i = 0; i < r->ndirs; i++)
        if (strcmp(r->dirs[i], dir) == 0) return EX_OK;
    EX_ENSURE(grow((void **)&r->dirs, &r->capdirs, r->ndirs + 1, sizeof(char *)), err, EX_E_NOMEM, "out of memory");
    r->dirs[r->ndirs] = strdup(dir);
    EX_ENSURE(r->dirs[r->ndirs], err, EX_E_NOMEM, "out of memory");
    r->ndirs++;
    return EX_OK;
}

static ex_status add_exe_relative(ex_registry *r, const char *base_dir, ex_err *err) {
    char buf[4096];
    EX_CHECK(ex_registry_add_dir(r, base_dir, err));
    EX_CHECK(ex_path_join(base_dir, "plugins", buf, sizeof buf, err));
    return ex_registry_add_dir(r, buf, err);
}

ex_status ex_registry_add_default_dirs(ex_registry *r, ex_err *err) {
    const char *env = getenv("EXPLORA_PLUGIN_PATH");
    if (env && env[0]) {
        const char *p = env;
        while (*p) {
            const char *end = strchr(p, ':');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (len > 0) {
                char dir[4096];
                EX_ENSURE(len < sizeof dir, err, EX_E_RANGE, "EXPLORA_PLUGIN_PATH entry too long");
                memcpy(dir, p, len);
                dir[len] = '\0';
                EX_CHECK(ex_registry_add_dir(r, dir, err));
            }
            p += len;
            if (*p == ':') p++;
        }
    }
    EX_CHECK(ex_registry_add_dir(r, EXPLORA_INSTALL_PLUGIN_DIR, err));
    /* Relocated installs: <dir of libexplora>/explora/plugins. */
    Dl_info info;
    if (dladdr((void *)&ex_registry_add_default_dirs, &info) && info.dli_fname) {
        char libdir[4096], dir[4096];
        ex_path_dirname(info.dli_fname, libdir, sizeof libdir);
        if (ex_path_join(libdir, "explora/plugins", dir, sizeof dir, NULL) == EX_OK)
            EX_CHECK(ex_registry_add_dir(r, dir, err));
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char dir[4096];
        ex_path_dirname(exe, dir, sizeof dir);
        EX_CHECK(add_exe_relative(r, dir, err));
    }
    return EX_OK;
}

static ex_status add_rejection(ex_registry *r, const char *path, const char *reason) {
    if (!grow((void **)&r->rejected, &r->caprejected, r->nrejected + 1, sizeof(ex_plugin_rejection)))
        return EX_E_NOMEM;
    ex_plugin_rejection *rj = &r->rejected[r->nrejected++];
    snprintf(rj->path, sizeof rj->path, "%s", path);
    snprintf(rj->reason, sizeof rj->reason, "%s", reason);
    return EX_OK;
}

static const ex_plugin *find_loaded(const ex_registry *r, ex_plugin_kind kind, const char *name) {
    for (int i = 0; i < r->nplugins; i++)
        if (r->plugins[i]->desc.kind == kind && strcmp(r->plugins[i]->desc.name, name) == 0) return r->plugins[i];
    return NULL;
}

ex_status ex_registry_load_file(ex_registry *r, const char *path, const ex_plugin **out, ex_err *err) {
    if (out) *out = NULL;
    struct stat sb;
    EX_ENSURE(stat(path, &sb) == 0, err, EX_E_PLUGIN, "%s: cannot open plugin: %s.", path, strerror(errno));
    (void)dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        EX_FAIL(err, EX_E_PLUGIN, "%s: dlopen failed: %s.", path, e ? e : "(no dlerror text)");
    }
    (void)dlerror();
    void *sym = dlsym(h, EX_PLUGIN_ENTRY_NAME);
    const char *e = dlerror();
    if (!sym) {
        ex_err_set(err, EX_E_PLUGIN, __FILE__, __LINE__, "%s: symbol '%s' not found: %s.", path, EX_PLUGIN_ENTRY_NAME,
                   e ? e : "(no dlerror text)");
        ex_err_hint(err, "a plugin must export it with EX_PLUGIN_ENTRY (see explora/plugin.h).");
        return EX_E_PLUGIN;
    }
    ex_plugin_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry); /* object pointer -> function pointer without a pedantic warning */
    ex_plugin *p = malloc(sizeof *p);
    EX_ENSURE(p, err, EX_E_NOMEM, "out of memory loading %s", path);
    ex_status st = ex_plugin_accept(entry(), path, p, err);
    if (st != EX_OK) {
        free(p);
        return st;
    }
    p->handle = h;
    const ex_plugin *prev = find_loaded(r, p->desc.kind, p->desc.name);
    if (prev) {
        ex_err_set(err, EX_E_PLUGIN, __FILE__, __LINE__, "%s: %s plugin '%s' is shadowed by %s, found earlier.", path,
                   ex_plugin_kind_name(p->desc.kind), p->desc.name, prev->path);
        free(p);
        return EX_E_PLUGIN;
    }
    if (!grow((void **)&r->plugins, &r->capplugins, r->nplugins + 1, sizeof(ex_plugin *))) {
        free(p);
        EX_FAIL(err, EX_E_NOMEM, "out of memory");
    }
    r->plugins[r->nplugins++] = p;
    if (out) *out = p;
    return EX_OK;
}

static int is_candidate(const char *fname) {
    size_t n = strlen(fname), pre = strlen(EX_PLUGIN_FILE_PREFIX);
    return n > pre + 3 && strncmp(fname, EX_PLUGIN_FILE_PREFIX, pre) == 0 && strcmp(fname + n - 3, ".so") == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int already_seen(const ex_registry *r, const char *real) {
    char rp[PATH_MAX];
    for (int i = 0; i < r->nplugins; i++)
        if (realpath(r->plugins[i]->path, rp) && strcmp(rp, real) == 0) return 1;
    for (int i = 0; i < r->nrejected; i++)
        if (realpath(r->rejected[i].path, rp) && strcmp(rp, real) == 0) return 1;
    return 0;
}

ex_status ex_registry_scan(ex_registry *r, ex_err *err) {
    for (int d = 0; d < r->ndirs; d++) {
        DIR *dir = opendir(r->dirs[d]);
        if (!dir) continue; /* absent directories are normal (e.g. no install) */
        char **names = NULL;
        int n = 0, cap = 0;
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
            if (!is_candidate(de->d_name)) continue;
            if (!grow((void **)&names, &cap, n + 1, sizeof(char *))) break;
            names[n] = strdup(de->d_name);
            if (names[n]) n++;
        }
        closedir(dir);
        if (n > 1) qsort(names, (size_t)n, sizeof(char *), cmp_str);
        for (int i = 0; i < n; i++) {
            char path[4096], real[PATH_MAX];
            ex_err e;
            ex_err_clear(&e);
            if (ex_path_join(r->dirs[d], names[i], path, sizeof path, &e) == EX_OK &&
                !(realpath(path, real) && already_seen(r, real))) {
                if (ex_registry_load_file(r, path, NULL, &e) != EX_OK && add_rejection(r, path, e.msg) != EX_OK) {
                    for (int k = i; k < n; k++) free(names[k]);
                    free(names);
                    EX_FAIL(err, EX_E_NOMEM, "out of memory scanning plugins");
                }
            }
            free(names[i]);
        }
        free(names);
    }
    return EX_OK;
}

int ex_registry_count(const ex_registry *r) { return r->nplugins; }
const ex_plugin *ex_registry_at(const ex_registry *r, int i) { return (i >= 0 && i < r->nplugins) ? r->plugins[i] : NULL; }
int ex_registry_rejected_count(const ex_registry *r) { return r->nrejected; }
const ex_plugin_rejection *ex_registry_rejected_at(const ex_registry *r, int i) {
    return (i >= 0 && i < r->nrejected) ? &r->rejected[i] : NULL;
}
int ex_registry_dir_count(const ex_registry *r) { return r->ndirs; }
const char *ex_registry_dir_at(const ex_registry *r, int i) { return (i >= 0 && i < r->ndirs) ? r->dirs[i] : NULL; }

ex_status ex_registry_find(const ex_registry *r, ex_plugin_kind kind, const char *name, const ex_plugin **out,
                           ex_err *err) {
    *out = find_loaded(r, kind, name);
    if (*out) return EX_OK;
    char avail[1024] = "";
    size_t len = 0;
    int n = 0;
    for (int i = 0; i < r->nplugins && len < sizeof avail; i++)
        if (r->plugins[i]->desc.kind == kind)
            len += (size_t)snprintf(avail + len, sizeof avail - len, "%s%s", n++ ? ", " : "", r->plugins[i]->desc.name);
    ex_err_set(err, EX_E_PLUGIN, __FILE__, __LINE__, "no %s plugin named '%s'. Available %ss: %s.",
               ex_plugin_kind_name(kind), name, ex_plugin_kind_name(kind), n ? avail : "none");
    char fname[256];
    snprintf(fname, sizeof fname, "%s%s-%s.so", EX_PLUGIN_FILE_PREFIX, ex_plugin_kind_name(kind), name);
    for (int i = 0; i < r->nrejected; i++) {
        const char *base = strrchr(r->rejected[i].path, '/');
        base = base ? base + 1 : r->rejected[i].path;
        if (strcmp(base, fname) == 0) {
            size_t l = strlen(err ? err->msg : "");
            if (err) snprintf(err->msg + l, sizeof err->msg - l, " A file of that name was rejected: %s", r->rejected[i].reason);
            return EX_E_PLUGIN;
        }
    }
    char dirs[1024] = "";
    len = 0;
    for (int i = 0; i < r->ndirs && len < sizeof dirs; i++)
        len += (size_t)snprintf(dirs + len, sizeof dirs - len, "%s%s", i ? ":" : "", r->dirs[i]);
    ex_err_hint(err, "searched %s; add a directory with --plugin-path or EXPLORA_PLUGIN_PATH, and run "
                     "'explora plugins' to see what was found.", dirs[0] ? dirs : "(no directories)");
    return EX_E_PLUGIN;
}
