/*
 * core/cli/analyze_draw.c — drawing for `explora analyze` (see analyze.h):
 * an RGB canvas with rectangles, thick lines and a 5x7 bitmap font; line
 * plots with axes, numbered ticks, grid and a legend; attention heat maps
 * blended over grayscale images; PNG files written with libspng.
 */
#include <math.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze.h"
#include "explora/fileio.h"

/* --- canvas --------------------------------------------------------------------------------- */

ex_status an_canvas_new(an_canvas *c, int w, int h, const uint8_t bg[3], ex_err *err) {
    memset(c, 0, sizeof *c);
    EX_ENSURE(w >= 1 && h >= 1 && w <= 32768 && h <= 32768, err, EX_E_INVALID, "canvas: bad size %dx%d", w, h);
    c->px = malloc((size_t)w * (size_t)h * 3);
    EX_ENSURE(c->px, err, EX_E_NOMEM, "canvas: out of memory for %dx%d", w, h);
    c->w = w;
    c->h = h;
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++) memcpy(c->px + 3 * i, bg, 3);
    return EX_OK;
}

void an_canvas_free(an_canvas *c) {
    free(c->px);
    memset(c, 0, sizeof *c);
}

static void put(an_canvas *c, int x, int y, const uint8_t rgb[3]) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    memcpy(c->px + 3 * ((size_t)y * (size_t)c->w + (size_t)x), rgb, 3);
}

void an_fill_rect(an_canvas *c, int x, int y, int w, int h, const uint8_t rgb[3]) {
    for (int j = y; j < y + h; j++)
        for (int i = x; i < x + w; i++) put(c, i, j, rgb);
}

/* Bresenham; a thick line stamps a thick x thick square at every step. */
void an_line(an_canvas *c, int x0, int y0, int x1, int y1, int thick, const uint8_t rgb[3]) {
    const int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    const int lo = -(thick - 1) / 2;
    int e = dx + dy;
    for (;;) {
        an_fill_rect(c, x0 + lo, y0 + lo, thick, thick, rgb);
        if (x0 == x1 && y0 == y1) break;
        const int e2 = 2 * e;
        if (e2 >= dy) e += dy, x0 += sx;
        if (e2 <= dx) e += dx, y0 += sy;
    }
}

/* --- 5x7 bitmap font ------------------------------------------------------------------------ */

typedef struct glyph {
    char c;
    const char *rows[7];
} glyph;

static const glyph k_font[] = {
    {'0', {" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "}},
    {'1', {"  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "}},
    {'2', {" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"}},
    {'3', {"#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "}},
    {'4', {"   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "}},
    {'5', {"#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "}},
    {'6', {"  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "}},
    {'7', {"#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "}},
    {'8', {" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "}},
    {'9', {" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "}},
    {'A', {" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"}},
    {'B', {"#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "}},
    {'C', {" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "}},
    {'D', {"###  ", "#  # ", "#   #", "#   #", "#   #", "#  # ", "###  "}},
    {'E', {"#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"}},
    {'F', {"#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "}},
    {'G', {" ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ####"}},
    {'H', {"#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"}},
    {'I', {" ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "}},
    {'J', {"  ###", "   # ", "   # ", "   # ", "   # ", "#  # ", " ##  "}},
    {'K', {"#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"}},
    {'L', {"#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"}},
    {'M', {"#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"}},
    {'N', {"#   #", "#   #", "##  #", "# # #", "#  ##", "#   #", "#   #"}},
    {'O', {" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "}},
    {'P', {"#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "}},
    {'Q', {" ### ", "#   #", "#   #", "#   #", "# # #", "#  # ", " ## #"}},
    {'R', {"#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"}},
    {'S', {" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "}},
    {'T', {"#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "}},
    {'U', {"#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "}},
    {'V', {"#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  "}},
    {'W', {"#   #", "#   #", "#   #", "# # #", "# # #", "# # #", " # # "}},
    {'X', {"#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"}},
    {'Y', {"#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "}},
    {'Z', {"#####", "    #", "   # ", "  #  ", " #   ", "#    ", "#####"}},
    {'.', {"     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "}},
    {'-', {"     ", "     ", "     ", "#####", "     ", "     ", "     "}},
    {'+', {"     ", "  #  ", "  #  ", "#####", "  #  ", "  #  ", "     "}},
    {'_', {"     ", "     ", "     ", "     ", "     ", "     ", "#####"}},
    {'(', {"   # ", "  #  ", " #   ", " #   ", " #   ", "  #  ", "   # "}},
    {')', {" #   ", "  #  ", "   # ", "   # ", "   # ", "  #  ", " #   "}},
    {'%', {"##   ", "##  #", "   # ", "  #  ", " #   ", "#  ##", "   ##"}},
    {':', {"     ", " ##  ", " ##  ", "     ", " ##  ", " ##  ", "     "}},
    {'/', {"     ", "    #", "   # ", "  #  ", " #   ", "#    ", "     "}},
    {'=', {"     ", "     ", "#####", "     ", "#####", "     ", "     "}},
    {',', {"     ", "     ", "     ", "     ", " ##  ", "  #  ", " #   "}},
    {'[', {" ### ", " #   ", " #   ", " #   ", " #   ", " #   ", " ### "}},
    {']', {" ### ", "   # ", "   # ", "   # ", "   # ", "   # ", " ### "}},
    {'?', {" ### ", "#   #", "    #", "   # ", "  #  ", "     ", "  #  "}},
};

