/*
 * plugins/vit/vit_names.c — checkpoint naming conventions mapped onto the
 * internal (official DINOv2) names. Training exports hold several copies
 * ("teacher.", "student."; explora's run checkpoints "objective.teacher.",
 * "param."): only the selected one is read (the teacher by default, as DINOv2
 * evaluates it). Prefixes "module.", "backbone.", "model."
 * and "dinov2." (DDP, ExPLoRA and DINOv2 training checkpoints, {"model": ...}
 * files) are stripped, SSL heads and MAE decoders ignored, and DINOv2's FSDP
 * chunked names blocks.<chunk>.<i>.* become blocks.<i>.*.
 */
#include <stdio.h>
#include <string.h>

#include "vit_internal.h"

typedef struct name_rule {
    const char *from, *to;
} name_rule;

/* Per-block renames, Hugging Face Dinov2Model (after "encoder.layer.<i>."). */
static const name_rule k_hf_block[] = {
    {"norm1.", "norm1."},
    {"attention.output.dense.", "attn.proj."},
    {"layer_scale1.lambda1", "ls1.gamma"},
    {"norm2.", "norm2."},
    {"mlp.fc1.", "mlp.fc1."},
    {"mlp.fc2.", "mlp.fc2."},
    {"mlp.weights_in.", "mlp.w12."},
    {"mlp.weights_out.", "mlp.w3."},
    {"layer_scale2.lambda1", "ls2.gamma"},
};

/* Per-block renames, Hugging Face ViTMAE (after "vit.encoder.layer.<i>."). */
static const name_rule k_hfmae_block[] = {
    {"layernorm_before.", "norm1."},
    {"attention.output.dense.", "attn.proj."},
    {"layernorm_after.", "norm2."},
    {"intermediate.dense.", "mlp.fc1."},
    {"output.dense.", "mlp.fc2."},
};

static int starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* Rename `rest` by the first matching prefix of the table into out (with a "blocks.<i>." head). */
static int apply_block_rules(const name_rule *t, size_t n, long long layer, const char *rest, char *out, size_t cap) {
    for (size_t k = 0; k < n; k++) {
        if (starts(rest, t[k].from)) {
            snprintf(out, cap, "blocks.%lld.%s%s", layer, t[k].to, rest + strlen(t[k].from));
            return 1;
        }
    }
    return -1;
}

/* attention.attention.{query,key,value}.{weight,bias} -> rows of the fused qkv. */
static int map_qkv_slice(const vit *v, long long layer, const char *rest, char *out, size_t cap, int64_t *row_offset) {
    static const char *parts[3] = {"attention.attention.query.", "attention.attention.key.",
                                   "attention.attention.value."};
    for (int s = 0; s < 3; s++) {
        if (starts(rest, parts[s])) {
            snprintf(out, cap, "blocks.%lld.attn.qkv.%s", layer, rest + strlen(parts[s]));
            *row_offset = s * v->a.dim;
            return 1;
        }
    }
    return 0;
}

static int map_hf(const vit *v, const char *name, char *out, size_t cap, int64_t *row_offset, int mae) {
    const char *emb = mae ? "vit.embeddings." : "embeddings.";
    const char *enc = mae ? "vit.encoder.layer." : "encoder.layer.";
    if (mae && starts(name, "decoder.")) return 0; /* the MAE objective loads the decoder */
    if (starts(name, emb)) {
        const char *r = name + strlen(emb);
        if (strcmp(r, "cls_token") == 0 || strcmp(r, "mask_token") == 0 || strcmp(r, "register_tokens") == 0) {
            snprintf(out, cap, "%s", r);
            return 1;
        }
        if (strcmp(r, "position_embeddings") == 0) {
            snprintf(out, cap, "pos_embed");
            return 1;
        }
        if (starts(r, "patch_embeddings.projection.")) {
            snprintf(out, cap, "patch_embed.proj.%s", r + strlen("patch_embeddings.projection."));
            return 1;
        }
        return -1;
    }
    if (starts(name, enc)) {
        long long layer;
        int used = 0;
        if (sscanf(name + strlen(enc), "%lld.%n", &layer, &used) != 1 || used == 0) return -1;
        const char *rest = name + strlen(enc) + used;
        if (map_qkv_slice(v, layer, rest, out, cap, row_offset)) return 1;
        return mae ? apply_block_rules(k_hfmae_block, sizeof k_hfmae_block / sizeof *k_hfmae_block, layer, rest, out, cap)
                   : apply_block_rules(k_hf_block, sizeof k_hf_block / sizeof *k_hf_block, layer, rest, out, cap);
    }
    const char *final = mae ? "vit.layernorm." : "layernorm.";
    if (starts(name, final)) {
        snprintf(out, cap, "norm.%s", name + strlen(final));
        return 1;
    }
    if (starts(name, "pooler.") || starts(name, "classifier.")) return 0;
    return -1;
}

