/*
 * explora/plugin.h — the plugin ABI, and the registry that finds and loads plugins.
 *
 * A plugin is a shared object (CMake MODULE) linked against libexplora that
 * exports exactly one symbol, EX_PLUGIN_ENTRY_NAME, returning a pointer to a
 * constant ex_plugin_desc:
 *
 *   static const ex_backend_vtable vt = { ... };
 *   static const ex_plugin_desc desc = EX_PLUGIN_DESC(EX_PLUGIN_BACKEND, "cpu", "0.1.0",
 *                                                     "fp32 on OpenBLAS + OpenMP", keys, &vt);
 *   EX_PLUGIN_ENTRY { return &desc; }
 *
 * Rules the loader enforces:
 *   - abi_major must equal EX_ABI_MAJOR; abi_minor must not exceed EX_ABI_MINOR
 *     (a plugin built against a newer core may rely on slots this core lacks);
 *   - struct_size >= the size of the first ABI version's descriptor;
 *   - the vtable is copied, at most vtable_size bytes, into a zeroed struct of
 *     the core's size, so slots an older plugin does not know read as NULL;
 *   - every mandatory slot of the kind is non-NULL; NULL optional slots mean
 *     "not supported";
 *   - names are unique per kind: the first found in search order wins, later
 *     ones are listed as shadowed.
 *
 * Search order: directories given in the config ([plugins] path) or on the
 * command line (--plugin-path), then EXPLORA_PLUGIN_PATH (':'-separated), then
 * the install directory, then the directory of the running executable (and its
 * plugins/ and backends/ subfolders, which is how a build tree works). Files
 * named "explora-*.so" are candidates. Handles are never dlclosed (GPU
 * runtimes may still own threads at exit).
 */
#ifndef EXPLORA_PLUGIN_H
#define EXPLORA_PLUGIN_H

#include <stdint.h>
#include <stdio.h>

#include "explora/backbone.h"
#include "explora/backend.h"
#include "explora/config.h"
#include "explora/export.h"
#include "explora/objective.h"
#include "explora/peft.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EX_ABI_MAJOR 4
#define EX_ABI_MINOR 3

#define EX_PLUGIN_ENTRY_NAME "explora_plugin_entry"
#define EX_PLUGIN_FILE_PREFIX "explora-"

typedef enum ex_plugin_kind {
    EX_PLUGIN_BACKEND = 1,
    EX_PLUGIN_BACKBONE = 2,
    EX_PLUGIN_PEFT = 3,
    EX_PLUGIN_OBJECTIVE = 4,
    EX_PLUGIN_DATASET = 5
} ex_plugin_kind;

EX_API const char *ex_plugin_kind_name(ex_plugin_kind k);
/* "backend", "dataset" ... -> kind; EX_E_INVALID if unknown. */
EX_API ex_status ex_plugin_kind_from_name(const char *name, ex_plugin_kind *out);

/* The descriptor. Fields are only ever appended (struct_size tells how many a plugin knows). */
typedef struct ex_plugin_desc {
    uint32_t struct_size;       /* sizeof(ex_plugin_desc) when the plugin was built */
    uint16_t abi_major;
    uint16_t abi_minor;
    ex_plugin_kind kind;
    const char *name;           /* unique per kind, e.g. "cpu", "lora", "fmow" */
    const char *version;        /* the plugin's own version, e.g. "0.1.0" */
    const char *description;    /* one line */
    const ex_key_spec *keys;    /* keys its config section accepts (EX_KEY_END-terminated), or NULL */
    const void *vtable;         /* the kind's vtable, e.g. const ex_backend_vtable * */
    uint32_t vtable_size;       /* sizeof that vtable when the plugin was built */
} ex_plugin_desc;

#define EX_PLUGIN_DESC(kind, name, version, description, keys, vtable_ptr)                       \
    {(uint32_t)sizeof(ex_plugin_desc), EX_ABI_MAJOR, EX_ABI_MINOR, (kind), (name), (version),    \
     (description), (keys), (const void *)(vtable_ptr), (uint32_t)sizeof(*(vtable_ptr))}

#define EX_PLUGIN_ENTRY EX_PLUGIN_EXPORT const ex_plugin_desc *explora_plugin_entry(void)
typedef const ex_plugin_desc *(*ex_plugin_entry_fn)(void);

