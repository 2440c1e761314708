/*
 * tests/test_image_tiff.c — TIFF decoding in libexplora (core/src/image_tiff.c
 * through ex_image_load / ex_image_load_raw / ex_image_decode), on files
 * written here with libtiff: 13-band uint16 in strips (exact raw values, and
 * /65535 scaling), float32 with separate planes in tiles that cross the image
 * edge, uint8 RGB (scaling, PIL luma, alpha dropped or kept), int16 and
 * uint32, LZW + predictor and Deflate; errors: a 13-band file asked for 3
 * channels, a truncated file (libtiff's message captured, nothing printed on
 * stderr), bombs (side, samples), 1-bit and palette files, junk after a TIFF
 * signature. Also the raw mode of PNG.
 */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

#include "explora/image.h"
#include "test_support.h"
#include "test_tiff.h"

/* Write `s` to a scratch file and load it (raw or scaled with `want`). */
static ex_status load_spec(const ttf_spec *s, const char *name, int raw, int want, ex_image *img, ex_err *err) {
    char path[4096];
    ext_tmp_path(path, sizeof path, name);
    ttf_write(path, s);
    ex_status st = raw ? ex_image_load_raw(path, img, err) : ex_image_load(path, want, img, err);
    unlink(path);
    return st;
}

static void expect_values(const ttf_spec *s, const ex_image *img, double div) {
    assert_int_equal(img->width, s->width);
    assert_int_equal(img->height, s->height);
    assert_int_equal(img->channels, s->spp);
    for (int y = 0; y < s->height; y++)
        for (int x = 0; x < s->width; x++)
            for (int b = 0; b < s->spp; b++) {
                float want = div == 1.0 ? (float)ttf_value(s, y, x, b) : (float)ttf_value(s, y, x, b) / (float)div;
                float got = img->pixels[((size_t)y * s->width + x) * s->spp + b];
                if (got != want) fail_msg("(%d,%d,%d): %.9g, expected %.9g", y, x, b, got, want);
            }
}

static void test_uint16_13_bands_strips(void **state) {
    (void)state;
    ttf_spec s = ttf_default(5, 3, 13); /* 2-row strips: the last strip is short */
    ex_err err;
    ex_image img;
    EXT_OK(load_spec(&s, "u16.tif", 1, 0, &img, &err), &err);
    expect_values(&s, &img, 1.0);
    assert_true(img.pixels[0] == 1000.0f && img.pixels[12] == 2200.0f); /* band 12 of (0,0): 1000 + 1200 */
    ex_image_free(&img);
    EXT_OK(load_spec(&s, "u16s.tif", 0, 0, &img, &err), &err);
    expect_values(&s, &img, 65535.0);
    ex_image_free(&img);
    /* 13 bands cannot become RGB or gray */
    assert_int_equal(load_spec(&s, "u16c.tif", 0, 3, &img, &err), EX_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "13 bands"));
    assert_non_null(strstr(err.msg, "ex_image_load_raw"));
    assert_null(img.pixels);
}

static void test_float32_separate_tiles(void **state) {
    (void)state;
    ttf_spec s = ttf_default(20, 18, 4);
    s.bps = 32;
    s.format = SAMPLEFORMAT_IEEEFP;
    s.separate = 1;
    s.tile = 16; /* 2 x 2 tiles per plane, the right and bottom ones cut by the image edge */
    s.base = -1.25;
    s.step_b = 0.5;
    s.step_y = 0.03125;
    ex_err err;
    ex_image img;
    EXT_OK(load_spec(&s, "f32.tif", 1, 0, &img, &err), &err);
    expect_values(&s, &img, 1.0);
    ex_image_free(&img);
    EXT_OK(load_spec(&s, "f32s.tif", 0, 0, &img, &err), &err); /* floats pass through unscaled */
    expect_values(&s, &img, 1.0);
    ex_image_free(&img);
}

static void test_uint16_contig_tiles_lzw_and_deflate(void **state) {
    (void)state;
    ttf_spec s = ttf_default(33, 17, 13);
    s.tile = 16;
    s.compression = COMPRESSION_LZW;
    s.predictor = 2;
    ex_err err;
    ex_image img;
    EXT_OK(load_spec(&s, "lzw.tif", 1, 0, &img, &err), &err);
    expect_values(&s, &img, 1.0);
    ex_image_free(&img);
    s.tile = 0;
    s.rows_per_strip = 5;
    s.separate = 1;
    s.compression = COMPRESSION_ADOBE_DEFLATE;
    EXT_OK(load_spec(&s, "zip.tif", 1, 0, &img, &err), &err);
    expect_values(&s, &img, 1.0);
    ex_image_free(&img);
}