/* Official DINOv2 / MAE / timm: the internal names, give or take prefixes, chunks and extras. */
static int map_native(const vit *v, const char *name, char *out, size_t cap) {
    const char *fmt = v->format;
    if (starts(name, "dino_head.") || starts(name, "ibot_head.") || starts(name, "head.") || starts(name, "fc_norm."))
        return 0;
    if (starts(name, "decoder_") || (strcmp(name, "mask_token") == 0 && strcmp(fmt, "mae") == 0)) return 0;
    long long chunk, layer;
    int used = 0;
    if (sscanf(name, "blocks.%lld.%lld.%n", &chunk, &layer, &used) == 2 && used > 0) {
        snprintf(out, cap, "blocks.%lld.%s", layer, name + used);
        return 1;
    }
    if (strcmp(fmt, "timm") == 0 && strcmp(name, "reg_token") == 0) {
        snprintf(out, cap, "register_tokens");
        return 1;
    }
    if (strcmp(fmt, "timm") == 0 && starts(name, "blocks.") && (strstr(name, ".mlp.fc1.") || strstr(name, ".mlp.fc2.")) &&
        v->a.mlp == EX_MLP_SWIGLU) {
        /* timm packs SwiGLU as mlp.fc1 (= w12) and mlp.fc2 (= w3) */
        const char *p = strstr(name, ".mlp.fc");
        snprintf(out, cap, "%.*s.mlp.%s%s", (int)(p - name), name, p[7] == '1' ? "w12" : "w3", p + 8);
        return 1;
    }
    snprintf(out, cap, "%s", name);
    return 1;
}

void vit_select_copy(const ex_weights *f, const char *copy, char *select, size_t cap) {
    int teacher = 0, student = 0, run_teacher = 0, run_param = 0;
    for (int i = 0; i < ex_weights_count(f); i++) {
        const char *n = ex_weights_at(f, i)->name;
        teacher |= starts(n, "teacher.");
        student |= starts(n, "student.");
        run_teacher |= starts(n, "objective.teacher.");
        run_param |= starts(n, "param.");
    }
    const int run = run_teacher || run_param; /* an explora run checkpoint */
    const char *t = run ? (run_teacher ? "objective.teacher." : "") : teacher ? "teacher." : "";
    const char *s = run ? (run_param ? "param." : "") : student ? "student." : "";
    if (strcmp(copy, "auto") == 0)
        snprintf(select, cap, "%s", t[0] ? t : s);
    else if (strcmp(copy, "none") == 0)
        select[0] = '\0';
    else if (run && strcmp(copy, "teacher") == 0)
        snprintf(select, cap, "%s", "objective.teacher.");
    else if (run && strcmp(copy, "student") == 0)
        snprintf(select, cap, "%s", "param.");
    else
        snprintf(select, cap, "%s.", copy);
}

int vit_map_name(void *user, const char *ckpt_name, char *out, size_t cap, int64_t *row_offset) {
    const vit *v = user;
    const char *name = ckpt_name;
    if (v->select[0]) { /* a training export holding several copies: take the selected one */
        if (!starts(name, v->select)) return 0;
        name += strlen(v->select);
    }
    for (int again = 1; again;) {
        again = 0;
        static const char *strip[] = {"module.", "backbone.", "model.", "dinov2."};
        for (size_t k = 0; k < sizeof strip / sizeof *strip; k++)
            if (starts(name, strip[k])) {
                name += strlen(strip[k]);
                again = 1;
            }
    }
    if (strcmp(v->format, "hf") == 0) return map_hf(v, name, out, cap, row_offset, 0);
    if (strcmp(v->format, "hf-mae") == 0) return map_hf(v, name, out, cap, row_offset, 1);
    return map_native(v, name, out, cap);
}