static const glyph *find_glyph(char ch) {
    if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
    const size_t n = sizeof k_font / sizeof k_font[0];
    for (size_t i = 0; i < n; i++)
        if (k_font[i].c == ch) return &k_font[i];
    return &k_font[n - 1];
}

int an_text_width(const char *s, int scale) { return (int)strlen(s) * 6 * scale; }

void an_text(an_canvas *c, int x, int y, const char *s, int scale, const uint8_t rgb[3]) {
    for (; *s; s++, x += 6 * scale) {
        if (*s == ' ') continue;
        const glyph *g = find_glyph(*s);
        for (int r = 0; r < 7; r++)
            for (int q = 0; q < 5; q++)
                if (g->rows[r][q] == '#') an_fill_rect(c, x + q * scale, y + r * scale, scale, scale, rgb);
    }
}

/* --- colours, overlays ---------------------------------------------------------------------- */

static double clamp01(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }
static uint8_t to8(double v) { return (uint8_t)lround(clamp01(v) * 255.0); }

void an_colormap(double t, uint8_t rgb[3]) {
    t = clamp01(t);
    rgb[0] = to8(1.5 - fabs(4.0 * t - 3.0));
    rgb[1] = to8(1.5 - fabs(4.0 * t - 2.0));
    rgb[2] = to8(1.5 - fabs(4.0 * t - 1.0));
}

void an_palette(int i, uint8_t rgb[3]) {
    static const uint8_t pal[10][3] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},   {214, 39, 40},  {148, 103, 189},
                                       {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
    memcpy(rgb, pal[(i % 10 + 10) % 10], 3);
}

/* Bilinear sample of map (gh, gw) at the centre of output pixel (ox, oy) of (th, tw) (align_corners = False). */
static double bilinear(const float *map, int64_t gh, int64_t gw, int ox, int oy, int tw, int th) {
    double sx = ((double)ox + 0.5) * (double)gw / (double)tw - 0.5, sy = ((double)oy + 0.5) * (double)gh / (double)th - 0.5;
    if (sx < 0) sx = 0;
    if (sy < 0) sy = 0;
    if (sx > (double)(gw - 1)) sx = (double)(gw - 1);
    if (sy > (double)(gh - 1)) sy = (double)(gh - 1);
    const int64_t x0 = (int64_t)sx, y0 = (int64_t)sy, x1 = x0 + 1 < gw ? x0 + 1 : x0, y1 = y0 + 1 < gh ? y0 + 1 : y0;
    const double fx = sx - (double)x0, fy = sy - (double)y0;
    return (1 - fy) * ((1 - fx) * map[y0 * gw + x0] + fx * map[y0 * gw + x1]) +
           fy * ((1 - fx) * map[y1 * gw + x0] + fx * map[y1 * gw + x1]);
}

