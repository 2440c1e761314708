/*
 * core/cli/cli_slim.c — `explora slim CKPT --out FILE [--keep PREFIX,...]`:
 * the part of a run checkpoint that a later run starts from, without the
 * optimiser moments, the student copy, RNG streams or loader position.
 *
 * A DINOv2 run checkpoint holds the student ("param."), its AdamW moments, the
 * EMA teacher ("objective.teacher.") and the teacher's heads
 * ("objective.teacher_head."), about four copies of the model. `[backbone]
 * weights` and `[objective] head_weights` read only the teacher and its heads,
 * so those are what slim keeps by default: a quarter of the bytes, and the
 * tensors keep their names and dtypes so both loaders take the slim file as
 * they take the full one. The metadata is copied; the output is written
 * atomically (temporary file, fsync, rename).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "explora/safetensors.h"

#define SLIM_MAX_PREFIXES 16

static const char *const k_default_keep = "objective.teacher.,objective.teacher_head.";

/* Split "a,b,c" (spaces trimmed) into prefix[] pointing into buf. */
static int split_prefixes(const char *list, char *buf, size_t cap, const char **prefix, int max) {
    snprintf(buf, cap, "%s", list);
    int n = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        while (*tok == ' ') tok++;
        char *e = tok + strlen(tok);
        while (e > tok && e[-1] == ' ') *--e = '\0';
        if (!*tok) continue;
        if (n == max) return -1;
        prefix[n++] = tok;
    }
    return n;
}

static ex_status slim(const char *in, const char *out, const char *keep, int *kept, ex_err *err) {
    char buf[2048];
    const char *prefix[SLIM_MAX_PREFIXES];
    const int np = split_prefixes(keep, buf, sizeof buf, prefix, SLIM_MAX_PREFIXES);
    EX_ENSURE(np > 0, err, EX_E_INVALID, "--keep '%s' names no prefix (or more than %d); give comma-separated name prefixes",
              keep, SLIM_MAX_PREFIXES);
    ex_st_file *f = NULL;
    ex_st_writer *w = NULL;
    ex_status st;
    EX_CHECK(ex_st_open(&f, in, err));
    EX_CHECK_GOTO(ex_st_writer_new(&w, err), st, done);
    *kept = 0;
    for (int i = 0; i < ex_st_count(f); i++) {
        const ex_st_entry *e = ex_st_at(f, i);
        int match = 0;
        for (int p = 0; p < np && !match; p++) match = strncmp(e->name, prefix[p], strlen(prefix[p])) == 0;
        if (!match) continue;
        EX_CHECK_GOTO(ex_st_writer_add(w, e->name, e->dtype, e->ndim, e->shape, ex_st_data(f, e), err), st, done);
        ++*kept;
    }
    if (*kept == 0) {
        /* say what the file does hold, so the user can pick a prefix */
        char seen[512] = "";
        size_t len = 0;
        for (int i = 0; i < ex_st_count(f) && len + 64 < sizeof seen; i++) {
            const char *n = ex_st_at(f, i)->name;
            const char *dot = strchr(n, '.');
            int plen = dot ? (int)(dot - n + 1) : (int)strlen(n);
            if (dot && strncmp(n, "objective.", 10) == 0 && strchr(dot + 1, '.')) plen = (int)(strchr(dot + 1, '.') - n + 1);
            char pre[128];
            snprintf(pre, sizeof pre, "%.*s", plen < 127 ? plen : 127, n);
            if (strstr(seen, pre)) continue;
            len += (size_t)snprintf(seen + len, sizeof seen - len, "%s'%s'", len ? ", " : "", pre);
        }
        EX_FAIL_GOTO(err, st, done, EX_E_INVALID,
                     "no tensor of '%s' starts with '%s'. Its names start with: %s. Pass --keep with some of those.", in,
                     keep, seen[0] ? seen : "(none: the file is empty)");
    }
    for (int i = 0; i < ex_st_metadata_count(f); i++) {
        const char *k = ex_st_metadata_key_at(f, i);
        EX_CHECK_GOTO(ex_st_writer_metadata(w, k, ex_st_metadata(f, k), err), st, done);
    }
    EX_CHECK_GOTO(ex_st_writer_finish(w, out, err), st, done);
    st = EX_OK;
done:
    ex_st_writer_free(w); /* the writer points into f's mapping: free it first */
    ex_st_close(f);
    return st;
}

int cli_slim(const cli_args *a) {
    if (a->npositional != 1 || !a->out) {
        fprintf(stderr, "explora: error: usage: explora slim CHECKPOINT.safetensors --out FILE.safetensors "
                        "[--keep PREFIX,...]   (default: %s)\n",
                k_default_keep);
        return CLI_USAGE;
    }
    if (strcmp(a->positional[0], a->out) == 0) {
        fprintf(stderr, "explora: error: slim: --out '%s' is the input checkpoint; write to another file.\n", a->out);
        return CLI_USAGE;
    }
    ex_err err;
    ex_err_clear(&err);
    int kept = 0;
    const char *keep = a->keep ? a->keep : k_default_keep;
    if (slim(a->positional[0], a->out, keep, &kept, &err) != EX_OK) return cli_report(a, &err);
    printf("wrote %s: %d tensors whose names start with %s\n", a->out, kept, keep);
    return CLI_OK;
}
