/*
 * tests/cuda_dnn/test_cuda_dnn.c — the CUDA backend's cuDNN attention graphs (backends/cuda/cuda_dnn.c)
 * against the installed cuDNN 9, with or without a GPU.
 *
 * cuDNN finalizes tensor, operation and operation-graph descriptors on the host and validates them
 * there: matmul operand shapes, broadcast and reduction dims, the SDPA operation's Q/K/V/O/Stats
 * shapes. So every graph the backend can build (the unified and the composite forward, the
 * deterministic and the accumulating backward) is built for ViT shapes and must finalize. On a machine
 * with a GPU the test also binds a handle and has cuDNN plan each direction (engine choice and plan
 * finalization); running the plans is the parity suite's job (attention = cudnn).
 *
 * Also: refusals with reasons (missing library, a library that is not cuDNN, shapes the engines cannot
 * take, planning without a handle, running without a plan). Skips (77) when libcudnn.so.9 cannot be
 * loaded: the build found cuDNN's headers but the machine has no library.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <cudnn_graph.h>
#include <cudnn_version.h>

#include "cuda_dnn.h"
#include "test_support.h"

/* (b, t, heads, head size): ViT-S/14, ViT-B/14 and ViT-L/14 global crops (224 px: 1 + 256 tokens, or with 4
 * registers), a ViT-L local crop (98 px: 1 + 49), and small odd ones. */
static const cu_dnn_sdpa shapes[] = {
    {64, 257, 6, 64, 0.125f, 0}, {64, 261, 12, 64, 0.125f, 0}, {32, 257, 16, 64, 0.125f, 0},
    {256, 50, 16, 64, 0.125f, 0}, {3, 17, 2, 32, 0.1767767f, 0}, {2, 37, 3, 16, 0.25f, 1},
    {1, 5, 1, 8, 0.35355339f, 0}, {2, 9, 4, 128, 0.08838835f, 0}};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

static cu_dnn *open_or_skip(void) {
    cu_dnn *d = NULL;
    char why[512] = "";
    if (cu_dnn_open(&d, NULL, why, sizeof why) != 0) {
        printf("test_cuda_dnn: SKIPPED: %s\n", why);
        exit(77);
    }
    return d;
}

static void test_version(void **state) {
    (void)state;
    cu_dnn *d = open_or_skip();
    const size_t v = cu_dnn_version(d);
    printf("# cuDNN %zu.%zu.%zu (headers %d.%d.%d)\n", v / 10000, v / 100 % 100, v % 100, CUDNN_MAJOR, CUDNN_MINOR,
           CUDNN_PATCHLEVEL);
    assert_true(v >= 90000);
    assert_int_equal((int)(v / 10000), CUDNN_MAJOR); /* the library the backend loads is the headers' major */
    cu_dnn_close(d);
}

static void test_every_graph_finalizes(void **state) {
    (void)state;
    cu_dnn *d = open_or_skip();
    const int first = cu_dnn_version(d) >= 91301 ? CU_DNN_FWD_UNIFIED : CU_DNN_FWD_COMPOSITE;
    for (size_t i = 0; i < NSHAPES; i++) {
        assert_true(cu_dnn_sdpa_fits(&shapes[i]));
        for (int kind = first; kind <= CU_DNN_BWD_ACCUM; kind++) {
            char why[1024] = "";
            if (cu_dnn_sdpa_graph_check(d, &shapes[i], kind, why, sizeof why) != 0)
                fail_msg("shape %zu (b %lld t %lld nh %lld hs %lld), graph %d: %s", i, (long long)shapes[i].b,
                         (long long)shapes[i].t, (long long)shapes[i].nh, (long long)shapes[i].hs, kind, why);
        }
    }
    char why[256] = "";
    assert_int_equal(cu_dnn_sdpa_graph_check(d, &shapes[0], 7, why, sizeof why), -1);
    assert_non_null(strstr(why, "no graph kind 7"));
    cu_dnn_close(d);
}

