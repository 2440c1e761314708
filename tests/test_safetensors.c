/*
 * tests/test_safetensors.c — the .safetensors reader and writer (core/src/safetensors.c).
 *
 * Covers: a writer/reader round trip with exact header text and data bytes;
 * fp32 conversion of every dtype from known bit patterns at unaligned
 * offsets; a file assembled by hand the way Python's safetensors writes it;
 * one hostile file per validation rule (each EX_E_FORMAT naming the file and
 * the problem); a mutation/truncation loop that must never crash (run it
 * under the Debug build's ASan + UBSan); writer argument errors; and the
 * atomic write (a failed finish leaves the old file and no temporary file).
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "explora/safetensors.h"
#include "test_support.h"

/* --- helpers ------------------------------------------------------------------- */

static void put_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Write <8-byte length><header><data> with the given length field. */
static void write_raw(const char *path, uint64_t len_field, const char *header, size_t hlen, const void *data,
                      size_t dlen) {
    size_t total = 8 + hlen + dlen;
    unsigned char *buf = malloc(total);
    assert_non_null(buf);
    put_le64(buf, len_field);
    if (hlen) memcpy(buf + 8, header, hlen);
    if (dlen) memcpy(buf + 8 + hlen, data, dlen);
    ext_write_file(path, buf, total);
    free(buf);
}

/* A well-formed file: the header's true length, dlen data bytes (zeros if data is NULL). */
static void write_st(const char *path, const char *header, const void *data, size_t dlen) {
    void *zeros = NULL;
    if (!data && dlen) data = zeros = calloc(1, dlen);
    write_raw(path, strlen(header), header, strlen(header), data, dlen);
    free(zeros);
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void assert_msg_has(const ex_err *err, const char *word) {
    if (!strstr(err->msg, word)) fail_msg("message lacks '%s': %s", word, err->msg);
}

/* Open must fail with `code`; the message names the file and contains `word`. */
static void expect_open_fails(const char *path, ex_status code, const char *word) {
    ex_err err;
    ex_err_clear(&err);
    ex_st_file *f = (ex_st_file *)(uintptr_t)1;
    ex_status st = ex_st_open(&f, path, &err);
    if (st != code)
        fail_msg("%s: expected status %d (%s), got %d: %s", path, (int)code, ex_status_name(code), (int)st, err.msg);
    assert_null(f);
    assert_msg_has(&err, path);
    if (word) assert_msg_has(&err, word);
}

/* Write `header` with dlen zero data bytes and expect EX_E_FORMAT mentioning `word`. */
static void expect_bad_header(const char *tag, const char *header, size_t dlen, const char *word) {
    char path[1024], fname[128];
    snprintf(fname, sizeof fname, "hostile-%s.safetensors", tag);
    ext_tmp_path(path, sizeof path, fname);
    write_st(path, header, NULL, dlen);
    expect_open_fails(path, EX_E_FORMAT, word);
    unlink(path);
}

/* Number of directory entries starting with "<basename of path>.tmp.". */
static int count_tmp_files(const char *path) {
    char dir[1024], prefix[1024];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    snprintf(prefix, sizeof prefix, "%s.tmp.", slash ? slash + 1 : path);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *de; (de = readdir(d));)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) n++;
    closedir(d);
    return n;
}

/* --- round trip ------------------------------------------------------------------ */

