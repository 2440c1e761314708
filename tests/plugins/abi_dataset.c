/*
 * tests/plugins/abi_dataset.c — a small synthetic dataset plugin, compiled
 * several times with different ABI_VARIANT values to exercise the loader:
 *
 *   ABI_GOOD        a correct plugin ("abi-good"): N samples of a C x 4 x 4 ramp image
 *   ABI_MAJOR       declares ABI major + 1                      -> rejected
 *   ABI_MINOR       declares ABI minor + 1                      -> rejected
 *   ABI_NOSLOT      leaves the mandatory `get` slot NULL         -> rejected
 *   ABI_NOENTRY     exports no entry symbol                      -> rejected
 *   ABI_OLD         built against a smaller descriptor/vtable    -> accepted, optional slots NULL
 *   ABI_UNDEFINED   references a symbol nobody defines           -> dlopen (RTLD_NOW) fails
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "explora/plugin.h"

#define ABI_GOOD 1
#define ABI_MAJOR 2
#define ABI_MINOR 3
#define ABI_NOSLOT 4
#define ABI_NOENTRY 5
#define ABI_OLD 6
#define ABI_UNDEFINED 7

#ifndef ABI_VARIANT
#error "define ABI_VARIANT"
#endif

typedef struct synth {
    int64_t count;
    int64_t channels;
    int64_t classes;
    int64_t poison;
    int64_t stall;
    int64_t stall_open_rank;
} synth;

static const ex_key_spec synth_keys[] = {
    {"count", EX_KEY_INT, "10", 1, 1000000, NULL, "number of samples"},
    {"channels", EX_KEY_INT, "3", 1, 16, NULL, "channels per image"},
    {"classes", EX_KEY_INT, "2", 1, 1000, NULL, "labels cycle through 0..classes-1"},
    {"poison", EX_KEY_INT, "-1", -1, 1000000, NULL, "index of a sample whose first pixel is NaN (trainer tests)"},
    {"stall", EX_KEY_INT, "-1", -1, 1000000, NULL,
     "index of a sample whose read never returns (an hour's sleep: the trainer's stall watchdog tests)"},
    {"stall_open_rank", EX_KEY_INT, "-1", -1, 1000000, NULL,
     "the MPI rank (Open MPI's OMPI_COMM_WORLD_RANK) whose open never returns (the stall watchdog tests)"},
    EX_KEY_END,
};

#if ABI_VARIANT == ABI_UNDEFINED
extern int explora_test_symbol_that_does_not_exist(void);
#endif

static ex_status synth_open(const ex_cfg_section *cfg, void **self, ex_err *err) {
    synth *s = calloc(1, sizeof *s);
    EX_ENSURE(s, err, EX_E_NOMEM, "out of memory");
    ex_status st;
    if ((st = ex_cfg_int(cfg, "count", &s->count, err)) != EX_OK ||
        (st = ex_cfg_int(cfg, "channels", &s->channels, err)) != EX_OK ||
        (st = ex_cfg_int(cfg, "classes", &s->classes, err)) != EX_OK ||
        (st = ex_cfg_int(cfg, "poison", &s->poison, err)) != EX_OK ||
        (st = ex_cfg_int(cfg, "stall", &s->stall, err)) != EX_OK ||
        (st = ex_cfg_int(cfg, "stall_open_rank", &s->stall_open_rank, err)) != EX_OK) {
        free(s);
        return st;
    }
    const char *rank = getenv("OMPI_COMM_WORLD_RANK");
    if (s->stall_open_rank >= 0 && rank && atoll(rank) == s->stall_open_rank) sleep(3600); /* a data source that hangs */
#if ABI_VARIANT == ABI_UNDEFINED
    s->count += explora_test_symbol_that_does_not_exist();
#endif
    *self = s;
    return EX_OK;
}

static void synth_close(void *self) { free(self); }

static int64_t synth_length(void *self) { return ((synth *)self)->count; }