static void test_shapes_refused(void **state) {
    (void)state;
    cu_dnn *d = open_or_skip();
    /* head size not a multiple of 8, above 128, a single token, a row of heads not 16-byte aligned */
    const cu_dnn_sdpa bad[] = {{2, 37, 3, 20, 0.2f, 0}, {2, 37, 2, 136, 0.1f, 0}, {2, 1, 3, 64, 0.1f, 0},
                               {2, 37, 0, 64, 0.1f, 0}, {0, 37, 3, 64, 0.1f, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(cu_dnn_sdpa_fits(&bad[i]));
        char why[512] = "";
        assert_int_equal(cu_dnn_sdpa_graph_check(d, &bad[i], CU_DNN_FWD_COMPOSITE, why, sizeof why), -1);
        assert_non_null(strstr(why, "does not take"));
    }
    cu_dnn_close(d);
}

static void test_refusals(void **state) {
    (void)state;
    cu_dnn *d = NULL;
    char why[512] = "";
    assert_int_equal(cu_dnn_open(&d, "/nonexistent/libcudnn.so.9", why, sizeof why), -1);
    assert_null(d);
    assert_non_null(strstr(why, "/nonexistent/libcudnn.so.9"));
    assert_int_equal(cu_dnn_open(&d, "libm.so.6", why, sizeof why), -1); /* a library, but not cuDNN */
    assert_null(d);
    assert_non_null(strstr(why, "lacks cudnnGetVersion"));
    d = open_or_skip();
    size_t ws = 0;
    /* no handle yet: nothing can be planned */
    assert_int_equal(cu_dnn_sdpa_plan(d, &shapes[0], 0, &ws, NULL, why, sizeof why), -1);
    assert_non_null(strstr(why, "no handle"));
    cu_dnn_sdpa_io io;
    memset(&io, 0, sizeof io);
    assert_int_equal(cu_dnn_sdpa_run(d, &shapes[0], 1, &io, why, sizeof why), -1);
    assert_non_null(strstr(why, "no plan"));
    cu_dnn_close(d);
}

/* --- the graphs' maths, evaluated on the host ------------------------------------------------------------
 * Each composite graph is described (cu_dnn_sdpa_graph_describe) and its operations run in order on host
 * buffers, with cuDNN's semantics as NVIDIA's frontend uses them: matmul over the last two dims batched over
 * the first two, pointwise ops and reductions broadcasting size-1 dims, a reshape as a second view of the
 * same memory (a transpose), and every tensor typed bf16 rounded to it when written. The results must be
 * attention and its gradient (a double-precision reference on the same bf16 inputs) to bf16 accuracy: an
 * operand swapped for its transpose (the t x t scores are square, so cuDNN's validation cannot see it), a
 * missing scale or a wrong statistic fails. */

static float bf16_round(float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&v, &u, 4);
    return v;
}

typedef struct ev_tensor {
    const cu_dnn_tensor_desc *d;
    float *mem;  /* element idx at mem[off(idx)] */
} ev_tensor;

static int64_t ev_off(const cu_dnn_tensor_desc *d, const int64_t i[4]) {
    int64_t o = 0;
    for (int k = 0; k < 4; k++) o += (d->dims[k] == 1 ? 0 : i[k]) * d->strides[k]; /* size-1 dims broadcast */
    return o;
}

static int64_t ev_extent(const cu_dnn_tensor_desc *d) {
    int64_t e = 1;
    for (int k = 0; k < 4; k++) e += (d->dims[k] - 1) * d->strides[k];
    return e;
}

static float ev_store(const cu_dnn_tensor_desc *d, double v) { return d->dtype == 1 ? bf16_round((float)v) : (float)v; }

#define EV_FOR(dims, i) \
    for (i[0] = 0; i[0] < (dims)[0]; i[0]++) \
        for (i[1] = 0; i[1] < (dims)[1]; i[1]++) \
            for (i[2] = 0; i[2] < (dims)[2]; i[2]++) \
                for (i[3] = 0; i[3] < (dims)[3]; i[3]++)

/* Run the described graph; non-virtual tensors read and write the buffers of their uids (k and v at offsets
 * C and 2C of the qkv buffer, dk and dv of dqkv). */
