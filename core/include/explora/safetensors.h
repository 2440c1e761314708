/*
 * explora/safetensors.h — reading and writing .safetensors files.
 *
 * Format: an 8-byte little-endian header length N, N bytes of JSON mapping each
 * tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
 * relative to the end of the header) plus an optional "__metadata__" object of
 * string values, then the tensor bytes.
 *
 * The reader mmaps the file and checks everything before handing out a byte:
 * header length within the file, valid JSON (cJSON), known dtypes, shapes whose
 * element count times dtype size equals end - begin, offsets inside the data
 * area, no two tensors overlapping, no duplicate names. Any violation is
 * EX_E_FORMAT naming the file and the tensor.
 *
 * The writer collects tensors (pointers to host memory that must stay valid
 * until finish), then writes header (padded with spaces to a multiple of 8
 * bytes) and data to "<path>.tmp.<pid>", fsyncs, and renames it over <path>:
 * a crash leaves either the old file or the new one, never half of one.
 */
#ifndef EXPLORA_SAFETENSORS_H
#define EXPLORA_SAFETENSORS_H

#include <stdint.h>

#include "explora/export.h"
#include "explora/status.h"
#include "explora/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ex_st_entry {
    char name[EX_NAME_MAX];
    ex_dtype dtype;
    int ndim;
    int64_t shape[EX_MAX_DIMS];
    uint64_t begin, end; /* byte offsets relative to the data area */
} ex_st_entry;

typedef struct ex_st_file ex_st_file;

EX_API ex_status ex_st_open(ex_st_file **out, const char *path, ex_err *err);
EX_API void ex_st_close(ex_st_file *f);

EX_API int ex_st_count(const ex_st_file *f);
EX_API const ex_st_entry *ex_st_at(const ex_st_file *f, int i);     /* in header order */
EX_API const ex_st_entry *ex_st_find(const ex_st_file *f, const char *name); /* NULL if absent */
EX_API const char *ex_st_path(const ex_st_file *f);
/* A "__metadata__" value, or NULL. */
EX_API const char *ex_st_metadata(const ex_st_file *f, const char *key);
EX_API int ex_st_metadata_count(const ex_st_file *f);
EX_API const char *ex_st_metadata_key_at(const ex_st_file *f, int i);
/* The raw, validated bytes of a tensor (end - begin of them), inside the mapping. */
EX_API const void *ex_st_data(const ex_st_file *f, const ex_st_entry *e);
/* Convert a tensor to fp32 into dst; `n` must equal its element count (else EX_E_SHAPE).
 * Accepts F32, F16, BF16, F64 and integer dtypes. */
EX_API ex_status ex_st_read_f32(const ex_st_file *f, const ex_st_entry *e, float *dst, int64_t n, ex_err *err);

typedef struct ex_st_writer ex_st_writer;

EX_API ex_status ex_st_writer_new(ex_st_writer **out, ex_err *err);
/* Add a tensor; `data` holds numel * dtype size bytes and must outlive finish. Duplicate names are EX_E_INVALID. */
EX_API ex_status ex_st_writer_add(ex_st_writer *w, const char *name, ex_dtype dtype, int ndim,
                                  const int64_t *shape, const void *data, ex_err *err);
EX_API ex_status ex_st_writer_metadata(ex_st_writer *w, const char *key, const char *value, ex_err *err);
/* Write atomically to `path` (temporary file, fsync, rename, fsync of the directory). */
EX_API ex_status ex_st_writer_finish(ex_st_writer *w, const char *path, ex_err *err);
EX_API void ex_st_writer_free(ex_st_writer *w);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_SAFETENSORS_H */
