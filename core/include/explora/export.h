/*
 * explora/export.h — symbol visibility for libexplora and for plugins.
 *
 * Everything is compiled with hidden visibility. EX_API marks the functions
 * libexplora exports to the CLI and to plugins; EX_PLUGIN_EXPORT marks the one
 * entry symbol a plugin exports to the loader.
 */
#ifndef EXPLORA_EXPORT_H
#define EXPLORA_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define EX_API __attribute__((visibility("default")))
#define EX_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define EX_API
#define EX_PLUGIN_EXPORT
#endif

#endif /* EXPLORA_EXPORT_H */
