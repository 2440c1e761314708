/*
 * tests/test_hip_blas.c — the hip backend's run-time hipBLAS loader (backends/hip/hip_blas.c)
 * without an AMD GPU: against host-memory stand-ins of libhipblas (tests/hip_blas), the row-major
 * GEMM of ex_gemm_desc maps onto BLAS's column-major call correctly for every transpose pair,
 * with strides, leading dimensions wider than the rows, alpha and beta; a library without the
 * GEMM and a missing library are refused with the reason.
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

#include "hip_blas.h"
#include "test_support.h"

static void test_row_major_gemm(void **state) {
    (void)state;
    hip_blas *b = NULL;
    char why[256] = "";
    if (hip_blas_open_path(&b, FAKE_HIPBLAS, NULL, why, sizeof why) != 0) fail_msg("open: %s", why);
    assert_string_equal(hip_blas_name(b), "libfake_hipblas.so");
    const int m = 5, n = 7, k = 3, batch = 2;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            const int lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 1, ldc = n + 3;
            const int64_t sa = (int64_t)(ta ? k : m) * lda + 4, sb = (int64_t)(tb ? n : k) * ldb, sc = (int64_t)m * ldc + 1;
            float A[2 * 64], B[2 * 64], C[2 * 64], C0[2 * 64];
            ext_fill_uniform(A, 128, 1 + ta, -1, 1);
            ext_fill_uniform(B, 128, 3 + tb, -1, 1);
            ext_fill_uniform(C0, 128, 5, -1, 1);
            memcpy(C, C0, sizeof C);
            assert_int_equal(hip_blas_sgemm(b, ta, tb, m, n, k, 0.75f, A, lda, sa, B, ldb, sb, 0.5f, C, ldc, sc, batch), 0);
            for (int q = 0; q < batch; q++)
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double acc = 0.0;
                        for (int l = 0; l < k; l++) {
                            const double av = ta ? A[q * sa + l * lda + i] : A[q * sa + i * lda + l];
                            const double bv = tb ? B[q * sb + j * ldb + l] : B[q * sb + l * ldb + j];
                            acc += av * bv;
                        }
                        const double want = 0.75 * acc + 0.5 * C0[q * sc + i * ldc + j];
                        if (fabs(C[q * sc + i * ldc + j] - want) > 1e-5)
                            fail_msg("ta=%d tb=%d batch %d (%d,%d): %g, expected %g", ta, tb, q, i, j,
                                     (double)C[q * sc + i * ldc + j], want);
                    }
            /* padding between rows and between batch items untouched */
            for (int q = 0; q < batch; q++)
                for (int i = 0; i < m; i++)
                    for (int j = n; j < ldc && q * sc + i * ldc + j < 128; j++)
                        assert_true(C[q * sc + i * ldc + j] == C0[q * sc + i * ldc + j]);
        }
    hip_blas_close(b);
}

static void test_refusals(void **state) {
    (void)state;
    hip_blas *b = (hip_blas *)1;
    char why[256] = "";
    assert_int_equal(hip_blas_open_path(&b, FAKE_HIPBLAS_NO_SGEMM, NULL, why, sizeof why), -1);
    assert_null(b);
    assert_non_null(strstr(why, "lacks hipblasSgemmStridedBatched"));
    assert_int_equal(hip_blas_open_path(&b, "/nonexistent/libhipblas.so", NULL, why, sizeof why), -1);
    assert_non_null(strstr(why, "/nonexistent/libhipblas.so"));
    hip_blas_close(NULL); /* a no-op */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_major_gemm),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