void an_overlay(an_canvas *c, int x, int y, int tw, int th, const float *gray, int64_t h, int64_t w, const float *map,
                int64_t gh, int64_t gw, double alpha) {
    double lo = INFINITY, hi = -INFINITY;
    if (map)
        for (int64_t i = 0; i < gh * gw; i++) {
            if (map[i] < lo) lo = map[i];
            if (map[i] > hi) hi = map[i];
        }
    const double range = hi > lo ? hi - lo : 1.0;
    for (int oy = 0; oy < th; oy++)
        for (int ox = 0; ox < tw; ox++) {
            const int64_t sy = (int64_t)oy * h / th, sx = (int64_t)ox * w / tw;
            const double g = clamp01(gray[sy * w + sx]);
            uint8_t px[3] = {to8(g), to8(g), to8(g)};
            if (map) {
                uint8_t heat[3];
                an_colormap((bilinear(map, gh, gw, ox, oy, tw, th) - lo) / range, heat);
                for (int k = 0; k < 3; k++) px[k] = to8(alpha * heat[k] / 255.0 + (1 - alpha) * g);
            }
            put(c, x + ox, y + oy, px);
        }
}

/* --- line plots ----------------------------------------------------------------------------- */

/* A "nice" tick step for a range split into about n intervals: 1, 2 or 5 times a power of ten. */
static double nice_step(double range, int n) {
    const double raw = range / n, p = pow(10.0, floor(log10(raw))), f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

static void fmt_tick(char *buf, size_t cap, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;
    if (step >= 1 && fabs(v) < 1e6)
        snprintf(buf, cap, "%.0f", v);
    else if (step >= 1e-3 && fabs(v) < 1e6) {
        const int dec = (int)ceil(-log10(step) - 1e-9);
        snprintf(buf, cap, "%.*f", dec < 0 ? 0 : dec, v);
    } else
        snprintf(buf, cap, "%.2g", v);
}

ex_status an_plot_render(an_canvas *c, const char *title, const char *xlabel, const an_series *s, int ns, ex_err *err) {
    static const uint8_t white[3] = {255, 255, 255}, black[3] = {0, 0, 0}, grid[3] = {225, 225, 225};
    int legend_w = 0;
    for (int i = 0; i < ns; i++) {
        const int w = an_text_width(s[i].name, 1) + 40;
        if (w > legend_w) legend_w = w;
    }
    const int W = 560 + legend_w, H = 400, x0 = 70, x1 = 540, y0 = 40, y1 = 340;
    EX_CHECK(an_canvas_new(c, W, H, white, err));
    /* data ranges */
    double lo = INFINITY, hi = -INFINITY;
    int64_t nx = 1;
    for (int i = 0; i < ns; i++) {
        if (s[i].n > nx) nx = s[i].n;
        for (int64_t k = 0; k < s[i].n; k++)
            if (isfinite(s[i].y[k])) {
                if (s[i].y[k] < lo) lo = s[i].y[k];
                if (s[i].y[k] > hi) hi = s[i].y[k];
            }
    }
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-12 * (fabs(hi) + 1)) lo -= 0.5 * (fabs(lo) + 1e-3), hi += 0.5 * (fabs(hi) + 1e-3);
    const double step = nice_step(hi - lo, 5);
    const double ylo = floor(lo / step) * step, yhi = ceil(hi / step) * step;
    const double xmax = nx > 1 ? (double)(nx - 1) : 1.0;
#define PX(xv) (x0 + (int)lround((double)(xv) / xmax * (double)(x1 - x0)))
#define PY(yv) (y1 - (int)lround(((yv) - ylo) / (yhi - ylo) * (double)(y1 - y0)))
    char buf[64];
    /* y grid and ticks */
    for (double v = ylo; v <= yhi + step * 1e-6; v += step) {
        const int py = PY(v);
        an_line(c, x0, py, x1, py, 1, grid);
        an_line(c, x0 - 5, py, x0, py, 1, black);
        fmt_tick(buf, sizeof buf, v, step);
        an_text(c, x0 - 8 - an_text_width(buf, 1), py - 3, buf, 1, black);
    }
    /* x ticks at block indices (every k-th number when crowded) */
    const int64_t every = nx <= 16 ? 1 : nx <= 32 ? 2 : nx <= 64 ? 4 : (nx + 15) / 16;
    for (int64_t k = 0; k < nx; k++) {
        const int px = PX(k);
        an_line(c, px, y1, px, y1 + (k % every == 0 ? 5 : 3), 1, black);
        if (k % every == 0) {
            snprintf(buf, sizeof buf, "%lld", (long long)k);
            an_text(c, px - an_text_width(buf, 1) / 2, y1 + 9, buf, 1, black);
        }
    }
    /* axes, labels, title */
    an_line(c, x0, y0, x0, y1, 1, black);
    an_line(c, x0, y1, x1, y1, 1, black);
    an_text(c, (x0 + x1) / 2 - an_text_width(xlabel, 1) / 2, y1 + 26, xlabel, 1, black);
    an_text(c, (x0 + x1) / 2 - an_text_width(title, 2) / 2, 12, title, 2, black);
    /* curves and point markers */
    for (int i = 0; i < ns; i++) {
        uint8_t col[3];
        an_palette(i, col);
        int have = 0, px_prev = 0, py_prev = 0;
        for (int64_t k = 0; k < s[i].n; k++) {
            if (!isfinite(s[i].y[k])) {
                have = 0;
                continue;
            }
            const int px = PX(k), py = PY(s[i].y[k]);
            if (have) an_line(c, px_prev, py_prev, px, py, 2, col);
            an_fill_rect(c, px - 2, py - 2, 5, 5, col);
            have = 1, px_prev = px, py_prev = py;
        }
    }
#undef PX
#undef PY
    /* legend: swatch + name per series */
    for (int i = 0; i < ns; i++) {
        uint8_t col[3];
        an_palette(i, col);
        const int ly = y0 + 4 + 16 * i;
        an_fill_rect(c, x1 + 16, ly, 14, 9, col);
        an_text(c, x1 + 36, ly + 1, s[i].name, 1, black);
    }
    return EX_OK;
}

