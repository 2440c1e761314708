/*
 * tests/test_image.c — ex_image_decode / ex_image_load (explora/image.h).
 *
 * Exact pixel values for every PNG colour type and depth (gray 4/8/16-bit,
 * gray+alpha, RGB 8/16, RGBA 8/16, palette with tRNS, Adam7) from the closed
 * formulas of tests/data/images/make_images.py; JPEGs (4:2:0, 4:4:4,
 * progressive, gray) compared exactly with djpeg's decodes committed next to
 * them; channel conversions (gray->RGB replication, RGB->gray with PIL's
 * convert("L") weights); hostile inputs (empty, truncated, bad CRC, bad
 * Adler-32, absurd IHDR and SOF sizes, random bytes, text named .jpg, CMYK,
 * directories, missing and unreadable files) each giving a clear error that
 * names the image; a truncation/mutation sweep over every fixture (run under
 * ASan+UBSan in Debug); and, when Debian's python3-sklearn is installed, its
 * two 640x427 photos against values read with PIL and, with djpeg, against
 * a full djpeg decode.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "explora/image.h"
#include "test_support.h"

/* ---------------------------------------------------------------------------
 * fixtures and formulas (keep in sync with tests/data/images/make_images.py)
 * --------------------------------------------------------------------------- */

static const int PALETTE[5][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}, {200, 150, 100}};

static int gray8(int x, int y) { return (37 * x + 91 * y + 5) % 256; }
static int gray16(int x, int y) { return (4099 * x + 13001 * y + 7) % 65536; }
static int gray4(int x, int y) { return (x + 3 * y) % 16; }
static int rgb8(int x, int y, int c) {
    return c == 0 ? (50 * x + 3 * y) % 256 : c == 1 ? (70 * y + 11 * x) % 256 : (20 * x * y + 9) % 256;
}
static int rgb16(int x, int y, int c) {
    return c == 0 ? (5000 * x + 300 * y) % 65536 : c == 1 ? (9000 * y + 123 * x) % 65536 : (2000 * x * y + 99) % 65536;
}
static int palette(int x, int y, int c) { return PALETTE[(x + 2 * y) % 5][c]; }

/* PIL's convert("L") on 8-bit RGB. */
static int pil_luma(int r, int g, int b) { return (19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16; }

static void fixture_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/images/%s", ext_env("EXPLORA_TEST_DATA_DIR"), name);
}

static unsigned char *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) fail_msg("cannot read %s", path);
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static unsigned char *read_fixture(const char *name, size_t *size) {
    char path[4096];
    fixture_path(path, sizeof path, name);
    return read_all(path, size);
}

static void load_fixture(const char *name, int want, ex_image *img) {
    char path[4096];
    fixture_path(path, sizeof path, name);
    ex_err err;
    EXT_OK(ex_image_load(path, want, img, &err), &err);
}

/* A binary PGM (P5) or PPM (P6) with maxval 255, as djpeg writes them. */
static unsigned char *read_pnm(const char *path, int *w, int *h, int *c) {
    size_t size;
    unsigned char *buf = read_all(path, &size);
    char magic[3] = {0};
    int maxval = 0, off = 0;
    if (sscanf((const char *)buf, "%2s %d %d %d%n", magic, w, h, &maxval, &off) != 4 || maxval != 255)
        fail_msg("%s: not a P5/P6 file with maxval 255", path);
    *c = strcmp(magic, "P6") == 0 ? 3 : 1;
    off++; /* the single whitespace after maxval */
    if ((size_t)off + (size_t)(*w) * (size_t)(*h) * (size_t)(*c) != size) fail_msg("%s: wrong size", path);
    memmove(buf, buf + off, size - (size_t)off);
    return buf;
}

/* Expected value of pixel (x, y) channel c for the fixture formulas, as a float in [0, 1]. */
typedef float (*expect_fn)(int x, int y, int c);

static void check_image(const ex_image *img, int w, int h, int ch, expect_fn f, double tol, const char *what) {
    assert_int_equal(img->width, w);
    assert_int_equal(img->height, h);
    assert_int_equal(img->channels, ch);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                float got = img->pixels[((size_t)y * w + x) * ch + c], want = f(x, y, c);
                if (fabs((double)got - want) > tol)
                    fail_msg("%s: pixel (%d,%d) channel %d is %.9g, expected %.9g", what, x, y, c, got, want);
            }
}

