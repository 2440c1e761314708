/*
 * core/src/pth_zip.c — the zip directory of a .pth file (see pth_internal.h, spec E2).
 *
 * Reads, from a read-only mapping of the whole file:
 *   1. the end-of-central-directory record (EOCD, 22 bytes + comment), searched backwards over the
 *      last 64 KiB; it is accepted only where its comment ends exactly at the end of the file;
 *   2. the ZIP64 EOCD locator right before it and the ZIP64 EOCD record it points to (torch always
 *      writes both; their 64-bit counts, size and offset replace the 16/32-bit ones);
 *   3. the central directory: one 46-byte header + name + extra + comment per member, with the ZIP64
 *      extra field (id 0x0001) supplying sizes and the local header offset that overflow 32 bits;
 *   4. each member's LOCAL header, whose name and extra lengths give where the data starts
 *      (torch pads the local extra field so data is 64-byte aligned; the central one differs).
 * Every offset and length is checked against the file size with overflow-safe arithmetic before it is
 * used, so a hostile or truncated file yields EX_E_FORMAT and never a read outside the mapping.
 * CRCs are not checked. Multi-disk archives are rejected.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "pth_internal.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_Z64_EOCD 0x06064b50u
#define SIG_Z64_LOCATOR 0x07064b50u

#define EOCD_SIZE 22u
#define Z64_LOCATOR_SIZE 20u
#define Z64_EOCD_MIN 56u
#define CENTRAL_SIZE 46u
#define LOCAL_SIZE 30u
#define ZIP_MAX_COMMENT 65535u

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t le64(const unsigned char *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }

/* 1 if [off, off + len) lies inside [0, limit). */
static int in_range(uint64_t off, uint64_t len, uint64_t limit) { return off <= limit && len <= limit - off; }

/* --- end records ------------------------------------------------------------------------ */

typedef struct zip_end {
    uint64_t eocd;       /* offset of the EOCD record */
    uint64_t entries;    /* central directory entries */
    uint64_t cd_offset;  /* start of the central directory */
    uint64_t cd_size;
    uint64_t cd_limit;   /* the directory must end at or before this offset */
} zip_end;

/* The last EOCD signature whose record and comment end exactly at the end of the file. */
static ex_status find_eocd(const pth_zip *z, uint64_t *pos, ex_err *err) {
    uint64_t last = z->size - EOCD_SIZE;
    uint64_t first = last > ZIP_MAX_COMMENT ? last - ZIP_MAX_COMMENT : 0;
    for (uint64_t p = last + 1; p-- > first;) {
        const unsigned char *r = z->map + p;
        if (le32(r) == SIG_EOCD && p + EOCD_SIZE + le16(r + 20) == z->size) {
            *pos = p;
            return EX_OK;
        }
    }
    int legacy = z->size >= 4 && z->map[0] == 0x80 && z->map[1] == 0x02 && z->map[2] == 0x8a;
    EX_FAIL(err, EX_E_FORMAT,
            "%s: no zip end-of-central-directory record found; this is not a zip archive (a .pth from torch.save "
            "since torch 1.6 is one).%s",
            z->path,
            legacy ? " It looks like the legacy (pre-1.6) torch.save format, which is not supported: re-save it "
                     "with a newer torch (torch.save(torch.load(f), f2))."
                   : "");
}

/* Read the ZIP64 locator before the EOCD (if any) and the ZIP64 EOCD record it points to. */
static ex_status read_zip64(const pth_zip *z, zip_end *e, int *found, ex_err *err) {
    *found = 0;
    if (e->eocd < Z64_LOCATOR_SIZE) return EX_OK;
    uint64_t loc = e->eocd - Z64_LOCATOR_SIZE;
    const unsigned char *l = z->map + loc;
    if (le32(l) != SIG_Z64_LOCATOR) return EX_OK;
    uint32_t disk = le32(l + 4), disks = le32(l + 16);
    uint64_t rec = le64(l + 8);
    EX_ENSURE(disk == 0 && disks <= 1, err, EX_E_FORMAT,
              "%s: ZIP64 locator names disk %" PRIu32 " of %" PRIu32 "; multi-disk archives are not supported.",
              z->path, disk, disks);
    EX_ENSURE(in_range(rec, Z64_EOCD_MIN, loc), err, EX_E_FORMAT,
              "%s: ZIP64 end record offset %" PRIu64 " does not leave room for the record before the locator at "
              "%" PRIu64 " (truncated or corrupt file).",
              z->path, rec, loc);
    const unsigned char *r = z->map + rec;
    EX_ENSURE(le32(r) == SIG_Z64_EOCD, err, EX_E_FORMAT,
              "%s: no ZIP64 end-of-central-directory record at offset %" PRIu64 " (bad signature 0x%08" PRIx32 ").",
              z->path, rec, le32(r));
    EX_ENSURE(le32(r + 16) == 0 && le32(r + 20) == 0, err, EX_E_FORMAT,
              "%s: ZIP64 end record names disk %" PRIu32 "/%" PRIu32 "; multi-disk archives are not supported.",
              z->path, le32(r + 16), le32(r + 20));
    EX_ENSURE(le64(r + 24) == le64(r + 32), err, EX_E_FORMAT,
              "%s: ZIP64 end record: %" PRIu64 " entries on this disk but %" PRIu64
              " in total; multi-disk archives are not supported.",
              z->path, le64(r + 24), le64(r + 32));
    e->entries = le64(r + 32);
    e->cd_size = le64(r + 40);
    e->cd_offset = le64(r + 48);
    e->cd_limit = rec;
    *found = 1;
    return EX_OK;
}