static void test_round_trip(void **state) {
    (void)state;
    ex_err err;
    ex_err_clear(&err);
    char path[1024];
    ext_tmp_path(path, sizeof path, "roundtrip.safetensors");

    float w[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, -7.0f};
    uint16_t h[4] = {0x3C00, 0xC000, 0x3555, 0x7C00};
    uint16_t b[4] = {0x3F80, 0xBF80, 0x4049, 0x0000};
    int64_t ids[3] = {-1, 0, 1234567890123LL};
    float scalar = 42.5f;
    int64_t s_w[2] = {2, 3}, s_h[1] = {4}, s_b[2] = {2, 2}, s_i[1] = {3}, s_e[2] = {0, 5};

    ex_st_writer *wr = NULL;
    EXT_OK(ex_st_writer_new(&wr, &err), &err);
    EXT_OK(ex_st_writer_add(wr, "w", EX_F32, 2, s_w, w, &err), &err);
    EXT_OK(ex_st_writer_add(wr, "h", EX_F16, 1, s_h, h, &err), &err);
    EXT_OK(ex_st_writer_add(wr, "b", EX_BF16, 2, s_b, b, &err), &err);
    EXT_OK(ex_st_writer_add(wr, "ids", EX_I64, 1, s_i, ids, &err), &err);
    EXT_OK(ex_st_writer_add(wr, "scalar", EX_F32, 0, NULL, &scalar, &err), &err);
    EXT_OK(ex_st_writer_add(wr, "empty", EX_F32, 2, s_e, NULL, &err), &err);
    EXT_OK(ex_st_writer_metadata(wr, "format", "pt", &err), &err);
    EXT_OK(ex_st_writer_metadata(wr, "note", "a \"quoted\" value", &err), &err);
    EXT_OK(ex_st_writer_finish(wr, path, &err), &err);
    ex_st_writer_free(wr);
    assert_int_equal(count_tmp_files(path), 0);

    /* the exact bytes */
    size_t len;
    unsigned char *raw = slurp(path, &len);
    uint64_t hlen = get_le64(raw);
    assert_int_equal(hlen % 8, 0);
    const char *json = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"a \\\"quoted\\\" value\"},"
                       "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                       "\"h\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[32,40]},"
                       "\"ids\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[40,64]},"
                       "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[64,68]},"
                       "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[68,68]}}";
    size_t jlen = strlen(json);
    assert_int_equal(hlen, (jlen + 7) / 8 * 8);
    assert_int_equal(len, 8 + hlen + 68);
    assert_memory_equal(raw + 8, json, jlen);
    for (size_t i = jlen; i < hlen; i++) assert_int_equal(raw[8 + i], ' ');
    const unsigned char *d = raw + 8 + hlen;
    assert_memory_equal(d, w, 24);
    assert_memory_equal(d + 24, h, 8);
    assert_memory_equal(d + 32, b, 8);
    assert_memory_equal(d + 40, ids, 24);
    assert_memory_equal(d + 64, &scalar, 4);
    free(raw);

    /* read it back */
    ex_st_file *f = NULL;
    EXT_OK(ex_st_open(&f, path, &err), &err);
    assert_string_equal(ex_st_path(f), path);
    assert_int_equal(ex_st_count(f), 6);
    const char *names[6] = {"w", "h", "b", "ids", "scalar", "empty"};
    for (int i = 0; i < 6; i++) assert_string_equal(ex_st_at(f, i)->name, names[i]);
    assert_null(ex_st_at(f, 6));
    assert_null(ex_st_at(f, -1));
    assert_null(ex_st_find(f, "nope"));
    assert_int_equal(ex_st_metadata_count(f), 2);
    assert_string_equal(ex_st_metadata_key_at(f, 0), "format");
    assert_string_equal(ex_st_metadata_key_at(f, 1), "note");
    assert_string_equal(ex_st_metadata(f, "format"), "pt");
    assert_string_equal(ex_st_metadata(f, "note"), "a \"quoted\" value");
    assert_null(ex_st_metadata(f, "absent"));

    const ex_st_entry *e = ex_st_find(f, "w");
    assert_non_null(e);
    assert_int_equal(e->dtype, EX_F32);
    assert_int_equal(e->ndim, 2);
    assert_int_equal(e->shape[0], 2);
    assert_int_equal(e->shape[1], 3);
    assert_int_equal(e->begin, 0);
    assert_int_equal(e->end, 24);
    assert_memory_equal(ex_st_data(f, e), w, 24);
    float got[6];
    EXT_OK(ex_st_read_f32(f, e, got, 6, &err), &err);
    assert_memory_equal(got, w, sizeof w);

    e = ex_st_find(f, "h");
    assert_int_equal(e->dtype, EX_F16);
    EXT_OK(ex_st_read_f32(f, e, got, 4, &err), &err);
    assert_true(got[0] == 1.0f && got[1] == -2.0f && isinf(got[3]) && got[3] > 0);
    assert_true(fabsf(got[2] - 0.33325195f) < 1e-7f);

    e = ex_st_find(f, "b");
    assert_int_equal(e->dtype, EX_BF16);
    EXT_OK(ex_st_read_f32(f, e, got, 4, &err), &err);
    assert_true(got[0] == 1.0f && got[1] == -1.0f && got[2] == 3.140625f && got[3] == 0.0f);

    e = ex_st_find(f, "ids");
    assert_int_equal(e->dtype, EX_I64);
    assert_memory_equal(ex_st_data(f, e), ids, sizeof ids);
    EXT_OK(ex_st_read_f32(f, e, got, 3, &err), &err);
    assert_true(got[0] == -1.0f && got[1] == 0.0f && got[2] == (float)1234567890123LL);

    e = ex_st_find(f, "scalar");
    assert_int_equal(e->ndim, 0);
    assert_int_equal(e->end - e->begin, 4);
    EXT_OK(ex_st_read_f32(f, e, got, 1, &err), &err);
    assert_true(got[0] == 42.5f);

    e = ex_st_find(f, "empty");
    assert_int_equal(e->ndim, 2);
    assert_int_equal(e->shape[0], 0);
    assert_int_equal(e->shape[1], 5);
    assert_int_equal(e->begin, e->end);
    EXT_OK(ex_st_read_f32(f, e, NULL, 0, &err), &err);
    assert_int_equal(ex_st_read_f32(f, e, got, 1, &err), EX_E_SHAPE);

    /* wrong destination size */
    e = ex_st_find(f, "w");
    assert_int_equal(ex_st_read_f32(f, e, got, 5, &err), EX_E_SHAPE);
    assert_msg_has(&err, "'w'");
    assert_msg_has(&err, "5");
    ex_st_close(f);
    unlink(path);
}