const char *vit_detect_format(const ex_weights *f) {
    int hf = 0, hfmae = 0, ls = 0, qkv = 0, reg_token = 0, decoder = 0;
    for (int i = 0; i < ex_weights_count(f); i++) {
        const char *n = ex_weights_at(f, i)->name;
        if (strstr(n, "vit.embeddings.")) hfmae = 1;
        else if (strstr(n, "embeddings.patch_embeddings.")) hf = 1;
        if (strstr(n, ".ls1.gamma")) ls = 1;
        if (strstr(n, ".attn.qkv.")) qkv = 1;
        if (strcmp(n, "reg_token") == 0) reg_token = 1;
        if (strstr(n, "decoder_")) decoder = 1;
    }
    if (hfmae) return "hf-mae";
    if (hf) return "hf";
    if (reg_token) return "timm";
    if (ls && qkv) return "dinov2";
    if (decoder) return "mae";
    if (qkv) return "mae"; /* MAE and timm share names; "mae" also ignores a decoder's mask_token */
    return "";
}

/* Heads are not in the shapes: the released models use these (head width 64, MAE-H 80). */
static int64_t heads_for(int64_t dim) {
    switch (dim) {
    case 384: return 6;
    case 768: return 12;
    case 1024: return 16;
    case 1280: return 16;
    case 1536: return 24;
    default: return dim % 64 == 0 ? dim / 64 : 1;
    }
}

static int64_t isqrt(int64_t x) {
    int64_t r = 0;
    while ((r + 1) * (r + 1) <= x) r++;
    return r;
}

ex_status vit_preset_from_checkpoint(const char *path, const char *format, const char *copy, vit_preset *p,
                                     ex_err *err) {
    ex_weights f;
    EX_CHECK(ex_weights_open(&f, path, err));
    vit v;
    memset(&v, 0, sizeof v);
    const char *fmt = strcmp(format, "auto") == 0 ? vit_detect_format(&f) : format;
    snprintf(v.format, sizeof v.format, "%s", fmt);
    vit_select_copy(&f, copy, v.select, sizeof v.select);
    memset(p, 0, sizeof *p);
    p->name = "checkpoint";
    p->depth = 0;
    int64_t pos_rows = -1, w12 = 0;
    for (int i = 0; i < ex_weights_count(&f); i++) {
        const ex_st_entry *e = ex_weights_at(&f, i);
        char name[EX_NAME_MAX];
        int64_t row = 0;
        if (vit_map_name(&v, e->name, name, sizeof name, &row) != 1) continue;
        const int64_t last = e->ndim ? e->shape[e->ndim - 1] : 1;
        long long b;
        char rest[96];
        if (strcmp(name, "cls_token") == 0) p->dim = last;
        else if (strcmp(name, "patch_embed.proj.weight") == 0 && e->ndim == 4) {
            p->channels = e->shape[1];
            p->patch = e->shape[2];
        } else if (strcmp(name, "pos_embed") == 0 && e->ndim >= 2) pos_rows = e->shape[e->ndim - 2];
        else if (strcmp(name, "register_tokens") == 0 && e->ndim >= 2) p->registers = e->shape[e->ndim - 2];
        else if (strcmp(name, "mask_token") == 0) p->mask_token = 1;
        else if (sscanf(name, "blocks.%lld.%95s", &b, rest) == 2) {
            if (b + 1 > p->depth) p->depth = b + 1;
            if (b == 0 && strcmp(rest, "mlp.fc1.weight") == 0) p->hidden = e->shape[0];
            if (b == 0 && strcmp(rest, "mlp.w12.weight") == 0) w12 = e->shape[0];
            if (b == 0 && strcmp(rest, "ls1.gamma") == 0) p->layerscale = 1;
        }
    }
    ex_weights_close(&f);
    if (w12) {
        p->mlp = EX_MLP_SWIGLU;
        p->hidden = w12 / 2;
    }
    const int64_t grid = pos_rows > 1 ? isqrt(pos_rows - 1) : 0;
    EX_ENSURE(p->dim > 0 && p->patch > 0 && p->depth > 0 && p->hidden > 0 && grid > 0 && grid * grid == pos_rows - 1, err,
              EX_E_FORMAT,
              "%s: cannot read the architecture from its tensors (format '%s'): needs cls_token, "
              "patch_embed.proj.weight, pos_embed with a square grid and blocks.0.mlp weights.",
              path, fmt);
    p->grid = grid;
    p->heads = heads_for(p->dim);
    const int mae = strcmp(fmt, "mae") == 0 || strcmp(fmt, "hf-mae") == 0;
    p->pos = mae ? VIT_POS_SINCOS : VIT_POS_LEARNED;
    if (mae || strcmp(fmt, "hf") == 0) p->interp = VIT_INTERP_SIZE;
    else if (strcmp(fmt, "timm") == 0 || p->registers > 0) p->interp = VIT_INTERP_ANTIALIAS;
    else p->interp = VIT_INTERP_DINOV2;
    return EX_OK;
}