static ex_status read_end(const pth_zip *z, zip_end *e, ex_err *err) {
    EX_CHECK(find_eocd(z, &e->eocd, err));
    const unsigned char *r = z->map + e->eocd;
    uint16_t disk = le16(r + 4), cd_disk = le16(r + 6), n_disk = le16(r + 8), n_total = le16(r + 10);
    uint32_t cd_size = le32(r + 12), cd_off = le32(r + 16);
    int z64 = 0;
    EX_CHECK(read_zip64(z, e, &z64, err));
    if (!z64) {
        EX_ENSURE(n_total != 0xFFFF && cd_size != 0xFFFFFFFFu && cd_off != 0xFFFFFFFFu, err, EX_E_FORMAT,
                  "%s: the end record defers to ZIP64 values but there is no ZIP64 end record (truncated or "
                  "corrupt file).",
                  z->path);
        EX_ENSURE(disk == 0 && cd_disk == 0 && n_disk == n_total, err, EX_E_FORMAT,
                  "%s: the end record describes a multi-disk archive (disk %u, directory on disk %u, %u of %u "
                  "entries); not supported.",
                  z->path, disk, cd_disk, n_disk, n_total);
        e->entries = n_total;
        e->cd_size = cd_size;
        e->cd_offset = cd_off;
        e->cd_limit = e->eocd;
    }
    EX_ENSURE(in_range(e->cd_offset, e->cd_size, e->cd_limit), err, EX_E_FORMAT,
              "%s: central directory [%" PRIu64 ", +%" PRIu64 ") does not fit before the end records at %" PRIu64
              " (truncated or corrupt file).",
              z->path, e->cd_offset, e->cd_size, e->cd_limit);
    EX_ENSURE(e->entries <= e->cd_size / CENTRAL_SIZE && e->entries <= PTH_ZIP_MAX_MEMBERS, err, EX_E_FORMAT,
              "%s: the end record claims %" PRIu64 " members, more than a %" PRIu64
              "-byte central directory can hold (corrupt file).",
              z->path, e->entries, e->cd_size);
    return EX_OK;
}

/* --- central directory -------------------------------------------------------------------- */

/* Replace 0xFFFFFFFF fields by their values from the ZIP64 extra field (id 1), in the order the
 * format defines: uncompressed size, compressed size, local header offset. */
static ex_status apply_zip64_extra(const pth_zip *z, const unsigned char *extra, size_t len, pth_member *m,
                                   uint32_t raw_usize, uint32_t raw_size, uint32_t raw_header, ex_err *err) {
    size_t pos = 0;
    while (len - pos >= 4) {
        uint16_t id = le16(extra + pos), sz = le16(extra + pos + 2);
        pos += 4;
        if (sz > len - pos) break; /* a malformed trailing field: ignore it like other readers */
        if (id == 0x0001) {
            const unsigned char *f = extra + pos, *end = extra + pos + sz;
            uint32_t raw[3] = {raw_usize, raw_size, raw_header};
            uint64_t *dst[3] = {&m->usize, &m->size, &m->header};
            for (int i = 0; i < 3; i++) {
                if (raw[i] != 0xFFFFFFFFu) continue;
                EX_ENSURE(end - f >= 8, err, EX_E_FORMAT,
                          "%s: member '%.*s': ZIP64 extra field too short for its 64-bit values (corrupt file).",
                          z->path, (int)(m->name_len > 200 ? 200 : m->name_len), m->name);
                *dst[i] = le64(f);
                f += 8;
            }
            return EX_OK;
        }
        pos += sz;
    }
    return EX_OK;
}

