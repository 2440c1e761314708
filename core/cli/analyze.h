/*
 * core/cli/analyze.h — the numerics and drawing behind `explora analyze`
 * (core/cli/cli_analyze.c; what is computed: docs/ANALYSIS.md). Internal to
 * the CLI; tests/test_analyze.c compiles analyze_stats.c and analyze_draw.c in.
 *
 *   analyze_stats.c  covariance spectra (OpenBLAS dsyrk + LAPACKE dsyevd),
 *                    per-token linear probes (ex_linear_probe on the backend),
 *                    image selection and the train/test split
 *   analyze_draw.c   RGB canvas, 5x7 bitmap font, line plots, heat-map
 *                    overlays, PNG writing with libspng
 */
#ifndef EXPLORA_CLI_ANALYZE_H
#define EXPLORA_CLI_ANALYZE_H

#include <stdint.h>

#include "explora/backend.h"
#include "explora/status.h"

/* --- spectra ------------------------------------------------------------------------------ */

/* Eigenvalues of the covariance of the n tokens x (n, d): centre each feature over the tokens, then
 * the eigenvalues of Xc^T Xc / (n - 1) in descending order into eig (min(n, d) of them; the d x d
 * covariance has the same non-zero eigenvalues as the n x n Gram matrix Xc Xc^T / (n - 1), and the
 * smaller of the two is decomposed). *count gets min(n, d). n >= 2. */
ex_status an_cov_eigenvalues(const float *x, int64_t n, int64_t d, double *eig, int64_t *count, ex_err *err);

/* Mean of the top-k eigenvalues of that covariance for each k of ks (k is clipped to min(n, d)). */
ex_status an_spectrum_topk(const float *x, int64_t n, int64_t d, const int64_t *ks, int nk, double *means,
                           ex_err *err);

/* Mean and (population) standard deviation of v (n). */
void an_mean_std(const double *v, int64_t n, double *mean, double *std);

/* --- per-token linear probes ---------------------------------------------------------------- */

typedef struct an_probe_opts {
    double lrs[16];
    int nlrs;
    int64_t epochs, batch;
    uint64_t seed;
} an_probe_opts;

/* A linear softmax classifier from a token (d) to a label in [0, classes): the features are
 * standardised with the training tokens' per-feature mean and std, one classifier per learning
 * rate is trained with explora's linear-probe SGD (ex_linear_probe: momentum 0.9, cosine schedule,
 * cross-entropy) and *acc gets the best top-1 (%) on the test tokens. */
ex_status an_token_probe(ex_backend *be, const float *xtr, const int64_t *ytr, int64_t ntr, const float *xte,
                         const int64_t *yte, int64_t nte, int64_t d, int64_t classes, const an_probe_opts *o,
                         double *acc, ex_err *err);

/* --- image selection ------------------------------------------------------------------------ */

/* The dataset index of the i-th of n images spread evenly over a dataset of `len`. */
int64_t an_pick(int64_t i, int64_t n, int64_t len);
/* Whether the i-th of n images is a probe test image: round(n * frac) of them, interleaved
 * (at least one test and one training image when n >= 2). */
int an_is_test(int64_t i, int64_t n, double frac);

/* --- drawing ------------------------------------------------------------------------------ */

typedef struct an_canvas {
    int w, h;
    uint8_t *px; /* (h, w, 3) RGB */
} an_canvas;

ex_status an_canvas_new(an_canvas *c, int w, int h, const uint8_t bg[3], ex_err *err);
void an_canvas_free(an_canvas *c);
void an_fill_rect(an_canvas *c, int x, int y, int w, int h, const uint8_t rgb[3]);
void an_line(an_canvas *c, int x0, int y0, int x1, int y1, int thick, const uint8_t rgb[3]);
/* Text in the 5x7 bitmap font (upper case, digits, . - + _ ( ) % : / = , [ ]; lower case drawn as
 * upper case, other characters as '?'), each glyph cell 6 x 8 pixels times `scale`. */
void an_text(an_canvas *c, int x, int y, const char *s, int scale, const uint8_t rgb[3]);
int an_text_width(const char *s, int scale);

/* The "jet" colour map: t in [0, 1] -> blue .. cyan .. yellow .. red. */
void an_colormap(double t, uint8_t rgb[3]);

/* A heat map (gh, gw), min-max normalised, bilinearly upsampled to (th, tw) and blended
 * (alpha heat + (1 - alpha) gray) over the grayscale image gray (h, w) in [0, 1] (resampled to the
 * tile by nearest neighbour), drawn into c at (x, y). map == NULL draws the image alone. */
void an_overlay(an_canvas *c, int x, int y, int tw, int th, const float *gray, int64_t h, int64_t w, const float *map,
                int64_t gh, int64_t gw, double alpha);

/* One curve per series of a line plot: y[i] at x = i (NaN values are left out). */
typedef struct an_series {
    const char *name;
    const double *y;
    int64_t n;
} an_series;

/* A line plot: axes, ticks with numbers on both, grid lines, the title above and a legend with
 * colour swatches at the right. */
ex_status an_plot_render(an_canvas *c, const char *title, const char *xlabel, const an_series *s, int ns, ex_err *err);

/* The i-th colour of the plots' palette. */
void an_palette(int i, uint8_t rgb[3]);

/* Write an 8-bit RGB image (h, w, 3) as PNG with libspng (atomically: a temporary file renamed). */
ex_status an_png_write(const char *path, const uint8_t *rgb, int w, int h, ex_err *err);

#endif /* EXPLORA_CLI_ANALYZE_H */