/* --- conversions ------------------------------------------------------------------- */

/* Build a file with every dtype; an I8 [3] first makes every later offset odd (unaligned). */
static void test_read_f32_conversions(void **state) {
    (void)state;
    unsigned char data[512];
    size_t pos = 0;
    char header[4096];
    size_t hl = 0;
#define ADD(name, dtype, shape, bytes, nbytes)                                                                 \
    do {                                                                                                       \
        hl += (size_t)snprintf(header + hl, sizeof header - hl,                                                \
                               "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",          \
                               hl ? "," : "{", name, dtype, shape, pos, pos + (size_t)(nbytes));               \
        memcpy(data + pos, bytes, nbytes);                                                                     \
        pos += (size_t)(nbytes);                                                                               \
    } while (0)
    int8_t i8[3] = {-128, 127, -1};
    uint16_t bf[4] = {0x3F80, 0xC000, 0x7F80, 0x8000};
    /* 1, 2^-24 (smallest subnormal), 1023 * 2^-24 (largest subnormal), inf, -inf, -2, 65504, 2^-14 */
    uint16_t hf[8] = {0x3C00, 0x0001, 0x03FF, 0x7C00, 0xFC00, 0xC000, 0x7BFF, 0x0400};
    float f32[2] = {3.5f, -0.125f};
    double f64[2] = {1.5, -2.25};
    int64_t i64[2] = {-9007199254740992LL, 77};
    int32_t i32[2] = {-2147483647 - 1, 65536};
    int16_t i16[2] = {-32768, 32767};
    uint8_t u8[2] = {0, 255};
    uint16_t u16[1] = {65535};
    uint32_t u32[1] = {4000000000u};
    uint64_t u64[1] = {1ull << 40};
    uint8_t bl[3] = {0, 1, 2};
    ADD("i8", "I8", "[3]", i8, sizeof i8);
    ADD("bf16", "BF16", "[2,2]", bf, sizeof bf);
    ADD("f16", "F16", "[8]", hf, sizeof hf);
    ADD("f32", "F32", "[2]", f32, sizeof f32);
    ADD("f64", "F64", "[1,2]", f64, sizeof f64);
    ADD("i64", "I64", "[2]", i64, sizeof i64);
    ADD("i32", "I32", "[2]", i32, sizeof i32);
    ADD("i16", "I16", "[2]", i16, sizeof i16);
    ADD("u8", "U8", "[2]", u8, sizeof u8);
    ADD("u16", "U16", "[1]", u16, sizeof u16);
    ADD("u32", "U32", "[1]", u32, sizeof u32);
    ADD("u64", "U64", "[1]", u64, sizeof u64);
    ADD("bool", "BOOL", "[3]", bl, sizeof bl);
#undef ADD
    snprintf(header + hl, sizeof header - hl, "}");
    char path[1024];
    ext_tmp_path(path, sizeof path, "dtypes.safetensors");
    write_st(path, header, data, pos);

    ex_err err;
    ex_err_clear(&err);
    ex_st_file *f = NULL;
    EXT_OK(ex_st_open(&f, path, &err), &err);
    assert_int_equal(ex_st_count(f), 13);
    assert_int_equal(ex_st_find(f, "bf16")->begin, 3); /* unaligned indeed */
    float o[8];

    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "i8"), o, 3, &err), &err);
    assert_true(o[0] == -128.0f && o[1] == 127.0f && o[2] == -1.0f);

    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "bf16"), o, 4, &err), &err);
    assert_true(o[0] == 1.0f && o[1] == -2.0f && isinf(o[2]) && o[2] > 0 && o[3] == 0.0f && signbit(o[3]));

    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "f16"), o, 8, &err), &err);
    assert_true(o[0] == 1.0f);
    assert_true(o[1] == ldexpf(1.0f, -24));
    assert_true(o[2] == 1023.0f * ldexpf(1.0f, -24));
    assert_true(isinf(o[3]) && o[3] > 0);
    assert_true(isinf(o[4]) && o[4] < 0);
    assert_true(o[5] == -2.0f && o[6] == 65504.0f && o[7] == ldexpf(1.0f, -14));

    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "f32"), o, 2, &err), &err);
    assert_true(o[0] == 3.5f && o[1] == -0.125f);
    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "f64"), o, 2, &err), &err);
    assert_true(o[0] == 1.5f && o[1] == -2.25f);
    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "i64"), o, 2, &err), &err);
    assert_true(o[0] == -9007199254740992.0f && o[1] == 77.0f);
    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "i32"), o, 2, &err), &err);
    assert_true(o[0] == -2147483648.0f && o[1] == 65536.0f);
    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "i16"), o, 2, &err), &err);
    assert_true(o[0] == -32768.0f && o[1] == 32767.0f);
    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "u8"), o, 2, &err), &err);
    assert_true(o[0] == 0.0f && o[1] == 255.0f);
    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "u16"), o, 1, &err), &err);
    assert_true(o[0] == 65535.0f);
    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "u32"), o, 1, &err), &err);
    assert_true(o[0] == 4000000000.0f);
    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "u64"), o, 1, &err), &err);
    assert_true(o[0] == 1099511627776.0f);
    EXT_OK(ex_st_read_f32(f, ex_st_find(f, "bool"), o, 3, &err), &err);
    assert_true(o[0] == 0.0f && o[1] == 1.0f && o[2] == 1.0f);

    assert_int_equal(ex_st_read_f32(f, ex_st_find(f, "f16"), o, 7, &err), EX_E_SHAPE);
    assert_msg_has(&err, "f16");
    assert_int_equal(ex_st_read_f32(f, ex_st_find(f, "f16"), o, -1, &err), EX_E_SHAPE);
    ex_st_close(f);
    unlink(path);
}

