/*
 * core/src/pth_pickle.c — a small, bounded pickle machine for torch.save's data.pkl (see pth_internal.h).
 *
 * It implements the opcodes torch.save writes (pickle protocol 2) plus the protocol 3-5 ones a
 * newer writer may use, builds a graph of pk_obj values and returns the object STOP finds on the
 * stack. It never calls anything: GLOBAL / STACK_GLOBAL yield a (module, name) value, and REDUCE
 * interprets only a few callables:
 *
 *   collections.OrderedDict                         -> an empty dict (filled by SETITEMS)
 *   torch._utils._rebuild_tensor_v2 / _rebuild_tensor -> a tensor referring to its argument tuple
 *   torch._tensor._rebuild_from_type_v2(f, t, args, state), f one of the above -> a tensor from args
 *   torch._utils._rebuild_parameter[_with_state]    -> its first argument (the tensor)
 *   anything else                                   -> an opaque object
 *
 * NEWOBJ / NEWOBJ_EX give opaque objects; BUILD ignores its state; SETITEM(S) on an opaque object turn
 * it into a dict (dict subclasses such as defaultdict are pickled that way), APPEND(S) on one are
 * ignored. BINPERSID wraps the persistent id in a storage value. Tensor arguments and persistent ids
 * are checked later, per tensor, by pth.c, so that its messages can name the tensor.
 *
 * Everything is bounded: every read is checked against the remaining bytes, the stack, the open MARKs,
 * the memo index and the items per container have limits (PK_MAX_*), a memo index must be below the
 * pickle's length, and no code here recurses. Each opcode creates at most one object and moves at most
 * the values already on the stack, so time and memory are linear in the pickle's length. Any violation
 * is EX_E_FORMAT naming the opcode and its byte offset. Objects live in an arena freed by pk_free.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pth_internal.h"

#define PK_BLOCK_OBJS 1024

struct pk_block {
    pk_block *next;
    size_t used;
    pk_obj objs[PK_BLOCK_OBJS];
};

typedef struct pk_vm {
    const char *path;
    const unsigned char *p;
    size_t n, pos;
    size_t op_pos; /* offset of the opcode being run */
    unsigned char op;
    pk_obj **stack;
    size_t sp, scap;
    size_t *marks; /* stack heights at each open MARK */
    size_t mp, mcap;
    pk_obj **memo;
    size_t memo_cap, memo_count, memo_limit;
    pk_block *arena;
    ex_err *err;
} pk_vm;

/* --- names and messages ------------------------------------------------------------------ */

static const char *op_name(unsigned char op) {
    switch (op) {
    case 0x80: return "PROTO";
    case 0x95: return "FRAME";
    case '.': return "STOP";
    case '(': return "MARK";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'N': return "NONE";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'M': return "BININT2";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 'G': return "BINFLOAT";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'X': return "BINUNICODE";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x8e: return "BINBYTES8";
    case 0x96: return "BYTEARRAY8";
    case ')': return "EMPTY_TUPLE";
    case 't': return "TUPLE";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case ']': return "EMPTY_LIST";
    case 'l': return "LIST";
    case 'a': return "APPEND";
    case 'e': return "APPENDS";
    case '}': return "EMPTY_DICT";
    case 'd': return "DICT";
    case 's': return "SETITEM";
    case 'u': return "SETITEMS";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 'c': return "GLOBAL";
    case 0x93: return "STACK_GLOBAL";
    case 'R': return "REDUCE";
    case 0x81: return "NEWOBJ";
    case 0x92: return "NEWOBJ_EX";
    case 'b': return "BUILD";
    case 'Q': return "BINPERSID";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 0x94: return "MEMOIZE";
    case 'h': return "BINGET";
    case 'j': return "LONG_BINGET";
    default: return NULL;
    }
}

const char *pk_kind_text(pk_kind k) {
    switch (k) {
    case PK_NONE: return "None";
    case PK_BOOL: return "a bool";
    case PK_INT: return "an int";
    case PK_BIGINT: return "an int wider than 64 bits";
    case PK_FLOAT: return "a float";
    case PK_STR: return "a str";
    case PK_BYTES: return "bytes";
    case PK_TUPLE: return "a tuple";
    case PK_LIST: return "a list";
    case PK_DICT: return "a dict";
    case PK_GLOBAL: return "a global";
    case PK_STORAGE: return "a storage";
    case PK_TENSOR: return "a tensor";
    case PK_OPAQUE: return "an object";
    }
    return "an unknown value";
}