static void ev_run(const cu_dnn_graph_desc *g, const cu_dnn_sdpa *s, float *qkv, float *o, float *stats, float *dout,
                   float *dqkv, float *dsum, float *dqacc) {
    const int64_t C = s->nh * s->hs;
    float scale = s->scale, one = 1.0f;
    ev_tensor t[CU_DNN_DESC_TENSORS];
    for (int i = 0; i < g->ntensors; i++) {
        const cu_dnn_tensor_desc *d = &g->tensors[i];
        t[i].d = d;
        t[i].mem = NULL;
        if (d->is_virtual) {
            t[i].mem = calloc((size_t)ev_extent(d), sizeof(float));
            assert_non_null(t[i].mem);
            continue;
        }
        switch (d->uid) {
        case CU_DNN_UID_Q: t[i].mem = qkv; break;
        case CU_DNN_UID_K: t[i].mem = qkv + C; break;
        case CU_DNN_UID_V: t[i].mem = qkv + 2 * C; break;
        case CU_DNN_UID_O: t[i].mem = o; break;
        case CU_DNN_UID_STATS: t[i].mem = stats; break;
        case CU_DNN_UID_SCALE: t[i].mem = &scale; break;
        case CU_DNN_UID_DO: t[i].mem = dout; break;
        case CU_DNN_UID_DQ: t[i].mem = dqkv; break;
        case CU_DNN_UID_DK: t[i].mem = dqkv + C; break;
        case CU_DNN_UID_DV: t[i].mem = dqkv + 2 * C; break;
        case CU_DNN_UID_ONE: t[i].mem = &one; break;
        case CU_DNN_UID_DSUM: t[i].mem = dsum; break;
        case CU_DNN_UID_DQACC: t[i].mem = dqacc; break;
        default: fail_msg("tensor %d: unknown uid %lld", i, (long long)d->uid);
        }
    }
    for (int k = 0; k < g->nops; k++) {
        const cu_dnn_op_desc *op = &g->ops[k];
        assert_true(op->x >= 0 && op->y >= 0);
        const ev_tensor *x = &t[op->x], *b = op->b >= 0 ? &t[op->b] : NULL, *y = &t[op->y];
        int64_t i[4], j[4];
        switch (op->type) {
        case CU_DNN_OP_MATMUL: {
            const int64_t K = x->d->dims[3];
            assert_int_equal(K, b->d->dims[2]);
            EV_FOR(y->d->dims, i) {
                double acc = 0.0;
                for (int64_t q = 0; q < K; q++) {
                    const int64_t ia[4] = {i[0], i[1], i[2], q}, ib[4] = {i[0], i[1], q, i[3]};
                    acc += (double)x->mem[ev_off(x->d, ia)] * b->mem[ev_off(b->d, ib)];
                }
                y->mem[ev_off(y->d, i)] = ev_store(y->d, acc);
            }
            break;
        }
        case CU_DNN_OP_POINTWISE:
            EV_FOR(y->d->dims, i) {
                const double u = x->mem[ev_off(x->d, i)], v = b ? b->mem[ev_off(b->d, i)] : 0.0;
                double r = 0.0;
                switch (op->mode) {
                case CUDNN_POINTWISE_ADD: r = u + v; break;
                case CUDNN_POINTWISE_SUB: r = u - v; break;
                case CUDNN_POINTWISE_MUL: r = u * v; break;
                case CUDNN_POINTWISE_DIV: r = u / v; break;
                case CUDNN_POINTWISE_EXP: r = exp(u); break;
                case CUDNN_POINTWISE_LOG: r = log(u); break;
                case CUDNN_POINTWISE_IDENTITY: r = u; break;
                default: fail_msg("op %d: pointwise mode %d not evaluated", k, op->mode);
                }
                y->mem[ev_off(y->d, i)] = ev_store(y->d, r);
            }
            break;
        case CU_DNN_OP_REDUCTION: {
            const int max = op->mode == CUDNN_REDUCE_TENSOR_MAX;
            assert_true(max || op->mode == CUDNN_REDUCE_TENSOR_ADD);
            double *acc = calloc((size_t)ev_extent(y->d), sizeof(double));
            assert_non_null(acc);
            EV_FOR(y->d->dims, i) acc[ev_off(y->d, i)] = max ? -INFINITY : 0.0;
            EV_FOR(x->d->dims, i) {
                for (int q = 0; q < 4; q++) j[q] = y->d->dims[q] == 1 ? 0 : i[q];
                const double v = x->mem[ev_off(x->d, i)];
                double *a = &acc[ev_off(y->d, j)];
                *a = max ? (v > *a ? v : *a) : *a + v;
            }
            EV_FOR(y->d->dims, i) y->mem[ev_off(y->d, i)] = ev_store(y->d, acc[ev_off(y->d, i)]);
            free(acc);
            break;
        }
        case CU_DNN_OP_RESHAPE: /* a second view of the same memory: each element stays at its offset */
            EV_FOR(y->d->dims, i) {
                const int64_t off = ev_off(y->d, i);
                y->mem[off] = ev_store(y->d, x->mem[off]);
            }
            break;
        default: fail_msg("op %d: type %d not evaluated", k, op->type);
        }
    }
    for (int i = 0; i < g->ntensors; i++)
        if (g->tensors[i].is_virtual) free(t[i].mem);
}