static float e_gray8(int x, int y, int c) { (void)c; return (float)gray8(x, y) / 255.0f; }
static float e_gray16(int x, int y, int c) { (void)c; return (float)gray16(x, y) / 65535.0f; }
static float e_gray4(int x, int y, int c) { (void)c; return (float)(gray4(x, y) * 17) / 255.0f; }
static float e_rgb8(int x, int y, int c) { return (float)rgb8(x, y, c) / 255.0f; }
static float e_rgb16(int x, int y, int c) { return (float)rgb16(x, y, c) / 65535.0f; }
static float e_pal(int x, int y, int c) { return (float)palette(x, y, c) / 255.0f; }
static float e_rgb8_luma(int x, int y, int c) {
    (void)c;
    return (float)pil_luma(rgb8(x, y, 0), rgb8(x, y, 1), rgb8(x, y, 2)) / 255.0f;
}
static float e_pal_luma(int x, int y, int c) {
    (void)c;
    return (float)pil_luma(palette(x, y, 0), palette(x, y, 1), palette(x, y, 2)) / 255.0f;
}
static float e_rgb16_luma(int x, int y, int c) {
    (void)c;
    double l = (19595.0 * rgb16(x, y, 0) + 38470.0 * rgb16(x, y, 1) + 7471.0 * rgb16(x, y, 2)) / 65536.0;
    return (float)(l / 65535.0);
}

/* Decode `name` as stored, as gray and as RGB, and check each against its formula. */
static void check_fixture(const char *name, int w, int h, int stored, expect_fn as_stored, expect_fn as_gray,
                          expect_fn as_rgb, double tol) {
    ex_image img;
    load_fixture(name, 0, &img);
    check_image(&img, w, h, stored, as_stored, tol, name);
    ex_image_free(&img);
    assert_null(img.pixels);
    load_fixture(name, 1, &img);
    check_image(&img, w, h, 1, as_gray, tol, name);
    ex_image_free(&img);
    load_fixture(name, 3, &img);
    check_image(&img, w, h, 3, as_rgb, tol, name);
    ex_image_free(&img);
}

/* ---------------------------------------------------------------------------
 * PNG colour types
 * --------------------------------------------------------------------------- */

static void test_png_gray(void **state) {
    (void)state;
    check_fixture("gray8.png", 5, 4, 1, e_gray8, e_gray8, e_gray8, 0.0);
    check_fixture("gray16.png", 5, 4, 1, e_gray16, e_gray16, e_gray16, 0.0);
    check_fixture("gray4.png", 5, 4, 1, e_gray4, e_gray4, e_gray4, 0.0);
    /* gray + alpha: the alpha is dropped, the image stays gray */
    check_fixture("graya8.png", 5, 4, 1, e_gray8, e_gray8, e_gray8, 0.0);
    /* spot values, to pin the formulas themselves: gray8(3,2) = 298 mod 256 = 42 */
    ex_image img;
    load_fixture("gray8.png", 0, &img);
    assert_float_equal(img.pixels[2 * 5 + 3], 42.0f / 255.0f, 0.0);
    ex_image_free(&img);
    load_fixture("gray16.png", 0, &img); /* gray16(4,3) = 55406 */
    assert_float_equal(img.pixels[3 * 5 + 4], 55406.0f / 65535.0f, 0.0);
    ex_image_free(&img);
}

static void test_png_rgb_rgba_palette(void **state) {
    (void)state;
    check_fixture("rgb8.png", 5, 4, 3, e_rgb8, e_rgb8_luma, e_rgb8, 0.0);
    check_fixture("rgba8.png", 5, 4, 3, e_rgb8, e_rgb8_luma, e_rgb8, 0.0);
    check_fixture("rgb16.png", 5, 4, 3, e_rgb16, e_rgb16_luma, e_rgb16, 0.0);
    check_fixture("rgba16.png", 5, 4, 3, e_rgb16, e_rgb16_luma, e_rgb16, 0.0);
    check_fixture("palette8.png", 5, 4, 3, e_pal, e_pal_luma, e_pal, 0.0);
    check_fixture("interlaced_rgb8.png", 9, 7, 3, e_rgb8, e_rgb8_luma, e_rgb8, 0.0);
    /* spot values: rgb8(4,3) = (209, 254, 249); luma (19595*209 + 38470*254 + 7471*249 + 32768) >> 16 = 240;
     * palette(1,1) = PALETTE[3] = (10, 20, 30) -> luma 18 */
    ex_image img;
    load_fixture("rgb8.png", 0, &img);
    const float *p = img.pixels + (3 * 5 + 4) * 3;
    assert_float_equal(p[0], 209.0f / 255.0f, 0.0);
    assert_float_equal(p[1], 254.0f / 255.0f, 0.0);
    assert_float_equal(p[2], 249.0f / 255.0f, 0.0);
    ex_image_free(&img);
    load_fixture("rgb8.png", 1, &img);
    assert_float_equal(img.pixels[3 * 5 + 4], 240.0f / 255.0f, 0.0);
    ex_image_free(&img);
    load_fixture("palette8.png", 1, &img);
    assert_float_equal(img.pixels[1 * 5 + 1], 18.0f / 255.0f, 0.0);
    ex_image_free(&img);
}

