/*
 * core/cli/cli_features.c — the feature sets of linprobe and knn: read from
 * their cache file when present, else extracted from a dataset section
 * through the model and cached (explora/features.h).
 */
#include <stdio.h>
#include <unistd.h>

#include "cli.h"

ex_status cli_features_for(ex_model *m, ex_session *s, const char *section, const char *cache, const ex_feature_opts *o,
                           ex_features *f, int64_t *classes, ex_err *err) {
    if (classes) *classes = 0;
    if (access(cache, R_OK) == 0) {
        printf("features: %s (cached)\n", cache);
        return ex_features_load(f, cache, err);
    }
    const ex_plugin *p;
    void *ds = NULL;
    EX_CHECK(cli_open_dataset(s, section, &p, &ds, err));
    const ex_dataset_vtable *vt = &p->vtable_copy.dataset;
    ex_status st;
    if (classes && vt->num_classes) *classes = vt->num_classes(ds);
    st = ex_features_extract(m, vt, ds, o, f, isatty(fileno(stdout)) ? stdout : NULL, err);
    vt->close(ds);
    if (st != EX_OK) {
        ex_err_prefix(err, "[%s] ", section);
        return st;
    }
    if (f->skipped > 0)
        printf("features [%s]: %lld unreadable samples dropped ([run] skip_bad), %lld kept; the first: %s\n", section,
               (long long)f->skipped, (long long)f->n, f->first_skip.msg);
    return ex_features_save(f, cache, err);
}