int pk_str_eq(pk_str s, const char *text) {
    size_t n = strlen(text);
    return s.n == n && memcmp(s.s, text, n) == 0;
}

__attribute__((format(printf, 3, 4))) static ex_status vm_fail(pk_vm *vm, ex_status code, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    const char *name = op_name(vm->op);
    return ex_err_set(vm->err, code, __FILE__, __LINE__, "%s: data.pkl: opcode %s (0x%02x) at byte %zu of %zu: %s",
                      vm->path, name ? name : "?", vm->op, vm->op_pos, vm->n, detail);
}

/* --- arena, stack, memo -------------------------------------------------------------------- */

static ex_status new_obj(pk_vm *vm, pk_kind kind, pk_obj **out) {
    if (!vm->arena || vm->arena->used == PK_BLOCK_OBJS) {
        pk_block *b = malloc(sizeof *b);
        if (!b) return vm_fail(vm, EX_E_NOMEM, "out of memory for pickle objects.");
        b->next = vm->arena;
        b->used = 0;
        vm->arena = b;
    }
    pk_obj *o = &vm->arena->objs[vm->arena->used++];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    *out = o;
    return EX_OK;
}

static void free_arena(pk_block *b) {
    while (b) {
        pk_block *next = b->next;
        for (size_t i = 0; i < b->used; i++) {
            pk_kind k = b->objs[i].kind;
            if (k == PK_TUPLE || k == PK_LIST || k == PK_DICT) free(b->objs[i].u.seq.items);
        }
        free(b);
        b = next;
    }
}

/* Stack height below which the current mark frame may not pop. */
static size_t frame_base(const pk_vm *vm) { return vm->mp ? vm->marks[vm->mp - 1] : 0; }

static ex_status push(pk_vm *vm, pk_obj *o) {
    if (vm->sp == vm->scap) {
        if (vm->scap >= PK_MAX_STACK)
            return vm_fail(vm, EX_E_FORMAT, "the stack exceeds %u values (hostile or corrupt pickle).", PK_MAX_STACK);
        size_t cap = vm->scap ? vm->scap * 2 : 64;
        pk_obj **s = realloc(vm->stack, cap * sizeof *s);
        if (!s) return vm_fail(vm, EX_E_NOMEM, "out of memory for the pickle stack.");
        vm->stack = s;
        vm->scap = cap;
    }
    vm->stack[vm->sp++] = o;
    return EX_OK;
}

static ex_status pop(pk_vm *vm, pk_obj **out) {
    if (vm->sp <= frame_base(vm)) return vm_fail(vm, EX_E_FORMAT, "stack underflow (nothing to pop).");
    *out = vm->stack[--vm->sp];
    return EX_OK;
}

static ex_status peek(pk_vm *vm, pk_obj **out) {
    if (vm->sp <= frame_base(vm)) return vm_fail(vm, EX_E_FORMAT, "stack underflow (the stack is empty).");
    *out = vm->stack[vm->sp - 1];
    return EX_OK;
}

/* Close the innermost MARK: the values above it are stack[*start .. vm->sp). The caller drops them
 * by setting vm->sp = *start. */
static ex_status pop_mark(pk_vm *vm, size_t *start) {
    if (vm->mp == 0) return vm_fail(vm, EX_E_FORMAT, "no open MARK (stack underflow).");
    *start = vm->marks[--vm->mp];
    return EX_OK;
}

static ex_status push_mark(pk_vm *vm) {
    if (vm->mp == vm->mcap) {
        if (vm->mcap >= PK_MAX_MARKS)
            return vm_fail(vm, EX_E_FORMAT, "more than %u open MARKs (hostile or corrupt pickle).", PK_MAX_MARKS);
        size_t cap = vm->mcap ? vm->mcap * 2 : 32;
        size_t *m = realloc(vm->marks, cap * sizeof *m);
        if (!m) return vm_fail(vm, EX_E_NOMEM, "out of memory for pickle marks.");
        vm->marks = m;
        vm->mcap = cap;
    }
    vm->marks[vm->mp++] = vm->sp;
    return EX_OK;
}