/* ---------------------------------------------------------------------------
 * JPEG against djpeg
 * --------------------------------------------------------------------------- */

/* Decode `jpg` with want channels and compare every value with the djpeg decode `ref`. */
static void check_jpeg(const char *jpg, const char *ref, int want) {
    char path[4096];
    fixture_path(path, sizeof path, ref);
    int w, h, c;
    unsigned char *px = read_pnm(path, &w, &h, &c);
    ex_image img;
    load_fixture(jpg, want, &img);
    int out_c = want ? want : c;
    assert_int_equal(img.width, w);
    assert_int_equal(img.height, h);
    assert_int_equal(img.channels, out_c);
    for (size_t i = 0; i < (size_t)w * h; i++) {
        const unsigned char *s = px + i * c;
        for (int k = 0; k < out_c; k++) {
            int v = c == out_c ? s[k] : c == 1 ? s[0] : pil_luma(s[0], s[1], s[2]);
            if (img.pixels[i * out_c + k] != (float)v / 255.0f)
                fail_msg("%s (want %d): pixel %zu channel %d is %.9g, djpeg gives %d/255", jpg, want, i, k,
                         img.pixels[i * out_c + k], v);
        }
    }
    ex_image_free(&img);
    free(px);
}

static void test_jpeg_matches_djpeg(void **state) {
    (void)state;
    const char *pairs[][2] = {{"rgb420.jpg", "rgb420.ppm"},
                              {"rgb444.jpg", "rgb444.ppm"},
                              {"progressive.jpg", "progressive.ppm"},
                              {"gray.jpg", "gray.pgm"}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        check_jpeg(pairs[i][0], pairs[i][1], 0);
        check_jpeg(pairs[i][0], pairs[i][1], 1);
        check_jpeg(pairs[i][0], pairs[i][1], 3);
    }
    /* the 17x13 4:2:0 file: a size that is not a multiple of the 16x16 MCU */
    ex_image img;
    load_fixture("rgb420.jpg", 0, &img);
    assert_int_equal(img.width, 17);
    assert_int_equal(img.height, 13);
    ex_image_free(&img);
}

static void test_cmyk_jpeg_refused(void **state) {
    (void)state;
    char path[4096];
    fixture_path(path, sizeof path, "cmyk.jpg");
    ex_image img;
    ex_err err;
    assert_int_equal(ex_image_load(path, 3, &img, &err), EX_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "CMYK"));
    assert_null(img.pixels);
}

/* ---------------------------------------------------------------------------
 * hostile inputs
 * --------------------------------------------------------------------------- */

static uint32_t crc32_png(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Offset of the chunk `type` (its length field) in a PNG, or fail. */
static size_t find_chunk(const unsigned char *png, size_t size, const char *type) {
    size_t off = 8;
    while (off + 12 <= size) {
        if (memcmp(png + off + 4, type, 4) == 0) return off;
        off += 12 + get_be32(png + off);
    }
    fail_msg("chunk %s not found", type);
    return 0;
}

/* Signature + IHDR (valid CRC) + IEND: enough for a decoder to see the size. */
static size_t make_png_header(unsigned char *buf, uint32_t w, uint32_t h) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    memcpy(buf, sig, 8);
    put_be32(buf + 8, 13);
    memcpy(buf + 12, "IHDR", 4);
    put_be32(buf + 16, w);
    put_be32(buf + 20, h);
    memcpy(buf + 24, (const unsigned char[]){8, 2, 0, 0, 0}, 5);
    put_be32(buf + 29, crc32_png(buf + 12, 17));
    put_be32(buf + 33, 0);
    memcpy(buf + 37, "IEND", 4);
    put_be32(buf + 41, crc32_png(buf + 37, 4));
    return 45;
}

