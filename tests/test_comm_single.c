/*
 * tests/test_comm_single.c — the communicator as a build without MPI has it
 * (-DEXPLORA_MPI=OFF, or no libopenmpi-dev): core/src/comm.c is compiled into
 * this test without EXPLORA_HAVE_MPI, whatever the rest of the build uses.
 *
 *   - one process: rank 0 of 1, every collective leaves the values alone;
 *   - started by an MPI launcher with several processes: a clear error that
 *     says to install MPI and rebuild, instead of N processes training alone;
 *   - a launcher with one process is fine.
 */
#include <stdlib.h>
#include <string.h>

#include "explora/comm.h"
#include "test_support.h"

static const char *const k_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"};

static void clear_launcher(void) {
    for (size_t i = 0; i < sizeof k_vars / sizeof *k_vars; i++) unsetenv(k_vars[i]);
}

static void test_single_process(void **state) {
    (void)state;
    clear_launcher();
    assert_int_equal(ex_comm_have_mpi(), 0);
    ex_comm c;
    ex_err err;
    EXT_OK(ex_comm_init(&c, &err), &err);
    assert_int_equal(ex_comm_rank(&c), 0);
    assert_int_equal(ex_comm_world(&c), 1);
    double d[3] = {1.5, -2.0, 3.25};
    int64_t k[2] = {7, -9};
    float f[2] = {0.5f, 4.0f};
    EXT_OK(ex_comm_allreduce_sum_f64(&c, d, 3, &err), &err);
    EXT_OK(ex_comm_allreduce_sum_i64(&c, k, 2, &err), &err);
    EXT_OK(ex_comm_allreduce_max_i64(&c, k, 2, &err), &err);
    EXT_OK(ex_comm_allreduce_sum_f32_host(&c, f, 2, &err), &err);
    EXT_OK(ex_comm_broadcast(&c, d, sizeof d, 0, &err), &err);
    EXT_OK(ex_comm_barrier(&c, 1.0, &err), &err);
    assert_true(d[0] == 1.5 && d[1] == -2.0 && d[2] == 3.25);
    assert_true(k[0] == 7 && k[1] == -9);
    assert_true(f[0] == 0.5f && f[1] == 4.0f);
    assert_int_equal(ex_comm_broadcast(&c, d, sizeof d, 1, &err), EX_E_INVALID); /* rank 1 of 1 */
    ex_comm_free(&c);
}

static void test_launched_without_mpi(void **state) {
    (void)state;
    clear_launcher();
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    ex_comm c;
    ex_err err;
    ex_err_clear(&err);
    assert_int_equal(ex_comm_init(&c, &err), EX_E_UNSUPPORTED);
    if (!strstr(err.msg, "2 processes") || !strstr(err.msg, "built without MPI") || !strstr(err.msg, "libopenmpi-dev"))
        fail_msg("message: %s", err.msg);
    setenv("OMPI_COMM_WORLD_SIZE", "1", 1);
    EXT_OK(ex_comm_init(&c, &err), &err);
    assert_int_equal(ex_comm_world(&c), 1);
    ex_comm_free(&c);
    clear_launcher();
}

/* The node-local rank that picks a GPU: the first valid launcher variable, else 0. */
static void test_local_rank(void **state) {
    (void)state;
    static const char *const local[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"};
    for (size_t i = 0; i < 4; i++) unsetenv(local[i]);
    assert_int_equal(ex_comm_launched_local_rank(), 0);
    setenv("SLURM_LOCALID", "2", 1);
    assert_int_equal(ex_comm_launched_local_rank(), 2);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1); /* Open MPI's comes first */
    assert_int_equal(ex_comm_launched_local_rank(), 3);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3x", 1); /* not a number: the next variable */
    assert_int_equal(ex_comm_launched_local_rank(), 2);
    setenv("SLURM_LOCALID", "-1", 1);
    assert_int_equal(ex_comm_launched_local_rank(), 0);
    for (size_t i = 0; i < 4; i++) unsetenv(local[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_process),
        cmocka_unit_test(test_launched_without_mpi),
        cmocka_unit_test(test_local_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
