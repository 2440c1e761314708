/*
 * tests/support/test_tiff.h — write small TIFF fixtures with libtiff itself
 * (tests of the TIFF decoder and of the fmow-sentinel plugin).
 */
#ifndef EXPLORA_TEST_TIFF_H
#define EXPLORA_TEST_TIFF_H

#include <stdint.h>

/* What to write. Sample (y, x, band) gets ttf_value(spec, y, x, band). */
typedef struct ttf_spec {
    int width, height, spp;
    int bps;         /* 8, 16, 32 */
    int format;      /* SAMPLEFORMAT_UINT / INT / IEEEFP */
    int separate;    /* planar configuration 2 */
    int tile;        /* tile side (multiple of 16), 0 for strips */
    int rows_per_strip;
    int photometric; /* PHOTOMETRIC_* */
    int compression; /* COMPRESSION_* (NONE, LZW, ADOBE_DEFLATE) */
    int predictor;   /* 1 none, 2 horizontal */
    int alpha;       /* declare the last sample as unassociated alpha */
    /* value(y, x, b) = base + step_b * b + step_y * y + x (then cast to the sample type) */
    double base, step_b, step_y;
} ttf_spec;

/* A spec of w x h x spp uint16 samples, contiguous strips of 2 rows, no compression. */
ttf_spec ttf_default(int w, int h, int spp);

/* The value written at (y, x, b), as the sample type holds it. */
double ttf_value(const ttf_spec *s, int y, int x, int b);

/* Write the TIFF (fails the test on error). */
void ttf_write(const char *path, const ttf_spec *s);

/* Write with explicit values: values[(y * w + x) * spp + b], as doubles cast to the sample type. */
void ttf_write_values(const char *path, const ttf_spec *s, const double *values);

#endif /* EXPLORA_TEST_TIFF_H */
