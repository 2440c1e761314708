/*
 * core/src/image_internal.h — the contract between the format-neutral part of
 * the image decoder (core/src/image.c: conversion to float, channel rules)
 * and the TIFF reader (core/src/image_tiff.c, libtiff). Not installed.
 */
#ifndef EXPLORA_IMAGE_INTERNAL_H
#define EXPLORA_IMAGE_INTERNAL_H

#include <stddef.h>

#include "explora/status.h"

/* The type of one stored sample. */
typedef enum exi_sample_type {
    EXI_U8 = 0,
    EXI_U16,
    EXI_U32,
    EXI_I8,
    EXI_I16,
    EXI_I32,
    EXI_F32,
    EXI_F64
} exi_sample_type;

/* Decoded samples in their stored type and native byte order, interleaved
 * (height, width, spp) whatever the file's planar configuration. */
typedef struct exi_samples {
    void *data; /* malloc'ed, width * height * spp samples */
    int width, height;
    int spp;    /* samples per pixel, alpha included */
    int alpha;  /* 1 when the last sample is a declared alpha channel (ExtraSamples), else 0 */
    exi_sample_type type;
} exi_samples;

/* Size in bytes of one sample of `t`. */
size_t exi_sample_bytes(exi_sample_type t);

/* 1 when the bytes start with a classic or BigTIFF signature (II*\0, MM\0*, II+\0, MM\0+). */
int exi_is_tiff(const unsigned char *p, size_t n);

/* Read the first image (IFD 0) of an in-memory TIFF. On failure out->data is
 * NULL. Errors: EX_E_FORMAT (corrupt, truncated, too large), EX_E_UNSUPPORTED
 * (a valid TIFF this reader does not handle: palette, CMYK, YCbCr, 1-bit ...),
 * EX_E_NOMEM. libtiff's own messages are captured into `err`, never printed. */
ex_status exi_tiff_read(const unsigned char *data, size_t size, const char *name, exi_samples *out, ex_err *err);

#endif /* EXPLORA_IMAGE_INTERNAL_H */
