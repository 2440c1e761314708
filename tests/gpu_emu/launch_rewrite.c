/*
 * tests/gpu_emu/launch_rewrite.c — a build-time tool of the GPU emulator: copies a .cu source
 * and turns every kernel launch
 *
 *     KERNEL<<<grid, block[, smem[, stream]]>>>(args)
 *
 * into a call a C++ host compiler accepts,
 *
 *     emu_launch(grid, block[, smem[, stream]], [&]() { KERNEL(args); })
 *
 * (emu_launch: tests/gpu_emu/include/hip/hip_runtime.h). KERNEL is a name, possibly qualified
 * and with template arguments. Newlines are kept, and the output starts with a #line directive
 * naming the source, so compiler messages point at the original file and line.
 *
 *   launch_rewrite IN.cu OUT.cpp     exit 0, or 1 with a message naming IN and its line
 *
 * A file-scope `extern __shared__ [__align__(N)] TYPE NAME[];` (dynamic shared memory) becomes
 * `#define NAME ((TYPE *)emu_dynamic_smem)`, the launch's buffer.
 *
 * Comments, string and character literals are copied untouched. The output is written to
 * OUT.tmp and renamed, so an interrupted build never leaves a half-written OUT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static int put(buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int line_of(const char *s, size_t pos) {
    int line = 1;
    for (size_t i = 0; i < pos; i++) line += s[i] == '\n';
    return line;
}

static size_t count_nl(const char *s, size_t a, size_t b) {
    size_t n = 0;
    for (size_t i = a; i < b; i++) n += s[i] == '\n';
    return n;
}

static int is_ident(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == ':';
}

/* Past a comment or literal starting at i (or i itself when there is none there). */
static size_t skip_opaque(const char *s, size_t n, size_t i) {
    if (s[i] == '/' && i + 1 < n && s[i + 1] == '/') {
        while (i < n && s[i] != '\n') i++;
        return i;
    }
    if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
        const char *e = strstr(s + i + 2, "*/");
        return e ? (size_t)(e - s) + 2 : n;
    }
    if (s[i] == '"' || s[i] == '\'') {
        const char q = s[i++];
        while (i < n && s[i] != q) i += s[i] == '\\' ? 2 : 1;
        return i < n ? i + 1 : n;
    }
    return i;
}