/* Decode must fail with `code` and a message holding `name` and `needle`; the output stays empty. */
static void expect_fail(const void *data, size_t size, const char *name, int want, ex_status code,
                        const char *needle) {
    ex_image img = {1, 1, 1, (float *)&img};
    ex_err err;
    ex_err_clear(&err);
    ex_status st = ex_image_decode(data, size, name, want, &img, &err);
    if (st != code) fail_msg("%s: status %s, expected %s (%s)", name, ex_status_name(st), ex_status_name(code), err.msg);
    if (!strstr(err.msg, name)) fail_msg("%s: message does not name the image: %s", name, err.msg);
    if (needle && !strstr(err.msg, needle)) fail_msg("%s: message lacks '%s': %s", name, needle, err.msg);
    assert_null(img.pixels);
    assert_int_equal(img.width, 0);
}

static void test_hostile_png(void **state) {
    (void)state;
    size_t n;
    unsigned char *png = read_fixture("rgb8.png", &n);
    unsigned char *bad = malloc(n);

    expect_fail(png, n / 2, "truncated.png", 3, EX_E_FORMAT, "PNG");
    expect_fail(png, n - 12, "no-iend.png", 3, EX_E_FORMAT, "after the image data");
    expect_fail(png, 20, "cut-in-ihdr.png", 3, EX_E_FORMAT, "not a valid PNG");
    expect_fail(png, 8, "signature-only.png", 3, EX_E_FORMAT, "not a valid PNG");

    memcpy(bad, png, n); /* IHDR CRC */
    bad[8 + 8 + 13] ^= 0x01;
    expect_fail(bad, n, "ihdr-crc.png", 3, EX_E_FORMAT, NULL);

    size_t idat = find_chunk(png, n, "IDAT");
    uint32_t len = get_be32(png + idat);
    memcpy(bad, png, n); /* IDAT data changed, CRC left stale */
    bad[idat + 8 + len / 2] ^= 0x55;
    expect_fail(bad, n, "idat-crc.png", 3, EX_E_FORMAT, "corrupt or truncated PNG");

    memcpy(bad, png, n); /* zlib Adler-32 (last 4 data bytes) changed, chunk CRC fixed up */
    bad[idat + 8 + len - 1] ^= 0x01;
    put_be32(bad + idat + 8 + len, crc32_png(bad + idat + 4, len + 4));
    expect_fail(bad, n, "idat-adler.png", 3, EX_E_FORMAT, "corrupt or truncated PNG");

    unsigned char hdr[64];
    size_t hn = make_png_header(hdr, 100000, 1);
    expect_fail(hdr, hn, "wide.png", 3, EX_E_FORMAT, "exceeds the limit of 65535");
    hn = make_png_header(hdr, 30000, 30000);
    expect_fail(hdr, hn, "bomb.png", 3, EX_E_FORMAT, "exceeds the limit of 2^28");
    hn = make_png_header(hdr, 0x7FFFFFFF, 0x7FFFFFFF);
    expect_fail(hdr, hn, "huge.png", 0, EX_E_FORMAT, NULL);
    hn = make_png_header(hdr, 0, 5);
    expect_fail(hdr, hn, "zero.png", 3, EX_E_FORMAT, NULL);
    hn = make_png_header(hdr, 4, 4); /* a valid header but no IDAT */
    expect_fail(hdr, hn, "no-idat.png", 3, EX_E_FORMAT, NULL);

    /* the PNG signature followed by garbage */
    memcpy(bad, png, 8);
    for (size_t i = 8; i < n; i++) bad[i] = (unsigned char)(i * 131u + 7u);
    expect_fail(bad, n, "garbage.png", 3, EX_E_FORMAT, NULL);
    free(bad);
    free(png);
}

