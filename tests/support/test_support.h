/*
 * tests/support/test_support.h — helpers shared by the CMocka test executables.
 */
#ifndef EXPLORA_TEST_SUPPORT_H
#define EXPLORA_TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the four includes above */
#include <cmocka.h>

#include "explora/backend.h"
#include "explora/plugin.h"
#include "explora/rng.h"
#include "explora/status.h"

/* The value of a required environment variable (set by ctest); fails the test if absent. */
const char *ext_env(const char *name);

/* "<EXPLORA_TEST_TMPDIR>/<test binary name>-<pid>-<fname>" into out. */
void ext_tmp_path(char *out, size_t cap, const char *fname);

/* Write `len` bytes to a file (fails the test on error). */
void ext_write_file(const char *path, const void *data, size_t len);

/* Load the backend plugin `name` from EXPLORA_TEST_PLUGIN_DIR and start it.
 * `settings` is INI text for the [backend] section body (e.g. "threads = 1\n") or NULL.
 * The registry is kept alive in *reg; free it with ext_backend_close. */
void ext_backend_open(const char *name, const char *settings, ex_backend *be, ex_registry **reg);
void ext_backend_close(ex_backend *be, ex_registry *reg);

/* Deterministic test data: uniform in [lo, hi). */
void ext_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi);

/* Assert |a - b| <= atol + rtol * |b| elementwise; on failure print the first bad index and values. */
void ext_assert_close(const float *a, const float *b, size_t n, double atol, double rtol, const char *what);

/* Assert a status is EX_OK, printing the error message if not. */
#define EXT_OK(expr, errp)                                                            \
    do {                                                                              \
        const ex_err *ext__e = (errp);                                                \
        ex_status ext__s = (expr);                                                    \
        if (ext__s != EX_OK) fail_msg("%s failed: %s", #expr, ext__e ? ext__e->msg : ""); \
    } while (0)

#endif