/* Index of the bracket closing the one at `open` (nested pairs of that kind), or n. */
static size_t match_forward(const char *s, size_t n, size_t open, char o, char c) {
    int depth = 0;
    for (size_t i = open; i < n;) {
        const size_t j = skip_opaque(s, n, i);
        if (j != i) {
            i = j;
            continue;
        }
        if (s[i] == o) depth++;
        if (s[i] == c && --depth == 0) return i;
        i++;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: launch_rewrite IN.cu OUT.cpp\n");
        return 1;
    }
    const char *in = argv[1], *out = argv[2];
    FILE *f = fopen(in, "rb");
    if (!f) {
        fprintf(stderr, "launch_rewrite: cannot open %s\n", in);
        return 1;
    }
    buf src = {0}, dst = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (put(&src, chunk, got)) {
            fprintf(stderr, "launch_rewrite: out of memory reading %s\n", in);
            fclose(f);
            return 1;
        }
    fclose(f);
    if (!src.p) put(&src, "", 0);
    const char *s = src.p;
    const size_t n = src.n;

    char head[4200];
    snprintf(head, sizeof head, "#line 1 \"%s\"\n", in);
    put(&dst, head, strlen(head));
    size_t copied = 0;
    for (size_t i = 0; i < n;) {
        const size_t j = skip_opaque(s, n, i);
        if (j != i) {
            i = j;
            continue;
        }
        if (strncmp(s + i, "extern __shared__", 17) == 0 && (i == 0 || s[i - 1] == '\n')) {
            /* extern __shared__ [__align__(N)] TYPE NAME[];  ->  #define NAME ((TYPE *)emu_dynamic_smem) */
            const char *semi = strchr(s + i, ';');
            size_t t0 = i + 17;
            while (t0 < n && s[t0] == ' ') t0++;
            if (strncmp(s + t0, "__align__(", 10) == 0) {
                const size_t close = match_forward(s, n, t0 + 9, '(', ')');
                t0 = close < n ? close + 1 : n;
                while (t0 < n && s[t0] == ' ') t0++;
            }
            const char *br = semi ? memchr(s + t0, '[', (size_t)(semi - (s + t0))) : NULL;
            size_t ne = br ? (size_t)(br - s) : t0, nb = ne;
            while (nb > t0 && is_ident(s[nb - 1])) nb--;
            size_t te = nb;
            while (te > t0 && s[te - 1] == ' ') te--;
            if (!semi || !br || nb == ne || te == t0 || count_nl(s, i, (size_t)(semi - s)) != 0) {
                fprintf(stderr, "%s:%d: launch_rewrite: cannot parse this extern __shared__ declaration\n", in,
                        line_of(s, i));
                return 1;
            }
            put(&dst, s + copied, i - copied);
            put(&dst, "#define ", 8);
            put(&dst, s + nb, ne - nb);
            put(&dst, " ((", 3);
            put(&dst, s + t0, te - t0);
            put(&dst, " *)emu_dynamic_smem)", 20);
            copied = i = (size_t)(semi - s) + 1;
            continue;
        }
        if (strncmp(s + i, "<<<", 3) != 0) {
            i++;
            continue;
        }
        /* the kernel expression: NAME or NAME<template args>, right before <<< */
        size_t k = i;
        while (k > copied && (s[k - 1] == ' ' || s[k - 1] == '\t' || s[k - 1] == '\n')) k--;
        if (k > copied && s[k - 1] == '>') {
            int depth = 0;
            do {
                k--;
                if (s[k] == '>') depth++;
                if (s[k] == '<') depth--;
            } while (k > copied && depth > 0);
        }
        while (k > copied && is_ident(s[k - 1])) k--;
        const size_t cfg0 = i + 3;
        const char *close = strstr(s + cfg0, ">>>");
        if (k == i || !close) {
            fprintf(stderr, "%s:%d: launch_rewrite: cannot parse this kernel launch\n", in, line_of(s, i));
            return 1;
        }
        const size_t cfg1 = (size_t)(close - s);
        size_t p = cfg1 + 3;
        while (p < n && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n')) p++;
        const size_t args_end = p < n && s[p] == '(' ? match_forward(s, n, p, '(', ')') : n;
        if (args_end >= n) {
            fprintf(stderr, "%s:%d: launch_rewrite: no argument list after <<<...>>>\n", in, line_of(s, i));
            return 1;
        }
        size_t kend = i;
        while (kend > k && (s[kend - 1] == ' ' || s[kend - 1] == '\t' || s[kend - 1] == '\n')) kend--;
        put(&dst, s + copied, k - copied);
        put(&dst, "emu_launch(", 11);
        put(&dst, s + cfg0, cfg1 - cfg0);
        put(&dst, ", [&]() { ", 10);
        put(&dst, s + k, kend - k);
        put(&dst, s + p, args_end + 1 - p);
        put(&dst, "; })", 4);
        /* the newlines that fell between the pieces, so later lines keep their numbers */
        const size_t lost = count_nl(s, kend, cfg0) + count_nl(s, cfg1, p);
        for (size_t m = 0; m < lost; m++) put(&dst, "\n", 1);
        copied = i = args_end + 1;
    }
    put(&dst, s + copied, n - copied);

    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    FILE *o = fopen(tmp, "wb");
    if (!o) {
        fprintf(stderr, "launch_rewrite: cannot write %s\n", tmp);
        return 1;
    }
    const int ok = fwrite(dst.p, 1, dst.n, o) == dst.n;
    if (fclose(o) != 0 || !ok || rename(tmp, out) != 0) {
        fprintf(stderr, "launch_rewrite: writing %s failed\n", out);
        remove(tmp);
        return 1;
    }
    free(src.p);
    free(dst.p);
    return 0;
}
