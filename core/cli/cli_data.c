/*
 * core/cli/cli_data.c — `explora data CONFIG [--show N]`: open the dataset
 * chosen by [data], print its size and classes, and summarise N samples.
 */
#include <stdio.h>

#include "cli.h"

int cli_data(const cli_args *a) {
    if (a->npositional != 1) {
        fprintf(stderr, "explora: error: usage: explora data CONFIG.ini [--show N] [--set section.key=value ...]\n");
        return CLI_USAGE;
    }
    ex_session s;
    ex_err err;
    ex_err_clear(&err);
    ex_session_options opt = a->session;
    opt.config_path = a->positional[0];
    if (ex_session_open(&s, &opt, &err) != EX_OK) return cli_report(a, &err);
    const ex_plugin *p = NULL;
    void *ds = NULL;
    int rc = CLI_OK;
    if (ex_session_validate(&s, &err) != EX_OK || cli_open_dataset(&s, "data", &p, &ds, &err) != EX_OK) {
        rc = cli_report(a, &err);
        goto done;
    }
    const ex_dataset_vtable *vt = &p->vtable_copy.dataset;
    int64_t n = vt->length(ds);
    printf("dataset %s (%s %s): %lld samples", p->desc.name, p->path, p->desc.version, (long long)n);
    if (vt->num_classes) printf(", %lld classes", (long long)vt->num_classes(ds));
    printf("\n");
    for (int64_t i = 0; i < n && i < a->show; i++) {
        ex_sample smp = {0};
        if (vt->get(ds, i, &smp, &err) != EX_OK) {
            ex_err_prefix(&err, "dataset '%s', sample %lld: ", p->desc.name, (long long)i);
            rc = cli_report(a, &err);
            ex_sample_clear(&smp);
            break;
        }
        double sum = 0;
        size_t np = (size_t)smp.width * (size_t)smp.height * (size_t)smp.channels;
        for (size_t k = 0; k < np; k++) sum += smp.pixels[k];
        const char *cname = (vt->class_name && smp.label >= 0) ? vt->class_name(ds, smp.label) : NULL;
        printf("  #%lld %s: %dx%dx%d, label %lld%s%s%s, mean %.4f\n", (long long)i, smp.id, smp.height, smp.width,
               smp.channels, (long long)smp.label, cname ? " (" : "", cname ? cname : "", cname ? ")" : "",
               np ? sum / (double)np : 0.0);
        ex_sample_clear(&smp);
    }
    vt->close(ds);
done:
    ex_session_close(&s);
    return rc;
}