static void test_uint8_rgb_and_alpha(void **state) {
    (void)state;
    ttf_spec s = ttf_default(6, 4, 3);
    s.bps = 8;
    s.photometric = PHOTOMETRIC_RGB;
    s.base = 7;
    s.step_b = 60;
    s.step_y = 20;
    ex_err err;
    ex_image img;
    EXT_OK(load_spec(&s, "rgb8.tif", 0, 3, &img, &err), &err);
    expect_values(&s, &img, 255.0);
    ex_image_free(&img);
    /* gray: PIL's convert("L") on (R, G, B) = (7+x+20y, 67+x+20y, 127+x+20y) */
    EXT_OK(load_spec(&s, "rgb8g.tif", 0, 1, &img, &err), &err);
    assert_int_equal(img.channels, 1);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 6; x++) {
            unsigned r = 7 + x + 20 * y, g = r + 60, b = r + 120;
            unsigned l = (19595u * r + 38470u * g + 7471u * b + 0x8000u) >> 16;
            assert_true(img.pixels[y * 6 + x] == (float)l / 255.0f);
        }
    ex_image_free(&img);
    /* RGBA: alpha dropped when scaled, kept when raw */
    s.spp = 4;
    s.alpha = 1;
    EXT_OK(load_spec(&s, "rgba8.tif", 0, 0, &img, &err), &err);
    assert_int_equal(img.channels, 3);
    assert_true(img.pixels[2] == 127.0f / 255.0f);
    ex_image_free(&img);
    EXT_OK(load_spec(&s, "rgba8r.tif", 1, 0, &img, &err), &err);
    expect_values(&s, &img, 1.0);
    ex_image_free(&img);
}

static void test_signed_and_uint32(void **state) {
    (void)state;
    ttf_spec s = ttf_default(4, 3, 2);
    s.format = SAMPLEFORMAT_INT;
    s.base = -300;
    s.step_b = 250;
    ex_err err;
    ex_image img;
    EXT_OK(load_spec(&s, "i16.tif", 1, 0, &img, &err), &err);
    expect_values(&s, &img, 1.0);
    assert_true(img.pixels[0] == -300.0f);
    ex_image_free(&img);
    EXT_OK(load_spec(&s, "i16s.tif", 0, 0, &img, &err), &err);
    assert_true(img.pixels[0] == (float)(-300.0 / 32767.0));
    ex_image_free(&img);
    s.bps = 32;
    s.format = SAMPLEFORMAT_UINT;
    s.base = 4000000000.0;
    s.step_b = 1;
    s.step_y = 1;
    EXT_OK(load_spec(&s, "u32.tif", 0, 0, &img, &err), &err);
    assert_true(img.pixels[0] == (float)(4000000000.0 / 4294967295.0));
    ex_image_free(&img);
}

/* Decode `data` with stderr redirected to a file; returns the status and the stderr byte count. */
static ex_status decode_quiet(const void *data, size_t n, ex_err *err, long *stderr_bytes) {
    char path[4096];
    ext_tmp_path(path, sizeof path, "stderr.txt");
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    dup2(fd, 2);
    ex_image img;
    ex_status st = ex_image_decode(data, n, "cut.tif", 0, &img, err);
    ex_image_free(&img);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    struct stat sb;
    stat(path, &sb);
    *stderr_bytes = (long)sb.st_size;
    unlink(path);
    return st;
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc(*n);
    assert_int_equal(fread(buf, 1, *n, fp), *n);
    fclose(fp);
    return buf;
}