static ex_status memo_put(pk_vm *vm, uint64_t idx) {
    pk_obj *o = NULL;
    EX_CHECK(peek(vm, &o));
    if (idx >= vm->memo_limit)
        return vm_fail(vm, EX_E_FORMAT, "memo index %" PRIu64 " is out of range (limit %zu for this pickle).", idx,
                       vm->memo_limit);
    if (idx >= vm->memo_cap) {
        size_t cap = vm->memo_cap ? vm->memo_cap : 64;
        while (cap <= idx) cap *= 2;
        if (cap > vm->memo_limit) cap = vm->memo_limit;
        pk_obj **m = realloc(vm->memo, cap * sizeof *m);
        if (!m) return vm_fail(vm, EX_E_NOMEM, "out of memory for the pickle memo.");
        memset(m + vm->memo_cap, 0, (cap - vm->memo_cap) * sizeof *m);
        vm->memo = m;
        vm->memo_cap = cap;
    }
    if (!vm->memo[idx]) vm->memo_count++;
    vm->memo[idx] = o;
    return EX_OK;
}

static ex_status memo_get(pk_vm *vm, uint64_t idx) {
    if (idx >= vm->memo_cap || !vm->memo[idx])
        return vm_fail(vm, EX_E_FORMAT, "memo index %" PRIu64 " was never set (corrupt pickle).", idx);
    return push(vm, vm->memo[idx]);
}

static ex_status seq_append(pk_vm *vm, pk_obj *seq, pk_obj *item) {
    if (seq->u.seq.n == seq->u.seq.cap) {
        if (seq->u.seq.cap >= PK_MAX_ITEMS)
            return vm_fail(vm, EX_E_FORMAT, "a container exceeds %u items (hostile or corrupt pickle).",
                           PK_MAX_ITEMS);
        size_t cap = seq->u.seq.cap ? seq->u.seq.cap * 2 : 4;
        pk_obj **items = realloc(seq->u.seq.items, cap * sizeof *items);
        if (!items) return vm_fail(vm, EX_E_NOMEM, "out of memory for pickle containers.");
        seq->u.seq.items = items;
        seq->u.seq.cap = cap;
    }
    seq->u.seq.items[seq->u.seq.n++] = item;
    return EX_OK;
}

/* --- reading operands ------------------------------------------------------------------------- */

static ex_status take(pk_vm *vm, uint64_t len, const unsigned char **out) {
    if (len > vm->n - vm->pos)
        return vm_fail(vm, EX_E_FORMAT, "needs %" PRIu64 " more bytes but only %zu remain (truncated pickle).", len,
                       vm->n - vm->pos);
    *out = vm->p + vm->pos;
    vm->pos += (size_t)len;
    return EX_OK;
}

static uint64_t load_le(const unsigned char *b, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

static ex_status read_uint(pk_vm *vm, int nbytes, uint64_t *out) {
    const unsigned char *b = NULL;
    EX_CHECK(take(vm, (uint64_t)nbytes, &b));
    *out = load_le(b, nbytes);
    return EX_OK;
}

/* --- scalars -------------------------------------------------------------------------------- */

static ex_status push_int(pk_vm *vm, pk_kind kind, int64_t v) {
    pk_obj *o = NULL;
    EX_CHECK(new_obj(vm, kind, &o));
    o->u.i = v;
    return push(vm, o);
}

/* LONG1 / LONG4: a little-endian two's complement integer of `len` bytes. */
static ex_status op_long(pk_vm *vm, uint64_t len) {
    const unsigned char *b = NULL;
    EX_CHECK(take(vm, len, &b));
    if (len > 8) {
        pk_obj *o = NULL;
        EX_CHECK(new_obj(vm, PK_BIGINT, &o));
        return push(vm, o);
    }
    uint64_t v = len ? load_le(b, (int)len) : 0;
    if (len > 0 && len < 8 && (b[len - 1] & 0x80)) v |= ~(uint64_t)0 << (8 * len); /* sign-extend */
    int64_t s;
    memcpy(&s, &v, sizeof s);
    return push_int(vm, PK_INT, s);
}

static ex_status op_binfloat(pk_vm *vm) {
    const unsigned char *b = NULL;
    EX_CHECK(take(vm, 8, &b));
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++) bits = (bits << 8) | b[i]; /* big-endian */
    pk_obj *o = NULL;
    EX_CHECK(new_obj(vm, PK_FLOAT, &o));
    memcpy(&o->u.f, &bits, sizeof o->u.f);
    return push(vm, o);
}

