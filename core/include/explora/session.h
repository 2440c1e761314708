/*
 * explora/session.h — what every verb starts from: the effective config (file,
 * includes, --set overrides), the plugin registry searched in the documented
 * order, and validation of the whole config against the core's own section
 * schemas and the schema each selected plugin declares — all before any heavy
 * work starts.
 */
#ifndef EXPLORA_SESSION_H
#define EXPLORA_SESSION_H

#include "explora/backend.h"
#include "explora/config.h"
#include "explora/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EX_SESSION_MAX_SETS 64
#define EX_SESSION_MAX_DIRS 16

typedef struct ex_session_options {
    const char *config_path;                      /* NULL: empty config */
    const char *sets[EX_SESSION_MAX_SETS];        /* "section.key=value" overrides, in order */
    int nsets;
    const char *plugin_dirs[EX_SESSION_MAX_DIRS]; /* --plugin-path, searched first */
    int ndirs;
} ex_session_options;

typedef struct ex_session {
    ex_config *config;
    ex_registry *registry;
} ex_session;

/* Load config + overrides, set up the registry (config [plugins] path, options'
 * dirs, then the defaults) and scan it. */
EX_API ex_status ex_session_open(ex_session *s, const ex_session_options *opt, ex_err *err);
EX_API void ex_session_close(ex_session *s);

/* Validate every section: known sections only; core sections against their
 * schemas; plugin sections ([backend], [data]) name an existing plugin whose
 * declared keys accept every key given. */
EX_API ex_status ex_session_validate(const ex_session *s, ex_err *err);

/* The plugin named by `section`'s `name` key (default `default_name` when the
 * key is absent; NULL default: the key is required), checked to be of `kind`;
 * fills a schema-bound view of the section for its init/open. */
EX_API ex_status ex_session_plugin(const ex_session *s, const char *section, ex_plugin_kind kind,
                                   const char *default_name, const ex_plugin **plugin, ex_cfg_section *view,
                                   ex_err *err);

/* Start the backend chosen by [backend] (default "cpu"). */
EX_API ex_status ex_session_backend(const ex_session *s, ex_backend *be, ex_err *err);

/* The core's own keys, for `explora plugins --keys core` and for validation. */
EX_API const ex_key_spec *ex_core_run_keys(void);
EX_API const ex_key_spec *ex_core_plugins_keys(void);
EX_API const ex_key_spec *ex_core_optim_keys(void);
EX_API const ex_key_spec *ex_core_transform_keys(void);
EX_API const ex_key_spec *ex_core_peft_keys(void);
EX_API const ex_key_spec *ex_core_linprobe_keys(void);
EX_API const ex_key_spec *ex_core_knn_keys(void);
EX_API const ex_key_spec *ex_core_analyze_keys(void);

#ifdef __cplusplus
}
#endif
#endif /* EXPLORA_SESSION_H */
