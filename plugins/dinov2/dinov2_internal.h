/*
 * plugins/dinov2/dinov2_internal.h — the `dinov2` objective's private
 * structures and the internal functions its sources share (and that
 * tests/test_dinov2.c, which compiles these sources in, calls directly).
 *
 * Semantics follow facebookresearch/dinov2 (dinov2/layers/dino_head.py,
 * dinov2/loss/{dino_clstoken,ibot_patch,koleo}_loss.py, dinov2/data/masking.py,
 * dinov2/train/ssl_meta_arch.py).
 *
 * Row layout of the head activations (R rows, every pass uses a prefix):
 *   global pass   [cls of global crop 0 (B), cls of crop 1 (B), masked patches (nm)]
 *   local pass    [cls of the local crops of one chunk (crop-major)]
 * Masked patches are in mask order: image-major over the 2B global images
 * (crop-major), patch index ascending (torch's masks.flatten().nonzero()).
 */
#ifndef EXPLORA_DINOV2_INTERNAL_H
#define EXPLORA_DINOV2_INTERNAL_H

#include <stdint.h>

#include "explora/nn.h"
#include "explora/objective.h"
#include "explora/params.h"

#define DN_MAX_LAYERS 8

enum { DN_CENTERING = 0, DN_SINKHORN = 1 };

/* A DINO/iBOT head: MLP (D -> hidden ... -> bottleneck, exact GELU between), F.normalize (eps 1e-12),
 * weight-normalised last layer W_k = g_k v_k / ||v_k|| without bias. */
typedef struct dn_head {
    int nlayers;                 /* Linear layers of the MLP (>= 1) */
    ex_linear mlp[DN_MAX_LAYERS];/* mlp[0]: D -> hidden (or bottleneck when nlayers = 1) ... */
    float *g, *dg;               /* (K, 1) weight_g; gradient NULL when frozen */
    float *v, *dv;               /* (K, bn) weight_v */
    ex_tensor w;                 /* (K, bn) the effective weight, rebuilt by every forward */
    ex_tensor vhat;              /* (K, bn) v / ||v|| */
    ex_tensor vnorm;             /* (K) ||v|| */
    ex_param *params[2 * DN_MAX_LAYERS + 2]; /* every tensor in registration order */
    int nparams;
} dn_head;

/* Activations shared by every head pass (sized for R rows). */
typedef struct dn_head_acts {
    ex_tensor pre[DN_MAX_LAYERS];  /* (R, hidden) hidden Linear outputs before GELU */
    ex_tensor post[DN_MAX_LAYERS]; /* (R, hidden) GELU outputs */
    ex_tensor z;                   /* (R, bn) last Linear output */
    ex_tensor zn;                  /* (R, bn) normalised */
    ex_tensor znorm;               /* (R) ||z|| */
    ex_tensor logits;              /* (R, K) head output (times `scale`); dn_soft_ce's backward replaces rows
                                    * by their gradient, which dn_head_backward reads (no separate dlogits) */
    ex_tensor probs;               /* (dn_probs_rows, K) softmax of the rows one xent call covers; also a temporary */
    ex_tensor dz, dzn;             /* (R, bn) */
    ex_tensor dh_a, dh_b;          /* (R, hidden) */
    ex_tensor dw, dvhat;           /* (K, bn) last-layer backward scratch */
} dn_head_acts;

/* Teacher centring state (DINO: over CLS rows; iBOT: over masked patch rows). */
typedef struct dn_center {
    ex_tensor c;       /* (K) the centre */
    ex_tensor pend;    /* (K) batch mean of the last step, folded in lazily */
    int pending;       /* pend holds a batch mean not yet folded in */
} dn_center;

