/*
 * tests/support/test_support.c — see test_support.h.
 */
#include "test_support.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "explora/config.h"

const char *ext_env(const char *name) {
    const char *v = getenv(name);
    if (!v || !v[0]) fail_msg("environment variable %s is not set (run the test through ctest)", name);
    return v;
}

void ext_tmp_path(char *out, size_t cap, const char *fname) {
    const char *dir = ext_env("EXPLORA_TEST_TMPDIR");
    char exe[512] = "test";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = '\0';
    const char *base = strrchr(exe, '/');
    base = base ? base + 1 : exe;
    snprintf(out, cap, "%s/%s-%ld-%s", dir, base, (long)getpid(), fname);
}

void ext_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s: %s", path, strerror(errno));
    if (len && fwrite(data, 1, len, f) != len) fail_msg("short write to %s", path);
    fclose(f);
}

void ext_backend_open(const char *name, const char *settings, ex_backend *be, ex_registry **reg) {
    ex_err err;
    ex_err_clear(&err);
    EXT_OK(ex_registry_new(reg, &err), &err);
    EXT_OK(ex_registry_add_dir(*reg, ext_env("EXPLORA_TEST_PLUGIN_DIR"), &err), &err);
    EXT_OK(ex_registry_scan(*reg, &err), &err);
    const ex_plugin *p = NULL;
    EXT_OK(ex_registry_find(*reg, EX_PLUGIN_BACKEND, name, &p, &err), &err);
    char text[1024];
    snprintf(text, sizeof text, "[backend]\nname = %s\n%s", name, settings ? settings : "");
    ex_config *cfg = NULL;
    EXT_OK(ex_config_load_string(&cfg, text, "test-backend.ini", &err), &err);
    ex_cfg_section sec = {cfg, "backend", p->desc.keys};
    EXT_OK(ex_backend_create(be, p, &sec, &err), &err);
    ex_config_free(cfg);
}

void ext_backend_close(ex_backend *be, ex_registry *reg) {
    ex_backend_destroy(be);
    ex_registry_free(reg);
}

void ext_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi) {
    ex_rng r = ex_rng_seed(seed, EX_RNG_TEST);
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * ex_rng_next_uniform(&r);
}

void ext_assert_close(const float *a, const float *b, size_t n, double atol, double rtol, const char *what) {
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= atol + rtol * fabs((double)b[i]))) {
            fail_msg("%s: element %zu differs: got %.9g, expected %.9g (|diff| %.3g > atol %.1g + rtol %.1g*|ref|)",
                     what, i, (double)a[i], (double)b[i], d, atol, rtol);
        }
    }
}