/* A length-prefixed string or bytes value with a `lenbytes`-byte length. */
static ex_status op_string(pk_vm *vm, pk_kind kind, int lenbytes, int is_signed) {
    uint64_t len = 0;
    EX_CHECK(read_uint(vm, lenbytes, &len));
    if (is_signed && (len & 0x80000000u))
        return vm_fail(vm, EX_E_FORMAT, "negative string length (corrupt pickle).");
    const unsigned char *b = NULL;
    EX_CHECK(take(vm, len, &b));
    pk_obj *o = NULL;
    EX_CHECK(new_obj(vm, kind, &o));
    o->u.str.s = (const char *)b;
    o->u.str.n = (size_t)len;
    return push(vm, o);
}

/* --- containers ----------------------------------------------------------------------------- */

static ex_status push_empty(pk_vm *vm, pk_kind kind) {
    pk_obj *o = NULL;
    EX_CHECK(new_obj(vm, kind, &o));
    return push(vm, o);
}

/* TUPLE1/2/3 (count >= 0) or TUPLE/LIST/DICT/FROZENSET (count < 0: everything above the MARK). */
static ex_status op_collect(pk_vm *vm, pk_kind kind, int count) {
    size_t start = 0;
    if (count >= 0) {
        if (vm->sp - frame_base(vm) < (size_t)count)
            return vm_fail(vm, EX_E_FORMAT, "stack underflow (needs %d values, has %zu).", count,
                           vm->sp - frame_base(vm));
        start = vm->sp - (size_t)count;
    } else {
        EX_CHECK(pop_mark(vm, &start));
    }
    if (kind == PK_DICT && (vm->sp - start) % 2)
        return vm_fail(vm, EX_E_FORMAT, "odd number of values (%zu) for key/value pairs.", vm->sp - start);
    pk_obj *o = NULL;
    EX_CHECK(new_obj(vm, kind, &o));
    for (size_t i = start; i < vm->sp; i++) EX_CHECK(seq_append(vm, o, vm->stack[i]));
    vm->sp = start;
    return push(vm, o);
}

/* APPEND / APPENDS / ADDITEMS (one value, or all values above the MARK) into the list below them. */
static ex_status op_append(pk_vm *vm, int marked) {
    size_t start = 0;
    if (marked) {
        EX_CHECK(pop_mark(vm, &start));
    } else {
        if (vm->sp <= frame_base(vm)) return vm_fail(vm, EX_E_FORMAT, "stack underflow (no value to append).");
        start = vm->sp - 1;
    }
    if (start <= frame_base(vm)) return vm_fail(vm, EX_E_FORMAT, "stack underflow (no list to append to).");
    pk_obj *target = vm->stack[start - 1];
    if (target->kind == PK_LIST) {
        for (size_t i = start; i < vm->sp; i++) EX_CHECK(seq_append(vm, target, vm->stack[i]));
    } else if (target->kind != PK_OPAQUE) { /* list subclasses: the values are dropped */
        return vm_fail(vm, EX_E_FORMAT, "cannot append to %s; expected a list.", pk_kind_text(target->kind));
    }
    vm->sp = start;
    return EX_OK;
}

/* SETITEM / SETITEMS: key/value pairs into the dict below them (an opaque object becomes a dict). */
static ex_status op_setitems(pk_vm *vm, int marked) {
    size_t start = 0;
    if (marked) {
        EX_CHECK(pop_mark(vm, &start));
    } else {
        if (vm->sp - frame_base(vm) < 2) return vm_fail(vm, EX_E_FORMAT, "stack underflow (needs a key and a value).");
        start = vm->sp - 2;
    }
    if ((vm->sp - start) % 2)
        return vm_fail(vm, EX_E_FORMAT, "odd number of values (%zu) for key/value pairs.", vm->sp - start);
    if (start <= frame_base(vm)) return vm_fail(vm, EX_E_FORMAT, "stack underflow (no dict to set items in).");
    pk_obj *target = vm->stack[start - 1];
    if (target->kind == PK_OPAQUE) {
        memset(&target->u, 0, sizeof target->u);
        target->kind = PK_DICT;
    }
    if (target->kind != PK_DICT)
        return vm_fail(vm, EX_E_FORMAT, "cannot set items in %s; expected a dict.", pk_kind_text(target->kind));
    for (size_t i = start; i < vm->sp; i++) EX_CHECK(seq_append(vm, target, vm->stack[i]));
    vm->sp = start;
    return EX_OK;
}