typedef struct dinov2 {
    ex_objective_env env;

    /* config */
    int64_t K, bn, hidden, nlayers;
    int separate_ibot;
    int64_t nglobal, nlocal, gsize, lsize;
    double gscale[2], lscale[2];
    double student_temp, teacher_temp, warmup_temp;
    int64_t warmup_temp_iters;
    int centering;
    double center_momentum, ibot_w, dino_w, koleo_w;
    double mask_ratio[2], mask_prob, momentum_start;
    int64_t freeze_last_iters;
    double drop_path;
    char head_weights[4096];

    /* derived */
    int64_t B, D, C, P, R0;        /* batch, width, channels, patch, registers */
    int64_t gh, gw, Np, Tg;        /* global grid, patches, tokens */
    int64_t lh, lw, Tl;            /* local grid, tokens */
    int64_t Bg;                    /* 2 * B global images */
    int64_t nm_max;                /* most masked patches of one step (DINOv2's upperbound) */
    int64_t ce_chunk;              /* rows per soft cross-entropy call (DN_CE_CHUNK; tests set fewer before plan) */
    int64_t rows;                  /* R: head rows */
    int64_t lchunk;                /* local crops per backbone pass */
    int64_t depth;

    /* parameters */
    dn_head sdino, sibot;          /* student heads (sibot used when separate_ibot) */
    dn_head tdino, tibot;          /* teacher heads (private params, frozen) */
    ex_params tparams;             /* the teacher heads' tensors */
    ex_teacher teacher;
    int have_teacher;

    /* activations / state (device) */
    dn_head_acts acts;
    ex_tensor gimg;                /* (2B, C, Hg, Wg) */
    ex_tensor limg;                /* (lchunk * B, C, Hl, Wl) */
    ex_tensor mask_d;              /* (2B, Np) uint8 */
    ex_tensor idx_s;               /* (nm_max) int32 token-row indices into (2B * Tg) */
    ex_tensor xin, dxin;           /* (R, D) head input and its gradient */
    ex_tensor dtok;                /* (2B, Tg, D) */
    ex_tensor tprob_cls;           /* (2B, K) teacher targets, crop-swapped */
    ex_tensor tprob_patch;         /* (nm_max, K) */
    ex_tensor losses;              /* (DN_MAX_TARGETS * R) per-row losses of each target set */
    ex_tensor rweights;            /* (R) per-row loss weights (dlosses) */
    ex_tensor ones;                /* (R) */
    ex_tensor kgrad;               /* (2B, D) KoLeo gradient */
    ex_tensor drop_d;              /* (depth, 2, 2B) */
    dn_center cdino, cibot;
    int planned;

    /* host buffers (allocated at create) */
    uint8_t *mask;                 /* (2B, Np) */
    int32_t *idx;                  /* (nm_max) */
    int64_t *nmask;                /* (2B) masked patches per image */
    float *hw;                     /* (R) row weights */
    float *hws;                    /* (R) row weights times grad_scale: the gradients' */
    float grad_scale;                /* the step's ex_batch grad_scale (loss scaling; 1 otherwise) */
    float *hl;                     /* (DN_MAX_TARGETS * R) losses */
    float *hk, *hkg;               /* (2B, D) KoLeo input and gradient */
    float *hdrop;                  /* (depth, 2, 2B) */
    float *sk;                     /* (max(2B, nm_max), K) Sinkhorn-Knopp work on the host (sinkhorn_knopp
                                    * without sk_device only) */
    double *sk_row, *sk_col;       /* (K), (max(2B, nm_max)) */
    /* Sinkhorn-Knopp on the device (sinkhorn_knopp and a backend with exp_fwd and row_sum): the targets
     * buffer itself is the work matrix; these hold its sums and their reciprocals. */
    int sk_device;
    ex_tensor skd_kinv, skd_row, skd_inv;   /* (K): 1/K; prototype sums; (1/K) / prototype sums */
    ex_tensor skd_nfill, skd_col, skd_cinv; /* (max(2B, nm_max)): 1/n; sample sums; (1/n) / sample sums */
    ex_tensor skd_total;                    /* (1) */

    /* test hooks (tests compile these sources in; never set by the plugin) */
    const uint8_t *test_masks;     /* (2B, Np) host: used instead of the generator when non-NULL */

    /* state */
    int weights_ready;
} dinov2;