static void test_hostile_jpeg(void **state) {
    (void)state;
    size_t n;
    unsigned char *jpg = read_fixture("rgb420.jpg", &n);
    unsigned char *bad = malloc(n);

    expect_fail(jpg, n - 30, "truncated.jpg", 3, EX_E_FORMAT, "corrupt or truncated JPEG");
    expect_fail(jpg, n - 2, "no-eoi.jpg", 3, EX_E_FORMAT, "corrupt or truncated JPEG");
    expect_fail(jpg, n * 2 / 3, "cut-in-tables.jpg", 3, EX_E_FORMAT, "JPEG");
    expect_fail(jpg, 12, "cut-header.jpg", 3, EX_E_FORMAT, "not a valid JPEG");
    expect_fail(jpg, 3, "magic-only.jpg", 3, EX_E_FORMAT, "not a valid JPEG");

    /* the frame header (SOF0: FF C0, length, precision, height, width) with absurd sizes */
    size_t sof = 0;
    for (size_t i = 2; i + 9 < n; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) {
            sof = i;
            break;
        }
    assert_true(sof > 0);
    memcpy(bad, jpg, n);
    bad[sof + 5] = bad[sof + 6] = bad[sof + 7] = bad[sof + 8] = 0xFD; /* 65021 x 65021 */
    expect_fail(bad, n, "bomb.jpg", 3, EX_E_FORMAT, "exceeds the limit of 2^28");
    memcpy(bad, jpg, n);
    bad[sof + 5] = bad[sof + 6] = 0; /* height 0 */
    expect_fail(bad, n, "zero-height.jpg", 3, EX_E_FORMAT, NULL);
    memcpy(bad, jpg, n);
    bad[sof + 7] = bad[sof + 8] = 0xFF; /* width 65535: beyond libjpeg's own limit of 65500 */
    expect_fail(bad, n, "wide.jpg", 3, EX_E_FORMAT, NULL);

    /* JPEG magic followed by garbage */
    memcpy(bad, jpg, 3);
    for (size_t i = 3; i < n; i++) bad[i] = (unsigned char)(i * 97u + 13u);
    expect_fail(bad, n, "garbage.jpg", 3, EX_E_FORMAT, NULL);
    free(bad);
    free(jpg);
}

static void test_hostile_other(void **state) {
    (void)state;
    const char text[] = "<html>this is not an image</html>\n";
    expect_fail(text, sizeof text - 1, "page.jpg", 3, EX_E_FORMAT, "not a JPEG or PNG file (first bytes: 3c 68 74");
    expect_fail("", 0, "empty.png", 3, EX_E_FORMAT, "empty");
    unsigned char rnd[256];
    ex_rng r = ex_rng_seed(7, EX_RNG_TEST);
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (unsigned char)ex_rng_next_u32(&r);
    rnd[0] = 0x12; /* not a magic */
    expect_fail(rnd, sizeof rnd, "random.bin", 0, EX_E_FORMAT, "not a JPEG or PNG");
    expect_fail(text, 1, "one-byte", 3, EX_E_FORMAT, "not a JPEG or PNG");
    /* bad arguments */
    size_t n;
    unsigned char *png = read_fixture("gray8.png", &n);
    expect_fail(png, n, "two.png", 2, EX_E_INVALID, "1 (gray), 3 (RGB) or 0");
    expect_fail(png, n, "four.png", 4, EX_E_INVALID, NULL);
    expect_fail(png, n, "minus.png", -1, EX_E_INVALID, NULL);
    free(png);
    ex_err err;
    ex_image img;
    assert_int_equal(ex_image_decode(NULL, 10, "null", 3, &img, &err), EX_E_INVALID);
    assert_int_equal(ex_image_decode(text, 10, "null-out", 3, NULL, &err), EX_E_INVALID);
    assert_int_equal(ex_image_decode(text, 10, NULL, 3, &img, &err), EX_E_FORMAT);
    assert_non_null(strstr(err.msg, "<memory>"));
    ex_image_free(NULL);
}

static void expect_load_fail(const char *path, ex_status code, const char *needle) {
    ex_image img;
    ex_err err;
    ex_err_clear(&err);
    ex_status st = ex_image_load(path, 3, &img, &err);
    if (st != code) fail_msg("%s: status %s, expected %s (%s)", path, ex_status_name(st), ex_status_name(code), err.msg);
    if (!strstr(err.msg, path)) fail_msg("message does not name %s: %s", path, err.msg);
    if (needle && !strstr(err.msg, needle)) fail_msg("%s: message lacks '%s': %s", path, needle, err.msg);
    assert_null(img.pixels);
}

