/*
 * core/cli/cli_cache_key.c — the key of the feature caches that linprobe and
 * knn keep in their run directory: a hash of everything that decides the
 * features, so a cache is reused only when they would come out the same.
 *
 * It covers the checkpoint (path, size, mtime, which copy of the model) and every key of the resolved
 * config (includes and --set applied; where each value came from is left
 * out) except the sections that cannot change features: [run], [optim],
 * [objective], [analyze], [linprobe] and [knn]. The caller adds the keys of
 * its own section that do (sample limits, blocks). Hashing too much only
 * costs a recomputation; hashing too little gives stale features.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static uint64_t fnv1a(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; s && i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001B3ull;
    return h;
}

static uint64_t fnv1a_str(uint64_t h, const char *s) { return fnv1a(h, s, s ? strlen(s) : 0); }

static int feature_free_section(const char *line) {
    static const char *const skip[] = {"[run]", "[optim]", "[objective]", "[analyze]", "[linprobe]", "[knn]"};
    for (size_t k = 0; k < sizeof skip / sizeof *skip; k++)
        if (strcmp(line, skip[k]) == 0) return 1;
    return 0;
}

ex_status cli_feature_cache_key(const ex_session *s, const char *checkpoint, const char *copy, const char *const (*extra)[2], int nextra,
                                uint64_t *key, ex_err *err) {
    uint64_t h = 0xCBF29CE484222325ull;
    if (checkpoint) {
        struct stat sb;
        char buf[64];
        h = fnv1a_str(h, checkpoint);
        if (stat(checkpoint, &sb) == 0) {
            snprintf(buf, sizeof buf, "|%lld|%lld", (long long)sb.st_size, (long long)sb.st_mtime);
            h = fnv1a_str(h, buf);
        }
        h = fnv1a_str(h, "|copy=");
        h = fnv1a_str(h, copy ? copy : "auto");
    }
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    EX_ENSURE(mem, err, EX_E_NOMEM, "feature cache key: out of memory");
    ex_status st = ex_config_write(s->config, mem, err);
    fclose(mem);
    if (st != EX_OK) {
        free(text);
        return st;
    }
    int skipping = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        if (line[0] == '[') skipping = feature_free_section(line);
        if (skipping) continue;
        char *origin = strstr(line, "  ; "); /* where the value came from: not part of the value */
        h = fnv1a(h, line, origin ? (size_t)(origin - line) : strlen(line));
        h = fnv1a_str(h, "\n");
    }
    free(text);
    for (int k = 0; k < nextra; k++) {
        h = fnv1a_str(h, "|");
        h = fnv1a_str(h, ex_config_raw(s->config, extra[k][0], extra[k][1]));
    }
    *key = h;
    return EX_OK;
}