/* dinov2_head.c */
ex_status dn_head_register(dinov2 *d, dn_head *h, const char *prefix, ex_params *ps, int trainable, ex_err *err);
ex_status dn_head_plan(dinov2 *d, dn_head *h, const char *prefix, ex_memory_plan *plan, ex_err *err);
ex_status dn_head_acts_plan(dinov2 *d, ex_memory_plan *plan, ex_err *err);
ex_status dn_head_init(dinov2 *d, dn_head *h, ex_rng *rng, ex_err *err);
ex_status dn_head_copy(dinov2 *d, dn_head *dst, const dn_head *src, ex_err *err);
ex_status dn_head_ema(dinov2 *d, dn_head *teacher, const dn_head *student, float m, ex_err *err);
/* Rows of acts.probs: the soft cross-entropy runs over chunks of at most ce_chunk rows (the
 * probabilities are a temporary of each chunk), and the teacher's CLS targets (Bg rows) pass
 * through it. With 131072 prototypes a full (R, K) buffer would be over a GiB. */
#define DN_CE_CHUNK ((int64_t)256)
int64_t dn_probs_rows(const dinov2 *d);

/* The head's trunk for rows [r0, r0 + n) of its input x (n, D): MLP and normalisation into acts (z, zn), and
 * the last layer's weight W = g v / ||v||. */
ex_status dn_head_forward(dinov2 *d, dn_head *h, const float *x, int64_t r0, int64_t n, ex_err *err);
/* out (n, K) = scale * zn[r0, r0 + n) W^T: the logits of rows after dn_head_forward. */
ex_status dn_head_logits(dinov2 *d, dn_head *h, int64_t r0, int64_t n, float scale, float *out, ex_err *err);
/* Given dlog (n, K), the gradient at rows [r0, r0 + n) of scale-multiplied logits: acts.dzn rows = scale dlog W,
 * and unless freeze_last (or the head has no gradients) acts.dw (K, bn) = (accumulate: +=) scale dlog^T zn. */
ex_status dn_head_logits_backward(dinov2 *d, dn_head *h, const float *dlog, int64_t r0, int64_t n, float scale,
                                  int accumulate, int freeze_last, ex_err *err);
/* dx (n, D) += the trunk's gradient from acts.dzn rows [r0, r0 + n); parameter gradients +=: the MLP's, and
 * unless freeze_last the last layer's (weight_g, weight_v) from acts.dw. Once per head and pass, after every
 * dn_head_logits_backward of its rows. */
ex_status dn_head_backward(dinov2 *d, dn_head *h, const float *x, float *dx, int64_t r0, int64_t n, int freeze_last,
                           ex_err *err);
ex_status dn_head_load(dinov2 *d, const char *path, ex_err *err);

/* dinov2_state.c: the teacher and the centres into / out of the trainer's checkpoint */
ex_status dn_save_state(void *self, ex_st_writer *w, void **keep, ex_err *err);
ex_status dn_load_state(void *self, const ex_st_file *f, ex_err *err);

/* dinov2_center.c */
/* out (n, K) = teacher targets for t (n, K): softmax((t - c)/tau) with the lagged centre update
 * (centering) or Sinkhorn-Knopp (3 iterations, fp32 on the host). Centring overwrites t with t - c. */
ex_status dn_teacher_targets(dinov2 *d, dn_center *c, float *t, int64_t n, float tau, float *out, ex_err *err);
/* The same for the logits of rows [r0, r0 + n) of teacher head h (after dn_head_forward), computed one chunk of
 * ce_chunk rows at a time into acts.logits: out (n, K). */
ex_status dn_head_targets(dinov2 *d, dn_head *h, dn_center *c, int64_t r0, int64_t n, float tau, float *out,
                          ex_err *err);
/* Several ranks (comm world > 1): the sum of Q and the prototype (row) sums are all-reduced and n is the
 * global number of rows, as DINOv2's distributed sinkhorn_knopp_teacher; NULL comm: dn_sinkhorn_host. */
ex_status dn_sinkhorn_dist(const ex_comm *comm, float *q, int64_t n, int64_t K, float tau, int iters, double *row,
                           double *col, ex_err *err);