__attribute__((unused)) static ex_status synth_get(void *self, int64_t index, ex_sample *out, ex_err *err) {
    synth *s = self;
    EX_ENSURE(index >= 0 && index < s->count, err, EX_E_RANGE, "index %lld outside [0, %lld)", (long long)index,
              (long long)s->count);
    if (index == s->stall) sleep(3600); /* a data source that hangs */
    memset(out, 0, sizeof *out);
    out->width = 4;
    out->height = 4;
    out->channels = (int)s->channels;
    out->pixels = malloc(sizeof(float) * 16 * (size_t)s->channels);
    EX_ENSURE(out->pixels, err, EX_E_NOMEM, "out of memory");
    for (int i = 0; i < 16 * out->channels; i++) out->pixels[i] = (float)((index + i) % 17) / 16.0f;
    if (index == s->poison) out->pixels[0] = __builtin_nanf("");
    out->label = index % s->classes;
    out->group = -1;
    snprintf(out->id, sizeof out->id, "synthetic-%lld", (long long)index);
    return EX_OK;
}

__attribute__((unused)) static int64_t synth_num_classes(void *self) { return ((synth *)self)->classes; }

#if ABI_VARIANT == ABI_OLD
/* What an older plugin looked like: a descriptor without the last field and a
 * vtable with only the four mandatory slots. */
typedef struct old_desc {
    uint32_t struct_size;
    uint16_t abi_major, abi_minor;
    ex_plugin_kind kind;
    const char *name, *version, *description;
    const ex_key_spec *keys;
    const void *vtable;
    uint32_t vtable_size;
} old_desc;
typedef struct old_vtable {
    ex_status (*open)(const ex_cfg_section *, void **, ex_err *);
    void (*close)(void *);
    int64_t (*length)(void *);
    ex_status (*get)(void *, int64_t, ex_sample *, ex_err *);
} old_vtable;
static const old_vtable vt = {synth_open, synth_close, synth_length, synth_get};
static const old_desc desc = {sizeof(old_desc), EX_ABI_MAJOR, 0, EX_PLUGIN_DATASET, "abi-old", "0.0.1",
                              "an older plugin", synth_keys, &vt, sizeof vt};
EX_PLUGIN_ENTRY { return (const ex_plugin_desc *)&desc; }
#else
static const ex_dataset_vtable vt = {
    /* .open        = */ synth_open,
    /* .close       = */ synth_close,
    /* .length      = */ synth_length,
#if ABI_VARIANT == ABI_NOSLOT
    /* .get         = */ NULL,
#else
    /* .get         = */ synth_get,
#endif
    /* .num_classes = */ synth_num_classes,
    /* .class_name  = */ NULL,
};

#if ABI_VARIANT == ABI_GOOD
#define NAME "abi-good"
#elif ABI_VARIANT == ABI_MAJOR
#define NAME "abi-major"
#elif ABI_VARIANT == ABI_MINOR
#define NAME "abi-minor"
#elif ABI_VARIANT == ABI_NOSLOT
#define NAME "abi-noslot"
#elif ABI_VARIANT == ABI_NOENTRY
#define NAME "abi-noentry"
#else
#define NAME "abi-undefined"
#endif

static ex_plugin_desc make_desc(void) {
    ex_plugin_desc d = EX_PLUGIN_DESC(EX_PLUGIN_DATASET, NAME, "1.2.3", "synthetic ramps for the loader tests",
                                      synth_keys, &vt);
#if ABI_VARIANT == ABI_MAJOR
    d.abi_major = EX_ABI_MAJOR + 1;
#elif ABI_VARIANT == ABI_MINOR
    d.abi_minor = EX_ABI_MINOR + 1;
#endif
    return d;
}

#if ABI_VARIANT == ABI_NOENTRY
EX_PLUGIN_EXPORT const ex_plugin_desc *explora_plugin_entry_misspelled(void) {
    static ex_plugin_desc d;
    d = make_desc();
    return &d;
}
#else
EX_PLUGIN_ENTRY {
    static ex_plugin_desc d;
    d = make_desc();
    return &d;
}
#endif
#endif