static ex_status read_central_entry(const pth_zip *z, uint64_t *pos, uint64_t limit, pth_member *m, size_t index,
                                    ex_err *err) {
    EX_ENSURE(in_range(*pos, CENTRAL_SIZE, limit), err, EX_E_FORMAT,
              "%s: central directory entry %zu at offset %" PRIu64 " runs past the directory's end (truncated "
              "directory).",
              z->path, index, *pos);
    const unsigned char *c = z->map + *pos;
    EX_ENSURE(le32(c) == SIG_CENTRAL, err, EX_E_FORMAT,
              "%s: central directory entry %zu at offset %" PRIu64 " has signature 0x%08" PRIx32
              "; expected 0x%08x (corrupt directory).",
              z->path, index, *pos, le32(c), SIG_CENTRAL);
    uint16_t nlen = le16(c + 28), xlen = le16(c + 30), clen = le16(c + 32);
    uint64_t var = (uint64_t)nlen + xlen + clen;
    EX_ENSURE(in_range(*pos + CENTRAL_SIZE, var, limit), err, EX_E_FORMAT,
              "%s: central directory entry %zu's name/extra/comment (%" PRIu64
              " bytes) run past the directory's end (truncated directory).",
              z->path, index, var);
    m->flags = le16(c + 8);
    m->method = le16(c + 10);
    m->name = (const char *)c + CENTRAL_SIZE;
    m->name_len = nlen;
    uint32_t raw_size = le32(c + 20), raw_usize = le32(c + 24), raw_header = le32(c + 42);
    m->size = raw_size;
    m->usize = raw_usize;
    m->header = raw_header;
    EX_CHECK(apply_zip64_extra(z, c + CENTRAL_SIZE + nlen, xlen, m, raw_usize, raw_size, raw_header, err));
    *pos += CENTRAL_SIZE + var;
    return EX_OK;
}

/* Find the data start from the local header; check the data lies inside the file. */
static ex_status read_local_header(const pth_zip *z, pth_member *m, ex_err *err) {
    int nl = (int)(m->name_len > 200 ? 200 : m->name_len);
    EX_ENSURE(in_range(m->header, LOCAL_SIZE, z->size), err, EX_E_FORMAT,
              "%s: member '%.*s': local header offset %" PRIu64 " is beyond the end of the %" PRIu64
              "-byte file (truncated or corrupt file).",
              z->path, nl, m->name, m->header, z->size);
    const unsigned char *l = z->map + m->header;
    EX_ENSURE(le32(l) == SIG_LOCAL, err, EX_E_FORMAT,
              "%s: member '%.*s': no local header at offset %" PRIu64 " (signature 0x%08" PRIx32 ").", z->path, nl,
              m->name, m->header, le32(l));
    uint64_t nlen = le16(l + 26), xlen = le16(l + 28);
    EX_ENSURE(in_range(m->header + LOCAL_SIZE, nlen + xlen, z->size), err, EX_E_FORMAT,
              "%s: member '%.*s': local header name/extra run past the end of the file (truncated file).", z->path,
              nl, m->name);
    EX_ENSURE(nlen == m->name_len && memcmp(l + LOCAL_SIZE, m->name, nlen) == 0, err, EX_E_FORMAT,
              "%s: member '%.*s': the local header at offset %" PRIu64
              " names a different member (corrupt directory).",
              z->path, nl, m->name, m->header);
    m->data = m->header + LOCAL_SIZE + nlen + xlen;
    EX_ENSURE(in_range(m->data, m->size, z->size), err, EX_E_FORMAT,
              "%s: member '%.*s': %" PRIu64 " data bytes at offset %" PRIu64 " reach past the end of the %" PRIu64
              "-byte file (truncated file).",
              z->path, nl, m->name, m->size, m->data, z->size);
    EX_ENSURE(m->method != 0 || m->size == m->usize, err, EX_E_FORMAT,
              "%s: member '%.*s' is stored but its sizes differ (%" PRIu64 " vs %" PRIu64 "; corrupt directory).",
              z->path, nl, m->name, m->size, m->usize);
    return EX_OK;
}

/* --- lookup ------------------------------------------------------------------------------- */

static int cmp_name(const char *a, size_t an, const char *b, size_t bn) {
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c) return c;
    return an < bn ? -1 : an > bn;
}

static int cmp_member(const void *a, const void *b) {
    const pth_member *x = *(const pth_member *const *)a, *y = *(const pth_member *const *)b;
    int c = cmp_name(x->name, x->name_len, y->name, y->name_len);
    if (c) return c;
    return x < y ? -1 : x > y; /* stable for the duplicate check */
}