static void test_load_errors(void **state) {
    (void)state;
    char path[4096];
    expect_load_fail("/nonexistent/dir/x.png", EX_E_IO, "No such file");
    ext_tmp_path(path, sizeof path, "empty.jpg");
    ext_write_file(path, "", 0);
    expect_load_fail(path, EX_E_FORMAT, "empty");
    unlink(path);
    ext_tmp_path(path, sizeof path, "text.jpg");
    ext_write_file(path, "hello, I am text\n", 17);
    expect_load_fail(path, EX_E_FORMAT, "not a JPEG or PNG");
    unlink(path);
    ext_tmp_path(path, sizeof path, "dir.png");
    assert_int_equal(mkdir(path, 0755), 0);
    expect_load_fail(path, EX_E_IO, "directory");
    rmdir(path);
    /* a PNG named .jpg decodes: the content decides */
    size_t n;
    unsigned char *png = read_fixture("rgb8.png", &n);
    ext_tmp_path(path, sizeof path, "really-png.jpg");
    ext_write_file(path, png, n);
    free(png);
    ex_image img;
    ex_err err;
    EXT_OK(ex_image_load(path, 0, &img, &err), &err);
    check_image(&img, 5, 4, 3, e_rgb8, 0.0, "really-png.jpg");
    ex_image_free(&img);
    /* unreadable: only meaningful when not root (root reads anything) */
    assert_int_equal(chmod(path, 0), 0);
    if (geteuid() != 0)
        expect_load_fail(path, EX_E_IO, "Permission denied");
    else
        print_message("running as root: the unreadable-file case is not checkable, skipped\n");
    unlink(path);
}

/* Recompute the CRC of every complete chunk of a (mutated) PNG, so that mutations
 * reach the decoder behind the CRC check. */
static void fix_png_crcs(unsigned char *p, size_t n) {
    size_t off = 8;
    while (off + 12 <= n) {
        uint32_t len = get_be32(p + off);
        if (len > n - off - 12) return;
        put_be32(p + off + 8 + len, crc32_png(p + off + 4, (size_t)len + 4));
        off += 12 + (size_t)len;
    }
}

/* Every prefix of every fixture, and seeded random byte mutations (PNG CRCs fixed up
 * for half of them): never a crash, and any error names the image; a success gives
 * a sane image. (Meaningful under ASan+UBSan.) */
static void decode_must_not_crash(const unsigned char *data, size_t size, const char *name) {
    ex_image img;
    ex_err err;
    ex_err_clear(&err);
    ex_status st = ex_image_decode(data, size, name, 0, &img, &err);
    if (st != EX_OK) {
        if (!strstr(err.msg, name)) fail_msg("error does not name %s: %s", name, err.msg);
        assert_null(img.pixels);
        return;
    }
    assert_true(img.width > 0 && img.height > 0 && (img.channels == 1 || img.channels == 3));
    size_t np = (size_t)img.width * img.height * img.channels;
    for (size_t i = 0; i < np; i++) assert_true(img.pixels[i] >= 0.0f && img.pixels[i] <= 1.0f);
    ex_image_free(&img);
}

static void test_truncation_and_mutation_sweep(void **state) {
    (void)state;
    const char *names[] = {"gray8.png",  "gray16.png",      "gray4.png",  "graya8.png", "rgb8.png",
                           "rgb16.png",  "rgba8.png",       "rgba16.png", "palette8.png", "interlaced_rgb8.png",
                           "rgb420.jpg", "progressive.jpg", "gray.jpg",   "rgb444.jpg", "cmyk.jpg"};
    ex_rng r = ex_rng_seed(2024, EX_RNG_TEST);
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        size_t n;
        unsigned char *data = read_fixture(names[k], &n);
        for (size_t len = 0; len < n; len++) {
            unsigned char *cut = malloc(len ? len : 1); /* exact size, so ASan sees any over-read */
            memcpy(cut, data, len);
            decode_must_not_crash(cut, len, names[k]);
            free(cut);
        }
        unsigned char *mut = malloc(n);
        for (int t = 0; t < 600; t++) {
            memcpy(mut, data, n);
            int flips = 1 + (int)ex_rng_next_below(&r, 4);
            for (int f = 0; f < flips; f++) mut[ex_rng_next_below(&r, (uint32_t)n)] = (unsigned char)ex_rng_next_u32(&r);
            if (strstr(names[k], ".png") && (t & 1)) fix_png_crcs(mut, n);
            decode_must_not_crash(mut, n, names[k]);
        }
        free(mut);
        free(data);
    }
}