/* The same on the device with backend ops (exp_fwd, reduce, bias_add_bwd's column sums, row_sum, the scale
 * slots), q (n, K) in place: sums in the backends' fixed orders, divisions as products with reciprocals, so
 * the targets agree with dn_sinkhorn_dist's to float rounding, not bit for bit. Needs d->sk_device. */
ex_status dn_sinkhorn_device(dinov2 *d, float *q, int64_t n, float tau, int iters, ex_err *err);
ex_status dn_sinkhorn_host(float *q /* (n, K) in: t, out: targets */, int64_t n, int64_t K, float tau, int iters,
                           double *row /* (K) */, double *col /* (n) */);

/* dinov2_loss.c */
/* Soft cross-entropy of the n rows of logits (n, K) (device) against nt (<= DN_MAX_TARGETS) target sets, each
 * (n, K): value[s] = sum_r w_r * CE(targets[s]_r, softmax(logits_r)), `w` (n) host weights. With backward,
 * the rows are then overwritten by their gradient sum_s w_r * (softmax(logits_r) - targets[s]_r): a row's
 * logits are dead once its loss is known, so no second (n, K) buffer is needed. A row must therefore get
 * all its terms in one call (a local crop against both teacher crops). */
#define DN_MAX_TARGETS 2
ex_status dn_soft_ce(dinov2 *d, float *logits /* (n, K) */, int64_t n, int nt, const float *const *targets,
                     const float *w, int backward, double *value, ex_err *err);
/* The loss of rows [r0, r0 + n) of head h (after dn_head_forward), scale * logits against nt target sets
 * (each (n, K)) with host weights w (n), and its gradient: one chunk of ce_chunk rows at a time, logits
 * (dn_head_logits into acts.logits), soft cross-entropy, dn_head_logits_backward (dW accumulated except for
 * the first chunk when `first`). value[s] as dn_soft_ce's. Then dn_head_backward. */
ex_status dn_head_ce(dinov2 *d, dn_head *h, int64_t r0, int64_t n, float scale, int nt, const float *const *targets,
                     const float *w, int first, int freeze_last, double *value, ex_err *err);
/* KoLeo over chunks of `chunk` rows of x (n, D) (host); grad (n, D) = weight * dL/dx. Returns weight * sum of
 * chunk losses. */
double dn_koleo_host(const float *x, int64_t n, int64_t chunk, int64_t D, double weight, float *grad);

/* dinov2_masks.c */
/* Block-wise iBOT masks for Bg images of a gh x gw grid (DINOv2 collate + MaskingGenerator). */
void dn_masks_generate(uint8_t *mask /* (Bg, gh*gw) */, int64_t *targets /* (Bg) scratch */, int64_t Bg, int64_t gh,
                       int64_t gw, int64_t max_patches, double ratio_min, double ratio_max, double prob, ex_rng *rng);
/* DINOv2's max_num_patches: 0.5 * size // patch * size // patch (Python float floor divisions). */
int64_t dn_masks_max_patches(int64_t size, int64_t patch);
int64_t dn_masks_upperbound(int64_t Bg, int64_t N, double ratio_min, double ratio_max, double prob);
int64_t dn_mask_block(uint8_t *mask, int64_t gh, int64_t gw, int64_t target, int64_t max_patches, ex_rng *rng);

/* dinov2_sched.c */
double dn_teacher_temp(const dinov2 *d, int64_t iteration);
double dn_momentum(double start, int64_t iteration, int64_t total);

/* dinov2_step.c */
ex_status dn_step(void *self, const ex_batch *batch, ex_rng *rng, int64_t iteration, ex_loss_terms *out, ex_err *err);
ex_status dn_update(void *self, int64_t iteration, int64_t total_iterations, ex_err *err);
/* EMA of the teacher (backbone tensors trainable in the student, and the heads) with momentum m. */
ex_status dn_ema(dinov2 *d, float m, ex_err *err);

/* dinov2_plugin.c */
const ex_objective_vtable *dn_vtable(void);

#endif /* EXPLORA_DINOV2_INTERNAL_H */