static ex_status sort_members(pth_zip *z, ex_err *err) {
    if (z->count == 0) return EX_OK;
    z->sorted = malloc(z->count * sizeof *z->sorted);
    EX_ENSURE(z->sorted, err, EX_E_NOMEM, "%s: out of memory for %zu zip members.", z->path, z->count);
    for (size_t i = 0; i < z->count; i++) z->sorted[i] = &z->members[i];
    qsort(z->sorted, z->count, sizeof *z->sorted, cmp_member);
    for (size_t i = 1; i < z->count; i++) {
        const pth_member *a = z->sorted[i - 1], *b = z->sorted[i];
        EX_ENSURE(cmp_name(a->name, a->name_len, b->name, b->name_len) != 0, err, EX_E_FORMAT,
                  "%s: member '%.*s' appears twice in the zip directory (corrupt file).", z->path,
                  (int)(b->name_len > 200 ? 200 : b->name_len), b->name);
    }
    return EX_OK;
}

const pth_member *pth_zip_find(const pth_zip *z, const char *name, size_t len) {
    size_t lo = 0, hi = z->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const pth_member *m = z->sorted[mid];
        int c = cmp_name(m->name, m->name_len, name, len);
        if (c == 0) return m;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

ex_status pth_zip_find_pickle(const pth_zip *z, const pth_member **pkl, const char **prefix, size_t *prefix_len,
                              ex_err *err) {
    static const char suffix[] = "/data.pkl";
    const size_t slen = sizeof suffix - 1;
    const pth_member *found = NULL;
    for (size_t i = 0; i < z->count; i++) {
        const pth_member *m = &z->members[i];
        if (m->name_len <= slen || memcmp(m->name + m->name_len - slen, suffix, slen) != 0) continue;
        if (memchr(m->name, '/', m->name_len - slen)) continue; /* only "<prefix>/data.pkl", one level */
        EX_ENSURE(!found, err, EX_E_FORMAT,
                  "%s: two pickles '%.*s' and '%.*s'; a .pth holds exactly one <prefix>/data.pkl.", z->path,
                  (int)found->name_len, found->name, (int)m->name_len, m->name);
        found = m;
    }
    EX_ENSURE(found, err, EX_E_FORMAT,
              "%s: no '<prefix>/data.pkl' member in the zip archive (%zu members); not a torch.save checkpoint.",
              z->path, z->count);
    *pkl = found;
    *prefix = found->name;
    *prefix_len = found->name_len - slen;
    return EX_OK;
}

ex_status pth_zip_check_stored(const pth_zip *z, const pth_member *m, ex_err *err) {
    int nl = (int)(m->name_len > 200 ? 200 : m->name_len);
    EX_ENSURE(!(m->flags & 1u), err, EX_E_FORMAT, "%s: member '%.*s' is encrypted; not supported.", z->path, nl,
              m->name);
    EX_ENSURE(m->method == 0, err, EX_E_FORMAT,
              "%s: member '%.*s' is compressed (zip method %u); torch.save stores members uncompressed and this "
              "reader only reads stored members. Hint: re-save with torch.save, or re-zip with 'zip -0'.",
              z->path, nl, m->name, m->method);
    return EX_OK;
}

/* --- entry point -------------------------------------------------------------------------- */

void pth_zip_free(pth_zip *z) {
    free(z->members);
    free(z->sorted);
    z->members = NULL;
    z->sorted = NULL;
    z->count = 0;
}

ex_status pth_zip_parse(pth_zip *z, const char *path, const unsigned char *map, uint64_t size, ex_err *err) {
    memset(z, 0, sizeof *z);
    z->path = path;
    z->map = map;
    z->size = size;
    EX_ENSURE(size >= EOCD_SIZE, err, EX_E_FORMAT,
              "%s: file is %" PRIu64 " bytes, too short for a zip archive (a .pth from torch.save is a zip; its "
              "end record alone takes 22 bytes).",
              path, size);
    zip_end e = {0};
    EX_CHECK(read_end(z, &e, err));
    if (e.entries > 0) {
        z->members = calloc((size_t)e.entries, sizeof *z->members);
        EX_ENSURE(z->members, err, EX_E_NOMEM, "%s: out of memory for %" PRIu64 " zip members.", path, e.entries);
    }
    ex_status st = EX_OK;
    uint64_t pos = e.cd_offset, limit = e.cd_offset + e.cd_size;
    for (size_t i = 0; i < (size_t)e.entries; i++) {
        EX_CHECK_GOTO(read_central_entry(z, &pos, limit, &z->members[i], i, err), st, fail);
        EX_CHECK_GOTO(read_local_header(z, &z->members[i], err), st, fail);
        z->count = i + 1;
    }
    EX_CHECK_GOTO(sort_members(z, err), st, fail);
    return EX_OK;
fail:
    pth_zip_free(z);
    return st;
}
