/*
 * plugins/vit/vit_export.c — writing the ViT's parameters in a chosen naming
 * convention (the inverse of vit_names.c): official DINOv2 and MAE (the
 * internal names), timm (reg_token, no mask_token, SwiGLU as fc1/fc2), Hugging
 * Face Dinov2Model and ViTMAE (q, k and v split out of the fused qkv rows).
 * Adapters and heads registered by others are not written: merge LoRA into
 * the base weights first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "explora/safetensors.h"
#include "vit_internal.h"

static int starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* Is this one of the backbone's own parameters (not an adapter or a head)? */
static int own(const char *n) {
    if (strstr(n, ".lora")) return 0;
    return starts(n, "blocks.") || starts(n, "norm.") || starts(n, "patch_embed.") || strcmp(n, "cls_token") == 0 ||
           strcmp(n, "register_tokens") == 0 || strcmp(n, "mask_token") == 0 || strcmp(n, "pos_embed") == 0;
}

typedef struct rule {
    const char *internal, *external;
} rule;

static const rule k_hf_block[] = {{"norm1.", "norm1."},
                                  {"attn.proj.", "attention.output.dense."},
                                  {"ls1.gamma", "layer_scale1.lambda1"},
                                  {"norm2.", "norm2."},
                                  {"mlp.fc1.", "mlp.fc1."},
                                  {"mlp.fc2.", "mlp.fc2."},
                                  {"mlp.w12.", "mlp.weights_in."},
                                  {"mlp.w3.", "mlp.weights_out."},
                                  {"ls2.gamma", "layer_scale2.lambda1"}};
static const rule k_hfmae_block[] = {{"norm1.", "layernorm_before."},
                                     {"attn.proj.", "attention.output.dense."},
                                     {"norm2.", "layernorm_after."},
                                     {"mlp.fc1.", "intermediate.dense."},
                                     {"mlp.fc2.", "output.dense."}};

/* External name(s) of one internal parameter. Returns the number of pieces (0: not written);
 * pieces of a split qkv are rows [k*rows, (k+1)*rows). */
static int external_names(const vit *v, const char *fmt, const char *n, char out[3][EX_NAME_MAX + 64], int64_t *rows) {
    const int hf = strcmp(fmt, "hf") == 0, hfmae = strcmp(fmt, "hf-mae") == 0;
    *rows = 0;
    if (strcmp(fmt, "dinov2") == 0 || strcmp(fmt, "mae") == 0) {
        snprintf(out[0], EX_NAME_MAX + 64, "%s", n);
        return 1;
    }
    if (strcmp(fmt, "timm") == 0) {
        if (strcmp(n, "mask_token") == 0) return 0;
        if (strcmp(n, "register_tokens") == 0) {
            snprintf(out[0], EX_NAME_MAX + 64, "reg_token");
            return 1;
        }
        const char *p = strstr(n, ".mlp.w12.");
        if (!p) p = strstr(n, ".mlp.w3.");
        if (p && v->a.mlp == EX_MLP_SWIGLU) {
            int w12 = p[7] == '1';
            snprintf(out[0], EX_NAME_MAX + 64, "%.*s.mlp.%s%s", (int)(p - n), n, w12 ? "fc1" : "fc2", p + (w12 ? 8 : 7));
            return 1;
        }
        snprintf(out[0], EX_NAME_MAX + 64, "%s", n);
        return 1;
    }
    if (!hf && !hfmae) return -1;
    const char *emb = hfmae ? "vit.embeddings." : "embeddings.";
    const char *enc = hfmae ? "vit.encoder.layer." : "encoder.layer.";
    if (strcmp(n, "cls_token") == 0 || strcmp(n, "mask_token") == 0 || strcmp(n, "register_tokens") == 0) {
        snprintf(out[0], EX_NAME_MAX + 64, "%s%s", emb, n);
        return 1;
    }
    if (strcmp(n, "pos_embed") == 0) {
        snprintf(out[0], EX_NAME_MAX + 64, "%sposition_embeddings", emb);
        return 1;
    }
    if (starts(n, "patch_embed.proj.")) {
        snprintf(out[0], EX_NAME_MAX + 64, "%spatch_embeddings.projection.%s", emb, n + strlen("patch_embed.proj."));
        return 1;
    }
    if (starts(n, "norm.")) {
        snprintf(out[0], EX_NAME_MAX + 64, "%s%s", hfmae ? "vit.layernorm." : "layernorm.", n + 5);
        return 1;
    }
    long long b;
    int used = 0;
    if (sscanf(n, "blocks.%lld.%n", &b, &used) != 1 || !used) return -1;
    const char *rest = n + used;
    if (starts(rest, "attn.qkv.")) {
        static const char *part[3] = {"query", "key", "value"};
        for (int k = 0; k < 3; k++)
            snprintf(out[k], EX_NAME_MAX + 64, "%s%lld.attention.attention.%s.%s", enc, b, part[k], rest + strlen("attn.qkv."));
        *rows = v->a.dim;
        return 3;
    }
    const rule *t = hfmae ? k_hfmae_block : k_hf_block;
    size_t nt = hfmae ? sizeof k_hfmae_block / sizeof *t : sizeof k_hf_block / sizeof *t;
    for (size_t k = 0; k < nt; k++)
        if (starts(rest, t[k].internal)) {
            snprintf(out[0], EX_NAME_MAX + 64, "%s%lld.%s%s", enc, b, t[k].external, rest + strlen(t[k].internal));
            return 1;
        }
    return -1;
}

