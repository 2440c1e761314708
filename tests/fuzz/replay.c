/*
 * tests/fuzz/replay.c — a plain driver for the fuzz harnesses, built without
 * clang or libFuzzer: runs LLVMFuzzerTestOneInput once on every file named
 * on the command line, or in a folder named there (sorted, not recursive).
 * Exit status 0 when every input ran (a crash or sanitizer report fails it).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"

static int run_file(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, fp)) > 0) {
        n += r;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    fclose(fp);
    if (!buf) return 1;
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int run_dir(const char *dir, int *count) {
    struct dirent **list = NULL;
    int n = scandir(dir, &list, NULL, NULL);
    if (n < 0) {
        fprintf(stderr, "replay: cannot read %s\n", dir);
        return 1;
    }
    char **names = malloc(sizeof *names * (size_t)(n ? n : 1));
    int k = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        if (list[i]->d_name[0] != '.') names[k++] = strdup(list[i]->d_name);
        free(list[i]);
    }
    free(list);
    qsort(names, (size_t)k, sizeof *names, name_cmp);
    for (int i = 0; i < k; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        bad |= run_file(path);
        (*count)++;
        free(names[i]);
    }
    free(names);
    return bad;
}

int main(int argc, char **argv) {
    int bad = 0, count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
            bad |= run_dir(argv[i], &count);
        } else {
            bad |= run_file(argv[i]);
            count++;
        }
    }
    printf("replay: %d input(s)%s\n", count, bad ? ", some unreadable" : "");
    return bad || count == 0;
}
