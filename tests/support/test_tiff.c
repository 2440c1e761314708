/*
 * tests/support/test_tiff.c — TIFF fixture writer (see test_tiff.h).
 */
#include "test_tiff.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
/* cmocka.h needs the includes above */
#include <cmocka.h>

ttf_spec ttf_default(int w, int h, int spp) {
    ttf_spec s;
    memset(&s, 0, sizeof s);
    s.width = w;
    s.height = h;
    s.spp = spp;
    s.bps = 16;
    s.format = SAMPLEFORMAT_UINT;
    s.rows_per_strip = 2;
    s.photometric = PHOTOMETRIC_MINISBLACK;
    s.compression = COMPRESSION_NONE;
    s.predictor = 1;
    s.base = 1000;
    s.step_b = 100;
    s.step_y = 10;
    return s;
}

double ttf_value(const ttf_spec *s, int y, int x, int b) {
    double v = s->base + s->step_b * b + s->step_y * y + x;
    if (s->format == SAMPLEFORMAT_IEEEFP) return (double)(float)v;
    return v;
}

static void put_sample(const ttf_spec *s, unsigned char *dst, double v) {
    int f = s->format;
    if (s->bps == 8 && f == SAMPLEFORMAT_UINT) *dst = (uint8_t)v;
    else if (s->bps == 8) *(int8_t *)dst = (int8_t)v;
    else if (s->bps == 16 && f == SAMPLEFORMAT_UINT) memcpy(dst, &(uint16_t){(uint16_t)v}, 2);
    else if (s->bps == 16) memcpy(dst, &(int16_t){(int16_t)v}, 2);
    else if (f == SAMPLEFORMAT_IEEEFP) memcpy(dst, &(float){(float)v}, 4);
    else if (f == SAMPLEFORMAT_UINT) memcpy(dst, &(uint32_t){(uint32_t)v}, 4);
    else memcpy(dst, &(int32_t){(int32_t)v}, 4);
}

static void set_fields(TIFF *t, const ttf_spec *s) {
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, (uint32_t)s->width);
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, (uint32_t)s->height);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, (uint16_t)s->spp);
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, (uint16_t)s->bps);
    TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, (uint16_t)s->format);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, (uint16_t)(s->separate ? PLANARCONFIG_SEPARATE : PLANARCONFIG_CONTIG));
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, (uint16_t)s->photometric);
    TIFFSetField(t, TIFFTAG_COMPRESSION, (uint16_t)s->compression);
    if (s->compression != COMPRESSION_NONE) TIFFSetField(t, TIFFTAG_PREDICTOR, (uint16_t)s->predictor);
    int base_colors = s->photometric == PHOTOMETRIC_RGB ? 3 : 1;
    if (s->spp > base_colors) {
        uint16_t extra[1024];
        int n = s->spp - base_colors;
        for (int i = 0; i < n; i++) extra[i] = EXTRASAMPLE_UNSPECIFIED;
        if (s->alpha) extra[n - 1] = EXTRASAMPLE_UNASSALPHA;
        TIFFSetField(t, TIFFTAG_EXTRASAMPLES, (uint16_t)n, extra);
    }
    if (s->tile) {
        TIFFSetField(t, TIFFTAG_TILEWIDTH, (uint32_t)s->tile);
        TIFFSetField(t, TIFFTAG_TILELENGTH, (uint32_t)s->tile);
    } else {
        TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, (uint32_t)s->rows_per_strip);
    }
}

/* Fill a block of bw x bh pixels at (x0, y0) for `plane` (-1: all samples). */
static size_t fill_block(const ttf_spec *s, const double *values, int x0, int y0, int bw, int bh, int plane,
                         unsigned char *buf) {
    size_t sb = (size_t)s->bps / 8, k = 0;
    int nb = plane < 0 ? s->spp : 1;
    for (int y = y0; y < y0 + bh; y++)
        for (int x = x0; x < x0 + bw; x++)
            for (int i = 0; i < nb; i++, k++) {
                int b = plane < 0 ? i : plane;
                double v = 0;
                if (y < s->height && x < s->width)
                    v = values ? values[((size_t)y * s->width + x) * s->spp + b] : ttf_value(s, y, x, b);
                put_sample(s, buf + k * sb, v);
            }
    return k * sb;
}

static void write_blocks(TIFF *t, const ttf_spec *s, const double *values) {
    int planes = s->separate ? s->spp : 1;
    int bw = s->tile ? s->tile : s->width, bh = s->tile ? s->tile : s->rows_per_strip;
    unsigned char *buf = malloc((size_t)bw * bh * s->spp * 8);
    for (int p = 0; p < planes; p++)
        for (int y = 0; y < s->height; y += bh)
            for (int x = 0; x < s->width; x += bw) {
                int rows = s->tile || y + bh <= s->height ? bh : s->height - y;
                size_t n = fill_block(s, values, x, y, bw, rows, s->separate ? p : -1, buf);
                tmsize_t r = s->tile ? TIFFWriteEncodedTile(t, TIFFComputeTile(t, (uint32_t)x, (uint32_t)y, 0, (uint16_t)p), buf, (tmsize_t)n)
                                     : TIFFWriteEncodedStrip(t, TIFFComputeStrip(t, (uint32_t)y, (uint16_t)p), buf, (tmsize_t)n);
                if (r < 0) fail_msg("ttf_write: writing a block failed");
            }
    free(buf);
}

void ttf_write_values(const char *path, const ttf_spec *s, const double *values) {
    TIFF *t = TIFFOpen(path, "w");
    if (!t) fail_msg("ttf_write: cannot create %s", path);
    set_fields(t, s);
    write_blocks(t, s, values);
    TIFFClose(t);
}

void ttf_write(const char *path, const ttf_spec *s) { ttf_write_values(path, s, NULL); }
