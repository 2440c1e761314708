/*
 * plugins/dinov2/dinov2_step.c — one DINOv2 step (ssl_meta_arch.py
 * forward_backward) and the teacher EMA.
 *
 * Views: batch->views[0], [1] are the global crops (B images each), then the
 * local crops. Order of work (the backbone keeps one set of activations):
 *   1. masks for the 2B global images (block-wise, from the step's rng);
 *   2. teacher: backbone on both global crops (unmasked, no activations
 *      kept), its heads on [CLS rows; masked patch rows], targets with the
 *      teacher temperature (centring or Sinkhorn-Knopp); the CLS targets are
 *      stored crop-swapped (student crop 0 pairs with teacher crop 1);
 *   3. student globals: backbone with iBOT masking (mask_token replaces the
 *      masked patch embeddings), heads (logits / student_temp), DINO global
 *      terms, iBOT terms, KoLeo on the backbone CLS rows; backward through
 *      heads and backbone;
 *   4. student locals, in chunks of at most 2 crops (2B images, so the
 *      backbone's plan for the global pass covers them): backbone, head,
 *      each local crop against both teacher crops, backward.
 * The total loss is a sum of terms each of which depends on exactly one
 * student backbone pass (the teacher targets are constants), so running
 * forward+backward per pass and accumulating parameter gradients gives the
 * same gradients as DINOv2's single joint pass.
 *
 * Reported terms are the weighted contributions (total = their sum):
 *   dino_global = dino_weight * (CE(s_g0, t_1) + CE(s_g1, t_0)) / n_terms
 *   dino_local  = dino_weight * sum_l (CE(s_l, t_0) + CE(s_l, t_1)) / n_terms
 *   ibot        = ibot_weight * (1/2B) sum_i (1/n_i) sum_masked CE
 *   koleo       = koleo_weight * (L_crop0 + L_crop1)
 * with CE a batch mean and n_terms = 2 + 2 * local_crops.
 * Images with no masked patch add nothing to iBOT (but count in 2B); a step
 * with no masked patch at all has no iBOT term and leaves the iBOT centre
 * alone. KoLeo needs B >= 2 (it is 0 otherwise).
 * Several ranks (env.comm): the masks are drawn for the GLOBAL 2 B world
 * images of the step (identically on every rank, from the shared mask
 * stream) and each rank keeps those of its images (rank r holds images r, r +
 * world, ... of the global batch, the loader's sharding), so N ranks at batch
 * B mask exactly as one rank at N B; the teacher targets use global centres /
 * Sinkhorn-Knopp (dinov2_center.c); the DINO and iBOT normalisations by the
 * local B are the global ones times world (equal batches on every rank) as the
 * trainer's gradient average expects; KoLeo stays per rank (as DINOv2).
 * While iteration < freeze_last_layer_iters the last layers' (weight_g,
 * weight_v) gradients stay zero (DINOv2 sets their learning rate to 0).
 */
#include <math.h>
#include <string.h>

#include "dinov2_internal.h"

#define F(t) ((float *)(t).data)

#define OP(d, call, what)                                                                                      \
    do {                                                                                                       \
        ex_status op__s = (d)->env.be->vt.call;                                                                \
        if (op__s != EX_OK) EX_FAIL(err, op__s, "dinov2: %s failed on backend '%s'", what, (d)->env.be->name); \
    } while (0)

/* xin rows [0, n) = CLS rows of tok (n, T, D); rows [n, n + nm) = the masked patch rows. */
static ex_status gather_inputs(dinov2 *d, const float *tok /* (n, T, D) */, int64_t n, int64_t T, int64_t nm,
                               ex_err *err) {
    ex_backend *be = d->env.be;
    const int64_t D = d->D;
    OP(d, copy2d(be->ctx, F(d->xin), D, tok, T * D, n, D), "copy2d");
    if (nm > 0)
        OP(d, gather_rows(be->ctx, F(d->xin) + n * D, tok, (const int32_t *)d->idx_s.data, 1, nm, n * T, D),
           "gather_rows");
    return EX_OK;
}

/* The heads' trunks over the global rows: [0, Bg) CLS, [Bg, Bg + nm) patches (the logits come later, a
 * chunk of rows at a time). */
static ex_status heads_forward(dinov2 *d, dn_head *dino, dn_head *ibot, int64_t Bg, int64_t nm, ex_err *err) {
    if (!d->separate_ibot) return dn_head_forward(d, dino, F(d->xin), 0, Bg + nm, err);
    EX_CHECK(dn_head_forward(d, dino, F(d->xin), 0, Bg, err));
    return dn_head_forward(d, ibot, F(d->xin) + Bg * d->D, Bg, nm, err);
}