/* --- a file as Python's safetensors writes it --------------------------------------- */

static void test_python_style_file(void **state) {
    (void)state;
    /* safetensors.torch.save_file({"weight": w, "bias": b}, metadata={"format": "pt"}) lays out
     * tensors by alignment then name and pads the header with spaces to a multiple of 8. */
    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]}}";
    char header[256];
    size_t jlen = strlen(json), hlen = (jlen + 7) / 8 * 8;
    memset(header, ' ', sizeof header);
    memcpy(header, json, jlen);
    const float data[6] = {0.5f, -0.5f, 1.0f, 2.0f, 3.0f, 4.0f};
    char path[1024];
    ext_tmp_path(path, sizeof path, "python.safetensors");
    write_raw(path, hlen, header, hlen, data, sizeof data);

    ex_err err;
    ex_err_clear(&err);
    ex_st_file *f = NULL;
    EXT_OK(ex_st_open(&f, path, &err), &err);
    assert_int_equal(ex_st_count(f), 2);
    assert_string_equal(ex_st_metadata(f, "format"), "pt");
    const ex_st_entry *w = ex_st_find(f, "weight"), *b = ex_st_find(f, "bias");
    assert_non_null(w);
    assert_non_null(b);
    assert_int_equal(w->ndim, 2);
    assert_int_equal(w->begin, 8);
    float got[4];
    EXT_OK(ex_st_read_f32(f, w, got, 4, &err), &err);
    assert_memory_equal(got, data + 2, 4 * sizeof(float));
    EXT_OK(ex_st_read_f32(f, b, got, 2, &err), &err);
    assert_memory_equal(got, data, 2 * sizeof(float));
    ex_st_close(f);

    /* Pretty-printed JSON, fields in another order, header order unlike data order. */
    const char *pretty = "{\n  \"weight\": {\"data_offsets\": [8, 24], \"shape\": [2, 2], \"dtype\": \"F32\"},\n"
                         "  \"bias\": {\"shape\": [2], \"dtype\": \"F32\", \"data_offsets\": [0, 8]}\n}\n";
    write_st(path, pretty, data, sizeof data);
    EXT_OK(ex_st_open(&f, path, &err), &err);
    assert_int_equal(ex_st_metadata_count(f), 0);
    assert_string_equal(ex_st_at(f, 0)->name, "weight");
    assert_string_equal(ex_st_at(f, 1)->name, "bias");
    EXT_OK(ex_st_read_f32(f, ex_st_at(f, 0), got, 4, &err), &err);
    assert_memory_equal(got, data + 2, 4 * sizeof(float));
    ex_st_close(f);

    /* No tensors at all is a valid (empty) file. */
    write_st(path, "{}      ", NULL, 0);
    EXT_OK(ex_st_open(&f, path, &err), &err);
    assert_int_equal(ex_st_count(f), 0);
    assert_null(ex_st_find(f, "x"));
    ex_st_close(f);
    unlink(path);
}

/* --- hostile files ------------------------------------------------------------------- */