/* --- globals and calls ---------------------------------------------------------------------- */

static ex_status read_line(pk_vm *vm, pk_str *out) {
    size_t avail = vm->n - vm->pos;
    size_t lim = avail < PK_MAX_GLOBAL_LINE ? avail : PK_MAX_GLOBAL_LINE;
    const unsigned char *nl = memchr(vm->p + vm->pos, '\n', lim);
    if (!nl)
        return vm_fail(vm, EX_E_FORMAT, "no newline within %zu bytes after the module/name (truncated or corrupt).",
                       lim);
    out->s = (const char *)vm->p + vm->pos;
    out->n = (size_t)(nl - (vm->p + vm->pos));
    vm->pos += out->n + 1;
    return EX_OK;
}

static ex_status push_global(pk_vm *vm, pk_str module, pk_str name) {
    pk_obj *o = NULL;
    EX_CHECK(new_obj(vm, PK_GLOBAL, &o));
    o->u.global.module = module;
    o->u.global.name = name;
    return push(vm, o);
}

static ex_status op_global(pk_vm *vm) {
    pk_str module = {0}, name = {0};
    EX_CHECK(read_line(vm, &module));
    EX_CHECK(read_line(vm, &name));
    return push_global(vm, module, name);
}

static ex_status op_stack_global(pk_vm *vm) {
    pk_obj *name = NULL, *module = NULL;
    EX_CHECK(pop(vm, &name));
    EX_CHECK(pop(vm, &module));
    if (name->kind != PK_STR || module->kind != PK_STR)
        return vm_fail(vm, EX_E_FORMAT, "module and name are %s and %s; expected two str.",
                       pk_kind_text(module->kind), pk_kind_text(name->kind));
    return push_global(vm, module->u.str, name->u.str);
}

typedef enum pk_callable {
    CALL_OTHER,
    CALL_ORDERED_DICT,
    CALL_REBUILD_TENSOR,
    CALL_PARAMETER,
    CALL_FROM_TYPE
} pk_callable;

static pk_callable classify(const pk_obj *f) {
    if (!f || f->kind != PK_GLOBAL) return CALL_OTHER;
    pk_str m = f->u.global.module, n = f->u.global.name;
    if (pk_str_eq(m, "collections") && pk_str_eq(n, "OrderedDict")) return CALL_ORDERED_DICT;
    if (pk_str_eq(m, "torch._utils")) {
        if (pk_str_eq(n, "_rebuild_tensor_v2") || pk_str_eq(n, "_rebuild_tensor")) return CALL_REBUILD_TENSOR;
        if (pk_str_eq(n, "_rebuild_parameter") || pk_str_eq(n, "_rebuild_parameter_with_state"))
            return CALL_PARAMETER;
    }
    if (pk_str_eq(m, "torch._tensor") && pk_str_eq(n, "_rebuild_from_type_v2")) return CALL_FROM_TYPE;
    return CALL_OTHER;
}

static ex_status push_ref(pk_vm *vm, pk_kind kind, const pk_obj *ref) {
    pk_obj *o = NULL;
    EX_CHECK(new_obj(vm, kind, &o));
    o->u.ref = ref;
    return push(vm, o);
}

static ex_status op_reduce(pk_vm *vm) {
    pk_obj *args = NULL, *f = NULL;
    EX_CHECK(pop(vm, &args));
    EX_CHECK(pop(vm, &f));
    if (args->kind != PK_TUPLE)
        return vm_fail(vm, EX_E_FORMAT, "the arguments are %s; expected a tuple.", pk_kind_text(args->kind));
    size_t nargs = args->u.seq.n;
    switch (classify(f)) {
    case CALL_ORDERED_DICT: return push_empty(vm, PK_DICT);
    case CALL_REBUILD_TENSOR: return push_ref(vm, PK_TENSOR, args);
    case CALL_PARAMETER:
        if (nargs == 0) return vm_fail(vm, EX_E_FORMAT, "_rebuild_parameter called without arguments.");
        return push(vm, args->u.seq.items[0]);
    case CALL_FROM_TYPE:
        if (nargs >= 3 && classify(args->u.seq.items[0]) == CALL_REBUILD_TENSOR &&
            args->u.seq.items[2]->kind == PK_TUPLE)
            return push_ref(vm, PK_TENSOR, args->u.seq.items[2]);
        return push_empty(vm, PK_OPAQUE);
    case CALL_OTHER: break;
    }
    return push_empty(vm, PK_OPAQUE);
}