/* Attention and its gradient in double: out (b, t, C), lse (b, nh, t), dqkv (b, t, 3C). */
static void ref_attention(const cu_dnn_sdpa *s, const float *qkv, const float *dout, double *out, double *lse,
                          double *dqkv) {
    const int64_t T = s->t, hs = s->hs, nh = s->nh, C = nh * hs;
    double *p = malloc(sizeof(double) * (size_t)(T * T)), *dp = malloc(sizeof(double) * (size_t)(T * T));
    assert_true(p && dp);
    memset(dqkv, 0, sizeof(double) * (size_t)(s->b * T * 3 * C));
    for (int64_t bi = 0; bi < s->b; bi++)
        for (int64_t h = 0; h < nh; h++) {
#define Q(i, d) qkv[((bi * T + (i)) * 3 * C) + h * hs + (d)]
#define K(i, d) qkv[((bi * T + (i)) * 3 * C) + C + h * hs + (d)]
#define V(i, d) qkv[((bi * T + (i)) * 3 * C) + 2 * C + h * hs + (d)]
#define DO(i, d) dout[(bi * T + (i)) * C + h * hs + (d)]
#define OUT(i, d) out[(bi * T + (i)) * C + h * hs + (d)]
            for (int64_t i = 0; i < T; i++) {
                double m = -INFINITY, z = 0.0;
                for (int64_t j = 0; j < T; j++) {
                    double v = 0.0;
                    for (int64_t d = 0; d < hs; d++) v += (double)Q(i, d) * K(j, d);
                    p[i * T + j] = v * s->scale;
                    if (p[i * T + j] > m) m = p[i * T + j];
                }
                for (int64_t j = 0; j < T; j++) z += exp(p[i * T + j] - m);
                for (int64_t j = 0; j < T; j++) p[i * T + j] = exp(p[i * T + j] - m) / z;
                lse[(bi * nh + h) * T + i] = m + log(z);
                for (int64_t d = 0; d < hs; d++) {
                    double v = 0.0;
                    for (int64_t j = 0; j < T; j++) v += p[i * T + j] * V(j, d);
                    OUT(i, d) = v;
                }
            }
            for (int64_t i = 0; i < T; i++) {
                double D = 0.0;
                for (int64_t d = 0; d < hs; d++) D += (double)DO(i, d) * OUT(i, d);
                for (int64_t j = 0; j < T; j++) {
                    double v = 0.0;
                    for (int64_t d = 0; d < hs; d++) v += (double)DO(i, d) * V(j, d);
                    dp[i * T + j] = p[i * T + j] * (v - D) * s->scale; /* dS */
                }
            }
            for (int64_t i = 0; i < T; i++)
                for (int64_t d = 0; d < hs; d++) {
                    double dq = 0.0, dk = 0.0, dv = 0.0;
                    for (int64_t j = 0; j < T; j++) {
                        dq += dp[i * T + j] * K(j, d);
                        dk += dp[j * T + i] * Q(j, d);
                        dv += p[j * T + i] * DO(j, d);
                    }
                    double *row = dqkv + (bi * T + i) * 3 * C + h * hs + d;
                    row[0] = dq, row[C] = dk, row[2 * C] = dv;
                }
#undef Q
#undef K
#undef V
#undef DO
#undef OUT
        }
    free(p);
    free(dp);
}

static double nmse(const float *got, const double *ref, size_t n) {
    double se = 0.0, sr = 0.0;
    for (size_t i = 0; i < n; i++) {
        se += (got[i] - ref[i]) * (got[i] - ref[i]);
        sr += ref[i] * ref[i];
    }
    return se / (sr > 0.0 ? sr : 1.0);
}