static void test_hostile_lengths(void **state) {
    (void)state;
    char path[1024];
    ext_tmp_path(path, sizeof path, "short.safetensors");

    ext_write_file(path, "", 0);
    expect_open_fails(path, EX_E_FORMAT, "too short");
    ext_write_file(path, "\x10\0\0\0\0\0\0", 7);
    expect_open_fails(path, EX_E_FORMAT, "too short");

    const char *hdr = "{}";
    write_raw(path, 0, hdr, 2, NULL, 0);
    expect_open_fails(path, EX_E_FORMAT, "header length is 0");
    write_raw(path, 3, hdr, 2, NULL, 0); /* one byte more than the file holds */
    expect_open_fails(path, EX_E_FORMAT, "larger than");
    write_raw(path, 1ull << 63, hdr, 2, NULL, 0);
    expect_open_fails(path, EX_E_FORMAT, "9223372036854775808");
    write_raw(path, UINT64_MAX, hdr, 2, NULL, 0);
    expect_open_fails(path, EX_E_FORMAT, "header length");
    write_raw(path, 200000000ull, hdr, 2, NULL, 0);
    expect_open_fails(path, EX_E_FORMAT, "limit");
    write_raw(path, 8, "{}\0     ", 8, NULL, 0);
    expect_open_fails(path, EX_E_FORMAT, "NUL");
    unlink(path);

    expect_open_fails("/nonexistent-dir/missing.safetensors", EX_E_IO, "No such file");
    char dir[1024];
    ext_tmp_path(dir, sizeof dir, "a-directory.safetensors");
    assert_int_equal(mkdir(dir, 0700), 0);
    expect_open_fails(dir, EX_E_IO, "not a regular file");
    rmdir(dir);
}

static void test_hostile_json(void **state) {
    (void)state;
    expect_bad_header("notjson", "{\"a\": {\"dtype\": ", 0, "not valid JSON");
    expect_bad_header("garbage", "hello world", 0, "not valid JSON");
    expect_bad_header("array", "[1, 2, 3]", 0, "not an object");
    expect_bad_header("string", "\"x\"", 0, "not an object");
    expect_bad_header("trailing-json", "{} {}", 0, "after the JSON header");
    expect_bad_header("entry-number", "{\"a\": 5}", 0, "'a': entry is not an object");
    expect_bad_header("entry-array", "{\"a\": [0, 4]}", 4, "not an object");
}

static void test_hostile_fields(void **state) {
    (void)state;
    expect_bad_header("no-dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing \"dtype\"");
    expect_bad_header("dtype-number", "{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "dtype is 4");
    expect_bad_header("dtype-f12", "{\"t\":{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "unknown dtype \"F12\"");
    expect_bad_header("dtype-lower", "{\"t\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "unknown dtype");
    expect_bad_header("no-shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing \"shape\"");
    expect_bad_header("shape-object", "{\"t\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]}}", 4,
                      "shape is {}");
    expect_bad_header("shape-negative", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                      "dimension 0 is -1");
    expect_bad_header("shape-fraction", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,12]}}", 12,
                      "dimension 1 is 1.5");
    expect_bad_header("shape-huge", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4,
                      "dimension 0 is 1e+300");
    expect_bad_header("shape-string", "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
                      "dimension 0");
    expect_bad_header("shape-overflow",
                      "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                      "\"data_offsets\":[0,4]}}",
                      4, "overflow");
    expect_bad_header("shape-overflow-bytes",
                      "{\"t\":{\"dtype\":\"F64\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,8]}}", 8,
                      "overflow");
    expect_bad_header("too-many-dims",
                      "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                      "9 dimensions");
    expect_bad_header("no-offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing \"data_offsets\"");
    expect_bad_header("offsets-three", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
                      "data_offsets is [0,4,8]");
    expect_bad_header("offsets-negative", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
                      "data_offsets is [-4,0]");
    expect_bad_header("offsets-fraction", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}", 4,
                      "data_offsets");
    expect_bad_header("offsets-reversed", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8,
                      "begin > end");
}

static void test_hostile_layout(void **state) {
    (void)state;
    char path[1024];
    ext_tmp_path(path, sizeof path, "mismatch.safetensors");
    write_st(path,
             "{\"blocks.0.attn.qkv.weight\":{\"dtype\":\"F32\",\"shape\":[3,10],\"data_offsets\":[0,100]}}",
             NULL, 100);
    ex_err err;
    ex_err_clear(&err);
    ex_st_file *f = NULL;
    assert_int_equal(ex_st_open(&f, path, &err), EX_E_FORMAT);
    assert_null(f);
    char expected[1200];
    snprintf(expected, sizeof expected,
             "%s: tensor 'blocks.0.attn.qkv.weight': data_offsets [0, 100] hold 100 bytes but F32 [3, 10] needs 120.",
             path);
    assert_string_equal(err.msg, expected);
    unlink(path);

    expect_bad_header("past-end", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
                      "past the end");
    expect_bad_header("past-end-huge",
                      "{\"t\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[9007199254740984,9007199254740992]}}",
                      8, "past the end");
    expect_bad_header("overlap",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      12, "overlaps tensor 'a'");
    expect_bad_header("same-range",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                      8, "overlaps");
    expect_bad_header("empty-inside",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                      8, "overlaps");
    expect_bad_header("gap",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                      12, "gap of 4");
    expect_bad_header("gap-first", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                      "expected 0");
    expect_bad_header("trailing", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
                      "4 trailing bytes");
    expect_bad_header("trailing-no-tensors", "{}", 3, "3 trailing bytes");
    expect_bad_header("duplicate",
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                      8, "'a' appears more than once");
}

