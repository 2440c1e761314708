/*
 * plugins/vit/vit_attention.c — the backbone's optional `attention` slot:
 * the attention probabilities of the cls token over every token of one block
 * in the last forward, recomputed on the host from the block's cached qkv
 * activations (the fused attention op keeps only the log-sum-exp, not the
 * probabilities). qkv rows are laid out (3, heads, head_dim):
 *
 *   probs[b, h, j] = softmax_j( q[b, 0, h, :] . k[b, j, h, :] / sqrt(head_dim) )
 *
 * With activation recomputation the recomputed blocks share one buffer, so
 * of those only the last one's survives a forward (vit_block_acts_kept).
 */
#include <math.h>
#include <stdlib.h>

#include "vit_internal.h"

ex_status vit_attention(void *self, int64_t i, float *probs, ex_err *err) {
    vit *v = self;
    const vit_arch *a = &v->a;
    EX_ENSURE(v->block_acts && v->last.tokens, err, EX_E_INVALID, "vit: attention() before a forward");
    EX_ENSURE(i >= 0 && i < a->depth, err, EX_E_RANGE, "vit: attention of block %lld (depth %lld)", (long long)i,
              (long long)a->depth);
    EX_ENSURE(vit_block_acts_kept(v, i), err, EX_E_UNSUPPORTED,
              "vit: block %lld's activations are not kept (recompute on: blocks from %lld on have their own, and "
              "after a forward block %lld's are in the shared buffer; planned for inference only: only the last "
              "block's)",
              (long long)i, (long long)a->recompute, (long long)(v->shared_acts ? a->depth - 1 : a->recompute - 1));
    EX_ENSURE(!v->pingpong, err, EX_E_UNSUPPORTED,
              "vit: planned for final tokens only (inference over chunks of images): no attention maps are kept");
    EX_ENSURE(probs, err, EX_E_INVALID, "vit: attention() needs an output buffer");
    const int64_t B = v->last.batch, T = v->ntok, D = a->dim, H = a->heads, hs = D / H;
    float *rows = malloc(sizeof(float) * (size_t)(T * 3 * D));
    double *s = malloc(sizeof(double) * (size_t)T);
    ex_status st = EX_OK;
    if (!rows || !s) {
        st = ex_err_set(err, EX_E_NOMEM, __FILE__, __LINE__, "vit: out of memory");
        goto done;
    }
    const double scale = 1.0 / sqrt((double)hs);
    for (int64_t b = 0; b < B && st == EX_OK; b++) {
        /* qkv as the block keeps it (fp32, or bf16 under [optim] activation_dtype = bf16), widened */
        st = ex_be_download_as(v->be, rows, v->block_acts[i].qkv, v->blocks[i].act_dtype, b * T * 3 * D, T * 3 * D,
                               err);
        if (st != EX_OK) break;
        for (int64_t h = 0; h < H; h++) {
            const float *q = rows + h * hs; /* token 0 (cls), q part */
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < T; j++) {
                const float *k = rows + j * 3 * D + D + h * hs;
                double dot = 0;
                for (int64_t c = 0; c < hs; c++) dot += (double)q[c] * (double)k[c];
                s[j] = dot * scale;
                if (s[j] > mx) mx = s[j];
            }
            for (int64_t j = 0; j < T; j++) sum += (s[j] = exp(s[j] - mx));
            float *out = probs + (b * H + h) * T;
            for (int64_t j = 0; j < T; j++) out[j] = (float)(s[j] / sum);
        }
    }
done:
    free(rows);
    free(s);
    return st;
}