/* ---------------------------------------------------------------------------
 * real photos (python3-sklearn), checked against PIL and djpeg
 * --------------------------------------------------------------------------- */

#define SKLEARN_IMAGES "/usr/lib/python3/dist-packages/sklearn/datasets/images"

typedef struct photo_ref {
    const char *name;
    long long byte_sum, luma_sum; /* sum of all RGB bytes; of PIL's convert("L") bytes */
    int xy[4][2];
    int rgb[4][3];
    int luma[4];
} photo_ref;

/* Values read with PIL 9.4 (Debian python3-pil) from the same files. */
static const photo_ref PHOTOS[] = {
    {"china.jpg", 117812912, 39549312, {{0, 0}, {320, 213}, {639, 426}, {100, 300}},
     {{174, 201, 231}, {214, 191, 199}, {15, 24, 7}, {91, 89, 90}}, {196, 199, 19, 90}},
    {"flower.jpg", 50751787, 18076169, {{0, 0}, {320, 213}, {639, 426}, {100, 300}},
     {{2, 19, 13}, {143, 1, 0}, {9, 43, 27}, {6, 31, 27}}, {13, 43, 31, 23}},
};

static long long byte_sum(const ex_image *img) {
    long long s = 0;
    size_t np = (size_t)img->width * img->height * img->channels;
    for (size_t i = 0; i < np; i++) s += lrintf(img->pixels[i] * 255.0f);
    return s;
}

/* Compare a decode with `djpeg -pnm` of the same file, when djpeg is installed. */
static void compare_with_djpeg(const char *path, const ex_image *img) {
    if (system("command -v djpeg >/dev/null 2>&1") != 0) {
        print_message("djpeg not installed (libjpeg-turbo-progs): full comparison skipped for %s\n", path);
        return;
    }
    char ppm[4096], cmd[9000];
    ext_tmp_path(ppm, sizeof ppm, "djpeg.ppm");
    snprintf(cmd, sizeof cmd, "djpeg -pnm '%s' > '%s'", path, ppm);
    assert_int_equal(system(cmd), 0);
    int w, h, c;
    unsigned char *px = read_pnm(ppm, &w, &h, &c);
    assert_int_equal(w, img->width);
    assert_int_equal(h, img->height);
    assert_int_equal(c, 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        if (img->pixels[i] != (float)px[i] / 255.0f) fail_msg("%s: value %zu differs from djpeg", path, i);
    free(px);
    unlink(ppm);
}

static void check_photo(const photo_ref *ref) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", SKLEARN_IMAGES, ref->name);
    ex_image rgb, gray;
    ex_err err;
    EXT_OK(ex_image_load(path, 3, &rgb, &err), &err);
    EXT_OK(ex_image_load(path, 1, &gray, &err), &err);
    assert_int_equal(rgb.width, 640);
    assert_int_equal(rgb.height, 427);
    for (int k = 0; k < 4; k++) {
        size_t at = (size_t)ref->xy[k][1] * 640 + (size_t)ref->xy[k][0];
        for (int c = 0; c < 3; c++) assert_float_equal(rgb.pixels[at * 3 + c], ref->rgb[k][c] / 255.0f, 0.0);
        assert_float_equal(gray.pixels[at], ref->luma[k] / 255.0f, 0.0);
    }
    assert_int_equal(byte_sum(&rgb), ref->byte_sum);
    assert_int_equal(byte_sum(&gray), ref->luma_sum);
    compare_with_djpeg(path, &rgb);
    ex_image_free(&rgb);
    ex_image_free(&gray);
}

static void test_real_photos(void **state) {
    (void)state;
    if (access(SKLEARN_IMAGES "/china.jpg", R_OK) != 0) {
        print_message("python3-sklearn's photos not installed; skipping\n");
        skip();
    }
    for (size_t i = 0; i < sizeof PHOTOS / sizeof PHOTOS[0]; i++) check_photo(&PHOTOS[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_gray),
        cmocka_unit_test(test_png_rgb_rgba_palette),
        cmocka_unit_test(test_jpeg_matches_djpeg),
        cmocka_unit_test(test_cmyk_jpeg_refused),
        cmocka_unit_test(test_hostile_png),
        cmocka_unit_test(test_hostile_jpeg),
        cmocka_unit_test(test_hostile_other),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_truncation_and_mutation_sweep),
        cmocka_unit_test(test_real_photos),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
