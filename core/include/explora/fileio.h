/*
 * explora/fileio.h — small file helpers shared by the core: atomic writes and
 * whole-file reads with clear errors.
 */
#ifndef EXPLORA_FILEIO_H
#define EXPLORA_FILEIO_H

#include <stddef.h>
#include <stdio.h>

#include "explora/export.h"
#include "explora/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An atomic writer: writes go to "<path>.tmp.<pid>"; commit fsyncs the file,
 * renames it over <path> and fsyncs the directory; abort removes it. */
typedef struct ex_atomic_file {
    FILE *fp;
    char path[4096];
    char tmp_path[4160];
} ex_atomic_file;

EX_API ex_status ex_atomic_open(ex_atomic_file *af, const char *path, ex_err *err);
EX_API ex_status ex_atomic_commit(ex_atomic_file *af, ex_err *err);
EX_API void ex_atomic_abort(ex_atomic_file *af);

/* Read a whole file into a NUL-terminated malloc'ed buffer (size excludes the NUL). */
EX_API ex_status ex_read_file(const char *path, char **data, size_t *size, ex_err *err);

/* Create a directory and its missing parents (mkdir -p); existing ones are fine. */
EX_API ex_status ex_mkdir_p(const char *path, ex_err *err);

/* Directory part of a path ("." if none) into out. */
EX_API void ex_path_dirname(const char *path, char *out, size_t cap);
/* Join dir and rel unless rel is absolute. EX_E_RANGE if it does not fit. */
EX_API ex_status ex_path_join(const char *dir, const char *rel, char *out, size_t cap, ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_FILEIO_H */