/* NEWOBJ (cls, args) / NEWOBJ_EX (cls, args, kwargs): an opaque instance. */
static ex_status op_newobj(pk_vm *vm, int nargs) {
    pk_obj *o = NULL;
    for (int i = 0; i < nargs + 1; i++) EX_CHECK(pop(vm, &o));
    return push_empty(vm, PK_OPAQUE);
}

static ex_status op_build(pk_vm *vm) {
    pk_obj *state = NULL, *obj = NULL;
    EX_CHECK(pop(vm, &state));
    return peek(vm, &obj); /* the object stays; its state is ignored */
}

static ex_status op_persid(pk_vm *vm) {
    pk_obj *pid = NULL;
    EX_CHECK(pop(vm, &pid));
    return push_ref(vm, PK_STORAGE, pid);
}

/* --- the machine ---------------------------------------------------------------------------- */

static ex_status op_proto(pk_vm *vm) {
    uint64_t v = 0;
    EX_CHECK(read_uint(vm, 1, &v));
    if (v > 5) return vm_fail(vm, EX_E_FORMAT, "unsupported pickle protocol %" PRIu64 " (at most 5).", v);
    return EX_OK;
}

static ex_status op_pop(pk_vm *vm) {
    if (vm->sp > frame_base(vm)) {
        vm->sp--;
        return EX_OK;
    }
    size_t start = 0;
    return pop_mark(vm, &start); /* like Python: POP on an empty frame discards the MARK */
}

static ex_status op_pop_mark(pk_vm *vm) {
    size_t start = 0;
    EX_CHECK(pop_mark(vm, &start));
    vm->sp = start;
    return EX_OK;
}

static ex_status op_dup(pk_vm *vm) {
    pk_obj *o = NULL;
    EX_CHECK(peek(vm, &o));
    return push(vm, o);
}

static ex_status op_memo(pk_vm *vm, int nbytes, int get) {
    uint64_t idx = 0;
    EX_CHECK(read_uint(vm, nbytes, &idx));
    return get ? memo_get(vm, idx) : memo_put(vm, idx);
}

static ex_status op_int(pk_vm *vm, int nbytes, int is_signed) {
    uint64_t v = 0;
    EX_CHECK(read_uint(vm, nbytes, &v));
    int64_t s = (int64_t)v;
    if (is_signed && nbytes == 4) s = (int32_t)(uint32_t)v;
    return push_int(vm, PK_INT, s);
}

static ex_status op_long4(pk_vm *vm) {
    uint64_t len = 0;
    EX_CHECK(read_uint(vm, 4, &len));
    if (len & 0x80000000u) return vm_fail(vm, EX_E_FORMAT, "negative LONG4 length (corrupt pickle).");
    return op_long(vm, len);
}

static ex_status op_long1(pk_vm *vm) {
    uint64_t len = 0;
    EX_CHECK(read_uint(vm, 1, &len));
    return op_long(vm, len);
}

static ex_status op_frame(pk_vm *vm) {
    const unsigned char *b = NULL;
    return take(vm, 8, &b); /* frames only group bytes; the length is a hint */
}

