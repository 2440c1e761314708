/*
 * plugins/vit/vit_posembed.h — position tables: resampling a learned grid to
 * another size exactly as each reference implementation does, and MAE's fixed
 * 2-D sin-cos table.
 *
 * Resampling is separable: out (n_h, n_w, D) = R_h (n_h, M_h) . table (M_h, M_w, D) . R_w^T,
 * so a variant is just how the two 1-D weight matrices are built (ex_resample_weights).
 */
#ifndef EXPLORA_VIT_POSEMBED_H
#define EXPLORA_VIT_POSEMBED_H

#include <stdint.h>

typedef enum vit_interp {
    VIT_INTERP_DINOV2 = 0,    /* original DINOv2: bicubic A=-0.75 with scale factor (n+0.1)/M, no antialias */
    VIT_INTERP_SIZE = 1,      /* bicubic A=-0.75 to size n (step M/n), no antialias: HF Dinov2Model, MAE */
    VIT_INTERP_ANTIALIAS = 2  /* antialiased bicubic (A=-0.5, PIL-style support): timm, DINOv2 _reg models */
} vit_interp;

/* MAE's get_2d_sincos_pos_embed: table (1 + gh*gw, dim), row 0 (cls) zeros;
 * token k = i*gw + j (row i, column j) gets [sin(j w), cos(j w), sin(i w), cos(i w)],
 * each dim/4 wide, w_f = 10000^(-f/(dim/4)); computed in double, rounded to float.
 * With cls = 0 the cls row is omitted. dim must be a multiple of 4. */
void vit_sincos_table(int64_t dim, int64_t gh, int64_t gw, int cls, float *table);

#endif
