/*
 * core/cli/cli_plugins.c — `explora plugins`: what was found, where, and why
 * anything was rejected; `--keys NAME` documents a plugin's config keys.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static int print_keys(const ex_session *s, const char *name) {
    if (strcmp(name, "core") == 0) {
        /* the core's own sections (plugin sections such as [backbone] are documented by their plugin) */
        const struct {
            const char *section;
            const ex_key_spec *keys;
        } core[] = {{"run", ex_core_run_keys()},           {"plugins", ex_core_plugins_keys()},
                    {"optim", ex_core_optim_keys()},       {"transform", ex_core_transform_keys()},
                    {"peft", ex_core_peft_keys()},         {"linprobe", ex_core_linprobe_keys()},
                    {"knn", ex_core_knn_keys()},           {"analyze", ex_core_analyze_keys()}};
        for (size_t i = 0; i < sizeof core / sizeof core[0]; i++) {
            printf("%s[%s]\n", i ? "\n" : "", core[i].section);
            ex_key_specs_print(core[i].keys, stdout);
        }
        return CLI_OK;
    }
    int found = 0;
    for (int i = 0; i < ex_registry_count(s->registry); i++) {
        const ex_plugin *p = ex_registry_at(s->registry, i);
        if (strcmp(p->desc.name, name) != 0) continue;
        found++;
        printf("%s plugin '%s' %s — %s\n  %s\n\n", ex_plugin_kind_name(p->desc.kind), p->desc.name, p->desc.version,
               p->desc.description, p->path);
        printf("  name = %s   (selects this plugin)\n", p->desc.name);
        if (p->desc.keys && p->desc.keys[0].name)
            ex_key_specs_print(p->desc.keys, stdout);
        else
            printf("  (no other keys)\n");
        printf("\n");
    }
    if (!found) {
        fprintf(stderr, "explora: error: no plugin named '%s' was found. Run 'explora plugins' to list them.\n", name);
        return CLI_FAILED;
    }
    return CLI_OK;
}

int cli_plugins(const cli_args *a) {
    ex_session s;
    ex_err err;
    ex_err_clear(&err);
    ex_session_options opt = a->session;
    opt.config_path = a->npositional > 0 ? a->positional[0] : NULL;
    if (ex_session_open(&s, &opt, &err) != EX_OK) return cli_report(a, &err);
    int rc = CLI_OK;
    if (a->keys_of) {
        rc = print_keys(&s, a->keys_of);
    } else {
        printf("search path:\n");
        for (int i = 0; i < ex_registry_dir_count(s.registry); i++) printf("  %s\n", ex_registry_dir_at(s.registry, i));
        printf("\nplugins (%d):\n", ex_registry_count(s.registry));
        printf("  %-10s %-16s %-9s %s\n", "kind", "name", "version", "path");
        for (int i = 0; i < ex_registry_count(s.registry); i++) {
            const ex_plugin *p = ex_registry_at(s.registry, i);
            printf("  %-10s %-16s %-9s %s\n", ex_plugin_kind_name(p->desc.kind), p->desc.name, p->desc.version, p->path);
        }
        int nr = ex_registry_rejected_count(s.registry);
        if (nr) {
            printf("\nrejected (%d):\n", nr);
            for (int i = 0; i < nr; i++) {
                const ex_plugin_rejection *r = ex_registry_rejected_at(s.registry, i);
                printf("  %s\n", r->reason); /* the reason starts with the file's path */
            }
        }
        printf("\n'explora plugins --keys NAME' lists the config keys of a plugin.\n");
    }
    ex_session_close(&s);
    return rc;
}
