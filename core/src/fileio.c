/*
 * core/src/fileio.c — atomic file writes, whole-file reads, path helpers (see explora/fileio.h).
 */
#include "explora/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

ex_status ex_atomic_open(ex_atomic_file *af, const char *path, ex_err *err) {
    memset(af, 0, sizeof *af);
    EX_ENSURE(strlen(path) < sizeof af->path, err, EX_E_RANGE, "path too long: '%.200s...'", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    snprintf(af->tmp_path, sizeof af->tmp_path, "%s.tmp.%ld", path, (long)getpid());
    af->fp = fopen(af->tmp_path, "wb");
    EX_ENSURE(af->fp, err, EX_E_IO, "cannot create '%s': %s.", af->tmp_path, strerror(errno));
    return EX_OK;
}

static void fsync_dir_of(const char *path) {
    char dir[4096];
    ex_path_dirname(path, dir, sizeof dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

ex_status ex_atomic_commit(ex_atomic_file *af, ex_err *err) {
    EX_ENSURE(af->fp, err, EX_E_INVALID, "atomic file '%s' is not open", af->path);
    int failed = 0, saved_errno = 0;
    if (fflush(af->fp) != 0 || ferror(af->fp)) failed = 1, saved_errno = errno;
    if (!failed && fsync(fileno(af->fp)) != 0) failed = 1, saved_errno = errno;
    if (fclose(af->fp) != 0 && !failed) failed = 1, saved_errno = errno;
    af->fp = NULL;
    if (failed) {
        unlink(af->tmp_path);
        EX_FAIL(err, EX_E_IO, "writing '%s' failed: %s; the previous file, if any, is unchanged.", af->path,
                strerror(saved_errno));
    }
    if (rename(af->tmp_path, af->path) != 0) {
        saved_errno = errno;
        unlink(af->tmp_path);
        EX_FAIL(err, EX_E_IO, "cannot rename '%s' to '%s': %s.", af->tmp_path, af->path, strerror(saved_errno));
    }
    fsync_dir_of(af->path);
    return EX_OK;
}

void ex_atomic_abort(ex_atomic_file *af) {
    if (af->fp) {
        fclose(af->fp);
        af->fp = NULL;
        unlink(af->tmp_path);
    }
}

ex_status ex_read_file(const char *path, char **data, size_t *size, ex_err *err) {
    *data = NULL;
    if (size) *size = 0;
    FILE *f = fopen(path, "rb");
    EX_ENSURE(f, err, EX_E_IO, "cannot open '%s': %s.", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        EX_FAIL(err, EX_E_NOMEM, "out of memory reading '%s'", path);
    }
    for (;;) {
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                EX_FAIL(err, EX_E_NOMEM, "out of memory reading '%s'", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        EX_FAIL(err, EX_E_IO, "error reading '%s'.", path);
    }
    buf[len] = '\0';
    *data = buf;
    if (size) *size = len;
    return EX_OK;
}

void ex_path_dirname(const char *path, char *out, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(out, cap, ".");
    } else if (slash == path) {
        snprintf(out, cap, "/");
    } else {
        snprintf(out, cap, "%.*s", (int)(slash - path), path);
    }
}

ex_status ex_path_join(const char *dir, const char *rel, char *out, size_t cap, ex_err *err) {
    int n;
    if (rel[0] == '/' || !dir || !dir[0])
        n = snprintf(out, cap, "%s", rel);
    else
        n = snprintf(out, cap, "%s/%s", dir, rel);
    EX_ENSURE(n >= 0 && (size_t)n < cap, err, EX_E_RANGE, "path too long: '%s/%s'", dir ? dir : "", rel);
    return EX_OK;
}

ex_status ex_mkdir_p(const char *path, ex_err *err) {
    char buf[4096];
    EX_ENSURE(strlen(path) < sizeof buf, err, EX_E_RANGE, "directory path '%.80s...' is longer than %zu bytes", path,
              sizeof buf - 1);
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            EX_FAIL(err, EX_E_IO, "cannot create directory '%s': %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        EX_FAIL(err, EX_E_IO, "cannot create directory '%s': %s", buf, strerror(errno));
    return EX_OK;
}
