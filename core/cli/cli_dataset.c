/*
 * core/cli/cli_dataset.c — open the dataset a config section names, for the
 * verbs that read one directly (data, bench data, feature extraction).
 */
#include "cli.h"

ex_status cli_open_dataset(const ex_session *s, const char *section, const ex_plugin **plugin, void **ds, ex_err *err) {
    ex_cfg_section view;
    *ds = NULL;
    EX_CHECK(ex_session_plugin(s, section, EX_PLUGIN_DATASET, NULL, plugin, &view, err));
    ex_status st = (*plugin)->vtable_copy.dataset.open(&view, ds, err);
    if (st != EX_OK) ex_err_prefix(err, "[%s] %s: ", section, (*plugin)->desc.name);
    return st;
}
