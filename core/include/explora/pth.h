/*
 * explora/pth.h — reading PyTorch .pth checkpoints (torch.save's zip format, torch >= 1.6) without Python.
 *
 * Format (spec E2): a ZIP archive whose members are all stored (no compression) under one top folder
 * "<prefix>/": "<prefix>/data.pkl" is a pickle (protocol 2) describing the saved object, and
 * "<prefix>/data/<key>" holds the raw little-endian bytes of one storage. Each tensor is a call
 * _rebuild_tensor_v2(storage, storage_offset, size, stride, ...) in the pickle, where the storage is a
 * persistent id ('storage', <torch XStorage>, key, location, numel). Several tensors may share a storage
 * (views); offset and strides are in elements.
 *
 * ex_pth_open mmaps the file read-only, parses the zip directory (end record, ZIP64 end records, central
 * directory, every member's local header), runs a small, bounded pickle machine over data.pkl and checks
 * every listed tensor before returning: its storage member exists and is stored, its storage class maps
 * to a supported dtype, its sizes and strides are non-negative, ndim <= EX_MAX_DIMS, and every element it
 * can reach (offset + sum (size_d - 1) * stride_d) lies inside the storage's bytes. Malformed or hostile
 * input is EX_E_FORMAT (EX_E_IO when the file cannot be opened or mapped, EX_E_UNSUPPORTED for a storage
 * class outside the list below or a big-endian file); messages name the file, and for tensor problems the
 * tensor. Nothing in the file is trusted: all offsets, sizes and counts are range- and overflow-checked,
 * and the pickle machine bounds its stack, marks, memo, string lengths and the dict nesting it follows.
 * Member CRCs are not verified (that would read the whole multi-GB file at open).
 *
 * Which tensors are listed, and their names:
 *   - The top-level object must be a dict (a state dict, or a checkpoint dict such as {"model": sd}).
 *   - Nested dicts (dict, OrderedDict and dict-like objects filled by SETITEMS, e.g. defaultdict) are
 *     flattened with '.': {"model": {"blocks.0.attn.qkv.weight": T}} -> "model.blocks.0.attn.qkv.weight",
 *     {"teacher": {"backbone.cls_token": T}} -> "teacher.backbone.cls_token",
 *     {"optimizer": {"state": {0: {"exp_avg": T}}}} -> "optimizer.state.0.exp_avg".
 *   - Keys must be str or int (written in decimal); entries with other keys (bool, None, tuples ...) are
 *     skipped.
 *   - Values that are tensors (_rebuild_tensor_v2, _rebuild_tensor, nn.Parameter via _rebuild_parameter,
 *     tensor subclasses via _rebuild_from_type_v2) are listed; nested dicts are followed (at most
 *     EX_PTH_MAX_DEPTH deep); everything else is skipped: ints, floats, strings, None, argparse.Namespace
 *     and other objects, and lists/tuples even when they contain tensors.
 *   - Entries are listed in pickle (insertion) order. A flattened name longer than EX_NAME_MAX - 1 bytes,
 *     or one that occurs twice (e.g. {"a": {"b": T}, "a.b": U}), is EX_E_FORMAT.
 *
 * Storage classes and their dtypes: FloatStorage F32, HalfStorage F16, BFloat16Storage BF16,
 * DoubleStorage F64, LongStorage I64, IntStorage I32, ShortStorage I16, CharStorage I8, ByteStorage U8,
 * BoolStorage BOOL.
 *
 * The ex_st_entry of a listed tensor carries name, dtype, ndim and shape; begin/end are the absolute byte
 * offsets in the file of its whole storage (the "<prefix>/data/<key>" member's data), not of the tensor,
 * which may be a strided view into it. Use ex_pth_read_f32 (or ex_pth_layout) rather than these bytes.
 *
 * Thread safety: an open file is read-only; concurrent ex_pth_read_f32 calls on it are safe.
 */
#ifndef EXPLORA_PTH_H
#define EXPLORA_PTH_H

#include <stdint.h>

#include "explora/export.h"
#include "explora/safetensors.h"
#include "explora/status.h"
#include "explora/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How deep nested dicts are followed below the top-level dict (deeper is EX_E_FORMAT). */
#define EX_PTH_MAX_DEPTH 32
/* Most tensors listed from one file (a data.pkl of L bytes may list at most 16 L + 4096). */
#define EX_PTH_MAX_TENSORS (1 << 20)

typedef struct ex_pth_file ex_pth_file;

/* mmap `path`, parse the zip directory and data.pkl, check every listed tensor. *out is NULL on error. */
EX_API ex_status ex_pth_open(ex_pth_file **out, const char *path, ex_err *err);
/* Unmap and free; NULL is a no-op. Entries handed out become invalid. */
EX_API void ex_pth_close(ex_pth_file *f);

EX_API int ex_pth_count(const ex_pth_file *f);
/* The i-th listed tensor (pickle order), NULL if i is out of range. */
EX_API const ex_st_entry *ex_pth_at(const ex_pth_file *f, int i);
/* By flattened name; NULL if absent. */
EX_API const ex_st_entry *ex_pth_find(const ex_pth_file *f, const char *name);
EX_API const char *ex_pth_path(const ex_pth_file *f);

/* Convert a listed tensor to fp32 in row-major order into dst, honouring its storage offset and strides
 * (views, transposes, slices, expands). `n` must equal its element count (else EX_E_SHAPE); `e` must come
 * from this file (else EX_E_INVALID). Integers and bools convert like ex_st_read_f32 (bool -> 0/1). */
EX_API ex_status ex_pth_read_f32(const ex_pth_file *f, const ex_st_entry *e, float *dst, int64_t n, ex_err *err);

/* Where a listed tensor lives in its storage: storage offset and strides in elements (ndim of them), the
 * storage key (member "<prefix>/data/<key>"; tensors with equal keys share bytes) and the storage's element
 * count. Any output pointer may be NULL. EX_E_INVALID if `e` is not an entry of this file. */
EX_API ex_status ex_pth_layout(const ex_pth_file *f, const ex_st_entry *e, int64_t *storage_offset,
                               int64_t strides[EX_MAX_DIMS], const char **storage_key, int64_t *storage_numel,
                               ex_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_PTH_H */