static ex_status drop_scales(dinov2 *d, ex_rng *rng, int64_t n, const float **out, ex_err *err) {
    *out = NULL;
    if (d->drop_path <= 0.0) return EX_OK;
    EX_CHECK(ex_drop_path_scales(rng, d->drop_path, n, 2 * d->depth, d->hdrop, err));
    EX_CHECK(ex_be_upload(d->env.be, F(d->drop_d), d->hdrop, sizeof(float) * (size_t)(2 * d->depth * n), err));
    *out = F(d->drop_d);
    return EX_OK;
}

ex_status dn_step(void *self, const ex_batch *batch, ex_rng *rng, int64_t iteration, ex_loss_terms *out,
                  ex_err *err) {
    dinov2 *d = self;
    ex_backend *be = d->env.be;
    const int64_t B = batch->batch, D = d->D, K = d->K, C = d->C, Tg = d->Tg, Tl = d->Tl, Np = d->Np;
    const int64_t Bg = 2 * B, nl = d->nlocal;
    EX_ENSURE(d->have_teacher && d->weights_ready, err, EX_E_INVALID, "dinov2: step() before init()");
    EX_ENSURE(B >= 1 && B <= d->B, err, EX_E_SHAPE, "dinov2: batch %lld outside the planned 1..%lld", (long long)B,
              (long long)d->B);
    EX_ENSURE(batch->nviews == 2 + nl, err, EX_E_SHAPE, "dinov2: %d views given, %lld expected (2 global + %lld local)",
              batch->nviews, (long long)(2 + nl), (long long)nl);
    for (int v = 0; v < batch->nviews; v++) {
        const int64_t s = v < 2 ? d->gsize : d->lsize;
        EX_ENSURE(batch->height[v] == s && batch->width[v] == s, err, EX_E_SHAPE,
                  "dinov2: view %d is %lldx%lld, expected %lldx%lld", v, (long long)batch->height[v],
                  (long long)batch->width[v], (long long)s, (long long)s);
    }
    const float Ts = (float)d->student_temp, tau = (float)dn_teacher_temp(d, iteration);
    d->grad_scale = ex_batch_grad_scale(batch);
    const int freeze = iteration < d->freeze_last_iters;
    const double nterms = (double)(2 + 2 * nl);

    /* 1. masks */
    const int64_t world = ex_comm_world(d->env.comm), rank = ex_comm_rank(d->env.comm);
    if (d->test_masks) {
        memcpy(d->mask, d->test_masks, (size_t)(Bg * Np));
    } else {
        dn_masks_generate(d->mask, d->nmask, Bg * world, d->gh, d->gw, dn_masks_max_patches(d->gsize, d->P),
                          d->mask_ratio[0], d->mask_ratio[1], d->mask_prob, rng);
        /* keep this rank's rows: local (crop c, image b) is global row c B world + b world + rank (>= local) */
        for (int64_t c = 0; c < 2 && world > 1; c++)
            for (int64_t b = 0; b < B; b++)
                memmove(d->mask + (c * B + b) * Np, d->mask + (c * B * world + b * world + rank) * Np, (size_t)Np);
    }
    int64_t nm = 0;
    for (int64_t i = 0; i < Bg; i++) {
        int64_t c = 0;
        for (int64_t p = 0; p < Np; p++)
            if (d->mask[i * Np + p]) {
                EX_ENSURE(nm < d->nm_max, err, EX_E_RANGE, "dinov2: more masked patches than planned (%lld)",
                          (long long)d->nm_max);
                d->idx[nm++] = (int32_t)(i * Tg + 1 + d->R0 + p);
                c++;
            }
        d->nmask[i] = c;
    }
    EX_CHECK(ex_be_upload(be, d->mask_d.data, d->mask, (size_t)(Bg * Np), err));
    if (nm > 0) EX_CHECK(ex_be_upload(be, d->idx_s.data, d->idx, sizeof(int32_t) * (size_t)nm, err));
    int64_t nm_all = nm; /* masked patches of every rank: the iBOT targets are a collective */
    EX_CHECK(ex_comm_allreduce_sum_i64(d->env.comm, &nm_all, 1, err));

    /* the global images, crop-major */
    const size_t gimg = (size_t)(B * C * d->gsize * d->gsize);
    for (int c = 0; c < 2; c++)
        OP(d, copy(be->ctx, F(d->gimg) + (size_t)c * gimg, batch->views[c], sizeof(float) * gimg, EX_COPY_D2D), "copy");

    /* 2. teacher */
    ex_backbone_io tio;
    memset(&tio, 0, sizeof tio);
    tio.batch = Bg, tio.height = d->gsize, tio.width = d->gsize, tio.images = F(d->gimg);
    tio.mask_mode = EX_MASK_NONE, tio.train = 0;
    EX_CHECK(d->teacher.bb->forward(d->teacher.bb_self, &tio, err));
    EX_ENSURE(tio.num_tokens == Tg, err, EX_E_INTERNAL, "dinov2: teacher gave %lld tokens, expected %lld",
              (long long)tio.num_tokens, (long long)Tg);
    EX_CHECK(gather_inputs(d, tio.tokens, Bg, Tg, nm, err));
    EX_CHECK(heads_forward(d, &d->tdino, &d->tibot, Bg, nm, err));
    dn_head *tpatch_head = d->separate_ibot ? &d->tibot : &d->tdino;
    float *probs = F(d->acts.probs);
    EX_CHECK(dn_head_targets(d, &d->tdino, &d->cdino, 0, Bg, tau, probs, err));
    OP(d, copy2d(be->ctx, F(d->tprob_cls), K, probs + B * K, K, B, K), "copy2d"); /* swap the crops */
    OP(d, copy2d(be->ctx, F(d->tprob_cls) + B * K, K, probs, K, B, K), "copy2d");
    if (nm_all > 0) EX_CHECK(dn_head_targets(d, tpatch_head, &d->cibot, Bg, nm, tau, F(d->tprob_patch), err));

    /* 3. student, global crops */
    const float *drop = NULL;
    EX_CHECK(drop_scales(d, rng, Bg, &drop, err));
    ex_backbone_io sio;
    memset(&sio, 0, sizeof sio);
    sio.batch = Bg, sio.height = d->gsize, sio.width = d->gsize, sio.images = F(d->gimg);
    sio.mask_mode = EX_MASK_REPLACE, sio.mask = d->mask_d.data, sio.drop = drop, sio.train = 1;
    sio.noise = ex_noise_derive(batch->noise, 1);
    EX_CHECK(d->env.bb->forward(d->env.bb_self, &sio, err));
    EX_CHECK(gather_inputs(d, sio.tokens, Bg, Tg, nm, err));
    EX_CHECK(heads_forward(d, &d->sdino, &d->sibot, Bg, nm, err));
    OP(d, fill(be->ctx, F(d->dxin), 0.0f, (Bg + nm) * D), "fill");
    const float wd = (float)(d->dino_w / ((double)B * nterms));
    for (int64_t r = 0; r < Bg; r++) d->hw[r] = wd;
    double dino_global = 0.0, dino_local = 0.0, ibot = 0.0, koleo = 0.0;
    const float *tcls = F(d->tprob_cls), *tpatch = F(d->tprob_patch);
    /* each head: its losses chunk by chunk (dW summed over them), then its backward once */
    EX_CHECK(dn_head_ce(d, &d->sdino, 0, Bg, 1.0f / Ts, 1, &tcls, d->hw, 1, freeze, &dino_global, err));
    if (d->separate_ibot) EX_CHECK(dn_head_backward(d, &d->sdino, F(d->xin), F(d->dxin), 0, Bg, freeze, err));
    if (nm > 0) {
        int64_t k = 0;
        for (int64_t i = 0; i < Bg; i++)
            for (int64_t j = 0; j < d->nmask[i]; j++) d->hw[k++] = (float)(d->ibot_w / ((double)d->nmask[i] * (double)Bg));
        dn_head *ih = d->separate_ibot ? &d->sibot : &d->sdino;
        EX_CHECK(dn_head_ce(d, ih, Bg, nm, 1.0f / Ts, 1, &tpatch, d->hw, d->separate_ibot, freeze, &ibot, err));
    }
    if (!d->separate_ibot)
        EX_CHECK(dn_head_backward(d, &d->sdino, F(d->xin), F(d->dxin), 0, Bg + nm, freeze, err));
    else
        EX_CHECK(dn_head_backward(d, &d->sibot, F(d->xin) + Bg * D, F(d->dxin) + Bg * D, Bg, nm, freeze, err));
    if (d->koleo_w > 0.0 && B >= 2) {
        EX_CHECK(ex_be_download(be, d->hk, F(d->xin), sizeof(float) * (size_t)(Bg * D), err));
        koleo = dn_koleo_host(d->hk, Bg, B, D, d->koleo_w, d->hkg);
        EX_CHECK(ex_be_upload(be, F(d->kgrad), d->hkg, sizeof(float) * (size_t)(Bg * D), err));
        OP(d, axpby(be->ctx, F(d->dxin), d->grad_scale, F(d->kgrad), 1.0f, Bg * D), "axpby"); /* dxin += scale * kgrad */
    }
    OP(d, fill(be->ctx, F(d->dtok), 0.0f, Bg * Tg * D), "fill");
    OP(d, copy2d(be->ctx, F(d->dtok), Tg * D, F(d->dxin), D, Bg, D), "copy2d");
    if (nm > 0)
        OP(d, scatter_add_rows(be->ctx, F(d->dtok), F(d->dxin) + Bg * D, (const int32_t *)d->idx_s.data, 1, nm, Bg * Tg, D),
           "scatter_add_rows");
    EX_CHECK(d->env.bb->backward(d->env.bb_self, F(d->dtok), NULL, err));

    /* 4. student, local crops */
    const size_t limg = (size_t)(B * C * d->lsize * d->lsize);
    for (int64_t c0 = 0; c0 < nl; c0 += d->lchunk) {
        const int64_t nc = nl - c0 < d->lchunk ? nl - c0 : d->lchunk, nb = nc * B;
        for (int64_t j = 0; j < nc; j++)
            OP(d, copy(be->ctx, F(d->limg) + (size_t)j * limg, batch->views[2 + c0 + j], sizeof(float) * limg, EX_COPY_D2D),
               "copy");
        EX_CHECK(drop_scales(d, rng, nb, &drop, err));
        ex_backbone_io lio;
        memset(&lio, 0, sizeof lio);
        lio.batch = nb, lio.height = d->lsize, lio.width = d->lsize, lio.images = F(d->limg);
        lio.mask_mode = EX_MASK_NONE, lio.drop = drop, lio.train = 1;
        lio.noise = ex_noise_derive(batch->noise, 2 + (uint64_t)c0); /* one key per local chunk */
        EX_CHECK(d->env.bb->forward(d->env.bb_self, &lio, err));
        EX_CHECK(gather_inputs(d, lio.tokens, nb, Tl, 0, err));
        EX_CHECK(dn_head_forward(d, &d->sdino, F(d->xin), 0, nb, err));
        for (int64_t r = 0; r < B; r++) d->hw[r] = wd;
        const float *both[2] = {tcls, tcls + B * K}; /* each local crop against both teacher crops */
        for (int64_t j = 0; j < nc; j++) {
            double v[2];
            EX_CHECK(dn_head_ce(d, &d->sdino, j * B, B, 1.0f / Ts, 2, both, d->hw, j == 0, freeze, v, err));
            dino_local += v[0];
            dino_local += v[1];
        }
        OP(d, fill(be->ctx, F(d->dxin), 0.0f, nb * D), "fill");
        EX_CHECK(dn_head_backward(d, &d->sdino, F(d->xin), F(d->dxin), 0, nb, freeze, err));
        OP(d, fill(be->ctx, F(d->dtok), 0.0f, nb * Tl * D), "fill");
        OP(d, copy2d(be->ctx, F(d->dtok), Tl * D, F(d->dxin), D, nb, D), "copy2d");
        EX_CHECK(d->env.bb->backward(d->env.bb_self, F(d->dtok), NULL, err));
    }

    memset(out, 0, sizeof *out);
    out->count = 4;
    out->names[0] = "dino_global", out->values[0] = dino_global;
    out->names[1] = "dino_local", out->values[1] = dino_local;
    out->names[2] = "ibot", out->values[2] = ibot;
    out->names[3] = "koleo", out->values[3] = koleo;
    out->total = dino_global + dino_local + ibot + koleo;
    out->grad_scaled = 1;
    return EX_OK;
}

