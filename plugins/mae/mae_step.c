/*
 * plugins/mae/mae_step.c — one MAE training step: random masking, the
 * encoder on the kept patches, the decoder, the pixel loss and the whole
 * backward (models_mae.py forward + engine_pretrain.py's loss.backward()).
 *
 * Masking (random_masking, per image b of B, L patches):
 *   noise[b, l] = ex_rng_uniform_at(rng->key, rng->offset, g*L + l)   for all b, l,
 *   g = b * world + rank the image's place in the GLOBAL batch of the step (the loader's
 *   sharding gives rank r the images r, r + world, ... of it); then
 *   rng->offset += B*world*L (one process: g = b, so image b's draw is the backend's
 *   rng_permutation at offset + b*L: the same numbers on every backend). N ranks at
 *   batch B thus mask every image exactly as one rank at batch N B does.
 *   ids_shuffle = stable argsort of noise[b] ascending (ties by patch index),
 *   ids_keep = ids_shuffle[:keep], ids_restore = argsort(ids_shuffle),
 *   mask[b, l] = 1 for removed patches (ids_restore >= keep), original order.
 *
 * Loss (forward_loss): target = patchify(view) in (ky, kx, c) order; with
 * norm_pix_loss each patch becomes (t - mean) / sqrt(var + 1e-6) with the
 * UNBIASED variance (K - 1 divisor). That is a LayerNorm over the K values of a
 * patch with eps' = 1e-6 (K - 1) / K and weight sqrt((K - 1) / K):
 *   (t - mu) / sqrt(var_b + eps') * sqrt((K-1)/K) = (t - mu) / sqrt(var_b K/(K-1) + 1e-6).
 * loss = sum over removed patches of mean_K (pred - target)^2 / #removed (over the batch)
 *      = sumsq((pred - target) * mask) / (K * #removed);
 * dL/dpred = 2 (pred - target) * mask / (K * #removed). The target has no gradient.
 * Several ranks: #removed is the GLOBAL count (all-reduced) divided by world, so a rank's loss is
 * world x its share of the global loss and the trainer's average of the ranks' gradients is the
 * gradient of (loss * mask).sum() / mask.sum() over the global batch.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mae_internal.h"

#define F(t) ((float *)(t).data)
#define I32(t) ((int32_t *)(t).data)

#define OP(m, call, what)                                                                                   \
    do {                                                                                                    \
        ex_status op__s = (m)->env.be->vt.call;                                                             \
        if (op__s != EX_OK) EX_FAIL(err, op__s, "mae: %s failed on backend '%s'", what, (m)->env.be->name); \
    } while (0)

/* Ascending by value, ties by index: a stable argsort. */
static int cmp_key(const void *pa, const void *pb) {
    const mae_key *a = pa, *b = pb;
    if (a->u != b->u) return a->u < b->u ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

void mae_draw_masks(mae *m, int64_t B, ex_rng *rng) {
    const int64_t L = m->L, keep = m->keep, T = 1 + L;
    const int64_t world = ex_comm_world(m->env.comm), rank = ex_comm_rank(m->env.comm);
    mae_key *keys = m->sort_keys;
    for (int64_t b = 0; b < B; b++) {
        float *noise = m->noise + b * L;
        const int64_t g = b * world + rank; /* place in the step's global batch */
        for (int64_t l = 0; l < L; l++) {
            noise[l] = ex_rng_uniform_at(rng->key, rng->offset, (uint64_t)(g * L + l));
            keys[l].u = noise[l];
            keys[l].i = (int32_t)l;
        }
        qsort(keys, (size_t)L, sizeof *keys, cmp_key);
        int32_t *restore = m->ids_restore + b * L, *full = m->idx_full + b * T;
        for (int64_t j = 0; j < L; j++) {
            if (j < keep) m->ids_keep[b * keep + j] = keys[j].i;
            restore[keys[j].i] = (int32_t)j;
        }
        full[0] = 0;
        for (int64_t l = 0; l < L; l++) {
            /* cat = [cls, kept (keep), mask tokens (L - keep)]: patch l sits at 1 + its rank */
            full[1 + l] = 1 + restore[l];
            m->mask[b * L + l] = restore[l] >= keep;
            m->maskf[b * L + l] = restore[l] >= keep ? 1.0f : 0.0f;
        }
    }
    rng->offset += (uint64_t)(B * world * L);
}

/* m->target (or m->patches) from the view; returns the target pointer. */
static ex_status make_target(mae *m, const float *view, int64_t B, const float **target, ex_err *err) {
    void *c = m->env.be->ctx;
    const int64_t L = m->L, K = m->K;
    OP(m, patchify_fwd(c, F(m->patches), view, B, m->channels, m->height, m->width, m->patch, EX_PATCH_PPC),
       "patchify_fwd");
    if (!m->norm_pix) {
        *target = F(m->patches);
        return EX_OK;
    }
    const double kk = (double)K;
    OP(m, fill(c, F(m->t_w), (float)sqrt((kk - 1.0) / kk), K), "fill");
    OP(m, fill(c, F(m->t_b), 0.0f, K), "fill");
    OP(m, layernorm_fwd(c, F(m->target), F(m->t_mean), F(m->t_rstd), F(m->patches), F(m->t_w), F(m->t_b), B * L, K,
                        (float)(1e-6 * (kk - 1.0) / kk)),
       "layernorm_fwd");
    *target = F(m->target);
    return EX_OK;
}

ex_status mae_step(void *self, const ex_batch *batch, ex_rng *rng, int64_t iteration, ex_loss_terms *out,
                   ex_err *err) {
    mae *m = self;
    (void)iteration;
    ex_backend *be = m->env.be;
    void *c = be->ctx;
    EX_ENSURE(m->planned && m->block_acts && F(m->xs), err, EX_E_INVALID,
              "mae: step() before the memory plan was committed");
    EX_ENSURE(m->weights_ready, err, EX_E_INVALID, "mae: step() before init() or load() gave the decoder weights");
    EX_ENSURE(!m->lora || m->lora_ready, err, EX_E_INVALID,
              "mae: the decoder LoRA tensors were neither initialised (init) nor loaded");
    EX_ENSURE(batch && batch->nviews >= 1 && batch->views[0] && rng && out, err, EX_E_INVALID,
              "mae: step() needs one view, an rng and an output");
    const int64_t B = batch->batch;
    EX_ENSURE(B >= 1 && B <= m->Bmax, err, EX_E_SHAPE, "mae: batch %lld outside the planned 1..%lld", (long long)B,
              (long long)m->Bmax);
    EX_ENSURE(batch->height[0] == m->height && batch->width[0] == m->width, err, EX_E_SHAPE,
              "mae: the view is %lldx%lld, [objective] image_size is %lldx%lld", (long long)batch->height[0],
              (long long)batch->width[0], (long long)m->height, (long long)m->width);
    mae_bind_activations(m);
    const int64_t L = m->L, keep = m->keep, K = m->K;

    /* masks */
    mae_draw_masks(m, B, rng);
    EX_CHECK(ex_be_upload(be, m->ids_keep_d.data, m->ids_keep, sizeof(int32_t) * (size_t)(B * keep), err));
    EX_CHECK(ex_be_upload(be, m->idx_full_d.data, m->idx_full, sizeof(int32_t) * (size_t)(B * (1 + L)), err));
    EX_CHECK(ex_be_upload(be, m->maskf_d.data, m->maskf, sizeof(float) * (size_t)(B * L), err));

    /* encoder on the kept patches */
    ex_backbone_io io;
    memset(&io, 0, sizeof io);
    io.batch = B, io.height = m->height, io.width = m->width, io.images = batch->views[0];
    io.mask_mode = EX_MASK_DROP, io.ids_keep = I32(m->ids_keep_d), io.keep = keep, io.train = 1;
    io.noise = ex_noise_derive(batch->noise, 1);
    EX_CHECK(m->env.bb->forward(m->env.bb_self, &io, err));
    EX_ENSURE(io.tokens && io.num_tokens == 1 + m->registers + keep, err, EX_E_INTERNAL,
              "mae: the backbone returned %lld tokens, expected 1 + %lld registers + %lld kept", (long long)io.num_tokens,
              (long long)m->registers, (long long)keep);

    /* decoder, target, loss */
    EX_CHECK(mae_decoder_forward(m, io.tokens, B, err));
    const float *target = NULL;
    EX_CHECK(make_target(m, batch->views[0], B, &target, err));
    const int64_t n = B * L * K;
    float *diff = F(m->diff);
    OP(m, binary(c, EX_BIN_SUB, diff, F(m->predb), target, n), "binary");
    OP(m, row_scale_fwd(c, diff, diff, F(m->maskf_d), B * L, K), "row_scale_fwd");
    OP(m, reduce(c, EX_RED_SUMSQ, F(m->loss_d), diff, n), "reduce");
    float sumsq = 0.0f;
    EX_CHECK(ex_be_download(be, &sumsq, m->loss_d.data, sizeof sumsq, err));
    int64_t removed = B * (L - keep);
    EX_CHECK(ex_comm_allreduce_sum_i64(m->env.comm, &removed, 1, err));
    const double denom = (double)K * (double)removed / (double)ex_comm_world(m->env.comm);
    const double loss = (double)sumsq / denom;
    OP(m, axpby(c, F(m->dpred), ex_batch_grad_scale(batch) * (float)(2.0 / denom), diff, 0.0f, n), "axpby");

    /* backward: decoder, then the encoder */
    const float *dtokens = NULL;
    EX_CHECK(mae_decoder_backward(m, B, &dtokens, err));
    EX_CHECK(m->env.bb->backward(m->env.bb_self, dtokens, m->probe.input_grad ? m->probe.dimages : NULL, err));

    m->probe.batch = B;
    m->probe.pred = F(m->predb);
    m->probe.target = target;
    m->probe.loss = loss;
    memset(out, 0, sizeof *out);
    out->count = 1;
    out->names[0] = "mae";
    out->values[0] = loss;
    out->total = loss;
    out->grad_scaled = 1;
    return EX_OK;
}