/* ------------------------------------------------------------------------------
 * Dataset kind. A dataset yields decoded samples by index; decoding happens on
 * the caller's (loader's) thread, so `get` must be thread-safe for distinct
 * output samples.
 * ------------------------------------------------------------------------------ */
typedef struct ex_sample {
    int width, height, channels; /* pixels are (height, width, channels), row-major */
    float *pixels;               /* values in [0, 1] (after decode, before normalisation); owned */
    int64_t label;               /* class index, or -1 when unlabeled */
    int64_t group;               /* domain/group id (WILDS), or -1 */
    char id[256];                /* stable image id (path or key) */
} ex_sample;

/* Free the pixels of a sample (allocated by a dataset with malloc). */
EX_API void ex_sample_clear(ex_sample *s);

typedef struct ex_dataset_vtable {
    /* Open the dataset described by the config section; mandatory. */
    ex_status (*open)(const ex_cfg_section *cfg, void **self, ex_err *err);
    void (*close)(void *self);                                              /* mandatory */
    int64_t (*length)(void *self);                                          /* mandatory */
    /* Decode sample `index` into *out (fields overwritten, pixels malloc'ed); mandatory. */
    ex_status (*get)(void *self, int64_t index, ex_sample *out, ex_err *err);
    int64_t (*num_classes)(void *self);                                     /* [opt] */
    const char *(*class_name)(void *self, int64_t label);                   /* [opt] */
} ex_dataset_vtable;

/* ------------------------------------------------------------------------------
 * Registry: the one piece of global-like state, owned by the caller (the CLI
 * makes one per process).
 * ------------------------------------------------------------------------------ */
typedef struct ex_registry ex_registry;

/* A loaded plugin: the validated descriptor, its vtable copied into a zeroed
 * struct of the core's size, and where it came from. */
typedef struct ex_plugin {
    ex_plugin_desc desc;      /* copy, at most struct_size bytes known to the core */
    const void *vtable;       /* points into `vtable_copy` */
    char path[4096];
    void *handle;             /* dlopen handle, never closed */
    union {                   /* the copied vtable, typed per kind */
        unsigned char bytes[1024];
        ex_backend_vtable backend;
        ex_backbone_vtable backbone;
        ex_peft_vtable peft;
        ex_objective_vtable objective;
        ex_dataset_vtable dataset;
    } vtable_copy;
} ex_plugin;

/* A candidate that was rejected: file and reason. */
typedef struct ex_plugin_rejection {
    char path[4096];
    char reason[EX_ERR_MSG_MAX];
} ex_plugin_rejection;

EX_API ex_status ex_registry_new(ex_registry **out, ex_err *err);
EX_API void ex_registry_free(ex_registry *r);

/* Add a search directory (kept in the order added; duplicates ignored). */
EX_API ex_status ex_registry_add_dir(ex_registry *r, const char *dir, ex_err *err);
/* Add the default directories after those added so far: EXPLORA_PLUGIN_PATH, the
 * install directory, and the executable's directory with its plugins/ and backends/. */
EX_API ex_status ex_registry_add_default_dirs(ex_registry *r, ex_err *err);
/* Open every candidate in every search directory. Rejections are recorded, not fatal. */
EX_API ex_status ex_registry_scan(ex_registry *r, ex_err *err);
/* Load one file (outside the search path, e.g. a test plugin). */
EX_API ex_status ex_registry_load_file(ex_registry *r, const char *path, const ex_plugin **out, ex_err *err);

EX_API int ex_registry_count(const ex_registry *r);
EX_API const ex_plugin *ex_registry_at(const ex_registry *r, int i);
EX_API int ex_registry_rejected_count(const ex_registry *r);
EX_API const ex_plugin_rejection *ex_registry_rejected_at(const ex_registry *r, int i);
EX_API int ex_registry_dir_count(const ex_registry *r);
EX_API const char *ex_registry_dir_at(const ex_registry *r, int i);

/* Find a loaded plugin by kind and name; the error lists what is available and why
 * a file of that name was rejected, if one was. */
EX_API ex_status ex_registry_find(const ex_registry *r, ex_plugin_kind kind, const char *name,
                                  const ex_plugin **out, ex_err *err);

/* Validate a descriptor as the loader does (exposed for tests). `path` is used in messages. */
EX_API ex_status ex_plugin_accept(const ex_plugin_desc *desc, const char *path, ex_plugin *out, ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_PLUGIN_H */