ex_status dn_ema(dinov2 *d, float m, ex_err *err) {
    ex_backend *be = d->env.be;
    const ex_params *tp = d->teacher.params;
    for (int i = 0; tp && i < tp->count; i++) {
        ex_param *t = tp->items[i];
        const ex_param *s = ex_params_find(d->env.params, t->value.name);
        if (!s || !s->trainable) continue; /* frozen in the student: identical in both */
        EX_ENSURE(ex_tensor_numel(&s->value) == ex_tensor_numel(&t->value), err, EX_E_INTERNAL,
                  "dinov2: teacher tensor '%s' differs in size from the student's", t->value.name);
        OP(d, ema(be->ctx, t->value.data, s->value.data, m, ex_tensor_numel(&t->value)), "ema");
    }
    EX_CHECK(dn_head_ema(d, &d->tdino, &d->sdino, m, err));
    if (d->separate_ibot) EX_CHECK(dn_head_ema(d, &d->tibot, &d->sibot, m, err));
    return EX_OK;
}

ex_status dn_update(void *self, int64_t iteration, int64_t total_iterations, ex_err *err) {
    dinov2 *d = self;
    EX_ENSURE(d->have_teacher, err, EX_E_INVALID, "dinov2: update() before init()");
    /* the trainer passes the number of optimiser steps done; the step just done is iteration - 1,
     * and DINOv2 uses the same schedule index for a step and its EMA */
    const double m = dn_momentum(d->momentum_start, iteration - 1, total_iterations);
    return dn_ema(d, (float)m, err);
}