static void test_truncated_and_junk(void **state) {
    (void)state;
    char path[4096];
    ext_tmp_path(path, sizeof path, "cut.tif");
    ttf_spec s = ttf_default(64, 64, 13);
    s.compression = COMPRESSION_ADOBE_DEFLATE;
    s.rows_per_strip = 8;
    ttf_write(path, &s);
    size_t n = 0;
    unsigned char *buf = read_all(path, &n);
    unlink(path);
    ex_err err;
    long printed = -1;
    /* libtiff writes the IFD last: cutting the file loses it */
    assert_int_equal(decode_quiet(buf, n / 2, &err, &printed), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "cut.tif"));
    assert_int_equal(printed, 0);
    /* corrupt a strip: flip bytes inside the compressed data */
    for (size_t i = 16; i < 400 && i < n; i++) buf[i] ^= 0x5A;
    assert_int_equal(decode_quiet(buf, n, &err, &printed), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "corrupt or truncated TIFF strip"));
    assert_int_equal(printed, 0);
    free(buf);
    static const unsigned char junk[] = {'I', 'I', 42, 0, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3};
    assert_int_equal(decode_quiet(junk, sizeof junk, &err, &printed), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "not a valid TIFF"));
    assert_int_equal(printed, 0);
}

/* A little-endian TIFF header + one IFD of LONG/SHORT tags (values inline). */
static size_t craft_tiff(unsigned char *b, uint32_t w, uint32_t h, uint16_t spp, uint16_t bps, uint16_t photo) {
    const uint16_t tags[9] = {256, 257, 258, 259, 262, 273, 277, 278, 279};
    const uint32_t vals[9] = {w, h, bps, 1, photo, 8, spp, h, 1};
    memcpy(b, "II*\0\x08\0\0\0", 8);
    size_t k = 8;
    b[k++] = 9;
    b[k++] = 0;
    for (int i = 0; i < 9; i++, k += 12) {
        int is_short = tags[i] == 258 || tags[i] == 259 || tags[i] == 262 || tags[i] == 277;
        uint16_t type = is_short ? 3 : 4;
        uint32_t count = 1;
        memcpy(b + k, &tags[i], 2);
        memcpy(b + k + 2, &type, 2);
        memcpy(b + k + 4, &count, 4);
        memset(b + k + 8, 0, 4);
        if (is_short) memcpy(b + k + 8, &(uint16_t){(uint16_t)vals[i]}, 2);
        else memcpy(b + k + 8, &vals[i], 4);
    }
    memset(b + k, 0, 4);
    return k + 4;
}

static void test_bombs_and_unsupported(void **state) {
    (void)state;
    unsigned char b[256];
    ex_err err;
    ex_image img;
    size_t n = craft_tiff(b, 70000, 70000, 1, 8, 1);
    assert_int_equal(ex_image_decode(b, n, "side.tif", 0, &img, &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "exceeds the limit"));
    n = craft_tiff(b, 16000, 16000, 13, 16, 1);
    assert_int_equal(ex_image_decode_raw(b, n, "bands.tif", &img, &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "samples exceeds"));
    n = craft_tiff(b, 8, 8, 1, 1, 1);
    assert_int_equal(ex_image_decode(b, n, "bilevel.tif", 0, &img, &err), EX_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "1-bit"));
    n = craft_tiff(b, 8, 8, 4, 8, 5);
    assert_int_equal(ex_image_decode(b, n, "cmyk.tif", 0, &img, &err), EX_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "CMYK"));
    assert_null(img.pixels);
}

static void test_png_raw(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/images/rgb16.png", ext_env("EXPLORA_TEST_DATA_DIR"));
    ex_err err;
    ex_image raw, scaled;
    EXT_OK(ex_image_load_raw(path, &raw, &err), &err);
    EXT_OK(ex_image_load(path, 0, &scaled, &err), &err);
    assert_int_equal(raw.channels, scaled.channels);
    size_t n = (size_t)raw.width * raw.height * raw.channels;
    for (size_t i = 0; i < n; i++) {
        assert_true(raw.pixels[i] == floorf(raw.pixels[i]) && raw.pixels[i] <= 65535.0f);
        assert_true(raw.pixels[i] / 65535.0f == scaled.pixels[i]);
    }
    ex_image_free(&raw);
    ex_image_free(&scaled);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uint16_13_bands_strips),
        cmocka_unit_test(test_float32_separate_tiles),
        cmocka_unit_test(test_uint16_contig_tiles_lzw_and_deflate),
        cmocka_unit_test(test_uint8_rgb_and_alpha),
        cmocka_unit_test(test_signed_and_uint32),
        cmocka_unit_test(test_truncated_and_junk),
        cmocka_unit_test(test_bombs_and_unsupported),
        cmocka_unit_test(test_png_raw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
