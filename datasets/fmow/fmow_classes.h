/*
 * datasets/fmow/fmow_classes.h — the 62 fMoW categories in the order every
 * fMoW code base indexes them (fMoW README, SatMAE, ExPLoRA): label i is
 * fmow_class_names[i]. Shared by the fmow and fmow-sentinel plugins.
 */
#ifndef EXPLORA_FMOW_CLASSES_H
#define EXPLORA_FMOW_CLASSES_H

#define FMOW_NUM_CLASSES 62

extern const char *const fmow_class_names[FMOW_NUM_CLASSES];

/* Index of `name` in fmow_class_names, or -1. */
int fmow_class_index(const char *name);

#endif /* EXPLORA_FMOW_CLASSES_H */