/* --- PNG ------------------------------------------------------------------------------------ */

ex_status an_png_write(const char *path, const uint8_t *rgb, int w, int h, ex_err *err) {
    EX_ENSURE(w >= 1 && h >= 1, err, EX_E_INVALID, "png: bad size %dx%d", w, h);
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    EX_ENSURE(ctx, err, EX_E_NOMEM, "png: out of memory");
    ex_status st = EX_OK;
    void *png = NULL;
    size_t len = 0;
    struct spng_ihdr ihdr;
    memset(&ihdr, 0, sizeof ihdr);
    ihdr.width = (uint32_t)w;
    ihdr.height = (uint32_t)h;
    ihdr.bit_depth = 8;
    ihdr.color_type = SPNG_COLOR_TYPE_TRUECOLOR;
    int rc = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    if (!rc) rc = spng_set_ihdr(ctx, &ihdr);
    if (!rc) rc = spng_encode_image(ctx, rgb, (size_t)w * (size_t)h * 3, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    if (!rc) png = spng_get_png_buffer(ctx, &len, &rc);
    if (rc || !png) {
        st = ex_err_set(err, EX_E_FORMAT, __FILE__, __LINE__, "png: encoding %s failed: %s", path, spng_strerror(rc));
    } else {
        ex_atomic_file f;
        st = ex_atomic_open(&f, path, err);
        if (st == EX_OK) {
            if (fwrite(png, 1, len, f.fp) != len) {
                ex_atomic_abort(&f);
                st = ex_err_set(err, EX_E_IO, __FILE__, __LINE__, "png: cannot write %s", path);
            } else {
                st = ex_atomic_commit(&f, err);
            }
        }
    }
    free(png);
    spng_ctx_free(ctx);
    return st;
}