static void test_hostile_names_and_metadata(void **state) {
    (void)state;
    expect_bad_header("meta-number",
                      "{\"__metadata__\":{\"format\":\"pt\",\"step\":12},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                      4, "__metadata__ value of 'step' is 12");
    expect_bad_header("meta-nested", "{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, "expected a string");
    expect_bad_header("meta-string", "{\"__metadata__\":\"pt\"}", 0, "expected an object of strings");
    expect_bad_header("meta-twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "more than once");
    expect_bad_header("meta-dup-key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
                      "key 'k' appears more than once");

    char name[EX_NAME_MAX + 40], header[1024];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    snprintf(header, sizeof header, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", name);
    expect_bad_header("long-name", header, 4, "at most 159 bytes");
    /* exactly EX_NAME_MAX - 1 bytes is fine */
    name[EX_NAME_MAX - 1] = '\0';
    snprintf(header, sizeof header, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", name);
    char path[1024];
    ext_tmp_path(path, sizeof path, "name159.safetensors");
    write_st(path, header, NULL, 4);
    ex_err err;
    ex_err_clear(&err);
    ex_st_file *f = NULL;
    EXT_OK(ex_st_open(&f, path, &err), &err);
    assert_non_null(ex_st_find(f, name));
    ex_st_close(f);
    unlink(path);
}

/* --- mutations and truncations ------------------------------------------------------- */

static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Open a (possibly broken) file: must be OK or FORMAT; when OK, every tensor must read. */
static ex_status open_and_touch(const char *path) {
    ex_err err;
    ex_err_clear(&err);
    ex_st_file *f = NULL;
    ex_status st = ex_st_open(&f, path, &err);
    if (st != EX_OK && st != EX_E_FORMAT) fail_msg("unexpected status %d: %s", (int)st, err.msg);
    if (st != EX_OK) {
        assert_null(f);
        assert_true(err.msg[0] != '\0');
        return st;
    }
    float buf[64];
    for (int i = 0; i < ex_st_count(f); i++) {
        const ex_st_entry *e = ex_st_at(f, i);
        uint64_t numel = (e->end - e->begin) / (uint64_t)ex_dtype_size(e->dtype);
        assert_ptr_equal(ex_st_find(f, e->name), e);
        if (numel <= 64) EXT_OK(ex_st_read_f32(f, e, buf, (int64_t)numel, &err), &err);
    }
    for (int i = 0; i < ex_st_metadata_count(f); i++) assert_non_null(ex_st_metadata(f, ex_st_metadata_key_at(f, i)));
    ex_st_close(f);
    return st;
}

static void test_mutations_never_crash(void **state) {
    (void)state;
    ex_err err;
    ex_err_clear(&err);
    char path[1024], mpath[1024];
    ext_tmp_path(path, sizeof path, "mut-base.safetensors");
    ext_tmp_path(mpath, sizeof mpath, "mut.safetensors");
    uint16_t h[3] = {0x3C00, 0x0001, 0x7C00};
    float w[4] = {1, 2, 3, 4};
    uint8_t u[5] = {1, 2, 3, 4, 5};
    int64_t s_h[1] = {3}, s_w[2] = {2, 2}, s_u[1] = {5};
    ex_st_writer *wr = NULL;
    EXT_OK(ex_st_writer_new(&wr, &err), &err);
    EXT_OK(ex_st_writer_add(wr, "h", EX_F16, 1, s_h, h, &err), &err);
    EXT_OK(ex_st_writer_add(wr, "u", EX_U8, 1, s_u, u, &err), &err);
    EXT_OK(ex_st_writer_add(wr, "w", EX_F32, 2, s_w, w, &err), &err);
    EXT_OK(ex_st_writer_metadata(wr, "format", "pt", &err), &err);
    EXT_OK(ex_st_writer_finish(wr, path, &err), &err);
    ex_st_writer_free(wr);

    size_t len;
    unsigned char *orig = slurp(path, &len);
    unsigned char *buf = malloc(len + 1);
    assert_non_null(buf);
    assert_int_equal(open_and_touch(path), EX_OK);

    /* every truncation is an error (the last tensor is non-empty) */
    for (size_t n = 0; n < len; n++) {
        ext_write_file(mpath, orig, n);
        assert_int_equal(open_and_touch(mpath), EX_E_FORMAT);
    }
    /* one extra byte is an error too */
    memcpy(buf, orig, len);
    buf[len] = 0;
    ext_write_file(mpath, buf, len + 1);
    assert_int_equal(open_and_touch(mpath), EX_E_FORMAT);

    /* single-byte mutations, mostly in the length and header, with JSON-ish and random values */
    static const char interesting[] = "0123456789-+.eE\"{}[],: \\u\x00\x7f\xff";
    uint64_t seed = 12345;
    int ok = 0, bad = 0;
    uint64_t hlen = get_le64(orig);
    for (int it = 0; it < 4000; it++) {
        memcpy(buf, orig, len);
        size_t at = (lcg(&seed) % 4 != 0) ? (size_t)(lcg(&seed) % (8 + hlen)) : (size_t)(lcg(&seed) % len);
        unsigned char v = (lcg(&seed) % 2) ? (unsigned char)interesting[lcg(&seed) % (sizeof interesting - 1)]
                                           : (unsigned char)lcg(&seed);
        buf[at] = v;
        ext_write_file(mpath, buf, len);
        if (open_and_touch(mpath) == EX_OK)
            ok++;
        else
            bad++;
    }
    print_message("mutations: %d files opened, %d rejected\n", ok, bad);
    /* both outcomes occur: data-byte mutations stay valid, most header mutations do not */
    assert_true(ok > 100);
    assert_true(bad > 1000);
    free(buf);
    free(orig);
    unlink(path);
    unlink(mpath);
}

/* --- writer ---------------------------------------------------------------------------- */

static void test_writer_rejects_bad_input(void **state) {
    (void)state;
    ex_err err;
    ex_err_clear(&err);
    ex_st_writer *wr = NULL;
    EXT_OK(ex_st_writer_new(&wr, &err), &err);
    float x[4] = {0};
    int64_t s[EX_MAX_DIMS + 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    int64_t neg[1] = {-2}, big[2] = {INT64_MAX, INT64_MAX};
    EXT_OK(ex_st_writer_add(wr, "x", EX_F32, 1, s, x, &err), &err);
    assert_int_equal(ex_st_writer_add(wr, "x", EX_F32, 1, s, x, &err), EX_E_INVALID);
    assert_msg_has(&err, "duplicate");
    assert_int_equal(ex_st_writer_add(wr, "y", EX_F32, EX_MAX_DIMS + 1, s, x, &err), EX_E_INVALID);
    assert_int_equal(ex_st_writer_add(wr, "y", EX_F32, -1, s, x, &err), EX_E_INVALID);
    assert_int_equal(ex_st_writer_add(wr, "y", EX_F32, 1, neg, x, &err), EX_E_INVALID);
    assert_int_equal(ex_st_writer_add(wr, "y", EX_F32, 2, big, x, &err), EX_E_INVALID);
    assert_int_equal(ex_st_writer_add(wr, "y", EX_F32, 1, s, NULL, &err), EX_E_INVALID);
    assert_int_equal(ex_st_writer_add(wr, "y", EX_DTYPE_COUNT, 1, s, x, &err), EX_E_INVALID);
    assert_int_equal(ex_st_writer_add(wr, "__metadata__", EX_F32, 1, s, x, &err), EX_E_INVALID);
    assert_int_equal(ex_st_writer_add(wr, "", EX_F32, 1, s, x, &err), EX_E_INVALID);
    assert_int_equal(ex_st_writer_add(wr, NULL, EX_F32, 1, s, x, &err), EX_E_INVALID);
    char longname[EX_NAME_MAX + 1];
    memset(longname, 'a', EX_NAME_MAX);
    longname[EX_NAME_MAX] = '\0';
    assert_int_equal(ex_st_writer_add(wr, longname, EX_F32, 1, s, x, &err), EX_E_INVALID);
    longname[EX_NAME_MAX - 1] = '\0';
    EXT_OK(ex_st_writer_add(wr, longname, EX_F32, 1, s, x, &err), &err);
    EXT_OK(ex_st_writer_metadata(wr, "k", "v", &err), &err);
    assert_int_equal(ex_st_writer_metadata(wr, "k", "w", &err), EX_E_INVALID);
    assert_int_equal(ex_st_writer_metadata(wr, "k2", NULL, &err), EX_E_INVALID);

    /* the failed calls left nothing behind: the file holds exactly x and the long name */
    char path[1024];
    ext_tmp_path(path, sizeof path, "writer-bad.safetensors");
    EXT_OK(ex_st_writer_finish(wr, path, &err), &err);
    ex_st_writer_free(wr);
    ex_st_file *f = NULL;
    EXT_OK(ex_st_open(&f, path, &err), &err);
    assert_int_equal(ex_st_count(f), 2);
    assert_int_equal(ex_st_metadata_count(f), 1);
    assert_string_equal(ex_st_metadata(f, "k"), "v");
    assert_non_null(ex_st_find(f, longname));
    ex_st_close(f);
    unlink(path);
}

static void test_many_tensors_lookup(void **state) {
    (void)state;
    enum { N = 600 };
    ex_err err;
    ex_err_clear(&err);
    static int32_t vals[N];
    ex_st_writer *wr = NULL;
    EXT_OK(ex_st_writer_new(&wr, &err), &err);
    int64_t one[1] = {1};
    char name[64];
    for (int i = 0; i < N; i++) {
        vals[i] = i * 7 - 100;
        snprintf(name, sizeof name, "blocks.%d.mlp.fc%d.weight", (i * 37) % N, i % 2);
        EXT_OK(ex_st_writer_add(wr, name, EX_I32, 1, one, &vals[i], &err), &err);
    }
    char path[1024];
    ext_tmp_path(path, sizeof path, "many.safetensors");
    EXT_OK(ex_st_writer_finish(wr, path, &err), &err);
    ex_st_writer_free(wr);
    ex_st_file *f = NULL;
    EXT_OK(ex_st_open(&f, path, &err), &err);
    assert_int_equal(ex_st_count(f), N);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "blocks.%d.mlp.fc%d.weight", (i * 37) % N, i % 2);
        const ex_st_entry *e = ex_st_find(f, name);
        assert_non_null(e);
        assert_ptr_equal(e, ex_st_at(f, i));
        float v;
        EXT_OK(ex_st_read_f32(f, e, &v, 1, &err), &err);
        assert_true(v == (float)vals[i]);
    }
    assert_null(ex_st_find(f, "blocks.0.mlp.fc2.weight"));
    assert_null(ex_st_find(f, ""));
    ex_st_close(f);
    unlink(path);
}

/* --- atomic writes ------------------------------------------------------------------------ */

static void assert_file_is(const char *path, const void *bytes, size_t n) {
    size_t len;
    unsigned char *got = slurp(path, &len);
    assert_int_equal(len, n);
    assert_memory_equal(got, bytes, n);
    free(got);
}

static void test_atomic_write(void **state) {
    (void)state;
    ex_err err;
    ex_err_clear(&err);
    char path[1024];
    ext_tmp_path(path, sizeof path, "atomic.safetensors");
    const char old[] = "old contents, not a safetensors file";
    ext_write_file(path, old, sizeof old);

    enum { BIG = 1 << 18 };
    float *big = calloc(BIG, sizeof(float));
    assert_non_null(big);
    for (int i = 0; i < BIG; i++) big[i] = (float)i;
    int64_t shape[1] = {BIG};
    ex_st_writer *wr = NULL;
    EXT_OK(ex_st_writer_new(&wr, &err), &err);
    EXT_OK(ex_st_writer_add(wr, "big", EX_F32, 1, shape, big, &err), &err);

    /* 1. the target's directory does not exist */
    char missing[1100];
    snprintf(missing, sizeof missing, "%s.no-such-dir/x.safetensors", path);
    assert_int_equal(ex_st_writer_finish(wr, missing, &err), EX_E_IO);
    assert_msg_has(&err, "no-such-dir");

    /* 2. the write fails half-way (file size limit): old file intact, no temporary left */
    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = saved;
    small.rlim_cur = 64 * 1024;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    ex_status st = ex_st_writer_finish(wr, path, &err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(st, EX_E_IO);
    assert_msg_has(&err, "atomic.safetensors");
    assert_file_is(path, old, sizeof old);
    assert_int_equal(count_tmp_files(path), 0);

    /* 3. the rename fails (the target is a directory): no temporary left */
    char dirpath[1024];
    ext_tmp_path(dirpath, sizeof dirpath, "atomic-dir.safetensors");
    assert_int_equal(mkdir(dirpath, 0700), 0);
    assert_int_equal(ex_st_writer_finish(wr, dirpath, &err), EX_E_IO);
    assert_int_equal(count_tmp_files(dirpath), 0);
    struct stat sb;
    assert_int_equal(stat(dirpath, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    rmdir(dirpath);

    /* 4. success replaces the old file */
    EXT_OK(ex_st_writer_finish(wr, path, &err), &err);
    assert_int_equal(count_tmp_files(path), 0);
    ex_st_writer_free(wr);
    ex_st_file *f = NULL;
    EXT_OK(ex_st_open(&f, path, &err), &err);
    const ex_st_entry *e = ex_st_find(f, "big");
    assert_non_null(e);
    assert_memory_equal(ex_st_data(f, e), big, (size_t)BIG * sizeof(float));
    ex_st_close(f);
    free(big);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_read_f32_conversions),
        cmocka_unit_test(test_python_style_file),
        cmocka_unit_test(test_hostile_lengths),
        cmocka_unit_test(test_hostile_json),
        cmocka_unit_test(test_hostile_fields),
        cmocka_unit_test(test_hostile_layout),
        cmocka_unit_test(test_hostile_names_and_metadata),
        cmocka_unit_test(test_mutations_never_crash),
        cmocka_unit_test(test_writer_rejects_bad_input),
        cmocka_unit_test(test_many_tensors_lookup),
        cmocka_unit_test(test_atomic_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