ex_status vit_save(void *self, const char *path, const char *format, ex_err *err) {
    vit *v = self;
    const char *fmt = format && format[0] && strcmp(format, "auto") != 0 ? format
                      : v->a.pos == VIT_POS_SINCOS                      ? "mae"
                                                                         : "dinov2";
    size_t total = 0;
    for (int i = 0; i < v->params->count; i++)
        if (own(v->params->items[i]->value.name)) total += (size_t)ex_tensor_numel(&v->params->items[i]->value);
    float *host = malloc(sizeof(float) * (total ? total : 1));
    EX_ENSURE(host, err, EX_E_NOMEM, "vit: out of memory exporting");
    ex_st_writer *w = NULL;
    ex_status st = ex_st_writer_new(&w, err);
    size_t off = 0;
    for (int i = 0; i < v->params->count && st == EX_OK; i++) {
        const ex_param *p = v->params->items[i];
        if (!own(p->value.name)) continue;
        char names[3][EX_NAME_MAX + 64];
        int64_t rows = 0;
        int k = external_names(v, fmt, p->value.name, names, &rows);
        if (k < 0) {
            st = ex_err_set(err, EX_E_INVALID, __FILE__, __LINE__,
                            "vit: cannot export '%s' in format '%s' (accepted: dinov2, timm, mae, hf, hf-mae)",
                            p->value.name, fmt);
            break;
        }
        const size_t n = (size_t)ex_tensor_numel(&p->value);
        st = ex_params_download(v->be, p, 0, host + off, (int64_t)n, err); /* fp32, whatever the storage */
        for (int j = 0; j < k && st == EX_OK; j++) {
            if (k == 1) {
                st = ex_st_writer_add(w, names[0], EX_F32, p->value.ndim, p->value.shape, host + off, err);
            } else { /* a slice of rows of the fused qkv */
                int64_t shape[EX_MAX_DIMS];
                memcpy(shape, p->value.shape, sizeof shape);
                const int64_t row_elems = (int64_t)n / p->value.shape[0];
                shape[0] = rows;
                st = ex_st_writer_add(w, names[j], EX_F32, p->value.ndim, shape, host + off + (size_t)(j * rows * row_elems),
                                      err);
            }
        }
        off += n;
    }
    if (st == EX_OK) st = ex_st_writer_metadata(w, "format", fmt, err);
    if (st == EX_OK) st = ex_st_writer_metadata(w, "writer", "explora vit", err);
    if (st == EX_OK) st = ex_st_writer_finish(w, path, err);
    ex_st_writer_free(w);
    free(host);
    return st;
}
