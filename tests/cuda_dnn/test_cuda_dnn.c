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
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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
        cmocka_unit_test(test_plans_where_there_is_a_gpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