static void test_graphs_compute_attention(void **state) {
    (void)state;
    cu_dnn *d = open_or_skip();
    const cu_dnn_sdpa cases[] = {{2, 13, 2, 16, 0.25f, 0}, {1, 29, 3, 8, 0.35355339f, 0}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const cu_dnn_sdpa *s = &cases[ci];
        const int64_t C = s->nh * s->hs, nq = s->b * s->t * 3 * C, no = s->b * s->t * C, nr = s->b * s->nh * s->t;
        float *qkv = malloc(sizeof(float) * (size_t)nq), *dout = malloc(sizeof(float) * (size_t)no);
        float *o = calloc((size_t)no, sizeof(float)), *stats = calloc((size_t)nr, sizeof(float));
        float *dqkv = calloc((size_t)nq, sizeof(float)), *dsum = calloc((size_t)nr, sizeof(float));
        float *dqacc = calloc((size_t)no, sizeof(float));
        double *ro = malloc(sizeof(double) * (size_t)no), *rl = malloc(sizeof(double) * (size_t)nr);
        double *rd = malloc(sizeof(double) * (size_t)nq);
        assert_true(qkv && dout && o && stats && dqkv && dsum && dqacc && ro && rl && rd);
        ext_fill_uniform(qkv, (size_t)nq, 40 + ci, -2, 2);
        ext_fill_uniform(dout, (size_t)no, 50 + ci, -1, 1);
        for (int64_t i = 0; i < nq; i++) qkv[i] = bf16_round(qkv[i]); /* the graphs' inputs are bf16 */
        for (int64_t i = 0; i < no; i++) dout[i] = bf16_round(dout[i]);
        ref_attention(s, qkv, dout, ro, rl, rd);
        cu_dnn_graph_desc *g = malloc(sizeof *g);
        assert_non_null(g);
        char why[1024] = "";
        if (cu_dnn_sdpa_graph_describe(d, s, CU_DNN_FWD_COMPOSITE, g, why, sizeof why) != 0) fail_msg("%s", why);
        ev_run(g, s, qkv, o, stats, NULL, NULL, NULL, NULL);
        const double e_o = nmse(o, ro, (size_t)no), e_l = nmse(stats, rl, (size_t)nr);
        for (int kind = CU_DNN_BWD; kind <= CU_DNN_BWD_ACCUM; kind++) {
            memset(dqkv, 0, sizeof(float) * (size_t)nq);
            if (cu_dnn_sdpa_graph_describe(d, s, kind, g, why, sizeof why) != 0) fail_msg("%s", why);
            ev_run(g, s, qkv, o, stats, dout, dqkv, dsum, dqacc); /* on the forward graph's own o and stats */
            const double e_d = nmse(dqkv, rd, (size_t)nq);
            printf("# b %lld t %lld nh %lld hs %lld, backward graph %d: NMSE out %.2e lse %.2e dqkv %.2e\n",
                   (long long)s->b, (long long)s->t, (long long)s->nh, (long long)s->hs, kind, e_o, e_l, e_d);
            assert_true(e_d < 1e-4); /* bf16 flash attention lands near 1e-5 */
        }
        assert_true(e_o < 1e-4);
        assert_true(e_l < 1e-6);
        free(g), free(qkv), free(dout), free(o), free(stats), free(dqkv), free(dsum), free(dqacc);
        free(ro), free(rl), free(rd);
    }
    cu_dnn_close(d);
}

/* With a GPU: plans for both directions, cached per shape; without one, binding fails with cuDNN's reason. */
static void test_plans_where_there_is_a_gpu(void **state) {
    (void)state;
    cu_dnn *d = open_or_skip();
    char why[1024] = "";
    if (cu_dnn_bind(d, NULL, why, sizeof why) != 0) {
        assert_non_null(strstr(why, "cudnnCreate"));
        printf("# no GPU: %s (plans not checked)\n", why);
        cu_dnn_close(d);
        return;
    }
    for (int det = 1; det >= 0; det--) {
        cu_dnn_set_deterministic(d, det);
        for (size_t i = 0; i < NSHAPES; i++) {
            const cu_dnn_sdpa *s = &shapes[i];
            for (int backward = 0; backward < 2; backward++) {
                size_t ws = 0, ws2 = 0;
                int kind = -1, kind2 = -1;
                if (cu_dnn_sdpa_plan(d, s, backward, &ws, &kind, why, sizeof why) != 0)
                    fail_msg("plan shape %zu %s (deterministic %d): %s", i, backward ? "backward" : "forward", det,
                             why);
                printf("# shape %zu %s deterministic %d: graph %d, workspace %zu bytes\n", i,
                       backward ? "backward" : "forward", det, kind, ws);
                if (backward) {
                    assert_true(kind == CU_DNN_BWD || (!det && kind == CU_DNN_BWD_ACCUM));
                    assert_true(ws >= (size_t)(s->b * s->nh * s->t) * sizeof(float)); /* rowsum(dO O) at least */
                } else {
                    assert_true(kind == CU_DNN_FWD_UNIFIED || kind == CU_DNN_FWD_COMPOSITE);
                }
                assert_int_equal(cu_dnn_sdpa_plan(d, s, backward, &ws2, &kind2, why, sizeof why), 0); /* cached */
                assert_true(ws2 == ws && kind2 == kind);
            }
        }
    }
    cu_dnn_close(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_every_graph_finalizes),
        cmocka_unit_test(test_shapes_refused),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_graphs_compute_attention),
        cmocka_unit_test(test_plans_where_there_is_a_gpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