/* Run one opcode; *stop is set by STOP. */
static ex_status step(pk_vm *vm, int *stop) {
    switch (vm->op) {
    case 0x80: return op_proto(vm);
    case 0x95: return op_frame(vm);
    case '.': *stop = 1; return EX_OK;
    case '(': return push_mark(vm);
    case '0': return op_pop(vm);
    case '1': return op_pop_mark(vm);
    case '2': return op_dup(vm);
    case 'N': return push_empty(vm, PK_NONE);
    case 0x88: return push_int(vm, PK_BOOL, 1);
    case 0x89: return push_int(vm, PK_BOOL, 0);
    case 'J': return op_int(vm, 4, 1);
    case 'K': return op_int(vm, 1, 0);
    case 'M': return op_int(vm, 2, 0);
    case 0x8a: return op_long1(vm);
    case 0x8b: return op_long4(vm);
    case 'G': return op_binfloat(vm);
    case 'T': return op_string(vm, PK_STR, 4, 1);
    case 'U': return op_string(vm, PK_STR, 1, 0);
    case 'X': return op_string(vm, PK_STR, 4, 0);
    case 0x8c: return op_string(vm, PK_STR, 1, 0);
    case 0x8d: return op_string(vm, PK_STR, 8, 0);
    case 'B': return op_string(vm, PK_BYTES, 4, 0);
    case 'C': return op_string(vm, PK_BYTES, 1, 0);
    case 0x8e: return op_string(vm, PK_BYTES, 8, 0);
    case 0x96: return op_string(vm, PK_BYTES, 8, 0);
    case ')': return push_empty(vm, PK_TUPLE);
    case 't': return op_collect(vm, PK_TUPLE, -1);
    case 0x85: return op_collect(vm, PK_TUPLE, 1);
    case 0x86: return op_collect(vm, PK_TUPLE, 2);
    case 0x87: return op_collect(vm, PK_TUPLE, 3);
    case ']': return push_empty(vm, PK_LIST);
    case 0x8f: return push_empty(vm, PK_LIST);
    case 'l': return op_collect(vm, PK_LIST, -1);
    case 0x91: return op_collect(vm, PK_LIST, -1);
    case 'a': return op_append(vm, 0);
    case 'e': return op_append(vm, 1);
    case 0x90: return op_append(vm, 1);
    case '}': return push_empty(vm, PK_DICT);
    case 'd': return op_collect(vm, PK_DICT, -1);
    case 's': return op_setitems(vm, 0);
    case 'u': return op_setitems(vm, 1);
    case 'c': return op_global(vm);
    case 0x93: return op_stack_global(vm);
    case 'R': return op_reduce(vm);
    case 0x81: return op_newobj(vm, 1);
    case 0x92: return op_newobj(vm, 2);
    case 'b': return op_build(vm);
    case 'Q': return op_persid(vm);
    case 'q': return op_memo(vm, 1, 0);
    case 'r': return op_memo(vm, 4, 0);
    case 0x94: return memo_put(vm, vm->memo_count);
    case 'h': return op_memo(vm, 1, 1);
    case 'j': return op_memo(vm, 4, 1);
    default: break;
    }
    char shown[8] = "";
    if (vm->op >= 0x20 && vm->op < 0x7f) snprintf(shown, sizeof shown, " ('%c')", vm->op);
    return ex_err_set(vm->err, EX_E_FORMAT, __FILE__, __LINE__,
                      "%s: data.pkl: unknown or unsupported pickle opcode 0x%02x%s at byte %zu of %zu (corrupt "
                      "file, or a pickle feature torch.save does not use).",
                      vm->path, vm->op, shown, vm->op_pos, vm->n);
}

static ex_status run(pk_vm *vm, const pk_obj **root) {
    int stop = 0;
    while (!stop) {
        if (vm->pos >= vm->n)
            return ex_err_set(vm->err, EX_E_FORMAT, __FILE__, __LINE__,
                              "%s: data.pkl: the pickle ends after %zu bytes without a STOP opcode (truncated "
                              "pickle).",
                              vm->path, vm->n);
        vm->op_pos = vm->pos;
        vm->op = vm->p[vm->pos++];
        EX_CHECK(step(vm, &stop));
    }
    pk_obj *top = NULL;
    EX_CHECK(pop(vm, &top));
    *root = top;
    return EX_OK;
}

ex_status pk_run(const char *path, const unsigned char *bytes, size_t len, pk_result *out, ex_err *err) {
    pk_vm vm;
    memset(&vm, 0, sizeof vm);
    memset(out, 0, sizeof *out);
    vm.path = path;
    vm.p = bytes;
    vm.n = len;
    vm.err = err;
    vm.memo_limit = len < PK_MAX_MEMO ? len : PK_MAX_MEMO;
    const pk_obj *root = NULL;
    ex_status st = run(&vm, &root);
    free(vm.stack);
    free(vm.marks);
    free(vm.memo);
    if (st != EX_OK) {
        free_arena(vm.arena);
        return st;
    }
    out->root = root;
    out->arena = vm.arena;
    return EX_OK;
}

void pk_free(pk_result *r) {
    if (!r) return;
    free_arena(r->arena);
    r->arena = NULL;
    r->root = NULL;
}
