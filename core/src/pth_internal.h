/*
 * core/src/pth_internal.h — shared between pth_zip.c (the zip directory), pth_pickle.c (the pickle
 * machine) and pth.c (the public reader: flattening, tensor checks, fp32 conversion).
 * Not installed; nothing here is part of the ABI.
 */
#ifndef EXPLORA_PTH_INTERNAL_H
#define EXPLORA_PTH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "explora/pth.h"
#include "explora/status.h"

/* ---- zip directory ------------------------------------------------------------------ */

/* Most central-directory entries accepted (torch writes 2-4 plus one per storage). */
#define PTH_ZIP_MAX_MEMBERS (1u << 22)

typedef struct pth_member {
    const char *name;   /* inside the mapping (central directory), not NUL-terminated */
    size_t name_len;
    uint16_t method;    /* 0 = stored */
    uint16_t flags;
    uint64_t header;    /* offset of the local header */
    uint64_t data;      /* absolute offset of the member's bytes: header + 30 + name_len + extra_len */
    uint64_t size;      /* compressed size (= stored size for method 0) */
    uint64_t usize;     /* uncompressed size */
} pth_member;

typedef struct pth_zip {
    const char *path; /* for messages */
    const unsigned char *map;
    uint64_t size;
    pth_member *members; /* central directory order */
    size_t count;
    const pth_member **sorted; /* by name, for pth_zip_find */
} pth_zip;

/* Parse the end records, the central directory and each member's local header, checking every offset
 * and size against the file size. On error everything allocated is freed. */
ex_status pth_zip_parse(pth_zip *z, const char *path, const unsigned char *map, uint64_t size, ex_err *err);
void pth_zip_free(pth_zip *z);
/* Exact name lookup; NULL if absent. */
const pth_member *pth_zip_find(const pth_zip *z, const char *name, size_t len);
/* The prefix folder of the unique "<prefix>/data.pkl" member (without the slash) and that member. */
ex_status pth_zip_find_pickle(const pth_zip *z, const pth_member **pkl, const char **prefix, size_t *prefix_len,
                              ex_err *err);
/* EX_E_FORMAT unless the member is stored (method 0) and not encrypted. */
ex_status pth_zip_check_stored(const pth_zip *z, const pth_member *m, ex_err *err);

/* ---- pickle objects ---------------------------------------------------------------- */

/* Bounds of the pickle machine (far above what torch.save writes for any model). */
#define PK_MAX_STACK (1u << 20)  /* values on the stack, all mark frames together */
#define PK_MAX_MARKS (1u << 16)  /* open MARKs */
#define PK_MAX_MEMO (1u << 24)   /* memo indices; also < the pickle's length */
#define PK_MAX_GLOBAL_LINE 1024  /* bytes of a GLOBAL module or name line */
#define PK_MAX_ITEMS (1u << 26)  /* items of one list / tuple / dict */

typedef enum pk_kind {
    PK_NONE,
    PK_BOOL,
    PK_INT,     /* fits int64 */
    PK_BIGINT,  /* LONG1/LONG4 wider than 64 bits (value not kept) */
    PK_FLOAT,
    PK_STR,
    PK_BYTES,
    PK_TUPLE,
    PK_LIST,    /* also sets and frozensets */
    PK_DICT,    /* items are key, value, key, value ... in insertion order */
    PK_GLOBAL,  /* GLOBAL / STACK_GLOBAL: module and name */
    PK_STORAGE, /* BINPERSID: u.ref = the persistent id (checked later, per tensor) */
    PK_TENSOR,  /* _rebuild_tensor_v2 & co: u.ref = the argument tuple (checked later, per tensor) */
    PK_OPAQUE   /* any other object (REDUCE / NEWOBJ of an unknown callable) */
} pk_kind;

typedef struct pk_str {
    const char *s; /* inside the pickle bytes, not NUL-terminated */
    size_t n;
} pk_str;

typedef struct pk_obj pk_obj;
struct pk_obj {
    pk_kind kind;
    union {
        int64_t i; /* BOOL, INT */
        double f;
        pk_str str; /* STR, BYTES */
        struct {
            pk_obj **items;
            size_t n, cap;
        } seq; /* TUPLE, LIST, DICT */
        struct {
            pk_str module, name;
        } global;
        const pk_obj *ref; /* STORAGE, TENSOR */
    } u;
};

typedef struct pk_block pk_block; /* object arena, private to pth_pickle.c */

/* The result of running data.pkl: the root object and the arena that owns every object. */
typedef struct pk_result {
    const pk_obj *root;
    pk_block *arena;
} pk_result;

/* Run the pickle bytes (which must outlive the result). Messages start with "<path>: data.pkl: ". */
ex_status pk_run(const char *path, const unsigned char *bytes, size_t len, pk_result *out, ex_err *err);
void pk_free(pk_result *r);

/* 1 if s equals the NUL-terminated text. */
int pk_str_eq(pk_str s, const char *text);
/* A short description of an object kind for messages ("a tuple", "an int" ...). */
const char *pk_kind_text(pk_kind k);

#endif /* EXPLORA_PTH_INTERNAL_H */
